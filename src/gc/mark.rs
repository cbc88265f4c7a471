//! The mark phase, pure: which objects a collection keeps, from an
//! inventory of the storage and the retention policy.
//!
//! Roots are the manifests in use: pulled within `keep` (their use mark,
//! extended by the touch interval because a mark is only rewritten once per
//! interval), written within `keep` (a build is a use; this is the only use
//! upstream Nixery's images record), or younger than `grace`, and the
//! manifests of tag entries younger than `grace`. Everything a live
//! manifest references is live, transitively (an index keeps its child
//! manifests, which keep their layers and configs), and a manifest whose
//! `subject` is live is live itself (an SBOM lives as long as its image).
//! Whatever is not live and older than `grace` is garbage.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, SystemTime},
};

use super::references::References;
use crate::digest::Digest;

/// How long things are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Images not used for this long are collected.
    pub keep: Duration,
    /// Objects younger than this are never collected.
    pub grace: Duration,
    /// How often servers rewrite a use mark at most: a mark of time `t`
    /// stands for uses up to `t + touch_interval`.
    pub touch_interval: Duration,
}

/// A manifest found in `layers/`, with what it references.
#[derive(Clone, Debug)]
pub struct ManifestNode {
    /// What it references.
    pub refs: References,
    /// When the manifest object was last written.
    pub modified: SystemTime,
}

/// A cached tag entry `manifests/<key>` and the manifest it holds.
#[derive(Clone, Debug)]
pub struct TagEntry {
    /// The entry's key name (the image identity).
    pub name: String,
    /// The digest of its bytes: the manifest's digest.
    pub digest: Digest,
    /// When the entry was last written.
    pub modified: SystemTime,
}

/// What the storage holds, as far as marking needs it.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    /// Manifests stored under `layers/`, by digest.
    pub manifests: HashMap<Digest, ManifestNode>,
    /// Cached tag entries.
    pub tags: Vec<TagEntry>,
    /// Use marks: manifest digest -> time of the mark.
    pub marks: HashMap<Digest, SystemTime>,
}

/// How long ago `then` was at `now` (zero for times in the future).
pub fn age(now: SystemTime, then: SystemTime) -> Duration {
    now.duration_since(then).unwrap_or_default()
}

/// Every object the collection keeps, as digests of `layers/` objects:
/// the roots (see the module documentation) and what they reference.
pub fn live_set(inventory: &Inventory, policy: &Policy, now: SystemTime) -> HashSet<Digest> {
    let mut last_write: HashMap<Digest, SystemTime> = HashMap::new();
    for tag in &inventory.tags {
        let entry = last_write.entry(tag.digest).or_insert(tag.modified);
        *entry = (*entry).max(tag.modified);
    }
    let mut roots = Vec::new();
    for (digest, node) in &inventory.manifests {
        let mut last_use = node.modified;
        if let Some(tag_write) = last_write.get(digest) {
            last_use = last_use.max(*tag_write);
        }
        if let Some(mark) = inventory.marks.get(digest) {
            last_use = last_use.max(*mark + policy.touch_interval);
        }
        if age(now, last_use) <= policy.keep || age(now, node.modified) < policy.grace {
            roots.push(*digest);
        }
    }
    roots.extend(
        inventory
            .tags
            .iter()
            .filter(|tag| age(now, tag.modified) < policy.grace)
            .map(|tag| tag.digest),
    );
    let mut live = HashSet::new();
    extend(&mut live, inventory, roots);
    live
}

