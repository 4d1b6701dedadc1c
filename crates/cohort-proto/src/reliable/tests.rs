//! Seeded simulations of whole groups: no sockets, virtual time, a network that loses,
//! duplicates and reorders datagrams. A failing run prints its seed; set
//! `RELIABLE_SIM_SEED=<seed>` to replay just that one, or `RELIABLE_SIM_RUNS=<n>` to run
//! `n` seeds per test instead of the few that CI runs (a soak).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};

use super::*;
use crate::group::{GroupMember, View, ViewId};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The seeds to run: the one in `RELIABLE_SIM_SEED`, else `count` seeds from `first`
/// (`RELIABLE_SIM_RUNS` of them if set).
fn seeds(first: u64, count: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("RELIABLE_SIM_SEED") {
        return vec![s.parse().expect("RELIABLE_SIM_SEED must be a number")];
    }
    let count = match std::env::var("RELIABLE_SIM_RUNS") {
        Ok(n) => n.parse().expect("RELIABLE_SIM_RUNS must be a number"),
        Err(_) => count,
    };
    (first..first + count).collect()
}

/// Runs `run(seed)` for each seed; on a panic, names the seed and how to replay it.
fn for_seeds(first: u64, count: u64, run: impl Fn(u64)) {
    for seed in seeds(first, count) {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(seed)));
        if let Err(e) = result {
            eprintln!("simulation failed with seed {seed}; replay: RELIABLE_SIM_SEED={seed}");
            std::panic::resume_unwind(e);
        }
    }
}

/// A message as the simulation encodes it: sender index, counter, out-of-band flag,
/// unicast flag, then filler.
fn message(sender: usize, counter: u64, oob: bool, unicast: bool, filler: usize) -> Bytes {
    let mut v = Vec::with_capacity(18 + filler);
    v.extend_from_slice(&(sender as u64).to_be_bytes());
    v.extend_from_slice(&counter.to_be_bytes());
    v.push(u8::from(oob));
    v.push(u8::from(unicast));
    v.extend((0..filler).map(|i| (i as u8) ^ (counter as u8)));
    Bytes::from(v)
}

fn parse(payload: &[u8]) -> (usize, u64, bool, bool) {
    assert!(payload.len() >= 18, "short message");
    let sender = u64::from_be_bytes(payload[..8].try_into().unwrap()) as usize;
    let counter = u64::from_be_bytes(payload[8..16].try_into().unwrap());
    for (i, b) in payload[18..].iter().enumerate() {
        assert_eq!(*b, (i as u8) ^ (counter as u8), "corrupted filler");
    }
    (sender, counter, payload[16] == 1, payload[17] == 1)
}

struct Node {
    r: Reliable,
    id: MemberId,
    alive: bool,
    /// Polls deliveries (a slow receiver does not).
    draining: bool,
    /// (sender index, counter, oob, unicast) in delivery order.
    delivered: Vec<(usize, u64, bool, bool)>,
    /// The view seq the node is in.
    view_seq: u64,
    /// The first view it was a member of.
    first_view: Option<u64>,
    sent: u64,
}

struct Net {
    rng: SmallRng,
    now: Instant,
    loss: f64,
    duplicate: f64,
    max_delay: Duration,
    /// (arrival, tie-break) -> (from, to, datagram)
    in_flight: BinaryHeap<Reverse<(Instant, u64, usize, usize)>>,
    datagrams: HashMap<u64, Bytes>,
    next_id: u64,
    nodes: Vec<Node>,
    /// Directed links that drop everything.
    cut: HashSet<(usize, usize)>,
    /// Every member's outgoing link sends this many bytes per second and queues at most
    /// this long; what does not fit is lost (`None`: no limit).
    bottleneck: Option<(f64, Duration)>,
    /// When each member's outgoing link is free again (with a bottleneck).
    link_free: HashMap<usize, Instant>,
    /// Members take their deliveries in batches (`poll_deliveries`, odd seeds) rather
    /// than one by one (`poll_delivery`).
    batched: bool,
}

impl Net {
    fn new(seed: u64, loss: f64, duplicate: f64, max_delay: Duration) -> Self {
        Self {
            rng: SmallRng::seed_from_u64(seed),
            now: Instant::now(),
            loss,
            duplicate,
            max_delay,
            in_flight: BinaryHeap::new(),
            datagrams: HashMap::new(),
            next_id: 0,
            nodes: Vec::new(),
            cut: HashSet::new(),
            bottleneck: None,
            link_free: HashMap::new(),
            batched: seed % 2 == 1,
        }
    }

    fn add_node(&mut self, config: &ReliableConfig) -> usize {
        let id = MemberId::random(&mut self.rng);
        let config = ReliableConfig {
            rng_seed: self.rng.next_u64(),
            ..config.clone()
        };
        self.nodes.push(Node {
            r: Reliable::new(config, id, self.now),
            id,
            alive: true,
            draining: true,
            delivered: Vec::new(),
            view_seq: 0,
            first_view: None,
            sent: 0,
        });
        self.nodes.len() - 1
    }

    fn view(&self, seq: u64, members: &[usize]) -> View {
        View {
            id: ViewId {
                seq,
                coordinator: self.nodes[members[0]].id,
            },
            members: members
                .iter()
                .map(|i| GroupMember {
                    id: self.nodes[*i].id,
                    addr: SocketAddr::from(([127, 0, 0, 1], 5000 + *i as u16)),
                })
                .collect(),
        }
    }

    fn install(&mut self, node: usize, view: &View) {
        let now = self.now;
        let n = &mut self.nodes[node];
        n.r.install_view(view, now);
        n.view_seq = view.id.seq;
        if !view.contains(&n.id) {
            n.alive = false;
        } else if n.first_view.is_none() {
            n.first_view = Some(view.id.seq);
        }
    }

    fn index_of(&self, id: MemberId) -> usize {
        self.nodes.iter().position(|n| n.id == id).unwrap()
    }

