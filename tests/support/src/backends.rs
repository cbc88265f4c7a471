//! A `nixery` server on each storage backend, for the promises made for
//! all of them: the filesystem, GCS (fake-gcs-server) and S3 (s3s-fs,
//! which checks every signature), the two buckets with their redirects
//! on, as a deployment has them. A test body written once against
//! [`ServerOn`] runs on each; a client that follows redirects then meets
//! the bucket exactly as a registry client would.

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
    storage: Box<dyn Storage>,
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
        let (server, storage, gcs, s3): (TestServer, Box<dyn Storage>, _, _) = match backend {
            Backend::Filesystem => {
                let server = builder.start();
                let storage = Box::new(server.storage());
                (server, storage, None, None)
            }
            Backend::Gcs => {
                let gcs = runtime.block_on(FakeGcs::start());
                let storage = Box::new(runtime.block_on(gcs.storage()));
                let server = builder.envs(crate::gcs::server_env(&gcs.host())).start();
                (server, storage, Some(gcs), None)
            }
            Backend::S3 => {
                let s3 = runtime.block_on(S3sFs::start());
                let storage = Box::new(runtime.block_on(s3.storage()));
                let server = builder.envs(s3.server_env(&s3.origin())).start();
                (server, storage, None, Some(s3))
            }
        };
        ServerOn {
            server,
            backend,
            storage,
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

    /// Runs `future` on this value's runtime.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }
}
