//! Real registry clients pull through redirects to an S3 server that checks
//! every signature (s3s-fs): skopeo, podman and Docker by tag, containerd
//! by tag and by digest (it resolves `name@sha256:...` with a HEAD of the
//! manifest, which a URL presigned for GET would refuse). Each client
//! verifies what it pulls against its digests. The servers are configured
//! with upstream Nixery's S3 names only (`S3_ENDPOINT`, `S3_ACCESS_KEY`,
//! `S3_SECRET_KEY`, `S3_LINK_EXPIRATION`), no `AWS_*` variable at all,
//! and their redirects expire when `S3_LINK_EXPIRATION` says.

use std::time::{Duration, SystemTime};

use support::containerd::Containerd;
use support::docker::Docker;
use support::s3::{BUCKET, S3Server, S3sFs};
use support::server::{MANIFEST_V2, TestServer};
use support::{layer_digests, run};

/// How long the redirects of [`upstream_server`] stay valid.
const LINK_EXPIRATION: &str = "4s";

/// A server on `s3`'s bucket configured with upstream's names only.
fn upstream_server(s3: &S3sFs) -> TestServer {
    TestServer::builder()
        .envs(s3.upstream_env())
        .env("S3_LINK_EXPIRATION", LINK_EXPIRATION)
        .env("NIX_TIMEOUT", "300")
        .start()
}

/// The environment of the process `pid`, as `NAME=value` strings.
fn environment_of(pid: u32) -> Vec<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("the server's environment");
    environ
        .split(|b| *b == 0)
        .filter(|entry| !entry.is_empty())
        .map(|entry| String::from_utf8_lossy(entry).into_owned())
        .collect()
}

