//! Per-message cost of the reliable multicast core, against a baseline in the same run.
//!
//! - `baseline/copy_into_datagram`: copying the same 1 KiB payloads into 60 000-byte
//!   datagrams with a length prefix, nothing else: the least any sender must do.
//! - `sender/multicast`: `Reliable::multicast` + `flush` + `poll_transmit` on a member of a
//!   two-member view; every 1 000 messages an acknowledgement from the peer returns the
//!   credit (its handling is included).
//! - `sender/multicast_recycled`: the same, giving every sent datagram back with
//!   `Reliable::recycle` as the runtime does, so datagram buffers are reused.
//! - `receiver/handle_datagram`: a member taking in bundled datagrams of 1 KiB multicasts
//!   in order and draining `poll_delivery` (the datagrams are made outside the timing).
//! - `pair/end_to_end`: both members, sender and receiver, with the receiver's
//!   acknowledgements fed back; the cost of one message on both sides together.
//!
//! Run: `cargo bench -p cohort-proto --bench reliable`. Throughput is in messages.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use cohort_proto::MemberId;
use cohort_proto::group::{GroupMember, View, ViewId};
use cohort_proto::reliable::{Reliable, ReliableConfig, SendOpts};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const SIZE: usize = 1024;

fn view(ids: &[MemberId]) -> View {
    View {
        id: ViewId {
            seq: 1,
            coordinator: ids[0],
        },
        members: ids
            .iter()
            .map(|id| GroupMember {
                id: *id,
                addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            })
            .collect(),
    }
}

struct Pair {
    a: Reliable,
    b: Reliable,
    a_id: MemberId,
    b_id: MemberId,
    now: Instant,
    payload: Bytes,
}

impl Pair {
    fn new() -> Self {
        let now = Instant::now();
        let (a_id, b_id) = (MemberId([1; 16]), MemberId([2; 16]));
        let config = ReliableConfig::default().deliver_own(false);
        let mut a = Reliable::new(config.clone(), a_id, now);
        let mut b = Reliable::new(config, b_id, now);
        let v = view(&[a_id, b_id]);
        a.install_view(&v, now);
        b.install_view(&v, now);
        let mut pair = Self {
            a,
            b,
            a_id,
            b_id,
            now,
            payload: Bytes::from(vec![7u8; SIZE]),
        };
        // Exchange the first gossip so each knows where the other starts.
        pair.now += Duration::from_secs(1);
        for _ in 0..3 {
            pair.a.handle_timeout(pair.now);
            pair.b.handle_timeout(pair.now);
            pair.a_to_b();
            pair.b_to_a();
        }
        pair
    }

    /// Moves a's datagrams to b (b's deliveries are drained); returns messages delivered.
    fn a_to_b(&mut self) -> u64 {
        let mut n = 0;
        while let Some(t) = self.a.poll_transmit() {
            let _ = self.b.handle_datagram(self.a_id, t.datagram, self.now);
            while let Some(d) = self.b.poll_delivery() {
                black_box(&d.payload);
                n += 1;
            }
        }
        n
    }

    fn b_to_a(&mut self) {
        self.b.flush(self.now);
        while let Some(t) = self.b.poll_transmit() {
            let _ = self.a.handle_datagram(self.b_id, t.datagram, self.now);
        }
    }

    fn send(&mut self) {
        self.a
            .multicast(self.payload.clone(), SendOpts::default(), self.now)
            .expect("credit");
    }
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("reliable_1KiB");
    g.throughput(Throughput::Elements(1));

    g.bench_function("baseline/copy_into_datagram", |bench| {
        let payload = Bytes::from(vec![7u8; SIZE]);
        let mut buf = BytesMut::with_capacity(60_000);
        let mut out = Vec::with_capacity(64);
        bench.iter(|| {
            if buf.len() + SIZE + 4 > 60_000 {
                out.push(buf.split().freeze());
                buf.reserve(60_000);
                if out.len() == 64 {
                    out.clear();
                }
            }
            buf.put_u32(payload.len() as u32);
            buf.put_slice(black_box(&payload));
        });
    });

    g.bench_function("sender/multicast", |bench| {
        let mut pair = Pair::new();
        let mut since_ack = 0u32;
        bench.iter(|| {
            pair.send();
            since_ack += 1;
            if since_ack == 1000 {
                since_ack = 0;
                pair.a.flush(pair.now);
                // Pretend b consumed everything: its ack returns the credit.
                while let Some(t) = pair.a.poll_transmit() {
                    black_box(&t);
                }
                let highest = pair.a.stats().sent;
                let ack = ack_datagram(pair.b_id, pair.a_id, highest);
                let _ = pair.a.handle_datagram(pair.b_id, ack, pair.now);
            }
        });
    });

    g.bench_function("sender/multicast_recycled", |bench| {
        let mut pair = Pair::new();
        let mut since_ack = 0u32;
        bench.iter(|| {
            pair.send();
            since_ack += 1;
            if since_ack == 1000 {
                since_ack = 0;
                pair.a.flush(pair.now);
                // As the runtime does: sent datagrams go back for their buffers.
                while let Some(t) = pair.a.poll_transmit() {
                    pair.a.recycle(black_box(t.datagram));
                }
                let highest = pair.a.stats().sent;
                let ack = ack_datagram(pair.b_id, pair.a_id, highest);
                let _ = pair.a.handle_datagram(pair.b_id, ack, pair.now);
            }
        });
    });

    g.bench_function("receiver/handle_datagram", |bench| {
        bench.iter_custom(|iters| {
            let mut pair = Pair::new();
            let mut elapsed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let batch = left.min(2000);
                left -= batch;
                for _ in 0..batch {
                    pair.send();
                }
                pair.a.flush(pair.now);
                let datagrams: Vec<Bytes> =
                    std::iter::from_fn(|| pair.a.poll_transmit().map(|t| t.datagram)).collect();
                let start = Instant::now();
                for d in datagrams {
                    let _ = pair.b.handle_datagram(pair.a_id, d, pair.now);
                    while let Some(d) = pair.b.poll_delivery() {
                        black_box(&d.payload);
                    }
                }
                elapsed += start.elapsed();
                pair.b_to_a();
            }
            elapsed
        });
    });

    g.bench_function("pair/end_to_end", |bench| {
        let mut pair = Pair::new();
        let mut since = 0u32;
        bench.iter(|| {
            pair.send();
            since += 1;
            if since == 50 {
                since = 0;
                pair.a.flush(pair.now);
                pair.a_to_b();
                pair.b_to_a();
            }
        });
    });
    g.finish();
}

/// A datagram from `from` acknowledging `to`'s multicasts up to `seqno`.
fn ack_datagram(from: MemberId, to: MemberId, seqno: u64) -> Bytes {
    use cohort_proto::wire::cohort::reliable::{DatagramHeader, encode_ack};
    let mut buf = BytesMut::new();
    DatagramHeader {
        sender: from,
        dest: Some(to),
        view_seq: 1,
        view_start: 1,
    }
    .encode(&mut buf);
    encode_ack(&mut buf, false, seqno);
    buf.freeze()
}

criterion_group!(reliable, benches);
criterion_main!(reliable);
