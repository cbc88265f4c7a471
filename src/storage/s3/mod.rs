//! S3 and S3-compatible storage backend (AWS S3, MinIO, Ceph RGW,
//! Cloudflare R2, Garage, SeaweedFS, ...): one bucket shared by any number
//! of Nixery instances, in upstream Nixery's key layout.
//!
//! Calls go through Apache OpenDAL's S3 service ([`opendal`]), which signs
//! them with credentials from the standard AWS chain (`reqsign`:
//! environment, shared config and credentials files with profiles, SSO,
//! web identity, `credential_process`, container and instance metadata),
//! retries transient failures through its retry layer and bounds every
//! call with its timeout layer. `docs/s3.md` explains the choice of crate.
//!
//! Promises, as for the GCS backend:
//!
//! - `persist` streams the body while hashing it. A body that fits one
//!   part (8 MiB) is sent in one `PutObject`; a larger one as a multipart
//!   upload, part by part, completed only after the last part. Either way
//!   the object appears under its key whole or not at all, and a failed
//!   upload is aborted.
//! - Blobs, whose key is their digest, go to a unique `staging/` key first
//!   and are then copied to `layers/<sha256>` (S3 has no rename), keeping
//!   their content type: server-side up to 5 GiB, streamed above (see
//!   [`S3Options::single_copy_limit`]); staged objects left by a crash are
//!   swept by age.
//! - `serve` checks the object (an absent blob is a registry `404`) and
//!   answers a redirect to a presigned `GET`, or to the plain object URL
//!   when presigning is off. A blob found once is remembered, with its
//!   content type and size, for [`KNOWN_BLOB_TTL`]: blobs are
//!   content-addressed, so a warm redirect makes no call to the bucket,
//!   and its presigned URL is one signed less than half its lifetime ago
//!   ([`super::signed_urls`]), so it costs no signing either. A `HEAD` is
//!   answered from what is known, never redirected.
//!
//! This module knows no HTTP of the registry: it answers [`Served`] values.

mod addressing;
pub mod settings;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use futures::StreamExt;
use opendal::layers::{RetryEvent, RetryLayer, TimeoutLayer};
use opendal::{ErrorKind, HttpTransporter, OperationContext, Operator};
use sha2::{Digest as _, Sha256};

use super::retry_policy::RetryPolicy;
use super::signed_urls::SignedUrls;
use super::{
    BucketUnreachable, ByteStream, KeyPrefix, ListedObject, Persisted, STAGING_PREFIX,
    ServeRequest, Served, Storage, StorageError, StorageKey, Version,
};
pub use settings::{Addressing, S3Settings, StaticKey};

/// Backend name in logs and errors.
const BACKEND: &str = "s3";

/// How long a blob found in the bucket is served without asking again.
/// Blobs never change; this bounds how late a deletion by another
/// instance is noticed (this instance's own deletions are at once).
pub const KNOWN_BLOB_TTL: Duration = Duration::from_secs(60);

/// Blobs remembered at most (a few dozen bytes each).
const KNOWN_BLOBS: usize = 65_536;

/// The content type S3 reports for an object stored without one.
const OCTET_STREAM: &str = "application/octet-stream";

/// Smallest part S3 accepts in a multipart upload (except the last).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;

/// Largest object one `CopyObject` copies (S3's limit, and the size above
/// which OpenDAL switches to a multipart copy).
pub const MAX_SINGLE_COPY: usize = 5 * 1024 * 1024 * 1024;

/// Tunables of the backend; [`S3Options::default`] suits production.
#[derive(Clone, Debug)]
pub struct S3Options {
    /// Size of each multipart upload part, at least [`MIN_PART_SIZE`];
    /// bodies up to this size go in one `PutObject`.
    pub part_size: usize,
    /// Bound on establishing a connection.
    pub connect_timeout: Duration,
    /// Bound on each call that moves no object body (metadata, copy,
    /// delete, listing, completing an upload).
    pub request_timeout: Duration,
    /// Bound on each transfer of body bytes: one part, or one read of a
    /// download.
    pub io_timeout: Duration,
    /// How calls that fail transiently are retried.
    pub retry: RetryPolicy,
    /// Objects smaller than this are moved with one server-side
    /// `CopyObject`; larger ones are streamed through this server into a
    /// new upload, because a multipart copy (`UploadPartCopy`, S3's only
    /// server-side copy above 5 GiB) starts an upload that OpenDAL sends
    /// without the content type, which the copy then loses. At most (and
    /// by default) [`MAX_SINGLE_COPY`]; tests lower it.
    pub single_copy_limit: usize,
    /// Hand out one presigned URL per blob while half its lifetime
    /// remains (see [`super::signed_urls`]) instead of signing one per
    /// request. On by default; off only to measure what it saves.
    pub reuse_signed_urls: bool,
}

