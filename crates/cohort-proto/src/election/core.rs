//! The Fast Leader Election state machine (`FastLeaderElection.lookForLeader` and its
//! receiver, `Messenger.WorkerReceiver`), without I/O.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use super::{ElectionConfig, ElectionEvent, Role, Sid, Vote};
use crate::wire::zookeeper::{CURRENT_VERSION, Notification};

/// The highest election epoch a notification may carry to be heard. Epochs count election
/// rounds: 2^62 of them, one a millisecond, take 146 million years, so a higher one is
/// forged, and adopting it would bring the clock within reach of wrapping.
pub const MAX_ELECTION_EPOCH: i64 = i64::MAX / 2;

/// A vote as heard from one peer in the current election.
#[derive(Debug, Clone, Copy)]
struct Heard {
    vote: Vote,
    election_epoch: i64,
    state: Role,
}

impl Heard {
    /// ZooKeeper's `Vote.equals`: while either side is LOOKING the whole vote and round must
    /// match; between decided peers the leader and its epoch are enough.
    fn agrees(&self, other: &Self) -> bool {
        if self.state == Role::Looking || other.state == Role::Looking {
            self.vote == other.vote && self.election_epoch == other.election_epoch
        } else {
            self.vote.leader == other.vote.leader && self.vote.peer_epoch == other.vote.peer_epoch
        }
    }
}

/// What a follower knows about its leader's liveness.
///
/// A cohort leader sends LEADING every heartbeat interval; a ZooKeeper leader sends
/// nothing after its decision, but answers every LOOKING notification with LEADING. So a
/// follower that has heard no LEADING for a heartbeat and a half asks (a LOOKING
/// notification with its decided vote, a duplicate to any peer still counting that round),
/// and again every heartbeat interval while the silence lasts. Either kind of leader is
/// lost once nothing came for the silence timeout: it hangs, or it is unreachable (our
/// decision can rest on votes heard before a partition).
#[derive(Debug, Clone, Copy, Default)]
struct LeaderWatch {
    /// The last LEADING notification from the leader since the decision, or the decision.
    heard: Option<Instant>,
    /// When to ask the leader next.
    probe_at: Option<Instant>,
}

impl LeaderWatch {
    /// Watching from `now` (the decision).
    fn from(now: Instant, cfg: &ElectionConfig) -> Self {
        let mut w = Self::default();
        w.heard_at(now, cfg);
        w
    }

    /// The leader was heard from at `now`.
    fn heard_at(&mut self, now: Instant, cfg: &ElectionConfig) {
        self.heard = Some(now);
        self.probe_at = Some(now + cfg.leader_heartbeat_interval * 3 / 2);
    }

    /// When the leader counts as lost.
    fn deadline(&self, silence: std::time::Duration) -> Option<Instant> {
        self.heard.map(|t| t + silence)
    }
}

/// One server's Fast Leader Election. See the [module docs](super).
#[derive(Debug)]
pub struct ElectionCore {
    cfg: ElectionConfig,
    zxid: i64,
    peer_epoch: i64,
    started: bool,
    role: Role,
    /// The round (ZooKeeper's `logicalclock`).
    logical_clock: i64,
    proposal: Vote,
    /// The decided vote and the round it was decided in.
    decided: Option<(Vote, i64)>,
    /// Votes of this round (`recvset`).
    round_votes: BTreeMap<Sid, Heard>,
    /// Decisions of peers already FOLLOWING/LEADING (`outofelection`).
    out_of_election: BTreeMap<Sid, Heard>,
    /// The last LOOKING notification of each peer heard while we were decided: a peer that
    /// noticed the leader's loss before us. Replayed when our own new round starts, so we
    /// need not wait for its next resend.
    heard_while_decided: BTreeMap<Sid, Heard>,
    finalize_at: Option<Instant>,
    resend_at: Option<Instant>,
    resend_interval: std::time::Duration,
    heartbeat_at: Option<Instant>,
    leading_since: Option<Instant>,
    follower_acks: BTreeMap<Sid, Instant>,
    leader_watch: LeaderWatch,
    transmits: VecDeque<(Sid, Notification)>,
    events: VecDeque<ElectionEvent>,
    dropped: u64,
}

