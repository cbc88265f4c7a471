//! The two-thread packing pipeline behind [`super::pack_store_paths`] and
//! [`super::gzip_file`].
//!
//! ```text
//! producer thread            compressor (blocking task)         async consumer
//! tar + SHA-256 --chunks--> gzip --------------chunks---------> ByteStream
//!       (sync_channel, TAR_CHUNKS)     (tokio mpsc, STREAM_CHUNKS)
//! ```
//!
//! Producing the tar (reading files, hashing) and deflating run on separate
//! threads so they overlap, like `tar | gzip` does. Both channels are
//! bounded, so at most a few chunks of a layer are ever in memory, and each
//! side notices promptly when the other has gone away: a dropped stream makes
//! the compressor's send fail, the compressor then drops its receiver, and
//! the producer's next send fails.

use std::{
    io::{self, Write},
    sync::mpsc::{Receiver, SyncSender, sync_channel},
    thread,
};

use bytes::Bytes;
use flate2::{Compression, write::GzEncoder};
use sha2::{Digest, Sha256};
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_stream::wrappers::ReceiverStream;

use super::{ArchiveError, GZIP_LEVEL, TarSummary};
use crate::storage::ByteStream;

/// Size of the uncompressed chunks handed from producer to compressor.
const TAR_CHUNK: usize = 256 * 1024;
/// Uncompressed chunks in flight between producer and compressor.
const TAR_CHUNKS: usize = 4;
/// Size of the compressed chunks handed to the stream.
const STREAM_CHUNK: usize = 64 * 1024;
/// Compressed chunks in flight between compressor and consumer.
const STREAM_CHUNKS: usize = 4;

type Summary = Result<TarSummary, ArchiveError>;

/// Starts the pipeline; `produce` writes the uncompressed bytes into the
/// sink it is given, and must return an error if any write fails.
pub(super) fn spawn<P>(produce: P) -> (ByteStream, JoinHandle<Summary>)
where
    P: FnOnce(&mut HashingSink) -> Result<(), ArchiveError> + Send + 'static,
{
    let (out, rx) = mpsc::channel(STREAM_CHUNKS);
    let handle = tokio::task::spawn_blocking(move || run(produce, out));
    (Box::pin(ReceiverStream::new(rx)), handle)
}

fn run<P>(produce: P, out: mpsc::Sender<io::Result<Bytes>>) -> Summary
where
    P: FnOnce(&mut HashingSink) -> Result<(), ArchiveError> + Send,
{
    let (chunk_tx, chunk_rx) = sync_channel(TAR_CHUNKS);
    let encoder = GzEncoder::new(StreamSink::new(out.clone()), Compression::new(GZIP_LEVEL));
    let result = thread::scope(|scope| {
        let producer = thread::Builder::new()
            .name("nixery-tar".into())
            .spawn_scoped(scope, move || {
                let mut sink = HashingSink::new(chunk_tx);
                produce(&mut sink)?;
                sink.finish()
            })
            .map_err(|e| ArchiveError::Worker(format!("cannot start the tar thread: {e}")))?;
        // `compress` owns the receiver and drops it when it returns, which
        // unblocks a producer still waiting to send.
        let compressed = compress(chunk_rx, encoder);
        let produced = producer
            .join()
            .unwrap_or_else(|_| Err(ArchiveError::Worker("the tar thread panicked".into())));
        let (encoder, summary) = match (compressed, produced) {
            (Err(e), _) | (Ok(_), Err(e)) => return Err(e),
            (Ok(encoder), Ok(summary)) => (encoder, summary),
        };
        finish(encoder)?;
        Ok(summary)
    });
    if let Err(error) = &result {
        // Make sure the consumer never mistakes a partial blob for a whole
        // one; if it is gone already there is nobody left to tell.
        let _ = out.blocking_send(Err(io::Error::other(error.to_string())));
    }
    result
}

/// Deflates every chunk until the producer hangs up.
fn compress(
    chunks: Receiver<Vec<u8>>,
    mut encoder: GzEncoder<StreamSink>,
) -> Result<GzEncoder<StreamSink>, ArchiveError> {
    for chunk in chunks {
        if let Err(e) = encoder.write_all(&chunk) {
            return Err(sink_error(encoder.get_ref(), e));
        }
    }
    Ok(encoder)
}

/// Writes the gzip trailer and sends the last compressed chunk.
fn finish(encoder: GzEncoder<StreamSink>) -> Result<(), ArchiveError> {
    let mut sink = match encoder.finish() {
        Ok(sink) => sink,
        Err(e) => return Err(ArchiveError::Compress(e)),
    };
    sink.send_buffered().map_err(|e| sink_error(&sink, e))
}

fn sink_error(sink: &StreamSink, error: io::Error) -> ArchiveError {
    if sink.closed {
        ArchiveError::ConsumerGone
    } else {
        ArchiveError::Compress(error)
    }
}

/// The producer's end: hashes and counts every byte and hands it on to the
/// compressor in chunks of [`TAR_CHUNK`].
pub(super) struct HashingSink {
    buffer: Vec<u8>,
    next: SyncSender<Vec<u8>>,
    hasher: Sha256,
    size: u64,
    closed: bool,
}

impl HashingSink {
    fn new(next: SyncSender<Vec<u8>>) -> Self {
        Self {
            buffer: Vec::with_capacity(TAR_CHUNK),
            next,
            hasher: Sha256::new(),
            size: 0,
            closed: false,
        }
    }

    /// Whether a write failed because the compressor has gone away.
    pub(super) fn is_closed(&self) -> bool {
        self.closed
    }

    fn send_buffered(&mut self) -> io::Result<()> {
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(TAR_CHUNK));
        if self.next.send(chunk).is_err() {
            self.closed = true;
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "layer compressor stopped",
            ));
        }
        Ok(())
    }

    fn finish(mut self) -> Summary {
        if !self.buffer.is_empty() {
            self.send_buffered()
                .map_err(|_| ArchiveError::ConsumerGone)?;
        }
        Ok(TarSummary {
            diff_id: hex::encode(self.hasher.finalize()),
            tar_size: self.size,
        })
    }
}

impl Write for HashingSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.closed {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "layer compressor stopped",
            ));
        }
        let room = TAR_CHUNK - self.buffer.len();
        let taken = &data[..data.len().min(room)];
        self.hasher.update(taken);
        self.size += taken.len() as u64;
        self.buffer.extend_from_slice(taken);
        if self.buffer.len() == TAR_CHUNK {
            self.send_buffered()?;
        }
        Ok(taken.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The compressor's end: collects compressed bytes into chunks of
/// [`STREAM_CHUNK`] and sends them to the stream, waiting while it is full.
struct StreamSink {
    buffer: Vec<u8>,
    out: mpsc::Sender<io::Result<Bytes>>,
    closed: bool,
}

impl StreamSink {
    fn new(out: mpsc::Sender<io::Result<Bytes>>) -> Self {
        Self {
            buffer: Vec::with_capacity(STREAM_CHUNK),
            out,
            closed: false,
        }
    }

    fn send_buffered(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(STREAM_CHUNK));
        if self.out.blocking_send(Ok(Bytes::from(chunk))).is_err() {
            self.closed = true;
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "layer stream dropped",
            ));
        }
        Ok(())
    }
}

impl Write for StreamSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.closed {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "layer stream dropped",
            ));
        }
        let room = STREAM_CHUNK - self.buffer.len();
        let taken = &data[..data.len().min(room)];
        self.buffer.extend_from_slice(taken);
        if self.buffer.len() == STREAM_CHUNK {
            self.send_buffered()?;
        }
        Ok(taken.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
