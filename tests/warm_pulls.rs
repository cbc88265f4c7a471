//! Warm pulls and image identity through the real server and real Nix:
//!
//! * every request gets its own image, even when names sort alike
//!   (`shell/hello` and `hello/shell`, `arm64/htop` and `htop/arm64`) or a
//!   cached image differs only by architecture;
//! * a warm pull of any source kind starts no Nix process;
//! * a local path is re-read after an edit, a git branch after its TTL,
//!   and the branch's manifest is the one of the commit it resolved to;
//! * the local manifest tier survives a restart and is never used for
//!   another storage.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::server::{MANIFEST_V2, TestServer, TestServerBuilder};
use support::{any_system_pkgs, commit_greeting, count_logs, git, offline_pkgs_dir, run};

/// A manifest request's status and body.
fn pull(server: &TestServer, name: &str, tag: &str) -> (u16, Vec<u8>) {
    let answer = server
        .get(&format!("/v2/{name}/manifests/{tag}"))
        .accept(MANIFEST_V2)
        .send();
    (answer.status, answer.body)
}

/// The manifest of a pull that must succeed.
fn manifest(server: &TestServer, name: &str, tag: &str) -> Vec<u8> {
    server.manifest(name, tag)
}

/// The image config a manifest names, read from the server's storage.
fn image_config(server: &TestServer, manifest: &[u8]) -> Value {
    let manifest: Value = serde_json::from_slice(manifest).expect("manifest JSON");
    let digest = manifest["config"]["digest"]
        .as_str()
        .expect("config digest");
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let bytes = std::fs::read(server.storage_path().join("layers").join(hex)).expect("config");
    serde_json::from_slice(&bytes).expect("config JSON")
}

fn nix_builds(server: &TestServer) -> usize {
    count_logs(server, "building image")
}

fn path_server(pkgs: &Path) -> TestServerBuilder {
    TestServer::builder()
        .env("NIXERY_PKGS_PATH", pkgs.display().to_string())
        .env("NIX_TIMEOUT", "300")
}

/// Change the package set's fingerprint (not its contents) and wait until
/// the server looks at the tree again.
fn touch_and_wait(pkgs: &Path) {
    let file = pkgs.join("lib.nix");
    let text = std::fs::read(&file).unwrap();
    std::fs::write(&file, text).unwrap();
    std::thread::sleep(Duration::from_millis(2300));
}

#[test]
fn names_that_sort_alike_each_get_their_own_image_when_pulled_together() {
    let pkgs = any_system_pkgs();
    let server = path_server(pkgs.path())
        .env("NIXERY_BUILD_CONCURRENCY", "4")
        .start();
    const ROUNDS: usize = 5;
    for round in 0..ROUNDS {
        // A new fingerprint: every image is cold again in this round.
        touch_and_wait(pkgs.path());
        let names = ["shell/hello", "hello/shell", "arm64/htop", "htop/arm64"];
        let results: Vec<(u16, Vec<u8>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = names
                .iter()
                .map(|name| scope.spawn(|| pull(&server, name, "latest")))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let body = |i: usize| String::from_utf8_lossy(&results[i].1).into_owned();

        // shell/hello: the shell meta-package plus hello, amd64, runs bash.
        assert_eq!(results[0].0, 200, "round {round} shell/hello: {}", body(0));
        let config = image_config(&server, &results[0].1);
        assert_eq!(config["architecture"], "amd64", "round {round}");
        assert_eq!(config["config"]["Cmd"], serde_json::json!(["bash"]));
        // hello/shell: a package literally named `shell`, which is missing.
        assert_eq!(results[1].0, 404, "round {round} hello/shell: {}", body(1));
        assert!(body(1).contains("shell"), "{}", body(1));
        // arm64/htop: an aarch64 image of htop.
        assert_eq!(results[2].0, 200, "round {round} arm64/htop: {}", body(2));
        assert_eq!(
            image_config(&server, &results[2].1)["architecture"],
            "arm64"
        );
        // htop/arm64: a package literally named `arm64`, which is missing.
        assert_eq!(results[3].0, 404, "round {round} htop/arm64: {}", body(3));
        assert!(body(3).contains("arm64"), "{}", body(3));
    }
    // Every image of every round was built on its own (the two missing
    // ones end in "packages not found" before their build).
    assert_eq!(nix_builds(&server), 4 * ROUNDS);
}

#[test]
fn arm64_image_after_the_same_amd64_image_is_an_arm64_image() {
    let pkgs = any_system_pkgs();
    let server = path_server(pkgs.path()).start();
    let amd64 = manifest(&server, "hello", "latest");
    assert_eq!(image_config(&server, &amd64)["architecture"], "amd64");
    let arm64 = manifest(&server, "arm64/hello", "latest");
    assert_ne!(amd64, arm64);
    assert_eq!(image_config(&server, &arm64)["architecture"], "arm64");
    assert_eq!(nix_builds(&server), 2);
}

/// A wrapper for the Nix step that appends a line to `count` every time it
/// starts, then runs nix-build on this repository's prepare-image, or
/// `nix path-info` when asked for the graph.
fn counting_wrapper(dir: &Path) -> (PathBuf, PathBuf) {
    let count = dir.join("nix-processes");
    let wrapper = dir.join("prepare-image");
    let prepare = Path::new(env!("CARGO_MANIFEST_DIR")).join("prepare-image/prepare-image.nix");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho started >> '{}'\nif [ \"$1\" = path-info ]; then shift; exec nix --extra-experimental-features nix-command path-info --json --recursive --closure-size \"$@\"; fi\nnix-build --no-out-link '{}' \"$@\"\n",
            count.display(),
            prepare.display()
        ),
    )
    .unwrap();
    run(Command::new("chmod").arg("755").arg(&wrapper));
    (wrapper, count)
}

