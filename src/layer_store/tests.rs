use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use super::*;
use crate::storage::small_object::read_bounded;

#[tokio::test]
async fn keyed_lock_serialises_same_key_only() {
    let locks = Arc::new(KeyedLocks::default());
    let first = locks.lock("a").await;
    // A different key is free.
    let other = tokio::time::timeout(Duration::from_millis(100), locks.lock("b")).await;
    assert!(other.is_ok());
    // The same key waits until the first guard is dropped.
    let waiter = {
        let locks = locks.clone();
        tokio::spawn(async move { locks.lock("a").await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished());
    drop(first);
    assert!(
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .is_ok()
    );
}

fn filesystem_store() -> (tempfile::TempDir, Arc<dyn Storage>, LayerStore) {
    let dir = tempfile::tempdir().unwrap();
    let storage: Arc<dyn Storage> =
        Arc::new(crate::storage::filesystem::FilesystemStorage::new(dir.path()).unwrap());
    let store = LayerStore::new(storage.clone(), 2);
    (dir, storage, store)
}

/// A file holding `text` to pack as a layer (kept while the directory lives).
fn layer_file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("layer.tar");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[tokio::test]
async fn corrupt_build_record_is_a_miss() {
    let (_dir, storage, store) = filesystem_store();
    for (name, body) in [
        ("notjson", &b"{not json"[..]),
        (
            "baddigest",
            &br#"{"digest":"../x","size":1,"diff_id":"y"}"#[..],
        ),
    ] {
        let key = StorageKey::build(name).unwrap();
        storage
            .persist(
                &key,
                "application/json",
                bytes_stream(Bytes::from(body.to_vec())),
            )
            .await
            .unwrap();
        assert!(store.record(name).await.unwrap().is_none(), "{name}");
    }
}

/// A record of a 3-byte layer.
fn some_record() -> LayerRecord {
    LayerRecord {
        digest: Digest::parse_hex(&"a".repeat(64)).unwrap(),
        size: 3,
        diff_id: Digest::parse_hex(&"b".repeat(64)).unwrap(),
    }
}

#[tokio::test]
async fn layer_records_round_trip_through_storage() {
    let (_dir, storage, store) = filesystem_store();
    let record = some_record();
    store.put_record("k", &record).await.unwrap();
    // A fresh store on the same storage (a restart) finds it.
    let restarted = LayerStore::new(storage, 1);
    assert_eq!(restarted.record("k").await.unwrap(), Some(record));
}

#[tokio::test]
async fn a_packed_layer_lands_under_its_digest_with_nothing_left_in_staging() {
    let (dir, storage, store) = filesystem_store();
    let (_file_dir, file) = layer_file("layer bytes");
    let stored = store
        .get_or_pack("k", || crate::archive::gzip_file(file))
        .await
        .unwrap();
    let Stored::Packed(record) = stored else {
        panic!("not packed: {stored:?}");
    };
    let key = StorageKey::layer(&record.digest);
    let blob = read_bounded(storage.fetch(&key).await.unwrap(), 1 << 20)
        .await
        .unwrap();
    assert_eq!(Digest::of(&blob), record.digest);
    assert_eq!(blob.len() as u64, record.size);
    let staging: Vec<_> = std::fs::read_dir(dir.path().join("staging"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(staging.is_empty(), "staging not empty: {staging:?}");
    // Recorded: the next call finds it, on this store and after a restart.
    let found = store.get_or_pack("k", || unreachable!()).await.unwrap();
    assert_eq!(found, Stored::Found(record.clone()));
    let restarted = LayerStore::new(storage, 1);
    assert_eq!(restarted.record("k").await.unwrap(), Some(record));
}

#[tokio::test]
async fn concurrent_requests_for_one_layer_pack_it_once() {
    let (_dir, _storage, store) = filesystem_store();
    let store = Arc::new(store);
    let packed = Arc::new(AtomicUsize::new(0));
    let (_file_dir, file) = layer_file("shared layer");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let packed = packed.clone();
            let file = file.clone();
            tokio::spawn(async move {
                store
                    .get_or_pack("shared", move || {
                        packed.fetch_add(1, Ordering::SeqCst);
                        crate::archive::gzip_file(file)
                    })
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut records = Vec::new();
    for task in tasks {
        records.push(task.await.unwrap().record().clone());
    }
    assert_eq!(packed.load(Ordering::SeqCst), 1);
    assert!(records.windows(2).all(|w| w[0] == w[1]));
}

#[tokio::test]
async fn records_in_memory_are_bounded() {
    let (_dir, _storage, store) = filesystem_store();
    let record = some_record();
    for i in 0..MEMORY_RECORDS * 2 {
        store.records.insert(
            format!("k{i}"),
            crate::gc::Stamped::new(record.clone(), crate::gc::Stamp::UNCHECKED),
        );
    }
    assert!(store.records.len() <= MEMORY_RECORDS);
}

#[tokio::test]
async fn a_failing_backend_is_an_error_not_a_miss() {
    let (dir, _storage, store) = filesystem_store();
    // Reading `builds/<key>` now fails with "not a directory".
    std::fs::remove_dir_all(dir.path().join("builds")).unwrap();
    std::fs::write(dir.path().join("builds"), b"").unwrap();
    assert!(store.record("abc").await.is_err());
}

#[tokio::test]
async fn an_absent_entry_is_a_miss() {
    let (_dir, _storage, store) = filesystem_store();
    assert!(store.record("abc").await.unwrap().is_none());
}

#[tokio::test]
async fn records_naming_a_collected_blob_are_forgotten_in_memory_and_storage() {
    let (_dir, storage, store) = filesystem_store();
    let gone = some_record();
    let kept = LayerRecord {
        digest: Digest::parse_hex(&"c".repeat(64)).unwrap(),
        ..some_record()
    };
    store.put_record("gone", &gone).await.unwrap();
    store.put_record("kept", &kept).await.unwrap();
    store.forget_records_naming(&[gone.digest]).await.unwrap();
    assert_eq!(store.record("gone").await.unwrap(), None);
    assert!(matches!(
        storage.stat(&StorageKey::build("gone").unwrap()).await,
        Err(crate::storage::StorageError::NotFound(_))
    ));
    assert_eq!(store.record("kept").await.unwrap(), Some(kept));
}
