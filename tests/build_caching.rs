//! The caches do their job: cached images run no Nix build, shared layers
//! are uploaded once, records survive restarts, concurrent requests for
//! one image share a single build, and a change of layering is never
//! answered from a cache filled under the old one.

use serde_json::Value;
use support::server::TestServer;
use support::{count_logs, layer_digests, metric, offline_pkgs_repo};

/// Number of Nix builds the server has logged so far.
fn nix_builds(server: &TestServer) -> usize {
    count_logs(server, "building image")
}

/// Number of layers the server has uploaded so far.
fn layer_uploads(server: &TestServer) -> usize {
    count_logs(server, "layer uploaded")
}

fn get_manifest(server: &TestServer, name: &str, tag: &str) -> Value {
    let bytes = server.manifest(name, tag);
    // A strict parser accepts it.
    let _: oci_spec::image::ImageManifest =
        serde_json::from_slice(&bytes).expect("manifest parses strictly");
    serde_json::from_slice(&bytes).unwrap()
}

/// A server on the storage directory `storage`.
fn server_on(storage: &std::path::Path) -> TestServer {
    TestServer::builder()
        .env("NIX_TIMEOUT", "300")
        .storage_path(storage)
        .start()
}

fn pinned_server(repo: &std::path::Path, storage: &std::path::Path) -> TestServer {
    TestServer::builder()
        .pkgs_repo(repo)
        .env("NIX_TIMEOUT", "300")
        .storage_path(storage)
        .start()
}

#[test]
fn second_pull_of_a_pinned_image_runs_no_nix_build() {
    let (repo, commit) = offline_pkgs_repo();
    let storage = tempfile::tempdir().unwrap();
    let server = pinned_server(repo.path(), storage.path());
    let first = get_manifest(&server, "hello", &commit);
    assert_eq!(nix_builds(&server), 1);
    let second = get_manifest(&server, "hello", &commit);
    assert_eq!(nix_builds(&server), 1, "the second pull ran Nix");
    assert_eq!(first, second);
}

#[test]
fn shared_layers_are_reused_not_reuploaded() {
    let storage = tempfile::tempdir().unwrap();
    let server = server_on(storage.path());
    let git = get_manifest(&server, "hello/git", "latest");
    let uploads_after_git = layer_uploads(&server);
    let htop = get_manifest(&server, "hello/htop", "latest");
    let htop_layers = layer_digests(&htop);
    let shared = support::shared_layers(&git, &htop);
    assert!(shared >= 2, "hello/git and hello/htop share no layers");
    let new_layers = htop_layers.len() - shared;
    assert_eq!(
        layer_uploads(&server) - uploads_after_git,
        new_layers,
        "shared layers were uploaded again"
    );
}

#[test]
fn pinned_image_is_served_after_restart_without_nix() {
    let (repo, commit) = offline_pkgs_repo();
    let storage = tempfile::tempdir().unwrap();
    let mut first = pinned_server(repo.path(), storage.path());
    let before = get_manifest(&first, "hello/git", &commit);
    first.stop();
    let server = pinned_server(repo.path(), storage.path());
    let after = get_manifest(&server, "hello/git", &commit);
    assert_eq!(before, after);
    assert_eq!(nix_builds(&server), 0, "the restarted server ran Nix");
}

