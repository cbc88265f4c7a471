//! Failing Nix steps give their error, are reported with their output as
//! Nix failures, and leave no Nix process behind.

use std::time::Duration;

use nixery::build_errors::FailureKind;
use nixery::nix::NixError;
use nixery::source::PackageSource;
use support::nix::*;

#[tokio::test]
async fn failing_build_is_a_build_failure_with_its_output() {
    let runner = runner(PackageSource::Builtin, Duration::from_secs(120));
    let err = runner.build_named("failing").await.unwrap_err();
    match &err {
        NixError::BuildFailed { image, stderr_tail } => {
            assert_eq!(image, "failing:latest");
            assert!(stderr_tail.contains("fails on purpose"), "{stderr_tail}");
        }
        other => panic!("expected BuildFailed, got {other:?}"),
    }
    assert!(!err.to_string().contains("/nix/store"));
    let (kind, detail) = reported(err);
    assert_eq!(kind, FailureKind::Nix);
    assert!(detail.contains("failing:latest"), "{detail}");
    assert!(detail.contains("fails on purpose"), "{detail}");
}

#[tokio::test]
async fn throwing_attribute_is_refused_with_its_message() {
    let runner = runner(PackageSource::Builtin, Duration::from_secs(120));
    let err = runner.build_named("throws").await.unwrap_err();
    assert_eq!(
        refused(&err),
        [("throws".to_string(), nixery::nix::RefusalReason::Throws)]
    );
    assert!(err.to_string().contains("throws on purpose"), "{err}");
    assert_eq!(
        reported(err).0,
        FailureKind::Packages,
        "a refusal is not a build error"
    );
}

#[tokio::test]
async fn package_set_that_throws_is_a_build_failure() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("default.nix"),
        "{ ... }: throw \"this package set is broken\"\n",
    )
    .unwrap();
    let runner = runner(
        PackageSource::Path(dir.path().to_path_buf()),
        Duration::from_secs(120),
    );
    let err = runner.build_named("hello").await.unwrap_err();
    match &err {
        NixError::BuildFailed { stderr_tail, .. } => {
            assert!(
                stderr_tail.contains("this package set is broken"),
                "{stderr_tail}"
            )
        }
        other => panic!("expected BuildFailed, got {other:?}"),
    }
}

#[tokio::test]
async fn missing_nix_program_is_a_spawn_error() {
    let runner = runner_with(nixery::nix::NixSettings {
        source: PackageSource::Builtin,
        timeout: Duration::from_secs(10),
        deadline: Duration::from_secs(10),
        allow_unfree: false,
        prepare_image: Some("/nonexistent/nixery-prepare-image".into()),
    });
    let err = runner.build_named("hello").await.unwrap_err();
    assert!(matches!(err, NixError::Spawn(_)), "{err:?}");
    assert_eq!(reported(err).0, FailureKind::Nix);
}
