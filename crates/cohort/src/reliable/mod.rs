//! Reliable, ordered group messaging over UDP or TCP at run time (SPEC §5).
//!
//! [`ReliableChannel`] drives the sans-IO core [`cohort_proto::reliable::Reliable`] with
//! real sockets and a clock: a member multicasts to its view, and every member of the view
//! delivers every message exactly once, in the sender's order, over lossy UDP; unicasts
//! to one member get the same guarantee. Flow control is real backpressure:
//! [`ReliableChannel::multicast`] waits while slow receivers have not consumed the window,
//! and a receiver that does not call [`ReliableChannel::recv`] slows its senders down.
//!
//! # Sockets
//!
//! Every member has two UDP sockets:
//! - the **unicast socket**, bound to the member's own address (its view address, see
//!   below). Everything the member sends leaves from it (multicasts too), so a datagram's
//!   source address names its sender; unicasts and fan-out copies arrive on it.
//! - with [`multicast`](ReliableChannelConfig::multicast) set, the **multicast socket**,
//!   bound to the group address and port (shared with the other members on the host) and
//!   joined on [`interface`](ReliableChannelConfig::interface). A datagram for the whole
//!   group is then sent once, to the group. Without it, the runtime sends one copy to each
//!   other member of the view (fan-out).
//!
//! With [`transport`](ReliableChannelConfig::transport) set to [`Transport::Tcp`] there are
//! no UDP sockets: the member listens on TCP at its own address and keeps one connection
//! to each other member of the view (the lower member id calls, and calls again with
//! back-off when the connection drops; connections to members that left the view are
//! closed). A connection starts with a hello from each side naming its member, then
//! carries one length-prefixed frame per datagram
//! ([`wire::cohort::stream`](cohort_proto::wire::cohort::stream)); a group datagram is
//! written to every connection, as with fan-out. The protocol is the same as over UDP:
//! datagrams lost with a dropped connection, or dropped because a member's send queue was
//! full, are repaired by NAKs and stability gossip.
//!
//! # Addresses
//!
//! Members are known by their [`View`] entries. A member's UDP address is its view
//! address with the port moved by [`port_offset`](ReliableChannelConfig::port_offset):
//! for the view of a [`Node`](crate::Node), whose view addresses are the channel
//! receivers' TCP addresses, the reliable socket of a member listens on the same IP at
//! TCP port + offset (default [`DEFAULT_PORT_OFFSET`]; the TCP port itself is taken by the
//! unicast heartbeat socket when multicast discovery is off). For a static view whose
//! addresses already are the UDP addresses, use offset 0.
//!
//! # Driver
//!
//! One tokio task per channel owns the sockets: it reads datagrams in batches, feeds them
//! to the core with the current time, re-arms one timer from `poll_timeout`, closes the
//! open datagrams at the end of every batch ([`Reliable::flush`]) and sends what the core
//! produced. Senders and receivers call into the core directly (under a short lock) and
//! wake the driver, so a burst of sends is bundled into few datagrams.

mod driver;
mod socket;
mod tcp;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cohort_proto::MemberId;
use cohort_proto::group::View;
use cohort_proto::reliable::{self as core, Reliable, SendOpts};
use tokio::sync::{Notify, watch};

use crate::lifecycle::Tasks;
use crate::security::{Keyring, Security};

pub use cohort_proto::reliable::{Delivery, ReliableConfig, ReliableStats};

/// A view change as a channel's application sees it (see
/// [`ReliableChannel::subscribe_events`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChannelEvent {
    /// A flush began: sends wait until [`ChannelEvent::Unblock`]; messages of the current
    /// view may still be delivered.
    Block,
    /// A view was installed (after its flush, with view synchrony): every delivery after
    /// this belongs to `view` ([`Delivery::view_seq`]), and waiting sends go out in it.
    Unblock {
        /// The view installed.
        view: cohort_proto::group::ViewId,
    },
}

/// How many channel events a subscriber may fall behind before it misses some.
const EVENT_BACKLOG: usize = 64;
pub use tcp::TcpStats;

/// The default [`port_offset`](ReliableChannelConfig::port_offset) between a node's TCP
/// receiver port and its reliable UDP port.
pub const DEFAULT_PORT_OFFSET: u16 = 100;

