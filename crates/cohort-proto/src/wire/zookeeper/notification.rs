//! The election notification, one per frame (`FastLeaderElection.buildMsg`, decoded as
//! `Messenger.WorkerReceiver.run` does).

use bytes::{BufMut, Bytes};

use crate::wire::DecodeError;
use crate::wire::reader::{Reader, checked_len};

/// The notification version ZooKeeper 3.8 sends (`Notification.CURRENTVERSION`): the one
/// with the config string.
pub const CURRENT_VERSION: i32 = 2;

/// The oldest form: state, leader, zxid, election epoch (no peer epoch).
const LEN_NO_PEER_EPOCH: usize = 28;
/// The 36-byte vote plus four bytes (ZooKeeper before 3.4.6, or a version ≤ 1). ZooKeeper
/// reads a body of exactly this length without its last four bytes: version 0.
const LEN_NO_VERSION: usize = 40;
/// The vote, the version and the config length: the current form with an empty config.
const LEN_WITH_CONFIG: usize = 44;

/// A server's state in the election (`QuorumPeer.ServerState`; the wire value is the ordinal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerState {
    /// Taking part in an election.
    Looking,
    /// Following an elected leader.
    Following,
    /// The elected leader.
    Leading,
    /// A non-voting observer that follows the leader.
    Observing,
}

impl PeerState {
    /// The wire value (Java enum ordinal).
    pub fn to_i32(self) -> i32 {
        match self {
            Self::Looking => 0,
            Self::Following => 1,
            Self::Leading => 2,
            Self::Observing => 3,
        }
    }

    /// Reads a wire value; ZooKeeper drops a notification with any other value.
    pub fn from_i32(value: i32) -> Option<Self> {
        match value {
            0 => Some(Self::Looking),
            1 => Some(Self::Following),
            2 => Some(Self::Leading),
            3 => Some(Self::Observing),
            _ => None,
        }
    }
}

/// One election notification: the sender's state and its vote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The sender's state.
    pub state: PeerState,
    /// The sid proposed as leader (when not LOOKING: the leader followed or led).
    pub leader: i64,
    /// The proposed leader's last zxid (`epoch << 32 | counter`).
    pub zxid: i64,
    /// The sender's logical clock: the election round.
    pub election_epoch: i64,
    /// The proposed leader's epoch.
    pub peer_epoch: i64,
    /// The format version; [`CURRENT_VERSION`] for everything cohort sends. Decoded forms
    /// without a version field read as 0.
    pub version: i32,
    /// The sender's quorum configuration (`QuorumVerifier.toString()`, UTF-8); sent and
    /// read only when `version > 1`.
    pub config: Bytes,
}

impl Notification {
    /// Length of the encoded body (without the frame's length prefix).
    pub fn encoded_len(&self) -> usize {
        if self.version > 1 {
            LEN_WITH_CONFIG + self.config.len()
        } else {
            LEN_NO_VERSION
        }
    }

