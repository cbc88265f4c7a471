//! Where blobs, build records and manifests live.
//!
//! The [`Storage`] trait knows nothing about HTTP or image names: it stores
//! byte streams under validated [`StorageKey`]s and, when asked to serve a
//! blob, answers with a [`Served`] value that the HTTP layer turns into a
//! response (a redirect, or a stream with a length and a content type).

pub mod file_body;
pub mod filesystem;
pub mod gcs;
pub mod retry_policy;
pub mod s3;
pub mod settings;
pub mod signed_urls;
pub mod small_object;
pub mod staging;

use std::{
    fmt, io,
    pin::Pin,
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{Stream, TryStreamExt, stream::BoxStream};

use crate::digest::Digest;

/// A stream of bytes flowing into or out of storage.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send + 'static>>;

/// A listing delivered page by page ([`Storage::list_pages`]): each item
/// is one page, fetched only when the stream is polled for it, so a
/// listing of any size is held in memory one page at a time.
pub type Pages<'a> = BoxStream<'a, Result<Vec<ListedObject>, StorageError>>;

/// Objects per page of a listing, unless a caller asks otherwise: S3's
/// own maximum for `ListObjectsV2`, GCS's default.
pub const LIST_PAGE_SIZE: usize = 1000;

/// Prefix of content-addressed blobs (layers, configs, manifests).
pub const LAYERS_PREFIX: &str = "layers";
/// Prefix of layer build records (JSON), keyed by layer cache key.
pub const BUILDS_PREFIX: &str = "builds";
/// Prefix of cached manifests, keyed by manifest cache key.
pub const MANIFESTS_PREFIX: &str = "manifests";
/// Prefix of objects that are still being uploaded.
pub const STAGING_PREFIX: &str = "staging";
/// Prefix of referrers lists (OCI image indexes of the artifacts, such as
/// SBOMs, that refer to a manifest), keyed by the manifest's hex SHA-256.
pub const REFERRERS_PREFIX: &str = "referrers";
/// Prefix of use marks, keyed by manifest digest (see [`crate::gc`]).
pub const USES_PREFIX: &str = "uses";
/// Prefix of the garbage collector's own objects (lock, generation).
pub const GC_PREFIX: &str = "gc";

/// One of the key prefixes, for listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyPrefix {
    /// `layers/`: content-addressed blobs.
    Layers,
    /// `builds/`: layer build records.
    Builds,
    /// `manifests/`: cached manifests.
    Manifests,
    /// `staging/`: uploads not yet moved to their final key.
    Staging,
    /// `referrers/`: referrers lists, keyed by a manifest's digest.
    Referrers,
    /// `uses/`: use marks, keyed by a manifest's digest.
    Uses,
    /// `gc/`: the collection lock and generation.
    Gc,
}

impl KeyPrefix {
    /// The prefix without its trailing `/`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyPrefix::Layers => LAYERS_PREFIX,
            KeyPrefix::Builds => BUILDS_PREFIX,
            KeyPrefix::Manifests => MANIFESTS_PREFIX,
            KeyPrefix::Staging => STAGING_PREFIX,
            KeyPrefix::Referrers => REFERRERS_PREFIX,
            KeyPrefix::Uses => USES_PREFIX,
            KeyPrefix::Gc => GC_PREFIX,
        }
    }
}

/// A storage key: `<prefix>/<name>` where the prefix is one of the
/// [`KeyPrefix`]es and the name is made only of `[A-Za-z0-9_.-]`, does not
/// start with a dot and is at most 128 characters long. Keys therefore can
/// never name a path outside a backend's root.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorageKey(String);

/// A name that cannot be used in a [`StorageKey`].
#[derive(Debug, thiserror::Error)]
#[error("invalid storage key name {0:?}")]
pub struct InvalidKey(pub String);

impl StorageKey {
    fn new(prefix: &str, name: &str) -> Result<Self, InvalidKey> {
        let valid = !name.is_empty()
            && name.len() <= 128
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if valid {
            Ok(Self(format!("{prefix}/{name}")))
        } else {
            Err(InvalidKey(name.to_owned()))
        }
    }

    /// The content-addressed blob `layers/<hex>` whose SHA-256 is `digest`
    /// (a digest always makes a valid name).
    pub fn layer(digest: &Digest) -> Self {
        Self(format!("{LAYERS_PREFIX}/{}", digest.hex()))
    }

