//! Node configuration with documented defaults.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use bytes::Bytes;
use cohort_proto::group::GroupConfig;

use crate::discovery::DiscoveryConfig;
use crate::security::Keyring;
use crate::transport::limits::InboundLimits;

/// Everything a node needs to start. `Config::default()` is a working single-machine
/// setup: Tribes' multicast group and timings, a receiver on 127.0.0.1 from port 4000 up.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The cluster name. Members of other domains are ignored when
    /// [`domain_filter`](Self::domain_filter) is on. Default: empty (Tribes' default).
    pub domain: Bytes,
    /// Application metadata published to the other members. Default: empty.
    pub payload: Bytes,
    /// Address the TCP receiver binds to and that other members connect to. It must be a
    /// concrete address, since it is advertised. Default: 127.0.0.1, so nothing leaves
    /// the machine unless asked to.
    pub bind: IpAddr,
    /// First TCP port tried for the receiver; 0 lets the system pick. Default: 4000
    /// (Tribes' `NioReceiver` default).
    pub port: u16,
    /// How many ports above [`port`](Self::port) to try when it is taken (Tribes'
    /// `autoBind`). Default: 100.
    pub port_range: u16,
    /// Multicast discovery and heartbeat settings.
    pub multicast: MulticastConfig,
    /// How often the local member is announced. Default: 500 ms (Tribes).
    pub heartbeat_interval: Duration,
    /// How long a silent member stays in the list. Default: 3000 ms (Tribes).
    pub drop_time: Duration,
    /// Ignore members whose domain differs from ours. Tomcat does not filter; cohort does
    /// by default. Default: true.
    pub domain_filter: bool,
    /// How long a send waits for each member's ACK. Default: 3000 ms (Tribes).
    pub ack_timeout: Duration,
    /// How many times a failed destination is tried again. Default: 1 (Tribes).
    pub retries: u32,
    /// How long to wait for a TCP connection to a member. Default: 3000 ms.
    pub connect_timeout: Duration,
    /// Largest message accepted from the network, in bytes. Larger frames close the
    /// connection. Default: 64 MiB.
    pub max_message_size: usize,
    /// How many frames may wait for their ACK on one connection before new sends wait.
    /// Default: 4096.
    pub max_in_flight_per_member: usize,
    /// How long a connection keeps polling its socket, after a frame went out or came in,
    /// before it sleeps. On a quiet machine an idle CPU takes tens of microseconds to wake
    /// up for each reply, which is most of a loopback or LAN round trip; polling briefly
    /// catches the reply before the CPU sleeps. CPU is spent only while messages flow (at
    /// most this long per wake-up); zero never polls. Default: 50 µs.
    pub busy_poll: Duration,
    /// Capacity of the event stream. When the application falls behind, receivers stop
    /// reading from their connections (back-pressure) rather than buffer without bound.
    /// Membership events are never dropped. Default: 1024.
    pub event_capacity: usize,
    /// The group protocol: views, joins, failure detection with witnesses (see
    /// [`GroupConfig`]). Its `cluster` is ignored: the group's cluster name is `domain`.
    /// The failure detector listens to the heartbeats, so
    /// [`GroupConfig::suspect_after`] must span at least two
    /// [`heartbeat_interval`](Self::heartbeat_interval)s. Default: `GroupConfig::default()`
    /// (a hung member is suspected after 1.7 s and removed once two witnesses agree).
    pub group: GroupConfig,
    /// How nodes find each other: multicast (default) or, where there is none, unicast
    /// heartbeats to static hosts, gossip routers' lists or DNS records (see
    /// [`DiscoveryConfig`]).
    pub discovery: DiscoveryConfig,
    /// Cluster-key mode: with a keyring, every datagram and TCP stream the node sends is
    /// sealed with the ring's primary key, and everything it receives must open with one
    /// of the ring's keys; plain traffic, forgeries and replays are refused and counted
    /// (see [`Security`](crate::Security) and `SECURITY.md`). A keyed node cannot talk to
    /// Tomcat nodes or unkeyed cohort nodes. `None` keeps the plain Tribes and cohort wire
    /// formats. Default: `None`.
    pub keyring: Option<Keyring>,
    /// Limits on the connections the channel's receiver accepts: how many at once and
    /// how many bytes of unfinished frames they may hold (see [`InboundLimits`]). Idle
    /// connections are never closed for being idle. `max_buffered_per_connection` must
    /// hold the largest frame: at least `max_message_size` plus 64 KiB. Default:
    /// `InboundLimits::default()` (1024 connections, 64 MiB + 128 KiB each, 256 MiB in
    /// all).
    pub inbound: InboundLimits,
}

/// Multicast group settings for discovery and heartbeats.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MulticastConfig {
    /// The group. Default: 228.0.0.4 (Tribes).
    pub group: Ipv4Addr,
    /// The UDP port. Default: 45564 (Tribes).
    pub port: u16,
    /// The interface (by its IPv4 address) to send and receive on. `None` uses the
    /// [`bind`](Config::bind) address when it is IPv4. Default: `None`.
    pub interface: Option<Ipv4Addr>,
    /// Time-to-live of heartbeats: 1 keeps them on the local network. Default: 1.
    pub ttl: u32,
}

