//! Scenario tests of the group protocol in the simulation (see `sim.rs`).

use std::time::Duration;

use super::GroupConfig;
use crate::sim::{NetConfig, Sim, seed};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn lossy(loss: f64) -> NetConfig {
    NetConfig::lossy(loss)
}

fn started(seed: u64, nodes: usize, net: NetConfig) -> Sim {
    let mut sim = Sim::new(seed, nodes, net, GroupConfig::default());
    sim.start_all();
    sim.run_until_converged(Duration::from_secs(10));
    sim
}

fn coordinator_slot(sim: &Sim) -> usize {
    let view = (0..sim.len()).find_map(|i| sim.view(i)).expect("a view");
    let coord = view.coordinator().expect("coordinator").id;
    (0..sim.len())
        .find(|&i| sim.id(i) == Some(coord))
        .expect("coordinator slot")
}

#[test]
fn first_member_forms_a_group_of_one_quickly() {
    let mut sim = Sim::new(seed(1), 1, NetConfig::default(), GroupConfig::default());
    sim.start(0);
    let took = sim.run_until_converged(Duration::from_secs(2));
    assert!(took <= ms(300), "took {took:?}");
    assert_eq!(sim.view(0).unwrap().members.len(), 1);
}

#[test]
fn a_later_joiner_is_admitted_within_a_few_round_trips() {
    let mut sim = started(seed(2), 4, NetConfig::default());
    sim.crash(3);
    sim.run_until_converged(Duration::from_secs(5));
    sim.start(3);
    let late = sim.run_until_converged(Duration::from_secs(5));
    assert!(late <= ms(100), "later joiner took {late:?}");
}

#[test]
fn hundred_nodes_started_together_converge_on_one_view() {
    let s = seed(3);
    let mut sim = Sim::new(s, 100, lossy(0.01), GroupConfig::default());
    sim.start_all();
    let took = sim.run_until_converged(Duration::from_secs(10));
    assert!(took <= Duration::from_secs(3), "seed {s}: took {took:?}");
    // Joins are batched: far fewer views than members (each node's first view of one
    // counts too, for the seed and for nodes that formed a group before being invited).
    eprintln!("100 nodes: {} views", sim.views_seen());
    assert!(sim.views_seen() <= 10, "{} views", sim.views_seen());
}

#[test]
fn crash_is_removed_through_the_ring_within_a_round_trip_and_coordinator_crash_hands_over() {
    let mut sim = started(seed(4), 6, NetConfig::default());
    sim.crash(4);
    let took = sim.run_until_converged(Duration::from_secs(5));
    assert!(took <= ms(200), "crash of a member took {took:?}");
    let coord = coordinator_slot(&sim);
    sim.crash(coord);
    let took = sim.run_until_converged(Duration::from_secs(5));
    assert!(took <= ms(200), "crash of the coordinator took {took:?}");
    assert_ne!(coordinator_slot(&sim), coord);
    let survivor = if coord == 0 { 1 } else { 0 };
    assert_eq!(sim.view(survivor).unwrap().members.len(), 4);
}

#[test]
fn a_crash_before_acknowledging_a_view_does_not_hold_the_next_one_back() {
    let mut sim = started(seed(10), 4, NetConfig::default());
    let coord = coordinator_slot(&sim);
    let other = (coord + 1) % 4;
    let victim = (coord + 2) % 4;
    // The member leaves; the victim dies before it can acknowledge the view without it.
    sim.stop(other);
    sim.crash(victim);
    let took = sim.run_until_converged(Duration::from_secs(5));
    assert!(took <= ms(200), "took {took:?}: {}", sim.describe());
}

