//! The one task that owns the election core and the mesh's connections.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use cohort_proto::election::{ElectionConfig, ElectionCore, ElectionEvent, Role, Sid};
use cohort_proto::wire::zookeeper::encode_frame;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use super::mesh::{self, MeshEvent};
use super::{Command, Leadership};

/// First reconnect delay after a failed attempt; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

struct Peer {
    addr: SocketAddr,
    /// The kept connection: its generation and the sender of its outgoing frames.
    conn: Option<(u64, mpsc::UnboundedSender<Bytes>)>,
    /// The last frame for this peer, sent first on every new connection (as ZooKeeper does),
    /// so a peer that was unreachable still hears our current state.
    last_sent: Option<Bytes>,
    connecting: bool,
    backoff: Duration,
    retry_at: Option<Instant>,
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
}

impl Driver {
    pub(super) fn new(
        cfg: ElectionConfig,
        zxid: i64,
        voters: BTreeMap<Sid, SocketAddr>,
        my_addr: SocketAddr,
        leadership: watch::Sender<Leadership>,
    ) -> Self {
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
                        backoff: MIN_BACKOFF,
                        retry_at: None,
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
                    if let Ok((stream, _)) = accepted {
                        tokio::spawn(mesh::accept(stream, self.events_tx.clone()));
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
    }

    fn on_mesh(&mut self, event: MeshEvent) {
        let now = Instant::now();
        match event {
            MeshEvent::Accepted {
                sid,
                stream,
                leftover,
            } => {
                if !self.peers.contains_key(&sid) {
                    tracing::debug!(sid, "election connection from an unknown sid dropped");
                } else if sid < self.me {
                    // Only connections initiated by the higher sid are kept: close this
                    // one and connect back.
                    drop(stream);
                    self.probe(sid);
                    self.connect(sid);
                } else {
                    self.install(sid, stream, leftover);
                }
            }
            MeshEvent::Connected { sid, stream } => {
                if let Some(p) = self.peers.get_mut(&sid) {
                    p.connecting = false;
                }
                self.install(sid, stream, BytesMut::new());
            }
            MeshEvent::AskedBack { sid } | MeshEvent::ConnectFailed { sid } => {
                if let Some(p) = self.peers.get_mut(&sid) {
                    p.connecting = false;
                    if p.conn.is_none() {
                        // A higher sid that does not connect back soon is asked again.
                        p.retry_at = Some(now + p.backoff);
                        p.backoff = (p.backoff * 2).min(MAX_BACKOFF);
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
                    p.backoff = MIN_BACKOFF;
                    p.retry_at = Some(now + MIN_BACKOFF);
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
            self.events_tx.clone(),
        ));
    }

    fn install(&mut self, sid: Sid, stream: tokio::net::TcpStream, leftover: BytesMut) {
        self.generation += 1;
        // Twice the silence timeout: a dead path ends the connection only after the
        // election has already noticed, and a slow but working one is left alone.
        let unacknowledged = self.core.config().leader_silence_timeout * 2;
        let tx = mesh::run_connection(
            sid,
            self.generation,
            stream,
            leftover,
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
        p.backoff = MIN_BACKOFF;
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
