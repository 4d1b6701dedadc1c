//! Tribes send options (`Channel.SEND_OPTIONS_*`), carried in every data frame.

use std::fmt;

/// The option bits of a Tribes message. They travel in the frame, and the receiver reads
/// them to decide whether and when to acknowledge.
///
/// `SendOptions::default()` is [`USE_ACK`](Self::USE_ACK): a send succeeds once every
/// destination acknowledged it. (No bits at all, `SendOptions(0)`, is Tribes' fire and
/// forget.)
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SendOptions(pub u32);

impl Default for SendOptions {
    fn default() -> Self {
        Self::USE_ACK
    }
}

impl SendOptions {
    /// The message is raw bytes (`ByteMessage`), not a serialized Java object.
    pub const BYTE_MESSAGE: Self = Self(0x01);
    /// The receiver acknowledges the frame.
    pub const USE_ACK: Self = Self(0x02);
    /// The receiver acknowledges only after its application handled the message, and
    /// sends a failure ACK if the application failed.
    pub const SYNCHRONIZED_ACK: Self = Self(0x04);
    /// The sender queues the message and returns at once (local to the sender).
    pub const ASYNCHRONOUS: Self = Self(0x08);
    /// Sent over the secure (TLS) receiver.
    pub const SECURE: Self = Self(0x10);
    /// Sent over UDP.
    pub const UDP: Self = Self(0x20);
    /// Sent by multicast.
    pub const MULTICAST: Self = Self(0x40);
    /// cohort's own: the message belongs to cohort's group protocol, not to the
    /// application. Only ever sent to cohort nodes (Tribes never sees it); a high bit no
    /// Tribes option or interceptor uses. Applications cannot set it: `cohort::Node::send`
    /// clears it, so an application message never reaches a receiver's group layer.
    pub const COHORT_CONTROL: Self = Self(0x0100_0000);

    /// True when every bit of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The union of both sets of bits.
    #[must_use]
    pub const fn with(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// These options without the bits of `other`.
    #[must_use]
    pub const fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    /// True when the receiver must send an ACK for this message.
    pub const fn wants_ack(self) -> bool {
        self.contains(Self::USE_ACK)
    }

    /// True when the ACK waits for the application (`USE_ACK | SYNCHRONIZED_ACK`).
    pub const fn wants_sync_ack(self) -> bool {
        self.contains(Self::USE_ACK) && self.contains(Self::SYNCHRONIZED_ACK)
    }
}

impl std::ops::BitOr for SendOptions {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        self.with(rhs)
    }
}

impl fmt::Debug for SendOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(SendOptions, &str); 8] = [
            (SendOptions::BYTE_MESSAGE, "BYTE_MESSAGE"),
            (SendOptions::USE_ACK, "USE_ACK"),
            (SendOptions::SYNCHRONIZED_ACK, "SYNCHRONIZED_ACK"),
            (SendOptions::ASYNCHRONOUS, "ASYNCHRONOUS"),
            (SendOptions::SECURE, "SECURE"),
            (SendOptions::UDP, "UDP"),
            (SendOptions::MULTICAST, "MULTICAST"),
            (SendOptions::COHORT_CONTROL, "COHORT_CONTROL"),
        ];
        let mut first = true;
        for (bit, name) in NAMES {
            if self.contains(bit) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        let unknown = self.0 & !(0x7f | Self::COHORT_CONTROL.0);
        if unknown != 0 || first {
            if !first {
                f.write_str("|")?;
            }
            write!(f, "{unknown:#x}")?;
        }
        Ok(())
    }
}
