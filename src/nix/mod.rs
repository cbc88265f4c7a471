//! The Nix step: turning an [`Image`] into realised store paths, their
//! runtime graph and the symlink layer, by running `prepare-image`
//! (`prepare-image/prepare-image.nix`, see NIXERY.md section 3).
//!
//! By default the Nix files embedded in the binary are written to a private
//! directory and `nix-build` (from PATH) runs them; `NIXERY_PREPARE_IMAGE`
//! names a wrapper program to run instead (`prepare-image/default.nix`
//! builds one). Either way the process gets the same arguments
//! (`--timeout`, `--argstr packages|srcType|srcArgs|system|allowUnfree|user|command`),
//! runs in its own process group, has its stderr logged line by line and is
//! stopped with everything it started when the deadline passes or the
//! caller stops waiting.
//!
//! Packages the package set refuses (not found, unfree, removed, ...) are
//! decided during evaluation and come back as [`NixError::Refused`]; see
//! [`refusal`].

mod embedded;
pub(crate) mod process;
pub mod refusal;

pub use embedded::content_hash as embedded_files_hash;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, BufReader};
use tokio::process::Command;

use crate::image::Image;
use crate::layers::RuntimeGraph;
use crate::source::{NixSource, PackageSource};
use process::{ProcessGroup, Tail};
pub use refusal::{Refusal, RefusalReason};

/// Lines of Nix's stderr kept for error reports.
pub const STDERR_TAIL_LINES: usize = 30;

/// Most bytes of stdout read (it holds only store paths).
const MAX_STDOUT_BYTES: u64 = 64 * 1024;

/// Exit status of nix-build when a build hit `--timeout`.
const NIX_TIMEOUT_EXIT_CODE: i32 = 101;

/// How the Nix step runs.
#[derive(Clone, Debug)]
pub struct NixSettings {
    /// Where packages come from.
    pub source: PackageSource,
    /// `NIX_TIMEOUT`: given to Nix as `--timeout`, the longest one build
    /// (one derivation) may run.
    pub timeout: Duration,
    /// `NIXERY_NIX_DEADLINE`: the longest the whole Nix step of an image
    /// (evaluation, downloads, builds) may take; then the process group is
    /// stopped.
    pub deadline: Duration,
    /// `NIXERY_ALLOW_UNFREE`: let the package set evaluate unfree packages.
    pub allow_unfree: bool,
    /// `NIXERY_PREPARE_IMAGE`: a wrapper program to run instead of
    /// `nix-build` with the embedded files.
    pub prepare_image: Option<PathBuf>,
}

/// The symlink layer built by Nix: an uncompressed tarball.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct SymlinkLayer {
    /// Size of the tarball in bytes.
    pub size: u64,
    /// SHA-256 of the tarball (bare hex in Nix's output).
    #[serde(rename = "tarHash", with = "crate::digest::bare_hex")]
    pub tar_hash: crate::digest::Digest,
    /// The tarball's store path.
    pub path: PathBuf,
}

/// What the Nix step produced for an image.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct PrepareResult {
    /// The closure of the requested packages: the top-level store paths and
    /// one entry per path of the closure.
    #[serde(rename = "runtimeGraph")]
    pub runtime_graph: RuntimeGraph,
    /// The symlink layer.
    #[serde(rename = "symlinkLayer")]
    pub symlink_layer: SymlinkLayer,
    /// The main program of the package named by `--argstr command` (its
    /// `meta.mainProgram`, else its only program in `bin/`), when it has
    /// one; see [`crate::image::Image::cmd`].
    #[serde(rename = "mainProgram", default)]
    pub main_program: Option<String>,
}

