//! `cohort perf-multicast`: reliable group multicast throughput, like JGroups' MPerf.
//!
//! For every cell (message size × group size × one or all members sending) each system
//! under test gets a group of N member processes on loopback, all started before the
//! first round and kept until the last one. Then rounds run, the systems taking turns
//! (round-robin, the first system of each round rotating): in a round, one system's
//! members get `go`, each sender multicasts its share of the round's messages, and every
//! member delivers every message, its own included. The first `--warmup-rounds` rounds
//! are not counted (the JVMs compile their hot paths there); the `--runs` rounds after
//! them are, and every figure is printed as the median with min–max over those rounds.
//!
//! A round's figure is the group rate: messages multicast divided by the time from `go`
//! until the slowest member delivered the last one (deliveries per second are that times
//! N), with the MB/s of those messages, the delivery latency p50/p99 (send time to
//! delivery, wall clock; under a flood this is mostly queueing), the CPU all members used
//! per second of the round, and the CPU the other systems' idle groups used meanwhile.
//!
//! The systems (`--systems`):
//! - **cohort**: `cohort multicast` processes ([`member`]), the reliable channel over UDP
//!   multicast with `ReliableConfig::lan()` timers (NAKs after 5 ms);
//! - **cohort-default-timers**: the same with `ReliableConfig::default()` (NAKs after
//!   100 ms, as SPEC), closer to JGroups' shipped timers;
//! - **cohort-keyed**: **cohort** in cluster-key mode (`--key-file`, a fresh random key per
//!   run): every datagram sealed and opened; the cell prints its rate as a ratio to
//!   **cohort**'s, from the same rounds (the cost of sealing, issue 16's target);
//! - **jgroups-5.6**: `interop/jgroups-perf/run5.sh`, JGroups 5.6 with the `udp.xml`
//!   shipped inside its jar (`tcp.xml` with `--transport tcp`); skipped with a message
//!   when no JGroups 5.6 jar is found (`JGROUPS5_JAR`);
//! - **jgroups-2.12** (Debian `libjgroups-java`): `interop/jgroups-perf/run.sh`, with the
//!   `udp.xml` shipped inside that jar;
//! - **raw-udp**: the same bytes in datagrams of cohort's size multicast once, no
//!   protocol (`cohort multicast --raw`), each sender sending for at least
//!   `--raw-seconds`: what arrives at each receiver per second, in group messages (with
//!   every member sending, a receiver's rate of the others' messages times senders ÷
//!   other senders, as a cohort member also delivers its own). Its loss (what the
//!   receivers missed of what the others sent) is reported; the baseline is valid only
//!   when no counted round lost more than `--max-raw-loss` per cent, and the "÷ raw"
//!   ratio is printed only from a valid one;
//! - **raw-tcp**: the same bytes written by each sender to every other member over a TCP
//!   connection each (unicast fan-out, frames of up to 60 000 bytes), no protocol, for at
//!   least `--raw-seconds`; TCP's flow control loses nothing, so this baseline is always
//!   valid, but with more than two members each sender writes every byte once per
//!   receiver, where multicast sends it once.
//!
//! The Java members run with a fixed heap (`-Xms1g -Xmx1g`, `JGROUPS_PERF_HEAP`), take no
//! lock per delivery and read the clock no more often than cohort's member does.
//!
//! With `--transport tcp`, cohort's channels run over TCP (a connection per pair of
//! members) and JGroups 5.6 over its `tcp.xml`; JGroups 2.12 and raw UDP are skipped.
//! With `--fan-out`, cohort and raw UDP send to each member by unicast; JGroups is
//! skipped.
//!
//! As root it runs itself inside a fresh network namespace whose `lo` routes multicast
//! (`--no-netns` to stay in the current one, which then needs such a route).

pub mod member;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use serde::Serialize;
use tokio::process::Command;

use self::member::{RoundReport, TransportArg};
use crate::BenchResult;
use crate::perf::process::cpu_ns;
use crate::stats::{Machine, Schedule, Spread, loadavg};
use crate::supervisor::Proc;

/// The systems `perf-multicast` can compare.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum System {
    /// cohort's reliable channel with LAN timers.
    Cohort,
    /// cohort's reliable channel with the default (SPEC) timers.
    CohortDefaultTimers,
    /// cohort's reliable channel with LAN timers in cluster-key mode.
    CohortKeyed,
    /// JGroups 5.6 with its shipped `udp.xml` / `tcp.xml`.
    Jgroups5,
    /// JGroups 2.12 (Debian) with its shipped `udp.xml`.
    Jgroups2,
    /// Raw UDP multicast, no protocol.
    Raw,
    /// Raw TCP fan-out (one connection per sender and receiver), no protocol.
    RawTcp,
}

