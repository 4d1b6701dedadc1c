//! `cohort perf-multicast`: reliable group multicast throughput, like JGroups' MPerf.
//!
//! N member processes (2 and 4 by default) form a fixed group on loopback; one member or
//! every member multicasts `--messages` messages in total (split over the senders); every
//! member delivers every message, its own included. A scenario's figure is the group
//! rate: messages multicast divided by the time from "go" until the slowest member
//! delivered the last one (so deliveries per second are that times N), with the MB/s of
//! those messages, the delivery latency p50/p99 (send time to delivery, wall clock; under
//! a flood this is mostly queueing), and the CPU all members used per second of the run.
//!
//! The same run measures:
//! - **cohort**: `cohort multicast` processes ([`member`]), the reliable channel over UDP
//!   multicast, `ReliableConfig::lan()` timers;
//! - **JGroups 2.12** (Debian `libjgroups-java`): `interop/jgroups-perf`, the same
//!   protocol on stdin/stdout, with the `udp.xml` shipped inside the jar, bound to
//!   127.0.0.1;
//! - **raw UDP**: the same bytes in datagrams of cohort's size multicast once, no
//!   protocol (`cohort multicast --raw`): what arrives at each receiver per second, in
//!   group messages (with every member sending, a receiver's rate of the others'
//!   messages times senders ÷ other senders, as a cohort member also delivers its own).
//!
//! With `--transport tcp` only cohort runs, its channels over TCP (a connection per pair
//! of members) instead of UDP.
//!
//! As root it runs itself inside a fresh network namespace whose `lo` routes multicast
//! (`--no-netns` to stay in the current one, which then needs such a route).

pub mod member;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use clap::Args;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::BenchResult;

/// Options of `cohort perf-multicast`.
#[derive(Args, Debug, Clone)]
pub struct PerfMulticastArgs {
    /// Group sizes.
    #[arg(long, value_delimiter = ',', default_value = "2,4")]
    members: Vec<usize>,
    /// Message sizes in bytes.
    #[arg(long, value_delimiter = ',', default_value = "1024")]
    sizes: Vec<usize>,
    /// Messages multicast per scenario, in total over its senders.
    #[arg(long, default_value_t = 400_000)]
    messages: u64,
    /// Repetitions of every scenario (the best is reported, all are printed).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Skip JGroups.
    #[arg(long)]
    no_jgroups: bool,
    /// Skip the raw UDP baseline.
    #[arg(long)]
    no_raw: bool,
    /// The JGroups member's launcher; default: interop/jgroups-perf/run.sh of this repository.
    #[arg(long)]
    jgroups_peer: Option<PathBuf>,
    /// Use unicast fan-out instead of multicast (cohort and raw only).
    #[arg(long)]
    fan_out: bool,
    /// cohort's transport: `udp`, or `tcp` (then cohort alone runs, JGroups and raw UDP
    /// are skipped).
    #[arg(long, value_enum, default_value_t = member::TransportArg::Udp)]
    transport: member::TransportArg,
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
}

const GROUP: Ipv4Addr = Ipv4Addr::new(228, 46, 2, 10);
const MCAST_PORT: u16 = 46_210;
const FIRST_PORT: u16 = 24_600;

/// Which implementation a scenario runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Impl {
    Cohort,
    JGroups,
    Raw,
}

impl Impl {
    fn name(self) -> &'static str {
        match self {
            Self::Cohort => "cohort",
            Self::JGroups => "jgroups",
            Self::Raw => "raw-udp",
        }
    }
}

/// One member process.
struct MemberProc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
}

impl MemberProc {
    /// The next JSON line whose event is `event` (other lines are printed), or an error.
    async fn wait_for(&mut self, event: &str, within: Duration) -> Result<Value, String> {
        let read = async {
            while let Some(line) = self.lines.next_line().await.map_err(|e| e.to_string())? {
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) if v["event"] == event => return Ok(v),
                    Ok(v) if v["event"] == "error" => return Err(format!("member error: {v}")),
                    _ => {}
                }
            }
            Err(format!("member exited before {event}"))
        };
        tokio::time::timeout(within, read)
            .await
            .map_err(|_| format!("no {event} within {within:?}"))?
    }
}

/// The figures of one scenario run.
#[derive(Debug, Clone)]
struct Outcome {
    group_msgs_per_s: f64,
    mb_per_s: f64,
    p50_us: u64,
    p99_us: u64,
    cpu_cores: f64,
    errors: u64,
    /// Raw UDP only: the share of the other senders' messages that reached a receiver.
    arrived: Option<f64>,
}

