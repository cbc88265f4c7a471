//! Builds images: drives the chain from image name to stored manifest.
//!
//! `manifest(name, tag)` parses the name, resolves the package source to an
//! exact revision ([`crate::resolve`]), derives the image's identity
//! ([`crate::identity`]) and looks it up in the manifest tiers
//! ([`crate::manifest_cache`]). Otherwise it runs one build per identity at
//! a time (single flight, so requests join only a build of exactly their
//! image): the Nix
//! step, layer grouping, packing of every layer not yet recorded (through
//! the [`LayerStore`]), the symlink layer, the config, both manifests
//! (Docker and OCI) and the image's SBOM, attached to both manifests as a
//! referrer ([`crate::sbom`], [`crate::referrers`]). Builds run in their
//! own task so that a client hanging up never leaves a half-written result
//! behind.
//!
//! The builder is the one owner of failure reporting: every failed build
//! (and every source that could not be resolved) is logged once, counted,
//! and recorded for the status page with its [`FailureKind`].
//!
//! With several platforms (`NIXERY_PLATFORMS`), a client that accepts an
//! image index gets one ([`index`]): a fan-out above the single-platform
//! build, which builds each platform's image at the same time.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{
    FutureExt, StreamExt, TryStreamExt,
    future::{BoxFuture, Shared},
    stream,
};
use parking_lot::Mutex;
use tokio::sync::Semaphore;

use crate::{
    archive,
    build_errors::{BuildErrors, FailureKind},
    cache::CacheError,
    digest::Digest,
    gc::tiers::Guard,
    identity::{ImageIdentity, Recipe, Revision},
    image::{Arch, Image},
    image_index::IndexKind,
    layer_store::{LayerRecord, LayerStore, LayerStoreError, Packing, Stored},
    layers::{Layer, LayerError, Layering, RuntimeGraph},
    manifest::{self, LayerEntry, ManifestError},
    manifest_cache::ManifestCache,
    media_type::{self, ImageFormat},
    metrics::{Metrics, Phase},
    nix::{NixError, NixRunner, Refusal},
    platform::Platform,
    referrers::{
        Subject,
        store::{self as referrers_store, ArtifactSpec},
    },
    resolve::{ResolveError, Resolved, Resolver},
    sbom::{self, SbomInput},
    source::PackageSource,
    storage::StorageError,
};

mod index;

pub use crate::manifest_cache::{BuiltManifest, ImageManifests};

/// File name of the SBOM for clients that pull it to disk.
const SBOM_TITLE: &str = "sbom.spdx.json";