/// Why the Nix step failed. `Display` is safe to show to clients: it holds
/// no paths or Nix output (those are logged, and the builder keeps them for
/// the status page, see [`NixError::output`]).
#[derive(Debug, thiserror::Error)]
pub enum NixError {
    /// The package set refuses some requested packages (decided during
    /// evaluation; nothing was built).
    #[error("{}", describe_refusals(.0))]
    Refused(Vec<Refusal>),
    /// Evaluation or a build failed.
    #[error("the Nix build of image {image} failed")]
    BuildFailed {
        /// The image (`name:tag`).
        image: String,
        /// The last lines of Nix's stderr.
        stderr_tail: String,
    },
    /// A build or the whole Nix step did not finish in time.
    #[error("the Nix build of image {image} did not finish within {} seconds", .timeout.as_secs())]
    TimedOut {
        /// The image (`name:tag`).
        image: String,
        /// The time limit.
        timeout: Duration,
        /// The last lines of Nix's stderr.
        stderr_tail: String,
    },
    /// The Nix program could not be started.
    #[error("the Nix build could not be started")]
    Spawn(#[source] std::io::Error),
    /// Nix succeeded but its result could not be read.
    #[error("the Nix build produced an unreadable result")]
    BadResult(String),
    /// The private directory for the Nix files could not be prepared, or
    /// the configured package directory is unusable.
    #[error("the Nix step could not be set up: {0}")]
    Setup(String),
}

impl NixError {
    /// What Nix printed last (the tail of its stderr), for a build that
    /// failed or timed out.
    pub fn output(&self) -> Option<&str> {
        match self {
            NixError::BuildFailed { stderr_tail, .. } | NixError::TimedOut { stderr_tail, .. } => {
                Some(stderr_tail)
            }
            _ => None,
        }
    }
}

/// Runs the Nix step; one per server. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct NixRunner {
    program: PathBuf,
    leading_args: Vec<OsString>,
    source: PackageSource,
    timeout: Duration,
    deadline: Duration,
    allow_unfree: bool,
    embedded: bool,
    builds_started: AtomicU64,
    // Keeps the written Nix files alive as long as the runner.
    _files: tempfile::TempDir,
}

impl NixRunner {
    /// Prepare the Nix step: write the embedded Nix files to a private
    /// directory (the offline package set is used from there when the source
    /// is [`PackageSource::Builtin`]) and choose the program to run.
    pub fn new(settings: NixSettings) -> Result<NixRunner, NixError> {
        let files = tempfile::Builder::new()
            .prefix("nixery-nix-")
            .tempdir()
            .map_err(|e| NixError::Setup(format!("creating a directory for the Nix files: {e}")))?;
        embedded::write_all(files.path())
            .map_err(|e| NixError::Setup(format!("writing the Nix files: {e}")))?;

        let embedded = settings.source == PackageSource::Builtin;
        let source = match settings.source {
            PackageSource::Path(path) => PackageSource::Path(path.canonicalize().map_err(|e| {
                NixError::Setup(format!("package set directory {}: {e}", path.display()))
            })?),
            other => other.with_builtin_dir(&files.path().join(embedded::OFFLINE_PKGS)),
        };

        let (program, leading_args) = match settings.prepare_image {
            Some(wrapper) => (wrapper, Vec::new()),
            None => (
                PathBuf::from("nix-build"),
                vec![
                    "--no-out-link".into(),
                    files.path().join(embedded::PREPARE_IMAGE).into(),
                    "--argstr".into(),
                    "loadPkgs".into(),
                    files.path().join(embedded::LOAD_PKGS).into(),
                ],
            ),
        };

        Ok(NixRunner {
            program,
            leading_args,
            source,
            timeout: settings.timeout,
            deadline: settings.deadline,
            allow_unfree: settings.allow_unfree,
            embedded,
            builds_started: AtomicU64::new(0),
            _files: files,
        })
    }

    /// Whether the package set may evaluate unfree packages (the
    /// `allowUnfree` argument of every build).
    pub fn allow_unfree(&self) -> bool {
        self.allow_unfree
    }

    /// The package source in use (`Builtin` resolved to its directory).
    pub fn source(&self) -> &PackageSource {
        &self.source
    }

