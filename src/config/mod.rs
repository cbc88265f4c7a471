//! Settings of `nixery serve`: one table, from which come the command line
//! (flags and upstream environment variables), the check that
//! `docs/operating.md` lists every setting (`tests/docs_settings.rs`) and the
//! variables the tests' environment clears ([`env_vars`]).
//!
//! Each setting is declared once, with [`settings!`](crate::settings), in
//! the module of its concern: [`server`] (socket and connections),
//! [`source`] (package source), [`nix`] (the Nix step), [`build`]
//! (concurrency), [`cache`] (manifest caches), [`gc`] (garbage
//! collection), [`crate::storage::settings`] (the backend
//! choice), [`crate::auth::settings`] (pull authentication) and each
//! backend's own `settings` module
//! ([`crate::storage::filesystem::settings`],
//! [`crate::storage::gcs::settings`], [`crate::storage::s3::settings`]). A declaration names the variable, the
//! flag, the `--help` placeholder, the default and the parser (see
//! [`parse`]); its doc comment is the `--help` line. The machinery they
//! are declared with is the leaf [`crate::settings_table`], so modules
//! declaring settings never depend on this one.
//!
//! # Adding a setting
//!
//! 1. Add an entry to the `settings!` block of its concern (or start a new
//!    module with one and list its `SETTINGS` in [`GROUPS`]).
//! 2. Read it where [`ServeSettings::into_config`] builds the [`Config`]:
//!    `settings.get(&module::NAME)?` gives the parsed value or its default.
//! 3. Add its row to the settings table of `docs/operating.md` (the test
//!    fails until it is there).
//!
//! Clap only collects raw values, so that a bad value in the environment
//! never stops the other subcommands (`nixery layers`) from parsing.
//! [`ServeSettings::into_config`] then checks everything and answers a
//! [`ConfigError`] whose message names the offending variable; an empty
//! value counts as unset.

pub mod build;
pub mod cache;
pub mod gc;
pub mod nix;
pub mod server;
pub mod source;

use std::{ffi::OsString, net::SocketAddr, path::PathBuf, time::Duration};

use crate::{connection::ConnectionLimits, source::PackageSource};

pub use self::{cache::default_cache_dir, gc::GcSettings};
pub use crate::settings_table::{ConfigError, Parsed, ServeSettings, Setting, SettingInfo, parse};
pub use crate::storage::settings::StorageSetting;

/// Exit code for a configuration error (as for a command-line usage
/// error), of `nixery serve` and `nixery gc` alike.
pub const EXIT_CONFIG: u8 = 2;

/// Every group of settings, in `--help` order.
pub const GROUPS: &[&[SettingInfo]] = &[
    server::SETTINGS,
    source::SETTINGS,
    crate::storage::settings::SETTINGS,
    crate::storage::filesystem::settings::SETTINGS,
    crate::storage::gcs::settings::SETTINGS,
    crate::storage::s3::settings::SETTINGS,
    nix::SETTINGS,
    build::SETTINGS,
    cache::SETTINGS,
    gc::SETTINGS,
    crate::auth::settings::SETTINGS,
];

/// Every setting of `nixery serve`, in `--help` order.
pub fn settings() -> impl Iterator<Item = &'static SettingInfo> {
    GROUPS.iter().flat_map(|group| group.iter())
}

/// Every environment variable the server reads: each setting's, then
/// `RUST_LOG` (read by [`crate::logging`]).
pub fn env_vars() -> Vec<&'static str> {
    settings()
        .map(|setting| setting.env)
        .chain([crate::logging::FILTER_VAR])
        .collect()
}

