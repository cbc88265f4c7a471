//! The package popularity map and loading it at start-up.
//!
//! `NIX_POPULARITY_URL` names a JSON object mapping package names (store
//! paths without their `/nix/store/<hash>-` prefix) to how often the package
//! is referenced in the package set, as `nixery popcount` writes it. It may
//! be an `http://` or `https://` URL (downloaded once, with a timeout), a
//! `file://` URL or a plain path. Without it every package has popularity 1,
//! except the two that the layering treats specially.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Duration,
};

use reqwest::Url;
use serde::{Deserialize, Serialize};

/// How long downloading the popularity map may take, start to finish.
pub const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// Package name -> reference count. Lookups only: the layering never
/// iterates over it, so hash-map order cannot leak into results.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Popularity(HashMap<String, u64>);

impl Popularity {
    /// Parse a JSON object of package name -> non-negative integer count.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The count recorded for the package `name`, if any.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.0.get(name).copied()
    }

    /// Number of packages in the map.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the map holds no package.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Hex SHA-256 of the map's entries in name order, each name and count
    /// length-prefixed: equal maps, and only equal maps, share it.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut entries: Vec<(&String, &u64)> = self.0.iter().collect();
        entries.sort_unstable();
        let mut hasher = Sha256::new();
        for (name, count) in entries {
            hasher.update((name.len() as u64).to_be_bytes());
            hasher.update(name.as_bytes());
            hasher.update(count.to_be_bytes());
        }
        hex::encode(hasher.finalize())
    }
}

impl FromIterator<(String, u64)> for Popularity {
    fn from_iter<I: IntoIterator<Item = (String, u64)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

/// Why the popularity map could not be loaded. Each message names the
/// source so that a start-up failure is self-explanatory.
#[derive(Debug, thiserror::Error)]
pub enum PopularityError {
    /// The source looks like a URL, but not one we can load.
    #[error("unsupported popularity source {location:?}: {reason}")]
    UnsupportedSource {
        /// The configured source.
        location: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The file could not be read.
    #[error("cannot read popularity file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The request failed (connection, timeout, body).
    #[error("cannot download popularity data from {url}: {source}")]
    Download {
        /// The URL.
        url: String,
        /// The HTTP client's error.
        source: reqwest::Error,
    },
    /// The server answered with a non-success status.
    #[error("cannot download popularity data from {url}: HTTP status {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status received.
        status: reqwest::StatusCode,
    },
    /// The data is not a JSON object of name -> non-negative integer.
    #[error("malformed popularity data from {location}: {source}")]
    Malformed {
        /// Where the data came from.
        location: String,
        /// The JSON error (with line and column).
        source: serde_json::Error,
    },
}

/// Load the popularity map from `source` (see the module documentation),
/// downloading with [`DOWNLOAD_TIMEOUT`]. `None` or an empty string gives an
/// empty map.
pub async fn load(source: Option<&str>) -> Result<Popularity, PopularityError> {
    load_with_timeout(source, DOWNLOAD_TIMEOUT).await
}

/// [`load`] with an explicit download timeout.
pub async fn load_with_timeout(
    source: Option<&str>,
    timeout: Duration,
) -> Result<Popularity, PopularityError> {
    let Some(location) = source.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(Popularity::default());
    };
    let bytes = match parse_source(location)? {
        Source::Http(url) => download(url, timeout).await?,
        Source::File(path) => read(&path).await?,
    };
    Popularity::from_json(&bytes).map_err(|source| PopularityError::Malformed {
        location: location.to_owned(),
        source,
    })
}

/// Read a popularity map from a local file (for the `nixery layers` CLI).
pub fn read_file(path: &Path) -> Result<Popularity, PopularityError> {
    let bytes = std::fs::read(path).map_err(|source| PopularityError::Read {
        path: path.to_owned(),
        source,
    })?;
    Popularity::from_json(&bytes).map_err(|source| PopularityError::Malformed {
        location: path.display().to_string(),
        source,
    })
}

enum Source {
    Http(Url),
    File(PathBuf),
}

fn parse_source(location: &str) -> Result<Source, PopularityError> {
    let unsupported = |reason| PopularityError::UnsupportedSource {
        location: location.to_owned(),
        reason,
    };
    let Some((scheme, _)) = location.split_once("://") else {
        return Ok(Source::File(PathBuf::from(location)));
    };
    let url = Url::parse(location).map_err(|_| unsupported("not a valid URL"))?;
    match scheme.to_ascii_lowercase().as_str() {
        "http" | "https" => Ok(Source::Http(url)),
        "file" => url
            .to_file_path()
            .map(Source::File)
            .map_err(|()| unsupported("a file:// URL must name an absolute local path")),
        _ => Err(unsupported(
            "only http://, https:// and file:// URLs are supported",
        )),
    }
}

async fn read(path: &Path) -> Result<Vec<u8>, PopularityError> {
    tokio::fs::read(path)
        .await
        .map_err(|source| PopularityError::Read {
            path: path.to_owned(),
            source,
        })
}

