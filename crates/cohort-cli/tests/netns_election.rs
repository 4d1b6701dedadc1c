//! Leader election with real `cohort elect --json` processes, one voter per host (network
//! namespaces on one bridge), default timing:
//! - kill -9 of the leader, twice (5 voters): the survivors agree on a new leader;
//! - the leader's link cut (3 voters) and a 3 | 2 split with the leader on the small side
//!   (5 voters): the majority elects a new leader, the old leader steps down (its FOLLOWING
//!   acks stop) and the minority never has a leader again until the network heals; then
//!   all agree on one leader, within seconds of the heal even after a 30 s cut;
//! - restarts: a killed follower rejoins the established leader without disturbing it,
//!   a restarted former leader (the best vote) joins too, and the whole ensemble restarts
//!   (SIGTERM prints `stopped`);
//! - a follower cut off (3 voters) does not disturb the leader and follows it again
//!   after the heal;
//! - a hung leader (SIGSTOP) is replaced; after SIGCONT it follows the new leader; a hung
//!   follower changes nothing for the others and follows again after SIGCONT.
//!
//! "Agree" means: exactly one voter LEADING, every other one FOLLOWING it, and no role
//! change for a while after. On every event stream: no election epoch has two leaders
//! that a majority each decided for (a killed voter's decisions are forgotten with it, as
//! in `cohort_proto::election::sim`). Needs root and iproute2. Port: TCP 3888 in each host.
//! The bounds are generous (a loaded 2-core machine); these are not benchmarks.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{NetLab, OrPanic, Proc, cohort_bin, ms, secs};

const PORT: u16 = 3888;

/// Bound for a decision after a disruption: the silence timeout (1.5 s) plus a few resend
/// back-offs, times a lot of slack.
const ELECT_WITHIN: Duration = secs(20);

/// How long the leader stays cut off in `leader_cut_off_steps_down_...`.
const CUT: Duration = secs(30);

/// How long an agreement must hold (no role change anywhere) to count as settled.
const HOLD: Duration = secs(2);

type Sid = i64;

fn sid(i: usize) -> Sid {
    i as Sid + 1
}

/// One `role` event of a voter.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RoleEv {
    sid: Sid,
    role: String,
    leader: Option<Sid>,
    epoch: i64,
}

fn role_ev(v: &Value) -> Option<RoleEv> {
    if v["event"] != "role" {
        return None;
    }
    Some(RoleEv {
        sid: v["sid"].as_i64()?,
        role: v["role"].as_str()?.to_owned(),
        leader: v["leader"].as_i64(),
        epoch: v["election_epoch"].as_i64()?,
    })
}

/// The role events of `p` from line `mark` on.
fn role_events(p: &Proc, mark: usize) -> Vec<RoleEv> {
    p.lines()
        .iter()
        .skip(mark)
        .filter_map(|l| l.json.as_ref().and_then(role_ev))
        .collect()
}

/// Asserts that none of the voters `who` changed role since `marks` (the voter `was`
/// disturbed, reacted, ...: `what` says how the failure reads).
fn assert_undisturbed(ens: &Ensemble<'_>, who: &[usize], marks: &[usize], what: &str) {
    for &i in who {
        let after = role_events(ens.proc(i), marks[i]);
        assert!(after.is_empty(), "voter {} {what}: {after:?}", sid(i));
    }
}

/// Voters 1..=n, voter `i` (sid i + 1) on lab host `i`.
struct Ensemble<'a> {
    lab: &'a NetLab,
    procs: Vec<Option<Proc>>,
    /// Incarnations per host, for process names.
    starts: Vec<usize>,
}

impl<'a> Ensemble<'a> {
    fn new(lab: &'a NetLab) -> Self {
        let n = lab.len();
        Self {
            lab,
            procs: (0..n).map(|_| None).collect(),
            starts: vec![0; n],
        }
    }

    fn n(&self) -> usize {
        self.procs.len()
    }

    fn quorum(&self) -> usize {
        self.n() / 2 + 1
    }