impl ElectionCore {
    /// A server that has applied up to `zxid`; its epoch starts as the zxid's high 32 bits
    /// (ZooKeeper's convention). Call [`start`](Self::start) to begin the first round.
    pub fn new(cfg: ElectionConfig, zxid: i64) -> Self {
        let interval = cfg.min_notification_interval;
        let mut core = Self {
            cfg,
            zxid,
            peer_epoch: zxid >> 32,
            started: false,
            role: Role::Looking,
            logical_clock: 0,
            proposal: Vote {
                leader: Sid::MIN,
                zxid: i64::MIN,
                peer_epoch: i64::MIN,
            },
            decided: None,
            round_votes: BTreeMap::new(),
            out_of_election: BTreeMap::new(),
            heard_while_decided: BTreeMap::new(),
            finalize_at: None,
            resend_at: None,
            resend_interval: interval,
            heartbeat_at: None,
            leading_since: None,
            follower_acks: BTreeMap::new(),
            leader_watch: LeaderWatch::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            dropped: 0,
        };
        core.proposal = core.own_vote();
        core
    }

    /// Starts the first round.
    pub fn start(&mut self, now: Instant) {
        self.started = true;
        self.new_round(now);
    }

    /// The application's last applied position. Used by the next vote this server makes for
    /// itself; the epoch follows the zxid's high 32 bits when they grow.
    pub fn set_zxid(&mut self, zxid: i64) {
        self.zxid = zxid;
        self.peer_epoch = self.peer_epoch.max(zxid >> 32);
    }

    /// The runtime lost the connection to the leader (or it otherwise knows the leader is
    /// gone): a follower or observer starts a new round.
    pub fn leader_lost(&mut self, now: Instant) {
        if matches!(self.role, Role::Following | Role::Observing) {
            self.new_round(now);
        }
    }

    /// This server's sid.
    pub fn sid(&self) -> Sid {
        self.cfg.sid
    }

    /// The configuration.
    pub fn config(&self) -> &ElectionConfig {
        &self.cfg
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The leader followed or led, `None` while LOOKING.
    pub fn leader(&self) -> Option<Sid> {
        match self.role {
            Role::Looking => None,
            _ => self.decided.map(|(v, _)| v.leader),
        }
    }

    /// The current round (ZooKeeper's logical clock).
    pub fn election_epoch(&self) -> i64 {
        self.logical_clock
    }

    /// The vote this server currently proposes (while LOOKING) or decided.
    pub fn vote(&self) -> Vote {
        match (self.role, self.decided) {
            (Role::Looking, _) | (_, None) => self.proposal,
            (_, Some((v, _))) => v,
        }
    }

    /// Notifications dropped because they came from a sid outside the ensemble.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The next notification to send, and to whom.
    pub fn poll_transmit(&mut self) -> Option<(Sid, Notification)> {
        self.transmits.pop_front()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<ElectionEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) wants to be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let silence = match self.role {
            Role::Following | Role::Observing => {
                let w = &self.leader_watch;
                [w.deadline(self.cfg.leader_silence_timeout), w.probe_at]
                    .into_iter()
                    .flatten()
                    .min()
            }
            _ => None,
        };
        [self.finalize_at, self.resend_at, self.heartbeat_at, silence]
            .into_iter()
            .flatten()
            .min()
    }

