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
//! Every line goes through [`crate::redact`] on its way out, so that no
//! event (ours, or a dependency's quoting a URL) writes credentials or
//! query tokens to the log.

use std::io::{self, Write};

use tracing_subscriber::{EnvFilter, fmt::MakeWriter};

/// Default filter when `RUST_LOG` is unset.
pub const DEFAULT_FILTER: &str = "info";

/// Install the JSON subscriber for this process. Calling it twice is
/// harmless (the second call changes nothing). An unparsable `RUST_LOG`
/// falls back to [`DEFAULT_FILTER`] and is reported as a warning event.
pub fn init() {
    let (filter, bad_filter) = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => match EnvFilter::try_new(&v) {
            Ok(f) => (f, None),
            Err(e) => (EnvFilter::new(DEFAULT_FILTER), Some((v, e))),
        },
        _ => (EnvFilter::new(DEFAULT_FILTER), None),
    };
    let installed = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(true)
        .with_env_filter(filter)
        .with_writer(RedactingStdout)
        .try_init()
        .is_ok();
    if installed && let Some((value, error)) = bad_filter {
        tracing::warn!(value, error = %error, "RUST_LOG is invalid, using the default filter");
    }
}

/// Makes a [`RedactedLine`] writer per event.
struct RedactingStdout;

impl<'a> MakeWriter<'a> for RedactingStdout {
    type Writer = RedactedLine;

    fn make_writer(&'a self) -> Self::Writer {
        RedactedLine(Vec::with_capacity(256))
    }
}

/// Collects one formatted event and writes it, redacted, to stdout when
/// dropped (one `write_all`, so concurrent events do not interleave).
struct RedactedLine(Vec<u8>);

impl Write for RedactedLine {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactedLine {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let line = crate::redact::redact(&String::from_utf8_lossy(&self.0));
        let _ = io::stdout().lock().write_all(line.as_bytes());
    }
}
