use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

fn id(n: u8) -> MemberId {
    MemberId([n; 16])
}

fn header(dest: Option<MemberId>) -> DatagramHeader {
    DatagramHeader {
        sender: id(1),
        dest,
        view_seq: 7,
        view_start: 100,
    }
}

fn datagram(h: &DatagramHeader, records: &[Record]) -> Bytes {
    let mut out = BytesMut::new();
    h.encode(&mut out);
    assert_eq!(out.len(), HEADER_LEN);
    for r in records {
        r.encode(&mut out);
    }
    out.freeze()
}

fn decode_all(d: &Bytes) -> Result<(DatagramHeader, Vec<Record>), DecodeError> {
    let (h, records) = decode(d)?;
    Ok((h, records.collect::<Result<Vec<_>, _>>()?))
}

#[test]
fn test_vector_data_record() {
    let mut out = BytesMut::new();
    header(None).encode(&mut out);
    encode_data(&mut out, false, 5, true, None, b"hi");
    let hex = hex::encode(&out);
    assert_eq!(
        hex,
        concat!(
            "c04e0102",
            "01010101010101010101010101010101",
            "00000000000000000000000000000000",
            "0000000000000007",
            "0000000000000064",
            "01",
            "01",
            "0000000000000005",
            "00000002",
            "6869"
        )
    );
    let (h, records) = decode_all(&out.freeze()).unwrap();
    assert_eq!(h, header(None));
    assert_eq!(
        records,
        vec![Record::Data(DataRecord {
            seqno: 5,
            oob: true,
            fragment: None,
            payload: Bytes::from_static(b"hi"),
        })]
    );
    assert_eq!(data_record_len(2, false), 1 + 1 + 8 + 4 + 2);
}

#[test]
fn every_record_kind_round_trips() {
    let nak_ranges = [(1u64, 4u64), (9, 9)];
    let mut nak = BytesMut::new();
    encode_nak(&mut nak, StreamRef::Multicast(id(3)), &nak_ranges);
    assert_eq!(nak.len(), nak_record_len(2));
    let mut stable = BytesMut::new();
    encode_stable(
        &mut stable,
        true,
        42,
        &[(id(2), 10), (id(3), 11)],
        &[(id(4), 12)],
    );
    assert_eq!(stable.len(), stable_record_len(2, 1));
    let mut tail = BytesMut::new();
    tail.extend_from_slice(&nak);
    tail.extend_from_slice(&stable);
    encode_ack(&mut tail, true, 77);
    encode_unicast_highest(&mut tail, 78);
    encode_retransmit(
        &mut tail,
        id(9),
        3,
        false,
        Some(Fragment { index: 1, count: 2 }),
        b"frag",
    );
    encode_data(&mut tail, true, 1, false, None, b"");

    let mut out = BytesMut::new();
    header(Some(id(2))).encode(&mut out);
    out.extend_from_slice(&tail);
    let d = out.freeze();
    let (h, records) = decode_all(&d).unwrap();
    assert_eq!(h.dest, Some(id(2)));
    assert_eq!(records.len(), 6);
    let Record::Nak(n) = &records[0] else {
        panic!("{:?}", records[0])
    };
    assert_eq!(n.stream, StreamRef::Multicast(id(3)));
    assert_eq!(n.ranges().collect::<Vec<_>>(), nak_ranges);
    let Record::Stable(s) = &records[1] else {
        panic!()
    };
    assert_eq!(s.highest_sent, 42);
    assert!(s.acks_wanted);
    assert_eq!(s.entries().collect::<Vec<_>>(), [(id(2), 10), (id(3), 11)]);
    assert_eq!(s.joiners().collect::<Vec<_>>(), [(id(4), 12)]);
    assert_eq!(
        records[2],
        Record::Ack {
            unicast: true,
            seqno: 77
        }
    );
    assert_eq!(records[3], Record::UnicastHighest { seqno: 78 });
    assert!(matches!(&records[4], Record::Retransmit { origin, data }
        if *origin == id(9) && data.fragment == Some(Fragment { index: 1, count: 2 })));
    assert!(matches!(&records[5], Record::Unicast(d) if d.payload.is_empty()));
    // Re-encoding gives the same bytes.
    assert_eq!(datagram(&h, &records), d);
    assert_eq!(peek_sender(&d), Some(id(1)));
}

