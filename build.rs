//! Embeds the version: `NIXERY_VERSION` from the environment when set (the
//! Nix package sets it), else the git commit of the source tree, else
//! nothing (the code then says `devel`).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=NIXERY_VERSION");
    println!("cargo:rerun-if-changed=.git/HEAD");
    if std::env::var("NIXERY_VERSION").is_ok() {
        return;
    }
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    if let Some(commit) = commit {
        println!("cargo:rustc-env=NIXERY_VERSION={commit}");
    }
}
