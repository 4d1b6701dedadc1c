//! Two members of a fixed view in one process: one multicasts numbered messages over
//! loopback UDP multicast, both deliver them in order.
//!
//! ```text
//! cargo run -p cohort --example reliable_multicast
//! ```

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use cohort::reliable::{ReliableChannel, ReliableChannelConfig};
use cohort::{GroupMember, MemberId, View};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = rand::rng();
    let ids = [MemberId::random(&mut rng), MemberId::random(&mut rng)];
    let members = ids
        .iter()
        .zip([24_990, 24_991])
        .map(|(id, port)| GroupMember::new(*id, SocketAddr::from((Ipv4Addr::LOCALHOST, port))));
    let view = View::new(1, members).expect("two members");
    let config = ReliableChannelConfig::default()
        .multicast(SocketAddrV4::new(Ipv4Addr::new(228, 46, 2, 99), 46_299))
        // The view's addresses are the UDP addresses.
        .port_offset(0);
    let a = ReliableChannel::start_static(ids[0], config.clone(), view.clone())?;
    let b = ReliableChannel::start_static(ids[1], config, view)?;
    for i in 0..5 {
        a.multicast(format!("message {i}")).await?;
    }
    for _ in 0..5 {
        let d = b.recv().await.ok_or("closed")?;
        println!("b got {:?} from {}", d.payload, d.from);
    }
    println!("a's stats: {:?}", a.stats());
    Ok(())
}
