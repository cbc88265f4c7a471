//! Steps 2 to 4: dominator-tree grouping, merging down to the budget, and
//! layer cache keys.

use petgraph::algo::dominators::simple_fast;
use sha1::{Digest, Sha1};

use super::LayerError;
use super::graph::{DependencyGraph, node_index, root};
use super::{Popularity, RuntimeGraph};

/// One layer of an image: the store paths it holds, in layer order, and the
/// rating that decided its place and its merges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// Store paths in the layer. Sorted for an unmerged layer; a merged layer
    /// holds its parts' contents one after the other.
    pub contents: Vec<String>,
    /// Popularity of the layer's head times the sum of its members' closure
    /// sizes; a merged layer adds up its parts' ratings.
    pub merge_rating: u128,
}

impl Layer {
    /// The layer's cache key: hex SHA-1 of the contents joined with `:`.
    pub fn key(&self) -> String {
        let mut hasher = Sha1::new();
        for (i, path) in self.contents.iter().enumerate() {
            if i > 0 {
                hasher.update(b":");
            }
            hasher.update(path.as_bytes());
        }
        hex::encode(hasher.finalize())
    }
}

/// Group the closure described by `graph` into at most `budget` layers, in
/// the final order of step 3 (ascending merge rating, then the snowball of
/// merged layers first). The result depends only on the graph's content,
/// never on the order of its entries or references.
///
/// Fails if the graph is inconsistent (a reference or top-level path without
/// an entry, a duplicate entry, an unreachable path) or `budget` is zero. An
/// empty graph gives no layers.
pub fn group_layers(
    graph: &RuntimeGraph,
    popularity: &Popularity,
    budget: usize,
) -> Result<Vec<Layer>, LayerError> {
    if budget == 0 {
        return Err(LayerError::ZeroBudget);
    }
    let deps = DependencyGraph::build(graph, popularity)?;
    dominate_and_merge(&deps, budget)
}

/// Steps 2 and 3 on a built graph: dominator layers, sorted by merge
/// rating, merged down to `budget` (at least 1).
pub(crate) fn dominate_and_merge(
    deps: &DependencyGraph<'_>,
    budget: usize,
) -> Result<Vec<Layer>, LayerError> {
    let mut layers = dominator_layers(deps)?;
    layers.sort_by(|a, b| {
        a.merge_rating
            .cmp(&b.merge_rating)
            .then_with(|| a.contents.first().cmp(&b.contents.first()))
    });
    Ok(merge_to_budget(layers, budget))
}

/// Step 2: one layer per child of the root in the dominator tree, holding
/// that child and every node it dominates.
fn dominator_layers(deps: &DependencyGraph<'_>) -> Result<Vec<Layer>, LayerError> {
    let dominators = simple_fast(&deps.graph, root());
    let n = deps.nodes.len();

    // head[i]: the root child that dominates node i (possibly i itself),
    // found by walking up the dominator tree and remembering each answer.
    const UNKNOWN: usize = usize::MAX;
    let mut head = vec![UNKNOWN; n];
    let mut chain = Vec::new();
    for start in 0..n {
        let mut current = start;
        let found = loop {
            if head[current] != UNKNOWN {
                break head[current];
            }
            let Some(idom) = dominators.immediate_dominator(node_index(current)) else {
                return Err(LayerError::Unreachable {
                    path: deps.nodes[current].path.to_owned(),
                });
            };
            if idom == root() {
                break current;
            }
            chain.push(current);
            current = idom.index() - 1;
        };
        head[current] = found;
        for i in chain.drain(..) {
            head[i] = found;
        }
    }

    // Nodes are sorted by path, so visiting them in index order fills each
    // layer's contents already sorted.
    let mut layer_of_head = vec![UNKNOWN; n];
    let mut layers: Vec<(usize, Vec<String>, u128)> = Vec::new();
    for (i, node) in deps.nodes.iter().enumerate() {
        let h = head[i];
        if layer_of_head[h] == UNKNOWN {
            layer_of_head[h] = layers.len();
            layers.push((h, Vec::new(), 0));
        }
        let (_, contents, size) = &mut layers[layer_of_head[h]];
        contents.push(node.path.to_owned());
        *size += u128::from(node.closure_size);
    }

    Ok(layers
        .into_iter()
        .map(|(h, contents, size)| Layer {
            contents,
            merge_rating: u128::from(deps.nodes[h].popularity).saturating_mul(size),
        })
        .collect())
}

/// Step 3's merging: while there are more layers than the budget, the first
/// two merge and the result goes first without re-sorting. Doing that
/// `len - budget` times merges the first `len - budget + 1` layers, in
/// order, into one; this builds that layer directly.
fn merge_to_budget(mut layers: Vec<Layer>, budget: usize) -> Vec<Layer> {
    if layers.len() <= budget {
        return layers;
    }
    tracing::info!(
        layers = layers.len(),
        budget,
        "ideal image exceeds layer budget"
    );
    let rest = layers.split_off(layers.len() - budget + 1);
    let merged = layers
        .into_iter()
        .reduce(|mut acc, next| {
            acc.contents.extend(next.contents);
            acc.merge_rating = acc.merge_rating.saturating_add(next.merge_rating);
            acc
        })
        .into_iter();
    merged.chain(rest).collect()
}

#[cfg(test)]
mod tests;
