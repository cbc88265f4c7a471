//! Image manifests and configs: the media types, the layer order and the
//! JSON documents a registry client receives.
//!
//! Every image is assembled as a Docker Image Manifest V2 Schema 2
//! document, and its OCI image manifest is derived from those bytes
//! ([`oci_variant`]): the same config and layer blobs, described with the
//! OCI media types. Everything here is pure: it takes layer descriptions
//! and returns bytes and digests, so it is tested without a server, Nix or
//! storage. The JSON is produced from serde structs (never maps), so the
//! same inputs always give byte-identical documents and therefore the same
//! manifest digests.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::media_type::{
    DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST, OCI_CONFIG, OCI_LAYER, OCI_MANIFEST,
};

/// The environment of every image: where the CA bundle that Nixery puts in
/// every image lives, for programs that honour `SSL_CERT_FILE`.
pub const DEFAULT_ENV: &str = "SSL_CERT_FILE=/etc/ssl/certs/ca-bundle.crt";

/// The config label naming the package source an image was built from.
pub const LABEL_SOURCE: &str = "org.opencontainers.image.source";
/// The config label naming the exact revision of that source.
pub const LABEL_REVISION: &str = "org.opencontainers.image.revision";
/// The config label naming the image (its name, sorted).
pub const LABEL_TITLE: &str = "org.opencontainers.image.title";

/// The labels of an image config: [`LABEL_SOURCE`], [`LABEL_REVISION`]
/// when the source has a revision, and [`LABEL_TITLE`]. A sorted map, so
/// the config's bytes never depend on insertion order.
pub fn labels(source: &str, revision: Option<&str>, title: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_SOURCE.to_owned(), source.to_owned());
    if let Some(revision) = revision {
        labels.insert(LABEL_REVISION.to_owned(), revision.to_owned());
    }
    labels.insert(LABEL_TITLE.to_owned(), title.to_owned());
    labels
}

/// One packed layer as the manifest and config need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerEntry {
    /// SHA-256 of the compressed blob.
    pub digest: Digest,
    /// Size in bytes of the compressed blob.
    pub size: u64,
    /// SHA-256 of the uncompressed tar.
    pub diff_id: Digest,
    /// The layer's merge rating from the grouping (higher = more popular).
    pub merge_rating: u128,
    /// The first (sorted) store path in the layer; breaks rating ties.
    pub first_path: String,
}

/// A blob described by its digest and size (the image config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobRef {
    /// SHA-256 of the blob.
    pub digest: Digest,
    /// Size in bytes of the blob.
    pub size: u64,
}

/// The documents of one image, ready to be stored and served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageDocuments {
    /// The image config JSON (store it as `layers/<config.digest>`).
    pub config: Vec<u8>,
    /// Digest and size of [`Self::config`].
    pub config_ref: BlobRef,
    /// The manifest JSON (media type [`DOCKER_MANIFEST`]).
    pub manifest: Vec<u8>,
    /// SHA-256 of [`Self::manifest`].
    pub manifest_digest: Digest,
}

/// Why image documents could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Serialising a document failed.
    #[error("serialising an image document failed: {0}")]
    Serialise(#[from] serde_json::Error),
    /// A stored Docker manifest to derive the OCI variant from is not one.
    #[error("not a Docker schema 2 image manifest: {0}")]
    NotDockerManifest(String),
}

/// Orders layers for the manifest: merge rating highest first, ties broken
/// by first store path (then digest), and `symlink_layer` always last.
///
/// Popular layers then form a common prefix across images, which clients
/// that re-download everything after the first differing layer benefit from.
pub fn order_layers(mut layers: Vec<LayerEntry>, symlink_layer: LayerEntry) -> Vec<LayerEntry> {
    layers.sort_by(|a, b| {
        b.merge_rating
            .cmp(&a.merge_rating)
            .then_with(|| a.first_path.cmp(&b.first_path))
            .then_with(|| a.digest.cmp(&b.digest))
    });
    layers.push(symlink_layer);
    layers
}

