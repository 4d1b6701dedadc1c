//! Cluster-key mode with real sockets on loopback: nodes that share a key form a group and
//! talk; a node without the key (or with another key) cannot join, inject an application
//! message or evict anyone; forged, replayed and tampered packets are dropped and counted;
//! and the keyed cluster keeps its view and its messages flowing meanwhile.
//!
//! Multicast ports 46600-46619, one per test; TCP/UDP ports 27800-27839 on 127.0.0.1 for the
//! gossip-router test, UDP ports 27840-27841 for the (ignored) sealing-cost measurement.

mod support;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;
use support::wait_for_view;

use bytes::{Bytes, BytesMut};
use cohort::reliable::{ReliableChannel, ReliableChannelConfig, ReliableConfig, Transport};
use cohort::{
    Config, Event, Key, Keyring, Member, MemberId, MulticastConfig, Node, SecurityStats,
    SendOptions, View,
};
use cohort_proto::wire::tribes::{COHORT_COMMAND, MemberRecord, SHUTDOWN_COMMAND};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::time::{Instant, sleep, timeout};

fn key(n: u8) -> Key {
    Key::from_bytes([n; 32])
}

fn config(mcast_port: u16, keyring: Option<Keyring>) -> Config {
    Config::default()
        .domain(Bytes::from(format!("security-test-{mcast_port}")))
        .port(0)
        .multicast(
            MulticastConfig::default()
                .port(mcast_port)
                .interface(Some(Ipv4Addr::LOCALHOST)),
        )
        .keyring(keyring)
}

fn security(node: &Node) -> SecurityStats {
    node.stats().security
}

/// A socket that hears the multicast group (as any host on the LAN can) and sends to it.
fn group_socket(port: u16) -> UdpSocket {
    let group = Ipv4Addr::new(228, 0, 0, 4);
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    s.set_reuse_address(true).unwrap();
    s.bind(&SocketAddr::V4(SocketAddrV4::new(group, port)).into())
        .unwrap();
    s.join_multicast_v4(&group, &Ipv4Addr::LOCALHOST).unwrap();
    s.set_multicast_if_v4(&Ipv4Addr::LOCALHOST).unwrap();
    s.set_multicast_loop_v4(true).unwrap();
    s.set_nonblocking(true).unwrap();
    UdpSocket::from_std(s.into()).unwrap()
}

/// The heartbeat a member would send, with `command` (a shutdown evicts it at once).
fn forged_heartbeat(member: &Member, command: &'static [u8]) -> Bytes {
    MemberRecord {
        alive_ms: 10_000,
        tcp_port: i32::from(member.addr.port()),
        secure_port: -1,
        udp_port: -1,
        host: member.addr.ip(),
        command: Bytes::from_static(command),
        domain: member.domain.clone(),
        unique_id: member.id.0,
        payload: Bytes::new(),
    }
    .to_bytes()
}

/// Sends a message from `from` to `to` and waits until `to` hands it to the application.
async fn message_flows(from: &Node, to: &Node, events: &mut cohort::Events, text: &'static str) {
    let report = from
        .send(&[to.local_member().clone()], text, SendOptions::USE_ACK)
        .await
        .expect("the keyed cluster keeps delivering");
    assert_eq!(report.acked.len(), 1);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, events.recv()).await {
            Ok(Some(Event::Message(m))) => {
                assert_eq!(&m.data[..], text.as_bytes());
                return;
            }
            Ok(Some(_)) => continue,
            other => panic!("message {text:?} never arrived: {other:?}"),
        }
    }
}