/// Settings of a [`ReliableChannel`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReliableChannelConfig {
    /// How datagrams travel: UDP (the default) or TCP.
    pub transport: Transport,
    /// The multicast group and port, or `None` to send group datagrams to every member
    /// by unicast (fan-out). UDP only: must be `None` with [`Transport::Tcp`].
    pub multicast: Option<SocketAddrV4>,
    /// The interface to multicast on and to join the group on (the node's address).
    /// UDP multicast only.
    pub interface: Ipv4Addr,
    /// Added to a view address's port to get the member's UDP address (see the module
    /// docs). Also applied to the local member's own view address.
    pub port_offset: u16,
    /// Requested kernel send and receive buffer size of each socket, in bytes. UDP only:
    /// over TCP the kernel sizes each connection's buffers itself.
    pub socket_buffer: usize,
    /// The protocol settings.
    pub core: ReliableConfig,
    /// How long a receiving member keeps polling its UDP sockets, after a round that
    /// received datagrams, before it sleeps; zero turns this off. Under a stream of
    /// datagrams it is then never asleep, so the sender pays no wake-up in `sendto` and
    /// the receiver none in epoll. A member whose application is multicasting spins only
    /// after rounds that delivered others' messages (a lone sender's spin on its
    /// acknowledgements slowed the stream), and one that received nothing never: the
    /// cost is up to this much CPU after each received burst, none on an idle channel.
    /// Under a dense stream a spin may last longer, by as much CPU time as the member
    /// spent on real work since its last spin (up to 20 times this), so it can outlast a
    /// short pause of the sender; and the spin yields the CPU to any other thread or
    /// process that waits for it. UDP only. Default 50 µs, like
    /// [`Config::busy_poll`](crate::Config::busy_poll).
    pub busy_poll: Duration,
    /// Cluster-key mode: seal every datagram (or TCP stream) with the ring's primary key
    /// and refuse what does not open (see [`Config::keyring`](crate::Config::keyring)).
    /// [`ReliableChannel::for_node`] ignores it when the node has a keyring: the channel
    /// then shares the node's ([`Node::security`](crate::Node::security)). With a key,
    /// [`max_datagram_size`](ReliableConfig::max_datagram_size) must leave room for
    /// [`security::OVERHEAD`](cohort_proto::security::OVERHEAD) bytes in a UDP datagram.
    /// Default: `None`.
    pub keyring: Option<Keyring>,
    /// Limits on inbound TCP connections ([`Transport::Tcp`] only): `max_connections`
    /// caps the connections still in their hello exchange (a member's connection sends
    /// its hello at once and then belongs to that member's link, one per member of the
    /// view); at the cap a new connection replaces the oldest one still in its hello. A
    /// connection holds at most one 64 KiB frame (and, with a key, one sealed record) of
    /// unfinished bytes whatever the limits say. Default: `InboundLimits::default()`.
    pub inbound: crate::InboundLimits,
    /// View-synchronous delivery (SPEC §6) for a channel that follows a group's views
    /// ([`for_node`](ReliableChannel::for_node), [`start`](ReliableChannel::start)):
    /// every member that survives a view change delivered the same messages of the old
    /// view, a crashed member's included, before it installs the new one; a message is
    /// delivered only in the view it was sent in. Sends wait during the flush
    /// ([`ChannelEvent::Block`] .. [`ChannelEvent::Unblock`]). Every member of the group
    /// must run the channel (the flush waits for each survivor). Default `true`; `false`
    /// trades the guarantee for a view change without a flush.
    /// [`start_static`](ReliableChannel::start_static) has no view changes and ignores it.
    pub view_synchrony: bool,
}

impl Default for ReliableChannelConfig {
    fn default() -> Self {
        Self {
            transport: Transport::Udp,
            multicast: None,
            interface: Ipv4Addr::LOCALHOST,
            port_offset: DEFAULT_PORT_OFFSET,
            socket_buffer: 8 << 20,
            core: ReliableConfig::lan(),
            busy_poll: Duration::from_micros(50),
            keyring: None,
            inbound: crate::InboundLimits::default(),
            view_synchrony: true,
        }
    }
}

