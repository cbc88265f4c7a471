//! Manifests: by tag through the [`ImageBuilder`], by digest from storage.

use axum::{
    body::Body,
    http::{HeaderMap, StatusCode, header},
    response::Response,
};

use super::{
    DOCKER_CONTENT_DIGEST,
    blobs::{self, Kind},
    error::RegistryError,
    small_objects::SmallObjects,
};
use crate::{
    builder::ImageBuilder,
    image_index::{DOCKER_MANIFEST_LIST, IndexKind, OCI_INDEX},
    reference::{Digest, RepositoryName, Tag},
    storage::Storage,
};

// The media types are defined once, with the documents they describe.
use crate::manifest::MANIFEST_V2;

/// What is served as a manifest by digest: image manifests and indexes.
const MANIFEST_MEDIA_TYPES: &[&str] = &[MANIFEST_V2, OCI_INDEX, DOCKER_MANIFEST_LIST];

/// GET/HEAD `/v2/<name>/manifests/<tag>`: ask the builder, for an index of
/// `index` flavour if the client accepts one ([`super::accept`]).
pub async fn by_tag(
    builder: &dyn ImageBuilder,
    name: &RepositoryName,
    tag: &Tag,
    index: Option<IndexKind>,
) -> Result<Response, RegistryError> {
    let built = builder.manifest(name.as_str(), tag.as_str(), index).await?;
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, built.media_type)
        .header(header::CONTENT_LENGTH, built.bytes.len())
        .header(DOCKER_CONTENT_DIGEST, built.digest.to_string())
        .header(header::ETAG, format!("\"{}\"", built.digest))
        .body(Body::from(built.bytes))
        .map_err(RegistryError::internal)
}

/// GET/HEAD `/v2/<name>/manifests/sha256:<hex>`: the stored object
/// `layers/<hex>` if it was stored as an image manifest or an index, with
/// that media type.
pub async fn by_digest(
    storage: &dyn Storage,
    objects: &SmallObjects,
    digest: &Digest,
    head: bool,
    headers: &HeaderMap,
) -> Result<Response, RegistryError> {
    blobs::serve(
        storage,
        objects,
        digest,
        Kind::Manifest {
            media_types: MANIFEST_MEDIA_TYPES,
        },
        head,
        headers,
    )
    .await
}