impl Default for S3Options {
    fn default() -> Self {
        Self {
            part_size: 8 * 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
            io_timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
            single_copy_limit: MAX_SINGLE_COPY,
            reuse_signed_urls: true,
        }
    }
}

/// Why the backend could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// The part size is below S3's minimum.
    #[error("upload part size {0} is below S3's minimum of 5 MiB")]
    InvalidPartSize(usize),
    /// The single-copy limit is outside what S3 allows.
    #[error("single-copy limit {0} is outside S3's 5 MiB to 5 GiB")]
    InvalidCopyLimit(usize),
    /// The HTTP client or the S3 service could not be built.
    #[error("cannot set up the S3 client: {0}")]
    Client(String),
    /// The bucket could not be listed (absent, no access, no credentials,
    /// or the endpoint does not answer).
    #[error(transparent)]
    BucketUnreachable(#[from] BucketUnreachable),
}

/// The S3 storage backend. Cheap to clone; all clones share one
/// connection pool and one credential cache.
#[derive(Clone)]
pub struct S3Storage {
    op: Operator,
    settings: S3Settings,
    options: S3Options,
    /// Blobs found in the bucket: what is known of them, and when.
    known: Arc<quick_cache::sync::Cache<StorageKey, (KnownBlob, Instant)>>,
    /// Presigned redirect URLs, reused for part of their lifetime.
    signed_urls: Arc<SignedUrls>,
}

impl std::fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Storage")
            .field("bucket", &self.settings.bucket)
            .field("endpoint", &addressing::service_endpoint(&self.settings))
            .field("presigned_urls", &self.settings.presigned_urls)
            .finish()
    }
}

/// What a lookup of a blob found: enough to answer a HEAD.
#[derive(Clone, Debug)]
struct KnownBlob {
    content_type: Option<String>,
    size: u64,
}

/// Logs a retry of a failed call, as the GCS backend does.
fn log_retry(event: RetryEvent<'_>) {
    tracing::warn!(
        backend = BACKEND,
        call = %event.op,
        attempt = event.attempt,
        error = %event.err,
        retry_in_ms = u64::try_from(event.retry_after.as_millis()).unwrap_or(u64::MAX),
        "storage call failed, retrying"
    );
}

impl S3Storage {
    /// Connects with default options: see [`Self::connect_with`].
    pub async fn connect(settings: S3Settings) -> Result<Self, S3Error> {
        Self::connect_with(settings, S3Options::default()).await
    }