    /// Timers: finalize a decision, resend LOOKING notifications, send the leader's
    /// heartbeat, notice a silent leader.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.started {
            return;
        }
        match self.role {
            Role::Looking => {
                if self.finalize_at.is_some_and(|t| t <= now) {
                    let (vote, epoch) = (self.proposal, self.logical_clock);
                    self.decide(now, vote, epoch);
                    return;
                }
                if self.resend_at.is_some_and(|t| t <= now) {
                    self.broadcast_proposal();
                    self.resend_interval =
                        (self.resend_interval * 2).min(self.cfg.max_notification_interval);
                    self.resend_at = Some(now + self.resend_interval);
                }
            }
            Role::Leading => {
                if self.heartbeat_at.is_some_and(|t| t <= now) {
                    if self.lost_majority(now) {
                        self.new_round(now);
                        return;
                    }
                    self.send_heartbeats();
                    self.heartbeat_at = Some(now + self.cfg.leader_heartbeat_interval);
                }
            }
            Role::Following | Role::Observing => {
                let deadline = self.leader_watch.deadline(self.cfg.leader_silence_timeout);
                if deadline.is_some_and(|t| t <= now) {
                    self.new_round(now);
                    return;
                }
                if self.leader_watch.probe_at.is_some_and(|t| t <= now) {
                    // See `LeaderWatch`: ask a silent leader whether it still leads.
                    if let Some((vote, epoch)) = self.decided {
                        self.send_to(vote.leader, Role::Looking, vote, epoch);
                    }
                    self.leader_watch.probe_at = Some(now + self.cfg.leader_heartbeat_interval);
                }
            }
        }
    }

    /// A notification received from `from`.
    pub fn handle_notification(&mut self, now: Instant, from: Sid, n: &Notification) {
        if !self.started {
            return;
        }
        if n.election_epoch > MAX_ELECTION_EPOCH {
            // No voter gets there by counting rounds; adopting it would bring our clock
            // within reach of wrapping. Dropped and counted.
            self.dropped += 1;
            return;
        }
        if !self.cfg.voters.contains(&from) {
            if self.cfg.observers.contains(&from) && n.state == Role::Looking {
                // An observer learns the leader from our answers; it never counts.
                self.reply(from);
            } else if !self.cfg.observers.contains(&from) {
                self.dropped += 1;
            }
            return;
        }
        let heard = Heard {
            vote: Vote {
                leader: n.leader,
                zxid: n.zxid,
                peer_epoch: n.peer_epoch,
            },
            election_epoch: n.election_epoch,
            state: n.state,
        };
        if self.role == Role::Looking {
            self.looking_receive(now, from, heard);
        } else {
            self.decided_receive(now, from, heard);
        }
    }

    fn looking_receive(&mut self, now: Instant, from: Sid, n: Heard) {
        match n.state {
            Role::Looking => {
                if n.election_epoch > self.logical_clock {
                    // A newer round: join it, starting again from the better of our own
                    // vote and the sender's.
                    self.logical_clock = n.election_epoch;
                    self.round_votes.clear();
                    self.finalize_at = None;
                    let own = self.own_vote();
                    self.proposal = if self.candidate(&n.vote) && n.vote.beats(&own) {
                        n.vote
                    } else {
                        own
                    };
                    self.broadcast_proposal();
                } else if n.election_epoch < self.logical_clock {
                    // A peer in an older round: tell it ours so it catches up.
                    self.send_to(from, Role::Looking, self.proposal, self.logical_clock);
                    return;
                } else if self.candidate(&n.vote) && n.vote.beats(&self.proposal) {
                    self.proposal = n.vote;
                    self.finalize_at = None;
                    self.broadcast_proposal();
                }
                self.round_votes.insert(from, n);
                self.check_round_quorum(now);
            }
            Role::Following | Role::Leading => {
                if !self.candidate(&n.vote) {
                    return;
                }
                if n.election_epoch == self.logical_clock {
                    self.round_votes.insert(from, n);
                    if self.has_quorum(&self.round_votes, &n)
                        && self.check_leader(&self.round_votes, n.vote.leader, n.election_epoch)
                    {
                        self.decide(now, n.vote, n.election_epoch);
                        return;
                    }
                }
                // Peers that already decided: a majority of them following one leader that
                // says it leads means the ensemble is established; join it.
                self.out_of_election.insert(from, n);
                if self.has_quorum(&self.out_of_election, &n)
                    && self.check_leader(&self.out_of_election, n.vote.leader, n.election_epoch)
                {
                    self.logical_clock = n.election_epoch;
                    self.decide(now, n.vote, n.election_epoch);
                }
            }
            Role::Observing => {}
        }
    }

    fn decided_receive(&mut self, now: Instant, from: Sid, n: Heard) {
        let Some((vote, epoch)) = self.decided else {
            return;
        };
        match n.state {
            Role::Looking => {
                if from == vote.leader && self.role != Role::Leading {
                    // Our leader is electing again: it restarted or stepped down.
                    self.new_round(now);
                    self.looking_receive(now, from, n);
                } else {
                    self.reply(from);
                    self.heard_while_decided.insert(from, n);
                }
            }
            Role::Leading => {
                if self.role == Role::Leading {
                    // Two leaders (a slow better vote split the round): the lesser one
                    // steps down and learns the other's decision from the answers.
                    let other_wins = (n.election_epoch, n.vote.peer_epoch, n.vote.zxid, from)
                        > (epoch, vote.peer_epoch, vote.zxid, self.cfg.sid);
                    if n.vote.leader == from && other_wins {
                        self.new_round(now);
                    }
                    return;
                }
                if from == vote.leader && n.vote.leader == from {
                    self.leader_watch.heard_at(now, &self.cfg);
                    if self.role == Role::Following {
                        // The ack a cohort leader counts to know it still has a majority.
                        self.send_to(from, Role::Following, vote, epoch);
                    }
                }
            }
            Role::Following => {
                if self.role == Role::Leading && n.vote.leader == self.cfg.sid {
                    self.follower_acks.insert(from, now);
                }
            }
            Role::Observing => {}
        }
    }

    /// Starts a new round: LOOKING, proposing ourselves.
    fn new_round(&mut self, now: Instant) {
        // Never wraps: epochs above MAX_ELECTION_EPOCH are never adopted, so the clock
        // would need 2^62 rounds more to reach the maximum (and would then stay there).
        self.logical_clock = self.logical_clock.saturating_add(1);
        self.role = Role::Looking;
        self.decided = None;
        self.proposal = self.own_vote();
        self.round_votes.clear();
        self.out_of_election.clear();
        self.finalize_at = None;
        self.heartbeat_at = None;
        self.leading_since = None;
        self.follower_acks.clear();
        self.leader_watch = LeaderWatch::default();
        self.resend_interval = self.cfg.min_notification_interval;
        self.resend_at = Some(now + self.resend_interval);
        self.events.push_back(ElectionEvent::RoleChanged {
            role: Role::Looking,
            leader: None,
            election_epoch: self.logical_clock,
        });
        self.broadcast_proposal();
        self.check_round_quorum(now);
        // Votes that came before our round began, as if delivered late (which FLE allows).
        for (from, n) in std::mem::take(&mut self.heard_while_decided) {
            if self.role != Role::Looking {
                break;
            }
            self.looking_receive(now, from, n);
        }
    }

    fn decide(&mut self, now: Instant, vote: Vote, election_epoch: i64) {
        self.role = if vote.leader == self.cfg.sid {
            Role::Leading
        } else if self.cfg.voters.contains(&self.cfg.sid) {
            Role::Following
        } else {
            Role::Observing
        };
        self.decided = Some((vote, election_epoch));
        self.heard_while_decided.clear();
        self.finalize_at = None;
        self.resend_at = None;
        self.leader_watch = LeaderWatch::from(now, &self.cfg);
        self.follower_acks.clear();
        if self.role == Role::Leading {
            self.leading_since = Some(now);
            // Tell everyone at once: LOOKING peers join on a majority of decided answers.
            self.send_heartbeats();
            self.heartbeat_at = Some(now + self.cfg.leader_heartbeat_interval);
        }
        self.events.push_back(ElectionEvent::RoleChanged {
            role: self.role,
            leader: Some(vote.leader),
            election_epoch,
        });
    }

    /// A leader that, for a whole silence timeout, heard FOLLOWING answers from fewer than a
    /// majority (itself included) is cut off or was out-voted.
    fn lost_majority(&self, now: Instant) -> bool {
        let timeout = self.cfg.leader_silence_timeout;
        let Some(since) = self.leading_since else {
            return false;
        };
        if now < since + timeout {
            return false;
        }
        let recent = self
            .follower_acks
            .values()
            .filter(|&&t| t + timeout > now)
            .count();
        let me = usize::from(self.cfg.voters.contains(&self.cfg.sid));
        recent + me < self.cfg.quorum()
    }

    fn check_round_quorum(&mut self, now: Instant) {
        if self.cfg.voters.contains(&self.cfg.sid) {
            let own = Heard {
                vote: self.proposal,
                election_epoch: self.logical_clock,
                state: Role::Looking,
            };
            self.round_votes.insert(self.cfg.sid, own);
        }
        let target = Heard {
            vote: self.proposal,
            election_epoch: self.logical_clock,
            state: Role::Looking,
        };
        if self.has_quorum(&self.round_votes, &target) {
            if self.finalize_at.is_none() {
                self.finalize_at = Some(now + self.cfg.finalize_wait);
            }
        } else {
            self.finalize_at = None;
        }
    }

    fn has_quorum(&self, votes: &BTreeMap<Sid, Heard>, target: &Heard) -> bool {
        let agreeing = votes
            .iter()
            .filter(|(sid, h)| self.cfg.voters.contains(sid) && h.agrees(target))
            .count();
        agreeing >= self.cfg.quorum()
    }

    /// ZooKeeper's `checkLeader`: follow another server only if it says it leads; lead only
    /// if the decision was made in our own round.
    fn check_leader(&self, votes: &BTreeMap<Sid, Heard>, leader: Sid, election_epoch: i64) -> bool {
        if leader == self.cfg.sid {
            self.logical_clock == election_epoch
        } else {
            votes.get(&leader).is_some_and(|h| h.state == Role::Leading)
        }
    }

    /// Only voters can be elected (a vote for anyone else has weight 0 in ZooKeeper).
    fn candidate(&self, vote: &Vote) -> bool {
        self.cfg.voters.contains(&vote.leader)
    }

    fn own_vote(&self) -> Vote {
        if self.cfg.voters.contains(&self.cfg.sid) {
            Vote {
                leader: self.cfg.sid,
                zxid: self.zxid,
                peer_epoch: self.peer_epoch,
            }
        } else {
            // An observer's vote loses to any voter's (ZooKeeper's `Long.MIN_VALUE`).
            Vote {
                leader: Sid::MIN,
                zxid: i64::MIN,
                peer_epoch: i64::MIN,
            }
        }
    }

    fn broadcast_proposal(&mut self) {
        let me = self.cfg.sid;
        let voters: Vec<Sid> = self.cfg.voters.iter().copied().collect();
        for to in voters.into_iter().filter(|&s| s != me) {
            self.send_to(to, Role::Looking, self.proposal, self.logical_clock);
        }
    }

    fn send_heartbeats(&mut self) {
        let Some((vote, epoch)) = self.decided else {
            return;
        };
        let peers: Vec<Sid> = self
            .cfg
            .voters
            .iter()
            .chain(self.cfg.observers.iter())
            .copied()
            .filter(|&s| s != self.cfg.sid)
            .collect();
        for to in peers {
            self.send_to(to, Role::Leading, vote, epoch);
        }
    }

    /// Answers a peer with our current state: the decision, or the proposal while LOOKING.
    fn reply(&mut self, to: Sid) {
        match self.decided {
            Some((vote, epoch)) if self.role != Role::Looking => {
                self.send_to(to, self.role, vote, epoch)
            }
            _ => self.send_to(to, Role::Looking, self.proposal, self.logical_clock),
        }
    }

    fn send_to(&mut self, to: Sid, state: Role, vote: Vote, election_epoch: i64) {
        self.transmits.push_back((
            to,
            Notification {
                state,
                leader: vote.leader,
                zxid: vote.zxid,
                election_epoch,
                peer_epoch: vote.peer_epoch,
                version: CURRENT_VERSION,
                config: self.cfg.config.clone(),
            },
        ));
    }
}
