//! The main program of an image's command package: what `/bin/<program>`
//! the image config's `Cmd` runs (see [`crate::image::Image::cmd`]).
//!
//! It is the package's declared `meta.mainProgram` when its `bin/` has that
//! name as an executable file (symlinks followed), else the only entry of
//! its `bin/` (names starting with `.` aside) when that is an executable
//! file, else none. A chosen name that is not a plain file name (letters,
//! digits, `.`, `_`, `+`, `-`; not `.` or `..`) gives none, so the config
//! never holds a path a package could steer.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The main program of the realised package at `package`, whose declared
/// `meta.mainProgram` is `declared` (empty when it declares none). Reads
/// the package's `bin/`.
pub fn choose(package: &Path, declared: &str) -> Option<String> {
    let bin = package.join("bin");
    let chosen = if !declared.is_empty() && is_executable_file(&bin.join(declared)) {
        Some(declared.to_owned())
    } else {
        only_program(&bin)
    };
    chosen.filter(|name| is_plain_name(name))
}

/// The one entry of `bin` not starting with `.`, when it is the only one and
/// an executable file.
fn only_program(bin: &Path) -> Option<String> {
    let mut names = std::fs::read_dir(bin)
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.file_name()))
        .filter(|name| !name.as_encoded_bytes().starts_with(b"."));
    let only = names.next()?;
    if names.next().is_some() || !is_executable_file(&bin.join(&only)) {
        return None;
    }
    only.into_string().ok()
}

/// Whether `path` is, after symlinks, a file with an execute bit.
fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Letters, digits, `.`, `_`, `+` and `-` only, and neither `.` nor `..`.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn executable(path: &Path) {
        fs::write(path, "#!/bin/sh\n").unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn declared_program_wins_when_bin_has_it() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        executable(&bin.join("git"));
        executable(&bin.join("git-shell"));
        assert_eq!(choose(dir.path(), "git"), Some("git".into()));
        assert_eq!(
            choose(dir.path(), "nope"),
            None,
            "two programs, none declared that exists"
        );
        assert_eq!(choose(dir.path(), ""), None);
    }

    #[test]
    fn the_only_executable_file_is_the_main_program() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        executable(&dir.path().join("real"));
        symlink(dir.path().join("real"), bin.join("hello")).unwrap();
        assert_eq!(choose(dir.path(), ""), Some("hello".into()));
        assert_eq!(choose(dir.path(), "missing"), Some("hello".into()));
    }

    #[test]
    fn no_program_without_an_executable_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(choose(dir.path(), ""), None, "no bin/");
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        fs::write(bin.join("data"), "x").unwrap();
        assert_eq!(choose(dir.path(), "data"), None, "not executable");
        fs::remove_file(bin.join("data")).unwrap();
        fs::create_dir(bin.join("dir")).unwrap();
        assert_eq!(choose(dir.path(), ""), None, "a directory");
    }

    #[test]
    fn names_that_are_not_plain_give_no_program() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        executable(&bin.join("a b"));
        assert_eq!(choose(dir.path(), ""), None);
        executable(&dir.path().join("x"));
        assert_eq!(choose(dir.path(), "../x"), None);
    }
}
