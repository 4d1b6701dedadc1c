//! Leader election against real ZooKeeper 3.8 servers (Debian package `zookeeper`,
//! started by the test with its own configuration on loopback, ports 23000-23499): the
//! harness alone, and ensembles where cohort voters and ZooKeeper servers elect together.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cohort::election::{Election, ElectionOptions, Leadership, Role, Sid};
use cohort_bench::perf::zookeeper::{ZkEnsemble, ZkMode, ZkTiming, ZkVoter};

fn tmp() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

const POLL: Duration = Duration::from_millis(20);

/// The harness itself: three ZooKeeper servers elect a leader, and after the leader is
/// killed with SIGKILL the two others elect a new one among themselves.
#[test]
fn zookeeper_ensemble_elects_and_fails_over() {
    let voters: Vec<ZkVoter> = (1..=3).map(|sid| ZkVoter::loopback(23000, sid)).collect();
    let mut zk = ZkEnsemble::new(&tmp(), &voters, &[1, 2, 3]).unwrap();
    zk.start_all().unwrap();
    let (leader, _) = zk
        .wait_leader(&[1, 2, 3], Duration::from_secs(60), POLL)
        .unwrap();
    zk.kill9(leader);
    let rest: Vec<u64> = [1, 2, 3].into_iter().filter(|&s| s != leader).collect();
    let (new_leader, _) = zk
        .wait_leader(&rest, Duration::from_secs(60), POLL)
        .unwrap();
    assert_ne!(new_leader, leader);
    assert!(!zk.is_running(leader));
    for sid in rest {
        let expect = if sid == new_leader {
            ZkMode::Leader
        } else {
            ZkMode::Follower
        };
        assert_eq!(zk.mode(sid), Some(expect), "server {sid}");
    }
}

// ---------------------------------------------------------------------------------------
// Mixed ensembles: ZooKeeper servers and an in-process cohort voter in one election.

/// ZooKeeper timing of the mixed ensembles. `initLimit × tickTime` = 10 s is how long a
/// ZooKeeper server that won FLE stays LEADING while it waits for a ZAB quorum of
/// followers. With one ZooKeeper server and one cohort voter left (a cohort voter never
/// connects to the ZAB port) it never gets one, so it gives up after those 10 s and
/// elects again. 10 s is long enough to check on a loaded machine that the cohort voter
/// follows it steadily, and short enough to also see the re-election within the test.
/// syncLimit 5 s: the ZooKeeper followers of the 3-ensemble notice a dead leader by
/// its closed connection anyway.
const MIXED_TIMING: ZkTiming = ZkTiming {
    tick_ms: 1000,
    init_limit: 10,
    sync_limit: 5,
};

/// A cohort voter of the same ensemble as `voters` (ZooKeeper's `zoo.cfg` lines), so the
/// config string it sends is the one ZooKeeper sends.
fn cohort_options(voters: &[ZkVoter], sid: u64, zxid: i64) -> ElectionOptions {
    let mut opts = ElectionOptions::new(
        sid as Sid,
        voters.iter().map(|v| (v.sid as Sid, v.election_addr())),
    );
    opts.quorum_ports = voters
        .iter()
        .map(|v| (v.sid as Sid, v.quorum_port))
        .collect();
    opts.zxid = zxid;
    opts
}

/// Every leadership change of a running cohort voter, with the time it was seen.
struct Recorder {
    seen: Arc<Mutex<Vec<(Instant, Leadership)>>>,
}

impl Recorder {
    fn start(rt: &tokio::runtime::Runtime, election: &Election) -> Self {
        let seen = Arc::new(Mutex::new(vec![(Instant::now(), election.leadership())]));
        let mut changes = election.watch();
        let s = seen.clone();
        rt.spawn(async move {
            while changes.changed().await.is_ok() {
                let l = *changes.borrow_and_update();
                s.lock().unwrap().push((Instant::now(), l));
            }
        });
        Self { seen }
    }

    fn history(&self) -> Vec<(Instant, Leadership)> {
        self.seen.lock().unwrap().clone()
    }

    fn latest(&self) -> Leadership {
        self.history().last().expect("starts with one").1
    }

