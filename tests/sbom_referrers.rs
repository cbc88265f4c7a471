//! Every built image has an SPDX 2.3 SBOM, found through the referrers
//! API, through the real server and real Nix:
//!
//! * discovery over plain HTTP as a client (oras, regclient, cosign) does
//!   it: the image's digest from a HEAD by tag, its referrers filtered by
//!   `artifactType=application/spdx+json`, the artifact manifest by
//!   digest, its `subject`, then the SBOM blob; for the Docker and the OCI
//!   variant alike;
//! * the SBOM of `shell/git` names exactly the store paths found in the
//!   pulled and unpacked image, with the NAR hashes and references the Nix
//!   store reports, and validates against the SPDX 2.3 JSON schema (the
//!   copy lib4sbom ships, with jsonschema) and spdx-tools' validator, both
//!   from the venv `scripts/setup-host.sh` installs;
//! * the same image gives the same SBOM bytes in another storage;
//! * with several platforms, an image index's referrers list the SBOM of
//!   every image it names.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::Command,
};

use serde_json::Value;
use support::media::{DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use support::server::{Answer, TestServer, sha256_hex};
use support::{any_system_pkgs, pull_and_unpack, run};

const SPDX_JSON: &str = "application/spdx+json";
/// The Python environment `scripts/setup-host.sh` prepares.
const VENV: &str = "/opt/nixery-venv";

/// What a client learns from a HEAD by tag: the digest of the variant its
/// `Accept` selects.
fn head_digest(server: &TestServer, name: &str, accept: &str) -> String {
    let response = server
        .head(&format!("/v2/{name}/manifests/latest"))
        .accept(accept)
        .expect_status(200);
    assert_eq!(response.header("content-type"), Some(accept));
    response
        .header("docker-content-digest")
        .expect("a digest header")
        .to_owned()
}

/// GET `path` with `accept` (if any), which must answer 200.
fn get(server: &TestServer, path: &str, accept: Option<&str>) -> Answer {
    accept
        .into_iter()
        .fold(server.get(path), |call, accept| call.accept(accept))
        .expect_status(200)
}

/// Find the SBOM of the manifest `subject` as a client does; returns the
/// SBOM bytes and the artifact manifest's digest.
fn discover_sbom(server: &TestServer, name: &str, subject: &str) -> (Vec<u8>, String) {
    let path = format!("/v2/{name}/referrers/{subject}?artifactType=application%2Fspdx%2Bjson");
    let response = get(server, &path, None);
    assert_eq!(response.header("content-type"), Some(OCI_INDEX));
    assert_eq!(response.header("oci-filters-applied"), Some("artifactType"));
    let index = response.json();
    let entries = index["manifests"].as_array().expect("manifests");
    assert_eq!(entries.len(), 1, "one SBOM per image variant: {index}");
    let entry = &entries[0];
    assert_eq!(entry["artifactType"], SPDX_JSON);
    assert_eq!(entry["mediaType"], OCI_MANIFEST);
    let artifact_digest = entry["digest"].as_str().unwrap().to_owned();

    let path = format!("/v2/{name}/manifests/{artifact_digest}");
    let response = get(server, &path, Some(OCI_MANIFEST));
    assert_eq!(response.header("content-type"), Some(OCI_MANIFEST));
    let bytes = &response.body;
    assert_eq!(format!("sha256:{}", sha256_hex(bytes)), artifact_digest);
    assert_eq!(entry["size"], bytes.len());
    let artifact = response.json();
    assert_eq!(artifact["artifactType"], SPDX_JSON);
    assert_eq!(artifact["subject"]["digest"], subject);
    assert_eq!(
        artifact["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    let config = artifact["config"]["digest"].as_str().unwrap();
    let empty = get(server, &format!("/v2/{name}/blobs/{config}"), None);
    assert_eq!(&empty.body[..], b"{}");

    let layer = &artifact["layers"][0];
    assert_eq!(layer["mediaType"], SPDX_JSON);
    let blob = layer["digest"].as_str().unwrap();
    let sbom = get(server, &format!("/v2/{name}/blobs/{blob}"), None).body;
    assert_eq!(format!("sha256:{}", sha256_hex(&sbom)), blob);
    assert_eq!(layer["size"], sbom.len());
    (sbom, artifact_digest)
}

#[test]
fn referrers_discovery_finds_the_sbom_of_every_variant() {
    let server = TestServer::start();
    let docker = head_digest(&server, "hello", DOCKER_MANIFEST);
    let oci = head_digest(&server, "hello", OCI_MANIFEST);
    let (from_docker, docker_artifact) = discover_sbom(&server, "hello", &docker);
    let (from_oci, oci_artifact) = discover_sbom(&server, "hello", &oci);
    assert_eq!(from_docker, from_oci, "one SBOM, two subjects");
    assert_ne!(docker_artifact, oci_artifact);
    let sbom: Value = serde_json::from_slice(&from_docker).unwrap();
    assert_eq!(sbom["spdxVersion"], "SPDX-2.3");
    // Any repository name finds it: referrers are found by digest.
    assert_eq!(discover_sbom(&server, "other/name", &docker).0, from_docker);
}

#[test]
fn an_image_index_lists_the_sbom_of_every_platform() {
    let pkgs = any_system_pkgs();
    let server = TestServer::builder()
        .env("NIX_TIMEOUT", "300")
        .env("NIXERY_PLATFORMS", "linux/amd64,linux/arm64")
        .env("NIXERY_PKGS_PATH", pkgs.path().display().to_string())
        .start();
    let index_digest = head_digest(&server, "hello", OCI_INDEX);
    let path = |route: &str| format!("/v2/hello/{route}/{index_digest}");
    let index = get(&server, &path("manifests"), None).json();
    let platforms = index["manifests"].as_array().unwrap();
    assert_eq!(platforms.len(), 2, "{index}");
    let referrers = get(&server, &path("referrers"), None).json();
    let entries = referrers["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "one SBOM per platform: {referrers}");
    let mut from_index = BTreeSet::new();
    for entry in entries {
        assert_eq!(entry["artifactType"], SPDX_JSON);
        let artifact = format!("/v2/hello/manifests/{}", entry["digest"].as_str().unwrap());
        let artifact = get(&server, &artifact, None).json();
        assert_eq!(artifact["subject"]["digest"], index_digest.as_str());
        assert_eq!(artifact["subject"]["mediaType"], OCI_INDEX);
        from_index.insert(artifact["layers"][0]["digest"].as_str().unwrap().to_owned());
    }
    // The same SBOMs as each platform's own manifest has.
    let per_platform: BTreeSet<String> = platforms
        .iter()
        .map(|p| {
            let (sbom, _) = discover_sbom(&server, "hello", p["digest"].as_str().unwrap());
            format!("sha256:{}", sha256_hex(&sbom))
        })
        .collect();
    assert_eq!(from_index, per_platform);
}

#[test]
fn the_same_image_gives_the_same_sbom_bytes_in_another_storage() {
    let mut first = TestServer::start();
    let digest = head_digest(&first, "hello", DOCKER_MANIFEST);
    let (sbom, _) = discover_sbom(&first, "hello", &digest);
    // Stopped, but kept: its log is printed if a check below fails.
    first.stop();
    let second = TestServer::start();
    assert_eq!(head_digest(&second, "hello", DOCKER_MANIFEST), digest);
    assert_eq!(discover_sbom(&second, "hello", &digest).0, sbom);
}

/// The store paths of the SBOM's packages, by SPDX identifier.
fn store_paths(sbom: &Value) -> BTreeMap<String, String> {
    sbom["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            let reference = &p["externalRefs"][0];
            assert_eq!(reference["referenceType"], "nix-store-path");
            (
                p["SPDXID"].as_str().unwrap().to_owned(),
                reference["referenceLocator"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn nix_store(args: &[&str]) -> String {
    run(Command::new("nix-store").args(args))
}

/// Validate `path` with the SPDX 2.3 JSON schema and spdx-tools, or say
/// SKIPPED when the venv lacks them.
fn validate_with_spdx_tools(path: &Path) {
    let python = Path::new(VENV).join("bin/python");
    let has = |module: &str| {
        Command::new(&python)
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !has("jsonschema") || !has("lib4sbom") || !has("spdx_tools") {
        eprintln!(
            "SKIPPED: SPDX schema validation needs jsonschema, lib4sbom and spdx-tools in {VENV} (scripts/setup-host.sh)"
        );
        return;
    }
    let script = r#"
import json, os, sys, jsonschema, lib4sbom
schema_path = os.path.join(os.path.dirname(lib4sbom.__file__), "schemas", "spdx", "2.3-schema.json")
schema = json.load(open(schema_path))
assert schema.get("title") == "SPDX 2.3", schema.get("title")
jsonschema.Draft7Validator(schema).validate(json.load(open(sys.argv[1])))
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document
messages = validate_full_spdx_document(parse_file(sys.argv[1]), "SPDX-2.3")
for m in messages:
    print(m.validation_message)
sys.exit(1 if messages else 0)
"#;
    run(Command::new(&python).args(["-c", script]).arg(path));
}

#[test]
fn sbom_of_shell_git_names_every_store_path_of_its_closure_and_validates() {
    let server = TestServer::builder().env("NIX_TIMEOUT", "600").start();
    let digest = head_digest(&server, "shell/git", DOCKER_MANIFEST);
    let (bytes, _) = discover_sbom(&server, "shell/git", &digest);
    let sbom: Value = serde_json::from_slice(&bytes).unwrap();
    let by_id = store_paths(&sbom);
    let listed: BTreeSet<&str> = by_id.values().map(String::as_str).collect();
    assert_eq!(listed.len(), by_id.len(), "a store path listed twice");

    // What the image really holds: the store paths in its layers.
    let (_work, rootfs) = pull_and_unpack(server.addr(), "shell/git");
    let in_image: BTreeSet<String> = std::fs::read_dir(rootfs.join("nix/store"))
        .expect("nix/store in the image")
        .map(|e| format!("/nix/store/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    assert!(in_image.len() > 5, "{in_image:?}");
    assert_eq!(
        listed,
        in_image.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        "the SBOM and the image disagree on the store paths"
    );
    // It is the closure: nothing it refers to is missing.
    let mut args = vec!["--query", "--requisites"];
    args.extend(listed.iter().copied());
    let closure: BTreeSet<String> = nix_store(&args).lines().map(str::to_owned).collect();
    assert_eq!(closure, in_image);

    // Names, hashes and edges as the Nix store has them.
    let id_of: BTreeMap<&str, &str> = by_id
        .iter()
        .map(|(id, p)| (p.as_str(), id.as_str()))
        .collect();
    let depends: BTreeSet<(String, String)> = sbom["relationships"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["relationshipType"] == "DEPENDS_ON")
        .map(|r| {
            (
                r["spdxElementId"].as_str().unwrap().to_owned(),
                r["relatedSpdxElement"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut expected_depends = BTreeSet::new();
    for package in sbom["packages"].as_array().unwrap() {
        let path = package["externalRefs"][0]["referenceLocator"]
            .as_str()
            .unwrap();
        let hash = nix_store(&["--query", "--hash", path]);
        let nix32 = hash
            .trim()
            .strip_prefix("sha256:")
            .expect("sha256 NAR hash");
        let hex = run(Command::new("nix-hash").args(["--type", "sha256", "--to-base16", nix32]));
        assert_eq!(package["checksums"][0]["algorithm"], "SHA256", "{path}");
        assert_eq!(
            package["checksums"][0]["checksumValue"],
            hex.trim(),
            "{path}"
        );
        let base = path.rsplit('/').next().unwrap();
        let name = base.split_once('-').unwrap().1;
        let version = package["versionInfo"].as_str().unwrap_or("");
        let joined = if version.is_empty() {
            package["name"].as_str().unwrap().to_owned()
        } else {
            format!("{}-{version}", package["name"].as_str().unwrap())
        };
        assert_eq!(joined, name, "name and version rejoin to the store name");
        for reference in nix_store(&["--query", "--references", path]).lines() {
            if reference != path {
                expected_depends.insert((id_of[path].to_owned(), id_of[reference].to_owned()));
            }
        }
    }
    assert_eq!(depends, expected_depends);
    let git = sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "git")
        .expect("a git package");
    assert!(git["versionInfo"].as_str().is_some_and(|v| !v.is_empty()));

    // The requested packages are the described ones.
    let described: BTreeSet<&str> = sbom["relationships"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["relationshipType"] == "DESCRIBES")
        .map(|r| {
            assert_eq!(r["spdxElementId"], "SPDXRef-DOCUMENT");
            by_id[r["relatedSpdxElement"].as_str().unwrap()].as_str()
        })
        .collect();
    let described_names: BTreeSet<&str> = sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| described.contains(p["externalRefs"][0]["referenceLocator"].as_str().unwrap()))
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for expected in [
        "git",
        "nano",
        "coreutils",
        "moreutils",
        "nss-cacert",
        "iana-etc",
    ] {
        assert!(
            described_names.contains(expected),
            "{expected} not described: {described_names:?}"
        );
    }

    let file = tempfile::Builder::new()
        .suffix(".spdx.json")
        .tempfile()
        .unwrap();
    std::fs::write(file.path(), &bytes).unwrap();
    validate_with_spdx_tools(file.path());
}
