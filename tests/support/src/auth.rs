//! Pull authentication fixtures: an htpasswd file written by the real
//! `htpasswd -B` (apache2-utils, installed by `scripts/setup-host.sh`) and
//! a token signing key made by `openssl genpkey`, both generated in a
//! temporary directory per test; never committed, never used elsewhere.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use base64::Engine as _;

/// The user every auth test signs in as.
pub const USER: &str = "alice";
/// Their password.
pub const PASSWORD: &str = "wonder-land-42";

/// An htpasswd file and, optionally, a token signing key.
pub struct AuthFiles {
    dir: tempfile::TempDir,
    /// The htpasswd file.
    pub htpasswd: PathBuf,
    /// The signing key, if made.
    pub token_key: Option<PathBuf>,
}

impl AuthFiles {
    /// An htpasswd file naming [`USER`] with [`PASSWORD`].
    pub fn new() -> AuthFiles {
        let dir = tempfile::tempdir().expect("temporary directory");
        let htpasswd = dir.path().join("htpasswd");
        write_htpasswd(&htpasswd, &[(USER, PASSWORD)]);
        AuthFiles {
            dir,
            htpasswd,
            token_key: None,
        }
    }

    /// The same files plus a P-256 signing key (the token flow).
    pub fn with_token_key(mut self) -> AuthFiles {
        let key = self.dir.path().join("token-key.pem");
        p256_key(&key);
        self.token_key = Some(key);
        self
    }

    /// The directory the files are in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's settings for these files and `anonymous` (`none`,
    /// `cached` or `all`).
    pub fn server_env(&self, anonymous: &str) -> Vec<(String, String)> {
        let mut env = vec![
            (
                "NIXERY_AUTH_HTPASSWD".to_owned(),
                self.htpasswd.display().to_string(),
            ),
            ("NIXERY_AUTH_ANONYMOUS".to_owned(), anonymous.to_owned()),
        ];
        if let Some(key) = &self.token_key {
            env.push((
                "NIXERY_AUTH_TOKEN_KEY".to_owned(),
                key.display().to_string(),
            ));
        }
        env
    }
}

impl Default for AuthFiles {
    fn default() -> Self {
        Self::new()
    }
}

/// Write `users` to the htpasswd file at `path` with `htpasswd -B` (into a
/// file beside it, then renamed over it, as an operator's deploy would).
pub fn write_htpasswd(path: &Path, users: &[(&str, &str)]) {
    let new = path.with_extension("new");
    let _ = std::fs::remove_file(&new);
    for (i, (user, password)) in users.iter().enumerate() {
        let mut cmd = Command::new("htpasswd");
        cmd.arg("-B").arg("-b");
        if i == 0 {
            cmd.arg("-c");
        }
        cmd.arg(&new).arg(user).arg(password);
        crate::run(&mut cmd);
    }
    std::fs::rename(&new, path).expect("rename the htpasswd file into place");
}

/// A P-256 private key in PKCS#8 PEM at `path`.
pub fn p256_key(path: &Path) {
    crate::run(
        Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
            ])
            .arg(path),
    );
}

/// The `Authorization` value of Basic credentials.
pub fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// The `Authorization` value of [`USER`]'s Basic credentials.
pub fn alice() -> String {
    basic(USER, PASSWORD)
}

/// The `Authorization` value of a token.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The value of `key` in a challenge such as
/// `Bearer realm="...",service="...",scope="..."`.
pub fn challenge_param(challenge: &str, key: &str) -> Option<String> {
    let start = challenge.find(&format!("{key}=\""))? + key.len() + 2;
    let end = challenge[start..].find('"')? + start;
    Some(challenge[start..end].to_owned())
}
