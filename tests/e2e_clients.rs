//! Real registry clients pull images that the server builds on demand with
//! real Nix: skopeo (verifying every digest and size), umoci to unpack,
//! podman, containerd's ctr (which resolves tags with HEAD first) and Docker
//! (a private `dockerd` per test, which pulls, then runs the images).

use std::process::Command;

use support::server::TestServer;
use support::{Containerd, any_system_pkgs, docker::Docker, pull_and_unpack, resolve_in_root, run};

fn start_server() -> TestServer {
    TestServer::builder().env("NIX_TIMEOUT", "300").start()
}

fn host(server: &TestServer) -> String {
    server.addr().to_string()
}

#[test]
fn skopeo_copy_of_hello_git_unpacks_and_runs_hello() {
    let server = start_server();
    let (_work, rootfs) = pull_and_unpack(host(&server), "hello/git");

    let hello = run(Command::new("chroot").arg(&rootfs).arg("/bin/hello"));
    assert_eq!(hello.trim(), "Hello, world!");
    for (path, missing) in [
        (
            "/etc/ssl/certs/ca-bundle.crt",
            "the CA bundle does not resolve",
        ),
        ("/bin/git", "git is missing"),
    ] {
        assert!(
            resolve_in_root(&rootfs, path).is_some(),
            "{missing} inside the image"
        );
    }
}

#[test]
fn skopeo_inspect_with_tags_lists_latest() {
    let server = start_server();
    let out = run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{}/hello", host(&server)),
    ]));
    let inspected: serde_json::Value = serde_json::from_str(&out).expect("skopeo inspect JSON");
    assert_eq!(
        inspected["RepoTags"],
        serde_json::json!(["latest"]),
        "{out}"
    );
    assert_eq!(inspected["Architecture"], "amd64", "{out}");
}

#[test]
fn podman_pull_succeeds() {
    let server = start_server();
    let store = tempfile::tempdir().unwrap();
    let reference = format!("{}/hello:latest", host(&server));
    let podman = || support::podman(store.path());
    run(podman().args(["pull", "--tls-verify=false", &reference]));
    let images = run(podman().args(["images", "--format", "{{.Repository}}:{{.Tag}}"]));
    assert!(
        images.lines().any(|l| l.trim() == reference),
        "podman images does not list {reference}: {images}"
    );
}

#[test]
fn containerd_pull_resolves_with_head_and_lists_the_image() {
    let server = start_server();
    let containerd = Containerd::start();
    let reference = format!("{}/hello/git:latest", host(&server));
    containerd.pull(&[], &reference);
    let images = run(containerd.ctr().args(["image", "ls", "-q"]));
    assert!(
        images.lines().any(|l| l.trim() == reference),
        "ctr image ls does not list {reference}: {images}"
    );
}

/// `docker pull` then `docker run --rm --network none IMAGE ARGS...`;
/// returns what the container printed.
fn docker_pull_and_run(docker: &Docker, image: &str, args: &[&str]) -> String {
    docker.pull(&[image]);
    docker.run(image, args)
}

/// The (method, path) of every request the server answered, in order.
fn requests(server: &TestServer) -> Vec<(String, String)> {
    server
        .log_events()
        .iter()
        .filter(|e| e["message"] == "response")
        .filter_map(|e| {
            Some((
                e["span"]["method"].as_str()?.to_owned(),
                e["span"]["path"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

#[test]
fn docker_pulls_and_runs_hello_git_and_shell_git() {
    let server = start_server();
    let docker = Docker::start();
    let hello = docker_pull_and_run(&docker, &format!("{}/hello/git", host(&server)), &["hello"]);
    assert_eq!(hello.trim(), "Hello, world!");
    let git = docker_pull_and_run(
        &docker,
        &format!("{}/shell/git", host(&server)),
        &["sh", "-c", "git --version && command -v bash"],
    );
    assert!(git.contains("git 2.46.0"), "{git}");
    assert!(
        git.contains("/bin/bash"),
        "the shell meta-package is missing: {git}"
    );
}

#[test]
fn docker_resolves_the_tag_with_head_then_fetches_the_manifest_by_digest() {
    let server = start_server();
    let docker = Docker::start();
    let name = "hello";
    let reference = format!("{}/{name}:latest", host(&server));
    docker.pull(&[&reference]);
    let manifest_requests: Vec<(String, String)> = requests(&server)
        .into_iter()
        .filter(|(_, path)| path.starts_with(&format!("/v2/{name}/manifests/")))
        .collect();

    // The digest Docker recorded is the one the registry announced.
    let head = server
        .head(&format!("/v2/{name}/manifests/latest"))
        .expect_status(200);
    let digest = head
        .header("docker-content-digest")
        .expect("a digest header")
        .to_owned();
    let repo_digests = docker.inspect("{{json .RepoDigests}}", &reference);
    assert!(
        repo_digests.contains(&format!("{}/{name}@{digest}", host(&server))),
        "{repo_digests} does not name {digest}"
    );

    let by_tag = ("HEAD".to_owned(), format!("/v2/{name}/manifests/latest"));
    let by_digest = ("GET".to_owned(), format!("/v2/{name}/manifests/{digest}"));
    let tag_at = manifest_requests.iter().position(|r| *r == by_tag);
    let digest_at = manifest_requests.iter().position(|r| *r == by_digest);
    assert!(
        matches!((tag_at, digest_at), (Some(t), Some(d)) if t < d),
        "expected HEAD by tag, then GET by digest: {manifest_requests:?}"
    );
    assert!(
        !manifest_requests
            .iter()
            .any(|(method, path)| method == "GET" && path.ends_with("/latest")),
        "Docker fetched the manifest by tag: {manifest_requests:?}"
    );
}

/// `docker pull --platform linux/arm64` of an `arm64/...` image (pull only:
/// this host cannot run arm64 binaries). An x86-64 host's Nix cannot build
/// `aarch64-linux` derivations, so the server builds from a copy of the
/// offline package set whose derivations ignore the requested system: the
/// image's programs are x86-64, but everything a pull involves (the
/// manifest, the config's `architecture`, the layers) is what the registry
/// serves for an arm64 image, and Docker checks the platform against it.
#[test]
fn docker_pulls_arm64_images_for_linux_arm64() {
    let pkgs = any_system_pkgs();
    let server = TestServer::builder()
        .env("NIX_TIMEOUT", "300")
        .env("NIXERY_PKGS_PATH", pkgs.path().display().to_string())
        .start();
    let docker = Docker::start();
    let reference = format!("{}/arm64/hello:latest", host(&server));
    docker.pull(&["--platform", "linux/arm64", &reference]);
    let nix_system = server
        .log_events()
        .into_iter()
        .find(|e| e["message"] == "nix build started")
        .and_then(|e| e["system"].as_str().map(str::to_owned));
    assert_eq!(nix_system.as_deref(), Some("aarch64-linux"));
    let platform = docker.inspect("{{.Os}}/{{.Architecture}}", &reference);
    assert_eq!(platform, "linux/arm64");
}
