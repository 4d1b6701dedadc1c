//! The group state machine of one node.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tracing::{debug, info};

use super::view::{GroupMember, View, ViewId};
use crate::membership::MemberId;
use crate::wire::cohort::{GroupLimits, GroupMessage};

/// Settings of the group protocol. `Default` gives cohort's defaults, chosen so that a hung
/// member is removed within 3 s and a crashed one within a round trip (see SPEC §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// The cluster name. Join requests of other clusters are ignored.
    pub cluster: Bytes,
    /// How long a starting node listens for other nodes before it forms a group of its
    /// own. A running coordinator answers a newcomer's first heartbeat at once, so this only
    /// bounds how long the very first member waits.
    pub discovery_wait: Duration,
    /// How long a joiner waits for its view before asking again.
    pub join_retry: Duration,
    /// How long the coordinator gathers changes before installing a view, so joins that
    /// arrive together share one view.
    pub batch_delay: Duration,
    /// How often the coordinator re-sends a view to members that have not acknowledged it.
    pub install_retry: Duration,
    /// How long the coordinator waits for acknowledgements before it may install the next
    /// view anyway.
    pub install_timeout: Duration,
    /// A member not heard from for this long is suspected.
    pub suspect_after: Duration,
    /// How often a suspicion is repeated while it lasts.
    pub suspect_resend: Duration,
    /// How long a received suspicion counts as a witness statement.
    pub accusation_ttl: Duration,
    /// How many members besides the accuser must agree before a suspect is removed (fewer
    /// when the view has fewer members to ask).
    pub witnesses: usize,
    /// How often the failure detector looks at the clock.
    pub tick: Duration,
    /// A tick that fires this much later than planned means this process is starved (a
    /// pause, a stalled VM): it then holds back its suspicions for `suspect_after`, since it
    /// cannot tell silence of others from its own slowness (Lifeguard's local health).
    pub starvation_threshold: Duration,
    /// How often a coordinator invites a node it hears but that is not in its view.
    pub probe_interval: Duration,
    /// Check the host of a suspect (Coherence's IpMonitor): the member deciding on a
    /// suspect asks the runtime to reach the suspect's host ([`Group::poll_host_check`]).
    /// A host that answers but has nothing listening proves the process dead (removed at
    /// once); a host that does not answer counts as one more witness. Off by default.
    pub host_check: bool,
    /// Bounds on received messages.
    pub limits: GroupLimits,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            cluster: Bytes::new(),
            discovery_wait: Duration::from_millis(150),
            join_retry: Duration::from_millis(500),
            batch_delay: Duration::from_millis(10),
            install_retry: Duration::from_millis(200),
            install_timeout: Duration::from_millis(1500),
            suspect_after: Duration::from_millis(1700),
            suspect_resend: Duration::from_millis(200),
            accusation_ttl: Duration::from_millis(600),
            witnesses: 2,
            tick: Duration::from_millis(100),
            starvation_threshold: Duration::from_millis(300),
            probe_interval: Duration::from_millis(1000),
            host_check: false,
            limits: GroupLimits::default(),
        }
    }
}

/// What the application learns from the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupEvent {
    /// A new view was installed here.
    ViewInstalled(View),
    /// This node was removed from its group (or gave its group up to merge into a bigger
    /// one) and starts over under a new id. The runtime must announce the new id in its
    /// heartbeats from now on.
    Rejoined {
        /// The id it had.
        old: MemberId,
        /// The id it has now.
        new: MemberId,
    },
}

/// Counters of the group protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupStats {
    /// Views installed here.
    pub views_installed: u64,
    /// Views this node created as coordinator.
    pub views_created: u64,
    /// Messages handled.
    pub messages: u64,
    /// Join requests of another cluster, ignored.
    pub foreign_cluster: u64,
    /// Suspicions this node raised.
    pub suspicions_sent: u64,
    /// Suspicions held back because this node was starved.
    pub suspicions_held_back: u64,
    /// Members this node removed as coordinator, after witnesses agreed or a ring
    /// connection closed.
    pub removals: u64,
    /// Times this node rejoined under a new id.
    pub rejoins: u64,
    /// Host checks asked for (see [`GroupConfig::host_check`]).
    pub host_checks: u64,
}

/// What a host check found (see [`GroupConfig::host_check`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostCheck {
    /// Something listens at the member's address: the process exists (maybe hung).
    Alive,
    /// The host answered, but nothing listens there: the process is gone.
    ProcessGone,
    /// The host did not answer: down, or cut off from us.
    Unreachable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Listening for other nodes until the deadline.
    Discovering { until: Instant },
    /// Waiting for the view from `target`.
    Joining {
        target: GroupMember,
        retry_at: Instant,
    },
    /// In a view.
    Member,
    /// Left gracefully; ignores everything.
    Left,
}

/// A cohort node of our cluster that discovery told us about.
#[derive(Debug, Clone)]
struct Known {
    member: GroupMember,
    last_heard: Instant,
    next_probe: Instant,
}

