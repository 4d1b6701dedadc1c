//! Real ZooKeeper 3.8 servers for the election interop tests and the election benchmark.
//!
//! Each server is a JVM started directly (`QuorumPeerMain` from the Debian package's
//! `/usr/share/java/zookeeper.jar`, whose manifest carries its class path) with its own
//! `zoo.cfg`, `myid` and data directory in a temporary directory, on loopback only. No
//! Debian service and no `zkServer.sh`: the test owns the process and can `kill -9` it.
//!
//! Leadership is read with the `srvr` four-letter command on the client port
//! (`Mode: leader` / `Mode: follower`): ZooKeeper answers it only once the server is
//! serving, so "leader" means the election is over *and* the followers have synced.
//!
//! Std only (no tokio); the integration tests of `cohort-cli` use it too.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::supervisor::{Signal, send_signal};

/// Where the Debian package puts ZooKeeper's jar; its manifest names its dependencies.
pub const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";

/// One voter of an ensemble, as every server's `zoo.cfg` lists it (`server.<sid>=`).
#[derive(Clone, Debug)]
pub struct ZkVoter {
    /// The server id (`myid`).
    pub sid: u64,
    /// Loopback address the voter binds.
    pub host: Ipv4Addr,
    /// ZAB port (followers connect to the leader here).
    pub quorum_port: u16,
    /// Leader election port (`QuorumCnxManager`).
    pub election_port: u16,
    /// Client port (only for ZooKeeper servers; the `srvr` command goes here).
    pub client_port: u16,
}

impl ZkVoter {
    /// A voter on `127.0.0.1` whose ports derive from `base` and `sid`: client
    /// `base + sid`, quorum `base + 20 + sid`, election `base + 40 + sid` (`sid < 20`).
    pub fn loopback(base: u16, sid: u64) -> Self {
        assert!(sid < 20, "sid {sid} does not fit the port layout");
        let s = sid as u16;
        Self {
            sid,
            host: Ipv4Addr::LOCALHOST,
            client_port: base + s,
            quorum_port: base + 20 + s,
            election_port: base + 40 + s,
        }
    }

    /// The election address (`host:election_port`).
    pub fn election_addr(&self) -> SocketAddr {
        SocketAddr::from((self.host, self.election_port))
    }

    /// The client address (`host:client_port`).
    pub fn client_addr(&self) -> SocketAddr {
        SocketAddr::from((self.host, self.client_port))
    }
}

/// What `srvr` says about a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZkMode {
    /// `Mode: leader`.
    Leader,
    /// `Mode: follower`.
    Follower,
    /// Up but not serving (electing or syncing), or another mode.
    NotServing,
}

/// ZooKeeper's timing settings in `zoo.cfg`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZkTiming {
    /// `tickTime`, in milliseconds: the unit of the other two.
    pub tick_ms: u64,
    /// `initLimit`, in ticks: how long a new leader waits for a quorum of followers to
    /// connect and sync (and a follower for the leader) before it gives up and elects again.
    pub init_limit: u32,
    /// `syncLimit`, in ticks: how long a follower's read from the leader may block before it
    /// counts the leader as gone (this is how a hung leader is noticed).
    pub sync_limit: u32,
}

impl Default for ZkTiming {
    /// ZooKeeper's sample configuration: tickTime 2000, initLimit 10, syncLimit 5.
    fn default() -> Self {
        Self {
            tick_ms: 2000,
            init_limit: 10,
            sync_limit: 5,
        }
    }
}

/// A running (or stopped) ZooKeeper server.
struct ZkServer {
    voter: ZkVoter,
    child: Option<Child>,
}

/// A set of ZooKeeper servers sharing one ensemble definition, possibly with voters
/// that are not ZooKeeper (cohort voters) listed in the same `zoo.cfg`.
pub struct ZkEnsemble {
    dir: PathBuf,
    servers: Vec<ZkServer>,
}

impl ZkEnsemble {
    /// Writes the configuration for the ZooKeeper servers `zk_sids` of the ensemble
    /// `voters` under a fresh directory in `parent`, with ZooKeeper's default timing.
    /// Starts nothing.
    pub fn new(parent: &Path, voters: &[ZkVoter], zk_sids: &[u64]) -> Result<Self, String> {
        Self::with_timing(parent, voters, zk_sids, ZkTiming::default())
    }

