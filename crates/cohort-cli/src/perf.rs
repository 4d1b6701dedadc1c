//! `cohort perf`: ACKed send throughput and latency, against a raw TCP baseline and
//! against real Tomcat Tribes, all in one run.
//!
//! The receivers are separate OS processes (`cohort perf-sink`, a hidden subcommand of
//! this executable): they start a node, report when they are up and how fast their first
//! heartbeat went out, and accept every message. The measuring process starts its own
//! node, waits until it sees every sink, warms up, then runs each scenario (message size
//! × number of destinations × concurrent senders) for a fixed time, recording the latency
//! of every send in an HDR histogram.
//!
//! The raw TCP baseline uses the same kind of separate process (`perf-sink --raw`) with
//! plain tokio sockets: ping-pong of a frame as large as cohort's with a 21-byte reply
//! (Tribes' ACK size), one outstanding and pipelined, and one-way streaming.
//!
//! The Tribes comparison runs `interop/tribes-peer/run.sh` (a Java peer around the real
//! Tomcat Tribes): N `--sink` JVMs and one `--bench-to N` JVM per scenario. Tribes'
//! multicast needs a route for 224.0.0.0/4, so when run as root `cohort perf` re-executes
//! itself inside a fresh network namespace with `lo` up and that route, and deletes the
//! namespace afterwards (`--no-netns` to stay in the current one).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::{Args, ValueEnum};
use cohort::{Config, Event, Events, Member, MulticastConfig, Node, SendOptions};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};

use crate::CliResult;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Tribes' ACK frame: "FLT2002", length 3, ACK_DATA (6,2,3), "TLF2003". 21 bytes.
const ACK_FRAME: [u8; 21] = [
    70, 76, 84, 50, 48, 48, 50, 0, 0, 0, 3, 6, 2, 3, 84, 76, 70, 50, 48, 48, 51,
];
/// Bytes a data frame adds around the message: framing (18), options, timestamp and
/// the two length fields (20), the 16-byte message id, the sender's member record
/// without domain and payload (77), and the message length field (4).
const FRAME_OVERHEAD: usize = 18 + 20 + 16 + 77 + 4;
/// Slices of the interleaved cohort / raw ping-pong comparison.
const PAIRED_SLICES: u32 = 6;
/// Chunk size of the raw streaming baseline.
const STREAM_CHUNK: usize = 64 * 1024;

/// Which tokio runtime a perf process uses.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// One thread runs everything (`new_current_thread`).
    Current,
    /// A work-stealing pool of `--workers` threads (`new_multi_thread`).
    Multi,
}

/// Options of `cohort perf`.
#[derive(Args, Debug, Clone)]
pub(crate) struct PerfArgs {
    /// Seconds each scenario runs.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Seconds of warm-up traffic before the first scenario.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
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

/// Options of `cohort perf-sink` (started by `cohort perf`).
#[derive(Args, Debug, Clone)]
pub(crate) struct PerfSinkArgs {
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
    /// Serve the raw TCP baseline instead of running a node.
    #[arg(long)]
    raw: bool,
    /// Only spin (for `--keep-awake`) until stdin closes.
    #[arg(long)]
    spin: bool,
}

// ---------------------------------------------------------------------------------------
// Entry points

pub(crate) async fn run(args: PerfArgs) -> CliResult {
    if args.in_netns.is_none() && !args.no_netns && is_root() {
        return run_in_netns(&args).await;
    }
    let (flavor, workers) = (args.runtime, args.workers);
    on_own_runtime("cohort-sender", flavor, workers, move || measure(args)).await
}

pub(crate) async fn sink(args: PerfSinkArgs) -> CliResult {
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
        on_own_runtime("raw-sink", flavor, workers, raw_server).await
    } else {
        on_own_runtime("cohort-sink", flavor, workers, move || sink_main(args)).await
    }
}

/// Runs `f` on a runtime of its own, on a thread of its own, so the flavor under test is
/// not the CLI's default one.
async fn on_own_runtime<F, Fut>(
    name: &'static str,
    flavor: Flavor,
    workers: usize,
    f: F,
) -> CliResult
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = CliResult>,
{
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || -> CliResult {
            let rt = build_runtime(name, flavor, workers)?;
            let result = rt.block_on(f());
            // A blocking stdin read may still be parked in the pool; don't wait for it.
            rt.shutdown_background();
            result
        })?;
    tokio::task::spawn_blocking(move || {
        thread
            .join()
            .unwrap_or_else(|_| Err("perf thread panicked".into()))
    })
    .await?
}

