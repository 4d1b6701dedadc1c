//! Total-order multicast with a sequencer (SPEC §6; what JGroups' SEQUENCER does): every
//! member delivers the total-order messages of all members in one and the same order.
//!
//! The coordinator of the current view is the **sequencer**. A member that multicasts in
//! total order forwards the message to the sequencer (a reliable unicast, numbered by the
//! sender: its 1st, 2nd, ... total-order message). The sequencer multicasts each forward,
//! in the order they arrive, in its own reliable multicast stream, and delivers it itself
//! at that moment; every other member delivers the sequencer's stream in its order. One
//! stream, one order.
//!
//! **The sequencer's crash.** A member keeps every message it forwarded until it sees it
//! come back in the sequencer's stream. This layer relies on view-synchronous delivery
//! underneath (the reliable layer's flush): when a view ends, every surviving member has
//! delivered the same prefix of the old sequencer's stream. In the next view each member
//! forwards what it still holds to the new sequencer, in its original order; a message
//! that came back to anyone came back to everyone, so nothing is delivered twice, and
//! nothing forwarded is lost. Per-sender numbers catch a forward that reaches the
//! sequencer twice (once in the old view's unicast stream, once resent): it is dropped.
//!
//! Like the other cores, [`TotalOrder`] touches no socket and no clock: feed it views and
//! the reliable layer's deliveries of its records and its `Block` events, hand
//! [`TotalOrder::peek_send`] to the reliable layer (and [`TotalOrder::pop_send`] once it
//! took it), and drain [`TotalOrder::poll_delivery`] into the application.
//!
//! # Example
//!
//! A sequencer `a` and a member `b`; the "network" hands each record to the other side.
//!
//! ```
//! use std::net::SocketAddr;
//!
//! use bytes::Bytes;
//! use cohort_proto::MemberId;
//! use cohort_proto::group::{GroupMember, View};
//! use cohort_proto::total::{TotalConfig, TotalOrder, TotalSend};
//!
//! let (a, b) = (MemberId([1; 16]), MemberId([2; 16]));
//! let addr = SocketAddr::from(([127, 0, 0, 1], 7000));
//! let view = View::new(1, [GroupMember::new(a, addr), GroupMember::new(b, addr)]).unwrap();
//! let mut seq = TotalOrder::new(a, TotalConfig::default());
//! let mut member = TotalOrder::new(b, TotalConfig::default());
//! seq.install_view(&view);
//! member.install_view(&view);
//!
//! member.multicast(Bytes::from_static(b"x")).unwrap();
//! // b forwards to the sequencer ...
//! let Some(TotalSend::Unicast { to, record }) = member.peek_send().cloned() else { panic!() };
//! member.pop_send(); // the reliable layer took it
//! assert_eq!(to, a);
//! seq.handle_record(b, record, true).unwrap();
//! // ... which multicasts it in its stream and delivers it once that is sent ...
//! let Some(TotalSend::Multicast { record }) = seq.peek_send().cloned() else { panic!() };
//! seq.pop_send();
//! assert_eq!(seq.poll_delivery().unwrap().payload, "x");
//! member.handle_record(a, record, false).unwrap();
//! // ... and b delivers it at the same place in the order.
//! let d = member.poll_delivery().unwrap();
//! assert_eq!((d.origin, &d.payload[..]), (b, &b"x"[..]));
//! ```

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use tracing::debug;

use crate::group::View;
use crate::membership::MemberId;
use crate::wire::DecodeError;
use crate::wire::cohort::total::TotalRecord;

/// Limits of a [`TotalOrder`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TotalConfig {
    /// Most messages a member may have forwarded and not yet seen ordered. Beyond it
    /// [`TotalOrder::multicast`] refuses with [`TotalError::Backlog`]: a sequencer that
    /// cannot keep up slows its senders down instead of growing their memory.
    pub max_pending: usize,
    /// Most bytes of payload in those messages.
    pub max_pending_bytes: usize,
}

impl Default for TotalConfig {
    fn default() -> Self {
        Self {
            max_pending: 16 * 1024,
            max_pending_bytes: 64 * 1024 * 1024,
        }
    }
}

