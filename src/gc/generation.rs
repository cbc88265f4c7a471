//! The collection generation: one small object, `gc/generation`, through
//! which a collection tells every serving instance what it is doing, and
//! which is also the lease that lets only one collection run at a time.
//!
//! **One object, written only by compare-and-swap.** Every write of
//! `gc/generation` names the version it replaces ([`Storage::write_if`]:
//! S3 `If-Match` on the ETag or `If-None-Match: *`, GCS
//! `ifGenerationMatch`, the filesystem's check and rename under `flock`).
//! A collection takes the lease by bumping the number with phase
//! `marking` over a `finished` (or dead) generation; it beats, switches to
//! `deleting` and ends with `finished`, each a write over its own last
//! version. So once another collection has taken over, every later write
//! of the first one fails, and it knows it lost.
//!
//! **Liveness without clocks.** The object carries no time. A running
//! collection rewrites it every [`Timing::heartbeat`] (the `beat` counter
//! goes up); an observer (a server, a collector waiting for the lease)
//! judges it dead when it has not *changed* for [`Timing::stale_after`] by
//! the observer's own monotonic clock, as Kubernetes' leader election
//! does. Clocks of different hosts are never compared.
//!
//! **Stopping before a takeover.** A contender takes over only after it
//! has seen one version unchanged for `stale_after`, so no earlier than
//! `stale_after` after the holder *sent* its last successful write. The
//! holder deletes only while less than half of `stale_after` has passed
//! since it sent its last successful write ([`Holder::may_delete`]), and
//! bounds each deletion by the rest of its lease, so a holder whose
//! heartbeat fails or stalls stops deleting well before anyone can take
//! over. (A deletion already sent when its bound runs out may still reach
//! the storage: the other half of `stale_after`, 30 s by default, is the
//! margin for that.)
//!
//! Servers stamp every tier entry (cached manifest, layer record) with the
//! generation under which it was last checked against storage. See
//! [`super::watch`] for how they use it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::storage::{Storage, StorageError, StorageKey, Version};

/// Largest generation object read.
const MAX_OBJECT: usize = 64 * 1024;
/// Content type of the generation object.
const CONTENT_TYPE: &str = "application/json";

/// How often a collection beats and how long an unchanged generation
/// takes to count as dead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// A collection rewrites its generation this often.
    pub heartbeat: Duration,
    /// A running generation unchanged for this long (by the observer's
    /// monotonic clock) belongs to a collection that died.
    pub stale_after: Duration,
}

impl Timing {
    /// Production timing: a beat every 10 s, dead after 60 s unchanged.
    pub const DEFAULT: Timing = Timing {
        heartbeat: Duration::from_secs(10),
        stale_after: Duration::from_secs(60),
    };

    /// How often a contender reads the generation while it waits.
    fn poll(&self) -> Duration {
        self.heartbeat.min(self.stale_after / 4)
    }
}

impl Default for Timing {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What a collection is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Announced, or finding what is in use: nothing is deleted yet.
    Marking,
    /// Deleting garbage.
    Deleting,
    /// Done (or never started): the lease is free.
    Finished,
}

/// The content of `gc/generation`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    /// Counts collections; 0 before the first.
    pub number: u64,
    /// What the collection numbered `number` is doing.
    pub phase: Phase,
    /// Counts the collection's heartbeats: it changes while the
    /// collection lives.
    #[serde(default)]
    pub beat: u64,
    /// Who runs it (`<host>:<pid>:<random>`), for operators; it also
    /// makes each collection's writes unique.
    #[serde(default)]
    pub owner: String,
}

impl Generation {
    /// The state of a storage that was never collected.
    pub fn none() -> Generation {
        Generation {
            number: 0,
            phase: Phase::Finished,
            beat: 0,
            owner: String::new(),
        }
    }

    /// Whether a collection claims to run (its liveness is judged by an
    /// observer, see [`Observed`]).
    pub fn claims_running(&self) -> bool {
        self.phase != Phase::Finished
    }
}

/// A generation as one observer saw it, with when it last changed on the
/// observer's monotonic clock.
#[derive(Clone, Debug)]
pub struct Observed {
    /// What was read.
    pub generation: Generation,
    /// When this observer first read this exact content.
    pub since: Instant,
}

impl Observed {
    /// Remember `read` as seen now, unless it is what `previous` held.
    pub fn update(previous: Option<&Observed>, read: Generation) -> Observed {
        match previous {
            Some(previous) if previous.generation == read => previous.clone(),
            _ => Observed {
                generation: read,
                since: Instant::now(),
            },
        }
    }

    /// Whether a collection runs: it claims to, and its generation changed
    /// within `stale_after` of now.
    pub fn running(&self, stale_after: Duration) -> bool {
        self.generation.claims_running() && self.since.elapsed() < stale_after
    }

    /// Whether a running collection may be deleting.
    pub fn deleting(&self, stale_after: Duration) -> bool {
        self.generation.phase == Phase::Deleting && self.running(stale_after)
    }
}