fn build_runtime(
    name: &str,
    flavor: Flavor,
    workers: usize,
) -> std::io::Result<tokio::runtime::Runtime> {
    let name = name.to_owned();
    match flavor {
        Flavor::Current => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Flavor::Multi => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers.max(1))
            .thread_name(name)
            .enable_all()
            .build(),
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------
// Network namespace

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Creates `cohortperf<pid>` with `lo` up and multicast routed to it, runs this command
/// again inside it, and deletes it afterwards.
async fn run_in_netns(args: &PerfArgs) -> CliResult {
    let ns = format!("cohortperf{}", std::process::id());
    let setup = ip(&["netns", "add", &ns])
        .and_then(|()| ip(&["-n", &ns, "link", "set", "lo", "up"]))
        .and_then(|()| ip(&["-n", &ns, "route", "add", "224.0.0.0/4", "dev", "lo"]));
    if let Err(e) = setup {
        let _ = ip(&["netns", "del", &ns]);
        eprintln!("perf: cannot set up a network namespace ({e}); running in this one");
        let mut args = args.clone();
        args.no_netns = true;
        return on_own_runtime("cohort-sender", args.runtime, args.workers, move || {
            measure(args)
        })
        .await;
    }
    let exe = std::env::current_exe()?;
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(&exe)
        .args(std::env::args_os().skip(1))
        .args(["--in-netns", &ns])
        .stdin(Stdio::null())
        .spawn()?;
    // Ctrl-C reaches the child through the process group; survive it to clean up.
    let interrupted = tokio::spawn(tokio::signal::ctrl_c());
    let status = tokio::task::spawn_blocking(move || child.wait()).await?;
    interrupted.abort();
    if let Err(e) = ip(&["netns", "del", &ns]) {
        eprintln!("perf: {e}");
    }
    let status = status?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("perf in namespace {ns} failed: {status}").into())
    }
}

// ---------------------------------------------------------------------------------------
// Child processes that talk JSON lines on stdout

struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Proc {
    fn spawn(name: impl Into<String>, cmd: &mut Command, stderr: Stdio) -> std::io::Result<Self> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            name: name.into(),
            stdin: child.stdin.take(),
            child,
            lines,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next JSON line whose "event" is `event`; other lines are skipped.
    async fn expect(&mut self, event: &str, within: Duration) -> Result<Value, String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .map_err(|_| format!("{}: no \"{event}\" within {within:?}", self.name))?
                .ok_or_else(|| {
                    format!(
                        "{}: exited before \"{event}\" ({})",
                        self.name,
                        self.child
                            .try_wait()
                            .ok()
                            .flatten()
                            .map_or_else(|| "still running".into(), |s| s.to_string())
                    )
                })?;
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if v["event"] == event {
                return Ok(v);
            }
            if v["event"] == "error" {
                return Err(format!("{}: {}", self.name, v["message"]));
            }
        }
    }

    /// Closes stdin (the signal to stop) and waits for the exit, killing after `grace`.
    async fn stop(&mut self, grace: Duration) {
        drop(self.stdin.take());
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The 1, 5 and 15 minute load averages: other work on the machine skews every number.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

// ---------------------------------------------------------------------------------------
// The sink processes

fn perf_config(domain: &str, mcast_port: u16) -> Config {
    Config {
        domain: Bytes::from(domain.to_owned()),
        port: 0,
        multicast: MulticastConfig {
            port: mcast_port,
            interface: Some(Ipv4Addr::LOCALHOST),
            ..MulticastConfig::default()
        },
        ..Config::default()
    }
}

/// Starts a node and measures how long until its first heartbeat left.
async fn start_timed(config: Config) -> Result<(Node, Events, Duration), BoxError> {
    let t0 = Instant::now();
    let (node, events) = Node::start(config).await?;
    while node.stats().membership.sent == 0 {
        if t0.elapsed() > Duration::from_secs(5) {
            return Err("no heartbeat sent within 5 s of Node::start".into());
        }
        tokio::task::yield_now().await;
    }
    Ok((node, events, t0.elapsed()))
}

async fn sink_main(args: PerfSinkArgs) -> CliResult {
    let start_unix_us = unix_us();
    let (node, mut events, first_heartbeat) =
        start_timed(perf_config(&args.domain, args.mcast_port)).await?;
    let me = node.local_member();
    println!(
        "{}",
        json!({
            "event": "ready",
            "id": me.id.to_hex(),
            "port": me.addr.port(),
            "pid": std::process::id(),
            "start_unix_us": start_unix_us,
            "first_heartbeat_us": first_heartbeat.as_secs_f64() * 1e6,
        })
    );
    let mut messages = 0u64;
    let mut bytes = 0u64;
    let mut stdin = tokio::io::stdin();
    let mut scratch = [0u8; 64];
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(Event::Message(m)) => {
                    messages += 1;
                    bytes += m.data.len() as u64;
                }
                Some(_) => {}
                None => break,
            },
            // The parent closes our stdin when we should stop.
            n = stdin.read(&mut scratch) => if !matches!(n, Ok(k) if k > 0) { break },
        }
    }
    node.shutdown().await;
    println!(
        "{}",
        json!({"event": "stopped", "messages": messages, "bytes": bytes})
    );
    Ok(())
}

/// The raw TCP peer: per connection a 5-byte header (mode, size), then either ping-pong
/// (`P`: read `size` bytes, answer 21) or streaming (`S`: read to EOF, answer the count).
async fn raw_server() -> CliResult {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let port = listener.local_addr()?.port();
    println!(
        "{}",
        json!({"event": "ready", "port": port, "pid": std::process::id()})
    );
    let mut stdin = tokio::io::stdin();
    let mut scratch = [0u8; 64];
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                tokio::spawn(async move {
                    if let Err(e) = serve_raw(stream).await {
                        tracing::debug!(error = %e, "raw connection ended");
                    }
                });
            }
            n = stdin.read(&mut scratch) => if !matches!(n, Ok(k) if k > 0) { return Ok(()) },
        }
    }
}

