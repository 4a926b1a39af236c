//! The RFC 3263 lookups against a DNS server of the test's own on loopback
//! (`pointsman_sim::DnsServer`), and the bookkeeping of when names are asked again, with time
//! passed in.

use super::*;
use pointsman_sim::{DnsServer, Rec};
use routing_rules::spec::DestinationSpec;
use std::net::Ipv4Addr;

fn router(destinations: &[(&str, &str, &str)]) -> Router {
    let specs: Vec<DestinationSpec> = destinations
        .iter()
        .map(|(name, address, transport)| {
            toml::from_str(&format!(
                "name = \"{name}\"\naddress = \"{address}\"\ntransport = \"{transport}\"\n"
            ))
            .expect("destination")
        })
        .collect();
    let names: Vec<String> = destinations
        .iter()
        .map(|(n, _, _)| format!("{n:?}"))
        .collect();
    let route: routing_rules::spec::RouteSpec = toml::from_str(&format!(
        "name = \"r\"\ndestinations = [{}]\n",
        names.join(", ")
    ))
    .expect("route");
    Router::compile(&specs, &[], &[route]).expect("rules")
}

fn dest(transport: &str, address: &str) -> Destination {
    router(&[("d", address, transport)]).rules.destinations[0].clone()
}

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

async fn server_and_resolver() -> (DnsServer, Resolver) {
    let server = DnsServer::start(ip(1)).await.expect("dns server");
    let resolver = Resolver::new(&DnsConfig {
        servers: vec![server.addr()],
        timeout: Duration::from_millis(500),
        ..DnsConfig::default()
    })
    .expect("resolver");
    (server, resolver)
}

fn srv(priority: u16, weight: u16, port: u16, target: &str) -> Rec {
    Rec::Srv {
        priority,
        weight,
        port,
        target: target.into(),
    }
}

