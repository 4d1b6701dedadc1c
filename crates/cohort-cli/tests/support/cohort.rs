//! Running `cohort node --json` processes in a [`NetLab`] and matching their events.
//!
//! Contract of `cohort node --json`: one JSON object per stdout line:
//! `{"event":"started","id","host","port"}`, `{"event":"member_added","id","host","port",
//! "domain","payload"}`, `{"event":"member_disappeared","id","host","port","reason"}`,
//! `{"event":"message","from","host","port","options","data"}`, `{"event":"send_result",
//! "data","acked":[{"id","host","port"}],"failed":[{"id","host","port","reason"}]}`.
//! Each stdin line is sent with ACK to all members; SIGTERM leaves gracefully.

use std::ops::Deref;
use std::time::Duration;

use serde_json::Value;

use super::{NetLab, Proc, cohort_bin};

/// Options for [`Node::start`] beyond the host's bind / multicast-interface address.
#[derive(Clone, Debug, Default)]
pub(crate) struct NodeOpts {
    pub(crate) domain: Option<String>,
    pub(crate) port: Option<u16>,
    pub(crate) mcast_group: Option<String>,
    pub(crate) mcast_port: Option<u16>,
    pub(crate) payload: Option<String>,
    pub(crate) sync_ack: bool,
    /// Appended as is.
    pub(crate) extra: Vec<String>,
}

impl NodeOpts {
    /// The `cohort node` arguments for a node bound to `addr`.
    pub(crate) fn args(&self, addr: &str) -> Vec<String> {
        let mut a: Vec<String> = ["node", "--json", "--bind", addr, "--mcast-interface", addr]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let mut opt = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                a.push(k.to_owned());
                a.push(v);
            }
        };
        opt("--domain", self.domain.clone());
        opt("--port", self.port.map(|p| p.to_string()));
        opt("--mcast-group", self.mcast_group.clone());
        opt("--mcast-port", self.mcast_port.map(|p| p.to_string()));
        opt("--payload", self.payload.clone());
        if self.sync_ack {
            a.push("--sync-ack".to_owned());
        }
        a.extend(self.extra.iter().cloned());
        a
    }
}

/// A running `cohort node --json`, started (its `started` event seen).
pub(crate) struct Node {
    proc: Proc,
    /// The unique id (hex) from the `started` event.
    pub(crate) id: String,
    /// The host index in the lab.
    pub(crate) host: usize,
    /// The `started` event.
    pub(crate) started: Value,
}

impl Deref for Node {
    type Target = Proc;
    fn deref(&self) -> &Proc {
        &self.proc
    }
}

impl Node {
    /// Starts `cohort node` on lab host `host`, bound to the host's address, and waits
    /// (up to 10 s) for its `started` event.
    pub(crate) fn start(lab: &NetLab, host: usize, name: &str, opts: &NodeOpts) -> Self {
        let addr = lab.host_addr(host).to_string();
        let bin = cohort_bin();
        let proc = lab.spawn(host, name, &bin.to_string_lossy(), opts.args(&addr));
        let started = match proc.wait_for(Duration::from_secs(10), |v| is_event(v, "started")) {
            Ok(v) => v,
            Err(e) => panic!("{name}: cohort node did not start on {addr}: {e}"),
        };
        let id = match started["id"].as_str() {
            Some(id) if !id.is_empty() => id.to_owned(),
            _ => panic!("{name}: `started` without a string id: {started}"),
        };
        Self {
            proc,
            id,
            host,
            started,
        }
    }

    /// The underlying process.
    pub(crate) fn proc(&self) -> &Proc {
        &self.proc
    }
}

/// `v` is `{"event": name, ..}`.
pub(crate) fn is_event(v: &Value, name: &str) -> bool {
    v["event"] == name
}

/// A predicate: `member_added` of the member with `id`.
pub(crate) fn member_added(id: &str) -> impl FnMut(&Value) -> bool + use<> {
    let id = id.to_owned();
    move |v| is_event(v, "member_added") && v["id"] == id.as_str()
}

/// A predicate: `member_disappeared` of the member with `id` (any reason).
pub(crate) fn member_disappeared(id: &str) -> impl FnMut(&Value) -> bool + use<> {
    let id = id.to_owned();
    move |v| is_event(v, "member_disappeared") && v["id"] == id.as_str()
}

/// A predicate: a `message` with `data` from the member with `from`.
pub(crate) fn message_from(from: &str, data: &str) -> impl FnMut(&Value) -> bool + use<> {
    let (from, data) = (from.to_owned(), data.to_owned());
    move |v| is_event(v, "message") && v["from"] == from.as_str() && v["data"] == data.as_str()
}

/// A predicate: the `send_result` for `data`.
pub(crate) fn send_result(data: &str) -> impl FnMut(&Value) -> bool + use<> {
    let data = data.to_owned();
    move |v| is_event(v, "send_result") && v["data"] == data.as_str()
}

/// The ids listed in a `send_result`'s `acked` or `failed` array.
pub(crate) fn ids_in(result: &Value, field: &str) -> Vec<String> {
    result[field]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The member ids of a `view` event, in view order.
pub(crate) fn view_ids(v: &Value) -> Vec<String> {
    v["members"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A predicate: a `view` event listing exactly `ids` (in any order).
pub(crate) fn view_of(ids: &[String]) -> impl FnMut(&Value) -> bool + use<> {
    let mut want: Vec<String> = ids.to_vec();
    want.sort();
    move |v| {
        let mut got = view_ids(v);
        got.sort();
        is_event(v, "view") && got == want
    }
}

/// A predicate: any `view` event.
pub(crate) fn any_view(v: &Value) -> bool {
    is_event(v, "view")
}

/// Starts `cohort node --json` on 127.0.0.1 (any TCP port) in `domain`, heartbeats on
/// multicast port `mcast_port`, with `extra` arguments; waits for its `started` event and
/// returns the process and its id.
pub(crate) fn loopback_node(
    name: &str,
    domain: &str,
    mcast_port: u16,
    extra: &[&std::ffi::OsStr],
) -> (Proc, String) {
    let mut cmd = std::process::Command::new(cohort_bin());
    cmd.args([
        "node",
        "--json",
        "--domain",
        domain,
        "--port",
        "0",
        "--bind",
        "127.0.0.1",
    ])
    .args(["--mcast-interface", "127.0.0.1", "--mcast-port"])
    .arg(mcast_port.to_string())
    .args(extra);
    let proc = Proc::spawn(name, cmd);
    let started = match proc.wait_for(Duration::from_secs(10), |v| is_event(v, "started")) {
        Ok(v) => v,
        Err(e) => panic!("{name}: cohort node did not start: {e}"),
    };
    let id = started["id"].as_str().expect("an id").to_owned();
    (proc, id)
}
