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

use tracing_subscriber::EnvFilter;

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
        .with_writer(std::io::stdout)
        .try_init()
        .is_ok();
    if installed && let Some((value, error)) = bad_filter {
        tracing::warn!(value, error = %error, "RUST_LOG is invalid, using the default filter");
    }
}
