//! A storage backend that fails (rather than answering "not found") is an
//! error, not a cache miss: the pull is answered `503 UNAVAILABLE` with
//! `Retry-After` and no Nix build is started. Once storage is back, the
//! same pull builds.

use std::time::Duration;

use support::server::TestServer;
use support::{count_logs, offline_pkgs_repo};

#[test]
fn failing_cache_lookup_is_answered_503_without_running_nix() {
    let (repo, commit) = offline_pkgs_repo();
    let server = TestServer::builder()
        .pkgs_repo(repo.path())
        .env("NIX_TIMEOUT", "120")
        .start();
    // Reading any cached manifest now fails with "not a directory".
    let manifests = server.storage_path().join("manifests");
    std::fs::remove_dir_all(&manifests).unwrap();
    std::fs::write(&manifests, b"").unwrap();

    let path = format!("/v2/hello/manifests/{commit}");
    let response = server
        .get(&path)
        .timeout(Duration::from_secs(120))
        .expect_status(503);
    assert_eq!(response.header("retry-after"), Some("10"));
    let body = response.json();
    assert_eq!(body["errors"][0]["code"], "UNAVAILABLE", "{body}");
    assert_eq!(
        count_logs(&server, "building image"),
        0,
        "Nix ran during a storage failure"
    );

    std::fs::remove_file(&manifests).unwrap();
    std::fs::create_dir(&manifests).unwrap();
    server
        .get(&path)
        .timeout(Duration::from_secs(300))
        .expect_status(200);
    assert_eq!(count_logs(&server, "building image"), 1);
}

#[test]
fn storage_failure_during_a_build_is_on_the_status_page_with_its_kind() {
    let server = TestServer::builder().env("NIX_TIMEOUT", "120").start();
    // Writing any blob now fails with "not a directory".
    let layers = server.storage_path().join("layers");
    std::fs::remove_dir_all(&layers).unwrap();
    std::fs::write(&layers, b"").unwrap();

    let body = server
        .get("/v2/hello/manifests/latest")
        .timeout(Duration::from_secs(300))
        .expect_status(500)
        .json();
    assert_eq!(body["errors"][0]["code"], "MANIFEST_UPLOAD", "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("status page"), "{message}");

    let page = server.get("/").expect_status(200).text();
    assert!(
        page.contains("<code>hello:latest</code> (storage failure)"),
        "{page}"
    );
}
