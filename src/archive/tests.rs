use std::{
    fs,
    io::Read,
    os::unix::fs::{PermissionsExt, symlink},
    path::{Path, PathBuf},
    time::Duration,
};

use flate2::read::GzDecoder;
use futures::StreamExt;

use super::{ArchiveError, TarSummary, gzip_file, pack_store_paths};
use crate::storage::ByteStream;

/// Reads the whole stream, failing on its first error item.
async fn collect(mut stream: ByteStream) -> std::io::Result<Vec<u8>> {
    let mut blob = Vec::new();
    while let Some(chunk) = stream.next().await {
        blob.extend_from_slice(&chunk?);
    }
    Ok(blob)
}

/// Packs `paths` and returns the compressed blob and the summary.
async fn pack(paths: Vec<PathBuf>) -> (Vec<u8>, TarSummary) {
    let (stream, handle) = pack_store_paths(paths);
    let blob = collect(stream).await.expect("stream ends cleanly");
    let summary = handle
        .await
        .expect("packing task ran")
        .expect("packing succeeded");
    (blob, summary)
}

/// Pack `paths` when that must fail: the stream ends in an error, and the
/// packer's result is returned.
async fn failed_pack(paths: Vec<PathBuf>) -> Result<TarSummary, ArchiveError> {
    let (stream, handle) = pack_store_paths(paths);
    assert!(collect(stream).await.is_err());
    handle.await.unwrap()
}

fn gunzip(blob: &[u8]) -> Vec<u8> {
    let mut tar = Vec::new();
    GzDecoder::new(blob)
        .read_to_end(&mut tar)
        .expect("valid gzip");
    tar
}

fn sha256_hex(data: &[u8]) -> crate::digest::Digest {
    crate::digest::Digest::of(data)
}

/// One member of a tar read back with the tar crate.
#[derive(Debug, PartialEq)]
struct Member {
    name: String,
    kind: tar::EntryType,
    mode: u32,
    link: Option<String>,
    content: Vec<u8>,
}

fn members(blob: &[u8]) -> Vec<Member> {
    let mut archive = tar::Archive::new(GzDecoder::new(blob));
    let mut found = Vec::new();
    for entry in archive.entries().expect("readable tar") {
        let mut entry = entry.expect("readable entry");
        let header = entry.header();
        assert_eq!(header.uid().unwrap(), 0, "uid of {:?}", entry.path());
        assert_eq!(header.gid().unwrap(), 0, "gid of {:?}", entry.path());
        assert_eq!(header.mtime().unwrap(), 1, "mtime of {:?}", entry.path());
        assert!(header.username_bytes().is_none_or(<[u8]>::is_empty));
        assert!(header.groupname_bytes().is_none_or(<[u8]>::is_empty));
        let name = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
        let kind = header.entry_type();
        let mode = header.mode().unwrap();
        let link = entry
            .link_name_bytes()
            .map(|l| String::from_utf8(l.into_owned()).unwrap());
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        found.push(Member {
            name,
            kind,
            mode,
            link,
            content,
        });
    }
    found
}

