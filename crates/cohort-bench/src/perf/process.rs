//! The runtime each perf process runs on, and what `/proc` tells about a process (RSS,
//! CPU time, load, uid). Child processes: [`crate::supervisor`].

use std::time::{SystemTime, UNIX_EPOCH};

use super::Flavor;
use crate::BenchResult;

/// Runs `f` on a runtime of its own, on a thread of its own, so the flavor under test is
/// not the CLI's default one.
pub(super) async fn on_own_runtime<F, Fut>(
    name: &'static str,
    flavor: Flavor,
    workers: usize,
    f: F,
) -> BenchResult
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = BenchResult>,
{
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || -> BenchResult {
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

/// A tokio runtime of the given flavor; the worker threads of `multi` are named `name`.
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

/// Whether this process runs as root (real uid 0), from `/proc/self/status`.
pub(super) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Resident set size of a process in KiB (`VmRSS`).
pub(super) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Microseconds since the Unix epoch (wall clock, comparable across processes).
pub(super) fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// CPU time (user + system) a process has used so far, in nanoseconds: the sum of the
/// first field of `/proc/<pid>/task/*/schedstat` (nanosecond resolution, threads alive
/// now), or, where that is missing, `utime + stime` of `/proc/<pid>/stat` (clock ticks,
/// assumed 100 per second).
pub(super) fn cpu_ns(pid: u32) -> Option<u64> {
    let from_schedstat = || -> Option<u64> {
        let mut total = 0;
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
            let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
            total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
        }
        Some(total)
    };
    from_schedstat().or_else(|| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the parenthesised command name; utime and stime are 14 and 15.
        let rest = &stat[stat.rfind(')')? + 2..];
        let mut fields = rest.split_whitespace().skip(11);
        let utime: u64 = fields.next()?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        Some((utime + stime) * 10_000_000)
    })
}

/// CPU time used by the sending process and by the sink processes together.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct CpuUse {
    /// This (the sending) process, in nanoseconds.
    pub(super) sender_ns: u64,
    /// All sink processes together, in nanoseconds.
    pub(super) sinks_ns: u64,
}

impl CpuUse {
    /// The CPU time used so far by this process and by the processes `sink_pids`.
    pub(super) fn now(sink_pids: &[u32]) -> Self {
        Self {
            sender_ns: cpu_ns(std::process::id()).unwrap_or(0),
            sinks_ns: sink_pids.iter().filter_map(|&p| cpu_ns(p)).sum(),
        }
    }

    /// The CPU time used between `earlier` and `self`.
    pub(super) fn since(&self, earlier: &Self) -> Self {
        Self {
            sender_ns: self.sender_ns.saturating_sub(earlier.sender_ns),
            sinks_ns: self.sinks_ns.saturating_sub(earlier.sinks_ns),
        }
    }

    /// Both added up.
    pub(super) fn add(&mut self, other: &Self) {
        self.sender_ns += other.sender_ns;
        self.sinks_ns += other.sinks_ns;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn own_cpu_time_grows() {
        let before = cpu_ns(std::process::id()).expect("readable");
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(30) {
            std::hint::spin_loop();
        }
        let after = cpu_ns(std::process::id()).expect("readable");
        assert!(after > before, "{before} -> {after}");
    }
}
