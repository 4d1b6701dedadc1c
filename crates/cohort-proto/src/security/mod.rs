//! Cluster-key mode (SPEC §8): every cohort datagram and every byte of every cohort TCP
//! stream sealed with a key the whole cluster shares.
//!
//! A node without the key cannot read what members send, and nothing it sends is
//! accepted: not a heartbeat, not a channel frame, not a reliable datagram, not a router
//! registration. A copy of a sealed message is refused too (per-sender replay window,
//! bounded by a freshness check of the send time).
//!
//! # Format (version 1)
//!
//! A sealed message is a cohort envelope with protocol 5, then:
//!
//! ```text
//! envelope  C0 4E 01 05
//! key id    4 bytes          the name of the key it is sealed with (KeyId), in clear
//! origin    8 bytes  ┐       random per node start: who sealed it
//! serial    8 bytes  ├ nonce the sealer within that node (one per socket or connection)
//! counter   8 bytes  ┘       the sealer's message number; never repeats, never wraps
//! sent at   8 bytes          the sender's clock, ms since the Unix epoch
//! ciphertext | tag (16)      XChaCha20-Poly1305
//! ```
//!
//! The 40-byte header is the additional authenticated data (with one byte more, the
//! [`Purpose`], that is not sent: the receiver supplies the purpose it expects, so a
//! message sealed for one transport is refused by every other). The 24-byte XChaCha nonce
//! is origin, serial and counter: unique as long as no two node starts draw the same
//! 64-bit origin (for a cluster with a million restarts under one key, a one in 36 million
//! chance) and no sealer reuses a counter (it refuses to send instead, after 2^64 - 1
//! messages).
//!
//! Opening checks the envelope bytes and looks up the key id; **nothing else in the header
//! is read until the tag has checked**. Then the sender instance (origin and serial) and
//! counter go through the [`ReplayGuard`]: our own messages (multicast loop, reflection)
//! are refused, as is a send time more than [`GuardConfig::max_skew_ms`] from the
//! receiver's clock, and any counter already accepted from that instance.
//!
//! Datagrams are sealed one by one ([`Sealer::seal`], [`open_datagram`]). A TCP stream is
//! cut into records, each a u32 big-endian length and one sealed message of up to
//! [`MAX_RECORD_PLAINTEXT`] bytes of the stream ([`StreamSealer`], [`StreamOpener`]): the
//! receiver buffers at most one record before its tag is checked, the length being the
//! only field read before (it is authenticated as part of the record: a changed length
//! moves the tag). A stream's records come from one sealer, counters 0, 1, 2, … without a
//! gap; its first record goes through the replay guard, so a recorded connection cannot
//! be played again on a new one. A stream can also be bound to a member id (16 bytes
//! appended to the additional data, not sent: [`StreamSealer::bind`]), the member that
//! accepted the connection, so that a connection recorded on its way to one member does
//! not open at another.
//!
//! Everything here is sans-IO: the caller passes the time (`now_ms`, ms since the Unix
//! epoch, from the system clock) and the randomness.

mod keyring;
mod replay;
mod stream;

use bytes::{BufMut, Bytes, BytesMut};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{Tag, XNonce};

pub use self::keyring::{KEY_LEN, Key, KeyId, Keyring, KeyringError, MAX_KEYS};
pub use self::replay::{GuardConfig, ReplayGuard, WINDOW};
pub use self::stream::{MAX_RECORD_PLAINTEXT, RECORD_PREFIX_LEN, StreamOpener, StreamSealer};
use crate::wire::cohort::{MAGIC, VERSION};

/// The cohort envelope's protocol byte for sealed messages.
pub const PROTOCOL_SEALED: u8 = 5;

/// The four envelope bytes every sealed message starts with.
pub const SEALED_ENVELOPE: [u8; 4] = [MAGIC[0], MAGIC[1], VERSION, PROTOCOL_SEALED];

/// Bytes of the header in front of the ciphertext.
pub const HEADER_LEN: usize = 4 + 4 + 8 + 8 + 8 + 8;

/// Bytes of the authentication tag after the ciphertext.
pub const TAG_LEN: usize = 16;

/// Bytes sealing adds to a message.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// Which transport a sealed message belongs to. It is authenticated but not sent, so a
/// message sealed for one transport does not open on another (a heartbeat replayed at a
/// reliable socket, a channel frame reflected as a reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Purpose {
    /// Membership heartbeats (UDP).
    Heartbeat = 1,
    /// The channel's data frames, from the sending member to the receiver (TCP).
    ChannelData = 2,
    /// The channel's ACKs, from the receiver back to the sender (TCP).
    ChannelReply = 3,
    /// Reliable multicast and unicast datagrams (UDP).
    ReliableDatagram = 4,
    /// Reliable multicast and unicast over TCP (both directions).
    ReliableStream = 5,
    /// From a member to a gossip router (TCP).
    RouterRequest = 6,
    /// From a gossip router to a member (TCP).
    RouterReply = 7,
}