fn write_file(path: &Path, content: &[u8], mode: u32) {
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Creates `path` and its parents with mode 0755, whatever the umask.
fn make_dir(path: &Path) {
    fs::create_dir_all(path).unwrap();
    for dir in path.ancestors().take(2) {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// A small store path with a nested directory, files of several modes and
/// a symlink, created in the given order (forwards or backwards).
fn make_store_path(root: &Path, backwards: bool) {
    let mut steps: Vec<Box<dyn Fn()>> = vec![
        Box::new(|| make_dir(&root.join("bin"))),
        Box::new(|| make_dir(&root.join("share/doc"))),
        Box::new(|| write_file(&root.join("bin/hello"), b"#!/bin/sh\necho hi\n", 0o555)),
        Box::new(|| write_file(&root.join("share/doc/README"), b"read me\n", 0o444)),
        Box::new(|| write_file(&root.join("share/a-first"), b"a", 0o644)),
        Box::new(|| symlink("../bin/hello", root.join("share/hello-link")).unwrap()),
    ];
    if backwards {
        // Directories must exist before their contents: create them first,
        // then everything else in reverse order.
        let rest = steps.split_off(2);
        for step in steps.iter().chain(rest.iter().rev()) {
            step();
        }
    } else {
        for step in &steps {
            step();
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift64), shared by the archive tests.
pub(super) fn xorshift_bytes(len: usize, mut state: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[tokio::test]
async fn same_paths_give_same_digest_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("abc-hello");
    make_store_path(&path, false);
    let (first, first_summary) = pack(vec![path.clone()]).await;
    let (second, second_summary) = pack(vec![path]).await;
    assert_eq!(sha256_hex(&first), sha256_hex(&second));
    assert_eq!(first_summary, second_summary);
}

#[tokio::test]
async fn creation_order_and_argument_order_do_not_change_the_digest() {
    let dir = tempfile::tempdir().unwrap();
    let hello = dir.path().join("abc-hello");
    let other = dir.path().join("def-other");
    make_store_path(&hello, false);
    make_store_path(&other, true);
    let (first, _) = pack(vec![hello.clone(), other.clone()]).await;

    fs::remove_dir_all(&hello).unwrap();
    fs::remove_dir_all(&other).unwrap();
    make_store_path(&other, false);
    make_store_path(&hello, true);
    let (second, _) = pack(vec![other, hello]).await;
    assert_eq!(sha256_hex(&first), sha256_hex(&second));
}

#[tokio::test]
async fn members_are_sorted_absolute_with_modes_kept_and_owner_and_time_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("abc-hello");
    make_store_path(&root, true);
    fs::set_permissions(root.join("share/doc"), fs::Permissions::from_mode(0o700)).unwrap();
    let (blob, _) = pack(vec![root.clone()]).await;

    let r = root.to_str().unwrap();
    let dir_mode = fs::metadata(&root).unwrap().permissions().mode() & 0o7777;
    let found: Vec<_> = members(&blob)
        .into_iter()
        .map(|m| (m.name, m.kind, m.mode, m.link))
        .collect();
    use tar::EntryType::{Directory, Regular, Symlink};
    let expected = vec![
        (format!("{r}/"), Directory, dir_mode, None),
        (format!("{r}/bin/"), Directory, 0o755, None),
        (format!("{r}/bin/hello"), Regular, 0o555, None),
        (format!("{r}/share/"), Directory, 0o755, None),
        (format!("{r}/share/a-first"), Regular, 0o644, None),
        (format!("{r}/share/doc/"), Directory, 0o700, None),
        (format!("{r}/share/doc/README"), Regular, 0o444, None),
        (
            format!("{r}/share/hello-link"),
            Symlink,
            0o777,
            Some("../bin/hello".to_owned()),
        ),
    ];
    assert!(r.starts_with('/'), "temp dir is absolute");
    assert_eq!(found, expected);
}

#[tokio::test]
async fn regular_files_keep_their_content() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("abc-data");
    fs::create_dir(&root).unwrap();
    let big = xorshift_bytes(700_000, 7);
    write_file(&root.join("big"), &big, 0o444);
    write_file(&root.join("empty"), b"", 0o444);
    let (blob, _) = pack(vec![root.clone()]).await;
    let found = members(&blob);
    assert_eq!(found[1].name, format!("{}/big", root.display()));
    assert_eq!(found[1].content, big);
    assert_eq!(found[2].name, format!("{}/empty", root.display()));
    assert!(found[2].content.is_empty());
}

#[tokio::test]
async fn symlinks_stay_symlinks_even_when_absolute_or_dangling() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("abc-links");
    fs::create_dir(&root).unwrap();
    symlink("/nix/store/xyz-target/bin/sh", root.join("absolute")).unwrap();
    symlink("does-not-exist", root.join("dangling")).unwrap();
    // A store path that is itself a symlink.
    let top_link = dir.path().join("def-toplink");
    symlink(&root, &top_link).unwrap();
    let (blob, _) = pack(vec![root.clone(), top_link.clone()]).await;
    let found = members(&blob);
    let links: Vec<_> = found
        .iter()
        .filter(|m| m.kind == tar::EntryType::Symlink)
        .map(|m| (m.name.clone(), m.link.clone().unwrap()))
        .collect();
    assert_eq!(
        links,
        vec![
            (
                format!("{}/absolute", root.display()),
                "/nix/store/xyz-target/bin/sh".to_owned()
            ),
            (
                format!("{}/dangling", root.display()),
                "does-not-exist".to_owned()
            ),
            (top_link.display().to_string(), root.display().to_string()),
        ]
    );
    assert_eq!(found.len(), 4, "the symlinked store path is not followed");
}

#[tokio::test]
async fn long_names_and_link_targets_survive() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("abc-long");
    let deep = root.join("d".repeat(60)).join("e".repeat(60));
    fs::create_dir_all(&deep).unwrap();
    let file = deep.join(format!("{}.txt", "f".repeat(120)));
    write_file(&file, b"long", 0o444);
    let target = format!("/nix/store/{}", "t".repeat(150));
    symlink(&target, deep.join("link")).unwrap();
    let (blob, _) = pack(vec![root]).await;

    let found = members(&blob);
    let file_name = file.to_str().unwrap();
    assert!(file_name.len() > 200);
    let member = found
        .iter()
        .find(|m| m.name == file_name)
        .expect("long file member");
    assert_eq!(member.content, b"long");
    let link = found
        .iter()
        .find(|m| m.name == format!("{}/link", deep.display()))
        .expect("link member");
    assert_eq!(link.link.as_deref(), Some(target.as_str()));
}

#[tokio::test]
async fn empty_directory_is_a_member() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("abc-empty");
    fs::create_dir_all(root.join("nothing-here")).unwrap();
    let (blob, _) = pack(vec![root.clone()]).await;
    let names: Vec<_> = members(&blob).into_iter().map(|m| m.name).collect();
    assert_eq!(
        names,
        vec![
            format!("{}/", root.display()),
            format!("{}/nothing-here/", root.display())
        ]
    );
}

