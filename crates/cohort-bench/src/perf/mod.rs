//! `cohort perf`: ACKed send throughput and latency, against a raw TCP baseline and
//! against real Tomcat Tribes, all in one run.
//!
//! The receivers are separate OS processes (`cohort perf-sink`, a hidden subcommand of
//! this executable): they start a node, report when they are up and how fast their first
//! heartbeat went out, and accept every message. The measuring process starts its own
//! node, waits until it sees every sink and warms up. Sender and sinks use the same
//! [`Config::busy_poll`](cohort::Config::busy_poll) (`--busy-poll-us`).
//!
//! The Tribes comparison runs `interop/tribes-peer/run.sh` (a Java peer around the real
//! Tomcat Tribes, fixed heap): as many `--sink` JVMs as the most members of a scenario,
//! and one `--bench-serve` JVM that runs every Tribes bench of the run, so it stays warm.
//!
//! Then rounds ([`crate::stats::Schedule`]): `--warmup-rounds` not counted (the JVMs
//! compile their hot paths there), then `--runs` counted. In a round every scenario
//! (message size × number of destinations × concurrent senders) runs for `--duration`
//! for cohort and for Tribes, the two taking turns scenario by scenario and the first of
//! them rotating from round to round. cohort's runs record the latency of every send in
//! an HDR histogram and the CPU time the sender and the sinks used. Every figure is
//! printed as the median with min–max over the counted rounds.
//!
//! The raw TCP baseline uses the same kind of separate process (`perf-sink --raw`) with
//! plain tokio sockets: ping-pong of a frame as large as cohort's with a 21-byte reply
//! (Tribes' ACK size), one outstanding (interleaved in slices with cohort's one-sender,
//! one-member runs of the same round) and pipelined, and one-way streaming, in every
//! round.
//!
//! Tribes' multicast needs a route for 224.0.0.0/4, so when run as root `cohort perf`
//! re-executes itself inside a fresh network namespace with `lo` up and that route, and
//! deletes the namespace afterwards (`--no-netns` to stay in the current one).
//!
//! Layout: this file holds the options, the entry points and the measuring process's
//! sequence; [`netns`] the namespace, [`process`] child processes, runtimes and `/proc`
//! readings, [`sink`] the cohort sink process, [`cohort_bench`] the cohort send loop,
//! [`raw_tcp`] the baseline, [`tribes`] the Java side, [`sample`] the measurements and
//! [`report`] the tables and JSON.

mod cohort_bench;
pub mod election;
pub mod group;
pub mod multicast;
mod netns;
mod process;
mod raw_tcp;
mod report;
mod sample;
mod sink;
mod tribes;
pub mod zookeeper;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, ValueEnum};
use cohort::{Config, Event, Member};

use self::cohort_bench::{cohort_run, cohort_run_timed, perf_config, start_timed};
use self::process::{on_own_runtime, rss_kib, unix_us};
use self::raw_tcp::{raw_ping_pong, raw_stream};
use self::report::{Report, ScenarioRounds};
use self::sample::{Sample, Scenario};
use self::sink::{RawReady, SinkReady, SinkStopped};
use crate::BenchResult;
use crate::stats::{Machine, Schedule, loadavg};
use crate::supervisor::Proc;

/// Bytes a data frame adds around the message: framing (18), options, timestamp and
/// the two length fields (20), the 16-byte message id, the sender's member record
/// without domain and payload (77), and the message length field (4).
const FRAME_OVERHEAD: usize = 18 + 20 + 16 + 77 + 4;
/// Slices of the interleaved cohort / raw ping-pong comparison.
const PAIRED_SLICES: u32 = 6;

/// Which tokio runtime a perf process uses.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// One thread runs everything (`new_current_thread`).
    Current,
    /// A work-stealing pool of `--workers` threads (`new_multi_thread`).
    Multi,
}

/// The library's default [`Config::busy_poll`], in microseconds.
fn default_busy_poll_us() -> u64 {
    Config::default().busy_poll.as_micros() as u64
}

