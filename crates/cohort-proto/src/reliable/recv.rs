//! The receiving side of one stream: the reorder window, gap tracking for NAKs, in-order
//! and out-of-band delivery, and reassembly of fragments.
//!
//! The window is a ring of slots indexed by `seqno - base`. Without loss a message in
//! order is delivered at once and never touches the ring. Gaps are kept as a sorted list of
//! seqno ranges, so NAK work grows with the number of gaps, not of messages.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::config::ReliableConfig;
use crate::wire::cohort::reliable::{DataRecord, Fragment};

/// The most seqnos one stream's NAKs ask for at a time: a receiver that missed a whole
/// window does not ask for all of it at once, which would arrive as one burst the size of
/// the window (and be lost again on a link that cannot queue it).
const MAX_NAK_SEQNOS: u64 = 1024;
/// The fewest seqnos a NAK round may ask for. Between the two, a round asks for twice as
/// many as the answers to the previous rounds brought (see `RecvWindow::due_naks`).
const MIN_NAK_SEQNOS: u64 = 64;

/// A received message kept in the window.
#[derive(Debug, Clone)]
pub(crate) struct Msg {
    pub(crate) payload: Bytes,
    pub(crate) oob: bool,
    pub(crate) fragment: Option<Fragment>,
}

#[derive(Debug)]
enum Slot {
    /// Not received yet.
    Missing,
    /// Received, waiting for its turn.
    Waiting(Msg),
    /// Delivered (in order, or out of band); kept for retransmission to others if the
    /// window retains delivered messages.
    Done(Option<Msg>),
}

/// A range of missing seqnos and when to NAK it next.
#[derive(Debug, Clone)]
struct Gap {
    first: u64,
    last: u64,
    due: Instant,
    attempt: u32,
    /// When it was last NAKed.
    naked: Option<Instant>,
}

/// A missing seqno that arrived: when, which, and when it had last been NAKed.
#[derive(Debug, Clone, Copy)]
struct Fill {
    at: Instant,
    seqno: u64,
    asked: Option<Instant>,
}

/// What became of a received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Received {
    /// New; delivered or kept for later.
    New,
    /// Seen before (or already delivered); dropped.
    Duplicate,
    /// So far ahead of what was delivered that no honest sender could have sent it within
    /// its window; dropped.
    TooFar,
    /// A fragment of a message no honest sender could send: more fragments than the
    /// window holds, or a message longer than `max_message_size`; dropped, so that it
    /// cannot hold the stream back waiting for fragments that never come.
    Implausible,
}

/// The receiving state of one stream.
#[derive(Debug)]
pub(crate) struct RecvWindow {
    /// Seqno of `ring[0]`.
    base: u64,
    /// Next seqno to deliver in order.
    next: u64,
    /// Highest seqno known to exist (received, or announced by a gossip).
    highest: u64,
    ring: VecDeque<Slot>,
    gaps: VecDeque<Gap>,
    /// Keep delivered messages until stable, so this member can retransmit them.
    retain: bool,
    /// Payload bytes held in the ring.
    bytes: usize,
    /// The most seqnos the window spans beyond `next`.
    max_span: u64,
    /// Consumed up to here, as last acknowledged to the sender.
    pub(crate) acked: u64,
    /// Credit cost delivered since the last acknowledgement.
    pub(crate) unacked: usize,
    /// The latest missing seqno that arrived (see `due_naks`).
    last_fill: Option<Fill>,
    /// NAKed seqnos that arrived since the last NAK round.
    answered: u64,
    /// Nothing beyond this seqno is delivered (a flush holds the stream at its cut).
    limit: u64,
}

impl RecvWindow {
    /// A window whose first message is `start`.
    pub(crate) fn new(start: u64, retain: bool, max_span: u64) -> Self {
        let start = start.max(1);
        Self {
            base: start,
            next: start,
            highest: start - 1,
            ring: VecDeque::new(),
            gaps: VecDeque::new(),
            retain,
            bytes: 0,
            max_span,
            acked: start - 1,
            unacked: 0,
            last_fill: None,
            answered: 0,
            limit: u64::MAX,
        }
    }

