//! Splitting a store path's name into a package name and a version the
//! way Nix does (`builtins.parseDrvName`): the version starts after the
//! first `-` that is followed by a character other than an ASCII letter.
//! `glibc-2.40-66` is `glibc` version `2.40-66`, `bash-interactive-5.2p26`
//! is `bash-interactive` version `5.2p26`, `nixery-symlink-layer` has no
//! version.

/// A store path's name split into package name and version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrvName<'a> {
    /// Everything before the version (the whole name if there is none).
    pub name: &'a str,
    /// The version, empty when the name has none.
    pub version: &'a str,
}

/// Split `name` (a store path's name, without `/nix/store/<hash>-`).
pub fn parse_drv_name(name: &str) -> DrvName<'_> {
    let bytes = name.as_bytes();
    let split = bytes
        .windows(2)
        .position(|pair| pair[0] == b'-' && !pair[1].is_ascii_alphabetic());
    match split {
        Some(dash) => DrvName {
            name: &name[..dash],
            version: &name[dash + 1..],
        },
        None => DrvName { name, version: "" },
    }
}

/// The hash part and the name of a store path `/nix/store/<hash>-<name>`
/// (any store directory); `None` when the last component has no `-`.
pub fn split_store_path(path: &str) -> Option<(&str, &str)> {
    let base = path.rsplit('/').next()?;
    base.split_once('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(name: &str) -> (&str, &str) {
        let parsed = parse_drv_name(name);
        (parsed.name, parsed.version)
    }

    #[test]
    fn names_split_as_builtins_parse_drv_name_splits_them() {
        // Expected values are what `builtins.parseDrvName` answers.
        assert_eq!(split("glibc-2.40-66"), ("glibc", "2.40-66"));
        assert_eq!(
            split("bash-interactive-5.2p26"),
            ("bash-interactive", "5.2p26")
        );
        assert_eq!(split("nix-0.12pre12876"), ("nix", "0.12pre12876"));
        assert_eq!(split("iana-etc-20240318"), ("iana-etc", "20240318"));
        assert_eq!(split("nss-cacert-3.104"), ("nss-cacert", "3.104"));
        assert_eq!(split("git-2.46.0-doc"), ("git", "2.46.0-doc"));
        assert_eq!(split("nixery-symlink-layer"), ("nixery-symlink-layer", ""));
        assert_eq!(split("hello"), ("hello", ""));
        assert_eq!(split("a--b"), ("a", "-b"));
        assert_eq!(split("trailing-"), ("trailing-", ""));
        assert_eq!(
            split("python3.12-requests-2.32.3"),
            ("python3.12-requests", "2.32.3")
        );
        assert_eq!(split("x-_y"), ("x", "_y"));
        assert_eq!(split(""), ("", ""));
    }

    #[test]
    fn store_paths_split_into_hash_and_name() {
        assert_eq!(
            split_store_path("/nix/store/9vq1ixqa-glibc-2.40-66"),
            Some(("9vq1ixqa", "glibc-2.40-66"))
        );
        assert_eq!(split_store_path("/nix/store/nodash"), None);
    }
}
