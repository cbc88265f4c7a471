//! The layer caches in front of image building (manifests have their own
//! tiers, see [`crate::manifest_cache`]).
//!
//! * Memory: layer build records.
//! * Storage: `builds/<layer-key>` in the storage backend, shared by every
//!   instance using the same bucket.
//!
//! Lookups try memory first; a storage hit fills it. A corrupt storage
//! entry is a miss (logged), never an error for the client; a storage
//! failure other than "not found" is an error (the backend has already
//! retried it), never a miss, so that a bucket brown-out does not turn every
//! pull into a Nix build.
//! Blobs become visible under `layers/<sha256>` only when complete (the
//! backend's [`Storage::persist_blob`] stages them its own way), and a build
//! record is written only after its blob is in place, so a record found
//! here always points at an existing blob.

use std::{
    collections::HashMap,
    io,
    path::Path,
    sync::{Arc, Weak},
};

use bytes::{Bytes, BytesMut};
use futures::{StreamExt, stream};
use parking_lot::Mutex;
use tokio::sync::OwnedMutexGuard;

use crate::{
    digest::Digest,
    storage::{ByteStream, InvalidKey, Persisted, Storage, StorageError, StorageKey},
};

/// Largest manifest or build record read back from storage.
const MAX_CACHED_OBJECT: usize = 16 * 1024 * 1024;

/// Content type of build records.
const RECORD_CONTENT_TYPE: &str = "application/json";

// The record and its stored (upstream-compatible) form live in their own module.
pub use crate::layer_record::LayerRecord;

/// Errors of the cache that a build must report.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The storage backend failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A key derived from build data was not a valid storage key.
    #[error(transparent)]
    Key(#[from] InvalidKey),
    /// A record could not be serialised.
    #[error("encoding build record: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Layer build records plus the per-key upload locks.
pub struct Cache {
    storage: Arc<dyn Storage>,
    layer_records: Mutex<HashMap<String, LayerRecord>>,
    upload_locks: KeyedLocks,
}

impl Cache {
    /// A cache over `storage` with nothing in memory yet.
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        Self {
            storage,
            layer_records: Mutex::new(HashMap::new()),
            upload_locks: KeyedLocks::default(),
        }
    }

    /// The storage backend behind the cache.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The build record of the layer with cache key `layer_key`, memory
    /// first; `Ok(None)` when there is none (or only a corrupt one).
    pub async fn layer_record(&self, layer_key: &str) -> Result<Option<LayerRecord>, CacheError> {
        if let Some(record) = self.records().get(layer_key) {
            return Ok(Some(record.clone()));
        }
        let key = StorageKey::build(layer_key)?;
        let Some(bytes) = self.read_object(&key).await? else {
            return Ok(None);
        };
        match crate::layer_record::decode(&bytes) {
            Ok(record) => {
                self.records().insert(layer_key.to_owned(), record.clone());
                Ok(Some(record))
            }
            Err(error) => {
                tracing::warn!(key = %key, error = %error, "ignoring corrupt build record");
                Ok(None)
            }
        }
    }

    /// Record that the layer `layer_key` is stored as `record`. Call only
    /// once the blob is in place.
    pub async fn put_layer_record(
        &self,
        layer_key: &str,
        record: &LayerRecord,
    ) -> Result<(), CacheError> {
        let key = StorageKey::build(layer_key)?;
        let json = Bytes::from(crate::layer_record::encode(record)?);
        self.storage
            .persist(&key, RECORD_CONTENT_TYPE, bytes_stream(json))
            .await?;
        self.records().insert(layer_key.to_owned(), record.clone());
        Ok(())
    }

    /// Wait until no other task is uploading the layer `layer_key`; the
    /// upload lock is held until the guard is dropped.
    pub async fn lock_upload(&self, layer_key: &str) -> OwnedMutexGuard<()> {
        self.upload_locks.lock(layer_key).await
    }

    /// Stream `body` into `layers/<sha256>` the backend's way (see
    /// [`Storage::persist_blob`]). Returns the blob's digest and size.
    pub async fn upload_blob(
        &self,
        content_type: &str,
        body: ByteStream,
    ) -> Result<Persisted, CacheError> {
        Ok(self.storage.persist_blob(content_type, body).await?)
    }

    /// Store a small in-memory blob under `layers/<sha256>` directly.
    pub async fn put_small_blob(
        &self,
        content_type: &str,
        bytes: Bytes,
    ) -> Result<Persisted, CacheError> {
        let key = StorageKey::layer(&Digest::of(&bytes));
        Ok(self
            .storage
            .persist(&key, content_type, bytes_stream(bytes))
            .await?)
    }

    fn records(&self) -> parking_lot::MutexGuard<'_, HashMap<String, LayerRecord>> {
        self.layer_records.lock()
    }

    /// The object at `key`: `Ok(None)` if it does not exist or is too
    /// large to be a cache entry, an error if the backend failed.
    pub(crate) async fn read_object(
        &self,
        key: &StorageKey,
    ) -> Result<Option<Bytes>, StorageError> {
        let stream = match self.storage.fetch(key).await {
            Ok(stream) => stream,
            Err(StorageError::NotFound(_)) => return Ok(None),
            Err(error) => {
                tracing::warn!(key = %key, backend = self.storage.name(), error = %crate::redact::redact(&error.to_string()), "cache lookup failed");
                return Err(error);
            }
        };
        match read_bounded(stream, MAX_CACHED_OBJECT).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(error) if error.kind() == io::ErrorKind::FileTooLarge => {
                tracing::warn!(key = %key, backend = self.storage.name(), "ignoring oversized cache entry");
                Ok(None)
            }
            Err(source) => {
                tracing::warn!(key = %key, backend = self.storage.name(), error = %crate::redact::redact(&source.to_string()), "cache read failed");
                Err(StorageError::Io {
                    key: key.clone(),
                    source,
                })
            }
        }
    }
}

