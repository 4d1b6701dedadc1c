//! The whole stack (group and reliable with view synchrony) under faults. A failing seed
//! prints itself; `STACK_SIM_SEED=<seed>` replays it, `STACK_SIM_BASE` moves the window of
//! seeds a multi-seed test explores and `STACK_SIM_RUNS` sets how many (run many in
//! release by hand: `STACK_SIM_RUNS=20000 cargo test --release -p cohort-proto sim::`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{NetConfig, Sim, StackConfig};
use crate::group::GroupConfig;
use crate::reliable::ReliableConfig;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

/// The seeds a test runs: `STACK_SIM_SEED` alone, else `STACK_SIM_RUNS` (or `runs`)
/// seeds from `STACK_SIM_BASE` (or `base`).
fn seeds(base: u64, runs: u64) -> Vec<u64> {
    if let Some(seed) = env("STACK_SIM_SEED") {
        return vec![seed];
    }
    let base = env("STACK_SIM_BASE").unwrap_or(base);
    (base..base + env("STACK_SIM_RUNS").unwrap_or(runs)).collect()
}

/// Runs `run` for every seed, naming the seed of a failure and how to replay it.
fn for_seeds(base: u64, runs: u64, run: impl Fn(u64)) {
    let seeds = seeds(base, runs);
    for &seed in &seeds {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(seed)));
        if let Err(e) = result {
            eprintln!("stack simulation failed with seed {seed}; replay: STACK_SIM_SEED={seed}");
            std::panic::resume_unwind(e);
        }
    }
    eprintln!("{} seeds from {} passed", seeds.len(), seeds[0]);
}

fn lossy(loss: f64) -> NetConfig {
    NetConfig::lossy(loss)
}

/// `nodes` nodes started together, in one view, with the reliable layer installed.
fn stack(seed: u64, nodes: usize, net: NetConfig) -> Sim {
    let mut sim =
        Sim::new(seed, nodes, net, GroupConfig::default()).with_stack(StackConfig::default());
    sim.start_all();
    sim.run_until_stack_converged(Duration::from_secs(20));
    sim
}

fn coordinator(sim: &Sim) -> Option<usize> {
    let view = (0..sim.len()).find_map(|i| sim.view(i))?;
    let c = view.coordinator()?.id;
    (0..sim.len()).find(|&i| sim.id(i) == Some(c))
}

#[test]
fn a_sender_crash_under_load_ends_in_one_flushed_view() {
    for_seeds(1, 20, |seed| {
        let mut sim = stack(seed, 5, lossy(0.05));
        sim.set_load(true);
        sim.run_for(ms(300));
        let victim = (coordinator(&sim).unwrap_or(0) + 2) % 5;
        sim.crash(victim);
        sim.run_for(ms(300));
        sim.set_load(false);
        sim.run_until_stack_converged(Duration::from_secs(10));
        let st = sim.stack_stats();
        assert!(st.pairs_compared >= 3, "seed {seed}: {st:?}");
        assert!(st.delivered > 0, "seed {seed}: {st:?}");
    });
}

#[test]
fn the_coordinator_crashing_during_a_flush_restarts_it() {
    for_seeds(100, 20, |seed| {
        let mut sim = stack(seed, 6, lossy(0.05));
        sim.set_load(true);
        sim.run_for(ms(200));
        let coord = coordinator(&sim).expect("a coordinator");
        // A sender crashes; while the survivors flush, the flush coordinator crashes too.
        sim.crash((coord + 3) % 6);
        let mut rng = SmallRng::seed_from_u64(seed);
        sim.run_for(ms(rng.random_range(1..30)));
        sim.crash(coord);
        sim.run_for(ms(300));
        sim.set_load(false);
        sim.run_until_stack_converged(Duration::from_secs(10));
    });
}

/// Random faults under load: loss, duplication and reordering throughout; crashes of
/// any member (senders, coordinators, during flushes), restarts (joins), graceful leaves,
/// pauses, partitions and heals. The invariants are checked after every step; at the end
/// the faults stop and every live node must be in one flushed view.
#[test]
fn view_synchrony_holds_under_random_faults() {
    for_seeds(1000, 100, run_random_faults);
    // Seeds that once failed. 101201: a member the group listed in a view it never
    // received (it installed the next one first) was waited for as a survivor for ever.
    // 100989: once left out of that flush, it took a sender's start of the earlier view
    // from the sender's gossip and delivered that view's messages in the new one.
    if env("STACK_SIM_SEED").is_none() {
        for &seed in REGRESSIONS {
            for_seeds(seed, 1, run_random_faults);
        }
    }
}

#[test]
fn total_order_holds_under_random_faults() {
    // Half the messages in total order: every member delivers, per view, a prefix of one
    // sequence; the sequencer (the coordinator) crashes in some runs.
    let delivered = AtomicU64::new(0);
    for_seeds(5000, 60, |seed| {
        let config = StackConfig {
            total_order: true,
            ..StackConfig::default()
        };
        let sim = random_faults(seed, config);
        // Nothing a surviving member multicast in total order was lost.
        for i in (0..sim.len()).filter(|&i| sim.is_live(i)) {
            let pending = sim.total(i).map_or(0, crate::total::TotalOrder::pending);
            assert_eq!(
                pending,
                0,
                "seed {seed}: node {i} still waits for {pending} orders: {:?}",
                sim.stack_stats()
            );
        }
        delivered.fetch_add(sim.stack_stats().total_delivered, Ordering::Relaxed);
    });
    assert!(
        delivered.into_inner() > 0,
        "no total-order message was delivered"
    );
}

