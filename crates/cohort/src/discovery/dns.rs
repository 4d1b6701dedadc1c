//! DNS discovery: A records (each address with a port range) or SRV records (host and
//! port), resolved again periodically, as a Kubernetes headless service publishes them.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::Resolver;
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use tracing::{debug, warn};

use super::Candidates;

/// Which records name the members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DnsRecord {
    /// A/AAAA records; each address is tried on ports `first..=last`.
    A {
        /// First port.
        first: u16,
        /// Last port (inclusive).
        last: u16,
    },
    /// SRV records (e.g. `_cohort._tcp.shop.default.svc.cluster.local`): host and port.
    Srv,
}

/// A DNS name whose records list the members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsDiscovery {
    /// The name to resolve.
    pub name: String,
    /// A or SRV.
    pub record: DnsRecord,
    /// The name server to ask (`None`: the system's, from /etc/resolv.conf).
    pub server: Option<SocketAddr>,
    /// How often the name is resolved again. Default in the CLI: 5 s.
    pub refresh: Duration,
}

pub(super) async fn run(dns: DnsDiscovery, candidates: Arc<Candidates>) {
    let resolver = match dns.server {
        Some(server) => {
            let servers =
                NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true);
            let mut opts = ResolverOpts::default();
            // Members come and go: never serve an old answer.
            opts.cache_size = 0;
            Resolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], servers),
                TokioConnectionProvider::default(),
            )
            .with_options(opts)
            .build()
        }
        None => match Resolver::builder_tokio() {
            Ok(b) => b.build(),
            Err(e) => {
                warn!(error = %e, "no system DNS configuration; DNS discovery is off");
                return;
            }
        },
    };
    loop {
        match resolve(&resolver, &dns).await {
            Ok(addrs) => {
                debug!(name = %dns.name, found = addrs.len(), "DNS discovery");
                candidates.set("dns", addrs);
            }
            Err(e) => warn!(name = %dns.name, error = %e, "DNS discovery lookup failed"),
        }
        tokio::time::sleep(dns.refresh).await;
    }
}

async fn resolve(
    resolver: &Resolver<TokioConnectionProvider>,
    dns: &DnsDiscovery,
) -> Result<BTreeSet<SocketAddr>, hickory_resolver::ResolveError> {
    let mut addrs = BTreeSet::new();
    match dns.record {
        DnsRecord::A { first, last } => {
            for ip in resolver.lookup_ip(dns.name.as_str()).await?.iter() {
                for port in first..=last {
                    addrs.insert(SocketAddr::new(ip, port));
                }
            }
        }
        DnsRecord::Srv => {
            for srv in resolver.srv_lookup(dns.name.as_str()).await?.iter() {
                let target = srv.target().to_utf8();
                for ip in resolver.lookup_ip(target.as_str()).await?.iter() {
                    addrs.insert(SocketAddr::new(ip, srv.port()));
                }
            }
        }
    }
    Ok(addrs)
}
