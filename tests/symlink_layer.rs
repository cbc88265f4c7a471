//! The symlink layer nixery computes from the realised packages is the one
//! the Nix step used to build: the same bytes (so the same tar hash, the
//! layer's key, and every stored symlink layer stays reusable), and two
//! fresh servers give identical layers for identical store paths.

use std::path::Path;
use std::process::Command;

use nixery::image::Image;
use support::nix::{offline_runner, top_level};
use support::server::TestServer;
use support::{layer_digests, offline_pkgs_dir, run};

/// The layer the previous Nix recipe (tests/fixtures/nix-symlink-layer.nix)
/// builds for `packages` and `user`.
fn nix_built_layer(packages: &[String], user: Option<&nixery::image::User>) -> Vec<u8> {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nix-symlink-layer.nix");
    let user_json = match user {
        None => "null".to_string(),
        Some(user) => {
            serde_json::json!({"name": user.name, "uid": user.uid, "home": user.home()}).to_string()
        }
    };
    let out = run(Command::new("nix-build")
        .arg("--no-out-link")
        .arg(&fixture)
        .arg("--arg")
        .arg("pkgsDir")
        .arg(offline_pkgs_dir())
        .args(["--argstr", "packages"])
        .arg(serde_json::to_string(packages).unwrap())
        .args(["--argstr", "user"])
        .arg(user_json));
    std::fs::read(Path::new(out.trim()).join("layer.tar")).expect("reference layer.tar")
}

/// The first differing byte of two tars, with the member headers there.
fn assert_same_tar(ours: &[u8], reference: &[u8], image: &str) {
    if ours == reference {
        return;
    }
    let at = ours
        .iter()
        .zip(reference)
        .position(|(a, b)| a != b)
        .unwrap_or(ours.len().min(reference.len()));
    let block = at / 512 * 512;
    let show = |b: &[u8]| {
        String::from_utf8_lossy(&b[block.min(b.len())..(block + 512).min(b.len())])
            .replace('\0', ".")
    };
    panic!(
        "{image}: symlink layers differ at byte {at} (sizes {} and {})\nours:      {}\nreference: {}",
        ours.len(),
        reference.len(),
        show(ours),
        show(reference)
    );
}

#[tokio::test]
async fn symlink_layer_is_byte_identical_to_the_one_nix_built() {
    let step = offline_runner();
    // Forest conflicts (bash-interactive and busybox-based coreutils both
    // bring programs; git brings share/), /usr/bin/env, a non-root user, a
    // uid of many digits, and symlinks inside packages (bin/sh -> bash).
    for name in [
        "hello",
        "coreutils/hello",
        "git/curl/htop",
        "shell",
        "nonroot/shell",
        "user-1234567/coreutils/hello",
    ] {
        let image = Image::from_name(name, "latest");
        let result = step.build(&image).await.unwrap();
        let reference = nix_built_layer(&top_level(&result), image.user.as_ref());
        assert_same_tar(&result.symlink_layer.tar, &reference, name);
        assert_eq!(result.symlink_layer.size, reference.len() as u64);
        assert_eq!(
            result.symlink_layer.tar_hash.hex(),
            support::server::sha256_hex(&reference)
        );
    }
}

#[test]
fn two_fresh_servers_give_identical_layer_digests() {
    let name = "nonroot/coreutils/git/hello";
    let digests: Vec<Vec<String>> = (0..2)
        .map(|_| {
            let storage = tempfile::tempdir().unwrap();
            let server = TestServer::builder().storage_path(storage.path()).start();
            layer_digests(&server.manifest_json(name, "latest"))
        })
        .collect();
    assert!(digests[0].len() > 3, "{:?}", digests[0]);
    assert_eq!(digests[0], digests[1]);
}
