//! The Tribes member record (`MemberImpl.getData` / `MemberImpl.getMember`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire::DecodeError;
use crate::wire::reader::{Reader, checked_len};

/// `TRIBES_MBR_BEGIN`: "TRIBES-B" followed by the format version 1, 0.
pub const MEMBER_BEGIN: [u8; 10] = *b"TRIBES-B\x01\x00";
/// `TRIBES_MBR_END`: "TRIBES-E" followed by 1, 0.
pub const MEMBER_END: [u8; 10] = *b"TRIBES-E\x01\x00";
/// The command a member sends once when it stops (`Member.SHUTDOWN_PAYLOAD`): peers drop
/// it at once instead of waiting for the drop time.
pub const SHUTDOWN_COMMAND: &[u8] = b"BABY-ALEX";
/// The command in every heartbeat of a cohort node. Tribes acts only on
/// [`SHUTDOWN_COMMAND`] and ignores any other command, so the marker is harmless to Tomcat
/// nodes; cohort nodes use it to know that a peer's receiver handles several frames in
/// flight on one connection in order (a Tribes `NioReceiver` does not: it may hand the
/// next frame of a connection to another thread before the current one is answered).
pub const COHORT_COMMAND: &[u8] = b"COHORT-1";

/// Fixed part of a record: markers (20), body length (4), alive (8), three ports (12),
/// host length (1), command/domain/payload lengths (12) and the unique id (16).
const FIXED_LEN: usize = 20 + 4 + 8 + 12 + 1 + 12 + 16;

/// Upper bounds applied while decoding a member record; a field over its bound makes the
/// record malformed. They keep a hostile packet from announcing huge fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberLimits {
    /// Largest command accepted, in bytes.
    pub max_command: usize,
    /// Largest domain accepted, in bytes.
    pub max_domain: usize,
    /// Largest payload accepted, in bytes.
    pub max_payload: usize,
}

impl Default for MemberLimits {
    /// 64 KiB each: a member record travels in one UDP datagram, so nothing larger can be
    /// real.
    fn default() -> Self {
        Self {
            max_command: 65_536,
            max_domain: 65_536,
            max_payload: 65_536,
        }
    }
}

/// One member as Tribes describes it on the wire.
///
/// Tribes writes the host as raw address bytes (4 for IPv4, 16 for IPv6), and ports as
/// signed `int`s where -1 means "none".
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MemberRecord {
    /// Milliseconds since the member's service started.
    pub alive_ms: i64,
    /// Port of the member's TCP receiver.
    pub tcp_port: i32,
    /// Port of its TLS receiver, -1 when it has none.
    pub secure_port: i32,
    /// Port of its UDP receiver, -1 when it has none.
    pub udp_port: i32,
    /// The member's address.
    pub host: IpAddr,
    /// A command; [`SHUTDOWN_COMMAND`] announces a graceful stop.
    pub command: Bytes,
    /// The cluster (domain) name.
    pub domain: Bytes,
    /// 16 random bytes, new every time the member starts.
    pub unique_id: [u8; 16],
    /// Application metadata.
    pub payload: Bytes,
}

impl MemberRecord {
    /// Length of the encoded record in bytes.
    pub fn encoded_len(&self) -> usize {
        FIXED_LEN
            + host_len(&self.host)
            + self.command.len()
            + self.domain.len()
            + self.payload.len()
    }

    /// True when this record announces a graceful shutdown.
    pub fn is_shutdown(&self) -> bool {
        self.command.as_ref() == SHUTDOWN_COMMAND
    }

