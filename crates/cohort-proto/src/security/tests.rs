use bytes::BytesMut;
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;

const NOW: u64 = 1_780_000_000_000;

fn key(n: u8) -> Key {
    Key::from_bytes([n; KEY_LEN])
}

fn guard(own: u8) -> ReplayGuard {
    ReplayGuard::new(GuardConfig::default(), Origin([own; 12]))
}

/// Opens with a fresh sender-key cache.
fn open_dg(
    ring: &Keyring,
    g: &mut ReplayGuard,
    purpose: Purpose,
    now_ms: u64,
    datagram: &[u8],
) -> Result<Bytes, OpenError> {
    open_datagram(
        ring,
        &mut SenderKeys::default(),
        g,
        purpose,
        now_ms,
        datagram,
    )
}

fn seal(ring: &Keyring, sealer: &mut Sealer, purpose: Purpose, plain: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    sealer.seal(ring, purpose, NOW, plain, &mut out).unwrap();
    out
}

#[test]
fn datagram_round_trip_hides_the_plaintext_and_opens_once() {
    let ring = Keyring::new(key(1));
    let mut sealer = Sealer::new(Origin([1; 12]), 7);
    let plain = b"TRIBES-B a member record, or any other cohort datagram";
    let sealed = seal(&ring, &mut sealer, Purpose::Heartbeat, plain);
    assert_eq!(sealed.len(), plain.len() + OVERHEAD);
    assert_eq!(sealed[..4], SEALED_ENVELOPE);
    assert_eq!(sealed[4..8], ring.primary_id().0);
    assert!(
        !sealed.windows(8).any(|w| w == b"TRIBES-B"),
        "the plaintext shows through"
    );
    let mut g = guard(2);
    let opened = open_dg(&ring, &mut g, Purpose::Heartbeat, NOW, &sealed).unwrap();
    assert_eq!(&opened[..], plain);
    assert_eq!(
        open_dg(&ring, &mut g, Purpose::Heartbeat, NOW, &sealed),
        Err(OpenError::Replayed)
    );
    // The sender's own guard refuses it as its own (multicast loop, reflection).
    assert_eq!(
        open_dg(&ring, &mut guard(1), Purpose::Heartbeat, NOW, &sealed),
        Err(OpenError::Own)
    );
}

#[test]
fn every_changed_byte_is_refused_and_nothing_reaches_the_guard() {
    let ring = Keyring::new(key(1));
    let mut sealer = Sealer::new(Origin([1; 12]), 0);
    let sealed = seal(&ring, &mut sealer, Purpose::ReliableDatagram, b"payload");
    for i in 0..sealed.len() {
        for flip in [0x01, 0x80] {
            let mut bad = sealed.clone();
            bad[i] ^= flip;
            let mut g = guard(2);
            let err = open_dg(&ring, &mut g, Purpose::ReliableDatagram, NOW, &bad)
                .expect_err("a changed byte must not open");
            match i {
                0..4 => assert_eq!(err, OpenError::NotSealed, "byte {i}"),
                4..8 => assert!(matches!(err, OpenError::UnknownKey(_)), "byte {i}: {err}"),
                _ => assert_eq!(err, OpenError::BadTag, "byte {i}"),
            }
            assert_eq!(
                g.senders(),
                0,
                "an unauthenticated message reached the guard"
            );
        }
    }
    // Truncated anywhere.
    for len in 0..sealed.len() {
        let mut g = guard(2);
        assert!(
            open_dg(
                &ring,
                &mut g,
                Purpose::ReliableDatagram,
                NOW,
                &sealed[..len]
            )
            .is_err()
        );
    }
}

#[test]
fn another_purpose_another_key_or_plain_traffic_is_refused() {
    let ring = Keyring::new(key(1));
    let mut sealer = Sealer::new(Origin([1; 12]), 0);
    let sealed = seal(&ring, &mut sealer, Purpose::Heartbeat, b"beat");
    let mut g = guard(2);
    assert_eq!(
        open_dg(&ring, &mut g, Purpose::ReliableDatagram, NOW, &sealed),
        Err(OpenError::BadTag)
    );
    let other = Keyring::new(key(2));
    assert_eq!(
        open_dg(&other, &mut g, Purpose::Heartbeat, NOW, &sealed),
        Err(OpenError::UnknownKey(ring.primary_id()))
    );
    assert_eq!(
        open_dg(&ring, &mut g, Purpose::Heartbeat, NOW, b"TRIBES-B\x01\x00"),
        Err(OpenError::NotSealed)
    );
    // A message that claims the right key id but was sealed with another key.
    let mut forged = seal(
        &other,
        &mut Sealer::new(Origin([3; 12]), 0),
        Purpose::Heartbeat,
        b"x",
    );
    forged[4..8].copy_from_slice(&ring.primary_id().0);
    assert_eq!(
        open_dg(&ring, &mut g, Purpose::Heartbeat, NOW, &forged),
        Err(OpenError::BadTag)
    );
    // Stale and future messages.
    assert!(matches!(
        open_dg(&ring, &mut g, Purpose::Heartbeat, NOW + 30_001, &sealed),
        Err(OpenError::Stale { .. })
    ));
    assert_eq!(g.senders(), 0);
}

