//! How well each layering strategy shares bytes, on real closures.
//!
//! Not a timing benchmark: for every data set, budget and strategy it prints
//! what a client downloads, with layer size = the sum of its paths'
//! `narSize` (no compression) and a client that keeps every blob it pulled,
//! skipping any layer whose key it already holds (containerd, podman and
//! skopeo work by blob digest; the symlink layer is left out, it is a few
//! KB per image):
//!
//! - **related**: for each group of related images (one package set),
//!   the bytes of the distinct layers of the whole group over the sum of
//!   the images' sizes: what a client pulling every image of the group
//!   downloads, as a share of what it would without any sharing. One layer
//!   per path reaches the floor (the unique bytes over all bytes).
//! - **update**: for each update (the images of one step of a series
//!   replaced by those of the next), the bytes of new layers the client
//!   does not hold over the bytes of the new store paths it does not hold,
//!   summed over the updates that keep at least one path (an update that
//!   replaces everything scores 1.00 whatever the layering). 1.00 is the
//!   floor.
//! - **related, docker**: the same with Docker's classic image store, which
//!   keeps layers by chain (a layer and every layer before it in the
//!   manifest) and so downloads everything after the first layer whose
//!   chain it lacks, the images pulled in index order. Here the manifest
//!   order (highest merge rating first) matters too.
//! - **layers**: mean and largest layer count per image (always within the
//!   budget; the benchmark fails otherwise).
//!
//! Each data set is a directory with an `index.json` and one file per image,
//! either in `../shared/closures` format (`root_paths`, `paths` with
//! `narSize` and `references`) or a runtime graph as `prepare-image` writes
//! it. Index entries give `file` and `group` and either `series` and `step`
//! or, as in `../shared/closures`, `roots`, `platform` and `date` (a series
//! is then one package name on one platform, by date). The `popularity +
//! map` row uses a map counted over the data set itself as `nixery popcount`
//! counts a package set.
//!
//! Usage: `NIXERY_BENCH_DATA=dir[,dir...] NIXERY_BENCH_BUDGETS=94,12 cargo
//! bench --bench layering` (`scripts/bench-layering.sh` builds the offline
//! package set's data set and runs this on it and on `../shared/closures`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use nixery::layers::{
    ExportReferences, Layer, PathInfo, Popularity, RuntimeGraph, Strategy, group, package_name,
};
use serde::Deserialize;
use serde_json::Value;

/// One image of a data set.
struct Image {
    file: String,
    graph: RuntimeGraph,
    nar: HashMap<String, u64>,
}

impl Image {
    fn size(&self) -> u64 {
        self.nar.values().sum()
    }
}

/// A data set: its images, related groups and updates.
struct DataSet {
    name: String,
    images: Vec<Image>,
    /// Image indices of each group of related images (two or more).
    groups: Vec<Vec<usize>>,
    /// (held images, new images) for each update.
    updates: Vec<(Vec<usize>, Vec<usize>)>,
    popularity: Popularity,
}

#[derive(Deserialize)]
struct IndexEntry {
    file: String,
    group: Option<String>,
    series: Option<String>,
    step: Option<u64>,
    #[serde(default)]
    roots: Vec<String>,
    platform: Option<String>,
    date: Option<String>,
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let data = std::env::var("NIXERY_BENCH_DATA")
        .unwrap_or_else(|_| root.join("../shared/closures").display().to_string());
    let budgets: Vec<usize> = std::env::var("NIXERY_BENCH_BUDGETS")
        .unwrap_or_else(|_| "94,12,4".into())
        .split(',')
        .map(|b| {
            b.trim()
                .parse()
                .expect("NIXERY_BENCH_BUDGETS: comma-separated integers")
        })
        .collect();
    for dir in data.split(',').filter(|d| !d.is_empty()) {
        let dir = Path::new(dir);
        if !dir.join("index.json").is_file() {
            println!("SKIPPED data set {}: no index.json", dir.display());
            continue;
        }
        let set = load(dir);
        println!(
            "\n## {} ({} images, {} related groups, {} updates)",
            set.name,
            set.images.len(),
            set.groups.len(),
            set.updates.len()
        );
        for &budget in &budgets {
            report(&set, budget);
        }
    }
}

