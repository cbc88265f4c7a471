//! Image names: which packages an image holds and for which architecture.
//!
//! The repository name is the content specification (`shell/git/htop`).
//! Leading *meta-packages* are expanded (`shell` adds a small interactive
//! environment, `arm64` selects the architecture, `nonroot` and
//! `user-<uid>` select the [`User`] the image runs as); scanning stops at
//! the first other component, so `hello/shell` asks for a package literally
//! named `shell`. No meta-package name is a top-level attribute of nixpkgs
//! (`tests/meta_packages.rs` checks). `cacert` and `iana-etc` are always added. Both the package
//! list and the displayed name are sorted, so `git/hello` and `hello/git`
//! are the same image.

/// Packages that the `shell` meta-package expands to.
pub const SHELL_PACKAGES: [&str; 4] = ["bashInteractive", "coreutils", "moreutils", "nano"];

/// Packages added to every image (certificates and `/etc/services`).
pub const ALWAYS_ADDED: [&str; 2] = ["cacert", "iana-etc"];

/// The uid and gid of the `nonroot` meta-package (as distroless and
/// Chainguard images use).
pub const NONROOT_UID: u32 = 65532;

/// The largest uid a `user-<uid>` meta-package accepts (the largest
/// positive 32-bit signed integer, the range every runtime takes).
pub const MAX_UID: u32 = 2_147_483_647;

/// The package whose presence makes `bash` the image's command.
const INTERACTIVE_SHELL: &str = "bashInteractive";

/// The meta-packages that are plain words (besides `user-<uid>`, see
/// [`User::from_meta_package`]).
pub const META_PACKAGES: [&str; 3] = ["shell", "arm64", "nonroot"];

/// Whether `component` is a meta-package when it leads an image name.
pub fn is_meta_package(component: &str) -> bool {
    META_PACKAGES.contains(&component) || User::from_meta_package(component).is_some()
}

/// CPU architecture of an image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Arch {
    /// x86-64 (the default).
    #[default]
    Amd64,
    /// 64-bit ARM, selected by the `arm64` meta-package.
    Arm64,
}

impl Arch {
    /// The Nix system packages are built for (`x86_64-linux`).
    pub fn nix_system(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64-linux",
            Arch::Arm64 => "aarch64-linux",
        }
    }

    /// The architecture named in the image config (`amd64`).
    pub fn image_arch(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
}

/// The non-root user an image runs as: listed in its `/etc/passwd` and
/// `/etc/group` (group id equal to the uid), with a home directory it owns,
/// and named numerically in the config's `User` (`uid:uid`), which is what
/// lets Kubernetes check `runAsNonRoot`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct User {
    /// The login name (`nonroot`, or `user` for `user-<uid>`).
    pub name: &'static str,
    /// The uid, also the gid; never 0.
    pub uid: u32,
}

impl User {
    /// The user a meta-package component names: `nonroot`, or `user-<uid>`
    /// with `uid` written in decimal without leading zeros, from 1 to
    /// [`MAX_UID`]. Anything else (`user-0`, `user-01`) is not a
    /// meta-package.
    pub fn from_meta_package(component: &str) -> Option<User> {
        if component == "nonroot" {
            return Some(User {
                name: "nonroot",
                uid: NONROOT_UID,
            });
        }
        let digits = component.strip_prefix("user-")?;
        let canonical = !digits.is_empty()
            && !digits.starts_with('0')
            && digits.bytes().all(|b| b.is_ascii_digit());
        let uid: u32 = digits.parse().ok().filter(|_| canonical)?;
        (1..=MAX_UID)
            .contains(&uid)
            .then_some(User { name: "user", uid })
    }

    /// The home directory (`/home/<name>`).
    pub fn home(&self) -> String {
        format!("/home/{}", self.name)
    }

    /// The config's `User`: `uid:gid`, numeric.
    pub fn config_user(&self) -> String {
        format!("{}:{}", self.uid, self.uid)
    }
}

/// An image requested by name: what to build and how to call it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// The name components as requested (meta-packages included), sorted
    /// and joined with `/`.
    pub name: String,
    /// The requested tag (`latest`, a git ref, a commit).
    pub tag: String,
    /// Package names to build: sorted, without duplicates, meta-packages
    /// expanded, [`ALWAYS_ADDED`] included.
    pub packages: Vec<String>,
    /// Architecture of the image.
    pub arch: Arch,
    /// The non-root user it runs as (`nonroot`, `user-<uid>`; the last
    /// one named counts), or root.
    pub user: Option<User>,
    /// The first package named after the meta-packages, as requested (not
    /// sorted): its main program is the image's command.
    pub first_package: Option<String>,
}

