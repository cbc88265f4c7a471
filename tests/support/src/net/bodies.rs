//! Test bodies for the storage backend tests (GCS and S3): deterministic
//! data, streams of it, a stream that pauses at a given offset, and
//! reading a stream back.

/// `len` bytes of deterministic, incompressible-looking data.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            // xorshift64: cheap and good enough to defeat any dedup.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// A body stream that yields `data` in items of `item` bytes.
pub fn body_of(data: Vec<u8>, item: usize) -> nixery::storage::ByteStream {
    let items: Vec<std::io::Result<bytes::Bytes>> = data
        .chunks(item)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    Box::pin(futures::stream::iter(items))
}

/// A body yielding `data` in items of `item` bytes that, once `gate_at`
/// bytes have been yielded, signals `reached` and waits for `resume` (or
/// its drop) before yielding the rest.
pub fn gated_body(
    data: Vec<u8>,
    item: usize,
    gate_at: usize,
) -> (
    nixery::storage::ByteStream,
    tokio::sync::oneshot::Receiver<()>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (reached_tx, reached_rx) = tokio::sync::oneshot::channel();
    let (resume_tx, resume_rx) = tokio::sync::oneshot::channel();
    let state = (data, 0usize, Some(reached_tx), Some(resume_rx));
    let stream = futures::stream::unfold(state, move |(data, pos, reached, resume)| async move {
        let (mut reached, mut resume) = (reached, resume);
        if pos >= gate_at
            && let (Some(tx), Some(rx)) = (reached.take(), resume.take())
        {
            let _ = tx.send(());
            let _ = rx.await;
        }
        if pos >= data.len() {
            return None;
        }
        let end = (pos + item).min(data.len());
        let bytes = bytes::Bytes::copy_from_slice(&data[pos..end]);
        Some((Ok(bytes), (data, end, reached, resume)))
    });
    (Box::pin(stream), reached_rx, resume_tx)
}

/// Reads a whole stream into memory.
pub async fn collect(mut stream: nixery::storage::ByteStream) -> std::io::Result<Vec<u8>> {
    use futures::StreamExt;
    let mut out = Vec::new();
    while let Some(item) = stream.next().await {
        out.extend_from_slice(&item?);
    }
    Ok(out)
}

/// The whole object at `key` of `storage`; fails the test if it cannot be
/// read.
pub async fn read_whole(
    storage: &impl nixery::storage::Storage,
    key: &nixery::storage::StorageKey,
) -> Vec<u8> {
    let stream = storage
        .fetch(key)
        .await
        .unwrap_or_else(|e| panic!("fetching {key}: {e}"));
    collect(stream)
        .await
        .unwrap_or_else(|e| panic!("reading {key}: {e}"))
}

/// Store `data` at `key` with `content_type`, sent in items of `item`
/// bytes; fails the test if the backend refuses.
pub async fn put(
    storage: &impl nixery::storage::Storage,
    key: &nixery::storage::StorageKey,
    content_type: &str,
    data: &[u8],
    item: usize,
) {
    storage
        .persist(key, content_type, body_of(data.to_vec(), item))
        .await
        .unwrap_or_else(|e| panic!("persisting {key}: {e}"));
}

/// Fails the test unless `storage` has no object at `key` (a fetch is
/// "not found").
pub async fn assert_absent(
    storage: &impl nixery::storage::Storage,
    key: &nixery::storage::StorageKey,
) {
    match storage.fetch(key).await {
        Err(nixery::storage::StorageError::NotFound(_)) => {}
        Ok(_) => panic!("{key} exists"),
        Err(e) => panic!("fetching {key}: {e}, not \"not found\""),
    }
}