fn load(dir: &Path) -> DataSet {
    let index: Vec<IndexEntry> =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).expect("read index.json"))
            .expect("parse index.json");
    let mut images = Vec::new();
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut series: BTreeMap<String, BTreeMap<(u64, String), Vec<usize>>> = BTreeMap::new();
    for entry in &index {
        let i = images.len();
        images.push(read_image(&dir.join(&entry.file), &entry.file));
        if let Some(g) = &entry.group {
            groups.entry(g.clone()).or_default().push(i);
        }
        let step = match (&entry.series, entry.step, entry.roots.first()) {
            (Some(s), Some(step), _) => Some((s.clone(), (step, String::new()))),
            (None, _, Some(root)) => {
                let platform = entry.platform.clone().unwrap_or_default();
                let date = entry.date.clone().unwrap_or_default();
                let name = format!("{} {platform}", pname(root));
                Some((name, (0, format!("{date} {}", entry.file))))
            }
            _ => None,
        };
        if let Some((name, step)) = step {
            series
                .entry(name)
                .or_default()
                .entry(step)
                .or_default()
                .push(i);
        }
    }
    let updates = series
        .into_values()
        .flat_map(|steps| {
            let steps: Vec<Vec<usize>> = steps.into_values().collect();
            steps
                .windows(2)
                .map(|w| (w[0].clone(), w[1].clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let popularity = popcount(&images);
    DataSet {
        name: dir.display().to_string(),
        images,
        groups: groups.into_values().filter(|g| g.len() >= 2).collect(),
        updates,
        popularity,
    }
}

/// The package name without its version (`xmlsec-1.2.28` -> `xmlsec`), as
/// Nix splits names: the version starts at the first `-` before a digit.
fn pname(name: &str) -> &str {
    let name = package_name(name);
    name.match_indices('-')
        .find(|(i, _)| name[i + 1..].starts_with(|c: char| c.is_ascii_digit()))
        .map_or(name, |(i, _)| &name[..i])
}

fn read_image(path: &Path, file: &str) -> Image {
    let value: Value = serde_json::from_slice(&std::fs::read(path).expect("read image"))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let graph = if value.get("paths").is_some() {
        from_closure_format(&value)
    } else {
        serde_json::from_value(value).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let nar = graph
        .graph
        .iter()
        .map(|p| (p.path.clone(), p.nar_size.expect("narSize")))
        .collect();
    Image {
        file: file.to_owned(),
        graph,
        nar,
    }
}

/// `../shared/closures` format to a runtime graph; `closureSize` is the sum
/// of `narSize` over the path's closure.
fn from_closure_format(value: &Value) -> RuntimeGraph {
    let paths = value["paths"].as_object().expect("paths object");
    let refs: HashMap<&str, Vec<&str>> = paths
        .iter()
        .map(|(p, info)| {
            let r = info["references"].as_array().expect("references");
            (p.as_str(), r.iter().filter_map(Value::as_str).collect())
        })
        .collect();
    let nar = |p: &str| paths[p]["narSize"].as_u64().expect("narSize");
    let graph = paths
        .keys()
        .map(|p| {
            let mut seen = HashSet::from([p.as_str()]);
            let mut stack = vec![p.as_str()];
            while let Some(q) = stack.pop() {
                for &r in &refs[q] {
                    if seen.insert(r) {
                        stack.push(r);
                    }
                }
            }
            PathInfo {
                path: p.clone(),
                closure_size: seen.iter().map(|q| nar(q)).sum(),
                nar_size: Some(nar(p)),
                references: refs[p.as_str()].iter().map(|r| (*r).to_owned()).collect(),
                nar_hash: None,
            }
        })
        .collect();
    let tops = value["root_paths"].as_array().expect("root_paths");
    RuntimeGraph {
        export_references_graph: ExportReferences {
            graph: tops
                .iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect(),
        },
        graph,
    }
}

/// A popularity map over the data set's distinct store paths, counted as
/// `nixery popcount` counts (other paths referencing the package; counts
/// of one dropped).
fn popcount(images: &[Image]) -> Popularity {
    let mut seen = HashSet::new();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for image in images {
        for entry in &image.graph.graph {
            if seen.insert(entry.path.clone()) {
                for r in entry.references.iter().filter(|r| **r != entry.path) {
                    *counts.entry(package_name(r).to_owned()).or_default() += 1;
                }
            }
        }
    }
    counts.into_iter().filter(|(_, c)| *c > 1).collect()
}

/// The figures of one strategy on one data set at one budget.
struct Figures {
    related: f64,
    docker: f64,
    update: f64,
    mean_layers: f64,
    max_layers: usize,
}

/// How a row groups an image: a strategy with or without the map, or one
/// layer per path (the floor).
#[derive(Clone, Copy)]
enum Row {
    Floor,
    Run(Strategy, bool),
}

fn layers_of(image: &Image, row: Row, popularity: &Popularity, budget: usize) -> Vec<Layer> {
    match row {
        Row::Floor => image
            .graph
            .graph
            .iter()
            .map(|p| Layer {
                contents: vec![p.path.clone()],
                merge_rating: 0,
            })
            .collect(),
        Row::Run(strategy, with_map) => {
            let empty = Popularity::default();
            let map = if with_map { popularity } else { &empty };
            let layers = group(&image.graph, strategy, map, budget)
                .unwrap_or_else(|e| panic!("{} with {strategy}: {e}", image.file));
            assert!(layers.len() <= budget, "{} over budget", image.file);
            let mut all: Vec<&String> = layers.iter().flat_map(|l| &l.contents).collect();
            all.sort();
            all.dedup();
            assert_eq!(
                all.len(),
                image.graph.graph.len(),
                "{}: paths lost",
                image.file
            );
            layers
        }
    }
}

fn measure(set: &DataSet, row: Row, budget: usize) -> Figures {
    let layers: Vec<Vec<_>> = set
        .images
        .iter()
        .map(|image| {
            layers_of(image, row, &set.popularity, budget)
                .into_iter()
                .map(|l| {
                    let size = l.contents.iter().map(|p| image.nar[p]).sum();
                    (l.key(), size, l.merge_rating, l.contents[0].clone())
                })
                .collect::<Vec<_>>()
        })
        .collect();
    // Manifest order, as crate::manifest::order_layers has it.
    let chains: Vec<Vec<(String, u64)>> = layers
        .iter()
        .map(|image| {
            let mut ordered: Vec<_> = image.iter().collect();
            ordered.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.3.cmp(&b.3)));
            let mut chain = String::new();
            ordered
                .into_iter()
                .map(|(key, size, _, _)| {
                    chain.push_str(key);
                    chain.push(',');
                    (chain.clone(), *size)
                })
                .collect()
        })
        .collect();
    let layers: Vec<Vec<(String, u64)>> = layers
        .into_iter()
        .map(|image| image.into_iter().map(|(k, s, _, _)| (k, s)).collect())
        .collect();

    let (mut downloaded, mut docker, mut total) = (0u64, 0u64, 0u64);
    for group in &set.groups {
        let (mut held, mut held_chains) = (HashSet::new(), HashSet::new());
        for &i in group {
            total += set.images[i].size();
            for (key, size) in &layers[i] {
                if held.insert(key) {
                    downloaded += size;
                }
            }
            let first_missing = chains[i]
                .iter()
                .position(|(chain, _)| !held_chains.contains(chain))
                .unwrap_or(chains[i].len());
            docker += chains[i][first_missing..]
                .iter()
                .map(|(_, s)| s)
                .sum::<u64>();
            held_chains.extend(chains[i].iter().map(|(chain, _)| chain.clone()));
        }
    }

    let (mut fetched, mut changed) = (0u64, 0u64);
    for (old, new) in &set.updates {
        let held_paths: HashSet<&String> =
            old.iter().flat_map(|&i| set.images[i].nar.keys()).collect();
        let kept = new
            .iter()
            .any(|&i| set.images[i].nar.keys().any(|p| held_paths.contains(p)));
        if !kept {
            continue;
        }
        let mut held: HashSet<&String> = old
            .iter()
            .flat_map(|&i| layers[i].iter().map(|(k, _)| k))
            .collect();
        let mut new_paths = BTreeSet::new();
        for &i in new {
            for (path, size) in &set.images[i].nar {
                if !held_paths.contains(path) && new_paths.insert(path) {
                    changed += size;
                }
            }
            for (key, size) in &layers[i] {
                if held.insert(key) {
                    fetched += size;
                }
            }
        }
    }

    let counts: Vec<usize> = layers.iter().map(Vec::len).collect();
    Figures {
        related: downloaded as f64 / total.max(1) as f64,
        docker: docker as f64 / total.max(1) as f64,
        update: fetched as f64 / changed.max(1) as f64,
        mean_layers: counts.iter().sum::<usize>() as f64 / counts.len().max(1) as f64,
        max_layers: counts.iter().copied().max().unwrap_or(0),
    }
}

fn report(set: &DataSet, budget: usize) {
    println!("\nbudget {budget}");
    println!(
        "| {:<24} | {:>7} | {:>15} | {:>12} | {:>17} |",
        "strategy", "related", "related, docker", "update ratio", "layers (mean/max)"
    );
    println!(
        "|{:-<26}|{:->8}:|{:->16}:|{:->13}:|{:->18}:|",
        "", "", "", "", ""
    );
    let mut rows = vec![("floor (a layer per path)".to_owned(), Row::Floor)];
    for strategy in Strategy::ALL {
        rows.push((strategy.name().to_owned(), Row::Run(strategy, false)));
        if strategy.uses_popularity() {
            rows.push((
                format!("{} + map", strategy.name()),
                Row::Run(strategy, true),
            ));
        }
    }
    for (name, row) in rows {
        let f = measure(set, row, budget);
        println!(
            "| {:<24} | {:>6.1}% | {:>14.1}% | {:>11.2}x | {:>9.1} / {:>5} |",
            name,
            100.0 * f.related,
            100.0 * f.docker,
            f.update,
            f.mean_layers,
            f.max_layers
        );
    }
}
