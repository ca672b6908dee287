//! `cargo xtask`: project tasks that are programs rather than shell one-liners.
//!
//! Each subcommand lives in its own module; add one by adding a variant to [`Command`] and a
//! module with an `Args` struct and a `run` function.

mod bench;
mod plugins;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Sluice build and benchmark tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Benchmark Sluice side by side with nginx and HAProxy (method: docs/performance.md).
    Bench(Box<bench::BenchArgs>),
    /// Build every proxy-wasm plugin from source into target/plugins/ (scripts/build-plugins.sh).
    BuildPlugins,
}

fn main() -> std::process::ExitCode {
    let result = match Cli::parse().command {
        Command::Bench(args) => bench::run(*args),
        Command::BuildPlugins => plugins::run(),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
