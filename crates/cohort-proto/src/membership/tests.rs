//! Tests of the heartbeat member list, in virtual time.

use std::net::{IpAddr, Ipv4Addr};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::*;

fn record(port: i32, id: u8, domain: &'static [u8]) -> MemberRecord {
    MemberRecord {
        alive_ms: 0,
        tcp_port: port,
        secure_port: -1,
        udp_port: -1,
        host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        command: Bytes::new(),
        domain: Bytes::from_static(domain),
        unique_id: [id; 16],
        payload: Bytes::new(),
    }
}

fn node(port: i32, id: u8, now: Instant) -> Membership {
    Membership::new(MembershipConfig::default(), record(port, id, b"d"), now)
}

/// Delivers every queued datagram of `from` to each of `to`.
fn flush(from: &mut Membership, to: &mut [&mut Membership], now: Instant) {
    while let Some(d) = from.poll_transmit() {
        for t in to.iter_mut() {
            let _ = t.handle_datagram(now, &d);
        }
    }
}

fn events(m: &mut Membership) -> Vec<MembershipEvent> {
    std::iter::from_fn(|| m.poll_event()).collect()
}

#[test]
fn first_heartbeat_is_due_at_start_and_peers_are_added_once() {
    let t0 = Instant::now();
    let mut a = node(4000, 1, t0);
    let mut b = node(4001, 2, t0);
    assert_eq!(a.poll_timeout(), Some(t0));
    a.handle_timeout(t0);
    b.handle_timeout(t0);
    flush(&mut a, &mut [&mut b], t0);
    flush(&mut b, &mut [&mut a], t0);
    let ev = events(&mut b);
    assert!(
        matches!(&ev[..], [MembershipEvent::MemberAdded(m)] if m.id == MemberId([1; 16]) && m.addr.port() == 4000)
    );
    assert_eq!(events(&mut a).len(), 1);
    // Later heartbeats refresh the member without new events.
    let t1 = t0 + Duration::from_millis(500);
    a.handle_timeout(t1);
    flush(&mut a, &mut [&mut b], t1);
    assert!(events(&mut b).is_empty());
    assert_eq!(b.members().count(), 1);
}

#[test]
fn silent_member_is_dropped_after_drop_time() {
    let t0 = Instant::now();
    let mut a = node(4000, 1, t0);
    let mut b = node(4001, 2, t0);
    a.handle_timeout(t0);
    flush(&mut a, &mut [&mut b], t0);
    let _ = events(&mut b);
    let almost = t0 + Duration::from_millis(2999);
    b.handle_timeout(almost);
    assert!(events(&mut b).is_empty());
    let due = b.poll_timeout().unwrap();
    assert!(due <= t0 + Duration::from_millis(3000));
    let t3 = t0 + Duration::from_millis(3000);
    b.handle_timeout(t3);
    let ev = events(&mut b);
    assert!(matches!(
        &ev[..],
        [MembershipEvent::MemberDisappeared {
            reason: DisappearReason::Timeout,
            ..
        }]
    ));
    assert_eq!(b.members().count(), 0);
}

#[test]
fn shutdown_packet_removes_member_at_once_and_stops_beats() {
    let t0 = Instant::now();
    let mut a = node(4000, 1, t0);
    let mut b = node(4001, 2, t0);
    a.handle_timeout(t0);
    flush(&mut a, &mut [&mut b], t0);
    let _ = events(&mut b);
    let t1 = t0 + Duration::from_millis(100);
    a.shutdown(t1);
    let packet = a.poll_transmit().unwrap();
    let decoded = MemberRecord::decode(&packet, &MemberLimits::default()).unwrap();
    assert!(decoded.is_shutdown());
    assert_eq!(decoded.alive_ms, 100);
    b.handle_datagram(t1, &packet).unwrap();
    let ev = events(&mut b);
    assert!(matches!(
        &ev[..],
        [MembershipEvent::MemberDisappeared {
            reason: DisappearReason::Shutdown,
            ..
        }]
    ));
    assert_eq!(a.poll_timeout(), None);
    a.handle_timeout(t1 + Duration::from_secs(10));
    assert!(a.poll_transmit().is_none());
}

