//! Sealed TCP streams: the plaintext byte stream cut into sealed records.

use bytes::{Buf, BufMut, BytesMut};

use super::{
    Keyring, OVERHEAD, OpenError, Opened, Origin, Purpose, ReplayGuard, SEALED_ENVELOPE, SealError,
    Sealer, SenderKeys, open_message_bound,
};

/// Sender keys a stream opener keeps: a stream has one sender, whose key changes only
/// when the cluster's primary key does.
const STREAM_SENDER_KEYS: usize = 2;

/// Most plaintext bytes in one record: what a receiver buffers at most before it can
/// check a tag (TLS takes 16 KiB; 64 KiB halves the per-record cost of large frames).
pub const MAX_RECORD_PLAINTEXT: usize = 64 * 1024;

/// Bytes of the length in front of every record.
pub const RECORD_PREFIX_LEN: usize = 4;

/// Most a record's length field may say.
const MAX_RECORD: usize = MAX_RECORD_PLAINTEXT + OVERHEAD;

/// Seals one direction of a TCP stream. Use one per connection and direction: a stream's
/// records must come from one sealer, counting from 0. Not `Clone`, as [`Sealer`] is not.
#[derive(Debug)]
pub struct StreamSealer {
    sealer: Sealer,
    purpose: Purpose,
    bound_to: Option<[u8; 16]>,
}

impl StreamSealer {
    /// A stream sealer with its own serial (never used by another sealer of the node).
    pub fn new(origin: Origin, serial: u64, purpose: Purpose) -> Self {
        Self {
            sealer: Sealer::new(origin, serial),
            purpose,
            bound_to: None,
        }
    }

    /// Binds every record to `member` (the id of the member that accepted the connection):
    /// only an opener [bound](StreamOpener::bind) to the same id opens them.
    pub fn bind(mut self, member: [u8; 16]) -> Self {
        self.bound_to = Some(member);
        self
    }

    /// Appends `plaintext` to `out` as sealed records. An empty `plaintext` appends
    /// nothing.
    pub fn seal(
        &mut self,
        ring: &Keyring,
        now_ms: u64,
        plaintext: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), SealError> {
        for chunk in plaintext.chunks(MAX_RECORD_PLAINTEXT) {
            let len_at = out.len();
            out.put_u32(0);
            self.sealer
                .seal_bound(
                    ring,
                    self.purpose,
                    self.bound_to.as_ref(),
                    now_ms,
                    chunk,
                    out,
                )
                .inspect_err(|_| out.truncate(len_at))?;
            let len = (out.len() - len_at - RECORD_PREFIX_LEN) as u32;
            out[len_at..len_at + RECORD_PREFIX_LEN].copy_from_slice(&len.to_be_bytes());
        }
        Ok(())
    }
}

/// Opens the records of one direction of a TCP stream, into the plaintext stream.
///
/// Put received bytes into [`buffer_mut`](Self::buffer_mut), then call
/// [`open`](Self::open). An error means the connection carries something other than this
/// cluster's sealed stream: close it (its later bytes cannot be trusted to line up).
#[derive(Debug)]
pub struct StreamOpener {
    purpose: Purpose,
    bound_to: Option<[u8; 16]>,
    raw: BytesMut,
    keys: SenderKeys,
    /// The sealer of the stream (from its first record) and the counter expected next.
    next: Option<(super::Instance, u64)>,
}

impl StreamOpener {
    /// An opener for a stream sealed for `purpose`.
    pub fn new(purpose: Purpose) -> Self {
        Self {
            purpose,
            bound_to: None,
            raw: BytesMut::new(),
            keys: SenderKeys::with_capacity(STREAM_SENDER_KEYS),
            next: None,
        }
    }

    /// Opens only records bound to `member` (see [`StreamSealer::bind`]).
    pub fn bind(mut self, member: [u8; 16]) -> Self {
        self.bound_to = Some(member);
        self
    }

    /// Where received bytes go.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.raw
    }

    /// Sealed bytes received and not opened yet (at most one record and a part).
    pub fn buffered(&self) -> usize {
        self.raw.len()
    }

    /// Opens every complete record received so far and appends its plaintext to `plain`.
    /// The first record of the stream must be counter 0 of a sender the guard has not seen
    /// (and fresh); every later one must be the next counter of the same sender. Returns
    /// how many records it opened.
    pub fn open(
        &mut self,
        ring: &Keyring,
        guard: &mut ReplayGuard,
        now_ms: u64,
        plain: &mut BytesMut,
    ) -> Result<usize, OpenError> {
        self.open_with(ring, plain, |opened| guard.accept_opened(opened, now_ms))
    }

    /// [`open`](Self::open) with the replay guard's check as a closure, called for the
    /// stream's first record only (after its tag checked): a runtime that shares one guard
    /// between connections takes its lock there, not while records are decrypted.
    pub fn open_with(
        &mut self,
        ring: &Keyring,
        plain: &mut BytesMut,
        mut accept_first: impl FnMut(&Opened) -> Result<(), OpenError>,
    ) -> Result<usize, OpenError> {
        let mut opened_records = 0;
        loop {
            if self.raw.is_empty() {
                return Ok(opened_records);
            }
            // Plain traffic is told from its first bytes, before any length is trusted: a
            // record length is below 2^24 and the sealed envelope follows it.
            let seen = self
                .raw
                .len()
                .min(RECORD_PREFIX_LEN + SEALED_ENVELOPE.len());
            let mut expected = [0u8; RECORD_PREFIX_LEN + 4];
            expected[RECORD_PREFIX_LEN..].copy_from_slice(&SEALED_ENVELOPE);
            if self.raw[0] != 0
                || self.raw[RECORD_PREFIX_LEN.min(seen)..seen]
                    != expected[RECORD_PREFIX_LEN.min(seen)..seen]
            {
                return Err(if self.next.is_none() {
                    OpenError::NotSealed
                } else {
                    OpenError::BadRecord
                });
            }
            if seen < expected.len() {
                return Ok(opened_records);
            }
            let len = u32::from_be_bytes(self.raw[..4].try_into().expect("4 bytes")) as usize;
            if !(OVERHEAD..=MAX_RECORD).contains(&len) {
                return Err(OpenError::BadRecord);
            }
            if self.raw.len() < RECORD_PREFIX_LEN + len {
                self.raw.reserve(RECORD_PREFIX_LEN + len - self.raw.len());
                return Ok(opened_records);
            }
            self.raw.advance(RECORD_PREFIX_LEN);
            let mut message = self.raw.split_to(len);
            let opened = open_message_bound(
                ring,
                &mut self.keys,
                self.purpose,
                self.bound_to.as_ref(),
                &mut message,
            )?;
            match self.next {
                None => {
                    if opened.counter != 0 {
                        return Err(OpenError::BadRecord);
                    }
                    accept_first(&opened)?;
                }
                Some((instance, counter)) => {
                    if opened.instance != instance || opened.counter != counter {
                        return Err(OpenError::BadRecord);
                    }
                }
            }
            let Some(next) = opened.counter.checked_add(1) else {
                return Err(OpenError::BadRecord);
            };
            self.next = Some((opened.instance, next));
            plain.put_slice(&message);
            opened_records += 1;
        }
    }
}
