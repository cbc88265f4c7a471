//! The image index of a name built for several platforms: a fan-out above
//! the single-platform build.
//!
//! Each platform is its own image (its own identity, Nix step with its
//! `system`, layers and manifest), built through [`Builder::single`], so
//! it joins a build of the same image in flight and counts against the
//! queue bound like any build; the platforms of one request are built at
//! the same time. The index lists, in the configured order, the platforms
//! whose image exists and is stored by digest like any manifest; it is
//! cached in every manifest tier under a key made of its media type and
//! each platform with its image's identity ([`identity::index_key`]).
//!
//! A platform whose build fails is left out (logged, and shown on the
//! status page); if every platform fails the client gets the first one's
//! error, as without an index. An index is cached only when nothing may
//! change on a retry: every platform built, or those missing were refused
//! by evaluation (the package is broken, unfree or not for that system in
//! this revision of the package set). An index missing a platform for any
//! other reason (a failed or timed-out Nix step, a full queue, storage) is
//! served but rebuilt on the next request, which retries that platform.
//!
//! The index's referrers list the SBOM of each image it names: each SBOM
//! is attached again with the index as its subject
//! ([`crate::referrers::store::reattach`]).

use bytes::Bytes;
use futures::future::join_all;

use super::{BuildError, Builder, BuiltManifest, ImageManifests, LayersError};
use crate::referrers::{Subject, store as referrers_store};
use crate::{
    build_errors::FailureKind,
    identity::{self, ImageIdentity},
    image::Image,
    image_index::{self, IndexEntry, IndexKind},
    metrics::Metrics,
    platform::Platform,
    resolve::Resolved,
};

impl Builder {
    /// The index of flavour `kind` of `image` (whose architecture is not
    /// fixed by its name) for every configured platform.
    pub(super) async fn index(
        &self,
        image: &Image,
        resolved: &Resolved,
        kind: IndexKind,
    ) -> Result<BuiltManifest, BuildError> {
        let (platforms, key) = self.index_plan(image, resolved, kind);
        if let Some(built) = self.cached_index(image, &key).await? {
            return Ok(built);
        }
        let results = join_all(
            platforms
                .iter()
                .map(|(_, image, _)| self.single(image.clone(), resolved)),
        )
        .await;
        let mut entries = Vec::with_capacity(platforms.len());
        let mut failures = Vec::new();
        for ((platform, _, _), result) in platforms.iter().zip(results) {
            match result {
                // The OCI manifest in an OCI index, the Docker one in a list.
                Ok(built) => {
                    let listed = match kind {
                        IndexKind::Oci => &built.oci,
                        IndexKind::DockerList => &built.docker,
                    };
                    entries.push(IndexEntry {
                        platform: *platform,
                        digest: listed.digest,
                        size: listed.bytes.len() as u64,
                    });
                }
                Err(error) => failures.push((*platform, error)),
            }
        }
        if entries.is_empty() {
            // Every platform failed: the first one's error, as without an
            // index (its build has logged and recorded it).
            return Err(failures
                .into_iter()
                .next()
                .map_or(BuildError::Unavailable, |(_, error)| error));
        }
        let mut final_answer = true;
        for (platform, error) in &failures {
            final_answer &= matches!(error.root(), BuildError::PackagesRefused(_));
            self.left_out(image, *platform, error);
        }

        let bytes = Bytes::from(
            image_index::assemble(kind, &entries)
                .map_err(|error| BuildError::Layers(LayersError::Manifest(error)))?,
        );
        self.inner
            .layers
            .put_blob(kind.media_type(), bytes.clone())
            .await?;
        let built = BuiltManifest::with_media_type(bytes, kind.media_type());
        // The index lists the SBOM of every image it names.
        let subject = Subject {
            media_type: kind.media_type(),
            digest: built.digest,
            size: built.bytes.len() as u64,
        };
        for entry in &entries {
            referrers_store::reattach(
                self.inner.layers.storage().as_ref(),
                &entry.digest,
                &subject,
            )
            .await?;
        }
        if !final_answer {
            tracing::warn!(image = %image.name, tag = %image.tag, digest = %built.digest, "index missing a platform that may build on a retry, not caching it");
        } else if self.inner.resolver.still_current(resolved).await {
            self.inner
                .manifests
                // Unchecked: the next pull confirms it (and marks it) first.
                .put(
                    &key,
                    &ImageManifests::single(built.clone()),
                    crate::gc::tiers::Stamp::UNCHECKED,
                )
                .await?;
        } else {
            tracing::warn!(image = %image.name, tag = %image.tag, "the package set changed during the build, not caching its index");
        }
        tracing::info!(image = %image.name, tag = %image.tag, digest = %built.digest, platforms = entries.len(), left_out = failures.len(), "index built");
        // Serving it is a use, as for a cached one.
        self.inner.touch(&ImageManifests::single(built.clone()));
        Ok(built)
    }

    /// Log and record (for the status page) that `platform` is left out of
    /// the index of `image` because its build failed with `error`.
    fn left_out(&self, image: &Image, platform: Platform, error: &BuildError) {
        let detail = error.detail();
        tracing::warn!(image = %image.name, tag = %image.tag, platform = %platform, kind = %error.kind(), error = %detail, "platform left out of the index");
        self.inner.settings.build_errors.record(
            &format!("{}:{} ({platform})", image.name, image.tag),
            FailureKind::Platform,
            &format!(
                "left out of the image index ({} failed): {detail}",
                error.kind()
            ),
        );
    }
}

impl Builder {
    /// Each configured platform with its image and identity, and the key
    /// of their index of flavour `kind`.
    fn index_plan(
        &self,
        image: &Image,
        resolved: &Resolved,
        kind: IndexKind,
    ) -> (Vec<(Platform, Image, ImageIdentity)>, String) {
        let platforms: Vec<(Platform, Image, ImageIdentity)> = self
            .inner
            .settings
            .platforms
            .iter()
            .map(|&platform| {
                let image = image.for_arch(platform.arch);
                let identity = self.identity(&image, resolved);
                (platform, image, identity)
            })
            .collect();
        let keyed: Vec<(String, &ImageIdentity)> = platforms
            .iter()
            .map(|(platform, _, identity)| (platform.to_string(), identity))
            .collect();
        let key = identity::index_key(kind.media_type(), &keyed);
        (platforms, key)
    }

    /// The index under `key` from a manifest tier, if it is cached.
    async fn cached_index(
        &self,
        image: &Image,
        key: &str,
    ) -> Result<Option<BuiltManifest>, BuildError> {
        if let Some(built) = self.inner.manifests.memory(key) {
            Metrics::inc(&self.inner.metrics.manifest_cache_hits);
            tracing::debug!(image = %image.name, tag = %image.tag, key, "index cache hit");
            self.inner.touch(&built);
            return Ok(Some(built.docker));
        }
        if let Some((built, tier)) = self
            .inner
            .manifests
            .get(key)
            .await
            .map_err(BuildError::Lookup)?
        {
            Metrics::inc(&self.inner.metrics.manifest_cache_hits);
            tracing::info!(image = %image.name, tag = %image.tag, key, tier = tier.name(), "index cache hit");
            self.inner.touch(&built);
            return Ok(Some(built.docker));
        }
        Ok(None)
    }

    /// The index of flavour `kind` of `image` if it is cached; never
    /// builds.
    pub(super) async fn built_index(
        &self,
        image: &Image,
        resolved: &Resolved,
        kind: IndexKind,
    ) -> Result<Option<BuiltManifest>, BuildError> {
        let (_, key) = self.index_plan(image, resolved, kind);
        self.cached_index(image, &key).await
    }
}
