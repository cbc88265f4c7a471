//! The one support tree of the integration tests (`tests/*.rs`), a crate of
//! its own so that it is compiled once rather than into every test binary,
//! and so that a helper only some tests use needs no `allow(dead_code)`:
//!
//! * [`server`]: the real `nixery` binary on a free 127.0.0.1 port;
//!   [`answer`]: requests to it that fail the test unless they get the
//!   status they expect;
//! * this module: fixtures (a git repository holding the offline package
//!   set, log and metric readers, skopeo copies, podman, looking inside
//!   unpacked images, running commands);
//! * [`media`]: the media types the tests expect;
//! * [`auth`]: htpasswd files and token keys for pull authentication;
//! * [`in_process`]: the registry served in the test's own process, with a
//!   builder that refuses every package;
//! * [`docker`]: a private Docker daemon; [`containerd`]: a private
//!   containerd;
//! * [`gcs`]: a real fake-gcs-server; [`s3`]: real S3 servers (s3s-fs,
//!   which checks signatures, and moto); [`backends`]: a server on each
//!   backend, for promises made for all of them;
//!   [`net`]: what both share (the emulator process, test bodies and the
//!   checks both backends run, fault injection, a proxy);
//! * [`interposed`]: a storage wrapper that injects a race or a fault at
//!   the n-th listing, or holds writes to one key;
//! * [`nix`]: the Nix step as the server runs it, and readers of its result;
//! * [`real_nix`]: the real nixpkgs trees of `../shared/real-nix`;
//! * [`popcount`]: a binary cache for the popcount tests.

pub mod answer;
pub mod auth;
pub mod backends;
pub mod containerd;
pub mod docker;
pub mod gcs;
pub mod in_process;
pub mod interposed;
pub mod media;
pub mod net;
pub mod nix;
pub mod popcount;
pub mod real_nix;
pub mod s3;
pub mod server;

pub use containerd::Containerd;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// The root of the nixery repository (this crate lives in `tests/support`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `nixery` binary Cargo built for the test being run: `NEXTEST_BIN_EXE_nixery`
/// under nextest, else the `nixery` beside the test binary's `deps/`
/// directory (where `cargo test` puts both).
pub fn nixery_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NEXTEST_BIN_EXE_nixery") {
        return PathBuf::from(path);
    }
    let test_binary = std::env::current_exe().expect("the test binary's path");
    let profile_dir = test_binary
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lies in <profile>/deps");
    profile_dir.join("nixery")
}

/// Number of log events of `server` whose message is `message` (e.g.
/// `building image` for Nix builds, `layer uploaded` for packed layers),
/// counting every event logged before the call.
pub fn count_logs(server: &crate::server::TestServer, message: &str) -> usize {
    server
        .settled_log_events()
        .iter()
        .filter(|event| event["message"] == message)
        .count()
}

/// The value of counter `name` at the server's `/metrics` endpoint.
pub fn metric(server: &crate::server::TestServer, name: &str) -> u64 {
    let text = server.get("/metrics").expect_status(200).text();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no counter {name} in:\n{text}"))
}

/// The layer digests of a manifest, in manifest order.
pub fn layer_digests(manifest: &serde_json::Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .expect("layers array")
        .iter()
        .map(|l| l["digest"].as_str().expect("digest").to_owned())
        .collect()
}

/// How many layers of manifest `b` are also layers of manifest `a`.
pub fn shared_layers(a: &serde_json::Value, b: &serde_json::Value) -> usize {
    let in_a: std::collections::HashSet<String> = layer_digests(a).into_iter().collect();
    layer_digests(b)
        .iter()
        .filter(|digest| in_a.contains(*digest))
        .count()
}

