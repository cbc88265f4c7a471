//! OCI media types on request, through the real server and real Nix:
//!
//! * `Accept` listing OCI and not Docker schema 2 (or ranking OCI higher)
//!   gets the OCI image manifest, with an OCI config and OCI layers, made
//!   of the same blobs; Docker types, ties and no `Accept` get Docker;
//! * each manifest by digest answers in the media type it was stored as;
//! * both variants come back byte for byte after a restart, from the
//!   storage tier, without a Nix build;
//! * skopeo, whose every request is given an OCI-only `Accept` by a small
//!   proxy, sees an OCI manifest with `inspect --raw`, and `skopeo copy`
//!   of it verifies every blob and keeps the manifest's digest.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::Command,
};

use serde_json::Value;
use support::media::{
    DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST, OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST,
};
use support::server::TestServer;
use support::{count_logs, run};

const IMAGE: &str = "hello";

/// GET `path` with these `Accept` headers: content type, digest header
/// and body.
fn get(server: &TestServer, path: &str, accept: &[&str]) -> (String, String, Vec<u8>) {
    server.get_document(path, accept)
}

fn by_tag(server: &TestServer, accept: &[&str]) -> (String, String, Vec<u8>) {
    get(server, &format!("/v2/{IMAGE}/manifests/latest"), accept)
}

/// (config digest, config size, [(layer digest, size)]) and media types.
fn blobs(manifest: &[u8]) -> (Value, Vec<(String, u64)>) {
    let parsed: Value = serde_json::from_slice(manifest).expect("manifest JSON");
    let layers = parsed["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            (
                l["digest"].as_str().unwrap().to_owned(),
                l["size"].as_u64().unwrap(),
            )
        })
        .collect();
    (parsed, layers)
}

#[test]
fn accept_selects_the_variant_and_both_share_their_blobs() {
    let server = TestServer::start();
    let (docker_type, docker_digest, docker) = by_tag(&server, &[DOCKER_MANIFEST]);
    assert_eq!(docker_type, DOCKER_MANIFEST);
    let (oci_type, oci_digest, oci) = by_tag(&server, &[OCI_MANIFEST]);
    assert_eq!(oci_type, OCI_MANIFEST);
    assert_ne!(docker_digest, oci_digest);

    let (docker_doc, docker_layers) = blobs(&docker);
    let (oci_doc, oci_layers) = blobs(&oci);
    assert_eq!(docker_doc["mediaType"], DOCKER_MANIFEST);
    assert_eq!(docker_doc["config"]["mediaType"], DOCKER_CONFIG);
    assert_eq!(oci_doc["mediaType"], OCI_MANIFEST);
    assert_eq!(oci_doc["config"]["mediaType"], OCI_CONFIG);
    assert_eq!(oci_doc["config"]["digest"], docker_doc["config"]["digest"]);
    assert_eq!(oci_layers, docker_layers, "the same layer blobs");
    for layer in oci_doc["layers"].as_array().unwrap() {
        assert_eq!(layer["mediaType"], OCI_LAYER);
    }
    for layer in docker_doc["layers"].as_array().unwrap() {
        assert_eq!(layer["mediaType"], DOCKER_LAYER);
    }
    // The OCI manifest parses strictly as one.
    let strict = oci_spec::image::ImageManifest::from_reader(&oci[..]).expect("OCI manifest");
    assert_eq!(strict.layers().len(), oci_layers.len());

    let cases: [(&[&str], &str); 8] = [
        (&[], DOCKER_MANIFEST),
        (&["*/*"], DOCKER_MANIFEST),
        (&[OCI_INDEX, OCI_MANIFEST], OCI_MANIFEST),
        (
            &["application/vnd.oci.image.manifest.v1+json, */*"],
            OCI_MANIFEST,
        ),
        // containers/image's list: OCI first, all at q=1: a tie.
        (&[OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX], DOCKER_MANIFEST),
        (
            &[
                "application/vnd.docker.distribution.manifest.v2+json;q=0.5, application/vnd.oci.image.manifest.v1+json",
            ],
            OCI_MANIFEST,
        ),
        (
            &[
                "application/vnd.oci.image.manifest.v1+json;q=0.4, application/vnd.docker.distribution.manifest.v2+json",
            ],
            DOCKER_MANIFEST,
        ),
        (
            &[
                DOCKER_MANIFEST,
                "application/vnd.docker.distribution.manifest.list.v2+json",
            ],
            DOCKER_MANIFEST,
        ),
    ];
    for (accept, expected) in cases {
        let (content_type, digest, _) = by_tag(&server, accept);
        assert_eq!(content_type, expected, "{accept:?}");
        let expected_digest = if expected == OCI_MANIFEST {
            &oci_digest
        } else {
            &docker_digest
        };
        assert_eq!(&digest, expected_digest, "{accept:?}");
    }

    // By digest, each answers in its stored type whatever the Accept.
    for (digest, expected, bytes) in [
        (&docker_digest, DOCKER_MANIFEST, &docker),
        (&oci_digest, OCI_MANIFEST, &oci),
    ] {
        for accept in [&[][..], &[OCI_MANIFEST][..], &[DOCKER_MANIFEST][..]] {
            let (content_type, _, body) =
                get(&server, &format!("/v2/{IMAGE}/manifests/{digest}"), accept);
            assert_eq!(content_type, expected, "{digest} {accept:?}");
            assert_eq!(&body, bytes);
        }
    }
}