impl System {
    /// The name in tables and JSON.
    fn name(self) -> &'static str {
        match self {
            Self::Cohort => "cohort",
            Self::CohortDefaultTimers => "cohort-default-timers",
            Self::CohortKeyed => "cohort-keyed",
            Self::Jgroups5 => "jgroups-5.6",
            Self::Jgroups2 => "jgroups-2.12",
            Self::Raw => "raw-udp",
            Self::RawTcp => "raw-tcp",
        }
    }

    /// Whether this is a no-protocol baseline.
    fn is_raw(self) -> bool {
        matches!(self, Self::Raw | Self::RawTcp)
    }

    /// Whether this is one of the Java systems.
    fn is_jgroups(self) -> bool {
        matches!(self, Self::Jgroups5 | Self::Jgroups2)
    }
}

/// Which members send in a cell.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Senders {
    /// Member 0 alone.
    One,
    /// Every member.
    All,
}

/// Options of `cohort perf-multicast`.
#[derive(Args, Debug, Clone)]
pub struct PerfMulticastArgs {
    /// Group sizes.
    #[arg(long, value_delimiter = ',', default_value = "2,4")]
    members: Vec<usize>,
    /// Message sizes in bytes.
    #[arg(long, value_delimiter = ',', default_value = "1024,16384")]
    sizes: Vec<usize>,
    /// Who sends: `one`, `all` or both.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "one,all")]
    senders: Vec<Senders>,
    /// Messages multicast per round (over all senders) at 1 KiB; other sizes multicast
    /// as many bytes (at least 2 000 messages).
    #[arg(long, default_value_t = 400_000)]
    messages: u64,
    /// Counted rounds per system and cell (the figures are their median and min–max).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Rounds per system and cell before the counted ones, not counted (JIT warm-up).
    #[arg(long, default_value_t = 2)]
    warmup_rounds: usize,
    /// The systems to compare.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "cohort,cohort-keyed,cohort-default-timers,jgroups5,jgroups2,raw,raw-tcp"
    )]
    systems: Vec<System>,
    /// Skip JGroups (both versions).
    #[arg(long)]
    no_jgroups: bool,
    /// Skip the raw UDP baseline.
    #[arg(long)]
    no_raw: bool,
    /// The JGroups 2.12 member's launcher; default: interop/jgroups-perf/run.sh of this
    /// repository.
    #[arg(long)]
    jgroups_peer: Option<PathBuf>,
    /// The JGroups 5.6 member's launcher; default: interop/jgroups-perf/run5.sh of this
    /// repository.
    #[arg(long)]
    jgroups5_peer: Option<PathBuf>,
    /// Use unicast fan-out instead of multicast (cohort and raw only).
    #[arg(long)]
    fan_out: bool,
    /// cohort's transport: `udp`, or `tcp` (then JGroups 5.6 runs `tcp.xml`, and JGroups
    /// 2.12 and raw UDP are skipped).
    #[arg(long, value_enum, default_value_t = TransportArg::Udp)]
    transport: TransportArg,
    /// Seconds each raw UDP sender sends per round (at least).
    #[arg(long, default_value_t = 2.0)]
    raw_seconds: f64,
    /// The raw baseline is invalid when a counted round lost more than this (per cent).
    #[arg(long, default_value_t = 5.0)]
    max_raw_loss: f64,
    /// Do not create a network namespace even when running as root.
    #[arg(long)]
    no_netns: bool,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// cohort's busy-poll after traffic, in microseconds; 0 turns it off (default: the
    /// channel's, see `ReliableChannelConfig::busy_poll`).
    #[arg(long)]
    busy_poll_us: Option<u64>,
    /// Runtime threads of each cohort member process (`cohort multicast --threads`): 1
    /// runs everything on one thread; 0 takes tokio's default of one per core.
    #[arg(long, default_value_t = 1)]
    member_threads: usize,
}

const FIRST_PORT: u16 = 24_600;
const MCAST_PORT: u16 = 46_210;

