//! A `nixery` server on each storage backend, for the promises made for
//! all of them: the filesystem, GCS (fake-gcs-server) and S3 (s3s-fs,
//! which checks every signature), the two buckets with their redirects
//! on, as a deployment has them. A test body written once against
//! [`ServerOn`] runs on each; a client that follows redirects then meets
//! the bucket exactly as a registry client would.

use std::sync::Arc;

use nixery::storage::Storage;

use crate::gcs::FakeGcs;
use crate::s3::{S3Server, S3sFs};
use crate::server::{TestServer, TestServerBuilder};

/// Which backend a server stores in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A directory: blobs are streamed by the server.
    Filesystem,
    /// fake-gcs-server's bucket: blobs are redirected to it.
    Gcs,
    /// s3s-fs's bucket: blobs are redirected to presigned URLs.
    S3,
}

/// A running server on one backend, with a backend of its own on the same
/// storage (to put objects there as the server would) and the runtime the
/// storage calls run on. Its methods block: call them outside async code.
pub struct ServerOn {
    /// The server.
    pub server: TestServer,
    /// Which backend it uses.
    pub backend: Backend,
    storage: Arc<dyn Storage>,
    /// The settings that put a server on this storage.
    storage_env: Vec<(String, String)>,
    /// The emulator the bucket lives in, if any, kept alive with the server.
    _gcs: Option<FakeGcs>,
    _s3: Option<S3sFs>,
    runtime: tokio::runtime::Runtime,
}

impl ServerOn {
    /// Starts `backend`'s emulator, if any, and a server on it configured
    /// further by `configure`.
    pub fn start(
        backend: Backend,
        configure: impl FnOnce(TestServerBuilder) -> TestServerBuilder,
    ) -> ServerOn {
        let runtime = tokio::runtime::Runtime::new().expect("a runtime for the storage calls");
        let builder = configure(TestServer::builder());
        type Started = (TestServer, Arc<dyn Storage>, Vec<(String, String)>);
        let owned = |env: Vec<(&str, String)>| {
            env.into_iter()
                .map(|(key, value)| (key.to_owned(), value))
                .collect::<Vec<_>>()
        };
        let ((server, storage, storage_env), gcs, s3): (Started, _, _) = match backend {
            Backend::Filesystem => {
                let server = builder.start();
                let storage = Arc::new(server.storage());
                let env = vec![(
                    "STORAGE_PATH".to_owned(),
                    server.storage_path().display().to_string(),
                )];
                ((server, storage, env), None, None)
            }
            Backend::Gcs => {
                let gcs = runtime.block_on(FakeGcs::start());
                let storage = Arc::new(runtime.block_on(gcs.storage()));
                let env = owned(crate::gcs::server_env(&gcs.host()));
                let server = builder.envs(env.clone()).start();
                ((server, storage, env), Some(gcs), None)
            }
            Backend::S3 => {
                let s3 = runtime.block_on(S3sFs::start());
                let storage = Arc::new(runtime.block_on(s3.storage()));
                let env = owned(s3.server_env(&s3.origin()));
                let server = builder.envs(env.clone()).start();
                ((server, storage, env), None, Some(s3))
            }
        };
        ServerOn {
            server,
            backend,
            storage,
            storage_env,
            _gcs: gcs,
            _s3: s3,
            runtime,
        }
    }

    /// Stores `bytes` as a blob, as the builder does; its digest
    /// `sha256:<hex>`.
    pub fn put_blob(&self, bytes: &[u8], content_type: &str) -> String {
        self.runtime.block_on(crate::server::put_blob(
            self.storage.as_ref(),
            bytes,
            content_type,
        ))
    }

    /// The backend's own view of the storage.
    pub fn storage(&self) -> &dyn Storage {
        self.storage.as_ref()
    }

    /// The same view, shared (to wrap it, or to run a collection on it).
    pub fn shared_storage(&self) -> Arc<dyn Storage> {
        self.storage.clone()
    }

    /// Another server on the same storage (its own cache directory),
    /// configured further by `configure`.
    pub fn another_server(
        &self,
        configure: impl FnOnce(TestServerBuilder) -> TestServerBuilder,
    ) -> TestServer {
        configure(TestServer::builder())
            .envs(self.storage_env.clone())
            .start()
    }

    /// Runs `future` on this value's runtime.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }
}
