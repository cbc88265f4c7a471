//! A storage directory is shared with upstream Nixery in both directions.
//!
//! Upstream's formats are built here from their documented shape: a build
//! record `builds/<layer-key>` is `{"size":N,"digest":"sha256:<hex>",
//! "TarHash":"sha256:<hex>"}` (upstream's Go `manifest.Entry`), and every
//! object's content type is the `user.mime_type` extended attribute (empty
//! on build records), with no `.meta~` sidecar.

use std::{
    collections::{BTreeSet, HashMap},
    io::{Read, Write},
    path::Path,
    process::Command,
};

use serde_json::Value;
use support::media::{DOCKER_CONFIG as CONFIG_TYPE, DOCKER_LAYER as LAYER_TYPE};
use support::server::{TestServer, sha256_hex};
use support::{count_logs, layer_digests, pull_and_unpack, resolve_in_root, run};

const XATTR: &str = "user.mime_type";

fn server_on(root: &Path) -> TestServer {
    TestServer::builder()
        .env("NIX_TIMEOUT", "300")
        .storage_path(root)
        .start()
}

fn get_manifest(server: &TestServer, name: &str) -> Value {
    server.manifest_json(name, "latest")
}

/// Names of the objects under `root/<prefix>` (no helper files).
fn objects(root: &Path, prefix: &str) -> BTreeSet<String> {
    std::fs::read_dir(root.join(prefix))
        .expect("read storage directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect()
}

/// Whether files under `dir` keep user extended attributes.
fn supports_xattrs(dir: &Path) -> bool {
    let probe = dir.join(".xattr-probe");
    std::fs::write(&probe, b"").unwrap();
    let ok = xattr::set(&probe, XATTR, b"x").is_ok();
    std::fs::remove_file(probe).unwrap();
    ok
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut tar)
        .expect("a gzip layer");
    tar
}

fn sha1_hex(bytes: &[u8]) -> String {
    use sha1::Digest as _;
    hex::encode(sha1::Sha1::digest(bytes))
}

/// The sorted top-level store paths a layer tar holds, or `None` if it
/// holds anything outside `/nix/store` (the symlink layer).
fn store_paths(tar: &[u8]) -> Option<Vec<String>> {
    let mut paths = BTreeSet::new();
    for entry in tar::Archive::new(tar).entries().expect("a tar") {
        let entry = entry.expect("a tar entry");
        let path = entry.path().expect("an entry path").into_owned();
        let mut parts = path
            .components()
            .filter(|c| matches!(c, std::path::Component::Normal(_)))
            .map(|c| c.as_os_str().to_string_lossy().into_owned());
        match (
            parts.next().as_deref(),
            parts.next().as_deref(),
            parts.next(),
        ) {
            (Some("nix"), Some("store"), Some(name)) => {
                paths.insert(format!("/nix/store/{name}"));
            }
            (Some("nix"), Some("store") | None, None) => {}
            _ => return None,
        }
    }
    Some(paths.into_iter().collect())
}

/// The hex of `sha256:<hex>`, failing the test on any other shape.
fn hex_of(value: &Value) -> String {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"));
    let hex = text
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("no sha256: prefix: {text}"));
    assert!(
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "not a SHA-256: {text}"
    );
    hex.to_owned()
}

