//! The initial message of an election connection (`QuorumCnxManager.startConnection`,
//! `InitialMessage.parse`): protocol version, the initiator's sid and its election address.

use bytes::{BufMut, Bytes};

use crate::wire::DecodeError;
use crate::wire::reader::{Reader, checked_len};

/// The protocol version ZooKeeper 3.5+ sends (`PROTOCOL_VERSION_V1`): one `host:port`.
pub const PROTOCOL_VERSION: i64 = -65536;
/// The version sent with `multiAddress.enabled=true` (`PROTOCOL_VERSION_V2`): the address
/// field holds `host:port|host:port|…`.
pub const PROTOCOL_VERSION_V2: i64 = -65535;
/// Longest address field ZooKeeper accepts (`maxBuffer`).
pub const MAX_ADDR_LEN: usize = 2048;

/// Bytes before the address: version (8), sid (8), address length (4).
const FIXED_LEN: usize = 20;

/// What the connecting side sends once, before any frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionHeader {
    /// The initiator's server id.
    pub sid: i64,
    /// The initiator's election address, `host:port` (`[v6]:port` for IPv6); several
    /// separated by `|` in the multi-address form.
    pub election_addr: String,
}

impl ConnectionHeader {
    /// Length of the encoded header.
    pub fn encoded_len(&self) -> usize {
        FIXED_LEN + self.election_addr.len()
    }

    /// Appends the header to `out`. A multi-address (`|`) header is sent as version 2,
    /// anything else as version 1, as ZooKeeper does.
    pub fn encode(&self, out: &mut impl BufMut) {
        let version = if self.election_addr.contains('|') {
            PROTOCOL_VERSION_V2
        } else {
            PROTOCOL_VERSION
        };
        out.put_i64(version);
        out.put_i64(self.sid);
        out.put_i32(self.election_addr.len() as i32);
        out.put_slice(self.election_addr.as_bytes());
    }

    /// Decodes a header that is exactly `buf`.
    pub fn decode(buf: &Bytes) -> Result<Self, DecodeError> {
        match Self::decode_prefix(buf)? {
            Some((header, used)) if used == buf.len() => Ok(header),
            Some((_, used)) => Err(DecodeError::LengthMismatch {
                declared: used,
                actual: buf.len(),
            }),
            None => Err(DecodeError::Truncated {
                field: "connection header",
                offset: 0,
                needed: Self::needed(buf).ok().flatten().unwrap_or(FIXED_LEN),
                available: buf.len(),
            }),
        }
    }

    /// Decodes the header at the start of a stream: `Ok(None)` while more bytes are
    /// needed, else the header and how many bytes it took (the frames follow).
    ///
    /// Refuses, as soon as the fixed part has arrived: a protocol version other than
    /// [`PROTOCOL_VERSION`] and [`PROTOCOL_VERSION_V2`] (a version ≥ 0 is the pre-3.5
    /// format, which ZooKeeper 3.8 never sends), and an address length ≤ 0 or over
    /// [`MAX_ADDR_LEN`]. Then an address that is not UTF-8 `host:port` (see
    /// [`parse_election_addrs`]).
    pub fn decode_prefix(buf: &[u8]) -> Result<Option<(Self, usize)>, DecodeError> {
        let Some(total) = Self::needed(buf)? else {
            return Ok(None);
        };
        if buf.len() < total {
            return Ok(None);
        }
        let bytes = Bytes::copy_from_slice(&buf[..total]);
        let mut r = Reader::new(&bytes);
        r.i64("protocol version")?;
        let sid = r.i64("sid")?;
        let addr_len = total - FIXED_LEN;
        r.i32("address length")?;
        let addr = r.bytes("election address", addr_len)?;
        let election_addr =
            String::from_utf8(addr.to_vec()).map_err(|_| DecodeError::InvalidField {
                field: "election address",
                detail: "not UTF-8".into(),
            })?;
        parse_election_addrs(&election_addr)?;
        Ok(Some((Self { sid, election_addr }, total)))
    }

    /// The whole header's length once the fixed part is in, checking version and length.
    fn needed(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
        if buf.len() >= 8 {
            let version = i64::from_be_bytes(buf[..8].try_into().expect("8 bytes"));
            if version != PROTOCOL_VERSION && version != PROTOCOL_VERSION_V2 {
                return Err(DecodeError::InvalidField {
                    field: "protocol version",
                    detail: format!(
                        "{version} (expected {PROTOCOL_VERSION} or {PROTOCOL_VERSION_V2})"
                    ),
                });
            }
        }
        if buf.len() < FIXED_LEN {
            return Ok(None);
        }
        let raw = i32::from_be_bytes(buf[16..20].try_into().expect("4 bytes"));
        if raw == 0 {
            return Err(DecodeError::InvalidField {
                field: "address length",
                detail: "0: an address is required".into(),
            });
        }
        let len = checked_len("address length", i64::from(raw), MAX_ADDR_LEN)?;
        Ok(Some(FIXED_LEN + len))
    }
}

