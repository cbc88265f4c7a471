//! What the caches in front of image building share: their error type and
//! writing small objects (reading them is
//! [`crate::storage::small_object`]). The caches themselves are the layer
//! store ([`crate::layer_store`]) and the manifest tiers
//! ([`crate::manifest_cache`]).
//!
//! A storage failure other than "not found" is an error (the backend has
//! already retried it), never a miss, so that a bucket brown-out does not
//! turn every pull into a Nix build.

use std::{io, path::Path};

use bytes::Bytes;
use futures::stream;

use crate::storage::{ByteStream, InvalidKey, StorageError};

/// Errors of the caches that a build must report.
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

/// A one-item stream of `bytes`.
pub fn bytes_stream(bytes: Bytes) -> ByteStream {
    Box::pin(stream::once(async move { Ok(bytes) }))
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
