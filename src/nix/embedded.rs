//! The Nix files of `prepare-image/`, embedded in the binary so that the
//! server needs nothing but `nix-build` on PATH, and written to a private
//! directory at start-up.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Start of the name of every directory [`create_dir`] makes; the owning
/// process id follows, then `-` and a random part.
const DIR_PREFIX: &str = "nixery-nix-";

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

/// Creates the private directory the files are written to, in the system's
/// temporary directory and named after this process, after removing the
/// ones processes that no longer run left there (a server that is killed
/// never removes its own).
pub fn create_dir() -> io::Result<tempfile::TempDir> {
    let parent = std::env::temp_dir();
    let removed = remove_abandoned(&parent);
    if removed > 0 {
        tracing::info!(removed, dir = %parent.display(), "removed Nix file directories of servers that no longer run");
    }
    tempfile::Builder::new()
        .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
        .tempdir_in(&parent)
}

/// Removes the directories under `parent` that [`create_dir`] made for a
/// process that no longer runs, when this user owns them; returns how many
/// went. Best effort: what cannot be read or removed stays. Without `/proc`
/// no process can be confirmed gone, and nothing is removed.
fn remove_abandoned(parent: &Path) -> usize {
    let Ok(me) = fs::metadata("/proc/self") else {
        return 0;
    };
    let Ok(entries) = fs::read_dir(parent) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix(DIR_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        // `DirEntry::metadata` does not follow symlinks: a link is never a directory here.
        let ours = entry
            .metadata()
            .is_ok_and(|meta| meta.is_dir() && meta.uid() == me.uid());
        let running = Path::new("/proc").join(pid.to_string()).exists();
        if ours && !running && pid != std::process::id() && fs::remove_dir_all(entry.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
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

    /// The id of a process that has just ended.
    fn ended_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn directories_of_ended_processes_are_removed_and_others_kept() {
        let parent = tempfile::tempdir().unwrap();
        let ended = ended_pid();
        let abandoned = parent.path().join(format!("{DIR_PREFIX}{ended}-a1b2c3"));
        fs::create_dir_all(abandoned.join(OFFLINE_PKGS)).unwrap();
        write_all(&abandoned).unwrap();
        let live = parent
            .path()
            .join(format!("{DIR_PREFIX}{}-d4e5f6", std::process::id()));
        let init = parent.path().join(format!("{DIR_PREFIX}1-g7h8i9"));
        let not_ours_by_name = parent.path().join(format!("nixery-nixos-{ended}-x"));
        let a_file = parent.path().join(format!("{DIR_PREFIX}{ended}-file"));
        let target = parent.path().join("target-of-link");
        let a_link = parent.path().join(format!("{DIR_PREFIX}{ended}-link"));
        for dir in [&live, &init, &not_ours_by_name, &target] {
            fs::create_dir(dir).unwrap();
        }
        fs::write(&a_file, "kept").unwrap();
        std::os::unix::fs::symlink(&target, &a_link).unwrap();

        assert_eq!(remove_abandoned(parent.path()), 1);
        assert!(!abandoned.exists(), "the ended process's directory is gone");
        for kept in [&live, &init, &not_ours_by_name, &a_file, &target, &a_link] {
            assert!(
                kept.symlink_metadata().is_ok(),
                "{} is kept",
                kept.display()
            );
        }
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
