//! `nixery popcount`: computes the popularity map the layering code uses.
//!
//! For every store path of a channel (its `store-paths` list, plain or xz),
//! popcount fetches `<hash>.narinfo` from a binary cache and counts, per
//! package name, how many other paths list it under `References:`. Names
//! referenced only once are dropped; the rest is written as a JSON object
//! with sorted keys, e.g. `{"glibc-2.40-66":4012,"zlib-1.3.1":913}`.
//!
//! Fetches run with bounded concurrency and every definite answer is kept
//! on disk (see [`fetch`]), so a rerun of the same list makes no requests.
//! A narinfo that does not parse and a path the cache does not have (404)
//! are reported and skipped; a transient failure (timeout, 5xx) is
//! reported too and makes the run fail *without* writing a partial map, so
//! the popularity data is either complete or absent; rerunning retries only
//! the failed paths.

pub mod fetch;
pub mod input;
pub mod narinfo;
pub mod store_path;
pub mod tally;

use std::io::Write;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use fetch::{Answer, FetchError, NarinfoFetcher};
use narinfo::{NarInfo, NarInfoError};
use store_path::StorePath;
use tally::Tally;

/// Arguments of `nixery popcount`.
#[derive(clap::Args, Debug, Clone)]
pub struct PopcountArgs {
    /// The list of store paths, one per line, plain or xz-compressed (as a
    /// channel's `store-paths.xz`); `-` reads standard input.
    #[arg(value_name = "STORE_PATHS")]
    pub store_paths: PathBuf,
    /// Base URL of the binary cache to read narinfos from.
    #[arg(long, default_value = "https://cache.nixos.org")]
    pub cache_url: String,
    /// How many narinfo requests may be in flight at once.
    #[arg(long, default_value = "32")]
    pub concurrency: NonZeroUsize,
    /// Where fetched narinfos are kept between runs
    /// [default: $XDG_CACHE_HOME/nixery/popcount or ~/.cache/nixery/popcount].
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Where to write the JSON map [default: standard output].
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Seconds one narinfo request may take before it counts as failed.
    #[arg(long, default_value = "30")]
    pub timeout: u64,
}

/// A narinfo that was served but cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Malformed {
    /// The body does not parse.
    #[error(transparent)]
    Parse(#[from] NarInfoError),
    /// The narinfo describes another store path than the one asked for.
    #[error("describes {0} instead")]
    OtherPath(StorePath),
}

/// What a popcount run found.
#[derive(Debug, Default)]
pub struct Summary {
    /// The reference counts.
    pub tally: Tally,
    /// Narinfos fetched and counted.
    pub counted: usize,
    /// Answers served from the on-disk cache (no request made).
    pub from_disk: usize,
    /// Served but unusable narinfos.
    pub malformed: Vec<(StorePath, Malformed)>,
    /// Paths the binary cache does not have (404).
    pub missing: Vec<StorePath>,
    /// Transient failures; the map is incomplete if this is not empty.
    pub failed: Vec<(StorePath, FetchError)>,
}

/// Fetches and counts the narinfos of `paths`, at most `concurrency` at a
/// time, reporting problems on stderr as they happen.
pub async fn count(
    paths: &[StorePath],
    fetcher: &NarinfoFetcher,
    concurrency: NonZeroUsize,
    progress: &ProgressBar,
) -> Summary {
    let mut summary = Summary::default();
    let mut answers = futures::stream::iter(paths)
        .map(|path| async move { (path, fetcher.fetch(path).await) })
        .buffer_unordered(concurrency.get());
    while let Some((path, result)) = answers.next().await {
        progress.inc(1);
        let fetched = match result {
            Ok(fetched) => fetched,
            Err(error) => {
                progress
                    .suspend(|| eprintln!("failed: {path}: {}", crate::error_text::chain(&error)));
                summary.failed.push((path.clone(), error));
                continue;
            }
        };
        summary.from_disk += usize::from(fetched.from_disk);
        let body = match fetched.answer {
            Answer::Found(body) => body,
            Answer::Missing => {
                progress.suspend(|| eprintln!("missing (404): {path}"));
                summary.missing.push(path.clone());
                continue;
            }
        };
        match check(path, &body) {
            Ok(info) => {
                summary.tally.add(&info.store_path, &info.references);
                summary.counted += 1;
            }
            Err(error) => {
                progress.suspend(|| eprintln!("malformed narinfo: {path}: {error}"));
                summary.malformed.push((path.clone(), error));
            }
        }
    }
    summary
}

