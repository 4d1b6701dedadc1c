//! The flush by hand: seed 003's example and a coordinator crash during a flush.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::group::{GroupMember, View};
use crate::membership::MemberId;
use crate::reliable::{
    Destination, Reliable, ReliableConfig, ReliableEvent, SendError, SendOpts, Transmit,
};

/// Decides which datagrams are lost: (from, to, datagram).
type DropRule = Box<dyn FnMut(usize, usize, &Transmit) -> bool>;

/// Members in memory; datagrams arrive after a millisecond unless `drop` says otherwise.
struct Net {
    now: Instant,
    nodes: Vec<Reliable>,
    crashed: HashSet<usize>,
    /// (receiver, sender, payload, view seq) of every delivery.
    delivered: Vec<(usize, MemberId, Bytes, u64)>,
    events: Vec<(usize, ReliableEvent)>,
    /// Datagrams from `.0` to `.1` are lost while this returns true.
    drop: DropRule,
    in_flight: Vec<(Instant, usize, usize, Transmit)>,
}

fn id(i: usize) -> MemberId {
    MemberId([i as u8 + 1; 16])
}

fn view(seq: u64, members: &[usize]) -> View {
    let addr = SocketAddr::from(([127, 0, 0, 1], 7000));
    View::new(seq, members.iter().map(|&i| GroupMember::new(id(i), addr))).expect("members")
}

impl Net {
    fn new(n: usize, synchrony: bool) -> Self {
        let now = Instant::now();
        let config = ReliableConfig {
            view_synchrony: synchrony,
            ..ReliableConfig::lan()
        };
        Self {
            now,
            nodes: (0..n)
                .map(|i| Reliable::new(config.clone(), id(i), now))
                .collect(),
            crashed: HashSet::new(),
            delivered: Vec::new(),
            events: Vec::new(),
            drop: Box::new(|_, _, _| false),
            in_flight: Vec::new(),
        }
    }

    fn install(&mut self, v: &View) {
        for i in 0..self.nodes.len() {
            if v.contains(&id(i)) && !self.crashed.contains(&i) {
                self.nodes[i].install_view(v, self.now);
            }
        }
    }

    fn collect(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        while let Some(t) = node.poll_transmit() {
            let targets: Vec<usize> = match t.to {
                Destination::Group => node
                    .members()
                    .iter()
                    .map(|m| usize::from(m.0[0]) - 1)
                    .collect(),
                Destination::Member(m) => vec![usize::from(m.0[0]) - 1],
            };
            for j in targets {
                if !(self.drop)(i, j, &t) {
                    self.in_flight
                        .push((self.now + Duration::from_millis(1), i, j, t.clone()));
                }
            }
        }
        while let Some(d) = node.poll_delivery() {
            self.delivered.push((i, d.from, d.payload, d.view_seq));
        }
        while let Some(e) = node.poll_event() {
            self.events.push((i, e));
        }
    }

    /// Runs for `ms` milliseconds of virtual time.
    fn run(&mut self, ms: u64) {
        for i in 0..self.nodes.len() {
            self.collect(i);
        }
        for _ in 0..ms {
            self.now += Duration::from_millis(1);
            let now = self.now;
            let (due, rest) = std::mem::take(&mut self.in_flight)
                .into_iter()
                .partition(|(at, ..)| *at <= now);
            self.in_flight = rest;
            for (_, from, to, t) in due {
                if !self.crashed.contains(&to) {
                    let _ = self.nodes[to].handle_datagram(id(from), t.datagram, now);
                    self.collect(to);
                }
            }
            for i in 0..self.nodes.len() {
                if !self.crashed.contains(&i)
                    && self.nodes[i].poll_timeout().is_some_and(|t| t <= now)
                {
                    self.nodes[i].handle_timeout(now);
                    self.collect(i);
                }
            }
        }
    }

    fn multicast(&mut self, i: usize, payload: &'static [u8]) -> Result<(), SendError> {
        let r = self.nodes[i].multicast(Bytes::from_static(payload), SendOpts::default(), self.now);
        self.nodes[i].flush(self.now);
        self.collect(i);
        r
    }

    /// What member `i` delivered from member `from`, with the view seq of each.
    fn got(&self, i: usize, from: usize) -> Vec<(&[u8], u64)> {
        self.delivered
            .iter()
            .filter(|(r, f, ..)| *r == i && *f == id(from))
            .map(|(_, _, p, v)| (&p[..], *v))
            .collect()
    }

    fn unblocked(&self, i: usize) -> Vec<u64> {
        self.events
            .iter()
            .filter_map(|(r, e)| match e {
                ReliableEvent::Unblock { view } if *r == i => Some(view.seq),
                _ => None,
            })
            .collect()
    }
}

/// A datagram of member 2 carrying one of `payloads`.
fn carries(t: &Transmit, payloads: &[&[u8]]) -> bool {
    payloads
        .iter()
        .any(|p| t.datagram.windows(p.len()).any(|w| w == *p))
}

const FIVE: [&[u8]; 5] = [b"c-msg-1", b"c-msg-2", b"c-msg-3", b"c-msg-4", b"c-msg-5"];

