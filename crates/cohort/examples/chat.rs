//! A minimal chat: every line typed is sent, with ACK, to every member of the domain.
//!
//! Run it in two terminals on the same machine:
//!
//! ```text
//! cargo run -p cohort --example chat
//! cargo run -p cohort --example chat
//! ```
//!
//! Each prints who joins and leaves, the lines the others type, and which members
//! acknowledged each of its own lines.

use cohort::{Config, Event, Node, SendOptions};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (node, mut events) = Node::start(Config::with_domain("chat-example")).await?;
    println!(
        "I am {} — type a line to send it to everyone",
        node.local_member()
    );
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(Event::MemberAdded(m)) => println!("{m} joined"),
                Some(Event::MemberDisappeared { member, reason }) => {
                    println!("{member} left ({})", reason.as_str());
                }
                Some(Event::Message(msg)) => {
                    println!("{}: {}", msg.from, String::from_utf8_lossy(&msg.data));
                }
                Some(Event::ViewChanged(view)) => {
                    println!("view {}: {} member(s)", view.id, view.members.len());
                }
                Some(Event::Rejoined { new, .. }) => println!("removed; rejoining as {new}"),
                // Event is non-exhaustive: later versions may add kinds.
                Some(_) => {}
                None => break,
            },
            line = lines.next_line() => match line? {
                Some(line) => match node.send_to_all(line, SendOptions::USE_ACK).await {
                    Ok(report) => println!("(acknowledged by {})", report.acked.len()),
                    Err(e) => println!("({e})"),
                },
                None => break,
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    node.shutdown().await;
    Ok(())
}
