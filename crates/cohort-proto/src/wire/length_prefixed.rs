//! The part every 4-byte-length-prefixed stream shares (ZooKeeper's election framing,
//! the gossip router, cohort's reliable stream): split off the next body once all of it
//! has arrived, and grow the buffer only as bytes come, so a length alone never reserves
//! its size. Each format checks its own length field (signedness, limits, error kinds).

use bytes::{Buf, Bytes, BytesMut};

use super::DecodeError;

/// Bytes of the length in front of every body.
pub(crate) const PREFIX_LEN: usize = 4;

/// Takes the next complete body from `buf`, if one has arrived. `body_len` turns the
/// prefix (big-endian) into a body length or refuses it; `reserve_step` is the most
/// reserved ahead of bytes received.
pub(crate) fn next_body(
    buf: &mut BytesMut,
    reserve_step: usize,
    body_len: impl FnOnce([u8; PREFIX_LEN]) -> Result<usize, DecodeError>,
) -> Result<Option<Bytes>, DecodeError> {
    if buf.len() < PREFIX_LEN {
        return Ok(None);
    }
    let len = body_len([buf[0], buf[1], buf[2], buf[3]])?;
    if buf.len() < PREFIX_LEN + len {
        let missing = PREFIX_LEN + len - buf.len();
        buf.reserve(missing.min(reserve_step));
        return Ok(None);
    }
    buf.advance(PREFIX_LEN);
    Ok(Some(buf.split_to(len).freeze()))
}
