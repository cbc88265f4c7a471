//! Pull authentication: who may pull, and who may make the server build.
//!
//! With an htpasswd file (`NIXERY_AUTH_HTPASSWD`, [`htpasswd`]) every
//! `/v2/` request must prove a user, by `Basic` credentials or by a
//! `Bearer` token this server signed ([`token`], on with
//! `NIXERY_AUTH_TOKEN_KEY`), unless the anonymous policy
//! ([`AnonymousPolicy`]) lets it through: `cached` lets anonymous clients
//! pull what is built and never start a build, `all` lets them do
//! anything. The HTTP layer asks two questions, in order, before it
//! parses anything else of the request: [`Auth::authenticate`] (who sent
//! it: a [`Caller`], or why the credentials are refused) and
//! [`Auth::grant`] (what that caller may do with one repository: a
//! [`Grant`]), and turns a [`Denied`] into a 401 challenge or a 429.
//!
//! The warm path is cheap: a verified credential is remembered under a
//! keyed hash of it ([`verified`]), so a pull with a known password costs
//! one HMAC and one map lookup. Password checks that are not remembered
//! are limited per client address ([`limit`]) and run off the async
//! workers. The file is read again when it changes or on `SIGHUP`
//! ([`reload`]). Nothing here logs or returns a password, a token or an
//! `Authorization` value: refusals name the rule that failed, log lines
//! name the user and the client address.

pub mod htpasswd;
pub mod limit;
pub mod reload;
pub mod settings;
pub mod token;
pub mod verified;

use std::{
    net::IpAddr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use base64::Engine as _;
use parking_lot::RwLock;

pub use settings::{AnonymousPolicy, AuthSettings};

use crate::{metrics::Metrics, reference::RepositoryName};
use htpasswd::{HtpasswdError, Users};
use limit::LoginLimiter;
use token::{IssuedToken, TokenKey, TokenKeyError};
use verified::{Kind, Verified, VerifiedCredentials};

/// Longest `Authorization` value read; a longer one is refused unread.
pub const MAX_AUTHORIZATION: usize = 8 * 1024;

/// Why authentication could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The htpasswd file is unreadable or malformed.
    #[error("NIXERY_AUTH_HTPASSWD: {0}")]
    Htpasswd(#[from] HtpasswdError),
    /// The token signing key is unreadable or unsupported.
    #[error("NIXERY_AUTH_TOKEN_KEY: {0}")]
    TokenKey(#[from] TokenKeyError),
    /// The system gave no randomness for the credential cache's key.
    #[error("no system randomness for the credential cache")]
    Randomness,
}

/// Who sent a request, as far as its credentials prove.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    /// The user, if the credentials name one (`None`: anonymous).
    pub user: Option<Arc<str>>,
    /// With a token: the repositories it may pull. `None` without one
    /// (Basic credentials or none): not limited to some repositories.
    pub repositories: Option<Arc<[String]>>,
}

impl Caller {
    /// Whether credentials were sent and proved something (a user, or an
    /// anonymous token this server issued).
    pub fn authenticated(&self) -> bool {
        self.user.is_some() || self.repositories.is_some()
    }
}

/// What a caller may do with a repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant {
    /// Pull, building what is not built yet.
    Build,
    /// Pull only what is built; never start a build.
    CachedOnly,
}

/// Why a request is refused. Each message is the client's and the log's:
/// it names a rule, never a credential.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No credentials, where they are needed.
    #[error("authentication required")]
    Unauthenticated,
    /// Credentials were sent and are refused.
    #[error("{0}")]
    Rejected(&'static str),
    /// A token that does not name the repository.
    #[error("the token does not grant pulling this repository")]
    OutOfScope,
    /// Too many password checks from this client; retry after the
    /// seconds given.
    #[error("too many failed logins from this address; retry later")]
    RateLimited(u64),
}

/// Identity of the htpasswd file as last read: a change of any field means
/// it was written or replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        })
    }
}

