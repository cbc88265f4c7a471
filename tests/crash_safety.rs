//! An interrupted `persist` (process killed, or future dropped) never leaves
//! an object under its final key, never damages the object already there,
//! and its temporary file is gone after the next start-up.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::StreamExt;
use nixery::digest::Digest;
use nixery::storage::{ByteStream, Storage, StorageKey, filesystem::FilesystemStorage};

const CHILD_DIR_VAR: &str = "NIXERY_TEST_CRASH_CHILD_DIR";
/// A fixed layer key (any 64 hex digits): the child never completes it.
const KEY_HEX: &str = "ab00000000000000000000000000000000000000000000000000000000000001";
const CHUNK: usize = 256 * 1024;

/// A body that yields `chunks` chunks, reports on stdout once they were
/// handed over, then never ends (as a stalled upload would).
fn endless_body(chunks: usize, announce: bool) -> ByteStream {
    let data = futures::stream::iter((0..chunks).map(|_| Ok(Bytes::from(vec![0x5a; CHUNK]))));
    let marker = futures::stream::once(async move {
        if announce {
            println!("WRITING");
        }
        Ok(Bytes::from_static(b"!"))
    });
    Box::pin(data.chain(marker).chain(futures::stream::pending()))
}

fn names(dir: &Path) -> Vec<String> {
    support::dir_names(dir)
}

/// Run by `killed_writer_leaves_no_object_under_its_key` in a child
/// process (this same test binary); does nothing when run directly.
#[tokio::test]
#[ignore = "helper process of killed_writer_leaves_no_object_under_its_key"]
async fn crash_child_writer() {
    let Ok(dir) = std::env::var(CHILD_DIR_VAR) else {
        return;
    };
    let storage = FilesystemStorage::new(dir).unwrap();
    let key = StorageKey::layer(&Digest::parse_hex(KEY_HEX).unwrap());
    let _ = storage
        .persist(&key, "application/octet-stream", endless_body(8, true))
        .await;
    unreachable!("the body never ends");
}

#[tokio::test]
async fn killed_writer_leaves_no_object_under_its_key() {
    let dir = tempfile::tempdir().unwrap();
    FilesystemStorage::new(dir.path()).unwrap();
    let layers = dir.path().join("layers");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child_writer", "--ignored", "--nocapture"])
        .env(CHILD_DIR_VAR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let announced = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("WRITING"));
    assert!(announced, "the child never started writing");
    // Wait until the chunks handed over have reached the temporary file.
    let deadline = Instant::now() + Duration::from_secs(30);
    let temp = loop {
        let temp = names(&layers).into_iter().find(|n| n.starts_with(".tmp~"));
        if let Some(t) = temp
            && std::fs::metadata(layers.join(&t)).unwrap().len() >= (8 * CHUNK) as u64
        {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "no partial temporary file appeared"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    child.kill().unwrap();
    child.wait().unwrap();

    // Mid-write: the partial data exists only under the temporary name.
    assert_eq!(names(&layers), vec![temp]);
    let storage = FilesystemStorage::new(dir.path()).unwrap();
    assert!(
        names(&layers).is_empty(),
        "stale temporary file survived start-up"
    );
    let key = StorageKey::layer(&Digest::parse_hex(KEY_HEX).unwrap());
    support::net::bodies::assert_absent(&storage, &key).await;
}

#[tokio::test]
async fn dropped_persist_keeps_the_previous_object_and_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FilesystemStorage::new(dir.path()).unwrap();
    let key = StorageKey::manifest("cache-key").unwrap();
    let old: ByteStream = Box::pin(futures::stream::iter([Ok(Bytes::from_static(b"old"))]));
    storage.persist(&key, "text/plain", old).await.unwrap();

    let interrupted = tokio::time::timeout(
        Duration::from_millis(300),
        storage.persist(&key, "text/plain", endless_body(4, false)),
    )
    .await;
    assert!(interrupted.is_err(), "persist of an endless body completed");

    assert_eq!(
        support::net::bodies::read_whole(&storage, &key).await,
        b"old"
    );
    let manifests = dir.path().join("manifests");
    assert_eq!(names(&manifests), [".meta~cache-key", "cache-key"]);

    let fresh = StorageKey::manifest("fresh").unwrap();
    let _ = tokio::time::timeout(
        Duration::from_millis(300),
        storage.persist(&fresh, "text/plain", endless_body(4, false)),
    )
    .await;
    support::net::bodies::assert_absent(&storage, &fresh).await;
    assert_eq!(names(&manifests), [".meta~cache-key", "cache-key"]);
}
