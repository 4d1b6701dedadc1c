//! Resource limits under attack (issue 16), with real connections on loopback: idle
//! connections do not lock a new member out of the channel, and connections sending the
//! beginnings of huge frames are closed before the node holds more than it allows.
//!
//! Multicast ports 46700-46709, one per test.

mod support;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use cohort::{Config, InboundLimits, MulticastConfig, Node, SendOptions};
use cohort_proto::wire::tribes::frame::START_DATA;
use support::wait_for_view;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep};

fn config(mcast_port: u16) -> Config {
    Config::default()
        .domain(Bytes::from(format!("limits-test-{mcast_port}")))
        .port(0)
        .multicast(
            MulticastConfig::default()
                .port(mcast_port)
                .interface(Some(Ipv4Addr::LOCALHOST)),
        )
}

/// Waits until `check` holds, or fails after `limit` with `what`.
async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "{what}");
        sleep(Duration::from_millis(20)).await;
    }
}

/// Issue 16 measured 20 000 idle connections using up a node's file descriptors, after
/// which new members' frames got no ACK. Now the receiver serves at most
/// `inbound.max_connections` (32 here) and a new connection takes the place of the
/// oldest that has delivered nothing: an attacker keeps opening idle connections all
/// through the test (2 000 of them), yet a new member joins and its frames get ACKs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_stop_a_new_members_frames_from_getting_acks() {
    let port = 46700;
    let cfg = config(port).inbound(InboundLimits::default().max_connections(32));
    let (a, _a_events) = Node::start(cfg).await.unwrap();
    let target = a.local_member().addr;

    // The attacker: idle connections, opened one after another and kept open.
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut idle = Vec::new();
            while idle.len() < 2000 && !stop.load(Ordering::Relaxed) {
                if let Ok(conn) = TcpStream::connect(target).await {
                    idle.push(conn);
                }
                if idle.len() % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            // Held until the test ends.
            while !stop.load(Ordering::Relaxed) {
                sleep(Duration::from_millis(20)).await;
            }
            idle.len()
        }
    });
    eventually(
        Duration::from_secs(20),
        "the attacker's connections never filled the cap",
        || a.stats().inbound.evicted >= 100,
    )
    .await;

    // A new member joins (the join itself runs over the channel) and sends with ACKs.
    let (b, _b_events) = Node::start(config(port)).await.unwrap();
    let ids = [a.id(), b.id()];
    wait_for_view(&a, &ids, Duration::from_secs(10)).await;
    wait_for_view(&b, &ids, Duration::from_secs(10)).await;
    for i in 0..20 {
        let report = b
            .send(
                &[a.local_member().clone()],
                format!("frame {i}"),
                SendOptions::USE_ACK,
            )
            .await
            .expect("the new member's frames get ACKs despite the idle connections");
        assert_eq!(report.acked.len(), 1);
    }
    stop.store(true, Ordering::Relaxed);
    let opened = attacker.await.unwrap();
    let stats = a.stats().inbound;
    assert!(stats.open <= 32, "{stats:?}");
    assert!(
        stats.accepted >= 100 && stats.evicted >= 100,
        "the attacker's {opened} connections were not served and evicted: {stats:?}"
    );
}

/// Issue 16 measured ten connections each sending 30 MiB of a declared 64 MiB frame
/// holding 300 MB. Now all connections together hold at most
/// `inbound.max_buffered_total` (8 MiB here): six connections each sending 3 MiB of a
/// declared 60 MiB frame get closed once the sum would pass it, and a member still gets
/// its ACKs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_of_huge_frames_cannot_make_a_node_hold_more_than_allowed() {
    let port = 46701;
    let cfg = config(port).inbound(InboundLimits::default().max_buffered_total(8 << 20));
    let (a, _a_events) = Node::start(cfg).await.unwrap();
    let (b, _b_events) = Node::start(config(port)).await.unwrap();
    let ids = [a.id(), b.id()];
    wait_for_view(&a, &ids, Duration::from_secs(10)).await;

    let target = a.local_member().addr;
    let mut writers = Vec::new();
    for _ in 0..6 {
        writers.push(tokio::spawn(async move {
            let mut conn = TcpStream::connect(target).await.expect("connect");
            let mut head = START_DATA.to_vec();
            head.extend_from_slice(&(60i32 << 20).to_be_bytes());
            conn.write_all(&head).await.expect("frame start");
            let chunk = vec![0x55u8; 64 * 1024];
            for _ in 0..48 {
                // Closed by the node: the rest is refused.
                if conn.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            sleep(Duration::from_secs(30)).await;
        }));
    }
    eventually(
        Duration::from_secs(20),
        "no connection was closed for buffering too much",
        || a.stats().inbound.over_buffer >= 1,
    )
    .await;
    sleep(Duration::from_millis(500)).await;
    let stats = a.stats().inbound;
    assert!(stats.buffered <= 8 << 20, "{stats:?}");
    let report = b
        .send(
            &[a.local_member().clone()],
            "still here",
            SendOptions::USE_ACK,
        )
        .await
        .expect("a member still gets its ACKs");
    assert_eq!(report.acked.len(), 1);
    for w in writers {
        w.abort();
    }
}

/// The same over the reliable channel's TCP transport: the member that accepts holds
/// at most `inbound.max_connections` (16 here) connections in their hello exchange, the
/// oldest making room for a new one. 300 idle connections opened before the other member
/// dials do not keep its connection out: messages flow both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_keep_a_reliable_tcp_member_out() {
    use cohort::reliable::{ReliableChannel, ReliableChannelConfig, Transport};
    use cohort::{GroupMember, MemberId, View};
    use std::net::SocketAddr;

    let ports: Vec<u16> = (0..2)
        .map(|_| std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap())
        .collect::<Vec<_>>()
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let mut rng = rand::rng();
    let mut ids = [MemberId::random(&mut rng), MemberId::random(&mut rng)];
    // The lower id dials, the higher accepts: ids[1] accepts.
    ids.sort();
    let view = View::new(
        1,
        ids.iter().zip(&ports).map(|(id, port)| {
            GroupMember::new(*id, SocketAddr::from((Ipv4Addr::LOCALHOST, *port)))
        }),
    )
    .expect("members");
    let config = ReliableChannelConfig::default()
        .transport(Transport::Tcp)
        .port_offset(0)
        .inbound(InboundLimits::default().max_connections(16));
    let acceptor = ReliableChannel::start_static(ids[1], config.clone(), view.clone()).unwrap();
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, ports[1]));
    let mut idle = Vec::new();
    for _ in 0..300 {
        if let Ok(conn) = TcpStream::connect(target).await {
            idle.push(conn);
        }
    }
    eventually(
        Duration::from_secs(20),
        "the idle connections never filled the cap",
        || acceptor.stats().tcp.inbound.evicted >= 100,
    )
    .await;
    let dialer = ReliableChannel::start_static(ids[0], config, view).unwrap();
    for (from, to) in [(&dialer, &acceptor), (&acceptor, &dialer)] {
        from.multicast(Bytes::from_static(b"through"))
            .await
            .expect("multicast");
        let delivered = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let d = to.recv().await.expect("open");
                if d.from != to.local() {
                    return d;
                }
            }
        })
        .await
        .expect("the member's messages get through despite the idle connections");
        assert_eq!(&delivered.payload[..], b"through");
    }
    let inbound = acceptor.stats().tcp.inbound;
    assert!(inbound.open <= 16, "{inbound:?}");
    drop(idle);
    dialer.shutdown().await;
    acceptor.shutdown().await;
}
