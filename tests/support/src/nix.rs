//! The Nix step as the server runs it, for the `nix_*` integration tests:
//! the package source is resolved to an exact revision first
//! ([`nixery::resolve`]) and the Nix runner is given that resolution, so
//! the tests build with exactly the arguments the server sends. Plus
//! readers of the runtime graph. They run the real `nix-build`; without it
//! the tests fail.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use nixery::build_errors::FailureKind;
use nixery::builder::BuildError;
use nixery::image::Image;
use nixery::layers::PathInfo;
use nixery::nix::{NixError, NixRunner, NixSettings, PrepareResult, RefusalReason};
use nixery::resolve::{DEFAULT_CHANNEL_REMOTE, Resolved, Resolver, ResolverSettings};
use nixery::source::PackageSource;

/// A Nix runner and the resolver in front of it, set up as the server sets
/// them up.
pub struct NixStep {
    runner: NixRunner,
    resolver: Resolver,
}

impl NixStep {
    /// The step for `settings`, resolving git refs and channels afresh at
    /// most once a minute.
    pub fn new(settings: NixSettings) -> NixStep {
        let runner = NixRunner::new(settings).expect("set up the Nix runner");
        let resolver = Resolver::new(ResolverSettings {
            source: runner.source().clone(),
            embedded_hash: runner.embedded_hash(),
            ttl: Duration::from_secs(60),
            channel_remote: DEFAULT_CHANNEL_REMOTE.into(),
        });
        NixStep { runner, resolver }
    }

    /// The runner.
    pub fn runner(&self) -> &NixRunner {
        &self.runner
    }

    /// The source resolved for `tag`, as the server resolves it.
    pub async fn resolve(&self, tag: &str) -> Resolved {
        self.resolver
            .resolve(tag)
            .await
            .unwrap_or_else(|error| panic!("resolving {tag:?}: {error}"))
    }

    /// [`NixStep::build`] of the image `name:latest`.
    pub async fn build_named(&self, name: &str) -> Result<PrepareResult, NixError> {
        self.build(&Image::from_name(name, "latest")).await
    }

    /// Run the Nix step for `image` as the server does: resolve its tag,
    /// then build from that resolution.
    pub async fn build(&self, image: &Image) -> Result<PrepareResult, NixError> {
        let resolved = self.resolve(&image.tag).await;
        self.runner.prepare_image(image, &resolved.source).await
    }
}

/// How the builder reports a failed Nix step (logs and the status page):
/// the kind of failure and its detail.
pub fn reported(error: NixError) -> (FailureKind, String) {
    let error = BuildError::from(error);
    (error.kind(), error.detail())
}

/// The step over `source` whose builds and whole Nix step both have
/// `timeout`.
pub fn runner(source: PackageSource, timeout: Duration) -> NixStep {
    runner_with(NixSettings {
        source,
        timeout,
        deadline: timeout,
        allow_unfree: false,
        prepare_image: None,
    })
}

/// The step with `settings`.
pub fn runner_with(settings: NixSettings) -> NixStep {
    NixStep::new(settings)
}

/// The step over the embedded offline package set.
pub fn offline_runner() -> NixStep {
    runner(PackageSource::Builtin, Duration::from_secs(300))
}

/// The Nix step of the image `name:latest` over the embedded offline
/// package set ([`offline_runner`]).
pub async fn offline_build(name: &str) -> Result<PrepareResult, NixError> {
    offline_runner().build_named(name).await
}

/// `nix-instantiate` with `args` (an expression file and its arguments);
/// the .drv paths it prints.
pub fn instantiate(args: &[&str]) -> Vec<String> {
    crate::run(Command::new("nix-instantiate").args(args))
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| l.ends_with(".drv"))
        .collect()
}

/// Every derivation in the build closure of `drvs`, by path.
pub fn derivations(drvs: &[String]) -> BTreeMap<String, Value> {
    let shown = crate::run(
        Command::new("nix")
            .args([
                "--extra-experimental-features",
                "nix-command",
                "show-derivation",
                "--recursive",
            ])
            .args(drvs),
    );
    serde_json::from_str(&shown).expect("derivations as JSON")
}

/// The top-level store paths of a result.
pub fn top_level(result: &PrepareResult) -> Vec<String> {
    result.runtime_graph.export_references_graph.graph.clone()
}

/// The package name of a store path (`/nix/store/<hash>-hello-2.12.1` ->
/// `hello-2.12.1`).
pub fn package_name(path: &str) -> &str {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.split_once('-').map_or(base, |(_, name)| name)
}

/// The store path among `paths` whose package name starts with `prefix`.
pub fn find_path<'a>(paths: &'a [String], prefix: &str) -> &'a str {
    paths
        .iter()
        .find(|p| package_name(p).starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {paths:?}"))
}

/// The `graph` entry of `path`.
pub fn graph_entry<'a>(result: &'a PrepareResult, path: &str) -> &'a PathInfo {
    result
        .runtime_graph
        .graph
        .iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("{path} not in graph"))
}

