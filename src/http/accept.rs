//! Content negotiation on the `Accept` request header: which of the media
//! types the server can answer with a client gets.
//!
//! This module is the one place that reads `Accept`, once per request
//! ([`Accepted::parse`]). A manifest by tag is an image index when the
//! client accepts one ([`Accepted::index_kind`]): an OCI index whenever the
//! OCI index type is accepted, else a Docker manifest list when that is;
//! `q=0` means "not acceptable". Otherwise it is one of the image's two
//! manifests ([`Accepted::image_format`], by [`Accepted::negotiate`]).
//!
//! [`Accepted::negotiate`] picks among media types the server offers in its
//! own order of preference, the first being the default; for image
//! manifests that is Docker schema 2, then OCI (see [`crate::media_type`]).
//! A client gets an offered type other than the
//! default only when it names that type and either does not name the
//! default or gives it a lower quality value (`q`). Wildcards (`*/*`,
//! `application/*`) name nothing: a client accepting anything gets the
//! default. The order in which a client lists types carries no preference
//! (RFC 9110, section 12.5.1): containers/image lists OCI first and Docker
//! lists Docker first, both at `q=1`, and both get the default; a client
//! listing only OCI types, as the distribution-spec conformance suite
//! does, gets OCI.
//!
//! ```
//! use axum::http::{HeaderMap, HeaderValue, header::ACCEPT};
//! use nixery::http::accept::negotiate;
//!
//! let mut headers = HeaderMap::new();
//! headers.insert(ACCEPT, HeaderValue::from_static("application/b, application/c;q=0.5"));
//! assert_eq!(negotiate(&headers, &["application/a", "application/b"]), "application/b");
//! assert_eq!(negotiate(&HeaderMap::new(), &["application/a", "application/b"]), "application/a");
//! ```

use std::str::FromStr;

use axum::http::{HeaderMap, header::ACCEPT};

use crate::{
    image_index::IndexKind,
    media_type::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, ImageFormat, OCI_INDEX, OCI_MANIFEST},
};

/// The image manifest media types offered by tag, the default first.
const IMAGE_MANIFEST_OFFER: [&str; 2] = [DOCKER_MANIFEST, OCI_MANIFEST];

/// The media types a request's `Accept` headers name explicitly (no
/// wildcard), each with its quality in thousandths, read once.
#[derive(Debug, Clone, Default)]
pub struct Accepted {
    named: Vec<(String, u16)>,
}

impl Accepted {
    /// Reads every `Accept` header of `headers`; malformed entries are
    /// skipped, as are wildcards (they name no type).
    pub fn parse(headers: &HeaderMap) -> Self {
        let named = headers
            .get_all(ACCEPT)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|entry| {
                let mime = mime::Mime::from_str(entry.trim()).ok()?;
                if mime.type_() == mime::STAR || mime.subtype() == mime::STAR {
                    return None;
                }
                let q = match mime.get_param("q") {
                    None => 1000,
                    Some(value) => parse_quality(value.as_str())?,
                };
                Some((mime.essence_str().to_owned(), q))
            })
            .collect();
        Accepted { named }
    }

    /// The highest quality the client gives `media_type` (0 when unnamed).
    fn quality(&self, media_type: &str) -> u16 {
        self.named
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case(media_type))
            .map(|(_, q)| *q)
            .fold(0, u16::max)
    }

    /// The image manifest this client gets: OCI when it names the OCI
    /// manifest type and either not Docker schema 2 or Docker schema 2 at a
    /// lower quality; Docker schema 2 otherwise.
    pub fn image_format(&self) -> ImageFormat {
        if self.negotiate(&IMAGE_MANIFEST_OFFER) == OCI_MANIFEST {
            ImageFormat::Oci
        } else {
            ImageFormat::Docker
        }
    }

    /// The index flavour this client accepts, if it accepts one: OCI
    /// whenever the OCI index type is named with a quality above 0, else a
    /// Docker manifest list when that type is.
    pub fn index_kind(&self) -> Option<IndexKind> {
        if self.quality(OCI_INDEX) > 0 {
            Some(IndexKind::Oci)
        } else if self.quality(DOCKER_MANIFEST_LIST) > 0 {
            Some(IndexKind::DockerList)
        } else {
            None
        }
    }

    /// The media type of `offered` to answer this client with:
    /// `offered[0]` unless the client names another offered type with a
    /// higher quality than every type listed before it in `offered` (an
    /// unnamed type has quality 0). Ties go to the earlier offered type.
    ///
    /// `offered` must not be empty; an empty list answers `""`.
    pub fn negotiate<'a>(&self, offered: &[&'a str]) -> &'a str {
        let Some((&default, rest)) = offered.split_first() else {
            return "";
        };
        let mut best = (default, self.quality(default));
        for &candidate in rest {
            let q = self.quality(candidate);
            if q > best.1 {
                best = (candidate, q);
            }
        }
        best.0
    }
}

/// [`Accepted::negotiate`] for the `Accept` headers of `headers`.
pub fn negotiate<'a>(headers: &HeaderMap, offered: &[&'a str]) -> &'a str {
    Accepted::parse(headers).negotiate(offered)
}

