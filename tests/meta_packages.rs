//! Meta-packages never hide a package: no top-level attribute of the
//! package set is a meta-package name (`shell`, `arm64`, `nonroot`, or of
//! the `user-<uid>` grammar), checked against the offline package set and,
//! where `REAL_NIX_DIR` (or `../shared/real-nix`) has it, real nixpkgs
//! 24.11 (SKIPPED otherwise).

use std::path::Path;
use std::process::Command;

use nixery::image::is_meta_package;
use support::real_nix::{Tree, tree};
use support::{repo_root, run};

/// The top-level attribute names of the package set at `dir`, for
/// `x86_64-linux`.
fn attribute_names(dir: &Path) -> Vec<String> {
    let expression = format!(
        "builtins.attrNames (import {} {{ system = \"x86_64-linux\"; }})",
        dir.display()
    );
    let out = run(Command::new("nix-instantiate").args([
        "--eval",
        "--json",
        "--strict",
        "-E",
        &expression,
    ]));
    serde_json::from_str(&out).expect("a JSON list of attribute names")
}

fn meta_package_names(names: &[String]) -> Vec<&String> {
    names.iter().filter(|name| is_meta_package(name)).collect()
}

#[test]
fn no_meta_package_is_an_attribute_of_the_offline_package_set() {
    let names = attribute_names(&repo_root().join("prepare-image/offline-pkgs"));
    assert!(names.iter().any(|n| n == "hello"), "{names:?}");
    assert_eq!(meta_package_names(&names), Vec::<&String>::new());
}

#[test]
fn no_meta_package_is_an_attribute_of_nixpkgs_24_11() {
    let Some(nixpkgs) = tree(
        Tree::Nixpkgs2411,
        "no_meta_package_is_an_attribute_of_nixpkgs_24_11",
    ) else {
        return;
    };
    let names = attribute_names(&nixpkgs);
    assert!(names.len() > 10_000, "{} attributes", names.len());
    assert_eq!(meta_package_names(&names), Vec::<&String>::new());
}

#[test]
fn the_grammar_check_would_see_a_clash() {
    // The check above is only as good as `is_meta_package`.
    for name in ["shell", "arm64", "nonroot", "user-1", "user-65532"] {
        assert!(is_meta_package(name), "{name}");
    }
    for name in ["hello", "user-0", "user", "shellcheck", "nonroot-tools"] {
        assert!(!is_meta_package(name), "{name}");
    }
}
