//! What a collection keeps and deletes, on the filesystem backend, the GCS
//! emulator and an S3 server (each property is one function run on all
//! three).
//!
//! Properties defended: the storage primitives the collector relies on
//! (list, stat, idempotent delete, create-only-once); an image used within
//! `keep` keeps its blobs, also those it shares, and an unused one loses
//! its tag entry, manifest, unshared layers, layer records and use mark;
//! objects younger than `grace` stay whatever `keep` says; an index keeps
//! its child manifests and an SBOM lives as long as its subject; objects
//! written in upstream Nixery's shape follow the same rules; a second
//! collection refuses to run beside the first; a dry run deletes nothing;
//! listings are read page by page (pages of three here) and a page that
//! never arrives stops the collection before it deletes anything;
//! a server confirming an image during a collection keeps it; and a build
//! that reused a blob collected meanwhile is told to build again.
//!
//! The collector is called as a library here, with durations of a few
//! seconds; `tests/gc_serving.rs` drives `nixery gc` and the server.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use nixery::{
    cache::bytes_stream,
    digest::Digest,
    gc::{self, GcError, GcWatch, Kind, Options, Policy, Report},
    storage::{KeyPrefix, Storage, StorageError, StorageKey, filesystem::FilesystemStorage},
};
use sha2::{Digest as _, Sha256};
use support::gcs::FakeGcs;
use support::media::{
    DOCKER_CONFIG as CONFIG, DOCKER_LAYER as LAYER, DOCKER_MANIFEST as MANIFEST, OCI_INDEX,
    OCI_MANIFEST,
};
use support::s3::MotoS3;

/// Objects written before this pause are "old" for the policies below.
/// The margins (old objects are 1.5 s past `keep`, a use is up to 4 s
/// recent) leave room for a loaded machine.
const AGE: Duration = Duration::from_millis(5500);

/// Keep images used within 4 s, never delete objects younger than 1 s.
fn policy() -> Policy {
    Policy {
        keep: Duration::from_secs(4),
        grace: Duration::from_secs(1),
        touch_interval: Duration::ZERO,
    }
}

/// Pages of three objects: every listing here spans many pages.
const PAGE: usize = 3;

fn options(policy: Policy) -> Options {
    Options {
        timing: timing(),
        page_size: PAGE,
        ..Options::new(policy, Duration::ZERO)
    }
}

/// A beat every 200 ms, dead after 4 s unchanged (so a collector deletes
/// for at most 2 s after its last successful beat: room for a loaded
/// machine and a slow S3 server).
fn timing() -> gc::generation::Timing {
    gc::generation::Timing {
        heartbeat: Duration::from_millis(200),
        stale_after: Duration::from_secs(4),
    }
}

fn hex_of(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Store `bytes` under `layers/<sha256>` with `content_type`.
async fn blob(storage: &dyn Storage, bytes: &[u8], content_type: &str) -> String {
    let hex = hex_of(bytes);
    let key = layer(&hex);
    storage
        .persist(
            &key,
            content_type,
            bytes_stream(Bytes::copy_from_slice(bytes)),
        )
        .await
        .unwrap();
    hex
}

/// A Docker manifest naming `layers` and a config of its own; returns the
/// manifest's hex digest and the config's.
async fn image(storage: &dyn Storage, label: &str, layers: &[&str]) -> (String, String) {
    let config = blob(storage, format!("{{\"c\":\"{label}\"}}").as_bytes(), CONFIG).await;
    let descriptor = |media_type: &str, hex: &str| serde_json::json!({ "mediaType": media_type, "digest": format!("sha256:{hex}"), "size": 1 });
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": descriptor(CONFIG, &config),
        "layers": layers.iter().map(|l| descriptor(LAYER, l)).collect::<Vec<_>>(),
    });
    (
        blob(storage, manifest.to_string().as_bytes(), MANIFEST).await,
        config,
    )
}

/// The tag entry `manifests/<name>` holding the manifest `digest`.
async fn tag(storage: &dyn Storage, name: &str, digest: &str) {
    let bytes = read(storage, &layer(digest)).await.expect("manifest blob");
    storage
        .persist(
            &StorageKey::manifest(name).unwrap(),
            MANIFEST,
            bytes_stream(Bytes::from(bytes)),
        )
        .await
        .unwrap();
}

/// A layer record `builds/<name>` in upstream's format naming `digest`.
async fn record(storage: &dyn Storage, name: &str, digest: &str) {
    let json = format!(
        "{{\"mediaType\":\"{LAYER}\",\"size\":1,\"digest\":\"sha256:{digest}\",\"TarHash\":\"sha256:{}\"}}",
        "0".repeat(64)
    );
    storage
        .persist(
            &StorageKey::build(name).unwrap(),
            "application/json",
            bytes_stream(Bytes::from(json)),
        )
        .await
        .unwrap();
}