    /// Starts voter `i` and waits for its `started` event.
    fn start(&mut self, i: usize) {
        assert!(self.procs[i].is_none(), "voter {} already runs", sid(i));
        let mut args = vec![
            "elect".to_owned(),
            "--json".to_owned(),
            "--id".to_owned(),
            sid(i).to_string(),
        ];
        for h in 0..self.n() {
            args.push("--voter".to_owned());
            args.push(format!("{}={}:{PORT}", sid(h), self.lab.host_addr(h)));
        }
        self.starts[i] += 1;
        let name = format!("voter{}-{}", sid(i), self.starts[i]);
        let p = self
            .lab
            .spawn(i, &name, &cohort_bin().to_string_lossy(), args);
        let started = p
            .wait_for(secs(10), |v| v["event"] == "started")
            .or_panic(&format!("{name} did not start"));
        assert_eq!(started["sid"], sid(i), "{name}: {started}");
        assert_eq!(
            started["addr"],
            format!("{}:{PORT}", self.lab.host_addr(i)),
            "{name}: {started}"
        );
        self.procs[i] = Some(p);
    }

    /// Starts every voter, highest sid first: the best vote is up before any majority can
    /// form, so it wins the first round.
    fn start_all(&mut self) {
        for i in (0..self.n()).rev() {
            self.start(i);
        }
    }

    fn proc(&self, i: usize) -> &Proc {
        self.procs[i]
            .as_ref()
            .unwrap_or_else(|| panic!("voter {} is not running", sid(i)))
    }

    fn live(&self) -> Vec<usize> {
        (0..self.n()).filter(|&i| self.procs[i].is_some()).collect()
    }

    /// kill -9 of voter `i`. Its decisions go with it (a restart may decide differently in
    /// the same epoch), so safety is checked on them first.
    fn kill9(&mut self, i: usize) {
        self.check_safety();
        self.proc(i).kill9();
        self.procs[i] = None;
    }

    fn marks(&self) -> Vec<usize> {
        self.procs
            .iter()
            .map(|p| p.as_ref().map_or(0, Proc::mark))
            .collect()
    }

    /// The last role event of voter `i`, if any.
    fn state(&self, i: usize) -> Option<RoleEv> {
        role_events(self.proc(i), 0).pop()
    }

    /// `among` agree: one of them LEADING, the others FOLLOWING it. Returns the leader.
    fn agreement(&self, among: &[usize]) -> Result<Sid, String> {
        let states: Vec<Option<RoleEv>> = among.iter().map(|&i| self.state(i)).collect();
        let leaders: Vec<&RoleEv> = states
            .iter()
            .flatten()
            .filter(|s| s.role == "leading")
            .collect();
        let [leader] = leaders.as_slice() else {
            return Err(format!("{} leading: {states:?}", leaders.len()));
        };
        let l = leader.sid;
        if leader.leader != Some(l) {
            return Err(format!("leader {l} reports leader {:?}", leader.leader));
        }
        for (&i, s) in among.iter().zip(&states) {
            let ok = s.as_ref().is_some_and(|s| {
                s.sid == sid(i)
                    && s.leader == Some(l)
                    && (s.role == "following" || (s.role == "leading" && s.sid == l))
            });
            if !ok {
                return Err(format!("voter {} is {s:?}, leader is {l}", sid(i)));
            }
        }
        Ok(l)
    }

    /// Waits until `among` agree on a leader and stay so for [`HOLD`]; returns the leader
    /// and how long the agreement took.
    fn settle(&self, among: &[usize], within: Duration) -> (Sid, Duration) {
        let began = Instant::now();
        let leader = loop {
            match self.agreement(among) {
                Ok(l) => break l,
                Err(why) if began.elapsed() > within => {
                    panic!(
                        "{among:?} did not agree within {within:?}: {why}\n{}",
                        self.describe()
                    )
                }
                Err(_) => std::thread::sleep(ms(50)),
            }
        };
        let took = began.elapsed();
        let marks = self.marks();
        std::thread::sleep(HOLD);
        for &i in among {
            let later = role_events(self.proc(i), marks[i]);
            assert!(
                later.is_empty(),
                "voter {} changed role after the agreement on leader {leader}: {later:?}\n{}",
                sid(i),
                self.describe()
            );
        }
        self.check_safety();
        (leader, took)
    }

