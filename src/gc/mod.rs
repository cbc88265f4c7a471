//! Garbage collection: storage that does not grow forever, and never
//! breaks an image in use.
//!
//! The shape is the CNCF registry's (distribution): storage backends stay
//! small and dumb (`list`, `stat`, `delete`, `read_versioned`, `write_if` on
//! [`crate::storage::Storage`]), and mark-and-sweep over manifests lives
//! here, above them, with use-based retention on top.
//!
//! **Use.** Servers record that an image is used by rewriting a *use
//! mark* `uses/<manifest digest>` at most once per
//! `NIXERY_GC_TOUCH_INTERVAL` ([`watch`]). Building an image counts as a
//! use too (its tag entry and manifest are written then), which is the
//! only use upstream Nixery's images ever record.
//!
//! **Mark** ([`mark`]). The roots are the manifests used within `--keep`
//! and every manifest or tag entry younger than `--grace`. Whatever a live
//! manifest references is live: child manifests of an index, layers,
//! configs; a manifest whose `subject` is live is live too (an SBOM lives
//! as long as its image). References are read from any manifest JSON
//! ([`references`]), so indexes and artifact manifests need no code of
//! their own. Whether an object is a manifest is read from its bytes too,
//! never from listing metadata a backend may not return (S3 lists no
//! content type).
//!
//! **Listings stream** ([`collect`]): every prefix is read page by page,
//! each page under its own bound, in two passes (mark, then sweep), so
//! that memory holds the manifest graph and one entry per image, never a
//! listing of the bucket.
//!
//! **Sweep** ([`collect`]). Objects that are not live and are older than
//! `--grace` go, kind by kind: tag entries, layer records, manifests,
//! other blobs, use marks. So at every moment a tag entry names a manifest
//! that exists, a record a blob that exists, and a manifest blob exists
//! only while its layers do, also when a collection stops half-way.
//! Deleting an absent object succeeds, so a repeated or retried
//! collection is harmless.
//!
//! **Beside running servers** ([`generation`], [`watch`]). One collection
//! runs at a time: `gc/generation` is its lease, written only by
//! compare-and-swap, and judged alive by whether it changes on the
//! observer's monotonic clock (the argument is in [`generation`]). A
//! collection announces itself there, waits the notice period, marks,
//! announces `deleting`,
//! reads the use marks again (rescuing images confirmed meanwhile) and
//! deletes. Servers stamp their tier entries with the generation they were
//! checked under and confirm an entry against storage before serving it
//! under a newer one, so the next pull of a collected image rebuilds it;
//! builds that overlapped a collection check their blobs before their
//! manifest is served. The argument is written out in [`watch`]; the
//! tiers reach it only through [`tiers::Guard`].

pub mod cli;
pub mod collect;
pub mod generation;
pub mod mark;
pub mod periodic;
pub mod references;
pub mod tiers;
pub mod watch;

pub use collect::{Deletion, GcError, Kind, Options, Report, collect};
pub use mark::Policy;
pub use tiers::{Guard, Stamp, Stamped};
pub use watch::GcWatch;
