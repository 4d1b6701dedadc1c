//! The one seam between tokio's clock and the sans-IO cores' time.
//!
//! The cores take `std::time::Instant`s as arguments; the runtime sleeps on tokio's
//! clock, which a test may pause and advance (`tokio::time::pause`). Reading
//! `std::time::Instant::now()` in a task would ignore a paused clock, so the tasks read
//! the time through a [`Clock`] instead: it maps tokio's clock onto std instants from the
//! moment the task started, and maps a core's deadline back for `sleep_until`.

use std::time::Instant as StdInstant;

use tokio::time::Instant;

/// Maps tokio's (possibly paused) clock onto the `std` instants the cores take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    start: Instant,
    start_std: StdInstant,
}

impl Clock {
    /// A clock whose "now" is the real time now, and then moves with tokio's clock.
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
            start_std: StdInstant::now(),
        }
    }

    /// The time to give a core now.
    pub(crate) fn now(self) -> StdInstant {
        self.to_core(Instant::now())
    }

    /// A tokio instant in the cores' time.
    pub(crate) fn to_core(self, t: Instant) -> StdInstant {
        self.start_std + t.saturating_duration_since(self.start)
    }

    /// A core's deadline on tokio's clock, to sleep until.
    pub(crate) fn to_tokio(self, t: StdInstant) -> Instant {
        self.start + t.saturating_duration_since(self.start_std)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn follows_a_paused_clock_and_maps_deadlines_back() {
        let clock = Clock::new();
        let t0 = clock.now();
        tokio::time::advance(Duration::from_secs(5)).await;
        // The real clock barely moved; the core's time moved with tokio's.
        assert_eq!(clock.now() - t0, Duration::from_secs(5));
        let deadline = clock.now() + Duration::from_millis(250);
        assert_eq!(
            clock.to_tokio(deadline) - Instant::now(),
            Duration::from_millis(250)
        );
        assert_eq!(clock.to_core(clock.to_tokio(deadline)), deadline);
    }
}
