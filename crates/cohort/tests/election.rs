//! Leader election on loopback TCP (ports 23600-23629): three and five voters elect one
//! leader; when the leader stops, the others elect a new one; a restarted voter joins.

use std::net::SocketAddr;
use std::time::Duration;

use cohort::election::{Election, ElectionOptions, Leadership, Role, Sid};

fn addrs(base: u16, n: i64) -> Vec<(Sid, SocketAddr)> {
    (1..=n)
        .map(|sid| (sid, SocketAddr::from(([127, 0, 0, 1], base + sid as u16))))
        .collect()
}

async fn start(base: u16, n: i64, sid: Sid, zxid: i64) -> Election {
    let mut opts = ElectionOptions::new(sid, addrs(base, n));
    opts.zxid = zxid;
    Election::start(opts).await.expect("bind election port")
}

/// Waits (generously: the machine is shared) until every election agrees that `expect`
/// leads.
async fn agreed(elections: &[&Election], expect: Sid) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let states: Vec<Leadership> = elections.iter().map(|e| e.leadership()).collect();
        if let Some(leader) = states[0].leader.filter(|&l| l == expect) {
            let all = elections.iter().zip(&states).all(|(e, s)| {
                s.leader == Some(leader)
                    && s.role
                        == if e.sid() == leader {
                            Role::Leading
                        } else {
                            Role::Following
                        }
            });
            if all {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no agreement: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_elect_fail_over_and_rejoin() {
    let base = 23600;
    let mut e: Vec<Option<Election>> = Vec::new();
    for sid in 1..=3 {
        // sid 1 has the highest zxid, so it must win despite the lowest sid.
        e.push(Some(
            start(base, 3, sid, if sid == 1 { 5 } else { 1 }).await,
        ));
    }
    let all: Vec<&Election> = e.iter().flatten().collect();
    agreed(&all, 1).await;

    e[0].take().unwrap().shutdown().await;
    let rest: Vec<&Election> = e.iter().flatten().collect();
    // sid 3: best of equal zxids
    agreed(&rest, 3).await;

    // sid 1 comes back with its better zxid: it joins the established leader.
    e[0] = Some(start(base, 3, 1, 5).await);
    let all: Vec<&Election> = e.iter().flatten().collect();
    agreed(&all, 3).await;
    for x in e.into_iter().flatten() {
        x.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_voters_survive_two_failures_not_three() {
    let base = 23610;
    let mut e: Vec<Option<Election>> = Vec::new();
    for sid in 1..=5 {
        e.push(Some(start(base, 5, sid, 0).await));
    }
    let all: Vec<&Election> = e.iter().flatten().collect();
    agreed(&all, 5).await;
    e[4].take().unwrap().shutdown().await;
    e[3].take().unwrap().shutdown().await;
    let rest: Vec<&Election> = e.iter().flatten().collect();
    agreed(&rest, 3).await;
    // Two of five left: a minority never elects.
    e[2].take().unwrap().shutdown().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for x in e.iter().flatten() {
        assert_eq!(x.role(), Role::Looking, "sid {} in a minority", x.sid());
    }
    for x in e.into_iter().flatten() {
        x.shutdown().await;
    }
}