/// `cohort perf-multicast`: every scenario, in a namespace of its own when run as root.
pub async fn run(args: PerfMulticastArgs) -> BenchResult {
    if !args.no_netns && crate::perf::process::is_root() && std::env::var_os(IN_NETNS).is_none() {
        return run_in_netns().await;
    }
    let exe = std::env::current_exe()?;
    let jgroups = args.jgroups_peer.clone().unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../interop/jgroups-perf/run.sh")
    });
    let tcp = args.transport == member::TransportArg::Tcp;
    let mut impls = vec![Impl::Cohort];
    if !args.no_jgroups && !tcp {
        impls.push(Impl::JGroups);
    }
    if !args.no_raw && !tcp {
        impls.push(Impl::Raw);
    }
    println!(
        "perf-multicast: {} messages per scenario, best of {} run(s), {}",
        args.messages,
        args.runs,
        if tcp {
            "TCP"
        } else if args.fan_out {
            "unicast fan-out"
        } else {
            "multicast"
        }
    );
    println!(
        "{:<8} {:>3} {:>7} {:>6} {:>12} {:>9} {:>9} {:>9} {:>6}",
        "impl", "N", "senders", "size", "group msg/s", "MB/s", "p50 µs", "p99 µs", "CPU"
    );
    let mut results = Vec::new();
    for &size in &args.sizes {
        for &n in &args.members {
            for all in [false, true] {
                let mut best: Vec<(Impl, Outcome)> = Vec::new();
                for &imp in &impls {
                    let mut best_run: Option<Outcome> = None;
                    for _ in 0..args.runs {
                        match scenario(&args, imp, &exe, &jgroups, n, all, size).await {
                            Ok(o) => {
                                if best_run
                                    .as_ref()
                                    .is_none_or(|b| o.group_msgs_per_s > b.group_msgs_per_s)
                                {
                                    best_run = Some(o);
                                }
                            }
                            Err(e) => eprintln!("{} N={n} all={all}: {e}", imp.name()),
                        }
                    }
                    if let Some(o) = best_run {
                        println!(
                            "{:<8} {:>3} {:>7} {:>6} {:>12.0} {:>9.1} {:>9} {:>9} {:>6.2}{}",
                            imp.name(),
                            n,
                            if all { "all" } else { "one" },
                            size,
                            o.group_msgs_per_s,
                            o.mb_per_s,
                            o.p50_us,
                            o.p99_us,
                            o.cpu_cores,
                            if o.errors > 0 {
                                format!("  {} ERRORS", o.errors)
                            } else if let Some(a) = o.arrived {
                                format!("  ({:.0} % arrived)", a * 100.0)
                            } else {
                                String::new()
                            }
                        );
                        best.push((imp, o));
                    }
                }
                let get = |i: Impl| best.iter().find(|(x, _)| *x == i).map(|(_, o)| o.clone());
                let cohort = get(Impl::Cohort);
                let mut ratios = json!({});
                if let Some(c) = &cohort {
                    for (other, key) in [(Impl::JGroups, "vs_jgroups"), (Impl::Raw, "vs_raw")] {
                        if let Some(o) = get(other) {
                            let r = c.group_msgs_per_s / o.group_msgs_per_s;
                            println!("  cohort / {}: {r:.2}x", other.name());
                            ratios[key] = json!(r);
                        }
                    }
                }
                results.push(json!({
                    "members": n,
                    "senders": if all { "all" } else { "one" },
                    "size": size,
                    "results": best.iter().map(|(i, o)| json!({
                        "impl": i.name(),
                        "group_msgs_per_s": o.group_msgs_per_s,
                        "mb_per_s": o.mb_per_s,
                        "latency_p50_us": o.p50_us,
                        "latency_p99_us": o.p99_us,
                        "cpu_cores": o.cpu_cores,
                        "errors": o.errors,
                        "arrived": o.arrived,
                    })).collect::<Vec<_>>(),
                    "ratios": ratios,
                }));
            }
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)?;
    }
    Ok(())
}

