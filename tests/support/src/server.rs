//! Test harness shared by the end-to-end tests: runs the real `nixery`
//! binary on a free 127.0.0.1 port with a temporary `STORAGE_PATH`.
//!
//! ```ignore
//! use support::server::{self, TestServer};
//! let server = TestServer::builder().env("NIX_TIMEOUT", "5").start();
//! let storage = server.storage();            // same STORAGE_PATH as the server
//! let digest = server::put_blob(&storage, b"hello", "text/plain").await;
//! let blob = server.get(&format!("/v2/x/blobs/{digest}")).expect_status(200);
//! assert!(server.logs().iter().any(|l| l.contains("\"response\"")));
//! server.stop();                             // SIGTERM, waits for exit
//! ```
//!
//! The server inherits the test's environment except every nixery setting
//! (so a developer's `NIXERY_CHANNEL` cannot leak in); `PORT=0`,
//! `NIXERY_HOST=127.0.0.1`, `STORAGE_PATH` and `NIXERY_CACHE_DIR` (a fresh
//! temporary directory, so the local manifest tier starts empty) are set,
//! then whatever
//! [`TestServerBuilder::env`] adds. `start` reads stdout until the
//! `listening` event and takes the address from its `addr` field; every
//! stdout line (JSON logs) and stderr line is kept. The process is killed by
//! PID when the [`TestServer`] is dropped; if the test is failing, the end
//! of its log is printed first. Requests go through
//! [`TestServer::get`] and friends ([`crate::answer`]), which fail the
//! test unless they get the status they expect.

pub use crate::answer::{Answer, raw_request, raw_request_with};

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use bytes::Bytes;
use nixery::storage::{Storage, StorageKey, filesystem::FilesystemStorage};
use sha2::{Digest as _, Sha256};

/// The media type of Docker V2 image manifests.
pub const MANIFEST_V2: &str = crate::media::DOCKER_MANIFEST;

/// How long `start` waits for the `listening` event.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The `nixery` binary, without any nixery setting or AWS credential
/// variable of the test's environment (so a developer's `NIXERY_CHANNEL`
/// or AWS profile cannot leak in).
pub fn nixery_command() -> Command {
    let mut cmd = Command::new(crate::nixery_binary());
    // Settings, and what the s3 backend's AWS credential chain reads.
    let credential_vars = nixery::storage::s3::settings::CREDENTIAL_VARS
        .iter()
        .copied();
    for key in nixery::config::env_vars()
        .into_iter()
        .chain(credential_vars)
    {
        cmd.env_remove(key);
    }
    cmd
}

/// Configures and starts a [`TestServer`].
#[derive(Default)]
pub struct TestServerBuilder {
    env: Vec<(String, String)>,
    args: Vec<String>,
    storage_path: Option<PathBuf>,
}

impl TestServerBuilder {
    /// Set an environment variable for the server.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Set every `(variable, value)` of `vars` (e.g. a storage backend's
    /// settings: [`crate::gcs::server_env`], [`crate::s3::MotoS3::server_env`]).
    pub fn envs<K: Into<String>, V: Into<String>>(
        self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        vars.into_iter()
            .fold(self, |builder, (key, value)| builder.env(key, value))
    }

    /// Build from the git repository in the directory `repo`
    /// (`NIXERY_PKGS_REPO=file://<repo>`).
    pub fn pkgs_repo(self, repo: &Path) -> Self {
        self.env("NIXERY_PKGS_REPO", format!("file://{}", repo.display()))
    }

