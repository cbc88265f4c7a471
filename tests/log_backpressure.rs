//! A reader of stdout that stops reading does not stall the server: log
//! lines are written by a thread of their own, and requests keep being
//! answered while the pipe is full.

use std::{
    io::{BufRead, BufReader, Read},
    process::Stdio,
    time::Duration,
};

/// Enough requests that their `response` lines (about 250 bytes each) fill
/// a pipe (64 KiB) many times over.
const REQUESTS: usize = 2000;

#[test]
fn requests_are_answered_while_nobody_reads_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = support::server::nixery_command()
        .env("PORT", "0")
        .env("NIXERY_HOST", "127.0.0.1")
        .env("STORAGE_PATH", dir.path())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut addr = None;
    let mut line = String::new();
    while addr.is_none() {
        line.clear();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "no listening event"
        );
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        if event["message"] == "listening" {
            addr = event["addr"].as_str().map(str::to_owned);
        }
    }
    let addr = addr.unwrap();
    // From here on nobody reads stdout until the requests are done.
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut answered = 0;
    for _ in 0..REQUESTS {
        match client.get(format!("http://{addr}/v2/")).send() {
            Ok(r) if r.status() == 200 => answered += 1,
            Ok(r) => panic!("status {}", r.status()),
            Err(error) => panic!("request {answered} failed: {error}"),
        }
    }
    assert_eq!(answered, REQUESTS);
    // The lines were queued, not lost: a clean exit writes them all out.
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on our own child's pid has no memory effects.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    let responses = rest.lines().filter(|l| l.contains("\"response\"")).count();
    assert_eq!(responses, REQUESTS);
}
