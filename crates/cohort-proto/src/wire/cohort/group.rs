//! The messages of the group protocol (views, join and leave, failure detection).
//!
//! Layout: the [`Envelope`](super::Envelope) with [`Protocol::Group`](super::Protocol::Group),
//! the sender's and the receiver's member ids (16 bytes each: the incarnations the message
//! comes from and is for, see [`GroupPacket`]), then one kind byte and the fields of that
//! kind, big-endian. A member is its 16-byte id
//! and its address (family byte 4 or 6, the address, a u16 port); a view is its sequence
//! number (u64), its coordinator's id and a u16 count of members. Every count is checked
//! against [`GroupLimits`] before anything is allocated.

use bytes::{BufMut, Bytes, BytesMut};

use super::{Envelope, Protocol, put_socket_addr, read_socket_addr};
use crate::group::{GroupMember, View, ViewId};
use crate::membership::MemberId;
use crate::wire::DecodeError;
use crate::wire::reader::{Reader, checked_len};

/// Bounds on what a received group message may declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupLimits {
    /// Most members a view may list.
    pub max_members: usize,
    /// Longest cluster name.
    pub max_cluster_name: usize,
}

impl Default for GroupLimits {
    fn default() -> Self {
        Self {
            max_members: 4096,
            max_cluster_name: 1024,
        }
    }
}

/// A group message addressed from one incarnation of a member to one incarnation of
/// another. A member's id changes when it restarts or rejoins, while its address stays: a
/// frame queued by an old incarnation can arrive after the new one started, and a reply to
/// an old incarnation reaches the new one at the same address. Naming both ends lets the
/// receiver drop what was not meant for it (see `group::Group::handle_packet`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPacket {
    /// The incarnation that sent the message.
    pub from: MemberId,
    /// The incarnation the message is for.
    pub to: MemberId,
    /// The message.
    pub message: GroupMessage,
}

/// One message of the group protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupMessage {
    /// A newcomer asks to be admitted. Sent to the member it believes is the coordinator;
    /// a member that is not forwards it to its coordinator.
    JoinRequest {
        /// The newcomer.
        joiner: GroupMember,
        /// Its cluster name; a coordinator of another cluster ignores the request.
        cluster: Bytes,
    },
    /// The coordinator installs a view. Sent to every member of the view and to every
    /// member it removes, so a removed member learns it at once.
    ViewInstall {
        /// The new view.
        view: View,
    },
    /// A member installed (or already had) the view.
    ViewAck {
        /// The view acknowledged.
        view_id: ViewId,
    },
    /// The sender's current view sequence number, sent when it finds its view and the
    /// receiver's differ: a coordinator numbers its next view above it, and a member whose
    /// view is later passes its view on.
    Stale {
        /// The receiver's current view sequence number.
        seq: u64,
    },
    /// The sender leaves gracefully (or leaves this group to join another, or tells a member
    /// that the two are not in each other's views). It only ever speaks for the sender: no
    /// member can make another leave.
    Leave,
    /// The sender has not heard from `member` for the suspect timeout. Sent to the
    /// coordinator (or to the next in line when the coordinator is the suspect); the
    /// coordinator removes a member once enough witnesses agree.
    Suspect {
        /// The suspect.
        member: MemberId,
        /// The sender's view sequence number.
        view_seq: u64,
    },
    /// The sender believes `member` is gone. Needs no witnesses only when it is the
    /// ring's own evidence: the sender watches `member` in view `view_id` (it is `member`'s
    /// predecessor there) and the receiver holds that same view. Anything else (a death
    /// passed on, a restart seen) counts as the sender's suspicion.
    Dead {
        /// The dead member.
        member: MemberId,
        /// The sender's view.
        view_id: ViewId,
    },
    /// The member deciding on `member` asks a witness whether it suspects `member` too;
    /// the witness answers with a `Suspect` if it does (and with a `Leave` if it is not in
    /// the asker's group at all).
    VerifySuspect {
        /// The suspect.
        member: MemberId,
    },
    /// A coordinator heard a cohort node outside its view. The receiver joins, rejoins
    /// or merges, depending on its own view (see `group::Group`).
    MergeProbe {
        /// The coordinator's view.
        view_id: ViewId,
        /// How many members that view has.
        size: u32,
    },
}