/// A node's random 64-bit name for this run: the first half of every sender instance it
/// seals with, so its own messages are recognised and its nonces differ from every other
/// node's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Origin(pub [u8; 8]);

impl Origin {
    /// A random origin (use a cryptographic generator, such as `rand::rng()`).
    pub fn random<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; 8];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }
}

/// One sealer of one node: its origin and serial, the first 16 bytes of its nonces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Instance([u8; 16]);

impl Instance {
    /// The sealer `serial` of the node `origin`.
    pub fn new(origin: Origin, serial: u64) -> Self {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&origin.0);
        bytes[8..].copy_from_slice(&serial.to_be_bytes());
        Self(bytes)
    }

    /// The node it belongs to.
    pub fn origin(&self) -> Origin {
        Origin(self.0[..8].try_into().expect("8 bytes"))
    }
}

/// A message could not be sealed; nothing was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The sealer used its last counter; reusing one would repeat a nonce. A new sealer
    /// (a new connection or socket) is needed. Takes 2^64 - 1 messages.
    #[error("the sealer's message counter is used up; refusing to reuse a nonce")]
    Exhausted,
}

/// A received message was refused. Nothing of it was used, and only
/// [`Replayed`](Self::Replayed)'s checks ran on authenticated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Not a sealed message: plain (unauthenticated) traffic, or garbage.
    #[error("not sealed: unauthenticated traffic")]
    NotSealed,
    /// Shorter than a header and a tag.
    #[error("sealed message too short")]
    Truncated,
    /// Sealed with a key this node does not hold.
    #[error("sealed with key {0}, which this node does not hold")]
    UnknownKey(KeyId),
    /// The tag does not check: forged, changed on the way, or sealed for another purpose.
    #[error("authentication failed: forged or tampered")]
    BadTag,
    /// Our own message, looped back or reflected.
    #[error("our own message")]
    Own,
    /// Sent too long ago, or too far in the future, by the receiver's clock.
    #[error("stale: sent {skew_ms} ms from now")]
    Stale {
        /// Send time minus the receiver's time.
        skew_ms: i64,
    },
    /// Already accepted, or older than the replay window.
    #[error("replayed")]
    Replayed,
    /// The replay guard holds as many senders as it may.
    #[error("too many senders to track")]
    TooManySenders,
    /// A stream record that does not follow the one before it (another sender, a gap, a
    /// repeat), or a record length out of bounds.
    #[error("stream record out of sequence or of impossible length")]
    BadRecord,
}

/// Seals messages of one sender instance, counting up.
#[derive(Debug, Clone)]
pub struct Sealer {
    instance: Instance,
    next: u64,
}

impl Sealer {
    /// The sealer `serial` of the node `origin`. A node must never create two sealers with
    /// the same serial under the same origin (their nonces would repeat).
    pub fn new(origin: Origin, serial: u64) -> Self {
        Self {
            instance: Instance::new(origin, serial),
            next: 0,
        }
    }

    /// Messages sealed so far.
    pub fn sealed(&self) -> u64 {
        self.next
    }

    /// Appends `plaintext` sealed for `purpose` with the ring's primary key to `out`
    /// ([`OVERHEAD`] bytes more than `plaintext`).
    pub fn seal(
        &mut self,
        ring: &Keyring,
        purpose: Purpose,
        now_ms: u64,
        plaintext: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), SealError> {
        self.seal_bound(ring, purpose, None, now_ms, plaintext, out)
    }

    /// [`seal`](Self::seal), bound to a member: the message opens only for a receiver that
    /// expects the same `bound_to` (see [`open_message_bound`]).
    pub fn seal_bound(
        &mut self,
        ring: &Keyring,
        purpose: Purpose,
        bound_to: Option<&[u8; 16]>,
        now_ms: u64,
        plaintext: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), SealError> {
        if self.next == u64::MAX {
            return Err(SealError::Exhausted);
        }
        let counter = self.next;
        self.next += 1;
        let key = ring.primary();
        out.reserve(OVERHEAD + plaintext.len());
        let start = out.len();
        out.put_slice(&SEALED_ENVELOPE);
        out.put_slice(&key.id.0);
        out.put_slice(&self.instance.0);
        out.put_u64(counter);
        out.put_u64(now_ms);
        let (aad, aad_len) = aad(&out[start..start + HEADER_LEN], purpose, bound_to);
        let nonce = *XNonce::from_slice(&out[start + 8..start + 32]);
        out.put_slice(plaintext);
        let tag = key
            .cipher
            .encrypt_in_place_detached(&nonce, &aad[..aad_len], &mut out[start + HEADER_LEN..])
            .expect("XChaCha20-Poly1305 seals any length a buffer can hold");
        out.put_slice(&tag);
        Ok(())
    }
}

