//! The TCP transport of the reliable channel (see the module docs of `reliable`).
//!
//! One task, the driver, owns the listener and the core, as with UDP. Each other member of
//! the view has a link task that keeps one connection to it: the member with the lower id
//! connects (and reconnects with back-off), the other accepts; both first send a
//! [`Hello`] naming themselves, then one frame per datagram ([`wire::cohort::stream`]).
//! The driver hands each link the datagrams for its member through a bounded queue and
//! drops what does not fit (the core retransmits it, as it would a datagram the kernel
//! dropped), so a slow or dead member never blocks the driver. Links hand what they read
//! to the driver through one bounded queue, so a driver that falls behind stops the
//! readers and TCP pushes back on the senders.
//!
//! [`wire::cohort::stream`]: cohort_proto::wire::cohort::stream

use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use cohort_proto::MemberId;
use cohort_proto::group::View;
use cohort_proto::reliable::Destination;
use cohort_proto::security::Purpose;
use cohort_proto::wire::cohort::stream::{
    FRAME_PREFIX_LEN, FrameDecoder, Hello, encode_frame, frame_prefix,
};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, trace};

use super::{ReliableChannelConfig, ReliableChannelStats, ReliableStartError, Shared};
use crate::backoff::Backoff;
use crate::security::{Security, StreamOpen, StreamSeal};
use crate::transport::limits::{Conn as InboundConn, Slots};

/// Datagrams waiting to be written to one member. Beyond this they are dropped: the core's
/// flow control bounds what is in flight, so only a member that stopped reading fills it.
const SEND_QUEUE: usize = 1024;
/// Datagrams read from all connections, waiting for the driver.
const RECV_QUEUE: usize = 1024;
/// Datagrams fed to the core before its outputs are handled.
const RECV_BATCH: usize = 256;
/// Datagrams a link writes with one system call, at most.
const WRITE_BATCH: usize = 64;
/// Room made in a connection's receive buffer before each read: several datagrams, so
/// one read takes in what a burst brought.
const READ_RESERVE: usize = 256 * 1024;
/// How long connecting and the hello exchange may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// Counters of the TCP transport (all zero over UDP).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TcpStats {
    /// Connections that completed the hello exchange, reconnections included.
    pub connected: u64,
    /// Connections that ended: after the hello exchange, or cut while it was under way.
    pub disconnected: u64,
    /// Connections closed because the hello was malformed, missing or named the wrong
    /// member (or one that should have waited to be called).
    pub bad_hello: u64,
    /// Connections closed because a frame length was 0 or too large.
    pub bad_frame: u64,
    /// Datagrams dropped because a member's send queue was full (also in
    /// [`send_errors`](super::ReliableChannelStats::send_errors)).
    pub queue_full: u64,
    /// What the limits on inbound connections did (see
    /// [`ReliableChannelConfig::inbound`]).
    pub inbound: crate::InboundStats,
}

/// Opens the listening socket on the member's own address.
pub(super) fn listen(local: SocketAddr) -> Result<TcpListener, ReliableStartError> {
    let open = || {
        let socket = match local {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        // A restarted member takes its port back while old connections linger in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(local)?;
        socket.listen(1024)
    };
    open().map_err(|source| ReliableStartError::Bind {
        addr: local,
        source,
    })
}

/// A new connection with its hello read, and the bytes that came after it.
struct Conn {
    stream: TcpStream,
    decoder: FrameDecoder,
    /// The cluster-key seam of this connection (pass-through without a key): opens what
    /// is read before `decoder` sees it, seals what is written.
    opener: StreamOpen,
    seal: StreamSeal,
    /// Accepted connections answer the caller's hello with ours.
    hello_owed: bool,
}

/// An accepted connection whose hello was read, for the driver to give to its link.
struct Accepted {
    hello: Hello,
    conn: Conn,
}

/// The driver's end of a link task.
struct Link {
    addr: SocketAddr,
    out: mpsc::Sender<Bytes>,
    /// Set if the member connects to us: where its connections go.
    accepted: Option<mpsc::Sender<Conn>>,
    task: JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        // Closes the connection: the member left the view, or the channel closed.
        self.task.abort();
    }
}

