//! Tests of the strategies besides upstream's (which `group/tests.rs`
//! checks): hand-derived examples, then properties every strategy keeps.

use super::*;
use crate::layers::{ExportReferences, PathInfo};

fn p(name: &str) -> String {
    format!("/nix/store/{:0<32}-{name}", name.replace('-', ""))
}

/// `(name, narSize, references)`; closure sizes are computed, top-level
/// paths are those given.
fn graph(top: &[&str], entries: &[(&str, u64, &[&str])]) -> RuntimeGraph {
    let refs = |name: &str| {
        entries
            .iter()
            .find(|e| e.0 == name)
            .map_or(&[][..], |e| e.2)
    };
    let closure_size = |name: &str| {
        let mut seen = vec![name];
        let mut stack = vec![name];
        while let Some(n) = stack.pop() {
            for r in refs(n) {
                if !seen.contains(r) {
                    seen.push(r);
                    stack.push(r);
                }
            }
        }
        seen.iter()
            .map(|n| entries.iter().find(|e| e.0 == *n).map_or(0, |e| e.1))
            .sum()
    };
    RuntimeGraph {
        export_references_graph: ExportReferences {
            graph: top.iter().map(|n| p(n)).collect(),
        },
        graph: entries
            .iter()
            .map(|(name, nar, r)| PathInfo {
                path: p(name),
                closure_size: closure_size(name),
                nar_size: Some(*nar),
                references: std::iter::once(name)
                    .chain(r.iter())
                    .map(|n| p(n))
                    .collect(),
                nar_hash: None,
            })
            .collect(),
    }
}

const MB: u64 = 1_000_000;

/// git and htop as in the module documentation, with own sizes.
fn git_and_htop() -> RuntimeGraph {
    graph(
        &["git", "htop", "nss-cacert"],
        &[
            ("git", 10 * MB, &["curl", "perl", "glibc"]),
            ("curl", MB, &["openssl", "glibc"]),
            ("openssl", 6 * MB, &["glibc"]),
            ("perl", 75 * MB, &["glibc"]),
            ("htop", MB / 2, &["ncurses", "glibc"]),
            ("ncurses", 3 * MB, &["glibc"]),
            ("glibc", 30 * MB, &[]),
            ("nss-cacert", MB / 2, &[]),
        ],
    )
}

fn contents(layers: &[Layer]) -> Vec<Vec<String>> {
    layers.iter().map(|l| l.contents.clone()).collect()
}

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| p(n)).collect()
}

fn run(g: &RuntimeGraph, strategy: Strategy, budget: usize) -> Vec<Layer> {
    group(g, strategy, &Popularity::default(), budget).unwrap()
}

#[test]
fn size_rank_gives_every_path_a_layer_while_the_budget_allows() {
    let layers = run(&git_and_htop(), Strategy::SizeRank, 8);
    assert_eq!(layers.len(), 8);
    assert!(layers.iter().all(|l| l.contents.len() == 1));
}

#[test]
fn size_rank_keeps_the_largest_apart_and_splits_the_rest_by_direction() {
    // By size: perl 75, glibc 30, git 10, openssl 6, ncurses 3, curl 1,
    // htop and nss-cacert 0.5 (htop first by name). With 5 layers, the four
    // largest alone leave ncurses, curl (below git), htop, nss-cacert
    // (beside): two kinds, so only three stay alone.
    let layers = run(&git_and_htop(), Strategy::SizeRank, 5);
    assert_eq!(
        contents(&layers),
        [
            names(&["perl"]),
            names(&["glibc"]),
            names(&["git"]),
            names(&["curl", "openssl"]),
            names(&["htop", "ncurses", "nss-cacert"]),
        ]
    );
    // With 6, the five largest alone leave curl (below git), htop and
    // nss-cacert: still two kinds, so four stay alone; of the rest, only
    // curl is below one of them (ncurses is below htop, which is not).
    // Beside them, ncurses (3 MB) is not top-level and outweighs curl
    // (1 MB): the top-level htop and nss-cacert go apart, and ncurses joins
    // curl.
    let layers = run(&git_and_htop(), Strategy::SizeRank, 6);
    assert_eq!(
        contents(&layers),
        [
            names(&["perl"]),
            names(&["glibc"]),
            names(&["git"]),
            names(&["openssl"]),
            names(&["curl", "ncurses"]),
            names(&["htop", "nss-cacert"]),
        ]
    );
}

