//! The reliable channel on real loopback sockets: every member delivers every message
//! exactly once, in each sender's order, with multicast, with unicast fan-out and over TCP.
//! Ports: UDP 24000-24999 on 127.0.0.1, multicast ports 46200-46299 (this test's share);
//! the TCP tests take ports the kernel picks, so runs side by side do not meet, except
//! those with nodes (TCP 24200-24212 and 24300-24312).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use cohort::reliable::{ReliableChannel, ReliableChannelConfig, ReliableSendError, Transport};
use cohort::{GroupMember, MemberId, View};

fn view(ids: &[MemberId], first_port: u16) -> View {
    let members = ids.iter().enumerate().map(|(i, id)| {
        GroupMember::new(
            *id,
            SocketAddr::from((Ipv4Addr::LOCALHOST, first_port + i as u16)),
        )
    });
    View::new(1, members).expect("members")
}

fn start(n: usize, first_port: u16, multicast: Option<u16>) -> Vec<ReliableChannel> {
    let mut rng = rand::rng();
    let ids: Vec<MemberId> = (0..n).map(|_| MemberId::random(&mut rng)).collect();
    let view = view(&ids, first_port);
    let config = ReliableChannelConfig::default()
        .multicast(multicast.map(|port| SocketAddrV4::new(Ipv4Addr::new(228, 46, 2, 1), port)))
        .port_offset(0);
    ids.iter()
        .map(|id| ReliableChannel::start_static(*id, config.clone(), view.clone()).unwrap())
        .collect()
}

