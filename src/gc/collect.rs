//! One collection: announce, mark, sweep (see [`super`] for the design).

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use futures::{Stream, StreamExt, TryStreamExt, future, stream};

use super::{
    generation::{self, Holder, LeaseError, Phase, Timing},
    mark::{self, Inventory, ManifestNode, Policy, TagEntry, age},
    references,
};
use crate::{
    digest::Digest,
    storage::{
        KeyPrefix, LIST_PAGE_SIZE, ListedObject, Storage, StorageError, StorageKey,
        small_object::read_small,
    },
};

/// Largest manifest, tag entry or build record read while marking.
const MAX_DOCUMENT: usize = 4 * 1024 * 1024;
/// Objects read or deleted at once.
const CONCURRENCY: usize = 16;
/// Longest wait for one page of a listing (the backends' own retries
/// included) before the collection stops.
pub const PAGE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// How one collection runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// What is kept.
    pub policy: Policy,
    /// Only report what would be deleted; take no lock, announce nothing.
    pub dry_run: bool,
    /// How long to wait between announcing the collection and marking, so
    /// that every server has seen it (see [`super::watch::notice_period`]).
    pub notice: Duration,
    /// The local disk tier of manifests on this host, pruned by the same
    /// rule.
    pub local_tier: Option<PathBuf>,
    /// Heartbeat and staleness of the lease ([`Timing::DEFAULT`] outside
    /// tests).
    pub timing: Timing,
    /// Objects per page of a listing ([`LIST_PAGE_SIZE`] outside tests).
    pub page_size: usize,
    /// Longest wait for one page ([`PAGE_TIMEOUT`] outside tests).
    pub page_timeout: Duration,
}

impl Options {
    /// A real collection by `policy`, announced `notice` ahead, with the
    /// production lease timing, page size and page bound, and no local
    /// tier.
    pub fn new(policy: Policy, notice: Duration) -> Options {
        Options {
            policy,
            dry_run: false,
            notice,
            local_tier: None,
            timing: Timing::DEFAULT,
            page_size: LIST_PAGE_SIZE,
            page_timeout: PAGE_TIMEOUT,
        }
    }
}

/// The kinds of objects a collection deletes, in deletion order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A cached tag entry `manifests/<key>` (or `<key>.oci`).
    TagEntry,
    /// A referrers list `referrers/<manifest hex>` of a collected manifest.
    ReferrersList,
    /// A layer build record `builds/<key>`.
    LayerRecord,
    /// A manifest under `layers/`.
    Manifest,
    /// A layer or config under `layers/`.
    Blob,
    /// A use mark `uses/<digest>`.
    UseMark,
    /// A file of the local disk tier.
    LocalEntry,
}

impl Kind {
    /// Plural noun for summaries.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::TagEntry => "tag entries",
            Kind::ReferrersList => "referrers lists",
            Kind::LayerRecord => "layer records",
            Kind::Manifest => "manifests",
            Kind::Blob => "blobs",
            Kind::UseMark => "use marks",
            Kind::LocalEntry => "local tier files",
        }
    }

    const ALL: [Kind; 7] = [
        Kind::TagEntry,
        Kind::ReferrersList,
        Kind::LayerRecord,
        Kind::Manifest,
        Kind::Blob,
        Kind::UseMark,
        Kind::LocalEntry,
    ];
}

/// One deleted (or, in a dry run, deletable) object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deletion {
    /// What it is.
    pub kind: Kind,
    /// Its storage key, or the path of a local tier file.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
}

/// What a collection did: counts, never the objects themselves (each
/// deletion is handed to the caller as it happens), so a collection of
/// any size reports in constant memory.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The generation number of this collection (0 for a dry run).
    pub generation: u64,
    /// Whether nothing was deleted on purpose.
    pub dry_run: bool,
    /// Objects deleted (or deletable, in a dry run) and their bytes, per
    /// kind.
    deleted: HashMap<Kind, (usize, u64)>,
    /// Objects examined and kept.
    pub kept: usize,
    /// How long it took, notice period included.
    pub elapsed: Duration,
}

