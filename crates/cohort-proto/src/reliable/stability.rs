//! Stability and credit: acknowledgements (which are the credits of flow control), the
//! periodic stability gossip, purging what every member consumed, and the joiners' starts.

use std::time::Instant;

use super::{Destination, Reliable, ReliableEvent};
use crate::membership::MemberId;
use crate::reliable::recv::RecvWindow;
use crate::wire::cohort::reliable::{
    self as wire, ACK_RECORD_LEN, MAX_STABLE_ENTRIES, UNICAST_HIGHEST_RECORD_LEN,
};

impl Reliable {
    pub(super) fn handle_ack(&mut self, from: MemberId, unicast: bool, seqno: u64) {
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
    pub(super) fn handle_unicast_highest(&mut self, from: MemberId, seqno: u64, now: Instant) {
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

    pub(super) fn handle_stable(
        &mut self,
        from: MemberId,
        stable: &wire::StableRecord,
        header_seq: u64,
        now: Instant,
    ) {
        let retain = self.config.retain_delivered();
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
            // A start is for the view the sender first saw us in: one said in an earlier
            // view (a member left out of a flush for having no view) is not ours.
            if let Some(peer) = self.peers.get_mut(&from)
                && peer.mcast_in.is_none()
                && header_seq >= peer.since_view
            {
                peer.mcast_in = Some(RecvWindow::new(start, retain, self.max_span));
                if peer.since_view == self.view_seq {
                    peer.view_first = Some(start);
                }
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
    pub(super) fn own_queue_full(&self) -> bool {
        self.config.deliver_own && self.delivery_queue_bytes > self.config.max_delivery_queue
    }

    /// Purges the local multicasts every member consumed and reports returning credit.
    pub(super) fn update_stability(&mut self) {
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
    pub(super) fn send_due_acks(&mut self, now: Instant) {
        if self.delivery_queue_bytes > self.config.max_delivery_queue {
            return;
        }
        let threshold = self.config.ack_threshold;
        for (id, peer) in &mut self.peers {
            let mut ack = |w: &mut RecvWindow, unicast: bool| {
                w.unacked = 0;
                w.acked = w.next() - 1;
                let to = Destination::Member(*id);
                let buf = self
                    .bundler
                    .buffer(to, ACK_RECORD_LEN, now, &mut self.transmits);
                wire::encode_ack(buf, unicast, w.acked);
            };
            if let Some(w) = peer.mcast_in.as_mut()
                && w.unacked >= threshold
            {
                ack(w, false);
                self.gossip_dirty = true;
            }
            if peer.uni_in.unacked >= threshold {
                ack(&mut peer.uni_in, true);
            }
        }
        if self.gossip_dirty {
            self.schedule_stable(now);
        }
    }

    /// Makes sure a stability round is scheduled.
    pub(super) fn schedule_stable(&mut self, now: Instant) {
        if self.next_stable.is_none() && self.view.is_some() {
            self.next_stable = Some(now + self.config.stable_interval);
        }
    }

    /// One round of stability: gossip, acknowledge what is left, announce unacknowledged
    /// unicast tails, purge retained messages every member has.
    pub(super) fn stable_round(&mut self, now: Instant) {
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
        if self.config.retain_delivered() {
            self.purge_retained();
        }
        let own_pending = !self.mcast_out.is_empty();
        // Copies of other members' multicasts kept until every member reports them: ask
        // for reports too, in case the last ones were lost.
        let retaining = self.config.retain_delivered()
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
    pub(super) fn purge_retained(&mut self) {
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
}