async fn serve_raw(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut header = [0u8; 5];
    stream.read_exact(&mut header).await?;
    let size = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    match header[0] {
        b'P' => {
            let mut buf = vec![0u8; size];
            loop {
                match stream.read_exact(&mut buf).await {
                    Ok(_) => stream.write_all(&ACK_FRAME).await?,
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        }
        _ => {
            let mut buf = vec![0u8; 256 * 1024];
            let mut total = 0u64;
            loop {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            stream.write_all(&total.to_be_bytes()).await
        }
    }
}

// ---------------------------------------------------------------------------------------
// Measurements

/// Latencies and counts of one measured run.
struct Sample {
    count: u64,
    errors: u64,
    secs: f64,
    hist: Histogram<u64>,
}

impl Sample {
    fn empty() -> Self {
        Self {
            count: 0,
            errors: 0,
            secs: 0.0,
            hist: Self::new_hist(),
        }
    }

    fn merge(&mut self, other: Self) {
        self.count += other.count;
        self.errors += other.errors;
        self.secs += other.secs;
        let _ = self.hist.add(&other.hist);
    }

    fn new_hist() -> Histogram<u64> {
        Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("valid bounds")
    }

    fn msgs_per_sec(&self) -> f64 {
        self.count as f64 / self.secs.max(1e-9)
    }

    fn quantile_us(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }

    fn to_json(&self, size: usize) -> Value {
        json!({
            "count": self.count,
            "errors": self.errors,
            "secs": round(self.secs, 3),
            "msgs_per_sec": round(self.msgs_per_sec(), 1),
            "mb_per_sec": round(self.msgs_per_sec() * size as f64 / 1e6, 2),
            "p50_us": round(self.quantile_us(0.5), 1),
            "p99_us": round(self.quantile_us(0.99), 1),
            "mean_us": round(self.hist.mean() / 1000.0, 1),
        })
    }
}

fn round(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

/// `senders` tasks each sending `payload` to `dest` with ACK, one send after another,
/// for `duration`.
async fn cohort_run(
    node: &Node,
    dest: &[Member],
    payload: &Bytes,
    senders: usize,
    duration: Duration,
) -> Sample {
    let dest = Arc::new(dest.to_vec());
    let start = Instant::now();
    let end = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..senders {
        let node = node.clone();
        let dest = dest.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Sample::new_hist();
            let (mut count, mut errors) = (0u64, 0u64);
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                match node
                    .send(&dest, payload.clone(), SendOptions::USE_ACK)
                    .await
                {
                    Ok(_) => count += 1,
                    Err(_) => errors += 1,
                }
                let _ = hist.record(t.elapsed().as_nanos().max(1) as u64);
            }
            (hist, count, errors)
        }));
    }
    let mut total = Sample {
        count: 0,
        errors: 0,
        secs: 0.0,
        hist: Sample::new_hist(),
    };
    for task in tasks {
        if let Ok((hist, count, errors)) = task.await {
            let _ = total.hist.add(&hist);
            total.count += count;
            total.errors += errors;
        }
    }
    total.secs = start.elapsed().as_secs_f64();
    total
}

/// Ping-pong of `size` bytes against a 21-byte reply with `depth` frames outstanding on
/// one connection.
async fn raw_ping_pong(
    addr: SocketAddr,
    size: usize,
    depth: usize,
    duration: Duration,
) -> std::io::Result<Sample> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut header = [b'P', 0, 0, 0, 0];
    header[1..].copy_from_slice(&(size as u32).to_be_bytes());
    stream.write_all(&header).await?;
    let (mut rd, mut wr) = stream.into_split();
    let frame = vec![b'x'; size];
    let permits = Arc::new(Semaphore::new(depth.max(1)));
    let (times_tx, mut times_rx) = mpsc::unbounded_channel::<Instant>();
    let start = Instant::now();
    let end = start + duration;
    let writer = {
        let permits = permits.clone();
        tokio::spawn(async move {
            while Instant::now() < end {
                let Ok(p) = permits.acquire().await else {
                    break;
                };
                p.forget();
                let _ = times_tx.send(Instant::now());
                wr.write_all(&frame).await?;
            }
            Ok::<_, std::io::Error>(wr)
        })
    };
    let mut hist = Sample::new_hist();
    let mut count = 0u64;
    let mut reply = [0u8; 21];
    while let Some(t) = times_rx.recv().await {
        rd.read_exact(&mut reply).await?;
        let _ = hist.record(t.elapsed().as_nanos().max(1) as u64);
        count += 1;
        permits.add_permits(1);
    }
    let secs = start.elapsed().as_secs_f64();
    let _wr = writer.await.map_err(std::io::Error::other)??;
    Ok(Sample {
        count,
        errors: 0,
        secs,
        hist,
    })
}

