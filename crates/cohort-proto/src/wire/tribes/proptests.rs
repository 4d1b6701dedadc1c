//! Property tests for the Tribes codecs: encode/decode round trips, stream reassembly from
//! arbitrary chunks, and "never panics" on arbitrary bytes. The `fuzz/` crate at the repo
//! root drives the same decoders with libFuzzer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;

use super::frame::{FRAME_OVERHEAD, FrameDecoder, encode_frame};
use super::{ChannelData, ChannelDataLimits, MemberLimits, MemberRecord, SendOptions};

/// Upper bound on the body a [`FrameDecoder`] accepts in these tests.
const MAX_BODY: usize = 64 * 1024;

fn small_bytes(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
}

fn host() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o))),
        any::<[u8; 16]>().prop_map(|o| IpAddr::V6(Ipv6Addr::from(o))),
    ]
}

fn member() -> impl Strategy<Value = MemberRecord> {
    (
        any::<i64>(),
        any::<(i32, i32, i32)>(),
        host(),
        small_bytes(300),
        small_bytes(300),
        any::<[u8; 16]>(),
        small_bytes(300),
    )
        .prop_map(
            |(
                alive_ms,
                (tcp_port, secure_port, udp_port),
                host,
                command,
                domain,
                unique_id,
                payload,
            )| {
                MemberRecord {
                    alive_ms,
                    tcp_port,
                    secure_port,
                    udp_port,
                    host,
                    command,
                    domain,
                    unique_id,
                    payload,
                }
            },
        )
}

fn channel_data() -> impl Strategy<Value = ChannelData> {
    (
        any::<u32>(),
        any::<i64>(),
        small_bytes(40),
        member(),
        small_bytes(2000),
    )
        .prop_map(
            |(options, timestamp_ms, unique_id, sender, message)| ChannelData {
                options: SendOptions(options),
                timestamp_ms,
                unique_id,
                sender,
                message,
            },
        )
}

/// Feeds `stream` to a [`FrameDecoder`] in pieces of the given sizes (cycled), draining
/// every complete frame after each piece. Panics on a decode error.
fn decode_in_chunks(stream: &[u8], chunk_sizes: &[usize]) -> (Vec<Bytes>, BytesMut) {
    let dec = FrameDecoder::new(MAX_BODY);
    let mut buf = BytesMut::new();
    let mut bodies = Vec::new();
    let mut rest = stream;
    let mut sizes = chunk_sizes.iter().copied().cycle();
    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(1).clamp(1, rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        while let Some(body) = dec.decode(&mut buf).expect("valid stream") {
            bodies.push(body);
        }
    }
    (bodies, buf)
}

proptest! {
    #[test]
    fn member_record_round_trips(m in member()) {
        let mut out = BytesMut::new();
        m.encode(&mut out);
        prop_assert_eq!(out.len(), m.encoded_len());
        let wire = out.freeze();
        prop_assert_eq!(&m.to_bytes(), &wire);
        let back = MemberRecord::decode(&wire, &MemberLimits::default()).unwrap();
        prop_assert_eq!(back, m);
    }

    #[test]
    fn member_record_truncated_or_extended_is_refused(m in member(), cut in any::<prop::sample::Index>(), extra in vec(any::<u8>(), 1..8)) {
        let wire = m.to_bytes();
        let short = wire.slice(..cut.index(wire.len()));
        prop_assert!(MemberRecord::decode(&short, &MemberLimits::default()).is_err());
        let mut long = wire.to_vec();
        long.extend_from_slice(&extra);
        prop_assert!(MemberRecord::decode(&Bytes::from(long), &MemberLimits::default()).is_err());
    }

    #[test]
    fn channel_data_round_trips_through_a_frame(d in channel_data()) {
        let mut wire = BytesMut::new();
        d.encode_frame(&mut wire);
        let mut buf = wire.clone();
        let body = FrameDecoder::new(MAX_BODY).decode(&mut buf).unwrap().expect("one complete frame");
        prop_assert!(buf.is_empty());
        prop_assert_eq!(body.len() + FRAME_OVERHEAD, wire.len());
        let back = ChannelData::decode(&body, &ChannelDataLimits::default()).unwrap();
        prop_assert_eq!(&back, &d);
        // Re-encoding is byte-exact.
        let mut again = BytesMut::new();
        back.encode_frame(&mut again);
        prop_assert_eq!(again, wire);
    }

    #[test]
    fn frame_stream_in_arbitrary_chunks(
        bodies in vec(vec(any::<u8>(), 0..600), 0..8),
        chunks in vec(1usize..200, 1..20),
    ) {
        let mut stream = BytesMut::new();
        for b in &bodies {
            encode_frame(b, &mut stream);
        }
        let (got, left) = decode_in_chunks(&stream, &chunks);
        prop_assert!(left.is_empty());
        prop_assert_eq!(got.len(), bodies.len());
        for (g, b) in got.iter().zip(&bodies) {
            prop_assert_eq!(&g[..], &b[..]);
        }
    }

    #[test]
    fn channel_data_stream_in_arbitrary_chunks(
        msgs in vec(channel_data(), 1..4),
        chunks in vec(1usize..300, 1..20),
    ) {
        let mut stream = BytesMut::new();
        for d in &msgs {
            d.encode_frame(&mut stream);
        }
        let (got, left) = decode_in_chunks(&stream, &chunks);
        prop_assert!(left.is_empty());
        prop_assert_eq!(got.len(), msgs.len());
        for (body, d) in got.iter().zip(&msgs) {
            prop_assert_eq!(&ChannelData::decode(body, &ChannelDataLimits::default()).unwrap(), d);
        }
    }

    #[test]
    fn member_decode_never_panics(data in vec(any::<u8>(), 0..512)) {
        let _ = MemberRecord::decode(&Bytes::from(data), &MemberLimits::default());
    }

    #[test]
    fn member_decode_never_panics_after_valid_prefix(m in member(), pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        // Corrupt one byte of a valid record, so the decoder gets past the markers.
        let mut wire = m.to_bytes().to_vec();
        let i = pos.index(wire.len());
        wire[i] = byte;
        let wire = Bytes::from(wire);
        if let Ok(back) = MemberRecord::decode(&wire, &MemberLimits::default()) {
            prop_assert_eq!(back.to_bytes(), wire);
        }
    }

    #[test]
    fn channel_data_decode_never_panics(data in vec(any::<u8>(), 0..1024)) {
        let data = Bytes::from(data);
        if let Ok(d) = ChannelData::decode(&data, &ChannelDataLimits::default()) {
            // Anything accepted re-encodes to the same body.
            let mut frame = BytesMut::new();
            d.encode_frame(&mut frame);
            prop_assert_eq!(&frame[11..frame.len() - 7], &data[..]);
        }
    }

    #[test]
    fn frame_decoder_on_random_input(
        data in vec(any::<u8>(), 0..1024),
        prefix in any::<bool>(),
        max in 0usize..2048,
    ) {
        // Half the time start with a valid marker so the length and trailer paths run.
        let mut input = if prefix { b"FLT2002".to_vec() } else { Vec::new() };
        input.extend_from_slice(&data);
        let dec = FrameDecoder::new(max);
        let mut buf = BytesMut::from(&input[..]);
        loop {
            let before = buf.len();
            match dec.decode(&mut buf) {
                Err(_) | Ok(None) => break,
                Ok(Some(body)) => {
                    prop_assert!(body.len() <= max);
                    prop_assert_eq!(buf.len() + body.len() + FRAME_OVERHEAD, before);
                }
            }
        }
    }
}