    /// Delivers nothing beyond `limit` from now on (`u64::MAX`: no limit), and delivers
    /// through `deliver` whatever a raised limit lets through.
    pub(crate) fn set_limit(&mut self, limit: u64, deliver: &mut impl FnMut(Bytes, bool)) {
        self.limit = limit;
        self.deliver_in_order(deliver);
    }

    /// Everything below this seqno was delivered.
    pub(crate) fn next(&self) -> u64 {
        self.next
    }

    /// Payload bytes held (out of order, or retained after delivery).
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Messages held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.ring.len()
    }

    /// True if some seqnos are missing.
    pub(crate) fn has_gaps(&self) -> bool {
        !self.gaps.is_empty()
    }

    /// Takes in one message and delivers whatever became deliverable through `deliver`
    /// (payload, out-of-band), in order.
    pub(crate) fn receive(
        &mut self,
        data: DataRecord,
        now: Instant,
        config: &ReliableConfig,
        deliver: &mut impl FnMut(Bytes, bool),
    ) -> Received {
        let seqno = data.seqno;
        if let Some(f) = data.fragment
            && !plausible(
                f,
                data.payload.len(),
                self.max_span,
                config.max_message_size,
            )
        {
            return Received::Implausible;
        }
        if seqno < self.next {
            return Received::Duplicate;
        }
        if seqno - self.next >= self.max_span {
            return Received::TooFar;
        }
        let msg = Msg {
            payload: data.payload,
            oob: data.oob,
            fragment: data.fragment,
        };
        if seqno > self.highest {
            // The common case: the next message, nothing held back.
            if seqno == self.next
                && self.ring.is_empty()
                && msg.fragment.is_none()
                && seqno <= self.limit
            {
                self.next += 1;
                self.highest = seqno;
                self.unacked += super::send::cost(msg.payload.len());
                if self.retain {
                    self.bytes += msg.payload.len();
                    deliver(msg.payload.clone(), msg.oob);
                    self.ring.push_back(Slot::Done(Some(msg)));
                } else {
                    self.base = self.next;
                    deliver(msg.payload, msg.oob);
                }
                return Received::New;
            }
            self.extend_to(seqno - 1, now, config);
            self.highest = seqno;
            self.bytes += msg.payload.len();
            self.ring.push_back(Slot::Waiting(msg));
        } else {
            let idx = (seqno - self.base) as usize;
            if !matches!(self.ring[idx], Slot::Missing) {
                return Received::Duplicate;
            }
            let asked = self.fill_gap(seqno);
            self.answered += u64::from(asked.is_some());
            self.last_fill = Some(Fill {
                at: now,
                seqno,
                asked,
            });
            self.bytes += msg.payload.len();
            self.ring[idx] = Slot::Waiting(msg);
        }
        let idx = (seqno - self.base) as usize;
        if let Slot::Waiting(m) = &self.ring[idx]
            && m.oob
        {
            self.deliver_oob(seqno, deliver);
        }
        self.deliver_in_order(deliver);
        Received::New
    }

    /// Learns that seqnos up to `highest` exist (a sender's or another member's gossip):
    /// anything above what arrived becomes a gap to NAK.
    pub(crate) fn announce(&mut self, highest: u64, now: Instant, config: &ReliableConfig) {
        if highest > self.highest && highest - self.next < self.max_span {
            self.extend_to(highest, now, config);
            self.highest = highest;
        }
    }

    /// Appends `Missing` slots after `highest` up to `last` and records them as a gap.
    fn extend_to(&mut self, last: u64, now: Instant, config: &ReliableConfig) {
        if last <= self.highest {
            return;
        }
        let first = self.highest + 1;
        for _ in first..=last {
            self.ring.push_back(Slot::Missing);
        }
        self.highest = last;
        self.gaps.push_back(Gap {
            first,
            last,
            due: now + config.nak_delay(0),
            attempt: 0,
            naked: None,
        });
    }

    /// Removes `seqno` from the gap that holds it; returns when that gap was last NAKed.
    fn fill_gap(&mut self, seqno: u64) -> Option<Instant> {
        let i = self.gaps.partition_point(|g| g.last < seqno);
        let gap = self.gaps.get_mut(i)?;
        if gap.first > seqno {
            return None;
        }
        let asked = gap.naked;
        match (gap.first == seqno, gap.last == seqno) {
            (true, true) => {
                self.gaps.remove(i);
            }
            (true, false) => gap.first += 1,
            (false, true) => gap.last -= 1,
            (false, false) => {
                let mut upper = gap.clone();
                upper.first = seqno + 1;
                gap.last = seqno - 1;
                self.gaps.insert(i + 1, upper);
            }
        }
        asked
    }

    fn take_for_delivery(&mut self, idx: usize) -> Msg {
        let slot = std::mem::replace(&mut self.ring[idx], Slot::Done(None));
        let Slot::Waiting(msg) = slot else {
            unreachable!("only waiting slots are delivered")
        };
        if self.retain {
            self.ring[idx] = Slot::Done(Some(msg.clone()));
        } else {
            self.bytes -= msg.payload.len();
        }
        msg
    }

    /// The seqnos of the whole message that `seqno` belongs to, if all are waiting.
    fn complete_message(&self, seqno: u64) -> Option<(u64, u32)> {
        let Slot::Waiting(m) = &self.ring[(seqno - self.base) as usize] else {
            return None;
        };
        let Some(f) = m.fragment else {
            return Some((seqno, 1));
        };
        let first = seqno.checked_sub(u64::from(f.index))?;
        let last = first + u64::from(f.count) - 1;
        if first < self.base || last > self.highest {
            return None;
        }
        for (i, s) in (first..=last).enumerate() {
            match &self.ring[(s - self.base) as usize] {
                Slot::Waiting(m)
                    if m.fragment
                        == Some(Fragment {
                            index: i as u32,
                            count: f.count,
                        }) => {}
                _ => return None,
            }
        }
        Some((first, f.count))
    }

    /// Takes the message of `count` slots from `first` and joins its fragments.
    fn assemble(&mut self, first: u64, count: u32) -> Msg {
        let idx = (first - self.base) as usize;
        if count == 1 {
            let mut m = self.take_for_delivery(idx);
            m.fragment = None;
            return m;
        }
        let total: usize = (0..count as usize)
            .map(|i| match &self.ring[idx + i] {
                Slot::Waiting(m) => m.payload.len(),
                _ => 0,
            })
            .sum();
        let mut joined = BytesMut::with_capacity(total);
        let mut oob = false;
        for i in 0..count as usize {
            let m = self.take_for_delivery(idx + i);
            oob = m.oob;
            joined.extend_from_slice(&m.payload);
        }
        Msg {
            payload: joined.freeze(),
            oob,
            fragment: None,
        }
    }

    fn deliver_oob(&mut self, seqno: u64, deliver: &mut impl FnMut(Bytes, bool)) {
        if let Some((first, count)) = self.complete_message(seqno)
            && first + u64::from(count) - 1 <= self.limit
        {
            let msg = self.assemble(first, count);
            self.unacked += super::send::cost(msg.payload.len());
            deliver(msg.payload, true);
        }
    }

    fn deliver_in_order(&mut self, deliver: &mut impl FnMut(Bytes, bool)) {
        while self.next <= self.highest && self.next <= self.limit {
            let idx = (self.next - self.base) as usize;
            match &self.ring[idx] {
                Slot::Missing => break,
                Slot::Done(_) => self.next += 1,
                Slot::Waiting(m) => {
                    if let Some(f) = m.fragment
                        && f.index != 0
                    {
                        // A fragment whose start was never seen (a sender bug or a forged
                        // record): it can never complete, so skip it.
                        let _ = self.take_for_delivery(idx);
                        self.next += 1;
                        continue;
                    }
                    let count = m.fragment.map_or(1, |f| f.count);
                    match self.complete_message(self.next) {
                        Some((_, c)) if c == count => {
                            let msg = self.assemble(self.next, count);
                            self.next += u64::from(count);
                            self.unacked += super::send::cost(msg.payload.len());
                            deliver(msg.payload, msg.oob);
                        }
                        _ => {
                            let last = self.next + u64::from(count) - 1;
                            let all_here = last <= self.highest
                                && (self.next..=last).all(|s| {
                                    !matches!(self.ring[(s - self.base) as usize], Slot::Missing)
                                });
                            if all_here {
                                // Inconsistent fragments: drop the first and go on.
                                let _ = self.take_for_delivery(idx);
                                self.next += 1;
                            } else {
                                break;
                            }
                        }
                    }
                }
            }
        }
        if !self.retain {
            while self.base < self.next && self.ring.pop_front().is_some() {
                self.base += 1;
            }
        }
    }

    /// Forgets delivered messages up to `seqno` (stable: every member has them).
    pub(crate) fn purge_through(&mut self, seqno: u64) {
        while self.base <= seqno && self.base < self.next {
            match self.ring.pop_front() {
                Some(Slot::Done(Some(m))) => self.bytes -= m.payload.len(),
                Some(Slot::Waiting(m)) => self.bytes -= m.payload.len(),
                Some(_) => {}
                None => break,
            }
            self.base += 1;
        }
    }

    /// A message this member holds (delivered and retained, or waiting), for a
    /// retransmission on another member's NAK.
    pub(crate) fn get(&self, seqno: u64) -> Option<&Msg> {
        let idx = usize::try_from(seqno.checked_sub(self.base)?).ok()?;
        match self.ring.get(idx)? {
            Slot::Waiting(m) | Slot::Done(Some(m)) => Some(m),
            _ => None,
        }
    }

    /// The range of seqnos held, if any.
    pub(crate) fn held(&self) -> Option<(u64, u64)> {
        (!self.ring.is_empty()).then(|| (self.base, self.base + self.ring.len() as u64 - 1))
    }

    /// Appends to `out` the gaps whose NAK is due and schedules their next NAK. Returns
    /// the highest attempt number among them (0 = first NAK), or `None` if none was due.
    ///
    /// NAKs are paced to their answers, so that a slow or queueing link is not flooded
    /// with retransmissions of what is already on its way:
    /// - A gap NAKed before is not NAKed again while answers keep arriving (within the
    ///   gap's current NAK delay) unless one asked for after it (or with it, above it)
    ///   arrived: until then its answer is most likely queued behind the ones arriving.
    ///   An answer that passed it by shows its own was lost.
    /// - One call asks for at most twice as many seqnos as arrived in answer since the
    ///   last NAK, between `MIN_NAK_SEQNOS` and `MAX_NAK_SEQNOS`; of a longer gap only the
    ///   start.
    ///
    /// Before, behind a 50 Mbit/s token bucket, a receiver paused for 5 s asked for its
    /// whole backlog every NAK interval while the first answer was still draining; the
    /// senders retransmitted 30-66 times as many messages as they had sent, and the
    /// receiver caught up after 37-67 s instead of 6.
    pub(crate) fn due_naks(
        &mut self,
        now: Instant,
        config: &ReliableConfig,
        out: &mut Vec<(u64, u64)>,
    ) -> Option<u32> {
        let mut attempt = None;
        let last_fill = self.last_fill;
        // What the path brought back last time, doubled: on a link that loses what it
        // cannot queue, asking for more than arrives only makes more of it lost (large
        // datagrams that meet a full queue leave useless fragments behind), so the
        // request grows with what gets through.
        let mut budget = (2 * self.answered).clamp(MIN_NAK_SEQNOS, MAX_NAK_SEQNOS);
        let full_budget = budget;
        for gap in self.gaps.iter_mut().filter(|g| g.due <= now) {
            let delay = config.nak_delay(gap.attempt);
            if let (Some(naked), Some(fill)) = (gap.naked, last_fill) {
                let answers_flowing = fill.at + delay > now;
                // Answers come in the order they were asked for (and within one NAK in
                // seqno order): one asked for after this gap arrived, so this gap's
                // answer should have too.
                let passed_by = fill
                    .asked
                    .is_some_and(|asked| asked > naked || asked == naked && fill.seqno > gap.last);
                if answers_flowing && !passed_by {
                    gap.due = fill.at + delay;
                    continue;
                }
            }
            if budget == 0 {
                gap.due = now + delay;
                continue;
            }
            // Only the start of a long gap: the rest is asked for once these answers
            // have come in (the gap then counts as asked for, and waits as above).
            let last = gap.last.min(gap.first + budget - 1);
            budget -= last - gap.first + 1;
            out.push((gap.first, last));
            attempt = attempt.max(Some(gap.attempt));
            gap.attempt += 1;
            gap.due = now + config.nak_delay(gap.attempt);
            gap.naked = Some(now);
        }
        if budget < full_budget {
            self.answered = 0;
        }
        attempt
    }

    /// When the next NAK is due.
    pub(crate) fn next_nak(&self) -> Option<Instant> {
        self.gaps.iter().map(|g| g.due).min()
    }
}

