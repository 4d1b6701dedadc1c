//! The ring connection (Coherence's TcpRing, JGroups' FD_SOCK): a TCP connection to the
//! member we watch. Nothing is sent on it; when the watched process dies its kernel closes
//! the connection at once and refuses the reconnect, so a crash is seen within a round
//! trip, without waiting for heartbeats to go missing. A hung process keeps its connections open (that case is the
//! heartbeats'), and a cut link closes nothing (also theirs).

use std::io::ErrorKind;
use std::time::Duration;

use std::net::SocketAddr;

use cohort_proto::group::{GroupMember, HostCheck};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::debug;

use crate::messages::GroupInput;

/// How long a connection attempt may take before it is retried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between attempts that failed without proving the process dead.
const RETRY: Duration = Duration::from_millis(500);

/// Watches `member` until its process is found dead (reported to the group task) or the
/// task is aborted (the watched member changed).
///
/// Only a refused connection proves the process gone. A connection that closes is not
/// proof by itself (the receiver may have closed an idle connection, or a middlebox reset
/// it): the watcher reconnects at once, and reports the death only if that is refused.
pub(super) async fn watch(member: GroupMember, report: mpsc::UnboundedSender<GroupInput>) {
    let mut pause = false;
    loop {
        if pause {
            tokio::time::sleep(RETRY).await;
        }
        pause = true;
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(member.addr)).await {
            Ok(Ok(mut stream)) => {
                let mut buf = [0u8; 64];
                loop {
                    match stream.read(&mut buf).await {
                        // The receiver never writes unprompted; any bytes are ignored.
                        Ok(n) if n > 0 => continue,
                        Ok(_) => {
                            debug!(member = %member.addr, "ring connection closed: checking");
                            break;
                        }
                        Err(e) => {
                            debug!(member = %member.addr, error = %e, "ring connection failed: checking");
                            break;
                        }
                    }
                }
                // Reconnect at once: a dead process refuses.
                pause = false;
            }
            // Nothing listens there: the process is gone.
            Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => {
                let _ = report.send(GroupInput::RingClosed { id: member.id });
                return;
            }
            // Unreachable or slow: not proof of anything; heartbeats decide.
            Ok(Err(e)) => debug!(member = %member.addr, error = %e, "ring connect failed"),
            Err(_) => debug!(member = %member.addr, "ring connect timed out"),
        }
    }
}

/// How long a host check waits for the host to answer.
const HOST_CHECK_TIMEOUT: Duration = Duration::from_millis(500);

/// Reaches a suspect's host with a TCP connection attempt to its address (no ICMP, which
/// needs privileges): accepted means the process is there (perhaps hung), refused means the
/// host is up but the process is gone, no answer means the host is down or cut off.
pub(super) async fn check_host(addr: SocketAddr) -> HostCheck {
    match tokio::time::timeout(HOST_CHECK_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(_)) => HostCheck::Alive,
        Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => HostCheck::ProcessGone,
        Ok(Err(_)) | Err(_) => HostCheck::Unreachable,
    }
}
