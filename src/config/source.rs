//! Settings of the package source and of resolving it to a revision.

use std::{path::PathBuf, time::Duration};

use super::{ConfigError, ServeSettings, parse};
use crate::source::PackageSource;

/// Default `NIXERY_SOURCE_TTL`, in seconds.
pub const DEFAULT_SOURCE_TTL_SECS: u64 = 60;

crate::settings! {
    /// Nix channel to build from (e.g. nixos-unstable).
    CHANNEL: Option<String> = {
        env: "NIXERY_CHANNEL", flag: "channel", value_name: "CHANNEL",
        default: None, parse: parse::string,
    };
    /// Git repository holding a package set to build from.
    PKGS_REPO: Option<String> = {
        env: "NIXERY_PKGS_REPO", flag: "pkgs-repo", value_name: "URL",
        default: None, parse: parse::string,
    };
    /// Local path of a package set to build from.
    PKGS_PATH: Option<PathBuf> = {
        env: "NIXERY_PKGS_PATH", flag: "pkgs-path", value_name: "PATH",
        default: None, parse: parse::path,
    };
    /// Seconds a git ref or channel stays resolved to its commit [default: 60].
    SOURCE_TTL: Duration = {
        env: "NIXERY_SOURCE_TTL", flag: "source-ttl", value_name: "SECONDS",
        default: Duration::from_secs(DEFAULT_SOURCE_TTL_SECS), parse: parse::ttl_seconds,
    };
    /// Git remote channel names are resolved against
    /// [default: https://github.com/NixOS/nixpkgs].
    CHANNEL_REMOTE: String = {
        env: "NIXERY_CHANNEL_REMOTE", flag: "channel-remote", value_name: "URL",
        default: crate::resolve::DEFAULT_CHANNEL_REMOTE.to_owned(), parse: parse::trimmed_string,
    };
}

/// The package source: at most one of `NIXERY_CHANNEL`, `NIXERY_PKGS_REPO`
/// and `NIXERY_PKGS_PATH`, else the builtin package set.
pub fn package_source(settings: &ServeSettings) -> Result<PackageSource, ConfigError> {
    let channel = settings.get(&CHANNEL)?;
    let repo = settings.get(&PKGS_REPO)?;
    let path = settings.get(&PKGS_PATH)?;
    let set: Vec<&'static str> = [
        channel.as_ref().map(|_| CHANNEL.info.env),
        repo.as_ref().map(|_| PKGS_REPO.info.env),
        path.as_ref().map(|_| PKGS_PATH.info.env),
    ]
    .into_iter()
    .flatten()
    .collect();
    if set.len() > 1 {
        return Err(ConfigError::ConflictingSources(set));
    }
    Ok(match (channel, repo, path) {
        (Some(c), _, _) => PackageSource::Channel(c),
        (_, Some(r), _) => PackageSource::Git(r),
        (_, _, Some(p)) => PackageSource::Path(p),
        _ => PackageSource::Builtin,
    })
}