    /// The hash of the embedded Nix files when the source is the embedded
    /// package set (its revision, see [`crate::resolve`]).
    pub fn embedded_hash(&self) -> Option<String> {
        self.embedded.then(embedded_files_hash)
    }

    /// How many Nix processes this runner has started.
    pub fn builds_started(&self) -> u64 {
        self.builds_started.load(Ordering::Relaxed)
    }

    /// The full argument vector for `image` built from `source` (after
    /// the program name).
    fn args(&self, image: &Image, source: &NixSource) -> Vec<OsString> {
        let packages = serde_json::Value::from(image.packages.clone()).to_string();
        let mut args = self.leading_args.clone();
        let timeout_secs = self.timeout.as_secs().max(1).to_string();
        for arg in ["--timeout", timeout_secs.as_str()] {
            args.push(arg.into());
        }
        for (name, value) in [
            ("packages", packages),
            ("srcType", source.src_type().to_string()),
            ("srcArgs", source.src_args()),
            ("system", image.arch.nix_system().to_string()),
            ("allowUnfree", self.allow_unfree.to_string()),
            ("user", crate::image::User::nix_arg(image.user.as_ref())),
            ("command", image.command_package().unwrap_or("").to_owned()),
        ] {
            args.push("--argstr".into());
            args.push(name.into());
            args.push(value.into());
        }
        args
    }

    /// Run the Nix step for `image` from `source` (a package set resolved
    /// to an exact revision, see [`crate::resolve`]). Stops the Nix process
    /// group (and so its builds) when the deadline passes or when the
    /// returned future is dropped. Failures are logged here and reported by
    /// the caller.
    pub async fn prepare_image(
        &self,
        image: &Image,
        source: &NixSource,
    ) -> Result<PrepareResult, NixError> {
        let label = format!("{}:{}", image.name, image.tag);
        let result = self.run(image, &label, source).await;
        match &result {
            Err(NixError::Refused(refusals)) => {
                let refused: Vec<String> = refusals.iter().map(ToString::to_string).collect();
                tracing::info!(image = %label, refused = ?refused, "packages refused");
            }
            Err(error) => {
                tracing::error!(image = %label, error = %error_chain(error), "nix build failed");
            }
            Ok(_) => {}
        }
        result
    }

