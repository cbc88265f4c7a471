//! Every builder this project writes keeps a shell as its last process.
//!
//! Nix 2.8 takes a build as finished when the builder's log pipe hangs up
//! and then kills the build's process group at once. GNU tools close stdout
//! and stderr just before they exit, so a builder whose last process is one
//! of them (`bash -c 'cp a b'`: bash execs `cp`; dash does the same with
//! the last command of `sh -c`) is killed at random between the close and
//! the exit: `failed due to signal 9 (Killed)`, mostly under concurrency.
//! The project's convention is that every `-c` script ends with `true`.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use nixery::image::{Arch, Image};
use nixery::source::PackageSource;
use serde_json::Value;
use support::nix::*;

/// Whether a `-c` script cannot end by exec'ing another program: its last
/// command is the shell builtin `true`.
fn ends_with_shell_builtin(script: &str) -> bool {
    let last_line = script
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("");
    let last_command = last_line
        .rsplit([';', '&', '|'])
        .next()
        .unwrap_or("")
        .trim();
    last_command == "true"
}

#[test]
fn the_builtin_check_tells_a_safe_script_from_an_unsafe_one() {
    assert!(!ends_with_shell_builtin("cp a b"));
    assert!(!ends_with_shell_builtin("mkdir -p $out\ncp a $out\n"));
    assert!(!ends_with_shell_builtin("true; cp a b"));
    assert!(ends_with_shell_builtin("cp a b; true"));
    assert!(ends_with_shell_builtin("cp a b\ntrue\n"));
}

#[test]
fn every_shell_builder_of_the_project_ends_with_a_builtin() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("prepare-image");
    let offline = root.join("offline-pkgs");
    let offline = offline.to_str().expect("UTF-8 path");
    let prepare = root.join("prepare-image.nix");
    let prepare = prepare.to_str().expect("UTF-8 path");
    // An image with every package of the offline set that evaluates, and
    // the fixtures that fail or sleep.
    let packages = r#"["bash","bigpkg","cacert","coreutils","curl","git","glibc","gmp","haskellPackages.hello","haskellPackages.stylish-haskell","hello","htop","iana-etc","moreutils","nano","ncurses","openssl","python3Packages.requests","zlib","_1password"]"#;
    let mut drvs = instantiate(&[
        prepare,
        "--argstr",
        "packages",
        packages,
        "--argstr",
        "srcType",
        "path",
        "--argstr",
        "srcArgs",
        offline,
        "--argstr",
        "allowUnfree",
        "true",
    ]);
    for fixture in ["failing", "xss-failing", "sleepy", "sleepy-long"] {
        drvs.extend(instantiate(&[offline, "-A", fixture]));
    }
    let wrapper = root.join("default.nix");
    drvs.extend(instantiate(&[
        wrapper.to_str().expect("UTF-8 path"),
        "--arg",
        "pkgs",
        &format!("import {offline} {{}}"),
        "--argstr",
        "nixBuild",
        "nix-build",
        "--argstr",
        "nix",
        "nix",
    ]));

    // The previous Nix recipe of the symlink layer, kept as a test's
    // reference.
    let reference =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nix-symlink-layer.nix");
    drvs.extend(instantiate(&[
        reference.to_str().expect("UTF-8 path"),
        "--arg",
        "pkgsDir",
        offline,
        "--argstr",
        "packages",
        "[]",
        "--argstr",
        "user",
        r#"{"name":"user","uid":1000,"home":"/home/user"}"#,
    ]));

    let all = derivations(&drvs);
    assert!(all.len() > 25, "only {} derivations", all.len());
    let mut shell_builders = 0;
    let mut unsafe_builders = Vec::new();
    for (path, drv) in &all {
        let builder = drv["builder"].as_str().unwrap_or("");
        let args: Vec<&str> = drv["args"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let is_shell = builder.ends_with("/sh") || builder.ends_with("/bash");
        let Some(c) = args.iter().position(|a| *a == "-c") else {
            continue;
        };
        assert!(is_shell, "{path}: -c given to {builder}");
        shell_builders += 1;
        let script = args.get(c + 1).copied().unwrap_or("");
        if !ends_with_shell_builtin(script) {
            unsafe_builders.push(format!("{path}: {script}"));
        }
    }
    assert!(shell_builders > 25, "only {shell_builders} shell builders");
    assert!(
        unsafe_builders.is_empty(),
        "builders ending with another program: {unsafe_builders:#?}"
    );
}

#[tokio::test]
async fn concurrent_cold_builds_all_succeed() {
    // 16 images never built before (five builds each), four Nix steps at a
    // time. With real nixpkgs' GNU `cp` as the graph builder's last
    // process, about half of such images failed; the offline set's `cp` is
    // busybox's, which does not close stdio early, so the check above is
    // what catches that regression and this one guards the rest of the
    // concurrent cold path.
    const IMAGES: usize = 16;
    let pkgs = salted_pkgs(IMAGES);
    let runner = runner(
        PackageSource::Path(pkgs.path().to_path_buf()),
        Duration::from_secs(300),
    );
    let results: Vec<_> = futures::stream::iter(0..IMAGES)
        .map(|i| {
            let image = Image {
                name: format!("hello/salt{i}"),
                tag: "latest".into(),
                packages: vec!["hello".into(), format!("salt{i}")],
                arch: Arch::Amd64,
                user: None,
                first_package: None,
            };
            let runner = &runner;
            async move { (i, runner.build(&image).await) }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(i, r)| r.as_ref().err().map(|e| format!("salt{i}: {e:?}")))
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    for (_, result) in &results {
        let result = result.as_ref().expect("checked above");
        assert_eq!(result.runtime_graph.export_references_graph.graph.len(), 2);
    }
}