    /// Drains a node's outputs into the network and its deliveries into its log.
    fn drain(&mut self, i: usize) {
        while let Some(t) = self.nodes[i].r.poll_transmit() {
            let targets: Vec<usize> = match t.to {
                Destination::Group => (0..self.nodes.len()).filter(|j| *j != i).collect(),
                Destination::Member(id) => vec![self.index_of(id)],
            };
            assert!(t.datagram.len() <= self.nodes[i].r.config().max_datagram_size);
            // Through the sender's link first (once, like a multicast on a switch).
            let mut departs = self.now;
            if let Some((rate, queue)) = self.bottleneck {
                let free = self
                    .link_free
                    .get(&i)
                    .copied()
                    .unwrap_or(self.now)
                    .max(self.now);
                if free - self.now > queue {
                    continue;
                }
                departs = free + Duration::from_secs_f64(t.datagram.len() as f64 / rate);
                self.link_free.insert(i, departs);
            }
            for j in targets {
                if !self.nodes[j].alive
                    || self.cut.contains(&(i, j))
                    || self.rng.random_bool(self.loss)
                {
                    continue;
                }
                let copies = if self.rng.random_bool(self.duplicate) {
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    let delay = self.rng.random_range(Duration::ZERO..=self.max_delay);
                    let id = self.next_id;
                    self.next_id += 1;
                    self.datagrams.insert(id, t.datagram.clone());
                    self.in_flight.push(Reverse((departs + delay, id, i, j)));
                }
            }
        }
        if self.nodes[i].draining {
            let mut taken = Vec::new();
            if self.batched {
                while self.nodes[i].r.poll_deliveries(&mut taken, 7) > 0 {}
            } else {
                taken.extend(std::iter::from_fn(|| self.nodes[i].r.poll_delivery()));
            }
            for d in taken {
                let (sender, counter, oob, unicast) = parse(&d.payload);
                assert_eq!(d.oob, oob, "oob flag");
                assert_eq!(d.unicast, unicast, "unicast flag");
                assert_eq!(self.nodes[sender].id, d.from, "sender");
                self.nodes[i]
                    .delivered
                    .push((sender, counter, oob, unicast));
            }
        }
    }

    /// Runs the network and timers until `until`.
    fn run_until(&mut self, until: Instant) {
        loop {
            for i in 0..self.nodes.len() {
                if self.nodes[i].alive {
                    self.drain(i);
                }
            }
            let next_arrival = self.in_flight.peek().map(|Reverse((t, ..))| *t);
            let next_timer = self
                .nodes
                .iter()
                .filter(|n| n.alive)
                .filter_map(|n| n.r.poll_timeout())
                .min();
            let next = match (next_arrival, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => break,
                },
            };
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            let now = self.now;
            while let Some(Reverse((t, id, from, to))) = self.in_flight.peek().copied() {
                if t > now {
                    break;
                }
                self.in_flight.pop();
                let datagram = self.datagrams.remove(&id).unwrap();
                let from_id = self.nodes[from].id;
                let node = &mut self.nodes[to];
                if node.alive {
                    node.r
                        .handle_datagram(from_id, datagram, now)
                        .expect("well-formed datagram");
                }
            }
            for n in self.nodes.iter_mut().filter(|n| n.alive) {
                if n.r.poll_timeout().is_some_and(|t| t <= now) {
                    n.r.handle_timeout(now);
                }
            }
        }
        self.now = self.now.max(until);
    }
}

struct SentRecord {
    sender: usize,
    counter: u64,
    view_seq: u64,
    oob: bool,
    /// Unicast destination.
    to: Option<usize>,
}

/// N members under 20 % loss, duplication and reordering; members join and (gracefully)
/// leave meanwhile. Every member of a view delivers every message sent in it exactly
/// once, in per-sender order; buffers stay within their bounds.
#[test]
fn lossy_group_with_joins_and_leaves() {
    for_seeds(1, 6, |seed| run_lossy_group(seed, 3, 5));
}

/// The same with five members to start with and more view changes.
#[test]
fn larger_lossy_group() {
    for_seeds(50, 2, |seed| run_lossy_group(seed, 5, 8));
}

