//! Reliable, ordered group messaging over unreliable datagrams (SPEC §5): what JGroups'
//! NAKACK, UNICAST, STABLE, MFC/UFC, FRAG2 and bundling, and Coherence's TCMP, do.
//!
//! - **Multicast**: every member numbers its multicasts 1, 2, 3, ...; every other member of
//!   the view delivers each exactly once, in that order. **Unicast**: each ordered pair of
//!   members has its own numbering, with the same guarantee.
//! - **Loss**: a receiver that sees a gap (or learns of a higher seqno from a gossip) sends
//!   a NAK after [`nak_backoff`](ReliableConfig::nak_backoff) and again on the back-off
//!   schedule until the message arrives. The sender (or a random member, or by multicast,
//!   as configured) retransmits it.
//! - **Stability**: every member gossips, every
//!   [`stable_interval`](ReliableConfig::stable_interval) while anything is outstanding,
//!   how far it consumed every sender's multicasts and the highest seqno it sent itself.
//!   What every member consumed is purged from the retransmit buffers; the highest seqno
//!   lets receivers find a lost last message.
//! - **Flow control**: acknowledgements are credits. A stream may have at most
//!   [`credit_window`](ReliableConfig::credit_window) bytes that some receiver has not
//!   consumed; beyond that [`Reliable::multicast`] and [`Reliable::unicast`] fail with
//!   [`SendError::NoCredit`] and a [`ReliableEvent::CreditAvailable`] follows when credit
//!   returns. A receiver whose application does not drain [`Reliable::poll_delivery`]
//!   withholds its acknowledgements, so its senders slow down instead of growing its
//!   memory.
//! - **Fragmentation** of messages larger than a datagram (up to
//!   [`max_message_size`](ReliableConfig::max_message_size)), **bundling** of small
//!   messages and control records into one datagram, **out-of-band** messages
//!   (reliable, delivered as soon as they arrive, not ordered).
//! - **Views**: [`Reliable::install_view`]. A member that joins starts at each sender's
//!   first seqno of the view it joined in (the sender's datagram header and gossip carry
//!   it); a member that leaves is forgotten at once, so it no longer holds stability or
//!   credits back.
//!
//! # Using it
//!
//! [`Reliable`] is a state machine for one member; it never touches a socket or a clock.
//!
//! 1. Inputs: [`Reliable::install_view`] on every view change, [`Reliable::handle_datagram`]
//!    for every datagram received, [`Reliable::handle_timeout`] when the deadline from
//!    [`Reliable::poll_timeout`] passes (early or spurious calls are harmless).
//! 2. Commands: [`Reliable::multicast`], [`Reliable::unicast`], and [`Reliable::flush`] at
//!    the end of a burst of sends. Sends fill open datagrams (one per destination); `flush`
//!    closes them. Datagrams also close when full, and at the end of any `handle_*` call
//!    once they are older than [`bundle_linger`](ReliableConfig::bundle_linger) (default
//!    zero: at once), so `poll_timeout` reports an open datagram as due.
//! 3. Outputs, after every input or command: drain [`Reliable::poll_transmit`] (send each
//!    datagram), [`Reliable::poll_delivery`], [`Reliable::poll_event`], then re-arm the
//!    timer from [`Reliable::poll_timeout`].
//!
//! [`Destination::Group`] means "every other member of the current view". The runtime
//! sends it once to the multicast group, or, when multicast is off, once to each member
//! of [`Reliable::members`]: the core does not know addresses, so fan-out is the
//! runtime's job. Datagrams a runtime receives from itself (multicast loopback) are
//! ignored.
//!
//! # Example
//!
//! Two members in memory; the "network" hands each datagram to the other member.
//!
//! ```
//! use std::net::SocketAddr;
//! use std::time::Instant;
//!
//! use bytes::Bytes;
//! use cohort_proto::MemberId;
//! use cohort_proto::group::{GroupMember, View, ViewId};
//! use cohort_proto::reliable::{Destination, Reliable, ReliableConfig, SendOpts};
//!
//! let now = Instant::now();
//! let (a, b) = (MemberId([1; 16]), MemberId([2; 16]));
//! let member = |id| GroupMember { id, addr: SocketAddr::from(([127, 0, 0, 1], 7000)) };
//! let view = View { id: ViewId { seq: 1, coordinator: a }, members: vec![member(a), member(b)] };
//! let mut alice = Reliable::new(ReliableConfig::default(), a, now);
//! let mut bob = Reliable::new(ReliableConfig::default(), b, now);
//! alice.install_view(&view, now);
//! bob.install_view(&view, now);
//!
//! alice.multicast(Bytes::from_static(b"hello"), SendOpts::default(), now).unwrap();
//! alice.flush(now); // end of the burst: close the datagram
//! while let Some(t) = alice.poll_transmit() {
//!     assert_eq!(t.to, Destination::Group); // multicast, or one copy per member of members()
//!     bob.handle_datagram(a, t.datagram, now).unwrap();
//! }
//! let d = bob.poll_delivery().unwrap();
//! assert_eq!((d.from, &d.payload[..]), (a, &b"hello"[..]));
//! // Alice delivers her own multicast too (deliver_own), and keeps it until Bob's
//! // acknowledgement comes back with his next stability gossip:
//! assert_eq!(&alice.poll_delivery().unwrap().payload[..], b"hello");
//! assert!(alice.stats().retransmit_buffer_messages > 0);
//! let later = now + bob.config().stable_interval;
//! assert!(bob.poll_timeout().is_some_and(|t| t <= later));
//! bob.handle_timeout(later);
//! while let Some(t) = bob.poll_transmit() {
//!     alice.handle_datagram(b, t.datagram, later).unwrap();
//! }
//! assert_eq!(alice.stats().retransmit_buffer_messages, 0);
//! ```