impl Report {
    /// Objects deleted.
    pub fn objects(&self) -> usize {
        self.deleted.values().map(|(n, _)| n).sum()
    }

    /// Objects of `kind` deleted.
    pub fn count(&self, kind: Kind) -> usize {
        self.deleted.get(&kind).map_or(0, |(n, _)| *n)
    }

    /// Total bytes deleted.
    pub fn bytes(&self) -> u64 {
        self.deleted.values().map(|(_, bytes)| bytes).sum()
    }

    fn add(&mut self, deletion: &Deletion) {
        let (n, bytes) = self.deleted.entry(deletion.kind).or_default();
        *n += 1;
        *bytes += deletion.size;
    }

    /// The last line `nixery gc` prints: counts per kind, objects, bytes.
    pub fn summary(&self) -> String {
        let counts: Vec<String> = Kind::ALL
            .iter()
            .map(|kind| format!("{} {}", self.count(*kind), kind.plural()))
            .collect();
        format!(
            "{}: {} objects, {} bytes ({}); kept {} objects; generation {}; {:.1} s",
            if self.dry_run {
                "would delete"
            } else {
                "deleted"
            },
            self.objects(),
            self.bytes(),
            counts.join(", "),
            self.kept,
            self.generation,
            self.elapsed.as_secs_f64()
        )
    }
}

/// Why a collection did not run or stopped.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// Another collection holds the lease.
    #[error(transparent)]
    Busy(LeaseError),
    /// Another collection took over while this one ran; this one stopped
    /// deleting before it could have.
    #[error(transparent)]
    Lost(LeaseError),
    /// The storage failed; the collection stopped (what it deleted stays
    /// deleted, which is safe: see the deletion order).
    #[error("storage failed during the collection: {0}")]
    Storage(#[from] StorageError),
    /// A page of a listing did not arrive within its bound; the
    /// collection stopped there.
    #[error(
        "listing {prefix}/ stalled: page {page} did not arrive within {}",
        humantime::format_duration(*.waited)
    )]
    ListingStalled {
        /// The prefix being listed.
        prefix: &'static str,
        /// The page waited for (1-based).
        page: usize,
        /// How long it was waited for.
        waited: Duration,
    },
}

impl From<LeaseError> for GcError {
    fn from(error: LeaseError) -> Self {
        match error {
            LeaseError::Storage(error) => GcError::Storage(error),
            busy @ LeaseError::Busy { .. } => GcError::Busy(busy),
            lost @ LeaseError::Lost { .. } => GcError::Lost(lost),
        }
    }
}

/// Now on storage's clock, never later than storage's own: the
/// modification time of this collection's first write of `gc/generation`
/// plus the monotonic time since (taken after the write returned). Ages
/// of objects are reckoned with it, so this host's clock is never
/// compared with storage's.
struct StorageClock {
    written: Option<SystemTime>,
    after: Instant,
}

impl StorageClock {
    async fn read(storage: &dyn Storage) -> Result<Self, StorageError> {
        Ok(Self {
            written: storage.stat(&generation::generation_key()).await?.modified,
            after: Instant::now(),
        })
    }

    fn now(&self) -> SystemTime {
        self.written
            .map_or_else(SystemTime::now, |written| written + self.after.elapsed())
    }
}

/// Run one collection over `storage`, calling `on_delete` for each object
/// as it is deleted (or, in a dry run, found deletable).
pub async fn collect(
    storage: Arc<dyn Storage>,
    options: &Options,
    on_delete: &mut (dyn FnMut(&Deletion) + Send),
) -> Result<Report, GcError> {
    let started = Instant::now();
    if options.dry_run {
        let mut report = run(storage, options, None, on_delete).await?;
        report.elapsed = started.elapsed();
        return Ok(report);
    }
    let holder = Arc::new(Holder::acquire(storage.clone(), options.timing).await?);
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let beats = tokio::spawn({
        let holder = holder.clone();
        async move {
            let mut ticks = tokio::time::interval(holder.timing().heartbeat);
            ticks.tick().await;
            loop {
                // A beat in progress completes, so that none races the
                // final write.
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = &mut stopped => return,
                }
                match holder.beat().await {
                    Ok(()) => {}
                    Err(LeaseError::Lost { .. }) => return,
                    // The lease runs out by itself; deletion stops then.
                    Err(error) => {
                        tracing::warn!(error = %error, "collection heartbeat failed");
                    }
                }
            }
        }
    });
    let outcome = run(storage.clone(), options, Some(&holder), on_delete).await;
    let _ = stop.send(());
    let _ = beats.await;
    let finished = holder.enter(Phase::Finished).await;
    let mut report = outcome?;
    finished?;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Listings as the collector reads them: page by page, each page under
