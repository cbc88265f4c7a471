//! With a service account key, blobs are served by redirect to a V4 signed
//! URL valid 300 s whose signature verifies against the key's public half
//! (checked with `openssl`, over a string-to-sign rebuilt here from
//! Google's V4 specification), and the emulator serves that URL.

use std::path::{Path, PathBuf};
use std::process::Command;

use nixery::digest::Digest;
use nixery::storage::gcs::GcsStorage;
use nixery::storage::{ServeRequest, Served, Storage, StorageKey};
use sha2::Digest as _;
use support::gcs::{BUCKET, FakeGcs, body_of, pattern, sha256_hex};

const CLIENT_EMAIL: &str = "nixery-test@nixery-test-project.iam.gserviceaccount.com";

/// A fresh RSA key pair in a service account key file, and the public key.
struct ServiceAccount {
    _dir: tempfile::TempDir,
    key_file: PathBuf,
    public_pem: PathBuf,
}

fn openssl(args: &[&str]) -> std::process::Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl must be installed to run the signed URL tests")
}

fn service_account() -> ServiceAccount {
    let dir = tempfile::tempdir().unwrap();
    let private_pem = dir.path().join("private.pem");
    let public_pem = dir.path().join("public.pem");
    let private = private_pem.to_str().unwrap();
    let made = openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        private,
    ]);
    assert!(made.status.success(), "{made:?}");
    let public = openssl(&[
        "pkey",
        "-in",
        private,
        "-pubout",
        "-out",
        public_pem.to_str().unwrap(),
    ]);
    assert!(public.status.success(), "{public:?}");
    let key = serde_json::json!({
        "type": "service_account",
        "project_id": "nixery-test-project",
        "private_key_id": "0123456789abcdef",
        "private_key": std::fs::read_to_string(&private_pem).unwrap(),
        "client_email": CLIENT_EMAIL,
        "client_id": "1234567890",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": "https://oauth2.googleapis.com/token",
    });
    let key_file = dir.path().join("service-account.json");
    std::fs::write(&key_file, key.to_string()).unwrap();
    ServiceAccount {
        _dir: dir,
        key_file,
        public_pem,
    }
}

/// `date -u` in the V4 timestamp format, which sorts chronologically.
fn utc_now() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y%m%dT%H%M%SZ"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// RFC 3986 encoding: everything but unreserved characters is `%XX`.
fn uri_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The V4 string-to-sign for a `GET` of `url` (without its signature),
/// built as Google documents it: the canonical request (verb, path,
/// sorted encoded query, canonical headers, signed headers, payload hash
/// placeholder) is hashed and prefixed by algorithm, timestamp and scope.
/// The canonical `host` header is the host name: the signing library does
/// not include the port, which real Cloud Storage never has.
fn string_to_sign(url: &reqwest::Url) -> String {
    let mut params: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "X-Goog-Signature")
        .map(|(k, v)| (uri_encode(&k), uri_encode(&v)))
        .collect();
    params.sort();
    let query = params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let get = |name: &str| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .unwrap_or_else(|| panic!("signed URL lacks {name}"))
    };
    let canonical_request = format!(
        "GET\n{}\n{}\nhost:{}\n\n{}\nUNSIGNED-PAYLOAD",
        url.path(),
        query,
        url.host_str().unwrap(),
        get("X-Goog-SignedHeaders"),
    );
    let date = get("X-Goog-Date");
    let scope = format!("{}/auto/storage/goog4_request", &date[..8]);
    let hash = hex::encode(sha2::Sha256::digest(canonical_request.as_bytes()));
    format!("GOOG4-RSA-SHA256\n{date}\n{scope}\n{hash}")
}

/// True when `openssl dgst -verify` accepts `signature` over `message`.
fn openssl_verifies(public_pem: &Path, message: &str, signature: &[u8]) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let message_file = dir.path().join("string-to-sign");
    let signature_file = dir.path().join("signature");
    std::fs::write(&message_file, message).unwrap();
    std::fs::write(&signature_file, signature).unwrap();
    let out = openssl(&[
        "dgst",
        "-sha256",
        "-verify",
        public_pem.to_str().unwrap(),
        "-signature",
        signature_file.to_str().unwrap(),
        message_file.to_str().unwrap(),
    ]);
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Verified OK")
}

