//! End-to-end tests of the s3 backend through the server binary, against a
//! real S3 server (moto) started by each test, reached through a proxy
//! that counts what registry clients download from the bucket (and fails
//! a share of the backend's API calls where a test asks for it).
//!
//! Properties defended: skopeo and Docker pull whole images whose blobs
//! are all `303` redirects to presigned URLs, and really fetch them from
//! the bucket; credentials come from a shared credentials file and
//! profile (the AWS chain), and a wrong key is refused at start-up; with a
//! fifth of the API calls failing (503s and dropped connections) every
//! image is still built and pulled whole, and nothing is left in staging.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::Value;
use support::docker::Docker;
use support::s3::{BUCKET, MotoS3};
use support::server::{MANIFEST_V2, TestServer};
use support::{count_logs, layer_digests};

/// A server on the s3 backend using `moto`'s bucket through `endpoint`.
fn s3_server(moto: &MotoS3, endpoint: &str) -> TestServer {
    TestServer::builder()
        .env("NIX_TIMEOUT", "300")
        .envs(moto.server_env(endpoint))
        .start()
}

/// `skopeo copy` of `name:latest` into an OCI layout under `dir`, every
/// blob checked against its digest; the layout's manifest.
fn skopeo_copy_verified(server: &TestServer, name: &str, dir: &std::path::Path) -> Value {
    let layout = dir.join(name.replace('/', "_"));
    support::skopeo_copy(server.addr(), &format!("{name}:latest"), &layout).manifest
}

