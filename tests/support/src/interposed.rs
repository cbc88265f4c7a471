//! A storage that puts a race or a fault exactly where a test wants it.
//!
//! [`Interposed`] passes every call to a real backend and counts the
//! listings of each prefix. A test arms it with:
//!
//! - [`Interposed::after_listing`]: run an action (a use recorded by a
//!   server, a write by a second collector) right after the `n`th listing
//!   of a prefix, before the caller sees that listing end (after its last
//!   page).
//! - [`Interposed::hang_page`]: one page of one listing never arrives. The collector lists
//!   use marks once to mark and once more after the switch to deleting, so
//!   "after the first listing of `uses/`" is the worst moment for a use.
//! - [`Interposed::fail_reads_after`]: once the `n`th listing of a prefix
//!   has happened, every `fetch` and `stat` of one key fails with a
//!   backend error (not "not found").
//! - [`Interposed::hold_writes_to`]: writes to one key wait from now on
//!   until the test lets them go (a heartbeat that stalls).
//! - [`Interposed::slow_deletes`]: every delete takes at least this long.
//! - [`Interposed::before_deleting`]: run an action before the first
//!   delete; every delete waits for it (the collection has switched to
//!   deleting and decided what goes, and nothing is gone yet).
//!
//! It keeps a log of completed deletions and conditional writes with the
//! instant each completed ([`Interposed::log`]), so that a test can order
//! what two collectors did.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, future::BoxFuture};
use nixery::storage::{
    ByteStream, KeyPrefix, ListedObject, Pages, Persisted, ServeRequest, Served, Storage,
    StorageError, StorageKey, Version,
};
use tokio::sync::watch;

type Action = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// See the module documentation.
pub struct Interposed {
    inner: Arc<dyn Storage>,
    listings: Mutex<HashMap<KeyPrefix, usize>>,
    pages: Mutex<HashMap<KeyPrefix, usize>>,
    hanging: Mutex<Vec<(KeyPrefix, usize, usize)>>,
    actions: Mutex<Vec<(KeyPrefix, usize, Action)>>,
    failing: Mutex<Vec<(StorageKey, KeyPrefix, usize)>>,
    held: Mutex<Option<(StorageKey, watch::Receiver<bool>)>>,
    held_writes: AtomicUsize,
    delete_delay: Mutex<Duration>,
    before_deleting: Mutex<Option<Action>>,
    first_delete: tokio::sync::OnceCell<()>,
    log: Mutex<Vec<(Instant, Done)>>,
}

/// A completed call, as [`Interposed::log`] records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Done {
    /// A delete of this key returned.
    Deleted(StorageKey),
    /// A conditional write to this key succeeded.
    Wrote(StorageKey),
    /// A delete of this key was given up before it returned (its caller
    /// dropped it); it may or may not have reached the storage.
    Abandoned(StorageKey),
}

/// Lets held writes go when dropped or [`Release::release`]d.
pub struct Release(watch::Sender<bool>);

impl Release {
    /// Let every held write (and every later one) through.
    pub fn release(&self) {
        let _ = self.0.send(true);
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        self.release();
    }
}

