//! Real S3 servers for the s3 backend tests: s3s-fs, which verifies every
//! SigV4 signature (header-signed calls and presigned URLs, including the
//! method a URL was signed for), and moto in server mode, which checks
//! none unless asked.
//!
//! Each [`S3sFs`] is one `s3s-fs` process on 127.0.0.1 with a free port,
//! one access key and one bucket (a directory under its own temporary
//! root), killed by PID when dropped. The binary is taken from `S3S_FS`,
//! else `/opt/s3s-fs/bin/s3s-fs` (where `scripts/setup-host.sh` installs
//! it), else `PATH`; tests fail (not skip) without it. It implements every
//! call the backend makes (`PutObject` with `If-None-Match`, multipart
//! uploads, `CopyObject`, `UploadPartCopy`, listings, deletes), so it is
//! the server of the tests that pull through redirects.
//!
//! Each [`MotoS3`] is one `moto_server` process on 127.0.0.1 with a free
//! port and one bucket, killed by PID when dropped. The binary is taken
//! from `MOTO_SERVER`, else `/opt/nixery-venv/bin/moto_server` (where
//! `scripts/setup-host.sh` installs `moto[server]`), else `PATH`; tests
//! fail (not skip) without it.
//!
//! By default moto accepts any signature. [`MotoS3::start_with_auth`]
//! turns on its IAM checks instead: a user with an inline policy allowing
//! `s3:*` and an access key are created by the first unauthenticated
//! calls, after which every request must be signed with that key.

use crate::net::emulator::{self, Emulator, free_port};
pub use crate::net::{checks, faults};

use std::process::Command;
use std::time::Duration;

pub use crate::net::bodies::{
    assert_absent, body_of, collect, gated_body, pattern, put, read_whole, sha256_hex,
};
use nixery::storage::s3::{S3Options, S3Settings, S3Storage, StaticKey};
use reqwest::Url;

/// The bucket every server is started with.
pub const BUCKET: &str = "nixery-test";
/// The region the tests use.
pub const REGION: &str = "us-east-1";
/// The key moto accepts when it checks nothing.
pub const ANY_KEY: (&str, &str) = ("testing", "testing");

/// Calls made without credentials to set up IAM checks: create the
/// bucket, the user, its policy and its access key.
const SETUP_CALLS: u32 = 4;

/// One running moto server.
pub struct MotoS3 {
    port: u16,
    process: Emulator,
    /// The access key the server checks, when it checks.
    key: Option<StaticKey>,
}

impl MotoS3 {
    /// Starts a server that checks no signature, with [`BUCKET`].
    pub async fn start() -> MotoS3 {
        let mut moto = Self::spawn(&[]).await;
        moto.create_bucket().await;
        moto
    }

    /// Starts a server that checks signatures against one IAM user's
    /// access key (see [`Self::key`]), with [`BUCKET`].
    pub async fn start_with_auth() -> MotoS3 {
        let mut moto =
            Self::spawn(&[("INITIAL_NO_AUTH_ACTION_COUNT", &SETUP_CALLS.to_string())]).await;
        moto.create_bucket().await;
        let iam = |body: Vec<(&'static str, String)>| {
            let url = moto.origin();
            let call = reqwest::Client::new()
                .post(url)
                // An unsigned call is routed by the service named here.
                .header(
                    "Authorization",
                    "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=00",
                )
                .form(&body);
            emulator::send_ok(call, "IAM call")
        };
        let v = || ("Version", "2010-05-08".to_owned());
        iam(vec![
            ("Action", "CreateUser".into()),
            ("UserName", "nixery".into()),
            v(),
        ])
        .await;
        iam(vec![
            ("Action", "PutUserPolicy".into()),
            ("UserName", "nixery".into()),
            ("PolicyName", "s3".into()),
            (
                "PolicyDocument",
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#.into(),
            ),
            v(),
        ])
        .await;
        let created = iam(vec![
            ("Action", "CreateAccessKey".into()),
            ("UserName", "nixery".into()),
            v(),
        ])
        .await;
        let field = |name: &str| {
            let open = format!("<{name}>");
            let start = created
                .find(&open)
                .expect("field in CreateAccessKey answer")
                + open.len();
            let end = created[start..].find('<').expect("end of field") + start;
            created[start..end].to_owned()
        };
        moto.key = Some(StaticKey {
            id: field("AccessKeyId"),
            secret: field("SecretAccessKey"),
        });
        moto
    }