#[test]
fn both_variants_are_the_same_after_a_restart_without_a_build() {
    let storage = tempfile::tempdir().unwrap();
    let mut first = TestServer::builder().storage_path(storage.path()).start();
    let docker = by_tag(&first, &[DOCKER_MANIFEST]);
    let oci = by_tag(&first, &[OCI_MANIFEST]);
    assert_eq!(count_logs(&first, "building image"), 1);
    first.stop();

    // A fresh local tier: the storage tier answers, both variants.
    let second = TestServer::builder().storage_path(storage.path()).start();
    assert_eq!(by_tag(&second, &[OCI_MANIFEST]), oci);
    assert_eq!(by_tag(&second, &[DOCKER_MANIFEST]), docker);
    assert_eq!(
        count_logs(&second, "building image"),
        0,
        "rebuilt after a restart"
    );
    for (_, digest, bytes) in [&docker, &oci] {
        let (_, _, body) = get(&second, &format!("/v2/{IMAGE}/manifests/{digest}"), &[]);
        assert_eq!(&body, bytes);
    }
}

/// A one-connection-per-request HTTP proxy in front of `upstream` that
/// replaces every request's `Accept` headers with `accept`.
struct AcceptProxy {
    addr: SocketAddr,
}

impl AcceptProxy {
    fn start(upstream: SocketAddr, accept: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                std::thread::spawn(move || Self::relay(client, upstream, accept));
            }
        });
        Self { addr }
    }

    fn relay(client: TcpStream, upstream: SocketAddr, accept: &str) {
        let mut reader = BufReader::new(client.try_clone().expect("clone socket"));
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            let name = line.split(':').next().unwrap_or("").to_ascii_lowercase();
            if name != "accept" && name != "connection" {
                head.push_str(&line);
            }
        }
        head.push_str(&format!("Accept: {accept}\r\nConnection: close\r\n\r\n"));
        let Ok(mut server) = TcpStream::connect(upstream) else {
            return;
        };
        if server.write_all(head.as_bytes()).is_err() {
            return;
        }
        let mut response = Vec::new();
        let _ = server.read_to_end(&mut response);
        let mut client = client;
        let _ = client.write_all(&response);
    }
}

#[test]
fn skopeo_with_an_oci_only_accept_sees_and_copies_the_oci_manifest() {
    let server = TestServer::start();
    let (_, oci_digest, oci) = by_tag(&server, &[OCI_MANIFEST]);
    let proxy = AcceptProxy::start(
        server.addr(),
        "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
    );
    let reference = format!("docker://{}/{IMAGE}:latest", proxy.addr);
    let raw =
        run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", &reference]));
    assert_eq!(raw.as_bytes(), &oci[..], "skopeo saw another manifest");
    let parsed: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(parsed["mediaType"], OCI_MANIFEST);

    // skopeo copy checks every blob against its digest; the OCI layout
    // then holds the very manifest the registry served.
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    run(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        &reference,
        &format!("oci:{}:img", layout.display()),
    ]));
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], oci_digest.as_str());
    assert_eq!(index["manifests"][0]["mediaType"], OCI_MANIFEST);
    let stored = layout
        .join("blobs/sha256")
        .join(oci_digest.trim_start_matches("sha256:"));
    assert_eq!(std::fs::read(stored).unwrap(), oci);
    // And skopeo without the proxy (OCI and Docker at q=1) gets Docker.
    let direct = format!("docker://{}/{IMAGE}:latest", server.addr());
    let raw = run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", &direct]));
    let parsed: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(parsed["mediaType"], DOCKER_MANIFEST);
}
