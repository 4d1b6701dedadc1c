//! Leader election: ZooKeeper 3.8's Fast Leader Election as a deterministic state machine
//! (SPEC §7).
//!
//! A configured ensemble of voters (each with a numeric server id, the *sid*) elects one
//! leader by majority. Every voter proposes a [`Vote`]; a vote beats another by peer epoch,
//! then zxid, then sid ([`Vote::beats`]). A voter adopts and re-broadcasts any better vote
//! it hears, and decides once a majority of the round agrees with its proposal and no better
//! vote arrives within the finalize wait. Peers that already decided (FOLLOWING/LEADING)
//! answer a LOOKING peer with their decision, so a newcomer joins an established ensemble
//! without a new round ("out of election" votes).
//!
//! [`ElectionCore`] does no I/O: the runtime feeds it received [`Notification`]s, timer
//! expiries and "the connection to the leader dropped", and drains notifications to send
//! ([`ElectionCore::poll_transmit`]), role changes ([`ElectionCore::poll_event`]) and the
//! next deadline ([`ElectionCore::poll_timeout`]). The messages are ZooKeeper's
//! ([`crate::wire::zookeeper`]), so a cohort voter takes part in a ZooKeeper election.
//!
//! [`Notification`]: crate::wire::zookeeper::Notification

mod core;
#[cfg(test)]
mod sim;

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;

pub use self::core::{ElectionCore, MAX_ELECTION_EPOCH};
pub use crate::wire::zookeeper::PeerState as Role;

/// A server id, as in ZooKeeper's `myid` (a Java `long`).
pub type Sid = i64;

/// What a voter proposes: a leader and the data that ranks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Vote {
    /// The proposed leader's sid.
    pub leader: Sid,
    /// The proposed leader's last zxid (epoch << 32 | counter).
    pub zxid: i64,
    /// The proposed leader's epoch.
    pub peer_epoch: i64,
}

impl Vote {
    /// ZooKeeper's `totalOrderPredicate`: a higher peer epoch wins, then a higher zxid, then
    /// a higher sid.
    pub fn beats(&self, other: &Self) -> bool {
        (self.peer_epoch, self.zxid, self.leader) > (other.peer_epoch, other.zxid, other.leader)
    }
}

/// Something the application wants to know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElectionEvent {
    /// This server's role changed (or, for LOOKING, a new round started).
    RoleChanged {
        /// The new role.
        role: Role,
        /// The leader followed or led; `None` while LOOKING.
        leader: Option<Sid>,
        /// The election epoch (round) the decision was made in.
        election_epoch: i64,
    },
}

/// The ensemble and the timing of one server's election.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ElectionConfig {
    /// This server's sid.
    pub sid: Sid,
    /// The voting members (may contain `sid`).
    pub voters: BTreeSet<Sid>,
    /// Non-voting observers (may contain `sid`): they learn the leader but never count.
    pub observers: BTreeSet<Sid>,
    /// The config string sent in every notification, in ZooKeeper's `QuorumVerifier`
    /// format (`server.N=host:quorumPort:electionPort:participant\n…version=0`). ZooKeeper
    /// only acts on it when its version is newer than its own.
    pub config: Bytes,
    /// How long a voter waits, once a majority agrees with its proposal, for a better vote.
    /// ZooKeeper waits 200 ms. cohort waits less: the wait only avoids electing a leader
    /// that a slow, better vote would replace at once; safety never depends on it, because
    /// a decision always needs a majority of the round and two majorities share a voter.
    pub finalize_wait: Duration,
    /// First resend interval of LOOKING notifications when no decision comes; doubles each
    /// time up to `max_notification_interval`.
    pub min_notification_interval: Duration,
    /// Longest resend interval of LOOKING notifications.
    pub max_notification_interval: Duration,
    /// A cohort leader re-sends its LEADING notification to every voter this often, so that
    /// followers notice a hung leader. ZooKeeper never does; harmless to it. A follower
    /// that has heard no LEADING notification for 1.5 times this asks the leader with a
    /// LOOKING notification (both kinds of leader answer it), and again every interval
    /// while the silence lasts.
    pub leader_heartbeat_interval: Duration,
    /// A follower that hears no LEADING notification from its leader (heartbeat, or answer
    /// to its question) for this long declares the leader lost; so does a follower that
    /// never hears from it after the decision. A leader that hears FOLLOWING answers from
    /// fewer than a majority for this long steps down.
    pub leader_silence_timeout: Duration,
}

impl ElectionConfig {
    /// A voter `sid` among `voters`, with cohort's default timing: cold start and failover
    /// well under ZooKeeper's, a hung leader replaced within about two seconds.
    pub fn new(sid: Sid, voters: impl IntoIterator<Item = Sid>) -> Self {
        Self {
            sid,
            voters: voters.into_iter().collect(),
            observers: BTreeSet::new(),
            config: Bytes::new(),
            finalize_wait: Duration::from_millis(40),
            min_notification_interval: Duration::from_millis(100),
            max_notification_interval: Duration::from_millis(1000),
            leader_heartbeat_interval: Duration::from_millis(250),
            leader_silence_timeout: Duration::from_millis(1500),
        }
    }

    /// How many voters make a majority.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }
}

crate::config_setters!(ElectionConfig {
    sid: Sid,
    voters: BTreeSet<Sid>,
    observers: BTreeSet<Sid>,
    [into] config: Bytes,
    finalize_wait: Duration,
    min_notification_interval: Duration,
    max_notification_interval: Duration,
    leader_heartbeat_interval: Duration,
    leader_silence_timeout: Duration,
});
