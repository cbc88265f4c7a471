//! A cut by size rank: the largest paths get a layer each, the rest share
//! two layers split by dependency direction.

use super::Layer;
use super::closure::Closure;

/// With `n` paths and a budget of `b`: if `n <= b`, one layer per path.
/// Otherwise the `b - 2` largest paths (ties by name) get a layer each, the
/// remaining paths that one of those depends on share one layer (they are
/// the base libraries) and the remaining others share another (the small
/// programs and wrappers near the top). A budget of 1 or 2 gives one layer
/// and, with 2, the largest path alone.
pub(crate) fn group(closure: &Closure<'_>, budget: usize) -> Vec<Layer> {
    let n = closure.len();
    if n <= budget {
        return (0..n).map(|i| Layer::of_paths(closure, vec![i])).collect();
    }
    if budget <= 1 {
        return vec![Layer::of_paths(closure, (0..n).collect())];
    }
    let order = closure.by_size_descending();
    let (solo, rest) = order.split_at(budget.saturating_sub(2).max(1));
    let below = closure.reachable(solo, |_| true);
    let (mut under, mut over): (Vec<usize>, Vec<usize>) = rest.iter().partition(|&&i| below[i]);
    if budget == 2 {
        under.append(&mut over);
    }
    let mut layers: Vec<Layer> = solo
        .iter()
        .map(|&i| Layer::of_paths(closure, vec![i]))
        .collect();
    for members in [under, over] {
        if !members.is_empty() {
            layers.push(Layer::of_paths(closure, members));
        }
    }
    layers
}
