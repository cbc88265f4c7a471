//! In a real browser (headless Chromium), the status page shows a build
//! error that contains markup as text, and none of that markup runs.
//!
//! Needs Debian's `chromium` (`apt-get install -y chromium`); the test
//! fails, rather than skips, when it is missing.

use std::{
    io::Read,
    os::unix::process::CommandExt,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use support::server::TestServer;

/// The browser binary.
const CHROMIUM: &str = "/usr/bin/chromium";

/// Longest wait for Chromium to load the page and print its DOM.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);

/// What the `xss-failing` build prints, as the browser serialises it when
/// it is text: `<` and `>` escaped, quotes as they are.
const MARKUP_AS_TEXT: &str = "&lt;script&gt;document.title='pwned'&lt;/script&gt;\
                              &lt;img src=x onerror=\"document.title='pwned'\"&gt;";

/// A browser process group, killed (by its id) when dropped or finished.
/// The leader is reaped only after the kill, so the group id cannot have
/// been reused by then.
struct Browser(Option<Child>);

impl Browser {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("browser not reaped yet")
    }

    fn pid(&mut self) -> libc::pid_t {
        libc::pid_t::try_from(self.child().id()).expect("pid fits pid_t")
    }

    /// Whether the browser exited, leaving it unreaped.
    fn exited(&mut self) -> bool {
        // SAFETY: an all-zero siginfo_t is valid; waitid(2) only writes it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        let id = libc::id_t::try_from(self.pid()).expect("pid fits id_t");
        // SAFETY: waitid on our own child with a valid siginfo pointer.
        let result = unsafe { libc::waitid(libc::P_PID, id, &mut info, flags) };
        // SAFETY: si_pid is set (or left zero) by a successful waitid.
        result == 0 && unsafe { info.si_pid() } != 0
    }

    /// Kill what is left of the group, then reap the browser.
    fn finish(&mut self) -> Option<ExitStatus> {
        let mut child = self.0.take()?;
        let pgid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) on the process group we created has no memory
        // effects; Chromium's helpers are in that group.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        child.wait().ok()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Load `url` in headless Chromium with a fresh profile and return the DOM
/// after the page ran (`--dump-dom`).
fn dump_dom(url: &str, profile: &Path) -> String {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: apt-get install -y chromium"
    );
    let child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start chromium");
    let mut browser = Browser(Some(child));
    let mut stdout = browser.child().stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut dom = String::new();
        let _ = stdout.read_to_string(&mut dom);
        dom
    });
    let deadline = Instant::now() + BROWSER_TIMEOUT;
    while !browser.exited() {
        assert!(
            Instant::now() < deadline,
            "chromium did not finish within {BROWSER_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = browser.finish().expect("reap chromium");
    assert!(status.success(), "chromium failed: {status}");
    reader.join().expect("stdout reader")
}

#[test]
fn build_error_markup_is_shown_as_text_and_never_runs_in_a_browser() {
    let server = TestServer::start();
    // xss-failing must fail.
    server
        .get("/v2/xss-failing/manifests/latest")
        .expect_status(500);

    let profile = tempfile::tempdir().expect("browser profile directory");
    let dom = dump_dom(&server.url("/"), profile.path());

    let title = format!("<title>nixery-rs at {}</title>", server.addr());
    assert!(dom.contains(&title), "title changed or missing: {dom}");
    assert!(!dom.contains("pwned</title>"), "a script ran: {dom}");
    let errors = dom
        .find("<ol id=\"errors\">")
        .map(|start| &dom[start..])
        .unwrap_or_else(|| panic!("no error list: {dom}"));
    assert!(errors.contains("<code>xss-failing:latest</code>"), "{dom}");
    assert!(errors.contains(MARKUP_AS_TEXT), "markup not text: {dom}");
    // The page has no script or image of its own, so any is injected.
    assert!(!dom.contains("<script"), "script element in the DOM: {dom}");
    assert!(!dom.contains("<img"), "image element in the DOM: {dom}");
}
