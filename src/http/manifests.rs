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
    reference::{Digest, RepositoryName, Tag},
    storage::Storage,
};

// The media type is defined once, with the manifest it describes.
use crate::manifest::MANIFEST_V2 as MANIFEST_MEDIA_TYPE;

/// GET/HEAD `/v2/<name>/manifests/<tag>`: ask the builder.
pub async fn by_tag(
    builder: &dyn ImageBuilder,
    name: &RepositoryName,
    tag: &Tag,
) -> Result<Response, RegistryError> {
    let built = builder.manifest(name.as_str(), tag.as_str()).await?;
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, MANIFEST_MEDIA_TYPE)
        .header(header::CONTENT_LENGTH, built.bytes.len())
        .header(DOCKER_CONTENT_DIGEST, built.digest.to_string())
        .header(header::ETAG, format!("\"{}\"", built.digest))
        .body(Body::from(built.bytes))
        .map_err(RegistryError::internal)
}

/// GET/HEAD `/v2/<name>/manifests/sha256:<hex>`: the stored object
/// `layers/<hex>`, always with the manifest media type.
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
            media_type: MANIFEST_MEDIA_TYPE,
        },
        head,
        headers,
    )
    .await
}
