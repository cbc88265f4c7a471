//! Test bodies the GCS and S3 backend tests both run (`tests/gcs_*.rs`,
//! `tests/s3_*.rs`): the same promise checked against either emulator, so
//! that the two backends are held to one standard. Each test keeps its
//! name and its own setup, and calls these with its backend.

use std::time::Duration;

use nixery::storage::{Persisted, Storage, StorageError, StorageKey};

use super::bodies::{body_of, collect, gated_body, pattern, read_whole};
use super::emulator::Emulator;
use super::faults::FaultProxy;

/// The media type the checks store blobs with.
pub const LAYER_TYPE: &str = crate::media::DOCKER_LAYER;

/// Generous bound for "an error rather than a hang" (the backends under
/// test are configured with timeouts of a few seconds).
pub const BOUND: Duration = Duration::from_secs(60);

/// How `storage` answers a client's request for `key` that accepts only
/// the Docker V2 manifest type (a manifest by digest).
pub async fn serve_as_manifest(
    storage: &impl Storage,
    key: &StorageKey,
) -> Result<nixery::storage::Served, StorageError> {
    let only_manifests = nixery::storage::ServeRequest {
        only_content_types: Some(&[crate::server::MANIFEST_V2]),
        ..nixery::storage::ServeRequest::default()
    };
    storage.serve(key, &only_manifests).await
}

/// A HEAD of a stored blob is answered with its length and content type,
/// never with a redirect (a redirect target is signed for GET, and the
/// bucket refuses a HEAD to it); a ranged HEAD with the resolved range,
/// an unsatisfiable range with `416`; a GET of a remote backend still
/// redirects. The same on every backend.
pub async fn head_is_answered_from_metadata_never_redirected(storage: &impl Storage) {
    use nixery::storage::{ByteRange, ServeRequest, Served};

    let data = pattern(3000, 27);
    let digest = crate::server::put_blob(storage, &data, LAYER_TYPE).await;
    let key = StorageKey::layer(&nixery::digest::Digest::parse(&digest).expect("digest"));
    let head = |range| ServeRequest {
        head: true,
        range,
        ..ServeRequest::default()
    };
    match storage.serve(&key, &head(None)).await.expect("HEAD") {
        Served::Content {
            body: None,
            total_len: 3000,
            range: None,
            content_type,
        } => assert_eq!(content_type, LAYER_TYPE),
        Served::Redirect { .. } => panic!("a HEAD must never be redirected"),
        _ => panic!("a HEAD is answered with length and type, without a body"),
    }
    let ranged = head(Some(ByteRange::From {
        start: 1000,
        end: Some(1999),
    }));
    assert!(matches!(
        storage.serve(&key, &ranged).await.expect("ranged HEAD"),
        Served::Content {
            body: None,
            total_len: 3000,
            range: Some((1000, 1999)),
            ..
        }
    ));
    for request in [
        head(Some(ByteRange::From {
            start: 3000,
            end: None,
        })),
        ServeRequest {
            range: Some(ByteRange::From {
                start: 5000,
                end: None,
            }),
            ..ServeRequest::default()
        },
    ] {
        assert!(matches!(
            storage.serve(&key, &request).await.expect("serve"),
            Served::RangeNotSatisfiable { total_len: 3000 }
        ));
    }
    let get = storage
        .serve(&key, &ServeRequest::default())
        .await
        .expect("GET");
    if storage.name() != "filesystem" {
        assert!(
            matches!(get, Served::Redirect { .. }),
            "a GET of {} redirects",
            storage.name()
        );
    }
}

/// Persists `data` under `key` with a body that pauses once `gate_at`
/// bytes are out; at the pause runs `interrupt` (which kills or freezes the
/// backend), then lets the body go on. The outcome, which must come within
/// [`BOUND`] (else the test fails: a hang).
pub async fn persist_interrupted<S>(
    storage: &S,
    key: &StorageKey,
    data: Vec<u8>,
    gate_at: usize,
    interrupt: impl FnOnce(),
) -> Result<Persisted, StorageError>
where
    S: Storage + Clone + 'static,
{
    let (body, reached, resume) = gated_body(data, 64 * 1024, gate_at);
    let upload = tokio::spawn({
        let (storage, key) = (storage.clone(), key.clone());
        async move { tokio::time::timeout(BOUND, storage.persist(&key, LAYER_TYPE, body)).await }
    });
    reached.await.expect("the body reached its gate");
    interrupt();
    resume.send(()).expect("the upload is waiting");
    upload
        .await
        .expect("upload task")
        .expect("persist hung on an interrupted backend")
}

/// Stores a small object, freezes `emulator`, and reads the object back
/// whole; the outcome, which must come within [`BOUND`]. The emulator is
/// thawed before returning.
pub async fn fetch_while_frozen(
    storage: &impl Storage,
    emulator: &Emulator,
) -> Result<Vec<u8>, StorageError> {
    let key = StorageKey::manifest("frozen").expect("key");
    storage
        .persist(&key, "application/json", body_of(b"{}".to_vec(), 2))
        .await
        .unwrap_or_else(|e| panic!("persisting {key}: {e}"));
    let fetch = async {
        let stream = storage.fetch(&key).await?;
        collect(stream).await.map_err(|source| StorageError::Io {
            key: key.clone(),
            source,
        })
    };
    emulator
        .while_frozen(BOUND, fetch)
        .await
        .expect("fetch hung on a frozen backend")
}

