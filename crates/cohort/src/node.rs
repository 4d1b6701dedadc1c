//! The node handle: start, query, send, shut down.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use cohort_proto::channel::{Delivery, FailureReason, NextStep};
use cohort_proto::group::{Group, GroupMember, View};
use cohort_proto::membership::MembershipStats;
use cohort_proto::wire::tribes::{COHORT_COMMAND, MemberRecord, SendOptions};
use cohort_proto::{Member, MemberId, Membership, MembershipConfig};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use rand::RngCore;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::info;

use crate::config::Config;
use crate::discovery::{self, Candidates};
use crate::error::{SendError, StartError};
use crate::event::{Event, Events};
use crate::group;
use crate::heartbeat;
use crate::lifecycle::Tasks;
use crate::messages::HeartbeatCommand;
use crate::security::{Security, SecurityStats};
use crate::shared::Shared;
use crate::transport::receiver;
use crate::transport::sender::{PeerSettings, Peers};

/// A running cohort node. Cheap to clone; every clone drives the same node.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use cohort::{Config, Event, Node, SendOptions};
///
/// let (node, mut events) = Node::start(Config::with_domain("orders")).await?;
/// // Wait for a peer, then send it a message that it must acknowledge.
/// while let Some(event) = events.recv().await {
///     if let Event::MemberAdded(member) = event {
///         let report = node.send(&[member], "hello", SendOptions::default()).await?;
///         println!("acknowledged by {} member(s)", report.acked.len());
///         break;
///     }
/// }
/// node.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    shared: Arc<Shared>,
    heartbeat: mpsc::Sender<HeartbeatCommand>,
    group: mpsc::Sender<group::Command>,
    tasks: Tasks,
}

/// The outcome of a send that every destination acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendReport {
    /// Members that acknowledged (or, without [`SendOptions::USE_ACK`], took the bytes).
    pub acked: Vec<Member>,
    /// With [`SendOptions::ASYNCHRONOUS`]: members the message was queued for; the send
    /// returned without waiting for them.
    pub queued: Vec<Member>,
}

/// Counters of a node, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStats {
    /// What the heartbeat receiver saw.
    pub membership: MembershipStats,
    /// Messages received on the channel.
    pub messages_received: u64,
    /// Frames that were not valid Tribes frames; each closed its connection.
    pub malformed_frames: u64,
    /// Connections accepted by the receiver.
    pub connections_accepted: u64,
    /// What the receiver's connection limits did ([`Config::inbound`]): connections
    /// refused, evicted or closed for buffering too much.
    pub inbound: crate::transport::limits::InboundStats,
    /// What the cluster-key seam sealed, opened and refused (all zero without a key).
    pub security: SecurityStats,
}

impl Node {
    /// Starts a node: binds the TCP receiver, joins the multicast group, and sends the
    /// first heartbeat at once. Returns the handle and the stream of events.
    pub async fn start(config: Config) -> Result<(Self, Events), StartError> {
        config.validate()?;
        // The receiver comes first, so peers that hear our first heartbeat can connect.
        let listener = bind_receiver(&config).await?;
        let port = listener
            .local_addr()
            .map_err(|source| bind_error(&config, source))?
            .port();

        let mut rng = rand::rng();
        let id = MemberId::random(&mut rng);
        let record = MemberRecord {
            alive_ms: 0,
            tcp_port: i32::from(port),
            secure_port: -1,
            // Without multicast, heartbeats arrive on our own address over UDP.
            udp_port: if config.discovery.multicast {
                -1
            } else {
                i32::from(port)
            },
            host: config.bind,
            command: Bytes::from_static(COHORT_COMMAND),
            domain: config.domain.clone(),
            unique_id: id.0,
            payload: config.payload.clone(),
        };
        let local = Member::from_record(&record).expect("port fits");
        let security = config.keyring.clone().map(Security::new);
        let peers = Peers::new(
            PeerSettings {
                ack_timeout: config.ack_timeout,
                connect_timeout: config.connect_timeout,
                max_in_flight: config.max_in_flight_per_member,
                busy_poll: config.busy_poll,
            },
            security.clone(),
        );
        let (group_inbox_tx, group_inbox_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::new(
            local.clone(),
            record.to_bytes(),
            peers,
            group_inbox_tx,
            security,
        ));

        let mut tasks = Vec::new();
        let (socket, beacon) = if config.discovery.multicast {
            let socket =
                heartbeat::open_socket(&config).map_err(|source| StartError::Multicast {
                    group: config.multicast.group,
                    port: config.multicast.port,
                    interface: config.multicast_interface(),
                    source,
                })?;
            let group = SocketAddr::from((config.multicast.group, config.multicast.port));
            (socket, heartbeat::Beacon::Multicast(group))
        } else {
            // Heartbeats arrive on our own address and port, over UDP.
            let socket = heartbeat::open_unicast_socket(local.addr)
                .map_err(|source| bind_error(&config, source))?;
            let candidates = Arc::new(Candidates::default());
            tasks.extend(discovery::start(
                &config.discovery,
                config.domain.clone(),
                local.addr,
                candidates.clone(),
                shared.security.clone(),
            ));
            let beacon = heartbeat::Beacon::Unicast {
                local: local.addr,
                candidates,
                probe_interval: config.discovery.probe_interval,
            };
            (socket, beacon)
        };

        let (events_tx, events_rx) = mpsc::channel(config.event_capacity);
        let (membership_tx, membership_rx) = mpsc::unbounded_channel();
        let (heartbeat_tx, heartbeat_rx) = mpsc::channel(4);
        let (group_tx, group_rx) = mpsc::channel(4);
        let group_core = Group::new(
            config.group.clone().cluster(config.domain.clone()),
            GroupMember {
                id,
                addr: local.addr,
            },
            std::time::Instant::now(),
            rng.next_u64(),
        );
        let core = Membership::new(
            MembershipConfig::default()
                .frequency(config.heartbeat_interval)
                .drop_time(config.drop_time)
                .domain_filter(config.domain_filter),
            record,
            std::time::Instant::now(),
        );
        tasks.extend([
            tokio::spawn(receiver::run(
                listener,
                shared.clone(),
                events_tx.clone(),
                config.max_message_size,
                config.busy_poll,
                config.inbound,
            )),
            tokio::spawn(forward_membership_events(membership_rx, events_tx)),
            tokio::spawn(group::run(
                group_core,
                group_inbox_rx,
                group_rx,
                shared.clone(),
                membership_tx.clone(),
                heartbeat_tx.clone(),
            )),
            tokio::spawn(heartbeat::run(
                core,
                socket,
                beacon,
                heartbeat_rx,
                shared.clone(),
                membership_tx,
            )),
        ]);
        info!(member = %local, domain = %String::from_utf8_lossy(&config.domain), "node started");
        let node = Self {
            inner: Arc::new(Inner {
                config,
                shared,
                heartbeat: heartbeat_tx,
                group: group_tx,
                tasks: Tasks::new(tasks),
            }),
        };
        Ok((node, Events { rx: events_rx }))
    }

