//! Views: the agreed, ordered member list of a group.

use std::fmt;
use std::net::SocketAddr;

use crate::membership::MemberId;

/// Names one view. Only the coordinator named here creates views with this id, and it
/// never reuses a `seq`, so two views with the same id always list the same members.
/// Ids order by `seq` first, so a view installed later has a larger id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ViewId {
    /// Grows by at least one with every view; a new coordinator continues from the
    /// largest `seq` it has seen.
    pub seq: u64,
    /// The member that created the view (its coordinator).
    pub coordinator: MemberId,
}

impl fmt::Debug for ViewId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self)
    }
}

impl fmt::Display for ViewId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", &self.coordinator.to_hex()[..8], self.seq)
    }
}

/// A member as a view lists it: its id and the address of its channel receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupMember {
    /// The member's unique id (new on every start and every rejoin).
    pub id: MemberId,
    /// Where its channel (TCP) receiver listens; in unicast discovery its heartbeat UDP
    /// socket has the same address.
    pub addr: SocketAddr,
}

/// An agreed member list. Members are ordered by age: the first is the oldest and is the
/// coordinator; a newcomer is appended at the end.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct View {
    /// The view's id.
    pub id: ViewId,
    /// The members, oldest first.
    pub members: Vec<GroupMember>,
}

impl GroupMember {
    /// A member: its id and the address of its channel receiver.
    pub fn new(id: MemberId, addr: SocketAddr) -> Self {
        Self { id, addr }
    }
}

impl View {
    /// A view numbered `seq` of `members`, oldest first, coordinated by the first; `None`
    /// when `members` is empty. For a fixed group that does not run the group protocol
    /// (`seq` 1 will do), or for tests; views of a running group come from its coordinator.
    pub fn new(seq: u64, members: impl IntoIterator<Item = GroupMember>) -> Option<Self> {
        let members: Vec<GroupMember> = members.into_iter().collect();
        let coordinator = members.first()?.id;
        Some(Self {
            id: ViewId { seq, coordinator },
            members,
        })
    }

    /// The coordinator: the oldest member.
    pub fn coordinator(&self) -> Option<&GroupMember> {
        self.members.first()
    }

    /// True if `id` is a member of this view.
    pub fn contains(&self, id: &MemberId) -> bool {
        self.members.iter().any(|m| m.id == *id)
    }

    /// The position of `id` in the view (0 = coordinator).
    pub fn rank(&self, id: &MemberId) -> Option<usize> {
        self.members.iter().position(|m| m.id == *id)
    }

    /// The member after `id` in the ring of members (wrapping around), if the view has
    /// another member. Each member watches its successor.
    pub fn successor(&self, id: &MemberId) -> Option<&GroupMember> {
        let rank = self.rank(id)?;
        if self.members.len() < 2 {
            return None;
        }
        self.members.get((rank + 1) % self.members.len())
    }

    /// The ids of the members, in view order.
    pub fn ids(&self) -> impl Iterator<Item = MemberId> + '_ {
        self.members.iter().map(|m| m.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(n: u8) -> GroupMember {
        GroupMember {
            id: MemberId([n; 16]),
            addr: SocketAddr::from(([127, 0, 0, 1], 4000 + u16::from(n))),
        }
    }

    #[test]
    fn coordinator_rank_and_ring() {
        let view = View {
            id: ViewId {
                seq: 3,
                coordinator: MemberId([1; 16]),
            },
            members: vec![member(1), member(2), member(3)],
        };
        assert_eq!(view.coordinator(), Some(&member(1)));
        assert_eq!(view.rank(&MemberId([3; 16])), Some(2));
        assert_eq!(view.successor(&MemberId([3; 16])), Some(&member(1)));
        assert_eq!(view.successor(&MemberId([1; 16])), Some(&member(2)));
        assert!(!view.contains(&MemberId([9; 16])));
        let alone = View {
            id: view.id,
            members: vec![member(1)],
        };
        assert_eq!(alone.successor(&MemberId([1; 16])), None);
    }

    #[test]
    fn new_views_are_coordinated_by_their_first_member() {
        let view = View::new(4, [member(2), member(1)]).expect("a view");
        assert_eq!(view.id.seq, 4);
        assert_eq!(view.id.coordinator, MemberId([2; 16]));
        assert_eq!(view.coordinator(), Some(&member(2)));
        assert_eq!(View::new(1, []), None);
    }

    #[test]
    fn view_ids_order_by_seq_first() {
        let a = ViewId {
            seq: 2,
            coordinator: MemberId([9; 16]),
        };
        let b = ViewId {
            seq: 3,
            coordinator: MemberId([1; 16]),
        };
        assert!(a < b);
    }
}