#[test]
fn nonces_never_repeat_and_the_counter_never_wraps() {
    let ring = Keyring::new(key(1));
    let mut sealer = Sealer::new(Origin([1; 12]), 0);
    let a = seal(&ring, &mut sealer, Purpose::Heartbeat, b"same");
    let b = seal(&ring, &mut sealer, Purpose::Heartbeat, b"same");
    assert_ne!(a[8..32], b[8..32], "two messages share a nonce");
    assert_ne!(a[HEADER_LEN..], b[HEADER_LEN..]);
    assert_eq!(sealer.sealed(), 2);
    sealer.next = u64::MAX - 1;
    let mut out = BytesMut::new();
    assert!(
        sealer
            .seal(&ring, Purpose::Heartbeat, NOW, b"last", &mut out)
            .is_ok()
    );
    let before = out.len();
    assert_eq!(
        sealer.seal(&ring, Purpose::Heartbeat, NOW, b"one more", &mut out),
        Err(SealError::Exhausted)
    );
    assert_eq!(out.len(), before, "a refused seal wrote something");
}

#[test]
fn serials_beyond_the_nonce_are_refused_and_origins_seal_under_their_own_keys() {
    let ring = Keyring::new(key(1));
    let mut last = Sealer::new(Origin([1; 12]), MAX_SEALERS - 1);
    assert!(
        last.seal(&ring, Purpose::Heartbeat, NOW, b"x", &mut BytesMut::new())
            .is_ok()
    );
    let mut out = BytesMut::new();
    assert_eq!(
        Sealer::new(Origin([1; 12]), MAX_SEALERS).seal(
            &ring,
            Purpose::Heartbeat,
            NOW,
            b"x",
            &mut out
        ),
        Err(SealError::Exhausted)
    );
    assert!(out.is_empty());
    // The same serial, counter and plaintext from two node starts: different sender keys,
    // so different ciphertexts (the nonce alone would be the same).
    let a = seal(
        &ring,
        &mut Sealer::new(Origin([1; 12]), 0),
        Purpose::Heartbeat,
        b"same",
    );
    let b = seal(
        &ring,
        &mut Sealer::new(Origin([2; 12]), 0),
        Purpose::Heartbeat,
        b"same",
    );
    assert_eq!(a[20..32], b[20..32]);
    assert_ne!(a[HEADER_LEN..], b[HEADER_LEN..]);
}

#[test]
fn sender_keys_are_kept_only_for_genuine_messages_and_stay_bounded() {
    let ring = Keyring::new(key(1));
    let mut keys = SenderKeys::with_capacity(2);
    let mut g = guard(9);
    // Forgeries under any number of origins leave nothing behind.
    for o in 0..10u8 {
        let mut forged = seal(
            &ring,
            &mut Sealer::new(Origin([o; 12]), 0),
            Purpose::Heartbeat,
            b"x",
        );
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert_eq!(
            open_datagram(&ring, &mut keys, &mut g, Purpose::Heartbeat, NOW, &forged),
            Err(OpenError::BadTag)
        );
    }
    assert!(keys.is_empty());
    // Genuine senders are kept, up to the capacity; the cache then starts over and every
    // sender still opens.
    for round in 0..2 {
        for o in 0..5u8 {
            let mut sealer = Sealer::new(Origin([o; 12]), round);
            let m = seal(&ring, &mut sealer, Purpose::Heartbeat, b"hello");
            let opened =
                open_datagram(&ring, &mut keys, &mut g, Purpose::Heartbeat, NOW, &m).unwrap();
            assert_eq!(&opened[..], b"hello");
            assert!(keys.len() <= 2);
        }
    }
    assert!(!keys.is_empty());
}

