//! `cohort multicast`: one member of a reliable multicast group with a fixed view, as a
//! process. The benchmark and the namespace tests start several and talk to them over
//! stdin/stdout.
//!
//! Protocol with the parent: the member prints `{"event":"ready"}` once its sockets are
//! up, waits for a line `go` on stdin, then (if it is a sender) multicasts `--count`
//! messages, each carrying its sender's index, a sequence number and the send time. It
//! checks every delivery: exactly the expected sequence number of that sender, nothing
//! from unknown senders. When it delivered everything it prints `{"event":"done",...}`
//! with its figures, then keeps serving retransmissions for the others until stdin
//! closes, and prints `{"event":"exit","extra":N}` (N = deliveries after done: must be 0).
//!
//! `--raw` is the no-protocol baseline: the senders pack the same messages into datagrams
//! as large as cohort's and send them to the group once, with no sequence checks,
//! retransmission or flow control; a receiver counts what arrives and is done when an
//! end marker from every sender arrived or nothing arrived for a second.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use clap::Args;
use cohort::reliable::{ReliableChannel, ReliableChannelConfig, ReliableConfig, Transport};
use cohort::{GroupMember, MemberId, View, ViewId};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader, Lines, Stdin};
use tokio::net::UdpSocket;

use crate::BenchResult;
use crate::perf::process::{cpu_ns, unix_us};

/// Bytes at the start of every message: sender index, sequence number, send time (µs).
pub(super) const HEADER: usize = 16;

/// A sender hands its messages to the channel in bursts of about this many bytes.
const SEND_BATCH_BYTES: usize = 256 << 10;

/// Options of `cohort multicast`.
#[derive(Args, Debug, Clone)]
pub struct MemberArgs {
    /// This member's position in `--members`.
    #[arg(long)]
    pub(super) index: usize,
    /// Every member's UDP (or TCP) address, in view order (the same list for every member).
    #[arg(long, value_delimiter = ',', required = true)]
    pub(super) members: Vec<SocketAddr>,
    /// Multicast group and port; without it, group messages go to each member by unicast.
    #[arg(long)]
    pub(super) multicast: Option<SocketAddrV4>,
    /// Indices of the members that send (default: all).
    #[arg(long, value_delimiter = ',')]
    pub(super) senders: Vec<usize>,
    /// Messages each sender multicasts.
    #[arg(long, default_value_t = 10_000)]
    pub(super) count: u64,
    /// Message size in bytes (at least 16).
    #[arg(long, default_value_t = 1024)]
    pub(super) size: usize,
    /// Protocol timers: `lan` (NAKs after 5 ms) or `default` (SPEC: 100 ms).
    #[arg(long, default_value = "lan")]
    pub(super) timers: String,
    /// The no-protocol baseline (see the module docs).
    #[arg(long)]
    pub(super) raw: bool,
    /// Flow-control window in bytes (default: the protocol's).
    #[arg(long)]
    pub(super) credit_window: Option<usize>,
    /// Runtime threads of this process: 1 (default) runs everything on one thread, 0
    /// takes tokio's default of one per core.
    #[arg(long, default_value_t = 1)]
    pub(crate) threads: usize,
    /// Bytes a receiver consumes before it returns credit (default: the protocol's,
    /// capped at half the window).
    #[arg(long)]
    pub(super) ack_threshold: Option<usize>,
    /// How the channel carries datagrams: `udp` (multicast with `--multicast`, else
    /// fan-out) or `tcp` (one connection to each other member).
    #[arg(long, value_enum, default_value_t = TransportArg::Udp)]
    pub(super) transport: TransportArg,
    /// How long the channel polls its sockets after traffic before sleeping, in
    /// microseconds; 0 turns it off (default: the channel's).
    #[arg(long)]
    pub(super) busy_poll_us: Option<u64>,
}

/// The values of `--transport`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportArg {
    /// UDP multicast or fan-out.
    Udp,
    /// A TCP connection per pair of members.
    Tcp,
}

impl From<TransportArg> for Transport {
    fn from(t: TransportArg) -> Self {
        match t {
            TransportArg::Udp => Self::Udp,
            TransportArg::Tcp => Self::Tcp,
        }
    }
}

/// The id of the member at `index` (a fixed view needs ids every member can compute).
pub(super) fn member_id(index: usize) -> MemberId {
    let mut id = [0xC0u8; 16];
    id[8..].copy_from_slice(&(index as u64).to_be_bytes());
    MemberId(id)
}

/// One JSON line on stdout; a parent that stopped reading is no reason to panic.
fn print(value: &serde_json::Value) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

