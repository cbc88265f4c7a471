//! The Nix step against the offline package set, with the real nix-build:
//! runtime graphs, the symlink layer and the package lookup rules.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use nixery::build_errors::FailureKind;
use nixery::image::Image;
use nixery::nix::{NixError, NixRunner, NixSettings, RefusalReason};
use nixery::source::PackageSource;
use sha2::{Digest, Sha256};
use support::nix::*;

#[tokio::test]
async fn hello_runtime_graph_references_the_libc() {
    let result = offline_build("hello").await.unwrap();

    let top = top_level(&result);
    let names: Vec<&str> = top.iter().map(|p| package_name(p)).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    let hello = find_path(&top, "hello-");
    find_path(&top, "nss-cacert-");
    find_path(&top, "iana-etc-");

    let entry = graph_entry(&result, hello);
    let references: Vec<&str> = entry.references.iter().map(String::as_str).collect();
    let glibc = references
        .iter()
        .find(|r| package_name(r).starts_with("glibc-"))
        .unwrap_or_else(|| panic!("hello does not reference glibc: {references:?}"));
    let glibc_entry = graph_entry(&result, glibc);
    assert!(entry.closure_size > glibc_entry.closure_size);
    assert_eq!(run_hello(&result), "Hello, world!");
}

#[tokio::test]
async fn symlink_layer_holds_the_forest_tmp_and_env() {
    let result = offline_build("git/hello").await.unwrap();
    let layer = &result.symlink_layer;

    let bytes = layer.tar.to_vec();
    assert_eq!(bytes.len() as u64, layer.size);
    assert_eq!(hex::encode(Sha256::digest(&bytes)), layer.tar_hash.hex());

    let top = top_level(&result);
    let mut archive = tar::Archive::new(bytes.as_slice());
    let mut members = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let header = entry.header();
        assert_eq!(header.uid().unwrap(), 0);
        assert_eq!(header.gid().unwrap(), 0);
        assert_eq!(header.mtime().unwrap(), 1);
        let target = entry
            .link_name()
            .unwrap()
            .map(|t| t.to_string_lossy().into_owned());
        let mode = header.mode().unwrap();
        let mut rest = Vec::new();
        entry.read_to_end(&mut rest).unwrap();
        members.push((path, target, mode));
    }
    let names: Vec<&str> = members.iter().map(|(p, _, _)| p.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "members are sorted");
    assert!(
        names
            .iter()
            .all(|n| !n.starts_with("./") && !n.starts_with('/')),
        "{names:?}"
    );

    let target_of = |name: &str| {
        members
            .iter()
            .find(|(p, _, _)| p.trim_end_matches('/') == name)
            .unwrap_or_else(|| panic!("{name} not in {names:?}"))
            .1
            .clone()
    };
    assert_eq!(
        target_of("bin/hello").unwrap(),
        format!("{}/bin/hello", find_path(&top, "hello-"))
    );
    assert_eq!(
        target_of("bin/git").unwrap(),
        format!("{}/bin/git", find_path(&top, "git-"))
    );
    assert!(
        target_of("etc/ssl/certs/ca-bundle.crt")
            .unwrap()
            .ends_with("/etc/ssl/certs/ca-bundle.crt")
    );
    assert!(
        !names.iter().any(|n| n.starts_with("usr")),
        "no package of git/hello provides bin/env, so there is no /usr/bin/env: {names:?}"
    );
    let tmp = members
        .iter()
        .find(|(p, _, _)| p.trim_end_matches('/') == "tmp")
        .unwrap();
    assert_eq!(tmp.1, None);
    assert_eq!(tmp.2 & 0o7777, 0o1777);
}

/// The target of `usr/bin/env` in the symlink layer of `result`, if any.
fn env_link(result: &nixery::nix::PrepareResult) -> Option<String> {
    let bytes = result.symlink_layer.tar.to_vec();
    let mut archive = tar::Archive::new(bytes.as_slice());
    archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path().unwrap() == Path::new("usr/bin/env"))
        .map(|e| {
            e.link_name()
                .unwrap()
                .expect("usr/bin/env is a symlink")
                .to_string_lossy()
                .into_owned()
        })
}

