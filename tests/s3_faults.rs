//! A hung or flaky S3 server gives errors in bounded time, never a hang,
//! and an interrupted upload leaves nothing under its key. Through a
//! proxy failing a fifth of the API calls (503s and dropped connections,
//! before or after the server did the work), calls are retried with
//! back-off and storage keeps working; a bucket failing every call is an
//! error, never a "not found". The checks shared with the GCS backend are
//! in `support::net::checks`.

use std::time::{Duration, Instant};

use nixery::storage::retry_policy::RetryPolicy;
use nixery::storage::s3::{MIN_PART_SIZE, S3Options, S3Storage};
use nixery::storage::{StorageError, StorageKey, staging};
use support::s3::checks;
use support::s3::faults::FaultProxy;
use support::s3::{MotoS3, pattern};

fn short_timeouts() -> S3Options {
    S3Options {
        part_size: MIN_PART_SIZE,
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(2),
        io_timeout: Duration::from_secs(2),
        retry: RetryPolicy {
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            max_retries: 12,
            total: Duration::from_secs(20),
        },
        ..S3Options::default()
    }
}

#[tokio::test]
async fn a_server_hung_mid_upload_fails_persist_in_bounded_time_and_leaves_nothing() {
    let moto = MotoS3::start().await;
    let storage = moto.storage_with(short_timeouts()).await;
    let data = pattern(12 * 1024 * 1024, 5);
    let key = StorageKey::staging(&staging::unique_name()).unwrap();
    // One part is out when the server freezes; the next one hangs.
    let mut frozen_at = None;
    let result = checks::persist_interrupted(&storage, &key, data, 6 * 1024 * 1024, || {
        moto.process().freeze();
        frozen_at = Some(Instant::now());
    })
    .await;
    moto.process().thaw();
    assert!(
        matches!(result, Err(StorageError::Backend { .. })),
        "{result:?}"
    );
    if let Some(started) = frozen_at {
        eprintln!("the hung upload failed after {:?}", started.elapsed());
    }
    support::s3::assert_absent(&storage, &key).await;
}

#[tokio::test]
async fn a_fetch_from_a_hung_server_fails_in_bounded_time() {
    let moto = MotoS3::start().await;
    let storage = moto.storage_with(short_timeouts()).await;
    let result = checks::fetch_while_frozen(&storage, moto.process()).await;
    assert!(
        matches!(result, Err(StorageError::Backend { .. })),
        "{:?}",
        result.map(|b| b.len())
    );
}

async fn through_faults(moto: &MotoS3, seed: u64) -> (S3Storage, FaultProxy) {
    let proxy = moto.fault_proxy(0, seed).await;
    let storage = S3Storage::connect_with(
        moto.settings_at(&format!("http://{}", proxy.host())),
        short_timeouts(),
    )
    .await
    .expect("connect through the proxy");
    (storage, proxy)
}

#[tokio::test]
async fn uploads_moves_and_reads_survive_a_fifth_of_api_calls_failing() {
    let moto = MotoS3::start().await;
    let (storage, proxy) = through_faults(&moto, 7).await;
    proxy.set_rate(200);
    // Two 5 MiB parts and a tail: a multipart upload each time.
    let len = 2 * MIN_PART_SIZE + 1000;
    checks::blobs_survive_faults(&storage, &moto.storage().await, &proxy, 3, len).await;
}

#[tokio::test]
async fn a_bucket_failing_every_call_is_an_error_not_a_missing_object() {
    let moto = MotoS3::start().await;
    let (storage, proxy) = through_faults(&moto, 8).await;
    checks::failing_bucket_is_an_error(&storage, &proxy).await;
}
