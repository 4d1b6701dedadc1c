//! Cluster-key mode at run time: the one seam every cohort byte passes through on its way
//! into and out of the process (SPEC §8; see `SECURITY.md` for the threat model).
//!
//! With a [`Keyring`] in [`Config::keyring`](crate::Config::keyring), a node seals every
//! datagram and every TCP stream it sends with the ring's primary key and refuses, and
//! counts in [`SecurityStats`], everything it receives that does not open with one of the
//! ring's keys: plain (unauthenticated) traffic, forgeries, tampered, replayed or stale
//! messages. The format and its guarantees are [`cohort_proto::security`]'s.
//!
//! Where the seam sits: each transport holds one of four small types from this module,
//! built from the node's `Option<Security>` (`None`: plain mode, the bytes pass unchanged,
//! at no cost, and the wire formats are Tribes' and cohort's as without this module):
//! - datagrams: `DatagramSeal` just before `send_to`, `DatagramOpen` just after
//!   `recv_from` (membership heartbeats in `heartbeat.rs`, reliable UDP in
//!   `reliable/driver.rs`);
//! - TCP streams: `StreamSeal` on the bytes just before they are written, `StreamOpen`
//!   on the bytes just read, before any decoder sees them (the channel in
//!   `transport/sender.rs` and `transport/receiver.rs`, reliable TCP in `reliable/tcp.rs`,
//!   the gossip router in `router.rs` and `discovery/router_client.rs`).
//!
//! The layers above (membership, group, reliable) see plaintext and never know whether it
//! was sealed. The election mesh (ZooKeeper's format) is not sealed yet.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::{Bytes, BytesMut};
use cohort_proto::MemberId;
use cohort_proto::security::{
    self as proto, GuardConfig, OpenError, Origin, Purpose, ReplayGuard, SealError, Sealer,
    SenderKeys, StreamOpener, StreamSealer,
};
use tracing::debug;

pub use cohort_proto::security::{Key, KeyId, Keyring, KeyringError};

/// What a node's seam sealed, opened and refused.
///
/// Every refusal is counted once, by its reason. The counters are 64-bit and only ever
/// incremented by one per message, so they cannot wrap in the life of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SecurityStats {
    /// Datagrams and stream records sealed.
    pub sealed: u64,
    /// Datagrams and stream records that opened and were accepted.
    pub opened: u64,
    /// Received traffic that was not sealed at all: plain (unauthenticated) cohort or
    /// Tribes traffic, or garbage. Each such connection is closed.
    pub unauthenticated: u64,
    /// Sealed with a key this node does not hold.
    pub unknown_key: u64,
    /// Forged or tampered: the tag did not check.
    pub bad_tag: u64,
    /// Copies of messages already accepted.
    pub replayed: u64,
    /// Sent too long ago or too far ahead by this node's clock.
    pub stale: u64,
    /// Stream records out of sequence or of impossible length.
    pub bad_record: u64,
    /// Refused because the replay guard held as many senders as it may.
    pub too_many_senders: u64,
    /// Our own messages come back (multicast loop, reflection); dropped, not an attack.
    pub own: u64,
    /// Sends refused rather than reuse a nonce (a sealer's counter used up).
    pub refused_sends: u64,
}

impl SecurityStats {
    /// Every refusal of received traffic, summed (own messages excluded).
    pub fn rejected(&self) -> u64 {
        self.unauthenticated
            + self.unknown_key
            + self.bad_tag
            + self.replayed
            + self.stale
            + self.bad_record
            + self.too_many_senders
    }
}

#[derive(Default)]
struct Counters {
    sealed: AtomicU64,
    opened: AtomicU64,
    unauthenticated: AtomicU64,
    unknown_key: AtomicU64,
    bad_tag: AtomicU64,
    replayed: AtomicU64,
    stale: AtomicU64,
    bad_record: AtomicU64,
    too_many_senders: AtomicU64,
    own: AtomicU64,
    refused_sends: AtomicU64,
}

fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

struct Inner {
    keyring: RwLock<Keyring>,
    guard: Mutex<ReplayGuard>,
    origin: Origin,
    serials: AtomicU64,
    counters: Counters,
}

