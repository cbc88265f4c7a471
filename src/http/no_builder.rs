//! An [`ImageBuilder`] for servers that cannot build images.

use async_trait::async_trait;

use crate::builder::{BuildError, BuiltManifest, ImageBuilder};

/// Answers every manifest-by-tag request with [`BuildError::Unavailable`]
/// (404 `MANIFEST_UNKNOWN`). Used until a real builder is wired in, and by
/// tests of the HTTP surface.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoBuilder;

#[async_trait]
impl ImageBuilder for NoBuilder {
    async fn manifest(&self, _name: &str, _tag: &str) -> Result<BuiltManifest, BuildError> {
        Err(BuildError::Unavailable)
    }
}