fn run_lossy_group(seed: u64, initial: usize, phases: usize) {
    {
        let config = ReliableConfig {
            credit_window: 64 << 10,
            ack_threshold: 16 << 10,
            max_delivery_queue: 64 << 10,
            max_retransmit_buffer: 128 << 10,
            max_message_size: 32 << 10,
            max_datagram_size: 1400,
            discard_delivered: seed % 2 == 0,
            nak_random_member: seed % 3 == 0,
            retransmit_by_multicast: seed % 4 == 1,
            nak_backoff: vec![ms(20), ms(40), ms(80)],
            nak_interval_after: ms(50),
            stable_interval: ms(20),
            ..ReliableConfig::default()
        };
        let mut net = Net::new(seed, 0.2, 0.1, ms(8));
        let mut members: Vec<usize> = (0..initial).map(|_| net.add_node(&config)).collect();
        let mut view_seq = 1;
        let v = net.view(view_seq, &members);
        for &m in &members {
            net.install(m, &v);
        }
        let mut sent: Vec<SentRecord> = Vec::new();
        // Each phase: send for a while, then change the view.
        for phase in 0..phases {
            let phase_end = net.now + ms(150);
            while net.now < phase_end {
                for &m in &members.clone() {
                    if net.rng.random_bool(0.5) {
                        continue;
                    }
                    let oob = net.rng.random_bool(0.1);
                    let filler = net.rng.random_range(0..3000);
                    let counter = net.nodes[m].sent;
                    let now = net.now;
                    let unicast_to = if net.rng.random_bool(0.2) {
                        let others: Vec<usize> =
                            members.iter().copied().filter(|o| *o != m).collect();
                        (!others.is_empty()).then(|| others[net.rng.random_range(0..others.len())])
                    } else {
                        None
                    };
                    let payload = message(m, counter, oob, unicast_to.is_some(), filler);
                    let result = match unicast_to {
                        Some(to) => {
                            let to_id = net.nodes[to].id;
                            net.nodes[m]
                                .r
                                .unicast(to_id, payload, SendOpts { oob }, now)
                        }
                        None => net.nodes[m].r.multicast(payload, SendOpts { oob }, now),
                    };
                    match result {
                        Ok(()) => {
                            net.nodes[m].sent += 1;
                            sent.push(SentRecord {
                                sender: m,
                                counter,
                                view_seq: net.nodes[m].view_seq,
                                oob,
                                to: unicast_to,
                            });
                        }
                        Err(SendError::NoCredit) => {}
                        Err(e) => panic!("send failed: {e}"),
                    }
                    net.nodes[m].r.flush(now);
                }
                let next = net.now + ms(1);
                net.run_until(next);
                for &m in &members {
                    let n = &net.nodes[m];
                    assert!(
                        n.r.multicast_buffer_bytes() <= config.credit_window,
                        "multicast retransmit buffer over its bound: {}",
                        n.r.multicast_buffer_bytes()
                    );
                    let s = n.r.stats();
                    assert!(
                        s.retransmit_buffer_bytes <= config.max_retransmit_buffer * members.len(),
                        "retransmit buffers: {}",
                        s.retransmit_buffer_bytes
                    );
                    assert!(
                        s.receive_buffer_bytes <= 2 * config.max_retransmit_buffer * members.len(),
                        "receive buffers: {}",
                        s.receive_buffer_bytes
                    );
                }
            }
            if phase == phases - 1 {
                break;
            }
            view_seq += 1;
            if phase % 2 == 0 {
                // A member joins.
                let j = net.add_node(&config);
                members.push(j);
            } else {
                // The oldest member leaves gracefully: it waits until everything it sent
                // was consumed by every member, then the view without it is installed.
                let leaver = members.remove(0);
                let deadline = net.now + Duration::from_secs(30);
                while net.nodes[leaver].r.stats().retransmit_buffer_bytes > 0 {
                    if net.now >= deadline {
                        for &m in members.iter().chain([&leaver]) {
                            eprintln!("{}", net.nodes[m].r.debug_state());
                        }
                        panic!("leaver never drained");
                    }
                    let next = net.now + ms(5);
                    net.run_until(next);
                }
                let v = net.view(view_seq, &members);
                net.install(leaver, &v);
            }
            // Members install the new view at slightly different times.
            let v = net.view(view_seq, &members);
            let mut order = members.clone();
            for k in (1..order.len()).rev() {
                order.swap(k, net.rng.random_range(0..=k));
            }
            for m in order {
                net.install(m, &v);
                let next = net.now + ms(net.rng.random_range(0..5));
                net.run_until(next);
            }
        }
        // Let recovery finish.
        let end = net.now + Duration::from_secs(20);
        net.run_until(end);
        check(&net, &sent, &members);
        let naks: u64 = net.nodes.iter().map(|n| n.r.stats().naks_sent).sum();
        let xmits: u64 = net.nodes.iter().map(|n| n.r.stats().retransmitted).sum();
        let dups: u64 = net.nodes.iter().map(|n| n.r.stats().duplicates).sum();
        assert!(
            naks > 0 && xmits > 0 && dups > 0,
            "naks {naks} xmits {xmits} dups {dups}"
        );
        for &m in &members {
            let s = net.nodes[m].r.stats();
            assert_eq!(
                s.retransmit_buffer_bytes, 0,
                "not everything acknowledged: {s:?}"
            );
            // Once everything is acknowledged the group falls silent: no timer is left.
            let r = &net.nodes[m].r;
            assert_eq!(r.poll_timeout(), None, "{}", r.debug_state());
        }
    }
}

/// The invariants: per-sender order without duplicates; nothing delivered from a view the
/// receiver was not in; completeness for every member of the view a message was sent in
/// that is still a member at the end.
fn check(net: &Net, sent: &[SentRecord], final_members: &[usize]) {
    let view_of: HashMap<(usize, u64), u64> = sent
        .iter()
        .map(|s| ((s.sender, s.counter), s.view_seq))
        .collect();
    for (i, n) in net.nodes.iter().enumerate() {
        let mut last: BTreeMap<(usize, bool), u64> = BTreeMap::new();
        let mut seen: HashSet<(usize, u64)> = HashSet::new();
        for &(sender, counter, oob, unicast) in &n.delivered {
            assert!(
                seen.insert((sender, counter)),
                "node {i} delivered ({sender}, {counter}) twice"
            );
            if sender != i && !unicast {
                let v = view_of[&(sender, counter)];
                assert!(
                    n.first_view.is_some_and(|f| f <= v),
                    "node {i} (first view {:?}) delivered ({sender}, {counter}) of view {v}",
                    n.first_view
                );
            }
            if !oob && let Some(prev) = last.insert((sender, unicast), counter) {
                assert!(
                    prev < counter,
                    "node {i}: sender {sender} out of order: {prev} then {counter}"
                );
            }
        }
    }
    let delivered: Vec<HashSet<(usize, u64)>> = net
        .nodes
        .iter()
        .map(|n| n.delivered.iter().map(|d| (d.0, d.1)).collect())
        .collect();
    let mut missing = 0;
    let mut checked = 0;
    for s in sent {
        let receivers: Vec<usize> = match s.to {
            Some(to) => vec![to],
            None => (0..net.nodes.len())
                .filter(|r| net.nodes[*r].first_view.is_some_and(|f| f <= s.view_seq))
                .collect(),
        };
        for r in receivers {
            if !final_members.contains(&r) {
                continue;
            }
            checked += 1;
            if !delivered[r].contains(&(s.sender, s.counter)) {
                missing += 1;
                if missing < 10 {
                    eprintln!(
                        "node {r} never delivered ({}, {}) sent in view {} (oob {}, to {:?})",
                        s.sender, s.counter, s.view_seq, s.oob, s.to
                    );
                }
            }
        }
    }
    assert_eq!(missing, 0, "{missing} of {checked} deliveries missing");
    assert!(checked > 1000, "too few messages checked: {checked}");
}

/// Installs one view of `members` on all of them.
fn start_group(net: &mut Net, members: &[usize]) {
    let v = net.view(1, members);
    for &m in members {
        net.install(m, &v);
    }
}