/// The sorted names of the entries of `dir`.
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| {
            e.expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// The offline package set in this repository.
pub fn offline_pkgs_dir() -> PathBuf {
    repo_root().join("prepare-image/offline-pkgs")
}

/// An image `skopeo copy` wrote into an OCI layout.
pub struct CopiedImage {
    /// The layout's directory.
    pub layout: PathBuf,
    /// The manifest the layout's index names.
    pub manifest: serde_json::Value,
    /// The hex digests of every blob in the layout.
    pub blobs: std::collections::BTreeSet<String>,
}

/// `skopeo copy` of `reference` (`name:tag`) from the registry at `addr`
/// into an OCI layout at `layout` (tag `img`); fails the test unless skopeo
/// succeeds. skopeo checks every blob against its digest; this checks each
/// copied blob's bytes against its name once more.
pub fn skopeo_copy(addr: impl std::fmt::Display, reference: &str, layout: &Path) -> CopiedImage {
    run(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{addr}/{reference}"),
        &format!("oci:{}:img", layout.display()),
    ]));
    let blob_dir = layout.join("blobs/sha256");
    let mut blobs = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(&blob_dir).expect("copied blobs") {
        let path = entry.expect("directory entry").path();
        let hex = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("blob name")
            .to_owned();
        let bytes = std::fs::read(&path).expect("copied blob");
        assert_eq!(server::sha256_hex(&bytes), hex, "copied blob {hex}");
        blobs.insert(hex);
    }
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("layout index"))
            .expect("index JSON");
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .expect("manifest digest");
    let manifest = std::fs::read(blob_dir.join(digest.trim_start_matches("sha256:")))
        .expect("copied manifest");
    CopiedImage {
        layout: layout.to_owned(),
        manifest: serde_json::from_slice(&manifest).expect("manifest JSON"),
        blobs,
    }
}

/// Copy `name:latest` from the registry at `addr` with skopeo
/// ([`skopeo_copy`]) and unpack it with umoci: the temporary directory
/// holding both, and the image's root filesystem inside it.
pub fn pull_and_unpack(addr: impl std::fmt::Display, name: &str) -> (tempfile::TempDir, PathBuf) {
    let work = tempfile::tempdir().expect("temp dir");
    let layout = work.path().join("layout");
    skopeo_copy(addr, &format!("{name}:latest"), &layout);
    let bundle = work.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:img", layout.display()))
        .arg(&bundle));
    (work, bundle.join("rootfs"))
}

/// A `podman` command whose storage (vfs) and run state live under
/// `store`, so that a test touches no podman state of the machine.
pub fn podman(store: &Path) -> Command {
    let mut cmd = Command::new("podman");
    cmd.arg("--root")
        .arg(store.join("root"))
        .arg("--runroot")
        .arg(store.join("runroot"))
        .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"]);
    cmd
}

/// Waits (at most `within`) for the daemon `name` to answer: until the
/// command `probe` makes succeeds; fails the test with the daemon's `log`
/// if it never does.
pub fn await_daemon(
    name: &str,
    within: Duration,
    probe: impl FnMut() -> Command,
    log: impl FnOnce() -> String,
) {
    if !succeeds_within(within, probe) {
        panic!("{name} did not start; log:\n{}", log());
    }
}

/// Runs the command `probe` makes every 200 ms until it succeeds (a
/// daemon answering, say): whether it did within `within`.
pub fn succeeds_within(within: Duration, mut probe: impl FnMut() -> Command) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let ok = probe()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// Run a command and return its stdout, failing the test with its stderr.
pub fn run(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run_output(cmd).stdout).into_owned()
}

/// Run a command to its end; fail the test (with the command line, its
/// exit status, stdout and stderr) unless it succeeded.
pub fn run_output(cmd: impl std::borrow::BorrowMut<Command>) -> std::process::Output {
    run_explained(cmd, String::new)
}

/// [`run_output`], whose failure also shows what `context` tells (a
/// daemon's log, say).
pub fn run_explained(
    mut cmd: impl std::borrow::BorrowMut<Command>,
    context: impl FnOnce() -> String,
) -> std::process::Output {
    let cmd = cmd.borrow_mut();
    let output = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?}: {e} (is it installed? scripts/setup-host.sh installs it)")
    });
    assert!(
        output.status.success(),
        "{cmd:?} failed with {}:\nstdout: {}\nstderr: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        context()
    );
    output
}

