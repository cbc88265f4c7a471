//! Reading a small object (a record, a cached manifest, a list, the
//! collector's generation) whole into memory, or learning that there is
//! none.
//!
//! Every reader of such an object wants the same three outcomes: the
//! bytes, "none" (the object is absent, or larger than any object of its
//! kind, so it is no entry of ours), or a storage failure, which the
//! backend has already retried and which is never taken for "none" (a
//! bucket brown-out must not look like an empty cache).

use std::io;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::{ByteStream, Storage, StorageError, StorageKey};

/// The object at `key`: `Ok(None)` if it does not exist or is larger than
/// `limit` bytes (logged: such an object is none of ours), an error if the
/// backend failed.
pub async fn read_small(
    storage: &dyn Storage,
    key: &StorageKey,
    limit: usize,
) -> Result<Option<Bytes>, StorageError> {
    let stream = match storage.fetch(key).await {
        Ok(stream) => stream,
        Err(StorageError::NotFound(_)) => return Ok(None),
        Err(error) => {
            tracing::warn!(key = %key, backend = storage.name(), error = %error, "small object read failed");
            return Err(error);
        }
    };
    match read_bounded(stream, limit).await {
        Ok(bytes) => Ok(Some(bytes)),
        Err(error) if error.kind() == io::ErrorKind::FileTooLarge => {
            tracing::warn!(key = %key, backend = storage.name(), limit, "ignoring an oversized object");
            Ok(None)
        }
        Err(source) => {
            tracing::warn!(key = %key, backend = storage.name(), error = %source, "small object read failed");
            Err(StorageError::Io {
                key: key.clone(),
                source,
            })
        }
    }
}

/// Collect a stream of at most `limit` bytes; a longer one is an error of
/// kind [`io::ErrorKind::FileTooLarge`].
pub async fn read_bounded(mut stream: ByteStream, limit: usize) -> io::Result<Bytes> {
    let mut buffer = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if buffer.len() + chunk.len() > limit {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                "object larger than its kind's limit",
            ));
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(buffer.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{cache::bytes_stream, storage::filesystem::FilesystemStorage};

    #[tokio::test]
    async fn read_bounded_rejects_oversized_objects() {
        let stream = bytes_stream(Bytes::from(vec![0u8; 10]));
        assert!(read_bounded(stream, 9).await.is_err());
        let stream = bytes_stream(Bytes::from(vec![0u8; 10]));
        assert_eq!(read_bounded(stream, 10).await.unwrap().len(), 10);
    }

    #[tokio::test]
    async fn absent_and_oversized_objects_read_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FilesystemStorage::new(dir.path()).unwrap();
        let key = StorageKey::build("k").unwrap();
        assert_eq!(read_small(&storage, &key, 4).await.unwrap(), None);
        storage
            .persist(
                &key,
                "application/json",
                bytes_stream(Bytes::from_static(b"12345")),
            )
            .await
            .unwrap();
        assert_eq!(read_small(&storage, &key, 4).await.unwrap(), None);
        assert_eq!(
            read_small(&storage, &key, 5).await.unwrap().as_deref(),
            Some(&b"12345"[..])
        );
    }
}