/// [`Options::page_timeout`], one object at a time to the caller, so that
/// no listing is ever held whole.
struct Lister<'a> {
    storage: &'a dyn Storage,
    page_size: usize,
    page_timeout: Duration,
}

impl<'a> Lister<'a> {
    /// Every object under `prefix`, fetched a page at a time.
    fn objects(
        &self,
        prefix: KeyPrefix,
    ) -> impl Stream<Item = Result<ListedObject, GcError>> + Send + 'a {
        let pages = self.storage.list_pages(prefix, self.page_size);
        let waited = self.page_timeout;
        stream::try_unfold((pages, 0usize), move |(mut pages, done)| async move {
            match tokio::time::timeout(waited, pages.next()).await {
                Err(_) => Err(GcError::ListingStalled {
                    prefix: prefix.as_str(),
                    page: done + 1,
                    waited,
                }),
                Ok(None) => Ok(None),
                Ok(Some(page)) => {
                    let objects = stream::iter(page?.into_iter().map(Ok::<_, GcError>));
                    Ok(Some((objects, (pages, done + 1))))
                }
            }
        })
        .try_flatten()
    }
}

/// The collection proper, in two passes over the storage, so that memory
/// holds the manifest graph, the tag entries' digests and the use marks
/// (one entry per image), never a listing of blobs or records:
///
/// 1. **Mark.** Stream `layers/` and read every object that may be a
///    manifest; stream `manifests/` and read the tag entries; stream
///    `uses/`. Compute the live set; switch to `deleting`; rescue.
/// 2. **Sweep**, kind by kind in deletion order, each prefix streamed
///    again: an object not live and older than `grace` goes. An object
///    written since the mark pass began is younger than `now` and so
///    never old enough.
async fn run(
    storage: Arc<dyn Storage>,
    options: &Options,
    holder: Option<&Arc<Holder>>,
    on_delete: &mut (dyn FnMut(&Deletion) + Send),
) -> Result<Report, GcError> {
    let (generation_number, now) = match holder {
        Some(holder) => {
            let clock = StorageClock::read(storage.as_ref()).await?;
            let number = holder.number().await;
            tracing::info!(
                generation = number,
                notice_secs = options.notice.as_secs_f64(),
                "collection announced"
            );
            tokio::time::sleep(options.notice).await;
            (number, clock.now())
        }
        None => (0, SystemTime::now()),
    };
    let lister = Lister {
        storage: storage.as_ref(),
        page_size: options.page_size,
        page_timeout: options.page_timeout,
    };

    // Pass 1: what is in use. Whether an object is a manifest is read
    // from its bytes: listings need not say (S3's never carries a content
    // type).
    let mut inventory = Inventory::default();
    lister
        .objects(KeyPrefix::Layers)
        .try_filter(|object| future::ready(object.size as usize <= MAX_DOCUMENT))
        .map_ok(|object| {
            let storage = storage.clone();
            async move {
                let refs = read_manifest(storage.as_ref(), &object.key).await?;
                Ok::<_, GcError>(refs.and_then(|refs| {
                    Some((
                        named(&object)?,
                        ManifestNode {
                            refs,
                            modified: modified(&object, now),
                        },
                    ))
                }))
            }
        })
        .try_buffer_unordered(CONCURRENCY)
        .try_for_each(|manifest| {
            inventory.manifests.extend(manifest);
            future::ready(Ok(()))
        })
        .await?;
    lister
        .objects(KeyPrefix::Manifests)
        .map_ok(|object| {
            let storage = storage.clone();
            async move {
                let bytes = read_small(storage.as_ref(), &object.key, MAX_DOCUMENT).await?;
                Ok::<_, GcError>(bytes.map(|bytes| TagEntry {
                    name: object.key.name().to_owned(),
                    digest: Digest::of(&bytes),
                    modified: modified(&object, now),
                }))
            }
        })
        .try_buffer_unordered(CONCURRENCY)
        .try_for_each(|tag| {
            inventory.tags.extend(tag);
            future::ready(Ok(()))
        })
        .await?;
    // The marks as first listed, by the digest they are named after
    // (objects under `uses/` named otherwise are left alone).
    let mut marks: HashMap<Digest, ListedObject> = HashMap::new();
    lister
        .objects(KeyPrefix::Uses)
        .try_for_each(|object| {
            if let Some(digest) = named(&object) {
                marks.insert(digest, object);
            }
            future::ready(Ok(()))
        })
        .await?;
    inventory.marks = marks
        .iter()
        .map(|(digest, object)| (*digest, modified(object, now)))
        .collect();

    let mut live = mark::live_set(&inventory, &options.policy, now);
    if let Some(holder) = holder {
        holder.enter(Phase::Deleting).await?;
        rescue(&lister, &mut inventory, &mut live, &marks).await?;
    }

    // Pass 2: the sweep.
    let policy = &options.policy;
    let collectable = |object: &ListedObject| age(now, modified(object, now)) >= policy.grace;
    let dead = |object: &ListedObject| {
        collectable(object) && named(object).is_some_and(|d| !live.contains(&d))
    };
    let is_manifest =
        |object: &ListedObject| named(object).is_some_and(|d| inventory.manifests.contains_key(&d));
    let live_tags: HashSet<&str> = inventory
        .tags
        .iter()
        .filter(|t| live.contains(&t.digest))
        .map(|t| t.name.as_str())
        .collect();
    let mut report = Report {
        generation: generation_number,
        dry_run: options.dry_run,
        ..Report::default()
    };
    let mut examined = marks.len();
    let mut sweep = Sweep {
        storage: storage.as_ref(),
        holder,
        dry_run: options.dry_run,
        report: &mut report,
        on_delete,
    };
    // Kinds one after the other, so that a tag entry never outlives its
    // manifest, a record its blob, and a manifest its layers (also when
    // the collection stops half-way); objects of one kind in parallel.
    let tags = lister
        .objects(KeyPrefix::Manifests)
        .inspect_ok(|_| examined += 1);
    sweep
        .delete(
            Kind::TagEntry,
            tags.try_filter(|o| future::ready(collectable(o) && !live_tags.contains(o.key.name()))),
        )
        .await?;
    // A referrers list lives as long as the manifest it is named after.
    let referrers = lister
        .objects(KeyPrefix::Referrers)
        .inspect_ok(|_| examined += 1);
    sweep
        .delete(
            Kind::ReferrersList,
            referrers.try_filter(|o| future::ready(dead(o))),
        )
        .await?;
    // A record goes with its blob: read only the records old enough.
    let records = lister
        .objects(KeyPrefix::Builds)
        .inspect_ok(|_| examined += 1)
        .try_filter(|o| future::ready(collectable(o)))
        .map_ok(|object| async {
            let bytes = read_small(storage.as_ref(), &object.key, MAX_DOCUMENT).await?;
            let digest = bytes
                .and_then(|bytes| crate::layer_store::record::decode(&bytes).ok())
                .map(|record| record.digest);
            Ok::<_, GcError>(digest.is_none_or(|d| !live.contains(&d)).then_some(object))
        })
        .try_buffer_unordered(CONCURRENCY)
        .try_filter_map(|dead| future::ready(Ok(dead)));
    sweep.delete(Kind::LayerRecord, records).await?;
    // Objects whose name is no digest (put there by hand) are left alone.
    let layers = lister
        .objects(KeyPrefix::Layers)
        .inspect_ok(|_| examined += 1);
    sweep
        .delete(
            Kind::Manifest,
            layers.try_filter(|o| future::ready(dead(o) && is_manifest(o))),
        )
        .await?;
    let layers = lister.objects(KeyPrefix::Layers);
    sweep
        .delete(
            Kind::Blob,
            layers.try_filter(|o| future::ready(dead(o) && !is_manifest(o))),
        )
        .await?;
    let dead_marks: Vec<Result<ListedObject, GcError>> = marks
        .into_values()
        .filter(|object| dead(object))
        .map(Ok)
        .collect();
    sweep
        .delete(Kind::UseMark, stream::iter(dead_marks))
        .await?;
    if let Some(dir) = &options.local_tier {
        for deletion in prune_local_tier(dir, &live, policy.grace, now, options.dry_run).await {
            (sweep.on_delete)(&deletion);
            sweep.report.add(&deletion);
        }
    }
    report.kept = examined.saturating_sub(report.objects() - report.count(Kind::LocalEntry));
    Ok(report)
}

