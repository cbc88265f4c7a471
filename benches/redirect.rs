//! Warm serving of a redirected blob on the s3 backend, with presigned
//! URLs signed on every request beside URLs reused for half their
//! lifetime (`storage::signed_urls`), in one run against one s3s-fs
//! bucket (started here, signatures checked):
//!
//! - `redirect/presign_every_request`: `serve` of a known layer (no call
//!   to the bucket), a fresh SigV4 presigned URL each time;
//! - `redirect/reuse_signed_url`: the same with the URL cache on, as the
//!   server runs.
//!
//! The ratio of the two is the figure to read: on a loaded machine the
//! absolute times move, the ratio much less.

mod support;

use ::support::s3::{S3Server, S3sFs};
use criterion::{Criterion, criterion_group, criterion_main};
use nixery::storage::{
    ServeRequest, Served, Storage, StorageKey,
    s3::{S3Options, S3Storage},
};
use support::runtime;

/// A redirect for `key` (which must be known and stored).
async fn redirect(storage: &S3Storage, key: &StorageKey) -> String {
    match storage.serve(key, &ServeRequest::default()).await {
        Ok(Served::Redirect { location }) => location,
        _ => panic!("a stored layer is redirected"),
    }
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let s3 = rt.block_on(S3sFs::start());
    let connect = |reuse_signed_urls| {
        rt.block_on(s3.storage_with(S3Options {
            reuse_signed_urls,
            ..S3Options::default()
        }))
    };
    let signing = connect(false);
    let reusing = connect(true);
    let key = rt.block_on(async {
        let persisted = signing
            .persist_blob(
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                nixery::cache::bytes_stream(bytes::Bytes::from_static(b"a layer")),
            )
            .await
            .expect("store a layer");
        StorageKey::layer(&persisted.sha256)
    });
    // Warm both: the blob is known, so `serve` calls no bucket.
    for storage in [&signing, &reusing] {
        let url = rt.block_on(redirect(storage, &key));
        assert!(url.contains("X-Amz-Signature="), "{url}");
    }
    let mut group = c.benchmark_group("redirect");
    group.bench_function("presign_every_request", |b| {
        b.iter(|| rt.block_on(redirect(&signing, &key)))
    });
    group.bench_function("reuse_signed_url", |b| {
        b.iter(|| rt.block_on(redirect(&reusing, &key)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