    /// Connects to the bucket of `settings` and checks that it can be
    /// listed with its static credentials, or else those the AWS chain
    /// finds.
    pub async fn connect_with(settings: S3Settings, options: S3Options) -> Result<Self, S3Error> {
        if options.part_size < MIN_PART_SIZE {
            return Err(S3Error::InvalidPartSize(options.part_size));
        }
        if !(MIN_PART_SIZE..=MAX_SINGLE_COPY).contains(&options.single_copy_limit) {
            return Err(S3Error::InvalidCopyLimit(options.single_copy_limit));
        }
        let mut builder = opendal::services::S3::default()
            .bucket(&settings.bucket)
            .region(&settings.region)
            .endpoint(&addressing::service_endpoint(&settings));
        if settings.addressing == Addressing::VirtualHosted {
            builder = builder.enable_virtual_host_style();
        }
        if let Some(key) = &settings.static_key {
            builder = builder
                .access_key_id(&key.id)
                .secret_access_key(&key.secret);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .build()
            .map_err(|e| S3Error::Client(crate::error_text::chain(&e)))?;
        let transport =
            HttpTransporter::new(opendal_http_transport_reqwest::ReqwestTransport::new(http));
        let retry = RetryLayer::new()
            .with_jitter()
            .with_min_delay(options.retry.min_delay)
            .with_max_delay(options.retry.max_delay)
            .with_max_times(options.retry.max_retries)
            .with_notify(log_retry);
        let op = Operator::new(builder)
            .map_err(|e| S3Error::Client(e.to_string()))?
            .with_context(OperationContext::new().with_http_transport(transport))
            // Each attempt is bounded; the retry layer, outside, repeats
            // attempts that failed or timed out.
            .layer(
                TimeoutLayer::new()
                    .with_timeout(options.request_timeout)
                    .with_io_timeout(options.io_timeout),
            )
            .layer(retry);
        let signed_urls = Arc::new(SignedUrls::new(
            settings.presign_expiry,
            options.reuse_signed_urls,
        ));
        let storage = Self {
            op,
            settings,
            options,
            known: Arc::new(quick_cache::sync::Cache::new(KNOWN_BLOBS)),
            signed_urls,
        };
        storage.check_bucket().await?;
        tracing::info!(
            backend = BACKEND,
            bucket = %storage.settings.bucket,
            endpoint = %addressing::service_endpoint(&storage.settings),
            addressing = ?storage.settings.addressing,
            presigned_urls = storage.settings.presigned_urls,
            "storage backend ready"
        );
        Ok(storage)
    }

    /// Lists at most one object, within the retry policy's total time.
    /// The listing is recursive: without a `delimiter` parameter, whose
    /// `/` some S3-compatible servers (moto) encode differently when they
    /// check the signature.
    async fn check_bucket(&self) -> Result<(), S3Error> {
        let listing = tokio::time::timeout(
            self.options.retry.total.max(self.options.request_timeout),
            self.op.list_with("").recursive(true).limit(1),
        )
        .await;
        let reason = match listing {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) if e.kind() == ErrorKind::NotFound => "the bucket does not exist".to_owned(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer in time".to_owned(),
        };
        Err(BucketUnreachable {
            bucket: self.settings.bucket.clone(),
            endpoint: addressing::service_endpoint(&self.settings),
            reason,
        }
        .into())
    }

    /// The settings this backend was connected with.
    pub fn settings(&self) -> &S3Settings {
        &self.settings
    }

    /// The URL a client is sent to for `key`: presigned for
    /// [`S3Settings::presign_expiry`] (or one presigned less than half
    /// that ago), or the plain object URL.
    async fn redirect_url(&self, key: &StorageKey) -> Result<String, StorageError> {
        if !self.settings.presigned_urls {
            return Ok(addressing::plain_object_url(&self.settings, key.as_str()));
        }
        self.signed_urls
            .get_or_sign(key, || async {
                let presigned = self
                    .bounded(
                        self.op
                            .presign_read(key.as_str(), self.settings.presign_expiry),
                    )
                    .await
                    .map_err(|e| backend_error(key, "cannot presign URL", &e))?;
                Ok(presigned.uri().to_string())
            })
            .await
    }

    /// Size of the object at `key`.
    async fn size_of(&self, key: &StorageKey) -> Result<u64, opendal::Error> {
        Ok(self
            .bounded(self.op.stat(key.as_str()))
            .await?
            .content_length())
    }

    /// Bounds a call that moves no body, retries included: OpenDAL's
    /// retry layer counts attempts, not time, so the policy's total time
    /// (plus one attempt) is enforced here.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = opendal::Result<T>>,
    ) -> opendal::Result<T> {
        let bound = self.options.retry.total + self.options.request_timeout;
        tokio::time::timeout(bound, call).await.unwrap_or_else(|_| {
            Err(opendal::Error::new(
                ErrorKind::Unexpected,
                format!("no answer within {bound:?}, retries included"),
            ))
        })
    }
}

/// A backend error on `key`: what failed and OpenDAL's account of it.
fn backend_error(key: &StorageKey, what: &str, error: &opendal::Error) -> StorageError {
    StorageError::Backend {
        backend: BACKEND,
        key: key.to_string(),
        message: format!("{what}: {error}"),
    }
}