fn count(shared: &Shared, f: impl FnOnce(&mut ReliableChannelStats)) {
    f(&mut shared.counters.lock().unwrap_or_else(|e| e.into_inner()));
}

pub(super) async fn run(
    shared: Arc<Shared>,
    config: ReliableChannelConfig,
    listener: TcpListener,
    mut views: watch::Receiver<Option<View>>,
    security: Option<Security>,
) {
    let local = shared.core().local();
    let (frames_tx, mut frames) = mpsc::channel(RECV_QUEUE);
    let (accepted_tx, mut accepted) = mpsc::channel(64);
    // Connections in their hello exchange; at the cap the oldest makes room.
    let mut handshakes = tokio::task::JoinSet::new();
    let mut slots = Slots::new(config.inbound, shared.inbound.clone());
    let mut driver = Driver {
        hello: Hello {
            member: local,
            listen: shared.local_addr,
        },
        shared,
        config,
        links: HashMap::new(),
        frames: frames_tx,
        outgoing: Vec::new(),
        security,
    };
    // The channel installed the first view; the driver needs its members.
    if let Some(view) = &*views.borrow() {
        driver.follow(view);
    }
    let mut received = Vec::with_capacity(RECV_BATCH);
    let mut views_open = true;
    let mut deadline: Option<Instant> = None;
    loop {
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = views.changed(), if views_open => match changed {
                Ok(()) => {
                    let view = views.borrow_and_update().clone();
                    if let Some(view) = view {
                        driver.shared.core().install_view(&view, Instant::now());
                        driver.follow(&view);
                    }
                }
                Err(_) => views_open = false,
            },
            r = listener.accept() => match r {
                Ok((stream, from)) => {
                    trace!(%from, "reliable tcp: connection accepted");
                    let Some(admitted) = slots.admit() else {
                        continue;
                    };
                    let proven = admitted.proven_flag();
                    let handle = handshakes.spawn(read_hello_of(
                        stream,
                        accepted_tx.clone(),
                        driver.shared.clone(),
                        driver.security.clone(),
                        local,
                        admitted,
                    ));
                    slots.insert(proven, handle);
                }
                Err(e) => {
                    // Out of descriptors, most likely: do not spin on it.
                    debug!(error = %e, "reliable tcp: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(a) = accepted.recv() => driver.attach(a),
            Some(ended) = handshakes.join_next_with_id(), if !handshakes.is_empty() => {
                match ended {
                    Ok((id, ())) => slots.remove(id),
                    Err(e) => slots.remove(e.id()),
                }
            }
            _ = frames.recv_many(&mut received, RECV_BATCH) => {}
            () = driver.shared.wake_driver.notified() => {}
            () = sleep => {}
        }
        while received.len() < RECV_BATCH {
            let Ok(frame) = frames.try_recv() else { break };
            received.push(frame);
        }
        deadline = driver.step(&mut received);
        driver.send();
    }
}

struct Driver {
    shared: Arc<Shared>,
    config: ReliableChannelConfig,
    hello: Hello,
    links: HashMap<MemberId, Link>,
    frames: mpsc::Sender<(MemberId, Bytes)>,
    outgoing: Vec<(Destination, Bytes)>,
    security: Option<Security>,
}

impl Driver {
    /// Keeps a link to every other member of `view` and closes the others.
    fn follow(&mut self, view: &View) {
        let local = self.hello.member;
        let members: HashMap<MemberId, SocketAddr> = view
            .members
            .iter()
            .filter(|m| m.id != local)
            .map(|m| (m.id, self.config.udp_addr(m.addr)))
            .collect();
        self.links
            .retain(|id, link| members.get(id).is_some_and(|addr| *addr == link.addr));
        for (id, addr) in members {
            if !self.links.contains_key(&id) {
                let link = self.start_link(id, addr);
                self.links.insert(id, link);
            }
        }
    }

    fn start_link(&self, peer: MemberId, addr: SocketAddr) -> Link {
        let (out, out_rx) = mpsc::channel(SEND_QUEUE);
        // The lower id calls, so two members keep one connection.
        let dial = self.hello.member < peer;
        let (accepted, accepted_rx) = if dial {
            (None, None)
        } else {
            let (tx, rx) = mpsc::channel(2);
            (Some(tx), Some(rx))
        };
        let task = tokio::spawn(
            LinkTask {
                peer,
                dial: dial.then_some(addr),
                hello: self.hello,
                out: out_rx,
                accepted: accepted_rx,
                frames: self.frames.clone(),
                shared: self.shared.clone(),
                security: self.security.clone(),
            }
            .run(),
        );
        Link {
            addr,
            out,
            accepted,
            task,
        }
    }

    /// Gives an accepted connection to the link of the member its hello names.
    fn attach(&mut self, a: Accepted) {
        let from = a.hello.member;
        match self.links.get(&from) {
            Some(Link {
                accepted: Some(tx), ..
            }) => {
                // Full only if the member called twice in a moment: it calls again.
                let _ = tx.try_send(a.conn);
            }
            Some(_) => {
                debug!(%from, "reliable tcp: a higher id called; it should wait to be called");
                count(&self.shared, |c| c.tcp.bad_hello += 1);
            }
            None => {
                trace!(%from, listen = %a.hello.listen, "reliable tcp: hello from a non-member");
                count(&self.shared, |c| c.unknown_source += 1);
            }
        }
    }

    /// Feeds the received datagrams and the clock to the core and collects its outputs.
    /// Returns the next deadline.
    fn step(&mut self, received: &mut Vec<(MemberId, Bytes)>) -> Option<Instant> {
        let mut unknown = 0;
        let datagrams = received.len() as u64;
        let mut credit = false;
        let deadline;
        let delivered;
        {
            let mut core = self.shared.core();
            let now = Instant::now();
            let before = core.stats().delivered;
            for (from, datagram) in received.drain(..) {
                // A link's last frames may arrive after its member left the view.
                if !self.links.contains_key(&from) {
                    unknown += 1;
                    continue;
                }
                if let Err(e) = core.handle_datagram(from, datagram, now) {
                    debug!(%from, error = %e, "reliable tcp: datagram dropped");
                }
            }
            if core.poll_timeout().is_some_and(|t| t <= now) {
                core.handle_timeout(now);
            }
            core.flush(now);
            while let Some(t) = core.poll_transmit() {
                self.outgoing.push((t.to, t.datagram));
            }
            credit |= self.shared.take_events(&mut core);
            delivered = core.stats().delivered != before;
            deadline = core.poll_timeout();
        }
        if credit {
            self.shared.credit.notify_waiters();
        }
        if delivered {
            self.shared.deliveries.notify_waiters();
        }
        count(&self.shared, |c| {
            c.unknown_source += unknown;
            c.datagrams_received += datagrams;
        });
        deadline
    }

    /// Queues what the core produced on the links, never waiting.
    fn send(&mut self) {
        if self.outgoing.is_empty() {
            return;
        }
        let (mut sent, mut full) = (0, 0);
        let mut queue = |link: &Link, datagram: Bytes| match link.out.try_send(datagram) {
            Ok(()) => sent += 1,
            Err(_) => full += 1,
        };
        for (to, datagram) in self.outgoing.drain(..) {
            match to {
                Destination::Group => {
                    for link in self.links.values() {
                        queue(link, datagram.clone());
                    }
                }
                Destination::Member(id) => {
                    if let Some(link) = self.links.get(&id) {
                        queue(link, datagram);
                    }
                }
            }
        }
        count(&self.shared, |c| {
            c.datagrams_sent += sent;
            c.send_errors += full;
            c.tcp.queue_full += full;
        });
    }
}

/// Reads the hello of an accepted connection and hands the connection to the driver.
async fn read_hello_of(
    mut stream: TcpStream,
    driver: mpsc::Sender<Accepted>,
    shared: Arc<Shared>,
    security: Option<Security>,
    local: MemberId,
    // Holds the connection's place among the handshakes until the hello is read.
    _admitted: InboundConn,
) {
    let _ = stream.set_nodelay(true);
    let mut decoder = FrameDecoder::new();
    // Both directions of a connection are bound to the member that accepted it: us.
    let mut opener = StreamOpen::new(security.as_ref(), Purpose::ReliableStream).bind(local);
    let hello = read_hello(&mut stream, &mut decoder, &mut opener);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, hello).await {
        Ok(Ok(hello)) => {
            let conn = Conn {
                stream,
                decoder,
                opener,
                seal: StreamSeal::new(security.as_ref(), Purpose::ReliableStream).bind(local),
                hello_owed: true,
            };
            let _ = driver.send(Accepted { hello, conn }).await;
        }
        Ok(Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
            debug!(error = %e, "reliable tcp: bad hello");
            count(&shared, |c| c.tcp.bad_hello += 1);
        }
        // Closed or reset before its hello was complete: the network or the peer, not a
        // malformed hello (a cut link does this; the caller dials again).
        Ok(Err(e)) => {
            debug!(error = %e, "reliable tcp: connection lost during the hello");
            count(&shared, |c| c.tcp.disconnected += 1);
        }
        Err(_) => count(&shared, |c| c.tcp.bad_hello += 1),
    }
}

/// Reads frames until the first one, which must be a hello; what follows it stays in
/// `decoder`.
async fn read_hello(
    stream: &mut TcpStream,
    decoder: &mut FrameDecoder,
    opener: &mut StreamOpen,
) -> io::Result<Hello> {
    fn invalid(e: impl std::error::Error + Send + Sync + 'static) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
    loop {
        if let Some(body) = decoder.next_frame().map_err(invalid)? {
            return Hello::decode(&body).map_err(invalid);
        }
        let raw = opener.read_buffer(decoder.buffer_mut());
        raw.reserve(256);
        if stream.read_buf(raw).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        opener.open(decoder.buffer_mut()).map_err(invalid)?;
    }
}

/// Keeps the connection to one member.
struct LinkTask {
    peer: MemberId,
    /// The member's address if we call it; `None` if it calls us.
    dial: Option<SocketAddr>,
    hello: Hello,
    out: mpsc::Receiver<Bytes>,
    accepted: Option<mpsc::Receiver<Conn>>,
    frames: mpsc::Sender<(MemberId, Bytes)>,
    shared: Arc<Shared>,
    security: Option<Security>,
}

impl LinkTask {
    async fn run(mut self) {
        let mut backoff = Backoff::RECONNECT;
        let mut next = None;
        loop {
            let conn = if let Some(conn) = next.take() {
                conn
            } else if let Some(addr) = self.dial {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.call(addr)).await {
                    Ok(Ok(conn)) => {
                        backoff.reset();
                        conn
                    }
                    failed => {
                        if let Ok(Err(e)) = failed {
                            trace!(peer = %self.peer, %addr, error = %e, "reliable tcp: connect failed");
                        }
                        tokio::time::sleep(backoff.next_wait()).await;
                        continue;
                    }
                }
            } else if let Some(accepted) = &mut self.accepted {
                match accepted.recv().await {
                    Some(conn) => conn,
                    None => return,
                }
            } else {
                return;
            };
            count(&self.shared, |c| c.tcp.connected += 1);
            next = self.serve(conn).await;
            count(&self.shared, |c| c.tcp.disconnected += 1);
        }
    }

    /// Connects, sends our hello and checks that the right member answers.
    async fn call(&self, addr: SocketAddr) -> io::Result<Conn> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let security = self.security.as_ref();
        // Both directions are bound to the member we call.
        let mut seal = StreamSeal::new(security, Purpose::ReliableStream).bind(self.peer);
        let mut opener = StreamOpen::new(security, Purpose::ReliableStream).bind(self.peer);
        let mut hello = BytesMut::new();
        self.hello.encode_framed(&mut hello);
        let mut sealed = BytesMut::new();
        seal.seal_into(&hello, &mut sealed)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        stream.write_all(&sealed).await?;
        let mut decoder = FrameDecoder::new();
        let answer = read_hello(&mut stream, &mut decoder, &mut opener).await;
        match answer {
            Ok(h) if h.member == self.peer => Ok(Conn {
                stream,
                decoder,
                opener,
                seal,
                hello_owed: false,
            }),
            Ok(h) => {
                count(&self.shared, |c| c.tcp.bad_hello += 1);
                Err(io::Error::other(format!("{addr} is member {}", h.member)))
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                count(&self.shared, |c| c.tcp.bad_hello += 1);
                Err(e)
            }
            // Closed without a word: the member does not have us in its view yet.
            Err(e) => Err(e),
        }
    }

    /// Carries datagrams both ways until the connection ends, or a newer connection from
    /// the member replaces it (then returns that one).
    async fn serve(&mut self, conn: Conn) -> Option<Conn> {
        let Conn {
            mut stream,
            mut decoder,
            mut opener,
            mut seal,
            hello_owed,
        } = conn;
        let (mut rd, mut wr) = stream.split();
        let (peer, frames, shared) = (self.peer, &self.frames, &self.shared);
        let reading = async {
            loop {
                loop {
                    match decoder.next_frame() {
                        Ok(Some(frame)) => {
                            if frames.send((peer, frame)).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            debug!(%peer, error = %e, "reliable tcp: bad frame; closing");
                            count(shared, |c| c.tcp.bad_frame += 1);
                            return;
                        }
                    }
                }
                let raw = opener.read_buffer(decoder.buffer_mut());
                raw.reserve(READ_RESERVE);
                match rd.read_buf(raw).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if let Err(e) = opener.open(decoder.buffer_mut()) {
                    debug!(%peer, error = %e, "reliable tcp: refused; closing");
                    return;
                }
            }
        };
        let out = &mut self.out;
        let hello = self.hello;
        let writing = async {
            let mut plain = BytesMut::new();
            let mut sealed = BytesMut::new();
            if hello_owed {
                hello.encode_framed(&mut plain);
                if seal.seal_into(&plain, &mut sealed).is_err()
                    || wr.write_all(&sealed).await.is_err()
                {
                    return;
                }
            }
            let mut batch = Vec::with_capacity(WRITE_BATCH);
            loop {
                if out.recv_many(&mut batch, WRITE_BATCH).await == 0 {
                    return;
                }
                let written = if seal.is_plain() {
                    write_frames(&mut wr, &batch).await
                } else {
                    // One sealing pass over the batch: its frames share records.
                    plain.clear();
                    sealed.clear();
                    for frame in &batch {
                        encode_frame(frame, &mut plain);
                    }
                    match seal.seal_into(&plain, &mut sealed) {
                        Ok(()) => wr.write_all(&sealed).await,
                        Err(e) => Err(io::Error::other(e)),
                    }
                };
                if written.is_err() {
                    return;
                }
                batch.clear();
            }
        };
        let accepted = &mut self.accepted;
        let replaced = async {
            match accepted {
                Some(accepted) => accepted.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = reading => None,
            () = writing => None,
            // The member called again (it restarted its side): the old connection is dead.
            Some(conn) = replaced => Some(conn),
        }
    }
}

/// Writes `frames`, each behind its length prefix, with vectored writes: the datagrams go
/// from their own buffers to the kernel, not copied behind their prefixes first.
async fn write_frames(wr: &mut (impl AsyncWrite + Unpin), frames: &[Bytes]) -> io::Result<()> {
    let prefixes: Vec<[u8; FRAME_PREFIX_LEN]> =
        frames.iter().map(|f| frame_prefix(f.len())).collect();
    let mut slices: Vec<IoSlice<'_>> = prefixes
        .iter()
        .zip(frames)
        .flat_map(|(p, f)| [IoSlice::new(p), IoSlice::new(f)])
        .collect();
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        let n = wr.write_vectored(slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}
