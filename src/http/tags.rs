//! `GET /v2/<name>/tags/list`: the tags of a repository.
//!
//! Any tag of any buildable name selects the same image here (the tag only
//! picks a package set revision), so there is nothing to enumerate. The list
//! names the one tag every client asks for by default, `latest`; it says
//! that the name is served, not that other tags are unknown. The
//! distribution spec's pagination parameters are honoured on that list: `n`
//! (a non-negative count) caps it and `last` keeps only tags sorting after
//! it.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};

use super::error::{ErrorCode, RegistryError};
use crate::reference::RepositoryName;

/// The tags every repository lists.
const LISTED_TAGS: &[&str] = &["latest"];

/// The body of a tags list.
#[derive(Debug, serde::Serialize)]
struct TagList<'a> {
    name: &'a str,
    tags: Vec<&'static str>,
}

/// Answer the tags list of `name` for the raw query string `query`.
pub fn list(name: &RepositoryName, query: Option<&str>) -> Result<Response, RegistryError> {
    let mut limit = None;
    let mut last = None;
    // `application/x-www-form-urlencoded` pairs: percent- and `+`-decoded.
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*key {
            "n" => limit = Some(parse_count(&value)?),
            "last" => last = Some(value.into_owned()),
            _ => {}
        }
    }
    let tags = LISTED_TAGS
        .iter()
        .copied()
        .filter(|tag| last.as_deref().is_none_or(|last| *tag > last))
        .take(limit.unwrap_or(usize::MAX))
        .collect();
    Ok(Json(TagList {
        name: name.as_str(),
        tags,
    })
    .into_response())
}

/// `n`: a non-negative decimal count.
fn parse_count(value: &str) -> Result<usize, RegistryError> {
    value.parse::<usize>().map_err(|_| {
        RegistryError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::PaginationNumberInvalid,
            format!("n={value:?} is not a non-negative number of results"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(query: Option<&str>) -> serde_json::Value {
        let name = RepositoryName::parse("shell/git").unwrap();
        let response = list(&name, query).unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn every_name_lists_latest() {
        assert_eq!(
            body(None).await,
            serde_json::json!({"name": "shell/git", "tags": ["latest"]})
        );
    }

    #[tokio::test]
    async fn pagination_parameters_cap_and_skip_the_list() {
        let tags = |v: serde_json::Value| v["tags"].clone();
        assert_eq!(
            tags(body(Some("n=10")).await),
            serde_json::json!(["latest"])
        );
        assert_eq!(tags(body(Some("n=0")).await), serde_json::json!([]));
        assert_eq!(
            tags(body(Some("n=1&last=a")).await),
            serde_json::json!(["latest"])
        );
        assert_eq!(tags(body(Some("last=latest")).await), serde_json::json!([]));
        assert_eq!(
            tags(body(Some("last=z&other=1")).await),
            serde_json::json!([])
        );
    }

    #[test]
    fn a_bad_count_is_pagination_number_invalid() {
        let name = RepositoryName::parse("a").unwrap();
        for query in ["n=-1", "n=x", "n="] {
            let error = list(&name, Some(query)).unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{query}");
            assert_eq!(error.code, ErrorCode::PaginationNumberInvalid, "{query}");
        }
    }
}
