//! TODO(skeleton): owned by the foundation helper.

/// Settings of `nixery serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {}
