//! The error of a Cloud Storage JSON API call, and which ones are worth
//! retrying. Its own module, so that the calls ([`super::api`]) and their
//! retrying ([`super::retry`]) both use it without using each other.

use std::time::Duration;

use reqwest::StatusCode;

/// A failed JSON API call.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// The server answered with an unexpected status.
    #[error("HTTP {status}: {body}")]
    Status { status: StatusCode, body: String },
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection failed (refused, reset, DNS, TLS).
    #[error("request failed: {0}")]
    Transport(String),
    /// No access token could be obtained.
    #[error("{0}")]
    Auth(String),
    /// The server's answer could not be understood.
    #[error("unexpected answer: {0}")]
    Protocol(String),
}

impl ApiError {
    /// True for a `412 Precondition Failed` answer (a conditional write
    /// found the object there).
    pub(crate) fn is_precondition_failed(&self) -> bool {
        matches!(self, ApiError::Status { status, .. } if *status == StatusCode::PRECONDITION_FAILED)
    }

    /// True for a `404 Not Found` answer.
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, ApiError::Status { status, .. } if *status == StatusCode::NOT_FOUND)
    }

    /// True for failures that may pass: `408`, `429`, `5xx`, no answer in
    /// time, or a broken connection.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            ApiError::Status { status, .. } => {
                *status == StatusCode::REQUEST_TIMEOUT
                    || *status == StatusCode::TOO_MANY_REQUESTS
                    || status.is_server_error()
            }
            ApiError::Timeout(_) | ApiError::Transport(_) => true,
            ApiError::Auth(_) | ApiError::Protocol(_) => false,
        }
    }
}
