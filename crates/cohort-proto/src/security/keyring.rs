//! Cluster keys and the keyring that holds them.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use ring::aead::{AES_256_GCM, LessSafeKey, UnboundKey};
use ring::{hkdf, hmac};
use zeroize::Zeroizing;

use super::Origin;

/// Bytes of a cluster key (256 bits).
pub const KEY_LEN: usize = 32;

/// What a key's [`KeyId`] is the HMAC-SHA256 of, under the key.
const KEY_ID_LABEL: &[u8] = b"cohort key id, format 2";

/// The HKDF-SHA256 salt under which a cluster key is extracted into the secret that the
/// senders' keys are expanded from (format 2 of sealed messages).
const SENDER_KEY_SALT: &[u8] = b"cohort sealed messages, format 2";

/// The HKDF info in front of the sender's origin when a sender key is expanded.
const SENDER_KEY_INFO: &[u8] = b"cohort sender key";

/// Numbers the keys installed in any ring of this process, so that a cache of derived
/// keys can tell a key from another one of the same [`KeyId`] (a one in 2^32 chance).
static NEXT_UID: AtomicU64 = AtomicU64::new(0);

/// The name of a key on the wire: the first four bytes of an HMAC-SHA256 under the key
/// of a fixed text, so it reveals nothing about the key and two nodes with the same key
/// always agree on it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 4]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// A 256-bit cluster key. Its bytes are wiped when it is dropped and never printed.
#[derive(Clone)]
pub struct Key {
    bytes: Zeroizing<[u8; KEY_LEN]>,
}

impl Key {
    /// The key with these bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self {
            bytes: Zeroizing::new(bytes),
        }
    }

    /// A new random key from `rng` (use a cryptographic generator, such as `rand::rng()`).
    pub fn generate<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; KEY_LEN];
        rng.fill_bytes(&mut bytes);
        Self::from_bytes(bytes)
    }

    /// Reads a key written as 64 hexadecimal digits.
    pub fn from_hex(text: &str) -> Result<Self, KeyringError> {
        let text = text.trim();
        if text.len() != 2 * KEY_LEN || !text.is_ascii() {
            return Err(KeyringError::BadKey(format!(
                "a key is {} hexadecimal digits, not {} characters",
                2 * KEY_LEN,
                text.chars().count()
            )));
        }
        let mut bytes = [0u8; KEY_LEN];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
                .map_err(|_| KeyringError::BadKey("not a hexadecimal digit".into()))?;
        }
        Ok(Self::from_bytes(bytes))
    }

    /// The key as 64 lowercase hexadecimal digits, as a key file holds it.
    pub fn to_hex(&self) -> String {
        use std::fmt::Write;
        let mut out = String::with_capacity(2 * KEY_LEN);
        for b in self.bytes.iter() {
            let _ = write!(out, "{b:02x}");
        }
        out
    }

    /// The key's public name.
    pub fn id(&self) -> KeyId {
        let mac = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &self.bytes[..]),
            KEY_ID_LABEL,
        );
        let tag = mac.as_ref();
        KeyId([tag[0], tag[1], tag[2], tag[3]])
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.id())
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        // Not constant-time; only configuration code compares keys.
        *self.bytes == *other.bytes
    }
}

impl Eq for Key {}

/// One key of a [`Keyring`], with the secret its senders' keys are expanded from.
#[derive(Clone)]
pub(super) struct Entry {
    pub(super) id: KeyId,
    pub(super) key: Key,
    /// HKDF-Extract of the key: done once per key, not per message or per sender.
    prk: hkdf::Prk,
    /// This install of the key in this process (see [`NEXT_UID`]).
    pub(super) uid: u64,
}

impl Entry {
    fn new(key: Key) -> Self {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SENDER_KEY_SALT).extract(&key.bytes[..]);
        Self {
            id: key.id(),
            key,
            prk,
            uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The AES-256-GCM key of the sender `origin` under this cluster key:
    /// HKDF-Expand(extract(cluster key), "cohort sender key" ‖ origin). Each node start
    /// seals with a key of its own, so nonces need to be unique only within one origin.
    pub(super) fn sender_key(&self, origin: &Origin) -> LessSafeKey {
        let info = [SENDER_KEY_INFO, &origin.0[..]];
        let okm = self
            .prk
            .expand(&info, &AES_256_GCM)
            .expect("32 bytes are within what HKDF-SHA256 can expand");
        LessSafeKey::new(UnboundKey::from(okm))
    }
}

/// The keys a node holds: one **primary** key seals everything the node sends; every key
/// in the ring opens what the node receives. Rotating a cluster's key is: install the new
/// key on every node, make it primary on every node, remove the old one from every node
/// (as `serf keys`); between the steps every node still opens what every other sends.
#[derive(Clone)]
pub struct Keyring {
    entries: Vec<Entry>,
    primary: usize,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("primary", &self.primary_id())
            .field("keys", &self.list())
            .finish()
    }
}

