//! Pull authentication against the real server and real Nix builds: every
//! `/v2/` route asks for credentials (401, `WWW-Authenticate`,
//! `UNAUTHORIZED`) before anything is resolved or built; Basic
//! credentials and tokens of the token flow open exactly what they may;
//! the anonymous `cached` policy serves built images and never builds;
//! failed logins are limited per address; the htpasswd file is read
//! again on change and on `SIGHUP`; and no credential reaches a log line,
//! an error body, `/metrics` or the status page.

use std::time::Duration;

use support::auth::{self, AuthFiles, PASSWORD, USER, alice, basic, bearer, challenge_param};
use support::server::{Answer, MANIFEST_V2, TestServer};
use support::{count_logs, metric};

fn server(files: &AuthFiles, anonymous: &str) -> TestServer {
    TestServer::builder()
        .env("NIX_TIMEOUT", "300")
        .envs(files.server_env(anonymous))
        .start()
}

/// Every way a client can reach a repository, plus the version check and
/// a path that is no endpoint.
const ROUTES: &[&str] = &[
    "/v2/",
    "/v2",
    "/v2/hello/manifests/latest",
    "/v2/hello/git/manifests/latest",
    "/v2/hello/manifests/sha256:0000000000000000000000000000000000000000000000000000000000000000",
    "/v2/hello/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000",
    "/v2/hello/tags/list",
    "/v2/hello/referrers/sha256:0000000000000000000000000000000000000000000000000000000000000000",
    "/v2/Not..Valid/manifests/latest",
    "/v2/no/such/endpoint",
];

fn assert_unauthorized(answer: &Answer, what: &str) -> String {
    assert_eq!(answer.status, 401, "{what}: {}", answer.text());
    let (code, _) = answer
        .registry_error()
        .unwrap_or_else(|| panic!("{what}: no registry error body: {}", answer.text()));
    assert_eq!(code, "UNAUTHORIZED", "{what}");
    answer
        .header("www-authenticate")
        .unwrap_or_else(|| panic!("{what}: 401 without a challenge"))
        .to_owned()
}

/// No Nix step ran and no package source was resolved.
fn assert_nothing_built(server: &TestServer) {
    assert_eq!(metric(server, "nixery_nix_builds_total"), 0);
    for message in ["building image", "nix build started", "source refs listed"] {
        assert_eq!(count_logs(server, message), 0, "{message}");
    }
}

/// The server's logs, its stderr, `/metrics` and the status page (as
/// anonymous and as the user) hold none of `secrets`.
fn assert_secrets_kept(server: &TestServer, secrets: &[&str]) {
    let status_anonymous = server.get("/").expect_status(200).text();
    let status_user = server
        .get("/")
        .header("Authorization", &alice())
        .expect_status(200)
        .text();
    let metrics = server.get("/metrics").expect_status(200).text();
    let logs = server.settled_log_events();
    let outputs = [
        ("logs", serde_json::to_string(&logs).unwrap()),
        ("stderr", server.stderr().join("\n")),
        ("metrics", metrics),
        ("status page", status_anonymous),
        ("status page (user)", status_user),
    ];
    for (name, text) in outputs {
        for secret in secrets {
            assert!(!text.contains(secret), "{name} holds a secret");
        }
    }
}

#[test]
fn every_v2_route_without_credentials_is_401_with_a_challenge_and_nothing_is_built() {
    let files = AuthFiles::new();
    let server = server(&files, "none");
    for route in ROUTES {
        for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
            let answer = server.call(method.clone(), route).send();
            assert_eq!(answer.status, 401, "{method} {route}");
            assert_eq!(
                answer.header("www-authenticate"),
                Some("Basic realm=\"nixery\""),
                "{method} {route}"
            );
            assert_eq!(
                answer.header("docker-distribution-api-version"),
                Some("registry/2.0")
            );
            if method == reqwest::Method::GET {
                assert_unauthorized(&answer, route);
            }
        }
        // Wrong credentials are refused the same way, never downgraded to
        // anonymous.
        let wrong = server
            .get(route)
            .header("Authorization", &basic(USER, "not-it"))
            .send();
        assert_unauthorized(&wrong, route);
    }
    assert_nothing_built(&server);
}

