//! The status endpoint of `cohort node`, with three real processes on loopback: `/status`
//! (typed JSON, read by `cohort members`), `/metrics` (Prometheus text with the node's
//! counters), and `/`, the page, loaded in a real headless browser (Debian's `chromium`)
//! that must show the view's members after its script ran. The browser's screenshot is
//! kept as `target/tmp/status-page.png`.
//!
//! Multicast port 46630.

mod support;

use std::io::{Read, Write};
use std::process::Command;

use serde_json::Value;
use support::cohort::{is_event, loopback_node, view_of};
use support::{OrPanic, Proc, cohort_bin, secs};

fn node(name: &str) -> (Proc, String, String) {
    let (proc, id) = loopback_node(name, "status-test", 46630, &[]);
    let status = proc
        .wait_for(secs(5), |v| is_event(v, "status"))
        .or_panic("no status endpoint");
    let addr = status["addr"].as_str().expect("an address").to_owned();
    (proc, id, addr)
}

/// `GET path` over HTTP/1.0: the status line and headers, and the body.
fn get(addr: &str, path: &str) -> (String, String) {
    let mut stream = std::net::TcpStream::connect(addr).expect("status endpoint");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a body");
    (head.to_owned(), body.to_owned())
}

#[test]
fn status_metrics_and_page_show_the_view() {
    let nodes: Vec<(Proc, String, String)> = (0..3).map(|i| node(&format!("n{i}"))).collect();
    let ids: Vec<String> = nodes.iter().map(|(_, id, _)| id.clone()).collect();
    for (proc, _, _) in &nodes {
        proc.wait_for(secs(20), view_of(&ids))
            .or_panic("no view of all three");
    }
    let addr = &nodes[0].2;

    // /status: the typed document, the view of three and the history of views.
    let (head, body) = get(addr, "/status");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    let status: Value = serde_json::from_str(&body).expect("JSON status");
    assert_eq!(status["local"]["id"], ids[0].as_str());
    let members = status["view"]["members"].as_array().expect("members");
    assert_eq!(members.len(), 3, "{status}");
    assert!(
        !status["history"].as_array().expect("history").is_empty(),
        "{status}"
    );
    assert!(status["security"].is_null());

    // /metrics: the counters in the Prometheus text format.
    let (head, metrics) = get(addr, "/metrics");
    assert!(head.contains("openmetrics-text"), "{head}");
    assert!(
        metrics.contains("# TYPE cohort_heartbeats_received counter"),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l == "cohort_view_members 3"),
        "{metrics}"
    );
    let heartbeats: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("cohort_heartbeats_received_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("a heartbeat counter");
    assert!(heartbeats > 0, "{metrics}");

    // `cohort members` reads the same document.
    let out = Command::new(cohort_bin())
        .args(["members", "--status", addr])
        .output()
        .expect("cohort members");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for id in &ids {
        assert!(text.contains(id.as_str()), "{id} missing from:\n{text}");
    }

    // The page, in a real browser: its script fetched /status and filled the table.
    let (_, page) = get(addr, "/");
    assert!(page.contains("<title>cohort node</title>"));
    let Some(chromium) = ["chromium", "chromium-browser"].into_iter().find(|b| {
        Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }) else {
        eprintln!("skipped the browser check: no chromium (scripts/install-test-deps installs it)");
        return;
    };
    let url = format!("http://{addr}/");
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--virtual-time-budget=4000",
    ];
    let dom = Command::new(chromium)
        .args(common)
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("chromium");
    let dom = String::from_utf8_lossy(&dom.stdout);
    for id in &ids {
        assert!(
            dom.contains(id.as_str()),
            "the page does not show {id}:\n{dom}"
        );
    }
    assert!(dom.contains("coordinator"), "{dom}");
    assert!(dom.contains("heartbeats_received"), "{dom}");
    let out = Command::new(chromium)
        .args(common)
        .arg("--window-size=1000,900")
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .expect("chromium screenshot");
    assert!(
        shot.metadata().is_ok_and(|m| m.len() > 0),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (proc, _, _) in &nodes {
        proc.sigterm();
        proc.wait_exit(secs(10)).or_panic("did not stop");
    }
}
