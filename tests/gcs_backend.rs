//! The GCS backend keeps the `Storage` contract against a real emulator
//! (fake-gcs-server): streaming resumable uploads with correct digests and
//! content types, not-found as a distinct error, retry-safe moves, and
//! redirects that download the same bytes.

use nixery::digest::Digest;
use nixery::storage::gcs::{CHUNK_GRANULARITY, GcsOptions, GcsStorage};
use nixery::storage::{ServeRequest, Served, Storage, StorageError, StorageKey};
use support::gcs::checks::serve_as_manifest;
use support::gcs::{BUCKET, FakeGcs, body_of, pattern, read_whole, sha256_hex};
use support::media::DOCKER_LAYER as LAYER_TYPE;

#[tokio::test]
async fn multi_megabyte_layer_roundtrips_through_resumable_upload() {
    let gcs = FakeGcs::start().await;
    // Small chunks force many 308 continuations on a few MB.
    let options = GcsOptions {
        chunk_size: 2 * CHUNK_GRANULARITY,
        ..GcsOptions::default()
    };
    let storage = gcs.storage_with(options).await;
    let data = pattern(5 * 1024 * 1024 + 12_345, 1);
    let key = StorageKey::layer(&Digest::of(&data));

    let persisted = storage
        .persist(&key, LAYER_TYPE, body_of(data.clone(), 100_000))
        .await
        .unwrap();

    assert_eq!(persisted.sha256.hex(), sha256_hex(&data));
    assert_eq!(persisted.size, data.len() as u64);
    let fetched = read_whole(&storage, &key).await;
    assert!(fetched == data, "fetched bytes differ from persisted bytes");
    let metadata = gcs.object_metadata(key.as_str()).await.unwrap();
    assert_eq!(metadata["contentType"], LAYER_TYPE);
    assert_eq!(metadata["size"], data.len().to_string());
}

#[tokio::test]
async fn layer_larger_than_default_chunk_roundtrips() {
    let (_gcs, storage) = FakeGcs::start_with_storage().await;
    let data = pattern(GcsOptions::default().chunk_size * 2 + 1, 2);
    let key = StorageKey::staging("big-upload").unwrap();

    let persisted = storage
        .persist(&key, LAYER_TYPE, body_of(data.clone(), 1 << 20))
        .await
        .unwrap();

    assert_eq!(persisted.sha256.hex(), sha256_hex(&data));
    let fetched = read_whole(&storage, &key).await;
    assert_eq!(sha256_hex(&fetched), persisted.sha256.hex());
}

#[tokio::test]
async fn small_object_is_stored_with_its_content_type() {
    let (gcs, storage) = FakeGcs::start_with_storage().await;
    let key = StorageKey::build("some-layer-key").unwrap();
    let record = br#"{"digest":"sha256:00","size":1}"#.to_vec();

    let persisted = storage
        .persist(&key, "application/json", body_of(record.clone(), 7))
        .await
        .unwrap();

    assert_eq!(persisted.size, record.len() as u64);
    let metadata = gcs.object_metadata(key.as_str()).await.unwrap();
    assert_eq!(metadata["contentType"], "application/json");
    assert_eq!(read_whole(&storage, &key).await, record);
}

#[tokio::test]
async fn empty_object_persists_with_the_empty_digest() {
    let (_gcs, storage) = FakeGcs::start_with_storage().await;
    let key = StorageKey::manifest("empty").unwrap();

    let persisted = storage
        .persist(&key, "application/json", body_of(Vec::new(), 1))
        .await
        .unwrap();

    assert_eq!(persisted.sha256.hex(), sha256_hex(b""));
    assert_eq!(persisted.size, 0);
    assert!(read_whole(&storage, &key).await.is_empty());
}

#[tokio::test]
async fn persist_replaces_an_existing_object() {
    let (_gcs, storage) = FakeGcs::start_with_storage().await;
    let key = StorageKey::manifest("replaced").unwrap();
    support::gcs::put(&storage, &key, "application/json", b"old", 3).await;

    support::gcs::put(&storage, &key, "application/json", b"new!", 3).await;

    assert_eq!(read_whole(&storage, &key).await, b"new!");
}

#[tokio::test]
async fn fetch_of_absent_object_is_not_found() {
    let (_gcs, storage) = FakeGcs::start_with_storage().await;
    let key = StorageKey::manifest("never-written").unwrap();

    let result = storage.fetch(&key).await;

    assert!(matches!(result, Err(StorageError::NotFound(k)) if k == key));
}

