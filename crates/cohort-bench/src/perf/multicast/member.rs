//! `cohort multicast`: one member of a reliable multicast group with a fixed view, as a
//! process. The benchmark and the namespace tests start several and talk to them over
//! stdin/stdout.
//!
//! Protocol with the parent ([`MemberEvent`], one JSON object a line): the member prints
//! `{"event":"ready"}` once its sockets are up. Every line `go` on stdin starts a round:
//! each sender multicasts `--count` messages, each carrying its sender's index, a
//! sequence number (running on over the rounds) and the send time. The member checks
//! every delivery: exactly the expected sequence number of that sender, nothing from
//! unknown senders. When it delivered every message of the round it prints
//! `{"event":"done",...}` ([`RoundReport`]) and keeps serving retransmissions for the
//! others until the next `go` or until stdin closes; then it prints
//! `{"event":"exit","extra":N}` (N = deliveries beyond the rounds started: must be 0).
//! The benchmark runs warm-up rounds this way and does not count them.
//!
//! `--raw` is the no-protocol baseline: per round the senders pack the same messages into
//! datagrams as large as cohort's and send them to the group once, for at least
//! `--raw-seconds` and `--count` messages, with no sequence checks, retransmission or
//! flow control; a receiver counts what arrives and is done when end markers of the
//! round from every other sender arrived or nothing arrived for a second. Each member
//! reports what it sent, so the parent can tell the loss.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use clap::Args;
use cohort::reliable::{ReliableChannel, ReliableChannelConfig, ReliableConfig, Transport};
use cohort::{GroupMember, MemberId, View};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
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
    /// The baseline's senders send for at least this many seconds (and at least
    /// `--count` messages) per round.
    #[arg(long, default_value_t = 2.0)]
    pub(super) raw_seconds: f64,
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
    /// A key file (`cohort keys generate`): cluster-key mode, every datagram sealed.
    #[arg(long)]
    pub(super) key_file: Option<std::path::PathBuf>,
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

/// What a member prints on stdout, one JSON object per line, tagged by `event`.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum MemberEvent {
    /// Sockets up (and, for JGroups, the view complete): ready for `go`.
    Ready,
    /// This sender handed its last message of a round to the channel.
    Sent {
        /// The round (0 for the first `go`).
        round: u64,
        /// Seconds from `go` until then.
        elapsed_s: f64,
    },
    /// This member delivered every message of a round.
    Done(RoundReport),
    /// Stdin closed; `extra` deliveries came after the last round was complete (must be 0).
    Exit {
        /// Deliveries beyond the rounds started.
        extra: u64,
    },
    /// Something went wrong; the member gives up.
    Error {
        /// What.
        error: String,
    },
}

/// One member's figures of one round (`{"event":"done",...}`).
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub(crate) struct RoundReport {
    /// The round (0 for the first `go`).
    #[serde(default)]
    pub(crate) round: u64,
    /// Messages delivered in the round (raw: datagram payloads of the others that
    /// arrived, in messages).
    pub(crate) delivered: u64,
    /// Seconds from `go` to the last delivery of the round.
    pub(crate) elapsed_s: f64,
    /// CPU seconds this process used from `go` to the last delivery.
    pub(crate) cpu_s: f64,
    /// Order errors (a sequence number other than the next expected one, unknown senders).
    #[serde(default)]
    pub(crate) errors: u64,
    /// The first few errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) first_errors: Vec<String>,
    /// Delivery latency (send time to delivery, wall clock), median, in µs.
    #[serde(default)]
    pub(crate) latency_p50_us: u64,
    /// Delivery latency, 99th percentile, in µs.
    #[serde(default)]
    pub(crate) latency_p99_us: u64,
    /// Channel counters since the start (cohort only).
    #[serde(default)]
    pub(crate) naks_sent: u64,
    /// Retransmissions sent since the start (cohort only).
    #[serde(default)]
    pub(crate) retransmitted: u64,
    /// Datagrams sent since the start (cohort only).
    #[serde(default)]
    pub(crate) datagrams_sent: u64,
    /// Datagrams received since the start (cohort only).
    #[serde(default)]
    pub(crate) datagrams_received: u64,
    /// Bytes in the retransmit buffer now (cohort only).
    #[serde(default)]
    pub(crate) retransmit_buffer_bytes: u64,
    /// Times a send waited for credit since the start (cohort only).
    #[serde(default)]
    pub(crate) no_credit: u64,
    /// Raw baseline only: messages this member sent in the round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sent: Option<u64>,
    /// Raw baseline only: seconds from `go` until this member finished the round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) since_go_s: Option<f64>,
    /// Raw baseline only: wall clock (µs since the epoch) of the first arrival.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) first_us: Option<u64>,
    /// Raw baseline only: wall clock (µs since the epoch) of the last arrival.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) last_us: Option<u64>,
}

