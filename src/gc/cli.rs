//! `nixery gc`: one collection from the command line.

use std::{io::Write as _, process::ExitCode};

use super::{GcError, Options, Policy, collect, watch::notice_period};
use crate::config::{
    ServeArgs,
    gc::{DEFAULT_GRACE, DEFAULT_KEEP, duration as parse_duration, min_keep},
};

#[cfg_attr(
    doc,
    doc = "Arguments of `nixery gc`: the collection's own flags plus every \
           setting of `nixery serve` (the storage ones matter)."
)]
#[derive(clap::Args, Debug, Clone, Default)]
pub struct GcArgs {
    /// Delete images not pulled within this long: 45s, 10m, 12h, 30d
    /// [default: 30d].
    #[arg(long, value_name = "DURATION")]
    pub keep: Option<String>,
    /// Never delete objects younger than this [default: 1h].
    #[arg(long, value_name = "DURATION")]
    pub grace: Option<String>,
    /// Print what would be deleted, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The storage settings, as for `nixery serve`.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Why `nixery gc` cannot start.
fn usage_error(message: &str) -> ExitCode {
    print_error(message);
    ExitCode::from(crate::config::EXIT_CONFIG)
}

/// One line on stderr, redacted: an output, like the server's log.
fn print_error(message: &str) {
    eprintln!("nixery gc: {}", crate::redact::redact(message));
}

/// Run `nixery gc`: print each deletion and a summary line; exit 0 when
/// the collection ran (or another one was running), 1 when it failed, 2
/// on bad settings.
pub fn run(args: GcArgs) -> ExitCode {
    let config = match args.serve.into_config() {
        Ok(config) => config,
        Err(error) => return usage_error(&format!("configuration error: {error}")),
    };
    let duration = |flag: &str, value: Option<String>, default| match value {
        None => Ok(default),
        Some(text) => parse_duration(&text).map_err(|e| format!("{flag} {text:?}: {e}")),
    };
    let keep = match duration("--keep", args.keep, DEFAULT_KEEP) {
        Ok(keep) => keep,
        Err(message) => return usage_error(&message),
    };
    let grace = match duration("--grace", args.grace, DEFAULT_GRACE) {
        Ok(grace) => grace,
        Err(message) => return usage_error(&message),
    };
    let touch_interval = config.gc.touch_interval;
    if keep < min_keep(touch_interval) {
        return usage_error(&format!(
            "--keep must be at least {} (twice the notice period for NIXERY_GC_TOUCH_INTERVAL={})",
            humantime::format_duration(min_keep(touch_interval)),
            humantime::format_duration(touch_interval)
        ));
    }
    let _ = tracing_subscriber::fmt()
        .with_writer(crate::logging::redacting_stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("nixery gc: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let dry_run = args.dry_run;
    runtime.block_on(async move {
        let storage = match crate::storage::settings::open(&config.storage).await {
            Ok(storage) => storage,
            Err(error) => {
                print_error(&error.to_string());
                return ExitCode::FAILURE;
            }
        };
        let cache_dir = config
            .cache_dir
            .clone()
            .unwrap_or_else(crate::config::default_cache_dir);
        let local_tier = Some(crate::manifest_cache::local_tier_path(
            &cache_dir,
            &config.storage.identity(),
        ))
        .filter(|dir| dir.is_dir());
        let options = Options {
            dry_run,
            local_tier,
            ..Options::new(
                Policy {
                    keep,
                    grace,
                    touch_interval,
                },
                notice_period(touch_interval),
            )
        };
        let verb = if dry_run { "would delete" } else { "deleted" };
        let mut print = |deletion: &super::Deletion| {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "{verb} {} ({}, {} bytes)",
                deletion.name,
                deletion.kind.plural(),
                deletion.size
            );
        };
        match collect(storage, &options, &mut print).await {
            Ok(report) => {
                println!("{}", report.summary());
                ExitCode::SUCCESS
            }
            Err(GcError::Busy(busy)) => {
                println!("nothing deleted: {busy}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                print_error(&crate::error_text::chain(&error));
                ExitCode::FAILURE
            }
        }
    })
}
