//! The Nix files of `prepare-image/`, embedded in the binary so that the
//! server needs nothing but `nix-build` on PATH, and written to a private
//! directory at start-up.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// `prepare-image.nix` inside the written directory.
pub const PREPARE_IMAGE: &str = "prepare-image.nix";
/// `load-pkgs.nix` inside the written directory.
pub const LOAD_PKGS: &str = "load-pkgs.nix";
/// The offline package set inside the written directory.
pub const OFFLINE_PKGS: &str = "offline-pkgs";

/// Every embedded file: path relative to `prepare-image/`, contents.
pub const FILES: &[(&str, &str)] = &[
    (
        PREPARE_IMAGE,
        include_str!("../../prepare-image/prepare-image.nix"),
    ),
    (LOAD_PKGS, include_str!("../../prepare-image/load-pkgs.nix")),
    (
        "offline-pkgs/default.nix",
        include_str!("../../prepare-image/offline-pkgs/default.nix"),
    ),
    (
        "offline-pkgs/lib.nix",
        include_str!("../../prepare-image/offline-pkgs/lib.nix"),
    ),
    (
        "offline-pkgs/builders.nix",
        include_str!("../../prepare-image/offline-pkgs/builders.nix"),
    ),
    (
        "offline-pkgs/hello-greeting.txt",
        include_str!("../../prepare-image/offline-pkgs/hello-greeting.txt"),
    ),
];

/// Hex SHA-256 of every embedded file (path and contents, unambiguously
/// encoded): the revision of the embedded package set, fixed per binary.
pub fn content_hash() -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for (path, contents) in FILES {
        for part in [path.as_bytes(), contents.as_bytes()] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
    }
    hex::encode(hasher.finalize())
}

/// Write [`FILES`] under `dir` (directories 0755, files 0644, so that Nix
/// can read them whichever user evaluates).
pub fn write_all(dir: &Path) -> io::Result<()> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    for (relative, contents) in FILES {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
            fs::set_permissions(parent, fs::Permissions::from_mode(0o755))?;
        }
        fs::write(&path, contents)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn files_on_disk(root: &Path, dir: &Path, found: &mut BTreeSet<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files_on_disk(root, &path, found);
            } else {
                found.insert(
                    path.strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }

    #[test]
    fn every_file_the_nix_step_needs_is_embedded() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("prepare-image");
        let mut on_disk = BTreeSet::new();
        files_on_disk(&root, &root.join(OFFLINE_PKGS), &mut on_disk);
        on_disk.insert(PREPARE_IMAGE.to_string());
        on_disk.insert(LOAD_PKGS.to_string());
        let embedded: BTreeSet<String> = FILES.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(embedded, on_disk);
    }

    #[test]
    fn written_files_match_the_sources() {
        let dir = tempfile::tempdir().unwrap();
        write_all(dir.path()).unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("prepare-image");
        for (relative, _) in FILES {
            assert_eq!(
                fs::read(dir.path().join(relative)).unwrap(),
                fs::read(root.join(relative)).unwrap(),
                "{relative}"
            );
        }
        let mode = fs::metadata(dir.path().join(OFFLINE_PKGS))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
    }
}
