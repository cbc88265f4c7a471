//! Splitting an image's runtime closure into layers.
//!
//! A registry stores each distinct layer once, and a client skips every
//! layer it already holds: containerd, podman and skopeo by blob digest,
//! Docker's classic image store only while the layers so far match (it
//! keeps layers by chain, so it downloads everything after the first layer
//! that differs). Grouping store paths well therefore decides how much two
//! images built from overlapping packages share, and how much a client
//! downloads again after one package is updated.
//!
//! Every strategy here is stateless and deterministic: the layers of a
//! closure depend on that closure (and the settings) alone, never on the
//! order of the input, on hash-map order or on what was built before, so
//! every instance and every release with the same [`Layering`] gives the
//! same layers and the same layer cache keys.
//!
//! # Strategies
//!
//! - **`size-rank`** ([`Strategy::SizeRank`], the default when no popularity
//!   map is configured). When the closure fits the budget, one layer per
//!   store path: the floor, since a path shared by two images or kept by an
//!   update is then never downloaded twice. When it does not, the largest
//!   paths by `narSize` (ties by package name, then path) get a layer each
//!   and the rest, which holds few bytes, shares the remaining one or two
//!   layers; see *Size-rank* below.
//! - **`popularity`** ([`Strategy::Popularity`], upstream Nixery's algorithm
//!   byte for byte, and the default when `NIX_POPULARITY_URL` is set: the
//!   map is read by nothing else, and upstream users keep upstream's layers
//!   and keys). Described step by step below.
//! - **`in-degree`** ([`Strategy::InDegree`]): upstream's algorithm with each
//!   path's popularity derived from this image's own graph (100 times one
//!   plus its number of referrers, so every path starts alone).
//! - **`size-cohort`** ([`Strategy::SizeCohort`]): nixpkgs' `dockerTools`
//!   algorithm since nixpkgs PR #355189: primaries picked largest first,
//!   every other path grouped by the set of primaries above it, primaries
//!   added while the layer count fits; here with a name tiebreak, since the
//!   original sorts by size alone and real closures have many ties.
//!
//! The last two are kept so that the benchmark (`benches/layering.rs`,
//! `scripts/bench-layering.sh`) compares them on the same data and so that
//! `nixery layers --strategy` shows any of them.
//!
//! # Why size-rank is the default
//!
//! Measured with `scripts/bench-layering.sh` (narSize as layer size): the
//! share of bytes a client downloads when it pulls every image of a group
//! of related images, and the bytes an update makes it download over the
//! bytes of the store paths the update changed (1.00 is the floor).
//!
//! | data set, budget                 | popularity (no map) | in-degree | size-cohort | size-rank | floor |
//! |----------------------------------|---------------------|-----------|-------------|-----------|-------|
//! | offline set, 94: related         | 82.2%               | 17.8%     | 17.8%       | 17.8%     | 17.8% |
//! | offline set, 94: git update      | 6.04x               | 1.00x     | 1.00x       | 1.00x     | 1.00x |
//! | `../shared/closures`, 94: related| 90.0%               | 75.8%     | 75.9%       | 75.8%     | 75.8% |
//! | `../shared/closures`, 94: updates| 1.38x               | 1.00x     | 1.00x       | 1.00x     | 1.00x |
//! | `../shared/closures`, 12: related| 91.2%               | 84.2%     | 84.7%       | 78.9%     | 75.8% |
//! | `../shared/closures`, 12: updates| 1.38x               | 1.12x     | 1.14x       | 1.02x     | 1.00x |
//!
//! While the budget does not bind, the three newer strategies reach the
//! floor; when it binds, size-rank stays closest to it, because a merged
//! layer is downloaded again whenever any of its paths differs, and
//! merging only the smallest paths bounds that cost by their (small)
//! size. With a popularity map, upstream's algorithm does better than
//! without one (86.8% and 1.21x on the closures at 94) but still worse than
//! size-rank without. `docs/internals.md` has the full tables.
//!
//! # Inputs
//!
//! - the runtime graph that `prepare-image` writes ([`RuntimeGraph`]): the
//!   top-level store paths of the requested packages and, for every path in
//!   their closure, its `closureSize`, `narSize` and `references`;
//! - the [`Layering`]: the strategy; a popularity map ([`Popularity`]): how
//!   often each package is referenced across the package set, keyed by the
//!   store path without its `/nix/store/<hash>-` prefix, which only
//!   `popularity` reads; and a layer budget (the server uses
//!   [`DEFAULT_BUDGET`], 94, which leaves room under Docker's 125-layer limit
//!   for the symlink layer and later additions).
//!
//! Changing any of these changes layers, so [`Layering::fingerprint`] is
//! part of every image's identity ([`crate::identity`]): after a change of
//! strategy, budget or map, no manifest cached under the old settings is
//! served.
//!
//! # Size-rank
//!
//! With `n` paths and a budget of `b`:
//!
//! 1. If `n <= b`, every path is a layer of its own.
//! 2. Otherwise rank the paths by `narSize`, largest first, equal sizes by
//!    package name and then by store path (never by hash alone, so a
//!    rebuild that changes only hashes ranks the same).
//! 3. The `b - 1` largest get a layer each. The rest is either all *below*
//!    them (paths one of them depends on, directly or not: base libraries)
//!    or all *beside* them (top-level wrappers, small programs and what only
//!    they use); then it is one layer. If it holds both kinds, only the
//!    `b - 2` largest get a layer each and the rest becomes two layers, the
//!    paths below and the paths beside, so that an update of a small
//!    program does not change the layer of the base libraries. But when
//!    the paths beside are top-level paths and others, and those others
//!    outweigh the paths below, the two layers are instead the top-level
//!    paths and everything else: a top-level path changes with every
//!    update of the image, so the larger stable part should not travel
//!    with it.
//! 4. A layer's contents are sorted by path; its key is, as upstream's, the
//!    SHA-1 of its contents joined with `:` ([`Layer::key`]).
//! 5. Its merge rating only orders the manifest (highest first): `u64::MAX`
//!    minus the largest closure size among its paths. A path's closure is
//!    strictly larger than any of its dependencies', so dependencies come
//!    before the paths that use them and images share the longest prefix a
//!    chain-keyed client can reuse.
//!
//! In the example below (git, htop, nss-cacert) with own sizes perl 75 MB,
//! glibc 30 MB, git 10 MB, openssl 6 MB, ncurses 3 MB, curl 1 MB, htop and
//! nss-cacert 0.5 MB: with a budget of 8 or more, eight layers of one path.
//! With 5, the four largest alone would leave ncurses, curl, htop and
//! nss-cacert, of which curl is below git and the others beside: two kinds.
//! So perl, glibc and git stay alone, and the rest splits into `curl,
//! openssl` (below git) and `htop, ncurses, nss-cacert` (beside): five
//! layers. An image of `htop` alone (htop, ncurses, glibc, nss-cacert)
//! fits any budget of 4 or more and so has four layers of one path; it
//! shares glibc's layer with the image above, but not nss-cacert's, which
//! is in that image's shared rest: the cost of a budget that binds.
//!
//! # Upstream's algorithm (`popularity`)
//!
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
