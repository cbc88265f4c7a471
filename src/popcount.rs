//! TODO(skeleton): owned by the popcount helper.
use std::process::ExitCode;

/// Arguments of `nixery popcount`.
#[derive(clap::Args, Debug)]
pub struct PopcountArgs {}

/// Run `nixery popcount`.
pub fn run(_args: PopcountArgs) -> ExitCode {
    ExitCode::FAILURE
}
