//! Fetching narinfos from a binary cache, through an on-disk cache.
//!
//! Every answer that is a fact about the binary cache is kept on disk: the
//! body of a `200` (even one that later fails to parse, so that a rerun
//! reports it again without asking) and a `404` (as an empty `.missing`
//! marker; store paths of a channel do not appear in a cache later).
//! Transport errors and other statuses are transient: they are reported
//! and not cached, so a rerun retries exactly those paths.
//!
//! Entries are written to a temporary file and renamed into place, so an
//! interrupted run never leaves a half-written narinfo behind.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::store_path::StorePath;

/// What the binary cache says about one store path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The narinfo body (not yet parsed).
    Found(Bytes),
    /// The cache answered 404: it does not have this path.
    Missing,
}

/// An answer and whether it came from the on-disk cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The answer itself.
    pub answer: Answer,
    /// True when no request was made.
    pub from_disk: bool,
}

/// Why a narinfo could not be obtained (transient; not cached).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The request failed before a status arrived, or the body broke off.
    #[error("request for {url} failed")]
    Transport {
        /// The narinfo URL.
        url: String,
        /// The underlying client error.
        #[source]
        source: reqwest::Error,
    },
    /// The cache answered with a status other than 200 or 404.
    #[error("{url} answered {status}")]
    Status {
        /// The narinfo URL.
        url: String,
        /// The HTTP status.
        status: reqwest::StatusCode,
    },
    /// The on-disk cache could not be read or written.
    #[error("on-disk narinfo cache at {path}")]
    Disk {
        /// The file or directory involved.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// Fetches narinfos from one binary cache, keeping answers on disk.
#[derive(Debug, Clone)]
pub struct NarinfoFetcher {
    client: reqwest::Client,
    base_url: String,
    dir: PathBuf,
}

impl NarinfoFetcher {
    /// A fetcher for the binary cache at `cache_url`, keeping answers in a
    /// subdirectory of `cache_root` named after the URL (different caches
    /// never share entries). Creates the directory.
    pub fn new(
        client: reqwest::Client,
        cache_url: &str,
        cache_root: &Path,
    ) -> Result<Self, FetchError> {
        let base_url = cache_url.trim_end_matches('/').to_owned();
        let digest = Sha256::digest(base_url.as_bytes());
        let dir = cache_root.join(hex::encode(&digest[..10]));
        let disk = |source| FetchError::Disk {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(disk)?;
        // A note for whoever looks inside the cache directory.
        std::fs::write(dir.join("cache-url"), format!("{base_url}\n")).map_err(disk)?;
        Ok(Self {
            client,
            base_url,
            dir,
        })
    }

    /// The directory holding this binary cache's entries.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The answer for `path`, from disk if known, else from the cache.
    pub async fn fetch(&self, path: &StorePath) -> Result<Fetched, FetchError> {
        // The hash is validated base-32, so these names stay inside `dir`.
        let found = self.dir.join(format!("{}.narinfo", path.hash()));
        let missing = self.dir.join(format!("{}.missing", path.hash()));
        if let Some(body) = read_if_present(&found).await? {
            return Ok(Fetched {
                answer: Answer::Found(body.into()),
                from_disk: true,
            });
        }
        if read_if_present(&missing).await?.is_some() {
            return Ok(Fetched {
                answer: Answer::Missing,
                from_disk: true,
            });
        }
        let url = format!("{}/{}.narinfo", self.base_url, path.hash());
        let transport = |source| FetchError::Transport {
            url: url.clone(),
            source,
        };
        let response = self.client.get(&url).send().await.map_err(transport)?;
        let answer = match response.status() {
            reqwest::StatusCode::OK => Answer::Found(response.bytes().await.map_err(transport)?),
            reqwest::StatusCode::NOT_FOUND => Answer::Missing,
            status => return Err(FetchError::Status { url, status }),
        };
        let (target, body) = match &answer {
            Answer::Found(body) => (found, body.clone()),
            Answer::Missing => (missing, Bytes::new()),
        };
        write_atomically(self.dir.clone(), target, body).await?;
        Ok(Fetched {
            answer,
            from_disk: false,
        })
    }
}

/// The content of `path`, or `None` if it does not exist.
async fn read_if_present(path: &Path) -> Result<Option<Vec<u8>>, FetchError> {
    match tokio::fs::read(path).await {
        Ok(body) => Ok(Some(body)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(FetchError::Disk {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes `body` to `target` via a temporary file in `dir` and a rename.
async fn write_atomically(dir: PathBuf, target: PathBuf, body: Bytes) -> Result<(), FetchError> {
    let path = target.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut file = tempfile::NamedTempFile::new_in(&dir)?;
        file.write_all(&body)?;
        file.persist(&target).map_err(|error| error.error)?;
        Ok(())
    })
    .await
    .unwrap_or_else(|join| Err(io::Error::other(join)));
    result.map_err(|source| FetchError::Disk { path, source })
}
