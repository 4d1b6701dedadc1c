//! The group layer with real `cohort node` processes on five hosts (network namespaces on
//! one bridge): every member installs the same views; kill -9 of a member and of the
//! coordinator; SIGSTOP shorter than the failure timeout (nothing happens) and longer (the
//! member is removed, and rejoins under a new id after SIGCONT); a host cut off from the
//! others (removed by the majority, back when the link returns); both CPUs busy (no false
//! removal). Needs root and iproute2.
//!
//! The bounds here are generous (a loaded CI machine); `cohort perf group` measures the
//! real detection times.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::cohort::{Node, NodeOpts, any_view, is_event, view_ids, view_of};
use support::{NetLab, OrPanic, secs};

const HOSTS: usize = 5;

fn lab() -> NetLab {
    NetLab::new(HOSTS).unwrap_or_else(|e| panic!("cannot build the network lab: {e}"))
}

fn start_all(lab: &NetLab) -> Vec<Node> {
    let opts = NodeOpts {
        domain: Some("netns-group".to_owned()),
        ..NodeOpts::default()
    };
    (0..HOSTS)
        .map(|h| Node::start(lab, h, &format!("node{h}"), &opts))
        .collect()
}

/// Waits until each of `nodes` has installed a view of exactly `ids`; returns the views.
fn wait_views(nodes: &[&Node], ids: &[String], within: Duration, mark: &[usize]) -> Vec<Value> {
    nodes
        .iter()
        .zip(mark)
        .map(|(n, &m)| {
            n.wait_for_after(m, within, view_of(ids))
                .or_panic(&format!("{} never installed a view of {ids:?}", n.name()))
        })
        .collect()
}

