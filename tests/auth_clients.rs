//! Real registry clients against pull authentication, each with `Basic`
//! credentials and with the token flow: `docker login` then `docker pull`
//! (a private dockerd), `podman login` then `podman pull`, `skopeo
//! --creds` and `ctr --user`. A wrong password fails in each, with a 401
//! from the server and no build.

use std::{
    io::Write as _,
    process::{Command, Stdio},
};

use support::auth::{AuthFiles, PASSWORD, USER};
use support::server::TestServer;
use support::{Containerd, docker::Docker, metric, run};

/// How the server asks for credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    /// `WWW-Authenticate: Basic`.
    Basic,
    /// `WWW-Authenticate: Bearer`, tokens from `/token`.
    Token,
}

const FLOWS: [Flow; 2] = [Flow::Basic, Flow::Token];

struct Registry {
    server: TestServer,
    _files: AuthFiles,
    flow: Flow,
}

impl Registry {
    fn start(flow: Flow) -> Registry {
        let files = match flow {
            Flow::Basic => AuthFiles::new(),
            Flow::Token => AuthFiles::new().with_token_key(),
        };
        let server = TestServer::builder()
            .env("NIX_TIMEOUT", "300")
            .envs(files.server_env("none"))
            .start();
        Registry {
            server,
            _files: files,
            flow,
        }
    }

    fn host(&self) -> String {
        self.server.addr().to_string()
    }

    /// After a successful pull: the image was built once, and with the
    /// token flow the client fetched a token for the user.
    fn assert_pulled(&self) {
        assert_eq!(metric(&self.server, "nixery_nix_builds_total"), 1);
        let tokens = self
            .server
            .settled_log_events()
            .into_iter()
            .filter(|e| e["message"] == "token issued" && e["user"] == USER)
            .count();
        match self.flow {
            Flow::Basic => assert_eq!(tokens, 0),
            Flow::Token => assert!(tokens > 0, "the client never fetched a token"),
        }
    }

    /// After a refused client: the server answered a wrong password with
    /// 401 and built nothing more.
    fn assert_refused(&self, builds_before: u64) {
        let events = self.server.settled_log_events();
        assert!(
            events.iter().any(|e| e["message"]
                == "authentication refused: wrong user name or password"
                && e["user"] == USER),
            "no refused login in the log"
        );
        assert!(
            events
                .iter()
                .any(|e| e["message"] == "response" && e["status"] == 401),
            "no 401 answered"
        );
        assert_eq!(
            metric(&self.server, "nixery_nix_builds_total"),
            builds_before
        );
    }
}

/// Run `cmd` with `input` on its stdin; its output.
fn with_stdin(cmd: &mut Command, input: &str) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

/// What `cmd` printed and how it ended, whether or not it succeeded.
fn run_output(cmd: &mut Command) -> std::process::Output {
    cmd.stdin(Stdio::null()).output().expect("spawn")
}

fn assert_failed(output: &std::process::Output, what: &str) {
    assert!(
        !output.status.success(),
        "{what} succeeded with a wrong password: {}",
        String::from_utf8_lossy(&output.stdout)
    );
}

