//! The identity of one exact image: which revision of the package set,
//! which target system, which packages, and the [`Recipe`] that turns them
//! into a manifest (the layering and the project's own Nix files).
//!
//! Two requests get the same image exactly when their [`ImageIdentity`]s are
//! equal, so the identity's [`key`](ImageIdentity::key) is the only key used
//! to join builds in flight, to look up and fill every manifest cache tier
//! and to name the stored manifest (`manifests/<key>`).
//!
//! The key is the hex SHA-256 of an unambiguous encoding: a version tag,
//! then every field as its byte length followed by its bytes, and the
//! package list as its length followed by each name encoded the same way,
//! then the recipe's fields.
//! Unlike upstream's key (the names concatenated without a separator, no
//! system), no two distinct inputs share an encoding: `jq/zsh` and `jqzsh`,
//! or `hello` for amd64 and arm64, are different images.

use sha2::{Digest, Sha256};

/// Version of the encoding; changing the encoding must change this (v3:
/// the recipe names whether unfree packages are allowed; v4: the recipe
/// gained [`Recipe::config`], what the name decides of the config).
const ENCODING_VERSION: &[u8] = b"nixery-image-identity-v4";

/// An exact revision of the package set an image is built from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Revision {
    /// The package set embedded in the binary, by the hash of its files.
    Embedded(String),
    /// A git commit (a pinned channel, a git tag, branch or HEAD resolved
    /// to the commit it pointed at).
    Commit(String),
    /// A local directory, by the fingerprint of its tree (paths, sizes,
    /// modification times) when it was last looked at.
    Path {
        /// The directory.
        dir: String,
        /// Hex fingerprint of its tree.
        fingerprint: String,
    },
}

impl Revision {
    /// The fields of the revision: a kind tag, then its values.
    fn fields(&self) -> Vec<&[u8]> {
        match self {
            Revision::Embedded(hash) => vec![b"embedded", hash.as_bytes()],
            Revision::Commit(commit) => vec![b"commit", commit.as_bytes()],
            Revision::Path { dir, fingerprint } => {
                vec![b"path", dir.as_bytes(), fingerprint.as_bytes()]
            }
        }
    }

    /// A short human-readable form for logs (`commit 0123abcd…`).
    pub fn describe(&self) -> String {
        match self {
            Revision::Embedded(hash) => format!("embedded {}", short(hash)),
            Revision::Commit(commit) => format!("commit {}", short(commit)),
            Revision::Path { fingerprint, .. } => format!("path {}", short(fingerprint)),
        }
    }
}

fn short(s: &str) -> &str {
    s.get(..12).unwrap_or(s)
}

/// Everything besides revision, system and packages that decides a
/// manifest's bytes, or whether there is one. Without it in the key, a
/// server whose layering, Nix files or unfree policy changed would keep
/// serving manifests cached under the old ones (and instances with
/// different policies on one bucket would serve each other's).
///
/// The settings that reach the Nix step are the package source (the
/// revision), the system and packages (the image), `allowUnfree` and the
/// Nix files (here); `NIX_TIMEOUT` and the deadline decide only whether a
/// build finishes, not what it makes. Those that reach the manifest are the
/// layering (strategy, revision, budget, popularity map: here) and, for an
/// index, the platforms (in [`index_key`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Recipe {
    /// How closures are split into layers:
    /// [`crate::layers::Layering::fingerprint`].
    pub layering: String,
    /// The version of the Nix files that run the Nix step: the hash of the
    /// embedded files, or of the configured prepare-image program.
    pub nix_files: String,
    /// Whether the package set may evaluate unfree packages
    /// (`NIXERY_ALLOW_UNFREE`): with it off, an unfree image is refused,
    /// so one cached while it was on must not be served.
    pub allow_unfree: bool,
    /// What the image name decides of the config besides the packages:
    /// [`crate::image::Image::config_fingerprint`].
    pub config: String,
}

