//! Embeds the version: `NIXERY_VERSION` from the environment when set (the
//! Nix package sets it), else the git commit of the source tree, else
//! nothing (the code then says `devel`).

use std::process::Command;

/// Runs git with `args` in the source tree; its trimmed stdout on success.
fn git(args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=NIXERY_VERSION");
    if std::env::var("NIXERY_VERSION").is_ok() {
        return;
    }
    // The commit changes when HEAD moves to another branch or commit, or
    // the branch HEAD names gets a commit (its loose ref, or packed-refs
    // once git packs it). git resolves where those files are: in a linked
    // work tree `.git` is a file and the branch refs live in the main
    // repository. Only existing files are named: cargo reruns a script
    // that watches a missing one on every build.
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    for name in watched {
        let path = git(&["rev-parse", "--path-format=absolute", "--git-path", &name]);
        if let Some(path) = path.filter(|path| std::path::Path::new(path).exists()) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    if let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) {
        println!("cargo:rustc-env=NIXERY_VERSION={commit}");
    }
}