/// A receiver that stops draining its deliveries: the sender runs out of credit instead of
/// growing the receiver's memory; once the receiver drains, credit returns (with an event)
/// and everything arrives.
#[test]
fn slow_receiver_bounds_the_sender() {
    for_seeds(100, 3, |seed| {
        let config = ReliableConfig {
            credit_window: 32 << 10,
            ack_threshold: 8 << 10,
            max_delivery_queue: 16 << 10,
            max_retransmit_buffer: 64 << 10,
            max_message_size: 32 << 10,
            max_datagram_size: 1400,
            nak_backoff: vec![ms(20)],
            nak_interval_after: ms(20),
            stable_interval: ms(10),
            ..ReliableConfig::default()
        };
        let mut net = Net::new(seed, 0.1, 0.05, ms(3));
        let members: Vec<usize> = (0..3).map(|_| net.add_node(&config)).collect();
        start_group(&mut net, &members);
        let (sender, slow) = (members[0], members[2]);
        net.nodes[slow].draining = false;
        let mut sent = Vec::new();
        let mut refused = 0;
        for _ in 0..3000 {
            let now = net.now;
            match multicast_next(&mut net, sender, 500, &mut sent) {
                Ok(()) => {}
                Err(SendError::NoCredit) => refused += 1,
                Err(e) => panic!("{e}"),
            }
            net.nodes[sender].r.flush(now);
            let next = net.now + Duration::from_micros(200);
            net.run_until(next);
            let s = net.nodes[slow].r.stats();
            assert!(
                s.delivery_queue_bytes + s.receive_buffer_bytes <= 16 * 1024 + 2 * 32 * 1024,
                "slow receiver holds {} + {} bytes",
                s.delivery_queue_bytes,
                s.receive_buffer_bytes
            );
            assert!(net.nodes[sender].r.multicast_buffer_bytes() <= config.credit_window);
        }
        assert!(
            refused > 1000,
            "sender never slowed down ({refused} refusals)"
        );
        let sent_before = sent.len();
        assert!(
            sent_before < 200,
            "sent {sent_before} to a stalled receiver"
        );
        // The receiver catches up; credit comes back.
        net.nodes[slow].draining = true;
        while net.nodes[sender].r.poll_event().is_some() {}
        let mut credit_events = 0;
        for _ in 0..3000 {
            let now = net.now;
            let _ = multicast_next(&mut net, sender, 500, &mut sent);
            net.nodes[sender].r.flush(now);
            let next = net.now + Duration::from_micros(200);
            net.run_until(next);
            while let Some(e) = net.nodes[sender].r.poll_event() {
                assert_eq!(
                    e,
                    ReliableEvent::CreditAvailable {
                        to: Destination::Group
                    }
                );
                credit_events += 1;
            }
        }
        assert!(credit_events > 0);
        assert!(sent.len() > sent_before + 500, "sending did not resume");
        let end = net.now + Duration::from_secs(10);
        net.run_until(end);
        check(&net, &sent, &members);
    });
}

/// Messages of several MiB are fragmented into datagrams and reassembled, under loss,
/// multicast and unicast, and out of band.
#[test]
fn large_messages_are_fragmented_and_reassembled() {
    for_seeds(200, 2, |seed| {
        let config = ReliableConfig {
            max_datagram_size: 8192,
            nak_backoff: vec![ms(20), ms(40)],
            nak_interval_after: ms(40),
            stable_interval: ms(20),
            ..ReliableConfig::default()
        };
        let mut net = Net::new(seed, 0.2, 0.05, ms(5));
        let members: Vec<usize> = (0..3).map(|_| net.add_node(&config)).collect();
        start_group(&mut net, &members);
        let sizes = [3 << 20, 5 << 20, 100, (16 << 20) - 18];
        let mut sent = Vec::new();
        for (k, size) in sizes.into_iter().enumerate() {
            let sender = members[k % 3];
            let counter = net.nodes[sender].sent;
            let oob = k == 2;
            let unicast = k == 1;
            let payload = message(sender, counter, oob, unicast, size);
            let to = unicast.then_some(members[(k + 1) % 3]);
            // A message larger than the window goes once nothing else is outstanding.
            let deadline = net.now + Duration::from_secs(60);
            loop {
                let now = net.now;
                let payload = payload.clone();
                let result = match to {
                    Some(to) => {
                        let id = net.nodes[to].id;
                        net.nodes[sender]
                            .r
                            .unicast(id, payload, SendOpts { oob }, now)
                    }
                    None => net.nodes[sender]
                        .r
                        .multicast(payload, SendOpts { oob }, now),
                };
                match result {
                    Ok(()) => break,
                    Err(SendError::NoCredit) if net.now < deadline => {
                        let next = net.now + ms(10);
                        net.run_until(next);
                    }
                    Err(e) => panic!("large send: {e}"),
                }
            }
            let now = net.now;
            net.nodes[sender].sent += 1;
            sent.push(SentRecord {
                sender,
                counter,
                view_seq: 1,
                oob,
                to,
            });
            net.nodes[sender].r.flush(now);
            let next = net.now + ms(50);
            net.run_until(next);
        }
        let too_big = Bytes::from(vec![0; (16 << 20) + 1]);
        let now = net.now;
        assert!(matches!(
            net.nodes[0].r.multicast(too_big, SendOpts::default(), now),
            Err(SendError::TooLarge { .. })
        ));
        let end = net.now + Duration::from_secs(60);
        net.run_until(end);
        // `parse` checked every byte of the filler; check() checks every delivery.
        let delivered: usize = members.iter().map(|m| net.nodes[*m].delivered.len()).sum();
        assert_eq!(
            delivered,
            3 * 3 + 1,
            "three multicasts to all (own included), one unicast"
        );
        check_small(&net, &sent, &members);
        for &m in &members {
            assert_eq!(net.nodes[m].r.stats().retransmit_buffer_bytes, 0);
            assert_eq!(net.nodes[m].r.stats().receive_buffer_bytes, 0);
        }
    });
}

/// `check` without its minimum message count.
fn check_small(net: &Net, sent: &[SentRecord], members: &[usize]) {
    for s in sent {
        let receivers: Vec<usize> = match s.to {
            Some(to) => vec![to],
            None => members.iter().copied().filter(|r| *r != s.sender).collect(),
        };
        for r in receivers {
            let got = net.nodes[r]
                .delivered
                .iter()
                .filter(|d| (d.0, d.1) == (s.sender, s.counter))
                .count();
            assert_eq!(
                got, 1,
                "node {r} delivered ({}, {}) {got} times",
                s.sender, s.counter
            );
        }
    }
}