impl Recipe {
    /// [`Recipe::nix_files`] for a server that runs `prepare_image`, or the
    /// embedded Nix files when `None`: `embedded <hash of the embedded
    /// files>`, or `program <SHA-256 of the program file>` (a wrapper that
    /// names its Nix files by store path changes with them), or, when the
    /// program cannot be read, `program <path>`.
    pub fn nix_files_of(prepare_image: Option<&std::path::Path>) -> String {
        match prepare_image {
            None => format!("embedded {}", crate::nix::embedded_files_hash()),
            Some(program) => match std::fs::read(program) {
                Ok(bytes) => format!("program {}", hex::encode(Sha256::digest(bytes))),
                Err(_) => format!("program {}", program.display()),
            },
        }
    }
}

/// This exact image: revision, Nix system, package list and recipe.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageIdentity {
    key: String,
}

impl ImageIdentity {
    /// The identity of `packages` (as given: callers pass the sorted,
    /// de-duplicated list of [`crate::image::Image`]) built for `system`
    /// from `revision` with `recipe`.
    pub fn new(
        revision: &Revision,
        system: &str,
        packages: &[String],
        recipe: &Recipe,
    ) -> ImageIdentity {
        let key = hex::encode(Sha256::digest(encode(revision, system, packages, recipe)));
        ImageIdentity { key }
    }

