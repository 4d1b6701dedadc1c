//! ZooKeeper 3.8's leader-election wire format, byte for byte (`QuorumCnxManager`,
//! `FastLeaderElection.buildMsg` and its receiver), so a cohort voter can take part in an
//! election with real ZooKeeper servers.
//!
//! A TCP connection between two election ports carries:
//! 1. once, from the initiator, a [`ConnectionHeader`] (no length prefix);
//! 2. then, in both directions, frames: an `int32` length and that many bytes
//!    ([`FrameDecoder`], [`encode_frame`]);
//! 3. each frame body is one [`Notification`].
//!
//! All integers are big-endian Java `int`/`long`. The captured bytes these codecs are tested
//! against are in the tests of each module (`zookeeper-election-vectors.md`).

mod frame;
mod header;
mod notification;

pub use frame::{FrameDecoder, MAX_FRAME_LEN, encode_frame};
pub use header::{
    ConnectionHeader, MAX_ADDR_LEN, PROTOCOL_VERSION, PROTOCOL_VERSION_V2, parse_election_addrs,
};
pub use notification::{CURRENT_VERSION, Notification, PeerState};