/// A member that crashes and is removed stops holding the others back: their
/// retransmit buffers drain and credit returns, although it never acknowledged.
#[test]
fn a_member_that_leaves_stops_holding_others_back() {
    for_seeds(300, 3, |seed| {
        let config = ReliableConfig {
            credit_window: 16 << 10,
            ack_threshold: 4 << 10,
            max_retransmit_buffer: 32 << 10,
            max_message_size: 16 << 10,
            stable_interval: ms(10),
            ..ReliableConfig::default()
        };
        let mut net = Net::new(seed, 0.05, 0.0, ms(2));
        let members: Vec<usize> = (0..3).map(|_| net.add_node(&config)).collect();
        start_group(&mut net, &members);
        // Member 2 crashes: it stops processing anything.
        net.nodes[2].alive = false;
        let mut refused = false;
        for i in 0..200 {
            let now = net.now;
            if net.nodes[0]
                .r
                .multicast(message(0, i, false, false, 1000), SendOpts::default(), now)
                .is_err()
            {
                refused = true;
                break;
            }
            net.nodes[0].r.flush(now);
            let next = net.now + ms(1);
            net.run_until(next);
        }
        assert!(
            refused,
            "a crashed member should hold credit back until removed"
        );
        assert!(net.nodes[0].r.multicast_buffer_bytes() > 0);
        let v = net.view(2, &members[..2]);
        net.install(0, &v);
        net.install(1, &v);
        while net.nodes[0].r.poll_event().is_some() {}
        let next = net.now + Duration::from_secs(2);
        net.run_until(next);
        assert_eq!(
            net.nodes[0].r.multicast_buffer_bytes(),
            0,
            "{}",
            net.nodes[0].r.debug_state()
        );
        let now = net.now;
        net.nodes[0]
            .r
            .multicast(message(0, 999, false, false, 10), SendOpts::default(), now)
            .expect("credit after the view change");
        let id2 = net.nodes[2].id;
        assert_eq!(
            net.nodes[0]
                .r
                .unicast(id2, Bytes::new(), SendOpts::default(), now),
            Err(SendError::UnknownMember(id2))
        );
    });
}

/// Multicasts `sender`'s next message (`filler` bytes after the header) and, if it was
/// accepted, records it in `sent`.
fn multicast_next(
    net: &mut Net,
    sender: usize,
    filler: usize,
    sent: &mut Vec<SentRecord>,
) -> Result<(), SendError> {
    let counter = net.nodes[sender].sent;
    let now = net.now;
    let node = &mut net.nodes[sender];
    node.r.multicast(
        message(sender, counter, false, false, filler),
        SendOpts::default(),
        now,
    )?;
    node.sent += 1;
    sent.push(SentRecord {
        sender,
        counter,
        view_seq: node.view_seq,
        oob: false,
        to: None,
    });
    Ok(())
}

/// Multicasts `count` small messages from `sender`, flushing after each, stepping time.
fn send_some(net: &mut Net, sender: usize, count: u64, sent: &mut Vec<SentRecord>) {
    for _ in 0..count {
        let now = net.now;
        multicast_next(net, sender, 100, sent).expect("send");
        net.nodes[sender].r.flush(now);
        let next = net.now + ms(1);
        net.run_until(next);
    }
}

/// A member that hears nothing from a sender (one-way partition) learns from another
/// member's gossip that it misses messages and gets them from that member
/// (`nak_random_member` with `discard_delivered` off).
#[test]
fn missing_messages_come_from_a_random_member() {
    for_seeds(400, 3, |seed| {
        let config = ReliableConfig {
            nak_random_member: true,
            discard_delivered: false,
            nak_backoff: vec![ms(20)],
            nak_interval_after: ms(20),
            stable_interval: ms(10),
            ..ReliableConfig::default()
        };
        let mut net = Net::new(seed, 0.0, 0.0, ms(1));
        let members: Vec<usize> = (0..3).map(|_| net.add_node(&config)).collect();
        start_group(&mut net, &members);
        let next = net.now + ms(50);
        net.run_until(next);
        // Node 0 cannot reach node 2 at all; 2 can still talk to 0.
        net.cut.insert((0, 2));
        let mut sent = Vec::new();
        send_some(&mut net, 0, 50, &mut sent);
        let end = net.now + Duration::from_secs(5);
        net.run_until(end);
        check_small(&net, &sent, &members);
        assert!(
            net.nodes[1].r.stats().retransmitted > 0,
            "member 1 never helped"
        );
        assert_eq!(net.nodes[0].r.stats().retransmitted, 0);
        // Once 2 consumed everything, the sender's buffer and the copies are purged.
        assert_eq!(net.nodes[0].r.multicast_buffer_bytes(), 0);
        let end = net.now + Duration::from_secs(1);
        net.run_until(end);
        for &m in &members {
            assert_eq!(
                net.nodes[m].r.stats().receive_buffer_bytes,
                0,
                "{}",
                net.nodes[m].r.debug_state()
            );
        }
    });
}

