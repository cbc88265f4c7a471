//! Package names are data, never code: whatever they contain, they reach
//! Nix as JSON strings and come back as not found, or as not a derivation
//! when they name a set or a string of the package set (an evaluated name
//! would abort the evaluation and show up as a build failure instead).

use nixery::image::{Arch, Image};
use nixery::nix::RefusalReason;
use support::nix::*;

const HOSTILE: &[&str] = &[
    "\"",
    "hello\"; builtins.abort \"evaluated\"; \"",
    "${builtins.abort \"evaluated\"}",
    "''${builtins.abort \"evaluated\"}''",
    "builtins.abort",
    "abort",
    "hello;rm -rf /",
    "../../etc/passwd",
    "..",
    "hello world",
    "héllo-wörld",
    "日本語",
    "lib.toLower",
    "hello.name",
    "haskellPackages",
    "with",
    "\\",
    "",
    "__functor",
];

fn image_of(packages: &[&str]) -> Image {
    let mut packages: Vec<String> = packages.iter().map(|p| p.to_string()).collect();
    packages.sort();
    packages.dedup();
    Image {
        name: "hostile".into(),
        tag: "latest".into(),
        packages,
        arch: Arch::Amd64,
        user: None,
        first_package: None,
    }
}

#[tokio::test]
async fn hostile_names_are_not_found_and_never_evaluated() {
    let runner = offline_runner();
    let mut requested: Vec<&str> = HOSTILE.to_vec();
    requested.push("hello");
    let err = runner.build(&image_of(&requested)).await.unwrap_err();
    let mut missing = refused(&err);
    missing.sort();
    let mut expected: Vec<(String, RefusalReason)> = HOSTILE
        .iter()
        .map(|s| {
            let reason = if ["haskellPackages", "hello.name", "lib.toLower"].contains(s) {
                RefusalReason::NotADerivation
            } else {
                RefusalReason::NotFound
            };
            (s.to_string(), reason)
        })
        .collect();
    expected.sort();
    assert_eq!(missing, expected);
    assert_eq!(
        reported(err).0,
        nixery::build_errors::FailureKind::Packages,
        "a refusal is not a Nix failure"
    );
}

#[tokio::test]
async fn each_hostile_name_alone_is_not_found() {
    let runner = offline_runner();
    for name in [
        "${builtins.abort \"evaluated\"}",
        "héllo-wörld",
        "../../etc/passwd",
    ] {
        let err = runner.build(&image_of(&[name])).await.unwrap_err();
        assert_eq!(
            refused(&err),
            [(name.to_string(), RefusalReason::NotFound)],
            "{name}"
        );
    }
}
