//! The task that owns the sockets and feeds the core (see the module docs of `reliable`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use cohort_proto::MemberId;
use cohort_proto::group::View;
use cohort_proto::reliable::Destination;
use cohort_proto::security::Purpose;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tracing::{debug, trace, warn};

use super::socket::Sockets;
use super::{ReliableChannelConfig, Shared};
use crate::security::{DatagramOpen, DatagramSeal, Security};

/// Datagrams read from one socket before the core's outputs are handled.
const RECV_BATCH: usize = 256;
/// Sent datagrams handed back to the core per step (it keeps a few buffers).
const RECYCLE_BATCH: usize = 16;
/// The spin allowance earned by working is at most this many times `busy_poll`, and a
/// busy-poll spin lasts at most twice that of wall time, however much of it other work
/// used.
const MAX_SPIN_STRETCH: u32 = 20;
/// A yield in the busy-poll spin that took longer than this gave the CPU to other work
/// (a `sched_yield` that finds nothing else to run takes about 0.2 µs; the runtime's
/// yield adds one I/O poll).
const YIELD_GAVE_WAY: Duration = Duration::from_micros(10);
/// Room for the largest UDP datagram.
const MAX_UDP: usize = 65_536;

/// Where the members are.
#[derive(Default)]
struct Addresses {
    by_id: HashMap<MemberId, SocketAddr>,
    by_addr: HashMap<SocketAddr, MemberId>,
}

impl Addresses {
    fn from_view(view: &View, config: &ReliableChannelConfig) -> Self {
        let mut a = Self::default();
        for m in &view.members {
            let addr = config.udp_addr(m.addr);
            a.by_id.insert(m.id, addr);
            a.by_addr.insert(addr, m.id);
        }
        a
    }
}

