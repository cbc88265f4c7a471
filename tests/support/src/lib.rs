//! The one support tree of the integration tests (`tests/*.rs`), a crate of
//! its own so that it is compiled once rather than into every test binary,
//! and so that a helper only some tests use needs no `allow(dead_code)`:
//!
//! * [`server`]: the real `nixery` binary on a free 127.0.0.1 port;
//! * this module: fixtures (a git repository holding the offline package
//!   set, log and metric readers, a private containerd, looking inside
//!   unpacked images);
//! * [`docker`]: a private Docker daemon;
//! * [`gcs`]: a real fake-gcs-server; [`s3`]: a real moto S3 server;
//!   [`net`]: what both share (test bodies, fault injection, a proxy);
//! * [`nix`]: the Nix step as the server runs it, and readers of its result;
//! * [`real_nix`]: the real nixpkgs trees of `../shared/real-nix`;
//! * [`popcount`]: a binary cache for the popcount tests.

pub mod docker;
pub mod gcs;
pub mod net;
pub mod nix;
pub mod popcount;
pub mod real_nix;
pub mod s3;
pub mod server;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
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
    let text = reqwest::blocking::get(server.url("/metrics"))
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.text())
        .expect("GET /metrics");
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

/// The offline package set in this repository.
pub fn offline_pkgs_dir() -> PathBuf {
    repo_root().join("prepare-image/offline-pkgs")
}

/// Copy `name:latest` from the registry at `addr` with skopeo and unpack it
/// with umoci: the temporary directory holding both, and the image's root
/// filesystem inside it.
pub fn pull_and_unpack(addr: impl std::fmt::Display, name: &str) -> (tempfile::TempDir, PathBuf) {
    let work = tempfile::tempdir().expect("temp dir");
    let layout = work.path().join("layout");
    run(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{addr}/{name}:latest"),
        &format!("oci:{}:img", layout.display()),
    ]));
    let bundle = work.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:img", layout.display()))
        .arg(&bundle));
    (work, bundle.join("rootfs"))
}

/// Run a command and return its stdout, failing the test with its stderr.
pub fn run(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run_output(cmd).stdout).into_owned()
}

/// Run a command to its end; fail the test (with the command line, its
/// exit status, stdout and stderr) unless it succeeded.
pub fn run_output(mut cmd: impl std::borrow::BorrowMut<Command>) -> std::process::Output {
    let cmd = cmd.borrow_mut();
    let output = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?}: {e} (is it installed? scripts/setup-host.sh installs it)")
    });
    assert!(
        output.status.success(),
        "{cmd:?} failed with {}:\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
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

/// A containerd daemon with its own config, root, state and socket under a
/// temporary directory; killed by PID when dropped.
pub struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Containerd {
    /// Start containerd and wait until it answers on its socket.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path().display();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd-ttrpc.sock"
[debug]
  address = ""
[metrics]
  address = ""
"#
        );
        std::fs::write(dir.path().join("config.toml"), config).expect("write config");
        let log = std::fs::File::create(dir.path().join("containerd.log")).expect("log file");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start containerd (is it installed? scripts/setup-host.sh installs it)");
        let daemon = Self { child, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let ok = daemon
                .ctr()
                .arg("version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return daemon;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("containerd did not start; log: {}", daemon.log());
    }

    /// A `ctr` command talking to this daemon.
    pub fn ctr(&self) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(self.dir.path().join("containerd.sock"));
        cmd
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// `ctr image pull --plain-http <args> <reference>`, failing the test
    /// with ctr's output and the daemon's log.
    pub fn pull(&self, args: &[&str], reference: &str) {
        let output = self
            .ctr()
            .args(["image", "pull", "--plain-http"])
            .args(args)
            .arg(reference)
            .output()
            .expect("run ctr");
        assert!(
            output.status.success(),
            "ctr pull failed: {}\n{}\ncontainerd log: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
