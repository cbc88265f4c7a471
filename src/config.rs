//! Settings of `nixery serve`: parsing (clap, flags and upstream environment
//! variables) and validation into a [`Config`].
//!
//! Clap only collects raw strings here, so that a bad value in the
//! environment never stops the other subcommands (`nixery layers`) from
//! parsing. [`ServeArgs::into_config`] then checks everything at once and
//! answers a [`ConfigError`] whose message names the offending variable.

use crate::{connection::ConnectionLimits, source::PackageSource};
use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

/// Default `PORT`.
pub const DEFAULT_PORT: u16 = 8080;
/// Default `NIXERY_HOST` (all IPv4 interfaces).
pub const DEFAULT_HOST: &str = "0.0.0.0";
/// Default `STORAGE_PATH` of the filesystem backend.
pub const DEFAULT_STORAGE_PATH: &str = "/var/lib/nixery";
/// Default `NIX_TIMEOUT` (one build), in seconds, as upstream.
pub const DEFAULT_NIX_TIMEOUT_SECS: u64 = 60;
/// Default `NIXERY_SOURCE_TTL`, in seconds.
pub const DEFAULT_SOURCE_TTL_SECS: u64 = 60;
/// Default `NIXERY_MANIFEST_CACHE_ENTRIES`.
pub const DEFAULT_MANIFEST_CACHE_ENTRIES: usize = 4096;
/// Default `NIXERY_NIX_DEADLINE` (one image's whole Nix step), in seconds:
/// enough for a cold channel (tarball download and evaluation) and
/// substituting a large closure.
pub const DEFAULT_NIX_DEADLINE_SECS: u64 = 1800;

// Clap turns a doc comment on a flattened `Args` struct into the `about`
// text of the command it is flattened into, replacing `nixery --help`'s own.
// The struct docs are therefore only attached when rustdoc runs.
#[cfg_attr(
    doc,
    doc = "Settings of `nixery serve` as given on the command line or in the \
           environment (see [`ServeSettings`] for each one). The settings are \
           boxed so that the `serve` subcommand variant stays small."
)]
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// The settings, unvalidated.
    #[command(flatten)]
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

