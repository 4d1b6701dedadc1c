//! The parallel sender (Tribes `PooledParallelSender`): one persistent connection per
//! member, each driven by its own task.
//!
//! A connection task writes whole frames from its queue (so frames never interleave) and
//! pairs the replies with them through an [`AckQueue`]. To a cohort node it does not wait
//! for one ACK before writing the next frame: a cohort receiver answers in frame order, so
//! several frames can be in flight at once (up to `max_in_flight`), which is what lets
//! many concurrent sends share one connection at full speed. To a Tomcat Tribes node it
//! sends one frame at a time, as Tribes' own sender does: Tribes' receiver may deliver and
//! answer pipelined frames out of order. A late ACK, a broken connection or a reply that
//! makes no sense closes the connection and fails every frame in flight on it; the next
//! frame reconnects.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use cohort_proto::channel::{AckQueue, FailureReason};
use cohort_proto::security::Purpose;
use cohort_proto::wire::tribes::frame::{FrameDecoder, Reply};
use cohort_proto::{Member, MemberId};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until, timeout};
use tracing::debug;

use crate::security::{Security, StreamOpen, StreamSeal};

/// Frames queued per member before `send` waits.
const QUEUE_PER_MEMBER: usize = 1024;
/// Unwritten bytes per connection before the task stops taking new frames.
const WRITE_HIGH_WATER: usize = 4 * 1024 * 1024;
/// Replies are 21-byte frames; anything much longer is not a reply.
const MAX_REPLY_BODY: usize = 64;

/// The outcome of one frame to one member.
pub(crate) type FrameResult = Result<(), FailureReason>;

/// One frame for one member.
pub(crate) struct Outgoing {
    pub(crate) frame: Bytes,
    pub(crate) wants_ack: bool,
    pub(crate) done: oneshot::Sender<FrameResult>,
}

/// Settings shared by every connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerSettings {
    pub(crate) ack_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_in_flight: usize,
    pub(crate) busy_poll: Duration,
}

/// The connections of one node, by member.
pub(crate) struct Peers {
    queues: Mutex<HashMap<MemberId, mpsc::Sender<Outgoing>>>,
    settings: PeerSettings,
    security: Option<Security>,
}

impl Peers {
    pub(crate) fn new(settings: PeerSettings, security: Option<Security>) -> Self {
        Self {
            queues: Mutex::new(HashMap::new()),
            settings,
            security,
        }
    }

    /// Sends one frame to `member` and waits for its outcome.
    pub(crate) async fn submit(
        &self,
        member: &Member,
        frame: Bytes,
        wants_ack: bool,
    ) -> FrameResult {
        let queue = self.queue(member);
        let (done, outcome) = oneshot::channel();
        let lost = || FailureReason::ConnectionLost("connection closed".into());
        queue
            .send(Outgoing {
                frame,
                wants_ack,
                done,
            })
            .await
            .map_err(|_| lost())?;
        outcome.await.unwrap_or_else(|_| Err(lost()))
    }