    /// The build record of the layer with cache key `key`.
    pub fn build(key: &str) -> Result<Self, InvalidKey> {
        Self::new(BUILDS_PREFIX, key)
    }

    /// The cached manifest with cache key `key`.
    pub fn manifest(key: &str) -> Result<Self, InvalidKey> {
        Self::new(MANIFESTS_PREFIX, key)
    }

    /// The referrers list `referrers/<hex>` of the manifest whose SHA-256
    /// is `digest`.
    pub fn referrers(digest: &Digest) -> Self {
        Self(format!("{REFERRERS_PREFIX}/{}", digest.hex()))
    }

    /// A staging object named `name` (unique per upload).
    pub fn staging(name: &str) -> Result<Self, InvalidKey> {
        Self::new(STAGING_PREFIX, name)
    }

    /// The use mark `uses/<hex>` of the manifest whose SHA-256 is `digest`.
    pub fn use_mark(digest: &Digest) -> Self {
        Self(format!("{USES_PREFIX}/{}", digest.hex()))
    }

    /// The garbage collector's object `name` (`lock`, `generation`).
    pub fn gc(name: &str) -> Result<Self, InvalidKey> {
        Self::new(GC_PREFIX, name)
    }

    /// The key named `name` under `prefix`, validated as that prefix's
    /// constructor validates it.
    pub fn under(prefix: KeyPrefix, name: &str) -> Result<Self, InvalidKey> {
        match prefix {
            KeyPrefix::Layers => crate::digest::Digest::parse_hex(name)
                .map(|digest| Self::layer(&digest))
                .map_err(|_| InvalidKey(name.to_owned())),
            KeyPrefix::Builds => Self::build(name),
            KeyPrefix::Manifests => Self::manifest(name),
            KeyPrefix::Staging => Self::staging(name),
            KeyPrefix::Referrers => crate::digest::Digest::parse_hex(name)
                .map(|digest| Self::referrers(&digest))
                .map_err(|_| InvalidKey(name.to_owned())),
            KeyPrefix::Uses => crate::digest::Digest::parse_hex(name)
                .map(|digest| Self::use_mark(&digest))
                .map_err(|_| InvalidKey(name.to_owned())),
            KeyPrefix::Gc => Self::gc(name),
        }
    }

    /// The name after the prefix.
    pub fn name(&self) -> &str {
        self.0.split_once('/').map_or("", |(_, name)| name)
    }

    /// The key as a relative path, `<prefix>/<name>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StorageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a completed `persist` wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Persisted {
    /// SHA-256 of the stored bytes.
    pub sha256: Digest,
    /// Number of stored bytes.
    pub size: u64,
}

/// Which stored state of an object a conditional write expects: an opaque
/// token the backend hands out with the object (S3's ETag, GCS's
/// generation, the filesystem's SHA-256 of the content). Writers of
/// conditionally written objects make every write's content unique, so
/// that equal tokens mean the same write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version(pub String);

/// One object found by [`Storage::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedObject {
    /// Its key.
    pub key: StorageKey,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written, if the backend reports it.
    pub modified: Option<SystemTime>,
    /// Its content type, if the backend reports it in listings.
    pub content_type: Option<String>,
}

/// A `Range` request for part of a blob, as the client sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=start-` or `bytes=start-end` (end inclusive).
    From { start: u64, end: Option<u64> },
    /// `bytes=-n`: the last `n` bytes.
    Suffix(u64),
}

impl ByteRange {
    /// Resolve the range against an object of `len` bytes: the inclusive
    /// `(start, end)` to send, or `None` when the range is unsatisfiable.
    pub fn resolve(self, len: u64) -> Option<(u64, u64)> {
        match self {
            ByteRange::From { start, end } => {
                if start >= len {
                    return None;
                }
                let end = end.map_or(len - 1, |e| e.min(len - 1));
                (end >= start).then_some((start, end))
            }
            ByteRange::Suffix(n) => (n > 0 && len > 0).then(|| (len.saturating_sub(n), len - 1)),
        }
    }
}

/// How the client asked for a blob.
#[derive(Clone, Debug, Default)]
pub struct ServeRequest {
    /// The requested range, if any.
    pub range: Option<ByteRange>,
    /// True for `HEAD`: no body is needed.
    pub head: bool,
    /// Serve the object only if it was stored with one of these content
    /// types; any other object is [`StorageError::NotFound`]. Manifests by
    /// digest use it so that a layer or a config is never served as a
    /// manifest.
    pub only_content_types: Option<&'static [&'static str]>,
}

