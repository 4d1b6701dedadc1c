//! Joining: discovery, the seed that forms the first group, join requests, invitations
//! (merge probes), rejoining under a new id and merging into a bigger group.
use std::time::Instant;

use tracing::{debug, info};

use super::*;

/// How many of its own earlier ids a node remembers.
const FORMER_IDS: usize = 8;

impl Group {
    pub(super) fn on_join_request(&mut self, joiner: GroupMember, cluster: &[u8], now: Instant) {
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
                if self.view_contains(&joiner.id) {
                    // A member that never got (or lost) the view it is in: any member may
                    // pass the view on. Waiting for the coordinator could be forever: it
                    // may be dead, and this member may be the one that has to decide on
                    // that (the oldest member nobody suspects).
                    if let Some(view) = self.view.clone() {
                        self.send(joiner, GroupMessage::ViewInstall { view });
                    }
                    return;
                }
                // Whoever decides now: the coordinator, or, while we suspect it, the
                // member that would take over from it. (When that is us, the joiner's
                // retry finds us once the coordinator is removed.)
                let Some(coordinator) = self.view.as_ref().and_then(View::coordinator).copied()
                else {
                    return;
                };
                let decider = if self.suspecting.contains_key(&coordinator.id) {
                    self.responsible_for(&coordinator.id)
                        .filter(|m| m.id != self.local.id)
                } else {
                    Some(coordinator)
                };
                if let Some(c) = decider {
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
    pub(super) fn seed_candidate(&self, now: Instant) -> Option<GroupMember> {
        self.known
            .values()
            .filter(|k| {
                k.member.id < self.local.id
                    && now.saturating_duration_since(k.last_heard) < self.config.suspect_after
            })
            .min_by_key(|k| k.member.id)
            .map(|k| k.member)
    }

    pub(super) fn form_singleton(&mut self, now: Instant) {
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

    pub(super) fn start_join(&mut self, target: GroupMember, now: Instant) {
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

    pub(super) fn discovery_over(&mut self, now: Instant) {
        match self.seed_candidate(now) {
            Some(target) => self.start_join(target, now),
            None => self.form_singleton(now),
        }
    }

    /// A coordinator invites us, or tells a member it is not in its view; or a member of a
    /// view without us answers something we sent it as if it were in ours.
    pub(super) fn on_probe(&mut self, from: GroupMember, view_id: ViewId, size: u32, now: Instant) {
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
                    // holds a majority of ours), or it split off (a node cut off alone forms
                    // a group of one): then it left ours. Being stalled ourselves is no
                    // evidence here: a member that was cut off alone probes everyone it
                    // hears once the link is back.
                    let newer = view_id.seq > view.id.seq;
                    let majority = u64::from(size) * 2 > view.members.len() as u64;
                    let ours = view.coordinator().is_some_and(|c| c.id == from.id);
                    if !newer {
                        if view_id.coordinator == view.id.coordinator {
                            // A view of our own group, ours or an older one: a probe sent
                            // before that view reached its coordinator's probe list, or a
                            // member that has not caught up yet. Not evidence of anything.
                            return;
                        }
                        // It is in another group, no newer than ours, that does not count
                        // us: it split off from ours. Its own word, like a leave.
                        self.handle_gone(from.id, now);
                        return;
                    }
                    if ours || majority {
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
                        self.send(to, GroupMessage::Leave);
                    }
                    self.rejoin(Some(from), now);
                }
            }
            Phase::Left => {}
        }
    }

    /// Starts over under a new id: we were removed, or our group merges into another.
    pub(super) fn rejoin(&mut self, target: Option<GroupMember>, now: Instant) {
        let old = self.local.id;
        let new = MemberId::random(&mut self.rng);
        self.local.id = new;
        // Remember a few earlier ids: their heartbeats may still be on the way.
        if self.former_ids.len() == FORMER_IDS {
            self.former_ids.pop_front();
        }
        self.former_ids.push_back(old);
        self.known.remove(&old);
        self.view = None;
        self.in_view_since.clear();
        self.suspecting.clear();
        self.accusations.clear();
        self.gone.clear();
        self.confirmed.clear();
        self.replaced.clear();
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
}