/// `rounds` blobs of `len` bytes (seeded from 20) are stored through
/// `storage` (behind `proxy`, whose failure rate the caller set), read
/// back whole through `direct` (the same bucket, no faults) and through
/// `storage`, with no staging object left behind; enough faults were
/// injected to mean something.
pub async fn blobs_survive_faults(
    storage: &impl Storage,
    direct: &impl Storage,
    proxy: &FaultProxy,
    rounds: u64,
    len: usize,
) {
    for round in 0..rounds {
        let data = pattern(len, 20 + round);
        let blob = storage
            .persist_blob(LAYER_TYPE, body_of(data.clone(), 64 * 1024))
            .await
            .expect("persist despite faults");
        assert_eq!(blob.sha256.hex(), super::bodies::sha256_hex(&data));
        let key = StorageKey::layer(&blob.sha256);
        let stored = read_whole(direct, &key).await;
        assert!(stored == data, "stored bytes differ (round {round})");
        let staging = direct
            .list(nixery::storage::KeyPrefix::Staging)
            .await
            .expect("staging listing");
        assert!(staging.is_empty(), "left in staging: {staging:?}");
        let fetched = collect(storage.fetch(&key).await.expect("fetch despite faults"))
            .await
            .expect("download body");
        assert!(fetched == data, "fetched bytes differ (round {round})");
    }
    let counts = proxy.counts();
    eprintln!("fault proxy: {counts:?}");
    assert!(
        counts.faults() >= 5,
        "too few faults to mean anything: {counts:?}"
    );
}

/// With `proxy` failing every call, a fetch through `storage` is a
/// backend error in bounded time, never a "not found", after retries.
pub async fn failing_bucket_is_an_error(storage: &impl Storage, proxy: &FaultProxy) {
    proxy.set_rate(1000);
    let key = StorageKey::manifest("absent-or-not").expect("key");
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

/// A staging sweep with a maximum age of an hour removes a staged object
/// named two hours ago and nothing else: not one named now, not one whose
/// name this server does not give, not a blob. Returns the stale, fresh
/// and foreign keys (in that order) and the blob's.
pub async fn staging_sweep_removes_stale_names_only(storage: &impl Storage) -> [StorageKey; 4] {
    let hour = Duration::from_secs(3600);
    let old_nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos()
        - 2 * hour.as_nanos();
    let keys = [
        StorageKey::staging(&format!("4242-{old_nanos}-0")).expect("key"),
        StorageKey::staging(&nixery::storage::staging::unique_name()).expect("key"),
        StorageKey::staging("uploaded-by-someone-else").expect("key"),
        StorageKey::layer(&nixery::digest::Digest::of(b"kept")),
    ];
    for key in &keys {
        storage
            .persist(key, LAYER_TYPE, body_of(b"kept".to_vec(), 4))
            .await
            .unwrap_or_else(|e| panic!("persisting {key}: {e}"));
    }
    assert_eq!(storage.clean_staging(hour).await.expect("sweep"), 1);
    let mut left: Vec<String> = storage
        .list(nixery::storage::KeyPrefix::Staging)
        .await
        .expect("staging listing")
        .into_iter()
        .map(|o| o.key.to_string())
        .collect();
    left.sort();
    let mut expected = vec![keys[1].to_string(), keys[2].to_string()];
    expected.sort();
    assert_eq!(left, expected);
    storage.stat(&keys[3]).await.expect("the blob is kept");
    keys
}

/// `server` (on a backend whose API calls go through `proxy`, failing a
/// share of them) builds three images that skopeo pulls whole, every blob
/// checked; enough faults were injected to mean something, the server
/// retried, and nothing is left in staging of `direct` (the same bucket,
/// no faults).
pub async fn images_pull_whole_through_faults(
    server: &crate::server::TestServer,
    proxy: &FaultProxy,
    direct: &impl Storage,
) {
    let work = tempfile::tempdir().expect("temporary directory");
    for image in ["hello", "curl", "htop"] {
        let layout = work.path().join(image);
        tokio::task::block_in_place(|| {
            crate::skopeo_copy(server.addr(), &format!("{image}:latest"), &layout)
        });
    }
    let counts = proxy.counts();
    eprintln!("fault proxy: {counts:?}");
    assert!(
        counts.faults() >= 3,
        "too few faults to mean anything: {counts:?}"
    );
    assert!(crate::count_logs(server, "storage call failed, retrying") >= 1);
    // Nothing was left half-moved: no staging object remains.
    let staging = direct
        .list(nixery::storage::KeyPrefix::Staging)
        .await
        .expect("staging listing");
    assert!(
        staging.is_empty(),
        "staging objects were left behind: {staging:?}"
    );
}