/// One event on stdout; a parent that stopped reading is no reason to panic.
fn print(event: &MemberEvent) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Ok(line) = serde_json::to_string(event) {
        let _ = writeln!(out, "{line}");
    }
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
    if args.transport == TransportArg::Tcp && args.multicast.is_some() {
        return Err("--transport tcp takes no --multicast".into());
    }
    if args.raw && args.transport == TransportArg::Tcp {
        return raw_tcp(args, senders).await;
    }
    if args.raw {
        return raw(args, senders).await;
    }
    let ids: Vec<MemberId> = (0..args.members.len()).map(member_id).collect();
    let members = ids
        .iter()
        .zip(&args.members)
        .map(|(id, addr)| GroupMember::new(*id, *addr));
    let view = View::new(1, members).ok_or("a fixed group needs members")?;
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
    let keyring = match &args.key_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            Some(
                cohort::Keyring::from_key_file(&text)
                    .map_err(|e| format!("{}: {e}", path.display()))?,
            )
        }
        None => None,
    };
    let config = ReliableChannelConfig::default()
        .transport(args.transport.into())
        .keyring(keyring)
        .multicast(args.multicast)
        .interface(interface)
        .port_offset(0)
        .core(core)
        .busy_poll(args.busy_poll_us.map_or_else(
            || ReliableChannelConfig::default().busy_poll,
            Duration::from_micros,
        ));
    let channel = ReliableChannel::start_static(ids[args.index], config, view)?;
    print(&MemberEvent::Ready);
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let is_sender = senders.contains(&args.index);
    let per_round = args.count * senders.len() as u64;
    let mut next = vec![0u64; args.members.len()];
    let mut errors: Vec<String> = Vec::new();
    let mut error_count = 0u64;
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut delivered = 0u64;
    // Rounds started (by `go`) and completed (every message delivered).
    let mut started = 0u64;
    let mut completed = 0u64;
    let mut round_start: Option<(Instant, u64)> = None;
    let mut batch = Vec::new();
    loop {
        batch.clear();
        tokio::select! {
            line = stdin.next_line() => match line {
                Ok(Some(line)) if line.trim() == "go" => {
                    round_start = Some((Instant::now(), cpu_ns(std::process::id()).unwrap_or(0)));
                    if is_sender {
                        let first_seq = started * args.count;
                        spawn_sender(channel.clone(), args.index as u32, first_seq, args.count, args.size, started);
                    }
                    started += 1;
                }
                Ok(Some(_)) => {}
                _ => break,
            },
            n = channel.recv_many(&mut batch, 4096) => {
                if n == 0 {
                    return Err("the channel closed".into());
                }
                // One clock reading per batch of deliveries.
                let now_us = unix_us();
                for d in &batch {
                    delivered += 1;
                    if !check(d, &ids, &mut next, args.size, &mut errors) {
                        error_count += 1;
                    }
                    if d.payload.len() >= HEADER {
                        let sent = u64::from_be_bytes(d.payload[8..16].try_into().unwrap_or_default());
                        let _ = latency.record(now_us.saturating_sub(sent).max(1));
                    }
                }
                if completed < started && delivered >= (completed + 1) * per_round {
                    let (start, cpu_start) = round_start.unwrap_or_else(|| (Instant::now(), 0));
                    let stats = channel.stats();
                    print(&MemberEvent::Done(RoundReport {
                        round: completed,
                        delivered: delivered - completed * per_round,
                        elapsed_s: start.elapsed().as_secs_f64(),
                        cpu_s: cpu_ns(std::process::id()).unwrap_or(0).saturating_sub(cpu_start) as f64 / 1e9,
                        errors: error_count,
                        first_errors: errors.drain(..).take(5).collect(),
                        latency_p50_us: latency.value_at_quantile(0.5),
                        latency_p99_us: latency.value_at_quantile(0.99),
                        naks_sent: stats.core.naks_sent,
                        retransmitted: stats.core.retransmitted,
                        datagrams_sent: stats.datagrams_sent,
                        datagrams_received: stats.datagrams_received,
                        retransmit_buffer_bytes: stats.core.retransmit_buffer_bytes as u64,
                        no_credit: stats.core.no_credit,
                        ..RoundReport::default()
                    }));
                    error_count = 0;
                    latency.reset();
                    completed += 1;
                }
            }
        }
    }
    // Anything delivered beyond the rounds started is a duplicate or a stray.
    let extra = delivered.saturating_sub(started * per_round);
    print(&MemberEvent::Exit { extra });
    channel.shutdown().await;
    Ok(())
}