/// Deletion, one kind at a time, each object reported as it goes.
struct Sweep<'a, 'r> {
    storage: &'a dyn Storage,
    holder: Option<&'a Arc<Holder>>,
    dry_run: bool,
    report: &'r mut Report,
    on_delete: &'r mut (dyn FnMut(&Deletion) + Send),
}

impl Sweep<'_, '_> {
    /// Delete every object `doomed` yields as `kind` (in a dry run, only
    /// report it), [`CONCURRENCY`] at a time.
    async fn delete(
        &mut self,
        kind: Kind,
        doomed: impl Stream<Item = Result<ListedObject, GcError>>,
    ) -> Result<(), GcError> {
        let (storage, holder, dry_run) = (self.storage, self.holder, self.dry_run);
        let report = &mut *self.report;
        let on_delete = &mut *self.on_delete;
        doomed
            .map_ok(|object| async move {
                if !dry_run {
                    delete_under_lease(storage, holder, &object.key).await?;
                }
                Ok::<_, GcError>(object)
            })
            .try_buffer_unordered(CONCURRENCY)
            .try_for_each(|object| {
                let deletion = Deletion {
                    kind,
                    name: object.key.to_string(),
                    size: object.size,
                };
                on_delete(&deletion);
                report.add(&deletion);
                future::ready(Ok(()))
            })
            .await
    }
}