/// Options of `cohort perf`.
#[derive(Args, Debug, Clone)]
pub struct PerfArgs {
    /// Seconds each scenario runs, in every round and for each system.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Seconds of cohort's warm-up traffic before the first round.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Counted rounds: in each, every scenario runs once for cohort and once for Tribes
    /// (taking turns, the first system rotating from round to round); every figure is the
    /// median with min–max over these rounds.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Rounds before the counted ones, not counted: the Tribes JVMs compile their hot
    /// paths there.
    #[arg(long, default_value_t = 1)]
    warmup_rounds: usize,
    /// Concurrent senders of the "several senders" scenarios (each scenario also runs
    /// with one sender).
    #[arg(long, default_value_t = 4)]
    senders: usize,
    /// Message sizes in bytes.
    #[arg(long, value_delimiter = ',', default_value = "1024,65536")]
    sizes: Vec<usize>,
    /// Numbers of destination members.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    members: Vec<usize>,
    /// Runtime of the sending process.
    #[arg(long, value_enum, default_value_t = Flavor::Current)]
    runtime: Flavor,
    /// Runtime of the sink processes.
    #[arg(long, value_enum, default_value_t = Flavor::Current)]
    sink_runtime: Flavor,
    /// Worker threads of a `multi` runtime.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// `Config::busy_poll` of the sending node and of the cohort sinks, in microseconds:
    /// how long a connection polls its socket before it sleeps. 0 turns polling off.
    #[arg(long, value_name = "N", default_value_t = default_busy_poll_us())]
    busy_poll_us: u64,
    /// Skip the Java Tribes comparison.
    #[arg(long)]
    no_tribes: bool,
    /// Also send from cohort to the Java Tribes sinks (cross-implementation).
    #[arg(long)]
    cross: bool,
    /// The Java peer's launcher; default: interop/tribes-peer/run.sh of this repository.
    #[arg(long)]
    tribes_peer: Option<PathBuf>,
    /// Do not create a network namespace even when running as root.
    #[arg(long)]
    no_netns: bool,
    /// Keep every CPU busy with a lowest-priority (SCHED_IDLE, via `chrt`) spinner, so
    /// no CPU halts between messages. On a VM, waking a halted vCPU costs tens of
    /// microseconds per hop, which then dominates every latency; the spinners give way at
    /// once to any real work.
    #[arg(long)]
    keep_awake: bool,
    /// Print one JSON document instead of tables.
    #[arg(long)]
    json: bool,
    /// Internal: already running inside the namespace of that name.
    #[arg(long, hide = true)]
    in_netns: Option<String>,
}

impl PerfArgs {
    /// The `Config::busy_poll` of every cohort node of the run.
    fn busy_poll(&self) -> Duration {
        Duration::from_micros(self.busy_poll_us)
    }
}

/// Options of `cohort perf-sink` (started by `cohort perf`).
#[derive(Args, Debug, Clone)]
pub struct PerfSinkArgs {
    /// Cluster name.
    #[arg(long, default_value = "cohort-perf")]
    domain: String,
    /// Multicast port.
    #[arg(long, default_value_t = 45564)]
    mcast_port: u16,
    /// Runtime of this process.
    #[arg(long, value_enum, default_value_t = Flavor::Current)]
    runtime: Flavor,
    /// Worker threads of a `multi` runtime.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// `Config::busy_poll` of the sink's node, in microseconds (0: off).
    #[arg(long, value_name = "N", default_value_t = default_busy_poll_us())]
    busy_poll_us: u64,
    /// Serve the raw TCP baseline instead of running a node.
    #[arg(long)]
    raw: bool,
    /// Only spin (for `--keep-awake`) until stdin closes.
    #[arg(long)]
    spin: bool,
}

// ---------------------------------------------------------------------------------------
// Entry points

/// `cohort perf`: re-executes itself in a network namespace when it can, then measures.
pub async fn run(args: PerfArgs) -> BenchResult {
    if args.in_netns.is_none() && !args.no_netns && process::is_root() {
        return netns::run_in_netns(&args).await;
    }
    let (flavor, workers) = (args.runtime, args.workers);
    on_own_runtime("cohort-sender", flavor, workers, move || measure(args)).await
}

