//! The threads behind [`super::pack_store_paths`] and [`super::gzip_file`].
//!
//! ```text
//! producer thread        compressor threads          collector (blocking task)   async consumer
//! tar, SHA-256, CRC --blocks--> deflate block --results--> reorder, wrap --chunks--> ByteStream
//!       (jobs: sync_channel)            (results: sync_channel)        (tokio mpsc)
//! ```
//!
//! Producing the tar (reading files, hashing) runs beside the compression,
//! like `tar | gzip`, and the compression itself is spread over up to
//! [`MAX_COMPRESSORS`] threads (see [`super::gzip`] for how blocks are
//! deflated independently yet form one gzip stream). Every channel is
//! bounded, so at most a few blocks of a layer are ever in memory (the
//! producer's, and per compressor one queued, one being deflated with its
//! output, one deflated waiting for the collector: about 1 + 4 x the
//! compressors MiB, 9 MiB on 2 cores), and each side notices promptly when the other has gone away: a dropped stream
//! makes the collector's send fail, the collector then drops its receiver,
//! the compressors' sends fail, they drop the jobs receiver, and the
//! producer's next send fails.

use std::{
    collections::BTreeMap,
    io::{self, Write},
    sync::{
        Arc,
        mpsc::{Receiver, SyncSender, sync_channel},
    },
    thread::{self, Scope, ScopedJoinHandle},
};

use bytes::Bytes;
use libdeflater::Crc;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_stream::wrappers::ReceiverStream;

use super::{
    ArchiveError, GZIP_LEVEL, TarSummary,
    gzip::{self, BLOCK},
};
use crate::storage::ByteStream;

/// The most threads deflating one layer (layers are also packed side by
/// side, so more would mostly oversubscribe the cores).
const MAX_COMPRESSORS: usize = 4;
/// Compressed chunks in flight between collector and consumer.
const STREAM_CHUNKS: usize = 8;

type Summary = Result<TarSummary, ArchiveError>;

/// What the producer learnt, beyond the summary, for the gzip trailer.
struct Produced {
    summary: TarSummary,
    crc: u32,
}

/// One block to deflate: its position in the layer and its data.
struct Job {
    index: u64,
    data: Vec<u8>,
}

type JobResult = (u64, io::Result<Vec<u8>>);

/// Starts the pipeline; `produce` writes the uncompressed bytes into the
/// sink it is given, and must return an error if any write fails.
pub(super) fn spawn<P>(produce: P) -> (ByteStream, JoinHandle<Summary>)
where
    P: FnOnce(&mut HashingSink) -> Result<(), ArchiveError> + Send + 'static,
{
    let compressors = thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_COMPRESSORS);
    spawn_with(compressors, produce)
}

/// [`spawn`] with `compressors` (at least 1) compressor threads; the
/// output is the same for any number.
pub(super) fn spawn_with<P>(compressors: usize, produce: P) -> (ByteStream, JoinHandle<Summary>)
where
    P: FnOnce(&mut HashingSink) -> Result<(), ArchiveError> + Send + 'static,
{
    let (out, rx) = mpsc::channel(STREAM_CHUNKS);
    let compressors = compressors.max(1);
    let handle = tokio::task::spawn_blocking(move || run(compressors, produce, out));
    (Box::pin(ReceiverStream::new(rx)), handle)
}

fn run<P>(compressors: usize, produce: P, out: mpsc::Sender<io::Result<Bytes>>) -> Summary
where
    P: FnOnce(&mut HashingSink) -> Result<(), ArchiveError> + Send,
{
    let (job_tx, job_rx) = sync_channel::<Job>(compressors);
    let (result_tx, result_rx) = sync_channel::<JobResult>(compressors);
    let result = thread::scope(|scope| {
        let producer = start(scope, "nixery-tar", move || {
            let mut sink = HashingSink::new(job_tx);
            produce(&mut sink)?;
            sink.finish()
        })?;
        let job_rx = Arc::new(Mutex::new(job_rx));
        let mut workers = Vec::new();
        for _ in 0..compressors {
            let (jobs, results) = (Arc::clone(&job_rx), result_tx.clone());
            workers.push(start(scope, "nixery-gzip", move || {
                let deflater =
                    gzip::BlockDeflater::new(GZIP_LEVEL).map_err(ArchiveError::Compress)?;
                compress(deflater, &jobs, &results);
                Ok(())
            })?);
        }
        drop((job_rx, result_tx));

        let mut sink = StreamSink::new(out.clone());
        // `collect` owns the results receiver and drops it when it returns,
        // which unblocks compressors and, through them, the producer.
        let collected = collect(result_rx, &mut sink);
        for worker in workers {
            join(worker)?;
        }
        let produced = join(producer);
        let Produced { summary, crc } = match (collected, produced) {
            (Err(e), _) | (Ok(()), Err(e)) => return Err(e),
            (Ok(()), Ok(produced)) => produced,
        };
        sink.write_all(&gzip::trailer(crc, summary.tar_size))
            .and_then(|()| sink.send_buffered())
            .map_err(|e| sink.error(e))?;
        Ok(summary)
    });
    if let Err(error) = &result {
        // Make sure the consumer never mistakes a partial blob for a whole
        // one; if it is gone already there is nobody left to tell.
        let _ = out.blocking_send(Err(io::Error::other(error.to_string())));
    }
    result
}

