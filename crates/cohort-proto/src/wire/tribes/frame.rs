//! Tribes TCP framing (`XByteBuffer`): `FLT2002 | body length (i32) | body | TLF2003`.
//!
//! A data frame's body is a [`ChannelData`](super::ChannelData); a reply frame's body is
//! [`ACK_BODY`] or [`FAIL_ACK_BODY`]. Frames follow each other on a connection with no
//! other separator, so a reader must split a byte stream into frames: that is
//! [`FrameDecoder`].

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::wire::DecodeError;
use crate::wire::reader::checked_len;

/// `START_DATA`: "FLT2002".
pub const START_DATA: [u8; 7] = *b"FLT2002";
/// `END_DATA`: "TLF2003".
pub const END_DATA: [u8; 7] = *b"TLF2003";
/// Body of an acknowledgement (`Constants.ACK_DATA`).
pub const ACK_BODY: [u8; 3] = [6, 2, 3];
/// Body of a failure acknowledgement (`Constants.FAIL_ACK_DATA`): the receiver's
/// application failed to handle a synchronously acknowledged message.
pub const FAIL_ACK_BODY: [u8; 3] = [11, 0, 5];
/// Bytes a frame adds around its body: both markers and the length field.
pub const FRAME_OVERHEAD: usize = START_DATA.len() + 4 + END_DATA.len();

/// The complete ACK frame, ready to write.
pub const ACK_FRAME: [u8; 21] = *b"FLT2002\x00\x00\x00\x03\x06\x02\x03TLF2003";
/// The complete failure-ACK frame, ready to write.
pub const FAIL_ACK_FRAME: [u8; 21] = *b"FLT2002\x00\x00\x00\x03\x0b\x00\x05TLF2003";

/// Appends a frame holding `body` to `out`.
pub fn encode_frame(body: &[u8], out: &mut BytesMut) {
    out.reserve(body.len() + FRAME_OVERHEAD);
    out.put_slice(&START_DATA);
    out.put_i32(body.len() as i32);
    out.put_slice(body);
    out.put_slice(&END_DATA);
}

/// What a reply frame says about the data frame it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// The receiver took the message (or its application handled it, with synchronized ACK).
    Ack,
    /// The receiver's application failed to handle it.
    FailAck,
}

impl Reply {
    /// Reads a reply frame's body; anything but the two known bodies is `None`.
    pub fn from_body(body: &[u8]) -> Option<Self> {
        match body {
            b if b == ACK_BODY => Some(Self::Ack),
            b if b == FAIL_ACK_BODY => Some(Self::FailAck),
            _ => None,
        }
    }

    /// The complete frame that carries this reply.
    pub fn frame(self) -> &'static [u8] {
        match self {
            Self::Ack => &ACK_FRAME,
            Self::FailAck => &FAIL_ACK_FRAME,
        }
    }
}

/// Most a decoder reserves ahead of the bytes it has received.
const RESERVE_STEP: usize = 64 * 1024;

/// Splits a TCP byte stream into frame bodies.
///
/// Feed received bytes into a [`BytesMut`] and call [`FrameDecoder::decode`] until it
/// returns `Ok(None)`. An error means the stream is not Tribes framing (garbage, a wrong
/// marker, a length over the maximum); the connection cannot be resynchronised safely and
/// should be closed.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_body: usize,
}

impl FrameDecoder {
    /// A decoder that refuses bodies longer than `max_body` bytes before buffering them.
    pub fn new(max_body: usize) -> Self {
        Self { max_body }
    }

