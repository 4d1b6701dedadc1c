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
//! - total order (with [`StackConfig::total_order`]): every member delivers, in each
//!   view, a prefix of one and the same sequence of total-order messages, each sender's
//!   in its order and none twice;
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
use crate::total::{TotalConfig, TotalOrder, TotalSend};
use crate::wire::cohort::total::TotalRecord;

/// First byte of every application payload in the simulation: a plain multicast, or a
/// record of the total-order layer.
const PLAIN: u8 = 0;
const TOTAL: u8 = 1;

/// How the reliable layer and its application run.
#[derive(Debug, Clone)]
pub(crate) struct StackConfig {
    pub(crate) reliable: ReliableConfig,
    /// Every node multicasts one message this often while [`Sim::set_load`] is on.
    pub(crate) send_interval: Duration,
    /// Filler bytes per message.
    pub(crate) filler: usize,
    /// Every other message of the applications goes in total order (a
    /// [`TotalOrder`] on every node, over the reliable layer).
    pub(crate) total_order: bool,
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
            total_order: false,
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
    /// Total order: per view, the sequence of (origin, counter) the first member to
    /// get that far delivered; every member must deliver a prefix of it.
    total: HashMap<ViewId, Vec<(MemberId, u64)>>,
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
    /// Total-order messages multicast by the applications.
    pub(crate) total_sent: u64,
    /// Total-order messages delivered (each member's deliveries count).
    pub(crate) total_delivered: u64,
    /// Total-order messages forwarded again to a new sequencer.
    pub(crate) total_resent: u64,
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
    /// The total-order layer, when the applications use it.
    total: Option<TotalOrder>,
    /// Total-order messages this node's application multicast.
    total_sent: u64,
    /// Total-order deliveries per view (the position in that view's sequence).
    total_at: HashMap<ViewId, usize>,
    /// The last total-order counter delivered per origin.
    total_last: HashMap<MemberId, u64>,
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
            total: HashMap::new(),
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

