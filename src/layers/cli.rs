//! TODO(skeleton): owned by the layering helper.
use std::process::ExitCode;

/// Arguments of `nixery layers`.
#[derive(clap::Args, Debug)]
pub struct LayersArgs {}

/// Run `nixery layers`.
pub fn run(_args: LayersArgs) -> ExitCode {
    ExitCode::FAILURE
}