    /// Every running voter agrees; returns the leader's host index.
    fn settle_all(&self, within: Duration) -> usize {
        let (leader, took) = self.settle(&self.live(), within);
        eprintln!(
            "all of {:?} agree on leader {leader} after {took:?}",
            self.live_sids()
        );
        host(leader)
    }

    fn live_sids(&self) -> Vec<Sid> {
        self.live().into_iter().map(sid).collect()
    }

    /// No election epoch has two leaders each decided for by a majority (the leader
    /// counts itself), over every event of every running voter.
    fn check_safety(&self) {
        let mut decisions: BTreeMap<i64, BTreeMap<Sid, BTreeSet<Sid>>> = BTreeMap::new();
        for i in self.live() {
            for ev in role_events(self.proc(i), 0) {
                assert_eq!(ev.sid, sid(i), "voter {} reports sid {}", sid(i), ev.sid);
                match (ev.role.as_str(), ev.leader) {
                    ("looking", None) => {}
                    ("leading", Some(l)) if l == ev.sid => {
                        decisions
                            .entry(ev.epoch)
                            .or_default()
                            .entry(l)
                            .or_default()
                            .insert(ev.sid);
                    }
                    ("following", Some(l)) if l != ev.sid => {
                        decisions
                            .entry(ev.epoch)
                            .or_default()
                            .entry(l)
                            .or_default()
                            .insert(ev.sid);
                    }
                    _ => panic!("voter {}: malformed role event {ev:?}", sid(i)),
                }
            }
        }
        for (epoch, leaders) in &decisions {
            let backed: Vec<Sid> = leaders
                .iter()
                .filter(|(_, who)| who.len() >= self.quorum())
                .map(|(l, _)| *l)
                .collect();
            assert!(
                backed.len() <= 1,
                "election epoch {epoch}: leaders {backed:?} each decided for by a majority: \
                 {leaders:?}\n{}",
                self.describe()
            );
        }
    }

