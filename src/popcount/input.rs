//! Reading the list of store paths popcount works through.
//!
//! Channels publish it as `store-paths.xz`; people also keep it unpacked.
//! Compression is recognised by the xz magic bytes rather than by the file
//! name, so a renamed file still works.

use std::io::{self, Read};
use std::path::Path;

use super::store_path::{StorePath, StorePathError};

/// The first bytes of every xz stream.
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];

/// The store paths of the input list, without duplicates, in input order.
#[derive(Debug, Default)]
pub struct StorePathList {
    /// The valid, distinct store paths.
    pub paths: Vec<StorePath>,
    /// Lines that are not store paths: 1-based line number and why.
    pub invalid: Vec<(usize, StorePathError)>,
}

/// Why the input list could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file (or standard input) could not be read.
    #[error("cannot read the store path list")]
    Read(#[source] io::Error),
    /// The xz stream is corrupt or truncated.
    #[error("cannot decompress the xz store path list")]
    Xz(#[source] io::Error),
    /// The (decompressed) content is not UTF-8 text.
    #[error("the store path list is not UTF-8 text")]
    NotText,
}

/// Reads a store path list from `path` (`-` is standard input).
pub fn read_store_paths(path: &Path) -> Result<StorePathList, InputError> {
    let raw = if path == Path::new("-") {
        let mut raw = Vec::new();
        io::stdin()
            .read_to_end(&mut raw)
            .map_err(InputError::Read)?;
        raw
    } else {
        std::fs::read(path).map_err(InputError::Read)?
    };
    parse_store_paths(&raw)
}

/// Parses the bytes of a store path list, decompressing xz if needed.
pub fn parse_store_paths(raw: &[u8]) -> Result<StorePathList, InputError> {
    let mut text = Vec::new();
    let raw = if raw.starts_with(XZ_MAGIC) {
        xz2::read::XzDecoder::new(raw)
            .read_to_end(&mut text)
            .map_err(InputError::Xz)?;
        &text[..]
    } else {
        raw
    };
    let text = std::str::from_utf8(raw).map_err(|_| InputError::NotText)?;
    let mut list = StorePathList::default();
    let mut seen = std::collections::HashSet::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match StorePath::parse(line) {
            Ok(path) if seen.insert(path.hash().to_owned()) => list.paths.push(path),
            Ok(_) => {}
            Err(error) => list.invalid.push((index + 1, error)),
        }
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const LIST: &str = "/nix/store/0c7c96gikmzv87i7lv3vq5s1cmfjd6zf-a\n\
                        \n\
                        /nix/store/1c7c96gikmzv87i7lv3vq5s1cmfjd6zf-b\n\
                        /nix/store/0c7c96gikmzv87i7lv3vq5s1cmfjd6zf-a\n\
                        bogus\n";

    fn names(list: &StorePathList) -> Vec<&str> {
        list.paths.iter().map(StorePath::name).collect()
    }

    #[test]
    fn plain_list_is_deduplicated_and_bad_lines_reported() {
        let list = parse_store_paths(LIST.as_bytes()).unwrap();
        assert_eq!(names(&list), ["a", "b"]);
        assert_eq!(list.invalid.len(), 1);
        assert_eq!(list.invalid[0].0, 5);
    }

    #[test]
    fn xz_list_reads_like_the_plain_one() {
        let mut encoder = xz2::write::XzEncoder::new(Vec::new(), 6);
        encoder.write_all(LIST.as_bytes()).unwrap();
        let compressed = encoder.finish().unwrap();
        let list = parse_store_paths(&compressed).unwrap();
        assert_eq!(names(&list), ["a", "b"]);
    }

    #[test]
    fn truncated_xz_is_an_error_not_a_panic() {
        let mut encoder = xz2::write::XzEncoder::new(Vec::new(), 6);
        encoder.write_all(LIST.as_bytes()).unwrap();
        let compressed = encoder.finish().unwrap();
        let truncated = &compressed[..compressed.len() / 2];
        assert!(matches!(
            parse_store_paths(truncated),
            Err(InputError::Xz(_))
        ));
    }
}
