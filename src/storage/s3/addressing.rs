//! Where requests and plain object URLs go: AWS's regional endpoint or an
//! S3-compatible server, with the bucket in the path or in the host name.

use reqwest::Url;

use super::settings::{Addressing, S3Settings};

/// The service endpoint: the configured one, else AWS's regional
/// endpoint `https://s3.<region>.amazonaws.com`.
pub(crate) fn service_endpoint(settings: &S3Settings) -> String {
    match &settings.endpoint {
        Some(url) => url.as_str().trim_end_matches('/').to_owned(),
        None => format!("https://s3.{}.amazonaws.com", settings.region),
    }
}

/// The unsigned URL of the object `key` (`<prefix>/<name>`, both parts
/// made of URL-safe characters): where redirects go without presigning.
pub(crate) fn plain_object_url(settings: &S3Settings, key: &str) -> String {
    let endpoint = service_endpoint(settings);
    match settings.addressing {
        Addressing::Path => format!("{endpoint}/{}/{key}", settings.bucket),
        Addressing::VirtualHosted => match Url::parse(&endpoint) {
            Ok(url) => {
                let host = url.host_str().unwrap_or_default();
                let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
                format!("{}://{}.{host}{port}/{key}", url.scheme(), settings.bucket)
            }
            // The endpoint was validated as a URL; keep path style if not.
            Err(_) => format!("{endpoint}/{}/{key}", settings.bucket),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(endpoint: Option<&str>, addressing: Addressing) -> S3Settings {
        S3Settings {
            addressing,
            endpoint: endpoint.map(|e| Url::parse(e).unwrap()),
            ..S3Settings::for_endpoint("bk", "eu-west-1", Url::parse("http://unused").unwrap())
        }
    }

    #[test]
    fn aws_urls_name_the_region() {
        let s = settings(None, Addressing::VirtualHosted);
        assert_eq!(service_endpoint(&s), "https://s3.eu-west-1.amazonaws.com");
        assert_eq!(
            plain_object_url(&s, "layers/ab"),
            "https://bk.s3.eu-west-1.amazonaws.com/layers/ab"
        );
        let s = settings(None, Addressing::Path);
        assert_eq!(
            plain_object_url(&s, "layers/ab"),
            "https://s3.eu-west-1.amazonaws.com/bk/layers/ab"
        );
    }

    #[test]
    fn custom_endpoints_keep_scheme_and_port() {
        let s = settings(Some("http://127.0.0.1:9000/"), Addressing::Path);
        assert_eq!(
            plain_object_url(&s, "layers/ab"),
            "http://127.0.0.1:9000/bk/layers/ab"
        );
        let s = settings(Some("https://minio.local:9000"), Addressing::VirtualHosted);
        assert_eq!(
            plain_object_url(&s, "layers/ab"),
            "https://bk.minio.local:9000/layers/ab"
        );
    }
}