#[test]
fn size_rank_keeps_top_level_paths_apart_from_a_larger_stable_part() {
    // A small program on big toolchain paths (as libpulsar on llvm and
    // clang): the two largest alone leave the small libraries below them
    // and, beside them, the toolchain's programs and the program itself.
    // The programs outweigh the libraries, so the top-level program goes
    // alone and an update of it downloads only its own bytes.
    let g = graph(
        &["app"],
        &[
            ("app", 16 * MB, &["llvm", "clang", "protobuf"]),
            ("llvm", 40 * MB, &["llvm-lib"]),
            ("clang", 30 * MB, &["clang-lib"]),
            ("protobuf", 5 * MB, &["zlib"]),
            ("llvm-lib", 200 * MB, &["zlib"]),
            ("clang-lib", 190 * MB, &["zlib"]),
            ("zlib", MB, &[]),
        ],
    );
    let layers = run(&g, Strategy::SizeRank, 4);
    assert_eq!(
        contents(&layers),
        [
            names(&["llvm-lib"]),
            names(&["clang-lib"]),
            names(&["clang", "llvm", "protobuf", "zlib"]),
            names(&["app"]),
        ]
    );
    // When the paths below weigh more, the split stays by direction.
    let g = graph(
        &["app"],
        &[
            ("app", 16 * MB, &["tool", "big-a", "big-b"]),
            ("tool", 20 * MB, &[]),
            ("big-a", 200 * MB, &["base-1", "base-2"]),
            ("big-b", 190 * MB, &["base-1"]),
            ("base-1", 30 * MB, &[]),
            ("base-2", 30 * MB, &[]),
        ],
    );
    let layers = run(&g, Strategy::SizeRank, 4);
    assert_eq!(
        contents(&layers),
        [
            names(&["big-a"]),
            names(&["big-b"]),
            names(&["base-1", "base-2"]),
            names(&["app", "tool"]),
        ]
    );
}

#[test]
fn size_rank_uses_the_last_slot_when_the_rest_is_of_one_kind() {
    // Everything below one top-level path: the rest is all "below".
    let g = graph(
        &["app"],
        &[
            ("app", 50 * MB, &["a", "b", "c", "d"]),
            ("a", 40 * MB, &[]),
            ("b", 30 * MB, &[]),
            ("c", MB, &[]),
            ("d", MB, &[]),
        ],
    );
    let layers = run(&g, Strategy::SizeRank, 4);
    assert_eq!(
        contents(&layers),
        [
            names(&["app"]),
            names(&["a"]),
            names(&["b"]),
            names(&["c", "d"])
        ]
    );
}

#[test]
fn size_rank_with_budgets_of_one_and_two() {
    let g = git_and_htop();
    let one = run(&g, Strategy::SizeRank, 1);
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].contents.len(), 8);
    let two = run(&g, Strategy::SizeRank, 2);
    assert_eq!(two.len(), 2);
    assert_eq!(two[0].contents, names(&["perl"]));
}

#[test]
fn size_rank_orders_dependencies_before_their_users_in_the_manifest() {
    // The manifest lists the highest merge rating first.
    let layers = run(&git_and_htop(), Strategy::SizeRank, 94);
    let rating = |name: &str| {
        layers
            .iter()
            .find(|l| l.contents == names(&[name]))
            .unwrap()
            .merge_rating
    };
    assert!(rating("glibc") > rating("openssl"));
    assert!(rating("openssl") > rating("curl"));
    assert!(rating("curl") > rating("git"));
}

#[test]
fn equal_sizes_are_ranked_by_package_name_not_hash() {
    // Same size; "zlib"'s hash sorts first, but "bzip2"'s name does.
    let g = RuntimeGraph {
        export_references_graph: ExportReferences {
            graph: vec![
                "/nix/store/aaaa-zlib-1".into(),
                "/nix/store/zzzz-bzip2-1".into(),
            ],
        },
        graph: [
            "/nix/store/aaaa-zlib-1",
            "/nix/store/zzzz-bzip2-1",
            "/nix/store/mmmm-x-1",
        ]
        .iter()
        .map(|path| PathInfo {
            path: (*path).into(),
            closure_size: 5,
            nar_size: Some(5),
            references: vec![],
            nar_hash: None,
        })
        .collect(),
    };
    let g = RuntimeGraph {
        graph: g
            .graph
            .into_iter()
            .map(|mut e| {
                if e.path.ends_with("zlib-1") {
                    e.references.push("/nix/store/mmmm-x-1".into());
                }
                e
            })
            .collect(),
        ..g
    };
    let layers = run(&g, Strategy::SizeRank, 2);
    assert_eq!(layers[0].contents, ["/nix/store/zzzz-bzip2-1"]);
}

