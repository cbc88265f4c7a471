//! TODO(skeleton): owned by the foundation helper.
use std::process::ExitCode;

/// Run the server until SIGINT/SIGTERM.
pub fn main(_args: crate::config::ServeArgs) -> ExitCode {
    ExitCode::FAILURE
}
