//! Reading the htpasswd file again without a restart: when it changes
//! (its size, modification time or inode, looked at every [`POLL`], which
//! also sees a Kubernetes secret's symlink swap) or at once on `SIGHUP`.
//! Each reload logs `htpasswd reloaded` with the user count and what
//! triggered it, or `htpasswd reload failed` and keeps the previous users.
//! Metadata polling rather than inotify: it needs no watch on a directory
//! that may be replaced, and costs one `stat` per poll.

use std::{sync::Arc, time::Duration};

use super::Auth;

/// How often the file's metadata is compared with the last read's.
pub const POLL: Duration = Duration::from_secs(2);
/// How often idle client addresses are dropped from the login allowance.
const FORGET_EVERY: u32 = 30;

/// Start watching `auth`'s htpasswd file (on the current runtime). The
/// `SIGHUP` handler is installed before this returns, so a signal sent
/// after it is never the default action (exit).
pub fn watch(auth: Arc<Auth>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => Some(hangup),
        Err(error) => {
            tracing::warn!(error = %error, "cannot listen for SIGHUP; the htpasswd file is still polled");
            None
        }
    };
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(POLL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut count = 0u32;
        loop {
            let signalled = tokio::select! {
                _ = ticks.tick() => false,
                Some(()) = async {
                    match hangup.as_mut() {
                        Some(hangup) => hangup.recv().await,
                        None => std::future::pending().await,
                    }
                } => true,
            };
            count = count.wrapping_add(1);
            if count.is_multiple_of(FORGET_EVERY) {
                auth.forget_idle_clients();
            }
            let trigger = if signalled { "SIGHUP" } else { "change" };
            match auth.reload(signalled) {
                Ok(None) => {}
                Ok(Some(users)) => tracing::info!(users, trigger, "htpasswd reloaded"),
                Err(error) => {
                    tracing::error!(error = %error, trigger, "htpasswd reload failed, keeping the previous users")
                }
            }
        }
    });
}