/// Seeds of `view_synchrony_holds_under_random_faults` that once failed.
const REGRESSIONS: &[u64] = &[100_989, 101_201];

fn run_random_faults(seed: u64) {
    random_faults(seed, StackConfig::default());
}

/// A run of random faults under load with the stack `config`, healed and converged.
fn random_faults(seed: u64, config: StackConfig) -> Sim {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x5eed);
    let nodes = rng.random_range(3..8);
    let loss = [0.0, 0.02, 0.1][rng.random_range(0..3)];
    let mut sim = Sim::new(seed, nodes, lossy(loss), GroupConfig::default()).with_stack(config);
    sim.start_all();
    sim.run_until_stack_converged(Duration::from_secs(20));
    sim.set_load(true);
    for _ in 0..rng.random_range(3..10) {
        let i = rng.random_range(0..nodes);
        match rng.random_range(0..10) {
            0..=2 => sim.crash(i),
            3 => {
                if let Some(c) = coordinator(&sim) {
                    sim.crash(c);
                }
            }
            4 | 5 if !sim.is_live(i) => sim.start(i),
            6 => sim.stop(i),
            7 => sim.pause(i, ms(rng.random_range(50..3000))),
            8 => {
                let cut = rng.random_range(1..nodes);
                let a: Vec<usize> = (0..cut).collect();
                let b: Vec<usize> = (cut..nodes).collect();
                sim.set_partitions(&[&a, &b]);
                sim.run_for(ms(rng.random_range(100..3000)));
                sim.heal();
            }
            _ => {}
        }
        sim.run_for(ms(rng.random_range(1..400)));
    }
    sim.heal();
    sim.set_load(false);
    // Bring back at least one node so the group has someone.
    if (0..nodes).all(|i| !sim.is_live(i)) {
        sim.start(0);
    }
    sim.run_until_stack_converged(Duration::from_secs(60));
    // Let the last orders and retransmissions settle.
    sim.run_for(Duration::from_secs(2));
    if std::env::var_os("STACK_SIM_PRINT").is_some() {
        eprintln!(
            "seed {seed}: {nodes} nodes, loss {loss}: {:?}",
            sim.stack_stats()
        );
    }
    sim
}

#[test]
fn many_members_flush_a_crashed_senders_messages() {
    // 25 in CI (a debug build takes about a second of CPU per thousand steps at this size);
    // `a_hundred_members_...` below is the full size, for release builds.
    let members = env("STACK_SIM_MEMBERS").unwrap_or(25) as usize;
    crash_a_sender_and_the_coordinator(members);
}

#[test]
#[ignore = "minutes in a debug build; run with --release --ignored"]
fn a_hundred_members_flush_a_crashed_senders_messages() {
    crash_a_sender_and_the_coordinator(100);
}

/// `members` members under load: a sender crashes, then the coordinator.
fn crash_a_sender_and_the_coordinator(members: usize) {
    for_seeds(7, 1, |seed| {
        // The default timers (stability gossip every 50 ms rather than 10): a hundred
        // members' gossip to each other is what the simulation spends its time on.
        let config = StackConfig {
            reliable: ReliableConfig {
                view_synchrony: true,
                ..ReliableConfig::default()
            },
            send_interval: ms(200),
            ..StackConfig::default()
        };
        let mut sim =
            Sim::new(seed, members, lossy(0.01), GroupConfig::default()).with_stack(config);
        sim.start_all();
        sim.run_until_stack_converged(Duration::from_secs(30));
        sim.set_load(true);
        sim.run_for(ms(300));
        sim.crash(members / 2);
        sim.run_until_stack_converged(Duration::from_secs(20));
        // Another sender crashes, and the coordinator of the flush that follows.
        sim.run_for(ms(200));
        sim.crash(members / 3);
        sim.run_for(ms(5));
        let coord = coordinator(&sim).expect("a coordinator");
        sim.crash(coord);
        sim.run_for(ms(200));
        sim.set_load(false);
        sim.run_until_stack_converged(Duration::from_secs(20));
        let st = sim.stack_stats();
        // Both view changes were flushed at every survivor, and compared.
        for i in (0..members).filter(|&i| sim.is_live(i)) {
            let flushes = sim.reliable(i).map_or(0, |r| r.stats().flushes);
            assert!(
                flushes >= 2,
                "seed {seed}: node {i}: {flushes} flushes: {}",
                sim.describe_stack()
            );
        }
        assert!(
            st.pairs_compared >= members as u64 - 3,
            "seed {seed}: {st:?}"
        );
        eprintln!("{members} members: {st:?} in {} steps", sim.steps);
    });
}
