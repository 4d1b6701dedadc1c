//! View synchrony (SPEC §6; JGroups' FLUSH): before a member installs the group's next
//! view, every member that survives into it delivers the same messages of the view it
//! leaves, a crashed member's included.
//!
//! When the group installs view V2 while this member's installed view is V1 (and
//! [`view_synchrony`](super::ReliableConfig::view_synchrony) is on):
//!
//! 1. **Block.** [`ReliableEvent::Block`]; sends fail with
//!    [`SendError::Blocked`](super::SendError::Blocked). The *survivors* are the members
//!    of both V1 and V2; the first of them in V2's order is the flush coordinator (every
//!    survivor computes the same one). Messages of members that do not survive are
//!    delivered no further than now.
//! 2. **Digest.** Each survivor sends the coordinator its digest: per member of V1, the
//!    seqnos of its V1 multicasts delivered here (for itself: sent). It repeats it, with
//!    back-off, until the cut comes.
//! 3. **Cut.** With every survivor's digest, the coordinator sends the cut: per member of
//!    V1, the highest seqno any survivor delivered, and a survivor that holds it.
//! 4. **Fetch.** Each survivor NAKs what it lacks below the cut from that holder (its
//!    delivered messages are retained until stable, so the holder still has them),
//!    delivers up to the cut and no further, and acknowledges (FLUSH_OK, repeated).
//! 5. **Install.** With every survivor's acknowledgement, the coordinator installs V2 and
//!    tells every member of V2 (joiners included); so does any member that installed V2,
//!    to one that asks again. A member that acknowledged also installs V2 when any member
//!    of V2 shows it installed it (its datagrams carry its view), so a lost install or a
//!    coordinator that crashed after installing does not hold it back.
//!    [`ReliableEvent::Unblock`]: sends go out again, in V2.
//!
//! Survivors' own sends were blocked before they sent their digest, so the cut holds all
//! of them; only a crashed or leaving member can have sent beyond the cut, and that is
//! dropped. A message is delivered in the view it was sent in: what a member sends in V2
//! reaches a member still in V1 only after that one installed V2.
//!
//! If the group's view changes again during a flush (a crash of the coordinator or of any
//! survivor, a join, a leave), the flush restarts from the same V1 towards the newest
//! view, with the survivors it has; a cut already delivered stays delivered (digests then
//! report it, so the new cut is no lower). A member that has no view yet (a joiner) waits
//! for the install of a view that lists it, unless it is that view's oldest member (then
//! no member of it has an older view to flush).

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use tracing::debug;

use super::{Delivery, Destination, Reliable, ReliableEvent};
use crate::group::{View, ViewId};
use crate::membership::MemberId;
use crate::reliable::recv::RecvWindow;
use crate::wire::cohort::reliable::{self as wire, CutRecord, DigestRecord};

/// How many of the group's views a member without a view remembers while it waits for
/// one of them to be installed: views come seconds apart, a flush takes milliseconds.
const MAX_PENDING_VIEWS: usize = 16;

/// Repeats back off by doubling, up to `2^MAX_BACKOFF_SHIFT` times the first delay.
const MAX_BACKOFF_SHIFT: u32 = 4;

/// One origin's entry in a cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CutEntry {
    /// Its first seqno in the flushed view (0: not known).
    first: u64,
    /// Deliver through this seqno.
    last: u64,
    /// A survivor that delivered through `last`.
    holder: MemberId,
}

/// The cut of one flush: per member of the flushed view.
pub(super) type Cut = BTreeMap<MemberId, CutEntry>;

/// One survivor's digest as the coordinator collects it: its size over all parts, and
/// `origin -> (first, last)` so far.
type Digest = (u32, BTreeMap<MemberId, (u64, u64)>);

/// A flush under way at this member.
#[derive(Debug)]
pub(super) struct Flush {
    /// The view it leads to.
    target: View,
    /// Members of both the installed view and `target`, in `target`'s order.
    survivors: Vec<MemberId>,
    /// The first survivor: it collects the digests, sends the cut, installs.
    coordinator: MemberId,
    /// This member's digest, `(origin, first, last)`, fixed when the flush (re)started.
    digest: Vec<(MemberId, u64, u64)>,
    /// Parts of the cut received so far, and the size of the whole cut.
    cut_parts: Cut,
    cut_total: Option<u32>,
    /// The whole cut, once received.
    cut: Option<Cut>,
    /// Delivered the cut and said so.
    ok: bool,
    /// When to repeat the digest or the acknowledgement.
    pub(super) next_retry: Instant,
    attempt: u32,
    /// As coordinator: each survivor's digest (its size, and the entries so far).
    digests: BTreeMap<MemberId, Digest>,
    /// As coordinator: the cut sent.
    computed: Option<Vec<(MemberId, u64, u64, MemberId)>>,
    /// As coordinator: survivors that delivered the cut.
    oks: HashSet<MemberId>,
}

