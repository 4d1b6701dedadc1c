//! What every benchmark reports beside its figures: the spread of repeated runs
//! ([`Spread`]: median, min, max) and the machine and its load ([`Machine`]).

use serde::Serialize;

/// The median, minimum and maximum of repeated measurements of one figure.
#[derive(Serialize, Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// The median (the mean of the middle two for an even count).
    pub median: f64,
    /// The smallest measurement.
    pub min: f64,
    /// The largest measurement.
    pub max: f64,
    /// How many measurements.
    pub n: usize,
}

impl Spread {
    /// The spread of `values` (NaNs ignored); `None` when there is none.
    pub fn of(values: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Self {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }
}

/// The machine a benchmark ran on, and its load.
#[derive(Serialize, Debug, Clone)]
pub struct Machine {
    /// `model name` of `/proc/cpuinfo`.
    pub cpu_model: String,
    /// CPUs this process may run on.
    pub cores: usize,
    /// `/proc/sys/kernel/osrelease`.
    pub kernel: String,
    /// The 1, 5 and 15 minute load averages when the benchmark started.
    pub load_at_start: String,
}

impl Machine {
    /// Reads the machine's description and load now.
    pub fn now() -> Self {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_string())
            })
            .unwrap_or_default();
        Self {
            cpu_model,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            load_at_start: loadavg(),
        }
    }

    /// One line: "Intel(R) Xeon(R) ..., 2 cores, kernel 6.1.0, load 0.52 0.40 0.33".
    pub fn line(&self) -> String {
        format!(
            "{}, {} cores, kernel {}, load {}",
            self.cpu_model, self.cores, self.kernel, self.load_at_start
        )
    }
}

/// The 1, 5 and 15 minute load averages: other work on the machine skews every number.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_of_odd_and_even_counts() {
        let s = Spread::of(&[5.0, 1.0, 3.0]).expect("values");
        assert_eq!((s.median, s.min, s.max, s.n), (3.0, 1.0, 5.0, 3));
        let s = Spread::of(&[4.0, 1.0, 3.0, 2.0, f64::NAN]).expect("values");
        assert_eq!((s.median, s.min, s.max, s.n), (2.5, 1.0, 4.0, 4));
        assert_eq!(Spread::of(&[]), None);
    }

    #[test]
    fn machine_is_described() {
        let m = Machine::now();
        assert!(m.cores >= 1);
        assert!(!m.kernel.is_empty(), "{m:?}");
        assert_eq!(m.load_at_start.split_whitespace().count(), 3, "{m:?}");
    }
}
