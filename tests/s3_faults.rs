//! A hung or flaky S3 server gives errors in bounded time, never a hang,
//! and an interrupted upload leaves nothing under its key. Through a
//! proxy failing a fifth of the API calls (503s and dropped connections,
//! before or after the server did the work), calls are retried with
//! back-off and storage keeps working; a bucket failing every call is an
//! error, never a "not found".

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nixery::storage::retry_policy::RetryPolicy;
use nixery::storage::s3::{MIN_PART_SIZE, S3Options, S3Storage};
use nixery::storage::{Storage, StorageError, StorageKey, staging};
use sha2::Digest as _;
use support::s3::faults::{self, FaultProxy};
use support::s3::{MotoS3, body_of, collect, gated_body, pattern};

const LAYER_TYPE: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Generous bound for "an error rather than a hang" (the configured
/// timeouts below are 2 s).
const BOUND: Duration = Duration::from_secs(60);

fn short_timeouts(moto: &MotoS3) -> S3Options {
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
        static_key: Some(moto.key()),
    }
}

#[tokio::test]
async fn a_server_hung_mid_upload_fails_persist_in_bounded_time_and_leaves_nothing() {
    let moto = MotoS3::start().await;
    let storage = moto.storage_with(short_timeouts(&moto)).await;
    let data = pattern(12 * 1024 * 1024, 5);
    let key = StorageKey::staging(&staging::unique_name()).unwrap();
    // One part is out when the server freezes; the next one hangs.
    let (body, reached, resume) = gated_body(data, 64 * 1024, 6 * 1024 * 1024);
    let upload = tokio::spawn({
        let (storage, key) = (storage.clone(), key.clone());
        async move { tokio::time::timeout(BOUND, storage.persist(&key, LAYER_TYPE, body)).await }
    });
    reached.await.unwrap();
    moto.freeze();
    let started = Instant::now();
    resume.send(()).unwrap();
    let result = upload.await.unwrap();
    moto.thaw();
    let result = result.expect("persist hung on a frozen server");
    assert!(
        matches!(result, Err(StorageError::Backend { .. })),
        "{result:?}"
    );
    eprintln!("the hung upload failed after {:?}", started.elapsed());
    assert!(matches!(
        storage.fetch(&key).await,
        Err(StorageError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_fetch_from_a_hung_server_fails_in_bounded_time() {
    let moto = MotoS3::start().await;
    let storage = moto.storage_with(short_timeouts(&moto)).await;
    let key = StorageKey::manifest("frozen").unwrap();
    storage
        .persist(&key, "application/json", body_of(b"{}".to_vec(), 2))
        .await
        .unwrap();
    moto.freeze();
    let result = tokio::time::timeout(BOUND, async {
        let stream = storage.fetch(&key).await?;
        collect(stream).await.map_err(|source| StorageError::Io {
            key: key.clone(),
            source,
        })
    })
    .await;
    moto.thaw();
    let result = result.expect("fetch hung on a frozen server");
    assert!(
        matches!(result, Err(StorageError::Backend { .. })),
        "{:?}",
        result.map(|b| b.len())
    );
}

async fn through_faults(moto: &MotoS3, seed: u64) -> (S3Storage, FaultProxy) {
    let (listener, _) = FaultProxy::bind().await;
    let proxy = FaultProxy::forward_to(listener, moto.port(), 0, seed, faults::is_s3_api_call);
    let storage = S3Storage::connect_with(
        moto.settings_at(&format!("http://{}", proxy.host())),
        short_timeouts(moto),
    )
    .await
    .expect("connect through the proxy");
    (storage, proxy)
}

#[tokio::test]
async fn uploads_moves_and_reads_survive_a_fifth_of_api_calls_failing() {
    let moto = MotoS3::start().await;
    let (storage, proxy) = through_faults(&moto, 7).await;
    let direct = moto.storage().await;
    proxy.set_rate(200);
    for round in 0..3u64 {
        // Two 5 MiB parts and a tail: a multipart upload each time.
        let data = pattern(2 * MIN_PART_SIZE + 1000, 20 + round);
        let blob = storage
            .persist_blob(LAYER_TYPE, body_of(data.clone(), 64 * 1024))
            .await
            .expect("persist despite faults");
        assert_eq!(blob.sha256.hex(), hex::encode(sha2::Sha256::digest(&data)));
        let key = StorageKey::layer(&blob.sha256);
        let stored = collect(direct.fetch(&key).await.expect("stored blob"))
            .await
            .unwrap();
        assert!(stored == data, "stored bytes differ (round {round})");
        let fetched = collect(storage.fetch(&key).await.expect("fetch despite faults"))
            .await
            .expect("download body");
        assert!(fetched == data);
    }
    let counts = proxy.counts();
    assert!(
        counts.faults() >= 5,
        "too few faults to mean anything: {counts:?}"
    );
    eprintln!("fault proxy: {counts:?}");
}

#[tokio::test]
async fn a_bucket_failing_every_call_is_an_error_not_a_missing_object() {
    let moto = MotoS3::start().await;
    let (storage, proxy) = through_faults(&moto, 8).await;
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
        proxy.counts().calls.load(Ordering::SeqCst) > 2,
        "not retried"
    );
}