mod bundle;
mod config;
mod recv;
mod send;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Instant;

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tracing::{debug, trace};

pub use config::{ConfigError, ReliableConfig};

use bundle::Bundler;
use recv::{Received, RecvWindow};
use send::{SendBuffer, Sent};

use crate::group::View;
use crate::membership::MemberId;
use crate::wire::DecodeError;
use crate::wire::cohort::reliable::{
    self as wire, ACK_RECORD_LEN, DataRecord, Fragment, MAX_NAK_RANGES, MAX_STABLE_ENTRIES, Record,
    StreamRef, UNICAST_HIGHEST_RECORD_LEN,
};

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Destination {
    /// Every other member of the current view (multicast, or unicast fan-out).
    Group,
    /// One member.
    Member(MemberId),
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Transmit {
    /// Where it goes.
    pub to: Destination,
    /// The bytes, at most [`max_datagram_size`](ReliableConfig::max_datagram_size).
    pub datagram: Bytes,
}

/// A message delivered to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The member that sent it.
    pub from: MemberId,
    /// The message (a slice of the received datagram unless it was fragmented).
    pub payload: Bytes,
    /// Out-of-band: delivered when it arrived, possibly before earlier messages of `from`.
    pub oob: bool,
    /// Sent with [`Reliable::unicast`] (to this member only) rather than multicast.
    pub unicast: bool,
}

/// Options of one send.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendOpts {
    /// Out-of-band: reliable, but delivered as soon as it arrives rather than in order.
    pub oob: bool,
}

impl SendOpts {
    /// Options for an out-of-band message.
    pub const OOB: Self = Self { oob: true };
}

/// Why a send was refused. Nothing was sent and nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The flow-control window (or retransmit buffer bound) is full: try again after
    /// [`ReliableEvent::CreditAvailable`] for this destination.
    #[error("no credit: receivers have not consumed enough of what was sent")]
    NoCredit,
    /// The message is larger than [`max_message_size`](ReliableConfig::max_message_size).
    #[error("message of {len} bytes exceeds the maximum {max}")]
    TooLarge {
        /// The message's size.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The local member is not in a view (none installed yet, or it was removed).
    #[error("the local member is not in a view")]
    NotInView,
    /// The destination of a unicast is not a member of the current view.
    #[error("{0} is not a member of the current view")]
    UnknownMember(MemberId),
}

/// Why a received datagram was dropped. It is counted in [`ReliableStats::malformed`];
/// nothing else changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatagramError {
    /// The bytes are not a valid reliable datagram (records before the bad one were
    /// processed).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The header names another sender than the one the runtime received it from.
    #[error("datagram claims sender {claimed}, received from {from}")]
    SenderMismatch {
        /// The member the runtime attributes the datagram to.
        from: MemberId,
        /// The sender in the header.
        claimed: MemberId,
    },
    /// A unicast datagram addressed to another member (for example an earlier
    /// incarnation of this process).
    #[error("datagram addressed to {0}")]
    NotForMe(MemberId),
}

/// Something the application may want to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReliableEvent {
    /// A send to `to` was refused with [`SendError::NoCredit`] and credit has returned.
    /// Reported once per refusal streak.
    CreditAvailable {
        /// [`Destination::Group`] for multicasts, else the unicast destination.
        to: Destination,
    },
}

/// Counters and gauges, for metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReliableStats {
    /// Messages delivered to the application (fragmented ones once).
    pub delivered: u64,
    /// Messages (or fragments) sent the first time.
    pub sent: u64,
    /// Datagrams handed out by `poll_transmit`.
    pub datagrams_sent: u64,
    /// Datagrams taken in by `handle_datagram`.
    pub datagrams_received: u64,
    /// Ranges asked for in NAKs sent.
    pub naks_sent: u64,
    /// Ranges asked for in NAKs received.
    pub naks_received: u64,
    /// Messages retransmitted.
    pub retransmitted: u64,
    /// Messages received again after they were received or delivered.
    pub duplicates: u64,
    /// Datagrams dropped as malformed, misaddressed or forged.
    pub malformed: u64,
    /// Data from members not in the view, or too far ahead of the window.
    pub dropped: u64,
    /// Sends refused for lack of credit.
    pub no_credit: u64,
    /// Bytes (credit cost) in the local retransmit buffers (own multicasts and unicasts).
    pub retransmit_buffer_bytes: usize,
    /// Messages in the local retransmit buffers.
    pub retransmit_buffer_messages: usize,
    /// Payload bytes held by receive windows (out of order, or kept until stable).
    pub receive_buffer_bytes: usize,
    /// Payload bytes of deliveries waiting for `poll_delivery`.
    pub delivery_queue_bytes: usize,
    /// Outgoing streams currently refused for lack of credit.
    pub waiting_for_credit: usize,
}

/// Hashes member ids by folding their bytes: ids are random (and only view members are
/// keys), so this is as good as SipHash here and much cheaper on the per-message path.
#[derive(Debug, Default, Clone, Copy)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(29) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
}

type IdMap<V> = HashMap<MemberId, V, BuildHasherDefault<IdHasher>>;

/// What this member knows about another member of the view.
#[derive(Debug)]
struct Peer {
    /// Its multicasts; `None` until the seqno it starts at is known.
    mcast_in: Option<RecvWindow>,
    /// Its unicasts to this member.
    uni_in: RecvWindow,
    /// This member's unicasts to it.
    uni_out: SendBuffer,
    /// How far it consumed this member's multicasts.
    mcast_acked: u64,
    /// The seqno it starts at in this member's multicasts; gossiped until it confirms.
    start_for_it: Option<u64>,
    /// The view in which this member first saw it: its datagrams headed with this view
    /// say where its multicasts start for this member.
    since_view: u64,
    /// Its gossip: how far it consumed each origin's multicasts (kept only when delivered
    /// messages are retained, to purge them once stable).
    reported: HashMap<MemberId, u64>,
}