async fn download(url: Url, timeout: Duration) -> Result<Vec<u8>, PopularityError> {
    let failed = |source| PopularityError::Download {
        url: url.to_string(),
        source,
    };
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(failed)?;
    let response = client.get(url.clone()).send().await.map_err(failed)?;
    let status = response.status();
    if !status.is_success() {
        return Err(PopularityError::Status {
            url: url.to_string(),
            status,
        });
    }
    let body = response.bytes().await.map_err(failed)?;
    tracing::info!(url = %url, bytes = body.len(), "downloaded popularity data");
    Ok(body.to_vec())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use axum::{Router, http::StatusCode, routing::get};
    use tokio::net::TcpListener;

    use super::*;

    const MAP: &str = r#"{"glibc-2.40-36": 300, "zlib-1.3.1": 120}"#;

    fn expected() -> Popularity {
        [
            ("glibc-2.40-36".to_owned(), 300),
            ("zlib-1.3.1".to_owned(), 120),
        ]
        .into_iter()
        .collect()
    }

    fn file_with(content: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(content.as_bytes()).unwrap();
        file
    }

    /// Serve `app` on 127.0.0.1; the server task ends with the runtime.
    async fn serve(app: Router) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn unset_source_gives_an_empty_map() {
        assert!(load(None).await.unwrap().is_empty());
        assert!(load(Some("")).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn plain_path_is_read() {
        let file = file_with(MAP);
        let loaded = load(Some(file.path().to_str().unwrap())).await.unwrap();
        assert_eq!(loaded, expected());
    }

    #[tokio::test]
    async fn file_url_is_read() {
        let file = file_with(MAP);
        let url = Url::from_file_path(file.path()).unwrap();
        assert_eq!(load(Some(url.as_str())).await.unwrap(), expected());
    }

    #[tokio::test]
    async fn http_url_is_downloaded() {
        let base = serve(Router::new().route("/popularity.json", get(|| async { MAP }))).await;
        let loaded = load(Some(&format!("{base}/popularity.json")))
            .await
            .unwrap();
        assert_eq!(loaded, expected());
    }

    #[tokio::test]
    async fn http_error_status_is_an_error_naming_the_url() {
        let base = serve(Router::new()).await;
        let url = format!("{base}/missing.json");
        let err = load(Some(&url)).await.unwrap_err();
        assert!(
            matches!(&err, PopularityError::Status { status, .. } if *status == StatusCode::NOT_FOUND),
            "{err}"
        );
        assert!(err.to_string().contains(&url), "{err}");
    }

    #[tokio::test]
    async fn slow_server_hits_the_timeout() {
        let slow = get(|| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            MAP
        });
        let base = serve(Router::new().route("/slow", slow)).await;
        let err = load_with_timeout(Some(&format!("{base}/slow")), Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, PopularityError::Download { source, .. } if source.is_timeout()),
            "{err}"
        );
    }

    #[tokio::test]
    async fn refused_connection_is_an_error() {
        // Bind then drop to get a port with nothing listening.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = load(Some(&format!("http://127.0.0.1:{port}/p.json")))
            .await
            .unwrap_err();
        assert!(matches!(err, PopularityError::Download { .. }), "{err}");
    }

    #[tokio::test]
    async fn malformed_json_is_an_error_naming_the_source() {
        for bad in [
            "{not json",
            r#"["a", "b"]"#,
            r#"{"a": -1}"#,
            r#"{"a": 1.5}"#,
        ] {
            let file = file_with(bad);
            let location = file.path().to_str().unwrap();
            let err = load(Some(location)).await.unwrap_err();
            assert!(
                matches!(err, PopularityError::Malformed { .. }),
                "{bad}: {err}"
            );
            assert!(err.to_string().contains(location), "{err}");
        }
    }

    #[tokio::test]
    async fn malformed_download_is_an_error() {
        let base = serve(Router::new().route("/p", get(|| async { "<html>" }))).await;
        let err = load(Some(&format!("{base}/p"))).await.unwrap_err();
        assert!(matches!(err, PopularityError::Malformed { .. }), "{err}");
    }

    #[tokio::test]
    async fn missing_file_is_an_error_naming_the_path() {
        let err = load(Some("/nonexistent/popularity.json"))
            .await
            .unwrap_err();
        assert!(matches!(err, PopularityError::Read { .. }), "{err}");
        assert!(
            err.to_string().contains("/nonexistent/popularity.json"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn unsupported_urls_are_rejected() {
        for bad in [
            "ftp://example.org/p.json",
            "file://otherhost/p.json",
            "http://",
        ] {
            let err = load(Some(bad)).await.unwrap_err();
            assert!(
                matches!(err, PopularityError::UnsupportedSource { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn read_file_parses_a_map() {
        let file = file_with(MAP);
        assert_eq!(read_file(file.path()).unwrap(), expected());
    }
}
