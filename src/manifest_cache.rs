//! The three manifest tiers, all keyed by the image identity
//! ([`crate::identity::ImageIdentity::key`]):
//!
//! 1. memory: a bounded least-recently-used map, so a warm pull is one map
//!    lookup;
//! 2. local disk: one file per manifest under a directory that survives
//!    restarts and belongs to one storage (its name is derived from the
//!    storage root or bucket); an entry is only trusted once the storage is
//!    seen to hold the manifest blob it describes;
//! 3. storage: `manifests/<key>`, shared by every instance on the bucket.
//!
//! A lower-tier hit fills the tiers above it. A missing or malformed entry
//! is a miss (logged); a storage failure other than "not found" is an error
//! (the backend has already retried it), so that a bucket brown-out is
//! answered as such instead of turning every pull into a Nix build.

use std::{
    io,
    num::NonZeroUsize,
    path::{Path, PathBuf},
    sync::Arc,
};

use bytes::Bytes;
use lru::LruCache;
use parking_lot::Mutex;

use crate::{
    cache::{CacheError, bytes_stream, read_bounded, write_atomically},
    digest::Digest,
    storage::{Storage, StorageError, StorageKey},
};

/// Largest manifest read back from the disk tier or storage.
const MAX_MANIFEST: usize = 4 * 1024 * 1024;

/// A manifest ready to be sent to a client.
#[derive(Clone, Debug)]
pub struct BuiltManifest {
    /// The manifest JSON exactly as stored.
    pub bytes: Bytes,
    /// Its digest.
    pub digest: Digest,
}

impl BuiltManifest {
    /// The manifest `bytes` with their digest.
    pub fn from_bytes(bytes: Bytes) -> Self {
        let digest = Digest::of(&bytes);
        Self { bytes, digest }
    }
}

/// Which tier answered a lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// The in-memory map.
    Memory,
    /// The local disk directory.
    Disk,
    /// The storage backend.
    Storage,
}

impl Tier {
    /// Lower-case name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Memory => "memory",
            Tier::Disk => "disk",
            Tier::Storage => "storage",
        }
    }
}

/// Manifests by image identity key, in memory, on local disk and in storage.
pub struct ManifestCache {
    memory: Mutex<LruCache<String, BuiltManifest>>,
    disk: Option<PathBuf>,
    storage: Arc<dyn Storage>,
}

impl ManifestCache {
    /// Tiers over `storage` holding at most `memory_entries` manifests in
    /// memory and, if `disk` is set, the local tier in that directory
    /// (created if missing). See [`local_tier_dir`] for choosing it.
    pub fn new(
        storage: Arc<dyn Storage>,
        memory_entries: usize,
        disk: Option<PathBuf>,
    ) -> io::Result<Self> {
        if let Some(dir) = &disk {
            std::fs::create_dir_all(dir)?;
        }
        let capacity = NonZeroUsize::new(memory_entries).unwrap_or(NonZeroUsize::MIN);
        Ok(Self {
            memory: Mutex::new(LruCache::new(capacity)),
            disk,
            storage,
        })
    }

    /// The local tier's directory, if there is one.
    pub fn disk_dir(&self) -> Option<&Path> {
        self.disk.as_deref()
    }

    /// The manifest for `key` from the memory tier alone.
    pub fn memory(&self, key: &str) -> Option<BuiltManifest> {
        self.lock().get(key).cloned()
    }

    /// The manifest for `key` and the tier that had it, memory first;
    /// `Ok(None)` when no tier has it, an error when the storage failed.
    pub async fn get(&self, key: &str) -> Result<Option<(BuiltManifest, Tier)>, CacheError> {
        if let Some(built) = self.memory(key) {
            return Ok(Some((built, Tier::Memory)));
        }
        if let Some(built) = self.read_disk(key).await? {
            self.lock().put(key.to_owned(), built.clone());
            return Ok(Some((built, Tier::Disk)));
        }
        let Some(built) = self.read_storage(key).await? else {
            return Ok(None);
        };
        self.write_disk(key, &built.bytes).await;
        self.lock().put(key.to_owned(), built.clone());
        Ok(Some((built, Tier::Storage)))
    }

