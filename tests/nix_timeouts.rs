//! NIXERY_NIX_DEADLINE bounds the whole Nix step, NIX_TIMEOUT (given to
//! Nix as `--timeout`) each build, and a Nix step that is stopped
//! (deadline, or the caller giving up) leaves no process behind. The
//! sleeping builds are this test's own (`support::nix::SleepyPkgs`): the
//! process checks look at the whole machine, where other tests build the
//! offline set's `sleepy` at the same time.

use std::time::{Duration, Instant};

use nixery::image::Image;
use nixery::nix::{NixError, NixSettings};
use support::nix::*;

/// A Nix step over `pkgs` (the offline set, with sleepers of its own)
/// with Nix's `--timeout` of `timeout` and a deadline of `deadline` for
/// the whole step.
fn offline_runner_with(pkgs: &SleepyPkgs, timeout: Duration, deadline: Duration) -> NixStep {
    runner_with(NixSettings {
        source: pkgs.source(),
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
    let pkgs = SleepyPkgs::new();
    let runner = offline_runner_with(&pkgs, Duration::from_secs(600), timeout);
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
    // Neither nix-build (its arguments name the package set) nor the
    // builder.
    assert_no_process_left(&pkgs.nix_build_needle(), Duration::from_secs(5)).await;
    assert_no_process_left(&pkgs.sleep_needle(1000), Duration::from_secs(5)).await;
}

#[tokio::test]
async fn abandoned_build_leaves_no_process() {
    let pkgs = SleepyPkgs::new();
    let runner = runner(pkgs.source(), Duration::from_secs(600));
    let image = Image::from_name("sleepy-long", "latest");
    let mut build = Box::pin(runner.build(&image));
    let sleeper = pkgs.sleep_needle(1001);
    let builder_seen = tokio::select! {
        result = &mut build => panic!("the build cannot finish: {result:?}"),
        seen = process_appears(&sleeper, Duration::from_secs(60)) => seen,
    };
    assert!(builder_seen, "the sleeping builder never started");
    drop(build);
    assert_no_process_left(&pkgs.nix_build_needle(), Duration::from_secs(10)).await;
    assert_no_process_left(&sleeper, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn nix_timeout_stops_one_build_within_a_longer_deadline() {
    let pkgs = SleepyPkgs::new();
    let runner = offline_runner_with(&pkgs, Duration::from_secs(2), Duration::from_secs(120));
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
    assert_no_process_left(&pkgs.sleep_needle(1000), Duration::from_secs(5)).await;
}
