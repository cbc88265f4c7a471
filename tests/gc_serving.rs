//! `nixery gc` and periodic collection beside a running server, through
//! the real binary, on the filesystem backend and on the GCS emulator.
//!
//! Properties defended: `nixery gc` reads the server's storage settings,
//! prints each deletion and a summary line and exits 0; `--dry-run`
//! deletes nothing; an image pulled within `--keep` keeps every blob while
//! an image not pulled loses its unshared ones, its tag entry and its local
//! disk tier file; the running server, which still holds the collected
//! image in memory, rebuilds it on the next pull instead of serving a
//! manifest whose blobs are gone; pulls in a loop during a collection never
//! get a failed blob; periodic collection runs with `NIXERY_GC_KEEP` and
//! shows in `/metrics` and on the status page; every manifest answered
//! (single, from memory, disk or storage, by tag or by digest) records a
//! use (an index: `gc_index_tiers.rs`, on every backend), and a request
//! for a digest nobody stored writes nothing.
//!
//! Every server here marks use at most once a second
//! (`NIXERY_GC_TOUCH_INTERVAL=1s`), so the shortest `--keep` is 6 s.

use std::{
    collections::HashSet,
    process::{Command, Output},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;
use support::gcs::{FakeGcs, sha256_hex};
use support::server::{MANIFEST_V2, TestServer};
use support::{count_logs, metric};

const TOUCH: &str = "1s";
const KEEP: &str = "6s";
/// Longer than `KEEP` plus the touch interval: an image not pulled for this
/// long is unused.
const UNUSED_AFTER: Duration = Duration::from_secs(8);

/// Pull `name:latest` the way a client does ([`TestServer::pull`]).
fn pull(server: &TestServer, name: &str) -> Result<Value, String> {
    server.pull(name).map_err(|e| format!("{name}: {e}"))
}

/// The config and layer digests of a manifest.
fn blob_digests(manifest: &Value) -> Vec<String> {
    let mut digests = support::layer_digests(manifest);
    digests.push(
        manifest["config"]["digest"]
            .as_str()
            .expect("config digest")
            .to_owned(),
    );
    digests
}

fn hexes(manifest: &Value) -> HashSet<String> {
    blob_digests(manifest)
        .iter()
        .map(|d| d.trim_start_matches("sha256:").to_owned())
        .collect()
}

/// Run `nixery gc` with `args` and the storage environment `env`.
fn nixery_gc(args: &[&str], env: &[(&str, String)]) -> Output {
    let mut cmd = support::server::nixery_command();
    cmd.arg("gc")
        .args(args)
        .env("NIXERY_GC_TOUCH_INTERVAL", TOUCH);
    for (key, value) in env {
        cmd.env(key, value);
    }
    let output = cmd.output().expect("run nixery gc");
    assert!(
        output.status.success(),
        "nixery gc {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn filesystem_env(server: &TestServer) -> Vec<(&'static str, String)> {
    vec![
        ("STORAGE_PATH", server.storage_path().display().to_string()),
        ("NIXERY_CACHE_DIR", server.cache_dir().display().to_string()),
    ]
}

/// The local tier's files (hex names) under the server's cache directory.
fn local_tier_files(server: &TestServer) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for dir in std::fs::read_dir(server.cache_dir()).expect("cache dir") {
        let dir = dir.expect("entry").path();
        if !dir.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&dir).expect("tier dir") {
            let path = file.expect("entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !name.is_empty() && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                files.push(path);
            }
        }
    }
    files
}

fn local_tier_holds(server: &TestServer, manifest_digest_hex: &str) -> bool {
    local_tier_files(server).iter().any(|path| {
        std::fs::read(path).is_ok_and(|bytes| sha256_hex(&bytes) == manifest_digest_hex)
    })
}

fn status_page(server: &TestServer) -> String {
    server.get("/").expect_status(200).text()
}

fn fs_server() -> TestServer {
    TestServer::builder()
        .env("NIXERY_GC_TOUCH_INTERVAL", TOUCH)
        .env("NIX_TIMEOUT", "300")
        .start()
}

