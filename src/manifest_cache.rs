//! The three manifest tiers, all keyed by the image identity
//! ([`crate::identity::ImageIdentity::key`]). Each holds both manifests of
//! an image ([`ImageManifests`]): the Docker schema 2 one under `<key>` and
//! the OCI one under `<key>.oci`.
//!
//! 1. memory: a bounded least-recently-used map, so a warm pull is one map
//!    lookup;
//! 2. local disk: files `<key>` and `<key>.oci` under a directory that
//!    survives restarts and belongs to one storage (its name is derived
//!    from the storage root or bucket); an entry is only trusted once the
//!    storage is seen to hold the Docker manifest blob it describes;
//! 3. storage: `manifests/<key>` and `manifests/<key>.oci`, shared by every
//!    instance on the bucket.
//!
//! The OCI manifest is derived from the Docker one plus the image's labels
//! as annotations ([`crate::manifest::oci_variant`]), so a tier whose
//! `<key>.oci` is missing (written before OCI manifests existed; derived
//! then without annotations) or is not the variant of its `<key>` with its
//! own annotations gets it derived again, stored as a blob and written back: the
//! pair read is always consistent and the same across restarts. The OCI
//! object is written before the Docker one, which completes an entry.
//!
//! A lower-tier hit fills the tiers above it. A missing or malformed entry
//! is a miss (logged); a storage failure other than "not found" is an error
//! (the backend has already retried it), so that a bucket brown-out is
//! answered as such instead of turning every pull into a Nix build.

use std::{
    collections::BTreeMap,
    io,
    num::NonZeroUsize,
    path::{Path, PathBuf},
    sync::Arc,
};

use bytes::Bytes;
use lru::LruCache;
use parking_lot::Mutex;

use crate::{
    cache::{CacheError, bytes_stream, write_atomically},
    digest::Digest,
    gc::tiers::{Guard, Stamp, Stamped},
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
    /// Its media type: an image manifest or an image index
    /// ([`crate::image_index`]).
    pub media_type: &'static str,
}

impl BuiltManifest {
    /// The image manifest `bytes` (a Docker V2 manifest) with their digest.
    pub fn from_bytes(bytes: Bytes) -> Self {
        Self::with_media_type(bytes, crate::media_type::DOCKER_MANIFEST)
    }

    /// The manifest or index `bytes` of `media_type` with their digest.
    pub fn with_media_type(bytes: Bytes, media_type: &'static str) -> Self {
        let digest = Digest::of(&bytes);
        Self {
            bytes,
            digest,
            media_type,
        }
    }

    /// Bytes read back from a tier: their media type is the one the
    /// document declares.
    fn from_stored(bytes: Bytes) -> Self {
        let media_type = crate::image_index::media_type_of(&bytes);
        Self::with_media_type(bytes, media_type)
    }
}

/// What a tier holds under one key: both manifests of one image (the same
/// config and layer blobs, described with Docker or with OCI media types),
/// or an image index ([`crate::image_index`]), which has one form only and
/// is then in both fields.
#[derive(Clone, Debug)]
pub struct ImageManifests {
    /// Docker Image Manifest V2 Schema 2 (or the index).
    pub docker: BuiltManifest,
    /// OCI image manifest (or the index).
    pub oci: BuiltManifest,
}

impl ImageManifests {
    /// The pair for the Docker manifest `docker`, its OCI variant derived
    /// with `annotations` (the image's labels).
    pub fn from_docker(
        docker: Bytes,
        annotations: &BTreeMap<String, String>,
    ) -> Result<Self, crate::manifest::ManifestError> {
        let oci = Bytes::from(crate::manifest::oci_variant(&docker, annotations)?);
        Ok(Self {
            docker: BuiltManifest::from_bytes(docker),
            oci: BuiltManifest::with_media_type(oci, crate::media_type::OCI_MANIFEST),
        })
    }

