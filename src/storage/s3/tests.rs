//! Redaction happens at the outputs only: an S3 error keeps OpenDAL's
//! account of the call (presigned query included) inside the server, and
//! the log writer, the error body and the status page each mask it.

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use axum::response::IntoResponse;

use super::{ErrorKind, StorageKey, backend_error};
use crate::{
    build_errors::{BuildErrorEntry, FailureKind},
    http::error::RegistryError,
    logging::RedactingWriter,
    status::StatusInfo,
};

const SIGNATURE: &str = "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7";
const CREDENTIAL: &str = "AKIAIOSFODNN7EXAMPLE%2F20261201%2Fus-east-1%2Fs3%2Faws4_request";

/// A backend failure whose context quotes a presigned URL, as OpenDAL
/// quotes the URI of the request that failed.
fn presigned_failure() -> crate::storage::StorageError {
    let uri = format!(
        "https://bucket.s3.amazonaws.com/layers/ab?X-Amz-Algorithm=AWS4-HMAC-SHA256\
         &X-Amz-Credential={CREDENTIAL}&X-Amz-Signature={SIGNATURE}"
    );
    let error =
        opendal::Error::new(ErrorKind::Unexpected, "request failed").with_context("uri", uri);
    let key = StorageKey::layer(&crate::digest::Digest::of(b"blob"));
    backend_error(&key, "download failed", &error)
}

fn assert_no_secret(output: &str, text: &str) {
    for secret in [SIGNATURE, "AKIAIOSFODNN7EXAMPLE"] {
        assert!(!text.contains(secret), "{secret} in the {output}: {text}");
    }
}

/// A log sink the test can read back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_presigned_url_in_a_backend_error_reaches_no_output() {
    let error = presigned_failure();
    // Inside, nothing is masked: the error is whole until it is shown.
    assert!(error.to_string().contains(SIGNATURE), "{error}");

    // The log: the client error logs its detail through the log writer.
    let log = Captured::default();
    let sink = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || RedactingWriter::new(sink.clone()))
        .finish();
    let response = tracing::subscriber::with_default(subscriber, || {
        RegistryError::from(presigned_failure()).into_response()
    });
    let log = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("X-Amz-Signature=***"), "{log}");
    assert_no_secret("log", &log);

    // The error body.
    assert_eq!(response.status(), 503);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let body = runtime
        .block_on(axum::body::to_bytes(response.into_body(), 1 << 16))
        .unwrap();
    assert_no_secret("error body", &String::from_utf8_lossy(&body));

    // The status page: a build that failed storing, and a collection.
    let entry = BuildErrorEntry {
        image: "hello:latest".into(),
        kind: FailureKind::Storage,
        message: crate::error_text::chain(&error),
        at: SystemTime::UNIX_EPOCH,
    };
    let mut page =
        StatusInfo::new("built-in offline package set".into(), "s3").page(None, &[entry]);
    page.collection = format!("last run failed: {error}");
    let html = page.render();
    assert!(html.contains("X-Amz-Signature=***"), "{html}");
    assert_no_secret("status page", &html);
}
