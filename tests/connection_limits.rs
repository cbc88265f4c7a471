//! Client connections: accepted sockets have `TCP_NODELAY`, a client that
//! never finishes its request headers is cut off, idle keep-alive
//! connections are closed, and neither limit touches a slow but live
//! reader of a large blob.

use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use support::answer::read_head;
use support::in_process::InProcessServer;
use support::server::{TestServer, put_blob, sha256_hex};

/// Longest any cut-off below may take to show, far above the configured
/// limits: the tests check that connections close, not how fast.
const PATIENCE: Duration = Duration::from_secs(20);

/// Read until the peer closes the connection (`Ok(bytes)`), or fail if it
/// is still open after [`PATIENCE`].
fn read_until_closed(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    stream.set_read_timeout(Some(PATIENCE))?;
    let mut received = Vec::new();
    match stream.read_to_end(&mut received) {
        Ok(_) => Ok(received),
        // A reset also means the server closed it.
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(received),
        Err(e) => Err(e),
    }
}

/// Read one response with a `Content-Length` body off a keep-alive
/// connection, `pace` deciding how much to read at a time and how long to
/// pause after each read. Returns the head and the body.
fn read_response(
    stream: &mut TcpStream,
    mut pace: impl FnMut(usize) -> (usize, Duration),
) -> (String, Vec<u8>) {
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let (mut received, head_end) = read_head(stream);
    let mut buf = vec![0u8; 64 * 1024];
    let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no content-length in {head}"));
    let mut body = received.split_off(head_end);
    while body.len() < length {
        let (chunk, pause) = pace(body.len());
        let want = chunk.min(buf.len()).min(length - body.len());
        let n = stream.read(&mut buf[..want]).unwrap();
        assert!(n > 0, "connection closed after {} body bytes", body.len());
        body.extend_from_slice(&buf[..n]);
        std::thread::sleep(pause);
    }
    (head, body)
}

/// A server with these header and idle timeouts (seconds).
fn server_with_timeouts(header: &str, idle: &str) -> TestServer {
    TestServer::builder()
        .env("NIXERY_HEADER_TIMEOUT", header)
        .env("NIXERY_IDLE_TIMEOUT", idle)
        .start()
}

#[test]
fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let server = server_with_timeouts("2", "600");
    // The request of the issue: headers never terminated.
    let mut silent = TcpStream::connect(server.addr()).unwrap();
    silent
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // A slowloris client: one more header line every half second, which
    // must not extend its deadline.
    let mut trickling = TcpStream::connect(server.addr()).unwrap();
    trickling.write_all(b"GET /v2/ HTTP/1.1\r\n").unwrap();
    let started = Instant::now();
    let mut trickled_after_deadline = false;
    for i in 0.. {
        let line = format!("X-Slow-{i}: {}\r\n", "a".repeat(10));
        if trickling.write_all(line.as_bytes()).is_err() {
            break;
        }
        if started.elapsed() > PATIENCE {
            trickled_after_deadline = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        !trickled_after_deadline,
        "a trickling client was still connected after {PATIENCE:?}"
    );
    let answer = read_until_closed(&mut trickling).expect("trickling connection still open");
    assert!(answer.is_empty() || answer.starts_with(b"HTTP/1.1 408"));
    let answer = read_until_closed(&mut silent).expect("silent connection still open");
    assert!(answer.is_empty() || answer.starts_with(b"HTTP/1.1 408"));
    // A client that does send its headers is served as usual.
    let r = support::server::raw_request(server.addr(), "GET", b"/v2/");
    assert_eq!(r.status, 200);
}

#[test]
fn idle_keep_alive_connections_are_closed() {
    // The header timeout is far longer than PATIENCE, so only the idle
    // limit can close the connection.
    let server = server_with_timeouts("600", "1");
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    for _ in 0..2 {
        // Requests in quick succession reuse the connection.
        stream
            .write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let (head, body) = read_response(&mut stream, |_| (usize::MAX, Duration::ZERO));
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, b"{}");
    }
    let rest = read_until_closed(&mut stream).expect("idle connection still open");
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
}