/// Reliable multicast and unicast for one member. See the [module docs](self) for what it
/// does and the order of calls.
#[derive(Debug)]
pub struct Reliable {
    config: ReliableConfig,
    local: MemberId,
    view: Option<View>,
    /// The other members of the view, in view order.
    others: Vec<MemberId>,
    peers: IdMap<Peer>,
    mcast_out: SendBuffer,
    /// The first seqno of the local multicasts in the current view.
    view_start: u64,
    /// The most seqnos a receive window may span (what an honest sender's window allows).
    max_span: u64,
    bundler: Bundler,
    transmits: VecDeque<Transmit>,
    deliveries: VecDeque<Delivery>,
    events: VecDeque<ReliableEvent>,
    stats: ReliableStats,
    delivery_queue_bytes: usize,
    next_stable: Option<Instant>,
    /// Something to gossip changed since the last gossip.
    gossip_dirty: bool,
    last_now: Instant,
    rng: SmallRng,
    nak_ranges: Vec<(u64, u64)>,
}

impl Reliable {
    /// A member `local` with no view yet. Panics if `config` fails
    /// [`ReliableConfig::validate`] (use [`Reliable::try_new`] to get the error).
    pub fn new(config: ReliableConfig, local: MemberId, now: Instant) -> Self {
        match Self::try_new(config, local, now) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`Reliable::new`], returning an invalid config as an error.
    pub fn try_new(
        config: ReliableConfig,
        local: MemberId,
        now: Instant,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let fragments = config.max_message_size.div_ceil(config.fragment_payload());
        // A sender never has more than a window of credit (or one large message)
        // outstanding, and a receiver never lags behind what the sender still holds.
        let max_span = (config.credit_window / send::MESSAGE_COST + fragments + 16) as u64;
        Ok(Self {
            bundler: Bundler::new(local, config.max_datagram_size),
            rng: SmallRng::seed_from_u64(config.rng_seed),
            config,
            local,
            view: None,
            others: Vec::new(),
            peers: IdMap::default(),
            mcast_out: SendBuffer::new(),
            view_start: 1,
            max_span,
            transmits: VecDeque::new(),
            deliveries: VecDeque::new(),
            events: VecDeque::new(),
            stats: ReliableStats::default(),
            delivery_queue_bytes: 0,
            next_stable: None,
            gossip_dirty: false,
            last_now: now,
            nak_ranges: Vec::new(),
        })
    }

    /// The local member.
    pub fn local(&self) -> MemberId {
        self.local
    }

    /// The settings.
    pub fn config(&self) -> &ReliableConfig {
        &self.config
    }

    /// The current view, if one was installed.
    pub fn view(&self) -> Option<&View> {
        self.view.as_ref()
    }

    /// The other members of the current view: where a [`Destination::Group`] datagram
    /// goes when the runtime fans out instead of multicasting.
    pub fn members(&self) -> &[MemberId] {
        &self.others
    }

    /// The sender named by a datagram's header, for a runtime that knows only the socket
    /// address it came from.
    pub fn datagram_sender(datagram: &[u8]) -> Option<MemberId> {
        wire::peek_sender(datagram)
    }

    // ---- views ----

    /// Installs a new view. Members that left are forgotten (their messages, windows and
    /// acknowledgements), so they hold nothing back; members that joined start at the
    /// local multicast stream's next seqno. If the local member is not in `view`, every
    /// stream is dropped and sends fail with [`SendError::NotInView`].
    pub fn install_view(&mut self, view: &View, now: Instant) {
        self.last_now = now;
        // Datagrams already open carry the old view in their header.
        self.bundler.close(None, &mut self.transmits);
        let in_view = view.contains(&self.local);
        debug!(view = %view.id, members = view.members.len(), in_view, "reliable: install view");
        self.others = view.ids().filter(|id| *id != self.local).collect();
        let left: Vec<MemberId> = self
            .peers
            .keys()
            .filter(|id| !view.contains(id))
            .copied()
            .collect();
        for id in &left {
            self.peers.remove(id);
            self.bundler.forget(id);
        }
        if !in_view {
            self.peers.clear();
            self.others.clear();
            self.mcast_out.purge_through(u64::MAX);
        }
        for peer in self.peers.values_mut() {
            peer.reported
                .retain(|id, _| view.contains(id) && *id != self.local);
        }
        self.view_start = self.mcast_out.next_seqno();
        self.bundler.set_view(view.id.seq, self.view_start);
        for id in &self.others {
            self.peers.entry(*id).or_insert_with(|| Peer {
                mcast_in: None,
                uni_in: RecvWindow::new(1, false, self.max_span),
                uni_out: SendBuffer::new(),
                mcast_acked: self.view_start - 1,
                start_for_it: Some(self.view_start),
                since_view: view.id.seq,
                reported: HashMap::new(),
            });
        }
        self.view = in_view.then(|| view.clone());
        self.gossip_dirty = true;
        self.update_stability();
        self.schedule_stable(now);
    }

    // ---- commands ----