#[test]
fn gc_collects_the_unpulled_image_and_the_running_server_rebuilds_it() {
    let server = fs_server();
    let hello = pull(&server, "hello").expect("first pull of hello");
    let htop = pull(&server, "htop").expect("first pull of htop");
    // The manifest as served is the stored one: its digest names the blob.
    let htop_bytes = server.manifest("htop", "latest");
    let htop_hex = sha256_hex(&htop_bytes);
    assert!(local_tier_holds(&server, &htop_hex));
    std::thread::sleep(UNUSED_AFTER);
    assert_eq!(pull(&server, "hello").expect("hello again"), hello);
    // The mark is written off the request path.
    std::thread::sleep(Duration::from_millis(500));

    let env = filesystem_env(&server);
    let dry = nixery_gc(&["--keep", KEEP, "--grace", "1s", "--dry-run"], &env);
    let dry_out = stdout(&dry);
    assert!(
        dry_out.contains(&format!("would delete layers/{htop_hex}")),
        "{dry_out}"
    );
    assert!(
        dry_out
            .lines()
            .last()
            .unwrap_or("")
            .starts_with("would delete: "),
        "{dry_out}"
    );
    let layers = server.storage_path().join("layers");
    assert!(
        layers.join(&htop_hex).exists(),
        "a dry run deleted the manifest"
    );

    let real = nixery_gc(&["--keep", KEEP, "--grace", "1s"], &env);
    let out = stdout(&real);
    let summary = out.lines().last().unwrap_or("");
    assert!(summary.starts_with("deleted: "), "{out}");
    assert!(summary.contains(" bytes ("), "{summary}");
    assert!(
        out.contains(&format!("deleted layers/{htop_hex} (manifests")),
        "{out}"
    );
    for hex in hexes(&hello) {
        assert!(layers.join(&hex).exists(), "hello lost {hex}:\n{out}");
    }
    let htop_only: Vec<String> = hexes(&htop).difference(&hexes(&hello)).cloned().collect();
    assert!(!htop_only.is_empty());
    for hex in &htop_only {
        assert!(!layers.join(hex).exists(), "unused blob {hex} kept:\n{out}");
        assert!(
            out.contains(&format!("deleted layers/{hex}")),
            "{hex} not printed"
        );
    }
    assert!(
        !local_tier_holds(&server, &htop_hex),
        "the disk tier kept htop"
    );
    assert!(
        std::fs::read_dir(server.storage_path().join("manifests"))
            .expect("tag entries")
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .all(|e| std::fs::read(e.path()).map(|b| sha256_hex(&b)).ok() != Some(htop_hex.clone())),
        "htop's tag entry survived"
    );

    // The server still has htop in memory; it must build it again.
    let builds = count_logs(&server, "building image");
    let again = pull(&server, "htop").expect("htop after the collection");
    assert_eq!(count_logs(&server, "building image"), builds + 1);
    assert_eq!(
        support::layer_digests(&again),
        support::layer_digests(&htop)
    );
}

