//! Artifacts that refer to an image, and the referrers lists that find
//! them (the distribution spec's referrers API).
//!
//! An artifact is an OCI image manifest with an `artifactType`, the empty
//! config (`{}`, [`EMPTY_CONFIG`]), one layer holding its content and a
//! `subject`: the descriptor of the image manifest it is about. Every SBOM
//! is one ([`artifact_manifest`]). An image has two manifests (Docker and
//! OCI, see [`crate::media_type`]), so each artifact is written once per
//! variant, each copy naming that variant as its subject; the content
//! blob is shared.
//!
//! The referrers list of a subject is an OCI image index of descriptors of
//! the artifacts whose subject it is ([`ReferrersIndex`]). It is kept in
//! storage as `referrers/<subject hex>` ([`store`]); a subject without one
//! has no referrers, and the API answers an empty index.
//!
//! The documents here are pure and deterministic (serde structs, entries
//! sorted by digest).

pub mod store;

use serde::{Deserialize, Serialize};

use crate::{
    digest::Digest,
    manifest::BlobRef,
    media_type::{OCI_EMPTY, OCI_INDEX, OCI_MANIFEST},
};

/// The bytes of the OCI empty descriptor's blob.
pub const EMPTY_CONFIG: &[u8] = b"{}";

/// The manifest an artifact refers to.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    /// The subject's media type (Docker or OCI image manifest).
    pub media_type: &'a str,
    /// SHA-256 of the subject manifest.
    pub digest: Digest,
    /// Size of the subject manifest in bytes.
    pub size: u64,
}

/// The content of an artifact: its one layer.
#[derive(Clone, Copy, Debug)]
pub struct ArtifactContent<'a> {
    /// The artifact type, also the layer's media type
    /// (`application/spdx+json`).
    pub artifact_type: &'a str,
    /// Digest and size of the content blob.
    pub blob: &'a BlobRef,
    /// File name for clients that pull the artifact to disk.
    pub title: &'a str,
}

/// An artifact manifest and the descriptor its subject's referrers list
/// holds for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Artifact {
    /// The manifest JSON (media type [`OCI_MANIFEST`]).
    pub manifest: Vec<u8>,
    /// Its entry in the referrers list.
    pub descriptor: IndexEntry,
}

/// The artifact manifest for `content` about `subject`.
pub fn artifact_manifest(
    content: &ArtifactContent<'_>,
    subject: &Subject<'_>,
) -> Result<Artifact, serde_json::Error> {
    let manifest = ArtifactManifest {
        schema_version: 2,
        media_type: OCI_MANIFEST,
        artifact_type: content.artifact_type,
        config: ConfigDescriptor {
            media_type: OCI_EMPTY,
            digest: Digest::of(EMPTY_CONFIG),
            size: EMPTY_CONFIG.len() as u64,
            data: "e30=",
        },
        layers: [LayerDescriptor {
            media_type: content.artifact_type,
            digest: content.blob.digest,
            size: content.blob.size,
            annotations: Title {
                title: content.title,
            },
        }],
        subject: SubjectDescriptor {
            media_type: subject.media_type,
            digest: subject.digest,
            size: subject.size,
        },
    };
    let bytes = serde_json::to_vec(&manifest)?;
    let descriptor = IndexEntry {
        media_type: OCI_MANIFEST.to_owned(),
        digest: Digest::of(&bytes),
        size: bytes.len() as u64,
        artifact_type: Some(content.artifact_type.to_owned()),
    };
    Ok(Artifact {
        manifest: bytes,
        descriptor,
    })
}

/// One descriptor of a referrers list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexEntry {
    /// The referrer's media type (an OCI image manifest).
    pub media_type: String,
    /// The referrer's digest.
    pub digest: Digest,
    /// The referrer's size in bytes.
    pub size: u64,
    /// The referrer's artifact type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

/// A referrers list: an OCI image index of [`IndexEntry`]s, sorted by
/// digest, without duplicates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferrersIndex {
    schema_version: u32,
    media_type: String,
    manifests: Vec<IndexEntry>,
}

impl Default for ReferrersIndex {
    fn default() -> Self {
        Self {
            schema_version: 2,
            media_type: OCI_INDEX.to_owned(),
            manifests: Vec::new(),
        }
    }
}