impl Flush {
    /// The survivor to ask for `origin`'s missing messages, once the cut is known.
    pub(super) fn holder(&self, origin: &MemberId) -> Option<MemberId> {
        self.cut.as_ref()?.get(origin).map(|e| e.holder)
    }
}

impl Reliable {
    /// View synchrony: the group installed `view`.
    pub(super) fn group_view_changed(&mut self, view: &View, now: Instant) {
        let newest = self.group_view.as_ref().map_or(0, |g| g.id.seq);
        if view.id.seq <= self.view_seq.max(newest) {
            return;
        }
        self.group_view = Some(view.clone());
        let Some(current) = self.view.clone() else {
            if !view.contains(&self.local) {
                return;
            }
            if view.members.first().map(|m| m.id) == Some(self.local) {
                // The oldest member has no view yet: neither has any other member (views
                // list members by age), so there is nothing to flush.
                self.pending.clear();
                self.apply_view(view, None, now);
            } else {
                if self.pending.len() == MAX_PENDING_VIEWS {
                    self.pending.pop_front();
                }
                self.pending.push_back(view.clone());
                self.notices = 0;
                self.send_no_view(now);
            }
            return;
        };
        if !view.contains(&self.local) {
            // Removed: there is nothing left to agree on with the others.
            self.apply_view(view, None, now);
            return;
        }
        self.start_flush_to(&current, view.clone(), now);
    }

    /// Starts (or restarts) the flush of the installed view `current` towards `target`.
    fn start_flush_to(&mut self, current: &View, target: View, now: Instant) {
        let survivors: Vec<MemberId> = target.ids().filter(|id| current.contains(id)).collect();
        let coordinator = survivors.first().copied().unwrap_or(self.local);
        if self.flushing.is_some() {
            self.stats.flush_restarts += 1;
        }
        if !self.blocked {
            self.blocked = true;
            self.events.push_back(ReliableEvent::Block);
        }
        // Datagrams already open carry sends of the installed view: out they go.
        self.bundler.close(None, &mut self.transmits);
        let mut digest = Vec::with_capacity(self.others.len() + 1);
        digest.push((self.local, self.view_start, self.mcast_out.highest_sent()));
        for id in &self.others {
            let Some(peer) = self.peers.get_mut(id) else {
                continue;
            };
            let Some(w) = peer.mcast_in.as_mut() else {
                continue;
            };
            let delivered = w.next() - 1;
            if !target.contains(id) {
                // It may have sent more than any survivor has: deliver none of it until
                // the cut says how far every survivor goes.
                w.set_limit(delivered, &mut |_, _| {});
            }
            digest.push((*id, peer.view_first.unwrap_or(0), delivered));
        }
        debug!(from = %current.id, to = %target.id, %coordinator, survivors = survivors.len(), "reliable: flush");
        self.flushing = Some(Flush {
            target,
            survivors,
            coordinator,
            digest,
            cut_parts: Cut::new(),
            cut_total: None,
            cut: None,
            ok: false,
            next_retry: now + self.config.flush_retry,
            attempt: 0,
            digests: BTreeMap::new(),
            computed: None,
            oks: HashSet::new(),
        });
        self.send_digest(now);
    }

    fn send_digest(&mut self, now: Instant) {
        let Some(f) = &self.flushing else { return };
        let (coordinator, target, digest) = (f.coordinator, f.target.id, f.digest.clone());
        let total = digest.len() as u32;
        if coordinator == self.local {
            self.collect_digest(self.local, target, total, &digest, now);
            return;
        }
        let per = ((self.config.max_datagram_size - wire::HEADER_LEN - wire::digest_record_len(0))
            / (wire::digest_record_len(1) - wire::digest_record_len(0)))
        .clamp(1, wire::MAX_FLUSH_ENTRIES);
        for chunk in digest.chunks(per) {
            let buf = self.bundler.buffer(
                Destination::Member(coordinator),
                wire::digest_record_len(chunk.len()),
                now,
                &mut self.transmits,
            );
            wire::encode_flush_digest(buf, self.view_seq, target, total, chunk);
        }
    }

