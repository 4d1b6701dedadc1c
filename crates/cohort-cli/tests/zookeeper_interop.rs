//! Leader election against real ZooKeeper 3.8 servers (Debian package `zookeeper`,
//! started by the test with its own configuration on loopback, ports 23000-23499).

#[allow(dead_code)]
#[path = "../src/perf/zookeeper.rs"]
mod zookeeper;

use std::path::PathBuf;
use std::time::Duration;

use zookeeper::{ZkEnsemble, ZkMode, ZkVoter};

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
