//! Storage in a local directory (`STORAGE_PATH`).
//!
//! Layout: the object of key `<prefix>/<name>` is the file
//! `<root>/<prefix>/<name>`; its content type is kept in a JSON sidecar
//! `<root>/<prefix>/.meta~<name>` and, where the filesystem supports user
//! extended attributes, also in the attribute `user.mime_type` of the file,
//! where upstream Nixery keeps it (and which it needs to serve a blob).
//! Reading prefers a non-empty attribute, then the sidecar, so a directory
//! written by either server is served by the other. Files being written are
//! `<root>/<prefix>/.tmp~<random>`. Key names never start with `.` nor
//! contain `~`, so neither kind of helper file can be reached through a key.
//!
//! Crash safety: `persist` streams into a temporary file in the object's
//! directory while hashing, fsyncs it, writes the sidecar the same way,
//! renames the sidecar, fsyncs the directory, renames the object and fsyncs
//! the directory again. An object therefore appears under its key only when
//! complete, and a visible object always has its sidecar. A crash leaves at
//! most a `.tmp~<pid>-` file (removed at start-up and by
//! [`Storage::clean_staging`] once its process is gone or it is an hour
//! old) or a sidecar without object (harmless: the next persist replaces
//! it). A `persist` future that is dropped mid-write removes its temporary
//! file. Blobs ([`Storage::persist_blob`]) are written to a temporary file
//! in `layers/` and renamed to their digest: they need no staging object.
//!
//! Two concurrent `persist` calls on one key with different content types
//! may leave the content type of one with the bytes of the other; callers
//! serialise uploads per key (and layer keys are content addressed).

pub mod settings;

use std::{
    io,
    path::{Path, PathBuf},
};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

use crate::digest::Digest;

use super::{
    BUILDS_PREFIX, ByteStream, KeyPrefix, LAYERS_PREFIX, ListedObject, MANIFESTS_PREFIX, Persisted,
    REFERRERS_PREFIX, STAGING_PREFIX, ServeRequest, Served, Storage, StorageError, StorageKey,
    Version, file_body, staging,
};

/// Content type assumed for an object without a readable sidecar.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";
/// File name prefix of objects being written.
const TEMP_PREFIX: &str = ".tmp~";
/// File name prefix of content type sidecars.
const META_PREFIX: &str = ".meta~";
/// Extended attribute holding the content type, as upstream Nixery names it.
pub const CONTENT_TYPE_XATTR: &str = "user.mime_type";
/// Longest content type read from the extended attribute.
const MAX_XATTR_LEN: usize = 1024;
/// Every key prefix, each a directory under the root.
const PREFIXES: [&str; 7] = [
    LAYERS_PREFIX,
    BUILDS_PREFIX,
    MANIFESTS_PREFIX,
    STAGING_PREFIX,
    REFERRERS_PREFIX,
    super::USES_PREFIX,
    super::GC_PREFIX,
];

/// The storage directory could not be prepared.
#[derive(Debug, thiserror::Error)]
#[error("cannot prepare storage directory {path}: {source}")]
pub struct InitError {
    /// The directory that failed.
    pub path: PathBuf,
    #[source]
    source: io::Error,
}

/// A [`Storage`] backend keeping objects as files under a root directory.
#[derive(Clone, Debug)]
pub struct FilesystemStorage {
    root: PathBuf,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Meta {
    content_type: String,
}

impl FilesystemStorage {
    /// Use `root`, creating it and its prefix directories if needed and
    /// removing what crashed uploads left (see [`Self::sweep`]). Blocking:
    /// call it from a blocking context.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, InitError> {
        let root = root.into();
        for prefix in PREFIXES {
            let dir = root.join(prefix);
            std::fs::create_dir_all(&dir).map_err(|source| InitError {
                path: dir.clone(),
                source,
            })?;
        }
        let storage = Self { root };
        storage
            .sweep(staging::STAGING_MAX_AGE)
            .map_err(|source| InitError {
                path: storage.root.clone(),
                source,
            })?;
        Ok(storage)
    }