/// What upstream needs from a directory this project wrote: every build
/// record decodes as its `manifest.Entry` with prefixed digests, the blob
/// it names exists with that size and digest, its tar has the `TarHash`,
/// and the blob carries its content type in `user.mime_type`.
#[test]
fn records_and_blobs_written_here_are_what_upstream_reads() {
    let root = tempfile::tempdir().unwrap();
    let mut server = server_on(root.path());
    let manifest = get_manifest(&server, "hello");
    // Stopped, but kept: its log is printed if a check below fails.
    server.stop();
    let xattrs = supports_xattrs(root.path());
    if !xattrs {
        eprintln!("SKIPPED (partly): the storage directory has no user extended attributes");
    }

    let mut recorded = BTreeSet::new();
    for key in objects(root.path(), "builds") {
        let bytes = std::fs::read(root.path().join("builds").join(&key)).unwrap();
        let record: Value = serde_json::from_slice(&bytes).expect("record is JSON");
        let fields = support::keys(&record);
        assert_eq!(
            fields,
            BTreeSet::from(["mediaType", "size", "digest", "TarHash"]),
            "{record}"
        );
        assert_eq!(record["mediaType"], LAYER_TYPE);
        let digest = hex_of(&record["digest"]);
        let tar_hash = hex_of(&record["TarHash"]);
        let blob_path = root.path().join("layers").join(&digest);
        let blob = std::fs::read(&blob_path).expect("the record's blob exists");
        assert_eq!(record["size"].as_u64(), Some(blob.len() as u64), "{key}");
        assert_eq!(sha256_hex(&blob), digest, "{key}");
        assert_eq!(sha256_hex(&gunzip(&blob)), tar_hash, "{key}");
        if xattrs {
            assert_eq!(
                xattr::get(&blob_path, XATTR).unwrap().as_deref(),
                Some(LAYER_TYPE.as_bytes()),
                "{key}"
            );
        }
        // Upstream's key: the symlink layer's tar hash, or the SHA-1 of
        // the layer's (sorted) store paths joined by `:`.
        match store_paths(&gunzip(&blob)) {
            None => assert_eq!(key, tar_hash, "symlink layer key"),
            Some(paths) => assert_eq!(key, sha1_hex(paths.join(":").as_bytes()), "{paths:?}"),
        }
        recorded.insert(format!("sha256:{digest}"));
    }
    // Every layer of the image is recorded (the symlink layer under its
    // tar hash, as upstream keys it), so upstream can assemble the image
    // from the records alone.
    let layers: BTreeSet<String> = layer_digests(&manifest).into_iter().collect();
    assert_eq!(layers, recorded);
    if xattrs {
        let config = hex_of(&manifest["config"]["digest"]);
        assert_eq!(
            xattr::get(root.path().join("layers").join(config), XATTR)
                .unwrap()
                .as_deref(),
            Some(CONFIG_TYPE.as_bytes())
        );
    }
}

/// Rewrite a directory this project filled into what upstream leaves: its
/// own gzip bytes for every layer (as if packed by Go's compressor: same
/// tar, different blob), records in its format, content types only in
/// extended attributes, and no manifests (upstream keys them differently).
/// Returns the map from this project's layer digests to upstream's.
fn make_upstream_root(root: &Path) -> HashMap<String, String> {
    let mut renamed = HashMap::new();
    for key in objects(root, "builds") {
        let record_path = root.join("builds").join(&key);
        let ours: Value = serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
        let old_hex = hex_of(&ours["digest"]);
        let old_path = root.join("layers").join(&old_hex);
        let tar = gunzip(&std::fs::read(&old_path).unwrap());
        let mut encoder = flate2::GzBuilder::new()
            .filename("upstream")
            .write(Vec::new(), flate2::Compression::new(1));
        encoder.write_all(&tar).unwrap();
        let blob = encoder.finish().unwrap();
        let new_hex = sha256_hex(&blob);
        assert_ne!(new_hex, old_hex);
        let new_path = root.join("layers").join(&new_hex);
        std::fs::write(&new_path, &blob).unwrap();
        xattr::set(&new_path, XATTR, LAYER_TYPE.as_bytes()).unwrap();
        std::fs::remove_file(&old_path).unwrap();
        let record = format!(
            r#"{{"size":{},"digest":"sha256:{new_hex}","TarHash":"sha256:{}"}}"#,
            blob.len(),
            sha256_hex(&tar)
        );
        std::fs::write(&record_path, record).unwrap();
        xattr::set(&record_path, XATTR, b"").unwrap();
        renamed.insert(format!("sha256:{old_hex}"), format!("sha256:{new_hex}"));
    }
    // Upstream's own config and manifest objects are not ours: drop every
    // blob no record names, every manifest and every sidecar.
    let kept: BTreeSet<String> = renamed
        .values()
        .map(|d| d.trim_start_matches("sha256:").to_owned())
        .collect();
    for name in objects(root, "layers") {
        if !kept.contains(&name) {
            std::fs::remove_file(root.join("layers").join(name)).unwrap();
        }
    }
    std::fs::remove_dir_all(root.join("manifests")).unwrap();
    for prefix in ["layers", "builds", "staging"] {
        for entry in std::fs::read_dir(root.join(prefix)).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name().to_string_lossy().starts_with(".meta~") {
                std::fs::remove_file(entry.path()).unwrap();
            }
        }
    }
    renamed
}