#[test]
fn graceful_leave_installs_a_view_at_once() {
    let mut sim = started(seed(5), 5, NetConfig::default());
    let coord = coordinator_slot(&sim);
    sim.stop(coord);
    let took = sim.run_until_converged(Duration::from_secs(5));
    assert!(took <= ms(50), "leave of the coordinator took {took:?}");
    sim.stop((coord + 1) % 5);
    let took = sim.run_until_converged(Duration::from_secs(5));
    assert!(took <= ms(50), "leave of a member took {took:?}");
}

#[test]
fn a_pause_shorter_than_the_timeout_removes_no_one() {
    let mut sim = started(seed(6), 5, lossy(0.02));
    let removals = sim.removals();
    sim.pause(2, ms(800));
    sim.run_for(Duration::from_secs(5));
    assert!(sim.converged(), "{}", sim.describe());
    assert_eq!(sim.removals(), removals, "{}", sim.describe());
    assert_eq!(sim.rejoins(2), 0);
}

#[test]
fn a_long_pause_removes_the_member_and_it_rejoins_under_a_new_id() {
    let mut sim = started(seed(7), 5, NetConfig::default());
    let old = sim.id(2).unwrap();
    sim.pause(2, Duration::from_secs(6));
    // Removed by the others within 3 s.
    sim.run_for(Duration::from_secs(3));
    let others = sim.view(0).unwrap();
    assert!(!others.contains(&old), "still in {}", sim.describe());
    assert_eq!(others.members.len(), 4);
    // Back after the pause, as a new member.
    sim.run_for(Duration::from_secs(3));
    sim.run_until_converged(Duration::from_secs(3));
    assert_eq!(sim.rejoins(2), 1);
    assert_ne!(sim.id(2).unwrap(), old);
    assert_eq!(sim.view(0).unwrap().members.len(), 5);
}

#[test]
fn a_node_cut_off_alone_is_removed_and_rejoins_when_the_link_returns() {
    let mut sim = started(seed(8), 5, NetConfig::default());
    let old = sim.id(3).unwrap();
    sim.set_partitions(&[&[0, 1, 2, 4], &[3]]);
    sim.run_for(Duration::from_secs(4));
    for i in [0, 1, 2, 4] {
        let v = sim.view(i).unwrap();
        assert_eq!(v.members.len(), 4, "{}", sim.describe());
        assert!(!v.contains(&old));
    }
    sim.heal();
    sim.run_until_converged(Duration::from_secs(5));
    assert_eq!(sim.view(0).unwrap().members.len(), 5);
    assert!(sim.rejoins(3) >= 1);
}

#[test]
fn a_deaf_observer_cannot_evict_anyone() {
    // Node 1 hears nothing but is heard: it suspects everyone, the witnesses disagree.
    let mut sim = started(seed(9), 5, NetConfig::default());
    let ids: Vec<_> = (0..5).map(|i| sim.id(i).unwrap()).collect();
    sim.set_deaf(1, true);
    sim.run_for(Duration::from_secs(6));
    for i in [0, 2, 3, 4] {
        let v = sim.view(i).unwrap();
        for (j, id) in ids.iter().enumerate() {
            if j != 1 {
                assert!(v.contains(id), "node {j} evicted: {}", sim.describe());
            }
        }
    }
    sim.set_deaf(1, false);
    sim.run_until_converged(Duration::from_secs(6));
}