    /// Takes the next complete frame's body out of `buf`, if `buf` holds one.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Bytes>, DecodeError> {
        // Check the marker as soon as its first bytes arrive, so garbage is refused at once.
        let seen = buf.len().min(START_DATA.len());
        if buf[..seen] != START_DATA[..seen] {
            return Err(DecodeError::BadStartMarker {
                expected: "FLT2002",
            });
        }
        if buf.len() < START_DATA.len() + 4 {
            return Ok(None);
        }
        let raw_len = i32::from_be_bytes(buf[7..11].try_into().expect("4 bytes"));
        let len = checked_len("frame length", i64::from(raw_len), self.max_body)?;
        let total = len + FRAME_OVERHEAD;
        if buf.len() < total {
            // Grow towards the announced size only as bytes arrive: a header alone must
            // not make a connection reserve the maximum.
            buf.reserve((total - buf.len()).min(RESERVE_STEP));
            return Ok(None);
        }
        if buf[11 + len..total] != END_DATA {
            return Err(DecodeError::BadEndMarker {
                expected: "TLF2003",
            });
        }
        buf.advance(11);
        let body = buf.split_to(len).freeze();
        buf.advance(END_DATA.len());
        Ok(Some(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The captured ACK frame (`tribes-vectors.md` §3).
    const CAPTURED_ACK: &str = "464c543230303200000003060203544c4632303033";

    #[test]
    fn ack_frames_match_capture() {
        assert_eq!(hex::encode(ACK_FRAME), CAPTURED_ACK);
        let mut out = BytesMut::new();
        encode_frame(&ACK_BODY, &mut out);
        assert_eq!(&out[..], &ACK_FRAME);
        encode_frame(&FAIL_ACK_BODY, &mut out);
        assert_eq!(
            hex::encode(&out[21..]),
            "464c5432303032000000030b0005544c4632303033"
        );
    }

    #[test]
    fn decodes_frames_split_at_every_point() {
        let mut stream = BytesMut::new();
        encode_frame(b"first", &mut stream);
        encode_frame(&ACK_BODY, &mut stream);
        encode_frame(b"", &mut stream);
        let stream = stream.freeze();
        let dec = FrameDecoder::new(1024);
        for cut in 0..stream.len() {
            let mut buf = BytesMut::from(&stream[..cut]);
            let mut bodies = Vec::new();
            while let Some(b) = dec.decode(&mut buf).unwrap() {
                bodies.push(b);
            }
            buf.extend_from_slice(&stream[cut..]);
            while let Some(b) = dec.decode(&mut buf).unwrap() {
                bodies.push(b);
            }
            assert_eq!(
                bodies,
                vec![&b"first"[..], &ACK_BODY[..], &b""[..]],
                "cut at {cut}"
            );
            assert!(buf.is_empty());
        }
        assert_eq!(Reply::from_body(&ACK_BODY), Some(Reply::Ack));
        assert_eq!(Reply::from_body(&FAIL_ACK_BODY), Some(Reply::FailAck));
        assert_eq!(Reply::from_body(b"xyz"), None);
    }

    #[test]
    fn refuses_garbage_oversize_and_bad_trailer() {
        let dec = FrameDecoder::new(16);
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
        assert!(matches!(
            dec.decode(&mut buf),
            Err(DecodeError::BadStartMarker { .. })
        ));
        // Even one wrong byte is refused without waiting for more.
        let mut buf = BytesMut::from(&b"FX"[..]);
        assert!(dec.decode(&mut buf).is_err());

        let mut buf = BytesMut::from(&b"FLT2002\x00\x00\x01\x00"[..]);
        assert!(matches!(
            dec.decode(&mut buf),
            Err(DecodeError::TooLong {
                length: 256,
                max: 16,
                ..
            })
        ));
        let mut buf = BytesMut::from(&b"FLT2002\xff\xff\xff\xff"[..]);
        assert!(matches!(
            dec.decode(&mut buf),
            Err(DecodeError::NegativeLength { .. })
        ));
        let mut buf = BytesMut::from(&b"FLT2002\x00\x00\x00\x01xTLF2004"[..]);
        assert!(matches!(
            dec.decode(&mut buf),
            Err(DecodeError::BadEndMarker { .. })
        ));
    }

    #[test]
    fn a_header_alone_does_not_reserve_the_announced_size() {
        let dec = FrameDecoder::new(64 << 20);
        let mut buf = BytesMut::from(&b"FLT2002\x03\xff\xff\xff"[..]);
        assert_eq!(dec.decode(&mut buf), Ok(None));
        assert!(
            buf.capacity() <= 11 + RESERVE_STEP,
            "reserved {}",
            buf.capacity()
        );
    }
}
