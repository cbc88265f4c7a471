//! Real registry clients pull images that the server builds on demand with
//! real Nix: skopeo (verifying every digest and size), umoci to unpack,
//! podman, and containerd's ctr (which resolves tags with HEAD first).

mod common;
mod support;

use std::process::Command;

use common::TestServer;
use support::{Containerd, resolve_in_root, run};

fn start_server() -> TestServer {
    TestServer::builder().env("NIX_TIMEOUT", "300").start()
}

fn host(server: &TestServer) -> String {
    server.addr().to_string()
}

#[test]
fn skopeo_copy_of_hello_git_unpacks_and_runs_hello() {
    let server = start_server();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    run(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{}/hello/git:latest", host(&server)),
        &format!("oci:{}:img", layout.display()),
    ]));

    let bundle = work.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:img", layout.display()))
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");

    let hello = run(Command::new("chroot").arg(&rootfs).arg("/bin/hello"));
    assert_eq!(hello.trim(), "Hello, world!");
    assert!(
        resolve_in_root(&rootfs, "/etc/ssl/certs/ca-bundle.crt").is_some(),
        "the CA bundle does not resolve inside the image"
    );
    assert!(
        resolve_in_root(&rootfs, "/bin/git").is_some(),
        "git is missing from the image"
    );
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
    let root = store.path().join("root");
    let runroot = store.path().join("runroot");
    let reference = format!("{}/hello:latest", host(&server));
    let podman = || {
        let mut cmd = Command::new("podman");
        cmd.arg("--root")
            .arg(&root)
            .arg("--runroot")
            .arg(&runroot)
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"]);
        cmd
    };
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
    let output = containerd
        .ctr()
        .args(["image", "pull", "--plain-http", &reference])
        .output()
        .expect("run ctr");
    assert!(
        output.status.success(),
        "ctr pull failed: {}\n{}\ncontainerd log: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        containerd.log()
    );
    let images = run(containerd.ctr().args(["image", "ls", "-q"]));
    assert!(
        images.lines().any(|l| l.trim() == reference),
        "ctr image ls does not list {reference}: {images}"
    );
}
