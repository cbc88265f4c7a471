//! Real clients pick their platform from one tag's image index when the
//! registry builds for `linux/amd64,linux/arm64`: Docker `pull
//! --platform`, skopeo `--override-arch`, containerd `ctr image pull
//! --platform` and podman `--arch` (pull only: this host cannot run arm64
//! binaries).
//!
//! The server builds from the copy of the offline set whose derivations
//! ignore the requested system (`support::any_system_pkgs`): the arm64
//! image holds x86-64 programs, but its manifest, config and place in the
//! index are those of an arm64 image, which is what a client checks.

use std::process::Command;

use support::media::OCI_INDEX;
use support::server::TestServer;
use support::{Containerd, any_system_pkgs, docker::Docker, run};

fn start_server(pkgs: &tempfile::TempDir) -> TestServer {
    TestServer::builder()
        .env("NIX_TIMEOUT", "300")
        .env("NIXERY_PLATFORMS", "linux/amd64,linux/arm64")
        .env("NIXERY_PKGS_PATH", pkgs.path().display().to_string())
        .start()
}

/// The digest of each platform's manifest in the index of `name`, by
/// architecture.
fn entry_digests(server: &TestServer, name: &str) -> Vec<(String, String)> {
    let index = server
        .get(&format!("/v2/{name}/manifests/latest"))
        .accept(OCI_INDEX)
        .expect_status(200)
        .json();
    index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|e| {
            (
                e["platform"]["architecture"].as_str().unwrap().to_owned(),
                e["digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn docker_pulls_arm64_and_amd64_of_one_tag() {
    let pkgs = any_system_pkgs();
    let server = start_server(&pkgs);
    let docker = Docker::start();
    let reference = format!("{}/hello:latest", server.addr());
    for platform in ["linux/arm64", "linux/amd64"] {
        docker.pull(&["--platform", platform, &reference]);
        let pulled = docker.inspect("{{.Os}}/{{.Architecture}}", &reference);
        assert_eq!(pulled, platform);
    }
}

#[test]
fn skopeo_override_arch_copies_the_platform_asked_for() {
    let pkgs = any_system_pkgs();
    let server = start_server(&pkgs);
    let source = format!("docker://{}/hello:latest", server.addr());
    for arch in ["arm64", "amd64"] {
        let out = run(Command::new("skopeo").args([
            "--override-arch",
            arch,
            "inspect",
            "--tls-verify=false",
            &source,
        ]));
        let inspected: serde_json::Value = serde_json::from_str(&out).expect("inspect JSON");
        assert_eq!(inspected["Architecture"], arch, "{out}");

        let work = tempfile::tempdir().unwrap();
        let layout = work.path().join("layout");
        run(Command::new("skopeo").args([
            "--override-arch",
            arch,
            "copy",
            "--src-tls-verify=false",
            &source,
            &format!("oci:{}:img", layout.display()),
        ]));
        let config = run(Command::new("skopeo").args([
            "inspect",
            "--config",
            &format!("oci:{}:img", layout.display()),
        ]));
        let config: serde_json::Value = serde_json::from_str(&config).expect("config JSON");
        assert_eq!(config["architecture"], arch, "{config}");
    }
    let raw = run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", &source]));
    let raw: serde_json::Value = serde_json::from_str(&raw).expect("raw index");
    assert_eq!(raw["manifests"].as_array().map(Vec::len), Some(2), "{raw}");
}

#[test]
fn ctr_pull_with_platform_fetches_that_platforms_manifest_only() {
    let pkgs = any_system_pkgs();
    let server = start_server(&pkgs);
    let containerd = Containerd::start();
    let digests = entry_digests(&server, "hello");
    let reference = format!("{}/hello:latest", server.addr());
    containerd.pull(&["--platform", "linux/arm64"], &reference);
    let content = run(containerd.ctr().args(["content", "ls", "-q"]));
    for (arch, digest) in &digests {
        let fetched = content.lines().any(|l| l.trim() == digest);
        assert_eq!(
            fetched,
            arch == "arm64",
            "{arch} manifest {digest}: {content}"
        );
    }
    let images = run(containerd.ctr().args(["image", "ls"]));
    assert!(images.contains("linux/arm64"), "{images}");
}

#[test]
fn podman_pull_with_arch_gets_that_architecture() {
    let pkgs = any_system_pkgs();
    let server = start_server(&pkgs);
    let store = tempfile::tempdir().unwrap();
    let podman = || support::podman(store.path());
    let reference = format!("{}/hello:latest", server.addr());
    for arch in ["arm64", "amd64"] {
        run(podman().args(["pull", "--tls-verify=false", "--arch", arch, &reference]));
        let pulled = run(podman().args([
            "image",
            "inspect",
            "--format",
            "{{.Architecture}}",
            &reference,
        ]));
        assert_eq!(pulled.trim(), arch);
    }
}
