//! The symlink forest of an image's packages, as nixpkgs' `symlinkJoin`
//! makes it with `lndir`: one tree of real directories whose other entries
//! are symlinks into the packages.
//!
//! The rules, those of X.Org's `lndir -silent` run once per package into
//! the same tree:
//! - the packages are joined in the order given (the caller sorts them by
//!   store path, the order prepare-image gave `symlinkJoin`);
//! - a directory of a package becomes a real directory of the tree (a
//!   symlink to a directory is not a directory here), and its contents are
//!   joined into it; directories named `RCS`, `SCCS`, `CVS`, `CVS.adm`,
//!   `.svn`, `.git` or `.hg` are skipped, as `lndir` skips them;
//! - any other entry becomes a symlink: to the entry's absolute path for a
//!   file, to the same target (unchanged, relative or not) for a symlink;
//! - the first package to provide a name wins: a later file, symlink or
//!   directory where the tree already has something is left out, and so is
//!   everything below a later directory whose name the tree has as a
//!   symlink;
//! - a package whose store path is not a directory adds nothing.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use super::SymlinkLayerError;

/// Directory names `lndir` never descends into.
const SKIPPED_DIRECTORIES: &[&[u8]] = &[
    b"RCS", b"SCCS", b"CVS", b"CVS.adm", b".svn", b".git", b".hg",
];

/// One entry of the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// A real directory.
    Directory,
    /// A symlink to this target.
    Symlink(Vec<u8>),
}

/// The joined tree: relative paths (`bin`, `bin/hello`; bytes, as file
/// names need not be UTF-8) in byte order, each a directory or a symlink.
pub type Forest = BTreeMap<Vec<u8>, Node>;

/// Join `packages` (absolute store paths) into one forest.
pub fn join(packages: &[PathBuf]) -> Result<Forest, SymlinkLayerError> {
    let mut forest = Forest::new();
    for package in packages {
        let is_dir = fs::metadata(package)
            .map_err(|source| read_error(package, source))?
            .is_dir();
        if is_dir {
            join_directory(&mut forest, package)?;
        }
    }
    Ok(forest)
}

/// Join the contents of the package directory `root`. Walks with an
/// explicit stack, so no directory depth can overflow the thread's stack.
fn join_directory(forest: &mut Forest, root: &Path) -> Result<(), SymlinkLayerError> {
    let mut pending: Vec<(PathBuf, Vec<u8>)> = vec![(root.to_owned(), Vec::new())];
    while let Some((dir, relative)) = pending.pop() {
        let entries = fs::read_dir(&dir).map_err(|source| read_error(&dir, source))?;
        for entry in entries {
            let entry = entry.map_err(|source| read_error(&dir, source))?;
            let name = entry.file_name();
            let source_path = entry.path();
            let file_type = entry
                .file_type()
                .map_err(|source| read_error(&source_path, source))?;
            let path = child(&relative, &name);
            if file_type.is_dir() {
                if SKIPPED_DIRECTORIES.contains(&name.as_bytes()) {
                    continue;
                }
                match forest.get(&path) {
                    Some(Node::Symlink(_)) => continue,
                    Some(Node::Directory) => {}
                    None => {
                        forest.insert(path.clone(), Node::Directory);
                    }
                }
                pending.push((source_path, path));
            } else if let std::collections::btree_map::Entry::Vacant(slot) = forest.entry(path) {
                let target = if file_type.is_symlink() {
                    fs::read_link(&source_path)
                        .map_err(|source| read_error(&source_path, source))?
                        .into_os_string()
                        .into_vec()
                } else {
                    source_path.into_os_string().into_vec()
                };
                slot.insert(Node::Symlink(target));
            }
        }
    }
    Ok(())
}

/// `relative/name` (just `name` at the top).
fn child(relative: &[u8], name: &OsStr) -> Vec<u8> {
    let mut path = relative.to_vec();
    if !path.is_empty() {
        path.push(b'/');
    }
    path.extend_from_slice(name.as_bytes());
    path
}

fn read_error(path: &Path, source: std::io::Error) -> SymlinkLayerError {
    SymlinkLayerError::Read {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn link(target: &str) -> Node {
        Node::Symlink(target.as_bytes().to_vec())
    }

    fn entries(forest: &Forest) -> Vec<(String, Node)> {
        forest
            .iter()
            .map(|(k, v)| (String::from_utf8(k.clone()).unwrap(), v.clone()))
            .collect()
    }

    #[test]
    fn first_package_wins_and_directories_merge() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        for p in [&a, &b] {
            fs::create_dir_all(p.join("bin")).unwrap();
        }
        fs::write(a.join("bin/tool"), "a").unwrap();
        fs::write(b.join("bin/tool"), "b").unwrap();
        fs::write(b.join("bin/other"), "b").unwrap();
        // `b` has a directory where `a` has a file: `a`'s file stays, and
        // nothing of `b`'s directory gets in.
        fs::write(a.join("share"), "a").unwrap();
        fs::create_dir_all(b.join("share/doc")).unwrap();
        fs::write(b.join("share/doc/x"), "b").unwrap();
        let forest = join(&[a.clone(), b.clone()]).unwrap();
        let a_ = a.display().to_string();
        let b_ = b.display().to_string();
        assert_eq!(
            entries(&forest),
            [
                ("bin".to_string(), Node::Directory),
                ("bin/other".to_string(), link(&format!("{b_}/bin/other"))),
                ("bin/tool".to_string(), link(&format!("{a_}/bin/tool"))),
                ("share".to_string(), link(&format!("{a_}/share"))),
            ]
        );
    }

    #[test]
    fn symlinks_are_copied_and_symlinked_directories_stay_links() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        fs::create_dir_all(a.join("lib/real")).unwrap();
        fs::write(a.join("lib/real/libx.so"), "x").unwrap();
        symlink("real", a.join("lib/alias")).unwrap();
        symlink("libx.so", a.join("lib/real/libx.so.1")).unwrap();
        symlink("/elsewhere/absolute", a.join("abs")).unwrap();
        // A later package with a real directory under the symlinked name:
        // the link wins and the directory's contents stay out.
        fs::create_dir_all(b.join("lib/alias")).unwrap();
        fs::write(b.join("lib/alias/from-b"), "b").unwrap();
        // A directory lndir skips.
        fs::create_dir_all(b.join(".git")).unwrap();
        fs::write(b.join(".git/config"), "b").unwrap();
        let forest = join(&[a.clone(), b]).unwrap();
        let a_ = a.display().to_string();
        assert_eq!(
            entries(&forest),
            [
                ("abs".to_string(), link("/elsewhere/absolute")),
                ("lib".to_string(), Node::Directory),
                ("lib/alias".to_string(), link("real")),
                ("lib/real".to_string(), Node::Directory),
                (
                    "lib/real/libx.so".to_string(),
                    link(&format!("{a_}/lib/real/libx.so"))
                ),
                ("lib/real/libx.so.1".to_string(), link("libx.so")),
            ]
        );
    }

    #[test]
    fn a_package_that_is_a_file_adds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, "x").unwrap();
        assert_eq!(join(&[file]).unwrap(), Forest::new());
    }
}
