//! nixery: a container registry that builds images on demand with Nix.
//!
//! Data flows one way: request ([`http`]) -> image name ([`image`]) ->
//! exact revision ([`resolve`]) -> image identity ([`identity`]) ->
//! manifest lookup ([`manifest_cache`]) -> Nix step ([`nix`]) -> layer grouping
//! ([`layers`]) -> packing ([`archive`], through [`layer_store`]) -> storage ([`storage`]) ->
//! manifest ([`manifest`], with its SBOM: [`sbom`], [`referrers`]) ->
//! response. [`builder`] drives that chain; with several platforms
//! ([`platform`]) it builds one image per platform and an image index
//! ([`image_index`]) naming them.

pub mod archive;
pub mod auth;
pub mod build_errors;
pub mod builder;
pub mod cache;
pub mod config;
pub mod connection;
pub mod digest;
pub mod error_text;
pub mod gc;
pub mod http;
pub mod identity;
pub mod image;
pub mod image_index;
pub mod layer_store;
pub mod layers;
pub mod logging;
pub mod main_program;
pub mod manifest;
pub mod manifest_cache;
pub mod media_type;
pub mod metrics;
pub mod nix;
pub mod platform;
pub mod popcount;
pub mod popularity;
pub mod redact;
pub mod reference;
pub mod referrers;
pub mod resolve;
pub mod sbom;
pub mod server;
pub mod settings_table;
pub mod source;
pub mod status;
pub mod storage;
pub mod symlink_layer;