/// Layer blobs depend only on the store paths they hold: two servers, each
/// with its own empty storage, pack the same image into the same layer
/// digests (which is what lets instances on one bucket reuse each other's
/// layers, and a rebuilt layer overwrite nothing but itself).
#[test]
fn two_servers_with_empty_storage_pack_identical_layer_digests() {
    let (repo, commit) = offline_pkgs_repo();
    let (storage_a, storage_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = pinned_server(repo.path(), storage_a.path());
    let b = pinned_server(repo.path(), storage_b.path());
    let from_a = get_manifest(&a, "hello/git", &commit);
    let from_b = get_manifest(&b, "hello/git", &commit);
    assert_eq!((nix_builds(&a), nix_builds(&b)), (1, 1));
    let layers = layer_digests(&from_a);
    assert!(layers.len() >= 2, "{from_a}");
    assert_eq!(layer_uploads(&a), layers.len(), "A packed every layer");
    assert_eq!(layer_uploads(&b), layers.len(), "B packed every layer");
    assert_eq!(layers, layer_digests(&from_b));
}

/// The manifest cache key covers the layering strategy: after a restart
/// with another strategy on the same storage (and local tier), a pinned
/// image is built again and gets that strategy's layers.
#[test]
fn changing_the_layering_strategy_builds_the_image_again() {
    let (repo, commit) = offline_pkgs_repo();
    let storage = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let server_with = |layering: Option<&str>| {
        let mut builder = TestServer::builder()
            .env(
                "NIXERY_PKGS_REPO",
                format!("file://{}", repo.path().display()),
            )
            .env("NIXERY_CACHE_DIR", cache.path().display().to_string())
            .env("NIX_TIMEOUT", "300")
            .storage_path(storage.path());
        if let Some(layering) = layering {
            builder = builder.env("NIXERY_LAYERING", layering);
        }
        builder.start()
    };
    let size_rank = {
        let mut server = server_with(None);
        let manifest = get_manifest(&server, "hello/git", &commit);
        server.stop();
        manifest
    };
    // hello/git holds 8 store paths: size-rank gives each its own layer,
    // plus the symlink layer.
    assert_eq!(layer_digests(&size_rank).len(), 9);

    let mut server = server_with(Some("popularity"));
    let upstream = get_manifest(&server, "hello/git", &commit);
    assert_eq!(
        nix_builds(&server),
        1,
        "a manifest cached under size-rank was served"
    );
    // Upstream's layers: git with curl, openssl and zlib (only git uses
    // them), hello, glibc, nss-cacert, iana-etc, and the symlink layer.
    assert_eq!(layer_digests(&upstream).len(), 6);
    server.stop();

    // Back to the default: its manifest is still cached.
    let server = server_with(Some("size-rank"));
    assert_eq!(get_manifest(&server, "hello/git", &commit), size_rank);
    assert_eq!(
        nix_builds(&server),
        0,
        "the size-rank manifest was not reused"
    );
}

/// An unfree image built while `NIXERY_ALLOW_UNFREE` was on is not served
/// from any cache tier (storage or the local disk) once it is off: the
/// policy is part of the image's identity, so the server asks Nix, which
/// refuses the package.
#[test]
fn turning_unfree_off_stops_a_cached_unfree_image_from_being_served() {
    let storage = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let server_with = |allow_unfree: &str| {
        TestServer::builder()
            .env("NIXERY_ALLOW_UNFREE", allow_unfree)
            .env("NIXERY_CACHE_DIR", cache.path().display().to_string())
            .env("NIX_TIMEOUT", "300")
            .storage_path(storage.path())
            .start()
    };
    let mut allowing = server_with("true");
    let built = get_manifest(&allowing, "1password", "latest");
    assert!(!layer_digests(&built).is_empty());
    allowing.stop();

    let refusing = server_with("false");
    let answer = refusing
        .get("/v2/1password/manifests/latest")
        .accept(support::server::MANIFEST_V2)
        .expect_status(403);
    let (code, message) = answer.registry_error().expect("a registry error");
    assert_eq!(code, "DENIED");
    assert!(message.contains("unfree"), "{message}");
    assert_eq!(nix_builds(&refusing), 1, "the refusal came from Nix");
}

#[test]
fn layer_records_survive_restarts() {
    let storage = tempfile::tempdir().unwrap();
    let mut first = server_on(storage.path());
    let before = get_manifest(&first, "hello", "latest");
    first.stop();
    // Without the cached manifest the image is built again, but every layer
    // is already recorded.
    std::fs::remove_dir_all(storage.path().join("manifests")).unwrap();
    let server = server_on(storage.path());
    let after = get_manifest(&server, "hello", "latest");
    assert_eq!(nix_builds(&server), 1);
    assert_eq!(layer_uploads(&server), 0, "layers were packed again");
    assert_eq!(layer_digests(&before), layer_digests(&after));
}

#[test]
fn ten_concurrent_requests_run_one_nix_build() {
    let server = TestServer::builder().env("NIX_TIMEOUT", "300").start();
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..10)
            .map(|_| {
                scope.spawn(|| {
                    server
                        .get("/v2/hello/curl/manifests/latest")
                        .timeout(std::time::Duration::from_secs(300))
                        .send()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for answer in &results {
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    assert!(results.windows(2).all(|w| w[0].body == w[1].body));
    assert_eq!(nix_builds(&server), 1);
}

#[test]
fn build_is_finished_and_kept_when_the_client_hangs_up() {
    let storage = tempfile::tempdir().unwrap();
    let server = server_on(storage.path());
    let hung_up = reqwest::blocking::Client::new()
        .get(server.url("/v2/bigpkg/manifests/latest"))
        .timeout(std::time::Duration::from_millis(200))
        .send();
    // An answer this early can only be a failure (once: a Nix store
    // created by concurrent first builds, see scripts/setup-host.sh).
    if let Ok(response) = hung_up {
        panic!(
            "the build answered within 200 ms: {} {}",
            response.status(),
            response.text().unwrap_or_default()
        );
    }

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while count_logs(&server, "image built") == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the abandoned build never finished"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let uploads = layer_uploads(&server);
    assert!(uploads > 0);

    let manifest = get_manifest(&server, "bigpkg", "latest");
    assert_eq!(
        layer_uploads(&server),
        uploads,
        "layers were packed again after the client hung up"
    );
    for layer in manifest["layers"].as_array().unwrap() {
        let digest = layer["digest"].as_str().unwrap();
        let response = server
            .head(&format!("/v2/bigpkg/blobs/{digest}"))
            .expect_status(200);
        assert_eq!(
            response.header("content-length"),
            Some(layer["size"].to_string().as_str())
        );
    }
}

#[test]
fn metrics_count_nix_builds_cache_hits_and_uploads() {
    let (repo, commit) = offline_pkgs_repo();
    let storage = tempfile::tempdir().unwrap();
    let server = pinned_server(repo.path(), storage.path());
    assert_eq!(metric(&server, "nixery_nix_builds_total"), 0);
    let manifest = get_manifest(&server, "hello/git", &commit);
    assert_eq!(metric(&server, "nixery_nix_builds_total"), 1);
    let uploaded = metric(&server, "nixery_layers_uploaded_total");
    // Every layer, the symlink layer included, was packed once.
    assert_eq!(uploaded as usize, layer_digests(&manifest).len());
    assert!(metric(&server, "nixery_layer_bytes_uploaded_total") > 0);
    get_manifest(&server, "hello/git", &commit);
    assert_eq!(metric(&server, "nixery_manifest_cache_hits_total"), 1);
    assert_eq!(metric(&server, "nixery_nix_builds_total"), 1);
    server
        .get("/v2/nosuchpkg/manifests/latest")
        .expect_status(404);
    assert_eq!(metric(&server, "nixery_build_failures_total"), 1);
    // A different image sharing layers finds their records.
    get_manifest(&server, "hello/htop", &commit);
    assert!(metric(&server, "nixery_layer_cache_hits_total") >= 2);
}

#[test]
fn build_phases_are_exported_as_a_histogram_and_logged() {
    let storage = tempfile::tempdir().unwrap();
    let server = server_on(storage.path());
    let count = |phase: &str| {
        metric(
            &server,
            &format!("nixery_build_phase_seconds_count{{phase=\"{phase}\"}}"),
        )
    };
    let built = [
        "realise",
        "graph",
        "symlink_layer",
        "grouping",
        "layers",
        "manifest",
    ];
    for phase in built {
        assert_eq!(count(phase), 0, "{phase}");
    }
    get_manifest(&server, "hello", "latest");
    for phase in built {
        assert_eq!(count(phase), 1, "{phase}");
    }
    assert_eq!(count("resolve"), 1);
    // A cache hit resolves again and builds nothing.
    get_manifest(&server, "hello", "latest");
    assert_eq!(count("resolve"), 2);
    assert_eq!(count("realise"), 1);

    let events = server.log_events();
    let built_event = events
        .iter()
        .find(|e| e["message"] == "image built")
        .expect("an image built event");
    let phases = built_event["phases"].as_str().expect("phases field");
    for phase in built {
        assert!(phases.contains(&format!("{phase}=")), "{phases}");
    }
}
