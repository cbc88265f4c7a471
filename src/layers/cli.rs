//! `nixery layers`: show how a closure would be split into layers.
//!
//! Reads a runtime graph (or a whole `prepare-image` result file, whose
//! `runtimeGraph` is used), groups it exactly as the server does with the
//! same settings (`--strategy` as `NIXERY_LAYERING`, `--popularity` as
//! `NIX_POPULARITY_URL`, `--budget`), and prints
//! a JSON array with one object per layer, in the final order of the
//! grouping: `{"key": "<sha1 hex>", "merge_rating": <integer>, "contents":
//! [...]}`. Bad input exits with status 2 and one line on stderr that names
//! the problem.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::{DEFAULT_BUDGET, Layer, RuntimeGraph, Strategy, group};
use crate::popularity::{self, Popularity};

/// Arguments of `nixery layers`.
#[derive(clap::Args, Debug, Clone)]
pub struct LayersArgs {
    /// The runtime graph JSON, or a whole prepare-image result file.
    #[arg(long, value_name = "FILE")]
    pub graph: PathBuf,
    /// A popularity map (JSON object: package name -> count). Without it,
    /// every package has popularity 1 except nss-cacert and iana-etc.
    #[arg(long, value_name = "FILE")]
    pub popularity: Option<PathBuf>,
    /// The layering strategy: popularity, in-degree, size-cohort or
    /// size-rank [default: popularity with --popularity, else size-rank].
    #[arg(long, value_name = "NAME")]
    pub strategy: Option<Strategy>,
    /// The largest number of layers to produce.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_BUDGET)]
    pub budget: usize,
}

/// Exit status for input that cannot be grouped.
const BAD_INPUT: u8 = 2;

/// Run `nixery layers`: print the layers as JSON, or one error line and
/// exit status 2.
pub fn run(args: LayersArgs) -> ExitCode {
    let layers = match layers_for(&args) {
        Ok(layers) => layers,
        Err(err) => {
            eprintln!("nixery layers: {}", one_line(&err));
            return ExitCode::from(BAD_INPUT);
        }
    };
    let printed: Vec<PrintedLayer<'_>> = layers
        .iter()
        .map(|layer| PrintedLayer {
            key: layer.key(),
            merge_rating: layer.merge_rating,
            contents: &layer.contents,
        })
        .collect();
    let mut stdout = std::io::stdout().lock();
    let written = serde_json::to_writer_pretty(&mut stdout, &printed)
        .map_err(std::io::Error::from)
        .and_then(|()| writeln!(stdout))
        .and_then(|()| stdout.flush());
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("nixery layers: cannot write output: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, skipping causes whose message the
/// line already holds (some errors repeat their source in their message).
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let message = cause.to_string();
        if line.contains(&message) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&message);
    }
    line.replace('\n', " ")
}

/// One layer as printed.
#[derive(Serialize)]
struct PrintedLayer<'a> {
    key: String,
    merge_rating: u128,
    contents: &'a [String],
}

/// A prepare-image result file: only its runtime graph matters here.
#[derive(Deserialize)]
struct PrepareResult {
    #[serde(rename = "runtimeGraph")]
    runtime_graph: RuntimeGraph,
}

fn layers_for(args: &LayersArgs) -> anyhow::Result<Vec<Layer>> {
    let graph = read_graph(&args.graph)?;
    let strategy = Strategy::resolve(args.strategy, args.popularity.is_some());
    let popularity = match &args.popularity {
        Some(path) if strategy.uses_popularity() => popularity::read_file(path)?,
        Some(_) => bail!("--popularity is only read by --strategy popularity, not {strategy}"),
        None => Popularity::default(),
    };
    group(&graph, strategy, &popularity, args.budget)
        .with_context(|| format!("cannot group {} with {strategy}", args.graph.display()))
}

/// Read a runtime graph, or the `runtimeGraph` of a prepare-image result.
fn read_graph(path: &Path) -> anyhow::Result<RuntimeGraph> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {shown}"))?;
    // Look at the top level first to pick the shape, then parse the text
    // again as that shape so errors carry line and column.
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{shown} is not JSON"))?;
    let Some(object) = value.as_object() else {
        bail!("{shown} holds no JSON object");
    };
    if object.contains_key("runtimeGraph") {
        let result: PrepareResult = serde_json::from_str(&text)
            .with_context(|| format!("invalid prepare-image result in {shown}"))?;
        Ok(result.runtime_graph)
    } else if let Some(error) = object.get("error") {
        bail!("{shown} is a failed prepare-image result (error {error})");
    } else {
        serde_json::from_str(&text).with_context(|| format!("invalid runtime graph in {shown}"))
    }
}