/// Whether `f`, carrying `len` payload bytes, can be a fragment of a message an honest
/// sender sent: its fragments fit in the receive window (`max_span` seqnos; more could
/// never all be held, so the message would never complete), and the message is at most
/// `max_message_size` bytes (every fragment but the last is as long as this one).
fn plausible(f: Fragment, len: usize, max_span: u64, max_message_size: usize) -> bool {
    if f.count < 2 || f.index >= f.count || u64::from(f.count) > max_span {
        return false;
    }
    let last = f.index + 1 == f.count;
    last || (len > 0 && (f.count as usize - 1).saturating_mul(len) < max_message_size)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn data(seqno: u64, payload: &'static [u8]) -> DataRecord {
        DataRecord {
            seqno,
            oob: false,
            fragment: None,
            payload: Bytes::from_static(payload),
        }
    }

    fn frag(seqno: u64, index: u32, count: u32, payload: &'static [u8]) -> DataRecord {
        DataRecord {
            fragment: Some(Fragment { index, count }),
            ..data(seqno, payload)
        }
    }

    struct Harness {
        w: RecvWindow,
        got: Vec<(Bytes, bool)>,
        config: ReliableConfig,
        now: Instant,
    }

    impl Harness {
        fn new(retain: bool) -> Self {
            Self {
                w: RecvWindow::new(1, retain, 1000),
                got: Vec::new(),
                config: ReliableConfig::default(),
                now: Instant::now(),
            }
        }
        fn rx(&mut self, d: DataRecord) -> Received {
            let got = &mut self.got;
            self.w
                .receive(d, self.now, &self.config, &mut |p, oob| got.push((p, oob)))
        }
        fn delivered(&self) -> Vec<&[u8]> {
            self.got.iter().map(|(p, _)| &p[..]).collect()
        }
    }

    #[test]
    fn in_order_duplicates_and_reordering() {
        for retain in [false, true] {
            let mut h = Harness::new(retain);
            assert_eq!(h.rx(data(1, b"a")), Received::New);
            assert_eq!(h.rx(data(1, b"a")), Received::Duplicate);
            assert_eq!(h.rx(data(4, b"d")), Received::New);
            assert_eq!(h.rx(data(3, b"c")), Received::New);
            assert_eq!(h.rx(data(3, b"c")), Received::Duplicate);
            assert_eq!(h.delivered(), [b"a"]);
            assert!(h.w.has_gaps());
            assert_eq!(h.rx(data(2, b"b")), Received::New);
            assert_eq!(h.delivered(), [b"a", b"b", b"c", b"d"]);
            assert!(!h.w.has_gaps());
            assert_eq!(h.w.next(), 5);
            assert_eq!(h.rx(data(5000, b"x")), Received::TooFar);
            if retain {
                assert_eq!(h.w.len(), 4);
                assert_eq!(&h.w.get(2).unwrap().payload[..], b"b");
                h.w.purge_through(3);
                assert_eq!(h.w.held(), Some((4, 4)));
                assert!(h.w.get(3).is_none());
            } else {
                assert_eq!(h.w.len(), 0);
                assert_eq!(h.w.bytes(), 0);
            }
        }
    }

    #[test]
    fn gaps_split_and_nak_on_backoff() {
        let mut h = Harness::new(false);
        h.rx(data(10, b"j"));
        h.rx(data(5, b"e"));
        let mut naks = Vec::new();
        assert_eq!(h.w.due_naks(h.now, &h.config, &mut naks), None);
        assert_eq!(h.w.next_nak(), Some(h.now + Duration::from_millis(100)));
        let t1 = h.now + Duration::from_millis(100);
        assert_eq!(h.w.due_naks(t1, &h.config, &mut naks), Some(0));
        assert_eq!(naks, [(1, 4), (6, 9)]);
        assert_eq!(h.w.next_nak(), Some(t1 + Duration::from_millis(200)));
        h.rx(data(7, b"g"));
        naks.clear();
        let t2 = t1 + Duration::from_millis(200);
        assert_eq!(h.w.due_naks(t2, &h.config, &mut naks), Some(1));
        assert_eq!(naks, [(1, 4), (6, 6), (8, 9)]);
        for s in [1, 2, 3, 4, 6, 8, 9] {
            h.rx(data(s, b"."));
        }
        assert!(!h.w.has_gaps());
        assert_eq!(h.w.next(), 11);
        assert_eq!(h.got.len(), 10);
    }

    #[test]
    fn answers_still_arriving_hold_the_nak_back() {
        let ms = Duration::from_millis;
        let mut h = Harness::new(false);
        h.rx(data(10, b"j"));
        let mut naks = Vec::new();
        let t1 = h.now + ms(100);
        assert_eq!(h.w.due_naks(t1, &h.config, &mut naks), Some(0));
        assert_eq!(naks, [(1, 9)]);
        // The answers come in order: 1, 2, then 4 (3 was lost on the way).
        h.now = t1 + ms(150);
        for (s, p) in [(1, b"a"), (2, b"b"), (4, b"d")] {
            h.rx(data(s, p));
        }
        // At the second NAK only 3 is asked for again: 4, asked for with it, passed it
        // by. 5..=9 may still be on the way behind 4.
        let t2 = t1 + ms(200);
        naks.clear();
        assert_eq!(h.w.due_naks(t2, &h.config, &mut naks), Some(1));
        assert_eq!(naks, [(3, 3)]);
        // They wait until no answer came for a NAK delay (200 ms after the last one).
        assert_eq!(h.w.next_nak(), Some(h.now + ms(200)));
        naks.clear();
        assert_eq!(h.w.due_naks(h.now + ms(199), &h.config, &mut naks), None);
        assert_eq!(h.w.due_naks(h.now + ms(200), &h.config, &mut naks), Some(1));
        assert_eq!(naks, [(5, 9)]);
    }

    #[test]
    fn a_long_gap_is_asked_for_in_parts_that_grow_with_the_answers() {
        let ms = Duration::from_millis;
        let config = ReliableConfig::default();
        let now = Instant::now();
        let mut w = RecvWindow::new(1, false, 10_000);
        w.receive(data(5001, b"x"), now, &config, &mut |_, _| {});
        let mut naks = Vec::new();
        assert_eq!(w.due_naks(now + ms(100), &config, &mut naks), Some(0));
        assert_eq!(naks, [(1, MIN_NAK_SEQNOS)]);
        // Nothing came back: the next NAK asks for the same part again.
        naks.clear();
        assert_eq!(w.due_naks(now + ms(300), &config, &mut naks), Some(1));
        assert_eq!(naks, [(1, MIN_NAK_SEQNOS)]);
        // The part arrived: once the answers pause, the next part is twice as long.
        let mut at = now + ms(350);
        let mut next = 1;
        let mut asked = MIN_NAK_SEQNOS;
        for attempt in 2..6 {
            for s in next..next + asked {
                w.receive(data(s, b"."), at, &config, &mut |_, _| {});
            }
            next += asked;
            asked = (2 * asked).min(MAX_NAK_SEQNOS);
            at += config.nak_delay(attempt);
            naks.clear();
            assert_eq!(w.due_naks(at, &config, &mut naks), Some(attempt));
            assert_eq!(naks, [(next, next + asked - 1)], "attempt {attempt}");
        }
        assert_eq!(asked, MAX_NAK_SEQNOS, "the parts stop growing");
    }

    #[test]
    fn announce_finds_a_lost_tail() {
        let mut h = Harness::new(false);
        h.rx(data(1, b"a"));
        h.w.announce(3, h.now, &h.config);
        let mut naks = Vec::new();
        h.w.due_naks(h.now + Duration::from_secs(1), &h.config, &mut naks);
        assert_eq!(naks, [(2, 3)]);
        h.rx(data(3, b"c"));
        h.rx(data(2, b"b"));
        assert_eq!(h.delivered(), [b"a", b"b", b"c"]);
    }

    #[test]
    fn implausible_fragments_are_dropped_and_do_not_stall_the_stream() {
        let mut h = Harness::new(false);
        // "Fragment 0 of 2^20" (one 48-byte record used to stall a sender's stream forever):
        // more fragments than the window (1000 here) could ever hold.
        assert_eq!(h.rx(frag(1, 0, 1 << 20, b"x")), Received::Implausible);
        // A message longer than max_message_size: 3 fragments of 10 MiB each.
        let big: &'static [u8] = Box::leak(vec![0u8; 10 << 20].into_boxed_slice());
        assert_eq!(h.rx(frag(1, 0, 3, big)), Received::Implausible);
        assert_eq!(h.rx(frag(1, 0, 3, b"")), Received::Implausible);
        assert_eq!(h.rx(frag(1, 3, 3, b"x")), Received::Implausible);
        assert_eq!(h.rx(frag(1, 0, 1, b"x")), Received::Implausible);
        // The honest stream goes on from seqno 1.
        h.rx(data(1, b"a"));
        h.rx(frag(2, 0, 2, b"b"));
        h.rx(frag(3, 1, 2, b"c"));
        assert_eq!(h.delivered(), [&b"a"[..], b"bc"]);
        // At the limits: 1000 fragments fit a window of 1000; the last fragment may be short.
        assert!(plausible(
            Fragment {
                index: 0,
                count: 1000
            },
            10,
            1000,
            16 << 20
        ));
        assert!(!plausible(
            Fragment {
                index: 0,
                count: 1001
            },
            10,
            1000,
            16 << 20
        ));
        assert!(plausible(
            Fragment { index: 2, count: 3 },
            0,
            1000,
            16 << 20
        ));
        assert!(!plausible(
            Fragment { index: 0, count: 3 },
            8 << 20,
            1000,
            16 << 20
        ));
    }

    #[test]
    fn fragments_reassemble_in_order_and_out_of_band() {
        let mut h = Harness::new(false);
        h.rx(frag(2, 1, 3, b"-wor"));
        h.rx(frag(1, 0, 3, b"hello"));
        assert!(h.got.is_empty());
        h.rx(frag(3, 2, 3, b"ld"));
        assert_eq!(h.delivered(), [b"hello-world"]);
        // Out of band: delivered when complete, ahead of a gap.
        let o = |s, i, p| DataRecord {
            oob: true,
            ..frag(s, i, 2, p)
        };
        h.rx(o(6, 1, b"B"));
        h.rx(o(5, 0, b"A"));
        assert_eq!(h.got.last().unwrap(), &(Bytes::from_static(b"AB"), true));
        h.rx(data(4, b"x"));
        assert_eq!(h.delivered(), [&b"hello-world"[..], b"AB", b"x"]);
        assert_eq!(h.w.next(), 7);
        assert_eq!(h.w.len(), 0);
    }

    proptest::proptest! {
        /// Whatever the order and duplication of arrivals, and whichever messages are
        /// fragmented or out of band, every message is delivered exactly once, the ordered
        /// ones in seqno order, and the window ends empty.
        #[test]
        fn any_arrival_order_delivers_each_message_once(
            shape in proptest::collection::vec((1u32..4, proptest::bool::ANY), 1..30),
            order_seed in proptest::num::u64::ANY,
            retain in proptest::bool::ANY,
        ) {
            use rand::{Rng, SeedableRng};
            // Lay the messages out as seqnos: message k has `count` fragments.
            let mut records = Vec::new();
            let mut seqno = 1;
            for (k, (count, oob)) in shape.iter().enumerate() {
                for i in 0..*count {
                    records.push(DataRecord {
                        seqno,
                        oob: *oob,
                        fragment: (*count > 1).then_some(Fragment { index: i, count: *count }),
                        payload: Bytes::from(vec![k as u8; 1 + i as usize]),
                    });
                    seqno += 1;
                }
            }
            let mut rng = rand::rngs::SmallRng::seed_from_u64(order_seed);
            let mut arrivals = records.clone();
            for _ in 0..records.len() / 2 {
                arrivals.push(records[rng.random_range(0..records.len())].clone());
            }
            for i in (1..arrivals.len()).rev() {
                arrivals.swap(i, rng.random_range(0..=i));
            }
            let mut h = Harness::new(retain);
            for r in arrivals {
                h.rx(r);
            }
            let mut got: Vec<(u8, usize, bool)> =
                h.got.iter().map(|(p, oob)| (p[0], p.len(), *oob)).collect();
            let ordered: Vec<u8> = got.iter().filter(|g| !g.2).map(|g| g.0).collect();
            proptest::prop_assert!(ordered.windows(2).all(|w| w[0] < w[1]));
            got.sort();
            let expected: Vec<(u8, usize, bool)> = shape
                .iter()
                .enumerate()
                .map(|(k, (count, oob))| (k as u8, (1..=*count as usize).sum::<usize>(), *oob))
                .collect();
            proptest::prop_assert_eq!(got, expected);
            proptest::prop_assert_eq!(h.w.next(), seqno);
            proptest::prop_assert!(!h.w.has_gaps());
            if !retain {
                proptest::prop_assert_eq!(h.w.len(), 0);
                proptest::prop_assert_eq!(h.w.bytes(), 0);
            }
        }

        /// Forged or inconsistent input (fragments that disagree, out-of-band flags that
        /// change, anything the decoder accepts) never panics and keeps the count of held
        /// bytes (what bounds memory) exact.
        #[test]
        fn arbitrary_records_never_panic(
            records in proptest::collection::vec(
                (1u64..40, proptest::bool::ANY, proptest::option::of((0u32..5, 1u32..5)), 0usize..4),
                0..80,
            ),
            retain in proptest::bool::ANY,
        ) {
            let mut h = Harness::new(retain);
            for (seqno, oob, frag, len) in records {
                let fragment = frag
                    .map(|(i, c)| Fragment { index: i % c, count: c })
                    .filter(|f| u64::from(f.index) < seqno);
                h.rx(DataRecord {
                    seqno,
                    oob,
                    fragment,
                    payload: Bytes::from(vec![seqno as u8; len]),
                });
                let held: usize = h.w.ring.iter().map(|s| match s {
                    Slot::Waiting(m) | Slot::Done(Some(m)) => m.payload.len(),
                    _ => 0,
                }).sum();
                proptest::prop_assert_eq!(held, h.w.bytes());
                h.w.announce(seqno + 3, h.now, &h.config);
            }
            h.w.purge_through(u64::MAX);
        }
    }
}
