//! A garbage collection over a storage of 10,000 objects (filesystem, S3):
//! 1,000 images, each a manifest, a config, two layers of its own, two
//! layer records, a tag entry and a use mark, plus 1,000 layers (with their
//! records) shared among them. Half the images were last used 60 days ago
//! (their objects are dated so), the other half now; `--keep` is 30 days.
//!
//! - `gc/mark_10000_objects_dry_run`: list, read every manifest, tag entry
//!   and record, and decide (`--dry-run`, nothing deleted).
//! - `gc/mark_and_sweep_10000_objects`: the same, then delete the unused
//!   half's objects (4,000), on a fresh copy each iteration.
//!
//! - `gc_s3/mark_10000_objects_dry_run`: the dry run over the same 10,000
//!   objects in an S3 bucket (moto on 127.0.0.1; `moto_server` must be on
//!   `PATH`, as `scripts/test.sh` sets it), and one mark and sweep there,
//!   timed once and printed (it empties half the bucket, and filling
//!   10,000 objects again per iteration would dominate the run).
//!
//! None waits the notice period (it is a fixed wait, not work).

mod support;

use std::{
    path::Path,
    process::Command,
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use nixery::{
    cache::bytes_stream,
    digest::Digest,
    gc::{self, Options, Policy},
    storage::{Storage, StorageKey, filesystem::FilesystemStorage},
};

const IMAGES: usize = 1000;
const SHARED_LAYERS: usize = 1000;
const DAY: Duration = Duration::from_secs(86_400);

const MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const CONFIG: &str = "application/vnd.docker.container.image.v1+json";

async fn put(storage: &dyn Storage, key: &StorageKey, content_type: &str, bytes: Vec<u8>) {
    storage
        .persist(key, content_type, bytes_stream(Bytes::from(bytes)))
        .await
        .unwrap();
}

async fn blob(storage: &dyn Storage, bytes: Vec<u8>, content_type: &str) -> Digest {
    let digest = Digest::of(&bytes);
    put(storage, &StorageKey::layer(&digest), content_type, bytes).await;
    digest
}

fn record(digest: &Digest) -> Vec<u8> {
    format!(
        "{{\"mediaType\":\"{LAYER}\",\"size\":4096,\"digest\":\"{digest}\",\"TarHash\":\"sha256:{}\"}}",
        "0".repeat(64)
    )
    .into_bytes()
}

fn backdate(storage: &FilesystemStorage, key: &StorageKey, at: SystemTime) {
    let file = std::fs::File::options()
        .write(true)
        .open(storage.object_path(key))
        .unwrap();
    file.set_modified(at).unwrap();
}

/// Fill `dir` with the storage described at the top; returns the number
/// of objects written.
async fn populate(dir: &Path) -> usize {
    let storage = FilesystemStorage::new(dir).unwrap();
    let old = SystemTime::now() - 60 * DAY;
    let written = populate_on(&storage).await;
    for (key, unused) in &written.images {
        if *unused {
            backdate(&storage, key, old);
        }
    }
    // The shared layers are old; they live through the images using them.
    for key in &written.shared {
        backdate(&storage, key, old);
    }
    written.objects
}

/// What [`populate_on`] wrote.
struct Written {
    objects: usize,
    /// Every key of an image, and whether the image is of the unused half.
    images: Vec<(StorageKey, bool)>,
    /// The shared layers and their records.
    shared: Vec<StorageKey>,
    /// The use marks of the used half.
    used_marks: Vec<StorageKey>,
}

/// Write the objects described at the top into `storage`, all dated now.
async fn populate_on(storage: &dyn Storage) -> Written {
    let mut written = Written {
        objects: 0,
        images: Vec::new(),
        shared: Vec::new(),
        used_marks: Vec::new(),
    };
    let mut shared = Vec::new();
    for i in 0..SHARED_LAYERS {
        let hex = blob(storage, format!("shared layer {i}").into_bytes(), LAYER).await;
        let record_key = StorageKey::build(&format!("s{i}")).unwrap();
        put(storage, &record_key, "application/json", record(&hex)).await;
        written.shared.extend([StorageKey::layer(&hex), record_key]);
        shared.push(hex);
        written.objects += 2;
    }
    for i in 0..IMAGES {
        let unused = i % 2 == 0;
        let mut keys = Vec::new();
        let mut layers = Vec::new();
        for j in 0..2 {
            let hex = blob(storage, format!("layer {i} {j}").into_bytes(), LAYER).await;
            let record_key = StorageKey::build(&format!("l{i}-{j}")).unwrap();
            put(storage, &record_key, "application/json", record(&hex)).await;
            keys.push(StorageKey::layer(&hex));
            keys.push(record_key);
            layers.push(hex);
        }
        layers.push(shared[i % SHARED_LAYERS]);
        layers.push(shared[(i * 7 + 3) % SHARED_LAYERS]);
        let config = blob(storage, format!("{{\"image\":{i}}}").into_bytes(), CONFIG).await;
        keys.push(StorageKey::layer(&config));
        let descriptors: Vec<String> = layers
            .iter()
            .map(|l| format!("{{\"mediaType\":\"{LAYER}\",\"size\":4096,\"digest\":\"{l}\"}}"))
            .collect();
        let manifest = format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"{MANIFEST}\",\"config\":{{\"mediaType\":\"{CONFIG}\",\"size\":12,\"digest\":\"{config}\"}},\"layers\":[{}]}}",
            descriptors.join(",")
        );
        let digest = blob(storage, manifest.clone().into_bytes(), MANIFEST).await;
        let tag = StorageKey::manifest(&format!("{i:064x}")).unwrap();
        put(storage, &tag, MANIFEST, manifest.into_bytes()).await;
        let mark = StorageKey::use_mark(&digest);
        put(storage, &mark, "text/plain", b"0\n".to_vec()).await;
        if !unused {
            written.used_marks.push(mark.clone());
        }
        keys.extend([StorageKey::layer(&digest), tag, mark]);
        written.objects += keys.len();
        written
            .images
            .extend(keys.into_iter().map(|key| (key, unused)));
    }
    written
}

