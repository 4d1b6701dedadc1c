//! The connection mesh between voters (ZooKeeper's `QuorumCnxManager`).
//!
//! Between two voters exactly one TCP connection is kept: the one the higher sid
//! initiated. A voter that wants to reach a higher sid connects, sends its header and
//! closes; the higher one then connects back (that is what ZooKeeper does, and it is how
//! a ZooKeeper server learns that we want to talk). Both directions of the kept connection
//! carry int32-length-framed notifications.
//!
//! With a cluster key ([`ElectionOptions::keyring`](super::ElectionOptions::keyring)) every
//! byte of every connection, the header included, is sealed (`crate::security`), both
//! directions bound to the voter that accepted the connection: only key holders can claim
//! a sid, and a connection recorded on its way to one voter does not open at another.
//! Keyed voters then talk only to keyed voters (not to ZooKeeper servers).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cohort_proto::MemberId;
use cohort_proto::election::Sid;
use cohort_proto::security::Purpose;
use cohort_proto::wire::zookeeper::{ConnectionHeader, FrameDecoder, Notification};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::security::{Security, StreamOpen, StreamSeal};

/// What a keyed connection is bound to: the sid of the voter that accepted it.
fn binding(sid: Sid) -> MemberId {
    let mut id = *b"cohort-vote\0\0\0\0\0";
    id[8..].copy_from_slice(&sid.to_be_bytes());
    MemberId(id)
}

/// The sealing of one connection's two directions (pass-through without a key).
pub(super) struct Sealing {
    pub(super) seal: StreamSeal,
    pub(super) open: StreamOpen,
}

impl Sealing {
    /// For a connection accepted by (or made to) the voter `acceptor`.
    pub(super) fn new(security: Option<&Security>, acceptor: Sid) -> Self {
        Self {
            seal: StreamSeal::new(security, Purpose::Election).bind(binding(acceptor)),
            open: StreamOpen::new(security, Purpose::Election).bind(binding(acceptor)),
        }
    }

    /// `plain` as it goes on the wire.
    fn seal(&mut self, plain: &[u8]) -> io::Result<Bytes> {
        if self.seal.is_plain() {
            return Ok(Bytes::copy_from_slice(plain));
        }
        let mut out = BytesMut::new();
        self.seal
            .seal_into(plain, &mut out)
            .map_err(io::Error::other)?;
        Ok(out.freeze())
    }

    /// Reads from `stream` and appends what it carried, opened, to `plain`. `Ok(false)`
    /// at the end of the stream; an error for refused (unsealed, forged) bytes.
    async fn read(
        &mut self,
        stream: &mut (impl AsyncReadExt + Unpin),
        plain: &mut BytesMut,
    ) -> io::Result<bool> {
        let raw = self.open.read_buffer(plain);
        raw.reserve(16 * 1024);
        if stream.read_buf(raw).await? == 0 {
            return Ok(false);
        }
        self.open
            .open(plain)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(true)
    }
}

/// How long a peer may take to send its connection header or to accept our connection.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the connection tasks tell the driver.
pub(super) enum MeshEvent {
    /// A peer connected to us (from `from`) and sent its header.
    Accepted {
        sid: Sid,
        from: SocketAddr,
        stream: TcpStream,
        leftover: BytesMut,
        sealing: Sealing,
    },
    /// Our connection to a lower sid is up (header sent): keep it.
    Connected {
        sid: Sid,
        stream: TcpStream,
        sealing: Sealing,
    },
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
    from: SocketAddr,
    me: Sid,
    security: Option<Security>,
    events: mpsc::UnboundedSender<MeshEvent>,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut sealing = Sealing::new(security.as_ref(), me);
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
            if !sealing.read(&mut stream, &mut buf).await? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    };
    let (header, leftover) = tokio::time::timeout(HANDSHAKE_TIMEOUT, read)
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    let _ = events.send(MeshEvent::Accepted {
        sid: header.sid,
        from,
        stream,
        leftover,
        sealing,
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
    security: Option<Security>,
    events: mpsc::UnboundedSender<MeshEvent>,
) {
    let attempt = async {
        let mut stream = connect_from(my_addr, addr).await?;
        stream.set_nodelay(true)?;
        let mut header = BytesMut::new();
        ConnectionHeader {
            sid: me,
            election_addr: my_addr.to_string(),
        }
        .encode(&mut header);
        // The peer accepts: both directions are bound to it.
        let mut sealing = Sealing::new(security.as_ref(), peer);
        stream.write_all(&sealing.seal(&header)?).await?;
        io::Result::Ok((stream, sealing))
    };
    let event = match tokio::time::timeout(HANDSHAKE_TIMEOUT, attempt).await {
        Ok(Ok((stream, sealing))) if peer < me => MeshEvent::Connected {
            sid: peer,
            stream,
            sealing,
        },
        Ok(Ok(_closed)) => MeshEvent::AskedBack { sid: peer },
        _ => MeshEvent::ConnectFailed { sid: peer },
    };
    let _ = events.send(event);
}

/// Connects to `addr` from our own election address's IP (any port), so that the peer,
/// which checks that a voter connects from the address it is configured with, sees the
/// right one on a host with several addresses. From any address if ours is unspecified.
async fn connect_from(my_addr: SocketAddr, addr: SocketAddr) -> io::Result<TcpStream> {
    if my_addr.ip().is_unspecified() || my_addr.is_ipv4() != addr.is_ipv4() {
        return TcpStream::connect(addr).await;
    }
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(my_addr.ip(), 0))?;
    socket.connect(addr).await
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
    sealing: Sealing,
    unacknowledged_timeout: Duration,
    events: mpsc::UnboundedSender<MeshEvent>,
) -> mpsc::UnboundedSender<Bytes> {
    limit_unacknowledged(&stream, unacknowledged_timeout);
    let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
    let (mut read, mut write) = stream.into_split();
    let Sealing { seal, open } = sealing;
    let mut sealing_out = Sealing {
        seal,
        open: StreamOpen::new(None, Purpose::Election),
    };
    let mut sealing_in = Sealing {
        seal: StreamSeal::new(None, Purpose::Election),
        open,
    };
    tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            let Ok(wire) = sealing_out.seal(&frame) else {
                break;
            };
            if write.write_all(&wire).await.is_err() {
                break;
            }
        }
        let _ = write.shutdown().await;
    });
    tokio::spawn(async move {
        let mut decoder = FrameDecoder::new();
        decoder.extend(&leftover);
        let mut plain = BytesMut::with_capacity(16 * 1024);
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
            match sealing_in.read(&mut read, &mut plain).await {
                Ok(true) => {
                    decoder.extend(&plain);
                    plain.clear();
                }
                Ok(false) => break,
                Err(e) => {
                    tracing::debug!(sid, error = %e, "election connection refused; closing");
                    break;
                }
            }
        }
        let _ = events.send(MeshEvent::Closed { sid, generation });
    });
    tx
}
