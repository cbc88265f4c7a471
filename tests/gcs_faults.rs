//! A dead or hung GCS backend gives errors in bounded time, never a hang,
//! and an interrupted upload leaves nothing under its key. Through a proxy
//! failing a share of the API calls (503s and dropped connections), calls
//! are retried and uploads resume, so storage keeps working; a bucket
//! failing every call is an error, never a "not found".

use std::time::Duration;

use nixery::digest::Digest;
use nixery::storage::gcs::{CHUNK_GRANULARITY, GcsOptions, GcsStorage, RetryPolicy};
use nixery::storage::{Storage, StorageError, StorageKey};
use support::gcs::{BUCKET, FakeGcs, body_of, collect, gated_body, pattern, sha256_hex};

const LAYER_TYPE: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Generous bound for "an error rather than a hang" (the configured
/// timeouts below are 2 s).
const BOUND: Duration = Duration::from_secs(60);

fn short_timeouts() -> GcsOptions {
    GcsOptions {
        chunk_size: 2 * CHUNK_GRANULARITY,
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(2),
        retry: RetryPolicy {
            total: Duration::from_secs(6),
            ..RetryPolicy::default()
        },
        ..GcsOptions::default()
    }
}

#[tokio::test]
async fn emulator_killed_mid_upload_fails_persist_and_leaves_no_object() {
    let mut gcs = FakeGcs::start().await;
    let storage = gcs.storage_with(short_timeouts()).await;
    let data = pattern(4 * 1024 * 1024, 11);
    let key = StorageKey::layer(&Digest::of(&data));
    let (body, reached, resume) = gated_body(data.clone(), 64 * 1024, 2 * 1024 * 1024);

    let upload = tokio::spawn({
        let (storage, key) = (storage.clone(), key.clone());
        async move { tokio::time::timeout(BOUND, storage.persist(&key, LAYER_TYPE, body)).await }
    });
    reached.await.unwrap();
    gcs.kill();
    resume.send(()).unwrap();
    let result = upload
        .await
        .unwrap()
        .expect("persist hung on a dead backend");

    assert!(
        matches!(result, Err(StorageError::Backend { .. })),
        "{result:?}"
    );
    gcs.restart().await;
    assert!(matches!(
        storage.fetch(&key).await,
        Err(StorageError::NotFound(_))
    ));
    // The same upload succeeds once the backend is back.
    let persisted = storage
        .persist(&key, LAYER_TYPE, body_of(data.clone(), 64 * 1024))
        .await
        .unwrap();
    assert_eq!(persisted.sha256.hex(), sha256_hex(&data));
}

#[tokio::test]
async fn emulator_hung_mid_upload_fails_persist_by_timeout_and_leaves_no_object() {
    let gcs = FakeGcs::start().await;
    let storage = gcs.storage_with(short_timeouts()).await;
    let data = pattern(4 * 1024 * 1024, 12);
    let key = StorageKey::layer(&Digest::of(&data));
    let (body, reached, resume) = gated_body(data, 64 * 1024, 2 * 1024 * 1024);

    let upload = tokio::spawn({
        let (storage, key) = (storage.clone(), key.clone());
        async move { tokio::time::timeout(BOUND, storage.persist(&key, LAYER_TYPE, body)).await }
    });
    reached.await.unwrap();
    gcs.freeze();
    resume.send(()).unwrap();
    let result = upload
        .await
        .unwrap()
        .expect("persist hung on a frozen backend");
    gcs.thaw();

    let message = match result {
        Err(StorageError::Backend { message, .. }) => message,
        other => panic!("expected a backend error, got {other:?}"),
    };
    assert!(message.contains("no answer within"), "{message}");
    assert!(matches!(
        storage.fetch(&key).await,
        Err(StorageError::NotFound(_))
    ));
}

#[tokio::test]
async fn fetch_from_a_hung_emulator_fails_in_bounded_time() {
    let gcs = FakeGcs::start().await;
    let storage = gcs.storage_with(short_timeouts()).await;
    let key = StorageKey::manifest("frozen").unwrap();
    support::gcs::put(&storage, &key, "application/json", b"{}", 2).await;

    gcs.freeze();
    let result = tokio::time::timeout(BOUND, async {
        let stream = storage.fetch(&key).await?;
        collect(stream).await.map_err(|source| StorageError::Io {
            key: key.clone(),
            source,
        })
    })
    .await;
    gcs.thaw();

    let result = result.expect("fetch hung on a frozen backend");
    assert!(result.is_err(), "fetch from a frozen backend succeeded");
}

#[tokio::test]
async fn move_on_a_hung_emulator_fails_in_bounded_time() {
    let gcs = FakeGcs::start().await;
    let storage = gcs.storage_with(short_timeouts()).await;
    let from = StorageKey::staging("frozen-move").unwrap();
    let to = StorageKey::manifest("frozen-move").unwrap();
    support::gcs::put(&storage, &from, "application/json", b"{}", 2).await;

    gcs.freeze();
    let result = tokio::time::timeout(BOUND, storage.move_object(&from, &to)).await;
    gcs.thaw();

    let result = result.expect("move hung on a frozen backend");
    assert!(
        matches!(result, Err(StorageError::Backend { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn connect_to_a_hung_emulator_fails_in_bounded_time() {
    let gcs = FakeGcs::start().await;
    gcs.freeze();

    let result = tokio::time::timeout(
        BOUND,
        GcsStorage::connect_with(BUCKET.to_owned(), None, Some(gcs.host()), short_timeouts()),
    )
    .await;
    gcs.thaw();

    let error = result
        .expect("connect hung on a frozen backend")
        .unwrap_err()
        .to_string();
    assert!(error.contains("not reachable"), "{error}");
}

/// Quick retries for the storage-level fault tests.
fn quick_retries() -> GcsOptions {
    GcsOptions {
        retry: RetryPolicy {
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            max_retries: 12,
            total: Duration::from_secs(20),
        },
        ..short_timeouts()
    }
}

#[tokio::test]
async fn uploads_moves_and_reads_survive_a_fifth_of_api_calls_failing() {
    let (gcs, proxy) = FakeGcs::start_behind_faults(0, 7).await;
    let storage =
        GcsStorage::connect_with(BUCKET.to_owned(), None, Some(proxy.host()), quick_retries())
            .await
            .expect("connect through the proxy");
    proxy.set_rate(200);
    for round in 0..4u64 {
        // 5 chunks of 512 KiB and a tail: several resumable PUTs each.
        let data = pattern(5 * 2 * CHUNK_GRANULARITY + 1000, 20 + round);
        let staging = StorageKey::staging(&format!("faults-{round}")).unwrap();
        let persisted = storage
            .persist(&staging, LAYER_TYPE, body_of(data.clone(), 64 * 1024))
            .await
            .expect("persist despite faults");
        assert_eq!(persisted.sha256.hex(), sha256_hex(&data));
        let key = StorageKey::layer(&persisted.sha256);
        storage
            .move_object(&staging, &key)
            .await
            .expect("move despite faults");
        let stored = gcs.object_bytes(key.as_str()).await.expect("moved object");
        assert!(stored == data, "stored bytes differ (round {round})");
        assert!(gcs.object_metadata(staging.as_str()).await.is_none());
        let fetched = collect(storage.fetch(&key).await.expect("fetch despite faults"))
            .await
            .expect("download body");
        assert!(fetched == data);
    }
    assert!(
        proxy.counts().faults() >= 5,
        "too few faults were injected to mean anything: {:?}",
        proxy.counts()
    );
}

#[tokio::test]
async fn a_bucket_failing_every_call_is_an_error_not_a_missing_object() {
    let (_gcs, proxy) = FakeGcs::start_behind_faults(0, 8).await;
    let storage =
        GcsStorage::connect_with(BUCKET.to_owned(), None, Some(proxy.host()), quick_retries())
            .await
            .expect("connect through the proxy");
    proxy.set_rate(1000);
    let key = StorageKey::manifest("absent-or-not").unwrap();
    let result = tokio::time::timeout(BOUND, storage.fetch(&key))
        .await
        .expect("fetch gave up in bounded time");
    assert!(
        matches!(result, Err(StorageError::Backend { .. })),
        "{:?}",
        result.map(|_| ())
    );
    assert!(
        proxy
            .counts()
            .calls
            .load(std::sync::atomic::Ordering::SeqCst)
            > 2,
        "not retried"
    );
}