/// Builds the config and manifest of an image whose layers are `layers`
/// (in any order) plus `symlink_layer`, for `architecture` ("amd64" or
/// "arm64"), with `cmd` as the default command and `user` (numeric,
/// `uid:gid`) as the user when given, and `labels` (see [`labels`]).
pub fn assemble(
    architecture: &str,
    cmd: Option<&[String]>,
    user: Option<&str>,
    labels: &BTreeMap<String, String>,
    layers: Vec<LayerEntry>,
    symlink_layer: LayerEntry,
) -> Result<ImageDocuments, ManifestError> {
    let layers = order_layers(layers, symlink_layer);
    let config = config_json(architecture, cmd, user, labels, &layers)?;
    let config_ref = BlobRef {
        digest: Digest::of(&config),
        size: config.len() as u64,
    };
    let manifest = manifest_json(&config_ref, &layers)?;
    let manifest_digest = Digest::of(&manifest);
    Ok(ImageDocuments {
        config,
        config_ref,
        manifest,
        manifest_digest,
    })
}

/// The image config JSON for `layers` in the given order.
pub fn config_json(
    architecture: &str,
    cmd: Option<&[String]>,
    user: Option<&str>,
    labels: &BTreeMap<String, String>,
    layers: &[LayerEntry],
) -> Result<Vec<u8>, ManifestError> {
    let diff_ids = layers.iter().map(|layer| layer.diff_id).collect();
    let config = ImageConfig {
        architecture,
        os: "linux",
        rootfs: RootFs {
            kind: "layers",
            diff_ids,
        },
        config: RuntimeConfig {
            user,
            cmd,
            env: [DEFAULT_ENV],
            labels: (!labels.is_empty()).then_some(labels),
        },
    };
    Ok(serde_json::to_vec(&config)?)
}

/// The manifest JSON for `config` and `layers` in the given order.
pub fn manifest_json(config: &BlobRef, layers: &[LayerEntry]) -> Result<Vec<u8>, ManifestError> {
    let layers = layers
        .iter()
        .map(|layer| Descriptor {
            media_type: DOCKER_LAYER.to_owned(),
            size: layer.size,
            digest: layer.digest,
        })
        .collect();
    let manifest = Manifest {
        schema_version: 2,
        media_type: DOCKER_MANIFEST.to_owned(),
        config: Descriptor {
            media_type: DOCKER_CONFIG.to_owned(),
            size: config.size,
            digest: config.digest,
        },
        layers,
        annotations: BTreeMap::new(),
    };
    Ok(serde_json::to_vec(&manifest)?)
}

/// The OCI image manifest of the image whose Docker schema 2 manifest is
/// `docker` (as [`manifest_json`] writes it): the same descriptors with
/// the OCI manifest, config and layer media types, and `annotations` (the
/// image's labels, see [`labels`]; none when empty). The config blob is
/// shared: Docker and OCI image configs have the same JSON format.
pub fn oci_variant(
    docker: &[u8],
    annotations: &BTreeMap<String, String>,
) -> Result<Vec<u8>, ManifestError> {
    let not_docker = |what: &str| ManifestError::NotDockerManifest(what.to_owned());
    let mut manifest: Manifest =
        serde_json::from_slice(docker).map_err(|error| not_docker(&error.to_string()))?;
    if manifest.schema_version != 2 || manifest.media_type != DOCKER_MANIFEST {
        return Err(not_docker("wrong schemaVersion or mediaType"));
    }
    if manifest.config.media_type != DOCKER_CONFIG {
        return Err(not_docker("the config is not a Docker image config"));
    }
    if manifest
        .layers
        .iter()
        .any(|layer| layer.media_type != DOCKER_LAYER)
    {
        return Err(not_docker("a layer is not a gzip-compressed tar"));
    }
    manifest.media_type = OCI_MANIFEST.to_owned();
    manifest.config.media_type = OCI_CONFIG.to_owned();
    for layer in &mut manifest.layers {
        layer.media_type = OCI_LAYER.to_owned();
    }
    manifest.annotations = annotations.clone();
    Ok(serde_json::to_vec(&manifest)?)
}

