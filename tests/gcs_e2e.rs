//! End-to-end tests of the gcs backend through the server binary, against
//! a real fake-gcs-server started by each test (issue 6).
//!
//! Properties defended: a full `skopeo copy` works when every blob is a
//! redirect to the bucket; two instances with separate local tiers share
//! one bucket (an image built by one is served by the other without Nix,
//! and a layer uploaded by one is not uploaded again by the other); a
//! bucket that dies during a build gives a 5xx registry error in bounded
//! time, leaves no build record without its blob, and the same request
//! succeeds once the bucket is back.

use std::time::{Duration, Instant};

use serde_json::Value;
use support::gcs::{BUCKET, FakeGcs};
use support::server::{MANIFEST_V2, TestServer};
use support::{count_logs, layer_digests, offline_pkgs_repo};

/// Bytes sent to the emulator after which the big layer is mid-upload.
const MID_UPLOAD_BYTES: u64 = 16 * 1024 * 1024;

/// A failed build must be reported within this time of the bucket dying.
const FAILURE_BOUND: Duration = Duration::from_secs(90);

/// A server on the gcs backend against the emulator at `emulator_host`,
/// with its own local tier (the harness gives each server its own
/// `STORAGE_PATH`).
fn gcs_server(emulator_host: &str, repo: Option<&std::path::Path>) -> TestServer {
    let mut builder = TestServer::builder()
        .envs(support::gcs::server_env(emulator_host))
        .env("NIX_TIMEOUT", "300");
    if let Some(repo) = repo {
        builder = builder.pkgs_repo(repo);
    }
    builder.start()
}

/// An emulator, a git repository of the offline set and its commit, and
/// two servers on the emulator's bucket building from that repository.
async fn two_instances() -> (FakeGcs, tempfile::TempDir, String, TestServer, TestServer) {
    let gcs = FakeGcs::start().await;
    let (repo, commit) = offline_pkgs_repo();
    let a = gcs_server(&gcs.host(), Some(repo.path()));
    let b = gcs_server(&gcs.host(), Some(repo.path()));
    (gcs, repo, commit, a, b)
}

fn registry_host(server: &TestServer) -> String {
    server.addr().to_string()
}