/// Splits an election address field into `(host, port)` pairs, as ZooKeeper's
/// `InitialMessage.parse` does: `|`-separated, each `host:port` or `[v6]:port`.
pub fn parse_election_addrs(field: &str) -> Result<Vec<(String, u16)>, DecodeError> {
    let bad = |detail: String| DecodeError::InvalidField {
        field: "election address",
        detail,
    };
    field
        .split('|')
        .map(|part| {
            let (host, port) = if let Some(rest) = part.strip_prefix('[') {
                let (host, after) = rest
                    .split_once(']')
                    .ok_or_else(|| bad(format!("unclosed '[' in {part:?}")))?;
                let port = after
                    .strip_prefix(':')
                    .ok_or_else(|| bad(format!("no port in {part:?}")))?;
                (host, port)
            } else {
                let mut pieces = part.split(':');
                match (pieces.next(), pieces.next(), pieces.next()) {
                    (Some(h), Some(p), None) => (h, p),
                    _ => return Err(bad(format!("not host:port: {part:?}"))),
                }
            };
            if host.is_empty() {
                return Err(bad(format!("empty host in {part:?}")));
            }
            let port = port
                .parse::<u16>()
                .map_err(|_| bad(format!("bad port in {part:?}")))?;
            Ok((host.to_string(), port))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured: sid 3 → sid 2 (`zookeeper-election-vectors.md` §1, conn 14).
    const CAPTURED_SID3: &str =
        "ffffffffffff0000 0000000000000003 0000000e 3132372e302e302e313a33383930";
    /// Captured: sid 2 → sid 3 (conn 3).
    const CAPTURED_SID2: &str =
        "ffffffffffff0000 0000000000000002 0000000e 3132372e302e302e313a33383839";

    fn unhex(s: &str) -> Bytes {
        Bytes::from(hex::decode(s.replace(' ', "")).unwrap())
    }

    #[test]
    fn captured_headers_decode_and_reencode() {
        for (hexed, sid, addr) in [
            (CAPTURED_SID3, 3, "127.0.0.1:3890"),
            (CAPTURED_SID2, 2, "127.0.0.1:3889"),
        ] {
            let bytes = unhex(hexed);
            assert_eq!(bytes.len(), 34);
            let h = ConnectionHeader::decode(&bytes).unwrap();
            assert_eq!(h.sid, sid);
            assert_eq!(h.election_addr, addr);
            assert_eq!(h.encoded_len(), 34);
            let mut out = Vec::new();
            h.encode(&mut out);
            assert_eq!(out, bytes);
            assert_eq!(
                parse_election_addrs(&h.election_addr).unwrap(),
                vec![("127.0.0.1".to_string(), sid as u16 + 3887)]
            );
        }
    }

    #[test]
    fn prefix_decoding_waits_then_leaves_the_frames() {
        let mut stream = unhex(CAPTURED_SID3).to_vec();
        stream.extend_from_slice(&[0, 0, 0, 1, 9]);
        for cut in 0..34 {
            assert_eq!(
                ConnectionHeader::decode_prefix(&stream[..cut]).unwrap(),
                None
            );
        }
        let (h, used) = ConnectionHeader::decode_prefix(&stream).unwrap().unwrap();
        assert_eq!((h.sid, used), (3, 34));
    }

    #[test]
    fn refuses_bad_versions_lengths_and_addresses() {
        let with = |version: i64, len: i32, addr: &[u8]| {
            let mut b = Vec::new();
            b.put_i64(version);
            b.put_i64(1);
            b.put_i32(len);
            b.put_slice(addr);
            ConnectionHeader::decode_prefix(&b)
        };
        // Pre-3.5 bare sid, and an unknown negative version: refused from 8 bytes on.
        assert!(ConnectionHeader::decode_prefix(&5i64.to_be_bytes()).is_err());
        assert!(with(-1, 4, b"a:1").is_err());
        assert!(with(PROTOCOL_VERSION, 0, b"").is_err());
        assert!(matches!(
            with(PROTOCOL_VERSION, -1, b""),
            Err(DecodeError::NegativeLength { .. })
        ));
        assert!(matches!(
            with(PROTOCOL_VERSION, 2049, b""),
            Err(DecodeError::TooLong { max: 2048, .. })
        ));
        for addr in [
            &b"nohost"[..],
            b"a:b:c",
            b":1",
            b"a:70000",
            b"[::1",
            b"\xff:1",
        ] {
            let res = with(PROTOCOL_VERSION, addr.len() as i32, addr);
            assert!(res.is_err(), "{addr:?} accepted");
        }
        let multi = b"[::1]:3888|10.0.0.1:3889";
        let (h, _) = with(PROTOCOL_VERSION_V2, multi.len() as i32, multi)
            .unwrap()
            .unwrap_or_else(|| panic!("incomplete"));
        assert_eq!(
            parse_election_addrs(&h.election_addr).unwrap(),
            vec![("::1".into(), 3888), ("10.0.0.1".into(), 3889)]
        );
    }
}
