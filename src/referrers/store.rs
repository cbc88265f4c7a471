//! Referrers lists in storage: `referrers/<subject hex>` holds the
//! [`ReferrersIndex`] of the manifest whose SHA-256 is `<subject hex>`.
//!
//! The artifacts a list names are content-addressed objects
//! (`layers/<hex>`, stored as OCI image manifests) written before the list
//! names them, so a listed referrer can always be fetched. A missing list
//! is an empty one; a corrupt one is logged and read as empty (and
//! replaced by the next write).

use bytes::Bytes;

use super::{
    ArtifactContent, EMPTY_CONFIG, IndexEntry, ReferrersIndex, Subject, artifact_manifest,
};
use crate::{
    cache::{CacheError, bytes_stream},
    digest::Digest,
    manifest::BlobRef,
    media_type::{OCI_EMPTY, OCI_INDEX, OCI_MANIFEST},
    storage::{Storage, StorageError, StorageKey, small_object::read_small},
};

/// Largest referrers list read back.
const MAX_LIST: usize = 4 * 1024 * 1024;

/// The referrers list of the manifest `subject`.
pub async fn list(storage: &dyn Storage, subject: &Digest) -> Result<ReferrersIndex, StorageError> {
    let key = StorageKey::referrers(subject);
    let Some(bytes) = read_small(storage, &key, MAX_LIST).await? else {
        return Ok(ReferrersIndex::default());
    };
    Ok(ReferrersIndex::parse(&bytes).unwrap_or_else(|| {
        tracing::warn!(key = %key, "ignoring a corrupt referrers list");
        ReferrersIndex::default()
    }))
}

/// Add `entry` to the referrers list of `subject`. Call only once the
/// referrer itself is stored.
pub async fn add(
    storage: &dyn Storage,
    subject: &Digest,
    entry: IndexEntry,
) -> Result<(), CacheError> {
    let key = StorageKey::referrers(subject);
    let current = list(storage, subject).await?;
    if current.entries().contains(&entry) {
        return Ok(());
    }
    let updated = current.with(entry).to_bytes()?;
    storage
        .persist(&key, OCI_INDEX, bytes_stream(Bytes::from(updated)))
        .await?;
    Ok(())
}

/// An artifact to attach to manifests: its content and how it is named.
#[derive(Clone, Copy, Debug)]
pub struct ArtifactSpec<'a> {
    /// The artifact type, also the content blob's media type.
    pub artifact_type: &'a str,
    /// File name for clients that pull the artifact to disk.
    pub title: &'a str,
    /// The content.
    pub content: &'a [u8],
}