#[test]
fn bad_input_is_refused() {
    let good = {
        let mut out = BytesMut::new();
        header(None).encode(&mut out);
        encode_data(&mut out, false, 5, false, None, b"hello");
        out.freeze()
    };
    // Every truncation of the record fails cleanly.
    for len in HEADER_LEN + 1..good.len() {
        let cut = good.slice(..len);
        assert!(decode_all(&cut).is_err(), "accepted {len} bytes");
    }
    // The header alone is a valid (empty) datagram; less is not.
    assert!(decode_all(&good.slice(..HEADER_LEN)).unwrap().1.is_empty());
    assert!(decode(&good.slice(..HEADER_LEN - 1)).is_err());
    let mut wrong = good.to_vec();
    wrong[3] = Protocol::Group as u8;
    assert!(decode(&Bytes::from(wrong)).is_err());
    let mut flags = good.to_vec();
    flags[HEADER_LEN + 1] = 0x80;
    assert!(decode_all(&Bytes::from(flags)).is_err());
    let mut zero_seqno = good.to_vec();
    zero_seqno[HEADER_LEN + 2..HEADER_LEN + 10].fill(0);
    assert!(decode_all(&Bytes::from(zero_seqno)).is_err());
    // A huge declared length fails before anything is allocated.
    let mut huge = good.to_vec();
    huge[HEADER_LEN + 10..HEADER_LEN + 14].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        decode_all(&Bytes::from(huge)),
        Err(DecodeError::Truncated { .. })
    ));
    // NAK with first > last.
    let mut nak = good.slice(..HEADER_LEN).to_vec();
    let mut rec = BytesMut::new();
    encode_nak(&mut rec, StreamRef::Unicast, &[(5, 4)]);
    nak.extend_from_slice(&rec);
    assert!(decode_all(&Bytes::from(nak)).is_err());
    // Unknown record kinds are refused, and nothing after them is read.
    let mut unknown = good.slice(..HEADER_LEN).to_vec();
    unknown.push(200);
    unknown.extend_from_slice(&good[HEADER_LEN..]);
    let (_, mut records) = decode(&Bytes::from(unknown)).unwrap();
    assert!(records.next().unwrap().is_err());
    assert!(records.next().is_none());
    // Fragments: index must be below count, count at most MAX_FRAGMENTS.
    for (index, count) in [(2u32, 2u32), (0, 0), (0, MAX_FRAGMENTS + 1)] {
        let mut out = good.slice(..HEADER_LEN).to_vec();
        out.extend_from_slice(&[KIND_DATA, FLAG_FRAGMENT]);
        out.extend_from_slice(&10u64.to_be_bytes());
        out.extend_from_slice(&index.to_be_bytes());
        out.extend_from_slice(&count.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        assert!(decode_all(&Bytes::from(out)).is_err(), "{index}/{count}");
    }
}

fn arb_id() -> impl Strategy<Value = MemberId> {
    any::<[u8; 16]>().prop_map(MemberId)
}

fn arb_data() -> impl Strategy<Value = DataRecord> {
    (
        1u64..u64::MAX,
        any::<bool>(),
        proptest::option::of((0u32..100, 1u32..100)),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(seqno, oob, frag, payload)| DataRecord {
            seqno: seqno.max(200),
            oob,
            fragment: frag.map(|(i, c)| Fragment {
                index: i % c,
                count: c,
            }),
            payload: Bytes::from(payload),
        })
}

fn arb_record() -> impl Strategy<Value = Record> {
    prop_oneof![
        arb_data().prop_map(Record::Data),
        arb_data().prop_map(Record::Unicast),
        (arb_id(), arb_data()).prop_map(|(origin, data)| Record::Retransmit { origin, data }),
        (any::<bool>(), any::<u64>()).prop_map(|(unicast, seqno)| Record::Ack { unicast, seqno }),
        any::<u64>().prop_map(|seqno| Record::UnicastHighest { seqno }),
        (
            proptest::option::of(arb_id()),
            proptest::collection::vec((any::<u64>(), 0u64..1000), 0..8)
        )
            .prop_map(|(origin, ranges)| {
                let ranges: Vec<_> = ranges
                    .into_iter()
                    .map(|(a, d)| (a, a.saturating_add(d)))
                    .collect();
                let stream = origin.map_or(StreamRef::Unicast, StreamRef::Multicast);
                let mut out = BytesMut::new();
                encode_nak(&mut out, stream, &ranges);
                decode_one(out.freeze())
            }),
        (
            any::<(bool, u64)>(),
            proptest::collection::vec((arb_id(), any::<u64>()), 0..5),
            proptest::collection::vec((arb_id(), any::<u64>()), 0..3)
        )
            .prop_map(|((w, h), e, j)| {
                let mut out = BytesMut::new();
                encode_stable(&mut out, w, h, &e, &j);
                decode_one(out.freeze())
            }),
    ]
}

fn arb_view_id() -> impl Strategy<Value = ViewId> {
    (any::<u64>(), arb_id()).prop_map(|(seq, coordinator)| ViewId { seq, coordinator })
}

fn arb_flush_record() -> impl Strategy<Value = Record> {
    prop_oneof![
        (
            any::<u64>(),
            arb_view_id(),
            0u32..3,
            proptest::collection::vec((arb_id(), any::<u64>(), any::<u64>()), 0..5)
        )
            .prop_map(|(source, target, extra, e)| {
                let mut out = BytesMut::new();
                encode_flush_digest(&mut out, source, target, e.len() as u32 + extra, &e);
                decode_one(out.freeze())
            }),
        (
            arb_view_id(),
            0u32..3,
            proptest::collection::vec((arb_id(), any::<u64>(), any::<u64>(), arb_id()), 0..5)
        )
            .prop_map(|(target, extra, e)| {
                let mut out = BytesMut::new();
                encode_flush_cut(&mut out, target, e.len() as u32 + extra, &e);
                decode_one(out.freeze())
            }),
        arb_view_id().prop_map(|target| Record::FlushOk { target }),
        arb_view_id().prop_map(|target| Record::FlushInstall { target }),
    ]
}

