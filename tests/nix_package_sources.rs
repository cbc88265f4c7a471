//! Package sources for real: a local git repository (`file://` URL) holding
//! the offline package set, whose commits differ in what `hello` prints.
//! Tag `latest` builds HEAD, a branch or tag name builds that ref, a
//! 40-hex tag builds that commit; resolved first (as the server does), each
//! builds exactly the commit it was resolved to.

use std::time::Duration;

use nixery::identity::Revision;
use nixery::image::Image;
use nixery::source::PackageSource;
use support::nix::*;
use support::{commit_greeting, git};

/// A git repository with the offline package set:
///   first commit  "Hello from the first commit!"   (no ref names it)
///   tag v1        "Hello from tag v1!"
///   main (HEAD)   "Hello from main!"
///   feature       "Hello from the feature branch!" (branched off v1)
struct PackageRepo {
    dir: tempfile::TempDir,
    first_commit: String,
}

impl PackageRepo {
    fn new() -> PackageRepo {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "-q", "-b", "main"]);
        for entry in std::fs::read_dir(support::offline_pkgs_dir()).unwrap() {
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

    /// What hello prints in the image built at `tag`.
    async fn hello_at(&self, tag: &str) -> String {
        self.resolved_hello_at(self.source(), tag).await.1
    }

    /// The commit `tag` resolves to and what hello prints when built from
    /// that resolution (as the server builds it).
    async fn resolved_hello_at(&self, source: PackageSource, tag: &str) -> (String, String) {
        let step = runner(source, Duration::from_secs(300));
        let Revision::Commit(commit) = step.resolve(tag).await.revision else {
            panic!("{tag} did not resolve to a commit");
        };
        let result = step.build(&Image::from_name("hello", tag)).await.unwrap();
        (commit, run_hello(&result))
    }

    fn rev_parse(&self, rev: &str) -> String {
        git(self.dir.path(), &["rev-parse", rev])
    }
}

/// One test per way of naming a revision: each builds the image `hello`
/// at the tag the repository's revision gives, and checks what it prints.
macro_rules! builds_at {
    ($($name:ident: $tag:expr => $greeting:literal;)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let repo = PackageRepo::new();
                let tag: fn(&PackageRepo) -> String = $tag;
                assert_eq!(repo.hello_at(&tag(&repo)).await, $greeting);
            }
        )*
    };
}

builds_at! {
    git_latest_builds_head: |_| "latest".into() => "Hello from main!";
    git_branch_name_builds_that_branch: |_| "feature".into() => "Hello from the feature branch!";
    git_tag_name_builds_that_tag: |_| "v1".into() => "Hello from tag v1!";
    git_commit_builds_that_commit: |repo| repo.first_commit.clone() => "Hello from the first commit!";
}

#[tokio::test]
async fn resolved_refs_build_exactly_the_resolved_commit() {
    let repo = PackageRepo::new();
    // A working tree is read in place by Nix; a bare repository is fetched
    // like a remote one (by ref, then checked out at the commit).
    let bare = tempfile::tempdir().unwrap();
    let bare_dir = bare.path().join("pkgs.git");
    git(
        repo.dir.path(),
        &["clone", "-q", "--bare", ".", bare_dir.to_str().unwrap()],
    );
    let sources = [
        repo.source(),
        PackageSource::Git(format!("file://{}", bare_dir.display())),
    ];
    for source in sources {
        for (tag, rev, greeting) in [
            ("latest", "main", "Hello from main!"),
            ("feature", "feature", "Hello from the feature branch!"),
            ("v1", "v1^{commit}", "Hello from tag v1!"),
        ] {
            assert_eq!(
                repo.resolved_hello_at(source.clone(), tag).await,
                (repo.rev_parse(rev), greeting.to_string()),
                "{tag} from {source:?}"
            );
        }
    }
    let first = repo.first_commit.clone();
    assert_eq!(
        repo.resolved_hello_at(repo.source(), &first).await,
        (first, "Hello from the first commit!".to_string())
    );
}
