//! Pull tokens of the Docker token flow (the distribution token
//! specification): a JWT signed with the server's own key, whose `access`
//! claim names the repositories it may pull.
//!
//! The key is a PEM private key: P-256 (signs ES256) or RSA (signs RS256).
//! The server signs and verifies its own tokens, so the public half is
//! derived from the private key (through a JWK) and never configured. A
//! token is accepted only when it is signed with the key's algorithm (the
//! `jsonwebtoken` crate refuses any other `alg` before looking at the
//! signature, so `none` and HMAC-with-the-public-key confusion fail), was
//! issued by and for this service (`iss` and `aud`), and is inside its
//! `nbf`..`exp` window (a few seconds of leeway for clocks).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode, jwk::Jwk,
};
use serde::{Deserialize, Serialize};

use crate::reference::RepositoryName;

/// Seconds of clock difference tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 5;

/// Most repositories one token request may name; more are ignored, so a
/// token stays small.
pub const MAX_SCOPES: usize = 16;

/// Why a signing key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TokenKeyError {
    /// The file could not be read.
    #[error("cannot read the token key {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file is no P-256 or RSA private key in PEM (PKCS#8 for P-256).
    #[error(
        "the token key {path} is not a PEM private key of P-256 (PKCS#8) or RSA; \
         make one with: openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256"
    )]
    Unsupported { path: String },
}

/// Why a token was refused. The message names the rule it broke, never the
/// token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT this server signed, or its claims are not valid now.
    #[error("{0}")]
    Invalid(&'static str),
    /// Signing failed (not expected with a loaded key).
    #[error("signing the token failed")]
    Signing,
}

/// One entry of the `access` claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    /// `repository`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The repository (image) name.
    pub name: String,
    /// `["pull"]`.
    pub actions: Vec<String>,
}

/// The claims of a pull token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The service that issued the token.
    pub iss: String,
    /// The user it was issued to; empty for an anonymous client.
    pub sub: String,
    /// The service it is for.
    pub aud: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Not before, Unix seconds.
    pub nbf: u64,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// A random identifier.
    pub jti: String,
    /// What it grants.
    #[serde(default)]
    pub access: Vec<AccessEntry>,
}

impl Claims {
    /// The repositories this token may pull.
    pub fn pullable(&self) -> impl Iterator<Item = &str> {
        self.access
            .iter()
            .filter(|entry| entry.kind == "repository" && entry.actions.iter().any(|a| a == "pull"))
            .map(|entry| entry.name.as_str())
    }
}

/// A token as the token endpoint answers it.
#[derive(Clone, Debug, Serialize)]
pub struct IssuedToken {
    /// The JWT (Docker's field).
    pub token: String,
    /// The same JWT (OAuth2's field).
    pub access_token: String,
    /// Seconds it is valid.
    pub expires_in: u64,
    /// When it was issued, RFC 3339.
    pub issued_at: String,
}

