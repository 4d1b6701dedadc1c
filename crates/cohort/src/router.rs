//! The gossip router (`cohort router`): a standalone rendezvous server for discovery where
//! multicast is unavailable, in the spirit of JGroups' GossipRouter used for discovery only.
//!
//! Members connect over TCP and register (cluster name + the address their heartbeats
//! arrive on); the router sends each member of a cluster the list of all registered
//! addresses, and again whenever it changes. A registration lasts as long as its
//! connection. The router holds no other state, so it can be restarted at any time (members
//! re-register by themselves) and members can use several routers at once; heartbeats
//! never pass through it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use cohort_proto::security::Purpose;
use cohort_proto::wire::cohort::router::RouterMessage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::security::{Keyring, Security, StreamOpen, StreamSeal};

/// Most connections served at once; more are refused.
const MAX_CONNECTIONS: usize = 10_000;

/// A gossip router bound to its address; [`run`](Self::run) serves it.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// let router = cohort::router::Router::bind("127.0.0.1:12001".parse().unwrap()).await?;
/// println!("router on {}", router.local_addr());
/// router.run().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Router {
    listener: TcpListener,
    addr: SocketAddr,
    security: Option<Security>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    /// Connection → (cluster, registered address).
    registered: HashMap<u64, (Bytes, SocketAddr)>,
    /// Connection → its next update. Every update is the cluster's whole list, so only
    /// the latest is kept: a member that does not read costs one list, not a queue that
    /// grows with every registration (as an unbounded queue did).
    outboxes: HashMap<u64, watch::Sender<Bytes>>,
}

impl State {
    /// Sends every connection of `cluster` the current list.
    fn publish(&self, cluster: &Bytes) {
        let mut addrs: Vec<SocketAddr> = self
            .registered
            .values()
            .filter(|(c, _)| c == cluster)
            .map(|(_, a)| *a)
            .collect();
        addrs.sort();
        addrs.dedup();
        let mut out = BytesMut::new();
        RouterMessage::Members {
            cluster: cluster.clone(),
            addrs,
        }
        .encode_framed(&mut out);
        let out = out.freeze();
        for (id, (c, _)) in &self.registered {
            if c == cluster
                && let Some(outbox) = self.outboxes.get(id)
            {
                outbox.send_replace(out.clone());
            }
        }
    }
}

impl Router {
    /// Binds the router's TCP listener.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        Ok(Self {
            listener,
            addr,
            security: None,
        })
    }

    /// Serves only members that hold a key of `keyring` (cluster-key mode, as the members'
    /// [`Config::keyring`](crate::Config::keyring)): registrations and member lists are
    /// sealed, and connections that are not are refused and counted.
    pub fn with_keyring(mut self, keyring: Keyring) -> Self {
        self.security = Some(Security::new(keyring));
        self
    }

    /// The cluster key state, with [`with_keyring`](Self::with_keyring): its counters.
    pub fn security(&self) -> Option<&Security> {
        self.security.as_ref()
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves members until the future is dropped (or its task aborted), which closes every
    /// member connection.
    pub async fn run(self) {
        info!(addr = %self.addr, "gossip router listening");
        let state = Arc::new(Mutex::new(State::default()));
        // Owned here, so stopping the router (dropping this future) closes every connection.
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(error = %e, "router accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let id = {
                let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                if s.outboxes.len() >= MAX_CONNECTIONS {
                    warn!(%peer, "router full: connection refused");
                    continue;
                }
                s.next_id += 1;
                s.next_id
            };
            connections.spawn(serve(
                id,
                stream,
                peer,
                state.clone(),
                self.security.clone(),
            ));
        }
    }
}

async fn serve(
    id: u64,
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<Mutex<State>>,
    security: Option<Security>,
) {
    let mut seal = StreamSeal::new(security.as_ref(), Purpose::RouterReply);
    let mut opener = StreamOpen::new(security.as_ref(), Purpose::RouterRequest);
    let (tx, mut rx) = watch::channel(Bytes::new());
    state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .outboxes
        .insert(id, tx);
    let (mut reader, mut writer) = stream.into_split();
    let writer_task = tokio::spawn(async move {
        let mut sealed = BytesMut::new();
        while rx.changed().await.is_ok() {
            let bytes = rx.borrow_and_update().clone();
            sealed.clear();
            if seal.seal_into(&bytes, &mut sealed).is_err()
                || writer.write_all(&sealed).await.is_err()
            {
                break;
            }
        }
    });
    let mut buf = BytesMut::with_capacity(1024);
    'read: loop {
        match reader.read_buf(opener.read_buffer(&mut buf)).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if let Err(e) = opener.open(&mut buf) {
            warn!(%peer, error = %e, "closing connection: refused");
            break;
        }
        loop {
            match RouterMessage::decode_framed(&mut buf) {
                Ok(Some(RouterMessage::Register { cluster, addr })) => {
                    debug!(%peer, %addr, "registered");
                    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                    let previous = s.registered.insert(id, (cluster.clone(), addr));
                    if let Some((old, _)) = previous
                        && old != cluster
                    {
                        s.publish(&old);
                    }
                    s.publish(&cluster);
                }
                Ok(Some(RouterMessage::Members { .. })) => {
                    warn!(%peer, "closing connection: a member sent a member list");
                    break 'read;
                }
                Ok(None) => break,
                Err(e) => {
                    warn!(%peer, error = %e, "closing connection: malformed router message");
                    break 'read;
                }
            }
        }
    }
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    s.outboxes.remove(&id);
    if let Some((cluster, addr)) = s.registered.remove(&id) {
        debug!(%peer, %addr, "unregistered");
        s.publish(&cluster);
    }
    drop(s);
    writer_task.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A member that never reads holds one member list at the router, however many
    /// registrations come and go.
    #[test]
    fn an_unread_connection_holds_only_the_latest_list() {
        let mut state = State::default();
        let (tx, rx) = watch::channel(Bytes::new());
        let cluster = Bytes::from_static(b"c");
        state.outboxes.insert(1, tx);
        state
            .registered
            .insert(1, (cluster.clone(), "127.0.0.1:1".parse().unwrap()));
        for port in 2..1002u16 {
            state.registered.insert(
                u64::from(port),
                (cluster.clone(), SocketAddr::from(([127, 0, 0, 1], port))),
            );
            state.publish(&cluster);
        }
        let latest = rx.borrow().clone();
        let mut buf = BytesMut::from(&latest[..]);
        match RouterMessage::decode_framed(&mut buf) {
            Ok(Some(RouterMessage::Members { addrs, .. })) => assert_eq!(addrs.len(), 1001),
            other => panic!("not the latest list: {other:?}"),
        }
        assert!(buf.is_empty());
    }
}
