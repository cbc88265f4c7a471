//! Signed redirect URLs, kept for part of their lifetime.
//!
//! A backend that redirects blob requests signs a URL per request: an
//! HMAC chain for S3 (SigV4), an RSA signature for GCS (V4). That is the
//! warm redirect's main cost (about 0.2 ms of CPU per S3 URL), spent again
//! for every client of a popular layer. A signed URL names its key, method
//! and expiry, not its client, so one URL can answer every request for the
//! key while enough of its lifetime remains: it is handed out until half
//! its lifetime has passed ([`REUSE_FRACTION`]), so a client always gets
//! at least half the configured lifetime to start its download, and at
//! most one signature per key and half lifetime is computed.

use std::future::Future;
use std::time::{Duration, Instant};

use super::{StorageError, StorageKey};

/// A URL is reused while less than `lifetime / REUSE_FRACTION` has passed
/// since it was signed.
pub const REUSE_FRACTION: u32 = 2;

/// Keys remembered at most (a URL of a few hundred bytes each).
const CAPACITY: usize = 65_536;

/// Signed URLs by key, each with the moment it was signed.
pub struct SignedUrls {
    urls: Option<quick_cache::sync::Cache<StorageKey, (String, Instant)>>,
    reuse_for: Duration,
}

impl SignedUrls {
    /// A cache for URLs signed to last `lifetime`; `reuse` false signs
    /// every URL afresh (what a benchmark compares against).
    pub fn new(lifetime: Duration, reuse: bool) -> SignedUrls {
        SignedUrls {
            urls: reuse.then(|| quick_cache::sync::Cache::new(CAPACITY)),
            reuse_for: lifetime / REUSE_FRACTION,
        }
    }

    /// The URL for `key`: one signed less than a reuse period ago, else a
    /// new one from `sign`, remembered.
    pub async fn get_or_sign<F, Fut>(
        &self,
        key: &StorageKey,
        sign: F,
    ) -> Result<String, StorageError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<String, StorageError>>,
    {
        let Some(urls) = &self.urls else {
            return sign().await;
        };
        if let Some((url, signed)) = urls.get(key)
            && signed.elapsed() < self.reuse_for
        {
            return Ok(url);
        }
        let signed = Instant::now();
        let url = sign().await?;
        urls.insert(key.clone(), (url.clone(), signed));
        Ok(url)
    }
}

impl std::fmt::Debug for SignedUrls {
    /// The URLs are secrets (anyone holding one may download): never shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedUrls")
            .field("reuse", &self.urls.is_some())
            .field("reuse_for", &self.reuse_for)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    async fn sign_counted(calls: &AtomicUsize) -> Result<String, StorageError> {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        Ok(format!("https://bucket/key?sig={n}"))
    }

    #[tokio::test]
    async fn a_url_is_reused_for_half_its_lifetime_then_signed_again() {
        let key = StorageKey::build("k").unwrap();
        let calls = AtomicUsize::new(0);
        let urls = SignedUrls::new(Duration::from_secs(2), true);
        let first = urls
            .get_or_sign(&key, || sign_counted(&calls))
            .await
            .unwrap();
        let again = urls
            .get_or_sign(&key, || sign_counted(&calls))
            .await
            .unwrap();
        assert_eq!(first, again);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Past half the lifetime (1 s): a fresh signature.
        tokio::time::sleep(Duration::from_millis(1050)).await;
        let later = urls
            .get_or_sign(&key, || sign_counted(&calls))
            .await
            .unwrap();
        assert_ne!(later, first);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn without_reuse_every_url_is_signed() {
        let key = StorageKey::build("k").unwrap();
        let calls = AtomicUsize::new(0);
        let urls = SignedUrls::new(Duration::from_secs(300), false);
        for _ in 0..3 {
            urls.get_or_sign(&key, || sign_counted(&calls))
                .await
                .unwrap();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
}
