//! The member list kept by multicast heartbeats (SPEC §1, Tribes `McastService`).
//!
//! Every member multicasts its own [`MemberRecord`] every
//! [`frequency`](MembershipConfig::frequency); a member not heard from for
//! [`drop_time`](MembershipConfig::drop_time) disappears; a member that stops gracefully
//! sends one record with the shutdown command and its peers drop it at once.
//!
//! [`Membership`] is the state machine for one node. It never touches a socket or a clock:
//!
//! 1. feed it input: [`Membership::handle_datagram`] for every datagram received on the
//!    group, [`Membership::handle_timeout`] when the deadline from
//!    [`Membership::poll_timeout`] passes (early or spurious calls are harmless);
//! 2. drain its output: [`Membership::poll_transmit`] gives the datagrams to multicast,
//!    [`Membership::poll_event`] the changes to the member list;
//! 3. re-arm the timer from [`Membership::poll_timeout`].

mod member;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, trace};

pub use member::{InvalidMemberRecord, Member, MemberId};

use crate::wire::DecodeError;
use crate::wire::tribes::{MemberLimits, MemberRecord, SHUTDOWN_COMMAND};

/// Settings of the heartbeat protocol. `Default` gives Tribes' values.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MembershipConfig {
    /// How often the local member is multicast. Tribes: 500 ms.
    pub frequency: Duration,
    /// How long a member may stay silent before it is dropped. Tribes: 3000 ms.
    pub drop_time: Duration,
    /// Ignore members of other domains. Tomcat does not filter; cohort does by default,
    /// since a member of another cluster is never a peer to send to.
    pub domain_filter: bool,
    /// Bounds on the fields of received records.
    pub limits: MemberLimits,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self {
            frequency: Duration::from_millis(500),
            drop_time: Duration::from_millis(3000),
            domain_filter: true,
            limits: MemberLimits::default(),
        }
    }
}

/// Why a member left the member list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DisappearReason {
    /// Not heard from for the drop time.
    Timeout,
    /// It announced a graceful shutdown.
    Shutdown,
    /// A new member (new unique id) took over its address and port, so the old process is
    /// gone: it restarted.
    Restarted,
}

impl DisappearReason {
    /// A short lower-case name: `timeout`, `shutdown`, `restarted`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Shutdown => "shutdown",
            Self::Restarted => "restarted",
        }
    }
}

/// A change to the member list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipEvent {
    /// A member was heard for the first time. Emitted once per unique id.
    MemberAdded(Member),
    /// A member left the list. Only emitted for a member that was added before, once.
    MemberDisappeared {
        /// The member as last heard.
        member: Member,
        /// Why it left.
        reason: DisappearReason,
    },
}

/// Counters of what the membership receiver saw, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MembershipStats {
    /// Datagrams handled.
    pub received: u64,
    /// Valid heartbeats of other members of our domain.
    pub accepted: u64,
    /// Datagrams that did not decode, or announced an impossible member.
    pub malformed: u64,
    /// Heartbeats of members of another domain (dropped when filtering).
    pub foreign_domain: u64,
    /// Our own heartbeats, looped back by the network.
    pub own: u64,
    /// Heartbeats sent.
    pub sent: u64,
}

