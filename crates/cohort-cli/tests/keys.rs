//! Cluster keys from the command line, with real `cohort` processes on loopback:
//! `cohort keys generate` and `list`, two `cohort node --key-file` processes that form a
//! group and talk, and a `cohort node` without the key on the same group and domain that
//! neither joins nor hears them, its heartbeats refused and counted (status endpoint).
//!
//! And a running cluster rotating its key with `cohort keys install|use|remove` and SIGHUP
//! while a member sends all along: no message is lost.
//!
//! Multicast ports 46620 and 46621.

mod support;

use std::io::{Read, Write};
use std::process::Command;

use serde_json::Value;
use support::cohort::{is_event, loopback_node, member_added, message_from, send_result, view_of};
use support::{OrPanic, Proc, cohort_bin, secs};

fn node(name: &str, key_file: Option<&std::path::Path>) -> (Proc, String) {
    node_on(name, key_file, 46620)
}

fn node_on(name: &str, key_file: Option<&std::path::Path>, mcast_port: u16) -> (Proc, String) {
    let extra: Vec<&std::ffi::OsStr> = match key_file {
        Some(file) => vec!["--key-file".as_ref(), file.as_os_str()],
        None => Vec::new(),
    };
    loopback_node(name, "keys-test", mcast_port, &extra)
}

/// The node's status document, from its status endpoint.
fn status(proc: &Proc) -> Value {
    let event = proc
        .wait_for(secs(5), |v| is_event(v, "status"))
        .or_panic("no status endpoint");
    let addr = event["addr"].as_str().expect("an address");
    let mut stream = std::net::TcpStream::connect(addr).expect("status endpoint");
    stream
        .write_all(b"GET /status HTTP/1.0\r\n\r\n")
        .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let body = response.split("\r\n\r\n").nth(1).expect("a body");
    serde_json::from_str(body).expect("JSON status")
}

