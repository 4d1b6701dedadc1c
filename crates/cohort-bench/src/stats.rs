//! What every benchmark shares: the order of its rounds ([`Schedule`]: warm-up rounds
//! not counted, then counted rounds in which the systems take turns), the spread of
//! repeated runs ([`Spread`]: median, min, max) and the machine and its load
//! ([`Machine`]).

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

    /// The same spread with every figure rounded to `decimals` decimal places.
    pub fn rounded(self, decimals: i32) -> Self {
        let f = 10f64.powi(decimals);
        let r = |x: f64| (x * f).round() / f;
        Self {
            median: r(self.median),
            min: r(self.min),
            max: r(self.max),
            n: self.n,
        }
    }
}

/// The order in which a benchmark runs its rounds: `warmup` rounds that are not counted
/// (a JVM compiles its hot paths there), then `runs` counted ones. In every round each
/// system has one turn, and the system that goes first rotates from round to round, so
/// the systems alternate (cohort, peer, peer, cohort, ...) and see the same background
/// rather than one system's block running after another's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// How many systems take turns.
    pub systems: usize,
    /// Rounds not counted, first.
    pub warmup: usize,
    /// Rounds counted, after the warm-up ones.
    pub runs: usize,
}

/// One turn of a [`Schedule`]: which round, which system, whether it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn {
    /// The round, from 0 (warm-up rounds first).
    pub round: usize,
    /// The index of the system whose turn it is.
    pub system: usize,
    /// Whether the turn's figures count (false in the warm-up rounds).
    pub counted: bool,
}

impl Schedule {
    /// How many rounds, warm-up ones included.
    pub fn rounds(&self) -> usize {
        self.warmup + self.runs
    }

    /// The turns of round `round`: every system once, starting with system
    /// `round % systems`.
    pub fn round(&self, round: usize) -> impl Iterator<Item = Turn> + use<> {
        let Self {
            systems, warmup, ..
        } = *self;
        (0..systems).map(move |j| Turn {
            round,
            system: (j + round) % systems,
            counted: round >= warmup,
        })
    }

    /// Every turn, in order: round by round (see [`round`](Self::round)).
    pub fn turns(&self) -> impl Iterator<Item = Turn> + use<> {
        let s = *self;
        (0..s.rounds()).flat_map(move |round| s.round(round))
    }

    /// "run 2/5" for a counted turn, "warm-up run 1 (not counted)" for the others.
    pub fn label(&self, turn: Turn) -> String {
        if turn.counted {
            format!("run {}/{}", turn.round - self.warmup + 1, self.runs)
        } else {
            format!("warm-up run {} (not counted)", turn.round + 1)
        }
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
    /// The CPU scheduler's group of this process and its nice (`/proc/self/autogroup`,
    /// e.g. "/autogroup-168 nice -10"): with autogroups the CPU is shared between sessions
    /// first, so this says what share the benchmark asked for.
    pub autogroup: String,
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
            autogroup: std::fs::read_to_string("/proc/self/autogroup")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
        }
    }

    /// One line: "Intel(R) Xeon(R) ..., 2 cores, kernel 6.1.0, load 0.52 0.40 0.33",
    /// and the autogroup where there is one.
    pub fn line(&self) -> String {
        let mut line = format!(
            "{}, {} cores, kernel {}, load {}",
            self.cpu_model, self.cores, self.kernel, self.load_at_start
        );
        if !self.autogroup.is_empty() {
            line.push_str(&format!(", {}", self.autogroup));
        }
        line
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
    fn spread_rounds_every_figure() {
        let s = Spread::of(&[1.04, 2.06, 3.15]).expect("values").rounded(1);
        assert_eq!((s.median, s.min, s.max, s.n), (2.1, 1.0, 3.2, 3));
    }

    #[test]
    fn schedule_alternates_and_counts_after_the_warmup() {
        let s = Schedule {
            systems: 2,
            warmup: 1,
            runs: 2,
        };
        let turns: Vec<(usize, usize, bool)> =
            s.turns().map(|t| (t.round, t.system, t.counted)).collect();
        assert_eq!(
            turns,
            [
                (0, 0, false),
                (0, 1, false),
                (1, 1, true),
                (1, 0, true),
                (2, 0, true),
                (2, 1, true)
            ]
        );
        let three = Schedule {
            systems: 3,
            warmup: 0,
            runs: 3,
        };
        // Every system goes first once in three rounds.
        let firsts: Vec<usize> = three
            .turns()
            .filter(|t| t.system == t.round % 3)
            .map(|t| t.system)
            .collect();
        assert_eq!(firsts, [0, 1, 2]);
        assert!(three.turns().all(|t| t.counted));
        assert_eq!(
            s.label(Turn {
                round: 0,
                system: 1,
                counted: false
            }),
            "warm-up run 1 (not counted)"
        );
        assert_eq!(
            s.label(Turn {
                round: 2,
                system: 1,
                counted: true
            }),
            "run 2/2"
        );
    }

    #[test]
    fn machine_is_described() {
        let m = Machine::now();
        assert!(m.cores >= 1);
        assert!(!m.kernel.is_empty(), "{m:?}");
        assert_eq!(m.load_at_start.split_whitespace().count(), 3, "{m:?}");
    }
}
