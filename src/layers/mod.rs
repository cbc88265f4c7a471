//! Splitting an image's runtime closure into layers.
//!
//! Docker re-downloads everything after the first layer that differs between
//! two images, and a registry stores each distinct layer once. Grouping store
//! paths well therefore decides how much two images built from overlapping
//! packages share. This module reproduces upstream Nixery's grouping exactly:
//! the same runtime graph, popularity map and budget always give the same
//! layers, so the layer cache keys stay stable across releases and across the
//! Go and Rust implementations.
//!
//! # Inputs
//!
//! - the runtime graph that `prepare-image` writes ([`RuntimeGraph`]): the
//!   top-level store paths of the requested packages and, for every path in
//!   their closure, its `closureSize` and `references`;
//! - a popularity map ([`Popularity`]): how often each package is referenced
//!   across the package set, keyed by the store path without its
//!   `/nix/store/<hash>-` prefix;
//! - a layer budget (the server uses [`DEFAULT_BUDGET`], 94, which leaves room
//!   under Docker's 125-layer limit for the symlink layer and later
//!   additions).
//!
//! # Algorithm
//!
//! 1. Build a directed graph with a synthetic root. The root points at every
//!    top-level path; each path points at each of its references (Nix lists
//!    a path among its own references; those self references are ignored).
//!    The root also points at every path that is *big* (closure size over
//!    [`BIG_CLOSURE_SIZE`]) or *popular* (popularity at least
//!    [`POPULAR_COUNT`]). Paths named `nss-cacert*` or `iana-etc*` are in
//!    every image Nixery builds, so they get popularity
//!    [`SPECIAL_POPULARITY`] whatever the map says; a path missing from the
//!    map has popularity 1.
//! 2. Compute the dominator tree from the root: a path *dominates* another
//!    when every route from the root to the latter passes through it. Each
//!    child of the root in that tree, together with everything it dominates
//!    transitively, becomes one layer, its contents sorted. A path reachable
//!    only through one package belongs with that package; a path shared by
//!    two top-level packages is dominated by the root alone and so gets a
//!    layer of its own that both images can reuse. The extra root edges of
//!    step 1 lift big and popular paths into their own layers even when a
//!    single package uses them. The layer's *merge rating* is the popularity
//!    of its head (the root's child) times the sum of the `closureSize` of
//!    all its members. Ratings are 128-bit: real closures reach terabyte
//!    scale, and popularity counts reach hundreds of thousands.
//! 3. Sort the layers by merge rating, ascending; equal ratings are ordered
//!    by the layer's first store path so that the result never depends on
//!    input order or hash-map iteration order. While there are more layers
//!    than the budget, merge the first two (contents appended, ratings
//!    added) and put the result first *without* re-sorting. That is an
//!    upstream quirk, kept on purpose: the least valuable layers snowball
//!    into one, and merged layers keep the cache keys upstream gives them.
//! 4. A layer's cache key ([`Layer::key`]) is the hex SHA-1 of its contents
//!    joined with `:`.
//!
//! # Worked example
//!
//! Take an image of `git` and `htop`; Nixery adds `nss-cacert`. Store paths
//! are shown by name (their real order is by hash), sizes are closure sizes:
//!
//! ```text
//!   root ──> git (120 MB) ──> curl (40 MB) ──> openssl (35 MB, pop. 60)
//!    │        │  │              │                 │
//!    │        │  └──> perl (150 MB)               │
//!    │        │         │       │                 │
//!    │        v         v       v                 v
//!    │       glibc (30 MB, popularity 300) <──────┘
//!    │        ^   ^
//!    ├──> htop (36 MB) ──> ncurses (33 MB)
//!    │
//!    └──> nss-cacert (0.5 MB)
//! ```
//!
//! glibc is popular, so the root gets an edge to it; it would have been
//! shared anyway. perl is big, so it gets a root edge too, although only git
//! uses it (git is big as well, but it is top-level already). openssl, at
//! popularity 60, stays below the threshold. The dominator tree is:
//!
//! ```text
//!   root ─┬─> git ──> curl ──> openssl
//!         ├─> perl
//!         ├─> glibc
//!         ├─> htop ──> ncurses
//!         └─> nss-cacert
//! ```
//!
//! which gives five layers, sorted by merge rating:
//!
//! | layer                     | rating                    |
//! |---------------------------|---------------------------|
//! | `htop, ncurses`           | 1 × 69 MB = 69 000 000    |
//! | `perl`                    | 1 × 150 MB = 150 000 000  |
//! | `curl, git, openssl`      | 1 × 195 MB = 195 000 000  |
//! | `glibc`                   | 300 × 30 MB = 9 × 10^9    |
//! | `nss-cacert`              | 500 000 × 0.5 MB = 2.5 × 10^11 |
//!
//! With a budget of 5 or more, that is the answer. With a budget of 4, the
//! first two merge into `htop, ncurses, perl` (219 000 000), which stays
//! first although the git layer now rates lower: the snowball quirk. With a
//! budget of 3 the git layer joins the snowball (`htop, ncurses, perl, curl,
//! git, openssl`, 414 000 000); with 2, glibc too; with 1, everything is one
//! layer. The unit tests below check exactly these numbers.