#[test]
fn keyed_nodes_form_a_group_that_a_node_without_the_key_cannot_join() {
    let dir = std::env::temp_dir().join(format!("cohort-keys-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let generated = Command::new(cohort_bin())
        .args(["keys", "generate"])
        .output()
        .expect("cohort keys generate");
    assert!(generated.status.success());
    let key = String::from_utf8(generated.stdout)
        .unwrap()
        .trim()
        .to_owned();
    assert!(
        key.len() == 64 && key.chars().all(|c| c.is_ascii_hexdigit()),
        "not a key: {key:?}"
    );
    let key_file = dir.join("cluster.keys");
    std::fs::write(&key_file, format!("# the test cluster's key\n{key}\n")).unwrap();
    let listed = Command::new(cohort_bin())
        .args(["keys", "list", "--key-file"])
        .arg(&key_file)
        .output()
        .expect("cohort keys list");
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert_eq!(listed.lines().count(), 1, "{listed}");
    assert!(listed.trim_end().ends_with(" primary"), "{listed}");
    let key_id = listed.split_whitespace().next().unwrap().to_owned();
    assert!(!key.contains(&key_id), "the key id gives the key away");

    let (a, a_id) = node("keyed-a", Some(&key_file));
    let (b, b_id) = node("keyed-b", Some(&key_file));
    let ids = [a_id.clone(), b_id.clone()];
    for n in [&a, &b] {
        n.wait_for(secs(15), view_of(&ids))
            .or_panic("the keyed nodes formed no group");
    }
    let (plain, plain_id) = node("plain", None);
    for n in [&a, &b] {
        n.expect_none_after(0, secs(3), member_added(&plain_id))
            .or_panic("the node without the key was added");
    }
    for id in &ids {
        plain
            .expect_none_after(0, secs(0), member_added(id))
            .or_panic("the node without the key heard a keyed member");
    }

    a.send_line("sealed hello").unwrap();
    b.wait_for(secs(5), message_from(&a_id, "sealed hello"))
        .or_panic("a keyed message did not arrive");
    plain.send_line("plain hello").unwrap();
    let result = plain
        .wait_for(secs(5), send_result("plain hello"))
        .or_panic("no send result");
    assert_eq!(
        result["acked"].as_array().map(Vec::len),
        Some(0),
        "{result}"
    );

    let security = &status(&a)["security"];
    assert_eq!(
        security["keys"][0].as_str(),
        Some(key_id.as_str()),
        "{security}"
    );
    assert!(security["unauthenticated"].as_u64() > Some(0), "{security}");
    assert!(security["opened"].as_u64() > Some(0), "{security}");
    assert!(status(&plain)["security"].is_null());

    for n in [&a, &b, &plain] {
        n.sigterm();
        n.wait_exit(secs(10)).or_panic("did not stop");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `cohort keys ARGS...` and returns its output; fails the test if it fails.
fn keys(args: &[&str]) -> String {
    let out = Command::new(cohort_bin())
        .arg("keys")
        .args(args)
        .output()
        .expect("cohort keys");
    assert!(
        out.status.success(),
        "cohort keys {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Issue 16: keys rotate across a running cluster with no message lost. Two keyed nodes,
/// each with its own key file; one sends 600 messages, one every 5 ms, while the cluster
/// rotates from the old key to a new one in the three steps (install everywhere, use
/// everywhere, remove the old everywhere), each step `cohort keys` on every node's key
/// file and SIGHUP to every node. Every message arrives and every send is acknowledged.
#[test]
fn a_running_cluster_rotates_its_key_with_cohort_keys_and_loses_no_message() {
    let dir = std::env::temp_dir().join(format!("cohort-keys-rotation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let old = keys(&["generate"]).trim().to_owned();
    let new = keys(&["generate"]).trim().to_owned();
    let files = [dir.join("a.keys"), dir.join("b.keys")];
    for f in &files {
        std::fs::write(f, format!("{old}\n")).unwrap();
    }
    let id_of = |file: &std::path::Path, line: usize| -> String {
        let listed = keys(&["list", "--key-file", file.to_str().unwrap()]);
        listed
            .lines()
            .nth(line)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    let old_id = id_of(&files[0], 0);
    let (a, a_id) = node_on("rotating-a", Some(&files[0]), 46621);
    let (b, b_id) = node_on("rotating-b", Some(&files[1]), 46621);
    let ids = [a_id.clone(), b_id.clone()];
    for n in [&a, &b] {
        n.wait_for(secs(15), view_of(&ids))
            .or_panic("the keyed nodes formed no group");
    }

    const MESSAGES: usize = 600;
    std::thread::scope(|scope| {
        let sender = scope.spawn(|| {
            for i in 0..MESSAGES {
                a.send_line(&format!("m{i}")).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        });
        // The three steps, each on every node before the next.
        let file = |f: &std::path::PathBuf| f.to_str().unwrap().to_owned();
        let new_id = {
            keys(&["install", "--key-file", &file(&files[0]), &new]);
            id_of(&files[0], 1)
        };
        // (the command, its argument, the keys every node holds after it)
        let steps = [
            (
                "install",
                new.as_str(),
                vec![old_id.as_str(), new_id.as_str()],
            ),
            (
                "use",
                new_id.as_str(),
                vec![new_id.as_str(), old_id.as_str()],
            ),
            ("remove", old_id.as_str(), vec![new_id.as_str()]),
        ];
        for (name, arg, expect) in &steps {
            std::thread::sleep(std::time::Duration::from_millis(500));
            for (n, f) in [(&a, &files[0]), (&b, &files[1])] {
                keys(&[name, "--key-file", &file(f), arg]);
                let mark = n.mark();
                n.signal("HUP").unwrap();
                let reloaded = n
                    .wait_for_after(mark, secs(5), |v| is_event(v, "keys"))
                    .or_panic(&format!("no reload after {name}"));
                let held: Vec<&str> = reloaded["keys"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                assert_eq!(&held, expect, "after {name}: {reloaded}");
            }
        }
        sender.join().unwrap();
    });

    for i in 0..MESSAGES {
        let data = format!("m{i}");
        b.wait_for(secs(20), message_from(&a_id, &data))
            .or_panic(&format!("{data} was lost during the rotation"));
        let result = a
            .wait_for(secs(20), send_result(&data))
            .or_panic(&format!("no send result for {data}"));
        assert_eq!(
            result["acked"].as_array().map(Vec::len),
            Some(1),
            "{data}: {result}"
        );
    }
    // The old key is gone: the nodes seal and open with the new one only.
    let security = &status(&a)["security"];
    assert_eq!(
        security["keys"].as_array().map(Vec::len),
        Some(1),
        "{security}"
    );
    for n in [&a, &b] {
        n.sigterm();
        n.wait_exit(secs(10)).or_panic("did not stop");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
