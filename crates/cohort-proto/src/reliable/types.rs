//! The public values the core takes and hands out: destinations, datagrams, deliveries,
//! send options, errors, events and statistics.

use bytes::Bytes;

use crate::group::ViewId;
use crate::membership::MemberId;
use crate::wire::DecodeError;

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Destination {
    /// Every other member of the current view (multicast, or unicast fan-out).
    Group,
    /// One member.
    Member(MemberId),
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Transmit {
    /// Where it goes.
    pub to: Destination,
    /// The bytes, at most [`max_datagram_size`](super::ReliableConfig::max_datagram_size).
    pub datagram: Bytes,
}

/// A message delivered to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The member that sent it.
    pub from: MemberId,
    /// The message (a slice of the received datagram unless it was fragmented).
    pub payload: Bytes,
    /// Out-of-band: delivered when it arrived, possibly before earlier messages of `from`.
    pub oob: bool,
    /// Sent with [`Reliable::unicast`](super::Reliable::unicast) (to this member only) rather than multicast.
    pub unicast: bool,
    /// The `seq` of the view installed here when it was delivered (0: none). With
    /// [`view_synchrony`](super::ReliableConfig::view_synchrony) that is the view it was
    /// sent in.
    pub view_seq: u64,
}

/// Options of one send.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendOpts {
    /// Out-of-band: reliable, but delivered as soon as it arrives rather than in order.
    pub oob: bool,
}

impl SendOpts {
    /// Options for an out-of-band message.
    pub const OOB: Self = Self { oob: true };
}

/// Why a send was refused. Nothing was sent and nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The flow-control window (or retransmit buffer bound) is full: try again after
    /// [`ReliableEvent::CreditAvailable`] for this destination.
    #[error("no credit: receivers have not consumed enough of what was sent")]
    NoCredit,
    /// The message is larger than [`max_message_size`](super::ReliableConfig::max_message_size).
    #[error("message of {len} bytes exceeds the maximum {max}")]
    TooLarge {
        /// The message's size.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The local member is not in a view (none installed yet, or it was removed).
    #[error("the local member is not in a view")]
    NotInView,
    /// The destination of a unicast is not a member of the current view.
    #[error("{0} is not a member of the current view")]
    UnknownMember(MemberId),
    /// A flush is under way (between [`ReliableEvent::Block`] and
    /// [`ReliableEvent::Unblock`]), or a member that joined waits for its first view to be
    /// installed: try again after `Unblock`, the send then goes out in the new view.
    #[error("blocked: the view is being flushed")]
    Blocked,
}

/// Why a received datagram was dropped. It is counted in [`ReliableStats::malformed`];
/// nothing else changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DatagramError {
    /// The bytes are not a valid reliable datagram (records before the bad one were
    /// processed).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The header names another sender than the one the runtime received it from.
    #[error("datagram claims sender {claimed}, received from {from}")]
    SenderMismatch {
        /// The member the runtime attributes the datagram to.
        from: MemberId,
        /// The sender in the header.
        claimed: MemberId,
    },
    /// A unicast datagram addressed to another member (for example an earlier
    /// incarnation of this process).
    #[error("datagram addressed to {0}")]
    NotForMe(MemberId),
}

/// Something the application may want to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReliableEvent {
    /// A send to `to` was refused with [`SendError::NoCredit`] and credit has returned.
    /// Reported once per refusal streak.
    CreditAvailable {
        /// [`Destination::Group`] for multicasts, else the unicast destination.
        to: Destination,
    },
    /// A flush began (a view change with
    /// [`view_synchrony`](super::ReliableConfig::view_synchrony)): sends fail with
    /// [`SendError::Blocked`] until [`ReliableEvent::Unblock`]. Messages of the current
    /// view may still be delivered. Reported once per flush, however often it restarts.
    Block,
    /// The flush ended: every member that installs `view` delivered the same messages of
    /// the view before it, and every delivery after this event belongs to `view` (see
    /// [`Delivery::view_seq`]). Sends go out again. Reported for every view installed
    /// with view synchrony, the first one (no flush, no `Block`) too.
    Unblock {
        /// The view now installed ([`Reliable::view`](super::Reliable::view)).
        view: ViewId,
    },
}

/// Counters and gauges, for metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReliableStats {
    /// Messages delivered to the application (fragmented ones once).
    pub delivered: u64,
    /// Messages (or fragments) sent the first time.
    pub sent: u64,
    /// Datagrams handed out by `poll_transmit`.
    pub datagrams_sent: u64,
    /// Datagrams taken in by `handle_datagram`.
    pub datagrams_received: u64,
    /// Ranges asked for in NAKs sent.
    pub naks_sent: u64,
    /// Ranges asked for in NAKs received.
    pub naks_received: u64,
    /// Messages retransmitted.
    pub retransmitted: u64,
    /// NAK records whose answer was cut short at
    /// [`credit_window`](super::ReliableConfig::credit_window) bytes: no receiver can be
    /// missing more than a window, so a NAK asking for more (the same ranges listed again
    /// and again, or the whole retention buffer) is a bug or an attack, and one datagram
    /// must not make a member send without bound.
    pub nak_answers_capped: u64,
    /// Messages received again after they were received or delivered.
    pub duplicates: u64,
    /// Datagrams dropped as malformed, misaddressed or forged.
    pub malformed: u64,
    /// Data from members not in the view, or too far ahead of the window.
    pub dropped: u64,
    /// Sends refused for lack of credit.
    pub no_credit: u64,
    /// Bytes (credit cost) in the local retransmit buffers (own multicasts and unicasts).
    pub retransmit_buffer_bytes: usize,
    /// Messages in the local retransmit buffers.
    pub retransmit_buffer_messages: usize,
    /// Payload bytes held by receive windows (out of order, or kept until stable).
    pub receive_buffer_bytes: usize,
    /// Payload bytes of deliveries waiting for `poll_delivery`.
    pub delivery_queue_bytes: usize,
    /// Outgoing streams currently refused for lack of credit.
    pub waiting_for_credit: usize,
    /// Flushes completed here (views installed after a flush).
    pub flushes: u64,
    /// Flushes restarted because the group's view changed again during one.
    pub flush_restarts: u64,
    /// Flush records ignored: from a member that takes no part, for another view, or
    /// inconsistent.
    pub flush_ignored: u64,
}
