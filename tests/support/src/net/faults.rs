//! An HTTP proxy on 127.0.0.1 in front of a storage emulator (GCS or S3)
//! that fails a share of the API calls: half of the failures answer `503`,
//! the other half drop the connection, either before forwarding the
//! request or after the emulator did the work but before its answer
//! reaches the client. Which requests are API calls is the caller's
//! classifier: [`is_gcs_api_call`] (JSON API paths) or
//! [`is_s3_api_call`] (requests signed in an `Authorization` header).
//! Downloads of objects by registry clients, after a redirect, pass
//! untouched and are counted: the proxy stands for a flaky API, not a
//! flaky client network.
//!
//! Each connection carries one request (the proxy asks both sides to close
//! after it), which keeps the forwarding simple: read the request head and
//! its `Content-Length` body, forward, copy the answer until the emulator
//! closes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Largest request head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// What happened to API calls so far.
#[derive(Debug, Default)]
pub struct FaultCounts {
    /// API calls seen.
    pub calls: AtomicU64,
    /// Answered `503` without forwarding.
    pub unavailable: AtomicU64,
    /// Connection dropped before forwarding.
    pub dropped_before: AtomicU64,
    /// Forwarded, then the answer was dropped.
    pub dropped_after: AtomicU64,
    /// Requests that are not API calls (client downloads), all forwarded.
    pub downloads: AtomicU64,
}

impl FaultCounts {
    /// All injected faults.
    pub fn faults(&self) -> u64 {
        self.unavailable.load(Ordering::SeqCst)
            + self.dropped_before.load(Ordering::SeqCst)
            + self.dropped_after.load(Ordering::SeqCst)
    }
}

/// Tells API calls from other requests, given the request line's target
/// and the whole request head.
pub type Classifier = fn(target: &str, head: &str) -> bool;

/// The Cloud Storage JSON API: `/storage/v1/...`, `/upload/storage/v1/...`.
pub fn is_gcs_api_call(target: &str, _head: &str) -> bool {
    target.starts_with("/storage/v1/") || target.starts_with("/upload/storage/v1/")
}

/// S3 calls signed in an `Authorization` header (what a backend sends);
/// presigned and anonymous `GET`s (what registry clients send) are not.
pub fn is_s3_api_call(_target: &str, head: &str) -> bool {
    head.lines()
        .filter_map(|line| line.split_once(':'))
        .any(|(name, _)| name.trim().eq_ignore_ascii_case("authorization"))
}

/// A running fault-injecting proxy; stops accepting when dropped.
pub struct FaultProxy {
    port: u16,
    /// Failure rate in parts per thousand.
    rate: Arc<AtomicU32>,
    counts: Arc<FaultCounts>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Forwards every connection on `listener` (from
    /// [`super::bind_proxy`]) to `127.0.0.1:upstream`,
    /// failing `per_mille` of every thousand API calls (as `is_api` tells
    /// them). `seed` makes the sequence of faults reproducible (up to
    /// request interleaving).
    pub fn forward_to(
        listener: TcpListener,
        upstream: u16,
        per_mille: u32,
        seed: u64,
        is_api: Classifier,
    ) -> Self {
        let port = listener.local_addr().expect("proxy address").port();
        let rate = Arc::new(AtomicU32::new(per_mille));
        let counts = Arc::new(FaultCounts::default());
        let sequence = Arc::new(AtomicU64::new(seed));
        let task = tokio::spawn({
            let (rate, counts) = (rate.clone(), counts.clone());
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let (rate, counts, sequence) = (rate.clone(), counts.clone(), sequence.clone());
                    tokio::spawn(async move {
                        let draw = splitmix(sequence.fetch_add(1, Ordering::SeqCst));
                        let _ = handle(client, upstream, &rate, &counts, draw, is_api).await;
                    });
                }
            }
        });
        FaultProxy {
            port,
            rate,
            counts,
            task,
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Changes the failure rate (parts per thousand).
    pub fn set_rate(&self, per_mille: u32) {
        self.rate.store(per_mille, Ordering::SeqCst);
    }

    /// What happened so far.
    pub fn counts(&self) -> &FaultCounts {
        &self.counts
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A well-mixed 64-bit value from a counter.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

enum Fault {
    None,
    Unavailable,
    DropBefore,
    DropAfter,
}

async fn handle(
    mut client: TcpStream,
    upstream: u16,
    rate: &AtomicU32,
    counts: &FaultCounts,
    draw: u64,
    is_api: Classifier,
) -> std::io::Result<()> {
    let Some((head, mut body)) = read_head(&mut client).await? else {
        return Ok(());
    };
    let head_text = String::from_utf8_lossy(&head).into_owned();
    let path = head_text.split(' ').nth(1).unwrap_or_default().to_owned();
    let length = content_length(&head_text);
    while body.len() < length {
        let mut buffer = vec![0u8; (length - body.len()).min(256 * 1024)];
        let n = client.read(&mut buffer).await?;
        if n == 0 {
            return Ok(());
        }
        body.extend_from_slice(&buffer[..n]);
    }

    let api = is_api(&path, &head_text);
    if !api {
        counts.downloads.fetch_add(1, Ordering::SeqCst);
    }
    let fault = if api {
        counts.calls.fetch_add(1, Ordering::SeqCst);
        let roll = (draw % 1000) as u32;
        if roll >= rate.load(Ordering::SeqCst) {
            Fault::None
        } else {
            match (draw >> 20) % 4 {
                0 | 1 => Fault::Unavailable,
                2 => Fault::DropBefore,
                _ => Fault::DropAfter,
            }
        }
    } else {
        Fault::None
    };
    match fault {
        Fault::Unavailable => {
            counts.unavailable.fetch_add(1, Ordering::SeqCst);
            client
                .write_all(
                    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
                      content-length: 20\r\nconnection: close\r\n\r\ninjected fault (503)",
                )
                .await?;
            client.shutdown().await
        }
        Fault::DropBefore => {
            counts.dropped_before.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        Fault::None | Fault::DropAfter => {
            let mut server = TcpStream::connect(("127.0.0.1", upstream)).await?;
            server.write_all(&with_connection_close(&head_text)).await?;
            server.write_all(&body).await?;
            let mut answer = Vec::new();
            server.read_to_end(&mut answer).await?;
            if matches!(fault, Fault::DropAfter) {
                counts.dropped_after.fetch_add(1, Ordering::SeqCst);
                return Ok(());
            }
            client.write_all(&answer).await?;
            client.shutdown().await
        }
    }
}

/// Reads up to the end of the request head; returns the head (with its
/// final blank line) and any body bytes read with it. `None` if the client
/// closed first.
async fn read_head(client: &mut TcpStream) -> std::io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    let mut data = Vec::new();
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let body = data.split_off(end + 4);
            return Ok(Some((data, body)));
        }
        if data.len() > MAX_HEAD {
            return Ok(None);
        }
        let n = client.read(&mut buffer).await?;
        if n == 0 {
            return Ok(None);
        }
        data.extend_from_slice(&buffer[..n]);
    }
}

fn content_length(head: &str) -> usize {
    head.lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0)
}

/// The head with any `Connection` header replaced by `Connection: close`.
fn with_connection_close(head: &str) -> Vec<u8> {
    let mut out = String::with_capacity(head.len() + 20);
    for line in head.trim_end_matches("\r\n").split("\r\n") {
        let is_connection = line
            .split_once(':')
            .is_some_and(|(name, _)| name.trim().eq_ignore_ascii_case("connection"));
        if !is_connection {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}
