//! Settings of the Google Cloud Storage backend (see [`crate::config`] for
//! the table).

use std::path::PathBuf;

use crate::settings_table::{ConfigError, ServeSettings, parse};
use crate::storage::settings::StorageSetting;

crate::settings! {
    /// Bucket of the gcs backend.
    BUCKET: Option<String> = {
        env: "GCS_BUCKET", flag: "gcs-bucket", value_name: "BUCKET",
        default: None, parse: parse::string,
    };
    /// Service account key file of the gcs backend (enables signed URLs).
    CREDENTIALS: Option<PathBuf> = {
        env: "GOOGLE_APPLICATION_CREDENTIALS", flag: "gcs-credentials", value_name: "FILE",
        default: None, parse: parse::path,
    };
    /// Host:port of a GCS emulator to use instead of Google Cloud Storage.
    EMULATOR_HOST: Option<String> = {
        env: "STORAGE_EMULATOR_HOST", flag: "storage-emulator-host", value_name: "HOST",
        default: None, parse: parse::string,
    };
}

/// The gcs backend as configured; `GCS_BUCKET` is required.
pub fn storage_setting(settings: &ServeSettings) -> Result<StorageSetting, ConfigError> {
    Ok(StorageSetting::Gcs {
        bucket: settings.get(&BUCKET)?.ok_or(ConfigError::Missing {
            var: BUCKET.info.env,
            because: "NIXERY_STORAGE_BACKEND=gcs",
        })?,
        credentials: settings.get(&CREDENTIALS)?,
        emulator_host: settings.get(&EMULATOR_HOST)?,
    })
}
