//! The HTTP side of pull authentication ([`crate::auth`]): every `/v2`
//! request is checked here before its path is looked at further, a
//! refusal becomes `401 UNAUTHORIZED` with a `WWW-Authenticate` challenge
//! (or `429` with `Retry-After` for a client past its failed-login
//! allowance), and `GET /token` answers pull tokens.
//!
//! The `Authorization` value is read here and handed to
//! [`Auth::authenticate`] as bytes; it is never put in a log field, an
//! error message or a response.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::{
    extract::{ConnectInfo, State},
    http::{
        Extensions, HeaderMap, HeaderValue, StatusCode, Uri,
        header::{AUTHORIZATION, CACHE_CONTROL, HOST},
    },
    response::{IntoResponse, Response},
};

use super::{AppState, ErrorCode, RegistryError};
use crate::{
    auth::{AnonymousPolicy, Auth, Caller, Denied, Grant, token::pull_scopes},
    reference::RepositoryName,
};

/// The address of the client that sent a request (its TCP peer, see
/// [`crate::connection`]); unspecified when not known (a request not
/// served from a socket).
pub fn client(extensions: &Extensions) -> IpAddr {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip())
}

/// The host a request reached, for the token endpoint's URL: its `Host`
/// when that is a plain `host[:port]`, else the listening address.
fn host<'a>(state: &'a AppState, headers: &'a HeaderMap) -> &'a str {
    headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .unwrap_or(&state.status.fallback_host)
}

/// The response to a refused request.
fn refusal(
    state: &AppState,
    auth: &Auth,
    headers: &HeaderMap,
    repository: Option<&RepositoryName>,
    denied: Denied,
) -> RegistryError {
    match denied {
        Denied::RateLimited(seconds) => {
            let mut error = RegistryError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TooManyRequests,
                denied.to_string(),
            );
            error.retry_after = Some(seconds);
            error
        }
        other => RegistryError::unauthorized(
            other.to_string(),
            auth.challenge(host(state, headers), repository),
        ),
    }
}

/// Check a `/v2` request for `repository` (`None`: `/v2/` itself, or a
/// path naming no valid repository): what its caller may do, or the
/// refusal. Without authentication configured, anything.
pub async fn check(
    state: &AppState,
    headers: &HeaderMap,
    extensions: &Extensions,
    repository: Option<&RepositoryName>,
) -> Result<Grant, RegistryError> {
    let Some(auth) = &state.auth else {
        return Ok(Grant::Build);
    };
    let caller = authenticate(auth, headers, extensions)
        .await
        .map_err(|denied| refusal(state, auth, headers, repository, denied))?;
    auth.grant(&caller, repository.map(RepositoryName::as_str))
        .map_err(|denied| refusal(state, auth, headers, repository, denied))
}

async fn authenticate(
    auth: &Auth,
    headers: &HeaderMap,
    extensions: &Extensions,
) -> Result<Caller, Denied> {
    let authorization = headers.get(AUTHORIZATION).map(HeaderValue::as_bytes);
    auth.authenticate(authorization, client(extensions)).await
}

/// The 401 of an anonymous request for an image that is not built, under
/// the `cached` policy: credentials would let it build.
pub fn not_built(state: &AppState, headers: &HeaderMap, name: &RepositoryName) -> RegistryError {
    let challenge = state.auth.as_ref().map_or_else(String::new, |auth| {
        auth.challenge(host(state, headers), Some(name))
    });
    RegistryError::unauthorized(
        "this image is not built yet and anonymous clients cannot start a build: \
         send credentials",
        challenge,
    )
}

/// Whether the status page may show what only users see (the build
/// errors): always without authentication, else when the request's
/// credentials prove a user.
pub async fn shows_private_parts(
    state: &AppState,
    headers: &HeaderMap,
    extensions: &Extensions,
) -> bool {
    match &state.auth {
        None => true,
        Some(auth) => authenticate(auth, headers, extensions)
            .await
            .is_ok_and(|caller| caller.user.is_some()),
    }
}

/// Who may pull, in words, for the status page.
pub fn describe(state: &AppState) -> String {
    let Some(auth) = &state.auth else {
        return "off: anyone may pull and build".to_owned();
    };
    let flow = if auth.issues_tokens() {
        "Basic credentials or Bearer tokens from /token"
    } else {
        "Basic credentials"
    };
    let anonymous = match auth.settings().anonymous {
        AnonymousPolicy::None => "nothing",
        AnonymousPolicy::Cached => "pull images already built, never start a build",
        AnonymousPolicy::All => "pull and build anything",
    };
    format!("on ({flow}); without credentials: {anonymous}")
}

/// `GET /token`: a pull token for the Basic credentials sent (or for an
/// anonymous client, when the policy lets anonymous clients pull), naming
/// each repository of the `scope` parameters. 404 when the token flow is
/// off.
pub async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    extensions: Extensions,
    uri: Uri,
) -> Result<Response, RegistryError> {
    let Some(auth) = state.auth.clone().filter(|auth| auth.issues_tokens()) else {
        return Err(RegistryError::no_such_endpoint());
    };
    let query = uri.query().unwrap_or_default();
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .take(64)
        .collect();
    if let Some((_, service)) = pairs.iter().find(|(k, _)| k == "service")
        && service != &auth.settings().service
    {
        return Err(RegistryError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::Unsupported,
            format!(
                "this token endpoint serves the service {:?}",
                auth.settings().service
            ),
        ));
    }
    let repositories = pull_scopes(
        pairs
            .iter()
            .filter(|(k, _)| k == "scope")
            .map(|(_, v)| v.as_str()),
    );
    // The token endpoint asks for Basic credentials, whatever the flow.
    let refused = |denied: Denied| match denied {
        Denied::RateLimited(_) => refusal(&state, &auth, &headers, None, denied),
        other => RegistryError::unauthorized(other.to_string(), auth.basic_challenge()),
    };
    let caller = authenticate(&auth, &headers, &extensions)
        .await
        .map_err(refused)?;
    let issued = auth
        .issue(&caller, &repositories)
        .ok_or_else(RegistryError::no_such_endpoint)?
        .map_err(refused)?;
    tracing::info!(
        user = caller.user.as_deref().unwrap_or(""),
        client = %client(&extensions),
        repositories = repositories.len(),
        "token issued"
    );
    Ok((
        [(CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        axum::Json(issued),
    )
        .into_response())
}
