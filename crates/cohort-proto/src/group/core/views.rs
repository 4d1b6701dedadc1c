//! Views: installing what the coordinator decides, numbering, acknowledgements, and
//! catching up members that missed a view.
use std::collections::{HashMap, HashSet};
use std::time::Instant;

use tracing::{debug, info};

use super::*;

impl Group {
    pub(super) fn on_view_install(&mut self, from: GroupMember, view: View, now: Instant) {
        self.max_seq = self.max_seq.max(view.id.seq);
        let current = self.view.as_ref().map(|v| v.id);
        if current == Some(view.id) {
            self.send(from, GroupMessage::ViewAck { view_id: view.id });
            return;
        }
        // A view comes from the coordinator it names, or from one of its members passing it
        // on to a member that fell behind.
        let named = view.id.coordinator == from.id;
        let relayed = view.contains(&from.id) && view.contains(&self.local.id);
        if !named && !relayed {
            self.stats.views_refused += 1;
            debug!(view = %view.id, from = %from.id, "refused a view from a member that may not send it");
            return;
        }
        if !view.contains(&self.local.id) {
            // A view without us. It removes us only if it comes from the coordinator it
            // names, that coordinator is ours (or, when we know we were stalled, a member of
            // our view that took over), and it keeps most of the others of our view. A
            // member cut off alone that made a group of one must not evict us, not even
            // through a frame queued during the cut and delivered after the heal.
            let Some(mine) = self.view.as_ref() else {
                return;
            };
            let ours = mine.coordinator().is_some_and(|c| c.id == from.id)
                || (mine.contains(&from.id) && self.recently_starved(now));
            let others = mine.members.len().saturating_sub(1);
            let kept = mine
                .ids()
                .filter(|id| *id != self.local.id && view.contains(id))
                .count();
            let majority = kept * 2 > others;
            if self.phase == Phase::Member
                && named
                && ours
                && majority
                && current.is_none_or(|c| view.id.seq > c.seq)
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
                self.send(from, GroupMessage::Leave);
                return;
            }
        } else if let Phase::Joining { .. } | Phase::Discovering { .. } = self.phase {
            // Any coordinator that admits us is fine.
        }
        self.send(from, GroupMessage::ViewAck { view_id: view.id });
        self.install_locally(view, now);
    }

    pub(super) fn install_locally(&mut self, view: View, now: Instant) {
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
        self.confirmed.retain(|id| view.contains(id));
        self.replaced.retain(|id| view.contains(id));
        self.pending_joins.retain(|j| !view.contains(&j.id));
        self.phase = Phase::Member;
        self.stats.views_installed += 1;
        debug!(view = %view.id, members = view.members.len(), "view installed");
        self.view = Some(view.clone());
        self.events.push_back(GroupEvent::ViewInstalled(view));
    }

    pub(super) fn schedule_batch(&mut self, now: Instant) {
        if self.batch_due.is_none() {
            self.batch_due = Some(now + self.config.batch_delay);
        }
    }

    /// As coordinator (or the member taking over from a dead one): installs the next view
    /// when changes are pending, the batch delay has passed and the previous view is
    /// acknowledged or timed out.
    pub(super) fn maybe_install(&mut self, now: Instant) {
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
    pub(super) fn resend_to_lagging(&mut self, now: Instant) {
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
    pub(super) fn is_acting_coordinator(&self) -> bool {
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

    pub(super) fn view_contains(&self, id: &MemberId) -> bool {
        self.view.as_ref().is_some_and(|v| v.contains(id))
    }
}
