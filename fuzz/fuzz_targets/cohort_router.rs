//! The gossip router's stream decoder on arbitrary bytes, fed in two pieces: never panics,
//! and every message it accepts re-encodes to exactly its bytes.
#![no_main]

use bytes::BytesMut;
use cohort_proto::wire::cohort::router::RouterMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let mut buf = BytesMut::new();
    for piece in [&data[..split], &data[split..]] {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.clone();
            match RouterMessage::decode_framed(&mut buf) {
                Ok(Some(message)) => {
                    let mut again = BytesMut::new();
                    message.encode_framed(&mut again);
                    assert_eq!(&before[..again.len()], &again[..], "accepted message does not re-encode");
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
});