#[test]
fn basic_credentials_pull_a_built_image_and_wrong_ones_are_401() {
    let files = AuthFiles::new();
    // Every log line there is, so that no level leaks a credential.
    let server = TestServer::builder()
        .env("NIX_TIMEOUT", "300")
        .envs(files.server_env("none"))
        .env("RUST_LOG", "trace")
        .start();
    let credentials = alice();
    server
        .get("/v2/")
        .header("Authorization", &credentials)
        .expect_status(200);
    server
        .pull_with("hello", &[("Authorization", &credentials)])
        .expect("an authenticated pull");
    assert_eq!(metric(&server, "nixery_nix_builds_total"), 1);
    // A wrong password, a wrong user, the right password in another case.
    for wrong in [
        basic(USER, "wonder-land-43"),
        basic("mallory", PASSWORD),
        basic(USER, &PASSWORD.to_uppercase()),
    ] {
        let answer = server
            .get("/v2/hello/manifests/latest")
            .accept(MANIFEST_V2)
            .header("Authorization", &wrong)
            .send();
        assert_unauthorized(&answer, "wrong credentials");
        assert!(!answer.text().contains(&wrong[6..]), "{}", answer.text());
        assert!(!answer.text().contains(PASSWORD), "{}", answer.text());
    }
    assert_eq!(metric(&server, "nixery_auth_failures_total"), 3);
    assert_secrets_kept(&server, &[PASSWORD, &credentials[6..], "wonder-land-43"]);
}

#[test]
fn anonymous_cached_pulls_built_images_and_gets_401_for_unbuilt_ones_without_nix() {
    let files = AuthFiles::new();
    let server = server(&files, "cached");
    // The user builds `hello`.
    server
        .pull_with("hello", &[("Authorization", &alice())])
        .expect("the user's pull");
    assert_eq!(metric(&server, "nixery_nix_builds_total"), 1);
    // Anyone may pull it now, with a real client too.
    server
        .pull("hello")
        .expect("an anonymous pull of a built image");
    let layout = tempfile::tempdir().unwrap();
    support::skopeo_copy(server.addr(), "hello:latest", &layout.path().join("oci"));
    // But an unbuilt image is a 401 that asks for credentials, and Nix
    // never runs for it.
    let answer = server
        .get("/v2/hello/git/manifests/latest")
        .accept(MANIFEST_V2)
        .send();
    let challenge = assert_unauthorized(&answer, "anonymous pull of an unbuilt image");
    assert_eq!(challenge, "Basic realm=\"nixery\"");
    let head = server.head("/v2/shell/manifests/latest").send();
    assert_eq!(head.status, 401);
    assert_eq!(metric(&server, "nixery_nix_builds_total"), 1);
    // The log agrees: one build and one Nix step, both of `hello`.
    for message in ["building image", "nix build started"] {
        let images: Vec<serde_json::Value> = server
            .settled_log_events()
            .into_iter()
            .filter(|e| e["message"] == message)
            .map(|e| e["image"].clone())
            .collect();
        assert_eq!(images.len(), 1, "{message}: {images:?}");
        assert!(
            images[0].as_str().unwrap().starts_with("hello"),
            "{images:?}"
        );
    }
    // `/v2/` itself still asks for credentials, so `docker login` checks
    // the password.
    assert_unauthorized(&server.get("/v2/").send(), "anonymous /v2/");
}

/// A token for `scope` from the server's token endpoint, with `authorization`.
fn token(server: &TestServer, scope: &str, authorization: Option<&str>) -> Answer {
    let call = server.get(&format!("/token?service=nixery&scope={scope}"));
    match authorization {
        Some(value) => call.header("Authorization", value),
        None => call,
    }
    .send()
}