/// One-way streaming in 64 KiB writes; MB/s as counted by the receiver.
async fn raw_stream(addr: SocketAddr, duration: Duration) -> std::io::Result<f64> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut header = [b'S', 0, 0, 0, 0];
    header[1..].copy_from_slice(&(STREAM_CHUNK as u32).to_be_bytes());
    stream.write_all(&header).await?;
    let chunk = vec![b'x'; STREAM_CHUNK];
    let start = Instant::now();
    while start.elapsed() < duration {
        stream.write_all(&chunk).await?;
    }
    stream.shutdown().await?;
    let mut total = [0u8; 8];
    stream.read_exact(&mut total).await?;
    let secs = start.elapsed().as_secs_f64();
    Ok(u64::from_be_bytes(total) as f64 / secs / 1e6)
}

// ---------------------------------------------------------------------------------------
// Tribes

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

fn free_port() -> u16 {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map_or(4000, |a| a.port())
}

struct TribesCtx {
    launcher: PathBuf,
    domain: String,
    log_dir: PathBuf,
}

impl TribesCtx {
    fn command(&self, mcast_port: u16) -> Command {
        let mut cmd = Command::new(&self.launcher);
        cmd.args(["--quiet", "--domain", &self.domain])
            .args(["--mcast-port", &mcast_port.to_string()])
            .args(["--port", &free_port().to_string()]);
        cmd
    }

    fn log(&self, name: &str) -> Stdio {
        std::fs::File::create(self.log_dir.join(format!("{name}.log")))
            .map_or_else(|_| Stdio::null(), Stdio::from)
    }

    fn log_tail(&self, name: &str) -> String {
        let text =
            std::fs::read_to_string(self.log_dir.join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(3).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }

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
            v["runs"] = json!(2);
        }
        Ok(v)
    }
}

// ---------------------------------------------------------------------------------------
// The measuring process

#[derive(Clone, Copy)]
struct Scenario {
    size: usize,
    members: usize,
    senders: usize,
}

impl Scenario {
    fn label(&self) -> String {
        format!(
            "{} -> {} member{}, {} sender{}",
            size_label(self.size),
            self.members,
            if self.members == 1 { "" } else { "s" },
            self.senders,
            if self.senders == 1 { "" } else { "s" },
        )
    }

    fn key(&self) -> (usize, usize, usize) {
        (self.size, self.members, self.senders)
    }
}