/// `NotFound` is the distinct not-found error; anything else a failure.
fn lookup_error(key: &StorageKey, what: &str, error: &opendal::Error) -> StorageError {
    if error.kind() == ErrorKind::NotFound {
        StorageError::NotFound(key.clone())
    } else {
        backend_error(key, what, error)
    }
}

#[async_trait]
impl Storage for S3Storage {
    fn name(&self) -> &'static str {
        BACKEND
    }

    async fn persist(
        &self,
        key: &StorageKey,
        content_type: &str,
        mut body: ByteStream,
    ) -> Result<Persisted, StorageError> {
        let mut writer = self
            .op
            .writer_with(key.as_str())
            .chunk(self.options.part_size)
            .content_type(content_type)
            .await
            .map_err(|e| backend_error(key, "starting upload", &e))?;
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        while let Some(item) = body.next().await {
            let bytes = match item {
                Ok(bytes) => bytes,
                Err(source) => {
                    let _ = writer.abort().await;
                    return Err(StorageError::Io {
                        key: key.clone(),
                        source,
                    });
                }
            };
            hasher.update(&bytes);
            size += bytes.len() as u64;
            if let Err(e) = writer.write(bytes).await {
                let _ = writer.abort().await;
                tracing::warn!(backend = BACKEND, key = %key, error = %e, "upload failed");
                return Err(backend_error(key, "upload failed", &e));
            }
        }
        if let Err(e) = writer.close().await {
            // A completion whose answer was lost finds the upload gone on
            // its retry. A staging key is unique to this upload, so an
            // object of the right size there is this upload, complete.
            let completed = key.as_str().starts_with(STAGING_PREFIX)
                && self.size_of(key).await.ok() == Some(size);
            if !completed {
                let _ = writer.abort().await;
                tracing::warn!(backend = BACKEND, key = %key, error = %e, "upload failed");
                return Err(backend_error(key, "completing upload failed", &e));
            }
        }
        let persisted = Persisted {
            sha256: crate::digest::Digest::from_hasher(hasher),
            size,
        };
        tracing::debug!(backend = BACKEND, key = %key, size, digest = %persisted.sha256, "object persisted");
        Ok(persisted)
    }

    async fn fetch(&self, key: &StorageKey) -> Result<ByteStream, StorageError> {
        // Asking first gives "not found" before any byte is streamed.
        let size = self
            .size_of(key)
            .await
            .map_err(|e| lookup_error(key, "metadata lookup failed", &e))?;
        let reader = self
            .bounded(self.op.reader(key.as_str()))
            .await
            .map_err(|e| lookup_error(key, "download failed", &e))?;
        let stream = reader
            .into_bytes_stream(0..size)
            .await
            .map_err(|e| lookup_error(key, "download failed", &e))?;
        Ok(Box::pin(stream))
    }

    /// A copy that keeps the content type, then a delete of the source:
    /// server-side (`CopyObject`) below [`S3Options::single_copy_limit`],
    /// else streamed through this server (see there why).
    async fn move_object(&self, from: &StorageKey, to: &StorageKey) -> Result<(), StorageError> {
        let copied = match self.bounded(self.op.stat(from.as_str())).await {
            Ok(source) if source.content_length() >= self.options.single_copy_limit as u64 => {
                let content_type = source.content_type().unwrap_or(OCTET_STREAM).to_owned();
                let body = self.fetch(from).await?;
                self.persist(to, &content_type, body).await?;
                Ok(())
            }
            // A chunk of the limit keeps OpenDAL to one `CopyObject`.
            Ok(_) => self
                .bounded(
                    self.op
                        .copy_with(from.as_str(), to.as_str())
                        .chunk(self.options.single_copy_limit)
                        .into_future(),
                )
                .await
                .map(drop),
            Err(e) => Err(e),
        };
        match copied {
            Ok(()) => {}
            // A retried move whose first attempt got past the delete.
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return match self.size_of(to).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.kind() == ErrorKind::NotFound => {
                        Err(StorageError::NotFound(from.clone()))
                    }
                    Err(e) => Err(backend_error(to, "metadata lookup failed", &e)),
                };
            }
            Err(e) => return Err(backend_error(from, &format!("copy to {to} failed"), &e)),
        }
        self.delete(from).await
    }

    async fn serve(
        &self,
        key: &StorageKey,
        request: &ServeRequest,
    ) -> Result<Served, StorageError> {
        // A GET's satisfiable range is answered by the bucket: clients
        // repeat it against the redirect target. A HEAD, and a range the
        // blob cannot satisfy, are answered here from the metadata (a URL
        // presigned for GET refuses a HEAD). An absent
        // object is reported here so that registry clients get a registry
        // error, not a bucket 404.
        let blob = match self.known.get(key) {
            Some((blob, found)) if found.elapsed() < KNOWN_BLOB_TTL => blob,
            _ => {
                let metadata = self
                    .bounded(self.op.stat(key.as_str()))
                    .await
                    .map_err(|e| lookup_error(key, "metadata lookup failed", &e))?;
                let blob = KnownBlob {
                    content_type: metadata.content_type().map(str::to_owned),
                    size: metadata.content_length(),
                };
                if key.as_str().starts_with(super::LAYERS_PREFIX) {
                    self.known
                        .insert(key.clone(), (blob.clone(), Instant::now()));
                }
                blob
            }
        };
        if !request.admits(blob.content_type.as_deref()) {
            return Err(StorageError::NotFound(key.clone()));
        }
        if request.answered_without_redirect(blob.size) {
            let content_type = blob.content_type.unwrap_or_else(|| OCTET_STREAM.to_owned());
            return Ok(request.without_body(blob.size, content_type));
        }
        let location = self.redirect_url(key).await?;
        Ok(Served::Redirect { location })
    }

    /// `ListObjectsV2` with `max-keys` = `page_size`: each page is taken
    /// from the lister under one bound (OpenDAL fetches the next page of
    /// keys when the previous one is used up), so a bucket of any size is
    /// listed in as many bounded calls as it has pages, never under one
    /// timeout.
    fn list_pages(&self, prefix: KeyPrefix, page_size: usize) -> super::Pages<'_> {
        let wanted = format!("{}/", prefix.as_str());
        let page_size = page_size.max(1);
        let failed = move |wanted: &str, e: opendal::Error| StorageError::Backend {
            backend: BACKEND,
            key: wanted.to_owned(),
            message: format!("listing failed: {e}"),
        };
        // `None`: done; `Some(None)`: not started.
        let start: Option<Option<opendal::Lister>> = Some(None);
        futures::stream::try_unfold(start, move |state| {
            let wanted = wanted.clone();
            async move {
                let Some(lister) = state else {
                    return Ok(None);
                };
                let mut lister = match lister {
                    Some(lister) => lister,
                    None => self
                        .bounded(
                            self.op
                                .lister_with(&wanted)
                                .recursive(true)
                                .limit(page_size)
                                .into_future(),
                        )
                        .await
                        .map_err(|e| failed(&wanted, e))?,
                };
                let (entries, done) = self
                    .bounded(async {
                        let mut entries = Vec::with_capacity(page_size);
                        while entries.len() < page_size {
                            match lister.next().await.transpose()? {
                                Some(entry) => entries.push(entry),
                                None => return Ok((entries, true)),
                            }
                        }
                        Ok((entries, false))
                    })
                    .await
                    .map_err(|e| failed(&wanted, e))?;
                let page: Vec<ListedObject> = entries
                    .into_iter()
                    .filter_map(|entry| {
                        // Names this server does not give are left out.
                        let name = entry.path().strip_prefix(&wanted)?;
                        let key = StorageKey::under(prefix, name).ok()?;
                        let metadata = entry.metadata();
                        Some(ListedObject {
                            key,
                            size: metadata.content_length(),
                            modified: metadata.last_modified().map(SystemTime::from),
                            content_type: metadata.content_type().map(str::to_owned),
                        })
                    })
                    .collect();
                if done && page.is_empty() {
                    return Ok(None);
                }
                Ok(Some((page, (!done).then_some(Some(lister)))))
            }
        })
        .boxed()
    }

    async fn stat(&self, key: &StorageKey) -> Result<ListedObject, StorageError> {
        let metadata = self
            .bounded(self.op.stat(key.as_str()))
            .await
            .map_err(|e| lookup_error(key, "stat failed", &e))?;
        Ok(ListedObject {
            key: key.clone(),
            size: metadata.content_length(),
            modified: metadata.last_modified().map(SystemTime::from),
            content_type: metadata.content_type().map(str::to_owned),
        })
    }

    /// A `PutObject` with `If-None-Match: *`: S3 (since 2024) and MinIO
    /// refuse it with `412` when the object exists.
    async fn create_new(
        &self,
        key: &StorageKey,
        content_type: &str,
        bytes: bytes::Bytes,
    ) -> Result<bool, StorageError> {
        let written = self
            .bounded(
                self.op
                    .write_with(key.as_str(), bytes)
                    .content_type(content_type)
                    .if_not_exists(true)
                    .into_future(),
            )
            .await;
        match written {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::ConditionNotMatch => Ok(false),
            Err(e) => Err(backend_error(key, "conditional upload failed", &e)),
        }
    }

    /// A `HeadObject` for the ETag, then a `GetObject` with `If-Match` on
    /// it, so that bytes and version belong together (tried again when
    /// the object changed in between).
    async fn read_versioned(
        &self,
        key: &StorageKey,
        limit: usize,
    ) -> Result<Option<(bytes::Bytes, Version)>, StorageError> {
        for _ in 0..10 {
            let metadata = match self.bounded(self.op.stat(key.as_str())).await {
                Ok(metadata) => metadata,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(backend_error(key, "metadata lookup failed", &e)),
            };
            let Some(etag) = metadata.etag().map(str::to_owned) else {
                return Err(StorageError::Backend {
                    backend: BACKEND,
                    key: key.to_string(),
                    message: "the object has no ETag".to_owned(),
                });
            };
            if metadata.content_length() > limit as u64 {
                return Err(backend_error(
                    key,
                    "object too large",
                    &opendal::Error::new(ErrorKind::Unexpected, "larger than its limit"),
                ));
            }
            match self
                .bounded(
                    self.op
                        .read_with(key.as_str())
                        .if_match(&etag)
                        .into_future(),
                )
                .await
            {
                Ok(buffer) => return Ok(Some((buffer.to_bytes(), Version(etag)))),
                Err(e)
                    if matches!(e.kind(), ErrorKind::ConditionNotMatch | ErrorKind::NotFound) => {}
                Err(e) => return Err(backend_error(key, "download failed", &e)),
            }
        }
        Err(StorageError::Backend {
            backend: BACKEND,
            key: key.to_string(),
            message: "the object kept changing while it was read".to_owned(),
        })
    }

    /// A `PutObject` with `If-Match: <ETag>` (or `If-None-Match: *`): S3
    /// (since 2024), MinIO and moto refuse it with `412` when the object
    /// is not at that version.
    async fn write_if(
        &self,
        key: &StorageKey,
        content_type: &str,
        bytes: bytes::Bytes,
        expected: Option<&Version>,
    ) -> Result<Option<Version>, StorageError> {
        let write = self
            .op
            .write_with(key.as_str(), bytes)
            .content_type(content_type);
        let write = match expected {
            Some(Version(etag)) => write.if_match(etag),
            None => write.if_not_exists(true),
        };
        match self.bounded(write.into_future()).await {
            Ok(metadata) => match metadata.etag() {
                Some(etag) => Ok(Some(Version(etag.to_owned()))),
                None => Err(StorageError::Backend {
                    backend: BACKEND,
                    key: key.to_string(),
                    message: "the conditional upload answered no ETag".to_owned(),
                }),
            },
            Err(e) if e.kind() == ErrorKind::ConditionNotMatch => Ok(None),
            // `If-Match` on an absent object.
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(backend_error(key, "conditional upload failed", &e)),
        }
    }

    async fn delete(&self, key: &StorageKey) -> Result<(), StorageError> {
        self.known.remove(key);
        self.bounded(self.op.delete(key.as_str()))
            .await
            .map_err(|e| backend_error(key, "delete failed", &e))
    }
}
