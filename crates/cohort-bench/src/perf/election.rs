//! `cohort perf-election`: how fast a leader election settles, cohort next to real
//! ZooKeeper 3.8 servers (Debian's `zookeeper`, run by the interop harness
//! [`super::zookeeper`]), measured in the same run on loopback.
//!
//! For each ensemble size, three scenarios:
//! * **cold start**: every voter started at once, until all agree on one leader (the leader
//!   LEADING, every other voter FOLLOWING it);
//! * **kill -9** of the leader, until all survivors agree on a new leader;
//! * **SIGSTOP** of the leader (a hung leader), until all others agree on a new leader.
//!
//! Every run starts a fresh ensemble (so every run also measures a cold start). Times are
//! from just before the action (the first process started, the signal sent) to the moment
//! of agreement. Runs follow a [`Schedule`]: for each size and scenario,
//! `--warmup-rounds` runs of each system not counted, then `--runs` counted ones, cohort
//! and ZooKeeper taking turns run by run (the first of them rotating), and every figure is
//! the median with min–max over the counted runs.
//!
//! cohort: every voter is a `cohort elect --json` process; each of its role lines carries
//! the voter's wall clock (`unix_us`), and agreement is the first moment at which the
//! latest lines of all voters agree, so no polling interval is added.
//! ZooKeeper: `srvr` on every server's client port, polled every `--poll-ms`; agreement is
//! the first poll at which one server says `leader` and every other `follower`.
//! ZooKeeper says so only once the followers have synced with the leader (ZAB), so its
//! times include that step; it is the earliest a ZooKeeper client can tell.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use serde_json::Value;

use super::process::unix_us;
use super::sample::round;
use super::zookeeper::{ZkEnsemble, ZkVoter};
use crate::BenchResult;
use crate::stats::{Machine, Schedule, Spread, loadavg};
use crate::supervisor::{Proc, Signal};

/// Options of `cohort perf-election`.
#[derive(Args, Debug, Clone)]
pub struct PerfElectionArgs {
    /// Ensemble sizes (numbers of voters, at most 9).
    #[arg(long, value_delimiter = ',', default_value = "3,5")]
    sizes: Vec<usize>,
    /// Counted runs of each scenario and system (cold start is measured in every run, so
    /// twice as often); every figure is their median with min–max.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Runs of each scenario and system before the counted ones, not counted: the first
    /// JVMs of a run start with cold disk and class caches.
    #[arg(long, default_value_t = 1)]
    warmup_rounds: usize,
    /// How often the ZooKeeper servers are asked for their mode (`srvr`), in milliseconds.
    #[arg(long, default_value_t = 10)]
    poll_ms: u64,
    /// Systems to measure: cohort, zookeeper.
    #[arg(long, value_delimiter = ',', default_value = "cohort,zookeeper")]
    systems: Vec<String>,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    json: bool,
}

/// What a run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Scenario {
    /// All voters started at once → one leader.
    Cold,
    /// kill -9 of the leader → a new leader.
    Kill,
    /// SIGSTOP of the leader → a new leader.
    Hung,
}

impl Scenario {
    const ALL: [Self; 3] = [Self::Cold, Self::Kill, Self::Hung];

    fn label(self) -> &'static str {
        match self {
            Self::Cold => "cold start -> leader",
            Self::Kill => "kill -9 leader -> new",
            Self::Hung => "SIGSTOP leader -> new",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Self::Cold => "cold_start",
            Self::Kill => "kill9",
            Self::Hung => "sigstop",
        }
    }

    /// The target for cohort (issue 5), in milliseconds.
    fn target_ms(self) -> f64 {
        match self {
            Self::Cold => 300.0,
            Self::Kill => 100.0,
            Self::Hung => 3000.0,
        }
    }
}

/// The systems measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum System {
    Cohort,
    ZooKeeper,
}

impl System {
    fn label(self) -> &'static str {
        match self {
            Self::Cohort => "cohort",
            Self::ZooKeeper => "zookeeper",
        }
    }
}

/// Every measurement of one (system, voters, scenario), in milliseconds, and the failed
/// runs (left out of the figures).
#[derive(Default)]
struct Results {
    times: std::collections::BTreeMap<(System, usize, Scenario), Vec<f64>>,
    failed: std::collections::BTreeMap<(System, usize, Scenario), Vec<String>>,
}

