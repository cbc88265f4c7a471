//! A TCP forwarder on 127.0.0.1 that counts the bytes clients send, to
//! observe how much of an upload reached the emulator at a given moment.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A running forwarder; stops accepting when dropped.
pub struct CountingProxy {
    port: u16,
    sent: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl CountingProxy {
    /// Forwards every connection on `listener` (from
    /// [`super::bind_proxy`]) to `127.0.0.1:upstream`.
    pub fn forward_to(listener: TcpListener, upstream: u16) -> CountingProxy {
        let port = listener.local_addr().expect("proxy address").port();
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await {
                        pipe(client, server, counter).await;
                    }
                });
            }
        });
        CountingProxy { port, sent, task }
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Bytes sent by clients so far (requests, headers included).
    pub fn client_bytes(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(client: TcpStream, server: TcpStream, counter: Arc<AtomicU64>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if server_write.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                    counter.fetch_add(n as u64, Ordering::SeqCst);
                }
            }
        }
        let _ = server_write.shutdown().await;
    };
    let downstream = async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::join!(upstream, downstream);
}