/// The additional authenticated data: the header, the purpose and, for a bound message,
/// what it is bound to. Returns the bytes and how many of them are used.
fn aad(
    header: &[u8],
    purpose: Purpose,
    bound_to: Option<&[u8; 16]>,
) -> ([u8; HEADER_LEN + 17], usize) {
    let mut aad = [0u8; HEADER_LEN + 17];
    aad[..HEADER_LEN].copy_from_slice(header);
    aad[HEADER_LEN] = purpose as u8;
    match bound_to {
        Some(id) => {
            aad[HEADER_LEN + 1..].copy_from_slice(id);
            (aad, HEADER_LEN + 17)
        }
        None => (aad, HEADER_LEN + 1),
    }
}

/// What the authenticated header of an opened message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// The sealer it came from.
    pub instance: Instance,
    /// Its counter.
    pub counter: u64,
    /// The sender's clock when it sealed it, ms since the Unix epoch.
    pub sent_ms: u64,
    /// The key it was sealed with.
    pub key: KeyId,
}

/// Checks a sealed message's tag and decrypts it in place: on success `message` holds the
/// plaintext only. The replay guard is not consulted (see [`open_datagram`]).
pub fn open_message(
    ring: &Keyring,
    purpose: Purpose,
    message: &mut BytesMut,
) -> Result<Opened, OpenError> {
    open_message_bound(ring, purpose, None, message)
}

/// [`open_message`] of a message sealed with [`Sealer::seal_bound`]: `bound_to` must be
/// what the sender bound it to (for a TCP stream, the id of the member that accepted the
/// connection), else the tag does not check. So a recorded connection to one member
/// cannot be played to another.
pub fn open_message_bound(
    ring: &Keyring,
    purpose: Purpose,
    bound_to: Option<&[u8; 16]>,
    message: &mut BytesMut,
) -> Result<Opened, OpenError> {
    if message.len() < SEALED_ENVELOPE.len() || message[..4] != SEALED_ENVELOPE {
        return Err(OpenError::NotSealed);
    }
    if message.len() < OVERHEAD {
        return Err(OpenError::Truncated);
    }
    let key_id = KeyId(message[4..8].try_into().expect("4 bytes"));
    let key = ring.find(key_id).ok_or(OpenError::UnknownKey(key_id))?;
    let (aad, aad_len) = aad(&message[..HEADER_LEN], purpose, bound_to);
    let nonce = *XNonce::from_slice(&message[8..32]);
    let tag_at = message.len() - TAG_LEN;
    let tag = *Tag::from_slice(&message[tag_at..]);
    key.cipher
        .decrypt_in_place_detached(
            &nonce,
            &aad[..aad_len],
            &mut message[HEADER_LEN..tag_at],
            &tag,
        )
        .map_err(|_| OpenError::BadTag)?;
    // Authenticated from here on.
    let opened = Opened {
        instance: Instance(aad[8..24].try_into().expect("16 bytes")),
        counter: u64::from_be_bytes(aad[24..32].try_into().expect("8 bytes")),
        sent_ms: u64::from_be_bytes(aad[32..40].try_into().expect("8 bytes")),
        key: key_id,
    };
    message.truncate(tag_at);
    let _ = message.split_to(HEADER_LEN);
    Ok(opened)
}

/// Opens one sealed datagram: checks its tag, then its freshness and that it is not a
/// replay nor our own. Returns the plaintext.
pub fn open_datagram(
    ring: &Keyring,
    guard: &mut ReplayGuard,
    purpose: Purpose,
    now_ms: u64,
    datagram: &[u8],
) -> Result<Bytes, OpenError> {
    // Check the cheap things before copying the datagram for in-place decryption.
    if datagram.len() < SEALED_ENVELOPE.len() || datagram[..4] != SEALED_ENVELOPE {
        return Err(OpenError::NotSealed);
    }
    if datagram.len() < OVERHEAD {
        return Err(OpenError::Truncated);
    }
    let mut message = BytesMut::from(datagram);
    open_datagram_in_place(ring, guard, purpose, now_ms, &mut message)?;
    Ok(message.freeze())
}

/// [`open_datagram`] without a copy: on success `datagram` holds the plaintext.
pub fn open_datagram_in_place(
    ring: &Keyring,
    guard: &mut ReplayGuard,
    purpose: Purpose,
    now_ms: u64,
    datagram: &mut BytesMut,
) -> Result<Opened, OpenError> {
    let opened = open_message(ring, purpose, datagram)?;
    guard.accept(opened.instance, opened.counter, opened.sent_ms, now_ms)?;
    Ok(opened)
}

#[cfg(test)]
mod tests;
