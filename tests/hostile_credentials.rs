//! Hostile credentials are clean `401`s, never a `500`, a panic or a hang:
//! every entry of the corpus `tests/corpus/authorization/` (malformed
//! `Authorization` values, `alg: none` and unsigned tokens, oversized
//! values, other schemes) sent raw to the server; tokens made at test time
//! that are expired, not yet valid, for another service, signed by
//! another key, HMAC-signed with the server's public key, or for another
//! repository; headers far past the server's limit. Then a fuzzer seeded
//! with the corpus mutates the values and hands them to the
//! authentication code itself.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, jwk::Jwk};
use nixery::auth::{Auth, AuthSettings, Denied, settings::AnonymousPolicy};
use nixery::metrics::Metrics;
use proptest::prelude::*;
use support::auth::{AuthFiles, alice, bearer, p256_key};
use support::server::{Answer, TestServer, raw_request_with};

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = support::repo_root().join("tests/corpus/authorization");
    let mut entries: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("the corpus")
        .map(|entry| {
            let path = entry.expect("a corpus entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("read a corpus entry"))
        })
        .collect();
    entries.sort();
    assert!(entries.len() >= 25, "the corpus is missing");
    entries
}

/// `GET path` with `Authorization: value` (raw bytes).
fn with_authorization(server: &TestServer, path: &str, value: &[u8]) -> Answer {
    let mut header = b"Authorization: ".to_vec();
    header.extend_from_slice(value);
    header.extend_from_slice(b"\r\n");
    raw_request_with(server.addr(), "GET", path.as_bytes(), &header)
}

fn assert_clean_401(answer: &Answer, what: &str) {
    assert_eq!(answer.status, 401, "{what}: {}", answer.text());
    assert_eq!(
        answer.registry_error().map(|(code, _)| code).as_deref(),
        Some("UNAUTHORIZED"),
        "{what}"
    );
    assert!(answer.header("www-authenticate").is_some(), "{what}");
}

fn token_server(files: &AuthFiles) -> TestServer {
    TestServer::builder()
        .env("NIX_TIMEOUT", "300")
        .envs(files.server_env("none"))
        .start()
}