#[cfg_attr(
    doc,
    doc = "Settings of `nixery serve`, each a flag that may also come from the \
           upstream Nixery environment variable named in its `env`. Values are \
           kept as given; [`ServeSettings::into_config`] validates them."
)]
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ServeSettings {
    /// TCP port to listen on; 0 picks a free port.
    #[arg(long, env = "PORT", value_name = "PORT")]
    pub port: Option<String>,

    /// Address to bind [default: 0.0.0.0].
    #[arg(long, env = "NIXERY_HOST", value_name = "ADDR")]
    pub host: Option<String>,

    /// Nix channel to build from (e.g. nixos-unstable).
    #[arg(long, env = "NIXERY_CHANNEL", value_name = "CHANNEL")]
    pub channel: Option<String>,

    /// Git repository holding a package set to build from.
    #[arg(long, env = "NIXERY_PKGS_REPO", value_name = "URL")]
    pub pkgs_repo: Option<String>,

    /// Local path of a package set to build from.
    #[arg(long, env = "NIXERY_PKGS_PATH", value_name = "PATH")]
    pub pkgs_path: Option<PathBuf>,

    /// Storage backend: `filesystem` or `gcs` [default: filesystem].
    #[arg(long, env = "NIXERY_STORAGE_BACKEND", value_name = "BACKEND")]
    pub storage_backend: Option<String>,

    /// Root directory of the filesystem backend [default: /var/lib/nixery].
    #[arg(long, env = "STORAGE_PATH", value_name = "DIR")]
    pub storage_path: Option<PathBuf>,

    /// Bucket of the gcs backend.
    #[arg(long, env = "GCS_BUCKET", value_name = "BUCKET")]
    pub gcs_bucket: Option<String>,

    /// Service account key file of the gcs backend (enables signed URLs).
    #[arg(long, env = "GOOGLE_APPLICATION_CREDENTIALS", value_name = "FILE")]
    pub gcs_credentials: Option<PathBuf>,

    /// Host:port of a GCS emulator to use instead of Google Cloud Storage.
    #[arg(long, env = "STORAGE_EMULATOR_HOST", value_name = "HOST")]
    pub storage_emulator_host: Option<String>,

    /// Seconds one Nix build (derivation) may run, given to Nix as
    /// --timeout [default: 60].
    #[arg(long, env = "NIX_TIMEOUT", value_name = "SECONDS")]
    pub nix_timeout: Option<String>,

    /// Seconds one image's whole Nix step (evaluation, downloads, builds)
    /// may take [default: 1800].
    #[arg(long, env = "NIXERY_NIX_DEADLINE", value_name = "SECONDS")]
    pub nix_deadline: Option<String>,

    /// Serve packages with unfree licences (true/false) [default: false].
    #[arg(long, env = "NIXERY_ALLOW_UNFREE", value_name = "BOOL")]
    pub allow_unfree: Option<String>,

    /// URL of the popularity data used to group layers.
    #[arg(long, env = "NIX_POPULARITY_URL", value_name = "URL")]
    pub popularity_url: Option<String>,

    /// Layering strategy: size-rank, popularity, in-degree or size-cohort
    /// [default: popularity with a popularity map, else size-rank].
    #[arg(long, env = "NIXERY_LAYERING", value_name = "STRATEGY")]
    pub layering: Option<String>,

    /// Program that runs the prepare-image Nix expression.
    #[arg(long, env = "NIXERY_PREPARE_IMAGE", value_name = "PATH")]
    pub prepare_image: Option<PathBuf>,

    /// Layers packed at once [default: number of cores].
    #[arg(long, env = "NIXERY_PACK_CONCURRENCY", value_name = "N")]
    pub pack_concurrency: Option<String>,

    /// Nix builds run at once [default: number of cores].
    #[arg(long, env = "NIXERY_BUILD_CONCURRENCY", value_name = "N")]
    pub build_concurrency: Option<String>,

    /// Seconds a git ref or channel stays resolved to its commit [default: 60].
    #[arg(long, env = "NIXERY_SOURCE_TTL", value_name = "SECONDS")]
    pub source_ttl: Option<String>,

    /// Git remote channel names are resolved against
    /// [default: https://github.com/NixOS/nixpkgs].
    #[arg(long, env = "NIXERY_CHANNEL_REMOTE", value_name = "URL")]
    pub channel_remote: Option<String>,

    /// Directory of the local manifest tier [default: $XDG_CACHE_HOME/nixery].
    #[arg(long, env = "NIXERY_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Manifests kept in memory [default: 4096].
    #[arg(long, env = "NIXERY_MANIFEST_CACHE_ENTRIES", value_name = "N")]
    pub manifest_cache_entries: Option<String>,

    /// Seconds a client may take to send a request's headers [default: 30].
    #[arg(long, env = "NIXERY_HEADER_TIMEOUT", value_name = "SECONDS")]
    pub header_timeout: Option<String>,

    /// Seconds an idle keep-alive connection is kept open [default: 60].
    #[arg(long, env = "NIXERY_IDLE_TIMEOUT", value_name = "SECONDS")]
    pub idle_timeout: Option<String>,

    /// Images that may wait for a build slot; beyond them requests for new
    /// images get 429 [default: 16].
    #[arg(long, env = "NIXERY_BUILD_QUEUE", value_name = "N")]
    pub build_queue: Option<String>,
}

/// Which storage backend to use, with its settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageSetting {
    /// Files under `path` (`STORAGE_PATH`).
    Filesystem { path: PathBuf },
    /// A Google Cloud Storage bucket.
    Gcs {
        bucket: String,
        credentials: Option<PathBuf>,
        emulator_host: Option<String>,
    },
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
}

