//! The reliable layer on the group in the simulation: every node runs a [`Reliable`] with
//! view synchrony that follows its [`Group`](crate::group::Group)'s views (as
//! `ReliableChannel::for_node` does), an application that multicasts under load, and the
//! checkers of what view synchrony promises, after every step:
//!
//! - (a) members that install the same two consecutive views delivered the same set of
//!   messages in the first;
//! - (b) per-sender FIFO, and (e) nothing delivered twice: each member delivers each
//!   sender's counters strictly increasing;
//! - (c) a message is delivered in the view it was sent in (and deliveries' views only
//!   grow);
//! - (d) one view id names one member list (the group's views, checked in `mod.rs`; every
//!   view installed here must be one of them, with the same members).
//!
//! Datagrams travel as UDP does: lost across a cut, lost, duplicated and reordered as the
//! [`NetConfig`](super::NetConfig) says.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng;

use super::{Input, Sim};
use crate::group::{View, ViewId};
use crate::membership::MemberId;
use crate::reliable::{Destination, Reliable, ReliableConfig, ReliableEvent, SendOpts};

/// How the reliable layer and its application run.
#[derive(Debug, Clone)]
pub(crate) struct StackConfig {
    pub(crate) reliable: ReliableConfig,
    /// Every node multicasts one message this often while [`Sim::set_load`] is on.
    pub(crate) send_interval: Duration,
    /// Filler bytes per message.
    pub(crate) filler: usize,
}

impl Default for StackConfig {
    fn default() -> Self {
        Self {
            reliable: ReliableConfig {
                view_synchrony: true,
                ..ReliableConfig::lan()
            },
            send_interval: Duration::from_millis(20),
            filler: 16,
        }
    }
}

/// The settings and the checkers' memory, shared by all nodes.
pub(super) struct Stack {
    config: StackConfig,
    load: bool,
    /// Invariant (a): per pair of consecutive views, what the first member to install
    /// them delivered in the first.
    pairs: HashMap<(ViewId, ViewId), (Fingerprint, MemberId)>,
    stats: StackStats,
}

/// What happened in the reliable layer, for the tests' reports.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StackStats {
    /// Messages multicast by the applications.
    pub(crate) sent: u64,
    /// Messages delivered (each member's deliveries count).
    pub(crate) delivered: u64,
    /// Views installed by reliable layers.
    pub(crate) installs: u64,
    /// Installs after which invariant (a) was compared with another member's.
    pub(crate) pairs_compared: u64,
    /// Sends refused because a flush was under way.
    pub(crate) blocked_sends: u64,
}

/// An order-independent summary of a set of messages (count and a sum of hashes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Fingerprint {
    count: u64,
    sum: u64,
}

impl Fingerprint {
    fn add(&mut self, sender: MemberId, counter: u64) {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for b in sender.0.iter().chain(counter.to_be_bytes().iter()) {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.count += 1;
        self.sum = self.sum.wrapping_add(h);
    }
}

/// One node's reliable layer and application.
pub(super) struct StackNode {
    r: Reliable,
    id: MemberId,
    next_send: Instant,
    sent: u64,
    /// The view installed in the reliable layer (from its `Unblock` events).
    view: Option<ViewId>,
    /// What was delivered per view seq (the views' deliveries are stamped).
    in_view: BTreeMap<u64, Fingerprint>,
    /// The view seq of the last delivery.
    last_stamp: u64,
    /// The last counter delivered per sender.
    last: HashMap<MemberId, u64>,
    /// `r.poll_timeout()` after the last call into `r` (it walks every peer, and the
    /// simulation asks for every node at every step).
    due: Option<Instant>,
}

impl StackNode {
    /// When the node has something to do: a timer, or (under load) its next send.
    pub(super) fn next_due(&self, load: bool) -> Option<Instant> {
        match (self.due, load) {
            (Some(t), true) => Some(t.min(self.next_send)),
            (None, true) => Some(self.next_send),
            (due, false) => due,
        }
    }
}

/// A message: sender id, counter, the view seq it was sent in, filler.
fn message(sender: MemberId, counter: u64, view_seq: u64, filler: usize) -> Bytes {
    let mut v = Vec::with_capacity(32 + filler);
    v.extend_from_slice(&sender.0);
    v.extend_from_slice(&counter.to_be_bytes());
    v.extend_from_slice(&view_seq.to_be_bytes());
    v.extend((0..filler).map(|i| (i as u8) ^ (counter as u8)));
    Bytes::from(v)
}

fn parse(payload: &[u8]) -> Option<(MemberId, u64, u64)> {
    if payload.len() < 32 {
        return None;
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&payload[..16]);
    let counter = u64::from_be_bytes(payload[16..24].try_into().ok()?);
    let view = u64::from_be_bytes(payload[24..32].try_into().ok()?);
    let filler_ok = payload[32..]
        .iter()
        .enumerate()
        .all(|(i, b)| *b == (i as u8) ^ (counter as u8));
    filler_ok.then_some((MemberId(id), counter, view))
}

impl Sim {
    /// Runs the reliable layer with view synchrony on every node (started from now on).
    pub(crate) fn with_stack(mut self, config: StackConfig) -> Self {
        self.stack = Some(Stack {
            config,
            load: false,
            pairs: HashMap::new(),
            stats: StackStats::default(),
        });
        self
    }