/// How a [`ReliableChannel`] carries its datagrams (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Transport {
    /// UDP datagrams: multicast when [`multicast`](ReliableChannelConfig::multicast) is
    /// set, else one copy per member (fan-out).
    #[default]
    Udp,
    /// One TCP connection per pair of members, each datagram a length-prefixed frame.
    Tcp,
}

impl ReliableChannelConfig {
    /// The UDP (or, over TCP, listening) address of a member whose view address is
    /// `view_addr`.
    pub fn udp_addr(&self, view_addr: SocketAddr) -> SocketAddr {
        SocketAddr::new(
            view_addr.ip(),
            view_addr.port().wrapping_add(self.port_offset),
        )
    }
}

/// The channel could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReliableStartError {
    /// The protocol settings are invalid.
    #[error(transparent)]
    Config(#[from] core::ConfigError),
    /// The local member is not in the view it was started with, so its address is unknown.
    #[error("the local member {0} is not in the view")]
    NotInView(MemberId),
    /// The unicast socket (or, over TCP, the listening socket) could not be bound.
    #[error("cannot bind the reliable socket on {addr}: {source}")]
    Bind {
        /// The address tried.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The multicast socket could not be set up.
    #[error("cannot set up reliable multicast on {group} via {interface}: {source}")]
    Multicast {
        /// The group and port.
        group: SocketAddrV4,
        /// The interface.
        interface: Ipv4Addr,
        /// The error.
        source: std::io::Error,
    },
    /// A multicast group was configured with the TCP transport.
    #[error("multicast is a UDP setting; it must be None with the TCP transport")]
    MulticastOverTcp,
    /// With a key, a sealed datagram of `max_datagram_size` would not fit in UDP.
    #[error(
        "max_datagram_size {0} leaves no room for sealing: at most {max} with a key",
        max = MAX_SEALED_PLAINTEXT
    )]
    DatagramTooLargeToSeal(usize),
}

/// The largest datagram the core may produce when datagrams are sealed: the largest UDP
/// payload less what sealing adds.
const MAX_SEALED_PLAINTEXT: usize = 65_507 - cohort_proto::security::OVERHEAD;

/// A send was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReliableSendError {
    /// The protocol refused it (too large, not in a view, unknown member).
    #[error(transparent)]
    Refused(core::SendError),
    /// The channel was closed.
    #[error("the reliable channel is closed")]
    Closed,
}

/// Counters of a channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReliableChannelStats {
    /// The protocol's counters.
    pub core: ReliableStats,
    /// Datagrams from an address that is not a member of the current view (dropped).
    pub unknown_source: u64,
    /// Datagrams the kernel refused to send (the protocol retransmits them).
    pub send_errors: u64,
    /// Datagrams received from the sockets.
    pub datagrams_received: u64,
    /// Datagrams handed to the sockets (fan-out copies counted one by one).
    pub datagrams_sent: u64,
    /// The TCP transport's counters.
    pub tcp: TcpStats,
}

/// State shared by the handles and the driver.
struct Shared {
    core: Mutex<Reliable>,
    /// Wakes the driver: something was queued to send, or a delivery was taken.
    wake_driver: Notify,
    /// Credit returned: blocked senders retry.
    credit: Notify,
    /// Deliveries are waiting.
    deliveries: Notify,
    /// Receivers registered on `deliveries` (so producers of deliveries skip
    /// `notify_waiters`, which takes a lock, when nobody waits).
    receivers_waiting: AtomicUsize,
    /// The driver stopped (closed or failed).
    closed: std::sync::atomic::AtomicBool,
    counters: Mutex<ReliableChannelStats>,
    /// What the TCP transport's connection limits did.
    inbound: Arc<crate::transport::limits::InboundCounters>,
    local_addr: SocketAddr,
    /// Own multicasts are delivered locally at once, by the sending handle.
    deliver_own: bool,
    /// Block and unblock, for the application.
    events: tokio::sync::broadcast::Sender<ChannelEvent>,
}

impl Shared {
    fn core(&self) -> MutexGuard<'_, Reliable> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Wakes the receivers waiting for deliveries. Call it after queueing deliveries and
    /// releasing the core's lock: a receiver counts itself in `receivers_waiting` before
    /// it looks at the queue under that lock, so it is either seen here or sees the
    /// deliveries.
    fn notify_deliveries(&self) {
        if self.receivers_waiting.load(Ordering::SeqCst) > 0 {
            self.deliveries.notify_waiters();
        }
    }
}