impl Results {
    fn add(&mut self, key: (System, usize, Scenario), r: Result<f64, String>) {
        match r {
            Ok(ms) => self.times.entry(key).or_default().push(ms),
            Err(e) => {
                eprintln!(
                    "perf-election: {} {} voters {}: run failed: {e}",
                    key.0.label(),
                    key.1,
                    key.2.label()
                );
                self.failed.entry(key).or_default().push(e);
            }
        }
    }

    fn spread(&self, key: (System, usize, Scenario)) -> Option<Spread> {
        Spread::of(self.times.get(&key).map_or(&[][..], Vec::as_slice))
    }
}

/// Runs the benchmark.
pub async fn run(args: PerfElectionArgs) -> BenchResult {
    if args.sizes.iter().any(|&n| !(1..=9).contains(&n)) {
        return Err("--sizes: between 1 and 9 voters".into());
    }
    let mut systems = Vec::new();
    for s in &args.systems {
        systems.push(match s.as_str() {
            "cohort" => System::Cohort,
            "zookeeper" | "zk" => System::ZooKeeper,
            other => return Err(format!("unknown system {other:?} (cohort, zookeeper)").into()),
        });
    }
    // Child processes, sleeps and blocking `srvr` polls: all on a thread of its own.
    tokio::task::spawn_blocking(move || measure(&args, &systems)).await?
}

fn measure(args: &PerfElectionArgs, systems: &[System]) -> BenchResult {
    let machine = Machine::now();
    eprintln!("perf-election: {}", machine.line());
    let exe = std::env::current_exe()?;
    let mut results = Results::default();
    let mut warmup = Results::default();
    let schedule = Schedule {
        systems: systems.len(),
        warmup: args.warmup_rounds,
        runs: args.runs.max(1),
    };
    let dir = std::env::temp_dir().join("cohort-perf-election");
    // Every ensemble gets ports of its own, so no run meets the sockets of the previous one.
    let (mut cohort_ensembles, mut zk_ensembles) = (0usize, 0usize);
    for &n in &args.sizes {
        for scenario in [Scenario::Kill, Scenario::Hung] {
            // The systems take turns run by run, so both see the same background.
            for turn in schedule.turns() {
                let system = systems[turn.system];
                eprintln!(
                    "perf-election: {}, {n} voters, {}, {}",
                    system.label(),
                    scenario.label(),
                    schedule.label(turn)
                );
                let into = if turn.counted {
                    &mut results
                } else {
                    &mut warmup
                };
                match system {
                    System::Cohort => {
                        let base = 25_000 + (cohort_ensembles % 20) as u16 * 10;
                        cohort_ensembles += 1;
                        cohort_run(&exe, n, base, scenario, into);
                    }
                    System::ZooKeeper => {
                        let base = 25_200 + (zk_ensembles % 12) as u16 * 60;
                        zk_ensembles += 1;
                        zk_run(&dir, n, base, scenario, args, into);
                    }
                }
            }
        }
    }
    let load_after = loadavg();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report_json(
                args,
                systems,
                &results,
                &warmup,
                &machine,
                &load_after
            ))?
        );
    } else {
        print_report(args, systems, &results, &machine, &load_after);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// cohort

/// What a voter said last: its role and leader.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Said {
    role: String,
    leader: Option<i64>,
}

/// One `cohort elect --json` process and its role lines so far.
struct Voter {
    sid: i64,
    proc: Proc,
    /// (wall clock in µs, what it said), in order.
    lines: Vec<(u64, Said)>,
}

impl Voter {
    /// Reads the lines that have arrived.
    fn drain(&mut self) {
        while let Some(line) = self.proc.try_line() {
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if v["event"] != "role" {
                continue;
            }
            self.lines.push((
                v["unix_us"].as_u64().unwrap_or(0),
                Said {
                    role: v["role"].as_str().unwrap_or_default().to_owned(),
                    leader: v["leader"].as_i64(),
                },
            ));
        }
    }

    /// What it had said last at `t` (µs).
    fn at(&self, t: u64) -> Option<&Said> {
        self.lines
            .iter()
            .take_while(|(at, _)| *at <= t)
            .last()
            .map(|(_, s)| s)
    }
}

