//! A missing or contradictory setting stops the real binary before it
//! listens, with exit code 2 and one line on stderr naming the variable;
//! the other subcommands still parse whatever the environment holds.

use support::server::TestServer;

/// [`assert_config_error`] of one variable set to `value`, which must be
/// named.
fn assert_rejects(var: &str, value: &str) {
    assert_config_error(&[(var, value)], &[var]);
}

fn assert_config_error(env: &[(&str, &str)], names: &[&str]) {
    let out = TestServer::builder()
        .envs(env.iter().copied())
        .run_to_exit();
    assert_eq!(out.status.code(), Some(2), "{env:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{env:?}: expected one line, got {stderr:?}");
    for name in names {
        assert!(
            lines[0].contains(name),
            "{env:?}: {:?} lacks {name}",
            lines[0]
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("listening"), "{stdout}");
}

#[test]
fn contradictory_settings_stop_start_up_naming_the_variable() {
    assert_config_error(
        &[
            ("NIXERY_CHANNEL", "nixos-unstable"),
            ("NIXERY_PKGS_REPO", "https://x/y.git"),
        ],
        &["NIXERY_CHANNEL", "NIXERY_PKGS_REPO"],
    );
    assert_config_error(&[("NIXERY_STORAGE_BACKEND", "gcs")], &["GCS_BUCKET"]);
    assert_rejects("NIX_TIMEOUT", "ten");
    assert_rejects("NIXERY_PACK_CONCURRENCY", "0");
    assert_rejects("NIXERY_BUILD_CONCURRENCY", "-1");
    assert_rejects("PORT", "http");
    assert_rejects("NIXERY_STORAGE_BACKEND", "s3");
    assert_config_error(
        &[("NIXERY_LAYERING", "fastest")],
        &["NIXERY_LAYERING", "fastest", "size-rank"],
    );
}

#[test]
fn flags_are_validated_like_the_environment() {
    let out = TestServer::builder()
        .arg("serve")
        .arg("--nix-timeout")
        .arg("soon")
        .run_to_exit();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NIX_TIMEOUT"));
}

#[test]
fn other_subcommands_parse_despite_bad_serve_settings() {
    let out = TestServer::builder()
        .env("NIX_TIMEOUT", "ten")
        .env("NIXERY_CHANNEL", "a")
        .env("NIXERY_PKGS_PATH", "/b")
        .arg("layers")
        .arg("--help")
        .run_to_exit();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("layers"));
}

#[test]
fn unusable_storage_path_is_reported_as_an_error_event() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"").unwrap();
    let out = TestServer::builder().storage_path(&file).run_to_exit();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let event = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["level"] == "ERROR")
        .unwrap_or_else(|| panic!("no error event in {stdout}"));
    assert!(
        event["error"].as_str().unwrap().contains("not-a-directory"),
        "{event}"
    );
}

#[test]
fn help_keeps_the_command_description() {
    let out = TestServer::builder().arg("--help").run_to_exit();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("A container registry that builds images on demand with Nix"),
        "{stdout}"
    );
    for var in [
        "PORT",
        "NIXERY_CHANNEL",
        "STORAGE_PATH",
        "NIX_TIMEOUT",
        "NIXERY_PACK_CONCURRENCY",
    ] {
        assert!(
            stdout.contains(&format!("[env: {var}=")),
            "{var} missing from --help"
        );
    }
}

/// The single `server failed` event of a server that could not start.
fn startup_failure(env: &[(&str, &str)]) -> serde_json::Value {
    let out = TestServer::builder()
        .envs(env.iter().copied())
        .run_to_exit();
    assert_eq!(out.status.code(), Some(1), "{env:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let failures: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["message"] == "server failed")
        .collect();
    assert_eq!(failures.len(), 1, "{env:?}: {stdout}");
    failures[0].clone()
}

#[test]
fn unreachable_bucket_stops_start_up_naming_it() {
    // Nothing listens on port 9 of the loopback address.
    let event = startup_failure(&[
        ("NIXERY_STORAGE_BACKEND", "gcs"),
        ("GCS_BUCKET", "no-such-bucket"),
        ("STORAGE_EMULATOR_HOST", "127.0.0.1:9"),
    ]);
    let error = event["error"].as_str().unwrap();
    assert!(error.contains("no-such-bucket"), "{error}");
    assert!(error.contains("not reachable"), "{error}");
}

#[test]
fn unreadable_popularity_map_stops_start_up_naming_the_variable() {
    let event = startup_failure(&[("NIX_POPULARITY_URL", "/nonexistent/popularity.json")]);
    let error = event["error"].as_str().unwrap();
    assert!(error.contains("NIX_POPULARITY_URL"), "{error}");
    assert!(error.contains("/nonexistent/popularity.json"), "{error}");
}