/// Counts a waiting receiver in [`Shared::receivers_waiting`] while it lives.
struct WaitingReceiver<'a>(&'a AtomicUsize);

impl<'a> WaitingReceiver<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for WaitingReceiver<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The sockets of the configured transport, open before the driver starts.
enum Io {
    Udp(socket::Sockets),
    Tcp(tokio::net::TcpListener),
}

/// A member's reliable, ordered messaging over UDP or TCP. Cheap to clone; the channel stops
/// when [`shutdown`](Self::shutdown) is called or the last clone is dropped (the crate's
/// one lifecycle, as for [`Node`](crate::Node)).
///
/// ```no_run
/// # async fn demo(node: cohort::Node) -> Result<(), Box<dyn std::error::Error>> {
/// use cohort::reliable::{ReliableChannel, ReliableChannelConfig};
///
/// let channel = ReliableChannel::for_node(&node, ReliableChannelConfig::default())?;
/// channel.multicast(&b"hello"[..]).await?;
/// while let Some(d) = channel.recv().await {
///     println!("{}: {:?}", d.from, d.payload);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ReliableChannel {
    shared: Arc<Shared>,
    /// The driver task: aborted when the last clone goes.
    driver: Arc<Tasks>,
}

impl std::fmt::Debug for ReliableChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReliableChannel")
            .field("local_addr", &self.shared.local_addr)
            .finish_non_exhaustive()
    }
}

impl ReliableChannel {
    /// Starts the channel of member `local`, following the views of `views`. The local
    /// member's UDP address comes from its entry in the current view, which must exist.
    /// Must be called inside a tokio runtime.
    pub fn start(
        local: MemberId,
        config: ReliableChannelConfig,
        views: watch::Receiver<Option<View>>,
    ) -> Result<Self, ReliableStartError> {
        let security = config.keyring.clone().map(Security::new);
        Self::start_with(local, config, views, security)
    }

    fn start_with(
        local: MemberId,
        config: ReliableChannelConfig,
        mut views: watch::Receiver<Option<View>>,
        security: Option<Security>,
    ) -> Result<Self, ReliableStartError> {
        if security.is_some() && config.core.max_datagram_size > MAX_SEALED_PLAINTEXT {
            return Err(ReliableStartError::DatagramTooLargeToSeal(
                config.core.max_datagram_size,
            ));
        }
        let now = Instant::now();
        let mut core_config = config.core.clone();
        core_config.view_synchrony = config.view_synchrony;
        let mut core = Reliable::try_new(core_config, local, now)?;
        // The current view is installed before the first send can come.
        let view = views.borrow_and_update().clone();
        let view_addr = view
            .as_ref()
            .and_then(|v| v.members.iter().find(|m| m.id == local).map(|m| m.addr))
            .ok_or(ReliableStartError::NotInView(local))?;
        if let Some(view) = &view {
            core.install_view(view, now);
        }
        let local_addr = config.udp_addr(view_addr);
        let io = match config.transport {
            Transport::Udp => Io::Udp(socket::Sockets::open(&config, local_addr)?),
            Transport::Tcp if config.multicast.is_some() => {
                return Err(ReliableStartError::MulticastOverTcp);
            }
            Transport::Tcp => Io::Tcp(tcp::listen(local_addr)?),
        };
        let shared = Arc::new(Shared {
            core: Mutex::new(core),
            wake_driver: Notify::new(),
            credit: Notify::new(),
            deliveries: Notify::new(),
            receivers_waiting: AtomicUsize::new(0),
            closed: false.into(),
            counters: Mutex::new(ReliableChannelStats::default()),
            inbound: Arc::default(),
            local_addr,
            deliver_own: config.core.deliver_own,
            events: tokio::sync::broadcast::channel(EVENT_BACKLOG).0,
        });
        let task = match io {
            Io::Udp(sockets) => tokio::spawn(driver::run(
                shared.clone(),
                config,
                sockets,
                views,
                security,
            )),
            Io::Tcp(listener) => {
                tokio::spawn(tcp::run(shared.clone(), config, listener, views, security))
            }
        };
        // A first round at once: installing the first view may have produced work (with
        // view synchrony, the gossip that lets the other members install it too).
        shared.wake_driver.notify_one();
        Ok(Self {
            shared,
            driver: Arc::new(Tasks::new(vec![task])),
        })
    }