#[tokio::test]
async fn env_is_the_one_of_the_image_coreutils_and_absent_without_one() {
    let runner = offline_runner();
    let result = runner.build_named("coreutils/hello").await.unwrap();
    let env_target = env_link(&result).expect("usr/bin/env with coreutils in the image");
    let coreutils = find_path(&top_level(&result), "coreutils-").to_string();
    // The forest's bin/env, as symlinkJoin makes it: a symlink to the
    // package's bin/env, or to its target when that is a symlink itself
    // (the offline coreutils' programs are symlinks to busybox).
    let package_env = format!("{coreutils}/bin/env");
    let expected = match std::fs::read_link(&package_env) {
        Ok(target) => target.to_string_lossy().into_owned(),
        Err(_) => package_env.clone(),
    };
    assert_eq!(env_target, expected);
    assert_eq!(
        std::fs::canonicalize(&env_target).unwrap(),
        std::fs::canonicalize(&package_env).unwrap()
    );
    let status = std::process::Command::new(&env_target)
        .arg("true")
        .status()
        .unwrap();
    assert!(status.success());

    let result = runner.build_named("hello").await.unwrap();
    assert_eq!(env_link(&result), None);
}

#[tokio::test]
async fn shell_resolves_to_its_four_packages() {
    let runner = offline_runner();
    let image = Image::from_name("shell", "latest");
    let result = runner.build(&image).await.unwrap();
    let mut names: Vec<String> = top_level(&result)
        .iter()
        .map(|p| package_name(p).split('-').next().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["bash", "coreutils", "iana", "moreutils", "nano", "nss"]
    );
    let bash = find_path(&top_level(&result), "bash-interactive-").to_string();
    let output = std::process::Command::new(format!("{bash}/bin/bash"))
        .args(["-c", "echo from-bash"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "from-bash");
    assert_eq!(
        image.cmd(result.main_program.as_deref()),
        Some(vec!["bash".to_string()])
    );
}

#[tokio::test]
async fn lowercase_name_finds_the_camel_case_attribute() {
    let result = offline_build("haskellpackages.stylish-haskell")
        .await
        .unwrap();
    find_path(&top_level(&result), "stylish-haskell-");
}

#[tokio::test]
async fn name_starting_with_a_digit_finds_the_underscore_attribute() {
    // `_1password` is unfree, like nixpkgs' own.
    let runner = runner_with(NixSettings {
        source: PackageSource::Builtin,
        timeout: Duration::from_secs(300),
        deadline: Duration::from_secs(300),
        allow_unfree: true,
        prepare_image: None,
    });
    let result = runner.build_named("1password").await.unwrap();
    find_path(&top_level(&result), "1password-cli-");
}

#[tokio::test]
async fn shared_dependencies_appear_once_in_the_graph() {
    let result = offline_build("git/curl/htop").await.unwrap();
    let paths: Vec<&str> = result
        .runtime_graph
        .graph
        .iter()
        .map(|e| e.path.as_str())
        .collect();
    let count = |prefix: &str| {
        paths
            .iter()
            .filter(|p| package_name(p).starts_with(prefix))
            .count()
    };
    assert_eq!(count("glibc-"), 1);
    assert_eq!(count("zlib-"), 1);
    assert_eq!(count("openssl-"), 1);
    let top = top_level(&result);
    let git = graph_entry(&result, find_path(&top, "git-"));
    let curl = find_path(&top, "curl-");
    assert!(git.references.iter().any(|r| r == curl));
}

#[tokio::test]
async fn big_package_closure_exceeds_100_mb() {
    let result = offline_build("bigpkg").await.unwrap();
    let big = find_path(&top_level(&result), "bigpkg-").to_string();
    assert!(graph_entry(&result, &big).closure_size > 100_000_000);
}

#[tokio::test]
async fn missing_package_is_reported_by_name() {
    let err = offline_build("hello/doesnotexist/also-missing")
        .await
        .unwrap_err();
    assert_eq!(
        refused(&err),
        [
            ("also-missing".to_string(), RefusalReason::NotFound),
            ("doesnotexist".to_string(), RefusalReason::NotFound)
        ]
    );
    assert_eq!(
        reported(err).0,
        FailureKind::Packages,
        "not-found is not a build error"
    );
}

#[tokio::test]
async fn every_prepare_starts_one_nix_build() {
    let runner = offline_runner();
    assert_eq!(runner.runner().builds_started(), 0);
    runner.build_named("hello").await.unwrap();
    runner.build_named("nope").await.unwrap_err();
    assert_eq!(runner.runner().builds_started(), 2);
}

#[tokio::test]
async fn arm64_images_are_evaluated_for_aarch64() {
    let runner = offline_runner();
    let err = runner.build_named("arm64/nope").await.unwrap_err();
    assert_eq!(
        refused(&err),
        [("nope".to_string(), RefusalReason::NotFound)]
    );

    // The offline set's binaries are x86-64: the aarch64 build is refused.
    let err = runner.build_named("arm64/hello").await.unwrap_err();
    match &err {
        NixError::BuildFailed { image, stderr_tail } => {
            assert!(stderr_tail.contains("aarch64-linux"), "{stderr_tail}");
            assert_eq!(image, "arm64/hello:latest");
        }
        other => panic!("expected BuildFailed, got {other:?}"),
    }
    assert_eq!(reported(err).0, FailureKind::Nix);
}

#[tokio::test]
async fn package_path_source_is_used() {
    let runner = runner(
        PackageSource::Path(support::offline_pkgs_dir()),
        Duration::from_secs(300),
    );
    let result = runner.build_named("hello").await.unwrap();
    assert_eq!(run_hello(&result), "Hello, world!");
}

#[tokio::test]
async fn missing_package_path_is_a_setup_error() {
    let err = NixRunner::new(NixSettings {
        source: PackageSource::Path("/nonexistent/nixery-pkgs".into()),
        timeout: Duration::from_secs(10),
        deadline: Duration::from_secs(10),
        allow_unfree: false,
        prepare_image: None,
    })
    .unwrap_err();
    assert!(matches!(err, NixError::Setup(_)), "{err:?}");
}

#[tokio::test]
async fn wrapper_program_runs_the_nix_step() {
    // Build the nixery-prepare-image wrapper from prepare-image/default.nix
    // with the offline set standing in for nixpkgs.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("prepare-image");
    let built = support::run(
        std::process::Command::new("nix-build")
            .arg("--no-out-link")
            .arg(root.join("default.nix"))
            .args(["--arg", "pkgs"])
            .arg(format!(
                "import {} {{}}",
                root.join("offline-pkgs").display()
            ))
            .args(["--argstr", "nixBuild", "nix-build"])
            .args(["--argstr", "nix", "nix"]),
    );
    let wrapper = built.trim().to_string();
    let program = Path::new(&wrapper).join("bin/nixery-prepare-image");

    let runner = runner_with(NixSettings {
        source: PackageSource::Builtin,
        timeout: Duration::from_secs(300),
        deadline: Duration::from_secs(300),
        allow_unfree: false,
        prepare_image: Some(program),
    });
    let result = runner.build_named("hello").await.unwrap();
    assert_eq!(run_hello(&result), "Hello, world!");
    let err = runner.build_named("nope").await.unwrap_err();
    assert_eq!(
        refused(&err),
        [("nope".to_string(), RefusalReason::NotFound)]
    );
}

#[test]
fn wrapper_expression_parses() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("prepare-image/default.nix");
    let status = std::process::Command::new("nix-instantiate")
        .arg("--parse")
        .arg(file)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run nix-instantiate");
    assert!(status.success());
}

