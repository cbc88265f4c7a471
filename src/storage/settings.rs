//! The storage backend setting and [`StorageSetting`], the chosen backend
//! with its settings; each backend's own settings live beside it
//! (`storage/filesystem/settings.rs`, `storage/gcs/settings.rs`,
//! `storage/s3/settings.rs`). All are declared with the leaf
//! [`crate::settings_table`] and listed by [`crate::config`].

use std::{ffi::OsStr, path::PathBuf};

use super::{filesystem, gcs, s3};
use crate::settings_table::{ConfigError, Parsed, ServeSettings, parse};

/// The storage backends there are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Files under a directory.
    Filesystem,
    /// A Google Cloud Storage bucket.
    Gcs,
    /// An S3 or S3-compatible bucket.
    S3,
}

crate::settings! {
    /// Storage backend: `filesystem`, `gcs` or `s3` [default: filesystem].
    STORAGE_BACKEND: Backend = {
        env: "NIXERY_STORAGE_BACKEND", flag: "storage-backend", value_name: "BACKEND",
        default: Backend::Filesystem, parse: backend,
    };
}

fn backend(raw: &OsStr) -> Parsed<Backend> {
    parse::trimmed(raw, "expected filesystem, gcs or s3", |v| match v {
        "filesystem" => Some(Backend::Filesystem),
        "gcs" => Some(Backend::Gcs),
        "s3" => Some(Backend::S3),
        _ => None,
    })
}

/// Which storage backend to use, with its settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageSetting {
    /// Files under `path` (`STORAGE_PATH`).
    Filesystem { path: PathBuf },
    /// A Google Cloud Storage bucket.
    Gcs {
        bucket: String,
        credentials: Option<PathBuf>,
        emulator_host: Option<String>,
    },
    /// An S3 or S3-compatible bucket.
    S3(s3::S3Settings),
}

impl StorageSetting {
    /// A string naming this storage and no other: the filesystem root
    /// (made absolute) or the bucket and its endpoint. The local manifest
    /// tier is kept per identity.
    pub fn identity(&self) -> String {
        match self {
            StorageSetting::Filesystem { path } => {
                let absolute = path
                    .canonicalize()
                    .or_else(|_| std::path::absolute(path))
                    .unwrap_or_else(|_| path.clone());
                format!("filesystem:{}", absolute.display())
            }
            StorageSetting::Gcs {
                bucket,
                emulator_host,
                ..
            } => format!(
                "gcs:{}/{bucket}",
                emulator_host.as_deref().unwrap_or("storage.googleapis.com")
            ),
            StorageSetting::S3(settings) => settings.identity(),
        }
    }
}

/// The configured backend with its settings.
pub fn storage_setting(settings: &ServeSettings) -> Result<StorageSetting, ConfigError> {
    match settings.get(&STORAGE_BACKEND)? {
        Backend::Filesystem => filesystem::settings::storage_setting(settings),
        Backend::Gcs => gcs::settings::storage_setting(settings),
        Backend::S3 => s3::settings::storage_setting(settings),
    }
}

/// Why the configured storage could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The filesystem backend's directory could not be prepared.
    #[error(transparent)]
    Filesystem(#[from] super::filesystem::InitError),
    /// Preparing the directory did not finish (its task failed).
    #[error("preparing the storage directory failed: {0}")]
    Preparing(#[source] std::io::Error),
    /// The gcs backend could not connect to its bucket.
    #[error(transparent)]
    Gcs(#[from] super::gcs::GcsError),
    /// The s3 backend could not connect to its bucket.
    #[error(transparent)]
    S3(#[from] super::s3::S3Error),
}

/// The storage `setting` names, opened: a directory prepared, or a bucket
/// connected to (and listed once). What `nixery serve` and `nixery gc`
/// both start with.
pub async fn open(
    setting: &StorageSetting,
) -> Result<std::sync::Arc<dyn super::Storage>, OpenError> {
    match setting {
        StorageSetting::Filesystem { path } => {
            // Creating directories and sweeping old uploads is blocking work.
            let path = path.clone();
            let storage = tokio::task::spawn_blocking(move || {
                super::filesystem::FilesystemStorage::new(path)
            })
            .await
            .map_err(|e| OpenError::Preparing(std::io::Error::other(e)))??;
            Ok(std::sync::Arc::new(storage))
        }
        StorageSetting::Gcs {
            bucket,
            credentials,
            emulator_host,
        } => Ok(std::sync::Arc::new(
            super::gcs::GcsStorage::connect(
                bucket.clone(),
                credentials.clone(),
                emulator_host.clone(),
            )
            .await?,
        )),
        StorageSetting::S3(settings) => Ok(std::sync::Arc::new(
            super::s3::S3Storage::connect(settings.clone()).await?,
        )),
    }
}
