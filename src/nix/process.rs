//! Running one Nix process: its own process group (so that everything it
//! starts can be stopped together), bounded reading of its output, and
//! clean-up when the deadline passes or the caller gives up.
//!
//! Every live group is also in a process-wide registry, so that shutdown
//! can stop them all ([`stop_all`]) before the process exits: build tasks
//! are dropped when the runtime stops, too late for their own clean-up.

use parking_lot::{Mutex, MutexGuard};
use std::collections::{BTreeSet, VecDeque};
use std::io;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use tokio::process::Child;

/// Longest output line kept; the rest of a longer line is dropped.
pub const MAX_LINE_BYTES: usize = 4096;

/// How long Nix gets after SIGTERM to stop its builds before the group is
/// killed.
pub const TERMINATE_GRACE: Duration = Duration::from_secs(5);

/// A child process leading its own process group. Unless the child has
/// been waited for, dropping this terminates the whole group (SIGTERM, then
/// SIGKILL after [`TERMINATE_GRACE`]).
pub struct ProcessGroup {
    child: Option<Child>,
    pgid: Option<libc::pid_t>,
    finished: bool,
}

impl ProcessGroup {
    /// Take charge of `child`, which must have been spawned with
    /// `process_group(0)`.
    pub fn new(child: Child) -> ProcessGroup {
        let pgid = child.id().and_then(|pid| libc::pid_t::try_from(pid).ok());
        if let Some(pgid) = pgid {
            live_groups().insert(pgid);
        }
        ProcessGroup {
            child: Some(child),
            pgid,
            finished: false,
        }
    }

    /// Wait for the group leader to exit.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| io::Error::other("process already reaped"))?;
        let status = child.wait().await?;
        self.finished = true;
        forget_group(self.pgid);
        Ok(status)
    }

    /// Ask the group to stop (SIGTERM, which lets Nix stop its builders),
    /// and kill it if the leader has not exited after [`TERMINATE_GRACE`].
    pub async fn terminate(&mut self) {
        if self.finished {
            return;
        }
        signal_group(self.pgid, libc::SIGTERM);
        if let Some(child) = self.child.as_mut()
            && tokio::time::timeout(TERMINATE_GRACE, child.wait())
                .await
                .is_err()
        {
            signal_group(self.pgid, libc::SIGKILL);
            let _ = child.wait().await;
        }
        // Anything left in the group after its leader exited.
        signal_group(self.pgid, libc::SIGKILL);
        self.finished = true;
        forget_group(self.pgid);
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        signal_group(self.pgid, libc::SIGTERM);
        let pgid = self.pgid;
        let child = self.child.take();
        match (tokio::runtime::Handle::try_current(), child) {
            (Ok(runtime), Some(mut child)) => {
                // The child is reaped only here, so the group id cannot be
                // reused before the SIGKILL.
                runtime.spawn(async move {
                    if tokio::time::timeout(TERMINATE_GRACE, child.wait())
                        .await
                        .is_err()
                    {
                        signal_group(pgid, libc::SIGKILL);
                        let _ = child.wait().await;
                    }
                    forget_group(pgid);
                });
            }
            _ => {
                signal_group(pgid, libc::SIGKILL);
                forget_group(pgid);
            }
        }
    }
}

/// The process groups started and not yet reaped.
fn live_groups() -> MutexGuard<'static, BTreeSet<libc::pid_t>> {
    static LIVE: Mutex<BTreeSet<libc::pid_t>> = Mutex::new(BTreeSet::new());
    LIVE.lock()
}

fn forget_group(pgid: Option<libc::pid_t>) {
    if let Some(pgid) = pgid {
        live_groups().remove(&pgid);
    }
}

/// Number of Nix process groups running now.
pub fn running_groups() -> usize {
    live_groups().len()
}

/// Stop every running process group: SIGTERM (Nix stops its builds), then
/// SIGKILL for any still running after `grace`. Returns once every group
/// has been reaped by its owner or, after the SIGKILL, at most one more
/// second later. Call it on a runtime that still drives the build tasks
/// (they reap their children).
pub async fn stop_all(grace: Duration) {
    // The two steps of the escalation: the signal, then how long to wait
    // for the groups to be reaped.
    let steps = [
        (libc::SIGTERM, grace),
        (libc::SIGKILL, Duration::from_secs(1)),
    ];
    for (signal, wait) in steps {
        let groups: Vec<libc::pid_t> = live_groups().iter().copied().collect();
        if groups.is_empty() {
            return;
        }
        if signal == libc::SIGTERM {
            tracing::info!(groups = groups.len(), "stopping Nix before exit");
        } else {
            tracing::warn!(
                groups = groups.len(),
                "Nix did not stop in time, killing it"
            );
        }
        for &pgid in &groups {
            signal_group(Some(pgid), signal);
        }
        let deadline = Instant::now() + wait;
        while running_groups() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Send `signal` to every process of group `pgid`.
fn signal_group(pgid: Option<libc::pid_t>, signal: libc::c_int) {
    if let Some(pgid) = pgid.filter(|&p| p > 1) {
        // SAFETY: kill(2) has no memory-safety preconditions; a negative pid
        // addresses the process group, whose leader we have not reaped yet
        // or have only just reaped.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}

/// The last lines of a process's output.
#[derive(Debug, Default)]
pub struct Tail {
    lines: VecDeque<String>,
    capacity: usize,
}

impl Tail {
    /// Keep at most `capacity` lines.
    pub fn new(capacity: usize) -> Tail {
        Tail {
            lines: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// Add a line, dropping the oldest beyond the capacity.
    pub fn push(&mut self, line: String) {
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    /// The kept lines joined with newlines.
    pub fn joined(&self) -> String {
        self.lines
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Call `on_line` with every line of `reader` (without its newline, lossily
/// decoded, cut at [`MAX_LINE_BYTES`]). Hand-written rather than
/// `AsyncBufReadExt::lines` because that one buffers lines of any length.
pub async fn for_each_line<R, F>(mut reader: R, mut on_line: F) -> io::Result<()>
where
    R: AsyncBufRead + Unpin,
    F: FnMut(String),
{
    let mut line: Vec<u8> = Vec::new();
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            if !line.is_empty() {
                on_line(String::from_utf8_lossy(&line).into_owned());
            }
            return Ok(());
        }
        let (chunk, consumed, complete) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], i + 1, true),
            None => (buf, buf.len(), false),
        };
        let room = MAX_LINE_BYTES.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        reader.consume(consumed);
        if complete {
            on_line(String::from_utf8_lossy(&line).into_owned());
            line.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines_of(input: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for_each_line(input, |l| lines.push(l)).await.unwrap();
        lines
    }

    #[tokio::test]
    async fn lines_are_split_on_newlines_and_the_last_one_is_kept() {
        assert_eq!(lines_of(b"a\nbb\n\nccc").await, ["a", "bb", "", "ccc"]);
        assert!(lines_of(b"").await.is_empty());
    }

    #[tokio::test]
    async fn long_lines_are_cut_and_invalid_utf8_is_replaced() {
        let mut input = vec![b'x'; MAX_LINE_BYTES * 3];
        input.extend_from_slice(b"\n\xff\n");
        let lines = lines_of(&input).await;
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), MAX_LINE_BYTES);
        assert_eq!(lines[1], "\u{fffd}");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let mut tail = Tail::new(2);
        for l in ["one", "two", "three"] {
            tail.push(l.to_string());
        }
        assert_eq!(tail.joined(), "two\nthree");
        assert!(tail.joined().contains("thr"));
        assert!(!tail.joined().contains("one"));
    }
}
