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
    /// Serve only members holding a key of this key file (as `cohort node --key-file`).
    #[arg(long)]
    pub(crate) key_file: Option<std::path::PathBuf>,
}

pub(crate) async fn run(args: RouterArgs) -> CliResult {
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut router = Router::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    if let Some(path) = &args.key_file {
        router = router.with_keyring(crate::node::read_key_file(path)?);
    }
    println!("gossip router listening on {}", router.local_addr());
    tokio::select! {
        () = router.run() => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = sigterm.recv() => {}
    }
    Ok(())
}