fn size_label(size: usize) -> String {
    if size >= 1024 && size % 1024 == 0 {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

fn progress(msg: impl AsRef<str>) {
    eprintln!("perf: {}", msg.as_ref());
}

async fn measure(args: PerfArgs) -> CliResult {
    tokio::select! {
        r = measure_inner(&args) => r,
        _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
    }
}

async fn measure_inner(args: &PerfArgs) -> CliResult {
    let duration = Duration::from_secs_f64(args.duration.max(0.1));
    let load_before = loadavg();
    let pid = std::process::id();
    let domain = format!("cohort-perf-{pid}");
    // A multicast port of our own: 40000-49999, from the pid.
    let mcast_port = 40_000 + (pid % 10_000) as u16;
    let exe = std::env::current_exe()?;
    let max_members = args.members.iter().copied().max().unwrap_or(1).max(1);
    let mut scenarios = Vec::new();
    for &size in &args.sizes {
        for &members in &args.members {
            let mut counts = vec![1];
            if args.senders > 1 {
                counts.push(args.senders);
            }
            for senders in counts {
                scenarios.push(Scenario {
                    size,
                    members,
                    senders,
                });
            }
        }
    }
    let runtime_label = |f: Flavor| match f {
        Flavor::Current => "current-thread".to_string(),
        Flavor::Multi => format!("multi-thread ({} workers)", args.workers),
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_default();
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
        "{cpus} CPUs; sender runtime {}, sinks {}; namespace {}",
        runtime_label(args.runtime),
        runtime_label(args.sink_runtime),
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
    let ready = raw.expect("ready", Duration::from_secs(10)).await?;
    let raw_addr = SocketAddr::from((
        Ipv4Addr::LOCALHOST,
        ready["port"].as_u64().unwrap_or(0) as u16,
    ));
    progress(format!("starting {max_members} cohort sink process(es)"));
    let mut sinks = Vec::new();
    for i in 0..max_members {
        let p = Proc::spawn(
            format!("cohort-sink-{i}"),
            Command::new(&exe)
                .args(["perf-sink", "--domain", &domain])
                .args(["--mcast-port", &mcast_port.to_string()])
                .args(sink_runtime_args(args)),
            Stdio::inherit(),
        )?;
        sinks.push(p);
    }
    let mut sink_info = Vec::new();
    for s in &mut sinks {
        sink_info.push(s.expect("ready", Duration::from_secs(10)).await?);
    }
    let (node, mut events, sender_first_heartbeat) =
        start_timed(perf_config(&domain, mcast_port)).await?;
    // Wait until the sender sees every sink; note when each was first seen.
    let wanted: Vec<String> = sink_info
        .iter()
        .map(|v| v["id"].as_str().unwrap_or_default().to_string())
        .collect();
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
        .map(|(v, id)| {
            seen[id]
                .1
                .saturating_sub(v["start_unix_us"].as_u64().unwrap_or(0)) as f64
        })
        .collect();
    let sink_heartbeat_us: Vec<f64> = sink_info
        .iter()
        .map(|v| v["first_heartbeat_us"].as_f64().unwrap_or(0.0))
        .collect();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let sink_rss_idle: Vec<u64> = sinks.iter().filter_map(|s| rss_kib(s.pid())).collect();
    let sender_rss_idle = rss_kib(pid);

    // --- raw TCP baseline -------------------------------------------------------------
    // One outstanding is measured below, interleaved with cohort's one-sender runs.
    let domain_len = domain.len();
    let frame_of = |size: usize| size + FRAME_OVERHEAD + domain_len;
    let mut raw_pp: HashMap<(usize, usize), Sample> = HashMap::new();
    if args.senders > 1 {
        for &size in &args.sizes {
            progress(format!(
                "raw TCP: ping-pong {} B, {} outstanding",
                frame_of(size),
                args.senders
            ));
            let s = raw_ping_pong(raw_addr, frame_of(size), args.senders, duration).await?;
            raw_pp.insert((size, args.senders), s);
        }
    }
    progress("raw TCP: streaming");
    let stream_mbps = raw_stream(raw_addr, duration).await?;

    // --- cohort -----------------------------------------------------------------------
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

    let mut results: Vec<(Scenario, Sample)> = Vec::new();
    for sc in &scenarios {
        progress(format!("cohort: {}", sc.label()));
        let payload = Bytes::from(vec![b'x'; sc.size]);
        let n = sc.members.min(dest.len());
        let s = if sc.senders == 1 && n == 1 {
            // Alternate short slices of cohort and raw ping-pong, so both see the same
            // background load: their ratio is what this compares.
            let mut cohort = Sample::empty();
            let mut raw = Sample::empty();
            let slice = duration / PAIRED_SLICES;
            for _ in 0..PAIRED_SLICES {
                raw.merge(raw_ping_pong(raw_addr, frame_of(sc.size), 1, slice).await?);
                cohort.merge(cohort_run(&node, &dest[..1], &payload, 1, slice).await);
            }
            raw_pp.insert((sc.size, 1), raw);
            cohort
        } else {
            cohort_run(&node, &dest[..n], &payload, sc.senders, duration).await
        };
        deliveries += s.count * n as u64;
        results.push((*sc, s));
    }
    raw.stop(Duration::from_secs(5)).await;
    let mut raw_json = Vec::new();
    let mut raw_keys: Vec<_> = raw_pp.keys().copied().collect();
    raw_keys.sort_unstable();
    for (size, depth) in raw_keys {
        raw_json.push(json!({
            "kind": "ping-pong", "size": size, "frame_bytes": frame_of(size),
            "outstanding": depth, "result": raw_pp[&(size, depth)].to_json(size),
        }));
    }
    raw_json.push(
        json!({"kind": "stream", "chunk": STREAM_CHUNK, "mb_per_sec": round(stream_mbps, 1)}),
    );
    let sink_rss_after: Vec<u64> = sinks.iter().filter_map(|s| rss_kib(s.pid())).collect();
    let sender_rss_after = rss_kib(pid);
    node.shutdown().await;
    drain.abort();
    let mut sink_received = 0u64;
    for s in &mut sinks {
        drop(s.stdin.take());
        match s.expect("stopped", Duration::from_secs(5)).await {
            Ok(v) => sink_received += v["messages"].as_u64().unwrap_or(0),
            Err(e) => progress(e),
        }
        s.stop(Duration::from_secs(5)).await;
    }
    if sink_received != deliveries {
        progress(format!(
            "WARNING: the sinks received {sink_received} messages, the sender had {deliveries} acknowledged"
        ));
    }

    // --- Tribes -----------------------------------------------------------------------
    let mut tribes: HashMap<(usize, usize, usize), Value> = HashMap::new();
    let mut cross: Vec<(Scenario, Sample)> = Vec::new();
    let mut tribes_sink_rss: Option<u64> = None;
    let mut tribes_note: Option<String> = None;
    if args.no_tribes {
        tribes_note = Some("skipped (--no-tribes)".into());
    } else {
        match find_tribes_peer(args) {
            Err(reason) => tribes_note = Some(format!("skipped ({reason})")),
            Ok(launcher) => {
                let log_dir = std::env::temp_dir().join(format!("cohort-perf-{pid}"));
                let _ = std::fs::create_dir_all(&log_dir);
                let ctx = TribesCtx {
                    launcher,
                    domain: domain.clone(),
                    log_dir,
                };
                let mut members_list = args.members.clone();
                members_list.sort_unstable();
                members_list.dedup();
                'groups: for (gi, &m) in members_list.iter().enumerate() {
                    let port = mcast_port.wrapping_add(1 + gi as u16);
                    progress(format!("tribes: starting {m} Java sink(s)"));
                    let mut jsinks = match ctx.start_sinks(m, port).await {
                        Ok(s) => s,
                        Err(e) => {
                            tribes_note = Some(format!("skipped ({e})"));
                            break 'groups;
                        }
                    };
                    if tribes_sink_rss.is_none() {
                        tokio::time::sleep(Duration::from_millis(1200)).await;
                        tribes_sink_rss = rss_kib(jsinks[0].pid());
                    }
                    // Warm the sink JVMs up (JIT) with a throwaway bench, as cohort's
                    // sinks were warmed up.
                    progress("tribes: warm-up bench");
                    let warm_threads = args.senders.max(1);
                    let warm_count = (tribes_expected_rate(1024, m, warm_threads)
                        * args.warmup.max(2.0)
                        / warm_threads as f64) as usize;
                    if let Err(e) = ctx
                        .bench(port, m, 1024, warm_threads, warm_count.max(1000))
                        .await
                    {
                        // Most likely the JVMs cannot hear each other (no multicast
                        // route): the other benches would fail the same way.
                        tribes_note = Some(format!("skipped (warm-up bench failed: {e})"));
                        break 'groups;
                    }
                    for sc in scenarios.iter().filter(|s| s.members == m) {
                        progress(format!("tribes: {}", sc.label()));
                        match ctx.bench_for(port, m, sc.size, sc.senders, duration).await {
                            Ok(v) => {
                                tribes.insert(sc.key(), v);
                            }
                            Err(e) => {
                                progress(format!("tribes bench failed: {e}"));
                                tribes_note = Some(format!("partly failed ({e})"));
                            }
                        }
                    }
                    // cohort -> the (now warm) Java sinks, after the Tribes benches: a
                    // bench JVM sends to every member it sees, so cohort must be gone
                    // before one starts.
                    if args.cross {
                        match cross_run(args, &domain, port, m, &scenarios, duration).await {
                            Ok(mut r) => cross.append(&mut r),
                            Err(e) => progress(format!("cross: {e}")),
                        }
                    }
                    for s in &mut jsinks {
                        s.stop(Duration::from_secs(10)).await;
                    }
                }
            }
        }
    }

    for mut s in spinners {
        s.stop(Duration::from_secs(1)).await;
    }

    // --- report -----------------------------------------------------------------------
    let report = Report {
        load_before,
        load_after: loadavg(),
        args,
        cpus,
        cpu_model,
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
        raw_json,
        stream_mbps,
        results,
        tribes,
        tribes_note,
        cross,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.json())?);
    } else {
        report.print();
    }
    Ok(())
}

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

