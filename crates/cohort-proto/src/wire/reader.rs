//! A bounds-checked big-endian reader shared by the decoders.

use bytes::Bytes;

/// Why a packet or frame could not be decoded. The input is dropped; nothing else changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before a field it declares.
    #[error("truncated: {field} needs {needed} bytes at offset {offset}, only {available} left")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Offset of the field in the input.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the input.
        available: usize,
    },
    /// The input does not start with the expected marker.
    #[error("bad start marker: expected {expected}")]
    BadStartMarker {
        /// The marker expected, e.g. `TRIBES-B`.
        expected: &'static str,
    },
    /// The input does not end with the expected marker.
    #[error("bad end marker: expected {expected}")]
    BadEndMarker {
        /// The marker expected, e.g. `TRIBES-E`.
        expected: &'static str,
    },
    /// A length field is negative.
    #[error("negative length {value} in field {field}")]
    NegativeLength {
        /// The length field.
        field: &'static str,
        /// The value read.
        value: i64,
    },
    /// A length field is larger than the configured maximum.
    #[error("length {length} of field {field} exceeds the maximum {max}")]
    TooLong {
        /// The length field.
        field: &'static str,
        /// The value read.
        length: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The declared length of the whole record disagrees with its contents.
    #[error("length mismatch: header declares {declared} bytes, contents take {actual}")]
    LengthMismatch {
        /// Length declared in the header.
        declared: usize,
        /// Length the fields actually take.
        actual: usize,
    },
    /// A field holds a value outside its range (an address of the wrong size, a port over 65535).
    #[error("invalid {field}: {detail}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        detail: String,
    },
}

/// Reads big-endian fields from a [`Bytes`], checking every length first.
pub(crate) struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a Bytes) -> Self {
        Self { buf, pos: 0 }
    }

    /// A reader that starts `pos` bytes into `buf` (callers keep `pos <= buf.len()`).
    pub(crate) fn at(buf: &'a Bytes, pos: usize) -> Self {
        Self {
            buf,
            pos: pos.min(buf.len()),
        }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn need(&self, field: &'static str, n: usize) -> Result<(), DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated {
                field,
                offset: self.pos,
                needed: n,
                available: self.remaining(),
            });
        }
        Ok(())
    }

    pub(crate) fn bytes(&mut self, field: &'static str, n: usize) -> Result<Bytes, DecodeError> {
        self.need(field, n)?;
        let out = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], DecodeError> {
        self.need(field, N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[self.pos..self.pos + N]);
        self.pos += N;
        Ok(out)
    }

    pub(crate) fn expect(&mut self, marker: &[u8], err: DecodeError) -> Result<(), DecodeError> {
        if self.remaining() < marker.len() || &self.buf[self.pos..self.pos + marker.len()] != marker
        {
            return Err(err);
        }
        self.pos += marker.len();
        Ok(())
    }

    pub(crate) fn i8(&mut self, field: &'static str) -> Result<i8, DecodeError> {
        Ok(i8::from_be_bytes(self.array::<1>(field)?))
    }

    pub(crate) fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array::<4>(field)?))
    }

    pub(crate) fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array::<8>(field)?))
    }

    /// Reads a Java `int` length, rejecting negative values and values over `max`,
    /// then the bytes it announces.
    pub(crate) fn length_prefixed(
        &mut self,
        field: &'static str,
        max: usize,
    ) -> Result<Bytes, DecodeError> {
        let len = self.i32(field)?;
        let len = checked_len(field, i64::from(len), max)?;
        self.bytes(field, len)
    }
}

/// Converts a signed length read from the wire into a `usize`, refusing negative values
/// and values over `max`.
pub(crate) fn checked_len(
    field: &'static str,
    value: i64,
    max: usize,
) -> Result<usize, DecodeError> {
    if value < 0 {
        return Err(DecodeError::NegativeLength { field, value });
    }
    let len = usize::try_from(value).unwrap_or(usize::MAX);
    if len > max {
        return Err(DecodeError::TooLong {
            field,
            length: len,
            max,
        });
    }
    Ok(len)
}