#[tokio::test]
async fn redirect_is_a_v4_signed_url_valid_300_seconds_that_verifies_and_downloads() {
    let gcs = FakeGcs::start().await;
    let account = service_account();
    let storage = GcsStorage::connect(
        BUCKET.to_owned(),
        Some(account.key_file.clone()),
        Some(gcs.host()),
    )
    .await
    .unwrap();
    let data = pattern(400_000, 21);
    let key = StorageKey::layer(&Digest::of(&data));
    storage
        .persist(
            &key,
            "application/vnd.oci.image.layer.v1.tar+gzip",
            body_of(data.clone(), 65_536),
        )
        .await
        .unwrap();

    let before = utc_now();
    let served = storage.serve(&key, &ServeRequest::default()).await.unwrap();
    let after = utc_now();

    let Served::Redirect { location } = served else {
        panic!("expected a redirect");
    };
    let url = reqwest::Url::parse(&location).unwrap();
    assert_eq!(url.origin().ascii_serialization(), gcs.origin());
    assert_eq!(url.path(), format!("/{BUCKET}/{key}"));
    let param = |name: &str| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .unwrap_or_else(|| panic!("{location} lacks {name}"))
    };
    assert_eq!(param("X-Goog-Algorithm"), "GOOG4-RSA-SHA256");
    assert_eq!(param("X-Goog-Expires"), "300");
    assert_eq!(param("X-Goog-SignedHeaders"), "host");
    let date = param("X-Goog-Date");
    assert!(
        before <= date && date <= after,
        "X-Goog-Date {date} outside [{before}, {after}]"
    );
    assert_eq!(
        param("X-Goog-Credential"),
        format!("{CLIENT_EMAIL}/{}/auto/storage/goog4_request", &date[..8])
    );
    let signature = hex::decode(param("X-Goog-Signature")).expect("hex signature");
    assert_eq!(signature.len(), 256, "RSA-2048 signature length");

    let message = string_to_sign(&url);
    assert!(
        openssl_verifies(&account.public_pem, &message, &signature),
        "signature does not verify over:\n{message}"
    );
    // The check can fail: a URL with a longer lifetime is not covered.
    let tampered = string_to_sign(
        &reqwest::Url::parse(&location.replace("X-Goog-Expires=300", "X-Goog-Expires=3000"))
            .unwrap(),
    );
    assert!(!openssl_verifies(
        &account.public_pem,
        &tampered,
        &signature
    ));

    let response = reqwest::get(url).await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(
        sha256_hex(&response.bytes().await.unwrap()),
        sha256_hex(&data)
    );
}

#[tokio::test]
async fn credentials_that_are_not_a_service_account_key_give_public_urls() {
    let gcs = FakeGcs::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("user.json");
    let user = serde_json::json!({
        "type": "authorized_user",
        "client_id": "id",
        "client_secret": "secret",
        "refresh_token": "token",
    });
    std::fs::write(&key_file, user.to_string()).unwrap();
    let storage = GcsStorage::connect(BUCKET.to_owned(), Some(key_file), Some(gcs.host()))
        .await
        .unwrap();
    let key = StorageKey::layer(&Digest::of(b"user"));
    support::gcs::put(&storage, &key, "application/octet-stream", b"user", 4).await;

    let served = storage.serve(&key, &ServeRequest::default()).await.unwrap();

    let Served::Redirect { location } = served else {
        panic!("expected a redirect");
    };
    assert_eq!(location, format!("{}/{BUCKET}/{key}", gcs.origin()));
}

#[tokio::test]
async fn missing_key_file_fails_connect_with_its_path() {
    let gcs = FakeGcs::start().await;
    let missing = PathBuf::from("/nonexistent/nixery-key.json");

    let error = GcsStorage::connect(BUCKET.to_owned(), Some(missing), Some(gcs.host()))
        .await
        .unwrap_err()
        .to_string();

    assert!(error.contains("/nonexistent/nixery-key.json"), "{error}");
}
