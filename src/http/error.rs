//! Registry errors: the one place where failures become HTTP statuses and
//! the registry JSON body `{"errors":[{"code":"...","message":"..."}]}`.
//!
//! The client sees a status, a code and a message in its own terms; the
//! detail of an internal failure goes only to the logs (field `error`).

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use crate::{
    builder::BuildError, reference::ReferenceError, resolve::ResolveError, storage::StorageError,
};

/// Error codes of the distribution spec used by this registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// The blob is not in storage.
    BlobUnknown,
    /// The digest is not `sha256:` + 64 lowercase hex digits.
    DigestInvalid,
    /// The manifest is not known (or could not be built from the name).
    ManifestUnknown,
    /// The image exists in principle but is refused (unfree, insecure,
    /// broken or unavailable packages).
    Denied,
    /// The repository name breaks the name grammar.
    NameInvalid,
    /// The tag breaks the tag grammar.
    TagInvalid,
    /// The requested byte range lies outside the blob.
    RangeInvalid,
    /// The `n` parameter of a tags list is not a non-negative number.
    PaginationNumberInvalid,
    /// The method or endpoint is not offered by this pull-only registry.
    Unsupported,
    /// Storing the built image failed.
    ManifestUpload,
    /// Too many images are waiting to be built; retry later.
    TooManyRequests,
    /// The storage backend is failing; retry later.
    Unavailable,
    /// Credentials are missing or refused (with a `WWW-Authenticate`
    /// challenge).
    Unauthorized,
    /// Anything else; details are in the logs.
    Unknown,
}

impl ErrorCode {
    /// The code as sent in the JSON body.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BlobUnknown => "BLOB_UNKNOWN",
            Self::DigestInvalid => "DIGEST_INVALID",
            Self::ManifestUnknown => "MANIFEST_UNKNOWN",
            Self::Denied => "DENIED",
            Self::NameInvalid => "NAME_INVALID",
            Self::TagInvalid => "TAG_INVALID",
            Self::RangeInvalid => "RANGE_INVALID",
            Self::PaginationNumberInvalid => "PAGINATION_NUMBER_INVALID",
            Self::Unsupported => "UNSUPPORTED",
            Self::ManifestUpload => "MANIFEST_UPLOAD",
            Self::TooManyRequests => "TOOMANYREQUESTS",
            Self::Unavailable => "UNAVAILABLE",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Unknown => "UNKNOWN",
        }
    }
}

/// An error answered to a registry client.
#[derive(Debug)]
pub struct RegistryError {
    /// HTTP status of the response.
    pub status: StatusCode,
    /// Registry error code.
    pub code: ErrorCode,
    /// Message for the client.
    pub message: String,
    /// Detail for the logs only (internal failures).
    detail: Option<String>,
    /// Seconds sent in `Retry-After`, for errors a client should retry.
    pub retry_after: Option<u64>,
    /// The `WWW-Authenticate` challenge of a 401.
    pub challenge: Option<String>,
}

/// `Retry-After` seconds of a 429 (build queue full) or 503 (storage
/// failing): long enough for a slot to free or a brown-out to pass, short
/// enough that a kubelet's back-off does not stretch much beyond it.
pub const RETRY_AFTER_SECS: u64 = 10;

