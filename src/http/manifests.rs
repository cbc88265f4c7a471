//! Manifests: by tag through the [`ImageBuilder`], in the variant the
//! client's `Accept` asks for ([`accept::negotiate`]); by digest from
//! storage, in the media type the manifest was stored as.

use axum::{
    body::Body,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::Response,
};

use super::{
    DOCKER_CONTENT_DIGEST, accept,
    blobs::{self, Kind},
    error::RegistryError,
    small_objects::SmallObjects,
};
use crate::{
    builder::{ImageBuilder, ImageManifests},
    media_type::{DOCKER_MANIFEST, MANIFEST_TYPES, OCI_MANIFEST},
    reference::{Digest, RepositoryName, Tag},
    storage::Storage,
};

/// The image manifest media types offered by tag, the default first.
pub const IMAGE_MANIFEST_OFFER: [&str; 2] = [DOCKER_MANIFEST, OCI_MANIFEST];

/// GET/HEAD `/v2/<name>/manifests/<tag>`: ask the builder, answer the
/// variant `headers` negotiate. The answer varies with `Accept`.
pub async fn by_tag(
    builder: &dyn ImageBuilder,
    name: &RepositoryName,
    tag: &Tag,
    headers: &HeaderMap,
) -> Result<Response, RegistryError> {
    let built = builder.manifest(name.as_str(), tag.as_str()).await?;
    let media_type = accept::negotiate(headers, &IMAGE_MANIFEST_OFFER);
    let chosen = variant(built, media_type);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, HeaderValue::from_static(media_type))
        .header(header::CONTENT_LENGTH, chosen.bytes.len())
        .header(DOCKER_CONTENT_DIGEST, chosen.digest.to_string())
        .header(header::ETAG, format!("\"{}\"", chosen.digest))
        .header(header::VARY, "Accept")
        .body(Body::from(chosen.bytes))
        .map_err(RegistryError::internal)
}

/// The manifest of `built` whose media type is `media_type`.
fn variant(built: ImageManifests, media_type: &str) -> crate::builder::BuiltManifest {
    if media_type == OCI_MANIFEST {
        built.oci
    } else {
        built.docker
    }
}

/// GET/HEAD `/v2/<name>/manifests/sha256:<hex>`: the stored object
/// `layers/<hex>` if it was stored as a manifest (Docker or OCI image
/// manifest, image index, manifest list), with that media type.
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
            media_types: &MANIFEST_TYPES,
        },
        head,
        headers,
    )
    .await
}
