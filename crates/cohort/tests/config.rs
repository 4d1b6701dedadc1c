//! The configs are `#[non_exhaustive]` (a new setting is not a breaking change), so users
//! outside the crate build them from `Default` with chained setters. Each setter sets its
//! own field and leaves every other one as it was.

use std::net::Ipv4Addr;
use std::time::Duration;

use cohort::election::ElectionOptions;
use cohort::{Config, DiscoveryConfig, GroupConfig, MulticastConfig};

#[test]
fn setters_set_their_field_and_nothing_else() {
    let built = Config::default()
        .domain("orders")
        .port(0)
        .retries(3)
        .multicast(MulticastConfig::default().interface(Ipv4Addr::LOCALHOST))
        .group(GroupConfig::default().witnesses(3))
        .discovery(DiscoveryConfig::default().multicast(false));
    let mut assigned = Config::default();
    assigned.domain = "orders".into();
    assigned.port = 0;
    assigned.retries = 3;
    assigned.multicast.interface = Some(Ipv4Addr::LOCALHOST);
    assigned.group.witnesses = 3;
    assigned.discovery.multicast = false;
    // Config holds a keyring (no PartialEq); its Debug form lists every field.
    assert_eq!(format!("{built:?}"), format!("{assigned:?}"));
    assert_ne!(format!("{built:?}"), format!("{:?}", Config::default()));
    assert_eq!(built.multicast, assigned.multicast);
    assert_eq!(built.group, assigned.group);
    assert_eq!(built.discovery, assigned.discovery);
}

#[test]
fn election_options_take_their_timing_through_setters() {
    let addr = "127.0.0.1:23999".parse().unwrap();
    let options = ElectionOptions::new(1, [(1, addr)]).zxid(7).timing(
        ElectionOptions::new(1, [(1, addr)])
            .timing
            .leader_silence_timeout(Duration::from_secs(9)),
    );
    assert_eq!(options.zxid, 7);
    assert_eq!(
        options.timing.leader_silence_timeout,
        Duration::from_secs(9)
    );
    assert_eq!(options.voters.get(&1), Some(&addr));
}