pub mod cli;
mod closure;
mod graph;
mod group;
mod in_degree;
mod size_cohort;
mod size_rank;
mod strategy;

pub use crate::popularity::Popularity;
pub use graph::{ExportReferences, PathInfo, RuntimeGraph};
pub use group::{Layer, group_layers};
pub use strategy::{Layering, Strategy, UnknownStrategy, group};

/// The server's layer budget (upstream's value): Docker's limit is 125
/// layers, and this leaves room for the symlink layer and later additions.
pub const DEFAULT_BUDGET: usize = 94;

/// A closure strictly larger than this many bytes gets its own layer.
pub const BIG_CLOSURE_SIZE: u64 = 100_000_000;

/// A package referenced at least this often gets its own layer.
pub const POPULAR_COUNT: u64 = 100;

/// Popularity given to `nss-cacert*` and `iana-etc*`, which are in every
/// image (more than glibc's few hundred thousand references).
pub const SPECIAL_POPULARITY: u64 = 500_000;

/// Why a runtime graph cannot be grouped into layers. Each variant names the
/// offending store path so that the operator can find it in the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayerError {
    /// A path lists a reference that has no entry in the graph.
    #[error("store path {path} references {reference}, which is not in the graph")]
    UnknownReference {
        /// The path whose `references` mention the unknown path.
        path: String,
        /// The unknown reference.
        reference: String,
    },
    /// A top-level path has no entry in the graph.
    #[error("top-level store path {path} is not in the graph")]
    UnknownTopLevel {
        /// The missing top-level path.
        path: String,
    },
    /// Two graph entries describe the same path.
    #[error("store path {path} appears more than once in the graph")]
    DuplicatePath {
        /// The repeated path.
        path: String,
    },
    /// A path cannot be reached from any top-level path, so no layer would
    /// hold it (a closure never contains such a path).
    #[error("store path {path} is not reachable from any top-level path")]
    Unreachable {
        /// The smallest unreachable path.
        path: String,
    },
    /// A size-based strategy needs every path's own size, and this path's
    /// entry has no `narSize`.
    #[error("store path {path} has no narSize, which this layering strategy needs")]
    MissingNarSize {
        /// The path without a size.
        path: String,
    },
    /// A budget of zero layers cannot hold anything.
    #[error("the layer budget must be at least 1")]
    ZeroBudget,
}

/// The package name of a store path: the path without its
/// `/nix/store/<hash>-` prefix, or the whole path when it has no such prefix.
/// Popularity maps are keyed by this name.
pub fn package_name(path: &str) -> &str {
    let Some(rest) = path.strip_prefix("/nix/store/") else {
        return path;
    };
    match rest.split_once('-') {
        Some((hash, name))
            if !hash.is_empty()
                && hash
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) =>
        {
            name
        }
        _ => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_name_strips_store_prefix_and_hash() {
        assert_eq!(
            package_name("/nix/store/0c0q3fsc5zn2g8gj4yvmggh6v2q7c7s2-glibc-2.40-36"),
            "glibc-2.40-36"
        );
    }

    #[test]
    fn package_name_keeps_paths_without_a_store_hash() {
        assert_eq!(package_name("/opt/thing"), "/opt/thing");
        assert_eq!(package_name("/nix/store/-x"), "/nix/store/-x");
        assert_eq!(package_name("/nix/store/ABC-x"), "/nix/store/ABC-x");
        assert_eq!(package_name("/nix/store/nohash"), "/nix/store/nohash");
    }
}
