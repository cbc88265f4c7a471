//! Every image index served records a use, from each tier of the manifest
//! cache (memory, disk, storage), on the filesystem, GCS (fake-gcs-server)
//! and S3 (s3s-fs), one test body: an index pulled every day is never
//! collected, whichever tier answers it.
//!
//! Each step removes the index's use mark from storage, asks a server for
//! the index, and waits until the mark is back. The tier that answered is
//! read from the server's log (`index cache hit`, with no build). Servers
//! mark an image at most once a second (`NIXERY_GC_TOUCH_INTERVAL=1s`).

use std::path::Path;
use std::time::{Duration, Instant};

use nixery::{digest::Digest, storage::StorageError, storage::StorageKey};
use support::backends::{Backend, ServerOn};
use support::media::OCI_INDEX;
use support::server::{TestServer, TestServerBuilder};

const TOUCH: &str = "1s";

/// A server building two-platform indexes from a package set for any
/// system, with its disk tier in `cache`.
fn configured(pkgs: &Path, cache: &Path) -> impl FnOnce(TestServerBuilder) -> TestServerBuilder {
    let (pkgs, cache) = (pkgs.display().to_string(), cache.display().to_string());
    move |builder| {
        builder
            .env("NIXERY_CACHE_DIR", cache)
            .env("NIXERY_GC_TOUCH_INTERVAL", TOUCH)
            .env("NIXERY_PLATFORMS", "linux/amd64,linux/arm64")
            .env("NIXERY_PKGS_PATH", pkgs)
            .env("NIX_TIMEOUT", "300")
    }
}

/// The digest of the index `server` answers for `zlib:latest`.
fn index_of(server: &TestServer) -> Digest {
    let (content_type, digest, _) = server.get_document("/v2/zlib/manifests/latest", &[OCI_INDEX]);
    assert_eq!(content_type, OCI_INDEX);
    digest.parse().expect("a digest")
}

/// Wait (at most 30 s) until the use mark of `digest` exists.
fn marked(on: &ServerOn, digest: &Digest) -> bool {
    let mark = StorageKey::use_mark(digest);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match on.block_on(on.storage().stat(&mark)) {
            Ok(_) => return true,
            Err(StorageError::NotFound(_)) => {}
            Err(error) => panic!("stat {mark}: {error}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Remove the use mark of `digest`, run `serve`, and say whether a server
/// wrote the mark again.
fn marks_again(on: &ServerOn, digest: &Digest, serve: impl FnOnce()) -> bool {
    on.block_on(on.storage().delete(&StorageKey::use_mark(digest)))
        .expect("removing the use mark");
    serve();
    marked(on, digest)
}

/// Whether `server` answered an index from `tier` and built nothing.
fn index_hit_from(server: &TestServer, tier: &str) -> bool {
    let events = server.settled_log_events();
    !events.iter().any(|e| e["message"] == "building image")
        && events
            .iter()
            .any(|e| e["message"] == "index cache hit" && e["tier"] == tier)
}

fn an_index_served_from_every_tier_is_marked(backend: Backend) {
    let pkgs = support::any_system_pkgs();
    let cache = tempfile::tempdir().expect("cache dir");
    let mut on = ServerOn::start(backend, configured(pkgs.path(), cache.path()));
    let index = index_of(&on.server);
    assert!(marked(&on, &index), "building the index marked it");

    // Memory tier: the same server, one touch interval later.
    std::thread::sleep(Duration::from_millis(1100));
    assert!(
        marks_again(&on, &index, || assert_eq!(index_of(&on.server), index)),
        "an index from the memory tier was not marked"
    );
    on.server.stop();

    // Disk tier: a new server on the same cache directory.
    let mut second = on.another_server(configured(pkgs.path(), cache.path()));
    assert!(
        marks_again(&on, &index, || assert_eq!(index_of(&second), index)),
        "an index from the disk tier was not marked"
    );
    assert!(index_hit_from(&second, "disk"));
    second.stop();

    // Storage tier: a new server with an empty cache directory.
    let empty = tempfile::tempdir().expect("empty cache dir");
    let third = on.another_server(configured(pkgs.path(), empty.path()));
    assert!(
        marks_again(&on, &index, || assert_eq!(index_of(&third), index)),
        "an index from the storage tier was not marked"
    );
    assert!(index_hit_from(&third, "storage"));
}

macro_rules! on_every_backend {
    ($($module:ident => $backend:expr;)*) => {
        $(
            mod $module {
                #[test]
                fn an_index_served_from_every_tier_is_marked() {
                    super::an_index_served_from_every_tier_is_marked($backend);
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