    /// [`new`](Self::new) with the given `tickTime`, `initLimit` and `syncLimit`.
    pub fn with_timing(
        parent: &Path,
        voters: &[ZkVoter],
        zk_sids: &[u64],
        timing: ZkTiming,
    ) -> Result<Self, String> {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        if !Path::new(ZOOKEEPER_JAR).exists() {
            return Err(format!(
                "{ZOOKEEPER_JAR} is missing: install the Debian package `zookeeper` \
                 (scripts/install-test-deps)"
            ));
        }
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = parent.join(format!("zk-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut server_lines = String::new();
        for v in voters {
            let _ = writeln!(
                server_lines,
                "server.{}={}:{}:{}",
                v.sid, v.host, v.quorum_port, v.election_port
            );
        }
        let mut servers = Vec::new();
        for &sid in zk_sids {
            let voter = voters
                .iter()
                .find(|v| v.sid == sid)
                .ok_or_else(|| format!("sid {sid} is not a voter"))?
                .clone();
            let data = dir.join(format!("data{sid}"));
            std::fs::create_dir_all(&data)
                .map_err(|e| format!("cannot create {}: {e}", data.display()))?;
            std::fs::write(data.join("myid"), format!("{sid}\n")).map_err(|e| e.to_string())?;
            // ZooKeeper's defaults except the timing given, loopback only, no admin HTTP
            // server, `srvr` allowed (the only way we read the mode).
            let cfg = format!(
                "tickTime={tick}\ninitLimit={init}\nsyncLimit={sync}\ndataDir={data}\n\
                 clientPort={client}\nclientPortAddress={host}\nadmin.enableServer=false\n\
                 4lw.commands.whitelist=srvr\n{server_lines}",
                tick = timing.tick_ms,
                init = timing.init_limit,
                sync = timing.sync_limit,
                data = data.display(),
                client = voter.client_port,
                host = voter.host,
            );
            std::fs::write(dir.join(format!("zoo{sid}.cfg")), cfg).map_err(|e| e.to_string())?;
            servers.push(ZkServer { voter, child: None });
        }
        Ok(Self { dir, servers })
    }

    fn server(&self, sid: u64) -> &ZkServer {
        self.servers
            .iter()
            .find(|s| s.voter.sid == sid)
            .unwrap_or_else(|| panic!("no ZooKeeper server {sid}"))
    }

    fn server_mut(&mut self, sid: u64) -> &mut ZkServer {
        self.servers
            .iter_mut()
            .find(|s| s.voter.sid == sid)
            .unwrap_or_else(|| panic!("no ZooKeeper server {sid}"))
    }

    /// The sids of the ZooKeeper servers (running or not).
    pub fn sids(&self) -> Vec<u64> {
        self.servers.iter().map(|s| s.voter.sid).collect()
    }

    /// Starts server `sid` (a JVM); its output goes to `zk<sid>.log` in the directory.
    pub fn start(&mut self, sid: u64) -> Result<(), String> {
        let dir = self.dir.clone();
        let server = self.server_mut(sid);
        if server.child.is_some() {
            return Err(format!("ZooKeeper {sid} already runs"));
        }
        let log =
            std::fs::File::create(dir.join(format!("zk{sid}.log"))).map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new("java")
            .args([
                "-Xmx256m",
                "-XX:+UseSerialGC",
                "-Dzookeeper.jmx.log4j.disable=true",
                "-cp",
                ZOOKEEPER_JAR,
                "org.apache.zookeeper.server.quorum.QuorumPeerMain",
            ])
            .arg(dir.join(format!("zoo{sid}.cfg")))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("cannot start java for ZooKeeper {sid}: {e}"))?;
        server.child = Some(child);
        Ok(())
    }

    /// Starts every server.
    pub fn start_all(&mut self) -> Result<(), String> {
        for sid in self.sids() {
            self.start(sid)?;
        }
        Ok(())
    }

    /// `kill -9` server `sid` and reaps it.
    pub fn kill9(&mut self, sid: u64) {
        if let Some(mut child) = self.server_mut(sid).child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` to server `sid`, if running.
    pub fn signal(&self, sid: u64, signal: Signal) {
        if let Some(child) = &self.server(sid).child {
            let _ = send_signal(child.id(), signal);
        }
    }

    /// Whether server `sid` was started and not killed.
    pub fn is_running(&self, sid: u64) -> bool {
        self.server(sid).child.is_some()
    }

    /// Asks server `sid` for its mode with `srvr`; `None` when it does not answer.
    pub fn mode(&self, sid: u64) -> Option<ZkMode> {
        let addr = self.server(sid).voter.client_addr();
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .ok()?;
        stream.write_all(b"srvr").ok()?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply).ok()?;
        Some(if reply.contains("Mode: leader") {
            ZkMode::Leader
        } else if reply.contains("Mode: follower") {
            ZkMode::Follower
        } else {
            ZkMode::NotServing
        })
    }

    /// One poll of the servers `sids`: the leader, if one of them says it leads and all
    /// others say they follow.
    pub fn agreed_leader(&self, sids: &[u64]) -> Option<u64> {
        let mut leader = None;
        for &sid in sids {
            match self.mode(sid)? {
                ZkMode::Leader if leader.is_none() => leader = Some(sid),
                ZkMode::Follower => {}
                _ => return None,
            }
        }
        leader
    }

    /// Polls the running servers every `poll` until one says it leads and every other
    /// running server listed in `followers` says it follows; returns the leader's sid and
    /// when that was first seen.
    pub fn wait_leader(
        &self,
        followers: &[u64],
        timeout: Duration,
        poll: Duration,
    ) -> Result<(u64, Instant), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = Instant::now();
            let mut leader = None;
            let mut all_follow = true;
            for s in self.servers.iter().filter(|s| s.child.is_some()) {
                match self.mode(s.voter.sid) {
                    Some(ZkMode::Leader) => leader = Some(s.voter.sid),
                    Some(ZkMode::Follower) => {}
                    _ if followers.contains(&s.voter.sid) => all_follow = false,
                    _ => {}
                }
            }
            if let (Some(l), true) = (leader, all_follow) {
                return Ok((l, now));
            }
            if now >= deadline {
                return Err(format!(
                    "no ZooKeeper leader within {timeout:?}; logs in {}",
                    self.dir.display()
                ));
            }
            std::thread::sleep(poll);
        }
    }

    /// The directory holding configurations, data and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for ZkEnsemble {
    fn drop(&mut self) {
        for s in &mut self.servers {
            if let Some(mut child) = s.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // Keep the logs of a failing test; remove them otherwise.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