/// One sample of each flush record, as the fuzz seeds hold them.
fn flush_samples() -> Vec<(&'static str, Bytes)> {
    let target = ViewId {
        seq: 8,
        coordinator: id(2),
    };
    let mut digest = BytesMut::new();
    header(Some(id(2))).encode(&mut digest);
    encode_flush_digest(
        &mut digest,
        7,
        target,
        2,
        &[(id(1), 100, 140), (id(3), 90, 95)],
    );
    let mut cut = BytesMut::new();
    header(None).encode(&mut cut);
    encode_flush_cut(
        &mut cut,
        target,
        2,
        &[(id(1), 100, 140, id(1)), (id(3), 90, 97, id(2))],
    );
    let mut ok = BytesMut::new();
    header(Some(id(2))).encode(&mut ok);
    encode_flush_view(&mut ok, false, target);
    let mut install = BytesMut::new();
    header(None).encode(&mut install);
    encode_flush_view(&mut install, true, target);
    vec![
        ("flush_digest", digest.freeze()),
        ("flush_cut", cut.freeze()),
        ("flush_ok", ok.freeze()),
        ("flush_install", install.freeze()),
    ]
}

#[test]
fn flush_records_round_trip_and_refuse_bad_counts() {
    for (name, d) in flush_samples() {
        let (h, records) = decode_all(&d).unwrap();
        assert_eq!(records.len(), 1, "{name}");
        assert_eq!(datagram(&h, &records), d, "{name}");
        // Every truncation fails cleanly.
        for len in HEADER_LEN + 1..d.len() {
            assert!(decode_all(&d.slice(..len)).is_err(), "{name}: {len} bytes");
        }
    }
    let (_, records) = decode_all(&flush_samples()[1].1).unwrap();
    let Record::FlushCut(cut) = &records[0] else {
        panic!("{records:?}")
    };
    assert_eq!(cut.total, 2);
    assert_eq!(
        cut.entries().collect::<Vec<_>>(),
        [(id(1), 100, 140, id(1)), (id(3), 90, 97, id(2))]
    );
    // A part with more entries than the whole digest has is refused.
    let mut bad = BytesMut::new();
    header(None).encode(&mut bad);
    encode_flush_digest(&mut bad, 1, cut.target, 1, &[]);
    let len = bad.len();
    bad[len - 2..].copy_from_slice(&2u16.to_be_bytes());
    bad.extend_from_slice(&[0; 64]);
    assert!(decode_all(&bad.freeze()).is_err());
}

/// Writes the fuzz seeds of the flush records afresh after a format change:
/// `COHORT_WRITE_SEEDS=1 cargo test -p cohort-proto write_flush_fuzz_seeds`.
#[test]
fn write_flush_fuzz_seeds() {
    if std::env::var_os("COHORT_WRITE_SEEDS").is_none() {
        return;
    }
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/cohort_reliable");
    for (name, d) in flush_samples() {
        std::fs::write(dir.join(format!("{name}.bin")), &d).unwrap();
    }
}

#[test]
fn the_flush_fuzz_seeds_are_current() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/cohort_reliable");
    for (name, d) in flush_samples() {
        let seed = std::fs::read(dir.join(format!("{name}.bin"))).expect("fuzz seed");
        assert_eq!(seed, &d[..], "{name}: run write_flush_fuzz_seeds");
    }
}

fn decode_one(record: Bytes) -> Record {
    let mut out = BytesMut::new();
    header(None).encode(&mut out);
    out.extend_from_slice(&record);
    let (_, mut records) = decode(&out.freeze()).unwrap();
    records.next().unwrap().unwrap()
}

proptest! {
    #[test]
    fn records_round_trip(records in proptest::collection::vec(prop_oneof![arb_record(), arb_flush_record()], 0..6),
                          dest in proptest::option::of(arb_id())) {
        let h = DatagramHeader { dest, ..header(None) };
        let d = datagram(&h, &records);
        let (h2, decoded) = decode_all(&d).unwrap();
        prop_assert_eq!(h2, h);
        prop_assert_eq!(&decoded, &records);
        prop_assert_eq!(datagram(&h2, &decoded), d);
    }

    #[test]
    fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut out = BytesMut::new();
        header(None).encode(&mut out);
        out.extend_from_slice(&tail);
        let d = out.freeze();
        if let Ok((h, records)) = decode(&d) {
            // What decodes re-encodes to the same prefix.
            let ok: Vec<Record> = records.take_while(|r| r.is_ok()).map(|r| r.unwrap()).collect();
            let again = datagram(&h, &ok);
            prop_assert_eq!(&again[..], &d[..again.len()]);
        }
    }
}
