//! State shared by a node's tasks and its handles.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use cohort_proto::group::View;
use cohort_proto::membership::MembershipStats;
use cohort_proto::wire::tribes::{SendOptions, encode_data_frame};
use cohort_proto::{Member, MemberId};
use tokio::sync::{mpsc, watch};

use crate::messages::GroupInput;
use crate::security::Security;

use crate::transport::sender::Peers;

pub(crate) struct Shared {
    /// The local member as it started (its id changes if it rejoins: see `local_id`).
    pub(crate) local: Member,
    /// The local member's current id.
    pub(crate) local_id: watch::Sender<MemberId>,
    pub(crate) members: watch::Sender<Arc<Vec<Member>>>,
    /// The installed view.
    pub(crate) view: watch::Sender<Option<View>>,
    /// Facts for the group task: heartbeats heard, control messages received.
    pub(crate) group_inbox: mpsc::UnboundedSender<GroupInput>,
    /// Our member record as the last heartbeat sent it: the sender field of every frame.
    sender_record: RwLock<Bytes>,
    membership_stats: Mutex<MembershipStats>,
    pub(crate) counters: Counters,
    pub(crate) peers: Peers,
    /// The cluster key, if the node has one: every transport seals and opens through it.
    pub(crate) security: Option<Security>,
}

/// Counters of the channel, updated by the transport tasks.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) messages_received: AtomicU64,
    pub(crate) malformed_frames: AtomicU64,
    pub(crate) connections_accepted: AtomicU64,
    /// What the receiver's connection limits did.
    pub(crate) inbound: Arc<crate::transport::limits::InboundCounters>,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl Shared {
    pub(crate) fn new(
        local: Member,
        sender_record: Bytes,
        peers: Peers,
        group_inbox: mpsc::UnboundedSender<GroupInput>,
        security: Option<Security>,
    ) -> Self {
        Self {
            local_id: watch::Sender::new(local.id),
            local,
            members: watch::Sender::new(Arc::new(Vec::new())),
            view: watch::Sender::new(None),
            group_inbox,
            sender_record: RwLock::new(sender_record),
            membership_stats: Mutex::new(MembershipStats::default()),
            counters: Counters::default(),
            peers,
            security,
        }
    }

    pub(crate) fn sender_record(&self) -> Bytes {
        self.sender_record
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Encodes one Tribes data frame from this node (with a fresh message id and the
    /// current sender record).
    pub(crate) fn encode_frame(&self, options: SendOptions, data: &Bytes) -> Bytes {
        use rand::RngCore;
        let mut message_id = [0u8; 16];
        rand::rng().fill_bytes(&mut message_id);
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let sender = self.sender_record();
        let mut frame = bytes::BytesMut::with_capacity(data.len() + sender.len() + 64);
        encode_data_frame(options, timestamp, &message_id, &sender, data, &mut frame);
        frame.freeze()
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
