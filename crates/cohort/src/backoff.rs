//! The one back-off every reconnecting loop of the runtime uses (reliable TCP links,
//! election connections, gossip router sessions).

use std::time::Duration;

/// Waits before reconnecting: doubling from a first wait up to a longest one, and back to
/// the first after a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    first: Duration,
    longest: Duration,
    next: Duration,
}

impl Backoff {
    /// For reconnecting to a member: 20 ms first, short enough that a member that restarts
    /// or a connection that drops is back within a round of the protocol; at most 1 s, so a
    /// member that is gone costs one attempt a second.
    pub(crate) const RECONNECT: Self = Self::new(Duration::from_millis(20), Duration::from_secs(1));

    /// Waits `first`, then twice as long after each failure, up to `longest`.
    pub(crate) const fn new(first: Duration, longest: Duration) -> Self {
        Self {
            first,
            longest,
            next: first,
        }
    }

    /// The wait before the next attempt; the one after it is twice as long (at most the
    /// longest).
    pub(crate) fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.longest);
        wait
    }

    /// After a success: the next wait is the first again.
    pub(crate) fn reset(&mut self) {
        self.next = self.first;
    }

    /// Whether the waits have reached the longest.
    pub(crate) fn at_longest(&self) -> bool {
        self.next == self.longest
    }

    /// The first wait.
    pub(crate) fn first(&self) -> Duration {
        self.first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_longest_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(20), ms(100));
        let waits: Vec<_> = (0..5).map(|_| b.next_wait()).collect();
        assert_eq!(waits, [ms(20), ms(40), ms(80), ms(100), ms(100)]);
        assert!(b.at_longest());
        b.reset();
        assert_eq!(b.next_wait(), ms(20));
        assert!(!b.at_longest());
        assert_eq!(b.first(), ms(20));
    }
}