/// Runs one scenario: starts the members, says go, collects their figures.
async fn scenario(
    args: &PerfMulticastArgs,
    imp: Impl,
    exe: &std::path::Path,
    jgroups: &std::path::Path,
    n: usize,
    all: bool,
    size: usize,
) -> Result<Outcome, String> {
    let senders: Vec<usize> = if all { (0..n).collect() } else { vec![0] };
    let per_sender = args.messages / senders.len() as u64;
    let addrs: Vec<String> = (0..n)
        .map(|i| SocketAddr::from((Ipv4Addr::LOCALHOST, FIRST_PORT + i as u16)).to_string())
        .collect();
    let senders_arg = senders
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut procs = Vec::new();
    for i in 0..n {
        let mut cmd = match imp {
            Impl::JGroups => Command::new(jgroups),
            _ => Command::new(exe),
        };
        if imp != Impl::JGroups {
            cmd.arg("multicast").arg("--members").arg(addrs.join(","));
            if args.transport == member::TransportArg::Tcp {
                cmd.arg("--transport").arg("tcp");
            } else if !args.fan_out {
                cmd.arg("--multicast")
                    .arg(SocketAddrV4::new(GROUP, MCAST_PORT).to_string());
            }
            if imp == Impl::Raw {
                cmd.arg("--raw");
            } else if let Some(us) = args.busy_poll_us {
                cmd.arg("--busy-poll-us").arg(us.to_string());
            }
        } else {
            cmd.arg("--members").arg(n.to_string());
            cmd.arg("--mcast-port").arg(MCAST_PORT.to_string());
        }
        cmd.arg("--index")
            .arg(i.to_string())
            .arg("--senders")
            .arg(&senders_arg)
            .arg("--count")
            .arg(per_sender.to_string())
            .arg("--size")
            .arg(size.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start a member: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        procs.push(MemberProc {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        });
    }
    for p in &mut procs {
        p.wait_for("ready", Duration::from_secs(60)).await?;
    }
    for p in &mut procs {
        if let Some(stdin) = &mut p.stdin {
            stdin
                .write_all(b"go\n")
                .await
                .map_err(|e| format!("cannot say go: {e}"))?;
        }
    }
    let mut done = Vec::new();
    for p in &mut procs {
        done.push(p.wait_for("done", Duration::from_secs(300)).await?);
    }
    let mut errors = 0;
    for p in &mut procs {
        p.stdin = None;
        if let Ok(exit) = p.wait_for("exit", Duration::from_secs(10)).await {
            errors += exit["extra"].as_u64().unwrap_or(0);
        }
        let _ = p.child.kill().await;
    }
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    errors += done
        .iter()
        .map(|d| d["errors"].as_u64().unwrap_or(0))
        .sum::<u64>();
    let total = per_sender * senders.len() as u64;
    let mut arrived_share = None;
    let (rate, cpu_window) = if imp == Impl::Raw {
        // What arrived at a receiver per second, averaged over the receivers, in one
        // window from the first arrival anywhere to the last arrival anywhere (as
        // cohort's figure ends with the slowest member). A raw member counts only the
        // other senders' messages (its own do not come back to it), while cohort's
        // figure counts every message of the group: scale by senders ÷ other senders to
        // compare the same thing. Datagrams a receiver's socket dropped are not counted.
        let receivers: Vec<(usize, &Value)> = done
            .iter()
            .enumerate()
            .filter(|(_, d)| f(d, "delivered") > 0.0 && d["first_us"].is_u64())
            .collect();
        if receivers.is_empty() {
            return Err("no raw datagram arrived".into());
        }
        let us = |d: &Value, k: &str| d[k].as_u64().unwrap_or(0);
        let first = receivers.iter().map(|(_, d)| us(d, "first_us")).min();
        let last = receivers.iter().map(|(_, d)| us(d, "last_us")).max();
        let span_s = last.zip(first).map_or(0, |(l, f)| l.saturating_sub(f)) as f64 / 1e6;
        if span_s <= 0.0 {
            return Err("raw datagrams arrived in no measurable time".into());
        }
        let arrived: f64 = receivers
            .iter()
            .map(|(i, d)| {
                let others = senders.iter().filter(|s| **s != *i).count().max(1);
                f(d, "delivered") * senders.len() as f64 / others as f64
            })
            .sum();
        let expected: f64 = receivers
            .iter()
            .map(|(i, _)| (per_sender * senders.iter().filter(|s| **s != *i).count() as u64) as f64)
            .sum();
        let got: f64 = receivers.iter().map(|(_, d)| f(d, "delivered")).sum();
        arrived_share = Some(got / expected.max(1.0));
        let window = done.iter().map(|d| f(d, "since_go_s")).fold(0.0, f64::max);
        (arrived / receivers.len() as f64 / span_s, window)
    } else {
        let elapsed = done.iter().map(|d| f(d, "elapsed_s")).fold(0.0, f64::max);
        for d in &done {
            if d["delivered"].as_u64() != Some(total) {
                errors += 1;
            }
        }
        (total as f64 / elapsed, elapsed)
    };
    let cpu: f64 = done.iter().map(|d| f(d, "cpu_s")).sum();
    Ok(Outcome {
        group_msgs_per_s: rate,
        mb_per_s: rate * size as f64 / 1e6,
        p50_us: done
            .iter()
            .filter_map(|d| d["latency_p50_us"].as_u64())
            .max()
            .unwrap_or(0),
        p99_us: done
            .iter()
            .filter_map(|d| d["latency_p99_us"].as_u64())
            .max()
            .unwrap_or(0),
        cpu_cores: if cpu_window > 0.0 {
            cpu / cpu_window
        } else {
            0.0
        },
        errors,
        arrived: arrived_share,
    })
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