#[tokio::test]
async fn nodes_without_the_key_cannot_join_inject_or_evict() {
    let port = 46600;
    let ring = Keyring::new(key(1));
    let (a, mut a_events) = Node::start(config(port, Some(ring.clone()))).await.unwrap();
    let (b, mut b_events) = Node::start(config(port, Some(ring.clone()))).await.unwrap();
    let ids = [a.id(), b.id()];
    let view = wait_for_view(&a, &ids, Duration::from_secs(5)).await;
    assert_eq!(wait_for_view(&b, &ids, Duration::from_secs(2)).await, view);

    // An outsider without a key, and one with another key, on the same group and domain.
    let (plain, _plain_events) = Node::start(config(port, None)).await.unwrap();
    let (other, _other_events) = Node::start(config(port, Some(Keyring::new(key(2)))))
        .await
        .unwrap();
    sleep(Duration::from_secs(2)).await;
    for n in [&a, &b] {
        assert_eq!(
            n.view().as_ref(),
            Some(&view),
            "an outsider got into the view"
        );
        assert!(n.members().iter().all(|m| ids.contains(&m.id)));
        let s = security(n);
        assert!(
            s.unauthenticated > 0,
            "plain heartbeats were not counted: {s:?}"
        );
        assert!(
            s.unknown_key > 0,
            "other-key heartbeats were not counted: {s:?}"
        );
    }
    // Nor do the outsiders hear the keyed members.
    for n in [&plain, &other] {
        assert!(
            n.members().iter().all(|m| !ids.contains(&m.id)),
            "{:?}",
            n.members()
        );
        assert!(
            n.view()
                .is_none_or(|v| !v.contains(&a.id()) && !v.contains(&b.id()))
        );
    }

    // Inject: the outsiders send application messages straight to a's receiver.
    let before = security(&a);
    for n in [&plain, &other] {
        let sent = n
            .send(
                &[a.local_member().clone()],
                "injected",
                SendOptions::USE_ACK,
            )
            .await;
        assert!(sent.is_err(), "an outsider's message was acknowledged");
    }
    let after = security(&a);
    assert!(after.unauthenticated > before.unauthenticated);
    assert!(after.unknown_key > before.unknown_key);
    assert_eq!(a.stats().messages_received, 0);

    // Evict: forged plain heartbeats announcing b's shutdown, and claiming b's address
    // under a fresh id, multicast to the group.
    let sock = group_socket(port);
    let group = SocketAddr::from((Ipv4Addr::new(228, 0, 0, 4), port));
    let b_member = b.local_member().clone();
    let mut fresh = b_member.clone();
    fresh.id = MemberId([0x5A; 16]);
    for _ in 0..20 {
        sock.send_to(&forged_heartbeat(&b_member, SHUTDOWN_COMMAND), group)
            .await
            .unwrap();
        sock.send_to(&forged_heartbeat(&fresh, COHORT_COMMAND), group)
            .await
            .unwrap();
        sleep(Duration::from_millis(50)).await;
    }
    sleep(Duration::from_secs(2)).await;
    assert_eq!(
        a.view().as_ref(),
        Some(&view),
        "a forged packet changed the view"
    );
    assert_eq!(b.view().as_ref(), Some(&view));
    assert!(a.members().iter().any(|m| m.id == b.id()));

    // The keyed members kept talking the whole time.
    message_flows(&a, &b, &mut b_events, "still here").await;
    message_flows(&b, &a, &mut a_events, "and here").await;
    assert_eq!(a.stats().messages_received, 1);
    for n in [plain, other, a, b] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn replayed_and_tampered_heartbeats_are_dropped_and_counted() {
    let port = 46601;
    let ring = Keyring::new(key(3));
    let (a, mut a_events) = Node::start(config(port, Some(ring.clone()))).await.unwrap();
    let (b, mut b_events) = Node::start(config(port, Some(ring.clone()))).await.unwrap();
    let ids = [a.id(), b.id()];
    let view = wait_for_view(&a, &ids, Duration::from_secs(5)).await;
    wait_for_view(&b, &ids, Duration::from_secs(2)).await;

    // Record a sealed heartbeat off the group, as an on-path attacker would.
    let sock = group_socket(port);
    let group = SocketAddr::from((Ipv4Addr::new(228, 0, 0, 4), port));
    let mut buf = vec![0u8; 65_536];
    let captured = timeout(Duration::from_secs(3), async {
        loop {
            let (n, _) = sock.recv_from(&mut buf).await.unwrap();
            if buf[..4] == cohort_proto::security::SEALED_ENVELOPE {
                return Bytes::copy_from_slice(&buf[..n]);
            }
        }
    })
    .await
    .expect("no sealed heartbeat heard");
    assert!(
        !captured.windows(8).any(|w| w == b"TRIBES-B"),
        "a heartbeat travels in clear"
    );
    // Let the genuine copy reach both members before replaying it.
    sleep(Duration::from_millis(100)).await;
    let total = |f: fn(&SecurityStats) -> u64| f(&security(&a)) + f(&security(&b));
    let (replayed, bad_tag) = (total(|s| s.replayed), total(|s| s.bad_tag));

    const COPIES: u64 = 5;
    for _ in 0..COPIES {
        sock.send_to(&captured, group).await.unwrap();
    }
    let mut tampered = BytesMut::from(&captured[..]);
    let last = tampered.len() - 20;
    tampered[last] ^= 1;
    sock.send_to(&tampered, group).await.unwrap();
    sleep(Duration::from_millis(500)).await;

    // Both members hear every copy; the sender drops them as its own, the other as
    // replays. The other refuses the tampered one as forged; the sender refuses it as its
    // own before checking its tag (so it never decrypts its own looped-back traffic).
    assert_eq!(total(|s| s.replayed) - replayed, COPIES);
    assert_eq!(total(|s| s.bad_tag) - bad_tag, 1);
    assert_eq!(a.view().as_ref(), Some(&view));
    assert_eq!(b.view().as_ref(), Some(&view));
    message_flows(&a, &b, &mut b_events, "after the replay").await;
    message_flows(&b, &a, &mut a_events, "both ways").await;
    for n in [a, b] {
        n.shutdown().await;
    }
}

/// Reliable multicast between two keyed nodes (over UDP and over TCP) delivers; plain and
/// forged datagrams at a member's reliable socket are refused and counted.
async fn reliable_with_key(port: u16, transport: Transport) {
    let ring = Keyring::new(key(4));
    let (a, _a_events) = Node::start(config(port, Some(ring.clone()))).await.unwrap();
    let (b, _b_events) = Node::start(config(port, Some(ring.clone()))).await.unwrap();
    let ids = [a.id(), b.id()];
    let view = wait_for_view(&a, &ids, Duration::from_secs(5)).await;
    wait_for_view(&b, &ids, Duration::from_secs(2)).await;
    let rc = ReliableChannelConfig::default()
        .transport(transport)
        .core(ReliableConfig::lan().deliver_own(false));
    let ra = ReliableChannel::for_node(&a, rc.clone()).unwrap();
    let rb = ReliableChannel::for_node(&b, rc.clone()).unwrap();
    let sealed_before = security(&a).sealed;
    for i in 0..100u32 {
        ra.multicast(Bytes::from(i.to_be_bytes().to_vec()))
            .await
            .unwrap();
    }
    for i in 0..100u32 {
        let d = timeout(Duration::from_secs(5), rb.recv())
            .await
            .expect("reliable delivery stalled")
            .unwrap();
        assert_eq!(&d.payload[..], &i.to_be_bytes());
    }
    assert!(
        security(&a).sealed > sealed_before,
        "the channel's traffic was not sealed"
    );

    // An outsider's plain datagram or connection at b's reliable address.
    let before = security(&b);
    let target = rc.udp_addr(b.local_member().addr);
    match transport {
        Transport::Udp => {
            let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let mut plain = vec![0xC0, 0x4E, 1, 2];
            plain.extend_from_slice(&[0; 64]);
            s.send_to(&plain, target).await.unwrap();
        }
        Transport::Tcp => {
            use tokio::io::AsyncWriteExt;
            let mut s = tokio::net::TcpStream::connect(target).await.unwrap();
            let mut hello = BytesMut::new();
            cohort_proto::wire::cohort::stream::Hello {
                member: a.id(),
                listen: rc.udp_addr(a.local_member().addr),
            }
            .encode_framed(&mut hello);
            s.write_all(&hello).await.unwrap();
            let _ = s.flush().await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while security(&b).unauthenticated == before.unauthenticated && Instant::now() < deadline {
        sleep(Duration::from_millis(20)).await;
    }
    assert!(security(&b).unauthenticated > before.unauthenticated);
    ra.multicast(Bytes::from_static(b"after")).await.unwrap();
    let d = timeout(Duration::from_secs(5), rb.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&d.payload[..], b"after");
    assert_eq!(a.view().as_ref(), Some(&view));
    ra.shutdown().await;
    rb.shutdown().await;
    for n in [a, b] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn reliable_udp_is_sealed_and_refuses_plain_datagrams() {
    reliable_with_key(46602, Transport::Udp).await;
}

#[tokio::test]
async fn reliable_tcp_is_sealed_and_refuses_plain_connections() {
    reliable_with_key(46603, Transport::Tcp).await;
}

#[tokio::test]
async fn a_running_cluster_rotates_its_key_without_losing_a_message() {
    let port = 46604;
    let (old, new) = (key(5), key(6));
    let (a, _a_events) = Node::start(config(port, Some(Keyring::new(old.clone()))))
        .await
        .unwrap();
    let (b, mut b_events) = Node::start(config(port, Some(Keyring::new(old.clone()))))
        .await
        .unwrap();
    let ids = [a.id(), b.id()];
    let view = wait_for_view(&a, &ids, Duration::from_secs(5)).await;
    wait_for_view(&b, &ids, Duration::from_secs(2)).await;
    let sa = a.security().unwrap();
    let sb = b.security().unwrap();
    let sender = {
        let a = a.clone();
        let b_member = b.local_member().clone();
        tokio::spawn(async move {
            let mut acked = 0;
            for i in 0..300u32 {
                let sent = a
                    .send(
                        std::slice::from_ref(&b_member),
                        i.to_string(),
                        SendOptions::USE_ACK,
                    )
                    .await;
                acked += u32::from(sent.is_ok());
                sleep(Duration::from_millis(5)).await;
            }
            acked
        })
    };
    sleep(Duration::from_millis(200)).await;
    sa.install(new.clone()).unwrap();
    sb.install(new.clone()).unwrap();
    sleep(Duration::from_millis(200)).await;
    sa.use_key(new.id()).unwrap();
    sleep(Duration::from_millis(200)).await;
    sb.use_key(new.id()).unwrap();
    // Connections opened before the rotation seal their next records with the new key
    // too; what was in flight under the old key arrives before it is removed.
    sleep(Duration::from_millis(200)).await;
    sa.remove(old.id()).unwrap();
    sb.remove(old.id()).unwrap();
    assert_eq!(
        sender.await.unwrap(),
        300,
        "a message was lost during the rotation"
    );
    let mut got = 0;
    while let Ok(Some(event)) = timeout(Duration::from_millis(200), b_events.recv()).await {
        if let Event::Message(m) = event {
            assert_eq!(m.data, got.to_string().as_bytes());
            got += 1;
        }
    }
    assert_eq!(got, 300);
    assert_eq!(a.view().as_ref(), Some(&view));
    assert_eq!(sb.list(), vec![new.id()]);
    for n in [a, b] {
        n.shutdown().await;
    }
}

/// The control for the tests above: without a key, the same forged packet does evict.
#[tokio::test]
async fn without_a_key_one_forged_shutdown_evicts_a_member() {
    let port = 46605;
    let (a, _a_events) = Node::start(config(port, None)).await.unwrap();
    let (b, _b_events) = Node::start(config(port, None)).await.unwrap();
    wait_for_view(&a, &[a.id(), b.id()], Duration::from_secs(5)).await;
    let sock = group_socket(port);
    let group = SocketAddr::from((Ipv4Addr::new(228, 0, 0, 4), port));
    sock.send_to(&forged_heartbeat(b.local_member(), SHUTDOWN_COMMAND), group)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(1);
    while a.members().iter().any(|m| m.id == b.id()) {
        assert!(
            Instant::now() < deadline,
            "the forged shutdown did not evict"
        );
        sleep(Duration::from_millis(10)).await;
    }
    for n in [a, b] {
        n.shutdown().await;
    }
}

/// A keyed gossip router serves keyed members only: they find each other through it; a
/// plain registration is refused and counted, and a plain node learns nobody.
#[tokio::test]
async fn a_keyed_router_serves_key_holders_only() {
    use cohort::DiscoveryConfig;
    use cohort::router::Router;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let ring = Keyring::new(key(8));
    let router_addr: SocketAddr = "127.0.0.1:27800".parse().unwrap();
    let router = Router::bind(router_addr)
        .await
        .unwrap()
        .with_keyring(ring.clone());
    let router_security = router.security().unwrap().clone();
    let router_task = tokio::spawn(router.run());
    let unicast = |port: u16, keyring: Option<Keyring>| {
        Config::default()
            .domain(Bytes::from_static(b"security-routed"))
            .port(port)
            .port_range(9)
            .discovery(
                DiscoveryConfig::default()
                    .multicast(false)
                    .routers(vec![router_addr])
                    .probe_interval(Duration::from_millis(500)),
            )
            .keyring(keyring)
    };
    let (a, _a_events) = Node::start(unicast(27810, Some(ring.clone())))
        .await
        .unwrap();
    let (b, _b_events) = Node::start(unicast(27820, Some(ring.clone())))
        .await
        .unwrap();
    let ids = [a.id(), b.id()];
    let view = wait_for_view(&a, &ids, Duration::from_secs(5)).await;
    wait_for_view(&b, &ids, Duration::from_secs(2)).await;

    let (plain, _plain_events) = Node::start(unicast(27830, None)).await.unwrap();
    // A plain registration by hand: the router closes the connection without a list.
    let mut stream = tokio::net::TcpStream::connect(router_addr).await.unwrap();
    let mut out = BytesMut::new();
    cohort::proto::wire::cohort::router::RouterMessage::Register {
        cluster: Bytes::from_static(b"security-routed"),
        addr: "127.0.0.1:1".parse().unwrap(),
    }
    .encode_framed(&mut out);
    stream.write_all(&out).await.unwrap();
    let mut buf = Vec::new();
    let read = timeout(Duration::from_secs(2), stream.read_to_end(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the router answered a plain registration: {read:?} {buf:?}"
    );
    sleep(Duration::from_secs(2)).await;
    assert!(
        router_security.stats().unauthenticated >= 2,
        "{:?}",
        router_security.stats()
    );
    assert!(plain.members().is_empty(), "{:?}", plain.members());
    assert_eq!(a.view().as_ref(), Some(&view));
    assert!(a.members().iter().all(|m| ids.contains(&m.id)));
    router_task.abort();
    for n in [plain, a, b] {
        n.shutdown().await;
    }
}

/// Two members, one multicasting `count` messages of `size` bytes by UDP fan-out, the other
/// receiving them all; returns messages per second, first send to last delivery.
async fn reliable_rate(keyring: Option<Keyring>, size: usize, count: u32) -> f64 {
    use cohort::{GroupMember, ViewId};
    let mut rng = rand::rng();
    let ids = [MemberId::random(&mut rng), MemberId::random(&mut rng)];
    let view = View {
        id: ViewId {
            seq: 1,
            coordinator: ids[0],
        },
        members: ids
            .iter()
            .enumerate()
            .map(|(i, id)| GroupMember {
                id: *id,
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 27840 + i as u16)),
            })
            .collect(),
    };
    let config = ReliableChannelConfig::default()
        .port_offset(0)
        .keyring(keyring)
        .core(ReliableConfig::lan().deliver_own(false));
    let tx = ReliableChannel::start_static(ids[0], config.clone(), view.clone()).unwrap();
    let rx = ReliableChannel::start_static(ids[1], config, view).unwrap();
    let payload = Bytes::from(vec![0x5Au8; size]);
    let start = std::time::Instant::now();
    let sender = {
        let tx = tx.clone();
        tokio::spawn(async move {
            for _ in 0..count {
                tx.multicast(payload.clone()).await.unwrap();
            }
        })
    };
    let mut got = 0;
    let mut batch = Vec::new();
    while got < count {
        batch.clear();
        let n = timeout(Duration::from_secs(20), rx.recv_many(&mut batch, 1024))
            .await
            .expect("delivery stalled");
        got += n as u32;
    }
    let rate = f64::from(count) / start.elapsed().as_secs_f64();
    sender.await.unwrap();
    tx.shutdown().await;
    rx.shutdown().await;
    rate
}

/// What sealing costs reliable multicast (UDP fan-out, two members in this process):
/// plain and keyed runs alternate, 5 of each per size; prints the medians and the ratio.
/// Run in release: `cargo test --release -p cohort --test security -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test: run it on a quiet machine"]
async fn sealing_cost_on_reliable_multicast() {
    for (size, count) in [(1024, 100_000u32), (16 * 1024, 20_000)] {
        let (mut plain, mut keyed) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            plain.push(reliable_rate(None, size, count).await);
            keyed.push(reliable_rate(Some(Keyring::new(key(9))), size, count).await);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (p, k) = (median(&mut plain), median(&mut keyed));
        println!(
            "{size} B: plain {p:.0} msg/s ({:.0}-{:.0}), keyed {k:.0} msg/s ({:.0}-{:.0}), keyed/plain {:.2}",
            plain[0],
            plain[4],
            keyed[0],
            keyed[4],
            k / p
        );
    }
}