/// Add `roots` and everything they keep alive to `live`.
pub fn extend(
    live: &mut HashSet<Digest>,
    inventory: &Inventory,
    roots: impl IntoIterator<Item = Digest>,
) {
    let mut about: HashMap<Digest, Vec<Digest>> = HashMap::new();
    for (digest, node) in &inventory.manifests {
        if let Some(subject) = node.refs.subject {
            about.entry(subject).or_default().push(*digest);
        }
    }
    let mut pending: Vec<Digest> = roots.into_iter().collect();
    while let Some(digest) = pending.pop() {
        if !live.insert(digest) {
            continue;
        }
        if let Some(node) = inventory.manifests.get(&digest) {
            pending.extend(node.refs.all().copied());
        }
        if let Some(referrers) = about.get(&digest) {
            pending.extend(referrers.iter().copied());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(86_400);

    fn h(c: char) -> Digest {
        Digest::of(c.to_string().as_bytes())
    }

    fn policy() -> Policy {
        Policy {
            keep: 30 * DAY,
            grace: HOUR,
            touch_interval: HOUR,
        }
    }

    fn node(
        blobs: &[char],
        manifests: &[char],
        subject: Option<char>,
        at: SystemTime,
    ) -> ManifestNode {
        ManifestNode {
            refs: References {
                manifests: manifests.iter().map(|c| h(*c)).collect(),
                blobs: blobs.iter().map(|c| h(*c)).collect(),
                subject: subject.map(h),
            },
            modified: at,
        }
    }

    #[test]
    fn a_recently_pulled_image_keeps_its_blobs_and_an_unused_one_does_not() {
        let now = SystemTime::now();
        let old = now - 60 * DAY;
        let mut inventory = Inventory::default();
        inventory
            .manifests
            .insert(h('m'), node(&['a', 'b'], &[], None, old));
        inventory
            .manifests
            .insert(h('n'), node(&['b', 'c'], &[], None, old));
        inventory.marks.insert(h('m'), now - 2 * DAY);
        inventory.marks.insert(h('n'), now - 40 * DAY);
        let live = live_set(&inventory, &policy(), now);
        let expected: HashSet<Digest> = [h('m'), h('a'), h('b')].into();
        assert_eq!(live, expected);
    }

    #[test]
    fn the_touch_interval_extends_a_mark() {
        let now = SystemTime::now();
        let mut inventory = Inventory::default();
        inventory
            .manifests
            .insert(h('m'), node(&[], &[], None, now - 90 * DAY));
        // Marked 30 days and 30 minutes ago: pulls up to an hour later are
        // not recorded, so it may have been used 29.5 days ago.
        inventory.marks.insert(h('m'), now - 30 * DAY - HOUR / 2);
        assert!(live_set(&inventory, &policy(), now).contains(&h('m')));
        inventory.marks.insert(h('m'), now - 30 * DAY - 2 * HOUR);
        assert!(!live_set(&inventory, &policy(), now).contains(&h('m')));
    }

    #[test]
    fn young_manifests_and_tag_entries_are_roots_whatever_the_keep() {
        let now = SystemTime::now();
        let strict = Policy {
            keep: Duration::ZERO,
            ..policy()
        };
        let mut inventory = Inventory::default();
        inventory
            .manifests
            .insert(h('m'), node(&['a'], &[], None, now - HOUR / 2));
        inventory
            .manifests
            .insert(h('n'), node(&['b'], &[], None, now - 2 * HOUR));
        inventory.tags.push(TagEntry {
            name: "k".into(),
            digest: h('n'),
            modified: now - HOUR / 4,
        });
        let live = live_set(&inventory, &strict, now);
        for kept in ['m', 'a', 'n', 'b'] {
            assert!(live.contains(&h(kept)), "{kept}");
        }
    }

    #[test]
    fn an_index_keeps_its_children_and_a_subject_keeps_its_referrers() {
        let now = SystemTime::now();
        let old = now - 60 * DAY;
        let mut inventory = Inventory::default();
        inventory
            .manifests
            .insert(h('i'), node(&[], &['x', 'y'], None, old));
        inventory
            .manifests
            .insert(h('x'), node(&['a'], &[], None, old));
        inventory
            .manifests
            .insert(h('y'), node(&['b'], &[], None, old));
        // An SBOM about child x, and one about an image nobody uses.
        inventory
            .manifests
            .insert(h('s'), node(&['c'], &[], Some('x'), old));
        inventory
            .manifests
            .insert(h('t'), node(&['d'], &[], Some('z'), old));
        inventory
            .manifests
            .insert(h('z'), node(&['e'], &[], None, old));
        inventory.marks.insert(h('i'), now);
        let live = live_set(&inventory, &policy(), now);
        let expected: HashSet<Digest> = ['i', 'x', 'y', 'a', 'b', 's', 'c']
            .map(h)
            .into_iter()
            .collect();
        assert_eq!(live, expected);
    }

    #[test]
    fn a_tag_entry_write_counts_as_a_use() {
        let now = SystemTime::now();
        let mut inventory = Inventory::default();
        inventory
            .manifests
            .insert(h('m'), node(&['a'], &[], None, now - 90 * DAY));
        inventory.tags.push(TagEntry {
            name: "k".into(),
            digest: h('m'),
            modified: now - 3 * DAY,
        });
        assert!(live_set(&inventory, &policy(), now).contains(&h('a')));
    }
}