/// Store `spec` as an artifact about each of `subjects`: the content blob
/// and the empty config once, then per subject its artifact manifest and
/// that manifest's entry in the subject's referrers list, in that order,
/// so that a listed referrer is always complete. Returns the artifact
/// manifests' digests, in the order of `subjects`.
pub async fn attach(
    storage: &dyn Storage,
    spec: &ArtifactSpec<'_>,
    subjects: &[Subject<'_>],
) -> Result<Vec<Digest>, CacheError> {
    let blob = BlobRef {
        digest: Digest::of(spec.content),
        size: spec.content.len() as u64,
    };
    put_blob(
        storage,
        spec.artifact_type,
        Bytes::copy_from_slice(spec.content),
    )
    .await?;
    put_blob(storage, OCI_EMPTY, Bytes::from_static(EMPTY_CONFIG)).await?;
    let content = ArtifactContent {
        artifact_type: spec.artifact_type,
        blob: &blob,
        title: spec.title,
    };
    let mut digests = Vec::with_capacity(subjects.len());
    for subject in subjects {
        let artifact = artifact_manifest(&content, subject)?;
        put_blob(storage, OCI_MANIFEST, Bytes::from(artifact.manifest)).await?;
        digests.push(artifact.descriptor.digest);
        add(storage, &subject.digest, artifact.descriptor).await?;
    }
    Ok(digests)
}

/// Attach to `subject` every artifact that refers to the manifest `from`:
/// the same content blob, in a new artifact manifest naming `subject`
/// (how an image index gets the SBOMs of the images it lists). Returns
/// the new artifact manifests' digests; a listed artifact that cannot be
/// read as one is skipped (logged).
pub async fn reattach(
    storage: &dyn Storage,
    from: &Digest,
    subject: &Subject<'_>,
) -> Result<Vec<Digest>, CacheError> {
    let mut digests = Vec::new();
    for entry in list(storage, from).await?.entries() {
        let key = StorageKey::layer(&entry.digest);
        let Some(bytes) = read_small(storage, &key, MAX_LIST).await? else {
            tracing::warn!(key = %key, "a listed referrer is missing, not attaching it");
            continue;
        };
        let Some((artifact_type, layer)) = StoredArtifact::parse(&bytes) else {
            tracing::warn!(key = %key, "a listed referrer is not an artifact manifest, not attaching it");
            continue;
        };
        let blob = BlobRef {
            digest: layer.digest,
            size: layer.size,
        };
        let content = ArtifactContent {
            artifact_type: &artifact_type,
            blob: &blob,
            title: layer.title(),
        };
        let artifact = artifact_manifest(&content, subject)?;
        put_blob(storage, OCI_MANIFEST, Bytes::from(artifact.manifest)).await?;
        digests.push(artifact.descriptor.digest);
        add(storage, &subject.digest, artifact.descriptor).await?;
    }
    Ok(digests)
}

/// The parts of a stored artifact manifest [`reattach`] needs.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredArtifact {
    artifact_type: String,
    layers: Vec<StoredLayer>,
}

