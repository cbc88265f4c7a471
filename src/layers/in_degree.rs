//! Graph-derived popularity: upstream's algorithm with each path's
//! popularity taken from this image's own graph instead of a map.

use std::collections::HashMap;

use super::graph::{DependencyGraph, special_popularity};
use super::group::dominate_and_merge;
use super::{Layer, LayerError, POPULAR_COUNT, RuntimeGraph};

/// Each path's popularity is [`POPULAR_COUNT`] times one plus the number of
/// paths of this graph that reference it (so every path is popular enough
/// to get a root edge, and so starts as a layer of its own), except that
/// `nss-cacert` and `iana-etc` keep their special popularity. Then steps 2
/// and 3 of upstream's algorithm run unchanged.
pub(crate) fn group(graph: &RuntimeGraph, budget: usize) -> Result<Vec<Layer>, LayerError> {
    let mut referrers: HashMap<&str, u64> = HashMap::with_capacity(graph.graph.len());
    for entry in &graph.graph {
        for reference in &entry.references {
            if *reference != entry.path {
                *referrers.entry(reference.as_str()).or_default() += 1;
            }
        }
    }
    let deps = DependencyGraph::build_with(graph, |entry| {
        special_popularity(&entry.path).unwrap_or_else(|| {
            let count = referrers.get(entry.path.as_str()).copied().unwrap_or(0);
            POPULAR_COUNT.saturating_mul(count.saturating_add(1))
        })
    })?;
    dominate_and_merge(&deps, budget)
}