/// Asserts that `GET` on the blob `digest` of repository `name` answers
/// `303` to the object in the bucket, on `emulator_host` (the server's
/// `STORAGE_EMULATOR_HOST`), that `HEAD` is answered by the server (a
/// signed URL is signed for one method), and that the object exists.
async fn assert_blob_redirects_to_bucket(
    server: &TestServer,
    gcs: &FakeGcs,
    emulator_host: &str,
    name: &str,
    digest: &str,
) {
    let hex = digest.trim_start_matches("sha256:");
    let path = format!("/v2/{name}/blobs/{digest}");
    let location = server.redirect_location(reqwest::Method::GET, &path).await;
    assert_eq!(
        location,
        format!("http://{emulator_host}/{BUCKET}/layers/{hex}")
    );
    let head = server
        .call(reqwest::Method::HEAD, &path)
        .without_redirects()
        .expect_status_async(200)
        .await;
    assert_eq!(head.header("docker-content-digest"), Some(digest));
    assert!(
        gcs.object_metadata(&format!("layers/{hex}"))
            .await
            .is_some(),
        "layers/{hex} is not in the bucket"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_copy_follows_blob_redirects_to_the_bucket_and_verifies_digests() {
    let gcs = FakeGcs::start().await;
    let server = gcs_server(&gcs.host(), None);
    let work = tempfile::tempdir().expect("temporary directory");
    let layout = work.path().join("layout");

    // skopeo verified every blob against its digest; the copies are
    // checked too. The copied manifest names only layers that were copied,
    // and each of them is a redirect to the bucket. (skopeo rewrites the
    // config when it converts the manifest to OCI, so only layer digests
    // carry over.) Reading it from the layout avoids another (uncacheable)
    // build of `latest`.
    let support::CopiedImage {
        manifest,
        blobs: copied,
        ..
    } = support::skopeo_copy(registry_host(&server), "hello/git:latest", &layout);
    let digests = layer_digests(&manifest);
    assert!(digests.len() >= 2, "{manifest}");
    for digest in &digests {
        assert!(
            copied.contains(digest.trim_start_matches("sha256:")),
            "skopeo did not copy {digest}"
        );
        assert_blob_redirects_to_bucket(&server, &gcs, &gcs.host(), "hello/git", digest).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_built_by_one_instance_is_served_by_another_without_nix() {
    let (gcs, _repo, commit, a, b) = two_instances().await;
    assert_ne!(a.addr(), b.addr());
    assert_ne!(a.storage_path(), b.storage_path());

    let from_a = a.manifest_json_async("hello/git", &commit).await;
    let from_b = b.manifest_json_async("hello/git", &commit).await;

    assert_eq!(count_logs(&a, "building image"), 1);
    assert_eq!(count_logs(&b, "building image"), 0, "instance B ran Nix");
    assert_eq!(from_a, from_b);
    for digest in layer_digests(&from_b) {
        assert_blob_redirects_to_bucket(&b, &gcs, &gcs.host(), "hello/git", &digest).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_uploaded_by_one_instance_is_not_uploaded_again_by_another() {
    let (_gcs, _repo, commit, a, b) = two_instances().await;

    let git = a.manifest_json_async("hello/git", &commit).await;
    let htop = b.manifest_json_async("hello/htop", &commit).await;

    let htop_layers = layer_digests(&htop);
    let shared = support::shared_layers(&git, &htop);
    assert!(shared >= 2, "hello/git and hello/htop share no layers");
    assert_eq!(count_logs(&b, "building image"), 1);
    assert_eq!(
        count_logs(&b, "layer uploaded"),
        htop_layers.len() - shared,
        "instance B uploaded layers that instance A had uploaded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_dying_mid_build_gives_5xx_leaves_no_dangling_record_and_recovers() {
    // The server reaches the emulator through a proxy that counts the
    // bytes it sends, to see how far the uploads have got.
    let (mut gcs, proxy) = FakeGcs::start_behind_proxy().await;
    let server = gcs_server(&proxy.host(), None);
    // `bigpkg`'s closure holds a >100 MB incompressible file, so its
    // layer is by far the largest upload of the build.
    let url = server.url("/v2/bigpkg/manifests/latest");
    let first = tokio::spawn({
        let url = url.clone();
        async move {
            reqwest::Client::new()
                .get(url)
                .header("Accept", MANIFEST_V2)
                .timeout(Duration::from_secs(600))
                .send()
                .await
        }
    });
    // Kill the bucket once two upload chunks (8 MiB each) have gone out:
    // the other layers are far smaller, so the big one is mid-upload.
    let deadline = Instant::now() + Duration::from_secs(300);
    while proxy.client_bytes() < MID_UPLOAD_BYTES {
        assert!(
            Instant::now() < deadline,
            "the upload never got going: {:#?}",
            server.logs()
        );
        assert!(
            !first.is_finished(),
            "the build ended before the big upload"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gcs.kill();
    let killed_at = Instant::now();

    let response = first
        .await
        .expect("request task")
        .expect("an answer, not a hang");
    let elapsed = killed_at.elapsed();
    eprintln!("the failed build was reported {elapsed:?} after the bucket died");
    assert!(elapsed < FAILURE_BOUND, "the failure took {elapsed:?}");
    let status = response.status();
    let body: Value = response.json().await.expect("registry error body");
    assert!(status.is_server_error(), "{status}: {body}");
    // Reported as the storage failure it is, not as a broken build.
    assert_eq!(body["errors"][0]["code"], "MANIFEST_UPLOAD", "{body}");
    assert_eq!(count_logs(&server, "image build failed"), 1);

    // The emulator keeps its objects on disk: every build record it holds
    // points at a blob it holds too.
    gcs.restart().await;
    let records = gcs.object_names("builds/").await;
    assert!(
        records.len() >= count_logs(&server, "layer uploaded") && !records.is_empty(),
        "the layers uploaded before the kill have no records: {records:?}"
    );
    for record in &records {
        let bytes = gcs.object_bytes(record).await.expect("listed record");
        let record_json: Value = serde_json::from_slice(&bytes).expect("record JSON");
        let digest = record_json["digest"].as_str().expect("record digest");
        let blob = format!("layers/{}", digest.trim_start_matches("sha256:"));
        assert!(
            gcs.object_metadata(&blob).await.is_some(),
            "{record} points at missing {blob}"
        );
    }

    let manifest = server.manifest_json_async("bigpkg", "latest").await;
    for digest in layer_digests(&manifest) {
        assert_blob_redirects_to_bucket(&server, &gcs, &proxy.host(), "bigpkg", &digest).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_images_build_and_pull_while_a_fifth_of_api_calls_fail() {
    let (gcs, proxy) = FakeGcs::start_behind_faults(200, 13).await;
    let server = gcs_server(&proxy.host(), None);
    support::gcs::checks::images_pull_whole_through_faults(&server, &proxy, &gcs.storage().await)
        .await;
}