/// A record for the reliable layer to carry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum TotalSend {
    /// Send `record` to the sequencer `to` by reliable unicast.
    Unicast {
        /// The sequencer.
        to: MemberId,
        /// The encoded [`TotalRecord::Forward`].
        record: Bytes,
    },
    /// Multicast `record` to the view by reliable multicast (the sequencer's stream).
    Multicast {
        /// The encoded [`TotalRecord::Ordered`].
        record: Bytes,
    },
}

/// A message delivered in total order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotalDelivery {
    /// The member that multicast it.
    pub origin: MemberId,
    /// The message.
    pub payload: Bytes,
}

/// Why [`TotalOrder::multicast`] refused a message. Nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TotalError {
    /// The local member is not in a view.
    #[error("the local member is not in a view")]
    NotInView,
    /// Too many messages wait for the sequencer ([`TotalConfig::max_pending`] or
    /// [`TotalConfig::max_pending_bytes`]); try again after some were delivered.
    #[error("too many total-order messages wait for the sequencer")]
    Backlog,
}

/// Why a received record was dropped (and counted in [`TotalStats::dropped`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The bytes are not a total-order record.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// An order from a member that is not the sequencer of the current view, or a
    /// forward to a member that is not the sequencer, or a record from outside the view.
    #[error("a {kind} record from {from}, who may not send it here")]
    NotAllowed {
        /// The record's kind.
        kind: &'static str,
        /// Its sender.
        from: MemberId,
    },
}

/// Counters, for metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TotalStats {
    /// Messages delivered in total order (own ones included).
    pub delivered: u64,
    /// Forwards this member ordered as sequencer.
    pub ordered: u64,
    /// Forwards sent again to a new sequencer after a view change.
    pub resent: u64,
    /// Messages received a second time (a forward resent, an order repeated): dropped.
    pub duplicates: u64,
    /// Records dropped as malformed or from a member that may not send them.
    pub dropped: u64,
}

/// What a queued record is, for the bookkeeping once the reliable layer takes it.
#[derive(Debug, Clone)]
enum Queued {
    /// Our `seq`-th message, forwarded to the sequencer.
    Forward(u64),
    /// A message the sequencer put in its order: delivered here when it is sent.
    Order {
        origin: MemberId,
        seq: u64,
        payload: Bytes,
    },
}

/// Total order for one member; see the [module docs](self).
#[derive(Debug)]
pub struct TotalOrder {
    local: MemberId,
    config: TotalConfig,
    view: Option<View>,
    /// Between the reliable layer's `Block` and the next view: nothing is sent or ordered.
    blocked: bool,
    /// The local member's next total-order number.
    next_seq: u64,
    /// Forwarded and not yet seen ordered, oldest first.
    pending: VecDeque<(u64, Bytes)>,
    pending_bytes: usize,
    /// Per origin, the highest number delivered so far.
    delivered: HashMap<MemberId, u64>,
    /// As sequencer: per origin, the highest number put in the order (delivered, or
    /// waiting in `sends`).
    ordered: HashMap<MemberId, u64>,
    /// Forwards that reached the sequencer during a flush, ordered in the next view.
    held: VecDeque<(MemberId, u64, Bytes)>,
    /// Records for the reliable layer, and what each is.
    sends: VecDeque<(TotalSend, Queued)>,
    /// The highest of our numbers the reliable layer took towards the current sequencer.
    forwarded: u64,
    deliveries: VecDeque<TotalDelivery>,
    stats: TotalStats,
}

impl TotalOrder {
    /// Total order for member `local`, not yet in a view.
    #[must_use]
    pub fn new(local: MemberId, config: TotalConfig) -> Self {
        Self {
            local,
            config,
            view: None,
            blocked: false,
            next_seq: 1,
            pending: VecDeque::new(),
            pending_bytes: 0,
            delivered: HashMap::new(),
            ordered: HashMap::new(),
            held: VecDeque::new(),
            sends: VecDeque::new(),
            forwarded: 0,
            deliveries: VecDeque::new(),
            stats: TotalStats::default(),
        }
    }

