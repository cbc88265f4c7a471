//! Periodic collection inside the server (`NIXERY_GC_KEEP` set), and what
//! the status page and `/metrics` say about it.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use parking_lot::Mutex;

use super::{GcError, Options, Policy, Report, collect, watch::notice_period};
use crate::{config::GcSettings, metrics::Metrics, storage::Storage};

/// The last periodic run, for the status page.
#[derive(Clone, Debug)]
struct LastRun {
    at: SystemTime,
    outcome: Result<(usize, u64), String>,
}

/// What the status page shows about collection.
#[derive(Debug, Default)]
pub struct GcStatus {
    settings: Option<(Duration, Duration)>,
    last: Mutex<Option<LastRun>>,
}

impl GcStatus {
    /// Status of a server collecting every `interval`, keeping `keep`.
    pub fn periodic(keep: Duration, interval: Duration) -> Self {
        Self {
            settings: Some((keep, interval)),
            last: Mutex::new(None),
        }
    }

    /// One line for the status page.
    pub fn describe(&self) -> String {
        let Some((keep, interval)) = self.settings else {
            return "periodic collection off (NIXERY_GC_KEEP unset)".to_owned();
        };
        let plan = format!(
            "every {}, keeping images used within {}",
            humantime::format_duration(interval),
            humantime::format_duration(keep)
        );
        match &*self.last.lock() {
            None => format!("{plan}; not run yet"),
            Some(LastRun {
                at,
                outcome: Ok((objects, bytes)),
            }) => format!(
                "{plan}; last run {}: deleted {objects} objects, {bytes} bytes",
                crate::status::format_utc(*at)
            ),
            Some(LastRun {
                at,
                outcome: Err(error),
            }) => format!(
                "{plan}; last run {} failed: {error}",
                crate::status::format_utc(*at)
            ),
        }
    }

    fn record(&self, outcome: Result<(usize, u64), String>) {
        *self.last.lock() = Some(LastRun {
            at: SystemTime::now(),
            outcome,
        });
    }
}

/// Collect `storage` every `settings.interval` (the first run one interval
/// after start-up) until the task is dropped. A run that finds another
/// collection running is skipped.
pub async fn run(
    storage: Arc<dyn Storage>,
    settings: GcSettings,
    local_tier: Option<PathBuf>,
    metrics: Arc<Metrics>,
    status: Arc<GcStatus>,
) {
    let Some(keep) = settings.keep else { return };
    let options = Options {
        local_tier,
        ..Options::new(
            Policy {
                keep,
                grace: settings.grace,
                touch_interval: settings.touch_interval,
            },
            notice_period(settings.touch_interval),
        )
    };
    let mut ticks = tokio::time::interval(settings.interval);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let mut log = |deletion: &super::Deletion| {
            tracing::info!(object = %deletion.name, kind = deletion.kind.plural(), size = deletion.size, "collected");
        };
        match collect(storage.clone(), &options, &mut log).await {
            Ok(report) => {
                record_metrics(&metrics, &report);
                tracing::info!(
                    generation = report.generation,
                    objects = report.objects(),
                    bytes = report.bytes(),
                    kept = report.kept,
                    elapsed_ms = report.elapsed.as_millis() as u64,
                    "collection finished"
                );
                status.record(Ok((report.objects(), report.bytes())));
            }
            Err(GcError::Busy(busy)) => {
                tracing::info!(reason = %busy, "periodic collection skipped");
            }
            Err(error) => {
                Metrics::inc(&metrics.gc_failures);
                let detail = crate::error_text::chain(&error);
                tracing::error!(error = %detail, "collection failed");
                status.record(Err(detail));
            }
        }
    }
}

fn record_metrics(metrics: &Metrics, report: &Report) {
    Metrics::inc(&metrics.gc_runs);
    Metrics::add(&metrics.gc_objects_deleted, report.objects() as u64);
    Metrics::add(&metrics.gc_bytes_deleted, report.bytes());
    metrics.gc_last_run.store(
        super::generation::unix_secs(SystemTime::now()),
        std::sync::atomic::Ordering::Relaxed,
    );
}
