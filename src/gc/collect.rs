//! One collection: announce, mark, sweep (see [`super`] for the design).

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use futures::{StreamExt, TryStreamExt, stream};

use super::{
    generation::{self, Holder, LeaseError, Phase, Timing},
    mark::{self, Inventory, ManifestNode, Policy, TagEntry, age},
    references,
};
use crate::{
    digest::Digest,
    storage::{
        KeyPrefix, ListedObject, Storage, StorageError, StorageKey, small_object::read_small,
    },
};

/// Largest manifest, tag entry or build record read while marking.
const MAX_DOCUMENT: usize = 4 * 1024 * 1024;
/// Objects read or deleted at once.
const CONCURRENCY: usize = 16;

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

/// What a collection did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The generation number of this collection (0 for a dry run).
    pub generation: u64,
    /// Whether nothing was deleted on purpose.
    pub dry_run: bool,
    /// Every deletion, in order.
    pub deleted: Vec<Deletion>,
    /// Objects examined and kept.
    pub kept: usize,
    /// How long it took, notice period included.
    pub elapsed: Duration,
}

impl Report {
    /// Total bytes deleted.
    pub fn bytes(&self) -> u64 {
        self.deleted.iter().map(|d| d.size).sum()
    }

    /// The last line `nixery gc` prints: counts per kind, objects, bytes.
    pub fn summary(&self) -> String {
        let counts: Vec<String> = Kind::ALL
            .iter()
            .map(|kind| {
                let n = self.deleted.iter().filter(|d| d.kind == *kind).count();
                format!("{n} {}", kind.plural())
            })
            .collect();
        format!(
            "{}: {} objects, {} bytes ({}); kept {} objects; generation {}; {:.1} s",
            if self.dry_run {
                "would delete"
            } else {
                "deleted"
            },
            self.deleted.len(),
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

/// A build record and the blob it names.
struct RecordInfo {
    object: ListedObject,
    digest: Option<Digest>,
}

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
    let layers = storage.list(KeyPrefix::Layers).await?;
    let tags = storage.list(KeyPrefix::Manifests).await?;
    let builds = storage.list(KeyPrefix::Builds).await?;
    let uses = storage.list(KeyPrefix::Uses).await?;
    let referrers = storage.list(KeyPrefix::Referrers).await?;

    let mut inventory = Inventory::default();
    // Whether an object is a manifest is read from its bytes: listings
    // need not say (S3's never carries a content type).
    let candidates: Vec<ListedObject> = layers
        .iter()
        .filter(|o| o.size as usize <= MAX_DOCUMENT)
        .cloned()
        .collect();
    let parsed: Vec<Option<(Digest, ManifestNode)>> = stream::iter(candidates)
        .map(|object: ListedObject| {
            let storage = storage.clone();
            async move {
                let refs = read_manifest(storage.as_ref(), &object.key).await?;
                Ok::<_, StorageError>(refs.and_then(|refs| {
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
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    inventory.manifests.extend(parsed.into_iter().flatten());
    let tag_entries: Vec<Option<TagEntry>> = stream::iter(tags.clone())
        .map(|object: ListedObject| {
            let storage = storage.clone();
            async move {
                let bytes = read_small(storage.as_ref(), &object.key, MAX_DOCUMENT).await?;
                Ok::<_, StorageError>(bytes.map(|bytes| TagEntry {
                    name: object.key.name().to_owned(),
                    digest: Digest::of(&bytes),
                    modified: modified(&object, now),
                }))
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    inventory.tags = tag_entries.into_iter().flatten().collect();
    inventory.marks = uses
        .iter()
        .filter_map(|o| Some((named(o)?, modified(o, now))))
        .collect();
    let records: Vec<RecordInfo> = stream::iter(builds.clone())
        .map(|object: ListedObject| {
            let storage = storage.clone();
            async move {
                let bytes = read_small(storage.as_ref(), &object.key, MAX_DOCUMENT).await?;
                let digest = bytes
                    .and_then(|bytes| crate::layer_store::record::decode(&bytes).ok())
                    .map(|record| record.digest);
                Ok::<_, StorageError>(RecordInfo { object, digest })
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;

    let mut live = mark::live_set(&inventory, &options.policy, now);
    if let Some(holder) = holder {
        holder.enter(Phase::Deleting).await?;
        rescue(storage.as_ref(), &mut inventory, &mut live, &uses).await?;
    }

    let policy = &options.policy;
    let collectable = |object: &ListedObject| age(now, modified(object, now)) >= policy.grace;
    let live_tags: HashSet<&str> = inventory
        .tags
        .iter()
        .filter(|t| live.contains(&t.digest))
        .map(|t| t.name.as_str())
        .collect();
    let mut plan: Vec<(Kind, &ListedObject)> = Vec::new();
    plan.extend(
        tags.iter()
            .filter(|o| collectable(o) && !live_tags.contains(o.key.name()))
            .map(|o| (Kind::TagEntry, o)),
    );
    plan.extend(
        records
            .iter()
            .filter(|r| {
                collectable(&r.object) && r.digest.as_ref().is_none_or(|d| !live.contains(d))
            })
            .map(|r| (Kind::LayerRecord, &r.object)),
    );
    // Objects whose name is no digest (put there by hand) are left alone.
    let dead = |o: &&ListedObject| collectable(o) && named(o).is_some_and(|d| !live.contains(&d));
    let is_manifest =
        |o: &&ListedObject| named(o).is_some_and(|d| inventory.manifests.contains_key(&d));
    plan.extend(
        layers
            .iter()
            .filter(dead)
            .filter(is_manifest)
            .map(|o| (Kind::Manifest, o)),
    );
    plan.extend(
        layers
            .iter()
            .filter(dead)
            .filter(|o| !is_manifest(o))
            .map(|o| (Kind::Blob, o)),
    );
    plan.extend(uses.iter().filter(dead).map(|o| (Kind::UseMark, o)));
    // A referrers list lives as long as the manifest it is named after.
    plan.extend(
        referrers
            .iter()
            .filter(dead)
            .map(|o| (Kind::ReferrersList, o)),
    );
    let examined = layers.len() + tags.len() + builds.len() + uses.len() + referrers.len();
    let mut report = Report {
        generation: generation_number,
        dry_run: options.dry_run,
        kept: examined - plan.len(),
        ..Report::default()
    };
    // Kinds one after the other, so that a tag entry never outlives its
    // manifest, a record its blob, and a manifest its layers (also when
    // the collection stops half-way); objects of one kind in parallel.
    for kind in Kind::ALL {
        let batch: Vec<&ListedObject> = plan
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, o)| *o)
            .collect();
        if !options.dry_run {
            let keys: Vec<StorageKey> = batch.iter().map(|o| o.key.clone()).collect();
            stream::iter(keys)
                .map(|key: StorageKey| {
                    let storage = storage.clone();
                    async move { delete_under_lease(storage.as_ref(), holder, &key).await }
                })
                .buffer_unordered(CONCURRENCY)
                .try_collect::<Vec<()>>()
                .await?;
        }
        for object in batch {
            let deletion = Deletion {
                kind,
                name: object.key.to_string(),
                size: object.size,
            };
            on_delete(&deletion);
            report.deleted.push(deletion);
        }
    }
    if let Some(dir) = &options.local_tier {
        for deletion in prune_local_tier(dir, &live, policy.grace, now, options.dry_run).await {
            on_delete(&deletion);
            report.deleted.push(deletion);
        }
    }
    Ok(report)
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
    storage: &dyn Storage,
    inventory: &mut Inventory,
    live: &mut HashSet<Digest>,
    first_listing: &[ListedObject],
) -> Result<(), StorageError> {
    let seen: HashMap<&StorageKey, Option<SystemTime>> =
        first_listing.iter().map(|o| (&o.key, o.modified)).collect();
    let fresh: Vec<Digest> = storage
        .list(KeyPrefix::Uses)
        .await?
        .iter()
        .filter_map(|o| {
            let digest = named(o)?;
            let changed = o.modified.is_none() || seen.get(&o.key) != Some(&o.modified);
            // A mark of a manifest written after `layers/` was listed.
            let unknown = !inventory.manifests.contains_key(&digest);
            ((changed || unknown) && !live.contains(&digest)).then_some(digest)
        })
        .collect();
    for digest in &fresh {
        if inventory.manifests.contains_key(digest) {
            continue;
        }
        let key = StorageKey::layer(digest);
        if let Some(refs) = read_manifest(storage, &key).await? {
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
