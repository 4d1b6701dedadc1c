//! `cohort elect`: one voter of a leader election, printing its role changes.
//!
//! The ensemble is given like ZooKeeper's `server.N` lines, one `--voter` per server:
//! `1=127.0.0.1:3888` (election port only) or `1=127.0.0.1:2888:3888` (quorum and election
//! port, as ZooKeeper writes them; the quorum port only goes into the config string sent
//! with every notification). A line `zxid <n>` on stdin sets the voter's last applied
//! position for its next vote. With `--json`, every role change is a line
//! `{"event":"role","sid","role","leader","election_epoch","t_ms","unix_us"}` (`t_ms`
//! since the voter started, `unix_us` the wall clock).

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use clap::Args;
use cohort::election::{Election, ElectionOptions, Leadership, Role, Sid};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::signal::unix::{SignalKind, signal};

use crate::CliResult;

/// One server of the ensemble, as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VoterSpec {
    sid: Sid,
    election: SocketAddr,
    quorum_port: Option<u16>,
}

/// Parses `sid=host:election` or `sid=host:quorum:election`.
fn parse_voter(s: &str) -> Result<VoterSpec, String> {
    let (sid, rest) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected sid=host:port or sid=host:quorum:election"))?;
    let sid: Sid = sid
        .trim()
        .parse()
        .map_err(|_| format!("`{sid}` is not a server id (an integer)"))?;
    let parts: Vec<&str> = rest.rsplitn(3, ':').collect();
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("`{p}` is not a port in `{s}`"))
    };
    let (host, quorum_port, election_port) = match parts.as_slice() {
        [election, host] => (*host, None, port(election)?),
        [election, quorum, host] => (*host, Some(port(quorum)?), port(election)?),
        _ => {
            return Err(format!(
                "`{s}`: expected sid=host:port or sid=host:quorum:election"
            ));
        }
    };
    let election = (host, election_port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
        .next()
        .ok_or_else(|| format!("`{host}` resolves to no address"))?;
    Ok(VoterSpec {
        sid,
        election,
        quorum_port,
    })
}

