//! Store path names as they appear in a channel's `store-paths` list and in
//! the `References:` line of a narinfo.
//!
//! Only the base name matters here: `<hash>-<name>`, where `<hash>` is 32
//! characters of Nix's base-32 alphabet. The hash becomes part of a URL and
//! of a cache file name, so it is validated before it is used for either.

use std::fmt;

/// Length of the hash part of a store path base name.
const HASH_LEN: usize = 32;

/// The characters Nix uses for base-32 hashes (no `e`, `o`, `u`, `t`).
const NIX_BASE32: &str = "0123456789abcdfghijklmnpqrsvwxyz";

/// A store path reduced to its hash and its package name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePath {
    hash: String,
    name: String,
}

/// Why a line or reference is not a store path.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StorePathError {
    /// The base name has no `-` after a 32-character hash.
    #[error("`{0}` is not of the form <32-character hash>-<name>")]
    Shape(String),
    /// The hash part uses characters outside Nix's base-32 alphabet.
    #[error("`{0}` has a hash outside Nix's base-32 alphabet")]
    Hash(String),
    /// The name part is empty or uses characters Nix does not allow.
    #[error("`{0}` has an invalid package name")]
    Name(String),
}

impl StorePath {
    /// Parses a full store path (`/nix/store/<hash>-<name>`) or a bare base
    /// name (`<hash>-<name>`, as in narinfo references). Any store directory
    /// is accepted; only the last component is looked at.
    pub fn parse(path: &str) -> Result<Self, StorePathError> {
        let base = path.trim_end_matches('/');
        let base = base.rsplit('/').next().unwrap_or(base);
        let shape = || StorePathError::Shape(path.to_owned());
        let (hash, name) = match (base.get(..HASH_LEN), base.get(HASH_LEN..)) {
            (Some(hash), Some(rest)) => (hash, rest.strip_prefix('-').ok_or_else(shape)?),
            _ => return Err(shape()),
        };
        if !hash.chars().all(|c| NIX_BASE32.contains(c)) {
            return Err(StorePathError::Hash(path.to_owned()));
        }
        let name_ok = !name.is_empty()
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-._?=".contains(c));
        if !name_ok {
            return Err(StorePathError::Name(path.to_owned()));
        }
        Ok(Self {
            hash: hash.to_owned(),
            name: name.to_owned(),
        })
    }

    /// The 32-character hash part; safe to use in a URL or a file name.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The package name: the base name without the `<hash>-` prefix. This is
    /// the key of the popularity map.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.hash, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "0c7c96gikmzv87i7lv3vq5s1cmfjd6zf";

    #[test]
    fn full_path_and_base_name_parse_to_the_same_value() {
        let full = StorePath::parse(&format!("/nix/store/{HASH}-glibc-2.40-66")).unwrap();
        let base = StorePath::parse(&format!("{HASH}-glibc-2.40-66")).unwrap();
        assert_eq!(full, base);
        assert_eq!(full.hash(), HASH);
        assert_eq!(full.name(), "glibc-2.40-66");
    }

    #[test]
    fn hash_outside_base32_alphabet_is_rejected() {
        // `e` is not in Nix's alphabet; `../` tricks end up here too.
        let bad = format!("{}e-x", &HASH[..31]);
        assert!(matches!(
            StorePath::parse(&bad),
            Err(StorePathError::Hash(_))
        ));
        let traversal = "../../../../../../../../../../etc-passwd";
        assert!(StorePath::parse(traversal).is_err());
    }

    #[test]
    fn short_or_nameless_paths_are_rejected() {
        assert!(matches!(
            StorePath::parse("abc-x"),
            Err(StorePathError::Shape(_))
        ));
        assert!(matches!(
            StorePath::parse(HASH),
            Err(StorePathError::Shape(_))
        ));
        assert!(matches!(
            StorePath::parse(&format!("{HASH}-")),
            Err(StorePathError::Name(_))
        ));
        assert!(matches!(
            StorePath::parse(&format!("{HASH}-a b")),
            Err(StorePathError::Name(_))
        ));
    }

    #[test]
    fn multibyte_input_does_not_panic() {
        assert!(StorePath::parse("ééééééééééééééééééééééééééééééééé-x").is_err());
    }
}