/// Every member sends `per_sender` numbered messages; every member must deliver all of
/// them (its own included), each sender's in order, none twice.
async fn all_deliver_in_order(channels: Vec<ReliableChannel>, per_sender: u32, size: usize) {
    let n = channels.len();
    let ids: Vec<MemberId> = channels.iter().map(ReliableChannel::local).collect();
    let mut senders = Vec::new();
    for ch in &channels {
        let ch = ch.clone();
        senders.push(tokio::spawn(async move {
            for seq in 0..per_sender {
                let mut msg = vec![0u8; size];
                msg[..4].copy_from_slice(&seq.to_be_bytes());
                ch.multicast(msg).await.unwrap();
            }
        }));
    }
    let mut receivers = Vec::new();
    for ch in &channels {
        let ch = ch.clone();
        let ids = ids.clone();
        receivers.push(tokio::spawn(async move {
            let mut next: HashMap<MemberId, u32> = ids.iter().map(|id| (*id, 0)).collect();
            let total = per_sender as usize * ids.len();
            let mut got = 0;
            let mut batch = Vec::new();
            while got < total {
                batch.clear();
                assert!(ch.recv_many(&mut batch, 1024).await > 0, "channel closed");
                for d in &batch {
                    assert_eq!(d.payload.len(), size);
                    let seq = u32::from_be_bytes(d.payload[..4].try_into().unwrap());
                    let expected = next.get_mut(&d.from).expect("delivery from a non-member");
                    assert_eq!(seq, *expected, "out of order or duplicate from {}", d.from);
                    *expected += 1;
                    got += 1;
                }
            }
            // Nothing more arrives: every message was delivered exactly once.
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(ch.try_recv().is_none(), "a message was delivered twice");
            ch.stats()
        }));
    }
    for s in senders {
        tokio::time::timeout(Duration::from_secs(60), s)
            .await
            .expect("senders stalled")
            .unwrap();
    }
    for r in receivers {
        let stats = tokio::time::timeout(Duration::from_secs(60), r)
            .await
            .expect("receivers stalled")
            .unwrap();
        // The core counts what arrived from others; own messages are delivered locally.
        assert_eq!(stats.core.delivered, u64::from(per_sender) * (n as u64 - 1));
        assert_eq!(stats.core.malformed, 0);
    }
    for ch in &channels {
        ch.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_multicast_every_message_once_in_order() {
    let channels = start(3, 24_100, Some(46_200));
    all_deliver_in_order(channels, 5_000, 1024).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_fan_out_every_message_once_in_order() {
    let channels = start(3, 24_110, None);
    all_deliver_in_order(channels, 5_000, 1024).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_are_fragmented_and_reassembled() {
    let channels = start(2, 24_120, Some(46_201));
    all_deliver_in_order(channels, 20, 300_000).await;
}

/// Member 0 sends 2 000 unicasts to member 1: member 1 delivers them all in order, as
/// unicasts from member 0; member 2 gets none.
async fn unicasts_reach_only_their_destination(channels: &[ReliableChannel]) {
    let to = channels[1].local();
    for seq in 0u32..2_000 {
        channels[0]
            .send_to(to, seq.to_be_bytes().to_vec())
            .await
            .unwrap();
    }
    for seq in 0u32..2_000 {
        let d = tokio::time::timeout(Duration::from_secs(30), channels[1].recv())
            .await
            .expect("unicast stalled")
            .unwrap();
        assert!(d.unicast);
        assert_eq!(d.from, channels[0].local());
        assert_eq!(d.payload.as_ref(), seq.to_be_bytes());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        channels[2].try_recv().is_none(),
        "a third member got a unicast"
    );
    assert!(channels[1].try_recv().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicast_reaches_only_its_destination_in_order() {
    let channels = start(3, 24_130, Some(46_202));
    unicasts_reach_only_their_destination(&channels).await;
    let stranger = MemberId::random(&mut rand::rng());
    assert!(matches!(
        channels[0].send_to(stranger, &b"x"[..]).await,
        Err(ReliableSendError::Refused(_))
    ));
    channels[0].shutdown().await;
    assert_eq!(
        channels[0].multicast(&b"x"[..]).await,
        Err(ReliableSendError::Closed)
    );
}

/// Member 0 multicasts 1 000 numbered messages, every tenth out of band, and sends 200
/// numbered unicasts to member 1, every fourth out of band: every member delivers each
/// multicast once (member 1 each unicast too), the out-of-band ones flagged, the others in
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_band_messages_arrive_once_and_flagged() {
    const MULTICASTS: u32 = 1_000;
    const UNICASTS: u32 = 200;
    let multicast_oob = |seq: u32| seq % 10 == 3;
    let unicast_oob = |seq: u32| seq % 4 == 1;
    let channels = start(3, 24_140, Some(46_203));
    let to = channels[1].local();
    for seq in 0..MULTICASTS {
        let msg = seq.to_be_bytes().to_vec();
        if multicast_oob(seq) {
            channels[0].multicast_oob(msg).await.unwrap();
        } else {
            channels[0].multicast(msg).await.unwrap();
        }
    }
    for seq in 0..UNICASTS {
        let msg = seq.to_be_bytes().to_vec();
        if unicast_oob(seq) {
            channels[0].send_to_oob(to, msg).await.unwrap();
        } else {
            channels[0].send_to(to, msg).await.unwrap();
        }
    }
    for (i, ch) in channels.iter().enumerate() {
        let expected_unicasts = if i == 1 { UNICASTS } else { 0 };
        // Per kind (multicast, unicast): which seqnos arrived, and the last in-order one.
        let mut seen = [
            vec![false; MULTICASTS as usize],
            vec![false; UNICASTS as usize],
        ];
        let mut last_in_order: [Option<u32>; 2] = [None, None];
        for _ in 0..MULTICASTS + expected_unicasts {
            let d = tokio::time::timeout(Duration::from_secs(30), ch.recv())
                .await
                .expect("deliveries stalled")
                .unwrap();
            assert_eq!(d.from, channels[0].local());
            let seq = u32::from_be_bytes(d.payload[..].try_into().unwrap());
            let kind = usize::from(d.unicast);
            let oob = if d.unicast {
                unicast_oob(seq)
            } else {
                multicast_oob(seq)
            };
            assert_eq!(
                d.oob, oob,
                "member {i}: oob flag of {seq} (unicast {})",
                d.unicast
            );
            assert!(
                !seen[kind][seq as usize],
                "member {i}: {seq} delivered twice"
            );
            seen[kind][seq as usize] = true;
            if !d.oob {
                assert!(
                    last_in_order[kind].is_none_or(|last| last < seq),
                    "member {i}: {seq} out of order"
                );
                last_in_order[kind] = Some(seq);
            }
        }
        assert!(seen[0].iter().all(|s| *s), "member {i} missed a multicast");
        if i == 1 {
            assert!(seen[1].iter().all(|s| *s), "member 1 missed a unicast");
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for ch in &channels {
        assert!(ch.try_recv().is_none(), "an extra delivery");
        ch.shutdown().await;
    }
}

/// Waits until `node`'s view has exactly `n` members.
async fn wait_for_members(node: &cohort::Node, n: usize) {
    let mut watch = node.watch_view();
    let wait = async {
        loop {
            if watch
                .borrow_and_update()
                .as_ref()
                .is_some_and(|v| v.members.len() == n)
            {
                return;
            }
            watch.changed().await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .unwrap_or_else(|_| panic!("{} never saw {n} members", node.id()));
}

/// Receives `count` messages from `from` on `ch`, numbered from 0, in order.
async fn expect_numbered(ch: &ReliableChannel, from: MemberId, count: u32) {
    for seq in 0..count {
        let d = tokio::time::timeout(Duration::from_secs(30), ch.recv())
            .await
            .expect("delivery stalled")
            .unwrap();
        assert_eq!(d.from, from);
        assert_eq!(d.payload.as_ref(), seq.to_be_bytes(), "out of order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_follow_the_group_views_of_nodes() {
    // TCP receivers on 24200.., reliable UDP sockets on 24300..
    follow_node_views(Transport::Udp, 24_200, 46_230).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_channels_follow_the_group_views_of_nodes() {
    // TCP receivers on 24210.., reliable TCP listeners on 24310..
    follow_node_views(Transport::Tcp, 24_210, 46_232).await;
}

/// Nodes on `first_port..` (multicast discovery on `discovery_port`) with reliable channels
/// on `transport`: a node that joins later is heard by the others.
async fn follow_node_views(transport: Transport, first_port: u16, discovery_port: u16) {
    let domain = bytes::Bytes::from(format!("reliable-test-{discovery_port}"));
    let config = |port: u16| {
        cohort::Config::default()
            .domain(domain.clone())
            .port(port)
            .port_range(1)
            .multicast(
                cohort::MulticastConfig::default()
                    .port(discovery_port)
                    .interface(Some(Ipv4Addr::LOCALHOST)),
            )
    };
    let reliable = || {
        ReliableChannelConfig::default()
            .transport(transport)
            .multicast(
                (transport == Transport::Udp)
                    .then(|| SocketAddrV4::new(Ipv4Addr::new(228, 46, 2, 31), discovery_port + 1)),
            )
            .port_offset(100)
            // Only messages of others, so every channel counts the same.
            .core(cohort::reliable::ReliableConfig::lan().deliver_own(false))
    };
    let (a, _ae) = cohort::Node::start(config(first_port)).await.unwrap();
    let (b, _be) = cohort::Node::start(config(first_port + 1)).await.unwrap();
    wait_for_members(&a, 2).await;
    wait_for_members(&b, 2).await;
    let ca = ReliableChannel::for_node(&a, reliable()).unwrap();
    let cb = ReliableChannel::for_node(&b, reliable()).unwrap();
    assert_eq!(ca.local_addr().port(), first_port + 100);
    for seq in 0u32..1_000 {
        ca.multicast(seq.to_be_bytes().to_vec()).await.unwrap();
    }
    expect_numbered(&cb, a.id(), 1_000).await;

    // A third node joins: the others' channels install the new view and hear it.
    let (c, _ce) = cohort::Node::start(config(first_port + 2)).await.unwrap();
    for n in [&a, &b, &c] {
        wait_for_members(n, 3).await;
    }
    let cc = ReliableChannel::for_node(&c, reliable()).unwrap();
    // The others may still be installing the view; the joiner's messages are repaired
    // (NAKs and gossip) once they have.
    for seq in 0u32..500 {
        cc.multicast(seq.to_be_bytes().to_vec()).await.unwrap();
    }
    expect_numbered(&ca, c.id(), 500).await;
    expect_numbered(&cb, c.id(), 500).await;
    for ch in [ca, cb, cc] {
        ch.shutdown().await;
    }
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

fn tcp_config() -> ReliableChannelConfig {
    ReliableChannelConfig::default()
        .transport(Transport::Tcp)
        .port_offset(0)
}

/// `n` TCP ports on 127.0.0.1 that were free a moment ago.
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap())
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

fn start_tcp<const N: usize>() -> Vec<ReliableChannel> {
    let mut rng = rand::rng();
    let ports = free_ports::<N>();
    let members: Vec<(MemberId, u16)> = ports
        .iter()
        .map(|port| (MemberId::random(&mut rng), *port))
        .collect();
    let view = view_of(1, &members);
    let ids: Vec<MemberId> = members.iter().map(|(id, _)| *id).collect();
    ids.iter()
        .map(|id| ReliableChannel::start_static(*id, tcp_config(), view.clone()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_over_tcp_every_message_once_in_order() {
    let channels = start_tcp::<3>();
    all_deliver_in_order(channels.clone(), 5_000, 1024).await;
    for ch in &channels {
        let tcp = ch.stats().tcp;
        // One connection to each of the two others, none lost or refused.
        assert_eq!(tcp.connected, 2, "{tcp:?}");
        assert_eq!(tcp.bad_hello + tcp.bad_frame, 0, "{tcp:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_over_tcp_are_fragmented_and_reassembled() {
    all_deliver_in_order(start_tcp::<2>(), 20, 300_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicast_over_tcp_reaches_only_its_destination_in_order() {
    let channels = start_tcp::<3>();
    unicasts_reach_only_their_destination(&channels).await;
    for ch in &channels {
        ch.shutdown().await;
    }
}

#[tokio::test]
async fn tcp_refuses_a_multicast_group() {
    let id = MemberId::random(&mut rand::rng());
    let config = tcp_config().multicast(Some(SocketAddrV4::new(
        Ipv4Addr::new(228, 46, 2, 1),
        46_299,
    )));
    assert!(matches!(
        ReliableChannel::start_static(id, config, view(&[id], free_ports::<1>()[0])),
        Err(cohort::reliable::ReliableStartError::MulticastOverTcp)
    ));
}

/// A view `seq` of the given members and their addresses, coordinated by the first.
fn view_of(seq: u64, members: &[(MemberId, u16)]) -> View {
    let members = members
        .iter()
        .map(|(id, port)| GroupMember::new(*id, SocketAddr::from((Ipv4Addr::LOCALHOST, *port))));
    View::new(seq, members).expect("members")
}

/// Multicasts the numbers in `seqs` from `ch`.
async fn send_numbered(ch: &ReliableChannel, seqs: std::ops::Range<u32>, size: usize) {
    for seq in seqs {
        let mut msg = vec![0u8; size];
        msg[..4].copy_from_slice(&seq.to_be_bytes());
        tokio::time::timeout(Duration::from_secs(30), ch.multicast(msg))
            .await
            .expect("multicast stalled")
            .unwrap();
    }
}

/// Receives messages on `ch` until the message numbered `last` of each sender in `runs`
/// arrived, each sender's numbered one more than its one before; returns each sender's
/// first number.
async fn receive_runs(ch: &ReliableChannel, runs: &[(MemberId, u32)]) -> Vec<u32> {
    let mut first: HashMap<MemberId, u32> = HashMap::new();
    let mut next: HashMap<MemberId, u32> = HashMap::new();
    let mut open = runs.len();
    while open > 0 {
        let d = tokio::time::timeout(Duration::from_secs(30), ch.recv())
            .await
            .expect("delivery stalled")
            .unwrap();
        let last = runs
            .iter()
            .find(|(id, _)| *id == d.from)
            .map(|(_, last)| *last)
            .unwrap_or_else(|| panic!("a message from {}", d.from));
        let seq = u32::from_be_bytes(d.payload[..4].try_into().unwrap());
        first.entry(d.from).or_insert(seq);
        if let Some(expected) = next.get(&d.from) {
            assert_eq!(seq, *expected, "out of order or duplicate from {}", d.from);
        }
        assert!(seq <= last, "more than expected from {}", d.from);
        next.insert(d.from, seq + 1);
        if seq == last {
            open -= 1;
        }
    }
    runs.iter().map(|(id, _)| first[id]).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_channels_follow_leaves_and_joins() {
    let mut rng = rand::rng();
    let [a, b, c, d] = std::array::from_fn(|_| MemberId::random(&mut rng));
    let ports = free_ports::<4>();
    // Only messages of others, so every receiver sees one sender.
    let config = tcp_config().core(cohort::reliable::ReliableConfig::lan().deliver_own(false));
    let (views, _) = tokio::sync::watch::channel(Some(view_of(
        1,
        &[(a, ports[0]), (b, ports[1]), (c, ports[2])],
    )));
    let start = |id| ReliableChannel::start(id, config.clone(), views.subscribe()).unwrap();
    let (ca, cb, cc) = (start(a), start(b), start(c));
    send_numbered(&ca, 0..1_000, 1024).await;
    assert_eq!(receive_runs(&cb, &[(a, 999)]).await, [0]);
    assert_eq!(receive_runs(&cc, &[(a, 999)]).await, [0]);

    // c leaves. Far more than a flow-control window (4 MiB) goes out: c's credit must no
    // longer hold a back.
    cc.shutdown().await;
    views.send_replace(Some(view_of(2, &[(a, ports[0]), (b, ports[1])])));
    let sending = tokio::spawn({
        let ca = ca.clone();
        async move { send_numbered(&ca, 1_000..11_000, 1024).await }
    });
    assert_eq!(receive_runs(&cb, &[(a, 10_999)]).await, [1_000]);
    sending.await.unwrap();

    // d joins: it hears a from its join on, and a and b hear d.
    views.send_replace(Some(view_of(
        3,
        &[(a, ports[0]), (b, ports[1]), (d, ports[3])],
    )));
    let cd = start(d);
    // The others install the view in a moment; what a sends before is for view 2.
    tokio::time::sleep(Duration::from_millis(100)).await;
    send_numbered(&ca, 11_000..12_000, 1024).await;
    send_numbered(&cd, 0..500, 1024).await;
    assert_eq!(
        receive_runs(&cb, &[(a, 11_999), (d, 499)]).await,
        [11_000, 0]
    );
    assert_eq!(receive_runs(&ca, &[(d, 499)]).await, [0]);
    let first = receive_runs(&cd, &[(a, 11_999)]).await[0];
    assert!((11_000..11_500).contains(&first), "d started at {first}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    for ch in [&ca, &cb, &cd] {
        assert!(ch.try_recv().is_none(), "a message was delivered twice");
    }
    for ch in [ca, cb, cd] {
        ch.shutdown().await;
    }
}

/// Forwards TCP connections from `listen` to `to` on loopback until told to cut them.
struct Proxy {
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(listen: u16, to: u16) -> Self {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, listen))
            .await
            .unwrap();
        let conns = std::sync::Arc::<std::sync::Mutex<Vec<_>>>::default();
        let task = tokio::spawn({
            let conns = conns.clone();
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let forward = tokio::spawn(async move {
                        let Ok(mut outbound) =
                            tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, to)).await
                        else {
                            return;
                        };
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    });
                    conns.lock().unwrap().push(forward);
                }
            }
        });
        Self { conns, task }
    }

    /// Closes every connection forwarded so far (both ends), losing what was in them.
    fn cut(&self) -> usize {
        let mut conns = self.conns.lock().unwrap();
        let live = conns.iter().filter(|c| !c.is_finished()).count();
        for c in conns.drain(..) {
            c.abort();
        }
        live
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_cut_mid_stream_reconnect_and_nothing_is_lost() {
    let mut rng = rand::rng();
    let mut ids = [MemberId::random(&mut rng), MemberId::random(&mut rng)];
    ids.sort();
    let [low, high] = ids;
    // The lower id calls: its view sends it to high through the proxy.
    let [low_port, high_port, proxy_port] = free_ports::<3>();
    let proxy = Proxy::start(proxy_port, high_port).await;
    let low_view = view_of(1, &[(low, low_port), (high, proxy_port)]);
    let high_view = view_of(1, &[(low, low_port), (high, high_port)]);
    let cl = ReliableChannel::start_static(low, tcp_config(), low_view).unwrap();
    let ch = ReliableChannel::start_static(high, tcp_config(), high_view).unwrap();
    let proxy = std::sync::Arc::new(proxy);
    let cutter = tokio::spawn({
        let proxy = proxy.clone();
        async move {
            let mut cuts = 0;
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(25)).await;
                cuts += usize::from(proxy.cut() > 0);
                if cuts == 5 {
                    break;
                }
            }
            cuts
        }
    });
    all_deliver_in_order(vec![cl.clone(), ch.clone()], 30_000, 1024).await;
    let cuts = cutter.await.unwrap();
    proxy.task.abort();
    assert!(
        cuts >= 2,
        "the transfer was over before the connection was cut twice"
    );
    for c in [&cl, &ch] {
        let tcp = c.stats().tcp;
        // Connected again after the cuts.
        assert!(tcp.connected >= 2, "{tcp:?}");
        assert_eq!(tcp.bad_hello + tcp.bad_frame, 0, "{tcp:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_bad_hellos_are_counted_and_closed() {
    use cohort_proto::wire::cohort::stream::Hello;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let channels = start_tcp::<2>();
    let target = channels[0].local_addr();
    // Not a frame at all: the length reads as 1.2 GB.
    let mut junk = tokio::net::TcpStream::connect(target).await.unwrap();
    junk.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), junk.read(&mut buf))
        .await
        .expect("not closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "answered junk");
    // A well-formed hello from a member not in the view.
    let mut stranger = tokio::net::TcpStream::connect(target).await.unwrap();
    let mut hello = bytes::BytesMut::new();
    Hello {
        member: MemberId::random(&mut rand::rng()),
        listen: "127.0.0.1:1".parse().unwrap(),
    }
    .encode_framed(&mut hello);
    stranger.write_all(&hello).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), stranger.read(&mut buf))
        .await
        .expect("not closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "answered a stranger");
    let stats = channels[0].stats();
    assert_eq!(stats.tcp.bad_hello, 1, "{stats:?}");
    assert_eq!(stats.unknown_source, 1, "{stats:?}");
    // The members still talk.
    all_deliver_in_order(channels, 1_000, 100).await;
}
