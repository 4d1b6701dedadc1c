//! Errors of the runtime API, one enum per failure domain.

use std::io;

use cohort_proto::Member;
use cohort_proto::channel::FailureReason;

use crate::config::ConfigError;

/// The node could not start. Nothing is left running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The TCP receiver could not bind to any port of the range.
    #[error("cannot bind the receiver on {addr} ports {first}..={last}: {source}")]
    Bind {
        /// The address tried.
        addr: std::net::IpAddr,
        /// First port tried.
        first: u16,
        /// Last port tried.
        last: u16,
        /// The last error.
        source: io::Error,
    },
    /// The multicast socket could not be set up.
    #[error("cannot set up multicast on {group}:{port} via {interface}: {source}")]
    Multicast {
        /// The group.
        group: std::net::Ipv4Addr,
        /// The port.
        port: u16,
        /// The interface.
        interface: std::net::Ipv4Addr,
        /// The error.
        source: io::Error,
    },
}

/// A send did not reach every destination. The destinations not listed in `failed`
/// acknowledged the message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("send failed for {} of {} member(s): {}", .failed.len(), .failed.len() + .acked.len(), describe(.failed))]
pub struct SendError {
    /// Members that acknowledged.
    pub acked: Vec<Member>,
    /// Members that did not, each with the last reason.
    pub failed: Vec<(Member, FailureReason)>,
}

fn describe(failed: &[(Member, FailureReason)]) -> String {
    failed
        .iter()
        .map(|(m, r)| format!("{m}: {r}"))
        .collect::<Vec<_>>()
        .join("; ")
}
