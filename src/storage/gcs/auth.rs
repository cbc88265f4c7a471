//! Who the backend is to Google: bearer tokens for JSON API calls, and a
//! signer for V4 signed URLs when a service account key is configured.
//!
//! Both come from the official `google-cloud-auth` crate. With an emulator
//! no credentials are sent at all.

use std::path::{Path, PathBuf};

use google_cloud_auth::credentials::{
    self, CacheableResource, Credentials, external_account, impersonated, service_account,
    user_account,
};
use google_cloud_auth::signer::Signer;
use http::{Extensions, HeaderMap};

use super::GcsError;

/// How JSON API requests are authorised.
#[derive(Clone, Debug)]
pub(crate) enum Auth {
    /// Emulator: no `Authorization` header.
    Anonymous,
    /// Google: headers (bearer token, quota project) from these credentials.
    Google(Credentials),
}

impl Auth {
    /// The headers to add to one request. Tokens are cached and refreshed by
    /// the credentials themselves.
    pub(crate) async fn headers(&self) -> Result<HeaderMap, String> {
        match self {
            Auth::Anonymous => Ok(HeaderMap::new()),
            Auth::Google(credentials) => match credentials.headers(Extensions::new()).await {
                Ok(CacheableResource::New { data, .. }) => Ok(data),
                // Only returned when the caller passes a cached entity tag,
                // which a fresh `Extensions` never carries.
                Ok(CacheableResource::NotModified) => {
                    Err("credentials returned no headers".to_owned())
                }
                Err(e) => Err(format!("cannot obtain an access token: {e}")),
            },
        }
    }
}

/// What the configured credentials provide.
pub(crate) struct Identity {
    /// Token source for JSON API calls.
    pub(crate) auth: Auth,
    /// Present only when the credentials file is a service account key.
    pub(crate) signer: Option<Signer>,
}

/// Loads credentials: the key file at `path` if given, otherwise
/// Application Default Credentials (gcloud's well-known file or the
/// metadata server). When `emulated`, tokens are never requested, but a
/// service account key still yields a signer for signed URLs.
pub(crate) fn load(path: Option<&Path>, emulated: bool) -> Result<Identity, GcsError> {
    let Some(path) = path else {
        if emulated {
            return Ok(Identity {
                auth: Auth::Anonymous,
                signer: None,
            });
        }
        let credentials =
            credentials::Builder::default()
                .build()
                .map_err(|e| GcsError::Credentials {
                    path: None,
                    message: e.to_string(),
                })?;
        return Ok(Identity {
            auth: Auth::Google(credentials),
            signer: None,
        });
    };

    let key = read_key(path)?;
    let failed = |message: String| GcsError::Credentials {
        path: Some(path.to_path_buf()),
        message,
    };
    let kind = key.get("type").and_then(|t| t.as_str()).unwrap_or_default();
    let signer = if kind == "service_account" {
        let signer = service_account::Builder::new(key.clone())
            .build_signer()
            .map_err(|e| failed(e.to_string()))?;
        Some(signer)
    } else {
        None
    };
    if emulated {
        return Ok(Identity {
            auth: Auth::Anonymous,
            signer,
        });
    }
    let credentials = match kind {
        "service_account" => service_account::Builder::new(key).build(),
        "authorized_user" => user_account::Builder::new(key).build(),
        "impersonated_service_account" => impersonated::Builder::new(key).build(),
        "external_account" => external_account::Builder::new(key).build(),
        other => {
            return Err(failed(format!(
                "unsupported credentials type {other:?} (expected service_account, \
                 authorized_user, impersonated_service_account or external_account)"
            )));
        }
    }
    .map_err(|e| failed(e.to_string()))?;
    Ok(Identity {
        auth: Auth::Google(credentials),
        signer,
    })
}

fn read_key(path: &Path) -> Result<serde_json::Value, GcsError> {
    let failed = |message: String| GcsError::Credentials {
        path: Some(PathBuf::from(path)),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| failed(format!("not a JSON key file: {e}")))
}
