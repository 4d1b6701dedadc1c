//! `cohort router`: a gossip router in the foreground.

use std::net::SocketAddr;

use clap::Args;
use cohort::router::Router;
use tokio::signal::unix::{SignalKind, signal};

use crate::CliResult;

/// Options of `cohort router`.
#[derive(Args, Debug, Clone)]
pub(crate) struct RouterArgs {
    /// Address to listen on (members use it with `cohort node --router`).
    #[arg(long, default_value = "127.0.0.1:12001")]
    pub(crate) listen: SocketAddr,
}

pub(crate) async fn run(args: RouterArgs) -> CliResult {
    let mut sigterm = signal(SignalKind::terminate())?;
    let router = Router::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    println!("gossip router listening on {}", router.local_addr());
    tokio::select! {
        () = router.run() => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = sigterm.recv() => {}
    }
    Ok(())
}