#[tokio::test]
async fn move_renames_and_a_retried_move_still_succeeds() {
    let (gcs, storage) = FakeGcs::start_with_storage().await;
    let data = pattern(300_000, 3);
    let staging = StorageKey::staging("upload-1").unwrap();
    let layer = StorageKey::layer(&Digest::of(&data));
    support::gcs::put(&storage, &staging, LAYER_TYPE, &data, 65_536).await;

    storage.move_object(&staging, &layer).await.unwrap();

    support::gcs::assert_absent(&storage, &staging).await;
    let moved = read_whole(&storage, &layer).await;
    assert!(moved == data, "moved object differs");
    let metadata = gcs.object_metadata(layer.as_str()).await.unwrap();
    assert_eq!(metadata["contentType"], LAYER_TYPE);

    // The caller may retry after losing the first answer.
    storage.move_object(&staging, &layer).await.unwrap();
    let again = read_whole(&storage, &layer).await;
    assert!(again == data, "retried move changed the object");
}

#[tokio::test]
async fn move_replaces_an_existing_destination() {
    let (_gcs, storage) = FakeGcs::start_with_storage().await;
    let from = StorageKey::staging("second").unwrap();
    let to = StorageKey::manifest("target").unwrap();
    support::gcs::put(&storage, &to, "application/json", b"first", 5).await;
    support::gcs::put(&storage, &from, "application/json", b"second", 5).await;

    storage.move_object(&from, &to).await.unwrap();

    assert_eq!(read_whole(&storage, &to).await, b"second");
}

#[tokio::test]
async fn move_of_absent_source_without_destination_is_not_found() {
    let (_gcs, storage) = FakeGcs::start_with_storage().await;
    let from = StorageKey::staging("ghost").unwrap();
    let to = StorageKey::manifest("ghost").unwrap();

    let result = storage.move_object(&from, &to).await;

    assert!(matches!(result, Err(StorageError::NotFound(k)) if k == from));
}

#[tokio::test]
async fn serve_redirects_to_the_public_url_which_downloads_the_same_bytes() {
    let (gcs, storage) = FakeGcs::start_with_storage().await;
    let data = pattern(700_000, 4);
    let key = StorageKey::layer(&Digest::of(&data));
    support::gcs::put(&storage, &key, LAYER_TYPE, &data, 65_536).await;

    let served = storage.serve(&key, &ServeRequest::default()).await.unwrap();

    let Served::Redirect { location } = served else {
        panic!("expected a redirect");
    };
    assert_eq!(location, format!("{}/{BUCKET}/{key}", gcs.origin()));
    let response = reqwest::get(&location).await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let downloaded = response.bytes().await.unwrap();
    assert_eq!(sha256_hex(&downloaded), sha256_hex(&data));
}

#[tokio::test]
async fn head_is_answered_from_metadata_never_redirected() {
    let (_gcs, storage) = FakeGcs::start_with_storage().await;
    support::gcs::checks::head_is_answered_from_metadata_never_redirected(&storage).await;
}

#[tokio::test]
async fn serve_of_absent_blob_is_not_found() {
    let (_gcs, storage) = FakeGcs::start_with_storage().await;
    let key = StorageKey::layer(&Digest::of(b"absent"));

    let result = storage.serve(&key, &ServeRequest::default()).await;

    assert!(matches!(result, Err(StorageError::NotFound(_))));
}

#[tokio::test]
async fn emulator_host_given_as_url_is_accepted() {
    let gcs = FakeGcs::start().await;

    let storage = GcsStorage::connect(BUCKET.to_owned(), None, Some(format!("{}/", gcs.origin())))
        .await
        .unwrap();

    let key = StorageKey::manifest("via-url").unwrap();
    support::gcs::put(&storage, &key, "application/json", b"{}", 2).await;
    assert!(gcs.object_metadata(key.as_str()).await.is_some());
}

#[tokio::test]
async fn connect_fails_clearly_when_the_bucket_does_not_exist() {
    let gcs = FakeGcs::start().await;

    let error = GcsStorage::connect("no-such-bucket".to_owned(), None, Some(gcs.host()))
        .await
        .unwrap_err()
        .to_string();

    assert!(error.contains("no-such-bucket"), "{error}");
    assert!(error.contains("does not exist"), "{error}");
}