/// Options of `cohort elect`.
#[derive(Args, Debug, Clone)]
pub(crate) struct ElectArgs {
    /// This voter's server id (ZooKeeper's `myid`); must be one of the `--voter`s.
    #[arg(long)]
    pub(crate) id: Sid,
    /// A voter of the ensemble: `sid=host:electionPort` or `sid=host:quorumPort:electionPort`.
    /// Repeat it, or separate voters by commas.
    #[arg(long = "voter", required = true, value_delimiter = ',', value_parser = parse_voter)]
    pub(crate) voters: Vec<VoterSpec>,
    /// The application's last applied position (epoch << 32 | counter) at start.
    #[arg(long, default_value_t = 0)]
    pub(crate) zxid: i64,
    /// How long a majority must stand before deciding (ZooKeeper: 200 ms).
    #[arg(long, value_name = "MS")]
    pub(crate) finalize_wait_ms: Option<u64>,
    /// How often a leader tells its followers it is alive.
    #[arg(long, value_name = "MS")]
    pub(crate) heartbeat_ms: Option<u64>,
    /// Silence after which a follower gives up on its leader (and a leader without a
    /// majority of followers steps down).
    #[arg(long, value_name = "MS")]
    pub(crate) leader_timeout_ms: Option<u64>,
    /// Cluster-key mode: a key file (`cohort keys generate`); every election connection
    /// is then sealed and unsealed ones refused. Keyed voters elect only with voters that
    /// hold the key (not with ZooKeeper servers).
    #[arg(long)]
    pub(crate) key_file: Option<std::path::PathBuf>,
    /// Print one JSON object per line instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

impl ElectArgs {
    fn options(&self) -> Result<ElectionOptions, String> {
        let mut seen = BTreeMap::new();
        for v in &self.voters {
            if seen.insert(v.sid, v.election).is_some() {
                return Err(format!("voter {} is given twice", v.sid));
            }
        }
        if !seen.contains_key(&self.id) {
            return Err(format!(
                "--id {} is not among the voters ({})",
                self.id,
                seen.keys()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let mut options = ElectionOptions::new(self.id, seen);
        options.zxid = self.zxid;
        options.quorum_ports = self
            .voters
            .iter()
            .filter_map(|v| v.quorum_port.map(|p| (v.sid, p)))
            .collect();
        let ms = Duration::from_millis;
        if let Some(v) = self.finalize_wait_ms {
            options.timing.finalize_wait = ms(v);
        }
        if let Some(v) = self.heartbeat_ms {
            options.timing.leader_heartbeat_interval = ms(v);
        }
        if let Some(v) = self.leader_timeout_ms {
            options.timing.leader_silence_timeout = ms(v);
        }
        options.keyring = self
            .key_file
            .as_deref()
            .map(crate::node::read_key_file)
            .transpose()?;
        Ok(options)
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Looking => "looking",
        Role::Following => "following",
        Role::Leading => "leading",
        Role::Observing => "observing",
    }
}

struct Printer {
    json: bool,
    sid: Sid,
    start: Instant,
}

impl Printer {
    fn started(&self, addr: SocketAddr, zxid: i64) {
        if self.json {
            println!(
                "{}",
                json!({"event": "started", "sid": self.sid, "addr": addr.to_string(), "zxid": zxid})
            );
        } else {
            println!("voter {} electing on {addr} (zxid {zxid:#x})", self.sid);
        }
    }

    fn role(&self, l: &Leadership) {
        let t_ms = self.start.elapsed().as_secs_f64() * 1e3;
        if self.json {
            println!(
                "{}",
                json!({
                    "event": "role",
                    "sid": self.sid,
                    "role": role_name(l.role),
                    "leader": l.leader,
                    "election_epoch": l.election_epoch,
                    "t_ms": (t_ms * 1000.0).round() / 1000.0,
                    // Wall clock, comparable across processes (for perf-election).
                    "unix_us": unix_us(),
                })
            );
        } else {
            match l.leader {
                Some(leader) => println!(
                    "[{t_ms:9.1} ms] {} (leader {leader}, election epoch {})",
                    role_name(l.role).to_uppercase(),
                    l.election_epoch
                ),
                None => println!(
                    "[{t_ms:9.1} ms] LOOKING (election epoch {})",
                    l.election_epoch
                ),
            }
        }
    }

    fn zxid(&self, zxid: i64) {
        if self.json {
            println!(
                "{}",
                json!({"event": "zxid", "sid": self.sid, "zxid": zxid})
            );
        } else {
            println!("zxid set to {zxid:#x}");
        }
    }

    fn stopped(&self) {
        if self.json {
            println!("{}", json!({"event": "stopped", "sid": self.sid}));
        } else {
            println!("voter {} stopped", self.sid);
        }
    }
}

/// Microseconds since the Unix epoch.
fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Parses a stdin command: `zxid <n>` (decimal or 0x-hex).
fn parse_command(line: &str) -> Result<Option<i64>, String> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(None);
    }
    let Some(arg) = line.strip_prefix("zxid") else {
        return Err(format!("unknown command `{line}` (expected `zxid <n>`)"));
    };
    let arg = arg.trim();
    let parsed = match arg.strip_prefix("0x") {
        Some(hex) => i64::from_str_radix(hex, 16),
        None => arg.parse(),
    };
    parsed
        .map(Some)
        .map_err(|_| format!("`{arg}` is not a zxid"))
}

pub(crate) async fn run(args: ElectArgs) -> CliResult {
    let options = args.options()?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let election = Election::start(options).await?;
    let printer = Printer {
        json: args.json,
        sid: args.id,
        start: Instant::now(),
    };
    printer.started(election.local_addr(), args.zxid);
    let mut changes = election.watch();
    let mut last = *changes.borrow_and_update();
    // Before the first round the state is a placeholder (LOOKING, epoch 0): not news.
    if last.election_epoch != 0 {
        printer.role(&last);
    }
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    loop {
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    break;
                }
                let now = *changes.borrow_and_update();
                if now != last {
                    printer.role(&now);
                    last = now;
                }
            }
            line = stdin.next_line(), if stdin_open => match line {
                Ok(Some(line)) => match parse_command(&line) {
                    Ok(Some(zxid)) => {
                        election.set_zxid(zxid);
                        printer.zxid(zxid);
                    }
                    Ok(None) => {}
                    Err(e) => eprintln!("cohort elect: {e}"),
                },
                _ => stdin_open = false,
            },
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        }
    }
    election.shutdown().await;
    printer.stopped();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voters_parse_in_both_forms() {
        assert_eq!(
            parse_voter("1=127.0.0.1:3888").unwrap(),
            VoterSpec {
                sid: 1,
                election: "127.0.0.1:3888".parse().unwrap(),
                quorum_port: None
            }
        );
        assert_eq!(
            parse_voter("12=127.0.0.1:2888:3888").unwrap(),
            VoterSpec {
                sid: 12,
                election: "127.0.0.1:3888".parse().unwrap(),
                quorum_port: Some(2888)
            }
        );
        for bad in [
            "127.0.0.1:3888",
            "x=127.0.0.1:1",
            "1=127.0.0.1",
            "1=h:1:2:3",
            "1=127.0.0.1:99999",
        ] {
            assert!(parse_voter(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn own_id_must_be_a_voter() {
        let args = ElectArgs {
            id: 4,
            voters: vec![parse_voter("1=127.0.0.1:1").unwrap()],
            zxid: 0,
            finalize_wait_ms: None,
            heartbeat_ms: None,
            leader_timeout_ms: None,
            key_file: None,
            json: false,
        };
        assert!(args.options().unwrap_err().contains("not among the voters"));
    }

    #[test]
    fn commands_parse() {
        assert_eq!(parse_command("zxid 5"), Ok(Some(5)));
        assert_eq!(parse_command("zxid 0x100000002"), Ok(Some(0x1_0000_0002)));
        assert_eq!(parse_command("  "), Ok(None));
        assert!(parse_command("zxid five").is_err());
        assert!(parse_command("leave").is_err());
    }
}