fn options(dry_run: bool) -> Options {
    Options {
        dry_run,
        ..Options::new(
            Policy {
                keep: 30 * DAY,
                grace: Duration::from_secs(3600),
                touch_interval: Duration::from_secs(3600),
            },
            Duration::ZERO,
        )
    }
}

fn bench(c: &mut Criterion) {
    let runtime = support::runtime();
    let template = tempfile::tempdir().unwrap();
    let objects = runtime.block_on(populate(template.path()));
    assert_eq!(objects, 10_000);
    let storage: Arc<dyn Storage> = Arc::new(FilesystemStorage::new(template.path()).unwrap());
    let report = runtime
        .block_on(gc::collect(storage.clone(), &options(true), &mut |_| {}))
        .unwrap();
    eprintln!("gc bench: {objects} objects; {}", report.summary());

    let mut group = c.benchmark_group("gc");
    group.sample_size(10);
    group.bench_function("mark_10000_objects_dry_run", |b| {
        b.iter(|| {
            runtime
                .block_on(gc::collect(storage.clone(), &options(true), &mut |_| {}))
                .unwrap()
        })
    });
    group.bench_function("mark_and_sweep_10000_objects", |b| {
        b.iter_batched(
            || {
                let copy = tempfile::tempdir().unwrap();
                let status = Command::new("cp")
                    .arg("-a")
                    .arg(format!("{}/.", template.path().display()))
                    .arg(copy.path())
                    .status()
                    .unwrap();
                assert!(status.success());
                let storage: Arc<dyn Storage> =
                    Arc::new(FilesystemStorage::new(copy.path()).unwrap());
                (copy, storage)
            },
            |(copy, storage)| {
                let report = runtime
                    .block_on(gc::collect(storage, &options(false), &mut |_| {}))
                    .unwrap();
                assert!(report.objects() > 3000, "{}", report.summary());
                copy
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// The same 10,000 objects in an S3 bucket (moto on 127.0.0.1). Objects
/// cannot be dated back there, so the unused half is made old by waiting:
/// everything is written, then after [`S3_KEEP`] and a margin the used
/// half's marks are written again, and the collection keeps images used
/// within [`S3_KEEP`] (no touch-interval extension).
const S3_KEEP: Duration = Duration::from_secs(10);

fn s3_options(dry_run: bool) -> Options {
    Options {
        policy: Policy {
            keep: S3_KEEP,
            grace: Duration::from_secs(1),
            touch_interval: Duration::ZERO,
        },
        ..options(dry_run)
    }
}

fn bench_s3(c: &mut Criterion) {
    let runtime = support::runtime();
    let moto = runtime.block_on(::support::s3::MotoS3::start());
    let storage: Arc<dyn Storage> = Arc::new(runtime.block_on(moto.storage()));
    let started = std::time::Instant::now();
    let written = runtime.block_on(populate_on(storage.as_ref()));
    assert_eq!(written.objects, 10_000);
    eprintln!(
        "gc bench (s3): wrote {} objects in {:.1} s",
        written.objects,
        started.elapsed().as_secs_f64()
    );
    let started = std::time::Instant::now();
    let mut group = c.benchmark_group("gc_s3");
    group.sample_size(10);
    group.bench_function("mark_10000_objects_dry_run", |b| {
        b.iter(|| {
            runtime
                .block_on(gc::collect(storage.clone(), &options(true), &mut |_| {}))
                .unwrap()
        })
    });
    group.finish();

    let since_written = started.elapsed();
    std::thread::sleep((S3_KEEP + Duration::from_secs(2)).saturating_sub(since_written));
    runtime.block_on(async {
        for mark in &written.used_marks {
            put(storage.as_ref(), mark, "text/plain", b"1\n".to_vec()).await;
        }
    });
    // One mark and sweep (it changes the bucket, so it runs once): the
    // unused half goes.
    let sweep = std::time::Instant::now();
    let report = runtime
        .block_on(gc::collect(
            storage.clone(),
            &s3_options(false),
            &mut |_| {},
        ))
        .unwrap();
    eprintln!(
        "gc bench (s3): one mark and sweep of 10000 objects: {:.2} s; {}",
        sweep.elapsed().as_secs_f64(),
        report.summary()
    );
    assert!(report.objects() > 3000, "{}", report.summary());
}

criterion_group!(benches, bench, bench_s3);
criterion_main!(benches);