/// Seed 003: in V1 = {A, B, C}, C sends 5 messages; A got all 5, B only 3; C crashes.
/// Before V2 = {A, B} is installed, B gets the other 2 from A. Without view synchrony B
/// stays at 3 (the defect measured with real processes).
fn seed_003(synchrony: bool) -> Net {
    let (a, b, c) = (0, 1, 2);
    let mut net = Net::new(3, synchrony);
    net.install(&view(1, &[a, b, c]));
    net.run(100);
    for i in [a, b, c] {
        assert_eq!(net.nodes[i].view().map(|v| v.id.seq), Some(1), "member {i}");
    }
    // B loses C's last two messages (and everything C sends after them).
    net.drop = Box::new(move |from, to, t| from == c && to == b && carries(t, &FIVE[3..]));
    for p in FIVE {
        net.multicast(c, p).unwrap();
    }
    net.run(2);
    net.crashed.insert(c);
    assert_eq!(net.got(a, c).len(), 5);
    assert_eq!(net.got(b, c).len(), 3);
    net.install(&view(2, &[a, b]));
    net.run(500);
    net
}

#[test]
fn seed_003_survivors_deliver_the_crashed_members_messages_before_the_new_view() {
    let mut net = seed_003(true);
    let (a, b, c) = (0, 1, 2);
    let expected: Vec<(&[u8], u64)> = FIVE.iter().map(|p| (*p, 1)).collect();
    assert_eq!(net.got(a, c), expected);
    assert_eq!(
        net.got(b, c),
        expected,
        "B gets C's last two from A, in view 1"
    );
    for i in [a, b] {
        assert_eq!(net.nodes[i].view().map(|v| v.id.seq), Some(2));
        assert_eq!(net.unblocked(i), [1, 2], "member {i}");
        assert!(
            net.events
                .iter()
                .any(|(r, e)| *r == i && *e == ReliableEvent::Block)
        );
    }
    // Sends go out again, in view 2.
    net.multicast(a, b"a-after").unwrap();
    net.run(20);
    assert_eq!(net.got(b, a), [(&b"a-after"[..], 2)]);
    assert_eq!(net.nodes[b].stats().flushes, 1);
}

#[test]
fn without_view_synchrony_the_survivors_disagree() {
    let net = seed_003(false);
    assert_eq!(net.got(0, 2).len(), 5);
    assert_eq!(net.got(1, 2).len(), 3, "B never gets C's last two");
}

#[test]
fn sends_during_a_flush_are_refused_and_a_coordinator_crash_restarts_it() {
    let (a, b, c, d) = (0, 1, 2, 3);
    let mut net = Net::new(4, true);
    net.install(&view(1, &[a, b, c, d]));
    net.run(100);
    // C's messages: A gets 5, B 3, D 4; then C crashes.
    net.drop = Box::new(move |from, to, t| {
        from == c && ((to == b && carries(t, &FIVE[3..])) || (to == d && carries(t, &FIVE[4..])))
    });
    for p in FIVE {
        net.multicast(c, p).unwrap();
    }
    net.run(2);
    net.crashed.insert(c);
    // A, the flush coordinator of V2, crashes before anyone hears from it in the flush.
    net.drop = Box::new(move |from, _, _| from == a);
    net.install(&view(2, &[a, b, d]));
    assert_eq!(net.multicast(b, b"blocked"), Err(SendError::Blocked));
    net.run(5);
    net.crashed.insert(a);
    assert_eq!(
        net.nodes[b].view().map(|v| v.id.seq),
        Some(1),
        "still flushing"
    );
    net.install(&view(3, &[b, d]));
    net.run(500);
    // B and D agree on C's messages: D's 4, which B fetched from D.
    assert_eq!(net.got(b, c), net.got(d, c));
    assert_eq!(net.got(b, c).len(), 4);
    for i in [b, d] {
        assert_eq!(net.nodes[i].view().map(|v| v.id.seq), Some(3));
        assert_eq!(net.unblocked(i), [1, 3], "member {i}");
        assert!(net.nodes[i].stats().flush_restarts >= 1);
    }
    assert!(net.multicast(b, b"b-after").is_ok());
}

#[test]
fn forged_flush_records_do_not_panic_and_the_flush_still_completes() {
    use bytes::BytesMut;

    use crate::wire::cohort::reliable::{DatagramHeader, encode_flush_cut, encode_flush_view};

    let (a, b, c) = (0, 1, 2);
    let mut net = Net::new(3, true);
    net.install(&view(1, &[a, b, c]));
    net.run(100);
    net.multicast(c, FIVE[0]).unwrap();
    net.run(5);
    net.crashed.insert(c);
    let target = view(2, &[a, b]);
    net.install(&target);
    // Before the honest cut: a cut at the limits (an unknown origin, the largest seqnos,
    // a holder that takes no part) and an install B has not earned, as if from A.
    let mut d = BytesMut::new();
    DatagramHeader {
        sender: id(a),
        dest: Some(id(b)),
        view_seq: 1,
        view_start: 1,
    }
    .encode(&mut d);
    let extremes = [
        (id(c), 0, u64::MAX, id(a)),
        (id(a), u64::MAX, u64::MAX, id(c)),
        (MemberId([9; 16]), 1, 5, id(b)),
    ];
    encode_flush_cut(&mut d, target.id, 3, &extremes);
    encode_flush_view(&mut d, true, target.id);
    encode_flush_view(&mut d, false, target.id);
    let _ = net.nodes[b].handle_datagram(id(a), d.freeze(), net.now);
    net.collect(b);
    net.run(500);
    for i in [a, b] {
        assert_eq!(net.nodes[i].view().map(|v| v.id), Some(target.id));
    }
    assert_eq!(net.got(b, c), net.got(a, c));
    assert_eq!(net.got(b, c).len(), 1);
}
