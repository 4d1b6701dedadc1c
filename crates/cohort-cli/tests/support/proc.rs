//! `Proc`: a child process whose stdout is read line by line (JSON objects parsed) into
//! a history that tests wait on.
//!
//! Environment knobs for debugging:
//! - `COHORT_TEST_ECHO=1` echoes every stdout line to the test's stderr, prefixed with
//!   the process name and the time since spawn.
//! - `COHORT_TEST_STDERR=inherit` lets children write to the test's stderr instead of
//!   a log file under `target/tmp/cohort-test-logs/`.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How many stdout lines and stderr lines failure messages show.
const TAIL: usize = 40;

static PROC_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// One line of a child's stdout.
#[derive(Clone, Debug)]
pub(crate) struct Line {
    /// Index in the history (0 = first line); compare with [`Proc::mark`].
    pub(crate) seq: usize,
    /// When the reader thread saw the line.
    pub(crate) at: Instant,
    /// The line without its line terminator.
    pub(crate) text: String,
    /// The parsed JSON object, if the line is one.
    pub(crate) json: Option<Value>,
}

#[derive(Default)]
struct State {
    lines: Vec<Line>,
    eof: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    cond: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A spawned child process. Dropping it kills the child (SIGKILL) and reaps it.
pub(crate) struct Proc {
    name: String,
    pid: u32,
    child: Mutex<Child>,
    /// Set once the child has been reaped; no signal is sent after that (the pid may be
    /// reused).
    exit: Mutex<Option<ExitStatus>>,
    stdin: Mutex<Option<ChildStdin>>,
    shared: Arc<Shared>,
    stderr_path: Option<PathBuf>,
    spawned_at: Instant,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn log_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cohort-test-logs")
}

impl Proc {
    /// Spawns `cmd` with piped stdin and stdout; panics (with the command) on failure.
    pub(crate) fn spawn(name: &str, cmd: Command) -> Self {
        match Self::try_spawn(name, cmd) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        }
    }

    /// Spawns `cmd` with piped stdin and stdout, stderr to a log file (or inherited,
    /// see the module docs).
    pub(crate) fn try_spawn(name: &str, mut cmd: Command) -> Result<Self, String> {
        let n = PROC_COUNTER.fetch_add(1, Ordering::SeqCst);
        let inherit = std::env::var("COHORT_TEST_STDERR").is_ok_and(|v| v == "inherit");
        let echo = std::env::var("COHORT_TEST_ECHO").is_ok_and(|v| !v.is_empty() && v != "0");
        let stderr_path = if inherit {
            cmd.stderr(Stdio::inherit());
            None
        } else {
            let dir = log_dir();
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let safe: String = name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let path = dir.join(format!("{}-{n}-{safe}.stderr", std::process::id()));
            let file = std::fs::File::create(&path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            cmd.stderr(file);
            Some(path)
        };
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot spawn {name} ({cmd:?}): {e}"))?;
        let spawned_at = Instant::now();
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        let shared = Arc::new(Shared::default());
        let reader_shared = Arc::clone(&shared);
        let reader_name = name.to_owned();
        std::thread::Builder::new()
            .name(format!("stdout-{name}"))
            .spawn(move || {
                let mut reader = BufReader::new(stdout);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match reader.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let at = Instant::now();
                    let text = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\n', '\r'])
                        .to_owned();
                    if echo {
                        eprintln!(
                            "[{reader_name} +{:.3}s] {text}",
                            at.duration_since(spawned_at).as_secs_f64()
                        );
                    }
                    let json = serde_json::from_str::<Value>(text.trim())
                        .ok()
                        .filter(Value::is_object);
                    let mut st = reader_shared.lock();
                    let seq = st.lines.len();
                    st.lines.push(Line {
                        seq,
                        at,
                        text,
                        json,
                    });
                    drop(st);
                    reader_shared.cond.notify_all();
                }
                reader_shared.lock().eof = true;
                reader_shared.cond.notify_all();
            })
            .map_err(|e| format!("cannot start the reader thread for {name}: {e}"))?;
        Ok(Self {
            name: name.to_owned(),
            pid: child.id(),
            child: Mutex::new(child),
            exit: Mutex::new(None),
            stdin: Mutex::new(stdin),
            shared,
            stderr_path,
            spawned_at,
        })
    }

    /// The name given at spawn.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The child's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// When the child was spawned.
    pub(crate) fn spawned_at(&self) -> Instant {
        self.spawned_at
    }

    /// The number of lines seen so far: pass it to the `*_after` methods to consider
    /// only lines that arrive later.
    pub(crate) fn mark(&self) -> usize {
        self.shared.lock().lines.len()
    }