#[tokio::test]
async fn connect_fails_clearly_when_the_emulator_is_down() {
    let mut gcs = FakeGcs::start().await;
    gcs.kill();

    let error = GcsStorage::connect(BUCKET.to_owned(), None, Some(gcs.host()))
        .await
        .unwrap_err()
        .to_string();

    assert!(error.contains("not reachable"), "{error}");
    assert!(error.contains(&gcs.host()), "{error}");
}

#[tokio::test]
async fn persist_sends_chunks_before_the_body_has_ended() {
    let (gcs, proxy) = FakeGcs::start_behind_proxy().await;
    let chunk_size = 2 * CHUNK_GRANULARITY;
    let options = GcsOptions {
        chunk_size,
        ..GcsOptions::default()
    };
    let storage = GcsStorage::connect_with(BUCKET.to_owned(), None, Some(proxy.host()), options)
        .await
        .unwrap();
    let data = pattern(6 * 1024 * 1024, 5);
    let gate_at = 4 * 1024 * 1024;
    let (body, reached, resume) = support::gcs::gated_body(data.clone(), 64 * 1024, gate_at);
    let key = StorageKey::layer(&Digest::of(&data));

    let upload = tokio::spawn({
        let storage = storage.clone();
        let key = key.clone();
        async move { storage.persist(&key, LAYER_TYPE, body).await }
    });
    reached.await.unwrap();
    let on_the_wire = proxy.client_bytes();
    let visible_mid_upload = gcs.object_metadata(key.as_str()).await;
    resume.send(()).unwrap();
    let persisted = upload.await.unwrap().unwrap();

    // All whole chunks before the gate were on the wire while the body was
    // still open: the layer is streamed, not collected first.
    assert!(
        on_the_wire >= (gate_at - chunk_size) as u64,
        "only {on_the_wire} bytes sent after {gate_at} bytes were read"
    );
    assert!(
        visible_mid_upload.is_none(),
        "object visible before its upload completed"
    );
    assert_eq!(persisted.sha256.hex(), sha256_hex(&data));
    assert!(read_whole(&storage, &key).await == data);
}

#[tokio::test]
async fn objects_are_listed_under_their_prefix_with_their_bytes() {
    let (gcs, storage) = FakeGcs::start_with_storage().await;
    let record = StorageKey::build("abc").unwrap();
    let manifest = StorageKey::manifest("abc").unwrap();
    support::gcs::put(&storage, &record, "application/json", b"{\"r\":1}", 3).await;
    support::gcs::put(&storage, &manifest, "application/json", b"{}", 3).await;

    // The helpers the end-to-end tests inspect the bucket with.
    assert_eq!(
        gcs.object_names("builds/").await,
        vec!["builds/abc".to_owned()]
    );
    assert_eq!(gcs.object_bytes("builds/abc").await.unwrap(), b"{\"r\":1}");
    assert!(gcs.object_bytes("builds/none").await.is_none());
}

#[tokio::test]
async fn serve_with_a_required_content_type_refuses_other_objects() {
    let (_gcs, storage) = FakeGcs::start_with_storage().await;
    let layer = StorageKey::layer(&Digest::of(b"layer"));
    support::gcs::put(&storage, &layer, LAYER_TYPE, b"layer", 5).await;
    assert!(matches!(
        serve_as_manifest(&storage, &layer).await,
        Err(StorageError::NotFound(_))
    ));
    let manifest = StorageKey::layer(&Digest::of(b"{}"));
    support::gcs::put(&storage, &manifest, MANIFEST_TYPE_FOR_TESTS, b"{}", 2).await;
    assert!(matches!(
        serve_as_manifest(&storage, &manifest).await,
        Ok(Served::Redirect { .. })
    ));
}

const MANIFEST_TYPE_FOR_TESTS: &str = support::server::MANIFEST_V2;

#[tokio::test]
async fn staging_clean_up_removes_old_objects_and_keeps_recent_ones() {
    let (gcs, storage) = FakeGcs::start_with_storage().await;
    // Staging names carry their owner and start time (unix nanos).
    let [old, recent, foreign, layer] =
        support::gcs::checks::staging_sweep_removes_stale_names_only(&storage).await;
    assert!(gcs.object_metadata(old.as_str()).await.is_none());
    for kept in [&recent, &foreign, &layer] {
        assert!(gcs.object_metadata(kept.as_str()).await.is_some(), "{kept}");
    }
}