    /// Multicasts `payload` to every member of the view, reliably and (unless out of
    /// band) in order. Fragments it if it is larger than a datagram. It is delivered
    /// locally too if [`deliver_own`](ReliableConfig::deliver_own) is set.
    pub fn multicast(
        &mut self,
        payload: Bytes,
        opts: SendOpts,
        now: Instant,
    ) -> Result<(), SendError> {
        self.last_now = now;
        if self.view.is_none() {
            return Err(SendError::NotInView);
        }
        let total = self.check_size(&payload)?;
        // Own multicasts are delivered locally too: a local application that does not
        // drain its deliveries holds its own sends back like any slow receiver.
        if self.own_queue_full()
            || !self.mcast_out.has_room(
                total,
                self.config.credit_window,
                self.config.max_retransmit_buffer,
            )
        {
            self.stats.no_credit += 1;
            self.mcast_out.blocked = true;
            return Err(SendError::NoCredit);
        }
        if self.config.deliver_own {
            self.delivery_queue_bytes += payload.len();
            self.deliveries.push_back(Delivery {
                from: self.local,
                payload: payload.clone(),
                oob: opts.oob,
                unicast: false,
            });
        }
        let frag = self.config.fragment_payload();
        let count = payload.len().div_ceil(frag).max(1);
        for i in 0..count {
            let (piece, fragment) = if count == 1 {
                (payload.clone(), None)
            } else {
                let end = ((i + 1) * frag).min(payload.len());
                let fragment = Fragment {
                    index: i as u32,
                    count: count as u32,
                };
                (payload.slice(i * frag..end), Some(fragment))
            };
            if !self.others.is_empty() {
                let len = wire::data_record_len(piece.len(), fragment.is_some());
                let buf = self
                    .bundler
                    .buffer(Destination::Group, len, now, &mut self.transmits);
                let seqno = self.mcast_out.next_seqno();
                wire::encode_data(buf, false, seqno, opts.oob, fragment, &piece);
            }
            self.mcast_out.push(Sent {
                payload: piece,
                oob: opts.oob,
                fragment,
            });
        }
        self.stats.sent += count as u64;
        if self.others.is_empty() {
            self.mcast_out.purge_through(u64::MAX);
        }
        self.schedule_stable(now);
        Ok(())
    }

    /// Sends `payload` to member `to` only, reliably and (unless out of band) in order
    /// with the other unicasts to `to`.
    pub fn unicast(
        &mut self,
        to: MemberId,
        payload: Bytes,
        opts: SendOpts,
        now: Instant,
    ) -> Result<(), SendError> {
        self.last_now = now;
        if self.view.is_none() {
            return Err(SendError::NotInView);
        }
        let total = self.check_size(&payload)?;
        let Some(peer) = self.peers.get_mut(&to) else {
            return Err(SendError::UnknownMember(to));
        };
        if !peer.uni_out.has_room(
            total,
            self.config.credit_window,
            self.config.max_retransmit_buffer,
        ) {
            self.stats.no_credit += 1;
            peer.uni_out.blocked = true;
            return Err(SendError::NoCredit);
        }
        let frag = self.config.fragment_payload();
        let count = payload.len().div_ceil(frag).max(1);
        for i in 0..count {
            let (piece, fragment) = if count == 1 {
                (payload.clone(), None)
            } else {
                let end = ((i + 1) * frag).min(payload.len());
                let fragment = Fragment {
                    index: i as u32,
                    count: count as u32,
                };
                (payload.slice(i * frag..end), Some(fragment))
            };
            let len = wire::data_record_len(piece.len(), fragment.is_some());
            let buf = self
                .bundler
                .buffer(Destination::Member(to), len, now, &mut self.transmits);
            let seqno = peer.uni_out.next_seqno();
            wire::encode_data(buf, true, seqno, opts.oob, fragment, &piece);
            peer.uni_out.push(Sent {
                payload: piece,
                oob: opts.oob,
                fragment,
            });
        }
        self.stats.sent += count as u64;
        self.schedule_stable(now);
        Ok(())
    }

    /// Credit cost of `payload` with its fragments, or `TooLarge`.
    fn check_size(&self, payload: &Bytes) -> Result<usize, SendError> {
        self.check_size_len(payload.len())
    }

    fn check_size_len(&self, len: usize) -> Result<usize, SendError> {
        if len > self.config.max_message_size {
            return Err(SendError::TooLarge {
                len,
                max: self.config.max_message_size,
            });
        }
        let count = len.div_ceil(self.config.fragment_payload()).max(1);
        Ok(len + count * send::MESSAGE_COST)
    }

    /// Closes every open datagram now, so `poll_transmit` hands them out. Call it at the
    /// end of a burst of sends.
    pub fn flush(&mut self, now: Instant) {
        self.last_now = now;
        self.bundler.close(None, &mut self.transmits);
    }

    // ---- inputs ----

    /// Takes in a datagram that the runtime received from member `from`. A malformed,
    /// forged or misaddressed datagram is counted and dropped, and the error says why;
    /// records before a malformed one are processed.
    pub fn handle_datagram(
        &mut self,
        from: MemberId,
        datagram: Bytes,
        now: Instant,
    ) -> Result<(), DatagramError> {
        self.last_now = now;
        self.stats.datagrams_received += 1;
        let delivered = self.stats.delivered;
        let result = self.process_datagram(from, &datagram, now);
        if result.is_err() {
            self.stats.malformed += 1;
        }
        if self.stats.delivered != delivered {
            // The last messages are acknowledged by the next stability round.
            self.schedule_stable(now);
            self.send_due_acks(now);
        }
        self.close_due_datagrams(now);
        result
    }

