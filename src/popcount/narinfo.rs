//! The parts of a binary cache's `.narinfo` file that popcount needs.
//!
//! A narinfo is a list of `Key: value` lines. Like Nix itself, we insist on
//! the fields every valid narinfo carries (`StorePath`, `URL`, `NarHash`,
//! `NarSize`) so that an HTML error page or a truncated download served with
//! status 200 is reported as malformed instead of silently counting nothing.
//! `References:` may be absent or empty (a path without dependencies).

use super::store_path::{StorePath, StorePathError};

/// Fields every narinfo must have, as in Nix's own parser.
const REQUIRED: [&str; 4] = ["StorePath", "URL", "NarHash", "NarSize"];

/// A parsed narinfo: which path it describes and what that path refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarInfo {
    /// The store path the narinfo describes.
    pub store_path: StorePath,
    /// The store paths it references, in file order (may include itself).
    pub references: Vec<StorePath>,
}

/// Why a narinfo could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NarInfoError {
    /// The body is not UTF-8 text.
    #[error("not UTF-8 text")]
    NotText,
    /// A non-empty line has no `Key: value` shape.
    #[error("line {line} is not `Key: value`")]
    NotKeyValue {
        /// 1-based line number.
        line: usize,
    },
    /// A field Nix requires is missing.
    #[error("required field `{0}` is missing")]
    Missing(&'static str),
    /// `StorePath:` does not hold a store path.
    #[error("bad StorePath: {0}")]
    StorePath(StorePathError),
    /// An entry of `References:` is not a store path base name.
    #[error("bad reference: {0}")]
    Reference(StorePathError),
}

impl NarInfo {
    /// Parses the text of a narinfo.
    pub fn parse(body: &[u8]) -> Result<Self, NarInfoError> {
        let text = std::str::from_utf8(body).map_err(|_| NarInfoError::NotText)?;
        let mut seen = Vec::new();
        let mut store_path = None;
        let mut references = Vec::new();
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let (key, value) = line
                .split_once(": ")
                .or_else(|| line.strip_suffix(':').map(|key| (key, "")))
                .ok_or(NarInfoError::NotKeyValue { line: index + 1 })?;
            match key {
                "StorePath" => {
                    store_path =
                        Some(StorePath::parse(value.trim()).map_err(NarInfoError::StorePath)?)
                }
                "References" => {
                    references = value
                        .split_ascii_whitespace()
                        .map(StorePath::parse)
                        .collect::<Result<_, _>>()
                        .map_err(NarInfoError::Reference)?
                }
                _ => {}
            }
            seen.push(key);
        }
        if let Some(missing) = REQUIRED.iter().find(|field| !seen.contains(field)) {
            return Err(NarInfoError::Missing(missing));
        }
        let store_path = store_path.ok_or(NarInfoError::Missing("StorePath"))?;
        Ok(Self {
            store_path,
            references,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SELF: &str = "0c7c96gikmzv87i7lv3vq5s1cmfjd6zf-hello-2.12";
    const GLIBC: &str = "1c7c96gikmzv87i7lv3vq5s1cmfjd6zf-glibc-2.40";

    fn narinfo(references: &str) -> String {
        format!(
            "StorePath: /nix/store/{SELF}\nURL: nar/x.nar.xz\nCompression: xz\n\
             NarHash: sha256:abc\nNarSize: 42\nReferences: {references}\nSig: k:v\n"
        )
    }

    #[test]
    fn references_are_read_in_order() {
        let info = NarInfo::parse(narinfo(&format!("{GLIBC} {SELF}")).as_bytes()).unwrap();
        assert_eq!(info.store_path.name(), "hello-2.12");
        let names: Vec<_> = info.references.iter().map(StorePath::name).collect();
        assert_eq!(names, ["glibc-2.40", "hello-2.12"]);
    }

    #[test]
    fn empty_references_line_means_no_references() {
        let info = NarInfo::parse(narinfo("").as_bytes()).unwrap();
        assert!(info.references.is_empty());
        let without_space = narinfo("").replace("References: \n", "References:\n");
        assert!(
            NarInfo::parse(without_space.as_bytes())
                .unwrap()
                .references
                .is_empty()
        );
    }

    #[test]
    fn html_error_page_is_malformed() {
        let page = "<html><body>502 Bad Gateway</body></html>";
        assert_eq!(
            NarInfo::parse(page.as_bytes()),
            Err(NarInfoError::NotKeyValue { line: 1 })
        );
    }

    #[test]
    fn missing_required_field_is_malformed() {
        let text = narinfo("").replace("NarSize: 42\n", "");
        assert_eq!(
            NarInfo::parse(text.as_bytes()),
            Err(NarInfoError::Missing("NarSize"))
        );
    }

    #[test]
    fn garbage_reference_is_malformed() {
        let text = narinfo("not-a-store-path");
        assert!(matches!(
            NarInfo::parse(text.as_bytes()),
            Err(NarInfoError::Reference(_))
        ));
    }

    #[test]
    fn binary_body_is_malformed() {
        assert_eq!(
            NarInfo::parse(&[0xff, 0xfe, 0x00]),
            Err(NarInfoError::NotText)
        );
    }
}
