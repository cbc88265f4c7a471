//! The deterministic tar writer.
//!
//! Rules, chosen so that a layer's bytes depend only on the content of its
//! store paths:
//! - the store paths are packed in sorted order, each walked recursively
//!   with directory entries sorted by name (byte order), a directory's own
//!   entry coming before its contents;
//! - every directory, regular file and symlink becomes a member (symlinks
//!   stay symlinks, their targets unchanged); nothing else is allowed;
//! - member names are the absolute paths (`/nix/store/...`), directories
//!   with a trailing `/`; names or link targets longer than the 100 bytes a
//!   tar header holds use the GNU long-name extension;
//! - permission bits are kept, uid and gid are 0, user and group names are
//!   empty and every mtime is 1 (Nix's own epoch for store paths).
//!
//! The headers are filled in here rather than by `tar::Builder::append_path`,
//! whose headers carry the file's owner and times and whose names lose the
//! leading `/`.

use std::{
    ffi::OsString,
    fs::{self, File, Metadata},
    io::{self, Read},
    os::unix::fs::MetadataExt,
    path::{Component, Path, PathBuf},
};

use tar::{Builder, EntryType, Header};

use super::{ArchiveError, pipeline::HashingSink};

/// The mtime of every member.
const MTIME: u64 = 1;

/// Writes the tar of `paths` into `sink`.
pub(super) fn write_tar(paths: Vec<PathBuf>, sink: &mut HashingSink) -> Result<(), ArchiveError> {
    let mut paths = paths
        .into_iter()
        .map(normalise)
        .collect::<Result<Vec<_>, _>>()?;
    paths.sort();
    paths.dedup();

    let mut builder = Builder::new(sink);
    builder.preserve_absolute(true);
    for path in &paths {
        append_tree(&mut builder, path)?;
    }
    let finished = builder.finish();
    finished.map_err(|source| write_error(&mut builder, Path::new("the end of the tar"), source))
}

/// Checks that `path` is absolute with no `..`, and drops `.` components and
/// trailing slashes.
fn normalise(path: PathBuf) -> Result<PathBuf, ArchiveError> {
    let valid = path.is_absolute()
        && path
            .components()
            .all(|c| !matches!(c, Component::ParentDir))
        && path.components().count() > 1;
    if valid {
        Ok(path.components().collect())
    } else {
        Err(ArchiveError::NotAbsolute(path))
    }
}

/// Appends `root` and, if it is a directory, everything below it. The walk
/// keeps an explicit stack rather than recursing, so no directory depth can
/// overflow the thread's stack.
fn append_tree(builder: &mut Builder<&mut HashingSink>, root: &Path) -> Result<(), ArchiveError> {
    let mut pending = vec![root.to_owned()];
    while let Some(path) = pending.pop() {
        if let Some(mut children) = append_entry(builder, &path)? {
            // Reversed, so that the smallest name is popped first.
            children.sort_by(|a, b| b.cmp(a));
            pending.extend(children.into_iter().map(|name| path.join(name)));
        }
    }
    Ok(())
}

/// Appends the member for `path`; for a directory, returns its entries.
fn append_entry(
    builder: &mut Builder<&mut HashingSink>,
    path: &Path,
) -> Result<Option<Vec<OsString>>, ArchiveError> {
    let read_error = |source| ArchiveError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = fs::symlink_metadata(path).map_err(read_error)?;
    let kind = meta.file_type();
    let mut header = header_for(&meta);
    let mut children = None;
    let written = if kind.is_dir() {
        let names = fs::read_dir(path)
            .and_then(|entries| entries.map(|e| e.map(|e| e.file_name())).collect())
            .map_err(read_error)?;
        children = Some(names);
        header.set_entry_type(EntryType::Directory);
        header.set_size(0);
        let mut name = OsString::from(path);
        name.push("/");
        builder.append_data(&mut header, name, io::empty())
    } else if kind.is_symlink() {
        let target = fs::read_link(path).map_err(read_error)?;
        header.set_entry_type(EntryType::Symlink);
        header.set_size(0);
        builder.append_link(&mut header, path, target)
    } else if kind.is_file() {
        let file = File::open(path).map_err(read_error)?;
        header.set_entry_type(EntryType::Regular);
        header.set_size(meta.len());
        builder.append_data(&mut header, path, ExactReader::new(file, meta.len()))
    } else {
        return Err(ArchiveError::UnsupportedFileType(path.to_owned()));
    };
    written.map_err(|source| write_error(builder, path, source))?;
    Ok(children)
}

/// A header with everything but the type, size and name filled in.
fn header_for(meta: &Metadata) -> Header {
    let mut header = Header::new_gnu();
    header.set_mode(meta.mode() & 0o7777);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(MTIME);
    header
}

/// Tells a failed write to the compressor apart from a failed read of `path`
/// (both surface as an I/O error from the tar builder).
fn write_error(
    builder: &mut Builder<&mut HashingSink>,
    path: &Path,
    source: io::Error,
) -> ArchiveError {
    if builder.get_mut().is_closed() {
        ArchiveError::ConsumerGone
    } else {
        ArchiveError::Read {
            path: path.to_owned(),
            source,
        }
    }
}

/// Reads exactly the `remaining` bytes announced in the header, failing if
/// the file turns out shorter (a short member would corrupt the tar).
struct ExactReader {
    file: File,
    remaining: u64,
}

impl ExactReader {
    fn new(file: File, remaining: u64) -> Self {
        Self { file, remaining }
    }
}

impl Read for ExactReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let limit = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let read = self.file.read(&mut buf[..limit])?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being packed",
            ));
        }
        self.remaining -= read as u64;
        Ok(read)
    }
}
