//! The machinery every settings table is made of: what one setting
//! declares ([`Setting`], the [`settings!`](crate::settings) macro), the
//! raw values of `nixery serve` ([`ServeSettings`]), the value parsers
//! ([`parse`]) and the error naming the variable to fix
//! ([`ConfigError`]).
//!
//! It is a leaf: it knows no setting. The settings themselves are
//! declared in the modules of their concern (`config/*.rs`, each storage
//! backend's `settings`, `auth::settings`), and [`crate::config`] lists
//! them all. So a module declaring settings depends on this one, never on
//! `config`, and `config` depends on it without a circle.

pub mod parse;
mod table;

pub use self::table::{Parsed, ServeSettings, Setting, SettingInfo};

/// A missing, malformed or contradictory setting. Each message names the
/// environment variable to fix.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A value does not parse.
    #[error("{var}={value:?} is invalid: {expected}")]
    Invalid {
        var: &'static str,
        value: String,
        expected: &'static str,
    },
    /// More than one package source is set.
    #[error("only one of NIXERY_CHANNEL, NIXERY_PKGS_REPO, NIXERY_PKGS_PATH may be set, got {}", .0.join(" and "))]
    ConflictingSources(Vec<&'static str>),
    /// A setting required by another one is missing.
    #[error("{var} must be set when {because}")]
    Missing {
        var: &'static str,
        because: &'static str,
    },
}
