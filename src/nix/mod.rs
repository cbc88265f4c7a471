//! The Nix step: turning an [`Image`] into realised store paths, their
//! runtime graph and the symlink layer.
//!
//! Nix does only what Nix must: `prepare-image`
//! (`prepare-image/prepare-image.nix`, see NIXERY.md section 3) evaluates
//! the requested names to their derivations and `nix-build` realises them,
//! printing their store paths. Then one `nix path-info` reads their
//! closure from the store ([`graph`]), and the symlink layer is computed
//! here ([`crate::symlink_layer`]), as is the command package's main
//! program ([`crate::main_program`]). [`PrepareResult::phases`] says how
//! long each of the three took.
//!
//! By default the Nix files embedded in the binary are written to a private
//! directory and `nix-build` and `nix` (from PATH) run; `NIXERY_PREPARE_IMAGE`
//! names a wrapper program to run instead (`prepare-image/default.nix`
//! builds one): it gets the arguments `nix-build` would get after the file
//! name (`--timeout`, `--argstr packages|srcType|srcArgs|system|allowUnfree|command`),
//! or `path-info` and the store paths for the graph. Every process runs in
//! its own process group, has its stderr logged line by line and is
//! stopped with everything it started when the step's deadline passes or
//! the caller stops waiting.
//!
//! Packages the package set refuses (not found, unfree, removed, ...) are
//! decided during evaluation and come back as [`NixError::Refused`]; see
//! [`refusal`].

mod embedded;
pub mod graph;
pub(crate) mod process;
pub mod refusal;

pub use embedded::content_hash as embedded_files_hash;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::io::{AsyncReadExt, BufReader};
use tokio::process::Command;

use crate::image::Image;
use crate::layers::RuntimeGraph;
use crate::source::{NixSource, PackageSource};
pub use crate::symlink_layer::SymlinkLayer;
use process::{ProcessGroup, Tail};
pub use refusal::{Refusal, RefusalReason};

/// Lines of Nix's stderr kept for error reports.
pub const STDERR_TAIL_LINES: usize = 30;

/// Most bytes of nix-build's stdout read (it holds only store paths).
const MAX_STDOUT_BYTES: u64 = 1024 * 1024;

/// Most bytes of `nix path-info`'s stdout read (about 400 bytes a path).
const MAX_PATH_INFO_BYTES: u64 = 256 * 1024 * 1024;

/// The prefix of the stderr line that names the command package.
const COMMAND_MARKER: &str = "trace: nixery-command ";

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

/// What the Nix step produced for an image.
#[derive(Clone, Debug, PartialEq)]
pub struct PrepareResult {
    /// The closure of the requested packages: the top-level store paths and
    /// one entry per path of the closure.
    pub runtime_graph: RuntimeGraph,
    /// The symlink layer.
    pub symlink_layer: SymlinkLayer,
    /// The main program of the package named by `--argstr command` (see
    /// [`crate::main_program`]), when it has one; see
    /// [`crate::image::Image::cmd`].
    pub main_program: Option<String>,
    /// How long each part took.
    pub phases: NixPhases,
}

/// How long each part of the Nix step took.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NixPhases {
    /// Evaluating the names and realising the packages (`nix-build`).
    pub realise: Duration,
    /// Reading the closure from the store (`nix path-info`).
    pub graph: Duration,
    /// Computing the symlink layer and the main program.
    pub symlink_layer: Duration,
}