/// A joiner that installs its first view late, after the sender already moved on to the
/// next view, still starts at the sender's first seqno of the view it joined in (from the
/// sender's gossip), and delivers nothing from before.
#[test]
fn a_late_joiner_starts_at_the_right_seqno() {
    for_seeds(500, 3, |seed| {
        let config = ReliableConfig {
            stable_interval: ms(10),
            nak_backoff: vec![ms(20)],
            nak_interval_after: ms(20),
            ..ReliableConfig::default()
        };
        let mut net = Net::new(seed, 0.1, 0.0, ms(2));
        let mut members: Vec<usize> = (0..2).map(|_| net.add_node(&config)).collect();
        start_group(&mut net, &members);
        let mut sent = Vec::new();
        send_some(&mut net, 0, 20, &mut sent);
        // J joins in view 2, but installs it only after the others went on to view 3.
        let j = net.add_node(&config);
        members.push(j);
        let v2 = net.view(2, &members);
        net.install(0, &v2);
        net.install(1, &v2);
        send_some(&mut net, 0, 20, &mut sent);
        send_some(&mut net, 1, 5, &mut sent);
        let k = net.add_node(&config);
        members.push(k);
        let v3 = net.view(3, &members);
        net.install(0, &v3);
        net.install(1, &v3);
        net.install(k, &v3);
        send_some(&mut net, 0, 20, &mut sent);
        net.install(j, &v2);
        let next = net.now + ms(30);
        net.run_until(next);
        net.install(j, &v3);
        send_some(&mut net, 0, 10, &mut sent);
        let end = net.now + Duration::from_secs(5);
        net.run_until(end);
        let from_0: Vec<u64> = net.nodes[j]
            .delivered
            .iter()
            .filter(|d| d.0 == 0)
            .map(|d| d.1)
            .collect();
        assert_eq!(
            from_0,
            (20..70).collect::<Vec<_>>(),
            "joiner's deliveries from 0"
        );
        let from_0_k: Vec<u64> = net.nodes[k]
            .delivered
            .iter()
            .filter(|d| d.0 == 0)
            .map(|d| d.1)
            .collect();
        assert_eq!(
            from_0_k,
            (40..70).collect::<Vec<_>>(),
            "second joiner's deliveries"
        );
        check_small(
            &net,
            &sent
                .into_iter()
                .filter(|s| s.view_seq >= 3)
                .collect::<Vec<_>>(),
            &members,
        );
    });
}

/// The API's refusals and the errors of bad datagrams, each counted.
#[test]
fn refusals_and_bad_datagrams() {
    let now = Instant::now();
    let (a, b, c) = (MemberId([1; 16]), MemberId([2; 16]), MemberId([3; 16]));
    let mut r = Reliable::new(ReliableConfig::default(), a, now);
    assert_eq!(
        r.multicast(Bytes::from_static(b"x"), SendOpts::default(), now),
        Err(SendError::NotInView)
    );
    assert!(
        ReliableConfig {
            max_datagram_size: 1,
            ..ReliableConfig::default()
        }
        .validate()
        .is_err()
    );
    let member = |id| GroupMember {
        id,
        addr: SocketAddr::from(([127, 0, 0, 1], 1)),
    };
    // Alone: own multicasts are delivered locally and nothing goes out.
    let alone = View {
        id: ViewId {
            seq: 1,
            coordinator: a,
        },
        members: vec![member(a)],
    };
    r.install_view(&alone, now);
    r.multicast(Bytes::from_static(b"self"), SendOpts::OOB, now)
        .unwrap();
    r.flush(now);
    assert_eq!(r.poll_transmit(), None);
    let d = r.poll_delivery().unwrap();
    assert_eq!(
        (d.from, &d.payload[..], d.oob, d.unicast),
        (a, &b"self"[..], true, false)
    );
    assert!(r.can_multicast(100));
    // A local application that does not drain its own deliveries is held back too.
    let mut queued = 0;
    while r
        .multicast(Bytes::from(vec![0; 1000]), SendOpts::default(), now)
        .is_ok()
    {
        queued += 1;
        assert!(queued < 10_000, "never refused");
    }
    assert!(!r.can_multicast(1));
    assert_eq!(r.poll_event(), None);
    for _ in 0..queued {
        r.poll_delivery().unwrap();
    }
    assert_eq!(r.poll_delivery(), None);
    assert_eq!(
        r.poll_event(),
        Some(ReliableEvent::CreditAvailable {
            to: Destination::Group
        })
    );
    assert!(r.can_multicast(100));
    assert!(!r.can_multicast((16 << 20) + 1));
    assert!(matches!(
        r.multicast(
            Bytes::from(vec![0; (16 << 20) + 1]),
            SendOpts::default(),
            now
        ),
        Err(SendError::TooLarge { .. })
    ));
    assert_eq!(
        r.unicast(b, Bytes::new(), SendOpts::default(), now),
        Err(SendError::UnknownMember(b))
    );
    assert!(!r.can_unicast(b, 1));

    let pair = View {
        id: ViewId {
            seq: 2,
            coordinator: a,
        },
        members: vec![member(a), member(b)],
    };
    r.install_view(&pair, now);
    assert_eq!(r.members(), &[b]);
    assert!(r.can_unicast(b, 1));
    // A datagram from b, as b would make it.
    let mut from_b = Reliable::new(ReliableConfig::default(), b, now);
    from_b.install_view(&pair, now);
    from_b
        .unicast(a, Bytes::from_static(b"hi"), SendOpts::default(), now)
        .unwrap();
    from_b.flush(now);
    let t = from_b.poll_transmit().unwrap();
    assert_eq!(t.to, Destination::Member(a));
    assert_eq!(Reliable::datagram_sender(&t.datagram), Some(b));
    assert!(matches!(
        r.handle_datagram(c, t.datagram.clone(), now),
        Err(DatagramError::SenderMismatch { .. })
    ));
    let mut for_c = Reliable::new(ReliableConfig::default(), c, now);
    assert!(matches!(
        for_c.handle_datagram(b, t.datagram.clone(), now),
        Err(DatagramError::NotForMe(id)) if id == a
    ));
    assert!(matches!(
        r.handle_datagram(b, t.datagram.slice(..t.datagram.len() - 1), now),
        Err(DatagramError::Decode(_))
    ));
    assert!(
        r.handle_datagram(b, Bytes::from_static(b"TRIBES-B"), now)
            .is_err()
    );
    assert_eq!(r.stats().malformed, 3);
    r.handle_datagram(b, t.datagram, now).unwrap();
    let d = r.poll_delivery().unwrap();
    assert_eq!((d.from, &d.payload[..], d.unicast), (b, &b"hi"[..], true));
    assert_eq!(r.stats().delivered, 1);
    // Removed from the view: everything stops.
    r.install_view(&alone_without(a, b), now);
    assert_eq!(
        r.multicast(Bytes::new(), SendOpts::default(), now),
        Err(SendError::NotInView)
    );
}

fn alone_without(_removed: MemberId, other: MemberId) -> View {
    View {
        id: ViewId {
            seq: 3,
            coordinator: other,
        },
        members: vec![GroupMember {
            id: other,
            addr: SocketAddr::from(([127, 0, 0, 1], 2)),
        }],
    }
}

#[test]
fn public_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Reliable>();
    check::<SendError>();
    check::<DatagramError>();
    check::<Transmit>();
    check::<Delivery>();
}

