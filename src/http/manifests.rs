//! Manifests: by tag through the [`ImageBuilder`], as the client's
//! `Accept` asks ([`super::accept`]): an image index when it accepts one
//! and the name has several platforms, else the Docker or the OCI image
//! manifest; by digest from storage, in the media type the manifest was
//! stored as.

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
    builder::{BuiltManifest, ImageBuilder},
    image_index::IndexKind,
    media_type::{ImageFormat, MANIFEST_TYPES},
    reference::{Digest, RepositoryName, Tag},
    storage::Storage,
};

/// GET/HEAD `/v2/<name>/manifests/<tag>`: ask the builder for an index of
/// `index` flavour if the client accepts one, else for the image manifest
/// in `format`. The answer varies with `Accept`.
pub async fn by_tag(
    builder: &dyn ImageBuilder,
    name: &RepositoryName,
    tag: &Tag,
    index: Option<IndexKind>,
    format: ImageFormat,
) -> Result<Response, RegistryError> {
    let built = builder
        .manifest(name.as_str(), tag.as_str(), index, format)
        .await?;
    answer(built)
}

/// [`by_tag`] for a client that may not start a build: `Ok(None)` when
/// the manifest is not built yet.
pub async fn built_by_tag(
    builder: &dyn ImageBuilder,
    name: &RepositoryName,
    tag: &Tag,
    index: Option<IndexKind>,
    format: ImageFormat,
) -> Result<Option<Response>, RegistryError> {
    match builder
        .built_manifest(name.as_str(), tag.as_str(), index, format)
        .await?
    {
        Some(built) => answer(built).map(Some),
        None => Ok(None),
    }
}

/// The response serving `built`.
fn answer(built: BuiltManifest) -> Result<Response, RegistryError> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, built.media_type)
        .header(header::CONTENT_LENGTH, built.bytes.len())
        .header(DOCKER_CONTENT_DIGEST, built.digest.to_string())
        .header(header::ETAG, format!("\"{}\"", built.digest))
        .header(header::VARY, "Accept")
        .body(Body::from(built.bytes))
        .map_err(RegistryError::internal)
}

/// GET/HEAD `/v2/<name>/manifests/sha256:<hex>`: the stored object
/// `layers/<hex>` if it was stored as a manifest (Docker or OCI image
/// manifest, image index, manifest list), with that media type, once the
/// `builder` agrees ([`ImageBuilder::serve_by_digest`]: the collection
/// protocol marks it as used and, while a collection may be deleting,
/// confirms it). Both happen only after storage has shown the manifest
/// exists: a request for a digest nobody stored writes nothing.
pub async fn by_digest(
    storage: &dyn Storage,
    objects: &SmallObjects,
    builder: &dyn ImageBuilder,
    digest: &Digest,
    head: bool,
    headers: &HeaderMap,
) -> Result<Response, RegistryError> {
    let response = blobs::serve(
        storage,
        objects,
        digest,
        Kind::Manifest {
            media_types: &MANIFEST_TYPES,
        },
        head,
        headers,
    )
    .await?;
    if !builder.serve_by_digest(digest).await? {
        return Err(RegistryError::manifest_unknown(&digest.to_string()));
    }
    Ok(response)
}
