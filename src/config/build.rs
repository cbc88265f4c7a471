//! Settings of how much building and packing runs at once, and for which
//! platforms.

use std::ffi::OsStr;

use super::{Parsed, parse};
use crate::platform::Platform;

/// Default of `NIXERY_BUILD_QUEUE`: enough for a burst of distinct images
/// from a deployment, small enough that abandoned requests cannot queue
/// hours of Nix work.
pub const DEFAULT_BUILD_QUEUE: usize = 16;

crate::settings! {
    /// Layers packed at once [default: number of cores].
    PACK_CONCURRENCY: usize = {
        env: "NIXERY_PACK_CONCURRENCY", flag: "pack-concurrency", value_name: "N",
        default: parse::cores(), parse: parse::positive,
    };
    /// Nix builds run at once [default: number of cores].
    BUILD_CONCURRENCY: usize = {
        env: "NIXERY_BUILD_CONCURRENCY", flag: "build-concurrency", value_name: "N",
        default: parse::cores(), parse: parse::positive,
    };
    /// Images that may wait for a build slot; beyond them requests for new
    /// images get 429 [default: 16].
    BUILD_QUEUE: usize = {
        env: "NIXERY_BUILD_QUEUE", flag: "build-queue", value_name: "N",
        default: DEFAULT_BUILD_QUEUE, parse: parse::count,
    };
    /// Platforms each image is built for, comma-separated `os/arch`
    /// (`linux/amd64,linux/arm64`); with two or more, tags answer an image
    /// index [default: the host's platform].
    PLATFORMS: Vec<Platform> = {
        env: "NIXERY_PLATFORMS", flag: "platforms", value_name: "LIST",
        default: vec![Platform::host()], parse: platforms,
    };
}

/// A comma-separated list of platforms, each once ([`Platform::parse_list`]).
fn platforms(raw: &OsStr) -> Parsed<Vec<Platform>> {
    parse::trimmed(
        raw,
        "expected linux/amd64, linux/arm64 or both, comma-separated, each once",
        |v| Platform::parse_list(v).ok(),
    )
}
