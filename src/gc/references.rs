//! What a manifest points at, read from any manifest JSON.
//!
//! The collector does not need to know which kind of manifest it reads
//! (Docker V2, OCI image manifest, OCI or Docker index, an artifact
//! manifest such as an SBOM): every one names its content with descriptors
//! `{"digest": "sha256:<hex>", ...}` in the same few places. So parsing is
//! general: `manifests[]` (an index's child manifests), `layers[]`,
//! `blobs[]` (artifact manifests) and `config` are what it references;
//! `subject` is what it is *about* (an SBOM's image), which keeps it alive
//! as long as that image lives. Digests of another algorithm or malformed
//! ones are ignored: no object of ours is named by them.

use serde_json::Value;

use crate::{digest::Digest, media_type::is_manifest};

/// The objects one manifest needs, each named by its digest (the object
/// `layers/<hex>`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct References {
    /// Child manifests (`manifests[]` of an index), followed in turn.
    pub manifests: Vec<Digest>,
    /// Blobs: `layers[]`, `blobs[]` and `config`.
    pub blobs: Vec<Digest>,
    /// The manifest this one is about (`subject`), if any.
    pub subject: Option<Digest>,
}

impl References {
    /// Every object referenced (child manifests and blobs, not the subject).
    pub fn all(&self) -> impl Iterator<Item = &Digest> {
        self.manifests.iter().chain(self.blobs.iter())
    }
}

/// The references of the manifest `bytes`; `None` when they are not a JSON
/// object (then the object is no manifest this collector can follow).
pub fn parse(bytes: &[u8]) -> Option<References> {
    let document: Value = serde_json::from_slice(bytes).ok()?;
    Some(references_of(document.as_object()?))
}

/// The references of `bytes` when they are a manifest, `None` when they
/// are anything else (a layer, a config, an SBOM body).
///
/// What an object is comes from its bytes, never from what a listing says
/// about it: S3's `ListObjectsV2` returns no content type, so a collector
/// that trusted listings found no manifest there and kept nothing. A
/// manifest of any kind carries `schemaVersion` (image manifests and
/// indexes) or a manifest `mediaType` (the draft artifact manifest); image
/// configs, SBOM documents and the empty config `{}` carry neither.
pub fn parse_manifest(bytes: &[u8]) -> Option<References> {
    if !looks_like_json_object(bytes) {
        return None;
    }
    let document: Value = serde_json::from_slice(bytes).ok()?;
    let object = document.as_object()?;
    let declared = object
        .get("mediaType")
        .and_then(Value::as_str)
        .is_some_and(is_manifest);
    if !declared && !object.contains_key("schemaVersion") {
        return None;
    }
    Some(references_of(object))
}

/// Whether `prefix` (the first bytes of an object) may start a JSON
/// object: a cheap test that lets layers (gzip, tar) go unread.
pub fn looks_like_json_object(prefix: &[u8]) -> bool {
    prefix
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_none_or(|b| *b == b'{')
}

fn references_of(object: &serde_json::Map<String, Value>) -> References {
    let descriptors = |field: &str| -> Vec<Digest> {
        object
            .get(field)
            .and_then(Value::as_array)
            .map(|items| items.iter().filter_map(descriptor_digest).collect())
            .unwrap_or_default()
    };
    let mut blobs = descriptors("layers");
    blobs.extend(descriptors("blobs"));
    blobs.extend(object.get("config").and_then(descriptor_digest));
    References {
        manifests: descriptors("manifests"),
        blobs,
        subject: object.get("subject").and_then(descriptor_digest),
    }
}

/// The digest of a descriptor `{"digest": "sha256:<hex>"}`.
fn descriptor_digest(descriptor: &Value) -> Option<Digest> {
    Digest::parse(descriptor.get("digest")?.as_str()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media_type::{DOCKER_MANIFEST, OCI_ARTIFACT};

    fn hex(c: char) -> String {
        c.to_string().repeat(64)
    }

    fn d(c: char) -> Digest {
        Digest::parse_hex(&hex(c)).unwrap()
    }

    #[test]
    fn an_image_manifest_references_its_config_and_layers() {
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}",
                "config":{{"digest":"sha256:{}","size":1}},
                "layers":[{{"digest":"sha256:{}"}},{{"digest":"sha256:{}"}}]}}"#,
            hex('a'),
            hex('b'),
            hex('c')
        );
        let refs = parse(manifest.as_bytes()).unwrap();
        assert_eq!(refs.blobs, [d('b'), d('c'), d('a')]);
        assert!(refs.manifests.is_empty() && refs.subject.is_none());
    }

    #[test]
    fn an_index_references_its_children_and_an_sbom_names_its_subject() {
        let index = format!(
            r#"{{"manifests":[{{"digest":"sha256:{}"}},{{"digest":"sha256:{}"}}]}}"#,
            hex('1'),
            hex('2')
        );
        assert_eq!(parse(index.as_bytes()).unwrap().manifests, [d('1'), d('2')]);
        let sbom = format!(
            r#"{{"artifactType":"application/spdx+json","blobs":[{{"digest":"sha256:{}"}}],
                "subject":{{"digest":"sha256:{}"}}}}"#,
            hex('3'),
            hex('4')
        );
        let refs = parse(sbom.as_bytes()).unwrap();
        assert_eq!(refs.blobs, [d('3')]);
        assert_eq!(refs.subject, Some(d('4')));
    }

    #[test]
    fn foreign_and_malformed_digests_are_ignored() {
        let manifest = format!(
            r#"{{"layers":[{{"digest":"sha512:{}"}},{{"digest":"sha256:../../etc"}},
                {{"digest":"sha256:{}"}},{{"digest":7}},"x"],"config":null}}"#,
            hex('a'),
            hex('A')
        );
        assert_eq!(parse(manifest.as_bytes()).unwrap(), References::default());
        assert!(parse(b"not json").is_none());
        assert!(parse(b"[1,2]").is_none());
    }

    #[test]
    fn manifests_are_told_from_configs_and_layers_by_their_bytes() {
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"sha256:{}"}},"layers":[]}}"#,
            hex('a')
        );
        assert_eq!(parse_manifest(manifest.as_bytes()).unwrap().blobs, [d('a')]);
        let artifact = format!(
            r#"{{"mediaType":"{OCI_ARTIFACT}","blobs":[{{"digest":"sha256:{}"}}]}}"#,
            hex('b')
        );
        assert_eq!(parse_manifest(artifact.as_bytes()).unwrap().blobs, [d('b')]);
        let config = br#"{"architecture":"amd64","os":"linux","config":{"Env":[]},"rootfs":{"type":"layers","diff_ids":[]}}"#;
        assert!(parse_manifest(config).is_none());
        assert!(parse_manifest(b"{}").is_none());
        assert!(parse_manifest(br#"{"spdxVersion":"SPDX-2.3"}"#).is_none());
        assert!(parse_manifest(&[0x1f, 0x8b, 8, 0]).is_none());
        assert!(looks_like_json_object(b"  \n{\"a\""));
        assert!(!looks_like_json_object(&[0x1f, 0x8b]));
        assert!(!looks_like_json_object(b"nix/store/"));
    }
}
