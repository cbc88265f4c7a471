//! prepare-image against real nixpkgs (24.11 and 20.09 from
//! `../shared/real-nix`), by evaluation only: nothing of real nixpkgs can be
//! built here (no binary cache, no network).
//!
//! - Refused packages go through the real `NixRunner` (nix-build): the
//!   refusal is decided during evaluation, so the run ends before any build.
//! - Found packages are instantiated with `nix-instantiate` (which writes
//!   .drv files but builds nothing) and the image's build closure is
//!   checked for the package's derivation and for the absence of any
//!   derivation of nixery's own (the server makes the graph and the
//!   symlink layer).
//! - The server, with each tree as `NIXERY_PKGS_PATH`, answers each refusal
//!   with its registry error quickly.
//!
//! Without `../shared/real-nix` every test prints SKIPPED and returns.

use std::path::Path;
use std::time::{Duration, Instant};

use nixery::image::Image;
use nixery::nix::RefusalReason;
use nixery::source::PackageSource;
use serde_json::Value;
use support::nix::*;
use support::real_nix::Tree;

use RefusalReason::*;

/// One expected refusal: the image name, and the one package refused.
struct Refused {
    image: &'static str,
    package: &'static str,
    reason: RefusalReason,
    /// Text the client's message must contain besides the package name.
    says: &'static str,
}

/// The table (and the other reasons) for each tree: the image,
/// why its last package is refused, and what the message says.
fn refusal_cases(tree: Tree) -> Vec<Refused> {
    let common = [
        ("doesnotexist", NotFound, "not in the package set"),
        ("hello/doesnotexist", NotFound, "not in the package set"),
        ("python3Packages", NotADerivation, "not a package"),
        ("lib", NotADerivation, "not a package"),
        ("1password", Unfree, "NIXERY_ALLOW_UNFREE"),
        ("contacts", Unsupported, "not available on x86_64-linux"),
    ];
    let specific: &[(&str, RefusalReason, &str)] = match tree {
        Tree::Nixpkgs2009 => &[
            ("rssh", Insecure, "insecure"),
            ("alienfx", Throws, "alienfx has been removed."),
        ],
        _ => &[
            ("litestream", Insecure, "insecure"),
            ("grub4dos", Broken, "broken"),
            (
                "acorn",
                Throws,
                "acorn has been removed as the upstream project was archived",
            ),
        ],
    };
    common
        .iter()
        .chain(specific)
        .map(|&(image, reason, says)| Refused {
            image,
            package: image.rsplit('/').next().unwrap_or(image),
            reason,
            says,
        })
        .collect()
}

async fn refusals_are_decided_by_evaluation(tree: Tree, test: &str) {
    let Some(dir) = support::real_nix::tree(tree, test) else {
        return;
    };
    let runner = runner(PackageSource::Path(dir), Duration::from_secs(120));
    for case in refusal_cases(tree) {
        let started = Instant::now();
        let err = runner.build_named(case.image).await.expect_err(case.image);
        let elapsed = started.elapsed();
        assert_eq!(
            refused(&err),
            [(case.package.to_string(), case.reason)],
            "{}: {err}",
            case.image
        );
        let message = err.to_string();
        assert!(
            message.contains(&format!("'{}'", case.package)) && message.contains(case.says),
            "{}: {message}",
            case.image
        );
        assert!(
            elapsed < Duration::from_secs(10),
            "{} took {elapsed:?}",
            case.image
        );
        assert_eq!(
            reported(err).0,
            nixery::build_errors::FailureKind::Packages,
            "{}: refusals are not build errors",
            case.image
        );
    }
}

#[tokio::test]
async fn refusals_of_nixpkgs_24_11_are_decided_by_evaluation() {
    refusals_are_decided_by_evaluation(
        Tree::Nixpkgs2411,
        "refusals_of_nixpkgs_24_11_are_decided_by_evaluation",
    )
    .await;
}

#[tokio::test]
async fn refusals_of_nixpkgs_20_09_are_decided_by_evaluation() {
    refusals_are_decided_by_evaluation(
        Tree::Nixpkgs2009,
        "refusals_of_nixpkgs_20_09_are_decided_by_evaluation",
    )
    .await;
}

/// Instantiate prepare-image.nix for `packages` on `system`: the derivations
/// of its build closure (path -> derivation JSON).
fn instantiate_image(
    tree: &Path,
    packages: &[String],
    system: &str,
    allow_unfree: bool,
) -> std::collections::BTreeMap<String, Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("prepare-image");
    let packages = serde_json::to_string(packages).expect("JSON");
    let prepare = root.join("prepare-image.nix");
    let tree = tree.to_str().expect("UTF-8 path");
    let allow_unfree = allow_unfree.to_string();
    let drvs = instantiate(&[
        prepare.to_str().expect("UTF-8 path"),
        "--argstr",
        "packages",
        &packages,
        "--argstr",
        "srcType",
        "path",
        "--argstr",
        "srcArgs",
        tree,
        "--argstr",
        "system",
        system,
        "--argstr",
        "allowUnfree",
        &allow_unfree,
    ]);
    derivations(&drvs)
}

