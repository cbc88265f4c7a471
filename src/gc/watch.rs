//! The server's side of garbage collection: recording use, and never
//! serving what a collection removed. The tiers do not call this module:
//! they hold [`super::tiers::Stamped`] entries and ask
//! [`super::tiers::Guard`], which is this watch narrowed to them.
//!
//! **Use marks.** Each manifest served (any tier, by tag or by digest)
//! calls [`GcWatch::touch`]: at most once per touch interval per digest, a
//! background task rewrites `uses/<digest>`, whose modification time is the
//! mark. Nothing is written on the request path.
//!
//! **Generations.** A background task reads `gc/generation` every
//! [`poll_interval`]. Tier entries carry the generation number under which
//! they were last checked (their *stamp*). An entry is served as it is
//! only when its stamp is the generation this server knows and that
//! knowledge is fresh (read within two poll intervals). Otherwise it is
//! *confirmed* first ([`GcWatch::confirm`]):
//!
//! 0. check that the manifest is in storage (nothing is written for a
//!    digest nobody stored);
//! 1. write the use mark now, synchronously;
//! 2. read the generation; if a collection is deleting, wait until it
//!    ends;
//! 3. check that the manifest blob is still in storage.
//!
//! Why that is enough: a collection announces itself (phase `marking`) and
//! waits [`notice_period`] (three poll intervals) before it lists
//! anything, so a server with fresh knowledge has seen the announcement
//! before the collection decides; images it served without confirming
//! until then were in use within that short time and are kept
//! (`--keep` must exceed the notice period). A confirmation that read
//! `marking` in step 2 wrote its mark before the collection switched to
//! `deleting`, and the collection reads the marks again after that switch,
//! so the image is kept. A confirmation that read `deleting` waits for the
//! end, and then the manifest blob exists only if the manifest was live:
//! a collection deletes manifests before the blobs they name. An entry
//! confirmed under generation `n` is therefore safe for all of `n`.
//!
//! **Builds** reuse layer records, whose blobs a concurrent collection may
//! delete. Records read while no collection runs are stamped; others are
//! re-read from storage on next use. When a build ends,
//! [`GcWatch::settle`] marks its manifest, waits out a deleting
//! collection, and, if any collection overlapped the build, checks every
//! blob the manifest names; the builder builds again when one is missing.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use parking_lot::Mutex;

use super::generation::{self, Observed, Timing};
use crate::{
    cache::bytes_stream,
    digest::Digest,
    storage::{Storage, StorageError, StorageKey},
};

/// Longest poll interval, whatever the touch interval.
const MAX_POLL: Duration = Duration::from_secs(10);
/// Longest wait for a deleting collection to end (it is declared dead
/// sooner, after [`Timing::stale_after`] without a change).
const MAX_WAIT: Duration = Duration::from_secs(30 * 60);
/// Marks waiting to be written; beyond this, uses are recorded next time.
const MARK_QUEUE: usize = 4096;
/// Content type of use marks.
const MARK_CONTENT_TYPE: &str = "text/plain";

/// How often servers read the generation: the touch interval, at most
/// ten seconds.
pub fn poll_interval(touch_interval: Duration) -> Duration {
    touch_interval.min(MAX_POLL)
}

/// How long a collection waits after announcing itself: three poll
/// intervals, so that every server has read the announcement.
pub fn notice_period(touch_interval: Duration) -> Duration {
    3 * poll_interval(touch_interval)
}

/// What a server knows about collections at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The generation number last read.
    pub number: u64,
    /// Whether a collection was running then.
    pub running: bool,
    /// Whether that was read recently enough to act on.
    pub fresh: bool,
}

struct Known {
    observed: Option<Observed>,
    read_at: Option<Instant>,
}

type Listener = Box<dyn Fn() + Send + Sync>;

/// Use marks and collection generations for one storage; see the module
/// documentation.
pub struct GcWatch {
    storage: Arc<dyn Storage>,
    touch_interval: Duration,
    poll: Duration,
    stale_after: Duration,
    known: Mutex<Known>,
    touched: Mutex<HashMap<Digest, Instant>>,
    marks: tokio::sync::mpsc::Sender<Digest>,
    marks_written: std::sync::atomic::AtomicU64,
    listeners: Mutex<Vec<Listener>>,
}

