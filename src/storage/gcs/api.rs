//! The few Cloud Storage JSON API calls the backend needs, over `reqwest`.
//!
//! The official `google-cloud-storage` client is not used for transfers:
//! its uploads and downloads do not interoperate with fake-gcs-server and
//! its object control calls speak gRPC, which no emulator serves (issue 6
//! records the measurements). The JSON API is documented, small and works
//! against both Google and the emulator.

use std::time::Duration;

use bytes::Bytes;
use reqwest::{Client, RequestBuilder, Response, StatusCode, Url, header};
use serde::Deserialize;

use super::auth::Auth;
use super::endpoint::Endpoint;
use super::error::ApiError;
use super::retry::RetryPolicy;

/// Longest retrying of the bucket lookup at start-up.
const CONNECT_RETRY_TOTAL: Duration = Duration::from_secs(5);

/// How much of an error response body is kept in an error message.
const MAX_ERROR_BODY: usize = 512;

/// Where a resumable upload stands after one `PUT`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ChunkOutcome {
    /// `308`: the server holds the first `committed` bytes.
    Incomplete { committed: u64 },
    /// `200`/`201`: the object is complete and visible.
    Complete,
}

/// Part of a `storage#object`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectMetadata {
    #[serde(default)]
    content_type: Option<String>,
    /// Decimal string, as the JSON API sends 64-bit numbers.
    #[serde(default)]
    size: Option<String>,
}

/// One page of a `storage#objects` listing.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListPage {
    #[serde(default)]
    items: Vec<ListItem>,
    #[serde(default)]
    next_page_token: Option<String>,
}

/// One object of a listing: its name, size (a decimal string) and last
/// update (RFC 3339).
#[derive(Deserialize)]
pub(crate) struct ListItem {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) size: Option<String>,
    #[serde(default)]
    pub(crate) updated: Option<String>,
    #[serde(default, rename = "contentType")]
    pub(crate) content_type: Option<String>,
}

/// The generation of an object (a decimal string in the JSON API).
#[derive(Deserialize)]
struct Generation {
    generation: String,
}

/// Part of a `storage#rewriteResponse`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RewriteResponse {
    done: bool,
    #[serde(default)]
    rewrite_token: Option<String>,
}

/// An authorised JSON API client bound to one bucket.
#[derive(Clone, Debug)]
pub(crate) struct JsonApi {
    pub(crate) http: Client,
    pub(crate) auth: Auth,
    pub(crate) endpoint: Endpoint,
    pub(crate) bucket: String,
    /// Bound on every call that does not stream a download body.
    pub(crate) request_timeout: Duration,
    /// How transient failures are retried.
    pub(crate) retry: RetryPolicy,
}

impl JsonApi {
    /// Sends `request` with credentials and the request timeout.
    async fn send(&self, request: RequestBuilder) -> Result<Response, ApiError> {
        self.send_with(request, Some(self.request_timeout)).await
    }

    async fn send_with(
        &self,
        request: RequestBuilder,
        timeout: Option<Duration>,
    ) -> Result<Response, ApiError> {
        let headers = self.auth.headers().await.map_err(ApiError::Auth)?;
        let mut request = request.headers(headers);
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        request.send().await.map_err(|e| self.transport(e))
    }

    /// Converts a `reqwest` error, naming timeouts as such.
    pub(crate) fn transport(&self, error: reqwest::Error) -> ApiError {
        if error.is_timeout() {
            ApiError::Timeout(self.request_timeout)
        } else {
            ApiError::Transport(crate::error_text::chain(&error))
        }
    }

    /// `GET` the bucket: fails unless it exists and is readable.
    /// Retried for at most [`CONNECT_RETRY_TOTAL`]: a bucket that is not
    /// there at start-up is reported soon.
    pub(crate) async fn get_bucket(&self) -> Result<(), ApiError> {
        let policy = RetryPolicy {
            total: self.retry.total.min(CONNECT_RETRY_TOTAL),
            ..self.retry
        };
        policy
            .run("get bucket", &self.bucket, || async {
                let url = self.endpoint.bucket(&self.bucket);
                let response = self
                    .send(self.http.get(url).query(&[("fields", "name")]))
                    .await?;
                expect_success(response).await.map(drop)
            })
            .await
    }