    fn process_datagram(
        &mut self,
        from: MemberId,
        datagram: &Bytes,
        now: Instant,
    ) -> Result<(), DatagramError> {
        let (header, records) = wire::decode(datagram)?;
        if header.sender == self.local {
            return Ok(());
        }
        if header.sender != from {
            return Err(DatagramError::SenderMismatch {
                from,
                claimed: header.sender,
            });
        }
        if let Some(dest) = header.dest
            && dest != self.local
        {
            return Err(DatagramError::NotForMe(dest));
        }
        if self.view.is_none() {
            self.stats.dropped += 1;
            return Ok(());
        }
        let Some(peer) = self.peers.get_mut(&from) else {
            self.stats.dropped += 1;
            return Ok(());
        };
        if peer.mcast_in.is_none() && header.view_seq == peer.since_view {
            // Both members first saw each other in this view, so the sender's multicasts
            // for this member start at its first seqno in it. (Otherwise the start comes
            // from the sender's gossip.)
            peer.mcast_in = Some(RecvWindow::new(
                header.view_start,
                !self.config.discard_delivered,
                self.max_span,
            ));
        }
        for record in records {
            match record? {
                Record::Data(data) => self.receive_multicast(from, data, now),
                Record::Retransmit { origin, data } => {
                    if origin == self.local {
                        continue;
                    }
                    self.receive_multicast(origin, data, now);
                }
                Record::Unicast(data) => self.receive_unicast(from, data, now),
                Record::Nak(nak) => self.handle_nak(from, &nak, now),
                Record::Ack { unicast, seqno } => self.handle_ack(from, unicast, seqno),
                Record::Stable(stable) => self.handle_stable(from, &stable, now),
                Record::UnicastHighest { seqno } => self.handle_unicast_highest(from, seqno, now),
            }
        }
        Ok(())
    }

    fn receive_multicast(&mut self, origin: MemberId, data: DataRecord, now: Instant) {
        let Some(window) = self
            .peers
            .get_mut(&origin)
            .and_then(|p| p.mcast_in.as_mut())
        else {
            self.stats.dropped += 1;
            return;
        };
        let deliveries = &mut self.deliveries;
        let queue = &mut self.delivery_queue_bytes;
        let mut delivered = 0;
        let received = window.receive(data, now, &self.config, &mut |payload, oob| {
            *queue += payload.len();
            delivered += 1;
            deliveries.push_back(Delivery {
                from: origin,
                payload,
                oob,
                unicast: false,
            });
        });
        self.stats.delivered += delivered;
        self.count_received(received);
    }

    fn receive_unicast(&mut self, from: MemberId, data: DataRecord, now: Instant) {
        let Some(peer) = self.peers.get_mut(&from) else {
            self.stats.dropped += 1;
            return;
        };
        let deliveries = &mut self.deliveries;
        let queue = &mut self.delivery_queue_bytes;
        let mut delivered = 0;
        let received = peer
            .uni_in
            .receive(data, now, &self.config, &mut |payload, oob| {
                *queue += payload.len();
                delivered += 1;
                deliveries.push_back(Delivery {
                    from,
                    payload,
                    oob,
                    unicast: true,
                });
            });
        self.stats.delivered += delivered;
        self.count_received(received);
    }

    fn count_received(&mut self, received: Received) {
        match received {
            Received::New => {}
            Received::Duplicate => self.stats.duplicates += 1,
            Received::TooFar => self.stats.dropped += 1,
        }
    }

    /// Retransmits what `from` asks for, from the local retransmit buffers or (for other
    /// members' multicasts) the retained windows.
    fn handle_nak(&mut self, from: MemberId, nak: &wire::NakRecord, now: Instant) {
        let to = if self.config.retransmit_by_multicast && nak.stream != StreamRef::Unicast {
            Destination::Group
        } else {
            Destination::Member(from)
        };
        for (first, last) in nak.ranges() {
            self.stats.naks_received += 1;
            match nak.stream {
                StreamRef::Unicast => {
                    let Some(peer) = self.peers.get(&from) else {
                        return;
                    };
                    let Some((lo, hi)) = peer.uni_out.kept() else {
                        continue;
                    };
                    for seqno in first.max(lo)..=last.min(hi) {
                        let Some(m) = peer.uni_out.get(seqno) else {
                            continue;
                        };
                        let len = wire::data_record_len(m.payload.len(), m.fragment.is_some());
                        let buf = self.bundler.buffer(to, len, now, &mut self.transmits);
                        wire::encode_data(buf, true, seqno, m.oob, m.fragment, &m.payload);
                        self.stats.retransmitted += 1;
                    }
                }
                StreamRef::Multicast(origin) if origin == self.local => {
                    let Some((lo, hi)) = self.mcast_out.kept() else {
                        continue;
                    };
                    for seqno in first.max(lo)..=last.min(hi) {
                        let Some(m) = self.mcast_out.get(seqno) else {
                            continue;
                        };
                        let len =
                            wire::retransmit_record_len(m.payload.len(), m.fragment.is_some());
                        let buf = self.bundler.buffer(to, len, now, &mut self.transmits);
                        wire::encode_retransmit(buf, origin, seqno, m.oob, m.fragment, &m.payload);
                        self.stats.retransmitted += 1;
                    }
                }
                StreamRef::Multicast(origin) => {
                    let Some(window) = self.peers.get(&origin).and_then(|p| p.mcast_in.as_ref())
                    else {
                        continue;
                    };
                    let Some((lo, hi)) = window.held() else {
                        continue;
                    };
                    for seqno in first.max(lo)..=last.min(hi) {
                        let Some(m) = window.get(seqno) else {
                            continue;
                        };
                        let len =
                            wire::retransmit_record_len(m.payload.len(), m.fragment.is_some());
                        let buf = self.bundler.buffer(to, len, now, &mut self.transmits);
                        wire::encode_retransmit(buf, origin, seqno, m.oob, m.fragment, &m.payload);
                        self.stats.retransmitted += 1;
                    }
                }
            }
        }
    }