#[test]
fn every_corpus_authorization_value_is_a_clean_401() {
    let files = AuthFiles::new().with_token_key();
    let server = token_server(&files);
    for (name, value) in corpus() {
        for path in ["/v2/", "/v2/hello/manifests/latest"] {
            assert_clean_401(&with_authorization(&server, path, &value), &name);
        }
    }
    assert_eq!(support::metric(&server, "nixery_nix_builds_total"), 0);
    // Still serving, and the right credentials still open.
    server
        .get("/v2/")
        .header("Authorization", &alice())
        .expect_status(200);
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(service: &str, nbf: u64, exp: u64, repository: &str) -> serde_json::Value {
    serde_json::json!({
        "iss": service, "sub": "alice", "aud": service,
        "exp": exp, "nbf": nbf, "iat": nbf, "jti": "hostile",
        "access": [{"type": "repository", "name": repository, "actions": ["pull"]}],
    })
}

fn es256(key: &EncodingKey, claims: &serde_json::Value) -> String {
    encode(&Header::new(Algorithm::ES256), claims, key).unwrap()
}

#[test]
fn forged_expired_and_misdirected_tokens_are_clean_401s() {
    let files = AuthFiles::new().with_token_key();
    let server = token_server(&files);
    let pem = std::fs::read(files.token_key.as_ref().unwrap()).unwrap();
    let ours = EncodingKey::from_ec_pem(&pem).unwrap();
    let other_key_path: PathBuf = files.dir().join("other.pem");
    p256_key(&other_key_path);
    let theirs = EncodingKey::from_ec_pem(&std::fs::read(&other_key_path).unwrap()).unwrap();
    let now = now();
    let valid = claims("nixery", now - 10, now + 300, "hello");
    // The server's public key, as anyone can derive it from a token's
    // signature (or a JWK it publishes), used as an HMAC secret.
    let public =
        serde_json::to_vec(&Jwk::from_encoding_key(&ours, Algorithm::ES256).unwrap()).unwrap();
    let hmac = |alg| {
        encode(
            &Header::new(alg),
            &valid,
            &EncodingKey::from_secret(&public),
        )
        .unwrap()
    };
    let mut without_exp = valid.clone();
    without_exp.as_object_mut().unwrap().remove("exp");
    let huge_claims = claims("nixery", now - 10, now + 300, &"a".repeat(6 * 1024));
    let tokens = [
        (
            "expired",
            es256(&ours, &claims("nixery", now - 7200, now - 3600, "hello")),
        ),
        (
            "not yet valid",
            es256(&ours, &claims("nixery", now + 3600, now + 7200, "hello")),
        ),
        (
            "another service",
            es256(
                &ours,
                &claims("registry.example", now - 10, now + 300, "hello"),
            ),
        ),
        ("another key", es256(&theirs, &valid)),
        ("HS256 with the public key", hmac(Algorithm::HS256)),
        ("HS512 with the public key", hmac(Algorithm::HS512)),
        ("no exp", es256(&ours, &without_exp)),
        (
            "another repository",
            es256(&ours, &claims("nixery", now - 10, now + 300, "shell")),
        ),
        ("a huge access claim", es256(&ours, &huge_claims)),
    ];
    for (what, token) in &tokens {
        let answer = server
            .get("/v2/hello/manifests/latest")
            .header("Authorization", &bearer(token))
            .send();
        assert_clean_401(&answer, what);
    }
    // The same key and claims are accepted: the refusals above are for
    // what each changed, not for the way the test signs.
    server
        .get("/v2/hello/manifests/latest")
        .accept(support::server::MANIFEST_V2)
        .header("Authorization", &bearer(&es256(&ours, &valid)))
        .expect_status(200);
    let refusals = server
        .settled_log_events()
        .into_iter()
        .filter(|e| e["message"] == "authentication refused: invalid token")
        .count();
    // "another repository" is a valid token without this scope, and "a
    // huge access claim" is refused unread as too long.
    assert_eq!(refusals, tokens.len() - 2);
    let logs = server.logs().join("\n");
    for (_, token) in &tokens {
        assert!(!logs.contains(token.as_str()), "a token reached the log");
    }
}

#[test]
fn headers_past_every_limit_are_refused_without_a_server_error() {
    let files = AuthFiles::new();
    let server = token_server(&files);
    // Past the 8 KiB the authentication code reads: a clean 401.
    for size in [8 * 1024 + 1, 60 * 1024] {
        let mut value = b"Basic ".to_vec();
        value.resize(size, b'A');
        assert_clean_401(&with_authorization(&server, "/v2/", &value), "long value");
    }
    // Past what the HTTP parser takes at all: refused by it, never a 5xx.
    let mut value = b"Basic ".to_vec();
    value.resize(1024 * 1024, b'A');
    let mut header = b"Authorization: ".to_vec();
    header.extend_from_slice(&value);
    header.extend_from_slice(b"\r\n");
    let refused =
        std::panic::catch_unwind(|| raw_request_with(server.addr(), "GET", b"/v2/", &header));
    if let Ok(answer) = refused {
        assert!(
            (400..500).contains(&answer.status),
            "a 1 MiB header got {}",
            answer.status
        );
    }
    server
        .get("/v2/")
        .header("Authorization", &alice())
        .expect_status(200);
}

/// The authentication code on its own, for the fuzzer: the test user,
/// the token flow on, anonymous clients refused.
fn fuzz_target() -> (AuthFiles, Arc<Auth>) {
    let files = AuthFiles::new().with_token_key();
    let settings = AuthSettings {
        htpasswd: files.htpasswd.clone(),
        token_key: files.token_key.clone(),
        anonymous: AnonymousPolicy::None,
        service: "nixery".into(),
        realm: None,
        token_ttl: Duration::from_secs(300),
    };
    let auth = Auth::load(settings, Arc::new(Metrics::default())).expect("load auth");
    (files, Arc::new(auth))
}

/// A corpus entry with one of a few mutations applied.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let entries: Vec<Vec<u8>> = corpus().into_iter().map(|(_, value)| value).collect();
    (
        prop::sample::select(entries),
        0usize..4,
        any::<usize>(),
        prop::collection::vec(any::<u8>(), 0..16),
    )
        .prop_map(|(mut value, how, at, bytes)| {
            let at = if value.is_empty() {
                0
            } else {
                at % value.len()
            };
            match how {
                0 => value.truncate(at),
                1 => {
                    value.splice(at..at, bytes);
                }
                2 => {
                    for (i, b) in bytes.iter().enumerate() {
                        if let Some(slot) = value.get_mut(at + i) {
                            *slot ^= b;
                        }
                    }
                }
                _ => value.extend_from_slice(&bytes),
            }
            value
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_corpus_values_are_refused_never_accepted_or_panicking(value in mutated()) {
        static TARGET: std::sync::OnceLock<(AuthFiles, Arc<Auth>)> = std::sync::OnceLock::new();
        let (_, auth) = TARGET.get_or_init(fuzz_target);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let result = runtime.block_on(auth.authenticate(Some(&value), IpAddr::V4(Ipv4Addr::LOCALHOST)));
        match result {
            // Only "no credentials" (Basic of ":") may come back as a caller.
            Ok(caller) => prop_assert!(caller.user.is_none() && caller.repositories.is_none()),
            Err(Denied::Rejected(_) | Denied::RateLimited(_)) => {}
            Err(other) => prop_assert!(false, "unexpected refusal {other:?}"),
        }
    }
}
