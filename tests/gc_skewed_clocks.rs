//! Servers whose clocks are minutes off never serve what a collection on
//! another clock removed, and the uses they record are honoured; on the
//! filesystem, GCS (fake-gcs-server) and S3 (s3s-fs), one test body.
//!
//! Two real server processes share one storage: one runs five minutes
//! ahead and one five minutes behind (libfaketime preloaded, `FAKETIME`),
//! and the collection runs in this process on the host's own clock, so
//! the three clocks differ by up to ten minutes. The test checks from the
//! servers' own log timestamps that their clocks really are off. Five
//! minutes stays within what S3 signing tolerates: SigV4 requests and
//! presigned URLs may be 15 minutes off the server's time, and s3s-fs
//! enforces that (`RequestTimeTooSkewed` beyond 900 s), so the S3 arm runs
//! against a bucket that checks it.
//!
//! libfaketime 0.9.10 with a relative offset also fakes `CLOCK_MONOTONIC`
//! by default: it then reads as the faked wall-clock time (a jump of
//! decades at start-up, then it advances with the wall clock). The server
//! ahead runs so (its `Instant`s and Tokio's timers only ever compare
//! readings of that one clock); the server behind keeps the host's real
//! monotonic clock (`FAKETIME_DONT_FAKE_MONOTONIC=1`), as a host whose
//! wall clock is off has.
//!
//! The race is put where it hurts: each server holds an image in memory,
//! stamped before the collection, and is asked for it after the collection
//! has switched to deleting and decided that the image goes, but before
//! anything is deleted (the collector's storage holds its first delete
//! until both servers have recorded the request's use, which they do while
//! confirming the entry). A server that judged the collection dead by
//! comparing its clock with a time written by another host would serve
//! the entry at once, and its blobs would then be deleted under the
//! client; these servers must wait out the collection and build the image
//! again, so every blob of every manifest they answer exists.

use std::{
    sync::mpsc,
    time::{Duration, Instant, SystemTime},
};

use nixery::{
    digest::Digest,
    gc::{self, Kind, Options, Policy, watch::notice_period},
    storage::{StorageError, StorageKey},
};
use support::backends::{Backend, ServerOn};
use support::count_logs;
use support::server::{MANIFEST_V2, TestServer, TestServerBuilder, sha256_hex};

/// libfaketime as Debian installs it (`scripts/setup-host.sh`).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
/// How far the servers' clocks are off, either way.
const SKEW: Duration = Duration::from_secs(5 * 60);
const TOUCH: &str = "1s";
const KEEP: Duration = Duration::from_secs(6);
/// Longer than `KEEP` plus the touch interval: an image not pulled for this
/// long is unused.
const UNUSED_AFTER: Duration = Duration::from_secs(8);

/// A server on `backend` whose wall clock is `offset` (`+5m`, `-5m`) off
/// this host's.
fn skewed(
    backend: Backend,
    offset: &'static str,
    fake_monotonic: bool,
) -> impl FnOnce(TestServerBuilder) -> TestServerBuilder {
    assert!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: run scripts/setup-host.sh"
    );
    move |builder| {
        let builder = builder
            .env("LD_PRELOAD", LIBFAKETIME)
            .env("FAKETIME", offset)
            .env("NIXERY_GC_TOUCH_INTERVAL", TOUCH)
            .env("NIX_TIMEOUT", "300");
        // A presigned URL is valid from its signing time on the server's
        // clock for its lifetime on the bucket's: a server five minutes
        // behind gives links of the default five minutes that the bucket
        // finds expired at once (docs/s3.md says so).
        let builder = if backend == Backend::S3 {
            builder.env("S3_LINK_EXPIRATION", "15m")
        } else {
            builder
        };
        if fake_monotonic {
            builder
        } else {
            builder.env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        }
    }
}

/// How far `server`'s wall clock is ahead of this host's (negative:
/// behind), from the timestamp of a log event it writes on request.
fn clock_offset(server: &TestServer) -> f64 {
    let before = SystemTime::now();
    server.get("/v2/").expect_status(200);
    let after = SystemTime::now();
    let logged = server
        .settled_log_events()
        .iter()
        .rev()
        .find_map(|event| event["timestamp"].as_str()?.parse::<jiff::Timestamp>().ok())
        .expect("a log event with a timestamp");
    let logged = SystemTime::from(logged);
    let secs = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64()
    };
    secs(logged) - (secs(before) + secs(after)) / 2.0
}