pub(super) async fn run(
    shared: Arc<Shared>,
    config: ReliableChannelConfig,
    sockets: Sockets,
    mut views: watch::Receiver<Option<View>>,
    security: Option<Security>,
) {
    let mut driver = Driver {
        seal: DatagramSeal::new(security.as_ref(), Purpose::ReliableDatagram),
        open: DatagramOpen::new(security.as_ref(), Purpose::ReliableDatagram),
        group: config.multicast.map(SocketAddr::V4),
        addresses: Addresses::default(),
        config,
        buf: BytesMut::with_capacity(4 * MAX_UDP),
        received: Vec::new(),
        outgoing: Vec::new(),
        sent: Vec::new(),
        sent_seen: 0,
        was_sending: false,
        spin_allowance: Duration::ZERO,
    };
    // The channel installed the first view; the driver needs its addresses.
    if let Some(view) = &*views.borrow() {
        driver.addresses = Addresses::from_view(view, &driver.config);
    }
    let mut views_open = true;
    let mut deadline: Option<Instant> = None;
    // Whether the last round received a stream worth waiting for: only then does the
    // driver spin (see `Driver::spin`).
    let mut busy = false;
    loop {
        if busy
            && !driver.config.busy_poll.is_zero()
            && driver.spin(&shared, &sockets, deadline).await
        {
            let work = Instant::now();
            // The select below is skipped: look at the views here.
            if views_open && views.has_changed().unwrap_or(false) {
                let view = views.borrow_and_update().clone();
                driver.install(&shared, &view);
            }
            (deadline, busy) = driver.finish_round(&shared, &sockets.unicast, work).await;
            continue;
        }
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let multicast_readable = async {
            match &sockets.multicast {
                Some(s) => s.readable().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = views.changed(), if views_open => match changed {
                Ok(()) => {
                    let view = views.borrow_and_update().clone();
                    driver.install(&shared, &view);
                }
                Err(_) => views_open = false,
            },
            r = sockets.unicast.readable() => if let Err(e) = r {
                warn!(error = %e, "reliable: unicast socket failed");
                break;
            },
            r = multicast_readable => if let Err(e) = r {
                warn!(error = %e, "reliable: multicast socket failed");
                break;
            },
            () = shared.wake_driver.notified() => {}
            () = sleep => {}
        }
        let work = Instant::now();
        driver.read(&sockets.unicast);
        if let Some(m) = &sockets.multicast {
            driver.read(m);
        }
        (deadline, busy) = driver.finish_round(&shared, &sockets.unicast, work).await;
    }
    shared.mark_closed();
}

struct Driver {
    /// The cluster-key seam: seals each datagram before it leaves, opens each one read.
    seal: DatagramSeal,
    open: DatagramOpen,
    config: ReliableChannelConfig,
    group: Option<SocketAddr>,
    addresses: Addresses,
    buf: BytesMut,
    received: Vec<(SocketAddr, Bytes)>,
    outgoing: Vec<(SocketAddr, Bytes)>,
    /// Datagrams sent since the last step, given back to the core for their buffers.
    sent: Vec<Bytes>,
    /// The core's count of own messages sent, at the last step.
    sent_seen: u64,
    /// Whether the application multicast between the two steps before this one.
    was_sending: bool,
    /// Spin time earned beyond `busy_poll` (see `Driver::spin`).
    spin_allowance: Duration,
}

impl Driver {
    fn install(&mut self, shared: &Shared, view: &Option<View>) {
        let Some(view) = view else { return };
        self.addresses = Addresses::from_view(view, &self.config);
        shared.core().install_view(view, Instant::now());
    }

    /// Polls the sockets instead of sleeping (see [`ReliableChannelConfig::busy_poll`]):
    /// under a stream of datagrams the driver is then never asleep, so neither it nor its
    /// peers' `sendto` pay a wake-up. It spins after a round that delivered others'
    /// messages, or that received anything while the application was not multicasting.
    /// A sending member that only gets acknowledgements back does not: its spin slowed a
    /// lone sender by 10 % (it competes with the sender's own work), and those
    /// acknowledgements are few.
    ///
    /// How long: `busy_poll`, plus what the driver earned by working (`Driver::finish_round`),
    /// up to `MAX_SPIN_STRETCH` times `busy_poll`. So under a dense stream a spin can
    /// outlast a pause of the sender (for instance while the scheduler runs something
    /// else on its CPU), while the CPU spent spinning stays at most `busy_poll` per round
    /// beyond the CPU spent on real work; a sparse stream gets short spins.
    ///
    /// The spin is polite: between polls it yields the CPU to whatever else waits for it
    /// (`sched_yield`, then the thread's other tasks), and only the time it spent spinning
    /// itself counts, not yields during which other work ran. On a machine with more
    /// runnable work than CPUs (a sender and three receivers on two cores) the peer it
    /// waits for then gets the CPU at once. Its wall time is bounded as well.
    ///
    /// Returns `true` as soon as there is work (datagrams read, the application woke the
    /// driver, or a timer is due), `false` when the time ran out and the driver should
    /// sleep.
    async fn spin(
        &mut self,
        shared: &Shared,
        sockets: &Sockets,
        deadline: Option<Instant>,
    ) -> bool {
        use futures_util::FutureExt;
        let start = Instant::now();
        let budget = self.config.busy_poll + self.spin_allowance;
        let give_up = start + 2 * self.config.busy_poll * MAX_SPIN_STRETCH;
        // CPU time of this spin so far, as far as the clock can tell: the time between
        // polls, except yields during which something else evidently ran.
        let mut spun = Duration::ZERO;
        let mut resumed = start;
        let found_work = loop {
            // The application's wake-up first: a sender then spends no reads on it.
            if shared.wake_driver.notified().now_or_never().is_some() {
                break true;
            }
            self.read(&sockets.unicast);
            if let Some(m) = &sockets.multicast {
                self.read(m);
            }
            if !self.received.is_empty() {
                break true;
            }
            let now = Instant::now();
            if deadline.is_some_and(|at| at <= now) {
                break true;
            }
            spun += now.duration_since(resumed);
            if spun >= budget || now >= give_up {
                break false;
            }
            // Let other threads and processes that wait for a CPU run first.
            std::thread::yield_now();
            // Let this thread's other tasks (the application's) run in between.
            tokio::task::yield_now().await;
            resumed = Instant::now();
            let away = resumed.duration_since(now);
            if away < YIELD_GAVE_WAY {
                // Nothing else ran: the yields were part of the spin.
                spun += away;
            }
        };
        // The first `busy_poll` of every spin is free; the rest was earned by working.
        let beyond_free = spun.saturating_sub(self.config.busy_poll);
        self.spin_allowance = self.spin_allowance.saturating_sub(beyond_free);
        found_work
    }

    /// Ends a round of work that began at `started`: steps the core, sends what it
    /// produced, and credits the round's time to the spin allowance. Returns what
    /// [`Driver::step`] returns.
    async fn finish_round(
        &mut self,
        shared: &Shared,
        socket: &UdpSocket,
        started: Instant,
    ) -> (Option<Instant>, bool) {
        let next = self.step(shared);
        self.send(shared, socket).await;
        self.spin_allowance =
            (self.spin_allowance + started.elapsed()).min(self.config.busy_poll * MAX_SPIN_STRETCH);
        next
    }

    /// Reads what the socket has, up to a batch, without waiting.
    fn read(&mut self, socket: &UdpSocket) {
        for _ in 0..RECV_BATCH {
            self.buf.reserve(MAX_UDP);
            match socket.try_recv_buf_from(&mut self.buf) {
                Ok((_, from)) => {
                    // Refused datagrams (unsealed, forged, replayed) are counted by the seam.
                    if let Some(datagram) = self.open.open(self.buf.split()) {
                        self.received.push((from, datagram));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // ICMP errors of earlier sends surface here; the protocol recovers.
                    trace!(error = %e, "reliable: receive error");
                    break;
                }
            }
        }
    }

    /// Feeds the received datagrams and the clock to the core and collects its outputs.
    /// Returns the next deadline, and whether the driver should spin before sleeping
    /// (it received datagrams that delivered messages, or any datagram while the
    /// application multicast nothing since the step before the previous one).
    fn step(&mut self, shared: &Shared) -> (Option<Instant>, bool) {
        let mut unknown = 0;
        let received = self.received.len();
        let mut credit = false;
        let deadline;
        let delivered;
        let sending;
        {
            let mut core = shared.core();
            for datagram in self.sent.drain(..) {
                core.recycle(datagram);
            }
            let now = Instant::now();
            let before = core.stats().delivered;
            let local = core.local();
            for (from, datagram) in self.received.drain(..) {
                match self.addresses.by_addr.get(&from) {
                    // Our own multicasts come back through the loop.
                    Some(id) if *id == local => {}
                    Some(id) => {
                        if let Err(e) = core.handle_datagram(*id, datagram, now) {
                            debug!(%from, error = %e, "reliable: datagram dropped");
                        }
                    }
                    None => unknown += 1,
                }
            }
            if core.poll_timeout().is_some_and(|t| t <= now) {
                core.handle_timeout(now);
            }
            core.flush(now);
            while let Some(t) = core.poll_transmit() {
                match t.to {
                    Destination::Group => match self.group {
                        Some(group) => self.outgoing.push((group, t.datagram)),
                        None => {
                            for id in core.members() {
                                if let Some(addr) = self.addresses.by_id.get(id) {
                                    self.outgoing.push((*addr, t.datagram.clone()));
                                }
                            }
                        }
                    },
                    Destination::Member(id) => {
                        if let Some(addr) = self.addresses.by_id.get(&id) {
                            self.outgoing.push((*addr, t.datagram));
                        }
                    }
                }
            }
            credit |= shared.take_events(&mut core);
            // One snapshot (it walks the peers). Own messages are counted when the
            // application multicasts them.
            let stats = core.stats();
            delivered = stats.delivered != before;
            sending = stats.sent != self.sent_seen;
            self.sent_seen = stats.sent;
            deadline = core.poll_timeout();
        }
        if credit {
            shared.credit.notify_waiters();
        }
        if delivered {
            shared.notify_deliveries();
        }
        let mut counters = shared.counters.lock().unwrap_or_else(|e| e.into_inner());
        counters.unknown_source += unknown;
        counters.datagrams_received += received as u64;
        // Members that all send deliver each other's messages, and spin as well: with four
        // such members on two cores that was 25 % faster.
        let spin = received > 0 && (delivered || !sending && !self.was_sending);
        self.was_sending = sending;
        (deadline, spin)
    }

    /// Sends what the core produced.
    async fn send(&mut self, shared: &Shared, socket: &UdpSocket) {
        if self.outgoing.is_empty() {
            return;
        }
        let mut errors = 0;
        let sent = self.outgoing.len() as u64;
        // Fan-out copies of one datagram follow each other: sealed once, sent to each.
        for (to, datagram) in self.outgoing.drain(..) {
            let Some(wire) = self.seal.seal_bytes(&datagram) else {
                errors += 1;
                continue;
            };
            if let Err(e) = socket.send_to(wire, to).await {
                trace!(%to, error = %e, "reliable: send failed");
                errors += 1;
            }
            if self.sent.len() < RECYCLE_BATCH {
                self.sent.push(datagram);
            }
        }
        // Lets the core reuse the last datagram's buffer.
        self.seal.forget_last();
        let mut counters = shared.counters.lock().unwrap_or_else(|e| e.into_inner());
        counters.send_errors += errors;
        counters.datagrams_sent += sent;
    }
}
