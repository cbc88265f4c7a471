//! The s3 backend against a real S3 server (moto, started by each test).
//!
//! Properties defended: objects go under upstream's key layout with their
//! content types; a body too large for one part is a multipart upload that
//! is visible only once complete, and a failing body leaves nothing under
//! the key; a blob moves from staging to `layers/<sha256>` keeping its
//! content type, and a retried move succeeds; `serve` redirects to a
//! presigned URL that really serves the bytes (ranges included), or to the
//! plain object URL with presigning off; the staging sweep removes only
//! stale names this server gives; listing and deleting work on every
//! prefix; a missing bucket is reported at connect.

use std::time::Duration;

use nixery::storage::s3::{S3Options, S3Settings, S3Storage};
use nixery::storage::{
    KeyPrefix, ServeRequest, Served, Storage, StorageError, StorageKey, staging,
};
use support::media::{DOCKER_LAYER as LAYER_TYPE, DOCKER_MANIFEST as MANIFEST_TYPE};
use support::s3::checks::serve_as_manifest;
use support::s3::{BUCKET, MotoS3, S3Server, body_of, pattern, read_whole, sha256_hex};

/// What a plain HTTP client gets for `url`: status, content type, body.
async fn get(url: &str, range: Option<&str>) -> (u16, String, Vec<u8>) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(range) = range {
        request = request.header("Range", range);
    }
    let response = request.send().await.expect("GET");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (
        status,
        content_type,
        response.bytes().await.expect("body").to_vec(),
    )
}

async fn redirect_of(storage: &S3Storage, key: &StorageKey) -> String {
    match storage.serve(key, &ServeRequest::default()).await {
        Ok(Served::Redirect { location }) => location,
        Ok(_) => panic!("the s3 backend must redirect"),
        Err(e) => panic!("serve failed: {e}"),
    }
}

#[tokio::test]
async fn objects_keep_upstream_keys_and_content_types_through_a_presigned_redirect() {
    let moto = MotoS3::start().await;
    let storage = moto.storage().await;
    let manifest = br#"{"schemaVersion":2}"#.to_vec();
    let key = StorageKey::manifest("some-image-key").unwrap();
    let persisted = storage
        .persist(&key, MANIFEST_TYPE, body_of(manifest.clone(), 4))
        .await
        .unwrap();
    assert_eq!(persisted.sha256.hex(), sha256_hex(&manifest));
    assert_eq!(read_whole(&storage, &key).await, manifest);

    let data = pattern(300_000, 1);
    let blob = storage
        .persist_blob(LAYER_TYPE, body_of(data.clone(), 10_000))
        .await
        .unwrap();
    let layer = StorageKey::layer(&blob.sha256);
    let location = redirect_of(&storage, &layer).await;
    assert!(
        location.starts_with(&format!(
            "{}/{BUCKET}/layers/{}?",
            moto.origin(),
            blob.sha256.hex()
        )),
        "{location}"
    );
    assert!(location.contains("X-Amz-Signature="), "{location}");
    assert!(location.contains("X-Amz-Expires=300"), "{location}");
    let (status, content_type, bytes) = get(&location, None).await;
    assert_eq!((status, content_type.as_str()), (200, LAYER_TYPE));
    assert!(bytes == data, "the redirect served other bytes");
    // Clients repeat ranges against the redirect target.
    let (status, _, part) = get(&location, Some("bytes=10-19")).await;
    assert_eq!(status, 206);
    assert_eq!(part, data[10..20]);

    // A layer is never served as a manifest.
    assert!(matches!(
        serve_as_manifest(&storage, &layer).await,
        Err(StorageError::NotFound(_))
    ));
    let absent = StorageKey::layer(&nixery::digest::Digest::parse_hex(&"0".repeat(64)).unwrap());
    assert!(matches!(
        storage.serve(&absent, &ServeRequest::default()).await,
        Err(StorageError::NotFound(_))
    ));
    support::s3::assert_absent(&storage, &absent).await;
}