/// A use mark for `digest`, written now.
async fn mark(storage: &dyn Storage, digest: &str) {
    storage
        .persist(
            &StorageKey::use_mark(&dg(digest)),
            "text/plain",
            bytes_stream(Bytes::from_static(b"1\n")),
        )
        .await
        .unwrap();
}

async fn read(storage: &dyn Storage, key: &StorageKey) -> Option<Vec<u8>> {
    match storage.fetch(key).await {
        Ok(stream) => Some(support::gcs::collect(stream).await.unwrap()),
        Err(StorageError::NotFound(_)) => None,
        Err(error) => panic!("reading {key}: {error}"),
    }
}

async fn exists(storage: &dyn Storage, key: &StorageKey) -> bool {
    match storage.stat(key).await {
        Ok(_) => true,
        Err(StorageError::NotFound(_)) => false,
        Err(error) => panic!("stat {key}: {error}"),
    }
}

fn dg(hex: &str) -> Digest {
    Digest::parse_hex(hex).unwrap()
}

fn layer(hex: &str) -> StorageKey {
    StorageKey::layer(&dg(hex))
}

/// A collection's report and every deletion it announced, in order.
struct Collected {
    report: Report,
    deleted: Vec<gc::Deletion>,
}

impl std::ops::Deref for Collected {
    type Target = Report;
    fn deref(&self) -> &Report {
        &self.report
    }
}

async fn collect(storage: &Arc<dyn Storage>, options: &Options) -> Collected {
    let mut deleted = Vec::new();
    let report = gc::collect(storage.clone(), options, &mut |d| deleted.push(d.clone()))
        .await
        .expect("collection");
    assert_eq!(report.objects(), deleted.len(), "the report's count");
    Collected { report, deleted }
}

fn deleted(report: &Collected, kind: Kind) -> Vec<String> {
    let mut names: Vec<String> = report
        .deleted
        .iter()
        .filter(|d| d.kind == kind)
        .map(|d| d.name.clone())
        .collect();
    names.sort();
    names
}

/// Runs `$check` on a fresh filesystem storage, a fresh GCS emulator and a
/// fresh S3 server (moto, whose listings carry no content type).
macro_rules! on_every_backend {
    ($($name:ident => $check:ident;)*) => {
        mod filesystem {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let storage: Arc<dyn Storage> =
                        Arc::new(FilesystemStorage::new(dir.path()).unwrap());
                    $check(storage).await;
                }
            )*
        }
        mod gcs {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let emulator = FakeGcs::start().await;
                    let storage: Arc<dyn Storage> = Arc::new(emulator.storage().await);
                    $check(storage).await;
                }
            )*
        }
        mod s3 {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let server = MotoS3::start().await;
                    let storage: Arc<dyn Storage> = Arc::new(server.storage().await);
                    $check(storage).await;
                }
            )*
        }
    };
}

/// Runs `$check` on s3s-fs too, an S3 server that verifies every
/// signature and enforces `If-Match` / `If-None-Match` on `PutObject`
/// (it ignores `If-Match` on `GetObject`, which the collector only uses to
/// pair bytes with their ETag; a mismatch there makes the next conditional
/// write fail, never succeed).
macro_rules! on_signature_checking_s3 {
    ($($name:ident => $check:ident;)*) => {
        mod s3_signed {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let server = support::s3::S3sFs::start().await;
                    let storage: Arc<dyn Storage> = Arc::new(server.storage().await);
                    $check(storage).await;
                }
            )*
        }
    };
}

on_signature_checking_s3! {
    storage_lists_stats_deletes_idempotently_and_creates_only_once => primitives;
    an_unused_image_goes_and_a_used_one_keeps_its_shared_blobs => retention;
    a_lease_taken_over_while_its_holder_is_alive_never_lets_both_delete => takeover_of_a_live_holder;
    a_listing_of_many_pages_is_collected_page_by_page => many_pages;
}

