//! `NetLab`: a set of hosts, each a Linux network namespace, joined by a bridge that
//! lives in its own "switch" namespace.
//!
//! ```text
//!   host 0 ns            switch ns                 host 1 ns
//!  [eth0 10.213.0.10]--[p0]--+        +--[p1]--[eth0 10.213.0.11]
//!                            |  br0   |
//!                            +--[p2]--+--... [eth0 10.213.0.12] (host 2 ns)
//! ```
//!
//! Nothing is added to the root namespace: the veth pairs are created inside the
//! switch namespace with their host end moved straight into the host namespace. The
//! subnet 10.213.0.0/24 exists only inside these namespaces. Multicast snooping is off
//! on the bridge so multicast floods to every port, and every host routes 224.0.0.0/4
//! via its `eth0`.
//!
//! A link is cut by detaching the host's switch port from the bridge: the host's
//! `eth0` keeps its carrier and its routes (so, as with a real partition, sends still
//! succeed locally) but every frame is silently dropped at the switch.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::proc::Proc;

/// Every namespace this harness creates starts with this, followed by the owning
/// process id: `cohortlab<pid>x<n>-sw`, `cohortlab<pid>x<n>-h<i>`.
pub(crate) const NS_PREFIX: &str = "cohortlab";

/// The name of the host side interface in every host namespace.
pub(crate) const HOST_IF: &str = "eth0";

/// Serialises namespace creation and deletion inside one test process: concurrent
/// first-time `ip netns add` calls race on the `/run/netns` mount.
static SETUP_LOCK: Mutex<()> = Mutex::new(());
static LAB_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A private network of `n` hosts (network namespaces) on one bridge.
pub(crate) struct NetLab {
    name: String,
    switch: String,
    hosts: Vec<String>,
    /// Which bridge each host's switch port is attached to (`None` = cut).
    ports: Mutex<Vec<Option<String>>>,
    /// Extra bridges created by `partition` (besides `br0`).
    extra_bridges: Mutex<Vec<String>>,
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ))
    }
}

fn ip(args: &[&str]) -> Result<String, String> {
    run(Command::new("ip").args(args))
}

