//! Package sources for real: a local git repository (`file://` URL) holding
//! the offline package set, whose commits differ in what `hello` prints.
//! Tag `latest` builds HEAD, a branch or tag name builds that ref, a
//! 40-hex tag builds that commit and is the only cacheable case.

mod nix_support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nix_support::*;
use nixery::image::Image;
use nixery::source::PackageSource;

/// A git repository with the offline package set:
///   first commit  "Hello from the first commit!"   (no ref names it)
///   tag v1        "Hello from tag v1!"
///   main (HEAD)   "Hello from main!"
///   feature       "Hello from the feature branch!" (branched off v1)
struct PackageRepo {
    dir: tempfile::TempDir,
    first_commit: String,
}

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=nixery tests",
            "-c",
            "user.email=tests@nixery.invalid",
        ])
        .args(args)
        .output()
        .expect("run git");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

fn commit_greeting(dir: &Path, greeting: &str) -> String {
    std::fs::write(dir.join("hello-greeting.txt"), format!("{greeting}\n")).unwrap();
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", greeting]);
    git(dir, &["rev-parse", "HEAD"])
}

impl PackageRepo {
    fn new() -> PackageRepo {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "-q", "-b", "main"]);
        for entry in std::fs::read_dir(offline_pkgs_source_dir()).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
        let first_commit = commit_greeting(dir.path(), "Hello from the first commit!");
        commit_greeting(dir.path(), "Hello from tag v1!");
        git(dir.path(), &["tag", "v1"]);
        commit_greeting(dir.path(), "Hello from main!");
        git(dir.path(), &["checkout", "-q", "-b", "feature", "v1"]);
        commit_greeting(dir.path(), "Hello from the feature branch!");
        git(dir.path(), &["checkout", "-q", "main"]);
        PackageRepo { dir, first_commit }
    }

    fn source(&self) -> PackageSource {
        PackageSource::Git(format!("file://{}", self.dir.path().display()))
    }

    /// What hello prints in the image built at `tag`, and its cache key.
    async fn hello_at(&self, tag: &str) -> (String, Option<String>) {
        let (runner, _) = runner(self.source(), Duration::from_secs(300));
        let image = Image::from_name("hello", tag);
        let result = runner.prepare_image(&image).await.unwrap();
        (run_hello(&result), runner.cache_key(&image))
    }
}

#[tokio::test]
async fn git_latest_builds_head_and_is_not_cacheable() {
    let repo = PackageRepo::new();
    assert_eq!(
        repo.hello_at("latest").await,
        ("Hello from main!".to_string(), None)
    );
}

#[tokio::test]
async fn git_branch_name_builds_that_branch() {
    let repo = PackageRepo::new();
    assert_eq!(
        repo.hello_at("feature").await,
        ("Hello from the feature branch!".to_string(), None)
    );
}

#[tokio::test]
async fn git_tag_name_builds_that_tag() {
    let repo = PackageRepo::new();
    assert_eq!(
        repo.hello_at("v1").await,
        ("Hello from tag v1!".to_string(), None)
    );
}

#[tokio::test]
async fn git_commit_builds_that_commit_and_is_cacheable() {
    let repo = PackageRepo::new();
    let (greeting, key) = repo.hello_at(&repo.first_commit).await;
    assert_eq!(greeting, "Hello from the first commit!");
    let image = Image::from_name("hello", &repo.first_commit);
    assert_eq!(
        key,
        repo.source().cache_key(&image.packages, &repo.first_commit)
    );
    assert!(key.is_some());
}

#[tokio::test]
async fn git_unknown_ref_is_a_build_failure() {
    let repo = PackageRepo::new();
    let (runner, _) = runner(repo.source(), Duration::from_secs(120));
    let err = runner
        .prepare_image(&Image::from_name("hello", "no-such-branch"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, nixery::nix::NixError::BuildFailed { .. }),
        "{err:?}"
    );
}
