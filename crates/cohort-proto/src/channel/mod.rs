//! Channel.