    pub(super) fn handle_flush_digest(&mut self, from: MemberId, d: &DigestRecord, now: Instant) {
        if d.source_seq == 0 {
            self.no_view_from(from, d.target, now);
            return;
        }
        if d.source_seq < self.view_seq {
            // The sender missed the end of a flush we installed: tell it again.
            if let Some(v) = &self.view
                && v.contains(&from)
            {
                let id = v.id;
                self.send_flush_view(from, true, id, now);
            }
            return;
        }
        if d.source_seq > self.view_seq {
            // The sender installed a view we have not (it repeats its digest).
            self.view_evidence(from, d.source_seq, now);
            return;
        }
        let entries: Vec<(MemberId, u64, u64)> = d.entries().collect();
        self.collect_digest(from, d.target, d.total, &entries, now);
    }

    /// As coordinator: takes in (part of) a survivor's digest; with all of them, sends
    /// the cut.
    fn collect_digest(
        &mut self,
        from: MemberId,
        target: ViewId,
        total: u32,
        entries: &[(MemberId, u64, u64)],
        now: Instant,
    ) {
        let local = self.local;
        let (Some(current), Some(f)) = (self.view.as_ref(), self.flushing.as_mut()) else {
            self.stats.flush_ignored += 1;
            return;
        };
        if f.coordinator != local || f.target.id != target || !f.survivors.contains(&from) {
            self.stats.flush_ignored += 1;
            return;
        }
        if f.computed.is_some() {
            // It repeats its digest: our cut was lost on its way.
            self.send_cut(Some(from), now);
            return;
        }
        let (size, digest) = f
            .digests
            .entry(from)
            .or_insert_with(|| (total, BTreeMap::new()));
        if *size != total {
            // A digest of another start of this flush: begin again with this one.
            *size = total;
            digest.clear();
        }
        for &(origin, first, last) in entries {
            if current.contains(&origin) {
                digest.insert(origin, (first, last));
            }
        }
        let complete = f.survivors.iter().all(|s| {
            f.digests
                .get(s)
                .is_some_and(|(size, d)| d.len() >= *size as usize)
        });
        if !complete {
            return;
        }
        // The cut: per origin, the most any survivor delivered, held by that survivor
        // (the origin itself when it survives and ties).
        let mut cut = Cut::new();
        for s in &f.survivors {
            for (origin, &(first, last)) in &f.digests[s].1 {
                match cut.get_mut(origin) {
                    None => {
                        cut.insert(
                            *origin,
                            CutEntry {
                                first,
                                last,
                                holder: *s,
                            },
                        );
                    }
                    Some(e) => {
                        e.first = e.first.max(first);
                        if last > e.last || (last == e.last && s == origin) {
                            e.last = last;
                            e.holder = *s;
                        }
                    }
                }
            }
        }
        debug!(to = %f.target.id, origins = cut.len(), "reliable: flush cut");
        f.computed = Some(
            cut.iter()
                .map(|(o, e)| (*o, e.first, e.last, e.holder))
                .collect(),
        );
        self.send_cut(None, now);
    }

    /// As coordinator: sends the cut to `to`, or to every survivor.
    fn send_cut(&mut self, to: Option<MemberId>, now: Instant) {
        let Some(f) = &self.flushing else { return };
        let Some(cut) = f.computed.clone() else {
            return;
        };
        let target = f.target.id;
        let targets = to.map_or_else(|| f.survivors.clone(), |m| vec![m]);
        let total = cut.len() as u32;
        let per = ((self.config.max_datagram_size - wire::HEADER_LEN - wire::cut_record_len(0))
            / (wire::cut_record_len(1) - wire::cut_record_len(0)))
        .clamp(1, wire::MAX_FLUSH_ENTRIES);
        for m in targets {
            if m == self.local {
                self.receive_cut(self.local, target, total, &cut, now);
                continue;
            }
            for chunk in cut.chunks(per) {
                let buf = self.bundler.buffer(
                    Destination::Member(m),
                    wire::cut_record_len(chunk.len()),
                    now,
                    &mut self.transmits,
                );
                wire::encode_flush_cut(buf, target, total, chunk);
            }
        }
    }

