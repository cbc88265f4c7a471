//! Failing Nix steps give their error, are recorded for the status page,
//! and leave no Nix process behind.

mod nix_support;

use std::time::Duration;

use nix_support::*;
use nixery::image::Image;
use nixery::nix::NixError;
use nixery::source::PackageSource;

#[tokio::test]
async fn failing_build_is_a_build_failure_with_its_output() {
    let (runner, errors) = runner(PackageSource::Builtin, Duration::from_secs(120));
    let err = runner
        .prepare_image(&Image::from_name("failing", "latest"))
        .await
        .unwrap_err();
    match &err {
        NixError::BuildFailed { image, stderr_tail } => {
            assert_eq!(image, "failing:latest");
            assert!(stderr_tail.contains("fails on purpose"), "{stderr_tail}");
        }
        other => panic!("expected BuildFailed, got {other:?}"),
    }
    assert!(!err.to_string().contains("/nix/store"));
    let recent = errors.recent();
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0].image, "failing:latest");
    assert!(recent[0].message.contains("fails on purpose"));
}

#[tokio::test]
async fn throwing_attribute_is_refused_with_its_message() {
    let (runner, errors) = runner(PackageSource::Builtin, Duration::from_secs(120));
    let err = runner
        .prepare_image(&Image::from_name("throws", "latest"))
        .await
        .unwrap_err();
    assert_eq!(
        refused(&err),
        [("throws".to_string(), nixery::nix::RefusalReason::Throws)]
    );
    assert!(err.to_string().contains("throws on purpose"), "{err}");
    assert!(errors.recent().is_empty(), "a refusal is not a build error");
}

#[tokio::test]
async fn package_set_that_throws_is_a_build_failure() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("default.nix"),
        "{ ... }: throw \"this package set is broken\"\n",
    )
    .unwrap();
    let (runner, _) = runner(
        PackageSource::Path(dir.path().to_path_buf()),
        Duration::from_secs(120),
    );
    let err = runner
        .prepare_image(&Image::from_name("hello", "latest"))
        .await
        .unwrap_err();
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
    let (runner, errors) = {
        let errors = std::sync::Arc::new(nixery::build_errors::BuildErrors::new());
        let runner = nixery::nix::NixRunner::new(
            nixery::nix::NixSettings {
                source: PackageSource::Builtin,
                timeout: Duration::from_secs(10),
                deadline: Duration::from_secs(10),
                allow_unfree: false,
                prepare_image: Some("/nonexistent/nixery-prepare-image".into()),
            },
            errors.clone(),
        )
        .unwrap();
        (runner, errors)
    };
    let err = runner
        .prepare_image(&Image::from_name("hello", "latest"))
        .await
        .unwrap_err();
    assert!(matches!(err, NixError::Spawn(_)), "{err:?}");
    assert_eq!(errors.recent()[0].image, "hello:latest");
}
