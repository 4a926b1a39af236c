//! Destinations found by DNS: how an address says what to look up, and how the targets DNS
//! gives stand in for their destination in a plan (`Router::with_targets`, `Router::plan`):
//! SRV priority order, shares by SRV weight, each target's own health, one target per
//! destination in a parallel tier, and a name that resolved to nothing being down.

// Test support: a failed assumption here is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{assert_one_error, compile, names};
use routing_rules::{Call, DestId, Lookup, Resolved, RouteId, Router};
use std::collections::HashMap;
use std::net::SocketAddr;

const CALLS: u64 = 100_000;

fn all_up(_: DestId) -> bool {
    true
}

fn id(router: &Router, name: &str) -> DestId {
    router.destination_by_name(name).expect(name)
}

fn srv(addr: &str, priority: u16, weight: u16) -> Resolved {
    Resolved {
        addr: addr.parse::<SocketAddr>().unwrap(),
        priority,
        weight,
        host: format!("sbc-{priority}-{weight}.cloud.test"),
    }
}

/// A destination `cloud` found by DNS, a `backup` at an address, and a route `r` (`over`: its
/// `destinations` or `tiers` line).
fn rules(over: &str, extra: &str) -> Router {
    compile(&format!(
        "[[destination]]\nname = \"cloud\"\naddress = \"cloud.test\"\n\
         [[destination]]\nname = \"backup\"\naddress = \"127.0.0.9:5060\"\n{extra}\
         [[route]]\nname = \"r\"\n{over}\n"
    ))
}

fn order(router: &Router, entropy: u64, is_up: &dyn Fn(DestId) -> bool) -> Vec<String> {
    let call = Call {
        entropy,
        ..Call::default()
    };
    names(router, router.plan(RouteId(0), &call, is_up).destinations())
}

#[test]
fn a_name_alone_is_looked_up_as_a_sip_service_and_a_name_with_a_port_by_its_addresses() {
    let router = compile(
        "[[destination]]\nname = \"svc\"\naddress = \"cloud.test\"\n\
         [[destination]]\nname = \"svc-tls\"\naddress = \"cloud.test\"\ntransport = \"tls\"\n\
         [[destination]]\nname = \"named\"\naddress = \"sbc.cloud.test:5080\"\n\
         [[destination]]\nname = \"ip\"\naddress = \"10.0.0.1:5060\"\n\
         [[route]]\nname = \"r\"\ndestinations = [\"svc\", \"svc-tls\", \"named\", \"ip\"]\n",
    );
    let d = |n: &str| router.destination(id(&router, n));
    assert_eq!((d("svc").lookup, d("svc").port), (Lookup::Service, 5060));
    assert_eq!(
        (d("svc-tls").lookup, d("svc-tls").port),
        (Lookup::Service, 5061)
    );
    assert_eq!(
        (d("named").lookup, d("named").port),
        (Lookup::Address, 5080)
    );
    assert_eq!(d("ip").lookup, Lookup::Literal);
    let explained = router
        .explain(&Call::default(), &all_up)
        .expect("the route matches")
        .to_string();
    for line in [
        "svc cloud.test/udp (DNS NAPTR/SRV)",
        "svc-tls cloud.test/tls (DNS NAPTR/SRV)",
        "named sbc.cloud.test:5080/udp (DNS A/AAAA)",
        "ip 10.0.0.1:5060/udp",
    ] {
        assert!(explained.contains(line), "{line:?} in:\n{explained}");
    }
    // An IP address still needs its port: there is nothing to look the port up in.
    assert_one_error(
        "[[destination]]\nname = \"ip\"\naddress = \"10.0.0.1\"\n\
         [[route]]\nname = \"r\"\ndestinations = [\"ip\"]\n",
        "destination[0].address",
        "has no port",
    );
}