#[test]
fn foreign_domain_is_filtered_unless_disabled() {
    let t0 = Instant::now();
    let mut other = Membership::new(MembershipConfig::default(), record(4009, 9, b"other"), t0);
    other.handle_timeout(t0);
    let packet = other.poll_transmit().unwrap();

    let mut filtered = node(4000, 1, t0);
    assert_eq!(
        filtered.handle_datagram(t0, &packet),
        Err(DatagramError::ForeignDomain)
    );
    assert_eq!(filtered.members().count(), 0);
    assert_eq!(filtered.stats().foreign_domain, 1);

    let config = MembershipConfig {
        domain_filter: false,
        ..Default::default()
    };
    let mut open = Membership::new(config, record(4001, 2, b"d"), t0);
    open.handle_datagram(t0, &packet).unwrap();
    assert_eq!(open.members().count(), 1);
}

#[test]
fn own_heartbeats_and_garbage_are_ignored_and_counted() {
    let t0 = Instant::now();
    let mut a = node(4000, 1, t0);
    a.handle_timeout(t0);
    let own = a.poll_transmit().unwrap();
    a.handle_datagram(t0, &own).unwrap();
    assert!(matches!(
        a.handle_datagram(t0, &Bytes::from_static(b"junk")),
        Err(DatagramError::Malformed(_))
    ));
    let mut bad_port = record(70_000, 5, b"d");
    bad_port.alive_ms = 1;
    assert!(matches!(
        a.handle_datagram(t0, &bad_port.to_bytes()),
        Err(DatagramError::InvalidMember(
            InvalidMemberRecord::TcpPortOutOfRange(70_000)
        ))
    ));
    let s = a.stats();
    assert_eq!((s.received, s.own, s.malformed, s.accepted), (3, 1, 2, 0));
    assert_eq!(a.members().count(), 0);
    assert!(events(&mut a).is_empty());
}

#[test]
fn restarted_member_replaces_old_one_on_same_address() {
    let t0 = Instant::now();
    let mut b = node(4001, 2, t0);
    b.handle_datagram(t0, &record(4000, 1, b"d").to_bytes())
        .unwrap();
    b.handle_datagram(t0, &record(4000, 7, b"d").to_bytes())
        .unwrap();
    let ev = events(&mut b);
    assert_eq!(ev.len(), 3);
    assert!(
        matches!(&ev[1], MembershipEvent::MemberDisappeared { member, reason: DisappearReason::Restarted } if member.id == MemberId([1; 16]))
    );
    assert!(matches!(&ev[2], MembershipEvent::MemberAdded(m) if m.id == MemberId([7; 16])));
}

#[test]
fn late_timer_does_not_burst_heartbeats() {
    let t0 = Instant::now();
    let mut a = node(4000, 1, t0);
    a.handle_timeout(t0);
    let _ = a.poll_transmit();
    // The process was paused for 5 s: one beat, then the rhythm resumes from now.
    let late = t0 + Duration::from_secs(5);
    a.handle_timeout(late);
    assert!(a.poll_transmit().is_some());
    assert!(a.poll_transmit().is_none());
    assert_eq!(a.poll_timeout(), Some(late + Duration::from_millis(500)));
}

/// A seeded cluster: `n` nodes, 10 % multicast loss, one killed mid-run. (At 20 % loss six
/// beats in a row are lost often enough over this many runs that a removal is correct.) Every survivor must
/// see every other survivor, and drop the dead one no later than drop time + one beat.
#[test]
fn simulated_lossy_cluster_discovers_and_drops() {
    for seed in 0..20u64 {
        let mut rng = SmallRng::seed_from_u64(seed);
        let t0 = Instant::now();
        let n = 8;
        let mut nodes: Vec<Membership> = (0..n)
            .map(|i| node(4000 + i as i32, i as u8 + 1, t0))
            .collect();
        let mut alive = vec![true; n];
        let step = Duration::from_millis(10);
        let mut now = t0;
        let kill_at = t0 + Duration::from_secs(5);
        let victim = rng.random_range(0..n);
        let mut dropped_at: Vec<Option<Instant>> = vec![None; n];
        while now < t0 + Duration::from_secs(12) {
            if now >= kill_at {
                alive[victim] = false;
            }
            for i in 0..n {
                if !alive[i] {
                    continue;
                }
                if nodes[i].poll_timeout().is_some_and(|t| t <= now) {
                    nodes[i].handle_timeout(now);
                }
                while let Some(d) = nodes[i].poll_transmit() {
                    for j in 0..n {
                        if j != i && alive[j] && rng.random_bool(0.9) {
                            let _ = nodes[j].handle_datagram(now, &d);
                        }
                    }
                }
                while let Some(ev) = nodes[i].poll_event() {
                    if let MembershipEvent::MemberDisappeared { member, reason } = ev {
                        assert_eq!(
                            member.id,
                            MemberId([victim as u8 + 1; 16]),
                            "seed {seed}: false removal at {:?} by {i}",
                            now - t0
                        );
                        assert_eq!(reason, DisappearReason::Timeout);
                        dropped_at[i] = Some(now);
                    }
                }
            }
            if now == t0 + Duration::from_secs(4) {
                for (i, m) in nodes.iter().enumerate() {
                    assert_eq!(
                        m.members().count(),
                        n - 1,
                        "seed {seed}: node {i} misses members"
                    );
                }
            }
            now += step;
        }
        for i in (0..n).filter(|&i| i != victim) {
            let at = dropped_at[i]
                .unwrap_or_else(|| panic!("seed {seed}: node {i} kept the dead member"));
            assert!(
                at - kill_at <= Duration::from_millis(3500),
                "seed {seed}: node {i} took {:?}",
                at - kill_at
            );
        }
    }
}

