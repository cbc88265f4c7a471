//! Counters of what the registry did, exported at `/metrics` in the
//! Prometheus text format.
//!
//! A handful of monotonic counters, one gauge and one histogram (the
//! duration of each phase of an image build, [`Phase`]) is the whole need,
//! so they are plain atomics rendered by hand (the text format for a
//! counter is three lines) rather than a metrics framework and its
//! registry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
            /// How long each phase of image builds took.
            pub phases: PhaseHistogram,
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
        self.phases.render_into(&mut text);
        text
    }

    /// Count one `phase` that took `took`.
    pub fn observe_phase(&self, phase: Phase, took: Duration) {
        self.phases.observe(phase, took);
    }
}

/// A phase of producing an image, as `nixery_build_phase_seconds` labels
/// it. Packing and uploading a layer are one streamed step (the packer's
/// output is the upload's body), so they are one phase, `layers`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Resolving the package source for a request's tag (every request by
    /// tag, cache hits included; mostly answered from the resolver's cache).
    Resolve,
    /// Evaluating the package names and realising the packages
    /// (`nix-build`).
    Realise,
    /// Reading the runtime graph from the Nix store (`nix path-info`).
    Graph,
    /// Computing the symlink layer and the main program.
    SymlinkLayer,
    /// Grouping the closure into layers.
    Grouping,
    /// Packing and uploading every layer not stored yet, the symlink layer
    /// included.
    Layers,
    /// Storing the config, both manifests and the SBOM, and caching the
    /// manifests.
    Manifest,
}

impl Phase {
    /// Every phase, in build order.
    pub const ALL: [Phase; 7] = [
        Phase::Resolve,
        Phase::Realise,
        Phase::Graph,
        Phase::SymlinkLayer,
        Phase::Grouping,
        Phase::Layers,
        Phase::Manifest,
    ];

    /// The `phase` label.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Resolve => "resolve",
            Phase::Realise => "realise",
            Phase::Graph => "graph",
            Phase::SymlinkLayer => "symlink_layer",
            Phase::Grouping => "grouping",
            Phase::Layers => "layers",
            Phase::Manifest => "manifest",
        }
    }
}

/// Upper bounds (seconds) of the phase histogram's buckets: from the
/// milliseconds of a warm resolution to the minutes of a large Nix build.
const PHASE_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 300.0,
];

/// `nixery_build_phase_seconds`: per phase, a cumulative count per bucket,
/// the total count and the sum (in microseconds).
#[derive(Debug, Default)]
pub struct PhaseHistogram {
    buckets: [[AtomicU64; PHASE_BUCKETS.len()]; Phase::ALL.len()],
    count: [AtomicU64; Phase::ALL.len()],
    sum_micros: [AtomicU64; Phase::ALL.len()],
}

impl PhaseHistogram {
    fn observe(&self, phase: Phase, took: Duration) {
        let i = phase as usize;
        let seconds = took.as_secs_f64();
        for (bound, bucket) in PHASE_BUCKETS.iter().zip(&self.buckets[i]) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count[i].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros[i].fetch_add(micros, Ordering::Relaxed);
    }

    fn render_into(&self, text: &mut String) {
        let name = "nixery_build_phase_seconds";
        text.push_str(&format!(
            "# HELP {name} Time spent in each phase of producing images (resolve per request; the rest per build).\n# TYPE {name} histogram\n"
        ));
        for phase in Phase::ALL {
            let i = phase as usize;
            let label = phase.label();
            for (bound, bucket) in PHASE_BUCKETS.iter().zip(&self.buckets[i]) {
                let value = bucket.load(Ordering::Relaxed);
                text.push_str(&format!(
                    "{name}_bucket{{phase=\"{label}\",le=\"{bound}\"}} {value}\n"
                ));
            }
            let count = self.count[i].load(Ordering::Relaxed);
            let sum = self.sum_micros[i].load(Ordering::Relaxed) as f64 / 1e6;
            text.push_str(&format!(
                "{name}_bucket{{phase=\"{label}\",le=\"+Inf\"}} {count}\n{name}_sum{{phase=\"{label}\"}} {sum}\n{name}_count{{phase=\"{label}\"}} {count}\n"
            ));
        }
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
        let all = COUNTERS.len() + GAUGES.len() + 1;
        assert_eq!(text.matches("# HELP ").count(), all);
        assert_eq!(text.matches("# TYPE ").count(), all);
        assert!(text.contains("# TYPE nixery_gc_last_run_timestamp_seconds gauge\n"));
    }

    #[test]
    fn phases_render_as_one_cumulative_histogram_with_a_phase_label() {
        let metrics = Metrics::default();
        metrics.observe_phase(Phase::Realise, Duration::from_millis(30));
        metrics.observe_phase(Phase::Realise, Duration::from_millis(300));
        let text = metrics.render();
        assert_eq!(
            text.matches("# TYPE nixery_build_phase_seconds histogram\n")
                .count(),
            1
        );
        for line in [
            "nixery_build_phase_seconds_bucket{phase=\"realise\",le=\"0.025\"} 0\n",
            "nixery_build_phase_seconds_bucket{phase=\"realise\",le=\"0.05\"} 1\n",
            "nixery_build_phase_seconds_bucket{phase=\"realise\",le=\"0.5\"} 2\n",
            "nixery_build_phase_seconds_bucket{phase=\"realise\",le=\"+Inf\"} 2\n",
            "nixery_build_phase_seconds_sum{phase=\"realise\"} 0.33\n",
            "nixery_build_phase_seconds_count{phase=\"realise\"} 2\n",
            "nixery_build_phase_seconds_count{phase=\"graph\"} 0\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        for phase in Phase::ALL {
            assert!(text.contains(&format!("_count{{phase=\"{}\"}}", phase.label())));
        }
    }
}
