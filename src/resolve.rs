//! Resolving the package source to an exact [`Revision`] before anything
//! is looked up or built, so that a manifest can be cached for every kind
//! of source and a build uses exactly what was resolved.
//!
//! | Source | Revision | Looked up |
//! |---|---|---|
//! | embedded set | hash of the embedded Nix files | never (fixed per binary) |
//! | pinned commit (channel or 40-hex tag) | the commit | never |
//! | git branch, tag, `latest` | the commit the ref points at | `git ls-remote`, at most once per TTL |
//! | channel name | the commit of the channel's branch | `git ls-remote` on the channel remote, at most once per TTL |
//! | local path | fingerprint of the tree (paths, sizes, mtimes) | at most every [`PATH_RECHECK`] |
//!
//! A resolved git ref is handed to Nix as both the ref and the commit, so
//! the build fetches exactly the commit the cache key names.

use std::{
    collections::HashMap,
    io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use crate::{
    identity::Revision,
    source::{NixSource, PackageSource, is_commit},
};

/// How long a local path's fingerprint is reused before the tree is looked
/// at again. An edit is seen by every pull that starts this long after the
/// edit plus the time one fingerprint takes.
pub const PATH_RECHECK: Duration = Duration::from_secs(2);

/// Default remote a channel name is resolved against.
pub const DEFAULT_CHANNEL_REMOTE: &str = "https://github.com/NixOS/nixpkgs";

/// Longest one `git ls-remote` may take.
const LS_REMOTE_TIMEOUT: Duration = Duration::from_secs(60);

/// Most bytes of `git ls-remote` output read.
const MAX_LS_REMOTE_OUTPUT: usize = 64 * 1024 * 1024;

/// What the resolver needs to know.
#[derive(Clone, Debug)]
pub struct ResolverSettings {
    /// The configured source, with [`PackageSource::Builtin`] already
    /// replaced by the directory the embedded set was written to when
    /// `embedded_hash` is set.
    pub source: PackageSource,
    /// Hash of the embedded files when the source is the embedded set.
    pub embedded_hash: Option<String>,
    /// How long a resolved git ref or channel is reused.
    pub ttl: Duration,
    /// Remote a channel name is resolved against.
    pub channel_remote: String,
}

/// A source resolved for one image tag: the revision and how to tell Nix
/// to build exactly that revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The exact revision.
    pub revision: Revision,
    /// The package set the Nix step builds from.
    pub source: NixSource,
}

/// Why a source could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The tag names no branch or tag of the repository.
    #[error("no branch or tag {0:?} in the package repository")]
    UnknownRef(String),
    /// The channel names no branch or tag of the channel remote.
    #[error("no channel {0:?} in the channel remote")]
    UnknownChannel(String),
    /// `git ls-remote` failed.
    #[error("listing the refs of the package repository failed: {0}")]
    LsRemote(String),
    /// The local package directory could not be read.
    #[error("reading the package directory failed")]
    Fingerprint(#[source] io::Error),
}

/// Turns image tags into exact revisions; one per server.
pub struct Resolver {
    kind: Kind,
}

enum Kind {
    Embedded {
        hash: String,
        dir: PathBuf,
    },
    PinnedChannel {
        commit: String,
    },
    Channel {
        channel: String,
        remote: String,
        refs: RefCache,
    },
    Git {
        url: String,
        refs: RefCache,
    },
    Path {
        dir: PathBuf,
        fingerprints: FingerprintCache,
    },
}

impl Resolver {
    /// A resolver for `settings`.
    pub fn new(settings: ResolverSettings) -> Resolver {
        let ResolverSettings {
            source,
            embedded_hash,
            ttl,
            channel_remote,
        } = settings;
        let kind = match (source, embedded_hash) {
            (PackageSource::Path(dir), Some(hash)) => Kind::Embedded { hash, dir },
            // Not written out yet: names no directory, so builds fail.
            (PackageSource::Builtin, hash) => Kind::Embedded {
                hash: hash.unwrap_or_default(),
                dir: PathBuf::new(),
            },
            (PackageSource::Channel(commit), _) if is_commit(&commit) => {
                Kind::PinnedChannel { commit }
            }
            (PackageSource::Channel(channel), _) => {
                let patterns = vec![
                    format!("refs/heads/{channel}"),
                    format!("refs/tags/{channel}"),
                    format!("refs/tags/{channel}^{{}}"),
                ];
                Kind::Channel {
                    refs: RefCache::new(channel_remote.clone(), patterns, ttl),
                    channel,
                    remote: channel_remote,
                }
            }
            (PackageSource::Git(url), _) => {
                let patterns = vec![
                    "HEAD".to_string(),
                    "refs/heads/*".to_string(),
                    "refs/tags/*".to_string(),
                ];
                Kind::Git {
                    refs: RefCache::new(url.clone(), patterns, ttl),
                    url,
                }
            }
            (PackageSource::Path(dir), None) => Kind::Path {
                fingerprints: FingerprintCache::new(dir.clone()),
                dir,
            },
        };
        Resolver { kind }
    }

