//! `cohort perf-group --faults-secs N`: false removals per hour under random faults, cohort
//! and Serf side by side in the same run.
//!
//! `nodes` cohort nodes and `nodes` Serf agents run at once; slot `i` is cohort node `i` and
//! Serf agent `i`, and every fault hits both members of a slot at the same moment. A seeded
//! schedule of episodes: one or two slots faulted at a time (kill -9 and a restart after
//! 1-4 s, or SIGSTOP for 0.5-6 s), a third of the episodes with a busy loop on every CPU,
//! then [`SETTLE`] without faults. A *false removal* is a member of an unfaulted slot
//! leaving the membership that a process of another unfaulted slot reports (a cohort view
//! without it, which includes its own rejoin under a new id; a Serf `EventMemberFailed`,
//! `Leave` or `Reap`), during an episode. Link cuts and partitions need a host per node:
//! the nemesis test (`crates/cohort-cli/tests/netns_nemesis.rs`) has them.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{CohortSystem, NodeProc, SerfSystem, System, start_group, unix_ns};
use crate::BenchResult;
use crate::stats::{Spread, loadavg};
use crate::supervisor::Signal;

/// Quiet time after the last heal of an episode, before the next one: longer than Serf's
/// suspicion timeout for a small group (about 5 s), so late verdicts fall in the episode
/// that caused them.
const SETTLE: Duration = Duration::from_secs(8);

/// First slot index (ports 26000 + index for cohort, 26100 + index for Serf): clear of the
/// indexes the other perf-group scenarios use.
const FIRST: usize = 60;

/// SplitMix64: a seed replays the schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// kill -9, restarted after the duration.
    Kill(usize, Duration),
    /// SIGSTOP, SIGCONT after the duration.
    Stop(usize, Duration),
}

impl Fault {
    fn duration(self) -> Duration {
        match self {
            Self::Kill(_, d) | Self::Stop(_, d) => d,
        }
    }
}

/// One system's processes, by slot, and what they reported.
struct Group {
    sys: Box<dyn System>,
    slots: Vec<NodeProc>,
    false_removals: usize,
    episodes_with_removals: usize,
    /// Faulted members seen leaving (each fault at most once).
    detected: usize,
}

impl Group {
    fn start(sys: Box<dyn System>, n: usize) -> Result<Self, String> {
        let (slots, _) = start_group(sys.as_ref(), FIRST, n, FIRST)?;
        Ok(Self {
            sys,
            slots,
            false_removals: 0,
            episodes_with_removals: 0,
            detected: 0,
        })
    }

    fn inject(&mut self, fault: Fault) {
        match fault {
            Fault::Kill(s, _) => self.slots[s].signal(Signal::Kill),
            Fault::Stop(s, _) => self.slots[s].signal(Signal::Stop),
        }
    }

    /// Heals `fault`; a restarted Serf agent joins through `seed` (an unfaulted slot).
    fn heal(&mut self, fault: Fault, seed: usize) -> Result<(), String> {
        match fault {
            Fault::Kill(s, _) => {
                let node = self
                    .sys
                    .start(FIRST + s, FIRST + seed)
                    .map_err(|e| format!("cannot restart {} {s}: {e}", self.sys.label()))?;
                // The old process is reaped when dropped.
                self.slots[s] = node;
            }
            Fault::Stop(s, _) => self.slots[s].signal(Signal::Cont),
        }
        Ok(())
    }

    /// Counts, since `since_ns`, the members that any unfaulted slot's process saw leave:
    /// of unfaulted slots (false removals) and of faulted ones (detections), one per member
    /// name. Returns the false removals.
    fn count_removals(
        &mut self,
        faulted: &BTreeSet<usize>,
        names: &[String],
        since_ns: u128,
    ) -> usize {
        let observers = (0..self.slots.len()).filter(|s| !faulted.contains(s));
        let mut gone = BTreeSet::new();
        for o in observers {
            let history = self.slots[o].history();
            let mut previous: Option<&BTreeSet<String>> = history
                .iter()
                .rev()
                .find(|s| s.at_ns < since_ns)
                .map(|s| &s.members);
            for s in history.iter().filter(|s| s.at_ns >= since_ns) {
                if let Some(p) = previous {
                    gone.extend(p.difference(&s.members).cloned());
                }
                previous = Some(&s.members);
            }
        }
        let (mut false_removals, mut detected) = (0, 0);
        for (slot, name) in names.iter().enumerate() {
            match (gone.contains(name), faulted.contains(&slot)) {
                (true, false) => false_removals += 1,
                (true, true) => detected += 1,
                (false, _) => {}
            }
        }
        self.false_removals += false_removals;
        self.episodes_with_removals += usize::from(false_removals > 0);
        self.detected += detected;
        false_removals
    }
}

/// A busy loop on every CPU until dropped.
struct BusyCpus(Vec<Child>);

impl BusyCpus {
    fn start() -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self(
            (0..cpus)
                .filter_map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .stdin(Stdio::null())
                        .spawn()
                        .ok()
                })
                .collect(),
        )
    }
}