/// The refusals of a failed Nix step as (package, reason) pairs; panics on
/// other errors.
pub fn refused(error: &NixError) -> Vec<(String, RefusalReason)> {
    match error {
        NixError::Refused(refusals) => refusals
            .iter()
            .map(|r| (r.package.clone(), r.reason))
            .collect(),
        other => panic!("expected refused packages, got {other:?}"),
    }
}

/// What `<store path>/bin/hello` prints.
pub fn run_hello(result: &PrepareResult) -> String {
    let top = top_level(result);
    let hello = find_path(&top, "hello-");
    let output = std::process::Command::new(format!("{hello}/bin/hello"))
        .output()
        .expect("run hello");
    assert!(output.status.success());
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .trim_end()
        .to_string()
}

/// Command lines of all running processes (arguments joined by spaces).
pub fn process_command_lines() -> Vec<String> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let is_pid = entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit());
        if !is_pid {
            continue;
        }
        if let Ok(raw) = std::fs::read(entry.path().join("cmdline")) {
            let line: Vec<String> = raw
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if !line.is_empty() {
                lines.push(line.join(" "));
            }
        }
    }
    lines
}

/// Wait up to `within` for no process command line to contain `needle`;
/// returns the ones still there.
pub async fn processes_left(needle: &str, within: Duration) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left: Vec<String> = process_command_lines()
            .into_iter()
            .filter(|l| l.contains(needle))
            .collect();
        if left.is_empty() || tokio::time::Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Fail unless, within `within`, no process command line contains `needle`.
pub async fn assert_no_process_left(needle: &str, within: Duration) {
    assert_eq!(
        processes_left(needle, within).await,
        Vec::<String>::new(),
        "processes naming {needle} are left"
    );
}

/// Wait up to `within` for a process command line containing `needle`.
pub async fn process_appears(needle: &str, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if process_command_lines().iter().any(|l| l.contains(needle)) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A package set directory for the tests that stop sleeping builds: the
/// offline set whose `sleepy` and `sleepy-long` sleep for 1000 and 1001
/// seconds and a fraction of a second that is this set's own, so that
/// their processes (the builder's `sleep`, and the `nix-build` naming this
/// directory) are told apart from those of any other test building the
/// offline set's `sleepy`, on this machine at the same time. Keep the
/// returned directory alive while it is used.
pub struct SleepyPkgs {
    dir: tempfile::TempDir,
    fraction: String,
}

impl SleepyPkgs {
    /// Writes the set.
    pub fn new() -> SleepyPkgs {
        use std::time::{SystemTime, UNIX_EPOCH};
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let fraction = format!("{:06}{:03}", std::process::id() % 1_000_000, nanos % 1000);
        let dir = tempfile::tempdir().expect("temporary directory");
        let sleeper = |name: &str, seconds: u32| {
            format!(
                "{name} = base.runCommand \"{name}-{fraction}\" {{ }} ''\n    sleep {seconds}.{fraction}\n    mkdir -p \"$out\"\n  '';"
            )
        };
        let expression = format!(
            "args:\nlet base = import {offline} args;\nin base // {{\n  {}\n  {}\n}}\n",
            sleeper("sleepy", 1000),
            sleeper("sleepy-long", 1001),
            offline = crate::offline_pkgs_dir().display(),
        );
        std::fs::write(dir.path().join("default.nix"), expression).expect("write default.nix");
        SleepyPkgs { dir, fraction }
    }

    /// The set as a package source.
    pub fn source(&self) -> PackageSource {
        PackageSource::Path(self.dir.path().to_path_buf())
    }

    /// What the command line of a `nix-build` over this set contains.
    pub fn nix_build_needle(&self) -> String {
        self.dir.path().display().to_string()
    }

    /// The command line of the builder of this set's package that sleeps
    /// `seconds` (1000: `sleepy`, 1001: `sleepy-long`).
    pub fn sleep_needle(&self, seconds: u32) -> String {
        format!("sleep {seconds}.{}", self.fraction)
    }
}

impl Default for SleepyPkgs {
    fn default() -> Self {
        Self::new()
    }
}

/// A package set directory: the offline set plus `count` packages
/// `salt0`, `salt1`, ... whose store paths are new to this run (a
/// directory with a file holding a unique salt), so that images asking for them are cold: their
/// symlink layer and runtime graph have never been built. Keep the
/// returned directory alive while it is used.
pub fn salted_pkgs(count: usize) -> tempfile::TempDir {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let salt = format!("{}-{nanos}", std::process::id());
    let dir = tempfile::tempdir().expect("temporary directory");
    let expression = format!(
        r#"args:
let base = import {offline} args;
in base // builtins.listToAttrs (builtins.genList (i: {{
  name = "salt${{toString i}}";
  value = base.runCommand "salt-{salt}-${{toString i}}" {{ }} ''
    mkdir -p "$out/share"
    echo "{salt} ${{toString i}}" > "$out/share/salt-${{toString i}}"
  '';
}}) {count})
"#,
        offline = crate::offline_pkgs_dir().display(),
    );
    std::fs::write(dir.path().join("default.nix"), expression).expect("write default.nix");
    dir
}