impl Image {
    /// The image for repository `name` (already validated by the reference
    /// grammar) at `tag`. Empty components are ignored. Pure: no lookups.
    pub fn from_name(name: &str, tag: &str) -> Image {
        let mut components: Vec<&str> = name.split('/').filter(|c| !c.is_empty()).collect();

        let mut arch = Arch::default();
        let mut user = None;
        let mut packages: Vec<String> = Vec::new();
        let mut rest = components.as_slice();
        while let Some((first, tail)) = rest.split_first() {
            match *first {
                "shell" => packages.extend(SHELL_PACKAGES.iter().map(|p| p.to_string())),
                "arm64" => arch = Arch::Arm64,
                other => match User::from_meta_package(other) {
                    Some(named) => user = Some(named),
                    None => break,
                },
            }
            rest = tail;
        }
        let first_package = rest.first().map(|p| p.to_string());
        packages.extend(rest.iter().map(|p| p.to_string()));
        packages.extend(ALWAYS_ADDED.iter().map(|p| p.to_string()));
        packages.sort();
        packages.dedup();

        components.sort_unstable();
        Image {
            name: components.join("/"),
            tag: tag.to_string(),
            packages,
            arch,
            user,
            first_package,
        }
    }

    /// The same packages for `arch`. An arm64 image's name gains the
    /// `arm64` meta-package (sorted in, as [`Image::from_name`] sorts), so
    /// that logs and the status page tell the platforms of one name
    /// apart; it is the name of the same image requested with `arm64/`.
    pub fn for_arch(&self, arch: Arch) -> Image {
        let name = if arch == Arch::Arm64 && self.arch != Arch::Arm64 {
            let mut components: Vec<&str> = self.name.split('/').collect();
            components.push("arm64");
            components.sort_unstable();
            components.join("/")
        } else {
            self.name.clone()
        };
        Image {
            name,
            arch,
            ..self.clone()
        }
    }

    /// What the name decides of the image besides its packages and
    /// architecture, for the image identity's
    /// [`crate::identity::Recipe::config`]: the user and the package whose
    /// program is the command, as one unambiguous string.
    pub fn config_fingerprint(&self) -> String {
        let user = self
            .user
            .as_ref()
            .map(|user| format!("{} {}", user.name, user.uid));
        serde_json::json!({ "user": user, "command": self.command_package() }).to_string()
    }

    /// Whether the image has `bashInteractive` (then `bash` is its command).
    fn has_shell(&self) -> bool {
        self.packages.iter().any(|p| p == INTERACTIVE_SHELL)
    }

    /// The package whose main program is the command: the first named
    /// package, unless the image has a shell.
    pub fn command_package(&self) -> Option<&str> {
        if self.has_shell() {
            None
        } else {
            self.first_package.as_deref()
        }
    }

