//! The Tomcat Tribes side: the Java peer (`interop/tribes-peer/run.sh`) as sinks and as
//! one warm bench JVM, and cohort sending to those Java sinks (`--cross`).

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

/// Heap and collector of every Java peer, unless `TRIBES_PEER_JAVA_OPTS` is set: fixed,
/// so a run does not depend on the JVM's sizing of the machine.
const JAVA_OPTS: &str = "-Xms512m -Xmx512m -XX:+UseG1GC";

/// Real Tomcat Tribes, kept warm for the whole run: as many `--sink` JVMs as the most
/// members of a scenario, and one `--bench-serve` JVM that runs every Tribes bench of
/// the run (each to the first N sinks), so its JIT stays warm from round to round.
pub(super) struct Tribes {
    ctx: TribesCtx,
    /// The multicast port of the Java peers (not cohort's).
    port: u16,
    sinks: Vec<Proc>,
    bench: Option<Proc>,
    /// The last measured rate of each scenario, by [`Scenario::key`], to size the next
    /// bench of it to about the scenario's duration.
    rates: HashMap<(usize, usize, usize), f64>,
    /// RSS of an idle Java sink, in KiB.
    pub(super) sink_rss: Option<u64>,
}

impl Tribes {
    /// Starts `members` Java sinks on `port` and the bench JVM, and waits until the bench
    /// JVM sees every sink; `Err` says why Tribes is skipped.
    pub(super) async fn start(
        args: &PerfArgs,
        domain: &str,
        port: u16,
        members: usize,
    ) -> Result<Self, String> {
        if args.no_tribes {
            return Err("skipped (--no-tribes)".into());
        }
        let launcher = find_tribes_peer(args).map_err(|r| format!("skipped ({r})"))?;
        let log_dir = std::env::temp_dir().join(format!("cohort-perf-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&log_dir);
        let ctx = TribesCtx {
            launcher,
            domain: domain.to_owned(),
            log_dir,
        };
        progress(format!(
            "tribes: starting {members} Java sink(s) and a bench JVM"
        ));
        let sinks = ctx
            .start_sinks(members, port)
            .await
            .map_err(|e| format!("skipped ({e})"))?;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let sink_rss = sinks.first().and_then(|s| rss_kib(s.pid()));
        let name = "tribes-bench";
        let mut cmd = ctx.command(port);
        cmd.args(["--bench-serve", "--bench-wait", "30"]);
        let mut bench = Proc::spawn(name, &mut cmd, ctx.log(name))
            .map_err(|e| format!("skipped (cannot start {}: {e})", ctx.launcher.display()))?;
        bench
            .expect("started", Duration::from_secs(60))
            .await
            .map_err(|e| format!("skipped ({e}; log: {})", ctx.log_tail(name)))?;
        Ok(Self {
            ctx,
            port,
            sinks,
            bench: Some(bench),
            rates: HashMap::new(),
            sink_rss,
        })
    }

    /// One Tribes bench of `sc`, sized from the last measured rate of the scenario (a
    /// guess the first time) to run about `duration`: the bench JVM's own JSON result.
    pub(super) async fn bench(
        &mut self,
        sc: &Scenario,
        duration: Duration,
    ) -> Result<Value, String> {
        let rate = self
            .rates
            .get(&sc.key())
            .copied()
            .unwrap_or_else(|| tribes_expected_rate(sc.size, sc.members, sc.senders));
        // A tenth more for the bench's own warm-up (at most 2000 sends per thread).
        let per_thread = (rate * duration.as_secs_f64() / sc.senders.max(1) as f64) as usize;
        let count = (per_thread + (per_thread / 9).min(2000)).max(500);
        let bench = self.bench.as_mut().ok_or("the bench JVM has stopped")?;
        bench.send_line(&format!(
            "bench {} {} {} {count}",
            sc.members, sc.size, sc.senders
        ))?;
        let v = bench
            .expect("bench", Duration::from_secs(300))
            .await
            .map_err(|e| format!("{e}; log: {}", self.ctx.log_tail("tribes-bench")))?;
        if let Some(r) = v["msgs_per_sec"].as_f64().filter(|r| *r > 0.0) {
            self.rates.insert(sc.key(), r);
        }
        Ok(v)
    }

    /// Stops the bench JVM (the sinks stay, for `--cross`).
    pub(super) async fn stop_bench(&mut self) {
        if let Some(mut b) = self.bench.take() {
            b.stop(Duration::from_secs(10)).await;
        }
    }

    /// With `--cross`: cohort sending to the (warm) Java sinks, each scenario once, after
    /// the bench JVM has stopped (it would otherwise be one of cohort's destinations).
    pub(super) async fn cross(
        &mut self,
        args: &PerfArgs,
        scenarios: &[Scenario],
        duration: Duration,
    ) -> Result<Vec<(Scenario, Sample)>, String> {
        self.stop_bench().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        cross_run(
            args,
            &self.ctx.domain,
            self.port,
            self.sinks.len(),
            scenarios,
            duration,
        )
        .await
    }

    /// Stops every Java peer.
    pub(super) async fn stop(mut self) {
        self.stop_bench().await;
        for s in &mut self.sinks {
            s.stop(Duration::from_secs(10)).await;
        }
    }
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
        if std::env::var_os("TRIBES_PEER_JAVA_OPTS").is_none() {
            cmd.env("TRIBES_PEER_JAVA_OPTS", JAVA_OPTS);
        }
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
}

/// cohort sender -> the `members` Java Tribes sinks, every scenario once (to the first
/// `sc.members` of them).
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
    for sc in scenarios {
        progress(format!("cross (cohort -> Tribes): {}", sc.label()));
        let payload = Bytes::from(vec![b'x'; sc.size]);
        let n = sc.members.min(dest.len());
        out.push((
            *sc,
            cohort_run(&node, &dest[..n], &payload, sc.senders, duration).await,
        ));
    }
    node.shutdown().await;
    drain.abort();
    // Let the sinks process the shutdown announcement before a bench JVM joins.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(out)
}
