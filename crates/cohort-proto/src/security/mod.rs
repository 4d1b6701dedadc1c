//! Cluster-key mode (SPEC §8): every cohort datagram and every byte of every cohort TCP
//! stream sealed with a key the whole cluster shares.
//!
//! A node without the key cannot read what members send, and nothing it sends is
//! accepted: not a heartbeat, not a channel frame, not a reliable datagram, not a router
//! registration. A copy of a sealed message is refused too (per-sender replay window,
//! bounded by a freshness check of the send time).
//!
//! # Format (format 2)
//!
//! A sealed message is a cohort envelope with protocol 6, then:
//!
//! ```text
//! envelope  C0 4E 01 06
//! key id    4 bytes           the name of the cluster key (KeyId), in clear
//! origin   12 bytes           random per node start: whose sender key sealed it
//! serial    4 bytes  ┐ nonce  the sealer within that node start (one per socket or connection)
//! counter   8 bytes  ┘        the sealer's message number; never repeats, never wraps
//! sent at   8 bytes           the sender's clock, ms since the Unix epoch
//! ciphertext | tag (16)       AES-256-GCM under the sender key
//! ```
//!
//! (Protocol 5 was format 1, XChaCha20-Poly1305 under the cluster key itself; it is
//! refused as not sealed.)
//!
//! **Keys.** A message is not sealed with the cluster key but with a *sender key*:
//! HKDF-SHA256 of the cluster key (extracted once when the key is installed) expanded
//! with the sender's origin. A sealer derives its key once per cluster key it seals with;
//! an opener derives a sender's key on the first message of that origin and keeps it
//! ([`SenderKeys`], filled only after a tag checked).
//!
//! **Nonces never repeat under a key.** AES-GCM's nonces are 96 bits: too few to draw at
//! random for every message of a busy cluster (the birthday bound nears after 2^32
//! messages under one key) and too few to hold an origin, a serial and a counter. So the
//! randomness goes into the key instead: every node start draws a 96-bit origin and seals
//! under its own sender key, and within that key the nonce is the sealer's serial
//! (handed out once each by the node) and its counter (counted up, refused rather than
//! wrapped). Two sealers share a key and nonce only if two node starts draw the same
//! 96-bit origin (with a million starts under one cluster key, a one in 2^57 chance).
//!
//! The 40-byte header is the additional authenticated data (with one byte more, the
//! [`Purpose`], that is not sent: the receiver supplies the purpose it expects, so a
//! message sealed for one transport is refused by every other).
//!
//! Opening checks the envelope bytes and looks up the key id; **nothing else in the header
//! is used until the tag has checked** but the origin (to find or derive the sender key)
//! and the nonce. Then the sender instance (origin and serial) and counter go through the
//! [`ReplayGuard`]: our own messages (multicast loop, reflection) are refused, as is a
//! send time more than [`GuardConfig::max_skew_ms`] from the receiver's clock, and any
//! counter already accepted from that instance.
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

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use ring::aead::{Aad, LessSafeKey, NONCE_LEN, Nonce, Tag};

pub use self::keyring::{KEY_LEN, Key, KeyId, Keyring, KeyringError, MAX_KEYS};
pub use self::replay::{GuardConfig, ReplayGuard, WINDOW};
pub use self::stream::{MAX_RECORD_PLAINTEXT, RECORD_PREFIX_LEN, StreamOpener, StreamSealer};
use crate::wire::cohort::{MAGIC, VERSION};

/// The cohort envelope's protocol byte for sealed messages (of format 2).
pub const PROTOCOL_SEALED: u8 = 6;

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
    /// The leader-election mesh between voters (TCP, both directions).
    Election = 8,
}

/// Bytes of an [`Origin`].
pub const ORIGIN_LEN: usize = 12;

/// A node's random 96-bit name for this run: its sender keys are derived from it (so its
/// nonces are its own), and its own messages are recognised by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Origin(pub [u8; ORIGIN_LEN]);

impl Origin {
    /// A random origin (use a cryptographic generator, such as `rand::rng()`).
    pub fn random<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; ORIGIN_LEN];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }
}

/// Sealers one node start can have: the serial takes 32 bits of the nonce.
pub const MAX_SEALERS: u64 = 1 << 32;

/// One sealer of one node start: its origin and serial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Instance([u8; 16]);

impl Instance {
    /// The sealer `serial` of the node `origin`.
    pub fn new(origin: Origin, serial: u32) -> Self {
        let mut bytes = [0u8; 16];
        bytes[..ORIGIN_LEN].copy_from_slice(&origin.0);
        bytes[ORIGIN_LEN..].copy_from_slice(&serial.to_be_bytes());
        Self(bytes)
    }

