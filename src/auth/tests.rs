use std::{io::Write as _, time::Duration};

use base64::Engine as _;

use super::*;

struct Fixture {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    auth: Auth,
    metrics: Arc<Metrics>,
}

fn htpasswd(entries: &[(&str, &str)]) -> String {
    entries
        .iter()
        .map(|(user, password)| format!("{user}:{}\n", bcrypt::hash(password, 4).unwrap()))
        .collect()
}

fn fixture(anonymous: AnonymousPolicy, limiter: LoginLimiter) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("htpasswd");
    std::fs::write(&path, htpasswd(&[("alice", "wonderland")])).unwrap();
    let metrics = Arc::new(Metrics::default());
    let settings = AuthSettings {
        htpasswd: path.clone(),
        token_key: None,
        anonymous,
        service: "nixery".into(),
        realm: None,
        token_ttl: Duration::from_secs(300),
    };
    let auth = Auth::with_limiter(settings, metrics.clone(), limiter).unwrap();
    Fixture {
        _dir: dir,
        path,
        auth,
        metrics,
    }
}

fn basic(user: &str, password: &str) -> Vec<u8> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}").into_bytes()
}

const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));

impl Fixture {
    /// Authenticate Basic credentials of `user` and `password` from `client`.
    async fn login(&self, user: &str, password: &str, client: IpAddr) -> Result<Caller, Denied> {
        self.auth
            .authenticate(Some(&basic(user, password)), client)
            .await
    }
}

#[tokio::test]
async fn basic_credentials_prove_their_user_and_wrong_ones_are_refused() {
    let f = fixture(AnonymousPolicy::None, LoginLimiter::default());
    let caller = f.login("alice", "wonderland", CLIENT).await.unwrap();
    assert_eq!(caller.user.as_deref(), Some("alice"));
    assert_eq!(f.auth.grant(&caller, Some("shell/git")), Ok(Grant::Build));
    assert_eq!(f.auth.grant(&caller, None), Ok(Grant::Build));
    for wrong in [basic("alice", "wonderlan"), basic("mallory", "wonderland")] {
        assert_eq!(
            f.auth.authenticate(Some(&wrong), CLIENT).await.unwrap_err(),
            Denied::Rejected("wrong user name or password")
        );
    }
    assert_eq!(f.metrics.auth_failures.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn a_verified_password_is_remembered_and_costs_no_allowance() {
    // An allowance of one check: the second pull must come from the cache.
    let f = fixture(
        AnonymousPolicy::None,
        LoginLimiter::new(1, Duration::from_secs(3600)),
    );
    for _ in 0..5 {
        let caller = f.login("alice", "wonderland", CLIENT).await.unwrap();
        assert_eq!(caller.user.as_deref(), Some("alice"));
    }
    // A wrong password is never remembered: it needs a check, and the
    // allowance is spent.
    assert!(matches!(
        f.login("alice", "nope", CLIENT).await,
        Err(Denied::RateLimited(_))
    ));
    assert_eq!(f.metrics.auth_rate_limited.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn failed_logins_past_the_burst_are_rate_limited_per_address() {
    let f = fixture(
        AnonymousPolicy::None,
        LoginLimiter::new(3, Duration::from_secs(3600)),
    );
    for _ in 0..3 {
        assert_eq!(
            f.login("alice", "guess", CLIENT).await,
            Err(Denied::Rejected("wrong user name or password"))
        );
    }
    let Err(Denied::RateLimited(seconds)) = f.login("alice", "wonderland", CLIENT).await else {
        panic!("the fourth check was not refused");
    };
    assert!(seconds >= 1);
    let other = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 8));
    assert!(f.login("alice", "wonderland", other).await.is_ok());
}

#[tokio::test]
async fn the_anonymous_policy_decides_what_clients_without_credentials_get() {
    for (policy, expected) in [
        (AnonymousPolicy::None, Err(Denied::Unauthenticated)),
        (AnonymousPolicy::Cached, Ok(Grant::CachedOnly)),
        (AnonymousPolicy::All, Ok(Grant::Build)),
    ] {
        let f = fixture(policy, LoginLimiter::default());
        let anonymous = f.auth.authenticate(None, CLIENT).await.unwrap();
        assert_eq!(
            f.auth.grant(&anonymous, Some("hello")),
            expected,
            "{policy:?}"
        );
        // The version check always asks for credentials, so that `docker
        // login` checks the password.
        assert_eq!(
            f.auth.grant(&anonymous, None),
            Err(Denied::Unauthenticated),
            "{policy:?}"
        );
    }
}

#[tokio::test]
async fn malformed_authorization_values_are_refused_cleanly() {
    let f = fixture(AnonymousPolicy::All, LoginLimiter::default());
    let huge = format!("Basic {}", "A".repeat(MAX_AUTHORIZATION));
    let cases: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"Basic".to_vec(),
        b"Basic ".to_vec(),
        b"Basic !!!notbase64".to_vec(),
        b"Basic bm9jb2xvbg==".to_vec(), // "nocolon"
        b"Digest username=\"alice\"".to_vec(),
        b"Bearer abc.def.ghi".to_vec(),
        vec![0xff, 0xfe, b' ', 0x80],
        huge.into_bytes(),
    ];
    for value in cases {
        let refused = f.auth.authenticate(Some(&value), CLIENT).await;
        assert!(
            matches!(refused, Err(Denied::Rejected(_))),
            "{:?}: {refused:?}",
            String::from_utf8_lossy(&value[..value.len().min(40)])
        );
    }
}

#[tokio::test]
async fn a_changed_file_replaces_the_users_and_forgets_remembered_passwords() {
    let f = fixture(AnonymousPolicy::None, LoginLimiter::default());
    let alice = basic("alice", "wonderland");
    f.auth.authenticate(Some(&alice), CLIENT).await.unwrap();
    assert_eq!(f.auth.reload(false).unwrap(), None, "nothing changed yet");
    let new = f.path.with_extension("new");
    let mut file = std::fs::File::create(&new).unwrap();
    file.write_all(htpasswd(&[("alice", "looking-glass"), ("bob", "b")]).as_bytes())
        .unwrap();
    std::fs::rename(&new, &f.path).unwrap();
    assert_eq!(f.auth.reload(false).unwrap(), Some(2));
    assert_eq!(f.auth.user_count(), 2);
    assert!(f.auth.authenticate(Some(&alice), CLIENT).await.is_err());
    let caller = f.login("alice", "looking-glass", CLIENT).await.unwrap();
    assert_eq!(caller.user.as_deref(), Some("alice"));
    // A broken file keeps the users in place.
    std::fs::write(&f.path, "alice:plain\n").unwrap();
    assert!(f.auth.reload(true).is_err());
    assert_eq!(f.auth.user_count(), 2);
}
