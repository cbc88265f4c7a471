//! The layer store: every packed layer, found or packed behind one call.
//!
//! [`LayerStore::get_or_pack`] answers "the layer with this cache key" with
//! its build record (`builds/<layer-key>`, in upstream Nixery's format, see
//! [`record`]): from memory, else from storage, else by packing it. Packing
//! streams the layer into `layers/<sha256>` (the backend stages it its own
//! way, see [`Storage::persist_blob`]) and writes the record only once the
//! blob is in place, so a record found here always points at an existing
//! blob. Concurrent builds needing the same layer wait for one upload
//! (check, lock the key, check again), and at most `pack_concurrency`
//! layers are packed at once across all builds.
//!
//! Records found or written are kept in a bounded in-memory map of
//! [`MEMORY_RECORDS`] entries; a miss there costs one storage read. A
//! corrupt stored record is a miss (logged); a storage failure other than
//! "not found" is an error (the backend has already retried it), never a
//! miss, so that a bucket brown-out does not turn every pull into packing.

pub mod record;

use std::{
    collections::HashMap,
    sync::{Arc, Weak},
};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::{
    sync::{OwnedMutexGuard, Semaphore},
    task::{JoinError, JoinHandle},
};

use crate::{
    archive::{ArchiveError, TarSummary},
    cache::{CacheError, bytes_stream},
    digest::Digest,
    gc::tiers::{Guard, Stamped},
    media_type::DOCKER_LAYER,
    storage::{ByteStream, Persisted, Storage, StorageError, StorageKey},
};
pub use record::LayerRecord;

/// Build records kept in memory (about 200 bytes each).
pub const MEMORY_RECORDS: usize = 16 * 1024;

/// Largest build record read back from storage.
const MAX_RECORD: usize = 16 * 1024 * 1024;

/// Content type of build records.
const RECORD_CONTENT_TYPE: &str = "application/json";

/// A layer being packed: its gzipped tar stream, and the task producing it,
/// which reports the uncompressed tar's hash at the end.
pub type Packing = (ByteStream, JoinHandle<Result<TarSummary, ArchiveError>>);

/// Why a layer could not be found or stored.
#[derive(Debug, thiserror::Error)]
pub enum LayerStoreError {
    /// Reading or writing storage failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// Packing the layer's files failed.
    #[error("packing layer {layer}")]
    Pack {
        /// The layer's cache key.
        layer: String,
        /// What went wrong.
        #[source]
        source: ArchiveError,
    },
    /// The packing task stopped without a result (it panicked).
    #[error("the packing task of layer {layer} stopped")]
    PackTask {
        /// The layer's cache key.
        layer: String,
        /// Why the task ended.
        #[source]
        source: JoinError,
    },
}

/// How [`LayerStore::get_or_pack`] came by a layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stored {
    /// The layer was already recorded.
    Found(LayerRecord),
    /// The layer was packed and recorded now.
    Packed(LayerRecord),
}

impl Stored {
    /// The layer's record.
    pub fn record(&self) -> &LayerRecord {
        match self {
            Stored::Found(record) | Stored::Packed(record) => record,
        }
    }
}

/// Layers in storage, their records, and the locks and slots of packing.
pub struct LayerStore {
    storage: Arc<dyn Storage>,
    /// Records with the collection generation they were read under.
    records: quick_cache::sync::Cache<String, Stamped<LayerRecord>>,
    upload_locks: KeyedLocks,
    pack_slots: Semaphore,
    gc: Guard,
}

impl LayerStore {
    /// A store over `storage` packing at most `pack_concurrency` layers at
    /// once, with nothing in memory yet.
    pub fn new(storage: Arc<dyn Storage>, pack_concurrency: usize) -> Self {
        Self {
            storage,
            records: quick_cache::sync::Cache::new(MEMORY_RECORDS),
            upload_locks: KeyedLocks::default(),
            pack_slots: Semaphore::new(pack_concurrency.max(1)),
            gc: Guard::off(),
        }
    }

    /// The same store, trusting records in memory only as `gc` allows
    /// (see [`crate::gc::tiers`]).
    pub fn with_gc(self, gc: Guard) -> Self {
        Self { gc, ..self }
    }

