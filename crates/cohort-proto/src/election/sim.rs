//! Seeded simulation of Fast Leader Election: 3, 5 and 7 voters over a virtual network with
//! delay, loss, partitions, crashes (with and without the connection reset a kill gives) and
//! restarts, in virtual time.
//!
//! After every step: no election epoch has two leaders that a majority each decided for.
//! After every disruption: within [`SETTLE`] the side holding a majority of the voters has
//! one leader that all its live members follow, and no member of a minority side leads or
//! follows anyone. A failure prints its seed; `ELECTION_SEED=<n> cargo test -p cohort-proto
//! election::sim` replays it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{ElectionConfig, ElectionCore, ElectionEvent, Role, Sid};
use crate::wire::zookeeper::Notification;

/// The bound, in virtual time, for the majority side to agree on a leader (and the minority
/// to give up theirs) after a disruption: silence timeout 1.5 s, a step-down check on the
/// next heartbeat, a few resend back-offs under loss.
const SETTLE: Duration = Duration::from_secs(6);

#[derive(Debug)]
enum Delivery {
    Message {
        from: usize,
        to: usize,
        n: Notification,
    },
    /// The TCP connection to the leader reset (the peer was killed).
    LeaderLost { to: usize, leader: Sid },
}

struct Sim {
    seed: u64,
    rng: SmallRng,
    start: Instant,
    now: Instant,
    nodes: Vec<Option<ElectionCore>>,
    zxids: Vec<i64>,
    /// Partition side of every node; messages only pass within a side.
    side: Vec<u8>,
    loss: f64,
    queue: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    pending: BTreeMap<usize, Delivery>,
    next_id: u64,
    /// Per link, when its last message is delivered: TCP keeps order.
    link_clock: BTreeMap<(usize, usize), Instant>,
    /// Election epoch → leader → nodes that ever decided for it in that epoch.
    decisions: BTreeMap<i64, BTreeMap<Sid, BTreeSet<usize>>>,
    log: Vec<String>,
}

fn sid(i: usize) -> Sid {
    i as Sid + 1
}

impl Sim {
    fn new(seed: u64, n: usize, loss: f64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        // A few distinct zxids, some equal, so every tie-break of the order is exercised.
        let zxids = (0..n)
            .map(|_| (rng.random_range(0..3i64) << 32) | rng.random_range(0..4i64))
            .collect();
        let start = Instant::now();
        Self {
            seed,
            rng,
            start,
            now: start,
            nodes: (0..n).map(|_| None).collect(),
            zxids,
            side: vec![0; n],
            loss,
            queue: BinaryHeap::new(),
            pending: BTreeMap::new(),
            next_id: 0,
            link_clock: BTreeMap::new(),
            decisions: BTreeMap::new(),
            log: Vec::new(),
        }
    }

    fn n(&self) -> usize {
        self.nodes.len()
    }

    fn quorum(&self) -> usize {
        self.n() / 2 + 1
    }

