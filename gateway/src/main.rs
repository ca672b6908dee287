//! The `sluice` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sluice: a programmable edge gateway (native Rust filters, proxy-wasm plugins, XDP fast path).
#[derive(Parser)]
#[command(name = "sluice", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway with a config file; reloads when the file (or a file it references) changes.
    Run {
        /// The YAML config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Do not watch the config and the files it references for changes.
        #[arg(long)]
        no_watch: bool,
        /// Unix socket for graceful upgrades: a new `sluice run --handover PATH` takes the
        /// listening sockets over from the process serving PATH, which then drains and exits.
        #[arg(long, value_name = "PATH")]
        handover: Option<PathBuf>,
    },
    /// Validate a config file (including every filter and plugin) and exit: 0 if valid, 1 with
    /// every problem, its place in the file and a fix otherwise.
    Check {
        /// The YAML config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Tools for plugin authors.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// The XDP fast path of a running gateway.
    Xdp {
        #[command(subcommand)]
        command: XdpCommand,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Run a plugin against one request without a network and print what it did: the request as
    /// the upstream sees it (or the response the plugin sent itself), the response as the client
    /// sees it, and its logs. Exit 0 when it ran, 1 when it failed (trap, deadline, rejected
    /// configuration).
    Test(sluice::plugin_test::cli::TestArgs),
}

#[derive(Subcommand)]
enum XdpCommand {
    /// List, add or remove kernel bans (through the admin API).
    Bans(sluice::xdp::cli::BansArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    sluice::telemetry::logging::init("info");
    match cli.command {
        Command::Run {
            config,
            no_watch,
            handover,
        } => {
            let opts = sluice::app::RunOptions { no_watch, handover };
            match sluice::app::run(&config, opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sluice: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Plugin {
            command: PluginCommand::Test(args),
        } => match sluice::plugin_test::cli::run(&args) {
            0 => ExitCode::SUCCESS,
            code => ExitCode::from(code),
        },
        Command::Xdp {
            command: XdpCommand::Bans(args),
        } => match sluice::xdp::cli::cli_bans(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sluice: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Check { config } => {
            let services = sluice::services::Services::new();
            let registry = sluice::filter::FilterRegistry::builtin();
            match sluice::app::check(&config, &registry, &services) {
                Ok(_) => {
                    println!("{}: configuration is valid", config.display());
                    ExitCode::SUCCESS
                }
                Err(rendered) => {
                    eprint!("{rendered}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
