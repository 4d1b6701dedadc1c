//! Discovery without multicast (SPEC §1; cloud networks have none): where to send
//! heartbeats when they cannot be multicast.
//!
//! With [`DiscoveryConfig::multicast`] off, a node receives heartbeats on a UDP socket at
//! its own address and port (the TCP receiver's), and sends its heartbeat by unicast to
//! every member it knows plus every *candidate* address the sources below name:
//! - static initial hosts with port ranges ([`HostPorts`]);
//! - gossip routers ([`crate::router`]): rendezvous servers every member registers with;
//! - DNS: A records (each address with a port range) or SRV records (host and port), as a
//!   Kubernetes headless service publishes them ([`DnsDiscovery`]).
//!
//! Candidates are probed on start and then every
//! [`probe_interval`](DiscoveryConfig::probe_interval); known members get every beat. The
//! heartbeats are the same Tribes member records as with multicast, so the membership and
//! group layers above do not know the difference.

mod dns;
mod hosts;
mod router_client;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinHandle;

pub use dns::{DnsDiscovery, DnsRecord};
pub use hosts::{HostPorts, ParseHostPortsError};

/// How nodes find each other.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiscoveryConfig {
    /// Multicast heartbeats (Tribes' way, and the default). Off: unicast heartbeats to the
    /// addresses the other sources name.
    pub multicast: bool,
    /// Static initial hosts, e.g. `10.0.0.5:4000-4010`.
    pub initial_hosts: Vec<HostPorts>,
    /// Gossip routers (`cohort router`) to register with; several give redundancy.
    pub routers: Vec<SocketAddr>,
    /// A DNS name to resolve.
    pub dns: Option<DnsDiscovery>,
    /// How often candidate addresses that are not known members are probed. Default: 2 s.
    pub probe_interval: Duration,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            multicast: true,
            initial_hosts: Vec::new(),
            routers: Vec::new(),
            dns: None,
            probe_interval: Duration::from_secs(2),
        }
    }
}

/// The candidate addresses each source currently names. Sources replace their own set;
/// the heartbeat task reads the union.
#[derive(Debug, Default)]
pub(crate) struct Candidates {
    by_source: Mutex<HashMap<String, BTreeSet<SocketAddr>>>,
    version: std::sync::atomic::AtomicU64,
    /// Woken when the set changes, so new candidates hear from us at once rather than at
    /// the next heartbeat.
    pub(crate) changed: tokio::sync::Notify,
}

impl Candidates {
    /// Replaces the addresses named by `source`.
    pub(crate) fn set(&self, source: &str, addrs: BTreeSet<SocketAddr>) {
        let mut map = self.by_source.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(source) != Some(&addrs) {
            map.insert(source.to_owned(), addrs);
            self.version
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    /// Every candidate address, and a number that changes whenever the set does.
    pub(crate) fn snapshot(&self) -> (u64, BTreeSet<SocketAddr>) {
        let map = self.by_source.lock().unwrap_or_else(|e| e.into_inner());
        let version = self.version.load(std::sync::atomic::Ordering::Relaxed);
        (version, map.values().flatten().copied().collect())
    }
}

/// Starts the discovery sources of `config`; they run until the handles are aborted.
pub(crate) fn start(
    config: &DiscoveryConfig,
    cluster: Bytes,
    local: SocketAddr,
    candidates: Arc<Candidates>,
    security: Option<crate::security::Security>,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    if !config.initial_hosts.is_empty() {
        tasks.push(tokio::spawn(hosts::run(
            config.initial_hosts.clone(),
            candidates.clone(),
        )));
    }
    for router in &config.routers {
        tasks.push(tokio::spawn(router_client::run(
            *router,
            cluster.clone(),
            local,
            candidates.clone(),
            security.clone(),
        )));
    }
    if let Some(dns) = &config.dns {
        tasks.push(tokio::spawn(dns::run(dns.clone(), candidates.clone())));
    }
    tasks
}

cohort_proto::config_setters!(DiscoveryConfig {
    multicast: bool,
    initial_hosts: Vec<HostPorts>,
    routers: Vec<SocketAddr>,
    [into] dns: Option<DnsDiscovery>,
    probe_interval: Duration,
});