    /// The sequencer of the current view (its coordinator).
    #[must_use]
    pub fn sequencer(&self) -> Option<MemberId> {
        self.view.as_ref()?.coordinator().map(|m| m.id)
    }

    /// The id of the view installed last.
    #[must_use]
    pub fn view_id(&self) -> Option<crate::group::ViewId> {
        self.view.as_ref().map(|v| v.id)
    }

    /// The reliable layer blocked for a flush: until the next view nothing is sent and
    /// the sequencer orders nothing (an order it delivered here must reach the others in
    /// the same view).
    pub fn block(&mut self) {
        self.blocked = true;
    }

    /// A new view, installed after the reliable layer delivered everything of the last
    /// one (view synchrony); it ends a [`block`](Self::block). If the sequencer changed,
    /// every message still waiting for its order goes to the new one, in the original
    /// order; what the old sequencer was told, or had ordered without sending, is dropped
    /// (its senders resend it).
    pub fn install_view(&mut self, view: &View) {
        let before = self.sequencer();
        self.view = Some(view.clone());
        self.blocked = false;
        self.delivered.retain(|id, _| view.contains(id));
        let after = self.sequencer();
        let held = std::mem::take(&mut self.held);
        if before != after {
            debug!(sequencer = ?after, pending = self.pending.len(), "new sequencer");
            self.sends.clear();
            self.forwarded = 0;
            self.ordered = self.delivered.clone();
            let pending: Vec<(u64, Bytes)> = self.pending.iter().cloned().collect();
            for (seq, payload) in pending {
                self.stats.resent += 1;
                self.submit(seq, payload);
            }
            return;
        }
        self.ordered.retain(|id, _| view.contains(id));
        if after == Some(self.local) {
            // Forwards that arrived during the flush, from members still here.
            for (origin, seq, payload) in held {
                if view.contains(&origin) {
                    self.order(origin, seq, payload);
                }
            }
            // Our own messages multicast during the flush.
            let unsent: Vec<(u64, Bytes)> = self
                .pending
                .iter()
                .filter(|(s, _)| *s > self.ordered.get(&self.local).copied().unwrap_or(0))
                .cloned()
                .collect();
            for (seq, payload) in unsent {
                self.order(self.local, seq, payload);
            }
        } else {
            let forwarded = self.forwarded_upto();
            let unsent: Vec<(u64, Bytes)> = self
                .pending
                .iter()
                .filter(|(s, _)| *s > forwarded)
                .cloned()
                .collect();
            for (seq, payload) in unsent {
                self.submit(seq, payload);
            }
        }
    }

    /// The highest of our numbers handed (or queued) to the sequencer.
    fn forwarded_upto(&self) -> u64 {
        let queued = self.sends.iter().rev().find_map(|(_, q)| match q {
            Queued::Forward(seq) => Some(*seq),
            Queued::Order { .. } => None,
        });
        queued.unwrap_or(self.forwarded)
    }

