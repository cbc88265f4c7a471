//! Every error of the pull API answers with the right status, registry
//! error code and JSON body, and every `/v2` response names the API version.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use support::in_process::InProcessServer;
use support::server::TestServer;

const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Send `method path` and return status, the API version header and the
/// registry error code (if the body is one).
async fn call(
    server_url: &str,
    method: Method,
    path: &str,
) -> (
    StatusCode,
    Option<String>,
    Option<(String, String)>,
    reqwest::header::HeaderMap,
) {
    let response = reqwest::Client::new()
        .request(method, format!("{server_url}{path}"))
        .send()
        .await
        .expect("request");
    let status = response.status();
    let headers = response.headers().clone();
    let version = headers
        .get("docker-distribution-api-version")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Option<serde_json::Value> = response.json().await.ok();
    let error = body.and_then(|b| {
        let e = &b["errors"][0];
        Some((
            e["code"].as_str()?.to_owned(),
            e["message"].as_str()?.to_owned(),
        ))
    });
    (status, version, error, headers)
}

/// Assert that `method path` answers `status` with registry code `code` and
/// the API version header.
async fn expect_error(base: &str, method: Method, path: &str, status: u16, code: &str) -> String {
    let (s, version, error, _) = call(base, method.clone(), path).await;
    assert_eq!(s.as_u16(), status, "{method} {path}");
    if path == "/v2" || path.starts_with("/v2/") {
        assert_eq!(version.as_deref(), Some("registry/2.0"), "{method} {path}");
    }
    let (c, message) = error.unwrap_or_else(|| panic!("{method} {path}: no registry error body"));
    assert_eq!(c, code, "{method} {path}");
    message
}

/// [`expect_error`] of a `GET`.
async fn get_error(base: &str, path: &str, status: u16, code: &str) -> String {
    expect_error(base, Method::GET, path, status, code).await
}

#[tokio::test]
async fn version_check_answers_200_with_api_version_header() {
    let server = TestServer::start();
    let base = server.url("");
    for method in [Method::GET, Method::HEAD] {
        for path in ["/v2/", "/v2"] {
            let (status, version, _, _) = call(&base, method.clone(), path).await;
            assert_eq!(status, StatusCode::OK, "{method} {path}");
            assert_eq!(version.as_deref(), Some("registry/2.0"));
        }
    }
}

#[tokio::test]
async fn unknown_blob_is_404_blob_unknown() {
    let server = TestServer::start();
    let base = server.url("");
    let path = format!("/v2/shell/blobs/sha256:{HEX}");
    let message = get_error(&base, &path, 404, "BLOB_UNKNOWN").await;
    assert!(message.contains(HEX), "{message}");
    let (status, version, _, _) = call(&base, Method::HEAD, &path).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(version.as_deref(), Some("registry/2.0"));
}

#[tokio::test]
async fn unknown_manifest_digest_is_404_manifest_unknown() {
    let server = TestServer::start();
    let path = format!("/v2/shell/manifests/sha256:{HEX}");
    expect_error(&server.url(""), Method::GET, &path, 404, "MANIFEST_UNKNOWN").await;
}

#[tokio::test]
async fn malformed_digests_are_400_digest_invalid() {
    let server = TestServer::start();
    let base = server.url("");
    let upper = HEX.to_uppercase();
    let short = &HEX[..63];
    for digest in [
        HEX.to_owned(),
        format!("sha256:{upper}"),
        format!("sha256:{short}"),
        format!("sha256:{HEX}00"),
        format!("sha512:{HEX}"),
        "sha256:".to_owned(),
        "md5:abc".to_owned(),
    ] {
        get_error(
            &base,
            &format!("/v2/x/blobs/{digest}"),
            400,
            "DIGEST_INVALID",
        )
        .await;
    }
    get_error(&base, "/v2/x/manifests/sha512:ab", 400, "DIGEST_INVALID").await;
}

#[tokio::test]
async fn invalid_names_are_400_name_invalid() {
    let server = TestServer::start();
    let base = server.url("");
    let long = "a".repeat(256);
    for name in ["-x", "_x", ".x", "x/.y", "x%20y", "x!", long.as_str()] {
        get_error(
            &base,
            &format!("/v2/{name}/manifests/latest"),
            400,
            "NAME_INVALID",
        )
        .await;
    }
}

#[tokio::test]
async fn invalid_tags_are_400_tag_invalid() {
    let server = TestServer::start();
    let base = server.url("");
    let long = "t".repeat(129);
    for tag in [".x", "-x", "x!", "x%00", "x%2Fy", long.as_str()] {
        get_error(&base, &format!("/v2/x/manifests/{tag}"), 400, "TAG_INVALID").await;
    }
}

