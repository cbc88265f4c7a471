//! A store path's NAR hash, as Nix writes it in a references graph, turned
//! into the lowercase hex an SPDX checksum holds.
//!
//! Nix writes `sha256:<52 characters of its own base32>`; newer versions
//! may write SRI (`sha256-<base64>`) or hex. Nix's base32 (alphabet
//! without `e`, `o`, `u`, `t`; least significant digit last) exists in no
//! well-kept crate of its own (only inside large Nix libraries), so its
//! decoder is the dozen lines below.

use base64::Engine as _;

/// Bytes of a SHA-256 digest.
const SHA256_LEN: usize = 32;

/// Nix's base32 alphabet.
const NIX32_ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// The lowercase hex of the SHA-256 NAR hash `nar_hash` (`sha256:<nix32>`,
/// `sha256:<hex>` or `sha256-<base64>`); `None` for any other form.
pub fn sha256_hex(nar_hash: &str) -> Option<String> {
    let bytes = if let Some(encoded) = nar_hash.strip_prefix("sha256:") {
        match encoded.len() {
            64 => hex::decode(encoded).ok()?,
            _ => nix32_decode(encoded, SHA256_LEN)?,
        }
    } else if let Some(encoded) = nar_hash.strip_prefix("sha256-") {
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?
    } else {
        return None;
    };
    (bytes.len() == SHA256_LEN).then(|| hex::encode(bytes))
}

/// Decode `text`, Nix's base32 of `len` bytes.
fn nix32_decode(text: &str, len: usize) -> Option<Vec<u8>> {
    if text.len() != (len * 8).div_ceil(5) {
        return None;
    }
    let mut bytes = vec![0u8; len];
    // The last character holds the lowest five bits.
    for (n, c) in text.bytes().rev().enumerate() {
        let digit = NIX32_ALPHABET.iter().position(|&a| a == c)? as u16;
        let (index, shift) = (n * 5 / 8, n * 5 % 8);
        let value = digit << shift;
        bytes[index] |= (value & 0xff) as u8;
        let carry = (value >> 8) as u8;
        match bytes.get_mut(index + 1) {
            Some(next) => *next |= carry,
            None if carry != 0 => return None,
            None => {}
        }
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SHA-256 of the empty string.
    const EMPTY_HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    /// `nix-hash --type sha256 --to-base32` of [`EMPTY_HEX`].
    const EMPTY_NIX32: &str = "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73";

    #[test]
    fn every_form_nix_writes_gives_the_same_hex() {
        assert_eq!(
            sha256_hex(&format!("sha256:{EMPTY_NIX32}")).as_deref(),
            Some(EMPTY_HEX)
        );
        assert_eq!(
            sha256_hex(&format!("sha256:{EMPTY_HEX}")).as_deref(),
            Some(EMPTY_HEX)
        );
        assert_eq!(
            sha256_hex("sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=").as_deref(),
            Some(EMPTY_HEX)
        );
    }

    #[test]
    fn other_forms_and_garbage_are_none() {
        for bad in [
            "",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "sha256:",
            "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c7e",
            "sha256:zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
            "sha256-notbase64!",
            "sha256-AAAA",
            EMPTY_NIX32,
        ] {
            assert_eq!(sha256_hex(bad), None, "{bad}");
        }
    }
}
