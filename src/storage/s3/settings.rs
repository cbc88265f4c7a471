//! Settings of the s3 backend, all in one place: their entries in the
//! settings table (see [`crate::config`]) and their validation into
//! [`S3Settings`].
//!
//! Names follow upstream Nixery's S3 backend (`S3_BUCKET`, `AWS_REGION`
//! defaulting to `us-east-1`, `S3_USE_PRESIGNED_URLS`) and the AWS SDKs'
//! shared conventions (`AWS_ENDPOINT_URL_S3`, then `AWS_ENDPOINT_URL`).
//! Credentials are not settings of ours: the standard AWS chain reads
//! them (environment, shared files and profiles, web identity, container
//! and instance metadata), see `docs/s3.md`. Settings this project adds
//! carry the `NIXERY_S3_` prefix.

use std::time::Duration;

use reqwest::Url;

use crate::config::{ConfigError, ServeSettings, StorageSetting, parse};

/// Region used when `AWS_REGION` is unset, as upstream.
pub const DEFAULT_REGION: &str = "us-east-1";
/// Default lifetime of presigned redirect URLs (`NIXERY_S3_PRESIGN_EXPIRY`),
/// upstream's five minutes.
pub const DEFAULT_PRESIGN_EXPIRY_SECS: u64 = 300;
/// Longest lifetime Signature Version 4 allows for a presigned URL.
pub const MAX_PRESIGN_EXPIRY_SECS: u64 = 7 * 24 * 60 * 60;

/// How request and object URLs name the bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addressing {
    /// `https://host/<bucket>/<key>`: what S3-compatible servers expect.
    Path,
    /// `https://<bucket>.host/<key>`: AWS's preferred form.
    VirtualHosted,
}

crate::settings! {
    /// Bucket of the s3 backend.
    BUCKET: Option<String> = {
        env: "S3_BUCKET", flag: "s3-bucket", value_name: "BUCKET",
        default: None, parse: parse::string,
    };
    /// Region of the s3 bucket [default: us-east-1].
    REGION: Option<String> = {
        env: "AWS_REGION", flag: "s3-region", value_name: "REGION",
        default: None, parse: parse::string,
    };
    /// Endpoint of an S3-compatible server, for S3 only (wins over
    /// AWS_ENDPOINT_URL).
    ENDPOINT_S3: Option<String> = {
        env: "AWS_ENDPOINT_URL_S3", flag: "s3-endpoint", value_name: "URL",
        default: None, parse: parse::string,
    };
    /// Endpoint of an S3-compatible server (all AWS services).
    ENDPOINT: Option<String> = {
        env: "AWS_ENDPOINT_URL", flag: "aws-endpoint", value_name: "URL",
        default: None, parse: parse::string,
    };
    /// Addressing of the bucket: path, virtual or auto [default: auto,
    /// path-style with an endpoint, virtual-hosted without].
    ADDRESSING: Option<String> = {
        env: "NIXERY_S3_ADDRESSING", flag: "s3-addressing", value_name: "STYLE",
        default: None, parse: parse::string,
    };
    /// Redirect blob requests to presigned URLs (true/false) [default: true].
    PRESIGNED_URLS: Option<String> = {
        env: "S3_USE_PRESIGNED_URLS", flag: "s3-use-presigned-urls", value_name: "BOOL",
        default: None, parse: parse::string,
    };
    /// Seconds a presigned redirect URL stays valid [default: 300].
    PRESIGN_EXPIRY: Option<String> = {
        env: "NIXERY_S3_PRESIGN_EXPIRY", flag: "s3-presign-expiry", value_name: "SECONDS",
        default: None, parse: parse::string,
    };
}

/// Variables the standard AWS credential chain reads (not settings of
/// ours, see `docs/s3.md`); the tests clear them for the servers they
/// start.
pub const CREDENTIAL_VARS: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_EC2_METADATA_DISABLED",
];

/// The s3 backend as configured; `S3_BUCKET` is required.
pub fn storage_setting(settings: &ServeSettings) -> Result<StorageSetting, ConfigError> {
    Ok(StorageSetting::S3(s3_settings(settings)?))
}

/// Validated settings of the s3 backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Settings {
    /// The bucket (`S3_BUCKET`).
    pub bucket: String,
    /// Its region (`AWS_REGION`).
    pub region: String,
    /// An S3-compatible server to use instead of AWS, `scheme://host[:port]`
    /// (`AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`).
    pub endpoint: Option<Url>,
    /// How the bucket is named in URLs.
    pub addressing: Addressing,
    /// Whether redirects carry a signature (`S3_USE_PRESIGNED_URLS`);
    /// without, they go to the plain object URL and the bucket must be
    /// publicly readable.
    pub presigned_urls: bool,
    /// Lifetime of presigned redirect URLs.
    pub presign_expiry: Duration,
}

