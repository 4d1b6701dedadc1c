//! Total order on a small in-memory network: FIFO links, members stepping in a seeded
//! random interleaving, the sequencer crashing with its stream delivered to some members
//! only, and the view-synchronous flush modelled as "every survivor catches up with the
//! longest prefix of the old stream any survivor delivered".

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::group::GroupMember;

fn id(n: u8) -> MemberId {
    MemberId([n; 16])
}

fn view(seq: u64, ids: &[MemberId]) -> View {
    let addr = SocketAddr::from(([127, 0, 0, 1], 7000));
    View::new(seq, ids.iter().map(|i| GroupMember::new(*i, addr))).expect("members")
}

/// Members, their FIFO unicast links, and each member's position in the streams of
/// multicasts (one stream per sender, as the reliable layer keeps them).
struct Net {
    members: Vec<TotalOrder>,
    live: Vec<bool>,
    /// (from, to) → records in flight.
    links: HashMap<(usize, usize), VecDeque<Bytes>>,
    /// sender → every record it multicast.
    streams: HashMap<usize, Vec<Bytes>>,
    /// (sender, receiver) → records of the stream delivered.
    cursors: HashMap<(usize, usize), usize>,
    delivered: Vec<Vec<(MemberId, Bytes)>>,
}

impl Net {
    fn new(n: u8) -> Self {
        let ids: Vec<MemberId> = (1..=n).map(id).collect();
        let v = view(1, &ids);
        let members = ids
            .iter()
            .map(|i| {
                let mut t = TotalOrder::new(*i, TotalConfig::default());
                t.install_view(&v);
                t
            })
            .collect();
        Self {
            members,
            live: vec![true; usize::from(n)],
            links: HashMap::new(),
            streams: HashMap::new(),
            cursors: HashMap::new(),
            delivered: vec![Vec::new(); usize::from(n)],
        }
    }

    fn index(&self, id: MemberId) -> usize {
        usize::from(id.0[0]) - 1
    }

    /// Moves what member `i` produced onto the network and into its delivery log.
    fn drain(&mut self, i: usize) {
        while let Some(send) = self.members[i].peek_send().cloned() {
            self.members[i].pop_send();
            match send {
                TotalSend::Unicast { to, record } => {
                    let j = self.index(to);
                    self.links.entry((i, j)).or_default().push_back(record);
                }
                TotalSend::Multicast { record } => {
                    self.streams.entry(i).or_default().push(record);
                }
            }
        }
        while let Some(d) = self.members[i].poll_delivery() {
            self.delivered[i].push((d.origin, d.payload));
        }
    }

    /// Delivers one thing to a random live member: a unicast or the next record of a stream.
    fn step(&mut self, rng: &mut SmallRng) {
        let n = self.members.len();
        let to = rng.random_range(0..n);
        let from = rng.random_range(0..n);
        if !self.live[to] || from == to {
            return;
        }
        if rng.random_bool(0.5) {
            if let Some(record) = self
                .links
                .get_mut(&(from, to))
                .and_then(VecDeque::pop_front)
            {
                let sender = self.members[from].local;
                self.members[to]
                    .handle_record(sender, record, true)
                    .unwrap();
            }
        } else {
            let at = self.cursors.entry((from, to)).or_default();
            if let Some(record) = self.streams.get(&from).and_then(|s| s.get(*at)).cloned() {
                *at += 1;
                let sender = self.members[from].local;
                self.members[to]
                    .handle_record(sender, record, false)
                    .unwrap();
            }
        }
        self.drain(to);
    }

    /// Crashes member `dead`, then the flush: every survivor delivers the longest prefix
    /// of every stream that some survivor delivered; then the next view.
    fn crash_and_flush(&mut self, dead: usize, seq: u64) {
        self.live[dead] = false;
        for m in &mut self.members {
            m.block();
        }
        self.links.retain(|(f, t), _| *f != dead && *t != dead);
        let n = self.members.len();
        for sender in 0..n {
            let cut = (0..n)
                .filter(|&r| self.live[r] && r != sender)
                .map(|r| self.cursors.get(&(sender, r)).copied().unwrap_or(0))
                .max()
                .unwrap_or(0);
            let survivors: Vec<usize> = (0..n).filter(|&r| self.live[r] && r != sender).collect();
            for r in survivors {
                while self.cursors.get(&(sender, r)).copied().unwrap_or(0) < cut {
                    let at = self.cursors.entry((sender, r)).or_default();
                    let record = self.streams[&sender][*at].clone();
                    *at += 1;
                    let from = self.members[sender].local;
                    self.members[r].handle_record(from, record, false).unwrap();
                    self.drain(r);
                }
            }
        }
        // Records of the old view that no survivor got are gone with it.
        for sender in 0..n {
            let len = self.streams.get(&sender).map_or(0, Vec::len);
            for r in 0..n {
                self.cursors.insert((sender, r), len);
            }
        }
        let ids: Vec<MemberId> = (0..n)
            .filter(|&i| self.live[i])
            .map(|i| self.members[i].local)
            .collect();
        let next = view(seq, &ids);
        for i in 0..n {
            if self.live[i] {
                self.members[i].install_view(&next);
                self.drain(i);
            }
        }
    }

    fn assert_one_order(&self) {
        let live: Vec<usize> = (0..self.members.len()).filter(|&i| self.live[i]).collect();
        let longest = live
            .iter()
            .map(|&i| &self.delivered[i])
            .max_by_key(|d| d.len())
            .unwrap();
        for &i in &live {
            let d = &self.delivered[i];
            assert_eq!(
                &longest[..d.len()],
                &d[..],
                "member {i} delivered another order"
            );
        }
    }
}

