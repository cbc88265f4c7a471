//! Settings of the filesystem backend (see [`crate::config`] for the table).

use std::path::PathBuf;

use crate::settings_table::{ServeSettings, parse};
use crate::storage::settings::StorageSetting;

/// Default `STORAGE_PATH`.
pub const DEFAULT_STORAGE_PATH: &str = "/var/lib/nixery";

crate::settings! {
    /// Root directory of the filesystem backend [default: /var/lib/nixery].
    STORAGE_PATH: Option<PathBuf> = {
        env: "STORAGE_PATH", flag: "storage-path", value_name: "DIR",
        default: None, parse: parse::path,
    };
}

/// The filesystem backend as configured.
pub fn storage_setting(
    settings: &ServeSettings,
) -> Result<StorageSetting, crate::settings_table::ConfigError> {
    Ok(StorageSetting::Filesystem {
        path: settings
            .get(&STORAGE_PATH)?
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STORAGE_PATH)),
    })
}