fn digest_of(manifest: &[u8]) -> Digest {
    Digest::parse_hex(&sha256_hex(manifest)).expect("a digest")
}

/// The config and layers a manifest names.
fn blobs_of(manifest: &[u8]) -> Vec<Digest> {
    let manifest: serde_json::Value = serde_json::from_slice(manifest).expect("JSON");
    let config = manifest["config"]["digest"].as_str().map(str::to_owned);
    support::layer_digests(&manifest)
        .into_iter()
        .chain(config)
        .map(|digest| digest.parse().expect("a digest"))
        .collect()
}

/// The manifest of `name:latest` as `server` answers it.
fn manifest(server: &TestServer, name: &str) -> Vec<u8> {
    server.manifest(name, "latest")
}

fn exists(on: &ServerOn, key: &StorageKey) -> bool {
    match on.block_on(on.storage().stat(key)) {
        Ok(_) => true,
        Err(StorageError::NotFound(_)) => false,
        Err(error) => panic!("stat {key}: {error}"),
    }
}

/// Remove the use mark of `digest`, run `serve`, and wait (at most 60 s)
/// until a server has written it again: whether `serve` recorded a use.
/// `done` says whether the request ended meanwhile.
fn marks_again(
    on: &ServerOn,
    digest: &Digest,
    serve: impl FnOnce(),
    done: impl Fn() -> bool,
) -> bool {
    let mark = StorageKey::use_mark(digest);
    on.block_on(on.storage().delete(&mark))
        .expect("removing a mark");
    serve();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if exists(on, &mark) {
            return true;
        }
        if done() {
            return exists(on, &mark);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Let one touch interval pass: a lower bound between two marks of one
/// image by one server, not a wait for something to happen.
fn past_touch_interval() {
    std::thread::sleep(Duration::from_millis(1100));
}

fn no_collected_entry_is_served_and_skewed_uses_are_honoured(backend: Backend) {
    let on = ServerOn::start(backend, skewed(backend, "+5m", true));
    let ahead = &on.server;
    let behind = on.another_server(skewed(backend, "-5m", false));
    for (server, sign) in [(ahead, 1.0), (&behind, -1.0)] {
        let offset = clock_offset(server);
        assert!(
            (offset * sign - SKEW.as_secs_f64()).abs() < 60.0,
            "the server's clock is {offset:.0} s off, not {sign}{SKEW:?}"
        );
    }

    // Both servers hold every image in memory, stamped before any
    // collection: `ahead` built them, `behind` confirmed them in storage.
    let images = ["hello", "zlib", "htop"];
    let mut built = Vec::new();
    for name in images {
        let bytes = manifest(ahead, name);
        assert_eq!(manifest(&behind, name), bytes, "{name}");
        built.push((digest_of(&bytes), blobs_of(&bytes)));
    }
    let [(hello, _), (zlib, _), (htop, htop_blobs)] = [&built[0], &built[1], &built[2]];
    let (hello, zlib, htop) = (*hello, *zlib, *htop);
    // Blobs only `htop` names: the collection must remove them.
    let htop_only: Vec<String> = htop_blobs
        .iter()
        .filter(|blob| !built[..2].iter().any(|(_, kept)| kept.contains(blob)))
        .map(|blob| format!("layers/{}", blob.hex()))
        .collect();
    assert!(!htop_only.is_empty());
    std::thread::sleep(UNUSED_AFTER);

    // Uses recorded by each skewed server: `hello` by the one behind,
    // `zlib` by the one ahead. The collector must count them as recent.
    assert!(
        marks_again(
            &on,
            &hello,
            || drop(behind.pull("hello").expect("hello")),
            || false
        ),
        "the server behind recorded no use"
    );
    assert!(
        marks_again(
            &on,
            &zlib,
            || drop(ahead.pull("zlib").expect("zlib")),
            || false
        ),
        "the server ahead recorded no use"
    );

    // The collection, on this host's clock. Its storage holds the first
    // delete until both servers are asked for `htop` and wait.
    let storage = support::interposed::Interposed::new(on.shared_storage());
    let (deciding, decided) = mpsc::channel::<()>();
    let (go, gone) = tokio::sync::oneshot::channel::<()>();
    storage.before_deleting(move || {
        Box::pin(async move {
            let _ = deciding.send(());
            let _ = gone.await;
        })
    });
    let touch = Duration::from_secs(1);
    let options = Options::new(
        Policy {
            keep: KEEP,
            grace: Duration::from_secs(1),
            touch_interval: touch,
        },
        notice_period(touch),
    );
    let builds_before = [
        count_logs(ahead, "building image"),
        count_logs(&behind, "building image"),
    ];
    std::thread::scope(|scope| {
        let collection = scope.spawn(|| {
            let mut deleted = Vec::new();
            let collected = on.block_on(gc::collect(storage.clone(), &options, &mut |d| {
                deleted.push(d.clone())
            }));
            (collected, deleted)
        });
        decided
            .recv_timeout(Duration::from_secs(120))
            .expect("the collection never started deleting");
        // The collection is deleting and `htop` is garbage: each server is
        // asked for it and must confirm it (its use mark is written then),
        // which waits for the collection to end.
        let mut requests = Vec::new();
        for server in [ahead, &behind] {
            let request = std::cell::RefCell::new(None);
            let confirming = marks_again(
                &on,
                &htop,
                || {
                    *request.borrow_mut() = Some(scope.spawn(move || {
                        server
                            .get("/v2/htop/manifests/latest")
                            .accept(MANIFEST_V2)
                            .send()
                    }))
                },
                || request.borrow().as_ref().is_some_and(|r| r.is_finished()),
            );
            assert!(confirming, "a server answered htop without confirming it");
            requests.push((server, request.into_inner().expect("a request")));
        }
        let _ = go.send(());
        let (collected, deleted) = collection.join().expect("the collection");
        let report = collected.expect("the collection ran");
        let names = |kind: Kind| -> Vec<String> {
            deleted
                .iter()
                .filter(|d| d.kind == kind)
                .map(|d| d.name.clone())
                .collect()
        };
        // `htop` goes (its OCI variant and SBOMs with it); the images
        // the skewed servers used stay.
        let manifests = names(Kind::Manifest);
        assert!(
            manifests.contains(&format!("layers/{}", htop.hex())),
            "{}",
            report.summary()
        );
        for kept in [hello, zlib] {
            assert!(!manifests.contains(&format!("layers/{}", kept.hex())));
        }
        let blobs = names(Kind::Blob);
        for blob in &htop_only {
            assert!(blobs.contains(blob), "{blob} was not collected: {blobs:?}");
        }
        for (server, request) in requests {
            let answer = request.join().expect("a request");
            assert_eq!(answer.status, 200, "{}", answer.text());
            let served = answer.json();
            server.fetch_blobs("htop", &served).unwrap_or_else(|error| {
                panic!("a server answered a manifest whose blobs were collected: {error}")
            });
        }
    });
    // What the collection removed was built again, not served from memory.
    assert_eq!(count_logs(ahead, "building image"), builds_before[0] + 1);
    assert_eq!(count_logs(&behind, "building image"), builds_before[1] + 1);
    // The uses the skewed servers recorded kept their images whole.
    for (digest, blobs) in &built[..2] {
        for blob in blobs.iter().chain([digest]) {
            assert!(
                exists(&on, &StorageKey::layer(blob)),
                "{blob} was collected"
            );
        }
    }
    past_touch_interval();
    for server in [ahead, &behind] {
        for name in images {
            server
                .pull(name)
                .unwrap_or_else(|error| panic!("{name} after the collection: {error}"));
        }
    }
}

macro_rules! on_every_backend {
    ($($module:ident => $backend:expr;)*) => {
        $(
            mod $module {
                #[test]
                fn servers_minutes_off_never_serve_a_collected_entry_and_their_uses_count() {
                    super::no_collected_entry_is_served_and_skewed_uses_are_honoured($backend);
                }
            }
        )*
    };
}

on_every_backend! {
    filesystem => support::backends::Backend::Filesystem;
    gcs => support::backends::Backend::Gcs;
    s3 => support::backends::Backend::S3;
}