fn payload(member: usize, k: usize) -> Bytes {
    Bytes::from(format!("{member}:{k}"))
}

#[test]
fn every_member_delivers_one_order_of_everyone_s_messages() {
    for seed in 0..30 {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut net = Net::new(4);
        let per = 30;
        let mut sent = [0usize; 4];
        for _ in 0..5_000 {
            let i = rng.random_range(0..4);
            if sent[i] < per && rng.random_bool(0.2) {
                net.members[i].multicast(payload(i, sent[i])).unwrap();
                sent[i] += 1;
                net.drain(i);
            }
            net.step(&mut rng);
            net.assert_one_order();
        }
        for _ in 0..20_000 {
            net.step(&mut rng);
        }
        net.assert_one_order();
        for d in &net.delivered {
            assert_eq!(d.len(), 4 * per, "seed {seed}");
        }
        // Each member's own messages in the order it sent them.
        for i in 0..4 {
            let own: Vec<&Bytes> = net.delivered[0]
                .iter()
                .filter(|(o, _)| *o == id(i as u8 + 1))
                .map(|(_, p)| p)
                .collect();
            let expected: Vec<Bytes> = (0..per).map(|k| payload(i, k)).collect();
            assert_eq!(own, expected.iter().collect::<Vec<_>>(), "seed {seed}");
        }
    }
}

#[test]
fn the_sequencer_s_crash_loses_nothing_and_duplicates_nothing() {
    let mut resent = 0;
    for seed in 0..100 {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut net = Net::new(5);
        let per = 20;
        let mut sent = [0usize; 5];
        let crash_at = rng.random_range(50..1_500);
        for step in 0..3_000 {
            if step == crash_at {
                // The sequencer is member 0, the first of the view.
                net.crash_and_flush(0, 2);
            }
            let i = rng.random_range(0..5);
            if net.live[i] && sent[i] < per && rng.random_bool(0.2) {
                net.members[i].multicast(payload(i, sent[i])).unwrap();
                sent[i] += 1;
                net.drain(i);
            }
            net.step(&mut rng);
            net.assert_one_order();
        }
        for _ in 0..30_000 {
            net.step(&mut rng);
        }
        net.assert_one_order();
        for i in 1..5 {
            let d = &net.delivered[i];
            for (j, &count) in sent.iter().enumerate().skip(1) {
                // Every survivor's messages, each exactly once, in its order.
                let own: Vec<&Bytes> = d
                    .iter()
                    .filter(|(o, _)| *o == id(j as u8 + 1))
                    .map(|(_, p)| p)
                    .collect();
                let expected: Vec<Bytes> = (0..count).map(|k| payload(j, k)).collect();
                assert_eq!(
                    own,
                    expected.iter().collect::<Vec<_>>(),
                    "seed {seed}: member {i}, messages of {j}"
                );
            }
            assert_eq!(net.members[i].pending(), 0, "seed {seed}");
            resent += net.members[i].stats().resent;
        }
    }
    // The runs did exercise the hand-over: messages were waiting when the sequencer died.
    assert!(resent > 0);
}

#[test]
fn records_from_members_that_may_not_send_them_are_dropped() {
    let (a, b, c) = (id(1), id(2), id(3));
    let mut t = TotalOrder::new(b, TotalConfig::default());
    t.install_view(&view(1, &[a, b, c]));
    let ordered = TotalRecord::Ordered {
        origin: c,
        seq: 1,
        payload: Bytes::from_static(b"forged"),
    }
    .encode();
    // Only the sequencer (a) orders; c may not, and an order never comes by unicast.
    assert!(t.handle_record(c, ordered.clone(), false).is_err());
    assert!(t.handle_record(a, ordered.clone(), true).is_err());
    // b is not the sequencer: a forward to it is refused.
    let forward = TotalRecord::Forward {
        seq: 1,
        payload: Bytes::new(),
    }
    .encode();
    assert!(t.handle_record(c, forward, true).is_err());
    assert!(
        t.handle_record(a, Bytes::from_static(&[2, 1]), false)
            .is_err()
    );
    assert_eq!(t.poll_delivery(), None);
    assert_eq!(t.stats().dropped, 4);
    // The genuine order is delivered, once.
    t.handle_record(a, ordered.clone(), false).unwrap();
    t.handle_record(a, ordered, false).unwrap();
    assert_eq!(t.poll_delivery().unwrap().payload, "forged");
    assert_eq!(t.poll_delivery(), None);
    assert_eq!(t.stats().duplicates, 1);
}

#[test]
fn a_full_backlog_refuses_and_frees_up_as_orders_come_back() {
    let (a, b) = (id(1), id(2));
    let config = TotalConfig {
        max_pending: 2,
        ..TotalConfig::default()
    };
    let mut t = TotalOrder::new(b, config);
    assert_eq!(t.multicast(Bytes::new()), Err(TotalError::NotInView));
    t.install_view(&view(1, &[a, b]));
    t.multicast(Bytes::from_static(b"1")).unwrap();
    t.multicast(Bytes::from_static(b"2")).unwrap();
    assert_eq!(
        t.multicast(Bytes::from_static(b"3")),
        Err(TotalError::Backlog)
    );
    let back = TotalRecord::Ordered {
        origin: b,
        seq: 1,
        payload: Bytes::from_static(b"1"),
    }
    .encode();
    t.handle_record(a, back, false).unwrap();
    assert_eq!(t.pending(), 1);
    t.multicast(Bytes::from_static(b"3")).unwrap();
}