/// The annotations of a stored OCI manifest (none when it has none or is
/// not one), so that a cached pair can be checked against
/// [`oci_variant`] of its Docker manifest.
pub fn annotations_of(oci: &[u8]) -> BTreeMap<String, String> {
    #[derive(Deserialize)]
    struct Annotated {
        #[serde(default)]
        annotations: BTreeMap<String, String>,
    }
    serde_json::from_slice::<Annotated>(oci)
        .map(|annotated| annotated.annotations)
        .unwrap_or_default()
}

#[derive(Serialize)]
struct ImageConfig<'a> {
    architecture: &'a str,
    os: &'static str,
    rootfs: RootFs,
    config: RuntimeConfig<'a>,
}

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<Digest>,
}

/// The part of the config a runtime reads; its keys are PascalCase, as the
/// OCI image spec and Docker require (upstream Nixery wrote lowercase keys,
/// which runtimes silently ignore).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RuntimeConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cmd: Option<&'a [String]>,
    env: [&'static str; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<&'a BTreeMap<String, String>>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    media_type: String,
    config: Descriptor,
    layers: Vec<Descriptor>,
    /// OCI manifests only (Docker schema 2 has no such field): the image's
    /// labels again, so that registries and tools that read only the
    /// manifest see them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    size: u64,
    digest: Digest,
}

#[cfg(test)]
mod tests {
    use oci_spec::image::{Arch, ImageConfiguration, ImageManifest, Os};
    use serde_json::Value;

    use super::*;

    fn hex_of(n: u8) -> Digest {
        Digest::of(&[n])
    }

    fn sha256_hex(bytes: &[u8]) -> Digest {
        Digest::of(bytes)
    }

    fn layer(n: u8, merge_rating: u128, first_path: &str) -> LayerEntry {
        LayerEntry {
            digest: hex_of(n),
            size: 1000 + u64::from(n),
            diff_id: hex_of(n + 100),
            merge_rating,
            first_path: first_path.to_owned(),
        }
    }

    fn symlink_layer() -> LayerEntry {
        layer(99, u128::MAX, "/nix/store/aaa-symlinks")
    }

    fn sample() -> (Vec<LayerEntry>, LayerEntry) {
        let layers = vec![
            layer(1, 5, "/nix/store/ccc-git"),
            layer(2, 900, "/nix/store/zzz-glibc"),
            layer(3, 5, "/nix/store/bbb-curl"),
            layer(4, 0, "/nix/store/aaa-hello"),
        ];
        (layers, symlink_layer())
    }

    #[test]
    fn layers_are_ordered_by_rating_then_first_path_with_symlink_layer_last() {
        let (layers, symlinks) = sample();
        let ordered: Vec<u8> = order_layers(layers, symlinks)
            .iter()
            .map(|l| (l.size - 1000) as u8)
            .collect();
        assert_eq!(ordered, vec![2, 3, 1, 4, 99]);
    }

    #[test]
    fn order_does_not_depend_on_input_order() {
        let (mut layers, symlinks) = sample();
        let forwards = order_layers(layers.clone(), symlinks.clone());
        layers.reverse();
        assert_eq!(order_layers(layers, symlinks), forwards);
    }

    #[test]
    fn manifest_parses_strictly_with_ordered_layer_descriptors() {
        let (layers, symlinks) = sample();
        let docs = assemble("amd64", None, None, &BTreeMap::new(), layers, symlinks).unwrap();
        let manifest = ImageManifest::from_reader(&docs.manifest[..]).unwrap();
        assert_eq!(manifest.schema_version(), 2);
        assert_eq!(
            manifest.media_type().as_ref().unwrap().to_string(),
            DOCKER_MANIFEST
        );
        let config = manifest.config();
        assert_eq!(config.media_type().to_string(), DOCKER_CONFIG);
        assert_eq!(
            config.digest().to_string(),
            sha256_hex(&docs.config).to_string()
        );
        assert_eq!(config.size(), docs.config.len() as u64);
        assert_eq!(docs.config_ref.digest, sha256_hex(&docs.config));
        let described: Vec<_> = manifest
            .layers()
            .iter()
            .map(|d| (d.media_type().to_string(), d.size(), d.digest().to_string()))
            .collect();
        let expected: Vec<_> = [2u8, 3, 1, 4, 99]
            .iter()
            .map(|&n| {
                (
                    DOCKER_LAYER.to_owned(),
                    1000 + u64::from(n),
                    hex_of(n).to_string(),
                )
            })
            .collect();
        assert_eq!(described, expected);
        assert_eq!(docs.manifest_digest, sha256_hex(&docs.manifest));
    }

