//! `cohort members`: asks a running node for its current view.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::CliResult;

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

pub(crate) async fn run(args: MembersArgs) -> CliResult {
    let status = tokio::time::timeout(TIMEOUT, fetch(args.status))
        .await
        .map_err(|_| format!("no answer from {} within {TIMEOUT:?}", args.status))??;
    if args.json {
        println!("{status}");
        return Ok(());
    }
    let local = status["local"]["id"].as_str().unwrap_or_default();
    match status.get("view").filter(|v| !v.is_null()) {
        None => println!("node {local} is not in a group yet"),
        Some(view) => {
            let members = view["members"].as_array().cloned().unwrap_or_default();
            println!(
                "view {} ({} members)",
                view["view_id"].as_str().unwrap_or("?"),
                members.len()
            );
            for (i, m) in members.iter().enumerate() {
                let id = m["id"].as_str().unwrap_or("?");
                let role = if i == 0 { " coordinator" } else { "" };
                let me = if id == local { " (this node)" } else { "" };
                println!(
                    "  {}:{} {id}{role}{me}",
                    m["host"].as_str().unwrap_or("?"),
                    m["port"]
                );
            }
        }
    }
    Ok(())
}

async fn fetch(addr: SocketAddr) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot reach the node's status endpoint {addr}: {e}"))?;
    stream
        .write_all(b"GET /status HTTP/1.0\r\nHost: cohort\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .ok_or_else(|| format!("{addr} did not answer like a cohort status endpoint"))?;
    Ok(serde_json::from_str(body)
        .map_err(|e| format!("{addr} sent a status that is not JSON: {e}"))?)
}
