//! Every `.nix` file of the repository parses (`nix-instantiate --parse`
//! also rejects unbound variables), and the server's source filter keeps
//! the crate and drops build output and deployment files.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// All `.nix` files under `dir`, skipping build output and version control.
fn nix_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.expect("directory entry");
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let file_type = entry.file_type().expect("file type");
        if file_type.is_dir() {
            if !matches!(name.as_ref(), "target" | ".git") && !name.starts_with("result") {
                nix_files(&path, found);
            }
        } else if file_type.is_file() && name.ends_with(".nix") {
            found.push(path);
        }
    }
}

#[test]
fn every_nix_file_parses() {
    let mut files = Vec::new();
    nix_files(root(), &mut files);
    let relative: Vec<_> = files
        .iter()
        .map(|f| {
            f.strip_prefix(root())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    for expected in ["default.nix", "nix/module.nix", "nix/tests/stub-lib.nix"] {
        assert!(
            relative.iter().any(|f| f == expected),
            "{expected} not found"
        );
    }
    let mut failures = Vec::new();
    for file in &files {
        let output = Command::new("nix-instantiate")
            .arg("--parse")
            .arg(file)
            .output()
            .expect("nix-instantiate must be installed (Debian: nix-bin)");
        if !output.status.success() {
            failures.push(format!(
                "{}:\n{}",
                file.display(),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn source_filter_keeps_the_crate_and_drops_the_rest() {
    let samples = [
        ("Cargo.toml", true),
        ("Cargo.lock", true),
        ("src/", true),
        ("src/popcount/mod.rs", true),
        ("tests/popcount_counts.rs", true),
        ("prepare-image/prepare-image.nix", true),
        ("target/", false),
        ("target/debug/nixery", false),
        (".git/", false),
        ("docs/deployment.md", false),
        ("nix/module.nix", false),
        ("default.nix", false),
        ("result", false),
        ("result-image", false),
        ("src/main.rs~", false),
    ];
    let names: Vec<&str> = samples.iter().map(|(name, _)| *name).collect();
    let printed = support::run(
        Command::new("nix-instantiate")
            .args(["--eval", "--strict", "--json"])
            .arg(root().join("nix/tests/eval-source-filter.nix"))
            .arg("--arg")
            .arg("root")
            .arg(root())
            .args([
                "--argstr",
                "samples",
                &serde_json::to_string(&names).unwrap(),
            ]),
    );
    let result: Value = serde_json::from_str(&printed).expect("JSON");
    for (name, kept) in samples {
        assert_eq!(result["samples"][name], kept, "{name}");
    }
    let top = support::strings(&result["topLevel"]);
    for kept in ["Cargo.toml", "Cargo.lock", "src"] {
        assert!(top.contains(&kept), "{kept} missing from {top:?}");
    }
    for dropped in ["target", "nix", "default.nix"] {
        assert!(!top.contains(&dropped), "{dropped} kept in {top:?}");
    }
}