fn assert_succeeded(output: &std::process::Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn docker_login_then_pull_with_basic_and_with_tokens_and_a_wrong_password_is_401() {
    let docker = Docker::start();
    for flow in FLOWS {
        let registry = Registry::start(flow);
        let host = registry.host();
        let wrong = with_stdin(
            docker
                .docker()
                .args(["login", "-u", USER, "--password-stdin", &host]),
            "not-the-password",
        );
        assert_failed(&wrong, "docker login");
        registry.assert_refused(0);
        let login = with_stdin(
            docker
                .docker()
                .args(["login", "-u", USER, "--password-stdin", &host]),
            PASSWORD,
        );
        assert_succeeded(&login, &format!("docker login ({flow:?})"));
        let reference = format!("{host}/hello:latest");
        docker.pull(&[&reference]);
        assert_eq!(docker.run(&reference, &["hello"]).trim(), "Hello, world!");
        registry.assert_pulled();
        run(docker.docker().args(["logout", &host]));
    }
}

#[test]
fn podman_login_then_pull_with_basic_and_with_tokens_and_a_wrong_password_is_401() {
    let store = tempfile::tempdir().unwrap();
    let authfile = store.path().join("auth.json");
    let podman = || {
        let mut cmd = support::podman(store.path());
        cmd.env("REGISTRY_AUTH_FILE", &authfile);
        cmd
    };
    for flow in FLOWS {
        let registry = Registry::start(flow);
        let host = registry.host();
        let login = |password: &str| {
            with_stdin(
                podman().args([
                    "login",
                    "--tls-verify=false",
                    "-u",
                    USER,
                    "--password-stdin",
                    &host,
                ]),
                password,
            )
        };
        assert_failed(&login("not-the-password"), "podman login");
        registry.assert_refused(0);
        assert_succeeded(&login(PASSWORD), &format!("podman login ({flow:?})"));
        let reference = format!("{host}/hello:latest");
        run(podman().args(["pull", "--tls-verify=false", &reference]));
        registry.assert_pulled();
        run(podman().args(["logout", &host]));
    }
}

#[test]
fn skopeo_with_creds_pulls_with_basic_and_with_tokens_and_a_wrong_password_is_401() {
    for flow in FLOWS {
        let registry = Registry::start(flow);
        let source = format!("docker://{}/hello:latest", registry.host());
        let copy = |creds: &str, layout: &std::path::Path| {
            run_output(
                Command::new("skopeo")
                    .args(["copy", "--src-tls-verify=false", "--src-creds", creds])
                    .arg(&source)
                    .arg(format!("oci:{}:latest", layout.display())),
            )
        };
        let work = tempfile::tempdir().unwrap();
        let wrong = copy(&format!("{USER}:not-the-password"), &work.path().join("a"));
        assert_failed(&wrong, "skopeo copy");
        registry.assert_refused(0);
        let right = copy(&format!("{USER}:{PASSWORD}"), &work.path().join("b"));
        assert_succeeded(&right, &format!("skopeo copy ({flow:?})"));
        registry.assert_pulled();
        // Without credentials: refused (the anonymous policy is `none`).
        let anonymous = run_output(
            Command::new("skopeo")
                .args(["inspect", "--tls-verify=false", "--no-creds"])
                .arg(&source),
        );
        assert_failed(&anonymous, "anonymous skopeo inspect");
    }
}

#[test]
fn ctr_with_user_pulls_with_basic_and_with_tokens_and_a_wrong_password_is_401() {
    let containerd = Containerd::start();
    for flow in FLOWS {
        let registry = Registry::start(flow);
        let reference = format!("{}/hello:latest", registry.host());
        let pull = |user: &str| {
            run_output(
                containerd
                    .ctr()
                    .args(["image", "pull", "--plain-http", "--user", user])
                    .arg(&reference),
            )
        };
        assert_failed(&pull(&format!("{USER}:not-the-password")), "ctr pull");
        registry.assert_refused(0);
        assert_succeeded(
            &pull(&format!("{USER}:{PASSWORD}")),
            &format!("ctr pull ({flow:?})"),
        );
        registry.assert_pulled();
        run(containerd.ctr().args(["image", "rm", &reference]));
    }
}

/// Anonymous Docker pulls need the token flow: under a `Basic` challenge
/// Docker without credentials gives up ("no basic auth credentials"),
/// and answering `/v2/` anonymously instead would make `docker login`
/// accept any password and logged-in pulls go without credentials
/// (docs/operating.md says so; the server warns at start-up).
#[test]
fn docker_pulls_a_built_image_anonymously_under_cached_and_not_an_unbuilt_one() {
    let docker = Docker::start();
    {
        let flow = Flow::Token;
        let files = AuthFiles::new().with_token_key();
        let server = TestServer::builder()
            .env("NIX_TIMEOUT", "300")
            .envs(files.server_env("cached"))
            .start();
        let host = server.addr().to_string();
        // A user builds `hello`.
        server
            .pull_with("hello", &[("Authorization", &support::auth::alice())])
            .expect("the user's pull");
        // Docker, never logged in, pulls it.
        let reference = format!("{host}/hello:latest");
        docker.pull(&[&reference]);
        assert_eq!(docker.run(&reference, &["hello"]).trim(), "Hello, world!");
        // An unbuilt image is refused, and Nix never runs for it.
        let unbuilt = run_output(docker.docker().args(["pull", &format!("{host}/hello/git")]));
        assert_failed(
            &unbuilt,
            &format!("anonymous docker pull of an unbuilt image ({flow:?})"),
        );
        assert_eq!(metric(&server, "nixery_nix_builds_total"), 1, "{flow:?}");
        run(docker.docker().args(["image", "rm", &reference]));
    }
}
