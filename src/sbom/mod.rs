//! The SBOM of an image: an SPDX 2.3 JSON document derived from the
//! runtime graph the Nix step returns ([`crate::layers::RuntimeGraph`]).
//!
//! - One package per store path of the closure, sorted by store path. Its
//!   `name` and `versionInfo` are the path's name split as
//!   `builtins.parseDrvName` splits it ([`drv_name`]); the store path is an
//!   external reference (category `OTHER`, type `nix-store-path`); the NAR
//!   hash, when the graph has it, is a `SHA256` checksum in hex
//!   ([`nar_hash`]). Nothing is known about licences or origins here, so
//!   those fields say `NOASSERTION`, and no files are analysed.
//! - `SPDXRef-DOCUMENT DESCRIBES` each top-level path: the requested
//!   packages, which the document's name lists as well.
//! - `DEPENDS_ON` from each path to each of its references (self
//!   references left out), sorted.
//! - Deterministic: the same graph and inputs give the same bytes. The
//!   creation time is [`CREATED`], 1970-01-01T00:00:01Z: the modification
//!   time Nix gives every file in the store and that every file of the
//!   image's layers carries, so the only date the content itself states.
//!   The namespace is derived from the image's Docker manifest digest,
//!   which the SBOM describes.
//!
//! Pure: data in, bytes out.

pub mod drv_name;
pub mod nar_hash;

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::Serialize;

use crate::{digest::Digest, layers::RuntimeGraph};

/// The document's creation time (see the module documentation).
pub const CREATED: &str = "1970-01-01T00:00:01Z";

/// The external reference type naming a package's store path.
pub const STORE_PATH_REFERENCE: &str = "nix-store-path";

/// What an SBOM is made from.
#[derive(Clone, Copy, Debug)]
pub struct SbomInput<'a> {
    /// The image's closure as the Nix step reported it.
    pub graph: &'a RuntimeGraph,
    /// The requested packages (attribute names, sorted).
    pub packages: &'a [String],
    /// The Nix system the image was built for (`x86_64-linux`).
    pub system: &'a str,
    /// The digest of the image's Docker manifest.
    pub manifest: Digest,
}

/// Why an SBOM could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    /// Serialising the document failed.
    #[error("serialising the SBOM failed: {0}")]
    Serialise(#[from] serde_json::Error),
}

/// The SPDX 2.3 JSON document of the image described by `input`.
pub fn spdx_document(input: &SbomInput<'_>) -> Result<Vec<u8>, SbomError> {
    let mut entries: Vec<_> = input.graph.graph.iter().collect();
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    entries.dedup_by(|a, b| a.path == b.path);

    let mut ids: HashMap<&str, String> = HashMap::with_capacity(entries.len());
    let mut taken = HashSet::with_capacity(entries.len());
    for entry in &entries {
        let id = unique_id(&entry.path, &mut taken);
        ids.insert(entry.path.as_str(), id);
    }

    let packages = entries
        .iter()
        .map(|entry| {
            let base = drv_name::split_store_path(&entry.path).map_or("", |(_, name)| name);
            let parsed = drv_name::parse_drv_name(base);
            let name = if parsed.name.is_empty() {
                entry.path.as_str()
            } else {
                parsed.name
            };
            Package {
                spdx_id: ids[entry.path.as_str()].clone(),
                name,
                version_info: (!parsed.version.is_empty()).then_some(parsed.version),
                download_location: NOASSERTION,
                files_analyzed: false,
                checksums: entry
                    .nar_hash
                    .as_deref()
                    .and_then(nar_hash::sha256_hex)
                    .map(|hex| {
                        vec![Checksum {
                            algorithm: "SHA256",
                            checksum_value: hex,
                        }]
                    })
                    .unwrap_or_default(),
                license_concluded: NOASSERTION,
                license_declared: NOASSERTION,
                copyright_text: NOASSERTION,
                external_refs: vec![ExternalRef {
                    reference_category: "OTHER",
                    reference_type: STORE_PATH_REFERENCE,
                    reference_locator: &entry.path,
                }],
            }
        })
        .collect();

    let described: BTreeSet<&str> = input
        .graph
        .export_references_graph
        .graph
        .iter()
        .filter_map(|path| ids.get(path.as_str()).map(String::as_str))
        .collect();
    let mut relationships: Vec<Relationship> = described
        .into_iter()
        .map(|id| Relationship {
            spdx_element_id: DOCUMENT_ID,
            relationship_type: "DESCRIBES",
            related_spdx_element: id,
        })
        .collect();
    let mut depends: BTreeSet<(&str, &str)> = BTreeSet::new();
    for entry in &entries {
        let from = ids[entry.path.as_str()].as_str();
        for reference in &entry.references {
            if reference == &entry.path {
                continue;
            }
            if let Some(to) = ids.get(reference.as_str()) {
                depends.insert((from, to.as_str()));
            }
        }
    }
    relationships.extend(depends.into_iter().map(|(from, to)| Relationship {
        spdx_element_id: from,
        relationship_type: "DEPENDS_ON",
        related_spdx_element: to,
    }));

    let document = Document {
        spdx_version: "SPDX-2.3",
        data_license: "CC0-1.0",
        spdx_id: DOCUMENT_ID,
        name: format!(
            "nixery image {} ({})",
            input.packages.join(" "),
            input.system
        ),
        document_namespace: format!("urn:nixery-rs:sbom:{}", input.manifest),
        creation_info: CreationInfo {
            created: CREATED,
            creators: [concat!("Tool: nixery-rs-", env!("CARGO_PKG_VERSION"))],
        },
        packages,
        relationships,
    };
    Ok(serde_json::to_vec(&document)?)
}