    /// A document with one form only (an image index).
    pub fn single(built: BuiltManifest) -> Self {
        Self {
            oci: built.clone(),
            docker: built,
        }
    }

    /// The manifest in `format`.
    pub fn get(&self, format: crate::media_type::ImageFormat) -> &BuiltManifest {
        match format {
            crate::media_type::ImageFormat::Docker => &self.docker,
            crate::media_type::ImageFormat::Oci => &self.oci,
        }
    }

    /// Whether this is a document with one form only.
    pub fn is_single(&self) -> bool {
        self.docker.digest == self.oci.digest
    }
}

/// Suffix of the OCI manifest's name beside the Docker one's in a tier.
const OCI_SUFFIX: &str = ".oci";

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
/// With a watching [`Guard`], an entry is confirmed against storage before it is
/// served under a collection generation newer than its stamp; entries from
/// the disk tier and storage are always confirmed.
pub struct ManifestCache {
    memory: Mutex<LruCache<String, Stamped<ImageManifests>>>,
    disk: Option<PathBuf>,
    storage: Arc<dyn Storage>,
    gc: Guard,
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
            gc: Guard::off(),
        })
    }

    /// The same tiers, their entries checked by `gc`.
    pub fn with_gc(self, gc: Guard) -> Self {
        Self { gc, ..self }
    }

    /// The local tier's directory, if there is one.
    pub fn disk_dir(&self) -> Option<&Path> {
        self.disk.as_deref()
    }

    /// The manifests for `key` from the memory tier alone, if they may be
    /// served without asking storage.
    pub fn memory(&self, key: &str) -> Option<ImageManifests> {
        let mut memory = self.lock();
        let entry = memory.get(key)?;
        self.gc.trusted(entry).cloned()
    }

    /// Serve this checked entry ([`Guard::check`]): both manifests of
    /// `pair` confirmed, stamped; `None` when one was collected (then the
    /// entry leaves the memory and disk tiers).
    async fn confirm(
        &self,
        key: &str,
        pair: ImageManifests,
    ) -> Result<Option<Stamped<ImageManifests>>, StorageError> {
        let digests = if pair.is_single() {
            vec![pair.docker.digest]
        } else {
            vec![pair.docker.digest, pair.oci.digest]
        };
        match self.gc.check(pair, &digests).await {
            Ok(Some(checked)) => Ok(Some(checked)),
            Ok(None) => {
                tracing::info!(key, digest = %digests[0], "cached manifest was collected, building it again");
                self.lock().pop(key);
                for name in [key.to_owned(), format!("{key}{OCI_SUFFIX}")] {
                    if let Some(path) = self.disk_path(&name) {
                        let _ = tokio::fs::remove_file(path).await;
                    }
                }
                Ok(None)
            }
            Err(error) => {
                tracing::warn!(key, error = %error, "confirming a cached manifest against storage failed");
                Err(error)
            }
        }
    }

    /// The manifests for `key` and the tier that had them, memory first;
    /// `Ok(None)` when no tier has them, an error when the storage failed.
    pub async fn get(&self, key: &str) -> Result<Option<(ImageManifests, Tier)>, CacheError> {
        if let Some(built) = self.memory(key) {
            return Ok(Some((built, Tier::Memory)));
        }
        let untrusted = self.lock().get(key).map(|entry| entry.value().clone());
        if let Some(pair) = untrusted
            && let Some(checked) = self.confirm(key, pair).await?
        {
            let pair = checked.value().clone();
            self.lock().put(key.to_owned(), checked);
            return Ok(Some((pair, Tier::Memory)));
        }
        if let Some(docker) = self.read_disk(key).await? {
            let oci = self.read_disk_file(&format!("{key}{OCI_SUFFIX}")).await;
            if let Some((pair, derived)) = self.pair(key, docker, oci).await?
                && let Some(checked) = self.confirm(key, pair).await?
            {
                let pair = checked.value().clone();
                if derived {
                    self.write_disk(&format!("{key}{OCI_SUFFIX}"), &pair.oci.bytes)
                        .await;
                }
                self.lock().put(key.to_owned(), checked);
                return Ok(Some((pair, Tier::Disk)));
            }
        }
        let Some(docker) = self.read_storage(key).await? else {
            return Ok(None);
        };
        let oci = self.read_storage(&format!("{key}{OCI_SUFFIX}")).await?;
        let Some((pair, derived)) = self.pair(key, docker, oci).await? else {
            return Ok(None);
        };
        let Some(checked) = self.confirm(key, pair).await? else {
            return Ok(None);
        };
        let pair = checked.value().clone();
        if derived {
            self.persist_oci(key, &pair.oci).await?;
        }
        self.write_disk(&format!("{key}{OCI_SUFFIX}"), &pair.oci.bytes)
            .await;
        self.write_disk(key, &pair.docker.bytes).await;
        self.lock().put(key.to_owned(), checked);
        Ok(Some((pair, Tier::Storage)))
    }

    /// Store `built` under `key` in every tier, stamped with the collection
    /// generation `stamp` it was checked under. Call only once the blobs
    /// they name (and both manifest blobs themselves) are in storage.
    pub async fn put(
        &self,
        key: &str,
        built: &ImageManifests,
        stamp: Stamp,
    ) -> Result<(), CacheError> {
        let storage_key = StorageKey::manifest(key)?;
        if !built.is_single() {
            self.persist_oci(key, &built.oci).await?;
        }
        self.storage
            .persist(
                &storage_key,
                built.docker.media_type,
                bytes_stream(built.docker.bytes.clone()),
            )
            .await?;
        if !built.is_single() {
            self.write_disk(&format!("{key}{OCI_SUFFIX}"), &built.oci.bytes)
                .await;
        }
        self.write_disk(key, &built.docker.bytes).await;
        self.lock()
            .put(key.to_owned(), Stamped::new(built.clone(), stamp));
        Ok(())
    }

    /// Store the OCI manifest of `key` as `manifests/<key>.oci`.
    async fn persist_oci(&self, key: &str, oci: &BuiltManifest) -> Result<(), CacheError> {
        let storage_key = StorageKey::manifest(&format!("{key}{OCI_SUFFIX}"))?;
        self.storage
            .persist(
                &storage_key,
                crate::media_type::OCI_MANIFEST,
                bytes_stream(oci.bytes.clone()),
            )
            .await?;
        Ok(())
    }

    /// The pair of `docker` and the `oci` a tier held beside it, and
    /// whether the OCI manifest had to be derived because `oci` was
    /// missing or did not match; `None` (a miss) when `docker` is not an
    /// image manifest. A derived manifest is stored as a blob
    /// (`layers/<hex>`) so that it can be pulled by digest.
    async fn pair(
        &self,
        key: &str,
        docker: BuiltManifest,
        oci: Option<BuiltManifest>,
    ) -> Result<Option<(ImageManifests, bool)>, CacheError> {
        if docker.media_type != crate::media_type::DOCKER_MANIFEST {
            // An index: one form only.
            return Ok(Some((ImageManifests::single(docker), false)));
        }
        // The stored OCI manifest is accepted when it is exactly the
        // variant of the Docker one with its own annotations.
        let annotations = oci
            .as_ref()
            .map(|oci| crate::manifest::annotations_of(&oci.bytes))
            .unwrap_or_default();
        let expected = match crate::manifest::oci_variant(&docker.bytes, &annotations) {
            Ok(bytes) => Bytes::from(bytes),
            Err(error) => {
                tracing::warn!(key, error = %error, "ignoring malformed cached manifest");
                return Ok(None);
            }
        };
        if let Some(oci) = oci.filter(|oci| oci.bytes == expected) {
            return Ok(Some((ImageManifests { docker, oci }, false)));
        }
        tracing::info!(key, "deriving the OCI manifest of a cached image");
        let oci = BuiltManifest::with_media_type(expected, crate::media_type::OCI_MANIFEST);
        let blob = StorageKey::layer(&oci.digest);
        self.storage
            .persist(
                &blob,
                crate::media_type::OCI_MANIFEST,
                bytes_stream(oci.bytes.clone()),
            )
            .await?;
        Ok(Some((ImageManifests { docker, oci }, true)))
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, LruCache<String, Stamped<ImageManifests>>> {
        self.memory.lock()
    }

    fn disk_path(&self, name: &str) -> Option<PathBuf> {
        // The file is named like the storage object (`<key>` or
        // `<key>.oci`): a name that is not a valid storage key name (a
        // path, a dot file) never names a file.
        StorageKey::manifest(name).ok()?;
        Some(self.disk.as_ref()?.join(name))
    }

    /// The local file `name`, if it holds a plausible manifest.
    async fn read_disk_file(&self, name: &str) -> Option<BuiltManifest> {
        let path = self.disk_path(name)?;
        match tokio::fs::read(&path).await {
            Ok(bytes) if !bytes.is_empty() && bytes.len() <= MAX_MANIFEST => {
                Some(BuiltManifest::from_stored(Bytes::from(bytes)))
            }
            Ok(_) => {
                tracing::warn!(path = %path.display(), "ignoring malformed local manifest");
                None
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => None,
            Err(error) => {
                tracing::warn!(path = %path.display(), error = %error, "reading local manifest failed");
                None
            }
        }
    }

    async fn read_disk(&self, key: &str) -> Result<Option<BuiltManifest>, StorageError> {
        let Some(path) = self.disk_path(key) else {
            return Ok(None);
        };
        let Some(built) = self.read_disk_file(key).await else {
            return Ok(None);
        };
        // The storage must still hold the manifest blob (and so, written
        // before it, every blob the manifest names).
        let blob = StorageKey::layer(&built.digest);
        match self.storage.fetch(&blob).await {
            Ok(_) => Ok(Some(built)),
            Err(StorageError::NotFound(_)) => {
                tracing::warn!(key, digest = %built.digest, "local manifest names a blob the storage lacks, dropping it");
                let _ = tokio::fs::remove_file(&path).await;
                if let Some(oci) = self.disk_path(&format!("{key}{OCI_SUFFIX}")) {
                    let _ = tokio::fs::remove_file(oci).await;
                }
                Ok(None)
            }
            Err(error) => {
                tracing::warn!(key, error = %error, "checking a local manifest against storage failed");
                Err(error)
            }
        }
    }

    async fn read_storage(&self, key: &str) -> Result<Option<BuiltManifest>, StorageError> {
        let Ok(storage_key) = StorageKey::manifest(key) else {
            return Ok(None);
        };
        let bytes = crate::storage::small_object::read_small(
            self.storage.as_ref(),
            &storage_key,
            MAX_MANIFEST,
        )
        .await?;
        Ok(bytes
            .filter(|bytes| !bytes.is_empty())
            .map(BuiltManifest::from_stored))
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

/// Where [`local_tier_dir`] puts the tier, without creating anything.
pub fn local_tier_path(cache_dir: &Path, storage_identity: &str) -> PathBuf {
    let hash = Digest::of(storage_identity.as_bytes()).hex();
    cache_dir.join(format!("manifests-{}", &hash[..16]))
}

/// The local tier's directory for the storage named `storage_identity`
/// (see [`crate::config::StorageSetting::identity`]) under `cache_dir`:
/// `<cache_dir>/manifests-<first 16 hex digits of its SHA-256>`. A file
/// `storage` beside the manifests names the storage, for operators.
pub fn local_tier_dir(cache_dir: &Path, storage_identity: &str) -> io::Result<PathBuf> {
    let dir = local_tier_path(cache_dir, storage_identity);
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
    use crate::manifest::{LayerEntry, assemble};
    use crate::storage::filesystem::FilesystemStorage;

    fn storage(dir: &Path) -> Arc<dyn Storage> {
        Arc::new(FilesystemStorage::new(dir).unwrap())
    }

    /// The manifests of a one-layer image, different for each `n`.
    fn image(n: u8) -> ImageManifests {
        let layer = LayerEntry {
            digest: Digest::of(&[n]),
            size: u64::from(n),
            diff_id: Digest::of(&[n, n]),
            merge_rating: 0,
            first_path: String::new(),
        };
        let docs = assemble(
            "amd64",
            None,
            None,
            &std::collections::BTreeMap::new(),
            Vec::new(),
            layer,
        )
        .unwrap();
        ImageManifests::from_docker(
            Bytes::from(docs.manifest),
            &crate::manifest::labels("path", None, &format!("image-{n}")),
        )
        .unwrap()
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
        for (n, key) in [(1, "01"), (2, "02")] {
            cache.put(key, &image(n), Stamp::UNCHECKED).await.unwrap();
        }
        assert!(cache.memory("01").is_some());
        cache.put("03", &image(3), Stamp::UNCHECKED).await.unwrap();
        assert!(cache.memory("02").is_none(), "least recently used kept");
        assert!(cache.memory("01").is_some() && cache.memory("03").is_some());
        // Evicted entries still come from storage, both variants.
        let (found, tier) = cache.get("02").await.unwrap().unwrap();
        assert_eq!(tier, Tier::Storage);
        assert_eq!(found.docker.bytes, image(2).docker.bytes);
        assert_eq!(found.oci.bytes, image(2).oci.bytes);
    }

    #[tokio::test]
    async fn disk_tier_survives_a_restart_without_the_storage_manifest() {
        let root = tempfile::tempdir().unwrap();
        let local = tempfile::tempdir().unwrap();
        let storage = storage(root.path());
        let built = image(1);
        store_blob(&storage, &built.docker).await;
        let cache = ManifestCache::new(storage.clone(), 8, Some(local.path().into())).unwrap();
        cache.put(KEY, &built, Stamp::UNCHECKED).await.unwrap();
        drop(cache);
        std::fs::remove_dir_all(root.path().join("manifests")).unwrap();

        let restarted = ManifestCache::new(storage, 8, Some(local.path().into())).unwrap();
        let (found, tier) = restarted.get(KEY).await.unwrap().unwrap();
        assert_eq!(tier, Tier::Disk);
        assert_eq!(found.docker.bytes, built.docker.bytes);
        assert_eq!(found.oci.bytes, built.oci.bytes);
        assert!(local.path().join(format!("{KEY}.oci")).is_file());
        assert_eq!(restarted.get(KEY).await.unwrap().unwrap().1, Tier::Memory);
    }

    #[tokio::test]
    async fn entries_without_an_oci_variant_get_it_derived_stored_and_cached() {
        let root = tempfile::tempdir().unwrap();
        let storage = storage(root.path());
        // What an earlier version wrote: the Docker manifest alone, whose
        // OCI variant is derived without annotations (the labels are in
        // the config, which the cache does not read).
        let built = ImageManifests::from_docker(image(4).docker.bytes, &BTreeMap::new()).unwrap();
        storage
            .persist(
                &StorageKey::manifest(KEY).unwrap(),
                crate::media_type::DOCKER_MANIFEST,
                bytes_stream(built.docker.bytes.clone()),
            )
            .await
            .unwrap();
        let cache = ManifestCache::new(storage.clone(), 8, None).unwrap();
        let (found, _) = cache.get(KEY).await.unwrap().unwrap();
        assert_eq!(found.oci.bytes, built.oci.bytes);
        assert_eq!(found.oci.digest, built.oci.digest);
        let blob = root.path().join("layers").join(built.oci.digest.hex());
        assert_eq!(std::fs::read(blob).unwrap(), &built.oci.bytes[..]);
        let stored = root.path().join("manifests").join(format!("{KEY}.oci"));
        assert_eq!(std::fs::read(stored).unwrap(), &built.oci.bytes[..]);

        // A mismatching OCI object is replaced by the derived one.
        std::fs::write(
            root.path().join("manifests").join(format!("{KEY}.oci")),
            b"{}",
        )
        .unwrap();
        let fresh = ManifestCache::new(storage, 8, None).unwrap();
        assert_eq!(
            fresh.get(KEY).await.unwrap().unwrap().0.oci.bytes,
            built.oci.bytes
        );
    }

    #[tokio::test]
    async fn a_cached_object_that_is_not_an_image_manifest_is_a_miss() {
        let root = tempfile::tempdir().unwrap();
        let storage = storage(root.path());
        storage
            .persist(
                &StorageKey::manifest(KEY).unwrap(),
                crate::media_type::DOCKER_MANIFEST,
                bytes_stream(Bytes::from_static(b"{\"schemaVersion\":2}")),
            )
            .await
            .unwrap();
        let cache = ManifestCache::new(storage, 8, None).unwrap();
        assert!(cache.get(KEY).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn disk_entry_whose_blob_is_missing_from_storage_is_a_miss() {
        let root = tempfile::tempdir().unwrap();
        let local = tempfile::tempdir().unwrap();
        let built = image(2);
        std::fs::write(local.path().join(KEY), &built.docker.bytes).unwrap();
        std::fs::write(local.path().join(format!("{KEY}.oci")), &built.oci.bytes).unwrap();
        let cache = ManifestCache::new(storage(root.path()), 8, Some(local.path().into())).unwrap();
        assert!(cache.get(KEY).await.unwrap().is_none());
        assert!(!local.path().join(KEY).exists(), "stale entry kept");
        assert!(
            !local.path().join(format!("{KEY}.oci")).exists(),
            "stale OCI entry kept"
        );
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

    #[tokio::test]
    async fn an_index_read_back_from_disk_or_storage_keeps_its_media_type() {
        let root = tempfile::tempdir().unwrap();
        let local = tempfile::tempdir().unwrap();
        let storage = storage(root.path());
        let index = crate::image_index::assemble(
            crate::image_index::IndexKind::DockerList,
            &[crate::image_index::IndexEntry {
                platform: crate::platform::Platform::host(),
                digest: Digest::parse_hex(&"c".repeat(64)).unwrap(),
                size: 10,
            }],
        )
        .unwrap();
        let built = BuiltManifest::with_media_type(
            Bytes::from(index),
            crate::media_type::DOCKER_MANIFEST_LIST,
        );
        store_blob(&storage, &built).await;
        let cache = ManifestCache::new(storage.clone(), 8, Some(local.path().into())).unwrap();
        cache
            .put(
                KEY,
                &ImageManifests::single(built.clone()),
                Stamp::UNCHECKED,
            )
            .await
            .unwrap();
        assert!(!local.path().join(format!("{KEY}.oci")).exists());
        let from_disk = ManifestCache::new(storage.clone(), 8, Some(local.path().into())).unwrap();
        let (found, tier) = from_disk.get(KEY).await.unwrap().unwrap();
        assert_eq!(
            (found.docker.media_type, tier),
            (built.media_type, Tier::Disk)
        );
        assert_eq!(found.oci.digest, built.digest);
        let from_storage = ManifestCache::new(storage, 8, None).unwrap();
        let (found, tier) = from_storage.get(KEY).await.unwrap().unwrap();
        assert_eq!(
            (found.docker.media_type, tier),
            (built.media_type, Tier::Storage)
        );
        assert_eq!(found.docker.digest, built.digest);
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
        assert!(cache.disk_path("../x.oci").is_none());
        assert!(cache.disk_path(".oci").is_none());
        assert!(cache.disk_path("").is_none());
        assert!(cache.get("../x").await.unwrap().is_none());
    }
}