    async fn run(
        &self,
        image: &Image,
        label: &str,
        source: &NixSource,
    ) -> Result<PrepareResult, NixError> {
        self.builds_started.fetch_add(1, Ordering::Relaxed);
        tracing::info!(image = %label, system = image.arch.nix_system(), "nix build started");

        let mut command = Command::new(&self.program);
        command
            .args(self.args(image, source))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command.spawn().map_err(NixError::Spawn)?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let mut group = ProcessGroup::new(child);

        let tail = Arc::new(Mutex::new(Tail::new(STDERR_TAIL_LINES)));
        let markers = Arc::new(Mutex::new(refusal::Markers::default()));
        let stderr_task = stderr.map(|stderr| {
            let tail = tail.clone();
            let markers = markers.clone();
            let label = label.to_string();
            tokio::spawn(async move {
                let result = process::for_each_line(BufReader::new(stderr), |line| {
                    tracing::info!(image = %label, line = %line, "nix output");
                    markers.lock().offer(&line);
                    tail.lock().push(line);
                })
                .await;
                if let Err(error) = result {
                    tracing::warn!(image = %label, error = %error, "reading nix output failed");
                }
            })
        });

        let work = async {
            let read_stdout = async {
                let mut out = Vec::new();
                if let Some(stdout) = stdout {
                    stdout.take(MAX_STDOUT_BYTES).read_to_end(&mut out).await?;
                }
                Ok::<_, std::io::Error>(out)
            };
            let (status, out) = tokio::join!(group.wait(), read_stdout);
            Ok::<_, std::io::Error>((status?, out?))
        };
        let outcome = tokio::time::timeout(self.deadline, work).await;

        let timed_out = outcome.is_err();
        if timed_out {
            group.terminate().await;
        }
        if let Some(task) = stderr_task {
            // The pipe closes when the group is gone; don't wait forever on a
            // stray process that inherited it.
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
        let stderr_tail = tail.lock().joined();

        let (status, stdout) = match outcome {
            Err(_) => {
                return Err(NixError::TimedOut {
                    image: label.to_string(),
                    timeout: self.deadline,
                    stderr_tail,
                });
            }
            Ok(Err(io)) => return Err(NixError::BadResult(format!("waiting for nix-build: {io}"))),
            Ok(Ok(done)) => done,
        };

        if !status.success() {
            let refused = refusal::refusals(&markers.lock(), &stderr_tail, image.arch.nix_system());
            if !refused.is_empty() {
                return Err(NixError::Refused(refused));
            }
            let nix_timed_out = status.code() == Some(NIX_TIMEOUT_EXIT_CODE)
                || tail.lock().contains("timed out after");
            return Err(if nix_timed_out {
                NixError::TimedOut {
                    image: label.to_string(),
                    timeout: self.timeout,
                    stderr_tail,
                }
            } else {
                NixError::BuildFailed {
                    image: label.to_string(),
                    stderr_tail,
                }
            });
        }

        let result_path = last_line(&stdout)
            .ok_or_else(|| NixError::BadResult("no result path on stdout".into()))?;
        let bytes = tokio::fs::read(&result_path)
            .await
            .map_err(|e| NixError::BadResult(format!("reading {}: {e}", result_path.display())))?;
        let result = parse_result(&bytes)?;
        tracing::info!(image = %label, result = %result_path.display(), "nix build finished");
        Ok(result)
    }
}

/// The error and its sources, for logs.
fn error_chain(error: &NixError) -> String {
    match error {
        NixError::BadResult(detail) => format!("{error}: {detail}"),
        other => crate::error_text::chain(other),
    }
}

/// The last non-empty line of `stdout`, as a path.
fn last_line(stdout: &[u8]) -> Option<PathBuf> {
    let text = String::from_utf8_lossy(stdout);
    text.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map(PathBuf::from)
}

/// The refusals as one message for clients: each package and why, joined
/// by "; ".
pub fn describe_refusals(refusals: &[Refusal]) -> String {
    let parts: Vec<String> = refusals.iter().map(ToString::to_string).collect();
    parts.join("; ")
}

/// Parse and check the result file of prepare-image.nix.
fn parse_result(bytes: &[u8]) -> Result<PrepareResult, NixError> {
    let result: PrepareResult = serde_json::from_slice(bytes)
        .map_err(|e| NixError::BadResult(format!("result is not the expected JSON: {e}")))?;
    let layer = &result.symlink_layer;
    if !layer.path.is_absolute() {
        return Err(NixError::BadResult("malformed symlink layer".into()));
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "a07d9188738b39352af845703290564df550048d790e8824e2a0241eed3286db";

    #[test]
    fn built_result_is_parsed() {
        let json = format!(
            r#"{{"runtimeGraph":{{"exportReferencesGraph":{{"graph":["/nix/store/a-x"]}},"graph":[{{"path":"/nix/store/a-x","closureSize":1,"references":[]}}]}},
               "symlinkLayer":{{"size":10240,"tarHash":"{HASH}","path":"/nix/store/b-layer/layer.tar"}}}}"#
        );
        let result = parse_result(json.as_bytes()).unwrap();
        assert_eq!(result.symlink_layer.size, 10240);
        assert_eq!(result.symlink_layer.tar_hash.hex(), HASH);
        assert_eq!(result.runtime_graph.graph[0].closure_size, 1);
    }