on_every_backend! {
    storage_lists_stats_deletes_idempotently_and_creates_only_once => primitives;
    an_unused_image_goes_and_a_used_one_keeps_its_shared_blobs => retention;
    objects_younger_than_the_grace_period_stay => grace;
    an_index_keeps_its_children_and_an_sbom_lives_as_long_as_its_subject => indexes_and_subjects;
    objects_in_upstream_nixery_shape_follow_the_same_rules => upstream_objects;
    a_second_collection_does_not_run_beside_the_first => one_at_a_time;
    a_dry_run_deletes_nothing => dry_run;
    an_image_confirmed_during_a_collection_is_kept => confirmed_during_collection;
    a_build_that_reused_a_collected_blob_builds_again => build_overlapping_collection;
    a_use_recorded_between_the_listing_and_deleting_is_rescued => use_between_listing_and_deleting;
    a_storage_error_during_rescue_aborts_the_collection => error_during_rescue;
    a_lease_taken_over_while_its_holder_is_alive_never_lets_both_delete => takeover_of_a_live_holder;
    a_listing_of_many_pages_is_collected_page_by_page => many_pages;
    a_page_that_never_arrives_stops_the_collection_before_it_deletes => hanging_page;
}

async fn primitives(storage: Arc<dyn Storage>) {
    let hex = blob(storage.as_ref(), b"some layer", LAYER).await;
    let key = layer(&hex);
    let info = storage.stat(&key).await.unwrap();
    assert_eq!(info.size, 10);
    assert_eq!(info.content_type.as_deref(), Some(LAYER));
    let age = SystemTime::now()
        .duration_since(info.modified.expect("a modification time"))
        .unwrap_or_default();
    assert!(age < Duration::from_secs(60), "modified {age:?} ago");
    let listed = storage.list(KeyPrefix::Layers).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].key, key);
    assert_eq!(listed[0].size, 10);
    // A listing need not carry the content type (S3's never does); where
    // it does, it is the stored one.
    if let Some(listed_type) = &listed[0].content_type {
        assert_eq!(listed_type, LAYER);
    }
    assert!(storage.list(KeyPrefix::Uses).await.unwrap().is_empty());

    storage.delete(&key).await.unwrap();
    storage.delete(&key).await.unwrap();
    assert!(matches!(
        storage.stat(&key).await,
        Err(StorageError::NotFound(_))
    ));
    assert!(storage.list(KeyPrefix::Layers).await.unwrap().is_empty());

    let lock = StorageKey::gc("probe").unwrap();
    assert!(
        storage
            .create_new(&lock, "application/json", Bytes::from_static(b"first"))
            .await
            .unwrap()
    );
    assert!(
        !storage
            .create_new(&lock, "application/json", Bytes::from_static(b"second"))
            .await
            .unwrap()
    );
    assert_eq!(read(storage.as_ref(), &lock).await.unwrap(), b"first");

    // Conditional writes: create only if absent, replace only the version
    // read, and a stale version never wins.
    let cas = StorageKey::gc("cas-probe").unwrap();
    let json = "application/json";
    let v1 = storage
        .write_if(&cas, json, Bytes::from_static(b"one"), None)
        .await
        .unwrap()
        .expect("created");
    assert_eq!(
        storage
            .write_if(&cas, json, Bytes::from_static(b"two"), None)
            .await
            .unwrap(),
        None,
        "created over an existing object"
    );
    let (bytes, read_version) = storage.read_versioned(&cas, 1024).await.unwrap().unwrap();
    assert_eq!((&bytes[..], &read_version), (&b"one"[..], &v1));
    let v2 = storage
        .write_if(&cas, json, Bytes::from_static(b"three"), Some(&v1))
        .await
        .unwrap()
        .expect("replaced at its version");
    assert_ne!(v1, v2);
    assert_eq!(
        storage
            .write_if(&cas, json, Bytes::from_static(b"four"), Some(&v1))
            .await
            .unwrap(),
        None,
        "a stale version replaced the object"
    );
    let (bytes, read_version) = storage.read_versioned(&cas, 1024).await.unwrap().unwrap();
    assert_eq!((&bytes[..], &read_version), (&b"three"[..], &v2));
    let absent = StorageKey::gc("absent").unwrap();
    assert!(
        storage
            .read_versioned(&absent, 1024)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        storage
            .write_if(&absent, json, Bytes::from_static(b"x"), Some(&v2))
            .await
            .unwrap(),
        None,
        "replaced an absent object"
    );
}

