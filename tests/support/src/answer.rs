//! Requests to a [`TestServer`] read into an [`Answer`], and the one way
//! the tests wait on a slow path (a cold build, single flight, a failing
//! backend): [`Call::expect_status`], which fails the test unless the
//! answer has the status the test expects, naming the request, the status
//! it got and the body. The server's log is printed as the test fails
//! (see [`TestServer`]'s `Drop`), so every failed wait shows what the
//! server did.
//!
//! ```ignore
//! let manifest = server
//!     .get("/v2/hello/manifests/latest")
//!     .accept(MANIFEST_V2)
//!     .expect_status(200)
//!     .json();
//! let refused = server.get("/v2/nosuchpkg/manifests/latest").send();
//! assert_eq!(refused.status, 404, "{}", refused.text());
//! ```

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use crate::server::TestServer;

/// How long a request may wait for its answer: long enough for the
/// slowest cold build of the offline package set on a loaded machine.
pub const SLOW: Duration = Duration::from_secs(600);

/// A whole answer: status, headers and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Header lines in order, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Answer {
    /// First header named `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; fails the test (with the body) if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "a {} answer whose body is not JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }

    /// The body as registry error JSON: `(code, message)` of the first error.
    pub fn registry_error(&self) -> Option<(String, String)> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        let e = &v["errors"][0];
        Some((
            e["code"].as_str()?.to_owned(),
            e["message"].as_str()?.to_owned(),
        ))
    }
}

/// Why [`TestServer::pull`] failed.
#[derive(Debug)]
pub enum PullError {
    /// The manifest request did not answer 200.
    Manifest(Answer),
    /// A blob of the served manifest was not served whole: how.
    Blob(String),
}

impl std::fmt::Display for PullError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PullError::Manifest(answer) => {
                write!(f, "manifest: {} {}", answer.status, answer.text())
            }
            PullError::Blob(how) => f.write_str(how),
        }
    }
}

/// `call` sending `headers` too.
fn with_headers<'s>(headers: &[(&str, &str)], call: Call<'s>) -> Call<'s> {
    headers
        .iter()
        .fold(call, |call, (name, value)| call.header(name, value))
}

/// A request to a [`TestServer`], built by [`TestServer::get`],
/// [`TestServer::head`] or [`TestServer::call`].
#[must_use = "a call does nothing until it is sent"]
pub struct Call<'a> {
    server: &'a TestServer,
    method: reqwest::Method,
    path: String,
    headers: Vec<(String, String)>,
    timeout: Duration,
    follow_redirects: bool,
}

impl TestServer {
    /// `GET <path>`.
    pub fn get(&self, path: &str) -> Call<'_> {
        self.call(reqwest::Method::GET, path)
    }

    /// `HEAD <path>`.
    pub fn head(&self, path: &str) -> Call<'_> {
        self.call(reqwest::Method::HEAD, path)
    }

    /// `<method> <path>`, waiting at most [`SLOW`] for the answer.
    pub fn call(&self, method: reqwest::Method, path: &str) -> Call<'_> {
        Call {
            server: self,
            method,
            path: path.to_owned(),
            headers: Vec::new(),
            timeout: SLOW,
            follow_redirects: true,
        }
    }

    /// GET of `path` with one `Accept` line per entry of `accept`, which
    /// must answer 200 with a `Docker-Content-Digest` naming its body (a
    /// manifest, index or blob): its content type, digest and body.
    pub fn get_document(&self, path: &str, accept: &[&str]) -> (String, String, Vec<u8>) {
        let answer = self.get(path).accept_all(accept).expect_status(200);
        let header = |name: &str| answer.header(name).unwrap_or_default().to_owned();
        let (content_type, digest) = (header("content-type"), header("docker-content-digest"));
        let body_digest = format!("sha256:{}", crate::server::sha256_hex(&answer.body));
        assert_eq!(digest, body_digest, "GET {path} {accept:?}");
        (content_type, digest, answer.body)
    }

    /// Pulls `name:latest` as a client does: the Docker manifest, then
    /// every blob it names (redirects followed), each checked against its
    /// digest. The manifest, or what went wrong.
    pub fn pull(&self, name: &str) -> Result<serde_json::Value, PullError> {
        self.pull_with(name, &[])
    }

    /// [`Self::pull`] sending `headers` (credentials) with every request.
    pub fn pull_with(
        &self,
        name: &str,
        headers: &[(&str, &str)],
    ) -> Result<serde_json::Value, PullError> {
        let manifest = with_headers(headers, self.get(&format!("/v2/{name}/manifests/latest")))
            .accept(crate::server::MANIFEST_V2)
            .send();
        if manifest.status != 200 {
            return Err(PullError::Manifest(manifest));
        }
        let manifest = manifest.json();
        self.fetch_blobs_with(name, &manifest, headers)?;
        Ok(manifest)
    }

    /// The second half of [`Self::pull`]: every blob `manifest` names,
    /// fetched from `name` (redirects followed) and checked against its
    /// digest.
    pub fn fetch_blobs(&self, name: &str, manifest: &serde_json::Value) -> Result<(), PullError> {
        self.fetch_blobs_with(name, manifest, &[])
    }

    fn fetch_blobs_with(
        &self,
        name: &str,
        manifest: &serde_json::Value,
        headers: &[(&str, &str)],
    ) -> Result<(), PullError> {
        let config = manifest["config"]["digest"]
            .as_str()
            .unwrap_or_else(|| panic!("a manifest without a config digest: {manifest}"))
            .to_owned();
        for digest in crate::layer_digests(manifest).into_iter().chain([config]) {
            let blob =
                with_headers(headers, self.get(&format!("/v2/{name}/blobs/{digest}"))).send();
            if blob.status != 200 {
                let how = format!("blob {digest} of {name}: {} {}", blob.status, blob.text());
                return Err(PullError::Blob(how));
            }
            if format!("sha256:{}", crate::server::sha256_hex(&blob.body)) != digest {
                return Err(PullError::Blob(format!(
                    "blob {digest} of {name}: wrong bytes"
                )));
            }
        }
        Ok(())
    }

    /// Where `method path` redirects to: the answer must be a `303`
    /// (not followed); its `Location`.
    pub async fn redirect_location(&self, method: reqwest::Method, path: &str) -> String {
        let answer = self
            .call(method, path)
            .without_redirects()
            .expect_status_async(303)
            .await;
        answer
            .header("location")
            .unwrap_or_else(|| panic!("a 303 without a location: {answer:?}"))
            .to_owned()
    }
}

