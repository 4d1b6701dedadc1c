//! Helpers shared by the integration tests of the `cohort` crate.

use std::time::Duration;

use cohort::{MemberId, Node, View};
use tokio::time::{Instant, timeout};

/// Waits until `node`'s view lists exactly `ids` (in any order), or fails after `limit`.
pub(crate) async fn wait_for_view(node: &Node, ids: &[MemberId], limit: Duration) -> View {
    let mut watch = node.watch_view();
    let deadline = Instant::now() + limit;
    loop {
        if let Some(view) = watch.borrow_and_update().clone()
            && view.members.len() == ids.len()
            && ids.iter().all(|id| view.contains(id))
        {
            return view;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            timeout(left, watch.changed()).await.is_ok(),
            "node {} never had a view of {ids:?}; has {:?}",
            node.id(),
            node.view()
        );
    }
}