#[test]
fn random_faults_keep_views_consistent_and_heal() {
    // Many seeds, each a different storm of loss, pauses, crashes, restarts and partitions;
    // the invariants are checked after every step, convergence after the storm.
    // GROUP_SIM_BASE moves the window of seeds explored; GROUP_SIM_RUNS=1000 explores more
    // seeds (CI runs 12).
    // 2092363: a member that never received the view it was in was the one to decide on
    // the dead coordinator, and nobody passed it the view. 3014398: the one to decide was
    // in another group, whose answers did not count as its leaving ours.
    for s in seeds(100, 12, &[2_092_363, 3_014_398]) {
        let mut sim = Sim::new(s, 12, lossy(0.05), GroupConfig::default());
        sim.start_all();
        let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::seed_from_u64(s);
        use rand::Rng;
        for _ in 0..20 {
            let i = rng.random_range(0..sim.len());
            let what = rng.random_range(0..6);
            if std::env::var_os("GROUP_SIM_PRINT").is_some() {
                println!("fault {what} on {i}: {}", sim.describe());
            }
            match what {
                0 => sim.crash(i),
                1 => {
                    if !sim.is_live(i) {
                        sim.start(i)
                    }
                }
                2 => sim.pause(i, ms(rng.random_range(100..5000))),
                3 => {
                    let cut = rng.random_range(1..sim.len() / 2);
                    let minority: Vec<usize> = (0..cut).map(|k| (i + k) % sim.len()).collect();
                    let majority: Vec<usize> =
                        (0..sim.len()).filter(|j| !minority.contains(j)).collect();
                    sim.set_partitions(&[&majority, &minority]);
                }
                4 => sim.heal(),
                _ => sim.stop(i),
            }
            sim.run_for(ms(rng.random_range(50..1500)));
        }
        sim.heal();
        for i in 0..sim.len() {
            if !sim.is_live(i) && rng.random_bool(0.5) {
                sim.start(i);
            }
        }
        sim.run_for(Duration::from_secs(6));
        sim.run_until_converged(Duration::from_secs(20));
    }
}

#[test]
fn hundred_nodes_with_faults_stay_consistent_and_heal() {
    let s = seed(200);
    let mut sim = Sim::new(s, 100, lossy(0.02), GroupConfig::default());
    sim.start_all();
    sim.run_until_converged(Duration::from_secs(10));
    let removals = sim.removals();
    // A quiet lossy period removes no one.
    sim.run_for(Duration::from_secs(5));
    assert_eq!(
        sim.removals(),
        removals,
        "false removal: {}",
        sim.describe()
    );
    for i in 0..5 {
        sim.crash(i * 7);
    }
    sim.pause(50, Duration::from_secs(5));
    sim.set_partitions(&[&(0..90).collect::<Vec<_>>(), &(90..100).collect::<Vec<_>>()]);
    sim.run_for(Duration::from_secs(4));
    sim.heal();
    sim.run_for(Duration::from_secs(3));
    sim.run_until_converged(Duration::from_secs(20));
    assert_eq!(sim.view(1).unwrap().members.len(), 95);
}

#[test]
fn host_checks_remove_a_dead_process_and_leave_a_hung_one_without_the_ring() {
    let config = GroupConfig {
        host_check: true,
        ..GroupConfig::default()
    };
    let mut sim = Sim::new(seed(11), 5, NetConfig::default(), config);
    sim.ring = false;
    sim.start_all();
    sim.run_until_converged(Duration::from_secs(5));
    // Without the ring a crash is found by silence; the host check (the host refuses)
    // removes it without waiting for witnesses.
    sim.crash(3);
    let took = sim.run_until_converged(Duration::from_secs(5));
    assert!(took <= ms(2300), "took {took:?}");
    let checks: u64 = (0..5)
        .filter_map(|i| sim.node(i))
        .map(|n| n.stats().host_checks)
        .sum();
    assert!(checks >= 1, "no host check was made");
    // A hung process still answers on its host: shorter than the timeout, it stays.
    let removals = sim.removals();
    sim.pause(1, ms(900));
    sim.run_for(Duration::from_secs(3));
    assert_eq!(sim.removals(), removals, "{}", sim.describe());
}