impl PartialEq for Keyring {
    fn eq(&self, other: &Self) -> bool {
        self.primary_id() == other.primary_id()
            && self.entries.len() == other.entries.len()
            && self
                .entries
                .iter()
                .zip(&other.entries)
                .all(|(a, b)| a.key == b.key)
    }
}

impl Eq for Keyring {}

/// Most keys a ring holds: a rotation needs two; more only slows the search by key id.
pub const MAX_KEYS: usize = 16;

impl Keyring {
    /// A ring holding only `primary`.
    pub fn new(primary: Key) -> Self {
        Self {
            entries: vec![Entry::new(primary)],
            primary: 0,
        }
    }

    /// A ring of `keys`, the first one primary.
    pub fn from_keys(keys: impl IntoIterator<Item = Key>) -> Result<Self, KeyringError> {
        let mut keys = keys.into_iter();
        let first = keys.next().ok_or(KeyringError::Empty)?;
        let mut ring = Self::new(first);
        for key in keys {
            ring.install(key)?;
        }
        Ok(ring)
    }

    /// Reads a key file: one key per line as 64 hexadecimal digits, the first one primary;
    /// blank lines and lines starting with `#` are ignored.
    pub fn from_key_file(text: &str) -> Result<Self, KeyringError> {
        let keys = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(Key::from_hex)
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_keys(keys)
    }

    /// Adds `key`, to be accepted from now on. Installing a key already held does nothing.
    pub fn install(&mut self, key: Key) -> Result<(), KeyringError> {
        let id = key.id();
        if let Some(held) = self.entries.iter().find(|e| e.id == id) {
            return if held.key == key {
                Ok(())
            } else {
                Err(KeyringError::IdCollision(id))
            };
        }
        if self.entries.len() >= MAX_KEYS {
            return Err(KeyringError::Full);
        }
        self.entries.push(Entry::new(key));
        Ok(())
    }

    /// Makes the key named `id` primary: everything sent from now on is sealed with it.
    pub fn use_key(&mut self, id: KeyId) -> Result<(), KeyringError> {
        self.primary = self
            .entries
            .iter()
            .position(|e| e.id == id)
            .ok_or(KeyringError::NotFound(id))?;
        Ok(())
    }

    /// Removes the key named `id`; nothing sealed with it is accepted afterwards. The
    /// primary key cannot be removed.
    pub fn remove(&mut self, id: KeyId) -> Result<(), KeyringError> {
        let at = self
            .entries
            .iter()
            .position(|e| e.id == id)
            .ok_or(KeyringError::NotFound(id))?;
        if at == self.primary {
            return Err(KeyringError::RemovePrimary(id));
        }
        self.entries.remove(at);
        if at < self.primary {
            self.primary -= 1;
        }
        Ok(())
    }

    /// The names of the keys held, the primary one first.
    pub fn list(&self) -> Vec<KeyId> {
        let mut ids = vec![self.primary_id()];
        ids.extend(
            self.entries
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != self.primary)
                .map(|(_, e)| e.id),
        );
        ids
    }

    /// The name of the primary key.
    pub fn primary_id(&self) -> KeyId {
        self.entries[self.primary].id
    }

    pub(super) fn primary(&self) -> &Entry {
        &self.entries[self.primary]
    }

    pub(super) fn find(&self, id: KeyId) -> Option<&Entry> {
        self.entries.iter().find(|e| e.id == id)
    }
}

/// A keyring operation or key file was refused; the ring is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    /// A keyring needs at least one key.
    #[error("no key: a keyring needs at least one")]
    Empty,
    /// A key is not 64 hexadecimal digits.
    #[error("bad key: {0}")]
    BadKey(String),
    /// No key of that name is held.
    #[error("no key {0} in the keyring")]
    NotFound(KeyId),
    /// The primary key seals what the node sends; make another key primary first.
    #[error("key {0} is primary; make another key primary before removing it")]
    RemovePrimary(KeyId),
    /// A different key with the same name is held (a one in 2^32 chance: generate another).
    #[error("another key is already named {0}")]
    IdCollision(KeyId),
    /// The ring holds [`MAX_KEYS`] keys already.
    #[error("the keyring is full ({MAX_KEYS} keys)")]
    Full,
}
