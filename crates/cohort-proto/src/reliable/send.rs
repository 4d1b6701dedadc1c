//! The sending side of one stream: seqno assignment and the retransmit buffer.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::wire::cohort::reliable::Fragment;

/// What a message costs in credits beyond its payload, so that even empty messages use up
/// the window and a receiver's reorder buffer stays bounded in entries, not just bytes.
pub(crate) const MESSAGE_COST: usize = 32;

/// The credit cost of a message (or fragment) of `len` payload bytes.
pub(crate) fn cost(len: usize) -> usize {
    len + MESSAGE_COST
}

/// One message kept for retransmission.
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    pub(crate) payload: Bytes,
    pub(crate) oob: bool,
    pub(crate) fragment: Option<Fragment>,
}

/// Seqnos of one outgoing stream and the messages not yet consumed by every receiver.
/// The buffer is a ring indexed by `seqno - base`, so lookups and purges are O(1).
#[derive(Debug)]
pub(crate) struct SendBuffer {
    next_seqno: u64,
    base: u64,
    buf: VecDeque<Sent>,
    bytes: usize,
    /// A send was refused for lack of credit; report when credit returns.
    pub(crate) blocked: bool,
}

impl SendBuffer {
    pub(crate) fn new() -> Self {
        Self {
            next_seqno: 1,
            base: 1,
            buf: VecDeque::new(),
            bytes: 0,
            blocked: false,
        }
    }

    /// The next seqno this stream will use.
    pub(crate) fn next_seqno(&self) -> u64 {
        self.next_seqno
    }

    /// The highest seqno sent so far (0 = none).
    pub(crate) fn highest_sent(&self) -> u64 {
        self.next_seqno - 1
    }

    /// Credit cost of everything kept.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Number of messages kept.
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// True if a message costing `cost` fits: within `window`, or, when nothing is
    /// outstanding, within `bound` (so a message larger than the window still goes).
    pub(crate) fn has_room(&self, cost: usize, window: usize, bound: usize) -> bool {
        self.bytes + cost <= window || (self.buf.is_empty() && cost <= bound)
    }

    /// Assigns the next seqno to `sent` and keeps it.
    pub(crate) fn push(&mut self, sent: Sent) -> u64 {
        let seqno = self.next_seqno;
        self.next_seqno += 1;
        self.bytes += cost(sent.payload.len());
        self.buf.push_back(sent);
        seqno
    }

    /// The kept message `seqno`, if it is still kept.
    pub(crate) fn get(&self, seqno: u64) -> Option<&Sent> {
        let idx = seqno.checked_sub(self.base)?;
        self.buf.get(usize::try_from(idx).ok()?)
    }

    /// The seqnos still kept, `first..=last`, or `None`.
    pub(crate) fn kept(&self) -> Option<(u64, u64)> {
        (!self.buf.is_empty()).then(|| (self.base, self.next_seqno - 1))
    }

    /// Forgets every message up to and including `seqno` (consumed by every receiver).
    pub(crate) fn purge_through(&mut self, seqno: u64) {
        while self.base <= seqno {
            let Some(sent) = self.buf.pop_front() else {
                break;
            };
            self.bytes -= cost(sent.payload.len());
            self.base += 1;
        }
        if self.buf.is_empty() {
            self.base = self.next_seqno;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(n: usize) -> Sent {
        Sent {
            payload: Bytes::from(vec![0; n]),
            oob: false,
            fragment: None,
        }
    }

    #[test]
    fn seqnos_credits_and_purge() {
        let mut b = SendBuffer::new();
        assert!(
            b.has_room(1000, 100, 1000),
            "an empty buffer takes up to the bound"
        );
        assert!(!b.has_room(1001, 100, 1000));
        assert_eq!(b.push(sent(10)), 1);
        assert_eq!(b.push(sent(20)), 2);
        assert_eq!(b.push(sent(30)), 3);
        assert_eq!(b.bytes(), 60 + 3 * MESSAGE_COST);
        assert!(!b.has_room(cost(100), 200, 1000));
        assert!(b.has_room(cost(10), 200, 1000));
        assert_eq!(b.get(2).unwrap().payload.len(), 20);
        assert!(b.get(0).is_none() && b.get(4).is_none());
        b.purge_through(2);
        assert_eq!(b.kept(), Some((3, 3)));
        assert!(b.get(2).is_none());
        assert_eq!(b.bytes(), cost(30));
        b.purge_through(10);
        assert!(b.is_empty());
        assert_eq!(b.kept(), None);
        assert_eq!(b.push(sent(1)), 4);
        assert_eq!(b.kept(), Some((4, 4)));
    }
}