/// A receiver paused for 5 s (it processes nothing, and everything sent to it meanwhile is
/// lost, like a full socket buffer) catches up afterwards without loss; meanwhile the
/// sender is held back by credit, not by memory.
#[test]
fn a_paused_receiver_catches_up() {
    for_seeds(600, 2, |seed| {
        let config = ReliableConfig {
            credit_window: 64 << 10,
            ack_threshold: 16 << 10,
            max_retransmit_buffer: 128 << 10,
            max_message_size: 64 << 10,
            ..ReliableConfig::lan()
        };
        let mut net = Net::new(seed, 0.01, 0.0, ms(1));
        let members: Vec<usize> = (0..3).map(|_| net.add_node(&config)).collect();
        start_group(&mut net, &members);
        let (sender, paused) = (members[0], members[2]);
        let mut sent = Vec::new();
        let mut refused = 0;
        let pause_at = net.now + ms(100);
        let resume_at = pause_at + Duration::from_secs(5);
        let stop_at = resume_at + ms(500);
        while net.now < stop_at {
            net.nodes[paused].alive = !(pause_at..resume_at).contains(&net.now);
            let now = net.now;
            match multicast_next(&mut net, sender, 1000, &mut sent) {
                Ok(()) => {}
                Err(SendError::NoCredit) => refused += 1,
                Err(e) => panic!("{e}"),
            }
            net.nodes[sender].r.flush(now);
            let next = net.now + ms(1);
            net.run_until(next);
            assert!(net.nodes[sender].r.multicast_buffer_bytes() <= config.credit_window);
        }
        assert!(refused > 4000, "the sender was not held back: {refused}");
        let end = net.now + Duration::from_secs(10);
        net.run_until(end);
        check_small(&net, &sent, &members);
        assert!(sent.len() > 500, "sent {}", sent.len());
        assert_eq!(net.nodes[sender].r.multicast_buffer_bytes(), 0);
    });
}

/// A receiver paused behind slow links (1 MB/s, 20 ms of queue, 1 % loss): when it comes
/// back it asks for a whole window, which the sender's link cannot take at once. NAKs
/// paced to their answers get it back with about 3 retransmissions per message sent,
/// in 2.2 s. Unpaced, the repeats flooded the link: 36-39 retransmissions per message
/// (in 1.8 s here, where a full queue drops whole datagrams; behind a real token bucket,
/// where it drops fragments of them, the flood took 30 s longer, see `recv.rs`).
#[test]
fn a_paused_receiver_behind_slow_links_catches_up_without_a_flood() {
    for_seeds(700, 3, |seed| {
        let config = ReliableConfig {
            credit_window: 1 << 20,
            ack_threshold: 256 << 10,
            max_retransmit_buffer: 2 << 20,
            max_message_size: 64 << 10,
            max_datagram_size: 8 << 10,
            ..ReliableConfig::lan()
        };
        let mut net = Net::new(seed, 0.01, 0.0, ms(1));
        net.bottleneck = Some((1e6, ms(20)));
        let members: Vec<usize> = (0..3).map(|_| net.add_node(&config)).collect();
        start_group(&mut net, &members);
        let (sender, paused) = (members[0], members[2]);
        let mut sent = Vec::new();
        let pause_at = net.now + ms(100);
        let resume_at = pause_at + Duration::from_secs(2);
        let stop_at = resume_at + ms(200);
        while net.now < stop_at {
            net.nodes[paused].alive = !(pause_at..resume_at).contains(&net.now);
            let now = net.now;
            // Refused for lack of credit while the receiver is away: tried again later.
            let _ = multicast_next(&mut net, sender, 1000, &mut sent);
            net.nodes[sender].r.flush(now);
            let next = net.now + ms(2);
            net.run_until(next);
        }
        let mut caught_up = None;
        let deadline = net.now + Duration::from_secs(30);
        while net.now < deadline {
            let next = net.now + ms(10);
            net.run_until(next);
            if net.nodes[paused].delivered.len() == sent.len() {
                caught_up = Some(net.now - resume_at);
                break;
            }
        }
        check_small(&net, &sent, &members);
        let caught_up = caught_up.expect("the paused receiver caught up");
        let retransmitted = net.nodes[sender].r.stats().retransmitted;
        eprintln!(
            "seed {seed}: {} sent, {retransmitted} retransmitted, caught up {caught_up:?} after resuming",
            sent.len()
        );
        assert!(sent.len() > 1000, "sent {}", sent.len());
        assert!(
            retransmitted < 5 * sent.len() as u64,
            "{retransmitted} retransmissions of {} messages",
            sent.len()
        );
        assert!(
            caught_up < Duration::from_secs(4),
            "caught up after {caught_up:?}"
        );
    });
}

/// A group larger than one datagram's worth of stability entries: gossip is split over
/// several records, every datagram stays within the size limit, and stability completes.
#[test]
fn gossip_of_a_large_group_fits_small_datagrams() {
    for_seeds(700, 1, |seed| {
        let config = ReliableConfig {
            max_datagram_size: 300,
            max_message_size: 64 << 10,
            max_retransmit_buffer: 4 << 20,
            stable_interval: ms(10),
            ..ReliableConfig::lan()
        };
        let mut net = Net::new(seed, 0.05, 0.0, ms(1));
        let members: Vec<usize> = (0..12).map(|_| net.add_node(&config)).collect();
        start_group(&mut net, &members);
        let mut sent = Vec::new();
        send_some(&mut net, 0, 10, &mut sent);
        send_some(&mut net, 11, 10, &mut sent);
        let end = net.now + Duration::from_secs(5);
        net.run_until(end);
        check_small(&net, &sent, &members);
        for &m in &members {
            let r = &net.nodes[m].r;
            assert_eq!(r.stats().retransmit_buffer_bytes, 0, "{}", r.debug_state());
            assert_eq!(r.poll_timeout(), None);
        }
    });
}

