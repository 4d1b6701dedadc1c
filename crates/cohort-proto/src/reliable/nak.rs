//! Loss recovery: NAKs for the gaps of every receive window, on the back-off schedule,
//! to the sender or a random member; retransmissions on the NAKs of others.

use std::time::Instant;

use rand::Rng;
use tracing::trace;

use super::{Destination, Reliable};
use crate::membership::MemberId;
use crate::wire::cohort::reliable::{self as wire, MAX_NAK_RANGES, StreamRef};

/// Counts `len` more bytes against a NAK's `budget`; false if they do not fit. The first
/// message always fits, so a message larger than the budget is still answered.
fn within_budget(spent: &mut usize, len: usize, budget: usize) -> bool {
    if *spent > 0 && spent.saturating_add(len) > budget {
        return false;
    }
    *spent = spent.saturating_add(len);
    true
}

impl Reliable {
    /// Retransmits what `from` asks for, from the local retransmit buffers or (for other
    /// members' multicasts) the retained windows.
    pub(super) fn handle_nak(&mut self, from: MemberId, nak: &wire::NakRecord, now: Instant) {
        let to = if self.config.retransmit_by_multicast && nak.stream != StreamRef::Unicast {
            Destination::Group
        } else {
            Destination::Member(from)
        };
        // Payload bytes this NAK record has made us send so far (see `nak_answers_capped`).
        let budget = self.config.credit_window;
        let mut spent = 0usize;
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
                        if !within_budget(&mut spent, m.payload.len(), budget) {
                            self.stats.nak_answers_capped += 1;
                            return;
                        }
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
                        if !within_budget(&mut spent, m.payload.len(), budget) {
                            self.stats.nak_answers_capped += 1;
                            return;
                        }
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
                        if !within_budget(&mut spent, m.payload.len(), budget) {
                            self.stats.nak_answers_capped += 1;
                            return;
                        }
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

    pub(super) fn send_due_naks(&mut self, now: Instant) {
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
                let holder = self.flushing.as_ref().and_then(|f| f.holder(&origin));
                let ask = if let Some(holder) = holder.filter(|h| *h != self.local) {
                    // Flushing: the cut names a survivor that has these messages (the
                    // origin may be gone).
                    holder
                } else if self.config.nak_random_member && attempt % 2 == 0 && self.others.len() > 1
                {
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

    pub(super) fn send_nak(
        &mut self,
        to: MemberId,
        stream: StreamRef,
        ranges: &[(u64, u64)],
        now: Instant,
    ) {
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
}