    /// Store `built` under `key` in every tier. Call only once the blobs
    /// it names (and the manifest blob itself) are in storage.
    pub async fn put(&self, key: &str, built: &BuiltManifest) -> Result<(), CacheError> {
        let storage_key = StorageKey::manifest(key)?;
        self.storage
            .persist(
                &storage_key,
                crate::manifest::MANIFEST_V2,
                bytes_stream(built.bytes.clone()),
            )
            .await?;
        self.write_disk(key, &built.bytes).await;
        self.lock().put(key.to_owned(), built.clone());
        Ok(())
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, LruCache<String, BuiltManifest>> {
        self.memory.lock()
    }

    fn disk_path(&self, key: &str) -> Option<PathBuf> {
        // The file is named like the storage object: a key that is not a
        // valid storage key name (a path, a dot file) never names a file.
        StorageKey::manifest(key).ok()?;
        Some(self.disk.as_ref()?.join(key))
    }

    async fn read_disk(&self, key: &str) -> Result<Option<BuiltManifest>, StorageError> {
        let Some(path) = self.disk_path(key) else {
            return Ok(None);
        };
        let bytes = match tokio::fs::read(&path).await {
            Ok(bytes) if !bytes.is_empty() && bytes.len() <= MAX_MANIFEST => bytes,
            Ok(_) => {
                tracing::warn!(path = %path.display(), "ignoring malformed local manifest");
                return Ok(None);
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                tracing::warn!(path = %path.display(), error = %error, "reading local manifest failed");
                return Ok(None);
            }
        };
        let built = BuiltManifest::from_bytes(Bytes::from(bytes));
        // The storage must still hold the manifest blob (and so, written
        // before it, every blob the manifest names).
        let blob = StorageKey::layer(&built.digest);
        match self.storage.fetch(&blob).await {
            Ok(_) => Ok(Some(built)),
            Err(StorageError::NotFound(_)) => {
                tracing::warn!(key, digest = %built.digest, "local manifest names a blob the storage lacks, dropping it");
                let _ = tokio::fs::remove_file(&path).await;
                Ok(None)
            }
            Err(error) => {
                tracing::warn!(key, error = %crate::redact::redact(&error.to_string()), "checking a local manifest against storage failed");
                Err(error)
            }
        }
    }

    async fn read_storage(&self, key: &str) -> Result<Option<BuiltManifest>, StorageError> {
        let Ok(storage_key) = StorageKey::manifest(key) else {
            return Ok(None);
        };
        let stream = match self.storage.fetch(&storage_key).await {
            Ok(stream) => stream,
            Err(StorageError::NotFound(_)) => return Ok(None),
            Err(error) => {
                tracing::warn!(key = %storage_key, backend = self.storage.name(), error = %crate::redact::redact(&error.to_string()), "manifest lookup failed");
                return Err(error);
            }
        };
        match read_bounded(stream, MAX_MANIFEST).await {
            Ok(bytes) if !bytes.is_empty() => Ok(Some(BuiltManifest::from_bytes(bytes))),
            Ok(_) => Ok(None),
            Err(error) if error.kind() == io::ErrorKind::FileTooLarge => {
                tracing::warn!(key = %storage_key, backend = self.storage.name(), "ignoring oversized cached manifest");
                Ok(None)
            }
            Err(source) => {
                tracing::warn!(key = %storage_key, backend = self.storage.name(), error = %crate::redact::redact(&source.to_string()), "manifest read failed");
                Err(StorageError::Io {
                    key: storage_key,
                    source,
                })
            }
        }
    }

    async fn write_disk(&self, key: &str, bytes: &[u8]) {
        let Some(path) = self.disk_path(key) else {
            return;
        };
        if let Err(error) = write_atomically(&path, bytes).await {
            tracing::warn!(path = %path.display(), error = %error, "could not fill the local manifest tier");
        }
    }
}

/// The local tier's directory for the storage named `storage_identity`
/// (see [`crate::config::StorageSetting::identity`]) under `cache_dir`:
/// `<cache_dir>/manifests-<first 16 hex digits of its SHA-256>`. A file
/// `storage` beside the manifests names the storage, for operators.
pub fn local_tier_dir(cache_dir: &Path, storage_identity: &str) -> io::Result<PathBuf> {
    let hash = Digest::of(storage_identity.as_bytes()).hex();
    let dir = cache_dir.join(format!("manifests-{}", &hash[..16]));
    std::fs::create_dir_all(&dir)?;
    let label = dir.join("storage");
    if !label.exists() {
        std::fs::write(&label, format!("{storage_identity}\n"))?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::filesystem::FilesystemStorage;

    fn storage(dir: &Path) -> Arc<dyn Storage> {
        Arc::new(FilesystemStorage::new(dir).unwrap())
    }

    async fn store_blob(storage: &Arc<dyn Storage>, built: &BuiltManifest) {
        let key = StorageKey::layer(&built.digest);
        storage
            .persist(&key, "application/json", bytes_stream(built.bytes.clone()))
            .await
            .unwrap();
    }

    const KEY: &str = "00aa";

    #[tokio::test]
    async fn memory_tier_is_bounded_and_least_recently_used_goes_first() {
        let root = tempfile::tempdir().unwrap();
        let cache = ManifestCache::new(storage(root.path()), 2, None).unwrap();
        for key in ["01", "02"] {
            cache
                .put(key, &BuiltManifest::from_bytes(Bytes::from(key)))
                .await
                .unwrap();
        }
        assert!(cache.memory("01").is_some());
        cache
            .put("03", &BuiltManifest::from_bytes(Bytes::from("03")))
            .await
            .unwrap();
        assert!(cache.memory("02").is_none(), "least recently used kept");
        assert!(cache.memory("01").is_some() && cache.memory("03").is_some());
        // Evicted entries still come from storage.
        assert_eq!(cache.get("02").await.unwrap().unwrap().1, Tier::Storage);
    }

    #[tokio::test]
    async fn disk_tier_survives_a_restart_without_the_storage_manifest() {
        let root = tempfile::tempdir().unwrap();
        let local = tempfile::tempdir().unwrap();
        let storage = storage(root.path());
        let built = BuiltManifest::from_bytes(Bytes::from_static(b"{\"m\":1}"));
        store_blob(&storage, &built).await;
        let cache = ManifestCache::new(storage.clone(), 8, Some(local.path().into())).unwrap();
        cache.put(KEY, &built).await.unwrap();
        drop(cache);
        std::fs::remove_dir_all(root.path().join("manifests")).unwrap();

        let restarted = ManifestCache::new(storage, 8, Some(local.path().into())).unwrap();
        let (found, tier) = restarted.get(KEY).await.unwrap().unwrap();
        assert_eq!((found.bytes, tier), (built.bytes, Tier::Disk));
        assert_eq!(restarted.get(KEY).await.unwrap().unwrap().1, Tier::Memory);
    }

    #[tokio::test]
    async fn disk_entry_whose_blob_is_missing_from_storage_is_a_miss() {
        let root = tempfile::tempdir().unwrap();
        let local = tempfile::tempdir().unwrap();
        let built = BuiltManifest::from_bytes(Bytes::from_static(b"{\"m\":2}"));
        std::fs::write(local.path().join(KEY), &built.bytes).unwrap();
        let cache = ManifestCache::new(storage(root.path()), 8, Some(local.path().into())).unwrap();
        assert!(cache.get(KEY).await.unwrap().is_none());
        assert!(!local.path().join(KEY).exists(), "stale entry kept");
    }

    #[tokio::test]
    async fn a_failing_storage_is_an_error_not_a_miss() {
        let root = tempfile::tempdir().unwrap();
        let cache = ManifestCache::new(storage(root.path()), 8, None).unwrap();
        assert!(cache.get(KEY).await.unwrap().is_none());
        // Reading `manifests/<key>` now fails with "not a directory".
        std::fs::remove_dir_all(root.path().join("manifests")).unwrap();
        std::fs::write(root.path().join("manifests"), b"").unwrap();
        assert!(cache.get(KEY).await.is_err());
    }

    #[test]
    fn each_storage_gets_its_own_local_tier() {
        let cache_dir = tempfile::tempdir().unwrap();
        let a = local_tier_dir(cache_dir.path(), "filesystem:/srv/a").unwrap();
        let b = local_tier_dir(cache_dir.path(), "gcs:bucket-b").unwrap();
        assert_ne!(a, b);
        assert_eq!(
            a,
            local_tier_dir(cache_dir.path(), "filesystem:/srv/a").unwrap()
        );
        assert_eq!(
            std::fs::read_to_string(b.join("storage")).unwrap(),
            "gcs:bucket-b\n"
        );
    }

    #[tokio::test]
    async fn keys_that_are_not_hex_never_touch_the_disk() {
        let root = tempfile::tempdir().unwrap();
        let local = tempfile::tempdir().unwrap();
        let cache = ManifestCache::new(storage(root.path()), 8, Some(local.path().into())).unwrap();
        assert!(cache.disk_path("../x").is_none());
        assert!(cache.disk_path("").is_none());
        assert!(cache.get("../x").await.unwrap().is_none());
    }
}
