//! `nixery popcount` keeps every definite answer on disk: a rerun makes no
//! requests, and a transient failure is neither cached nor written out.

use std::sync::atomic::Ordering;

use support::popcount::{EXPECTED, hash, popcount, start, text, write_list};

#[tokio::test]
async fn rerun_makes_no_requests_and_gives_the_same_map() {
    let cache = start().await;
    let dir = tempfile::tempdir().unwrap();
    let list = write_list(dir.path());
    let cache_dir = dir.path().join("cache");
    let first = popcount(&cache, &list, &cache_dir, &[]).await;
    assert!(first.status.success(), "stderr: {}", text(&first).1);
    assert_eq!(cache.stats.requests.load(Ordering::SeqCst), 9);

    cache.stats.requests.store(0, Ordering::SeqCst);
    let second = popcount(&cache, &list, &cache_dir, &[]).await;
    let (stdout, stderr) = text(&second);
    assert!(second.status.success(), "stderr: {stderr}");
    assert_eq!(cache.stats.requests.load(Ordering::SeqCst), 0);
    assert_eq!(stdout.trim_end(), EXPECTED);
    // The cached malformed narinfo and 404 are still reported.
    assert!(stderr.contains("9 from disk cache"), "{stderr}");
    assert!(
        stderr.contains("1 malformed, 1 missing (404), 0 failed"),
        "{stderr}"
    );
}

#[tokio::test]
async fn transient_failure_writes_no_map_and_only_it_is_retried() {
    let cache = start().await;
    cache.stats.failing.lock().unwrap().push(hash(2));
    let dir = tempfile::tempdir().unwrap();
    let list = write_list(dir.path());
    let cache_dir = dir.path().join("cache");
    let out = dir.path().join("popularity.json");
    let args = ["--output", out.to_str().unwrap()];

    let first = popcount(&cache, &list, &cache_dir, &args).await;
    let (_, stderr) = text(&first);
    assert!(!first.status.success());
    assert!(
        stderr.contains(&format!("failed: {}-openssl-3.3", hash(2))),
        "{stderr}"
    );
    assert!(stderr.contains("500"), "{stderr}");
    assert!(!out.exists(), "an incomplete map was written");

    cache.stats.failing.lock().unwrap().clear();
    cache.stats.requests.store(0, Ordering::SeqCst);
    let second = popcount(&cache, &list, &cache_dir, &args).await;
    assert!(second.status.success(), "stderr: {}", text(&second).1);
    assert_eq!(cache.stats.requests.load(Ordering::SeqCst), 1);
    assert_eq!(std::fs::read_to_string(&out).unwrap().trim_end(), EXPECTED);
}

#[tokio::test]
async fn separate_cache_urls_do_not_share_entries() {
    let first_cache = start().await;
    let second_cache = start().await;
    let dir = tempfile::tempdir().unwrap();
    let list = write_list(dir.path());
    let cache_dir = dir.path().join("cache");
    assert!(
        popcount(&first_cache, &list, &cache_dir, &[])
            .await
            .status
            .success()
    );
    assert!(
        popcount(&second_cache, &list, &cache_dir, &[])
            .await
            .status
            .success()
    );
    assert_eq!(second_cache.stats.requests.load(Ordering::SeqCst), 9);
}