const JOIN_REQUEST: u8 = 1;
const VIEW_INSTALL: u8 = 2;
const VIEW_ACK: u8 = 3;
const STALE: u8 = 4;
const LEAVE: u8 = 5;
const SUSPECT: u8 = 6;
const DEAD: u8 = 7;
const MERGE_PROBE: u8 = 8;
const VERIFY_SUSPECT: u8 = 9;

impl GroupMessage {
    /// A short lower-case name of the kind, for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::JoinRequest { .. } => "join_request",
            Self::ViewInstall { .. } => "view_install",
            Self::ViewAck { .. } => "view_ack",
            Self::Stale { .. } => "stale",
            Self::Leave { .. } => "leave",
            Self::Suspect { .. } => "suspect",
            Self::Dead { .. } => "dead",
            Self::MergeProbe { .. } => "merge_probe",
            Self::VerifySuspect { .. } => "verify_suspect",
        }
    }

    fn encode_body(&self, out: &mut BytesMut) {
        match self {
            Self::JoinRequest { joiner, cluster } => {
                out.put_u8(JOIN_REQUEST);
                put_member(out, joiner);
                out.put_u16(cluster.len().min(usize::from(u16::MAX)) as u16);
                out.put_slice(&cluster[..cluster.len().min(usize::from(u16::MAX))]);
            }
            Self::ViewInstall { view } => {
                out.put_u8(VIEW_INSTALL);
                put_view_id(out, &view.id);
                out.put_u16(view.members.len().min(usize::from(u16::MAX)) as u16);
                for m in view.members.iter().take(usize::from(u16::MAX)) {
                    put_member(out, m);
                }
            }
            Self::ViewAck { view_id } => {
                out.put_u8(VIEW_ACK);
                put_view_id(out, view_id);
            }
            Self::Stale { seq } => {
                out.put_u8(STALE);
                out.put_u64(*seq);
            }
            Self::Leave => out.put_u8(LEAVE),
            Self::Suspect { member, view_seq } => {
                out.put_u8(SUSPECT);
                out.put_slice(&member.0);
                out.put_u64(*view_seq);
            }
            Self::Dead { member, view_id } => {
                out.put_u8(DEAD);
                out.put_slice(&member.0);
                put_view_id(out, view_id);
            }
            Self::VerifySuspect { member } => {
                out.put_u8(VERIFY_SUSPECT);
                out.put_slice(&member.0);
            }
            Self::MergeProbe { view_id, size } => {
                out.put_u8(MERGE_PROBE);
                put_view_id(out, view_id);
                out.put_u32(*size);
            }
        }
    }

    fn decode_body(r: &mut Reader<'_>, limits: &GroupLimits) -> Result<Self, DecodeError> {
        let kind = r.array::<1>("kind")?[0];
        let message = match kind {
            JOIN_REQUEST => {
                let joiner = read_member(r)?;
                let len = u16::from_be_bytes(r.array::<2>("cluster length")?);
                let len = checked_len("cluster", i64::from(len), limits.max_cluster_name)?;
                let cluster = r.bytes("cluster", len)?;
                Self::JoinRequest { joiner, cluster }
            }
            VIEW_INSTALL => {
                let id = read_view_id(r)?;
                let count = u16::from_be_bytes(r.array::<2>("member count")?);
                let count = checked_len("member count", i64::from(count), limits.max_members)?;
                // Each member takes at least 23 bytes: refuse counts the input cannot hold
                // before reserving space for them.
                if count * 23 > r.remaining() {
                    return Err(DecodeError::Truncated {
                        field: "members",
                        offset: r.position(),
                        needed: count * 23,
                        available: r.remaining(),
                    });
                }
                let mut members = Vec::with_capacity(count);
                for _ in 0..count {
                    members.push(read_member(r)?);
                }
                Self::ViewInstall {
                    view: View { id, members },
                }
            }
            VIEW_ACK => Self::ViewAck {
                view_id: read_view_id(r)?,
            },
            STALE => Self::Stale {
                seq: u64::from_be_bytes(r.array::<8>("seq")?),
            },
            LEAVE => Self::Leave,
            SUSPECT => Self::Suspect {
                member: MemberId(r.array::<16>("member")?),
                view_seq: u64::from_be_bytes(r.array::<8>("view seq")?),
            },
            DEAD => Self::Dead {
                member: MemberId(r.array::<16>("member")?),
                view_id: read_view_id(r)?,
            },
            VERIFY_SUSPECT => Self::VerifySuspect {
                member: MemberId(r.array::<16>("member")?),
            },
            MERGE_PROBE => Self::MergeProbe {
                view_id: read_view_id(r)?,
                size: u32::from_be_bytes(r.array::<4>("size")?),
            },
            other => {
                return Err(DecodeError::InvalidField {
                    field: "kind",
                    detail: format!("unknown group message kind {other}"),
                });
            }
        };
        Ok(message)
    }
}

