use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use proptest::prelude::*;

use super::*;

const TTL: Duration = Duration::from_secs(300);

/// A fresh P-256 key as PKCS#8 PEM (what `openssl genpkey` writes).
fn p256_pem() -> Vec<u8> {
    use aws_lc_rs::{
        rand::SystemRandom,
        signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair},
    };
    let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .unwrap();
    let body = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    )
    .into_bytes()
}

fn key(service: &str) -> TokenKey {
    TokenKey::from_pem(&p256_pem(), service, TTL).expect("a P-256 key")
}

fn name(name: &str) -> RepositoryName {
    RepositoryName::parse(name).unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `claims` signed by `key` as it signs its own tokens.
fn signed(key: &TokenKey, claims: &Claims) -> String {
    encode(&Header::new(key.algorithm), claims, &key.encoding).unwrap()
}

fn claims(service: &str, exp: u64) -> Claims {
    Claims {
        iss: service.into(),
        sub: "alice".into(),
        aud: service.into(),
        exp,
        nbf: now() - 10,
        iat: now() - 10,
        jti: "x".into(),
        access: vec![],
    }
}

fn refusal(key: &TokenKey, token: &str) -> &'static str {
    match key.verify(token) {
        Err(TokenError::Invalid(reason)) => reason,
        other => panic!("token {token:?} was not refused: {other:?}"),
    }
}

#[test]
fn an_issued_token_verifies_and_names_its_repositories() {
    let key = key("nixery");
    assert_eq!(key.algorithm(), Algorithm::ES256);
    let issued = key
        .issue(Some("alice"), &[name("shell/git"), name("hello")])
        .unwrap();
    assert_eq!(issued.token, issued.access_token);
    assert_eq!(issued.expires_in, 300);
    assert!(issued.issued_at.ends_with('Z'), "{}", issued.issued_at);
    let claims = key.verify(&issued.token).unwrap();
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.aud, "nixery");
    assert_eq!(claims.exp - claims.iat, 300);
    assert_eq!(
        claims.pullable().collect::<Vec<_>>(),
        ["shell/git", "hello"]
    );
}

#[test]
fn expired_tokens_are_refused() {
    let key = key("nixery");
    let token = signed(&key, &claims("nixery", now() - 3600));
    assert_eq!(refusal(&key, &token), "the token has expired");
}

#[test]
fn tokens_for_another_service_are_refused() {
    let key = key("nixery");
    let token = signed(&key, &claims("other", now() + 60));
    assert_eq!(
        refusal(&key, &token),
        "the token was issued for another service"
    );
}

#[test]
fn tokens_signed_by_another_key_are_refused() {
    let ours = key("nixery");
    let theirs = key("nixery");
    let token = theirs.issue(Some("alice"), &[name("hello")]).unwrap().token;
    assert_eq!(
        refusal(&ours, &token),
        "the token is not signed by this server"
    );
}

fn unsigned(header: &str, claims: &Claims, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap())
    )
}

#[test]
fn alg_none_is_refused_with_or_without_a_signature() {
    let key = key("nixery");
    let claims = claims("nixery", now() + 60);
    for header in [
        r#"{"alg":"none","typ":"JWT"}"#,
        r#"{"alg":"None"}"#,
        r#"{"alg":"NONE"}"#,
    ] {
        for signature in ["", "AAAA"] {
            let token = unsigned(header, &claims, signature);
            assert_eq!(refusal(&key, &token), "the token is malformed", "{header}");
        }
    }
}

#[test]
fn hmac_signed_with_the_public_key_is_refused_algorithm_confusion() {
    let key = key("nixery");
    let claims = claims("nixery", now() + 60);
    // The attacker knows the public key (the JWK's coordinates) and signs
    // HS256 with it as the secret.
    let jwk = Jwk::from_encoding_key(&key.encoding, key.algorithm).unwrap();
    let public = serde_json::to_vec(&jwk).unwrap();
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let token = encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(&public),
        )
        .unwrap();
        assert_eq!(
            refusal(&key, &token),
            "the token is not signed with this server's algorithm"
        );
    }
}

#[test]
fn malformed_tokens_are_refused() {
    let key = key("nixery");
    for token in [
        "",
        ".",
        "..",
        "a.b.c",
        "eyJhbGciOiJFUzI1NiJ9",
        "eyJhbGciOiJFUzI1NiJ9..",
        "eyJhbGciOiJFUzI1NiJ9.e30.",
        "not a token at all",
    ] {
        refusal(&key, token);
    }
}

#[test]
fn rsa_keys_sign_rs256() {
    use aws_lc_rs::{encoding::AsDer, rsa::KeySize, signature::RsaKeyPair};
    let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let der = pair.as_der().unwrap();
    let body = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let pem = format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n");
    let key = TokenKey::from_pem(pem.as_bytes(), "nixery", TTL).expect("an RSA key");
    assert_eq!(key.algorithm(), Algorithm::RS256);
    let token = key.issue(None, &[name("hello")]).unwrap().token;
    assert_eq!(key.verify(&token).unwrap().sub, "");
}

#[test]
fn files_that_are_no_private_key_are_refused() {
    for pem in [
        &b""[..],
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        b"not pem",
    ] {
        assert!(TokenKey::from_pem(pem, "nixery", TTL).is_none());
    }
}

#[test]
fn pull_scopes_keep_valid_repository_pulls_only() {
    let names: Vec<String> = pull_scopes([
        "repository:shell/git:pull",
        "repository:hello:pull,push repository:shell/git:pull",
        "repository:jq:push",
        "registry:catalog:*",
        "repository:../etc:pull",
        "repository:Bad Name:pull",
        "repository:arm64/htop:*",
        "garbage",
    ])
    .into_iter()
    .map(|n| n.as_str().to_owned())
    .collect();
    assert_eq!(names, ["shell/git", "hello", "arm64/htop"]);
    let many: Vec<String> = (0..40).map(|i| format!("repository:p{i}:pull")).collect();
    assert_eq!(
        pull_scopes(many.iter().map(String::as_str)).len(),
        MAX_SCOPES
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_tokens_are_refused_without_panicking(token in ".{0,400}") {
        let key = key("nixery");
        prop_assert!(key.verify(&token).is_err());
    }

    #[test]
    fn arbitrary_scopes_never_panic(scope in ".{0,200}") {
        let _ = pull_scopes([scope.as_str()]);
    }
}