/// `cohort multicast`: one member, until stdin closes (see the module docs).
pub async fn run(args: MemberArgs) -> BenchResult {
    if args.size < HEADER {
        return Err(format!("--size must be at least {HEADER}").into());
    }
    if args.index >= args.members.len() {
        return Err("--index is not a position in --members".into());
    }
    let senders: Vec<usize> = if args.senders.is_empty() {
        (0..args.members.len()).collect()
    } else {
        args.senders.clone()
    };
    if args.transport == TransportArg::Tcp && (args.raw || args.multicast.is_some()) {
        return Err("--transport tcp takes neither --raw nor --multicast".into());
    }
    if args.raw {
        return raw(args, senders).await;
    }
    let ids: Vec<MemberId> = (0..args.members.len()).map(member_id).collect();
    let view = View {
        id: ViewId {
            seq: 1,
            coordinator: ids[0],
        },
        members: ids
            .iter()
            .zip(&args.members)
            .map(|(id, addr)| GroupMember {
                id: *id,
                addr: *addr,
            })
            .collect(),
    };
    let interface = match args.members[args.index].ip() {
        std::net::IpAddr::V4(ip) => ip,
        std::net::IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    };
    let core = match args.timers.as_str() {
        "lan" => ReliableConfig::lan(),
        "default" => ReliableConfig::default(),
        other => return Err(format!("unknown --timers {other}").into()),
    };
    let mut core = core;
    if let Some(window) = args.credit_window {
        core.credit_window = window;
        core.ack_threshold = core.ack_threshold.min(window / 2).max(1);
        core.max_retransmit_buffer = core.max_retransmit_buffer.max(window);
    }
    if let Some(threshold) = args.ack_threshold {
        core.ack_threshold = threshold.clamp(1, core.credit_window);
    }
    let config = ReliableChannelConfig {
        transport: args.transport.into(),
        multicast: args.multicast,
        interface,
        port_offset: 0,
        core,
        busy_poll: args.busy_poll_us.map_or_else(
            || ReliableChannelConfig::default().busy_poll,
            Duration::from_micros,
        ),
        ..ReliableChannelConfig::default()
    };
    let channel = ReliableChannel::start_static(ids[args.index], config, view)?;
    print(&json!({"event": "ready"}));
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    if !wait_for_go(&mut stdin).await? {
        return Ok(());
    }
    let start = Instant::now();
    let cpu_start = cpu_ns(std::process::id()).unwrap_or(0);
    if senders.contains(&args.index) {
        let ch = channel.clone();
        let (index, count, size) = (args.index as u32, args.count, args.size);
        tokio::spawn(async move {
            // Messages go in bursts of up to 256 KiB (a few datagrams: the driver closes
            // the last, partly filled one when the burst is handed over), built in one
            // buffer and handed over in one call: one lock and one driver wake-up per
            // burst.
            let per_batch = (SEND_BATCH_BYTES / size).max(1) as u64;
            let padding = vec![0u8; size - HEADER];
            // Bursts still referenced (by the channel's retransmit buffer or own
            // deliveries), oldest first: the oldest one's buffer is reused once it is
            // free, instead of a fresh allocation (and its page faults) per burst.
            let mut in_flight: std::collections::VecDeque<Bytes> = Default::default();
            let mut seq = 0;
            while seq < count {
                let n = per_batch.min(count - seq);
                let cap = n as usize * size;
                let reused = in_flight
                    .pop_front()
                    .and_then(|old| match old.try_into_mut() {
                        // A burst of the same shape: its padding is still in place.
                        Ok(b) if b.len() == cap => Some(b),
                        Ok(_) => None,
                        Err(old) => {
                            in_flight.push_front(old);
                            None
                        }
                    });
                let now = unix_us();
                let buf = match reused {
                    Some(mut buf) => {
                        // Only the headers change (the benchmark measures the channel,
                        // not how fast it can fill payloads).
                        for (i, s) in (seq..seq + n).enumerate() {
                            let mut header = &mut buf[i * size..i * size + HEADER];
                            header.put_u32(index);
                            header.put_u32(s as u32);
                            header.put_u64(now);
                        }
                        buf
                    }
                    None => {
                        let mut buf = BytesMut::with_capacity(cap);
                        for s in seq..seq + n {
                            buf.put_u32(index);
                            buf.put_u32(s as u32);
                            buf.put_u64(now);
                            buf.put_slice(&padding);
                        }
                        buf
                    }
                };
                let buf = buf.freeze();
                let msgs = (0..n as usize).map(|i| buf.slice(i * size..(i + 1) * size));
                if let Err(e) = ch.multicast_many(msgs).await {
                    print(&json!({"event": "error", "error": e.to_string()}));
                    return;
                }
                in_flight.push_back(buf);
                seq += n;
            }
            print(&json!({"event": "sent", "elapsed_s": start.elapsed().as_secs_f64()}));
        });
    }

    let expected_total = args.count * senders.len() as u64;
    let mut next = vec![0u64; args.members.len()];
    let mut errors: Vec<String> = Vec::new();
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut delivered = 0u64;
    let mut batch = Vec::new();
    while delivered < expected_total {
        batch.clear();
        if channel.recv_many(&mut batch, 4096).await == 0 {
            return Err("the channel closed".into());
        }
        let now_us = unix_us();
        for d in &batch {
            delivered += 1;
            check(d, &ids, &mut next, args.size, &mut errors);
            if d.payload.len() >= HEADER {
                let sent = u64::from_be_bytes(d.payload[8..16].try_into().unwrap_or_default());
                let _ = latency.record(now_us.saturating_sub(sent).max(1));
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_s = cpu_ns(std::process::id())
        .unwrap_or(0)
        .saturating_sub(cpu_start) as f64
        / 1e9;
    let stats = channel.stats();
    print(&json!({
        "event": "done",
        "delivered": delivered,
        "elapsed_s": elapsed,
        "cpu_s": cpu_s,
        "errors": errors.len(),
        "first_errors": errors.iter().take(5).collect::<Vec<_>>(),
        "latency_p50_us": latency.value_at_quantile(0.5),
        "latency_p99_us": latency.value_at_quantile(0.99),
        "naks_sent": stats.core.naks_sent,
        "retransmitted": stats.core.retransmitted,
        "datagrams_sent": stats.datagrams_sent,
        "datagrams_received": stats.datagrams_received,
        "retransmit_buffer_bytes": stats.core.retransmit_buffer_bytes,
        "no_credit": stats.core.no_credit,
    }));
    // Serve retransmissions to the others until the parent closes stdin; anything
    // delivered meanwhile is a duplicate or a stray.
    let mut extra = 0u64;
    loop {
        batch.clear();
        tokio::select! {
            n = channel.recv_many(&mut batch, 4096) => {
                if n == 0 { break; }
                extra += n as u64;
            }
            line = stdin.next_line() => if !matches!(line, Ok(Some(_))) { break },
        }
    }
    print(&json!({"event": "exit", "extra": extra}));
    channel.close().await;
    Ok(())
}

/// Waits for the parent's `go` line; `false` if stdin closed first (the parent gave up).
async fn wait_for_go(stdin: &mut Lines<BufReader<Stdin>>) -> std::io::Result<bool> {
    while let Some(line) = stdin.next_line().await? {
        if line.trim() == "go" {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Checks one delivery against the next expected sequence number of its sender.
fn check(
    d: &cohort::reliable::Delivery,
    ids: &[MemberId],
    next: &mut [u64],
    size: usize,
    errors: &mut Vec<String>,
) {
    let Some(sender) = ids.iter().position(|id| *id == d.from) else {
        errors.push(format!("delivery from unknown member {}", d.from));
        return;
    };
    if d.payload.len() != size {
        errors.push(format!("{} bytes from {sender}", d.payload.len()));
        return;
    }
    let index = u32::from_be_bytes(d.payload[0..4].try_into().unwrap_or_default()) as usize;
    let seq = u64::from(u32::from_be_bytes(
        d.payload[4..8].try_into().unwrap_or_default(),
    ));
    if index != sender {
        errors.push(format!("member {sender} delivered a message of {index}"));
    } else if seq != next[sender] {
        errors.push(format!(
            "from {sender}: got #{seq}, expected #{}",
            next[sender]
        ));
        next[sender] = seq + 1;
    } else {
        next[sender] += 1;
    }
}

/// The no-protocol baseline (see the module docs).
async fn raw(args: MemberArgs, senders: Vec<usize>) -> BenchResult {
    let local = args.members[args.index];
    let socket = std::net::UdpSocket::bind(local)?;
    let interface = match local.ip() {
        std::net::IpAddr::V4(ip) => ip,
        std::net::IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    };
    let group_socket = match args.multicast {
        Some(group) => Some(raw_group_socket(group, interface, local)?),
        None => None,
    };
    let s2 = socket2::SockRef::from(&socket);
    let _ = s2.set_send_buffer_size(8 << 20);
    let _ = s2.set_recv_buffer_size(8 << 20);
    if args.multicast.is_some() {
        s2.set_multicast_if_v4(&interface)?;
        s2.set_multicast_loop_v4(true)?;
    }
    socket.set_nonblocking(true)?;
    let socket = UdpSocket::from_std(socket)?;
    print(&json!({"event": "ready"}));
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    if !wait_for_go(&mut stdin).await? {
        return Ok(());
    }
    let start = Instant::now();
    let start_us = unix_us();
    let cpu_start = cpu_ns(std::process::id()).unwrap_or(0);
    let per_datagram = (60_000 / args.size).max(1);
    let datagram = Bytes::from(vec![0x5Au8; per_datagram * args.size]);
    let end_marker = Bytes::from_static(b"END");
    let targets: Vec<SocketAddr> = match args.multicast {
        Some(group) => vec![SocketAddr::V4(group)],
        None => args
            .members
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != args.index)
            .map(|(_, a)| *a)
            .collect(),
    };
    let mut received = 0u64;
    let mut ends = 0usize;
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    let mut buf = vec![0u8; 65_536];
    let is_sender = senders.contains(&args.index);
    let mut to_send = if is_sender {
        args.count.div_ceil(per_datagram as u64)
    } else {
        0
    };
    let others_sending = senders.iter().filter(|s| **s != args.index).count();
    let recv_socket = group_socket.as_ref().unwrap_or(&socket);
    loop {
        // Send one datagram per turn, read what is there, until both are done.
        if to_send > 0 {
            for to in &targets {
                let _ = socket.send_to(&datagram, to).await;
            }
            to_send -= 1;
            if to_send == 0 {
                for _ in 0..20 {
                    for to in &targets {
                        let _ = socket.send_to(&end_marker, to).await;
                    }
                }
            }
        }
        loop {
            match recv_socket.try_recv_from(&mut buf) {
                Ok((n, from)) if from != local => {
                    if n == end_marker.len() {
                        ends += 1;
                    } else {
                        received += (n / args.size) as u64;
                        first.get_or_insert_with(Instant::now);
                        last = Instant::now();
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let idle = last.elapsed() > Duration::from_secs(1);
        // 20 end markers per sender: done once most of any sender's arrived.
        if to_send == 0
            && (others_sending == 0 || ends >= others_sending * 10 || (first.is_some() && idle))
        {
            break;
        }
        if to_send == 0 {
            let readable = recv_socket.readable();
            let _ = tokio::time::timeout(Duration::from_millis(100), readable).await;
        }
    }
    let elapsed = first.map_or(0.0, |f| (last - f).as_secs_f64());
    // Wall-clock times of the first and last arrival, so the parent can take one window
    // over all receivers.
    let unix_of = |t: Instant| start_us + t.saturating_duration_since(start).as_micros() as u64;
    let cpu_s = cpu_ns(std::process::id())
        .unwrap_or(0)
        .saturating_sub(cpu_start) as f64
        / 1e9;
    print(&json!({
        "event": "done",
        "delivered": received,
        "elapsed_s": elapsed,
        "since_go_s": start.elapsed().as_secs_f64(),
        "first_us": first.map(unix_of),
        "last_us": first.map(|_| unix_of(last)),
        "cpu_s": cpu_s,
        "errors": 0,
    }));
    let _ = stdin.next_line().await;
    print(&json!({"event": "exit", "extra": 0}));
    Ok(())
}

fn raw_group_socket(
    group: SocketAddrV4,
    interface: Ipv4Addr,
    local: SocketAddr,
) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(8 << 20);
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::V4(group).into())?;
    socket.join_multicast_v4(group.ip(), &interface)?;
    if let SocketAddr::V4(own) = local {
        // The channel drops its own multicasts in the kernel; so does the baseline.
        let _ = drop_own_multicasts(&socket, own);
    }
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

/// The same kernel filter as the reliable channel's multicast socket: drops datagrams from
/// `own` (this member's multicasts looped back), so a sender does not copy them in.
fn drop_own_multicasts(socket: &socket2::Socket, own: SocketAddrV4) -> std::io::Result<()> {
    use socket2::SockFilter;
    // Classic BPF (linux/filter.h): BPF_LD|BPF_W|BPF_ABS, BPF_LD|BPF_H|BPF_ABS,
    // BPF_JMP|BPF_JEQ|BPF_K, BPF_RET|BPF_K; SKF_NET_OFF reaches the IPv4 header, offset 0
    // is the UDP header.
    const SKF_NET_OFF: i32 = -0x10_0000;
    let program = [
        SockFilter::new(0x20, 0, 0, (SKF_NET_OFF + 12) as u32),
        SockFilter::new(0x15, 0, 3, u32::from(*own.ip())),
        SockFilter::new(0x28, 0, 0, 0),
        SockFilter::new(0x15, 0, 1, u32::from(own.port())),
        SockFilter::new(0x06, 0, 0, 0),
        SockFilter::new(0x06, 0, 0, u32::MAX),
    ];
    socket.attach_filter(&program)
}
