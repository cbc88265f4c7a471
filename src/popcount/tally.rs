//! Counting how often each package is referenced.

use std::collections::{BTreeMap, HashMap};

use super::store_path::StorePath;

/// Reference counts per package name.
///
/// A path's reference to itself is not counted (most outputs with a
/// `lib/` or a shebang refer to themselves): popularity is about how many
/// *other* paths pull a package in. Several versions of a package keep
/// separate entries because the key is the full name, version included,
/// which is what the layering code looks up.
#[derive(Debug, Default)]
pub struct Tally {
    counts: HashMap<String, u64>,
}

impl Tally {
    /// Counts each reference of `owner` once, except `owner` itself.
    pub fn add(&mut self, owner: &StorePath, references: &[StorePath]) {
        for reference in references.iter().filter(|r| *r != owner) {
            *self.counts.entry(reference.name().to_owned()).or_default() += 1;
        }
    }

    /// The popularity map: every package referenced more than once, by
    /// name, in sorted order. A count of one says nothing about popularity
    /// and only bloats the file, so those entries are dropped.
    pub fn popular(&self) -> BTreeMap<String, u64> {
        self.counts
            .iter()
            .filter(|(_, count)| **count > 1)
            .map(|(name, count)| (name.clone(), *count))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(hash_digit: char, name: &str) -> StorePath {
        let hash: String = std::iter::repeat_n(hash_digit, 32).collect();
        StorePath::parse(&format!("{hash}-{name}")).unwrap()
    }

    #[test]
    fn counts_of_one_are_dropped_and_self_references_ignored() {
        let glibc = path('1', "glibc-2.40");
        let zlib = path('2', "zlib-1.3");
        let curl = path('3', "curl-8.9");
        let git = path('4', "git-2.46");
        let mut tally = Tally::default();
        tally.add(&glibc, std::slice::from_ref(&glibc));
        tally.add(&zlib, &[glibc.clone(), zlib.clone()]);
        tally.add(&curl, &[glibc.clone(), zlib.clone(), curl.clone()]);
        tally.add(&git, &[glibc.clone(), zlib.clone(), curl.clone()]);
        let popular = tally.popular();
        assert_eq!(
            popular.into_iter().collect::<Vec<_>>(),
            [("glibc-2.40".to_owned(), 3), ("zlib-1.3".to_owned(), 2)]
        );
    }
}
