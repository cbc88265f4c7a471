//! The symlink layer: the last layer of every image, computed here from the
//! realised packages (it used to be three Nix derivations: `symlinkJoin`, a
//! tarball and a result file; see `docs/internals.md`).
//!
//! It holds:
//! - the symlink forest of all packages ([`forest`], nixpkgs'
//!   `symlinkJoin` semantics), which makes `/bin/<program>` of every
//!   package work;
//! - `/etc/passwd`, `/etc/group` (root, nobody and the image's non-root
//!   user, if any) and `/etc/nsswitch.conf`, replacing any a package brings;
//! - an empty world-writable `/tmp` (1777), root's home `/root` (0700),
//!   nobody's `/var/empty` (0555), and `/nix`, `/nix/store` (0755: the
//!   store layers hold only their paths, and runtimes create missing
//!   parents with modes a non-root user cannot pass);
//! - `/usr/bin/env`, a symlink to the same target as the forest's
//!   `bin/env`, when a package provides one (scripts' `#!/usr/bin/env`);
//! - for an image with a non-root user, `/home` and the user's home, owned
//!   by the user.
//!
//! Every directory has mode 0755 except those named above; members are
//! sorted by path (bytes), owned by root (but the home), with mtime 1,
//! written as GNU tar does ([`gnu_tar`]). The tar's bytes, and so its
//! SHA-256, the layer's key in the layer store, are the ones the Nix
//! builder produced for the same store paths (a test compares them): the
//! change from Nix to Rust keeps every stored symlink layer reusable, and
//! two instances give the same layer for the same store paths.
//!
//! Where a package provides one of the fixed entries (`etc/passwd`, a
//! symlink named `tmp`), the fixed entry replaces it.

pub mod forest;
pub mod gnu_tar;

use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::digest::Digest;
use crate::image::User;
use forest::{Forest, Node};
use gnu_tar::{Kind, Member};

/// The mtime of every member (Nix's epoch for store paths).
const MTIME: u64 = 1;

/// Why the symlink layer could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SymlinkLayerError {
    /// A directory or symlink of a package could not be read.
    #[error("cannot read {path:?} for the symlink layer: {source}")]
    Read {
        /// What could not be read.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// The symlink layer of an image: an uncompressed tarball.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymlinkLayer {
    /// Size of the tarball in bytes.
    pub size: u64,
    /// SHA-256 of the tarball: the layer's key in the layer store, and its
    /// `diff_id`.
    pub tar_hash: Digest,
    /// The tarball.
    pub tar: Bytes,
}

/// The symlink layer of the image whose packages are `packages` (store
/// paths, in any order) and whose non-root user is `user`. Reads the
/// packages' directories; call it off the async threads.
pub fn build(packages: &[PathBuf], user: Option<&User>) -> Result<SymlinkLayer, SymlinkLayerError> {
    let mut sorted = packages.to_vec();
    sorted.sort();
    sorted.dedup();
    let forest = forest::join(&sorted)?;
    let tar = gnu_tar::write(&members(forest, user));
    Ok(SymlinkLayer {
        size: tar.len() as u64,
        tar_hash: Digest::of(&tar),
        tar: Bytes::from(tar),
    })
}

/// What one tree entry of the layer is.
enum Entry {
    Directory(u32),
    File(Vec<u8>),
    Symlink(Vec<u8>),
}

/// Every member of the layer, in archive order.
fn members(forest: Forest, user: Option<&User>) -> Vec<Member> {
    let env = forest
        .get(b"bin/env".as_slice())
        .and_then(|node| match node {
            Node::Symlink(target) => Some(target.clone()),
            Node::Directory => None,
        });
    let mut tree: std::collections::BTreeMap<Vec<u8>, Entry> = forest
        .into_iter()
        .map(|(path, node)| {
            let entry = match node {
                Node::Directory => Entry::Directory(0o755),
                Node::Symlink(target) => Entry::Symlink(target),
            };
            (path, entry)
        })
        .collect();
    let mut put = |path: &str, entry: Entry| {
        // A fixed entry replaces what a package put there, and its parents
        // are directories.
        let mut parent = String::new();
        for part in Path::new(path).parent().into_iter().flat_map(|p| p.iter()) {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(&part.to_string_lossy());
            let key = parent.as_bytes().to_vec();
            if !matches!(tree.get(&key), Some(Entry::Directory(_))) {
                remove_below(&mut tree, &key);
                tree.insert(key, Entry::Directory(0o755));
            }
        }
        let key = path.as_bytes().to_vec();
        let keeps_contents = matches!(entry, Entry::Directory(_))
            && matches!(tree.get(&key), Some(Entry::Directory(_)));
        if !keeps_contents {
            remove_below(&mut tree, &key);
        }
        tree.insert(key, entry);
    };
    for dir in ["tmp", "etc", "root", "var/empty", "nix/store"] {
        put(dir, Entry::Directory(0o755));
    }
    put("etc/passwd", Entry::File(passwd(user).into_bytes()));
    put("etc/group", Entry::File(group(user).into_bytes()));
    put(
        "etc/nsswitch.conf",
        Entry::File(NSSWITCH.as_bytes().to_vec()),
    );
    if let Some(target) = env {
        put("usr/bin/env", Entry::Symlink(target));
    }
    put("tmp", Entry::Directory(0o1777));
    put("root", Entry::Directory(0o700));
    put("var/empty", Entry::Directory(0o555));
    if user.is_some() {
        put("home", Entry::Directory(0o755));
    }

    let mut members: Vec<Member> = tree
        .into_iter()
        .map(|(name, entry)| {
            let (mode, kind) = match entry {
                Entry::Directory(mode) => (mode, Kind::Directory),
                Entry::File(contents) => (0o644, Kind::File(contents)),
                Entry::Symlink(target) => (0o777, Kind::Symlink(target)),
            };
            Member {
                name,
                mode,
                owner: 0,
                mtime: MTIME,
                kind,
            }
        })
        .collect();
    // The home goes last, as `tar --append` added it after the sorted rest.
    if let Some(user) = user {
        members.push(Member {
            name: user.home().trim_start_matches('/').as_bytes().to_vec(),
            mode: 0o755,
            owner: user.uid,
            mtime: MTIME,
            kind: Kind::Directory,
        });
    }
    members
}