#[derive(serde::Deserialize)]
struct StoredLayer {
    digest: Digest,
    size: u64,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

impl StoredArtifact {
    /// The artifact type and the one layer, if `bytes` are an artifact
    /// manifest with exactly one layer.
    fn parse(bytes: &[u8]) -> Option<(String, StoredLayer)> {
        let artifact: Self = serde_json::from_slice(bytes).ok()?;
        let mut layers = artifact.layers.into_iter();
        match (layers.next(), layers.next()) {
            (Some(layer), None) => Some((artifact.artifact_type, layer)),
            _ => None,
        }
    }
}

impl StoredLayer {
    /// The layer's file name, empty if it has none.
    fn title(&self) -> &str {
        self.annotations
            .get("org.opencontainers.image.title")
            .map_or("", String::as_str)
    }
}

/// Store `bytes` as `layers/<their SHA-256>`.
async fn put_blob(
    storage: &dyn Storage,
    content_type: &str,
    bytes: Bytes,
) -> Result<(), CacheError> {
    let key = StorageKey::layer(&Digest::of(&bytes));
    storage
        .persist(&key, content_type, bytes_stream(bytes))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{media_type::OCI_MANIFEST, storage::filesystem::FilesystemStorage};

    fn entry(n: char) -> IndexEntry {
        IndexEntry {
            media_type: OCI_MANIFEST.to_owned(),
            digest: Digest::parse_hex(&n.to_string().repeat(64)).unwrap(),
            size: 10,
            artifact_type: Some("application/spdx+json".to_owned()),
        }
    }

    fn subject() -> Digest {
        Digest::parse_hex(&"ab".repeat(32)).unwrap()
    }

    /// The entries of [`subject`]'s list.
    async fn listed(storage: &FilesystemStorage) -> Vec<IndexEntry> {
        list(storage, &subject()).await.unwrap().entries().to_vec()
    }

    #[tokio::test]
    async fn lists_start_empty_and_keep_every_added_referrer_once() {
        let root = tempfile::tempdir().unwrap();
        let storage = FilesystemStorage::new(root.path()).unwrap();
        assert!(listed(&storage).await.is_empty());
        add(&storage, &subject(), entry('b')).await.unwrap();
        add(&storage, &subject(), entry('a')).await.unwrap();
        add(&storage, &subject(), entry('b')).await.unwrap();
        assert_eq!(listed(&storage).await, [entry('a'), entry('b')]);
        let file = Path::new(root.path())
            .join("referrers")
            .join(subject().hex());
        assert!(file.is_file());
    }

    #[tokio::test]
    async fn a_corrupt_list_reads_as_empty_and_is_replaced() {
        let root = tempfile::tempdir().unwrap();
        let storage = FilesystemStorage::new(root.path()).unwrap();
        std::fs::write(
            root.path().join("referrers").join(subject().hex()),
            b"garbage",
        )
        .unwrap();
        assert!(listed(&storage).await.is_empty());
        add(&storage, &subject(), entry('c')).await.unwrap();
        assert_eq!(listed(&storage).await, [entry('c')]);
    }

    #[tokio::test]
    async fn attached_artifacts_are_stored_and_listed_for_every_subject() {
        let root = tempfile::tempdir().unwrap();
        let storage = FilesystemStorage::new(root.path()).unwrap();
        let a = Digest::parse_hex(&"aa".repeat(32)).unwrap();
        let b = Digest::parse_hex(&"bb".repeat(32)).unwrap();
        let subjects = [
            Subject {
                media_type: crate::media_type::DOCKER_MANIFEST,
                digest: a,
                size: 1,
            },
            Subject {
                media_type: OCI_MANIFEST,
                digest: b,
                size: 2,
            },
        ];
        let spec = ArtifactSpec {
            artifact_type: "application/spdx+json",
            title: "sbom.spdx.json",
            content: b"{\"spdxVersion\":\"SPDX-2.3\"}",
        };
        let digests = attach(&storage, &spec, &subjects).await.unwrap();
        assert_eq!(digests.len(), 2);
        assert_ne!(
            digests[0], digests[1],
            "each subject has its own artifact manifest"
        );
        let layers = root.path().join("layers");
        assert!(layers.join(Digest::of(spec.content).hex()).is_file());
        assert_eq!(
            std::fs::read(layers.join(Digest::of(EMPTY_CONFIG).hex())).unwrap(),
            EMPTY_CONFIG
        );
        for (subject, digest) in subjects.iter().zip(&digests) {
            let listed = list(&storage, &subject.digest).await.unwrap();
            assert_eq!(listed.entries().len(), 1);
            assert_eq!(&listed.entries()[0].digest, digest);
            let manifest = std::fs::read(layers.join(digest.hex())).unwrap();
            let parsed: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
            assert_eq!(parsed["subject"]["digest"], subject.digest.to_string());
        }
        // Attaching again changes nothing.
        assert_eq!(attach(&storage, &spec, &subjects).await.unwrap(), digests);
        assert_eq!(list(&storage, &a).await.unwrap().entries().len(), 1);

        // An index gets the artifacts of a manifest it lists.
        let index = Subject {
            media_type: crate::media_type::OCI_INDEX,
            digest: Digest::of(b"index"),
            size: 3,
        };
        let reattached = reattach(&storage, &a, &index).await.unwrap();
        assert_eq!(reattached.len(), 1);
        let listed = list(&storage, &index.digest).await.unwrap();
        assert_eq!(listed.entries()[0].digest, reattached[0]);
        let manifest = std::fs::read(layers.join(reattached[0].hex())).unwrap();
        let parsed: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        assert_eq!(parsed["subject"]["digest"], index.digest.to_string());
        assert_eq!(
            parsed["layers"][0]["digest"],
            Digest::of(spec.content).to_string()
        );
        assert_eq!(
            parsed["layers"][0]["annotations"]["org.opencontainers.image.title"],
            "sbom.spdx.json"
        );
        assert_eq!(parsed["artifactType"], "application/spdx+json");
        // A manifest nothing refers to gives nothing.
        assert!(
            reattach(&storage, &Digest::of(b"none"), &index)
                .await
                .unwrap()
                .is_empty()
        );
    }
}
