//! `cohort perf-group`: how fast a group forms, notices a crash and a hang, and what an
//! idle member costs — cohort next to HashiCorp Serf (Debian's `serf`), measured in the
//! same run on loopback, in a network namespace of its own.
//!
//! Every node is a separate process. A node's *view* is what it currently believes the
//! membership is: for cohort the members of its last `view` event (`cohort node --json`),
//! for Serf the members its log reports joined and not since failed or left (each line
//! timestamped as it arrives). A scenario's time is from
//! the action (start, kill -9, SIGSTOP) until the last node involved shows the expected view.
//! Idle cost: CPU time of every process over the window (from /proc), RSS, and the bytes
//! all of them sent on the namespace's loopback interface (IP packets, so headers included),
//! divided by the number of nodes.
//!
//! Runs follow a [`Schedule`]: `--warmup-rounds` runs of each system not counted (none by
//! default: neither system runs on a JIT), then `--runs` counted ones, cohort and Serf
//! taking turns run by run; every figure is the median with min–max over the counted runs.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use serde_json::Value;

use super::process::{cpu_ns, is_root, rss_kib};
use crate::BenchResult;
use crate::stats::{Machine, Schedule, Spread, loadavg};
use crate::supervisor::{Signal, send_signal};

mod faults;

/// Options of `cohort perf-group`.
#[derive(Args, Debug, Clone)]
pub struct PerfGroupArgs {
    /// Counted repetitions of each timed scenario and of the idle measurements (the
    /// median with min–max is reported); 0 skips them. The systems take turns run by run.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Runs of each system before the counted ones, not counted. Neither cohort nor Serf
    /// runs on a JIT, so none by default.
    #[arg(long, default_value_t = 0)]
    warmup_rounds: usize,
    /// Members of the kill/hang/joiner scenarios and of the small idle measurement.
    #[arg(long, default_value_t = 5)]
    small: usize,
    /// Members started at once, and of the large idle measurement.
    #[arg(long, default_value_t = 20)]
    large: usize,
    /// Seconds of each idle measurement (one of each size in every counted run).
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
    /// Also run `small` cohort nodes for this many seconds while busy loops keep every CPU
    /// fully loaded, and count the view changes (false removals); 0 skips it.
    #[arg(long, default_value_t = 0)]
    load_secs: u64,
    /// Also run random faults (kill -9 and restart, SIGSTOP, busy CPUs) for this many
    /// seconds against both systems side by side and count the false removals per hour;
    /// 0 skips it.
    #[arg(long, default_value_t = 0)]
    faults_secs: u64,
    /// Members of each system in the random-fault run.
    #[arg(long, default_value_t = 7)]
    faults_nodes: usize,
    /// Seed of the random-fault schedule (default: from the clock; printed).
    #[arg(long)]
    faults_seed: Option<u64>,
    /// Parts the random-fault time is counted in: false removals per hour are reported
    /// for each part and as their median with min–max.
    #[arg(long, default_value_t = 5)]
    faults_rounds: usize,
    /// Systems to measure: cohort, serf.
    #[arg(long, value_delimiter = ',', default_value = "cohort,serf")]
    systems: Vec<String>,
    /// Internal: already running inside the namespace of that name.
    #[arg(long, hide = true)]
    in_netns: Option<String>,
}

/// Runs the benchmark, in a fresh network namespace when root.
pub async fn run(args: PerfGroupArgs) -> BenchResult {
    if args.in_netns.is_none() && is_root() {
        return in_own_netns();
    }
    tokio::task::spawn_blocking(move || measure(&args)).await?
}

