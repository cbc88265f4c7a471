//! The S3 test server checks what it is sent: s3s-fs refuses a call or a
//! presigned URL whose signature is wrong, and a presigned URL used with
//! another method than the one it was signed for. Without this, a test
//! that pulls through redirects to it could pass with signatures that a
//! real S3 refuses (moto, the other test server, checks none).

use bytes::Bytes;
use nixery::storage::s3::{S3Options, S3Settings, S3Storage, StaticKey};
use nixery::storage::{ServeRequest, Served, Storage, StorageKey};
use support::s3::{BUCKET, S3Server, S3sFs, body_of};

/// A layer stored through a correctly signed upload; its key.
async fn stored_layer(storage: &S3Storage) -> StorageKey {
    let persisted = storage
        .persist_blob(
            support::media::DOCKER_LAYER,
            body_of(b"signed bytes".to_vec(), 5),
        )
        .await
        .expect("a correctly signed upload is accepted");
    StorageKey::layer(&persisted.sha256)
}

#[tokio::test]
async fn a_call_signed_with_a_wrong_secret_is_refused() {
    let s3 = S3sFs::start().await;
    // The right key works...
    s3.storage().await;
    // ...the same id with another secret does not.
    let wrong = S3Settings {
        static_key: Some(StaticKey {
            id: s3.key().id,
            secret: "not-the-secret".to_owned(),
        }),
        ..s3.settings_at(&s3.origin())
    };
    let refused = S3Storage::connect_with(wrong, S3Options::default())
        .await
        .expect_err("a wrong signature must be refused");
    let message = refused.to_string();
    assert!(
        message.contains("SignatureDoesNotMatch") || message.contains("403"),
        "{message}"
    );
    // And an unsigned call is refused too.
    let unsigned = reqwest::get(format!("{}/{BUCKET}", s3.origin()))
        .await
        .expect("answer");
    assert_eq!(unsigned.status(), 403);
}

#[tokio::test]
async fn a_presigned_url_answers_only_its_method_and_its_exact_signature() {
    let s3 = S3sFs::start().await;
    let storage = s3.storage().await;
    let key = stored_layer(&storage).await;
    let Served::Redirect { location } = storage
        .serve(&key, &ServeRequest::default())
        .await
        .expect("serve")
    else {
        panic!("the s3 backend redirects a GET");
    };
    let client = reqwest::Client::new();
    let got = client.get(&location).send().await.expect("GET");
    assert_eq!(got.status(), 200);
    assert_eq!(
        got.bytes().await.unwrap(),
        Bytes::from_static(b"signed bytes")
    );

    // One hex digit of the signature changed.
    let at = location.find("X-Amz-Signature=").expect("a SigV4 URL") + "X-Amz-Signature=".len();
    let mut tampered = location.clone().into_bytes();
    tampered[at] = if tampered[at] == b'0' { b'1' } else { b'0' };
    let tampered = String::from_utf8(tampered).unwrap();
    let refused = client.get(&tampered).send().await.expect("GET");
    assert_eq!(
        refused.status(),
        403,
        "a tampered signature must be refused"
    );

    // SigV4 signs the method: a HEAD of a URL signed for GET is refused.
    let head = client.head(&location).send().await.expect("HEAD");
    assert_eq!(
        head.status(),
        403,
        "the server must check the signed method"
    );
}