/// Parses a narinfo and checks it describes the path it was fetched for.
fn check(path: &StorePath, body: &[u8]) -> Result<NarInfo, Malformed> {
    let info = NarInfo::parse(body)?;
    if info.store_path.hash() != path.hash() {
        return Err(Malformed::OtherPath(info.store_path));
    }
    Ok(info)
}

/// Runs `nixery popcount`.
pub fn run(args: PopcountArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("popcount: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_async(args)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("popcount: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_async(args: PopcountArgs) -> anyhow::Result<ExitCode> {
    let list = input::read_store_paths(&args.store_paths)
        .with_context(|| format!("reading {}", args.store_paths.display()))?;
    for (line, error) in &list.invalid {
        eprintln!("skipped line {line}: {error}");
    }
    let cache_root = match &args.cache_dir {
        Some(dir) => dir.clone(),
        None => default_cache_dir()
            .context("no --cache-dir given and neither XDG_CACHE_HOME nor HOME is set")?,
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout))
        .user_agent(concat!("nixery-popcount/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("building the HTTP client")?;
    let fetcher = NarinfoFetcher::new(client, &args.cache_url, &cache_root)
        .context("preparing the narinfo cache")?;

    let progress = ProgressBar::new(list.paths.len() as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} narinfos  {per_sec}  eta {eta}")
    {
        progress.set_style(style);
    }
    let summary = count(&list.paths, &fetcher, args.concurrency, &progress).await;
    progress.finish_and_clear();

    let popular = summary.tally.popular();
    eprintln!(
        "popcount: {} store paths ({} skipped lines): {} counted, {} from disk cache ({}), \
         {} malformed, {} missing (404), {} failed; {} packages referenced more than once",
        list.paths.len(),
        list.invalid.len(),
        summary.counted,
        summary.from_disk,
        fetcher.dir().display(),
        summary.malformed.len(),
        summary.missing.len(),
        summary.failed.len(),
        popular.len(),
    );
    if !summary.failed.is_empty() {
        eprintln!(
            "popcount: not writing an incomplete map; rerun to retry the {} failed paths \
             (everything else is cached)",
            summary.failed.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    let mut json = serde_json::to_vec(&popular).context("encoding the map")?;
    json.push(b'\n');
    match &args.output {
        Some(path) => write_file(path, &json)?,
        None => std::io::stdout()
            .lock()
            .write_all(&json)
            .context("writing to standard output")?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `$XDG_CACHE_HOME/nixery/popcount`, else `~/.cache/nixery/popcount`.
fn default_cache_dir() -> Option<PathBuf> {
    let non_empty = |name| std::env::var_os(name).filter(|value| !value.is_empty());
    let base = non_empty("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| non_empty("HOME").map(|home| Path::new(&home).join(".cache")))?;
    Some(base.join("nixery").join("popcount"))
}

/// Writes `bytes` to `path` atomically (temporary file and rename).
fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut file = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.as_file().sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    file.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narinfo_for_another_path_is_malformed() {
        let asked = StorePath::parse("0c7c96gikmzv87i7lv3vq5s1cmfjd6zf-hello").unwrap();
        let body = "StorePath: /nix/store/1c7c96gikmzv87i7lv3vq5s1cmfjd6zf-evil\n\
                    URL: nar/x\nNarHash: sha256:x\nNarSize: 1\nReferences: \n";
        assert!(matches!(
            check(&asked, body.as_bytes()),
            Err(Malformed::OtherPath(path)) if path.name() == "evil"
        ));
        let own = body.replace("1c7c96", "0c7c96");
        assert!(check(&asked, own.as_bytes()).is_ok());
    }
}
