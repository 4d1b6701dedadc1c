//! The connection mesh between voters (ZooKeeper's `QuorumCnxManager`).
//!
//! Between two voters exactly one TCP connection is kept: the one the higher sid
//! initiated. A voter that wants to reach a higher sid connects, sends its header and
//! closes; the higher one then connects back (that is what ZooKeeper does, and it is how
//! a ZooKeeper server learns that we want to talk). Both directions of the kept connection
//! carry int32-length-framed notifications.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cohort_proto::election::Sid;
use cohort_proto::wire::zookeeper::{ConnectionHeader, FrameDecoder, Notification};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// How long a peer may take to send its connection header or to accept our connection.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the connection tasks tell the driver.
pub(super) enum MeshEvent {
    /// A peer connected to us and sent its header.
    Accepted {
        sid: Sid,
        stream: TcpStream,
        leftover: BytesMut,
    },
    /// Our connection to a lower sid is up (header sent): keep it.
    Connected { sid: Sid, stream: TcpStream },
    /// We told a higher sid that we want a connection; it should connect back.
    AskedBack { sid: Sid },
    /// Connecting failed.
    ConnectFailed { sid: Sid },
    /// A notification arrived on a kept connection.
    Received {
        sid: Sid,
        notification: Notification,
    },
    /// A kept connection ended.
    Closed { sid: Sid, generation: u64 },
}

/// Reads a peer's connection header (and whatever came after it) from a new connection.
pub(super) async fn accept(
    mut stream: TcpStream,
    events: mpsc::UnboundedSender<MeshEvent>,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let read = async {
        let mut buf = BytesMut::with_capacity(128);
        loop {
            match ConnectionHeader::decode_prefix(&buf) {
                Ok(Some((header, used))) => {
                    let _ = buf.split_to(used);
                    return Ok((header, buf));
                }
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            if stream.read_buf(&mut buf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    };
    let (header, leftover) = tokio::time::timeout(HANDSHAKE_TIMEOUT, read)
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    let _ = events.send(MeshEvent::Accepted {
        sid: header.sid,
        stream,
        leftover,
    });
    Ok(())
}

/// Connects to `peer`, sends our header; keeps the connection if the peer's sid is lower,
/// otherwise closes it so the peer connects back.
pub(super) async fn initiate(
    me: Sid,
    my_addr: SocketAddr,
    peer: Sid,
    addr: SocketAddr,
    events: mpsc::UnboundedSender<MeshEvent>,
) {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut header = BytesMut::new();
        ConnectionHeader {
            sid: me,
            election_addr: my_addr.to_string(),
        }
        .encode(&mut header);
        stream.write_all(&header).await?;
        io::Result::Ok(stream)
    };
    let event = match tokio::time::timeout(HANDSHAKE_TIMEOUT, attempt).await {
        Ok(Ok(stream)) if peer < me => MeshEvent::Connected { sid: peer, stream },
        Ok(Ok(_closed)) => MeshEvent::AskedBack { sid: peer },
        _ => MeshEvent::ConnectFailed { sid: peer },
    };
    let _ = events.send(event);
}

/// Makes the kernel end the connection once sent data has gone unacknowledged for
/// `timeout` (`TCP_USER_TIMEOUT`). Otherwise a connection across a partition stays up and,
/// after the heal, carries nothing until TCP's retransmission back-off (doubling up to two
/// minutes) next fires: a voter cut off for 30 s then waited 26 s more for its ensemble.
/// Ended instead, the connection is re-dialled every few seconds and is back soon after
/// the heal. A hung peer's kernel still acknowledges, so this never replaces the silence
/// timeout.
fn limit_unacknowledged(stream: &TcpStream, timeout: Duration) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_user_timeout(Some(timeout)) {
        tracing::debug!(error = %e, "cannot set TCP_USER_TIMEOUT on an election connection");
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = (stream, timeout);
}

/// Runs a kept connection: frames from `outgoing` are written, notifications read are
/// reported; the kernel ends it when what we send goes unacknowledged for
/// `unacknowledged_timeout`. Returns the sender for outgoing frames; dropping it closes
/// the connection.
pub(super) fn run_connection(
    sid: Sid,
    generation: u64,
    stream: TcpStream,
    leftover: BytesMut,
    unacknowledged_timeout: Duration,
    events: mpsc::UnboundedSender<MeshEvent>,
) -> mpsc::UnboundedSender<Bytes> {
    limit_unacknowledged(&stream, unacknowledged_timeout);
    let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
    let (mut read, mut write) = stream.into_split();
    tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if write.write_all(&frame).await.is_err() {
                break;
            }
        }
        let _ = write.shutdown().await;
    });
    tokio::spawn(async move {
        let mut decoder = FrameDecoder::new();
        decoder.extend(&leftover);
        let mut buf = vec![0u8; 16 * 1024];
        'conn: loop {
            loop {
                match decoder.next_frame() {
                    Ok(Some(body)) => match Notification::decode(&body) {
                        Ok(notification) => {
                            let _ = events.send(MeshEvent::Received { sid, notification });
                        }
                        Err(e) => {
                            tracing::debug!(sid, error = %e, "undecodable election notification dropped");
                        }
                    },
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(sid, error = %e, "bad election frame; closing");
                        break 'conn;
                    }
                }
            }
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => decoder.extend(&buf[..n]),
            }
        }
        let _ = events.send(MeshEvent::Closed { sid, generation });
    });
    tx
}