/// A node's cluster key state: its keyring (changeable while the node runs), its replay
/// guard and its counters. Cheap to clone; clones share everything. A [`Node`](crate::Node)
/// started with a keyring has one ([`Node::security`](crate::Node::security)); its
/// [`ReliableChannel`](crate::reliable::ReliableChannel) shares it.
#[derive(Clone)]
pub struct Security {
    inner: Arc<Inner>,
}

impl fmt::Debug for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Security")
            .field("keys", &self.list())
            .field("origin", &self.inner.origin)
            .finish_non_exhaustive()
    }
}

impl Security {
    /// Security with `keyring` and the default replay guard.
    pub fn new(keyring: Keyring) -> Self {
        Self::with_guard(keyring, GuardConfig::default())
    }

    /// Security with `keyring` and a replay guard configured by `guard`.
    pub fn with_guard(keyring: Keyring, guard: GuardConfig) -> Self {
        let origin = Origin::random(&mut rand::rng());
        Self {
            inner: Arc::new(Inner {
                keyring: RwLock::new(keyring),
                guard: Mutex::new(ReplayGuard::new(guard, origin)),
                origin,
                serials: AtomicU64::new(0),
                counters: Counters::default(),
            }),
        }
    }

    /// A copy of the keyring as it is now.
    pub fn keyring(&self) -> Keyring {
        self.ring().clone()
    }

    /// Adds a key that is accepted from now on (`cohort keys install`).
    pub fn install(&self, key: Key) -> Result<(), KeyringError> {
        self.ring_mut().install(key)
    }

    /// Seals everything sent from now on with the key named `id` (`cohort keys use`).
    pub fn use_key(&self, id: KeyId) -> Result<(), KeyringError> {
        self.ring_mut().use_key(id)
    }

    /// Stops accepting the key named `id` (`cohort keys remove`); not the primary one.
    pub fn remove(&self, id: KeyId) -> Result<(), KeyringError> {
        self.ring_mut().remove(id)
    }

    /// Replaces the whole keyring (a reloaded key file): from now on `keyring`'s primary
    /// key seals what the node sends and only its keys open what it receives. Rotating a
    /// running cluster with it is the same three steps as with
    /// [`install`](Self::install), [`use_key`](Self::use_key) and
    /// [`remove`](Self::remove), each done on every node before the next (`cohort node`
    /// reloads its `--key-file` on SIGHUP).
    pub fn set_keyring(&self, keyring: Keyring) {
        *self.ring_mut() = keyring;
    }

    /// The names of the keys held, the primary one first (`cohort keys list`).
    pub fn list(&self) -> Vec<KeyId> {
        self.ring().list()
    }

    /// The counters.
    pub fn stats(&self) -> SecurityStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SecurityStats {
            sealed: get(&c.sealed),
            opened: get(&c.opened),
            unauthenticated: get(&c.unauthenticated),
            unknown_key: get(&c.unknown_key),
            bad_tag: get(&c.bad_tag),
            replayed: get(&c.replayed),
            stale: get(&c.stale),
            bad_record: get(&c.bad_record),
            too_many_senders: get(&c.too_many_senders),
            own: get(&c.own),
            refused_sends: get(&c.refused_sends),
        }
    }

    fn ring(&self) -> std::sync::RwLockReadGuard<'_, Keyring> {
        self.inner.keyring.read().unwrap_or_else(|e| e.into_inner())
    }

    fn ring_mut(&self) -> std::sync::RwLockWriteGuard<'_, Keyring> {
        self.inner
            .keyring
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ReplayGuard> {
        self.inner.guard.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A serial no other sealer of this node has.
    fn serial(&self) -> u64 {
        self.inner.serials.fetch_add(1, Ordering::Relaxed)
    }

    fn sealed(&self, result: Result<(), SealError>, n: u64) -> Result<(), SealError> {
        match result {
            Ok(()) => bump(&self.inner.counters.sealed, n),
            Err(_) => bump(&self.inner.counters.refused_sends, 1),
        }
        result
    }

    /// Counts a refusal (once per message or connection) and logs it.
    fn refused(&self, purpose: Purpose, error: OpenError) {
        let c = &self.inner.counters;
        let counter = match error {
            OpenError::NotSealed => &c.unauthenticated,
            OpenError::Truncated | OpenError::BadTag => &c.bad_tag,
            OpenError::UnknownKey(_) => &c.unknown_key,
            OpenError::Own => &c.own,
            OpenError::Stale { .. } => &c.stale,
            OpenError::Replayed => &c.replayed,
            OpenError::TooManySenders => &c.too_many_senders,
            OpenError::BadRecord => &c.bad_record,
        };
        bump(counter, 1);
        if error != OpenError::Own {
            debug!(?purpose, %error, "refused cohort traffic");
        }
    }
}