impl GroupPacket {
    /// Encodes the packet, envelope included.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(96);
        Envelope::encode(Protocol::Group, &mut out);
        out.put_slice(&self.from.0);
        out.put_slice(&self.to.0);
        self.message.encode_body(&mut out);
        out.freeze()
    }

    /// Decodes a packet, envelope included. Trailing bytes are an error.
    pub fn decode(input: &Bytes, limits: &GroupLimits) -> Result<Self, DecodeError> {
        let (envelope, body) = Envelope::decode(input)?;
        if envelope.protocol != Protocol::Group {
            return Err(DecodeError::InvalidField {
                field: "protocol",
                detail: format!("expected the group protocol, got {:?}", envelope.protocol),
            });
        }
        let mut r = Reader::new(&body);
        let from = MemberId(r.array::<16>("from")?);
        let to = MemberId(r.array::<16>("to")?);
        let message = GroupMessage::decode_body(&mut r, limits)?;
        if r.remaining() != 0 {
            return Err(DecodeError::LengthMismatch {
                declared: body.len(),
                actual: r.position(),
            });
        }
        Ok(Self { from, to, message })
    }
}

fn put_view_id(out: &mut BytesMut, id: &ViewId) {
    out.put_u64(id.seq);
    out.put_slice(&id.coordinator.0);
}

fn read_view_id(r: &mut Reader<'_>) -> Result<ViewId, DecodeError> {
    let seq = u64::from_be_bytes(r.array::<8>("view seq")?);
    let coordinator = MemberId(r.array::<16>("view coordinator")?);
    Ok(ViewId { seq, coordinator })
}

fn put_member(out: &mut BytesMut, m: &GroupMember) {
    out.put_slice(&m.id.0);
    put_socket_addr(out, &m.addr);
}