#[test]
fn the_token_flow_grants_exactly_the_repository_asked_for() {
    let files = AuthFiles::new().with_token_key();
    let server = server(&files, "none");
    // The challenge names the token endpoint, the service and the scope.
    let answer = server.get("/v2/hello/manifests/latest").send();
    let challenge = assert_unauthorized(&answer, "no credentials");
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    let realm = challenge_param(&challenge, "realm").unwrap();
    assert_eq!(realm, server.url("/token"));
    assert_eq!(
        challenge_param(&challenge, "service").as_deref(),
        Some("nixery")
    );
    assert_eq!(
        challenge_param(&challenge, "scope").as_deref(),
        Some("repository:hello:pull")
    );
    let version = assert_unauthorized(&server.get("/v2/").send(), "/v2/");
    assert_eq!(challenge_param(&version, "scope"), None);

    // No credentials, or wrong ones: no token.
    let refused = token(&server, "repository:hello:pull", None);
    assert_eq!(refused.status, 401, "{}", refused.text());
    assert_eq!(
        refused.header("www-authenticate"),
        Some("Basic realm=\"nixery\"")
    );
    let wrong = token(&server, "repository:hello:pull", Some(&basic(USER, "x")));
    assert_eq!(wrong.status, 401, "{}", wrong.text());

    let issued = token(&server, "repository:hello:pull", Some(&alice()));
    assert_eq!(issued.status, 200, "{}", issued.text());
    assert_eq!(issued.header("cache-control"), Some("no-store"));
    let body = issued.json();
    let jwt = body["token"].as_str().unwrap().to_owned();
    assert_eq!(body["access_token"], body["token"]);
    assert_eq!(body["expires_in"], 300);
    assert!(body["issued_at"].as_str().unwrap().ends_with('Z'), "{body}");

    let with_token = [("Authorization", bearer(&jwt))];
    let with_token: Vec<(&str, &str)> = with_token.iter().map(|(k, v)| (*k, v.as_str())).collect();
    server
        .pull_with("hello", &with_token)
        .expect("a pull with the token");
    server
        .get("/v2/")
        .header("Authorization", &bearer(&jwt))
        .expect_status(200);
    // The token opens `hello` only: another repository is a 401 whose
    // challenge names that repository, and nothing is built for it.
    let other = server
        .get("/v2/hello/git/manifests/latest")
        .accept(MANIFEST_V2)
        .header("Authorization", &bearer(&jwt))
        .send();
    let challenge = assert_unauthorized(&other, "a token for another repository");
    assert_eq!(
        challenge_param(&challenge, "scope").as_deref(),
        Some("repository:hello/git:pull")
    );
    assert_eq!(metric(&server, "nixery_nix_builds_total"), 1);
    // Basic credentials keep working on registry requests.
    server
        .get("/v2/hello/manifests/latest")
        .accept(MANIFEST_V2)
        .header("Authorization", &alice())
        .expect_status(200);
    // A token is not a credential for the token endpoint.
    let chained = token(&server, "repository:shell:pull", Some(&bearer(&jwt)));
    assert_eq!(chained.status, 401, "{}", chained.text());
    // Another service's token request is refused.
    let other_service = server
        .get("/token?service=elsewhere&scope=repository:hello:pull")
        .header("Authorization", &alice())
        .send();
    assert_eq!(other_service.status, 400, "{}", other_service.text());
    assert_eq!(metric(&server, "nixery_tokens_issued_total"), 1);
    assert_secrets_kept(&server, &[PASSWORD, &alice()[6..], &jwt]);
}

#[test]
fn anonymous_tokens_follow_the_anonymous_policy() {
    let files = AuthFiles::new().with_token_key();
    let server = server(&files, "cached");
    server
        .pull_with("hello", &[("Authorization", &alice())])
        .expect("the user's pull");
    let issued = token(&server, "repository:hello:pull", None);
    assert_eq!(issued.status, 200, "{}", issued.text());
    let jwt = issued.json()["token"].as_str().unwrap().to_owned();
    let headers = [("Authorization", bearer(&jwt))];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    server
        .pull_with("hello", &headers)
        .expect("an anonymous token pulls a built image");
    // An anonymous token for an unbuilt image does not build it.
    let issued = token(&server, "repository:hello/git:pull", None);
    let jwt = issued.json()["token"].as_str().unwrap().to_owned();
    let answer = server
        .get("/v2/hello/git/manifests/latest")
        .accept(MANIFEST_V2)
        .header("Authorization", &bearer(&jwt))
        .send();
    assert_unauthorized(&answer, "an anonymous token for an unbuilt image");
    assert_eq!(metric(&server, "nixery_nix_builds_total"), 1);
}