/// The derivation in `closure` whose name starts with `prefix`.
fn find_drv<'a>(closure: &'a std::collections::BTreeMap<String, Value>, prefix: &str) -> &'a Value {
    closure
        .iter()
        .find(|(path, _)| package_name(path).starts_with(prefix))
        .map(|(_, drv)| drv)
        .unwrap_or_else(|| panic!("no {prefix}* among {} derivations", closure.len()))
}

/// Nix builds the packages and nothing of nixery's own: the graph and the
/// symlink layer are the server's work.
fn assert_builds_only_packages(closure: &std::collections::BTreeMap<String, Value>) {
    let own: Vec<&String> = closure
        .keys()
        .filter(|path| package_name(path).starts_with("nixery-"))
        .collect();
    assert!(own.is_empty(), "nixery derivations in the build: {own:?}");
}

fn found_packages_evaluate(tree: Tree, test: &str) {
    let Some(dir) = support::real_nix::tree(tree, test) else {
        return;
    };
    let python = match tree {
        Tree::Nixpkgs2009 => "python3.8-requests-",
        _ => "python3.12-requests-",
    };
    let cases: &[(&str, &[&str])] = &[
        ("hello", &["hello-2."]),
        (
            "shell/git",
            &[
                "bash-interactive-",
                "coreutils-",
                "moreutils-",
                "nano-",
                "git-",
            ],
        ),
        ("python3Packages.requests", &[python]),
        ("python3packages.requests", &[python]),
    ];
    for (name, expected) in cases {
        let image = Image::from_name(name, "latest");
        let closure = instantiate_image(&dir, &image.packages, "x86_64-linux", false);
        for prefix in *expected {
            find_drv(&closure, prefix);
        }
        assert_builds_only_packages(&closure);
    }

    let image = Image::from_name("arm64/hello", "latest");
    let closure = instantiate_image(&dir, &image.packages, image.arch.nix_system(), false);
    assert_eq!(find_drv(&closure, "hello-2.")["system"], "aarch64-linux");
    assert_builds_only_packages(&closure);

    // NIXERY_ALLOW_UNFREE reaches nixpkgs' config.allowUnfree.
    let closure = instantiate_image(&dir, &["1password".to_string()], "x86_64-linux", true);
    find_drv(&closure, "1password");
}

#[test]
fn found_packages_of_nixpkgs_24_11_evaluate() {
    found_packages_evaluate(
        Tree::Nixpkgs2411,
        "found_packages_of_nixpkgs_24_11_evaluate",
    );
}

#[test]
fn found_packages_of_nixpkgs_20_09_evaluate() {
    found_packages_evaluate(
        Tree::Nixpkgs2009,
        "found_packages_of_nixpkgs_20_09_evaluate",
    );
}

/// The server with `tree` as its package set answers each refusal with
/// its registry error, quickly and without building anything.
fn server_answers_refusals(tree: Tree, test: &str) {
    let Some(dir) = support::real_nix::tree(tree, test) else {
        return;
    };
    let server = support::server::TestServer::builder()
        .env("NIXERY_PKGS_PATH", dir.to_str().expect("UTF-8 path"))
        .start();
    for case in refusal_cases(tree) {
        let started = Instant::now();
        let response = server
            .get(&format!("/v2/{}/manifests/latest", case.image))
            .timeout(Duration::from_secs(60))
            .send();
        let elapsed = started.elapsed();
        let (status, body) = (response.status, response.json());
        let code = body["errors"][0]["code"].as_str().unwrap_or("");
        let message = body["errors"][0]["message"].as_str().unwrap_or("");
        let expected = if case.reason.is_absent() {
            (404, "MANIFEST_UNKNOWN")
        } else {
            (403, "DENIED")
        };
        assert_eq!((status, code), expected, "{}: {message}", case.image);
        assert!(
            message.contains(&format!("'{}'", case.package)) && message.contains(case.says),
            "{}: {message}",
            case.image
        );
        if case.image.contains("hello/") {
            assert!(!message.contains("hello"), "{message}");
        }
        assert!(
            elapsed < Duration::from_secs(20),
            "{} took {elapsed:?}",
            case.image
        );
    }
    let built = server.log_lines_with(&["will be built", "building '"]);
    assert!(built.is_empty(), "something was built: {built:#?}");
}

#[test]
fn server_answers_refusals_of_nixpkgs_24_11() {
    server_answers_refusals(
        Tree::Nixpkgs2411,
        "server_answers_refusals_of_nixpkgs_24_11",
    );
}

#[test]
fn server_answers_refusals_of_nixpkgs_20_09() {
    server_answers_refusals(
        Tree::Nixpkgs2009,
        "server_answers_refusals_of_nixpkgs_20_09",
    );
}
