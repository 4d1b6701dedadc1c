//! The one task that owns the election core and the mesh's connections.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use cohort_proto::election::{ElectionConfig, ElectionCore, ElectionEvent, Role, Sid};
use cohort_proto::wire::zookeeper::encode_frame;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use super::mesh::{self, MeshEvent, Sealing};
use super::{Command, Leadership};
use crate::backoff::Backoff;
use crate::security::Security;

/// How long a second connection for a sid we hold a connection to waits for the held one
/// to show itself dead (we write on it: a dead one is answered with a reset and closes).
/// A live one is kept and the newcomer refused. A round trip and a kernel's reset take
/// milliseconds; this leaves room for a loaded machine.
const REPLACE_WAIT: Duration = Duration::from_secs(1);

/// The mesh's counters (see [`ElectionStats`](super::ElectionStats)).
#[derive(Default)]
pub(super) struct Counters {
    pub(super) unknown_sid: AtomicU64,
    pub(super) wrong_address: AtomicU64,
    pub(super) duplicate: AtomicU64,
    pub(super) replaced: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// How the driver guards its connection mesh.
pub(super) struct MeshOptions {
    /// Whether a connection claiming a sid must come from that voter's configured IP.
    pub(super) bind_addresses: bool,
    pub(super) counters: Arc<Counters>,
    /// The cluster key, if the mesh is sealed.
    pub(super) security: Option<Security>,
}

/// A second connection for a sid we hold one to, waiting for the held one to close.
struct Pending {
    stream: tokio::net::TcpStream,
    leftover: BytesMut,
    sealing: Sealing,
    until: Instant,
}

struct Peer {
    addr: SocketAddr,
    /// The kept connection: its generation and the sender of its outgoing frames.
    conn: Option<(u64, mpsc::UnboundedSender<Bytes>)>,
    /// The last frame for this peer, sent first on every new connection (as ZooKeeper does),
    /// so a peer that was unreachable still hears our current state.
    last_sent: Option<Bytes>,
    connecting: bool,
    backoff: Backoff,
    retry_at: Option<Instant>,
    /// A newer connection from this sid, kept only if the held one turns out dead.
    pending: Option<Pending>,
}

pub(super) struct Driver {
    core: ElectionCore,
    me: Sid,
    my_addr: SocketAddr,
    peers: BTreeMap<Sid, Peer>,
    generation: u64,
    leadership: watch::Sender<Leadership>,
    events_tx: mpsc::UnboundedSender<MeshEvent>,
    events_rx: mpsc::UnboundedReceiver<MeshEvent>,
    /// Whether a connection claiming a sid must come from that voter's configured IP.
    bind_addresses: bool,
    counters: Arc<Counters>,
    /// The cluster key, if the mesh is sealed.
    security: Option<Security>,
}

impl Driver {
    pub(super) fn new(
        cfg: ElectionConfig,
        zxid: i64,
        voters: BTreeMap<Sid, SocketAddr>,
        my_addr: SocketAddr,
        leadership: watch::Sender<Leadership>,
        mesh: MeshOptions,
    ) -> Self {
        let MeshOptions {
            bind_addresses,
            counters,
            security,
        } = mesh;
        let me = cfg.sid;
        let peers = voters
            .into_iter()
            .filter(|(sid, _)| *sid != me)
            .map(|(sid, addr)| {
                (
                    sid,
                    Peer {
                        addr,
                        conn: None,
                        last_sent: None,
                        connecting: false,
                        backoff: Backoff::RECONNECT,
                        retry_at: None,
                        pending: None,
                    },
                )
            })
            .collect();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        Self {
            core: ElectionCore::new(cfg, zxid),
            me,
            my_addr,
            peers,
            generation: 0,
            leadership,
            events_tx,
            events_rx,
            bind_addresses,
            counters,
            security,
        }
    }

