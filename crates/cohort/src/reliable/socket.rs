//! The channel's UDP sockets (see the module docs of `reliable`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use super::{ReliableChannelConfig, ReliableStartError};

/// The unicast socket, and the multicast socket if multicast is on.
pub(super) struct Sockets {
    pub(super) unicast: UdpSocket,
    pub(super) multicast: Option<UdpSocket>,
}

impl Sockets {
    pub(super) fn open(
        config: &ReliableChannelConfig,
        local: SocketAddr,
    ) -> Result<Self, ReliableStartError> {
        let bind_error = |source| ReliableStartError::Bind {
            addr: local,
            source,
        };
        let unicast = open_unicast(config, local).map_err(bind_error)?;
        let multicast = match config.multicast {
            Some(group) => Some(open_multicast(config, group, local).map_err(|source| {
                ReliableStartError::Multicast {
                    group,
                    interface: config.interface,
                    source,
                }
            })?),
            None => None,
        };
        Ok(Self { unicast, multicast })
    }
}

fn set_buffers(socket: &Socket, size: usize) {
    // The kernel caps these at net.core.{r,w}mem_max; a smaller buffer is no error.
    let _ = socket.set_recv_buffer_size(size);
    let _ = socket.set_send_buffer_size(size);
}

/// Bound to the member's own address; multicasts leave from it too, so every datagram's
/// source names its sender.
fn open_unicast(config: &ReliableChannelConfig, local: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(local), Type::DGRAM, Some(Protocol::UDP))?;
    set_buffers(&socket, config.socket_buffer);
    socket.bind(&local.into())?;
    if config.multicast.is_some() {
        let interface = match local.ip() {
            IpAddr::V4(ip) if config.interface == Ipv4Addr::UNSPECIFIED => ip,
            _ => config.interface,
        };
        socket.set_multicast_if_v4(&interface)?;
        // Other members on this host must hear us too.
        socket.set_multicast_loop_v4(true)?;
        socket.set_multicast_ttl_v4(1)?;
    }
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

/// Bound to the group address and port, shared with the other members on this host.
fn open_multicast(
    config: &ReliableChannelConfig,
    group: SocketAddrV4,
    local: SocketAddr,
) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    set_buffers(&socket, config.socket_buffer);
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::V4(group).into())?;
    socket.join_multicast_v4(group.ip(), &config.interface)?;
    let source = match local {
        SocketAddr::V4(a) if !a.ip().is_unspecified() => Some(*a.ip()),
        _ => (!config.interface.is_unspecified()).then_some(config.interface),
    };
    if let Some(ip) = source {
        // Only an optimisation (the driver ignores its own datagrams anyway), so a
        // kernel without socket filters is no error.
        let _ = drop_own_multicasts(&socket, SocketAddrV4::new(ip, local.port()));
    }
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

/// Attaches a classic BPF filter that drops, in the kernel, the datagrams this member
/// multicast itself (they come back through the multicast loopback, which other members
/// on the host need): they are not copied to user space, which under a flood is a large
/// part of a sender's receive work. Matches the IPv4 source address and the UDP source
/// port; everything else passes.
fn drop_own_multicasts(socket: &Socket, own: SocketAddrV4) -> std::io::Result<()> {
    use socket2::SockFilter;
    // Classic BPF opcodes (linux/filter.h).
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const LD_H_ABS: u16 = 0x28; // BPF_LD | BPF_H | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    // Negative offsets reach the network header (SKF_NET_OFF); offset 0 is the UDP
    // header for a UDP socket's filter.
    const SKF_NET_OFF: i32 = -0x10_0000;
    let ip_src = (SKF_NET_OFF + 12) as u32;
    let program = [
        SockFilter::new(LD_W_ABS, 0, 0, ip_src),
        SockFilter::new(JEQ_K, 0, 3, u32::from(*own.ip())),
        SockFilter::new(LD_H_ABS, 0, 0, 0),
        SockFilter::new(JEQ_K, 0, 1, u32::from(own.port())),
        SockFilter::new(RET_K, 0, 0, 0),
        SockFilter::new(RET_K, 0, 0, u32::MAX),
    ];
    socket.attach_filter(&program)
}
