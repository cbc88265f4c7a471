//! Blobs placed through the storage API are served by the real server with
//! the registry headers, for full GETs, HEADs and byte ranges; content types
//! survive a restart; manifests by digest carry the manifest media type.

use reqwest::{StatusCode, header};
use support::media::{DOCKER_LAYER as LAYER_TYPE, DOCKER_MANIFEST as MANIFEST_TYPE};
use support::server::{TestServer, put_blob, sha256_hex};

/// Deterministic, non-repeating-looking test content of `len` bytes.
fn content(len: usize) -> Vec<u8> {
    support::net::bodies::pattern(len, 0x9e37_79b9)
}

/// `HEAD /v2/x/blobs/<digest>` as raw bytes off the socket (to see that
/// no body follows).
fn raw_head(server: &TestServer, digest: &str) -> support::server::Answer {
    let target = format!("/v2/x/blobs/{digest}");
    support::server::raw_request(server.addr(), "HEAD", target.as_bytes())
}

fn assert_registry_headers(r: &reqwest::Response, digest: &str) {
    let h = r.headers();
    assert_eq!(h["docker-content-digest"], digest);
    assert_eq!(h[header::ETAG], format!("\"{digest}\""));
    assert_eq!(h["docker-distribution-api-version"], "registry/2.0");
}

/// GET `url` with header `Range: range`.
async fn get_range(client: &reqwest::Client, url: &str, range: &str) -> reqwest::Response {
    client
        .get(url)
        .header(header::RANGE, range)
        .send()
        .await
        .unwrap()
}

/// `Range: range` of the blob `digest` at `url` (holding `bytes`) is
/// answered 206 with bytes `start..=end` and the registry headers.
async fn assert_partial(
    client: &reqwest::Client,
    url: &str,
    digest: &str,
    bytes: &[u8],
    range: &str,
    (start, end): (usize, usize),
) {
    let r = get_range(client, url, range).await;
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{range}");
    assert_registry_headers(&r, digest);
    assert_eq!(
        r.headers()[header::CONTENT_RANGE],
        format!("bytes {start}-{end}/{}", bytes.len()),
        "{range}"
    );
    assert_eq!(
        r.headers()[header::CONTENT_LENGTH],
        (end - start + 1).to_string()
    );
    assert_eq!(r.bytes().await.unwrap(), &bytes[start..=end], "{range}");
}

#[tokio::test]
async fn full_get_streams_the_blob_with_registry_headers() {
    let server = TestServer::start();
    let bytes = content(3 * 1024 * 1024 + 17);
    let digest = put_blob(&server.storage(), &bytes, LAYER_TYPE).await;
    let r = reqwest::get(server.url(&format!("/v2/any/name/blobs/{digest}")))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_registry_headers(&r, &digest);
    assert_eq!(r.headers()[header::CONTENT_TYPE], LAYER_TYPE);
    assert_eq!(r.headers()[header::CONTENT_LENGTH], bytes.len().to_string());
    assert_eq!(r.headers()[header::ACCEPT_RANGES], "bytes");
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len(), bytes.len());
    assert_eq!(format!("sha256:{}", sha256_hex(&body)), digest);
}

#[tokio::test]
async fn head_sends_the_headers_without_a_body() {
    let server = TestServer::start();
    let bytes = content(4096);
    let digest = put_blob(&server.storage(), &bytes, "application/octet-stream").await;
    let r = raw_head(&server, &digest);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("4096"));
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert!(
        r.body.is_empty(),
        "HEAD returned {} body bytes",
        r.body.len()
    );
}

#[tokio::test]
async fn ranges_are_served_as_206_with_content_range() {
    let server = TestServer::start();
    let bytes = content(1000);
    let digest = put_blob(&server.storage(), &bytes, LAYER_TYPE).await;
    let url = server.url(&format!("/v2/x/blobs/{digest}"));
    let client = reqwest::Client::new();
    for (range, start, end) in [
        ("bytes=0-0", 0, 0),
        ("bytes=10-19", 10, 19),
        ("bytes=990-", 990, 999),
        ("bytes=-5", 995, 999),
        ("bytes=900-5000", 900, 999),
        ("bytes=-5000", 0, 999),
    ] {
        assert_partial(&client, &url, &digest, &bytes, range, (start, end)).await;
    }
    // Forms this server does not honour get the whole blob.
    for range in ["bytes=0-1,5-6", "lines=1-2", "bytes=a-2"] {
        let r = get_range(&client, &url, range).await;
        assert_eq!(r.status(), StatusCode::OK, "{range}");
        assert_eq!(r.bytes().await.unwrap().len(), 1000);
    }
}

