//! The reliable channel on real loopback sockets: every member delivers every message
//! exactly once, in each sender's order, with multicast and with unicast fan-out.
//! Ports: UDP 24000-24999 on 127.0.0.1, multicast ports 46200-46299 (this test's share).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use cohort::reliable::{ReliableChannel, ReliableChannelConfig, ReliableSendError};
use cohort::{GroupMember, MemberId, View, ViewId};

fn view(ids: &[MemberId], first_port: u16) -> View {
    View {
        id: ViewId {
            seq: 1,
            coordinator: ids[0],
        },
        members: ids
            .iter()
            .enumerate()
            .map(|(i, id)| GroupMember {
                id: *id,
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, first_port + i as u16)),
            })
            .collect(),
    }
}

fn start(n: usize, first_port: u16, multicast: Option<u16>) -> Vec<ReliableChannel> {
    let mut rng = rand::rng();
    let ids: Vec<MemberId> = (0..n).map(|_| MemberId::random(&mut rng)).collect();
    let view = view(&ids, first_port);
    let config = ReliableChannelConfig {
        multicast: multicast.map(|port| SocketAddrV4::new(Ipv4Addr::new(228, 46, 2, 1), port)),
        port_offset: 0,
        ..ReliableChannelConfig::default()
    };
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
        ch.close().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicast_reaches_only_its_destination_in_order() {
    let channels = start(3, 24_130, Some(46_202));
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
    let stranger = MemberId::random(&mut rand::rng());
    assert!(matches!(
        channels[0].send_to(stranger, &b"x"[..]).await,
        Err(ReliableSendError::Refused(_))
    ));
    channels[0].close().await;
    assert_eq!(
        channels[0].multicast(&b"x"[..]).await,
        Err(ReliableSendError::Closed)
    );
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
    let config = |port: u16| cohort::Config {
        domain: bytes::Bytes::from_static(b"reliable-test-46230"),
        port,
        port_range: 1,
        multicast: cohort::MulticastConfig {
            port: 46_230,
            interface: Some(Ipv4Addr::LOCALHOST),
            ..cohort::MulticastConfig::default()
        },
        ..cohort::Config::default()
    };
    let reliable = || ReliableChannelConfig {
        multicast: Some(SocketAddrV4::new(Ipv4Addr::new(228, 46, 2, 31), 46_231)),
        // TCP receivers on 24200.., reliable UDP sockets on 24300..
        port_offset: 100,
        core: cohort::reliable::ReliableConfig {
            // Only messages of others, so every channel counts the same.
            deliver_own: false,
            ..cohort::reliable::ReliableConfig::lan()
        },
        ..ReliableChannelConfig::default()
    };
    let (a, _ae) = cohort::Node::start(config(24_200)).await.unwrap();
    let (b, _be) = cohort::Node::start(config(24_201)).await.unwrap();
    wait_for_members(&a, 2).await;
    wait_for_members(&b, 2).await;
    let ca = ReliableChannel::for_node(&a, reliable()).unwrap();
    let cb = ReliableChannel::for_node(&b, reliable()).unwrap();
    assert_eq!(ca.local_addr().port(), 24_300);
    for seq in 0u32..1_000 {
        ca.multicast(seq.to_be_bytes().to_vec()).await.unwrap();
    }
    expect_numbered(&cb, a.id(), 1_000).await;

    // A third node joins: the others' channels install the new view and hear it.
    let (c, _ce) = cohort::Node::start(config(24_202)).await.unwrap();
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
        ch.close().await;
    }
    for n in [a, b, c] {
        n.shutdown().await;
    }
}
