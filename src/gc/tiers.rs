//! The collection protocol as the server's tiers see it: one small
//! interface, [`Guard`], and the entry it hands out, [`Stamped`].
//!
//! Every tier that keeps something read from storage (cached manifests in
//! memory and on disk, layer records in memory, small objects for blob
//! requests) stores [`Stamped`] entries and asks the guard before it
//! serves one; the builder reports builds to it. The argument why that
//! never serves what a collection removed is in [`super::watch`]; this
//! module only narrows [`GcWatch`] to what the tiers need, so that none of
//! them re-implements a step:
//!
//! - [`Guard::trusted`]: the warm path, no storage call.
//! - [`Guard::check`]: "serve this checked entry": confirm each manifest
//!   the entry holds against storage, recording its use; the entry comes
//!   back freshly stamped, or not at all when it was collected.
//! - [`Guard::by_digest`]: the same for a manifest served straight from
//!   storage by digest.
//! - [`Guard::used`]: record a use of an entry served as it was.
//! - [`Guard::read`]: stamp what was just read from storage.
//! - [`Guard::build_started`] and [`Guard::build_finished`]: a build and
//!   the collections it overlapped.
//! - [`Guard::on_collection`]: drop caches when a collection ends.
//!
//! A server without collections ([`Guard::off`]) trusts every entry and
//! records nothing.

use std::sync::Arc;

use super::watch::{GcWatch, Snapshot};
use crate::{digest::Digest, storage::StorageError};

/// The collection generation under which an entry was last checked
/// against storage, if it was.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stamp(Option<u64>);

impl Stamp {
    /// Never checked: served only after [`Guard::check`].
    pub const UNCHECKED: Stamp = Stamp(None);
}

/// A tier entry and the [`Stamp`] it was last checked under.
#[derive(Clone, Debug)]
pub struct Stamped<T> {
    value: T,
    stamp: Stamp,
}

impl<T> Stamped<T> {
    /// `value` checked under `stamp`.
    pub fn new(value: T, stamp: Stamp) -> Self {
        Self { value, stamp }
    }

    /// The entry, whether or not it may be served as it is.
    pub fn value(&self) -> &T {
        &self.value
    }

    /// The entry, taken out.
    pub fn into_value(self) -> T {
        self.value
    }
}

/// The protocol's interface to the tiers; see the module documentation.
/// Cheap to clone.
#[derive(Clone, Default)]
pub struct Guard {
    watch: Option<Arc<GcWatch>>,
}

/// A build in progress, as the guard saw collections when it began.
#[derive(Clone, Copy, Debug)]
pub struct BuildTicket(Option<Snapshot>);

impl Guard {
    /// No collections watched: every entry is trusted, nothing recorded.
    pub fn off() -> Self {
        Self::default()
    }

    /// Entries checked against the collections `watch` sees.
    pub fn watching(watch: Arc<GcWatch>) -> Self {
        Self { watch: Some(watch) }
    }

    /// The stamp for something just read from storage: the known
    /// generation when no collection may be deleting, else
    /// [`Stamp::UNCHECKED`] (checked again on next use).
    pub fn read(&self) -> Stamp {
        match &self.watch {
            None => Stamp(Some(0)),
            Some(watch) => Stamp(watch.stamp_for_read()),
        }
    }

    /// `entry`'s value when it may be served as it is, without asking
    /// storage: its stamp is the generation this server knows, and knows
    /// recently.
    pub fn trusted<'a, T>(&self, entry: &'a Stamped<T>) -> Option<&'a T> {
        match &self.watch {
            Some(watch) if !watch.trusts(entry.stamp.0) => None,
            _ => Some(&entry.value),
        }
    }

    /// Serve this checked entry: confirm each manifest of `value` (named
    /// by `manifests`) against storage, recording its use first; `value`
    /// stamped with the generation it was confirmed under, or `None` when
    /// a collection removed one of them (the entry must go).
    pub async fn check<T>(
        &self,
        value: T,
        manifests: &[Digest],
    ) -> Result<Option<Stamped<T>>, StorageError> {
        let Some(watch) = &self.watch else {
            return Ok(Some(Stamped::new(value, Stamp::UNCHECKED)));
        };
        let mut stamp = u64::MAX;
        for digest in manifests {
            match watch.confirm(digest).await? {
                Some(confirmed) => stamp = stamp.min(confirmed),
                None => return Ok(None),
            }
        }
        Ok(Some(Stamped::new(value, Stamp(Some(stamp)))))
    }

    /// Whether the manifest `digest`, which storage has just shown to
    /// exist, may be served by digest: confirmed while a collection may be
    /// deleting, and its use recorded. `false` when it was collected.
    pub async fn by_digest(&self, digest: &Digest) -> Result<bool, StorageError> {
        let Some(watch) = &self.watch else {
            return Ok(true);
        };
        if !watch.quiet() && watch.confirm(digest).await?.is_none() {
            return Ok(false);
        }
        watch.touch(digest);
        Ok(true)
    }

    /// Record a use of the manifests `digests`, off the request path and
    /// at most once per touch interval each.
    pub fn used<'a>(&self, digests: impl IntoIterator<Item = &'a Digest>) {
        if let Some(watch) = &self.watch {
            for digest in digests {
                watch.touch(digest);
            }
        }
    }

    /// A build begins.
    pub fn build_started(&self) -> BuildTicket {
        BuildTicket(self.watch.as_ref().map(|watch| watch.snapshot()))
    }

    /// A build that began with `ticket` stored the manifest `digest`
    /// naming `blobs`: `Ok(stamp)` for its tier entries, or
    /// `Err(missing)`: the blobs a collection it overlapped removed (build
    /// again, and trust no layer record naming one of them).
    pub async fn build_finished(
        &self,
        ticket: BuildTicket,
        digest: &Digest,
        blobs: &[Digest],
    ) -> Result<Result<Stamp, Vec<Digest>>, StorageError> {
        match (&self.watch, ticket.0) {
            (Some(watch), Some(started)) => Ok(watch
                .settle(started, digest, blobs)
                .await?
                .map(|stamp| Stamp(Some(stamp)))),
            _ => Ok(Ok(Stamp::UNCHECKED)),
        }
    }

    /// Call `listener` whenever this server sees a collection end (to drop
    /// caches of objects that may be gone).
    pub fn on_collection(&self, listener: impl Fn() + Send + Sync + 'static) {
        if let Some(watch) = &self.watch {
            watch.on_collection(listener);
        }
    }
}