/// A view being installed by this node as coordinator.
#[derive(Debug)]
struct Install {
    view: View,
    /// Members (and removed members) that have not acknowledged it.
    unacked: HashSet<MemberId>,
    /// Removed members told about it; they never acknowledge, and are told only a few times.
    removed: Vec<GroupMember>,
    next_resend: Instant,
    give_up: Instant,
}

/// The group protocol of one node: views, join and leave, failure detection with witnesses,
/// coordinator takeover, rejoin and merge. Sans-IO: see the [module docs](super).
pub struct Group {
    config: GroupConfig,
    local: GroupMember,
    rng: SmallRng,
    phase: Phase,
    view: Option<View>,
    /// The largest view sequence number seen anywhere.
    max_seq: u64,
    /// When each member of the current view entered it (here), so a new member is not
    /// suspected before it could be heard.
    in_view_since: HashMap<MemberId, Instant>,
    known: HashMap<MemberId, Known>,
    /// Members this node suspects, with when to repeat the suspicion.
    suspecting: HashMap<MemberId, Instant>,
    /// Suspicions received (and raised) per suspect: accuser → when.
    accusations: HashMap<MemberId, HashMap<MemberId, Instant>>,
    /// Members confirmed gone (dead, left or suspected by enough witnesses), waiting for
    /// the view that removes them.
    gone: HashSet<MemberId>,
    /// Joiners waiting for the next view.
    pending_joins: Vec<GroupMember>,
    /// A view must be installed even without joins or removals (e.g. to renumber it).
    reinstall: bool,
    batch_due: Option<Instant>,
    install: Option<Install>,
    next_tick: Instant,
    starved_until: Option<Instant>,
    last_starved: Option<Instant>,
    next_gone_report: Instant,
    /// Suspects whose host is to be checked, and suspects whose host did not answer.
    host_checks: VecDeque<GroupMember>,
    host_checked: HashSet<MemberId>,
    host_down: HashMap<MemberId, Instant>,
    /// When to ask the witnesses about each suspect again.
    next_verify: HashMap<MemberId, Instant>,
    /// As coordinator: members that have not acknowledged the current view, with when to
    /// send it to them again.
    lagging: HashMap<MemberId, Instant>,
    transmits: VecDeque<(GroupMember, GroupMessage)>,
    events: VecDeque<GroupEvent>,
    stats: GroupStats,
}

impl Group {
    /// A node `local` starting at `now`. It listens for other nodes for
    /// [`discovery_wait`](GroupConfig::discovery_wait), then joins the oldest one it heard,
    /// or forms a group of one. `seed` seeds the random ids it takes when it rejoins.
    pub fn new(config: GroupConfig, local: GroupMember, now: Instant, seed: u64) -> Self {
        let phase = Phase::Discovering {
            until: now + config.discovery_wait,
        };
        Self {
            next_tick: now,
            config,
            local,
            rng: SmallRng::seed_from_u64(seed),
            phase,
            view: None,
            max_seq: 0,
            in_view_since: HashMap::new(),
            known: HashMap::new(),
            suspecting: HashMap::new(),
            accusations: HashMap::new(),
            gone: HashSet::new(),
            pending_joins: Vec::new(),
            reinstall: false,
            batch_due: None,
            install: None,
            starved_until: None,
            last_starved: None,
            next_gone_report: now,
            host_checks: VecDeque::new(),
            host_checked: HashSet::new(),
            host_down: HashMap::new(),
            next_verify: HashMap::new(),
            lagging: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: GroupStats::default(),
        }
    }

    /// This node as views list it (its id changes when it rejoins).
    pub fn local(&self) -> GroupMember {
        self.local
    }

    /// The view installed here, if any.
    pub fn view(&self) -> Option<&View> {
        self.view.as_ref()
    }

    /// True if this node is the coordinator of its view.
    pub fn is_coordinator(&self) -> bool {
        self.view
            .as_ref()
            .and_then(View::coordinator)
            .is_some_and(|c| c.id == self.local.id)
    }

    /// The settings in use.
    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> GroupStats {
        self.stats
    }

    /// The member whose process this node watches with a TCP connection (its successor in
    /// the view's ring). When that connection closes abnormally the runtime calls
    /// [`link_closed`](Self::link_closed).
    pub fn watched(&self) -> Option<GroupMember> {
        self.view.as_ref()?.successor(&self.local.id).copied()
    }

    /// A heartbeat of a cohort node of our cluster arrived (discovery of a new node, or
    /// proof of life of a known one).
    pub fn heard_from(&mut self, member: GroupMember, now: Instant) {
        if member.id == self.local.id || self.phase == Phase::Left {
            return;
        }
        let new = !self.known.contains_key(&member.id);
        let entry = self.known.entry(member.id).or_insert(Known {
            member,
            last_heard: now,
            next_probe: now,
        });
        entry.member = member;
        entry.last_heard = now;
        if self.suspecting.remove(&member.id).is_some() {
            debug!(member = %member.id, "suspicion cleared: heard again");
        }
        // A coordinator invites a newcomer at once: a joiner then needs no discovery wait.
        if new && self.is_coordinator() && !self.view_contains(&member.id) {
            self.probe_outsiders(now);
        }
    }

