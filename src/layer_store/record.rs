//! Layer build records (`builds/<layer-key>`) and their stored form.
//!
//! Records are written in upstream Nixery's format, so that either server
//! can reuse the layers the other packed:
//!
//! ```json
//! {"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip",
//!  "size":1234,"digest":"sha256:<hex>","TarHash":"sha256:<hex>"}
//! ```
//!
//! `digest` and `size` describe the compressed blob `layers/<hex>`,
//! `TarHash` is the SHA-256 of the uncompressed tar (the image config's
//! `diff_id`). Upstream omits `mediaType` in the records it writes and sets
//! it when it builds a manifest; it is written here for completeness and
//! ignored when read. Reading also accepts the format earlier versions of
//! this project wrote, `{"digest":"<hex>","size":1234,"diff_id":"<hex>"}`.
//! A record without a usable diff ID (upstream records from before
//! `TarHash` existed) is rejected, which makes it a cache miss.

use serde::{Deserialize, Serialize};

use crate::{digest::Digest, media_type::DOCKER_LAYER as LAYER_MEDIA_TYPE};

/// What is known about a packed layer: enough to reference it from a
/// manifest without packing it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerRecord {
    /// SHA-256 of the compressed blob (`layers/<hex>`).
    pub digest: Digest,
    /// Size of the compressed blob in bytes.
    pub size: u64,
    /// SHA-256 of the uncompressed tar.
    pub diff_id: Digest,
}

/// Why stored bytes are not a usable record.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The bytes are not JSON of either known shape.
    #[error("not a build record: {0}")]
    Json(#[from] serde_json::Error),
    /// A digest field is not a SHA-256 (`sha256:` and 64 lowercase hex).
    #[error("field {field} is not a SHA-256 digest: {value:?}")]
    Digest {
        /// The field's name in the record.
        field: &'static str,
        /// Its value.
        value: String,
    },
    /// Neither `TarHash` nor `diff_id` is present.
    #[error("the record names no uncompressed tar hash")]
    NoDiffId,
}

/// Every field either format may hold.
#[derive(Deserialize)]
struct Stored {
    size: u64,
    digest: String,
    #[serde(rename = "TarHash")]
    tar_hash: Option<String>,
    diff_id: Option<String>,
}

/// The upstream-compatible form written.
#[derive(Serialize)]
struct Written<'a> {
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    size: u64,
    digest: Digest,
    #[serde(rename = "TarHash")]
    tar_hash: Digest,
}

/// The stored bytes of `record`, in upstream's format.
pub fn encode(record: &LayerRecord) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&Written {
        media_type: LAYER_MEDIA_TYPE,
        size: record.size,
        digest: record.digest,
        tar_hash: record.diff_id,
    })
}

/// Read a record in upstream's format or this project's earlier one.
pub fn decode(bytes: &[u8]) -> Result<LayerRecord, RecordError> {
    let stored: Stored = serde_json::from_slice(bytes)?;
    let digest = stored_digest("digest", &stored.digest)?;
    let diff_id = match (&stored.tar_hash, &stored.diff_id) {
        (Some(tar_hash), _) => stored_digest("TarHash", tar_hash)?,
        (None, Some(diff_id)) => stored_digest("diff_id", diff_id)?,
        (None, None) => return Err(RecordError::NoDiffId),
    };
    Ok(LayerRecord {
        digest,
        size: stored.size,
        diff_id,
    })
}

/// The digest `sha256:<hex>` or bare `<hex>` (the earlier format).
fn stored_digest(field: &'static str, value: &str) -> Result<Digest, RecordError> {
    Digest::parse_prefixed_or_hex(value).map_err(|_| RecordError::Digest {
        field,
        value: value.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> LayerRecord {
        LayerRecord {
            digest: Digest::parse_hex(&"a".repeat(64)).unwrap(),
            size: 1234,
            diff_id: Digest::parse_hex(&"b".repeat(64)).unwrap(),
        }
    }

    #[test]
    fn written_records_have_upstreams_field_names_and_prefixes() {
        let json: serde_json::Value = serde_json::from_slice(&encode(&record()).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "mediaType": LAYER_MEDIA_TYPE,
                "size": 1234,
                "digest": format!("sha256:{}", "a".repeat(64)),
                "TarHash": format!("sha256:{}", "b".repeat(64)),
            })
        );
        assert_eq!(decode(&encode(&record()).unwrap()).unwrap(), record());
    }

    #[test]
    fn upstream_records_are_read() {
        // As upstream's cache writes them: no mediaType.
        let upstream = format!(
            r#"{{"size":1234,"digest":"sha256:{}","TarHash":"sha256:{}"}}"#,
            "a".repeat(64),
            "b".repeat(64)
        );
        assert_eq!(decode(upstream.as_bytes()).unwrap(), record());
    }

    #[test]
    fn records_of_the_earlier_format_are_read() {
        let earlier = format!(
            r#"{{"digest":"{}","size":1234,"diff_id":"{}"}}"#,
            "a".repeat(64),
            "b".repeat(64)
        );
        assert_eq!(decode(earlier.as_bytes()).unwrap(), record());
    }

    #[test]
    fn records_without_valid_digests_are_rejected() {
        let hex = "a".repeat(64);
        let cases = [
            format!(r#"{{"size":1,"digest":"sha256:{hex}"}}"#),
            format!(r#"{{"size":1,"digest":"../x","TarHash":"sha256:{hex}"}}"#),
            format!(r#"{{"size":1,"digest":"sha512:{hex}","TarHash":"sha256:{hex}"}}"#),
            format!(
                r#"{{"size":1,"digest":"sha256:{hex}","TarHash":"sha256:{}"}}"#,
                "A".repeat(64)
            ),
            format!(r#"{{"size":-1,"digest":"sha256:{hex}","TarHash":"sha256:{hex}"}}"#),
            "{not json".to_owned(),
        ];
        for case in cases {
            assert!(decode(case.as_bytes()).is_err(), "{case}");
        }
    }
}