/// cohort sender -> Java Tribes sinks, same scenarios.
async fn cross_run(
    args: &PerfArgs,
    domain: &str,
    mcast_port: u16,
    members: usize,
    scenarios: &[Scenario],
    duration: Duration,
) -> Result<Vec<(Scenario, Sample)>, String> {
    let (node, mut events) = Node::start(perf_config(domain, mcast_port))
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

// ---------------------------------------------------------------------------------------
// Report

struct Report<'a> {
    load_before: String,
    load_after: String,
    args: &'a PerfArgs,
    cpus: usize,
    cpu_model: String,
    runtime: String,
    sink_runtime: String,
    duration: Duration,
    domain_len: usize,
    deliveries: u64,
    sink_received: u64,
    sender_first_heartbeat: Duration,
    sink_heartbeat_us: Vec<f64>,
    seen_after_us: Vec<f64>,
    sink_rss_idle: Vec<u64>,
    sink_rss_after: Vec<u64>,
    sender_rss_idle: Option<u64>,
    sender_rss_after: Option<u64>,
    tribes_sink_rss: Option<u64>,
    raw_pp: HashMap<(usize, usize), Sample>,
    raw_json: Vec<Value>,
    stream_mbps: f64,
    results: Vec<(Scenario, Sample)>,
    tribes: HashMap<(usize, usize, usize), Value>,
    tribes_note: Option<String>,
    cross: Vec<(Scenario, Sample)>,
}