#[test]
fn failed_logins_past_the_burst_get_429_with_retry_after_for_that_address_only() {
    let files = AuthFiles::new();
    let server = server(&files, "none");
    let wrong = basic(USER, "guess");
    for _ in 0..10 {
        let answer = server.get("/v2/").header("Authorization", &wrong).send();
        assert_eq!(answer.status, 401, "{}", answer.text());
    }
    // The allowance is spent: even the right password waits, and no
    // password is checked.
    for value in [wrong.as_str(), &alice()] {
        let answer = server.get("/v2/").header("Authorization", value).send();
        assert_eq!(answer.status, 429, "{}", answer.text());
        let seconds: u64 = answer.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=6).contains(&seconds), "{seconds}");
        assert_eq!(answer.registry_error().unwrap().0, "TOOMANYREQUESTS");
    }
    assert_eq!(metric(&server, "nixery_auth_rate_limited_total"), 2);
    // Another client address is not held up.
    let client = reqwest::blocking::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let answer = client
        .get(server.url("/v2/"))
        .header("Authorization", alice())
        .send()
        .unwrap();
    assert_eq!(answer.status(), 200);
    let refusals = server
        .settled_log_events()
        .into_iter()
        .filter(|e| e["message"] == "authentication refused: too many failed logins")
        .count();
    assert_eq!(refusals, 2);
}

