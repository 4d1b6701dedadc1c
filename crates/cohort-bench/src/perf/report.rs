//! The report of a run: the tables `cohort perf` prints, the same as JSON (`--json`), and
//! the target checks.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::sample::{Sample, SampleRecord, Scenario, round, size_label};
use super::{FRAME_OVERHEAD, PerfArgs};

/// Everything a run measured, to print as tables or as JSON.
pub(super) struct Report<'a> {
    /// Load averages when the run started.
    pub(super) load_before: String,
    /// Load averages when the run ended.
    pub(super) load_after: String,
    /// The options of the run.
    pub(super) args: &'a PerfArgs,
    /// Available CPUs.
    pub(super) cpus: usize,
    /// The CPU's model name.
    pub(super) cpu_model: String,
    /// The sender's runtime, described.
    pub(super) runtime: String,
    /// The sinks' runtime, described.
    pub(super) sink_runtime: String,
    /// How long each scenario ran.
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
    /// Raw TCP ping-pong by (payload size, frames outstanding).
    pub(super) raw_pp: HashMap<(usize, usize), Sample>,
    /// The raw TCP results.
    pub(super) raw_json: Vec<RawRecord>,
    /// Raw TCP one-way streaming, MB/s.
    pub(super) stream_mbps: f64,
    /// cohort's scenarios, in order.
    pub(super) results: Vec<(Scenario, Sample)>,
    /// Tribes' bench results by [`Scenario::key`].
    pub(super) tribes: HashMap<(usize, usize, usize), Value>,
    /// Why Tribes was skipped or partly failed.
    pub(super) tribes_note: Option<String>,
    /// cohort sending to the Java sinks (`--cross`).
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

