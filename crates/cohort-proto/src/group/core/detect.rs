//! Failure detection: suspicion after silence, witnesses, certain deaths (ring, leave),
//! local health, the member that decides, host checks, and invitations of outsiders.
use std::collections::HashSet;
use std::time::Instant;

use tracing::{debug, info};

use super::*;

impl Group {
    /// A member is gone for certain (left, dead, or confirmed by witnesses). The coordinator
    /// (or the member that takes over) removes it in the next view; others pass it on.
    pub(super) fn handle_gone(&mut self, id: MemberId, now: Instant) {
        if !self.view_contains(&id) || id == self.local.id {
            return;
        }
        // Certain now: a late message of it no longer keeps it.
        self.confirmed.remove(&id);
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
            // Pass a certain death on (the decider takes it as our suspicion unless we
            // watch the member); a leave reaches the coordinator directly.
            Some(r) if self.gone.insert(id) => {
                let view_id = self.view.as_ref().map(|v| v.id).expect("in a view");
                self.send(
                    r,
                    GroupMessage::Dead {
                        member: id,
                        view_id,
                    },
                );
            }
            _ => {}
        }
    }

    /// `from` says `member` is gone. Certain only as the ring's own evidence: `from` watches
    /// `member` in the view we both hold. Otherwise (a death passed on, a restart seen, a
    /// claim from another view or an old incarnation) it is `from`'s suspicion, and the
    /// member is removed only once witnesses agree.
    pub(super) fn on_dead(
        &mut self,
        from: GroupMember,
        member: MemberId,
        view_id: ViewId,
        now: Instant,
    ) {
        let Some(view) = &self.view else { return };
        if member == self.local.id || !view.contains(&member) {
            return;
        }
        let watcher =
            view.id == view_id && view.successor(&from.id).is_some_and(|s| s.id == member);
        if watcher {
            self.handle_gone(member, now);
            return;
        }
        self.stats.deaths_as_suspicions += 1;
        debug!(%member, from = %from.id, "a death claimed without the ring's evidence: a suspicion");
        if view.contains(&from.id) {
            self.accusations
                .entry(member)
                .or_default()
                .insert(from.id, now);
            self.evaluate_accusations(now);
        }
    }

    /// Who decides on `suspect`: the oldest member of our view that is neither the suspect
    /// nor suspected (or known gone) here.
    pub(super) fn responsible_for(&self, suspect: &MemberId) -> Option<GroupMember> {
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
    pub(super) fn recently_starved(&self, now: Instant) -> bool {
        self.last_starved
            .is_some_and(|at| now.saturating_duration_since(at) < self.config.suspect_after * 6)
    }

    pub(super) fn starved(&self, now: Instant) -> bool {
        self.starved_until.is_some_and(|until| now < until)
    }

    pub(super) fn tick(&mut self, now: Instant) {
        match self.phase {
            Phase::Discovering { until } if now >= until => self.discovery_over(now),
            Phase::Joining { target, retry_at } if now >= retry_at => {
                // Ask the target again while it is alive: a request or its answer was lost.
                // (Forming a group of one here, next to the group we are joining, would
                // only make it merge back.) A silent target is given up: whoever is now the
                // oldest node we know of may have changed.
                let silent = self.known.get(&target.id).is_none_or(|k| {
                    now.saturating_duration_since(k.last_heard) > self.config.suspect_after
                });
                if !silent {
                    self.start_join(target, now);
                } else {
                    self.known.remove(&target.id);
                    match self.seed_candidate(now) {
                        Some(t) => self.start_join(t, now),
                        None => self.form_singleton(now),
                    }
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

    pub(super) fn detect(&mut self, now: Instant) {
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
            if now.saturating_duration_since(heard) < self.config.suspect_after
                && !self.replaced.contains(&m.id)
            {
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
    pub(super) fn report_gone(&mut self, now: Instant) {
        if self.next_gone_report > now {
            return;
        }
        self.next_gone_report = now + self.config.suspect_resend;
        let Some(view) = &self.view else { return };
        let view_id = view.id;
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
            self.send(
                r,
                GroupMessage::Dead {
                    member: id,
                    view_id,
                },
            );
        }
    }

    /// Confirms the suspects enough witnesses agree on, if we are the one to decide.
    pub(super) fn evaluate_accusations(&mut self, now: Instant) {
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
            self.confirmed.insert(suspect);
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
    pub(super) fn probe_outsiders(&mut self, now: Instant) {
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
}
