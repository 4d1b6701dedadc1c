//! Apache Tomcat Tribes wire formats, byte for byte (Tomcat 10.1 `MemberImpl`,
//! `XByteBuffer`, `ChannelData`).
//!
//! - [`MemberRecord`]: the membership heartbeat, one per UDP datagram, and the sender
//!   field of every data frame.
//! - [`frame`]: the TCP framing `FLT2002 | length | body | TLF2003`, its ACK and
//!   failure-ACK bodies, and an incremental [`frame::FrameDecoder`] for a byte stream.
//! - [`ChannelData`]: the body of a data frame (options, timestamp, message id, sender,
//!   message).
//!
//! All integers are big-endian, signed Java `int`/`long`. The captured packets these
//! codecs are tested against are in the tests of each module.

mod channel_data;
pub mod frame;
mod member;
mod options;
#[cfg(test)]
mod proptests;

pub use channel_data::{ChannelData, ChannelDataLimits, encode_data_frame};
pub use member::{
    COHORT_COMMAND, MEMBER_BEGIN, MEMBER_END, MemberLimits, MemberRecord, SHUTDOWN_COMMAND,
};
pub use options::SendOptions;