    fn describe(&self) -> String {
        self.procs
            .iter()
            .flatten()
            .map(Proc::describe)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The lab host of voter `sid`.
fn host(sid: Sid) -> usize {
    usize::try_from(sid - 1).expect("sids start at 1")
}

fn lab(n: usize) -> NetLab {
    NetLab::new(n).unwrap_or_else(|e| panic!("cannot build the network lab: {e}"))
}

/// Waits until voter `i` reports a role other than LEADING after `mark`.
fn wait_step_down(ens: &Ensemble<'_>, i: usize, mark: usize, within: Duration) -> RoleEv {
    let line = ens
        .proc(i)
        .wait_for_after(mark, within, |v| {
            role_ev(v).is_some_and(|e| e.role != "leading")
        })
        .or_panic(&format!("voter {} did not step down", sid(i)));
    role_ev(&line).expect("a role event")
}

#[test]
fn kill_9_of_the_leader_elects_a_new_one_among_the_survivors() {
    let lab = lab(5);
    let mut ens = Ensemble::new(&lab);
    ens.start_all();
    let first = ens.settle_all(ELECT_WITHIN);
    assert_eq!(first, 4, "the best vote (sid 5) did not win a cold start");

    ens.kill9(first);
    let second = ens.settle_all(ELECT_WITHIN);
    assert_ne!(second, first);

    // Three of five left: still a majority.
    ens.kill9(second);
    let third = ens.settle_all(ELECT_WITHIN);
    assert!(![first, second].contains(&third));
}

#[test]
fn leader_cut_off_steps_down_and_the_majority_elects_a_new_one() {
    let lab = lab(3);
    let mut ens = Ensemble::new(&lab);
    ens.start_all();
    let old = ens.settle_all(ELECT_WITHIN);
    let marks = ens.marks();
    lab.cut_link(old);
    let cut_at = Instant::now();
    let rest: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let (new, took) = ens.settle(&rest, ELECT_WITHIN);
    eprintln!("majority {rest:?} elected {new} after {took:?}");
    assert_ne!(host(new), old);

    // Alone, the old leader hears no FOLLOWING acks: it gives up leading and stays LOOKING.
    let down = wait_step_down(&ens, old, marks[old], ELECT_WITHIN);
    assert_eq!(
        down.role, "looking",
        "cut off, it cannot follow anyone: {down:?}"
    );
    let alone = ens.proc(old).mark();
    ens.proc(old)
        .expect_none_after(alone, secs(3), |v| {
            role_ev(v).is_some_and(|e| e.role != "looking")
        })
        .or_panic("a voter cut off alone decided");
    ens.check_safety();

    // A long cut: TCP's retransmission back-off alone would leave the healed link idle
    // for about as long again (26 s after 30 s, before the runtime set TCP_USER_TIMEOUT).
    std::thread::sleep(CUT.saturating_sub(cut_at.elapsed()));
    lab.restore_link(old);
    let healed = Instant::now();
    assert_eq!(
        ens.settle_all(secs(15)),
        host(new),
        "the healed voter took over"
    );
    eprintln!("agreement {:?} after the heal", healed.elapsed() - HOLD);
}

#[test]
fn split_3_2_with_the_leader_on_the_small_side() {
    let lab = lab(5);
    let mut ens = Ensemble::new(&lab);
    ens.start_all();
    let old = ens.settle_all(ELECT_WITHIN);
    let buddy = (0..5).find(|&i| i != old).expect("a follower");
    let minority = [old, buddy];
    let majority: Vec<usize> = (0..5).filter(|i| !minority.contains(i)).collect();
    let marks = ens.marks();
    lab.partition(&[&majority, &minority]);

    let (new, took) = ens.settle(&majority, ELECT_WITHIN);
    eprintln!("majority {majority:?} elected {new} after {took:?}");
    assert!(majority.contains(&host(new)));
    wait_step_down(&ens, old, marks[old], ELECT_WITHIN);
    // Two of five: no leader, and nobody there may lead or follow after the split (the
    // buddy follows the old leader until that one steps down, then looks with it).
    std::thread::sleep(secs(3));
    for &i in &minority {
        let after = role_events(ens.proc(i), marks[i]);
        assert!(
            after.iter().all(|e| e.role == "looking"),
            "voter {} on the minority side decided: {after:?}\n{}",
            sid(i),
            ens.describe()
        );
        assert_eq!(ens.state(i).map(|e| e.role).as_deref(), Some("looking"));
    }
    ens.check_safety();

    lab.heal();
    assert_eq!(
        ens.settle_all(secs(15)),
        host(new),
        "a healed voter took over"
    );
}

#[test]
fn restarted_voters_join_the_established_leader_and_the_ensemble_restarts() {
    let lab = lab(3);
    let mut ens = Ensemble::new(&lab);
    ens.start_all();
    let leader = ens.settle_all(ELECT_WITHIN);
    assert_eq!(leader, 2, "the best vote (sid 3) did not win a cold start");

    // A follower restarts: it follows the leader; nobody else notices.
    let follower = 0;
    ens.kill9(follower);
    let marks = ens.marks();
    ens.start(follower);
    assert_eq!(ens.settle_all(ELECT_WITHIN), leader);
    assert_undisturbed(&ens, &[1, 2], &marks, "was disturbed");

    // The leader restarts: sid 2 takes over, and sid 3, back with the best vote (same
    // zxid, higher sid), joins it instead of taking over.
    ens.kill9(leader);
    let second = ens.settle_all(ELECT_WITHIN);
    assert_eq!(second, 1);
    let marks = ens.marks();
    ens.start(leader);
    assert_eq!(ens.settle_all(ELECT_WITHIN), second);
    assert_undisturbed(&ens, &[0, 1], &marks, "was disturbed");

    // The whole ensemble: SIGTERM stops each voter cleanly; all start again.
    ens.check_safety();
    for i in 0..3 {
        let p = ens.procs[i].take().expect("running");
        p.sigterm();
        p.wait_for(secs(10), |v| v["event"] == "stopped")
            .or_panic("no `stopped` after SIGTERM");
        let status = p.wait_exit(secs(10)).or_panic("did not exit after SIGTERM");
        assert!(status.success(), "{}: {status}", p.name());
    }
    ens.start_all();
    assert_eq!(ens.settle_all(ELECT_WITHIN), 2);
}

#[test]
fn hung_leader_is_replaced_and_follows_after_sigcont() {
    let lab = lab(3);
    let mut ens = Ensemble::new(&lab);
    ens.start_all();
    let old = ens.settle_all(ELECT_WITHIN);
    let rest: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let marks = ens.marks();
    ens.proc(old).sigstop();
    let stopped_at = Instant::now();
    let (new, took) = ens.settle(&rest, ELECT_WITHIN);
    eprintln!("hung leader replaced by {new} after {took:?}");
    assert_ne!(host(new), old);
    // Its TCP connections stay up, so only the silence timeout (1.5 s by default) can
    // tell; a reaction within half a second would mean something else ended the term.
    let first_change = rest
        .iter()
        .filter_map(|&i| {
            ens.proc(i)
                .wait_for_json_line(marks[i], ms(0), |v| role_ev(v).is_some())
                .ok()
        })
        .map(|l| l.at)
        .min()
        .expect("the others changed role");
    assert!(
        first_change.duration_since(stopped_at) >= ms(500),
        "a follower gave up on a hung leader after {:?}, before the silence timeout",
        first_change.duration_since(stopped_at)
    );
    assert!(stopped_at.elapsed() < ELECT_WITHIN + HOLD);

    let marks = ens.marks();
    ens.proc(old).sigcont();
    let down = wait_step_down(&ens, old, marks[old], ELECT_WITHIN);
    eprintln!("resumed old leader: {down:?}");
    assert_eq!(ens.settle_all(ELECT_WITHIN), host(new));
    assert_undisturbed(&ens, &rest, &marks, "was disturbed by the resumed leader");
}

#[test]
fn follower_cut_off_leaves_the_leader_alone_and_rejoins_after_the_heal() {
    let lab = lab(3);
    let mut ens = Ensemble::new(&lab);
    ens.start_all();
    let leader = ens.settle_all(ELECT_WITHIN);
    let cut = (0..3).find(|&i| i != leader).expect("a follower");
    let others: Vec<usize> = (0..3).filter(|&i| i != cut).collect();
    let marks = ens.marks();
    lab.cut_link(cut);
    // The leader keeps a majority (itself and the other follower).
    let down = wait_step_down(&ens, cut, marks[cut], ELECT_WITHIN);
    assert_eq!(
        down.role, "looking",
        "cut off, it cannot follow anyone: {down:?}"
    );
    std::thread::sleep(secs(8));
    assert_eq!(ens.state(cut).map(|e| e.role).as_deref(), Some("looking"));
    lab.restore_link(cut);
    assert_eq!(ens.settle_all(secs(15)), leader);
    assert_undisturbed(&ens, &others, &marks, "was disturbed");
}

#[test]
fn hung_follower_leaves_the_leader_alone_and_follows_again_after_sigcont() {
    let lab = lab(3);
    let mut ens = Ensemble::new(&lab);
    ens.start_all();
    let leader = ens.settle_all(ELECT_WITHIN);
    let hung = (0..3).find(|&i| i != leader).expect("a follower");
    let others: Vec<usize> = (0..3).filter(|&i| i != hung).collect();
    let marks = ens.marks();
    // Longer than the silence timeout: the leader keeps a majority without it.
    ens.proc(hung).sigstop();
    std::thread::sleep(secs(4));
    assert_undisturbed(&ens, &others, &marks, "reacted to a hung follower");
    ens.proc(hung).sigcont();
    // Resumed, it may first time out on the leader (LOOKING) and then rejoin it at once,
    // or read the queued heartbeats first and carry on: give it time to do either.
    std::thread::sleep(secs(2));
    assert_eq!(ens.settle_all(ELECT_WITHIN), leader);
    assert_undisturbed(&ens, &others, &marks, "was disturbed");
}
