//! cohort: group communication for Rust.
//!
//! A set of processes forms a cluster: they find each other by multicast heartbeats,
//! keep a list of live members, and send each other messages that every destination
//! acknowledges. The wire formats are Apache Tomcat Tribes', byte for byte, so a cohort
//! node and a Tomcat 10 Tribes node work in the same cluster.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use cohort::{Config, Event, Node, SendOptions};
//!
//! let (node, mut events) = Node::start(Config::with_domain("demo")).await?;
//! while let Some(event) = events.recv().await {
//!     match event {
//!         Event::MemberAdded(m) => {
//!             node.send(&[m], "hi", SendOptions::USE_ACK).await?;
//!         }
//!         Event::MemberDisappeared { member, reason } => println!("{member} left: {reason:?}"),
//!         Event::Message(msg) => println!("{}: {:?}", msg.from, msg.data),
//!         Event::ViewChanged(view) => println!("view {}: {:?}", view.id, view.members),
//!         Event::Rejoined { old, new } => println!("removed as {old}, back as {new}"),
//!         // Events, errors, stats and configs are `#[non_exhaustive]`: new kinds may come.
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! The protocols themselves live in [`cohort_proto`], a deterministic core without I/O;
//! this crate drives them with tokio sockets and timers.
//!
//! # Handles and their lifecycle
//!
//! [`Node`], [`ReliableChannel`](reliable::ReliableChannel) and
//! [`Election`](election::Election) follow one convention:
//! - a handle is cheap to clone, and every clone drives the same running thing;
//! - `async fn shutdown(&self)` stops it on purpose (a node first announces that it leaves)
//!   and returns once its sockets are closed, so its ports can be bound again; calling it
//!   again, on any clone, does nothing;
//! - dropping the last clone stops it too, without the announcement: its tasks are
//!   aborted and its sockets close as the runtime drops them.
//!
//! `shutdown` borrows rather than consumes because the handles are clones of one another:
//! consuming one clone could not stop the others, and a handle kept in an `Arc` or a
//! struct field could not be shut down at all.
//!
//! # Growing without breaking
//!
//! Events, errors, counters and configurations are `#[non_exhaustive]`: match events and
//! errors with a catch-all arm, and build a configuration from its `Default` (or a preset)
//! by assigning fields or chaining its setters, e.g.
//! `Config::with_domain("orders").port(0).retries(3)`.
#![forbid(unsafe_code)]
#![deny(missing_docs, rustdoc::broken_intra_doc_links)]

mod backoff;
mod clock;
mod config;
mod discovery;
pub mod election;
mod error;
mod event;
mod group;
mod heartbeat;
mod lifecycle;
mod messages;
mod node;
pub mod reliable;
pub mod router;
pub mod security;
mod shared;
mod transport;

pub use cohort_proto::channel::FailureReason;
pub use cohort_proto::group::{GroupConfig, GroupMember, HostCheck, View, ViewId};
pub use cohort_proto::wire::tribes::SendOptions;
pub use cohort_proto::{DisappearReason, Member, MemberId};
pub use config::{Config, ConfigError, MulticastConfig};
pub use discovery::{DiscoveryConfig, DnsDiscovery, DnsRecord, HostPorts, ParseHostPortsError};
pub use error::{SendError, StartError};
pub use event::{Event, Events, Message};
pub use node::{Node, NodeStats, SendReport};
pub use security::{Key, KeyId, Keyring, KeyringError, Security, SecurityStats};
pub use transport::limits::{InboundLimits, InboundStats};

/// The protocol core, re-exported for users who drive it themselves.
pub use cohort_proto as proto;