    pub(super) fn handle_flush_cut(&mut self, from: MemberId, c: &CutRecord, now: Instant) {
        let entries: Vec<(MemberId, u64, u64, MemberId)> = c.entries().collect();
        self.receive_cut(from, c.target, c.total, &entries, now);
    }

    /// Takes in (part of) the cut from the coordinator; with all of it, fetches and
    /// delivers up to it.
    fn receive_cut(
        &mut self,
        from: MemberId,
        target: ViewId,
        total: u32,
        entries: &[(MemberId, u64, u64, MemberId)],
        now: Instant,
    ) {
        let (Some(current), Some(f)) = (self.view.as_ref(), self.flushing.as_mut()) else {
            self.stats.flush_ignored += 1;
            return;
        };
        if from != f.coordinator || target != f.target.id {
            self.stats.flush_ignored += 1;
            return;
        }
        if f.cut.is_some() {
            return;
        }
        if f.cut_total != Some(total) {
            f.cut_total = Some(total);
            f.cut_parts.clear();
        }
        for &(origin, first, last, holder) in entries {
            if current.contains(&origin) && f.survivors.contains(&holder) {
                f.cut_parts.insert(
                    origin,
                    CutEntry {
                        first,
                        last,
                        holder,
                    },
                );
            }
        }
        if f.cut_parts.len() < total as usize {
            return;
        }
        let cut = std::mem::take(&mut f.cut_parts);
        f.cut = Some(cut.clone());
        f.attempt = 0;
        f.next_retry = now + self.config.flush_retry;
        self.deliver_to_cut(&cut, now);
        self.flush_progress(now);
    }

    /// Delivers every origin's messages up to the cut and no further; what is missing
    /// becomes a gap, NAKed from the holder.
    fn deliver_to_cut(&mut self, cut: &Cut, now: Instant) {
        let retain = self.config.retain_delivered();
        let view_seq = self.view_seq;
        let before = self.stats.delivered;
        for (origin, e) in cut {
            if *origin == self.local {
                continue;
            }
            let Some(peer) = self.peers.get_mut(origin) else {
                continue;
            };
            if peer.mcast_in.is_none() && e.first > 0 {
                // Never heard from it in this view; the survivors know where it started.
                peer.mcast_in = Some(RecvWindow::new(e.first, retain, self.max_span));
                peer.view_first = Some(e.first);
            }
            let Some(w) = peer.mcast_in.as_mut() else {
                continue;
            };
            w.announce(e.last, now, &self.config);
            let deliveries = &mut self.deliveries;
            let queue = &mut self.delivery_queue_bytes;
            let delivered = &mut self.stats.delivered;
            let from = *origin;
            w.set_limit(e.last, &mut |payload, oob| {
                *queue += payload.len();
                *delivered += 1;
                deliveries.push_back(Delivery {
                    from,
                    payload,
                    oob,
                    unicast: false,
                    view_seq,
                });
            });
        }
        if self.stats.delivered != before {
            self.schedule_stable(now);
        }
    }

    /// Once the cut is delivered: acknowledge it to the coordinator.
    pub(super) fn flush_progress(&mut self, now: Instant) {
        let Some(f) = &self.flushing else { return };
        let Some(cut) = &f.cut else { return };
        if f.ok {
            return;
        }
        let done = cut.iter().all(|(origin, e)| {
            *origin == self.local
                || self
                    .peers
                    .get(origin)
                    .and_then(|p| p.mcast_in.as_ref())
                    .is_none_or(|w| w.next() > e.last)
        });
        if !done {
            return;
        }
        let Some(f) = self.flushing.as_mut() else {
            return;
        };
        f.ok = true;
        f.attempt = 0;
        f.next_retry = now + self.config.flush_retry;
        self.acked = f.cut.clone().map(|cut| (f.target.clone(), cut));
        self.send_ok(now);
    }

    fn send_ok(&mut self, now: Instant) {
        let Some(f) = &self.flushing else { return };
        let (coordinator, target) = (f.coordinator, f.target.id);
        if coordinator == self.local {
            self.collect_ok(self.local, target, now);
        } else {
            self.send_flush_view(coordinator, false, target, now);
        }
    }

