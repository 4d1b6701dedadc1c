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
            Some(group) => Some(open_multicast(config, group).map_err(|source| {
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
) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    set_buffers(&socket, config.socket_buffer);
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::V4(group).into())?;
    socket.join_multicast_v4(group.ip(), &config.interface)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}
