//! The one lifecycle of every handle (`Node`, `ReliableChannel`, `Election`): a clone keeps
//! it running; `shutdown(&self)` returns once its sockets are closed; dropping the last
//! clone releases its sockets and ends its connections too.
//!
//! Ports on 127.0.0.1: multicast 46700, TCP and UDP 46701-46708, and 46709, a UDP port
//! nothing listens on; every other port is picked by the kernel.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use cohort::election::{Election, ElectionOptions, Role};
use cohort::reliable::{ReliableChannel, ReliableChannelConfig, ReliableSendError, Transport};
use cohort::{
    Config, DiscoveryConfig, GroupMember, MemberId, MulticastConfig, Node, SendOptions, View,
};
use tokio::time::Instant;

/// How long the runtime may take to drop an aborted task's sockets.
const RELEASE_LIMIT: Duration = Duration::from_secs(5);

fn multicast_config(mcast_port: u16) -> Config {
    Config::default()
        .domain(Bytes::from(format!("lifecycle-{mcast_port}")))
        .port(0)
        .multicast(
            MulticastConfig::default()
                .port(mcast_port)
                .interface(Some(Ipv4Addr::LOCALHOST)),
        )
        .heartbeat_interval(Duration::from_millis(100))
        .drop_time(Duration::from_millis(600))
        .ack_timeout(Duration::from_millis(500))
}

/// A node that hears heartbeats on its own address over UDP (no multicast), so it holds
/// a TCP and a UDP socket on that address. Its one initial host is a loopback port
/// nothing listens on.
fn unicast_config(port: u16) -> Config {
    Config::default()
        .domain(Bytes::from_static(b"lifecycle-unicast"))
        .port(port)
        .port_range(0)
        .discovery(
            DiscoveryConfig::default()
                .multicast(false)
                .initial_hosts(vec!["127.0.0.1:46709".parse().unwrap()]),
        )
}

fn tcp_free(addr: SocketAddr) -> bool {
    std::net::TcpListener::bind(addr).is_ok()
}

fn udp_free(addr: SocketAddr) -> bool {
    std::net::UdpSocket::bind(addr).is_ok()
}

/// Waits until `released` holds, or fails naming `what` after [`RELEASE_LIMIT`].
async fn eventually(what: &str, mut released: impl FnMut() -> bool) {
    let deadline = Instant::now() + RELEASE_LIMIT;
    while !released() {
        assert!(
            Instant::now() < deadline,
            "{what} still held {RELEASE_LIMIT:?} after the last handle was dropped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The established TCP connections on this host whose far end is `to` (Linux: read from
/// `/proc/net/tcp`): the connections some local process opened to `to`.
fn connections_to(to: SocketAddr) -> usize {
    let SocketAddr::V4(to) = to else {
        panic!("IPv4 only")
    };
    // /proc/net/tcp prints an IPv4 address as the hex of its u32 in host byte order and
    // the port as big-endian hex; state 01 is ESTABLISHED.
    let wanted = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(to.ip().octets()),
        to.port()
    );
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(2) == Some(&wanted.as_str()) && fields.get(3) == Some(&"01")
        })
        .count()
}

#[tokio::test]
async fn node_shutdown_returns_with_its_sockets_closed() {
    let (node, _events) = Node::start(unicast_config(46701)).await.unwrap();
    let addr = node.local_member().addr;
    assert!(!tcp_free(addr), "the receiver does not hold {addr}");
    assert!(!udp_free(addr), "the heartbeat socket does not hold {addr}");
    let clone = node.clone();
    node.shutdown().await;
    assert!(tcp_free(addr), "the receiver's port is held after shutdown");
    assert!(udp_free(addr), "the heartbeat port is held after shutdown");
    // Any clone may call it again: nothing is left to stop.
    clone.shutdown().await;
}

#[tokio::test]
async fn dropping_the_last_node_handle_releases_its_ports() {
    let (node, events) = Node::start(unicast_config(46702)).await.unwrap();
    let addr = node.local_member().addr;
    let clone = node.clone();
    drop(node);
    assert!(!tcp_free(addr), "a clone is left, but the receiver stopped");
    assert!(
        !udp_free(addr),
        "a clone is left, but the heartbeat socket closed"
    );
    drop(clone);
    drop(events);
    eventually("the receiver's TCP port", || tcp_free(addr)).await;
    eventually("the heartbeat UDP port", || udp_free(addr)).await;
}