    /// Appends the encoded record to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let total = self.encoded_len();
        out.reserve(total);
        out.put_slice(&MEMBER_BEGIN);
        // The body length excludes both markers and the length field itself.
        out.put_i32((total - 24) as i32);
        out.put_i64(self.alive_ms);
        out.put_i32(self.tcp_port);
        out.put_i32(self.secure_port);
        out.put_i32(self.udp_port);
        match self.host {
            IpAddr::V4(v4) => {
                out.put_u8(4);
                out.put_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                out.put_u8(16);
                out.put_slice(&v6.octets());
            }
        }
        out.put_i32(self.command.len() as i32);
        out.put_slice(&self.command);
        out.put_i32(self.domain.len() as i32);
        out.put_slice(&self.domain);
        out.put_slice(&self.unique_id);
        out.put_i32(self.payload.len() as i32);
        out.put_slice(&self.payload);
        out.put_slice(&MEMBER_END);
    }

    /// Encodes the record into a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out.freeze()
    }

    /// Decodes a record that fills `input` exactly (a heartbeat datagram, or the sender
    /// field of a data frame).
    pub fn decode(input: &Bytes, limits: &MemberLimits) -> Result<Self, DecodeError> {
        let mut r = Reader::new(input);
        r.expect(
            &MEMBER_BEGIN,
            DecodeError::BadStartMarker {
                expected: "TRIBES-B",
            },
        )?;
        let body_len = r.i32("body length")?;
        let body_len = checked_len("body length", i64::from(body_len), usize::MAX)?;
        let declared_total = body_len.saturating_add(24);
        if declared_total != input.len() {
            return Err(DecodeError::LengthMismatch {
                declared: declared_total,
                actual: input.len(),
            });
        }
        let alive_ms = r.i64("alive time")?;
        let tcp_port = r.i32("tcp port")?;
        let secure_port = r.i32("secure port")?;
        let udp_port = r.i32("udp port")?;
        let host_len = r.i8("host length")?;
        let host = match host_len {
            4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>("host")?)),
            16 => IpAddr::V6(Ipv6Addr::from(r.array::<16>("host")?)),
            n if n < 0 => {
                return Err(DecodeError::NegativeLength {
                    field: "host length",
                    value: i64::from(n),
                });
            }
            n => {
                return Err(DecodeError::InvalidField {
                    field: "host",
                    detail: format!("{n} address bytes, expected 4 or 16"),
                });
            }
        };
        let command = r.length_prefixed("command", limits.max_command)?;
        let domain = r.length_prefixed("domain", limits.max_domain)?;
        let unique_id = r.array::<16>("unique id")?;
        let payload = r.length_prefixed("payload", limits.max_payload)?;
        let end_at = r.position();
        r.expect(
            &MEMBER_END,
            DecodeError::BadEndMarker {
                expected: "TRIBES-E",
            },
        )?;
        if r.remaining() != 0 {
            return Err(DecodeError::LengthMismatch {
                declared: input.len(),
                actual: end_at + 10,
            });
        }
        Ok(Self {
            alive_ms,
            tcp_port,
            secure_port,
            udp_port,
            host,
            command,
            domain,
            unique_id,
            payload,
        })
    }
}