#[tokio::test]
async fn unsatisfiable_range_is_416_with_the_length() {
    let server = TestServer::start();
    let digest = put_blob(&server.storage(), &content(100), LAYER_TYPE).await;
    let url = server.url(&format!("/v2/x/blobs/{digest}"));
    // An inverted range too, as the distribution-spec conformance suite
    // requires.
    for range in ["bytes=100-", "bytes=500-600", "bytes=-0", "bytes=9-2"] {
        let r = get_range(&reqwest::Client::new(), &url, range).await;
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(r.headers()[header::CONTENT_RANGE], "bytes */100");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "RANGE_INVALID");
    }
}

#[tokio::test]
async fn content_type_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = TestServer::builder().storage_path(dir.path()).start();
    let digest = put_blob(
        &first.storage(),
        b"config json",
        "application/x-custom+json",
    )
    .await;
    assert!(first.stop().success());
    let second = TestServer::builder().storage_path(dir.path()).start();
    let r = reqwest::get(second.url(&format!("/v2/x/blobs/{digest}")))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()[header::CONTENT_TYPE],
        "application/x-custom+json"
    );
    assert_eq!(r.bytes().await.unwrap(), &b"config json"[..]);
}

#[tokio::test]
async fn manifest_by_digest_has_the_manifest_media_type() {
    let server = TestServer::start();
    let manifest = br#"{"schemaVersion":2}"#;
    let digest = put_blob(&server.storage(), manifest, MANIFEST_TYPE).await;
    let url = server.url(&format!("/v2/shell/manifests/{digest}"));
    let r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_registry_headers(&r, &digest);
    assert_eq!(r.headers()[header::CONTENT_TYPE], MANIFEST_TYPE);
    assert_eq!(
        r.headers()[header::CONTENT_LENGTH],
        manifest.len().to_string()
    );
    assert_eq!(r.bytes().await.unwrap(), &manifest[..]);
    let head = reqwest::Client::new().head(&url).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()[header::CONTENT_TYPE], MANIFEST_TYPE);
    assert_eq!(
        head.headers()[header::CONTENT_LENGTH],
        manifest.len().to_string()
    );
}

#[tokio::test]
async fn manifest_by_digest_refuses_objects_that_are_not_manifests() {
    let server = TestServer::start();
    // A layer, a config and an untyped object: all stored, none a manifest.
    for (bytes, content_type) in [
        (&b"\x1f\x8b layer bytes"[..], LAYER_TYPE),
        (
            &br#"{"architecture":"amd64"}"#[..],
            "application/vnd.docker.container.image.v1+json",
        ),
        (&br#"{"schemaVersion":2}"#[..], "application/octet-stream"),
    ] {
        let digest = put_blob(&server.storage(), bytes, content_type).await;
        let client = reqwest::Client::new();
        for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
            let url = server.url(&format!("/v2/shell/manifests/{digest}"));
            let r = client.request(method.clone(), &url).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{method} {content_type}");
            if method == reqwest::Method::GET {
                let body: serde_json::Value = r.json().await.unwrap();
                assert_eq!(
                    body["errors"][0]["code"], "MANIFEST_UNKNOWN",
                    "{content_type}"
                );
            }
        }
        // The same object is still served as a blob.
        let path = format!("/v2/shell/blobs/{digest}");
        server.get(&path).expect_status_async(200).await;
    }
}

#[tokio::test]
async fn serve_subcommand_flags_override_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::builder()
        .arg("serve")
        .arg("--storage-path")
        .arg(dir.path().to_str().unwrap())
        .start();
    let digest = put_blob(&server.storage(), b"x", "text/plain").await;
    // The flag wins over STORAGE_PATH from the environment: the blob placed
    // under the flag's directory is served.
    let path = format!("/v2/x/blobs/{digest}");
    server.get(&path).expect_status_async(404).await;
    let flagged = nixery::storage::filesystem::FilesystemStorage::new(dir.path()).unwrap();
    let digest = put_blob(&flagged, b"y", "text/plain").await;
    let path = format!("/v2/x/blobs/{digest}");
    server.get(&path).expect_status_async(200).await;
}

