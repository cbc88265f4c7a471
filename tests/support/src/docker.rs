//! A private Docker daemon for one test: its data, exec state, socket and
//! pid file live in a temporary directory, it uses the `vfs` storage driver
//! (no kernel overlay needed), no bridge and no iptables, and trusts plain
//! HTTP registries on 127.0.0.0/8. Stopped by PID when dropped.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// How long `start` waits for the daemon to answer.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `dockerd`.
pub struct Docker {
    child: Child,
    dir: tempfile::TempDir,
    client: PathBuf,
}

impl Docker {
    /// Start `dockerd` and wait until `docker version` reaches it.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("dkr")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        let log = std::fs::File::create(d.join("dockerd.log")).expect("log file");
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("-H")
            .arg(format!("unix://{}", d.join("sock").display()))
            .arg("--pidfile")
            .arg(d.join("pid"))
            .arg("--config-file")
            .arg(write_config(d))
            .args([
                "--storage-driver",
                "vfs",
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--insecure-registry",
                "127.0.0.0/8",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start dockerd (is docker.io installed? scripts/setup-host.sh installs it)");
        let daemon = Self {
            child,
            client: client_beside_daemon(),
            dir,
        };
        let probe = || {
            let mut version = daemon.docker();
            version.arg("version");
            version
        };
        crate::await_daemon("dockerd", START_TIMEOUT, probe, || daemon.log());
        daemon
    }

    /// A `docker` command talking to this daemon, with its own client
    /// configuration directory.
    pub fn docker(&self) -> Command {
        let mut cmd = Command::new(&self.client);
        cmd.env("DOCKER_CONFIG", self.dir.path().join("client"))
            .arg("-H")
            .arg(format!("unix://{}", self.dir.path().join("sock").display()));
        cmd
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// `docker pull <args>` (options, then the image); fails the test with
    /// docker's output and the daemon's log unless it succeeds.
    pub fn pull(&self, args: &[&str]) {
        let mut pull = self.docker();
        pull.arg("pull").args(args);
        crate::run_explained(pull, || format!("dockerd log:\n{}", self.log()));
    }

    /// `docker run --rm --network none <image> <args>`: what the container
    /// printed.
    pub fn run(&self, image: &str, args: &[&str]) -> String {
        crate::run(
            self.docker()
                .args(["run", "--rm", "--network", "none", image])
                .args(args),
        )
    }

    /// `docker image inspect --format <format> <image>`, trimmed.
    pub fn inspect(&self, format: &str, image: &str) -> String {
        crate::run(
            self.docker()
                .args(["image", "inspect", "--format", format, image]),
        )
        .trim()
        .to_owned()
    }
}

/// An empty daemon configuration, so that no host `/etc/docker/daemon.json`
/// applies.
fn write_config(dir: &Path) -> PathBuf {
    let path = dir.join("daemon.json");
    std::fs::write(&path, "{}\n").expect("write daemon.json");
    path
}

/// The `docker` client installed with `dockerd` (same version), or the one
/// on `PATH`.
fn client_beside_daemon() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("dockerd"))
            .find(|p| p.is_file())
    });
    found
        .and_then(|dockerd| dockerd.parent().map(|dir| dir.join("docker")))
        .filter(|client| client.is_file())
        .unwrap_or_else(|| PathBuf::from("docker"))
}

impl Drop for Docker {
    fn drop(&mut self) {
        // SIGTERM lets dockerd stop its containerd and unmount; SIGKILL if
        // it takes too long.
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's pid has no memory effects.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
