//! Fixtures for the end-to-end tests: a git repository holding the offline
//! package set, a private containerd, and helpers to look inside unpacked
//! images.
#![allow(dead_code)]

pub mod docker;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Number of log events of `server` whose message is `message` (e.g.
/// `building image` for Nix builds, `layer uploaded` for packed layers),
/// counting every event logged before the call.
pub fn count_logs(server: &crate::common::TestServer, message: &str) -> usize {
    server
        .settled_log_events()
        .iter()
        .filter(|event| event["message"] == message)
        .count()
}

/// The value of counter `name` at the server's `/metrics` endpoint.
pub fn metric(server: &crate::common::TestServer, name: &str) -> u64 {
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

/// The offline package set in this repository.
pub fn offline_pkgs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("prepare-image/offline-pkgs")
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
    String::from_utf8_lossy(&output.stdout).into_owned()
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
    let git = |args: &[&str]| {
        run(Command::new("git")
            .args(["-c", "user.name=test", "-c", "user.email=test@localhost"])
            .args(args)
            .current_dir(repo))
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "offline package set"]);
    let commit = git(&["rev-parse", "HEAD"]).trim().to_owned();
    (dir, commit)
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
