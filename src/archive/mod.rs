//! Layer packing: store paths -> deterministic tar -> gzip -> a byte stream.
//!
//! A layer blob is a gzip-compressed tar of its store paths with absolute
//! member names (`/nix/store/...`). Packing never holds a layer in memory:
//! the tar is produced and hashed on one thread, compressed in blocks on
//! others (see `archive/pipeline.rs`), and the compressed bytes flow to the caller as a [`ByteStream`] through a
//! small bounded channel, so a slow consumer (the storage upload) throttles
//! the whole pipeline. The caller hands the stream to
//! [`Storage::persist`](crate::storage::Storage::persist), which hashes and
//! counts the compressed bytes; the SHA-256 of the uncompressed tar (the
//! image config's `diff_id`) comes back through the returned [`JoinHandle`]
//! once the stream has ended.
//!
//! The tar output depends only on the content of the store paths, never on
//! the machine, the time or the order in which files were created, so the
//! same store paths give the same layer digest on every instance (see
//! `archive/tree.rs` for the exact rules).

mod deflate_walk;
mod gzip;
mod pipeline;
mod tree;

use std::{io, path::PathBuf};

use tokio::task::JoinHandle;

use crate::storage::ByteStream;

/// The gzip compression level of every layer.
///
/// Level 6 is gzip's and zlib's default and what upstream Nixery produced,
/// so layers are as small as a registry user expects. Layers are deflated
/// by libdeflate, whose level 6 writes output 0.6 to 0.9% smaller than
/// zlib's level 6, in 1 MiB blocks on every core (`archive/gzip.rs`;
/// figures in `docs/internals.md`, "Packing"). libdeflate's level 5 is no
/// faster than 6 on real files; level 4 deflates about 20% faster but its
/// output was 0.85% larger than `pigz -6`'s on a tar of system files (1.3%
/// on another), too close to the 1% a level change may cost, paid by every
/// pull of every layer while packing is paid once per layer. Changing the
/// level changes every layer digest, which costs a one-time cache miss per
/// layer.
pub const GZIP_LEVEL: u32 = 6;

/// What packing learnt about the uncompressed tar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TarSummary {
    /// SHA-256 of the uncompressed tar (the layer's `diff_id`).
    pub diff_id: crate::digest::Digest,
    /// Size in bytes of the uncompressed tar.
    pub tar_size: u64,
}

/// Why a layer could not be packed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A store path given to the packer was not an absolute, normalised path.
    #[error("store path {0:?} is not an absolute path without `..`")]
    NotAbsolute(PathBuf),
    /// Reading a file, directory or symlink of a store path failed.
    #[error("cannot read {path:?} while packing a layer: {source}")]
    Read {
        /// The file that could not be read.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A store path holds something other than a file, directory or symlink.
    #[error("{0:?} is neither a regular file, a directory nor a symlink")]
    UnsupportedFileType(PathBuf),
    /// Compressing the tar failed.
    #[error("compressing a layer failed: {0}")]
    Compress(io::Error),
    /// The consumer dropped the layer stream before packing finished.
    #[error("the layer stream was dropped before packing finished")]
    ConsumerGone,
    /// A packing thread could not be started or died.
    #[error("a layer packing thread failed: {0}")]
    Worker(String),
}

/// Packs `paths` (absolute store paths, in any order) into a gzip-compressed
/// deterministic tar.
///
/// Returns the compressed bytes as a stream and a handle that resolves, once
/// the stream has ended, to the [`TarSummary`]. If anything fails the stream
/// ends with an error item (never with a silently truncated blob) and the
/// handle holds the cause; if the stream is dropped early, packing stops and
/// the handle resolves to [`ArchiveError::ConsumerGone`]. Must be called
/// inside a Tokio runtime; the work runs on blocking threads.
pub fn pack_store_paths(
    paths: Vec<PathBuf>,
) -> (ByteStream, JoinHandle<Result<TarSummary, ArchiveError>>) {
    pipeline::spawn(move |sink| tree::write_tar(paths, sink))
}

/// Gzip-compresses the existing file `path` (the symlink-layer tarball that
/// Nix produced) while hashing its uncompressed bytes, with the same
/// streaming, error and cancellation behaviour as [`pack_store_paths`].
pub fn gzip_file(path: PathBuf) -> (ByteStream, JoinHandle<Result<TarSummary, ArchiveError>>) {
    pipeline::spawn(move |sink| {
        let read_error = |source| ArchiveError::Read {
            path: path.clone(),
            source,
        };
        let mut file = std::fs::File::open(&path).map_err(read_error)?;
        match io::copy(&mut file, sink) {
            Ok(_) => Ok(()),
            Err(_) if sink.is_closed() => Err(ArchiveError::ConsumerGone),
            Err(source) => Err(read_error(source)),
        }
    })
}

/// Gzip-compresses `tar` (the symlink layer's tarball, made in memory by
/// [`crate::symlink_layer`]) while hashing it, with the same streaming,
/// error and cancellation behaviour as [`pack_store_paths`].
pub fn gzip_tar(tar: bytes::Bytes) -> (ByteStream, JoinHandle<Result<TarSummary, ArchiveError>>) {
    pipeline::spawn(move |sink| {
        io::Write::write_all(sink, &tar).map_err(|source| {
            if sink.is_closed() {
                ArchiveError::ConsumerGone
            } else {
                ArchiveError::Compress(source)
            }
        })
    })
}

#[cfg(test)]
mod tests;
