//! The network namespace `cohort perf` runs in as root: Tribes' multicast needs a route
//! for 224.0.0.0/4, which a fresh namespace with `lo` up can be given without touching
//! the host's routes.

use std::process::{Command, Stdio};

use super::process::on_own_runtime;
use super::{PerfArgs, measure};
use crate::BenchResult;

/// Runs `ip` with `args`; its stderr is the error.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Creates `cohortperf<pid>` with `lo` up and multicast routed to it, runs this command
/// again inside it, and deletes it afterwards.
pub(super) async fn run_in_netns(args: &PerfArgs) -> BenchResult {
    let ns = format!("cohortperf{}", std::process::id());
    let setup = ip(&["netns", "add", &ns])
        .and_then(|()| ip(&["-n", &ns, "link", "set", "lo", "up"]))
        .and_then(|()| ip(&["-n", &ns, "route", "add", "224.0.0.0/4", "dev", "lo"]));
    if let Err(e) = setup {
        let _ = ip(&["netns", "del", &ns]);
        eprintln!("perf: cannot set up a network namespace ({e}); running in this one");
        let mut args = args.clone();
        args.no_netns = true;
        return on_own_runtime("cohort-sender", args.runtime, args.workers, move || {
            measure(args)
        })
        .await;
    }
    let exe = std::env::current_exe()?;
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(&exe)
        .args(std::env::args_os().skip(1))
        .args(["--in-netns", &ns])
        .stdin(Stdio::null())
        .spawn()?;
    // Ctrl-C reaches the child through the process group; survive it to clean up.
    let interrupted = tokio::spawn(tokio::signal::ctrl_c());
    let status = tokio::task::spawn_blocking(move || child.wait()).await?;
    interrupted.abort();
    if let Err(e) = ip(&["netns", "del", &ns]) {
        eprintln!("perf: {e}");
    }
    let status = status?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("perf in namespace {ns} failed: {status}").into())
    }
}
