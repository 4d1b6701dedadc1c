//! Reliable, ordered group messaging over unreliable datagrams (SPEC §5): what JGroups'
//! NAKACK, UNICAST, STABLE, MFC/UFC, FRAG2 and bundling, and Coherence's TCMP, do.
//!
//! - **Multicast**: every member numbers its multicasts 1, 2, 3, ...; every other member of
//!   the view delivers each exactly once, in that order. **Unicast**: each ordered pair of
//!   members has its own numbering, with the same guarantee.
//! - **Loss**: a receiver that sees a gap (or learns of a higher seqno from a gossip) sends
//!   a NAK after [`nak_backoff`](ReliableConfig::nak_backoff) and again on the back-off
//!   schedule until the message arrives. The sender (or a random member, or by multicast,
//!   as configured) retransmits it. NAKs are paced to their answers: while answers keep
//!   coming, a gap is asked for again only once an answer asked for after it arrived
//!   first, and each round asks for at most twice what the last one brought (64-1 024
//!   messages), so a link slower than the sender is not flooded with repeats.
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
//! - **View synchrony** ([`view_synchrony`](ReliableConfig::view_synchrony), SPEC §6,
//!   JGroups' FLUSH): a view change first flushes the old view, so every member that
//!   installs the new view delivered the same messages of the old one, a crashed
//!   member's included, and a message is delivered only in the view it was sent in;
//!   sends are blocked meanwhile ([`ReliableEvent::Block`], [`ReliableEvent::Unblock`]).
//!   See the `flush` module for the protocol.
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
mod flush;
mod nak;
mod recv;
mod send;
mod stability;
#[cfg(test)]
mod tests;
mod types;

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Instant;

use bytes::Bytes;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tracing::debug;

pub use config::{ConfigError, ReliableConfig};
pub use types::{
    DatagramError, Delivery, Destination, ReliableEvent, ReliableStats, SendError, SendOpts,
    Transmit,
};

use bundle::Bundler;
use recv::{Received, RecvWindow};
use send::{SendBuffer, Sent};

