//! Splitting a raw `/v2/...` request path into an endpoint with validated
//! parts. Pure: no storage, no state.
//!
//! The path is taken as the client sent it (percent-encoded). It is split on
//! `/` first and each segment is decoded afterwards, so an encoded slash
//! (`%2F`) or dot (`%2e%2e`) can never create or cross a path separator; a
//! decoded segment that is not UTF-8 or holds a `/` is rejected by the
//! grammar of the part it stands in.

use percent_encoding::percent_decode_str;

use super::error::RegistryError;
use crate::reference::{Digest, Reference, ReferenceError, RepositoryName};

/// A pull API endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v2/`: the version check.
    Version,
    /// `/v2/<name>/blobs/<digest>`.
    Blob {
        name: RepositoryName,
        digest: Digest,
    },
    /// `/v2/<name>/manifests/<reference>`.
    Manifest {
        name: RepositoryName,
        reference: Reference,
    },
    /// `/v2/<name>/tags/list`.
    TagsList { name: RepositoryName },
    /// `/v2/<name>/referrers/<digest>`. `subject` is `None` for a valid
    /// digest of another algorithm than SHA-256 (`sha512:<128 hex>`),
    /// which names no manifest here.
    Referrers {
        name: RepositoryName,
        subject: Option<Digest>,
    },
}

impl Endpoint {
    /// The repository the request is about (`None` for the version
    /// check): what pull authentication grants access to.
    pub fn repository(&self) -> Option<&RepositoryName> {
        match self {
            Endpoint::Version => None,
            Endpoint::Blob { name, .. }
            | Endpoint::Manifest { name, .. }
            | Endpoint::TagsList { name }
            | Endpoint::Referrers { name, .. } => Some(name),
        }
    }
}

