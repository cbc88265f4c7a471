//! The `nixery` command: the registry server and its operator tools.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "nixery",
    version,
    about = "A container registry that builds images on demand with Nix"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: nixery::config::ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry server (the default).
    Serve(nixery::config::ServeArgs),
    /// Print how a runtime graph would be grouped into layers.
    Layers(nixery::layers::cli::LayersArgs),
    /// Compute a popularity map from a binary cache.
    Popcount(nixery::popcount::PopcountArgs),
    /// Delete images not pulled for a while, and what only they use.
    Gc(nixery::gc::cli::GcArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => nixery::server::main(cli.serve),
        Some(Command::Serve(args)) => nixery::server::main(args),
        Some(Command::Layers(args)) => nixery::layers::cli::run(args),
        Some(Command::Popcount(args)) => nixery::popcount::run(args),
        Some(Command::Gc(args)) => nixery::gc::cli::run(args),
    }
}
