//! A reliable channel's TCP byte stream (the hello, then datagram frames), fed to the
//! `wire::cohort::stream::FrameDecoder` in chunks; the first body decoded as a `Hello`.
//!
//! Input layout: byte 0 picks the chunk size (0 = all at once), the rest is the stream.
//! Checks: no panic; no body empty or over `MAX_FRAME_LEN`; chunked decoding yields the
//! same bodies, error and leftover as decoding the whole stream at once; an accepted hello
//! re-encodes to exactly its frame.
#![no_main]

use bytes::{Bytes, BytesMut};
use cohort_proto::wire::DecodeError;
use cohort_proto::wire::cohort::stream::{FrameDecoder, Hello, MAX_FRAME_LEN};
use libfuzzer_sys::fuzz_target;

fn run(stream: &[u8], chunk: usize) -> (Vec<Bytes>, Option<DecodeError>, usize) {
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
                Err(e) => return (bodies, Some(e), dec.buffered()),
            }
        }
    }
    let left = dec.buffered();
    (bodies, None, left)
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = if chunk == 0 { stream.len() } else { usize::from(chunk) };
    let chunked = run(stream, chunk);
    let whole = run(stream, stream.len());
    assert_eq!(chunked.0, whole.0, "chunking changed the bodies");
    assert_eq!(chunked.1, whole.1, "chunking changed the error");
    if whole.1.is_none() {
        assert_eq!(chunked.2, whole.2, "chunking changed the leftover");
    }

    if let Some(first) = whole.0.first() {
        if let Ok(hello) = Hello::decode(first) {
            let mut again = BytesMut::new();
            hello.encode_framed(&mut again);
            assert_eq!(&again[4..], &first[..], "accepted hello does not re-encode");
        }
    }
});
