//! A private containerd daemon for one test (pulls with `ctr`).

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

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
        let probe = || {
            let mut version = daemon.ctr();
            version.arg("version");
            version
        };
        crate::await_daemon("containerd", Duration::from_secs(20), probe, || {
            daemon.log()
        });
        daemon
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
        let mut pull = self.ctr();
        pull.args(["image", "pull", "--plain-http"])
            .args(args)
            .arg(reference);
        crate::run_explained(pull, || format!("containerd log: {}", self.log()));
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
