//! The runtime graph that `prepare-image` writes, and the validated
//! dependency graph (step 1 of the algorithm) built from it.

use std::collections::HashMap;

use petgraph::graph::{DiGraph, NodeIndex};
use serde::{Deserialize, Serialize};

use super::{BIG_CLOSURE_SIZE, LayerError, POPULAR_COUNT, SPECIAL_POPULARITY, package_name};
use crate::popularity::Popularity;

/// The data of Nix's `exportReferencesGraph` for the requested packages, as
/// `prepare-image` writes it under `runtimeGraph`. Fields other than those
/// named here (`narDeriver`, `signatures`, ...) are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeGraph {
    /// The top-level store paths (the requested packages).
    #[serde(rename = "exportReferencesGraph")]
    pub export_references_graph: ExportReferences,
    /// One entry per store path in the closure of the top-level paths.
    pub graph: Vec<PathInfo>,
}

impl RuntimeGraph {
    /// The entries sorted by path; a path listed twice is an error.
    pub fn sorted_entries(&self) -> Result<Vec<&PathInfo>, LayerError> {
        let mut entries: Vec<&PathInfo> = self.graph.iter().collect();
        entries.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        if let Some(pair) = entries.windows(2).find(|w| w[0].path == w[1].path) {
            return Err(LayerError::DuplicatePath {
                path: pair[0].path.clone(),
            });
        }
        Ok(entries)
    }
}

/// The `exportReferencesGraph` object: the graph's starting points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportReferences {
    /// The top-level store paths.
    pub graph: Vec<String>,
}

/// One store path of the closure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathInfo {
    /// The store path, e.g. `/nix/store/<hash>-glibc-2.40-36`.
    pub path: String,
    /// Size in bytes of the path's whole closure.
    #[serde(rename = "closureSize")]
    pub closure_size: u64,
    /// Size in bytes of the path itself (its NAR serialisation). Nix always
    /// reports it; the size-based strategies need it, upstream's does not.
    #[serde(rename = "narSize", default, skip_serializing_if = "Option::is_none")]
    pub nar_size: Option<u64>,
    /// Store paths this path refers to (usually including itself).
    pub references: Vec<String>,
    /// The hash of the path's NAR serialisation as Nix writes it
    /// (`sha256:<nix32>`, or SRI `sha256-<base64>`), when the graph has it.
    #[serde(rename = "narHash", default, skip_serializing_if = "Option::is_none")]
    pub nar_hash: Option<String>,
}

/// A store path as a node of the dependency graph.
pub(crate) struct Node<'a> {
    pub path: &'a str,
    pub closure_size: u64,
    pub popularity: u64,
}

/// Step 1: the dependency graph with its synthetic root, validated.
///
/// Node [`root()`] is the synthetic root; node `i + 1` is `nodes[i]`. Nodes are
/// sorted by store path, so node order (and everything derived from it) does
/// not depend on the order of the input.
pub(crate) struct DependencyGraph<'a> {
    pub nodes: Vec<Node<'a>>,
    pub graph: DiGraph<(), ()>,
}

/// The synthetic root's node index.
pub(crate) fn root() -> NodeIndex {
    NodeIndex::new(0)
}

/// The node index of `nodes[i]`.
pub(crate) fn node_index(i: usize) -> NodeIndex {
    NodeIndex::new(i + 1)
}

impl<'a> DependencyGraph<'a> {
    /// Build the graph, rejecting duplicate paths and references or
    /// top-level paths that have no entry.
    pub fn build(input: &'a RuntimeGraph, popularity: &Popularity) -> Result<Self, LayerError> {
        Self::build_with(input, |entry| popularity_of(&entry.path, popularity))
    }