#[test]
fn size_cohort_groups_paths_by_the_primaries_above_them() {
    // Budget 4: perl, then glibc, then git become primaries; openssl is
    // below git only (through curl), ncurses below nothing primary.
    let layers = run(&git_and_htop(), Strategy::SizeCohort, 4);
    assert_eq!(
        contents(&layers),
        [
            names(&["perl"]),
            names(&["glibc"]),
            names(&["curl", "git", "openssl"]),
            names(&["htop", "ncurses", "nss-cacert"]),
        ]
    );
}

#[test]
fn in_degree_puts_each_path_alone_while_the_budget_allows() {
    let layers = run(&git_and_htop(), Strategy::InDegree, 94);
    assert_eq!(layers.len(), 8);
    assert!(layers.iter().all(|l| l.contents.len() == 1));
}

#[test]
fn strategies_parse_by_name_and_reject_others() {
    for strategy in Strategy::ALL {
        assert_eq!(strategy.name().parse::<Strategy>(), Ok(strategy));
    }
    let err = "fastest".parse::<Strategy>().unwrap_err();
    assert!(err.to_string().contains("size-rank"), "{err}");
}

#[test]
fn a_popularity_map_implies_upstreams_strategy_unless_one_is_configured() {
    assert_eq!(Strategy::resolve(None, false), Strategy::SizeRank);
    assert_eq!(Strategy::resolve(None, true), Strategy::Popularity);
    assert_eq!(
        Strategy::resolve(Some(Strategy::SizeCohort), true),
        Strategy::SizeCohort
    );
}

#[test]
fn size_strategies_reject_a_graph_without_nar_sizes() {
    let mut g = git_and_htop();
    g.graph[3].nar_size = None;
    for strategy in [Strategy::SizeRank, Strategy::SizeCohort] {
        assert_eq!(
            group(&g, strategy, &Popularity::default(), 4),
            Err(LayerError::MissingNarSize { path: p("perl") })
        );
    }
    assert!(group(&g, Strategy::Popularity, &Popularity::default(), 4).is_ok());
}

#[test]
fn size_strategies_reject_inconsistent_graphs() {
    let mut g = git_and_htop();
    g.graph[0].references.push(p("ghost"));
    assert_eq!(
        run_err(&g),
        LayerError::UnknownReference {
            path: p("git"),
            reference: p("ghost")
        }
    );
    let mut g = git_and_htop();
    g.export_references_graph.graph.push(p("ghost"));
    assert_eq!(
        run_err(&g),
        LayerError::UnknownTopLevel { path: p("ghost") }
    );
    let mut g = git_and_htop();
    let copy = g.graph[0].clone();
    g.graph.push(copy);
    assert_eq!(run_err(&g), LayerError::DuplicatePath { path: p("git") });
    let mut g = git_and_htop();
    g.export_references_graph.graph.retain(|t| *t != p("htop"));
    assert_eq!(run_err(&g), LayerError::Unreachable { path: p("htop") });
    assert_eq!(
        group(
            &git_and_htop(),
            Strategy::SizeRank,
            &Popularity::default(),
            0
        ),
        Err(LayerError::ZeroBudget)
    );
}

fn run_err(g: &RuntimeGraph) -> LayerError {
    group(g, Strategy::SizeRank, &Popularity::default(), 4).unwrap_err()
}

/// A generated closure of `n` paths (splitmix64 from `seed`): path `i`
/// references a few later paths, so it is a DAG; paths nobody references
/// are top-level. Sizes come from a small set, so ties are common.
fn generated(n: usize, seed: u64) -> RuntimeGraph {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let paths: Vec<String> = (0..n)
        .map(|i| format!("/nix/store/{:032x}-pkg-{}", next() as u128, i % 97))
        .collect();
    let mut refs = vec![Vec::new(); n];
    let mut referred = vec![false; n];
    for (i, out) in refs.iter_mut().enumerate() {
        if i + 1 < n {
            for _ in 0..(next() % 4) {
                let j = i + 1 + (next() % (n - i - 1) as u64) as usize;
                if !out.contains(&j) {
                    out.push(j);
                    referred[j] = true;
                }
            }
        }
    }
    let nar: Vec<u64> = (0..n)
        .map(|_| [0, 1, 1000, 1000, 5_000_000][(next() % 5) as usize])
        .collect();
    // Closure sizes in reverse order: references come later.
    let mut closure: Vec<std::collections::BTreeSet<usize>> = vec![Default::default(); n];
    for i in (0..n).rev() {
        let mut set = std::collections::BTreeSet::from([i]);
        for &j in &refs[i] {
            set.extend(closure[j].iter().copied());
        }
        closure[i] = set;
    }
    RuntimeGraph {
        export_references_graph: ExportReferences {
            graph: (0..n)
                .filter(|&i| !referred[i])
                .map(|i| paths[i].clone())
                .collect(),
        },
        graph: (0..n)
            .map(|i| PathInfo {
                path: paths[i].clone(),
                closure_size: closure[i].iter().map(|&j| nar[j]).sum(),
                nar_size: Some(nar[i]),
                references: std::iter::once(i)
                    .chain(refs[i].iter().copied())
                    .map(|j| paths[j].clone())
                    .collect(),
                nar_hash: None,
            })
            .collect(),
    }
}