fn addrs(answer: &Answer) -> Vec<(SocketAddr, u16, u16)> {
    let mut v: Vec<_> = answer
        .targets
        .iter()
        .map(|t| (t.addr, t.priority, t.weight))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_name_alone_takes_its_srv_targets_with_their_priorities_weights_and_ports() {
    let (dns, resolver) = server_and_resolver().await;
    dns.set(
        "_sip._udp.cloud.test",
        300,
        vec![
            srv(10, 3, 5070, "a.cloud.test"),
            srv(20, 1, 5080, "b.cloud.test"),
        ],
    );
    dns.set("a.cloud.test", 60, vec![Rec::Ip(ip(2)), Rec::Ip(ip(3))]);
    dns.set("b.cloud.test", 600, vec![Rec::Ip(ip(4))]);
    let answer = resolver
        .lookup(&dest("udp", "cloud.test"))
        .await
        .expect("answer");
    assert_eq!(
        addrs(&answer),
        [
            (SocketAddr::new(ip(2), 5070), 10, 3),
            (SocketAddr::new(ip(3), 5070), 10, 3),
            (SocketAddr::new(ip(4), 5080), 20, 1),
        ]
    );
    assert_eq!(answer.targets[0].host, "a.cloud.test");
    // The shortest TTL of what was used: a.cloud.test's 60 s.
    assert!(
        answer.ttl <= Duration::from_secs(61) && answer.ttl > Duration::from_secs(55),
        "{:?}",
        answer.ttl
    );
}

#[tokio::test]
async fn naptr_names_the_srv_record_of_the_destinations_transport() {
    let (dns, resolver) = server_and_resolver().await;
    let naptr = |order, services: &str, replacement: &str| Rec::Naptr {
        order,
        preference: 10,
        flags: "S".into(),
        services: services.into(),
        replacement: replacement.into(),
    };
    dns.set(
        "cloud.test",
        300,
        vec![
            naptr(10, "SIPS+D2T", "_sips._tcp.tls.cloud.test"),
            naptr(20, "SIP+D2U", "_sip._udp.udp.cloud.test"),
        ],
    );
    dns.set(
        "_sips._tcp.tls.cloud.test",
        300,
        vec![srv(0, 1, 5061, "sbc.cloud.test")],
    );
    dns.set(
        "_sip._udp.udp.cloud.test",
        300,
        vec![srv(0, 1, 5060, "sbc.cloud.test")],
    );
    dns.set("sbc.cloud.test", 300, vec![Rec::Ip(ip(5))]);
    let udp = resolver.lookup(&dest("udp", "cloud.test")).await.unwrap();
    assert_eq!(addrs(&udp), [(SocketAddr::new(ip(5), 5060), 0, 1)]);
    let tls = resolver.lookup(&dest("tls", "cloud.test")).await.unwrap();
    assert_eq!(addrs(&tls), [(SocketAddr::new(ip(5), 5061), 0, 1)]);
    // The standard SRV names were never needed.
    assert_eq!(dns.queries("_sip._udp.cloud.test"), 0);
}

#[tokio::test]
async fn without_srv_a_name_is_its_own_addresses_at_the_default_port_and_a_port_skips_srv() {
    let (dns, resolver) = server_and_resolver().await;
    dns.set("plain.test", 30, vec![Rec::Ip(ip(6)), Rec::Ip(ip(7))]);
    let alone = resolver.lookup(&dest("udp", "plain.test")).await.unwrap();
    assert_eq!(
        addrs(&alone),
        [
            (SocketAddr::new(ip(6), 5060), 0, 1),
            (SocketAddr::new(ip(7), 5060), 0, 1)
        ]
    );
    let tls = resolver.lookup(&dest("tls", "plain.test")).await.unwrap();
    assert_eq!(addrs(&tls)[0].0.port(), 5061);
    let before = dns.queries("_sip._udp.plain.test");
    let with_port = resolver
        .lookup(&dest("udp", "plain.test:5090"))
        .await
        .unwrap();
    assert_eq!(
        addrs(&with_port),
        [
            (SocketAddr::new(ip(6), 5090), 0, 1),
            (SocketAddr::new(ip(7), 5090), 0, 1)
        ]
    );
    assert_eq!(
        dns.queries("_sip._udp.plain.test"),
        before,
        "a port given: no SRV lookup (RFC 3263 §4.2)"
    );
}

#[tokio::test]
async fn a_name_that_does_not_exist_is_an_error_and_srv_dot_is_no_target() {
    let (dns, resolver) = server_and_resolver().await;
    let error = resolver
        .lookup(&dest("udp", "nowhere.test"))
        .await
        .expect_err("NXDOMAIN");
    assert!(
        error.contains("nowhere.test") && error.contains("NXDOMAIN"),
        "{error}"
    );
    dns.set("_sip._udp.closed.test", 30, vec![srv(0, 0, 0, ".")]);
    let closed = resolver.lookup(&dest("udp", "closed.test")).await.unwrap();
    assert!(closed.targets.is_empty(), "{closed:?}");
}

#[tokio::test]
async fn a_server_that_does_not_answer_is_an_error_within_the_timeout() {
    // A bound socket that never answers.
    let silent = std::net::UdpSocket::bind(SocketAddr::new(ip(1), 0)).unwrap();
    let resolver = Resolver::new(&DnsConfig {
        servers: vec![silent.local_addr().unwrap()],
        timeout: Duration::from_millis(200),
        ..DnsConfig::default()
    })
    .unwrap();
    let error = resolver
        .lookup(&dest("udp", "cloud.test:5060"))
        .await
        .expect_err("no answer");
    assert!(error.contains("cloud.test"), "{error}");
}

fn answer(addrs: &[(u8, u16)], ttl: Duration) -> Result<Answer, String> {
    Ok(Answer {
        targets: addrs
            .iter()
            .map(|&(last, priority)| Resolved {
                addr: SocketAddr::new(ip(last), 5060),
                priority,
                weight: 1,
                host: "t".into(),
            })
            .collect(),
        ttl,
    })
}

fn lookups(t0: Instant) -> Lookups {
    let config = DnsConfig {
        min_ttl: Duration::from_secs(5),
        max_ttl: Duration::from_secs(3600),
        ..DnsConfig::default()
    };
    let rules = router(&[
        ("cloud", "cloud.test", "udp"),
        ("fixed", "10.0.0.1:5060", "udp"),
    ]);
    Lookups::new(&rules, &config, 3, t0)
}

#[test]
fn names_are_asked_again_when_their_ttl_ends_within_min_and_max_ttl() {
    let t0 = Instant::now();
    let mut l = lookups(t0);
    let due = l.take_due(t0);
    assert_eq!(due.len(), 1, "only the name is looked up: {due:?}");
    assert!(l.take_due(t0).is_empty(), "not asked twice at once");
    assert!(l.answer(
        3,
        due[0].dest,
        answer(&[(2, 0)], Duration::from_secs(30)),
        t0
    ));
    assert_eq!(l.next_at(), Some(t0 + Duration::from_secs(30)));
    assert!(l.take_due(t0 + Duration::from_secs(29)).is_empty());
    let due = l.take_due(t0 + Duration::from_secs(30));
    assert_eq!(due.len(), 1);
    // The same targets again: nothing to rebuild. A TTL of 1 s is held for min_ttl.
    let t1 = t0 + Duration::from_secs(30);
    assert!(!l.answer(
        3,
        due[0].dest,
        answer(&[(2, 0)], Duration::from_secs(1)),
        t1
    ));
    assert_eq!(l.next_at(), Some(t1 + Duration::from_secs(5)));
    // A day-long TTL is held for max_ttl.
    let t2 = t1 + Duration::from_secs(5);
    let due = l.take_due(t2);
    assert!(!l.answer(
        3,
        due[0].dest,
        answer(&[(2, 0)], Duration::from_secs(86_400)),
        t2
    ));
    assert_eq!(l.next_at(), Some(t2 + Duration::from_secs(3600)));
}

#[test]
fn a_failed_lookup_keeps_the_targets_and_asks_again_after_min_ttl() {
    let t0 = Instant::now();
    let mut l = lookups(t0);
    let due = l.take_due(t0);
    let cloud = due[0].dest;
    l.answer(
        3,
        cloud,
        answer(&[(2, 0), (3, 1)], Duration::from_secs(60)),
        t0,
    );
    let t1 = t0 + Duration::from_secs(60);
    let due = l.take_due(t1);
    assert!(
        !l.answer(3, cloud, Err("timed out".into()), t1),
        "nothing changes"
    );
    assert_eq!(l.resolved()[0].1.len(), 2, "the targets stay");
    assert_eq!(l.name(cloud).unwrap().error.as_deref(), Some("timed out"));
    assert_eq!(l.next_at(), Some(t1 + Duration::from_secs(5)));
    drop(due);
    // New targets change the routing; an answer for older rules is dropped.
    let t2 = t1 + Duration::from_secs(5);
    l.take_due(t2);
    assert!(!l.answer(2, cloud, answer(&[(9, 0)], Duration::from_secs(60)), t2));
    assert!(l.answer(3, cloud, answer(&[(4, 0)], Duration::from_secs(60)), t2));
    assert_eq!(l.name(cloud).unwrap().error, None);
    assert_eq!(l.resolved()[0].1[0].addr, SocketAddr::new(ip(4), 5060));
}

#[test]
fn a_name_keeps_at_most_max_targets_the_first_in_srv_order() {
    let t0 = Instant::now();
    let mut l = lookups(t0);
    let due = l.take_due(t0);
    let many: Vec<(u8, u16)> = (1..=100).map(|i| (i, u16::from(100 - i))).collect();
    assert!(l.answer(3, due[0].dest, answer(&many, Duration::from_secs(60)), t0));
    let kept = &l.resolved()[0].1;
    assert_eq!(kept.len(), MAX_TARGETS);
    assert_eq!(kept[0].priority, 0, "the lowest priorities are kept");
    assert!(kept.iter().all(|t| t.priority < MAX_TARGETS as u16));
}

#[test]
fn a_first_lookup_that_does_not_answer_in_time_leaves_the_name_down_and_due_at_once() {
    // A bound socket that never answers.
    let silent = std::net::UdpSocket::bind(SocketAddr::new(ip(1), 0)).unwrap();
    let config = DnsConfig {
        servers: vec![silent.local_addr().unwrap()],
        timeout: Duration::from_millis(100),
        ..DnsConfig::default()
    };
    let rules = router(&[("cloud", "cloud.test", "udp")]);
    let mut l = Lookups::new(&rules, &config, 0, Instant::now());
    lookup_now(&config, &mut l).expect("a resolver");
    let name = &l.names[0];
    assert!(
        name.targets.is_empty() && name.answered_at.is_none(),
        "{name:?}"
    );
    // Down now, and the refresher takes it again at once.
    assert_eq!(l.take_due(Instant::now()).len(), 1);
}