    /// `id` announced a graceful shutdown (Tribes' shutdown beat): like a `Leave`.
    pub fn member_left(&mut self, id: MemberId, now: Instant) {
        self.known.remove(&id);
        self.handle_gone(id, now);
    }

    /// `id`'s process is certainly gone: its address now belongs to a new process, or
    /// the ring connection to it closed. Removed without witnesses.
    pub fn member_dead(&mut self, id: MemberId, now: Instant) {
        self.known.remove(&id);
        if !self.view_contains(&id) {
            return;
        }
        match self.responsible_for(&id) {
            Some(r) if r.id == self.local.id => self.handle_gone(id, now),
            Some(r) => self.send(r, GroupMessage::Dead { member: id }),
            None => {}
        }
    }

    /// The ring connection to `id` closed without a goodbye: the process died.
    pub fn link_closed(&mut self, id: MemberId, now: Instant) {
        debug!(member = %id, "ring connection closed");
        self.member_dead(id, now);
    }

    /// Leaves the group gracefully: the coordinator (or, if this node is the coordinator,
    /// the next oldest member) installs a view without it at once.
    pub fn leave(&mut self, now: Instant) {
        let _ = now;
        if let Some(view) = &self.view {
            let target = view.members.iter().find(|m| m.id != self.local.id).copied();
            let coordinator = view.coordinator().copied();
            let to = match coordinator {
                Some(c) if c.id != self.local.id => Some(c),
                _ => target,
            };
            if let Some(to) = to {
                self.send(
                    to,
                    GroupMessage::Leave {
                        member: self.local.id,
                    },
                );
            }
        }
        self.phase = Phase::Left;
        self.install = None;
    }

    /// Handles one message from `from`.
    pub fn handle_message(&mut self, from: GroupMember, message: GroupMessage, now: Instant) {
        if self.phase == Phase::Left {
            return;
        }
        self.stats.messages += 1;
        self.heard_from(from, now);
        match message {
            GroupMessage::JoinRequest { joiner, cluster } => {
                self.on_join_request(joiner, &cluster, now)
            }
            GroupMessage::ViewInstall { view } => self.on_view_install(from, view, now),
            GroupMessage::ViewAck { view_id } => {
                if let Some(install) = &mut self.install
                    && install.view.id == view_id
                {
                    install.unacked.remove(&from.id);
                }
                if self.view.as_ref().is_some_and(|v| v.id == view_id) {
                    self.lagging.remove(&from.id);
                }
                self.maybe_install(now);
            }
            GroupMessage::Stale { seq } => {
                // The sender's view is older than ours: help it catch up (a view is the same
                // whoever passes it on; a lost install otherwise leaves it behind for good).
                if let Some(view) = &self.view
                    && seq < view.id.seq
                    && view.contains(&from.id)
                {
                    let view = view.clone();
                    self.send(from, GroupMessage::ViewInstall { view });
                }
                if seq >= self.max_seq && self.is_coordinator() {
                    debug!(seq, from = %from.id, "a member has a later view: renumbering");
                    self.reinstall = true;
                    self.install = None;
                    self.schedule_batch(now);
                }
                self.max_seq = self.max_seq.max(seq);
                self.maybe_install(now);
            }
            GroupMessage::Leave { member } => {
                if member == from.id {
                    self.known.remove(&member);
                }
                self.handle_gone(member, now);
            }
            GroupMessage::Suspect { .. }
            | GroupMessage::Dead { .. }
            | GroupMessage::VerifySuspect { .. }
                if self.phase == Phase::Member && !self.view_contains(&from.id) =>
            {
                // The sender counts us in its group, but we are not in each other's views
                // any more: tell it, so it stops waiting for us to decide.
                self.send(
                    from,
                    GroupMessage::Leave {
                        member: self.local.id,
                    },
                );
            }
            GroupMessage::Suspect { member, view_seq } => {
                // The accuser has a later view than ours: say so, it sends it to us.
                if let Some(view) = &self.view
                    && view_seq > view.id.seq
                {
                    let seq = view.id.seq;
                    self.send(from, GroupMessage::Stale { seq });
                }
                self.max_seq = self.max_seq.max(view_seq);
                self.accusations
                    .entry(member)
                    .or_default()
                    .insert(from.id, now);
                self.evaluate_accusations(now);
            }
            GroupMessage::Dead { member } => {
                if self.view_contains(&member) {
                    self.handle_gone(member, now);
                }
            }
            GroupMessage::VerifySuspect { member } => {
                // Testify only to what we see ourselves, and not while we are starved.
                if self.suspecting.contains_key(&member) && !self.starved(now) {
                    let view_seq = self.view.as_ref().map_or(0, |v| v.id.seq);
                    self.send(from, GroupMessage::Suspect { member, view_seq });
                }
            }
            GroupMessage::MergeProbe { view_id, size } => self.on_probe(from, view_id, size, now),
        }
    }

