//! Settings of the reliable messaging layer.

use std::time::Duration;

use super::send::MESSAGE_COST;
use crate::wire::cohort::reliable::{DATA_OVERHEAD, HEADER_LEN, MAX_FRAGMENTS};

/// Settings of [`Reliable`](super::Reliable). `Default` gives values like JGroups'
/// `udp.xml` (NAKACK, UNICAST, STABLE, MFC/UFC, FRAG2, bundling).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReliableConfig {
    /// The largest datagram the core produces (envelope and header included). 60 000 fits
    /// one UDP datagram with room to spare, like JGroups' `frag_size` of 60 K; use about
    /// 1 400 where IP fragmentation is unwelcome (lossy WANs).
    pub max_datagram_size: usize,
    /// The largest message `multicast`/`unicast` accept; larger ones fail with
    /// [`SendError::TooLarge`](super::SendError::TooLarge). Messages larger than one
    /// datagram are fragmented. At least 16 MiB by default.
    pub max_message_size: usize,
    /// Flow-control window, in bytes, per stream: how much a sender may have sent that some
    /// receiver has not yet consumed (unicast: per destination; multicast: of the slowest
    /// member). It bounds the sender's retransmit buffer and every receiver's reorder
    /// buffer for that sender. Like JGroups MFC/UFC `max_credits`. A message larger than
    /// the window is sent when nothing else is outstanding.
    pub credit_window: usize,
    /// A receiver acknowledges (returns credits) once it consumed this many bytes of a
    /// stream since its last acknowledgement (JGroups `min_threshold` × `max_credits`).
    pub ack_threshold: usize,
    /// Acknowledgements are withheld while this many bytes of deliveries wait for
    /// [`poll_delivery`](super::Reliable::poll_delivery), so an application that does not
    /// keep up slows its senders instead of growing its queue.
    pub max_delivery_queue: usize,
    /// Delays between the NAKs for a missing message: the first NAK goes out the first
    /// delay after the gap was seen, and so on (SPEC §5: 100, 200, 400, 800, 1600 ms).
    pub nak_backoff: Vec<Duration>,
    /// The delay between NAKs once `nak_backoff` is used up (SPEC §5: 100 ms).
    pub nak_interval_after: Duration,
    /// Answer a NAK by multicasting the retransmission to the group rather than sending
    /// it only to the member that asked (JGroups `use_mcast_xmit`).
    pub retransmit_by_multicast: bool,
    /// Ask a random member rather than the original sender for missing multicasts (JGroups
    /// `xmit_from_random_member`); every other NAK still goes to the sender, so a member
    /// that does not hold the message cannot stall recovery. Useful only with
    /// `discard_delivered == false`.
    pub nak_random_member: bool,
    /// Drop other members' multicasts once delivered instead of keeping them until they are
    /// stable (JGroups `discard_delivered_msgs`). Saves memory; only the original sender can
    /// then retransmit.
    pub discard_delivered: bool,
    /// Hard bound, in bytes (credit cost), on the retransmit buffer of each outgoing
    /// stream. Normally the buffer stays within `credit_window`; only a message larger than
    /// the window, sent when nothing else is outstanding, goes beyond it, and never beyond
    /// this bound. Must hold `credit_window` and the largest message.
    pub max_retransmit_buffer: usize,
    /// How often a member gossips stability (what it consumed from every sender) and its
    /// own highest seqno while anything is unacknowledged. It also finds lost last
    /// messages, so it bounds the recovery time of a tail loss.
    pub stable_interval: Duration,
    /// How long a datagram may stay open for more messages before it is due. Zero (the
    /// default) closes datagrams at the end of every `handle_*` call, and a send burst's
    /// datagram at [`Reliable::flush`](super::Reliable::flush) or the next timeout.
    pub bundle_linger: Duration,
    /// Deliver the local member's own multicasts to itself, like JGroups does.
    pub deliver_own: bool,
    /// Seed of the random choices (which member to ask for a retransmission).
    pub rng_seed: u64,
    /// View-synchronous delivery (SPEC §6, JGroups' FLUSH): a view change first flushes
    /// the old view, so every member that installs the new view delivered the same
    /// messages of the old one, a crashed member's included, and a message is delivered
    /// only in the view it was sent in. Sends are blocked during the flush
    /// ([`ReliableEvent::Block`](super::ReliableEvent::Block)). Delivered messages of
    /// other members are then kept until stable whatever
    /// [`discard_delivered`](Self::discard_delivered) says, so survivors can pass them on.
    /// Off by default (a fixed group has no view changes); a channel that follows a
    /// node's views turns it on.
    pub view_synchrony: bool,
    /// How long a flush participant waits for an answer from the flush coordinator before
    /// it repeats its digest or acknowledgement; doubled on every repeat up to 16 times
    /// this.
    pub flush_retry: Duration,
}

