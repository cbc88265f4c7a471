//! With `NIXERY_PLATFORMS` naming two platforms, a tag answers an image
//! index to clients whose `Accept` allows one (OCI or Docker flavour), the
//! first platform's manifest to the others; each entry is a real image of
//! its own, served by digest; the index survives a restart with the same
//! digest; and a platform that cannot be built is left out, not cached as
//! final, while the other is served. Real server, real Nix.
//!
//! arm64 builds use the copy of the offline set whose derivations ignore
//! the requested system (`support::any_system_pkgs`), except where the
//! test needs arm64 to fail: the embedded offline set's aarch64
//! derivations cannot be built on this x86-64 host.

use serde_json::Value;
use support::any_system_pkgs;
use support::media::{DOCKER_LIST, DOCKER_MANIFEST as MANIFEST_V2, OCI_INDEX, OCI_MANIFEST};
use support::server::{Answer, TestServer};

const BOTH: &str = "linux/amd64,linux/arm64";

fn server_with(platforms: &str, pkgs: Option<&std::path::Path>) -> TestServer {
    let mut builder = TestServer::builder()
        .env("NIX_TIMEOUT", "300")
        .env("NIXERY_PLATFORMS", platforms);
    if let Some(pkgs) = pkgs {
        builder = builder.env("NIXERY_PKGS_PATH", pkgs.display().to_string());
    }
    builder.start()
}

fn request(server: &TestServer, method: &str, path: &str, accept: &[&str]) -> Answer {
    server
        .call(method.parse().unwrap(), path)
        .accept_all(accept)
        .send()
}

/// GET of `path` that must succeed: its content type, digest header and
/// bytes.
fn get(server: &TestServer, path: &str, accept: &[&str]) -> (String, String, Vec<u8>) {
    server.get_document(path, accept)
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("JSON document")
}

/// The config blob of the manifest `digest` of `name`.
fn config_of(server: &TestServer, name: &str, digest: &str) -> Value {
    let (_, _, manifest) = get(server, &format!("/v2/{name}/manifests/{digest}"), &[]);
    let config = json(&manifest)["config"]["digest"]
        .as_str()
        .expect("config digest")
        .to_owned();
    let (_, _, config) = get(server, &format!("/v2/{name}/blobs/{config}"), &[]);
    json(&config)
}

fn events(server: &TestServer, message: &str) -> Vec<Value> {
    server
        .settled_log_events()
        .into_iter()
        .filter(|e| e["message"] == message)
        .collect()
}