#[tokio::test]
async fn diff_id_is_the_sha256_of_the_decompressed_stream() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("abc-hello");
    make_store_path(&root, false);
    write_file(&root.join("noise"), &xorshift_bytes(1_000_000, 3), 0o444);
    let (blob, summary) = pack(vec![root]).await;
    let tar = gunzip(&blob);
    assert_eq!(summary.diff_id, sha256_hex(&tar));
    assert_eq!(summary.tar_size, tar.len() as u64);
    assert_eq!(tar.len() % 512, 0);
}

#[tokio::test]
async fn dropped_stream_stops_packing_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("abc-big");
    fs::create_dir(&root).unwrap();
    for i in 0..8 {
        write_file(
            &root.join(format!("part{i}")),
            &xorshift_bytes(1 << 20, i + 1),
            0o444,
        );
    }
    let (mut stream, handle) = pack_store_paths(vec![root]);
    let first = stream
        .next()
        .await
        .expect("a first chunk")
        .expect("not an error");
    assert!(!first.is_empty());
    drop(stream);
    let result = tokio::time::timeout(Duration::from_secs(60), handle)
        .await
        .expect("packing stopped instead of hanging")
        .expect("packing task ran");
    assert!(
        matches!(result, Err(ArchiveError::ConsumerGone)),
        "{result:?}"
    );
}

