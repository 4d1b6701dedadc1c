//! The status endpoint of `cohort node`, an HTTP server (axum) on a local address:
//!
//! - `GET /status`: the node's identity, current view, recent views and counters as JSON
//!   ([`Status`]); `cohort members` reads it, so does `curl`;
//! - `GET /metrics`: every counter in the Prometheus (OpenMetrics) text format;
//! - `GET /`: a small page that shows the same and refreshes itself every second.
//!
//! Read-only: nothing here changes the node. It binds 127.0.0.1 by default; it has no
//! authentication, so bind it to an address only operators reach.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Json};
use axum::routing::get;
use cohort::{Member, Node, View};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

/// Views remembered for the page and `/status`.
const HISTORY: usize = 32;

/// The status document served at `/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Status {
    /// This node.
    pub(crate) local: MemberDoc,
    /// Its current view (`null` before it joined a group).
    pub(crate) view: Option<ViewDoc>,
    /// Every member whose heartbeats it hears.
    pub(crate) members_heard: Vec<MemberDoc>,
    /// The last views it installed, oldest first.
    #[serde(default)]
    pub(crate) history: Vec<HistoryEntry>,
    /// Its counters (the same as `/metrics`).
    #[serde(default)]
    pub(crate) counters: Vec<Counter>,
    /// The cluster key's counters, when it has one.
    pub(crate) security: Option<SecurityDoc>,
}

/// A member: id and address.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MemberDoc {
    /// Hex id.
    pub(crate) id: String,
    /// IP address.
    pub(crate) host: String,
    /// Port of its channel receiver.
    pub(crate) port: u16,
}

impl MemberDoc {
    fn of(id: String, addr: SocketAddr) -> Self {
        Self {
            id,
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

/// A view: id, number, coordinator and members (coordinator first).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ViewDoc {
    /// `coordinator:seq`, as the logs print it.
    pub(crate) view_id: String,
    /// The view's number.
    pub(crate) seq: u64,
    /// Hex id of its coordinator.
    pub(crate) coordinator: String,
    /// Its members, oldest first.
    pub(crate) members: Vec<MemberDoc>,
}

impl ViewDoc {
    pub(crate) fn of(view: &View) -> Self {
        Self {
            view_id: view.id.to_string(),
            seq: view.id.seq,
            coordinator: view.id.coordinator.to_hex(),
            members: view
                .members
                .iter()
                .map(|m| MemberDoc::of(m.id.to_hex(), m.addr))
                .collect(),
        }
    }
}

/// A view the node installed, and when.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HistoryEntry {
    /// `coordinator:seq`.
    pub(crate) view_id: String,
    /// How many members it had.
    pub(crate) members: usize,
    /// When it was installed, milliseconds since the Unix epoch.
    pub(crate) at_ms: u64,
}

/// One counter or gauge.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Counter {
    /// Metric name without the `cohort_` prefix (and without `_total`).
    pub(crate) name: String,
    /// What it counts.
    pub(crate) help: String,
    /// `counter` (only grows) or `gauge`.
    pub(crate) kind: String,
    /// Its value now.
    pub(crate) value: u64,
}

/// The cluster key's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SecurityDoc {
    /// Key ids in the keyring, the one that seals first.
    pub(crate) keys: Vec<String>,
    /// Messages sealed.
    pub(crate) sealed: u64,
    /// Messages opened.
    pub(crate) opened: u64,
    /// Messages refused for any of the reasons below.
    pub(crate) rejected: u64,
    /// Plain (unsealed) messages refused.
    pub(crate) unauthenticated: u64,
    /// Sealed under a key id not in the keyring.
    pub(crate) unknown_key: u64,
    /// Tag check failed (forged or corrupted).
    pub(crate) bad_tag: u64,
    /// Seen before (replay).
    pub(crate) replayed: u64,
    /// Older than the replay window.
    pub(crate) stale: u64,
    /// Opened, but not a valid record.
    pub(crate) bad_record: u64,
    /// Refused because too many senders are tracked.
    pub(crate) too_many_senders: u64,
    /// Sends refused (nothing to seal with).
    pub(crate) refused_sends: u64,
}

/// What the endpoint serves from: the node and the views it installed.
#[derive(Clone)]
pub(crate) struct StatusState {
    node: Node,
    history: Arc<Mutex<VecDeque<HistoryEntry>>>,
}

impl StatusState {
    pub(crate) fn new(node: Node) -> Self {
        let state = Self {
            node,
            history: Arc::default(),
        };
        if let Some(view) = state.node.view() {
            state.record_view(&view);
        }
        state
    }

    /// Remembers a view the node installed (the last [`HISTORY`] are kept).
    pub(crate) fn record_view(&self, view: &View) {
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(HistoryEntry {
            view_id: view.id.to_string(),
            members: view.members.len(),
            at_ms,
        });
    }

