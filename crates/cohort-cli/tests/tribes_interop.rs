//! Interop with real Apache Tomcat 10 Tribes: a `cohort node` and the Java peer in
//! `interop/tribes-peer` (the default Tribes `GroupChannel`) in one cluster, on two hosts
//! of a [`NetLab`] (Tribes on host 0, cohort on host 1), so heartbeats and messages
//! cross a real (virtual) network.
//!
//! Covered: discovery both ways (host, port, domain, payload), messages both ways with
//! USE_ACK (options 3) and USE_ACK|SYNCHRONIZED_ACK (options 7) and the ACK reported by
//! the sender, FAIL-ACKs both ways, UTF-8 text, 50 messages in a row each way, a stable
//! membership past the drop time, graceful leave (SIGTERM) both ways and kill -9 of the
//! Tribes peer (a send right after it fails; the drop follows within drop time + 1 s).
//! Each test has its own lab, so they run in parallel.
//!
//! Needs root, iproute2, a JDK (`javac`, `jar`, `java` >= 17) and Debian's
//! `libtomcat10-java` (or `TRIBES_JAR`/`JULI_JAR`): the peer is built once per test
//! process with `interop/tribes-peer/build.sh`, and a missing piece fails the test with
//! a message saying what to install.

mod support;

use std::collections::BTreeMap;
use std::ops::Deref;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::cohort::{
    Node, NodeOpts, ids_in, is_event, member_added, member_disappeared, message_from, send_result,
};
use support::{NetLab, OrPanic, Proc, ms, secs};

/// The membership domain of both nodes.
const DOMAIN: &str = "tribes-interop";
/// Drop time of both sides (Tribes' default `dropTime`, cohort's default too).
const DROP_TIME: Duration = Duration::from_millis(3000);
/// How long a JVM may take to print `started` (`channel.start()` alone takes ~2.1 s; tests
/// run in parallel on small CI machines).
const TRIBES_START: Duration = Duration::from_secs(30);
/// How long discovery may take once both nodes are up (heartbeats every 500 ms).
const DISCOVERY: Duration = Duration::from_secs(10);
/// How long a single send may take to report (ACK timeout 3 s plus Tribes' one retry).
const SEND: Duration = Duration::from_secs(15);

/// A line with non-ASCII UTF-8 and characters that JSON escapes.
const TRICKY_TEXT: &str = "grüße, ✓ \"quoted\" \\ back\tslash/tab";
/// USE_ACK | BYTE_MESSAGE.
const OPT_ACK: u64 = 3;
/// USE_ACK | SYNCHRONIZED_ACK | BYTE_MESSAGE.
const OPT_SYNC_ACK: u64 = 7;

// ---------------------------------------------------------------------------------------
// The Java Tribes peer
// ---------------------------------------------------------------------------------------

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn peer_dir() -> PathBuf {
    repo_root().join("interop/tribes-peer")
}

/// Builds the Java peer once per test process (build.sh itself is idempotent and safe to
/// run concurrently, so parallel test processes are fine). Panics with build.sh's message
/// when Java or the Tomcat jars are missing: CI installs them, so this must not be
/// skipped silently.
fn build_tribes_peer() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let res = BUILT.get_or_init(|| {
        let hint = "the Tribes interop tests need a JDK >= 17 (javac, jar, java; e.g. \
                    `apt-get install openjdk-17-jdk-headless`) and Tomcat 10 Tribes (`apt-get \
                    install libtomcat10-java`, or set TRIBES_JAR/JULI_JAR)";
        let script = peer_dir().join("build.sh");
        let out = Command::new(&script)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}\n{hint}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} failed ({}):\n{}{}\n{hint}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim(),
            ));
        }
        let java = Command::new("java")
            .arg("-version")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run `java -version`: {e}\n{hint}"))?;
        if !java.status.success() {
            return Err(format!("`java -version` failed ({})\n{hint}", java.status));
        }
        Ok(())
    });
    if let Err(e) = res {
        panic!("cannot build the Tribes peer: {e}");
    }
}

