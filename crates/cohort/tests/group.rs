//! Real-socket tests of the group layer on loopback: nodes in one process agree on views,
//! a later joiner is admitted, a graceful leave (also of the coordinator) is installed at
//! once, a node whose process vanishes is removed through the ring connection, and group
//! control traffic never reaches the application.
//!
//! Multicast ports 46510-46519, one per test.

mod support;

use std::net::Ipv4Addr;
use std::time::Duration;
use support::wait_for_view;

use bytes::Bytes;
use cohort::{Config, Event, MemberId, MulticastConfig, Node};
use tokio::time::{Instant, timeout};

fn config(mcast_port: u16) -> Config {
    Config::default()
        .domain(Bytes::from(format!("group-test-{mcast_port}")))
        .port(0)
        .multicast(
            MulticastConfig::default()
                .port(mcast_port)
                .interface(Some(Ipv4Addr::LOCALHOST)),
        )
}

#[tokio::test]
async fn nodes_agree_on_views_and_a_later_joiner_is_admitted() {
    let (a, mut a_events) = Node::start(config(46510)).await.unwrap();
    let (b, _b_events) = Node::start(config(46510)).await.unwrap();
    let (c, _c_events) = Node::start(config(46510)).await.unwrap();
    let ids = [a.id(), b.id(), c.id()];
    let view = wait_for_view(&a, &ids, Duration::from_secs(5)).await;
    assert_eq!(wait_for_view(&b, &ids, Duration::from_secs(2)).await, view);
    assert_eq!(wait_for_view(&c, &ids, Duration::from_secs(2)).await, view);

    let joined_at = Instant::now();
    let (d, _d_events) = Node::start(config(46510)).await.unwrap();
    let ids = [a.id(), b.id(), c.id(), d.id()];
    let view = wait_for_view(&d, &ids, Duration::from_secs(5)).await;
    // Generous bound: this only shows the newcomer did not wait for a timeout; the join
    // time itself is measured by `cohort perf group`.
    assert!(
        joined_at.elapsed() < Duration::from_secs(1),
        "{:?}",
        joined_at.elapsed()
    );
    for n in [&a, &b, &c] {
        assert_eq!(wait_for_view(n, &ids, Duration::from_secs(2)).await, view);
    }
    // The application saw views, members, but never a group control message.
    while let Ok(Some(event)) = timeout(Duration::from_millis(20), a_events.recv()).await {
        assert!(!matches!(event, Event::Message(_)), "{event:?}");
    }
    assert_eq!(a.stats().messages_received, 0);
    for n in [a, b, c, d] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn a_graceful_leave_is_installed_at_once_even_of_the_coordinator() {
    let (a, _ae) = Node::start(config(46511)).await.unwrap();
    let (b, _be) = Node::start(config(46511)).await.unwrap();
    let (c, _ce) = Node::start(config(46511)).await.unwrap();
    let ids = [a.id(), b.id(), c.id()];
    let view = wait_for_view(&a, &ids, Duration::from_secs(5)).await;
    wait_for_view(&b, &ids, Duration::from_secs(2)).await;
    wait_for_view(&c, &ids, Duration::from_secs(2)).await;
    let nodes = [a, b, c];
    let coordinator = view.coordinator().unwrap().id;
    let (leaving, staying): (Vec<Node>, Vec<Node>) =
        nodes.into_iter().partition(|n| n.id() == coordinator);
    let left_at = Instant::now();
    leaving[0].shutdown().await;
    let rest: Vec<MemberId> = staying.iter().map(Node::id).collect();
    for n in &staying {
        wait_for_view(n, &rest, Duration::from_secs(1)).await;
    }
    // Far below the failure timeout (1.7 s): the leave was announced, not detected.
    assert!(
        left_at.elapsed() < Duration::from_millis(1000),
        "{:?}",
        left_at.elapsed()
    );
    for n in staying {
        n.shutdown().await;
    }
}