#[tokio::test]
async fn runtime_graph_matches_what_export_references_graph_gives() {
    // The closure as Nix's exportReferencesGraph writes it (how the Nix
    // step read it before), for the same top-level paths.
    let result = offline_build("git/curl/htop/coreutils").await.unwrap();
    let tops = top_level(&result);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let expression = format!(
        "import {} {{ pkgs = import {} {{ }}; name = \"export-references-graph.json\"; contents = map builtins.storePath (builtins.fromJSON ''{}''); }}",
        root.join("scripts/runtime-graph.nix").display(),
        root.join("prepare-image/offline-pkgs").display(),
        serde_json::to_string(&tops).unwrap()
    );
    let built = support::run(
        std::process::Command::new("nix-build")
            .args(["--no-out-link", "--expr"])
            .arg(expression),
    );
    let exported: nixery::layers::RuntimeGraph =
        serde_json::from_slice(&std::fs::read(built.trim()).unwrap()).unwrap();

    let mut theirs = exported.graph.clone();
    theirs.sort_by(|a, b| a.path.cmp(&b.path));
    let ours = &result.runtime_graph.graph;
    assert!(ours.len() > tops.len(), "the closure holds dependencies");
    assert_eq!(
        ours.iter().map(|e| &e.path).collect::<Vec<_>>(),
        theirs.iter().map(|e| &e.path).collect::<Vec<_>>()
    );
    for (a, b) in ours.iter().zip(&theirs) {
        let sorted = |refs: &[String]| {
            let mut refs = refs.to_vec();
            refs.sort();
            refs
        };
        assert_eq!(sorted(&a.references), sorted(&b.references), "{}", a.path);
        assert_eq!(a.closure_size, b.closure_size, "{}", a.path);
        assert_eq!(a.nar_size, b.nar_size, "{}", a.path);
        // Nix writes the same hash in two encodings.
        let hex = |h: &Option<String>| {
            h.as_deref()
                .and_then(nixery::sbom::nar_hash::sha256_hex)
                .unwrap_or_else(|| panic!("no readable narHash for {}", a.path))
        };
        assert_eq!(hex(&a.nar_hash), hex(&b.nar_hash), "{}", a.path);
    }
    let mut exported_tops = exported.export_references_graph.graph.clone();
    exported_tops.sort();
    assert_eq!(
        result.runtime_graph.export_references_graph.graph,
        exported_tops
    );
}
