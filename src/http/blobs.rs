//! Serving content-addressed objects (`layers/<hex>`): blobs, and manifests
//! fetched by digest. Small objects come from memory once fetched
//! ([`SmallObjects`]); otherwise the storage backend decides how (a
//! redirect or a byte stream) and this module turns its answer into a
//! response.

use axum::{
    body::Body,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::{
    DOCKER_CONTENT_DIGEST,
    error::RegistryError,
    small_objects::{CachedObject, MAX_OBJECT_LEN, SmallObjects},
};
use crate::{
    reference::Digest,
    storage::{ByteRange, ByteStream, ServeRequest, Served, Storage, StorageError, StorageKey},
};

/// Parse a `Range` header with `http-range-header` (the parser
/// `tower-http` serves files with). Only a single `bytes=` range is
/// honoured; any other value (several ranges, another unit, or one the
/// crate finds malformed) is ignored and the whole blob is sent, which
/// RFC 9110 §14.2 allows ("a server MAY ignore the Range header field").
///
/// Resolving the range needs the object's length, which the backend
/// knows, so only the crate's syntactic pass is used here and
/// [`ByteRange::resolve`] does the rest. Two well-formed ranges the crate
/// refuses in that pass are still answered as RFC 9110 §14.1.1 reads
/// them: `bytes=-0` is a valid, unsatisfiable suffix (416), and an
/// inverted `bytes=500-0` passes the syntactic pass and resolves to
/// nothing (416, as the distribution-spec conformance suite expects).
/// The crate also refuses leading zeros (`bytes=007-9`, which the grammar
/// allows) and whitespace inside a range (which it does not): such a
/// header is ignored too. No registry client sends either.
pub fn parse_range(value: &HeaderValue) -> Option<ByteRange> {
    use http_range_header::{EndPosition, RangeUnsatisfiableError, StartPosition};

    let text = value.to_str().ok()?;
    match http_range_header::parse_range_header(text) {
        Ok(parsed) => match parsed.ranges.as_slice() {
            [range] => Some(match (range.start, range.end) {
                (StartPosition::FromLast(n), _) => ByteRange::Suffix(n),
                (StartPosition::Index(start), EndPosition::LastByte) => {
                    ByteRange::From { start, end: None }
                }
                (StartPosition::Index(start), EndPosition::Index(end)) => ByteRange::From {
                    start,
                    end: Some(end),
                },
            }),
            _ => None,
        },
        Err(RangeUnsatisfiableError::ZeroSuffix) if !text.contains(',') => {
            Some(ByteRange::Suffix(0))
        }
        Err(_) => None,
    }
}

/// What is being served: decides the error code and which objects count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A blob: the stored content type, ranges honoured.
    Blob,
    /// A manifest by digest: only an object stored as one of `media_types`
    /// (any other is unknown), served with its stored type, ranges ignored.
    Manifest {
        media_types: &'static [&'static str],
    },
}

