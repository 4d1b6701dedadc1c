//! `GroupPacket::decode` on one arbitrary message. Besides "never panics", anything the
//! decoder accepts must re-encode to exactly the input (the format has one encoding).
#![no_main]

use bytes::Bytes;
use cohort_proto::wire::cohort::{GroupLimits, GroupPacket};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = Bytes::copy_from_slice(data);
    if let Ok(message) = GroupPacket::decode(&input, &GroupLimits::default()) {
        assert_eq!(
            message.encode(),
            input,
            "accepted message does not re-encode to its input"
        );
    }
});
