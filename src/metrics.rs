//! Counters of what the registry did, exported at `/metrics` in the
//! Prometheus text format.
//!
//! A handful of monotonic counters (and one gauge) is the whole need, so they are plain
//! atomics rendered by hand (the text format for counters is three lines
//! each) rather than a metrics framework and its registry.

use std::sync::atomic::{AtomicU64, Ordering};

/// Name, help text and accessor of one counter.
type Counter = (&'static str, &'static str, fn(&Metrics) -> &AtomicU64);

/// Declare every counter, then every gauge, once: its field (with its
/// doc), its exported name and its help text. Gives [`Metrics`],
/// `COUNTERS` and `GAUGES`, in output order.
macro_rules! counters {
    (
        $( $(#[doc = $doc:literal])+ $field:ident => $name:literal, $help:literal; )+
        gauges:
        $( $(#[doc = $gdoc:literal])+ $gfield:ident => $gname:literal, $ghelp:literal; )+
    ) => {
        /// Everything counted since start-up. Shared by the builder (which
        /// counts) and the HTTP layer (which renders).
        #[derive(Debug, Default)]
        pub struct Metrics {
            $( $(#[doc = $doc])+ pub $field: AtomicU64, )+
            $( $(#[doc = $gdoc])+ pub $gfield: AtomicU64, )+
        }

        /// Every counter, in output order.
        const COUNTERS: &[Counter] = &[$( ($name, $help, |m| &m.$field) ),+];
        /// Every gauge, in output order (after the counters).
        const GAUGES: &[Counter] = &[$( ($gname, $ghelp, |m| &m.$gfield) ),+];
    };
}

counters! {
    /// Nix steps started (one per image build that was not a cache hit).
    nix_builds => "nixery_nix_builds_total", "Nix steps started for image builds.";
    /// Image builds that failed (missing packages included).
    build_failures => "nixery_build_failures_total", "Image builds that failed.";
    /// Manifests answered from the manifest cache.
    manifest_cache_hits => "nixery_manifest_cache_hits_total",
        "Manifests served from the manifest cache without building.";
    /// Layers packed and uploaded.
    layers_uploaded => "nixery_layers_uploaded_total", "Layers packed and uploaded to storage.";
    /// Compressed bytes of the layers packed and uploaded.
    layer_bytes_uploaded => "nixery_layer_bytes_uploaded_total",
        "Compressed bytes of the layers uploaded to storage.";
    /// Layers found in the cache (their build record existed).
    layer_cache_hits => "nixery_layer_cache_hits_total",
        "Layers whose build record was found, so they were not packed again.";
    /// New builds refused because the build queue was full (429).
    builds_refused => "nixery_builds_refused_total",
        "New image builds refused with 429 because the build queue was full.";
    /// Requests whose credentials were refused (wrong password, invalid
    /// token, malformed header).
    auth_failures => "nixery_auth_failures_total",
        "Requests whose credentials were refused (wrong password, invalid token, malformed header).";
    /// Password checks refused with 429: the client address spent its
    /// allowance.
    auth_rate_limited => "nixery_auth_rate_limited_total",
        "Password checks refused with 429 because the client address spent its allowance.";
    /// Pull tokens issued by the token endpoint.
    tokens_issued => "nixery_tokens_issued_total", "Pull tokens issued by the token endpoint.";
    /// Periodic collections that completed.
    gc_runs => "nixery_gc_runs_total", "Periodic garbage collections that completed.";
    /// Periodic collections that failed.
    gc_failures => "nixery_gc_failures_total", "Periodic garbage collections that failed.";
    /// Objects deleted by periodic collections.
    gc_objects_deleted => "nixery_gc_objects_deleted_total",
        "Objects deleted by periodic garbage collections.";
    /// Bytes deleted by periodic collections.
    gc_bytes_deleted => "nixery_gc_bytes_deleted_total",
        "Bytes deleted by periodic garbage collections.";
    gauges:
    /// Unix time of the last completed periodic collection (0 before the
    /// first).
    gc_last_run => "nixery_gc_last_run_timestamp_seconds",
        "Unix time of the last completed periodic garbage collection (0: none yet).";
}

/// Content type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Metrics {
    /// Add one to `counter`.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Add `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// All counters in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        for (name, help, counter) in COUNTERS.iter().copied() {
            let value = counter(self).load(Ordering::Relaxed);
            text.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
            ));
        }
        for (name, help, gauge) in GAUGES.iter().copied() {
            let value = gauge(self).load(Ordering::Relaxed);
            text.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
            ));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_lists_every_counter_with_help_type_and_value() {
        let metrics = Metrics::default();
        Metrics::inc(&metrics.nix_builds);
        Metrics::add(&metrics.layer_bytes_uploaded, 1234);
        let text = metrics.render();
        assert!(
            text.contains("# TYPE nixery_nix_builds_total counter\nnixery_nix_builds_total 1\n")
        );
        assert!(text.contains("nixery_layer_bytes_uploaded_total 1234\n"));
        assert!(text.contains("nixery_build_failures_total 0\n"));
        let all = COUNTERS.len() + GAUGES.len();
        assert_eq!(text.matches("# HELP ").count(), all);
        assert_eq!(text.matches("# TYPE ").count(), all);
        assert!(text.contains("# TYPE nixery_gc_last_run_timestamp_seconds gauge\n"));
    }
}