impl ServeRequest {
    /// Whether an object stored with `content_type` may be served for this
    /// request (see [`Self::only_content_types`]).
    pub fn admits(&self, content_type: Option<&str>) -> bool {
        self.only_content_types
            .is_none_or(|allowed| content_type.is_some_and(|stored| allowed.contains(&stored)))
    }

    /// The requested range resolved against an object of `total_len`
    /// bytes: `Ok(None)` for the whole object, `Ok(Some((start, end)))`
    /// (inclusive), or the [`Served::RangeNotSatisfiable`] answer.
    pub fn resolve_range(&self, total_len: u64) -> Result<Option<(u64, u64)>, Served> {
        match self.range {
            None => Ok(None),
            Some(range) => range
                .resolve(total_len)
                .map(Some)
                .ok_or(Served::RangeNotSatisfiable { total_len }),
        }
    }

    /// Whether a backend that redirects GETs answers this request itself,
    /// from what it knows of an object of `total_len` bytes, with
    /// [`Self::without_body`]: a `HEAD` (a redirect target is signed for
    /// one method, which SigV4 and GCS V4 signatures cover, so a HEAD sent
    /// to a URL signed for GET is refused by the bucket; nothing is signed
    /// for HEAD, and the client saves a round trip), and a range the
    /// object cannot satisfy (`416` here, whatever the bucket would do).
    pub fn answered_without_redirect(&self, total_len: u64) -> bool {
        self.head || self.resolve_range(total_len).is_err()
    }

    /// The answer without a body for an object of `total_len` bytes stored
    /// as `content_type`: its length, type and resolved range, or `416`.
    pub fn without_body(&self, total_len: u64, content_type: String) -> Served {
        match self.resolve_range(total_len) {
            Ok(range) => Served::Content {
                body: None,
                total_len,
                range,
                content_type,
            },
            Err(unsatisfiable) => unsatisfiable,
        }
    }
}

/// A remote backend's bucket that could not be reached when it connected.
#[derive(Debug, thiserror::Error)]
#[error("bucket {bucket:?} is not reachable at {endpoint}: {reason}")]
pub struct BucketUnreachable {
    /// The bucket's name.
    pub bucket: String,
    /// Where it was asked for.
    pub endpoint: String,
    /// Why it did not answer (absent, no access, no credentials, no answer).
    pub reason: String,
}

/// A backend's answer to a request for a blob.
pub enum Served {
    /// Send the client elsewhere (303 See Other).
    Redirect { location: String },
    /// Send these bytes. `range` is `Some((start, end_inclusive))` when a
    /// range was served; `body` is `None` for `HEAD`.
    Content {
        body: Option<ByteStream>,
        total_len: u64,
        range: Option<(u64, u64)>,
        content_type: String,
    },
    /// The requested range lies outside a blob of `total_len` bytes.
    RangeNotSatisfiable { total_len: u64 },
}

/// What can go wrong in a storage backend.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The object does not exist.
    #[error("object {0} not found")]
    NotFound(StorageKey),
    /// Reading the input stream or the local disk failed.
    #[error("I/O error on {key}: {source}")]
    Io {
        key: StorageKey,
        #[source]
        source: io::Error,
    },
    /// The remote backend refused or failed a request.
    #[error("{backend} backend error on {key}: {message}")]
    Backend {
        backend: &'static str,
        key: String,
        message: String,
    },
}

