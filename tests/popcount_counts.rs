//! `nixery popcount` computes the exact popularity map from a binary cache,
//! reports malformed narinfos and 404s without aborting, reads xz lists and
//! keeps at most `--concurrency` requests in flight.

use std::io::Write;
use std::sync::atomic::Ordering;

use support::popcount::{
    EXPECTED, GONE, MALFORMED, hash, popcount, start, store_path_list, text, write_list,
};

#[tokio::test]
async fn counts_references_and_survives_malformed_narinfo_and_404() {
    let cache = start().await;
    let dir = tempfile::tempdir().unwrap();
    let list = write_list(dir.path());
    let output = popcount(&cache, &list, &dir.path().join("cache"), &[]).await;
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "stderr: {stderr}");
    assert_eq!(stdout.trim_end(), EXPECTED);
    // Both problems are named, with their counts in the final summary.
    for said in [
        format!("malformed narinfo: {}-{MALFORMED}", hash(7)),
        "required field `NarHash` is missing".to_owned(),
        format!("missing (404): {}-{GONE}", hash(8)),
        "1 malformed, 1 missing (404), 0 failed".to_owned(),
    ] {
        assert!(stderr.contains(&said), "{said:?} not in: {stderr}");
    }
    // One request per listed path, nothing more.
    assert_eq!(cache.stats.requests.load(Ordering::SeqCst), 9);
}

#[tokio::test]
async fn xz_list_gives_the_same_map_as_plain() {
    let cache = start().await;
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("store-paths.xz");
    let mut encoder = xz2::write::XzEncoder::new(Vec::new(), 6);
    encoder.write_all(store_path_list().as_bytes()).unwrap();
    std::fs::write(&list, encoder.finish().unwrap()).unwrap();
    let out = dir.path().join("popularity.json");
    let output = popcount(
        &cache,
        &list,
        &dir.path().join("cache"),
        &["--output", out.to_str().unwrap()],
    )
    .await;
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "stderr: {stderr}");
    assert!(stdout.is_empty(), "map went to stdout despite --output");
    assert_eq!(std::fs::read_to_string(&out).unwrap().trim_end(), EXPECTED);
}

#[tokio::test]
async fn concurrency_limit_bounds_requests_in_flight() {
    let cache = start().await;
    cache.stats.delay_ms.store(300, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let list = write_list(dir.path());
    let output = popcount(
        &cache,
        &list,
        &dir.path().join("cache"),
        &["--concurrency", "3"],
    )
    .await;
    assert!(output.status.success(), "stderr: {}", text(&output).1);
    // With every answer held back 300 ms, the client fills its 3 slots
    // and never opens a 4th.
    assert_eq!(cache.stats.max_in_flight.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn unreadable_list_fails_with_a_message() {
    let cache = start().await;
    let dir = tempfile::tempdir().unwrap();
    let output = popcount(
        &cache,
        &dir.path().join("does-not-exist"),
        &dir.path().join("cache"),
        &[],
    )
    .await;
    let (_, stderr) = text(&output);
    assert!(!output.status.success());
    assert!(stderr.contains("does-not-exist"), "{stderr}");
    assert_eq!(cache.stats.requests.load(Ordering::SeqCst), 0);
}