/// The figures of one counted round of one system.
#[derive(Serialize, Debug, Clone)]
struct RoundFigures {
    group_msgs_per_s: f64,
    mb_per_s: f64,
    latency_p50_us: u64,
    latency_p99_us: u64,
    /// CPU the members used per second of the round.
    cpu_cores: f64,
    /// CPU the other systems' idle groups used per second of the round.
    idle_others_cpu_cores: f64,
    errors: u64,
    /// Raw UDP only: the share of the others' messages the receivers missed.
    #[serde(skip_serializing_if = "Option::is_none")]
    loss: Option<f64>,
}

/// One system's result in one cell.
#[derive(Serialize, Debug, Clone)]
struct SystemResult {
    system: System,
    name: &'static str,
    rounds: Vec<RoundFigures>,
    group_msgs_per_s: Option<Spread>,
    mb_per_s: Option<Spread>,
    latency_p50_us: Option<Spread>,
    latency_p99_us: Option<Spread>,
    cpu_cores: Option<Spread>,
    idle_others_cpu_cores: Option<Spread>,
    errors: u64,
    /// Deliveries after the last round was complete (duplicates): must be 0.
    extra_deliveries: u64,
    /// Raw UDP only: the largest loss of a counted round.
    #[serde(skip_serializing_if = "Option::is_none")]
    max_loss: Option<f64>,
    /// Whether the figures stand (for raw UDP: the loss stayed under the limit).
    valid: bool,
    /// Why there are no figures, or what is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

/// cohort's median rate ÷ another system's.
#[derive(Serialize, Debug, Clone)]
struct Ratio {
    of: &'static str,
    to: &'static str,
    median_ratio: f64,
}

/// One cell: a message size, a group size, who sends.
#[derive(Serialize, Debug, Clone)]
struct CellResult {
    size: usize,
    members: usize,
    senders: Senders,
    messages_per_round: u64,
    load_before: String,
    load_after: String,
    systems: Vec<SystemResult>,
    ratios: Vec<Ratio>,
}

/// The whole run (`--json`).
#[derive(Serialize, Debug, Clone)]
struct Report {
    machine: Machine,
    transport: &'static str,
    runs: usize,
    warmup_rounds: usize,
    raw_seconds: f64,
    max_raw_loss_percent: f64,
    skipped: Vec<String>,
    cells: Vec<CellResult>,
}

/// `cohort perf-multicast`: every cell, in a namespace of its own when run as root.
pub async fn run(args: PerfMulticastArgs) -> BenchResult {
    if !args.no_netns && crate::perf::process::is_root() && std::env::var_os(IN_NETNS).is_none() {
        return run_in_netns().await;
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let tcp = args.transport == TransportArg::Tcp;
    let mut skipped = Vec::new();
    let mut systems: Vec<System> = Vec::new();
    for &sys in &args.systems {
        if systems.contains(&sys) {
            continue;
        }
        let why = if args.no_jgroups && sys.is_jgroups() {
            Some("--no-jgroups".to_owned())
        } else if args.no_raw && sys.is_raw() {
            Some("--no-raw".to_owned())
        } else if tcp && matches!(sys, System::Raw | System::Jgroups2) {
            Some("not with --transport tcp".to_owned())
        } else if args.fan_out && sys.is_jgroups() {
            Some("not with --fan-out".to_owned())
        } else if sys == System::Jgroups5 && args.jgroups5_peer.is_none() {
            jgroups5_missing(&repo)
        } else {
            None
        };
        match why {
            Some(why) => {
                let line = format!("{} skipped: {why}", sys.name());
                println!("{line}");
                skipped.push(line);
            }
            None => systems.push(sys),
        }
    }
    let machine = Machine::now();
    println!(
        "perf-multicast: {} messages per round at 1 KiB, median (min-max) of {} rounds after {} warm-up round(s), {}",
        args.messages,
        args.runs,
        args.warmup_rounds,
        transport_label(&args)
    );
    println!("machine: {}", machine.line());
    let mut cells = Vec::new();
    for &size in &args.sizes {
        for &n in &args.members {
            for &senders in &args.senders {
                let cell = run_cell(&args, &repo, &systems, size, n, senders).await;
                print_cell(&cell);
                cells.push(cell);
            }
        }
    }
    let report = Report {
        machine,
        transport: transport_label(&args),
        runs: args.runs,
        warmup_rounds: args.warmup_rounds,
        raw_seconds: args.raw_seconds,
        max_raw_loss_percent: args.max_raw_loss,
        skipped,
        cells,
    };
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

/// Why JGroups 5.6 cannot run: no jar at `JGROUPS5_JAR` or the default place.
fn jgroups5_missing(repo: &std::path::Path) -> Option<String> {
    let jar = std::env::var_os("JGROUPS5_JAR").map_or_else(
        || repo.join("../shared/jgroups5/jgroups-5.6.jar"),
        PathBuf::from,
    );
    if jar.is_file() {
        None
    } else {
        Some(format!(
            "no JGroups 5.6 jar at {} (set JGROUPS5_JAR; see interop/jgroups-perf/README.md)",
            jar.display()
        ))
    }
}

fn transport_label(args: &PerfMulticastArgs) -> &'static str {
    if args.transport == TransportArg::Tcp {
        "TCP"
    } else if args.fan_out {
        "UDP unicast fan-out"
    } else {
        "UDP multicast"
    }
}

/// Messages per round at `size`: as many bytes as `--messages` at 1 KiB.
fn messages_per_round(args: &PerfMulticastArgs, size: usize) -> u64 {
    (args.messages.saturating_mul(1024) / size.max(1) as u64).max(2_000)
}

/// The member processes of one system in one cell.
struct Group {
    system: System,
    procs: Vec<Proc>,
    senders: Vec<usize>,
    per_sender: u64,
    size: usize,
    rounds: Vec<RoundFigures>,
    failure: Option<String>,
}

impl Group {
    fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(Proc::pid).collect()
    }

    /// Runs round `round`: `go` to every member, then every member's `done`.
    async fn round(&mut self, round: u64) -> Result<(RoundFigures, f64), String> {
        for p in &mut self.procs {
            p.send_line("go")?;
        }
        let mut done = Vec::new();
        for p in &mut self.procs {
            loop {
                let r: RoundReport = p.expect_as("done", Duration::from_secs(300)).await?;
                if r.round == round {
                    done.push(r);
                    break;
                }
            }
        }
        figures(
            self.system,
            &done,
            &self.senders,
            self.per_sender,
            self.size,
        )
    }
}

/// The figures of one round from the members' reports, and the round's wall time.
fn figures(
    system: System,
    done: &[RoundReport],
    senders: &[usize],
    per_sender: u64,
    size: usize,
) -> Result<(RoundFigures, f64), String> {
    let mut errors: u64 = done.iter().map(|d| d.errors).sum();
    let total = per_sender * senders.len() as u64;
    let mut loss = None;
    let (rate, window) = if system.is_raw() {
        // What arrived at a receiver per second, averaged over the receivers, in one
        // window from the first arrival anywhere to the last arrival anywhere (as
        // cohort's figure ends with the slowest member). A raw member counts only the
        // other senders' messages (its own do not come back to it), while cohort's
        // figure counts every message of the group: scale by senders ÷ other senders to
        // compare the same thing.
        let sent = |i: usize| done.get(i).and_then(|d| d.sent).unwrap_or(0);
        let receivers: Vec<(usize, &RoundReport)> = done
            .iter()
            .enumerate()
            .filter(|(i, _)| senders.iter().any(|s| s != i))
            .collect();
        let expected: u64 = receivers
            .iter()
            .map(|(i, _)| {
                senders
                    .iter()
                    .filter(|s| *s != i)
                    .map(|&s| sent(s))
                    .sum::<u64>()
            })
            .sum();
        let got: u64 = receivers.iter().map(|(_, d)| d.delivered).sum();
        loss = Some(1.0 - got as f64 / expected.max(1) as f64);
        let first = receivers.iter().filter_map(|(_, d)| d.first_us).min();
        let last = receivers.iter().filter_map(|(_, d)| d.last_us).max();
        let span_s = last.zip(first).map_or(0, |(l, f)| l.saturating_sub(f)) as f64 / 1e6;
        if span_s <= 0.0 {
            return Err("no raw datagram arrived in a measurable time".into());
        }
        let arrived: f64 = receivers
            .iter()
            .map(|(i, d)| {
                let others = senders.iter().filter(|s| *s != i).count().max(1);
                d.delivered as f64 * senders.len() as f64 / others as f64
            })
            .sum();
        let window = done.iter().filter_map(|d| d.since_go_s).fold(0.0, f64::max);
        (arrived / receivers.len().max(1) as f64 / span_s, window)
    } else {
        let elapsed = done.iter().map(|d| d.elapsed_s).fold(0.0, f64::max);
        errors += done.iter().filter(|d| d.delivered != total).count() as u64;
        (total as f64 / elapsed.max(1e-9), elapsed)
    };
    let cpu: f64 = done.iter().map(|d| d.cpu_s).sum();
    Ok((
        RoundFigures {
            group_msgs_per_s: rate,
            mb_per_s: rate * size as f64 / 1e6,
            latency_p50_us: done.iter().map(|d| d.latency_p50_us).max().unwrap_or(0),
            latency_p99_us: done.iter().map(|d| d.latency_p99_us).max().unwrap_or(0),
            cpu_cores: if window > 0.0 { cpu / window } else { 0.0 },
            idle_others_cpu_cores: 0.0,
            errors,
            loss,
        },
        window,
    ))
}

/// The shape of a cell: `n` members, of which `senders` send `per_sender` messages of
/// `size` bytes each per round.
struct Shape {
    n: usize,
    senders: Vec<usize>,
    per_sender: u64,
    size: usize,
}

/// Starts the `n` members of `system` (the `k`th system: its own ports and group).
fn start_group(
    args: &PerfMulticastArgs,
    repo: &std::path::Path,
    system: System,
    k: usize,
    shape: &Shape,
) -> Result<Group, String> {
    let Shape {
        n,
        ref senders,
        per_sender,
        size,
    } = *shape;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let base = FIRST_PORT + 16 * k as u16;
    let addrs: Vec<String> = (0..n)
        .map(|i| SocketAddr::from((Ipv4Addr::LOCALHOST, base + i as u16)).to_string())
        .collect();
    let group = SocketAddrV4::new(
        Ipv4Addr::new(228, 46, 2, 20 + k as u8),
        MCAST_PORT + k as u16,
    );
    let senders_arg = senders
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut procs = Vec::new();
    for i in 0..n {
        let mut cmd = match system {
            System::Jgroups2 => std::process::Command::new(
                args.jgroups_peer
                    .clone()
                    .unwrap_or_else(|| repo.join("interop/jgroups-perf/run.sh")),
            ),
            System::Jgroups5 => std::process::Command::new(
                args.jgroups5_peer
                    .clone()
                    .unwrap_or_else(|| repo.join("interop/jgroups-perf/run5.sh")),
            ),
            _ => std::process::Command::new(&exe),
        };
        if system.is_jgroups() {
            cmd.arg("--members").arg(n.to_string());
            cmd.arg("--mcast-port").arg(group.port().to_string());
            cmd.env("JGROUPS_MCAST_ADDR", group.ip().to_string());
            if system == System::Jgroups5 {
                let stack = if args.transport == TransportArg::Tcp {
                    "tcp.xml"
                } else {
                    "udp.xml"
                };
                cmd.arg("--stack").arg(stack);
            }
        } else {
            cmd.arg("multicast").arg("--members").arg(addrs.join(","));
            if args.transport == TransportArg::Tcp && system != System::RawTcp {
                cmd.arg("--transport").arg("tcp");
            } else if !args.fan_out && system != System::RawTcp {
                cmd.arg("--multicast").arg(group.to_string());
            }
            match system {
                System::Raw | System::RawTcp => {
                    cmd.arg("--raw")
                        .arg("--raw-seconds")
                        .arg(args.raw_seconds.to_string());
                    if system == System::RawTcp {
                        cmd.arg("--transport").arg("tcp");
                    }
                }
                System::CohortDefaultTimers => {
                    cmd.arg("--timers").arg("default");
                }
                System::CohortKeyed => {
                    cmd.arg("--key-file").arg(key_file()?);
                }
                _ => {}
            }
            if !system.is_raw() {
                if let Some(us) = args.busy_poll_us {
                    cmd.arg("--busy-poll-us").arg(us.to_string());
                }
                cmd.arg("--threads").arg(args.member_threads.to_string());
            }
        }
        cmd.arg("--index")
            .arg(i.to_string())
            .arg("--senders")
            .arg(&senders_arg)
            .arg("--count")
            .arg(per_sender.to_string())
            .arg("--size")
            .arg(size.to_string());
        // The JVMs' logging (buffer-size warnings and the like) goes to a file.
        let stderr = if system.is_jgroups() {
            let log = std::env::temp_dir().join(format!(
                "cohort-perf-multicast-{}-{}-{i}.log",
                std::process::id(),
                system.name()
            ));
            std::fs::File::create(&log).map_or_else(|_| Stdio::null(), Stdio::from)
        } else {
            Stdio::inherit()
        };
        let name = format!("{}-{i}", system.name());
        procs.push(
            Proc::spawn(&name, &mut cmd, stderr)
                .map_err(|e| format!("cannot start {name}: {e}"))?,
        );
    }
    Ok(Group {
        system,
        procs,
        senders: senders.clone(),
        per_sender,
        size,
        rounds: Vec::new(),
        failure: None,
    })
}

/// A key file with a fresh random cluster key, for `cohort-keyed`'s members (one per
/// process run, shared by every keyed group of the run).
fn key_file() -> Result<PathBuf, String> {
    static FILE: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        use std::io::{Read, Write};
        use std::os::unix::fs::OpenOptionsExt;
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(|e| format!("cannot draw a key: {e}"))?;
        let path =
            std::env::temp_dir().join(format!("cohort-perf-multicast-{}.key", std::process::id()));
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{}", cohort::Key::from_bytes(bytes).to_hex()))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(path)
    })
    .clone()
}

