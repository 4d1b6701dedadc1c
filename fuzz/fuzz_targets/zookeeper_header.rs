//! `ConnectionHeader::decode_prefix` on the first bytes of an election connection.
//! Checks: no panic; an accepted header took at most the input, re-encodes to a header that
//! decodes to the same value, and (single address, version 1) to exactly the bytes it took.
#![no_main]

use bytes::Bytes;
use cohort_proto::wire::zookeeper::{ConnectionHeader, PROTOCOL_VERSION};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((header, used))) = ConnectionHeader::decode_prefix(data) {
        assert!(used <= data.len());
        assert_eq!(header.encoded_len(), used);
        let mut out = Vec::new();
        header.encode(&mut out);
        let again = ConnectionHeader::decode(&Bytes::from(out.clone())).expect("re-decodes");
        assert_eq!(again, header);
        if data[..8] == PROTOCOL_VERSION.to_be_bytes() && !header.election_addr.contains('|') {
            assert_eq!(&out[..], &data[..used], "re-encodes differently");
        }
    }
});
