//! On SIGTERM the server stops accepting connections at once, finishes the
//! downloads in flight, and exits successfully.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use support::server::{TestServer, put_blob, sha256_hex};

/// Large enough that it cannot sit in the socket buffers: the server is
/// still sending when the signal arrives.
const BLOB_LEN: usize = 64 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_download_completes_after_sigterm() {
    let mut server = TestServer::start();
    let bytes: Vec<u8> = (0..BLOB_LEN).map(|i| (i % 251) as u8).collect();
    let digest = put_blob(&server.storage(), &bytes, "application/octet-stream").await;
    let addr = server.addr();

    // Start the download and read only the headers.
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "GET /v2/x/blobs/{digest} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let (mut received, header_end) = support::answer::read_head(&mut stream);
    assert!(received.starts_with(b"HTTP/1.1 200"));

    server.signal(libc::SIGTERM);
    server
        .wait_for_event(Duration::from_secs(10), |e| e["message"] == "shutting down")
        .expect("no `shutting down` event");
    // New connections are refused while the download is still going.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting connections after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        server
            .log_events()
            .iter()
            .all(|e| e["message"] != "stopped")
    );

    // The download in flight completes intact.
    stream.read_to_end(&mut received).unwrap();
    let body = &received[header_end..];
    assert_eq!(body.len(), BLOB_LEN);
    assert_eq!(format!("sha256:{}", sha256_hex(body)), digest);

    let status = server.wait();
    assert!(status.success(), "exit status {status}");
    assert!(
        server
            .log_events()
            .iter()
            .any(|e| e["message"] == "stopped")
    );
}

/// Process ids and process groups of every process, from /proc.
fn processes() -> Vec<(u32, u32, u32)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // After the command name in parentheses: state, ppid, pgrp, ...
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if let (Some(ppid), Some(pgrp)) = (fields.get(1), fields.get(2))
            && let (Ok(ppid), Ok(pgrp)) = (ppid.parse(), pgrp.parse())
        {
            found.push((pid, ppid, pgrp));
        }
    }
    found
}

#[test]
fn no_nix_process_is_left_after_shutdown_during_a_build() {
    let mut server = TestServer::builder().env("NIX_TIMEOUT", "600").start();
    let url = server.url("/v2/sleepy/manifests/latest");
    let request = std::thread::spawn(move || {
        reqwest::blocking::Client::new()
            .get(url)
            .timeout(Duration::from_secs(120))
            .send()
    });
    server
        .wait_for_event(Duration::from_secs(30), |e| {
            e["message"] == "building image" && e["image"] == "sleepy"
        })
        .expect("the sleepy build started");
    // The Nix step's process group: led by a child of the server.
    let server_pid = server.pid();
    let deadline = Instant::now() + Duration::from_secs(30);
    let groups: Vec<u32> = loop {
        let groups: Vec<u32> = processes()
            .into_iter()
            .filter(|&(pid, ppid, pgrp)| ppid == server_pid && pid == pgrp)
            .map(|(_, _, pgrp)| pgrp)
            .collect();
        if !groups.is_empty() {
            break groups;
        }
        assert!(Instant::now() < deadline, "no Nix process group appeared");
        std::thread::sleep(Duration::from_millis(50));
    };

    server.signal(libc::SIGTERM);
    let status = server.wait();
    assert!(status.success(), "{status:?}");
    let _ = request.join();

    let left: Vec<_> = processes()
        .into_iter()
        .filter(|&(_, _, pgrp)| groups.contains(&pgrp))
        .collect();
    assert!(
        left.is_empty(),
        "Nix processes outlived the server: {left:?}"
    );
}
