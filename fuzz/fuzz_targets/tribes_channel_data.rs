//! `ChannelData::decode` on one arbitrary frame body. Anything accepted must re-encode to
//! the same body.
#![no_main]

use bytes::{Bytes, BytesMut};
use cohort_proto::wire::tribes::frame::FRAME_OVERHEAD;
use cohort_proto::wire::tribes::{ChannelData, ChannelDataLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    if let Ok(d) = ChannelData::decode(&body, &ChannelDataLimits::default()) {
        let mut frame = BytesMut::new();
        d.encode_frame(&mut frame);
        assert_eq!(frame.len(), body.len() + FRAME_OVERHEAD);
        assert_eq!(
            &frame[11..frame.len() - 7],
            &body[..],
            "accepted body does not re-encode"
        );
    }
});