/// A root upstream filled is served here: the image references exactly the
/// blobs upstream stored, no layer is packed or uploaded, the only new
/// objects are this project's config and manifest, and a real client pulls,
/// verifies and runs the image.
#[test]
fn a_root_written_by_upstream_is_served_reusing_every_layer() {
    let root = tempfile::tempdir().unwrap();
    if !supports_xattrs(root.path()) {
        eprintln!("SKIPPED: the temporary directory has no user extended attributes");
        return;
    }
    let ours = {
        let server = server_on(root.path());
        get_manifest(&server, "hello")
    };
    let renamed = make_upstream_root(root.path());
    let upstream_blobs = objects(root.path(), "layers");

    let server = server_on(root.path());
    let manifest = get_manifest(&server, "hello");
    let expected: Vec<String> = layer_digests(&ours)
        .iter()
        .map(|d| {
            renamed
                .get(d)
                .cloned()
                .unwrap_or_else(|| panic!("{d} has no record"))
        })
        .collect();
    assert_eq!(layer_digests(&manifest), expected);
    assert_eq!(
        count_logs(&server, "layer uploaded"),
        0,
        "a layer was packed again"
    );
    let new_blobs: BTreeSet<String> = objects(root.path(), "layers")
        .difference(&upstream_blobs)
        .cloned()
        .collect();
    let config = hex_of(&manifest["config"]["digest"]);
    assert!(new_blobs.contains(&config), "{new_blobs:?}");
    // The config, the Docker and OCI manifests and the SBOM (its blob, the
    // empty config and one artifact manifest per variant): no layer.
    assert!(
        new_blobs.len() <= 7,
        "new objects besides the config, manifests and SBOM: {new_blobs:?}"
    );
    for blob in &new_blobs {
        let response = server
            .head(&format!("/v2/hello/blobs/sha256:{blob}"))
            .expect_status(200);
        let content_type = response.header("content-type").unwrap_or_default();
        assert!(
            [
                "application/vnd.docker.container.image.v1+json",
                "application/vnd.docker.distribution.manifest.v2+json",
                "application/vnd.oci.image.manifest.v1+json",
                "application/spdx+json",
                "application/vnd.oci.empty.v1+json",
            ]
            .contains(&content_type),
            "new blob {blob} is a {content_type}"
        );
    }

    // Upstream's blobs are served with the type from their attribute, and
    // skopeo checks every digest while umoci checks every diff ID.
    let first = &layer_digests(&manifest)[0];
    let response = server
        .head(&format!("/v2/hello/blobs/{first}"))
        .expect_status(200);
    assert_eq!(response.header("content-type"), Some(LAYER_TYPE));
    let (_work, rootfs) = pull_and_unpack(server.addr(), "hello");
    assert!(resolve_in_root(&rootfs, "/bin/hello").is_some());
    let hello = run(Command::new("chroot").arg(&rootfs).arg("/bin/hello"));
    assert_eq!(hello.trim(), "Hello, world!");
}
