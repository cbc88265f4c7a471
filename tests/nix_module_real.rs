//! The NixOS module against real nixpkgs code from `../shared/real-nix`:
//! inside a NixOS 24.11 system (`nix/tests/eval-nixos.nix`) and with the
//! June 2026 nixpkgs `lib` (`nix/tests/eval-module-real-lib.nix`). Only
//! evaluation. Without `../shared/real-nix` each test prints SKIPPED.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use support::real_nix::Tree;

/// `nix-instantiate --eval --strict --json` of a file of nix/tests with
/// `args`; the JSON it prints.
fn eval(file: &str, args: &[&str]) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let printed = support::run(
        Command::new("nix-instantiate")
            .args(["--eval", "--strict", "--json"])
            .arg(root.join("nix/tests").join(file))
            .args(args),
    );
    serde_json::from_str(&printed).expect("JSON")
}

#[test]
fn module_evaluates_inside_nixos_24_11() {
    let Some(nixpkgs) =
        support::real_nix::tree(Tree::Nixpkgs2411, "module_evaluates_inside_nixos_24_11")
    else {
        return;
    };
    let result = eval(
        "eval-nixos.nix",
        &["--arg", "nixpkgs", nixpkgs.to_str().expect("UTF-8 path")],
    );
    assert_eq!(result["failedAssertions"], json!([]));
    assert!(
        result["toplevel"]
            .as_str()
            .is_some_and(|p| p.ends_with(".drv")),
        "{}",
        result["toplevel"]
    );

    let env = &result["environment"];
    assert_eq!(env["NIXERY_ALLOW_UNFREE"], "true");
    assert_eq!(env["NIXERY_NIX_DEADLINE"], "900");
    assert_eq!(env["NIX_TIMEOUT"], "60");
    assert_eq!(env["NIXERY_PKGS_REPO"], "ssh://git@example.org/pkgs.git");
    assert_eq!(env["NIX_REMOTE"], "daemon");

    // The host's Nix, git and ssh (git over ssh) on the service's PATH.
    let path = support::strings(&result["path"]);
    let host_nix = result["hostNix"].as_str().expect("hostNix");
    assert_ne!(
        host_nix, result["pkgsNix"],
        "the test needs two Nix versions"
    );
    for wanted in [host_nix, "git-", "openssh-"] {
        assert!(
            path.iter().any(|p| p.starts_with(wanted)),
            "{wanted} not in {path:?}"
        );
    }
    assert_eq!(
        result["wrapperRunsHostNix"], true,
        "the default package's prepare-image wrapper runs a Nix other than the host's"
    );

    let unit = result["unit"].as_str().expect("unit text");
    for line in [
        "ExecStart=/nix/store/",
        "ProtectHome=true",
        "User=nixery",
        "Environment=\"NIXERY_ALLOW_UNFREE=true\"",
    ] {
        assert!(unit.contains(line), "{line} not in\n{unit}");
    }
}

#[test]
fn module_options_evaluate_with_the_2026_lib() {
    let Some(lib) =
        support::real_nix::tree(Tree::Lib2026, "module_options_evaluate_with_the_2026_lib")
    else {
        return;
    };
    let lib = lib.to_str().expect("UTF-8 path");
    let settings = json!({
        "enable": true,
        "allowUnfree": true,
        "nixDeadline": 600,
        "packageSource.kind": "channel",
        "packageSource.value": "nixos-24.11",
        "buildConcurrency": 2,
    });
    let result = eval(
        "eval-module-real-lib.nix",
        &[
            "--arg",
            "lib",
            lib,
            "--argstr",
            "settings",
            &settings.to_string(),
        ],
    );
    assert_eq!(result["failedAssertions"], json!([]));
    let types = result["types"].as_object().expect("types");
    assert!(types.len() >= 20, "{types:?}");
    for (name, description) in result["descriptions"].as_object().expect("descriptions") {
        assert!(
            description.as_str().is_some_and(|d| !d.is_empty()),
            "{name} has no description"
        );
    }
    for (name, expected) in [
        ("allowUnfree", "boolean"),
        ("nixDeadline", "positive integer"),
        ("nixTimeout", "positive integer"),
        ("port", "16 bit unsigned integer"),
        ("packageSource.value", "null or string"),
    ] {
        let got = types[name].as_str().unwrap_or("");
        assert!(got.starts_with(expected), "{name}: {got}");
    }
    let env = &result["environment"];
    assert_eq!(env["NIXERY_ALLOW_UNFREE"], "true");
    assert_eq!(env["NIXERY_NIX_DEADLINE"], "600");
    assert_eq!(env["NIXERY_CHANNEL"], "nixos-24.11");
    assert_eq!(env["NIXERY_BUILD_CONCURRENCY"], "2");
    assert_eq!(result["path"], json!(["nix", "git", "openssh"]));

    // A value of the wrong type is refused by the real module system.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json"])
        .arg(root.join("nix/tests/eval-module-real-lib.nix"))
        .args(["--arg", "lib", lib, "--argstr", "settings"])
        .arg(json!({"enable": true, "nixDeadline": 0}).to_string())
        .output()
        .expect("run nix-instantiate");
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("nixDeadline"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