/// Why an image could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The package source could not be resolved for the tag.
    #[error(transparent)]
    Source(ResolveError),
    /// The package set refuses some requested packages (not found, not a
    /// derivation, unfree, broken, ...); decided by evaluation alone.
    #[error("{}", crate::nix::describe_refusals(.0))]
    PackagesRefused(Vec<Refusal>),
    /// The Nix step failed or timed out; details are in the logs.
    #[error("the image build failed")]
    NixFailed(#[source] NixError),
    /// Grouping or packing the image's layers, or assembling its
    /// manifest, failed.
    #[error("the image build failed")]
    Layers(#[source] LayersError),
    /// Storing a layer, the config or the manifest failed.
    #[error("storing the image failed")]
    Storage(#[source] CacheError),
    /// Looking up the cache failed (not a miss: the backend failed even
    /// after retries), so no build was started.
    #[error("the storage backend is unavailable")]
    Lookup(#[source] CacheError),
    /// So many builds are running or waiting that a new one is refused.
    #[error("{0} image builds are running or waiting; try again later")]
    Busy(usize),
    /// The build task stopped without a result (it panicked).
    #[error("the image build stopped unexpectedly")]
    Crashed(#[source] tokio::task::JoinError),
    /// The image cannot be built (no builder configured).
    #[error("image building is not available")]
    Unavailable,
    /// Garbage collections removed blobs of the image while it was being
    /// built, twice in a row.
    #[error("a storage collection removed blobs of the image during its build; try again")]
    Collected,
    /// Another request's build of the same image failed.
    #[error(transparent)]
    Shared(Arc<BuildError>),
}

/// What went wrong between the Nix step and the manifest.
#[derive(Debug, thiserror::Error)]
pub enum LayersError {
    /// The runtime graph could not be grouped into layers.
    #[error("grouping layers")]
    Grouping(#[source] LayerError),
    /// A layer's files could not be packed.
    #[error(transparent)]
    Packing(LayerStoreError),
    /// The config or manifest could not be assembled.
    #[error("assembling the manifest")]
    Manifest(#[source] ManifestError),
    /// The image's SBOM could not be written.
    #[error("writing the SBOM")]
    Sbom(#[source] crate::sbom::SbomError),
}

impl BuildError {
    /// The error behind any sharing wrappers.
    pub fn root(&self) -> &BuildError {
        match self {
            BuildError::Shared(inner) => inner.root(),
            other => other,
        }
    }

    /// The step that failed, as shown on the status page.
    pub fn kind(&self) -> FailureKind {
        match self {
            BuildError::Source(_) => FailureKind::Source,
            BuildError::PackagesRefused(_) => FailureKind::Packages,
            BuildError::NixFailed(_) => FailureKind::Nix,
            BuildError::Layers(_) => FailureKind::Layers,
            BuildError::Storage(_) => FailureKind::Storage,
            BuildError::Lookup(_) => FailureKind::StorageLookup,
            BuildError::Busy(_) => FailureKind::Queue,
            BuildError::Crashed(_) => FailureKind::Crash,
            BuildError::Unavailable => FailureKind::Unavailable,
            BuildError::Collected => FailureKind::Storage,
            BuildError::Shared(inner) => inner.kind(),
        }
    }

    /// What the status page shows and the log records: the error with its
    /// causes, and for a Nix failure what Nix printed last. Not redacted:
    /// the outputs do that.
    pub fn detail(&self) -> String {
        let chain = crate::error_text::chain(self);
        match self.root() {
            BuildError::NixFailed(error) => match error.output() {
                Some(output) => format!("{chain}\n{output}"),
                None => chain,
            },
            _ => chain,
        }
    }
}

impl From<CacheError> for BuildError {
    fn from(error: CacheError) -> Self {
        BuildError::Storage(error)
    }
}

impl From<LayerStoreError> for BuildError {
    fn from(error: LayerStoreError) -> Self {
        match error {
            LayerStoreError::Cache(error) => BuildError::Storage(error),
            packing => BuildError::Layers(LayersError::Packing(packing)),
        }
    }
}

impl From<NixError> for BuildError {
    fn from(error: NixError) -> Self {
        match error {
            NixError::Refused(refusals) => BuildError::PackagesRefused(refusals),
            other => BuildError::NixFailed(other),
        }
    }
}

/// Produces manifests for image names; the HTTP layer's only entry point
/// into building.
#[async_trait]
pub trait ImageBuilder: Send + Sync + 'static {
    /// The manifest for repository `name` (validated, `/`-separated) at
    /// `tag`: an image index of flavour `index` when the client accepts one
    /// and the name has several platforms, else the image manifest in
    /// `format`.
    async fn manifest(
        &self,
        name: &str,
        tag: &str,
        index: Option<IndexKind>,
        format: ImageFormat,
    ) -> Result<BuiltManifest, BuildError>;

    /// What [`ImageBuilder::manifest`] would answer, but only when it is
    /// already built (in a manifest tier): `Ok(None)` where it would
    /// start a build, which this never does. The package source is
    /// resolved (its caches apply); Nix never runs.
    async fn built_manifest(
        &self,
        name: &str,
        tag: &str,
        index: Option<IndexKind>,
        format: ImageFormat,
    ) -> Result<Option<BuiltManifest>, BuildError>;

    /// Whether the manifest `digest`, which storage has just shown to
    /// exist, may be served by digest: the collection protocol records its
    /// use and, while a collection may be deleting, confirms it
    /// ([`Guard::by_digest`]); `Ok(false)` when a collection removed it.
    /// A builder without collections says yes.
    async fn serve_by_digest(&self, digest: &Digest) -> Result<bool, StorageError> {
        let _ = digest;
        Ok(true)
    }
}

/// Settings of the [`Builder`].
pub struct BuilderSettings {
    /// How closures are split into layers (the budget excludes the symlink
    /// layer).
    pub layering: Layering,
    /// The version of the Nix files that run the Nix step (see
    /// [`Recipe::nix_files`]).
    pub nix_files: String,
    /// Layers packed at once, across all builds.
    pub pack_concurrency: usize,
    /// Images built at once.
    pub build_concurrency: usize,
    /// Images that may wait for a build slot; a new build beyond them is
    /// refused with [`BuildError::Busy`].
    pub build_queue: usize,
    /// Where failed builds are recorded for the status page (only by the
    /// builder).
    pub build_errors: Arc<BuildErrors>,
    /// The platforms a name is built for (`NIXERY_PLATFORMS`), first one
    /// first; an image index lists those that built.
    pub platforms: Vec<Platform>,
    /// The collection protocol (see [`crate::gc::tiers`]); off, nothing is
    /// marked and collections are not watched.
    pub gc: Guard,
}

impl BuilderSettings {
    /// The recipe part of every image identity these settings build with
    /// `nix` (which passes the unfree policy to the Nix step); its
    /// [`Recipe::config`] is filled in per image.
    pub fn recipe(&self, nix: &NixRunner) -> Recipe {
        Recipe {
            layering: self.layering.fingerprint(),
            nix_files: self.nix_files.clone(),
            allow_unfree: nix.allow_unfree(),
            config: String::new(),
        }
    }

    /// The identity of `image` built from `revision` with these settings
    /// and `nix`.
    pub fn identity(&self, image: &Image, revision: &Revision, nix: &NixRunner) -> ImageIdentity {
        let labels = image_labels(image, revision, nix.source());
        identity_of(image, revision, &labels, &self.recipe(nix))
    }
}

/// The config labels of `image` built from `revision` of `source` (see
/// [`manifest::labels`]): the source is the channel, the git URL without
/// credentials, `embedded` or `path`; the revision is the commit or the
/// embedded set's hash (a local path has none); the title is the name.
fn image_labels(
    image: &Image,
    revision: &Revision,
    source: &PackageSource,
) -> BTreeMap<String, String> {
    let source_label = match (revision, source) {
        (Revision::Embedded(_), _) => "embedded".to_owned(),
        (_, PackageSource::Channel(channel)) => channel.clone(),
        (_, PackageSource::Git(url)) => crate::redact::without_credentials(url),
        _ => "path".to_owned(),
    };
    let revision_label = match revision {
        Revision::Embedded(hash) | Revision::Commit(hash) => Some(hash.as_str()),
        Revision::Path { .. } => None,
    };
    manifest::labels(&source_label, revision_label, &image.name)
}

/// The identity of `image` from `revision` with `recipe`, its
/// [`Recipe::config`] set to what decides the image's config: the image's
/// [`Image::config_fingerprint`] and its `labels`.
fn identity_of(
    image: &Image,
    revision: &Revision,
    labels: &BTreeMap<String, String>,
    recipe: &Recipe,
) -> ImageIdentity {
    let config = serde_json::json!({ "image": image.config_fingerprint(), "labels": labels });
    let recipe = Recipe {
        config: config.to_string(),
        ..recipe.clone()
    };
    ImageIdentity::new(revision, image.arch.nix_system(), &image.packages, &recipe)
}

type SharedBuild = Shared<BoxFuture<'static, Result<ImageManifests, Arc<BuildError>>>>;

/// The image builder behind the registry.
pub struct Builder {
    inner: Arc<Inner>,
}

struct Inner {
    layers: LayerStore,
    manifests: ManifestCache,
    resolver: Resolver,
    nix: NixRunner,
    settings: BuilderSettings,
    recipe: Recipe,
    build_slots: Semaphore,
    in_flight: Mutex<HashMap<String, SharedBuild>>,
    metrics: Arc<Metrics>,
}

impl Builder {
    /// A builder storing layers in `layers` and manifests in `manifests`,
    /// resolving the package source with `resolver`, running Nix through
    /// `nix` and counting what it does in `metrics`.
    pub fn new(
        layers: LayerStore,
        manifests: ManifestCache,
        resolver: Resolver,
        nix: NixRunner,
        settings: BuilderSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        let build_slots = Semaphore::new(settings.build_concurrency.max(1));
        let recipe = settings.recipe(&nix);
        Self {
            inner: Arc::new(Inner {
                layers,
                manifests,
                resolver,
                nix,
                settings,
                recipe,
                build_slots,
                in_flight: Mutex::new(HashMap::new()),
                metrics,
            }),
        }
    }

    /// The local disk tier's directory, if there is one.
    pub fn local_tier_dir(&self) -> Option<PathBuf> {
        self.inner.manifests.disk_dir().map(PathBuf::from)
    }

    /// Join the build of `identity` already in flight, or start one unless
    /// the build slots and the queue are all taken. A build counts until it
    /// ends, whether or not anyone still waits for it.
    fn join_or_start(
        &self,
        image: Image,
        resolved: Resolved,
        identity: ImageIdentity,
    ) -> Result<SharedBuild, BuildError> {
        let flight_key = identity.key().to_owned();
        let mut in_flight = self.inner.in_flight.lock();
        if let Some(build) = in_flight.get(&flight_key) {
            return Ok(build.clone());
        }
        let admitted =
            self.inner.settings.build_concurrency.max(1) + self.inner.settings.build_queue;
        if in_flight.len() >= admitted {
            Metrics::inc(&self.inner.metrics.builds_refused);
            tracing::warn!(image = %image.name, tag = %image.tag, builds = in_flight.len(), "build queue full, refusing a new build");
            return Err(BuildError::Busy(in_flight.len()));
        }
        let inner = self.inner.clone();
        let flight = InFlightEntry {
            inner: self.inner.clone(),
            key: flight_key.clone(),
        };
        let (name, tag) = (image.name.clone(), image.tag.clone());
        let task = tokio::spawn(async move {
            // Leaves the in-flight map when the build ends, even by a panic,
            // so that a later request starts afresh.
            let _flight = flight;
            let result = inner.build(&image, &resolved, &identity).await;
            if let Err(error) = &result {
                inner.report(&image.name, &image.tag, error);
            }
            result.map_err(Arc::new)
        });
        let inner = self.inner.clone();
        let build: SharedBuild = task
            .map(move |joined| match joined {
                Ok(result) => result,
                Err(join_error) => {
                    let error = BuildError::Crashed(join_error);
                    inner.report(&name, &tag, &error);
                    Err(Arc::new(error))
                }
            })
            .boxed()
            .shared();
        in_flight.insert(flight_key, build.clone());
        Ok(build)
    }
}

/// How long each phase of one image build took (resolution, per request,
/// is counted apart: see [`Phase::Resolve`]).
#[derive(Debug, Default)]
struct BuildPhases {
    took: Vec<(Phase, Duration)>,
}

impl BuildPhases {
    /// Add `took` to `phase`.
    fn add(&mut self, phase: Phase, took: Duration) {
        match self.took.iter_mut().find(|(p, _)| *p == phase) {
            Some((_, total)) => *total += took,
            None => self.took.push((phase, took)),
        }
    }

    /// Count every phase in the histogram.
    fn record(&self, metrics: &Metrics) {
        for (phase, took) in &self.took {
            metrics.observe_phase(*phase, *took);
        }
    }
}

/// `realise=0.031s graph=0.012s ...`, in build order, milliseconds.
impl std::fmt::Display for BuildPhases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for phase in Phase::ALL {
            if let Some((_, took)) = self.took.iter().find(|(p, _)| *p == phase) {
                if !first {
                    f.write_str(" ")?;
                }
                first = false;
                write!(f, "{}={:.3}s", phase.label(), took.as_secs_f64())?;
            }
        }
        Ok(())
    }
}

/// Removes a build from the in-flight map when dropped.
struct InFlightEntry {
    inner: Arc<Inner>,
    key: String,
}

impl Drop for InFlightEntry {
    fn drop(&mut self) {
        self.inner.in_flight.lock().remove(&self.key);
    }
}

/// What one request for a manifest by tag asks of the builder.
enum Plan {
    /// An image index over every configured platform.
    Index(IndexKind),
    /// One image, for this architecture.
    Single(Arch),
}

#[async_trait]
impl ImageBuilder for Builder {
    async fn serve_by_digest(&self, digest: &Digest) -> Result<bool, StorageError> {
        self.inner.settings.gc.by_digest(digest).await
    }

    async fn manifest(
        &self,
        name: &str,
        tag: &str,
        index: Option<IndexKind>,
        format: ImageFormat,
    ) -> Result<BuiltManifest, BuildError> {
        let image = Image::from_name(name, tag);
        let resolved = self.resolve(&image, tag).await?;
        match self.plan(&image, index) {
            Plan::Index(kind) => self.index(&image, &resolved, kind).await,
            Plan::Single(arch) => {
                let built = self.single(image.for_arch(arch), &resolved).await?;
                Ok(built.get(format).clone())
            }
        }
    }

    async fn built_manifest(
        &self,
        name: &str,
        tag: &str,
        index: Option<IndexKind>,
        format: ImageFormat,
    ) -> Result<Option<BuiltManifest>, BuildError> {
        let image = Image::from_name(name, tag);
        let resolved = self.resolve(&image, tag).await?;
        match self.plan(&image, index) {
            Plan::Index(kind) => self.built_index(&image, &resolved, kind).await,
            Plan::Single(arch) => {
                let image = image.for_arch(arch);
                let identity = self.identity(&image, &resolved);
                let built = self.cached(&image, &identity).await?;
                Ok(built.map(|built| built.get(format).clone()))
            }
        }
    }
}

impl Builder {
    /// The package source resolved for `tag`; failures are logged (and,
    /// unless the tag is simply unknown, recorded for the status page).
    async fn resolve(&self, image: &Image, tag: &str) -> Result<Resolved, BuildError> {
        let started = Instant::now();
        let resolved = self.inner.resolver.resolve(tag).await;
        self.inner
            .metrics
            .observe_phase(Phase::Resolve, started.elapsed());
        match resolved {
            Ok(resolved) => Ok(resolved),
            Err(error) => {
                let label = format!("{}:{tag}", image.name);
                let error = BuildError::Source(error);
                self.inner.report_unresolved(&label, &error);
                Err(error)
            }
        }
    }

    /// The identity of `image` built from `resolved` with this builder's
    /// recipe (layering and Nix files).
    fn identity(&self, image: &Image, resolved: &Resolved) -> ImageIdentity {
        let labels = image_labels(image, &resolved.revision, self.inner.nix.source());
        identity_of(image, &resolved.revision, &labels, &self.inner.recipe)
    }

    /// Whether a request for `image` accepting `index` gets an index or
    /// one image, and of which architecture.
    fn plan(&self, image: &Image, index: Option<IndexKind>) -> Plan {
        let platforms = &self.inner.settings.platforms;
        // `arm64/` names one arm64 image, as upstream; otherwise a client
        // that takes no index gets the first platform's image.
        let explicit_arm64 = image.arch == Arch::Arm64;
        match index {
            Some(kind) if !explicit_arm64 && platforms.len() > 1 => Plan::Index(kind),
            _ => Plan::Single(match platforms.first() {
                Some(first) if !explicit_arm64 => first.arch,
                _ => image.arch,
            }),
        }
    }

    /// The manifests of one image from a manifest tier, if it is cached.
    async fn cached(
        &self,
        image: &Image,
        identity: &ImageIdentity,
    ) -> Result<Option<ImageManifests>, BuildError> {
        // The warm path: one map lookup, nothing logged above debug.
        if let Some(built) = self.inner.manifests.memory(identity.key()) {
            Metrics::inc(&self.inner.metrics.manifest_cache_hits);
            tracing::debug!(image = %image.name, tag = %image.tag, key = identity.key(), "manifest cache hit");
            self.inner.touch(&built);
            return Ok(Some(built));
        }
        if let Some((built, tier)) = self
            .inner
            .manifests
            .get(identity.key())
            .await
            .map_err(BuildError::Lookup)?
        {
            Metrics::inc(&self.inner.metrics.manifest_cache_hits);
            tracing::info!(image = %image.name, tag = %image.tag, key = identity.key(), tier = tier.name(), "manifest cache hit");
            self.inner.touch(&built);
            return Ok(Some(built));
        }
        Ok(None)
    }

    /// The manifest of one image (one platform): from a manifest tier, or
    /// from its build (joined if in flight).
    async fn single(
        &self,
        image: Image,
        resolved: &Resolved,
    ) -> Result<ImageManifests, BuildError> {
        let identity = self.identity(&image, resolved);
        if let Some(built) = self.cached(&image, &identity).await? {
            return Ok(built);
        }
        self.join_or_start(image, resolved.clone(), identity)?
            .await
            .map_err(BuildError::Shared)
    }
}

impl Inner {
    /// Record a use of both manifests of `built` (one, for an index),
    /// off the request path. Every manifest answered by tag, from any
    /// tier or from its build, goes through here.
    fn touch(&self, built: &ImageManifests) {
        let oci = (built.oci.digest != built.docker.digest).then_some(&built.oci.digest);
        self.settings
            .gc
            .used([&built.docker.digest].into_iter().chain(oci));
    }

    async fn build(
        self: &Arc<Self>,
        image: &Image,
        resolved: &Resolved,
        identity: &ImageIdentity,
    ) -> Result<ImageManifests, BuildError> {
        let _slot = self
            .build_slots
            .acquire()
            .await
            .map_err(|_| BuildError::Unavailable)?;
        // A build that finished while we waited may have cached the result.
        if let Some((built, tier)) = self
            .manifests
            .get(identity.key())
            .await
            .map_err(BuildError::Lookup)?
        {
            Metrics::inc(&self.metrics.manifest_cache_hits);
            tracing::info!(image = %image.name, tag = %image.tag, key = identity.key(), tier = tier.name(), "manifest cache hit");
            return Ok(built);
        }
        // A collection may remove blobs the build reuses; then it is built
        // again, once (see `Guard::build_finished`).
        for attempt in 0..2 {
            let ticket = self.settings.gc.build_started();
            let (built, blobs, layer_count, mut phases) =
                self.build_once(image, resolved, identity).await?;
            let manifest_started = Instant::now();
            let finished = self
                .settings
                .gc
                .build_finished(ticket, &built.docker.digest, &blobs)
                .await
                .map_err(|e| BuildError::Storage(e.into()))?;
            let stamp = match finished {
                Ok(stamp) => stamp,
                Err(missing) => {
                    // This build may itself have recorded a layer whose
                    // blob the collection then deleted: such records go,
                    // so the next attempt packs those layers again.
                    self.layers
                        .forget_records_naming(&missing)
                        .await
                        .map_err(|e| BuildError::Storage(e.into()))?;
                    if attempt == 0 {
                        tracing::warn!(image = %image.name, tag = %image.tag, "blobs of the image were collected during its build, building it again");
                        continue;
                    }
                    return Err(BuildError::Collected);
                }
            };
            if self.resolver.still_current(resolved).await {
                self.manifests.put(identity.key(), &built, stamp).await?;
            } else {
                tracing::warn!(image = %image.name, tag = %image.tag, "the package set changed during the build, not caching its manifest");
            }
            phases.add(Phase::Manifest, manifest_started.elapsed());
            phases.record(&self.metrics);
            tracing::info!(
                image = %image.name,
                tag = %image.tag,
                digest = %built.docker.digest,
                oci_digest = %built.oci.digest,
                layers = layer_count,
                phases = %phases,
                "image built"
            );
            return Ok(built);
        }
        Err(BuildError::Collected)
    }

    /// The Nix step, grouping, packing and the stored config and manifest
    /// blobs: the manifest, the hex digests of every blob it names, its
    /// layer count and how long each phase took.
    async fn build_once(
        self: &Arc<Self>,
        image: &Image,
        resolved: &Resolved,
        identity: &ImageIdentity,
    ) -> Result<(ImageManifests, Vec<Digest>, usize, BuildPhases), BuildError> {
        Metrics::inc(&self.metrics.nix_builds);
        tracing::info!(
            image = %image.name,
            tag = %image.tag,
            system = image.arch.nix_system(),
            revision = %resolved.revision.describe(),
            key = identity.key(),
            "building image"
        );

        let mut phases = BuildPhases::default();
        let prepared = self.nix.prepare_image(image, &resolved.source).await?;
        phases.add(Phase::Realise, prepared.phases.realise);
        phases.add(Phase::Graph, prepared.phases.graph);
        phases.add(Phase::SymlinkLayer, prepared.phases.symlink_layer);
        let grouping_started = Instant::now();
        let groups = self
            .settings
            .layering
            .group(&prepared.runtime_graph)
            .map_err(|error| BuildError::Layers(LayersError::Grouping(error)))?;
        phases.add(Phase::Grouping, grouping_started.elapsed());
        let layers_started = Instant::now();

        let entries: Vec<LayerEntry> = stream::iter(groups)
            .map(|layer| {
                let inner = self.clone();
                let image_name = image.name.clone();
                async move { inner.store_layer(&image_name, layer).await }
            })
            .buffer_unordered(self.settings.pack_concurrency.max(1))
            .try_collect()
            .await?;
        let symlink = &prepared.symlink_layer;
        let symlink_record = self
            .store_symlink_layer(&image.name, &symlink.tar_hash.hex(), symlink.tar.clone())
            .await?;
        phases.add(Phase::Layers, layers_started.elapsed());
        let manifest_started = Instant::now();
        let symlink_entry = LayerEntry {
            digest: symlink_record.digest,
            size: symlink_record.size,
            diff_id: symlink_record.diff_id,
            merge_rating: 0,
            first_path: String::new(),
        };
        let layer_count = entries.len() + 1;
        let mut blobs: Vec<Digest> = entries.iter().map(|e| e.digest).collect();
        blobs.push(symlink_entry.digest);
        let cmd = image.cmd(prepared.main_program.as_deref());
        let user = image.user.as_ref().map(|user| user.config_user());
        let labels = image_labels(image, &resolved.revision, self.nix.source());
        let documents = manifest::assemble(
            image.arch.image_arch(),
            cmd.as_deref(),
            user.as_deref(),
            &labels,
            entries,
            symlink_entry,
        )
        .map_err(|error| BuildError::Layers(LayersError::Manifest(error)))?;
        let built = ImageManifests::from_docker(Bytes::from(documents.manifest), &labels)
            .map_err(|error| BuildError::Layers(LayersError::Manifest(error)))?;
        self.layers
            .put_blob(media_type::DOCKER_CONFIG, Bytes::from(documents.config))
            .await?;
        self.layers
            .put_blob(media_type::DOCKER_MANIFEST, built.docker.bytes.clone())
            .await?;
        self.layers
            .put_blob(media_type::OCI_MANIFEST, built.oci.bytes.clone())
            .await?;
        self.store_sbom(image, &prepared.runtime_graph, &built)
            .await?;
        blobs.push(documents.config_ref.digest);
        blobs.push(built.oci.digest);
        phases.add(Phase::Manifest, manifest_started.elapsed());
        Ok((built, blobs, layer_count, phases))
    }

    /// Write the SBOM of the image whose closure is `graph` and attach it
    /// to both of its manifests.
    async fn store_sbom(
        &self,
        image: &Image,
        graph: &RuntimeGraph,
        built: &ImageManifests,
    ) -> Result<(), BuildError> {
        let document = sbom::spdx_document(&SbomInput {
            graph,
            packages: &image.packages,
            system: image.arch.nix_system(),
            manifest: built.docker.digest,
        })
        .map_err(|error| BuildError::Layers(LayersError::Sbom(error)))?;
        let subjects = [
            Subject {
                media_type: media_type::DOCKER_MANIFEST,
                digest: built.docker.digest,
                size: built.docker.bytes.len() as u64,
            },
            Subject {
                media_type: media_type::OCI_MANIFEST,
                digest: built.oci.digest,
                size: built.oci.bytes.len() as u64,
            },
        ];
        let spec = ArtifactSpec {
            artifact_type: media_type::SPDX_JSON,
            title: SBOM_TITLE,
            content: &document,
        };
        let artifacts =
            referrers_store::attach(self.layers.storage().as_ref(), &spec, &subjects).await?;
        tracing::info!(image = %image.name, tag = %image.tag, packages = graph.graph.len(), size = document.len(), artifacts = ?artifacts.iter().map(ToString::to_string).collect::<Vec<_>>(), "sbom stored");
        Ok(())
    }

    /// Pack and upload one layer unless its build record exists. The merge
    /// rating always comes from the current grouping, so layer order is the
    /// same on cold and warm builds.
    async fn store_layer(
        self: Arc<Self>,
        image: &str,
        layer: Layer,
    ) -> Result<LayerEntry, BuildError> {
        let key = layer.key();
        let first_path = layer.contents.first().cloned().unwrap_or_default();
        let paths = layer.contents.iter().map(PathBuf::from).collect();
        let record = self
            .get_or_pack(image, &key, move || archive::pack_store_paths(paths))
            .await?;
        Ok(LayerEntry {
            digest: record.digest,
            size: record.size,
            diff_id: record.diff_id,
            merge_rating: layer.merge_rating,
            first_path,
        })
    }

    /// Gzip and upload the symlink layer tarball, keyed by its tar hash.
    async fn store_symlink_layer(
        self: &Arc<Self>,
        image: &str,
        tar_hash: &str,
        tar: Bytes,
    ) -> Result<LayerRecord, BuildError> {
        self.get_or_pack(image, tar_hash, move || archive::gzip_tar(tar))
            .await
    }

    /// The record of layer `key` from the layer store, packed with `pack`
    /// if it is not recorded yet; counted as a hit or an upload.
    async fn get_or_pack<F>(
        &self,
        image: &str,
        key: &str,
        pack: F,
    ) -> Result<LayerRecord, BuildError>
    where
        F: FnOnce() -> Packing,
    {
        match self.layers.get_or_pack(key, pack).await? {
            Stored::Found(record) => {
                Metrics::inc(&self.metrics.layer_cache_hits);
                Ok(record)
            }
            Stored::Packed(record) => {
                Metrics::inc(&self.metrics.layers_uploaded);
                Metrics::add(&self.metrics.layer_bytes_uploaded, record.size);
                tracing::info!(image, layer = key, digest = %record.digest, size = record.size, "layer uploaded");
                Ok(record)
            }
        }
    }

    /// Log, count and record the failed build of image `name` at `tag`.
    fn report(&self, name: &str, tag: &str, error: &BuildError) {
        Metrics::inc(&self.metrics.build_failures);
        let kind = error.kind();
        let detail = error.detail();
        match error.root() {
            BuildError::PackagesRefused(_) => {
                tracing::warn!(image = name, tag, kind = %kind, error = %detail, "image build failed");
            }
            _ => {
                tracing::error!(image = name, tag, kind = %kind, error = %detail, "image build failed");
            }
        }
        self.settings
            .build_errors
            .record(&format!("{name}:{tag}"), kind, &detail);
    }

    /// Log a package source that could not be resolved for `image`, and
    /// record it unless the tag simply names no ref or channel (a client
    /// error, answered 404).
    fn report_unresolved(&self, image: &str, error: &BuildError) {
        match error {
            BuildError::Source(ResolveError::UnknownRef(_) | ResolveError::UnknownChannel(_)) => {
                tracing::warn!(image, error = %error, "package source not resolved");
            }
            _ => {
                let detail = error.detail();
                tracing::error!(image, error = %detail, "package source not resolved");
                self.settings
                    .build_errors
                    .record(image, error.kind(), &detail);
            }
        }
    }
}