#[test]
fn a_starved_node_holds_its_suspicions_back() {
    // Two nodes; then node 0 alone, driven by hand, hears nothing more from node 1.
    let mut sim = started(seed(12), 2, NetConfig::default());
    let t0 = sim.now;
    let mut punctual = sim.take_node(0).unwrap();
    let mut late = sim.take_node(1).unwrap();
    let other_of = |g: &super::Group| {
        g.view()
            .unwrap()
            .members
            .iter()
            .find(|m| m.id != g.local().id)
            .unwrap()
            .id
    };
    let (punctual_other, late_other) = (other_of(&punctual), other_of(&late));

    // Its timers fire on time: after the suspect timeout the silent peer is removed (a
    // group of two needs no further witness).
    let mut t = t0;
    while t < t0 + Duration::from_secs(4) {
        t += ms(100);
        punctual.handle_timeout(t);
    }
    assert!(!punctual.view().unwrap().contains(&punctual_other));

    // Its timers fire 4 s late (the process was stalled): the same silence is not
    // evidence, and nothing is sent or removed for a suspect timeout afterwards.
    late.handle_timeout(t0 + Duration::from_secs(4));
    let mut t = t0 + Duration::from_secs(4);
    while t < t0 + Duration::from_secs(5) {
        t += ms(100);
        late.handle_timeout(t);
    }
    assert!(late.view().unwrap().contains(&late_other));
    assert!(late.stats().suspicions_held_back > 0);
    assert_eq!(late.stats().suspicions_sent, 0);
}

/// The reproduction: a host's link is cut for 3.6 s. The others remove it; alone,
/// it forms a group of one and queues messages towards the others (its view, its
/// suspicions) that wait in their connections. The link returns, it merges back under a
/// new id, and then the queued frames of its old incarnation arrive, and the answers to
/// them reach the new incarnation at the same address. None of that may remove anyone.
#[test]
fn a_node_cut_off_alone_cannot_evict_anyone_after_it_rejoins() {
    let base = base(300);
    for run in 0..runs(20) {
        let s = base + run;
        let mut sim = started(s, 7, NetConfig::default());
        let before: Vec<_> = (0..7).map(|i| sim.id(i).unwrap()).collect();
        let cut = 2;
        sim.set_partitions(&[&[0, 1, 3, 4, 5, 6], &[cut]]);
        sim.run_for(ms(3600));
        sim.heal();
        sim.run_until_converged(Duration::from_secs(5));
        // Quiet seconds after the rejoin: the removals came about 1 s after it.
        sim.run_for(Duration::from_secs(5));
        sim.run_until_converged(Duration::from_secs(5));
        for (i, id) in before.iter().enumerate() {
            if i != cut {
                assert_eq!(
                    sim.id(i),
                    Some(*id),
                    "seed {s}: node {i} was never faulted but was removed: {}",
                    sim.describe()
                );
            }
        }
        assert!(sim.rejoins(cut) >= 1, "seed {s}: {}", sim.describe());
    }
}

