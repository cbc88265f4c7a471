//! Nixery holds no GC roots for what it built, so the Nix store may be
//! collected at any time: a build running while its store paths are
//! deleted either completes, or fails cleanly (a registry error, no
//! broken image) and succeeds when retried.
//!
//! Why not `nix-collect-garbage` here: the store is shared with every
//! other test running in parallel (and with other users of this machine),
//! and a full collection would delete the offline package set's outputs
//! that other tests are packing right now. So the test makes its own
//! package set (the offline set with a greeting of its own, so that its
//! `hello` and everything built from it have store paths no one else
//! uses) and deletes exactly those paths, again and again, with
//! `nix-store --delete` while images are built. `nix-store --delete` is
//! Nix's collector restricted to the given paths: it honours the
//! temporary roots of running builds and refuses paths still referenced,
//! so it cannot touch what another test uses. The full run, with
//! `nix-collect-garbage` itself, is the ignored test at the end, for a
//! machine of its own:
//! `cargo nextest run --test nix_store_gc --run-ignored only`.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::Duration,
};

use serde_json::Value;
use support::answer::PullError;
use support::server::TestServer;

/// Images built while the paths go; each realises the test's own `hello`.
const IMAGES: [&str; 4] = [
    "hello/zlib",
    "gmp/hello",
    "hello/ncurses",
    "coreutils/hello",
];

/// The offline package set with a greeting no other test uses.
fn own_package_set() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    support::run(
        Command::new("cp")
            .arg("-r")
            .arg(format!("{}/.", support::offline_pkgs_dir().display()))
            .arg(dir.path()),
    );
    let unique = format!(
        "Hello from nix_store_gc {} {:?}",
        std::process::id(),
        std::time::SystemTime::now()
    );
    std::fs::write(dir.path().join("hello-greeting.txt"), format!("{unique}\n"))
        .expect("write greeting");
    dir
}

/// The store path of the set's `hello` (built if needed).
fn hello_path(pkgs: &Path) -> PathBuf {
    let out = support::run(
        Command::new("nix-build")
            .arg("--no-out-link")
            .arg(pkgs)
            .args(["-A", "hello"]),
    );
    PathBuf::from(out.trim())
}

/// Every store path that is `hello` or refers to it: this test's alone.
fn own_paths(hello: &Path) -> Vec<String> {
    let output = Command::new("nix-store")
        .args(["--query", "--referrers-closure"])
        .arg(hello)
        .output()
        .expect("nix-store --query");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .filter(|p| !p.is_empty())
        .collect()
}

/// Try to delete each of `paths`, referrers first; returns how many went.
fn delete_own_paths(hello: &Path) -> usize {
    let mut paths = own_paths(hello);
    // `hello` last: its referrers must go before it.
    paths.sort_by_key(|p| Path::new(p) == hello);
    paths
        .iter()
        .filter(|path| {
            Command::new("nix-store")
                .args(["--delete", path.as_str()])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .count()
}

/// Pull `name:latest` (manifest and every blob, checked). `Ok` with the
/// manifest, or `Err` with the status and body of a failed manifest
/// request; a failed blob of a served manifest panics (a broken image).
fn pull(server: &TestServer, name: &str) -> Result<Value, (u16, String)> {
    match server.pull(name) {
        Ok(manifest) => Ok(manifest),
        Err(PullError::Manifest(answer)) => Err((answer.status, answer.text())),
        Err(PullError::Blob(how)) => panic!("{name}: {how}"),
    }
}

/// A failed pull must be a registry error, not a hang or a broken image.
fn assert_clean_failure(name: &str, status: u16, body: &str) {
    assert_eq!(status, 500, "{name}: {body}");
    let error: Value = serde_json::from_str(body).expect("registry error JSON");
    assert!(error["errors"][0]["code"].is_string(), "{name}: {body}");
}

/// Build every image of [`IMAGES`] from `pkgs` while `collect` runs in a
/// loop, then retry the failed ones once it stopped. Returns how many
/// builds failed (cleanly) and how many times `collect` deleted something.
fn builds_during(pkgs: &Path, collect: impl Fn() -> usize + Send + 'static) -> (usize, usize) {
    let server = TestServer::builder()
        .env("NIXERY_PKGS_PATH", pkgs.display().to_string())
        .env("NIX_TIMEOUT", "300")
        .start();
    let stop = Arc::new(AtomicBool::new(false));
    let deletions = Arc::new(AtomicUsize::new(0));
    let collector = thread::spawn({
        let (stop, deletions) = (stop.clone(), deletions.clone());
        move || {
            while !stop.load(Ordering::SeqCst) {
                if collect() > 0 {
                    deletions.fetch_add(1, Ordering::SeqCst);
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
    });
    let mut failed = Vec::new();
    for name in IMAGES {
        if let Err((status, body)) = pull(&server, name) {
            assert_clean_failure(name, status, &body);
            failed.push(name);
        }
    }
    stop.store(true, Ordering::SeqCst);
    collector.join().expect("collector thread");
    for name in &failed {
        pull(&server, name).unwrap_or_else(|(status, body)| {
            panic!("{name} failed again once the store was left alone: {status} {body}")
        });
    }
    (failed.len(), deletions.load(Ordering::SeqCst))
}

#[test]
fn a_build_whose_store_paths_are_deleted_meanwhile_completes_or_fails_cleanly_and_succeeds_when_retried()
 {
    let pkgs = own_package_set();
    let hello = hello_path(pkgs.path());
    let (failed, deletions) = builds_during(pkgs.path(), move || delete_own_paths(&hello));
    eprintln!(
        "{failed} of {} builds failed cleanly and succeeded when retried; the test's store paths were deleted {deletions} times",
        IMAGES.len()
    );
    assert!(
        deletions > 0,
        "the test's store paths were never deleted: the check proved nothing"
    );
}

#[test]
#[ignore = "runs nix-collect-garbage on the whole store: only on a machine of its own"]
fn builds_during_a_full_nix_collect_garbage_complete_or_fail_cleanly_and_succeed_when_retried() {
    let pkgs = own_package_set();
    let (failed, runs) = builds_during(pkgs.path(), || {
        let ok = Command::new("nix-collect-garbage")
            .output()
            .is_ok_and(|o| o.status.success());
        usize::from(ok)
    });
    eprintln!(
        "{failed} of {} builds failed cleanly and succeeded when retried; nix-collect-garbage ran {runs} times",
        IMAGES.len()
    );
    assert!(runs > 0, "nix-collect-garbage never completed");
}