/// Milliseconds since the Unix epoch by the system clock: the send time sealed messages
/// carry, and the receiver's clock they are checked against.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Seals the datagrams of one socket (one sealer, counting up).
pub(crate) struct DatagramSeal {
    keyed: Option<(Security, Sealer)>,
    purpose: Purpose,
    /// The last datagram sealed, reused for the next one: sealing allocates nothing.
    sealed: BytesMut,
    /// The plaintext `sealed` holds (kept alive, so its address names it; see
    /// [`seal_bytes`](Self::seal_bytes)).
    last: Option<Bytes>,
}

impl DatagramSeal {
    pub(crate) fn new(security: Option<&Security>, purpose: Purpose) -> Self {
        Self {
            keyed: security.map(|s| (s.clone(), Sealer::new(s.inner.origin, s.serial()))),
            purpose,
            sealed: BytesMut::new(),
            last: None,
        }
    }

    /// The datagram to send for `plain`: itself without a key, else sealed (into a buffer
    /// this holds until the next call). `None` if it must not be sent (the sealer is used
    /// up; counted).
    pub(crate) fn seal<'a>(&'a mut self, plain: &'a [u8]) -> Option<&'a [u8]> {
        self.last = None;
        let Some((security, sealer)) = &mut self.keyed else {
            return Some(plain);
        };
        self.sealed.clear();
        let result = sealer.seal(
            &security.ring(),
            self.purpose,
            now_ms(),
            plain,
            &mut self.sealed,
        );
        security.sealed(result, 1).ok().map(|()| &self.sealed[..])
    }

    /// [`seal`](Self::seal) for a datagram held in [`Bytes`]: the fan-out copies of one
    /// datagram (the same `Bytes`, one after the other) are sealed once.
    pub(crate) fn seal_bytes<'a>(&'a mut self, plain: &'a Bytes) -> Option<&'a [u8]> {
        if self.keyed.is_none() {
            return Some(plain);
        }
        let repeat = self
            .last
            .as_ref()
            .is_some_and(|last| last.as_ptr() == plain.as_ptr() && last.len() == plain.len());
        if repeat {
            return Some(&self.sealed[..]);
        }
        self.seal(plain)?;
        self.last = Some(plain.clone());
        Some(&self.sealed[..])
    }

    /// Lets go of the last plaintext [`seal_bytes`](Self::seal_bytes) sealed (so its
    /// buffer can be reused); its next call seals anew.
    pub(crate) fn forget_last(&mut self) {
        self.last = None;
    }
}

/// Opens the datagrams of one socket.
pub(crate) struct DatagramOpen {
    security: Option<Security>,
    purpose: Purpose,
    /// The senders' keys, derived once per sender (this socket's own: no lock).
    keys: SenderKeys,
}

impl DatagramOpen {
    pub(crate) fn new(security: Option<&Security>, purpose: Purpose) -> Self {
        Self {
            keys: match security {
                // Our own multicasts come back through the loop: refused unopened.
                Some(s) => SenderKeys::default().refuse_own(s.inner.origin),
                None => SenderKeys::default(),
            },
            security: security.cloned(),
            purpose,
        }
    }

