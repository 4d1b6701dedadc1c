//! Cost of cluster-key sealing, against copying the same bytes in the same run.
//!
//! - `copy/<size>`: copying the payload into a fresh buffer (what any send path does).
//! - `seal/<size>`: `Sealer::seal` (AES-256-GCM under the sender key) into a fresh buffer.
//! - `open/<size>`: `open_datagram_in_place` of a sealed datagram, replay guard included
//!   (each message a new counter of one sender, as a stream of datagrams arrives).
//!
//! Sizes: 1 KiB and 16 KiB messages, and a 60 000-byte reliable datagram. Run:
//! `cargo bench -p cohort-proto --bench security`. Throughput is in bytes.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use bytes::BytesMut;
use cohort_proto::security::{
    GuardConfig, Key, Keyring, Origin, Purpose, ReplayGuard, Sealer, SenderKeys,
    open_datagram_in_place,
};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const NOW: u64 = 1_780_000_000_000;

fn bench(c: &mut Criterion) {
    let ring = Keyring::new(Key::from_bytes([7; 32]));
    for size in [1024usize, 16 * 1024, 60_000] {
        let payload = vec![0xA5u8; size];
        let mut g = c.benchmark_group(format!("{size}"));
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function("copy", |b| {
            b.iter(|| {
                let mut out = BytesMut::with_capacity(size + 64);
                out.extend_from_slice(black_box(&payload));
                black_box(out)
            })
        });
        let mut sealer = Sealer::new(Origin([1; 12]), 0);
        g.bench_function("seal", |b| {
            b.iter(|| {
                let mut out = BytesMut::with_capacity(size + 64);
                sealer
                    .seal(
                        &ring,
                        Purpose::ReliableDatagram,
                        NOW,
                        black_box(&payload),
                        &mut out,
                    )
                    .unwrap();
                black_box(out)
            })
        });
        let mut sealer = Sealer::new(Origin([2; 12]), 0);
        let mut guard = ReplayGuard::new(GuardConfig::default(), Origin([3; 12]));
        let mut keys = SenderKeys::default();
        g.bench_function("open", |b| {
            b.iter_batched(
                || {
                    let mut out = BytesMut::with_capacity(size + 64);
                    sealer
                        .seal(&ring, Purpose::ReliableDatagram, NOW, &payload, &mut out)
                        .unwrap();
                    out
                },
                |mut sealed| {
                    open_datagram_in_place(
                        &ring,
                        &mut keys,
                        &mut guard,
                        Purpose::ReliableDatagram,
                        NOW,
                        &mut sealed,
                    )
                    .unwrap();
                    black_box(sealed)
                },
                BatchSize::SmallInput,
            )
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