    /// Remove temporary files and staged objects whose owner process is
    /// gone or that are older than `max_age` (by modification time for
    /// temporary files, which a live upload keeps touching; by the time in
    /// the name for staged objects). Blocking. Returns how many went.
    fn sweep(&self, max_age: std::time::Duration) -> io::Result<usize> {
        let mut removed = 0;
        for prefix in PREFIXES {
            let dir = self.root.join(prefix);
            for entry in std::fs::read_dir(&dir)?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = entry.path();
                let stale = if let Some(rest) = name.strip_prefix(TEMP_PREFIX) {
                    let owner_alive = rest
                        .split('-')
                        .next()
                        .and_then(|pid| pid.parse().ok())
                        .is_some_and(staging::process_alive);
                    let modified = entry.metadata().and_then(|m| m.modified()).ok();
                    !owner_alive || modified.is_some_and(|t| staging::is_stale(t, max_age))
                } else if prefix == STAGING_PREFIX && !name.starts_with('.') {
                    match staging::parse_name(&name) {
                        Some((pid, created)) => {
                            !staging::process_alive(pid) || staging::is_stale(created, max_age)
                        }
                        // Not a name this server gives: only its age counts.
                        None => entry
                            .metadata()
                            .and_then(|m| m.modified())
                            .is_ok_and(|t| staging::is_stale(t, max_age)),
                    }
                } else {
                    false
                };
                if !stale {
                    continue;
                }
                match std::fs::remove_file(&path) {
                    Ok(()) => {
                        removed += 1;
                        tracing::info!(path = %path.display(), "removed stale upload file");
                        if !name.starts_with('.') {
                            let _ = std::fs::remove_file(dir.join(format!("{META_PREFIX}{name}")));
                        }
                    }
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                    Err(error) => {
                        tracing::warn!(path = %path.display(), error = %error, "cannot remove stale upload file")
                    }
                }
            }
        }
        Ok(removed)
    }

    /// Stream `body` into a temporary file in `dir` while hashing it, then
    /// make it visible under `key`, or under `layers/<sha256>` when `key` is
    /// `None` (`dir` must then be the layers directory). See the module
    /// documentation for the order of writes, renames and syncs.
    async fn write(
        &self,
        dir: &Path,
        key: Option<&StorageKey>,
        content_type: &str,
        mut body: ByteStream,
    ) -> Result<Persisted, StorageError> {
        // Until the digest is known, errors name the upload.
        let upload = StorageKey(format!("{STAGING_PREFIX}/{}", staging::unique_name()));
        let io_err = |source: io::Error| StorageError::Io {
            key: key.unwrap_or(&upload).clone(),
            source,
        };
        let (mut file, temp) = temp_file_in(dir).await.map_err(io_err)?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(io_err)?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(io_err)?;
        }
        file.flush().await.map_err(io_err)?;
        // The attribute is set on the temporary file, so it travels with the
        // rename; then the data is synced.
        let file = file.into_std().await;
        let content_type_owned = content_type.to_owned();
        tokio::task::spawn_blocking(move || {
            write_content_type_xattr(&file, &content_type_owned);
            file.sync_all()
        })
        .await
        .map_err(|e| io_err(io::Error::other(e)))?
        .map_err(io_err)?;
        let sha256 = Digest::from_hasher(hasher);
        let key = match key {
            Some(key) => key.clone(),
            None => StorageKey::layer(&sha256),
        };

        let meta = serde_json::to_vec(&Meta {
            content_type: content_type.to_owned(),
        })
        .map_err(|e| io_err(io::Error::other(e)))?;
        let (mut meta_file, meta_temp) = temp_file_in(dir).await.map_err(io_err)?;
        meta_file.write_all(&meta).await.map_err(io_err)?;
        meta_file.flush().await.map_err(io_err)?;
        meta_file.sync_all().await.map_err(io_err)?;
        drop(meta_file);
        commit(meta_temp, &self.meta_path(&key))
            .await
            .map_err(io_err)?;
        sync_dir(dir).await.map_err(io_err)?;

        commit(temp, &self.object_path(&key))
            .await
            .map_err(io_err)?;
        sync_dir(dir).await.map_err(io_err)?;
        Ok(Persisted { sha256, size })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of the object stored under `key`.
    pub fn object_path(&self, key: &StorageKey) -> PathBuf {
        self.root.join(key.as_str())
    }

    fn meta_path(&self, key: &StorageKey) -> PathBuf {
        let (prefix, name) = key.as_str().split_once('/').unwrap_or(("", key.as_str()));
        self.root.join(prefix).join(format!("{META_PREFIX}{name}"))
    }

    fn dir_of(&self, key: &StorageKey) -> PathBuf {
        let path = self.object_path(key);
        path.parent()
            .map_or_else(|| self.root.clone(), Path::to_path_buf)
    }

    async fn content_type(&self, key: &StorageKey) -> String {
        let (path, meta) = (self.object_path(key), self.meta_path(key));
        tokio::task::spawn_blocking(move || content_type_of(&path, &meta))
            .await
            .unwrap_or_else(|_| DEFAULT_CONTENT_TYPE.to_owned())
    }

    /// Write `bytes` to a temporary file and hard-link it to `key`, which
    /// fails when the key exists: an atomic "create if absent". Blocking.
    fn create_new_blocking(
        &self,
        key: &StorageKey,
        content_type: &str,
        bytes: &[u8],
    ) -> io::Result<bool> {
        use std::io::Write as _;
        let dir = self.dir_of(key);
        let mut temp = tempfile::Builder::new()
            .prefix(&format!("{TEMP_PREFIX}{}-", std::process::id()))
            .tempfile_in(&dir)?;
        temp.write_all(bytes)?;
        write_content_type_xattr(temp.as_file(), content_type);
        temp.as_file().sync_all()?;
        match std::fs::hard_link(temp.path(), self.object_path(key)) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(error) => return Err(error),
        }
        // The sidecar follows the object here (the attribute already names
        // the type); these objects are small control objects.
        let meta = serde_json::to_vec(&Meta {
            content_type: content_type.to_owned(),
        })
        .map_err(io::Error::other)?;
        std::fs::write(self.meta_path(key), meta)?;
        std::fs::File::open(&dir)?.sync_all()?;
        Ok(true)
    }

    /// Replace the object at `key` with `bytes` only if its content hashes
    /// to `expected` (absent: see [`Self::create_new_blocking`]). The
    /// check and the rename happen under an exclusive `flock` of the
    /// helper file `.cas-<name>` beside it, which every conditional writer
    /// of the key takes; readers need no lock, since a rename is atomic.
    /// Blocking.
    fn replace_if_blocking(
        &self,
        key: &StorageKey,
        content_type: &str,
        bytes: &[u8],
        expected: &Version,
    ) -> io::Result<Option<Version>> {
        use std::io::Write as _;
        use std::os::fd::AsRawFd as _;
        let dir = self.dir_of(key);
        let guard = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!(".cas-{}", key.name())))?;
        // SAFETY: flock on a descriptor this function owns; released when
        // `guard` is closed.
        if unsafe { libc::flock(guard.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let current = match std::fs::read(self.object_path(key)) {
            Ok(current) => current,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        if content_version(&current) != *expected {
            return Ok(None);
        }
        let mut temp = tempfile::Builder::new()
            .prefix(&format!("{TEMP_PREFIX}{}-", std::process::id()))
            .tempfile_in(&dir)?;
        temp.write_all(bytes)?;
        write_content_type_xattr(temp.as_file(), content_type);
        temp.as_file().sync_all()?;
        temp.persist(self.object_path(key))
            .map_err(|error| error.error)?;
        std::fs::File::open(&dir)?.sync_all()?;
        drop(guard);
        Ok(Some(content_version(bytes)))
    }

    /// Open the object as a regular file with its length (one hop to the
    /// blocking pool for both).
    async fn open(&self, key: &StorageKey) -> Result<(std::fs::File, u64), StorageError> {
        let io_err = |source: io::Error| {
            if source.kind() == io::ErrorKind::NotFound {
                StorageError::NotFound(key.clone())
            } else {
                StorageError::Io {
                    key: key.clone(),
                    source,
                }
            }
        };
        let path = self.object_path(key);
        let opened = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(path)?;
            let meta = file.metadata()?;
            Ok::<_, io::Error>((file, meta))
        })
        .await
        .map_err(|join_error| io_err(io::Error::other(join_error)))?;
        let (file, meta) = opened.map_err(io_err)?;
        if !meta.is_file() {
            return Err(StorageError::NotFound(key.clone()));
        }
        Ok((file, meta.len()))
    }
}