async fn retention(storage: Arc<dyn Storage>) {
    let s = storage.as_ref();
    let shared = blob(s, b"glibc layer", LAYER).await;
    let only_used = blob(s, b"hello layer", LAYER).await;
    let only_unused = blob(s, b"htop layer", LAYER).await;
    let (used, used_config) = image(s, "used", &[&shared, &only_used]).await;
    let (unused, unused_config) = image(s, "unused", &[&shared, &only_unused]).await;
    tag(s, "aaaa", &used).await;
    tag(s, "bbbb", &unused).await;
    for (name, digest) in [("k1", &shared), ("k2", &only_used), ("k3", &only_unused)] {
        record(s, name, digest).await;
    }
    mark(s, &unused).await;
    tokio::time::sleep(AGE).await;
    // Only `used` is pulled within the window.
    mark(s, &used).await;

    let report = collect(&storage, &options(policy())).await;

    assert_eq!(deleted(&report, Kind::TagEntry), ["manifests/bbbb"]);
    assert_eq!(
        deleted(&report, Kind::Manifest),
        [format!("layers/{unused}")]
    );
    let mut blobs = vec![
        format!("layers/{only_unused}"),
        format!("layers/{unused_config}"),
    ];
    blobs.sort();
    assert_eq!(deleted(&report, Kind::Blob), blobs);
    assert_eq!(deleted(&report, Kind::LayerRecord), ["builds/k3"]);
    assert_eq!(deleted(&report, Kind::UseMark), [format!("uses/{unused}")]);
    for kept in [&used, &used_config, &shared, &only_used] {
        assert!(exists(s, &layer(kept)).await, "{kept} was deleted");
    }
    for kept in ["k1", "k2"] {
        assert!(exists(s, &StorageKey::build(kept).unwrap()).await);
    }
    assert!(exists(s, &StorageKey::manifest("aaaa").unwrap()).await);
    assert!(report.bytes() > 0);
    assert!(report.generation >= 1);
    assert!(
        report.summary().starts_with("deleted: 6 objects"),
        "{}",
        report.summary()
    );

    // Again: nothing left to delete, and deleting what is gone succeeds.
    let again = collect(&storage, &options(policy())).await;
    assert!(again.deleted.is_empty(), "{:?}", again.deleted);
    assert_eq!(again.generation, report.generation + 1);
    storage.delete(&layer(&unused)).await.unwrap();
}

async fn grace(storage: Arc<dyn Storage>) {
    let s = storage.as_ref();
    let old_layer = blob(s, b"old layer", LAYER).await;
    let (old, _) = image(s, "old", &[&old_layer]).await;
    tokio::time::sleep(AGE).await;
    // A build in progress: a fresh layer and a fresh manifest, no mark.
    let fresh_layer = blob(s, b"fresh layer", LAYER).await;
    let (fresh, _) = image(s, "fresh", &[&fresh_layer]).await;
    let strict = Policy {
        keep: Duration::ZERO,
        grace: Duration::from_secs(60),
        ..policy()
    };
    let report = collect(&storage, &options(strict)).await;
    assert!(report.deleted.is_empty(), "{:?}", report.deleted);
    // Old objects are past a grace of 4 s, fresh ones 4 s within it.
    let report = collect(
        &storage,
        &options(Policy {
            keep: Duration::ZERO,
            grace: Duration::from_secs(4),
            ..policy()
        }),
    )
    .await;
    assert_eq!(deleted(&report, Kind::Manifest), [format!("layers/{old}")]);
    for kept in [&fresh, &fresh_layer] {
        assert!(exists(s, &layer(kept)).await);
    }
    assert!(!exists(s, &layer(&old_layer)).await);
}

async fn indexes_and_subjects(storage: Arc<dyn Storage>) {
    let s = storage.as_ref();
    let amd = blob(s, b"amd64 layer", LAYER).await;
    let arm = blob(s, b"arm64 layer", LAYER).await;
    let (child_amd, _) = image(s, "amd64", &[&amd]).await;
    let (child_arm, _) = image(s, "arm64", &[&arm]).await;
    let index = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_INDEX}\",\"manifests\":[{{\"mediaType\":\"{MANIFEST}\",\"digest\":\"sha256:{child_amd}\",\"size\":1}},{{\"mediaType\":\"{MANIFEST}\",\"digest\":\"sha256:{child_arm}\",\"size\":1}}]}}"
    );
    let index = blob(s, index.as_bytes(), OCI_INDEX).await;
    let sbom_of = |subject: &str, body: &str| {
        format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"artifactType\":\"application/spdx+json\",\"config\":{{\"mediaType\":\"application/vnd.oci.empty.v1+json\",\"digest\":\"sha256:{}\",\"size\":2}},\"layers\":[{{\"mediaType\":\"application/spdx+json\",\"digest\":\"sha256:{body}\",\"size\":1}}],\"subject\":{{\"mediaType\":\"{MANIFEST}\",\"digest\":\"sha256:{subject}\",\"size\":1}}}}",
            hex_of(b"{}")
        )
    };
    blob(s, b"{}", "application/vnd.oci.empty.v1+json").await;
    let sbom_body = blob(s, b"spdx of amd64", "application/spdx+json").await;
    let sbom = blob(s, sbom_of(&child_amd, &sbom_body).as_bytes(), OCI_MANIFEST).await;
    // An image nobody uses, with its own SBOM.
    let gone_layer = blob(s, b"gone layer", LAYER).await;
    let (gone, _) = image(s, "gone", &[&gone_layer]).await;
    let gone_body = blob(s, b"spdx of gone", "application/spdx+json").await;
    let gone_sbom = blob(s, sbom_of(&gone, &gone_body).as_bytes(), OCI_MANIFEST).await;
    tokio::time::sleep(AGE).await;
    mark(s, &index).await;

    let report = collect(&storage, &options(policy())).await;

    for kept in [
        &index, &child_amd, &child_arm, &amd, &arm, &sbom, &sbom_body,
    ] {
        assert!(exists(s, &layer(kept)).await, "{kept} was deleted");
    }
    let mut manifests = vec![format!("layers/{gone}"), format!("layers/{gone_sbom}")];
    manifests.sort();
    assert_eq!(deleted(&report, Kind::Manifest), manifests);
    for gone in [&gone_layer, &gone_body] {
        assert!(!exists(s, &layer(gone)).await, "{gone} kept");
    }
}

