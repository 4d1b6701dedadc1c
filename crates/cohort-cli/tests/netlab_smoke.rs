//! Proves the `NetLab` harness itself, without cohort: multicast crosses the bridge
//! between hosts, TCP unicast works, and `cut_link` / `restore_link` / `partition`
//! stop and restore traffic. Needs root and iproute2 and python3.

mod support;

use serde_json::Value;
use support::{NetLab, OrPanic, Proc, ms, secs};

const GROUP: &str = "228.0.0.4";
const MCAST_PORT: &str = "45564";

/// Joins `group` on the interface with address `ifaddr`, prints
/// `{"event":"recv","from":..,"data":..}` for each datagram.
const MCAST_RECEIVER: &str = r#"
import json, socket, sys
group, port, ifaddr = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((group, port))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
             socket.inet_aton(group) + socket.inet_aton(ifaddr))
print(json.dumps({"event": "ready"}), flush=True)
while True:
    data, addr = s.recvfrom(65535)
    print(json.dumps({"event": "recv", "from": addr[0], "data": data.decode()}), flush=True)
"#;

/// Multicasts `<ifaddr>:<n>` every 50 ms from `ifaddr` (IP_MULTICAST_IF, TTL 1).
const MCAST_SENDER: &str = r#"
import json, socket, sys, time
group, port, ifaddr = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(ifaddr))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
print(json.dumps({"event": "ready"}), flush=True)
n = 0
while True:
    try:
        s.sendto(("%s:%d" % (ifaddr, n)).encode(), (group, port))
    except OSError as e:
        print(json.dumps({"event": "error", "error": str(e)}), flush=True)
    n += 1
    time.sleep(0.05)
"#;

/// Accepts connections on addr:port forever, answers `echo:<what it read>`.
const TCP_SERVER: &str = r#"
import json, socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
print(json.dumps({"event": "ready"}), flush=True)
while True:
    c, addr = s.accept()
    c.settimeout(2)
    try:
        c.sendall(b"echo:" + c.recv(1024))
    except OSError:
        pass
    c.close()
"#;

/// Connects to addr:port (1.5 s timeout), sends `hello`, prints the answer.
const TCP_CLIENT: &str = r#"
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.5)
    c.sendall(b"hello")
    print(c.recv(1024).decode())
except OSError as e:
    print("ERR", e)
    sys.exit(1)
"#;

fn lab(n: usize) -> NetLab {
    NetLab::new(n).unwrap_or_else(|e| panic!("cannot build the network lab: {e}"))
}

fn python(lab: &NetLab, host: usize, name: &str, script: &str, args: &[&str]) -> Proc {
    let mut argv = vec!["-c", script];
    argv.extend_from_slice(args);
    let p = lab.spawn(host, name, "python3", argv);
    p.wait_for(secs(10), |v| v["event"] == "ready")
        .or_panic(&format!("{name} did not start"));
    p
}

fn is_recv_from(from: String) -> impl FnMut(&Value) -> bool {
    move |v| v["event"] == "recv" && v["from"] == from.as_str()
}

/// The receiver gets a datagram from `from` soon (lines after the call).
fn assert_receives(rx: &Proc, from: &str, why: &str) {
    let mark = rx.mark();
    rx.wait_for_after(mark, secs(5), is_recv_from(from.to_owned()))
        .or_panic(&format!(
            "{}: expected multicast from {from} ({why})",
            rx.name()
        ));
}

/// The receiver gets nothing from `from` for a while (after in-flight packets drained).
fn assert_silent(rx: &Proc, from: &str, why: &str) {
    std::thread::sleep(ms(200));
    let mark = rx.mark();
    rx.expect_none_after(mark, ms(1000), is_recv_from(from.to_owned()))
        .or_panic(&format!(
            "{}: expected no multicast from {from} ({why})",
            rx.name()
        ));
}

#[test]
fn netlab_multicast_crosses_bridge_and_cut_link_stops_it() {
    let lab = lab(3);
    let a0 = lab.host_addr(0).to_string();
    let a1 = lab.host_addr(1).to_string();
    let a2 = lab.host_addr(2).to_string();
    let rx1 = python(&lab, 1, "rx1", MCAST_RECEIVER, &[GROUP, MCAST_PORT, &a1]);
    let rx2 = python(&lab, 2, "rx2", MCAST_RECEIVER, &[GROUP, MCAST_PORT, &a2]);
    let tx0 = python(&lab, 0, "tx0", MCAST_SENDER, &[GROUP, MCAST_PORT, &a0]);

    assert_receives(&rx1, &a0, "hosts 0 and 1 on one bridge");
    assert_receives(&rx2, &a0, "hosts 0 and 2 on one bridge");

    // Cut host 1: it hears nothing, host 2 still does.
    lab.cut_link(1);
    assert!(!lab.is_connected(1));
    assert_silent(&rx1, &a0, "host 1 cut");
    assert_receives(&rx2, &a0, "only host 1 is cut");
    lab.restore_link(1);
    assert_receives(&rx1, &a0, "host 1 restored");

    // Cut the sender: nobody hears it.
    lab.cut_link(0);
    assert_silent(&rx1, &a0, "host 0 cut");
    assert_silent(&rx2, &a0, "host 0 cut");
    lab.restore_link(0);
    assert_receives(&rx1, &a0, "host 0 restored");
    assert_receives(&rx2, &a0, "host 0 restored");

    // Partition {0,1} | {2}, then heal.
    lab.partition(&[&[0, 1], &[2]]);
    assert_silent(&rx2, &a0, "host 2 in the other partition");
    assert_receives(&rx1, &a0, "hosts 0 and 1 in one partition");
    lab.heal();
    assert_receives(&rx2, &a0, "healed");

    // The sender never saw a local error: a cut link drops silently.
    assert!(
        tx0.json_lines().iter().all(|v| v["event"] != "error"),
        "sender reported errors:\n{}",
        tx0.describe()
    );
}