/// The filesystem's [`Version`] of an object: the SHA-256 of its bytes.
fn content_version(bytes: &[u8]) -> Version {
    Version(Digest::of(bytes).hex())
}

/// The content type of the object at `path` with sidecar `meta`: the
/// attribute, else the sidecar, else [`DEFAULT_CONTENT_TYPE`]. Blocking.
fn content_type_of(path: &Path, meta: &Path) -> String {
    if let Some(content_type) = read_content_type_xattr(path) {
        return content_type;
    }
    std::fs::read(meta)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Meta>(&bytes).ok())
        .map_or_else(|| DEFAULT_CONTENT_TYPE.to_owned(), |m| m.content_type)
}

/// The content type in the object's `user.mime_type` attribute, if it is
/// set, non-empty, short and UTF-8 (upstream sets it empty on build records).
fn read_content_type_xattr(path: &Path) -> Option<String> {
    let value = xattr::get(path, CONTENT_TYPE_XATTR).ok().flatten()?;
    if value.is_empty() || value.len() > MAX_XATTR_LEN {
        return None;
    }
    let text = String::from_utf8(value).ok()?;
    // A header value cannot hold control characters.
    (!text.chars().any(char::is_control)).then_some(text)
}

/// Set `user.mime_type` on `file` for upstream Nixery. Filesystems without
/// user attributes (tmpfs before Linux 6.6, some overlays) refuse it; the
/// sidecar still records the type, so a failure is only logged.
fn write_content_type_xattr(file: &std::fs::File, content_type: &str) {
    use xattr::FileExt as _;
    if let Err(error) = file.set_xattr(CONTENT_TYPE_XATTR, content_type.as_bytes()) {
        tracing::debug!(error = %error, "content type not stored as an extended attribute");
    }
}

