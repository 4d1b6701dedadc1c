//! cohort's benchmarks: the code behind `cohort perf`, `cohort perf-group`,
//! `cohort perf-multicast` and `cohort perf-election`, and the helper processes they start
//! (`cohort perf-sink`, `cohort multicast`).
//!
//! The `cohort` binary is the only entry point: it flattens [`Command`] into its own
//! subcommands and hands them to [`run`]. The benchmarks start their helper processes by
//! running the current executable again with one of these subcommands, so any binary that
//! flattens [`Command`] can run them.
//!
//! On a machine shared with other sessions, set [`AUTOGROUP_NICE_ENV`] (e.g.
//! `COHORT_BENCH_AUTOGROUP_NICE=-10`, as root): a benchmark then re-runs itself in a
//! session of its own whose autogroup has that nice value, so it gets a steady share of
//! the CPU while other sessions (builds) run; every helper process and peer it starts
//! shares that session. BENCHMARKS.md ("What steadies it") has the measurements.

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

/// The environment variable that runs a benchmark in a session of its own, with this
/// nice value (-20 to 19; below 0 needs root) for the session's autogroup.
pub const AUTOGROUP_NICE_ENV: &str = "COHORT_BENCH_AUTOGROUP_NICE";

/// Set in the re-run benchmark: it already is in its own session.
const IN_SESSION_ENV: &str = "COHORT_BENCH_IN_SESSION";

impl Command {
    /// Whether this is a benchmark (not one of the helper processes it starts).
    fn is_benchmark(&self) -> bool {
        matches!(
            self,
            Self::Perf(_) | Self::PerfGroup(_) | Self::PerfElection(_) | Self::PerfMulticast(_)
        )
    }
}

/// With [`AUTOGROUP_NICE_ENV`] set: outside the own session, re-runs this process under
/// `setsid --wait` and returns its outcome; inside it, sets the session's autogroup nice
/// and returns `None` (go on).
fn own_session() -> Result<Option<BenchResult>, Box<dyn std::error::Error + Send + Sync>> {
    let Some(value) = std::env::var(AUTOGROUP_NICE_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty())
    else {
        return Ok(None);
    };
    let nice: i32 = value
        .trim()
        .parse()
        .map_err(|_| format!("{AUTOGROUP_NICE_ENV}: not a number: {value:?}"))?;
    if std::env::var_os(IN_SESSION_ENV).is_some() {
        std::fs::write("/proc/self/autogroup", nice.to_string())
            .map_err(|e| format!("{AUTOGROUP_NICE_ENV}: cannot set /proc/self/autogroup: {e}"))?;
        return Ok(None);
    }
    let status = std::process::Command::new("setsid")
        .arg("--wait")
        .arg(std::env::current_exe()?)
        .args(std::env::args_os().skip(1))
        .env(IN_SESSION_ENV, "1")
        .status()
        .map_err(|e| format!("{AUTOGROUP_NICE_ENV}: cannot run setsid: {e}"))?;
    Ok(Some(if status.success() {
        Ok(())
    } else {
        Err(format!("the benchmark in its own session ended with {status}").into())
    }))
}

/// Runs a benchmark command to its end (in a session of its own first, with
/// [`AUTOGROUP_NICE_ENV`] set).
pub async fn run(command: Command) -> BenchResult {
    if command.is_benchmark() {
        if let Some(outcome) = tokio::task::spawn_blocking(own_session).await?? {
            return outcome;
        }
    }
    match command {
        Command::Perf(args) => perf::run(args).await,
        Command::PerfSink(args) => perf::sink(args).await,
        Command::PerfGroup(args) => perf::group::run(args).await,
        Command::PerfElection(args) => perf::election::run(args).await,
        Command::PerfMulticast(args) => perf::multicast::run(args).await,
        Command::Multicast(args) => perf::multicast::member::run(args).await,
    }
}
