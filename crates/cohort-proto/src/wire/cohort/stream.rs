//! The TCP stream format of reliable multicast and unicast (SPEC §5), version 1.
//!
//! Over TCP, two members keep one connection and both directions carry frames: a u32
//! big-endian length (1 ..= [`MAX_FRAME_LEN`]) and that many bytes. The first frame each
//! side sends is a [`Hello`] that names the sender, because a connection's source port is
//! ephemeral and says nothing about who is on the other end; every later frame is one
//! reliable datagram (see [`reliable`](super::reliable)), exactly as it would travel over
//! UDP.
//!
//! ```text
//! frame   length (4) | body
//! hello   envelope C0 4E 01 04 | member id (16) |
//!         family (1: 4 or 6) | ip (4 or 16) | port (2): where the sender listens
//! ```
//!
//! [`FrameDecoder`] splits a received byte stream into frame bodies without trusting the
//! lengths it reads: a length of 0 or over the maximum is an error (close the connection),
//! and the buffer grows only as bytes arrive.

use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};

use super::{Envelope, Protocol, put_socket_addr, read_socket_addr};
use crate::membership::MemberId;
use crate::wire::reader::Reader;
use crate::wire::{DecodeError, length_prefixed};

/// The longest frame body accepted: a reliable datagram is at most 65 507 bytes (the
/// largest UDP payload), so this leaves room and refuses anything absurd.
pub const MAX_FRAME_LEN: usize = 64 * 1024;

/// Bytes of the length in front of every frame.
pub const FRAME_PREFIX_LEN: usize = length_prefixed::PREFIX_LEN;

/// How much the decoder reserves at most ahead of bytes that arrived.
const RESERVE_STEP: usize = 64 * 1024;

/// Appends `body` as one frame (length prefix and body) to `out`.
///
/// # Panics
/// If `body` is empty or longer than [`MAX_FRAME_LEN`]: the callers frame datagrams the
/// reliable core built, which are never either.
pub fn encode_frame(body: &[u8], out: &mut BytesMut) {
    assert!(
        !body.is_empty() && body.len() <= MAX_FRAME_LEN,
        "frame body of {} bytes",
        body.len()
    );
    let prefix = frame_prefix(body.len());
    out.reserve(FRAME_PREFIX_LEN + body.len());
    out.put_slice(&prefix);
    out.put_slice(body);
}

/// The length prefix of a frame whose body is `body_len` bytes, for writers that send the
/// body from its own buffer (vectored I/O) rather than copying it behind the prefix.
///
/// # Panics
/// If `body_len` is 0 or over [`MAX_FRAME_LEN`], like [`encode_frame`].
pub fn frame_prefix(body_len: usize) -> [u8; FRAME_PREFIX_LEN] {
    assert!(
        body_len != 0 && body_len <= MAX_FRAME_LEN,
        "frame body of {body_len} bytes"
    );
    (body_len as u32).to_be_bytes()
}