    /// The total-order layer of node `i`.
    pub(crate) fn total(&self, i: usize) -> Option<&TotalOrder> {
        self.slots[i].stack.as_ref()?.total.as_ref()
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
        let total = stack
            .config
            .total_order
            .then(|| TotalOrder::new(id, TotalConfig::default()));
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
            total,
            total_sent: 0,
            total_at: HashMap::new(),
            total_last: HashMap::new(),
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
            let total_turn = (st.sent + st.total_sent) % 2 == 1;
            if let Some(total) = st.total.as_mut().filter(|_| total_turn) {
                // Counters of total-order messages are their own; the view a message
                // is delivered in is the sequencer's, not the one it was sent in.
                let payload = message(st.id, st.total_sent + 1, 0, stack.config.filler);
                if total.multicast(payload).is_ok() {
                    st.total_sent += 1;
                    stack.stats.total_sent += 1;
                }
            } else if let Some(view) = st.r.view() {
                let payload = tagged(
                    PLAIN,
                    &message(st.id, st.sent + 1, view.id.seq, stack.config.filler),
                );
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
        let now = self.now;
        let Some(mut st) = self.slots[i].stack.take() else {
            return;
        };
        let mut total_deliveries = Vec::new();
        self.send_datagrams(i, &mut st);
        let me = st.id;
        let mut delivered = 0;
        while let Some(d) = st.r.poll_delivery() {
            if d.payload.first() == Some(&TOTAL) {
                let Some(total) = st.total.as_mut() else {
                    panic!("seed {seed}: node {i} got a total-order record without the layer");
                };
                // The delivery's view: the total-order layer's, or the one the reliable
                // layer just installed, which the total-order layer moves to before it
                // takes that view's records (the Unblock is polled below). Views are told
                // apart by id: two sides of a partition number theirs alike.
                let view = match (total.view_id(), st.r.view()) {
                    (Some(t), _) if t.seq == d.view_seq => t,
                    (_, Some(v)) if v.id.seq == d.view_seq => {
                        total.install_view(v);
                        v.id
                    }
                    _ => panic!(
                        "seed {seed}: node {i} delivered in view {} outside it",
                        d.view_seq
                    ),
                };
                let record = d.payload.slice(1..);
                if let Ok(TotalRecord::Ordered { origin, seq, .. }) = TotalRecord::decode(&record)
                    && !d.unicast
                {
                    // The sequencer's stream is a multicast like any other: (a) covers it.
                    st.in_view
                        .entry(d.view_seq)
                        .or_default()
                        .add(origin, seq | 1 << 63);
                }
                // A record from a member that may not send it (an old sequencer's order
                // after the view changed) is the layer's to drop and count.
                let _ = total.handle_record(d.from, record, d.unicast);
                while let Some(t) = total.poll_delivery() {
                    total_deliveries.push((view, t));
                }
                continue;
            }
            delivered += 1;
            let Some((sender, counter, sent_in)) = parse(&d.payload[1..]) else {
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
            match e {
                ReliableEvent::Block => {
                    if let Some(total) = st.total.as_mut() {
                        total.block();
                    }
                }
                ReliableEvent::Unblock { view } => {
                    if let (Some(total), Some(v)) = (st.total.as_mut(), st.r.view())
                        && total.view_id() != Some(v.id)
                    {
                        let resent = total.stats().resent;
                        total.install_view(v);
                        if let Some(stack) = self.stack.as_mut() {
                            stack.stats.total_resent += total.stats().resent - resent;
                        }
                    }
                    installs.push(view);
                }
                _ => {}
            }
        }
        for view in installs {
            self.stack_installed(i, &mut st, view);
        }
        // What the total-order layer has to send now (orders, forwards after a view
        // change) goes out at once.
        pump_total(&mut st, now, &mut total_deliveries);
        self.send_datagrams(i, &mut st);
        self.check_total(i, &mut st, total_deliveries);
        if let Some(stack) = self.stack.as_mut() {
            stack.stats.delivered += delivered;
        }
        st.due = st.r.poll_timeout();
        self.slots[i].stack = Some(st);
    }

    /// Puts node `i`'s datagrams on the network.
    fn send_datagrams(&mut self, i: usize, st: &mut StackNode) {
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
    }

    /// Checks node `i`'s total-order deliveries (`(view seq, delivery)` in order): in
    /// each view a prefix of one sequence, each origin's counters increasing.
    fn check_total(
        &mut self,
        i: usize,
        st: &mut StackNode,
        deliveries: Vec<(ViewId, crate::total::TotalDelivery)>,
    ) {
        let seed = self.seed;
        let Some(stack) = self.stack.as_mut() else {
            return;
        };
        for (view, d) in deliveries {
            stack.stats.total_delivered += 1;
            let Some((origin, counter, _)) = parse(&d.payload) else {
                panic!("seed {seed}: node {i} delivered a corrupted total-order message");
            };
            assert_eq!(origin, d.origin, "seed {seed}: node {i}: origin");
            let last = st.total_last.entry(origin).or_insert(0);
            assert!(
                counter > *last,
                "seed {seed}: node {i} delivered {origin}'s total-order #{counter} after #{last}"
            );
            *last = counter;
            let at = st.total_at.entry(view).or_insert(0);
            let order = stack.total.entry(view).or_default();
            match order.get(*at) {
                Some(&expected) => assert_eq!(
                    expected,
                    (origin, counter),
                    "seed {seed}: node {i} ({}) delivered another total order in view {view} at position {at} (its sequencer: {:?})",
                    st.id,
                    st.total.as_ref().and_then(TotalOrder::sequencer)
                ),
                None => order.push((origin, counter)),
            }
            *at += 1;
        }
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

/// `payload` with its kind byte in front.
fn tagged(kind: u8, payload: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(1 + payload.len());
    v.push(kind);
    v.extend_from_slice(payload);
    Bytes::from(v)
}

/// Hands what the total-order layer of `st` has to send to its reliable layer, as long as
/// the reliable layer takes it; collects the sequencer's own deliveries (stamped with the
/// view they happen in).
fn pump_total(
    st: &mut StackNode,
    now: Instant,
    out: &mut Vec<(ViewId, crate::total::TotalDelivery)>,
) {
    let Some(total) = st.total.as_mut() else {
        return;
    };
    let mut took = false;
    while let Some(send) = total.peek_send() {
        let result = match send {
            TotalSend::Unicast { to, record } => {
                st.r.unicast(*to, tagged(TOTAL, record), SendOpts::default(), now)
            }
            TotalSend::Multicast { record } => {
                st.r.multicast(tagged(TOTAL, record), SendOpts::default(), now)
            }
        };
        if result.is_err() {
            // No credit, or blocked: the layer keeps it, in its place.
            break;
        }
        total.pop_send();
        took = true;
    }
    let Some(view) = st.r.view().map(|v| v.id) else {
        return;
    };
    while let Some(d) = total.poll_delivery() {
        out.push((view, d));
    }
    if took {
        st.r.flush(now);
    }
}