fn read_member(r: &mut Reader<'_>) -> Result<GroupMember, DecodeError> {
    let id = MemberId(r.array::<16>("member id")?);
    let addr = read_socket_addr(r)?;
    Ok(GroupMember { id, addr })
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn member(n: u8) -> GroupMember {
        GroupMember {
            id: MemberId([n; 16]),
            addr: SocketAddr::from(([10, 0, 0, n], 4000)),
        }
    }

    fn packet(message: GroupMessage) -> GroupPacket {
        GroupPacket {
            from: MemberId([0xA1; 16]),
            to: MemberId([0xB2; 16]),
            message,
        }
    }

    fn samples() -> Vec<GroupPacket> {
        let view_id = ViewId {
            seq: 7,
            coordinator: MemberId([1; 16]),
        };
        [
            GroupMessage::JoinRequest {
                joiner: member(3),
                cluster: Bytes::from_static(b"orders"),
            },
            GroupMessage::JoinRequest {
                joiner: GroupMember {
                    id: MemberId([4; 16]),
                    addr: "[::1]:4001".parse().unwrap(),
                },
                cluster: Bytes::new(),
            },
            GroupMessage::ViewInstall {
                view: View {
                    id: view_id,
                    members: vec![member(1), member(2), member(3)],
                },
            },
            GroupMessage::ViewAck { view_id },
            GroupMessage::Stale { seq: 9 },
            GroupMessage::Leave,
            GroupMessage::Suspect {
                member: MemberId([2; 16]),
                view_seq: 7,
            },
            GroupMessage::Dead {
                member: MemberId([2; 16]),
                view_id,
            },
            GroupMessage::MergeProbe { view_id, size: 3 },
            GroupMessage::VerifySuspect {
                member: MemberId([2; 16]),
            },
        ]
        .into_iter()
        .map(packet)
        .collect()
    }

    #[test]
    fn every_kind_round_trips() {
        for msg in samples() {
            let bytes = msg.encode();
            assert_eq!(
                GroupPacket::decode(&bytes, &GroupLimits::default()),
                Ok(msg.clone()),
                "{}",
                msg.message.kind()
            );
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        for msg in samples() {
            let bytes = msg.encode();
            for len in 0..bytes.len() {
                assert!(
                    GroupPacket::decode(&bytes.slice(..len), &GroupLimits::default()).is_err(),
                    "{} cut to {len} bytes decoded",
                    msg.message.kind()
                );
            }
            let mut longer = BytesMut::from(&bytes[..]);
            longer.put_u8(0);
            assert!(GroupPacket::decode(&longer.freeze(), &GroupLimits::default()).is_err());
        }
    }

    #[test]
    fn counts_over_the_limits_are_refused_before_allocating() {
        let mut out = BytesMut::new();
        Envelope::encode(Protocol::Group, &mut out);
        out.put_slice(&[0; 32]);
        out.put_u8(VIEW_INSTALL);
        out.put_u64(1);
        out.put_slice(&[1; 16]);
        out.put_u16(u16::MAX);
        let err = GroupPacket::decode(&out.freeze(), &GroupLimits::default()).unwrap_err();
        assert!(matches!(err, DecodeError::TooLong { .. }), "{err}");

        let limits = GroupLimits {
            max_members: usize::from(u16::MAX),
            ..GroupLimits::default()
        };
        let mut out = BytesMut::new();
        Envelope::encode(Protocol::Group, &mut out);
        out.put_slice(&[0; 32]);
        out.put_u8(VIEW_INSTALL);
        out.put_u64(1);
        out.put_slice(&[1; 16]);
        out.put_u16(60_000);
        let err = GroupPacket::decode(&out.freeze(), &limits).unwrap_err();
        assert!(matches!(err, DecodeError::Truncated { .. }), "{err}");
    }

    #[test]
    fn unknown_kind_and_family_are_refused() {
        let mut out = BytesMut::new();
        Envelope::encode(Protocol::Group, &mut out);
        out.put_slice(&[0; 32]);
        out.put_u8(99);
        assert!(GroupPacket::decode(&out.freeze(), &GroupLimits::default()).is_err());
        let mut bytes = BytesMut::from(&packet(GroupMessage::Leave).encode()[..]);
        bytes[3] = Protocol::Router as u8;
        assert!(GroupPacket::decode(&bytes.freeze(), &GroupLimits::default()).is_err());
        let mut join = BytesMut::from(&samples()[0].encode()[..]);
        join[4 + 32 + 1 + 16] = 5; // the address family byte of the joiner
        assert!(GroupPacket::decode(&join.freeze(), &GroupLimits::default()).is_err());
    }

    /// Writes the fuzz seeds afresh (one file per kind) after a format change:
    /// `COHORT_WRITE_SEEDS=1 cargo test -p cohort-proto write_fuzz_seeds`.
    #[test]
    fn write_fuzz_seeds() {
        if std::env::var_os("COHORT_WRITE_SEEDS").is_none() {
            return;
        }
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/cohort_group");
        for p in samples() {
            let name = format!("{}.bin", p.message.kind());
            if !matches!(p.message, GroupMessage::JoinRequest { ref cluster, .. } if cluster.is_empty())
            {
                std::fs::write(dir.join(name), p.encode()).unwrap();
            }
        }
    }

    #[test]
    fn the_fuzz_seeds_are_valid_messages() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/cohort_group");
        let mut kinds = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("fuzz seeds") {
            let bytes = Bytes::from(std::fs::read(entry.unwrap().path()).unwrap());
            let msg = GroupPacket::decode(&bytes, &GroupLimits::default()).expect("seed decodes");
            assert_eq!(msg.encode(), bytes);
            kinds.push(msg.message.kind());
        }
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), 9, "one seed per kind: {kinds:?}");
    }
}
