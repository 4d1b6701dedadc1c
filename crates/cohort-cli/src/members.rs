//! `cohort members`: asks a running node for its current view (its status endpoint's
//! `/status`, see [`crate::status`]).

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use clap::Args;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::CliResult;
use crate::status::Status;

/// Options of `cohort members`.
#[derive(Args, Debug, Clone)]
pub(crate) struct MembersArgs {
    /// The node's status endpoint (printed by `cohort node` at start, `--status`).
    #[arg(long)]
    pub(crate) status: SocketAddr,
    /// Print the node's status document as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Longest the whole query may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest status document accepted.
const MAX_BODY: usize = 16 * 1024 * 1024;

pub(crate) async fn run(args: MembersArgs) -> CliResult {
    let status = tokio::time::timeout(TIMEOUT, fetch(args.status))
        .await
        .map_err(|_| format!("no answer from {} within {TIMEOUT:?}", args.status))??;
    if args.json {
        println!("{}", serde_json::to_string(&status)?);
        return Ok(());
    }
    let local = &status.local.id;
    match &status.view {
        None => println!("node {local} is not in a group yet"),
        Some(view) => {
            println!("view {} ({} members)", view.view_id, view.members.len());
            for (i, m) in view.members.iter().enumerate() {
                let role = if i == 0 { " coordinator" } else { "" };
                let me = if &m.id == local { " (this node)" } else { "" };
                println!("  {}:{} {}{role}{me}", m.host, m.port, m.id);
            }
        }
    }
    Ok(())
}

/// `GET /status` from the endpoint at `addr`.
pub(crate) async fn fetch(
    addr: SocketAddr,
) -> Result<Status, Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot reach the node's status endpoint {addr}: {e}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = Request::get("/status")
        .header("host", addr.to_string())
        .body(Body::empty())?;
    let response = sender.send_request(request).await?;
    if response.status() != StatusCode::OK {
        return Err(format!("{addr} answered {} to GET /status", response.status()).into());
    }
    let body = http_body_util::Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await?
        .to_bytes();
    Ok(serde_json::from_slice(&body)
        .map_err(|e| format!("{addr} sent a status that is not cohort's: {e}"))?)
}
