//! The cohort side of a measurement: the nodes' configuration, a timed start, and the
//! send loop.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cohort::{Config, Events, Member, MulticastConfig, Node, SendOptions};

use super::process::CpuUse;
use super::sample::Sample;

/// Errors of starting a node.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every perf node's configuration: cluster `domain`, an ephemeral TCP port, multicast on
/// `mcast_port` via 127.0.0.1, the given `busy_poll`, Tribes' default timings.
pub(super) fn perf_config(domain: &str, mcast_port: u16, busy_poll: Duration) -> Config {
    Config::default()
        .domain(Bytes::from(domain.to_owned()))
        .port(0)
        .multicast(
            MulticastConfig::default()
                .port(mcast_port)
                .interface(Some(Ipv4Addr::LOCALHOST)),
        )
        .busy_poll(busy_poll)
}

/// Starts a node and measures how long until its first heartbeat left.
pub(super) async fn start_timed(config: Config) -> Result<(Node, Events, Duration), BoxError> {
    let t0 = Instant::now();
    let (node, events) = Node::start(config).await?;
    while node.stats().membership.sent == 0 {
        if t0.elapsed() > Duration::from_secs(5) {
            return Err("no heartbeat sent within 5 s of Node::start".into());
        }
        tokio::task::yield_now().await;
    }
    Ok((node, events, t0.elapsed()))
}

/// `senders` tasks each sending `payload` to `dest` with ACK, one send after another,
/// for `duration`.
pub(super) async fn cohort_run(
    node: &Node,
    dest: &[Member],
    payload: &Bytes,
    senders: usize,
    duration: Duration,
) -> Sample {
    let dest = Arc::new(dest.to_vec());
    let start = Instant::now();
    let end = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..senders {
        let node = node.clone();
        let dest = dest.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Sample::new_hist();
            let (mut count, mut errors) = (0u64, 0u64);
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                match node
                    .send(&dest, payload.clone(), SendOptions::USE_ACK)
                    .await
                {
                    Ok(_) => count += 1,
                    Err(_) => errors += 1,
                }
                let _ = hist.record(t.elapsed().as_nanos().max(1) as u64);
            }
            (hist, count, errors)
        }));
    }
    let mut total = Sample::empty();
    for task in tasks {
        if let Ok((hist, count, errors)) = task.await {
            let _ = total.hist.add(&hist);
            total.count += count;
            total.errors += errors;
        }
    }
    total.secs = start.elapsed().as_secs_f64();
    total
}

/// [`cohort_run`], also recording the CPU time this process and the processes
/// `sink_pids` used meanwhile.
pub(super) async fn cohort_run_timed(
    node: &Node,
    dest: &[Member],
    payload: &Bytes,
    senders: usize,
    duration: Duration,
    sink_pids: &[u32],
) -> Sample {
    let before = CpuUse::now(sink_pids);
    let mut sample = cohort_run(node, dest, payload, senders, duration).await;
    sample.cpu = Some(CpuUse::now(sink_pids).since(&before));
    sample
}
