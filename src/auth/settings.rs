//! Settings of pull authentication (`NIXERY_AUTH_*`): declared once here,
//! read into [`AuthSettings`] by [`auth_settings`].

use std::{ffi::OsStr, path::PathBuf, time::Duration};

use crate::settings_table::{ConfigError, Parsed, ServeSettings, parse};

/// Who may pull without credentials once users exist.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AnonymousPolicy {
    /// Nobody: every `/v2/` request needs credentials.
    #[default]
    None,
    /// Anonymous clients may pull what is already built, never start a
    /// build.
    Cached,
    /// Anonymous clients may pull and build anything; credentials are
    /// still checked when sent.
    All,
}

impl AnonymousPolicy {
    /// The policy as written in `NIXERY_AUTH_ANONYMOUS`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Cached => "cached",
            Self::All => "all",
        }
    }
}

/// Default `NIXERY_AUTH_SERVICE`.
pub const DEFAULT_SERVICE: &str = "nixery";
/// Default `NIXERY_AUTH_TOKEN_TTL`.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(300);

crate::settings! {
    /// htpasswd file of the users who may pull (bcrypt entries, `htpasswd -B`); unset: no authentication.
    HTPASSWD: Option<PathBuf> = {
        env: "NIXERY_AUTH_HTPASSWD", flag: "auth-htpasswd", value_name: "PATH",
        default: None, parse: parse::path,
    };
    /// PEM private key (PKCS#8, P-256 or Ed25519) that signs pull tokens; set: the token flow is on.
    TOKEN_KEY: Option<PathBuf> = {
        env: "NIXERY_AUTH_TOKEN_KEY", flag: "auth-token-key", value_name: "PATH",
        default: None, parse: parse::path,
    };
    /// What clients without credentials may pull: none, cached or all [default: none].
    ANONYMOUS: AnonymousPolicy = {
        env: "NIXERY_AUTH_ANONYMOUS", flag: "auth-anonymous", value_name: "POLICY",
        default: AnonymousPolicy::None, parse: anonymous_policy,
    };
    /// Service name in challenges and tokens (their audience and issuer) [default: nixery].
    SERVICE: String = {
        env: "NIXERY_AUTH_SERVICE", flag: "auth-service", value_name: "NAME",
        default: DEFAULT_SERVICE.to_owned(), parse: service_name,
    };
    /// URL of the token endpoint as clients reach it [default: http://<Host>/token].
    REALM: Option<String> = {
        env: "NIXERY_AUTH_REALM", flag: "auth-realm", value_name: "URL",
        default: None, parse: realm,
    };
    /// Seconds a pull token stays valid [default: 300].
    TOKEN_TTL: Duration = {
        env: "NIXERY_AUTH_TOKEN_TTL", flag: "auth-token-ttl", value_name: "SECONDS",
        default: DEFAULT_TOKEN_TTL, parse: parse::seconds,
    };
}

fn anonymous_policy(raw: &OsStr) -> Parsed<AnonymousPolicy> {
    parse::trimmed(raw, "expected none, cached or all", |v| {
        match v.to_ascii_lowercase().as_str() {
            "none" => Some(AnonymousPolicy::None),
            "cached" => Some(AnonymousPolicy::Cached),
            "all" => Some(AnonymousPolicy::All),
            _ => None,
        }
    })
}

/// Characters a challenge can quote without escaping.
fn quotable(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

fn service_name(raw: &OsStr) -> Parsed<String> {
    parse::trimmed(
        raw,
        "expected a name of printable ASCII characters without quotes or backslashes",
        |v| quotable(v).then(|| v.to_owned()),
    )
}

fn realm(raw: &OsStr) -> Parsed<Option<String>> {
    parse::trimmed(
        raw,
        "expected an http:// or https:// URL without quotes or backslashes",
        |v| {
            ((v.starts_with("http://") || v.starts_with("https://")) && quotable(v))
                .then(|| Some(v.to_owned()))
        },
    )
}

/// Validated settings of pull authentication (present only when
/// `NIXERY_AUTH_HTPASSWD` is set).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthSettings {
    /// The htpasswd file.
    pub htpasswd: PathBuf,
    /// The token signing key, if the token flow is on.
    pub token_key: Option<PathBuf>,
    /// What anonymous clients may do.
    pub anonymous: AnonymousPolicy,
    /// The service name of challenges and tokens.
    pub service: String,
    /// The token endpoint's URL as clients reach it, if not derived from
    /// each request's `Host`.
    pub realm: Option<String>,
    /// How long an issued token is valid.
    pub token_ttl: Duration,
}

/// The authentication settings, `None` without `NIXERY_AUTH_HTPASSWD`;
/// the other `NIXERY_AUTH_*` settings need it.
pub fn auth_settings(settings: &ServeSettings) -> Result<Option<AuthSettings>, ConfigError> {
    let Some(htpasswd) = settings.get(&HTPASSWD)? else {
        let dependents = [
            (settings.is_set(&TOKEN_KEY), "NIXERY_AUTH_TOKEN_KEY is set"),
            (settings.is_set(&ANONYMOUS), "NIXERY_AUTH_ANONYMOUS is set"),
            (settings.is_set(&SERVICE), "NIXERY_AUTH_SERVICE is set"),
            (settings.is_set(&REALM), "NIXERY_AUTH_REALM is set"),
            (settings.is_set(&TOKEN_TTL), "NIXERY_AUTH_TOKEN_TTL is set"),
        ];
        return match dependents.into_iter().find(|(set, _)| *set) {
            Some((_, because)) => Err(ConfigError::Missing {
                var: HTPASSWD.info.env,
                because,
            }),
            None => Ok(None),
        };
    };
    Ok(Some(AuthSettings {
        htpasswd,
        token_key: settings.get(&TOKEN_KEY)?,
        anonymous: settings.get(&ANONYMOUS)?,
        service: settings.get(&SERVICE)?,
        realm: settings.get(&REALM)?,
        token_ttl: settings.get(&TOKEN_TTL)?,
    }))
}