/// Runs one cell: every system's group, then the rounds, the systems taking turns.
async fn run_cell(
    args: &PerfMulticastArgs,
    repo: &std::path::Path,
    systems: &[System],
    size: usize,
    n: usize,
    who: Senders,
) -> CellResult {
    let load_before = loadavg();
    let senders: Vec<usize> = match who {
        Senders::All => (0..n).collect(),
        Senders::One => vec![0],
    };
    let messages = messages_per_round(args, size);
    let per_sender = messages / senders.len() as u64;
    eprintln!(
        "perf-multicast: {} B, {n} members, {} sending: starting {} group(s)",
        size,
        if who == Senders::All { "all" } else { "one" },
        systems.len()
    );
    let mut groups: Vec<Group> = Vec::new();
    let mut results: Vec<SystemResult> = Vec::new();
    for (k, &system) in systems.iter().enumerate() {
        let shape = Shape {
            n,
            senders: senders.clone(),
            per_sender,
            size,
        };
        match start_group(args, repo, system, k, &shape) {
            Ok(g) => groups.push(g),
            Err(e) => results.push(failed(system, e)),
        }
    }
    for g in &mut groups {
        for p in &mut g.procs {
            if let Err(e) = p.expect("ready", Duration::from_secs(120)).await {
                g.failure.get_or_insert(e);
            }
        }
    }
    let schedule = Schedule {
        systems: groups.len(),
        warmup: args.warmup_rounds,
        runs: args.runs.max(1),
    };
    for turn in schedule.turns() {
        let (round, at) = (turn.round, turn.system);
        if groups[at].failure.is_some() {
            continue;
        }
        let others: Vec<u32> = groups
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != at)
            .flat_map(|(_, g)| g.pids())
            .collect();
        let cpu_of = |pids: &[u32]| pids.iter().filter_map(|&p| cpu_ns(p)).sum::<u64>();
        let before = cpu_of(&others);
        let started = Instant::now();
        let g = &mut groups[at];
        match g.round(round as u64).await {
            Ok((mut f, _)) => {
                let wall = started.elapsed().as_secs_f64();
                f.idle_others_cpu_cores =
                    cpu_of(&others).saturating_sub(before) as f64 / 1e9 / wall.max(1e-9);
                if turn.counted {
                    g.rounds.push(f);
                }
            }
            Err(e) => {
                eprintln!("perf-multicast: {}: {e}", g.system.name());
                g.failure = Some(e);
            }
        }
    }
    for mut g in groups {
        let mut extra = 0;
        for p in &mut g.procs {
            p.close_stdin();
            if let Ok(v) = p.expect("exit", Duration::from_secs(10)).await {
                extra += v["extra"].as_u64().unwrap_or(0);
            }
            p.stop(Duration::from_secs(5)).await;
        }
        results.push(summarize(&g, extra, args.max_raw_loss / 100.0));
    }
    results.sort_by_key(|r| systems.iter().position(|s| *s == r.system));
    let rate = |s: System| {
        results
            .iter()
            .find(|r| r.system == s && r.valid)
            .and_then(|r| r.group_msgs_per_s)
            .map(|s| s.median)
    };
    let mut ratios = Vec::new();
    if let (Some(keyed), Some(plain)) = (rate(System::CohortKeyed), rate(System::Cohort)) {
        ratios.push(Ratio {
            of: System::CohortKeyed.name(),
            to: System::Cohort.name(),
            median_ratio: keyed / plain,
        });
    }
    if let Some(c) = rate(System::Cohort) {
        for other in [
            System::Jgroups5,
            System::Jgroups2,
            System::Raw,
            System::RawTcp,
        ] {
            if let Some(o) = rate(other) {
                ratios.push(Ratio {
                    of: System::Cohort.name(),
                    to: other.name(),
                    median_ratio: c / o,
                });
            }
        }
    }
    CellResult {
        size,
        members: n,
        senders: who,
        messages_per_round: per_sender * senders.len() as u64,
        load_before,
        load_after: loadavg(),
        systems: results,
        ratios,
    }
}