/// An RFC 9110 `qvalue` (`0`, `0.5`, `1.000`, ...) in thousandths; `None`
/// when malformed.
fn parse_quality(value: &str) -> Option<u16> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if fraction.len() > 3 || !digits(fraction) {
        return None;
    }
    let thousandths: u16 = format!("{fraction:0<3}").parse().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    const IMAGE: [&str; 2] = [DOCKER_MANIFEST, OCI_MANIFEST];

    fn with_accept(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(ACCEPT, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn answer(values: &[&str]) -> &'static str {
        negotiate(&with_accept(values), &IMAGE)
    }

    #[test]
    fn no_accept_or_wildcards_get_the_default() {
        assert_eq!(answer(&[]), DOCKER_MANIFEST);
        assert_eq!(answer(&["*/*"]), DOCKER_MANIFEST);
        assert_eq!(answer(&["application/*"]), DOCKER_MANIFEST);
        assert_eq!(answer(&["application/json"]), DOCKER_MANIFEST);
    }

    #[test]
    fn oci_only_clients_get_oci() {
        // The conformance suite: two Accept headers, OCI index and manifest.
        assert_eq!(answer(&[OCI_INDEX, OCI_MANIFEST]), OCI_MANIFEST);
        assert_eq!(answer(&[&format!("{OCI_MANIFEST}, */*")]), OCI_MANIFEST);
        assert_eq!(
            answer(&[&format!("{OCI_MANIFEST}, {DOCKER_MANIFEST};q=0")]),
            OCI_MANIFEST
        );
    }

    #[test]
    fn listing_order_is_no_preference_but_quality_is() {
        // containers/image (skopeo, podman) lists OCI first, all at q=1.
        let skopeo = [
            OCI_MANIFEST,
            DOCKER_MANIFEST,
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            DOCKER_MANIFEST_LIST,
            OCI_INDEX,
        ];
        assert_eq!(answer(&skopeo), DOCKER_MANIFEST);
        assert_eq!(answer(&[&skopeo.join(", ")]), DOCKER_MANIFEST);
        assert_eq!(
            answer(&[&format!("{DOCKER_MANIFEST};q=0.5, {OCI_MANIFEST}")]),
            OCI_MANIFEST
        );
        assert_eq!(
            answer(&[&format!("{DOCKER_MANIFEST};q=0.9, {OCI_MANIFEST};q=0.8")]),
            DOCKER_MANIFEST
        );
        assert_eq!(
            answer(&[&format!("{OCI_MANIFEST};q=0.91,{DOCKER_MANIFEST};q=0.9")]),
            OCI_MANIFEST
        );
    }

    #[test]
    fn parameters_and_case_do_not_hide_a_type() {
        assert_eq!(
            answer(&["Application/VND.OCI.Image.Manifest.v1+JSON; charset=utf-8"]),
            OCI_MANIFEST
        );
    }

    #[test]
    fn malformed_entries_are_skipped() {
        assert_eq!(answer(&[&format!("{OCI_MANIFEST};q=2")]), DOCKER_MANIFEST);
        assert_eq!(answer(&[&format!("{OCI_MANIFEST};q=x")]), DOCKER_MANIFEST);
        assert_eq!(answer(&["garbage, ;;, /"]), DOCKER_MANIFEST);
        assert_eq!(answer(&[&format!(",,{OCI_MANIFEST},,")]), OCI_MANIFEST);
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_bytes(b"\xff\xfe").unwrap());
        assert_eq!(negotiate(&headers, &IMAGE), DOCKER_MANIFEST);
    }

    #[test]
    fn qualities_parse_as_rfc_9110_qvalues() {
        assert_eq!(parse_quality("0"), Some(0));
        assert_eq!(parse_quality("0.5"), Some(500));
        assert_eq!(parse_quality("0.123"), Some(123));
        assert_eq!(parse_quality("1"), Some(1000));
        assert_eq!(parse_quality("1.000"), Some(1000));
        for bad in ["1.5", "0.1234", "2", "-1", "", ".5", "0.5x"] {
            assert_eq!(parse_quality(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_empty_offer_answers_nothing() {
        assert_eq!(negotiate(&with_accept(&[OCI_MANIFEST]), &[]), "");
    }

    fn kind(values: &[&str]) -> Option<IndexKind> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(ACCEPT, HeaderValue::from_str(value).unwrap());
        }
        Accepted::parse(&headers).index_kind()
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

    #[test]
    fn image_format_follows_negotiate() {
        assert_eq!(
            Accepted::parse(&with_accept(&[OCI_MANIFEST])).image_format(),
            ImageFormat::Oci
        );
        assert_eq!(
            Accepted::parse(&with_accept(&[])).image_format(),
            ImageFormat::Docker
        );
        assert_eq!(
            Accepted::parse(&with_accept(&[OCI_MANIFEST, DOCKER_MANIFEST])).image_format(),
            ImageFormat::Docker
        );
    }
}
