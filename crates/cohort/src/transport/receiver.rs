//! The TCP receiver (Tribes `NioReceiver`): accepts connections from members, splits each
//! byte stream into frames, delivers messages and writes the replies back in order.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use cohort_proto::Member;
use cohort_proto::security::Purpose;
use cohort_proto::wire::tribes::frame::{FRAME_OVERHEAD, FrameDecoder, Reply};
use cohort_proto::wire::tribes::{ChannelData, ChannelDataLimits, SendOptions};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::event::{Event, Message};
use crate::messages::GroupInput;
use crate::security::{StreamOpen, StreamSeal};
use crate::shared::{Counters, Shared};
use crate::transport::limits::{Conn, InboundLimits, Slots};

/// Replies that may wait for the writer, per connection, before the reader pauses.
const REPLY_QUEUE: usize = 4096;

/// A reply the writer must send, in frame order.
enum PendingReply {
    /// Known at once (ACK on receipt).
    Ready(Reply),
    /// Known when the application is done with the message (synchronized ACK).
    Waiting(oneshot::Receiver<Reply>),
}

/// Accepts connections until the task is aborted; aborting it closes every connection.
pub(crate) async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    events: mpsc::Sender<Event>,
    max_message: usize,
    busy_poll: Duration,
    inbound: InboundLimits,
) {
    let mut connections = JoinSet::new();
    let mut slots = Slots::new(inbound, shared.counters.inbound.clone());
    let limits = ChannelDataLimits {
        max_message,
        ..ChannelDataLimits::default()
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Some(conn) = slots.admit() else {
                        debug!(%peer, "connection refused: at the cap, every connection busy");
                        continue;
                    };
                    Counters::bump(&shared.counters.connections_accepted);
                    let _ = stream.set_nodelay(true);
                    let proven = conn.proven_flag();
                    let handle = connections.spawn(serve(
                        stream,
                        peer,
                        shared.clone(),
                        events.clone(),
                        limits,
                        busy_poll,
                        conn,
                    ));
                    slots.insert(proven, handle);
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(ended) = connections.join_next_with_id(), if !connections.is_empty() => {
                match ended {
                    Ok((id, ())) => slots.remove(id),
                    Err(e) => slots.remove(e.id()),
                }
            }
        }
    }
}

async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    events: mpsc::Sender<Event>,
    limits: ChannelDataLimits,
    busy_poll: Duration,
    mut conn: Conn,
) {
    let (mut reader, writer) = stream.into_split();
    let (replies_tx, replies_rx) = mpsc::channel(REPLY_QUEUE);
    let security = shared.security.as_ref();
    // With a key, the connection is bound to us (as the sender knows us): a connection
    // recorded on its way to another member does not open here.
    let me = *shared.local_id.borrow();
    let seal = StreamSeal::new(security, Purpose::ChannelReply).bind(me);
    let mut opener = StreamOpen::new(security, Purpose::ChannelData).bind(me);
    let writer = tokio::spawn(write_replies(writer, replies_rx, seal));
    let decoder = FrameDecoder::new(
        limits.max_message + limits.max_sender + limits.max_unique_id + FRAME_OVERHEAD,
    );
    let mut buf = BytesMut::with_capacity(64 * 1024);
    'read: loop {
        // Without a key the bytes land in `buf` at once; with one, sealed records are
        // read into the opener and their plaintext moved to `buf` once each tag checks.
        let raw = opener.read_buffer(&mut buf);
        if raw.capacity() - raw.len() < 4096 {
            raw.reserve(64 * 1024);
        }
        match read_polling(&mut reader, raw, busy_poll).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                debug!(%peer, error = %e, "receiver connection failed");
                break;
            }
        }
        if let Err(e) = opener.open(&mut buf) {
            warn!(%peer, error = %e, "closing connection: refused cohort traffic");
            break;
        }
        loop {
            let body = match decoder.decode(&mut buf) {
                Ok(Some(body)) => body,
                Ok(None) => break,
                Err(e) => {
                    Counters::bump(&shared.counters.malformed_frames);
                    warn!(%peer, error = %e, "closing connection: not Tribes framing");
                    break 'read;
                }
            };
            let data = match ChannelData::decode(&body, &limits) {
                Ok(data) => {
                    conn.proven();
                    data
                }
                Err(e) => {
                    Counters::bump(&shared.counters.malformed_frames);
                    warn!(%peer, error = %e, "closing connection: malformed message");
                    break 'read;
                }
            };
            let from = match Member::from_record(&data.sender) {
                Ok(m) => m,
                Err(e) => {
                    Counters::bump(&shared.counters.malformed_frames);
                    warn!(%peer, error = %e, "closing connection: message from an impossible member");
                    break 'read;
                }
            };
            if data.options.contains(SendOptions::COHORT_CONTROL) {
                // cohort's group protocol: acknowledged on receipt, handled by the group
                // task, never shown to the application.
                if data.options.wants_ack()
                    && replies_tx
                        .send(PendingReply::Ready(Reply::Ack))
                        .await
                        .is_err()
                {
                    break 'read;
                }
                let _ = shared.group_inbox.send(GroupInput::Message {
                    from,
                    data: data.message,
                });
                continue;
            }
            Counters::bump(&shared.counters.messages_received);
            // Tribes' order: an ordinary ACK is written when the frame is read, before
            // delivery; a synchronized one after the application handled the message.
            let mut reply = None;
            if data.options.wants_sync_ack() {
                let (tx, rx) = oneshot::channel();
                reply = Some(tx);
                if replies_tx.send(PendingReply::Waiting(rx)).await.is_err() {
                    break 'read;
                }
            } else if data.options.wants_ack()
                && replies_tx
                    .send(PendingReply::Ready(Reply::Ack))
                    .await
                    .is_err()
            {
                break 'read;
            }
            let message = Message::new(from, data.message, data.options, data.timestamp_ms, reply);
            // If the application dropped its event stream, the message is dropped here
            // and, being dropped, acknowledged.
            let _ = events.send(Event::Message(message)).await;
        }
        // What is left is unfinished: a frame's beginning, a record not yet complete.
        if !conn.hold(buf.len() + opener.buffered()) {
            warn!(%peer, "closing connection: it holds more unfinished bytes than allowed");
            break;
        }
    }
    drop(replies_tx);
    // Let the replies already owed go out before the connection closes.
    let _ = writer.await;
}

