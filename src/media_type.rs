//! Every media type this registry writes or serves, named once.
//!
//! An image is served in two variants made of the same blobs: Docker Image
//! Manifest V2 Schema 2 (the default, what upstream Nixery serves) and an
//! OCI image manifest, for clients that ask for it (see
//! [`crate::http::accept`]). The config bytes are the same in both (the
//! Docker and OCI image configs share their JSON format); only the media
//! types in the manifest's descriptors differ. SBOMs are OCI artifacts
//! (OCI image manifests with an `artifactType`) that refer to an image
//! manifest through their `subject`.

/// Docker Image Manifest V2, Schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list (multi-platform), Schema 2.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker layer: a gzip-compressed tar.
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// OCI image manifest (also the envelope of artifacts such as SBOMs).
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index (multi-platform images, referrers lists).
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI layer: a gzip-compressed tar.
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The OCI empty descriptor's media type: the config of an artifact that
/// has none, the two bytes `{}`.
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// An SPDX document in its JSON serialisation (the SBOM's blob and its
/// artifact type).
pub const SPDX_JSON: &str = "application/spdx+json";

/// OCI artifact manifest: an older draft of artifacts that some tools
/// still write. This registry writes none, but reads and keeps them.
pub const OCI_ARTIFACT: &str = "application/vnd.oci.artifact.manifest.v1+json";

/// Every content type under which a stored object is a manifest: served by
/// `GET /v2/<name>/manifests/<digest>` and followed by garbage collection.
/// An object stored under any other content type is not a manifest.
pub const MANIFEST_TYPES: [&str; 5] = [
    DOCKER_MANIFEST,
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST_LIST,
    OCI_ARTIFACT,
];

/// Which of an image's two manifests a client gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ImageFormat {
    /// Docker Image Manifest V2 Schema 2 ([`DOCKER_MANIFEST`]).
    Docker,
    /// OCI image manifest ([`OCI_MANIFEST`]).
    Oci,
}

impl ImageFormat {
    /// The manifest's media type.
    pub fn media_type(self) -> &'static str {
        match self {
            ImageFormat::Docker => DOCKER_MANIFEST,
            ImageFormat::Oci => OCI_MANIFEST,
        }
    }
}

/// Whether an object stored with `content_type` is a manifest: one of
/// [`MANIFEST_TYPES`], ignoring case and parameters such as
/// `; charset=utf-8`.
pub fn is_manifest(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    MANIFEST_TYPES
        .iter()
        .any(|known| known.eq_ignore_ascii_case(essence))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_types_are_recognised_with_parameters() {
        assert!(is_manifest(DOCKER_MANIFEST));
        assert!(is_manifest(&format!("{OCI_INDEX}; charset=utf-8")));
        assert!(is_manifest(OCI_ARTIFACT));
        assert!(!is_manifest(DOCKER_CONFIG));
        assert!(!is_manifest("application/octet-stream"));
    }
}
