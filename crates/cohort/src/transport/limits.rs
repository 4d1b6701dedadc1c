//! What inbound TCP connections may take from a node: how many are served at once, and
//! how many bytes of unfinished frames they may hold (issue 16: 20 000 idle connections
//! used up the file descriptors, so new members' frames got no ACK; ten connections each
//! sending 30 MiB of a declared 64 MiB frame held 300 MB).
//!
//! Connections are never closed for being idle: the ring connection (`group/ring.rs`)
//! sends nothing by design, and so does a member with nothing to say. Only when the cap
//! is reached does a new connection take the place of the oldest one that has not yet
//! delivered a frame (an idle stranger, or a ring connection, which then reconnects at
//! once: a closed connection is not taken as proof of a death). A new connection finds
//! room as long as any connection has delivered nothing, so idle connections cannot lock
//! out a new member; connections that have delivered frames are never evicted.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use tokio::task::{AbortHandle, Id};

/// Limits on inbound TCP connections; the same for the channel's receiver and for the
/// reliable channel's TCP transport (each has its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct InboundLimits {
    /// Connections served at once. At the cap a new connection replaces the oldest one
    /// that has not delivered a frame yet; if every connection has, the new one is closed
    /// at once. Default: 1024 (each takes a file descriptor and a task).
    pub max_connections: usize,
    /// Bytes one connection may hold in frames not complete yet (or, with a key, sealed
    /// records not yet opened). A connection that needs more is closed. At least the
    /// largest frame the receiver accepts plus a read (see the transports). Default:
    /// 64 MiB + 128 KiB, a largest message with room for its framing.
    pub max_buffered_per_connection: usize,
    /// Bytes all connections together may hold that way. A connection whose read would
    /// take the sum beyond it is closed. Default: 256 MiB.
    pub max_buffered_total: usize,
}

impl Default for InboundLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_buffered_per_connection: 64 * 1024 * 1024 + 128 * 1024,
            max_buffered_total: 256 * 1024 * 1024,
        }
    }
}

cohort_proto::config_setters!(InboundLimits {
    max_connections: usize,
    max_buffered_per_connection: usize,
    max_buffered_total: usize,
});

/// What the limits did, for a transport's stats. 64-bit, one per connection or refusal:
/// they cannot wrap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct InboundStats {
    /// Connections accepted and served.
    pub accepted: u64,
    /// Connections closed at once: the cap was reached and every connection had
    /// delivered frames.
    pub refused: u64,
    /// Connections closed to make room for a new one (the oldest that had delivered
    /// nothing).
    pub evicted: u64,
    /// Connections closed for holding more unfinished bytes than allowed (their own
    /// limit, or the sum of all).
    pub over_buffer: u64,
    /// Connections served now.
    pub open: u64,
    /// Bytes held in unfinished frames now.
    pub buffered: u64,
}

/// The counters behind [`InboundStats`], shared by the accept loop and its connections.
#[derive(Debug, Default)]
pub(crate) struct InboundCounters {
    accepted: AtomicU64,
    refused: AtomicU64,
    evicted: AtomicU64,
    over_buffer: AtomicU64,
    open: AtomicU64,
    buffered: AtomicUsize,
}

impl InboundCounters {
    /// A snapshot.
    pub(crate) fn stats(&self) -> InboundStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        InboundStats {
            accepted: get(&self.accepted),
            refused: get(&self.refused),
            evicted: get(&self.evicted),
            over_buffer: get(&self.over_buffer),
            open: get(&self.open),
            buffered: self.buffered.load(Ordering::Relaxed) as u64,
        }
    }
}

/// The connections an accept loop serves, in the order they came.
pub(crate) struct Slots {
    limits: InboundLimits,
    counters: Arc<InboundCounters>,
    live: HashMap<Id, Slot>,
    serial: u64,
}

struct Slot {
    serial: u64,
    proven: Arc<AtomicBool>,
    handle: AbortHandle,
}

/// A connection's own view of the limits: whether it has proven itself, and what it holds.
pub(crate) struct Conn {
    proven: Arc<AtomicBool>,
    held: usize,
    limits: InboundLimits,
    counters: Arc<InboundCounters>,
}

impl Conn {
    /// The connection delivered a frame: it is not evicted to make room from now on.
    pub(crate) fn proven(&self) {
        self.proven.store(true, Ordering::Relaxed);
    }

