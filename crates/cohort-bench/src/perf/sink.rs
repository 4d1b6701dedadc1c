//! The cohort sink process (`cohort perf-sink`): a node that accepts every message and
//! reports on stdout when it is up and, when its stdin closes, what it received.

use std::time::Duration;

use cohort::Event;
use tokio::io::AsyncReadExt;

use serde::{Deserialize, Serialize};

use super::PerfSinkArgs;
use super::cohort_bench::{perf_config, start_timed};
use super::process::unix_us;
use crate::BenchResult;

/// Runs the sink: prints `ready` (id, port, pid, start time, time to first heartbeat),
/// counts messages until stdin closes, then prints `stopped` with the counts.
pub(super) async fn sink_main(args: PerfSinkArgs) -> BenchResult {
    let start_unix_us = unix_us();
    let config = perf_config(
        &args.domain,
        args.mcast_port,
        Duration::from_micros(args.busy_poll_us),
    );
    let (node, mut events, first_heartbeat) = start_timed(config).await?;
    let me = node.local_member();
    print_event(&SinkEvent::Ready(SinkReady {
        id: me.id.to_hex(),
        port: me.addr.port(),
        pid: std::process::id(),
        start_unix_us,
        first_heartbeat_us: first_heartbeat.as_secs_f64() * 1e6,
    }));
    let mut messages = 0u64;
    let mut bytes = 0u64;
    let mut stdin = tokio::io::stdin();
    let mut scratch = [0u8; 64];
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(Event::Message(m)) => {
                    messages += 1;
                    bytes += m.data.len() as u64;
                }
                Some(_) => {}
                None => break,
            },
            // The parent closes our stdin when we should stop.
            n = stdin.read(&mut scratch) => if !matches!(n, Ok(k) if k > 0) { break },
        }
    }
    node.shutdown().await;
    print_event(&SinkEvent::Stopped(SinkStopped { messages, bytes }));
    Ok(())
}

/// What a `perf-sink` process prints, one JSON object a line, tagged by `event`.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(super) enum SinkEvent {
    /// The sink's node is up.
    Ready(SinkReady),
    /// Stdin closed; the node stopped.
    Stopped(SinkStopped),
    /// The raw TCP peer (`perf-sink --raw`) is listening.
    RawReady(RawReady),
}

/// `{"event":"ready",...}` of a cohort sink.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(super) struct SinkReady {
    /// The node's member id, hex.
    pub(super) id: String,
    /// The node's TCP port.
    pub(super) port: u16,
    /// The process id.
    pub(super) pid: u32,
    /// When the process started (µs since the epoch).
    pub(super) start_unix_us: u64,
    /// `Node::start` to its first heartbeat sent, in µs.
    pub(super) first_heartbeat_us: f64,
}

/// `{"event":"stopped",...}` of a cohort sink.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(super) struct SinkStopped {
    /// Messages received.
    pub(super) messages: u64,
    /// Payload bytes received.
    pub(super) bytes: u64,
}

/// `{"event":"raw_ready",...}` of the raw TCP peer.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(super) struct RawReady {
    /// The port it listens on (127.0.0.1).
    pub(super) port: u16,
    /// The process id.
    pub(super) pid: u32,
}

/// One event on stdout, as one JSON line.
pub(super) fn print_event(event: &SinkEvent) {
    if let Ok(line) = serde_json::to_string(event) {
        println!("{line}");
    }
}