/// Delete `key` while the lease lasts: not at all once it has run out,
/// and bounded by what is left of it (see [`generation`]).
async fn delete_under_lease(
    storage: &dyn Storage,
    holder: Option<&Arc<Holder>>,
    key: &StorageKey,
) -> Result<(), GcError> {
    let Some(holder) = holder else {
        return Ok(storage.delete(key).await?);
    };
    let lost = || async {
        GcError::Lost(LeaseError::Lost {
            number: holder.number().await,
        })
    };
    let Some(left) = holder.may_delete() else {
        return Err(lost().await);
    };
    match tokio::time::timeout(left, storage.delete(key)).await {
        Ok(deleted) => Ok(deleted?),
        Err(_) => Err(lost().await),
    }
}

/// When `object` was last written; a backend that does not say makes it
/// `now` (so it is never old enough to collect).
fn modified(object: &ListedObject, now: SystemTime) -> SystemTime {
    object.modified.unwrap_or(now)
}

/// The digest an object under `layers/` or `uses/` is named by.
fn named(object: &ListedObject) -> Option<Digest> {
    Digest::parse_hex(object.key.name()).ok()
}

/// Re-read the use marks after the switch to `deleting`: a server that
/// confirmed an image since the announcement wrote its mark before it saw
/// that switch, so it is found here and its image is kept.
///
/// A mark counts when it is absent from the first listing or its
/// modification time differs from the one listed then (storage's times
/// are compared with storage's times only, never with this host's clock),
/// or when it names a manifest written after `layers/` was listed.
/// Only "not found" (a manifest collected before) is skipped; any other
/// failure stops the collection, since a manifest kept without its layers
/// is worse than no collection.
async fn rescue(
    lister: &Lister<'_>,
    inventory: &mut Inventory,
    live: &mut HashSet<Digest>,
    first_listing: &HashMap<Digest, ListedObject>,
) -> Result<(), GcError> {
    let mut fresh: Vec<Digest> = Vec::new();
    lister
        .objects(KeyPrefix::Uses)
        .try_for_each(|o| {
            if let Some(digest) = named(&o) {
                let changed = o.modified.is_none()
                    || first_listing.get(&digest).map(|first| first.modified) != Some(o.modified);
                // A mark of a manifest written after `layers/` was listed.
                let unknown = !inventory.manifests.contains_key(&digest);
                if (changed || unknown) && !live.contains(&digest) {
                    fresh.push(digest);
                }
            }
            future::ready(Ok(()))
        })
        .await?;
    for digest in &fresh {
        if inventory.manifests.contains_key(digest) {
            continue;
        }
        let key = StorageKey::layer(digest);
        if let Some(refs) = read_manifest(lister.storage, &key).await? {
            inventory.manifests.insert(
                *digest,
                ManifestNode {
                    refs,
                    modified: SystemTime::UNIX_EPOCH,
                },
            );
        }
    }
    if !fresh.is_empty() {
        tracing::info!(
            images = fresh.len(),
            "images used during the collection are kept"
        );
    }
    mark::extend(live, inventory, fresh);
    Ok(())
}