#[test]
fn keyring_rotation_keeps_every_step_readable() {
    let (old, new) = (key(1), key(2));
    let mut a = Keyring::new(old.clone());
    let mut b = Keyring::new(old.clone());
    let mut sa = Sealer::new(Origin([1; 12]), 0);
    let mut gb = guard(2);
    let mut send = |ring: &Keyring, to: &Keyring, g: &mut ReplayGuard| {
        let m = seal(ring, &mut sa, Purpose::Heartbeat, b"x");
        open_dg(to, g, Purpose::Heartbeat, NOW, &m).map(|_| ())
    };
    // Step 1: install everywhere.
    a.install(new.clone()).unwrap();
    assert_eq!(send(&a, &b, &mut gb), Ok(()));
    b.install(new.clone()).unwrap();
    // Step 2: a switches first; b, still sending with the old key, is read by a.
    a.use_key(new.id()).unwrap();
    assert_eq!(send(&a, &b, &mut gb), Ok(()));
    b.use_key(new.id()).unwrap();
    // Step 3: remove the old key; a message sealed with it is refused from then on.
    let old_msg = seal(
        &Keyring::new(old.clone()),
        &mut Sealer::new(Origin([3; 12]), 0),
        Purpose::Heartbeat,
        b"x",
    );
    b.remove(old.id()).unwrap();
    assert_eq!(
        open_dg(&b, &mut gb, Purpose::Heartbeat, NOW, &old_msg),
        Err(OpenError::UnknownKey(old.id()))
    );
    assert_eq!(b.list(), vec![new.id()]);
    assert_eq!(
        b.remove(new.id()),
        Err(KeyringError::RemovePrimary(new.id()))
    );
    assert_eq!(b.use_key(old.id()), Err(KeyringError::NotFound(old.id())));
}

#[test]
fn key_files_and_keys() {
    let mut rng = StdRng::seed_from_u64(7);
    let (k1, k2) = (Key::generate(&mut rng), Key::generate(&mut rng));
    assert_ne!(k1, k2);
    assert_ne!(k1.id(), k2.id());
    let text = format!(
        "# cluster keys\n\n{}\n  {}  \n",
        k1.to_hex(),
        k2.to_hex().to_uppercase()
    );
    let ring = Keyring::from_key_file(&text).unwrap();
    assert_eq!(ring.list(), vec![k1.id(), k2.id()]);
    assert_eq!(ring.primary_id(), k1.id());
    assert_eq!(
        Keyring::from_key_file("# nothing\n"),
        Err(KeyringError::Empty)
    );
    assert!(matches!(
        Keyring::from_key_file("abcd\n"),
        Err(KeyringError::BadKey(_))
    ));
    assert!(matches!(
        Key::from_hex(&"zz".repeat(32)),
        Err(KeyringError::BadKey(_))
    ));
    assert!(matches!(
        Key::from_hex(&"é".repeat(32)),
        Err(KeyringError::BadKey(_))
    ));
    // Debug output names keys, never shows them.
    assert!(!format!("{ring:?}").contains(&k1.to_hex()));
    assert!(!format!("{k1:?}").contains(&k1.to_hex()));
    // The same key always has the same id; installing it twice is no change.
    let mut r = Keyring::new(k1.clone());
    r.install(Key::from_hex(&k1.to_hex()).unwrap()).unwrap();
    assert_eq!(r.list().len(), 1);
    for i in 0..MAX_KEYS as u8 - 1 {
        r.install(key(100 + i)).unwrap();
    }
    assert_eq!(r.install(key(200)), Err(KeyringError::Full));
}

fn stream_of(ring: &Keyring, sealer: &mut StreamSealer, parts: &[&[u8]]) -> BytesMut {
    let mut out = BytesMut::new();
    for p in parts {
        sealer.seal(ring, NOW, p, &mut out).unwrap();
    }
    out
}

fn open_all(
    ring: &Keyring,
    g: &mut ReplayGuard,
    purpose: Purpose,
    bytes: &[u8],
    chunk: usize,
) -> Result<Vec<u8>, OpenError> {
    let mut opener = StreamOpener::new(purpose);
    let mut plain = BytesMut::new();
    for piece in bytes.chunks(chunk.max(1)) {
        opener.buffer_mut().extend_from_slice(piece);
        opener.open(ring, g, NOW, &mut plain)?;
    }
    Ok(plain.to_vec())
}