fn nix_processes(count: &Path) -> usize {
    std::fs::read_to_string(count).map_or(0, |text| text.lines().count())
}

/// A git repository with the offline package set; returns its directory
/// and a function committing a new greeting on `main`.
fn package_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    run(Command::new("cp")
        .arg("-r")
        .arg(format!("{}/.", offline_pkgs_dir().display()))
        .arg(dir.path()));
    git(dir.path(), &["init", "-q", "-b", "main"]);
    commit_greeting(dir.path(), "Hello from the first commit!");
    dir
}

#[test]
fn warm_pulls_start_no_nix_process_for_any_source_kind() {
    let scratch = tempfile::tempdir().unwrap();
    let (wrapper, count) = counting_wrapper(scratch.path());
    let repo = package_repo();
    let commit = git(repo.path(), &["rev-parse", "HEAD"]);
    let repo_url = format!("file://{}", repo.path().display());
    /// What is tested, the source setting (none: the embedded set), the tag.
    type Case<'a> = (&'a str, Option<(&'a str, String)>, String);
    let cases: Vec<Case> = vec![
        ("embedded set", None, "latest".into()),
        (
            "local path",
            Some(("NIXERY_PKGS_PATH", offline_pkgs_dir().display().to_string())),
            "latest".into(),
        ),
        (
            "pinned commit",
            Some(("NIXERY_PKGS_REPO", repo_url.clone())),
            commit.clone(),
        ),
        (
            "git branch",
            Some(("NIXERY_PKGS_REPO", repo_url.clone())),
            "main".into(),
        ),
        (
            "git HEAD",
            Some(("NIXERY_PKGS_REPO", repo_url)),
            "latest".into(),
        ),
    ];
    for (kind, source, tag) in cases {
        let mut builder = TestServer::builder()
            .env("NIXERY_PREPARE_IMAGE", wrapper.display().to_string())
            .env("NIX_TIMEOUT", "300");
        if let Some((var, value)) = source {
            builder = builder.env(var, value);
        }
        let server = builder.start();
        let before = nix_processes(&count);
        let cold = manifest(&server, "hello/git", &tag);
        // nix-build, then nix path-info.
        assert_eq!(nix_processes(&count), before + 2, "{kind}: cold pull");
        // The same name (`git/hello` names another image: its command is
        // git's, see docs/using.md).
        for _ in 0..20 {
            assert_eq!(manifest(&server, "hello/git", &tag), cold, "{kind}");
        }
        let head = server
            .head(&format!("/v2/hello/git/manifests/{tag}"))
            .send();
        assert_eq!(head.status, 200, "{kind}: HEAD");
        assert!(head.header("docker-content-digest").is_some(), "{kind}");
        assert_eq!(
            nix_processes(&count),
            before + 2,
            "{kind}: warm pulls started Nix"
        );
    }
}

#[test]
fn path_source_edit_is_seen_by_a_pull_three_seconds_later_then_cached_again() {
    let pkgs = tempfile::tempdir().unwrap();
    run(Command::new("cp")
        .arg("-r")
        .arg(format!("{}/.", offline_pkgs_dir().display()))
        .arg(pkgs.path()));
    let server = path_server(pkgs.path()).start();
    let before = manifest(&server, "hello", "latest");
    assert_eq!(manifest(&server, "hello", "latest"), before);
    assert_eq!(nix_builds(&server), 1);

    std::fs::write(pkgs.path().join("hello-greeting.txt"), "Edited!\n").unwrap();
    let edited = Instant::now();
    std::thread::sleep(Duration::from_secs(3).saturating_sub(edited.elapsed()));
    let after = manifest(&server, "hello", "latest");
    assert_ne!(after, before, "the edit was not picked up");
    assert_eq!(nix_builds(&server), 2);
    assert_eq!(manifest(&server, "hello", "latest"), after);
    assert_eq!(nix_builds(&server), 2, "the pull after the edit ran Nix");
}

#[test]
fn git_branch_moves_after_the_ttl_and_not_before_to_the_resolved_commit() {
    const TTL: Duration = Duration::from_secs(4);
    let repo = package_repo();
    let url = format!("file://{}", repo.path().display());
    let server = TestServer::builder()
        .env("NIXERY_PKGS_REPO", url.clone())
        .env("NIXERY_SOURCE_TTL", TTL.as_secs().to_string())
        .env("NIX_TIMEOUT", "300")
        .start();
    let resolved_at = Instant::now();
    let first = manifest(&server, "hello", "main");
    // The refs were asked for between `resolved_at` and now: the TTL has
    // surely run out once it has passed since now (under load the request
    // can reach the resolver well after `resolved_at`).
    let first_done = Instant::now();
    let second_commit = commit_greeting(repo.path(), "Hello from the second commit!");

    // Within the TTL: the branch still means the first commit, from cache.
    assert_eq!(manifest(&server, "hello", "main"), first);
    assert!(
        resolved_at.elapsed() < TTL,
        "the machine is too slow for this test"
    );
    assert_eq!(nix_builds(&server), 1);

    std::thread::sleep(TTL.saturating_sub(first_done.elapsed()) + Duration::from_millis(300));
    let moved = manifest(&server, "hello", "main");
    assert_ne!(moved, first, "the new commit was not served after the TTL");
    assert_eq!(nix_builds(&server), 2);

    // The branch's image is the one of the commit it resolved to: the
    // same image pulled by that commit is the same cache entry ...
    assert_eq!(manifest(&server, "hello", &second_commit), moved);
    assert_eq!(nix_builds(&server), 2);
    // ... and a server that never saw the branch builds the same manifest
    // from the commit.
    let fresh = TestServer::builder()
        .env("NIXERY_PKGS_REPO", url)
        .env("NIX_TIMEOUT", "300")
        .start();
    assert_eq!(manifest(&fresh, "hello", &second_commit), moved);
}

#[test]
fn unknown_git_ref_is_manifest_unknown_without_running_nix() {
    let repo = package_repo();
    let server = TestServer::builder().pkgs_repo(repo.path()).start();
    let (status, body) = pull(&server, "hello", "no-such-branch");
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["errors"][0]["code"], "MANIFEST_UNKNOWN");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("no-such-branch")
    );
    assert_eq!(nix_builds(&server), 0);
}