async fn upstream_objects(storage: Arc<dyn Storage>) {
    let s = storage.as_ref();
    // Upstream keys its tag entries by a SHA-1 and never writes use marks.
    let built_long_ago = blob(s, b"upstream layer", LAYER).await;
    let (old_image, _) = image(s, "upstream old", &[&built_long_ago]).await;
    tag(s, &"1".repeat(40), &old_image).await;
    record(s, &"2".repeat(40), &built_long_ago).await;
    let rebuilt_layer = blob(s, b"upstream rebuilt layer", LAYER).await;
    let (rebuilt, _) = image(s, "upstream rebuilt", &[&rebuilt_layer]).await;
    tokio::time::sleep(AGE).await;
    // Upstream writes its tag entry again when it builds the image again:
    // that write is a use.
    tag(s, &"3".repeat(40), &rebuilt).await;

    let report = collect(&storage, &options(policy())).await;

    assert_eq!(
        deleted(&report, Kind::TagEntry),
        [format!("manifests/{}", "1".repeat(40))]
    );
    assert_eq!(
        deleted(&report, Kind::LayerRecord),
        [format!("builds/{}", "2".repeat(40))]
    );
    assert!(!exists(s, &layer(&built_long_ago)).await);
    assert!(exists(s, &layer(&rebuilt_layer)).await);
    assert!(exists(s, &StorageKey::manifest(&"3".repeat(40)).unwrap()).await);
}

async fn one_at_a_time(storage: Arc<dyn Storage>) {
    let slow = Options {
        notice: Duration::from_secs(3),
        ..options(policy())
    };
    let first = tokio::spawn({
        let storage = storage.clone();
        async move { gc::collect(storage, &slow, &mut |_| {}).await }
    });
    // Wait until the first one holds the lock.
    while !storage
        .list(KeyPrefix::Gc)
        .await
        .unwrap()
        .iter()
        .any(|o| o.key.name() == "generation")
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = gc::collect(storage.clone(), &options(policy()), &mut |_| {}).await;
    assert!(matches!(second, Err(GcError::Busy(_))), "{second:?}");
    let first = first.await.unwrap().expect("first collection");
    // The lock is free again.
    let third = collect(&storage, &options(policy())).await;
    assert_eq!(third.generation, first.generation + 1);
}

async fn dry_run(storage: Arc<dyn Storage>) {
    let s = storage.as_ref();
    let only = blob(s, b"unused layer", LAYER).await;
    let (unused, _) = image(s, "unused", &[&only]).await;
    tag(s, "cccc", &unused).await;
    tokio::time::sleep(AGE).await;
    let mut printed = Vec::new();
    let report = gc::collect(
        storage.clone(),
        &Options {
            dry_run: true,
            ..options(policy())
        },
        &mut |d| printed.push(d.name.clone()),
    )
    .await
    .unwrap();
    assert_eq!(report.objects(), 4, "{}", report.summary());
    assert_eq!(printed.len(), 4);
    assert!(report.summary().starts_with("would delete: 4 objects"));
    for key in [
        layer(&only),
        layer(&unused),
        StorageKey::manifest("cccc").unwrap(),
    ] {
        assert!(exists(s, &key).await, "{key} deleted by a dry run");
    }
    assert!(
        storage.list(KeyPrefix::Gc).await.unwrap().is_empty(),
        "a dry run announced itself"
    );
}

