//! What the caches in front of image building share: their error type and
//! reading and writing small objects. The caches themselves are the layer
//! store ([`crate::layer_store`]) and the manifest tiers
//! ([`crate::manifest_cache`]).
//!
//! A storage failure other than "not found" is an error (the backend has
//! already retried it), never a miss, so that a bucket brown-out does not
//! turn every pull into a Nix build.

use std::{io, path::Path};

use bytes::{Bytes, BytesMut};
use futures::{StreamExt, stream};

use crate::storage::{ByteStream, InvalidKey, Storage, StorageError, StorageKey};

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

/// The object at `key`: `Ok(None)` if it does not exist or is larger than
/// `limit` bytes (then it is no cache entry), an error if the backend
/// failed.
pub(crate) async fn read_object(
    storage: &dyn Storage,
    key: &StorageKey,
    limit: usize,
) -> Result<Option<Bytes>, StorageError> {
    let stream = match storage.fetch(key).await {
        Ok(stream) => stream,
        Err(StorageError::NotFound(_)) => return Ok(None),
        Err(error) => {
            tracing::warn!(key = %key, backend = storage.name(), error = %error, "cache lookup failed");
            return Err(error);
        }
    };
    match read_bounded(stream, limit).await {
        Ok(bytes) => Ok(Some(bytes)),
        Err(error) if error.kind() == io::ErrorKind::FileTooLarge => {
            tracing::warn!(key = %key, backend = storage.name(), "ignoring oversized cache entry");
            Ok(None)
        }
        Err(source) => {
            tracing::warn!(key = %key, backend = storage.name(), error = %source, "cache read failed");
            Err(StorageError::Io {
                key: key.clone(),
                source,
            })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn read_bounded_rejects_oversized_objects() {
        let stream = bytes_stream(Bytes::from(vec![0u8; 10]));
        assert!(read_bounded(stream, 9).await.is_err());
        let stream = bytes_stream(Bytes::from(vec![0u8; 10]));
        assert_eq!(read_bounded(stream, 10).await.unwrap().len(), 10);
    }
}