    fn send_flush_view(&mut self, to: MemberId, install: bool, target: ViewId, now: Instant) {
        let buf = self.bundler.buffer(
            Destination::Member(to),
            wire::FLUSH_VIEW_RECORD_LEN,
            now,
            &mut self.transmits,
        );
        wire::encode_flush_view(buf, install, target);
    }

    pub(super) fn handle_flush_ok(&mut self, from: MemberId, target: ViewId, now: Instant) {
        if self
            .view
            .as_ref()
            .is_some_and(|v| v.id == target && v.contains(&from))
        {
            // It acknowledges again: our install was lost on its way.
            self.send_flush_view(from, true, target, now);
            return;
        }
        self.collect_ok(from, target, now);
    }

    /// As coordinator: a survivor delivered the cut; with all of them, install.
    fn collect_ok(&mut self, from: MemberId, target: ViewId, now: Instant) {
        let local = self.local;
        let Some(f) = self.flushing.as_mut() else {
            self.stats.flush_ignored += 1;
            return;
        };
        if f.coordinator != local
            || f.target.id != target
            || f.computed.is_none()
            || !f.survivors.contains(&from)
        {
            self.stats.flush_ignored += 1;
            return;
        }
        f.oks.insert(from);
        if f.oks.len() < f.survivors.len() {
            return;
        }
        let view = f.target.clone();
        for m in view.ids().filter(|id| *id != local) {
            self.send_flush_view(m, true, view.id, now);
        }
        self.finish_flush(&view, now);
    }

    pub(super) fn handle_flush_install(&mut self, from: MemberId, target: ViewId, now: Instant) {
        let acked = self
            .acked
            .as_ref()
            .is_some_and(|(v, _)| v.id == target && v.contains(&from));
        if acked {
            let view = self.acked.as_ref().map(|(v, _)| v.clone());
            if let Some(view) = view {
                self.finish_flush(&view, now);
            }
            return;
        }
        if self.view.is_none()
            && let Some(v) = self
                .pending
                .iter()
                .find(|v| v.id == target && v.contains(&from))
                .cloned()
        {
            self.apply_view(&v, None, now);
            return;
        }
        self.stats.flush_ignored += 1;
    }

    /// `from`, a member, installed the view numbered `seq`: if that is the view whose cut
    /// we acknowledged (or, without a view, one that lists us), install it too.
    pub(super) fn view_evidence(&mut self, from: MemberId, seq: u64, now: Instant) {
        let acked = self
            .acked
            .as_ref()
            .filter(|(v, _)| v.id.seq == seq && v.contains(&from))
            .map(|(v, _)| v.clone());
        if let Some(view) = acked {
            self.finish_flush(&view, now);
            return;
        }
        if self.view.is_none()
            && let Some(v) = self
                .pending
                .iter()
                .find(|v| v.id.seq == seq && v.contains(&from))
                .cloned()
        {
            self.apply_view(&v, None, now);
        }
    }

    /// Ends the flush that delivered the cut towards `view` by installing it.
    fn finish_flush(&mut self, view: &View, now: Instant) {
        let cut = match self.acked.take() {
            Some((v, cut)) if v.id == view.id => Some(cut),
            _ => None,
        };
        debug!(view = %view.id, "reliable: flush done");
        self.stats.flushes += 1;
        self.flushing = None;
        self.apply_view(view, cut.as_ref(), now);
    }

