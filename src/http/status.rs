//! `GET`/`HEAD /`: the status page for people (see [`crate::status`]).
//!
//! The page is HTML-escaped when rendered; its headers add defence in
//! depth: a Content-Security-Policy that allows no script and no external
//! resource (only the inline stylesheet), and `nosniff`.

use axum::{
    extract::State,
    http::{
        Extensions, HeaderMap, HeaderValue,
        header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE, HOST, X_CONTENT_TYPE_OPTIONS},
    },
    response::IntoResponse,
};

use super::AppState;

/// `Content-Type` of the page.
pub const CONTENT_TYPE_HTML: &str = "text/html; charset=utf-8";
/// `Content-Security-Policy` of the page: nothing but its inline style.
pub const POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'";

/// Render the status page for the request's `Host`.
///
/// With pull authentication on, the build errors (which name images users
/// built) are shown only to a request whose credentials prove a user.
pub async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    extensions: Extensions,
) -> impl IntoResponse {
    let host = headers.get(HOST).and_then(|h| h.to_str().ok());
    let private = super::auth::shows_private_parts(&state, &headers, &extensions).await;
    let errors = if private {
        state.build_errors.recent()
    } else {
        Vec::new()
    };
    let mut page = state.status.page(host, &errors);
    page.errors_hidden = !private;
    page.authentication = super::auth::describe(&state);
    page.collection = state.gc_status.describe();
    let html = page.render();
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_HTML)),
            (CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY)),
            (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        html,
    )
}
