//! Settings of garbage collection (see [`crate::gc`]): the periodic runs
//! of the server and how often servers record use.

use std::{ffi::OsStr, time::Duration};

use super::{ConfigError, Parsed, ServeSettings, parse};

/// Default `NIXERY_GC_INTERVAL`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Default `NIXERY_GC_GRACE` and `nixery gc --grace`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);
/// Default `NIXERY_GC_TOUCH_INTERVAL`.
pub const DEFAULT_TOUCH_INTERVAL: Duration = Duration::from_secs(3600);
/// Default `nixery gc --keep`.
pub const DEFAULT_KEEP: Duration = Duration::from_secs(30 * 86_400);

/// What a duration setting expects.
const EXPECTED_DURATION: &str = "expected a duration such as 45s, 10m, 12h or 30d";

crate::settings! {
    /// Collect periodically, keeping images pulled within this long (45s,
    /// 10m, 12h, 30d) [default: unset, no periodic collection].
    KEEP: Option<Duration> = {
        env: "NIXERY_GC_KEEP", flag: "gc-keep", value_name: "DURATION",
        default: None, parse: |raw| Ok(optional_duration(raw)?.map(Some)),
    };
    /// Time between periodic collections [default: 24h].
    INTERVAL: Duration = {
        env: "NIXERY_GC_INTERVAL", flag: "gc-interval", value_name: "DURATION",
        default: DEFAULT_INTERVAL, parse: optional_duration,
    };
    /// Objects younger than this are never collected by periodic runs
    /// [default: 1h].
    GRACE: Duration = {
        env: "NIXERY_GC_GRACE", flag: "gc-grace", value_name: "DURATION",
        default: DEFAULT_GRACE, parse: optional_duration,
    };
    /// Use of an image is written to storage at most this often [default: 1h].
    TOUCH_INTERVAL: Duration = {
        env: "NIXERY_GC_TOUCH_INTERVAL", flag: "gc-touch-interval", value_name: "DURATION",
        default: DEFAULT_TOUCH_INTERVAL, parse: optional_duration,
    };
}

/// A positive duration such as `45s`, `10m`, `12h` or `30d` (humantime's
/// syntax), or why not.
pub fn duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text.trim()) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        Ok(_) => Err("a duration must be longer than zero".to_owned()),
        Err(error) => Err(error.to_string()),
    }
}

fn optional_duration(raw: &OsStr) -> Parsed<Duration> {
    parse::trimmed(raw, EXPECTED_DURATION, |text| duration(text).ok())
}

/// Garbage collection settings of the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcSettings {
    /// Periodic collection keeps images used within this long; `None`
    /// turns periodic collection off (`NIXERY_GC_KEEP`).
    pub keep: Option<Duration>,
    /// Time between periodic collections (`NIXERY_GC_INTERVAL`).
    pub interval: Duration,
    /// Objects younger than this are never collected (`NIXERY_GC_GRACE`).
    pub grace: Duration,
    /// A use mark is rewritten at most this often
    /// (`NIXERY_GC_TOUCH_INTERVAL`).
    pub touch_interval: Duration,
}

/// The shortest `keep` a collection accepts: twice its notice period, so
/// that images served while servers learn of the collection are kept.
pub fn min_keep(touch_interval: Duration) -> Duration {
    2 * crate::gc::watch::notice_period(touch_interval)
}

/// The GC settings, `NIXERY_GC_KEEP` at least [`min_keep`].
pub fn gc_settings(settings: &ServeSettings) -> Result<GcSettings, ConfigError> {
    let touch_interval = settings.get(&TOUCH_INTERVAL)?;
    let keep = settings.get(&KEEP)?;
    if let Some(keep) = keep
        && keep < min_keep(touch_interval)
    {
        return Err(ConfigError::Invalid {
            var: KEEP.info.env,
            value: humantime::format_duration(keep).to_string(),
            expected: "expected at least twice the notice period (6 times NIXERY_GC_TOUCH_INTERVAL, at most 60s)",
        });
    }
    Ok(GcSettings {
        keep,
        interval: settings.get(&INTERVAL)?,
        grace: settings.get(&GRACE)?,
        touch_interval,
    })
}
