//! Settings of the Nix step.

use std::{path::PathBuf, time::Duration};

use super::{Parsed, parse};
use crate::layers::Strategy;

/// Default `NIX_TIMEOUT` (one build), in seconds, as upstream.
pub const DEFAULT_NIX_TIMEOUT_SECS: u64 = 60;
/// Default `NIXERY_NIX_DEADLINE` (one image's whole Nix step), in seconds:
/// enough for a cold channel (tarball download and evaluation) and
/// substituting a large closure.
pub const DEFAULT_NIX_DEADLINE_SECS: u64 = 1800;

crate::settings! {
    /// Seconds one Nix build (derivation) may run, given to Nix as
    /// --timeout [default: 60].
    NIX_TIMEOUT: Duration = {
        env: "NIX_TIMEOUT", flag: "nix-timeout", value_name: "SECONDS",
        default: Duration::from_secs(DEFAULT_NIX_TIMEOUT_SECS), parse: parse::seconds,
    };
    /// Seconds one image's whole Nix step (evaluation, downloads, builds)
    /// may take [default: 1800].
    NIX_DEADLINE: Duration = {
        env: "NIXERY_NIX_DEADLINE", flag: "nix-deadline", value_name: "SECONDS",
        default: Duration::from_secs(DEFAULT_NIX_DEADLINE_SECS), parse: parse::seconds,
    };
    /// Serve packages with unfree licences (true/false) [default: false].
    ALLOW_UNFREE: bool = {
        env: "NIXERY_ALLOW_UNFREE", flag: "allow-unfree", value_name: "BOOL",
        default: false, parse: parse::boolean,
    };
    /// URL of the popularity data used to group layers.
    POPULARITY_URL: Option<String> = {
        env: "NIX_POPULARITY_URL", flag: "popularity-url", value_name: "URL",
        default: None, parse: parse::string,
    };
    /// Layering strategy: size-rank, popularity, in-degree or size-cohort
    /// [default: popularity with a popularity map, else size-rank].
    LAYERING: Option<Strategy> = {
        env: "NIXERY_LAYERING", flag: "layering", value_name: "STRATEGY",
        default: None, parse: layering,
    };
    /// Program that runs the prepare-image Nix expression.
    PREPARE_IMAGE: Option<PathBuf> = {
        env: "NIXERY_PREPARE_IMAGE", flag: "prepare-image", value_name: "PATH",
        default: None, parse: parse::path,
    };
}

/// A layering strategy by name ([`Strategy::ALL`]).
fn layering(raw: &std::ffi::OsStr) -> Parsed<Option<Strategy>> {
    parse::trimmed(
        raw,
        "expected size-rank, popularity, in-degree or size-cohort",
        |v| v.parse().ok().map(Some),
    )
}
