//! Leader election over TCP, wire-compatible with ZooKeeper 3.8 (SPEC §7).
//!
//! [`Election::start`] listens on this voter's election port and keeps one connection to
//! every other voter (ZooKeeper's `QuorumCnxManager`, see the `mesh` module); one driver task feeds
//! the received notifications and timers to the sans-IO
//! [`ElectionCore`](cohort_proto::election::ElectionCore) and sends what it produces. The
//! application reads the current [`Leadership`] or watches it change.
//!
//! ```no_run
//! # async fn run() -> Result<(), cohort::election::ElectionStartError> {
//! use cohort::election::{Election, ElectionOptions};
//! let peers = [(1, "127.0.0.1:3888".parse().unwrap()), (2, "127.0.0.1:3889".parse().unwrap()),
//!              (3, "127.0.0.1:3890".parse().unwrap())];
//! let election = Election::start(ElectionOptions::new(1, peers)).await?;
//! let mut changes = election.watch();
//! while changes.changed().await.is_ok() {
//!     println!("{:?}", *changes.borrow());
//! }
//! # Ok(()) }
//! ```

mod driver;
mod mesh;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use cohort_proto::election::ElectionConfig;
pub use cohort_proto::election::{Role, Sid};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use crate::lifecycle::Tasks;

/// How to start a voter.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ElectionOptions {
    /// This server's sid (ZooKeeper's `myid`).
    pub sid: Sid,
    /// Every voter's election address, this one included (ZooKeeper's `server.N`).
    pub voters: BTreeMap<Sid, SocketAddr>,
    /// Each voter's ZAB (quorum) port, only used to write the config string ZooKeeper
    /// expects in notifications; the election port is used when missing.
    pub quorum_ports: BTreeMap<Sid, u16>,
    /// The application's last applied position (epoch << 32 | counter).
    pub zxid: i64,
    /// Election timing; `sid`, `voters` and `config` are filled in from the fields above.
    pub timing: ElectionConfig,
    /// Whether a connection that claims a voter's sid must come from that voter's
    /// configured IP address (default: yes). Without it, anyone who can reach the election
    /// port can speak for any voter. Turn it off only where voters reach each other
    /// through address translation.
    pub bind_peer_addresses: bool,
    /// Cluster-key mode: every byte of every election connection sealed with the ring's
    /// primary key (see [`Config::keyring`](crate::Config::keyring)), so only key holders
    /// can claim a sid or read a vote. Keyed voters talk only to voters with the same
    /// key, not to ZooKeeper servers (ZooKeeper's answer is quorum TLS). Default: `None`.
    pub keyring: Option<crate::Keyring>,
}

impl ElectionOptions {
    /// Voter `sid` of the ensemble `voters` (sid → election address), zxid 0, cohort's
    /// default timing.
    pub fn new(sid: Sid, voters: impl IntoIterator<Item = (Sid, SocketAddr)>) -> Self {
        let voters: BTreeMap<Sid, SocketAddr> = voters.into_iter().collect();
        Self {
            sid,
            timing: ElectionConfig::new(sid, voters.keys().copied()),
            voters,
            quorum_ports: BTreeMap::new(),
            zxid: 0,
            bind_peer_addresses: true,
            keyring: None,
        }
    }

    /// Refuses the timings the driver cannot run with: an interval of zero would resend
    /// or time out in a busy loop.
    fn check_timing(&self) -> Result<(), ElectionStartError> {
        let t = &self.timing;
        for (field, value) in [
            ("min_notification_interval", t.min_notification_interval),
            ("max_notification_interval", t.max_notification_interval),
            ("leader_heartbeat_interval", t.leader_heartbeat_interval),
            ("leader_silence_timeout", t.leader_silence_timeout),
        ] {
            if value.is_zero() {
                return Err(ElectionStartError::ZeroInterval(field));
            }
        }
        if t.min_notification_interval > t.max_notification_interval {
            return Err(ElectionStartError::NotificationIntervals {
                min: t.min_notification_interval,
                max: t.max_notification_interval,
            });
        }
        Ok(())
    }

    /// ZooKeeper's `QuorumVerifier.toString()` of this ensemble, sent in every notification.
    fn zookeeper_config(&self) -> String {
        let mut s = String::new();
        for (sid, addr) in &self.voters {
            let quorum = self
                .quorum_ports
                .get(sid)
                .copied()
                .unwrap_or_else(|| addr.port());
            s.push_str(&format!(
                "server.{sid}={}:{quorum}:{}:participant\n",
                addr.ip(),
                addr.port()
            ));
        }
        s.push_str("version=0");
        s
    }
}

/// A voter could not start. Nothing is left running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ElectionStartError {
    /// The voter's own sid is not among [`ElectionOptions::voters`], so its election
    /// address is unknown.
    #[error("sid {0} is not among the voters")]
    NotAVoter(Sid),
    /// An interval of [`ElectionOptions::timing`] that must not be zero is zero.
    #[error("election timing: {0} must not be zero")]
    ZeroInterval(&'static str),
    /// The first resend interval is longer than the longest.
    #[error(
        "election timing: min_notification_interval {min:?} exceeds max_notification_interval {max:?}"
    )]
    NotificationIntervals {
        /// The configured first resend interval.
        min: std::time::Duration,
        /// The configured longest resend interval.
        max: std::time::Duration,
    },
    /// The election address could not be bound.
    #[error("cannot listen for election connections on {addr}: {source}")]
    Bind {
        /// The voter's election address.
        addr: SocketAddr,
        /// The error.
        source: io::Error,
    },
}

