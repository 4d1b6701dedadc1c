//! The user-facing view of a member.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

use crate::wire::tribes::{COHORT_COMMAND, MemberRecord};

/// A member's unique id: 16 random bytes chosen when its process starts, so a restarted
/// process is a new member.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId(pub [u8; 16]);

impl MemberId {
    /// A fresh id with the bits of a random (version 4) UUID, as Tribes makes them.
    pub fn random<R: rand::Rng + ?Sized>(rng: &mut R) -> Self {
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        id[6] = (id[6] & 0x0f) | 0x40;
        id[8] = (id[8] & 0x3f) | 0x80;
        Self(id)
    }

    /// The id as 32 lower-case hex digits.
    pub fn to_hex(&self) -> String {
        use fmt::Write;
        let mut s = String::with_capacity(32);
        for b in self.0 {
            let _ = write!(s, "{b:02x}");
        }
        s
    }
}

impl fmt::Debug for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A member of the cluster as the application sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Member {
    /// Unique id, new on every start.
    pub id: MemberId,
    /// Address of its TCP receiver: where messages to it go.
    pub addr: SocketAddr,
    /// Port of its TLS receiver, if any.
    pub secure_port: Option<u16>,
    /// Port of its UDP receiver, if any.
    pub udp_port: Option<u16>,
    /// Its cluster name.
    pub domain: Bytes,
    /// Application metadata it publishes.
    pub payload: Bytes,
    /// How long it had been running when it last announced itself.
    pub alive: Duration,
    /// True for a cohort node, false for a Tomcat Tribes node (told by the
    /// [`COHORT_COMMAND`](crate::wire::tribes::COHORT_COMMAND) marker in its heartbeats).
    /// Messages to a cohort node are pipelined on one connection; to a Tribes node they go
    /// one at a time, since Tribes only keeps a connection's order that way.
    pub is_cohort: bool,
}

/// A member record that decodes but describes a member no one can reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidMemberRecord {
    /// The TCP port is outside 0..=65535.
    #[error("tcp port {0} out of range")]
    TcpPortOutOfRange(i32),
}

impl Member {
    /// Reads a member from its wire record; fails if the record names an impossible port.
    pub fn from_record(record: &MemberRecord) -> Result<Self, InvalidMemberRecord> {
        let port = u16::try_from(record.tcp_port)
            .map_err(|_| InvalidMemberRecord::TcpPortOutOfRange(record.tcp_port))?;
        Ok(Self {
            id: MemberId(record.unique_id),
            addr: SocketAddr::new(record.host, port),
            secure_port: optional_port(record.secure_port),
            udp_port: optional_port(record.udp_port),
            domain: record.domain.clone(),
            payload: record.payload.clone(),
            alive: Duration::from_millis(record.alive_ms.max(0) as u64),
            is_cohort: record.command.as_ref() == COHORT_COMMAND,
        })
    }

    pub(crate) fn unreachable(record: &MemberRecord) -> Self {
        Self {
            id: MemberId(record.unique_id),
            addr: SocketAddr::new(record.host, 0),
            secure_port: None,
            udp_port: None,
            domain: record.domain.clone(),
            payload: record.payload.clone(),
            alive: Duration::ZERO,
            is_cohort: record.command.as_ref() == COHORT_COMMAND,
        }
    }
}

fn optional_port(port: i32) -> Option<u16> {
    u16::try_from(port).ok()
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", &self.id.to_hex()[..8], self.addr)
    }
}