impl Call<'_> {
    /// Adds the header `name: value` (a repeated name adds another line).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Adds an `Accept` header line.
    pub fn accept(self, media_type: &str) -> Self {
        self.header("Accept", media_type)
    }

    /// Adds one `Accept` header line per entry of `media_types`.
    pub fn accept_all(self, media_types: &[&str]) -> Self {
        media_types
            .iter()
            .fold(self, |call, media_type| call.accept(media_type))
    }

    /// Waits at most `timeout` instead of [`SLOW`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Answers redirects instead of following them.
    pub fn without_redirects(mut self) -> Self {
        self.follow_redirects = false;
        self
    }

    fn redirect_policy(&self) -> reqwest::redirect::Policy {
        if self.follow_redirects {
            reqwest::redirect::Policy::default()
        } else {
            reqwest::redirect::Policy::none()
        }
    }

    /// `METHOD path`, to name the request in failures.
    fn what(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    fn header_map(&self) -> reqwest::header::HeaderMap {
        let mut map = reqwest::header::HeaderMap::new();
        for (name, value) in &self.headers {
            let name = reqwest::header::HeaderName::try_from(name.as_str()).expect("header name");
            map.append(name, value.parse().expect("header value"));
        }
        map
    }

    /// Sends the request and reads the whole answer, whatever its status;
    /// no answer within the timeout fails the test. Blocks the calling
    /// thread (the request runs on a runtime of its own, so this works in
    /// async tests too, inside `block_in_place`).
    pub fn send(self) -> Answer {
        std::thread::scope(|scope| {
            let request = scope.spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the request")
                    .block_on(self.send_async())
            });
            request
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// [`Self::send`] from async code.
    pub async fn send_async(self) -> Answer {
        let what = self.what();
        let response = reqwest::Client::builder()
            .redirect(self.redirect_policy())
            .build()
            .expect("HTTP client")
            .request(self.method.clone(), self.server.url(&self.path))
            .headers(self.header_map())
            .timeout(self.timeout)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
                (k.as_str().to_owned(), value)
            })
            .collect();
        let body = response
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("{what}: the body of a {status} answer broke off: {e}"))
            .to_vec();
        Answer {
            status,
            headers,
            body,
        }
    }

    /// Sends the request (blocking); fails the test unless the answer has
    /// `status`, naming the request, the status it got and the body.
    pub fn expect_status(self, status: u16) -> Answer {
        let what = self.what();
        check(self.send(), status, &what)
    }

    /// [`Self::expect_status`] from async code.
    pub async fn expect_status_async(self, status: u16) -> Answer {
        let what = self.what();
        check(self.send_async().await, status, &what)
    }
}

fn check(answer: Answer, status: u16, what: &str) -> Answer {
    assert_eq!(
        answer.status,
        status,
        "{what}: expected {status}, got {} (the server's log follows): {}",
        answer.status,
        answer.text()
    );
    answer
}

/// Reads from `stream` until a whole response head has arrived: what was
/// read (the head, and any body bytes after it) and where the head ends.
/// Fails the test if the connection closes first.
pub fn read_head(stream: &mut impl Read) -> (Vec<u8>, usize) {
    let mut received = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf).expect("read the response head");
        assert!(n > 0, "connection closed before the response head");
        received.extend_from_slice(&buf[..n]);
        if let Some(pos) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            return (received, pos + 4);
        }
    }
}

/// Sends `method target` as raw bytes (no client-side normalisation of `..`
/// or percent escapes) and reads the whole answer (`Connection: close`).
pub fn raw_request(addr: SocketAddr, method: &str, target: &[u8]) -> Answer {
    raw_request_with(addr, method, target, b"")
}

/// [`raw_request`] with `headers` (whole lines, each ending in `\r\n`,
/// any bytes) added to the head.
pub fn raw_request_with(addr: SocketAddr, method: &str, target: &[u8], headers: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("set timeout");
    let mut request = Vec::new();
    request.extend_from_slice(method.as_bytes());
    request.push(b' ');
    request.extend_from_slice(target);
    request.extend_from_slice(b" HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    request.extend_from_slice(headers);
    request.extend_from_slice(b"\r\n");
    stream.write_all(&request).expect("send request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    parse_raw(&raw)
}

fn parse_raw(raw: &[u8]) -> Answer {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header block in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}