/// Answer a GET or HEAD for the object with `digest`: from `objects` if it
/// is there, else from storage (a full GET of a small object fills
/// `objects`).
pub async fn serve(
    storage: &dyn Storage,
    objects: &SmallObjects,
    digest: &Digest,
    kind: Kind,
    head: bool,
    headers: &HeaderMap,
) -> Result<Response, RegistryError> {
    let not_found = || match kind {
        Kind::Blob => RegistryError::blob_unknown(&digest.to_string()),
        Kind::Manifest { .. } => RegistryError::manifest_unknown(&digest.to_string()),
    };
    let range = match kind {
        Kind::Blob => headers.get(header::RANGE).and_then(parse_range),
        Kind::Manifest { .. } => None,
    };
    let request = ServeRequest {
        range,
        head,
        only_content_types: match kind {
            Kind::Blob => None,
            Kind::Manifest { media_types } => Some(media_types),
        },
    };
    if let Some(object) = objects.get(digest) {
        // Only a manifest is served as one, from memory as from storage.
        if !request.admits(object.content_type.to_str().ok()) {
            return Err(not_found());
        }
        return from_memory(object, digest, kind, head, request.range);
    }
    let key = StorageKey::layer(digest);
    let served = match storage.serve(&key, &request).await {
        Ok(served) => served,
        Err(StorageError::NotFound(_)) => return Err(not_found()),
        Err(e) => return Err(e.into()),
    };
    match served {
        Served::Redirect { location } => {
            let location = HeaderValue::try_from(location).map_err(RegistryError::internal)?;
            Ok((StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response())
        }
        Served::RangeNotSatisfiable { total_len } => range_not_satisfiable(total_len),
        Served::Content {
            body: Some(body),
            total_len,
            range: None,
            content_type,
        } if total_len <= MAX_OBJECT_LEN => {
            let bytes = read_small(body, total_len)
                .await
                .map_err(|source| StorageError::Io { key, source })?;
            let content_type =
                HeaderValue::try_from(content_type).map_err(RegistryError::internal)?;
            let object = objects.insert(digest, bytes, content_type);
            from_memory(object, digest, kind, head, None)
        }
        Served::Content {
            body,
            total_len,
            range,
            content_type,
        } => {
            let content_type =
                HeaderValue::try_from(content_type).map_err(RegistryError::internal)?;
            let body = body.map_or_else(Body::empty, Body::from_stream);
            content_response(digest, kind, content_type, total_len, range, body)
        }
    }
}

/// Read a small object's whole body (at most `len` bytes are kept).
async fn read_small(mut body: ByteStream, len: u64) -> std::io::Result<Bytes> {
    let mut bytes = BytesMut::with_capacity(usize::try_from(len).unwrap_or(0));
    while let Some(chunk) = body.next().await {
        bytes.extend_from_slice(&chunk?);
    }
    Ok(bytes.freeze())
}

/// Answer from an object held in memory, resolving `range` against it.
fn from_memory(
    object: CachedObject,
    digest: &Digest,
    kind: Kind,
    head: bool,
    range: Option<ByteRange>,
) -> Result<Response, RegistryError> {
    let total_len = object.bytes.len() as u64;
    let range = match range {
        None => None,
        Some(range) => match range.resolve(total_len) {
            Some(resolved) => Some(resolved),
            None => return range_not_satisfiable(total_len),
        },
    };
    let body = if head {
        Body::empty()
    } else {
        match range {
            // Both ends lie within the object, which fits in memory.
            Some((start, end)) => Body::from(object.bytes.slice(start as usize..=end as usize)),
            None => Body::from(object.bytes),
        }
    };
    content_response(digest, kind, object.content_type, total_len, range, body)
}

/// 416 with the `Content-Range` naming the length.
fn range_not_satisfiable(total_len: u64) -> Result<Response, RegistryError> {
    let mut response = RegistryError::range_not_satisfiable(total_len).into_response();
    response.headers_mut().insert(
        header::CONTENT_RANGE,
        HeaderValue::from_str(&format!("bytes */{total_len}")).map_err(RegistryError::internal)?,
    );
    Ok(response)
}

/// 200 or 206 with the registry headers and the stored content type (for
/// a manifest, one of the manifest media types: the storage checked it).
/// `range` is the resolved inclusive
/// range if one is served; `body` holds exactly those bytes (nothing for
/// HEAD).
fn content_response(
    digest: &Digest,
    kind: Kind,
    content_type: HeaderValue,
    total_len: u64,
    range: Option<(u64, u64)>,
    body: Body,
) -> Result<Response, RegistryError> {
    let (status, length) = match range {
        Some((start, end)) => (StatusCode::PARTIAL_CONTENT, end - start + 1),
        None => (StatusCode::OK, total_len),
    };
    let digest_text = digest.to_string();
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, length)
        .header(header::ETAG, format!("\"{digest_text}\""))
        .header(DOCKER_CONTENT_DIGEST, digest_text);
    if kind == Kind::Blob {
        builder = builder.header(header::ACCEPT_RANGES, "bytes");
    }
    if let Some((start, end)) = range {
        builder = builder.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{end}/{total_len}"),
        );
    }
    builder.body(body).map_err(RegistryError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Persisted;
    use async_trait::async_trait;

    /// A backend that, like GCS, answers every request with a redirect.
    struct Redirecting;

    #[async_trait]
    impl Storage for Redirecting {
        fn name(&self) -> &'static str {
            "redirecting"
        }
        async fn persist(
            &self,
            key: &StorageKey,
            _: &str,
            _: ByteStream,
        ) -> Result<Persisted, StorageError> {
            Err(StorageError::NotFound(key.clone()))
        }
        async fn fetch(&self, key: &StorageKey) -> Result<ByteStream, StorageError> {
            Err(StorageError::NotFound(key.clone()))
        }
        async fn move_object(&self, from: &StorageKey, _: &StorageKey) -> Result<(), StorageError> {
            Err(StorageError::NotFound(from.clone()))
        }
        async fn stat(
            &self,
            key: &StorageKey,
        ) -> Result<crate::storage::ListedObject, StorageError> {
            Err(StorageError::NotFound(key.clone()))
        }
        async fn create_new(
            &self,
            _: &StorageKey,
            _: &str,
            _: bytes::Bytes,
        ) -> Result<bool, StorageError> {
            Ok(false)
        }
        async fn serve(&self, key: &StorageKey, _: &ServeRequest) -> Result<Served, StorageError> {
            Ok(Served::Redirect {
                location: format!("https://storage.example/{key}?sig=1"),
            })
        }
        fn list_pages(&self, _: crate::storage::KeyPrefix, _: usize) -> crate::storage::Pages<'_> {
            Box::pin(futures::stream::empty())
        }
        async fn delete(&self, _: &StorageKey) -> Result<(), StorageError> {
            Ok(())
        }
        async fn read_versioned(
            &self,
            _: &StorageKey,
            _: usize,
        ) -> Result<Option<(bytes::Bytes, crate::storage::Version)>, StorageError> {
            Ok(None)
        }
        async fn write_if(
            &self,
            _: &StorageKey,
            _: &str,
            _: bytes::Bytes,
            _: Option<&crate::storage::Version>,
        ) -> Result<Option<crate::storage::Version>, StorageError> {
            Ok(None)
        }
    }

    #[tokio::test]
    async fn redirects_become_303_see_other_with_location() {
        let hex = "ab".repeat(32);
        let digest = Digest::parse(&format!("sha256:{hex}")).unwrap();
        for kind in [
            Kind::Blob,
            Kind::Manifest {
                media_types: &["application/x"],
            },
        ] {
            let objects = SmallObjects::default();
            let r = serve(
                &Redirecting,
                &objects,
                &digest,
                kind,
                false,
                &HeaderMap::new(),
            )
            .await
            .unwrap();
            assert_eq!(r.status(), StatusCode::SEE_OTHER);
            assert_eq!(
                r.headers()[header::LOCATION],
                format!("https://storage.example/layers/{hex}?sig=1")
            );
        }
    }

    fn range(s: &str) -> Option<ByteRange> {
        parse_range(&HeaderValue::from_str(s).unwrap())
    }

    #[test]
    fn single_byte_ranges_parse() {
        assert_eq!(
            range("bytes=0-99"),
            Some(ByteRange::From {
                start: 0,
                end: Some(99)
            })
        );
        assert_eq!(
            range("bytes=5-"),
            Some(ByteRange::From {
                start: 5,
                end: None
            })
        );
        assert_eq!(range("bytes=-7"), Some(ByteRange::Suffix(7)));
        assert_eq!(range("bytes=-0"), Some(ByteRange::Suffix(0)));
        assert_eq!(ByteRange::Suffix(0).resolve(100), None);
    }

    #[test]
    fn inverted_ranges_are_kept_and_resolve_to_nothing() {
        let inverted = range("bytes=5-3").unwrap();
        assert_eq!(
            inverted,
            ByteRange::From {
                start: 5,
                end: Some(3)
            }
        );
        assert_eq!(inverted.resolve(100), None);
    }

    #[test]
    fn other_range_forms_are_ignored() {
        for s in [
            "bytes=0-1,4-5",
            "items=0-1",
            "bytes=-",
            "bytes=a-b",
            "bytes=+1-2",
            "bytes=99999999999999999999999-",
            "0-1",
            "bytes=0-1,-0",
            // Outside RFC 9110's grammar (no whitespace within a range):
            // ignored, the whole blob is sent.
            " bytes= 1 - 2 ",
            "bytes=1 -2",
            // Refused by the crate though the grammar allows it: ignored.
            "bytes=007-9",
        ] {
            assert_eq!(range(s), None, "{s}");
        }
    }
}