/// Multicasts `count` messages from sequence number `first_seq` on in a task of its own,
/// then prints `sent`.
fn spawn_sender(
    ch: ReliableChannel,
    index: u32,
    first_seq: u64,
    count: u64,
    size: usize,
    round: u64,
) {
    tokio::spawn(async move {
        let start = Instant::now();
        // Messages go in bursts of up to 256 KiB (a few datagrams: the driver closes the
        // last, partly filled one when the burst is handed over), built in one buffer and
        // handed over in one call: one lock, one clock reading and one driver wake-up per
        // burst.
        let per_batch = (SEND_BATCH_BYTES / size).max(1) as u64;
        let padding = vec![0u8; size - HEADER];
        // Bursts still referenced (by the channel's retransmit buffer or own deliveries),
        // oldest first: the oldest one's buffer is reused once it is free, instead of a
        // fresh allocation (and its page faults) per burst.
        let mut in_flight: std::collections::VecDeque<Bytes> = Default::default();
        let end = first_seq + count;
        let mut seq = first_seq;
        while seq < end {
            let n = per_batch.min(end - seq);
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
                    // Only the headers change (the benchmark measures the channel, not
                    // how fast it can fill payloads).
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
                print(&MemberEvent::Error {
                    error: e.to_string(),
                });
                return;
            }
            in_flight.push_back(buf);
            seq += n;
        }
        print(&MemberEvent::Sent {
            round,
            elapsed_s: start.elapsed().as_secs_f64(),
        });
    });
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
) -> bool {
    let mut error = |what: String| {
        if errors.len() < 5 {
            errors.push(what);
        }
        false
    };
    let Some(sender) = ids.iter().position(|id| *id == d.from) else {
        return error(format!("delivery from unknown member {}", d.from));
    };
    if d.payload.len() != size {
        return error(format!("{} bytes from {sender}", d.payload.len()));
    }
    let index = u32::from_be_bytes(d.payload[0..4].try_into().unwrap_or_default()) as usize;
    let seq = u64::from(u32::from_be_bytes(
        d.payload[4..8].try_into().unwrap_or_default(),
    ));
    if index != sender {
        error(format!("member {sender} delivered a message of {index}"))
    } else if seq != next[sender] {
        let expected = next[sender];
        next[sender] = seq + 1;
        error(format!("from {sender}: got #{seq}, expected #{expected}"))
    } else {
        next[sender] += 1;
        true
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
    print(&MemberEvent::Ready);
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let per_datagram = (60_000 / args.size).max(1);
    let datagram = Bytes::from(vec![0x5Au8; per_datagram * args.size]);
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
    let is_sender = senders.contains(&args.index);
    let others_sending = senders.iter().filter(|s| **s != args.index).count();
    let recv_socket = group_socket.as_ref().unwrap_or(&socket);
    let mut buf = vec![0u8; 65_536];
    let min_send = Duration::from_secs_f64(args.raw_seconds.max(0.0));
    let mut round = 0u32;
    while wait_for_go(&mut stdin).await? {
        let start = Instant::now();
        let start_us = unix_us();
        let cpu_start = cpu_ns(std::process::id()).unwrap_or(0);
        // The end marker of this round: "END" and the round number.
        let mut end_marker = b"END".to_vec();
        end_marker.extend_from_slice(&round.to_be_bytes());
        let mut received = 0u64;
        let mut ends = 0usize;
        let mut first: Option<Instant> = None;
        let mut last = Instant::now();
        // A sender sends at least --count messages and for at least --raw-seconds.
        let mut sent_datagrams = 0u64;
        let min_datagrams = if is_sender {
            args.count.div_ceil(per_datagram as u64)
        } else {
            0
        };
        let mut sending = is_sender;
        loop {
            // Send one datagram per turn, read what is there, until both are done.
            if sending {
                for to in &targets {
                    let _ = socket.send_to(&datagram, to).await;
                }
                sent_datagrams += 1;
                if sent_datagrams >= min_datagrams && start.elapsed() >= min_send {
                    sending = false;
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
                            if buf[..n] == end_marker[..] {
                                ends += 1;
                            }
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
            // 20 end markers per sender: done once most of each sender's arrived.
            if !sending
                && (others_sending == 0
                    || ends >= others_sending * 10
                    || (first.is_some() && idle)
                    || (first.is_none() && start.elapsed() > min_send + Duration::from_secs(10)))
            {
                break;
            }
            if !sending {
                let readable = recv_socket.readable();
                let _ = tokio::time::timeout(Duration::from_millis(100), readable).await;
            }
        }
        let elapsed = first.map_or(0.0, |f| (last - f).as_secs_f64());
        // Wall-clock times of the first and last arrival, so the parent can take one
        // window over all receivers.
        let unix_of = |t: Instant| start_us + t.saturating_duration_since(start).as_micros() as u64;
        let cpu_s = cpu_ns(std::process::id())
            .unwrap_or(0)
            .saturating_sub(cpu_start) as f64
            / 1e9;
        print(&MemberEvent::Done(RoundReport {
            round: u64::from(round),
            delivered: received,
            elapsed_s: elapsed,
            cpu_s,
            sent: Some(sent_datagrams * per_datagram as u64),
            since_go_s: Some(start.elapsed().as_secs_f64()),
            first_us: first.map(unix_of),
            last_us: first.map(|_| unix_of(last)),
            ..RoundReport::default()
        }));
        round += 1;
    }
    print(&MemberEvent::Exit { extra: 0 });
    Ok(())
}

/// What a raw TCP receiver's readers saw in the current round.
#[derive(Default)]
struct TcpArrivals {
    bytes: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    /// End frames of the round (one per other sender).
    ends: usize,
}

/// The raw TCP baseline (`--raw --transport tcp`): each sender writes the round's bytes to
/// every other member over one TCP connection each (frames of up to 60 000 bytes, a
/// length prefix, an empty frame ending the round), no protocol; a receiver counts the
/// bytes. TCP's own flow control means nothing is lost.
async fn raw_tcp(args: MemberArgs, senders: Vec<usize>) -> BenchResult {
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let local = args.members[args.index];
    let listener = tokio::net::TcpListener::bind(local).await?;
    let arrivals = Arc::new(Mutex::new(TcpArrivals::default()));
    let notify = Arc::new(tokio::sync::Notify::new());
    {
        let (arrivals, notify) = (arrivals.clone(), notify.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let (arrivals, notify) = (arrivals.clone(), notify.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65_536];
                    loop {
                        let Ok(len) = stream.read_u32().await else {
                            return;
                        };
                        let len = len as usize;
                        if len > buf.len() || stream.read_exact(&mut buf[..len]).await.is_err() {
                            return;
                        }
                        let now = Instant::now();
                        let mut a = arrivals.lock().unwrap_or_else(|e| e.into_inner());
                        if len == 0 {
                            a.ends += 1;
                            notify.notify_one();
                        } else {
                            a.bytes += len as u64;
                            a.first.get_or_insert(now);
                            a.last = Some(now);
                        }
                    }
                });
            }
        });
    }
    let is_sender = senders.contains(&args.index);
    let mut streams = Vec::new();
    if is_sender {
        for (i, addr) in args.members.iter().enumerate() {
            if i == args.index {
                continue;
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            let stream = loop {
                match tokio::net::TcpStream::connect(addr).await {
                    Ok(s) => break s,
                    Err(e) if Instant::now() > deadline => return Err(e.into()),
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            };
            stream.set_nodelay(true)?;
            streams.push(stream);
        }
    }
    print(&MemberEvent::Ready);
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let per_frame = (60_000 / args.size).max(1);
    let mut frame = vec![0x5Au8; 4 + per_frame * args.size];
    frame[..4].copy_from_slice(&((per_frame * args.size) as u32).to_be_bytes());
    let min_send = Duration::from_secs_f64(args.raw_seconds.max(0.0));
    let others_sending = senders.iter().filter(|s| **s != args.index).count();
    let mut round = 0u64;
    while wait_for_go(&mut stdin).await? {
        let start = Instant::now();
        let start_us = unix_us();
        let cpu_start = cpu_ns(std::process::id()).unwrap_or(0);
        let mut sent_frames = 0u64;
        if is_sender {
            let min_frames = args.count.div_ceil(per_frame as u64);
            while sent_frames < min_frames || start.elapsed() < min_send {
                for s in &mut streams {
                    s.write_all(&frame).await?;
                }
                sent_frames += 1;
            }
            for s in &mut streams {
                s.write_all(&0u32.to_be_bytes()).await?;
            }
        }
        // Until every other sender's end frame of this round arrived.
        loop {
            let notified = notify.notified();
            if arrivals.lock().unwrap_or_else(|e| e.into_inner()).ends >= others_sending {
                break;
            }
            if tokio::time::timeout(Duration::from_secs(60), notified)
                .await
                .is_err()
            {
                return Err("no end of the round from the other senders within 60 s".into());
            }
        }
        let a = std::mem::take(&mut *arrivals.lock().unwrap_or_else(|e| e.into_inner()));
        let unix_of = |t: Instant| start_us + t.saturating_duration_since(start).as_micros() as u64;
        print(&MemberEvent::Done(RoundReport {
            round,
            delivered: a.bytes / args.size as u64,
            elapsed_s: a
                .first
                .zip(a.last)
                .map_or(0.0, |(f, l)| (l - f).as_secs_f64()),
            cpu_s: cpu_ns(std::process::id())
                .unwrap_or(0)
                .saturating_sub(cpu_start) as f64
                / 1e9,
            sent: Some(sent_frames * per_frame as u64),
            since_go_s: Some(start.elapsed().as_secs_f64()),
            first_us: a.first.map(unix_of),
            last_us: a.last.map(unix_of),
            ..RoundReport::default()
        }));
        round += 1;
    }
    print(&MemberEvent::Exit { extra: 0 });
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