/// The first seed of a multi-seed test: `GROUP_SIM_SEED` (to replay one), else
/// `GROUP_SIM_BASE` (to explore another window of seeds), else `default`.
fn base(default: u64) -> u64 {
    if std::env::var("GROUP_SIM_SEED").is_ok() {
        return seed(default);
    }
    std::env::var("GROUP_SIM_BASE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// How many seeds a multi-seed test runs: `GROUP_SIM_RUNS` (one with `GROUP_SIM_SEED`).
fn runs(default: u64) -> u64 {
    if std::env::var("GROUP_SIM_SEED").is_ok() {
        return 1;
    }
    std::env::var("GROUP_SIM_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The seeds a multi-seed test runs: the window from [`base`] of [`runs`] seeds, then
/// (unless one seed is replayed) the seeds that once failed.
fn seeds(default_base: u64, default_runs: u64, regressions: &[u64]) -> Vec<u64> {
    let base = base(default_base);
    let mut all: Vec<u64> = (base..base + runs(default_runs)).collect();
    if std::env::var("GROUP_SIM_SEED").is_err() {
        all.extend_from_slice(regressions);
    }
    all
}

/// The operator's bad day of the real-process nemesis, in simulation: seven nodes, one or
/// two faults at a time (kill -9 and restart, pauses, one host cut off, a 2 | 5
/// partition), never more than two hosts faulty, each fault healed before the next. After
/// every heal all live nodes agree on one view of exactly them within 3 s
/// (`GROUP_SIM_PRINT=1` prints each time), and no node that was not faulted was ever
/// removed (it keeps its id throughout).
#[test]
fn nemesis_never_removes_a_member_that_was_not_faulted() {
    use rand::Rng;
    // 2009367: a coordinator resumed from a pause took the answers of members that had
    // moved on as leaves and installed a view of itself and one lagging member.
    // 5001477: the member taking over from a paused coordinator removed it although it was
    // heard again before the view went out; the coordinator's own view split the group.
    for s in seeds(1_000, 40, &[2_009_367, 5_001_477]) {
        let net = lossy(0.02);
        let mut sim = started(s, 7, net);
        let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::seed_from_u64(s);
        for fault in 0..12 {
            let ids: Vec<_> = (0..7).map(|i| sim.id(i)).collect();
            let first = rng.random_range(0..7);
            let mut faulty = vec![first];
            if rng.random_bool(0.3) {
                let second = (first + rng.random_range(1..7)) % 7;
                faulty.push(second);
            }
            let kind = rng.random_range(0..4);
            let lasts = match kind {
                // kill -9, restarted after 1-4 s.
                0 => {
                    for &i in &faulty {
                        sim.crash(i);
                    }
                    let d = ms(rng.random_range(1000..4000));
                    sim.run_for(d);
                    for &i in &faulty {
                        sim.start(i);
                    }
                    d
                }
                // SIGSTOP for 0.5-6 s.
                1 => {
                    let d = ms(rng.random_range(500..6000));
                    for &i in &faulty {
                        sim.pause(i, d);
                    }
                    sim.run_for(d);
                    d
                }
                // The faulty hosts' links cut for 2-8 s (each alone).
                2 => {
                    let rest: Vec<usize> = (0..7).filter(|i| !faulty.contains(i)).collect();
                    let mut sides: Vec<&[usize]> = vec![&rest];
                    let singles: Vec<[usize; 1]> = faulty.iter().map(|&i| [i]).collect();
                    sides.extend(singles.iter().map(|s| &s[..]));
                    sim.set_partitions(&sides);
                    let d = ms(rng.random_range(2000..8000));
                    sim.run_for(d);
                    sim.heal();
                    d
                }
                // A 2 | 5 partition for 3-8 s.
                _ => {
                    if faulty.len() == 1 {
                        faulty.push((first + 1) % 7);
                    }
                    let rest: Vec<usize> = (0..7).filter(|i| !faulty.contains(i)).collect();
                    sim.set_partitions(&[&rest, &faulty]);
                    let d = ms(rng.random_range(3000..8000));
                    sim.run_for(d);
                    sim.heal();
                    d
                }
            };
            // One view of exactly the live nodes soon after the heal: merging back takes a
            // few round trips, not rounds of rejoins (each costs a join retry).
            let took = sim.run_until_converged(Duration::from_secs(10));
            if std::env::var_os("GROUP_SIM_PRINT").is_some() {
                println!("converged {} ms kind {kind}", took.as_millis());
            }
            assert!(
                took <= Duration::from_secs(3),
                "seed {s}, fault {fault} (kind {kind}, hosts {faulty:?}, {lasts:?}): \
                 converged only {took:?} after the heal"
            );
            sim.run_for(Duration::from_secs(3));
            sim.run_until_converged(Duration::from_secs(5));
            for i in (0..7).filter(|i| !faulty.contains(i)) {
                assert_eq!(
                    sim.id(i),
                    ids[i],
                    "seed {s}, fault {fault} (kind {kind}, hosts {faulty:?}, {lasts:?}, \
                     converged in {took:?}): node {i} was not faulted but was removed: {}",
                    sim.describe()
                );
            }
        }
    }
}
