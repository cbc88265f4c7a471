//! Settings of the s3 backend, all in one place: their entries in the
//! settings table (see [`crate::config`]) and their validation into
//! [`S3Settings`].
//!
//! Names follow upstream Nixery's S3 backend (`S3_BUCKET`, `S3_ENDPOINT`,
//! `S3_ACCESS_KEY` and `S3_SECRET_KEY`, `S3_LINK_EXPIRATION`, `AWS_REGION`
//! defaulting to `us-east-1`, `S3_USE_PRESIGNED_URLS`), so that a
//! deployment of upstream's moves over unchanged, and the AWS SDKs'
//! shared conventions (`AWS_ENDPOINT_URL_S3`, then `AWS_ENDPOINT_URL`).
//! Where an upstream name and another one name the same thing, upstream's
//! wins (one rule, stated in `docs/operating.md`). Without `S3_ACCESS_KEY`
//! the standard AWS chain finds the credentials (environment, shared files
//! and profiles, web identity, container and instance metadata), see
//! `docs/s3.md`. Settings this project adds carry the `NIXERY_S3_` prefix.

use std::time::Duration;

use reqwest::Url;

use crate::settings_table::{ConfigError, ServeSettings, parse};
use crate::storage::settings::StorageSetting;

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
    /// Endpoint of an S3-compatible server, as upstream Nixery names it
    /// (wins over AWS_ENDPOINT_URL_S3 and AWS_ENDPOINT_URL).
    ENDPOINT_UPSTREAM: Option<String> = {
        env: "S3_ENDPOINT", flag: "s3-endpoint", value_name: "URL",
        default: None, parse: parse::string,
    };
    /// Endpoint of an S3-compatible server, for S3 only (wins over
    /// AWS_ENDPOINT_URL).
    ENDPOINT_S3: Option<String> = {
        env: "AWS_ENDPOINT_URL_S3", flag: "aws-endpoint-s3", value_name: "URL",
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
    /// Access key id of static credentials, with S3_SECRET_KEY [default:
    /// the standard AWS credential chain].
    ACCESS_KEY: Option<String> = {
        env: "S3_ACCESS_KEY", flag: "s3-access-key", value_name: "ID",
        default: None, parse: parse::secret,
    };
    /// Secret access key of static credentials, with S3_ACCESS_KEY (prefer
    /// the environment: a flag is visible to other local users).
    SECRET_KEY: Option<String> = {
        env: "S3_SECRET_KEY", flag: "s3-secret-key", value_name: "SECRET",
        default: None, parse: parse::secret,
    };
    /// Redirect blob requests to presigned URLs (true/false) [default: true].
    PRESIGNED_URLS: bool = {
        env: "S3_USE_PRESIGNED_URLS", flag: "s3-use-presigned-urls", value_name: "BOOL",
        default: true, parse: parse::boolean,
    };
    /// How long a presigned redirect URL stays valid, as a Go duration
    /// (5m, 90s, 1h30m; wins over NIXERY_S3_PRESIGN_EXPIRY) [default: 5m].
    LINK_EXPIRATION: Option<Duration> = {
        env: "S3_LINK_EXPIRATION", flag: "s3-link-expiration", value_name: "DURATION",
        default: None, parse: |raw| parse::go_duration(raw).map(|d| d.map(Some)),
    };
    /// Seconds a presigned redirect URL stays valid [default: 300].
    PRESIGN_EXPIRY: Option<Duration> = {
        env: "NIXERY_S3_PRESIGN_EXPIRY", flag: "s3-presign-expiry", value_name: "SECONDS",
        default: None, parse: |raw| parse::seconds(raw).map(|d| d.map(Some)),
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
    /// Lifetime of presigned redirect URLs (`S3_LINK_EXPIRATION`, else
    /// `NIXERY_S3_PRESIGN_EXPIRY`).
    pub presign_expiry: Duration,
    /// Static credentials (`S3_ACCESS_KEY`, `S3_SECRET_KEY`); `None` asks
    /// the standard AWS chain.
    pub static_key: Option<StaticKey>,
}

/// An access key id and its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct StaticKey {
    /// The access key id.
    pub id: String,
    /// The secret access key.
    pub secret: String,
}