/// A system that did not run.
fn failed(system: System, why: String) -> SystemResult {
    SystemResult {
        system,
        name: system.name(),
        rounds: Vec::new(),
        group_msgs_per_s: None,
        mb_per_s: None,
        latency_p50_us: None,
        latency_p99_us: None,
        cpu_cores: None,
        idle_others_cpu_cores: None,
        errors: 0,
        extra_deliveries: 0,
        max_loss: None,
        valid: false,
        note: Some(why),
    }
}

/// The spread of a group's counted rounds.
fn summarize(g: &Group, extra: u64, max_loss: f64) -> SystemResult {
    let of =
        |f: &dyn Fn(&RoundFigures) -> f64| Spread::of(&g.rounds.iter().map(f).collect::<Vec<_>>());
    let errors: u64 = g.rounds.iter().map(|r| r.errors).sum();
    let worst_loss = g
        .rounds
        .iter()
        .filter_map(|r| r.loss)
        .fold(None, |m: Option<f64>, l| Some(m.map_or(l, |m| m.max(l))));
    let mut note = g.failure.clone();
    let mut valid = note.is_none() && !g.rounds.is_empty() && errors == 0 && extra == 0;
    if let Some(l) = worst_loss {
        if l > max_loss {
            valid = false;
            note.get_or_insert_with(|| {
                format!(
                    "INVALID: lost up to {:.1} % (limit {:.1} %)",
                    l * 100.0,
                    max_loss * 100.0
                )
            });
        }
    }
    if errors > 0 || extra > 0 {
        note.get_or_insert_with(|| format!("{errors} ERRORS, {extra} extra deliveries"));
    }
    SystemResult {
        system: g.system,
        name: g.system.name(),
        group_msgs_per_s: of(&|r| r.group_msgs_per_s),
        mb_per_s: of(&|r| r.mb_per_s),
        latency_p50_us: of(&|r| r.latency_p50_us as f64),
        latency_p99_us: of(&|r| r.latency_p99_us as f64),
        cpu_cores: of(&|r| r.cpu_cores),
        idle_others_cpu_cores: of(&|r| r.idle_others_cpu_cores),
        rounds: g.rounds.clone(),
        errors,
        extra_deliveries: extra,
        max_loss: worst_loss,
        valid,
        note,
    }
}