    /// `GET` an object's metadata: `Ok(())` if it exists.
    pub(crate) async fn object_exists(&self, object: &str) -> Result<(), ApiError> {
        self.content_type(object).await.map(drop)
    }

    /// One page of the objects whose name starts with `prefix`: at most
    /// `page_size` of them, from `token` (the first page without one),
    /// and the token of the next page, if any. One call, retried as
    /// every call is.
    pub(crate) async fn list_page(
        &self,
        prefix: &str,
        token: Option<&str>,
        page_size: usize,
    ) -> Result<(Vec<ListItem>, Option<String>), ApiError> {
        let max_results = page_size.max(1).to_string();
        let page: ListPage = self
            .retry
            .run("list", prefix, || async {
                let url = self.endpoint.objects(&self.bucket);
                let mut request = self.http.get(url).query(&[
                    ("prefix", prefix),
                    ("maxResults", max_results.as_str()),
                    (
                        "fields",
                        "items(name,size,updated,contentType),nextPageToken",
                    ),
                ]);
                if let Some(token) = token {
                    request = request.query(&[("pageToken", token)]);
                }
                expect_success(self.send(request).await?)
                    .await?
                    .json()
                    .await
                    .map_err(|e| self.body_error("object listing", e))
            })
            .await?;
        let next = page.next_page_token.filter(|next| !next.is_empty());
        Ok((page.items, next))
    }

    /// An object's name, size, last update and content type, if it exists.
    pub(crate) async fn stat(&self, object: &str) -> Result<ListItem, ApiError> {
        self.metadata(object, "name,size,updated,contentType").await
    }

