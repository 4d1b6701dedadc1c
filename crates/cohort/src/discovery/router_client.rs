//! Registration with one gossip router, kept up by reconnecting with back-off: a router
//! that restarts is registered with again by every member, without help.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cohort_proto::wire::cohort::router::RouterMessage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::Candidates;

const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);

pub(super) async fn run(
    router: SocketAddr,
    cluster: Bytes,
    local: SocketAddr,
    candidates: Arc<Candidates>,
) {
    let source = format!("router {router}");
    let mut retry = FIRST_RETRY;
    loop {
        match session(router, &cluster, local, &candidates, &source).await {
            Ok(()) => debug!(%router, "router closed the connection"),
            Err(e) => debug!(%router, error = %e, "router session ended"),
        }
        // What it told us stays a candidate list until another answer replaces it: a router
        // restart must not make members forget each other.
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(MAX_RETRY);
        if retry == MAX_RETRY {
            warn!(%router, "gossip router unreachable; retrying every {MAX_RETRY:?}");
        }
    }
}

async fn session(
    router: SocketAddr,
    cluster: &Bytes,
    local: SocketAddr,
    candidates: &Candidates,
    source: &str,
) -> std::io::Result<()> {
    let mut stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(router))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let mut out = BytesMut::new();
    RouterMessage::Register {
        cluster: cluster.clone(),
        addr: local,
    }
    .encode_framed(&mut out);
    stream.write_all(&out).await?;
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
        while let Some(message) = RouterMessage::decode_framed(&mut buf)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?
        {
            if let RouterMessage::Members { cluster: c, addrs } = message
                && c == *cluster
            {
                let addrs: BTreeSet<SocketAddr> =
                    addrs.into_iter().filter(|a| *a != local).collect();
                debug!(%router, members = addrs.len(), "router answered");
                candidates.set(source, addrs);
            }
        }
    }
}