/// Pull authentication as configured: users, token key, anonymous policy,
/// verified credentials and the failed-login allowance.
pub struct Auth {
    settings: AuthSettings,
    users: RwLock<Arc<Users>>,
    stamp: parking_lot::Mutex<Option<FileStamp>>,
    /// Bumped by every reload, so that a check that started before one
    /// does not remember its result after it.
    generation: AtomicU64,
    tokens: Option<TokenKey>,
    verified: VerifiedCredentials,
    limiter: LoginLimiter,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("settings", &self.settings)
            .field("users", &self.users.read().len())
            .finish_non_exhaustive()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl Auth {
    /// Load the htpasswd file and the token key named by `settings`;
    /// refusals and issued tokens are counted in `metrics`.
    pub fn load(settings: AuthSettings, metrics: Arc<Metrics>) -> Result<Auth, AuthError> {
        Self::with_limiter(settings, metrics, LoginLimiter::default())
    }

    /// [`Auth::load`] with another failed-login allowance.
    pub fn with_limiter(
        settings: AuthSettings,
        metrics: Arc<Metrics>,
        limiter: LoginLimiter,
    ) -> Result<Auth, AuthError> {
        let stamp = FileStamp::of(&settings.htpasswd);
        let users = Users::load(&settings.htpasswd)?;
        let tokens = match &settings.token_key {
            Some(path) => Some(TokenKey::load(path, &settings.service, settings.token_ttl)?),
            None => None,
        };
        Ok(Auth {
            users: RwLock::new(Arc::new(users)),
            stamp: parking_lot::Mutex::new(stamp),
            generation: AtomicU64::new(0),
            tokens,
            verified: VerifiedCredentials::new().map_err(|_| AuthError::Randomness)?,
            limiter,
            metrics,
            settings,
        })
    }

    /// The settings this was loaded with.
    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    /// Whether the token flow is on (a signing key is configured).
    pub fn issues_tokens(&self) -> bool {
        self.tokens.is_some()
    }

    /// How many users the htpasswd file names.
    pub fn user_count(&self) -> usize {
        self.users.read().len()
    }

    /// Who sent a request with this `Authorization` value (if any) from
    /// `client`. Basic credentials not remembered cost a password check,
    /// taken from `client`'s allowance.
    pub async fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        client: IpAddr,
    ) -> Result<Caller, Denied> {
        let Some(value) = authorization else {
            return Ok(Caller::default());
        };
        let result = self.check(value, client).await;
        if let Err(denied) = &result {
            match denied {
                Denied::RateLimited(_) => Metrics::inc(&self.metrics.auth_rate_limited),
                _ => Metrics::inc(&self.metrics.auth_failures),
            }
        }
        result
    }

