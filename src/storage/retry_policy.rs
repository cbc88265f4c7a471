//! How remote backends retry calls that fail transiently: truncated
//! exponential back-off with jitter, bounded by a number of retries and by
//! a total time. Each backend applies it to its own calls (`gcs` with
//! [`backon`] around each JSON API call, `s3` through OpenDAL's retry
//! layer, which is built on `backon` too).

use std::time::Duration;

use backon::ExponentialBuilder;

/// How failed calls are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait before the first retry (doubled for each further one, with
    /// jitter).
    pub min_delay: Duration,
    /// Longest wait between two attempts.
    pub max_delay: Duration,
    /// Retries after the first attempt.
    pub max_retries: usize,
    /// No retry starts once this much time has passed since the first
    /// attempt.
    pub total: Duration,
}

impl Default for RetryPolicy {
    /// 0.2 s doubling up to 5 s, at most 8 retries, none after 30 s.
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            max_retries: 8,
            total: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }

    /// The back-off schedule of this policy.
    pub fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::new()
            .with_jitter()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_retries)
            .with_total_delay(Some(self.total))
    }
}
