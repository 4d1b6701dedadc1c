//! DNS discovery against a real DNS server: Debian's dnsmasq in one namespace host serves
//! the names, `cohort node --no-multicast --dns ...` processes on three other hosts find
//! each other through it and form one group. A records (each address with a port) and SRV
//! records (host and port), as a Kubernetes headless service publishes them. Needs root,
//! iproute2 and dnsmasq.

mod support;

use std::time::Duration;

use support::cohort::{Node, NodeOpts};
use support::{NetLab, OrPanic, secs};

const DNS_HOST: usize = 0;
const MEMBERS: [usize; 3] = [1, 2, 3];

/// Starts dnsmasq on `DNS_HOST` serving `members.cohort.test` (A, one per member host) and
/// `_cohort._tcp.cohort.test` (SRV, to `h<i>.cohort.test` port 4000).
fn dns_server(lab: &NetLab) -> support::Proc {
    let addr = lab.host_addr(DNS_HOST).to_string();
    let mut args = vec![
        "--no-daemon".to_owned(),
        "--no-resolv".to_owned(),
        "--no-hosts".to_owned(),
        format!("--listen-address={addr}"),
        "--bind-interfaces".to_owned(),
        "--port=53".to_owned(),
        "--user=root".to_owned(),
        "--pid-file=".to_owned(),
        "--log-queries".to_owned(),
    ];
    for h in MEMBERS {
        let ip = lab.host_addr(h);
        args.push(format!("--host-record=members.cohort.test,{ip}"));
        args.push(format!("--host-record=h{h}.cohort.test,{ip}"));
        args.push(format!(
            "--srv-host=_cohort._tcp.cohort.test,h{h}.cohort.test,4000"
        ));
    }
    let dns = lab.spawn(DNS_HOST, "dnsmasq", "dnsmasq", args);
    // dnsmasq logs to syslog/stderr, not stdout: give it a moment, then check it runs.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        dns.try_exit_status().is_none(),
        "dnsmasq exited: {}",
        dns.stderr_tail(20)
    );
    dns
}

fn run(extra: &[&str]) {
    let lab = NetLab::new(4).unwrap_or_else(|e| panic!("cannot build the network lab: {e}"));
    let _dns = dns_server(&lab);
    let server = format!("{}:53", lab.host_addr(DNS_HOST));
    let mut args: Vec<String> = vec!["--no-multicast".into(), "--dns-server".into(), server];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let opts = NodeOpts {
        domain: Some("dns".to_owned()),
        port: Some(4000),
        extra: args,
        ..NodeOpts::default()
    };
    let nodes: Vec<Node> = MEMBERS
        .iter()
        .map(|&h| Node::start(&lab, h, &format!("node{h}"), &opts))
        .collect();
    // The three may first form groups of their own and merge (ids change then), so wait
    // for any view of three.
    for n in &nodes {
        n.wait_for(secs(15), |v| {
            v["event"] == "view" && v["members"].as_array().is_some_and(|m| m.len() == 3)
        })
        .or_panic(&format!("{} never saw a group of three via DNS", n.name()));
    }
}

#[test]
fn a_records_name_the_members() {
    run(&["--dns", "members.cohort.test", "--dns-ports", "4000"]);
}

#[test]
fn srv_records_name_the_members() {
    run(&["--dns", "_cohort._tcp.cohort.test", "--dns-srv"]);
}
