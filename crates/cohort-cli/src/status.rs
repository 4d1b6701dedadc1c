//! The status endpoint of `cohort node`: a minimal HTTP server on a local address that
//! answers every request with the node's identity and current view as JSON. `cohort
//! members` reads it; so does `curl`.

use std::net::SocketAddr;
use std::time::Duration;

use cohort::Node;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::output::{member_json, view_json};

/// Longest a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest request read; the request is not interpreted beyond its end.
const MAX_REQUEST: usize = 8 * 1024;

/// Binds `addr` and serves the status in the background; returns the bound address.
pub(crate) async fn serve(node: Node, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let node = node.clone();
            tokio::spawn(async move {
                let _ = answer(stream, &node).await;
            });
        }
    });
    Ok(bound)
}

/// The status document.
pub(crate) fn status_json(node: &Node) -> serde_json::Value {
    let mut local = member_json(node.local_member());
    local["id"] = json!(node.id().to_hex());
    json!({
        "local": local,
        "view": node.view().as_ref().map(view_json),
        "members_heard": node.members().iter().map(member_json).collect::<Vec<_>>(),
        "security": node.security().map(|s| {
            let st = s.stats();
            json!({
                "keys": s.list().iter().map(ToString::to_string).collect::<Vec<_>>(),
                "sealed": st.sealed,
                "opened": st.opened,
                "rejected": st.rejected(),
                "unauthenticated": st.unauthenticated,
                "unknown_key": st.unknown_key,
                "bad_tag": st.bad_tag,
                "replayed": st.replayed,
                "stale": st.stale,
                "bad_record": st.bad_record,
                "too_many_senders": st.too_many_senders,
                "refused_sends": st.refused_sends,
            })
        }),
    })
}

async fn answer(mut stream: TcpStream, node: &Node) -> std::io::Result<()> {
    // Read the request head (up to a blank line); its content does not matter.
    let mut request = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, async {
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < MAX_REQUEST {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let body = status_json(node).to_string();
    let response = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