/// Options of a Tribes peer (besides `--bind`, always its host's address).
#[derive(Clone, Debug, Default)]
struct TribesOpts {
    sync_ack: bool,
    fail_on: Option<String>,
}

/// A running Tribes peer whose `started` event has been seen.
struct Tribes {
    proc: Proc,
    id: String,
    host: usize,
    started: Value,
}

impl Deref for Tribes {
    type Target = Proc;
    fn deref(&self) -> &Proc {
        &self.proc
    }
}

impl Tribes {
    /// Starts the Tribes peer on lab host `host`, bound to the host's address (which is
    /// also its multicast interface), and waits for `started`.
    fn start(lab: &NetLab, host: usize, name: &str, opts: &TribesOpts) -> Self {
        build_tribes_peer();
        let addr = lab.host_addr(host).to_string();
        let mut args: Vec<String> = [
            "--json",
            "--bind",
            &addr,
            "--domain",
            DOMAIN,
            "--payload",
            &format!("payload of {name}"),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if opts.sync_ack {
            args.push("--sync-ack".to_owned());
        }
        if let Some(f) = &opts.fail_on {
            args.push("--fail-on".to_owned());
            args.push(f.clone());
        }
        let run = peer_dir().join("run.sh");
        let proc = lab.spawn(host, name, &run.to_string_lossy(), args);
        let started = proc
            .wait_for(TRIBES_START, |v| is_event(v, "started"))
            .or_panic(&format!("{name}: the Tribes peer did not start on {addr}"));
        let id = match started["id"].as_str() {
            Some(id) if !id.is_empty() => id.to_owned(),
            _ => panic!("{name}: `started` without a string id: {started}"),
        };
        assert_eq!(started["host"], addr.as_str(), "{name}: {started}");
        Self {
            proc,
            id,
            host,
            started,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn lab() -> NetLab {
    NetLab::new(2).unwrap_or_else(|e| panic!("cannot build the network lab: {e}"))
}

fn cohort_opts(name: &str) -> NodeOpts {
    NodeOpts {
        domain: Some(DOMAIN.to_owned()),
        payload: Some(format!("payload of {name}")),
        ..NodeOpts::default()
    }
}

/// Starts a cohort node on host 1.
fn start_cohort(lab: &NetLab, name: &str, sync_ack: bool, fail_on: Option<&str>) -> Node {
    let mut opts = cohort_opts(name);
    opts.sync_ack = sync_ack;
    if let Some(f) = fail_on {
        opts.extra = vec!["--fail-on".to_owned(), f.to_owned()];
    }
    Node::start(lab, 1, name, &opts)
}

/// `who` (a process) saw the member `(id, started)` as `member_added`, with the host,
/// port, domain and payload it announced.
fn assert_discovered(who: &Proc, id: &str, started: &Value, other: &str) {
    let v = who
        .wait_for(DISCOVERY, member_added(id))
        .or_panic(&format!("{} did not discover {other}", who.name()));
    let ctx = || format!("{} saw {other} as {v}\n{}", who.name(), who.describe());
    assert_eq!(v["host"], started["host"], "host: {}", ctx());
    assert_eq!(v["port"], started["port"], "port: {}", ctx());
    assert_eq!(v["domain"], DOMAIN, "domain: {}", ctx());
    assert_eq!(
        v["payload"],
        format!("payload of {other}").as_str(),
        "payload: {}",
        ctx()
    );
    let n = who
        .json_lines()
        .iter()
        .filter(|l| member_added(id)(l))
        .count();
    assert_eq!(n, 1, "{}: {n} member_added for {other}", who.name());
}

/// Waits until the Tribes peer and the cohort node have seen each other.
fn mesh(tribes: &Tribes, cohort: &Node) {
    assert_discovered(tribes, &cohort.id, &cohort.started, cohort.name());
    assert_discovered(cohort, &tribes.id, &tribes.started, tribes.name());
}

/// Sends `data` from `from`'s stdin and returns its `send_result`.
fn send(from: &Proc, data: &str) -> Value {
    let mark = from.mark();
    from.send_line(data).or_panic("send_line");
    from.wait_for_after(mark, SEND, send_result(data))
        .or_panic(&format!("{}: no send_result for {data:?}", from.name()))
}

/// `result` lists exactly `id` as acked and nothing failed.
fn assert_acked_by(result: &Value, id: &str, from: &Proc) {
    assert_eq!(
        ids_in(result, "acked"),
        vec![id.to_owned()],
        "{}: acked list: {result}\n{}",
        from.name(),
        from.describe()
    );
    assert!(
        ids_in(result, "failed").is_empty(),
        "{}: failed list: {result}\n{}",
        from.name(),
        from.describe()
    );
}

/// `to` receives `data` from `from_id` with `options`; returns the message.
fn assert_received(to: &Proc, mark: usize, from_id: &str, data: &str, options: u64) -> Value {
    let v = to
        .wait_for_after(mark, SEND, message_from(from_id, data))
        .or_panic(&format!("{} did not receive {data:?}", to.name()));
    assert_eq!(
        v["options"],
        options,
        "{}: options of {data:?}: {v}",
        to.name()
    );
    v
}

/// Sends `count` numbered lines from `from` (one write each, without waiting in
/// between), then checks that every one is acked by `to_id` only, and that `to` got
/// each exactly once with `options`. Returns the received texts in arrival order.
fn burst(
    from: &Proc,
    to: &Proc,
    to_id: &str,
    from_id: &str,
    count: usize,
    options: u64,
) -> Vec<String> {
    let prefix = format!("{}-burst-", from.name());
    let (mark_from, mark_to) = (from.mark(), to.mark());
    let lines: Vec<String> = (0..count).map(|i| format!("{prefix}{i:03}")).collect();
    for l in &lines {
        from.send_line(l).or_panic("send_line");
    }
    let is_ours = |v: &Value| v["data"].as_str().is_some_and(|d| d.starts_with(&prefix));
    let results = from
        .wait_for_n_after(mark_from, count, SEND + secs(10), |v| {
            is_event(v, "send_result") && is_ours(v)
        })
        .or_panic(&format!("{}: not all {count} sends reported", from.name()));
    let mut by_data: BTreeMap<String, Value> = BTreeMap::new();
    for r in results {
        let d = r["data"].as_str().unwrap_or_default().to_owned();
        assert!(
            by_data.insert(d.clone(), r).is_none(),
            "{}: two send_results for {d}",
            from.name()
        );
    }
    for l in &lines {
        let r = by_data
            .get(l)
            .unwrap_or_else(|| panic!("{}: no send_result for {l}", from.name()));
        assert_acked_by(r, to_id, from);
    }
    let received = to
        .wait_for_n_after(mark_to, count, SEND, |v| {
            is_event(v, "message") && v["from"] == from_id && is_ours(v)
        })
        .or_panic(&format!("{}: not all {count} messages arrived", to.name()));
    // Give duplicates a moment to show up before counting.
    std::thread::sleep(ms(300));
    let all = to.matching_after(mark_to, |v| {
        is_event(v, "message") && v["from"] == from_id && is_ours(v)
    });
    assert_eq!(
        all.len(),
        count,
        "{}: {} messages for {count} sends (duplicates?)\n{}",
        to.name(),
        all.len(),
        to.describe()
    );
    let mut texts: Vec<String> = received
        .iter()
        .map(|v| {
            assert_eq!(v["options"], options, "{}: {v}", to.name());
            v["data"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    let in_order = texts.clone();
    texts.sort();
    assert_eq!(texts, lines, "{}: the set of received messages", to.name());
    in_order
}

/// `/proc/loadavg`, for timing failures: a bound missed on a saturated machine (other
/// jobs hogging the CPUs) is a different finding from one missed on an idle machine.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| format!("load average {}", l.trim()))
        .unwrap_or_else(|e| format!("load average unknown ({e})"))
}

/// Waits for `member_disappeared` of `id` on `who` after `mark`; returns the event and
/// its delay since `since`.
fn disappeared(
    who: &Proc,
    mark: usize,
    id: &str,
    since: Instant,
    limit: Duration,
) -> (Value, Duration) {
    let line = who
        .wait_for_json_line(mark, limit + secs(5), member_disappeared(id))
        .or_panic(&format!("{} did not report the member gone", who.name()));
    let delay = line.at.duration_since(since);
    (line.json.expect("json line"), delay)
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[test]
fn tribes_interop_discovery_both_ways() {
    let lab = lab();
    let tribes = Tribes::start(&lab, 0, "tribes", &TribesOpts::default());
    let cohort = start_cohort(&lab, "cohort", false, None);
    assert_eq!(tribes.host, 0);
    assert_eq!(
        cohort.started["host"],
        lab.host_addr(1).to_string().as_str()
    );
    mesh(&tribes, &cohort);

    // The membership is stable: each side's heartbeats keep it alive on the other for
    // longer than the drop time, without flapping (no disappearance, no second add).
    let stable = DROP_TIME + secs(1);
    let flap = |v: &Value| {
        is_event(v, "member_disappeared")
            || (is_event(v, "member_added") && v["id"] != tribes.id && v["id"] != cohort.id)
    };
    tribes.expect_none_after(0, stable, flap).or_panic("tribes");
    cohort.expect_none_after(0, ms(1), flap).or_panic("cohort");
    assert_discovered(&tribes, &cohort.id, &cohort.started, cohort.name());
    assert_discovered(&cohort, &tribes.id, &tribes.started, tribes.name());
}

#[test]
fn tribes_interop_cohort_to_tribes_ack_sync_ack_and_fail_ack() {
    let lab = lab();
    let tribes = Tribes::start(
        &lab,
        0,
        "tribes",
        &TribesOpts {
            fail_on: Some("BAD".to_owned()),
            ..TribesOpts::default()
        },
    );

    // USE_ACK (3).
    let cohort = start_cohort(&lab, "cohort", false, None);
    mesh(&tribes, &cohort);
    let mark = tribes.mark();
    let r = send(&cohort, "hello tribes");
    assert_acked_by(&r, &tribes.id, &cohort);
    let v = assert_received(&tribes, mark, &cohort.id, "hello tribes", OPT_ACK);
    assert_eq!(v["host"], cohort.started["host"], "{v}");
    assert_eq!(v["port"], cohort.started["port"], "{v}");
    let mark = tribes.mark();
    let r = send(&cohort, TRICKY_TEXT);
    assert_acked_by(&r, &tribes.id, &cohort);
    assert_received(&tribes, mark, &cohort.id, TRICKY_TEXT, OPT_ACK);

    // USE_ACK | SYNCHRONIZED_ACK (7), from a cohort node started with --sync-ack.
    let mark = tribes.mark();
    cohort.sigterm();
    tribes
        .wait_for_after(mark, secs(5), member_disappeared(&cohort.id))
        .or_panic("tribes did not see the first cohort node leave");
    drop(cohort);
    let cohort = start_cohort(&lab, "cohort-sync", true, None);
    mesh(&tribes, &cohort);
    let mark = tribes.mark();
    let r = send(&cohort, "hello tribes, sync");
    assert_acked_by(&r, &tribes.id, &cohort);
    assert_received(
        &tribes,
        mark,
        &cohort.id,
        "hello tribes, sync",
        OPT_SYNC_ACK,
    );

    // The Tribes listener throws on "BAD": a FAIL-ACK, reported as failed.
    let mark = tribes.mark();
    let r = send(&cohort, "BAD");
    assert_received(&tribes, mark, &cohort.id, "BAD", OPT_SYNC_ACK);
    assert!(ids_in(&r, "acked").is_empty(), "{r}\n{}", cohort.describe());
    let failed = r["failed"].as_array().cloned().unwrap_or_default();
    assert_eq!(failed.len(), 1, "{r}");
    assert_eq!(failed[0]["id"], tribes.id.as_str(), "{r}");
    let reason = failed[0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        ["reject", "fail"].iter().any(|w| reason.contains(w)),
        "the failure reason should mention the rejection / failure ACK: {r}"
    );

    // The connection is still usable afterwards.
    let mark = tribes.mark();
    let r = send(&cohort, "after BAD");
    assert_acked_by(&r, &tribes.id, &cohort);
    assert_received(&tribes, mark, &cohort.id, "after BAD", OPT_SYNC_ACK);
}

#[test]
fn tribes_interop_tribes_to_cohort_ack_sync_ack_and_fail_ack() {
    let lab = lab();
    // Two Tribes peers on host 0 (autoBind gives them ports 4000 and 4001), started in
    // parallel to save a JVM start: one sends with options 3, the other with 7.
    let (plain, sync) = std::thread::scope(|s| {
        let plain = s.spawn(|| Tribes::start(&lab, 0, "tribes", &TribesOpts::default()));
        let sync = s.spawn(|| {
            Tribes::start(
                &lab,
                0,
                "tribes-sync",
                &TribesOpts {
                    sync_ack: true,
                    ..TribesOpts::default()
                },
            )
        });
        (
            plain.join().expect("start tribes"),
            sync.join().expect("start tribes-sync"),
        )
    });
    let cohort = start_cohort(&lab, "cohort", false, Some("BAD"));
    mesh(&plain, &cohort);
    mesh(&sync, &cohort);
    plain
        .wait_for(DISCOVERY, member_added(&sync.id))
        .or_panic("the Tribes peers did not see each other");
    sync.wait_for(DISCOVERY, member_added(&plain.id))
        .or_panic("the Tribes peers did not see each other");

    let check = |from: &Tribes, data: &str, options: u64| {
        let mark = cohort.mark();
        let r = send(from, data);
        let v = assert_received(&cohort, mark, &from.id, data, options);
        assert_eq!(v["host"], from.started["host"], "{v}");
        assert_eq!(v["port"], from.started["port"], "{v}");
        assert!(
            ids_in(&r, "acked").contains(&cohort.id),
            "{}: cohort not acked: {r}\n{}",
            from.name(),
            from.describe()
        );
        assert!(ids_in(&r, "failed").is_empty(), "{r}");
    };
    check(&plain, "hello cohort", OPT_ACK);
    check(&sync, "hello cohort, sync", OPT_SYNC_ACK);
    check(&plain, TRICKY_TEXT, OPT_ACK);

    // cohort rejects "BAD": Tribes (with SYNCHRONIZED_ACK) gets a FAIL-ACK. (Tribes
    // retries a FAIL-ACKed send once on a new connection, so cohort may see "BAD" twice;
    // see interop/tribes-peer/README.md.)
    let mark = cohort.mark();
    let r = send(&sync, "BAD");
    assert_received(&cohort, mark, &sync.id, "BAD", OPT_SYNC_ACK);
    let failed = r["failed"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        failed.iter().map(|m| m["id"].clone()).collect::<Vec<_>>(),
        vec![Value::from(cohort.id.as_str())],
        "tribes-sync should report exactly the cohort node failed: {r}\n{}",
        sync.describe()
    );
    let reason = failed[0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("failed ack") || reason.contains("FAIL_ACK"),
        "Tribes' failure reason should be the FAIL-ACK: {r}"
    );
    // The other Tribes peer has no --fail-on: it acks "BAD".
    assert_eq!(ids_in(&r, "acked"), vec![plain.id.clone()], "{r}");

    // And the next message goes through again.
    check(&sync, "after BAD", OPT_SYNC_ACK);
}

#[test]
fn tribes_interop_fifty_messages_each_way() {
    const N: usize = 50;
    let lab = lab();
    let tribes = Tribes::start(
        &lab,
        0,
        "tribes",
        &TribesOpts {
            sync_ack: true,
            ..TribesOpts::default()
        },
    );
    let cohort = start_cohort(&lab, "cohort", false, None);
    mesh(&tribes, &cohort);

    // cohort -> Tribes with USE_ACK: every one acked and delivered exactly once. No order
    // check: `cohort node` sends its lines concurrently, and a Tribes receiver may deliver
    // options-3 messages out of order anyway (it ACKs before delivering).
    burst(&cohort, &tribes, &tribes.id, &cohort.id, N, OPT_ACK);

    // Tribes -> cohort with SYNCHRONIZED_ACK: the peer sends its lines one by one, each
    // after the previous one's ACK, so cohort must deliver them in order.
    let order = burst(&tribes, &cohort, &cohort.id, &tribes.id, N, OPT_SYNC_ACK);
    let expected: Vec<String> = (0..N).map(|i| format!("tribes-burst-{i:03}")).collect();
    assert_eq!(
        order, expected,
        "cohort delivered Tribes' messages out of order"
    );
}

#[test]
fn tribes_interop_sigterm_tribes_is_a_shutdown_for_cohort() {
    let lab = lab();
    let tribes = Tribes::start(&lab, 0, "tribes", &TribesOpts::default());
    let cohort = start_cohort(&lab, "cohort", false, None);
    mesh(&tribes, &cohort);

    let mark = cohort.mark();
    let at = Instant::now();
    tribes.sigterm();
    let (v, delay) = disappeared(&cohort, mark, &tribes.id, at, secs(1));
    assert_eq!(v["reason"], "shutdown", "{v}\n{}", cohort.describe());
    assert!(
        delay <= secs(1),
        "cohort reported the Tribes shutdown {delay:?} after SIGTERM ({})\n{}\n{}",
        loadavg(),
        cohort.describe(),
        tribes.describe()
    );
    tribes
        .wait_for(secs(5), |v| is_event(v, "stopped"))
        .or_panic("the Tribes peer did not stop");
    let status = tribes
        .wait_exit(secs(5))
        .or_panic("the Tribes peer did not exit");
    assert!(status.success(), "{status}\n{}", tribes.describe());
}

#[test]
fn tribes_interop_sigterm_cohort_is_a_shutdown_for_tribes() {
    let lab = lab();
    let tribes = Tribes::start(&lab, 0, "tribes", &TribesOpts::default());
    let cohort = start_cohort(&lab, "cohort", false, None);
    mesh(&tribes, &cohort);

    let mark = tribes.mark();
    let at = Instant::now();
    cohort.sigterm();
    let (v, delay) = disappeared(&tribes, mark, &cohort.id, at, secs(1));
    assert_eq!(v["reason"], "shutdown", "{v}\n{}", tribes.describe());
    assert!(
        delay <= secs(1),
        "Tribes reported the cohort shutdown {delay:?} after SIGTERM ({})\n{}\n{}",
        loadavg(),
        tribes.describe(),
        cohort.describe()
    );
}

#[test]
fn tribes_interop_kill9_tribes_is_a_timeout_for_cohort() {
    let lab = lab();
    let tribes = Tribes::start(&lab, 0, "tribes", &TribesOpts::default());
    let cohort = start_cohort(&lab, "cohort", false, None);
    mesh(&tribes, &cohort);
    // An open connection to the peer before it dies.
    let r = send(&cohort, "before kill");
    assert_acked_by(&r, &tribes.id, &cohort);

    let mark = cohort.mark();
    let at = Instant::now();
    tribes.kill9();

    // A send right away, while the peer is still a member: it fails for the peer.
    let r = send(&cohort, "after kill");
    assert!(
        cohort
            .matching_after(mark, member_disappeared(&tribes.id))
            .is_empty(),
        "cohort dropped the Tribes peer before the send right after kill -9 was answered \
         ({:?} after the kill); the test cannot check the failed list\n{}",
        at.elapsed(),
        cohort.describe()
    );
    assert_eq!(ids_in(&r, "failed"), vec![tribes.id.clone()], "{r}");
    assert!(ids_in(&r, "acked").is_empty(), "{r}");

    let (v, delay) = disappeared(&cohort, mark, &tribes.id, at, DROP_TIME + secs(1));
    assert_eq!(v["reason"], "timeout", "{v}\n{}", cohort.describe());
    assert!(
        delay <= DROP_TIME + secs(1),
        "cohort dropped the killed Tribes peer {delay:?} after kill -9 (drop time \
         {DROP_TIME:?}; {})\n{}",
        loadavg(),
        cohort.describe()
    );
    assert!(
        delay >= DROP_TIME - secs(1),
        "cohort dropped the killed Tribes peer after only {delay:?} (drop time \
         {DROP_TIME:?})\n{}",
        cohort.describe()
    );
}