    /// The key: 64 lower-case hex digits, valid as a storage key name.
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// Version of the index key's encoding and of the index documents it keys;
/// a change of either must change this (v2: an OCI index lists the OCI
/// manifests, no longer the Docker ones, so tiers holding a v1 index miss).
const INDEX_ENCODING_VERSION: &[u8] = b"nixery-image-index-v2";

/// The key of an image index: its media type and, in order, each
/// platform with the identity of the image built for it. 64 lower-case hex
/// digits (the SHA-256 of an encoding as unambiguous as [`ImageIdentity`]'s),
/// so it keys every manifest tier like an image identity, and can never
/// equal one (the encodings start with different version tags).
pub fn index_key(media_type: &str, entries: &[(String, &ImageIdentity)]) -> String {
    let mut out = Vec::with_capacity(64 + entries.len() * 96);
    put(&mut out, INDEX_ENCODING_VERSION);
    put(&mut out, media_type.as_bytes());
    put_len(&mut out, entries.len());
    for (platform, identity) in entries {
        put(&mut out, platform.as_bytes());
        put(&mut out, identity.key.as_bytes());
    }
    hex::encode(Sha256::digest(out))
}

/// The unambiguous byte encoding the key is the hash of.
fn encode(revision: &Revision, system: &str, packages: &[String], recipe: &Recipe) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + packages.iter().map(|p| p.len() + 8).sum::<usize>());
    put(&mut out, ENCODING_VERSION);
    let fields = revision.fields();
    put_len(&mut out, fields.len());
    for field in fields {
        put(&mut out, field);
    }
    put(&mut out, system.as_bytes());
    put_len(&mut out, packages.len());
    for package in packages {
        put(&mut out, package.as_bytes());
    }
    put(&mut out, recipe.layering.as_bytes());
    put(&mut out, recipe.nix_files.as_bytes());
    put(&mut out, &[u8::from(recipe.allow_unfree)]);
    put(&mut out, recipe.config.as_bytes());
    out
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&(len as u64).to_be_bytes());
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Image;
    use proptest::prelude::*;

    fn id(revision: &Revision, system: &str, packages: &[&str]) -> ImageIdentity {
        let packages: Vec<String> = packages.iter().map(|p| p.to_string()).collect();
        ImageIdentity::new(revision, system, &packages, &Recipe::default())
    }

    fn commit() -> Revision {
        Revision::Commit("0123456789abcdef0123456789abcdef01234567".into())
    }

    #[test]
    fn names_joined_differently_are_different_images() {
        let rev = commit();
        assert_ne!(
            id(&rev, "x86_64-linux", &["jq", "zsh"]),
            id(&rev, "x86_64-linux", &["jqzsh"])
        );
        assert_ne!(
            id(&rev, "x86_64-linux", &["a", ""]),
            id(&rev, "x86_64-linux", &["a"])
        );
    }

    #[test]
    fn meta_packages_and_same_named_packages_are_different_images() {
        let rev = commit();
        let identity = |name: &str| {
            let image = Image::from_name(name, "latest");
            ImageIdentity::new(
                &rev,
                image.arch.nix_system(),
                &image.packages,
                &Recipe::default(),
            )
        };
        assert_ne!(identity("shell/hello"), identity("hello/shell"));
        assert_ne!(identity("arm64/htop"), identity("htop/arm64"));
        assert_ne!(identity("arm64/hello"), identity("hello"));
        assert_eq!(identity("git/hello"), identity("hello/git"));
    }

    #[test]
    fn key_is_64_hex_digits() {
        let key = id(&commit(), "x86_64-linux", &["hello"]).key().to_string();
        assert_eq!(key.len(), 64);
        assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(crate::storage::StorageKey::manifest(&key).is_ok());
    }

    /// The recipe a server with `strategy` and otherwise default settings
    /// uses.
    fn recipe_with(strategy: crate::layers::Strategy) -> Recipe {
        let layering = crate::layers::Layering {
            strategy,
            popularity: crate::layers::Popularity::default(),
            budget: crate::layers::DEFAULT_BUDGET,
        };
        Recipe {
            layering: layering.fingerprint(),
            nix_files: crate::nix::embedded_files_hash(),
            allow_unfree: false,
            config: String::new(),
        }
    }

    #[test]
    fn cache_key_changes_when_the_layering_strategy_changes() {
        let packages = vec![
            "cacert".to_owned(),
            "hello".to_owned(),
            "iana-etc".to_owned(),
        ];
        let key = |recipe: &Recipe| {
            ImageIdentity::new(&commit(), "x86_64-linux", &packages, recipe)
                .key()
                .to_owned()
        };
        let keys: std::collections::HashSet<String> = crate::layers::Strategy::ALL
            .into_iter()
            .map(|strategy| key(&recipe_with(strategy)))
            .collect();
        assert_eq!(keys.len(), crate::layers::Strategy::ALL.len());
        let default = recipe_with(crate::layers::Strategy::DEFAULT);
        assert_eq!(key(&default), key(&default.clone()));
    }

    #[test]
    fn cache_key_changes_with_the_budget_the_map_and_the_nix_files() {
        let packages = vec!["hello".to_owned()];
        let key = |layering: &crate::layers::Layering, nix_files: &str| {
            let recipe = Recipe {
                layering: layering.fingerprint(),
                nix_files: nix_files.to_owned(),
                allow_unfree: false,
                config: String::new(),
            };
            ImageIdentity::new(&commit(), "x86_64-linux", &packages, &recipe)
        };
        let base = crate::layers::Layering {
            strategy: crate::layers::Strategy::Popularity,
            popularity: crate::layers::Popularity::default(),
            budget: crate::layers::DEFAULT_BUDGET,
        };
        let smaller = crate::layers::Layering {
            budget: 12,
            ..base.clone()
        };
        let mapped = crate::layers::Layering {
            popularity: [("glibc-2.40-66".to_owned(), 300)].into_iter().collect(),
            ..base.clone()
        };
        assert_ne!(key(&base, "a"), key(&smaller, "a"));
        assert_ne!(key(&base, "a"), key(&mapped, "a"));
        assert_ne!(key(&base, "a"), key(&base, "b"));
        // A map the strategy does not read changes nothing.
        let unread = |layering: &crate::layers::Layering| crate::layers::Layering {
            strategy: crate::layers::Strategy::SizeRank,
            ..layering.clone()
        };
        assert_eq!(key(&unread(&base), "a"), key(&unread(&mapped), "a"));
    }

    #[test]
    fn index_keys_depend_on_flavour_platforms_and_each_identity() {
        let amd = id(&commit(), "x86_64-linux", &["hello"]);
        let arm = id(&commit(), "aarch64-linux", &["hello"]);
        let other = id(&commit(), "aarch64-linux", &["git"]);
        let key = |media: &str, entries: &[(&str, &ImageIdentity)]| {
            let entries: Vec<_> = entries.iter().map(|(p, i)| (p.to_string(), *i)).collect();
            index_key(media, &entries)
        };
        let base = key("oci", &[("linux/amd64", &amd), ("linux/arm64", &arm)]);
        assert_eq!(base.len(), 64);
        assert_eq!(
            base,
            key("oci", &[("linux/amd64", &amd), ("linux/arm64", &arm)])
        );
        for different in [
            key("docker", &[("linux/amd64", &amd), ("linux/arm64", &arm)]),
            key("oci", &[("linux/arm64", &arm), ("linux/amd64", &amd)]),
            key("oci", &[("linux/amd64", &amd), ("linux/arm64", &other)]),
            key("oci", &[("linux/amd64", &amd)]),
        ] {
            assert_ne!(base, different);
        }
        assert_ne!(key("oci", &[]), amd.key());
    }

    fn revision() -> impl Strategy<Value = Revision> {
        prop_oneof![
            "[0-9a-f]{0,8}".prop_map(Revision::Embedded),
            "[0-9a-f]{0,8}".prop_map(Revision::Commit),
            ("[a-c/]{0,4}", "[0-9a-f]{0,4}")
                .prop_map(|(dir, fingerprint)| Revision::Path { dir, fingerprint }),
        ]
    }

    /// Small alphabets so that near-collisions (shared prefixes, empty
    /// names, names that are concatenations of others) are common.
    fn input() -> impl Strategy<Value = (Revision, String, Vec<String>, Recipe)> {
        (
            revision(),
            prop_oneof![Just("x86_64-linux".to_string()), "[ab]{0,2}"],
            proptest::collection::vec("[ab/]{0,3}", 0..4),
            ("[ab]{0,2}", "[ab]{0,2}", any::<bool>(), "[ab]{0,2}").prop_map(
                |(layering, nix_files, allow_unfree, config)| Recipe {
                    layering,
                    nix_files,
                    allow_unfree,
                    config,
                },
            ),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn distinct_inputs_never_share_a_key(a in input(), b in input()) {
            let key_a = ImageIdentity::new(&a.0, &a.1, &a.2, &a.3);
            let key_b = ImageIdentity::new(&b.0, &b.1, &b.2, &b.3);
            prop_assert_eq!(a == b, key_a == key_b);
            prop_assert_eq!(
                a == b,
                encode(&a.0, &a.1, &a.2, &a.3) == encode(&b.0, &b.1, &b.2, &b.3)
            );
        }

        #[test]
        fn changing_one_component_changes_the_key(
            (rev, system, packages, recipe) in input(),
            other_rev in revision(),
            extra in "[ab]{0,3}",
        ) {
            let base = ImageIdentity::new(&rev, &system, &packages, &recipe);
            if other_rev != rev {
                prop_assert_ne!(&base, &ImageIdentity::new(&other_rev, &system, &packages, &recipe));
            }
            let other_system = format!("{system}{extra}x");
            prop_assert_ne!(&base, &ImageIdentity::new(&rev, &other_system, &packages, &recipe));
            let mut more = packages.clone();
            more.push(extra.clone());
            prop_assert_ne!(&base, &ImageIdentity::new(&rev, &system, &more, &recipe));
            let other_recipe = Recipe {
                layering: format!("{}{extra}x", recipe.layering),
                ..recipe.clone()
            };
            prop_assert_ne!(&base, &ImageIdentity::new(&rev, &system, &packages, &other_recipe));
            let other_policy = Recipe {
                allow_unfree: !recipe.allow_unfree,
                ..recipe.clone()
            };
            prop_assert_ne!(&base, &ImageIdentity::new(&rev, &system, &packages, &other_policy));
            let other_config = Recipe {
                config: format!("{}{extra}x", recipe.config),
                ..recipe.clone()
            };
            prop_assert_ne!(&base, &ImageIdentity::new(&rev, &system, &packages, &other_config));
            if let Some((last, rest)) = packages.split_last() {
                // Moving bytes between neighbouring names is another image.
                let mut joined = rest.to_vec();
                if let Some(prev) = joined.last_mut() {
                    prev.push_str(last);
                    prop_assert_ne!(&base, &ImageIdentity::new(&rev, &system, &joined, &recipe));
                }
            }
        }
    }
}
