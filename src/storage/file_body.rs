//! Streaming part of a local file to a client: large positioned reads on
//! the blocking pool, with the next chunk read while the current one is
//! being sent.
//!
//! Each chunk costs one hop to a blocking thread, and a 100 MB blob takes
//! about a hundred of them instead of the tens of thousands a small-buffer
//! reader needs. Memory per download stays at a few chunks (one being sent,
//! [`READ_AHEAD`] being read). Zero-copy `sendfile` would need the socket,
//! which hyper owns; the benchmark in `scripts/bench-serve.sh` compares this
//! path with nginx's `sendfile` on the same file.

use std::{
    fs::File,
    io::{self, Read, Seek, SeekFrom},
    sync::Arc,
};

use bytes::Bytes;
use futures::{StreamExt, TryFutureExt, stream};
use parking_lot::Mutex;

use super::ByteStream;

/// Bytes read per blocking call.
pub const CHUNK_LEN: u64 = 1 << 20;
/// Chunks read ahead of the one being sent.
pub const READ_AHEAD: usize = 2;

/// Stream `len` bytes of `file` from `start`. A file that turns out shorter
/// than that (truncated behind the server's back) ends the stream with an
/// `UnexpectedEof` error rather than short data.
pub fn stream_region(file: File, start: u64, len: u64) -> ByteStream {
    let file = Arc::new(Mutex::new(file));
    let chunks = (0..len.div_ceil(CHUNK_LEN)).map(move |i| {
        let offset = start + i * CHUNK_LEN;
        let chunk_len = CHUNK_LEN.min(start + len - offset);
        (offset, chunk_len)
    });
    let reads = stream::iter(chunks).map(move |(offset, chunk_len)| {
        let file = file.clone();
        tokio::task::spawn_blocking(move || read_chunk(&file, offset, chunk_len))
            .unwrap_or_else(|join_error| Err(io::Error::other(join_error)))
    });
    Box::pin(reads.buffered(READ_AHEAD))
}

/// Read `len` bytes at `offset`. `read_to_end` fills the buffer's spare
/// capacity directly (no zeroing pass over a megabyte per chunk); the lock
/// only orders the seek and the read of the (at most [`READ_AHEAD`]) reads
/// of one download.
fn read_chunk(file: &Mutex<File>, offset: u64, len: u64) -> io::Result<Bytes> {
    let mut buf = Vec::with_capacity(usize::try_from(len).map_err(io::Error::other)?);
    let mut file = file.lock();
    file.seek(SeekFrom::Start(offset))?;
    (&mut *file).take(len).read_to_end(&mut buf)?;
    if (buf.len() as u64) < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("file ends {} bytes short", len - buf.len() as u64),
        ));
    }
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    async fn collect(mut s: ByteStream) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(chunk) = s.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    fn file_with(bytes: &[u8]) -> File {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(bytes).unwrap();
        file
    }

    #[tokio::test]
    async fn regions_across_chunk_boundaries_are_exact() {
        let chunk = CHUNK_LEN as usize;
        let bytes: Vec<u8> = (0..3 * chunk + 123).map(|i| (i % 251) as u8).collect();
        for (start, len) in [
            (0, bytes.len()),
            (0, 0),
            (1, chunk),
            (chunk - 1, 2),
            (chunk + 5, 2 * chunk),
            (bytes.len() - 1, 1),
        ] {
            let got = collect(stream_region(file_with(&bytes), start as u64, len as u64))
                .await
                .unwrap();
            assert_eq!(got, &bytes[start..start + len], "{start}+{len}");
        }
    }

    #[tokio::test]
    async fn a_file_shorter_than_promised_is_an_error_not_short_data() {
        let err = collect(stream_region(file_with(b"short"), 0, 10))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