    /// Single-request upload that succeeds only if no object of that name
    /// exists (`ifGenerationMatch=0`): `Ok(false)` when one does.
    pub(crate) async fn create_new(
        &self,
        object: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<bool, ApiError> {
        Ok(self
            .upload_if_generation(object, content_type, body, "0")
            .await?
            .is_some())
    }

    /// Single-request upload that succeeds only if the object is at
    /// `generation` (`"0"`: absent): the generation written, or `None`
    /// when the precondition failed. It is a multipart upload (metadata
    /// and bytes in one `multipart/related` body), the kind
    /// fake-gcs-server applies preconditions to.
    pub(crate) async fn upload_if_generation(
        &self,
        object: &str,
        content_type: &str,
        body: Bytes,
        generation: &str,
    ) -> Result<Option<String>, ApiError> {
        const BOUNDARY: &str = "nixery-create-new-boundary";
        let metadata = serde_json::json!({ "name": object, "contentType": content_type });
        let mut multipart = format!(
            "--{BOUNDARY}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{metadata}\r\n--{BOUNDARY}\r\nContent-Type: {content_type}\r\n\r\n"
        )
        .into_bytes();
        multipart.extend_from_slice(&body);
        multipart.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
        let multipart = Bytes::from(multipart);
        let outcome = self
            .retry
            .run("conditional upload", object, || async {
                let url = self.endpoint.upload(&self.bucket, object, "multipart");
                let request = self
                    .http
                    .post(url)
                    .query(&[("ifGenerationMatch", generation)])
                    .header(
                        header::CONTENT_TYPE,
                        format!("multipart/related; boundary={BOUNDARY}"),
                    )
                    .body(multipart.clone());
                expect_success(self.send(request).await?)
                    .await?
                    .json::<Generation>()
                    .await
                    .map_err(|e| self.body_error("upload answer", e))
            })
            .await;
        match outcome {
            Ok(written) => Ok(Some(written.generation)),
            Err(error) if error.is_precondition_failed() => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// The object's bytes with their generation: the metadata, then a
    /// download of exactly that generation. `None` when it is absent or
    /// was replaced in between (the caller reads again).
    pub(crate) async fn download_generation(
        &self,
        object: &str,
    ) -> Result<Option<(Bytes, String)>, ApiError> {
        let current: Generation = match self.metadata(object, "generation").await {
            Ok(current) => current,
            Err(error) if error.is_not_found() => return Ok(None),
            Err(error) => return Err(error),
        };
        let outcome = self
            .retry
            .run("download", object, || async {
                let url = self.endpoint.object(&self.bucket, object);
                let request = self.http.get(url).query(&[
                    ("alt", "media"),
                    ("generation", current.generation.as_str()),
                ]);
                let response = expect_success(self.send(request).await?).await?;
                response
                    .bytes()
                    .await
                    .map_err(|e| self.body_error("object", e))
            })
            .await;
        match outcome {
            Ok(bytes) => Ok(Some((bytes, current.generation))),
            Err(error) if error.is_not_found() || error.is_precondition_failed() => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// `GET` the metadata `fields` (`name,size`) of an object, if it exists,
    /// read into `T`.
    async fn metadata<T: serde::de::DeserializeOwned>(
        &self,
        object: &str,
        fields: &str,
    ) -> Result<T, ApiError> {
        self.retry
            .run("get metadata", object, || async {
                let url = self.endpoint.object(&self.bucket, object);
                let response = self
                    .send(self.http.get(url).query(&[("fields", fields)]))
                    .await?;
                expect_success(response)
                    .await?
                    .json()
                    .await
                    .map_err(|e| self.body_error("object metadata", e))
            })
            .await
    }

    /// An object's size, if it exists.
    pub(crate) async fn object_size(&self, object: &str) -> Result<u64, ApiError> {
        self.metadata::<ObjectMetadata>(object, "name,size")
            .await?
            .size
            .as_deref()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ApiError::Protocol("object metadata without size".to_owned()))
    }

    /// An object's content type, if it exists.
    pub(crate) async fn content_type(&self, object: &str) -> Result<String, ApiError> {
        Ok(self
            .metadata::<ObjectMetadata>(object, "name,contentType")
            .await?
            .content_type
            .unwrap_or_default())
    }

    /// `GET ...?alt=media`: the response whose body is the object. Only the
    /// headers are bounded by the request timeout; the body is bounded by
    /// the client's read timeout (maximum silence between reads).
    /// Only getting the headers is retried.
    pub(crate) async fn download(&self, object: &str) -> Result<Response, ApiError> {
        self.retry
            .run("download", object, || async {
                let url = self.endpoint.object(&self.bucket, object);
                let request = self.http.get(url).query(&[("alt", "media")]);
                let response =
                    tokio::time::timeout(self.request_timeout, self.send_with(request, None))
                        .await
                        .map_err(|_| ApiError::Timeout(self.request_timeout))??;
                expect_success(response).await
            })
            .await
    }

    /// `DELETE` an object.
    pub(crate) async fn delete(&self, object: &str) -> Result<(), ApiError> {
        self.retry
            .run("delete", object, || async {
                let url = self.endpoint.object(&self.bucket, object);
                let response = self.send(self.http.delete(url)).await?;
                expect_success(response).await.map(drop)
            })
            .await
    }

    /// A body that could not be read or decoded: a broken connection is a
    /// transport failure (retried), anything else a protocol error.
    fn body_error(&self, what: &str, error: reqwest::Error) -> ApiError {
        if error.is_decode() {
            ApiError::Protocol(format!("{what}: {error}"))
        } else {
            self.transport(error)
        }
    }

    /// Server-side copy of `from` to `to` in the bucket, repeating the
    /// call with the returned `rewriteToken` until the copy is done.
    pub(crate) async fn rewrite(&self, from: &str, to: &str) -> Result<(), ApiError> {
        self.retry
            .run("rewrite", from, || self.rewrite_once(from, to))
            .await
    }

    async fn rewrite_once(&self, from: &str, to: &str) -> Result<(), ApiError> {
        let url = self.endpoint.rewrite(&self.bucket, from, to);
        let mut token: Option<String> = None;
        loop {
            let mut request = self
                .http
                .post(url.clone())
                .header(header::CONTENT_TYPE, "application/json")
                .body("{}");
            if let Some(token) = &token {
                request = request.query(&[("rewriteToken", token)]);
            }
            let response = expect_success(self.send(request).await?).await?;
            let answer: RewriteResponse = response
                .json()
                .await
                .map_err(|e| self.body_error("rewrite response", e))?;
            if answer.done {
                return Ok(());
            }
            match answer.rewrite_token {
                Some(next) if !next.is_empty() => token = Some(next),
                _ => {
                    return Err(ApiError::Protocol(
                        "rewrite not done and no rewriteToken to continue".to_owned(),
                    ));
                }
            }
        }
    }

    /// Single-request upload of a small object with its content type.
    pub(crate) async fn media_upload(
        &self,
        object: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<(), ApiError> {
        self.retry
            .run("media upload", object, || async {
                let url = self.endpoint.upload(&self.bucket, object, "media");
                let request = self
                    .http
                    .post(url)
                    .header(header::CONTENT_TYPE, content_type)
                    .body(body.clone());
                expect_success(self.send(request).await?).await.map(drop)
            })
            .await
    }

    /// Starts a resumable upload; returns the session URL to `PUT` to.
    pub(crate) async fn start_resumable(
        &self,
        object: &str,
        content_type: &str,
    ) -> Result<Url, ApiError> {
        self.retry
            .run("start upload", object, || async {
                let url = self.endpoint.upload(&self.bucket, object, "resumable");
                let metadata = serde_json::json!({ "name": object, "contentType": content_type });
                let request = self
                    .http
                    .post(url)
                    .header("X-Upload-Content-Type", content_type)
                    .json(&metadata);
                let response = expect_success(self.send(request).await?).await?;
                let location = response
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| {
                        ApiError::Protocol("resumable upload without Location".to_owned())
                    })?;
                Url::parse(location).map_err(|e| ApiError::Protocol(format!("session URL: {e}")))
            })
            .await
    }

    /// `PUT` bytes `start..start+len` of a resumable upload. `total` is the
    /// object size when this is the last chunk, `None` otherwise. Not
    /// retried here: the caller resends from the offset the server last
    /// confirmed.
    pub(crate) async fn put_chunk(
        &self,
        session: &Url,
        start: u64,
        chunk: Bytes,
        total: Option<u64>,
    ) -> Result<ChunkOutcome, ApiError> {
        let range = content_range(start, chunk.len() as u64, total);
        let request = self
            .http
            .put(session.clone())
            .header(header::CONTENT_RANGE, range)
            .body(chunk);
        let response = self.send(request).await?;
        if response.status() == StatusCode::PERMANENT_REDIRECT {
            let committed = match response.headers().get(header::RANGE) {
                None => 0,
                Some(value) => value
                    .to_str()
                    .ok()
                    .and_then(committed_bytes)
                    .ok_or_else(|| ApiError::Protocol(format!("bad Range header {value:?}")))?,
            };
            return Ok(ChunkOutcome::Incomplete { committed });
        }
        expect_success(response).await?;
        Ok(ChunkOutcome::Complete)
    }

    /// Abandons a resumable upload (best effort: errors are ignored, the
    /// service expires abandoned sessions anyway).
    pub(crate) async fn cancel_resumable(&self, session: &Url) {
        let _ = self.send(self.http.delete(session.clone())).await;
    }
}

/// Returns the response if its status is a success, else the status and
/// the start of the body as an error.
async fn expect_success(response: Response) -> Result<Response, ApiError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let mut body = response.text().await.unwrap_or_default();
    if body.len() > MAX_ERROR_BODY {
        let mut end = MAX_ERROR_BODY;
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        body.truncate(end);
    }
    Err(ApiError::Status {
        status,
        body: body.trim().to_owned(),
    })
}

/// The `Content-Range` of a chunk: `bytes a-b/*` while the size is unknown,
/// `bytes a-b/total` for the last chunk, `bytes */total` for an empty one.
pub(crate) fn content_range(start: u64, len: u64, total: Option<u64>) -> String {
    let total = total.map_or_else(|| "*".to_owned(), |t| t.to_string());
    if len == 0 {
        format!("bytes */{total}")
    } else {
        format!("bytes {start}-{}/{total}", start + len - 1)
    }
}

/// Parses a `308` answer's `Range: bytes=0-N` into the committed byte
/// count `N+1`.
pub(crate) fn committed_bytes(range: &str) -> Option<u64> {
    let last = range.strip_prefix("bytes=0-")?.trim().parse::<u64>().ok()?;
    last.checked_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_is_open_until_the_last_chunk() {
        assert_eq!(content_range(0, 262_144, None), "bytes 0-262143/*");
        assert_eq!(
            content_range(262_144, 10, Some(262_154)),
            "bytes 262144-262153/262154"
        );
        assert_eq!(content_range(5, 0, Some(5)), "bytes */5");
    }

    #[test]
    fn committed_bytes_reads_the_inclusive_end() {
        assert_eq!(committed_bytes("bytes=0-262143"), Some(262_144));
        assert_eq!(committed_bytes("bytes=5-9"), None);
        assert_eq!(committed_bytes("garbage"), None);
    }
}
