//! `NIXERY_BUILD_CONCURRENCY` bounds how many different images build at
//! once: an image beyond the limit waits for a slot, one within it builds
//! beside the others. The slow build is `sleepy`, which sleeps until
//! `NIX_TIMEOUT` stops it.

use std::time::Duration;

use serde_json::Value;
use support::server::TestServer;

/// Position in the log of the first event with `message` for `image`.
fn position(events: &[Value], message: &str, image: &str) -> usize {
    events
        .iter()
        .position(|e| e["message"] == message && e["image"] == image)
        .unwrap_or_else(|| panic!("no {message:?} event for {image}"))
}

/// Start a server with `limit` build slots, occupy one with `sleepy`, then
/// build `hello`; return the log events once both are done.
fn sleepy_then_hello(limit: &str) -> Vec<Value> {
    let server = TestServer::builder()
        .env("NIXERY_BUILD_CONCURRENCY", limit)
        .env("NIX_TIMEOUT", "4")
        .start();
    std::thread::scope(|scope| {
        let sleepy = scope.spawn(|| {
            server
                .get("/v2/sleepy/manifests/latest")
                .timeout(Duration::from_secs(60))
                .expect_status(500)
        });
        server
            .wait_for_event(Duration::from_secs(30), |e| {
                e["message"] == "building image" && e["image"] == "sleepy"
            })
            .expect("the sleepy build started");
        server
            .get("/v2/hello/manifests/latest")
            .timeout(Duration::from_secs(60))
            .expect_status(200);
        sleepy.join().expect("sleepy answered");
    });
    server.settled_log_events()
}

#[test]
fn image_beyond_the_build_limit_waits_for_a_slot() {
    let events = sleepy_then_hello("1");
    assert!(
        position(&events, "building image", "hello")
            > position(&events, "image build failed", "sleepy"),
        "hello started building while sleepy held the only slot"
    );
}

#[test]
fn images_within_the_build_limit_build_side_by_side() {
    let events = sleepy_then_hello("2");
    assert!(
        position(&events, "image built", "hello")
            < position(&events, "image build failed", "sleepy"),
        "hello waited for sleepy although a slot was free"
    );
}
