//! The channel's TCP transport: a receiver that accepts members' connections and answers
//! with ACKs, and a sender that keeps one persistent connection per member.

pub(crate) mod limits;
pub(crate) mod receiver;
pub(crate) mod sender;