/// A temporary file in `dir`, named after this process (so that clean-up
/// can tell a live upload from a crashed one), deleted when dropped unless
/// renamed. Created off the async workers.
async fn temp_file_in(dir: &Path) -> io::Result<(tokio::fs::File, tempfile::TempPath)> {
    use std::os::unix::fs::PermissionsExt;
    let dir = dir.to_path_buf();
    let (file, path) = tokio::task::spawn_blocking(move || {
        tempfile::Builder::new()
            .prefix(&format!("{TEMP_PREFIX}{}-", std::process::id()))
            .permissions(std::fs::Permissions::from_mode(0o644))
            .tempfile_in(dir)
            .map(tempfile::NamedTempFile::into_parts)
    })
    .await
    .map_err(io::Error::other)??;
    Ok((tokio::fs::File::from_std(file), path))
}

/// Make a rename or file creation in `dir` durable.
async fn sync_dir(dir: &Path) -> io::Result<()> {
    tokio::fs::File::open(dir).await?.sync_all().await
}

/// Rename the temporary file to `to`; afterwards it no longer needs removal.
async fn commit(temp: tempfile::TempPath, to: &Path) -> io::Result<()> {
    tokio::fs::rename(&temp, to).await?;
    // The temporary name is gone: keep() only disarms the deletion on drop.
    let _ = temp.keep();
    Ok(())
}

