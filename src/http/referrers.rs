//! `GET /v2/<name>/referrers/<digest>`: the artifacts (SBOMs) whose
//! `subject` is the manifest `<digest>`, as an OCI image index.
//!
//! The list comes from storage ([`crate::referrers::store`]); a digest
//! nothing refers to (including a manifest this registry never stored)
//! answers an empty index, never 404, as the distribution spec requires of
//! a registry that offers the API. An invalid digest is 400
//! `DIGEST_INVALID` (from the path parser). `artifactType=<type>` keeps
//! only the entries of that type and the answer then carries
//! `OCI-Filters-Applied: artifactType`. The repository name plays no part:
//! like blobs, artifacts are found by digest alone.

use axum::{
    body::Body,
    http::{HeaderName, StatusCode, header},
    response::Response,
};

use super::error::RegistryError;
use crate::{
    media_type::OCI_INDEX,
    reference::Digest,
    referrers::{ReferrersIndex, store},
    storage::Storage,
};

/// Header naming the filters a referrers answer applied.
pub const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");

/// Answer a referrers request for `subject` (`None`: a digest that names
/// no manifest here) with the raw query string `query`.
pub async fn list(
    storage: &dyn Storage,
    subject: Option<&Digest>,
    query: Option<&str>,
    head: bool,
) -> Result<Response, RegistryError> {
    let artifact_type = artifact_type(query.unwrap_or(""));
    let index = match subject {
        Some(digest) => store::list(storage, digest).await?,
        None => ReferrersIndex::default(),
    };
    let index = match &artifact_type {
        Some(wanted) => index.filtered(wanted),
        None => index,
    };
    let body = index.to_bytes().map_err(RegistryError::internal)?;
    let mut response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, OCI_INDEX)
        .header(header::CONTENT_LENGTH, body.len());
    if artifact_type.is_some() {
        response = response.header(OCI_FILTERS_APPLIED, "artifactType");
    }
    let body = if head {
        Body::empty()
    } else {
        Body::from(body)
    };
    response.body(body).map_err(RegistryError::internal)
}

/// The `artifactType` parameter of `query`, percent-decoded. A `+` stays a
/// `+` (media types such as `application/spdx+json` have them and never a
/// space), so a client that did not encode it is still understood.
fn artifact_type(query: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let value = pair.strip_prefix("artifactType=")?;
        Some(
            percent_encoding::percent_decode_str(value)
                .decode_utf8_lossy()
                .into_owned(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_type_is_decoded_and_plus_is_kept() {
        assert_eq!(
            artifact_type("artifactType=application%2Fspdx%2Bjson").as_deref(),
            Some("application/spdx+json")
        );
        assert_eq!(
            artifact_type("n=1&artifactType=application/spdx+json").as_deref(),
            Some("application/spdx+json")
        );
        assert_eq!(artifact_type("artifacttype=x"), None);
        assert_eq!(artifact_type(""), None);
    }
}