impl Drop for BusyCpus {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs the random faults for `secs` against `nodes` cohort nodes and `nodes` Serf agents
/// (the `systems` named), and prints the false removals per hour of each: over the whole
/// run, and for each of `rounds` consecutive parts of it, with their median and min–max.
pub(super) fn run(
    exe: std::path::PathBuf,
    systems: &[String],
    nodes: usize,
    (secs, rounds): (u64, usize),
    seed: u64,
) -> BenchResult {
    if nodes < 4 {
        return Err(
            "--faults-nodes must be at least 4 (two faulted slots, a majority left)".into(),
        );
    }
    let mut groups = Vec::new();
    for s in systems {
        let sys: Box<dyn System> = match s.as_str() {
            "cohort" => Box::new(CohortSystem {
                exe: exe.clone(),
                mcast_port: 46452,
            }),
            "serf" => Box::new(SerfSystem {
                started: std::sync::atomic::AtomicUsize::new(0),
            }),
            other => return Err(format!("unknown system {other:?} (cohort, serf)").into()),
        };
        groups.push(Group::start(sys, nodes)?);
    }
    eprintln!("perf-group: random faults for {secs} s, seed {seed}");
    let load_before = loadavg();
    let mut rng = Rng(seed);
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    let (mut episodes, mut busy_episodes) = (0, 0);
    let started = Instant::now();
    let part = Duration::from_secs(secs) / rounds.max(1) as u32;
    // Each part's false removals per hour, per group; where the current part started.
    let mut per_part: Vec<Vec<f64>> = vec![Vec::new(); groups.len()];
    let (mut part_start, mut part_base, mut part_episodes) = (
        Instant::now(),
        groups.iter().map(|g| g.false_removals).collect::<Vec<_>>(),
        0usize,
    );
    let mut close_part =
        |groups: &[Group], part_start: &mut Instant, part_base: &mut Vec<usize>| {
            let hours = part_start.elapsed().as_secs_f64() / 3600.0;
            for (i, g) in groups.iter().enumerate() {
                per_part[i].push((g.false_removals - part_base[i]) as f64 / hours);
                part_base[i] = g.false_removals;
            }
            *part_start = Instant::now();
        };
    while started.elapsed() < Duration::from_secs(secs) {
        episodes += 1;
        part_episodes += 1;
        let mut faults = Vec::new();
        let mut taken = BTreeSet::new();
        for _ in 0..=rng.below(2) {
            let slot = loop {
                let s = rng.below(nodes as u64) as usize;
                if taken.insert(s) {
                    break s;
                }
            };
            let offset = if faults.is_empty() {
                Duration::ZERO
            } else {
                rng.millis(0, 3000)
            };
            let fault = if rng.below(2) == 0 {
                *kinds.entry("kill -9 + restart").or_default() += 1;
                Fault::Kill(slot, rng.millis(1000, 4000))
            } else {
                *kinds.entry("SIGSTOP").or_default() += 1;
                Fault::Stop(slot, rng.millis(500, 6000))
            };
            faults.push((offset, fault));
        }
        let busy = (rng.below(3) == 0).then(BusyCpus::start);
        let busy_episode = busy.is_some();
        busy_episodes += usize::from(busy_episode);
        let seed_slot = (0..nodes).find(|s| !taken.contains(s)).unwrap_or(0);
        let names: Vec<Vec<String>> = groups
            .iter()
            .map(|g| g.slots.iter().map(NodeProc::name).collect())
            .collect();
        let since_ns = unix_ns();
        let mut actions: Vec<(Duration, bool, Fault)> = faults
            .iter()
            .flat_map(|&(at, f)| [(at, false, f), (at + f.duration(), true, f)])
            .collect();
        actions.sort_by_key(|&(at, heal, _)| (at, heal));
        let t0 = Instant::now();
        for (at, heal, fault) in actions {
            if let Some(wait) = (t0 + at).checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            for g in &mut groups {
                if heal {
                    g.heal(fault, seed_slot)?;
                } else {
                    g.inject(fault);
                }
            }
        }
        drop(busy);
        std::thread::sleep(SETTLE);
        let found: Vec<String> = groups
            .iter_mut()
            .zip(&names)
            .map(|(g, names)| {
                let n = g.count_removals(&taken, names, since_ns);
                format!("{} {n}", g.sys.label())
            })
            .collect();
        eprintln!(
            "perf-group: episode {episodes}: {faults:?}{}: false removals {}",
            if busy_episode { ", busy CPUs" } else { "" },
            found.join(", ")
        );
        if part_start.elapsed() >= part {
            close_part(&groups, &mut part_start, &mut part_base);
            part_episodes = 0;
        }
    }
    if part_episodes > 0 {
        close_part(&groups, &mut part_start, &mut part_base);
    }
    let hours = started.elapsed().as_secs_f64() / 3600.0;
    println!(
        "\nfalse removals under random faults: {nodes} members each, side by side, {:.0} s, \
         seed {seed}; load average {load_before} before, {} after",
        started.elapsed().as_secs_f64(),
        loadavg()
    );
    let faults: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!(
        "  {episodes} episodes of one or two faulted slots: {}; busy CPUs in {busy_episodes}",
        faults.join(", ")
    );
    let total: usize = kinds.values().sum();
    for (g, parts) in groups.iter().zip(&per_part) {
        let spread = Spread::of(parts).map_or_else(
            || "-".into(),
            |s| format!("{:.0} ({:.0}–{:.0})", s.median, s.min, s.max),
        );
        let each: Vec<String> = parts.iter().map(|x| format!("{x:.0}")).collect();
        println!(
            "    {:<7} {:>4} false removals (after {} of {episodes} episodes) = {:.0} per hour; \
             {} of {total} faulted members seen leaving; per hour in each of {} parts: \
             median {spread} [{}]",
            g.sys.label(),
            g.false_removals,
            g.episodes_with_removals,
            g.false_removals as f64 / hours,
            g.detected,
            parts.len(),
            each.join(", ")
        );
    }
    Ok(())
}