    async fn spawn(env: &[(&str, &str)]) -> MotoS3 {
        let mut moto = MotoS3 {
            port: free_port(),
            process: Emulator::new("moto_server"),
            key: None,
        };
        let mut command = Command::new(locate_binary());
        command.args(["-H", "127.0.0.1", "-p", &moto.port.to_string()]);
        for (key, value) in env {
            command.env(key, value);
        }
        let probe = format!("{}/moto-api/", moto.origin());
        moto.process
            .start(command, &probe, Duration::from_secs(60), |_| true)
            .await;
        moto
    }

    async fn create_bucket(&mut self) {
        let create = reqwest::Client::new().put(format!("{}/{BUCKET}", self.origin()));
        emulator::send_ok(create, "creating the test bucket").await;
    }

    /// Lets anyone read the bucket's objects (a bucket policy granting
    /// `s3:GetObject` to `*`), as a bucket behind plain redirects must.
    pub async fn make_public(&self) {
        let policy = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::{BUCKET}/*"}}]}}"#
        );
        let put = reqwest::Client::new()
            .put(format!("{}/{BUCKET}?policy", self.origin()))
            // Unchecked by a server started with [`Self::start`].
            .header(
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00",
            )
            .body(policy);
        emulator::send_ok(put, "setting the bucket policy").await;
    }

    /// A proxy in front of this server failing `per_mille` of the API
    /// calls (seeded with `seed`): see [`faults::FaultProxy`].
    pub async fn fault_proxy(&self, per_mille: u32, seed: u64) -> faults::FaultProxy {
        let (listener, _) = crate::net::bind_proxy().await;
        faults::FaultProxy::forward_to(listener, self.port, per_mille, seed, faults::is_s3_api_call)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`.
    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The key it checks (with IAM checks on), else one it accepts.
    pub fn key(&self) -> StaticKey {
        self.key.clone().unwrap_or_else(|| StaticKey {
            id: ANY_KEY.0.to_owned(),
            secret: ANY_KEY.1.to_owned(),
        })
    }

    /// Settings for [`BUCKET`] on this server, or on `endpoint` (a proxy
    /// in front of it).
    pub fn settings_at(&self, endpoint: &str) -> S3Settings {
        S3Server::settings_at(self, endpoint)
    }

    /// Settings for [`BUCKET`] at `127.0.0.1:<port>`, whatever runs there,
    /// with a key moto accepts.
    pub fn settings_for_port(port: u16) -> S3Settings {
        S3Settings {
            static_key: Some(StaticKey {
                id: ANY_KEY.0.to_owned(),
                secret: ANY_KEY.1.to_owned(),
            }),
            ..S3Settings::for_endpoint(
                BUCKET,
                REGION,
                Url::parse(&format!("http://127.0.0.1:{port}")).expect("endpoint URL"),
            )
        }
    }

    /// A backend connected to the bucket with [`Self::key`].
    pub async fn storage(&self) -> S3Storage {
        self.storage_with(S3Options::default()).await
    }

    /// A backend connected with `options` and [`Self::key`].
    pub async fn storage_with(&self, options: S3Options) -> S3Storage {
        S3Server::storage_with(self, options).await
    }

    /// The environment a server on the s3 backend needs to use this
    /// bucket at `endpoint` with [`Self::key`] from the environment.
    pub fn server_env(&self, endpoint: &str) -> Vec<(&'static str, String)> {
        S3Server::server_env(self, endpoint)
    }

    /// The server process: freeze it, thaw it, read its log.
    pub fn process(&self) -> &Emulator {
        &self.process
    }

    /// Kills the server (SIGKILL by PID) and waits for it. Its objects
    /// live in memory and are gone.
    pub fn kill(&mut self) {
        self.process.kill();
    }
}

/// The S3 server a test talks to, whichever implementation it is.
pub trait S3Server {
    /// `http://127.0.0.1:<port>`.
    fn origin(&self) -> String;
    /// The access key it accepts.
    fn key(&self) -> StaticKey;

    /// Settings for [`BUCKET`] at `endpoint` (this server, or a proxy in
    /// front of it), with [`Self::key`].
    fn settings_at(&self, endpoint: &str) -> S3Settings {
        S3Settings {
            static_key: Some(self.key()),
            ..S3Settings::for_endpoint(BUCKET, REGION, Url::parse(endpoint).expect("endpoint URL"))
        }
    }

    /// A backend connected to the bucket with [`Self::key`] and `options`.
    fn storage_with(&self, options: S3Options) -> impl Future<Output = S3Storage> + Send
    where
        Self: Sync,
    {
        async move {
            S3Storage::connect_with(self.settings_at(&self.origin()), options)
                .await
                .expect("connect to the S3 test server")
        }
    }

    /// The environment a server on the s3 backend needs to use this
    /// bucket at `endpoint` with [`Self::key`], in the AWS names.
    fn server_env(&self, endpoint: &str) -> Vec<(&'static str, String)> {
        let key = self.key();
        vec![
            ("NIXERY_STORAGE_BACKEND", "s3".to_owned()),
            ("S3_BUCKET", BUCKET.to_owned()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_ENDPOINT_URL", endpoint.to_owned()),
            ("AWS_ACCESS_KEY_ID", key.id),
            ("AWS_SECRET_ACCESS_KEY", key.secret),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ]
    }
}

/// The access key every [`S3sFs`] checks.
pub const S3S_KEY: (&str, &str) = ("AKIANIXERYTEST", "nixery-test-secret-key");

/// One running s3s-fs server: signatures checked, objects on disk.
pub struct S3sFs {
    port: u16,
    process: Emulator,
    root: tempfile::TempDir,
}

impl S3sFs {
    /// Starts a server checking [`S3S_KEY`], with [`BUCKET`].
    pub async fn start() -> S3sFs {
        let mut server = S3sFs {
            port: free_port(),
            process: Emulator::new("s3s-fs"),
            root: tempfile::tempdir().expect("s3s-fs root"),
        };
        // A bucket is a directory of the root.
        std::fs::create_dir(server.root.path().join(BUCKET)).expect("bucket directory");
        let mut command = Command::new(locate_s3s_fs());
        command
            .args(["--host", "127.0.0.1", "--port", &server.port.to_string()])
            .args(["--access-key", S3S_KEY.0, "--secret-key", S3S_KEY.1])
            .arg(server.root.path())
            .env("RUST_LOG", "s3s=warn,s3s_fs=warn");
        let probe = format!("{}/", server.origin());
        // Any answer (an unsigned call is refused) means it listens.
        server
            .process
            .start(command, &probe, Duration::from_secs(30), |_| true)
            .await;
        server
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A backend connected to the bucket with [`S3S_KEY`].
    pub async fn storage(&self) -> S3Storage {
        self.storage_with(S3Options::default()).await
    }

    /// A proxy in front of this server failing `per_mille` of the API
    /// calls (seeded with `seed`): see [`faults::FaultProxy`].
    pub async fn fault_proxy(&self, per_mille: u32, seed: u64) -> faults::FaultProxy {
        let (listener, _) = crate::net::bind_proxy().await;
        faults::FaultProxy::forward_to(listener, self.port, per_mille, seed, faults::is_s3_api_call)
    }

    /// The environment of a server that names this bucket only in
    /// upstream Nixery's S3 variables (`S3_ENDPOINT`, `S3_ACCESS_KEY`,
    /// `S3_SECRET_KEY`), no `AWS_*` at all but the one that keeps the
    /// credential chain off the network.
    pub fn upstream_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("NIXERY_STORAGE_BACKEND", "s3".to_owned()),
            ("S3_BUCKET", BUCKET.to_owned()),
            ("S3_ENDPOINT", self.origin()),
            ("S3_ACCESS_KEY", S3S_KEY.0.to_owned()),
            ("S3_SECRET_KEY", S3S_KEY.1.to_owned()),
        ]
    }

    /// The server process: freeze it, thaw it, read its log.
    pub fn process(&self) -> &Emulator {
        &self.process
    }

    /// Kills the server (SIGKILL by PID); its objects stay on disk.
    pub fn kill(&mut self) {
        self.process.kill();
    }
}

impl S3Server for S3sFs {
    fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn key(&self) -> StaticKey {
        StaticKey {
            id: S3S_KEY.0.to_owned(),
            secret: S3S_KEY.1.to_owned(),
        }
    }
}

impl S3Server for MotoS3 {
    fn origin(&self) -> String {
        MotoS3::origin(self)
    }

    fn key(&self) -> StaticKey {
        MotoS3::key(self)
    }
}

/// `S3S_FS`, else where `scripts/setup-host.sh` installs it, else `PATH`.
fn locate_s3s_fs() -> std::path::PathBuf {
    emulator::locate(
        "s3s-fs",
        "S3S_FS",
        &["/opt/s3s-fs/bin/s3s-fs"],
        "run scripts/setup-host.sh (it installs s3s-fs 0.14.1 into /opt/s3s-fs) or set S3S_FS",
    )
}

/// `MOTO_SERVER`, else the venv of `scripts/setup-host.sh`, else
/// `moto_server` on `PATH`; panics with the install line when none exists.
fn locate_binary() -> std::path::PathBuf {
    emulator::locate(
        "moto_server",
        "MOTO_SERVER",
        &["/opt/nixery-venv/bin/moto_server"],
        "run scripts/setup-host.sh (it installs moto[server] into /opt/nixery-venv) \
         or set MOTO_SERVER",
    )
}