    /// The plaintext of a received datagram (the datagram itself without a key), or
    /// `None` if it is refused (counted). Decrypts in place, in `datagram`'s buffer.
    pub(crate) fn open(&mut self, mut datagram: BytesMut) -> Option<Bytes> {
        let Some(security) = &self.security else {
            return Some(datagram.freeze());
        };
        // The tag is checked under the keyring's read lock only; the replay guard, shared
        // by every socket and connection of the node, is locked for its check alone.
        let result = proto::open_message(
            &security.ring(),
            &mut self.keys,
            self.purpose,
            &mut datagram,
        )
        .and_then(|opened| security.guard().accept_opened(&opened, now_ms()));
        match result {
            Ok(()) => {
                bump(&security.inner.counters.opened, 1);
                Some(datagram.freeze())
            }
            Err(e) => {
                security.refused(self.purpose, e);
                None
            }
        }
    }
}

/// Seals one direction of one TCP connection.
pub(crate) struct StreamSeal {
    keyed: Option<(Security, StreamSealer)>,
}

impl StreamSeal {
    pub(crate) fn new(security: Option<&Security>, purpose: Purpose) -> Self {
        Self {
            keyed: security.map(|s| {
                (
                    s.clone(),
                    StreamSealer::new(s.inner.origin, s.serial(), purpose),
                )
            }),
        }
    }

    /// Binds every record to `member`, the member that accepted the connection (both
    /// directions of a connection bind to it), so the stream opens at no other member.
    pub(crate) fn bind(mut self, member: MemberId) -> Self {
        self.keyed = self.keyed.map(|(s, sealer)| (s, sealer.bind(member.0)));
        self
    }

    /// Whether bytes pass unchanged (no key).
    pub(crate) fn is_plain(&self) -> bool {
        self.keyed.is_none()
    }

    /// Appends `plain` to `out`, sealed if there is a key.
    pub(crate) fn seal_into(&mut self, plain: &[u8], out: &mut BytesMut) -> Result<(), SealError> {
        let Some((security, sealer)) = &mut self.keyed else {
            out.extend_from_slice(plain);
            return Ok(());
        };
        let records = plain.len().div_ceil(proto::MAX_RECORD_PLAINTEXT) as u64;
        let result = sealer.seal(&security.ring(), now_ms(), plain, out);
        security.sealed(result, records)
    }
}

/// Opens one direction of one TCP connection into its plaintext byte stream.
pub(crate) struct StreamOpen {
    keyed: Option<(Security, StreamOpener)>,
    purpose: Purpose,
}

impl StreamOpen {
    pub(crate) fn new(security: Option<&Security>, purpose: Purpose) -> Self {
        Self {
            keyed: security.map(|s| (s.clone(), StreamOpener::new(purpose))),
            purpose,
        }
    }

    /// Opens only records bound to `member` (see [`StreamSeal::bind`]).
    pub(crate) fn bind(mut self, member: MemberId) -> Self {
        self.keyed = self.keyed.map(|(s, opener)| (s, opener.bind(member.0)));
        self
    }

    /// Where bytes read from the socket go: `plain` itself without a key, else the
    /// opener's buffer of sealed bytes (call [`open`](Self::open) after each read).
    pub(crate) fn read_buffer<'a>(&'a mut self, plain: &'a mut BytesMut) -> &'a mut BytesMut {
        match &mut self.keyed {
            None => plain,
            Some((_, opener)) => opener.buffer_mut(),
        }
    }

    /// Sealed bytes read and not opened yet (a record not complete).
    pub(crate) fn buffered(&self) -> usize {
        self.keyed
            .as_ref()
            .map_or(0, |(_, opener)| opener.buffered())
    }

    /// Moves the plaintext of every complete record read so far into `plain`. An error
    /// (counted) means the connection must be closed.
    pub(crate) fn open(&mut self, plain: &mut BytesMut) -> Result<(), OpenError> {
        let Some((security, opener)) = &mut self.keyed else {
            return Ok(());
        };
        let ring = security.ring();
        let result = opener.open_with(&ring, plain, |opened| {
            security.guard().accept_opened(opened, now_ms())
        });
        drop(ring);
        match result {
            Ok(records) => {
                bump(&security.inner.counters.opened, records as u64);
                Ok(())
            }
            Err(e) => {
                security.refused(self.purpose, e);
                Err(e)
            }
        }
    }
}