impl GcWatch {
    /// A watch over `storage` marking each image at most once per
    /// `touch_interval`, with its background tasks (polling, marking)
    /// running until the runtime stops. Call inside a Tokio runtime.
    pub fn start(storage: Arc<dyn Storage>, touch_interval: Duration) -> Arc<Self> {
        Self::start_with(storage, touch_interval, Timing::DEFAULT)
    }

    /// [`Self::start`] judging collections dead after `timing.stale_after`
    /// without a change (shorter in tests).
    pub fn start_with(
        storage: Arc<dyn Storage>,
        touch_interval: Duration,
        timing: Timing,
    ) -> Arc<Self> {
        let (marks, mut pending) = tokio::sync::mpsc::channel::<Digest>(MARK_QUEUE);
        let watch = Arc::new(Self {
            storage,
            touch_interval,
            poll: poll_interval(touch_interval),
            stale_after: timing.stale_after,
            known: Mutex::new(Known {
                observed: None,
                read_at: None,
            }),
            touched: Mutex::new(HashMap::new()),
            marks,
            marks_written: std::sync::atomic::AtomicU64::new(0),
            listeners: Mutex::new(Vec::new()),
        });
        let weak = Arc::downgrade(&watch);
        tokio::spawn(async move {
            while let Some(digest) = pending.recv().await {
                let Some(watch) = weak.upgrade() else { return };
                if let Err(error) = watch.write_mark(&digest).await {
                    tracing::warn!(digest = %digest, error = %error, "writing a use mark failed");
                    // Record it on the next use instead.
                    watch.lock_touched().remove(&digest);
                }
            }
        });
        let weak = Arc::downgrade(&watch);
        let poll = watch.poll;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(poll);
            loop {
                ticks.tick().await;
                let Some(watch) = weak.upgrade() else { return };
                if let Err(error) = watch.refresh().await {
                    tracing::warn!(error = %error, "reading the collection generation failed");
                }
            }
        });
        watch
    }

    /// Call `listener` whenever this server sees a collection end, before
    /// it acts on that knowledge (to drop caches of content-addressed
    /// objects that may be gone).
    pub fn on_collection(&self, listener: impl Fn() + Send + Sync + 'static) {
        self.listeners.lock().push(Box::new(listener));
    }

    /// The touch interval.
    pub fn touch_interval(&self) -> Duration {
        self.touch_interval
    }

    /// What this server knows now.
    pub fn snapshot(&self) -> Snapshot {
        let known = self.known.lock();
        Snapshot {
            number: known.observed.as_ref().map_or(0, |o| o.generation.number),
            running: known
                .observed
                .as_ref()
                .is_some_and(|o| o.running(self.stale_after)),
            fresh: known.read_at.is_some_and(|at| at.elapsed() < 2 * self.poll),
        }
    }

    /// Whether an entry stamped `stamp` may be served without confirming.
    pub fn trusts(&self, stamp: Option<u64>) -> bool {
        let now = self.snapshot();
        now.fresh && stamp == Some(now.number)
    }

    /// Whether nothing may be deleting now (knowledge fresh, no collection
    /// running): then objects read from storage may be used as they are.
    pub fn quiet(&self) -> bool {
        let now = self.snapshot();
        now.fresh && !now.running
    }

    /// The stamp for something just read from storage: the known
    /// generation if no collection runs, else none (read it again later).
    pub fn stamp_for_read(&self) -> Option<u64> {
        let now = self.snapshot();
        (now.fresh && !now.running).then_some(now.number)
    }

    /// Record a use of the manifest `digest`, off the request path and at
    /// most once per touch interval: whether a mark was queued.
    pub fn touch(&self, digest: &Digest) -> bool {
        {
            let mut touched = self.lock_touched();
            if touched
                .get(digest)
                .is_some_and(|at| at.elapsed() < self.touch_interval)
            {
                return false;
            }
            if touched.len() > 100_000 {
                let interval = self.touch_interval;
                touched.retain(|_, at| at.elapsed() < interval);
            }
            touched.insert(*digest, Instant::now());
        }
        if self.marks.try_send(*digest).is_err() {
            self.lock_touched().remove(digest);
            return false;
        }
        true
    }

    /// How many use marks this watch has written.
    pub fn marks_written(&self) -> u64 {
        self.marks_written
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Confirm before serving the manifest `digest` from a tier
    /// whose stamp this server does not trust: the stamp to give the entry
    /// when it may be served, `None` when its manifest was collected.
    pub async fn confirm(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        // Nothing is written for a manifest that does not exist (anyone
        // may ask for any digest).
        if !self.exists(digest).await? {
            return Ok(None);
        }
        self.write_mark(digest).await?;
        let generation = self.settled().await?;
        Ok(self
            .exists(digest)
            .await?
            .then_some(generation.generation.number))
    }

    /// Whether the object `layers/<digest>` is in storage.
    async fn exists(&self, digest: &Digest) -> Result<bool, StorageError> {
        match self.storage.stat(&StorageKey::layer(digest)).await {
            Ok(_) => Ok(true),
            Err(StorageError::NotFound(_)) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// After a build stored the manifest `digest` naming `blobs`:
    /// `Ok(stamp)` for its tier entries, or `Err(missing)`: the blobs a
    /// collection that overlapped the build removed (build again, without
    /// trusting any layer record that names one of them: the build may
    /// have written such a record itself, after the collection listed
    /// the blob it then deleted). `started` is the snapshot taken when
    /// the build began.
    pub async fn settle(
        &self,
        started: Snapshot,
        digest: &Digest,
        blobs: &[Digest],
    ) -> Result<Result<u64, Vec<Digest>>, StorageError> {
        self.write_mark(digest).await?;
        let before = self.refresh().await?;
        let generation = self.settled().await?;
        let overlapped = started.running
            || !started.fresh
            || before.deleting(self.stale_after)
            || generation.generation.number != started.number;
        let mut missing = Vec::new();
        if overlapped {
            for blob in blobs.iter().chain([digest]) {
                match self.storage.stat(&StorageKey::layer(blob)).await {
                    Ok(_) => {}
                    Err(StorageError::NotFound(_)) => {
                        tracing::warn!(
                            digest = %blob,
                            "a blob of the image was collected during its build"
                        );
                        missing.push(*blob);
                    }
                    Err(error) => return Err(error),
                }
            }
        }
        if missing.is_empty() {
            Ok(Ok(generation.generation.number))
        } else {
            Ok(Err(missing))
        }
    }

    /// Read the generation now, and wait while a collection is deleting.
    async fn settled(&self) -> Result<Observed, StorageError> {
        let deadline = Instant::now() + MAX_WAIT;
        loop {
            let observed = self.refresh().await?;
            if !observed.deleting(self.stale_after) || Instant::now() > deadline {
                return Ok(observed);
            }
            tokio::time::sleep(self.poll.min(Duration::from_secs(1))).await;
        }
    }

    /// Read `gc/generation` and remember it, with when it last changed by
    /// this host's monotonic clock.
    pub async fn refresh(&self) -> Result<Observed, StorageError> {
        let read_at = Instant::now();
        let generation = generation::read_current(self.storage.as_ref()).await?;
        let (observed, ended) = {
            let known = self.known.lock();
            let observed = Observed::update(known.observed.as_ref(), generation);
            let ended = !observed.running(self.stale_after)
                && known.observed.as_ref().is_none_or(|was| {
                    was.generation.number != observed.generation.number
                        || was.running(self.stale_after)
                });
            (observed, ended)
        };
        if ended {
            for listener in self.listeners.lock().iter() {
                listener();
            }
        }
        let mut known = self.known.lock();
        if known.read_at.is_none_or(|at| at <= read_at) {
            known.observed = Some(observed.clone());
            known.read_at = Some(read_at);
        }
        Ok(observed)
    }

    async fn write_mark(&self, digest: &Digest) -> Result<(), StorageError> {
        let key = StorageKey::use_mark(digest);
        let body = Bytes::from(format!("{}\n", generation::unix_secs(SystemTime::now())));
        self.storage
            .persist(&key, MARK_CONTENT_TYPE, bytes_stream(body))
            .await?;
        self.marks_written
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.lock_touched().insert(*digest, Instant::now());
        Ok(())
    }

    fn lock_touched(&self) -> parking_lot::MutexGuard<'_, HashMap<Digest, Instant>> {
        self.touched.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::filesystem::FilesystemStorage;

    fn storage() -> (tempfile::TempDir, Arc<dyn Storage>) {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(FilesystemStorage::new(dir.path()).unwrap());
        (dir, storage)
    }

    /// Wait (at most 10 s) until `watch` has written `n` marks.
    async fn written(watch: &GcWatch, n: u64) {
        for _ in 0..1000 {
            if watch.marks_written() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(watch.marks_written(), n);
    }

    #[tokio::test]
    async fn touches_are_written_once_per_interval() {
        let (dir, storage) = storage();
        let interval = Duration::from_millis(300);
        let watch = GcWatch::start(storage, interval);
        let digest = Digest::of(b"a manifest");
        assert!(watch.touch(&digest), "the first use is queued");
        written(&watch, 1).await;
        assert!(dir.path().join("uses").join(digest.hex()).exists());
        // Within the interval, uses queue nothing: counted, not timed.
        for _ in 0..100 {
            assert!(!watch.touch(&digest), "a second mark within the interval");
        }
        // Another image is marked at once.
        assert!(watch.touch(&Digest::of(b"another manifest")));
        written(&watch, 2).await;
        // After the interval, the next use is queued again.
        tokio::time::sleep(interval).await;
        assert!(watch.touch(&digest));
        written(&watch, 3).await;
    }

    #[tokio::test]
    async fn stamps_are_trusted_only_for_the_known_generation() {
        let (_dir, storage) = storage();
        let watch = GcWatch::start(storage.clone(), Duration::from_secs(1));
        watch.refresh().await.unwrap();
        assert!(watch.trusts(Some(0)) && watch.quiet());
        assert!(!watch.trusts(None));
        generation::Holder::acquire(storage.clone(), Timing::DEFAULT)
            .await
            .unwrap();
        watch.refresh().await.unwrap();
        assert!(!watch.trusts(Some(0)) && !watch.quiet());
        assert_eq!(watch.stamp_for_read(), None);
        // Confirming an image whose manifest is gone says so.
        assert_eq!(watch.confirm(&Digest::of(b"gone")).await.unwrap(), None);
    }

    #[tokio::test]
    async fn liveness_is_judged_by_change_on_this_hosts_clock() {
        let (_dir, storage) = storage();
        let timing = Timing {
            heartbeat: Duration::from_millis(50),
            stale_after: Duration::from_millis(300),
        };
        let watch = GcWatch::start_with(storage.clone(), Duration::from_secs(1), timing);
        // A collection deleting, written by a collector whose clock is ten
        // minutes behind (a wall-clock heartbeat, as the old format had):
        // that time means nothing here.
        let skewed = |beat: u64| {
            let heartbeat = generation::unix_secs(SystemTime::now()) - 600;
            Bytes::from(format!(
                r#"{{"number":1,"phase":"deleting","beat":{beat},"owner":"skewed","heartbeat":{heartbeat}}}"#
            ))
        };
        let key = generation::generation_key();
        let json = "application/json";
        let v0 = storage
            .write_if(&key, json, skewed(0), None)
            .await
            .unwrap()
            .unwrap();
        watch.refresh().await.unwrap();
        assert!(watch.snapshot().running, "a live collection judged dead");
        assert!(!watch.quiet());
        // Unchanged for longer than stale_after on this host's clock: dead.
        tokio::time::sleep(timing.stale_after).await;
        watch.refresh().await.unwrap();
        assert!(!watch.snapshot().running);
        // It beats again: alive.
        storage
            .write_if(&key, json, skewed(1), Some(&v0))
            .await
            .unwrap()
            .unwrap();
        watch.refresh().await.unwrap();
        assert!(watch.snapshot().running);
    }
}