impl S3Settings {
    /// Settings for `bucket` at `endpoint` (path-style, presigned
    /// redirects valid five minutes), as tests and tools use them.
    pub fn for_endpoint(bucket: &str, region: &str, endpoint: Url) -> Self {
        Self {
            bucket: bucket.to_owned(),
            region: region.to_owned(),
            endpoint: Some(endpoint),
            addressing: Addressing::Path,
            presigned_urls: true,
            presign_expiry: Duration::from_secs(DEFAULT_PRESIGN_EXPIRY_SECS),
        }
    }

    /// A string naming this bucket and no other, for the local manifest
    /// tier: the endpoint (or AWS's regional one) and the bucket.
    pub fn identity(&self) -> String {
        match &self.endpoint {
            Some(endpoint) => format!(
                "s3:{}/{}",
                endpoint.as_str().trim_end_matches('/'),
                self.bucket
            ),
            None => format!("s3:s3.{}.amazonaws.com/{}", self.region, self.bucket),
        }
    }
}

/// Treat unset and blank values alike, as the other settings do.
fn present(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// Validate the values of the settings above; `S3_BUCKET` is required.
fn s3_settings(settings: &ServeSettings) -> Result<S3Settings, ConfigError> {
    let value = |setting| Ok::<_, ConfigError>(present(settings.get(setting)?));
    let bucket = value(&BUCKET)?.ok_or(ConfigError::Missing {
        var: "S3_BUCKET",
        because: "NIXERY_STORAGE_BACKEND=s3",
    })?;
    if !valid_bucket(&bucket) {
        return Err(ConfigError::Invalid {
            var: "S3_BUCKET",
            value: bucket,
            expected: "expected a bucket name: 3 to 63 lowercase letters, digits, dots and hyphens",
        });
    }
    let region = value(&REGION)?.unwrap_or_else(|| DEFAULT_REGION.to_owned());
    if !region
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(ConfigError::Invalid {
            var: "AWS_REGION",
            value: region,
            expected: "expected a region name such as eu-west-1",
        });
    }
    let endpoint = match (value(&ENDPOINT_S3)?, value(&ENDPOINT)?) {
        (Some(value), _) => Some(parse_endpoint("AWS_ENDPOINT_URL_S3", value)?),
        (None, Some(value)) => Some(parse_endpoint("AWS_ENDPOINT_URL", value)?),
        (None, None) => None,
    };
    let addressing = match value(&ADDRESSING)?.as_deref() {
        None | Some("auto") => match endpoint {
            Some(_) => Addressing::Path,
            // Virtual-hosted names with dots break AWS's TLS wildcard
            // certificate, so such buckets keep path-style URLs.
            None if bucket.contains('.') => Addressing::Path,
            None => Addressing::VirtualHosted,
        },
        Some("path") => Addressing::Path,
        Some("virtual") => Addressing::VirtualHosted,
        Some(other) => {
            return Err(ConfigError::Invalid {
                var: "NIXERY_S3_ADDRESSING",
                value: other.to_owned(),
                expected: "expected path, virtual or auto",
            });
        }
    };
    let presigned_urls = match value(&PRESIGNED_URLS)? {
        None => true,
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => {
                return Err(ConfigError::Invalid {
                    var: "S3_USE_PRESIGNED_URLS",
                    value: v,
                    expected: "expected true or false",
                });
            }
        },
    };
    let presign_expiry = match value(&PRESIGN_EXPIRY)? {
        None => Duration::from_secs(DEFAULT_PRESIGN_EXPIRY_SECS),
        Some(v) => match v.parse::<u64>() {
            Ok(secs) if (1..=MAX_PRESIGN_EXPIRY_SECS).contains(&secs) => Duration::from_secs(secs),
            _ => {
                return Err(ConfigError::Invalid {
                    var: "NIXERY_S3_PRESIGN_EXPIRY",
                    value: v,
                    expected: "expected a whole number of seconds from 1 to 604800 (7 days)",
                });
            }
        },
    };
    Ok(S3Settings {
        bucket,
        region,
        endpoint,
        addressing,
        presigned_urls,
        presign_expiry,
    })
}

/// S3's bucket naming rules, enough to keep a name safe in a host name
/// and a path: 3 to 63 of `[a-z0-9.-]`, starting and ending with a letter
/// or digit.
fn valid_bucket(name: &str) -> bool {
    let edges_ok = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && edges_ok(name.as_bytes().first())
        && edges_ok(name.as_bytes().last())
}