/// A place to keep blobs, build records and manifests.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Short backend name for logs (`filesystem`, `gcs`, `s3`).
    fn name(&self) -> &'static str;

    /// Stream `body` into `key`, replacing any existing object, and return
    /// the SHA-256 and size of what was written. The object becomes visible
    /// under `key` only once complete.
    async fn persist(
        &self,
        key: &StorageKey,
        content_type: &str,
        body: ByteStream,
    ) -> Result<Persisted, StorageError>;

    /// Stream the object at `key`; [`StorageError::NotFound`] if absent.
    async fn fetch(&self, key: &StorageKey) -> Result<ByteStream, StorageError>;

    /// Rename `from` to `to`, replacing `to`. Safe to retry.
    async fn move_object(&self, from: &StorageKey, to: &StorageKey) -> Result<(), StorageError>;

    /// Answer a client's request for the blob at `key`.
    async fn serve(&self, key: &StorageKey, request: &ServeRequest)
    -> Result<Served, StorageError>;

    /// Stream `body` into the content-addressed blob `layers/<sha256>`,
    /// which becomes visible only once complete. By default the body is
    /// persisted under a unique `staging/` name and then moved; a backend
    /// with a cheaper way (a rename of a temporary file) overrides this.
    async fn persist_blob(
        &self,
        content_type: &str,
        body: ByteStream,
    ) -> Result<Persisted, StorageError> {
        let name = staging::unique_name();
        let staging = StorageKey::staging(&name).map_err(|e| StorageError::Backend {
            backend: self.name(),
            key: name.clone(),
            message: e.to_string(),
        })?;
        let persisted = self.persist(&staging, content_type, body).await?;
        let target = StorageKey::layer(&persisted.sha256);
        self.move_object(&staging, &target).await?;
        Ok(persisted)
    }

    /// Every object under `prefix` whose name is a valid key name there
    /// (objects this server cannot name, and a backend's helper files,
    /// are left out), in no particular order, page by page: each page
    /// holds at most `page_size` objects (a page may hold fewer, and the
    /// listing ends with the stream) and is fetched by one bounded call
    /// (or a few, retried), only when the stream is polled for it. An
    /// object written or removed while the listing runs may or may not
    /// be in it.
    fn list_pages(&self, prefix: KeyPrefix, page_size: usize) -> Pages<'_>;

    /// Every page of [`Storage::list_pages`] gathered in one `Vec`: for
    /// prefixes that stay small (`staging/`, `gc/`); a collection streams
    /// the pages instead.
    async fn list(&self, prefix: KeyPrefix) -> Result<Vec<ListedObject>, StorageError> {
        self.list_pages(prefix, LIST_PAGE_SIZE).try_concat().await
    }

    /// Remove the object at `key`; an absent object is not an error, so a
    /// retried or repeated delete is harmless.
    async fn delete(&self, key: &StorageKey) -> Result<(), StorageError>;

    /// What [`Storage::list`] tells about the object at `key`;
    /// [`StorageError::NotFound`] if absent.
    async fn stat(&self, key: &StorageKey) -> Result<ListedObject, StorageError>;

    /// Store `bytes` at `key` only if no object is there: `Ok(true)` when
    /// this call created it, `Ok(false)` when one existed. The check and
    /// the write are one atomic step (a lock is built on it).
    async fn create_new(
        &self,
        key: &StorageKey,
        content_type: &str,
        bytes: Bytes,
    ) -> Result<bool, StorageError>;

    /// The small object at `key` (at most `limit` bytes) with its
    /// [`Version`], read as one consistent pair; `None` when absent.
    async fn read_versioned(
        &self,
        key: &StorageKey,
        limit: usize,
    ) -> Result<Option<(Bytes, Version)>, StorageError>;

    /// Store `bytes` at `key` only if the object there is still at
    /// `expected` (for `None`: only if there is none), check and write in
    /// one atomic step on the backend: `Ok(Some(version written))`, or
    /// `Ok(None)` when the condition did not hold. A write whose answer
    /// was lost and whose retry finds its own write reports `None`: the
    /// caller then knows less than it could, never more.
    async fn write_if(
        &self,
        key: &StorageKey,
        content_type: &str,
        bytes: Bytes,
        expected: Option<&Version>,
    ) -> Result<Option<Version>, StorageError>;

    /// Remove what failed uploads and crashes left in staging, never an
    /// upload in progress (see [`staging`]). Returns how many were removed.
    ///
    /// By default, for object stores: a staged object exists only between
    /// a completed upload and its move (an upload in progress is no object
    /// yet), so only its age counts, by the time in its name; owners may
    /// be on other hosts. Names this server does not give are left alone.
    async fn clean_staging(&self, max_age: Duration) -> Result<usize, StorageError> {
        let mut removed = 0;
        for object in self.list(KeyPrefix::Staging).await? {
            let stale = staging::parse_name(object.key.name())
                .is_some_and(|(_, created)| staging::is_stale(created, max_age));
            if stale {
                self.delete(&object.key).await?;
                removed += 1;
                tracing::info!(backend = self.name(), object = %object.key, "removed stale staging object");
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::ByteRange;

    #[test]
    fn empty_objects_satisfy_no_range() {
        let all = ByteRange::From {
            start: 0,
            end: None,
        };
        assert_eq!(all.resolve(0), None);
        assert_eq!(ByteRange::Suffix(1).resolve(0), None);
        assert_eq!(all.resolve(3), Some((0, 2)));
        assert_eq!(ByteRange::Suffix(5).resolve(3), Some((0, 2)));
    }
}