    /// Starts the channel with a fixed view (no group layer), for example a benchmark's
    /// list of members. With `port_offset` 0 the view's addresses are the UDP addresses.
    pub fn start_static(
        local: MemberId,
        mut config: ReliableChannelConfig,
        view: View,
    ) -> Result<Self, ReliableStartError> {
        // The sender is dropped at once: the driver keeps the last view.
        let (_, rx) = watch::channel(Some(view));
        // One view for good: nothing to flush, and no member waits for an install.
        config.view_synchrony = false;
        Self::start(local, config, rx)
    }

    /// Starts the channel of `node`, following the node's group views (see the module docs
    /// for the addresses). The node must already be in a view.
    pub fn for_node(
        node: &crate::node::Node,
        config: ReliableChannelConfig,
    ) -> Result<Self, ReliableStartError> {
        let security = match node.security() {
            Some(s) => Some(s.clone()),
            None => config.keyring.clone().map(Security::new),
        };
        Self::start_with(node.id(), config, node.watch_view(), security)
    }

    /// The local unicast address.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The local member.
    pub fn local(&self) -> MemberId {
        self.shared.core().local()
    }

    /// Multicasts `payload` to every member of the view (itself included when
    /// [`deliver_own`](ReliableConfig::deliver_own) is set), reliably and in order. Waits
    /// while the flow-control window is full.
    pub async fn multicast(&self, payload: impl Into<Bytes>) -> Result<(), ReliableSendError> {
        self.multicast_with(payload.into(), SendOpts::default())
            .await
    }

    /// Multicasts `payload` *out of band*, for urgent traffic: as reliable as
    /// [`multicast`](Self::multicast) (every member delivers it exactly once, retransmitted
    /// if lost), but each member delivers it as soon as it arrives, without waiting for the
    /// sender's earlier messages, so it may overtake them. The delivery has
    /// [`oob`](Delivery::oob) set. It uses the same flow-control window as in-order sends.
    pub async fn multicast_oob(&self, payload: impl Into<Bytes>) -> Result<(), ReliableSendError> {
        self.multicast_with(payload.into(), SendOpts::OOB).await
    }

    async fn multicast_with(
        &self,
        payload: Bytes,
        opts: SendOpts,
    ) -> Result<(), ReliableSendError> {
        self.send_with(|core, now| core.multicast(payload.clone(), opts, now))
            .await
    }

    /// Sends `payload` to member `to` only, reliably and in order with the other unicasts
    /// to `to`. Waits while the flow-control window to `to` is full.
    pub async fn send_to(
        &self,
        to: MemberId,
        payload: impl Into<Bytes>,
    ) -> Result<(), ReliableSendError> {
        self.send_to_with(to, payload.into(), SendOpts::default())
            .await
    }

    /// Sends `payload` to member `to` only, out of band: reliable like
    /// [`send_to`](Self::send_to), but delivered as soon as it arrives, so it may overtake
    /// earlier unicasts to `to` (see [`multicast_oob`](Self::multicast_oob)).
    pub async fn send_to_oob(
        &self,
        to: MemberId,
        payload: impl Into<Bytes>,
    ) -> Result<(), ReliableSendError> {
        self.send_to_with(to, payload.into(), SendOpts::OOB).await
    }

    async fn send_to_with(
        &self,
        to: MemberId,
        payload: Bytes,
        opts: SendOpts,
    ) -> Result<(), ReliableSendError> {
        self.send_with(|core, now| core.unicast(to, payload.clone(), opts, now))
            .await
    }

