//! Drives the membership core with a multicast socket and a timer.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use cohort_proto::membership::DatagramError;
use cohort_proto::security::Purpose;
use cohort_proto::{Membership, MembershipEvent};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tracing::{debug, warn};

use crate::clock::Clock;
use crate::config::Config;
use crate::discovery::Candidates;
use crate::event::Event;
use crate::messages::{GroupInput, HeartbeatCommand};
use crate::security::{DatagramOpen, DatagramSeal};
use crate::shared::Shared;

/// Largest datagram read. A member record is far smaller; anything bigger is malformed.
const MAX_DATAGRAM: usize = 65_536;

/// Opens the multicast socket the way Tribes does: bound to the group address and port
/// (so heartbeats leave from the group port and only the group's datagrams arrive), shared
/// with other nodes on the same host, joined on the configured interface.
pub(crate) fn open_socket(config: &Config) -> std::io::Result<UdpSocket> {
    let group = config.multicast.group;
    let interface = config.multicast_interface();
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::V4(SocketAddrV4::new(group, config.multicast.port)).into())?;
    socket.join_multicast_v4(&group, &interface)?;
    if interface != Ipv4Addr::UNSPECIFIED {
        socket.set_multicast_if_v4(&interface)?;
    }
    socket.set_multicast_ttl_v4(config.multicast.ttl)?;
    // Other nodes on this host must hear us too.
    socket.set_multicast_loop_v4(true)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

/// Where heartbeats go.
pub(crate) enum Beacon {
    /// To the multicast group.
    Multicast(SocketAddr),
    /// By unicast, to every known member and (every `probe_interval`, and whenever the set
    /// changes) to every candidate address discovery names.
    Unicast {
        /// Our own heartbeat address, never sent to.
        local: SocketAddr,
        candidates: Arc<Candidates>,
        probe_interval: Duration,
    },
}

/// Opens the unicast heartbeat socket: the node's own address and port (the TCP
/// receiver's), so a member's heartbeat address is its receiver address.
pub(crate) fn open_unicast_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

/// Sends one heartbeat datagram wherever `beacon` says.
struct Sender {
    beacon: Beacon,
    /// Seals each heartbeat once (the same sealed datagram goes to every target).
    seal: DatagramSeal,
    last_probe: Option<Instant>,
    probed_version: u64,
}

impl Sender {
    async fn send(&mut self, socket: &UdpSocket, core: &Membership, datagram: &[u8]) {
        let Some(datagram) = self.seal.seal(datagram) else {
            warn!("heartbeat not sent: cannot seal it");
            return;
        };
        match &self.beacon {
            Beacon::Multicast(group) => {
                if let Err(e) = socket.send_to(datagram, *group).await {
                    warn!(error = %e, %group, "cannot send heartbeat");
                }
            }
            Beacon::Unicast {
                local,
                candidates,
                probe_interval,
            } => {
                let mut targets: BTreeSet<SocketAddr> = core
                    .members()
                    .map(|m| {
                        SocketAddr::new(m.addr.ip(), m.udp_port.unwrap_or_else(|| m.addr.port()))
                    })
                    .collect();
                let (version, all) = candidates.snapshot();
                let now = Instant::now();
                let probe_due = self
                    .last_probe
                    .is_none_or(|at| now.duration_since(at) >= *probe_interval)
                    || version != self.probed_version;
                if probe_due {
                    self.last_probe = Some(now);
                    self.probed_version = version;
                    targets.extend(all);
                }
                targets.remove(local);
                for to in targets {
                    if let Err(e) = socket.send_to(datagram, to).await {
                        debug!(error = %e, %to, "cannot send heartbeat");
                    }
                }
            }
        }
    }
}

/// The heartbeat task: one per node.
pub(crate) async fn run(
    mut core: Membership,
    socket: UdpSocket,
    beacon: Beacon,
    mut commands: mpsc::Receiver<HeartbeatCommand>,
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut opener = DatagramOpen::new(shared.security.as_ref(), Purpose::Heartbeat);
    let mut sender = Sender {
        beacon,
        seal: DatagramSeal::new(shared.security.as_ref(), Purpose::Heartbeat),
        last_probe: None,
        probed_version: 0,
    };
    let clock = Clock::new();
    core.handle_timeout(clock.now());
    loop {
        let mut sent_beat = false;
        while let Some(datagram) = core.poll_transmit() {
            sent_beat = true;
            sender.send(&socket, &core, &datagram).await;
        }
        if sent_beat {
            shared.set_sender_record(core.local_record(clock.now()).to_bytes());
        }
        let mut changed = false;
        while let Some(event) = core.poll_event() {
            changed = true;
            let event = match event {
                MembershipEvent::MemberAdded(m) => Event::MemberAdded(m),
                MembershipEvent::MemberDisappeared { member, reason } => {
                    shared.peers.remove(&member.id);
                    if member.is_cohort {
                        let _ = shared.group_inbox.send(GroupInput::Gone {
                            id: member.id,
                            reason,
                        });
                    }
                    Event::MemberDisappeared { member, reason }
                }
            };
            let _ = events.send(event);
        }
        if changed {
            shared.publish_members(core.members().cloned().collect());
        }
        shared.set_membership_stats(core.stats());

        let deadline = core.poll_timeout().map(|t| clock.to_tokio(t));
        tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, from)) => {
                    // Refused (unsealed, forged, replayed) datagrams are counted by the seam.
                    if let Some(datagram) = opener.open(BytesMut::from(&buf[..n])) {
                        match core.handle_datagram(clock.now(), &datagram) {
                            Ok(()) => {
                                if let Some(m) = core.last_accepted()
                                    && m.is_cohort
                                    && m.domain == shared.local.domain
                                {
                                    let _ = shared.group_inbox.send(GroupInput::Heard(m.clone()));
                                }
                            }
                            Err(DatagramError::ForeignDomain) => {
                                debug!(%from, "ignored heartbeat of another domain");
                            }
                            Err(e) => warn!(%from, len = n, error = %e, "dropped malformed membership packet"),
                        }
                    }
                }
                Err(e) => warn!(error = %e, "multicast receive failed"),
            },
            () = sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() => {
                core.handle_timeout(clock.now());
            }
            () = candidates_changed(&sender.beacon) => {
                // New addresses to look for members at: tell them about us now.
                let record = core.local_record(clock.now()).to_bytes();
                sender.send(&socket, &core, &record).await;
            }
            command = commands.recv() => match command {
                Some(HeartbeatCommand::Shutdown(done)) => {
                    core.shutdown(clock.now());
                    while let Some(datagram) = core.poll_transmit() {
                        sender.send(&socket, &core, &datagram).await;
                    }
                    shared.set_membership_stats(core.stats());
                    let _ = done.send(());
                    return;
                }
                Some(HeartbeatCommand::SetIdentity(id)) => {
                    core.set_local_id(id, clock.now());
                }
                None => return,
            },
        }
    }
}

/// Resolves when discovery names new candidate addresses (never with multicast).
async fn candidates_changed(beacon: &Beacon) {
    match beacon {
        Beacon::Unicast { candidates, .. } => candidates.changed.notified().await,
        Beacon::Multicast(_) => std::future::pending().await,
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}