fn in_own_netns() -> BenchResult {
    let ns = format!("cohortgroupperf{}", std::process::id());
    let ip = |a: &[&str]| Command::new("ip").args(a).status().map(|s| s.success());
    let ok = ip(&["netns", "add", &ns]).unwrap_or(false)
        && ip(&["-n", &ns, "link", "set", "lo", "up"]).unwrap_or(false)
        && ip(&["-n", &ns, "route", "add", "224.0.0.0/4", "dev", "lo"]).unwrap_or(false);
    if !ok {
        let _ = ip(&["netns", "del", &ns]);
        return Err("cannot create a network namespace for the benchmark".into());
    }
    let status = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(std::env::current_exe()?)
        .args(std::env::args_os().skip(1))
        .args(["--in-netns", &ns])
        .status();
    let _ = ip(&["netns", "del", &ns]);
    if status?.success() {
        Ok(())
    } else {
        Err("benchmark failed".into())
    }
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// One timestamped membership as a node saw it.
#[derive(Debug, Clone)]
struct Seen {
    at_ns: u128,
    members: BTreeSet<String>,
}

/// A node process and what it has seen.
struct NodeProc {
    child: Child,
    /// The node's name in views (cohort: its id; Serf: its node name).
    name: Arc<Mutex<String>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl NodeProc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, signal: Signal) {
        let _ = send_signal(self.pid(), signal);
    }

    fn name(&self) -> String {
        self.name.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Every membership seen so far.
    fn history(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// When this node first saw a membership satisfying `pred` at or after `since_ns`.
    fn first_after(
        &self,
        since_ns: u128,
        pred: &dyn Fn(&BTreeSet<String>) -> bool,
    ) -> Option<u128> {
        self.history()
            .into_iter()
            .find(|s| s.at_ns >= since_ns && pred(&s.members))
            .map(|s| s.at_ns)
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How to start a node of one system.
trait System {
    fn label(&self) -> &'static str;
    fn start(&self, index: usize, seed: usize) -> std::io::Result<NodeProc>;
}

struct CohortSystem {
    exe: PathBuf,
    mcast_port: u16,
}

impl System for CohortSystem {
    fn label(&self) -> &'static str {
        "cohort"
    }

    fn start(&self, index: usize, _seed: usize) -> std::io::Result<NodeProc> {
        let child = Command::new(&self.exe)
            .args(["node", "--json", "--domain", "perf-group", "--port"])
            .arg((26000 + index).to_string())
            .args(["--mcast-port", &self.mcast_port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(json_node(child))
    }
}

/// A node whose stdout is `cohort node --json`'s event stream (`started`, `view`,
/// `rejoined`).
fn json_node(mut child: Child) -> NodeProc {
    let stdout = child.stdout.take().expect("piped");
    let name = Arc::new(Mutex::new(String::new()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (n, s) = (name.clone(), seen.clone());
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let at_ns = unix_ns();
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            match v["event"].as_str() {
                Some("started") => {
                    *n.lock().unwrap_or_else(|e| e.into_inner()) =
                        v["id"].as_str().unwrap_or_default().to_owned();
                }
                Some("rejoined") => {
                    *n.lock().unwrap_or_else(|e| e.into_inner()) =
                        v["new_id"].as_str().unwrap_or_default().to_owned();
                }
                Some("view") => {
                    let members = v["members"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|m| m["id"].as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default();
                    s.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Seen { at_ns, members });
                }
                _ => {}
            }
        }
    });
    NodeProc { child, name, seen }
}

struct SerfSystem {
    /// Every agent gets a name of its own, so no run meets a namesake of an earlier one.
    started: std::sync::atomic::AtomicUsize,
}

impl System for SerfSystem {
    fn label(&self) -> &'static str {
        "serf"
    }

    fn start(&self, index: usize, seed: usize) -> std::io::Result<NodeProc> {
        let n = self
            .started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("n{index}-{n}");
        let mut child = Command::new("serf")
            .arg("agent")
            .arg(format!("-node={name}"))
            .arg(format!("-bind=127.0.0.1:{}", 26100 + index))
            .arg(format!("-rpc-addr=127.0.0.1:{}", 26300 + index))
            .arg(format!("-retry-join=127.0.0.1:{}", 26100 + seed))
            .arg("-retry-interval=100ms")
            .arg("-log-level=info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        // Serf logs each membership change as memberlist reports it ("serf:
        // EventMemberJoin: n3 127.0.0.1"), before its event handlers see the (coalesced)
        // events; the log line is the earliest honest moment its view changed.
        let stdout = child.stdout.take().expect("piped");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        std::thread::spawn(move || {
            let mut alive = BTreeSet::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let at_ns = unix_ns();
                let Some((_, rest)) = line.split_once("serf: EventMember") else {
                    continue;
                };
                let mut f = rest.split_whitespace();
                let (Some(kind), Some(node)) = (f.next(), f.next()) else {
                    continue;
                };
                match kind {
                    "Join:" => {
                        alive.insert(node.to_owned());
                    }
                    "Failed:" | "Leave:" | "Reap:" => {
                        alive.remove(node);
                    }
                    _ => continue,
                }
                s.lock().unwrap_or_else(|e| e.into_inner()).push(Seen {
                    at_ns,
                    members: alive.clone(),
                });
            }
        });
        Ok(NodeProc {
            child,
            name: Arc::new(Mutex::new(name)),
            seen,
        })
    }
}

/// Waits until every node of `nodes` has seen a membership satisfying `pred` (given the
/// node) at or after `since_ns`; returns the latest of those times, in ms after `since_ns`.
fn wait_all(
    nodes: &[&NodeProc],
    since_ns: u128,
    limit: Duration,
    pred: &dyn Fn(&NodeProc, &BTreeSet<String>) -> bool,
) -> Result<f64, String> {
    let deadline = Instant::now() + limit;
    loop {
        let times: Vec<Option<u128>> = nodes
            .iter()
            .map(|n| n.first_after(since_ns, &|m| pred(n, m)))
            .collect();
        if times.iter().all(Option::is_some) {
            let last = times.into_iter().flatten().max().unwrap_or(since_ns);
            return Ok((last.saturating_sub(since_ns)) as f64 / 1e6);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} of {} nodes did not get there within {limit:?}",
                times.iter().filter(|t| t.is_none()).count(),
                nodes.len()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts `n` nodes (indexes `first..first+n`, all joining via `seed`) and waits until all
/// see all of them.
fn start_group(
    sys: &dyn System,
    first: usize,
    n: usize,
    seed: usize,
) -> Result<(Vec<NodeProc>, f64), String> {
    let t0 = unix_ns();
    let nodes: Vec<NodeProc> = (first..first + n)
        .map(|i| sys.start(i, seed))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot start {}: {e}", sys.label()))?;
    let refs: Vec<&NodeProc> = nodes.iter().collect();
    let took = wait_all(&refs, t0, Duration::from_secs(30), &|_, m| m.len() == n)?;
    Ok((nodes, took))
}

/// The results of one system.
#[derive(Debug, Default)]
struct Results {
    failed_runs: usize,
    times: BTreeMap<&'static str, Vec<f64>>,
    /// Per group size, one (CPU %, RSS MiB, bytes/s) per counted run.
    idle: BTreeMap<usize, Vec<(f64, f64, f64)>>,
}

fn lo_tx_bytes() -> u64 {
    std::fs::read_to_string("/sys/class/net/lo/statistics/tx_bytes")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// CPU %, RSS MiB and bytes/s sent, per node, over `secs`.
fn idle_cost(nodes: &[NodeProc], secs: u64) -> (f64, f64, f64) {
    std::thread::sleep(Duration::from_secs(2));
    let pids: Vec<u32> = nodes.iter().map(NodeProc::pid).collect();
    let cpu0: u64 = pids.iter().filter_map(|&p| cpu_ns(p)).sum();
    let tx0 = lo_tx_bytes();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu1: u64 = pids.iter().filter_map(|&p| cpu_ns(p)).sum();
    let tx1 = lo_tx_bytes();
    let n = nodes.len() as f64;
    let cpu_pct = (cpu1 - cpu0) as f64 / 1e9 / elapsed / n * 100.0;
    let rss: u64 = pids.iter().filter_map(|&p| rss_kib(p)).sum();
    let bytes = (tx1 - tx0) as f64 / elapsed / n;
    (cpu_pct, rss as f64 / 1024.0 / n, bytes)
}

/// One run of every timed scenario of `sys`, then its idle cost at both sizes.
fn one_run(sys: &dyn System, args: &PerfGroupArgs, r: &mut Results) -> Result<(), String> {
    let small = args.small;
    {
        // First member: alone, until it sees a group of itself.
        let t0 = unix_ns();
        let first = sys.start(0, 0).map_err(|e| e.to_string())?;
        let took = wait_all(&[&first], t0, Duration::from_secs(10), &|n, m| {
            m.len() == 1 && m.contains(&n.name())
        })?;
        r.times.entry("first member").or_default().push(took);
        drop(first);
        std::thread::sleep(Duration::from_millis(500));

        // A group of `small`; then a later joiner; then kill -9 and SIGSTOP of members.
        let (mut nodes, _) = start_group(sys, 0, small, 0)?;
        std::thread::sleep(Duration::from_millis(500));
        let t0 = unix_ns();
        nodes.push(sys.start(small, 0).map_err(|e| e.to_string())?);
        let refs: Vec<&NodeProc> = nodes.iter().collect();
        let took = wait_all(&refs, t0, Duration::from_secs(20), &|_, m| {
            m.len() == small + 1
        })?;
        r.times.entry("later joiner").or_default().push(took);
        std::thread::sleep(Duration::from_millis(500));

        let victim = nodes.pop().expect("joiner");
        let gone = victim.name();
        let t0 = unix_ns();
        victim.signal(Signal::Kill);
        let refs: Vec<&NodeProc> = nodes.iter().collect();
        let took = wait_all(&refs, t0, Duration::from_secs(30), &|_, m| {
            !m.contains(&gone) && m.len() == small
        })?;
        r.times.entry("kill -9").or_default().push(took);
        drop(victim);
        std::thread::sleep(Duration::from_millis(500));

        let hung = nodes.pop().expect("member");
        let gone = hung.name();
        let t0 = unix_ns();
        hung.signal(Signal::Stop);
        let refs: Vec<&NodeProc> = nodes.iter().collect();
        let took = wait_all(&refs, t0, Duration::from_secs(30), &|_, m| {
            !m.contains(&gone)
        })?;
        r.times.entry("SIGSTOP").or_default().push(took);
        hung.signal(Signal::Cont);
        drop(hung);
        drop(nodes);
        std::thread::sleep(Duration::from_millis(1500));

        // `large` nodes started at once.
        let (nodes, took) = start_group(sys, 100, args.large, 100)?;
        r.times.entry("large at once").or_default().push(took);
        let idle = idle_cost(&nodes, args.idle_secs);
        r.idle.entry(args.large).or_default().push(idle);
        drop(nodes);
        std::thread::sleep(Duration::from_millis(1500));
        let (nodes, _) = start_group(sys, 0, small, 0)?;
        let idle = idle_cost(&nodes, args.idle_secs);
        r.idle.entry(small).or_default().push(idle);
        drop(nodes);
        std::thread::sleep(Duration::from_millis(1500));
    }
    Ok(())
}

fn measure(args: &PerfGroupArgs) -> BenchResult {
    let mut systems: Vec<Box<dyn System>> = Vec::new();
    for s in &args.systems {
        match s.as_str() {
            "cohort" => systems.push(Box::new(CohortSystem {
                exe: std::env::current_exe()?,
                mcast_port: 46450,
            })),
            "serf" => systems.push(Box::new(SerfSystem {
                started: std::sync::atomic::AtomicUsize::new(0),
            })),
            other => {
                return Err(format!("unknown system {other:?} (cohort, serf)").into());
            }
        }
    }
    let machine = Machine::now();
    eprintln!("perf-group: {}", machine.line());
    if args.runs > 0 {
        let mut all: Vec<(&str, Results)> = systems
            .iter()
            .map(|s| (s.label(), Results::default()))
            .collect();
        let mut warmup = Results::default();
        let schedule = Schedule {
            systems: systems.len(),
            warmup: args.warmup_rounds,
            runs: args.runs,
        };
        // The systems take turns run by run, so both see the same background.
        for turn in schedule.turns() {
            let sys = systems[turn.system].as_ref();
            let label = schedule.label(turn);
            let into = if turn.counted {
                &mut all[turn.system].1
            } else {
                &mut warmup
            };
            eprintln!("perf-group: {} {label}", sys.label());
            // A run that fails (a node never gets there) is reported and left out.
            if let Err(e) = one_run(sys, args, into) {
                eprintln!("perf-group: {} {label} failed: {e}", sys.label());
                into.failed_runs += 1;
                std::thread::sleep(Duration::from_secs(2));
            }
        }
        print_report(args, &all, &machine);
    }
    if args.load_secs > 0 {
        under_load(args)?;
    }
    if args.faults_secs > 0 {
        let seed = args.faults_seed.unwrap_or_else(|| unix_ns() as u64);
        faults::run(
            std::env::current_exe()?,
            &args.systems,
            args.faults_nodes,
            (args.faults_secs, args.faults_rounds.max(1)),
            seed,
        )?;
    }
    Ok(())
}

/// Runs `small` cohort nodes under full CPU load and reports every view change.
fn under_load(args: &PerfGroupArgs) -> BenchResult {
    let sys = CohortSystem {
        exe: std::env::current_exe()?,
        mcast_port: 46451,
    };
    let (nodes, _) = start_group(&sys, 0, args.small, 0)?;
    std::thread::sleep(Duration::from_secs(2));
    let before: Vec<usize> = nodes.iter().map(|n| n.history().len()).collect();
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut hogs: Vec<Child> = (0..cpus * 2)
        .map(|_| {
            Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .stdin(Stdio::null())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    std::thread::sleep(Duration::from_secs(args.load_secs));
    for h in &mut hogs {
        let _ = h.kill();
        let _ = h.wait();
    }
    let changes: usize = nodes
        .iter()
        .zip(&before)
        .map(|(n, b)| n.history().len() - b)
        .sum();
    println!(
        "\nunder load: {} cohort nodes, {} busy loops on {cpus} CPUs for {} s: {changes} view changes",
        args.small,
        cpus * 2,
        args.load_secs
    );
    Ok(())
}

/// "123 (100–150)": a median and its min–max, with one decimal below 100.
fn fmt_spread(s: Option<Spread>, unit: &str) -> String {
    let Some(s) = s else {
        return "-".into();
    };
    let f = |x: f64| {
        if x.abs() < 100.0 {
            format!("{x:.1}")
        } else {
            format!("{x:.0}")
        }
    };
    format!(
        "{}{unit} ({}–{}) n={}",
        f(s.median),
        f(s.min),
        f(s.max),
        s.n
    )
}

fn print_report(args: &PerfGroupArgs, all: &[(&str, Results)], machine: &Machine) {
    let base = all.iter().find(|(l, _)| *l == "serf");
    println!(
        "\ngroup membership: median (min–max) of {} counted runs each, ms, after {} warm-up \
         run(s) not counted; the systems took turns run by run; loopback, own netns",
        args.runs, args.warmup_rounds
    );
    println!("{}; load after {}", machine.line(), loadavg());
    let scenarios = [
        (
            "first member",
            "first member: start -> in a group of itself".to_string(),
        ),
        (
            "later joiner",
            format!("later joiner: start -> all {} see it", args.small + 1),
        ),
        (
            "large at once",
            format!("{} started at once -> all see all", args.large),
        ),
        (
            "kill -9",
            format!(
                "kill -9 of 1 of {} -> all survivors see it gone",
                args.small + 1
            ),
        ),
        (
            "SIGSTOP",
            format!("SIGSTOP of 1 of {} -> all others see it gone", args.small),
        ),
    ];
    let spread =
        |r: &Results, key: &str| Spread::of(r.times.get(key).map_or(&[][..], Vec::as_slice));
    for (key, title) in scenarios {
        println!("  {title}");
        for (label, r) in all {
            let s = spread(r, key);
            let ratio = base
                .filter(|(l, _)| l != label)
                .and_then(|(_, b)| Some(s?.median / spread(b, key)?.median))
                .map(|x| format!("  ({x:.3}x serf's median)"))
                .unwrap_or_default();
            let runs: Vec<String> = r
                .times
                .get(key)
                .map_or(&[][..], Vec::as_slice)
                .iter()
                .map(|x| format!("{x:.0}"))
                .collect();
            println!(
                "    {label:<7} {:<28} [{}]{ratio}",
                fmt_spread(s, ""),
                runs.join(", ")
            );
        }
    }
    for (label, r) in all {
        if r.failed_runs > 0 {
            println!(
                "  {label}: {} run(s) failed and are left out",
                r.failed_runs
            );
        }
    }
    println!(
        "\nidle member ({} s per measurement): CPU % of one core, RSS MiB, bytes/s sent on \
         loopback (IP packets); median (min–max) over the counted runs",
        args.idle_secs
    );
    for (label, r) in all {
        for (n, xs) in &r.idle {
            let of =
                |f: fn(&(f64, f64, f64)) -> f64| Spread::of(&xs.iter().map(f).collect::<Vec<_>>());
            let cpu = of(|x| x.0).map(|s| format!("{:.3} % ({:.3}–{:.3})", s.median, s.min, s.max));
            println!(
                "    {label:<7} N={n:<3} cpu {}   rss {}   sent {}",
                cpu.unwrap_or_else(|| "-".into()),
                fmt_spread(of(|x| x.1), " MiB"),
                fmt_spread(of(|x| x.2), " B/s"),
            );
        }
    }
}