/// A one-item stream of `bytes`.
pub fn bytes_stream(bytes: Bytes) -> ByteStream {
    Box::pin(stream::once(async move { Ok(bytes) }))
}

/// Collect a stream of at most `limit` bytes.
pub(crate) async fn read_bounded(mut stream: ByteStream, limit: usize) -> io::Result<Bytes> {
    let mut buffer = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if buffer.len() + chunk.len() > limit {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                "object larger than the cache limit",
            ));
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(buffer.freeze())
}

/// Write `bytes` to `path` through a temporary file and a rename, so that a
/// reader never sees a partial file.
pub(crate) async fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", crate::storage::staging::unique_name()));
    tokio::fs::write(&tmp, bytes).await?;
    match tokio::fs::rename(&tmp, path).await {
        Ok(()) => Ok(()),
        Err(error) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            Err(error)
        }
    }
}

/// Async mutexes created on demand per key and dropped when unused.
#[derive(Default)]
struct KeyedLocks {
    locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    async fn lock(&self, key: &str) -> OwnedMutexGuard<()> {
        let mutex = {
            let mut locks = self.locks.lock();
            locks.retain(|_, weak| weak.strong_count() > 0);
            match locks.get(key).and_then(Weak::upgrade) {
                Some(mutex) => mutex,
                None => {
                    let mutex = Arc::new(tokio::sync::Mutex::new(()));
                    locks.insert(key.to_owned(), Arc::downgrade(&mutex));
                    mutex
                }
            }
        };
        mutex.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn keyed_lock_serialises_same_key_only() {
        let locks = Arc::new(KeyedLocks::default());
        let first = locks.lock("a").await;
        // A different key is free.
        let other = tokio::time::timeout(Duration::from_millis(100), locks.lock("b")).await;
        assert!(other.is_ok());
        // The same key waits until the first guard is dropped.
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move { locks.lock("a").await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        drop(first);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), waiter)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn read_bounded_rejects_oversized_objects() {
        let stream = bytes_stream(Bytes::from(vec![0u8; 10]));
        assert!(read_bounded(stream, 9).await.is_err());
        let stream = bytes_stream(Bytes::from(vec![0u8; 10]));
        assert_eq!(read_bounded(stream, 10).await.unwrap().len(), 10);
    }

    fn filesystem_cache() -> (tempfile::TempDir, Arc<dyn Storage>, Cache) {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> =
            Arc::new(crate::storage::filesystem::FilesystemStorage::new(dir.path()).unwrap());
        let cache = Cache::new(storage.clone());
        (dir, storage, cache)
    }

    #[tokio::test]
    async fn corrupt_build_record_is_a_miss() {
        let (_dir, storage, cache) = filesystem_cache();
        for (name, body) in [
            ("notjson", &b"{not json"[..]),
            (
                "baddigest",
                &br#"{"digest":"../x","size":1,"diff_id":"y"}"#[..],
            ),
        ] {
            let key = StorageKey::build(name).unwrap();
            storage
                .persist(
                    &key,
                    "application/json",
                    bytes_stream(Bytes::from(body.to_vec())),
                )
                .await
                .unwrap();
            assert!(cache.layer_record(name).await.unwrap().is_none(), "{name}");
        }
    }

    #[tokio::test]
    async fn layer_records_round_trip_through_storage() {
        let (_dir, storage, cache) = filesystem_cache();
        let record = LayerRecord {
            digest: Digest::parse_hex(&"a".repeat(64)).unwrap(),
            size: 3,
            diff_id: Digest::parse_hex(&"b".repeat(64)).unwrap(),
        };
        cache.put_layer_record("k", &record).await.unwrap();
        // A fresh cache on the same storage (a restart) finds it.
        let restarted = Cache::new(storage);
        assert_eq!(restarted.layer_record("k").await.unwrap(), Some(record));
    }

    #[tokio::test]
    async fn uploaded_blob_lands_under_its_digest_with_nothing_left_in_staging() {
        let (dir, storage, cache) = filesystem_cache();
        let body = Bytes::from_static(b"layer bytes");
        let persisted = cache
            .upload_blob("application/octet-stream", bytes_stream(body.clone()))
            .await
            .unwrap();
        assert_eq!(persisted.sha256, Digest::of(&body));
        let key = StorageKey::layer(&persisted.sha256);
        let stored = read_bounded(storage.fetch(&key).await.unwrap(), 1024)
            .await
            .unwrap();
        assert_eq!(stored, body);
        let staging: Vec<_> = std::fs::read_dir(dir.path().join("staging"))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(staging.is_empty(), "staging not empty: {staging:?}");
    }

    #[tokio::test]
    async fn a_failing_backend_is_an_error_not_a_miss() {
        let (dir, _storage, cache) = filesystem_cache();
        // Reading `builds/<key>` now fails with "not a directory".
        std::fs::remove_dir_all(dir.path().join("builds")).unwrap();
        std::fs::write(dir.path().join("builds"), b"").unwrap();
        assert!(cache.layer_record("abc").await.is_err());
    }

    #[tokio::test]
    async fn an_absent_entry_is_a_miss() {
        let (_dir, _storage, cache) = filesystem_cache();
        assert!(cache.layer_record("abc").await.unwrap().is_none());
    }
}
