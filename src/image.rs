//! Image names: which packages an image holds and for which architecture.
//!
//! The repository name is the content specification (`shell/git/htop`).
//! Leading *meta-packages* are expanded (`shell` adds a small interactive
//! environment, `arm64` selects the architecture); scanning stops at the
//! first other component, so `hello/shell` asks for a package literally
//! named `shell`. `cacert` and `iana-etc` are always added. Both the package
//! list and the displayed name are sorted, so `git/hello` and `hello/git`
//! are the same image.

/// Packages that the `shell` meta-package expands to.
pub const SHELL_PACKAGES: [&str; 4] = ["bashInteractive", "coreutils", "moreutils", "nano"];

/// Packages added to every image (certificates and `/etc/services`).
pub const ALWAYS_ADDED: [&str; 2] = ["cacert", "iana-etc"];

/// The package whose presence makes `bash` the image's command.
const INTERACTIVE_SHELL: &str = "bashInteractive";

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
}

impl Image {
    /// The image for repository `name` (already validated by the reference
    /// grammar) at `tag`. Empty components are ignored. Pure: no lookups.
    pub fn from_name(name: &str, tag: &str) -> Image {
        let mut components: Vec<&str> = name.split('/').filter(|c| !c.is_empty()).collect();

        let mut arch = Arch::default();
        let mut packages: Vec<String> = Vec::new();
        let mut rest = components.as_slice();
        while let Some((first, tail)) = rest.split_first() {
            match *first {
                "shell" => packages.extend(SHELL_PACKAGES.iter().map(|p| p.to_string())),
                "arm64" => arch = Arch::Arm64,
                _ => break,
            }
            rest = tail;
        }
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

    /// The image config's `Cmd`: `["bash"]` when the image has
    /// `bashInteractive`, else none.
    pub fn cmd(&self) -> Option<Vec<String>> {
        self.packages
            .iter()
            .any(|p| p == INTERACTIVE_SHELL)
            .then(|| vec!["bash".to_string()])
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
        assert_eq!(a, b);
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
        assert_eq!(image.cmd(), None);
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
            Image::from_name("shell", "latest").cmd(),
            Some(vec!["bash".to_string()])
        );
        assert_eq!(
            Image::from_name("bashInteractive/git", "latest").cmd(),
            Some(vec!["bash".to_string()])
        );
        assert_eq!(Image::from_name("git", "latest").cmd(), None);
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
    fn tag_is_kept() {
        assert_eq!(Image::from_name("hello", "v1").tag, "v1");
    }
}