    /// The exact revision to build an image tagged `tag` from.
    pub async fn resolve(&self, tag: &str) -> Result<Resolved, ResolveError> {
        match &self.kind {
            Kind::Embedded { hash, dir } => Ok(Resolved {
                revision: Revision::Embedded(hash.clone()),
                source: NixSource::Path(dir.clone()),
            }),
            Kind::PinnedChannel { commit } => Ok(Resolved {
                revision: Revision::Commit(commit.clone()),
                source: NixSource::Nixpkgs {
                    commit: commit.clone(),
                },
            }),
            Kind::Channel {
                channel,
                remote,
                refs,
            } => {
                let snapshot = refs.get().await?;
                let (reference, commit) = snapshot
                    .find_ref(channel)
                    .ok_or_else(|| ResolveError::UnknownChannel(channel.clone()))?;
                let source = if remote == DEFAULT_CHANNEL_REMOTE {
                    NixSource::Nixpkgs {
                        commit: commit.clone(),
                    }
                } else {
                    NixSource::Git {
                        url: remote.clone(),
                        rev: commit.clone(),
                        reference: Some(reference),
                    }
                };
                Ok(Resolved {
                    revision: Revision::Commit(commit),
                    source,
                })
            }
            Kind::Git { url, refs } => {
                let (reference, commit) = if is_commit(tag) {
                    (None, tag.to_string())
                } else {
                    let snapshot = refs.get().await?;
                    let (reference, commit) = if tag.is_empty() || tag == "latest" {
                        snapshot
                            .refs
                            .get("HEAD")
                            .map(|commit| ("HEAD".to_string(), commit.clone()))
                    } else {
                        snapshot.find_ref(tag)
                    }
                    .ok_or_else(|| ResolveError::UnknownRef(tag.to_string()))?;
                    (Some(reference), commit)
                };
                Ok(Resolved {
                    source: NixSource::Git {
                        url: url.clone(),
                        rev: commit.clone(),
                        reference,
                    },
                    revision: Revision::Commit(commit),
                })
            }
            Kind::Path { dir, fingerprints } => Ok(Resolved {
                revision: Revision::Path {
                    dir: dir_string(dir),
                    fingerprint: fingerprints.get().await?,
                },
                source: NixSource::Path(dir.clone()),
            }),
        }
    }

    /// Whether `resolved` still describes the source now. Only a local
    /// path can change under a build (its tree is looked at again, ignoring
    /// the recheck interval); revisions of every other kind are immutable.
    pub async fn still_current(&self, resolved: &Resolved) -> bool {
        match (&self.kind, &resolved.revision) {
            (Kind::Path { fingerprints, .. }, Revision::Path { fingerprint, .. }) => {
                match fingerprints.refresh().await {
                    Ok(now) => &now == fingerprint,
                    Err(_) => false,
                }
            }
            _ => true,
        }
    }
}

fn dir_string(dir: &Path) -> String {
    dir.to_string_lossy().into_owned()
}

/// The refs of a remote as listed at one moment.
#[derive(Debug)]
struct RefSnapshot {
    refs: HashMap<String, String>,
    taken: Instant,
}

impl RefSnapshot {
    /// `name` as a branch, else as a tag (the commit it points at): the
    /// full ref name and the commit.
    fn find_ref(&self, name: &str) -> Option<(String, String)> {
        let branch = format!("refs/heads/{name}");
        if let Some(commit) = self.refs.get(&branch) {
            return Some((branch, commit.clone()));
        }
        let tag = format!("refs/tags/{name}");
        self.refs
            .get(&format!("{tag}^{{}}"))
            .or_else(|| self.refs.get(&tag))
            .map(|commit| (tag, commit.clone()))
    }
}

