//! Staging: where uploads live until they are complete, and the clean-up
//! of what failed uploads and crashes leave there.
//!
//! A staging name is `<pid>-<unix nanos>-<counter>`: the process that owns
//! the upload and when it started. Clean-up removes a staged object only
//! when its owner is gone (a process on this host that no longer runs,
//! used by the filesystem backend) or when it is older than
//! [`STAGING_MAX_AGE`] (every backend): no upload takes that long, and an
//! object still being written is never touched, because it is either a
//! hidden temporary file of a live process (filesystem) or not an object
//! at all until its last chunk is accepted (GCS). Objects whose name this
//! server does not give are removed only by age (filesystem modification
//! time) or left alone (GCS).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use super::Storage;

/// Staged objects older than this are removed whoever owns them.
pub const STAGING_MAX_AGE: Duration = Duration::from_secs(60 * 60);

/// How often a running server cleans staging.
pub const CLEAN_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// A staging name unique to this process and call.
pub fn unique_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{}-{}-{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The owner and start time encoded in a staging name, if it is one.
pub fn parse_name(name: &str) -> Option<(u32, SystemTime)> {
    let mut parts = name.split('-');
    let pid = parts.next()?.parse().ok()?;
    let nanos: u64 = parts.next()?.parse().ok()?;
    parts.next()?.parse::<u64>().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some((pid, UNIX_EPOCH + Duration::from_nanos(nanos)))
}

/// Whether process `pid` runs on this host (it may belong to another user).
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Whether a staged object created at `created` is old enough to remove.
pub fn is_stale(created: SystemTime, max_age: Duration) -> bool {
    SystemTime::now()
        .duration_since(created)
        .is_ok_and(|age| age > max_age)
}

/// Clean `storage`'s staging once now and then every [`CLEAN_INTERVAL`],
/// until the task is dropped. Failures are logged and retried next time.
pub async fn clean_periodically(storage: Arc<dyn Storage>) {
    let mut interval = tokio::time::interval(CLEAN_INTERVAL);
    loop {
        interval.tick().await;
        match storage.clean_staging(STAGING_MAX_AGE).await {
            Ok(0) => {}
            Ok(removed) => {
                tracing::info!(
                    backend = storage.name(),
                    removed,
                    "removed stale staging objects"
                )
            }
            Err(error) => tracing::warn!(
                backend = storage.name(),
                error = %error,
                "staging clean-up failed"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_carry_owner_and_time() {
        let a = unique_name();
        let b = unique_name();
        assert_ne!(a, b);
        let (pid, created) = parse_name(&a).unwrap();
        assert_eq!(pid, std::process::id());
        assert!(!is_stale(created, Duration::from_secs(60)));
        assert!(super::super::StorageKey::staging(&a).is_ok());
    }

    #[test]
    fn other_names_do_not_parse() {
        for name in ["", "x", "1-2", "1-2-3-4", "a-2-3", "1-b-3"] {
            assert!(parse_name(name).is_none(), "{name}");
        }
    }

    #[test]
    fn this_process_is_alive_and_an_unused_pid_is_not() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(0));
        assert!(!process_alive(u32::MAX));
    }
}