/// The command package as prepare-image traces it.
#[derive(Debug, Deserialize)]
struct CommandPackage {
    /// Its store path.
    path: String,
    /// Its declared `meta.mainProgram`, or empty.
    #[serde(rename = "mainProgram")]
    main_program: String,
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
    /// The symlink layer could not be made from the realised packages.
    #[error("the symlink layer of the image could not be made")]
    SymlinkLayer(#[source] crate::symlink_layer::SymlinkLayerError),
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
    path_info_program: PathBuf,
    path_info_args: Vec<OsString>,
    source: PackageSource,
    timeout: Duration,
    deadline: Duration,
    allow_unfree: bool,
    embedded: bool,
    builds_started: AtomicU64,
    // Keeps the written Nix files alive as long as the runner.
    _files: tempfile::TempDir,
}

/// What one Nix process left behind.
struct Finished {
    status: std::process::ExitStatus,
    stdout: Vec<u8>,
    stderr_tail: String,
    markers: refusal::Markers,
    command: Option<String>,
}

impl NixRunner {
    /// Prepare the Nix step: write the embedded Nix files to a private
    /// directory (the offline package set is used from there when the source
    /// is [`PackageSource::Builtin`]) and choose the programs to run.
    pub fn new(settings: NixSettings) -> Result<NixRunner, NixError> {
        let files = embedded::create_dir()
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

        let (program, leading_args, path_info_program, path_info_args) =
            match settings.prepare_image {
                Some(wrapper) => (
                    wrapper.clone(),
                    Vec::new(),
                    wrapper,
                    vec![OsString::from("path-info")],
                ),
                None => (
                    PathBuf::from("nix-build"),
                    vec![
                        "--no-out-link".into(),
                        files.path().join(embedded::PREPARE_IMAGE).into(),
                        "--argstr".into(),
                        "loadPkgs".into(),
                        files.path().join(embedded::LOAD_PKGS).into(),
                    ],
                    PathBuf::from("nix"),
                    graph::PATH_INFO_ARGS.iter().map(OsString::from).collect(),
                ),
            };

        Ok(NixRunner {
            program,
            leading_args,
            path_info_program,
            path_info_args,
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

    /// How many Nix steps (`nix-build` processes) this runner has started.
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
        let result = self.prepare(image, &label, source).await;
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

    async fn prepare(
        &self,
        image: &Image,
        label: &str,
        source: &NixSource,
    ) -> Result<PrepareResult, NixError> {
        let deadline = Instant::now() + self.deadline;
        let started = Instant::now();
        let (tops, command) = self.realise(image, label, source, deadline).await?;
        let realised = Instant::now();
        let runtime_graph = self.runtime_graph(label, &tops, deadline).await?;
        let graphed = Instant::now();

        let packages: Vec<PathBuf> = tops.iter().map(PathBuf::from).collect();
        let user = image.user.clone();
        let (symlink_layer, main_program) = tokio::task::spawn_blocking(move || {
            let layer = crate::symlink_layer::build(&packages, user.as_ref())?;
            let program = command.and_then(|command| {
                crate::main_program::choose(Path::new(&command.path), &command.main_program)
            });
            Ok::<_, crate::symlink_layer::SymlinkLayerError>((layer, program))
        })
        .await
        .map_err(|e| NixError::BadResult(format!("the symlink layer task failed: {e}")))?
        .map_err(NixError::SymlinkLayer)?;
        let phases = NixPhases {
            realise: realised - started,
            graph: graphed - realised,
            symlink_layer: graphed.elapsed(),
        };
        tracing::info!(
            image = %label,
            packages = tops.len(),
            paths = runtime_graph.graph.len(),
            symlink_layer = %symlink_layer.tar_hash,
            "nix build finished"
        );
        Ok(PrepareResult {
            runtime_graph,
            symlink_layer,
            main_program,
            phases,
        })
    }

    /// Evaluate and realise the packages: their store paths (sorted, each
    /// once) and the command package nix-build traced, if any.
    async fn realise(
        &self,
        image: &Image,
        label: &str,
        source: &NixSource,
        deadline: Instant,
    ) -> Result<(Vec<String>, Option<CommandPackage>), NixError> {
        self.builds_started.fetch_add(1, Ordering::Relaxed);
        tracing::info!(image = %label, system = image.arch.nix_system(), "nix build started");
        let args = self.args(image, source);
        let finished = self
            .run(label, &self.program, &args, MAX_STDOUT_BYTES, deadline)
            .await?;

        if !finished.status.success() {
            let refused = refusal::refusals(
                &finished.markers,
                &finished.stderr_tail,
                image.arch.nix_system(),
            );
            if !refused.is_empty() {
                return Err(NixError::Refused(refused));
            }
            return Err(self.failure(label, &finished));
        }

        let mut tops = store_paths(&finished.stdout)?;
        tops.sort();
        tops.dedup();
        let command = match finished.command {
            None => None,
            Some(json) => Some(serde_json::from_str::<CommandPackage>(&json).map_err(|e| {
                NixError::BadResult(format!("unreadable command package trace: {e}"))
            })?),
        };
        if let Some(command) = &command
            && !tops.contains(&command.path)
        {
            return Err(NixError::BadResult(format!(
                "the command package {} was not realised",
                command.path
            )));
        }
        Ok((tops, command))
    }

    /// The runtime graph of `tops`, read with one `nix path-info`.
    async fn runtime_graph(
        &self,
        label: &str,
        tops: &[String],
        deadline: Instant,
    ) -> Result<RuntimeGraph, NixError> {
        if tops.is_empty() {
            return graph::parse(tops, b"[]").map_err(NixError::BadResult);
        }
        let mut args = self.path_info_args.clone();
        args.extend(tops.iter().map(OsString::from));
        let finished = self
            .run(
                label,
                &self.path_info_program,
                &args,
                MAX_PATH_INFO_BYTES,
                deadline,
            )
            .await?;
        if !finished.status.success() {
            return Err(self.failure(label, &finished));
        }
        graph::parse(tops, &finished.stdout).map_err(NixError::BadResult)
    }

    /// The error of a Nix process that exited unsuccessfully.
    fn failure(&self, label: &str, finished: &Finished) -> NixError {
        let nix_timed_out = finished.status.code() == Some(NIX_TIMEOUT_EXIT_CODE)
            || finished.stderr_tail.contains("timed out after");
        if nix_timed_out {
            NixError::TimedOut {
                image: label.to_string(),
                timeout: self.timeout,
                stderr_tail: finished.stderr_tail.clone(),
            }
        } else {
            NixError::BuildFailed {
                image: label.to_string(),
                stderr_tail: finished.stderr_tail.clone(),
            }
        }
    }

    /// Run `program` with `args` in its own process group until it exits
    /// or `deadline` passes (then the group is stopped and the step has
    /// timed out), keeping at most `stdout_limit` bytes of its stdout and
    /// logging its stderr.
    async fn run(
        &self,
        label: &str,
        program: &Path,
        args: &[OsString],
        stdout_limit: u64,
        deadline: Instant,
    ) -> Result<Finished, NixError> {
        let mut command = Command::new(program);
        command
            .args(args)
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
        let command_line: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let stderr_task = stderr.map(|stderr| {
            let tail = tail.clone();
            let markers = markers.clone();
            let command_line = command_line.clone();
            let label = label.to_string();
            tokio::spawn(async move {
                let result = process::for_each_line(BufReader::new(stderr), |line| {
                    tracing::info!(image = %label, line = %line, "nix output");
                    markers.lock().offer(&line);
                    if let Some(json) = line.strip_prefix(COMMAND_MARKER) {
                        // The first one: evaluation traces it before any
                        // build prints anything.
                        command_line.lock().get_or_insert_with(|| json.to_owned());
                    }
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
                    stdout.take(stdout_limit).read_to_end(&mut out).await?;
                }
                Ok::<_, std::io::Error>(out)
            };
            let (status, out) = tokio::join!(group.wait(), read_stdout);
            Ok::<_, std::io::Error>((status?, out?))
        };
        let outcome = tokio::time::timeout_at(deadline.into(), work).await;

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
            Ok(Err(io)) => {
                return Err(NixError::BadResult(format!(
                    "waiting for {}: {io}",
                    program.display()
                )));
            }
            Ok(Ok(done)) => done,
        };
        let markers = std::mem::take(&mut *markers.lock());
        let command = command_line.lock().take();
        Ok(Finished {
            status,
            stdout,
            stderr_tail,
            markers,
            command,
        })
    }
}

/// The store paths nix-build printed, one a line.
fn store_paths(stdout: &[u8]) -> Result<Vec<String>, NixError> {
    let text = std::str::from_utf8(stdout)
        .map_err(|_| NixError::BadResult("nix-build printed a path that is not UTF-8".into()))?;
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| {
            let path = Path::new(line);
            let plain = path.is_absolute()
                && path
                    .components()
                    .all(|c| !matches!(c, std::path::Component::ParentDir));
            if plain {
                Ok(line.to_owned())
            } else {
                Err(NixError::BadResult(format!(
                    "nix-build printed {line:?}, not a store path"
                )))
            }
        })
        .collect()
}

/// The error and its sources, for logs.
fn error_chain(error: &NixError) -> String {
    match error {
        NixError::BadResult(detail) => format!("{error}: {detail}"),
        other => crate::error_text::chain(other),
    }
}

/// The refusals as one message for clients: each package and why, joined
/// by "; ".
pub fn describe_refusals(refusals: &[Refusal]) -> String {
    let parts: Vec<String> = refusals.iter().map(ToString::to_string).collect();
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realised_paths_are_the_non_empty_lines() {
        assert_eq!(
            store_paths(b"/nix/store/a-x\n\n/nix/store/b-y\n").unwrap(),
            ["/nix/store/a-x", "/nix/store/b-y"]
        );
        assert!(store_paths(b"").unwrap().is_empty());
        for bad in [
            &b"relative\n"[..],
            b"/nix/store/../etc\n",
            b"/nix/store/\xff\n",
        ] {
            assert!(matches!(store_paths(bad), Err(NixError::BadResult(_))));
        }
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
                "command",
                "x"
            ]
        );
    }
}
