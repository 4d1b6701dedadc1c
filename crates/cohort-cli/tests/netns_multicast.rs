//! Reliable multicast with real `cohort multicast` processes on three hosts (network
//! namespaces on one bridge) whose links lose 10 % of what they send and delay it
//! (`tc netem`; where the kernel has no netem, an iptables rule for the loss and a
//! 50 Mbit/s token bucket whose queue delays): every member delivers every message
//! exactly once in each sender's order; a receiver paused with SIGSTOP for 5 s catches up
//! afterwards without loss.
//! Needs root, iproute2, tc and iptables. Ports: UDP 24700-24702, multicast group port 46220.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{NetLab, OrPanic, Proc, cohort_bin, secs};

const HOSTS: usize = 3;
const PORT: u16 = 24_700;

fn lossy_lab() -> NetLab {
    let lab = NetLab::new(HOSTS).unwrap_or_else(|e| panic!("cannot build the network lab: {e}"));
    for h in 0..HOSTS {
        eprintln!("host {h}: {}", lab.impair(h, 10, 5));
    }
    lab
}

/// Starts one member per host; `senders` multicast `count` messages each after `go`.
fn start(lab: &NetLab, senders: &str, count: u64) -> Vec<Proc> {
    let members: Vec<String> = (0..HOSTS)
        .map(|h| format!("{}:{PORT}", lab.host_addr(h)))
        .collect();
    let bin = cohort_bin();
    let procs: Vec<Proc> = (0..HOSTS)
        .map(|h| {
            let args = [
                "multicast".to_owned(),
                "--index".to_owned(),
                h.to_string(),
                "--members".to_owned(),
                members.join(","),
                "--multicast".to_owned(),
                "228.46.2.20:46220".to_owned(),
                "--senders".to_owned(),
                senders.to_owned(),
                "--count".to_owned(),
                count.to_string(),
                "--size".to_owned(),
                "1024".to_owned(),
            ];
            lab.spawn(
                h,
                &format!("member{h}"),
                bin.to_str().expect("utf-8 path"),
                args,
            )
        })
        .collect();
    for p in &procs {
        p.wait_for(secs(30), |v| v["event"] == "ready")
            .or_panic(&format!("{} never got ready", p.name()));
    }
    for p in &procs {
        p.send_line("go").or_panic("cannot say go");
    }
    procs
}

/// Every member delivered `expected` messages with no sequence error, and nothing more
/// after its stdin closed.
fn check_all_delivered(procs: &[Proc], expected: u64, within: Duration) {
    let done: Vec<Value> = procs
        .iter()
        .map(|p| {
            p.wait_for(within, |v| v["event"] == "done")
                .or_panic(&format!("{} did not deliver everything", p.name()))
        })
        .collect();
    for (p, d) in procs.iter().zip(&done) {
        assert_eq!(d["errors"], 0, "{}: {d}", p.name());
        assert_eq!(d["delivered"], expected, "{}: {d}", p.name());
    }
    // The loss really happened and was repaired.
    let retransmitted: u64 = done
        .iter()
        .map(|d| d["retransmitted"].as_u64().unwrap_or(0))
        .sum();
    assert!(
        retransmitted > 0,
        "no retransmission at 10 % loss: {done:?}"
    );
    for p in procs {
        p.close_stdin();
    }
    for p in procs {
        let exit = p
            .wait_for(secs(10), |v| v["event"] == "exit")
            .or_panic(&format!("{} did not exit", p.name()));
        assert_eq!(exit["extra"], 0, "{} delivered more than once", p.name());
    }
}

#[test]
fn lossy_links_every_message_once_in_order() {
    let lab = lossy_lab();
    let procs = start(&lab, "0,1,2", 2_000);
    check_all_delivered(&procs, 6_000, secs(120));
}

#[test]
fn receiver_paused_for_5s_catches_up() {
    let lab = lossy_lab();
    let procs = start(&lab, "0,1", 5_000);
    std::thread::sleep(Duration::from_millis(100));
    procs[2].sigstop();
    std::thread::sleep(secs(5));
    procs[2].sigcont();
    check_all_delivered(&procs, 10_000, secs(180));
}