use crate::group::View;
use crate::membership::MemberId;
use crate::wire::cohort::reliable::{self as wire, DataRecord, Fragment, Record};

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
    /// The first seqno of its multicasts in the installed view, if known here (a flush
    /// digest reports it, so a survivor that never heard from it can fetch them).
    view_first: Option<u64>,
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
    /// The `seq` of the installed view (0: none), stamped on deliveries.
    view_seq: u64,
    /// View synchrony: the flush under way, if any.
    flushing: Option<flush::Flush>,
    /// View synchrony: the group's newest view, which the flush leads to.
    group_view: Option<View>,
    /// View synchrony: the last flush target whose cut this member delivered and
    /// acknowledged, with the cut; installed when any member shows it installed it.
    acked: Option<(View, flush::Cut)>,
    /// View synchrony: [`ReliableEvent::Block`] was reported, `Unblock` not yet.
    blocked: bool,
    /// View synchrony, before the first view: the group's views that list this member, one
    /// of which a flush coordinator installs.
    pending: VecDeque<View>,
    /// View synchrony, before the first view: when to say again that this member has no
    /// view (see `flush::Reliable::send_no_view`), and how often it was said.
    next_notice: Option<Instant>,
    notices: u32,
    /// View synchrony: survivors left out of the flush because they had no view; they
    /// start the next view as joiners do.
    left_out: Vec<MemberId>,
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
        let fragments = config.fragment_count(config.max_message_size);
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
            view_seq: 0,
            flushing: None,
            group_view: None,
            acked: None,
            blocked: false,
            pending: VecDeque::new(),
            next_notice: None,
            notices: 0,
            left_out: Vec::new(),
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

    /// The group installed a new view. Without
    /// [`view_synchrony`](ReliableConfig::view_synchrony) it is installed here at once:
    /// members that left are forgotten (their messages, windows and acknowledgements), so
    /// they hold nothing back; members that joined start at the local multicast stream's
    /// next seqno. If the local member is not in `view`, every stream is dropped and sends
    /// fail with [`SendError::NotInView`].
    ///
    /// With view synchrony the installed view is flushed first (see the `flush` module
    /// docs): [`ReliableEvent::Block`], then, once every surviving member delivered the
    /// same messages of it, [`ReliableEvent::Unblock`] with `view` installed. A view that
    /// arrives during a flush restarts it towards the newer view.
    pub fn install_view(&mut self, view: &View, now: Instant) {
        self.last_now = now;
        if self.config.view_synchrony {
            self.group_view_changed(view, now);
        } else {
            self.apply_view(view, None, now);
        }
    }

    /// Installs `view` here: the body of [`Reliable::install_view`] without view
    /// synchrony, and the end of a flush with it.
    fn apply_view(&mut self, view: &View, cut: Option<&flush::Cut>, now: Instant) {
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
                view_first: None,
            });
        }
        self.view = in_view.then(|| view.clone());
        self.view_seq = view.id.seq;
        self.view_installed(view.id, cut, now);
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
        if self.is_blocked() {
            return Err(SendError::Blocked);
        }
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
                view_seq: self.view_seq,
            });
        }
        let frag = self.config.fragment_payload();
        let count = self.config.fragment_count(payload.len());
        if count == 1 {
            // The common case: the payload itself is kept, no extra reference.
            self.multicast_piece(payload, None, opts.oob, now);
        } else {
            for i in 0..count {
                let end = ((i + 1) * frag).min(payload.len());
                let fragment = Fragment {
                    index: i as u32,
                    count: count as u32,
                };
                self.multicast_piece(payload.slice(i * frag..end), Some(fragment), opts.oob, now);
            }
        }
        self.stats.sent += count as u64;
        if self.others.is_empty() {
            self.mcast_out.purge_through(u64::MAX);
        }
        self.schedule_stable(now);
        Ok(())
    }

    /// Bundles one multicast message (or fragment) and keeps it for retransmission.
    fn multicast_piece(
        &mut self,
        piece: Bytes,
        fragment: Option<Fragment>,
        oob: bool,
        now: Instant,
    ) {
        if !self.others.is_empty() {
            let len = wire::data_record_len(piece.len(), fragment.is_some());
            let buf = self
                .bundler
                .buffer(Destination::Group, len, now, &mut self.transmits);
            let seqno = self.mcast_out.next_seqno();
            wire::encode_data(buf, false, seqno, oob, fragment, &piece);
        }
        self.mcast_out.push(Sent {
            payload: piece,
            oob,
            fragment,
        });
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
        if self.is_blocked() {
            return Err(SendError::Blocked);
        }
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
        let count = self.config.fragment_count(payload.len());
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
        let count = self.config.fragment_count(len);
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
        self.flush_progress(now);
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
        if self.config.view_synchrony && header.view_seq > self.view_seq {
            // The sender installed a view we have not: maybe the end of our flush.
            self.view_evidence(from, header.view_seq, now);
        }
        // Under view synchrony, what a member sends in a view we have not installed
        // (messages, acknowledgements) waits until we install it: only flush records pass.
        let ahead = self.config.view_synchrony && header.view_seq > self.view_seq;
        let mut accept = !ahead && self.view.is_some();
        if accept {
            if let Some(peer) = self.peers.get_mut(&from) {
                if peer.mcast_in.is_none() && header.view_seq == peer.since_view {
                    // Both members first saw each other in this view, so the sender's
                    // multicasts for this member start at its first seqno in it.
                    // (Otherwise the start comes from the sender's gossip.)
                    peer.mcast_in = Some(RecvWindow::new(
                        header.view_start,
                        self.config.retain_delivered(),
                        self.max_span,
                    ));
                    peer.view_first = Some(header.view_start);
                }
            } else {
                accept = false;
            }
        }
        for record in records {
            let record = record?;
            if !accept && !record.is_flush() {
                self.stats.dropped += 1;
                continue;
            }
            match record {
                Record::FlushDigest(d) => self.handle_flush_digest(from, &d, now),
                Record::FlushCut(c) => self.handle_flush_cut(from, &c, now),
                Record::FlushOk { target } => self.handle_flush_ok(from, target, now),
                Record::FlushInstall { target } => self.handle_flush_install(from, target, now),
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
                Record::Stable(stable) => self.handle_stable(from, &stable, header.view_seq, now),
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
        let view_seq = self.view_seq;
        let received = window.receive(data, now, &self.config, &mut |payload, oob| {
            *queue += payload.len();
            delivered += 1;
            deliveries.push_back(Delivery {
                from: origin,
                payload,
                oob,
                unicast: false,
                view_seq,
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
        let view_seq = self.view_seq;
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
                    view_seq,
                });
            });
        self.stats.delivered += delivered;
        self.count_received(received);
    }

    fn count_received(&mut self, received: Received) {
        match received {
            Received::New => {}
            Received::Duplicate => self.stats.duplicates += 1,
            Received::TooFar | Received::Implausible => self.stats.dropped += 1,
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
        self.flush_timeout(now);
        self.flush_progress(now);
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

    // ---- outputs ----

    /// The next datagram to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.transmits.pop_front()?;
        self.stats.datagrams_sent += 1;
        Some(t)
    }

    /// Gives back a datagram from [`Reliable::poll_transmit`] once it was sent (all its
    /// copies), so that its buffer is reused for a later datagram instead of a new
    /// allocation. Optional: a datagram that is never given back is simply freed.
    pub fn recycle(&mut self, datagram: Bytes) {
        self.bundler.recycle(datagram);
    }

    /// The next message for the application, in order per sender (out-of-band ones as
    /// they arrive).
    #[must_use]
    pub fn poll_delivery(&mut self) -> Option<Delivery> {
        let d = self.deliveries.pop_front()?;
        let before = self.delivery_queue_bytes;
        self.delivery_queue_bytes -= d.payload.len();
        self.deliveries_taken(before);
        Some(d)
    }

    /// Moves up to `max` messages for the application to the end of `out`, in the order
    /// of [`Reliable::poll_delivery`]; returns how many. Cheaper per message than
    /// `poll_delivery` for a runtime that hands them over in batches.
    pub fn poll_deliveries(&mut self, out: &mut Vec<Delivery>, max: usize) -> usize {
        let n = max.min(self.deliveries.len());
        let before = self.delivery_queue_bytes;
        let start = out.len();
        out.extend(self.deliveries.drain(..n));
        let taken: usize = out[start..].iter().map(|d| d.payload.len()).sum();
        self.delivery_queue_bytes -= taken;
        self.deliveries_taken(before);
        n
    }

    /// After deliveries were taken (the queue held `before` bytes): if the application
    /// caught up, return the credits withheld meanwhile.
    fn deliveries_taken(&mut self, before: usize) {
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
    }

    /// True if the runtime has work for the core now: datagrams waiting for
    /// [`Reliable::poll_transmit`], records in open datagrams that [`Reliable::flush`]
    /// would close, events for [`Reliable::poll_event`], or a deadline of
    /// [`Reliable::poll_timeout`] that has passed (by the last time the core was given).
    /// Consuming deliveries can create such work (it releases withheld acknowledgements
    /// and credit of the local multicasts); a runtime needs to wake its I/O only then.
    #[must_use]
    pub fn has_pending_work(&self) -> bool {
        !self.transmits.is_empty()
            || !self.events.is_empty()
            || self.bundler.has_open()
            || self.poll_timeout().is_some_and(|t| t <= self.last_now)
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
            .chain(self.flushing.as_ref().map(|f| f.next_retry))
            .chain(self.next_notice)
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

    /// True between [`ReliableEvent::Block`] and [`ReliableEvent::Unblock`] (a flush is
    /// under way), and while a member that joined waits for its first view to be
    /// installed: sends are refused with [`SendError::Blocked`].
    pub fn is_blocked(&self) -> bool {
        self.flushing.is_some() || (self.view.is_none() && !self.pending.is_empty())
    }

    /// Bytes held for retransmission of the local multicasts (credit cost).
    pub fn multicast_buffer_bytes(&self) -> usize {
        self.mcast_out.bytes()
    }

    /// True if a multicast of `len` bytes would be accepted now.
    pub fn can_multicast(&self, len: usize) -> bool {
        self.view.is_some()
            && !self.is_blocked()
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
            && !self.is_blocked()
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