    /// The status document now.
    pub(crate) fn status(&self) -> Status {
        let node = &self.node;
        let local: &Member = node.local_member();
        Status {
            local: MemberDoc::of(node.id().to_hex(), local.addr),
            view: node.view().as_ref().map(ViewDoc::of),
            members_heard: node
                .members()
                .iter()
                .map(|m| MemberDoc::of(m.id.to_hex(), m.addr))
                .collect(),
            history: self
                .history
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned()
                .collect(),
            counters: counters(node),
            security: node.security().map(|s| {
                let st = s.stats();
                SecurityDoc {
                    keys: s.list().iter().map(ToString::to_string).collect(),
                    sealed: st.sealed,
                    opened: st.opened,
                    rejected: st.rejected(),
                    unauthenticated: st.unauthenticated,
                    unknown_key: st.unknown_key,
                    bad_tag: st.bad_tag,
                    replayed: st.replayed,
                    stale: st.stale,
                    bad_record: st.bad_record,
                    too_many_senders: st.too_many_senders,
                    refused_sends: st.refused_sends,
                }
            }),
        }
    }
}

/// Every counter the node keeps, with its help text.
fn counters(node: &Node) -> Vec<Counter> {
    let s = node.stats();
    let view = node.view();
    let mut out = Vec::new();
    let mut metric = |kind: &str, name: &str, help: &str, value: u64| {
        out.push(Counter {
            name: name.to_string(),
            help: help.to_string(),
            kind: kind.to_string(),
            value,
        });
    };
    let mut counter = |name: &str, help: &str, value: u64| metric("counter", name, help, value);
    let m = &s.membership;
    counter(
        "heartbeats_received",
        "Heartbeat datagrams received.",
        m.received,
    );
    counter(
        "heartbeats_accepted",
        "Heartbeats accepted as members' news.",
        m.accepted,
    );
    counter(
        "heartbeats_malformed",
        "Heartbeats dropped as malformed.",
        m.malformed,
    );
    counter(
        "heartbeats_foreign_domain",
        "Heartbeats of other domains, ignored.",
        m.foreign_domain,
    );
    counter("heartbeats_sent", "Heartbeats sent.", m.sent);
    counter(
        "messages_received",
        "Channel messages received.",
        s.messages_received,
    );
    counter(
        "frames_malformed",
        "Channel frames that were not valid (connection closed).",
        s.malformed_frames,
    );
    counter(
        "connections_accepted",
        "Channel connections accepted.",
        s.connections_accepted,
    );
    let i = &s.inbound;
    counter(
        "inbound_refused",
        "Connections refused at the connection cap.",
        i.refused,
    );
    counter(
        "inbound_evicted",
        "Idle-before-first-frame connections closed for a new one.",
        i.evicted,
    );
    counter(
        "inbound_over_buffer",
        "Connections closed for buffering too much.",
        i.over_buffer,
    );
    let k = &s.security;
    counter("sealed", "Messages sealed with the cluster key.", k.sealed);
    counter("opened", "Messages opened with the cluster key.", k.opened);
    counter(
        "security_rejected",
        "Messages refused by the cluster-key check.",
        k.rejected(),
    );
    let mut gauge = |name: &str, help: &str, value: u64| metric("gauge", name, help, value);
    gauge("inbound_open", "Channel connections open now.", i.open);
    gauge(
        "inbound_buffered_bytes",
        "Bytes held in unfinished frames now.",
        i.buffered,
    );
    gauge(
        "members_heard",
        "Members whose heartbeats are heard.",
        node.members().len() as u64,
    );
    gauge(
        "view_members",
        "Members of the current view (0 before joining).",
        view.as_ref().map_or(0, |v| v.members.len() as u64),
    );
    gauge(
        "view_seq",
        "Number of the current view (0 before joining).",
        view.as_ref().map_or(0, |v| v.id.seq),
    );
    out
}

/// The counters in the OpenMetrics text format.
fn metrics_text(counters: &[Counter]) -> String {
    let mut registry = Registry::with_prefix("cohort");
    for c in counters {
        if c.kind == "counter" {
            registry.register(c.name.clone(), c.help.clone(), ConstCounter::new(c.value));
        } else {
            let value = i64::try_from(c.value).unwrap_or(i64::MAX);
            registry.register(c.name.clone(), c.help.clone(), ConstGauge::new(value));
        }
    }
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &registry);
    out
}

async fn status_handler(State(state): State<StatusState>) -> Json<Status> {
    Json(state.status())
}

async fn metrics_handler(State(state): State<StatusState>) -> impl IntoResponse {
    let body = metrics_text(&counters(&state.node));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

async fn page_handler() -> Html<&'static str> {
    Html(include_str!("status.html"))
}

/// Binds `addr` and serves the status in the background; returns the bound address.
pub(crate) async fn serve(state: StatusState, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/", get(page_handler))
        .route("/status", get(status_handler))
        .route("/metrics", get(metrics_handler))
        .with_state(state);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(bound)
}