    /// The local member, as the others see it.
    pub fn local_member(&self) -> &Member {
        &self.inner.shared.local
    }

    /// The local member's current id. It is [`local_member`](Self::local_member)'s id
    /// until the group removes this node and it rejoins under a new one
    /// ([`Event::Rejoined`]).
    pub fn id(&self) -> MemberId {
        *self.inner.shared.local_id.borrow()
    }

    /// The group's current view: the agreed member list, oldest (the coordinator) first.
    /// `None` until the node has joined (or formed) a group, and while it rejoins.
    pub fn view(&self) -> Option<View> {
        self.inner.shared.view.borrow().clone()
    }

    /// A receiver that always holds the current view and wakes on every change.
    pub fn watch_view(&self) -> watch::Receiver<Option<View>> {
        self.inner.shared.view.subscribe()
    }

    /// The node's cluster key state, if it was started with a
    /// [`keyring`](Config::keyring): change the keyring of the running node through it
    /// (install, use, remove, list), and read its counters.
    pub fn security(&self) -> Option<&Security> {
        self.inner.shared.security.as_ref()
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The members currently alive (without the local one), ordered by address.
    pub fn members(&self) -> Vec<Member> {
        self.inner.shared.members.borrow().as_ref().clone()
    }

    /// A receiver that always holds the current member list and wakes on every change.
    pub fn watch_members(&self) -> watch::Receiver<Arc<Vec<Member>>> {
        self.inner.shared.members.subscribe()
    }

    /// Counters of what the node received.
    pub fn stats(&self) -> NodeStats {
        let c = &self.inner.shared.counters;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        NodeStats {
            membership: self.inner.shared.membership_stats(),
            messages_received: get(&c.messages_received),
            malformed_frames: get(&c.malformed_frames),
            connections_accepted: get(&c.connections_accepted),
            inbound: c.inbound.stats(),
            security: self
                .inner
                .shared
                .security
                .as_ref()
                .map(Security::stats)
                .unwrap_or_default(),
        }
    }

    /// Sends `data` to every current member. See [`send`](Self::send).
    pub async fn send_to_all(
        &self,
        data: impl Into<Bytes>,
        options: SendOptions,
    ) -> Result<SendReport, SendError> {
        let members = self.members();
        self.send(&members, data, options).await
    }

    /// Sends `data` to each of `to` in parallel, over one persistent connection per member.
    ///
    /// With [`SendOptions::USE_ACK`] (the default options) the send succeeds when every
    /// destination acknowledged. A destination that fails is tried again
    /// ([`Config::retries`] times); if it still fails, the send returns a [`SendError`]
    /// listing every failed member and why, while the others did get the message. With
    /// [`SendOptions::SYNCHRONIZED_ACK`] the ACK means the receiver's application handled
    /// it. With [`SendOptions::ASYNCHRONOUS`] the message is queued and the call returns
    /// at once. The message always goes out as a byte message, and never with
    /// [`SendOptions::COHORT_CONTROL`] (cleared: that flag is the group protocol's).
    pub async fn send(
        &self,
        to: &[Member],
        data: impl Into<Bytes>,
        options: SendOptions,
    ) -> Result<SendReport, SendError> {
        // The group protocol's flag is not the application's to set: a frame carrying it
        // would go to every receiver's group layer instead of its application.
        let options = options
            .without(SendOptions::COHORT_CONTROL)
            .with(SendOptions::BYTE_MESSAGE);
        let frame = self.encode(options, &data.into());
        if options.contains(SendOptions::ASYNCHRONOUS) {
            let node = self.clone();
            let targets = to.to_vec();
            tokio::spawn(async move {
                if let Err(e) = node.deliver(&targets, frame, options).await {
                    tracing::warn!(error = %e, "asynchronous send failed");
                }
            });
            return Ok(SendReport {
                acked: Vec::new(),
                queued: to.to_vec(),
            });
        }
        self.deliver(to, frame, options).await
    }

    fn encode(&self, options: SendOptions, data: &Bytes) -> Bytes {
        self.inner.shared.encode_frame(options, data)
    }

    async fn deliver(
        &self,
        to: &[Member],
        frame: Bytes,
        options: SendOptions,
    ) -> Result<SendReport, SendError> {
        let peers = &self.inner.shared.peers;
        let wants_ack = options.wants_ack();
        let mut delivery = Delivery::new(to.iter().cloned(), self.inner.config.retries);
        let attempt = |index: usize| {
            let frame = frame.clone();
            async move { (index, peers.submit(&to[index], frame, wants_ack).await) }
        };
        let mut attempts: FuturesUnordered<_> = (0..to.len()).map(attempt).collect();
        while let Some((index, outcome)) = attempts.next().await {
            match outcome {
                Ok(()) => delivery.acked(index),
                Err(reason) => {
                    if let NextStep::Retry { attempt: n } = delivery.failed(index, reason.clone()) {
                        tracing::debug!(member = %to[index], %reason, attempt = n, "retrying send");
                        attempts.push(attempt(index));
                    }
                }
            }
        }
        let report = delivery.into_report(FailureReason::ShuttingDown);
        if report.is_success() {
            Ok(SendReport {
                acked: report.acked,
                queued: Vec::new(),
            })
        } else {
            Err(SendError {
                acked: report.acked,
                failed: report.failed,
            })
        }
    }

    /// Leaves the cluster: announces the shutdown so the others drop this member at once,
    /// then closes the receiver and every connection. The event stream ends. Calling it
    /// again does nothing. (Dropping the last handle also stops the node, but without the
    /// announcement.)
    pub async fn shutdown(&self) {
        // Leave the group first: the coordinator installs a view without us at once.
        let (left_tx, left_rx) = oneshot::channel();
        if self
            .inner
            .group
            .send(group::Command::Leave(left_tx))
            .await
            .is_ok()
        {
            let _ = left_rx.await;
        }
        let (done_tx, done_rx) = oneshot::channel();
        if self
            .inner
            .heartbeat
            .send(HeartbeatCommand::Shutdown(done_tx))
            .await
            .is_ok()
        {
            let _ = done_rx.await;
        }
        self.inner.tasks.stop().await;
        self.inner.shared.peers.clear();
        info!(member = %self.inner.shared.local, "node stopped");
    }
}

/// Dropping the last handle of a node stops it: its tasks end, so its receiver stops
/// listening and its connections close. Without [`Node::shutdown`] no leave is announced;
/// the others remove it as they would a crashed member (the ring sees its receiver gone).
impl Drop for Inner {
    fn drop(&mut self) {
        // The tasks are aborted as `tasks` drops.
        self.shared.peers.clear();
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("local", &self.inner.shared.local)
            .finish_non_exhaustive()
    }
}

async fn forward_membership_events(
    mut rx: mpsc::UnboundedReceiver<Event>,
    tx: mpsc::Sender<Event>,
) {
    while let Some(event) = rx.recv().await {
        if tx.send(event).await.is_err() {
            // The application dropped its stream; keep draining so nothing piles up.
            continue;
        }
    }
}

async fn bind_receiver(config: &Config) -> Result<TcpListener, StartError> {
    if config.port == 0 {
        return TcpListener::bind((config.bind, 0))
            .await
            .map_err(|source| bind_error(config, source));
    }
    let last = config.port.saturating_add(config.port_range);
    let mut last_error = None;
    for port in config.port..=last {
        match TcpListener::bind((config.bind, port)).await {
            Ok(listener) => return Ok(listener),
            Err(e) => last_error = Some(e),
        }
    }
    Err(bind_error(
        config,
        last_error.unwrap_or_else(|| std::io::Error::other("no port tried")),
    ))
}

fn bind_error(config: &Config, source: std::io::Error) -> StartError {
    StartError::Bind {
        addr: config.bind,
        first: config.port,
        last: config.port.saturating_add(config.port_range),
        source,
    }
}