#[tokio::test]
async fn relative_path_is_rejected_and_the_stream_ends_in_an_error() {
    let result = failed_pack(vec![PathBuf::from("nix/store/abc")]).await;
    assert!(
        matches!(result, Err(ArchiveError::NotAbsolute(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn missing_path_ends_the_stream_in_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let result = failed_pack(vec![dir.path().join("gone")]).await;
    assert!(
        matches!(result, Err(ArchiveError::Read { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn fifo_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("abc-fifo");
    fs::create_dir(&root).unwrap();
    let fifo = std::ffi::CString::new(root.join("pipe").to_str().unwrap()).unwrap();
    // SAFETY: `fifo` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let result = failed_pack(vec![root]).await;
    assert!(
        matches!(result, Err(ArchiveError::UnsupportedFileType(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn gzip_file_compresses_and_hashes_the_uncompressed_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("symlinks.tar");
    let mut content = xorshift_bytes(300_000, 11);
    content.extend(b"text ".repeat(100_000));
    fs::write(&path, &content).unwrap();
    let (stream, handle) = gzip_file(path);
    let blob = collect(stream).await.unwrap();
    let summary = handle.await.unwrap().unwrap();
    assert_eq!(gunzip(&blob), content);
    assert_eq!(summary.diff_id, sha256_hex(&content));
    assert_eq!(summary.tar_size, content.len() as u64);
}

#[tokio::test]
async fn gzip_file_of_a_missing_file_ends_the_stream_in_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (stream, handle) = gzip_file(dir.path().join("missing.tar"));
    assert!(collect(stream).await.is_err());
    assert!(matches!(
        handle.await.unwrap(),
        Err(ArchiveError::Read { .. })
    ));
}

#[tokio::test]
async fn deep_directory_tree_is_packed_without_overflowing_the_stack() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("abc-deep");
    let mut deep = root.clone();
    for _ in 0..1900 {
        deep.push("d");
    }
    fs::create_dir_all(&deep).unwrap();
    write_file(&deep.join("leaf"), b"bottom", 0o444);
    let (blob, _) = pack(vec![root]).await;
    let found = members(&blob);
    assert_eq!(found.len(), 1902);
    let leaf = found.last().unwrap();
    assert_eq!(leaf.name, format!("{}/leaf", deep.display()));
    assert_eq!(leaf.content, b"bottom");
}

#[tokio::test]
async fn gnu_tar_reads_the_same_members() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("abc-hello");
    make_store_path(&root, false);
    let long = root.join("l".repeat(120));
    write_file(&long, b"long", 0o444);
    let (blob, _) = pack(vec![root]).await;
    let layer = dir.path().join("layer.tar.gz");
    fs::write(&layer, &blob).unwrap();

    let listing = std::process::Command::new("tar")
        .args(["--absolute-names", "-tzf"])
        .arg(&layer)
        .output()
        .expect("GNU tar is installed");
    assert!(
        listing.status.success(),
        "{}",
        String::from_utf8_lossy(&listing.stderr)
    );
    let listed: Vec<String> = String::from_utf8(listing.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let ours: Vec<String> = members(&blob).into_iter().map(|m| m.name).collect();
    assert_eq!(listed, ours);
    assert!(listed.contains(&long.display().to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_is_the_same_for_any_number_of_compressor_threads() {
    // Several blocks, compressible and not, ending inside a block.
    let mut content = Vec::new();
    for seed in 1..4 {
        content.extend(xorshift_bytes(700_000, seed));
        content.extend(
            format!("line {seed} of a text that repeats\n")
                .repeat(40_000)
                .bytes(),
        );
    }
    content.extend(b"tail");
    let mut streams = Vec::new();
    for compressors in [1, 2, 3, 7] {
        let input = content.clone();
        let (stream, handle) = super::pipeline::spawn_with(compressors, move |sink| {
            std::io::Write::write_all(sink, &input).map_err(ArchiveError::Compress)
        });
        let blob = collect(stream).await.unwrap();
        let summary = handle.await.unwrap().unwrap();
        assert_eq!(summary.diff_id, sha256_hex(&content));
        assert!(gunzip(&blob) == content, "{compressors} compressors");
        streams.push((compressors, blob));
    }
    for (compressors, blob) in &streams[1..] {
        assert!(
            *blob == streams[0].1,
            "{compressors} compressors give other bytes than 1"
        );
    }
}
