//! The warm path of a manifest pull by tag, without HTTP: `Builder::manifest`
//! for an image whose manifest is cached, per package source kind (the
//! embedded set, a local path, a pinned commit, a git branch within its
//! TTL). Each call parses the name, resolves the source, derives the image
//! identity and finds it in the memory tier; none may run Nix (checked
//! after each run). The `scripts/bench-warm-tags.sh` numbers through HTTP
//! are bounded by this cost plus the server's per-request overhead.

mod support;

use std::{hint::black_box, path::Path, process::Command, sync::Arc, time::Duration};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use nixery::{
    build_errors::BuildErrors,
    builder::{Builder, BuilderSettings, ImageBuilder, ImageManifests},
    identity::Recipe,
    image::Image,
    layer_store::LayerStore,
    layers::{DEFAULT_BUDGET, Layering, Popularity, Strategy},
    manifest_cache::ManifestCache,
    metrics::Metrics,
    nix::{NixRunner, NixSettings},
    resolve::{DEFAULT_CHANNEL_REMOTE, Resolver, ResolverSettings},
    source::PackageSource,
    storage::{Storage, filesystem::FilesystemStorage},
};

const NAME: &str = "hello/git";

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=bench", "-c", "user.email=bench@localhost"])
        .args(args)
        .output()
        .expect("git");
    assert!(output.status.success(), "git {args:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// A builder over `source` whose manifest for `NAME:tag` is cached.
fn warm_builder(
    runtime: &tokio::runtime::Runtime,
    storage_dir: &Path,
    source: PackageSource,
    tag: &str,
) -> (Builder, Arc<Metrics>) {
    let storage: Arc<dyn Storage> = Arc::new(FilesystemStorage::new(storage_dir).unwrap());
    let build_errors = Arc::new(BuildErrors::new());
    let nix = NixRunner::new(NixSettings {
        source,
        timeout: Duration::from_secs(60),
        deadline: Duration::from_secs(600),
        allow_unfree: false,
        prepare_image: None,
    })
    .unwrap();
    let resolver = Resolver::new(ResolverSettings {
        source: nix.source().clone(),
        embedded_hash: nix.embedded_hash(),
        ttl: Duration::from_secs(3600),
        channel_remote: DEFAULT_CHANNEL_REMOTE.into(),
    });
    let image = Image::from_name(NAME, tag);
    let resolved = runtime.block_on(resolver.resolve(tag)).unwrap();
    let settings = BuilderSettings {
        layering: Layering {
            strategy: Strategy::DEFAULT,
            popularity: Popularity::default(),
            budget: DEFAULT_BUDGET,
        },
        nix_files: Recipe::nix_files_of(None),
        pack_concurrency: 1,
        build_concurrency: 1,
        build_queue: 16,
        build_errors,
        platforms: vec![nixery::platform::Platform::host()],
        gc: nixery::gc::Guard::off(),
    };
    let identity = settings.identity(&image, &resolved.revision, &nix);
    let manifests = ManifestCache::new(storage.clone(), 4096, None).unwrap();
    let manifest = ImageManifests::from_docker(Bytes::from_static(
        br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":2,"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},"layers":[]}"#,
    ), &std::collections::BTreeMap::new())
    .unwrap();
    runtime
        .block_on(manifests.put(identity.key(), &manifest, nixery::gc::Stamp::UNCHECKED))
        .unwrap();
    let metrics = Arc::new(Metrics::default());
    let builder = Builder::new(
        LayerStore::new(storage, 1),
        manifests,
        resolver,
        nix,
        settings,
        metrics.clone(),
    );
    (builder, metrics)
}

fn warm_manifest(c: &mut Criterion) {
    let runtime = support::runtime();
    let scratch = tempfile::tempdir().unwrap();
    let repo = scratch.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("default.nix"), "{ ... }: { }\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "bench"]);
    let commit = git(&repo, &["rev-parse", "HEAD"]);
    let pkgs = Path::new(env!("CARGO_MANIFEST_DIR")).join("prepare-image/offline-pkgs");
    let url = format!("file://{}", repo.display());

    let cases = [
        ("embedded set", PackageSource::Builtin, "latest".to_string()),
        (
            "local path",
            PackageSource::Path(pkgs),
            "latest".to_string(),
        ),
        ("pinned commit", PackageSource::Git(url.clone()), commit),
        ("git branch", PackageSource::Git(url), "main".to_string()),
    ];
    let mut group = c.benchmark_group("warm manifest by tag");
    for (index, (kind, source, tag)) in cases.into_iter().enumerate() {
        let storage = scratch.path().join(format!("storage-{index}"));
        let (builder, metrics) = warm_builder(&runtime, &storage, source, &tag);
        group.bench_function(kind, |b| {
            b.iter(|| {
                runtime
                    .block_on(builder.manifest(
                        black_box(NAME),
                        black_box(&tag),
                        None,
                        nixery::media_type::ImageFormat::Docker,
                    ))
                    .unwrap()
            })
        });
        let builds = metrics
            .nix_builds
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(builds, 0, "{kind}: a warm pull ran Nix");
    }
    group.finish();
}

criterion_group!(benches, warm_manifest);
criterion_main!(benches);
