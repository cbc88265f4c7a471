//! Google Cloud Storage backend: one bucket shared by any number of Nixery
//! instances.
//!
//! Transfers use the Cloud Storage JSON API over `reqwest` ([`api`]) with
//! bearer tokens from Application Default Credentials (`google-cloud-auth`);
//! blobs are served by redirecting clients to the bucket, with a V4 signed
//! URL built by `google-cloud-storage`'s `SignedUrlBuilder` when a service
//! account key is configured. `STORAGE_EMULATOR_HOST` sends every call and
//! every redirect to an emulator instead, without credentials.

mod api;
mod auth;
mod endpoint;
mod error;
mod retry;
pub mod settings;
mod upload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use google_cloud_auth::signer::Signer;
use google_cloud_storage::builder::storage::SignedUrlBuilder;

use self::endpoint::Endpoint;
pub use self::retry::RetryPolicy;
pub use self::upload::CHUNK_GRANULARITY;
use self::upload::UploadError;
use self::{api::JsonApi, error::ApiError};
use super::signed_urls::SignedUrls;
use super::{
    BucketUnreachable, ByteStream, KeyPrefix, ListedObject, Persisted, ServeRequest, Served,
    Storage, StorageError, StorageKey, Version,
};

/// Backend name in logs and errors.
const BACKEND: &str = "gcs";

/// Tunables of the backend; [`GcsOptions::default`] suits production.
#[derive(Clone, Debug)]
pub struct GcsOptions {
    /// Size of each resumable upload chunk, a multiple of
    /// [`CHUNK_GRANULARITY`]; bodies smaller than this go in one request.
    pub chunk_size: usize,
    /// Bound on establishing a connection.
    pub connect_timeout: Duration,
    /// Bound on each call that does not stream a download (metadata,
    /// rewrite, delete, each upload chunk) and on a download's headers.
    pub request_timeout: Duration,
    /// Longest silence tolerated while streaming a download body.
    pub read_timeout: Duration,
    /// Lifetime of signed URLs.
    pub signed_url_ttl: Duration,
    /// Hand out one signed URL per blob while half its lifetime remains
    /// (see [`super::signed_urls`]) instead of signing one per request.
    pub reuse_signed_urls: bool,
    /// How calls that fail transiently are retried.
    pub retry: RetryPolicy,
}

impl Default for GcsOptions {
    fn default() -> Self {
        Self {
            chunk_size: 32 * CHUNK_GRANULARITY, // 8 MiB
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
            read_timeout: Duration::from_secs(60),
            signed_url_ttl: Duration::from_secs(300),
            reuse_signed_urls: true,
            retry: RetryPolicy::default(),
        }
    }
}

/// Why the backend could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum GcsError {
    /// `STORAGE_EMULATOR_HOST` is not `host:port` or an http(s) URL.
    #[error("STORAGE_EMULATOR_HOST={value:?} is not usable: {reason}")]
    InvalidEmulatorHost { value: String, reason: String },
    /// The credentials could not be loaded.
    #[error("cannot load Google credentials{}: {message}", path.as_ref().map(|p| format!(" from {}", p.display())).unwrap_or_default())]
    Credentials {
        path: Option<PathBuf>,
        message: String,
    },
    /// The chunk size is not a positive multiple of 256 KiB.
    #[error("upload chunk size {0} is not a positive multiple of 262144 bytes")]
    InvalidChunkSize(usize),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(String),
    /// The bucket lookup failed.
    #[error(transparent)]
    BucketUnreachable(#[from] BucketUnreachable),
}

/// The GCS storage backend. Cheap to clone; all clones share one
/// connection pool and one token cache.
#[derive(Clone)]
pub struct GcsStorage {
    api: JsonApi,
    signer: Option<Signer>,
    options: GcsOptions,
    /// Signed redirect URLs, reused for part of their lifetime.
    signed_urls: Arc<SignedUrls>,
}