/// A git repository holding a copy of the offline package set, committed
/// once. Returns the directory (keep it alive) and the commit hash.
pub fn offline_pkgs_repo() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = dir.path();
    run(Command::new("cp")
        .arg("-r")
        .arg(format!("{}/.", offline_pkgs_dir().display()))
        .arg(repo));
    git(repo, &["init", "-q", "-b", "main"]);
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", "offline package set"]);
    let commit = git(repo, &["rev-parse", "HEAD"]);
    (dir, commit)
}

/// `git -C dir args` with a test identity; its stdout, trimmed.
pub fn git(dir: &Path, args: &[&str]) -> String {
    run(Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=test", "-c", "user.email=test@localhost"])
        .args(args))
    .trim()
    .to_string()
}

/// Commit a `hello-greeting.txt` (what the offline set's `hello` prints)
/// holding `greeting` in the repository `dir`; the new commit.
pub fn commit_greeting(dir: &Path, greeting: &str) -> String {
    std::fs::write(dir.join("hello-greeting.txt"), format!("{greeting}\n"))
        .expect("write hello-greeting.txt");
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", greeting]);
    git(dir, &["rev-parse", "HEAD"])
}

/// The keys of a JSON object (panics if `value` is not an object).
pub fn keys(value: &serde_json::Value) -> std::collections::BTreeSet<&str> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect()
}

/// The strings of a JSON array (panics if `value` is not an array).
pub fn strings(value: &serde_json::Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .filter_map(serde_json::Value::as_str)
        .collect()
}

/// Resolve `path` inside the root filesystem `root`, following symlinks
/// (absolute targets are taken relative to `root`), as a chroot would.
pub fn resolve_in_root(root: &Path, path: &str) -> Option<PathBuf> {
    let mut current = PathBuf::from(path);
    for _ in 0..40 {
        let mut resolved = root.to_path_buf();
        let components: Vec<_> = current
            .components()
            .filter(|c| matches!(c, std::path::Component::Normal(_)))
            .collect();
        let mut restart = None;
        for (i, component) in components.iter().enumerate() {
            resolved.push(component);
            if let Ok(target) = std::fs::read_link(&resolved) {
                let rest: PathBuf = components[i + 1..].iter().collect();
                let next = if target.is_absolute() {
                    target.join(rest)
                } else {
                    let parent = resolved
                        .parent()
                        .and_then(|p| p.strip_prefix(root).ok())
                        .map(|p| Path::new("/").join(p))
                        .unwrap_or_else(|| PathBuf::from("/"));
                    parent.join(target).join(rest)
                };
                restart = Some(next);
                break;
            }
        }
        match restart {
            Some(next) => current = next,
            None => return resolved.exists().then_some(resolved),
        }
    }
    None
}

/// A copy of the offline package set whose derivations are declared for
/// the build machine whatever system is asked for, so that `arm64` images
/// build here (their programs are x86-64, their config says arm64).
pub fn any_system_pkgs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    run(Command::new("cp")
        .arg("-r")
        .arg(format!("{}/.", offline_pkgs_dir().display()))
        .arg(dir.path()));
    let default = dir.path().join("default.nix");
    let text = std::fs::read_to_string(&default).expect("default.nix");
    // The set's arguments start with `{ system ? builtins.currentSystem,`
    // and its body with `let`: drop the argument, bind it in the `let`.
    let argument = "{ system ? builtins.currentSystem, ";
    let header_end = text.find(argument).and_then(|start| {
        let after = start + text[start..].find("\nlet\n")? + "\nlet\n".len();
        Some((start, after))
    });
    let Some((start, after)) = header_end else {
        panic!("offline-pkgs/default.nix changed shape");
    };
    let text = format!(
        "{}{{ {}  system = builtins.currentSystem;\n{}",
        &text[..start],
        &text[start + argument.len()..after],
        &text[after..]
    );
    std::fs::write(&default, text).expect("write default.nix");
    dir
}