/// The references of the object at `key` when it is a manifest; `None`
/// when it is absent, larger than a document, or no manifest. Objects
/// that cannot start a JSON object are dropped after their first chunk.
async fn read_manifest(
    storage: &dyn Storage,
    key: &StorageKey,
) -> Result<Option<references::References>, StorageError> {
    let mut stream = match storage.fetch(key).await {
        Ok(stream) => stream,
        Err(StorageError::NotFound(_)) => return Ok(None),
        Err(error) => return Err(error),
    };
    let io_error = |source| StorageError::Io {
        key: key.clone(),
        source,
    };
    let mut buffer = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(io_error)?;
        if buffer.len() + chunk.len() > MAX_DOCUMENT {
            return Ok(None);
        }
        buffer.extend_from_slice(&chunk);
        if !references::looks_like_json_object(&buffer) {
            return Ok(None);
        }
    }
    Ok(references::parse_manifest(&buffer))
}

/// Remove the local tier's manifests that are not live (and older than
/// `grace`), the same rule as in storage. Failures are logged: the tier is
/// a cache and drops stale entries on first use anyway.
async fn prune_local_tier(
    dir: &std::path::Path,
    live: &HashSet<Digest>,
    grace: Duration,
    now: SystemTime,
    dry_run: bool,
) -> Vec<Deletion> {
    let mut deleted = Vec::new();
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(entries) => entries,
        Err(error) => {
            tracing::warn!(dir = %dir.display(), error = %error, "cannot list the local manifest tier");
            return deleted;
        }
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name().to_string_lossy().into_owned();
        // Entries are named `<hex identity>` or `<hex identity>.oci`; the
        // rest is not ours.
        let stem = name.strip_suffix(".oci").unwrap_or(&name);
        if stem.is_empty() || !stem.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = entry.metadata().await else {
            continue;
        };
        if !meta.is_file() || meta.modified().is_ok_and(|m| age(now, m) < grace) {
            continue;
        }
        let Ok(bytes) = tokio::fs::read(&path).await else {
            continue;
        };
        if live.contains(&Digest::of(&bytes)) {
            continue;
        }
        if !dry_run && let Err(error) = tokio::fs::remove_file(&path).await {
            tracing::warn!(path = %path.display(), error = %error, "cannot prune the local manifest tier");
            continue;
        }
        deleted.push(Deletion {
            kind: Kind::LocalEntry,
            name: path.display().to_string(),
            size: meta.len(),
        });
    }
    deleted
}
