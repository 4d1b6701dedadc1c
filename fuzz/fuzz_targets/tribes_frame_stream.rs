//! A TCP byte stream fed to `FrameDecoder` in chunks, each frame body then decoded as
//! `ChannelData`, as the receiver does.
//!
//! Input layout: byte 0 picks the chunk size (0 = the whole stream at once, n = n bytes at
//! a time), the rest is the stream. Checks: no panic; every body is within the decoder's
//! maximum; and the chunked run yields the same bodies, the same error and the same
//! leftover bytes as decoding the whole stream at once.
#![no_main]

use bytes::{Bytes, BytesMut};
use cohort_proto::wire::DecodeError;
use cohort_proto::wire::tribes::frame::FrameDecoder;
use cohort_proto::wire::tribes::{ChannelData, ChannelDataLimits};
use libfuzzer_sys::fuzz_target;

/// Largest frame body accepted. The receiver allows about 64 MiB; a smaller bound keeps the
/// decoder's up-front `reserve` cheap while exercising the same code paths.
const MAX_BODY: usize = 1 << 20;

struct Outcome {
    bodies: Vec<Bytes>,
    error: Option<DecodeError>,
    leftover: BytesMut,
}

fn run(dec: &FrameDecoder, stream: &[u8], chunk: usize) -> Outcome {
    let mut buf = BytesMut::new();
    let mut bodies = Vec::new();
    for piece in stream.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(body)) => {
                    assert!(body.len() <= MAX_BODY, "body over the decoder's maximum");
                    bodies.push(body);
                }
                Ok(None) => break,
                Err(e) => {
                    return Outcome {
                        bodies,
                        error: Some(e),
                        leftover: buf,
                    };
                }
            }
        }
    }
    Outcome {
        bodies,
        error: None,
        leftover: buf,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let dec = FrameDecoder::new(MAX_BODY);
    let chunk = if chunk == 0 {
        stream.len()
    } else {
        usize::from(chunk)
    };
    let chunked = run(&dec, stream, chunk);
    let whole = run(&dec, stream, stream.len());

    assert_eq!(chunked.bodies, whole.bodies, "chunking changed the frames");
    assert_eq!(chunked.error, whole.error, "chunking changed the error");
    if chunked.error.is_none() {
        assert_eq!(chunked.leftover, whole.leftover);
    }

    let limits = ChannelDataLimits::default();
    for body in &chunked.bodies {
        let _ = ChannelData::decode(body, &limits);
    }
});