impl Interposed {
    /// `inner` with nothing armed.
    pub fn new(inner: Arc<dyn Storage>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            listings: Mutex::new(HashMap::new()),
            pages: Mutex::new(HashMap::new()),
            hanging: Mutex::new(Vec::new()),
            actions: Mutex::new(Vec::new()),
            failing: Mutex::new(Vec::new()),
            held: Mutex::new(None),
            held_writes: AtomicUsize::new(0),
            delete_delay: Mutex::new(Duration::ZERO),
            before_deleting: Mutex::new(None),
            first_delete: tokio::sync::OnceCell::new(),
            log: Mutex::new(Vec::new()),
        })
    }

    /// Run `action` after the `nth` (1-based) listing of `prefix`, before
    /// that listing is returned.
    pub fn after_listing<F>(&self, prefix: KeyPrefix, nth: usize, action: F)
    where
        F: FnOnce() -> BoxFuture<'static, ()> + Send + 'static,
    {
        self.actions
            .lock()
            .unwrap()
            .push((prefix, nth, Box::new(action)));
    }

    /// Fail `fetch` and `stat` of `key` from the `nth` listing of `prefix`
    /// on.
    pub fn fail_reads_after(&self, key: StorageKey, prefix: KeyPrefix, nth: usize) {
        self.failing.lock().unwrap().push((key, prefix, nth));
    }

    /// Hold every write (persist, conditional write, create) to `key`
    /// from now on until the returned [`Release`] lets them go.
    pub fn hold_writes_to(&self, key: StorageKey) -> Release {
        let (release, held) = watch::channel(false);
        *self.held.lock().unwrap() = Some((key, held));
        Release(release)
    }

    /// Make every delete take at least `delay`.
    pub fn slow_deletes(&self, delay: Duration) {
        *self.delete_delay.lock().unwrap() = delay;
    }

    /// Run `action` before the first delete; every delete waits until it
    /// is done.
    pub fn before_deleting<F>(&self, action: F)
    where
        F: FnOnce() -> BoxFuture<'static, ()> + Send + 'static,
    {
        *self.before_deleting.lock().unwrap() = Some(Box::new(action));
    }

    /// Completed deletions and conditional writes, in order.
    pub fn log(&self) -> Vec<(Instant, Done)> {
        self.log.lock().unwrap().clone()
    }

    /// How many writes to the held key have waited so far.
    pub fn held_writes(&self) -> usize {
        self.held_writes.load(Ordering::SeqCst)
    }

    /// Make page `page` (1-based) of the `nth` listing of `prefix` never
    /// arrive: the listing hangs there, as a call that never answers.
    pub fn hang_page(&self, prefix: KeyPrefix, nth: usize, page: usize) {
        self.hanging.lock().unwrap().push((prefix, nth, page));
    }

    /// How many pages of listings of `prefix` were delivered.
    pub fn pages(&self, prefix: KeyPrefix) -> usize {
        self.pages
            .lock()
            .unwrap()
            .get(&prefix)
            .copied()
            .unwrap_or(0)
    }

    /// How many times `prefix` was listed (listings started).
    pub fn listings(&self, prefix: KeyPrefix) -> usize {
        self.listings
            .lock()
            .unwrap()
            .get(&prefix)
            .copied()
            .unwrap_or(0)
    }

    fn check_read(&self, key: &StorageKey) -> Result<(), StorageError> {
        let listings = self.listings.lock().unwrap();
        let failing = self.failing.lock().unwrap();
        let armed = failing.iter().any(|(failing, prefix, nth)| {
            failing == key && listings.get(prefix).copied().unwrap_or(0) >= *nth
        });
        if armed {
            return Err(StorageError::Backend {
                backend: "interposed",
                key: key.to_string(),
                message: "injected failure".to_owned(),
            });
        }
        Ok(())
    }

    async fn before_write(&self, key: &StorageKey) {
        let held = self
            .held
            .lock()
            .unwrap()
            .as_ref()
            .filter(|(held, _)| held == key)
            .map(|(_, receiver)| receiver.clone());
        if let Some(mut receiver) = held {
            if !*receiver.borrow() {
                self.held_writes.fetch_add(1, Ordering::SeqCst);
            }
            let _ = receiver.wait_for(|released| *released).await;
        }
    }
}

#[async_trait]
impl Storage for Interposed {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn persist(
        &self,
        key: &StorageKey,
        content_type: &str,
        body: ByteStream,
    ) -> Result<Persisted, StorageError> {
        self.before_write(key).await;
        self.inner.persist(key, content_type, body).await
    }

    async fn fetch(&self, key: &StorageKey) -> Result<ByteStream, StorageError> {
        self.check_read(key)?;
        self.inner.fetch(key).await
    }

    async fn move_object(&self, from: &StorageKey, to: &StorageKey) -> Result<(), StorageError> {
        self.inner.move_object(from, to).await
    }

