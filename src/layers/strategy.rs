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
    /// The strategy used when none is configured and no popularity map is
    /// set (see the module documentation of [`crate::layers`] for why).
    pub const DEFAULT: Strategy = Strategy::SizeRank;

    /// The strategy a server uses: the configured one, else
    /// [`Strategy::Popularity`] when a popularity map is configured (the map
    /// has no other use, and upstream users keep upstream's layers), else
    /// [`Strategy::DEFAULT`].
    pub fn resolve(configured: Option<Strategy>, popularity_map_set: bool) -> Strategy {
        match configured {
            Some(strategy) => strategy,
            None if popularity_map_set => Strategy::Popularity,
            None => Strategy::DEFAULT,
        }
    }

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

    /// The revision of the strategy's implementation: bumped whenever the
    /// same input would give different layers, so that cached manifests
    /// built by an older revision are not reused (see [`Layering::fingerprint`]).
    fn revision(self) -> u64 {
        match self {
            // 2: top-level paths kept apart from a larger stable rest.
            Strategy::SizeRank => 2,
            _ => 1,
        }
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

/// Everything that decides how a server splits closures into layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layering {
    /// The strategy.
    pub strategy: Strategy,
    /// The popularity map (read only by [`Strategy::Popularity`]).
    pub popularity: Popularity,
    /// The largest number of layers grouping may produce.
    pub budget: usize,
}

impl Layering {
    /// Group `graph` with these settings; see [`group`].
    pub fn group(&self, graph: &RuntimeGraph) -> Result<Vec<Layer>, LayerError> {
        group(graph, self.strategy, &self.popularity, self.budget)
    }

    /// Hex SHA-256 of everything here that can change an image's layers:
    /// the strategy's name and revision, the budget and, for a strategy
    /// that reads it, the popularity map's [digest](Popularity::digest).
    /// Part of every image's identity ([`crate::identity`]), so a change of
    /// layering never serves a manifest cached under the old one.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let map = if self.strategy.uses_popularity() {
            self.popularity.digest()
        } else {
            String::new()
        };
        let mut hasher = Sha256::new();
        for field in [
            "nixery-layering-v1",
            self.strategy.name(),
            &self.strategy.revision().to_string(),
            &self.budget.to_string(),
            &map,
        ] {
            hasher.update((field.len() as u64).to_be_bytes());
            hasher.update(field.as_bytes());
        }
        hex::encode(hasher.finalize())
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

#[cfg(test)]
mod tests;
