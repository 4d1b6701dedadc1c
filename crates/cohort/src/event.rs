//! What a node tells the application: member changes and received messages.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cohort_proto::group::View;
use cohort_proto::wire::tribes::SendOptions;
use cohort_proto::wire::tribes::frame::Reply;
use cohort_proto::{DisappearReason, Member, MemberId};
use futures_util::Stream;
use tokio::sync::{mpsc, oneshot};

/// Something that happened at a node, in the order it happened.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// A member joined (was heard for the first time). Emitted once per member id.
    MemberAdded(Member),
    /// A member left. Only for a member that was added before; once.
    MemberDisappeared {
        /// The member as last heard.
        member: Member,
        /// Why it left.
        reason: DisappearReason,
    },
    /// A message arrived.
    Message(Message),
    /// The group installed a new view: the agreed member list, the same at every member
    /// (see [`Node::view`](crate::Node::view)).
    ViewChanged(View),
    /// The group removed this node (it was paused or cut off for longer than the failure
    /// timeout) and it rejoins under a new id, by itself. A `ViewChanged` follows once it is
    /// back in.
    Rejoined {
        /// The id it had.
        old: MemberId,
        /// The id it has now.
        new: MemberId,
    },
}

/// A received message.
///
/// When the sender asked for a synchronized ACK, the ACK goes back only once the
/// application is done with the message: when it calls [`Message::accept`] or
/// [`Message::reject`], or drops it (which accepts). Messages on one connection are
/// acknowledged in order, so holding one back holds back the ACKs of later messages from
/// the same sender.
#[derive(Debug)]
pub struct Message {
    /// The sender.
    pub from: Member,
    /// The message bytes.
    pub data: Bytes,
    /// The options the sender used.
    pub options: SendOptions,
    /// The sender's wall-clock time when it sent the message.
    pub sent_at: SystemTime,
    pub(crate) reply: Option<oneshot::Sender<Reply>>,
}

impl Message {
    pub(crate) fn new(
        from: Member,
        data: Bytes,
        options: SendOptions,
        timestamp_ms: i64,
        reply: Option<oneshot::Sender<Reply>>,
    ) -> Self {
        let sent_at = UNIX_EPOCH + Duration::from_millis(timestamp_ms.max(0) as u64);
        Self {
            from,
            data,
            options,
            sent_at,
            reply,
        }
    }

    /// Done with the message: a synchronized ACK tells the sender it succeeded.
    pub fn accept(mut self) {
        self.respond(Reply::Ack);
    }

    /// The application could not handle the message: a synchronized ACK becomes a failure
    /// ACK, and the sender's send fails for this member. Without synchronized ACK the
    /// sender was already answered and this does nothing.
    pub fn reject(mut self) {
        self.respond(Reply::FailAck);
    }

    /// True when the sender waits for this message to be accepted or rejected.
    pub fn awaits_reply(&self) -> bool {
        self.reply.is_some()
    }

    fn respond(&mut self, reply: Reply) {
        if let Some(tx) = self.reply.take() {
            let _ = tx.send(reply);
        }
    }
}

impl Drop for Message {
    fn drop(&mut self) {
        self.respond(Reply::Ack);
    }
}

/// The stream of [`Event`]s of a node. It ends after the node shut down.
///
/// Dropping it is allowed: messages are then acknowledged and discarded, as Tribes does
/// for a channel without listeners.
#[derive(Debug)]
pub struct Events {
    pub(crate) rx: mpsc::Receiver<Event>,
}

impl Events {
    /// The next event, or `None` once the node has shut down.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}

impl Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}