    /// Add a command-line argument (e.g. `serve`).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Use this `STORAGE_PATH` (kept after the server stops) instead of a
    /// fresh temporary directory.
    pub fn storage_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.storage_path = Some(path.into());
        self
    }

    fn command(&self, storage_path: &Path, cache_dir: &Path) -> Command {
        let mut cmd = nixery_command();
        cmd.env("PORT", "0")
            .env("NIXERY_HOST", "127.0.0.1")
            .env("STORAGE_PATH", storage_path)
            .env("NIXERY_CACHE_DIR", cache_dir)
            .env("RUST_LOG", "info");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.args(&self.args).stdin(Stdio::null());
        cmd
    }

    /// The binary started with stdout and stderr piped.
    fn spawn(&self, storage_path: &Path, cache_dir: &Path) -> Child {
        self.command(storage_path, cache_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nixery")
    }

    /// Run the binary and wait (at most [`START_TIMEOUT`]) for it to exit
    /// by itself, e.g. on a configuration error.
    pub fn run_to_exit(self) -> Output {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = self
            .storage_path
            .clone()
            .unwrap_or_else(|| dir.path().to_path_buf());
        let mut child = self.spawn(&path, dir.path());
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if child.try_wait().expect("wait for nixery").is_some() {
                return child.wait_with_output().expect("collect nixery output");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let out = child.wait_with_output().expect("collect nixery output");
                panic!(
                    "nixery did not exit; stdout: {} stderr: {}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Start the server and wait for its `listening` event.
    pub fn start(self) -> TestServer {
        let temp_dir = match self.storage_path {
            Some(_) => None,
            None => Some(tempfile::tempdir().expect("temporary directory")),
        };
        let storage_path = self
            .storage_path
            .clone()
            .or_else(|| temp_dir.as_ref().map(|d| d.path().to_path_buf()))
            .expect("a storage path");
        let cache_dir = tempfile::tempdir().expect("temporary directory");
        let mut child = self.spawn(&storage_path, cache_dir.path());
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<SocketAddr>();
        let stdout = child.stdout.take().expect("piped stdout");
        let stdout_logs = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = listening_addr(&line) {
                    let _ = tx.send(addr);
                }
                stdout_logs.lock().unwrap().push(line);
            }
        });
        let err = child.stderr.take().expect("piped stderr");
        let err_lines = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                err_lines.lock().unwrap().push(line);
            }
        });
        let mut server = TestServer {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            storage_path,
            _temp_dir: temp_dir,
            _cache_dir: cache_dir,
            logs,
            stderr,
        };
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => server.addr = addr,
            Err(_) => panic!(
                "nixery did not log `listening`; stdout: {:?} stderr: {:?}",
                server.logs(),
                server.stderr()
            ),
        }
        server
    }
}

/// `answer`, a served manifest of `name:tag`, if it is a Docker V2 one.
fn served_manifest(answer: Answer, name: &str, tag: &str) -> Answer {
    assert_eq!(
        answer.header("content-type"),
        Some(MANIFEST_V2),
        "manifest {name}:{tag}"
    );
    answer
}

/// The address in a `listening` log event, if `line` is one.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let event: serde_json::Value = serde_json::from_str(line).ok()?;
    if event["message"] != "listening" {
        return None;
    }
    event["addr"].as_str()?.parse().ok()
}

