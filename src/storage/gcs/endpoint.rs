//! Where JSON API calls and object URLs go: Google, or an emulator named by
//! `STORAGE_EMULATOR_HOST`.
//!
//! Object names contain `/` (`layers/<hex>`), so in JSON API paths they are
//! a single percent-encoded segment (`layers%2F<hex>`), while in public and
//! signed object URLs the `/` stays a path separator.

use reqwest::Url;

use super::GcsError;

/// Google's endpoint for both the JSON API and public object URLs.
const GOOGLE_ENDPOINT: &str = "https://storage.googleapis.com";

/// The base URL every call and every redirect is built on.
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    base: Url,
    emulated: bool,
}

impl Endpoint {
    /// Google Cloud Storage itself.
    pub(crate) fn google() -> Self {
        Self {
            base: Url::parse(GOOGLE_ENDPOINT).expect("constant URL parses"),
            emulated: false,
        }
    }

    /// An emulator named the way Google's client libraries accept it:
    /// `host:port` (plain HTTP assumed) or a full `http(s)://host:port` URL.
    pub(crate) fn emulator(value: &str) -> Result<Self, GcsError> {
        let trimmed = value.trim().trim_end_matches('/');
        let invalid = |reason: &str| GcsError::InvalidEmulatorHost {
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        if trimmed.is_empty() {
            return Err(invalid("it is empty"));
        }
        let with_scheme = if trimmed.contains("://") {
            trimmed.to_owned()
        } else {
            format!("http://{trimmed}")
        };
        let base = Url::parse(&with_scheme).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https"));
        }
        if base.host_str().is_none() {
            return Err(invalid("it names no host"));
        }
        if base.path() != "/" || base.query().is_some() {
            return Err(invalid("it must name only a scheme, host and port"));
        }
        Ok(Self {
            base,
            emulated: true,
        })
    }

    /// True when calls go to an emulator (no credentials are sent).
    pub(crate) fn is_emulated(&self) -> bool {
        self.emulated
    }

    /// `scheme://host[:port]` without a trailing slash, as the signed URL
    /// builder expects its endpoint.
    pub(crate) fn origin(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_owned()
    }

    /// `.../storage/v1/b/<bucket>`: bucket metadata.
    pub(crate) fn bucket(&self, bucket: &str) -> Url {
        self.with_segments(&["storage", "v1", "b", bucket])
    }

    /// `.../storage/v1/b/<bucket>/o`: the object listing.
    pub(crate) fn objects(&self, bucket: &str) -> Url {
        self.with_segments(&["storage", "v1", "b", bucket, "o"])
    }

    /// `.../storage/v1/b/<bucket>/o/<object>`: object metadata, download
    /// (with `alt=media`) and delete.
    pub(crate) fn object(&self, bucket: &str, object: &str) -> Url {
        self.with_segments(&["storage", "v1", "b", bucket, "o", object])
    }

    /// `.../storage/v1/b/<bucket>/o/<from>/rewriteTo/b/<bucket>/o/<to>`.
    pub(crate) fn rewrite(&self, bucket: &str, from: &str, to: &str) -> Url {
        self.with_segments(&[
            "storage",
            "v1",
            "b",
            bucket,
            "o",
            from,
            "rewriteTo",
            "b",
            bucket,
            "o",
            to,
        ])
    }

    /// `.../upload/storage/v1/b/<bucket>/o?uploadType=<kind>&name=<object>`.
    pub(crate) fn upload(&self, bucket: &str, object: &str, kind: &str) -> Url {
        let mut url = self.with_segments(&["upload", "storage", "v1", "b", bucket, "o"]);
        url.query_pairs_mut()
            .append_pair("uploadType", kind)
            .append_pair("name", object);
        url
    }

    /// The object's public URL: `<base>/<bucket>/<object>` with `/` in the
    /// object name kept as a path separator.
    pub(crate) fn public_object(&self, bucket: &str, object: &str) -> Url {
        let mut segments = vec![bucket];
        segments.extend(object.split('/'));
        self.with_segments(&segments)
    }

    /// The base URL with `segments` appended, each percent-encoded as one
    /// path segment (so a `/` inside a segment becomes `%2F`).
    fn with_segments(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulator_host_without_scheme_is_plain_http() {
        let endpoint = Endpoint::emulator("127.0.0.1:4443").unwrap();
        assert_eq!(endpoint.origin(), "http://127.0.0.1:4443");
        assert!(endpoint.is_emulated());
    }

    #[test]
    fn emulator_host_as_url_keeps_its_scheme() {
        let endpoint = Endpoint::emulator("https://gcs.local:9000/").unwrap();
        assert_eq!(endpoint.origin(), "https://gcs.local:9000");
    }

    #[test]
    fn emulator_host_with_a_path_or_other_scheme_is_rejected() {
        assert!(Endpoint::emulator("http://h:1/storage").is_err());
        assert!(Endpoint::emulator("ftp://h:1").is_err());
        assert!(Endpoint::emulator("").is_err());
    }

    #[test]
    fn object_names_are_one_encoded_segment_in_api_paths() {
        let url = Endpoint::google().object("bk", "layers/abc");
        assert_eq!(
            url.as_str(),
            "https://storage.googleapis.com/storage/v1/b/bk/o/layers%2Fabc"
        );
    }

    #[test]
    fn rewrite_path_encodes_both_names() {
        let url = Endpoint::emulator("h:1")
            .unwrap()
            .rewrite("bk", "staging/x", "layers/y");
        assert_eq!(
            url.as_str(),
            "http://h:1/storage/v1/b/bk/o/staging%2Fx/rewriteTo/b/bk/o/layers%2Fy"
        );
    }

    #[test]
    fn upload_url_carries_type_and_name_in_the_query() {
        let url = Endpoint::google().upload("bk", "layers/a", "resumable");
        assert_eq!(
            url.as_str(),
            "https://storage.googleapis.com/upload/storage/v1/b/bk/o?uploadType=resumable&name=layers%2Fa"
        );
    }

    #[test]
    fn public_url_keeps_slashes_between_prefix_and_name() {
        let url = Endpoint::google().public_object("bk", "layers/abc");
        assert_eq!(url.as_str(), "https://storage.googleapis.com/bk/layers/abc");
        let url = Endpoint::emulator("127.0.0.1:5")
            .unwrap()
            .public_object("bk", "layers/abc");
        assert_eq!(url.as_str(), "http://127.0.0.1:5/bk/layers/abc");
    }
}
