//! The status page at `/` tells people how to pull from the host they
//! asked, what the server runs with (never credentials) and which builds
//! failed recently, with every interpolated string HTML-escaped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::server::{Answer, TestServer};

/// The image whose build fails printing markup (offline package set).
const XSS_IMAGE: &str = "xss-failing";

/// What `xss-failing` prints, raw and as it must appear in the HTML.
const RAW_MARKUP: &str = "<script>document.title='pwned'</script>";
const ESCAPED_MARKUP: &str = "&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;";

/// `GET /` with `Host: host`, which must answer 200.
async fn status_page(server: &TestServer, host: &str) -> Answer {
    server
        .get("/")
        .header("Host", host)
        .expect_status_async(200)
        .await
}

/// Pull the manifest of `image`, whose build is expected to fail.
async fn fail_build(server: &TestServer, image: &str) {
    let path = format!("/v2/{image}/manifests/latest");
    server.get(&path).expect_status_async(500).await;
}

#[tokio::test]
async fn page_names_the_request_host_backend_source_and_version() {
    let server = TestServer::start();
    let page = status_page(&server, "registry.example:5000").await;
    let body = page.text();
    assert!(
        body.contains("docker pull registry.example:5000/shell/git/htop"),
        "{body}"
    );
    assert!(!body.contains(&server.addr().to_string()), "{body}");
    assert!(body.contains("<td>filesystem</td>"), "{body}");
    assert!(
        body.contains("<td>built-in offline package set</td>"),
        "{body}"
    );
    assert!(
        body.contains(&format!(
            "<td id=\"version\">{}</td>",
            nixery::status::VERSION
        )),
        "{body}"
    );
    for meta in [
        "<code>shell</code>",
        "<code>arm64</code>",
        "bashInteractive",
    ] {
        assert!(body.contains(meta), "{meta} missing: {body}");
    }
    assert!(body.contains("No build has failed recently."), "{body}");
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(
        page.header("content-security-policy"),
        Some("default-src 'none'; style-src 'unsafe-inline'")
    );
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
}

#[tokio::test]
async fn head_answers_the_page_headers_without_a_body() {
    let server = TestServer::start();
    let response = server.head("/").expect_status_async(200).await;
    assert_eq!(
        response.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(response.body.is_empty());
}

#[test]
fn request_without_host_shows_the_listen_address() {
    let server = TestServer::start();
    let mut stream = TcpStream::connect(server.addr()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    // HTTP/1.0 needs no Host header.
    stream
        .write_all(b"GET / HTTP/1.0\r\n\r\n")
        .expect("send request");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("read response");
    assert!(raw.starts_with("HTTP/1.0 200"), "{raw}");
    assert!(
        raw.contains(&format!("docker pull {}/shell/git/htop", server.addr())),
        "{raw}"
    );
}

#[tokio::test]
async fn failed_build_is_listed_with_its_output_escaped() {
    let server = TestServer::builder().env("NIX_TIMEOUT", "60").start();
    fail_build(&server, XSS_IMAGE).await;
    fail_build(&server, "failing").await;
    let body = status_page(&server, "registry.example").await.text();
    let newest = body.find("<code>failing:latest</code>");
    let older = body.find(&format!("<code>{XSS_IMAGE}:latest</code>"));
    assert!(
        matches!((newest, older), (Some(n), Some(o)) if n < o),
        "both failures, newest first: {body}"
    );
    assert!(body.contains(ESCAPED_MARKUP), "{body}");
    assert!(
        body.contains("&lt;img src=x onerror=&quot;document.title=&#39;pwned&#39;&quot;&gt;"),
        "{body}"
    );
    assert!(!body.contains(RAW_MARKUP), "{body}");
    assert!(!body.contains("<img"), "{body}");
    assert!(body.contains(" UTC</p>"), "{body}");
}

#[tokio::test]
async fn hostile_host_header_is_escaped() {
    let server = TestServer::start();
    let body = status_page(&server, "<b>x</b>").await.text();
    assert!(
        body.contains("docker pull &lt;b&gt;x&lt;/b&gt;/shell"),
        "{body}"
    );
    assert!(!body.contains("<b>x"), "{body}");
}

#[tokio::test]
async fn git_source_credentials_never_appear() {
    // Port 1 on localhost refuses at once, so the build fails quickly and
    // its error (which names the repository) is on the page too.
    let server = TestServer::builder()
        .env(
            "NIXERY_PKGS_REPO",
            "https://user:secret@127.0.0.1:1/pkgs.git",
        )
        .env("NIX_TIMEOUT", "60")
        .start();
    fail_build(&server, "hello").await;
    let body = status_page(&server, "registry.example").await.text();
    assert!(
        body.contains("<td>git repository https://127.0.0.1:1/pkgs.git</td>"),
        "{body}"
    );
    assert!(body.contains("<code>hello:latest</code>"), "{body}");
    // Listing the repository's refs failed: a source failure, not Nix's.
    assert!(
        body.contains("<code>hello:latest</code> (source failure)"),
        "{body}"
    );
    assert!(!body.contains("secret"), "{body}");
    assert!(!body.contains("user:"), "{body}");
}

#[tokio::test]
async fn writes_to_the_status_page_are_405_registry_errors() {
    let server = TestServer::start();
    let response = server
        .call(reqwest::Method::POST, "/")
        .expect_status_async(405)
        .await;
    assert_eq!(response.json()["errors"][0]["code"], "UNSUPPORTED");
}

#[tokio::test]
async fn user_info_and_query_tokens_are_redacted_in_page_body_and_logs() {
    // The Nix step fails echoing a credentialled URL, as git and Nix do
    // for the URLs they cannot fetch.
    let dir = tempfile::tempdir().expect("temporary directory");
    let script = dir.path().join("prepare-image");
    std::fs::write(
        &script,
        "#!/bin/sh\n\
         echo \"fatal: unable to access 'https://robot:hunter2@git.example/p.git?private_token=TOKEN123&ref=x': 403\" >&2\n\
         exit 1\n",
    )
    .expect("write script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("make script executable");
    let server = TestServer::builder()
        .env("NIXERY_PREPARE_IMAGE", script.to_str().expect("UTF-8 path"))
        .env("NIX_TIMEOUT", "60")
        .start();
    let body = server
        .get("/v2/hello/manifests/latest")
        .expect_status_async(500)
        .await
        .text();
    let page = status_page(&server, "registry.example").await.text();
    // The failure is on the page with its kind, and its cause names the
    // repository with the secrets masked.
    assert!(
        page.contains("<code>hello:latest</code> (nix failure)"),
        "{page}"
    );
    assert!(
        page.contains("https://***@git.example/p.git?private_token=***&amp;ref=***"),
        "{page}"
    );
    let logs = server.logs().join("\n");
    assert!(logs.contains("private_token=***"), "{logs}");
    for (name, text) in [
        ("response body", &body),
        ("status page", &page),
        ("logs", &logs),
    ] {
        for secret in ["hunter2", "TOKEN123", "robot:"] {
            assert!(!text.contains(secret), "{secret} in the {name}: {text}");
        }
    }
}