fn tcp_ok(lab: &NetLab, from: usize, to: usize) -> Result<String, String> {
    let addr = lab.host_addr(to).to_string();
    let out = lab
        .exec(from, "python3", ["-c", TCP_CLIENT, &addr, "4000"])
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "{text} {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[test]
fn netlab_tcp_unicast_between_hosts_and_cut_link_stops_it() {
    let lab = lab(3);
    let a2 = lab.host_addr(2).to_string();
    let _server = python(&lab, 2, "tcp-server", TCP_SERVER, &[&a2, "4000"]);

    for from in [0, 1] {
        let got = tcp_ok(&lab, from, 2).unwrap_or_else(|e| {
            panic!("TCP host {from} -> host 2 failed: {e}\n{}", lab.describe())
        });
        assert_eq!(got, "echo:hello");
    }

    lab.cut_link(2);
    let res = tcp_ok(&lab, 0, 2);
    assert!(res.is_err(), "TCP to a cut host succeeded: {res:?}");

    lab.restore_link(2);
    let got = tcp_ok(&lab, 0, 2)
        .unwrap_or_else(|e| panic!("TCP after restore_link failed: {e}\n{}", lab.describe()));
    assert_eq!(got, "echo:hello");

    // The hosts really are separate network stacks: host 0 does not own host 2's
    // address, and the root namespace cannot see the lab's subnet.
    let out = lab
        .exec(0, "ip", ["-o", "addr", "show"])
        .output()
        .expect("ip addr");
    let addrs = String::from_utf8_lossy(&out.stdout);
    assert!(addrs.contains(&lab.host_addr(0).to_string()), "{addrs}");
    assert!(!addrs.contains(&a2), "{addrs}");
}

#[test]
fn netlab_cleans_up_its_namespaces() {
    // A namespace left by a crashed run (its owner pid cannot exist: > pid_max).
    let stale = format!("{}999999999x0-h0", support::netlab::NS_PREFIX);
    let _ = std::process::Command::new("ip")
        .args(["netns", "add", &stale])
        .status();

    let (name, namespaces, pid) = {
        let lab = lab(2);
        let namespaces = vec![
            lab.host_ns(0).to_owned(),
            lab.host_ns(1).to_owned(),
            lab.switch_ns().to_owned(),
        ];
        // A process left running inside a host does not survive the lab.
        let sleeper = lab.spawn(0, "sleeper", "sleep", ["600"]);
        let pid = sleeper.pid();
        std::mem::forget(sleeper);
        (lab.name().to_owned(), namespaces, pid)
    };
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let list = String::from_utf8_lossy(&out.stdout);
    for ns in namespaces.iter().chain(std::iter::once(&stale)) {
        assert!(
            !list
                .lines()
                .any(|l| l.split_whitespace().next() == Some(ns.as_str())),
            "namespace {ns} (lab {name}) still exists:\n{list}"
        );
    }
    // Killed (a zombie, as nobody reaps it) or gone.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit(") ").next().and_then(|s| s.chars().next());
    assert!(
        stat.is_empty() || state == Some('Z'),
        "the process in the lab survived: {stat}"
    );
}

#[test]
fn proc_keeps_history_marks_and_handles_signals() {
    let mut cmd = std::process::Command::new("sh");
    cmd.args([
        "-c",
        r#"echo "plain text"; echo '{"event":"a"}'; while read l; do echo "{\"echo\":\"$l\"}"; done"#,
    ]);
    let p = Proc::spawn("echoer", cmd);
    p.wait_for(secs(5), |v| v["event"] == "a")
        .or_panic("event a");
    let plain = p
        .wait_for_line(0, secs(5), |l| l.text == "plain text")
        .or_panic("plain line");
    assert!(plain.json.is_none());
    assert_eq!(plain.seq, 0);

    let mark = p.mark();
    assert_eq!(mark, 2);
    p.send_line("x").or_panic("send x");
    p.wait_for_after(mark, secs(5), |v| v["echo"] == "x")
        .or_panic("echo x");
    // Earlier lines stay in the history.
    p.wait_for(secs(1), |v| v["event"] == "a")
        .or_panic("event a again");

    // Stopped, it prints nothing; continued, it catches up.
    p.sigstop();
    let mark = p.mark();
    p.send_line("y").or_panic("send y");
    p.expect_none_after(mark, ms(300), |v| v["echo"] == "y")
        .or_panic("stopped process printed");
    let resumed = std::time::Instant::now();
    p.sigcont();
    let y = p
        .wait_for_json_line(mark, secs(5), |v| v["echo"] == "y")
        .or_panic("echo y after SIGCONT");
    assert!(y.at >= resumed);

    // A wait on a process that exited fails fast, not at the timeout.
    p.kill9();
    let status = p.try_exit_status().expect("reaped");
    assert!(!status.success());
    let start = std::time::Instant::now();
    let err = p
        .wait_for(secs(30), |v| v["echo"] == "never")
        .expect_err("no such line");
    assert!(start.elapsed() < secs(5), "{err}");
    assert!(err.contains("stdout closed"), "{err}");
    assert!(
        p.signal("TERM").is_err(),
        "signal after exit must be refused"
    );
}