#[tokio::test]
async fn a_multipart_blob_appears_only_complete_and_staging_is_emptied() {
    let moto = MotoS3::start().await;
    let storage = moto.storage().await;
    // Three 5 MiB parts and a tail.
    let data = pattern(15 * 1024 * 1024 + 12_345, 2);
    let options = S3Options {
        part_size: nixery::storage::s3::MIN_PART_SIZE,
        ..S3Options::default()
    };
    let small_parts = moto.storage_with(options).await;
    let blob = small_parts
        .persist_blob(LAYER_TYPE, body_of(data.clone(), 256 * 1024))
        .await
        .unwrap();
    assert_eq!(blob.sha256.hex(), sha256_hex(&data));
    assert_eq!(blob.size, data.len() as u64);
    let key = StorageKey::layer(&blob.sha256);
    assert!(read_whole(&storage, &key).await == data);
    assert!(storage.list(KeyPrefix::Staging).await.unwrap().is_empty());
    let layers = storage.list(KeyPrefix::Layers).await.unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0].key, key);
    assert_eq!(layers[0].size, data.len() as u64);
    assert!(layers[0].modified.is_some());
}

#[tokio::test]
async fn a_failing_body_leaves_nothing_under_the_key() {
    let moto = MotoS3::start().await;
    let storage = moto
        .storage_with(S3Options {
            part_size: nixery::storage::s3::MIN_PART_SIZE,
            ..S3Options::default()
        })
        .await;
    for len in [1000, 12 * 1024 * 1024] {
        let key = StorageKey::build(&format!("broken-{len}")).unwrap();
        let mut items: Vec<std::io::Result<bytes::Bytes>> = pattern(len, 3)
            .chunks(64 * 1024)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        items.push(Err(std::io::Error::other("the packer failed")));
        let result = storage
            .persist(
                &key,
                "application/json",
                Box::pin(futures::stream::iter(items)),
            )
            .await;
        assert!(matches!(result, Err(StorageError::Io { .. })), "{result:?}");
        assert!(
            matches!(storage.fetch(&key).await, Err(StorageError::NotFound(_))),
            "a broken upload of {len} bytes is visible"
        );
    }
    assert!(storage.list(KeyPrefix::Builds).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_move_keeps_the_content_type_and_a_retried_move_succeeds() {
    let moto = MotoS3::start().await;
    let storage = moto.storage().await;
    let from = StorageKey::staging(&staging::unique_name()).unwrap();
    let data = b"config".to_vec();
    let to = StorageKey::layer(&nixery::digest::Digest::of(&data));
    storage
        .persist(
            &from,
            "application/vnd.docker.container.image.v1+json",
            body_of(data, 3),
        )
        .await
        .unwrap();
    storage.move_object(&from, &to).await.unwrap();
    storage.move_object(&from, &to).await.unwrap();
    let (status, content_type, _) = get(&redirect_of(&storage, &to).await, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        content_type,
        "application/vnd.docker.container.image.v1+json"
    );
    support::s3::assert_absent(&storage, &from).await;
    let never = StorageKey::staging("never-written").unwrap();
    assert!(matches!(
        storage
            .move_object(&never, &StorageKey::manifest("x").unwrap())
            .await,
        Err(StorageError::NotFound(_))
    ));
}

#[tokio::test]
async fn without_presigning_redirects_go_to_the_plain_object_url() {
    let moto = MotoS3::start().await;
    let settings = S3Settings {
        presigned_urls: false,
        ..moto.settings_at(&moto.origin())
    };
    let storage = S3Storage::connect_with(settings, S3Options::default())
        .await
        .unwrap();
    let blob = storage
        .persist_blob(LAYER_TYPE, body_of(b"public".to_vec(), 2))
        .await
        .unwrap();
    let key = StorageKey::layer(&blob.sha256);
    let location = redirect_of(&storage, &key).await;
    assert_eq!(
        location,
        format!("{}/{BUCKET}/layers/{}", moto.origin(), blob.sha256.hex())
    );
    // The URL carries no signature: a private bucket refuses it...
    assert_eq!(get(&location, None).await.0, 403);
    // ...and a public one serves it.
    moto.make_public().await;
    let (status, _, body) = get(&location, None).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, b"public");
}

#[tokio::test]
async fn the_staging_sweep_removes_stale_names_only() {
    let moto = MotoS3::start().await;
    let storage = moto.storage().await;
    let [_, fresh, _, _] =
        support::s3::checks::staging_sweep_removes_stale_names_only(&storage).await;
    storage.delete(&fresh).await.unwrap();
    storage.delete(&fresh).await.unwrap();
    assert_eq!(storage.list(KeyPrefix::Staging).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_missing_bucket_or_a_dead_endpoint_is_reported_at_connect() {
    let moto = MotoS3::start().await;
    let quick = S3Options {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(2),
        retry: nixery::storage::retry_policy::RetryPolicy {
            total: Duration::from_secs(4),
            max_retries: 2,
            ..Default::default()
        },
        ..S3Options::default()
    };
    let missing = S3Settings {
        bucket: "no-such-bucket".to_owned(),
        ..moto.settings_at(&moto.origin())
    };
    let error = S3Storage::connect_with(missing, quick.clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("\"no-such-bucket\" is not reachable"),
        "{error}"
    );
    assert!(error.contains("does not exist"), "{error}");

    let port = moto.port();
    drop(moto);
    let dead = support::s3::MotoS3::settings_for_port(port);
    let started = std::time::Instant::now();
    let error = S3Storage::connect_with(dead, quick)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("is not reachable"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[tokio::test]
async fn a_found_blob_is_redirected_again_without_asking_the_bucket() {
    let moto = MotoS3::start().await;
    let storage = moto.storage().await;
    let blob = storage
        .persist_blob(LAYER_TYPE, body_of(pattern(1000, 9), 100))
        .await
        .unwrap();
    let key = StorageKey::layer(&blob.sha256);
    redirect_of(&storage, &key).await;
    // A frozen bucket answers nothing: the redirect is signed locally.
    let warm = moto
        .process()
        .while_frozen(Duration::from_secs(5), redirect_of(&storage, &key))
        .await;
    assert!(
        warm.expect("the warm redirect waited for the bucket")
            .contains("X-Amz-Signature=")
    );
    // The content type is remembered too.
    assert!(matches!(
        serve_as_manifest(&storage, &key).await,
        Err(StorageError::NotFound(_))
    ));
    // Its own deletion is noticed at once.
    storage.delete(&key).await.unwrap();
    assert!(matches!(
        storage.serve(&key, &ServeRequest::default()).await,
        Err(StorageError::NotFound(_))
    ));
}

#[tokio::test]
async fn head_is_answered_from_metadata_never_redirected() {
    let s3 = support::s3::S3sFs::start().await;
    let storage = s3.storage().await;
    support::s3::checks::head_is_answered_from_metadata_never_redirected(&storage).await;
    // Also when the blob is already known (no call to the bucket).
    support::s3::checks::head_is_answered_from_metadata_never_redirected(&storage).await;
}

/// Above the single-copy limit a move cannot be one `CopyObject`, and
/// S3's multipart copy as OpenDAL starts it drops the content type: the
/// moved layer keeps it all the same, and its bytes (checked by s3s-fs's
/// signatures on every call).
#[tokio::test]
async fn a_move_above_the_single_copy_limit_keeps_the_content_type() {
    let s3 = support::s3::S3sFs::start().await;
    let storage = s3
        .storage_with(S3Options {
            part_size: nixery::storage::s3::MIN_PART_SIZE,
            single_copy_limit: nixery::storage::s3::MIN_PART_SIZE,
            ..S3Options::default()
        })
        .await;
    let data = pattern(6 * 1024 * 1024 + 17, 27);
    let blob = storage
        .persist_blob(LAYER_TYPE, body_of(data.clone(), 1 << 20))
        .await
        .expect("a blob above the limit is stored");
    let key = StorageKey::layer(&blob.sha256);
    let stat = storage.stat(&key).await.expect("moved");
    assert_eq!(stat.content_type.as_deref(), Some(LAYER_TYPE));
    assert_eq!(stat.size, data.len() as u64);
    let stored = read_whole(&storage, &key).await;
    assert_eq!(sha256_hex(&stored), sha256_hex(&data));
    assert!(storage.list(KeyPrefix::Staging).await.unwrap().is_empty());
}
