//! The registry's HTTP surface (pull only), built with axum.
//!
//! - `GET`/`HEAD /v2/` answers 200 (the version check).
//! - `GET`/`HEAD /v2/<name>/blobs/sha256:<hex>` serves `layers/<hex>`.
//! - `GET`/`HEAD /v2/<name>/manifests/sha256:<hex>` serves `layers/<hex>`
//!   as a manifest.
//! - `GET`/`HEAD /v2/<name>/manifests/<tag>` asks the [`ImageBuilder`]
//!   and answers the Docker or the OCI manifest, or an image index when
//!   the client's `Accept` allows one
//!   ([`accept`]).
//! - `GET`/`HEAD /v2/<name>/tags/list` lists `latest` ([`tags`]).
//! - `GET`/`HEAD /v2/<name>/referrers/sha256:<hex>` lists the artifacts
//!   (SBOMs) about that manifest ([`referrers`]).
//! - Any other method on `/v2...` is 405 `UNSUPPORTED`; any other path is
//!   404 with a registry error body.
//! - `GET`/`HEAD /` is the HTML status page ([`status`]).
//! - `GET /token` answers pull tokens when the token flow is on
//!   ([`auth`]).
//!
//! With pull authentication configured ([`crate::auth`]), every `/v2`
//! request is checked ([`auth::check`]) before its path is resolved
//! further, and a refusal is `401 UNAUTHORIZED` with a challenge; an
//! anonymous client that may pull only built images gets its manifest by
//! tag only when it is built, and never starts a build.
//!
//! Every `/v2` response carries `Docker-Distribution-API-Version:
//! registry/2.0`. Each request is traced in a span `request` with fields
//! `method` and `path`, and ends with an event `response` with `status` and
//! `latency_ms`. Handlers hold no business logic: they validate the path
//! ([`path`]), call storage or the builder, and shape the answer.

pub mod accept;
pub mod auth;
pub mod blobs;
pub mod error;
pub mod manifests;
pub mod path;
pub mod referrers;
pub mod small_objects;
pub mod status;
pub mod tags;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::{Extensions, HeaderMap, HeaderName, HeaderValue, Method, Response, Uri},
    middleware,
    response::IntoResponse,
    routing::{any, get},
};
use tower_http::trace::TraceLayer;
use tracing::Span;

pub use error::{ErrorCode, RegistryError};

use crate::{
    auth::{Auth, Grant},
    build_errors::BuildErrors,
    builder::ImageBuilder,
    gc::periodic::GcStatus,
    metrics::Metrics,
    reference::Reference,
    status::StatusInfo,
    storage::Storage,
};
use small_objects::SmallObjects;

/// Header naming the digest of the returned content.
pub const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
/// Header announcing the registry API version.
pub const API_VERSION_HEADER: HeaderName =
    HeaderName::from_static("docker-distribution-api-version");
/// Value of [`API_VERSION_HEADER`].
pub const API_VERSION: &str = "registry/2.0";

/// What the handlers share. Cheap to clone; add fields here (metrics) as
/// the server grows.
#[derive(Clone)]
pub struct AppState {
    /// Where blobs and manifests are kept.
    pub storage: Arc<dyn Storage>,
    /// Produces manifests for tags.
    pub builder: Arc<dyn ImageBuilder>,
    /// The fixed parts of the status page.
    pub status: Arc<StatusInfo>,
    /// Recent build failures, shown on the status page.
    pub build_errors: Arc<BuildErrors>,
    /// Counters exported at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Small content-addressed objects kept in memory.
    pub objects: Arc<SmallObjects>,
    /// What the status page says about collection.
    pub gc_status: Arc<GcStatus>,
    /// Pull authentication; `None`: anyone may pull and build.
    pub auth: Option<Arc<Auth>>,
}

impl AppState {
    /// State with the given storage backend and image builder; the status
    /// page says the package source is unknown and lists no build errors
    /// until [`AppState::with_status`] gives it the real ones.
    pub fn new(storage: Arc<dyn Storage>, builder: Arc<dyn ImageBuilder>) -> Self {
        let status = StatusInfo::new("unknown".to_owned(), storage.name());
        Self {
            storage,
            builder,
            status: Arc::new(status),
            build_errors: Arc::new(BuildErrors::new()),
            metrics: Arc::new(Metrics::default()),
            objects: Arc::new(SmallObjects::default()),
            gc_status: Arc::new(GcStatus::default()),
            auth: None,
        }
    }

    /// The same state checking every `/v2` request with `auth`.
    pub fn with_auth(self, auth: Arc<Auth>) -> Self {
        Self {
            auth: Some(auth),
            ..self
        }
    }