#[test]
fn index_by_tag_names_one_real_image_per_platform_and_single_clients_get_the_first() {
    let pkgs = any_system_pkgs();
    let server = server_with(BOTH, Some(pkgs.path()));
    let (content_type, index_digest, index) = get(
        &server,
        "/v2/hello/manifests/latest",
        &[OCI_INDEX, MANIFEST_V2],
    );
    assert_eq!(content_type, OCI_INDEX);
    let index = json(&index);
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], OCI_INDEX);
    let entries = index["manifests"].as_array().expect("manifests");
    let platforms: Vec<Value> = entries.iter().map(|e| e["platform"].clone()).collect();
    assert_eq!(
        platforms,
        [
            serde_json::json!({"architecture": "amd64", "os": "linux"}),
            serde_json::json!({"architecture": "arm64", "os": "linux", "variant": "v8"}),
        ]
    );
    let systems: Vec<String> = events(&server, "nix build started")
        .iter()
        .filter_map(|e| e["system"].as_str().map(str::to_owned))
        .collect();
    assert!(
        systems.contains(&"x86_64-linux".to_owned())
            && systems.contains(&"aarch64-linux".to_owned()),
        "one Nix step per platform: {systems:?}"
    );

    // Each entry is served by digest (GET and HEAD) as the manifest it
    // says (the OCI one, in an OCI index), of the size it says, with the
    // architecture it says.
    let entry_is_served = |entry: &Value, media_type: &str, arch: &str| {
        let digest = entry["digest"].as_str().unwrap();
        assert_eq!(entry["mediaType"], media_type);
        let (content_type, _, bytes) = get(&server, &format!("/v2/hello/manifests/{digest}"), &[]);
        assert_eq!(content_type, media_type);
        assert_eq!(entry["size"], bytes.len());
        let head = request(
            &server,
            "HEAD",
            &format!("/v2/hello/manifests/{digest}"),
            &[],
        );
        assert_eq!(head.status, 200);
        assert_eq!(config_of(&server, "hello", digest)["architecture"], arch);
    };
    for (entry, arch) in entries.iter().zip(["amd64", "arm64"]) {
        entry_is_served(entry, OCI_MANIFEST, arch);
    }
    assert_ne!(
        entries[0]["digest"], entries[1]["digest"],
        "the platforms share one manifest"
    );

    // The index by digest, with its own type.
    let (content_type, _, _) = get(&server, &format!("/v2/hello/manifests/{index_digest}"), &[]);
    assert_eq!(content_type, OCI_INDEX);
    let head = request(&server, "HEAD", "/v2/hello/manifests/latest", &[OCI_INDEX]);
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("docker-content-digest"),
        Some(index_digest.as_str())
    );
    assert_eq!(head.header("content-type"), Some(OCI_INDEX));

    // Docker types only: the same platforms as a manifest list of the
    // Docker manifests.
    let (content_type, list_digest, list) = get(
        &server,
        "/v2/hello/manifests/latest",
        &[&format!("{MANIFEST_V2}, {DOCKER_LIST}")],
    );
    assert_eq!(content_type, DOCKER_LIST);
    assert_ne!(list_digest, index_digest);
    let list = json(&list);
    assert_eq!(list["mediaType"], DOCKER_LIST);
    let listed = list["manifests"].as_array().expect("manifests");
    let list_platforms: Vec<Value> = listed.iter().map(|e| e["platform"].clone()).collect();
    assert_eq!(list_platforms, platforms);
    for (entry, arch) in listed.iter().zip(["amd64", "arm64"]) {
        entry_is_served(entry, MANIFEST_V2, arch);
    }
    let (content_type, _, _) = get(&server, &format!("/v2/hello/manifests/{list_digest}"), &[]);
    assert_eq!(content_type, DOCKER_LIST);
    let (amd64, arm64) = (
        listed[0]["digest"].as_str().unwrap(),
        listed[1]["digest"].as_str().unwrap(),
    );

    // No index accepted: the first platform's manifest, as before.
    for accept in [&[][..], &[MANIFEST_V2][..], &["*/*"][..]] {
        let (content_type, digest, _) = get(&server, "/v2/hello/manifests/latest", accept);
        assert_eq!(
            (content_type.as_str(), digest.as_str()),
            (MANIFEST_V2, amd64)
        );
    }
    // `arm64/` is one arm64 image (the index's arm64 entry), never an index.
    let (content_type, digest, _) = get(
        &server,
        "/v2/arm64/hello/manifests/latest",
        &[OCI_INDEX, DOCKER_LIST],
    );
    assert_eq!(
        (content_type.as_str(), digest.as_str()),
        (MANIFEST_V2, arm64)
    );
    assert_eq!(
        events(&server, "building image").len(),
        2,
        "each platform is built once"
    );
}