    fn handle_ack(&mut self, from: MemberId, unicast: bool, seqno: u64) {
        let Some(peer) = self.peers.get_mut(&from) else {
            return;
        };
        if unicast {
            let seqno = seqno.min(peer.uni_out.highest_sent());
            peer.uni_out.purge_through(seqno);
            if peer.uni_out.blocked && peer.uni_out.bytes() < self.config.credit_window {
                peer.uni_out.blocked = false;
                self.events.push_back(ReliableEvent::CreditAvailable {
                    to: Destination::Member(from),
                });
            }
        } else {
            let seqno = seqno.min(self.mcast_out.highest_sent());
            // Any acknowledgement of the local stream at or past its start shows the
            // member knows where it starts.
            if peer.start_for_it.is_some_and(|s| seqno + 1 >= s) {
                peer.start_for_it = None;
            }
            if seqno > peer.mcast_acked {
                peer.mcast_acked = seqno;
                self.update_stability();
            }
        }
    }

    /// The sender of a unicast stream still waits for acknowledgements: find a lost tail,
    /// and acknowledge again in case the last acknowledgement was lost.
    fn handle_unicast_highest(&mut self, from: MemberId, seqno: u64, now: Instant) {
        let Some(peer) = self.peers.get_mut(&from) else {
            return;
        };
        peer.uni_in.announce(seqno, now, &self.config);
        let w = &peer.uni_in;
        if w.acked > 0 && w.acked + 1 == w.next() {
            let acked = w.acked;
            let buf = self.bundler.buffer(
                Destination::Member(from),
                ACK_RECORD_LEN,
                now,
                &mut self.transmits,
            );
            wire::encode_ack(buf, true, acked);
        }
    }

    fn handle_stable(&mut self, from: MemberId, stable: &wire::StableRecord, now: Instant) {
        let retain = !self.config.discard_delivered;
        if stable.acks_wanted {
            // Gossip back in the next round: the sender may have missed the last one.
            self.gossip_dirty = true;
            self.schedule_stable(now);
        }
        for (member, start) in stable.joiners() {
            if member != self.local {
                continue;
            }
            // Confirm in the next round, so the sender stops announcing the start.
            self.gossip_dirty = true;
            self.schedule_stable(now);
            if let Some(peer) = self.peers.get_mut(&from)
                && peer.mcast_in.is_none()
            {
                peer.mcast_in = Some(RecvWindow::new(start, retain, self.max_span));
            }
        }
        if let Some(window) = self.peers.get_mut(&from).and_then(|p| p.mcast_in.as_mut()) {
            window.announce(stable.highest_sent, now, &self.config);
        }
        for (origin, seqno) in stable.entries() {
            if origin == self.local {
                self.handle_ack(from, false, seqno);
                continue;
            }
            // Another member has consumed `origin` further than this one has seen.
            if let Some(window) = self
                .peers
                .get_mut(&origin)
                .and_then(|p| p.mcast_in.as_mut())
            {
                window.announce(seqno, now, &self.config);
            }
            if retain && let Some(peer) = self.peers.get_mut(&from) {
                peer.reported.insert(origin, seqno);
            }
        }
    }

    /// Own multicasts are delivered locally and the local delivery queue is over its bound.
    fn own_queue_full(&self) -> bool {
        self.config.deliver_own && self.delivery_queue_bytes > self.config.max_delivery_queue
    }

    /// Purges the local multicasts every member consumed and reports returning credit.
    fn update_stability(&mut self) {
        let stable = self
            .peers
            .values()
            .map(|p| p.mcast_acked)
            .min()
            .unwrap_or(u64::MAX);
        self.mcast_out.purge_through(stable);
        if self.mcast_out.blocked
            && self.mcast_out.bytes() < self.config.credit_window
            && !self.own_queue_full()
        {
            self.mcast_out.blocked = false;
            self.events.push_back(ReliableEvent::CreditAvailable {
                to: Destination::Group,
            });
        }
    }

    /// Acknowledges streams that crossed the ack threshold, unless the delivery queue is
    /// over its bound (then the application is the bottleneck and senders must wait).
    fn send_due_acks(&mut self, now: Instant) {
        if self.delivery_queue_bytes > self.config.max_delivery_queue {
            return;
        }
        let threshold = self.config.ack_threshold;
        for (id, peer) in &mut self.peers {
            if let Some(w) = peer.mcast_in.as_mut()
                && w.unacked >= threshold
            {
                w.unacked = 0;
                w.acked = w.next() - 1;
                let buf = self.bundler.buffer(
                    Destination::Member(*id),
                    ACK_RECORD_LEN,
                    now,
                    &mut self.transmits,
                );
                wire::encode_ack(buf, false, w.acked);
                self.gossip_dirty = true;
            }
            let w = &mut peer.uni_in;
            if w.unacked >= threshold {
                w.unacked = 0;
                w.acked = w.next() - 1;
                let buf = self.bundler.buffer(
                    Destination::Member(*id),
                    ACK_RECORD_LEN,
                    now,
                    &mut self.transmits,
                );
                wire::encode_ack(buf, true, w.acked);
            }
        }
        if self.gossip_dirty {
            self.schedule_stable(now);
        }
    }

    /// Makes sure a stability round is scheduled.
    fn schedule_stable(&mut self, now: Instant) {
        if self.next_stable.is_none() && self.view.is_some() {
            self.next_stable = Some(now + self.config.stable_interval);
        }
    }