/// A seeded Fisher-Yates shuffle of the graph's entries, its top-level
/// paths and every reference list.
fn shuffled(g: &RuntimeGraph, seed: u64) -> RuntimeGraph {
    let mut state = seed;
    let mut g = g.clone();
    shuffle(&mut g.graph, &mut state);
    shuffle(&mut g.export_references_graph.graph, &mut state);
    for entry in &mut g.graph {
        shuffle(&mut entry.references, &mut state);
    }
    g
}

fn shuffle<T>(items: &mut [T], state: &mut u64) {
    for i in (1..items.len()).rev() {
        *state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        items.swap(i, ((*state >> 33) % (i as u64 + 1)) as usize);
    }
}

#[test]
fn the_same_graph_in_shuffled_order_gives_the_same_layers() {
    for seed in 0..20 {
        let g = generated(60, seed);
        for strategy in Strategy::ALL {
            for budget in [1, 2, 3, 5, 12, 94] {
                let first = run(&g, strategy, budget);
                for shuffle_seed in 1..4 {
                    assert_eq!(
                        run(&shuffled(&g, shuffle_seed), strategy, budget),
                        first,
                        "{strategy}, budget {budget}, graph {seed}"
                    );
                }
            }
        }
    }
}

#[test]
fn the_budget_holds_on_a_1000_path_graph() {
    let g = generated(1000, 7);
    for strategy in Strategy::ALL {
        for budget in [1, 2, 12, DEFAULT_BUDGET_FOR_TESTS] {
            let layers = run(&g, strategy, budget);
            assert!(
                layers.len() <= budget,
                "{strategy}: {} > {budget}",
                layers.len()
            );
            assert!(layers.iter().all(|l| !l.contents.is_empty()), "{strategy}");
            let mut all: Vec<&String> = layers.iter().flat_map(|l| &l.contents).collect();
            all.sort();
            all.dedup();
            assert_eq!(
                all.len(),
                1000,
                "{strategy}, budget {budget}: every path exactly once"
            );
            assert_eq!(layers.iter().map(|l| l.contents.len()).sum::<usize>(), 1000);
        }
    }
    // Size-rank uses the whole budget when the closure exceeds it.
    assert_eq!(
        run(&g, Strategy::SizeRank, DEFAULT_BUDGET_FOR_TESTS).len(),
        DEFAULT_BUDGET_FOR_TESTS
    );
}

const DEFAULT_BUDGET_FOR_TESTS: usize = crate::layers::DEFAULT_BUDGET;

#[test]
fn every_strategy_places_every_path_once_within_the_budget_on_many_graphs() {
    for seed in 100..160 {
        let n = 1 + (seed as usize * 7) % 40;
        let g = generated(n, seed);
        for strategy in Strategy::ALL {
            for budget in [1, 2, 3, 4, 7, 94] {
                let layers = run(&g, strategy, budget);
                assert!(layers.len() <= budget && !layers.is_empty());
                assert!(layers.iter().all(|l| !l.contents.is_empty()));
                let mut all: Vec<&String> = layers.iter().flat_map(|l| &l.contents).collect();
                all.sort();
                all.dedup();
                assert_eq!(all.len(), n, "{strategy}, budget {budget}, seed {seed}");
            }
        }
    }
}

#[test]
fn layering_fingerprint_covers_strategy_budget_and_a_read_map_only() {
    let base = Layering {
        strategy: Strategy::SizeRank,
        popularity: Popularity::default(),
        budget: 94,
    };
    let with_map = Layering {
        popularity: [("glibc".to_owned(), 300)].into_iter().collect(),
        ..base.clone()
    };
    assert_eq!(base.fingerprint(), with_map.fingerprint());
    let upstream = |l: &Layering| Layering {
        strategy: Strategy::Popularity,
        ..l.clone()
    };
    assert_ne!(
        upstream(&base).fingerprint(),
        upstream(&with_map).fingerprint()
    );
    assert_ne!(base.fingerprint(), upstream(&base).fingerprint());
    assert_ne!(
        base.fingerprint(),
        Layering {
            budget: 12,
            ..base.clone()
        }
        .fingerprint()
    );
}
