//! Real-socket tests of a node: discovery over loopback multicast, ACKed sends, failure
//! reporting, bad input on the receiver port, graceful shutdown.
//!
//! Each test uses its own multicast port and domain so tests can run in parallel.

use std::net::Ipv4Addr;
use std::time::Duration;

use bytes::Bytes;
use cohort::{
    Config, DisappearReason, Event, Events, FailureReason, Member, MemberId, MulticastConfig, Node,
    SendOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

fn config(mcast_port: u16) -> Config {
    Config::default()
        .domain(Bytes::from(format!("test-{mcast_port}")))
        .port(0)
        .multicast(
            MulticastConfig::default()
                .port(mcast_port)
                .interface(Some(Ipv4Addr::LOCALHOST)),
        )
        .heartbeat_interval(Duration::from_millis(100))
        .drop_time(Duration::from_millis(600))
        .ack_timeout(Duration::from_millis(500))
}

async fn next_added(events: &mut Events) -> Member {
    loop {
        match timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("no member added in 5 s")
        {
            Some(Event::MemberAdded(m)) => return m,
            Some(_) => {}
            None => panic!("event stream ended"),
        }
    }
}

async fn next_message(events: &mut Events) -> cohort::Message {
    loop {
        match timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("no message in 5 s")
        {
            Some(Event::Message(m)) => return m,
            Some(_) => {}
            None => panic!("event stream ended"),
        }
    }
}

async fn pair(mcast_port: u16) -> ((Node, Events), (Node, Events)) {
    let mut a = Node::start(config(mcast_port)).await.unwrap();
    let mut b = Node::start(config(mcast_port)).await.unwrap();
    let seen_by_a = next_added(&mut a.1).await;
    let seen_by_b = next_added(&mut b.1).await;
    assert_eq!(seen_by_a.id, b.0.local_member().id);
    assert_eq!(seen_by_b.id, a.0.local_member().id);
    (a, b)
}

#[tokio::test]
async fn nodes_find_each_other_and_exchange_acked_messages() {
    let ((a, _a_events), (b, mut b_events)) = pair(46101).await;
    assert_eq!(
        a.members().iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![b.local_member().id]
    );
    let report = a.send_to_all("hello", SendOptions::USE_ACK).await.unwrap();
    assert_eq!(report.acked.len(), 1);
    assert_eq!(report.acked[0].id, b.local_member().id);
    let msg = next_message(&mut b_events).await;
    assert_eq!(&msg.data[..], b"hello");
    assert_eq!(msg.from.id, a.local_member().id);
    assert!(
        msg.options
            .contains(SendOptions::BYTE_MESSAGE | SendOptions::USE_ACK)
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn synchronized_ack_waits_for_the_application_and_reports_rejection() {
    let ((a, _a_events), (b, mut b_events)) = pair(46102).await;
    let options = SendOptions::USE_ACK | SendOptions::SYNCHRONIZED_ACK;
    let sender = a.clone();
    let send = tokio::spawn(async move { sender.send_to_all("reject me", options).await });
    let msg = next_message(&mut b_events).await;
    assert!(msg.awaits_reply());
    // The ACK waits for the application.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!send.is_finished());
    msg.reject();
    let err = send.await.unwrap().unwrap_err();
    assert!(err.acked.is_empty());
    assert_eq!(err.failed.len(), 1);
    assert_eq!(err.failed[0].1, FailureReason::Rejected);

    let sender = a.clone();
    let send = tokio::spawn(async move { sender.send_to_all("accept me", options).await });
    next_message(&mut b_events).await.accept();
    assert_eq!(send.await.unwrap().unwrap().acked.len(), 1);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_dead_destination_is_reported_while_live_ones_get_the_message() {
    let ((a, _a_events), (b, mut b_events)) = pair(46103).await;
    // A member whose receiver is gone: take a port and close it.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let mut dead = b.local_member().clone();
    dead.id = MemberId([7; 16]);
    dead.addr = closed;
    let live = a.members();
    let err = a
        .send(
            &[live[0].clone(), dead.clone()],
            "partial",
            SendOptions::USE_ACK,
        )
        .await
        .unwrap_err();
    assert_eq!(err.acked.len(), 1);
    assert_eq!(err.acked[0].id, b.local_member().id);
    assert_eq!(err.failed.len(), 1);
    assert_eq!(err.failed[0].0.id, dead.id);
    assert!(
        matches!(err.failed[0].1, FailureReason::Connect(_)),
        "{:?}",
        err.failed[0].1
    );
    assert!(err.to_string().contains("connect failed"));
    assert_eq!(&next_message(&mut b_events).await.data[..], b"partial");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_silent_receiver_fails_with_ack_timeout_after_the_retry() {
    let (a, _events) = Node::start(config(46104)).await.unwrap();
    // A server that reads everything and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = tokio::spawn(async move {
        let mut connections = 0;
        while let Ok(Ok((mut s, _))) = timeout(Duration::from_secs(3), listener.accept()).await {
            connections += 1;
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while s.read(&mut buf).await.is_ok_and(|n| n > 0) {}
            });
        }
        connections
    });
    let mut silent = a.local_member().clone();
    silent.id = MemberId([9; 16]);
    silent.addr = addr;
    let started = std::time::Instant::now();
    let err = a
        .send(&[silent], "anyone?", SendOptions::USE_ACK)
        .await
        .unwrap_err();
    assert_eq!(err.failed[0].1, FailureReason::AckTimeout);
    // First attempt plus one retry, each waiting the 500 ms ACK timeout.
    assert!(started.elapsed() >= Duration::from_millis(1000));
    a.shutdown().await;
    assert_eq!(accepted.await.unwrap(), 2, "the retry reconnects");
}

#[tokio::test]
async fn garbage_on_the_receiver_port_is_counted_and_the_connection_closed() {
    let ((a, _a_events), (b, mut b_events)) = pair(46105).await;
    let mut s = TcpStream::connect(b.local_member().addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let n = timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "connection closed without a reply");
    // A frame announcing a body over the maximum is refused before it is buffered.
    let mut s = TcpStream::connect(b.local_member().addr).await.unwrap();
    s.write_all(b"FLT2002\x7f\xff\xff\xff").await.unwrap();
    let n = timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert_eq!(b.stats().malformed_frames, 2);
    // The node still works.
    a.send_to_all("still here", SendOptions::USE_ACK)
        .await
        .unwrap();
    assert_eq!(&next_message(&mut b_events).await.data[..], b"still here");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_is_seen_at_once_and_silence_after_the_drop_time() {
    let ((a, mut a_events), (b, _b_events)) = pair(46106).await;
    let stopped = std::time::Instant::now();
    b.shutdown().await;
    loop {
        match timeout(Duration::from_secs(2), a_events.recv())
            .await
            .unwrap()
            .unwrap()
        {
            Event::MemberDisappeared { member, reason } => {
                assert_eq!(member.id, b.local_member().id);
                assert_eq!(reason, DisappearReason::Shutdown);
                // Well before the 600 ms drop time: it was the announcement.
                assert!(stopped.elapsed() < Duration::from_millis(300));
                break;
            }
            _ => continue,
        }
    }
    assert!(a.members().is_empty());
    a.shutdown().await;
}

#[tokio::test]
async fn many_concurrent_sends_share_one_connection() {
    let ((a, _a_events), (b, mut b_events)) = pair(46107).await;
    let receiver = tokio::spawn(async move {
        let mut seen = 0;
        while seen < 2000 {
            next_message(&mut b_events).await;
            seen += 1;
        }
        (b, seen)
    });
    let mut tasks = Vec::new();
    for t in 0..8 {
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..250 {
                a.send_to_all(format!("{t}-{i}"), SendOptions::USE_ACK)
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (b, seen) = receiver.await.unwrap();
    assert_eq!(seen, 2000);
    // One channel connection for all 2 000 sends; the other one b may have accepted is
    // a's ring connection (in a view of two each watches the other).
    let accepted = b.stats().connections_accepted;
    assert!((1..=2).contains(&accepted), "{accepted} connections");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn other_domains_are_ignored_by_default() {
    let (a, mut a_events) = Node::start(config(46108)).await.unwrap();
    let mut other = config(46108);
    other.domain = Bytes::from_static(b"someone-else");
    let (b, _b_events) = Node::start(other).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(a.members().is_empty());
    assert!(a.stats().membership.foreign_domain > 0);
    // Each formed a group of its own; nothing else happened.
    while let Ok(Some(event)) = timeout(Duration::from_millis(50), a_events.recv()).await {
        match event {
            Event::ViewChanged(view) => assert_eq!(view.members.len(), 1),
            other => panic!("no event expected, got {other:?}"),
        }
    }
    assert_eq!(a.view().map(|v| v.members.len()), Some(1));
    assert_eq!(b.view().map(|v| v.members.len()), Some(1));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_tribes_member_gets_one_frame_at_a_time() {
    let (a, _events) = Node::start(config(46109)).await.unwrap();
    // A receiver that, like Tribes, must never see a second frame before it answered the
    // first: it waits a little after each frame and checks nothing else arrived.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let decoder = cohort::proto::wire::tribes::frame::FrameDecoder::new(1 << 20);
        let mut buf = bytes::BytesMut::new();
        let (mut frames, mut overlaps) = (0, 0);
        while frames < 20 {
            let Some(_body) = decoder.decode(&mut buf).unwrap() else {
                if s.read_buf(&mut buf).await.unwrap() == 0 {
                    break;
                }
                continue;
            };
            frames += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
            let mut probe = [0u8; 1];
            if !buf.is_empty() || s.try_read(&mut probe).is_ok_and(|n| n > 0) {
                overlaps += 1;
                break;
            }
            s.write_all(&cohort::proto::wire::tribes::frame::ACK_FRAME)
                .await
                .unwrap();
        }
        (frames, overlaps)
    });
    let mut tribes = a.local_member().clone();
    tribes.id = MemberId([5; 16]);
    tribes.addr = addr;
    tribes.is_cohort = false;
    let mut sends = Vec::new();
    for i in 0..20 {
        let (a, tribes) = (a.clone(), tribes.clone());
        sends.push(tokio::spawn(async move {
            a.send(&[tribes], format!("m{i}"), SendOptions::USE_ACK)
                .await
        }));
    }
    for s in sends {
        s.await.unwrap().unwrap();
    }
    assert_eq!(server.await.unwrap(), (20, 0));
    a.shutdown().await;
}

#[tokio::test]
async fn default_options_ask_for_an_ack_and_the_control_flag_is_not_the_applications() {
    assert!(SendOptions::default().wants_ack());
    let ((a, _a_events), (b, mut b_events)) = pair(46110).await;
    // An application cannot push frames into the receiver's group layer: the flag is
    // cleared and the message reaches the application like any other.
    let report = a
        .send_to_all(
            "not a group message",
            SendOptions::default().with(SendOptions::COHORT_CONTROL),
        )
        .await
        .unwrap();
    assert_eq!(report.acked.len(), 1);
    let m = next_message(&mut b_events).await;
    assert_eq!(&m.data[..], b"not a group message");
    assert!(!m.options.contains(SendOptions::COHORT_CONTROL));
    assert!(m.options.wants_ack());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_node() {
    let (a, events) = Node::start(config(46111)).await.unwrap();
    let addr = a.local_member().addr;
    let clone = a.clone();
    drop(a);
    // A clone keeps it running.
    assert!(TcpStream::connect(addr).await.is_ok());
    drop(clone);
    drop(events);
    // The receiver stops listening once its task is aborted.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        match TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            _ if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("the receiver still listens after the last drop: {other:?}"),
        }
    }
}