    /// The connection now holds `bytes` of unfinished frames. `false` (counted) if that
    /// is more than it or all connections together may hold: close it.
    #[must_use]
    pub(crate) fn hold(&mut self, bytes: usize) -> bool {
        if bytes > self.held {
            let grow = bytes - self.held;
            let before = self.counters.buffered.fetch_add(grow, Ordering::Relaxed);
            if bytes > self.limits.max_buffered_per_connection
                || before.saturating_add(grow) > self.limits.max_buffered_total
            {
                self.counters.buffered.fetch_sub(grow, Ordering::Relaxed);
                self.counters.over_buffer.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        } else {
            self.counters
                .buffered
                .fetch_sub(self.held - bytes, Ordering::Relaxed);
        }
        self.held = bytes;
        true
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.counters
            .buffered
            .fetch_sub(self.held, Ordering::Relaxed);
        self.counters.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Slots {
    pub(crate) fn new(limits: InboundLimits, counters: Arc<InboundCounters>) -> Self {
        Self {
            limits,
            counters,
            live: HashMap::new(),
            serial: 0,
        }
    }

    /// Makes room for a new connection: `Some` with its handle on the limits if it may be
    /// served (evicting the oldest connection that delivered nothing, if the cap is
    /// reached), `None` (counted) if it must be closed at once.
    pub(crate) fn admit(&mut self) -> Option<Conn> {
        if self.live.len() >= self.limits.max_connections.max(1) {
            let oldest = self
                .live
                .iter()
                .filter(|(_, s)| !s.proven.load(Ordering::Relaxed))
                .min_by_key(|(_, s)| s.serial)
                .map(|(id, _)| *id);
            let Some(id) = oldest else {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                return None;
            };
            if let Some(slot) = self.live.remove(&id) {
                slot.handle.abort();
                self.counters.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.counters.accepted.fetch_add(1, Ordering::Relaxed);
        self.counters.open.fetch_add(1, Ordering::Relaxed);
        Some(Conn {
            proven: Arc::new(AtomicBool::new(false)),
            held: 0,
            limits: self.limits,
            counters: self.counters.clone(),
        })
    }

    /// Records the task serving an admitted connection (`conn` before it moved in).
    pub(crate) fn insert(&mut self, proven: Arc<AtomicBool>, handle: AbortHandle) {
        self.serial += 1;
        self.live.insert(
            handle.id(),
            Slot {
                serial: self.serial,
                proven,
                handle,
            },
        );
    }

    /// The task `id` ended.
    pub(crate) fn remove(&mut self, id: Id) {
        self.live.remove(&id);
    }
}

impl Conn {
    /// The flag [`Slots::insert`] needs.
    pub(crate) fn proven_flag(&self) -> Arc<AtomicBool> {
        self.proven.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_connections: usize, per: usize, total: usize) -> InboundLimits {
        InboundLimits {
            max_connections,
            max_buffered_per_connection: per,
            max_buffered_total: total,
        }
    }

    #[test]
    fn buffered_bytes_are_bounded_per_connection_and_in_sum_and_given_back() {
        let counters = Arc::new(InboundCounters::default());
        let mut slots = Slots::new(limits(10, 100, 150), counters.clone());
        let mut a = slots.admit().expect("room");
        let mut b = slots.admit().expect("room");
        assert!(a.hold(100));
        assert!(!a.hold(101), "over its own limit");
        assert!(b.hold(50));
        assert!(!b.hold(51), "over the sum");
        assert_eq!(counters.stats().buffered, 150);
        assert!(a.hold(10));
        assert!(b.hold(100));
        assert_eq!(counters.stats().buffered, 110);
        drop(b);
        assert_eq!(counters.stats().buffered, 10);
        assert_eq!(counters.stats().over_buffer, 2);
        drop(a);
        assert_eq!(counters.stats().buffered, 0);
        assert_eq!(counters.stats().open, 0);
    }

    #[tokio::test]
    async fn at_the_cap_the_oldest_unproven_connection_makes_room_and_proven_ones_stay() {
        let counters = Arc::new(InboundCounters::default());
        let mut slots = Slots::new(limits(2, 100, 100), counters.clone());
        let mut tasks = tokio::task::JoinSet::new();
        let mut spawn = |slots: &mut Slots, conn: Conn| {
            let flag = conn.proven_flag();
            let handle = tasks.spawn(async move {
                let _conn = conn;
                std::future::pending::<()>().await
            });
            slots.insert(flag, handle);
        };
        let first = slots.admit().expect("room");
        first.proven();
        spawn(&mut slots, first);
        let idle = slots.admit().expect("room");
        spawn(&mut slots, idle);
        // Full: the idle one goes, the proven one stays.
        let newcomer = slots.admit().expect("room made");
        newcomer.proven();
        spawn(&mut slots, newcomer);
        assert_eq!(counters.stats().evicted, 1);
        // Full of proven connections: refused.
        assert!(slots.admit().is_none());
        assert_eq!(counters.stats().refused, 1);
        let ended = tasks.join_next().await.expect("the evicted task ends");
        assert!(ended.expect_err("aborted").is_cancelled());
        assert_eq!(counters.stats().open, 2);
        tasks.shutdown().await;
        assert_eq!(counters.stats().open, 0);
    }
}
