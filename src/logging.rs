//! Structured logs: one JSON object per line on stdout.
//!
//! Every event is flattened (its fields sit beside `timestamp`, `level`,
//! `message` and `target`), and an event emitted inside a span carries that
//! span's fields under `span` (the HTTP layer opens one span per request with
//! `method` and `path`). By convention an error goes into a field named
//! `error`: `tracing::warn!(error = %e, digest, "fetch failed")`.
//!
//! `RUST_LOG` filters events with the usual `tracing-subscriber` directives;
//! the default is `info`.
//!
//! Lines are formatted where the event happens but written to stdout by a
//! thread of their own (`tracing-appender`'s non-blocking writer), so a
//! slow or stalled reader of stdout never holds up a request or a build:
//! up to [`BUFFERED_LINES`] lines wait for it, and lines beyond that are
//! dropped and counted (the count is printed on stderr at exit).
//!
//! That thread also passes every line through [`crate::redact`] on its way
//! out, so no event (ours, or a dependency's quoting a URL) writes
//! credentials or query tokens to the log, and the scan costs the request
//! nothing.

use std::{
    fs::File,
    io::{BufWriter, Write},
    os::fd::AsFd,
};

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// The environment variable holding the log filter.
pub const FILTER_VAR: &str = "RUST_LOG";

/// Default filter when `RUST_LOG` is unset.
pub const DEFAULT_FILTER: &str = "info";

/// Lines kept in memory while stdout is slower than the server.
pub const BUFFERED_LINES: usize = 64 * 1024;

/// Keeps the log writer running; dropping it writes out the lines still
/// queued and reports lines that were dropped. Hold it until exit.
pub struct LogGuard {
    _worker: WorkerGuard,
    dropped: ErrorCounter,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        let dropped = self.dropped.dropped_lines();
        if dropped > 0 {
            eprintln!("nixery: {dropped} log lines were dropped because stdout was too slow");
        }
    }
}

/// Standard output for the writer thread, redacting each line. That thread
/// drains every queued line before it flushes, so under load many lines go
/// out in one `write`; `Stdout` itself would make a system call per line.
fn stdout_writer() -> RedactingWriter<Box<dyn Write + Send>> {
    let stdout: Box<dyn Write + Send> = match std::io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => Box::new(BufWriter::with_capacity(64 * 1024, File::from(fd))),
        Err(_) => Box::new(std::io::stdout()),
    };
    RedactingWriter::new(stdout)
}

/// Writes each buffer it is given (the writer thread hands over one whole
/// event line per write) through [`crate::redact::redact`].
pub struct RedactingWriter<W>(W);

impl<W: Write> RedactingWriter<W> {
    /// `inner`, written to through [`crate::redact::redact`].
    pub fn new(inner: W) -> Self {
        Self(inner)
    }
}

/// Standard error through [`crate::redact::redact`], for the operator
/// tools' (`nixery gc`) plain-text logs: `tracing-subscriber`'s formatter
/// writes each event in one call.
pub fn redacting_stderr() -> RedactingWriter<std::io::Stderr> {
    RedactingWriter::new(std::io::stderr())
}

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let redacted = crate::redact::redact(&String::from_utf8_lossy(line));
        self.0.write_all(redacted.as_bytes())?;
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Install the JSON subscriber for this process. Calling it twice is
/// harmless (the second call changes nothing). An unparsable `RUST_LOG`
/// falls back to [`DEFAULT_FILTER`] and is reported as a warning event.
pub fn init() -> LogGuard {
    let (filter, bad_filter) = match std::env::var(FILTER_VAR) {
        Ok(v) if !v.trim().is_empty() => match EnvFilter::try_new(&v) {
            Ok(f) => (f, None),
            Err(e) => (EnvFilter::new(DEFAULT_FILTER), Some((v, e))),
        },
        _ => (EnvFilter::new(DEFAULT_FILTER), None),
    };
    let (writer, worker) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("nixery-log")
        .finish(stdout_writer());
    let dropped = writer.error_counter();
    let installed = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(true)
        .with_env_filter(filter)
        .with_writer(writer)
        .try_init()
        .is_ok();
    if installed && let Some((value, error)) = bad_filter {
        tracing::warn!(value, error = %error, "RUST_LOG is invalid, using the default filter");
    }
    LogGuard {
        _worker: worker,
        dropped,
    }
}