    /// Advances timers: discovery, join retries, failure detection, view installation.
    /// Early or spurious calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Left {
            return;
        }
        if now >= self.next_tick {
            let late = now.saturating_duration_since(self.next_tick);
            if late > self.config.starvation_threshold {
                info!(
                    late_ms = late.as_millis() as u64,
                    "timer fired late: holding suspicions back"
                );
                self.starved_until = Some(now + self.config.suspect_after);
                self.last_starved = Some(now);
                // Whatever we suspected before the stall is not evidence.
                self.suspecting.clear();
            }
            self.next_tick = now + self.config.tick;
            self.tick(now);
        }
        self.maybe_install(now);
    }

    /// The next message to send, with its destination.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<(GroupMember, GroupMessage)> {
        self.transmits.pop_front()
    }

    /// The next host to check (only with [`GroupConfig::host_check`]): answer with
    /// [`host_check_result`](Self::host_check_result).
    #[must_use]
    pub fn poll_host_check(&mut self) -> Option<GroupMember> {
        self.host_checks.pop_front()
    }

    /// The outcome of a host check asked for by [`poll_host_check`](Self::poll_host_check).
    pub fn host_check_result(&mut self, id: MemberId, result: HostCheck, now: Instant) {
        debug!(member = %id, ?result, "host check");
        match result {
            HostCheck::Alive => {}
            HostCheck::ProcessGone => self.member_dead(id, now),
            HostCheck::Unreachable => {
                self.host_down.insert(id, now);
                self.evaluate_accusations(now);
            }
        }
    }

    /// The next event for the application.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<GroupEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase == Phase::Left {
            return None;
        }
        let mut next = self.next_tick;
        if let Some(due) = self.batch_due
            && self.install.is_none()
            && (self.is_coordinator() || self.is_acting_coordinator())
        {
            next = next.min(due);
        }
        if let Some(install) = &self.install {
            next = next.min(install.next_resend).min(install.give_up);
        }
        Some(next)
    }

    // ---- joining ----

    fn on_join_request(&mut self, joiner: GroupMember, cluster: &[u8], now: Instant) {
        if cluster != self.config.cluster.as_ref() {
            self.stats.foreign_cluster += 1;
            return;
        }
        if joiner.id == self.local.id {
            return;
        }
        match self.phase {
            Phase::Member if self.is_coordinator() || self.is_acting_coordinator() => {
                if self.view_contains(&joiner.id) {
                    // It lost its view: send it again.
                    if let Some(view) = self.view.clone() {
                        self.send(joiner, GroupMessage::ViewInstall { view });
                    }
                } else if !self.pending_joins.iter().any(|j| j.id == joiner.id) {
                    debug!(joiner = %joiner.id, "join request");
                    self.pending_joins.push(joiner);
                    self.schedule_batch(now);
                }
            }
            Phase::Member => {
                if let Some(c) = self.view.as_ref().and_then(View::coordinator).copied() {
                    self.send(
                        c,
                        GroupMessage::JoinRequest {
                            joiner,
                            cluster: self.config.cluster.clone(),
                        },
                    );
                }
            }
            Phase::Discovering { .. } | Phase::Joining { .. } => {
                // Not in a group yet: the node with the smallest id anyone knows forms it.
                // If we know of none smaller than ourselves, that is us.
                if self.seed_candidate(now).is_none() {
                    self.form_singleton(now);
                    self.on_join_request(joiner, cluster, now);
                }
            }
            Phase::Left => {}
        }
    }

    /// The node a group-less node should join: the known node with the smallest id, if
    /// it is smaller than ours. Ids, unlike start times estimated from heartbeats, order
    /// nodes the same way everywhere, so nodes started together pick the same seed. (A
    /// node that is already in a group invites newcomers itself, before this matters.)
    fn seed_candidate(&self, now: Instant) -> Option<GroupMember> {
        self.known
            .values()
            .filter(|k| {
                k.member.id < self.local.id
                    && now.saturating_duration_since(k.last_heard) < self.config.suspect_after
            })
            .min_by_key(|k| k.member.id)
            .map(|k| k.member)
    }

    fn form_singleton(&mut self, now: Instant) {
        self.max_seq += 1;
        let view = View {
            id: ViewId {
                seq: self.max_seq,
                coordinator: self.local.id,
            },
            members: vec![self.local],
        };
        debug!(view = %view.id, "forming a group of one");
        self.stats.views_created += 1;
        self.install_locally(view, now);
    }

    fn start_join(&mut self, target: GroupMember, now: Instant) {
        self.phase = Phase::Joining {
            target,
            retry_at: now + self.config.join_retry,
        };
        self.send(
            target,
            GroupMessage::JoinRequest {
                joiner: self.local,
                cluster: self.config.cluster.clone(),
            },
        );
    }

    fn discovery_over(&mut self, now: Instant) {
        match self.seed_candidate(now) {
            Some(target) => self.start_join(target, now),
            None => self.form_singleton(now),
        }
    }

    /// A coordinator invites us, or tells a member it is not in its view.
    fn on_probe(&mut self, from: GroupMember, view_id: ViewId, size: u32, now: Instant) {
        self.max_seq = self.max_seq.max(view_id.seq);
        match self.phase {
            Phase::Discovering { .. } => self.start_join(from, now),
            Phase::Joining { target, .. } => {
                if target.id == from.id {
                    return;
                }
                // Our target has not answered yet; the prober certainly has a group.
                self.start_join(from, now);
            }
            Phase::Member => {
                let Some(view) = &self.view else { return };
                if view.contains(&from.id) {
                    // It coordinates a view without us. Either its group went on without
                    // us (we were removed: its view is newer and it is our coordinator, or
                    // holds a majority of ours, or we know we were stalled), or it split off
                    // (a node cut off alone forms a group of one): then it is gone from ours.
                    let newer = view_id.seq > view.id.seq;
                    let majority = u64::from(size) * 2 > view.members.len() as u64;
                    let ours = view.coordinator().is_some_and(|c| c.id == from.id);
                    if newer && (ours || majority || self.recently_starved(now)) {
                        info!(coordinator = %from.id, "removed from the group: rejoining");
                        self.rejoin(Some(from), now);
                    } else {
                        self.handle_gone(from.id, now);
                    }
                    return;
                }
                // Another group. The smaller one dissolves into the bigger one (equal sizes:
                // the one whose coordinator has the larger id).
                let mine = (
                    view.members.len() as u64,
                    std::cmp::Reverse(view.id.coordinator),
                );
                let theirs = (u64::from(size), std::cmp::Reverse(view_id.coordinator));
                if theirs > mine {
                    info!(other = %view_id, "merging into a bigger group");
                    let leave_to = match view.coordinator().copied() {
                        Some(c) if c.id != self.local.id => Some(c),
                        _ => view.members.get(1).copied(),
                    };
                    if let Some(to) = leave_to {
                        self.send(
                            to,
                            GroupMessage::Leave {
                                member: self.local.id,
                            },
                        );
                    }
                    self.rejoin(Some(from), now);
                }
            }
            Phase::Left => {}
        }
    }

    /// Starts over under a new id: we were removed, or our group merges into another.
    fn rejoin(&mut self, target: Option<GroupMember>, now: Instant) {
        let old = self.local.id;
        let new = MemberId::random(&mut self.rng);
        self.local.id = new;
        self.view = None;
        self.in_view_since.clear();
        self.suspecting.clear();
        self.accusations.clear();
        self.gone.clear();
        self.pending_joins.clear();
        self.install = None;
        self.lagging.clear();
        self.batch_due = None;
        self.reinstall = false;
        self.stats.rejoins += 1;
        self.events.push_back(GroupEvent::Rejoined { old, new });
        match target {
            Some(t) => self.start_join(t, now),
            None => {
                self.phase = Phase::Discovering {
                    until: now + self.config.discovery_wait,
                }
            }
        }
    }

    // ---- views ----

    fn on_view_install(&mut self, from: GroupMember, view: View, now: Instant) {
        self.max_seq = self.max_seq.max(view.id.seq);
        let current = self.view.as_ref().map(|v| v.id);
        if current == Some(view.id) {
            self.send(from, GroupMessage::ViewAck { view_id: view.id });
            return;
        }
        if !view.contains(&self.local.id) {
            // A view without us. We were removed if it comes from our coordinator, or from
            // another member of our view while we know we were stalled (then a member that
            // took over removed us). A member cut off alone that made a group of one must
            // not evict us, so anything else is ignored.
            let from_coordinator = self
                .view
                .as_ref()
                .and_then(View::coordinator)
                .is_some_and(|c| c.id == from.id);
            let ours = self.view.as_ref().is_some_and(|v| v.contains(&from.id));
            let removed = from_coordinator || (ours && self.recently_starved(now));
            if self.phase == Phase::Member && removed && current.is_none_or(|c| view.id.seq > c.seq)
            {
                info!(view = %view.id, "a view without us: rejoining");
                self.rejoin(Some(from), now);
            }
            return;
        }
        if let Some(cur) = current {
            if view.id.seq <= cur.seq {
                self.send(from, GroupMessage::Stale { seq: cur.seq });
                return;
            }
            // A view of another group (its coordinator is a stranger to ours): decline.
            let mine = self.view.as_ref().expect("current view");
            if !mine.contains(&view.id.coordinator) {
                debug!(view = %view.id, "declined a view of another group");
                self.send(
                    from,
                    GroupMessage::Leave {
                        member: self.local.id,
                    },
                );
                return;
            }
        } else if let Phase::Joining { .. } | Phase::Discovering { .. } = self.phase {
            // Any coordinator that admits us is fine.
        }
        self.send(from, GroupMessage::ViewAck { view_id: view.id });
        self.install_locally(view, now);
    }

    fn install_locally(&mut self, view: View, now: Instant) {
        self.max_seq = self.max_seq.max(view.id.seq);
        let since: HashMap<MemberId, Instant> = view
            .members
            .iter()
            .map(|m| (m.id, self.in_view_since.get(&m.id).copied().unwrap_or(now)))
            .collect();
        self.in_view_since = since;
        for m in &view.members {
            self.known.entry(m.id).or_insert(Known {
                member: *m,
                last_heard: now,
                next_probe: now,
            });
        }
        self.suspecting.retain(|id, _| view.contains(id));
        self.accusations.retain(|id, _| view.contains(id));
        self.gone.retain(|id| view.contains(id));
        self.pending_joins.retain(|j| !view.contains(&j.id));
        self.phase = Phase::Member;
        self.stats.views_installed += 1;
        debug!(view = %view.id, members = view.members.len(), "view installed");
        self.view = Some(view.clone());
        self.events.push_back(GroupEvent::ViewInstalled(view));
    }

    fn schedule_batch(&mut self, now: Instant) {
        if self.batch_due.is_none() {
            self.batch_due = Some(now + self.config.batch_delay);
        }
    }

    /// As coordinator (or the member taking over from a dead one): installs the next view
    /// when changes are pending, the batch delay has passed and the previous view is
    /// acknowledged or timed out.
    fn maybe_install(&mut self, now: Instant) {
        if self.phase != Phase::Member {
            return;
        }
        if let Some(install) = &mut self.install {
            if install.unacked.is_empty() || install.give_up <= now {
                // Members that did not acknowledge keep being sent the view, less often,
                // while the next view may go ahead.
                let resend = now + self.config.install_timeout;
                self.lagging = install.unacked.iter().map(|id| (*id, resend)).collect();
                self.install = None;
            } else if install.next_resend <= now {
                install.next_resend = now + self.config.install_retry;
                let view = install.view.clone();
                let targets: Vec<GroupMember> = view
                    .members
                    .iter()
                    .chain(install.removed.iter())
                    .filter(|m| install.unacked.contains(&m.id))
                    .copied()
                    .collect();
                for t in targets {
                    self.send(t, GroupMessage::ViewInstall { view: view.clone() });
                }
            }
        }
        if self.install.is_some() || !(self.is_coordinator() || self.is_acting_coordinator()) {
            return;
        }
        let Some(due) = self.batch_due else { return };
        if due > now {
            return;
        }
        self.batch_due = None;
        let Some(current) = self.view.clone() else {
            return;
        };
        let removed: Vec<GroupMember> = current
            .members
            .iter()
            .filter(|m| self.gone.contains(&m.id))
            .copied()
            .collect();
        let mut members: Vec<GroupMember> = current
            .members
            .iter()
            .filter(|m| !self.gone.contains(&m.id))
            .copied()
            .collect();
        for j in std::mem::take(&mut self.pending_joins) {
            if !members.iter().any(|m| m.id == j.id) {
                members.push(j);
            }
        }
        if removed.is_empty() && members.len() == current.members.len() && !self.reinstall {
            return;
        }
        self.reinstall = false;
        // We may be taking over: the members before us are all gone.
        debug_assert_eq!(members.first().map(|m| m.id), Some(self.local.id));
        self.max_seq += 1;
        let view = View {
            id: ViewId {
                seq: self.max_seq,
                coordinator: self.local.id,
            },
            members,
        };
        info!(view = %view.id, members = view.members.len(), removed = removed.len(), "installing view");
        self.stats.views_created += 1;
        self.stats.removals += removed.len() as u64;
        let local = self.local.id;
        let mut unacked = HashSet::new();
        for m in view.members.iter().filter(|m| m.id != local) {
            unacked.insert(m.id);
            self.send(*m, GroupMessage::ViewInstall { view: view.clone() });
        }
        // Removed members are told too (a paused one reads it when it resumes and rejoins
        // at once); they are not waited for.
        for m in &removed {
            self.send(*m, GroupMessage::ViewInstall { view: view.clone() });
        }
        self.lagging.clear();
        self.install = Some(Install {
            view: view.clone(),
            unacked,
            removed,
            next_resend: now + self.config.install_retry,
            give_up: now + self.config.install_timeout,
        });
        self.install_locally(view, now);
    }

    /// Re-sends the current view to members that never acknowledged it (their copies were
    /// lost, or they were paused), until they do.
    fn resend_to_lagging(&mut self, now: Instant) {
        let Some(view) = self.view.clone() else {
            return;
        };
        if self.install.is_some() {
            return;
        }
        let retry = self.config.install_timeout;
        let mut due = Vec::new();
        self.lagging.retain(|id, next| {
            let Some(m) = view.members.iter().find(|m| m.id == *id) else {
                return false;
            };
            if *next <= now {
                *next = now + retry;
                due.push(*m);
            }
            true
        });
        for m in due {
            self.send(m, GroupMessage::ViewInstall { view: view.clone() });
        }
    }

    /// True if every member before us in the view is confirmed gone: we take over.
    fn is_acting_coordinator(&self) -> bool {
        let Some(view) = &self.view else { return false };
        for m in &view.members {
            if m.id == self.local.id {
                return true;
            }
            if !self.gone.contains(&m.id) {
                return false;
            }
        }
        false
    }

    fn view_contains(&self, id: &MemberId) -> bool {
        self.view.as_ref().is_some_and(|v| v.contains(id))
    }

    // ---- failure detection ----

    /// A member is gone for certain (left, dead, or confirmed by witnesses). The coordinator
    /// (or the member that takes over) removes it in the next view; others pass it on.
    fn handle_gone(&mut self, id: MemberId, now: Instant) {
        if !self.view_contains(&id) || id == self.local.id {
            return;
        }
        match self.responsible_for(&id) {
            Some(r) if r.id == self.local.id => {
                if self.gone.insert(id) {
                    debug!(member = %id, "member gone");
                }
                // A view still waiting for its acknowledgement must not hold the next one
                // back.
                if let Some(install) = &mut self.install {
                    install.unacked.remove(&id);
                }
                if self.is_coordinator() || self.is_acting_coordinator() {
                    self.schedule_batch(now);
                    self.maybe_install(now);
                }
            }
            // Pass a certain death on; a leave reaches the coordinator directly.
            Some(r) if self.gone.insert(id) => self.send(r, GroupMessage::Dead { member: id }),
            _ => {}
        }
    }

    /// Who decides on `suspect`: the oldest member of our view that is neither the suspect
    /// nor suspected (or known gone) here.
    fn responsible_for(&self, suspect: &MemberId) -> Option<GroupMember> {
        let view = self.view.as_ref()?;
        view.members
            .iter()
            .find(|m| {
                m.id != *suspect
                    && (m.id == self.local.id
                        || (!self.suspecting.contains_key(&m.id) && !self.gone.contains(&m.id)))
            })
            .copied()
    }

    /// True within a while after a stall: evidence that we were removed is then believed
    /// from any member of our view.
    fn recently_starved(&self, now: Instant) -> bool {
        self.last_starved
            .is_some_and(|at| now.saturating_duration_since(at) < self.config.suspect_after * 6)
    }

    fn starved(&self, now: Instant) -> bool {
        self.starved_until.is_some_and(|until| now < until)
    }

    fn tick(&mut self, now: Instant) {
        match self.phase {
            Phase::Discovering { until } if now >= until => self.discovery_over(now),
            Phase::Joining { target, retry_at } if now >= retry_at => {
                // Ask again; whoever is now the oldest node we know of may have changed.
                let silent = self.known.get(&target.id).is_none_or(|k| {
                    now.saturating_duration_since(k.last_heard) > self.config.suspect_after
                });
                if silent {
                    self.known.remove(&target.id);
                }
                match self.seed_candidate(now) {
                    Some(t) => self.start_join(t, now),
                    None => self.form_singleton(now),
                }
            }
            _ => {}
        }
        if self.phase != Phase::Member {
            return;
        }
        self.detect(now);
        self.report_gone(now);
        self.evaluate_accusations(now);
        if self.is_coordinator() {
            self.probe_outsiders(now);
            self.resend_to_lagging(now);
        }
        // Forget nodes not heard for a long time that are not in the view.
        let forget_after = self.config.suspect_after * 4;
        let view = self.view.clone();
        self.known.retain(|id, k| {
            view.as_ref().is_some_and(|v| v.contains(id))
                || now.saturating_duration_since(k.last_heard) < forget_after
        });
    }

    fn detect(&mut self, now: Instant) {
        let Some(view) = self.view.clone() else {
            return;
        };
        let starved = self.starved(now);
        for m in &view.members {
            if m.id == self.local.id || self.gone.contains(&m.id) {
                continue;
            }
            let heard = self
                .known
                .get(&m.id)
                .map(|k| k.last_heard)
                .into_iter()
                .chain(self.in_view_since.get(&m.id).copied())
                .max()
                .unwrap_or(now);
            if now.saturating_duration_since(heard) < self.config.suspect_after {
                continue;
            }
            if starved {
                self.stats.suspicions_held_back += 1;
                continue;
            }
            let due = self.suspecting.get(&m.id).copied();
            if due.is_some_and(|d| d > now) {
                continue;
            }
            if due.is_none() {
                debug!(member = %m.id, "suspecting");
            }
            self.suspecting
                .insert(m.id, now + self.config.suspect_resend);
            self.stats.suspicions_sent += 1;
            match self.responsible_for(&m.id) {
                Some(r) if r.id == self.local.id => {
                    self.accusations
                        .entry(m.id)
                        .or_default()
                        .insert(self.local.id, now);
                }
                Some(r) => self.send(
                    r,
                    GroupMessage::Suspect {
                        member: m.id,
                        view_seq: view.id.seq,
                    },
                ),
                None => {}
            }
        }
    }

    /// Repeats what we know for certain (a member left or died) to whoever decides now,
    /// until a view without the member arrives: the first report may have gone to a member
    /// that died since, or been lost.
    fn report_gone(&mut self, now: Instant) {
        if self.next_gone_report > now {
            return;
        }
        self.next_gone_report = now + self.config.suspect_resend;
        let Some(view) = &self.view else { return };
        let mut reports = Vec::new();
        for m in &view.members {
            if !self.gone.contains(&m.id) {
                continue;
            }
            if let Some(r) = self.responsible_for(&m.id)
                && r.id != self.local.id
            {
                reports.push((r, m.id));
            }
        }
        for (r, id) in reports {
            self.send(r, GroupMessage::Dead { member: id });
        }
    }

    /// Confirms the suspects enough witnesses agree on, if we are the one to decide.
    fn evaluate_accusations(&mut self, now: Instant) {
        let Some(view) = self.view.clone() else {
            return;
        };
        let ttl = self.config.accusation_ttl;
        self.accusations.retain(|suspect, accusers| {
            accusers.retain(|_, at| now.saturating_duration_since(*at) < ttl);
            !accusers.is_empty() && view.contains(suspect)
        });
        let mut confirmed = Vec::new();
        let mut checks = Vec::new();
        let mut verify = Vec::new();
        let mut next_verify = Vec::new();
        for (suspect, accusers) in &self.accusations {
            if self.gone.contains(suspect) {
                continue;
            }
            let Some(r) = self.responsible_for(suspect) else {
                continue;
            };
            if r.id != self.local.id {
                continue;
            }
            // Witnesses: view members other than the suspect that we do not suspect
            // ourselves (they can still speak), this node included.
            let eligible = view
                .members
                .iter()
                .filter(|m| {
                    m.id != *suspect
                        && !self.gone.contains(&m.id)
                        && (m.id == self.local.id || !self.suspecting.contains_key(&m.id))
                })
                .count();
            let needed = (self.config.witnesses + 1).min(eligible).max(1);
            let host_down = self
                .host_down
                .get(suspect)
                .is_some_and(|at| now.saturating_duration_since(*at) < self.config.suspect_after);
            let agreeing = accusers
                .keys()
                .filter(|a| view.contains(a) && !self.gone.contains(a))
                .count()
                + usize::from(host_down);
            if agreeing >= needed {
                confirmed.push(*suspect);
                continue;
            }
            // Too few statements: ask the witnesses that have not spoken. (One that is in
            // another group by now answers so, and stops counting as a witness.)
            if self.next_verify.get(suspect).is_none_or(|t| *t <= now) {
                for m in &view.members {
                    if m.id != *suspect
                        && m.id != self.local.id
                        && !accusers.contains_key(&m.id)
                        && !self.gone.contains(&m.id)
                        && !self.suspecting.contains_key(&m.id)
                    {
                        verify.push((*m, *suspect));
                    }
                }
                next_verify.push(*suspect);
            }
            if self.config.host_check && !self.host_checked.contains(suspect) {
                if let Some(m) = view.members.iter().find(|m| m.id == *suspect) {
                    checks.push(*m);
                }
            }
        }
        for suspect in next_verify {
            self.next_verify
                .insert(suspect, now + self.config.suspect_resend);
        }
        verify.sort_by_key(|(m, s)| (m.id, *s));
        for (witness, suspect) in verify {
            self.send(witness, GroupMessage::VerifySuspect { member: suspect });
        }
        self.next_verify
            .retain(|id, _| self.accusations.contains_key(id));
        checks.sort_by_key(|m| m.id);
        for m in checks {
            self.stats.host_checks += 1;
            self.host_checked.insert(m.id);
            self.host_checks.push_back(m);
        }
        // A suspicion that lapsed may be checked again next time.
        let accused: HashSet<MemberId> = self.accusations.keys().copied().collect();
        self.host_checked.retain(|id| accused.contains(id));
        let keep = self.config.suspect_after;
        self.host_down
            .retain(|id, at| accused.contains(id) && now.saturating_duration_since(*at) < keep);
        confirmed.sort();
        for suspect in confirmed {
            info!(member = %suspect, "suspicion confirmed by witnesses");
            self.gone.insert(suspect);
            self.accusations.remove(&suspect);
            if let Some(install) = &mut self.install {
                install.unacked.remove(&suspect);
            }
        }
        if self.is_coordinator() || self.is_acting_coordinator() {
            let pending = self
                .view
                .as_ref()
                .is_some_and(|v| v.members.iter().any(|m| self.gone.contains(&m.id)));
            if pending {
                self.schedule_batch(now);
                self.maybe_install(now);
            }
        }
    }

    /// As coordinator: invites cohort nodes we hear that are not in our view (newcomers,
    /// members removed while paused, other groups after a partition heals).
    fn probe_outsiders(&mut self, now: Instant) {
        let Some(view) = self.view.clone() else {
            return;
        };
        let fresh = self.config.suspect_after;
        let mut due: Vec<GroupMember> = Vec::new();
        for k in self.known.values_mut() {
            if view.contains(&k.member.id)
                || self.pending_joins.iter().any(|j| j.id == k.member.id)
                || k.next_probe > now
                || now.saturating_duration_since(k.last_heard) >= fresh
            {
                continue;
            }
            k.next_probe = now + self.config.probe_interval;
            due.push(k.member);
        }
        due.sort_by_key(|m| m.id);
        for m in due {
            self.send(
                m,
                GroupMessage::MergeProbe {
                    view_id: view.id,
                    size: view.members.len() as u32,
                },
            );
        }
    }

    fn send(&mut self, to: GroupMember, message: GroupMessage) {
        if to.id == self.local.id {
            return;
        }
        self.transmits.push_back((to, message));
    }
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("local", &self.local)
            .field("phase", &self.phase)
            .field("view", &self.view.as_ref().map(|v| v.id))
            .field("stats", &self.stats)
            .finish()
    }
}
