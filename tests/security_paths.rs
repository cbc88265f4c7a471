//! Hostile paths never reach a file outside `STORAGE_PATH` nor a key outside
//! `layers/`: each gets a 4xx (a registry error body whenever the request
//! reaches the application) and the bytes of the planted files never leak.
//!
//! Requests are written to a raw socket so that `..` and percent escapes
//! arrive exactly as sent (HTTP clients normalise them).

use std::{collections::BTreeSet, path::Path};

use support::server::{TestServer, raw_request, sha256_hex};

const SECRET: &[u8] = b"SECRET-CONTENT-MUST-NOT-LEAK";

/// All file paths under `dir`, relative to it.
fn tree(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            out.insert(path.strip_prefix(dir).unwrap().display().to_string());
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    out
}

/// A server whose STORAGE_PATH is `<tmp>/store`, with secrets planted next
/// to it (`<tmp>/layers/<hex>`, `<tmp>/secret`) and inside it under the
/// non-blob prefixes (`builds/<hex>`, `manifests/<hex>`, `staging/<hex>`).
struct Planted {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    server: TestServer,
    hex: String,
}

fn plant() -> Planted {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let store = root.join("store");
    let hex = sha256_hex(SECRET);
    std::fs::create_dir_all(root.join("layers")).unwrap();
    std::fs::write(root.join("layers").join(&hex), SECRET).unwrap();
    std::fs::write(root.join("secret"), SECRET).unwrap();
    let server = TestServer::builder().storage_path(&store).start();
    for prefix in ["builds", "manifests", "staging"] {
        std::fs::write(store.join(prefix).join(&hex), SECRET).unwrap();
    }
    Planted {
        _dir: dir,
        root,
        server,
        hex,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn traversal_in_every_position_gets_a_4xx_registry_error() {
    let p = plant();
    let before = tree(&p.root);
    let hex = &p.hex;
    let cases: Vec<(String, &str)> = vec![
        ("/v2/../..".into(), "UNSUPPORTED"),
        ("/v2/../../secret".into(), "UNSUPPORTED"),
        (format!("/v2/../../blobs/sha256:{hex}"), "NAME_INVALID"),
        (format!("/v2/x/../../blobs/sha256:{hex}"), "NAME_INVALID"),
        (format!("/v2/%2e%2e/blobs/sha256:{hex}"), "NAME_INVALID"),
        (
            format!("/v2/%2E%2E/%2e%2e/blobs/sha256:{hex}"),
            "NAME_INVALID",
        ),
        (
            format!("/v2/x%2F..%2F..%2F/blobs/sha256:{hex}"),
            "NAME_INVALID",
        ),
        (
            "/v2/x/blobs/sha256:..%2F..%2Fsecret".into(),
            "DIGEST_INVALID",
        ),
        (
            format!("/v2/x/blobs/sha256:..%2F..%2Flayers%2F{hex}"),
            "DIGEST_INVALID",
        ),
        ("/v2/x/blobs/..".into(), "DIGEST_INVALID"),
        ("/v2/x/blobs/%2e%2e".into(), "DIGEST_INVALID"),
        (format!("/v2/x/blobs/{hex}"), "DIGEST_INVALID"),
        (format!("/v2/x/blobs/sha256:{hex}%00"), "DIGEST_INVALID"),
        (format!("/v2/x/blobs/sha256:%2e%2e/{hex}"), "UNSUPPORTED"),
        ("/v2/x/manifests/..".into(), "TAG_INVALID"),
        ("/v2/x/manifests/%2e%2e%2Fsecret".into(), "TAG_INVALID"),
        (
            "/v2/x/manifests/sha256:..%2F..%2Fsecret".into(),
            "DIGEST_INVALID",
        ),
        (format!("/v2/x%00/blobs/sha256:{hex}"), "NAME_INVALID"),
        (format!("/v2/x%ff%fe/blobs/sha256:{hex}"), "NAME_INVALID"),
        ("/v2/x/manifests/latest%00".into(), "TAG_INVALID"),
        ("/v2/x/manifests/%c3%28".into(), "TAG_INVALID"),
        (
            format!("/v2/{}/manifests/latest", "a".repeat(300)),
            "NAME_INVALID",
        ),
        (
            format!("/v2/{}/blobs/sha256:{hex}", ["a"; 200].join("/")),
            "NAME_INVALID",
        ),
        (
            format!("/v2/x/manifests/{}", "t".repeat(129)),
            "TAG_INVALID",
        ),
        (
            format!("/v2/x/manifests/{}", "t".repeat(5000)),
            "TAG_INVALID",
        ),
    ];
    for (target, code) in cases {
        for method in ["GET", "HEAD"] {
            let r = raw_request(p.server.addr(), method, target.as_bytes());
            assert!(
                (400..500).contains(&r.status),
                "{method} {target}: {}",
                r.status
            );
            assert!(
                !contains(&r.body, SECRET),
                "{method} {target} leaked the secret"
            );
            if method == "GET" {
                let (c, _) = r
                    .registry_error()
                    .unwrap_or_else(|| panic!("{target}: no registry error body"));
                assert_eq!(c, code, "{target}");
            }
        }
    }
    // Nothing was created, removed or changed around or inside the store.
    assert_eq!(tree(&p.root), before);
    assert_eq!(std::fs::read(p.root.join("secret")).unwrap(), SECRET);
}

#[test]
fn raw_nul_and_non_utf8_bytes_get_a_4xx() {
    let p = plant();
    let hex = &p.hex;
    let targets: Vec<Vec<u8>> = vec![
        format!("/v2/x\0/blobs/sha256:{hex}").into_bytes(),
        b"/v2/x/manifests/lat\0est".to_vec(),
        [b"/v2/x\xff\xfe/manifests/latest".as_slice()].concat(),
        [b"/v2/x/manifests/\xc3\x28".as_slice()].concat(),
        format!("/v2/x/blobs/sha256:{}\x7f", &hex[1..]).into_bytes(),
    ];
    for target in targets {
        let r = raw_request(p.server.addr(), "GET", &target);
        assert!(
            (400..500).contains(&r.status),
            "{:?}: {}",
            String::from_utf8_lossy(&target),
            r.status
        );
        assert!(!contains(&r.body, SECRET));
    }
    // The server is still healthy afterwards.
    assert_eq!(raw_request(p.server.addr(), "GET", b"/v2/").status, 200);
}

#[test]
fn keys_outside_layers_are_unreachable_through_blob_and_manifest_routes() {
    let p = plant();
    let hex = &p.hex;
    let get = |target: String| raw_request(p.server.addr(), "GET", target.as_bytes());
    // builds/<hex>, manifests/<hex> and staging/<hex> exist, layers/<hex>
    // does not: digest routes only ever look under layers/.
    let blob = get(format!("/v2/x/blobs/sha256:{hex}"));
    assert_eq!(blob.status, 404);
    assert_eq!(blob.registry_error().unwrap().0, "BLOB_UNKNOWN");
    assert!(!contains(&blob.body, SECRET));
    let manifest = get(format!("/v2/x/manifests/sha256:{hex}"));
    assert_eq!(manifest.status, 404);
    assert_eq!(manifest.registry_error().unwrap().0, "MANIFEST_UNKNOWN");
    // Names that spell a prefix do not help either.
    for name in ["builds", "manifests", "staging", "x/builds", "builds/.."] {
        let r = get(format!("/v2/{name}/blobs/sha256:{hex}"));
        assert!((400..500).contains(&r.status), "{name}");
        assert!(!contains(&r.body, SECRET), "{name}");
    }
}

#[test]
fn helper_files_of_the_store_are_not_keys() {
    // Sidecars (.meta~<name>) and temporary files (.tmp~...) live beside the
    // objects; neither a digest nor a name can spell them.
    let p = plant();
    let layers = p.server.storage_path().join("layers");
    std::fs::write(layers.join(format!(".meta~{}", p.hex)), SECRET).unwrap();
    std::fs::write(layers.join(".tmp~abc"), SECRET).unwrap();
    for target in [
        format!("/v2/x/blobs/sha256:.meta~{}", p.hex),
        "/v2/x/blobs/sha256:.tmp~abc".to_owned(),
        "/v2/x/blobs/.tmp~abc".to_owned(),
    ] {
        let r = raw_request(p.server.addr(), "GET", target.as_bytes());
        assert_eq!(r.status, 400, "{target}");
        assert!(!contains(&r.body, SECRET), "{target}");
    }
}