    /// Forget every record that names one of the blobs `missing` (a
    /// collection removed them): in memory, and in storage, so that the
    /// layers are packed again. The other records held in memory are
    /// dropped too (they are read again, under the new generation).
    pub async fn forget_records_naming(&self, missing: &[Digest]) -> Result<(), StorageError> {
        let stale: Vec<String> = self
            .records
            .iter()
            .filter(|(_, entry)| missing.contains(&entry.value().digest))
            .map(|(key, _)| key)
            .collect();
        self.records.clear();
        for layer_key in stale {
            if let Ok(key) = StorageKey::build(&layer_key) {
                self.storage.delete(&key).await?;
                tracing::info!(layer = %layer_key, "forgot a layer record whose blob was collected");
            }
        }
        Ok(())
    }

    /// A record just read or written, stamped.
    fn stamped(&self, record: &LayerRecord) -> Stamped<LayerRecord> {
        Stamped::new(record.clone(), self.gc.read())
    }

    /// The storage backend behind the store.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The layer with cache key `layer_key`: its record if there is one,
    /// else the record of packing it now with `pack` (run under a packing
    /// slot, while no other task packs the same key).
    pub async fn get_or_pack<F>(&self, layer_key: &str, pack: F) -> Result<Stored, LayerStoreError>
    where
        F: FnOnce() -> Packing,
    {
        if let Some(record) = self.record(layer_key).await? {
            return Ok(Stored::Found(record));
        }
        let _upload = self.upload_locks.lock(layer_key).await;
        if let Some(record) = self.record(layer_key).await? {
            return Ok(Stored::Found(record));
        }
        self.pack_and_record(layer_key, pack)
            .await
            .map(Stored::Packed)
    }

    /// The build record of the layer `layer_key`, memory first; `Ok(None)`
    /// when there is none (or only a corrupt one).
    pub async fn record(&self, layer_key: &str) -> Result<Option<LayerRecord>, CacheError> {
        if let Some(entry) = self.records.get(layer_key)
            && let Some(record) = self.gc.trusted(&entry)
        {
            return Ok(Some(record.clone()));
        }
        let key = StorageKey::build(layer_key)?;
        let Some(bytes) =
            crate::storage::small_object::read_small(self.storage.as_ref(), &key, MAX_RECORD)
                .await?
        else {
            return Ok(None);
        };
        match record::decode(&bytes) {
            Ok(record) => {
                self.records
                    .insert(layer_key.to_owned(), self.stamped(&record));
                Ok(Some(record))
            }
            Err(error) => {
                tracing::warn!(key = %key, error = %error, "ignoring corrupt build record");
                Ok(None)
            }
        }
    }

    /// Store a small in-memory blob (an image config, a manifest) under
    /// `layers/<sha256>` directly.
    pub async fn put_blob(
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

    /// Run `pack` under a packing slot, upload its stream, and write the
    /// build record once the blob is in place. The caller holds the upload
    /// lock of `layer_key`.
    async fn pack_and_record<F>(
        &self,
        layer_key: &str,
        pack: F,
    ) -> Result<LayerRecord, LayerStoreError>
    where
        F: FnOnce() -> Packing,
    {
        // The semaphore is never closed.
        let _slot = self.pack_slots.acquire().await;
        let (body, packer) = pack();
        let uploaded = self.storage.persist_blob(DOCKER_LAYER, body).await;
        let packed = packer.await.map_err(|source| LayerStoreError::PackTask {
            layer: layer_key.to_owned(),
            source,
        })?;
        let (summary, persisted) = match (packed, uploaded) {
            (Ok(summary), uploaded) => (summary, uploaded.map_err(CacheError::from)?),
            // The upload gave up first (the storage failed); the packer
            // only saw its consumer go, so the upload error is the cause.
            (Err(ArchiveError::ConsumerGone), Err(error)) => {
                return Err(CacheError::from(error).into());
            }
            (Err(source), _) => {
                return Err(LayerStoreError::Pack {
                    layer: layer_key.to_owned(),
                    source,
                });
            }
        };
        let record = LayerRecord {
            digest: persisted.sha256,
            size: persisted.size,
            diff_id: summary.diff_id,
        };
        self.put_record(layer_key, &record).await?;
        Ok(record)
    }

    /// Record that the layer `layer_key` is stored as `record`. Only once
    /// the blob is in place.
    async fn put_record(&self, layer_key: &str, record: &LayerRecord) -> Result<(), CacheError> {
        let key = StorageKey::build(layer_key)?;
        let json = Bytes::from(record::encode(record)?);
        self.storage
            .persist(&key, RECORD_CONTENT_TYPE, bytes_stream(json))
            .await?;
        self.records
            .insert(layer_key.to_owned(), self.stamped(record));
        Ok(())
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
mod tests;
