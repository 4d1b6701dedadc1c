//! Groups: agreed views, join and leave, the coordinator (SPEC §3).

mod view;

pub use view::{GroupMember, View, ViewId};
