//! Grammar of the parts of a registry path: repository names, tags and
//! digests. Pure functions, no I/O.
//!
//! - A repository name is one or more components separated by `/`, each
//!   `[A-Za-z0-9][A-Za-z0-9._-]*`, at most [`MAX_NAME_LEN`] bytes in total.
//!   This is the distribution spec's grammar widened to upper case (package
//!   attributes are camelCase and non-Docker clients send it as is) and
//!   without its separator rules (`a..b` is allowed, a component is never
//!   `.` or `..` because it must start with a letter or digit).
//! - A tag is `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
//! - A digest is `sha256:` followed by 64 lowercase hex digits, a
//!   [`crate::digest::Digest`].

use std::fmt;

pub use crate::digest::Digest;
use crate::digest::DigestError;

/// Longest accepted repository name, in bytes (Docker's limit).
pub const MAX_NAME_LEN: usize = 255;
/// Longest accepted tag, in bytes.
pub const MAX_TAG_LEN: usize = 128;

/// Why a name, tag or digest was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// The repository name breaks the grammar.
    #[error("invalid repository name: {0}")]
    Name(&'static str),
    /// The tag breaks the grammar.
    #[error("invalid tag: {0}")]
    Tag(&'static str),
    /// The digest is not `sha256:` + 64 lowercase hex digits.
    #[error("invalid digest: {0}")]
    Digest(&'static str),
}

impl From<DigestError> for ReferenceError {
    fn from(error: DigestError) -> Self {
        ReferenceError::Digest(error.reason())
    }
}

/// A validated repository name such as `shell/git` or `arm64/htop`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RepositoryName(String);

impl RepositoryName {
    /// Check `name` against the repository name grammar.
    pub fn parse(name: &str) -> Result<Self, ReferenceError> {
        if name.is_empty() {
            return Err(ReferenceError::Name("the name is empty"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(ReferenceError::Name("the name is longer than 255 bytes"));
        }
        for component in name.split('/') {
            let mut bytes = component.bytes();
            match bytes.next() {
                None => return Err(ReferenceError::Name("a path component is empty")),
                Some(b) if !b.is_ascii_alphanumeric() => {
                    return Err(ReferenceError::Name(
                        "a path component must start with a letter or digit",
                    ));
                }
                Some(_) => {}
            }
            if !bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
                return Err(ReferenceError::Name(
                    "only letters, digits, '.', '_' and '-' are allowed in a path component",
                ));
            }
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated tag such as `latest`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tag(String);

impl Tag {
    /// Check `tag` against the tag grammar.
    pub fn parse(tag: &str) -> Result<Self, ReferenceError> {
        let mut bytes = tag.bytes();
        match bytes.next() {
            None => return Err(ReferenceError::Tag("the tag is empty")),
            Some(b) if !(b.is_ascii_alphanumeric() || b == b'_') => {
                return Err(ReferenceError::Tag(
                    "a tag must start with a letter, digit or '_'",
                ));
            }
            Some(_) => {}
        }
        if tag.len() > MAX_TAG_LEN {
            return Err(ReferenceError::Tag("the tag is longer than 128 bytes"));
        }
        if !bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
            return Err(ReferenceError::Tag(
                "only letters, digits, '.', '_' and '-' are allowed in a tag",
            ));
        }
        Ok(Self(tag.to_owned()))
    }

    /// The tag as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The last part of a manifest path: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    /// `manifests/<tag>`.
    Tag(Tag),
    /// `manifests/sha256:<hex>`.
    Digest(Digest),
}

impl Reference {
    /// A reference containing `:` is a digest, anything else a tag (a tag
    /// can never contain `:`).
    pub fn parse(reference: &str) -> Result<Self, ReferenceError> {
        if reference.contains(':') {
            Ok(Self::Digest(Digest::parse(reference)?))
        } else {
            Tag::parse(reference).map(Self::Tag)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn names_accept_nixery_style_paths() {
        for ok in [
            "shell",
            "shell/git/htop",
            "arm64/shell",
            "nixpkgs.python3Packages",
            "python3Packages.numpy/X_y-1",
            "a..b",
            "0",
        ] {
            assert!(RepositoryName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn names_reject_traversal_empty_components_and_odd_bytes() {
        for bad in [
            "", "..", "../etc", "a/../b", "a/./b", "/a", "a/", "a//b", ".hidden", "-a", "_a",
            "a b", "a\0b", "a%2e", "a:b", "a\\b", "é",
        ] {
            assert!(RepositoryName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_have_a_255_byte_limit() {
        let at_limit = format!("{}/{}", "a".repeat(127), "b".repeat(127));
        assert_eq!(at_limit.len(), 255);
        assert!(RepositoryName::parse(&at_limit).is_ok());
        let over = format!("{at_limit}c");
        assert_eq!(
            RepositoryName::parse(&over),
            Err(ReferenceError::Name("the name is longer than 255 bytes"))
        );
    }

    #[test]
    fn tags_follow_the_grammar_with_128_byte_limit() {
        for ok in ["latest", "_x", "v1.2.3-rc_1", &"a".repeat(128)] {
            assert!(Tag::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", "..", "a\0", &"a".repeat(129)] {
            assert!(Tag::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn references_split_into_tags_and_digests() {
        assert_eq!(
            Reference::parse("latest").unwrap(),
            Reference::Tag(Tag("latest".into()))
        );
        assert!(matches!(
            Reference::parse(&format!("sha256:{HEX}")),
            Ok(Reference::Digest(_))
        ));
        assert!(matches!(
            Reference::parse("md5:abc"),
            Err(ReferenceError::Digest(_))
        ));
        assert!(matches!(
            Reference::parse(".x"),
            Err(ReferenceError::Tag(_))
        ));
    }
}