/// Reads, first polling the socket for up to `busy_poll` before sleeping (see
/// [`Config::busy_poll`](crate::Config::busy_poll)).
async fn read_polling(
    reader: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    busy_poll: Duration,
) -> std::io::Result<usize> {
    if !busy_poll.is_zero() {
        let start = std::time::Instant::now();
        loop {
            match reader.try_read_buf(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if start.elapsed() >= busy_poll {
                break;
            }
            std::thread::yield_now();
            tokio::task::yield_now().await;
        }
    }
    reader.read_buf(buf).await
}

async fn write_replies(
    mut writer: OwnedWriteHalf,
    mut replies: mpsc::Receiver<PendingReply>,
    mut seal: StreamSeal,
) {
    let mut out = BytesMut::with_capacity(4096);
    let mut sealed = BytesMut::new();
    let mut held = None;
    loop {
        let first = match held.take() {
            Some(reply) => reply,
            None => match replies.recv().await {
                Some(reply) => reply,
                None => break,
            },
        };
        out.put_slice(resolve(first).await.frame());
        // Batch every reply already known into one write; stop at the first one still
        // waiting for the application, so the ones before it are not held back.
        while let Ok(next) = replies.try_recv() {
            match next {
                PendingReply::Ready(r) => out.put_slice(r.frame()),
                PendingReply::Waiting(mut rx) => match rx.try_recv() {
                    Ok(r) => out.put_slice(r.frame()),
                    Err(oneshot::error::TryRecvError::Closed) => out.put_slice(Reply::Ack.frame()),
                    Err(oneshot::error::TryRecvError::Empty) => {
                        held = Some(PendingReply::Waiting(rx));
                        break;
                    }
                },
            }
        }
        let bytes = if seal.is_plain() {
            &out
        } else {
            sealed.clear();
            if seal.seal_into(&out, &mut sealed).is_err() {
                return;
            }
            &sealed
        };
        if let Err(e) = writer.write_all(bytes).await {
            debug!(error = %e, "cannot write replies");
            return;
        }
        out.clear();
    }
    let _ = writer.shutdown().await;
}

async fn resolve(reply: PendingReply) -> Reply {
    match reply {
        PendingReply::Ready(r) => r,
        // A message is acknowledged when dropped, so a closed channel means "accepted".
        PendingReply::Waiting(rx) => rx.await.unwrap_or(Reply::Ack),
    }
}