impl RegistryError {
    /// An error with a status, code and client-facing message.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            detail: None,
            retry_after: None,
            challenge: None,
        }
    }

    /// 401 `UNAUTHORIZED` with the `WWW-Authenticate` value `challenge`.
    pub fn unauthorized(message: impl Into<String>, challenge: impl Into<String>) -> Self {
        Self {
            challenge: Some(challenge.into()),
            ..Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
        }
    }

    /// 404 `BLOB_UNKNOWN` for `digest`.
    pub fn blob_unknown(digest: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::BlobUnknown,
            format!("blob {digest} is not known to this registry"),
        )
    }

    /// 404 `MANIFEST_UNKNOWN` for `reference`.
    pub fn manifest_unknown(reference: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::ManifestUnknown,
            format!("manifest {reference} is not known to this registry"),
        )
    }

    /// 405 `UNSUPPORTED` for any method but GET and HEAD.
    pub fn method_not_allowed(method: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Unsupported,
            format!("{method} is not supported: this registry is pull-only"),
        )
    }

    /// 404 `UNSUPPORTED` for a path that is no registry endpoint.
    pub fn no_such_endpoint() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::Unsupported,
            "no such endpoint: this registry serves /v2/<name>/manifests/<reference>, \
             /v2/<name>/blobs/<digest> and /v2/<name>/tags/list",
        )
    }

    /// 416 `RANGE_INVALID` for a blob of `total_len` bytes.
    pub fn range_not_satisfiable(total_len: u64) -> Self {
        Self::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            ErrorCode::RangeInvalid,
            format!("the requested range lies outside the blob of {total_len} bytes"),
        )
    }

    /// 500 `UNKNOWN`; `detail` is logged, not sent.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self {
            detail: Some(detail.to_string()),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Unknown,
                "internal error, see the server logs",
            )
        }
    }
}

impl From<ReferenceError> for RegistryError {
    fn from(e: ReferenceError) -> Self {
        let code = match e {
            ReferenceError::Name(_) => ErrorCode::NameInvalid,
            ReferenceError::Tag(_) => ErrorCode::TagInvalid,
            ReferenceError::Digest(_) => ErrorCode::DigestInvalid,
        };
        Self::new(StatusCode::BAD_REQUEST, code, e.to_string())
    }
}

impl From<BuildError> for RegistryError {
    fn from(e: BuildError) -> Self {
        let detail = crate::error_text::chain(&e);
        let error = match e.root() {
            root @ BuildError::PackagesRefused(refusals) => {
                // 404 when every refused package is simply not there
                // (missing, not a package, removed); 403 when the package
                // set refuses an existing one.
                let (status, code) = if refusals.iter().all(|r| r.reason.is_absent()) {
                    (StatusCode::NOT_FOUND, ErrorCode::ManifestUnknown)
                } else {
                    (StatusCode::FORBIDDEN, ErrorCode::Denied)
                };
                return Self::new(status, code, root.to_string());
            }
            root @ BuildError::Source(
                ResolveError::UnknownRef(_) | ResolveError::UnknownChannel(_),
            ) => {
                return Self::new(
                    StatusCode::NOT_FOUND,
                    ErrorCode::ManifestUnknown,
                    root.to_string(),
                );
            }
            BuildError::Source(_) => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Unknown,
                "resolving the package source failed, try again later",
            ),
            BuildError::Unavailable => {
                return Self::new(
                    StatusCode::NOT_FOUND,
                    ErrorCode::ManifestUnknown,
                    "image building is not available on this server",
                );
            }
            BuildError::NixFailed(_)
            | BuildError::Layers(_)
            | BuildError::Crashed(_)
            | BuildError::Shared(_) => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Unknown,
                "the image build failed; the status page lists recent build errors",
            ),
            BuildError::Storage(_) => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::ManifestUpload,
                "storing the built image failed; the status page lists recent build errors",
            ),
            BuildError::Busy(_) => Self {
                retry_after: Some(RETRY_AFTER_SECS),
                ..Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::TooManyRequests,
                    "too many images are being built; try again later",
                )
            },
            BuildError::Collected => Self {
                retry_after: Some(RETRY_AFTER_SECS),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::Unavailable,
                    "a storage collection removed parts of the image during its build; try again",
                )
            },
            BuildError::Lookup(_) => Self {
                retry_after: Some(RETRY_AFTER_SECS),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::Unavailable,
                    "the storage backend is failing; no build was started, try again later",
                )
            },
        };
        Self {
            detail: Some(detail),
            ..error
        }
    }
}

