//! What the fake storage servers share (GCS and S3): the emulator process,
//! test bodies and the checks both run, a fault injecting proxy, and a
//! counting proxy.

pub mod bodies;
pub mod checks;
pub mod emulator;
pub mod faults;
pub mod proxy;

/// Binds a free port on 127.0.0.1 for a proxy: the listener and its port
/// (known before the proxy starts, so that an emulator can be told it).
pub async fn bind_proxy() -> (tokio::net::TcpListener, u16) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind proxy");
    let port = listener.local_addr().expect("proxy address").port();
    (listener, port)
}
