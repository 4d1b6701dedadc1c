//! cohort's own wire formats, for the protocols no peer format covers (SPEC §10): group
//! views and failure detection, reliable multicast (over UDP, or TCP [`stream`]s), the
//! gossip router.
//!
//! Every cohort message starts with the same four-byte [`Envelope`]: the magic `0xC0 0x4E`,
//! a format version and the protocol the rest belongs to. The magic can never start a
//! Tribes member packet (`TRIBES-B`) or channel frame (`FLT2002`), so a receiver tells the
//! formats apart from the first byte, and a future version is refused with a clear error
//! rather than misread.

pub mod reliable;
pub mod router;
pub mod stream;
pub mod total;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{BufMut, Bytes};

use super::DecodeError;

mod group;

pub use self::group::{GroupLimits, GroupMessage, GroupPacket};
use super::reader::Reader;

/// The first two bytes of every cohort message.
pub const MAGIC: [u8; 2] = [0xC0, 0x4E];

/// The version of the formats in this crate. A receiver refuses any other.
pub const VERSION: u8 = 1;

/// Length of the [`Envelope`] in bytes.
pub const ENVELOPE_LEN: usize = 4;

/// Which protocol a cohort message belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Protocol {
    /// Group views, join/leave and failure detection (SPEC §3, §4).
    Group = 1,
    /// Reliable ordered multicast and unicast (SPEC §5).
    Reliable = 2,
    /// The gossip router's registration and lookup (SPEC §1, discovery).
    Router = 3,
    /// The hello that opens a TCP connection of reliable messaging (SPEC §5).
    Stream = 4,
}

impl Protocol {
    fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Group),
            2 => Some(Self::Reliable),
            3 => Some(Self::Router),
            4 => Some(Self::Stream),
            _ => None,
        }
    }
}

/// The header of every cohort message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope {
    /// The protocol of the body that follows.
    pub protocol: Protocol,
}

impl Envelope {
    /// Appends the envelope for `protocol` to `out`.
    pub fn encode(protocol: Protocol, out: &mut impl BufMut) {
        out.put_slice(&MAGIC);
        out.put_u8(VERSION);
        out.put_u8(protocol as u8);
    }

    /// True if `input` starts like a cohort message (it may still be invalid).
    pub fn looks_like(input: &[u8]) -> bool {
        input.starts_with(&MAGIC)
    }

    /// Reads the envelope and returns it with the body that follows it.
    pub fn decode(input: &Bytes) -> Result<(Self, Bytes), DecodeError> {
        let mut r = Reader::new(input);
        r.expect(
            &MAGIC,
            DecodeError::BadStartMarker {
                expected: "cohort magic C0 4E",
            },
        )?;
        let version = r.array::<1>("version")?[0];
        if version != VERSION {
            return Err(DecodeError::InvalidField {
                field: "version",
                detail: format!("cohort format version {version}, this build speaks {VERSION}"),
            });
        }
        let protocol = r.array::<1>("protocol")?[0];
        let protocol = Protocol::from_u8(protocol).ok_or_else(|| DecodeError::InvalidField {
            field: "protocol",
            detail: format!("unknown protocol {protocol}"),
        })?;
        let body = r.bytes("body", r.remaining())?;
        Ok((Self { protocol }, body))
    }
}

/// Appends a socket address as cohort's formats write it: family (4 or 6), the address's
/// octets, the port (big-endian).
pub(crate) fn put_socket_addr(out: &mut impl BufMut, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.put_u8(4);
            out.put_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.put_u8(6);
            out.put_slice(&ip.octets());
        }
    }
    out.put_u16(addr.port());
}

/// Reads a socket address written by [`put_socket_addr`].
pub(crate) fn read_socket_addr(r: &mut Reader<'_>) -> Result<SocketAddr, DecodeError> {
    let ip = match r.array::<1>("address family")?[0] {
        4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>("ipv4 address")?)),
        6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>("ipv6 address")?)),
        other => {
            return Err(DecodeError::InvalidField {
                field: "address family",
                detail: format!("{other} is neither 4 nor 6"),
            });
        }
    };
    let port = u16::from_be_bytes(r.array::<2>("port")?);
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let mut buf = Vec::new();
        Envelope::encode(Protocol::Reliable, &mut buf);
        buf.extend_from_slice(b"body");
        let (env, body) = Envelope::decode(&Bytes::from(buf.clone())).unwrap();
        assert_eq!(env.protocol, Protocol::Reliable);
        assert_eq!(&body[..], b"body");

        let mut wrong_version = buf.clone();
        wrong_version[2] = 9;
        assert!(matches!(
            Envelope::decode(&Bytes::from(wrong_version)),
            Err(DecodeError::InvalidField {
                field: "version",
                ..
            })
        ));
        let mut unknown = buf.clone();
        unknown[3] = 200;
        assert!(Envelope::decode(&Bytes::from(unknown)).is_err());
        assert!(Envelope::decode(&Bytes::from_static(b"TRIBES-B")).is_err());
        assert!(Envelope::decode(&Bytes::from_static(&[0xC0])).is_err());
        assert!(!Envelope::looks_like(b"TRIBES-B"));
        assert!(!Envelope::looks_like(b"FLT2002"));
    }
}