/// Unix seconds of `at`.
pub fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The key `gc/generation`.
pub(crate) fn generation_key() -> StorageKey {
    // A constant, valid name.
    StorageKey::gc("generation").unwrap_or_else(|_| unreachable!("valid key"))
}

/// Read `gc/generation` with its version; [`Generation::none`] without a
/// version when absent (see [`parse`] for a corrupt one).
///
/// The object is rewritten every heartbeat, so it is read whole in one
/// response ([`Storage::read_versioned`]; a plain `fetch` on S3 asks for
/// the size first and then for that many bytes, which a rewrite in
/// between truncates), and bytes that do not parse are read again a few
/// times before they count as corrupt.
pub async fn read(storage: &dyn Storage) -> Result<(Generation, Option<Version>), StorageError> {
    let key = generation_key();
    for _ in 0..4 {
        let Some((bytes, version)) = storage.read_versioned(&key, MAX_OBJECT).await? else {
            return Ok((Generation::none(), None));
        };
        if let Ok(generation) = serde_json::from_slice(&bytes) {
            return Ok((generation, Some(version)));
        }
    }
    let Some((bytes, version)) = storage.read_versioned(&key, MAX_OBJECT).await? else {
        return Ok((Generation::none(), None));
    };
    Ok((parse(&key, &bytes), Some(version)))
}

/// Read `gc/generation` for an observer (a server), which needs no
/// version: [`read`] without it.
pub async fn read_current(storage: &dyn Storage) -> Result<Generation, StorageError> {
    Ok(read(storage).await?.0)
}

/// The generation in `bytes`; a corrupt object is logged and read as a
/// dead collection of number 0 (it is replaced, conditionally, by the
/// next collection).
fn parse(key: &StorageKey, bytes: &[u8]) -> Generation {
    serde_json::from_slice(bytes).unwrap_or_else(|error| {
        tracing::warn!(key = %key, error = %error, "ignoring a corrupt collection generation");
        Generation {
            phase: Phase::Marking,
            ..Generation::none()
        }
    })
}

/// Write `generation` over `expected` (absent for `None`): the new
/// version, or `None` when `gc/generation` was not at `expected`.
pub async fn write_if(
    storage: &dyn Storage,
    generation: &Generation,
    expected: Option<&Version>,
) -> Result<Option<Version>, StorageError> {
    let key = generation_key();
    let json = serde_json::to_vec(generation).map_err(|e| StorageError::Io {
        key: key.clone(),
        source: std::io::Error::other(e),
    })?;
    storage
        .write_if(&key, CONTENT_TYPE, Bytes::from(json), expected)
        .await
}

/// Why the lease was not taken, or was lost.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another collection holds it and is alive.
    #[error(
        "another collection is running ({owner}, generation {number}, its heartbeat is moving)"
    )]
    Busy { owner: String, number: u64 },
    /// Another collection took over (this one's heartbeat did not reach
    /// the storage in time); this one stopped deleting.
    #[error("another collection took over generation {number}; this one stopped")]
    Lost { number: u64 },
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

fn owner_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown-host".to_owned());
    format!(
        "{host}:{}:{}",
        std::process::id(),
        crate::storage::staging::unique_name()
    )
}

/// The lease of one running collection: its generation, the version of
/// its last write, and when that write was sent.
pub struct Holder {
    storage: Arc<dyn Storage>,
    timing: Timing,
    state: tokio::sync::Mutex<(Generation, Version)>,
    /// When the last successful write was sent (before it was sent).
    last_ok: Mutex<Instant>,
    lost: AtomicBool,
}

impl Holder {
    /// Take the lease: write generation `n + 1` in phase `marking` over a
    /// finished one at once, or over a running one after watching it stay
    /// unchanged for `timing.stale_after` (its collection died). A running
    /// generation that changes meanwhile is [`LeaseError::Busy`].
    pub async fn acquire(storage: Arc<dyn Storage>, timing: Timing) -> Result<Holder, LeaseError> {
        let owner = owner_name();
        let mut watched: Option<(Version, Instant)> = None;
        loop {
            let (current, version) = read(storage.as_ref()).await?;
            let alive = current.claims_running();
            if alive {
                match &watched {
                    Some((seen, since)) if Some(seen) == version.as_ref() => {
                        if since.elapsed() < timing.stale_after {
                            tokio::time::sleep(timing.poll()).await;
                            continue;
                        }
                        tracing::warn!(owner = %current.owner, generation = current.number, "taking over from a collection whose heartbeat stopped");
                    }
                    Some(_) => {
                        return Err(LeaseError::Busy {
                            owner: current.owner,
                            number: current.number,
                        });
                    }
                    None => {
                        watched = version.clone().map(|v| (v, Instant::now()));
                        tokio::time::sleep(timing.poll()).await;
                        continue;
                    }
                }
            }
            let next = Generation {
                number: current.number + 1,
                phase: Phase::Marking,
                beat: 0,
                owner: owner.clone(),
            };
            let sent = Instant::now();
            match write_if(storage.as_ref(), &next, version.as_ref()).await? {
                Some(written) => {
                    return Ok(Holder {
                        storage,
                        timing,
                        state: tokio::sync::Mutex::new((next, written)),
                        last_ok: Mutex::new(sent),
                        lost: AtomicBool::new(false),
                    });
                }
                // Someone else wrote in between: look again; a finished
                // generation that a contender took is busy next round.
                None if alive => {
                    return Err(LeaseError::Busy {
                        owner: current.owner,
                        number: current.number,
                    });
                }
                None => watched = None,
            }
        }
    }

