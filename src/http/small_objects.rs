//! A bounded in-memory cache of small content-addressed objects: manifests
//! fetched by digest, image configs, tiny layers.
//!
//! Objects under `layers/<hex>` never change (their name is the SHA-256 of
//! their bytes), so a copy in memory can never go stale. Only objects of at
//! most [`MAX_OBJECT_LEN`] bytes are kept, only after their bytes were
//! checked against their digest (a corrupt file is served as it is, like
//! before, but never cached), and the total is bounded by the capacity
//! given to [`SmallObjects::new`]; the eviction policy is `quick_cache`'s
//! (a scan-resistant CLOCK variant), which keeps the frequently pulled
//! objects. A hit answers without touching storage.

use axum::http::HeaderValue;
use bytes::Bytes;
use quick_cache::{Weighter, sync::Cache};

use crate::digest::Digest;

/// Largest object kept in memory, in bytes.
pub const MAX_OBJECT_LEN: u64 = 64 * 1024;
/// Default total size of the cached objects, in bytes.
pub const DEFAULT_CAPACITY: u64 = 32 * 1024 * 1024;
/// Bookkeeping counted per entry on top of its bytes.
const ENTRY_OVERHEAD: u64 = 128;

/// One cached object with its stored content type.
#[derive(Clone, Debug)]
pub struct CachedObject {
    /// The object's bytes.
    pub bytes: Bytes,
    /// The content type it was stored with.
    pub content_type: HeaderValue,
}

#[derive(Clone)]
struct BySize;

impl Weighter<Digest, CachedObject> for BySize {
    fn weight(&self, _: &Digest, object: &CachedObject) -> u64 {
        object.bytes.len() as u64 + size_of::<Digest>() as u64 + ENTRY_OVERHEAD
    }
}

/// The cache, keyed by the object's SHA-256.
pub struct SmallObjects {
    cache: Cache<Digest, CachedObject, BySize>,
}

impl SmallObjects {
    /// An empty cache holding at most `capacity` bytes of objects.
    pub fn new(capacity: u64) -> Self {
        let estimated_items = usize::try_from(capacity / 4096)
            .unwrap_or(usize::MAX)
            .max(16);
        Self {
            cache: Cache::with_weighter(estimated_items, capacity, BySize),
        }
    }

    /// The object whose SHA-256 is `digest`, if cached.
    pub fn get(&self, digest: &Digest) -> Option<CachedObject> {
        self.cache.get(digest)
    }

    /// Remember `bytes` as the object `digest` if it is small enough and
    /// its SHA-256 really is `digest`. Returns the object either way.
    pub fn insert(&self, digest: &Digest, bytes: Bytes, content_type: HeaderValue) -> CachedObject {
        let object = CachedObject {
            bytes,
            content_type,
        };
        if object.bytes.len() as u64 > MAX_OBJECT_LEN {
            return object;
        }
        if Digest::of(&object.bytes) == *digest {
            self.cache.insert(*digest, object.clone());
        } else {
            tracing::warn!(
                digest = %digest,
                "stored object does not match its digest, not caching it"
            );
        }
        object
    }

    /// Drop every object (a collection may have removed some of them from
    /// storage, and a manifest must not be served once its layers are gone).
    pub fn clear(&self) {
        self.cache.clear();
    }

    /// Bytes held, as counted against the capacity.
    pub fn weight(&self) -> u64 {
        self.cache.weight()
    }
}

impl Default for SmallObjects {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex_of(bytes: &[u8]) -> Digest {
        Digest::of(bytes)
    }

    const TYPE: HeaderValue = HeaderValue::from_static("application/json");

    #[test]
    fn verified_small_objects_are_cached() {
        let cache = SmallObjects::default();
        let hex = hex_of(b"{}");
        assert!(cache.get(&hex).is_none());
        cache.insert(&hex, Bytes::from_static(b"{}"), TYPE);
        let hit = cache.get(&hex).unwrap();
        assert_eq!(hit.bytes, &b"{}"[..]);
        assert_eq!(hit.content_type, "application/json");
    }

    #[test]
    fn bytes_that_do_not_match_the_digest_are_not_cached() {
        let cache = SmallObjects::default();
        let hex = hex_of(b"the real bytes");
        let served = cache.insert(&hex, Bytes::from_static(b"corrupt"), TYPE);
        assert_eq!(served.bytes, &b"corrupt"[..]);
        assert!(cache.get(&hex).is_none());
    }

    #[test]
    fn large_objects_are_not_cached() {
        let cache = SmallObjects::default();
        let big = vec![7u8; MAX_OBJECT_LEN as usize + 1];
        let hex = hex_of(&big);
        cache.insert(&hex, Bytes::from(big), TYPE);
        assert!(cache.get(&hex).is_none());
    }

    #[test]
    fn the_total_stays_within_the_capacity() {
        let capacity = 256 * 1024;
        let cache = SmallObjects::new(capacity);
        for i in 0..100u32 {
            let bytes = vec![(i % 256) as u8; 16 * 1024 + i as usize];
            cache.insert(&hex_of(&bytes), Bytes::from(bytes), TYPE);
        }
        assert!(cache.weight() <= capacity, "{}", cache.weight());
        assert!(cache.weight() > 0);
    }
}