#[test]
fn targets_stand_in_for_their_destination_in_srv_priority_order_and_keep_its_settings() {
    let base = rules(r#"destinations = ["cloud", "backup"]"#, "");
    let router = base.with_targets(&[(
        id(&base, "cloud"),
        vec![srv("127.0.0.3:5070", 20, 1), srv("127.0.0.2:5060", 10, 1)],
    )]);
    assert_eq!(
        order(&router, 7, &all_up),
        ["cloud@127.0.0.2:5060", "cloud@127.0.0.3:5070", "backup"]
    );
    let first = router.destination(id(&router, "cloud@127.0.0.2:5060"));
    assert_eq!(
        (first.host.as_str(), first.port, first.lookup),
        ("127.0.0.2", 5060, Lookup::Literal)
    );
    let cloud = id(&router, "cloud");
    assert_eq!(
        router.target_of(id(&router, "cloud@127.0.0.2:5060")),
        Some(cloud)
    );
    assert_eq!(router.targets(cloud).map(<[_]>::len), Some(2));
    assert!(
        first.health.probe && !router.destination(cloud).health.probe,
        "targets are probed, the name they stand for is not"
    );
    // The configured destinations keep their ids; targets come after them.
    assert_eq!(id(&router, "backup"), id(&base, "backup"));
    assert_eq!(router.configured_destinations(), 2);
}

#[test]
fn calls_are_shared_by_srv_weight_within_a_priority() {
    let base = rules(r#"destinations = ["cloud"]"#, "");
    let router = base.with_targets(&[(
        id(&base, "cloud"),
        vec![
            srv("127.0.0.2:5060", 10, 3),
            srv("127.0.0.3:5060", 10, 1),
            srv("127.0.0.4:5060", 20, 5),
        ],
    )]);
    let mut first: HashMap<String, u64> = HashMap::new();
    for entropy in 0..CALLS {
        let plan = order(&router, entropy, &all_up);
        assert_eq!(plan.len(), 3, "every target, once: {plan:?}");
        assert_eq!(plan[2], "cloud@127.0.0.4:5060", "the lower priority last");
        *first.entry(plan[0].clone()).or_default() += 1;
    }
    let share = |n: &str| first.get(n).copied().unwrap_or(0) as f64 / CALLS as f64;
    assert!(
        (share("cloud@127.0.0.2:5060") - 0.75).abs() < 0.01,
        "{first:?}"
    );
    assert!(
        (share("cloud@127.0.0.3:5060") - 0.25).abs() < 0.01,
        "{first:?}"
    );
}

#[test]
fn a_down_target_is_skipped_and_a_name_with_no_target_up_is_down() {
    let base = rules(r#"destinations = ["cloud", "backup"]"#, "");
    let router = base.with_targets(&[(
        id(&base, "cloud"),
        vec![srv("127.0.0.2:5060", 10, 1), srv("127.0.0.3:5060", 20, 1)],
    )]);
    let a = id(&router, "cloud@127.0.0.2:5060");
    let b = id(&router, "cloud@127.0.0.3:5060");
    assert_eq!(
        order(&router, 1, &|d| d != a),
        ["cloud@127.0.0.3:5060", "backup"]
    );
    assert_eq!(order(&router, 1, &|d| d != a && d != b), ["backup"]);
    // Resolved to nothing (NXDOMAIN, or SRV target "."): down, the next tier takes the call.
    let nothing = base.with_targets(&[]);
    assert_eq!(nothing.targets(id(&nothing, "cloud")), Some(&[][..]));
    assert_eq!(order(&nothing, 1, &all_up), ["backup"]);
}

#[test]
fn a_parallel_tier_forks_to_one_target_of_each_destination() {
    let base = rules(
        r#"tiers = ["both"]"#,
        "[[group]]\nname = \"both\"\nstrategy = \"parallel\"\nmembers = [\"cloud\", \"backup\"]\n",
    );
    let router = base.with_targets(&[(
        id(&base, "cloud"),
        vec![srv("127.0.0.2:5060", 10, 1), srv("127.0.0.3:5060", 20, 1)],
    )]);
    let call = Call::default();
    let plan = router.plan(RouteId(0), &call, &all_up);
    assert_eq!(plan.tiers.len(), 1);
    assert!(plan.tiers[0].parallel);
    assert_eq!(
        names(&router, plan.tiers[0].members.iter().copied()),
        ["cloud@127.0.0.2:5060", "backup"]
    );
    let a = id(&router, "cloud@127.0.0.2:5060");
    let plan = router.plan(RouteId(0), &call, &|d| d != a);
    assert_eq!(
        names(&router, plan.tiers[0].members.iter().copied()),
        ["cloud@127.0.0.3:5060", "backup"]
    );
}

#[test]
fn resolving_again_replaces_the_targets_and_explain_shows_the_name_as_its_targets_are() {
    let base = rules(r#"destinations = ["cloud", "backup"]"#, "");
    let cloud = id(&base, "cloud");
    let first = base.with_targets(&[(cloud, vec![srv("127.0.0.2:5060", 0, 1)])]);
    let again = first.with_targets(&[(cloud, vec![srv("127.0.0.5:5060", 0, 1)])]);
    assert_eq!(again.rules.destinations.len(), 3);
    assert!(again.destination_by_name("cloud@127.0.0.2:5060").is_none());
    assert_eq!(
        order(&again, 3, &all_up),
        ["cloud@127.0.0.5:5060", "backup"]
    );
    let target = id(&again, "cloud@127.0.0.5:5060");
    let call = Call::default();
    let explained = again
        .explain(&call, &|d| d != target)
        .expect("the route matches");
    let text = explained.to_string();
    assert!(
        text.contains("cloud") && text.contains("down"),
        "a name whose targets are all down is shown down:\n{text}"
    );
}
