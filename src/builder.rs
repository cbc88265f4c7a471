//! Builds images: drives the chain from image name to stored manifest.

use async_trait::async_trait;
use bytes::Bytes;

/// A manifest ready to be sent to a client.
#[derive(Clone, Debug)]
pub struct BuiltManifest {
    /// The manifest JSON exactly as stored.
    pub bytes: Bytes,
    /// Its digest, `sha256:<hex>`.
    pub digest: String,
}

/// Why an image could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Some requested packages do not exist in the package set.
    #[error("packages not found: {}", .0.join(", "))]
    PackagesNotFound(Vec<String>),
    /// The image cannot be built (for now: no builder configured).
    #[error("image building is not available")]
    Unavailable,
}

/// Produces manifests for image names; the HTTP layer's only entry point
/// into building.
#[async_trait]
pub trait ImageBuilder: Send + Sync + 'static {
    /// The manifest for repository `name` (validated, `/`-separated) at `tag`.
    async fn manifest(&self, name: &str, tag: &str) -> Result<BuiltManifest, BuildError>;
}