#[tokio::test]
async fn ranges_and_head_of_a_large_blob_are_exact_across_read_chunks() {
    let server = TestServer::start();
    let mib = 1024 * 1024;
    let bytes = content(3 * mib + 17);
    let digest = put_blob(&server.storage(), &bytes, LAYER_TYPE).await;
    let url = server.url(&format!("/v2/x/blobs/{digest}"));
    let client = reqwest::Client::new();
    let len = bytes.len();
    for (range, start, end) in [
        (format!("bytes={}-{}", mib - 3, mib + 2), mib - 3, mib + 2),
        (format!("bytes={mib}-"), mib, len - 1),
        (format!("bytes=1-{}", 2 * mib), 1, 2 * mib),
        ("bytes=-1".to_owned(), len - 1, len - 1),
        (
            format!("bytes={}-{}", 2 * mib - 1, 2 * mib - 1),
            2 * mib - 1,
            2 * mib - 1,
        ),
    ] {
        let r = get_range(&client, &url, &range).await;
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            r.headers()[header::CONTENT_RANGE],
            format!("bytes {start}-{end}/{len}"),
            "{range}"
        );
        assert_eq!(r.bytes().await.unwrap(), &bytes[start..=end], "{range}");
    }
    let r = raw_head(&server, &digest);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(len.to_string().as_str()));
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn a_small_object_once_fetched_is_served_from_memory_with_the_same_answers() {
    let server = TestServer::start();
    let bytes = content(1000);
    let digest = put_blob(&server.storage(), &bytes, "application/x-config+json").await;
    let url = server.url(&format!("/v2/x/blobs/{digest}"));
    let client = reqwest::Client::new();
    let first = client.get(&url).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.bytes().await.unwrap(), &bytes[..]);
    // Gone from storage, the object is still served, from memory.
    let hex = digest.trim_start_matches("sha256:");
    std::fs::remove_file(server.storage_path().join("layers").join(hex)).unwrap();
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_registry_headers(&r, &digest);
    assert_eq!(
        r.headers()[header::CONTENT_TYPE],
        "application/x-config+json"
    );
    assert_eq!(r.headers()[header::CONTENT_LENGTH], "1000");
    assert_eq!(r.headers()[header::ACCEPT_RANGES], "bytes");
    assert_eq!(r.bytes().await.unwrap(), &bytes[..]);
    for (range, start, end) in [
        ("bytes=10-19", 10, 19),
        ("bytes=-5", 995, 999),
        ("bytes=990-5000", 990, 999),
    ] {
        assert_partial(&client, &url, &digest, &bytes, range, (start, end)).await;
    }
    let r = get_range(&client, &url, "bytes=1000-").await;
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers()[header::CONTENT_RANGE], "bytes */1000");
    let head = raw_head(&server, &digest);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("1000"));
    assert!(head.body.is_empty());
    // The manifest route does not serve it from memory either: it is not
    // stored as a manifest.
    let r = client
        .get(server.url(&format!("/v2/x/manifests/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "MANIFEST_UNKNOWN");
    // A manifest, once fetched, is answered from memory on the manifest
    // route, with the manifest type and no ranges.
    let manifest = br#"{"schemaVersion":2}"#;
    let digest = put_blob(&server.storage(), manifest, MANIFEST_TYPE).await;
    let url = server.url(&format!("/v2/x/manifests/{digest}"));
    assert_eq!(
        client.get(&url).send().await.unwrap().status(),
        StatusCode::OK
    );
    let hex = digest.trim_start_matches("sha256:");
    std::fs::remove_file(server.storage_path().join("layers").join(hex)).unwrap();
    let r = get_range(&client, &url, "bytes=0-9").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CONTENT_TYPE], MANIFEST_TYPE);
    assert_eq!(r.bytes().await.unwrap(), &manifest[..]);
}

#[tokio::test]
async fn head_is_answered_from_metadata_never_redirected() {
    let dir = tempfile::tempdir().unwrap();
    let storage = nixery::storage::filesystem::FilesystemStorage::new(dir.path()).unwrap();
    support::net::checks::head_is_answered_from_metadata_never_redirected(&storage).await;
}