/// The effective uid of this process, from /proc (no libc).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Names of all network namespaces (`ip netns list`).
fn list_namespaces() -> Result<Vec<String>, String> {
    let out = ip(&["netns", "list"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// SIGKILL every process inside a namespace, then delete it. Best effort.
fn destroy_namespace(ns: &str) -> Result<(), String> {
    if let Ok(pids) = ip(&["netns", "pids", ns]) {
        let pids: Vec<&str> = pids.split_whitespace().collect();
        if !pids.is_empty() {
            let _ = Command::new("kill")
                .arg("-9")
                .args(&pids)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
    ip(&["netns", "del", ns]).map(|_| ())
}

/// Deletes namespaces left behind by earlier test processes that died without running
/// their destructors (`cohortlab<pid>x...` with no process `<pid>`).
fn cleanup_stale() {
    let Ok(all) = list_namespaces() else { return };
    let me = std::process::id();
    for ns in all {
        let Some(rest) = ns.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('x').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != me && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = destroy_namespace(&ns);
        }
    }
}

impl NetLab {
    /// Creates `n` hosts (1..=200) on one bridge. Fails with a clear message when not
    /// root or when `ip` (iproute2) is missing.
    pub(crate) fn new(n: usize) -> Result<Self, String> {
        if n == 0 || n > 200 {
            return Err(format!("NetLab::new({n}): host count must be 1..=200"));
        }
        match effective_uid() {
            Some(0) => {}
            Some(uid) => {
                return Err(format!(
                    "NetLab needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to create network \
                     namespaces; running as uid {uid}"
                ));
            }
            None => return Err("NetLab: cannot read the effective uid from /proc".into()),
        }
        ip(&["-V"])
            .map_err(|e| format!("NetLab needs the `ip` command (iproute2) on PATH: {e}"))?;

        let _guard = SETUP_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        cleanup_stale();

        let k = LAB_COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("{NS_PREFIX}{}x{k}", std::process::id());
        let lab = Self {
            switch: format!("{name}-sw"),
            hosts: (0..n).map(|i| format!("{name}-h{i}")).collect(),
            ports: Mutex::new(vec![Some("br0".to_owned()); n]),
            extra_bridges: Mutex::new(Vec::new()),
            name,
        };
        // From here on, Drop removes whatever was created if setup fails half way.
        lab.setup()
            .map_err(|e| format!("NetLab setup of {}: {e}", lab.name))?;
        Ok(lab)
    }

    fn setup(&self) -> Result<(), String> {
        let sw = self.switch.as_str();
        ip(&["netns", "add", sw])?;
        ip(&["-n", sw, "link", "set", "lo", "up"])?;
        self.add_bridge("br0")?;
        for (i, host) in self.hosts.iter().enumerate() {
            let port = format!("p{i}");
            let addr = format!("{}/24", self.host_addr(i));
            ip(&["netns", "add", host])?;
            ip(&[
                "-n", sw, "link", "add", &port, "type", "veth", "peer", "name", HOST_IF, "netns",
                host,
            ])?;
            ip(&["-n", sw, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", sw, "link", "set", &port, "up"])?;
            ip(&["-n", host, "link", "set", "lo", "up"])?;
            ip(&["-n", host, "addr", "add", &addr, "dev", HOST_IF])?;
            ip(&["-n", host, "link", "set", HOST_IF, "up"])?;
            ip(&["-n", host, "route", "add", "224.0.0.0/4", "dev", HOST_IF])?;
        }
        Ok(())
    }

    fn add_bridge(&self, br: &str) -> Result<(), String> {
        let sw = self.switch.as_str();
        ip(&[
            "-n",
            sw,
            "link",
            "add",
            br,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ])?;
        ip(&["-n", sw, "link", "set", br, "up"]).map(|_| ())
    }

    /// The unique prefix of this lab's namespaces.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Number of hosts.
    pub(crate) fn len(&self) -> usize {
        self.hosts.len()
    }

    /// The namespace of host `i` (for `ip netns exec` by hand).
    pub(crate) fn host_ns(&self, i: usize) -> &str {
        &self.hosts[i]
    }

    /// The namespace holding the bridge.
    pub(crate) fn switch_ns(&self) -> &str {
        &self.switch
    }

    /// Host `i`'s address, 10.213.0.(10 + i), on its `eth0`.
    pub(crate) fn host_addr(&self, i: usize) -> Ipv4Addr {
        assert!(i < self.hosts.len(), "host {i} out of range");
        Ipv4Addr::new(10, 213, 0, 10 + i as u8)
    }

    /// A command that runs `program args..` inside host `i`'s namespace.
    ///
    /// `ip netns exec` execs the program in place (no fork), so the child's pid is the
    /// program's pid and signals reach it directly.
    pub(crate) fn exec<S: AsRef<std::ffi::OsStr>>(
        &self,
        i: usize,
        program: &str,
        args: impl IntoIterator<Item = S>,
    ) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.host_ns(i), program]);
        cmd.args(args);
        cmd
    }

    /// Spawns `program args..` in host `i` as a [`Proc`] named `name`.
    pub(crate) fn spawn<S: AsRef<std::ffi::OsStr>>(
        &self,
        i: usize,
        name: &str,
        program: &str,
        args: impl IntoIterator<Item = S>,
    ) -> Proc {
        Proc::spawn(name, self.exec(i, program, args))
    }

    fn set_master(&self, i: usize, bridge: Option<&str>) {
        let port = format!("p{i}");
        let res = match bridge {
            Some(br) => ip(&["-n", &self.switch, "link", "set", &port, "master", br]),
            None => ip(&["-n", &self.switch, "link", "set", &port, "nomaster"]),
        };
        if let Err(e) = res {
            panic!(
                "NetLab {}: cannot attach host {i} to {bridge:?}: {e}",
                self.name
            );
        }
        self.ports.lock().unwrap_or_else(|p| p.into_inner())[i] = bridge.map(str::to_owned);
    }

    /// Cuts host `i` off the network: its switch port leaves the bridge, so every frame
    /// from or to it is silently dropped (the host's own interface stays up).
    pub(crate) fn cut_link(&self, i: usize) {
        assert!(i < self.hosts.len(), "host {i} out of range");
        self.set_master(i, None);
    }

    /// Reconnects host `i` to the main bridge.
    pub(crate) fn restore_link(&self, i: usize) {
        assert!(i < self.hosts.len(), "host {i} out of range");
        self.set_master(i, Some("br0"));
    }

    /// Makes host `i` lose `loss_percent` % of the packets it sends and delay them by
    /// `delay_ms`, with `tc netem` on its `eth0`. Kernels built without netem
    /// (`CONFIG_NET_SCH_NETEM`) get the loss from an iptables `statistic` rule and, where
    /// `tbf` exists, queueing delay from a 50 Mbit/s token bucket instead of a fixed
    /// delay; the returned text says which was applied.
    pub(crate) fn impair(&self, i: usize, loss_percent: u32, delay_ms: u32) -> String {
        let host = self.host_ns(i).to_owned();
        let netem = run(Command::new("ip").args([
            "netns",
            "exec",
            &host,
            "tc",
            "qdisc",
            "replace",
            "dev",
            HOST_IF,
            "root",
            "netem",
            "loss",
            &format!("{loss_percent}%"),
            "delay",
            &format!("{delay_ms}ms"),
        ]));
        let Err(netem_error) = netem else {
            return format!("netem loss {loss_percent}% delay {delay_ms}ms");
        };
        let probability = format!("{:.4}", f64::from(loss_percent) / 100.0);
        let rule = run(Command::new("ip").args([
            "netns",
            "exec",
            &host,
            "iptables",
            "-A",
            "OUTPUT",
            "-o",
            HOST_IF,
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            &probability,
            "-j",
            "DROP",
        ]));
        if let Err(e) = rule {
            panic!(
                "NetLab {}: cannot impair host {i}: netem: {netem_error}; iptables: {e}",
                self.name
            );
        }
        // Without netem there is no fixed delay; a slow link's queue delays instead: a
        // token bucket at 50 Mbit/s holding up to 100 ms, so bursts wait there (and what
        // overflows it is lost on top of the random loss).
        let shaped = run(Command::new("ip").args([
            "netns", "exec", &host, "tc", "qdisc", "replace", "dev", HOST_IF, "root", "tbf",
            "rate", "50mbit", "burst", "32kb", "latency", "100ms",
        ]));
        match shaped {
            Ok(_) => format!(
                "iptables loss {loss_percent}%, queueing delay up to 100 ms behind a 50 Mbit/s \
                 token bucket (no netem: {netem_error})"
            ),
            Err(e) => format!(
                "iptables loss {loss_percent}%, no delay (no netem: {netem_error}; no tbf: {e})"
            ),
        }
    }

    /// Splits the network: every group of hosts gets its own bridge, so hosts reach
    /// each other only within a group. Hosts named in no group are cut off.
    pub(crate) fn partition(&self, groups: &[&[usize]]) {
        let mut assign: BTreeMap<usize, String> = BTreeMap::new();
        for (g, hosts) in groups.iter().enumerate() {
            let br = if g == 0 {
                "br0".to_owned()
            } else {
                format!("br{g}")
            };
            if g > 0 {
                let mut extra = self.extra_bridges.lock().unwrap_or_else(|p| p.into_inner());
                if !extra.contains(&br) {
                    if let Err(e) = self.add_bridge(&br) {
                        panic!("NetLab {}: cannot create bridge {br}: {e}", self.name);
                    }
                    extra.push(br.clone());
                }
            }
            for &h in *hosts {
                assert!(h < self.hosts.len(), "host {h} out of range");
                if let Some(prev) = assign.insert(h, br.clone()) {
                    panic!("NetLab::partition: host {h} is in two groups ({prev}, {br})");
                }
            }
        }
        for i in 0..self.hosts.len() {
            self.set_master(i, assign.get(&i).map(String::as_str));
        }
    }

    /// Undoes `partition` and every `cut_link`: all hosts back on one bridge.
    pub(crate) fn heal(&self) {
        for i in 0..self.hosts.len() {
            self.set_master(i, Some("br0"));
        }
    }

    /// Whether host `i` is currently connected to the main bridge.
    pub(crate) fn is_connected(&self, i: usize) -> bool {
        self.ports.lock().unwrap_or_else(|p| p.into_inner())[i].as_deref() == Some("br0")
    }

    /// A human readable dump of the lab (for failure messages).
    pub(crate) fn describe(&self) -> String {
        let mut s = format!("NetLab {} (switch {}):", self.name, self.switch);
        let ports = self.ports.lock().unwrap_or_else(|p| p.into_inner());
        for i in 0..self.hosts.len() {
            let _ = write!(
                s,
                "\n  host {i}: ns {} addr {} port p{i} on {:?}",
                self.hosts[i],
                self.host_addr(i),
                ports[i]
            );
        }
        s
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        let _guard = SETUP_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let existing = list_namespaces().unwrap_or_default();
        for ns in self.hosts.iter().chain(std::iter::once(&self.switch)) {
            if existing.iter().any(|e| e == ns) {
                if let Err(e) = destroy_namespace(ns) {
                    eprintln!("NetLab {}: cleanup: {e}", self.name);
                }
            }
        }
    }
}