fn host_len(host: &IpAddr) -> usize {
    match host {
        IpAddr::V4(_) => 4,
        IpAddr::V6(_) => 16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `rx` heartbeat from `tribes-vectors.md` §1a: domain "demo-domain", payload "hi".
    const RX_HEARTBEAT: &str = "5452494245532d4201000000004200000000000003f600001024ffffffffffffffff047f000001000000000000000b64656d6f2d646f6d61696e183090cdd4424f19b14356c57e47f9ab0000000268695452494245532d450100";
    /// `tx` heartbeat, §1b: empty domain and payload (the 77-byte minimum for IPv4).
    const TX_HEARTBEAT: &str = "5452494245532d4201000000003500000000000003f200001023ffffffffffffffff047f00000100000000000000007f15a8528fd34598a973be093ec5ec59000000005452494245532d450100";
    /// Graceful-shutdown heartbeat, §1c: command "BABY-ALEX".
    const TX_SHUTDOWN: &str = "5452494245532d4201000000003e00000000000012ef00001023ffffffffffffffff047f00000100000009424142592d414c4558000000007f15a8528fd34598a973be093ec5ec59000000005452494245532d450100";

    fn bytes(hex_str: &str) -> Bytes {
        Bytes::from(hex::decode(hex_str).unwrap())
    }

    fn id(hex_str: &str) -> [u8; 16] {
        hex::decode(hex_str).unwrap().try_into().unwrap()
    }

    #[test]
    fn decodes_and_reencodes_captured_heartbeat_with_domain_and_payload() {
        let packet = bytes(RX_HEARTBEAT);
        assert_eq!(packet.len(), 90);
        let m = MemberRecord::decode(&packet, &MemberLimits::default()).unwrap();
        assert_eq!(
            m,
            MemberRecord {
                alive_ms: 1014,
                tcp_port: 4132,
                secure_port: -1,
                udp_port: -1,
                host: IpAddr::V4(Ipv4Addr::LOCALHOST),
                command: Bytes::new(),
                domain: Bytes::from_static(b"demo-domain"),
                unique_id: id("183090cdd4424f19b14356c57e47f9ab"),
                payload: Bytes::from_static(b"hi"),
            }
        );
        assert!(!m.is_shutdown());
        assert_eq!(m.encoded_len(), 90);
        assert_eq!(m.to_bytes(), packet);
    }

    #[test]
    fn decodes_and_reencodes_captured_minimal_heartbeat() {
        let packet = bytes(TX_HEARTBEAT);
        let m = MemberRecord::decode(&packet, &MemberLimits::default()).unwrap();
        assert_eq!(m.alive_ms, 1010);
        assert_eq!(m.tcp_port, 4131);
        assert!(m.domain.is_empty() && m.payload.is_empty() && m.command.is_empty());
        assert_eq!(m.unique_id, id("7f15a8528fd34598a973be093ec5ec59"));
        assert_eq!(m.to_bytes(), packet);
    }

    #[test]
    fn decodes_and_reencodes_captured_shutdown_packet() {
        let packet = bytes(TX_SHUTDOWN);
        let m = MemberRecord::decode(&packet, &MemberLimits::default()).unwrap();
        assert!(m.is_shutdown());
        assert_eq!(m.alive_ms, 4847);
        assert_eq!(m.to_bytes(), packet);
    }

    #[test]
    fn ipv6_host_round_trips() {
        let m = MemberRecord {
            alive_ms: 7,
            tcp_port: 4000,
            secure_port: -1,
            udp_port: -1,
            host: "::1".parse().unwrap(),
            command: Bytes::new(),
            domain: Bytes::from_static(b"d"),
            unique_id: [9; 16],
            payload: Bytes::new(),
        };
        let b = m.to_bytes();
        assert_eq!(
            MemberRecord::decode(&b, &MemberLimits::default()).unwrap(),
            m
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let packet = bytes(RX_HEARTBEAT);
        for len in 0..packet.len() {
            let cut = packet.slice(..len);
            assert!(
                MemberRecord::decode(&cut, &MemberLimits::default()).is_err(),
                "len {len}"
            );
        }
    }

    #[test]
    fn rejects_wrong_markers_and_bad_lengths() {
        let limits = MemberLimits::default();
        let good = hex::decode(RX_HEARTBEAT).unwrap();

        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(
            MemberRecord::decode(&Bytes::from(bad), &limits),
            Err(DecodeError::BadStartMarker {
                expected: "TRIBES-B"
            })
        );

        let mut bad = good.clone();
        let n = bad.len();
        bad[n - 3] = b'X';
        assert_eq!(
            MemberRecord::decode(&Bytes::from(bad), &limits),
            Err(DecodeError::BadEndMarker {
                expected: "TRIBES-E"
            })
        );

        // Domain length (offset 43) negative.
        let mut bad = good.clone();
        bad[43..47].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(matches!(
            MemberRecord::decode(&Bytes::from(bad), &limits),
            Err(DecodeError::NegativeLength {
                field: "domain",
                ..
            })
        ));

        // Domain length beyond the packet.
        let mut bad = good.clone();
        bad[43..47].copy_from_slice(&1000i32.to_be_bytes());
        assert!(matches!(
            MemberRecord::decode(&Bytes::from(bad), &limits),
            Err(DecodeError::Truncated { .. })
        ));

        // Domain length over the configured maximum.
        let tight = MemberLimits {
            max_domain: 4,
            ..limits
        };
        assert!(matches!(
            MemberRecord::decode(&Bytes::from(good.clone()), &tight),
            Err(DecodeError::TooLong {
                field: "domain",
                length: 11,
                max: 4
            })
        ));

        // Body length disagreeing with the datagram.
        let mut bad = good.clone();
        bad[10..14].copy_from_slice(&67i32.to_be_bytes());
        assert!(matches!(
            MemberRecord::decode(&Bytes::from(bad), &limits),
            Err(DecodeError::LengthMismatch { .. })
        ));

        // A host of 5 bytes.
        let mut bad = good;
        bad[34] = 5;
        assert!(matches!(
            MemberRecord::decode(&Bytes::from(bad), &limits),
            Err(DecodeError::InvalidField { field: "host", .. })
        ));
    }
}
