//! Counters of what the registry did, exported at `/metrics` in the
//! Prometheus text format.
//!
//! A handful of monotonic counters is the whole need, so they are plain
//! atomics rendered by hand (the text format for counters is three lines
//! each) rather than a metrics framework and its registry.

use std::sync::atomic::{AtomicU64, Ordering};

/// Everything counted since start-up. Shared by the builder (which counts)
/// and the HTTP layer (which renders).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Nix steps started (one per image build that was not a cache hit).
    pub nix_builds: AtomicU64,
    /// Image builds that failed (missing packages included).
    pub build_failures: AtomicU64,
    /// Manifests answered from the manifest cache.
    pub manifest_cache_hits: AtomicU64,
    /// Layers packed and uploaded.
    pub layers_uploaded: AtomicU64,
    /// Compressed bytes of the layers packed and uploaded.
    pub layer_bytes_uploaded: AtomicU64,
    /// Layers found in the cache (their build record existed).
    pub layer_cache_hits: AtomicU64,
    /// New builds refused because the build queue was full (429).
    pub builds_refused: AtomicU64,
    /// Periodic collections that completed.
    pub gc_runs: AtomicU64,
    /// Periodic collections that failed.
    pub gc_failures: AtomicU64,
    /// Objects deleted by periodic collections.
    pub gc_objects_deleted: AtomicU64,
    /// Bytes deleted by periodic collections.
    pub gc_bytes_deleted: AtomicU64,
    /// Unix time of the last completed periodic collection (a gauge; 0
    /// before the first).
    pub gc_last_run: AtomicU64,
}

/// Name, help text and accessor of one counter.
type Counter = (&'static str, &'static str, fn(&Metrics) -> &AtomicU64);

/// Every counter, in output order.
const COUNTERS: [Counter; 11] = [
    (
        "nixery_nix_builds_total",
        "Nix steps started for image builds.",
        |m| &m.nix_builds,
    ),
    (
        "nixery_build_failures_total",
        "Image builds that failed.",
        |m| &m.build_failures,
    ),
    (
        "nixery_manifest_cache_hits_total",
        "Manifests served from the manifest cache without building.",
        |m| &m.manifest_cache_hits,
    ),
    (
        "nixery_layers_uploaded_total",
        "Layers packed and uploaded to storage.",
        |m| &m.layers_uploaded,
    ),
    (
        "nixery_layer_bytes_uploaded_total",
        "Compressed bytes of the layers uploaded to storage.",
        |m| &m.layer_bytes_uploaded,
    ),
    (
        "nixery_layer_cache_hits_total",
        "Layers whose build record was found, so they were not packed again.",
        |m| &m.layer_cache_hits,
    ),
    (
        "nixery_builds_refused_total",
        "New image builds refused with 429 because the build queue was full.",
        |m| &m.builds_refused,
    ),
    (
        "nixery_gc_runs_total",
        "Periodic garbage collections that completed.",
        |m| &m.gc_runs,
    ),
    (
        "nixery_gc_failures_total",
        "Periodic garbage collections that failed.",
        |m| &m.gc_failures,
    ),
    (
        "nixery_gc_objects_deleted_total",
        "Objects deleted by periodic garbage collections.",
        |m| &m.gc_objects_deleted,
    ),
    (
        "nixery_gc_bytes_deleted_total",
        "Bytes deleted by periodic garbage collections.",
        |m| &m.gc_bytes_deleted,
    ),
];

/// Every gauge, in output order (after the counters).
const GAUGES: [Counter; 1] = [(
    "nixery_gc_last_run_timestamp_seconds",
    "Unix time of the last completed periodic garbage collection (0: none yet).",
    |m| &m.gc_last_run,
)];

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
        for (name, help, counter) in COUNTERS {
            let value = counter(self).load(Ordering::Relaxed);
            text.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
            ));
        }
        for (name, help, gauge) in GAUGES {
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