#[test]
fn arm64_first_gives_single_clients_the_arm64_image() {
    let pkgs = any_system_pkgs();
    let server = server_with("linux/arm64,linux/amd64", Some(pkgs.path()));
    let (content_type, digest, _) = get(&server, "/v2/hello/manifests/latest", &[]);
    assert_eq!(content_type, MANIFEST_V2);
    assert_eq!(
        config_of(&server, "hello", &digest)["architecture"],
        "arm64"
    );
    let (_, _, index) = get(&server, "/v2/hello/manifests/latest", &[OCI_INDEX]);
    let arches: Vec<Value> = json(&index)["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["platform"]["architecture"].clone())
        .collect();
    assert_eq!(arches, ["arm64", "amd64"]);
}

#[test]
fn one_platform_answers_the_same_manifest_whatever_accept_says() {
    let server = server_with("linux/amd64", None);
    let (plain_type, plain_digest, plain) = get(&server, "/v2/hello/manifests/latest", &[]);
    let (oci_type, oci_digest, oci) = get(
        &server,
        "/v2/hello/manifests/latest",
        &[OCI_INDEX, DOCKER_LIST, MANIFEST_V2],
    );
    assert_eq!(plain_type, MANIFEST_V2);
    assert_eq!(
        (oci_type, oci_digest, oci),
        (plain_type, plain_digest, plain)
    );
}

#[test]
fn index_digest_is_the_same_after_a_restart() {
    let pkgs = any_system_pkgs();
    let storage = tempfile::tempdir().unwrap();
    let start = || {
        TestServer::builder()
            .env("NIX_TIMEOUT", "300")
            .env("NIXERY_PLATFORMS", BOTH)
            .env("NIXERY_PKGS_PATH", pkgs.path().display().to_string())
            .storage_path(storage.path())
            .start()
    };
    let mut first = start();
    let (_, before, _) = get(&first, "/v2/hello/git/manifests/latest", &[OCI_INDEX]);
    first.stop();

    // A new process with a new local tier: the index comes from storage.
    let second = start();
    let (content_type, after, _) = get(&second, "/v2/hello/git/manifests/latest", &[OCI_INDEX]);
    assert_eq!(
        (content_type.as_str(), after.as_str()),
        (OCI_INDEX, before.as_str())
    );
    let hits = events(&second, "index cache hit");
    assert!(
        hits.iter().any(|e| e["tier"] == "storage"),
        "no index cache hit from storage: {hits:?}"
    );
    assert!(
        events(&second, "building image").is_empty(),
        "rebuilt after a restart"
    );
}

#[test]
fn a_platform_that_fails_is_left_out_and_retried_while_the_other_is_served() {
    // The embedded offline set declares its derivations for the requested
    // system: aarch64-linux ones cannot be built on this x86-64 host.
    let server = server_with(BOTH, None);
    for round in 1..=2 {
        let (content_type, _, index) = get(&server, "/v2/hello/manifests/latest", &[OCI_INDEX]);
        assert_eq!(content_type, OCI_INDEX);
        let index = json(&index);
        let entries = index["manifests"].as_array().unwrap();
        assert_eq!(entries.len(), 1, "round {round}: {index}");
        assert_eq!(entries[0]["platform"]["architecture"], "amd64");
        let left_out = events(&server, "platform left out of the index");
        assert_eq!(left_out.len(), round, "{left_out:?}");
        assert_eq!(left_out[0]["platform"], "linux/arm64");
        assert_eq!(left_out[0]["kind"], "nix");
    }
    // Not cached as final: the second request ran arm64's Nix step again;
    // amd64 came from the manifest cache.
    let systems: Vec<String> = events(&server, "nix build started")
        .iter()
        .filter_map(|e| e["system"].as_str().map(str::to_owned))
        .collect();
    let count = |system: &str| systems.iter().filter(|s| *s == system).count();
    assert_eq!(
        (count("x86_64-linux"), count("aarch64-linux")),
        (1, 2),
        "{systems:?}"
    );
    let page = server.get("/").expect_status(200).text();
    assert!(page.contains("hello:latest (linux/arm64)"), "{page}");
    assert!(page.contains("left out of the image index"), "{page}");
}

#[test]
fn when_every_platform_fails_the_client_gets_the_single_platform_error() {
    let pkgs = any_system_pkgs();
    let server = server_with(BOTH, Some(pkgs.path()));
    let single = server_with("linux/amd64", Some(pkgs.path()));
    for (name, status) in [("failing", 500), ("nosuchpackage", 404)] {
        let path = format!("/v2/{name}/manifests/latest");
        let index = request(&server, "GET", &path, &[OCI_INDEX]);
        let alone = request(&single, "GET", &path, &[OCI_INDEX]);
        assert_eq!(
            (index.status, alone.status),
            (status, status),
            "{name}: {} / {}",
            index.text(),
            alone.text()
        );
        let (index, alone) = (index.json(), alone.json());
        assert_eq!(
            index["errors"][0]["code"], alone["errors"][0]["code"],
            "{name}"
        );
    }
    assert!(events(&server, "platform left out of the index").is_empty());
}
