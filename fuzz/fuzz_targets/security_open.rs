//! The cluster-key opener (`cohort_proto::security`): sealed datagrams and sealed TCP
//! streams, as an attacker without the key (or with a recording) would send them.
//!
//! Input layout: byte 0 picks the mode, the rest is the input.
//! - mode % 3 == 0: the rest is a datagram, opened as one. It must be refused (the fuzzer
//!   cannot forge a tag) and must not reach the replay guard.
//! - mode % 3 == 1: the rest is a TCP stream, opened in chunks of (byte 1) bytes. Nothing
//!   may come out of it, and the opener holds at most one record and a prefix.
//! - mode % 3 == 2: the rest is a plaintext, sealed with the key, then one bit is flipped at
//!   the position bytes 1-2 name (no flip if past the end). The flipped message must be
//!   refused; the untouched one must open to the plaintext, once.
#![no_main]

use bytes::BytesMut;
use cohort_proto::security::{
    GuardConfig, Key, Keyring, MAX_RECORD_PLAINTEXT, OVERHEAD, Origin, Purpose,
    RECORD_PREFIX_LEN, ReplayGuard, Sealer, SenderKeys, StreamOpener, open_datagram,
};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_780_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let ring = Keyring::new(Key::from_bytes([7; 32]));
    let mut guard = ReplayGuard::new(GuardConfig::default(), Origin([1; 12]));
    let mut keys = SenderKeys::default();
    match mode % 3 {
        0 => {
            assert!(open_datagram(&ring, &mut keys, &mut guard, Purpose::ReliableDatagram, NOW, rest).is_err());
            assert_eq!(guard.senders(), 0);
            assert!(keys.is_empty(), "a forged message left a sender key behind");
        }
        1 => {
            let Some((&chunk, stream)) = rest.split_first() else {
                return;
            };
            let mut opener = StreamOpener::new(Purpose::ChannelData);
            let mut plain = BytesMut::new();
            for piece in stream.chunks(usize::from(chunk).max(1)) {
                opener.buffer_mut().extend_from_slice(piece);
                match opener.open(&ring, &mut guard, NOW, &mut plain) {
                    Ok(n) => assert_eq!(n, 0, "a forged record opened"),
                    Err(_) => break,
                }
                assert!(
                    opener.buffered() <= RECORD_PREFIX_LEN + MAX_RECORD_PLAINTEXT + OVERHEAD + usize::from(chunk),
                    "the opener buffers more than a record"
                );
            }
            assert!(plain.is_empty());
            assert_eq!(guard.senders(), 0);
        }
        _ => {
            if rest.len() < 2 {
                return;
            }
            let at = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
            let plaintext = &rest[2..];
            let mut sealed = BytesMut::new();
            Sealer::new(Origin([2; 12]), 0)
                .seal(&ring, Purpose::ReliableDatagram, NOW, plaintext, &mut sealed)
                .unwrap();
            if at / 8 < sealed.len() {
                let mut flipped = sealed.clone();
                flipped[at / 8] ^= 1 << (at % 8);
                assert!(open_datagram(&ring, &mut keys, &mut guard, Purpose::ReliableDatagram, NOW, &flipped).is_err());
                assert_eq!(guard.senders(), 0);
            }
            let opened = open_datagram(&ring, &mut keys, &mut guard, Purpose::ReliableDatagram, NOW, &sealed).unwrap();
            assert_eq!(&opened[..], plaintext);
            assert!(open_datagram(&ring, &mut keys, &mut guard, Purpose::ReliableDatagram, NOW, &sealed).is_err());
        }
    }
});