/// Validated settings of the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Address to bind (`NIXERY_HOST`:`PORT`).
    pub listen: SocketAddr,
    /// Where packages come from.
    pub package_source: PackageSource,
    /// Where blobs, build records and manifests are kept.
    pub storage: StorageSetting,
    /// Longest one Nix build may run (`NIX_TIMEOUT`).
    pub nix_timeout: Duration,
    /// Longest one image's whole Nix step may take (`NIXERY_NIX_DEADLINE`).
    pub nix_deadline: Duration,
    /// Whether unfree packages are served (`NIXERY_ALLOW_UNFREE`).
    pub allow_unfree: bool,
    /// URL of the popularity data, if any.
    pub popularity_url: Option<String>,
    /// The configured layering strategy, if any (`NIXERY_LAYERING`).
    pub layering: Option<crate::layers::Strategy>,
    /// Program that runs prepare-image, if not the default.
    pub prepare_image: Option<PathBuf>,
    /// Layers packed at once (at least 1).
    pub pack_concurrency: usize,
    /// Nix builds run at once (at least 1).
    pub build_concurrency: usize,
    /// How long a resolved git ref or channel is reused.
    pub source_ttl: Duration,
    /// Remote channel names are resolved against.
    pub channel_remote: String,
    /// Directory of the local manifest tier, if set (else a default under
    /// the user's cache directory, see [`default_cache_dir`]).
    pub cache_dir: Option<PathBuf>,
    /// Manifests kept in memory (at least 1).
    pub manifest_cache_entries: usize,
    /// Header and idle cut-offs of client connections.
    pub limits: ConnectionLimits,
    /// Images that may wait for a build slot (0 allowed).
    pub build_queue: usize,
    /// Platforms each image is built for, in order (at least one).
    pub platforms: Vec<crate::platform::Platform>,
    /// Garbage collection.
    pub gc: GcSettings,
    /// Pull authentication; `None`: every client may pull and build.
    pub auth: Option<crate::auth::AuthSettings>,
}

impl ServeSettings {
    /// Validate the settings into a [`Config`]; the first bad value is the
    /// error.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let listen = server::listen(&self)?;
        let package_source = source::package_source(&self)?;
        let storage = crate::storage::settings::storage_setting(&self)?;
        Ok(Config {
            listen,
            package_source,
            storage,
            nix_timeout: self.get(&nix::NIX_TIMEOUT)?,
            nix_deadline: self.get(&nix::NIX_DEADLINE)?,
            allow_unfree: self.get(&nix::ALLOW_UNFREE)?,
            limits: server::limits(&self)?,
            source_ttl: self.get(&source::SOURCE_TTL)?,
            popularity_url: self.get(&nix::POPULARITY_URL)?,
            layering: self.get(&nix::LAYERING)?,
            prepare_image: self.get(&nix::PREPARE_IMAGE)?,
            pack_concurrency: self.get(&build::PACK_CONCURRENCY)?,
            build_concurrency: self.get(&build::BUILD_CONCURRENCY)?,
            channel_remote: self.get(&source::CHANNEL_REMOTE)?,
            cache_dir: self.get(&cache::CACHE_DIR)?,
            manifest_cache_entries: self.get(&cache::MANIFEST_CACHE_ENTRIES)?,
            build_queue: self.get(&build::BUILD_QUEUE)?,
            platforms: self.get(&build::PLATFORMS)?,
            gc: gc::gc_settings(&self)?,
            auth: crate::auth::settings::auth_settings(&self)?,
        })
    }
}

/// Settings of `nixery serve` as given on the command line or in the
/// environment: the clap side of [`ServeSettings`], one flag per row of
/// the table (see [`settings`]). The values are boxed so that the `serve`
/// subcommand variant stays small.
#[derive(Debug, Clone, Default)]
pub struct ServeArgs {
    /// The settings, unvalidated.
    pub settings: Box<ServeSettings>,
}

impl From<ServeSettings> for ServeArgs {
    fn from(settings: ServeSettings) -> Self {
        Self {
            settings: Box::new(settings),
        }
    }
}

impl ServeArgs {
    /// Validate the settings; see [`ServeSettings::into_config`].
    pub fn into_config(self) -> Result<Config, ConfigError> {
        (*self.settings).into_config()
    }
}

impl clap::Args for ServeArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        cmd.args(settings().map(|setting| {
            clap::Arg::new(setting.env)
                .long(setting.flag)
                .env(setting.env)
                .value_name(setting.value_name)
                .help(setting.doc)
                .value_parser(clap::value_parser!(OsString))
        }))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl clap::FromArgMatches for ServeArgs {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut values = ServeSettings::default();
        for setting in settings() {
            if let Ok(Some(value)) = matches.try_get_one::<OsString>(setting.env) {
                values.insert(setting, value.clone());
            }
        }
        Ok(values.into())
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
