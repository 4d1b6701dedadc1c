//! The framing after the connection header: an `int32` length, then the body
//! (`QuorumCnxManager.SendWorker.send` / `RecvWorker.run`).

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire::{DecodeError, length_prefixed};

/// Largest frame body ZooKeeper accepts (`PACKETMAXSIZE`, 512 KiB). A frame whose length
/// is `<= 0` or larger than this makes ZooKeeper close the connection; so does ours.
pub const MAX_FRAME_LEN: usize = 512 * 1024;

/// Most the decoder reserves ahead of the bytes it has received (a length alone must not
/// reserve 512 KiB).
const RESERVE_STEP: usize = 16 * 1024;

/// Appends `body` with its `int32` length prefix to `out`.
///
/// # Panics
/// If `body` is longer than [`MAX_FRAME_LEN`]: such a frame is a bug of the caller, and a
/// ZooKeeper peer would close the connection on it.
pub fn encode_frame(body: &[u8], out: &mut impl BufMut) {
    assert!(
        body.len() <= MAX_FRAME_LEN,
        "election frame of {} bytes exceeds {MAX_FRAME_LEN}",
        body.len()
    );
    out.put_i32(body.len() as i32);
    out.put_slice(body);
}

/// Splits the byte stream after the connection header into frame bodies.
///
/// Call [`extend`](Self::extend) with received bytes, then [`next_frame`](Self::next_frame)
/// until it returns `Ok(None)`. A length that is zero, negative or over
/// [`MAX_FRAME_LEN`] is refused as soon as its four bytes arrive, before anything is
/// buffered for it; after an error the stream cannot be resynchronised and the connection
/// should be closed (as ZooKeeper does).
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: BytesMut,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Takes the next complete frame body, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, DecodeError> {
        length_prefixed::next_body(&mut self.buf, RESERVE_STEP, |prefix| {
            let raw = i32::from_be_bytes(prefix);
            if raw <= 0 {
                // ZooKeeper refuses an empty frame too, so zero is reported with the
                // negatives.
                return Err(DecodeError::NegativeLength {
                    field: "frame length",
                    value: i64::from(raw),
                });
            }
            let len = raw as usize;
            if len > MAX_FRAME_LEN {
                return Err(DecodeError::TooLong {
                    field: "frame length",
                    length: len,
                    max: MAX_FRAME_LEN,
                });
            }
            Ok(len)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_frames_split_at_every_point() {
        let mut stream = Vec::new();
        encode_frame(b"first", &mut stream);
        encode_frame(b"x", &mut stream);
        encode_frame(&[7u8; 300], &mut stream);
        for cut in 0..=stream.len() {
            let mut dec = FrameDecoder::new();
            let mut bodies = Vec::new();
            dec.extend(&stream[..cut]);
            while let Some(b) = dec.next_frame().unwrap() {
                bodies.push(b);
            }
            dec.extend(&stream[cut..]);
            while let Some(b) = dec.next_frame().unwrap() {
                bodies.push(b);
            }
            assert_eq!(bodies.len(), 3, "cut at {cut}");
            assert_eq!(&bodies[0][..], b"first");
            assert_eq!(&bodies[1][..], b"x");
            assert_eq!(&bodies[2][..], &[7u8; 300][..]);
            assert_eq!(dec.buffered(), 0);
        }
    }

    #[test]
    fn refuses_zero_negative_and_oversize_lengths_at_once() {
        for (bytes, negative) in [
            (&[0u8, 0, 0, 0][..], true),
            (&[0xff, 0xff, 0xff, 0xff][..], true),
            (&[0x80, 0, 0, 0][..], true),
            (&[0x00, 0x08, 0x00, 0x01][..], false),
            (&[0x7f, 0xff, 0xff, 0xff][..], false),
        ] {
            let mut dec = FrameDecoder::new();
            dec.extend(bytes);
            let err = dec.next_frame().unwrap_err();
            match err {
                DecodeError::NegativeLength { .. } => assert!(negative, "{bytes:02x?}"),
                DecodeError::TooLong { max, .. } => {
                    assert!(!negative);
                    assert_eq!(max, MAX_FRAME_LEN);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        // Exactly the maximum is fine (it waits for the body).
        let mut dec = FrameDecoder::new();
        dec.extend(&(MAX_FRAME_LEN as i32).to_be_bytes());
        assert_eq!(dec.next_frame().unwrap(), None);
        assert!(
            dec.buf.capacity() < 64 * 1024,
            "reserved the announced size"
        );
    }
}
