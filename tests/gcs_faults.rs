//! A dead or hung GCS backend gives errors in bounded time, never a hang,
//! and an interrupted upload leaves nothing under its key. Through a proxy
//! failing a share of the API calls (503s and dropped connections), calls
//! are retried and uploads resume, so storage keeps working; a bucket
//! failing every call is an error, never a "not found". The checks shared
//! with the S3 backend are in `support::net::checks`.

use std::time::Duration;

use nixery::digest::Digest;
use nixery::storage::gcs::{CHUNK_GRANULARITY, GcsOptions, GcsStorage, RetryPolicy};
use nixery::storage::{Storage, StorageError, StorageKey};
use support::gcs::checks::{self, BOUND, LAYER_TYPE};
use support::gcs::faults::FaultProxy;
use support::gcs::{BUCKET, FakeGcs, body_of, pattern, sha256_hex};

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

    let result =
        checks::persist_interrupted(&storage, &key, data.clone(), 2 * 1024 * 1024, || gcs.kill())
            .await;

    assert!(
        matches!(result, Err(StorageError::Backend { .. })),
        "{result:?}"
    );
    gcs.restart().await;
    support::gcs::assert_absent(&storage, &key).await;
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

    let result = checks::persist_interrupted(&storage, &key, data, 2 * 1024 * 1024, || {
        gcs.process().freeze()
    })
    .await;
    gcs.process().thaw();

    let message = match result {
        Err(StorageError::Backend { message, .. }) => message,
        other => panic!("expected a backend error, got {other:?}"),
    };
    assert!(message.contains("no answer within"), "{message}");
    support::gcs::assert_absent(&storage, &key).await;
}

#[tokio::test]
async fn fetch_from_a_hung_emulator_fails_in_bounded_time() {
    let gcs = FakeGcs::start().await;
    let storage = gcs.storage_with(short_timeouts()).await;
    let result = checks::fetch_while_frozen(&storage, gcs.process()).await;
    assert!(result.is_err(), "fetch from a frozen backend succeeded");
}

#[tokio::test]
async fn move_on_a_hung_emulator_fails_in_bounded_time() {
    let gcs = FakeGcs::start().await;
    let storage = gcs.storage_with(short_timeouts()).await;
    let from = StorageKey::staging("frozen-move").unwrap();
    let to = StorageKey::manifest("frozen-move").unwrap();
    support::gcs::put(&storage, &from, "application/json", b"{}", 2).await;

    let result = gcs
        .process()
        .while_frozen(BOUND, storage.move_object(&from, &to))
        .await
        .expect("move hung on a frozen backend");
    assert!(
        matches!(result, Err(StorageError::Backend { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn connect_to_a_hung_emulator_fails_in_bounded_time() {
    let gcs = FakeGcs::start().await;
    let connect =
        GcsStorage::connect_with(BUCKET.to_owned(), None, Some(gcs.host()), short_timeouts());
    let error = gcs
        .process()
        .while_frozen(BOUND, connect)
        .await
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

/// An emulator behind a fault proxy (failing nothing yet, seeded with
/// `seed`) and a backend connected through it.
async fn through_faults(seed: u64) -> (FakeGcs, FaultProxy, GcsStorage) {
    let (gcs, proxy) = FakeGcs::start_behind_faults(0, seed).await;
    let storage =
        GcsStorage::connect_with(BUCKET.to_owned(), None, Some(proxy.host()), quick_retries())
            .await
            .expect("connect through the proxy");
    (gcs, proxy, storage)
}

#[tokio::test]
async fn uploads_moves_and_reads_survive_a_fifth_of_api_calls_failing() {
    let (gcs, proxy, storage) = through_faults(7).await;
    proxy.set_rate(200);
    // 5 chunks of 512 KiB and a tail: several resumable PUTs each.
    let len = 5 * 2 * CHUNK_GRANULARITY + 1000;
    checks::blobs_survive_faults(&storage, &gcs.storage().await, &proxy, 4, len).await;
}

#[tokio::test]
async fn a_bucket_failing_every_call_is_an_error_not_a_missing_object() {
    let (_gcs, proxy, storage) = through_faults(8).await;
    checks::failing_bucket_is_an_error(&storage, &proxy).await;
}
