//! NIXERY_NIX_DEADLINE bounds the whole Nix step, NIX_TIMEOUT (given to
//! Nix as `--timeout`) each build, and a Nix step that is stopped
//! (deadline, or the caller giving up) leaves no process behind.

use std::time::{Duration, Instant};

use nixery::image::Image;
use nixery::nix::{NixError, NixSettings};
use nixery::source::PackageSource;
use support::nix::*;

/// A Nix step over the offline set with Nix's `--timeout` of `timeout`
/// and a deadline of `deadline` for the whole step.
fn offline_runner_with(timeout: Duration, deadline: Duration) -> NixStep {
    runner_with(NixSettings {
        source: PackageSource::Builtin,
        timeout,
        deadline,
        allow_unfree: false,
        prepare_image: None,
    })
}

#[tokio::test]
async fn sleeping_build_times_out_and_leaves_no_process() {
    // The deadline of the whole step, well before Nix's own per-build one.
    let timeout = Duration::from_secs(3);
    let runner = offline_runner_with(Duration::from_secs(600), timeout);
    let started = Instant::now();
    let err = runner.build_named("sleepy").await.unwrap_err();
    let elapsed = started.elapsed();

    match &err {
        NixError::TimedOut { image, .. } => assert_eq!(image, "sleepy:latest"),
        other => panic!("expected TimedOut, got {other:?}"),
    }
    assert!(
        elapsed < timeout + Duration::from_secs(8),
        "took {elapsed:?}"
    );
    assert_eq!(reported(err).0, nixery::build_errors::FailureKind::Nix);
    // Neither nix-build (its arguments name "sleepy") nor the builder.
    assert_no_process_left("\"sleepy\"", Duration::from_secs(5)).await;
    assert_no_process_left("sleep 1000", Duration::from_secs(5)).await;
}

#[tokio::test]
async fn abandoned_build_leaves_no_process() {
    let runner = runner(PackageSource::Builtin, Duration::from_secs(600));
    let image = Image::from_name("sleepy-long", "latest");
    let mut build = Box::pin(runner.build(&image));
    let builder_seen = tokio::select! {
        result = &mut build => panic!("the build cannot finish: {result:?}"),
        seen = process_appears("sleep 1001", Duration::from_secs(60)) => seen,
    };
    assert!(builder_seen, "the sleeping builder never started");
    drop(build);
    assert_no_process_left("\"sleepy-long\"", Duration::from_secs(10)).await;
    assert_no_process_left("sleep 1001", Duration::from_secs(10)).await;
}

#[tokio::test]
async fn nix_timeout_stops_one_build_within_a_longer_deadline() {
    let runner = offline_runner_with(Duration::from_secs(2), Duration::from_secs(120));
    let started = Instant::now();
    let err = runner.build_named("sleepy").await.unwrap_err();
    let elapsed = started.elapsed();
    match &err {
        // Nix itself stopped the build ("timed out after 2 seconds").
        NixError::TimedOut { stderr_tail, .. } => {
            assert!(stderr_tail.contains("timed out after"), "{stderr_tail}")
        }
        other => panic!("expected TimedOut, got {other:?}"),
    }
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
    assert_no_process_left("sleep 1000", Duration::from_secs(5)).await;
}