/// A running `nixery` process.
pub struct TestServer {
    child: Option<Child>,
    addr: SocketAddr,
    storage_path: PathBuf,
    _temp_dir: Option<tempfile::TempDir>,
    _cache_dir: tempfile::TempDir,
    logs: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl TestServer {
    /// A builder with the default environment.
    pub fn builder() -> TestServerBuilder {
        TestServerBuilder::default()
    }

    /// Start with the default environment.
    pub fn start() -> Self {
        Self::builder().start()
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The manifest of `name:tag` (a GET accepting Docker V2 manifests,
    /// waiting up to ten minutes for a cold build), which must be served:
    /// fails the test (with the answer's body) on any other status or
    /// content type.
    pub fn manifest(&self, name: &str, tag: &str) -> Vec<u8> {
        let answer = self.manifest_call(name, tag).expect_status(200);
        served_manifest(answer, name, tag).body
    }

    /// [`Self::manifest`] as JSON.
    pub fn manifest_json(&self, name: &str, tag: &str) -> serde_json::Value {
        serde_json::from_slice(&self.manifest(name, tag)).expect("manifest JSON")
    }

    /// [`Self::manifest_json`] from async code.
    pub async fn manifest_json_async(&self, name: &str, tag: &str) -> serde_json::Value {
        let answer = self.manifest_call(name, tag).expect_status_async(200).await;
        served_manifest(answer, name, tag).json()
    }

    fn manifest_call(&self, name: &str, tag: &str) -> crate::answer::Call<'_> {
        self.get(&format!("/v2/{name}/manifests/{tag}"))
            .accept(MANIFEST_V2)
    }

    /// The server's `STORAGE_PATH`.
    pub fn storage_path(&self) -> &Path {
        &self.storage_path
    }

    /// The server's `NIXERY_CACHE_DIR`.
    pub fn cache_dir(&self) -> &Path {
        self._cache_dir.path()
    }

    /// A filesystem storage on the server's `STORAGE_PATH`.
    pub fn storage(&self) -> FilesystemStorage {
        FilesystemStorage::new(&self.storage_path).expect("open storage")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Every stdout line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Every stdout line so far that parses as JSON.
    pub fn log_events(&self) -> Vec<serde_json::Value> {
        self.logs()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Every log event so far, including every event the server logged
    /// before this call. The server writes log lines from a thread of its
    /// own, so a line can reach stdout just after the response that
    /// followed it; this sends a request to a path of its own and waits for
    /// that request's `response` event, which the server writes after all
    /// earlier lines.
    pub fn settled_log_events(&self) -> Vec<serde_json::Value> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = format!("/v2/_log-barrier/{}-{n}", std::process::id());
        raw_request(self.addr, "GET", path.as_bytes());
        self.wait_for_event(Duration::from_secs(30), |e| {
            e["message"] == "response" && e["span"]["path"] == path.as_str()
        })
        .unwrap_or_else(|| panic!("no response event for the log barrier {path}"));
        self.log_events()
    }

    /// Every stdout line so far that contains one of `needles`.
    pub fn log_lines_with(&self, needles: &[&str]) -> Vec<String> {
        self.logs()
            .into_iter()
            .filter(|line| needles.iter().any(|needle| line.contains(needle)))
            .collect()
    }

    /// Every stderr line so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Wait (at most `timeout`) for a log event matching `pred`.
    pub fn wait_for_event(
        &self,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.log_events().into_iter().find(|e| pred(e)) {
                return Some(e);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Send a signal to the process.
    pub fn signal(&self, signal: libc::c_int) {
        if let Some(child) = &self.child {
            let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
            // SAFETY: kill(2) on our own child's pid has no memory effects.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }

    /// Wait (at most 30 s) for the process to exit by itself.
    pub fn wait(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("server already reaped");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait for nixery") {
                self.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "nixery did not exit in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait for the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait()
    }
}

/// Lines of the server's log printed when a test fails.
const LOG_LINES_ON_FAILURE: usize = 300;

impl Drop for TestServer {
    /// Kills the process; when the test is failing (panicking), first
    /// prints the end of the server's log and its stderr, so that a failed
    /// assertion on a slow path comes with what the server did.
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Never panic again here (that would abort the test run).
            let logs = self.logs.lock().map(|l| l.clone()).unwrap_or_default();
            let stderr = self.stderr.lock().map(|l| l.clone()).unwrap_or_default();
            let skipped = logs.len().saturating_sub(LOG_LINES_ON_FAILURE);
            eprintln!(
                "--- nixery log (pid {}, last {} of {} lines) ---",
                self.pid(),
                logs.len() - skipped,
                logs.len()
            );
            for line in &logs[skipped..] {
                eprintln!("{line}");
            }
            eprintln!("--- nixery stderr ---");
            for line in stderr {
                eprintln!("{line}");
            }
        }
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Store `bytes` as a blob the way the builder does (staging, then moved
/// to `layers/<sha256>`) and return its digest `sha256:<hex>`.
pub async fn put_blob(storage: &dyn Storage, bytes: &[u8], content_type: &str) -> String {
    let hex = sha256_hex(bytes);
    let staging = StorageKey::staging(&format!("upload-{hex}")).expect("staging key");
    let chunks: Vec<std::io::Result<Bytes>> = bytes
        .chunks(64 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let persisted = storage
        .persist(
            &staging,
            content_type,
            Box::pin(futures::stream::iter(chunks)),
        )
        .await
        .expect("persist blob");
    assert_eq!(persisted.sha256.hex(), hex);
    storage
        .move_object(&staging, &StorageKey::layer(&persisted.sha256))
        .await
        .expect("move blob");
    format!("sha256:{hex}")
}
