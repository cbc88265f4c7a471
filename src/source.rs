//! Package sources: where the Nix package set comes from
//! ([`PackageSource`], configured once) and what one build is given
//! ([`NixSource`], an exact revision the resolver chose for an image tag,
//! see [`crate::resolve`]).

use std::path::{Path, PathBuf};

/// The package set an image is built from (exactly one is configured).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PackageSource {
    /// `NIXERY_CHANNEL`: a nixpkgs channel (`nixos-unstable`) or commit;
    /// Nix fetches the GitHub archive of that ref.
    Channel(String),
    /// `NIXERY_PKGS_REPO`: a git repository URL; the image tag picks the
    /// ref or commit.
    Git(String),
    /// `NIXERY_PKGS_PATH`: a local directory holding a package set.
    Path(PathBuf),
    /// Nothing configured: the offline package set embedded in the binary.
    /// Resolve it with [`PackageSource::with_builtin_dir`] before rendering.
    Builtin,
}

/// Whether `s` is a full git commit id (40 lower-case hex digits).
pub fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl PackageSource {
    /// The same source with [`PackageSource::Builtin`] replaced by the
    /// directory the embedded package set was written to.
    pub fn with_builtin_dir(self, dir: &Path) -> PackageSource {
        match self {
            PackageSource::Builtin => PackageSource::Path(dir.to_path_buf()),
            other => other,
        }
    }
}

/// The package set one build uses, resolved to an exact revision (see
/// [`crate::resolve`]): what `load-pkgs.nix` is given as `srcType` and
/// `srcArgs`. Only the resolver makes these, so the Nix step builds exactly
/// what the image's identity names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NixSource {
    /// A nixpkgs commit, fetched as GitHub's archive of it.
    Nixpkgs {
        /// The commit (40 hex digits).
        commit: String,
    },
    /// A git repository checked out at `rev`, fetched from `reference`
    /// when the commit was resolved from a branch or tag.
    Git {
        /// The repository URL.
        url: String,
        /// The commit to build.
        rev: String,
        /// The full ref name (`refs/heads/main`, `HEAD`) the commit was
        /// resolved from; `None` when the image tag was the commit itself.
        reference: Option<String>,
    },
    /// A directory holding a package set (its `default.nix`).
    Path(PathBuf),
}

impl NixSource {
    /// The `srcType` argument of `load-pkgs.nix`.
    pub fn src_type(&self) -> &'static str {
        match self {
            NixSource::Nixpkgs { .. } => "nixpkgs",
            NixSource::Git { .. } => "git",
            NixSource::Path(_) => "path",
        }
    }

    /// The `srcArgs` argument of `load-pkgs.nix`: the commit; JSON
    /// `{"url", "rev"}` plus `"ref"` when known; or the directory.
    pub fn src_args(&self) -> String {
        match self {
            NixSource::Nixpkgs { commit } => commit.clone(),
            NixSource::Git {
                url,
                rev,
                reference,
            } => {
                let mut args = serde_json::Map::new();
                args.insert("url".into(), url.as_str().into());
                args.insert("rev".into(), rev.as_str().into());
                if let Some(reference) = reference {
                    args.insert("ref".into(), reference.as_str().into());
                }
                serde_json::Value::Object(args).to_string()
            }
            NixSource::Path(path) => path.to_string_lossy().into_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn commit_ids_are_exactly_40_lower_case_hex_digits() {
        assert!(is_commit(COMMIT));
        assert!(!is_commit(&COMMIT[..39]));
        assert!(!is_commit(&format!("{COMMIT}0")));
        assert!(!is_commit(&COMMIT.to_uppercase()));
        assert!(!is_commit("latest"));
        assert!(!is_commit("g123456789abcdef0123456789abcdef01234567"));
    }

    #[test]
    fn a_nixpkgs_commit_renders_as_nixpkgs_with_the_commit() {
        let source = NixSource::Nixpkgs {
            commit: COMMIT.into(),
        };
        assert_eq!(source.src_type(), "nixpkgs");
        assert_eq!(source.src_args(), COMMIT);
    }

    fn git_args(reference: Option<&str>) -> serde_json::Value {
        let source = NixSource::Git {
            url: "https://example.org/pkgs.git".into(),
            rev: COMMIT.into(),
            reference: reference.map(Into::into),
        };
        assert_eq!(source.src_type(), "git");
        serde_json::from_str(&source.src_args()).unwrap()
    }

    #[test]
    fn git_with_a_ref_names_the_ref_and_the_commit() {
        assert_eq!(
            git_args(Some("refs/heads/main")),
            serde_json::json!({"url": "https://example.org/pkgs.git", "rev": COMMIT, "ref": "refs/heads/main"})
        );
    }

    #[test]
    fn git_commit_tag_is_a_rev_only() {
        assert_eq!(
            git_args(None),
            serde_json::json!({"url": "https://example.org/pkgs.git", "rev": COMMIT})
        );
    }

    #[test]
    fn git_args_escape_the_url_as_json() {
        let source = NixSource::Git {
            url: "file:///tmp/a \"b\"".into(),
            rev: COMMIT.into(),
            reference: Some("x\"y".into()),
        };
        let args: serde_json::Value = serde_json::from_str(&source.src_args()).unwrap();
        assert_eq!(args["url"], "file:///tmp/a \"b\"");
        assert_eq!(args["ref"], "x\"y");
    }

    #[test]
    fn path_renders_the_directory() {
        let source = NixSource::Path("/srv/pkgs".into());
        assert_eq!(source.src_type(), "path");
        assert_eq!(source.src_args(), "/srv/pkgs");
    }

    #[test]
    fn builtin_resolves_to_its_directory() {
        let resolved =
            PackageSource::Builtin.with_builtin_dir(Path::new("/run/nixery/offline-pkgs"));
        assert_eq!(
            resolved,
            PackageSource::Path("/run/nixery/offline-pkgs".into())
        );
        let git = PackageSource::Git("u".into());
        assert_eq!(git.clone().with_builtin_dir(Path::new("/x")), git);
    }
}
