//! Package sources: where the Nix package set comes from and how that is
//! told to `prepare-image` (`srcType`, `srcArgs`) for an unresolved tag.
//! The server resolves every source to an exact revision first, see
//! [`crate::resolve`].

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

    /// The `srcType` argument of `prepare-image.nix`.
    pub fn src_type(&self) -> &'static str {
        match self {
            PackageSource::Channel(_) => "nixpkgs",
            PackageSource::Git(_) => "git",
            PackageSource::Path(_) | PackageSource::Builtin => "path",
        }
    }

    /// The `srcArgs` argument of `prepare-image.nix` for an image tagged
    /// `tag`: the channel; JSON `{"url", "rev"|"ref"}` for git (neither for
    /// `latest` or an empty tag, which means the repository's HEAD); the
    /// directory for a path. An unresolved `Builtin` renders as the empty
    /// string, which names no directory.
    pub fn src_args(&self, tag: &str) -> String {
        match self {
            PackageSource::Channel(channel) => channel.clone(),
            PackageSource::Git(url) => {
                let mut args = serde_json::Map::new();
                args.insert("url".into(), url.clone().into());
                if is_commit(tag) {
                    args.insert("rev".into(), tag.into());
                } else if !tag.is_empty() && tag != "latest" {
                    args.insert("ref".into(), tag.into());
                }
                serde_json::Value::Object(args).to_string()
            }
            PackageSource::Path(path) => path.to_string_lossy().into_owned(),
            PackageSource::Builtin => String::new(),
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
    fn channel_renders_as_nixpkgs_with_the_channel() {
        let source = PackageSource::Channel("nixos-unstable".into());
        assert_eq!(source.src_type(), "nixpkgs");
        assert_eq!(source.src_args("latest"), "nixos-unstable");
        assert_eq!(source.src_args("v1"), "nixos-unstable");
    }

    fn git_args(tag: &str) -> serde_json::Value {
        let source = PackageSource::Git("https://example.org/pkgs.git".into());
        assert_eq!(source.src_type(), "git");
        serde_json::from_str(&source.src_args(tag)).unwrap()
    }

    #[test]
    fn git_latest_or_empty_tag_uses_head() {
        let head = serde_json::json!({"url": "https://example.org/pkgs.git"});
        assert_eq!(git_args("latest"), head);
        assert_eq!(git_args(""), head);
    }

    #[test]
    fn git_commit_tag_is_a_rev() {
        assert_eq!(
            git_args(COMMIT),
            serde_json::json!({"url": "https://example.org/pkgs.git", "rev": COMMIT})
        );
    }

    #[test]
    fn git_other_tag_is_a_ref() {
        assert_eq!(
            git_args("release-24.05"),
            serde_json::json!({"url": "https://example.org/pkgs.git", "ref": "release-24.05"})
        );
    }

    #[test]
    fn git_args_escape_the_url_as_json() {
        let source = PackageSource::Git("file:///tmp/a \"b\"".into());
        let args: serde_json::Value = serde_json::from_str(&source.src_args("x\"y")).unwrap();
        assert_eq!(args["url"], "file:///tmp/a \"b\"");
        assert_eq!(args["ref"], "x\"y");
    }

    #[test]
    fn path_renders_the_directory() {
        let source = PackageSource::Path("/srv/pkgs".into());
        assert_eq!(source.src_type(), "path");
        assert_eq!(source.src_args("latest"), "/srv/pkgs");
    }

    #[test]
    fn builtin_resolves_to_its_directory() {
        assert_eq!(PackageSource::Builtin.src_type(), "path");
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