impl std::fmt::Debug for StaticKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticKey")
            .field("id", &self.id)
            .field("secret", &"***")
            .finish()
    }
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
            static_key: None,
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
    let mut endpoint = None;
    for setting in [&ENDPOINT_UPSTREAM, &ENDPOINT_S3, &ENDPOINT] {
        if let Some(url) = value(setting)? {
            endpoint = Some(parse_endpoint(setting.info.env, url)?);
            break;
        }
    }
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
    let presigned_urls = settings.get(&PRESIGNED_URLS)?;
    let presign_expiry = presign_expiry(settings)?;
    let static_key = match (value(&ACCESS_KEY)?, value(&SECRET_KEY)?) {
        (Some(id), Some(secret)) => Some(StaticKey { id, secret }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConfigError::Missing {
                var: "S3_SECRET_KEY",
                because: "S3_ACCESS_KEY is set",
            });
        }
        (None, Some(_)) => {
            return Err(ConfigError::Missing {
                var: "S3_ACCESS_KEY",
                because: "S3_SECRET_KEY is set",
            });
        }
    };
    Ok(S3Settings {
        bucket,
        region,
        endpoint,
        addressing,
        presigned_urls,
        presign_expiry,
        static_key,
    })
}

/// The lifetime of presigned URLs: `S3_LINK_EXPIRATION`, else
/// `NIXERY_S3_PRESIGN_EXPIRY`, else five minutes; at most what SigV4
/// allows (seven days).
fn presign_expiry(settings: &ServeSettings) -> Result<Duration, ConfigError> {
    for setting in [LINK_EXPIRATION, PRESIGN_EXPIRY] {
        let Some(expiry) = settings.get(&setting)? else {
            continue;
        };
        if expiry > Duration::from_secs(MAX_PRESIGN_EXPIRY_SECS) {
            return Err(ConfigError::Invalid {
                var: setting.info.env,
                value: humantime::format_duration(expiry).to_string(),
                expected: "expected at most 7 days, the longest a presigned URL may last",
            });
        }
        return Ok(expiry);
    }
    Ok(Duration::from_secs(DEFAULT_PRESIGN_EXPIRY_SECS))
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
            (
                args("b12").with(&LINK_EXPIRATION, "169h"),
                "S3_LINK_EXPIRATION=",
            ),
            (
                args("b12").with(&LINK_EXPIRATION, "5 minutes"),
                "S3_LINK_EXPIRATION=",
            ),
            (
                args("b12").with(&LINK_EXPIRATION, "0s"),
                "S3_LINK_EXPIRATION=",
            ),
            (
                args("b12").with(&ENDPOINT_UPSTREAM, "h:1/x"),
                "S3_ENDPOINT=",
            ),
            (args("b12").with(&REGION, "eu/west"), "AWS_REGION="),
        ];
        for (settings, var) in cases {
            let err = validated(settings).unwrap_err();
            assert!(err.to_string().starts_with(var), "{err}");
        }
    }

    #[test]
    fn upstream_names_work_and_win() {
        let settings = validated(
            args("b12")
                .with(&ENDPOINT_UPSTREAM, "http://127.0.0.1:9000")
                .with(&ENDPOINT_S3, "http://aws-s3:1")
                .with(&ENDPOINT, "http://aws:1")
                .with(&ACCESS_KEY, "id")
                .with(&SECRET_KEY, "hush-hush")
                .with(&LINK_EXPIRATION, "1h30m")
                .with(&PRESIGN_EXPIRY, "60"),
        )
        .unwrap();
        assert_eq!(
            settings.endpoint.as_ref().map(Url::as_str),
            Some("http://127.0.0.1:9000/")
        );
        assert_eq!(settings.addressing, Addressing::Path);
        assert_eq!(
            settings.static_key,
            Some(StaticKey {
                id: "id".into(),
                secret: "hush-hush".into()
            })
        );
        assert_eq!(settings.presign_expiry, Duration::from_secs(5400));
        assert!(!format!("{settings:?}").contains("hush-hush"));
        for (go, secs) in [("5m", 300), ("90s", 90), ("1.5h", 5400), ("1h30m0s", 5400)] {
            let settings = validated(args("b12").with(&LINK_EXPIRATION, go)).unwrap();
            assert_eq!(settings.presign_expiry, Duration::from_secs(secs), "{go}");
        }
    }

    #[test]
    fn one_half_of_static_credentials_is_refused_without_echoing_it() {
        let err = validated(args("b12").with(&ACCESS_KEY, "id")).unwrap_err();
        assert!(
            err.to_string().starts_with("S3_SECRET_KEY must be set"),
            "{err}"
        );
        let err = validated(args("b12").with(&SECRET_KEY, "hush-hush")).unwrap_err();
        assert!(
            err.to_string().starts_with("S3_ACCESS_KEY must be set"),
            "{err}"
        );
        assert!(!err.to_string().contains("hush-hush"), "{err}");
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
