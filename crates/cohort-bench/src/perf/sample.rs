//! What a run measures (a [`Scenario`]) and what came out of it (a [`Sample`]: a count,
//! a duration, a latency histogram and, for cohort runs, the CPU time used).

use hdrhistogram::Histogram;
use serde::Serialize;

use super::process::CpuUse;

/// One measured combination of message size, destinations and concurrent senders.
#[derive(Clone, Copy)]
pub(super) struct Scenario {
    /// Payload bytes per message.
    pub(super) size: usize,
    /// Destination members of every send.
    pub(super) members: usize,
    /// Concurrent sending tasks (or Tribes bench threads).
    pub(super) senders: usize,
}

impl Scenario {
    /// Every combination of `sizes` and `members`, each with one sender and (when
    /// `senders` > 1) with `senders` senders.
    pub(super) fn all(sizes: &[usize], members: &[usize], senders: usize) -> Vec<Self> {
        let mut scenarios = Vec::new();
        for &size in sizes {
            for &members in members {
                let mut counts = vec![1];
                if senders > 1 {
                    counts.push(senders);
                }
                for senders in counts {
                    scenarios.push(Self {
                        size,
                        members,
                        senders,
                    });
                }
            }
        }
        scenarios
    }

    /// "1 KiB -> 3 members, 4 senders".
    pub(super) fn label(&self) -> String {
        format!(
            "{} -> {} member{}, {} sender{}",
            size_label(self.size),
            self.members,
            if self.members == 1 { "" } else { "s" },
            self.senders,
            if self.senders == 1 { "" } else { "s" },
        )
    }

    /// (size, members, senders), to look up the matching Tribes result.
    pub(super) fn key(&self) -> (usize, usize, usize) {
        (self.size, self.members, self.senders)
    }
}

/// "64 KiB" for whole KiB, "100 B" otherwise.
pub(super) fn size_label(size: usize) -> String {
    if size >= 1024 && size % 1024 == 0 {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

/// Latencies and counts of one measured run.
pub(super) struct Sample {
    /// Completed operations (acknowledged sends, answered pings).
    pub(super) count: u64,
    /// Failed sends.
    pub(super) errors: u64,
    /// Wall-clock seconds the run took.
    pub(super) secs: f64,
    /// Latency of every operation, in nanoseconds.
    pub(super) hist: Histogram<u64>,
    /// CPU time of the sender and the sinks during the run, where measured.
    pub(super) cpu: Option<CpuUse>,
}

impl Sample {
    /// Nothing measured yet, to [`merge`](Self::merge) slices into.
    pub(super) fn empty() -> Self {
        Self {
            count: 0,
            errors: 0,
            secs: 0.0,
            hist: Self::new_hist(),
            cpu: None,
        }
    }

    /// Adds another run's counts, time, latencies and CPU time to this one.
    pub(super) fn merge(&mut self, other: Self) {
        self.count += other.count;
        self.errors += other.errors;
        self.secs += other.secs;
        let _ = self.hist.add(&other.hist);
        if let Some(cpu) = other.cpu {
            self.cpu.get_or_insert_default().add(&cpu);
        }
    }

    /// A histogram from 1 ns to 120 s with 3 significant digits.
    pub(super) fn new_hist() -> Histogram<u64> {
        Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("valid bounds")
    }

    /// Operations per second of wall-clock time.
    pub(super) fn msgs_per_sec(&self) -> f64 {
        self.count as f64 / self.secs.max(1e-9)
    }

    /// The latency at quantile `q`, in microseconds.
    pub(super) fn quantile_us(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }

    /// Microseconds of CPU time per operation: (sender, sinks), the sinks' spread over
    /// `deliveries_per_op` deliveries per operation.
    pub(super) fn cpu_us_per_msg(&self, deliveries_per_op: usize) -> Option<(f64, f64)> {
        let cpu = self.cpu?;
        let n = self.count.max(1) as f64;
        Some((
            cpu.sender_ns as f64 / 1e3 / n,
            cpu.sinks_ns as f64 / 1e3 / (n * deliveries_per_op.max(1) as f64),
        ))
    }

    /// CPUs kept busy on average: (sender, sinks).
    pub(super) fn cpus_busy(&self) -> Option<(f64, f64)> {
        let cpu = self.cpu?;
        let ns = self.secs.max(1e-9) * 1e9;
        Some((cpu.sender_ns as f64 / ns, cpu.sinks_ns as f64 / ns))
    }

    /// Counts, rates and latencies as a record; `size` is the payload size for MB/s.
    pub(super) fn record(&self, size: usize) -> SampleRecord {
        SampleRecord {
            count: self.count,
            errors: self.errors,
            secs: round(self.secs, 3),
            msgs_per_sec: round(self.msgs_per_sec(), 1),
            mb_per_sec: round(self.msgs_per_sec() * size as f64 / 1e6, 2),
            p50_us: round(self.quantile_us(0.5), 1),
            p99_us: round(self.quantile_us(0.99), 1),
            mean_us: round(self.hist.mean() / 1000.0, 1),
        }
    }
}

/// A [`Sample`] as reported: counts, rates and latencies, rounded.
#[derive(Serialize, Debug, Clone)]
pub(super) struct SampleRecord {
    count: u64,
    errors: u64,
    secs: f64,
    msgs_per_sec: f64,
    mb_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    mean_us: f64,
}

/// `x` rounded to `decimals` decimal places.
pub(super) fn round(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}
