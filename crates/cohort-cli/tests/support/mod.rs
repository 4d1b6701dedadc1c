//! Support code for real-process integration tests: a network-namespace lab
//! ([`NetLab`]), child processes with JSON line output ([`Proc`]) and the path of the
//! `cohort` binary. Use it from `tests/*.rs` with `mod support;`.
//!
//! Every test binary uses a different subset, hence the `dead_code` allowance.
#![allow(dead_code)]

pub(crate) mod cohort;
pub(crate) mod netlab;
pub(crate) mod proc;

use std::path::PathBuf;
use std::time::Duration;

pub(crate) use netlab::NetLab;
#[allow(unused_imports)]
pub(crate) use proc::{Line, Proc};

/// The `cohort` binary built for this test run.
pub(crate) fn cohort_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cohort"))
}

/// `Duration::from_millis`, for brevity in tests.
pub(crate) const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// `Duration::from_secs`, for brevity in tests.
pub(crate) const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Unwraps a harness result, panicking with its (multi-line) message as is.
pub(crate) trait OrPanic<T> {
    /// The value, or a panic showing `context` and the error.
    fn or_panic(self, context: &str) -> T;
}

impl<T> OrPanic<T> for Result<T, String> {
    #[track_caller]
    fn or_panic(self, context: &str) -> T {
        match self {
            Ok(v) => v,
            Err(e) => panic!("{context}: {e}"),
        }
    }
}
