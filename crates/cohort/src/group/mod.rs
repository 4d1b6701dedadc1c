//! Drives the group core ([`cohort_proto::group::Group`]): feeds it the heartbeats the
//! membership task hears and the control messages the receiver gets, sends its messages
//! over the channel, keeps the ring connection to the watched member, and publishes views.

mod ring;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cohort_proto::group::{Group, GroupEvent, GroupMember};
use cohort_proto::wire::cohort::GroupPacket;
use cohort_proto::wire::tribes::SendOptions;
use cohort_proto::{DisappearReason, Member, MemberId};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};
use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::event::Event;
use crate::lifecycle::AbortOnDrop;
use crate::messages::{GroupInput, HeartbeatCommand};
use crate::shared::Shared;

/// Commands from the node handle.
pub(crate) enum Command {
    /// Leave the group; answered once the leave message is delivered (or could not be).
    Leave(oneshot::Sender<()>),
}

/// Longest a graceful leave waits for its message to be acknowledged.
const LEAVE_TIMEOUT: Duration = Duration::from_millis(500);

/// The group task: one per node.
pub(crate) async fn run(
    mut core: Group,
    mut inbox: mpsc::UnboundedReceiver<GroupInput>,
    mut commands: mpsc::Receiver<Command>,
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<Event>,
    heartbeat: mpsc::Sender<HeartbeatCommand>,
) {
    let clock = Clock::new();
    let limits = core.config().limits;
    let ring_inbox = shared.group_inbox.clone();
    // The member watched, and the task watching it (none once it was found dead: it is
    // not watched again, the group removes it). The guard ends the watch with this task,
    // also when this task is aborted (the node's last handle dropped).
    let mut ring: Option<(MemberId, Option<AbortOnDrop>)> = None;
    // Group messages on their way. A rejoin aborts them: a frame still queued then speaks
    // for an incarnation that no longer exists (the transport drops a frame whose sender
    // gave up before it was written). Events are handled before transmits, so the messages
    // the core queued with the rejoin (its join request) are spawned after the abort.
    let mut sending: JoinSet<()> = JoinSet::new();
    core.handle_timeout(clock.now());
    loop {
        while sending.try_join_next().is_some() {}
        while let Some(event) = core.poll_event() {
            match event {
                GroupEvent::ViewInstalled(view) => {
                    info!(view = %view.id, members = view.members.len(), "view installed");
                    shared.view.send_replace(Some(view.clone()));
                    let _ = events.send(Event::ViewChanged(view));
                }
                GroupEvent::Rejoined { old, new } => {
                    info!(%old, %new, "removed from the group: rejoining under a new id");
                    sending.abort_all();
                    shared.view.send_replace(None);
                    shared.local_id.send_replace(new);
                    let _ = heartbeat.send(HeartbeatCommand::SetIdentity(new)).await;
                    let _ = events.send(Event::Rejoined { old, new });
                }
            }
        }
        while let Some((to, packet)) = core.poll_transmit() {
            let frame = encode(&shared, &packet);
            let shared = shared.clone();
            sending.spawn(async move {
                if let Err(e) = shared.peers.submit(&as_member(&to), frame, true).await {
                    debug!(to = %to.addr, kind = packet.message.kind(), error = %e, "group message not delivered");
                }
            });
        }
        while let Some(target) = core.poll_host_check() {
            let report = shared.group_inbox.clone();
            tokio::spawn(async move {
                let result = ring::check_host(target.addr).await;
                let _ = report.send(GroupInput::HostChecked {
                    id: target.id,
                    result,
                });
            });
        }
        // Keep one ring connection, to the member we watch.
        let watched = core.watched();
        if ring.as_ref().map(|(id, _)| *id) != watched.map(|w| w.id) {
            // Dropping the old guard ends the old watch.
            ring = None;
            if let Some(w) = watched {
                let task = tokio::spawn(ring::watch(w, ring_inbox.clone()));
                ring = Some((w.id, Some(AbortOnDrop(task))));
            }
        }

        let deadline = core.poll_timeout().map(|t| clock.to_tokio(t));
        tokio::select! {
            input = inbox.recv() => {
                let Some(input) = input else { break };
                let now = clock.now();
                match input {
                    GroupInput::Heard(m) => core.heard_from(group_member(&m), now),
                    GroupInput::Gone { id, reason: DisappearReason::Shutdown } => core.member_left(id, now),
                    GroupInput::Gone { id, reason: DisappearReason::Restarted } => core.member_restarted(id, now),
                    // Silence is the failure detector's business, with witnesses.
                    GroupInput::Gone { reason: DisappearReason::Timeout, .. } => {}
                    GroupInput::Message { from, data } => match GroupPacket::decode(&data, &limits) {
                        Ok(packet) => core.handle_packet(from.addr, packet, now),
                        Err(e) => {
                            crate::shared::Counters::bump(&shared.counters.malformed_frames);
                            warn!(from = %from.addr, error = %e, "dropped malformed group message");
                        }
                    },
                    GroupInput::HostChecked { id, result } => core.host_check_result(id, result, now),
                    GroupInput::RingClosed { id } => {
                        if let Some((watched, task)) = &mut ring
                            && *watched == id
                        {
                            *task = None;
                        }
                        core.link_closed(id, now);
                    }
                }
            }
            () = sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() => {
                core.handle_timeout(clock.now());
            }
            command = commands.recv() => match command {
                Some(Command::Leave(done)) => {
                    core.leave(clock.now());
                    let mut sends = Vec::new();
                    while let Some((to, packet)) = core.poll_transmit() {
                        let frame = encode(&shared, &packet);
                        let shared = shared.clone();
                        sends.push(async move {
                            let _ = shared.peers.submit(&as_member(&to), frame, true).await;
                        });
                    }
                    let _ = tokio::time::timeout(LEAVE_TIMEOUT, futures_util::future::join_all(sends)).await;
                    let _ = done.send(());
                    break;
                }
                None => break,
            },
        }
    }
    drop(ring);
    sending.detach_all();
}

fn encode(shared: &Shared, packet: &GroupPacket) -> Bytes {
    let options = SendOptions::USE_ACK
        .with(SendOptions::BYTE_MESSAGE)
        .with(SendOptions::COHORT_CONTROL);
    shared.encode_frame(options, &packet.encode())
}

fn group_member(m: &Member) -> GroupMember {
    GroupMember {
        id: m.id,
        addr: m.addr,
    }
}

/// The channel's view of a group member: a cohort node at that address.
fn as_member(m: &GroupMember) -> Member {
    Member {
        id: m.id,
        addr: m.addr,
        secure_port: None,
        udp_port: None,
        domain: Bytes::new(),
        payload: Bytes::new(),
        alive: Duration::ZERO,
        is_cohort: true,
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}