/// Wait for the `nth` (1-based) `htpasswd reloaded` event.
fn await_reload(server: &TestServer, nth: usize) -> serde_json::Value {
    server
        .wait_for_event(Duration::from_secs(30), |_| true)
        .expect("a log");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let reloads: Vec<_> = server
            .log_events()
            .into_iter()
            .filter(|e| e["message"] == "htpasswd reloaded")
            .collect();
        if let Some(event) = reloads.get(nth - 1) {
            return event.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no reload #{nth}: {reloads:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_changed_htpasswd_file_takes_effect_without_a_restart_and_on_sighup() {
    let files = AuthFiles::new();
    let server = server(&files, "none");
    server
        .get("/v2/")
        .header("Authorization", &alice())
        .expect_status(200);
    // Replaced on disk: picked up by the poll.
    auth::write_htpasswd(
        &files.htpasswd,
        &[(USER, "new-secret"), ("bob", "bob-secret")],
    );
    let event = await_reload(&server, 1);
    assert_eq!(event["users"], 2);
    assert_eq!(event["trigger"], "change");
    let old = server.get("/v2/").header("Authorization", &alice()).send();
    assert_eq!(old.status, 401, "the remembered old password still opens");
    server
        .get("/v2/")
        .header("Authorization", &basic("bob", "bob-secret"))
        .expect_status(200);
    // SIGHUP reads it at once.
    auth::write_htpasswd(&files.htpasswd, &[("carol", "carol-secret")]);
    server.signal(libc::SIGHUP);
    let event = await_reload(&server, 2);
    assert_eq!(event["users"], 1);
    server
        .get("/v2/")
        .header("Authorization", &basic("carol", "carol-secret"))
        .expect_status(200);
    // A broken file keeps the users in place.
    std::fs::write(&files.htpasswd, "carol:plain-text-password\n").unwrap();
    server.signal(libc::SIGHUP);
    let failed = server
        .wait_for_event(Duration::from_secs(30), |e| {
            e["message"] == "htpasswd reload failed, keeping the previous users"
        })
        .expect("a failed reload");
    assert!(
        !failed.to_string().contains("plain-text-password"),
        "{failed}"
    );
    server
        .get("/v2/")
        .header("Authorization", &basic("carol", "carol-secret"))
        .expect_status(200);
    assert!(server.pid() > 0, "the server is still running");
}

#[test]
fn the_status_page_withholds_build_errors_from_anonymous_clients() {
    let files = AuthFiles::new();
    let server = server(&files, "cached");
    let refused = server
        .get("/v2/nosuchpackage/manifests/latest")
        .header("Authorization", &alice())
        .send();
    assert_eq!(refused.status, 404, "{}", refused.text());
    let anonymous = server.get("/").expect_status(200).text();
    assert!(!anonymous.contains("nosuchpackage"), "{anonymous}");
    assert!(anonymous.contains("id=\"errors-hidden\""), "{anonymous}");
    assert!(
        anonymous.contains("without credentials: pull images already built"),
        "{anonymous}"
    );
    let user = server
        .get("/")
        .header("Authorization", &alice())
        .expect_status(200)
        .text();
    assert!(user.contains("nosuchpackage"), "{user}");
    // /metrics stays open: counters only, no names.
    let metrics = server.get("/metrics").expect_status(200).text();
    assert!(!metrics.contains("nosuchpackage") && !metrics.contains(USER));
}

#[test]
fn auth_settings_are_checked_at_start_up_without_quoting_secrets() {
    let files = AuthFiles::new();
    // A token key without users.
    let out = TestServer::builder()
        .env("NIXERY_AUTH_TOKEN_KEY", "/nonexistent.pem")
        .run_to_exit();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("NIXERY_AUTH_HTPASSWD must be set"),
        "{stderr}"
    );
    // A file with a plain-text password: refused, naming the line only.
    let plain = files.dir().join("plain");
    std::fs::write(&plain, "alice:my-plain-password\n").unwrap();
    let out = TestServer::builder()
        .env("NIXERY_AUTH_HTPASSWD", plain.display().to_string())
        .run_to_exit();
    assert_eq!(out.status.code(), Some(1));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("line 1") && all.contains("bcrypt"), "{all}");
    assert!(!all.contains("my-plain-password"), "{all}");
    // A key that is no private key.
    let out = TestServer::builder()
        .env("NIXERY_AUTH_HTPASSWD", files.htpasswd.display().to_string())
        .env(
            "NIXERY_AUTH_TOKEN_KEY",
            files.htpasswd.display().to_string(),
        )
        .run_to_exit();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("NIXERY_AUTH_TOKEN_KEY"),
        "{out:?}"
    );
    // An unknown policy.
    let out = TestServer::builder()
        .env("NIXERY_AUTH_HTPASSWD", files.htpasswd.display().to_string())
        .env("NIXERY_AUTH_ANONYMOUS", "some")
        .run_to_exit();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn anonymous_cached_clients_get_a_built_image_index_and_a_401_for_an_unbuilt_one() {
    use support::media::OCI_INDEX;
    let files = AuthFiles::new();
    let pkgs = support::any_system_pkgs();
    let server = TestServer::builder()
        .env("NIX_TIMEOUT", "300")
        .env("NIXERY_PLATFORMS", "linux/amd64,linux/arm64")
        .env("NIXERY_PKGS_PATH", pkgs.path().display().to_string())
        .envs(files.server_env("cached"))
        .start();
    let index = |authorization: Option<&str>| {
        let call = server.get("/v2/hello/manifests/latest").accept(OCI_INDEX);
        match authorization {
            Some(value) => call.header("Authorization", value),
            None => call,
        }
        .send()
    };
    // Before any user built it: 401, and nothing is built.
    assert_unauthorized(&index(None), "anonymous index of an unbuilt image");
    assert_eq!(metric(&server, "nixery_nix_builds_total"), 0);
    // A user builds both platforms.
    let built = index(Some(&alice()));
    assert_eq!(built.status, 200, "{}", built.text());
    assert_eq!(built.header("content-type"), Some(OCI_INDEX));
    let builds = metric(&server, "nixery_nix_builds_total");
    assert_eq!(builds, 2);
    // Now anyone gets the very same index, and nothing more is built.
    let anonymous = index(None);
    assert_eq!(anonymous.status, 200, "{}", anonymous.text());
    assert_eq!(anonymous.body, built.body);
    assert_unauthorized(
        &server
            .get("/v2/hello/git/manifests/latest")
            .accept(OCI_INDEX)
            .send(),
        "anonymous index of another unbuilt image",
    );
    assert_eq!(metric(&server, "nixery_nix_builds_total"), builds);
}
