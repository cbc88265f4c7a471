//! Which manifest a client gets by tag, from its `Accept` headers.
//!
//! A client that lists the OCI image index type gets an OCI index; one
//! that lists only the Docker manifest list type gets a Docker manifest
//! list; any other (no `Accept`, `*/*`, image manifests only) gets a single
//! image manifest, as before indexes existed. Media type parameters are
//! ignored, except that `q=0` means "not acceptable" (RFC 9110).

use axum::http::{HeaderMap, header};

use crate::image_index::{DOCKER_MANIFEST_LIST, IndexKind, OCI_INDEX};

/// The index flavour the client accepts, if it accepts one.
pub fn index_kind(headers: &HeaderMap) -> Option<IndexKind> {
    let mut docker = false;
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let media_type = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|param| {
                let (name, value) = param.split_once('=').unwrap_or((param, ""));
                name.trim().eq_ignore_ascii_case("q")
                    && value.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
            });
            if refused {
                continue;
            }
            if media_type.eq_ignore_ascii_case(OCI_INDEX) {
                return Some(IndexKind::Oci);
            }
            docker |= media_type.eq_ignore_ascii_case(DOCKER_MANIFEST_LIST);
        }
    }
    docker.then_some(IndexKind::DockerList)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn kind(values: &[&str]) -> Option<IndexKind> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        }
        index_kind(&headers)
    }

    #[test]
    fn oci_wins_whenever_it_is_accepted() {
        // Docker's own list (in separate headers), then containerd's.
        let docker = [
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.oci.image.manifest.v1+json",
        ];
        assert_eq!(kind(&docker), Some(IndexKind::Oci));
        assert_eq!(
            kind(&[
                "application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.index.v1+json;q=0.5, */*;q=0.8"
            ]),
            Some(IndexKind::Oci)
        );
    }

    #[test]
    fn docker_types_alone_give_a_manifest_list() {
        assert_eq!(
            kind(&[
                "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json"
            ]),
            Some(IndexKind::DockerList)
        );
        assert_eq!(
            kind(&[
                "application/vnd.oci.image.index.v1+json; q=0, application/vnd.docker.distribution.manifest.list.v2+json"
            ]),
            Some(IndexKind::DockerList)
        );
    }

    #[test]
    fn single_manifest_clients_get_no_index() {
        assert_eq!(kind(&[]), None);
        assert_eq!(kind(&["*/*"]), None);
        assert_eq!(
            kind(&["application/vnd.docker.distribution.manifest.v2+json"]),
            None
        );
        assert_eq!(
            kind(&["application/vnd.docker.distribution.manifest.list.v2+json;q=0.0"]),
            None
        );
    }
}
