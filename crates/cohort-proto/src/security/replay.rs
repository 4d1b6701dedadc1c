//! The replay guard: which sealed messages a node has already accepted, per sender.

use std::collections::HashMap;

use super::{Instance, OpenError, Opened, Origin};

/// Counters below the highest one seen that are still told apart: older ones are refused.
/// Datagrams of one sender rarely arrive more than a few apart; 1024 leaves ample room.
pub const WINDOW: u64 = 1024;

const WORDS: usize = (WINDOW / 64) as usize;

/// Settings of a [`ReplayGuard`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardConfig {
    /// How far a sealed message's send time may be from the receiver's clock, in
    /// milliseconds, either way. Older messages are refused as stale, which is what lets
    /// the guard forget a sender: a replay of anything it forgot is older than this.
    /// Members' clocks must agree within it (NTP keeps them within milliseconds).
    /// Default: 30 s.
    pub max_skew_ms: u64,
    /// Most senders remembered at once. Only authenticated messages create an entry, so
    /// only key holders fill it; beyond it new senders are refused until old ones expire.
    /// Default: 65 536.
    pub max_senders: usize,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            max_skew_ms: 30_000,
            max_senders: 65_536,
        }
    }
}

/// A sliding window over one sender's counters (RFC 6479's idea: a bitmap indexed by
/// counter modulo its size).
#[derive(Debug, Clone)]
struct Window {
    highest: u64,
    bits: [u64; WORDS],
    last_seen_ms: u64,
}

impl Window {
    fn new(counter: u64, now_ms: u64) -> Self {
        let mut w = Self {
            highest: counter,
            bits: [0; WORDS],
            last_seen_ms: now_ms,
        };
        w.set(counter);
        w
    }

    fn slot(counter: u64) -> (usize, u64) {
        let i = counter % WINDOW;
        ((i / 64) as usize, 1 << (i % 64))
    }

    fn set(&mut self, counter: u64) {
        let (word, bit) = Self::slot(counter);
        self.bits[word] |= bit;
    }

    fn is_set(&self, counter: u64) -> bool {
        let (word, bit) = Self::slot(counter);
        self.bits[word] & bit != 0
    }

    /// Accepts `counter` once.
    fn accept(&mut self, counter: u64, now_ms: u64) -> Result<(), OpenError> {
        if counter > self.highest {
            let ahead = counter - self.highest;
            if ahead >= WINDOW {
                self.bits = [0; WORDS];
            } else {
                for c in self.highest + 1..counter {
                    let (word, bit) = Self::slot(c);
                    self.bits[word] &= !bit;
                }
            }
            self.highest = counter;
            self.set(counter);
        } else if self.highest - counter >= WINDOW || self.is_set(counter) {
            return Err(OpenError::Replayed);
        } else {
            self.set(counter);
        }
        self.last_seen_ms = self.last_seen_ms.max(now_ms);
        Ok(())
    }
}

/// Remembers, per sender instance, which counters were accepted, so that a copy of a
/// sealed message is refused. Bounded: a sender silent for twice
/// [`max_skew_ms`](GuardConfig::max_skew_ms) is forgotten (anything of it an attacker
/// could replay is then stale), and at most [`max_senders`](GuardConfig::max_senders) are
/// held.
///
/// Call it only for messages whose tag checked: an attacker without the key cannot make it
/// hold anything.
#[derive(Debug, Clone)]
pub struct ReplayGuard {
    config: GuardConfig,
    own: Origin,
    windows: HashMap<Instance, Window>,
    next_prune_ms: u64,
}

impl ReplayGuard {
    /// A guard for a node whose own sealers use `own`: messages of that origin are its own
    /// (looped back or reflected) and are refused.
    pub fn new(config: GuardConfig, own: Origin) -> Self {
        Self {
            config,
            own,
            windows: HashMap::new(),
            next_prune_ms: 0,
        }
    }

    /// Senders remembered now.
    pub fn senders(&self) -> usize {
        self.windows.len()
    }

    /// The settings.
    pub fn config(&self) -> &GuardConfig {
        &self.config
    }

    /// Checks an authenticated message's send time against `now_ms`.
    pub(super) fn check_fresh(&self, sent_ms: u64, now_ms: u64) -> Result<(), OpenError> {
        let skew = sent_ms.abs_diff(now_ms);
        if skew > self.config.max_skew_ms {
            return Err(OpenError::Stale {
                skew_ms: i64::try_from(skew).unwrap_or(i64::MAX)
                    * if sent_ms < now_ms { -1 } else { 1 },
            });
        }
        Ok(())
    }

    /// Accepts an opened message once, if it is fresh and not our own. (The opening needs
    /// no guard: open first, outside any lock, then take the guard for this.)
    pub fn accept_opened(&mut self, opened: &Opened, now_ms: u64) -> Result<(), OpenError> {
        self.accept(opened.instance, opened.counter, opened.sent_ms, now_ms)
    }