    /// This collection's generation number.
    pub async fn number(&self) -> u64 {
        self.state.lock().await.0.number
    }

    /// The storage this lease is held on.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Beat: rewrite the generation with the next beat count.
    pub async fn beat(&self) -> Result<(), LeaseError> {
        self.rewrite(|generation| generation.beat += 1).await
    }

    /// Switch to `phase` (also a beat).
    pub async fn enter(&self, phase: Phase) -> Result<(), LeaseError> {
        self.rewrite(|generation| {
            generation.phase = phase;
            generation.beat += 1;
        })
        .await
    }

    async fn rewrite(&self, change: impl FnOnce(&mut Generation)) -> Result<(), LeaseError> {
        let mut state = self.state.lock().await;
        if self.lost.load(Ordering::SeqCst) {
            return Err(LeaseError::Lost {
                number: state.0.number,
            });
        }
        let mut next = state.0.clone();
        change(&mut next);
        let sent = Instant::now();
        match write_if(self.storage.as_ref(), &next, Some(&state.1)).await? {
            Some(version) => {
                *state = (next, version);
                *self.last_ok.lock() = sent;
                Ok(())
            }
            None => {
                self.lost.store(true, Ordering::SeqCst);
                tracing::error!(
                    generation = state.0.number,
                    "another collection took over; stopping"
                );
                Err(LeaseError::Lost {
                    number: state.0.number,
                })
            }
        }
    }

    /// How much longer this collection may delete: `None` once the lease
    /// is lost or half of `stale_after` has passed since the last
    /// successful write was sent.
    pub fn may_delete(&self) -> Option<Duration> {
        if self.lost.load(Ordering::SeqCst) {
            return None;
        }
        (self.timing.stale_after / 2).checked_sub(self.last_ok.lock().elapsed())
    }

    /// The lease's timing.
    pub fn timing(&self) -> Timing {
        self.timing
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::filesystem::FilesystemStorage;

    /// Beats every 50 ms; dead after 2 s unchanged, so that a holder may
    /// delete for 1 s after a write: the assertions on `may_delete` below
    /// keep that margin on a loaded machine (at 400 ms, 200 ms between
    /// the takeover's write and its check were once not enough).
    fn fast() -> Timing {
        Timing {
            heartbeat: Duration::from_millis(50),
            stale_after: Duration::from_secs(2),
        }
    }

    #[tokio::test]
    async fn a_live_lease_is_busy_and_a_dead_one_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(FilesystemStorage::new(dir.path()).unwrap());
        let first = Holder::acquire(storage.clone(), fast()).await.unwrap();
        assert_eq!(first.number().await, 1);
        // A contender while the first beats: busy once it sees a beat.
        let beating = tokio::spawn({
            let storage = storage.clone();
            async move { Holder::acquire(storage, fast()).await }
        });
        for _ in 0..4 {
            tokio::time::sleep(fast().heartbeat).await;
            first.beat().await.unwrap();
        }
        assert!(matches!(
            beating.await.unwrap(),
            Err(LeaseError::Busy { number: 1, .. })
        ));
        // The first stops beating: the next contender takes over, and the
        // first's next write fails.
        let second = Holder::acquire(storage.clone(), fast()).await.unwrap();
        assert_eq!(second.number().await, 2);
        assert!(matches!(first.beat().await, Err(LeaseError::Lost { .. })));
        assert_eq!(first.may_delete(), None);
        assert!(second.may_delete().is_some());
        second.enter(Phase::Finished).await.unwrap();
        let third = Holder::acquire(storage, fast()).await.unwrap();
        assert_eq!(third.number().await, 3);
    }

    #[tokio::test]
    async fn generations_round_trip_and_absence_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FilesystemStorage::new(dir.path()).unwrap();
        assert_eq!(read(&storage).await.unwrap(), (Generation::none(), None));
        let generation = Generation {
            number: 3,
            phase: Phase::Deleting,
            beat: 7,
            owner: "h:1:x".into(),
        };
        let version = write_if(&storage, &generation, None).await.unwrap();
        assert!(version.is_some());
        assert_eq!(read(&storage).await.unwrap(), (generation.clone(), version));
        assert_eq!(
            write_if(&storage, &generation, None).await.unwrap(),
            None,
            "created twice"
        );
        let observed = Observed::update(None, generation.clone());
        assert!(observed.deleting(Duration::from_secs(60)));
        assert!(!observed.running(Duration::ZERO), "a dead collection runs");
    }
}
