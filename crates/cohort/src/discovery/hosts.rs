//! Static initial hosts with port ranges.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use super::Candidates;

/// How often host names are resolved again.
const REFRESH: Duration = Duration::from_secs(30);

/// A host and a range of ports to look for members on: `10.0.0.5:4000`,
/// `10.0.0.5:4000-4010`, `node-a.example:4000-4002`, `[fe80::1]:4000`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPorts {
    /// An IP address or a host name.
    pub host: String,
    /// First port.
    pub first: u16,
    /// Last port (inclusive); at least `first`.
    pub last: u16,
}

/// Why a host spec did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid host {spec:?}: {reason} (expected host:port or host:first-last)")]
pub struct ParseHostPortsError {
    spec: String,
    reason: &'static str,
}

/// Most ports one spec may name, so a typo cannot make a node probe 65 000 ports.
const MAX_RANGE: u16 = 1000;

impl FromStr for HostPorts {
    type Err = ParseHostPortsError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParseHostPortsError {
            spec: spec.to_owned(),
            reason,
        };
        let (host, ports) = spec.rsplit_once(':').ok_or_else(|| err("no port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(err("no host"));
        }
        let (first, last) = match ports.split_once('-') {
            Some((a, b)) => (a, b),
            None => (ports, ports),
        };
        let first: u16 = first.parse().map_err(|_| err("bad port"))?;
        let last: u16 = last.parse().map_err(|_| err("bad port"))?;
        if first == 0 || last < first {
            return Err(err("empty port range"));
        }
        if last - first >= MAX_RANGE {
            return Err(err("port range wider than 1000"));
        }
        Ok(Self {
            host: host.to_owned(),
            first,
            last,
        })
    }
}

impl fmt::Display for HostPorts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.first == self.last {
            write!(f, "{host}:{}", self.first)
        } else {
            write!(f, "{host}:{}-{}", self.first, self.last)
        }
    }
}

pub(super) async fn run(hosts: Vec<HostPorts>, candidates: Arc<Candidates>) {
    loop {
        let mut addrs = BTreeSet::new();
        for h in &hosts {
            match tokio::net::lookup_host((h.host.as_str(), h.first)).await {
                Ok(found) => {
                    for a in found {
                        for port in h.first..=h.last {
                            addrs.insert(std::net::SocketAddr::new(a.ip(), port));
                        }
                    }
                }
                Err(e) => warn!(host = %h.host, error = %e, "cannot resolve initial host"),
            }
        }
        candidates.set("initial-hosts", addrs);
        tokio::time::sleep(REFRESH).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print() {
        let h: HostPorts = "10.0.0.5:4000-4010".parse().unwrap();
        assert_eq!((h.host.as_str(), h.first, h.last), ("10.0.0.5", 4000, 4010));
        assert_eq!(h.to_string(), "10.0.0.5:4000-4010");
        let h: HostPorts = "[fe80::1]:4000".parse().unwrap();
        assert_eq!((h.host.as_str(), h.first, h.last), ("fe80::1", 4000, 4000));
        assert_eq!(h.to_string(), "[fe80::1]:4000");
        let h: HostPorts = "node-a:4000".parse().unwrap();
        assert_eq!(h.host, "node-a");
        for bad in [
            "10.0.0.5",
            ":4000",
            "h:0",
            "h:4010-4000",
            "h:x",
            "h:1-2000",
            "h:4000-",
        ] {
            let e = bad.parse::<HostPorts>().unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }
}
