//! The outcome of one send to many members.

use std::fmt;

/// Why a destination did not acknowledge a message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureReason {
    /// No connection could be made.
    Connect(String),
    /// The connection broke before the reply came.
    ConnectionLost(String),
    /// No reply within the ACK timeout.
    AckTimeout,
    /// The receiver's application failed to handle the message (failure ACK).
    Rejected,
    /// The peer answered something that is not a Tribes reply.
    Protocol(String),
    /// The destination is not (or no longer) a member.
    NotAMember,
    /// The local node is shutting down.
    ShuttingDown,
}

impl FailureReason {
    /// True when another attempt could succeed. A failure ACK is the receiver's answer,
    /// not a transport fault, so it is final.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Connect(_) | Self::ConnectionLost(_) | Self::AckTimeout | Self::Protocol(_)
        )
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "connect failed: {e}"),
            Self::ConnectionLost(e) => write!(f, "connection lost: {e}"),
            Self::AckTimeout => f.write_str("ack timeout"),
            Self::Rejected => f.write_str("rejected by the receiver (failure ack)"),
            Self::Protocol(e) => write!(f, "protocol error: {e}"),
            Self::NotAMember => f.write_str("not a member"),
            Self::ShuttingDown => f.write_str("node shutting down"),
        }
    }
}

/// What to do after an attempt to one destination failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Send to it again; this will be attempt number `attempt` (1-based).
    Retry {
        /// The attempt about to be made.
        attempt: u32,
    },
    /// Give up on it: it is recorded as failed.
    GiveUp,
}

#[derive(Debug, Clone)]
enum State {
    Pending { attempt: u32 },
    Acked,
    Failed(FailureReason),
}

/// Tracks one message sent to several destinations, each through up to `1 + retries`
/// attempts. Destinations are addressed by their index in the list given to
/// [`new`](Self::new).
#[derive(Debug, Clone)]
pub struct Delivery<M> {
    targets: Vec<(M, State)>,
    retries: u32,
    pending: usize,
}

impl<M> Delivery<M> {
    /// Starts a delivery: every destination is on its first attempt.
    pub fn new(targets: impl IntoIterator<Item = M>, retries: u32) -> Self {
        let targets: Vec<_> = targets
            .into_iter()
            .map(|m| (m, State::Pending { attempt: 1 }))
            .collect();
        let pending = targets.len();
        Self {
            targets,
            retries,
            pending,
        }
    }

    /// The destinations, in order.
    pub fn targets(&self) -> impl Iterator<Item = &M> {
        self.targets.iter().map(|(m, _)| m)
    }

    /// Destination `index` acknowledged. Ignored unless it was pending.
    pub fn acked(&mut self, index: usize) {
        if let Some((_, state @ State::Pending { .. })) = self.targets.get_mut(index) {
            *state = State::Acked;
            self.pending -= 1;
        }
    }

    /// An attempt to destination `index` failed: retry it, or record the failure.
    pub fn failed(&mut self, index: usize, reason: FailureReason) -> NextStep {
        let Some((_, state)) = self.targets.get_mut(index) else {
            return NextStep::GiveUp;
        };
        let State::Pending { attempt } = *state else {
            return NextStep::GiveUp;
        };
        if reason.is_retryable() && attempt <= self.retries {
            *state = State::Pending {
                attempt: attempt + 1,
            };
            NextStep::Retry {
                attempt: attempt + 1,
            }
        } else {
            *state = State::Failed(reason);
            self.pending -= 1;
            NextStep::GiveUp
        }
    }

    /// True when every destination acknowledged or was given up on.
    pub fn is_complete(&self) -> bool {
        self.pending == 0
    }

    /// The outcome. Destinations still pending are reported as failed with `unfinished`.
    pub fn into_report(self, unfinished: FailureReason) -> DeliveryReport<M> {
        let mut report = DeliveryReport {
            acked: Vec::new(),
            failed: Vec::new(),
        };
        for (m, state) in self.targets {
            match state {
                State::Acked => report.acked.push(m),
                State::Failed(r) => report.failed.push((m, r)),
                State::Pending { .. } => report.failed.push((m, unfinished.clone())),
            }
        }
        report
    }
}

/// Who acknowledged a message and who did not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport<M> {
    /// Destinations that acknowledged (or, for sends without ACK, took the frame).
    pub acked: Vec<M>,
    /// Destinations that failed after every attempt, with the last reason.
    pub failed: Vec<(M, FailureReason)>,
}

impl<M> DeliveryReport<M> {
    /// True when no destination failed.
    pub fn is_success(&self) -> bool {
        self.failed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_transport_faults_once_by_default_and_reports_each_member() {
        let mut d = Delivery::new(["a", "b", "c"], 1);
        d.acked(0);
        assert_eq!(
            d.failed(1, FailureReason::AckTimeout),
            NextStep::Retry { attempt: 2 }
        );
        assert_eq!(
            d.failed(1, FailureReason::ConnectionLost("reset".into())),
            NextStep::GiveUp
        );
        assert!(!d.is_complete());
        assert_eq!(
            d.failed(2, FailureReason::Rejected),
            NextStep::GiveUp,
            "failure acks are final"
        );
        assert!(d.is_complete());
        let r = d.into_report(FailureReason::ShuttingDown);
        assert_eq!(r.acked, vec!["a"]);
        assert_eq!(
            r.failed,
            vec![
                ("b", FailureReason::ConnectionLost("reset".into())),
                ("c", FailureReason::Rejected)
            ]
        );
        assert!(!r.is_success());
    }

    #[test]
    fn zero_retries_and_stale_updates() {
        let mut d = Delivery::new([1, 2], 0);
        assert_eq!(
            d.failed(0, FailureReason::Connect("refused".into())),
            NextStep::GiveUp
        );
        // Late news about a finished destination changes nothing.
        d.acked(0);
        assert_eq!(d.failed(0, FailureReason::AckTimeout), NextStep::GiveUp);
        assert_eq!(d.failed(9, FailureReason::AckTimeout), NextStep::GiveUp);
        let r = d.into_report(FailureReason::ShuttingDown);
        assert_eq!(r.acked, Vec::<i32>::new());
        assert_eq!(
            r.failed,
            vec![
                (1, FailureReason::Connect("refused".into())),
                (2, FailureReason::ShuttingDown)
            ]
        );
    }
}