impl Default for MulticastConfig {
    fn default() -> Self {
        Self {
            group: Ipv4Addr::new(228, 0, 0, 4),
            port: 45564,
            interface: None,
            ttl: 1,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            domain: Bytes::new(),
            payload: Bytes::new(),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 4000,
            port_range: 100,
            multicast: MulticastConfig::default(),
            heartbeat_interval: Duration::from_millis(500),
            drop_time: Duration::from_millis(3000),
            domain_filter: true,
            ack_timeout: Duration::from_millis(3000),
            retries: 1,
            connect_timeout: Duration::from_millis(3000),
            max_message_size: 64 * 1024 * 1024,
            max_in_flight_per_member: 4096,
            busy_poll: Duration::from_micros(50),
            event_capacity: 1024,
            group: GroupConfig::default(),
            discovery: DiscoveryConfig::default(),
            keyring: None,
            inbound: InboundLimits::default(),
        }
    }
}

impl Config {
    /// A default configuration for the given domain.
    pub fn with_domain(domain: impl Into<Bytes>) -> Self {
        Self {
            domain: domain.into(),
            ..Self::default()
        }
    }

    /// Checks the settings that cannot work, before anything is started.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.bind.is_unspecified() {
            return Err(ConfigError::UnspecifiedBind);
        }
        if self.discovery.multicast && !self.multicast.group.is_multicast() {
            return Err(ConfigError::NotMulticast(self.multicast.group));
        }
        let d = &self.discovery;
        if !d.multicast && d.initial_hosts.is_empty() && d.routers.is_empty() && d.dns.is_none() {
            return Err(ConfigError::NoDiscovery);
        }
        if !d.multicast && self.port == 0 {
            return Err(ConfigError::UnicastNeedsPort);
        }
        if self.heartbeat_interval.is_zero() {
            return Err(ConfigError::Zero("heartbeat_interval"));
        }
        if self.drop_time <= self.heartbeat_interval {
            return Err(ConfigError::DropTimeTooShort);
        }
        if self.ack_timeout.is_zero() {
            return Err(ConfigError::Zero("ack_timeout"));
        }
        if self.max_in_flight_per_member == 0 {
            return Err(ConfigError::Zero("max_in_flight_per_member"));
        }
        if self.event_capacity == 0 {
            return Err(ConfigError::Zero("event_capacity"));
        }
        if self.group.suspect_after < self.heartbeat_interval * 2 {
            return Err(ConfigError::SuspectTooShort);
        }
        if self.inbound.max_connections == 0 {
            return Err(ConfigError::Zero("inbound.max_connections"));
        }
        if self.inbound.max_buffered_per_connection
            < self.max_message_size.saturating_add(64 * 1024)
        {
            return Err(ConfigError::InboundBufferTooSmall);
        }
        Ok(())
    }

    /// The interface multicast traffic uses.
    pub(crate) fn multicast_interface(&self) -> Ipv4Addr {
        match (self.multicast.interface, self.bind) {
            (Some(i), _) => i,
            (None, IpAddr::V4(v4)) => v4,
            (None, IpAddr::V6(_)) => Ipv4Addr::UNSPECIFIED,
        }
    }
}

/// A setting that cannot work. Nothing was started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Multicast is off and no other discovery source is configured.
    #[error("multicast discovery is off and no initial hosts, gossip router or DNS name is set")]
    NoDiscovery,
    /// Unicast discovery needs a known port range (others probe it), not port 0.
    #[error("discovery without multicast needs a port (members probe each other's ports), not 0")]
    UnicastNeedsPort,
    /// The group's suspect timeout is shorter than two heartbeat intervals: one late
    /// heartbeat would make a healthy member suspect.
    #[error("group.suspect_after must be at least two heartbeat intervals")]
    SuspectTooShort,
    /// `bind` is 0.0.0.0 or `::`; other members could not connect to it.
    #[error("bind address must be a concrete address other members can reach, not unspecified")]
    UnspecifiedBind,
    /// The group address is not a multicast address.
    #[error("{0} is not a multicast address")]
    NotMulticast(Ipv4Addr),
    /// A duration or count that must be positive is zero.
    #[error("{0} must not be zero")]
    Zero(&'static str),
    /// Members would be dropped between two heartbeats.
    #[error("drop_time must be longer than heartbeat_interval")]
    DropTimeTooShort,
    /// A connection could not hold the largest frame the receiver accepts.
    #[error("inbound.max_buffered_per_connection must be at least max_message_size + 64 KiB")]
    InboundBufferTooSmall,
}

cohort_proto::config_setters!(Config {
    [into] domain: Bytes,
    [into] payload: Bytes,
    [into] bind: IpAddr,
    port: u16,
    port_range: u16,
    multicast: MulticastConfig,
    heartbeat_interval: Duration,
    drop_time: Duration,
    domain_filter: bool,
    ack_timeout: Duration,
    retries: u32,
    connect_timeout: Duration,
    max_message_size: usize,
    max_in_flight_per_member: usize,
    busy_poll: Duration,
    event_capacity: usize,
    group: GroupConfig,
    discovery: DiscoveryConfig,
    [into] keyring: Option<Keyring>,
    inbound: InboundLimits,
});

cohort_proto::config_setters!(MulticastConfig {
    group: Ipv4Addr,
    port: u16,
    [into] interface: Option<Ipv4Addr>,
    ttl: u32,
});
