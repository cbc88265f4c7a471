//! Several instances on one bucket, for the s3 backend (moto) and the gcs
//! backend (fake-gcs-server): two servers with their own local tiers and
//! Nix builds, pulled by 12 concurrent cold `skopeo copy`s (six images,
//! each from both servers at the same moment).
//!
//! Properties defended: every pull succeeds on both servers; while they
//! run and afterwards, every manifest visible in `manifests/` has its
//! manifest blob, config and layers in `layers/` (a manifest is either
//! whole or invisible); afterwards every image pulls whole from either
//! server, and staging is empty.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use nixery::storage::{KeyPrefix, ServeRequest, Storage, StorageError, StorageKey};
use serde_json::Value;
use support::server::TestServer;

/// Six images of the embedded package set, sharing some layers.
const IMAGES: [&str; 6] = ["hello", "curl", "git", "htop", "nano", "hello/htop"];

/// `skopeo copy` of `name:latest` from `addr` into `dir`; skopeo checks
/// every blob against its digest. Returns stderr on failure.
fn skopeo_copy(addr: String, name: &str, dir: std::path::PathBuf) -> Result<(), String> {
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let layout = dir.join(name.replace('/', "_"));
    let output = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", "--retry-times", "0"])
        .arg(format!("docker://{addr}/{name}:latest"))
        .arg(format!("oci:{}:img", layout.display()))
        .output()
        .map_err(|e| format!("cannot run skopeo: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{name} from {addr}: {}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// Every digest a manifest names, its config first.
fn digests_of(manifest: &Value) -> Vec<String> {
    let mut digests = vec![
        manifest["config"]["digest"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    ];
    digests.extend(support::layer_digests(manifest));
    digests
}

/// Whether `layers/<hex of digest>` exists.
async fn blob_exists(storage: &dyn Storage, digest: &str) -> Result<bool, String> {
    let digest = nixery::digest::Digest::parse(digest)
        .map_err(|e| format!("manifest names a bad digest {digest}: {e}"))?;
    let key = StorageKey::layer(&digest);
    match storage.serve(&key, &ServeRequest::default()).await {
        Ok(_) => Ok(true),
        Err(StorageError::NotFound(_)) => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

/// The manifests visible in the bucket that lack a blob, as messages.
async fn incomplete_manifests(storage: &dyn Storage) -> Vec<String> {
    let mut problems = Vec::new();
    let listed = match storage.list(KeyPrefix::Manifests).await {
        Ok(listed) => listed,
        Err(e) => return vec![format!("listing manifests: {e}")],
    };
    for object in listed {
        let mut stream = match storage.fetch(&object.key).await {
            Ok(stream) => stream,
            Err(e) => {
                problems.push(format!("{} is listed but not readable: {e}", object.key));
                continue;
            }
        };
        let mut bytes = Vec::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(e) => {
                    problems.push(format!("{}: {e}", object.key));
                    break;
                }
            }
        }
        let manifest: Value = match serde_json::from_slice(&bytes) {
            Ok(manifest) => manifest,
            Err(e) => {
                problems.push(format!("{} is not a whole manifest: {e}", object.key));
                continue;
            }
        };
        let own = format!("sha256:{}", support::server::sha256_hex(&bytes));
        for digest in std::iter::once(own).chain(digests_of(&manifest)) {
            match blob_exists(storage, &digest).await {
                Ok(true) => {}
                Ok(false) => problems.push(format!("{} names missing {digest}", object.key)),
                Err(e) => problems.push(format!("{}: checking {digest}: {e}", object.key)),
            }
        }
    }
    problems
}

/// Runs the whole scenario against two servers sharing `storage`'s bucket.
async fn two_instances_pull_six_images_at_once(
    a: &TestServer,
    b: &TestServer,
    storage: Arc<dyn Storage>,
) {
    let work = tempfile::tempdir().expect("temporary directory");

    // Watch the bucket while the pulls run.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn({
        let (storage, stop) = (storage.clone(), stop.clone());
        async move {
            let mut seen = BTreeSet::new();
            let mut rounds = 0;
            while !stop.load(Ordering::SeqCst) {
                seen.extend(incomplete_manifests(storage.as_ref()).await);
                rounds += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (seen, rounds)
        }
    });

    let mut pulls = Vec::new();
    for (i, image) in IMAGES.iter().enumerate() {
        for (n, server) in [a, b].into_iter().enumerate() {
            let addr = server.addr().to_string();
            let dir = work.path().join(format!("cold-{i}-{n}"));
            pulls.push(tokio::task::spawn_blocking(move || {
                skopeo_copy(addr, image, dir)
            }));
        }
    }
    let mut failures = Vec::new();
    for pull in pulls {
        if let Err(e) = pull.await.expect("pull thread") {
            failures.push(e);
        }
    }
    stop.store(true, Ordering::SeqCst);
    let (seen, rounds) = watcher.await.expect("watcher task");
    assert!(
        failures.is_empty(),
        "cold pulls failed:\n{}\nA: {:#?}\nB: {:#?}",
        failures.join("\n"),
        a.logs(),
        b.logs()
    );
    for server in [a, b] {
        let errors: Vec<Value> = server
            .log_events()
            .into_iter()
            .filter(|e| {
                e["message"] == "response" && e["status"].as_u64().is_some_and(|s| s >= 500)
            })
            .collect();
        assert!(errors.is_empty(), "server errors: {errors:#?}");
    }
    assert!(rounds >= 2, "the bucket was checked only {rounds} times");
    assert!(
        seen.is_empty(),
        "incomplete manifests were visible: {seen:#?}"
    );
    let after = incomplete_manifests(storage.as_ref()).await;
    assert!(after.is_empty(), "{after:#?}");
    // One cached Docker manifest per image (its OCI form, `<key>.oci`,
    // beside it), whoever built it first.
    let docker_forms = storage
        .list(KeyPrefix::Manifests)
        .await
        .expect("listing")
        .into_iter()
        .filter(|object| !object.key.name().ends_with(".oci"))
        .count();
    assert_eq!(docker_forms, IMAGES.len(), "one cached manifest per image");

    // Every image pulls whole afterwards, from the other server.
    for (i, image) in IMAGES.iter().enumerate() {
        let server = if i % 2 == 0 { b } else { a };
        let addr = server.addr().to_string();
        let dir = work.path().join(format!("warm-{i}"));
        tokio::task::spawn_blocking(move || skopeo_copy(addr, image, dir))
            .await
            .expect("pull thread")
            .unwrap_or_else(|e| panic!("warm pull failed: {e}"));
    }
    assert!(
        storage
            .list(KeyPrefix::Staging)
            .await
            .expect("listing")
            .is_empty()
    );
}

/// Two servers with the storage environment `env` (one bucket), checked
/// through `storage` (the same bucket).
async fn two_instances_on(env: Vec<(&'static str, String)>, storage: Arc<dyn Storage>) {
    let start = || {
        TestServer::builder()
            .env("NIX_TIMEOUT", "300")
            .envs(env.clone())
            .start()
    };
    let (a, b) = (start(), start());
    two_instances_pull_six_images_at_once(&a, &b, storage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_s3_bucket_build_the_same_images_at_once() {
    let moto = support::s3::MotoS3::start().await;
    let env = moto.server_env(&moto.origin());
    two_instances_on(env, Arc::new(moto.storage().await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_gcs_bucket_build_the_same_images_at_once() {
    let gcs = support::gcs::FakeGcs::start().await;
    let env = support::gcs::server_env(&gcs.host());
    two_instances_on(env, Arc::new(gcs.storage().await)).await;
}