/// Whether the states `said` (sid, state) agree: exactly one leads, itself, and every other
/// follows it. Returns the leader.
fn agreement(said: &[(i64, Option<&Said>)]) -> Option<i64> {
    let leader = said.iter().find_map(|(sid, s)| {
        s.filter(|s| s.role == "leading" && s.leader == Some(*sid))
            .map(|_| *sid)
    })?;
    said.iter()
        .all(|(sid, s)| {
            *sid == leader || s.is_some_and(|s| s.role == "following" && s.leader == Some(leader))
        })
        .then_some(leader)
}

/// The first moment at or after `since` (µs) at which the voters `among` agree on a leader
/// other than `not`.
fn agreed_at(
    voters: &[Voter],
    among: &[usize],
    since: u64,
    not: Option<i64>,
) -> Option<(u64, i64)> {
    let mut times: Vec<u64> = among
        .iter()
        .flat_map(|&i| voters[i].lines.iter().map(|(t, _)| *t))
        .filter(|&t| t >= since)
        .collect();
    times.push(since);
    times.sort_unstable();
    times.dedup();
    times.into_iter().find_map(|t| {
        let said: Vec<(i64, Option<&Said>)> = among
            .iter()
            .map(|&i| (voters[i].sid, voters[i].at(t)))
            .collect();
        agreement(&said).filter(|&l| Some(l) != not).map(|l| (t, l))
    })
}