    async fn serve(
        &self,
        key: &StorageKey,
        request: &ServeRequest,
    ) -> Result<Served, StorageError> {
        self.check_read(key)?;
        self.inner.serve(key, request).await
    }

    async fn persist_blob(
        &self,
        content_type: &str,
        body: ByteStream,
    ) -> Result<Persisted, StorageError> {
        self.inner.persist_blob(content_type, body).await
    }

    fn list_pages(&self, prefix: KeyPrefix, page_size: usize) -> Pages<'_> {
        let nth = {
            let mut listings = self.listings.lock().unwrap();
            let count = listings.entry(prefix).or_default();
            *count += 1;
            *count
        };
        let inner = self.inner.list_pages(prefix, page_size);
        futures::stream::unfold(Some((inner, 0usize)), move |state| async move {
            let (mut inner, pages) = state?;
            match inner.next().await {
                Some(page) => {
                    let pages = pages + 1;
                    let hangs = self.hanging.lock().unwrap().contains(&(prefix, nth, pages));
                    if hangs {
                        std::future::pending::<()>().await;
                    }
                    *self.pages.lock().unwrap().entry(prefix).or_default() += 1;
                    Some((page, Some((inner, pages))))
                }
                None => {
                    let due: Vec<Action> = {
                        let mut actions = self.actions.lock().unwrap();
                        let (due, rest) = std::mem::take(&mut *actions)
                            .into_iter()
                            .partition(|(p, n, _)| *p == prefix && *n == nth);
                        *actions = rest;
                        due.into_iter().map(|(_, _, action)| action).collect()
                    };
                    for action in due {
                        action().await;
                    }
                    None
                }
            }
        })
        .boxed()
    }

    async fn delete(&self, key: &StorageKey) -> Result<(), StorageError> {
        /// Logs a delete given up half-way (its future dropped).
        struct Abandoned<'a>(&'a Interposed, Option<StorageKey>);
        impl Drop for Abandoned<'_> {
            fn drop(&mut self) {
                if let Some(key) = self.1.take() {
                    self.0
                        .log
                        .lock()
                        .unwrap()
                        .push((Instant::now(), Done::Abandoned(key)));
                }
            }
        }
        self.first_delete
            .get_or_init(|| async {
                let action = self.before_deleting.lock().unwrap().take();
                if let Some(action) = action {
                    action().await;
                }
            })
            .await;
        let mut guard = Abandoned(self, Some(key.clone()));
        let delay = *self.delete_delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        self.inner.delete(key).await?;
        guard.1 = None;
        self.log
            .lock()
            .unwrap()
            .push((Instant::now(), Done::Deleted(key.clone())));
        Ok(())
    }

    async fn read_versioned(
        &self,
        key: &StorageKey,
        limit: usize,
    ) -> Result<Option<(Bytes, Version)>, StorageError> {
        self.check_read(key)?;
        self.inner.read_versioned(key, limit).await
    }

    async fn write_if(
        &self,
        key: &StorageKey,
        content_type: &str,
        bytes: Bytes,
        expected: Option<&Version>,
    ) -> Result<Option<Version>, StorageError> {
        self.before_write(key).await;
        let written = self
            .inner
            .write_if(key, content_type, bytes, expected)
            .await?;
        if written.is_some() {
            self.log
                .lock()
                .unwrap()
                .push((Instant::now(), Done::Wrote(key.clone())));
        }
        Ok(written)
    }

    async fn stat(&self, key: &StorageKey) -> Result<ListedObject, StorageError> {
        self.check_read(key)?;
        self.inner.stat(key).await
    }

    async fn create_new(
        &self,
        key: &StorageKey,
        content_type: &str,
        bytes: Bytes,
    ) -> Result<bool, StorageError> {
        self.before_write(key).await;
        self.inner.create_new(key, content_type, bytes).await
    }

    async fn clean_staging(&self, max_age: Duration) -> Result<usize, StorageError> {
        self.inner.clean_staging(max_age).await
    }
}
