//! The Tomcat Tribes side: the Java peer (`interop/tribes-peer/run.sh`) as sinks and as
//! benches, and cohort sending to those Java sinks (`--cross`).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use cohort::{Event, Node};
use serde_json::Value;

use super::cohort_bench::{cohort_run, perf_config};
use super::process::rss_kib;
use super::sample::{Sample, Scenario};
use super::{PerfArgs, progress};
use crate::supervisor::Proc;

/// What the Tribes part of a run found.
#[derive(Default)]
pub(super) struct TribesOutcome {
    /// Each Tribes bench's JSON result, by [`Scenario::key`].
    pub(super) rates: HashMap<(usize, usize, usize), Value>,
    /// cohort sending to the Java sinks (`--cross`).
    pub(super) cross: Vec<(Scenario, Sample)>,
    /// RSS of an idle Java sink, in KiB.
    pub(super) sink_rss: Option<u64>,
    /// Why Tribes was skipped or partly failed.
    pub(super) note: Option<String>,
}

/// For each member count: starts that many Java sinks, warms them up with a throwaway
/// bench, runs one bench JVM per scenario, then (with `--cross`) cohort's sends to the
/// same sinks. Problems end up in [`TribesOutcome::note`], never as an error.
pub(super) async fn run_tribes(
    args: &PerfArgs,
    domain: &str,
    mcast_port: u16,
    scenarios: &[Scenario],
    duration: Duration,
) -> TribesOutcome {
    let mut out = TribesOutcome::default();
    if args.no_tribes {
        out.note = Some("skipped (--no-tribes)".into());
        return out;
    }
    let launcher = match find_tribes_peer(args) {
        Ok(launcher) => launcher,
        Err(reason) => {
            out.note = Some(format!("skipped ({reason})"));
            return out;
        }
    };
    let log_dir = std::env::temp_dir().join(format!("cohort-perf-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&log_dir);
    let ctx = TribesCtx {
        launcher,
        domain: domain.to_owned(),
        log_dir,
    };
    let mut members_list = args.members.clone();
    members_list.sort_unstable();
    members_list.dedup();
    for (gi, &m) in members_list.iter().enumerate() {
        let port = mcast_port.wrapping_add(1 + gi as u16);
        progress(format!("tribes: starting {m} Java sink(s)"));
        let mut jsinks = match ctx.start_sinks(m, port).await {
            Ok(s) => s,
            Err(e) => {
                out.note = Some(format!("skipped ({e})"));
                return out;
            }
        };
        if out.sink_rss.is_none() {
            tokio::time::sleep(Duration::from_millis(1200)).await;
            out.sink_rss = rss_kib(jsinks[0].pid());
        }
        // Warm the sink JVMs up (JIT) with a throwaway bench, as cohort's sinks were
        // warmed up.
        progress("tribes: warm-up bench");
        let warm_threads = args.senders.max(1);
        let warm_count = (tribes_expected_rate(1024, m, warm_threads) * args.warmup.max(2.0)
            / warm_threads as f64) as usize;
        if let Err(e) = ctx
            .bench(port, m, 1024, warm_threads, warm_count.max(1000))
            .await
        {
            // Most likely the JVMs cannot hear each other (no multicast route): the
            // other benches would fail the same way.
            out.note = Some(format!("skipped (warm-up bench failed: {e})"));
            return out;
        }
        for sc in scenarios.iter().filter(|s| s.members == m) {
            progress(format!("tribes: {}", sc.label()));
            match ctx.bench_for(port, m, sc.size, sc.senders, duration).await {
                Ok(v) => {
                    out.rates.insert(sc.key(), v);
                }
                Err(e) => {
                    progress(format!("tribes bench failed: {e}"));
                    out.note = Some(format!("partly failed ({e})"));
                }
            }
        }
        // cohort -> the (now warm) Java sinks, after the Tribes benches: a bench JVM
        // sends to every member it sees, so cohort must be gone before one starts.
        if args.cross {
            match cross_run(args, domain, port, m, scenarios, duration).await {
                Ok(mut r) => out.cross.append(&mut r),
                Err(e) => progress(format!("cross: {e}")),
            }
        }
        for s in &mut jsinks {
            s.stop(Duration::from_secs(10)).await;
        }
    }
    out
}

/// Where the Java peer's launcher is, or why there is none.
fn find_tribes_peer(args: &PerfArgs) -> Result<PathBuf, String> {
    if let Some(p) = &args.tribes_peer {
        return if p.is_file() {
            Ok(p.clone())
        } else {
            Err(format!("{} does not exist", p.display()))
        };
    }
    let rel = Path::new("interop/tribes-peer/run.sh");
    let mut candidates = vec![];
    if let Ok(cwd) = std::env::current_dir() {
        candidates.extend(cwd.ancestors().map(|d| d.join(rel)));
    }
    if let Ok(exe) = std::env::current_exe() {
        candidates.extend(exe.ancestors().skip(1).map(|d| d.join(rel)));
    }
    let found = candidates
        .into_iter()
        .find(|c| c.is_file())
        .ok_or("interop/tribes-peer/run.sh not found (use --tribes-peer)")?;
    let java = Command::new("java")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(java, Ok(s) if s.success()) {
        return Err("java not installed".into());
    }
    Ok(found)
}

/// A guess at Tribes' rate, to size its count-based bench to about `duration`.
fn tribes_expected_rate(size: usize, members: usize, threads: usize) -> f64 {
    let one = threads == 1;
    match (size <= 4096, members <= 1) {
        (true, true) => {
            if one {
                15_600.0
            } else {
                42_800.0
            }
        }
        (true, false) => {
            if one {
                8_900.0
            } else {
                13_000.0
            }
        }
        (false, true) => {
            if one {
                10_300.0
            } else {
                18_300.0
            }
        }
        (false, false) => {
            if one {
                4_000.0
            } else {
                7_000.0
            }
        }
    }
}

/// A TCP port that was free a moment ago, for a Java peer's receiver.
fn free_port() -> u16 {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map_or(4000, |a| a.port())
}

/// What every Java peer of a run shares.
struct TribesCtx {
    /// `run.sh` of the Java peer.
    launcher: PathBuf,
    /// The cluster name.
    domain: String,
    /// Where each JVM's output goes (`<name>.log`).
    log_dir: PathBuf,
}

impl TribesCtx {
    /// The launcher with the options every peer gets: domain, multicast port, a free
    /// TCP port.
    fn command(&self, mcast_port: u16) -> Command {
        let mut cmd = Command::new(&self.launcher);
        cmd.args(["--quiet", "--domain", &self.domain])
            .args(["--mcast-port", &mcast_port.to_string()])
            .args(["--port", &free_port().to_string()]);
        cmd
    }

    /// A fresh log file for the JVM called `name` (or nowhere, if it cannot be created).
    fn log(&self, name: &str) -> Stdio {
        std::fs::File::create(self.log_dir.join(format!("{name}.log")))
            .map_or_else(|_| Stdio::null(), Stdio::from)
    }

    /// The last three lines of the JVM `name`'s log, for error messages.
    fn log_tail(&self, name: &str) -> String {
        let text =
            std::fs::read_to_string(self.log_dir.join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(3).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }

    /// Starts `n` `--sink` JVMs on `mcast_port` and waits until each has started.
    async fn start_sinks(&self, n: usize, mcast_port: u16) -> Result<Vec<Proc>, String> {
        let mut sinks = Vec::new();
        for i in 0..n {
            let name = format!("tribes-sink-{mcast_port}-{i}");
            let mut cmd = self.command(mcast_port);
            cmd.arg("--sink");
            let p = Proc::spawn(&name, &mut cmd, self.log(&name))
                .map_err(|e| format!("cannot start {}: {e}", self.launcher.display()))?;
            sinks.push(p);
        }
        for s in &mut sinks {
            s.expect("started", Duration::from_secs(60))
                .await
                .map_err(|e| format!("{e}; log: {}", self.log_tail(&s.name)))?;
        }
        Ok(sinks)
    }

    /// One bench JVM: `count` sends per thread (a tenth of them, at most 2000, warm-up).
    async fn bench(
        &self,
        mcast_port: u16,
        members: usize,
        size: usize,
        threads: usize,
        count: usize,
    ) -> Result<Value, String> {
        let name = format!("tribes-bench-{members}-{size}-{threads}");
        let mut cmd = self.command(mcast_port);
        cmd.args(["--bench-to", &members.to_string()])
            .args(["--bench-size", &size.to_string()])
            .args(["--bench-threads", &threads.to_string()])
            .args(["--bench-count", &count.to_string()])
            .args(["--bench-wait", "30"]);
        let mut p = Proc::spawn(&name, &mut cmd, self.log(&name))
            .map_err(|e| format!("cannot start {}: {e}", self.launcher.display()))?;
        let v = p
            .expect("bench", Duration::from_secs(300))
            .await
            .map_err(|e| format!("{e}; log: {}", self.log_tail(&name)))?;
        p.stop(Duration::from_secs(10)).await;
        Ok(v)
    }

    /// A bench sized to run about `duration`: first from a guess of Tribes' rate, again
    /// with the measured rate when the guess was far off.
    async fn bench_for(
        &self,
        mcast_port: u16,
        members: usize,
        size: usize,
        threads: usize,
        duration: Duration,
    ) -> Result<Value, String> {
        let count_for = |rate: f64| {
            let per_thread = (rate * duration.as_secs_f64() / threads as f64) as usize;
            (per_thread + (per_thread / 9).min(2000)).max(500)
        };
        let guess = tribes_expected_rate(size, members, threads);
        let mut v = self
            .bench(mcast_port, members, size, threads, count_for(guess))
            .await?;
        let secs = v["secs"].as_f64().unwrap_or(0.0);
        let measured = v["msgs_per_sec"].as_f64().unwrap_or(0.0);
        let target = duration.as_secs_f64();
        if measured > 0.0 && (secs < 0.6 * target || secs > 2.0 * target) {
            v = self
                .bench(mcast_port, members, size, threads, count_for(measured))
                .await?;
            v["runs"] = Value::from(2);
        }
        Ok(v)
    }
}

/// cohort sender -> Java Tribes sinks, same scenarios.
async fn cross_run(
    args: &PerfArgs,
    domain: &str,
    mcast_port: u16,
    members: usize,
    scenarios: &[Scenario],
    duration: Duration,
) -> Result<Vec<(Scenario, Sample)>, String> {
    let (node, mut events) = Node::start(perf_config(domain, mcast_port, args.busy_poll()))
        .await
        .map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut dest = Vec::new();
    while dest.len() < members {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(Event::MemberAdded(m))) => dest.push(m),
            Ok(Some(_)) => {}
            _ => {
                node.shutdown().await;
                return Err(format!("saw {} of {members} Java sinks", dest.len()));
            }
        }
    }
    let drain = tokio::spawn(async move { while events.recv().await.is_some() {} });
    let mut out = Vec::new();
    let payload_warm = Bytes::from(vec![b'x'; 1024]);
    let _ = cohort_run(
        &node,
        &dest,
        &payload_warm,
        args.senders.max(1),
        Duration::from_secs_f64(args.warmup.max(0.0)),
    )
    .await;
    for sc in scenarios.iter().filter(|s| s.members == members) {
        progress(format!("cross (cohort -> Tribes): {}", sc.label()));
        let payload = Bytes::from(vec![b'x'; sc.size]);
        out.push((
            *sc,
            cohort_run(&node, &dest, &payload, sc.senders, duration).await,
        ));
    }
    node.shutdown().await;
    drain.abort();
    // Let the sinks process the shutdown announcement before a bench JVM joins.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(out)
}