impl std::fmt::Debug for GcsStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcsStorage")
            .field("bucket", &self.api.bucket)
            .field("endpoint", &self.api.endpoint.origin())
            .field("signed_urls", &self.signer.is_some())
            .finish()
    }
}

impl GcsStorage {
    /// Connects to `bucket` with default options: see [`Self::connect_with`].
    pub async fn connect(
        bucket: String,
        credentials: Option<PathBuf>,
        emulator_host: Option<String>,
    ) -> Result<Self, GcsError> {
        Self::connect_with(bucket, credentials, emulator_host, GcsOptions::default()).await
    }

    /// Connects to `bucket` and checks that it is reachable.
    ///
    /// With `emulator_host` (the `STORAGE_EMULATOR_HOST` value, `host:port`
    /// or a URL) every call goes there without credentials. Otherwise
    /// calls go to Google with tokens from `credentials` (a key file, as
    /// named by `GOOGLE_APPLICATION_CREDENTIALS`) or, without it, from
    /// Application Default Credentials. A service account key also enables
    /// signed redirect URLs.
    pub async fn connect_with(
        bucket: String,
        credentials: Option<PathBuf>,
        emulator_host: Option<String>,
        options: GcsOptions,
    ) -> Result<Self, GcsError> {
        if options.chunk_size == 0 || !options.chunk_size.is_multiple_of(CHUNK_GRANULARITY) {
            return Err(GcsError::InvalidChunkSize(options.chunk_size));
        }
        let endpoint = match emulator_host.as_deref() {
            Some(host) => Endpoint::emulator(host)?,
            None => Endpoint::google(),
        };
        // Reading the key file is blocking work.
        let emulated = endpoint.is_emulated();
        let identity =
            tokio::task::spawn_blocking(move || auth::load(credentials.as_deref(), emulated))
                .await
                .map_err(|e| GcsError::HttpClient(format!("loading credentials: {e}")))??;
        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            .build()
            .map_err(|e| GcsError::HttpClient(e.to_string()))?;
        let api = JsonApi {
            http,
            auth: identity.auth,
            endpoint,
            bucket,
            request_timeout: options.request_timeout,
            retry: options.retry,
        };
        api.get_bucket().await.map_err(|e| BucketUnreachable {
            bucket: api.bucket.clone(),
            endpoint: api.endpoint.origin(),
            reason: match &e {
                ApiError::Status { status, .. } if status.as_u16() == 404 => {
                    "the bucket does not exist".to_owned()
                }
                _ => e.to_string(),
            },
        })?;
        tracing::info!(
            backend = BACKEND,
            bucket = %api.bucket,
            endpoint = %api.endpoint.origin(),
            emulated = api.endpoint.is_emulated(),
            signed_urls = identity.signer.is_some(),
            "storage backend ready"
        );
        Ok(Self {
            api,
            signer: identity.signer,
            signed_urls: Arc::new(SignedUrls::new(
                options.signed_url_ttl,
                options.reuse_signed_urls,
            )),
            options,
        })
    }

    /// The bucket this backend stores into.
    pub fn bucket(&self) -> &str {
        &self.api.bucket
    }

    /// The URL a client is sent to for `key`: signed when a service
    /// account key is configured (or one signed less than half its
    /// lifetime ago), else the public object URL.
    async fn redirect_url(&self, key: &StorageKey) -> Result<String, StorageError> {
        let Some(signer) = &self.signer else {
            return Ok(self
                .api
                .endpoint
                .public_object(&self.api.bucket, key.as_str())
                .to_string());
        };
        self.signed_urls
            .get_or_sign(key, || async {
                let mut builder = SignedUrlBuilder::for_object(
                    format!("projects/_/buckets/{}", self.api.bucket),
                    key.as_str(),
                )
                .with_method(google_cloud_storage::http::Method::GET)
                .with_expiration(self.options.signed_url_ttl);
                if self.api.endpoint.is_emulated() {
                    builder = builder.with_endpoint(self.api.endpoint.origin());
                }
                builder
                    .sign_with(signer)
                    .await
                    .map_err(|e| backend_error(key, format!("cannot sign URL: {e}")))
            })
            .await
    }
}