#[test]
fn a_newcomer_is_answered_at_once_not_a_whole_interval_later() {
    let t0 = Instant::now();
    let mut old = node(4000, 1, t0);
    old.handle_timeout(t0);
    let _ = old.poll_transmit();
    // A newcomer starts 100 ms later; the old member's next beat is due at 500 ms.
    let t1 = t0 + Duration::from_millis(100);
    let mut new = node(4001, 2, t1);
    new.handle_timeout(t1);
    flush(&mut new, &mut [&mut old], t1);
    assert_eq!(old.poll_timeout(), Some(t1), "answer due now");
    old.handle_timeout(t1);
    flush(&mut old, &mut [&mut new], t1);
    assert!(
        matches!(&events(&mut new)[..], [MembershipEvent::MemberAdded(m)] if m.id == MemberId([1; 16]))
    );
    // The rhythm resumes from the answer.
    assert_eq!(old.poll_timeout(), Some(t1 + Duration::from_millis(500)));
    // Two newcomers heard before the answer goes out share one answer.
    let t2 = t1 + Duration::from_millis(10);
    for id in [3, 4] {
        let mut newer = node(4000 + i32::from(id), id, t2);
        newer.handle_timeout(t2);
        flush(&mut newer, &mut [&mut old], t2);
    }
    assert_eq!(old.poll_timeout(), Some(t2));
    old.handle_timeout(t2);
    assert!(old.poll_transmit().is_some());
    assert!(old.poll_transmit().is_none());
}

/// A tiny seeded network of membership cores: per-step delivery with loss and delay,
/// partitions (a node cut off both ways) and pauses (a node that neither runs nor
/// receives, like a process under SIGSTOP).
struct Sim {
    nodes: Vec<Membership>,
    cut: Vec<bool>,
    paused: Vec<bool>,
    /// Datagrams in flight: (deliver at, to, bytes).
    wire: Vec<(Instant, usize, Bytes)>,
    rng: SmallRng,
    now: Instant,
    loss: f64,
    events: Vec<Vec<(Instant, MembershipEvent)>>,
}

impl Sim {
    fn new(n: usize, seed: u64, loss: f64) -> Self {
        let now = Instant::now();
        Self {
            nodes: (0..n)
                .map(|i| node(4000 + i as i32, i as u8 + 1, now))
                .collect(),
            cut: vec![false; n],
            paused: vec![false; n],
            wire: Vec::new(),
            rng: SmallRng::seed_from_u64(seed),
            now,
            loss,
            events: vec![Vec::new(); n],
        }
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += Duration::from_millis(5);
            let now = self.now;
            let (due, later): (Vec<_>, Vec<_>) =
                self.wire.drain(..).partition(|(at, _, _)| *at <= now);
            self.wire = later;
            for (_, to, bytes) in due {
                if !self.paused[to] && !self.cut[to] {
                    let _ = self.nodes[to].handle_datagram(now, &bytes);
                }
            }
            for i in 0..self.nodes.len() {
                if self.paused[i] {
                    continue;
                }
                if self.nodes[i].poll_timeout().is_some_and(|t| t <= now) {
                    self.nodes[i].handle_timeout(now);
                }
                while let Some(d) = self.nodes[i].poll_transmit() {
                    for j in 0..self.nodes.len() {
                        if j == i || self.cut[i] || self.rng.random_bool(self.loss) {
                            continue;
                        }
                        let delay = Duration::from_millis(self.rng.random_range(0..20));
                        self.wire.push((now + delay, j, d.clone()));
                    }
                }
                while let Some(ev) = self.nodes[i].poll_event() {
                    self.events[i].push((now, ev));
                }
            }
        }
    }

    fn sees(&self, i: usize, j: usize) -> bool {
        self.nodes[i].member(&MemberId([j as u8 + 1; 16])).is_some()
    }
}

