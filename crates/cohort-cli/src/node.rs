//! `cohort node`: one node in the foreground.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use clap::Args;
use cohort::{Config, Event, MulticastConfig, Node, SendOptions};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::signal::unix::{SignalKind, signal};

use crate::CliResult;
use crate::output::Printer;
use crate::status;

/// Options of `cohort node`.
#[derive(Args, Debug, Clone)]
pub(crate) struct NodeArgs {
    /// Cluster name; members of other domains are ignored.
    #[arg(long, default_value = "")]
    pub(crate) domain: String,
    /// Address to receive on and advertise.
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) bind: IpAddr,
    /// First TCP port to try (the next free one up to +100 is taken); 0 = any.
    #[arg(long, default_value_t = 4000)]
    pub(crate) port: u16,
    /// Multicast group.
    #[arg(long, default_value = "228.0.0.4")]
    pub(crate) mcast_group: Ipv4Addr,
    /// Multicast port.
    #[arg(long, default_value_t = 45564)]
    pub(crate) mcast_port: u16,
    /// Interface (IPv4 address) for multicast; defaults to the bind address.
    #[arg(long)]
    pub(crate) mcast_interface: Option<Ipv4Addr>,
    /// Multicast TTL.
    #[arg(long, default_value_t = 1)]
    pub(crate) ttl: u32,
    /// Application metadata published with the member.
    #[arg(long, default_value = "")]
    pub(crate) payload: String,
    /// Heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub(crate) heartbeat_ms: u64,
    /// Drop a silent member after this many milliseconds.
    #[arg(long, default_value_t = 3000)]
    pub(crate) drop_time_ms: u64,
    /// ACK timeout in milliseconds.
    #[arg(long, default_value_t = 3000)]
    pub(crate) ack_timeout_ms: u64,
    /// Accept members of every domain (Tomcat's behaviour).
    #[arg(long)]
    pub(crate) no_domain_filter: bool,
    /// Ask receivers to ACK only after their application handled the message.
    #[arg(long)]
    pub(crate) sync_ack: bool,
    /// Reject (failure-ACK) received messages whose text equals this.
    #[arg(long)]
    pub(crate) fail_on: Option<String>,
    /// Where to serve the node's status over HTTP: `/status` (JSON, read by `cohort
    /// members`), `/metrics` (Prometheus) and `/` (a page); port 0 picks a free port
    /// (printed at start).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub(crate) status: std::net::SocketAddr,
    /// Milliseconds without a heartbeat before a member is suspected (the group removes it
    /// once witnesses agree).
    #[arg(long, default_value_t = 1700)]
    pub(crate) suspect_ms: u64,
    /// Check a suspect's host (a connection attempt to its address): a host that refuses
    /// proves the process dead, one that does not answer counts as a witness.
    #[arg(long)]
    pub(crate) host_check: bool,
    /// Find members without multicast: unicast heartbeats to the addresses named by
    /// --initial-hosts, --router and --dns.
    #[arg(long)]
    pub(crate) no_multicast: bool,
    /// Static initial hosts, comma separated: host:port or host:first-last.
    #[arg(long, value_delimiter = ',')]
    pub(crate) initial_hosts: Vec<cohort::HostPorts>,
    /// A gossip router (`cohort router`) to register with; repeat for several.
    #[arg(long)]
    pub(crate) router: Vec<std::net::SocketAddr>,
    /// A DNS name whose A records (with --dns-ports) or SRV records (--dns-srv) list the
    /// members.
    #[arg(long)]
    pub(crate) dns: Option<String>,
    /// The DNS name has SRV records (host and port) rather than A records.
    #[arg(long)]
    pub(crate) dns_srv: bool,
    /// Ports to try on each address of an A record: port or first-last.
    #[arg(long, default_value = "4000-4010")]
    pub(crate) dns_ports: String,
    /// The DNS server to ask (default: the system's).
    #[arg(long)]
    pub(crate) dns_server: Option<std::net::SocketAddr>,
    /// Cluster-key mode: a file of keys, one per line as 64 hexadecimal digits (`cohort
    /// keys generate`), the first one used to seal what this node sends, all accepted.
    /// Every cohort datagram and connection is then sealed, and unsealed traffic refused.
    #[arg(long)]
    pub(crate) key_file: Option<std::path::PathBuf>,
    /// Print one JSON object per line.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Reads a key file (see `--key-file`).
pub(crate) fn read_key_file(path: &std::path::Path) -> Result<cohort::Keyring, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read key file {}: {e}", path.display()))?;
    cohort::Keyring::from_key_file(&text).map_err(|e| format!("key file {}: {e}", path.display()))
}