/// A node in a group holds connections to the others: its channel connection and its ring
/// connection to the member it watches. Dropping its last handle closes both, so the
/// others see no connection from it any more (a ring watch that outlived its node kept one
/// open for as long as the watched member lived).
#[tokio::test]
async fn dropping_the_last_node_handle_closes_its_connections() {
    let (a, a_events) = Node::start(multicast_config(46700)).await.unwrap();
    let (b, _b_events) = Node::start(multicast_config(46700)).await.unwrap();
    let ids = [a.id(), b.id()];
    support::wait_for_view(&a, &ids, Duration::from_secs(10)).await;
    support::wait_for_view(&b, &ids, Duration::from_secs(10)).await;
    let b_addr = b.local_member().addr;
    // b as a's member: a sends to b over a channel connection.
    let b_member = a
        .members()
        .into_iter()
        .find(|m| m.addr == b_addr)
        .expect("a knows b");
    a.send(&[b_member], "hello", SendOptions::default())
        .await
        .unwrap();
    // Only a connects to b's receiver in this test: its channel and ring connections.
    let deadline = Instant::now() + Duration::from_secs(5);
    while connections_to(b_addr) < 2 {
        assert!(
            Instant::now() < deadline,
            "a never held its channel and ring connections to b: {}",
            connections_to(b_addr)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(a);
    drop(a_events);
    eventually("a connection to b", || connections_to(b_addr) == 0).await;
    b.shutdown().await;
}

/// A reliable channel alone in a fixed view, on a port the kernel picked (free a moment
/// ago: nothing else in this test binds loopback ports it did not pick).
fn lone_channel(transport: Transport) -> (ReliableChannel, SocketAddr) {
    let addr = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|s| s.local_addr())
        .unwrap();
    let id = MemberId::random(&mut rand::rng());
    let view = View::new(1, [GroupMember::new(id, addr)]).unwrap();
    let config = ReliableChannelConfig::default()
        .transport(transport)
        .port_offset(0);
    let channel = ReliableChannel::start_static(id, config, view).unwrap();
    (channel, addr)
}

fn held_by(transport: Transport) -> fn(SocketAddr) -> bool {
    match transport {
        Transport::Udp => |addr| !udp_free(addr),
        Transport::Tcp => |addr| !tcp_free(addr),
    }
}

#[tokio::test]
async fn reliable_channel_shutdown_returns_with_its_socket_closed() {
    for transport in [Transport::Udp, Transport::Tcp] {
        let (channel, addr) = lone_channel(transport);
        let held = held_by(transport);
        assert!(
            held(addr),
            "{transport:?}: the channel does not hold {addr}"
        );
        let clone = channel.clone();
        channel.shutdown().await;
        assert!(!held(addr), "{transport:?}: {addr} is held after shutdown");
        assert_eq!(
            clone.multicast(&b"late"[..]).await,
            Err(ReliableSendError::Closed)
        );
        clone.shutdown().await;
    }
}

#[tokio::test]
async fn dropping_the_last_reliable_channel_releases_its_socket() {
    for transport in [Transport::Udp, Transport::Tcp] {
        let (channel, addr) = lone_channel(transport);
        let held = held_by(transport);
        let clone = channel.clone();
        drop(channel);
        assert!(
            held(addr),
            "{transport:?}: a clone is left, but {addr} was released"
        );
        drop(clone);
        eventually(&format!("{transport:?} port {addr}"), || !held(addr)).await;
    }
}

/// A lone voter (an ensemble of one elects itself), on a port the kernel picked.
async fn lone_voter() -> (Election, SocketAddr) {
    let addr = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .unwrap();
    let election = Election::start(ElectionOptions::new(1, [(1, addr)]))
        .await
        .unwrap();
    (election, addr)
}

#[tokio::test]
async fn election_shutdown_returns_with_its_port_closed() {
    let (election, addr) = lone_voter().await;
    assert!(!tcp_free(addr), "the voter does not hold {addr}");
    let clone = election.clone();
    election.shutdown().await;
    assert!(tcp_free(addr), "{addr} is held after shutdown");
    // Any clone may call it again; the voter is gone.
    clone.shutdown().await;
    drop(election);
}

#[tokio::test]
async fn dropping_the_last_election_handle_releases_its_port() {
    let (election, addr) = lone_voter().await;
    let clone = election.clone();
    drop(election);
    assert!(!tcp_free(addr), "a clone is left, but {addr} was released");
    // The clone still drives the voter: alone, it leads.
    let mut changes = clone.watch();
    tokio::time::timeout(
        Duration::from_secs(5),
        changes.wait_for(|l| l.role == Role::Leading),
    )
    .await
    .expect("a lone voter leads within 5 s")
    .unwrap();
    drop(changes);
    drop(clone);
    eventually(&format!("election port {addr}"), || tcp_free(addr)).await;
}
