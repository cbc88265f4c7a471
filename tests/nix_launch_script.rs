//! The container's launch script (`nix/launch.sh`) creates the Nix build
//! users and `sandbox = false`, is idempotent across restarts, keeps an
//! operator's nix.conf settings, and execs Nixery with
//! NIXERY_PREPARE_IMAGE set.

use std::path::Path;
use std::process::{Command, Output};

fn launch(root: &Path, env: &[(&str, &str)]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("nix/launch.sh");
    let mut command = Command::new("bash");
    command
        .arg(script)
        .arg("serve")
        .env_remove("NIXERY_PREPARE_IMAGE")
        .env_remove("NIXERY_BIN")
        .env("NIXERY_LAUNCH_ROOT", root);
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("bash must be installed")
}

fn read(root: &Path, file: &str) -> String {
    std::fs::read_to_string(root.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

const ENV: &[(&str, &str)] = &[
    ("NIXERY_BIN", "/bin/true"),
    ("NIXERY_PREPARE_IMAGE", "/opt/prepare-image"),
    ("NIXERY_BUILD_USERS", "3"),
];

#[test]
fn prepares_build_users_and_nix_conf() {
    let root = tempfile::tempdir().unwrap();
    let output = launch(root.path(), ENV);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let passwd = read(root.path(), "etc/passwd");
    for (i, uid) in [(1, 30001), (2, 30002), (3, 30003)] {
        assert!(
            passwd.contains(&format!("nixbld{i}:x:{uid}:30000:")),
            "{passwd}"
        );
    }
    assert!(!passwd.contains("nixbld4"));
    assert!(passwd.starts_with("root:x:0:0:"));
    let group = read(root.path(), "etc/group");
    assert!(
        group.contains("nixbld:x:30000:nixbld1,nixbld2,nixbld3\n"),
        "{group}"
    );
    let conf = read(root.path(), "etc/nix/nix.conf");
    assert_eq!(conf, "sandbox = false\nbuild-users-group = nixbld\n");
    let tmp = std::fs::metadata(root.path().join("tmp")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777);
}

#[test]
fn nixery_is_started_with_prepare_image_set() {
    let root = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("nix/launch.sh");
    let output = Command::new("bash")
        .arg(script)
        .arg("NIXERY_PREPARE_IMAGE")
        .env("NIXERY_LAUNCH_ROOT", root.path())
        .env("NIXERY_BIN", "/usr/bin/printenv")
        .env("NIXERY_PREPARE_IMAGE", "/opt/prepare-image")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "/opt/prepare-image\n"
    );
}

#[test]
fn restarting_does_not_duplicate_entries() {
    let root = tempfile::tempdir().unwrap();
    let files = ["etc/passwd", "etc/group", "etc/nix/nix.conf"];
    launch(root.path(), ENV);
    let first: Vec<String> = files.iter().map(|f| read(root.path(), f)).collect();
    launch(root.path(), ENV);
    let second: Vec<String> = files.iter().map(|f| read(root.path(), f)).collect();
    assert_eq!(first, second);
}

#[test]
fn existing_nix_conf_settings_are_kept() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc/nix")).unwrap();
    std::fs::write(root.path().join("etc/nix/nix.conf"), "sandbox = relaxed\n").unwrap();
    launch(root.path(), ENV);
    assert_eq!(
        read(root.path(), "etc/nix/nix.conf"),
        "sandbox = relaxed\nbuild-users-group = nixbld\n"
    );
}

#[test]
fn missing_prepare_image_stops_the_launch() {
    let root = tempfile::tempdir().unwrap();
    let output = launch(root.path(), &[("NIXERY_BIN", "/usr/bin/printenv")]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("NIXERY_PREPARE_IMAGE must name"));
    assert!(
        !root.path().join("etc/passwd").exists(),
        "prepared before checking"
    );
}

#[test]
fn bad_build_user_count_is_rejected() {
    let root = tempfile::tempdir().unwrap();
    let mut env = ENV.to_vec();
    env[2] = ("NIXERY_BUILD_USERS", "many");
    let output = launch(root.path(), &env);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("positive number"));
}
