//! A deterministic simulation of many nodes in one process: the group core and, when
//! asked for ([`Sim::with_stack`]), the reliable core with view synchrony on top of it
//! (see `stack.rs`), the start of one harness of the whole stack that later layers plug
//! into.
//!
//! Virtual time, a seeded network (loss, duplication, delay, partitions, one-way cuts),
//! paused, crashed and restarted nodes. Each node is the real [`Group`] core; the harness
//! plays the runtime's part: heartbeats every 500 ms to every reachable node (feeding
//! `heard_from`, and `member_restarted` when an address shows a new id, as the membership
//! service does), and the ring connection (a crash is seen by the watcher within a
//! millisecond unless a partition is in between).
//!
//! Group messages travel as the runtime's channel carries them, by address, over TCP: a
//! message sent across a cut is not lost but waits in the connection (the kernel's buffer)
//! and arrives once the link returns, if that is within [`NetConfig::backlog_hold`] (after
//! that the runtime's ACK timeout has aborted the connection); a reconnect may deliver it
//! twice. It goes to whatever process has the address by then: a new incarnation of a
//! restarted or rejoined node receives what was meant for the old one, and a reply to an
//! old incarnation reaches the new one.
//!
//! After every step it checks the safety invariants: two nodes never install different
//! member lists under one view id, and each node's view numbers only grow. Tests then check
//! liveness: after the faults stop, every live node is in one view of exactly the live nodes.
//! A failing run prints its seed; `GROUP_SIM_SEED=<seed>` replays it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use bytes::Bytes;

use crate::group::{Group, GroupConfig, GroupEvent, GroupMember, HostCheck, View, ViewId};
use crate::membership::MemberId;
use crate::wire::cohort::GroupPacket;

mod stack;
#[cfg(test)]
mod tests;

pub(crate) use stack::StackConfig;

const BEAT: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
enum Input {
    Message {
        from: SocketAddr,
        packet: GroupPacket,
    },
    Beat {
        from: GroupMember,
    },
    HostCheck {
        id: MemberId,
        result: HostCheck,
    },
    LinkClosed {
        id: MemberId,
    },
    Shutdown {
        id: MemberId,
    },
    /// A reliable datagram (UDP: lost across a cut, never held).
    Datagram {
        from: MemberId,
        datagram: Bytes,
    },
}

struct Slot {
    addr: SocketAddr,
    node: Option<Group>,
    started: Instant,
    paused_until: Option<Instant>,
    /// Inputs that arrived while paused, handled on resume (socket buffers).
    held: Vec<Input>,
    next_beat: Instant,
    /// Ids heard from each address, as the membership service tracks them.
    heard: HashMap<SocketAddr, MemberId>,
    /// Ring connections reported closed (watcher side), so each is reported once.
    ring_reported: HashSet<MemberId>,
    /// View ids installed, in order, per identity.
    installed: Vec<(MemberId, ViewId)>,
    rejoins: usize,
    /// The reliable layer and its application, with [`Sim::with_stack`].
    stack: Option<stack::StackNode>,
}

/// The network: loss, duplication, delay and reachability.
#[derive(Debug, Clone)]
pub(crate) struct NetConfig {
    pub(crate) loss: f64,
    pub(crate) duplicate: f64,
    pub(crate) min_delay: Duration,
    pub(crate) max_delay: Duration,
    /// How long a group message sent across a cut waits for the link to return (zero: it
    /// is lost at once, as a datagram would be).
    pub(crate) backlog_hold: Duration,
    /// Chance that a message delivered from the backlog arrives twice (a reconnect replays
    /// it).
    pub(crate) backlog_replay: f64,
}

impl NetConfig {
    /// A LAN that loses `loss` of the datagrams and duplicates half as many, with
    /// 0.2-5 ms of delay: the network most tests run on.
    pub(crate) fn lossy(loss: f64) -> Self {
        Self {
            loss,
            duplicate: loss / 2.0,
            min_delay: Duration::from_micros(200),
            max_delay: Duration::from_millis(5),
            ..Self::default()
        }
    }
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            loss: 0.0,
            duplicate: 0.0,
            min_delay: Duration::from_micros(200),
            max_delay: Duration::from_millis(2),
            backlog_hold: Duration::from_secs(6),
            backlog_replay: 0.2,
        }
    }
}

