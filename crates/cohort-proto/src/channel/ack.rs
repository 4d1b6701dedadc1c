//! Pairs reply frames with the data frames they answer.

use std::collections::VecDeque;
use std::time::Instant;

use crate::wire::tribes::frame::Reply;

/// A reply came that the connection cannot make sense of. The connection is out of step
/// and must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AckQueueError {
    /// A reply arrived while no frame was waiting for one.
    #[error("unexpected reply: no frame is waiting for an acknowledgement")]
    Unexpected,
    /// A frame arrived whose body is neither an ACK nor a failure ACK.
    #[error("reply frame with unknown body of {0} bytes")]
    UnknownBody(usize),
}

/// The frames written on one connection that still wait for their reply, oldest first.
///
/// `T` is whatever the caller needs to report the outcome (a channel to the waiting send,
/// say). All frames of a connection share one ACK timeout, so deadlines are in order and
/// the oldest one is the next to expire.
#[derive(Debug)]
pub struct AckQueue<T> {
    waiting: VecDeque<(T, Instant)>,
}

impl<T> Default for AckQueue<T> {
    fn default() -> Self {
        Self {
            waiting: VecDeque::new(),
        }
    }
}

impl<T> AckQueue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that a frame wanting a reply was written; its reply is due by `deadline`.
    pub fn push(&mut self, token: T, deadline: Instant) {
        self.waiting.push_back((token, deadline));
    }

    /// Number of frames waiting for a reply.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// True when no frame waits for a reply.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Handles a reply frame's body: returns the token of the frame it answers and what it
    /// says.
    pub fn handle_reply(&mut self, body: &[u8]) -> Result<(T, Reply), AckQueueError> {
        let reply = Reply::from_body(body).ok_or(AckQueueError::UnknownBody(body.len()))?;
        let (token, _) = self.waiting.pop_front().ok_or(AckQueueError::Unexpected)?;
        Ok((token, reply))
    }

    /// The deadline of the oldest waiting frame.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.waiting.front().map(|(_, d)| *d)
    }

    /// True when the oldest waiting frame's reply is overdue at `now`: the connection must
    /// then be closed and [`drain`](Self::drain)ed.
    pub fn is_overdue(&self, now: Instant) -> bool {
        self.poll_timeout().is_some_and(|d| d <= now)
    }

    /// Takes every waiting token, oldest first (the connection is being closed).
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.waiting.drain(..).map(|(t, _)| t)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::wire::tribes::frame::{ACK_BODY, FAIL_ACK_BODY};

    #[test]
    fn replies_answer_frames_in_order() {
        let t0 = Instant::now();
        let mut q = AckQueue::new();
        q.push("a", t0 + Duration::from_secs(3));
        q.push("b", t0 + Duration::from_secs(4));
        assert_eq!(q.poll_timeout(), Some(t0 + Duration::from_secs(3)));
        assert_eq!(q.handle_reply(&ACK_BODY), Ok(("a", Reply::Ack)));
        assert_eq!(q.handle_reply(&FAIL_ACK_BODY), Ok(("b", Reply::FailAck)));
        assert_eq!(q.handle_reply(&ACK_BODY), Err(AckQueueError::Unexpected));
        assert!(q.is_empty());
    }

    #[test]
    fn unknown_body_and_overdue() {
        let t0 = Instant::now();
        let mut q = AckQueue::new();
        q.push(1, t0 + Duration::from_secs(3));
        q.push(2, t0 + Duration::from_secs(3));
        assert_eq!(q.handle_reply(b"hello"), Err(AckQueueError::UnknownBody(5)));
        assert_eq!(q.len(), 2, "an unknown reply consumes nothing");
        assert!(!q.is_overdue(t0 + Duration::from_millis(2999)));
        assert!(q.is_overdue(t0 + Duration::from_secs(3)));
        assert_eq!(q.drain().collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(q.poll_timeout(), None);
    }
}
