//! How events are printed: human-readable lines, or one JSON object per line.

use cohort::{DisappearReason, Member, MemberId, SendError, SendReport, View};
use serde_json::{Value, json};

/// Prints events as text or as JSON lines.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Printer {
    pub(crate) json: bool,
}

pub(crate) fn member_json(m: &Member) -> Value {
    json!({ "id": m.id.to_hex(), "host": m.addr.ip().to_string(), "port": m.addr.port() })
}

/// A view as JSON: `{"view_id","seq","coordinator","members":[{"id","host","port"}]}`,
/// the same document as the status endpoint's view.
pub(crate) fn view_json(view: &View) -> Value {
    serde_json::to_value(crate::status::ViewDoc::of(view)).unwrap_or(Value::Null)
}

/// A view as text: its id and members, one per line, the coordinator marked.
pub(crate) fn view_text(view: &View, local: Option<MemberId>) -> String {
    let mut out = format!("view {} ({} members)", view.id, view.members.len());
    for (i, m) in view.members.iter().enumerate() {
        let role = if i == 0 { " coordinator" } else { "" };
        let me = if Some(m.id) == local {
            " (this node)"
        } else {
            ""
        };
        out.push_str(&format!("\n  {} {}{role}{me}", m.addr, m.id));
    }
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Printer {
    fn emit(&self, value: Value, human: String) {
        if self.json {
            println!("{value}");
        } else {
            println!("{human}");
        }
    }

    pub(crate) fn started(&self, m: &Member) {
        let mut v = member_json(m);
        v["event"] = json!("started");
        v["domain"] = json!(text(&m.domain));
        self.emit(v, format!("started as {} (id {})", m.addr, m.id));
    }

    pub(crate) fn member_added(&self, m: &Member) {
        let mut v = member_json(m);
        v["event"] = json!("member_added");
        v["domain"] = json!(text(&m.domain));
        v["payload"] = json!(text(&m.payload));
        self.emit(v, format!("+ member {} joined (id {})", m.addr, m.id));
    }

    pub(crate) fn member_disappeared(&self, m: &Member, reason: DisappearReason) {
        let mut v = member_json(m);
        v["event"] = json!("member_disappeared");
        v["reason"] = json!(reason.as_str());
        self.emit(v, format!("- member {} left: {}", m.addr, reason.as_str()));
    }

    pub(crate) fn message(&self, msg: &cohort::Message) {
        let mut v = member_json(&msg.from);
        let from = v
            .as_object_mut()
            .and_then(|o| o.remove("id"))
            .unwrap_or_default();
        v["event"] = json!("message");
        v["from"] = from;
        v["options"] = json!(msg.options.0);
        v["data"] = json!(text(&msg.data));
        self.emit(v, format!("{}: {}", msg.from.addr, text(&msg.data)));
    }

    pub(crate) fn send_result(&self, data: &str, result: &Result<SendReport, SendError>) {
        let (acked, failed) = match result {
            Ok(r) => (r.acked.clone(), Vec::new()),
            Err(e) => (e.acked.clone(), e.failed.clone()),
        };
        let v = json!({
            "event": "send_result",
            "data": data,
            "acked": acked.iter().map(member_json).collect::<Vec<_>>(),
            "failed": failed.iter().map(|(m, r)| {
                let mut v = member_json(m);
                v["reason"] = json!(r.to_string());
                v
            }).collect::<Vec<_>>(),
        });
        let mut human = format!("sent {data:?}: acked by {}", acked.len());
        for (m, r) in &failed {
            human.push_str(&format!("; FAILED {}: {r}", m.addr));
        }
        self.emit(v, human);
    }

    pub(crate) fn view(&self, view: &View, local: MemberId) {
        let mut v = view_json(view);
        v["event"] = json!("view");
        v["local"] = json!(local.to_hex());
        self.emit(v, view_text(view, Some(local)));
    }

    pub(crate) fn rejoined(&self, old: MemberId, new: MemberId) {
        self.emit(
            json!({ "event": "rejoined", "old_id": old.to_hex(), "new_id": new.to_hex() }),
            format!("removed from the group; rejoining as {new} (was {old})"),
        );
    }

    pub(crate) fn status_endpoint(&self, addr: std::net::SocketAddr) {
        self.emit(
            json!({ "event": "status", "addr": addr.to_string() }),
            format!("status endpoint on {addr} (cohort members --status {addr})"),
        );
    }

    /// The node reloaded its key file (SIGHUP): the keys it holds now, primary first.
    pub(crate) fn keys(&self, result: &Result<Vec<cohort::KeyId>, String>) {
        match result {
            Ok(ids) => {
                let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
                self.emit(
                    json!({ "event": "keys", "keys": ids }),
                    format!("key file reloaded: {}", ids.join(", ")),
                );
            }
            Err(e) => self.emit(
                json!({ "event": "keys", "error": e }),
                format!("key file not reloaded: {e}"),
            ),
        }
    }

    pub(crate) fn stopped(&self) {
        self.emit(json!({ "event": "stopped" }), "stopped".into());
    }
}
