//! The real nixpkgs trees of `../shared/real-nix` (see its README):
//! nixpkgs 24.11 and 20.09 and nixpkgs `lib` of June 2026, as tarballs.
//! Each is unpacked once into `target/real-nix/<archive name>/` (reused by
//! every test and later runs; an unpacked tree is complete once its
//! `.unpacked` marker exists) under a lock, so the test processes that
//! nextest runs side by side unpack it only once.
//!
//! Where `../shared/real-nix` is absent (a newcomer with only the
//! repository), [`tree`] prints a visible SKIPPED line and the tests return
//! early; `REAL_NIX_DIR` may point elsewhere.

use std::fs::{self, File};
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::process::Command;

/// A real tree: which archive, and the directory it unpacks to.
#[derive(Clone, Copy, Debug)]
pub enum Tree {
    /// nixpkgs 24.11 (unpacks to `nixpkgs/`).
    Nixpkgs2411,
    /// nixpkgs 20.09 (unpacks to `nixpkgs/`).
    Nixpkgs2009,
    /// nixpkgs `lib` of June 2026 (unpacks to `lib/`).
    Lib2026,
}

impl Tree {
    fn archive(self) -> &'static str {
        match self {
            Tree::Nixpkgs2411 => "nixpkgs-24.11.tar.gz",
            Tree::Nixpkgs2009 => "nixpkgs-20.09.tar.gz",
            Tree::Lib2026 => "nixpkgs-lib-2026-06.tar.gz",
        }
    }

    fn inner(self) -> &'static str {
        match self {
            Tree::Nixpkgs2411 | Tree::Nixpkgs2009 => "nixpkgs",
            Tree::Lib2026 => "lib",
        }
    }
}

/// The directory of the real-nix archives, if present.
pub fn shared_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("REAL_NIX_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => crate::repo_root().join("../shared/real-nix"),
    };
    dir.is_dir().then_some(dir)
}

/// The unpacked `tree` (the `nixpkgs/` or `lib/` directory), or None after
/// printing why the calling test is skipped.
pub fn tree(tree: Tree, test: &str) -> Option<PathBuf> {
    let Some(shared) = shared_dir() else {
        let line = format!(
            "SKIPPED {test}: ../shared/real-nix (real nixpkgs trees) is not beside the repository"
        );
        println!("{line}");
        eprintln!("{line}");
        return None;
    };
    let archive = shared.join(tree.archive());
    assert!(archive.is_file(), "{} is missing", archive.display());
    let cache = crate::repo_root()
        .join("target/real-nix")
        .join(tree.archive());
    fs::create_dir_all(cache.parent().expect("parent")).expect("create target/real-nix");
    let lock = File::create(cache.with_extension("lock")).expect("lock file");
    // SAFETY: flock on a file descriptor we own; released when `lock` closes.
    let locked = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(locked, 0, "flock");
    let marker = cache.join(".unpacked");
    if !marker.exists() {
        let _ = fs::remove_dir_all(&cache);
        fs::create_dir_all(&cache).expect("create the unpack directory");
        let status = Command::new("tar")
            .arg("-xzf")
            .arg(&archive)
            .arg("-C")
            .arg(&cache)
            .status()
            .expect("run tar");
        assert!(status.success(), "unpacking {}", archive.display());
        fs::write(&marker, b"").expect("write marker");
    }
    drop(lock);
    Some(cache.join(tree.inner()))
}
