//! What the benchmarks share; a bench takes it with `mod support;`.

/// The runtime a benchmark drives the server's code on: two workers, as
/// many as the machine the figures are taken on has cores.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