    /// Does the work whose time has come: NAKs, stability gossip, acknowledgements of the
    /// last messages, datagrams due. Early or repeated calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = now;
        self.send_due_naks(now);
        if self.next_stable.is_some_and(|t| t <= now) {
            self.next_stable = None;
            self.stable_round(now);
        }
        self.close_due_datagrams(now);
    }

    /// Closes the datagrams that lingered long enough (with the default zero linger: all
    /// of them), so answers to a datagram (acknowledgements, retransmissions) are ready
    /// in `poll_transmit` as soon as `handle_datagram` returns.
    fn close_due_datagrams(&mut self, now: Instant) {
        self.bundler.close(
            now.checked_sub(self.config.bundle_linger),
            &mut self.transmits,
        );
    }

    fn send_due_naks(&mut self, now: Instant) {
        let mut ranges = std::mem::take(&mut self.nak_ranges);
        for i in 0..self.others.len() {
            let origin = self.others[i];
            let Some(peer) = self.peers.get_mut(&origin) else {
                continue;
            };
            ranges.clear();
            if let Some(attempt) = peer
                .mcast_in
                .as_mut()
                .and_then(|w| w.due_naks(now, &self.config, &mut ranges))
            {
                let ask =
                    if self.config.nak_random_member && attempt % 2 == 0 && self.others.len() > 1 {
                        let pick = self.rng.random_range(0..self.others.len() - 1);
                        let others = self.others.iter().filter(|m| **m != origin);
                        others.copied().nth(pick).unwrap_or(origin)
                    } else {
                        origin
                    };
                self.send_nak(ask, StreamRef::Multicast(origin), &ranges, now);
            }
            ranges.clear();
            let Some(peer) = self.peers.get_mut(&origin) else {
                continue;
            };
            if peer
                .uni_in
                .due_naks(now, &self.config, &mut ranges)
                .is_some()
            {
                self.send_nak(origin, StreamRef::Unicast, &ranges, now);
            }
        }
        self.nak_ranges = ranges;
    }

    fn send_nak(&mut self, to: MemberId, stream: StreamRef, ranges: &[(u64, u64)], now: Instant) {
        let per_record =
            ((self.config.max_datagram_size - wire::HEADER_LEN - wire::nak_record_len(0)) / 16)
                .min(MAX_NAK_RANGES);
        for chunk in ranges.chunks(per_record) {
            trace!(%to, ?stream, ranges = chunk.len(), "reliable: NAK");
            self.stats.naks_sent += chunk.len() as u64;
            let buf = self.bundler.buffer(
                Destination::Member(to),
                wire::nak_record_len(chunk.len()),
                now,
                &mut self.transmits,
            );
            wire::encode_nak(buf, stream, chunk);
        }
    }

    /// One round of stability: gossip, acknowledge what is left, announce unacknowledged
    /// unicast tails, purge retained messages every member has.
    fn stable_round(&mut self, now: Instant) {
        if self.view.is_none() {
            return;
        }
        let queue_ok = self.delivery_queue_bytes <= self.config.max_delivery_queue;
        let mut entries = Vec::new();
        let mut joiners = Vec::new();
        let mut busy = false;
        for id in &self.others {
            let Some(peer) = self.peers.get_mut(id) else {
                continue;
            };
            if let Some(w) = peer.mcast_in.as_mut() {
                if queue_ok && w.acked + 1 < w.next() {
                    w.acked = w.next() - 1;
                    w.unacked = 0;
                    self.gossip_dirty = true;
                }
                entries.push((*id, w.acked));
                busy |= w.has_gaps() || w.acked + 1 < w.next();
            } else {
                busy = true;
            }
            if let Some(start) = peer.start_for_it {
                joiners.push((*id, start));
            }
            let w = &mut peer.uni_in;
            if queue_ok && w.acked + 1 < w.next() {
                w.acked = w.next() - 1;
                w.unacked = 0;
                let buf = self.bundler.buffer(
                    Destination::Member(*id),
                    ACK_RECORD_LEN,
                    now,
                    &mut self.transmits,
                );
                wire::encode_ack(buf, true, w.acked);
            }
            busy |= w.has_gaps() || w.acked + 1 < w.next();
            if !peer.uni_out.is_empty() {
                busy = true;
                let buf = self.bundler.buffer(
                    Destination::Member(*id),
                    UNICAST_HIGHEST_RECORD_LEN,
                    now,
                    &mut self.transmits,
                );
                wire::encode_unicast_highest(buf, peer.uni_out.highest_sent());
            }
        }
        if !self.config.discard_delivered {
            self.purge_retained();
        }
        let own_pending = !self.mcast_out.is_empty();
        // Copies of other members' multicasts kept until every member reports them: ask
        // for reports too, in case the last ones were lost.
        let retaining = !self.config.discard_delivered
            && self
                .peers
                .values()
                .any(|p| p.mcast_in.as_ref().is_some_and(|w| w.bytes() > 0));
        let acks_wanted = own_pending || retaining;
        let joiners_pending = !joiners.is_empty();
        if !self.others.is_empty() && (self.gossip_dirty || acks_wanted || joiners_pending) {
            // One record per datagram's worth of entries, so any group size fits.
            let per_record = ((self.config.max_datagram_size
                - wire::HEADER_LEN
                - wire::stable_record_len(0, 0))
                / 24)
                .min(MAX_STABLE_ENTRIES);
            let mut entries = entries.as_slice();
            let mut joiners = joiners.as_slice();
            loop {
                let (e, rest) = entries.split_at(entries.len().min(per_record));
                entries = rest;
                let (j, rest) = joiners.split_at(joiners.len().min(per_record - e.len()));
                joiners = rest;
                let buf = self.bundler.buffer(
                    Destination::Group,
                    wire::stable_record_len(e.len(), j.len()),
                    now,
                    &mut self.transmits,
                );
                wire::encode_stable(buf, acks_wanted, self.mcast_out.highest_sent(), e, j);
                if entries.is_empty() && joiners.is_empty() {
                    break;
                }
            }
            self.gossip_dirty = false;
        }
        busy |= acks_wanted || joiners_pending;
        if busy {
            self.next_stable = Some(now + self.config.stable_interval);
        }
    }

    /// Purges from the retained windows what every member reported consumed.
    fn purge_retained(&mut self) {
        let stable: Vec<(MemberId, u64)> = self
            .others
            .iter()
            .filter_map(|origin| {
                let own = self.peers.get(origin)?.mcast_in.as_ref()?.acked;
                let min = self
                    .others
                    .iter()
                    .filter(|m| *m != origin)
                    .map(|m| {
                        self.peers
                            .get(m)
                            .and_then(|p| p.reported.get(origin).copied())
                            .unwrap_or(0)
                    })
                    .min()
                    .unwrap_or(u64::MAX);
                Some((*origin, own.min(min)))
            })
            .collect();
        for (origin, seqno) in stable {
            if let Some(w) = self
                .peers
                .get_mut(&origin)
                .and_then(|p| p.mcast_in.as_mut())
            {
                w.purge_through(seqno);
            }
        }
    }

    // ---- outputs ----

    /// The next datagram to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.transmits.pop_front()?;
        self.stats.datagrams_sent += 1;
        Some(t)
    }

    /// The next message for the application, in order per sender (out-of-band ones as
    /// they arrive).
    #[must_use]
    pub fn poll_delivery(&mut self) -> Option<Delivery> {
        let d = self.deliveries.pop_front()?;
        let before = self.delivery_queue_bytes;
        self.delivery_queue_bytes -= d.payload.len();
        if before > self.config.max_delivery_queue
            && self.delivery_queue_bytes <= self.config.max_delivery_queue
        {
            // The application caught up: return the credits withheld meanwhile.
            let now = self.last_now;
            self.send_due_acks(now);
            self.gossip_dirty = true;
            self.next_stable = Some(now);
            self.update_stability();
        }
        Some(d)
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ReliableEvent> {
        self.events.pop_front()
    }

    /// When [`Reliable::handle_timeout`] should be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let naks = self.peers.values().flat_map(|p| {
            p.mcast_in
                .as_ref()
                .and_then(RecvWindow::next_nak)
                .into_iter()
                .chain(p.uni_in.next_nak())
        });
        naks.chain(self.next_stable)
            .chain(self.bundler.next_due(self.config.bundle_linger))
            .min()
    }

    /// Counters and buffer sizes.
    pub fn stats(&self) -> ReliableStats {
        let mut s = self.stats.clone();
        s.retransmit_buffer_bytes = self.mcast_out.bytes();
        s.retransmit_buffer_messages = self.mcast_out.len();
        s.waiting_for_credit = usize::from(self.mcast_out.blocked);
        for p in self.peers.values() {
            s.retransmit_buffer_bytes += p.uni_out.bytes();
            s.retransmit_buffer_messages += p.uni_out.len();
            s.waiting_for_credit += usize::from(p.uni_out.blocked);
            s.receive_buffer_bytes += p.uni_in.bytes();
            if let Some(w) = &p.mcast_in {
                s.receive_buffer_bytes += w.bytes();
            }
        }
        s.delivery_queue_bytes = self.delivery_queue_bytes;
        s
    }

    /// Bytes held for retransmission of the local multicasts (credit cost).
    pub fn multicast_buffer_bytes(&self) -> usize {
        self.mcast_out.bytes()
    }

    /// True if a multicast of `len` bytes would be accepted now.
    pub fn can_multicast(&self, len: usize) -> bool {
        self.view.is_some()
            && !self.own_queue_full()
            && self.check_size_len(len).is_ok_and(|cost| {
                self.mcast_out.has_room(
                    cost,
                    self.config.credit_window,
                    self.config.max_retransmit_buffer,
                )
            })
    }

    /// True if a unicast of `len` bytes to `to` would be accepted now.
    pub fn can_unicast(&self, to: MemberId, len: usize) -> bool {
        let Some(peer) = self.peers.get(&to) else {
            return false;
        };
        self.view.is_some()
            && self.check_size_len(len).is_ok_and(|cost| {
                peer.uni_out.has_room(
                    cost,
                    self.config.credit_window,
                    self.config.max_retransmit_buffer,
                )
            })
    }
}

#[cfg(test)]
impl Reliable {
    /// A summary of the streams, for failing tests.
    pub(crate) fn debug_state(&self) -> String {
        use std::fmt::Write;
        let mut s = format!(
            "{}: mcast_out {:?} next {} view_start {} next_stable {:?}\n",
            &self.local.to_hex()[..6],
            self.mcast_out.kept(),
            self.mcast_out.next_seqno(),
            self.view_start,
            self.next_stable
                .map(|t| t.saturating_duration_since(self.last_now)),
        );
        for id in &self.others {
            let p = &self.peers[id];
            let _ = writeln!(
                s,
                "  peer {}: acked mine {} start_for_it {:?} since {} | mcast_in {:?} | uni_in next {} acked {} gaps {} | uni_out {:?}",
                &id.to_hex()[..6],
                p.mcast_acked,
                p.start_for_it,
                p.since_view,
                p.mcast_in
                    .as_ref()
                    .map(|w| (w.next(), w.acked, w.has_gaps(), w.held())),
                p.uni_in.next(),
                p.uni_in.acked,
                p.uni_in.has_gaps(),
                p.uni_out.kept(),
            );
        }
        s
    }
}