#[test]
fn local_manifest_tier_survives_a_restart_and_belongs_to_its_storage() {
    let cache_dir = tempfile::tempdir().unwrap();
    let storage = tempfile::tempdir().unwrap();
    let start = |storage: &Path| {
        TestServer::builder()
            .env("NIXERY_CACHE_DIR", cache_dir.path().display().to_string())
            .env("NIX_TIMEOUT", "300")
            .storage_path(storage)
            .start()
    };
    let built = {
        let mut server = start(storage.path());
        let built = manifest(&server, "hello", "latest");
        server.stop();
        built
    };
    // Without the storage tier's copy, only the local tier can answer.
    std::fs::remove_dir_all(storage.path().join("manifests")).unwrap();
    let mut restarted = start(storage.path());
    assert_eq!(manifest(&restarted, "hello", "latest"), built);
    assert_eq!(nix_builds(&restarted), 0, "the restarted server ran Nix");
    let hit = restarted
        .wait_for_event(Duration::from_secs(10), |e| {
            e["message"] == "manifest cache hit"
        })
        .expect("a cache hit event");
    assert_eq!(hit["tier"], "disk");
    restarted.stop();

    // Another storage root with the same cache directory starts cold.
    let other = tempfile::tempdir().unwrap();
    let server = start(other.path());
    manifest(&server, "hello", "latest");
    assert_eq!(
        nix_builds(&server),
        1,
        "answered from another storage's tier"
    );
}

#[test]
fn channel_name_is_built_from_the_commit_of_the_configured_remote() {
    let repo = package_repo();
    let commit = git(repo.path(), &["rev-parse", "HEAD"]);
    let server = TestServer::builder()
        .env("NIXERY_CHANNEL", "main")
        .env(
            "NIXERY_CHANNEL_REMOTE",
            format!("file://{}", repo.path().display()),
        )
        .env("NIX_TIMEOUT", "300")
        .start();
    let built = manifest(&server, "hello", "latest");
    assert_eq!(manifest(&server, "hello", "any-tag"), built);
    assert_eq!(nix_builds(&server), 1);
    let event = server
        .wait_for_event(Duration::from_secs(10), |e| {
            e["message"] == "building image"
        })
        .expect("a build event");
    let revision = event["revision"].as_str().unwrap();
    assert_eq!(revision, format!("commit {}", &commit[..12]));
    assert_eq!(count_logs(&server, "source refs listed"), 1);
}