fn start<'scope, T, F>(
    scope: &'scope Scope<'scope, '_>,
    name: &str,
    work: F,
) -> Result<ScopedJoinHandle<'scope, Result<T, ArchiveError>>, ArchiveError>
where
    T: Send + 'scope,
    F: FnOnce() -> Result<T, ArchiveError> + Send + 'scope,
{
    thread::Builder::new()
        .name(name.to_owned())
        .spawn_scoped(scope, work)
        .map_err(|e| ArchiveError::Worker(format!("cannot start a {name} thread: {e}")))
}

fn join<T>(handle: ScopedJoinHandle<'_, Result<T, ArchiveError>>) -> Result<T, ArchiveError> {
    handle
        .join()
        .unwrap_or_else(|_| Err(ArchiveError::Worker("a packing thread panicked".into())))
}

/// A compressor thread: deflates jobs until the producer hangs up or the
/// collector stops listening.
fn compress(
    mut deflater: gzip::BlockDeflater,
    jobs: &Mutex<Receiver<Job>>,
    results: &SyncSender<JobResult>,
) {
    loop {
        // The lock is held only while waiting for the next job; a
        // compressor that panics is reported by `join`.
        let job = jobs.lock().recv();
        let Ok(job) = job else { return };
        let deflated = deflater.deflate(&job.data);
        if results.send((job.index, deflated)).is_err() {
            return;
        }
    }
}

/// Writes the gzip header, then the deflated blocks in order as they come.
fn collect(results: Receiver<JobResult>, sink: &mut StreamSink) -> Result<(), ArchiveError> {
    sink.write_all(&gzip::header()).map_err(|e| sink.error(e))?;
    let mut waiting = BTreeMap::new();
    let mut next = 0;
    for (index, deflated) in results {
        waiting.insert(index, deflated.map_err(ArchiveError::Compress)?);
        while let Some(block) = waiting.remove(&next) {
            sink.write_all(&block).map_err(|e| sink.error(e))?;
            next += 1;
        }
    }
    if waiting.is_empty() {
        Ok(())
    } else {
        Err(ArchiveError::Worker(
            "a compressed block went missing".into(),
        ))
    }
}

/// The producer's end: hashes and counts every byte and hands it on to the
/// compressors in blocks of [`BLOCK`].
pub(super) struct HashingSink {
    buffer: Vec<u8>,
    next: SyncSender<Job>,
    index: u64,
    sha256: Sha256,
    crc: Crc,
    size: u64,
    closed: bool,
}

impl HashingSink {
    fn new(next: SyncSender<Job>) -> Self {
        Self {
            buffer: Vec::with_capacity(BLOCK),
            next,
            index: 0,
            sha256: Sha256::new(),
            crc: Crc::new(),
            size: 0,
            closed: false,
        }
    }

    /// Whether a write failed because the compressors have gone away.
    pub(super) fn is_closed(&self) -> bool {
        self.closed
    }

    fn send_buffered(&mut self) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buffer, Vec::with_capacity(BLOCK));
        let job = Job {
            index: self.index,
            data,
        };
        self.index += 1;
        if self.next.send(job).is_err() {
            self.closed = true;
            return Err(broken_pipe("layer compressor stopped"));
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Produced, ArchiveError> {
        if !self.buffer.is_empty() {
            self.send_buffered()
                .map_err(|_| ArchiveError::ConsumerGone)?;
        }
        Ok(Produced {
            summary: TarSummary {
                diff_id: crate::digest::Digest::from_hasher(self.sha256),
                tar_size: self.size,
            },
            crc: self.crc.sum(),
        })
    }
}

impl Write for HashingSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.closed {
            return Err(broken_pipe("layer compressor stopped"));
        }
        let room = BLOCK - self.buffer.len();
        let taken = &data[..data.len().min(room)];
        self.sha256.update(taken);
        self.crc.update(taken);
        self.size += taken.len() as u64;
        self.buffer.extend_from_slice(taken);
        if self.buffer.len() == BLOCK {
            self.send_buffered()?;
        }
        Ok(taken.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The collector's end: sends compressed bytes to the stream in chunks of
/// at least [`STREAM_CHUNK`], waiting while the stream is full.
struct StreamSink {
    buffer: Vec<u8>,
    out: mpsc::Sender<io::Result<Bytes>>,
    closed: bool,
}

/// Smallest chunk handed to the stream (except the last).
const STREAM_CHUNK: usize = 64 * 1024;

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
            return Err(broken_pipe("layer stream dropped"));
        }
        Ok(())
    }

    fn error(&self, error: io::Error) -> ArchiveError {
        if self.closed {
            ArchiveError::ConsumerGone
        } else {
            ArchiveError::Compress(error)
        }
    }
}

impl Write for StreamSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.closed {
            return Err(broken_pipe("layer stream dropped"));
        }
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= STREAM_CHUNK {
            self.send_buffered()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The error a sink's writer gets once the other end of its channel has
/// gone (`what` says which end).
fn broken_pipe(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, what)
}
