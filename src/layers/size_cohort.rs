//! nixpkgs' size-cohort layering (the algorithm of `dockerTools` since
//! nixpkgs PR #355189), re-implemented from its description with a name
//! tiebreak so that equal sizes cannot reorder it.

use super::Layer;
use super::closure::Closure;

/// Pick *primaries* one at a time, largest `narSize` first. A non-primary
/// path's *cohort* is the set of primaries it is reachable from without
/// passing through another primary. A primary's layer holds it and every
/// path whose cohort is just that primary; each distinct cohort of two or
/// more primaries is a layer; paths below no primary (the closure's roots
/// and what only they use) share one layer. A primary is added only while
/// the layer count stays within `budget`.
pub(crate) fn group(closure: &Closure<'_>, budget: usize) -> Vec<Layer> {
    let order = closure.by_size_descending();
    let mut primaries: Vec<usize> = Vec::new();
    let mut best = vec![(0..closure.len()).collect::<Vec<_>>()];
    for &candidate in &order {
        primaries.push(candidate);
        let groups = cohorts(closure, &primaries);
        if groups.len() > budget {
            primaries.pop();
            break;
        }
        best = groups;
    }
    best.into_iter()
        .map(|members| Layer::of_paths(closure, members))
        .collect()
}

/// The layers for a given list of primaries, as lists of path indices.
fn cohorts(closure: &Closure<'_>, primaries: &[usize]) -> Vec<Vec<usize>> {
    let n = closure.len();
    let mut is_primary = vec![false; n];
    for &p in primaries {
        is_primary[p] = true;
    }
    // cohort[i]: the primaries (by position in `primaries`) above path i.
    let mut cohort: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (k, &p) in primaries.iter().enumerate() {
        let below = closure.reachable(&[p], |i| !is_primary[i]);
        for (i, reached) in below.into_iter().enumerate() {
            if reached && !is_primary[i] {
                cohort[i].push(k);
            }
        }
    }
    let mut layers: Vec<Vec<usize>> = primaries.iter().map(|&p| vec![p]).collect();
    let mut shared: std::collections::BTreeMap<Vec<usize>, Vec<usize>> = Default::default();
    let mut rest = Vec::new();
    for i in 0..n {
        if is_primary[i] {
            continue;
        }
        match cohort[i].as_slice() {
            [] => rest.push(i),
            [k] => layers[*k].push(i),
            _ => shared
                .entry(std::mem::take(&mut cohort[i]))
                .or_default()
                .push(i),
        }
    }
    layers.extend(shared.into_values());
    if !rest.is_empty() {
        layers.push(rest);
    }
    layers
}
