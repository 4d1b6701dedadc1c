//! The report of a run: the tables `cohort perf` prints, the same as JSON (`--json`), and
//! the target checks. Every figure of a scenario is the median with min–max over the
//! counted rounds ([`Spread`]).

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::sample::{Sample, SampleRecord, Scenario, round, size_label};
use super::{FRAME_OVERHEAD, PerfArgs};
use crate::stats::{Machine, Spread};

/// What one scenario gave in the counted rounds, round by round.
pub(super) struct ScenarioRounds {
    /// The scenario.
    pub(super) sc: Scenario,
    /// cohort, one sample per counted round.
    pub(super) cohort: Vec<Sample>,
    /// The raw TCP ping-pong (one outstanding) interleaved with cohort's run of the
    /// one-sender, one-member scenarios, one per counted round; empty for the others.
    pub(super) raw: Vec<Sample>,
    /// Tribes' bench results (the Java peer's own JSON), one per counted round.
    pub(super) tribes: Vec<Value>,
}

impl ScenarioRounds {
    /// cohort's msgs/s over the rounds.
    fn cohort_rate(&self) -> Option<Spread> {
        spread(self.cohort.iter().map(Sample::msgs_per_sec))
    }

    /// cohort's latency quantile `q` over the rounds, µs.
    fn cohort_quantile(&self, q: f64) -> Option<Spread> {
        spread(self.cohort.iter().map(|s| s.quantile_us(q)))
    }

    /// Tribes' figure `field` over the rounds.
    fn tribes(&self, field: &str) -> Option<Spread> {
        spread(self.tribes.iter().filter_map(|v| v[field].as_f64()))
    }

    /// cohort's median msgs/s ÷ Tribes' median msgs/s.
    fn ratio_vs_tribes(&self) -> Option<f64> {
        Some(self.cohort_rate()?.median / self.tribes("msgs_per_sec")?.median)
    }

    /// cohort's mean send time ÷ the raw mean round trip of the same round, over the
    /// rounds (one-sender, one-member scenarios only).
    fn rtt_ratio(&self) -> Option<Spread> {
        spread(
            self.cohort
                .iter()
                .zip(&self.raw)
                .map(|(c, r)| r.msgs_per_sec() / c.msgs_per_sec().max(1e-9)),
        )
    }

    /// CPU time per message and CPUs kept busy, over the rounds: (sender µs/msg, sink
    /// µs/msg, sender CPUs, sink CPUs).
    fn cpu(&self) -> Option<[Spread; 4]> {
        let per: Vec<((f64, f64), (f64, f64))> = self
            .cohort
            .iter()
            .filter_map(|s| Some((s.cpu_us_per_msg(self.sc.members)?, s.cpus_busy()?)))
            .collect();
        Some([
            spread(per.iter().map(|x| x.0.0))?,
            spread(per.iter().map(|x| x.0.1))?,
            spread(per.iter().map(|x| x.1.0))?,
            spread(per.iter().map(|x| x.1.1))?,
        ])
    }

    /// Failed sends of cohort over all rounds.
    fn errors(&self) -> u64 {
        self.cohort.iter().map(|s| s.errors).sum()
    }
}

/// The spread of `xs`.
fn spread(xs: impl Iterator<Item = f64>) -> Option<Spread> {
    Spread::of(&xs.collect::<Vec<_>>())
}