    /// [`Self::build`] with each path's popularity given by `popularity`.
    pub fn build_with(
        input: &'a RuntimeGraph,
        popularity: impl Fn(&PathInfo) -> u64,
    ) -> Result<Self, LayerError> {
        let entries = input.sorted_entries()?;

        let index: HashMap<&str, NodeIndex> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.path.as_str(), node_index(i)))
            .collect();
        let lookup = |path: &str| index.get(path).copied();

        let edge_count = entries.iter().map(|e| e.references.len()).sum::<usize>()
            + input.export_references_graph.graph.len();
        let mut graph = DiGraph::with_capacity(entries.len() + 1, edge_count);
        graph.add_node(());
        let mut nodes = Vec::with_capacity(entries.len());
        for entry in &entries {
            graph.add_node(());
            nodes.push(Node {
                path: &entry.path,
                closure_size: entry.closure_size,
                popularity: popularity(entry),
            });
        }

        let mut from_root = vec![false; nodes.len() + 1];
        for top in &input.export_references_graph.graph {
            let to =
                lookup(top).ok_or_else(|| LayerError::UnknownTopLevel { path: top.clone() })?;
            if !from_root[to.index()] {
                from_root[to.index()] = true;
                graph.add_edge(root(), to, ());
            }
        }

        for (i, (entry, node)) in entries.iter().zip(&nodes).enumerate() {
            let from = node_index(i);
            let big_or_popular =
                node.closure_size > BIG_CLOSURE_SIZE || node.popularity >= POPULAR_COUNT;
            if big_or_popular && !from_root[from.index()] {
                from_root[from.index()] = true;
                graph.add_edge(root(), from, ());
            }
            for reference in &entry.references {
                if *reference == entry.path {
                    continue;
                }
                let to = lookup(reference).ok_or_else(|| LayerError::UnknownReference {
                    path: entry.path.clone(),
                    reference: reference.clone(),
                })?;
                graph.add_edge(from, to, ());
            }
        }

        Ok(Self { nodes, graph })
    }
}

/// The popularity of a store path: [`SPECIAL_POPULARITY`] for the packages
/// every image contains, else the map's count, else 1.
fn popularity_of(path: &str, popularity: &Popularity) -> u64 {
    special_popularity(path).unwrap_or_else(|| popularity.get(package_name(path)).unwrap_or(1))
}

/// [`SPECIAL_POPULARITY`] for `nss-cacert*` and `iana-etc*`, which every
/// image contains.
pub(crate) fn special_popularity(path: &str) -> Option<u64> {
    let name = package_name(path);
    (name.starts_with("nss-cacert") || name.starts_with("iana-etc")).then_some(SPECIAL_POPULARITY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_graph_parses_prepare_image_output_keeping_the_nar_hash() {
        let json = r#"{
            "exportReferencesGraph": {"graph": ["/nix/store/aaaa-hello-2.12"]},
            "graph": [{
                "closureSize": 1234,
                "narHash": "sha256:0000",
                "narSize": 1000,
                "path": "/nix/store/aaaa-hello-2.12",
                "references": ["/nix/store/aaaa-hello-2.12"]
            }]
        }"#;
        let graph: RuntimeGraph = serde_json::from_str(json).unwrap();
        assert_eq!(
            graph.export_references_graph.graph,
            ["/nix/store/aaaa-hello-2.12"]
        );
        assert_eq!(
            graph.graph,
            [PathInfo {
                path: "/nix/store/aaaa-hello-2.12".into(),
                closure_size: 1234,
                nar_size: Some(1000),
                references: vec!["/nix/store/aaaa-hello-2.12".into()],
                nar_hash: Some("sha256:0000".into()),
            }]
        );
    }

    #[test]
    fn runtime_graph_without_closure_size_is_rejected() {
        let json = r#"{"exportReferencesGraph": {"graph": []},
                       "graph": [{"path": "/nix/store/a-x", "references": []}]}"#;
        let err = serde_json::from_str::<RuntimeGraph>(json).unwrap_err();
        assert!(err.to_string().contains("closureSize"), "{err}");
    }

    #[test]
    fn special_packages_are_very_popular_whatever_the_map_says() {
        let pop: Popularity = [("nss-cacert-3.104".to_owned(), 2)].into_iter().collect();
        assert_eq!(
            popularity_of("/nix/store/abc-nss-cacert-3.104", &pop),
            500_000
        );
        assert_eq!(
            popularity_of("/nix/store/abc-iana-etc-20240318", &pop),
            500_000
        );
    }

    #[test]
    fn popularity_comes_from_the_map_by_package_name_else_one() {
        let pop: Popularity = [("glibc-2.40-36".to_owned(), 300)].into_iter().collect();
        assert_eq!(popularity_of("/nix/store/abc-glibc-2.40-36", &pop), 300);
        assert_eq!(popularity_of("/nix/store/abc-zlib-1.3", &pop), 1);
    }
}