/// What a listing or a metadata lookup says about `key`.
fn listed(key: StorageKey, item: api::ListItem) -> ListedObject {
    ListedObject {
        key,
        size: item
            .size
            .as_deref()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        modified: item
            .updated
            .as_deref()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(std::time::SystemTime::from),
        content_type: item.content_type,
    }
}

fn backend_error(key: &StorageKey, message: String) -> StorageError {
    backend_error_named(key.as_str(), message)
}

fn backend_error_named(object: &str, message: String) -> StorageError {
    StorageError::Backend {
        backend: BACKEND,
        key: object.to_owned(),
        message,
    }
}

/// Maps an API error on `key`: `404` is the distinct not-found error.
fn api_error(key: &StorageKey, error: ApiError) -> StorageError {
    if error.is_not_found() {
        StorageError::NotFound(key.clone())
    } else {
        backend_error(key, error.to_string())
    }
}

#[async_trait]
impl Storage for GcsStorage {
    fn name(&self) -> &'static str {
        BACKEND
    }

    async fn persist(
        &self,
        key: &StorageKey,
        content_type: &str,
        body: ByteStream,
    ) -> Result<Persisted, StorageError> {
        let result = upload::upload(
            &self.api,
            key.as_str(),
            content_type,
            body,
            self.options.chunk_size,
        )
        .await;
        match result {
            Ok(persisted) => {
                tracing::debug!(
                    backend = BACKEND,
                    key = %key,
                    size = persisted.size,
                    digest = %persisted.sha256,
                    "object persisted"
                );
                Ok(persisted)
            }
            Err(UploadError::Body(source)) => Err(StorageError::Io {
                key: key.clone(),
                source,
            }),
            Err(UploadError::Api(error)) => {
                tracing::warn!(backend = BACKEND, key = %key, error = %error, "upload failed");
                Err(backend_error(key, format!("upload failed: {error}")))
            }
        }
    }

    async fn fetch(&self, key: &StorageKey) -> Result<ByteStream, StorageError> {
        let response = self
            .api
            .download(key.as_str())
            .await
            .map_err(|e| api_error(key, e))?;
        let stream = response.bytes_stream().map_err(std::io::Error::other);
        Ok(Box::pin(stream))
    }

    async fn move_object(&self, from: &StorageKey, to: &StorageKey) -> Result<(), StorageError> {
        match self.api.rewrite(from.as_str(), to.as_str()).await {
            Ok(()) => {}
            // A retried move whose first attempt got past the delete.
            Err(e) if e.is_not_found() => {
                return match self.api.object_exists(to.as_str()).await {
                    Ok(()) => Ok(()),
                    Err(e) if e.is_not_found() => Err(StorageError::NotFound(from.clone())),
                    Err(e) => Err(api_error(to, e)),
                };
            }
            Err(e) => return Err(backend_error(from, format!("rewrite to {to} failed: {e}"))),
        }
        match self.api.delete(from.as_str()).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(backend_error(
                from,
                format!("delete after copy failed: {e}"),
            )),
        }
    }

    /// One `objects.list` call (`maxResults`, `pageToken`) per page.
    fn list_pages(&self, prefix: KeyPrefix, page_size: usize) -> super::Pages<'_> {
        let wanted = format!("{}/", prefix.as_str());
        // `None`: done; `Some(None)`: the first page.
        let start: Option<Option<String>> = Some(None);
        futures::stream::try_unfold(start, move |state| {
            let wanted = wanted.clone();
            async move {
                let Some(token) = state else {
                    return Ok(None);
                };
                let (items, next) = self
                    .api
                    .list_page(&wanted, token.as_deref(), page_size)
                    .await
                    .map_err(|e| backend_error_named(&wanted, format!("listing failed: {e}")))?;
                let page = items
                    .into_iter()
                    .filter_map(|item| {
                        // A name this server does not give is left out.
                        let name = item.name.strip_prefix(&wanted)?;
                        let key = StorageKey::under(prefix, name).ok()?;
                        Some(listed(key, item))
                    })
                    .collect();
                Ok(Some((page, next.map(Some))))
            }
        })
        .boxed()
    }

    async fn stat(&self, key: &StorageKey) -> Result<ListedObject, StorageError> {
        let item = self
            .api
            .stat(key.as_str())
            .await
            .map_err(|e| api_error(key, e))?;
        Ok(listed(key.clone(), item))
    }

    async fn create_new(
        &self,
        key: &StorageKey,
        content_type: &str,
        bytes: bytes::Bytes,
    ) -> Result<bool, StorageError> {
        self.api
            .create_new(key.as_str(), content_type, bytes)
            .await
            .map_err(|e| backend_error(key, format!("conditional upload failed: {e}")))
    }

    /// The generation's metadata, then that generation's bytes (read
    /// again when the object was replaced in between).
    async fn read_versioned(
        &self,
        key: &StorageKey,
        limit: usize,
    ) -> Result<Option<(bytes::Bytes, Version)>, StorageError> {
        for _ in 0..10 {
            match self.api.download_generation(key.as_str()).await {
                Ok(Some((bytes, _))) if bytes.len() > limit => {
                    return Err(backend_error(key, format!("larger than {limit} bytes")));
                }
                Ok(Some((bytes, generation))) => return Ok(Some((bytes, Version(generation)))),
                Ok(None) => {
                    if let Err(e) = self.api.object_exists(key.as_str()).await {
                        if e.is_not_found() {
                            return Ok(None);
                        }
                        return Err(api_error(key, e));
                    }
                }
                Err(e) => return Err(api_error(key, e)),
            }
        }
        Err(backend_error(
            key,
            "the object kept changing while it was read".to_owned(),
        ))
    }

    /// An upload with `ifGenerationMatch` (0 for "absent").
    async fn write_if(
        &self,
        key: &StorageKey,
        content_type: &str,
        bytes: bytes::Bytes,
        expected: Option<&Version>,
    ) -> Result<Option<Version>, StorageError> {
        let generation = expected.map_or("0", |Version(generation)| generation.as_str());
        self.api
            .upload_if_generation(key.as_str(), content_type, bytes, generation)
            .await
            .map(|written| written.map(Version))
            .map_err(|e| backend_error(key, format!("conditional upload failed: {e}")))
    }

    async fn delete(&self, key: &StorageKey) -> Result<(), StorageError> {
        match self.api.delete(key.as_str()).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(backend_error(key, format!("delete failed: {e}"))),
        }
    }

    async fn serve(
        &self,
        key: &StorageKey,
        request: &ServeRequest,
    ) -> Result<Served, StorageError> {
        // A GET's satisfiable range is answered by the bucket: clients
        // repeat it against the redirect target. A HEAD, and a range the
        // object cannot satisfy, are answered here from the metadata (a
        // URL signed for GET refuses a HEAD). An absent object
        // is reported here so that registry clients get a registry error,
        // not a bucket 404.
        let item = self
            .api
            .stat(key.as_str())
            .await
            .map_err(|e| api_error(key, e))?;
        let object = listed(key.clone(), item);
        let content_type = object.content_type.unwrap_or_default();
        if !request.admits(Some(&content_type)) {
            return Err(StorageError::NotFound(key.clone()));
        }
        if request.answered_without_redirect(object.size) {
            return Ok(request.without_body(object.size, content_type));
        }
        let location = self.redirect_url(key).await?;
        Ok(Served::Redirect { location })
    }
}