impl ReferrersIndex {
    /// Parse a stored list; `None` if it is not one.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let index: Self = serde_json::from_slice(bytes).ok()?;
        (index.schema_version == 2 && index.media_type == OCI_INDEX).then_some(index)
    }

    /// The entries, sorted by digest.
    pub fn entries(&self) -> &[IndexEntry] {
        &self.manifests
    }

    /// The list with `entry` added (replacing an entry of the same digest).
    pub fn with(mut self, entry: IndexEntry) -> Self {
        self.manifests.retain(|e| e.digest != entry.digest);
        self.manifests.push(entry);
        self.manifests.sort_by_key(|e| e.digest);
        self
    }

    /// Only the entries whose artifact type is `artifact_type`.
    pub fn filtered(mut self, artifact_type: &str) -> Self {
        self.manifests
            .retain(|e| e.artifact_type.as_deref() == Some(artifact_type));
        self
    }

    /// The list as JSON.
    pub fn to_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ArtifactManifest<'a> {
    schema_version: u32,
    media_type: &'static str,
    artifact_type: &'a str,
    config: ConfigDescriptor,
    layers: [LayerDescriptor<'a>; 1],
    subject: SubjectDescriptor<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfigDescriptor {
    media_type: &'static str,
    digest: Digest,
    size: u64,
    /// The blob inline, base64 (`{}`), as the image spec's empty
    /// descriptor carries it.
    data: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LayerDescriptor<'a> {
    media_type: &'a str,
    digest: Digest,
    size: u64,
    annotations: Title<'a>,
}

/// The annotation naming a layer's file when an artifact is pulled to disk.
#[derive(Serialize)]
struct Title<'a> {
    #[serde(rename = "org.opencontainers.image.title")]
    title: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SubjectDescriptor<'a> {
    media_type: &'a str,
    digest: Digest,
    size: u64,
}

#[cfg(test)]
mod tests {
    use oci_spec::image::ImageManifest;

    use super::*;
    use crate::media_type::{DOCKER_MANIFEST, SPDX_JSON};

    fn sha256_hex(bytes: &[u8]) -> String {
        Digest::of(bytes).hex()
    }

    const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";

    fn sample() -> Artifact {
        let blob = BlobRef {
            digest: Digest::of(b"sbom"),
            size: 4,
        };
        artifact_manifest(
            &ArtifactContent {
                artifact_type: SPDX_JSON,
                blob: &blob,
                title: "sbom.spdx.json",
            },
            &Subject {
                media_type: DOCKER_MANIFEST,
                digest: Digest::of(b"image"),
                size: 5,
            },
        )
        .unwrap()
    }

    #[test]
    fn artifact_manifest_parses_strictly_as_an_oci_artifact() {
        let artifact = sample();
        let manifest = ImageManifest::from_reader(&artifact.manifest[..]).unwrap();
        assert_eq!(
            manifest.artifact_type().as_ref().unwrap().to_string(),
            SPDX_JSON
        );
        assert_eq!(manifest.config().media_type().to_string(), OCI_EMPTY);
        assert_eq!(
            manifest.config().digest().to_string(),
            format!("sha256:{}", sha256_hex(EMPTY_CONFIG))
        );
        let layer = &manifest.layers()[0];
        assert_eq!(
            layer.digest().to_string(),
            format!("sha256:{}", sha256_hex(b"sbom"))
        );
        assert_eq!(
            layer.annotations().as_ref().unwrap()[TITLE_ANNOTATION],
            "sbom.spdx.json"
        );
        let subject = manifest.subject().as_ref().unwrap();
        assert_eq!(
            subject.digest().to_string(),
            format!("sha256:{}", sha256_hex(b"image"))
        );
        assert_eq!(subject.media_type().to_string(), DOCKER_MANIFEST);
        assert_eq!(artifact.descriptor.size, artifact.manifest.len() as u64);
        assert_eq!(
            artifact.descriptor.digest.to_string(),
            format!("sha256:{}", sha256_hex(&artifact.manifest))
        );
        // The empty descriptor's inline data is its blob.
        let raw: serde_json::Value = serde_json::from_slice(&artifact.manifest).unwrap();
        assert_eq!(raw["config"]["data"], "e30=");
    }

    #[test]
    fn referrers_lists_stay_sorted_without_duplicates_and_filter_by_type() {
        let sbom = sample().descriptor;
        let other = IndexEntry {
            media_type: OCI_MANIFEST.to_owned(),
            digest: Digest::parse_hex(&"0".repeat(64)).unwrap(),
            size: 1,
            artifact_type: Some("application/x-other".to_owned()),
        };
        let index = ReferrersIndex::default()
            .with(sbom.clone())
            .with(other.clone())
            .with(sbom.clone());
        assert_eq!(index.entries(), [other.clone(), sbom.clone()]);
        let parsed = ReferrersIndex::parse(&index.to_bytes().unwrap()).unwrap();
        assert_eq!(parsed, index);
        assert_eq!(parsed.clone().filtered(SPDX_JSON).entries(), [sbom]);
        assert!(parsed.filtered("application/none").entries().is_empty());
    }

    #[test]
    fn the_empty_list_is_an_oci_index_and_garbage_is_not_a_list() {
        let raw: serde_json::Value =
            serde_json::from_slice(&ReferrersIndex::default().to_bytes().unwrap()).unwrap();
        assert_eq!(
            raw,
            serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})
        );
        assert!(ReferrersIndex::parse(b"{}").is_none());
        assert!(
            ReferrersIndex::parse(br#"{"schemaVersion":2,"mediaType":"x","manifests":[]}"#)
                .is_none()
        );
    }
}