    #[test]
    fn config_parses_strictly_with_diff_ids_in_layer_order() {
        let (layers, symlinks) = sample();
        let docs = assemble("arm64", None, None, &BTreeMap::new(), layers, symlinks).unwrap();
        let config = ImageConfiguration::from_reader(&docs.config[..]).unwrap();
        assert_eq!(config.architecture(), &Arch::ARM64);
        assert_eq!(config.os(), &Os::Linux);
        assert_eq!(config.rootfs().typ(), "layers");
        let expected: Vec<_> = [2u8, 3, 1, 4, 99]
            .iter()
            .map(|&n| hex_of(n + 100).to_string())
            .collect();
        assert_eq!(config.rootfs().diff_ids(), &expected);
        let runtime = config.config().as_ref().unwrap();
        assert_eq!(
            runtime.env().as_deref(),
            Some(&[DEFAULT_ENV.to_owned()][..])
        );
        assert_eq!(runtime.cmd(), &None);
    }

    #[test]
    fn config_keys_are_pascal_case_and_cmd_is_kept_when_given() {
        let (layers, symlinks) = sample();
        let cmd = vec!["/bin/hello".to_owned(), "--greeting=hi".to_owned()];
        let docs = assemble(
            "amd64",
            Some(&cmd),
            None,
            &BTreeMap::new(),
            layers,
            symlinks,
        )
        .unwrap();
        let parsed = ImageConfiguration::from_reader(&docs.config[..]).unwrap();
        assert_eq!(parsed.architecture(), &Arch::Amd64);
        assert_eq!(parsed.config().as_ref().unwrap().cmd().as_ref(), Some(&cmd));

        let raw: Value = serde_json::from_slice(&docs.config).unwrap();
        let keys: Vec<_> = raw["config"].as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, vec!["Cmd", "Env"]);
    }

    #[test]
    fn user_is_written_numerically_when_given() {
        let (layers, symlinks) = sample();
        let docs = assemble(
            "amd64",
            None,
            Some("65532:65532"),
            &BTreeMap::new(),
            layers,
            symlinks,
        )
        .unwrap();
        let parsed = ImageConfiguration::from_reader(&docs.config[..]).unwrap();
        assert_eq!(
            parsed.config().as_ref().unwrap().user().as_deref(),
            Some("65532:65532")
        );
        let raw: Value = serde_json::from_slice(&docs.config).unwrap();
        let keys: Vec<_> = raw["config"].as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, vec!["Env", "User"]);
    }

    #[test]
    fn labels_are_written_sorted_and_the_revision_only_when_known() {
        let (layers, symlinks) = sample();
        let with = labels("nixos-24.11", Some("4155c364"), "hello/nonroot");
        let docs = assemble("amd64", None, None, &with, layers.clone(), symlinks.clone()).unwrap();
        let parsed = ImageConfiguration::from_reader(&docs.config[..]).unwrap();
        let got = parsed.config().as_ref().unwrap().labels().clone().unwrap();
        assert_eq!(
            got.get(LABEL_SOURCE).map(String::as_str),
            Some("nixos-24.11")
        );
        assert_eq!(
            got.get(LABEL_REVISION).map(String::as_str),
            Some("4155c364")
        );
        assert_eq!(
            got.get(LABEL_TITLE).map(String::as_str),
            Some("hello/nonroot")
        );
        let text = String::from_utf8(docs.config.clone()).unwrap();
        let order: Vec<usize> = [LABEL_REVISION, LABEL_SOURCE, LABEL_TITLE]
            .iter()
            .map(|label| text.find(label).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
        let without = labels("path", None, "hello");
        let docs = assemble("amd64", None, None, &without, layers, symlinks).unwrap();
        let raw: Value = serde_json::from_slice(&docs.config).unwrap();
        assert_eq!(
            raw["config"]["Labels"],
            serde_json::json!({LABEL_SOURCE: "path", LABEL_TITLE: "hello"})
        );
    }

    #[test]
    fn same_inputs_give_byte_identical_documents() {
        let (layers, symlinks) = sample();
        let first = assemble(
            "amd64",
            None,
            None,
            &BTreeMap::new(),
            layers.clone(),
            symlinks.clone(),
        )
        .unwrap();
        let mut shuffled = layers;
        shuffled.rotate_left(2);
        let second = assemble("amd64", None, None, &BTreeMap::new(), shuffled, symlinks).unwrap();
        assert_eq!(first, second);
    }

    #[test]
    fn malformed_digest_is_an_error_not_a_broken_manifest() {
        // A layer entry holds a parsed digest, so a malformed one is refused
        // where it is read and cannot reach a manifest.
        assert!(Digest::parse_hex("sha256:abc").is_err());
        assert!(Digest::parse_hex(&hex_of(1).hex().to_uppercase()).is_err());
    }

    #[test]
    fn oci_variant_has_the_same_blobs_with_oci_media_types() {
        let (layers, symlinks) = sample();
        let docs = assemble("amd64", None, None, &BTreeMap::new(), layers, symlinks).unwrap();
        let oci_bytes = oci_variant(&docs.manifest, &BTreeMap::new()).unwrap();
        assert_eq!(
            oci_variant(&docs.manifest, &BTreeMap::new()).unwrap(),
            oci_bytes,
            "not deterministic"
        );
        let docker = ImageManifest::from_reader(&docs.manifest[..]).unwrap();
        let oci = ImageManifest::from_reader(&oci_bytes[..]).unwrap();
        assert_eq!(oci.media_type().as_ref().unwrap().to_string(), OCI_MANIFEST);
        assert_eq!(oci.config().media_type().to_string(), OCI_CONFIG);
        assert_eq!(oci.config().digest(), docker.config().digest());
        assert_eq!(oci.config().size(), docker.config().size());
        let blobs = |m: &ImageManifest| -> Vec<_> {
            m.layers()
                .iter()
                .map(|d| (d.digest().to_string(), d.size()))
                .collect()
        };
        assert_eq!(blobs(&oci), blobs(&docker));
        assert!(
            oci.layers()
                .iter()
                .all(|d| d.media_type().to_string() == OCI_LAYER)
        );
    }

    #[test]
    fn the_oci_variant_carries_the_labels_as_annotations_and_the_docker_one_none() {
        let (layers, symlinks) = sample();
        let labels = labels("embedded", Some("4155c364"), "hello/nonroot");
        let docs = assemble("amd64", None, None, &labels, layers, symlinks).unwrap();
        let oci = oci_variant(&docs.manifest, &labels).unwrap();
        let parsed = ImageManifest::from_reader(&oci[..]).unwrap();
        let annotations: BTreeMap<String, String> =
            parsed.annotations().clone().unwrap().into_iter().collect();
        assert_eq!(annotations, labels);
        assert_eq!(annotations_of(&oci), labels);
        assert!(annotations_of(&docs.manifest).is_empty());
        let raw: serde_json::Value = serde_json::from_slice(&docs.manifest).unwrap();
        assert!(raw.get("annotations").is_none(), "{raw}");
        // No labels, no annotations field at all.
        let bare = oci_variant(&docs.manifest, &BTreeMap::new()).unwrap();
        let raw: serde_json::Value = serde_json::from_slice(&bare).unwrap();
        assert!(raw.get("annotations").is_none(), "{raw}");
    }

    #[test]
    fn oci_variant_refuses_what_is_not_a_docker_image_manifest() {
        let (layers, symlinks) = sample();
        let docs = assemble("amd64", None, None, &BTreeMap::new(), layers, symlinks).unwrap();
        let oci = oci_variant(&docs.manifest, &BTreeMap::new()).unwrap();
        for bad in [&oci[..], b"{}", b"not json", br#"{"schemaVersion":2}"#] {
            assert!(
                matches!(
                    oci_variant(bad, &BTreeMap::new()),
                    Err(ManifestError::NotDockerManifest(_))
                ),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