#[test]
fn a_slow_reader_gets_a_large_blob_intact_despite_short_limits() {
    let server = server_with_timeouts("1", "1");
    let bytes: Vec<u8> = (0..24 * 1024 * 1024_u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let digest = runtime.block_on(put_blob(
        &server.storage(),
        &bytes,
        "application/octet-stream",
    ));
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    // A small receive buffer keeps most of the blob on the server's side
    // while the reader pauses.
    set_receive_buffer(&stream, 64 * 1024);
    write!(
        stream,
        "GET /v2/x/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    // Three pauses longer than both limits, early in the download (the
    // idle limit starts once the server has written the last byte, which
    // may sit in socket buffers for a while).
    let pause_at = [1 << 20, 4 << 20, 8 << 20];
    let mut paused = 0;
    let (head, body) = read_response(&mut stream, |received| {
        if paused < pause_at.len() && received >= pause_at[paused] {
            paused += 1;
            (64 * 1024, Duration::from_millis(2500))
        } else {
            (64 * 1024, Duration::ZERO)
        }
    });
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(paused, 3);
    assert_eq!(body.len(), bytes.len());
    assert_eq!(format!("sha256:{}", sha256_hex(&body)), digest);
    // The connection is still good for the next request.
    stream
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (head, _) = read_response(&mut stream, |_| (usize::MAX, Duration::ZERO));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

fn set_receive_buffer(stream: &TcpStream, bytes: libc::c_int) {
    // SAFETY: setsockopt on a socket we own, with a pointer to a live int
    // and its size.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const bytes).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt SO_RCVBUF");
}

/// The local and peer address of socket `fd`, if it is a connected IPv4
/// TCP socket.
fn socket_addresses(fd: libc::c_int) -> Option<(SocketAddr, SocketAddr)> {
    fn address(fd: libc::c_int, peer: bool) -> Option<SocketAddr> {
        // SAFETY: an all-zero sockaddr_in is valid; the calls write at most
        // `len` bytes into it.
        let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let rc = unsafe {
            if peer {
                libc::getpeername(fd, (&raw mut addr).cast(), &mut len)
            } else {
                libc::getsockname(fd, (&raw mut addr).cast(), &mut len)
            }
        };
        (rc == 0 && i32::from(addr.sin_family) == libc::AF_INET).then(|| {
            SocketAddr::from((
                u32::from_be(addr.sin_addr.s_addr).to_be_bytes(),
                u16::from_be(addr.sin_port),
            ))
        })
    }
    Some((address(fd, false)?, address(fd, true)?))
}

fn tcp_nodelay(fd: libc::c_int) -> bool {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&raw mut value).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "getsockopt TCP_NODELAY");
    value != 0
}

/// The server runs in this process, so its end of a connection is one of
/// our own file descriptors: find it by its addresses and read the option.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_sockets_have_tcp_nodelay() {
    let server = InProcessServer::start().await;
    let server_addr = server.addr();
    let client = tokio::task::spawn_blocking(move || {
        let mut client = TcpStream::connect(server_addr).unwrap();
        client
            .write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        // The response proves the server has accepted the connection.
        let (head, _) = read_response(&mut client, |_| (usize::MAX, Duration::ZERO));
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        client
    })
    .await
    .unwrap();
    let client_addr = client.local_addr().unwrap();
    let mut server_side = None;
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let Ok(fd) = entry.unwrap().file_name().to_string_lossy().parse() else {
            continue;
        };
        if socket_addresses(fd) == Some((server_addr, client_addr)) {
            server_side = Some(fd);
        }
    }
    let server_side = server_side.expect("the server's end of the connection");
    assert!(tcp_nodelay(server_side), "TCP_NODELAY is off");
    // The check can tell: the client's end keeps the default (off).
    assert!(!tcp_nodelay(client.as_raw_fd()));
    drop(client);
    server.stop().await;
}