/// The document's own identifier.
const DOCUMENT_ID: &str = "SPDXRef-DOCUMENT";
/// SPDX's "nothing is asserted".
const NOASSERTION: &str = "NOASSERTION";

/// An SPDX identifier for `path` not yet in `taken`: `SPDXRef-` and the
/// last path component with every character SPDX does not allow in an
/// identifier replaced by `-`, plus a counter in the unlikely case that
/// two paths map to the same text.
fn unique_id(path: &str, taken: &mut HashSet<String>) -> String {
    let base: String = path
        .rsplit('/')
        .next()
        .unwrap_or(path)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut id = format!("SPDXRef-{base}");
    let mut n = 1;
    while taken.contains(&id) {
        n += 1;
        id = format!("SPDXRef-{base}-{n}");
    }
    taken.insert(id.clone());
    id
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Document<'a> {
    spdx_version: &'static str,
    data_license: &'static str,
    #[serde(rename = "SPDXID")]
    spdx_id: &'static str,
    name: String,
    document_namespace: String,
    creation_info: CreationInfo,
    packages: Vec<Package<'a>>,
    relationships: Vec<Relationship<'a>>,
}

#[derive(Serialize)]
struct CreationInfo {
    created: &'static str,
    creators: [&'static str; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Package<'a> {
    #[serde(rename = "SPDXID")]
    spdx_id: String,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version_info: Option<&'a str>,
    download_location: &'static str,
    files_analyzed: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    checksums: Vec<Checksum>,
    license_concluded: &'static str,
    license_declared: &'static str,
    copyright_text: &'static str,
    external_refs: Vec<ExternalRef<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Checksum {
    algorithm: &'static str,
    checksum_value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExternalRef<'a> {
    reference_category: &'static str,
    reference_type: &'static str,
    reference_locator: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Relationship<'a> {
    spdx_element_id: &'a str,
    relationship_type: &'static str,
    related_spdx_element: &'a str,
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::layers::{ExportReferences, PathInfo};

    const GIT: &str = "/nix/store/0p8rwq2kxxxxxxxxxxxxxxxxxxxxxxxx-git-2.46.0";
    const GLIBC: &str = "/nix/store/9vq1ixqaxxxxxxxxxxxxxxxxxxxxxxxx-glibc-2.40-66";
    const CERTS: &str = "/nix/store/xz5a7p0cxxxxxxxxxxxxxxxxxxxxxxxx-nss-cacert-3.104";

    fn entry(path: &str, refs: &[&str], nar_hash: Option<&str>) -> PathInfo {
        PathInfo {
            path: path.to_owned(),
            closure_size: 1,
            nar_size: None,
            references: refs.iter().map(|r| (*r).to_owned()).collect(),
            nar_hash: nar_hash.map(str::to_owned),
        }
    }

    fn graph() -> RuntimeGraph {
        RuntimeGraph {
            export_references_graph: ExportReferences {
                graph: vec![GIT.to_owned(), CERTS.to_owned()],
            },
            graph: vec![
                entry(
                    GIT,
                    &[GIT, GLIBC],
                    Some("sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"),
                ),
                entry(GLIBC, &[GLIBC], None),
                entry(CERTS, &[], Some("not a hash")),
            ],
        }
    }

    fn document(graph: &RuntimeGraph) -> Value {
        let packages = ["cacert".to_owned(), "git".to_owned()];
        let bytes = spdx_document(&SbomInput {
            graph,
            packages: &packages,
            system: "x86_64-linux",
            manifest: Digest::of(b"image"),
        })
        .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn package<'a>(doc: &'a Value, path: &str) -> &'a Value {
        doc["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["externalRefs"][0]["referenceLocator"] == path)
            .unwrap_or_else(|| panic!("no package for {path}"))
    }

    #[test]
    fn one_package_per_store_path_named_as_nix_splits_names() {
        let doc = document(&graph());
        assert_eq!(doc["packages"].as_array().unwrap().len(), 3);
        let git = package(&doc, GIT);
        assert_eq!(
            (git["name"].as_str(), git["versionInfo"].as_str()),
            (Some("git"), Some("2.46.0"))
        );
        assert_eq!(
            git["externalRefs"][0]["referenceType"],
            STORE_PATH_REFERENCE
        );
        assert_eq!(git["filesAnalyzed"], false);
        assert_eq!(
            git["checksums"],
            serde_json::json!([{
                "algorithm": "SHA256",
                "checksumValue": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            }])
        );
        let glibc = package(&doc, GLIBC);
        assert_eq!(glibc["versionInfo"], "2.40-66");
        assert!(glibc.get("checksums").is_none(), "no hash, no checksum");
        assert!(
            package(&doc, CERTS).get("checksums").is_none(),
            "bad hash, no checksum"
        );
    }

    #[test]
    fn requested_packages_are_described_and_references_are_dependencies() {
        let doc = document(&graph());
        let id = |path: &str| package(&doc, path)["SPDXID"].as_str().unwrap().to_owned();
        let relations: Vec<(String, String, String)> = doc["relationships"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["spdxElementId"].as_str().unwrap().to_owned(),
                    r["relationshipType"].as_str().unwrap().to_owned(),
                    r["relatedSpdxElement"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let doc_id = "SPDXRef-DOCUMENT".to_owned();
        let mut expected = vec![
            (doc_id.clone(), "DESCRIBES".to_owned(), id(GIT)),
            (doc_id, "DESCRIBES".to_owned(), id(CERTS)),
            (id(GIT), "DEPENDS_ON".to_owned(), id(GLIBC)),
        ];
        expected[..2].sort();
        assert_eq!(relations, expected);
        assert!(doc["name"].as_str().unwrap().contains("cacert git"));
        assert_eq!(doc["creationInfo"]["created"], CREATED);
        assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    }

    #[test]
    fn same_graph_in_any_order_gives_the_same_bytes() {
        let input = |graph: &RuntimeGraph| {
            let packages = ["git".to_owned()];
            spdx_document(&SbomInput {
                graph,
                packages: &packages,
                system: "x86_64-linux",
                manifest: Digest::of(b"image"),
            })
            .unwrap()
        };
        let forwards = graph();
        let mut backwards = graph();
        backwards.graph.reverse();
        backwards.export_references_graph.graph.reverse();
        assert_eq!(input(&forwards), input(&backwards));
    }

    #[test]
    fn identifiers_are_valid_and_unique_whatever_the_path() {
        let odd = "/nix/store/aaaa-gtk+3_x";
        let clash = "/nix/store/aaaa-gtk-3-x";
        let graph = RuntimeGraph {
            export_references_graph: ExportReferences { graph: vec![] },
            graph: vec![
                entry(odd, &[], None),
                entry(clash, &[], None),
                entry(odd, &[], None),
            ],
        };
        let doc = document(&graph);
        let ids: Vec<&str> = doc["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["SPDXID"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), 2, "duplicate paths are one package");
        assert_ne!(ids[0], ids[1]);
        for id in ids {
            let rest = id.strip_prefix("SPDXRef-").unwrap();
            assert!(
                rest.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'),
                "{id}"
            );
        }
    }
}