/// Signs and verifies this server's pull tokens.
pub struct TokenKey {
    algorithm: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    service: String,
    ttl: Duration,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey")
            .field("algorithm", &self.algorithm)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl TokenKey {
    /// Load the PEM private key at `path`, for tokens of `service` valid
    /// for `ttl`.
    pub fn load(
        path: &std::path::Path,
        service: &str,
        ttl: Duration,
    ) -> Result<TokenKey, TokenKeyError> {
        let shown = path.display().to_string();
        let pem = std::fs::read(path).map_err(|source| TokenKeyError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::from_pem(&pem, service, ttl).ok_or(TokenKeyError::Unsupported { path: shown })
    }

    /// The key of a PEM private key (P-256 or RSA), if it is one.
    pub fn from_pem(pem: &[u8], service: &str, ttl: Duration) -> Option<TokenKey> {
        let (algorithm, encoding) = match EncodingKey::from_ec_pem(pem) {
            Ok(key) => (Algorithm::ES256, key),
            Err(_) => (Algorithm::RS256, EncodingKey::from_rsa_pem(pem).ok()?),
        };
        // The public half, through a JWK: this also proves the private key
        // parses for the algorithm.
        let jwk = Jwk::from_encoding_key(&encoding, algorithm).ok()?;
        let decoding = DecodingKey::from_jwk(&jwk).ok()?;
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_audience(&[service]);
        validation.set_issuer(&[service]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        let key = TokenKey {
            algorithm,
            encoding,
            decoding,
            validation,
            service: service.to_owned(),
            ttl,
        };
        // A key that cannot sign and verify its own token is refused now,
        // not at the first pull.
        let probe = key.issue(None, &[]).ok()?;
        key.verify(&probe.token).ok()?;
        Some(key)
    }

    /// The algorithm tokens are signed with.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The service name (audience and issuer).
    pub fn service(&self) -> &str {
        &self.service
    }

    /// A token for `user` (`None`: anonymous) that may pull `repositories`.
    pub fn issue(
        &self,
        user: Option<&str>,
        repositories: &[RepositoryName],
    ) -> Result<IssuedToken, TokenError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut jti = [0u8; 16];
        aws_lc_rs::rand::fill(&mut jti).map_err(|_| TokenError::Signing)?;
        let claims = Claims {
            iss: self.service.clone(),
            sub: user.unwrap_or_default().to_owned(),
            aud: self.service.clone(),
            exp: now + self.ttl.as_secs(),
            nbf: now,
            iat: now,
            jti: hex::encode(jti),
            access: repositories
                .iter()
                .map(|name| AccessEntry {
                    kind: "repository".to_owned(),
                    name: name.as_str().to_owned(),
                    actions: vec!["pull".to_owned()],
                })
                .collect(),
        };
        let token = encode(&Header::new(self.algorithm), &claims, &self.encoding)
            .map_err(|_| TokenError::Signing)?;
        let issued_at = jiff::Timestamp::from_second(i64::try_from(now).unwrap_or(0))
            .map(|t| t.to_string())
            .unwrap_or_default();
        Ok(IssuedToken {
            access_token: token.clone(),
            token,
            expires_in: self.ttl.as_secs(),
            issued_at,
        })
    }

    /// The claims of `token` if this server signed it for its service and
    /// it is valid now.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        use jsonwebtoken::errors::ErrorKind;
        decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|error| {
                TokenError::Invalid(match error.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired",
                    ErrorKind::ImmatureSignature => "the token is not valid yet",
                    ErrorKind::InvalidAudience | ErrorKind::InvalidIssuer => {
                        "the token was issued for another service"
                    }
                    ErrorKind::InvalidAlgorithm => {
                        "the token is not signed with this server's algorithm"
                    }
                    ErrorKind::InvalidSignature => "the token is not signed by this server",
                    ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim",
                    _ => "the token is malformed",
                })
            })
    }
}

/// The repositories a token request's `scope` parameters ask to pull:
/// each `repository:<name>:<actions>` whose actions include `pull` and
/// whose name is valid; other scopes (another action, `registry:catalog`)
/// are left out, as is anything past [`MAX_SCOPES`].
pub fn pull_scopes<'a>(scopes: impl IntoIterator<Item = &'a str>) -> Vec<RepositoryName> {
    let mut names: Vec<RepositoryName> = Vec::new();
    for scope in scopes.into_iter().flat_map(str::split_ascii_whitespace) {
        let Some(rest) = scope.strip_prefix("repository:") else {
            continue;
        };
        let Some((name, actions)) = rest.rsplit_once(':') else {
            continue;
        };
        if !actions.split(',').any(|a| a == "pull" || a == "*") {
            continue;
        }
        let Ok(name) = RepositoryName::parse(name) else {
            continue;
        };
        if !names.contains(&name) {
            names.push(name);
        }
        if names.len() == MAX_SCOPES {
            break;
        }
    }
    names
}

#[cfg(test)]
mod tests;