pub(crate) struct Sim {
    pub(crate) seed: u64,
    rng: SmallRng,
    pub(crate) net: NetConfig,
    pub(crate) config: GroupConfig,
    start: Instant,
    pub(crate) now: Instant,
    slots: Vec<Slot>,
    queue: BinaryHeap<Reverse<(Instant, u64, usize, usize)>>,
    payloads: HashMap<u64, Input>,
    counter: u64,
    /// Partition number of each slot; nodes talk only within a partition.
    partition: Vec<u32>,
    /// Slots whose incoming traffic is dropped (a one-way cut).
    deaf: HashSet<usize>,
    /// Every view ever installed, to check that an id names one member list.
    views: HashMap<ViewId, Vec<MemberId>>,
    pub(crate) steps: u64,
    /// Whether watchers see a crash through the ring connection.
    pub(crate) ring: bool,
    /// Group messages waiting for a cut link to return: when sent, from, to, the message.
    backlog: Vec<(Instant, usize, usize, Input)>,
    /// Nodes started in each slot (restarts and rejoins give new ids at the same address).
    pub(crate) incarnations: Vec<usize>,
    /// The reliable layer's settings and the checkers of its invariants, if it runs.
    stack: Option<stack::Stack>,
    /// The slot of every id ever started, for datagrams addressed by id.
    id_slots: HashMap<MemberId, usize>,
}