#[test]
fn pulls_in_a_loop_during_a_collection_get_no_failed_blob() {
    let server = Arc::new(fs_server());
    for name in ["hello", "htop", "zlib"] {
        pull(&server, name).unwrap_or_else(|e| panic!("first pull of {name}: {e}"));
    }
    // Garbage enough that the sweep lasts long enough to be seen: old,
    // unreferenced blobs.
    let layers = server.storage_path().join("layers");
    let long_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    for n in 0..3000u32 {
        let bytes = format!("garbage blob {n}");
        let path = layers.join(sha256_hex(bytes.as_bytes()));
        std::fs::write(&path, &bytes).expect("garbage blob");
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|file| file.set_modified(long_ago))
            .expect("backdating a garbage blob");
    }
    // All three are now unused; two are pulled again while gc runs.
    std::thread::sleep(UNUSED_AFTER);
    let done = Arc::new(AtomicBool::new(false));
    let started_while_deleting = Arc::new(AtomicBool::new(false));
    let pulls = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let generation = server.storage_path().join("gc/generation");
    let loops: Vec<_> = [("hello", false), ("htop", true)]
        .into_iter()
        .map(|(name, wait_for_deleting)| {
            let (server, done, pulls, failures, generation, started_while_deleting) = (
                server.clone(),
                done.clone(),
                pulls.clone(),
                failures.clone(),
                generation.clone(),
                started_while_deleting.clone(),
            );
            std::thread::spawn(move || {
                if wait_for_deleting {
                    // Start in the middle of the sweep (asserted below).
                    while !done.load(Ordering::SeqCst) {
                        if std::fs::read_to_string(&generation)
                            .is_ok_and(|g| g.contains("\"deleting\""))
                        {
                            started_while_deleting.store(true, Ordering::SeqCst);
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                loop {
                    let last = done.load(Ordering::SeqCst);
                    match pull(&server, name) {
                        Ok(_) => pulls.fetch_add(1, Ordering::SeqCst),
                        Err(error) => {
                            failures.lock().unwrap().push(error);
                            0
                        }
                    };
                    if last {
                        return;
                    }
                }
            })
        })
        .collect();
    let out = stdout(&nixery_gc(
        &["--keep", KEEP, "--grace", "1s"],
        &filesystem_env(&server),
    ));
    done.store(true, Ordering::SeqCst);
    for handle in loops {
        handle.join().expect("pull loop");
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "failed pulls: {failures:#?}\ngc: {out}"
    );
    assert!(pulls.load(Ordering::SeqCst) >= 4, "only {pulls:?} pulls");
    assert!(
        started_while_deleting.load(Ordering::SeqCst),
        "the second pull loop never overlapped the deleting phase"
    );
    assert!(
        !layers.join(sha256_hex(b"garbage blob 0")).exists(),
        "the garbage was not swept:\n{out}"
    );
    // The collection did delete something: zlib, which nobody pulled.
    assert!(out.contains("(manifests,"), "nothing collected:\n{out}");
    pull(&server, "zlib").expect("zlib rebuilt after the collection");
}

#[test]
fn periodic_collection_runs_and_shows_in_metrics_and_on_the_status_page() {
    let server = TestServer::builder()
        .env("NIXERY_GC_TOUCH_INTERVAL", TOUCH)
        .env("NIXERY_GC_KEEP", KEEP)
        .env("NIXERY_GC_INTERVAL", "2s")
        // Longer than any build's packing on a loaded machine: with a
        // grace of 1 s, a collection between a layer's upload and its
        // manifest rightly failed the build with 503 (seen in a loaded
        // full run), which is not what this test is about.
        .env("NIXERY_GC_GRACE", "15s")
        .start();
    let zlib = pull(&server, "zlib").expect("first pull of zlib");
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&server, "nixery_gc_objects_deleted_total") == 0 {
        assert!(
            Instant::now() < deadline,
            "no periodic collection deleted anything"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(metric(&server, "nixery_gc_runs_total") >= 1);
    assert!(metric(&server, "nixery_gc_bytes_deleted_total") > 0);
    assert!(metric(&server, "nixery_gc_last_run_timestamp_seconds") > 1_700_000_000);
    let page = status_page(&server);
    assert!(
        page.contains("every 2s, keeping images used within 6s; last run "),
        "{page}"
    );
    for hex in hexes(&zlib) {
        assert!(
            !server.storage_path().join("layers").join(&hex).exists(),
            "{hex} of the unused image was kept"
        );
    }
    // The collected image is built again.
    assert_eq!(pull(&server, "zlib").expect("zlib again"), zlib);
    assert_eq!(count_logs(&server, "building image"), 2);
}

#[test]
fn without_gc_keep_the_server_collects_nothing_and_says_so() {
    let server = fs_server();
    pull(&server, "zlib").expect("pull");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(metric(&server, "nixery_gc_runs_total"), 0);
    let page = status_page(&server);
    assert!(
        page.contains("periodic collection off (NIXERY_GC_KEEP unset)"),
        "{page}"
    );
    // Each pull marked the image.
    let marks = std::fs::read_dir(server.storage_path().join("uses"))
        .expect("uses/")
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .count();
    assert_eq!(marks, 1);
}

#[test]
fn gc_refuses_a_keep_shorter_than_twice_the_notice_and_bad_durations() {
    for (args, expected) in [
        (&["--keep", "2s"][..], "--keep must be at least 6s"),
        (&["--keep", "soon"][..], "--keep \"soon\""),
        (
            &["--grace", "0s"][..],
            "--grace \"0s\": a duration must be longer than zero",
        ),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_nixery"))
            .arg("gc")
            .args(args)
            .env("NIXERY_GC_TOUCH_INTERVAL", TOUCH)
            .env("STORAGE_PATH", "/nonexistent-nixery-test")
            .output()
            .expect("run nixery gc");
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_gcs_gc_collects_the_unpulled_image_and_the_server_rebuilds_it() {
    let gcs = FakeGcs::start().await;
    let host = gcs.host();
    let server = Arc::new(
        TestServer::builder()
            .envs(support::gcs::server_env(&host))
            .env("NIXERY_GC_TOUCH_INTERVAL", TOUCH)
            .env("NIX_TIMEOUT", "300")
            .start(),
    );
    let blocking = |f: Box<dyn FnOnce() -> Value + Send>| tokio::task::spawn_blocking(f);
    let s = server.clone();
    let hello = blocking(Box::new(move || pull(&s, "hello").expect("hello")))
        .await
        .unwrap();
    let s = server.clone();
    let htop = blocking(Box::new(move || pull(&s, "htop").expect("htop")))
        .await
        .unwrap();
    tokio::time::sleep(UNUSED_AFTER).await;
    let s = server.clone();
    blocking(Box::new(move || pull(&s, "hello").expect("hello again")))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut env = support::gcs::server_env(&host);
    env.push(("NIXERY_CACHE_DIR", server.cache_dir().display().to_string()));
    let out = tokio::task::spawn_blocking(move || {
        stdout(&nixery_gc(&["--keep", KEEP, "--grace", "1s"], &env))
    })
    .await
    .unwrap();
    assert!(
        out.lines().last().unwrap_or("").starts_with("deleted: "),
        "{out}"
    );
    for hex in hexes(&hello) {
        assert!(
            gcs.object_metadata(&format!("layers/{hex}"))
                .await
                .is_some(),
            "hello lost {hex}:\n{out}"
        );
    }
    let htop_only: Vec<String> = hexes(&htop).difference(&hexes(&hello)).cloned().collect();
    assert!(!htop_only.is_empty());
    for hex in &htop_only {
        assert!(
            gcs.object_metadata(&format!("layers/{hex}"))
                .await
                .is_none(),
            "unused blob {hex} kept:\n{out}"
        );
    }
    assert!(
        !gcs.object_names("uses/").await.is_empty(),
        "no use marks in the bucket"
    );
    let s = server.clone();
    let again = blocking(Box::new(move || pull(&s, "htop").expect("htop rebuilt")))
        .await
        .unwrap();
    assert_eq!(
        support::layer_digests(&again),
        support::layer_digests(&htop)
    );
    let s = server.clone();
    let builds = tokio::task::spawn_blocking(move || count_logs(&s, "building image"))
        .await
        .unwrap();
    assert_eq!(builds, 3);
}

/// Modification time of the use mark of the manifest `hex`, if any.
/// Remove the use mark of `hex`, run `serve` (which answers the manifest
/// `hex` once), and wait (at most 10 s) until the server has written the
/// mark again: whether that answer recorded a use. Nothing compares
/// modification times; the server's touch interval (1 s) must have passed
/// since its last mark of `hex`, which [`past_touch_interval`] ensures.
fn marks_again(storage: &std::path::Path, hex: &str, serve: impl FnOnce()) -> bool {
    let mark = storage.join("uses").join(hex);
    match std::fs::remove_file(&mark) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => panic!("removing {}: {error}", mark.display()),
    }
    serve();
    marked(storage, hex)
}

/// Wait (at most 10 s) until the use mark of `hex` exists.
fn marked(storage: &std::path::Path, hex: &str) -> bool {
    let mark = storage.join("uses").join(hex);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if mark.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Let one touch interval pass in the same server: a lower bound between
/// two marks of one image, not a wait for something to happen.
fn past_touch_interval() {
    std::thread::sleep(Duration::from_millis(1100));
}

#[test]
fn use_is_recorded_from_every_tier_by_tag_and_by_digest() {
    let storage = tempfile::tempdir().expect("storage");
    let cache = tempfile::tempdir().expect("cache dir");
    let start = || {
        TestServer::builder()
            .storage_path(storage.path())
            .env("NIXERY_CACHE_DIR", cache.path().display().to_string())
            .env("NIXERY_GC_TOUCH_INTERVAL", TOUCH)
            .start()
    };
    let mut first = start();
    let manifest = first.manifest("zlib", "latest");
    let hex = sha256_hex(&manifest);
    assert!(marked(storage.path(), &hex), "the build marked the image");

    // Memory tier, by tag.
    past_touch_interval();
    assert!(
        marks_again(storage.path(), &hex, || {
            pull(&first, "zlib").expect("pull by tag");
        }),
        "memory tier pull not marked"
    );
    // By digest.
    past_touch_interval();
    assert!(
        marks_again(storage.path(), &hex, || {
            first
                .get(&format!("/v2/zlib/manifests/sha256:{hex}"))
                .accept(MANIFEST_V2)
                .expect_status(200);
        }),
        "pull by digest not marked"
    );
    first.stop();

    // Disk tier: a restarted server on the same cache directory.
    let mut second = start();
    assert!(
        marks_again(storage.path(), &hex, || {
            pull(&second, "zlib").expect("pull from the disk tier");
        }),
        "disk tier pull not marked"
    );
    assert!(hit_from(&second, "disk"));
    second.stop();

    // Storage tier: a server with an empty cache directory.
    let third = TestServer::builder()
        .storage_path(storage.path())
        .env("NIXERY_GC_TOUCH_INTERVAL", TOUCH)
        .start();
    assert!(
        marks_again(storage.path(), &hex, || {
            pull(&third, "zlib").expect("pull from the storage tier");
        }),
        "storage tier pull not marked"
    );
    assert!(hit_from(&third, "storage"));
}

#[test]
fn a_request_for_a_digest_nobody_stored_writes_nothing() {
    let server = TestServer::builder()
        .env("NIXERY_GC_TOUCH_INTERVAL", TOUCH)
        .start();
    // A collection is marking: the server confirms what it serves.
    let storage = nixery::storage::filesystem::FilesystemStorage::new(server.storage_path())
        .expect("storage");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let storage: Arc<dyn nixery::storage::Storage> = Arc::new(storage);
    let _collection = runtime
        .block_on(nixery::gc::generation::Holder::acquire(
            storage,
            nixery::gc::generation::Timing::DEFAULT,
        ))
        .expect("announcing a collection");
    for n in 0..20u8 {
        let hex = sha256_hex(&[n]);
        server
            .get(&format!("/v2/anything/manifests/sha256:{hex}"))
            .accept(MANIFEST_V2)
            .expect_status(404);
    }
    let uses = server.storage_path().join("uses");
    let written = std::fs::read_dir(&uses).map_or(0, |dir| dir.count());
    assert_eq!(written, 0, "use marks written for digests nobody stored");
}

/// Whether `server` answered a manifest from `tier` and built nothing.
fn hit_from(server: &TestServer, tier: &str) -> bool {
    let events = server.settled_log_events();
    !events.iter().any(|e| e["message"] == "building image")
        && events
            .iter()
            .any(|e| e["message"] == "manifest cache hit" && e["tier"] == tier)
}