#[tokio::test]
async fn write_methods_are_405_unsupported() {
    let server = TestServer::start();
    let base = server.url("");
    for method in [Method::PUT, Method::POST, Method::PATCH, Method::DELETE] {
        for path in [
            "/v2/".to_owned(),
            "/v2/x/blobs/uploads/".to_owned(),
            format!("/v2/x/blobs/sha256:{HEX}"),
            "/v2/x/manifests/latest".to_owned(),
        ] {
            let message = expect_error(&base, method.clone(), &path, 405, "UNSUPPORTED").await;
            assert!(message.contains("pull-only"), "{message}");
            let (_, _, _, headers) = call(&base, method.clone(), &path).await;
            assert_eq!(headers["allow"], "GET, HEAD");
        }
    }
}

#[tokio::test]
async fn other_paths_are_404_with_a_registry_body() {
    let server = TestServer::start();
    let base = server.url("");
    for path in ["/foo", "/v2/_catalog", "/v2/x/tags/all", "/v2x", "/v3/"] {
        get_error(&base, path, 404, "UNSUPPORTED").await;
    }
}

#[tokio::test]
async fn packages_nix_cannot_find_are_404_manifest_unknown_naming_each() {
    let server = TestServer::start();
    let base = server.url("");
    let message = get_error(
        &base,
        "/v2/hello/nosuchpkg/alsomissing/manifests/latest",
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert!(message.contains("nosuchpkg"), "{message}");
    assert!(message.contains("alsomissing"), "{message}");
    assert!(!message.contains("hello"), "{message}");
    let (status, _, _, _) = call(&base, Method::HEAD, "/v2/nosuchpkg/manifests/latest").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn failed_nix_build_is_500_unknown_without_internal_paths() {
    let server = TestServer::start();
    let base = server.url("");
    let message = get_error(&base, "/v2/failing/manifests/latest", 500, "UNKNOWN").await;
    assert!(message.contains("build failed"), "{message}");
    assert!(!message.contains("/nix/store"), "{message}");
    assert!(!message.contains("/tmp"), "{message}");
}

/// The harness's status check (what every test waiting on a slow path
/// uses) fails the test naming the request, the status and the body.
#[test]
#[should_panic(
    expected = "expected 200, got 404 (the server's log follows): {\"errors\":[{\"code\":\"BLOB_UNKNOWN\""
)]
fn a_call_that_gets_another_status_fails_the_test_with_the_answer() {
    let server = TestServer::start();
    server
        .get(&format!("/v2/x/blobs/sha256:{HEX}"))
        .expect_status(200);
}

#[tokio::test]
async fn head_by_tag_builds_and_answers_the_same_headers_as_get() {
    let server = TestServer::start();
    let path = "/v2/hello/manifests/latest";
    let head = server.head(path).expect_status_async(200).await;
    assert!(head.body.is_empty());
    let get = server.get(path).expect_status_async(200).await;
    for header in ["content-type", "content-length", "docker-content-digest"] {
        assert_eq!(head.header(header), get.header(header), "{header}");
    }
    assert_eq!(
        get.header("content-length"),
        Some(get.body.len().to_string().as_str())
    );
}

#[tokio::test]
async fn requests_are_logged_with_method_path_status_and_latency() {
    let server = TestServer::start();
    let base = server.url("");
    call(&base, Method::GET, "/v2/").await;
    call(&base, Method::DELETE, "/v2/x/manifests/latest").await;
    for (method, path, status) in [
        ("GET", "/v2/", 200),
        ("DELETE", "/v2/x/manifests/latest", 405),
    ] {
        let event = server
            .wait_for_event(Duration::from_secs(10), |e| {
                e["message"] == "response"
                    && e["span"]["path"] == path
                    && e["span"]["method"] == method
            })
            .unwrap_or_else(|| {
                panic!("no response event for {method} {path}: {:?}", server.logs())
            });
        assert_eq!(event["status"], status);
        assert!(event["latency_ms"].as_f64().is_some(), "{event}");
        assert_eq!(event["level"], "INFO");
    }
    // One JSON object per line, nothing else on stdout.
    for line in server.logs() {
        assert!(
            serde_json::from_str::<serde_json::Value>(&line).is_ok(),
            "{line}"
        );
    }
}

#[tokio::test]
async fn missing_packages_are_404_manifest_unknown_naming_them() {
    // The in-process registry's builder reports every package missing: the
    // error mapping of the tag route, end to end.
    let server = InProcessServer::start().await;
    let message = expect_error(
        &server.base_url(),
        Method::GET,
        "/v2/notapackage/alsomissing/manifests/latest",
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert!(
        message.contains("notapackage") && message.contains("alsomissing"),
        "{message}"
    );
    server.stop().await;
}