/// Splits a connection's byte stream into frame bodies.
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

    /// The receive buffer, for reading from a socket straight into it (append only).
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Takes the next complete frame body, if one has arrived. After an error the stream
    /// cannot be resynchronised: close the connection.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, DecodeError> {
        length_prefixed::next_body(&mut self.buf, RESERVE_STEP, |prefix| {
            let len = u32::from_be_bytes(prefix) as usize;
            if len == 0 {
                return Err(DecodeError::InvalidField {
                    field: "frame length",
                    detail: "an empty frame".into(),
                });
            }
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

/// The first frame on a connection, in both directions: who is speaking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// The sender's member id.
    pub member: MemberId,
    /// The address the sender listens on (for diagnostics; the receiver trusts its view).
    pub listen: SocketAddr,
}

impl Hello {
    /// Appends the hello as one frame (with its length prefix) to `out`.
    pub fn encode_framed(&self, out: &mut BytesMut) {
        let mut body = BytesMut::with_capacity(4 + 16 + 19);
        Envelope::encode(Protocol::Stream, &mut body);
        body.put_slice(&self.member.0);
        put_socket_addr(&mut body, &self.listen);
        encode_frame(&body, out);
    }

    /// Decodes a hello from a frame body (without its length prefix).
    pub fn decode(input: &Bytes) -> Result<Self, DecodeError> {
        let (envelope, body) = Envelope::decode(input)?;
        if envelope.protocol != Protocol::Stream {
            return Err(DecodeError::InvalidField {
                field: "protocol",
                detail: format!("expected a stream hello, got {:?}", envelope.protocol),
            });
        }
        let mut r = Reader::new(&body);
        let member = MemberId(r.array::<16>("member id")?);
        let listen = read_socket_addr(&mut r)?;
        if r.remaining() != 0 {
            return Err(DecodeError::LengthMismatch {
                declared: body.len(),
                actual: r.position(),
            });
        }
        Ok(Self { member, listen })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(listen: &str) -> Hello {
        Hello {
            member: MemberId([7; 16]),
            listen: listen.parse().unwrap(),
        }
    }

    #[test]
    fn hello_round_trips_and_has_the_documented_layout() {
        for h in [hello("127.0.0.1:24800"), hello("[fe80::1]:9")] {
            let mut out = BytesMut::new();
            h.encode_framed(&mut out);
            let mut dec = FrameDecoder::new();
            dec.extend(&out);
            let body = dec.next_frame().unwrap().unwrap();
            assert_eq!(Hello::decode(&body).unwrap(), h);
            assert_eq!(dec.buffered(), 0);
        }
        assert_eq!(frame_prefix(27), [0, 0, 0, 27]);
        let mut out = BytesMut::new();
        hello("127.0.0.1:258").encode_framed(&mut out);
        let mut expected = vec![0, 0, 0, 27, 0xC0, 0x4E, 1, 4];
        expected.extend_from_slice(&[7; 16]);
        expected.extend_from_slice(&[4, 127, 0, 0, 1, 1, 2]);
        assert_eq!(&out[..], &expected[..]);
    }

    #[test]
    fn bad_hellos_are_errors() {
        let mut out = BytesMut::new();
        hello("127.0.0.1:1").encode_framed(&mut out);
        let body = Bytes::copy_from_slice(&out[4..]);
        for cut in 0..body.len() {
            assert!(Hello::decode(&body.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut longer = body.to_vec();
        longer.push(0);
        assert!(matches!(
            Hello::decode(&Bytes::from(longer)),
            Err(DecodeError::LengthMismatch { .. })
        ));
        let mut family = body.to_vec();
        family[20] = 5;
        assert!(Hello::decode(&Bytes::from(family)).is_err());
        let mut protocol = body.to_vec();
        protocol[3] = Protocol::Reliable as u8;
        assert!(Hello::decode(&Bytes::from(protocol)).is_err());
        let mut version = body.to_vec();
        version[2] = 2;
        assert!(Hello::decode(&Bytes::from(version)).is_err());
    }

    #[test]
    fn decodes_frames_split_at_every_point() {
        let mut stream = BytesMut::new();
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
    fn refuses_empty_and_oversize_frames_without_reserving_them() {
        let mut dec = FrameDecoder::new();
        dec.extend(&[0, 0, 0, 0]);
        assert!(matches!(
            dec.next_frame(),
            Err(DecodeError::InvalidField { .. })
        ));
        for len in [MAX_FRAME_LEN as u32 + 1, u32::MAX] {
            let mut dec = FrameDecoder::new();
            dec.extend(&len.to_be_bytes());
            assert!(matches!(
                dec.next_frame(),
                Err(DecodeError::TooLong {
                    max: MAX_FRAME_LEN,
                    ..
                })
            ));
        }
        // Exactly the maximum waits for the body, reserving only a step.
        let mut dec = FrameDecoder::new();
        dec.extend(&(MAX_FRAME_LEN as u32).to_be_bytes());
        assert_eq!(dec.next_frame().unwrap(), None);
        assert!(dec.buf.capacity() <= RESERVE_STEP + 64);
    }

    #[test]
    fn the_fuzz_seeds_start_with_a_hello() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/cohort_stream");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("fuzz seeds") {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            // Byte 0 is the fuzz target's chunk size.
            let mut dec = FrameDecoder::new();
            dec.extend(&data[1..]);
            Hello::decode(&dec.next_frame().unwrap().unwrap()).unwrap();
            while dec.next_frame().unwrap().is_some() {}
            assert_eq!(dec.buffered(), 0);
            seen += 1;
        }
        assert!(seen >= 3);
    }

    #[test]
    #[should_panic(expected = "frame body")]
    fn an_empty_frame_is_never_sent() {
        encode_frame(b"", &mut BytesMut::new());
    }
}
