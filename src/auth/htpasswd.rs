//! The users of an htpasswd file: `name:hash` lines with bcrypt hashes as
//! `htpasswd -B` writes them (`$2y$`, also `$2a$` and `$2b$`), the format
//! CNCF distribution and zot read.
//!
//! The format is one `split_once(':')` per line, so it is parsed here; the
//! hashes are checked by the `bcrypt` crate. Other hash kinds (MD5-crypt,
//! SHA-1, crypt, plain text) are refused when the file is loaded, naming
//! the line but never its content. A password is checked against a hash
//! even for an unknown user (a hash of the same cost made at load time),
//! so the time a check takes does not tell which users exist.

use std::{collections::HashMap, path::Path};

/// Why an htpasswd file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
    /// The file could not be read.
    #[error("cannot read the htpasswd file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A line is not `name:bcrypt-hash`.
    #[error("htpasswd file {path}, line {line}: {reason}")]
    Line {
        path: String,
        line: usize,
        reason: &'static str,
    },
    /// The file names no user.
    #[error("the htpasswd file {path} names no user")]
    Empty { path: String },
}

/// Bcrypt cost of the hash checked for unknown users when the file names
/// no cost (never: every entry has one) — the cost `htpasswd -B` uses.
const DEFAULT_COST: u32 = 5;

/// The users of one htpasswd file, as loaded.
pub struct Users {
    hashes: HashMap<String, String>,
    /// A hash of a random password, checked for unknown users.
    decoy: String,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users")
            .field("count", &self.hashes.len())
            .finish_non_exhaustive()
    }
}

impl Users {
    /// Read and parse the file at `path`.
    pub fn load(path: &Path) -> Result<Users, HtpasswdError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| HtpasswdError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text).map_err(|error| match error {
            LineError::Line(line, reason) => HtpasswdError::Line {
                path: shown,
                line,
                reason,
            },
            LineError::Empty => HtpasswdError::Empty { path: shown },
        })
    }

    fn parse(text: &str) -> Result<Users, LineError> {
        let mut hashes = HashMap::new();
        let mut cost = None;
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, hash) = line
                .split_once(':')
                .ok_or(LineError::Line(number, "expected name:hash"))?;
            if name.is_empty() {
                return Err(LineError::Line(number, "the user name is empty"));
            }
            let parts = hash
                .parse::<bcrypt::HashParts>()
                .ok()
                .filter(|_| ["$2y$", "$2a$", "$2b$"].iter().any(|p| hash.starts_with(p)))
                .ok_or(LineError::Line(
                    number,
                    "not a bcrypt hash: only bcrypt entries (htpasswd -B) are supported",
                ))?;
            cost = cost.max(Some(parts.get_cost()));
            if hashes.insert(name.to_owned(), hash.to_owned()).is_some() {
                return Err(LineError::Line(number, "the user is named twice"));
            }
        }
        if hashes.is_empty() {
            return Err(LineError::Empty);
        }
        let mut random = [0u8; 18];
        // A failing system RNG leaves the decoy's password zeros: it still
        // costs the same to check, which is all it is for.
        let _ = aws_lc_rs::rand::fill(&mut random);
        let decoy = bcrypt::hash(random, cost.unwrap_or(DEFAULT_COST))
            .map_err(|_| LineError::Line(0, "bcrypt cost out of range"))?;
        Ok(Users { hashes, decoy })
    }

    /// How many users the file names.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether the file names no user (never, once loaded).
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Whether `password` is `name`'s. Slow on purpose (bcrypt): call it
    /// off the async workers. Takes as long for an unknown name.
    pub fn verify(&self, name: &str, password: &[u8]) -> bool {
        match self.hashes.get(name) {
            Some(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            None => {
                let _ = bcrypt::verify(password, &self.decoy);
                false
            }
        }
    }
}

enum LineError {
    Line(usize, &'static str),
    Empty,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, password: &str) -> String {
        format!("{name}:{}\n", bcrypt::hash(password, 4).unwrap())
    }

    #[test]
    fn bcrypt_entries_verify_their_password_only() {
        let text = format!(
            "# users\n\n{}{}",
            entry("alice", "wonder"),
            entry("bob", "x")
        );
        let users = Users::parse(&text).ok().unwrap();
        assert_eq!(users.len(), 2);
        assert!(users.verify("alice", b"wonder"));
        assert!(!users.verify("alice", b"wonder2"));
        assert!(!users.verify("bob", b"wonder"));
        assert!(!users.verify("carol", b"wonder"));
    }

    #[test]
    fn non_bcrypt_entries_are_refused_naming_the_line_not_its_content() {
        for (text, reason) in [
            ("alice:$apr1$abc$def\n", "not a bcrypt hash"),
            (
                "alice:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=\n",
                "not a bcrypt hash",
            ),
            ("alice:plaintext-secret\n", "not a bcrypt hash"),
            ("alice\n", "expected name:hash"),
            (":$2y$05$abcdefghijklmnopqrstuu\n", "the user name is empty"),
        ] {
            let path = std::env::temp_dir().join(format!("htpasswd-{}", std::process::id()));
            std::fs::write(&path, format!("# comment\n{text}")).unwrap();
            let error = Users::load(&path).unwrap_err().to_string();
            std::fs::remove_file(&path).unwrap();
            assert!(
                error.contains("line 2") && error.contains(reason),
                "{error}"
            );
            assert!(
                !error.contains("plaintext-secret") && !error.contains("qUqP5"),
                "{error}"
            );
        }
    }

    #[test]
    fn a_user_named_twice_or_an_empty_file_is_refused() {
        let twice = format!("{}{}", entry("alice", "a"), entry("alice", "b"));
        assert!(matches!(Users::parse(&twice), Err(LineError::Line(2, _))));
        assert!(matches!(Users::parse("# nobody\n"), Err(LineError::Empty)));
    }
}