#[test]
fn stream_round_trip_in_any_chunks_and_large_writes_split_into_records() {
    let ring = Keyring::new(key(1));
    let big = vec![0xAB; 3 * MAX_RECORD_PLAINTEXT + 5];
    let mut sealer = StreamSealer::new(Origin([1; 12]), 0, Purpose::ChannelData);
    let stream = stream_of(&ring, &mut sealer, &[b"FLT2002", &big, b"TLF2003"]);
    assert_eq!(
        stream.len(),
        7 + big.len() + 7 + 6 * (RECORD_PREFIX_LEN + OVERHEAD)
    );
    let mut want = b"FLT2002".to_vec();
    want.extend_from_slice(&big);
    want.extend_from_slice(b"TLF2003");
    for chunk in [1, 3, 1000, stream.len()] {
        let plain = open_all(&ring, &mut guard(2), Purpose::ChannelData, &stream, chunk).unwrap();
        assert_eq!(plain, want, "chunks of {chunk}");
    }
}

#[test]
fn streams_refuse_plain_bytes_replays_splices_and_reflections() {
    let ring = Keyring::new(key(1));
    // Plain Tribes framing and plain cohort stream framing are refused at once.
    let mut g = guard(2);
    assert_eq!(
        open_all(
            &ring,
            &mut g,
            Purpose::ChannelData,
            b"FLT2002\x00\x00\x00\x03\x06\x02\x03TLF2003",
            1
        ),
        Err(OpenError::NotSealed)
    );
    assert_eq!(
        open_all(
            &ring,
            &mut g,
            Purpose::ReliableStream,
            &[0, 0, 0, 30, 0xC0, 0x4E, 1, 4],
            8
        ),
        Err(OpenError::NotSealed)
    );
    // A recorded connection played again on a new one.
    let mut sealer = StreamSealer::new(Origin([1; 12]), 0, Purpose::ReliableStream);
    let stream = stream_of(&ring, &mut sealer, &[b"hello", b"datagram"]);
    assert!(open_all(&ring, &mut g, Purpose::ReliableStream, &stream, 64).is_ok());
    assert_eq!(
        open_all(&ring, &mut g, Purpose::ReliableStream, &stream, 64),
        Err(OpenError::Replayed)
    );
    // A record of another connection spliced in.
    let mut other = StreamSealer::new(Origin([1; 12]), 1, Purpose::ReliableStream);
    let first = stream_of(&ring, &mut other, &[b"hello"]);
    let mut third = StreamSealer::new(Origin([1; 12]), 2, Purpose::ReliableStream);
    let mut spliced = stream_of(&ring, &mut third, &[b"hello"]);
    spliced.extend_from_slice(&stream_of(&ring, &mut other, &[b"more"]));
    let _ = first;
    assert_eq!(
        open_all(&ring, &mut g, Purpose::ReliableStream, &spliced, 1000),
        Err(OpenError::BadRecord)
    );
    // A record dropped (or repeated) in the middle.
    let mut s4 = StreamSealer::new(Origin([1; 12]), 3, Purpose::ReliableStream);
    let r0 = stream_of(&ring, &mut s4, &[b"a"]);
    let _r1 = stream_of(&ring, &mut s4, &[b"b"]);
    let r2 = stream_of(&ring, &mut s4, &[b"c"]);
    let mut gap = r0.clone();
    gap.extend_from_slice(&r2);
    assert_eq!(
        open_all(&ring, &mut g, Purpose::ReliableStream, &gap, 1000),
        Err(OpenError::BadRecord)
    );
    // A stream that does not start at counter 0 (its beginning cut off).
    assert_eq!(
        open_all(&ring, &mut guard(2), Purpose::ReliableStream, &r2, 1000),
        Err(OpenError::BadRecord)
    );
    // Our own stream reflected back; a stream opened for the other direction.
    let mut s5 = StreamSealer::new(Origin([2; 12]), 0, Purpose::ChannelData);
    let own = stream_of(&ring, &mut s5, &[b"frame"]);
    assert_eq!(
        open_all(&ring, &mut guard(2), Purpose::ChannelData, &own, 1000),
        Err(OpenError::Own)
    );
    assert_eq!(
        open_all(&ring, &mut guard(3), Purpose::ChannelReply, &own, 1000),
        Err(OpenError::BadTag)
    );
    // A length field over the maximum is refused before anything is buffered.
    let mut huge = vec![0, 0x10, 0, 0];
    huge.extend_from_slice(&SEALED_ENVELOPE);
    assert_eq!(
        open_all(&ring, &mut guard(2), Purpose::ChannelData, &huge, 1000),
        Err(OpenError::BadRecord)
    );
}

