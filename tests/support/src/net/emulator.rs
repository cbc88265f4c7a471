//! One storage emulator process (fake-gcs-server, moto's `moto_server`),
//! what [`crate::gcs::FakeGcs`] and [`crate::s3::MotoS3`] share: the binary
//! found from an environment variable or on `PATH`, a free port, the
//! process started with its output in a log file of its own, probed until
//! it answers, signalled by PID (kill, freeze, thaw), and killed when
//! dropped. A test that fails while an emulator is alive gets the end of
//! that emulator's log printed, as [`crate::server::TestServer`] does for
//! the server's.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Sends `request` to an emulator; fails the test (with the status and
/// body) unless it succeeds. The answer's body.
pub async fn send_ok(request: reqwest::RequestBuilder, what: &str) -> String {
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    assert!(status.is_success(), "{what} failed: {status} {body}");
    body
}

/// Lines of an emulator's log printed when a test fails.
const LOG_LINES_ON_FAILURE: usize = 100;

/// The binary `name`: the file `env_var` names, else the first of
/// `candidates` that exists, else `name` on `PATH`. Panics with `hint` (how
/// to install it) when there is none: the tests fail, never skip, without
/// their emulator.
pub fn locate(name: &str, env_var: &str, candidates: &[&str], hint: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{env_var}={} does not name a file",
            path.display()
        );
        return path;
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    candidates
        .iter()
        .map(PathBuf::from)
        .chain(on_path)
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("{name} not found: {hint}"))
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// An emulator process (or none, between a kill and a restart) and its log.
pub struct Emulator {
    name: &'static str,
    child: Option<Child>,
    log_dir: tempfile::TempDir,
}

impl Emulator {
    /// No process yet; `name` names it in messages.
    pub fn new(name: &'static str) -> Emulator {
        Emulator {
            name,
            child: None,
            log_dir: tempfile::tempdir().expect("temporary directory for an emulator log"),
        }
    }

    /// Starts `command` (after killing any process this value holds), its
    /// stdout and stderr appended to the log, then waits (at most
    /// `within`) until a GET of `probe` gets an answer `answers` accepts.
    /// Panics, with the log, if the process exits or never answers.
    pub async fn start(
        &mut self,
        mut command: Command,
        probe: &str,
        within: Duration,
        answers: fn(&reqwest::Response) -> bool,
    ) {
        self.kill();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the emulator log");
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("emulator log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.name));
        self.child = Some(child);
        let deadline = Instant::now() + within;
        loop {
            if let Ok(response) = reqwest::get(probe).await
                && answers(&response)
            {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "{} exited at start-up: {status}; log:\n{}",
                    self.name,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not answer on {probe} within {within:?}; log:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the process (SIGKILL by PID) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the process (SIGSTOP): connections are accepted by the
    /// kernel but never answered, like a hung backend. Returns once every
    /// thread is stopped: the signal is delivered asynchronously, and a
    /// thread still running could answer.
    pub fn freeze(&self) {
        let pid = self.signal(libc::SIGSTOP);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !all_threads_stopped(pid) {
            assert!(Instant::now() < deadline, "{} did not stop", self.name);
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Lets a frozen process run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    /// Runs `work` with the process frozen ([`Self::freeze`]), thawing it
    /// afterwards: the outcome, or `Err` if `work` took longer than
    /// `within` (a hang).
    pub async fn while_frozen<F: std::future::Future>(
        &self,
        within: Duration,
        work: F,
    ) -> Result<F::Output, tokio::time::error::Elapsed> {
        self.freeze();
        let outcome = tokio::time::timeout(within, work).await;
        self.thaw();
        outcome
    }

    /// Sends `signal` to the process; its PID.
    fn signal(&self, signal: libc::c_int) -> u32 {
        let child = self
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: sends a signal to our own child process by PID.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
        child.id()
    }

    /// What the process wrote so far (every start of it).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.log_dir.path().join("log")
    }
}

impl Drop for Emulator {
    /// Kills the process; when the test is failing, first prints the end
    /// of its log.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let skipped = lines.len().saturating_sub(LOG_LINES_ON_FAILURE);
            eprintln!(
                "--- {} log (last {} of {} lines) ---",
                self.name,
                lines.len() - skipped,
                lines.len()
            );
            for line in &lines[skipped..] {
                eprintln!("{line}");
            }
        }
        self.kill();
    }
}

/// True when every thread of `pid` is in state `T` (stopped).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat"))
            .ok()
            // The state follows the parenthesised command name.
            .and_then(|stat| {
                stat.rsplit_once(") ")
                    .map(|(_, rest)| rest.starts_with('T'))
            })
            .unwrap_or(false)
    })
}
