//! The cohort sink process (`cohort perf-sink`): a node that accepts every message and
//! reports on stdout when it is up and, when its stdin closes, what it received.

use std::time::Duration;

use cohort::Event;
use serde_json::json;
use tokio::io::AsyncReadExt;

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
    println!(
        "{}",
        json!({
            "event": "ready",
            "id": me.id.to_hex(),
            "port": me.addr.port(),
            "pid": std::process::id(),
            "start_unix_us": start_unix_us,
            "first_heartbeat_us": first_heartbeat.as_secs_f64() * 1e6,
        })
    );
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
    println!(
        "{}",
        json!({"event": "stopped", "messages": messages, "bytes": bytes})
    );
    Ok(())
}