#[test]
fn simulated_partition_drops_both_ways_and_heals() {
    for seed in 0..10 {
        let mut sim = Sim::new(5, seed, 0.05);
        sim.run_for(Duration::from_secs(2));
        assert!(
            (0..5).all(|i| sim.nodes[i].members().count() == 4),
            "seed {seed}"
        );
        sim.cut[4] = true;
        let cut_at = sim.now;
        sim.run_for(Duration::from_millis(3600));
        for i in 0..4 {
            assert!(
                !sim.sees(i, 4),
                "seed {seed}: {i} still lists the cut-off node"
            );
            let (at, _) = sim.events[i]
                .iter()
                .find(|(_, e)| matches!(e, MembershipEvent::MemberDisappeared { member, .. } if member.id == MemberId([5; 16])))
                .unwrap();
            assert!(
                *at > cut_at + Duration::from_millis(1500),
                "seed {seed}: dropped too early"
            );
            // Nobody else was ever removed on the connected side.
            assert!(
                sim.events[i].iter().all(|(_, e)| match e {
                    MembershipEvent::MemberDisappeared { member, .. } =>
                        member.id == MemberId([5; 16]),
                    MembershipEvent::MemberAdded(_) => true,
                }),
                "seed {seed}: false removal at node {i}"
            );
        }
        assert_eq!(
            sim.nodes[4].members().count(),
            0,
            "seed {seed}: the cut-off node drops everyone"
        );
        sim.cut[4] = false;
        sim.run_for(Duration::from_secs(1));
        assert!(
            (0..5).all(|i| sim.nodes[i].members().count() == 4),
            "seed {seed}: not healed"
        );
    }
}

#[test]
fn simulated_pause_shorter_than_drop_time_is_tolerated_longer_is_not() {
    for seed in 0..10 {
        let mut sim = Sim::new(4, seed, 0.0);
        sim.run_for(Duration::from_secs(1));
        sim.paused[2] = true;
        sim.run_for(Duration::from_millis(2000));
        sim.paused[2] = false;
        sim.run_for(Duration::from_millis(600));
        let removals = |sim: &Sim| {
            sim.events
                .iter()
                .flatten()
                .filter(|(_, e)| matches!(e, MembershipEvent::MemberDisappeared { .. }))
                .count()
        };
        assert_eq!(
            removals(&sim),
            0,
            "seed {seed}: a 2 s pause must not remove anyone"
        );

        sim.paused[2] = true;
        sim.run_for(Duration::from_millis(4000));
        assert!(
            (0..4).filter(|&i| i != 2).all(|i| !sim.sees(i, 2)),
            "seed {seed}: 4 s pause not noticed"
        );
        sim.paused[2] = false;
        sim.run_for(Duration::from_millis(600));
        // The paused node comes back by itself (same id: the process never restarted).
        assert!(
            (0..4).filter(|&i| i != 2).all(|i| sim.sees(i, 2)),
            "seed {seed}: not back after resume"
        );
    }
}

#[test]
fn last_accepted_names_the_member_heard_and_a_new_identity_restarts_us() {
    let t0 = Instant::now();
    let mut a = node(4000, 1, t0);
    let mut b = node(4001, 2, t0);
    a.handle_timeout(t0);
    let beat = a.poll_transmit().unwrap();
    b.handle_datagram(t0, &beat).unwrap();
    assert_eq!(b.last_accepted().map(|m| m.id), Some(MemberId([1; 16])));
    assert!(b.handle_datagram(t0, &Bytes::from_static(b"junk")).is_err());
    assert_eq!(b.last_accepted(), None);

    // `a` rejoins under a new id: its next beat is due at once and carries the new id, so
    // `b` sees a new member at the same address and drops the old one as restarted.
    let _ = events(&mut b);
    let t1 = t0 + Duration::from_millis(100);
    a.set_local_id(MemberId([9; 16]), t1);
    assert_eq!(a.poll_timeout(), Some(t1));
    a.handle_timeout(t1);
    flush(&mut a, &mut [&mut b], t1);
    assert_eq!(a.local_record(t1).alive_ms, 0);
    let ev = events(&mut b);
    assert!(ev.iter().any(|e| matches!(e, MembershipEvent::MemberDisappeared { member, reason: DisappearReason::Restarted } if member.id == MemberId([1; 16]))), "{ev:?}");
    assert!(
        ev.iter()
            .any(|e| matches!(e, MembershipEvent::MemberAdded(m) if m.id == MemberId([9; 16])))
    );
}