    /// Multicasts every payload of `payloads`, in order, as if each were given to
    /// [`multicast`](Self::multicast) in turn, but taking the core's lock and waking the
    /// driver once per run of messages the flow-control window admits rather than once
    /// per message: the way to send a burst. Waits while the window is full. If one is
    /// refused (too large, not in a view) or the channel closes, the messages before it
    /// were sent and it and the rest were not; the same holds if the future is dropped
    /// while it waits for credit. Yields to the runtime before it returns, so the driver
    /// gets to send the burst.
    pub async fn multicast_many<I>(&self, payloads: I) -> Result<(), ReliableSendError>
    where
        I: IntoIterator,
        I::Item: Into<Bytes>,
    {
        let mut payloads = payloads.into_iter().map(Into::into).peekable();
        let mut waited = false;
        while payloads.peek().is_some() {
            // Registered before trying (once a try failed), so credit returned in between
            // is not missed; the first try skips it, which is the common case.
            let mut credit = pin!(self.shared.credit.notified());
            if waited {
                credit.as_mut().enable();
            }
            if self.shared.is_closed() {
                return Err(ReliableSendError::Closed);
            }
            let mut sent = 0usize;
            let result = {
                let mut core = self.shared.core();
                let now = Instant::now();
                loop {
                    let Some(next) = payloads.peek() else {
                        break Ok(());
                    };
                    if core.can_multicast(next.len()) {
                        let payload = payloads.next().unwrap_or_default();
                        if let Err(e) = core.multicast(payload, SendOpts::default(), now) {
                            break Err(e);
                        }
                        sent += 1;
                    } else {
                        // Refused: let the core record why (and that credit is awaited).
                        let next = next.clone();
                        match core.multicast(next, SendOpts::default(), now) {
                            Ok(()) => {
                                payloads.next();
                                sent += 1;
                            }
                            Err(e) => break Err(e),
                        }
                    }
                }
            };
            if sent > 0 {
                self.sent_something();
            }
            match result {
                Ok(()) => {
                    // Let the driver send the burst now: on a single-threaded runtime it
                    // runs only when this task yields, and a sender that always had
                    // credit would otherwise fill the whole window before anything
                    // leaves (a stop-and-go of window-sized bursts).
                    tokio::task::yield_now().await;
                    return Ok(());
                }
                Err(core::SendError::NoCredit | core::SendError::Blocked) if waited || sent > 0 => {
                    // What is queued must go out for credit to come back.
                    self.shared.wake_driver.notify_one();
                    if waited {
                        credit.await;
                    }
                    waited = true;
                }
                Err(core::SendError::NoCredit | core::SendError::Blocked) => waited = true,
                Err(e) => return Err(ReliableSendError::Refused(e)),
            }
        }
        Ok(())
    }

    async fn send_with(
        &self,
        mut send: impl FnMut(&mut Reliable, Instant) -> Result<(), core::SendError>,
    ) -> Result<(), ReliableSendError> {
        let mut waited = false;
        loop {
            // Registered before trying (once a try failed), so credit returned in between
            // is not missed; the first try skips it, which is the common case.
            let mut credit = pin!(self.shared.credit.notified());
            if waited {
                credit.as_mut().enable();
            }
            if self.shared.is_closed() {
                return Err(ReliableSendError::Closed);
            }
            let result = send(&mut self.shared.core(), Instant::now());
            match result {
                Ok(()) => {
                    self.sent_something();
                    // A send with credit never waits; this lets a loop of sends yield now
                    // and then (every tokio budget), so that on a single-threaded runtime
                    // the driver sends as they go instead of after the whole window.
                    tokio::task::coop::consume_budget().await;
                    return Ok(());
                }
                // Out of credit, or a flush is under way: the driver wakes us when credit
                // returns or the flush ends.
                Err(core::SendError::NoCredit | core::SendError::Blocked) => {
                    if waited {
                        // What is queued must go out for credit to come back.
                        self.shared.wake_driver.notify_one();
                        credit.await;
                    }
                    waited = true;
                }
                Err(e) => return Err(ReliableSendError::Refused(e)),
            }
        }
    }

    /// After a send: the driver has datagrams to close, and own multicasts may be
    /// waiting for delivery.
    fn sent_something(&self) {
        self.shared.wake_driver.notify_one();
        if self.shared.deliver_own {
            self.shared.notify_deliveries();
        }
    }

    /// The next delivered message, waiting for one; `None` once the channel is closed.
    pub async fn recv(&self) -> Option<Delivery> {
        let mut out = Vec::with_capacity(1);
        self.recv_many(&mut out, 1).await;
        out.pop()
    }