    /// The node start it belongs to.
    pub fn origin(&self) -> Origin {
        let mut origin = [0u8; ORIGIN_LEN];
        origin.copy_from_slice(&self.0[..ORIGIN_LEN]);
        Origin(origin)
    }
}

/// Where the fields of the header lie.
const KEY_ID_AT: usize = 4;
const ORIGIN_AT: usize = 8;
const NONCE_AT: usize = ORIGIN_AT + ORIGIN_LEN;
const COUNTER_AT: usize = NONCE_AT + 4;
const SENT_AT: usize = COUNTER_AT + 8;
const _: () = assert!(SENT_AT + 8 == HEADER_LEN && NONCE_AT + NONCE_LEN == SENT_AT);

/// A message could not be sealed; nothing was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The sealer used its last counter (after 2^64 - 1 messages), or its serial is beyond
    /// [`MAX_SEALERS`]; sealing would repeat a nonce. A new sealer (a new connection or
    /// socket), or for a serial a node restart, is needed.
    #[error("the sealer's nonces are used up; refusing to reuse one")]
    Exhausted,
    /// More plaintext in one message than AES-GCM can seal (64 GiB).
    #[error("message too long to seal")]
    TooLong,
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

/// Seals messages of one sender instance, counting up. Deliberately not `Clone`: two
/// copies would seal different messages under the same nonce and key, which gives
/// AES-GCM's authentication key away.
pub struct Sealer {
    instance: Instance,
    next: u64,
    /// False when the serial did not fit the nonce: every seal is refused.
    usable: bool,
    /// The sender key of the cluster key sealed with last (by its install uid), derived
    /// once per cluster key.
    key: Option<(u64, LessSafeKey)>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("instance", &self.instance)
            .field("next", &self.next)
            .field("usable", &self.usable)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// The sealer `serial` of the node start `origin`. A node must never create two
    /// sealers with the same serial under the same origin (their nonces would repeat). A
    /// serial of [`MAX_SEALERS`] or more does not fit the nonce: such a sealer refuses
    /// every message ([`SealError::Exhausted`]).
    pub fn new(origin: Origin, serial: u64) -> Self {
        let usable = serial < MAX_SEALERS;
        Self {
            instance: Instance::new(origin, serial as u32),
            next: 0,
            usable,
            key: None,
        }
    }

    /// Messages sealed so far.
    pub fn sealed(&self) -> u64 {
        self.next
    }

    /// Appends `plaintext` sealed for `purpose` with the ring's primary key to `out`
    /// ([`OVERHEAD`] bytes more than `plaintext`). The plaintext is copied once, into
    /// `out`, and encrypted there.
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
        if self.next == u64::MAX || !self.usable {
            return Err(SealError::Exhausted);
        }
        let entry = ring.primary();
        let key = match &self.key {
            Some((uid, key)) if *uid == entry.uid => key,
            _ => {
                let derived = entry.sender_key(&self.instance.origin());
                &self.key.insert((entry.uid, derived)).1
            }
        };
        let counter = self.next;
        out.reserve(OVERHEAD + plaintext.len());
        let start = out.len();
        out.put_slice(&SEALED_ENVELOPE);
        out.put_slice(&entry.id.0);
        out.put_slice(&self.instance.0);
        out.put_u64(counter);
        out.put_u64(now_ms);
        let (aad, aad_len) = aad(&out[start..start + HEADER_LEN], purpose, bound_to);
        let nonce = nonce(&aad);
        out.put_slice(plaintext);
        let Ok(tag) = key.seal_in_place_separate_tag(
            nonce,
            Aad::from(&aad[..aad_len]),
            &mut out[start + HEADER_LEN..],
        ) else {
            out.truncate(start);
            return Err(SealError::TooLong);
        };
        out.put_slice(tag.as_ref());
        // Counted only once used: a refused message used no nonce.
        self.next += 1;
        Ok(())
    }
}

/// The nonce of a message: its serial and counter, from its header.
fn nonce(header: &[u8]) -> Nonce {
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&header[NONCE_AT..NONCE_AT + NONCE_LEN]);
    Nonce::assume_unique_for_key(nonce)
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

/// Most sender keys a [`SenderKeys`] holds by default: one per node start of the
/// cluster that sent to this opener lately, per key of the ring.
pub const DEFAULT_SENDER_KEYS: usize = 1024;

