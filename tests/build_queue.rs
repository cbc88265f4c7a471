//! `NIXERY_BUILD_QUEUE` bounds the builds waiting for a slot: a request that
//! would start one more build beyond the slots and the queue gets
//! `429 TOOMANYREQUESTS` with `Retry-After`, at once, and builds nothing;
//! retried later, it builds.

use std::time::{Duration, Instant};

use support::server::TestServer;

/// Six distinct images of the offline package set.
const IMAGES: [&str; 6] = ["hello", "curl", "htop", "nano", "zlib", "gmp"];

/// Longest time for all six to build when retried.
const RETRY_BOUND: Duration = Duration::from_secs(300);

async fn get_manifest(
    client: &reqwest::Client,
    server: &TestServer,
    image: &str,
) -> reqwest::Response {
    client
        .get(server.url(&format!("/v2/{image}/manifests/latest")))
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .expect("an answer to the manifest request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_build_queue_get_429_and_build_when_retried() {
    let server = TestServer::builder()
        .env("NIXERY_BUILD_CONCURRENCY", "1")
        .env("NIXERY_BUILD_QUEUE", "1")
        .env("NIX_TIMEOUT", "120")
        .start();
    let client = reqwest::Client::new();

    let answers = futures::future::join_all(IMAGES.iter().map(|image| {
        let (client, server) = (&client, &server);
        async move {
            let response = get_manifest(client, server, image).await;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = response.text().await.unwrap_or_default();
            (*image, status, retry_after, body)
        }
    }))
    .await;

    let refused: Vec<_> = answers.iter().filter(|a| a.1 == 429).collect();
    let built: Vec<_> = answers.iter().filter(|a| a.1 == 200).collect();
    assert_eq!(
        refused.len() + built.len(),
        IMAGES.len(),
        "only 200 and 429 expected: {answers:#?}"
    );
    // One slot and one queue place: two builds are admitted at once, so
    // unless builds end before the last request arrives (a Nix step takes
    // far longer than sending six requests), four are refused.
    assert!(!built.is_empty(), "{answers:#?}");
    assert!(!refused.is_empty(), "{answers:#?}");
    for (image, _, retry_after, body) in &refused {
        let seconds: u64 = retry_after
            .as_deref()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{image}: 429 without a numeric Retry-After"));
        assert!(seconds > 0);
        let json: serde_json::Value = serde_json::from_str(body).expect("registry error JSON");
        assert_eq!(json["errors"][0]["code"], "TOOMANYREQUESTS", "{image}");
    }
    // Nothing was started for a refused image.
    let started = server
        .log_events()
        .iter()
        .filter(|e| e["message"] == "building image")
        .count();
    assert_eq!(started, built.len());

    // Retried (sooner than Retry-After, to keep the test short), each builds.
    let deadline = Instant::now() + RETRY_BOUND;
    for (image, ..) in refused {
        loop {
            let response = get_manifest(&client, &server, image).await;
            match response.status().as_u16() {
                200 => break,
                429 if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                other => panic!(
                    "{image}: {other} {}",
                    response.text().await.unwrap_or_default()
                ),
            }
        }
    }
}