    /// A snapshot of every line seen so far.
    pub(crate) fn lines(&self) -> Vec<Line> {
        self.shared.lock().lines.clone()
    }

    /// A snapshot of every JSON line seen so far.
    pub(crate) fn json_lines(&self) -> Vec<Value> {
        self.shared
            .lock()
            .lines
            .iter()
            .filter_map(|l| l.json.clone())
            .collect()
    }

    /// All JSON lines since `mark` that match `pred` (no waiting).
    pub(crate) fn matching_after(
        &self,
        mark: usize,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Vec<Line> {
        self.shared
            .lock()
            .lines
            .iter()
            .skip(mark)
            .filter(|l| l.json.as_ref().is_some_and(&mut pred))
            .cloned()
            .collect()
    }

    /// Waits for the first JSON line (of the whole history) matching `pred`.
    pub(crate) fn wait_for(
        &self,
        timeout: Duration,
        pred: impl FnMut(&Value) -> bool,
    ) -> Result<Value, String> {
        self.wait_for_after(0, timeout, pred)
    }

    /// Waits for the first JSON line with index >= `mark` matching `pred`.
    pub(crate) fn wait_for_after(
        &self,
        mark: usize,
        timeout: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Result<Value, String> {
        self.wait_for_line(mark, timeout, |l| l.json.as_ref().is_some_and(&mut pred))
            .map(|l| l.json.expect("matched a JSON line"))
    }

    /// Waits for the first JSON line with index >= `mark` matching `pred`; the returned
    /// [`Line`] says when it was seen (`line.json` is `Some`).
    pub(crate) fn wait_for_json_line(
        &self,
        mark: usize,
        timeout: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Result<Line, String> {
        self.wait_for_line(mark, timeout, |l| l.json.as_ref().is_some_and(&mut pred))
    }

    /// Waits for the first line (JSON or not) with index >= `mark` matching `pred`;
    /// the returned [`Line`] says when it was seen.
    pub(crate) fn wait_for_line(
        &self,
        mark: usize,
        timeout: Duration,
        mut pred: impl FnMut(&Line) -> bool,
    ) -> Result<Line, String> {
        self.wait_for_lines(mark, 1, timeout, |l| pred(l))
            .map(|mut v| v.remove(0))
    }

    /// Waits until `n` lines with index >= `mark` match `pred`; returns them in order.
    pub(crate) fn wait_for_lines(
        &self,
        mark: usize,
        n: usize,
        timeout: Duration,
        mut pred: impl FnMut(&Line) -> bool,
    ) -> Result<Vec<Line>, String> {
        let deadline = Instant::now() + timeout;
        let mut found = Vec::new();
        let mut next = mark;
        let mut st = self.shared.lock();
        loop {
            while next < st.lines.len() && found.len() < n {
                if pred(&st.lines[next]) {
                    found.push(st.lines[next].clone());
                }
                next += 1;
            }
            if found.len() >= n {
                return Ok(found);
            }
            let why = if st.eof {
                "its stdout closed (process exited?)".to_owned()
            } else {
                let now = Instant::now();
                if now >= deadline {
                    format!("timed out after {timeout:?}")
                } else {
                    st = self
                        .shared
                        .cond
                        .wait_timeout(st, deadline - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                    continue;
                }
            };
            drop(st);
            return Err(format!(
                "{}: {why} waiting for {n} matching line(s) after line {mark}, got {}: {:?}\n{}",
                self.name,
                found.len(),
                found.iter().map(|l| &l.text).collect::<Vec<_>>(),
                self.describe()
            ));
        }
    }

    /// Like [`Proc::wait_for_lines`] for JSON lines; returns the JSON values.
    pub(crate) fn wait_for_n_after(
        &self,
        mark: usize,
        n: usize,
        timeout: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Result<Vec<Value>, String> {
        self.wait_for_lines(mark, n, timeout, |l| l.json.as_ref().is_some_and(&mut pred))
            .map(|v| v.into_iter().filter_map(|l| l.json).collect())
    }

    /// Watches for `duration` and fails if a JSON line with index >= `mark` matches
    /// `pred` (checking lines already seen too). Returns early when stdout closes.
    pub(crate) fn expect_none_after(
        &self,
        mark: usize,
        duration: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Result<(), String> {
        match self.wait_for_line(mark, duration, |l| l.json.as_ref().is_some_and(&mut pred)) {
            Ok(line) => Err(format!(
                "{}: unexpected line {} (+{:.3}s): {}\n{}",
                self.name,
                line.seq,
                line.at.duration_since(self.spawned_at).as_secs_f64(),
                line.text,
                self.describe()
            )),
            Err(_) => Ok(()),
        }
    }

    /// Writes `line` plus a newline to the child's stdin and flushes.
    pub(crate) fn send_line(&self, line: &str) -> Result<(), String> {
        let mut stdin = lock(&self.stdin);
        let Some(w) = stdin.as_mut() else {
            return Err(format!("{}: stdin already closed", self.name));
        };
        w.write_all(line.as_bytes())
            .and_then(|()| w.write_all(b"\n"))
            .and_then(|()| w.flush())
            .map_err(|e| {
                format!(
                    "{}: cannot write to stdin: {e}\n{}",
                    self.name,
                    self.describe()
                )
            })
    }

    /// Closes the child's stdin (EOF).
    pub(crate) fn close_stdin(&self) {
        lock(&self.stdin).take();
    }

    /// Sends a signal by name (`KILL`, `TERM`, `STOP`, `CONT`, ...) with `kill(1)`.
    pub(crate) fn signal(&self, sig: &str) -> Result<(), String> {
        let exit = lock(&self.exit);
        if let Some(status) = *exit {
            return Err(format!(
                "{}: cannot send SIG{sig}: already exited ({status})",
                self.name
            ));
        }
        let out = Command::new("kill")
            .args(["-s", sig, &self.pid.to_string()])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run kill: {e}"))?;
        drop(exit);
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{}: kill -s {sig} {} failed: {}",
                self.name,
                self.pid,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// SIGKILL, then reaps the child. A no-op if it has already been reaped.
    pub(crate) fn kill9(&self) {
        if lock(&self.exit).is_some() {
            return;
        }
        if let Err(e) = self.signal("KILL") {
            panic!("{e}");
        }
        if let Err(e) = self.wait_exit(Duration::from_secs(10)) {
            panic!("{e}");
        }
    }

    /// SIGTERM (graceful leave).
    pub(crate) fn sigterm(&self) {
        if let Err(e) = self.signal("TERM") {
            panic!("{e}");
        }
    }

    /// SIGSTOP (freeze, like a long GC pause).
    pub(crate) fn sigstop(&self) {
        if let Err(e) = self.signal("STOP") {
            panic!("{e}");
        }
    }

    /// SIGCONT (resume after [`Proc::sigstop`]).
    pub(crate) fn sigcont(&self) {
        if let Err(e) = self.signal("CONT") {
            panic!("{e}");
        }
    }

    /// The exit status if the child has exited (reaps it).
    pub(crate) fn try_exit_status(&self) -> Option<ExitStatus> {
        let mut exit = lock(&self.exit);
        if exit.is_none() {
            if let Ok(Some(status)) = lock(&self.child).try_wait() {
                *exit = Some(status);
            }
        }
        *exit
    }

    /// Waits up to `timeout` for the child to exit.
    pub(crate) fn wait_exit(&self, timeout: Duration) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit_status() {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{}: still running {timeout:?} later\n{}",
                    self.name,
                    self.describe()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The last lines of the child's stderr log (empty when inherited).
    pub(crate) fn stderr_tail(&self, n: usize) -> String {
        let Some(path) = &self.stderr_path else {
            return String::new();
        };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// State, recent stdout (with times since spawn) and stderr tail, for failure
    /// messages.
    pub(crate) fn describe(&self) -> String {
        let status = match *lock(&self.exit) {
            Some(s) => format!("exited: {s}"),
            None => "running or unreaped".to_owned(),
        };
        let mut s = format!(
            "--- {} (pid {}, {status}, spawned {:.3}s ago) stdout, last {TAIL} lines:",
            self.name,
            self.pid,
            self.spawned_at.elapsed().as_secs_f64()
        );
        {
            let st = self.shared.lock();
            for l in st.lines.iter().skip(st.lines.len().saturating_sub(TAIL)) {
                let t = l.at.duration_since(self.spawned_at).as_secs_f64();
                let _ = write!(s, "\n  [{} +{t:.3}s] {}", l.seq, l.text);
            }
            if st.eof {
                s.push_str("\n  <eof>");
            }
        }
        if let Some(path) = &self.stderr_path {
            let _ = write!(
                s,
                "\n--- {} stderr ({}), last {TAIL} lines:\n{}",
                self.name,
                path.display(),
                self.stderr_tail(TAIL)
            );
        }
        s
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        lock(&self.stdin).take();
        if self.try_exit_status().is_some() {
            return;
        }
        let _ = self.signal("KILL");
        let _ = self.wait_exit(Duration::from_secs(5));
    }
}
