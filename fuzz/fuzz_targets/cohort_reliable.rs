//! The reliable-multicast datagram decoder, and the whole `Reliable` state machine, on one
//! arbitrary datagram. Besides "never panics": every record the decoder accepts re-encodes
//! to exactly its input bytes, and a `Reliable` member in a two-member view takes the
//! datagram (from the other member) without panicking, whatever it holds.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use cohort_proto::MemberId;
use cohort_proto::group::{GroupMember, View, ViewId};
use cohort_proto::reliable::{Reliable, ReliableConfig};
use cohort_proto::wire::cohort::reliable::{HEADER_LEN, decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = Bytes::copy_from_slice(data);
    if let Ok((header, records)) = decode(&input) {
        let mut again = BytesMut::new();
        header.encode(&mut again);
        assert_eq!(again.len(), HEADER_LEN);
        for record in records {
            let Ok(record) = record else { break };
            record.encode(&mut again);
        }
        assert_eq!(&again[..], &input[..again.len()], "re-encoding differs");
    }

    // Feed it to a member; the sender id is whatever the header claims.
    let local = MemberId([0xAA; 16]);
    let peer = Reliable::datagram_sender(&input).unwrap_or(MemberId([0xBB; 16]));
    if peer == local {
        return;
    }
    let now = Instant::now();
    let view = View {
        id: ViewId { seq: 0, coordinator: local },
        members: [local, peer]
            .into_iter()
            .map(|id| GroupMember { id, addr: SocketAddr::from(([127, 0, 0, 1], 1)) })
            .collect(),
    };
    let mut r = Reliable::new(ReliableConfig::default(), local, now);
    r.install_view(&view, now);
    let _ = r.handle_datagram(peer, input.clone(), now);
    r.handle_timeout(now + Duration::from_secs(1));
    while r.poll_transmit().is_some() {}
    while r.poll_delivery().is_some() {}

    // And to a member flushing its view of three towards a view of two (with the peer as
    // the flush coordinator when its id sorts first), so flush records reach every state.
    let third = MemberId([0xCC; 16]);
    let config = ReliableConfig::default().view_synchrony(true);
    let mut r = Reliable::new(config, local, now);
    let mut members = vec![peer, local, third];
    members.sort();
    let member = |id| GroupMember { id, addr: SocketAddr::from(([127, 0, 0, 1], 1)) };
    let three = View::new(1, members.iter().copied().map(member)).expect("members");
    let two = View::new(2, members.iter().copied().filter(|m| *m != third).map(member))
        .expect("members");
    r.install_view(&three, now);
    r.install_view(&two, now);
    let _ = r.handle_datagram(peer, input, now);
    r.handle_timeout(now + Duration::from_secs(1));
    while r.poll_transmit().is_some() {}
    while r.poll_delivery().is_some() {}
    while r.poll_event().is_some() {}
});
