//! The figures of docs/reliability.md. Too slow for every CI run, so each
//! is an ignored test that prints its figure and asserts the promise it
//! stands for; `scripts/reliability-figures.sh` runs them all:
//!
//! - `load_figure`: 200 concurrent connections for 15 s on warm manifests
//!   and blobs, 0 errors.
//! - `gcs_faults_figure`: 3 images built and pulled through a proxy failing
//!   20% and then 40% of the GCS API calls.
//! - `kill_nine_figure`: 8 `kill -9` of the server at random moments during
//!   builds, then a restart and a consistency check of the storage.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use support::gcs::FakeGcs;
use support::server::{MANIFEST_V2, TestServer, sha256_hex};
use support::{layer_digests, offline_pkgs_repo};

/// A small xorshift generator seeded from the clock (printed, so that a
/// run can be repeated).
struct Rng(u64);

impl Rng {
    fn from_clock() -> Rng {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1;
        println!("random seed: {seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "figure: run by scripts/reliability-figures.sh"]
async fn load_figure() {
    const CONNECTIONS: usize = 200;
    const DURATION: Duration = Duration::from_secs(15);
    let (repo, commit) = offline_pkgs_repo();
    let server = TestServer::builder()
        .pkgs_repo(repo.path())
        .env("NIX_TIMEOUT", "300")
        .start();
    // Warm: build once; afterwards the tag is a manifest cache hit.
    let manifest = tokio::task::block_in_place(|| server.manifest_json("hello", &commit));
    let mut paths = vec![format!("/v2/hello/manifests/{commit}")];
    for digest in layer_digests(&manifest) {
        paths.push(format!("/v2/hello/blobs/{digest}"));
    }
    if let Some(config) = manifest["config"]["digest"].as_str() {
        paths.push(format!("/v2/hello/blobs/{config}"));
    }
    let paths = Arc::new(paths);
    let requests = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            let (paths, requests, errors, bytes) = (
                paths.clone(),
                requests.clone(),
                errors.clone(),
                bytes.clone(),
            );
            let base = server.url("");
            tokio::spawn(async move {
                // One client per task, one connection each.
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .timeout(Duration::from_secs(30))
                    .build()
                    .expect("client");
                let mut latencies = Vec::new();
                let mut n = i;
                while started.elapsed() < DURATION {
                    let path = &paths[n % paths.len()];
                    n += 1;
                    let sent = Instant::now();
                    let ok = match client
                        .get(format!("{}{}", base.trim_end_matches('/'), path))
                        .header("Accept", MANIFEST_V2)
                        .send()
                        .await
                    {
                        Ok(response) if response.status().is_success() => {
                            match response.bytes().await {
                                Ok(body) => {
                                    bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                                    true
                                }
                                Err(_) => false,
                            }
                        }
                        _ => false,
                    };
                    latencies.push(sent.elapsed().as_micros() as u64);
                    requests.fetch_add(1, Ordering::Relaxed);
                    if !ok {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("load task"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let total = requests.load(Ordering::Relaxed);
    let failed = errors.load(Ordering::Relaxed);
    println!(
        "FIGURE load: {CONNECTIONS} connections, {elapsed:.1} s, {total} requests ({:.0}/s), \
         {failed} errors, {:.1} MB received, latency p50 {:.1} ms p99 {:.1} ms max {:.1} ms, \
         {} distinct paths (manifest by tag + blobs)",
        total as f64 / elapsed,
        bytes.load(Ordering::Relaxed) as f64 / 1e6,
        percentile(&latencies, 0.5) as f64 / 1000.0,
        percentile(&latencies, 0.99) as f64 / 1000.0,
        latencies.last().copied().unwrap_or(0) as f64 / 1000.0,
        paths.len()
    );
    assert_eq!(failed, 0, "errors under load");
    assert!(total > CONNECTIONS as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "figure: run by scripts/reliability-figures.sh"]
async fn gcs_faults_figure() {
    /// Bound on one image (build and pull) under faults.
    const BOUND: Duration = Duration::from_secs(300);
    for per_mille in [200u32, 400] {
        let (gcs, proxy) = FakeGcs::start_behind_faults(per_mille, u64::from(per_mille)).await;
        let server = TestServer::builder()
            .envs(support::gcs::server_env(&proxy.host()))
            .env("NIX_TIMEOUT", "300")
            .start();
        let work = tempfile::tempdir().expect("temporary directory");
        let mut outcomes = Vec::new();
        for image in ["hello", "curl", "htop"] {
            let started = Instant::now();
            let layout = work.path().join(image);
            let copy = tokio::task::block_in_place(|| {
                Command::new("skopeo")
                    .args(["copy", "--src-tls-verify=false"])
                    .arg(format!("docker://{}/{image}:latest", server.addr()))
                    .arg(format!("oci:{}:img", layout.display()))
                    .output()
                    .expect("run skopeo")
            });
            let elapsed = started.elapsed();
            assert!(elapsed < BOUND, "{image} took {elapsed:?}");
            let outcome = if copy.status.success() {
                "pulled".to_owned()
            } else {
                let stderr = String::from_utf8_lossy(&copy.stderr);
                // A clean failure is a registry 5xx, never a hang or a
                // corrupt blob.
                assert!(
                    stderr.contains("500") || stderr.contains("503"),
                    "{image} failed uncleanly: {stderr}"
                );
                "failed cleanly (5xx)".to_owned()
            };
            outcomes.push(format!(
                "{image}: {outcome} in {:.1} s",
                elapsed.as_secs_f64()
            ));
        }
        let counts = proxy.counts();
        println!(
            "FIGURE gcs faults {}%: {} | API calls {}, injected 503 {}, dropped before {}, \
             dropped after {}, staging objects left {}",
            per_mille / 10,
            outcomes.join(", "),
            counts.calls.load(Ordering::SeqCst),
            counts.unavailable.load(Ordering::SeqCst),
            counts.dropped_before.load(Ordering::SeqCst),
            counts.dropped_after.load(Ordering::SeqCst),
            gcs.object_names("staging/").await.len()
        );
        if per_mille == 200 {
            assert!(
                outcomes.iter().all(|o| o.contains("pulled")),
                "{outcomes:?}"
            );
        }
    }
}

/// The JSON object `prefix/name` of the storage at `root`.
fn read_json(root: &Path, prefix: &str, name: &str) -> Value {
    let bytes = std::fs::read(root.join(prefix).join(name)).expect("read object");
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{prefix}/{name} is not JSON: {e}"))
}

/// Checks the storage at `root`: every blob hashes to its name, every
/// build record and cached manifest points at blobs that exist. Returns
/// (blobs, records, manifests) counted.
fn check_consistency(root: &Path) -> (usize, usize, usize) {
    let names = |prefix: &str| -> Vec<String> {
        std::fs::read_dir(root.join(prefix))
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default()
    };
    let blobs: BTreeSet<String> = names("layers").into_iter().collect();
    for blob in &blobs {
        let bytes = std::fs::read(root.join("layers").join(blob)).expect("read blob");
        assert_eq!(
            &sha256_hex(&bytes),
            blob,
            "layers/{blob} does not match its name"
        );
    }
    let records = names("builds");
    for record in &records {
        let json = read_json(root, "builds", record);
        let digest = json["digest"].as_str().expect("record digest");
        assert!(
            blobs.contains(digest.trim_start_matches("sha256:")),
            "builds/{record} points at missing {digest}"
        );
    }
    let manifests = names("manifests");
    for manifest in &manifests {
        let json = read_json(root, "manifests", manifest);
        let mut digests = layer_digests(&json);
        digests.push(
            json["config"]["digest"]
                .as_str()
                .expect("config")
                .to_owned(),
        );
        for digest in digests {
            assert!(
                blobs.contains(digest.trim_start_matches("sha256:")),
                "manifests/{manifest} points at missing {digest}"
            );
        }
    }
    (blobs.len(), records.len(), manifests.len())
}

/// The two images asked for in kill round `round`: one package alone and
/// a pair, distinct from every other round's.
fn round_images(images: &[&str], round: usize) -> [String; 2] {
    let n = images.len();
    [
        images[round % n].to_owned(),
        format!("{}/{}", images[round % n], images[(round + 5) % n]),
    ]
}

#[test]
#[ignore = "figure: run by scripts/reliability-figures.sh"]
fn kill_nine_figure() {
    const KILLS: usize = 8;
    let images = [
        "hello", "curl", "htop", "nano", "git", "bigpkg", "zlib", "gmp",
    ];
    let (repo, commit) = offline_pkgs_repo();
    let storage = tempfile::tempdir().expect("storage directory");
    let mut rng = Rng::from_clock();
    let start = || {
        TestServer::builder()
            .storage_path(storage.path())
            .pkgs_repo(repo.path())
            .env("NIX_TIMEOUT", "300")
            .start()
    };
    let mut builds_in_flight_at_kill = Vec::new();
    for round in 0..KILLS {
        let mut server = start();
        // Ask for two new images, then kill at a random moment of their
        // builds.
        for image in round_images(&images, round) {
            let url = server.url(&format!("/v2/{image}/manifests/{commit}"));
            std::thread::spawn(move || {
                let _ = reqwest::blocking::Client::new()
                    .get(url)
                    .timeout(Duration::from_secs(600))
                    .send();
            });
        }
        server
            .wait_for_event(Duration::from_secs(60), |e| {
                e["message"] == "building image"
            })
            .expect("a build started");
        std::thread::sleep(Duration::from_millis(rng.below(800)));
        let events = server.log_events();
        let count = |message: &str| events.iter().filter(|e| e["message"] == message).count();
        let started = count("building image");
        // Built, or failed: what is left was cut by the kill.
        let in_flight = started - count("image built") - count("image build failed");
        builds_in_flight_at_kill.push(in_flight);
        server.signal(libc::SIGKILL);
        server.wait();
        let (blobs, records, manifests) = check_consistency(storage.path());
        println!(
            "kill {}: {started} builds started, {in_flight} cut by the kill, storage holds {blobs} blobs, {records} records, \
             {manifests} manifests, consistent",
            round + 1
        );
    }
    // Restart, and every image pulls with verified digests.
    let server = start();
    let work = tempfile::tempdir().expect("temporary directory");
    let all: Vec<String> = (0..KILLS).flat_map(|r| round_images(&images, r)).collect();
    for image in &all {
        let layout = work.path().join(image.replace('/', "_"));
        support::skopeo_copy(server.addr(), &format!("{image}:{commit}"), &layout);
    }
    let (blobs, records, manifests) = check_consistency(storage.path());
    println!(
        "FIGURE kill -9: {KILLS} kills at random moments (builds cut per kill: \
         {builds_in_flight_at_kill:?}); after restart all {} images pulled; storage: {blobs} \
         blobs each matching its digest, {records} records and {manifests} cached manifests \
         all pointing at existing blobs",
        all.len()
    );
}