/// The current outcome of the election.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leadership {
    /// This server's role.
    pub role: Role,
    /// The leader followed or led; `None` while LOOKING.
    pub leader: Option<Sid>,
    /// The election epoch (round) of the decision.
    pub election_epoch: i64,
}

/// What a voter's connection mesh refused or replaced since it started. The counters are
/// 64-bit and count connections, one at a time: they cannot wrap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ElectionStats {
    /// Connections whose header named a sid that is not a voter.
    pub unknown_sid: u64,
    /// Connections claiming a voter's sid from an address other than that voter's
    /// (see [`ElectionOptions::bind_peer_addresses`]).
    pub wrong_address: u64,
    /// Second connections for a sid already connected, refused because the held
    /// connection stayed alive.
    pub duplicate: u64,
    /// Second connections that replaced a held one which turned out dead (the peer
    /// restarted or lost its end).
    pub replaced: u64,
    /// With a key: what the seal refused (unsealed or forged connections); zero without.
    pub security: crate::SecurityStats,
}

enum Command {
    SetZxid(i64),
}

/// A running voter. Cheap to clone; every clone drives the same voter. It stops when
/// [`shutdown`](Self::shutdown) is called or the last clone is dropped (the crate's one
/// lifecycle, as for [`Node`](crate::Node)).
#[derive(Clone)]
pub struct Election {
    sid: Sid,
    local_addr: SocketAddr,
    commands: mpsc::UnboundedSender<Command>,
    leadership: watch::Receiver<Leadership>,
    driver: Arc<Running>,
    counters: Arc<driver::Counters>,
    security: Option<crate::Security>,
}

/// The driver task of a voter, stopped when the last clone goes.
struct Running {
    /// Tells the driver to stop; taken by the first `shutdown`.
    stop: Mutex<Option<oneshot::Sender<()>>>,
    task: Tasks,
}

impl std::fmt::Debug for Election {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Election")
            .field("sid", &self.sid)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Election {
    /// Binds this voter's election address and starts electing. Must be called inside a
    /// tokio runtime.
    pub async fn start(options: ElectionOptions) -> Result<Self, ElectionStartError> {
        let addr = *options
            .voters
            .get(&options.sid)
            .ok_or(ElectionStartError::NotAVoter(options.sid))?;
        options.check_timing()?;
        let bind_error = |source| ElectionStartError::Bind { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let mut cfg = options.timing.clone();
        cfg.sid = options.sid;
        cfg.voters = options.voters.keys().copied().collect();
        cfg.config = options.zookeeper_config().into();
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (leadership_tx, leadership) = watch::channel(Leadership {
            role: Role::Looking,
            leader: None,
            election_epoch: 0,
        });
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let counters = Arc::new(driver::Counters::default());
        let security = options.keyring.clone().map(crate::Security::new);
        let driver = driver::Driver::new(
            cfg,
            options.zxid,
            options.voters.clone(),
            local_addr,
            leadership_tx,
            driver::MeshOptions {
                bind_addresses: options.bind_peer_addresses,
                counters: counters.clone(),
                security: security.clone(),
            },
        );
        let task = tokio::spawn(driver.run(listener, command_rx, shutdown_rx));
        Ok(Self {
            sid: options.sid,
            local_addr,
            commands,
            leadership,
            driver: Arc::new(Running {
                stop: Mutex::new(Some(shutdown_tx)),
                task: Tasks::new(vec![task]),
            }),
            counters,
            security,
        })
    }

    /// This voter's sid.
    pub fn sid(&self) -> Sid {
        self.sid
    }

    /// The bound election address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// What the connection mesh refused or replaced so far.
    pub fn stats(&self) -> ElectionStats {
        let c = &self.counters;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        ElectionStats {
            unknown_sid: get(&c.unknown_sid),
            wrong_address: get(&c.wrong_address),
            duplicate: get(&c.duplicate),
            replaced: get(&c.replaced),
            security: self
                .security
                .as_ref()
                .map(crate::Security::stats)
                .unwrap_or_default(),
        }
    }

    /// Sets the application's last applied position, used by this voter's next vote.
    pub fn set_zxid(&self, zxid: i64) {
        let _ = self.commands.send(Command::SetZxid(zxid));
    }

    /// The current outcome.
    pub fn leadership(&self) -> Leadership {
        *self.leadership.borrow()
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.leadership().role
    }

    /// The current leader, `None` while LOOKING.
    pub fn leader(&self) -> Option<Sid> {
        self.leadership().leader
    }

    /// A receiver that sees every change of [`Leadership`] (the latest one when several
    /// come quickly).
    pub fn watch(&self) -> watch::Receiver<Leadership> {
        self.leadership.clone()
    }

    /// Stops electing, on every clone, and closes the election port and every
    /// connection; returns once the port is closed (it can be bound again). Calling it
    /// again does nothing. Dropping the last clone also stops the voter.
    pub async fn shutdown(&self) {
        let stop = self
            .driver
            .stop
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
        self.driver.task.join_all().await;
    }
}

cohort_proto::config_setters!(ElectionOptions {
    sid: Sid,
    voters: BTreeMap<Sid, SocketAddr>,
    quorum_ports: BTreeMap<Sid, u16>,
    zxid: i64,
    timing: ElectionConfig,
    bind_peer_addresses: bool,
    [into] keyring: Option<crate::Keyring>,
});