    /// Multicasts `payload` in total order: it is delivered here too, in its place.
    /// During a flush it waits for the next view.
    pub fn multicast(&mut self, payload: Bytes) -> Result<(), TotalError> {
        if self.sequencer().is_none() {
            return Err(TotalError::NotInView);
        }
        if self.pending.len() >= self.config.max_pending
            || self.pending_bytes + payload.len() > self.config.max_pending_bytes
        {
            return Err(TotalError::Backlog);
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.saturating_add(1);
        self.pending_bytes += payload.len();
        self.pending.push_back((seq, payload.clone()));
        if !self.blocked {
            self.submit(seq, payload);
        }
        Ok(())
    }

    /// Hands our `seq`-th message to the sequencer (or orders it, if that is us).
    fn submit(&mut self, seq: u64, payload: Bytes) {
        let Some(sequencer) = self.sequencer() else {
            return;
        };
        if sequencer == self.local {
            self.order(self.local, seq, payload);
        } else {
            let record = TotalRecord::Forward { seq, payload }.encode();
            self.sends.push_back((
                TotalSend::Unicast {
                    to: sequencer,
                    record,
                },
                Queued::Forward(seq),
            ));
        }
    }

    /// As sequencer: gives `origin`'s `seq`-th message its place. It is delivered here
    /// when the reliable layer takes its multicast ([`pop_send`](Self::pop_send)).
    fn order(&mut self, origin: MemberId, seq: u64, payload: Bytes) {
        let last = self.ordered.entry(origin).or_insert(0);
        if seq <= *last {
            self.stats.duplicates += 1;
            return;
        }
        *last = seq;
        self.stats.ordered += 1;
        let record = TotalRecord::Ordered {
            origin,
            seq,
            payload: payload.clone(),
        }
        .encode();
        self.sends.push_back((
            TotalSend::Multicast { record },
            Queued::Order {
                origin,
                seq,
                payload,
            },
        ));
    }

    /// Delivers `origin`'s `seq`-th message unless it was delivered already.
    fn deliver(&mut self, origin: MemberId, seq: u64, payload: Bytes) -> bool {
        let last = self.delivered.entry(origin).or_insert(0);
        if seq <= *last {
            self.stats.duplicates += 1;
            return false;
        }
        *last = seq;
        if origin == self.local {
            while self.pending.front().is_some_and(|(s, _)| *s <= seq) {
                if let Some((_, p)) = self.pending.pop_front() {
                    self.pending_bytes -= p.len();
                }
            }
        }
        self.stats.delivered += 1;
        self.deliveries.push_back(TotalDelivery { origin, payload });
        true
    }

    /// A record the reliable layer delivered from `from` (`unicast`: sent to this member
    /// only). Malformed records and records from members that may not send them are
    /// dropped and counted.
    pub fn handle_record(
        &mut self,
        from: MemberId,
        record: Bytes,
        unicast: bool,
    ) -> Result<(), RecordError> {
        let result = self.on_record(from, record, unicast);
        if result.is_err() {
            self.stats.dropped += 1;
        }
        result
    }

    fn on_record(
        &mut self,
        from: MemberId,
        record: Bytes,
        unicast: bool,
    ) -> Result<(), RecordError> {
        let record = TotalRecord::decode(&record)?;
        let sequencer = self.sequencer();
        let in_view = self.view.as_ref().is_some_and(|v| v.contains(&from));
        match record {
            TotalRecord::Forward { seq, payload } => {
                if !unicast || !in_view || sequencer != Some(self.local) {
                    return Err(RecordError::NotAllowed {
                        kind: "forward",
                        from,
                    });
                }
                if self.blocked {
                    self.held.push_back((from, seq, payload));
                } else {
                    self.order(from, seq, payload);
                }
            }
            TotalRecord::Ordered {
                origin,
                seq,
                payload,
            } => {
                if unicast || sequencer != Some(from) || from == self.local {
                    return Err(RecordError::NotAllowed {
                        kind: "ordered",
                        from,
                    });
                }
                self.deliver(origin, seq, payload);
            }
        }
        Ok(())
    }

    /// The next record to hand to the reliable layer (none during a flush). Call
    /// [`pop_send`](Self::pop_send) once the reliable layer took it; if it refused (no
    /// credit), leave it and try again later: the order must not skip it.
    #[must_use]
    pub fn peek_send(&self) -> Option<&TotalSend> {
        if self.blocked {
            return None;
        }
        self.sends.front().map(|(s, _)| s)
    }

    /// The reliable layer took the record [`peek_send`](Self::peek_send) showed. An order
    /// is delivered here now, at its place in the sequencer's stream.
    pub fn pop_send(&mut self) {
        if self.blocked {
            return;
        }
        match self.sends.pop_front() {
            Some((_, Queued::Forward(seq))) => self.forwarded = self.forwarded.max(seq),
            Some((
                _,
                Queued::Order {
                    origin,
                    seq,
                    payload,
                },
            )) => {
                self.deliver(origin, seq, payload);
            }
            None => {}
        }
    }

    /// The next message delivered in total order.
    pub fn poll_delivery(&mut self) -> Option<TotalDelivery> {
        self.deliveries.pop_front()
    }

    /// Messages this member multicast that wait for their order.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// True between [`block`](Self::block) and the next view.
    #[must_use]
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> TotalStats {
        self.stats.clone()
    }
}

#[cfg(test)]
mod tests;
