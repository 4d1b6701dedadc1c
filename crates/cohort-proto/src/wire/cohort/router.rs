//! The gossip router's messages (discovery without multicast, like JGroups' GossipRouter).
//!
//! Over TCP, each message is a u32 big-endian length and then the message: the
//! [`Envelope`] with [`Protocol::Router`], one kind
//! byte and the fields. A member sends `Register` (its cluster and the address its
//! heartbeats are received on); the router answers, and again after every change, with
//! `Members`: every address registered for that cluster. A registration lasts as long as
//! its connection.

use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};

use super::{Envelope, Protocol, put_socket_addr, read_socket_addr};
use crate::wire::reader::{Reader, checked_len};
use crate::wire::{DecodeError, length_prefixed};

/// Longest router message accepted (about 3000 IPv6 members).
pub const MAX_ROUTER_MESSAGE: usize = 64 * 1024;
/// Longest cluster name accepted.
pub const MAX_CLUSTER_NAME: usize = 1024;

/// One message between a member and a router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterMessage {
    /// Member → router: count me in `cluster`; my heartbeats go to `addr`.
    Register {
        /// The cluster (domain) name.
        cluster: Bytes,
        /// Where the member receives heartbeats.
        addr: SocketAddr,
    },
    /// Router → member: everyone registered in `cluster`, the receiver included.
    Members {
        /// The cluster (domain) name.
        cluster: Bytes,
        /// The registered addresses.
        addrs: Vec<SocketAddr>,
    },
}

const REGISTER: u8 = 1;
const MEMBERS: u8 = 2;

impl RouterMessage {
    /// Appends the message with its u32 length prefix to `out`.
    pub fn encode_framed(&self, out: &mut BytesMut) {
        let start = out.len();
        out.put_u32(0);
        Envelope::encode(Protocol::Router, out);
        match self {
            Self::Register { cluster, addr } => {
                out.put_u8(REGISTER);
                put_name(out, cluster);
                put_socket_addr(out, addr);
            }
            Self::Members { cluster, addrs } => {
                out.put_u8(MEMBERS);
                put_name(out, cluster);
                let n = addrs.len().min(usize::from(u16::MAX));
                out.put_u16(n as u16);
                for a in &addrs[..n] {
                    put_socket_addr(out, a);
                }
            }
        }
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// Takes one whole message off the front of `buf`, if it holds one. A length over
    /// [`MAX_ROUTER_MESSAGE`] or a malformed message is an error (close the connection).
    pub fn decode_framed(buf: &mut BytesMut) -> Result<Option<Self>, DecodeError> {
        // The caller's buffer grows as its reads do; nothing is reserved here.
        let body = length_prefixed::next_body(buf, 0, |prefix| {
            let len = u32::from_be_bytes(prefix);
            checked_len("router message length", i64::from(len), MAX_ROUTER_MESSAGE)
        })?;
        let Some(body) = body else {
            return Ok(None);
        };
        Self::decode(&body).map(Some)
    }

    /// Decodes one message (without its length prefix).
    pub fn decode(input: &Bytes) -> Result<Self, DecodeError> {
        let (envelope, body) = Envelope::decode(input)?;
        if envelope.protocol != Protocol::Router {
            return Err(DecodeError::InvalidField {
                field: "protocol",
                detail: format!("expected the router protocol, got {:?}", envelope.protocol),
            });
        }
        let mut r = Reader::new(&body);
        let kind = r.array::<1>("kind")?[0];
        let message = match kind {
            REGISTER => {
                let cluster = read_name(&mut r)?;
                let addr = read_socket_addr(&mut r)?;
                Self::Register { cluster, addr }
            }
            MEMBERS => {
                let cluster = read_name(&mut r)?;
                let count = usize::from(u16::from_be_bytes(r.array::<2>("address count")?));
                // Each address takes at least 7 bytes: refuse counts the input cannot hold.
                if count * 7 > r.remaining() {
                    return Err(DecodeError::Truncated {
                        field: "addresses",
                        offset: r.position(),
                        needed: count * 7,
                        available: r.remaining(),
                    });
                }
                let mut addrs = Vec::with_capacity(count);
                for _ in 0..count {
                    addrs.push(read_socket_addr(&mut r)?);
                }
                Self::Members { cluster, addrs }
            }
            other => {
                return Err(DecodeError::InvalidField {
                    field: "kind",
                    detail: format!("unknown router message kind {other}"),
                });
            }
        };
        if r.remaining() != 0 {
            return Err(DecodeError::LengthMismatch {
                declared: body.len(),
                actual: r.position(),
            });
        }
        Ok(message)
    }
}

fn put_name(out: &mut BytesMut, name: &Bytes) {
    let n = name.len().min(MAX_CLUSTER_NAME);
    out.put_u16(n as u16);
    out.put_slice(&name[..n]);
}

fn read_name(r: &mut Reader<'_>) -> Result<Bytes, DecodeError> {
    let len = u16::from_be_bytes(r.array::<2>("cluster length")?);
    let len = checked_len("cluster", i64::from(len), MAX_CLUSTER_NAME)?;
    r.bytes("cluster", len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<RouterMessage> {
        vec![
            RouterMessage::Register {
                cluster: Bytes::from_static(b"shop"),
                addr: "10.0.0.1:4000".parse().unwrap(),
            },
            RouterMessage::Members {
                cluster: Bytes::from_static(b"shop"),
                addrs: vec![
                    "10.0.0.1:4000".parse().unwrap(),
                    "[fe80::1]:4001".parse().unwrap(),
                ],
            },
            RouterMessage::Members {
                cluster: Bytes::new(),
                addrs: vec![],
            },
        ]
    }

    #[test]
    fn messages_round_trip_through_a_stream_in_pieces() {
        let mut wire = BytesMut::new();
        for m in samples() {
            m.encode_framed(&mut wire);
        }
        // Fed one byte at a time, the decoder waits for whole messages.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire.iter() {
            buf.put_u8(*b);
            while let Some(m) = RouterMessage::decode_framed(&mut buf).unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, samples());
        assert!(buf.is_empty());
    }

    #[test]
    fn bad_input_is_refused() {
        let mut too_long = BytesMut::new();
        too_long.put_u32(MAX_ROUTER_MESSAGE as u32 + 1);
        assert!(RouterMessage::decode_framed(&mut too_long).is_err());
        for m in samples() {
            let mut wire = BytesMut::new();
            m.encode_framed(&mut wire);
            let body = Bytes::copy_from_slice(&wire[4..]);
            for cut in 0..body.len() {
                assert!(RouterMessage::decode(&body.slice(..cut)).is_err());
            }
        }
        // A count the message cannot hold.
        let mut lie = BytesMut::new();
        Envelope::encode(Protocol::Router, &mut lie);
        lie.put_u8(MEMBERS);
        lie.put_u16(0);
        lie.put_u16(u16::MAX);
        assert!(matches!(
            RouterMessage::decode(&lie.freeze()),
            Err(DecodeError::Truncated { .. })
        ));
    }
}