fn fmt_rate(x: f64) -> String {
    let n = x.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn fmt_us(x: f64) -> String {
    if x >= 1000.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn max_f(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

impl Report<'_> {
    fn tribes_rate(&self, sc: &Scenario) -> Option<f64> {
        self.tribes
            .get(&sc.key())
            .and_then(|v| v["msgs_per_sec"].as_f64())
    }

    fn rtt_ratio(&self, sc: &Scenario, s: &Sample) -> Option<(f64, f64)> {
        let raw = self.raw_pp.get(&(sc.size, 1))?;
        let cohort_rtt = 1e6 / s.msgs_per_sec();
        let raw_rtt = 1e6 / raw.msgs_per_sec();
        Some((raw_rtt, cohort_rtt / raw_rtt))
    }

    /// Target checks: (name, measured, target, pass).
    fn targets(&self) -> Vec<(String, String, String, bool)> {
        let mut out = Vec::new();
        for (sc, s) in &self.results {
            if sc.size > 4096 {
                continue;
            }
            if let Some(t) = self.tribes_rate(sc) {
                let want = if sc.senders == 1 { 2.0 } else { 3.0 };
                let r = s.msgs_per_sec() / t;
                out.push((
                    format!("{}: cohort/Tribes msgs/s", sc.label()),
                    format!("{r:.2}x"),
                    format!(">= {want:.0}x"),
                    r >= want,
                ));
            }
        }
        for (sc, s) in &self.results {
            if sc.members == 1 && sc.senders == 1 {
                if let Some((_, r)) = self.rtt_ratio(sc, s) {
                    out.push((
                        format!("{}: mean RTT vs raw TCP ping-pong", size_label(sc.size)),
                        format!("{r:.2}x"),
                        "<= 1.5x".into(),
                        r <= 1.5,
                    ));
                }
            }
        }
        let hb = self.sender_first_heartbeat.as_secs_f64() * 1e3;
        let hb_max = hb.max(max_f(&self.sink_heartbeat_us) / 1e3);
        out.push((
            "Node::start -> first heartbeat (worst process)".into(),
            format!("{hb_max:.2} ms"),
            "< 50 ms".into(),
            hb_max < 50.0,
        ));
        if let Some(&rss) = self.sink_rss_idle.iter().max() {
            out.push((
                "idle RSS of a sink process (largest)".into(),
                mib(rss),
                "< 10 MiB".into(),
                rss < 10 * 1024,
            ));
        }
        out
    }

    fn print(&self) {
        println!(
            "cohort perf: {} CPUs ({}), {:.1} s per scenario, ACKed sends (USE_ACK)",
            self.cpus,
            self.cpu_model,
            self.duration.as_secs_f64()
        );
        println!(
            "sender runtime: {}; sink runtime: {}; receivers are separate processes on 127.0.0.1{}",
            self.runtime,
            self.sink_runtime,
            self.args
                .in_netns
                .as_ref()
                .map(|n| format!(" (network namespace {n})"))
                .unwrap_or_default()
        );
        println!(
            "load average before: {}, after: {}; keep-awake spinners: {}",
            self.load_before,
            self.load_after,
            if self.args.keep_awake { "on" } else { "off" }
        );
        println!();
        println!("Raw TCP loopback baseline (tokio, separate process, 21-byte reply):");
        let mut keys: Vec<_> = self.raw_pp.keys().copied().collect();
        keys.sort_unstable();
        for (size, depth) in keys {
            let s = &self.raw_pp[&(size, depth)];
            println!(
                "  ping-pong {:>6} B frame ({} payload), {} outstanding: {:>9} msgs/s  {:>8.1} MB/s  p50 {:>6} us  p99 {:>6} us",
                size + FRAME_OVERHEAD + self.domain_len,
                size_label(size),
                depth,
                fmt_rate(s.msgs_per_sec()),
                s.msgs_per_sec() * size as f64 / 1e6,
                fmt_us(s.quantile_us(0.5)),
                fmt_us(s.quantile_us(0.99)),
            );
        }
        println!("  streaming, 64 KiB writes: {:.0} MB/s", self.stream_mbps);
        println!();
        println!(
            "{:<32} | {:>9} | {:>8} | {:>7} | {:>7} | {:>9} | {:>15} | {:>8} | {:>12}",
            "scenario",
            "msgs/s",
            "MB/s",
            "p50 us",
            "p99 us",
            "Tribes",
            "Tribes p50/p99",
            "vs Tribes",
            "RTT vs raw"
        );
        println!(
            "{}",
            "-".repeat(32 + 9 + 8 + 7 + 7 + 9 + 15 + 8 + 12 + 8 * 3)
        );
        for (sc, s) in &self.results {
            let t = self.tribes.get(&sc.key());
            let tr = self.tribes_rate(sc);
            let tp = t.map_or_else(
                || "-".to_string(),
                |v| format!("{}/{}", v["p50_us"], v["p99_us"]),
            );
            let ratio = tr.map_or_else(|| "-".into(), |t| format!("{:.2}x", s.msgs_per_sec() / t));
            let rtt = if sc.senders == 1 && sc.members == 1 {
                self.rtt_ratio(sc, s)
                    .map_or_else(|| "-".into(), |(_, r)| format!("{r:.2}x"))
            } else {
                "-".into()
            };
            let errors = if s.errors > 0 {
                format!("  ({} errors)", s.errors)
            } else {
                String::new()
            };
            println!(
                "{:<32} | {:>9} | {:>8.1} | {:>7} | {:>7} | {:>9} | {:>15} | {:>8} | {:>12}{errors}",
                sc.label(),
                fmt_rate(s.msgs_per_sec()),
                s.msgs_per_sec() * sc.size as f64 / 1e6,
                fmt_us(s.quantile_us(0.5)),
                fmt_us(s.quantile_us(0.99)),
                tr.map_or_else(|| "-".into(), fmt_rate),
                tp,
                ratio,
                rtt,
            );
        }
        println!(
            "(check: the sinks received {} messages; the sender had {} acknowledged deliveries{})",
            fmt_rate(self.sink_received as f64),
            fmt_rate(self.deliveries as f64),
            if self.sink_received == self.deliveries {
                ", equal"
            } else {
                " -- MISMATCH"
            }
        );
        if let Some(note) = &self.tribes_note {
            println!("tribes: {note}");
        }
        println!(
            "(RTT vs raw: cohort's mean send time with one sender and one member / raw ping-pong mean RTT, same frame size)"
        );
        if !self.cross.is_empty() {
            println!();
            println!("cohort sender -> Java Tribes sinks:");
            for (sc, s) in &self.cross {
                println!(
                    "  {:<32} {:>9} msgs/s  {:>8.1} MB/s  p50 {:>6} us  p99 {:>6} us{}",
                    sc.label(),
                    fmt_rate(s.msgs_per_sec()),
                    s.msgs_per_sec() * sc.size as f64 / 1e6,
                    fmt_us(s.quantile_us(0.5)),
                    fmt_us(s.quantile_us(0.99)),
                    if s.errors > 0 {
                        format!("  ({} errors)", s.errors)
                    } else {
                        String::new()
                    }
                );
            }
        }
        println!();
        println!(
            "Start-up, Node::start -> first heartbeat sent: sender {:.2} ms; sinks {}",
            self.sender_first_heartbeat.as_secs_f64() * 1e3,
            self.sink_heartbeat_us
                .iter()
                .map(|u| format!("{:.2} ms", u / 1e3))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "Start-up, sink process start -> seen by the sender: {}",
            self.seen_after_us
                .iter()
                .map(|u| format!("{:.1} ms", u / 1e3))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "RSS: cohort sink idle {}; after the run {}; sender idle {}, after {}; Tribes sink (JVM) idle {}",
            self.sink_rss_idle
                .iter()
                .map(|k| mib(*k))
                .collect::<Vec<_>>()
                .join(", "),
            self.sink_rss_after
                .iter()
                .map(|k| mib(*k))
                .collect::<Vec<_>>()
                .join(", "),
            self.sender_rss_idle.map_or_else(|| "-".into(), mib),
            self.sender_rss_after.map_or_else(|| "-".into(), mib),
            self.tribes_sink_rss.map_or_else(|| "-".into(), mib),
        );
        println!();
        println!("Targets:");
        for (name, got, want, pass) in self.targets() {
            println!(
                "  [{}] {name}: {got} (target {want})",
                if pass { "ok  " } else { "MISS" }
            );
        }
    }

    fn json(&self) -> Value {
        let scenarios: Vec<Value> = self
            .results
            .iter()
            .map(|(sc, s)| {
                let tribes = self.tribes.get(&sc.key()).cloned().unwrap_or(Value::Null);
                let ratio = self.tribes_rate(sc).map(|t| round(s.msgs_per_sec() / t, 3));
                let rtt = if sc.senders == 1 && sc.members == 1 {
                    self.rtt_ratio(sc, s).map(|(_, r)| round(r, 3))
                } else {
                    None
                };
                json!({
                    "size": sc.size, "members": sc.members, "senders": sc.senders,
                    "cohort": s.to_json(sc.size),
                    "tribes": tribes,
                    "ratio_vs_tribes": ratio,
                    "rtt_ratio_vs_raw": rtt,
                })
            })
            .collect();
        let cross: Vec<Value> = self
            .cross
            .iter()
            .map(|(sc, s)| json!({"size": sc.size, "members": sc.members, "senders": sc.senders, "cohort_to_tribes": s.to_json(sc.size)}))
            .collect();
        let targets: Vec<Value> = self
            .targets()
            .into_iter()
            .map(|(name, got, want, pass)| json!({"name": name, "measured": got, "target": want, "pass": pass}))
            .collect();
        json!({
            "machine": {
                "cpus": self.cpus,
                "cpu_model": self.cpu_model,
                "loadavg_before": self.load_before,
                "loadavg_after": self.load_after,
            },
            "config": {
                "duration_secs": self.duration.as_secs_f64(),
                "sender_runtime": self.runtime,
                "sink_runtime": self.sink_runtime,
                "netns": self.args.in_netns,
                "keep_awake": self.args.keep_awake,
            },
            "raw_tcp": self.raw_json,
            "raw_stream_mb_per_sec": round(self.stream_mbps, 1),
            "scenarios": scenarios,
            "tribes_note": self.tribes_note,
            "check": {"sink_received": self.sink_received, "acked_deliveries": self.deliveries},
            "cross_cohort_to_tribes": cross,
            "startup": {
                "sender_first_heartbeat_us": round(self.sender_first_heartbeat.as_secs_f64() * 1e6, 1),
                "sink_first_heartbeat_us": self.sink_heartbeat_us,
                "sink_start_to_seen_us": self.seen_after_us,
            },
            "rss_kib": {
                "sink_idle": self.sink_rss_idle,
                "sink_after": self.sink_rss_after,
                "sender_idle": self.sender_rss_idle,
                "sender_after": self.sender_rss_after,
                "tribes_sink_idle": self.tribes_sink_rss,
            },
            "targets": targets,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_frame_is_tribes_ack() {
        assert_eq!(&ACK_FRAME[..7], b"FLT2002");
        assert_eq!(&ACK_FRAME[14..], b"TLF2003");
        assert_eq!(&ACK_FRAME[11..14], &[6, 2, 3]);
    }

    #[test]
    fn rates_are_grouped() {
        assert_eq!(fmt_rate(1234567.4), "1,234,567");
        assert_eq!(fmt_rate(999.0), "999");
        assert_eq!(fmt_rate(1000.0), "1,000");
    }

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
            SendOptions::USE_ACK,
            0,
            &[0; 16],
            &record,
            &[0; 100],
            &mut out,
        );
        assert_eq!(out.len(), 100 + FRAME_OVERHEAD + 3);
    }
}