/// All nodes agree on one view of all of them; returns its coordinator's id.
fn formed(nodes: &[Node]) -> String {
    let ids: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
    let all: Vec<&Node> = nodes.iter().collect();
    let views = wait_views(&all, &ids, secs(15), &vec![0; nodes.len()]);
    for v in &views {
        assert_eq!(
            v["view_id"], views[0]["view_id"],
            "different views: {views:?}"
        );
    }
    views[0]["coordinator"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn ids_except(nodes: &[Node], gone: &[&str]) -> Vec<String> {
    nodes
        .iter()
        .map(|n| n.id.clone())
        .filter(|id| !gone.contains(&id.as_str()))
        .collect()
}

#[test]
fn kill_9_of_a_member_and_of_the_coordinator_installs_new_views_everywhere() {
    let lab = lab();
    let nodes = start_all(&lab);
    let coordinator = formed(&nodes);
    let victim = nodes
        .iter()
        .find(|n| n.id != coordinator)
        .expect("a member");
    let marks: Vec<usize> = nodes.iter().map(|n| n.mark()).collect();
    victim.kill9();
    let rest = ids_except(&nodes, &[&victim.id]);
    let survivors: Vec<&Node> = nodes.iter().filter(|n| n.id != victim.id).collect();
    let survivor_marks: Vec<usize> = nodes
        .iter()
        .zip(&marks)
        .filter(|(n, _)| n.id != victim.id)
        .map(|(_, m)| *m)
        .collect();
    // The ring connection sees the crash at once; 1.5 s is below the heartbeat timeout.
    let views = wait_views(
        &survivors,
        &rest,
        Duration::from_millis(1500),
        &survivor_marks,
    );
    assert!(views.iter().all(|v| v["view_id"] == views[0]["view_id"]));

    let coord = nodes
        .iter()
        .find(|n| n.id == coordinator)
        .expect("coordinator");
    let survivors: Vec<&Node> = survivors
        .into_iter()
        .filter(|n| n.id != coordinator)
        .collect();
    let marks: Vec<usize> = survivors.iter().map(|n| n.mark()).collect();
    coord.kill9();
    let rest = ids_except(&nodes, &[&victim.id, &coordinator]);
    let views = wait_views(&survivors, &rest, Duration::from_millis(1500), &marks);
    assert!(views.iter().all(|v| v["view_id"] == views[0]["view_id"]));
    assert_ne!(views[0]["coordinator"], coordinator.as_str());
}

#[test]
fn a_short_pause_changes_nothing_and_a_long_one_removes_the_member_until_it_rejoins() {
    let lab = lab();
    let nodes = start_all(&lab);
    formed(&nodes);
    let marks: Vec<usize> = nodes.iter().map(|n| n.mark()).collect();

    // 1 s: shorter than the 1.7 s suspect timeout.
    nodes[2].sigstop();
    std::thread::sleep(secs(1));
    nodes[2].sigcont();
    for (n, &m) in nodes.iter().zip(&marks) {
        n.expect_none_after(m, secs(4), any_view)
            .or_panic("a pause shorter than the timeout changed the view");
    }

    // 6 s: removed within the default 3 s target (bound here: 5 s), back after SIGCONT.
    let marks: Vec<usize> = nodes.iter().map(|n| n.mark()).collect();
    nodes[3].sigstop();
    let rest = ids_except(&nodes, &[&nodes[3].id]);
    let others: Vec<&Node> = nodes.iter().filter(|n| n.id != nodes[3].id).collect();
    let other_marks: Vec<usize> = [0, 1, 2, 4].iter().map(|&i| marks[i]).collect();
    wait_views(&others, &rest, secs(5), &other_marks);
    std::thread::sleep(secs(3));
    nodes[3].sigcont();
    let rejoined = nodes[3]
        .wait_for_after(marks[3], secs(5), |v| is_event(v, "rejoined"))
        .or_panic("the paused member did not notice it was removed");
    assert_eq!(rejoined["old_id"], nodes[3].id.as_str());
    let new_id = rejoined["new_id"].as_str().expect("new id").to_owned();
    assert_ne!(new_id, nodes[3].id);
    let mut ids = rest.clone();
    ids.push(new_id);
    let all: Vec<&Node> = nodes.iter().collect();
    let views = wait_views(&all, &ids, secs(10), &marks);
    assert!(views.iter().all(|v| v["view_id"] == views[0]["view_id"]));
}

#[test]
fn a_host_cut_off_is_removed_by_the_majority_and_rejoins_when_the_link_returns() {
    let lab = lab();
    let nodes = start_all(&lab);
    formed(&nodes);
    let marks: Vec<usize> = nodes.iter().map(|n| n.mark()).collect();
    lab.cut_link(4);
    let rest = ids_except(&nodes, &[&nodes[4].id]);
    let majority: Vec<&Node> = nodes[..4].iter().collect();
    wait_views(&majority, &rest, secs(6), &marks[..4]);
    std::thread::sleep(secs(1));
    lab.restore_link(4);
    // Node 4 gave up on the others meanwhile (a group of one); the groups merge and it
    // comes back under a new id.
    let rejoined = nodes[4]
        .wait_for_after(marks[4], secs(10), |v| is_event(v, "rejoined"))
        .or_panic("the cut-off host did not rejoin");
    let mut ids = rest;
    ids.push(rejoined["new_id"].as_str().expect("new id").to_owned());
    let all: Vec<&Node> = nodes.iter().collect();
    let views = wait_views(&all, &ids, secs(10), &marks);
    assert!(views.iter().all(|v| v["view_id"] == views[0]["view_id"]));
}

/// Busy loops on every CPU, at normal priority, until dropped.
struct CpuHog(Vec<Child>);

impl CpuHog {
    fn start() -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let hogs = (0..cpus * 2)
            .map(|_| {
                Command::new("sh")
                    .args(["-c", "while :; do :; done"])
                    .stdin(Stdio::null())
                    .spawn()
                    .expect("spawn sh")
            })
            .collect();
        Self(hogs)
    }
}

impl Drop for CpuHog {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn busy_cpus_cause_no_false_removal() {
    let lab = lab();
    let nodes = start_all(&lab);
    formed(&nodes);
    let marks: Vec<usize> = nodes.iter().map(|n| n.mark()).collect();
    let hog = CpuHog::start();
    for (n, &m) in nodes.iter().zip(&marks) {
        n.expect_none_after(
            m,
            if n.id == nodes[0].id {
                secs(20)
            } else {
                secs(0)
            },
            any_view,
        )
        .or_panic("a view changed while the CPUs were busy");
    }
    drop(hog);
    for (n, &m) in nodes.iter().zip(&marks) {
        let views = n.matching_after(m, any_view);
        assert!(
            views.is_empty(),
            "{}: {} view changes",
            n.name(),
            views.len()
        );
        let last = n.json_lines().into_iter().rfind(any_view);
        assert_eq!(
            last.map(|v| view_ids(&v).len()),
            Some(HOSTS),
            "{}",
            n.name()
        );
    }
}
