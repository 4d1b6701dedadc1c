//! The `cohort` command-line tool.

mod demo;
mod elect;
mod keys;
mod members;
mod node;
mod output;
mod router;
mod status;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Group communication for Rust: run cluster nodes, a demo cluster and benchmarks.
#[derive(Parser)]
#[command(name = "cohort", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node: print events, send every line read from stdin to all members.
    Node(node::NodeArgs),
    /// Ask a running node (its status endpoint) for its current view.
    Members(members::MembersArgs),
    /// Run one voter of a leader election (ZooKeeper-compatible) and print role changes.
    Elect(elect::ElectArgs),
    /// Run a gossip router: a rendezvous server for discovery where there is no multicast.
    Router(router::RouterArgs),
    /// Cluster keys: generate a key, list the keys of a key file.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Start three nodes on this machine and show discovery, messages and a member leaving.
    Demo(demo::DemoArgs),
    /// The benchmarks (`perf`, `perf-group`, `perf-election`, `perf-multicast`) and their
    /// helper processes, from the `cohort-bench` crate.
    #[command(flatten)]
    Bench(cohort_bench::Command),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("COHORT_LOG").unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let mut builder = match &cli.command {
        Command::Bench(bench) => match bench.runtime_threads() {
            Some(1) => tokio::runtime::Builder::new_current_thread(),
            Some(n) => {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(n);
                b
            }
            None => tokio::runtime::Builder::new_multi_thread(),
        },
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cohort: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Node(args) => node::run(args).await,
            Command::Members(args) => members::run(args).await,
            Command::Router(args) => router::run(args).await,
            Command::Keys(command) => keys::run(command),
            Command::Elect(args) => elect::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Bench(command) => cohort_bench::run(command).await,
        }
    });
    // A read of stdin blocks a runtime thread until input arrives; don't wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cohort: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Errors reported by the commands.
type CliResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;
