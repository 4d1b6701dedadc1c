//! Bookkeeping for acknowledged parallel sends (SPEC §2, Tribes `ParallelNioSender`).
//!
//! The runtime owns the sockets; these types own the decisions:
//!
//! - [`AckQueue`]: per connection. Tribes ACK frames carry no message id: the n-th reply on
//!   a connection answers the n-th frame that asked for one. The queue pairs replies with
//!   frames in order and knows the oldest unanswered frame's deadline. Because of that
//!   pairing, several frames may be in flight on one connection (pipelining); when any ACK
//!   is late the connection is out of step and must be closed, failing everything in it.
//! - [`Delivery`]: per send. Tracks each destination through its attempts (first try plus
//!   [`retries`](Delivery::new)), and ends with a [`DeliveryReport`] listing who
//!   acknowledged and who failed, and why.

mod ack;
mod delivery;

pub use ack::{AckQueue, AckQueueError};
pub use delivery::{Delivery, DeliveryReport, FailureReason, NextStep};