    /// Forgets a member: its connection closes once the frames in flight are answered.
    pub(crate) fn remove(&self, id: &MemberId) {
        self.queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Forgets every member.
    pub(crate) fn clear(&self) {
        self.queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn queue(&self, member: &Member) -> mpsc::Sender<Outgoing> {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(queue) = queues.get(&member.id)
            && !queue.is_closed()
        {
            return queue.clone();
        }
        let (tx, rx) = mpsc::channel(QUEUE_PER_MEMBER);
        let mut settings = self.settings;
        if !member.is_cohort {
            // A Tribes receiver keeps a connection's order, and pairs ACKs with frames
            // correctly, only with one frame in flight (see `COHORT_COMMAND`).
            settings.max_in_flight = 1;
        }
        tokio::spawn(run_peer(
            member.addr,
            member.id,
            rx,
            settings,
            self.security.clone(),
        ));
        queues.insert(member.id, tx.clone());
        tx
    }
}

/// Connects when there is something to send, keeps the connection while it works,
/// reconnects after a failure, and ends when the member is forgotten.
async fn run_peer(
    addr: SocketAddr,
    id: MemberId,
    mut queue: mpsc::Receiver<Outgoing>,
    settings: PeerSettings,
    security: Option<Security>,
) {
    loop {
        let Some(first) = queue.recv().await else {
            return;
        };
        let stream = match timeout(settings.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                debug!(%addr, error = %e, "connect failed");
                fail_queued(first, &mut queue, FailureReason::Connect(e.to_string()));
                continue;
            }
            Err(_) => {
                debug!(%addr, "connect timed out");
                fail_queued(
                    first,
                    &mut queue,
                    FailureReason::Connect("timed out".into()),
                );
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let mut conn = Connection::new(stream, settings, security.as_ref(), id);
        conn.enqueue(first);
        match conn.run(&mut queue).await {
            Ok(()) => return,
            Err(reason) => {
                debug!(%addr, %reason, "connection closed");
                conn.fail_all(&reason);
                conn.abort();
            }
        }
    }
}

/// Fails `first` and every frame already queued behind it: they would hit the same fault.
fn fail_queued(first: Outgoing, queue: &mut mpsc::Receiver<Outgoing>, reason: FailureReason) {
    let _ = first.done.send(Err(reason.clone()));
    while let Ok(next) = queue.try_recv() {
        let _ = next.done.send(Err(reason.clone()));
    }
}

struct Connection {
    stream: TcpStream,
    settings: PeerSettings,
    acks: AckQueue<oneshot::Sender<FrameResult>>,
    /// Frames sent without ACK: done once their bytes left the write buffer.
    unacked_writes: Vec<oneshot::Sender<FrameResult>>,
    write_buf: BytesMut,
    /// With a key: frames taken but not sealed yet (sealed together into `write_buf` just
    /// before the next write, so a burst of frames shares records).
    pending: BytesMut,
    read_buf: BytesMut,
    decoder: FrameDecoder,
    seal: StreamSeal,
    open: StreamOpen,
}

impl Connection {
    /// A connection to member `to`: with a key, both directions are bound to it.
    fn new(
        stream: TcpStream,
        settings: PeerSettings,
        security: Option<&Security>,
        to: MemberId,
    ) -> Self {
        Self {
            stream,
            settings,
            acks: AckQueue::new(),
            unacked_writes: Vec::new(),
            write_buf: BytesMut::with_capacity(64 * 1024),
            pending: BytesMut::new(),
            read_buf: BytesMut::with_capacity(4096),
            decoder: FrameDecoder::new(MAX_REPLY_BODY),
            seal: StreamSeal::new(security, Purpose::ChannelData).bind(to),
            open: StreamOpen::new(security, Purpose::ChannelReply).bind(to),
        }
    }

    fn can_take(&self) -> bool {
        self.acks.len() < self.settings.max_in_flight
            && self.write_buf.len() + self.pending.len() < WRITE_HIGH_WATER
    }

    fn enqueue(&mut self, out: Outgoing) {
        // Its sender gave up on it (a group message of an incarnation that rejoined since):
        // writing it now would deliver something no longer meant.
        if out.done.is_closed() {
            return;
        }
        if self.seal.is_plain() {
            self.write_buf.extend_from_slice(&out.frame);
        } else {
            self.pending.extend_from_slice(&out.frame);
        }
        if out.wants_ack {
            let deadline = Instant::now() + self.settings.ack_timeout;
            self.acks.push(out.done, deadline.into_std());
        } else {
            self.unacked_writes.push(out.done);
        }
    }

    /// Runs until the queue is closed and everything is answered (`Ok`), or the
    /// connection fails (`Err`, with the reason to give every frame in flight).
    async fn run(&mut self, queue: &mut mpsc::Receiver<Outgoing>) -> Result<(), FailureReason> {
        let mut queue_open = true;
        loop {
            if !queue_open && self.acks.is_empty() && self.write_buf.is_empty() {
                return Ok(());
            }
            if !self.settings.busy_poll.is_zero()
                && !self.acks.is_empty()
                && self.write_buf.is_empty()
            {
                self.poll_for_replies(queue).await?;
            }
            let deadline = self.acks.poll_timeout().map(Instant::from_std);
            tokio::select! {
                biased;
                ready = self.stream.readable() => {
                    ready.map_err(lost)?;
                    self.read_replies()?;
                }
                ready = self.stream.writable(), if !self.write_buf.is_empty() => {
                    ready.map_err(lost)?;
                    self.write_some()?;
                }
                next = queue.recv(), if queue_open && self.can_take() => match next {
                    Some(out) => {
                        self.enqueue(out);
                        while self.can_take() {
                            match queue.try_recv() {
                                Ok(out) => self.enqueue(out),
                                Err(_) => break,
                            }
                        }
                        // Write at once rather than after another trip through select.
                        self.write_some()?;
                    }
                    None => queue_open = false,
                },
                () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    if self.acks.is_overdue(Instant::now().into_std()) {
                        return Err(FailureReason::AckTimeout);
                    }
                }
            }
        }
    }

    /// Polls for replies for up to `busy_poll` before the task sleeps (see
    /// [`Config::busy_poll`](crate::Config::busy_poll)); stops early when a reply came or a
    /// new frame waits to be sent.
    async fn poll_for_replies(
        &mut self,
        queue: &mpsc::Receiver<Outgoing>,
    ) -> Result<(), FailureReason> {
        let start = std::time::Instant::now();
        let waiting = self.acks.len();
        loop {
            self.read_replies()?;
            if self.acks.len() != waiting
                || !queue.is_empty()
                || start.elapsed() >= self.settings.busy_poll
            {
                return Ok(());
            }
            // Let the other process run on a shared CPU, and other tasks on this runtime.
            std::thread::yield_now();
            tokio::task::yield_now().await;
        }
    }

    fn write_some(&mut self) -> Result<(), FailureReason> {
        if !self.pending.is_empty() {
            self.seal
                .seal_into(&self.pending, &mut self.write_buf)
                .map_err(|e| FailureReason::Protocol(e.to_string()))?;
            self.pending.clear();
        }
        while !self.write_buf.is_empty() {
            match self.stream.try_write(&self.write_buf) {
                Ok(n) => self.write_buf.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(lost(e)),
            }
        }
        for done in self.unacked_writes.drain(..) {
            let _ = done.send(Ok(()));
        }
        Ok(())
    }

    fn read_replies(&mut self) -> Result<(), FailureReason> {
        loop {
            let raw = self.open.read_buffer(&mut self.read_buf);
            raw.reserve(4096);
            match self.stream.try_read_buf(raw) {
                Ok(0) => return Err(FailureReason::ConnectionLost("closed by the member".into())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(lost(e)),
            }
            self.open
                .open(&mut self.read_buf)
                .map_err(|e| FailureReason::Protocol(e.to_string()))?;
            while let Some(body) = self
                .decoder
                .decode(&mut self.read_buf)
                .map_err(|e| FailureReason::Protocol(e.to_string()))?
            {
                let (done, reply) = self
                    .acks
                    .handle_reply(&body)
                    .map_err(|e| FailureReason::Protocol(e.to_string()))?;
                let _ = done.send(match reply {
                    Reply::Ack => Ok(()),
                    Reply::FailAck => Err(FailureReason::Rejected),
                });
            }
        }
    }

    /// Closes the connection with a reset, so the kernel discards what it still buffers
    /// instead of delivering it later: every frame on it was reported failed, and a frame
    /// arriving after a cut heals would speak for a moment that has passed (the sender may
    /// have rejoined under a new id by then).
    fn abort(self) {
        let _ = socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
    }

    fn fail_all(&mut self, reason: &FailureReason) {
        for done in self.acks.drain() {
            let _ = done.send(Err(reason.clone()));
        }
        for done in self.unacked_writes.drain(..) {
            let _ = done.send(Err(reason.clone()));
        }
        self.write_buf.clear();
        self.pending.clear();
    }
}

fn lost(e: io::Error) -> FailureReason {
    FailureReason::ConnectionLost(e.to_string())
}
