//! Cluster keys and the keyring that holds them.

use std::fmt;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

/// Bytes of a cluster key (XChaCha20-Poly1305 takes 256-bit keys).
pub const KEY_LEN: usize = 32;

/// The nonce under which a key's [`KeyId`] is derived. No sealed message uses it: their
/// nonces start with a sender origin, and this is the only nonce spelled in ASCII text.
const KEY_ID_NONCE: [u8; 24] = *b"cohort key id, version 1";

/// The name of a key on the wire: the first four bytes of the Poly1305 tag of an empty
/// message under the key and a fixed nonce, so it reveals nothing about the key and two
/// nodes with the same key always agree on it.
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
        let cipher = XChaCha20Poly1305::new((&*self.bytes).into());
        let tag = cipher
            .encrypt_in_place_detached(XNonce::from_slice(&KEY_ID_NONCE), b"", &mut [])
            .expect("an empty message always seals");
        KeyId([tag[0], tag[1], tag[2], tag[3]])
    }

    pub(super) fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&*self.bytes).into())
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

/// One key of a [`Keyring`], with its cipher ready.
#[derive(Clone)]
pub(super) struct Entry {
    pub(super) id: KeyId,
    pub(super) key: Key,
    pub(super) cipher: XChaCha20Poly1305,
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
            entries: vec![Entry {
                id: primary.id(),
                cipher: primary.cipher(),
                key: primary,
            }],
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
        self.entries.push(Entry {
            id,
            cipher: key.cipher(),
            key,
        });
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