/// "1 234 567".
fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// Prints one cell as a table.
fn print_cell(cell: &CellResult) {
    println!();
    println!(
        "{} B, {} members, {} sending ({} msgs/round; load {} -> {})",
        cell.size,
        cell.members,
        if cell.senders == Senders::All {
            "all"
        } else {
            "one"
        },
        cell.messages_per_round,
        cell.load_before,
        cell.load_after
    );
    println!(
        "  {:<22} {:>34} {:>8} {:>8} {:>9} {:>6} {:>6}",
        "system", "group msg/s median (min-max)", "MB/s", "p50 µs", "p99 µs", "CPU", "idle"
    );
    for r in &cell.systems {
        let Some(rate) = r.group_msgs_per_s else {
            println!(
                "  {:<22} -- {}",
                r.name,
                r.note.as_deref().unwrap_or("no figures")
            );
            continue;
        };
        let med = |s: Option<Spread>| s.map_or(0.0, |s| s.median);
        let mut notes = String::new();
        if let Some(l) = r.max_loss {
            notes.push_str(&format!("  loss <= {:.1} %", l * 100.0));
        }
        if let Some(n) = &r.note {
            notes.push_str("  ");
            notes.push_str(n);
        }
        println!(
            "  {:<22} {:>34} {:>8.1} {:>8.0} {:>9.0} {:>6.2} {:>6.2}{notes}",
            r.name,
            format!(
                "{} ({}-{})",
                thousands(rate.median),
                thousands(rate.min),
                thousands(rate.max)
            ),
            med(r.mb_per_s),
            med(r.latency_p50_us),
            med(r.latency_p99_us),
            med(r.cpu_cores),
            med(r.idle_others_cpu_cores),
        );
    }
    if !cell.ratios.is_empty() {
        let line: Vec<String> = cell
            .ratios
            .iter()
            .map(|r| format!("{} / {}: {:.2}x", r.of, r.to, r.median_ratio))
            .collect();
        println!("  medians: {}", line.join(", "));
    }
}