    /// The image config's `Cmd`: `["bash"]` when the image has
    /// `bashInteractive`, else `/bin/<program>` for the main program the
    /// Nix step found in [`Image::command_package`], else none.
    pub fn cmd(&self, main_program: Option<&str>) -> Option<Vec<String>> {
        if self.has_shell() {
            Some(vec!["bash".to_string()])
        } else {
            main_program.map(|program| vec![format!("/bin/{program}")])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packages(name: &str) -> Vec<String> {
        Image::from_name(name, "latest").packages
    }

    #[test]
    fn single_package_gets_the_always_added_packages() {
        assert_eq!(packages("hello"), ["cacert", "hello", "iana-etc"]);
    }

    #[test]
    fn package_order_does_not_matter() {
        let a = Image::from_name("hello/git/htop", "latest");
        let b = Image::from_name("htop/hello/git", "latest");
        assert_eq!(a.packages, b.packages);
        assert_eq!(a.name, b.name);
        assert_eq!(a.name, "git/hello/htop");
        assert_eq!(a.packages, ["cacert", "git", "hello", "htop", "iana-etc"]);
    }

    #[test]
    fn shell_alone_is_a_valid_image() {
        let image = Image::from_name("shell", "latest");
        assert_eq!(image.name, "shell");
        assert_eq!(
            image.packages,
            [
                "bashInteractive",
                "cacert",
                "coreutils",
                "iana-etc",
                "moreutils",
                "nano"
            ]
        );
        assert_eq!(image.arch, Arch::Amd64);
    }

    #[test]
    fn shell_with_a_package_expands_the_shell() {
        let image = Image::from_name("shell/htop", "latest");
        assert_eq!(image.name, "htop/shell");
        assert_eq!(
            image.packages,
            [
                "bashInteractive",
                "cacert",
                "coreutils",
                "htop",
                "iana-etc",
                "moreutils",
                "nano"
            ]
        );
    }

    #[test]
    fn arm64_selects_the_architecture_and_is_not_a_package() {
        let image = Image::from_name("arm64/shell", "latest");
        assert_eq!(image.arch, Arch::Arm64);
        assert_eq!(image.arch.nix_system(), "aarch64-linux");
        assert_eq!(image.arch.image_arch(), "arm64");
        assert_eq!(image.name, "arm64/shell");
        assert!(!image.packages.iter().any(|p| p == "arm64"));
        assert!(image.packages.iter().any(|p| p == "nano"));
    }

    #[test]
    fn default_architecture_is_amd64() {
        let image = Image::from_name("hello", "latest");
        assert_eq!(image.arch.nix_system(), "x86_64-linux");
        assert_eq!(image.arch.image_arch(), "amd64");
    }

    #[test]
    fn meta_package_after_a_package_is_a_plain_package() {
        let image = Image::from_name("hello/shell/arm64", "latest");
        assert_eq!(image.arch, Arch::Amd64);
        assert_eq!(
            image.packages,
            ["arm64", "cacert", "hello", "iana-etc", "shell"]
        );
        assert_eq!(image.cmd(None), None);
        assert_eq!(image.command_package(), Some("hello"));
    }

    #[test]
    fn duplicates_are_removed() {
        assert_eq!(
            packages("shell/nano/cacert/nano"),
            [
                "bashInteractive",
                "cacert",
                "coreutils",
                "iana-etc",
                "moreutils",
                "nano"
            ]
        );
    }

    #[test]
    fn sorting_is_by_byte_order() {
        assert_eq!(
            packages("zlib/Zed/haskellPackages.pandoc"),
            [
                "Zed",
                "cacert",
                "haskellPackages.pandoc",
                "iana-etc",
                "zlib"
            ]
        );
    }

    #[test]
    fn bash_interactive_makes_bash_the_command() {
        assert_eq!(
            Image::from_name("shell", "latest").cmd(Some("x")),
            Some(vec!["bash".to_string()])
        );
        assert_eq!(
            Image::from_name("bashInteractive/git", "latest").cmd(Some("git")),
            Some(vec!["bash".to_string()])
        );
        assert_eq!(Image::from_name("git", "latest").cmd(None), None);
    }

    #[test]
    fn the_first_named_package_gives_the_command_unless_there_is_a_shell() {
        let image = Image::from_name("nonroot/hello/git", "latest");
        assert_eq!(image.command_package(), Some("hello"));
        assert_eq!(
            image.cmd(Some("hello")),
            Some(vec!["/bin/hello".to_string()])
        );
        assert_eq!(
            Image::from_name("git/hello", "latest").command_package(),
            Some("git")
        );
        assert_eq!(
            Image::from_name("shell/hello", "latest").command_package(),
            None
        );
        assert_eq!(Image::from_name("arm64", "latest").command_package(), None);
        // The same packages, another command: another image.
        assert_ne!(
            Image::from_name("git/hello", "latest").config_fingerprint(),
            Image::from_name("hello/git", "latest").config_fingerprint()
        );
        assert_eq!(
            Image::from_name("shell/git/hello", "latest").config_fingerprint(),
            Image::from_name("shell/hello/git", "latest").config_fingerprint()
        );
    }

    #[test]
    fn for_arch_gives_the_image_an_arm64_prefix_would() {
        let base = Image::from_name("shell/hello", "v1");
        let arm = base.for_arch(Arch::Arm64);
        let prefixed = Image::from_name("arm64/shell/hello", "v1");
        assert_eq!(arm, prefixed);
        assert_eq!(base.for_arch(Arch::Amd64), base);
        assert_eq!(prefixed.for_arch(Arch::Arm64), prefixed);
    }

    #[test]
    fn nonroot_and_user_uid_select_the_user_and_are_not_packages() {
        let image = Image::from_name("nonroot/shell", "latest");
        assert_eq!(
            image.user,
            Some(User {
                name: "nonroot",
                uid: 65532
            })
        );
        assert_eq!(image.user.as_ref().unwrap().config_user(), "65532:65532");
        assert!(!image.packages.iter().any(|p| p == "nonroot"));
        let image = Image::from_name("user-1000/arm64/hello", "latest");
        assert_eq!(image.user.as_ref().map(|u| u.uid), Some(1000));
        assert_eq!(image.arch, Arch::Arm64);
        assert_eq!(image.packages, ["cacert", "hello", "iana-etc"]);
        assert_eq!(Image::from_name("shell", "latest").user, None);
    }

    #[test]
    fn user_uid_range_is_1_to_2147483647_without_leading_zeros() {
        let uid = |c: &str| User::from_meta_package(c).map(|u| u.uid);
        assert_eq!(uid("user-1"), Some(1));
        assert_eq!(uid("user-2147483647"), Some(MAX_UID));
        for not_meta in [
            "user-0",
            "user-01000",
            "user-2147483648",
            "user-4294967296",
            "user-",
            "user-+5",
            "user-1e3",
            "user",
            "users-1",
            "Nonroot",
        ] {
            assert_eq!(uid(not_meta), None, "{not_meta}");
        }
        // Not a meta-package, so a package name (refused as not found).
        let image = Image::from_name("user-0/hello", "latest");
        assert_eq!(image.user, None);
        assert!(image.packages.iter().any(|p| p == "user-0"));
    }

    #[test]
    fn a_user_after_a_package_is_a_plain_package() {
        let image = Image::from_name("hello/nonroot", "latest");
        assert_eq!(image.user, None);
        assert!(image.packages.iter().any(|p| p == "nonroot"));
    }

    #[test]
    fn tag_is_kept() {
        assert_eq!(Image::from_name("hello", "v1").tag, "v1");
    }
}