/// An endpoint: an `http` or `https` URL naming only a scheme, host and
/// port (a bare `host:port` is taken as `https://host:port`).
fn parse_endpoint(var: &'static str, value: String) -> Result<Url, ConfigError> {
    let invalid = |value: String| ConfigError::Invalid {
        var,
        value,
        expected: "expected an http(s) URL naming only a scheme, host and port",
    };
    let with_scheme = if value.contains("://") {
        value.clone()
    } else {
        format!("https://{value}")
    };
    let Ok(url) = Url::parse(with_scheme.trim_end_matches('/')) else {
        return Err(invalid(value));
    };
    let plain = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some()
        && url.path() == "/"
        && url.query().is_none()
        && url.username().is_empty()
        && url.password().is_none();
    if plain { Ok(url) } else { Err(invalid(value)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(bucket: &str) -> ServeSettings {
        ServeSettings::default().with(&BUCKET, bucket)
    }

    fn validated(settings: ServeSettings) -> Result<S3Settings, ConfigError> {
        s3_settings(&settings)
    }

    #[test]
    fn upstream_defaults_apply_to_a_bare_bucket() {
        let settings = validated(args("layers")).unwrap();
        assert_eq!(settings.region, "us-east-1");
        assert_eq!(settings.endpoint, None);
        assert_eq!(settings.addressing, Addressing::VirtualHosted);
        assert!(settings.presigned_urls);
        assert_eq!(settings.presign_expiry, Duration::from_secs(300));
        assert_eq!(settings.identity(), "s3:s3.us-east-1.amazonaws.com/layers");
    }

    #[test]
    fn a_missing_bucket_names_s3_bucket() {
        let err = validated(ServeSettings::default()).unwrap_err();
        assert!(
            err.to_string().starts_with("S3_BUCKET must be set"),
            "{err}"
        );
        let err = validated(args("Not_A_Bucket")).unwrap_err();
        assert!(err.to_string().starts_with("S3_BUCKET="), "{err}");
    }

    #[test]
    fn the_s3_endpoint_wins_and_selects_path_style() {
        let settings = validated(
            args("layers")
                .with(&ENDPOINT_S3, "http://127.0.0.1:9000/")
                .with(&ENDPOINT, "http://other:1"),
        )
        .unwrap();
        assert_eq!(
            settings.endpoint.as_ref().map(Url::as_str),
            Some("http://127.0.0.1:9000/")
        );
        assert_eq!(settings.addressing, Addressing::Path);
        let settings = validated(
            args("layers")
                .with(&ENDPOINT, "minio.local:9000")
                .with(&ADDRESSING, "virtual"),
        )
        .unwrap();
        assert_eq!(
            settings.endpoint.as_ref().map(Url::as_str),
            Some("https://minio.local:9000/")
        );
        assert_eq!(settings.addressing, Addressing::VirtualHosted);
    }

    #[test]
    fn dotted_buckets_on_aws_keep_path_style_unless_forced() {
        let settings = validated(args("my.layers")).unwrap();
        assert_eq!(settings.addressing, Addressing::Path);
        let forced = args("my.layers").with(&ADDRESSING, "virtual");
        assert_eq!(
            validated(forced).unwrap().addressing,
            Addressing::VirtualHosted
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        let cases = [
            (
                args("b12").with(&ENDPOINT, "ftp://h:1"),
                "AWS_ENDPOINT_URL=",
            ),
            (
                args("b12").with(&ENDPOINT_S3, "http://h:1/prefix"),
                "AWS_ENDPOINT_URL_S3=",
            ),
            (
                args("b12").with(&ADDRESSING, "sideways"),
                "NIXERY_S3_ADDRESSING=",
            ),
            (
                args("b12").with(&PRESIGNED_URLS, "maybe"),
                "S3_USE_PRESIGNED_URLS=",
            ),
            (
                args("b12").with(&PRESIGN_EXPIRY, "604801"),
                "NIXERY_S3_PRESIGN_EXPIRY=",
            ),
            (args("b12").with(&REGION, "eu/west"), "AWS_REGION="),
        ];
        for (settings, var) in cases {
            let err = validated(settings).unwrap_err();
            assert!(err.to_string().starts_with(var), "{err}");
        }
    }

    #[test]
    fn presigning_can_be_turned_off_as_upstream() {
        let settings = validated(
            args("b12")
                .with(&PRESIGNED_URLS, "false")
                .with(&PRESIGN_EXPIRY, "60"),
        )
        .unwrap();
        assert!(!settings.presigned_urls);
        assert_eq!(settings.presign_expiry, Duration::from_secs(60));
    }
}
