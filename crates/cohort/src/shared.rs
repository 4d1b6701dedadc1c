//! State shared by a node's tasks and its handles.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use cohort_proto::Member;
use cohort_proto::membership::MembershipStats;
use tokio::sync::watch;

use crate::transport::sender::Peers;

pub(crate) struct Shared {
    pub(crate) local: Member,
    pub(crate) members: watch::Sender<Arc<Vec<Member>>>,
    /// Our member record as the last heartbeat sent it: the sender field of every frame.
    sender_record: RwLock<Bytes>,
    membership_stats: Mutex<MembershipStats>,
    pub(crate) counters: Counters,
    pub(crate) peers: Peers,
}

/// Counters of the channel, updated by the transport tasks.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) messages_received: AtomicU64,
    pub(crate) malformed_frames: AtomicU64,
    pub(crate) connections_accepted: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl Shared {
    pub(crate) fn new(local: Member, sender_record: Bytes, peers: Peers) -> Self {
        Self {
            local,
            members: watch::Sender::new(Arc::new(Vec::new())),
            sender_record: RwLock::new(sender_record),
            membership_stats: Mutex::new(MembershipStats::default()),
            counters: Counters::default(),
            peers,
        }
    }

    pub(crate) fn sender_record(&self) -> Bytes {
        self.sender_record
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_sender_record(&self, record: Bytes) {
        *self
            .sender_record
            .write()
            .unwrap_or_else(|e| e.into_inner()) = record;
    }

    pub(crate) fn publish_members(&self, mut members: Vec<Member>) {
        members.sort_by_key(|m| m.addr);
        self.members.send_replace(Arc::new(members));
    }

    pub(crate) fn membership_stats(&self) -> MembershipStats {
        *self
            .membership_stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_membership_stats(&self, stats: MembershipStats) {
        *self
            .membership_stats
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = stats;
    }
}