    /// Appends the body (without the frame's length prefix): the 36-byte vote and version,
    /// then, for `version > 1`, the config length and bytes. (A version ≤ 1 body is 40
    /// bytes, which ZooKeeper reads as version 0.)
    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_i32(self.state.to_i32());
        out.put_i64(self.leader);
        out.put_i64(self.zxid);
        out.put_i64(self.election_epoch);
        out.put_i64(self.peer_epoch);
        out.put_i32(self.version);
        if self.version > 1 {
            out.put_i32(self.config.len() as i32);
            out.put_slice(&self.config);
        }
    }

    /// The encoded body as bytes.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out.into()
    }

    /// Decodes a frame body the way ZooKeeper 3.8's receiver does:
    /// - shorter than 28 bytes: refused;
    /// - exactly 28 bytes: no peer epoch, which is then the zxid's epoch (`zxid >> 32`);
    /// - exactly 40 bytes: peer epoch, version 0 (the last 4 bytes are not read);
    /// - otherwise peer epoch and version (so 29–39 and 41–43 bytes are refused); with `version > 1` a config length (refused
    ///   when negative or longer than the body) and the config.
    ///
    /// Bytes after the last field are ignored, as ZooKeeper ignores them. An unknown state
    /// value is refused.
    pub fn decode(buf: &Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf);
        if buf.len() < LEN_NO_PEER_EPOCH {
            // Read the fields to report which one is cut short.
            r.bytes("notification", LEN_NO_PEER_EPOCH)?;
        }
        let raw_state = r.i32("state")?;
        let state = PeerState::from_i32(raw_state).ok_or_else(|| DecodeError::InvalidField {
            field: "state",
            detail: format!("{raw_state} is not 0..=3"),
        })?;
        let leader = r.i64("leader")?;
        let zxid = r.i64("zxid")?;
        let election_epoch = r.i64("election epoch")?;
        let mut n = Self {
            state,
            leader,
            zxid,
            election_epoch,
            peer_epoch: zxid >> 32,
            version: 0,
            config: Bytes::new(),
        };
        if buf.len() == LEN_NO_PEER_EPOCH {
            return Ok(n);
        }
        n.peer_epoch = r.i64("peer epoch")?;
        if buf.len() == LEN_NO_VERSION {
            return Ok(n);
        }
        n.version = r.i32("version")?;
        if n.version > 1 {
            let raw = r.i32("config length")?;
            let len = checked_len("config length", i64::from(raw), buf.len())?;
            n.config = r.bytes("config", len)?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 132-byte config every captured notification carries.
    const CONFIG: &str = "server.1=127.0.0.1:2888:3888:participant\n\
                          server.2=127.0.0.1:2889:3889:participant\n\
                          server.3=127.0.0.1:2890:3890:participant\n\
                          version=0";

    /// A captured frame: the hex of the fixed fields, then the config.
    fn captured(fixed: &str) -> Vec<u8> {
        let mut frame = hex::decode(fixed.replace(' ', "")).unwrap();
        frame.extend_from_slice(CONFIG.as_bytes());
        frame
    }

    fn vote(state: PeerState, leader: i64, zxid: i64, election: i64, peer: i64) -> Notification {
        Notification {
            state,
            leader,
            zxid,
            election_epoch: election,
            peer_epoch: peer,
            version: CURRENT_VERSION,
            config: Bytes::from_static(CONFIG.as_bytes()),
        }
    }

    /// Vectors N1–N4 of `zookeeper-election-vectors.md` §4, each a whole frame.
    fn vectors() -> Vec<(&'static str, Vec<u8>, Notification)> {
        use PeerState::*;
        vec![
            (
                "N1 LOOKING vote of restarted sid 3",
                captured(
                    "000000b0 00000000 0000000000000003 0000000100000005 0000000000000001 0000000000000001 00000002 00000084",
                ),
                vote(Looking, 3, 0x1_0000_0005, 1, 1),
            ),
            (
                "N2 LEADING reply of sid 2",
                captured(
                    "000000b0 00000002 0000000000000002 0000000100000005 0000000000000002 0000000000000002 00000002 00000084",
                ),
                vote(Leading, 2, 0x1_0000_0005, 2, 2),
            ),
            (
                "N3 FOLLOWING reply of sid 1",
                captured(
                    "000000b0 00000001 0000000000000002 0000000100000005 0000000000000002 0000000000000002 00000002 00000084",
                ),
                vote(Following, 2, 0x1_0000_0005, 2, 2),
            ),
            (
                "N4 first vote of a fresh ensemble",
                captured(
                    "000000b0 00000000 0000000000000002 0000000000000000 0000000000000001 0000000000000000 00000002 00000084",
                ),
                vote(Looking, 2, 0, 1, 0),
            ),
        ]
    }

    #[test]
    fn captured_frames_decode_and_reencode_byte_exact() {
        assert_eq!(CONFIG.len(), 132);
        for (name, frame, expected) in vectors() {
            assert_eq!(frame.len(), 4 + 176, "{name}");
            let mut dec = super::super::FrameDecoder::new();
            dec.extend(&frame);
            let body = dec.next_frame().unwrap().expect("one frame");
            assert_eq!(dec.next_frame().unwrap(), None);
            let n = Notification::decode(&body).unwrap();
            assert_eq!(n, expected, "{name}");
            assert_eq!(n.encoded_len(), 176);
            let mut out = Vec::new();
            super::super::encode_frame(&n.to_bytes(), &mut out);
            assert_eq!(out, frame, "{name} re-encodes differently");
        }
    }

    #[test]
    fn older_shorter_forms_are_accepted() {
        let n = vote(PeerState::Looking, 3, 0x7_0000_0001, 4, 9);
        let full = n.to_bytes();
        // 28 bytes: the peer epoch comes from the zxid.
        let old = Notification::decode(&full.slice(..28)).unwrap();
        assert_eq!((old.peer_epoch, old.version, old.leader), (7, 0, 3));
        assert!(old.config.is_empty());
        // 40 bytes: peer epoch, no version (the version field is read as padding).
        let mid = Notification::decode(&full.slice(..40)).unwrap();
        assert_eq!((mid.peer_epoch, mid.version), (9, 0));
        // Version 1 carries no config, and trailing bytes are ignored.
        let mut v1 = n.clone();
        v1.version = 1;
        let mut bytes = v1.to_bytes().to_vec();
        assert_eq!(bytes.len(), 40);
        bytes.extend_from_slice(b"ignored");
        let back = Notification::decode(&Bytes::from(bytes)).unwrap();
        assert_eq!((back.version, back.peer_epoch), (1, 9));
        assert!(back.config.is_empty());
    }

    #[test]
    fn refuses_short_bad_state_and_bad_config_length() {
        let full = vote(PeerState::Leading, 1, 1, 1, 1).to_bytes();
        for len in [0, 1, 27, 29, 35, 36, 37, 39, 41, 43] {
            assert!(
                Notification::decode(&full.slice(..len)).is_err(),
                "{len} bytes accepted"
            );
        }
        let mut bad_state = full.to_vec();
        bad_state[3] = 4;
        assert!(matches!(
            Notification::decode(&Bytes::from(bad_state)),
            Err(DecodeError::InvalidField { field: "state", .. })
        ));
        for len in [-1i32, 1000, i32::MAX] {
            let mut b = full.to_vec();
            b[40..44].copy_from_slice(&len.to_be_bytes());
            assert!(Notification::decode(&Bytes::from(b)).is_err(), "{len}");
        }
        // Within the body's length but past its end: truncated.
        let mut b = full.to_vec();
        b[40..44].copy_from_slice(&(full.len() as i32 - 43).to_be_bytes());
        b.truncate(full.len());
        let cut = Bytes::from(b);
        assert!(matches!(
            Notification::decode(&cut),
            Err(DecodeError::Truncated { .. })
        ));
    }
}
