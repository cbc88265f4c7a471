//! A binary cache on 127.0.0.1 for the popcount tests: serves generated
//! narinfos for a small package graph, counts the requests it gets and the
//! most it had in flight at once, and can be told to fail.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// One package of the fixture graph: `(name, references)`; `self` in the
/// references means the path refers to itself.
const GRAPH: &[(&str, &[&str])] = &[
    ("glibc-2.40", &["self"]),
    ("zlib-1.3", &["glibc-2.40", "self"]),
    ("openssl-3.3", &["glibc-2.40"]),
    (
        "curl-8.9",
        &["glibc-2.40", "zlib-1.3", "openssl-3.3", "self"],
    ),
    (
        "git-2.46",
        &["glibc-2.40", "zlib-1.3", "curl-8.9", "openssl-3.3"],
    ),
    ("python3-3.12", &["glibc-2.40", "zlib-1.3", "openssl-3.3"]),
    ("bash-5.2", &["glibc-2.40"]),
];

/// Served with status 200 but missing `NarHash`: it references curl, so if
/// it were counted curl would reach 2 and show up in the map.
pub const MALFORMED: &str = "broken-1.0";
/// Listed but not in the cache: answered 404.
pub const GONE: &str = "gone-0.1";

/// The map the fixture must produce: self-references ignored, curl (one
/// reference) dropped, the malformed narinfo not counted.
pub const EXPECTED: &str = r#"{"glibc-2.40":6,"openssl-3.3":3,"zlib-1.3":3}"#;

/// A deterministic valid hash for package number `index`.
pub fn hash(index: usize) -> String {
    format!("{index:0>32}")
}

fn all_names() -> Vec<&'static str> {
    let mut names: Vec<_> = GRAPH.iter().map(|(name, _)| *name).collect();
    names.extend([MALFORMED, GONE]);
    names
}

/// `/nix/store/<hash>-<name>` for every package, in a fixed order.
pub fn store_path_list() -> String {
    all_names()
        .iter()
        .enumerate()
        .map(|(index, name)| format!("/nix/store/{}-{name}\n", hash(index)))
        .collect()
}

fn base_name(name: &str) -> String {
    let index = all_names()
        .iter()
        .position(|n| *n == name)
        .expect("fixture name");
    format!("{}-{name}", hash(index))
}

fn narinfo(name: &str, references: &[&str], valid: bool) -> String {
    let refs: Vec<String> = references
        .iter()
        .map(|r| base_name(if *r == "self" { name } else { r }))
        .collect();
    let nar_hash = if valid {
        "NarHash: sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s\n"
    } else {
        ""
    };
    format!(
        "StorePath: /nix/store/{}\nURL: nar/{}.nar.xz\nCompression: xz\n{nar_hash}NarSize: 1234\nReferences: {}\n",
        base_name(name),
        hash(0),
        refs.join(" ")
    )
}

/// Counters and switches shared between the server and the test.
#[derive(Default)]
pub struct Stats {
    pub requests: AtomicUsize,
    in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    /// Hashes answered 500 until removed.
    pub failing: Mutex<Vec<String>>,
    /// How long each answer is held back, in milliseconds.
    pub delay_ms: AtomicUsize,
}

struct App {
    narinfos: HashMap<String, String>,
    stats: Arc<Stats>,
}

async fn serve_narinfo(State(app): State<Arc<App>>, UrlPath(file): UrlPath<String>) -> Response {
    let stats = &app.stats;
    stats.requests.fetch_add(1, Ordering::SeqCst);
    let now = stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    stats.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let delay = stats.delay_ms.load(Ordering::SeqCst) as u64;
    tokio::time::sleep(Duration::from_millis(delay)).await;
    stats.in_flight.fetch_sub(1, Ordering::SeqCst);
    let hash = file.strip_suffix(".narinfo").unwrap_or_default();
    if stats.failing.lock().unwrap().iter().any(|h| h == hash) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    match app.narinfos.get(hash) {
        Some(body) => body.clone().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The running fixture cache; the server task ends with the test runtime.
pub struct Cache {
    pub url: String,
    pub stats: Arc<Stats>,
}

/// Starts the fixture binary cache on a random port of 127.0.0.1.
pub async fn start() -> Cache {
    let mut narinfos = HashMap::new();
    for (index, (name, references)) in GRAPH.iter().enumerate() {
        narinfos.insert(hash(index), narinfo(name, references, true));
    }
    let malformed_index = GRAPH.len();
    narinfos.insert(
        hash(malformed_index),
        narinfo(MALFORMED, &["curl-8.9"], false),
    );
    let stats = Arc::new(Stats::default());
    let app = Arc::new(App {
        narinfos,
        stats: stats.clone(),
    });
    let router = axum::Router::new()
        .route("/{file}", axum::routing::get(serve_narinfo))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    Cache {
        url: format!("http://{addr}"),
        stats,
    }
}

/// Runs `nixery popcount` against `cache` and returns its output.
pub async fn popcount(cache: &Cache, list: &Path, cache_dir: &Path, extra: &[&str]) -> Output {
    tokio::process::Command::new(crate::nixery_binary())
        .arg("popcount")
        .arg(list)
        .args(["--cache-url", &cache.url])
        .arg("--cache-dir")
        .arg(cache_dir)
        .args(extra)
        .output()
        .await
        .expect("run nixery popcount")
}

/// Writes the fixture's store path list into `dir` and returns its path.
pub fn write_list(dir: &Path) -> PathBuf {
    let path = dir.join("store-paths");
    std::fs::write(&path, store_path_list()).unwrap();
    path
}

/// Standard output and error as text.
pub fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