/// Everything a run measured, to print as tables or as JSON.
pub(super) struct Report<'a> {
    /// The machine, and its load when the run started.
    pub(super) machine: Machine,
    /// Load averages when the run ended.
    pub(super) load_after: String,
    /// The options of the run.
    pub(super) args: &'a PerfArgs,
    /// The sender's runtime, described.
    pub(super) runtime: String,
    /// The sinks' runtime, described.
    pub(super) sink_runtime: String,
    /// How long each scenario ran in a round.
    pub(super) duration: Duration,
    /// Bytes of the cluster name, which every data frame carries.
    pub(super) domain_len: usize,
    /// Acknowledged deliveries (sends × destinations) of the whole run, warm-up included.
    pub(super) deliveries: u64,
    /// Messages the cohort sinks reported having received.
    pub(super) sink_received: u64,
    /// The sender's `Node::start` → first heartbeat sent.
    pub(super) sender_first_heartbeat: Duration,
    /// Each sink's `Node::start` → first heartbeat sent, in µs.
    pub(super) sink_heartbeat_us: Vec<f64>,
    /// Each sink's process start → seen by the sender, in µs.
    pub(super) seen_after_us: Vec<f64>,
    /// Each sink's RSS before any traffic, in KiB.
    pub(super) sink_rss_idle: Vec<u64>,
    /// Each sink's RSS after cohort's scenarios, in KiB.
    pub(super) sink_rss_after: Vec<u64>,
    /// The sender's RSS before any traffic, in KiB.
    pub(super) sender_rss_idle: Option<u64>,
    /// The sender's RSS after cohort's scenarios, in KiB.
    pub(super) sender_rss_after: Option<u64>,
    /// An idle Java sink's RSS, in KiB.
    pub(super) tribes_sink_rss: Option<u64>,
    /// Raw TCP ping-pong with several outstanding by (payload size, frames outstanding),
    /// one per counted round.
    pub(super) raw_pp: HashMap<(usize, usize), Vec<Sample>>,
    /// Raw TCP one-way streaming, MB/s, one per counted round.
    pub(super) stream_mbps: Vec<f64>,
    /// cohort's and Tribes' scenarios, in order.
    pub(super) results: Vec<ScenarioRounds>,
    /// Why Tribes was skipped or partly failed.
    pub(super) tribes_note: Option<String>,
    /// cohort sending to the Java sinks (`--cross`), once each.
    pub(super) cross: Vec<(Scenario, Sample)>,
}

/// `1234567.4` as `1,234,567`.
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

/// "12,345 (11,000–13,000)", or "-".
fn fmt_rate_spread(s: Option<Spread>) -> String {
    s.map_or_else(
        || "-".into(),
        |s| {
            format!(
                "{} ({}–{})",
                fmt_rate(s.median),
                fmt_rate(s.min),
                fmt_rate(s.max)
            )
        },
    )
}