    /// Accepts (`instance`, `counter`) once, if it is fresh and not our own.
    pub(super) fn accept(
        &mut self,
        instance: Instance,
        counter: u64,
        sent_ms: u64,
        now_ms: u64,
    ) -> Result<(), OpenError> {
        if instance.origin() == self.own {
            return Err(OpenError::Own);
        }
        self.check_fresh(sent_ms, now_ms)?;
        self.prune(now_ms);
        if let Some(window) = self.windows.get_mut(&instance) {
            return window.accept(counter, now_ms);
        }
        if self.windows.len() >= self.config.max_senders {
            self.next_prune_ms = 0;
            self.prune(now_ms);
            if self.windows.len() >= self.config.max_senders {
                return Err(OpenError::TooManySenders);
            }
        }
        self.windows.insert(instance, Window::new(counter, now_ms));
        Ok(())
    }

    /// Forgets senders silent for twice the skew, at most once per quarter skew.
    fn prune(&mut self, now_ms: u64) {
        if now_ms < self.next_prune_ms {
            return;
        }
        self.next_prune_ms = now_ms.saturating_add(self.config.max_skew_ms / 4);
        let keep = self.config.max_skew_ms.saturating_mul(2);
        self.windows
            .retain(|_, w| now_ms.saturating_sub(w.last_seen_ms) <= keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(origin: u8, serial: u32) -> Instance {
        Instance::new(Origin([origin; 12]), serial)
    }

    #[test]
    fn window_accepts_each_counter_once_in_any_order_within_the_window() {
        let mut w = Window::new(5, 0);
        assert_eq!(w.accept(5, 0), Err(OpenError::Replayed));
        assert_eq!(w.accept(7, 0), Ok(()));
        assert_eq!(w.accept(6, 0), Ok(()));
        assert_eq!(w.accept(6, 0), Err(OpenError::Replayed));
        assert_eq!(w.accept(7 + WINDOW - 1, 0), Ok(()));
        // 7 is still inside the window and was seen; 8 was never seen.
        assert_eq!(w.accept(7, 0), Err(OpenError::Replayed));
        assert_eq!(w.accept(8, 0), Ok(()));
        // 6 fell out of the window: refused, seen or not.
        assert_eq!(w.accept(6, 0), Err(OpenError::Replayed));
        // A jump past the whole window clears it.
        let far = 10 * WINDOW;
        assert_eq!(w.accept(far, 0), Ok(()));
        assert_eq!(w.accept(far - 1, 0), Ok(()));
        assert_eq!(w.accept(far - WINDOW, 0), Err(OpenError::Replayed));
        assert_eq!(w.accept(u64::MAX, 0), Ok(()));
        assert_eq!(w.accept(u64::MAX, 0), Err(OpenError::Replayed));
    }

    #[test]
    fn window_slots_are_cleared_when_the_window_moves_past_them() {
        let mut w = Window::new(0, 0);
        // Counter WINDOW shares slot 0 with counter 0: moving there must clear the slot.
        assert_eq!(w.accept(WINDOW, 0), Ok(()));
        assert_eq!(w.accept(1, 0), Ok(()));
        assert_eq!(w.accept(WINDOW, 0), Err(OpenError::Replayed));
    }

    #[test]
    fn guard_refuses_own_stale_and_replayed_and_forgets_silent_senders() {
        let config = GuardConfig {
            max_skew_ms: 1000,
            max_senders: 2,
        };
        let mut g = ReplayGuard::new(config, Origin([9; 12]));
        let now = 1_000_000;
        assert_eq!(g.accept(instance(9, 1), 0, now, now), Err(OpenError::Own));
        assert_eq!(
            g.accept(instance(1, 1), 0, now - 1001, now),
            Err(OpenError::Stale { skew_ms: -1001 })
        );
        assert_eq!(
            g.accept(instance(1, 1), 0, now + 1001, now),
            Err(OpenError::Stale { skew_ms: 1001 })
        );
        assert_eq!(g.accept(instance(1, 1), 0, now, now), Ok(()));
        assert_eq!(
            g.accept(instance(1, 1), 0, now, now),
            Err(OpenError::Replayed)
        );
        assert_eq!(g.accept(instance(2, 1), 0, now, now), Ok(()));
        assert_eq!(
            g.accept(instance(3, 1), 0, now, now),
            Err(OpenError::TooManySenders)
        );
        assert_eq!(g.senders(), 2);
        // Two skews later both are forgotten, and room is made for a new sender; what an
        // attacker could replay of the forgotten ones is stale by then.
        let later = now + 2001;
        assert_eq!(g.accept(instance(3, 1), 0, later, later), Ok(()));
        assert_eq!(g.senders(), 1);
        assert!(matches!(
            g.accept(instance(1, 1), 0, now, later),
            Err(OpenError::Stale { .. })
        ));
    }
}