    /// Waits until the voter follows `leader` in an election epoch above `after_epoch`;
    /// returns that leadership and when it was seen.
    fn wait_following(
        &self,
        leader: u64,
        after_epoch: i64,
        timeout: Duration,
    ) -> (Instant, Leadership) {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self.history().into_iter().find(|(_, l)| {
                l.role == Role::Following
                    && l.leader == Some(leader as Sid)
                    && l.election_epoch > after_epoch
            });
            if let Some(f) = found {
                return f;
            }
            assert!(
                Instant::now() < deadline,
                "the cohort voter did not follow {leader} (epoch > {after_epoch}) within \
                 {timeout:?}: {:?}",
                self.history()
            );
            std::thread::sleep(POLL);
        }
    }

    /// The changes seen after `t`.
    fn changes_after(&self, t: Instant) -> Vec<Leadership> {
        self.history()
            .into_iter()
            .filter(|(at, _)| *at > t)
            .map(|(_, l)| l)
            .collect()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Gives the ZooKeeper servers `sids` a history: they run as a majority of the ensemble
/// (the cohort voters absent) until they have a leader, so their epoch and zxid are
/// above 0; then they are killed.
fn give_history(zk: &mut ZkEnsemble, sids: &[u64]) {
    for &sid in sids {
        zk.start(sid).unwrap();
    }
    zk.wait_leader(sids, Duration::from_secs(60), POLL).unwrap();
    for &sid in sids {
        zk.kill9(sid);
    }
}

/// Two ZooKeeper servers and one cohort voter elect one leader together. The cohort voter
/// has the highest sid (3) but a lower zxid (epoch 0, while the ZooKeeper servers already
/// are in epoch 1), so a ZooKeeper server must win and the cohort voter follow it. When
/// that leader is killed, the last ZooKeeper server wins FLE against the cohort voter,
/// which follows it; the ZooKeeper server never gets a ZAB quorum and elects again after
/// `initLimit × tickTime`, and the cohort voter follows it again in the newer round.
#[test]
fn cohort_voter_follows_zookeeper_leaders_in_a_mixed_ensemble() {
    let voters: Vec<ZkVoter> = (1..=3).map(|sid| ZkVoter::loopback(23100, sid)).collect();
    let mut zk = ZkEnsemble::with_timing(&tmp(), &voters, &[1, 2], MIXED_TIMING).unwrap();
    give_history(&mut zk, &[1, 2]);

    let rt = runtime();
    zk.start_all().unwrap();
    let cohort = rt
        .block_on(Election::start(cohort_options(&voters, 3, 5)))
        .unwrap();
    let rec = Recorder::start(&rt, &cohort);
    let (leader, _) = zk
        .wait_leader(&[1, 2], Duration::from_secs(60), POLL)
        .unwrap();
    let survivor = 3 - leader;
    let (_, first) = rec.wait_following(leader, 0, Duration::from_secs(30));
    assert_eq!(zk.mode(leader), Some(ZkMode::Leader));
    assert_eq!(zk.mode(survivor), Some(ZkMode::Follower));

    zk.kill9(leader);
    // The survivor's vote (epoch 1) beats the cohort voter's (epoch 0): it wins FLE with
    // the cohort voter's vote and goes LEADING; the cohort voter follows it.
    let (t_follow, second) =
        rec.wait_following(survivor, first.election_epoch, Duration::from_secs(30));
    // ... and keeps following it while the ZooKeeper leader waits for a ZAB quorum (10 s
    // from about the same moment): no silence timeout, no new round of its own.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        rec.changes_after(t_follow),
        Vec::<Leadership>::new(),
        "the cohort voter left its ZooKeeper leader"
    );
    assert_eq!(rec.latest(), second);
    // Leading without a ZAB quorum, the ZooKeeper server does not serve clients.
    assert_eq!(zk.mode(survivor), Some(ZkMode::NotServing));

    // After initLimit × tickTime the ZooKeeper server gives up leading and starts a new
    // round; the cohort voter, hearing its leader LOOKING, joins that round and follows
    // it again.
    let (t_third, third) =
        rec.wait_following(survivor, second.election_epoch, Duration::from_secs(40));
    assert!(third.election_epoch > second.election_epoch);
    // Not sooner than the ZooKeeper server's wait (minus a margin for the moments the two
    // decided): the new round was its, not a silence timeout of the cohort voter.
    let waited = t_third - t_follow;
    eprintln!("the ZooKeeper leader gave up after {waited:?}");
    assert!(
        waited >= Duration::from_secs(7),
        "re-elected after {waited:?}, before initLimit × tickTime"
    );
    rt.block_on(cohort.shutdown());
}

/// Four ZooKeeper servers with a history and a cohort voter (sid 5, lower zxid): the cohort
/// voter, started after the ZooKeeper servers have a leader, joins it as a follower.
/// After the ZooKeeper leader is killed the three other ZooKeeper servers still make a ZAB
/// quorum (3 of 5), so the new leader serves and stays; the cohort voter follows that
/// same leader, steadily.
#[test]
fn cohort_voter_joins_and_follows_a_zookeeper_majority() {
    let voters: Vec<ZkVoter> = (1..=5).map(|sid| ZkVoter::loopback(23200, sid)).collect();
    let zk_sids = [1, 2, 3, 4];
    let mut zk = ZkEnsemble::with_timing(&tmp(), &voters, &zk_sids, MIXED_TIMING).unwrap();
    give_history(&mut zk, &zk_sids);
    zk.start_all().unwrap();
    let (leader, _) = zk
        .wait_leader(&zk_sids, Duration::from_secs(60), POLL)
        .unwrap();

    let rt = runtime();
    let cohort = rt
        .block_on(Election::start(cohort_options(&voters, 5, 5)))
        .unwrap();
    let rec = Recorder::start(&rt, &cohort);
    // An established ensemble: the cohort voter learns the leader from the answers.
    let (_, first) = rec.wait_following(leader, 0, Duration::from_secs(30));

    zk.kill9(leader);
    let rest: Vec<u64> = zk_sids.into_iter().filter(|&s| s != leader).collect();
    let (new_leader, _) = zk
        .wait_leader(&rest, Duration::from_secs(60), POLL)
        .unwrap();
    assert_ne!(new_leader, leader);
    let (t_follow, second) =
        rec.wait_following(new_leader, first.election_epoch, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        rec.changes_after(t_follow),
        Vec::<Leadership>::new(),
        "the cohort voter left its ZooKeeper leader"
    );
    assert_eq!(rec.latest(), second);
    assert_eq!(zk.agreed_leader(&rest), Some(new_leader));
    rt.block_on(cohort.shutdown());
}
