//! The protocol core of cohort: wire formats and protocol state machines.
//!
//! This crate contains **no networking code, no async runtime and no clock reads**.
//! Every input that depends on time takes `now: Instant`; randomness comes in as an
//! argument; outputs are plain values the caller drains (`poll_transmit`, `poll_event`,
//! `poll_timeout`). That makes every protocol deterministic: the same inputs give the same
//! outputs, so the protocols are tested without sockets, in virtual time, and a failing
//! simulated run replays from its seed. The `cohort` crate drives these machines with
//! tokio sockets and timers.
//!
//! What is here:
//! - [`wire`]: byte formats. [`wire::tribes`] is Apache Tomcat Tribes' member packet and
//!   channel frame, byte-exact, so cohort and Tomcat nodes share a cluster.
//!   [`wire::zookeeper`] is ZooKeeper 3.8's leader-election connection header, framing and
//!   notification, byte-exact, so a cohort voter takes part in a ZooKeeper election.
//! - [`membership`]: the member list kept by multicast heartbeats (SPEC §1).
//! - [`channel`]: bookkeeping for acknowledged parallel sends: which frame an ACK answers,
//!   ACK deadlines, retries and the per-member outcome of a send (SPEC §2).
//! - [`election`]: ZooKeeper's Fast Leader Election as a deterministic state machine
//!   (SPEC §7).
//! - [`reliable`]: reliable ordered multicast and unicast over datagrams: NAKs,
//!   stability, credit-based flow control, fragmentation, bundling (SPEC §5).
//! - [`total`]: total-order multicast through a sequencer, on top of the reliable layer
//!   (SPEC §6).
//! - [`security`]: cluster-key mode: every cohort datagram and stream sealed with a shared
//!   key (AES-256-GCM under per-sender keys), with a per-sender replay window (SPEC §8).
//!
//! Every decoder checks lengths before it touches or allocates anything and returns a
//! [`wire::DecodeError`] on bad input; none of them panics (each has a fuzz target).
#![forbid(unsafe_code)]
#![deny(missing_docs, rustdoc::broken_intra_doc_links)]

pub mod channel;
pub mod election;
pub mod group;
pub mod membership;
pub mod reliable;
pub mod security;
mod setters;
#[cfg(test)]
mod sim;
pub mod total;
pub mod wire;

pub use membership::{
    DisappearReason, Member, MemberId, Membership, MembershipConfig, MembershipEvent,
};
pub use wire::DecodeError;