/// Why a datagram was not accepted. Each case is counted in [`MembershipStats`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DatagramError {
    /// It is not a valid member record.
    #[error("malformed member packet: {0}")]
    Malformed(#[from] DecodeError),
    /// The record decodes but describes a member no one can reach.
    #[error("member packet announces an invalid member: {0}")]
    InvalidMember(#[from] InvalidMemberRecord),
    /// The member belongs to another domain and filtering is on.
    #[error("member of another domain")]
    ForeignDomain,
}

struct Entry {
    member: Member,
    last_heard: Instant,
}

/// The member list of one node. See the [module docs](self) for the call order.
pub struct Membership {
    config: MembershipConfig,
    local: MemberRecord,
    local_member: Member,
    started: Instant,
    next_beat: Option<Instant>,
    members: HashMap<MemberId, Entry>,
    events: VecDeque<MembershipEvent>,
    transmits: VecDeque<Bytes>,
    stats: MembershipStats,
    last_accepted: Option<MemberId>,
}

impl Membership {
    /// A member list for the local member `local`, started at `now`. The first heartbeat
    /// is due at once. `local.alive_ms` is ignored: it is computed from `now` at each beat.
    pub fn new(config: MembershipConfig, local: MemberRecord, now: Instant) -> Self {
        let local_member =
            Member::from_record(&local).unwrap_or_else(|_| Member::unreachable(&local));
        Self {
            config,
            local,
            local_member,
            started: now,
            next_beat: Some(now),
            members: HashMap::new(),
            events: VecDeque::new(),
            transmits: VecDeque::new(),
            stats: MembershipStats::default(),
            last_accepted: None,
        }
    }

    /// The local member.
    pub fn local(&self) -> &Member {
        &self.local_member
    }

    /// The settings in use.
    pub fn config(&self) -> &MembershipConfig {
        &self.config
    }

    /// The members currently alive, excluding the local one, in no particular order.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values().map(|e| &e.member)
    }

    /// The member with this id, if it is in the list.
    pub fn member(&self, id: &MemberId) -> Option<&Member> {
        self.members.get(id).map(|e| &e.member)
    }

    /// Counters of what was received and sent.
    pub fn stats(&self) -> MembershipStats {
        self.stats
    }

    /// The local member's record as it would be sent at `now` (alive time filled in).
    pub fn local_record(&self, now: Instant) -> MemberRecord {
        let mut record = self.local.clone();
        record.alive_ms = now.saturating_duration_since(self.started).as_millis() as i64;
        record
    }

    /// Replaces the local member's payload; the next heartbeat carries it.
    pub fn set_payload(&mut self, payload: Bytes) {
        self.local.payload = payload.clone();
        self.local_member.payload = payload;
    }

    /// The member whose heartbeat the last call to
    /// [`handle_datagram`](Self::handle_datagram) accepted (not a shutdown announcement), if
    /// it accepted one: the proof of life other protocols (failure detection) listen for.
    pub fn last_accepted(&self) -> Option<&Member> {
        self.last_accepted.and_then(|id| self.member(&id))
    }

    /// Takes a new identity: from now on heartbeats carry `id`, and the alive time counts
    /// from `now`. Peers see a new member at our address, so they drop the old one as
    /// restarted. Used when the group removed this node and it rejoins.
    pub fn set_local_id(&mut self, id: MemberId, now: Instant) {
        self.local.unique_id = id.0;
        self.local_member.id = id;
        self.started = now;
        self.members.remove(&id);
        if self.next_beat.is_some() {
            self.next_beat = Some(now);
        }
    }

    /// Handles one datagram received on the multicast group.
    ///
    /// A datagram that is not accepted is counted and reported as an error; the member list
    /// is unchanged by it.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &Bytes) -> Result<(), DatagramError> {
        self.stats.received += 1;
        self.last_accepted = None;
        let record = match MemberRecord::decode(datagram, &self.config.limits) {
            Ok(record) => record,
            Err(e) => {
                self.stats.malformed += 1;
                return Err(e.into());
            }
        };
        let id = MemberId(record.unique_id);
        if id == self.local_member.id {
            self.stats.own += 1;
            return Ok(());
        }
        if record.domain != self.local.domain {
            self.stats.foreign_domain += 1;
            if self.config.domain_filter {
                return Err(DatagramError::ForeignDomain);
            }
        }
        let member = match Member::from_record(&record) {
            Ok(m) => m,
            Err(e) => {
                self.stats.malformed += 1;
                return Err(DatagramError::InvalidMember(e));
            }
        };
        self.stats.accepted += 1;
        if record.command.as_ref() == SHUTDOWN_COMMAND {
            if let Some(entry) = self.members.remove(&id) {
                debug!(member = %entry.member, "member announced shutdown");
                self.events.push_back(MembershipEvent::MemberDisappeared {
                    member: entry.member,
                    reason: DisappearReason::Shutdown,
                });
            }
            return Ok(());
        }
        self.last_accepted = Some(id);
        match self.members.get_mut(&id) {
            Some(entry) => {
                trace!(member = %member, "heartbeat");
                entry.last_heard = now;
                entry.member = member;
            }
            None => {
                // A new process on an address we still list means the old one is gone.
                let replaced: Vec<MemberId> = self
                    .members
                    .values()
                    .filter(|e| e.member.addr == member.addr)
                    .map(|e| e.member.id)
                    .collect();
                for old in replaced {
                    if let Some(entry) = self.members.remove(&old) {
                        debug!(old = %entry.member, new = %member, "member restarted");
                        self.events.push_back(MembershipEvent::MemberDisappeared {
                            member: entry.member,
                            reason: DisappearReason::Restarted,
                        });
                    }
                }
                debug!(member = %member, "member added");
                self.members.insert(
                    id,
                    Entry {
                        member: member.clone(),
                        last_heard: now,
                    },
                );
                self.events.push_back(MembershipEvent::MemberAdded(member));
                self.answer_newcomer(now);
            }
        }
        Ok(())
    }

    /// Advances the protocol to `now`: sends a heartbeat when one is due and drops the
    /// members whose drop time has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(due) = self.next_beat
            && due <= now
        {
            self.queue_heartbeat(now);
            // Keep the rhythm, but never queue a burst after a long pause.
            let mut next = due + self.config.frequency;
            if next <= now {
                next = now + self.config.frequency;
            }
            self.next_beat = Some(next);
        }
        let drop_time = self.config.drop_time;
        let mut expired: Vec<MemberId> = self
            .members
            .values()
            .filter(|e| e.last_heard + drop_time <= now)
            .map(|e| e.member.id)
            .collect();
        expired.sort();
        for id in expired {
            if let Some(entry) = self.members.remove(&id) {
                debug!(member = %entry.member, "member timed out");
                self.events.push_back(MembershipEvent::MemberDisappeared {
                    member: entry.member,
                    reason: DisappearReason::Timeout,
                });
            }
        }
    }

    /// Stops heartbeats and queues the shutdown announcement. Peers that receive it drop
    /// this member at once.
    pub fn shutdown(&mut self, now: Instant) {
        self.next_beat = None;
        let mut record = self.local_record(now);
        record.command = Bytes::from_static(SHUTDOWN_COMMAND);
        self.transmits.push_back(record.to_bytes());
        self.stats.sent += 1;
    }

    /// The next datagram to multicast to the group.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.transmits.pop_front()
    }

    /// The next change to the member list.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<MembershipEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let expiry = self
            .members
            .values()
            .map(|e| e.last_heard + self.config.drop_time)
            .min();
        match (self.next_beat, expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn queue_heartbeat(&mut self, now: Instant) {
        self.transmits.push_back(self.local_record(now).to_bytes());
        self.stats.sent += 1;
    }

    /// A newcomer has heard us only if our last beat came after it started listening.
    /// Beating again at once lets it see every member within one round trip instead of
    /// up to a whole interval later (Tribes: ~350 ms). It costs one extra datagram per
    /// member per newcomer, once; newcomers heard before the answer goes out share it.
    fn answer_newcomer(&mut self, now: Instant) {
        if self.next_beat.is_some_and(|next| next > now) {
            self.next_beat = Some(now);
        }
    }
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("local", &self.local_member)
            .field("members", &self.members.len())
            .field("stats", &self.stats)
            .finish()
    }
}

/// The address a member's TCP receiver listens on.
pub fn receiver_addr(record: &MemberRecord) -> Option<SocketAddr> {
    u16::try_from(record.tcp_port)
        .ok()
        .map(|p| SocketAddr::new(record.host, p))
}

#[cfg(test)]
mod tests;

crate::config_setters!(MembershipConfig {
    frequency: Duration,
    drop_time: Duration,
    domain_filter: bool,
    limits: MemberLimits,
});
