//! Start-up wiring: configuration, logging, storage, builder, socket, the
//! accept loop, and a graceful shutdown on SIGINT/SIGTERM.
//!
//! Connections are served as HTTP/1.1 by hyper, each on a task of its own,
//! with the per-connection limits of [`crate::connection`]. Shutdown stops
//! accepting connections at once, lets requests in flight finish, gives up
//! after [`SHUTDOWN_GRACE`], then stops every Nix process group still
//! running before the process exits.

use std::{future::Future, io, net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

use hyper_util::{rt::TokioIo, server::graceful::GracefulShutdown};
use tokio::net::TcpListener;

use crate::{
    build_errors::BuildErrors,
    builder::{Builder, BuilderSettings},
    config::{Config, ServeArgs},
    connection::{self, ConnectionLimits},
    gc::{GcWatch, Guard, periodic::GcStatus},
    http::{AppState, router},
    identity::Recipe,
    layer_store::LayerStore,
    layers::{DEFAULT_BUDGET, Layering, Popularity, Strategy},
    manifest_cache::{ManifestCache, local_tier_dir},
    metrics::Metrics,
    nix::{NixError, NixRunner, NixSettings},
    popularity::{self, PopularityError},
    resolve::{Resolver, ResolverSettings},
    status::StatusInfo,
    storage::Storage,
};

/// Longest wait for requests in flight once a shutdown signal arrived.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the server could not start or stopped with a failure.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The storage could not be opened.
    #[error(transparent)]
    Storage(#[from] crate::storage::settings::OpenError),
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// `NIX_POPULARITY_URL` could not be loaded.
    #[error("NIX_POPULARITY_URL: {0}")]
    Popularity(#[from] PopularityError),
    /// The Nix step could not be prepared.
    #[error("preparing the Nix step: {0}")]
    Nix(#[from] NixError),
    /// The local manifest tier's directory could not be created.
    #[error("creating the local manifest cache (NIXERY_CACHE_DIR): {0}")]
    LocalCache(#[source] io::Error),
    /// Pull authentication could not be set up.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// Accepting or serving connections failed.
    #[error("serving failed: {0}")]
    Serve(#[source] io::Error),
}

/// Entry point of `nixery serve`: validate the settings (exit code 2 with
/// one line on stderr naming the variable if they are wrong), then run the
/// server until SIGINT/SIGTERM.
pub fn main(args: ServeArgs) -> ExitCode {
    let config = match args.into_config() {
        Ok(config) => config,
        Err(error) => {
            // A value is quoted: it may be a URL with credentials.
            let message = crate::redact::redact(&error.to_string());
            eprintln!("nixery: configuration error: {message}");
            return ExitCode::from(crate::config::EXIT_CONFIG);
        }
    };
    let _logs = crate::logging::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(error = %error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let result = run(config).await;
        // Build tasks still running would be dropped with the runtime, too
        // late to stop their Nix process groups: stop those first.
        crate::nix::process::stop_all(crate::nix::process::TERMINATE_GRACE).await;
        result
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %error, "server failed");
            ExitCode::FAILURE
        }
    }
}

/// The image builder for this configuration: the Nix step, the caches in
/// front of `storage`, and the popularity map (loaded once, here).
pub async fn image_builder(
    config: &Config,
    storage: Arc<dyn Storage>,
    build_errors: Arc<BuildErrors>,
    metrics: Arc<Metrics>,
    gc: Guard,
) -> Result<Arc<Builder>, ServerError> {
    let strategy = Strategy::resolve(config.layering, config.popularity_url.is_some());
    let popularity = if strategy.uses_popularity() {
        popularity::load(config.popularity_url.as_deref()).await?
    } else {
        if config.popularity_url.is_some() {
            tracing::warn!(strategy = %strategy, "NIX_POPULARITY_URL is ignored: this layering strategy does not read it");
        }
        Popularity::default()
    };
    tracing::info!(strategy = %strategy, budget = DEFAULT_BUDGET, "layering");
    let nix = NixRunner::new(NixSettings {
        source: config.package_source.clone(),
        timeout: config.nix_timeout,
        deadline: config.nix_deadline,
        allow_unfree: config.allow_unfree,
        prepare_image: config.prepare_image.clone(),
    })?;
    let resolver = Resolver::new(ResolverSettings {
        source: nix.source().clone(),
        embedded_hash: nix.embedded_hash(),
        ttl: config.source_ttl,
        channel_remote: config.channel_remote.clone(),
    });
    let identity = config.storage.identity();
    // A directory the operator chose must work; the default may be
    // unwritable (a read-only home), which only costs the disk tier.
    let disk = match &config.cache_dir {
        Some(dir) => Some(local_tier_dir(dir, &identity).map_err(ServerError::LocalCache)?),
        None => {
            let dir = crate::config::default_cache_dir();
            match local_tier_dir(&dir, &identity) {
                Ok(disk) => Some(disk),
                Err(error) => {
                    tracing::warn!(dir = %dir.display(), error = %error, "no local manifest tier: the default cache directory is unusable, set NIXERY_CACHE_DIR");
                    None
                }
            }
        }
    };
    let manifests = ManifestCache::new(storage.clone(), config.manifest_cache_entries, disk)
        .map_err(ServerError::LocalCache)?
        .with_gc(gc.clone());
    let layers = LayerStore::new(storage, config.pack_concurrency).with_gc(gc.clone());
    tracing::info!(
        dir = %manifests.disk_dir().map_or_else(|| "none".into(), |d| d.display().to_string()),
        memory_entries = config.manifest_cache_entries,
        "manifest cache"
    );
    Ok(Arc::new(Builder::new(
        layers,
        manifests,
        resolver,
        nix,
        BuilderSettings {
            layering: Layering {
                strategy,
                popularity,
                budget: DEFAULT_BUDGET,
            },
            nix_files: Recipe::nix_files_of(config.prepare_image.as_deref()),
            pack_concurrency: config.pack_concurrency,
            build_concurrency: config.build_concurrency,
            build_queue: config.build_queue,
            build_errors: build_errors.clone(),
            platforms: config.platforms.clone(),
            gc,
        },
        metrics,
    )))
}

/// Run the server for `config` until SIGINT/SIGTERM.
pub async fn run(config: Config) -> Result<(), ServerError> {
    let metrics = Arc::new(Metrics::default());
    // Before anything is opened: a server meant to be closed never serves
    // openly because its users could not be read.
    let auth = match &config.auth {
        Some(settings) => {
            let auth = Arc::new(crate::auth::Auth::load(settings.clone(), metrics.clone())?);
            tracing::info!(
                users = auth.user_count(),
                tokens = auth.issues_tokens(),
                anonymous = settings.anonymous.as_str(),
                "pull authentication on"
            );
            if settings.anonymous != crate::auth::AnonymousPolicy::None && !auth.issues_tokens() {
                tracing::warn!(
                    anonymous = settings.anonymous.as_str(),
                    "Docker clients without credentials give up at a Basic challenge: set NIXERY_AUTH_TOKEN_KEY for anonymous Docker pulls"
                );
            }
            crate::auth::reload::watch(auth.clone());
            Some(auth)
        }
        None => None,
    };
    let storage = crate::storage::settings::open(&config.storage).await?;
    let build_errors = Arc::new(BuildErrors::new());
    // Always on: `nixery gc` may run beside any server.
    let gc = Guard::watching(GcWatch::start(storage.clone(), config.gc.touch_interval));
    let builder = image_builder(
        &config,
        storage.clone(),
        build_errors.clone(),
        metrics.clone(),
        gc.clone(),
    )
    .await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
    // Runs until the runtime stops; the filesystem backend has already
    // swept once while opening.
    tokio::spawn(crate::storage::staging::clean_periodically(storage.clone()));
    let gc_status = Arc::new(match config.gc.keep {
        Some(keep) => GcStatus::periodic(keep, config.gc.interval),
        None => GcStatus::default(),
    });
    if config.gc.keep.is_some() {
        tokio::spawn(crate::gc::periodic::run(
            storage.clone(),
            config.gc,
            builder.local_tier_dir(),
            metrics.clone(),
            gc_status.clone(),
        ));
    }
    let status = StatusInfo::for_source(&config.package_source, storage.name());
    let mut state = AppState::new(storage, builder)
        .with_status(status, build_errors)
        .with_metrics(metrics)
        .with_gc_status(gc_status);
    // Small objects kept for blob requests may be gone once a collection
    // ended.
    let objects = Arc::downgrade(&state.objects);
    gc.on_collection(move || {
        if let Some(objects) = objects.upgrade() {
            objects.clear();
        }
    });
    if let Some(auth) = auth {
        state = state.with_auth(auth);
    }
    serve_with(listener, state, config.limits, shutdown_signal()).await
}

/// Serve `state` on `listener` with the default [`ConnectionLimits`]; see
/// [`serve_with`].
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    serve_with(listener, state, ConnectionLimits::default(), shutdown).await
}

/// Serve `state` on `listener` until `shutdown` completes, then drain for
/// at most [`SHUTDOWN_GRACE`]. Logs `listening` with field `addr` first.
///
/// Each accepted connection gets `TCP_NODELAY` and the header and idle
/// cut-offs of `limits` ([`connection`](crate::connection)) and is served
/// as HTTP/1.1 on a task of its own. On shutdown the listener is closed at
/// once, idle connections are closed, and busy ones end after their
/// current response.
pub async fn serve_with(
    listener: TcpListener,
    state: AppState,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let addr = listener.local_addr().map_err(ServerError::Serve)?;
    let state = state.listening_on(addr);
    tracing::info!(addr = %addr, backend = state.storage.name(), "listening");
    let app = router(state);
    let mut http = hyper::server::conn::http1::Builder::new();
    // The connection module enforces its own header timeout, which also
    // covers the time before the first byte; hyper's would need a timer.
    http.header_read_timeout(None).keep_alive(true).writev(true);
    let connections = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(&error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (io, service) = connection::prepare(stream, app.clone(), limits);
        let conn = connections.watch(http.serve_connection(TokioIo::new(io), service));
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(error = %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(grace_secs = SHUTDOWN_GRACE.as_secs(), "shutting down");
    tokio::select! {
        () = connections.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!(grace_secs = SHUTDOWN_GRACE.as_secs(), "requests still in flight after the grace period, stopping anyway");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// After a failed `accept`: a client that gave up during the handshake is
/// no news; anything else (out of file descriptors) is logged and slowed
/// down so the loop does not spin.
async fn accept_failed(error: &io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %error, "accepting a connection failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(error = %error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