/// Set in the environment of the copy running inside the namespace.
const IN_NETNS: &str = "COHORT_PERF_MULTICAST_NETNS";

/// Creates `cohortmperf<pid>` with `lo` up and multicast routed to it, runs this command
/// again inside it, and deletes it afterwards.
async fn run_in_netns() -> BenchResult {
    let ns = format!("cohortmperf{}", std::process::id());
    let ip = |a: &[&str]| -> Result<(), String> {
        let out = std::process::Command::new("ip")
            .args(a)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    };
    ip(&["netns", "add", &ns])
        .and_then(|()| ip(&["-n", &ns, "link", "set", "lo", "up"]))
        .and_then(|()| ip(&["-n", &ns, "route", "add", "224.0.0.0/4", "dev", "lo"]))
        .map_err(|e| {
            let _ = ip(&["netns", "del", &ns]);
            format!("cannot set up a network namespace: {e} (use --no-netns)")
        })?;
    let exe = std::env::current_exe()?;
    let status = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(&exe)
        .args(std::env::args_os().skip(1))
        .env(IN_NETNS, &ns)
        .stdin(Stdio::null())
        .status()
        .await;
    let _ = ip(&["netns", "del", &ns]);
    let status = status?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("perf-multicast in namespace {ns} failed: {status}").into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_report(delivered: u64, sent: u64, first_us: u64, last_us: u64) -> RoundReport {
        RoundReport {
            delivered,
            sent: Some(sent),
            since_go_s: Some(2.5),
            first_us: Some(first_us),
            last_us: Some(last_us),
            ..RoundReport::default()
        }
    }

    #[test]
    fn raw_loss_counts_what_the_receivers_missed_and_invalidates_the_baseline() {
        // Two members both sending 1 000 000; each received 900 000 of the other's in 1 s.
        let done = [
            raw_report(900_000, 1_000_000, 0, 1_000_000),
            raw_report(900_000, 1_000_000, 0, 1_000_000),
        ];
        let (f, _) = figures(System::Raw, &done, &[0, 1], 1, 1024).expect("figures");
        assert!((f.loss.expect("raw has a loss") - 0.1).abs() < 1e-9);
        // A member delivers its own messages too: 900 000 × 2 senders ÷ 1 other.
        assert!((f.group_msgs_per_s - 1_800_000.0).abs() < 1.0, "{f:?}");
        let group = Group {
            system: System::Raw,
            procs: Vec::new(),
            senders: vec![0, 1],
            per_sender: 1,
            size: 1024,
            rounds: vec![f],
            failure: None,
        };
        let r = summarize(&group, 0, 0.05);
        assert!(!r.valid);
        assert!(
            r.note.as_deref().unwrap_or_default().contains("INVALID"),
            "{r:?}"
        );
        assert!(summarize(&group, 0, 0.2).valid);
    }

    #[test]
    fn protocol_figures_end_with_the_slowest_member_and_count_short_deliveries() {
        let report = |delivered, elapsed_s| RoundReport {
            delivered,
            elapsed_s,
            cpu_s: 1.0,
            ..RoundReport::default()
        };
        let done = [report(1000, 0.5), report(1000, 1.0)];
        let (f, _) = figures(System::Cohort, &done, &[0], 1000, 1024).expect("figures");
        assert_eq!(f.group_msgs_per_s, 1000.0);
        assert_eq!(f.cpu_cores, 2.0);
        assert_eq!(f.errors, 0);
        let done = [report(1000, 0.5), report(999, 1.0)];
        let (f, _) = figures(System::Cohort, &done, &[0], 1000, 1024).expect("figures");
        assert_eq!(f.errors, 1);
    }

    #[test]
    fn every_size_moves_the_same_bytes_per_round() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: PerfMulticastArgs,
        }
        let Cli { args } = clap::Parser::parse_from(["t", "--messages", "400000"]);
        assert_eq!(messages_per_round(&args, 1024), 400_000);
        assert_eq!(messages_per_round(&args, 16384), 25_000);
        assert_eq!(messages_per_round(&args, 1 << 30), 2_000);
        assert_eq!(args.runs, 5);
        assert!(args.systems.contains(&System::Jgroups5));
    }
}
