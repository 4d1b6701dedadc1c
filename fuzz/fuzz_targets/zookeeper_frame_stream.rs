//! An election connection's byte stream after the header, fed to the ZooKeeper
//! `FrameDecoder` in chunks; every frame body decoded as a `Notification`.
//!
//! Input layout: byte 0 picks the chunk size (0 = all at once), the rest is the stream.
//! Checks: no panic; no body over `MAX_FRAME_LEN`; chunked decoding yields the same bodies
//! and error as decoding the whole stream at once; an accepted notification re-encodes to
//! a body that decodes to the same vote.
#![no_main]

use bytes::Bytes;
use cohort_proto::wire::DecodeError;
use cohort_proto::wire::zookeeper::{FrameDecoder, MAX_FRAME_LEN, Notification};
use libfuzzer_sys::fuzz_target;

fn run(stream: &[u8], chunk: usize) -> (Vec<Bytes>, Option<DecodeError>) {
    let mut dec = FrameDecoder::new();
    let mut bodies = Vec::new();
    for piece in stream.chunks(chunk.max(1)) {
        dec.extend(piece);
        loop {
            match dec.next_frame() {
                Ok(Some(body)) => {
                    assert!(!body.is_empty() && body.len() <= MAX_FRAME_LEN);
                    bodies.push(body);
                }
                Ok(None) => break,
                Err(e) => return (bodies, Some(e)),
            }
        }
    }
    (bodies, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = if chunk == 0 { stream.len() } else { usize::from(chunk) };
    let chunked = run(stream, chunk);
    let whole = run(stream, stream.len());
    assert_eq!(chunked, whole, "chunking changed the outcome");

    for body in &chunked.0 {
        if let Ok(n) = Notification::decode(body) {
            let again = Notification::decode(&n.to_bytes()).expect("re-decodes");
            let mut expected = n.clone();
            if n.version <= 1 {
                // A version ≤ 1 body is 40 bytes, which reads as version 0.
                expected.version = 0;
            }
            assert_eq!(again, expected);
        }
    }
});
