//! Credentials already verified, so that a warm pull costs a keyed hash
//! and a map lookup instead of a bcrypt check (tens of milliseconds on
//! purpose) or a signature check.
//!
//! An entry is keyed by HMAC-SHA-256, under a random key made at start-up
//! and never written anywhere, of the credential (the kind, then the
//! `Authorization` value's credentials); the secret itself is never
//! stored. Wrong credentials are never remembered. Entries of passwords
//! are dropped when the htpasswd file is reloaded; entries of tokens keep
//! their token's expiry and are checked against it on every hit.

use std::sync::Arc;

use aws_lc_rs::hmac;
use quick_cache::sync::Cache;

/// Credentials remembered at most (each entry is well under 1 KiB).
pub const CAPACITY: usize = 4096;

/// What a remembered credential proved.
#[derive(Clone, Debug)]
pub enum Verified {
    /// The password of this user.
    Password(Arc<str>),
    /// A valid token: its user (`None`: anonymous), the repositories it
    /// may pull, and its expiry (Unix seconds).
    Token {
        user: Option<Arc<str>>,
        repositories: Arc<[String]>,
        expires: u64,
    },
}

/// The kind of a credential, part of its key.
#[derive(Clone, Copy)]
pub enum Kind {
    /// `Basic` credentials (user and password).
    Basic = 1,
    /// A `Bearer` token.
    Bearer = 2,
}

/// The cache of verified credentials.
pub struct VerifiedCredentials {
    key: hmac::Key,
    entries: Cache<[u8; 32], Verified>,
}

impl VerifiedCredentials {
    /// An empty cache with a fresh random key; fails only without system
    /// randomness (then a fixed key would make its keys a plain hash of
    /// the secrets).
    pub fn new() -> Result<Self, aws_lc_rs::error::Unspecified> {
        let mut secret = [0u8; 32];
        aws_lc_rs::rand::fill(&mut secret)?;
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            entries: Cache::new(CAPACITY),
        })
    }

    /// The key of `credential` of `kind`.
    pub fn key(&self, kind: Kind, credential: &[u8]) -> [u8; 32] {
        let mut context = hmac::Context::with_key(&self.key);
        context.update(&[kind as u8]);
        context.update(credential);
        let mut key = [0u8; 32];
        key.copy_from_slice(context.sign().as_ref());
        key
    }

    /// What the credential under `key` proved, if it was verified.
    pub fn get(&self, key: &[u8; 32]) -> Option<Verified> {
        self.entries.get(key)
    }

    /// Remember that the credential under `key` proved `verified`.
    pub fn insert(&self, key: [u8; 32], verified: Verified) {
        self.entries.insert(key, verified);
    }

    /// Forget the credential under `key` (an expired token).
    pub fn remove(&self, key: &[u8; 32]) {
        self.entries.remove(key);
    }

    /// Forget every password (the htpasswd file changed).
    pub fn forget_passwords(&self) {
        self.entries
            .retain(|_, verified| !matches!(verified, Verified::Password(_)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_kind_credential_and_the_process_key_and_hold_no_secret() {
        let cache = VerifiedCredentials::new().unwrap();
        let basic = cache.key(Kind::Basic, b"alice:wonderland");
        assert_eq!(basic, cache.key(Kind::Basic, b"alice:wonderland"));
        assert_ne!(basic, cache.key(Kind::Bearer, b"alice:wonderland"));
        assert_ne!(basic, cache.key(Kind::Basic, b"alice:wonderlanD"));
        assert_ne!(
            basic,
            VerifiedCredentials::new()
                .unwrap()
                .key(Kind::Basic, b"alice:wonderland")
        );
        assert!(!basic.windows(4).any(|w| w == b"wond"));
    }

    #[test]
    fn a_reload_forgets_passwords_but_not_tokens() {
        let cache = VerifiedCredentials::new().unwrap();
        let password = cache.key(Kind::Basic, b"a:b");
        let token = cache.key(Kind::Bearer, b"t");
        cache.insert(password, Verified::Password("a".into()));
        cache.insert(
            token,
            Verified::Token {
                user: None,
                repositories: Arc::from(vec![]),
                expires: u64::MAX,
            },
        );
        cache.forget_passwords();
        assert!(cache.get(&password).is_none());
        assert!(cache.get(&token).is_some());
    }
}