impl StorageSetting {
    /// A string naming this storage and no other: the filesystem root
    /// (made absolute) or the bucket and its endpoint. The local manifest
    /// tier is kept per identity.
    pub fn identity(&self) -> String {
        match self {
            StorageSetting::Filesystem { path } => {
                let absolute = path
                    .canonicalize()
                    .or_else(|_| std::path::absolute(path))
                    .unwrap_or_else(|_| path.clone());
                format!("filesystem:{}", absolute.display())
            }
            StorageSetting::Gcs {
                bucket,
                emulator_host,
                ..
            } => format!(
                "gcs:{}/{bucket}",
                emulator_host.as_deref().unwrap_or("storage.googleapis.com")
            ),
        }
    }
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

/// Treat unset and empty values alike (an empty variable in a unit file or a
/// compose file means "not configured").
fn present(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

fn present_path(value: Option<PathBuf>) -> Option<PathBuf> {
    value.filter(|v| !v.as_os_str().is_empty())
}

/// A positive whole number of seconds from `var`, or `default` seconds.
fn parse_seconds(
    var: &'static str,
    value: Option<String>,
    default: u64,
) -> Result<Duration, ConfigError> {
    match present(value) {
        None => Ok(Duration::from_secs(default)),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
            _ => Err(ConfigError::Invalid {
                var,
                value: v,
                expected: "expected a whole number of seconds of at least 1",
            }),
        },
    }
}

/// Default of `NIXERY_BUILD_QUEUE`: enough for a burst of distinct images
/// from a deployment, small enough that abandoned requests cannot queue
/// hours of Nix work.
pub const DEFAULT_BUILD_QUEUE: usize = 16;

/// A whole number, 0 allowed, `default` when unset.
fn parse_count(
    var: &'static str,
    value: Option<String>,
    default: usize,
) -> Result<usize, ConfigError> {
    match present(value) {
        None => Ok(default),
        Some(v) => v.trim().parse::<usize>().map_err(|_| ConfigError::Invalid {
            var,
            value: v,
            expected: "expected a whole number (0 or more)",
        }),
    }
}

fn parse_positive(
    var: &'static str,
    value: Option<String>,
    default: usize,
) -> Result<usize, ConfigError> {
    match present(value) {
        None => Ok(default),
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(ConfigError::Invalid {
                var,
                value: v,
                expected: "expected a whole number of at least 1",
            }),
        },
    }
}