    async fn check(&self, value: &[u8], client: IpAddr) -> Result<Caller, Denied> {
        if value.len() > MAX_AUTHORIZATION {
            tracing::warn!(client = %client, bytes = value.len(), "authentication refused: Authorization header too long");
            return Err(Denied::Rejected("the Authorization header is too long"));
        }
        let malformed = Denied::Rejected("malformed Authorization header");
        let value = std::str::from_utf8(value).map_err(|_| malformed.clone())?;
        let (scheme, credentials) = value.trim().split_once(' ').ok_or(malformed.clone())?;
        let credentials = credentials.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            self.basic(credentials, client).await
        } else if scheme.eq_ignore_ascii_case("bearer") {
            self.bearer(credentials, client)
        } else {
            tracing::info!(client = %client, "authentication refused: unsupported scheme");
            Err(Denied::Rejected(
                "unsupported authorization scheme: send Basic credentials or a Bearer token",
            ))
        }
    }

    async fn basic(&self, credentials: &str, client: IpAddr) -> Result<Caller, Denied> {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .ok()
            .filter(|d| d.contains(&b':'))
            .ok_or(Denied::Rejected("malformed Basic credentials"))?;
        // An empty user and password is how some clients (skopeo, podman)
        // say they have none.
        if decoded == b":" {
            return Ok(Caller::default());
        }
        let key = self.verified.key(Kind::Basic, &decoded);
        if let Some(Verified::Password(user)) = self.verified.get(&key) {
            return Ok(Caller {
                user: Some(user),
                repositories: None,
            });
        }
        let colon = decoded.iter().position(|&b| b == b':').unwrap_or(0);
        let user = String::from_utf8_lossy(&decoded[..colon]).into_owned();
        if let Err(seconds) = self.limiter.check(client) {
            tracing::warn!(client = %client, user = %user, retry_after = seconds, "authentication refused: too many failed logins");
            return Err(Denied::RateLimited(seconds));
        }
        let generation = self.generation.load(Ordering::Acquire);
        let users = self.users.read().clone();
        let name = user.clone();
        let ok = tokio::task::spawn_blocking(move || {
            let password = &decoded[colon + 1..];
            users.verify(&name, password)
        })
        .await
        .unwrap_or(false);
        if !ok {
            tracing::warn!(client = %client, user = %user, "authentication refused: wrong user name or password");
            return Err(Denied::Rejected("wrong user name or password"));
        }
        let user: Arc<str> = user.into();
        if self.generation.load(Ordering::Acquire) == generation {
            self.verified.insert(key, Verified::Password(user.clone()));
        }
        Ok(Caller {
            user: Some(user),
            repositories: None,
        })
    }

    fn bearer(&self, token: &str, client: IpAddr) -> Result<Caller, Denied> {
        let Some(tokens) = &self.tokens else {
            tracing::info!(client = %client, "authentication refused: a token, but this server issues none");
            return Err(Denied::Rejected("this server issues no tokens"));
        };
        let key = self.verified.key(Kind::Bearer, token.as_bytes());
        if let Some(Verified::Token {
            user,
            repositories,
            expires,
        }) = self.verified.get(&key)
        {
            if expires + token::LEEWAY_SECS >= now_secs() {
                return Ok(Caller {
                    user,
                    repositories: Some(repositories),
                });
            }
            self.verified.remove(&key);
        }
        let claims = tokens.verify(token).map_err(|error| {
            let reason = match error {
                token::TokenError::Invalid(reason) => reason,
                token::TokenError::Signing => "the token is malformed",
            };
            tracing::info!(client = %client, reason, "authentication refused: invalid token");
            Denied::Rejected(reason)
        })?;
        let user: Option<Arc<str>> = (!claims.sub.is_empty()).then(|| claims.sub.as_str().into());
        let repositories: Arc<[String]> = claims.pullable().map(str::to_owned).collect();
        self.verified.insert(
            key,
            Verified::Token {
                user: user.clone(),
                repositories: repositories.clone(),
                expires: claims.exp,
            },
        );
        Ok(Caller {
            user,
            repositories: Some(repositories),
        })
    }

    /// What `caller` may do with `repository` (`None`: the version check
    /// `/v2/` or a path naming no repository, which needs credentials).
    pub fn grant(&self, caller: &Caller, repository: Option<&str>) -> Result<Grant, Denied> {
        let Some(name) = repository else {
            return if caller.authenticated() {
                Ok(Grant::Build)
            } else {
                Err(Denied::Unauthenticated)
            };
        };
        if let Some(repositories) = &caller.repositories
            && !repositories.iter().any(|r| r == name)
        {
            return Err(Denied::OutOfScope);
        }
        if caller.user.is_some() {
            return Ok(Grant::Build);
        }
        match self.settings.anonymous {
            AnonymousPolicy::None => Err(Denied::Unauthenticated),
            AnonymousPolicy::Cached => Ok(Grant::CachedOnly),
            AnonymousPolicy::All => Ok(Grant::Build),
        }
    }

    /// A token for `caller` pulling `repositories`: for a user, or for an
    /// anonymous client when the policy lets anonymous clients pull.
    /// `None` when this server issues no tokens.
    pub fn issue(
        &self,
        caller: &Caller,
        repositories: &[RepositoryName],
    ) -> Option<Result<IssuedToken, Denied>> {
        let tokens = self.tokens.as_ref()?;
        if caller.repositories.is_some() {
            return Some(Err(Denied::Rejected(
                "the token endpoint takes Basic credentials, not a token",
            )));
        }
        if caller.user.is_none() && self.settings.anonymous == AnonymousPolicy::None {
            return Some(Err(Denied::Unauthenticated));
        }
        Some(
            tokens
                .issue(caller.user.as_deref(), repositories)
                .inspect(|_| Metrics::inc(&self.metrics.tokens_issued))
                .map_err(|_| Denied::Rejected("signing the token failed")),
        )
    }

    /// The `WWW-Authenticate` challenge for a request to `repository`
    /// (if it names one) that reached this server as `host`: Bearer with
    /// the token endpoint when the token flow is on, else Basic.
    pub fn challenge(&self, host: &str, repository: Option<&RepositoryName>) -> String {
        let service = &self.settings.service;
        if self.tokens.is_none() {
            return self.basic_challenge();
        }
        let realm = match &self.settings.realm {
            Some(realm) => realm.clone(),
            None => format!("http://{host}/token"),
        };
        let mut challenge = format!("Bearer realm=\"{realm}\",service=\"{service}\"");
        if let Some(name) = repository {
            challenge.push_str(&format!(",scope=\"repository:{}:pull\"", name.as_str()));
        }
        challenge
    }

    /// The `Basic` challenge (of the token endpoint, and of registry
    /// requests without the token flow).
    pub fn basic_challenge(&self) -> String {
        format!("Basic realm=\"{}\"", self.settings.service)
    }

    /// Read the htpasswd file again if it changed since it was last read
    /// (or always, with `force`): the new users replace the old and every
    /// remembered password is forgotten. A file that does not load leaves
    /// the previous users in place. `Ok(None)`: unchanged.
    pub fn reload(&self, force: bool) -> Result<Option<usize>, HtpasswdError> {
        let path = &self.settings.htpasswd;
        let stamp = FileStamp::of(path);
        let mut last = self.stamp.lock();
        if !force && stamp == *last {
            return Ok(None);
        }
        *last = stamp;
        drop(last);
        let users = Users::load(path)?;
        let count = users.len();
        *self.users.write() = Arc::new(users);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.verified.forget_passwords();
        Ok(Some(count))
    }

    /// Forget the client addresses whose allowance is whole again.
    pub fn forget_idle_clients(&self) {
        self.limiter.forget_idle();
    }
}

#[cfg(test)]
mod tests;