/// With `retransmit_by_multicast` a NAK is answered to the whole group, otherwise to the
/// member that asked; either way the missing message arrives once.
#[test]
fn retransmissions_go_where_configured() {
    for by_multicast in [false, true] {
        let config = ReliableConfig {
            retransmit_by_multicast: by_multicast,
            ..ReliableConfig::lan()
        };
        let mut net = Net::new(800, 0.0, 0.0, ms(1));
        let members: Vec<usize> = (0..3).map(|_| net.add_node(&config)).collect();
        start_group(&mut net, &members);
        let next = net.now + ms(50);
        net.run_until(next);
        // Node 2 misses the first message only.
        net.cut.insert((0, 2));
        let mut sent = Vec::new();
        send_some(&mut net, 0, 1, &mut sent);
        net.cut.clear();
        send_some(&mut net, 0, 1, &mut sent);
        // Catch the retransmission on its way out of node 0.
        let mut answered = None;
        let deadline = net.now + Duration::from_secs(1);
        while answered.is_none() && net.now < deadline {
            let now = net.now + ms(1);
            net.now = now;
            for i in 0..3 {
                if net.nodes[i].r.poll_timeout().is_some_and(|t| t <= now) {
                    net.nodes[i].r.handle_timeout(now);
                }
            }
            // Deliver node 2's NAK to node 0 by hand.
            while let Some(t) = net.nodes[2].r.poll_transmit() {
                if t.to == Destination::Member(net.nodes[0].id) {
                    let from = net.nodes[2].id;
                    net.nodes[0]
                        .r
                        .handle_datagram(from, t.datagram, now)
                        .unwrap();
                }
            }
            while let Some(t) = net.nodes[0].r.poll_transmit() {
                let (_, records) = wire::decode(&t.datagram).unwrap();
                if records
                    .map(Result::unwrap)
                    .any(|r| matches!(r, Record::Retransmit { .. }))
                {
                    answered = Some(t.to);
                }
            }
        }
        let expected = if by_multicast {
            Destination::Group
        } else {
            Destination::Member(net.nodes[2].id)
        };
        assert_eq!(answered, Some(expected));
    }
}

#[test]
fn recycled_datagram_buffers_are_reused_only_when_free() {
    let now = Instant::now();
    let (a, b) = (MemberId([1; 16]), MemberId([2; 16]));
    let member = |id| GroupMember {
        id,
        addr: SocketAddr::from(([127, 0, 0, 1], 7000)),
    };
    let view = View {
        id: ViewId {
            seq: 1,
            coordinator: a,
        },
        members: vec![member(a), member(b)],
    };
    let config = ReliableConfig {
        deliver_own: false,
        ..ReliableConfig::default()
    };
    let mut alice = Reliable::new(config.clone(), a, now);
    let mut bob = Reliable::new(config, b, now);
    alice.install_view(&view, now);
    bob.install_view(&view, now);
    let send = |alice: &mut Reliable, text: &'static [u8]| {
        alice
            .multicast(Bytes::from_static(text), SendOpts::default(), now)
            .unwrap();
        alice.flush(now);
        let t = alice.poll_transmit().unwrap();
        assert!(alice.poll_transmit().is_none());
        t.datagram
    };
    let first = send(&mut alice, b"one");
    let first_ptr = first.as_ptr();
    bob.handle_datagram(a, first.clone(), now).unwrap();
    let held = bob.poll_delivery().unwrap();
    // Bob's delivery still points into the datagram: its buffer must not be reused.
    alice.recycle(first);
    let second = send(&mut alice, b"two");
    assert_ne!(second.as_ptr(), first_ptr);
    assert_eq!(&held.payload[..], b"one");
    // Once nothing refers to it, the next datagram is written into the same buffer.
    let second_ptr = second.as_ptr();
    alice.recycle(second);
    let third = send(&mut alice, b"three");
    assert_eq!(third.as_ptr(), second_ptr);
    bob.handle_datagram(a, third, now).unwrap();
}

/// One NAK record listing the whole retention buffer again and again (an 88-byte NAK
/// made a member send 4 MB; 65 535 copies of that range in one datagram would be
/// gigabytes) is answered with at most a window of bytes, and counted.
#[test]
fn one_nak_makes_a_member_send_at_most_a_window() {
    use crate::wire::cohort::reliable::{DatagramHeader, StreamRef, encode_nak};
    let now = Instant::now();
    let (a, b) = (MemberId([1; 16]), MemberId([2; 16]));
    let config = ReliableConfig::default();
    let window = config.credit_window;
    let mut r = Reliable::new(config, a, now);
    let member = |id| GroupMember {
        id,
        addr: SocketAddr::from(([127, 0, 0, 1], 1)),
    };
    let view = View {
        id: ViewId {
            seq: 1,
            coordinator: a,
        },
        members: vec![member(a), member(b)],
    };
    r.install_view(&view, now);
    // Fill the window: b never acknowledges.
    let mut sent = 0u64;
    while r
        .multicast(Bytes::from(vec![7; 1000]), SendOpts::default(), now)
        .is_ok()
    {
        sent += 1;
        while r.poll_delivery().is_some() {}
    }
    r.flush(now);
    while r.poll_transmit().is_some() {}
    let retained = r.stats().retransmit_buffer_bytes;
    assert!(
        sent > 1000 && retained > window / 2,
        "{sent} sent, {retained} retained"
    );

    let mut datagram = bytes::BytesMut::new();
    DatagramHeader {
        sender: b,
        dest: Some(a),
        view_seq: 1,
        view_start: 1,
    }
    .encode(&mut datagram);
    let ranges = vec![(1, sent); 1000];
    encode_nak(&mut datagram, StreamRef::Multicast(a), &ranges);
    let before = r.stats().retransmitted;
    r.handle_datagram(b, datagram.freeze(), now).unwrap();
    r.flush(now);
    let mut bytes_out = 0;
    while let Some(t) = r.poll_transmit() {
        bytes_out += t.datagram.len();
    }
    let s = r.stats();
    assert_eq!(s.nak_answers_capped, 1);
    let again = s.retransmitted - before;
    assert!(again as usize <= window / 1000 + 1, "{again} retransmitted");
    // A window of payload, plus record and datagram headers.
    assert!(
        bytes_out <= window + window / 10,
        "{bytes_out} bytes sent for one NAK"
    );
    assert!(
        bytes_out >= window / 2,
        "the NAK was not answered: {bytes_out} bytes"
    );
}