/// The value of the query parameter `name` of `url`.
fn query_param(url: &str, name: &str) -> String {
    reqwest::Url::parse(url)
        .expect("redirect URL")
        .query_pairs()
        .find(|(key, _)| key == name)
        .unwrap_or_else(|| panic!("no {name} in {url}"))
        .1
        .into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_names_alone_serve_pulls_and_links_expire_after_s3_link_expiration() {
    let s3 = S3sFs::start().await;
    let server = upstream_server(&s3);
    // No AWS setting and nothing the AWS credential chain reads (the
    // machine may set others, such as AWS_CA_BUNDLE).
    let aws_names: Vec<&str> = nixery::config::env_vars()
        .into_iter()
        .filter(|name| name.starts_with("AWS_"))
        .chain(
            nixery::storage::s3::settings::CREDENTIAL_VARS
                .iter()
                .copied(),
        )
        .collect();
    let aws: Vec<String> = environment_of(server.pid())
        .into_iter()
        .filter(|entry| {
            aws_names
                .iter()
                .any(|name| entry.starts_with(&format!("{name}=")))
        })
        .collect();
    assert!(aws.is_empty(), "the server was given {aws:?}");

    let work = tempfile::tempdir().expect("temporary directory");
    let copied = tokio::task::block_in_place(|| {
        support::skopeo_copy(server.addr(), "hello:latest", &work.path().join("layout"))
    });
    let layer = layer_digests(&copied.manifest)
        .into_iter()
        .next()
        .expect("a layer");

    let location = server
        .redirect_location(reqwest::Method::GET, &format!("/v2/hello/blobs/{layer}"))
        .await;
    assert!(
        location.starts_with(&format!("{}/{BUCKET}/layers/", s3.origin())),
        "path-style by default with S3_ENDPOINT: {location}"
    );
    assert_eq!(query_param(&location, "X-Amz-Expires"), "4");
    let fresh = reqwest::get(&location).await.expect("GET");
    assert_eq!(fresh.status(), 200);

    // Wait until the URL's own clock says it expired (its signing time
    // plus its lifetime, to the second, plus one second of rounding).
    let signed_at = query_param(&location, "X-Amz-Date");
    let signed_at: jiff::Timestamp = jiff::fmt::strtime::parse("%Y%m%dT%H%M%SZ", &signed_at)
        .and_then(|t| t.to_datetime())
        .and_then(|t| t.to_zoned(jiff::tz::TimeZone::UTC))
        .map(|z| z.timestamp())
        .expect("X-Amz-Date");
    let expires_at = SystemTime::from(signed_at) + Duration::from_secs(4 + 1);
    if let Ok(wait) = expires_at.duration_since(SystemTime::now()) {
        tokio::time::sleep(wait).await;
    }
    let expired = reqwest::get(&location).await.expect("GET");
    assert_eq!(
        expired.status(),
        403,
        "the link outlived S3_LINK_EXPIRATION"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_pulls_through_checked_signatures() {
    let s3 = S3sFs::start().await;
    let server = upstream_server(&s3);
    let store = tempfile::tempdir().expect("temporary directory");
    let reference = format!("{}/hello:latest", server.addr());
    let images = tokio::task::block_in_place(|| {
        let podman = || support::podman(store.path());
        run(podman().args(["pull", "--tls-verify=false", &reference]));
        run(podman().args(["images", "--format", "{{.Repository}}:{{.Tag}}"]))
    });
    assert!(
        images.lines().any(|l| l.trim() == reference),
        "podman images does not list {reference}: {images}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_pulls_and_runs_through_checked_signatures() {
    let s3 = S3sFs::start().await;
    let server = upstream_server(&s3);
    let image = format!("{}/hello", server.addr());
    let output = tokio::task::block_in_place(|| {
        let docker = Docker::start();
        docker.pull(&[&image]);
        docker.run(&image, &["hello"])
    });
    assert_eq!(output.trim(), "Hello, world!");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_pulls_by_tag_and_by_digest_through_checked_signatures() {
    let s3 = S3sFs::start().await;
    let building = upstream_server(&s3);
    let digest = building
        .head("/v2/hello/manifests/latest")
        .accept(MANIFEST_V2)
        .expect_status_async(200)
        .await
        .header("docker-content-digest")
        .expect("a digest")
        .to_owned();
    let by_tag = format!("{}/hello:latest", building.addr());
    // Another instance on the bucket holds nothing in memory: the manifest
    // by digest and every blob come from the bucket.
    let fresh = upstream_server(&s3);
    let by_digest = format!("{}/hello@{digest}", fresh.addr());
    let images = tokio::task::block_in_place(|| {
        let containerd = Containerd::start();
        containerd.pull(&[], &by_tag);
        containerd.pull(&[], &by_digest);
        run(containerd.ctr().args(["image", "ls"]))
    });
    for reference in [&by_tag, &by_digest] {
        assert!(
            images.lines().any(|l| l.starts_with(reference.as_str())),
            "ctr image ls does not list {reference}: {images}"
        );
    }
    let heads_by_digest = fresh
        .log_events()
        .iter()
        .filter(|e| {
            e["message"] == "response"
                && e["span"]["method"] == "HEAD"
                && e["span"]["path"] == format!("/v2/hello/manifests/{digest}")
        })
        .map(|e| e["status"].clone())
        .collect::<Vec<_>>();
    assert!(
        !heads_by_digest.is_empty() && heads_by_digest.iter().all(|s| s == 200),
        "containerd resolves the digest with HEAD, answered 200: {heads_by_digest:?}"
    );
}

/// The table of issue 27, as a new user would try it: on an instance
/// that holds nothing in memory, HEAD and GET (redirects followed) of a
/// blob and of a manifest by digest all answer 200, and what GET brings
/// back from the bucket has the digest asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_and_get_by_digest_answer_200_through_the_checking_bucket() {
    let s3 = S3sFs::start().await;
    let building = upstream_server(&s3);
    let manifest = building.manifest_json_async("hello", "latest").await;
    let manifest_digest = building
        .head("/v2/hello/manifests/latest")
        .accept(MANIFEST_V2)
        .expect_status_async(200)
        .await
        .header("docker-content-digest")
        .expect("a digest")
        .to_owned();
    let layer = layer_digests(&manifest)
        .into_iter()
        .next()
        .expect("a layer");
    let fresh = upstream_server(&s3);
    let client = reqwest::Client::new();
    for path in [
        format!("/v2/hello/blobs/{layer}"),
        format!("/v2/hello/manifests/{manifest_digest}"),
    ] {
        let digest = path.rsplit('/').next().unwrap_or_default().to_owned();
        let head = client
            .head(fresh.url(&path))
            .header("Accept", MANIFEST_V2)
            .send()
            .await
            .expect("HEAD");
        assert_eq!(head.status(), 200, "HEAD {path}");
        assert_eq!(head.headers()["docker-content-digest"], digest.as_str());
        let get = client
            .get(fresh.url(&path))
            .header("Accept", MANIFEST_V2)
            .send()
            .await
            .expect("GET");
        assert_eq!(get.status(), 200, "GET {path}, redirect followed");
        assert!(
            get.url().as_str().starts_with(&s3.origin()),
            "GET {path} was answered by the bucket, at {}",
            get.url()
        );
        let body = get.bytes().await.expect("body");
        assert_eq!(
            format!("sha256:{}", support::server::sha256_hex(&body)),
            digest
        );
    }
}
