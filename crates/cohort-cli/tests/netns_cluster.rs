//! Real `cohort node` processes on three hosts (network namespaces on one bridge):
//! discovery by multicast across the bridge, crash detection (kill -9) within the drop
//! time, sends that report the dead member, restart under a new id, graceful leave.
//! Needs root and iproute2.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use support::cohort::{
    Node, NodeOpts, ids_in, is_event, member_added, member_disappeared, message_from, send_result,
};
use support::{NetLab, OrPanic, secs};

/// The nodes' default drop time.
const DROP_TIME: Duration = Duration::from_millis(3000);

fn lab(n: usize) -> NetLab {
    NetLab::new(n).unwrap_or_else(|e| panic!("cannot build the network lab: {e}"))
}

fn opts() -> NodeOpts {
    NodeOpts {
        domain: Some("netns-cluster".to_owned()),
        ..NodeOpts::default()
    }
}

/// Waits until every node has seen every other one (and only those) as `member_added`,
/// each with the other's host address.
fn assert_full_mesh(lab: &NetLab, nodes: &[&Node]) {
    for n in nodes {
        for other in nodes.iter().filter(|o| o.id != n.id) {
            let added = n
                .wait_for(secs(10), member_added(&other.id))
                .or_panic(&format!("{} did not discover {}", n.name(), other.name()));
            let host = lab.host_addr(other.host).to_string();
            assert_eq!(
                added["host"],
                host.as_str(),
                "{}: {} announced the wrong host: {added}",
                n.name(),
                other.name()
            );
        }
        let seen: Vec<String> = n
            .json_lines()
            .iter()
            .filter(|v| is_event(v, "member_added"))
            .map(|v| v["id"].as_str().unwrap_or_default().to_owned())
            .collect();
        let expected: BTreeSet<String> = nodes
            .iter()
            .filter(|o| o.id != n.id)
            .map(|o| o.id.clone())
            .collect();
        assert_eq!(
            seen.iter().cloned().collect::<BTreeSet<_>>(),
            expected,
            "{}: member_added for the wrong members\n{}",
            n.name(),
            n.describe()
        );
        assert_eq!(
            seen.len(),
            expected.len(),
            "{}: duplicate member_added\n{}",
            n.name(),
            n.describe()
        );
    }
}