/// The refs of one remote, listed with `git ls-remote` at most once per
/// TTL; concurrent lookups of an expired list share one listing.
struct RefCache {
    remote: String,
    patterns: Vec<String>,
    ttl: Duration,
    current: Mutex<Option<Arc<RefSnapshot>>>,
    refreshing: tokio::sync::Mutex<()>,
}

impl RefCache {
    fn new(remote: String, patterns: Vec<String>, ttl: Duration) -> RefCache {
        RefCache {
            remote,
            patterns,
            ttl,
            current: Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    fn current(&self) -> Option<Arc<RefSnapshot>> {
        self.current.lock().clone()
    }

    fn fresh(&self) -> Option<Arc<RefSnapshot>> {
        self.current()
            .filter(|snapshot| snapshot.taken.elapsed() < self.ttl)
    }

    async fn get(&self) -> Result<Arc<RefSnapshot>, ResolveError> {
        if let Some(snapshot) = self.fresh() {
            return Ok(snapshot);
        }
        let _refreshing = self.refreshing.lock().await;
        if let Some(snapshot) = self.fresh() {
            return Ok(snapshot);
        }
        let started = Instant::now();
        let listed = ls_remote(&self.remote, &self.patterns).await;
        let snapshot = match (listed, self.current()) {
            (Ok(refs), _) => {
                tracing::info!(
                    remote = %self.remote,
                    refs = refs.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "source refs listed"
                );
                // The refs are as old as the moment they were asked for:
                // a slow remote must not stretch the TTL.
                RefSnapshot {
                    refs,
                    taken: started,
                }
            }
            // Keep serving what was last resolved rather than failing every
            // pull while the remote is unreachable; try again after a TTL.
            (Err(error), Some(previous)) => {
                tracing::warn!(remote = %self.remote, error = %error, "listing refs failed, keeping the previous list");
                RefSnapshot {
                    refs: previous.refs.clone(),
                    taken: Instant::now(),
                }
            }
            (Err(error), None) => return Err(error),
        };
        let snapshot = Arc::new(snapshot);
        *self.current.lock() = Some(snapshot.clone());
        Ok(snapshot)
    }
}

/// `git ls-remote <remote> <patterns>` as a map from ref name to commit.
async fn ls_remote(
    remote: &str,
    patterns: &[String],
) -> Result<HashMap<String, String>, ResolveError> {
    let mut command = tokio::process::Command::new("git");
    command
        .arg("ls-remote")
        .arg("--")
        .arg(remote)
        .args(patterns)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(LS_REMOTE_TIMEOUT, command.output())
        .await
        .map_err(|_| {
            ResolveError::LsRemote(format!(
                "no answer within {} seconds",
                LS_REMOTE_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|error| ResolveError::LsRemote(format!("running git: {error}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
        return Err(ResolveError::LsRemote(format!(
            "git ls-remote exited with {}: {}",
            output.status,
            last.unwrap_or("no output").trim()
        )));
    }
    if output.stdout.len() > MAX_LS_REMOTE_OUTPUT {
        return Err(ResolveError::LsRemote("too many refs".into()));
    }
    Ok(parse_ls_remote(&String::from_utf8_lossy(&output.stdout)))
}

/// Lines of `<commit>\t<ref>`; anything else is ignored.
fn parse_ls_remote(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let (commit, name) = line.split_once('\t')?;
            is_commit(commit).then(|| (name.trim().to_string(), commit.to_string()))
        })
        .collect()
}

/// The fingerprint of a local tree, recomputed at most every
/// [`PATH_RECHECK`]; concurrent recomputations are shared.
struct FingerprintCache {
    dir: PathBuf,
    current: Mutex<Option<(String, Instant)>>,
    refreshing: tokio::sync::Mutex<()>,
}

impl FingerprintCache {
    fn new(dir: PathBuf) -> FingerprintCache {
        FingerprintCache {
            dir,
            current: Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    fn fresh(&self) -> Option<String> {
        self.current
            .lock()
            .as_ref()
            .filter(|(_, taken)| taken.elapsed() < PATH_RECHECK)
            .map(|(fingerprint, _)| fingerprint.clone())
    }

    async fn get(&self) -> Result<String, ResolveError> {
        if let Some(fingerprint) = self.fresh() {
            return Ok(fingerprint);
        }
        let _refreshing = self.refreshing.lock().await;
        if let Some(fingerprint) = self.fresh() {
            return Ok(fingerprint);
        }
        self.compute().await
    }

    /// Look at the tree now, whatever the age of the last fingerprint.
    async fn refresh(&self) -> Result<String, ResolveError> {
        let _refreshing = self.refreshing.lock().await;
        self.compute().await
    }

    async fn compute(&self) -> Result<String, ResolveError> {
        // Taken before the walk: an edit during the walk is seen next time.
        let taken = Instant::now();
        let dir = self.dir.clone();
        let fingerprint = tokio::task::spawn_blocking(move || fingerprint_tree(&dir))
            .await
            .map_err(|error| ResolveError::Fingerprint(io::Error::other(error.to_string())))?
            .map_err(ResolveError::Fingerprint)?;
        *self.current.lock() = Some((fingerprint.clone(), taken));
        Ok(fingerprint)
    }
}

/// Hex SHA-256 over every entry below `root` (sorted by path): its
/// relative path, type, size, modification time and change time, and a
/// symlink's target. Cheap: no file is read.
pub fn fingerprint_tree(root: &Path) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let mut entries: Vec<_> =
            std::fs::read_dir(root.join(&relative))?.collect::<Result<Vec<_>, _>>()?;
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries.iter().rev() {
            let path = relative.join(entry.file_name());
            let meta = entry.metadata()?;
            let kind: &[u8] = if meta.is_dir() {
                pending.push(path.clone());
                b"d"
            } else if meta.file_type().is_symlink() {
                b"l"
            } else {
                b"f"
            };
            let name = path.as_os_str().as_encoded_bytes();
            hasher.update((name.len() as u64).to_be_bytes());
            hasher.update(name);
            hasher.update(kind);
            for number in [
                meta.len() as i64,
                meta.mtime(),
                meta.mtime_nsec(),
                meta.ctime(),
                meta.ctime_nsec(),
                meta.ino() as i64,
            ] {
                hasher.update(number.to_be_bytes());
            }
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(root.join(&path))?;
                let target = target.as_os_str().as_encoded_bytes();
                hasher.update((target.len() as u64).to_be_bytes());
                hasher.update(target);
            }
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef01234567";
    const B: &str = "89abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn ls_remote_output_is_parsed_and_junk_ignored() {
        let refs = parse_ls_remote(&format!(
            "{A}\tHEAD\n{A}\trefs/heads/main\n{B}\trefs/tags/v1\nnot a line\nzz\trefs/x\n"
        ));
        assert_eq!(refs.len(), 3);
        assert_eq!(refs["HEAD"], A);
        assert_eq!(refs["refs/tags/v1"], B);
    }

    #[test]
    fn branches_win_over_tags_and_annotated_tags_are_peeled() {
        let snapshot = RefSnapshot {
            refs: parse_ls_remote(&format!(
                "{A}\trefs/heads/x\n{B}\trefs/tags/x\n{B}\trefs/tags/v1\n{A}\trefs/tags/v1^{{}}\n"
            )),
            taken: Instant::now(),
        };
        assert_eq!(
            snapshot.find_ref("x"),
            Some(("refs/heads/x".into(), A.into()))
        );
        assert_eq!(
            snapshot.find_ref("v1"),
            Some(("refs/tags/v1".into(), A.into()))
        );
        assert_eq!(snapshot.find_ref("nope"), None);
    }

    #[tokio::test]
    async fn embedded_set_resolves_to_its_hash_without_lookups() {
        let resolver = Resolver::new(ResolverSettings {
            source: PackageSource::Path("/x/offline".into()),
            embedded_hash: Some("abc".into()),
            ttl: Duration::from_secs(1),
            channel_remote: DEFAULT_CHANNEL_REMOTE.into(),
        });
        let resolved = resolver.resolve("anything").await.unwrap();
        assert_eq!(resolved.revision, Revision::Embedded("abc".into()));
        assert_eq!(resolved.source, NixSource::Path("/x/offline".into()));
    }

    #[tokio::test]
    async fn pinned_sources_resolve_without_lookups() {
        let settings = |source| ResolverSettings {
            source,
            embedded_hash: None,
            ttl: Duration::from_secs(1),
            // Unreachable: a lookup would fail the test.
            channel_remote: "file:///nonexistent/remote".into(),
        };
        let channel = Resolver::new(settings(PackageSource::Channel(A.into())));
        let resolved = channel.resolve("latest").await.unwrap();
        assert_eq!(resolved.revision, Revision::Commit(A.into()));
        assert_eq!(resolved.source, NixSource::Nixpkgs { commit: A.into() });

        let git = Resolver::new(settings(PackageSource::Git("file:///nonexistent".into())));
        let resolved = git.resolve(B).await.unwrap();
        assert_eq!(resolved.revision, Revision::Commit(B.into()));
        assert_eq!(
            resolved.source,
            NixSource::Git {
                url: "file:///nonexistent".into(),
                rev: B.into(),
                reference: None,
            }
        );
    }

    fn git(dir: &Path, args: &[&str]) -> String {
        let output = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@localhost"])
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "git {args:?}");
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    }

    fn commit(dir: &Path, text: &str) -> String {
        std::fs::write(dir.join("file"), text).unwrap();
        git(dir, &["add", "-A"]);
        git(dir, &["commit", "-q", "-m", text]);
        git(dir, &["rev-parse", "HEAD"])
    }

    #[tokio::test]
    async fn channel_resolves_on_the_remote_and_moves_only_after_the_ttl() {
        let remote = tempfile::tempdir().unwrap();
        git(remote.path(), &["init", "-q", "-b", "nixos-test"]);
        let first = commit(remote.path(), "1");
        let url = format!("file://{}", remote.path().display());
        let resolver = |ttl| {
            Resolver::new(ResolverSettings {
                source: PackageSource::Channel("nixos-test".into()),
                embedded_hash: None,
                ttl,
                channel_remote: url.clone(),
            })
        };
        let long = resolver(Duration::from_secs(3600));
        let resolved = long.resolve("ignored").await.unwrap();
        assert_eq!(resolved.revision, Revision::Commit(first.clone()));
        assert_eq!(
            resolved.source,
            NixSource::Git {
                url: url.clone(),
                rev: first.clone(),
                reference: Some("refs/heads/nixos-test".into()),
            }
        );

        let second = commit(remote.path(), "2");
        assert_eq!(
            long.resolve("latest").await.unwrap().revision,
            Revision::Commit(first),
            "moved within the TTL"
        );
        let short = resolver(Duration::ZERO);
        assert_eq!(
            short.resolve("latest").await.unwrap().revision,
            Revision::Commit(second)
        );
        let missing = Resolver::new(ResolverSettings {
            source: PackageSource::Channel("nixos-none".into()),
            embedded_hash: None,
            ttl: Duration::ZERO,
            channel_remote: url.clone(),
        });
        assert!(matches!(
            missing.resolve("latest").await,
            Err(ResolveError::UnknownChannel(_))
        ));
    }

    #[tokio::test]
    async fn unreachable_remote_keeps_the_last_listing() {
        let remote = tempfile::tempdir().unwrap();
        git(remote.path(), &["init", "-q", "-b", "main"]);
        let first = commit(remote.path(), "1");
        let resolver = Resolver::new(ResolverSettings {
            source: PackageSource::Git(format!("file://{}", remote.path().display())),
            embedded_hash: None,
            ttl: Duration::ZERO,
            channel_remote: DEFAULT_CHANNEL_REMOTE.into(),
        });
        assert_eq!(
            resolver.resolve("main").await.unwrap().revision,
            Revision::Commit(first.clone())
        );
        std::fs::remove_dir_all(remote.path().join(".git")).unwrap();
        assert_eq!(
            resolver.resolve("main").await.unwrap().revision,
            Revision::Commit(first)
        );
    }

    #[test]
    fn fingerprint_changes_with_any_edit() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a.nix"), "1").unwrap();
        let first = fingerprint_tree(dir.path()).unwrap();
        assert_eq!(first, fingerprint_tree(dir.path()).unwrap());
        std::fs::write(dir.path().join("sub/a.nix"), "2").unwrap();
        let edited = fingerprint_tree(dir.path()).unwrap();
        assert_ne!(first, edited);
        std::fs::rename(dir.path().join("sub/a.nix"), dir.path().join("sub/b.nix")).unwrap();
        assert_ne!(edited, fingerprint_tree(dir.path()).unwrap());
    }
}
