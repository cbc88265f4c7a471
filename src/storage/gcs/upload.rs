//! Streaming an object into the bucket while hashing it.
//!
//! The body is read item by item into a buffer. While the buffer holds more
//! than one chunk, the first chunk is sent as part of a resumable upload,
//! so at most about one chunk (plus one stream item) is held in memory
//! whatever the object's size. The object is only created when the last
//! chunk, which carries the total size, is accepted: an interrupted upload
//! leaves nothing under the key. A body that ends before filling one chunk
//! is sent in a single media upload instead.
//!
//! A chunk whose `PUT` fails transiently is sent again, with back-off, from
//! the last offset the server confirmed; the server ignores bytes it
//! already holds and its `308` answer reports how far it got, and sending
//! resumes from there. (The status query `Content-Range: bytes */*` would
//! save resending, but fake-gcs-server completes the upload on it.) A last
//! chunk whose answer was lost finds the session gone (`404`) on the
//! retry: the upload then checks that the object exists with the expected
//! size.

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use reqwest::Url;
use sha2::{Digest, Sha256};

use super::api::{ChunkOutcome, JsonApi};
use super::error::ApiError;
use crate::storage::{ByteStream, Persisted};

/// Chunk sizes of resumable uploads must be multiples of this (256 KiB),
/// except for the last chunk.
pub const CHUNK_GRANULARITY: usize = 256 * 1024;

/// Why an upload failed.
#[derive(Debug)]
pub(crate) enum UploadError {
    /// Reading the body failed.
    Body(std::io::Error),
    /// The service failed or refused a call.
    Api(ApiError),
}

impl From<ApiError> for UploadError {
    fn from(error: ApiError) -> Self {
        UploadError::Api(error)
    }
}

/// Uploads `body` to `object` with `content_type`, sending chunks of
/// `chunk_size` bytes (a multiple of [`CHUNK_GRANULARITY`]).
pub(crate) async fn upload(
    api: &JsonApi,
    object: &str,
    content_type: &str,
    mut body: ByteStream,
    chunk_size: usize,
) -> Result<Persisted, UploadError> {
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut buffer = BytesMut::new();
    let mut session: Option<Url> = None;
    let mut sent: u64 = 0;

    while let Some(item) = body.next().await {
        let bytes = match item {
            Ok(bytes) => bytes,
            Err(error) => {
                if let Some(session) = &session {
                    api.cancel_resumable(session).await;
                }
                return Err(UploadError::Body(error));
            }
        };
        hasher.update(&bytes);
        size += bytes.len() as u64;
        buffer.extend_from_slice(&bytes);
        // Strictly more than a chunk: the chunk sent now is certainly not
        // the last, so its size can stay open (`*`).
        while buffer.len() > chunk_size {
            let chunk = buffer.split_to(chunk_size).freeze();
            let url = match &session {
                Some(url) => url.clone(),
                None => {
                    let url = api.start_resumable(object, content_type).await?;
                    session = Some(url.clone());
                    url
                }
            };
            if let Err(error) = send_range(api, &url, sent, chunk, None).await {
                api.cancel_resumable(&url).await;
                return Err(error.into());
            }
            sent += chunk_size as u64;
        }
    }

    let last = buffer.freeze();
    match &session {
        None => api.media_upload(object, content_type, last).await?,
        Some(url) => match send_range(api, url, sent, last, Some(size)).await {
            Ok(()) => {}
            // The session is gone: completed by an attempt whose answer was
            // lost, or expired. Only the object can tell.
            Err(error) if error.is_not_found() => {
                if api.object_size(object).await.ok() != Some(size) {
                    return Err(error.into());
                }
            }
            Err(error) => return Err(error.into()),
        },
    }
    Ok(Persisted {
        sha256: crate::digest::Digest::from_hasher(hasher),
        size,
    })
}

/// Sends `data` as bytes `start..` of the upload, resending whatever part
/// the server reports it did not keep, until it holds all of it (or, with
/// `total`, until the object is complete). Transient failures are retried
/// from the last offset the server confirmed.
async fn send_range(
    api: &JsonApi,
    session: &Url,
    start: u64,
    data: Bytes,
    total: Option<u64>,
) -> Result<(), ApiError> {
    let end = start + data.len() as u64;
    let mut offset = start;
    loop {
        let skip = usize::try_from(offset - start).unwrap_or(data.len());
        let rest = data.slice(skip.min(data.len())..);
        let outcome = api
            .retry
            .run("upload chunk", session.path(), || {
                api.put_chunk(session, offset, rest.clone(), total)
            })
            .await?;
        match outcome {
            ChunkOutcome::Complete if total.is_some() => return Ok(()),
            ChunkOutcome::Complete => {
                return Err(ApiError::Protocol(
                    "upload completed before its last chunk".to_owned(),
                ));
            }
            ChunkOutcome::Incomplete { committed } if total.is_none() && committed == end => {
                return Ok(());
            }
            ChunkOutcome::Incomplete { committed } => {
                if committed <= offset || committed > end {
                    return Err(ApiError::Protocol(format!(
                        "server holds {committed} bytes after bytes {offset}..{end} were sent"
                    )));
                }
                offset = committed;
            }
        }
    }
}
