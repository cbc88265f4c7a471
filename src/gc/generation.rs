//! The collection generation: one small object, `gc/generation`, through
//! which a collection tells every serving instance what it is doing, and
//! the lock `gc/lock` that lets only one collection run at a time.
//!
//! A collection takes the lock, bumps the generation number with phase
//! `marking`, waits the notice period (every server polls the object more
//! often than that), marks, switches to `deleting`, deletes, and ends with
//! phase `finished`. While it runs it refreshes a heartbeat in both
//! objects; a collection whose heartbeat is older than [`STALE_AFTER`] has
//! died and counts as finished (its lock may be taken over).
//!
//! Servers stamp every tier entry (cached manifest, layer record) with the
//! generation under which it was last checked against storage. See
//! [`super::watch`] for how they use it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{
    cache::bytes_stream,
    storage::{
        Storage, StorageError, StorageKey,
        small_object::{read_bounded, read_small},
    },
};

/// A collection refreshes its heartbeat this often.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// A running collection whose heartbeat is older than this has died.
pub const STALE_AFTER: Duration = Duration::from_secs(60);
/// Largest generation or lock object read.
const MAX_OBJECT: usize = 64 * 1024;
/// Content type of both objects.
const CONTENT_TYPE: &str = "application/json";

/// What a collection is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Announced, or finding what is in use: nothing is deleted yet.
    Marking,
    /// Deleting garbage.
    Deleting,
    /// Done (or never started).
    Finished,
}

/// The content of `gc/generation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    /// Counts collections; 0 before the first.
    pub number: u64,
    /// What the collection numbered `number` is doing.
    pub phase: Phase,
    /// Unix seconds of the collection's last sign of life.
    pub heartbeat: u64,
}

impl Generation {
    /// The state of a storage that was never collected.
    pub const NONE: Generation = Generation {
        number: 0,
        phase: Phase::Finished,
        heartbeat: 0,
    };

    /// Whether a collection is running at `now` (not finished and its
    /// heartbeat is fresh).
    pub fn running(&self, now: SystemTime) -> bool {
        self.phase != Phase::Finished && !stale(self.heartbeat, now)
    }

    /// Whether a running collection may be deleting at `now`.
    pub fn deleting(&self, now: SystemTime) -> bool {
        self.phase == Phase::Deleting && self.running(now)
    }
}

/// Unix seconds of `at`.
pub fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Whether a heartbeat at unix second `heartbeat` is older than
/// [`STALE_AFTER`] at `now`.
pub fn stale(heartbeat: u64, now: SystemTime) -> bool {
    unix_secs(now).saturating_sub(heartbeat) > STALE_AFTER.as_secs()
}

/// The key `gc/generation`.
pub(crate) fn generation_key() -> StorageKey {
    // A constant, valid name.
    StorageKey::gc("generation").unwrap_or_else(|_| unreachable!("valid key"))
}

fn lock_key() -> StorageKey {
    StorageKey::gc("lock").unwrap_or_else(|_| unreachable!("valid key"))
}

/// Read `gc/generation`; [`Generation::NONE`] when absent or unreadable
/// (a corrupt object is logged and rewritten by the next collection).
pub async fn read(storage: &dyn Storage) -> Result<Generation, StorageError> {
    let key = generation_key();
    let Some(bytes) = read_small(storage, &key, MAX_OBJECT).await? else {
        return Ok(Generation::NONE);
    };
    Ok(serde_json::from_slice(&bytes).unwrap_or_else(|error| {
        tracing::warn!(key = %key, error = %error, "ignoring a corrupt collection generation");
        Generation::NONE
    }))
}

/// Write `gc/generation`.
pub async fn write(storage: &dyn Storage, generation: &Generation) -> Result<(), StorageError> {
    let key = generation_key();
    let json = serde_json::to_vec(generation).map_err(|e| StorageError::Io {
        key: key.clone(),
        source: std::io::Error::other(e),
    })?;
    storage
        .persist(&key, CONTENT_TYPE, bytes_stream(Bytes::from(json)))
        .await
        .map(drop)
}

