//! Layer grouping on a generated closure of 10,000 store paths, shaped like
//! a large real image: 300 top-level packages, a base of 200 libraries that
//! everything references (some of them popular), private dependency chains
//! in between with a quarter of the packages shared, and a few big
//! closures. One case per strategy, each at the default budget with the
//! same popularity map (only `popularity` reads it). Target: under 50 ms
//! for every strategy a server can be set to.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use nixery::layers::{
    DEFAULT_BUDGET, ExportReferences, PathInfo, Popularity, RuntimeGraph, Strategy, group,
    group_layers,
};

const PATHS: usize = 10_000;
const TOP_LEVEL: usize = 300;
const BASE: usize = 200;
const NEIGHBOURHOOD: usize = 500;

/// splitmix64: a tiny deterministic generator, so every run benchmarks the
/// same graph without a dependency on `rand`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi` (`lo < hi`).
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo) as u64) as usize
    }
}

fn store_path(rng: &mut Rng, name: &str) -> String {
    const NIX_BASE32: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
    let hash: String = (0..32)
        .map(|_| NIX_BASE32[(rng.next() % 32) as usize] as char)
        .collect();
    format!("/nix/store/{hash}-{name}")
}

/// Path `i` references only paths after it, so the graph is a DAG whose
/// first `TOP_LEVEL` paths are the requested packages.
fn generate() -> (RuntimeGraph, Popularity) {
    let mut rng = Rng(0x6e69_7865_7279);
    let names: Vec<String> = (0..PATHS)
        .map(|i| match i {
            0 => "nss-cacert-3.104".to_owned(),
            1 => "iana-etc-20240318".to_owned(),
            _ => format!("package-{i}-1.{}", i % 17),
        })
        .collect();
    let paths: Vec<String> = names.iter().map(|n| store_path(&mut rng, n)).collect();

    // Each package past the top level has an owner shortly before it (a
    // private dependency) and, one time in four, a second referrer (a
    // shared one). Every package also links against a few base libraries,
    // which link against each other.
    let mut refs: Vec<Vec<usize>> = vec![Vec::new(); PATHS];
    let first_base = PATHS - BASE;
    for j in TOP_LEVEL..first_base {
        let owner = rng.range(j.saturating_sub(NEIGHBOURHOOD), j);
        refs[owner].push(j);
        if rng.next().is_multiple_of(4) {
            let other = rng.range(0, j);
            refs[other].push(j);
        }
    }
    for (i, out) in refs.iter_mut().enumerate().take(PATHS - 1) {
        let base_refs = if i < first_base {
            rng.range(1, 5)
        } else {
            rng.range(0, 3)
        };
        for _ in 0..base_refs {
            out.push(rng.range(first_base.max(i + 1), PATHS));
        }
    }

    let graph = (0..PATHS)
        .map(|i| PathInfo {
            path: paths[i].clone(),
            closure_size: if rng.next().is_multiple_of(50) {
                rng.range(100_000_001, 2_000_000_000) as u64
            } else {
                rng.range(10_000, 50_000_000) as u64
            },
            nar_size: Some(if rng.next().is_multiple_of(20) {
                rng.range(1_000_000, 100_000_000) as u64
            } else {
                rng.range(1_000, 1_000_000) as u64
            }),
            references: std::iter::once(i)
                .chain(refs[i].iter().copied())
                .map(|j| paths[j].clone())
                .collect(),
            nar_hash: None,
        })
        .collect();
    let runtime_graph = RuntimeGraph {
        export_references_graph: ExportReferences {
            graph: paths[..TOP_LEVEL].to_vec(),
        },
        graph,
    };

    // Counts for a fifth of the packages; base libraries are the popular ones.
    let popularity = (0..PATHS)
        .filter(|i| i % 5 == 0 || *i >= PATHS - BASE)
        .map(|i| {
            let count = if i >= PATHS - BASE && i % 4 == 0 {
                rng.range(100, 300_000)
            } else {
                rng.range(2, 100)
            };
            (names[i].clone(), count as u64)
        })
        .collect();
    (runtime_graph, popularity)
}

fn bench_group_layers(c: &mut Criterion) {
    let (graph, popularity) = generate();
    let layers =
        group_layers(&graph, &popularity, DEFAULT_BUDGET).expect("generated graph is valid");
    assert_eq!(layers.len(), DEFAULT_BUDGET);
    assert_eq!(
        layers.iter().map(|l| l.contents.len()).sum::<usize>(),
        PATHS
    );
    let unmerged = group_layers(&graph, &popularity, usize::MAX).expect("generated graph is valid");
    eprintln!(
        "generated closure: {PATHS} paths, {} layers before merging",
        unmerged.len()
    );

    for strategy in Strategy::ALL {
        let layers = group(&graph, strategy, &popularity, DEFAULT_BUDGET).expect("valid graph");
        assert!(layers.len() <= DEFAULT_BUDGET, "{strategy} over budget");
        assert_eq!(
            layers.iter().map(|l| l.contents.len()).sum::<usize>(),
            PATHS,
            "{strategy} lost or repeated paths"
        );
        eprintln!("{strategy}: {} layers", layers.len());
        c.bench_function(&format!("{strategy}_10000_paths"), |b| {
            b.iter(|| {
                group(
                    black_box(&graph),
                    strategy,
                    black_box(&popularity),
                    DEFAULT_BUDGET,
                )
            })
        });
    }
}

criterion_group!(benches, bench_group_layers);
criterion_main!(benches);