    #[test]
    fn malformed_results_are_bad_results() {
        for json in [
            "not json".to_string(),
            r#"{"error":"not_found","pkgs":[]}"#.to_string(),
            format!(r#"{{"runtimeGraph":{{"graph":[]}},"symlinkLayer":{{"size":1,"tarHash":"{HASH}","path":"/x"}}}}"#),
            r#"{"runtimeGraph":{"exportReferencesGraph":{"graph":[]},"graph":[]},"symlinkLayer":{"size":1,"tarHash":"zz","path":"/x"}}"#.to_string(),
            format!(r#"{{"runtimeGraph":{{"exportReferencesGraph":{{"graph":[]}},"graph":[]}},"symlinkLayer":{{"size":1,"tarHash":"{HASH}","path":"x"}}}}"#),
        ] {
            assert!(matches!(parse_result(json.as_bytes()), Err(NixError::BadResult(_))), "{json}");
        }
    }

    #[test]
    fn result_path_is_the_last_non_empty_line() {
        assert_eq!(
            last_line(b"/nix/store/a\n/nix/store/b\n\n"),
            Some(PathBuf::from("/nix/store/b"))
        );
        assert_eq!(last_line(b"\n"), None);
    }

    #[test]
    fn error_messages_hold_no_nix_output() {
        let err = NixError::BuildFailed {
            image: "hello:latest".into(),
            stderr_tail: "/nix/store/secret-path".into(),
        };
        assert_eq!(
            err.to_string(),
            "the Nix build of image hello:latest failed"
        );
        let err = NixError::TimedOut {
            image: "sleepy:latest".into(),
            timeout: Duration::from_secs(3),
            stderr_tail: "/nix/store/x".into(),
        };
        assert_eq!(
            err.to_string(),
            "the Nix build of image sleepy:latest did not finish within 3 seconds"
        );
        let refusal = |package: &str| Refusal {
            package: package.into(),
            reason: RefusalReason::NotFound,
            system: "x86_64-linux".into(),
            message: None,
        };
        assert_eq!(
            NixError::Refused(vec![refusal("a"), refusal("b")]).to_string(),
            "package 'a' is not in the package set; package 'b' is not in the package set"
        );
    }

    #[test]
    fn arguments_carry_packages_as_json_and_the_source() {
        let runner = NixRunner::new(NixSettings {
            source: PackageSource::Git("file:///srv/pkgs".into()),
            timeout: Duration::from_secs(7),
            deadline: Duration::from_secs(70),
            allow_unfree: false,
            prepare_image: Some(PathBuf::from("/bin/wrapper")),
        })
        .unwrap();
        let image = Image {
            name: "x".into(),
            tag: "main".into(),
            packages: vec!["a\"b".into(), "${c}".into()],
            arch: crate::image::Arch::Arm64,
            user: crate::image::User::from_meta_package("user-1000"),
            first_package: Some("x".into()),
        };
        let source = NixSource::Git {
            url: "file:///srv/pkgs".into(),
            rev: "0123456789abcdef0123456789abcdef01234567".into(),
            reference: Some("refs/heads/main".into()),
        };
        let mut args: Vec<String> = runner
            .args(&image, &source)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let src_args: serde_json::Value = serde_json::from_str(&args[10]).unwrap();
        assert_eq!(
            src_args,
            serde_json::json!({"url": "file:///srv/pkgs", "rev": "0123456789abcdef0123456789abcdef01234567", "ref": "refs/heads/main"})
        );
        args[10] = "<srcArgs>".into();
        assert_eq!(
            args,
            [
                "--timeout",
                "7",
                "--argstr",
                "packages",
                r#"["a\"b","${c}"]"#,
                "--argstr",
                "srcType",
                "git",
                "--argstr",
                "srcArgs",
                "<srcArgs>",
                "--argstr",
                "system",
                "aarch64-linux",
                "--argstr",
                "allowUnfree",
                "false",
                "--argstr",
                "user",
                r#"{"home":"/home/user","name":"user","uid":1000}"#,
                "--argstr",
                "command",
                "x"
            ]
        );
    }
}