impl NodeArgs {
    fn discovery(&self) -> Result<cohort::DiscoveryConfig, String> {
        let dns = match &self.dns {
            None => None,
            Some(name) => {
                let record = if self.dns_srv {
                    cohort::DnsRecord::Srv
                } else {
                    let range: cohort::HostPorts = format!("dns:{}", self.dns_ports)
                        .parse()
                        .map_err(|e: cohort::ParseHostPortsError| e.to_string())?;
                    cohort::DnsRecord::A {
                        first: range.first,
                        last: range.last,
                    }
                };
                Some(cohort::DnsDiscovery {
                    name: name.clone(),
                    record,
                    server: self.dns_server,
                    refresh: Duration::from_secs(5),
                })
            }
        };
        Ok(cohort::DiscoveryConfig::default()
            .multicast(!self.no_multicast)
            .initial_hosts(self.initial_hosts.clone())
            .routers(self.router.clone())
            .dns(dns))
    }

    pub(crate) fn config(&self) -> Result<Config, String> {
        Ok(Config::default()
            .domain(self.domain.clone())
            .payload(self.payload.clone())
            .bind(self.bind)
            .port(self.port)
            .multicast(
                MulticastConfig::default()
                    .group(self.mcast_group)
                    .port(self.mcast_port)
                    .interface(self.mcast_interface)
                    .ttl(self.ttl),
            )
            .heartbeat_interval(Duration::from_millis(self.heartbeat_ms))
            .drop_time(Duration::from_millis(self.drop_time_ms))
            .ack_timeout(Duration::from_millis(self.ack_timeout_ms))
            .domain_filter(!self.no_domain_filter)
            .group(
                cohort::GroupConfig::default()
                    .suspect_after(Duration::from_millis(self.suspect_ms))
                    .host_check(self.host_check),
            )
            .discovery(self.discovery()?)
            .keyring(self.key_file.as_deref().map(read_key_file).transpose()?))
    }
}

/// Reads the key file again and makes its keys the node's keyring (its first key primary).
/// Returns the key ids held now.
fn reload_keys(
    node: &Node,
    key_file: Option<&std::path::Path>,
) -> Result<Vec<cohort::KeyId>, String> {
    let (Some(path), Some(security)) = (key_file, node.security()) else {
        return Err("the node runs without --key-file".into());
    };
    let ring = read_key_file(path)?;
    security.set_keyring(ring);
    Ok(security.list())
}

pub(crate) async fn run(args: NodeArgs) -> CliResult {
    let printer = Printer { json: args.json };
    // Catch SIGTERM before announcing "started", so a signal sent right after it is a
    // graceful leave and not the default (immediate) death.
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    // SIGHUP reloads the key file (a key rotation step: `cohort keys install|use|remove`).
    let mut sighup = signal(SignalKind::hangup())?;
    let (node, mut events) = Node::start(args.config()?).await?;
    printer.started(node.local_member());
    let status_state = status::StatusState::new(node.clone());
    let status = status::serve(status_state.clone(), args.status).await?;
    printer.status_endpoint(status);
    let options = if args.sync_ack {
        SendOptions::USE_ACK | SendOptions::SYNCHRONIZED_ACK
    } else {
        SendOptions::USE_ACK
    };
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let mut sends = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(Event::MemberAdded(m)) => printer.member_added(&m),
                Some(Event::MemberDisappeared { member, reason }) => printer.member_disappeared(&member, reason),
                Some(Event::ViewChanged(view)) => {
                    status_state.record_view(&view);
                    printer.view(&view, node.id());
                }
                Some(Event::Rejoined { old, new }) => printer.rejoined(old, new),
                Some(Event::Message(msg)) => {
                    printer.message(&msg);
                    if args.fail_on.as_deref().is_some_and(|f| f.as_bytes() == msg.data.as_ref()) {
                        msg.reject();
                    } else {
                        msg.accept();
                    }
                }
                // Kinds of event this CLI does not know yet.
                Some(_) => {}
                None => break,
            },
            line = lines.next_line(), if stdin_open => match line {
                Ok(Some(line)) => {
                    let node = node.clone();
                    sends.spawn(async move {
                        let result = node.send_to_all(line.clone(), options).await;
                        printer.send_result(&line, &result);
                    });
                }
                // End of input: keep running until a signal (a node is a service).
                Ok(None) | Err(_) => stdin_open = false,
            },
            Some(_) = sends.join_next(), if !sends.is_empty() => {}
            _ = sighup.recv() => printer.keys(&reload_keys(&node, args.key_file.as_deref())),
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }
    node.shutdown().await;
    printer.stopped();
    Ok(())
}