/// The next page of `dir`'s listing under `prefix`: up to `page_size`
/// regular files whose names are valid keys there, read from `entries`
/// (opened on the first page); `None` for the reader once it is done.
/// Blocking.
fn list_page(
    dir: &Path,
    entries: Option<std::fs::ReadDir>,
    prefix: KeyPrefix,
    page_size: usize,
) -> io::Result<(Vec<ListedObject>, Option<std::fs::ReadDir>)> {
    let mut entries = match entries {
        Some(entries) => entries,
        None => std::fs::read_dir(dir)?,
    };
    let mut listed = Vec::new();
    while listed.len() < page_size.max(1) {
        let Some(entry) = entries.next() else {
            return Ok((listed, None));
        };
        let entry = entry?;
        let Some(key) = entry
            .file_name()
            .to_str()
            .and_then(|name| StorageKey::under(prefix, name).ok())
        else {
            continue;
        };
        let metadata = match entry.metadata() {
            Ok(metadata) if metadata.is_file() => metadata,
            Ok(_) => continue,
            // Removed since the directory was read.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let path = entry.path();
        let meta_path = dir.join(format!("{META_PREFIX}{}", key.name()));
        listed.push(ListedObject {
            content_type: Some(content_type_of(&path, &meta_path)),
            key,
            size: metadata.len(),
            modified: metadata.modified().ok(),
        });
    }
    Ok((listed, Some(entries)))
}

#[async_trait]
impl Storage for FilesystemStorage {
    fn name(&self) -> &'static str {
        "filesystem"
    }

    async fn persist(
        &self,
        key: &StorageKey,
        content_type: &str,
        body: ByteStream,
    ) -> Result<Persisted, StorageError> {
        self.write(&self.dir_of(key), Some(key), content_type, body)
            .await
    }

    /// Written to a temporary file in `layers/` and renamed to its digest:
    /// no staging object, nothing to move.
    async fn persist_blob(
        &self,
        content_type: &str,
        body: ByteStream,
    ) -> Result<Persisted, StorageError> {
        let dir = self.root.join(LAYERS_PREFIX);
        self.write(&dir, None, content_type, body).await
    }

    async fn clean_staging(&self, max_age: std::time::Duration) -> Result<usize, StorageError> {
        let this = self.clone();
        let swept = tokio::task::spawn_blocking(move || this.sweep(max_age))
            .await
            .map_err(io::Error::other)
            .and_then(|result| result);
        swept.map_err(|source| StorageError::Io {
            key: StorageKey(STAGING_PREFIX.to_owned()),
            source,
        })
    }

    /// Files of the prefix directory whose name is a valid key name: the
    /// sidecars and temporary files (names starting with `.`) are left out.
    /// One `readdir` stream, `page_size` entries at a time off the async
    /// workers.
    fn list_pages(&self, prefix: KeyPrefix, page_size: usize) -> super::Pages<'_> {
        let dir = self.root.join(prefix.as_str());
        // `None`: done; `Some(None)`: not opened yet.
        let start: Option<Option<std::fs::ReadDir>> = Some(None);
        futures::stream::try_unfold(start, move |state| {
            let dir = dir.clone();
            async move {
                let Some(entries) = state else {
                    return Ok(None);
                };
                let page = tokio::task::spawn_blocking(move || {
                    list_page(&dir, entries, prefix, page_size)
                })
                .await
                .map_err(io::Error::other)
                .and_then(|result| result);
                let (page, rest) = page.map_err(|source| StorageError::Io {
                    key: StorageKey(prefix.as_str().to_owned()),
                    source,
                })?;
                if page.is_empty() && rest.is_none() {
                    return Ok(None);
                }
                Ok(Some((page, rest.map(Some))))
            }
        })
        .boxed()
    }

    async fn stat(&self, key: &StorageKey) -> Result<ListedObject, StorageError> {
        let (path, meta_path) = (self.object_path(key), self.meta_path(key));
        let owned = key.clone();
        let found = tokio::task::spawn_blocking(move || {
            let metadata = std::fs::metadata(&path)?;
            if !metadata.is_file() {
                return Err(io::Error::new(io::ErrorKind::NotFound, "not a file"));
            }
            Ok(ListedObject {
                key: owned,
                size: metadata.len(),
                modified: metadata.modified().ok(),
                content_type: Some(content_type_of(&path, &meta_path)),
            })
        })
        .await
        .map_err(io::Error::other)
        .and_then(|found| found);
        match found {
            Ok(found) => Ok(found),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StorageError::NotFound(key.clone()))
            }
            Err(source) => Err(StorageError::Io {
                key: key.clone(),
                source,
            }),
        }
    }

    async fn create_new(
        &self,
        key: &StorageKey,
        content_type: &str,
        bytes: Bytes,
    ) -> Result<bool, StorageError> {
        let this = self.clone();
        let (owned, content_type) = (key.clone(), content_type.to_owned());
        tokio::task::spawn_blocking(move || this.create_new_blocking(&owned, &content_type, &bytes))
            .await
            .map_err(io::Error::other)
            .and_then(|created| created)
            .map_err(|source| StorageError::Io {
                key: key.clone(),
                source,
            })
    }

    async fn read_versioned(
        &self,
        key: &StorageKey,
        limit: usize,
    ) -> Result<Option<(Bytes, Version)>, StorageError> {
        let stream = match self.fetch(key).await {
            Ok(stream) => stream,
            Err(StorageError::NotFound(_)) => return Ok(None),
            Err(error) => return Err(error),
        };
        let bytes = super::small_object::read_bounded(stream, limit)
            .await
            .map_err(|source| StorageError::Io {
                key: key.clone(),
                source,
            })?;
        let version = content_version(&bytes);
        Ok(Some((bytes, version)))
    }

    async fn write_if(
        &self,
        key: &StorageKey,
        content_type: &str,
        bytes: Bytes,
        expected: Option<&Version>,
    ) -> Result<Option<Version>, StorageError> {
        let Some(expected) = expected.cloned() else {
            let version = content_version(&bytes);
            return Ok(self
                .create_new(key, content_type, bytes)
                .await?
                .then_some(version));
        };
        let this = self.clone();
        let (owned, content_type) = (key.clone(), content_type.to_owned());
        tokio::task::spawn_blocking(move || {
            this.replace_if_blocking(&owned, &content_type, &bytes, &expected)
        })
        .await
        .map_err(io::Error::other)
        .and_then(|written| written)
        .map_err(|source| StorageError::Io {
            key: key.clone(),
            source,
        })
    }

    /// The object goes first, then its sidecar, so a visible object always
    /// has its content type.
    async fn delete(&self, key: &StorageKey) -> Result<(), StorageError> {
        for path in [self.object_path(key), self.meta_path(key)] {
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(StorageError::Io {
                        key: key.clone(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    async fn fetch(&self, key: &StorageKey) -> Result<ByteStream, StorageError> {
        let (file, _) = self.open(key).await?;
        Ok(Box::pin(ReaderStream::new(tokio::fs::File::from_std(file))))
    }

    async fn move_object(&self, from: &StorageKey, to: &StorageKey) -> Result<(), StorageError> {
        let io_err = |source: io::Error| StorageError::Io {
            key: from.clone(),
            source,
        };
        // Sidecar first, so that the object is never visible under `to`
        // without its content type.
        match tokio::fs::rename(self.meta_path(from), self.meta_path(to)).await {
            Ok(()) => sync_dir(&self.dir_of(to)).await.map_err(io_err)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
        match tokio::fs::rename(self.object_path(from), self.object_path(to)).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // A retried move whose first attempt completed.
                return match tokio::fs::metadata(self.object_path(to)).await {
                    Ok(m) if m.is_file() => Ok(()),
                    _ => Err(StorageError::NotFound(from.clone())),
                };
            }
            Err(e) => return Err(io_err(e)),
        }
        sync_dir(&self.dir_of(to)).await.map_err(io_err)?;
        if self.dir_of(from) != self.dir_of(to) {
            sync_dir(&self.dir_of(from)).await.map_err(io_err)?;
        }
        Ok(())
    }

    async fn serve(
        &self,
        key: &StorageKey,
        request: &ServeRequest,
    ) -> Result<Served, StorageError> {
        let (file, total_len) = self.open(key).await?;
        let content_type = self.content_type(key).await;
        if !request.admits(Some(&content_type)) {
            return Err(StorageError::NotFound(key.clone()));
        }
        let range = match request.resolve_range(total_len) {
            Ok(range) => range,
            Err(unsatisfiable) => return Ok(unsatisfiable),
        };
        let body = if request.head {
            None
        } else {
            let (start, end) = range.unwrap_or((0, total_len.saturating_sub(1)));
            let len = if total_len == 0 { 0 } else { end - start + 1 };
            Some(file_body::stream_region(file, start, len))
        };
        Ok(Served::Content {
            body,
            total_len,
            range,
            content_type,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::ByteRange;
    use bytes::Bytes;

    /// A filesystem store in a fresh temporary directory (kept alive by
    /// the first value).
    pub(super) fn store() -> (tempfile::TempDir, FilesystemStorage) {
        let dir = tempfile::tempdir().unwrap();
        let fs = FilesystemStorage::new(dir.path()).unwrap();
        (dir, fs)
    }

    fn stream_of(chunks: &[&'static [u8]]) -> ByteStream {
        let items: Vec<io::Result<Bytes>> =
            chunks.iter().map(|c| Ok(Bytes::from_static(c))).collect();
        Box::pin(futures::stream::iter(items))
    }

    async fn collect(mut s: ByteStream) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c.unwrap());
        }
        out
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn persist_streams_hashes_and_fetch_returns_the_bytes() {
        let (dir, fs) = store();
        let key = StorageKey::build("k1").unwrap();
        let p = fs
            .persist(&key, "application/json", stream_of(&[b"hello ", b"world"]))
            .await
            .unwrap();
        assert_eq!(p.size, 11);
        assert_eq!(p.sha256, Digest::of(b"hello world"));
        assert_eq!(collect(fs.fetch(&key).await.unwrap()).await, b"hello world");
        // Only the object and its sidecar remain: no temporary files.
        assert_eq!(names_in(&dir.path().join("builds")), [".meta~k1", "k1"]);
    }

    #[tokio::test]
    async fn fetch_of_absent_key_is_not_found() {
        let (_dir, fs) = store();
        let key = StorageKey::manifest("nope").unwrap();
        assert!(matches!(
            fs.fetch(&key).await,
            Err(StorageError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn failing_body_leaves_nothing_under_the_key() {
        let (dir, fs) = store();
        let key = StorageKey::staging("up").unwrap();
        let items: Vec<io::Result<Bytes>> = vec![
            Ok(Bytes::from_static(b"partial")),
            Err(io::Error::other("client went away")),
        ];
        let err = fs
            .persist(&key, "x/y", Box::pin(futures::stream::iter(items)))
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::Io { .. }));
        assert!(names_in(&dir.path().join("staging")).is_empty());
    }

    #[tokio::test]
    async fn stale_temporary_files_are_removed_at_start_up() {
        let dir = tempfile::tempdir().unwrap();
        FilesystemStorage::new(dir.path()).unwrap();
        let stale = dir.path().join("layers").join(".tmp~abc123");
        std::fs::write(&stale, b"half").unwrap();
        FilesystemStorage::new(dir.path()).unwrap();
        assert!(!stale.exists());
    }

    #[tokio::test]
    async fn move_carries_content_type_and_is_retry_safe() {
        let (_dir, fs) = store();
        let from = StorageKey::staging("s1").unwrap();
        let to = StorageKey::layer(&Digest::of(b"blob"));
        fs.persist(&from, "application/x-test", stream_of(&[b"blob"]))
            .await
            .unwrap();
        fs.move_object(&from, &to).await.unwrap();
        fs.move_object(&from, &to).await.unwrap();
        assert!(matches!(
            fs.fetch(&from).await,
            Err(StorageError::NotFound(_))
        ));
        match fs.serve(&to, &ServeRequest::default()).await.unwrap() {
            Served::Content { content_type, .. } => assert_eq!(content_type, "application/x-test"),
            _ => panic!("expected content"),
        }
        let missing = StorageKey::staging("never").unwrap();
        let other = StorageKey::staging("other").unwrap();
        assert!(matches!(
            fs.move_object(&missing, &other).await,
            Err(StorageError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn serve_resolves_ranges_against_the_length() {
        let (_dir, fs) = store();
        let key = StorageKey::build("r").unwrap();
        fs.persist(&key, "text/plain", stream_of(&[b"0123456789"]))
            .await
            .unwrap();
        let req = |range| ServeRequest {
            range,
            ..ServeRequest::default()
        };
        let cases = [
            (
                ByteRange::From {
                    start: 2,
                    end: Some(4),
                },
                (2, 4),
                &b"234"[..],
            ),
            (
                ByteRange::From {
                    start: 7,
                    end: None,
                },
                (7, 9),
                b"789",
            ),
            (
                ByteRange::From {
                    start: 8,
                    end: Some(99),
                },
                (8, 9),
                b"89",
            ),
            (ByteRange::Suffix(3), (7, 9), b"789"),
            (ByteRange::Suffix(50), (0, 9), b"0123456789"),
        ];
        for (range, expected, bytes) in cases {
            match fs.serve(&key, &req(Some(range))).await.unwrap() {
                Served::Content {
                    body: Some(body),
                    total_len: 10,
                    range: Some(r),
                    ..
                } => {
                    assert_eq!(r, expected, "{range:?}");
                    assert_eq!(collect(body).await, bytes, "{range:?}");
                }
                _ => panic!("expected a partial body for {range:?}"),
            }
        }
        for range in [
            ByteRange::From {
                start: 10,
                end: None,
            },
            ByteRange::Suffix(0),
        ] {
            assert!(matches!(
                fs.serve(&key, &req(Some(range))).await.unwrap(),
                Served::RangeNotSatisfiable { total_len: 10 }
            ));
        }
        match fs
            .serve(
                &key,
                &ServeRequest {
                    head: true,
                    ..ServeRequest::default()
                },
            )
            .await
            .unwrap()
        {
            Served::Content {
                body: None,
                total_len: 10,
                range: None,
                content_type,
            } => assert_eq!(content_type, "text/plain"),
            _ => panic!("expected headers only"),
        }
    }

    #[tokio::test]
    async fn an_empty_object_is_served_with_an_empty_body() {
        let (_dir, fs) = store();
        let key = StorageKey::build("empty").unwrap();
        fs.persist(&key, "text/plain", stream_of(&[]))
            .await
            .unwrap();
        match fs.serve(&key, &ServeRequest::default()).await.unwrap() {
            Served::Content {
                body: Some(body),
                total_len: 0,
                range: None,
                ..
            } => assert!(collect(body).await.is_empty()),
            _ => panic!("expected an empty body"),
        }
    }

    async fn served_type(fs: &FilesystemStorage, key: &StorageKey) -> String {
        match fs.serve(key, &ServeRequest::default()).await.unwrap() {
            Served::Content { content_type, .. } => content_type,
            _ => panic!("expected content"),
        }
    }

    /// Whether the filesystem of `dir` keeps user extended attributes.
    fn supports_xattrs(dir: &Path) -> bool {
        let probe = dir.join("probe");
        std::fs::write(&probe, b"").unwrap();
        let ok = xattr::set(&probe, CONTENT_TYPE_XATTR, b"x").is_ok();
        std::fs::remove_file(probe).unwrap();
        ok
    }

    /// A store in a directory with user extended attributes, or `None`
    /// (having printed SKIPPED) where the temporary directory has none.
    fn store_with_xattrs() -> Option<(tempfile::TempDir, FilesystemStorage)> {
        let (dir, fs) = store();
        if supports_xattrs(dir.path()) {
            Some((dir, fs))
        } else {
            eprintln!("SKIPPED: the temporary directory has no user extended attributes");
            None
        }
    }

    #[tokio::test]
    async fn persisted_and_moved_objects_carry_the_upstream_attribute() {
        let Some((dir, fs)) = store_with_xattrs() else {
            return;
        };
        let from = StorageKey::staging("x1").unwrap();
        let hex = Digest::of(b"layer").hex();
        let to = StorageKey::layer(&Digest::of(b"layer"));
        fs.persist(&from, "application/x-layer", stream_of(&[b"layer"]))
            .await
            .unwrap();
        fs.move_object(&from, &to).await.unwrap();
        let path = fs.object_path(&to);
        assert_eq!(
            xattr::get(&path, CONTENT_TYPE_XATTR).unwrap().as_deref(),
            Some(&b"application/x-layer"[..])
        );
        // The sidecar is kept for filesystems without attributes.
        assert!(
            dir.path()
                .join("layers")
                .join(format!(".meta~{hex}"))
                .exists()
        );
    }

    #[tokio::test]
    async fn content_type_comes_from_the_attribute_or_else_the_sidecar() {
        let Some((_dir, fs)) = store_with_xattrs() else {
            return;
        };
        // Written by upstream: a plain file with the attribute, no sidecar.
        let upstream = StorageKey::layer(&Digest::parse_hex(&"1".repeat(64)).unwrap());
        std::fs::write(fs.object_path(&upstream), b"blob").unwrap();
        xattr::set(
            fs.object_path(&upstream),
            CONTENT_TYPE_XATTR,
            b"application/x-up",
        )
        .unwrap();
        assert_eq!(served_type(&fs, &upstream).await, "application/x-up");
        // Upstream sets the attribute empty on build records: not a type.
        let record = StorageKey::build("k").unwrap();
        std::fs::write(fs.object_path(&record), b"{}").unwrap();
        xattr::set(fs.object_path(&record), CONTENT_TYPE_XATTR, b"").unwrap();
        assert_eq!(served_type(&fs, &record).await, DEFAULT_CONTENT_TYPE);
        // Written here on a filesystem without attributes: the sidecar.
        let sidecar_only = StorageKey::build("s").unwrap();
        fs.persist(&sidecar_only, "text/x-side", stream_of(&[b"s"]))
            .await
            .unwrap();
        xattr::remove(fs.object_path(&sidecar_only), CONTENT_TYPE_XATTR).unwrap();
        assert_eq!(served_type(&fs, &sidecar_only).await, "text/x-side");
        // An attribute no header could carry is ignored.
        xattr::set(fs.object_path(&sidecar_only), CONTENT_TYPE_XATTR, b"a\nb").unwrap();
        assert_eq!(served_type(&fs, &sidecar_only).await, "text/x-side");
    }

    #[test]
    fn empty_objects_satisfy_no_range() {
        assert_eq!(
            ByteRange::From {
                start: 0,
                end: None
            }
            .resolve(0),
            None
        );
        assert_eq!(ByteRange::Suffix(1).resolve(0), None);
    }
}

#[cfg(test)]
mod staging_tests {
    use super::tests::store;
    use super::*;
    use bytes::Bytes;
    use std::time::{Duration, SystemTime};

    /// A process id that no longer runs.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    fn touch(path: &Path, age: Duration) {
        let file = std::fs::File::create(path).unwrap();
        file.set_modified(SystemTime::now() - age).unwrap();
    }

    #[tokio::test]
    async fn clean_up_removes_what_dead_or_old_uploads_left_and_keeps_live_ones() {
        let (dir, fs) = store();
        let me = std::process::id();
        let dead = dead_pid();
        let layers = dir.path().join(LAYERS_PREFIX);
        let staging_dir = dir.path().join(STAGING_PREFIX);
        let nanos = |age: Duration| {
            (SystemTime::now() - age)
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        };
        let hour = Duration::from_secs(3600);
        let removed = [
            layers.join(format!(".tmp~{dead}-abc")),
            layers.join(format!(".tmp~{me}-old")),
            layers.join(".tmp~noowner"),
            staging_dir.join(format!("{dead}-{}-0", nanos(Duration::ZERO))),
            staging_dir.join(format!("{me}-{}-1", nanos(2 * hour))),
        ];
        let kept = [
            layers.join(format!(".tmp~{me}-live")),
            staging_dir.join(format!("{me}-{}-2", nanos(Duration::ZERO))),
            layers.join("a".repeat(64)),
            staging_dir.join("not-a-staging-name"),
        ];
        for path in &removed {
            let age = if path.ends_with(format!(".tmp~{me}-old")) {
                2 * hour
            } else {
                Duration::ZERO
            };
            touch(path, age);
        }
        for path in &kept {
            touch(path, Duration::ZERO);
        }

        let count = fs.clean_staging(hour).await.unwrap();

        assert_eq!(count, removed.len());
        for path in &removed {
            assert!(!path.exists(), "{} survived", path.display());
        }
        for path in &kept {
            assert!(path.exists(), "{} was removed", path.display());
        }
    }

    #[tokio::test]
    async fn an_upload_in_progress_survives_clean_up_and_completes() {
        let (dir, fs) = store();
        let (sender, receiver) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(1);
        let body: ByteStream = Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver));
        let upload = tokio::spawn({
            let fs = fs.clone();
            async move { fs.persist_blob("application/octet-stream", body).await }
        });
        sender
            .send(Ok(Bytes::from_static(b"first ")))
            .await
            .unwrap();
        // Wait for the temporary file to exist.
        let layers = dir.path().join(LAYERS_PREFIX);
        for _ in 0..200 {
            if std::fs::read_dir(&layers).unwrap().next().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        fs.clean_staging(staging::STAGING_MAX_AGE).await.unwrap();
        // A restart of another instance on the same directory sweeps too.
        FilesystemStorage::new(dir.path()).unwrap();

        sender
            .send(Ok(Bytes::from_static(b"second")))
            .await
            .unwrap();
        drop(sender);
        let persisted = upload.await.unwrap().unwrap();
        assert_eq!(persisted.sha256, Digest::of(b"first second"));
        let key = StorageKey::layer(&persisted.sha256);
        assert!(fs.object_path(&key).is_file());
    }
}
