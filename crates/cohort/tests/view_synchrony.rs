//! View synchrony over real UDP sockets on loopback: a sender is killed mid-stream and the
//! survivors flush before they install the view without it.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use cohort::reliable::{ChannelEvent, ReliableChannel, ReliableChannelConfig, ReliableConfig};
use cohort::{GroupMember, MemberId, View};
use tokio::time::timeout;

/// `N` UDP ports on 127.0.0.1 that were free a moment ago.
fn free_ports<const N: usize>() -> [u16; N] {
    let sockets: Vec<std::net::UdpSocket> = (0..N)
        .map(|_| std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap())
        .collect();
    std::array::from_fn(|i| sockets[i].local_addr().unwrap().port())
}

fn view_of(seq: u64, members: &[(MemberId, u16)]) -> View {
    View::new(
        seq,
        members.iter().map(|(id, port)| {
            GroupMember::new(*id, SocketAddr::from((Ipv4Addr::LOCALHOST, *port)))
        }),
    )
    .expect("members")
}

/// What a survivor delivered: the crashed sender's counters (in view 1) until the first
/// message of view 2, and the events it saw.
async fn deliveries_until_view_2(
    ch: &ReliableChannel,
    sender: MemberId,
    events: &mut tokio::sync::broadcast::Receiver<ChannelEvent>,
) -> (Vec<u32>, Vec<ChannelEvent>) {
    let mut counters = Vec::new();
    loop {
        let d = timeout(Duration::from_secs(10), ch.recv())
            .await
            .expect("no message of view 2")
            .expect("channel open");
        if d.view_seq == 2 {
            assert_eq!(&d.payload[..], b"after the flush");
            break;
        }
        assert_eq!(d.view_seq, 1);
        if d.from == sender {
            counters.push(u32::from_be_bytes(d.payload[..4].try_into().unwrap()));
        }
    }
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push(e);
    }
    (counters, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_survivors_of_a_sender_killed_mid_stream_deliver_the_same_messages() {
    let mut rng = rand::rng();
    let ids: [MemberId; 4] = std::array::from_fn(|_| MemberId::random(&mut rng));
    let ports = free_ports::<4>();
    let members: Vec<(MemberId, u16)> = ids.iter().copied().zip(ports).collect();
    let config = ReliableChannelConfig::default()
        .port_offset(0)
        .core(ReliableConfig::lan().deliver_own(false));
    let (views, _) = tokio::sync::watch::channel(Some(view_of(1, &members)));
    let channels: Vec<ReliableChannel> = ids
        .iter()
        .map(|id| ReliableChannel::start(*id, config.clone(), views.subscribe()).unwrap())
        .collect();
    let mut events: Vec<_> = channels.iter().map(|c| c.subscribe_events()).collect();
    // The first view is installed everywhere (members other than the first wait for it).
    for ch in &channels {
        timeout(Duration::from_secs(5), async {
            while ch.view().is_none() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("first view installed");
    }

    // The third member streams until it is killed.
    let victim = 2;
    let streaming = tokio::spawn({
        let ch = channels[victim].clone();
        async move {
            for i in 0u32.. {
                let mut payload = i.to_be_bytes().to_vec();
                payload.resize(1024, 0);
                if ch.multicast(payload).await.is_err() {
                    break;
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    streaming.abort();
    channels[victim].shutdown().await;
    let survivors: Vec<usize> = (0..4).filter(|i| *i != victim).collect();
    let rest: Vec<(MemberId, u16)> = survivors.iter().map(|&i| members[i]).collect();
    views.send_replace(Some(view_of(2, &rest)));

    // A send during the flush waits, and goes out in the new view.
    let first = survivors[0];
    timeout(Duration::from_secs(5), async {
        let ch = &channels[first];
        while !ch.is_blocked() && ch.view().is_some_and(|v| v.id.seq == 1) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the view change reached the channel");
    channels[first]
        .multicast(&b"after the flush"[..])
        .await
        .expect("send after the flush");
    let mut counts = Vec::new();
    for &i in &survivors[1..] {
        let (counters, seen) =
            deliveries_until_view_2(&channels[i], ids[victim], &mut events[i]).await;
        assert!(
            counters.iter().copied().eq(0..counters.len() as u32),
            "member {i}: the sender's messages in order, none missing"
        );
        assert!(seen.contains(&ChannelEvent::Block), "member {i}: {seen:?}");
        assert!(
            seen.iter()
                .any(|e| matches!(e, ChannelEvent::Unblock { view } if view.seq == 2)),
            "member {i}: {seen:?}"
        );
        counts.push(counters.len());
    }
    assert!(counts[0] > 0, "the sender got messages out: {counts:?}");
    assert!(
        counts.windows(2).all(|w| w[0] == w[1]),
        "the survivors disagree on the killed sender's messages: {counts:?}"
    );
    eprintln!(
        "each survivor delivered {} of the killed sender's messages",
        counts[0]
    );
    // The first survivor (deliver_own off) delivered the same from the victim.
    let (counters, _) = {
        let ch = &channels[first];
        let mut counters = Vec::new();
        while let Some(d) = ch.try_recv() {
            if d.from == ids[victim] {
                counters.push(u32::from_be_bytes(d.payload[..4].try_into().unwrap()));
            }
        }
        (counters, ())
    };
    assert_eq!(counters.len(), counts[0]);
    for i in survivors {
        channels[i].shutdown().await;
    }
}
