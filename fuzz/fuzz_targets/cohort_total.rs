//! The total-order record decoder on arbitrary bytes: never panics, and every record it
//! accepts re-encodes to exactly its bytes.
#![no_main]

use bytes::Bytes;
use cohort_proto::wire::cohort::total::TotalRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(record) = TotalRecord::decode(&bytes) {
        assert_eq!(record.encode(), bytes, "accepted record does not re-encode");
    }
});
