//! Value parsers shared by the settings tables. Each takes the raw value
//! and answers [`Parsed`]: unset when empty, the value, or what was
//! expected (the error names the variable, see [`super::ConfigError`]).
//! Text is trimmed before it is parsed; a string value is kept as given.

use std::{ffi::OsStr, path::PathBuf, time::Duration};

use super::Parsed;

/// The value as text, `None` when it is empty or blank.
pub fn text(raw: &OsStr) -> Parsed<&str> {
    match raw.to_str() {
        None => Err("expected UTF-8 text"),
        Some(value) if value.trim().is_empty() => Ok(None),
        Some(value) => Ok(Some(value)),
    }
}

/// Parse the trimmed text with `parse`, answering `expected` on failure.
pub fn trimmed<T>(
    raw: &OsStr,
    expected: &'static str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Parsed<T> {
    match text(raw)? {
        None => Ok(None),
        Some(value) => parse(value.trim()).map(Some).ok_or(expected),
    }
}

/// Any text, kept as given.
pub fn string(raw: &OsStr) -> Parsed<Option<String>> {
    Ok(text(raw)?.map(|value| Some(value.to_owned())))
}

/// Any text, trimmed.
pub fn trimmed_string(raw: &OsStr) -> Parsed<String> {
    Ok(text(raw)?.map(|value| value.trim().to_owned()))
}

/// A path (any bytes), unset only when empty.
pub fn path(raw: &OsStr) -> Parsed<Option<PathBuf>> {
    Ok((!raw.is_empty()).then(|| Some(PathBuf::from(raw))))
}

/// A whole number of seconds of at least 1.
pub fn seconds(raw: &OsStr) -> Parsed<Duration> {
    trimmed(
        raw,
        "expected a whole number of seconds of at least 1",
        |v| {
            v.parse::<u64>()
                .ok()
                .filter(|&secs| secs > 0)
                .map(Duration::from_secs)
        },
    )
}

/// A positive duration in Go's notation (`time.ParseDuration`, what
/// upstream Nixery reads): a sequence of decimal numbers, each with a unit
/// `ns`, `us` (`µs`), `ms`, `s`, `m` or `h`, such as `5m`, `90s`, `1h30m`
/// or `1.5h`. Parsed with jiff's "friendly" duration format, of which
/// Go's notation is a subset.
pub fn go_duration(raw: &OsStr) -> Parsed<Duration> {
    trimmed(
        raw,
        "expected a positive duration such as 5m, 90s or 1h30m",
        |v| {
            // jiff also reads ISO 8601 (`PT5M`) and days; Go does not.
            let go_units = v
                .bytes()
                .all(|b| b.is_ascii_digit() || b".nsumh".contains(&b) || !b.is_ascii());
            let duration = v.parse::<jiff::SignedDuration>().ok()?;
            let duration = Duration::try_from(duration).ok()?;
            (go_units && !duration.is_zero()).then_some(duration)
        },
    )
}

/// Text kept as given, never refused: for a secret, whose value must not
/// be echoed in an error (bytes that are not UTF-8 are replaced).
pub fn secret(raw: &OsStr) -> Parsed<Option<String>> {
    let value = raw.to_string_lossy();
    Ok((!value.trim().is_empty()).then(|| Some(value.into_owned())))
}

/// A whole number of seconds, 0 allowed (for a time to live).
pub fn ttl_seconds(raw: &OsStr) -> Parsed<Duration> {
    trimmed(
        raw,
        "expected a whole number of seconds (0 resolves on every pull)",
        |v| v.parse::<u64>().ok().map(Duration::from_secs),
    )
}

/// A whole number of at least 1.
pub fn positive(raw: &OsStr) -> Parsed<usize> {
    trimmed(raw, "expected a whole number of at least 1", |v| {
        v.parse::<usize>().ok().filter(|&n| n > 0)
    })
}

/// A whole number, 0 allowed.
pub fn count(raw: &OsStr) -> Parsed<usize> {
    trimmed(raw, "expected a whole number (0 or more)", |v| {
        v.parse::<usize>().ok()
    })
}

/// `true`/`1`/`yes` or `false`/`0`/`no`, in any case.
pub fn boolean(raw: &OsStr) -> Parsed<bool> {
    trimmed(raw, "expected true or false", |v| {
        match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" => Some(false),
            _ => None,
        }
    })
}

/// The number of cores, the default of the concurrency settings.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