/// Whether `digest` is a well-formed SHA-512 digest.
fn is_sha512(digest: &str) -> bool {
    digest.strip_prefix("sha512:").is_some_and(|hex| {
        hex.len() == 128 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// Decode one segment; `None` if it is not UTF-8.
fn decode(segment: &str) -> Option<String> {
    percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// Parse the path of a request under `/v2`.
pub fn parse(raw_path: &str) -> Result<Endpoint, RegistryError> {
    let rest = match raw_path.strip_prefix("/v2") {
        Some("" | "/") => return Ok(Endpoint::Version),
        Some(rest) => rest
            .strip_prefix('/')
            .ok_or_else(RegistryError::no_such_endpoint)?,
        None => return Err(RegistryError::no_such_endpoint()),
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let [name_segments @ .., kind, reference] = segments.as_slice() else {
        return Err(RegistryError::no_such_endpoint());
    };
    let kind = decode(kind).ok_or_else(RegistryError::no_such_endpoint)?;
    let tags_list = kind == "tags" && decode(reference).as_deref() == Some("list");
    if kind != "blobs" && kind != "manifests" && kind != "referrers" && !tags_list {
        return Err(RegistryError::no_such_endpoint());
    }
    if name_segments.is_empty() {
        return Err(ReferenceError::Name("the name is empty").into());
    }
    let mut name = String::new();
    for (i, segment) in name_segments.iter().enumerate() {
        let decoded = decode(segment).ok_or(ReferenceError::Name("the name is not valid UTF-8"))?;
        if decoded.contains('/') {
            return Err(ReferenceError::Name("a path component contains an encoded '/'").into());
        }
        if i > 0 {
            name.push('/');
        }
        name.push_str(&decoded);
    }
    let name = RepositoryName::parse(&name)?;
    if tags_list {
        Ok(Endpoint::TagsList { name })
    } else if kind == "referrers" {
        let digest = decode(reference).ok_or(ReferenceError::Digest("not valid UTF-8"))?;
        let subject = match Digest::parse(&digest) {
            Ok(digest) => Some(digest),
            Err(_) if is_sha512(&digest) => None,
            Err(error) => return Err(ReferenceError::from(error).into()),
        };
        Ok(Endpoint::Referrers { name, subject })
    } else if kind == "blobs" {
        let digest = decode(reference).ok_or(ReferenceError::Digest("not valid UTF-8"))?;
        Ok(Endpoint::Blob {
            name,
            digest: Digest::parse(&digest).map_err(ReferenceError::from)?,
        })
    } else {
        let reference = decode(reference).ok_or(ReferenceError::Tag("not valid UTF-8"))?;
        Ok(Endpoint::Manifest {
            name,
            reference: Reference::parse(&reference)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::error::ErrorCode;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn code(path: &str) -> ErrorCode {
        parse(path).unwrap_err().code
    }

    #[test]
    fn version_and_well_formed_endpoints_parse() {
        assert_eq!(parse("/v2/").unwrap(), Endpoint::Version);
        assert_eq!(parse("/v2").unwrap(), Endpoint::Version);
        match parse(&format!("/v2/shell/git/blobs/sha256:{HEX}")).unwrap() {
            Endpoint::Blob { name, digest } => {
                assert_eq!(name.as_str(), "shell/git");
                assert_eq!(digest.hex(), HEX);
            }
            other => panic!("{other:?}"),
        }
        match parse("/v2/blobs/manifests/latest").unwrap() {
            Endpoint::Manifest { name, reference } => {
                assert_eq!(name.as_str(), "blobs");
                assert!(matches!(reference, Reference::Tag(_)));
            }
            other => panic!("{other:?}"),
        }
        match parse("/v2/shell/git/tags/list").unwrap() {
            Endpoint::TagsList { name } => assert_eq!(name.as_str(), "shell/git"),
            other => panic!("{other:?}"),
        }
        // A repository may itself be called `tags`.
        assert!(matches!(
            parse("/v2/tags/tags/list").unwrap(),
            Endpoint::TagsList { .. }
        ));
        // An encoded colon is accepted: it is decoded after splitting.
        assert!(parse(&format!("/v2/a/manifests/sha256%3A{HEX}")).is_ok());
    }

    #[test]
    fn referrers_take_a_digest_and_reject_anything_else() {
        match parse(&format!("/v2/shell/git/referrers/sha256:{HEX}")).unwrap() {
            Endpoint::Referrers { name, subject } => {
                assert_eq!(name.as_str(), "shell/git");
                assert_eq!(subject.unwrap().hex(), HEX);
            }
            other => panic!("{other:?}"),
        }
        let sha512 = format!("/v2/a/referrers/sha512:{HEX}{HEX}");
        assert!(matches!(
            parse(&sha512).unwrap(),
            Endpoint::Referrers { subject: None, .. }
        ));
        for bad in [
            "/v2/a/referrers/latest",
            "/v2/a/referrers/sha256:abc",
            "/v2/a/referrers/sha512:abc",
            "/v2/a/referrers/sha256:..%2F..",
            "/v2/a/referrers/md5:d41d8cd98f00b204e9800998ecf8427e",
        ] {
            assert_eq!(code(bad), ErrorCode::DigestInvalid, "{bad}");
        }
        assert_eq!(
            code(&format!("/v2/../referrers/sha256:{HEX}")),
            ErrorCode::NameInvalid
        );
    }

    #[test]
    fn traversal_in_every_position_is_rejected() {
        use ErrorCode::*;
        let cases = [
            ("/v2/../..", Unsupported),
            ("/v2/../blobs/x", NameInvalid),
            (&format!("/v2/../../blobs/sha256:{HEX}"), NameInvalid),
            (&format!("/v2/%2e%2e/blobs/sha256:{HEX}"), NameInvalid),
            (&format!("/v2/a%2F..%2F../blobs/sha256:{HEX}"), NameInvalid),
            ("/v2/a/blobs/sha256:..%2F..%2Fetc", DigestInvalid),
            ("/v2/a/blobs/..", DigestInvalid),
            ("/v2/a/blobs/%2e%2e", DigestInvalid),
            ("/v2/a/manifests/..", TagInvalid),
            ("/v2/a/manifests/%2e%2e%2fx", TagInvalid),
            (&format!("/v2/a%00/blobs/sha256:{HEX}"), NameInvalid),
            (&format!("/v2/a%ff/blobs/sha256:{HEX}"), NameInvalid),
            ("/v2/a/manifests/x%00", TagInvalid),
            ("/v2/a/blobs/sha256:%ff", DigestInvalid),
            (&format!("/v2//blobs/sha256:{HEX}"), NameInvalid),
            (&format!("/v2/blobs/sha256:{HEX}"), NameInvalid),
            ("/v2/../tags/list", NameInvalid),
            ("/v2/%2e%2e/tags/list", NameInvalid),
            ("/v2/tags/list", NameInvalid),
            ("/v2/a/tags/other", Unsupported),
            ("/v2/a/tags", Unsupported),
            ("/v2x", Unsupported),
        ];
        for (path, expected) in cases {
            assert_eq!(code(path), expected, "{path}");
        }
    }

    #[test]
    fn overlong_names_and_tags_are_rejected() {
        let long = "a".repeat(256);
        assert_eq!(
            code(&format!("/v2/{long}/manifests/latest")),
            ErrorCode::NameInvalid
        );
        let tag = "t".repeat(129);
        assert_eq!(
            code(&format!("/v2/a/manifests/{tag}")),
            ErrorCode::TagInvalid
        );
    }
}