impl Default for ReliableConfig {
    fn default() -> Self {
        Self {
            max_datagram_size: 60_000,
            max_message_size: 16 << 20,
            credit_window: 4 << 20,
            ack_threshold: 1 << 20,
            max_delivery_queue: 4 << 20,
            nak_backoff: [100, 200, 400, 800, 1600]
                .into_iter()
                .map(Duration::from_millis)
                .collect(),
            nak_interval_after: Duration::from_millis(100),
            retransmit_by_multicast: false,
            nak_random_member: false,
            discard_delivered: true,
            max_retransmit_buffer: 32 << 20,
            stable_interval: Duration::from_millis(50),
            bundle_linger: Duration::ZERO,
            deliver_own: true,
            rng_seed: 0x00C0_4E00,
            view_synchrony: false,
            flush_retry: Duration::from_millis(50),
        }
    }
}

impl ReliableConfig {
    /// Short timers for a LAN or loopback, where a datagram is late after a few
    /// milliseconds, not a hundred: NAKs after 5, 10, 20, 40, 80 ms then every 20 ms, and
    /// stability gossip every 10 ms. A lost datagram then stalls a sender whose window
    /// is full for milliseconds instead of the default's 100 ms.
    pub fn lan() -> Self {
        Self {
            nak_backoff: [5, 10, 20, 40, 80]
                .into_iter()
                .map(Duration::from_millis)
                .collect(),
            nak_interval_after: Duration::from_millis(20),
            stable_interval: Duration::from_millis(10),
            flush_retry: Duration::from_millis(10),
            ..Self::default()
        }
    }
}

/// A setting out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid reliable config: {0}")]
pub struct ConfigError(pub String);

impl ReliableConfig {
    /// Checks that the settings work together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let min_datagram = HEADER_LEN + DATA_OVERHEAD + 16 + 64;
        if self.max_datagram_size < min_datagram || self.max_datagram_size > 65_507 {
            return Err(ConfigError(format!(
                "max_datagram_size {} outside {min_datagram}..=65507",
                self.max_datagram_size
            )));
        }
        if self.max_message_size > self.fragment_payload() * MAX_FRAGMENTS as usize {
            return Err(ConfigError(
                "max_message_size needs too many fragments".into(),
            ));
        }
        if self.credit_window == 0 || self.ack_threshold == 0 {
            return Err(ConfigError(
                "credit_window and ack_threshold must be > 0".into(),
            ));
        }
        if self.ack_threshold > self.credit_window {
            return Err(ConfigError(
                "ack_threshold must not exceed credit_window".into(),
            ));
        }
        let largest =
            self.max_message_size + self.fragment_count(self.max_message_size) * MESSAGE_COST;
        if self.max_retransmit_buffer < self.credit_window.max(largest) {
            return Err(ConfigError(format!(
                "max_retransmit_buffer must hold credit_window and the largest message \
                 ({largest} bytes with overhead)"
            )));
        }
        if self.nak_interval_after.is_zero() || self.nak_backoff.iter().any(|d| d.is_zero()) {
            return Err(ConfigError("NAK delays must be > 0".into()));
        }
        if self.flush_retry.is_zero() {
            return Err(ConfigError("flush_retry must be > 0".into()));
        }
        if self.stable_interval.is_zero() {
            return Err(ConfigError("stable_interval must be > 0".into()));
        }
        Ok(())
    }

    /// Payload bytes of one fragment: what fits in a datagram with one retransmission
    /// record (the largest record form) after the header.
    pub(crate) fn fragment_payload(&self) -> usize {
        self.max_datagram_size - HEADER_LEN - DATA_OVERHEAD - 16
    }

    /// How many fragments a message of `len` payload bytes goes in (at least one). Most
    /// messages fit in one, which is answered without a division: this runs for every
    /// message, twice in a burst.
    pub(crate) fn fragment_count(&self, len: usize) -> usize {
        let frag = self.fragment_payload();
        if len <= frag { 1 } else { len.div_ceil(frag) }
    }

    /// Whether delivered messages of other members are kept until stable.
    pub(crate) fn retain_delivered(&self) -> bool {
        !self.discard_delivered || self.view_synchrony
    }

    /// The delay before NAK number `attempt` (0 = the first).
    pub(crate) fn nak_delay(&self, attempt: u32) -> Duration {
        self.nak_backoff
            .get(attempt as usize)
            .copied()
            .unwrap_or(self.nak_interval_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_backs_off_as_specified() {
        let c = ReliableConfig::default();
        c.validate().unwrap();
        assert!(c.max_message_size >= 16 << 20);
        let delays: Vec<u128> = (0..7).map(|a| c.nak_delay(a).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 100, 100]);
        ReliableConfig::lan().validate().unwrap();
        let bad = ReliableConfig {
            max_datagram_size: 10,
            ..ReliableConfig::default()
        };
        assert!(bad.validate().is_err());
        let bad = ReliableConfig {
            ack_threshold: c.credit_window + 1,
            ..ReliableConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}

crate::config_setters!(ReliableConfig {
    max_datagram_size: usize,
    max_message_size: usize,
    credit_window: usize,
    ack_threshold: usize,
    max_delivery_queue: usize,
    nak_backoff: Vec<Duration>,
    nak_interval_after: Duration,
    retransmit_by_multicast: bool,
    nak_random_member: bool,
    discard_delivered: bool,
    max_retransmit_buffer: usize,
    stable_interval: Duration,
    bundle_linger: Duration,
    deliver_own: bool,
    rng_seed: u64,
    view_synchrony: bool,
    flush_retry: Duration,
});