impl From<StorageError> for RegistryError {
    /// `NotFound` becomes 404 `BLOB_UNKNOWN` (manifest handlers map it to
    /// `MANIFEST_UNKNOWN` themselves); a remote backend that fails (after
    /// its retries) is 503 `UNAVAILABLE` with `Retry-After`, never a miss;
    /// local I/O failures are internal.
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound(key) => Self::new(
                StatusCode::NOT_FOUND,
                ErrorCode::BlobUnknown,
                format!("{key} is not known to this registry"),
            ),
            backend @ StorageError::Backend { .. } => Self {
                retry_after: Some(RETRY_AFTER_SECS),
                detail: Some(backend.to_string()),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::Unavailable,
                    "the storage backend is failing, try again later",
                )
            },
            other => Self::internal(other),
        }
    }
}

#[derive(serde::Serialize)]
struct Body<'a> {
    errors: [Entry<'a>; 1],
}

#[derive(serde::Serialize)]
struct Entry<'a> {
    code: &'static str,
    message: &'a str,
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        if let Some(detail) = &self.detail {
            tracing::error!(error = %detail, code = self.code.as_str(), "request failed");
        }
        let body = Body {
            errors: [Entry {
                code: self.code.as_str(),
                message: &crate::redact::redact(&self.message),
            }],
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(challenge) = self
            .challenge
            .as_deref()
            .and_then(|c| HeaderValue::from_str(c).ok())
        {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StorageKey;

    async fn body_of(e: RegistryError) -> (StatusCode, serde_json::Value) {
        let r = e.into_response();
        let status = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    fn refusal(package: &str, reason: crate::nix::RefusalReason) -> crate::nix::Refusal {
        crate::nix::Refusal {
            package: package.into(),
            reason,
            system: "x86_64-linux".into(),
            message: None,
        }
    }

    #[tokio::test]
    async fn packages_not_found_is_404_manifest_unknown_naming_them() {
        use crate::nix::RefusalReason::*;
        let e = BuildError::PackagesRefused(vec![
            refusal("nope", NotFound),
            refusal("lib", NotADerivation),
        ]);
        let (status, body) = body_of(e.into()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["errors"][0]["code"], "MANIFEST_UNKNOWN");
        let msg = body["errors"][0]["message"].as_str().unwrap();
        assert!(msg.contains("'nope'") && msg.contains("'lib'"), "{msg}");
    }

    #[tokio::test]
    async fn refused_existing_packages_are_403_denied_naming_package_and_reason() {
        use crate::nix::RefusalReason::*;
        let e =
            BuildError::PackagesRefused(vec![refusal("nope", NotFound), refusal("rssh", Insecure)]);
        let (status, body) = body_of(e.into()).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body["errors"][0]["code"], "DENIED");
        let msg = body["errors"][0]["message"].as_str().unwrap();
        assert!(msg.contains("'rssh' is marked as insecure"), "{msg}");
    }

    #[tokio::test]
    async fn internal_storage_failures_hide_their_detail() {
        let e = StorageError::Io {
            key: StorageKey::build("x").unwrap(),
            source: std::io::Error::other("disk on fire at /secret/path"),
        };
        let (status, body) = body_of(e.into()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["errors"][0]["code"], "UNKNOWN");
        assert!(!body.to_string().contains("/secret/path"));
    }

    #[tokio::test]
    async fn a_failing_remote_backend_is_unavailable_not_a_miss() {
        let e = StorageError::Backend {
            backend: "s3",
            key: "layers/x".to_owned(),
            message: "HTTP 503 at http://secret-endpoint".to_owned(),
        };
        let (status, body) = body_of(e.into()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["errors"][0]["code"], "UNAVAILABLE");
        assert!(!body.to_string().contains("secret-endpoint"));
    }

    #[tokio::test]
    async fn reference_errors_map_to_their_codes() {
        for (e, code) in [
            (ReferenceError::Name("x"), "NAME_INVALID"),
            (ReferenceError::Tag("x"), "TAG_INVALID"),
            (ReferenceError::Digest("x"), "DIGEST_INVALID"),
        ] {
            let (status, body) = body_of(e.into()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST);
            assert_eq!(body["errors"][0]["code"], code);
        }
    }
}
