//! The one lifecycle every handle of this crate follows ([`Node`](crate::Node),
//! [`ReliableChannel`](crate::reliable::ReliableChannel),
//! [`Election`](crate::election::Election)):
//!
//! - handles are cheap to clone, and every clone drives the same running thing;
//! - `async fn shutdown(&self)` stops it on purpose (gracefully where the protocol has a
//!   goodbye) and returns once its tasks have ended and its sockets are closed; calling it
//!   again, or on another clone, does nothing;
//! - dropping the last clone stops it too, without the goodbye: its tasks are aborted, and
//!   their sockets close as the runtime drops them.
//!
//! `shutdown` takes `&self` rather than `self` because the handles are clones of one
//! another: consuming one clone could not stop the others, and a handle kept in an `Arc`
//! or a struct field could not be shut down at all.

use std::sync::Mutex;

use tokio::task::JoinHandle;

/// The tasks behind a handle: aborted when the last handle goes ([`Drop`]), or stopped and
/// waited for by [`stop`](Self::stop).
#[derive(Default)]
pub(crate) struct Tasks(Mutex<Vec<JoinHandle<()>>>);

impl Tasks {
    pub(crate) fn new(tasks: Vec<JoinHandle<()>>) -> Self {
        Self(Mutex::new(tasks))
    }

    fn take(&self) -> Vec<JoinHandle<()>> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Aborts every task and waits until each has ended, so what they owned (sockets,
    /// connections) is closed when this returns. Later calls find nothing to stop.
    pub(crate) async fn stop(&self) {
        let tasks = self.take();
        for task in &tasks {
            task.abort();
        }
        Self::join(tasks).await;
    }

    /// Waits for every task to end by itself (after it was told to stop), without aborting
    /// it. Later calls find nothing to wait for.
    pub(crate) async fn join_all(&self) {
        Self::join(self.take()).await;
    }

    async fn join(tasks: Vec<JoinHandle<()>>) {
        for task in tasks {
            // An aborted task ends with a cancellation error; a task that panicked has
            // already reported it. Neither is the caller's to handle at shutdown.
            let _ = task.await;
        }
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in self
            .0
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

/// A spawned task that is aborted when this guard is dropped: for helper tasks that must
/// not outlive the task that spawned them, even when that task is itself aborted.
pub(crate) struct AbortOnDrop(pub(crate) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
