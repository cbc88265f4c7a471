//! The one SHA-256 digest type of the registry.
//!
//! Every blob, layer record, manifest, storage key and cache entry names
//! content by a [`Digest`]. Text is parsed into one at the edges (request
//! paths, records read from storage, the Nix step's output) and nowhere
//! else checks "64 hex digits": a `Digest` in hand is always valid.
//!
//! It prints as `sha256:<hex>` ([`fmt::Display`], serde) and gives the bare
//! 64 lowercase hex digits with [`Digest::hex`] (storage key names, the
//! upstream-compatible records' older format, Nix's `tarHash`).

use std::{fmt, str::FromStr};

use sha2::{Digest as _, Sha256};

/// The algorithm prefix of a printed digest.
const PREFIX: &str = "sha256:";

/// A SHA-256 digest. Ordered like its hex form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

/// Why text is not a SHA-256 digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// No `<algorithm>:` prefix.
    #[error("expected sha256:<hex>")]
    NoAlgorithm,
    /// An algorithm other than SHA-256.
    #[error("only sha256 digests are supported")]
    Algorithm,
    /// The hex part is not 64 lowercase hex digits.
    #[error("a sha256 digest has 64 lowercase hex digits")]
    Hex,
}

impl DigestError {
    /// The message, for errors that carry a static reason.
    pub fn reason(self) -> &'static str {
        match self {
            DigestError::NoAlgorithm => "expected sha256:<hex>",
            DigestError::Algorithm => "only sha256 digests are supported",
            DigestError::Hex => "a sha256 digest has 64 lowercase hex digits",
        }
    }
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// The digest a finished hasher computed.
    pub fn from_hasher(hasher: Sha256) -> Self {
        Self(hasher.finalize().into())
    }

    /// Parse `sha256:<64 lowercase hex>`. Other algorithms are rejected:
    /// everything in this registry is addressed by SHA-256.
    pub fn parse(text: &str) -> Result<Self, DigestError> {
        let Some((algorithm, hex)) = text.split_once(':') else {
            return Err(DigestError::NoAlgorithm);
        };
        if algorithm != "sha256" {
            return Err(DigestError::Algorithm);
        }
        Self::parse_hex(hex)
    }

    /// Parse bare 64 lowercase hex digits.
    pub fn parse_hex(hex: &str) -> Result<Self, DigestError> {
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(DigestError::Hex);
        }
        let mut bytes = [0; 32];
        hex::decode_to_slice(hex, &mut bytes).map_err(|_| DigestError::Hex)?;
        Ok(Self(bytes))
    }

    /// Parse `sha256:<hex>` or bare `<hex>` (formats that wrote either).
    pub fn parse_prefixed_or_hex(text: &str) -> Result<Self, DigestError> {
        match text.strip_prefix(PREFIX) {
            Some(hex) => Self::parse_hex(hex),
            None => Self::parse_hex(text),
        }
    }

    /// The 64 lowercase hex digits, without the algorithm.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(text: &str) -> Result<Self, DigestError> {
        Self::parse(text)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Serde form of a digest as bare hex (`#[serde(with = "crate::digest::bare_hex")]`),
/// as Nix's `tarHash` holds it.
pub mod bare_hex {
    use super::Digest;

    /// Write the 64 hex digits.
    pub fn serialize<S: serde::Serializer>(
        digest: &Digest,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&digest.hex())
    }

    /// Read 64 lowercase hex digits.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Digest, D::Error> {
        let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(deserializer)?;
        Digest::parse_hex(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn prints_with_the_algorithm_and_gives_bare_hex() {
        let d = Digest::parse(&format!("sha256:{HEX}")).unwrap();
        assert_eq!(d.hex(), HEX);
        assert_eq!(d.to_string(), format!("sha256:{HEX}"));
        assert_eq!(Digest::parse_hex(HEX).unwrap(), d);
        assert_eq!(Digest::parse_prefixed_or_hex(HEX).unwrap(), d);
    }

    #[test]
    fn only_lowercase_sha256_of_64_digits_parses() {
        for bad in [
            HEX.to_owned(),
            format!("sha256:{}", HEX.to_uppercase()),
            format!("sha512:{HEX}"),
            format!("sha256:{}", &HEX[1..]),
            format!("sha256:{HEX}0"),
            format!("sha256:../{}", &HEX[3..]),
            "sha256:".to_owned(),
        ] {
            assert!(Digest::parse(&bad).is_err(), "{bad}");
        }
        assert_eq!(Digest::parse(HEX), Err(DigestError::NoAlgorithm));
        assert_eq!(
            Digest::parse_hex(&HEX.to_uppercase()),
            Err(DigestError::Hex)
        );
        assert!(Digest::parse_prefixed_or_hex(&format!("sha512:{HEX}")).is_err());
    }

    #[test]
    fn digest_of_bytes_matches_sha256() {
        assert_eq!(
            Digest::of(b"").hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut hasher = Sha256::new();
        hasher.update(b"a");
        hasher.update(b"b");
        assert_eq!(Digest::from_hasher(hasher), Digest::of(b"ab"));
    }

    #[test]
    fn order_is_the_order_of_the_hex_form() {
        let a = Digest::parse_hex(&"0f".repeat(32)).unwrap();
        let b = Digest::parse_hex(&"a0".repeat(32)).unwrap();
        assert!(a < b && a.hex() < b.hex());
    }

    #[test]
    fn serde_uses_the_printed_form_or_bare_hex() {
        let d = Digest::parse_hex(HEX).unwrap();
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"sha256:{HEX}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Digest>(&format!("\"{HEX}\"")).is_err());

        #[derive(serde::Serialize, serde::Deserialize)]
        struct Bare {
            #[serde(with = "bare_hex")]
            d: Digest,
        }
        let json = serde_json::to_string(&Bare { d }).unwrap();
        assert_eq!(json, format!(r#"{{"d":"{HEX}"}}"#));
        assert_eq!(serde_json::from_str::<Bare>(&json).unwrap().d, d);
        assert!(serde_json::from_str::<Bare>(r#"{"d":"zz"}"#).is_err());
    }
}
