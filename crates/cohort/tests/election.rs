//! Leader election on loopback TCP (ports 23600-23632): three and five voters elect one
//! leader; when the leader stops, the others elect a new one; a restarted voter joins; a
//! lower sid that dials in gets the connection we hold to it probed.

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

/// Reads the next notification from a kept election connection, or `None` after `wait`.
async fn next_notification(
    stream: &mut tokio::net::TcpStream,
    decoder: &mut cohort_proto::wire::zookeeper::FrameDecoder,
    wait: Duration,
) -> Option<cohort_proto::wire::zookeeper::Notification> {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = [0u8; 4096];
    loop {
        if let Some(body) = decoder.next_frame().expect("valid frame") {
            return Some(
                cohort_proto::wire::zookeeper::Notification::decode(&body)
                    .expect("valid notification"),
            );
        }
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .ok()?
            .expect("read");
        assert!(n > 0, "the voter closed the connection");
        decoder.extend(&buf[..n]);
    }
}

/// A lower sid dials a higher one only when it has no connection to it. If the higher one
/// still holds one (dead at the lower end after a partition, unnoticed because nothing was
/// sent), it must write on it so that a dead one resets and gets replaced; else the two
/// stay disconnected. Here a fake sid 1 keeps the connection but dials anyway: the voter,
/// silent until then, re-sends its last notification on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_sid_dialling_in_gets_the_held_connection_probed() {
    use bytes::BytesMut;
    use cohort_proto::wire::zookeeper::{
        CURRENT_VERSION, ConnectionHeader, FrameDecoder, Notification, encode_frame,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let base = 23630;
    let fake = tokio::net::TcpListener::bind(("127.0.0.1", base + 1))
        .await
        .expect("bind the fake voter");
    let voter = start(base, 2, 2, 0).await;
    let (mut conn, _) = tokio::time::timeout(Duration::from_secs(10), fake.accept())
        .await
        .expect("sid 2 connects to the lower sid")
        .expect("accept");
    let mut raw = BytesMut::new();
    let header = loop {
        if let Some((h, used)) = ConnectionHeader::decode_prefix(&raw).expect("header") {
            let _ = raw.split_to(used);
            break h;
        }
        assert!(conn.read_buf(&mut raw).await.expect("read") > 0, "closed");
    };
    assert_eq!(header.sid, 2);
    let mut decoder = FrameDecoder::new();
    decoder.extend(&raw);
    let send = |state: Role| {
        let mut frame = BytesMut::new();
        let n = Notification {
            state,
            leader: 1,
            zxid: 5,
            election_epoch: 1,
            peer_epoch: 0,
            version: CURRENT_VERSION,
            config: bytes::Bytes::new(),
        };
        encode_frame(&n.to_bytes(), &mut frame);
        frame
    };
    // A better vote makes sid 2 follow sid 1; a LEADING notification gets its ack. Like a
    // ZooKeeper leader, sid 1 sends nothing by itself but answers every LOOKING
    // notification (sid 2's question to a leader silent for 1.5 heartbeats) with LEADING.
    conn.write_all(&send(Role::Looking)).await.expect("write");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while voter.leadership().role != Role::Following {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            voter.leadership()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    conn.write_all(&send(Role::Leading)).await.expect("write");
    let mut acks = 0;
    while acks < 2 {
        let n = next_notification(&mut conn, &mut decoder, Duration::from_secs(2))
            .await
            .expect("no FOLLOWING answer to LEADING");
        if n.state == Role::Looking {
            conn.write_all(&send(Role::Leading)).await.expect("write");
        }
        acks += usize::from(n.state == Role::Following && n.leader == 1);
    }
    assert_eq!(voter.leader(), Some(1));
    // Sid 2's LOOKING notifications from before its decision got answers too: let their
    // acks arrive, answering nothing more. Sid 2's next question (LOOKING) is then due
    // 375 ms after the last LEADING, so the first notification after the dial-in must be
    // the re-sent last one (FOLLOWING).
    while next_notification(&mut conn, &mut decoder, Duration::from_millis(150))
        .await
        .is_some_and(|n| n.state == Role::Following)
    {}

    // Sid 1 dials in (header, close), as if it had lost its end of the connection.
    let mut dial = tokio::net::TcpStream::connect(("127.0.0.1", base + 2))
        .await
        .expect("dial sid 2");
    let mut h = BytesMut::new();
    ConnectionHeader {
        sid: 1,
        election_addr: format!("127.0.0.1:{}", base + 1),
    }
    .encode(&mut h);
    dial.write_all(&h).await.expect("write header");
    drop(dial);
    let probe = next_notification(&mut conn, &mut decoder, Duration::from_secs(5))
        .await
        .expect("the held connection was not probed");
    assert_eq!((probe.state, probe.leader), (Role::Following, 1));
    voter.shutdown().await;
}
