//! Runs one voter of a local three-voter ensemble and prints role changes.
//!
//! Start it three times, in three terminals:
//! ```sh
//! cargo run -p cohort --example elect -- 1
//! cargo run -p cohort --example elect -- 2
//! cargo run -p cohort --example elect -- 3
//! ```
//! then stop the leader with Ctrl-C and watch the others elect a new one.

use std::net::SocketAddr;

use cohort::election::{Election, ElectionOptions};

#[tokio::main]
async fn main() -> Result<(), cohort::election::ElectionStartError> {
    let sid: i64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let voters = (1..=3).map(|s| (s, SocketAddr::from(([127, 0, 0, 1], 23700 + s as u16))));
    let election = Election::start(ElectionOptions::new(sid, voters)).await?;
    let mut changes = election.watch();
    println!("sid {sid} on {}", election.local_addr());
    loop {
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() { break; }
                let now = *changes.borrow_and_update();
                println!("{:?} leader {:?} (epoch {})", now.role, now.leader, now.election_epoch);
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    election.shutdown().await;
    Ok(())
}
