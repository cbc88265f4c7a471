//! The default strategy: a cut by size rank. The largest paths get a layer
//! each; the rest share one or two layers, split by dependency direction.

use super::Layer;
use super::closure::Closure;

/// With `n` paths and a budget of `b`: if `n <= b`, one layer per path.
/// Otherwise the `b - 1` largest paths (ties by name) get a layer each and
/// the rest shares one layer, if that rest lies entirely below those
/// paths (base libraries they depend on) or entirely beside or above them
/// (small programs and wrappers); if it holds both kinds, only the `b - 2`
/// largest get a layer each, and the rest is split into the paths one of
/// them depends on and the others, unless the others mix top-level paths
/// with paths that are not and those non-top paths outweigh (by `narSize`)
/// the paths below: then the split is the top-level paths and everything
/// else, because the top-level paths change with every update of the image
/// and the larger stable part should not travel with them. A budget of 1
/// gives one layer; of 2, the largest path and the rest.
pub(crate) fn group(closure: &Closure<'_>, budget: usize) -> Vec<Layer> {
    let n = closure.len();
    if n <= budget {
        return (0..n).map(|i| Layer::of_paths(closure, vec![i])).collect();
    }
    if budget <= 1 {
        return vec![Layer::of_paths(closure, (0..n).collect())];
    }
    let order = closure.by_size_descending();
    let split = |solo_count: usize| {
        let (solo, rest) = order.split_at(solo_count);
        let below = closure.reachable(solo, |_| true);
        let (under, over): (Vec<usize>, Vec<usize>) = rest.iter().partition(|&&i| below[i]);
        (solo, under, over)
    };
    let (solo, under, over) = split(budget - 1);
    if under.is_empty() || over.is_empty() || budget == 2 {
        return layers(closure, solo, [[under, over].concat(), Vec::new()]);
    }
    let (solo, under, over) = split(budget - 2);
    let (tops, beside): (Vec<usize>, Vec<usize>) = over
        .iter()
        .partition(|&&i| closure.tops.binary_search(&i).is_ok());
    let size = |part: &[usize]| part.iter().map(|&i| closure.nar_size[i]).sum::<u64>();
    if !tops.is_empty() && !beside.is_empty() && size(&under) < size(&beside) {
        return layers(closure, solo, [[under, beside].concat(), tops]);
    }
    layers(closure, solo, [under, over])
}

/// One layer per path of `solo`, then one per non-empty part.
fn layers(closure: &Closure<'_>, solo: &[usize], parts: [Vec<usize>; 2]) -> Vec<Layer> {
    solo.iter()
        .map(|&i| Layer::of_paths(closure, vec![i]))
        .chain(
            parts
                .into_iter()
                .filter(|part| !part.is_empty())
                .map(|part| Layer::of_paths(closure, part)),
        )
        .collect()
}
