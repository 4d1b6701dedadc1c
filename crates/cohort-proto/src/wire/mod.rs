//! Byte formats spoken on the wire.
//!
//! Each format has an encoder and a decoder. Decoders take the received bytes as
//! [`bytes::Bytes`] and return views into them, so decoding never copies a payload and
//! never allocates more than the input already holds.

pub mod cohort;
pub mod tribes;
pub mod zookeeper;

mod length_prefixed;
mod reader;

pub use reader::DecodeError;