    /// Whether the applications multicast now.
    pub(super) fn load(&self) -> bool {
        self.stack.as_ref().is_some_and(|s| s.load)
    }

    /// Turns the applications' multicasting on or off.
    pub(crate) fn set_load(&mut self, on: bool) {
        if let Some(st) = self.stack.as_mut() {
            st.load = on;
        }
    }

    /// What the reliable layers did so far.
    pub(crate) fn stack_stats(&self) -> StackStats {
        self.stack.as_ref().map(|s| s.stats).unwrap_or_default()
    }

    /// The reliable layer of node `i`.
    pub(crate) fn reliable(&self, i: usize) -> Option<&Reliable> {
        self.slots[i].stack.as_ref().map(|s| &s.r)
    }

    pub(super) fn new_stack_node(&mut self, id: MemberId) -> Option<StackNode> {
        let stack = self.stack.as_ref()?;
        let mut config = stack.config.reliable.clone();
        config.rng_seed = self.rng.random();
        let first_send = self.now + stack.config.send_interval.mul_f64(self.rng.random());
        Some(StackNode {
            r: Reliable::new(config, id, self.now),
            id,
            next_send: first_send,
            sent: 0,
            view: None,
            in_view: BTreeMap::new(),
            last_stamp: 0,
            last: HashMap::new(),
            due: None,
        })
    }

    /// The group of node `i` installed `view`.
    pub(super) fn stack_view(&mut self, i: usize, view: &View) {
        let now = self.now;
        if let Some(st) = self.slots[i].stack.as_mut() {
            st.r.install_view(view, now);
        }
    }

    pub(super) fn stack_datagram(&mut self, i: usize, from: MemberId, datagram: Bytes) {
        let now = self.now;
        let Some(st) = self.slots[i].stack.as_mut() else {
            return;
        };
        // Malformed or misaddressed datagrams (for an earlier incarnation) are the core's
        // to drop.
        let _ = st.r.handle_datagram(from, datagram, now);
        self.drain_stack(i);
    }

    /// Timers and the application's sends of node `i`.
    pub(super) fn stack_timers(&mut self, i: usize) {
        let now = self.now;
        let Some(stack) = self.stack.as_mut() else {
            return;
        };
        let Some(st) = self.slots[i].stack.as_mut() else {
            return;
        };
        if st.due.is_some_and(|t| t <= now) {
            st.r.handle_timeout(now);
        }
        if stack.load && st.next_send <= now {
            st.next_send = now + stack.config.send_interval;
            if let Some(view) = st.r.view() {
                let payload = message(st.id, st.sent + 1, view.id.seq, stack.config.filler);
                match st.r.multicast(payload, SendOpts::default(), now) {
                    Ok(()) => {
                        st.sent += 1;
                        stack.stats.sent += 1;
                    }
                    Err(crate::reliable::SendError::Blocked) => stack.stats.blocked_sends += 1,
                    Err(_) => {}
                }
                st.r.flush(now);
            }
        }
        self.drain_stack(i);
    }

