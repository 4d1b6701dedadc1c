//! Discovery without multicast, on loopback: static initial hosts, and gossip routers (two
//! of them; one stops and members still find each other; a restarted router is registered
//! with again by every member, without help).
//!
//! TCP/UDP ports 27930-27989 on 127.0.0.1, fixed per test (unicast discovery probes known
//! port ranges).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cohort::proto::wire::cohort::router::RouterMessage;
use cohort::router::Router;
use cohort::{Config, DiscoveryConfig, HostPorts, MemberId, Node};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

fn unicast(port: u16, domain: &str, discovery: DiscoveryConfig) -> Config {
    Config::default()
        .domain(Bytes::from(domain.to_owned()))
        .port(port)
        .port_range(9)
        .discovery(
            discovery
                .multicast(false)
                .probe_interval(Duration::from_millis(500)),
        )
}

/// Waits until every one of `nodes` has the same view, listing exactly them (by their
/// current ids: a node that merged into another group has a new one).
async fn wait_for_common_view(nodes: &[&Node], limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let ids: BTreeSet<MemberId> = nodes.iter().map(|n| n.id()).collect();
        let views: Vec<_> = nodes.iter().map(|n| n.view()).collect();
        let agreed = views.iter().all(|v| {
            v.as_ref().is_some_and(|v| {
                v.members.len() == ids.len() && v.ids().all(|id| ids.contains(&id))
            })
        }) && views.windows(2).all(|w| w[0] == w[1]);
        if agreed {
            return;
        }
        assert!(Instant::now() < deadline, "no common view: {views:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn static_initial_hosts_with_a_port_range_form_one_group() {
    let hosts: Vec<HostPorts> = vec!["127.0.0.1:27930-27934".parse().unwrap()];
    let discovery = DiscoveryConfig::default().initial_hosts(hosts);
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let (node, _events) = Node::start(unicast(27930, "static", discovery.clone()))
            .await
            .unwrap();
        nodes.push(node);
    }
    wait_for_common_view(&nodes.iter().collect::<Vec<_>>(), Duration::from_secs(5)).await;
    for n in &nodes {
        // Each learned the others' heartbeat address (their own address, over UDP).
        for m in n.members() {
            assert_eq!(m.udp_port, Some(m.addr.port()));
        }
    }
    for n in nodes {
        n.shutdown().await;
    }
}

/// Registers `addr` with the router and returns the first member list it sends back.
async fn router_list(router: SocketAddr, cluster: &str) -> BTreeSet<SocketAddr> {
    let mut stream = TcpStream::connect(router).await.unwrap();
    let mut out = BytesMut::new();
    RouterMessage::Register {
        cluster: Bytes::from(cluster.to_owned()),
        addr: "127.0.0.1:1".parse().unwrap(),
    }
    .encode_framed(&mut out);
    stream.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    loop {
        if let Some(RouterMessage::Members { addrs, .. }) =
            RouterMessage::decode_framed(&mut buf).unwrap()
        {
            return addrs.into_iter().filter(|a| a.port() != 1).collect();
        }
        assert!(
            stream.read_buf(&mut buf).await.unwrap() > 0,
            "router closed"
        );
    }
}

#[tokio::test]
async fn members_find_each_other_through_routers_and_survive_router_failures() {
    let r1_addr: SocketAddr = "127.0.0.1:27950".parse().unwrap();
    let r2_addr: SocketAddr = "127.0.0.1:27951".parse().unwrap();
    let r1 = tokio::spawn(Router::bind(r1_addr).await.unwrap().run());
    let r2 = tokio::spawn(Router::bind(r2_addr).await.unwrap().run());
    let discovery = DiscoveryConfig::default().routers(vec![r1_addr, r2_addr]);
    let (a, _ae) = Node::start(unicast(27960, "routed", discovery.clone()))
        .await
        .unwrap();
    let (b, _be) = Node::start(unicast(27960, "routed", discovery.clone()))
        .await
        .unwrap();
    wait_for_common_view(&[&a, &b], Duration::from_secs(5)).await;

    // Router 1 goes away: a newcomer still finds the group through router 2.
    r1.abort();
    let _ = r1.await;
    let (c, _ce) = Node::start(unicast(27960, "routed", discovery.clone()))
        .await
        .unwrap();
    wait_for_common_view(&[&a, &b, &c], Duration::from_secs(5)).await;

    // Router 1 restarts empty; every member registers with it again by itself.
    let r1 = tokio::spawn(Router::bind(r1_addr).await.unwrap().run());
    let expected: BTreeSet<SocketAddr> =
        [&a, &b, &c].iter().map(|n| n.local_member().addr).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = router_list(r1_addr, "routed").await;
        if listed == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "router 1 lists {listed:?}, want {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for n in [a, b, c] {
        n.shutdown().await;
    }
    r1.abort();
    r2.abort();
}