proptest! {
    #[test]
    fn any_plaintext_round_trips(plain in proptest::collection::vec(any::<u8>(), 0..3000), serial in 0..MAX_SEALERS) {
        let ring = Keyring::new(key(9));
        let mut sealer = Sealer::new(Origin([4; 12]), serial);
        let sealed = seal(&ring, &mut sealer, Purpose::ReliableDatagram, &plain);
        let opened = open_dg(&ring, &mut guard(5), Purpose::ReliableDatagram, NOW, &sealed).unwrap();
        prop_assert_eq!(&opened[..], &plain[..]);
    }

    #[test]
    fn any_bytes_are_refused_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let ring = Keyring::new(key(9));
        let mut g = guard(5);
        prop_assert!(open_dg(&ring, &mut g, Purpose::Heartbeat, NOW, &bytes).is_err());
        prop_assert!(open_all(&ring, &mut g, Purpose::ChannelData, &bytes, 7).map(|p| p.is_empty()).unwrap_or(true));
        prop_assert_eq!(g.senders(), 0);
    }
}

#[test]
fn a_stream_bound_to_one_member_opens_for_no_other() {
    let ring = Keyring::new(key(1));
    let (x, y) = ([0xAA; 16], [0xBB; 16]);
    let mut sealer = StreamSealer::new(Origin([1; 12]), 0, Purpose::ChannelData).bind(x);
    let stream = stream_of(&ring, &mut sealer, &[b"for x only"]);
    let open = |opener: StreamOpener| {
        let mut opener = opener;
        let mut plain = BytesMut::new();
        opener.buffer_mut().extend_from_slice(&stream);
        opener
            .open(&ring, &mut guard(2), NOW, &mut plain)
            .map(|_| plain.to_vec())
    };
    assert_eq!(
        open(StreamOpener::new(Purpose::ChannelData).bind(x)),
        Ok(b"for x only".to_vec())
    );
    // A recorded connection to x played to y, or to a receiver that binds nothing.
    assert_eq!(
        open(StreamOpener::new(Purpose::ChannelData).bind(y)),
        Err(OpenError::BadTag)
    );
    assert_eq!(
        open(StreamOpener::new(Purpose::ChannelData)),
        Err(OpenError::BadTag)
    );
}

#[test]
fn format_2_matches_an_independent_implementation() {
    // Computed with Python's `cryptography` (HMAC-SHA256 key id, HKDF-SHA256 sender key,
    // AES-256-GCM), from the format in the module docs alone: key 07 × 32, origin 01 × 12,
    // serial 5, counter 0, sent at NOW, purpose Heartbeat, plaintext "cohort".
    let want = "c04e01061b2239fc0101010101010101010101010000000500000000000000000000019e70\
                4488005ba96db8680f6786c2ff17069b914150ae751f0c081a";
    let ring = Keyring::new(Key::from_bytes([7; KEY_LEN]));
    let sealed = seal(
        &ring,
        &mut Sealer::new(Origin([1; 12]), 5),
        Purpose::Heartbeat,
        b"cohort",
    );
    assert_eq!(hex::encode(&sealed), want);
    let opened = open_dg(&ring, &mut guard(2), Purpose::Heartbeat, NOW, &sealed).unwrap();
    assert_eq!(&opened[..], b"cohort");
}

#[test]
fn our_own_messages_are_refused_before_their_tag_is_checked() {
    let ring = Keyring::new(key(1));
    let own = Origin([1; 12]);
    let mut keys = SenderKeys::default().refuse_own(own);
    let mut g = guard(1);
    let mine = seal(
        &ring,
        &mut Sealer::new(own, 0),
        Purpose::ReliableDatagram,
        b"loop",
    );
    assert_eq!(
        open_datagram(
            &ring,
            &mut keys,
            &mut g,
            Purpose::ReliableDatagram,
            NOW,
            &mine
        ),
        Err(OpenError::Own)
    );
    // Not opened: no sender key was derived for it.
    assert!(keys.is_empty());
    // Another node's message opens as usual.
    let theirs = seal(
        &ring,
        &mut Sealer::new(Origin([2; 12]), 0),
        Purpose::ReliableDatagram,
        b"hello",
    );
    let opened = open_datagram(
        &ring,
        &mut keys,
        &mut g,
        Purpose::ReliableDatagram,
        NOW,
        &theirs,
    )
    .unwrap();
    assert_eq!(&opened[..], b"hello");
}