/// `cohort perf-sink`: a spinner (`--spin`), the raw TCP peer (`--raw`) or a cohort
/// sink, until stdin closes.
pub async fn sink(args: PerfSinkArgs) -> BenchResult {
    if args.spin {
        std::thread::spawn(|| {
            let _ = std::io::Read::read(&mut std::io::stdin(), &mut [0u8; 1]);
            std::process::exit(0);
        });
        loop {
            std::hint::spin_loop();
        }
    }
    let (flavor, workers) = (args.runtime, args.workers);
    if args.raw {
        on_own_runtime("raw-sink", flavor, workers, raw_tcp::raw_server).await
    } else {
        on_own_runtime("cohort-sink", flavor, workers, move || {
            sink::sink_main(args)
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------
// The measuring process

/// A progress line on stderr.
fn progress(msg: impl AsRef<str>) {
    eprintln!("perf: {}", msg.as_ref());
}

/// The measuring process: everything, until done or Ctrl-C.
async fn measure(args: PerfArgs) -> BenchResult {
    tokio::select! {
        r = measure_inner(&args) => r,
        _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
    }
}

/// Starts the sinks and the sending node, runs the raw baseline, cohort's scenarios and
/// Tribes', and prints the report.
async fn measure_inner(args: &PerfArgs) -> BenchResult {
    let duration = Duration::from_secs_f64(args.duration.max(0.1));
    let pid = std::process::id();
    let domain = format!("cohort-perf-{pid}");
    // A multicast port of our own: 40000-49999, from the pid.
    let mcast_port = 40_000 + (pid % 10_000) as u16;
    let exe = std::env::current_exe()?;
    let max_members = args.members.iter().copied().max().unwrap_or(1).max(1);
    let scenarios = Scenario::all(&args.sizes, &args.members, args.senders);
    let runtime_label = |f: Flavor| match f {
        Flavor::Current => "current-thread".to_string(),
        Flavor::Multi => format!("multi-thread ({} workers)", args.workers),
    };
    let machine = Machine::now();
    let cpus = machine.cores;
    let mut spinners = Vec::new();
    if args.keep_awake {
        for i in 0..cpus {
            match Proc::spawn(
                format!("spinner-{i}"),
                Command::new("chrt")
                    .args(["--idle", "0"])
                    .arg(&exe)
                    .args(["perf-sink", "--spin"]),
                Stdio::null(),
            ) {
                Ok(p) => spinners.push(p),
                Err(e) => {
                    progress(format!("--keep-awake: cannot run chrt: {e}"));
                    break;
                }
            }
        }
    }
    progress(format!(
        "{cpus} CPUs; sender runtime {}, sinks {}; busy-poll {} us; namespace {}",
        runtime_label(args.runtime),
        runtime_label(args.sink_runtime),
        args.busy_poll_us,
        args.in_netns.as_deref().unwrap_or("(current)")
    ));

    // --- processes -------------------------------------------------------------------
    let mut raw = Proc::spawn(
        "raw-sink",
        Command::new(&exe)
            .args(["perf-sink", "--raw"])
            .args(sink_runtime_args(args)),
        Stdio::inherit(),
    )?;
    let ready: RawReady = raw.expect_as("raw_ready", Duration::from_secs(10)).await?;
    let raw_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, ready.port));
    progress(format!("starting {max_members} cohort sink process(es)"));
    let mut sinks = Vec::new();
    for i in 0..max_members {
        let p = Proc::spawn(
            format!("cohort-sink-{i}"),
            Command::new(&exe)
                .args(["perf-sink", "--domain", &domain])
                .args(["--mcast-port", &mcast_port.to_string()])
                .args(["--busy-poll-us", &args.busy_poll_us.to_string()])
                .args(sink_runtime_args(args)),
            Stdio::inherit(),
        )?;
        sinks.push(p);
    }
    let mut sink_info = Vec::new();
    for s in &mut sinks {
        sink_info.push(
            s.expect_as::<SinkReady>("ready", Duration::from_secs(10))
                .await?,
        );
    }
    let sink_pids: Vec<u32> = sinks.iter().map(Proc::pid).collect();
    let (node, mut events, sender_first_heartbeat) =
        start_timed(perf_config(&domain, mcast_port, args.busy_poll())).await?;
    // Wait until the sender sees every sink; note when each was first seen.
    let wanted: Vec<String> = sink_info.iter().map(|v| v.id.clone()).collect();
    let mut seen: HashMap<String, (Member, u64)> = HashMap::new();
    let wait_deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.len() < wanted.len() {
        match tokio::time::timeout_at(wait_deadline, events.recv()).await {
            Ok(Some(Event::MemberAdded(m))) => {
                let hex = m.id.to_hex();
                if wanted.contains(&hex) {
                    seen.insert(hex, (m, unix_us()));
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => return Err("sender node stopped".into()),
            Err(_) => {
                return Err(format!(
                    "the sender saw {} of {} sinks within 10 s (multicast on loopback blocked?)",
                    seen.len(),
                    wanted.len()
                )
                .into());
            }
        }
    }
    // Keep draining the sender's events.
    let drain = tokio::spawn(async move { while events.recv().await.is_some() {} });
    let dest: Vec<Member> = wanted.iter().map(|id| seen[id].0.clone()).collect();
    // Start of each sink -> seen by the sender (wall clock, same machine).
    let seen_after_us: Vec<f64> = sink_info
        .iter()
        .zip(&wanted)
        .map(|(v, id)| seen[id].1.saturating_sub(v.start_unix_us) as f64)
        .collect();
    let sink_heartbeat_us: Vec<f64> = sink_info.iter().map(|v| v.first_heartbeat_us).collect();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let sink_rss_idle: Vec<u64> = sink_pids.iter().filter_map(|&p| rss_kib(p)).collect();
    let sender_rss_idle = rss_kib(pid);

    // --- Tribes: sinks and one bench JVM, kept warm for the whole run -------------------
    let tribes_port = mcast_port.wrapping_add(1);
    let (mut tribes, mut tribes_note) =
        match tribes::Tribes::start(args, &domain, tribes_port, max_members).await {
            Ok(t) => (Some(t), None),
            Err(note) => {
                progress(format!("tribes: {note}"));
                (None, Some(note))
            }
        };

    // --- cohort's warm-up traffic ------------------------------------------------------
    let domain_len = domain.len();
    let frame_of = |size: usize| size + FRAME_OVERHEAD + domain_len;
    let mut deliveries = 0u64;
    progress("warming up");
    let warm = Duration::from_secs_f64(args.warmup.max(0.0) / 2.0);
    if !warm.is_zero() {
        for &size in &args.sizes {
            let payload = Bytes::from(vec![b'x'; size]);
            let per = warm / args.sizes.len() as u32;
            let s = cohort_run(&node, &dest, &payload, args.senders.max(1), per).await;
            deliveries += s.count * dest.len() as u64;
            let s = cohort_run(&node, &dest[..1], &payload, 1, per).await;
            deliveries += s.count;
            let _ = raw_ping_pong(raw_addr, frame_of(size), 1, per).await?;
        }
    }

    // --- rounds: every scenario, cohort and Tribes taking turns ------------------------
    let mut results: Vec<ScenarioRounds> = scenarios
        .iter()
        .map(|&sc| ScenarioRounds {
            sc,
            cohort: Vec::new(),
            raw: Vec::new(),
            tribes: Vec::new(),
        })
        .collect();
    let mut raw_pp: HashMap<(usize, usize), Vec<Sample>> = HashMap::new();
    let mut stream_mbps = Vec::new();
    const COHORT: usize = 0;
    let schedule = Schedule {
        systems: if tribes.is_some() { 2 } else { 1 },
        warmup: args.warmup_rounds,
        runs: args.runs.max(1),
    };
    for round in 0..schedule.rounds() {
        let counted = round >= schedule.warmup;
        // The raw baselines that are not interleaved with cohort: once per round.
        if args.senders > 1 {
            for &size in &args.sizes {
                let s = raw_ping_pong(raw_addr, frame_of(size), args.senders, duration).await?;
                if counted {
                    raw_pp.entry((size, args.senders)).or_default().push(s);
                }
            }
        }
        let mbps = raw_stream(raw_addr, duration).await?;
        if counted {
            stream_mbps.push(mbps);
        }
        for (si, sc) in scenarios.iter().enumerate() {
            for turn in schedule.round(round) {
                progress(format!(
                    "{}: {}, {}",
                    if turn.system == COHORT {
                        "cohort"
                    } else {
                        "tribes"
                    },
                    sc.label(),
                    schedule.label(turn)
                ));
                if turn.system != COHORT {
                    let Some(t) = tribes.as_mut() else { continue };
                    match t.bench(sc, duration).await {
                        Ok(v) if counted => results[si].tribes.push(v),
                        Ok(_) => {}
                        Err(e) => {
                            progress(format!("tribes bench failed: {e}"));
                            tribes_note = Some(format!("partly failed ({e})"));
                        }
                    }
                    continue;
                }
                let payload = Bytes::from(vec![b'x'; sc.size]);
                let n = sc.members.min(dest.len());
                let s = if sc.senders == 1 && n == 1 {
                    // Alternate short slices of cohort and raw ping-pong, so both see the
                    // same background load: their ratio is what this compares.
                    let mut cohort = Sample::empty();
                    let mut raw = Sample::empty();
                    let slice = duration / PAIRED_SLICES;
                    for _ in 0..PAIRED_SLICES {
                        raw.merge(raw_ping_pong(raw_addr, frame_of(sc.size), 1, slice).await?);
                        cohort.merge(
                            cohort_run_timed(&node, &dest[..1], &payload, 1, slice, &sink_pids)
                                .await,
                        );
                    }
                    if counted {
                        results[si].raw.push(raw);
                    }
                    cohort
                } else {
                    cohort_run_timed(
                        &node,
                        &dest[..n],
                        &payload,
                        sc.senders,
                        duration,
                        &sink_pids,
                    )
                    .await
                };
                deliveries += s.count * n as u64;
                if counted {
                    results[si].cohort.push(s);
                }
            }
        }
    }
    raw.stop(Duration::from_secs(5)).await;
    let sink_rss_after: Vec<u64> = sink_pids.iter().filter_map(|&p| rss_kib(p)).collect();
    let sender_rss_after = rss_kib(pid);
    node.shutdown().await;
    drain.abort();
    let mut sink_received = 0u64;
    for s in &mut sinks {
        s.close_stdin();
        match s
            .expect_as::<SinkStopped>("stopped", Duration::from_secs(5))
            .await
        {
            Ok(v) => sink_received += v.messages,
            Err(e) => progress(e),
        }
        s.stop(Duration::from_secs(5)).await;
    }
    if sink_received != deliveries {
        progress(format!(
            "WARNING: the sinks received {sink_received} messages, the sender had {deliveries} acknowledged"
        ));
    }

    // --- cohort -> the warm Java sinks (--cross), then the Java peers stop -------------
    let mut cross = Vec::new();
    let mut tribes_sink_rss = None;
    if let Some(mut t) = tribes.take() {
        tribes_sink_rss = t.sink_rss;
        if args.cross {
            match t.cross(args, &scenarios, duration).await {
                Ok(r) => cross = r,
                Err(e) => progress(format!("cross: {e}")),
            }
        }
        t.stop().await;
    }

    for mut s in spinners {
        s.stop(Duration::from_secs(1)).await;
    }

    // --- report -----------------------------------------------------------------------
    let report = Report {
        machine,
        load_after: loadavg(),
        args,
        runtime: runtime_label(args.runtime),
        sink_runtime: runtime_label(args.sink_runtime),
        duration,
        domain_len,
        deliveries,
        sink_received,
        sender_first_heartbeat,
        sink_heartbeat_us,
        seen_after_us,
        sink_rss_idle,
        sink_rss_after,
        sender_rss_idle,
        sender_rss_after,
        tribes_sink_rss,
        raw_pp,
        stream_mbps,
        results,
        tribes_note,
        cross,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.record())?);
    } else {
        report.print();
    }
    Ok(())
}

/// `--runtime` and `--workers` of a `perf-sink` child, from `--sink-runtime`.
fn sink_runtime_args(args: &PerfArgs) -> Vec<String> {
    vec![
        "--runtime".into(),
        match args.sink_runtime {
            Flavor::Current => "current".into(),
            Flavor::Multi => "multi".into(),
        },
        "--workers".into(),
        args.workers.to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn frame_overhead_matches_encoder() {
        let mut out = bytes::BytesMut::new();
        let record = cohort::proto::wire::tribes::MemberRecord {
            alive_ms: 0,
            tcp_port: 4000,
            secure_port: -1,
            udp_port: -1,
            host: std::net::IpAddr::V4(Ipv4Addr::LOCALHOST),
            command: Bytes::new(),
            domain: Bytes::from_static(b"abc"),
            unique_id: [0; 16],
            payload: Bytes::new(),
        }
        .to_bytes();
        cohort::proto::wire::tribes::encode_data_frame(
            cohort::SendOptions::USE_ACK,
            0,
            &[0; 16],
            &record,
            &[0; 100],
            &mut out,
        );
        assert_eq!(out.len(), 100 + FRAME_OVERHEAD + 3);
    }

    /// `cohort perf` and `cohort perf-sink` as clap sees them.
    #[derive(Parser)]
    enum TestCli {
        Perf(PerfArgs),
        PerfSink(PerfSinkArgs),
    }

    #[test]
    fn busy_poll_defaults_to_the_library_default() {
        let TestCli::Perf(args) = TestCli::parse_from(["t", "perf"]) else {
            panic!("parsed as something else")
        };
        assert_eq!(args.busy_poll(), Config::default().busy_poll);
        let TestCli::Perf(args) = TestCli::parse_from(["t", "perf", "--busy-poll-us", "0"]) else {
            panic!("parsed as something else")
        };
        assert!(args.busy_poll().is_zero());
        let TestCli::PerfSink(args) = TestCli::parse_from(["t", "perf-sink"]) else {
            panic!("parsed as something else")
        };
        assert_eq!(
            Duration::from_micros(args.busy_poll_us),
            Config::default().busy_poll
        );
    }
}