/// Microseconds with one decimal below 1000, none above.
fn fmt_us(x: f64) -> String {
    if x >= 1000.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
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
    /// Tribes' msgs/s in the same scenario.
    fn tribes_rate(&self, sc: &Scenario) -> Option<f64> {
        self.tribes
            .get(&sc.key())
            .and_then(|v| v["msgs_per_sec"].as_f64())
    }

    /// (raw mean RTT in µs, cohort's mean send time / raw mean RTT) for a one-sender,
    /// one-member scenario.
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

    /// "50 us", or "off".
    fn busy_poll_label(&self) -> String {
        match self.args.busy_poll_us {
            0 => "off".into(),
            us => format!("{us} us"),
        }
    }

    /// Prints the CPU time the sender and the sinks used in each cohort scenario.
    fn print_cpu(&self) {
        if self.results.iter().all(|(_, s)| s.cpu.is_none()) {
            return;
        }
        println!();
        println!(
            "CPU time (user + system) during cohort's scenarios: per message sent (sender), per message received (sinks), and CPUs busy on average:"
        );
        for (sc, s) in &self.results {
            let (Some((sender_us, sink_us)), Some((sender_cpus, sink_cpus))) =
                (s.cpu_us_per_msg(sc.members), s.cpus_busy())
            else {
                continue;
            };
            println!(
                "  {:<32} sender {:>6.1} us/msg  sinks {:>6.1} us/msg   busy: sender {:.2}, sinks {:.2}, total {:.2} of {} CPUs",
                sc.label(),
                sender_us,
                sink_us,
                sender_cpus,
                sink_cpus,
                sender_cpus + sink_cpus,
                self.cpus,
            );
        }
    }

    /// Prints the report as tables.
    pub(super) fn print(&self) {
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
            "busy-poll (Config::busy_poll of the sender and the cohort sinks): {}",
            self.busy_poll_label()
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
        self.print_cpu();
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

    /// The report as one record (`--json`).
    pub(super) fn record(&self) -> PerfRecord {
        let scenarios = self
            .results
            .iter()
            .map(|(sc, s)| {
                let rtt = if sc.senders == 1 && sc.members == 1 {
                    self.rtt_ratio(sc, s).map(|(_, r)| round(r, 3))
                } else {
                    None
                };
                let cpu = match (s.cpu_us_per_msg(sc.members), s.cpus_busy()) {
                    (Some((sender_us, sink_us)), Some((sender_cpus, sink_cpus))) => {
                        Some(CpuRecord {
                            sender_us_per_msg: round(sender_us, 2),
                            sink_us_per_msg: round(sink_us, 2),
                            sender_cpus: round(sender_cpus, 3),
                            sinks_cpus: round(sink_cpus, 3),
                        })
                    }
                    _ => None,
                };
                ScenarioRecord {
                    size: sc.size,
                    members: sc.members,
                    senders: sc.senders,
                    cohort: s.record(sc.size),
                    cpu,
                    tribes: self.tribes.get(&sc.key()).cloned(),
                    ratio_vs_tribes: self.tribes_rate(sc).map(|t| round(s.msgs_per_sec() / t, 3)),
                    rtt_ratio_vs_raw: rtt,
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
        PerfRecord {
            machine: MachineRecord {
                cpus: self.cpus,
                cpu_model: self.cpu_model.clone(),
                loadavg_before: self.load_before.clone(),
                loadavg_after: self.load_after.clone(),
            },
            config: ConfigRecord {
                duration_secs: self.duration.as_secs_f64(),
                sender_runtime: self.runtime.clone(),
                sink_runtime: self.sink_runtime.clone(),
                netns: self.args.in_netns.clone(),
                keep_awake: self.args.keep_awake,
                busy_poll_us: self.args.busy_poll_us,
            },
            raw_tcp: self.raw_json.clone(),
            raw_stream_mb_per_sec: round(self.stream_mbps, 1),
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

/// One raw TCP baseline result.
#[derive(Serialize, Debug, Clone)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub(super) enum RawRecord {
    /// Ping-pong of a frame as large as cohort's, answered by a 21-byte reply.
    PingPong {
        /// Payload size of the cohort message it stands for.
        size: usize,
        /// Bytes of the frame sent.
        frame_bytes: usize,
        /// Frames outstanding.
        outstanding: usize,
        /// Counts, rates and latencies.
        result: SampleRecord,
    },
    /// One-way streaming.
    Stream {
        /// Bytes per write.
        chunk: usize,
        /// Rate.
        mb_per_sec: f64,
    },
}

/// The document `cohort perf --json` prints.
#[derive(Serialize, Debug)]
pub(super) struct PerfRecord {
    machine: MachineRecord,
    config: ConfigRecord,
    raw_tcp: Vec<RawRecord>,
    raw_stream_mb_per_sec: f64,
    scenarios: Vec<ScenarioRecord>,
    tribes_note: Option<String>,
    check: CheckRecord,
    cross_cohort_to_tribes: Vec<CrossRecord>,
    startup: StartupRecord,
    rss_kib: RssRecord,
    targets: Vec<TargetRecord>,
}

/// The machine and its load.
#[derive(Serialize, Debug)]
struct MachineRecord {
    cpus: usize,
    cpu_model: String,
    loadavg_before: String,
    loadavg_after: String,
}

/// The run's settings.
#[derive(Serialize, Debug)]
struct ConfigRecord {
    duration_secs: f64,
    sender_runtime: String,
    sink_runtime: String,
    netns: Option<String>,
    keep_awake: bool,
    busy_poll_us: u64,
}

/// One scenario: cohort's figures, Tribes' (as the Java peer reported them), ratios.
#[derive(Serialize, Debug)]
struct ScenarioRecord {
    size: usize,
    members: usize,
    senders: usize,
    cohort: SampleRecord,
    cpu: Option<CpuRecord>,
    /// The Java Tribes peer's own JSON result, passed through.
    tribes: Option<Value>,
    ratio_vs_tribes: Option<f64>,
    rtt_ratio_vs_raw: Option<f64>,
}

/// CPU time per message and CPUs kept busy.
#[derive(Serialize, Debug)]
struct CpuRecord {
    sender_us_per_msg: f64,
    sink_us_per_msg: f64,
    sender_cpus: f64,
    sinks_cpus: f64,
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
}