/// Polls the voters' lines until [`agreed_at`] finds agreement, for at most `limit`.
fn wait_agreed(
    voters: &mut [Voter],
    among: &[usize],
    since: u64,
    not: Option<i64>,
    limit: Duration,
) -> Result<(u64, i64), String> {
    let deadline = Instant::now() + limit;
    loop {
        for v in voters.iter_mut() {
            v.drain();
        }
        if let Some(found) = agreed_at(voters, among, since, not) {
            return Ok(found);
        }
        if Instant::now() > deadline {
            let last: Vec<String> = among
                .iter()
                .map(|&i| {
                    let v = &voters[i];
                    format!("{}: {:?}", v.sid, v.lines.last().map(|(_, s)| s))
                })
                .collect();
            return Err(format!(
                "no agreement within {limit:?} ({})",
                last.join("; ")
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// One cohort run: a cold start of `n` voters (ports `base + sid`), then `scenario` (kill -9
/// or SIGSTOP of the leader).
fn cohort_run(
    exe: &std::path::Path,
    n: usize,
    base: u16,
    scenario: Scenario,
    results: &mut Results,
) {
    let voter_list: Vec<String> = (1..=n)
        .map(|sid| format!("{sid}=127.0.0.1:{}", base + sid as u16))
        .collect();
    let voter_list = voter_list.join(",");
    let t0 = unix_us();
    let mut voters = Vec::new();
    for sid in 1..=n as i64 {
        let spawned = Proc::spawn(
            format!("cohort-elect-{sid}"),
            Command::new(exe)
                .args(["elect", "--json", "--id", &sid.to_string()])
                .args(["--voter", &voter_list]),
            Stdio::null(),
        );
        match spawned {
            Ok(proc) => voters.push(Voter {
                sid,
                proc,
                lines: Vec::new(),
            }),
            Err(e) => {
                results.add((System::Cohort, n, Scenario::Cold), Err(e.to_string()));
                return;
            }
        }
    }
    let all: Vec<usize> = (0..n).collect();
    let cold = wait_agreed(&mut voters, &all, t0, None, Duration::from_secs(15));
    let leader = cold.as_ref().ok().map(|&(_, l)| l);
    results.add(
        (System::Cohort, n, Scenario::Cold),
        cold.map(|(t, _)| (t.saturating_sub(t0)) as f64 / 1e3),
    );
    let Some(leader) = leader else { return };
    // Let the ensemble settle (heartbeats flowing) before the leader goes.
    std::thread::sleep(Duration::from_millis(500));
    let li = voters
        .iter()
        .position(|v| v.sid == leader)
        .expect("the leader is a voter");
    let t0 = unix_us();
    match scenario {
        Scenario::Hung => voters[li].proc.signal(Signal::Stop),
        _ => voters[li].proc.kill(),
    }
    let rest: Vec<usize> = all.into_iter().filter(|&i| i != li).collect();
    let r = wait_agreed(
        &mut voters,
        &rest,
        t0,
        Some(leader),
        Duration::from_secs(15),
    );
    results.add(
        (System::Cohort, n, scenario),
        r.map(|(t, _)| (t.saturating_sub(t0)) as f64 / 1e3),
    );
    // Dropping the voters kills them (SIGKILL ends a stopped process too).
}

// ---------------------------------------------------------------------------------------
// ZooKeeper

/// Polls `srvr` of the servers `sids` every `poll` until one leads (other than `not`) and
/// the others follow; returns the leader and the start of the poll that saw it.
fn zk_wait(
    zk: &ZkEnsemble,
    sids: &[u64],
    not: Option<u64>,
    poll: Duration,
    limit: Duration,
) -> Result<(u64, Instant), String> {
    let deadline = Instant::now() + limit;
    loop {
        let now = Instant::now();
        if let Some(l) = zk.agreed_leader(sids).filter(|&l| Some(l) != not) {
            return Ok((l, now));
        }
        if now > deadline {
            return Err(format!(
                "no ZooKeeper leader within {limit:?}; logs in {}",
                zk.dir().display()
            ));
        }
        std::thread::sleep(poll);
    }
}

/// One ZooKeeper run: a cold start of `n` servers, then `scenario`.
fn zk_run(
    dir: &PathBuf,
    n: usize,
    base: u16,
    scenario: Scenario,
    args: &PerfElectionArgs,
    results: &mut Results,
) {
    let poll = Duration::from_millis(args.poll_ms.max(1));
    let voters: Vec<ZkVoter> = (1..=n as u64).map(|s| ZkVoter::loopback(base, s)).collect();
    let sids: Vec<u64> = voters.iter().map(|v| v.sid).collect();
    let key = |s| (System::ZooKeeper, n, s);
    let _ = std::fs::create_dir_all(dir);
    let mut zk = match ZkEnsemble::new(dir, &voters, &sids) {
        Ok(zk) => zk,
        Err(e) => return results.add(key(Scenario::Cold), Err(e)),
    };
    let t0 = Instant::now();
    if let Err(e) = zk.start_all() {
        return results.add(key(Scenario::Cold), Err(e));
    }
    let cold = zk_wait(&zk, &sids, None, poll, Duration::from_secs(60));
    let leader = cold.as_ref().ok().map(|&(l, _)| l);
    results.add(
        key(Scenario::Cold),
        cold.map(|(_, t)| (t - t0).as_secs_f64() * 1e3),
    );
    let Some(leader) = leader else { return };
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    match scenario {
        Scenario::Hung => zk.signal(leader, Signal::Stop),
        _ => zk.kill9(leader),
    }
    // Only the others are asked: a stopped server would hold every poll for its timeout.
    let rest: Vec<u64> = sids.iter().copied().filter(|&s| s != leader).collect();
    let r = zk_wait(&zk, &rest, Some(leader), poll, Duration::from_secs(90));
    results.add(key(scenario), r.map(|(_, t)| (t - t0).as_secs_f64() * 1e3));
    // Dropping the ensemble kills every server and removes its directory.
}

// ---------------------------------------------------------------------------------------
// Report

/// "123 [100-150]" for milliseconds below 10 s, with one decimal for small values.
fn fmt_spread(s: Option<Spread>) -> String {
    let Some(s) = s else {
        return "-".into();
    };
    let f = |x: f64| {
        if x < 100.0 {
            format!("{x:.1}")
        } else {
            format!("{x:.0}")
        }
    };
    format!("{} [{}-{}] n={}", f(s.median), f(s.min), f(s.max), s.n)
}

fn print_report(
    args: &PerfElectionArgs,
    systems: &[System],
    r: &Results,
    machine: &Machine,
    load_after: &str,
) {
    println!(
        "\nleader election on loopback: median [min-max] of n runs, ms, after {} warm-up \
         run(s) of each scenario and system not counted; the systems took turns run by run; \
         ZooKeeper polled with srvr every {} ms",
        args.warmup_rounds, args.poll_ms
    );
    println!("{}; load after {load_after}", machine.line());
    let has = |s| systems.contains(&s);
    println!(
        "\n{:<22} {:>6}  {:<26} {:<28} {:>9}  cohort target",
        "scenario", "voters", "cohort", "ZooKeeper 3.8", "cohort/ZK"
    );
    for scenario in Scenario::ALL {
        for &n in &args.sizes {
            let c = r.spread((System::Cohort, n, scenario));
            let z = r.spread((System::ZooKeeper, n, scenario));
            let ratio = match (c, z) {
                (Some(c), Some(z)) => format!("{:.3}", c.median / z.median),
                _ => "-".into(),
            };
            let target = match c {
                Some(c) if has(System::Cohort) => format!(
                    "<= {:.0} ms: {}",
                    scenario.target_ms(),
                    if c.median <= scenario.target_ms() {
                        "met"
                    } else {
                        "MISSED"
                    }
                ),
                _ => "-".into(),
            };
            println!(
                "{:<22} {:>6}  {:<26} {:<28} {:>9}  {}",
                scenario.label(),
                n,
                fmt_spread(c),
                fmt_spread(z),
                ratio,
                target
            );
        }
    }
    for ((system, n, scenario), errors) in &r.failed {
        println!(
            "  {} {n} voters {}: {} failed run(s) left out: {}",
            system.label(),
            scenario.label(),
            errors.len(),
            errors.join(" | ")
        );
    }
}

fn report_json(
    args: &PerfElectionArgs,
    systems: &[System],
    r: &Results,
    warmup: &Results,
    machine: &Machine,
    load_after: &str,
) -> ElectionReport {
    let mut rows = Vec::new();
    for &system in systems {
        for &n in &args.sizes {
            for scenario in Scenario::ALL {
                let key = (system, n, scenario);
                rows.push(ElectionRow {
                    system: system.label(),
                    voters: n,
                    scenario: scenario.key(),
                    ms: r.spread(key).map(|s| s.rounded(1)),
                    all_ms: r
                        .times
                        .get(&key)
                        .map(|v| v.iter().map(|x| round(*x, 1)).collect()),
                    failed_runs: r.failed.get(&key).map_or(0, Vec::len),
                    warmup_ms: warmup
                        .times
                        .get(&key)
                        .map(|v| v.iter().map(|x| round(*x, 1)).collect()),
                });
            }
        }
    }
    ElectionReport {
        machine: machine.clone(),
        load_after: load_after.to_owned(),
        warmup_rounds: args.warmup_rounds,
        runs: args.runs,
        zookeeper_poll_ms: args.poll_ms,
        results: rows,
    }
}

/// One system, size and scenario of `perf-election --json`.
#[derive(Serialize, Debug)]
struct ElectionRow {
    system: &'static str,
    voters: usize,
    scenario: &'static str,
    ms: Option<Spread>,
    all_ms: Option<Vec<f64>>,
    failed_runs: usize,
    /// The warm-up runs, not counted.
    warmup_ms: Option<Vec<f64>>,
}

/// The document `perf-election --json` prints.
#[derive(Serialize, Debug)]
struct ElectionReport {
    machine: Machine,
    load_after: String,
    warmup_rounds: usize,
    runs: usize,
    zookeeper_poll_ms: u64,
    results: Vec<ElectionRow>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(role: &str, leader: Option<i64>) -> Said {
        Said {
            role: role.into(),
            leader,
        }
    }

    #[test]
    fn agreement_needs_one_leader_and_all_following_it() {
        let l3 = said("leading", Some(3));
        let f3 = said("following", Some(3));
        let f2 = said("following", Some(2));
        let looking = said("looking", None);
        assert_eq!(
            agreement(&[(1, Some(&f3)), (2, Some(&f3)), (3, Some(&l3))]),
            Some(3)
        );
        assert_eq!(
            agreement(&[(1, Some(&f2)), (2, Some(&f3)), (3, Some(&l3))]),
            None
        );
        assert_eq!(
            agreement(&[(1, Some(&looking)), (2, Some(&f3)), (3, Some(&l3))]),
            None
        );
        assert_eq!(agreement(&[(1, None), (3, Some(&l3))]), None);
        // "leading" someone else is not leading.
        assert_eq!(
            agreement(&[(1, Some(&said("leading", Some(3)))), (3, Some(&f3))]),
            None
        );
    }
}
