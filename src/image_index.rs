//! Image indexes: one document naming an image's manifest for each
//! platform, so that one tag serves amd64 and arm64 clients alike.
//!
//! The same index is written in one of two flavours: an OCI image index
//! for clients that accept OCI types, listing each platform's OCI image
//! manifest, and a Docker manifest list for clients that accept only
//! Docker's, listing each platform's Docker V2 manifest. So a client that
//! follows an entry gets the family of types it asked for. Each entry is a
//! descriptor of a platform's image manifest (stored by digest as
//! `layers/<hex>`, like every manifest) with its `platform`. The index itself is stored the same way, so that it is
//! served by digest like any manifest, and whatever walks manifests (GC,
//! referrers) finds its children by digest.
//!
//! Pure: entries in, bytes out, built from serde structs so that the same
//! entries always give the same bytes and so the same index digest.

use serde::{Deserialize, Serialize};

use crate::{
    digest::Digest,
    manifest::ManifestError,
    media_type::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST},
    platform::Platform,
};

/// Which flavour of index a client gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IndexKind {
    /// An OCI image index ([`OCI_INDEX`]).
    Oci,
    /// A Docker manifest list ([`DOCKER_MANIFEST_LIST`]).
    DockerList,
}

impl IndexKind {
    /// The index's media type.
    pub fn media_type(self) -> &'static str {
        match self {
            IndexKind::Oci => OCI_INDEX,
            IndexKind::DockerList => DOCKER_MANIFEST_LIST,
        }
    }

    /// The media type of the image manifests this flavour lists.
    pub fn entry_media_type(self) -> &'static str {
        match self {
            IndexKind::Oci => OCI_MANIFEST,
            IndexKind::DockerList => DOCKER_MANIFEST,
        }
    }
}

/// One platform's image manifest, as the index lists it: the OCI manifest
/// in an OCI index, the Docker one in a manifest list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// The platform the manifest is for.
    pub platform: Platform,
    /// The manifest's digest.
    pub digest: Digest,
    /// The manifest's size in bytes.
    pub size: u64,
}

/// The index JSON of `kind` listing `entries` in the order given.
pub fn assemble(kind: IndexKind, entries: &[IndexEntry]) -> Result<Vec<u8>, ManifestError> {
    let manifests = entries
        .iter()
        .map(|entry| Descriptor {
            media_type: kind.entry_media_type(),
            size: entry.size,
            digest: entry.digest,
            platform: PlatformJson {
                architecture: entry.platform.architecture(),
                os: entry.platform.os(),
                variant: entry.platform.variant(),
            },
        })
        .collect();
    let index = Index {
        schema_version: 2,
        media_type: kind.media_type(),
        manifests,
    };
    Ok(serde_json::to_vec(&index)?)
}

/// The media type a stored manifest document declares, when it is an index
/// this module writes; anything else is an image manifest ([`DOCKER_MANIFEST`]).
pub fn media_type_of(document: &[u8]) -> &'static str {
    #[derive(Deserialize)]
    struct Declared<'a> {
        #[serde(rename = "mediaType", borrow)]
        media_type: Option<&'a str>,
    }
    match serde_json::from_slice::<Declared<'_>>(document) {
        Ok(Declared {
            media_type: Some(OCI_INDEX),
        }) => OCI_INDEX,
        Ok(Declared {
            media_type: Some(DOCKER_MANIFEST_LIST),
        }) => DOCKER_MANIFEST_LIST,
        Ok(Declared {
            media_type: Some(OCI_MANIFEST),
        }) => OCI_MANIFEST,
        _ => DOCKER_MANIFEST,
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<Descriptor>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: &'static str,
    size: u64,
    digest: Digest,
    platform: PlatformJson,
}

#[derive(Serialize)]
struct PlatformJson {
    architecture: &'static str,
    os: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'static str>,
}

#[cfg(test)]
mod tests {
    use oci_spec::image::{Arch, ImageIndex, Os};

    use super::*;
    use crate::image::Arch as ImageArch;

    fn entries() -> Vec<IndexEntry> {
        vec![
            IndexEntry {
                platform: Platform::linux(ImageArch::Amd64),
                digest: Digest::parse_hex(&"a".repeat(64)).unwrap(),
                size: 1234,
            },
            IndexEntry {
                platform: Platform::linux(ImageArch::Arm64),
                digest: Digest::parse_hex(&"b".repeat(64)).unwrap(),
                size: 1250,
            },
        ]
    }

    #[test]
    fn oci_index_parses_strictly_with_one_platform_per_entry() {
        let bytes = assemble(IndexKind::Oci, &entries()).unwrap();
        let index = ImageIndex::from_reader(&bytes[..]).unwrap();
        assert_eq!(index.schema_version(), 2);
        assert_eq!(index.media_type().as_ref().unwrap().to_string(), OCI_INDEX);
        let listed: Vec<_> = index
            .manifests()
            .iter()
            .map(|d| {
                let p = d.platform().as_ref().unwrap();
                (
                    d.media_type().to_string(),
                    d.size(),
                    d.digest().to_string(),
                    p.os().clone(),
                    p.architecture().clone(),
                    p.variant().clone(),
                )
            })
            .collect();
        assert_eq!(
            listed,
            [
                (
                    OCI_MANIFEST.to_owned(),
                    1234,
                    format!("sha256:{}", "a".repeat(64)),
                    Os::Linux,
                    Arch::Amd64,
                    None
                ),
                (
                    OCI_MANIFEST.to_owned(),
                    1250,
                    format!("sha256:{}", "b".repeat(64)),
                    Os::Linux,
                    Arch::ARM64,
                    Some("v8".to_owned())
                ),
            ]
        );
    }

    #[test]
    fn flavours_differ_only_in_media_types_and_are_recognised_when_read_back() {
        let oci = assemble(IndexKind::Oci, &entries()).unwrap();
        let docker = assemble(IndexKind::DockerList, &entries()).unwrap();
        assert_eq!(media_type_of(&oci), OCI_INDEX);
        assert_eq!(media_type_of(&docker), DOCKER_MANIFEST_LIST);
        let text = String::from_utf8(docker).unwrap();
        assert_eq!(
            text.replace(DOCKER_MANIFEST_LIST, OCI_INDEX)
                .replace(DOCKER_MANIFEST, OCI_MANIFEST)
                .as_bytes(),
            &oci[..]
        );
        assert_eq!(media_type_of(br#"{"mediaType":"x"}"#), DOCKER_MANIFEST);
        assert_eq!(media_type_of(b"not json"), DOCKER_MANIFEST);
    }

    #[test]
    fn same_entries_give_the_same_bytes() {
        assert_eq!(
            assemble(IndexKind::Oci, &entries()).unwrap(),
            assemble(IndexKind::Oci, &entries()).unwrap()
        );
    }
}
