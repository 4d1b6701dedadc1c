//! Registration with one gossip router, kept up by reconnecting with back-off: a router
//! that restarts is registered with again by every member, without help.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cohort_proto::security::Purpose;
use cohort_proto::wire::cohort::router::RouterMessage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::Candidates;
use crate::backoff::Backoff;
use crate::security::{Security, StreamOpen, StreamSeal};

const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);

pub(super) async fn run(
    router: SocketAddr,
    cluster: Bytes,
    local: SocketAddr,
    candidates: Arc<Candidates>,
    security: Option<Security>,
) {
    let source = format!("router {router}");
    let mut retry = Backoff::new(FIRST_RETRY, MAX_RETRY);
    loop {
        match session(
            router,
            &cluster,
            local,
            &candidates,
            &source,
            security.as_ref(),
        )
        .await
        {
            Ok(()) => debug!(%router, "router closed the connection"),
            Err(e) => debug!(%router, error = %e, "router session ended"),
        }
        // What it told us stays a candidate list until another answer replaces it: a router
        // restart must not make members forget each other.
        tokio::time::sleep(retry.next_wait()).await;
        if retry.at_longest() {
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
    security: Option<&Security>,
) -> std::io::Result<()> {
    let mut seal = StreamSeal::new(security, Purpose::RouterRequest);
    let mut opener = StreamOpen::new(security, Purpose::RouterReply);
    fn invalid(e: impl std::error::Error + Send + Sync + 'static) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
    let mut stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(router))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let mut out = BytesMut::new();
    RouterMessage::Register {
        cluster: cluster.clone(),
        addr: local,
    }
    .encode_framed(&mut out);
    let mut sealed = BytesMut::new();
    seal.seal_into(&out, &mut sealed).map_err(invalid)?;
    stream.write_all(&sealed).await?;
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if stream.read_buf(opener.read_buffer(&mut buf)).await? == 0 {
            return Ok(());
        }
        opener.open(&mut buf).map_err(invalid)?;
        while let Some(message) = RouterMessage::decode_framed(&mut buf).map_err(invalid)? {
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
