//! Configuration errors come back as typed errors that name what is wrong, and nothing is
//! left running. Ports: picked by the kernel.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use cohort::election::{Election, ElectionOptions, ElectionStartError};

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .unwrap()
}

#[tokio::test]
async fn election_start_names_its_configuration_error() {
    let addr = free_port();
    match Election::start(ElectionOptions::new(2, [(1, addr)])).await {
        Err(ElectionStartError::NotAVoter(2)) => {}
        other => panic!("expected NotAVoter(2), got {other:?}"),
    }

    let mut zero = ElectionOptions::new(1, [(1, addr)]);
    zero.timing.leader_silence_timeout = Duration::ZERO;
    match Election::start(zero).await {
        Err(ElectionStartError::ZeroInterval("leader_silence_timeout")) => {}
        other => panic!("expected ZeroInterval, got {other:?}"),
    }

    let mut inverted = ElectionOptions::new(1, [(1, addr)]);
    inverted.timing.min_notification_interval = Duration::from_secs(2);
    inverted.timing.max_notification_interval = Duration::from_secs(1);
    match Election::start(inverted).await {
        Err(ElectionStartError::NotificationIntervals { min, max }) => {
            assert_eq!((min, max), (Duration::from_secs(2), Duration::from_secs(1)));
        }
        other => panic!("expected NotificationIntervals, got {other:?}"),
    }

    // Refused before binding: the port is still free.
    assert!(std::net::TcpListener::bind(addr).is_ok());
}

#[tokio::test]
async fn election_start_reports_a_taken_port_with_its_address() {
    let taken = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = taken.local_addr().unwrap();
    match Election::start(ElectionOptions::new(1, [(1, addr)])).await {
        Err(e @ ElectionStartError::Bind { addr: a, .. }) => {
            assert_eq!(a, addr);
            assert!(e.to_string().contains(&addr.to_string()), "{e}");
        }
        other => panic!("expected Bind, got {other:?}"),
    }
}

#[test]
fn start_errors_can_cross_threads() {
    fn send_sync<T: Send + Sync + std::error::Error + 'static>() {}
    send_sync::<ElectionStartError>();
    send_sync::<cohort::StartError>();
    send_sync::<cohort::SendError>();
    send_sync::<cohort::reliable::ReliableStartError>();
    send_sync::<cohort::reliable::ReliableSendError>();
}
