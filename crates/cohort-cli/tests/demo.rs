//! The README's first command: `cohort demo` runs its whole story (a three-node cluster,
//! an ACKed message, a hang, a leave, a kill, a leader election and failover) and exits 0.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn demo_runs_to_the_end() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .arg("demo")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cohort demo");
    let deadline = Instant::now() + Duration::from_secs(90);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("cohort demo did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stderr}\n{stdout}");
    for expected in [
        "installs view 2 [",
        "alpha: acknowledged by ",
        "rejoining as",
        "ms after gamma left",
        "ms after the kill",
        "voters 1, 2, 3 agree: voter 3 leads",
        "voter 3 killed (SIGKILL); voter 2 leads",
        "done.",
    ] {
        assert!(stdout.contains(expected), "no `{expected}` in:\n{stdout}");
    }
}
