//! What a node's tasks tell each other. The tasks (heartbeat, group, receiver) sit side by
//! side and only meet through these messages and the state in `shared`, so none of them
//! imports another: `node` wires them together, and every import points down.

use bytes::Bytes;
use cohort_proto::group::HostCheck;
use cohort_proto::{DisappearReason, Member, MemberId};
use tokio::sync::oneshot;

/// Facts the group task learns from the other tasks.
#[derive(Debug)]
pub(crate) enum GroupInput {
    /// A heartbeat of a cohort node of our cluster.
    Heard(Member),
    /// The membership service dropped a cohort node.
    Gone {
        id: MemberId,
        reason: DisappearReason,
    },
    /// A group protocol message arrived on the channel.
    Message { from: Member, data: Bytes },
    /// The ring connection to `id` closed: its process is gone.
    RingClosed { id: MemberId },
    /// A host check asked for by the core finished.
    HostChecked { id: MemberId, result: HostCheck },
}

/// Commands from the node handle to the heartbeat task.
pub(crate) enum HeartbeatCommand {
    /// Announce the shutdown, then stop; the sender is answered once the packet is sent.
    Shutdown(oneshot::Sender<()>),
    /// Beat under a new id from now on (the group removed us and we rejoin).
    SetIdentity(MemberId),
}
