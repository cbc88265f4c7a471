//! The layering strategies and the one entry point that runs any of them.

use std::fmt;
use std::str::FromStr;

use super::closure::Closure;
use super::{Layer, LayerError, Popularity, RuntimeGraph};

/// How a closure is split into layers. See the module documentation of
/// [`crate::layers`] for what each does and why the default is the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Upstream Nixery's algorithm, byte for byte: dominator tree over the
    /// popularity map, snowball merging (`popularity`).
    Popularity,
    /// Upstream's algorithm with popularity from this image's graph: each
    /// path's referrer count (`in-degree`).
    InDegree,
    /// nixpkgs' size-cohort algorithm with a name tiebreak (`size-cohort`).
    SizeCohort,
    /// The largest paths alone, the rest in two layers split by dependency
    /// direction (`size-rank`).
    SizeRank,
}

impl Strategy {
    /// Every strategy, in the order the benchmark prints them.
    pub const ALL: [Strategy; 4] = [
        Strategy::Popularity,
        Strategy::InDegree,
        Strategy::SizeCohort,
        Strategy::SizeRank,
    ];

    /// The strategy's name, as `NIXERY_LAYERING` and `nixery layers
    /// --strategy` take it.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Popularity => "popularity",
            Strategy::InDegree => "in-degree",
            Strategy::SizeCohort => "size-cohort",
            Strategy::SizeRank => "size-rank",
        }
    }

    /// Whether the strategy reads the popularity map.
    pub fn uses_popularity(self) -> bool {
        self == Strategy::Popularity
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A layering strategy name that is not one of [`Strategy::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown layering strategy {given:?} (expected one of: {})", names())]
pub struct UnknownStrategy {
    /// The name given.
    pub given: String,
}

fn names() -> String {
    Strategy::ALL.map(Strategy::name).join(", ")
}

impl FromStr for Strategy {
    type Err = UnknownStrategy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Strategy::ALL
            .into_iter()
            .find(|strategy| strategy.name() == s)
            .ok_or_else(|| UnknownStrategy {
                given: s.to_owned(),
            })
    }
}

/// Group `graph` into at most `budget` layers with `strategy`. Only
/// [`Strategy::Popularity`] reads `popularity`; the size-based strategies
/// need every path's `narSize`. The result depends only on the graph's
/// content, never on the order of its entries or references.
pub fn group(
    graph: &RuntimeGraph,
    strategy: Strategy,
    popularity: &Popularity,
    budget: usize,
) -> Result<Vec<Layer>, LayerError> {
    if budget == 0 {
        return Err(LayerError::ZeroBudget);
    }
    match strategy {
        Strategy::Popularity => super::group_layers(graph, popularity, budget),
        Strategy::InDegree => super::in_degree::group(graph, budget),
        Strategy::SizeCohort => Ok(super::size_cohort::group(&Closure::build(graph)?, budget)),
        Strategy::SizeRank => Ok(super::size_rank::group(&Closure::build(graph)?, budget)),
    }
}
