//! The closure as the size-based strategies see it: store paths sorted by
//! path, each with its own size and its references as indices.

use std::collections::HashMap;

use super::{Layer, LayerError, RuntimeGraph};

/// A validated closure. Path `i` is `paths[i]`; paths are sorted, so every
/// index (and everything derived from indices) is independent of the order
/// of the input.
pub(crate) struct Closure<'a> {
    /// The store paths, sorted.
    pub paths: Vec<&'a str>,
    /// Each path's own size (`narSize`).
    pub nar_size: Vec<u64>,
    /// Each path's closure size (`closureSize`).
    pub closure_size: Vec<u64>,
    /// Each path's references, without itself, sorted and de-duplicated.
    pub refs: Vec<Vec<usize>>,
    /// The top-level paths, sorted and de-duplicated.
    pub tops: Vec<usize>,
}

impl<'a> Closure<'a> {
    /// Index `input`, rejecting what [`super::group_layers`] rejects and,
    /// in addition, a path without `narSize`.
    pub fn build(input: &'a RuntimeGraph) -> Result<Self, LayerError> {
        let entries = input.sorted_entries()?;
        let index: HashMap<&str, usize> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.path.as_str(), i))
            .collect();

        let mut nar_size = Vec::with_capacity(entries.len());
        let mut refs = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            nar_size.push(entry.nar_size.ok_or_else(|| LayerError::MissingNarSize {
                path: entry.path.clone(),
            })?);
            let mut out = Vec::with_capacity(entry.references.len());
            for reference in &entry.references {
                let j =
                    *index
                        .get(reference.as_str())
                        .ok_or_else(|| LayerError::UnknownReference {
                            path: entry.path.clone(),
                            reference: reference.clone(),
                        })?;
                if j != i {
                    out.push(j);
                }
            }
            out.sort_unstable();
            out.dedup();
            refs.push(out);
        }
        let mut tops = Vec::with_capacity(input.export_references_graph.graph.len());
        for top in &input.export_references_graph.graph {
            tops.push(
                *index
                    .get(top.as_str())
                    .ok_or_else(|| LayerError::UnknownTopLevel { path: top.clone() })?,
            );
        }
        tops.sort_unstable();
        tops.dedup();

        let closure = Closure {
            paths: entries.iter().map(|e| e.path.as_str()).collect(),
            nar_size,
            closure_size: entries.iter().map(|e| e.closure_size).collect(),
            refs,
            tops,
        };
        let reached = closure.reachable(&closure.tops, |_| true);
        if let Some(i) = reached.iter().position(|r| !r) {
            return Err(LayerError::Unreachable {
                path: closure.paths[i].to_owned(),
            });
        }
        Ok(closure)
    }

    /// How many paths the closure holds.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Which paths are reachable from `starts` (included), following
    /// references out of a path only when `enter(path)` allows it (the
    /// starts themselves are always left).
    pub fn reachable(&self, starts: &[usize], enter: impl Fn(usize) -> bool) -> Vec<bool> {
        let mut seen = vec![false; self.len()];
        let mut stack: Vec<usize> = Vec::new();
        for &s in starts {
            if !seen[s] {
                seen[s] = true;
                stack.push(s);
            }
            while let Some(i) = stack.pop() {
                if i != s && !enter(i) {
                    continue;
                }
                for &j in &self.refs[i] {
                    if !seen[j] {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        seen
    }

    /// Path indices ordered largest first; equal sizes by package name,
    /// then by whole path, so that ties never depend on hashes alone.
    pub fn by_size_descending(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.sort_by(|&a, &b| {
            self.nar_size[b]
                .cmp(&self.nar_size[a])
                .then_with(|| {
                    super::package_name(self.paths[a]).cmp(super::package_name(self.paths[b]))
                })
                .then_with(|| self.paths[a].cmp(self.paths[b]))
        });
        order
    }
}

impl Layer {
    /// The layer holding `members` (indices into `closure`), its contents
    /// sorted by path. Its merge rating only orders the manifest: it is
    /// `u64::MAX` minus the largest closure size among the members. A
    /// path's closure is strictly larger than any of its dependencies', so
    /// a path alone comes before every path that uses it, and a merged
    /// layer with its top-most member (measured with the benchmark's
    /// chain-keyed client, this beat ordering by the smallest member).
    pub(crate) fn of_paths(closure: &Closure<'_>, mut members: Vec<usize>) -> Layer {
        members.sort_unstable();
        let largest = members
            .iter()
            .map(|&i| closure.closure_size[i])
            .max()
            .unwrap_or(0);
        Layer {
            merge_rating: u128::from(u64::MAX - largest),
            contents: members
                .iter()
                .map(|&i| closure.paths[i].to_owned())
                .collect(),
        }
    }
}