impl Sim {
    pub(crate) fn new(seed: u64, nodes: usize, net: NetConfig, config: GroupConfig) -> Self {
        // GROUP_SIM_LOG=debug prints the protocol's log of a replayed run.
        if let Ok(filter) = std::env::var("GROUP_SIM_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
        let start = Instant::now();
        let mut sim = Self {
            seed,
            rng: SmallRng::seed_from_u64(seed),
            net,
            config,
            start,
            now: start,
            slots: Vec::new(),
            queue: BinaryHeap::new(),
            payloads: HashMap::new(),
            counter: 0,
            partition: Vec::new(),
            deaf: HashSet::new(),
            views: HashMap::new(),
            steps: 0,
            ring: true,
            backlog: Vec::new(),
            incarnations: Vec::new(),
            stack: None,
            id_slots: HashMap::new(),
        };
        for _ in 0..nodes {
            sim.add_slot();
        }
        sim
    }

    fn add_slot(&mut self) -> usize {
        let i = self.slots.len();
        let addr = SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250 + 1) as u8], 4000));
        self.slots.push(Slot {
            addr,
            node: None,
            started: self.now,
            paused_until: None,
            held: Vec::new(),
            next_beat: self.now,
            heard: HashMap::new(),
            ring_reported: HashSet::new(),
            installed: Vec::new(),
            rejoins: 0,
            stack: None,
        });
        self.partition.push(0);
        self.incarnations.push(0);
        i
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Starts (or restarts, under a new id) the node of slot `i`.
    pub(crate) fn start(&mut self, i: usize) {
        let id = MemberId::random(&mut self.rng);
        let member = GroupMember {
            id,
            addr: self.slots[i].addr,
        };
        let seed = self.rng.random();
        let node = Group::new(self.config.clone(), member, self.now, seed);
        let slot = &mut self.slots[i];
        slot.node = Some(node);
        slot.started = self.now;
        slot.paused_until = None;
        slot.held.clear();
        slot.next_beat = self.now;
        slot.heard.clear();
        slot.ring_reported.clear();
        self.incarnations[i] += 1;
        self.id_slots.insert(id, i);
        self.slots[i].stack = self.new_stack_node(id);
    }

    pub(crate) fn start_all(&mut self) {
        for i in 0..self.len() {
            self.start(i);
        }
    }

    /// kill -9: the process is gone; the ring connection to it closes.
    pub(crate) fn crash(&mut self, i: usize) {
        self.slots[i].node = None;
        self.slots[i].stack = None;
    }

    /// Graceful stop: leave, then the shutdown heartbeat.
    pub(crate) fn stop(&mut self, i: usize) {
        let now = self.now;
        let Some(mut node) = self.slots[i].node.take() else {
            return;
        };
        node.leave(now);
        let from = node.local();
        self.drain_node(i, &mut node);
        self.slots[i].stack = None;
        for j in 0..self.len() {
            if j != i {
                self.deliver_later(i, j, Input::Shutdown { id: from.id });
            }
        }
    }

    /// SIGSTOP for `d`.
    pub(crate) fn pause(&mut self, i: usize, d: Duration) {
        if self.slots[i].node.is_some() {
            self.slots[i].paused_until = Some(self.now + d);
        }
    }

    pub(crate) fn set_partitions(&mut self, groups: &[&[usize]]) {
        for p in self.partition.iter_mut() {
            *p = 0;
        }
        for (n, g) in groups.iter().enumerate() {
            for &i in *g {
                self.partition[i] = n as u32 + 1;
            }
        }
        self.release_backlog();
    }

    pub(crate) fn heal(&mut self) {
        for p in self.partition.iter_mut() {
            *p = 0;
        }
        self.deaf.clear();
        self.release_backlog();
    }

    /// Delivers the group messages that waited for links that are up again (the ones that
    /// waited too long were dropped with their connection). TCP retransmits with
    /// exponential back-off, so a connection's backlog arrives some time after the link
    /// returns: up to as long as it waited (each link gets one such delay, keeping its
    /// order).
    fn release_backlog(&mut self) {
        let hold = self.net.backlog_hold;
        let now = self.now;
        let waiting = std::mem::take(&mut self.backlog);
        let mut link_delay: HashMap<(usize, usize), Duration> = HashMap::new();
        for (sent, from, to, input) in waiting {
            let waited = now.saturating_duration_since(sent);
            if waited > hold {
                continue;
            }
            if !self.reachable(from, to) {
                self.backlog.push((sent, from, to, input));
                continue;
            }
            // The first (oldest) message of a link decides when its retransmission comes.
            let backoff = *link_delay
                .entry((from, to))
                .or_insert_with(|| self.rng.random_range(Duration::ZERO..=waited));
            let copies = if self.rng.random_bool(self.net.backlog_replay) {
                2
            } else {
                1
            };
            for copy in 0..copies {
                let delay = self
                    .rng
                    .random_range(self.net.min_delay..=self.net.max_delay);
                let replay = Duration::from_millis(copy * 200);
                self.enqueue(now + backoff + delay + replay, to, input.clone());
            }
        }
    }

    pub(crate) fn set_deaf(&mut self, i: usize, deaf: bool) {
        if deaf {
            self.deaf.insert(i);
        } else {
            self.deaf.remove(&i);
            self.release_backlog();
        }
    }

    fn reachable(&self, from: usize, to: usize) -> bool {
        self.partition[from] == self.partition[to] && !self.deaf.contains(&to)
    }

    pub(crate) fn is_live(&self, i: usize) -> bool {
        self.slots[i].node.is_some()
    }

    pub(crate) fn node(&self, i: usize) -> Option<&Group> {
        self.slots[i].node.as_ref()
    }

    /// Takes node `i` out of the simulation, to drive it by hand.
    pub(crate) fn take_node(&mut self, i: usize) -> Option<Group> {
        self.slots[i].node.take()
    }

    pub(crate) fn id(&self, i: usize) -> Option<MemberId> {
        self.node(i).map(|n| n.local().id)
    }

    pub(crate) fn view(&self, i: usize) -> Option<&View> {
        self.node(i).and_then(Group::view)
    }

    pub(crate) fn rejoins(&self, i: usize) -> usize {
        self.slots[i].rejoins
    }

    fn deliver_later(&mut self, from: usize, to: usize, input: Input) {
        if !self.reachable(from, to) {
            // A datagram is lost; a group message waits in its connection for the link.
            if matches!(input, Input::Message { .. }) && !self.net.backlog_hold.is_zero() {
                self.backlog.push((self.now, from, to, input));
            }
            return;
        }
        if self.rng.random_bool(self.net.loss) {
            return;
        }
        let copies = if self.rng.random_bool(self.net.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self
                .rng
                .random_range(self.net.min_delay..=self.net.max_delay);
            self.enqueue(self.now + delay, to, input.clone());
        }
    }

    fn enqueue(&mut self, at: Instant, to: usize, input: Input) {
        self.counter += 1;
        self.payloads.insert(self.counter, input);
        self.queue
            .push(Reverse((at, self.counter, to, self.counter as usize)));
    }

    fn slot_of(&self, addr: SocketAddr) -> Option<usize> {
        self.slots.iter().position(|s| s.addr == addr)
    }

    fn drain_node(&mut self, i: usize, node: &mut Group) {
        while let Some((to, packet)) = node.poll_transmit() {
            if let Some(j) = self.slot_of(to.addr) {
                let from = self.slots[i].addr;
                self.deliver_later(i, j, Input::Message { from, packet });
            }
        }
        while let Some(target) = node.poll_host_check() {
            // Reach the suspect's host: a crashed process leaves a host that refuses, a
            // partition leaves no answer, a paused process still accepts.
            let result = match self.slot_of(target.addr) {
                Some(j) if !self.reachable(i, j) || !self.reachable(j, i) => HostCheck::Unreachable,
                Some(j) if self.id(j) == Some(target.id) => HostCheck::Alive,
                _ => HostCheck::ProcessGone,
            };
            let at = self.now + Duration::from_millis(1);
            self.enqueue(
                at,
                i,
                Input::HostCheck {
                    id: target.id,
                    result,
                },
            );
        }
        while let Some(event) = node.poll_event() {
            match event {
                GroupEvent::ViewInstalled(view) => {
                    let ids: Vec<MemberId> = view.ids().collect();
                    if let Some(previous) = self.views.get(&view.id) {
                        assert_eq!(
                            previous, &ids,
                            "seed {}: two member lists under view {}",
                            self.seed, view.id
                        );
                    } else {
                        self.views.insert(view.id, ids);
                    }
                    self.stack_view(i, &view);
                    let me = node.local().id;
                    let slot = &mut self.slots[i];
                    if let Some((last_id, last_view)) = slot.installed.last()
                        && *last_id == me
                    {
                        assert!(
                            view.id.seq > last_view.seq,
                            "seed {}: node {i} installed {} after {}",
                            self.seed,
                            view.id,
                            last_view
                        );
                    }
                    slot.installed.push((me, view.id));
                }
                GroupEvent::Rejoined { new, .. } => {
                    self.slots[i].rejoins += 1;
                    self.incarnations[i] += 1;
                    // A new incarnation: its reliable layer starts over too.
                    self.id_slots.insert(new, i);
                    self.slots[i].stack = self.new_stack_node(new);
                }
            }
        }
        self.drain_stack(i);
    }

    fn handle(&mut self, i: usize, input: Input) {
        let _span = tracing::debug_span!("node", i).entered();
        let now = self.now;
        let input = match input {
            Input::Datagram { from, datagram } => {
                self.stack_datagram(i, from, datagram);
                return;
            }
            other => other,
        };
        let Some(mut node) = self.slots[i].node.take() else {
            return;
        };
        match input {
            Input::Message { from, packet } => node.handle_packet(from, packet, now),
            Input::Beat { from } => {
                // A new id at a known address: the old process is gone (the membership
                // service reports it as restarted).
                if let Some(old) = self.slots[i].heard.insert(from.addr, from.id)
                    && old != from.id
                {
                    node.member_restarted(old, now);
                }
                node.heard_from(from, now);
            }
            Input::LinkClosed { id } => node.link_closed(id, now),
            Input::Shutdown { id } => node.member_left(id, now),
            Input::HostCheck { id, result } => node.host_check_result(id, result, now),
            Input::Datagram { .. } => {}
        }
        self.drain_node(i, &mut node);
        self.slots[i].node = Some(node);
    }

    /// Runs until `until`, processing every event and timer in order.
    pub(crate) fn run_until(&mut self, until: Instant) {
        let mut spins = 0u64;
        let load = self.load();
        loop {
            // The next thing to happen: a delivery, a timer, a beat or a resume.
            let mut next = until;
            if let Some(Reverse((at, ..))) = self.queue.peek() {
                next = next.min(*at);
            }
            for s in &self.slots {
                let Some(node) = &s.node else { continue };
                match s.paused_until {
                    Some(resume) => next = next.min(resume),
                    None => {
                        next = next.min(s.next_beat);
                        if let Some(t) = node.poll_timeout() {
                            next = next.min(t);
                        }
                        if let Some(t) = s.stack.as_ref().and_then(|st| st.next_due(load)) {
                            next = next.min(t);
                        }
                    }
                }
            }
            if next > until {
                self.now = until;
                return;
            }
            if next > self.now {
                spins = 0;
            }
            spins += 1;
            assert!(
                spins < 1_000_000,
                "seed {}: time stands still at {:?}: {}",
                self.seed,
                self.now - self.start,
                self.describe()
            );
            self.now = next.max(self.now);
            self.steps += 1;
            if let Some(Reverse((at, ..))) = self.queue.peek()
                && *at <= self.now
            {
                let Reverse((_, key, to, _)) = self.queue.pop().expect("peeked");
                let input = self.payloads.remove(&key).expect("queued input");
                if self.slots[to].paused_until.is_some() {
                    self.slots[to].held.push(input);
                } else {
                    self.handle(to, input);
                }
                continue;
            }
            self.step_timers();
            if self.now >= until
                && self
                    .queue
                    .peek()
                    .is_none_or(|Reverse((at, ..))| *at > until)
            {
                return;
            }
        }
    }

    pub(crate) fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    fn step_timers(&mut self) {
        let now = self.now;
        for i in 0..self.len() {
            if self.slots[i].node.is_none() {
                continue;
            }
            if let Some(resume) = self.slots[i].paused_until {
                if resume > now {
                    continue;
                }
                // On resume the timers fire first (late), then the buffered input is read.
                self.slots[i].paused_until = None;
                let mut node = self.slots[i].node.take().expect("live");
                node.handle_timeout(now);
                self.drain_node(i, &mut node);
                self.slots[i].node = Some(node);
                for input in std::mem::take(&mut self.slots[i].held) {
                    self.handle(i, input);
                }
            }
            if self.slots[i].next_beat <= now {
                self.slots[i].next_beat = now + BEAT;
                let node = self.slots[i].node.as_ref().expect("live");
                let from = node.local();
                for j in 0..self.len() {
                    if j != i {
                        self.deliver_later(i, j, Input::Beat { from });
                    }
                }
            }
            let _span = tracing::debug_span!("node", i).entered();
            let mut node = self.slots[i].node.take().expect("live");
            if node.poll_timeout().is_some_and(|t| t <= now) {
                node.handle_timeout(now);
            }
            self.drain_node(i, &mut node);
            self.stack_timers(i);
            // The ring: a watched process that is gone closes the connection (or refuses a
            // new one) unless a partition is in between.
            if self.ring
                && let Some(w) = node.watched()
                && let Some(j) = self.slot_of(w.addr)
                && self.id(j) != Some(w.id)
                && self.partition[i] == self.partition[j]
                && self.slots[i].ring_reported.insert(w.id)
            {
                self.enqueue(
                    now + Duration::from_millis(1),
                    i,
                    Input::LinkClosed { id: w.id },
                );
            }
            self.slots[i].node = Some(node);
        }
    }

    /// True if every live, unpaused node is in the same view, listing exactly them.
    pub(crate) fn converged(&self) -> bool {
        let live: Vec<usize> = (0..self.len()).filter(|&i| self.is_live(i)).collect();
        let ids: HashSet<MemberId> = live.iter().filter_map(|&i| self.id(i)).collect();
        let Some(first) = live.first().and_then(|&i| self.view(i)) else {
            return live.is_empty();
        };
        live.iter()
            .all(|&i| self.view(i).is_some_and(|v| v.id == first.id))
            && first.members.len() == ids.len()
            && first.ids().all(|id| ids.contains(&id))
    }

    /// Runs until [`converged`](Self::converged), failing after `limit`.
    pub(crate) fn run_until_converged(&mut self, limit: Duration) -> Duration {
        let began = self.now;
        let step = Duration::from_millis(10);
        while !self.converged() {
            assert!(
                self.now.saturating_duration_since(began) < limit,
                "seed {}: no common view after {limit:?}: {}",
                self.seed,
                self.describe()
            );
            self.run_for(step);
        }
        self.now.saturating_duration_since(began)
    }

    /// The views of all nodes, for failure messages.
    pub(crate) fn describe(&self) -> String {
        let mut by_view: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for i in 0..self.len() {
            let key = match self.slots[i].node.as_ref() {
                None => "crashed".to_string(),
                Some(n) => match n.view() {
                    Some(v) => {
                        // Each member as its slot number, "x" for ids no live node has.
                        let slots: Vec<String> = v
                            .ids()
                            .map(|id| {
                                (0..self.len())
                                    .find(|&j| self.id(j) == Some(id))
                                    .map_or_else(|| "x".to_string(), |j| j.to_string())
                            })
                            .collect();
                        format!("{} [{}]", v.id, slots.join(","))
                    }
                    None => format!("no view ({n:?})"),
                },
            };
            by_view.entry(key).or_default().push(i);
        }
        format!("{by_view:?} at t={:?}", self.now - self.start)
    }

    /// How many distinct views were installed so far.
    pub(crate) fn views_seen(&self) -> usize {
        self.views.len()
    }

    /// Total removals made by coordinators so far.
    pub(crate) fn removals(&self) -> u64 {
        self.slots
            .iter()
            .filter_map(|s| s.node.as_ref())
            .map(|n| n.stats().removals)
            .sum()
    }
}

/// The seed to use: `GROUP_SIM_SEED` if set (to replay a failure), else `default`.
pub(crate) fn seed(default: u64) -> u64 {
    std::env::var("GROUP_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
