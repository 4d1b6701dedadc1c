//! `MemberRecord::decode` on one arbitrary datagram. Besides "never panics", anything the
//! decoder accepts must re-encode to exactly the input (the format has one encoding).
#![no_main]

use bytes::Bytes;
use cohort_proto::wire::tribes::{MemberLimits, MemberRecord};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = Bytes::copy_from_slice(data);
    if let Ok(m) = MemberRecord::decode(&input, &MemberLimits::default()) {
        assert_eq!(m.encoded_len(), input.len());
        assert_eq!(
            m.to_bytes(),
            input,
            "accepted record does not re-encode to its input"
        );
    }
});
