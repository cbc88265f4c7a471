//! Settings of the manifest caches.

use std::path::PathBuf;

use super::parse;

/// Default `NIXERY_MANIFEST_CACHE_ENTRIES`.
pub const DEFAULT_MANIFEST_CACHE_ENTRIES: usize = 4096;

crate::settings! {
    /// Directory of the local manifest tier [default: $XDG_CACHE_HOME/nixery].
    CACHE_DIR: Option<PathBuf> = {
        env: "NIXERY_CACHE_DIR", flag: "cache-dir", value_name: "DIR",
        default: None, parse: parse::path,
    };
    /// Manifests kept in memory [default: 4096].
    MANIFEST_CACHE_ENTRIES: usize = {
        env: "NIXERY_MANIFEST_CACHE_ENTRIES", flag: "manifest-cache-entries", value_name: "N",
        default: DEFAULT_MANIFEST_CACHE_ENTRIES, parse: parse::positive,
    };
}

/// The local manifest tier's default parent directory:
/// `$XDG_CACHE_HOME/nixery`, else `$HOME/.cache/nixery`, else
/// `/var/cache/nixery`.
pub fn default_cache_dir() -> PathBuf {
    let from_env = |var: &str| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    from_env("XDG_CACHE_HOME")
        .or_else(|| from_env("HOME").map(|home| home.join(".cache")))
        .map_or_else(
            || PathBuf::from("/var/cache/nixery"),
            |dir| dir.join("nixery"),
        )
}