impl ServeSettings {
    /// Validate the settings. Defaults: `PORT` 8080, `NIXERY_HOST` 0.0.0.0,
    /// `NIXERY_STORAGE_BACKEND` filesystem, `STORAGE_PATH` /var/lib/nixery,
    /// `NIX_TIMEOUT` 60 s, concurrency = number of cores,
    /// `NIXERY_SOURCE_TTL` 60 s, 4096 manifests in memory,
    /// `NIXERY_HEADER_TIMEOUT` 30 s, `NIXERY_IDLE_TIMEOUT` 60 s.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let port = match present(self.port) {
            None => DEFAULT_PORT,
            Some(v) => v.trim().parse::<u16>().map_err(|_| ConfigError::Invalid {
                var: "PORT",
                value: v,
                expected: "expected a port number from 0 to 65535",
            })?,
        };
        let host = present(self.host).unwrap_or_else(|| DEFAULT_HOST.to_owned());
        let ip: IpAddr = host.trim().parse().map_err(|_| ConfigError::Invalid {
            var: "NIXERY_HOST",
            value: host.clone(),
            expected: "expected an IP address such as 0.0.0.0 or ::1",
        })?;

        let channel = present(self.channel);
        let repo = present(self.pkgs_repo);
        let path = present_path(self.pkgs_path);
        let set: Vec<&'static str> = [
            channel.as_ref().map(|_| "NIXERY_CHANNEL"),
            repo.as_ref().map(|_| "NIXERY_PKGS_REPO"),
            path.as_ref().map(|_| "NIXERY_PKGS_PATH"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if set.len() > 1 {
            return Err(ConfigError::ConflictingSources(set));
        }
        let package_source = match (channel, repo, path) {
            (Some(c), _, _) => PackageSource::Channel(c),
            (_, Some(r), _) => PackageSource::Git(r),
            (_, _, Some(p)) => PackageSource::Path(p),
            _ => PackageSource::Builtin,
        };

        let backend = present(self.storage_backend).unwrap_or_else(|| "filesystem".to_owned());
        let storage = match backend.trim() {
            "filesystem" => StorageSetting::Filesystem {
                path: present_path(self.storage_path)
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_STORAGE_PATH)),
            },
            "gcs" => StorageSetting::Gcs {
                bucket: present(self.gcs_bucket).ok_or(ConfigError::Missing {
                    var: "GCS_BUCKET",
                    because: "NIXERY_STORAGE_BACKEND=gcs",
                })?,
                credentials: present_path(self.gcs_credentials),
                emulator_host: present(self.storage_emulator_host),
            },
            _ => {
                return Err(ConfigError::Invalid {
                    var: "NIXERY_STORAGE_BACKEND",
                    value: backend,
                    expected: "expected filesystem or gcs",
                });
            }
        };

        let nix_timeout = parse_seconds("NIX_TIMEOUT", self.nix_timeout, DEFAULT_NIX_TIMEOUT_SECS)?;
        let nix_deadline = parse_seconds(
            "NIXERY_NIX_DEADLINE",
            self.nix_deadline,
            DEFAULT_NIX_DEADLINE_SECS,
        )?;
        let allow_unfree = match present(self.allow_unfree) {
            None => false,
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                _ => {
                    return Err(ConfigError::Invalid {
                        var: "NIXERY_ALLOW_UNFREE",
                        value: v,
                        expected: "expected true or false",
                    });
                }
            },
        };
        let defaults = ConnectionLimits::default();
        let limits = ConnectionLimits {
            header_timeout: parse_seconds(
                "NIXERY_HEADER_TIMEOUT",
                self.header_timeout,
                defaults.header_timeout.as_secs(),
            )?,
            idle_timeout: parse_seconds(
                "NIXERY_IDLE_TIMEOUT",
                self.idle_timeout,
                defaults.idle_timeout.as_secs(),
            )?,
        };

        let source_ttl = match present(self.source_ttl) {
            None => Duration::from_secs(DEFAULT_SOURCE_TTL_SECS),
            Some(v) => match v.trim().parse::<u64>() {
                Ok(secs) => Duration::from_secs(secs),
                Err(_) => {
                    return Err(ConfigError::Invalid {
                        var: "NIXERY_SOURCE_TTL",
                        value: v,
                        expected: "expected a whole number of seconds (0 resolves on every pull)",
                    });
                }
            },
        };

        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Config {
            listen: SocketAddr::new(ip, port),
            package_source,
            storage,
            nix_timeout,
            nix_deadline,
            allow_unfree,
            popularity_url: present(self.popularity_url),
            layering: match present(self.layering) {
                None => None,
                Some(v) => Some(v.trim().parse().map_err(|_| ConfigError::Invalid {
                    var: "NIXERY_LAYERING",
                    value: v,
                    expected: "expected size-rank, popularity, in-degree or size-cohort",
                })?),
            },
            prepare_image: present_path(self.prepare_image),
            pack_concurrency: parse_positive(
                "NIXERY_PACK_CONCURRENCY",
                self.pack_concurrency,
                cores,
            )?,
            build_concurrency: parse_positive(
                "NIXERY_BUILD_CONCURRENCY",
                self.build_concurrency,
                cores,
            )?,
            source_ttl,
            channel_remote: present(self.channel_remote)
                .map(|r| r.trim().to_owned())
                .unwrap_or_else(|| crate::resolve::DEFAULT_CHANNEL_REMOTE.to_owned()),
            cache_dir: present_path(self.cache_dir),
            manifest_cache_entries: parse_positive(
                "NIXERY_MANIFEST_CACHE_ENTRIES",
                self.manifest_cache_entries,
                DEFAULT_MANIFEST_CACHE_ENTRIES,
            )?,
            limits,
            build_queue: parse_count("NIXERY_BUILD_QUEUE", self.build_queue, DEFAULT_BUILD_QUEUE)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Option<String> {
        Some(v.to_owned())
    }

    #[test]
    fn defaults_give_filesystem_builtin_on_port_8080() {
        let c = ServeSettings::default().into_config().unwrap();
        assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.package_source, PackageSource::Builtin);
        assert_eq!(
            c.storage,
            StorageSetting::Filesystem {
                path: PathBuf::from("/var/lib/nixery")
            }
        );
        assert_eq!(c.nix_timeout, Duration::from_secs(60));
        assert_eq!(c.nix_deadline, Duration::from_secs(1800));
        assert!(!c.allow_unfree);
        assert!(c.pack_concurrency >= 1 && c.build_concurrency >= 1);
    }

    #[test]
    fn each_package_source_is_recognised() {
        let c = ServeSettings {
            channel: s("nixos-unstable"),
            ..Default::default()
        };
        assert_eq!(
            c.into_config().unwrap().package_source,
            PackageSource::Channel("nixos-unstable".into())
        );
        let c = ServeSettings {
            pkgs_repo: s("https://example.org/pkgs.git"),
            ..Default::default()
        };
        assert_eq!(
            c.into_config().unwrap().package_source,
            PackageSource::Git("https://example.org/pkgs.git".into())
        );
        let c = ServeSettings {
            pkgs_path: Some("/srv/pkgs".into()),
            ..Default::default()
        };
        assert_eq!(
            c.into_config().unwrap().package_source,
            PackageSource::Path("/srv/pkgs".into())
        );
    }

    #[test]
    fn two_package_sources_are_rejected_naming_both() {
        let err = ServeSettings {
            channel: s("nixos-unstable"),
            pkgs_path: Some("/srv/pkgs".into()),
            ..Default::default()
        }
        .into_config()
        .unwrap_err();
        assert_eq!(
            err,
            ConfigError::ConflictingSources(vec!["NIXERY_CHANNEL", "NIXERY_PKGS_PATH"])
        );
        let msg = err.to_string();
        assert!(msg.contains("NIXERY_CHANNEL and NIXERY_PKGS_PATH"), "{msg}");
    }

    #[test]
    fn empty_values_count_as_unset() {
        let c = ServeSettings {
            channel: s(""),
            pkgs_repo: s("  "),
            port: s(""),
            ..Default::default()
        }
        .into_config()
        .unwrap();
        assert_eq!(c.package_source, PackageSource::Builtin);
        assert_eq!(c.listen.port(), 8080);
    }

    #[test]
    fn gcs_without_bucket_names_gcs_bucket() {
        let err = ServeSettings {
            storage_backend: s("gcs"),
            ..Default::default()
        }
        .into_config()
        .unwrap_err();
        assert!(
            err.to_string().starts_with("GCS_BUCKET must be set"),
            "{err}"
        );
    }

    #[test]
    fn gcs_with_bucket_keeps_credentials_and_emulator() {
        let c = ServeSettings {
            storage_backend: s("gcs"),
            gcs_bucket: s("b"),
            gcs_credentials: Some("/k.json".into()),
            storage_emulator_host: s("127.0.0.1:4443"),
            ..Default::default()
        }
        .into_config()
        .unwrap();
        assert_eq!(
            c.storage,
            StorageSetting::Gcs {
                bucket: "b".into(),
                credentials: Some("/k.json".into()),
                emulator_host: Some("127.0.0.1:4443".into())
            }
        );
    }

    #[test]
    fn unknown_backend_is_rejected() {
        let err = ServeSettings {
            storage_backend: s("s3"),
            ..Default::default()
        }
        .into_config()
        .unwrap_err();
        assert!(err.to_string().contains("NIXERY_STORAGE_BACKEND"), "{err}");
    }

    #[test]
    fn unparsable_or_zero_nix_timeout_is_rejected() {
        for bad in ["abc", "0", "-5", "1.5"] {
            let err = ServeSettings {
                nix_timeout: s(bad),
                ..Default::default()
            }
            .into_config()
            .unwrap_err();
            assert!(err.to_string().starts_with("NIX_TIMEOUT="), "{err}");
        }
        let c = ServeSettings {
            nix_timeout: s("300"),
            ..Default::default()
        };
        assert_eq!(
            c.into_config().unwrap().nix_timeout,
            Duration::from_secs(300)
        );
    }

    #[test]
    fn connection_timeouts_default_and_parse() {
        let c = ServeSettings::default().into_config().unwrap();
        assert_eq!(c.limits.header_timeout, Duration::from_secs(30));
        assert_eq!(c.limits.idle_timeout, Duration::from_secs(60));
        let c = ServeSettings {
            header_timeout: s("5"),
            idle_timeout: s(" 7 "),
            ..Default::default()
        }
        .into_config()
        .unwrap();
        assert_eq!(c.limits.header_timeout, Duration::from_secs(5));
        assert_eq!(c.limits.idle_timeout, Duration::from_secs(7));
        for (header, idle, var) in [
            (s("0"), None, "NIXERY_HEADER_TIMEOUT="),
            (None, s("soon"), "NIXERY_IDLE_TIMEOUT="),
        ] {
            let err = ServeSettings {
                header_timeout: header,
                idle_timeout: idle,
                ..Default::default()
            }
            .into_config()
            .unwrap_err();
            assert!(err.to_string().starts_with(var), "{err}");
        }
    }

    #[test]
    fn nix_deadline_is_its_own_setting() {
        let err = ServeSettings {
            nix_deadline: s("0"),
            ..Default::default()
        }
        .into_config()
        .unwrap_err();
        assert!(err.to_string().starts_with("NIXERY_NIX_DEADLINE="), "{err}");
        let c = ServeSettings {
            nix_timeout: s("30"),
            nix_deadline: s("900"),
            ..Default::default()
        }
        .into_config()
        .unwrap();
        assert_eq!(c.nix_timeout, Duration::from_secs(30));
        assert_eq!(c.nix_deadline, Duration::from_secs(900));
    }

    #[test]
    fn allow_unfree_takes_booleans_only() {
        for (value, expected) in [("true", true), ("1", true), ("False", false), ("no", false)] {
            let c = ServeSettings {
                allow_unfree: s(value),
                ..Default::default()
            };
            assert_eq!(c.into_config().unwrap().allow_unfree, expected, "{value}");
        }
        let err = ServeSettings {
            allow_unfree: s("maybe"),
            ..Default::default()
        }
        .into_config()
        .unwrap_err();
        assert!(err.to_string().starts_with("NIXERY_ALLOW_UNFREE="), "{err}");
    }

    #[test]
    fn zero_concurrency_is_rejected() {
        let err = ServeSettings {
            pack_concurrency: s("0"),
            ..Default::default()
        }
        .into_config()
        .unwrap_err();
        assert!(
            err.to_string().starts_with("NIXERY_PACK_CONCURRENCY="),
            "{err}"
        );
        let err = ServeSettings {
            build_concurrency: s("many"),
            ..Default::default()
        }
        .into_config()
        .unwrap_err();
        assert!(
            err.to_string().starts_with("NIXERY_BUILD_CONCURRENCY="),
            "{err}"
        );
    }

    #[test]
    fn source_ttl_and_cache_settings_are_parsed() {
        let c = ServeSettings::default().into_config().unwrap();
        assert_eq!(c.source_ttl, Duration::from_secs(DEFAULT_SOURCE_TTL_SECS));
        assert_eq!(c.channel_remote, crate::resolve::DEFAULT_CHANNEL_REMOTE);
        assert_eq!(c.manifest_cache_entries, DEFAULT_MANIFEST_CACHE_ENTRIES);
        let c = ServeSettings {
            source_ttl: s("0"),
            channel_remote: s("file:///srv/nixpkgs"),
            cache_dir: Some("/srv/cache".into()),
            manifest_cache_entries: s("10"),
            ..Default::default()
        }
        .into_config()
        .unwrap();
        assert_eq!(c.source_ttl, Duration::ZERO);
        assert_eq!(c.channel_remote, "file:///srv/nixpkgs");
        assert_eq!(c.cache_dir, Some(PathBuf::from("/srv/cache")));
        assert_eq!(c.manifest_cache_entries, 10);
        for (settings, var) in [
            (
                ServeSettings {
                    source_ttl: s("-1"),
                    ..Default::default()
                },
                "NIXERY_SOURCE_TTL=",
            ),
            (
                ServeSettings {
                    manifest_cache_entries: s("0"),
                    ..Default::default()
                },
                "NIXERY_MANIFEST_CACHE_ENTRIES=",
            ),
        ] {
            let err = settings.into_config().unwrap_err();
            assert!(err.to_string().starts_with(var), "{err}");
        }
    }

    #[test]
    fn storage_identities_differ_per_root_and_bucket() {
        let fs = |p: &str| StorageSetting::Filesystem { path: p.into() }.identity();
        let gcs = |b: &str| {
            StorageSetting::Gcs {
                bucket: b.into(),
                credentials: None,
                emulator_host: None,
            }
            .identity()
        };
        assert_ne!(fs("/srv/a"), fs("/srv/b"));
        assert_ne!(gcs("a"), gcs("b"));
        assert_ne!(fs("a"), gcs("a"));
    }

    #[test]
    fn bad_port_and_host_are_rejected() {
        let err = ServeSettings {
            port: s("70000"),
            ..Default::default()
        }
        .into_config()
        .unwrap_err();
        assert!(err.to_string().starts_with("PORT="), "{err}");
        let err = ServeSettings {
            host: s("localhost:1"),
            ..Default::default()
        }
        .into_config()
        .unwrap_err();
        assert!(err.to_string().starts_with("NIXERY_HOST="), "{err}");
    }

    #[test]
    fn port_zero_and_ipv6_host_are_accepted() {
        let c = ServeSettings {
            port: s("0"),
            host: s("::1"),
            ..Default::default()
        }
        .into_config()
        .unwrap();
        assert_eq!(c.listen, "[::1]:0".parse().unwrap());
    }
}
