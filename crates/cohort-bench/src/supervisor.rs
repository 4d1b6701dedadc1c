//! The one process supervisor of the benchmarks: it starts a child process with piped
//! stdin and stdout, reads the child's stdout lines in the background, waits for a line
//! whose JSON `event` is a given one (typed with serde), waits for the exit with a
//! timeout, sends signals with kill(2) (through `rustix`, never by running `kill`), and
//! kills and reaps the child when dropped.
//!
//! The helper processes of the benchmarks (`cohort perf-sink`, `cohort multicast`, the
//! Java peers) speak one JSON object per stdout line with an `event` field; closing
//! their stdin tells them to stop.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::mpsc;

/// A signal the benchmarks send to their children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// `SIGSTOP`: the process hangs (cannot be caught).
    Stop,
    /// `SIGCONT`: a stopped process goes on.
    Cont,
    /// `SIGTERM`: asks the process to end.
    Term,
    /// `SIGKILL`: ends the process at once (cannot be caught).
    Kill,
}

impl Signal {
    fn raw(self) -> rustix::process::Signal {
        match self {
            Self::Stop => rustix::process::Signal::STOP,
            Self::Cont => rustix::process::Signal::CONT,
            Self::Term => rustix::process::Signal::TERM,
            Self::Kill => rustix::process::Signal::KILL,
        }
    }
}

/// Sends `signal` to process `pid` with kill(2).
pub fn send_signal(pid: u32, signal: Signal) -> std::io::Result<()> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a pid"))?;
    rustix::process::kill_process(pid, signal.raw()).map_err(std::io::Error::from)
}

/// A supervised child process whose stdout lines are collected in the background;
/// closing its stdin tells it to stop. Dropping it kills and reaps the process.
#[derive(Debug)]
pub struct Proc {
    /// Name for error messages.
    pub name: String,
    /// The process.
    child: Child,
    /// Its stdin, until [`Proc::close_stdin`].
    stdin: Option<ChildStdin>,
    /// Its stdout, line by line.
    lines: mpsc::UnboundedReceiver<String>,
}

impl Proc {
    /// Starts `cmd` with piped stdin and stdout, and `stderr` as given.
    pub fn spawn(
        name: impl Into<String>,
        cmd: &mut Command,
        stderr: Stdio,
    ) -> std::io::Result<Self> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()?;
        let (tx, lines) = mpsc::unbounded_channel();
        if let Some(stdout) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Self {
            name: name.into(),
            stdin: child.stdin.take(),
            child,
            lines,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next JSON line whose `event` is `event`; other lines are skipped, a line whose
    /// `event` is `error` is an error.
    pub async fn expect(&mut self, event: &str, within: Duration) -> Result<Value, String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let line = match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Err(_) => return Err(format!("{}: no \"{event}\" within {within:?}", self.name)),
                Ok(None) => {
                    let status = self
                        .child
                        .try_wait()
                        .ok()
                        .flatten()
                        .map_or_else(|| "still running".into(), |s| s.to_string());
                    return Err(format!(
                        "{}: exited before \"{event}\" ({status})",
                        self.name
                    ));
                }
                Ok(Some(line)) => line,
            };
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if v["event"] == event {
                return Ok(v);
            }
            if v["event"] == "error" {
                let what = v.get("message").or_else(|| v.get("error")).cloned();
                return Err(format!("{}: {}", self.name, what.unwrap_or(v)));
            }
        }
    }

    /// [`Proc::expect`], read into a typed record.
    pub async fn expect_as<T: DeserializeOwned>(
        &mut self,
        event: &str,
        within: Duration,
    ) -> Result<T, String> {
        let v = self.expect(event, within).await?;
        serde_json::from_value(v).map_err(|e| format!("{}: bad \"{event}\" line: {e}", self.name))
    }

    /// The next stdout line already read, without waiting.
    pub fn try_line(&mut self) -> Option<String> {
        self.lines.try_recv().ok()
    }

    /// Writes one line to the child's stdin.
    pub fn send_line(&mut self, line: &str) -> Result<(), String> {
        use std::io::Write as _;
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| format!("{}: stdin closed", self.name))?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("{}: cannot write to stdin: {e}", self.name))
    }

    /// Sends `signal` to the process (kill(2)).
    pub fn signal(&self, signal: Signal) {
        let _ = send_signal(self.pid(), signal);
    }

    /// `SIGKILL`, and reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Closes stdin: the signal to stop.
    pub fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    /// Waits up to `within` for the process to exit; its status, or `None` if it still
    /// runs.
    pub async fn wait_timeout(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Closes stdin (the signal to stop) and waits for the exit, killing after `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        self.close_stdin();
        if self.wait_timeout(grace).await.is_none() {
            self.kill();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_typed_events_and_stops_and_signals() {
        #[derive(serde::Deserialize)]
        struct Ready {
            port: u16,
        }
        let mut p = Proc::spawn(
            "sh",
            Command::new("sh").args([
                "-c",
                r#"echo noise; echo '{"event":"ready","port":7}'; read x; echo "{\"event\":\"got\",\"line\":\"$x\"}"; cat"#,
            ]),
            Stdio::null(),
        )
        .expect("sh runs");
        let ready: Ready = p
            .expect_as("ready", Duration::from_secs(10))
            .await
            .expect("ready");
        assert_eq!(ready.port, 7);
        p.send_line("hello").expect("stdin open");
        let got = p.expect("got", Duration::from_secs(10)).await.expect("got");
        assert_eq!(got["line"], "hello");
        // Stopped, it does not end when stdin closes; continued, it does.
        p.signal(Signal::Stop);
        p.close_stdin();
        assert!(p.wait_timeout(Duration::from_millis(300)).await.is_none());
        p.signal(Signal::Cont);
        let status = p
            .wait_timeout(Duration::from_secs(10))
            .await
            .expect("exits");
        assert!(status.success());
    }

    #[tokio::test]
    async fn a_missing_event_is_a_timeout_and_an_exit_is_reported() {
        let mut p = Proc::spawn("true", &mut Command::new("true"), Stdio::null()).expect("runs");
        let err = p
            .expect("ready", Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(err.contains("exited before"), "{err}");
        let mut p =
            Proc::spawn("sleep", Command::new("sleep").arg("30"), Stdio::null()).expect("runs");
        let err = p
            .expect("ready", Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(err.contains("within"), "{err}");
        p.stop(Duration::from_millis(50)).await;
        assert!(p.wait_timeout(Duration::ZERO).await.is_some());
    }
}
