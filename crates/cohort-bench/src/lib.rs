//! cohort's benchmarks: the code behind `cohort perf`, `cohort perf-group`,
//! `cohort perf-multicast` and `cohort perf-election`, and the helper processes they start
//! (`cohort perf-sink`, `cohort multicast`).
//!
//! The `cohort` binary is the only entry point: it flattens [`Command`] into its own
//! subcommands and hands them to [`run`]. The benchmarks start their helper processes by
//! running the current executable again with one of these subcommands, so any binary that
//! flattens [`Command`] can run them.

pub mod perf;
pub mod stats;
pub mod supervisor;

use clap::Subcommand;

/// The result of a benchmark command.
pub type BenchResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// The benchmark subcommands, and the helper processes they start.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Measure ACKed send throughput and latency against baselines.
    Perf(perf::PerfArgs),
    /// Measure group formation, crash and hang detection and idle cost against Serf.
    PerfGroup(perf::group::PerfGroupArgs),
    /// Measure leader election (cold start, kill -9, hung leader) against ZooKeeper 3.8.
    PerfElection(perf::election::PerfElectionArgs),
    /// Measure reliable group multicast throughput against JGroups and raw UDP.
    PerfMulticast(perf::multicast::PerfMulticastArgs),
    /// Run one member of a reliable multicast group with a fixed view (for tests and
    /// benchmarks; driven through stdin/stdout).
    Multicast(perf::multicast::member::MemberArgs),
    /// Internal: a receiver process of `cohort perf`.
    #[command(hide = true)]
    PerfSink(perf::PerfSinkArgs),
}

impl Command {
    /// How many runtime threads the command wants: `Some(1)` for a current-thread
    /// runtime, `Some(n)` for a multi-thread one of `n` workers, `None` for the default
    /// multi-thread runtime.
    ///
    /// A group member of a benchmark shares the machine with the other members: one
    /// thread, where the driver wakes the application task without a futex, is the
    /// cheaper schedule (`cohort multicast --threads` changes it).
    pub fn runtime_threads(&self) -> Option<usize> {
        match self {
            Self::Multicast(args) if args.threads > 0 => Some(args.threads),
            _ => None,
        }
    }
}

/// Runs a benchmark command to its end.
pub async fn run(command: Command) -> BenchResult {
    match command {
        Command::Perf(args) => perf::run(args).await,
        Command::PerfSink(args) => perf::sink(args).await,
        Command::PerfGroup(args) => perf::group::run(args).await,
        Command::PerfElection(args) => perf::election::run(args).await,
        Command::PerfMulticast(args) => perf::multicast::run(args).await,
        Command::Multicast(args) => perf::multicast::member::run(args).await,
    }
}
