//! TODO(skeleton): owned by the layering helper.
pub mod cli;