/// The sender keys an opener derived: one per (cluster key, sender origin), derived on
/// the first message of that origin and kept. Only keys whose message's tag checked are
/// kept, so an attacker without the cluster key cannot fill it; it is bounded all the
/// same (when full it starts over, each sender's key then derived again on its next
/// message). Keep one per socket or connection: it needs no lock.
pub struct SenderKeys {
    keys: HashMap<(u64, Origin), LessSafeKey>,
    capacity: usize,
    own: Option<Origin>,
}

impl std::fmt::Debug for SenderKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SenderKeys")
            .field("held", &self.keys.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Default for SenderKeys {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_SENDER_KEYS)
    }
}

impl SenderKeys {
    /// An empty cache holding at most `capacity` keys (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            keys: HashMap::new(),
            capacity: capacity.max(1),
            own: None,
        }
    }

    /// Refuses messages that name `own` (this node's origin) as [`OpenError::Own`]
    /// *before* their tag is checked. A node's own multicasts come back to it through the
    /// multicast loop: checking their tags would double the sender's cipher work for
    /// nothing. A forgery that names our origin is refused all the same (it is counted
    /// as our own rather than as forged); nothing of it is used either way.
    pub fn refuse_own(mut self, own: Origin) -> Self {
        self.own = Some(own);
        self
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether it holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Checks a sealed message's tag and decrypts it in place: on success `message` holds the
/// plaintext only. The replay guard is not consulted (see [`open_datagram`]).
pub fn open_message(
    ring: &Keyring,
    keys: &mut SenderKeys,
    purpose: Purpose,
    message: &mut BytesMut,
) -> Result<Opened, OpenError> {
    open_message_bound(ring, keys, purpose, None, message)
}

/// [`open_message`] of a message sealed with [`Sealer::seal_bound`]: `bound_to` must be
/// what the sender bound it to (for a TCP stream, the id of the member that accepted the
/// connection), else the tag does not check. So a recorded connection to one member
/// cannot be played to another.
pub fn open_message_bound(
    ring: &Keyring,
    keys: &mut SenderKeys,
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
    let mut key_id = [0u8; 4];
    key_id.copy_from_slice(&message[KEY_ID_AT..ORIGIN_AT]);
    let key_id = KeyId(key_id);
    let entry = ring.find(key_id).ok_or(OpenError::UnknownKey(key_id))?;
    let (aad, aad_len) = aad(&message[..HEADER_LEN], purpose, bound_to);
    let mut origin = [0u8; ORIGIN_LEN];
    origin.copy_from_slice(&aad[ORIGIN_AT..NONCE_AT]);
    let slot = (entry.uid, Origin(origin));
    if keys.own == Some(slot.1) {
        return Err(OpenError::Own);
    }
    let tag_at = message.len() - TAG_LEN;
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&message[tag_at..]);
    // A sender seen before opens with its kept key; a new one's key is derived here and
    // kept only if its message is genuine.
    let derived = match keys.keys.get(&slot) {
        Some(_) => None,
        None => Some(entry.sender_key(&slot.1)),
    };
    let key = match &derived {
        Some(key) => key,
        None => &keys.keys[&slot],
    };
    key.open_in_place_separate_tag(
        nonce(&aad),
        Aad::from(&aad[..aad_len]),
        Tag::from(tag),
        &mut message[HEADER_LEN..tag_at],
        0..,
    )
    .map_err(|_| OpenError::BadTag)?;
    // Authenticated from here on.
    if let Some(key) = derived {
        if keys.keys.len() >= keys.capacity {
            keys.keys.clear();
        }
        keys.keys.insert(slot, key);
    }
    let mut instance = [0u8; 16];
    instance.copy_from_slice(&aad[ORIGIN_AT..COUNTER_AT]);
    let mut counter = [0u8; 8];
    counter.copy_from_slice(&aad[COUNTER_AT..SENT_AT]);
    let mut sent = [0u8; 8];
    sent.copy_from_slice(&aad[SENT_AT..HEADER_LEN]);
    let opened = Opened {
        instance: Instance(instance),
        counter: u64::from_be_bytes(counter),
        sent_ms: u64::from_be_bytes(sent),
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
    keys: &mut SenderKeys,
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
    open_datagram_in_place(ring, keys, guard, purpose, now_ms, &mut message)?;
    Ok(message.freeze())
}

/// [`open_datagram`] without a copy: on success `datagram` holds the plaintext.
pub fn open_datagram_in_place(
    ring: &Keyring,
    keys: &mut SenderKeys,
    guard: &mut ReplayGuard,
    purpose: Purpose,
    now_ms: u64,
    datagram: &mut BytesMut,
) -> Result<Opened, OpenError> {
    let opened = open_message(ring, keys, purpose, datagram)?;
    guard.accept_opened(&opened, now_ms)?;
    Ok(opened)
}

#[cfg(test)]
mod tests;
