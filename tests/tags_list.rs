//! `GET /v2/<name>/tags/list` answers `latest` for any valid name, with the
//! pagination parameters, and the usual registry errors otherwise.

use reqwest::{Method, StatusCode};
use support::server::{TestServer, raw_request};

async fn get(server: &TestServer, method: Method, path: &str) -> (StatusCode, serde_json::Value) {
    let response = reqwest::Client::new()
        .request(method, server.url(path))
        .send()
        .await
        .expect("request");
    let status = response.status();
    assert_eq!(
        response.headers()["docker-distribution-api-version"],
        "registry/2.0",
        "{path}"
    );
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

#[tokio::test]
async fn any_valid_name_lists_latest_without_building() {
    let server = TestServer::start();
    for name in [
        "hello",
        "shell/git",
        "arm64/hello",
        "nosuchpkg/Camel.case_x-y",
    ] {
        let (status, body) = get(&server, Method::GET, &format!("/v2/{name}/tags/list")).await;
        assert_eq!(status, StatusCode::OK, "{name}");
        assert_eq!(body, serde_json::json!({"name": name, "tags": ["latest"]}));
    }
    let (status, body) = get(&server, Method::HEAD, "/v2/hello/tags/list").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, serde_json::Value::Null, "HEAD has no body");
    assert!(
        !server
            .log_events()
            .iter()
            .any(|e| e["message"] == "building image"),
        "listing tags started a build"
    );
}

#[tokio::test]
async fn pagination_parameters_are_accepted() {
    let server = TestServer::start();
    let (status, body) = get(&server, Method::GET, "/v2/hello/tags/list?n=5").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["tags"], serde_json::json!(["latest"]));
    let (status, body) = get(&server, Method::GET, "/v2/hello/tags/list?n=1&last=latest").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["tags"], serde_json::json!([]));
    let (status, body) = get(&server, Method::GET, "/v2/hello/tags/list?n=-3").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["code"], "PAGINATION_NUMBER_INVALID");
}

#[tokio::test]
async fn invalid_names_are_rejected_as_on_other_routes() {
    let server = TestServer::start();
    let long = "a".repeat(256);
    for path in [
        "/v2/../tags/list".to_owned(),
        "/v2/%2e%2e/tags/list".to_owned(),
        "/v2/a%2Fb/tags/list".to_owned(),
        "/v2/-x/tags/list".to_owned(),
        format!("/v2/{long}/tags/list"),
    ] {
        // Raw requests: an HTTP client library would normalise the `..`.
        let tags = raw_request(server.addr(), "GET", path.as_bytes());
        assert_eq!(tags.status, 400, "{path}");
        let (code, _) = tags.registry_error().expect("a registry error body");
        assert_eq!(code, "NAME_INVALID", "{path}");
        // The same name on the manifests route fails the same way.
        let manifest_path = path.replace("/tags/list", "/manifests/latest");
        let manifest = raw_request(server.addr(), "GET", manifest_path.as_bytes());
        assert_eq!(manifest.status, 400, "{manifest_path}");
        assert_eq!(manifest.registry_error().map(|e| e.0), Some(code));
    }
    let (status, body) = get(&server, Method::DELETE, "/v2/hello/tags/list").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["errors"][0]["code"], "UNSUPPORTED");
}