    /// The same state showing `status` about collection on the status
    /// page.
    pub fn with_gc_status(self, status: Arc<GcStatus>) -> Self {
        Self {
            gc_status: status,
            ..self
        }
    }

    /// The same state with the counters the builder increments.
    pub fn with_metrics(self, metrics: Arc<Metrics>) -> Self {
        Self { metrics, ..self }
    }

    /// The same state with the status page's fixed parts and the ring of
    /// build errors the builder records into.
    pub fn with_status(self, status: StatusInfo, build_errors: Arc<BuildErrors>) -> Self {
        Self {
            status: Arc::new(status),
            build_errors,
            ..self
        }
    }

    /// The same state, naming `addr` on the status page when a request
    /// carries no `Host`.
    pub fn listening_on(mut self, addr: SocketAddr) -> Self {
        Arc::make_mut(&mut self.status).fallback_host = addr.to_string();
        self
    }
}

/// The application: every route, the API version header on `/v2`, and
/// request tracing.
pub fn router(state: AppState) -> Router {
    let v2 = Router::new()
        .route("/v2", any(registry))
        .route("/v2/", any(registry))
        .route("/v2/{*rest}", any(registry))
        .layer(middleware::map_response(add_api_version));
    Router::new()
        .route(
            "/",
            get(status::page).fallback(|method: axum::http::Method| async move {
                RegistryError::method_not_allowed(method.as_str())
            }),
        )
        .route(
            "/token",
            get(auth::token).fallback(|method: axum::http::Method| async move {
                RegistryError::method_not_allowed(method.as_str())
            }),
        )
        .route(
            "/metrics",
            get(metrics).fallback(|method: axum::http::Method| async move {
                RegistryError::method_not_allowed(method.as_str())
            }),
        )
        .merge(v2)
        .fallback(not_found)
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    tracing::info_span!(
                        "request",
                        method = %request.method(),
                        path = %request.uri().path(),
                    )
                })
                .on_request(())
                .on_response(|response: &Response<Body>, latency: Duration, _: &Span| {
                    tracing::info!(
                        status = response.status().as_u16(),
                        latency_ms = latency.as_secs_f64() * 1000.0,
                        "response"
                    );
                }),
        )
        .with_state(state)
}

/// GET `/metrics`: the counters in the Prometheus text format.
async fn metrics(State(state): State<AppState>) -> Response<Body> {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn add_api_version(mut response: Response<Body>) -> Response<Body> {
    response
        .headers_mut()
        .insert(API_VERSION_HEADER, HeaderValue::from_static(API_VERSION));
    response
}

async fn not_found() -> RegistryError {
    RegistryError::no_such_endpoint()
}

/// Every request under `/v2`.
async fn registry(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    extensions: Extensions,
) -> Result<Response<Body>, RegistryError> {
    let head = match method {
        Method::GET => false,
        Method::HEAD => true,
        other => return Err(RegistryError::method_not_allowed(other.as_str())),
    };
    let endpoint = path::parse(uri.path());
    // Credentials first: a client that may not pull learns nothing else,
    // and nothing is resolved or built for it.
    let repository = endpoint.as_ref().ok().and_then(path::Endpoint::repository);
    let grant = auth::check(&state, &headers, &extensions, repository).await?;
    match endpoint? {
        path::Endpoint::Version => Ok(axum::Json(serde_json::json!({})).into_response()),
        path::Endpoint::TagsList { name } => tags::list(&name, uri.query()),
        path::Endpoint::Referrers { subject, .. } => {
            referrers::list(state.storage.as_ref(), subject.as_ref(), uri.query(), head).await
        }
        path::Endpoint::Blob { digest, .. } => {
            blobs::serve(
                state.storage.as_ref(),
                &state.objects,
                &digest,
                blobs::Kind::Blob,
                head,
                &headers,
            )
            .await
        }
        path::Endpoint::Manifest {
            name,
            reference: Reference::Tag(tag),
        } => {
            let accepted = accept::Accepted::parse(&headers);
            let (index, format) = (accepted.index_kind(), accepted.image_format());
            let builder = state.builder.as_ref();
            match grant {
                Grant::Build => manifests::by_tag(builder, &name, &tag, index, format).await,
                Grant::CachedOnly => manifests::built_by_tag(builder, &name, &tag, index, format)
                    .await?
                    .ok_or_else(|| auth::not_built(&state, &headers, &name)),
            }
        }
        path::Endpoint::Manifest {
            reference: Reference::Digest(digest),
            ..
        } => {
            manifests::by_digest(
                state.storage.as_ref(),
                &state.objects,
                state.builder.as_ref(),
                &digest,
                head,
                &headers,
            )
            .await
        }
    }
}
