//! Groups: agreed views, join and leave, failure detection with witnesses, coordinator
//! takeover, rejoin and merge (SPEC §3, §4).
//!
//! A *view* is an id and the members, oldest first; the oldest is the coordinator. Only the
//! coordinator installs views, numbering them one above the largest number it has seen, so
//! a view id names exactly one member list.
//!
//! - **Join**: a starting node listens for [`GroupConfig::discovery_wait`]; a coordinator that
//!   hears it invites it at once (a [`MergeProbe`](crate::wire::cohort::GroupMessage)), so a
//!   newcomer joins within a few round trips. With no group around, the oldest node forms a
//!   group of one and the others join it. Joins that arrive together share a view.
//! - **Leave**: the leaver tells the coordinator (the coordinator tells the next oldest),
//!   which installs a view without it at once.
//! - **Failure detection**: every member hears every other member's heartbeats. One not
//!   heard for [`GroupConfig::suspect_after`] is suspected; the suspicion goes to the
//!   coordinator (to the next oldest if the coordinator is the suspect), which removes the
//!   member only when [`GroupConfig::witnesses`] other members agree, so one slow or cut-off
//!   observer cannot evict anyone. A refused ring connection (each member holds a TCP
//!   connection to its successor, [`Group::watched`]) proves a crash and needs no witness. A
//!   node whose own timers fire late holds its suspicions back (local health).
//! - **Takeover**: when the coordinator is confirmed gone, the next oldest member installs
//!   the next view.
//! - **Rejoin and merge**: a removed member learns it from the view that removes it, or from
//!   the coordinator's invitation when it is heard again, and rejoins under a new id
//!   ([`GroupEvent::Rejoined`]). When two groups of one cluster meet (after a partition), the
//!   smaller one's members leave it and join the bigger one.
//!
//! - **Incarnations and evidence**: a member's id changes when it restarts or rejoins, while
//!   its address stays, so every message names the incarnation it comes from and the one
//!   it is for ([`GroupPacket`](crate::wire::cohort::GroupPacket)); one for another
//!   incarnation (a frame queued before a cut and delivered after the heal, a reply to an
//!   earlier id) is dropped and counted. A member is removed only on evidence: the ring (its
//!   watcher's connection was refused), its own leave, or witnesses. A `Leave` speaks only
//!   for its sender; a death claimed by anyone but the member's watcher in the same view is
//!   that member's suspicion; a view without us removes us only if it comes from our
//!   coordinator (or, after a stall of ours, from a member that took over) and keeps most of
//!   our view.
//!
//! [`Group`] is sans-IO like the rest of this crate: feed it discovery and heartbeat facts
//! ([`Group::heard_from`], [`Group::member_left`], [`Group::member_restarted`],
//! [`Group::link_closed`]), received packets ([`Group::handle_packet`]) and timeouts; drain
//! [`Group::poll_transmit`] and [`Group::poll_event`]; re-arm the timer from
//! [`Group::poll_timeout`]. Messages may be lost, duplicated, or delayed past a rejoin:
//! views are re-sent until acknowledged, joins and suspicions repeated.

mod core;
mod view;

pub use self::core::{Group, GroupConfig, GroupEvent, GroupStats, HostCheck};
pub use view::{GroupMember, View, ViewId};

#[cfg(test)]
mod tests;
