//! The group state machine of one node.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tracing::{debug, info};

mod detect;
mod join;
mod views;

use super::view::{GroupMember, View, ViewId};
use crate::membership::MemberId;
use crate::wire::cohort::{GroupLimits, GroupMessage, GroupPacket};

/// Settings of the group protocol. `Default` gives cohort's defaults, chosen so that a hung
/// member is removed within 3 s and a crashed one within a round trip (see SPEC §4).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
#[non_exhaustive]
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
    /// Messages dropped because they were for another incarnation (an earlier id of this
    /// node at the same address) or claimed to come from this node.
    pub misaddressed: u64,
    /// Views dropped because their sender may not install them here (not the coordinator
    /// they name, nor a member passing on a view it belongs to).
    pub views_refused: u64,
    /// Death claims that were not the ring's own evidence and so counted only as the
    /// sender's suspicion.
    pub deaths_as_suspicions: u64,
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
    /// Members in `gone` on witnesses' word alone (not the ring's evidence or their own
    /// leave): heard again before the view without them is out, they stay.
    confirmed: HashSet<MemberId>,
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
    /// This node's own earlier ids (it rejoined under a new one): its old heartbeats may
    /// still arrive, and must not make it join, probe or wait for itself.
    former_ids: VecDeque<MemberId>,
    /// Members whose address now answers with another id (the runtime saw a restart):
    /// suspected as if silent, without waiting for the timeout.
    replaced: HashSet<MemberId>,
    /// Suspects whose host is to be checked, and suspects whose host did not answer.
    host_checks: VecDeque<GroupMember>,
    host_checked: HashSet<MemberId>,
    host_down: HashMap<MemberId, Instant>,
    /// When to ask the witnesses about each suspect again.
    next_verify: HashMap<MemberId, Instant>,
    /// As coordinator: members that have not acknowledged the current view, with when to
    /// send it to them again.
    lagging: HashMap<MemberId, Instant>,
    transmits: VecDeque<(GroupMember, GroupPacket)>,
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
            confirmed: HashSet::new(),
            pending_joins: Vec::new(),
            reinstall: false,
            batch_due: None,
            install: None,
            starved_until: None,
            last_starved: None,
            next_gone_report: now,
            former_ids: VecDeque::new(),
            replaced: HashSet::new(),
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
        if member.id == self.local.id
            || self.phase == Phase::Left
            || self.former_ids.contains(&member.id)
        {
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
        // Witnesses agreed it was dead, but it speaks: it was paused or cut off, and came
        // back before the view without it went out. Removing it now would split the group
        // (its own view and ours), and the merge would cost members their ids.
        if self.confirmed.remove(&member.id) && self.gone.remove(&member.id) {
            debug!(member = %member.id, "a confirmed suspect was heard again before its removal: kept");
            self.accusations.remove(&member.id);
        }
        // A coordinator invites a newcomer at once: a joiner then needs no discovery wait.
        if new && self.is_coordinator() && !self.view_contains(&member.id) {
            self.probe_outsiders(now);
        }
    }

    /// `id` announced a graceful shutdown (Tribes' shutdown beat): like a `Leave` from it.
    pub fn member_left(&mut self, id: MemberId, now: Instant) {
        self.known.remove(&id);
        self.handle_gone(id, now);
    }

    /// `id`'s address now answers with another id: that process is gone, unless the new
    /// id is the stale one (an old incarnation's late packet). Not certain enough to remove
    /// anyone alone, so it counts as this node's suspicion at once, and the member deciding
    /// removes `id` once witnesses (who see the same restart) agree.
    pub fn member_restarted(&mut self, id: MemberId, now: Instant) {
        self.known.remove(&id);
        if !self.view_contains(&id) || id == self.local.id {
            return;
        }
        debug!(member = %id, "address taken by another id: suspecting");
        self.replaced.insert(id);
        self.suspecting.remove(&id);
        self.detect(now);
    }

    /// The ring connection to `id` (the member this node watches) closed without a
    /// goodbye, or a host check found nothing listening: the process died. This is the
    /// ring's own evidence and needs no witnesses.
    pub fn link_closed(&mut self, id: MemberId, now: Instant) {
        debug!(member = %id, "ring connection closed");
        self.known.remove(&id);
        self.handle_gone(id, now);
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
                self.send(to, GroupMessage::Leave);
            }
        }
        self.phase = Phase::Left;
        self.install = None;
    }

    /// Handles one packet that arrived from `addr`. A packet for another incarnation (an
    /// earlier id of this node: a frame queued before a rejoin, a reply to it) is dropped
    /// and counted, as is one claiming to come from this node.
    pub fn handle_packet(&mut self, addr: SocketAddr, packet: GroupPacket, now: Instant) {
        if self.phase == Phase::Left {
            return;
        }
        if packet.to != self.local.id || packet.from == self.local.id {
            self.stats.misaddressed += 1;
            debug!(to = %packet.to, from = %packet.from, kind = packet.message.kind(), "dropped a message for another incarnation");
            return;
        }
        let from = GroupMember {
            id: packet.from,
            addr,
        };
        self.handle_message(from, packet.message, now);
    }

    fn handle_message(&mut self, from: GroupMember, message: GroupMessage, now: Instant) {
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
            // A leave speaks only for its sender.
            GroupMessage::Leave => {
                self.known.remove(&from.id);
                self.handle_gone(from.id, now);
            }
            GroupMessage::Suspect { .. }
            | GroupMessage::Dead { .. }
            | GroupMessage::VerifySuspect { .. }
                if self.phase == Phase::Member && !self.view_contains(&from.id) =>
            {
                // The sender counts us in its group, but we are not in each other's views
                // any more: tell it which view we are in, as an invitation. If ours is newer
                // and holds most of its view (a coordinator resumed from a pause whose
                // members moved on), it rejoins; it must not take each such answer as a
                // leave and go on with a view of whoever has not answered yet.
                if let Some(view) = &self.view {
                    let message = GroupMessage::MergeProbe {
                        view_id: view.id,
                        size: view.members.len() as u32,
                    };
                    self.send(from, message);
                }
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
            GroupMessage::Dead { member, view_id } => self.on_dead(from, member, view_id, now),
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
    pub fn poll_transmit(&mut self) -> Option<(GroupMember, GroupPacket)> {
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
            HostCheck::ProcessGone => self.link_closed(id, now),
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

    /// Queues `message` for `to`, addressed from this node's current incarnation to
    /// `to`'s (so neither end's later incarnation takes it for its own).
    pub(super) fn send(&mut self, to: GroupMember, message: GroupMessage) {
        if to.id == self.local.id {
            return;
        }
        let packet = GroupPacket {
            from: self.local.id,
            to: to.id,
            message,
        };
        self.transmits.push_back((to, packet));
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

crate::config_setters!(GroupConfig {
    [into] cluster: Bytes,
    discovery_wait: Duration,
    join_retry: Duration,
    batch_delay: Duration,
    install_retry: Duration,
    install_timeout: Duration,
    suspect_after: Duration,
    suspect_resend: Duration,
    accusation_ttl: Duration,
    witnesses: usize,
    tick: Duration,
    starvation_threshold: Duration,
    probe_interval: Duration,
    host_check: bool,
    limits: GroupLimits,
});