    fn fail(&self, what: &str) -> ! {
        let tail: Vec<&String> = self.log.iter().rev().take(40).collect();
        panic!(
            "seed {}: {what}\nreplay: ELECTION_SEED={} cargo test -p cohort-proto election::sim\nlast log lines (newest first):\n{}",
            self.seed,
            self.seed,
            tail.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    fn t(&self) -> f64 {
        (self.now - self.start).as_secs_f64()
    }

    fn start_node(&mut self, i: usize) {
        let cfg = ElectionConfig::new(sid(i), (0..self.n()).map(sid));
        let mut core = ElectionCore::new(cfg, self.zxids[i]);
        core.start(self.now);
        self.nodes[i] = Some(core);
        self.log.push(format!("{:.3} start {}", self.t(), sid(i)));
        self.flush(i);
    }

    fn crash(&mut self, i: usize, reset: bool) {
        self.nodes[i] = None;
        // Its memory is gone: its earlier decisions no longer bind anything.
        for leaders in self.decisions.values_mut() {
            for who in leaders.values_mut() {
                who.remove(&i);
            }
        }
        self.log
            .push(format!("{:.3} crash {} reset={reset}", self.t(), sid(i)));
        if !reset {
            return;
        }
        for j in 0..self.n() {
            let follows = self.nodes[j]
                .as_ref()
                .is_some_and(|c| c.leader() == Some(sid(i)));
            if follows && self.side[i] == self.side[j] {
                let at = self.now + Duration::from_millis(1);
                self.schedule(
                    at,
                    Delivery::LeaderLost {
                        to: j,
                        leader: sid(i),
                    },
                );
            }
        }
    }

    fn schedule(&mut self, at: Instant, d: Delivery) {
        self.next_id += 1;
        self.queue
            .push(Reverse((at, self.next_id, self.next_id as usize)));
        self.pending.insert(self.next_id as usize, d);
    }

    /// Drains a node's outputs into the network and the decision record.
    fn flush(&mut self, i: usize) {
        loop {
            let Some(core) = self.nodes[i].as_mut() else {
                return;
            };
            let out = core.poll_transmit();
            let ev = core.poll_event();
            let epoch = core.election_epoch();
            if out.is_none() && ev.is_none() {
                break;
            }
            if let Some((to_sid, n)) = out {
                let to = (to_sid - 1) as usize;
                let lost = self.rng.random_bool(self.loss) || self.side[i] != self.side[to];
                let delay = Duration::from_micros(self.rng.random_range(100..4000));
                let link = self.link_clock.entry((i, to)).or_insert(self.now);
                let at = (self.now + delay).max(*link + Duration::from_nanos(1));
                if !lost {
                    *link = at;
                    self.schedule(at, Delivery::Message { from: i, to, n });
                }
            }
            if let Some(ElectionEvent::RoleChanged { role, leader, .. }) = ev {
                self.log.push(format!(
                    "{:.3} node {} -> {role:?} leader {leader:?} epoch {epoch}",
                    self.t(),
                    sid(i)
                ));
                if let Some(leader) = leader {
                    self.decisions
                        .entry(epoch)
                        .or_default()
                        .entry(leader)
                        .or_default()
                        .insert(i);
                }
            }
        }
        self.check_safety();
    }

    fn check_safety(&self) {
        for (epoch, leaders) in &self.decisions {
            let backed: Vec<_> = leaders
                .iter()
                .filter(|(_, who)| who.len() >= self.quorum())
                .map(|(l, _)| *l)
                .collect();
            if backed.len() > 1 {
                self.fail(&format!(
                    "epoch {epoch}: leaders {backed:?} each decided by a majority: {leaders:?}"
                ));
            }
        }
    }

    /// Runs until `until`, one delivery or timer at a time.
    fn run_until(&mut self, until: Instant) {
        loop {
            let next_msg = self.queue.peek().map(|Reverse((t, _, _))| *t);
            let next_timer = self
                .nodes
                .iter()
                .enumerate()
                .filter_map(|(i, c)| c.as_ref().and_then(|c| c.poll_timeout()).map(|t| (t, i)))
                .min();
            let msg_first = match (next_msg, next_timer) {
                (Some(m), Some((t, _))) => m <= t,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => {
                    self.now = until;
                    return;
                }
            };
            if msg_first {
                let Some(Reverse((at, _, id))) = self.queue.peek().copied() else {
                    unreachable!()
                };
                if at > until {
                    self.now = until;
                    return;
                }
                self.queue.pop();
                self.now = at;
                match self.pending.remove(&id) {
                    Some(Delivery::Message { from, to, n }) => {
                        // A partition cuts messages still in flight too.
                        if self.side[from] != self.side[to] {
                            continue;
                        }
                        if let Some(core) = self.nodes[to].as_mut() {
                            core.handle_notification(at, sid(from), &n);
                            self.flush(to);
                        }
                    }
                    Some(Delivery::LeaderLost { to, leader }) => {
                        if let Some(core) = self.nodes[to].as_mut() {
                            if core.leader() == Some(leader) {
                                core.leader_lost(at);
                                self.flush(to);
                            }
                        }
                    }
                    None => {}
                }
            } else {
                let (at, i) = next_timer.expect("timer");
                if at > until {
                    self.now = until;
                    return;
                }
                self.now = at;
                if let Some(core) = self.nodes[i].as_mut() {
                    core.handle_timeout(at);
                }
                self.flush(i);
            }
        }
    }

    /// Live nodes per side.
    fn sides(&self) -> BTreeMap<u8, Vec<usize>> {
        let mut out: BTreeMap<u8, Vec<usize>> = BTreeMap::new();
        for i in (0..self.n()).filter(|&i| self.nodes[i].is_some()) {
            out.entry(self.side[i]).or_default().push(i);
        }
        out
    }

    /// The side with a majority agrees on one of its members as leader; nobody on a
    /// minority side leads or follows.
    fn settled(&self) -> Result<(), String> {
        for members in self.sides().values() {
            let cores: Vec<&ElectionCore> = members
                .iter()
                .filter_map(|&i| self.nodes[i].as_ref())
                .collect();
            if members.len() >= self.quorum() {
                let leader = cores[0].leader();
                let Some(leader) = leader else {
                    return Err(format!(
                        "majority side {members:?}: sid {} has no leader",
                        cores[0].sid()
                    ));
                };
                if !cores.iter().any(|c| c.sid() == leader) {
                    return Err(format!(
                        "majority side {members:?} follows sid {leader}, not on it"
                    ));
                }
                for c in &cores {
                    let want = if c.sid() == leader {
                        Role::Leading
                    } else {
                        Role::Following
                    };
                    if c.leader() != Some(leader) || c.role() != want {
                        return Err(format!(
                            "majority side: sid {} is {:?} of {:?}, others follow {leader}",
                            c.sid(),
                            c.role(),
                            c.leader()
                        ));
                    }
                }
            } else if let Some(c) = cores.iter().find(|c| c.role() != Role::Looking) {
                return Err(format!(
                    "minority side {members:?}: sid {} is {:?} of {:?}",
                    c.sid(),
                    c.role(),
                    c.leader()
                ));
            }
        }
        Ok(())
    }

    /// Runs until settled, failing if that takes longer than [`SETTLE`]; then runs for
    /// `hold` and checks it is settled again within [`SETTLE`]. (In between, a minority
    /// member may briefly decide on votes of its round heard before the partition, as in
    /// ZooKeeper; it must give that up again: its leader never answers.)
    fn settle(&mut self, hold: Duration) -> Duration {
        let took = self.settle_once();
        let end = self.now + hold;
        self.run_until(end);
        self.settle_once();
        took
    }

    fn settle_once(&mut self) -> Duration {
        let began = self.now;
        let step = Duration::from_millis(10);
        while self.settled().is_err() {
            if self.now - began > SETTLE {
                let why = self.settled().unwrap_err();
                self.fail(&format!(
                    "not settled {SETTLE:?} after the last change: {why}"
                ));
            }
            let next = self.now + step;
            self.run_until(next);
        }
        self.now - began
    }
}

/// One seeded run: a cold start, then `steps` random disruptions, each followed by a
/// settle check. Returns the slowest settle time.
fn run(seed: u64, n: usize, steps: usize) -> Duration {
    let loss = [0.0, 0.02, 0.1][(seed % 3) as usize];
    let mut sim = Sim::new(seed, n, loss);
    for i in 0..n {
        sim.start_node(i);
        let gap = Duration::from_micros(sim.rng.random_range(0..20_000));
        let t = sim.now + gap;
        sim.run_until(t);
    }
    let mut slowest = sim.settle(Duration::from_secs(1));
    for _ in 0..steps {
        let down: Vec<usize> = (0..n).filter(|&i| sim.nodes[i].is_none()).collect();
        let up: Vec<usize> = (0..n).filter(|&i| sim.nodes[i].is_some()).collect();
        match sim.rng.random_range(0..6) {
            0 | 1 if !up.is_empty() => {
                // Prefer the leader: that is where failover happens.
                let leader = up
                    .iter()
                    .copied()
                    .find(|&i| sim.nodes[i].as_ref().unwrap().role() == Role::Leading);
                let victim = match leader {
                    Some(l) if sim.rng.random_bool(0.7) => l,
                    _ => up[sim.rng.random_range(0..up.len())],
                };
                // A kill -9 resets TCP connections; a power loss or hang does not.
                let reset = sim.rng.random_bool(0.7);
                sim.crash(victim, reset);
            }
            2 if !down.is_empty() => {
                let i = down[sim.rng.random_range(0..down.len())];
                sim.start_node(i);
            }
            3 => {
                let sides: Vec<u8> = (0..n).map(|_| sim.rng.random_range(0..2)).collect();
                sim.log.push(format!("{:.3} partition {sides:?}", sim.t()));
                sim.side = sides;
            }
            _ => {
                sim.log.push(format!("{:.3} heal", sim.t()));
                sim.side = vec![0; n];
                for i in down {
                    sim.start_node(i);
                }
            }
        }
        slowest = slowest.max(sim.settle(Duration::from_secs(1)));
    }
    slowest
}

fn seeds(count: u64) -> Vec<u64> {
    match std::env::var("ELECTION_SEED") {
        Ok(s) => vec![s.parse().expect("ELECTION_SEED is a number")],
        Err(_) => (0..count).collect(),
    }
}

#[test]
fn three_voters() {
    for seed in seeds(300) {
        run(seed, 3, 12);
    }
}

#[test]
fn five_voters() {
    for seed in seeds(200) {
        run(seed, 5, 12);
    }
}

#[test]
fn seven_voters() {
    for seed in seeds(100) {
        run(seed, 7, 12);
    }
}

/// Without loss, a cold start elects within a few finalize waits, and a killed leader (its
/// connections reset) is replaced well under cohort's 100 ms target on a fast network.
#[test]
fn cold_start_and_failover_are_fast_without_loss() {
    for seed in seeds(20) {
        let mut sim = Sim::new(seed, 5, 0.0);
        for i in 0..5 {
            sim.start_node(i);
        }
        let cold = sim.settle(Duration::from_millis(500));
        assert!(
            cold < Duration::from_millis(200),
            "seed {seed}: cold start {cold:?}"
        );
        let leader = (0..5)
            .find(|&i| sim.nodes[i].as_ref().unwrap().role() == Role::Leading)
            .unwrap();
        sim.crash(leader, true);
        let failover = sim.settle(Duration::from_millis(500));
        assert!(
            failover < Duration::from_millis(100),
            "seed {seed}: failover {failover:?}"
        );
    }
}

/// The highest (peer epoch, zxid, sid) wins; a restarted voter with a better zxid joins the
/// established leader instead of taking over.
#[test]
fn best_vote_wins_and_newcomer_joins() {
    let mut sim = Sim::new(7, 3, 0.0);
    sim.zxids = vec![5 << 32, 1 << 32 | 9, 1 << 32 | 9];
    for i in 0..3 {
        sim.start_node(i);
    }
    sim.settle(Duration::from_millis(100));
    assert_eq!(sim.nodes[1].as_ref().unwrap().leader(), Some(1));
    sim.crash(1, true);
    sim.crash(0, true);
    sim.start_node(0);
    sim.settle(Duration::from_millis(100));
    // sid 1 (epoch 5) against sid 3 (epoch 1): sid 1 again.
    assert_eq!(sim.nodes[2].as_ref().unwrap().leader(), Some(1));
    sim.zxids[1] = 9 << 32;
    sim.start_node(1);
    sim.settle(Duration::from_millis(500));
    for i in 0..3 {
        assert_eq!(sim.nodes[i].as_ref().unwrap().leader(), Some(1), "node {i}");
    }
}

/// A hung leader (no connection reset) is replaced after the silence timeout.
#[test]
fn hung_leader_is_replaced() {
    let mut sim = Sim::new(3, 3, 0.0);
    for i in 0..3 {
        sim.start_node(i);
    }
    sim.settle(Duration::from_secs(1));
    let leader = (0..3)
        .find(|&i| sim.nodes[i].as_ref().unwrap().role() == Role::Leading)
        .unwrap();
    sim.crash(leader, false);
    let took = sim.settle(Duration::from_millis(500));
    assert!(
        took <= Duration::from_secs(2),
        "hung leader replaced after {took:?}"
    );
    assert!(
        took >= Duration::from_millis(1400),
        "replaced before the silence timeout: {took:?}"
    );
}

/// An observer learns the leader from the voters and never counts towards a majority.
#[test]
fn observer_learns_leader_and_never_counts() {
    let start = Instant::now();
    let mut cfg = ElectionConfig::new(9, [1, 2, 3]);
    cfg.observers.insert(9);
    let mut obs = ElectionCore::new(cfg, 0);
    obs.start(start);
    let sent: Vec<Sid> = std::iter::from_fn(|| obs.poll_transmit())
        .map(|(to, _)| to)
        .collect();
    assert_eq!(sent, vec![1, 2, 3]);
    let leading = |state: Role| Notification {
        state,
        leader: 3,
        zxid: 0,
        election_epoch: 1,
        peer_epoch: 0,
        version: 2,
        config: bytes::Bytes::new(),
    };
    obs.handle_notification(start, 2, &leading(Role::Following));
    assert_eq!(obs.role(), Role::Looking, "one follower is no majority");
    obs.handle_notification(start, 3, &leading(Role::Leading));
    assert_eq!(obs.role(), Role::Observing);
    assert_eq!(obs.leader(), Some(3));

    // A voter never counts an observer's vote nor adopts a vote for it.
    let mut voter = ElectionCore::new(ElectionConfig::new(1, [1, 2, 3]), 0);
    voter.start(start);
    while voter.poll_transmit().is_some() {}
    let mut for_observer = leading(Role::Looking);
    for_observer.leader = 9;
    voter.handle_notification(start, 2, &for_observer);
    assert_eq!(voter.vote().leader, 1);
}

/// A scripted ZooKeeper 3.8 peer for [`follows_a_zookeeper_leader_that_never_heartbeats`]:
/// sid 1 of {1, 2, 3} with sid 2 down, voting for itself in round 1 with a better zxid than
/// the cohort voter's. Like `FastLeaderElection` it decides 200 ms after the majority and
/// then, LEADING, sends nothing except one LEADING answer to each LOOKING notification.
struct ZkLeaderScript {
    decided_at: Option<Instant>,
    answers: usize,
}

impl ZkLeaderScript {
    fn vote(state: Role) -> Notification {
        Notification {
            state,
            leader: 1,
            zxid: 1 << 32 | 7,
            election_epoch: 1,
            peer_epoch: 1,
            version: 2,
            config: bytes::Bytes::new(),
        }
    }

    /// What it sends back for one notification from the cohort voter (sid 3) at `now`.
    fn receive(&mut self, now: Instant, n: &Notification) -> Option<Notification> {
        if n.leader == 1 && n.state == Role::Looking && self.decided_at.is_none() {
            // Our vote came back: a majority (1 and 3); decide after the finalize wait.
            self.decided_at = Some(now + Duration::from_millis(200));
        }
        let leading = self.decided_at.is_some_and(|t| t <= now);
        (leading && n.state == Role::Looking).then(|| {
            self.answers += 1;
            Self::vote(Role::Leading)
        })
    }
}

/// Runs a cohort voter (sid 3, zxid 5) against a [`ZkLeaderScript`] for `secs` of virtual
/// time, the script answering for the first `answer_secs` only (then it hangs); returns
/// the voter, the script and every role change of the voter.
fn against_zk_leader(secs: u64, answer_secs: u64) -> (ElectionCore, ZkLeaderScript, Vec<Role>) {
    let start = Instant::now();
    let mut core = ElectionCore::new(ElectionConfig::new(3, [1, 2, 3]), 5);
    let mut zk = ZkLeaderScript {
        decided_at: None,
        answers: 0,
    };
    let mut roles = Vec::new();
    core.start(start);
    core.handle_notification(start, 1, &ZkLeaderScript::vote(Role::Looking));
    let mut now = start;
    while now < start + Duration::from_secs(secs) {
        while let Some((to, n)) = core.poll_transmit() {
            if to == 1 && now < start + Duration::from_secs(answer_secs) {
                if let Some(a) = zk.receive(now, &n) {
                    core.handle_notification(now, 1, &a);
                }
            }
        }
        while let Some(ElectionEvent::RoleChanged { role, .. }) = core.poll_event() {
            roles.push(role);
        }
        now += Duration::from_millis(10);
        if core.poll_timeout().is_some_and(|t| t <= now) {
            core.handle_timeout(now);
        }
    }
    (core, zk, roles)
}

/// A ZooKeeper leader never sends LEADING notifications by itself. A cohort voter that
/// decided to follow it in the round (before it, with a shorter finalize wait) asks it with
/// LOOKING notifications, hears LEADING and keeps following it, instead of counting it
/// lost after the silence timeout (found with real ZooKeeper servers: the cohort voter
/// left every ZooKeeper leader after 1.5 s). A leader that never answers, or stops
/// answering (hangs), counts as lost after the silence timeout.
#[test]
fn follows_a_zookeeper_leader_that_never_heartbeats() {
    let (core, zk, roles) = against_zk_leader(10, 10);
    assert_eq!(core.role(), Role::Following);
    assert_eq!(core.leader(), Some(1));
    assert_eq!(roles, vec![Role::Looking, Role::Following], "no new round");
    // About one question per 1.5 heartbeat intervals (375 ms) plus the answer's delay.
    assert!(
        (10..=40).contains(&zk.answers),
        "asked {} times in 10 s",
        zk.answers
    );

    let (core, zk, roles) = against_zk_leader(3, 0);
    assert_eq!(zk.answers, 0);
    assert_eq!(core.role(), Role::Looking, "an unheard leader is given up");
    assert_eq!(roles[..2], [Role::Looking, Role::Following]);

    let (core, _, roles) = against_zk_leader(4, 2);
    assert_eq!(core.role(), Role::Looking, "a hung leader is given up");
    assert_eq!(roles[..3], [Role::Looking, Role::Following, Role::Looking]);
}

/// A leader that hangs right after the election, before its followers heard more than
/// its first LEADING notification, is replaced after the silence timeout too (found with
/// `cohort perf-election`: a follower that had not yet seen two heartbeats followed a
/// stopped leader for good).
#[test]
fn leader_hung_right_after_the_election_is_replaced() {
    for seed in seeds(20) {
        let mut sim = Sim::new(seed, 3, 0.0);
        for i in 0..3 {
            sim.start_node(i);
        }
        sim.settle_once();
        let leader = (0..3)
            .find(|&i| sim.nodes[i].as_ref().unwrap().role() == Role::Leading)
            .unwrap();
        sim.crash(leader, false);
        let took = sim.settle(Duration::from_millis(500));
        assert!(
            took <= Duration::from_secs(2),
            "seed {seed}: hung leader replaced after {took:?}"
        );
    }
}

/// A follower that hears a peer's LOOKING vote of the next round before it notices the
/// leader's loss itself counts that vote when its own round starts, instead of waiting for
/// the peer's resend (found by `cohort perf-election`: kill -9 failovers of 100-140 ms
/// instead of about 42).
/// A `LOOKING` notification voting for `leader` in round `election_epoch`.
fn looking(leader: Sid, election_epoch: i64) -> Notification {
    Notification {
        state: Role::Looking,
        leader,
        zxid: 0,
        election_epoch,
        peer_epoch: 0,
        version: 2,
        config: bytes::Bytes::new(),
    }
}

#[test]
fn vote_heard_while_following_counts_in_the_next_round() {
    let t = Instant::now();
    let mut core = ElectionCore::new(ElectionConfig::new(1, [1, 2, 3]), 0);
    core.start(t);
    core.handle_notification(t, 3, &looking(3, 1));
    let t = t + Duration::from_millis(50);
    core.handle_timeout(t);
    assert_eq!((core.role(), core.leader()), (Role::Following, Some(3)));
    // Sid 2 noticed first that sid 3 is gone and votes for itself in round 2.
    core.handle_notification(t, 2, &looking(2, 2));
    assert_eq!(core.role(), Role::Following, "still following");
    core.leader_lost(t);
    assert_eq!(core.vote().leader, 2, "sid 2's vote was adopted at once");
    assert_eq!(
        core.poll_timeout(),
        Some(t + core.config().finalize_wait),
        "a majority (1 and 2) already agrees"
    );
    core.handle_timeout(t + core.config().finalize_wait);
    assert_eq!((core.role(), core.leader()), (Role::Following, Some(2)));
}

#[test]
fn an_election_epoch_beyond_counting_is_dropped_and_the_clock_never_wraps() {
    use super::MAX_ELECTION_EPOCH;
    let t = Instant::now();
    let mut core = ElectionCore::new(ElectionConfig::new(1, [1, 2, 3]), 0);
    core.start(t);
    let dropped = core.dropped();
    for forged in [i64::MAX, MAX_ELECTION_EPOCH + 1] {
        core.handle_notification(t, 3, &looking(3, forged));
    }
    assert_eq!(core.dropped(), dropped + 2);
    assert_eq!(core.election_epoch(), 1, "a forged epoch was adopted");
    // The highest plausible epoch is adopted, and rounds after it count on from there.
    core.handle_notification(t, 3, &looking(3, MAX_ELECTION_EPOCH));
    assert_eq!(core.election_epoch(), MAX_ELECTION_EPOCH);
    core.handle_notification(t, 2, &looking(3, MAX_ELECTION_EPOCH));
    core.handle_timeout(t + core.config().finalize_wait);
    assert_eq!((core.role(), core.leader()), (Role::Following, Some(3)));
    core.leader_lost(t + core.config().finalize_wait);
    assert_eq!(core.election_epoch(), MAX_ELECTION_EPOCH + 1);
}
