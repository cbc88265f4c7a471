//! Platforms an image is built for (`NIXERY_PLATFORMS`): an operating
//! system and a CPU architecture, written `os/arch` as in OCI image
//! indexes and `docker pull --platform`.
//!
//! Only Linux is supported, on the two architectures the registry has a
//! Nix system for ([`Arch`]). The configured list keeps its order: the
//! first platform is the one a client that accepts only single manifests
//! gets, and the order of the entries of an image index.

use std::fmt;

pub use crate::image::Arch;

/// One platform: Linux on `arch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Platform {
    /// The CPU architecture.
    pub arch: Arch,
}

/// The operating system of every platform.
pub const OS: &str = "linux";

impl Platform {
    /// Linux on `arch`.
    pub const fn linux(arch: Arch) -> Platform {
        Platform { arch }
    }

    /// The platform of the machine the server runs on (`linux/arm64` on
    /// 64-bit ARM, else `linux/amd64`, the only other one there is).
    pub fn host() -> Platform {
        if cfg!(target_arch = "aarch64") {
            Platform::linux(Arch::Arm64)
        } else {
            Platform::linux(Arch::Amd64)
        }
    }

    /// The `os` of an index entry's platform.
    pub fn os(self) -> &'static str {
        OS
    }

    /// The `architecture` of an index entry's platform (`amd64`).
    pub fn architecture(self) -> &'static str {
        self.arch.image_arch()
    }

    /// The `variant` of an index entry's platform: `v8` for arm64 (what
    /// Docker and containerd normalise `linux/arm64` to), none for amd64.
    pub fn variant(self) -> Option<&'static str> {
        match self.arch {
            Arch::Arm64 => Some("v8"),
            Arch::Amd64 => None,
        }
    }

    /// Parse `os/arch` or `os/arch/variant`: `linux/amd64`, `linux/arm64`
    /// (also `linux/arm64/v8` and `linux/aarch64`, `linux/x86_64`).
    pub fn parse(text: &str) -> Result<Platform, PlatformError> {
        let unknown = || PlatformError(text.to_owned());
        let mut parts = text.trim().split('/');
        let (os, arch, variant) = (parts.next(), parts.next(), parts.next());
        if os != Some(OS) || parts.next().is_some() {
            return Err(unknown());
        }
        let arch = match (arch, variant) {
            (Some("amd64" | "x86_64"), None) => Arch::Amd64,
            (Some("arm64" | "aarch64"), None | Some("v8")) => Arch::Arm64,
            _ => return Err(unknown()),
        };
        Ok(Platform::linux(arch))
    }

    /// Parse a comma-separated list (`linux/amd64,linux/arm64`): at least
    /// one platform, each at most once, in the order given.
    pub fn parse_list(text: &str) -> Result<Vec<Platform>, PlatformError> {
        let mut platforms: Vec<Platform> = Vec::new();
        for item in text.split(',') {
            let platform = Platform::parse(item)?;
            if platforms.contains(&platform) {
                return Err(PlatformError(format!("{} twice", item.trim())));
            }
            platforms.push(platform);
        }
        Ok(platforms)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os(), self.architecture())
    }
}

/// A platform that is not `linux/amd64` or `linux/arm64`, or a repeated one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported platform {0:?}")]
pub struct PlatformError(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_platforms_parse_in_the_order_given() {
        assert_eq!(
            Platform::parse_list("linux/arm64, linux/amd64").unwrap(),
            [Platform::linux(Arch::Arm64), Platform::linux(Arch::Amd64)]
        );
        assert_eq!(
            Platform::parse("linux/arm64/v8").unwrap(),
            Platform::linux(Arch::Arm64)
        );
    }

    #[test]
    fn other_systems_and_repeats_are_rejected() {
        for bad in [
            "",
            "linux",
            "windows/amd64",
            "linux/riscv64",
            "linux/amd64/v2",
            "linux/arm64/v7",
            "linux/arm64/v8/x",
            "linux/amd64,",
            "linux/amd64,linux/x86_64",
        ] {
            assert!(Platform::parse_list(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn index_fields_follow_the_oci_platform_names() {
        let arm = Platform::linux(Arch::Arm64);
        assert_eq!(
            (arm.os(), arm.architecture(), arm.variant()),
            ("linux", "arm64", Some("v8"))
        );
        let amd = Platform::linux(Arch::Amd64);
        assert_eq!((amd.architecture(), amd.variant()), ("amd64", None));
        assert_eq!(amd.to_string(), "linux/amd64");
    }
}