/// Microseconds with one decimal below 1000, none above.
fn fmt_us(x: f64) -> String {
    if x >= 1000.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

/// The median of a spread in µs, or "-".
fn fmt_us_median(s: Option<Spread>) -> String {
    s.map_or_else(|| "-".into(), |s| fmt_us(s.median))
}

/// KiB as MiB with one decimal.
fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The largest value (0 for none).
fn max_f(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

impl Report<'_> {
    /// Target checks on the medians: (name, measured, target, pass).
    fn targets(&self) -> Vec<(String, String, String, bool)> {
        let mut out = Vec::new();
        for r in &self.results {
            if r.sc.size > 4096 {
                continue;
            }
            if let Some(ratio) = r.ratio_vs_tribes() {
                let want = if r.sc.senders == 1 { 2.0 } else { 3.0 };
                out.push((
                    format!("{}: cohort/Tribes median msgs/s", r.sc.label()),
                    format!("{ratio:.2}x"),
                    format!(">= {want:.0}x"),
                    ratio >= want,
                ));
            }
        }
        for r in &self.results {
            if let Some(s) = r.rtt_ratio() {
                out.push((
                    format!(
                        "{}: mean RTT vs raw TCP ping-pong (median)",
                        size_label(r.sc.size)
                    ),
                    format!("{:.2}x", s.median),
                    "<= 1.5x".into(),
                    s.median <= 1.5,
                ));
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

    /// "50 us", or "off".
    fn busy_poll_label(&self) -> String {
        match self.args.busy_poll_us {
            0 => "off".into(),
            us => format!("{us} us"),
        }
    }

    /// Prints the CPU time the sender and the sinks used in each cohort scenario.
    fn print_cpu(&self) {
        if self.results.iter().all(|r| r.cpu().is_none()) {
            return;
        }
        println!();
        println!(
            "CPU time (user + system) during cohort's scenarios, median over the rounds: per message sent (sender), per message received (sinks), and CPUs busy on average:"
        );
        for r in &self.results {
            let Some([sender_us, sink_us, sender_cpus, sink_cpus]) = r.cpu() else {
                continue;
            };
            println!(
                "  {:<32} sender {:>6.1} us/msg  sinks {:>6.1} us/msg   busy: sender {:.2}, sinks {:.2}, total {:.2} of {} CPUs",
                r.sc.label(),
                sender_us.median,
                sink_us.median,
                sender_cpus.median,
                sink_cpus.median,
                sender_cpus.median + sink_cpus.median,
                self.machine.cores,
            );
        }
    }

    /// Prints the report as tables.
    pub(super) fn print(&self) {
        println!(
            "cohort perf: ACKed sends (USE_ACK), {:.1} s per scenario and round; {} warm-up round(s) not counted, then {} counted; cohort and Tribes take turns scenario by scenario; every figure is the median (min–max) over the counted rounds",
            self.duration.as_secs_f64(),
            self.args.warmup_rounds,
            self.args.runs,
        );
        println!(
            "machine: {}; load after: {}",
            self.machine.line(),
            self.load_after
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
            "busy-poll (Config::busy_poll of the sender and the cohort sinks): {}; keep-awake spinners: {}",
            self.busy_poll_label(),
            if self.args.keep_awake { "on" } else { "off" }
        );
        println!();
        println!("Raw TCP loopback baseline (tokio, separate process, 21-byte reply):");
        let mut keys: Vec<_> = self.raw_pp.keys().copied().collect();
        keys.sort_unstable();
        for (size, depth) in keys {
            let s = &self.raw_pp[&(size, depth)];
            println!(
                "  ping-pong {:>6} B frame ({} payload), {} outstanding: {} msgs/s  p50 {} us  p99 {} us",
                size + FRAME_OVERHEAD + self.domain_len,
                size_label(size),
                depth,
                fmt_rate_spread(spread(s.iter().map(Sample::msgs_per_sec))),
                fmt_us_median(spread(s.iter().map(|x| x.quantile_us(0.5)))),
                fmt_us_median(spread(s.iter().map(|x| x.quantile_us(0.99)))),
            );
        }
        for r in self.results.iter().filter(|r| !r.raw.is_empty()) {
            println!(
                "  ping-pong {:>6} B frame ({} payload), 1 outstanding (interleaved with cohort): {} msgs/s",
                r.sc.size + FRAME_OVERHEAD + self.domain_len,
                size_label(r.sc.size),
                fmt_rate_spread(spread(r.raw.iter().map(Sample::msgs_per_sec))),
            );
        }
        if let Some(s) = Spread::of(&self.stream_mbps) {
            println!(
                "  streaming, 64 KiB writes: {:.0} MB/s ({:.0}–{:.0})",
                s.median, s.min, s.max
            );
        }
        println!();
        println!(
            "{:<32} | {:>27} | {:>7} | {:>7} | {:>27} | {:>15} | {:>9} | {:>19}",
            "scenario",
            "cohort msgs/s",
            "p50 us",
            "p99 us",
            "Tribes msgs/s",
            "Tribes p50/p99",
            "vs Tribes",
            "RTT vs raw"
        );
        println!("{}", "-".repeat(32 + 27 + 7 + 7 + 27 + 15 + 9 + 19 + 7 * 3));
        for r in &self.results {
            let tp = match (r.tribes("p50_us"), r.tribes("p99_us")) {
                (Some(a), Some(b)) => format!("{}/{}", fmt_us(a.median), fmt_us(b.median)),
                _ => "-".into(),
            };
            let ratio = r
                .ratio_vs_tribes()
                .map_or_else(|| "-".into(), |x| format!("{x:.2}x"));
            let rtt = r.rtt_ratio().map_or_else(
                || "-".into(),
                |s| format!("{:.2}x ({:.2}–{:.2})", s.median, s.min, s.max),
            );
            let errors = match r.errors() {
                0 => String::new(),
                e => format!("  ({e} errors)"),
            };
            println!(
                "{:<32} | {:>27} | {:>7} | {:>7} | {:>27} | {:>15} | {:>9} | {:>19}{errors}",
                r.sc.label(),
                fmt_rate_spread(r.cohort_rate()),
                fmt_us_median(r.cohort_quantile(0.5)),
                fmt_us_median(r.cohort_quantile(0.99)),
                fmt_rate_spread(r.tribes("msgs_per_sec")),
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
            "(p50/p99: median over the rounds; vs Tribes: cohort's median msgs/s / Tribes' median; RTT vs raw: cohort's mean send time with one sender and one member / the raw ping-pong mean RTT of the same round, same frame size)"
        );
        self.print_cpu();
        if !self.cross.is_empty() {
            println!();
            println!("cohort sender -> Java Tribes sinks (once each, after the rounds):");
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
        println!("Targets (on the medians):");
        for (name, got, want, pass) in self.targets() {
            println!(
                "  [{}] {name}: {got} (target {want})",
                if pass { "ok  " } else { "MISS" }
            );
        }
    }

    /// The report as one record (`--json`).
    pub(super) fn record(&self) -> PerfRecord {
        let scenarios = self
            .results
            .iter()
            .map(|r| {
                let sc = r.sc;
                let cpu = r.cpu().map(|[a, b, c, d]| CpuRecord {
                    sender_us_per_msg: a.rounded(2),
                    sink_us_per_msg: b.rounded(2),
                    sender_cpus: c.rounded(3),
                    sinks_cpus: d.rounded(3),
                });
                ScenarioRecord {
                    size: sc.size,
                    members: sc.members,
                    senders: sc.senders,
                    cohort: SpreadsRecord {
                        msgs_per_sec: r.cohort_rate().map(|s| s.rounded(1)),
                        p50_us: r.cohort_quantile(0.5).map(|s| s.rounded(1)),
                        p99_us: r.cohort_quantile(0.99).map(|s| s.rounded(1)),
                        rounds: r.cohort.iter().map(|s| s.record(sc.size)).collect(),
                    },
                    cpu,
                    tribes: TribesRecord {
                        msgs_per_sec: r.tribes("msgs_per_sec").map(|s| s.rounded(1)),
                        p50_us: r.tribes("p50_us").map(|s| s.rounded(1)),
                        p99_us: r.tribes("p99_us").map(|s| s.rounded(1)),
                        rounds: r.tribes.clone(),
                    },
                    ratio_vs_tribes: r.ratio_vs_tribes().map(|x| round(x, 3)),
                    rtt_ratio_vs_raw: r.rtt_ratio().map(|s| s.rounded(3)),
                    raw_ping_pong_rounds: r.raw.iter().map(|s| s.record(sc.size)).collect(),
                }
            })
            .collect();
        let cross = self
            .cross
            .iter()
            .map(|(sc, s)| CrossRecord {
                size: sc.size,
                members: sc.members,
                senders: sc.senders,
                cohort_to_tribes: s.record(sc.size),
            })
            .collect();
        let targets = self
            .targets()
            .into_iter()
            .map(|(name, measured, target, pass)| TargetRecord {
                name,
                measured,
                target,
                pass,
            })
            .collect();
        let mut raw_keys: Vec<_> = self.raw_pp.keys().copied().collect();
        raw_keys.sort_unstable();
        let raw_tcp = raw_keys
            .into_iter()
            .map(|(size, depth)| {
                let s = &self.raw_pp[&(size, depth)];
                RawRecord {
                    size,
                    frame_bytes: size + FRAME_OVERHEAD + self.domain_len,
                    outstanding: depth,
                    msgs_per_sec: spread(s.iter().map(Sample::msgs_per_sec)).map(|s| s.rounded(1)),
                    rounds: s.iter().map(|x| x.record(size)).collect(),
                }
            })
            .collect();
        PerfRecord {
            machine: self.machine.clone(),
            load_after: self.load_after.clone(),
            config: ConfigRecord {
                duration_secs: self.duration.as_secs_f64(),
                warmup_rounds: self.args.warmup_rounds,
                runs: self.args.runs,
                sender_runtime: self.runtime.clone(),
                sink_runtime: self.sink_runtime.clone(),
                netns: self.args.in_netns.clone(),
                keep_awake: self.args.keep_awake,
                busy_poll_us: self.args.busy_poll_us,
            },
            raw_tcp,
            raw_stream_mb_per_sec: Spread::of(&self.stream_mbps).map(|s| s.rounded(1)),
            scenarios,
            tribes_note: self.tribes_note.clone(),
            check: CheckRecord {
                sink_received: self.sink_received,
                acked_deliveries: self.deliveries,
            },
            cross_cohort_to_tribes: cross,
            startup: StartupRecord {
                sender_first_heartbeat_us: round(
                    self.sender_first_heartbeat.as_secs_f64() * 1e6,
                    1,
                ),
                sink_first_heartbeat_us: self.sink_heartbeat_us.clone(),
                sink_start_to_seen_us: self.seen_after_us.clone(),
            },
            rss_kib: RssRecord {
                sink_idle: self.sink_rss_idle.clone(),
                sink_after: self.sink_rss_after.clone(),
                sender_idle: self.sender_rss_idle,
                sender_after: self.sender_rss_after,
                tribes_sink_idle: self.tribes_sink_rss,
            },
            targets,
        }
    }
}

/// The document `cohort perf --json` prints.
#[derive(Serialize, Debug)]
pub(super) struct PerfRecord {
    machine: Machine,
    load_after: String,
    config: ConfigRecord,
    raw_tcp: Vec<RawRecord>,
    raw_stream_mb_per_sec: Option<Spread>,
    scenarios: Vec<ScenarioRecord>,
    tribes_note: Option<String>,
    check: CheckRecord,
    cross_cohort_to_tribes: Vec<CrossRecord>,
    startup: StartupRecord,
    rss_kib: RssRecord,
    targets: Vec<TargetRecord>,
}

/// The raw TCP ping-pong with several outstanding.
#[derive(Serialize, Debug)]
struct RawRecord {
    size: usize,
    frame_bytes: usize,
    outstanding: usize,
    msgs_per_sec: Option<Spread>,
    rounds: Vec<SampleRecord>,
}

/// The run's settings.
#[derive(Serialize, Debug)]
struct ConfigRecord {
    duration_secs: f64,
    warmup_rounds: usize,
    runs: usize,
    sender_runtime: String,
    sink_runtime: String,
    netns: Option<String>,
    keep_awake: bool,
    busy_poll_us: u64,
}

/// One scenario: cohort's figures, Tribes', ratios.
#[derive(Serialize, Debug)]
struct ScenarioRecord {
    size: usize,
    members: usize,
    senders: usize,
    cohort: SpreadsRecord,
    cpu: Option<CpuRecord>,
    tribes: TribesRecord,
    ratio_vs_tribes: Option<f64>,
    rtt_ratio_vs_raw: Option<Spread>,
    raw_ping_pong_rounds: Vec<SampleRecord>,
}

/// cohort's figures over the rounds, and each round's.
#[derive(Serialize, Debug)]
struct SpreadsRecord {
    msgs_per_sec: Option<Spread>,
    p50_us: Option<Spread>,
    p99_us: Option<Spread>,
    rounds: Vec<SampleRecord>,
}

/// Tribes' figures over the rounds, and each round's result as the Java peer gave it.
#[derive(Serialize, Debug)]
struct TribesRecord {
    msgs_per_sec: Option<Spread>,
    p50_us: Option<Spread>,
    p99_us: Option<Spread>,
    rounds: Vec<Value>,
}

/// CPU time per message and CPUs kept busy, over the rounds.
#[derive(Serialize, Debug)]
struct CpuRecord {
    sender_us_per_msg: Spread,
    sink_us_per_msg: Spread,
    sender_cpus: Spread,
    sinks_cpus: Spread,
}

/// cohort sending to the Java sinks.
#[derive(Serialize, Debug)]
struct CrossRecord {
    size: usize,
    members: usize,
    senders: usize,
    cohort_to_tribes: SampleRecord,
}

/// Messages the sinks received against acknowledged deliveries.
#[derive(Serialize, Debug)]
struct CheckRecord {
    sink_received: u64,
    acked_deliveries: u64,
}

/// Start-up times.
#[derive(Serialize, Debug)]
struct StartupRecord {
    sender_first_heartbeat_us: f64,
    sink_first_heartbeat_us: Vec<f64>,
    sink_start_to_seen_us: Vec<f64>,
}

/// Resident set sizes in KiB.
#[derive(Serialize, Debug)]
struct RssRecord {
    sink_idle: Vec<u64>,
    sink_after: Vec<u64>,
    sender_idle: Option<u64>,
    sender_after: Option<u64>,
    tribes_sink_idle: Option<u64>,
}

/// One target check.
#[derive(Serialize, Debug)]
struct TargetRecord {
    name: String,
    measured: String,
    target: String,
    pass: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_grouped() {
        assert_eq!(fmt_rate(1234567.4), "1,234,567");
        assert_eq!(fmt_rate(999.0), "999");
        assert_eq!(fmt_rate(1000.0), "1,000");
    }

    fn sample(count: u64, secs: f64) -> Sample {
        let mut s = Sample::empty();
        s.count = count;
        s.secs = secs;
        s
    }

    #[test]
    fn scenario_figures_are_medians_over_the_rounds() {
        let r = ScenarioRounds {
            sc: Scenario {
                size: 1024,
                members: 1,
                senders: 1,
            },
            cohort: vec![sample(300, 1.0), sample(100, 1.0), sample(200, 1.0)],
            raw: vec![sample(600, 1.0), sample(200, 1.0), sample(200, 1.0)],
            tribes: vec![
                serde_json::json!({"msgs_per_sec": 50.0}),
                serde_json::json!({"msgs_per_sec": 100.0}),
                serde_json::json!({"msgs_per_sec": 150.0}),
            ],
        };
        let rate = r.cohort_rate().expect("rounds");
        assert_eq!((rate.median, rate.min, rate.max), (200.0, 100.0, 300.0));
        assert_eq!(r.ratio_vs_tribes(), Some(2.0));
        // Round by round: raw/cohort = 2, 2, 1.
        let rtt = r.rtt_ratio().expect("paired rounds");
        assert_eq!((rtt.median, rtt.min, rtt.max), (2.0, 1.0, 2.0));
    }
}