    /// After a view was installed here: forget the flush, deliver what waited for this
    /// view, unblock, and flush again if the group is already further on.
    pub(super) fn view_installed(&mut self, view: ViewId, cut: Option<&Cut>, now: Instant) {
        if !self.config.view_synchrony {
            return;
        }
        self.flushing = None;
        self.acked = None;
        self.next_notice = None;
        let seq = self.view_seq;
        // Members left out for having no view join this view: what we sent before it is
        // not theirs.
        let start = self.view_start;
        for id in std::mem::take(&mut self.left_out) {
            if let Some(peer) = self.peers.get_mut(&id) {
                peer.mcast_in = None;
                peer.view_first = None;
                peer.since_view = seq;
                peer.start_for_it = Some(start);
                peer.mcast_acked = start - 1;
            }
        }
        self.pending.retain(|v| v.id.seq > seq);
        for (origin, e) in cut.into_iter().flatten() {
            if let Some(peer) = self.peers.get_mut(origin) {
                peer.view_first = Some(e.last.saturating_add(1));
            }
        }
        let deliveries = &mut self.deliveries;
        let queue = &mut self.delivery_queue_bytes;
        let delivered = &mut self.stats.delivered;
        for (id, peer) in &mut self.peers {
            if let Some(w) = peer.mcast_in.as_mut() {
                let from = *id;
                w.set_limit(u64::MAX, &mut |payload, oob| {
                    *queue += payload.len();
                    *delivered += 1;
                    deliveries.push_back(Delivery {
                        from,
                        payload,
                        oob,
                        unicast: false,
                        view_seq: seq,
                    });
                });
            }
        }
        // Every view installed here is reported, the first one too (the application
        // learns where deliveries of the new view start).
        self.blocked = false;
        self.events.push_back(ReliableEvent::Unblock { view });
        if let Some(next) = self.group_view.clone()
            && next.id.seq > seq
            && let Some(current) = self.view.clone()
        {
            if next.contains(&self.local) {
                self.start_flush_to(&current, next, now);
            } else {
                self.apply_view(&next, None, now);
            }
        }
    }

    /// A member without a view (one that joined) says so to every member of the newest
    /// view it waits for, and from then on installs only that view or a later one. The
    /// group may list a member in a view it never received (it installed the next one
    /// first); the others would wait for its digest for ever. An empty digest from the
    /// "view" 0 says it has none: a flush towards that view or an earlier one leaves it
    /// out of the survivors (it delivered nothing; it will be told to install).
    fn send_no_view(&mut self, now: Instant) {
        let Some(newest) = self.pending.back().cloned() else {
            self.next_notice = None;
            return;
        };
        if self.view.is_some() {
            self.next_notice = None;
            return;
        }
        self.pending.retain(|v| v.id.seq >= newest.id.seq);
        for m in newest.ids().filter(|m| *m != self.local) {
            let buf = self.bundler.buffer(
                Destination::Member(m),
                wire::digest_record_len(0),
                now,
                &mut self.transmits,
            );
            wire::encode_flush_digest(buf, 0, newest.id, 0, &[]);
        }
        let backoff = 1 << self.notices.min(MAX_BACKOFF_SHIFT);
        self.notices = self.notices.saturating_add(1);
        self.next_notice = Some(now + self.config.flush_retry.saturating_mul(backoff));
    }

    /// `from` has no view and waits for `target` or a later view: it is no survivor of a
    /// flush towards `target` or an earlier view.
    fn no_view_from(&mut self, from: MemberId, target: ViewId, now: Instant) {
        let local = self.local;
        let Some(f) = self.flushing.as_mut() else {
            return;
        };
        if target.seq < f.target.id.seq || from == local || !f.survivors.contains(&from) {
            return;
        }
        debug!(%from, to = %f.target.id, "reliable: a survivor without a view is left out");
        f.survivors.retain(|s| *s != from);
        if !self.left_out.contains(&from) {
            self.left_out.push(from);
        }
        let Some(&coordinator) = f.survivors.first() else {
            return;
        };
        let (target, digest) = (f.target.id, f.digest.clone());
        if coordinator != f.coordinator {
            // It was the coordinator: the next survivor takes over.
            f.coordinator = coordinator;
            f.cut_parts.clear();
            f.cut_total = None;
            self.send_digest(now);
        } else if coordinator == local {
            // Its digest, or its acknowledgement, may have been the last one missing.
            if f.computed.is_none() {
                self.collect_digest(local, target, digest.len() as u32, &digest, now);
            } else if f.oks.contains(&local) {
                self.collect_ok(local, target, now);
            }
        }
    }

    /// Repeats the digest or the acknowledgement when the coordinator did not answer.
    pub(super) fn flush_timeout(&mut self, now: Instant) {
        if self.next_notice.is_some_and(|t| t <= now) {
            self.send_no_view(now);
        }
        let retry = self.config.flush_retry;
        let Some(f) = self.flushing.as_mut() else {
            return;
        };
        if f.next_retry > now {
            return;
        }
        f.attempt = f.attempt.saturating_add(1);
        f.next_retry = now + retry.saturating_mul(1 << f.attempt.min(MAX_BACKOFF_SHIFT));
        if f.cut.is_none() {
            self.send_digest(now);
        } else if f.ok {
            self.send_ok(now);
        }
    }
}

#[cfg(test)]
mod tests;