/// The content of `gc/lock`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockOwner {
    /// Who holds it (`<host>:<pid>`), for operators.
    pub owner: String,
    /// Unix seconds of the holder's last sign of life.
    pub heartbeat: u64,
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another collection holds it and is alive.
    #[error("another collection is running ({owner}, last heartbeat {age_secs} s ago)")]
    Busy { owner: String, age_secs: u64 },
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

fn owner_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown-host".to_owned());
    format!("{host}:{}", std::process::id())
}

fn lock_bytes(owner: &str, now: SystemTime) -> Bytes {
    let lock = LockOwner {
        owner: owner.to_owned(),
        heartbeat: unix_secs(now),
    };
    Bytes::from(serde_json::to_vec(&lock).unwrap_or_default())
}

/// The held lock; refresh it with [`Lock::refresh`], give it back with
/// [`Lock::release`].
#[derive(Clone, Debug)]
pub struct Lock {
    owner: String,
}

impl Lock {
    /// Take `gc/lock`, or take it over when its holder's heartbeat is
    /// stale (a crashed collection).
    pub async fn acquire(storage: &dyn Storage) -> Result<Lock, LockError> {
        let owner = owner_name();
        let key = lock_key();
        for _ in 0..2 {
            let now = SystemTime::now();
            if storage
                .create_new(&key, CONTENT_TYPE, lock_bytes(&owner, now))
                .await?
            {
                return Ok(Lock { owner });
            }
            let held = match storage.fetch(&key).await {
                Ok(stream) => read_bounded(stream, MAX_OBJECT)
                    .await
                    .ok()
                    .and_then(|bytes| serde_json::from_slice::<LockOwner>(&bytes).ok()),
                // Released in between: try again.
                Err(StorageError::NotFound(_)) => continue,
                Err(error) => return Err(error.into()),
            };
            match held {
                Some(held) if !stale(held.heartbeat, now) => {
                    return Err(LockError::Busy {
                        age_secs: unix_secs(now).saturating_sub(held.heartbeat),
                        owner: held.owner,
                    });
                }
                // Stale or unreadable: its holder is gone.
                _ => {
                    tracing::warn!(lock = ?held, "taking over the lock of a collection that stopped");
                    storage.delete(&key).await?;
                }
            }
        }
        Err(LockError::Busy {
            owner: "a collection that just started".to_owned(),
            age_secs: 0,
        })
    }

    /// Rewrite the heartbeat.
    pub async fn refresh(&self, storage: &dyn Storage) -> Result<(), StorageError> {
        storage
            .persist(
                &lock_key(),
                CONTENT_TYPE,
                bytes_stream(lock_bytes(&self.owner, SystemTime::now())),
            )
            .await
            .map(drop)
    }

    /// Delete the lock.
    pub async fn release(self, storage: &dyn Storage) -> Result<(), StorageError> {
        storage.delete(&lock_key()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::filesystem::FilesystemStorage;

    #[tokio::test]
    async fn one_lock_at_a_time_and_a_stale_lock_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FilesystemStorage::new(dir.path()).unwrap();
        let lock = Lock::acquire(&storage).await.unwrap();
        assert!(matches!(
            Lock::acquire(&storage).await,
            Err(LockError::Busy { .. })
        ));
        lock.release(&storage).await.unwrap();
        let again = Lock::acquire(&storage).await.unwrap();
        // A holder that stopped beating long ago.
        let old = SystemTime::now() - 2 * STALE_AFTER;
        storage
            .persist(
                &lock_key(),
                CONTENT_TYPE,
                bytes_stream(lock_bytes("gone:1", old)),
            )
            .await
            .unwrap();
        drop(again);
        Lock::acquire(&storage).await.unwrap();
    }

    #[tokio::test]
    async fn generations_round_trip_and_absence_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FilesystemStorage::new(dir.path()).unwrap();
        assert_eq!(read(&storage).await.unwrap(), Generation::NONE);
        let now = SystemTime::now();
        let generation = Generation {
            number: 3,
            phase: Phase::Deleting,
            heartbeat: unix_secs(now),
        };
        write(&storage, &generation).await.unwrap();
        assert_eq!(read(&storage).await.unwrap(), generation);
        assert!(generation.deleting(now));
        assert!(
            !generation.running(now + 2 * STALE_AFTER),
            "a dead collection runs"
        );
    }
}