/// Remove `key` and everything below it.
fn remove_below(tree: &mut std::collections::BTreeMap<Vec<u8>, Entry>, key: &[u8]) {
    tree.remove(key);
    let mut prefix = key.to_vec();
    prefix.push(b'/');
    let below: Vec<Vec<u8>> = tree
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(k, _)| k.clone())
        .collect();
    for k in below {
        tree.remove(&k);
    }
}

/// `/etc/passwd`: root and nobody, as nixpkgs' fakeNss has them, and the
/// image's user.
fn passwd(user: Option<&User>) -> String {
    let mut text = String::from(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/var/empty:/bin/false\n",
    );
    if let Some(user) = user {
        let (name, uid, home) = (user.name, user.uid, user.home());
        text.push_str(&format!("{name}:x:{uid}:{uid}:{name}:{home}:/bin/sh\n"));
    }
    text
}

/// `/etc/group`: root, nobody and the image's user's group (its gid is its
/// uid).
fn group(user: Option<&User>) -> String {
    let mut text = String::from("root:x:0:\nnobody:x:65534:\n");
    if let Some(user) = user {
        text.push_str(&format!("{}:x:{}:\n", user.name, user.uid));
    }
    text
}

/// `/etc/nsswitch.conf`: users and groups from the files above.
const NSSWITCH: &str = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n";

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    /// (name, mode, owner, symlink target) of every member, in order.
    fn listing(layer: &SymlinkLayer) -> Vec<(String, u32, u64, Option<String>)> {
        let mut archive = tar::Archive::new(layer.tar.as_ref());
        archive
            .entries()
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                let header = entry.header();
                (
                    String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
                    header.mode().unwrap(),
                    header.uid().unwrap(),
                    entry
                        .link_name()
                        .unwrap()
                        .map(|t| t.to_string_lossy().into_owned()),
                )
            })
            .collect()
    }

    #[test]
    fn bytes_depend_on_the_set_of_packages_not_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("aaaa-a");
        let b = dir.path().join("bbbb-b");
        for (p, program) in [(&a, "x"), (&b, "y")] {
            fs::create_dir_all(p.join("bin")).unwrap();
            fs::write(p.join("bin").join(program), "").unwrap();
            fs::write(p.join("bin/both"), "").unwrap();
        }
        let one = build(&[a.clone(), b.clone()], None).unwrap();
        let other = build(&[b.clone(), a.clone(), b.clone()], None).unwrap();
        assert_eq!(one, other);
        assert_eq!(one.tar_hash, Digest::of(&one.tar));
        assert_eq!(one.size, one.tar.len() as u64);
        // The first package by store path wins the conflict.
        let both = listing(&one)
            .into_iter()
            .find(|(name, ..)| name == "bin/both")
            .unwrap();
        assert_eq!(both.3, Some(format!("{}/bin/both", a.display())));
    }

    #[test]
    fn fixed_entries_replace_what_packages_bring() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pkg");
        fs::create_dir_all(p.join("etc")).unwrap();
        fs::write(p.join("etc/passwd"), "evil").unwrap();
        fs::write(p.join("etc/motd"), "hi").unwrap();
        symlink("/somewhere", p.join("tmp")).unwrap();
        fs::create_dir_all(p.join("bin")).unwrap();
        symlink("/nix/store/x-coreutils/bin/env", p.join("bin/env")).unwrap();
        let user = User::from_meta_package("user-1000").unwrap();
        let layer = build(std::slice::from_ref(&p), Some(&user)).unwrap();
        let members = listing(&layer);
        let get = |name: &str| {
            members
                .iter()
                .find(|(n, ..)| n.trim_end_matches('/') == name)
                .unwrap_or_else(|| panic!("{name} in {members:?}"))
                .clone()
        };
        assert_eq!(get("tmp"), ("tmp/".into(), 0o1777, 0, None));
        assert_eq!(get("root").1, 0o700);
        assert_eq!(get("var/empty").1, 0o555);
        assert_eq!(get("etc/passwd").3, None, "a file of the layer's own");
        assert_eq!(get("etc/motd").3, Some(format!("{}/etc/motd", p.display())));
        assert_eq!(
            get("usr/bin/env").3,
            Some("/nix/store/x-coreutils/bin/env".into())
        );
        // The home comes last, owned by the user.
        assert_eq!(
            members.last().unwrap(),
            &("home/user/".to_string(), 0o755, 1000, None)
        );
        let mut archive = tar::Archive::new(layer.tar.as_ref());
        let passwd = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| e.path_bytes().as_ref() == b"etc/passwd")
            .map(|mut e| {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut e, &mut text).unwrap();
                text
            })
            .unwrap();
        assert!(
            passwd.ends_with("user:x:1000:1000:user:/home/user:/bin/sh\n"),
            "{passwd}"
        );
    }
}
