//! Retrying transient failures of JSON API calls: truncated exponential
//! back-off with jitter (Google's guidance for Cloud Storage), with
//! [`backon`] doing the schedule, for `408`, `429`, `5xx`, timeouts and
//! broken connections. Every call is safe to repeat: uploads replace whole
//! objects whose content is fixed by their name, copies and deletes are
//! idempotent, and a resumable upload asks the server where it stands
//! before sending more ([`super::upload`]).
//!
//! The total time spent is bounded twice: by the number of attempts and by
//! [`RetryPolicy::total`], after which the last error is returned.

use std::future::Future;
use std::time::{Duration, Instant};

use super::error::ApiError;
use backon::Retryable;

pub use crate::storage::retry_policy::RetryPolicy;

impl RetryPolicy {
    /// Runs `call` until it succeeds, fails permanently, or the policy
    /// is exhausted; `what` and `object` name the call in the logs.
    pub(crate) async fn run<T, F, Fut>(
        &self,
        what: &'static str,
        object: &str,
        call: F,
    ) -> Result<T, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let started = Instant::now();
        let total = self.total;
        call.retry(self.backoff())
            .sleep(tokio::time::sleep)
            .when(|error: &ApiError| error.is_transient() && started.elapsed() < total)
            .notify(|error: &ApiError, delay: Duration| {
                tracing::warn!(
                    backend = "gcs",
                    call = what,
                    object,
                    error = %error,
                    retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "storage call failed, retrying"
                );
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use reqwest::StatusCode;

    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn quick() -> RetryPolicy {
        RetryPolicy {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            max_retries: 3,
            total: Duration::from_secs(5),
        }
    }

    fn status(code: u16) -> ApiError {
        ApiError::Status {
            status: StatusCode::from_u16(code).unwrap(),
            body: String::new(),
        }
    }

    #[test]
    fn only_transient_failures_are_retried() {
        for code in [408, 429, 500, 502, 503, 504] {
            assert!(status(code).is_transient(), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 412] {
            assert!(!status(code).is_transient(), "{code}");
        }
        assert!(ApiError::Transport("reset".into()).is_transient());
        assert!(ApiError::Timeout(Duration::from_secs(1)).is_transient());
        assert!(!ApiError::Protocol("bad".into()).is_transient());
    }

    #[tokio::test]
    async fn a_transient_failure_is_retried_until_success() {
        let calls = AtomicUsize::new(0);
        let result = quick()
            .run("test", "o", || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 => Err(status(503)),
                    1 => Err(ApiError::Transport("reset".into())),
                    _ => Ok(7),
                }
            })
            .await;
        assert_eq!(result.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    /// Runs a call that always fails with `code` under [`quick`]: its
    /// result and how many times it was made.
    async fn always_failing(code: u16) -> (Result<(), ApiError>, usize) {
        let calls = AtomicUsize::new(0);
        let result = quick()
            .run("test", "o", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(status(code))
            })
            .await;
        (result, calls.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn retries_stop_at_the_bound_and_permanent_failures_at_once() {
        let (result, calls) = always_failing(503).await;
        assert!(result.is_err());
        assert_eq!(calls, 4);

        let (result, calls) = always_failing(404).await;
        assert!(result.unwrap_err().is_not_found());
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn no_retry_starts_after_the_total_time() {
        let policy = RetryPolicy {
            total: Duration::from_millis(50),
            max_retries: 1000,
            ..quick()
        };
        let started = Instant::now();
        let result: Result<(), _> = policy
            .run("test", "o", || async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Err(status(500))
            })
            .await;
        assert!(result.is_err());
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