    /// Sends node `i`'s datagrams, and checks its deliveries and views.
    pub(super) fn drain_stack(&mut self, i: usize) {
        let seed = self.seed;
        let Some(mut st) = self.slots[i].stack.take() else {
            return;
        };
        while let Some(t) = st.r.poll_transmit() {
            let targets: Vec<MemberId> = match t.to {
                Destination::Group => st.r.members().to_vec(),
                Destination::Member(m) => vec![m],
            };
            for m in targets {
                if let Some(&j) = self.id_slots.get(&m)
                    && j != i
                {
                    let input = Input::Datagram {
                        from: st.id,
                        datagram: t.datagram.clone(),
                    };
                    self.deliver_later(i, j, input);
                }
            }
        }
        let me = st.id;
        let mut delivered = 0;
        while let Some(d) = st.r.poll_delivery() {
            delivered += 1;
            let Some((sender, counter, sent_in)) = parse(&d.payload) else {
                panic!("seed {seed}: node {i} delivered a corrupted message");
            };
            assert_eq!(sender, d.from, "seed {seed}: node {i}: sender");
            // (c) delivered in the view it was sent in; deliveries' views only grow.
            assert_eq!(
                d.view_seq, sent_in,
                "seed {seed}: node {i} ({me}) delivered {sender}#{counter}, sent in view {sent_in}, in view {}",
                d.view_seq
            );
            assert!(
                d.view_seq >= st.last_stamp,
                "seed {seed}: node {i} delivered in view {} after view {}",
                d.view_seq,
                st.last_stamp
            );
            st.last_stamp = d.view_seq;
            // (b) FIFO and (e) no duplicates.
            let last = st.last.entry(sender).or_insert(0);
            assert!(
                counter > *last,
                "seed {seed}: node {i} ({me}) delivered {sender}#{counter} after #{last}"
            );
            *last = counter;
            st.in_view
                .entry(d.view_seq)
                .or_default()
                .add(sender, counter);
        }
        let mut installs = Vec::new();
        while let Some(e) = st.r.poll_event() {
            if let ReliableEvent::Unblock { view } = e {
                installs.push(view);
            }
        }
        for view in installs {
            self.stack_installed(i, &mut st, view);
        }
        if let Some(stack) = self.stack.as_mut() {
            stack.stats.delivered += delivered;
        }
        st.due = st.r.poll_timeout();
        self.slots[i].stack = Some(st);
    }

    /// Node `i`'s reliable layer installed `view`: check (a) and (d).
    fn stack_installed(&mut self, i: usize, st: &mut StackNode, view: ViewId) {
        let seed = self.seed;
        // (d) the view is one of the group's, and its members are the group's.
        let Some(members) = self.views.get(&view) else {
            panic!("seed {seed}: node {i} installed {view}, never a group view");
        };
        if let Some(v) = st.r.view().filter(|v| v.id == view) {
            let ids: Vec<MemberId> = v.ids().collect();
            assert_eq!(&ids, members, "seed {seed}: two member lists under {view}");
        }
        let member = members.contains(&st.id);
        let Some(stack) = self.stack.as_mut() else {
            return;
        };
        stack.stats.installs += 1;
        let previous = st.view.replace(view);
        let Some(previous) = previous else { return };
        let delivered = st.in_view.remove(&previous.seq).unwrap_or_default();
        st.in_view.retain(|seq, _| *seq >= view.seq);
        if !member {
            // Removed: it installs nothing after its last view with the others.
            return;
        }
        // (a) the same two consecutive views, the same messages in the first.
        match stack.pairs.get(&(previous, view)) {
            Some((other, who)) => {
                stack.stats.pairs_compared += 1;
                assert_eq!(
                    *other, delivered,
                    "seed {seed}: node {i} ({}) and {who} installed {previous} then {view} but delivered different messages in {previous}",
                    st.id
                );
            }
            None => {
                stack.pairs.insert((previous, view), (delivered, st.id));
            }
        }
    }

    /// True if the group converged and every live node's reliable layer installed the
    /// group's view and is not blocked.
    pub(crate) fn stack_converged(&self) -> bool {
        if !self.converged() {
            return false;
        }
        (0..self.len()).filter(|&i| self.is_live(i)).all(|i| {
            let group = self.view(i).map(|v| v.id);
            self.reliable(i)
                .is_some_and(|r| r.view().map(|v| v.id) == group && !r.is_blocked())
        })
    }

    /// Runs until [`stack_converged`](Self::stack_converged), failing after `limit`.
    pub(crate) fn run_until_stack_converged(&mut self, limit: Duration) -> Duration {
        let began = self.now;
        while !self.stack_converged() {
            assert!(
                self.now.saturating_duration_since(began) < limit,
                "seed {}: reliable layers not in the group's view after {limit:?}: {}",
                self.seed,
                self.describe_stack()
            );
            self.run_for(Duration::from_millis(10));
        }
        self.now.saturating_duration_since(began)
    }

    /// The group's and the reliable layers' views, for failure messages.
    pub(crate) fn describe_stack(&self) -> String {
        let mut s = self.describe();
        for i in 0..self.len() {
            if let Some(r) = self.reliable(i) {
                s.push_str(&format!(
                    "\n  node {i}: group {:?} reliable {:?} blocked {} stats {:?}",
                    self.view(i).map(|v| v.id),
                    r.view().map(|v| v.id),
                    r.is_blocked(),
                    (
                        r.stats().flushes,
                        r.stats().flush_restarts,
                        r.stats().delivered
                    ),
                ));
            }
        }
        s
    }
}
