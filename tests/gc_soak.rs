//! Soak: the server's own periodic collection every 2 s with `--keep` 6 s,
//! while clients pull images in a loop and the images they pull rotate, so
//! that images fall out of use, are collected, and are pulled (so built)
//! again. On the filesystem and on S3 (moto).
//!
//! Property defended: every pull either succeeds whole (manifest and every
//! blob it names, each checked against its digest) or gets a clean
//! `MANIFEST_UNKNOWN`; never a missing blob after a manifest was served.
//! The figures (pulls, builds, collections, objects deleted, failed pulls)
//! are printed; `scripts/gc-soak.sh` runs the same test for minutes
//! (`GC_SOAK_SECS`), the suite for 30 s.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use support::answer::PullError;
use support::s3::MotoS3;
use support::server::{TestServer, TestServerBuilder};
use support::{count_logs, metric};

/// Images in rotation: at any moment the clients pull three of them.
const IMAGES: [&str; 6] = ["hello", "zlib", "htop", "curl", "nano", "hello/zlib"];
/// How long one set of three images is pulled before the next.
const WINDOW: Duration = Duration::from_secs(4);
const CLIENTS: usize = 3;

fn soak_duration() -> Duration {
    let secs = std::env::var("GC_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

fn collecting(builder: TestServerBuilder) -> TestServer {
    builder
        .env("NIX_TIMEOUT", "300")
        .env("NIXERY_GC_TOUCH_INTERVAL", "1s")
        .env("NIXERY_GC_KEEP", "6s")
        .env("NIXERY_GC_INTERVAL", "2s")
        // New blobs are safe for `grace` before a manifest names them. At
        // 1 s, a loaded machine's packing outlasted it twice in a row and a
        // build failed with its (clean, retryable) 503: not what this soak
        // is about, and no operator runs a grace shorter than a build.
        .env("NIXERY_GC_GRACE", "8s")
        .start()
}

/// What one soak did.
#[derive(Debug, Default)]
struct Figures {
    pulls: usize,
    manifest_unknown: usize,
    failed: Vec<String>,
    builds: usize,
    collections: u64,
    collection_failures: u64,
    deleted: u64,
}

fn soak(server: &TestServer, backend: &str) -> Figures {
    let duration = soak_duration();
    let started = Instant::now();
    let pulls = AtomicUsize::new(0);
    let unknown = AtomicUsize::new(0);
    let failed = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for client in 0..CLIENTS {
            let (pulls, unknown, failed) = (&pulls, &unknown, &failed);
            scope.spawn(move || {
                while started.elapsed() < duration {
                    let window = (started.elapsed().as_secs() / WINDOW.as_secs()) as usize;
                    let name = IMAGES[(window + client) % IMAGES.len()];
                    match server.pull(name) {
                        Ok(_) => {
                            pulls.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(PullError::Manifest(answer))
                            if answer.status == 404
                                && answer.text().contains("MANIFEST_UNKNOWN") =>
                        {
                            unknown.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(error) => failed
                            .lock()
                            .unwrap()
                            .push(format!("{name} at {:?}: {error}", started.elapsed())),
                    }
                }
            });
        }
    });
    let figures = Figures {
        pulls: pulls.into_inner(),
        manifest_unknown: unknown.into_inner(),
        failed: failed.into_inner().unwrap(),
        builds: count_logs(server, "image built"),
        collections: metric(server, "nixery_gc_runs_total"),
        collection_failures: metric(server, "nixery_gc_failures_total"),
        deleted: metric(server, "nixery_gc_objects_deleted_total"),
    };
    println!(
        "gc soak ({backend}, {} s, {CLIENTS} clients): {} pulls, {} builds, {} collections ({} failed), {} objects deleted, {} manifest unknown, {} failed pulls",
        duration.as_secs(),
        figures.pulls,
        figures.builds,
        figures.collections,
        figures.collection_failures,
        figures.deleted,
        figures.manifest_unknown,
        figures.failed.len()
    );
    figures
}

fn check(server: &TestServer, figures: &Figures) {
    if !figures.failed.is_empty() {
        let problems: Vec<String> = server
            .settled_log_events()
            .into_iter()
            .filter(|e| e["level"] == "ERROR" || e["level"] == "WARN")
            .map(|e| e.to_string())
            .collect();
        panic!(
            "failed pulls: {:#?}\nserver warnings and errors:\n{}",
            figures.failed,
            problems.join("\n")
        );
    }
    assert_eq!(figures.collection_failures, 0, "a collection failed");
    assert!(figures.collections >= 3, "{figures:?}");
    assert!(figures.deleted > 0, "nothing was collected: {figures:?}");
    assert!(figures.pulls >= 20, "{figures:?}");
    // Images left the rotation, were collected and came back: built again.
    assert!(
        figures.builds > IMAGES.len(),
        "no collected image was built again: {figures:?}"
    );
}

#[test]
fn pulls_and_builds_beside_periodic_collection_never_miss_a_blob_on_the_filesystem() {
    let server = collecting(TestServer::builder());
    check(&server, &soak(&server, "filesystem"));
}

#[test]
fn pulls_and_builds_beside_periodic_collection_never_miss_a_blob_on_s3() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let moto = Arc::new(runtime.block_on(MotoS3::start()));
    let server = collecting(TestServer::builder().envs(moto.server_env(&moto.origin())));
    check(&server, &soak(&server, "s3"));
}