/// Sends `data` from `from`'s stdin and returns its `send_result`.
fn send(from: &Node, data: &str) -> serde_json::Value {
    let mark = from.mark();
    from.send_line(data).or_panic("send_line");
    from.wait_for_after(mark, secs(15), send_result(data))
        .or_panic(&format!("{}: no send_result for {data:?}", from.name()))
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn netns_cluster_discovery_kill9_send_and_restart() {
    let lab = lab(3);
    let n0 = Node::start(&lab, 0, "node0", &opts());
    let n1 = Node::start(&lab, 1, "node1", &opts());
    let n2 = Node::start(&lab, 2, "node2", &opts());
    assert_full_mesh(&lab, &[&n0, &n1, &n2]);

    // Everyone alive: acked by both, delivered to both.
    let r = send(&n0, "hello-all");
    assert_eq!(
        sorted(ids_in(&r, "acked")),
        sorted(vec![n1.id.clone(), n2.id.clone()]),
        "send to a healthy cluster: {r}\n{}",
        n0.describe()
    );
    assert!(ids_in(&r, "failed").is_empty(), "{r}");
    for n in [&n1, &n2] {
        n.wait_for(secs(5), message_from(&n0.id, "hello-all"))
            .or_panic(&format!("{} did not get hello-all", n.name()));
    }

    // kill -9 node2.
    let (m0, m1) = (n0.mark(), n1.mark());
    let killed_at = Instant::now();
    n2.kill9();

    // A send right away, while node2 is still a member: node2 fails, node1 acks.
    let r = send(&n0, "after-kill");
    let disappeared_before = !n0.matching_after(m0, member_disappeared(&n2.id)).is_empty();
    assert!(
        !disappeared_before,
        "node0 dropped node2 before the first send was answered ({:?} after the kill); \
         the test cannot check the failed list\n{}",
        killed_at.elapsed(),
        n0.describe()
    );
    assert_eq!(ids_in(&r, "failed"), vec![n2.id.clone()], "{r}");
    assert_eq!(ids_in(&r, "acked"), vec![n1.id.clone()], "{r}");
    n1.wait_for(secs(5), message_from(&n0.id, "after-kill"))
        .or_panic("node1 did not get after-kill");

    // Both survivors drop node2 for a timeout, within drop time + 1 s of the kill (and
    // not much earlier than the drop time allows).
    for (n, mark) in [(&n0, m0), (&n1, m1)] {
        let line = n
            .wait_for_json_line(mark, DROP_TIME + secs(5), member_disappeared(&n2.id))
            .or_panic(&format!("{} did not report node2 gone", n.name()));
        let v = line.json.as_ref().expect("json");
        let delay = line.at.duration_since(killed_at);
        assert_eq!(
            v["reason"],
            "timeout",
            "{}: {v}\n{}",
            n.name(),
            n.describe()
        );
        assert!(
            delay <= DROP_TIME + secs(1),
            "{}: node2 disappeared {delay:?} after the kill (drop time {DROP_TIME:?})\n{}",
            n.name(),
            n.describe()
        );
        assert!(
            delay >= DROP_TIME - secs(1),
            "{}: node2 dropped after only {delay:?}, before the drop time {DROP_TIME:?}\n{}",
            n.name(),
            n.describe()
        );
    }

    // Once node2 is gone, a send goes to node1 only, and succeeds.
    let r = send(&n0, "after-drop");
    assert_eq!(ids_in(&r, "acked"), vec![n1.id.clone()], "{r}");
    assert!(ids_in(&r, "failed").is_empty(), "{r}");
    n1.wait_for(secs(5), message_from(&n0.id, "after-drop"))
        .or_panic("node1 did not get after-drop");

    // Restart on the same host: a new member with a new id.
    let (m0, m1) = (n0.mark(), n1.mark());
    let n2b = Node::start(&lab, 2, "node2-restarted", &opts());
    assert_ne!(n2b.id, n2.id, "a restarted node must get a new id");
    for (n, mark) in [(&n0, m0), (&n1, m1)] {
        let v = n
            .wait_for_after(mark, secs(10), member_added(&n2b.id))
            .or_panic(&format!("{} did not see the restarted node2", n.name()));
        assert_eq!(v["host"], lab.host_addr(2).to_string().as_str(), "{v}");
    }
    for other in [&n0, &n1] {
        n2b.wait_for(secs(10), member_added(&other.id))
            .or_panic(&format!(
                "restarted node2 did not discover {}",
                other.name()
            ));
    }
    let r = send(&n2b, "back");
    assert_eq!(
        sorted(ids_in(&r, "acked")),
        sorted(vec![n0.id.clone(), n1.id.clone()]),
        "{r}"
    );
}

#[test]
fn netns_cluster_sigterm_reports_shutdown_within_1s() {
    let lab = lab(3);
    let n0 = Node::start(&lab, 0, "node0", &opts());
    let n1 = Node::start(&lab, 1, "node1", &opts());
    let n2 = Node::start(&lab, 2, "node2", &opts());
    assert_full_mesh(&lab, &[&n0, &n1, &n2]);

    let (m0, m1) = (n0.mark(), n1.mark());
    let term_at = Instant::now();
    n2.sigterm();
    for (n, mark) in [(&n0, m0), (&n1, m1)] {
        let line = n
            .wait_for_json_line(mark, secs(5), member_disappeared(&n2.id))
            .or_panic(&format!("{} did not report node2 gone", n.name()));
        let v = line.json.as_ref().expect("json");
        let delay = line.at.duration_since(term_at);
        assert_eq!(
            v["reason"],
            "shutdown",
            "{}: {v}\n{}",
            n.name(),
            n.describe()
        );
        assert!(
            delay <= secs(1),
            "{}: graceful leave reported {delay:?} after SIGTERM\n{}",
            n.name(),
            n.describe()
        );
    }
    // The survivors still talk to each other, and only to each other.
    let r = send(&n0, "still-here");
    assert_eq!(ids_in(&r, "acked"), vec![n1.id.clone()], "{r}");
    assert!(ids_in(&r, "failed").is_empty(), "{r}");
}

#[test]
fn netns_cluster_sigterm_exits_while_stdin_is_open() {
    // A node run from a terminal or a pipe still has stdin open when it is told to
    // stop: SIGTERM must end the process anyway, promptly.
    let lab = lab(1);
    let n0 = Node::start(&lab, 0, "node0", &opts());
    let term_at = Instant::now();
    n0.sigterm();
    n0.wait_for(secs(5), |v| is_event(v, "stopped"))
        .or_panic("node0 did not report stopped on SIGTERM");
    let status = n0
        .wait_exit(secs(5))
        .or_panic("node0 did not exit on SIGTERM (with its stdin still open)");
    assert!(
        status.success(),
        "node0 exited with {status}\n{}",
        n0.describe()
    );
    assert!(
        term_at.elapsed() <= secs(2),
        "node0 took {:?} to exit on SIGTERM",
        term_at.elapsed()
    );
}