async fn confirmed_during_collection(storage: Arc<dyn Storage>) {
    let s = storage.as_ref();
    let only = blob(s, b"pulled layer", LAYER).await;
    let (pulled, _) = image(s, "pulled", &[&only]).await;
    let (unused, _) = image(s, "unused", &[]).await;
    tokio::time::sleep(AGE).await;
    let watch = GcWatch::start(storage.clone(), Duration::from_secs(1));
    let running = tokio::spawn({
        let storage = storage.clone();
        let options = Options {
            notice: Duration::from_secs(2),
            ..options(policy())
        };
        async move { collect(&storage, &options).await }
    });
    // Wait until the collection has announced itself (it then gives the
    // servers `notice` before it deletes); a fixed sleep was too short on
    // a loaded machine.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        watch.refresh().await.unwrap();
        if watch.snapshot().running {
            break;
        }
        assert!(!running.is_finished(), "the collection ended unseen");
        assert!(
            std::time::Instant::now() < deadline,
            "the collection never announced itself"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A server serves `pulled` from a tier stamped before this collection.
    assert!(!watch.trusts(Some(0)));
    assert!(watch.confirm(&dg(&pulled)).await.unwrap().is_some());
    let report = running.await.unwrap();
    assert!(
        exists(s, &layer(&only)).await,
        "a confirmed image lost a layer"
    );
    assert_eq!(
        deleted(&report, Kind::Manifest),
        [format!("layers/{unused}")]
    );
    // A tier entry of the collected image is confirmed as gone.
    assert_eq!(watch.confirm(&dg(&unused)).await.unwrap(), None);
}

async fn build_overlapping_collection(storage: Arc<dyn Storage>) {
    let s = storage.as_ref();
    let reused = blob(s, b"layer nobody references", LAYER).await;
    tokio::time::sleep(AGE).await;
    let watch = GcWatch::start(storage.clone(), Duration::from_secs(1));
    watch.refresh().await.unwrap();
    // A build starts, finds the layer recorded, and meanwhile a collection
    // deletes it (no manifest references it yet).
    let started = watch.snapshot();
    let report = collect(&storage, &options(policy())).await;
    assert_eq!(deleted(&report, Kind::Blob), [format!("layers/{reused}")]);
    let (built, config) = image(s, "built", &[&reused]).await;
    let settled = watch
        .settle(started, &dg(&built), &[dg(&reused), dg(&config)])
        .await
        .unwrap();
    assert_eq!(
        settled,
        Err(vec![dg(&reused)]),
        "a manifest naming a collected blob was accepted"
    );
    // Once the layer is uploaded again, the build is accepted.
    blob(s, b"layer nobody references", LAYER).await;
    let again = watch.snapshot();
    assert!(
        watch
            .settle(again, &dg(&built), &[dg(&reused), dg(&config)])
            .await
            .unwrap()
            .is_ok()
    );
}

/// A collection over `storage` interposed so that, while it marks, a
/// server confirms an old image nobody used right after the collector's
/// first listing of the use marks (the latest moment before the switch to
/// deleting), and a build writes and confirms a new manifest naming an
/// old layer right after the listing of `layers/` (so the collector does
/// not know that manifest until it rescues it). Returns the interposed
/// storage, every blob that must survive, and a slot that receives the
/// built manifest's digest.
async fn used_while_marking(
    storage: Arc<dyn Storage>,
) -> (
    Arc<support::interposed::Interposed>,
    Vec<String>,
    Arc<std::sync::Mutex<Option<String>>>,
) {
    let s = storage.as_ref();
    let pulled_layer = blob(s, b"layer pulled while marking", LAYER).await;
    let (pulled, _) = image(s, "pulled while marking", &[&pulled_layer]).await;
    let reused_layer = blob(s, b"old layer a build reuses", LAYER).await;
    tokio::time::sleep(AGE).await;
    let interposed = support::interposed::Interposed::new(storage.clone());
    let watch = GcWatch::start(storage.clone(), Duration::from_secs(1));
    let built = Arc::new(std::sync::Mutex::new(None));
    interposed.after_listing(KeyPrefix::Layers, 1, {
        let (storage, watch, built, reused) = (
            storage.clone(),
            watch.clone(),
            built.clone(),
            reused_layer.clone(),
        );
        move || {
            Box::pin(async move {
                let (manifest, _) =
                    image(storage.as_ref(), "built while marking", &[&reused]).await;
                let stamp = watch.confirm(&dg(&manifest)).await.expect("confirming");
                assert!(stamp.is_some(), "the built manifest exists");
                *built.lock().unwrap() = Some(manifest);
            })
        }
    });
    interposed.after_listing(KeyPrefix::Uses, 1, move || {
        Box::pin(async move {
            let stamp = watch.confirm(&dg(&pulled)).await.expect("confirming");
            assert!(stamp.is_some(), "the pulled manifest exists");
        })
    });
    (interposed, vec![pulled_layer, reused_layer], built)
}

async fn use_between_listing_and_deleting(storage: Arc<dyn Storage>) {
    let (interposed, survivors, built) = used_while_marking(storage.clone()).await;
    let report = collect(
        &(interposed.clone() as Arc<dyn Storage>),
        &options(policy()),
    )
    .await;
    assert_eq!(
        interposed.listings(KeyPrefix::Uses),
        2,
        "the marks were listed once to mark and once to rescue"
    );
    assert!(built.lock().unwrap().is_some(), "the build ran");
    assert!(report.deleted.is_empty(), "{:?}", report.deleted);
    for kept in &survivors {
        assert!(exists(storage.as_ref(), &layer(kept)).await, "{kept}");
    }
}

async fn error_during_rescue(storage: Arc<dyn Storage>) {
    let (interposed, survivors, built) = used_while_marking(storage.clone()).await;
    // The rescue's read of the built manifest fails (the manifest is
    // written by the first hook; its digest is fixed by its content).
    let scratch = tempfile::tempdir().unwrap();
    let scratch = FilesystemStorage::new(scratch.path()).unwrap();
    let reused = blob(&scratch, b"old layer a build reuses", LAYER).await;
    let (manifest, _) = image(&scratch, "built while marking", &[&reused]).await;
    interposed.fail_reads_after(layer(&manifest), KeyPrefix::Uses, 2);
    let outcome = gc::collect(interposed.clone(), &options(policy()), &mut |_| {}).await;
    assert_eq!(built.lock().unwrap().as_deref(), Some(manifest.as_str()));
    assert!(
        matches!(outcome, Err(GcError::Storage(_))),
        "a failed read was skipped: {outcome:?}"
    );
    for kept in &survivors {
        assert!(exists(storage.as_ref(), &layer(kept)).await, "{kept}");
    }
}

/// Collector A deletes slowly; once it has deleted something, its writes
/// of `gc/generation` (heartbeats) stall, as a storage call that hangs in
/// retries would. Collector B, beside it, sees the generation unchanged for
/// `stale_after`, takes over and collects. A must have stopped deleting
/// before B's takeover reached the storage, and A must learn it lost.
/// (Every backend here enforces the conditional writes: the filesystem by
/// `flock`, fake-gcs-server `ifGenerationMatch`, moto `If-Match` and
/// `If-None-Match`; the primitives test checks each one.)
async fn takeover_of_a_live_holder(storage: Arc<dyn Storage>) {
    const GARBAGE: usize = 120;
    let s = storage.as_ref();
    let mut garbage = Vec::new();
    for n in 0..GARBAGE {
        garbage.push(blob(s, format!("garbage {n}").as_bytes(), LAYER).await);
    }
    tokio::time::sleep(AGE).await;
    let a = support::interposed::Interposed::new(storage.clone());
    // 120 deletions, 16 at a time, 400 ms each: over 3 s, longer than
    // the 2 s a lease lets a stalled holder delete.
    a.slow_deletes(Duration::from_millis(400));
    let b = support::interposed::Interposed::new(storage.clone());
    let first = tokio::spawn({
        let a = a.clone();
        async move { gc::collect(a, &options(policy()), &mut |_| {}).await }
    });
    // A is deleting: from now on its heartbeats hang.
    let generation_key = StorageKey::gc("generation").unwrap();
    while !a
        .log()
        .iter()
        .any(|(_, done)| matches!(done, support::interposed::Done::Deleted(_)))
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stall = a.hold_writes_to(generation_key.clone());
    // Once a beat of A waits in the hold, no write of A is in flight (a
    // holder's writes are one after the other), so B sees no change.
    while a.held_writes() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = gc::collect(b.clone(), &options(policy()), &mut |_| {})
        .await
        .expect("the second collection takes over and runs");
    stall.release();
    let first = first.await.unwrap();
    assert!(
        matches!(first, Err(GcError::Lost(_))),
        "the first collection did not learn it lost: {first:?}"
    );

    let took_over = b
        .log()
        .iter()
        .find(|(_, done)| *done == support::interposed::Done::Wrote(generation_key.clone()))
        .map(|(at, _)| *at)
        .expect("the second collection wrote its generation");
    // Deletions A completed, and those it gave up when its lease ran out
    // (which may have reached the storage): all before the takeover.
    let by_a: Vec<_> = a
        .log()
        .into_iter()
        .filter(|(_, done)| !matches!(done, support::interposed::Done::Wrote(_)))
        .collect();
    let completed = by_a
        .iter()
        .filter(|(_, done)| matches!(done, support::interposed::Done::Deleted(_)))
        .count();
    assert!(
        completed < GARBAGE,
        "the first collection finished before its lease ran out; the race was not exercised"
    );
    let last_by_a = by_a.iter().map(|(at, _)| *at).max().unwrap();
    assert!(
        last_by_a < took_over,
        "the first collection was deleting {:?} after the takeover",
        last_by_a - took_over
    );
    assert_eq!(second.generation, 2);
    assert!(completed + second.objects() <= GARBAGE);
    for hex in &garbage {
        assert!(!exists(s, &layer(hex)).await);
    }
}

/// Garbage and a used image spread over many pages of three: every page
/// is read, what is garbage on any page goes, what is used on any page
/// stays, and the listings were delivered in pages, never whole.
async fn many_pages(storage: Arc<dyn Storage>) {
    const GARBAGE: usize = 40;
    let s = storage.as_ref();
    let mut garbage = Vec::new();
    for n in 0..GARBAGE {
        garbage.push(blob(s, format!("paged garbage {n}").as_bytes(), LAYER).await);
    }
    let mut layers = Vec::new();
    for n in 0..10 {
        layers.push(blob(s, format!("paged used layer {n}").as_bytes(), LAYER).await);
    }
    let names: Vec<&str> = layers.iter().map(String::as_str).collect();
    let (used, config) = image(s, "paged used", &names).await;
    let (unused, _) = image(s, "paged unused", &names[..3]).await;
    for (n, layer) in layers.iter().enumerate() {
        record(s, &format!("paged{n}"), layer).await;
    }
    for (n, hex) in garbage.iter().enumerate().take(10) {
        record(s, &format!("pagedgarbage{n}"), hex).await;
    }
    tag(s, "dddd", &used).await;
    tag(s, "eeee", &unused).await;
    tokio::time::sleep(AGE).await;
    mark(s, &used).await;

    let interposed = support::interposed::Interposed::new(storage.clone());
    let report = collect(
        &(interposed.clone() as Arc<dyn Storage>),
        &options(policy()),
    )
    .await;

    // layers/ holds 40 + 10 + 2 configs + 2 manifests = 54 objects: 18
    // pages of three, listed three times (mark, manifests, blobs).
    assert!(
        interposed.pages(KeyPrefix::Layers) >= 3 * 54 / PAGE,
        "{} pages of layers/",
        interposed.pages(KeyPrefix::Layers)
    );
    assert_eq!(
        report.count(Kind::Blob),
        GARBAGE + 1,
        "{}",
        report.summary()
    );
    assert_eq!(
        deleted(&report, Kind::Manifest),
        [format!("layers/{unused}")]
    );
    assert_eq!(deleted(&report, Kind::TagEntry), ["manifests/eeee"]);
    assert_eq!(report.count(Kind::LayerRecord), 10);
    for hex in &garbage {
        assert!(!exists(s, &layer(hex)).await, "{hex} kept");
    }
    for hex in layers.iter().chain([&used, &config]) {
        assert!(exists(s, &layer(hex)).await, "{hex} collected");
    }
    for n in 0..10 {
        assert!(exists(s, &StorageKey::build(&format!("paged{n}")).unwrap()).await);
    }
}

/// The second page of the first listing of `layers/` never arrives: the
/// collection stops when that page's bound runs out, says which listing
/// and page, deletes nothing, and frees the lease for the next one.
async fn hanging_page(storage: Arc<dyn Storage>) {
    let s = storage.as_ref();
    let mut garbage = Vec::new();
    for n in 0..12 {
        garbage.push(
            blob(
                s,
                format!("garbage behind a hung page {n}").as_bytes(),
                LAYER,
            )
            .await,
        );
    }
    tokio::time::sleep(AGE).await;
    let interposed = support::interposed::Interposed::new(storage.clone());
    interposed.hang_page(KeyPrefix::Layers, 1, 2);
    let bounded = Options {
        page_timeout: Duration::from_secs(2),
        ..options(policy())
    };
    let mut deleted = 0;
    let outcome = gc::collect(interposed.clone(), &bounded, &mut |_| deleted += 1).await;
    let error = outcome.expect_err("a collection past a hung page");
    assert!(
        matches!(error, GcError::ListingStalled { page: 2, .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "listing layers/ stalled: page 2 did not arrive within 2s"
    );
    assert_eq!(deleted, 0);
    assert_eq!(interposed.pages(KeyPrefix::Layers), 1);
    for hex in &garbage {
        assert!(exists(s, &layer(hex)).await, "{hex} deleted");
    }
    // The lease was released: the next collection runs at once, and
    // collects.
    let next = collect(&storage, &options(policy())).await;
    assert_eq!(next.count(Kind::Blob), garbage.len());
}