    pub(super) async fn run(
        mut self,
        listener: TcpListener,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut shutdown: oneshot::Receiver<()>,
    ) {
        let sids: Vec<Sid> = self.peers.keys().copied().collect();
        for sid in sids {
            self.connect(sid);
        }
        self.core.start(Instant::now());
        self.flush();
        loop {
            let deadline = self.next_deadline();
            let sleep = async {
                match deadline {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => {
                    if let Ok((stream, from)) = accepted {
                        tokio::spawn(mesh::accept(
                            stream,
                            from,
                            self.me,
                            self.security.clone(),
                            self.events_tx.clone(),
                        ));
                    }
                }
                Some(event) = self.events_rx.recv() => self.on_mesh(event),
                command = commands.recv() => match command {
                    Some(Command::SetZxid(zxid)) => self.core.set_zxid(zxid),
                    None => break,
                },
                () = sleep => self.on_timer(),
            }
            self.flush();
        }
        // Dropping the peers' senders closes every connection.
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.peers
            .values()
            .filter_map(|p| p.retry_at)
            .chain(
                self.peers
                    .values()
                    .filter_map(|p| p.pending.as_ref().map(|w| w.until)),
            )
            .chain(self.core.poll_timeout())
            .min()
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        self.core.handle_timeout(now);
        let due: Vec<Sid> = self
            .peers
            .iter()
            .filter(|(_, p)| p.retry_at.is_some_and(|t| t <= now))
            .map(|(s, _)| *s)
            .collect();
        for sid in due {
            if let Some(p) = self.peers.get_mut(&sid) {
                p.retry_at = None;
            }
            self.connect(sid);
        }
        for (sid, p) in &mut self.peers {
            if p.pending.as_ref().is_some_and(|w| w.until <= now) {
                // The held connection is alive: the newcomer does not replace it.
                bump(&self.counters.duplicate);
                p.pending = None;
                tracing::debug!(
                    sid,
                    "second election connection for a connected sid refused"
                );
            }
        }
    }

    fn on_mesh(&mut self, event: MeshEvent) {
        let now = Instant::now();
        match event {
            MeshEvent::Accepted {
                sid,
                from,
                stream,
                leftover,
                sealing,
            } => {
                let Some(p) = self.peers.get_mut(&sid) else {
                    bump(&self.counters.unknown_sid);
                    tracing::debug!(sid, "election connection from an unknown sid dropped");
                    return;
                };
                if self.bind_addresses && from.ip().to_canonical() != p.addr.ip().to_canonical() {
                    // Whoever claims a sid must connect from that voter's address: a
                    // stranger elsewhere on the network cannot speak for it.
                    bump(&self.counters.wrong_address);
                    tracing::debug!(
                        sid,
                        %from,
                        configured = %p.addr,
                        "election connection claiming a sid from another address dropped"
                    );
                    return;
                }
                if sid < self.me {
                    // Only connections initiated by the higher sid are kept: close this
                    // one and connect back.
                    drop(stream);
                    self.probe(sid);
                    self.connect(sid);
                } else if p.conn.is_some() {
                    // A second connection for a connected sid does not silently replace
                    // the first: the held one is probed, and the newcomer kept only if
                    // the held one closes meanwhile (the peer restarted or lost its end);
                    // one newcomer waits at a time.
                    if p.pending.is_some() {
                        bump(&self.counters.duplicate);
                        tracing::debug!(sid, "third election connection for a sid refused");
                        return;
                    }
                    p.pending = Some(Pending {
                        stream,
                        leftover,
                        sealing,
                        until: now + REPLACE_WAIT,
                    });
                    if let (Some((_, tx)), Some(frame)) = (&p.conn, &p.last_sent) {
                        let _ = tx.send(frame.clone());
                    }
                } else {
                    self.install(sid, stream, leftover, sealing);
                }
            }
            MeshEvent::Connected {
                sid,
                stream,
                sealing,
            } => {
                if let Some(p) = self.peers.get_mut(&sid) {
                    p.connecting = false;
                }
                self.install(sid, stream, BytesMut::new(), sealing);
            }
            MeshEvent::AskedBack { sid } | MeshEvent::ConnectFailed { sid } => {
                if let Some(p) = self.peers.get_mut(&sid) {
                    p.connecting = false;
                    if p.conn.is_none() {
                        // A higher sid that does not connect back soon is asked again.
                        p.retry_at = Some(now + p.backoff.next_wait());
                    }
                }
            }
            MeshEvent::Received { sid, notification } => {
                self.core.handle_notification(now, sid, &notification);
            }
            MeshEvent::Closed { sid, generation } => {
                let Some(p) = self.peers.get_mut(&sid) else {
                    return;
                };
                if p.conn.as_ref().is_some_and(|(g, _)| *g == generation) {
                    p.conn = None;
                    p.backoff.reset();
                    p.retry_at = Some(now + p.backoff.first());
                    if let Some(waiting) = p.pending.take() {
                        // The held connection was dead: the one that waited replaces it.
                        bump(&self.counters.replaced);
                        self.install(sid, waiting.stream, waiting.leftover, waiting.sealing);
                        return;
                    }
                    if self.core.leader() == Some(sid) && self.core.role() != Role::Leading {
                        tracing::debug!(sid, "connection to the leader lost");
                        self.core.leader_lost(now);
                    }
                }
            }
        }
    }

    /// A lower sid dials us only when it has no connection to us, so one we still hold
    /// may be dead at its end (its kernel gave up on it during a partition, or its host
    /// restarted) while ours, with nothing to send, never notices; we would never connect
    /// back. Writing on it tells: a dead connection is answered with a reset and closes,
    /// and we dial afresh; a live one (the peer's dial crossed ours) delivers our last
    /// notification again, which is harmless.
    fn probe(&mut self, sid: Sid) {
        let Some(p) = self.peers.get_mut(&sid) else {
            return;
        };
        match (&p.conn, &p.last_sent) {
            (Some((_, tx)), Some(frame)) => {
                let _ = tx.send(frame.clone());
            }
            // Nothing to probe with: replace it.
            (Some(_), None) => p.conn = None,
            (None, _) => {}
        }
    }

    fn connect(&mut self, sid: Sid) {
        let Some(p) = self.peers.get_mut(&sid) else {
            return;
        };
        if p.conn.is_some() || p.connecting {
            return;
        }
        p.connecting = true;
        tokio::spawn(mesh::initiate(
            self.me,
            self.my_addr,
            sid,
            p.addr,
            self.security.clone(),
            self.events_tx.clone(),
        ));
    }

    fn install(
        &mut self,
        sid: Sid,
        stream: tokio::net::TcpStream,
        leftover: BytesMut,
        sealing: Sealing,
    ) {
        self.generation += 1;
        // Twice the silence timeout: a dead path ends the connection only after the
        // election has already noticed, and a slow but working one is left alone.
        let unacknowledged = self.core.config().leader_silence_timeout * 2;
        let tx = mesh::run_connection(
            sid,
            self.generation,
            stream,
            leftover,
            sealing,
            unacknowledged,
            self.events_tx.clone(),
        );
        let Some(p) = self.peers.get_mut(&sid) else {
            return;
        };
        if let Some(frame) = &p.last_sent {
            let _ = tx.send(frame.clone());
        }
        // Replacing an older connection drops its sender, which closes it.
        p.conn = Some((self.generation, tx));
        p.backoff.reset();
        p.retry_at = None;
    }

    /// Sends what the core produced and publishes role changes.
    fn flush(&mut self) {
        while let Some((sid, notification)) = self.core.poll_transmit() {
            let mut frame = BytesMut::with_capacity(4 + notification.encoded_len());
            encode_frame(&notification.to_bytes(), &mut frame);
            let frame = frame.freeze();
            let Some(p) = self.peers.get_mut(&sid) else {
                continue;
            };
            p.last_sent = Some(frame.clone());
            match &p.conn {
                Some((_, tx)) => {
                    let _ = tx.send(frame);
                }
                None => self.connect(sid),
            }
        }
        while let Some(ElectionEvent::RoleChanged {
            role,
            leader,
            election_epoch,
        }) = self.core.poll_event()
        {
            tracing::debug!(?role, ?leader, election_epoch, "election role changed");
            self.leadership.send_replace(Leadership {
                role,
                leader,
                election_epoch,
            });
        }
    }
}