    /// Moves up to `max` delivered messages into `out`, waiting until there is at least
    /// one. Returns how many; 0 once the channel is closed.
    pub async fn recv_many(&self, out: &mut Vec<Delivery>, max: usize) -> usize {
        // The first look skips registering as a waiter: under load there is something.
        let mut waiting = None;
        loop {
            let mut ready = pin!(self.shared.deliveries.notified());
            if waiting.is_some() {
                ready.as_mut().enable();
            }
            let (n, output) = {
                let mut core = self.shared.core();
                let n = core.poll_deliveries(out, max);
                (n, core.has_pending_work())
            };
            if n > 0 {
                if output {
                    // Taking deliveries may have released withheld acknowledgements.
                    self.shared.wake_driver.notify_one();
                }
                return n;
            }
            if self.shared.is_closed() {
                return 0;
            }
            match waiting {
                Some(_) => ready.await,
                // Counted before the next look at the queue (see `notify_deliveries`).
                None => waiting = Some(WaitingReceiver::new(&self.shared.receivers_waiting)),
            }
        }
    }

    /// A delivered message if one is waiting.
    pub fn try_recv(&self) -> Option<Delivery> {
        let (d, output) = {
            let mut core = self.shared.core();
            (core.poll_delivery(), core.has_pending_work())
        };
        if d.is_some() && output {
            self.shared.wake_driver.notify_one();
        }
        d
    }

    /// Block and unblock around every view change, and every view installed (see
    /// [`ChannelEvent`]), from now on. A subscriber that falls more than 64 events behind
    /// misses the oldest (its receiver says how many).
    pub fn subscribe_events(&self) -> tokio::sync::broadcast::Receiver<ChannelEvent> {
        self.shared.events.subscribe()
    }

    /// True while a flush is under way (or the first view is not installed yet): sends
    /// wait.
    pub fn is_blocked(&self) -> bool {
        self.shared.core().is_blocked()
    }

    /// The view installed in the channel: the group's, once its flush ended.
    pub fn view(&self) -> Option<View> {
        self.shared.core().view().cloned()
    }

    /// Counters of the protocol and the sockets.
    pub fn stats(&self) -> ReliableChannelStats {
        let core = self.shared.core().stats();
        let mut stats = self
            .shared
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        stats.core = core;
        stats.tcp.inbound = self.shared.inbound.stats();
        stats
    }

    /// Stops the driver and closes the sockets, on every clone; returns once they are
    /// closed (the port can be bound again). Messages not yet sent are lost; waiting sends
    /// fail with [`ReliableSendError::Closed`] and `recv` returns `None`. Calling it again
    /// does nothing. Dropping the last clone also stops the channel.
    pub async fn shutdown(&self) {
        self.driver.stop().await;
        self.shared.mark_closed();
    }

    /// The former name of [`shutdown`](Self::shutdown).
    #[deprecated(note = "renamed `shutdown`, as on every cohort handle")]
    pub async fn close(&self) {
        self.shutdown().await;
    }
}

impl Shared {
    /// Takes the core's events: returns whether senders waiting for credit (or for the
    /// end of a flush) should retry, and passes block and unblock to the application.
    fn take_events(&self, core: &mut Reliable) -> bool {
        let mut retry = false;
        while let Some(event) = core.poll_event() {
            match event {
                core::ReliableEvent::CreditAvailable { .. } => retry = true,
                core::ReliableEvent::Block => {
                    let _ = self.events.send(ChannelEvent::Block);
                }
                core::ReliableEvent::Unblock { view } => {
                    retry = true;
                    let _ = self.events.send(ChannelEvent::Unblock { view });
                }
            }
        }
        retry
    }

    fn mark_closed(&self) {
        self.closed.store(true, Ordering::Release);
        self.credit.notify_waiters();
        self.deliveries.notify_waiters();
    }
}

cohort_proto::config_setters!(ReliableChannelConfig {
    transport: Transport,
    [into] multicast: Option<SocketAddrV4>,
    interface: Ipv4Addr,
    port_offset: u16,
    socket_buffer: usize,
    core: ReliableConfig,
    busy_poll: Duration,
    [into] keyring: Option<Keyring>,
    inbound: crate::InboundLimits,
    view_synchrony: bool,
});