/// Asserts that the blob `digest` of `name` is a `303` to a presigned URL
/// of the bucket at `endpoint`.
async fn assert_presigned_redirect(server: &TestServer, endpoint: &str, name: &str, digest: &str) {
    let hex = digest.trim_start_matches("sha256:");
    let location = server
        .redirect_location(reqwest::Method::GET, &format!("/v2/{name}/blobs/{digest}"))
        .await;
    assert!(
        location.starts_with(&format!("{endpoint}/{BUCKET}/layers/{hex}?")),
        "{location}"
    );
    assert!(location.contains("X-Amz-Signature="), "{location}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pulls_through_presigned_redirects_it_fetches_from_the_bucket() {
    let moto = MotoS3::start().await;
    let proxy = moto.fault_proxy(0, 1).await;
    let endpoint = format!("http://{}", proxy.host());
    let server = s3_server(&moto, &endpoint);
    let work = tempfile::tempdir().expect("temporary directory");

    let manifest =
        tokio::task::block_in_place(|| skopeo_copy_verified(&server, "hello/git", work.path()));
    let layers = layer_digests(&manifest);
    assert!(layers.len() >= 2, "{manifest}");
    // Every layer and the config came from the bucket, not the registry.
    let downloads = proxy.counts().downloads.load(Ordering::SeqCst);
    assert!(
        downloads as usize > layers.len(),
        "skopeo fetched {downloads} objects from the bucket for {} layers",
        layers.len()
    );
    let blob_gets = server
        .log_events()
        .iter()
        .filter(|e| {
            e["message"] == "response"
                && e["status"] == 303
                && e["span"]["path"]
                    .as_str()
                    .is_some_and(|p| p.contains("/blobs/sha256:"))
        })
        .count();
    assert!(blob_gets > layers.len(), "{blob_gets} blob redirects");
    for digest in &layers {
        assert_presigned_redirect(&server, &endpoint, "hello/git", digest).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_pulls_and_runs_an_image_served_by_presigned_redirects() {
    let moto = MotoS3::start().await;
    let proxy = moto.fault_proxy(0, 2).await;
    let server = s3_server(&moto, &format!("http://{}", proxy.host()));
    let image = format!("{}/hello", server.addr());
    let output = tokio::task::block_in_place(|| {
        let docker = Docker::start();
        docker.pull(&[&image]);
        docker.run(&image, &["hello"])
    });
    assert_eq!(output.trim(), "Hello, world!");
    assert!(
        proxy.counts().downloads.load(Ordering::SeqCst) >= 2,
        "Docker fetched nothing from the bucket"
    );
}

/// A shared credentials file with one profile holding `key`.
fn credentials_file(dir: &std::path::Path, id: &str, secret: &str) -> std::path::PathBuf {
    let path = dir.join("credentials");
    std::fs::write(
        &path,
        format!("[nixery-test]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\n"),
    )
    .expect("write credentials file");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_from_a_profile_in_a_shared_credentials_file() {
    let moto = MotoS3::start_with_auth().await;
    let key = moto.key();
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = dir.path().join("config");
    std::fs::write(&config, "").expect("empty config file");
    let profile_env = |credentials: &std::path::Path| {
        let mut builder = TestServer::builder()
            .env("NIX_TIMEOUT", "300")
            .env("NIXERY_STORAGE_BACKEND", "s3")
            .env("S3_BUCKET", BUCKET)
            .env("AWS_ENDPOINT_URL", moto.origin())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", config.display().to_string())
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                credentials.display().to_string(),
            )
            .env("AWS_PROFILE", "nixery-test");
        // No key in the environment (the harness removes the AWS
        // variables) and no ~/.aws: only the profile can provide one.
        builder = builder.env("HOME", dir.path().display().to_string());
        builder
    };

    // A wrong secret in the profile: the bucket check fails at start-up.
    let wrong_dir = tempfile::tempdir().expect("temporary directory");
    let wrong = credentials_file(wrong_dir.path(), &key.id, "not-the-secret");
    let refused = profile_env(&wrong).run_to_exit();
    let stdout = String::from_utf8_lossy(&refused.stdout);
    assert!(
        !refused.status.success(),
        "started with a wrong key: {stdout}"
    );
    assert!(stdout.contains("is not reachable"), "{stdout}");

    let right = credentials_file(dir.path(), &key.id, &key.secret);
    let server = profile_env(&right).start();
    let manifest = server.manifest_json_async("hello", "latest").await;
    // Every object of the build was written with the profile's key (moto
    // checked each signature). The redirect is presigned with that key
    // too; moto's signature checks do not cover presigned URLs (it looks
    // for an Authorization header), so the tests without checks fetch them.
    let digest = layer_digests(&manifest)[0].clone();
    let location = server
        .redirect_location(reqwest::Method::GET, &format!("/v2/hello/blobs/{digest}"))
        .await;
    assert!(
        location.contains(&format!("X-Amz-Credential={}%2F", key.id)),
        "{location}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_images_build_and_pull_whole_while_a_fifth_of_api_calls_fail() {
    let moto = MotoS3::start().await;
    let proxy = moto.fault_proxy(200, 29).await;
    let server = s3_server(&moto, &format!("http://{}", proxy.host()));
    support::s3::checks::images_pull_whole_through_faults(&server, &proxy, &moto.storage().await)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_bucket_answers_503_for_blobs_and_new_images_and_runs_no_nix() {
    // The server reaches the bucket only through a proxy this test owns,
    // which then fails every API call. Killing moto alone would free its
    // port for the next emulator another test starts, and the server's
    // retries (a minute) would then reach a live bucket: a miss, a build.
    let mut moto = MotoS3::start().await;
    let proxy = moto.fault_proxy(0, 1).await;
    let server = s3_server(&moto, &format!("http://{}", proxy.host()));
    let manifest = server.manifest_json_async("hello", "latest").await;
    let digest = layer_digests(&manifest)[0].clone();
    proxy.set_rate(1000);
    moto.kill();

    // Neither a miss (404) nor a rebuild: the bucket is failing.
    let blob = server
        .get(&format!("/v2/hello/blobs/{digest}"))
        .timeout(Duration::from_secs(300))
        .expect_status_async(503)
        .await;
    assert_eq!(blob.header("retry-after"), Some("10"));
    let body = blob.json();
    assert_eq!(body["errors"][0]["code"], "UNAVAILABLE", "{body}");

    server
        .get("/v2/curl/manifests/latest")
        .accept(MANIFEST_V2)
        .timeout(Duration::from_secs(300))
        .expect_status_async(503)
        .await;
    assert_eq!(
        count_logs(&server, "building image"),
        1,
        "Nix ran for a dead bucket"
    );
    assert!(
        proxy.counts().faults() > 0,
        "the bucket was never asked: {:?}",
        proxy.counts()
    );
}
