//! The registry served inside the test's own process, on a filesystem
//! storage in a temporary directory, with an image builder that refuses
//! every package: for tests of the HTTP layer that need no Nix, or that
//! look at the server's end of a connection (its sockets are the test's
//! own file descriptors).

use std::{net::SocketAddr, sync::Arc};

use async_trait::async_trait;
use nixery::builder::{BuildError, BuiltManifest, ImageBuilder};
use nixery::http::AppState;
use nixery::image_index::IndexKind;
use nixery::media_type::ImageFormat;
use nixery::nix::{Refusal, RefusalReason};
use nixery::server::ServerError;
use nixery::storage::filesystem::FilesystemStorage;
use tokio::{sync::oneshot, task::JoinHandle};

/// A builder that builds nothing: every package of a name (its parts
/// between `/`) is refused as not found, as Nix refuses missing packages.
pub struct RefusingBuilder;

#[async_trait]
impl ImageBuilder for RefusingBuilder {
    async fn manifest(
        &self,
        name: &str,
        _tag: &str,
        _index: Option<IndexKind>,
        _format: ImageFormat,
    ) -> Result<BuiltManifest, BuildError> {
        Err(BuildError::PackagesRefused(not_found(name)))
    }

    async fn built_manifest(
        &self,
        _name: &str,
        _tag: &str,
        _index: Option<IndexKind>,
        _format: ImageFormat,
    ) -> Result<Option<BuiltManifest>, BuildError> {
        Ok(None)
    }
}

/// Each package of `name` refused as not found.
fn not_found(name: &str) -> Vec<Refusal> {
    name.split('/')
        .map(|package| Refusal {
            package: package.to_owned(),
            reason: RefusalReason::NotFound,
            system: "x86_64-linux".to_owned(),
            message: None,
        })
        .collect()
}

/// The registry with a [`RefusingBuilder`], serving on 127.0.0.1 until
/// [`InProcessServer::stop`].
pub struct InProcessServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServerError>>,
    _storage: tempfile::TempDir,
}

impl InProcessServer {
    /// Binds a free port and starts serving (on the current runtime).
    pub async fn start() -> InProcessServer {
        let storage = tempfile::tempdir().expect("temporary storage");
        let state = AppState::new(
            Arc::new(FilesystemStorage::new(storage.path()).expect("open storage")),
            Arc::new(RefusingBuilder),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a free port");
        let addr = listener.local_addr().expect("local address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(nixery::server::serve(listener, state, async {
            let _ = stopped.await;
        }));
        InProcessServer {
            addr,
            stop,
            task,
            _storage: storage,
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Shuts the server down and waits for it: it must stop cleanly.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("server task")
            .expect("the server stopped cleanly");
    }
}
