//! Deterministic tests of the core: messages in, outputs out, time passed in. No sockets, no
//! sleeping: a harness keeps the armed timers and fires them as it advances its own clock.

use super::sweep::{SWEEP_EVERY, SWEEP_STEP, SWEEP_STEP_WORK, SWEEP_UNITS};
use super::*;
use routing_rules::spec::CancelMode;
use routing_rules::CodeSet;
use std::time::Duration;

const CARRIER: &str = "10.0.0.1:5060";
const PRIMARY: &str = "127.0.0.1:5070";
const SECONDARY: &str = "127.0.0.1:5080";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The rules every harness starts from: `primary` then `secondary`, 3 s provisional timers.
pub(super) const RULES: &str = r#"
[[destination]]
name = "primary"
address = "127.0.0.1:5070"

[[destination]]
name = "secondary"
address = "127.0.0.1:5080"

[[route]]
name = "default"
destinations = ["primary", "secondary"]
"#;

/// The `[[destination]]`, `[[group]]` and `[[route]]` tables of a config file.
#[derive(serde::Deserialize)]
struct RulesFile {
    #[serde(default)]
    destination: Vec<routing_rules::spec::DestinationSpec>,
    #[serde(default)]
    group: Vec<routing_rules::spec::GroupSpec>,
    #[serde(default)]
    route: Vec<routing_rules::spec::RouteSpec>,
}

pub(super) fn compile(rules: &str) -> Router {
    let file: RulesFile = toml::from_str(rules).expect("rules parse");
    Router::compile(&file.destination, &file.group, &file.route).expect("rules compile")
}

/// The shared fake-clock harness ([`crate::testing::Harness`]) with these tests' rules and
/// their peers written as address strings; derefs to the shared one (core, now, timers, sent).
struct Harness {
    h: crate::testing::Harness,
    /// Renders the core's metrics.
    metrics: metrics_exporter_prometheus::PrometheusHandle,
}

impl std::ops::Deref for Harness {
    type Target = crate::testing::Harness;
    fn deref(&self) -> &Self::Target {
        &self.h
    }
}

impl std::ops::DerefMut for Harness {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.h
    }
}

use crate::testing::first_line;

impl Harness {
    fn new() -> Harness {
        Harness::with(|_| {})
    }

    /// The default rules with their flat view tweaked.
    fn with(tweak: impl FnOnce(&mut routing_rules::RuleSet)) -> Harness {
        let mut router = compile(RULES);
        tweak(&mut router.rules);
        Harness::on(router)
    }

    /// Rules written as config tables (groups, tiers, survivability ...).
    fn rules(text: &str) -> Harness {
        Harness::on(compile(text))
    }

    fn on(router: Router) -> Harness {
        Harness::configured(router, |_| {})
    }

    /// The default rules on a core whose configuration is tweaked (guard, allow lists ...).
    fn with_config(tweak: impl FnOnce(&mut CoreConfig)) -> Harness {
        Harness::configured(compile(RULES), tweak)
    }

    fn configured(router: Router, tweak: impl FnOnce(&mut CoreConfig)) -> Harness {
        let mut cfg = crate::testing::core_config();
        tweak(&mut cfg);
        let now = Instant::now();
        let (metrics, handle) = crate::testing::local_metrics(&router);
        let routing = crate::testing::routing(Arc::new(router), metrics, now);
        Harness {
            h: crate::testing::Harness::new(Core::new(cfg, routing, now, 0x5eed), now),
            metrics: handle,
        }
    }

    fn receive(&mut self, from: &str, bytes: &[u8]) {
        self.h.receive(addr(from), bytes);
    }

    /// Sends pointsman made to `to`, as first lines.
    fn lines_to(&self, to: &str) -> Vec<String> {
        self.sent
            .iter()
            .filter(|(a, _, _)| *a == addr(to))
            .map(|(_, l, _)| l.clone())
            .collect()
    }

    fn position(&self, to: &str, starts: &str) -> Option<usize> {
        self.sent
            .iter()
            .position(|(a, l, _)| *a == addr(to) && l.starts_with(starts))
    }

    fn last_to(&self, to: &str, starts: &str) -> Bytes {
        self.h
            .last_to(addr(to), starts)
            .cloned()
            .unwrap_or_else(|| {
                panic!(
                    "nothing starting with {starts:?} sent to {to}: {:?}",
                    self.lines_to(to)
                )
            })
    }

    /// `pointsman_dropped_total` for `reason`.
    fn dropped(&self, reason: &str) -> f64 {
        self.metric(&format!("pointsman_dropped_total{{reason=\"{reason}\"}}"))
    }

    /// The value of `series` (name and labels as rendered), 0 when absent.
    fn metric(&self, series: &str) -> f64 {
        let prefix = format!("{series} ");
        self.metrics
            .render()
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str())?.parse().ok())
            .unwrap_or(0.0)
    }

    /// Feeds `bytes` from `from` with the inbound's details tweaked (listener, overload).
    fn receive_with(&mut self, from: &str, bytes: &[u8], tweak: impl FnOnce(&mut Inbound<'_>)) {
        let mut inb = Inbound::datagram(bytes, addr(from));
        tweak(&mut inb);
        self.h.receive_inbound(inb);
    }

    fn count_to(&self, to: &str, starts: &str) -> usize {
        self.lines_to(to)
            .iter()
            .filter(|l| l.starts_with(starts))
            .count()
    }
}

fn invite(call_id: &str) -> Vec<u8> {
    format!(
        "INVITE sip:+15551234@192.0.2.10 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-carrier-{call_id}\r\n\
         Max-Forwards: 70\r\n\
         From: \"Carrier\" <sip:+15550000@10.0.0.1>;tag=c1\r\n\
         To: <sip:+15551234@192.0.2.10>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:+15550000@10.0.0.1:5060>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: 4\r\n\r\nv=0\n"
    )
    .into_bytes()
}

/// A response a UAS would send to `request` (the bytes pointsman forwarded): the shared
/// builder, reason phrase "Whatever".
fn response_to(request: &[u8], code: u16, to_tag: &str) -> Vec<u8> {
    crate::testing::response_to(request, code, to_tag)
}

fn header<'a>(msg: &'a [u8], name: &str) -> Option<&'a str> {
    let text = std::str::from_utf8(msg).ok()?;
    text.split("\r\n").find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn the_forwarded_invite_leaves_before_the_100_trying_that_answers_it() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("order"));
    let order: Vec<(SocketAddr, String)> = h.sent.iter().map(|(a, l, _)| (*a, l.clone())).collect();
    assert_eq!(order.len(), 2, "{order:?}");
    assert_eq!(order[0].0, addr(PRIMARY));
    assert!(order[0].1.starts_with("INVITE "), "{order:?}");
    assert_eq!(order[1], (addr(CARRIER), "SIP/2.0 100 Trying".to_string()));
}

#[test]
fn a_call_with_nowhere_to_go_answers_100_before_its_final() {
    let mut h = Harness::rules(&hot_hot(
        r#"tiers = ["clouds"]
survivability = { reject = 503, retry_after = "30s" }"#,
    ));
    let routing = h.core.routing();
    for name in ["primary", "secondary"] {
        let dest = routing.health.by_name(name).expect(name);
        dest.act(crate::health::AdminAction::Maintenance, h.now);
    }
    h.receive(CARRIER, &invite("nowhere"));
    assert_eq!(
        h.lines_to(CARRIER),
        vec!["SIP/2.0 100 Trying", "SIP/2.0 503 Service Unavailable"]
    );
    assert_eq!(
        h.count_to(PRIMARY, "INVITE") + h.count_to(SECONDARY, "INVITE"),
        0
    );
}

/// A route that matched, with every destination down before the call starts and no
/// survivability rule: the number exists and the service is unavailable, so the carrier gets
/// 503 with Retry-After (and reroutes to its next trunk), never 404.
#[test]
fn a_matched_route_with_every_destination_down_answers_503_with_retry_after_not_404() {
    let mut h = Harness::rules(&hot_hot(r#"tiers = ["clouds"]"#));
    let routing = h.core.routing();
    for name in ["primary", "secondary"] {
        let dest = routing.health.by_name(name).expect(name);
        dest.act(crate::health::AdminAction::Maintenance, h.now);
    }
    h.receive(CARRIER, &invite("all-down"));
    let resp = h.last_to(CARRIER, "SIP/2.0 503");
    assert!(header(&resp, "Retry-After").is_some(), "{resp:?}");
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 404"), 0);
    assert_eq!(
        h.count_to(PRIMARY, "INVITE") + h.count_to(SECONDARY, "INVITE"),
        0
    );
}

/// A number no route matches: 404, so the carrier does not try it anywhere else.
#[test]
fn a_number_no_route_matches_answers_404() {
    let mut h = Harness::rules(&hot_hot(
        r#"match = { to_prefix = ["+44"] }
tiers = ["clouds"]"#,
    ));
    h.receive(CARRIER, &invite("no-route"));
    assert_eq!(
        h.lines_to(CARRIER),
        vec!["SIP/2.0 100 Trying", "SIP/2.0 404 Not Found"]
    );
}

#[test]
fn silent_primary_gets_cancel_before_secondary_invite() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("a1"));
    assert_eq!(h.lines_to(CARRIER), vec!["SIP/2.0 100 Trying"]);
    assert_eq!(h.count_to(PRIMARY, "INVITE"), 1);
    h.advance(Duration::from_millis(2_999));
    assert_eq!(
        h.count_to(SECONDARY, "INVITE"),
        0,
        "no failover before the 3 s timer"
    );
    h.advance(Duration::from_millis(1));
    let cancel = h
        .position(PRIMARY, "CANCEL")
        .expect("CANCEL to the primary");
    let invite2 = h
        .position(SECONDARY, "INVITE")
        .expect("INVITE to the secondary");
    assert!(
        cancel < invite2,
        "CANCEL must be sent before the next INVITE"
    );
    let cancel_bytes = h.last_to(PRIMARY, "CANCEL");
    assert!(header(&cancel_bytes, "Reason")
        .unwrap()
        .starts_with("SIP;cause=408"));
    // The CANCEL names the branch of the INVITE it cancels (RFC 3261 §9.1).
    let invite1 = h.last_to(PRIMARY, "INVITE");
    assert_eq!(header(&cancel_bytes, "Via"), header(&invite1, "Via"));
}

#[test]
fn any_provisional_including_100_stops_the_failover_timer() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("a2"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.advance(Duration::from_millis(500));
    h.receive(PRIMARY, &response_to(&fwd, 100, "p"));
    h.advance(Duration::from_secs(10));
    assert_eq!(h.count_to(SECONDARY, "INVITE"), 0);
    assert_eq!(h.count_to(PRIMARY, "CANCEL"), 0);
    // 100 is hop by hop: the carrier only has our own 100.
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 100"), 1);
}

#[test]
fn invite_retransmissions_to_an_abandoned_branch_stop_after_its_cancel() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("a3"));
    h.advance(Duration::from_secs(3));
    let before = h.count_to(PRIMARY, "INVITE");
    h.advance(Duration::from_secs(40));
    assert_eq!(h.count_to(PRIMARY, "INVITE"), before);
}

#[test]
fn unreliable_invite_is_retransmitted_until_provisional() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("a4"));
    h.advance(Duration::from_millis(1_600));
    // Sent at 0, 0.5 s and 1.5 s (timer A doubling from T1).
    assert_eq!(h.count_to(PRIMARY, "INVITE"), 3);
}

#[test]
fn retryable_503_fails_over_at_once_and_is_acked() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("b1"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &response_to(&fwd, 503, "p"));
    assert_eq!(h.count_to(PRIMARY, "ACK"), 1, "hop-by-hop ACK for the 503");
    assert_eq!(
        h.count_to(PRIMARY, "CANCEL"),
        0,
        "a completed branch is not cancelled"
    );
    assert_eq!(h.count_to(SECONDARY, "INVITE"), 1);
    let fwd2 = h.last_to(SECONDARY, "INVITE");
    h.receive(SECONDARY, &response_to(&fwd2, 180, "s"));
    h.receive(SECONDARY, &response_to(&fwd2, 200, "s"));
    assert_eq!(
        h.lines_to(CARRIER),
        vec![
            "SIP/2.0 100 Trying",
            "SIP/2.0 180 Whatever",
            "SIP/2.0 200 Whatever"
        ]
    );
    let ok = h.last_to(CARRIER, "SIP/2.0 200");
    assert!(
        !String::from_utf8_lossy(&ok).contains("192.0.2.10:5060;branch"),
        "our Via is stripped"
    );
}

#[test]
fn late_2xx_on_abandoned_branch_is_acked_and_byed_never_relayed() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("g1"));
    let fwd1 = h.last_to(PRIMARY, "INVITE");
    h.advance(Duration::from_secs(3));
    let fwd2 = h.last_to(SECONDARY, "INVITE");
    h.receive(SECONDARY, &response_to(&fwd2, 200, "s"));
    // The primary wakes up and answers too.
    h.receive(PRIMARY, &response_to(&fwd1, 200, "ghost"));
    let oks: Vec<_> = h
        .lines_to(CARRIER)
        .into_iter()
        .filter(|l| l.starts_with("SIP/2.0 200"))
        .collect();
    assert_eq!(oks.len(), 1, "only the secondary's 200 reaches the carrier");
    let ack = h.position(PRIMARY, "ACK").expect("ACK to the ghost");
    let bye = h.position(PRIMARY, "BYE").expect("BYE to the ghost");
    assert!(ack < bye);
    let bye_bytes = h.last_to(PRIMARY, "BYE");
    assert!(header(&bye_bytes, "Reason").unwrap().contains("cause=200"));
    assert!(header(&bye_bytes, "To").unwrap().contains("tag=ghost"));
    // A retransmission of the ghost 2xx is ACKed again, with no second BYE.
    h.receive(PRIMARY, &response_to(&fwd1, 200, "ghost"));
    assert_eq!(h.count_to(PRIMARY, "ACK"), 2);
    assert_eq!(h.count_to(PRIMARY, "BYE"), 1);
    assert!(h
        .metrics
        .render()
        .lines()
        .any(|l| l == "pointsman_ghost_calls_torn_down_total 1"));
}

#[test]
fn late_2xx_after_the_call_context_is_gone_is_still_torn_down() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("g2"));
    let fwd1 = h.last_to(PRIMARY, "INVITE");
    h.advance(Duration::from_secs(3));
    let fwd2 = h.last_to(SECONDARY, "INVITE");
    h.receive(SECONDARY, &response_to(&fwd2, 486, "s"));
    h.receive(CARRIER, b"ACK sip:+15551234@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-carrier-g2\r\nMax-Forwards: 70\r\nFrom: <sip:+15550000@10.0.0.1>;tag=c1\r\nTo: <sip:+15551234@192.0.2.10>;tag=s\r\nCall-ID: g2\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n");
    h.advance(Duration::from_secs(120));
    assert_eq!(h.core.table_sizes().0, 0, "call context reaped");
    h.receive(PRIMARY, &response_to(&fwd1, 200, "late"));
    assert_eq!(h.count_to(PRIMARY, "BYE"), 1);
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 200"), 0);
}

#[test]
fn busy_486_is_relayed_and_not_retried() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("c1"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &response_to(&fwd, 486, "p"));
    assert_eq!(h.count_to(SECONDARY, "INVITE"), 0);
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 486"), 1);
}

#[test]
fn decline_603_stops_the_whole_call() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("c2"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &response_to(&fwd, 603, "p"));
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 603"), 1);
    h.advance(Duration::from_secs(10));
    assert_eq!(h.count_to(SECONDARY, "INVITE"), 0);
}

#[test]
fn final_503_after_180_is_not_retried_and_reaches_carrier_as_500() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("c3"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &response_to(&fwd, 180, "p"));
    h.receive(PRIMARY, &response_to(&fwd, 503, "p"));
    assert_eq!(h.count_to(SECONDARY, "INVITE"), 0);
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 500"), 1);
}

#[test]
fn ringing_retry_codes_allow_failover_after_180() {
    let mut h = Harness::with(|r| r.routes[0].ringing_retry_codes = CodeSet(vec![503]));
    h.receive(CARRIER, &invite("c4"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &response_to(&fwd, 180, "p"));
    h.receive(PRIMARY, &response_to(&fwd, 503, "p"));
    assert_eq!(h.count_to(SECONDARY, "INVITE"), 1);
}

#[test]
fn pass_503_relays_503_unchanged() {
    let mut h = Harness::with(|r| r.routes[0].pass_503 = true);
    h.receive(CARRIER, &invite("c5"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &response_to(&fwd, 503, "p"));
    let fwd2 = h.last_to(SECONDARY, "INVITE");
    h.receive(SECONDARY, &response_to(&fwd2, 503, "s"));
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 503"), 1);
}

#[test]
fn every_destination_silent_gives_503_with_retry_after() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("c6"));
    h.advance(Duration::from_secs(6));
    let resp = h.last_to(CARRIER, "SIP/2.0 503");
    assert_eq!(header(&resp, "Retry-After"), Some("5"));
    assert!(header(&resp, "To").unwrap().contains("tag="));
}

#[test]
fn carrier_cancel_gets_200_then_487_and_no_branch_starts_after_it() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("d1"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &response_to(&fwd, 100, "p"));
    h.receive(CARRIER, b"CANCEL sip:+15551234@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-carrier-d1\r\nMax-Forwards: 70\r\nFrom: \"Carrier\" <sip:+15550000@10.0.0.1>;tag=c1\r\nTo: <sip:+15551234@192.0.2.10>\r\nCall-ID: d1\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n");
    let lines = h.lines_to(CARRIER);
    assert_eq!(
        lines[1..],
        ["SIP/2.0 200 OK", "SIP/2.0 487 Request Terminated"]
    );
    assert_eq!(h.count_to(PRIMARY, "CANCEL"), 1);
    h.advance(Duration::from_secs(60));
    assert_eq!(h.count_to(SECONDARY, "INVITE"), 0);
}

#[test]
fn carrier_cancel_before_any_provisional_still_stops_the_failover_timer() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("d2"));
    h.receive(CARRIER, b"CANCEL sip:+15551234@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-carrier-d2\r\nMax-Forwards: 70\r\nFrom: <sip:+15550000@10.0.0.1>;tag=c1\r\nTo: <sip:+15551234@192.0.2.10>\r\nCall-ID: d2\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 487"), 1);
    h.advance(Duration::from_secs(10));
    assert_eq!(h.count_to(SECONDARY, "INVITE"), 0);
}

#[test]
fn deferred_cancel_waits_for_the_first_provisional() {
    let mut h = Harness::with(|r| r.destinations[0].cancel_mode = CancelMode::Deferred);
    h.receive(CARRIER, &invite("e1"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.advance(Duration::from_secs(3));
    assert_eq!(
        h.count_to(SECONDARY, "INVITE"),
        1,
        "failover does not wait for the CANCEL"
    );
    assert_eq!(h.count_to(PRIMARY, "CANCEL"), 0);
    h.receive(PRIMARY, &response_to(&fwd, 180, "p"));
    assert_eq!(h.count_to(PRIMARY, "CANCEL"), 1);
    assert_eq!(
        h.count_to(CARRIER, "SIP/2.0 180"),
        0,
        "an abandoned branch is not relayed"
    );
}

#[test]
fn ring_timeout_sends_408_upstream_and_cancel_downstream() {
    let mut h = Harness::with(|r| r.routes[0].ring_timeout = Duration::from_secs(30));
    h.receive(CARRIER, &invite("f1"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &response_to(&fwd, 180, "p"));
    h.advance(Duration::from_secs(29));
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 408"), 0);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 408"), 1);
    assert_eq!(h.count_to(PRIMARY, "CANCEL"), 1);
    assert_eq!(h.count_to(SECONDARY, "INVITE"), 0);
}

#[test]
fn retransmitted_invite_is_absorbed_and_gets_the_last_provisional() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("r1"));
    h.receive(CARRIER, &invite("r1"));
    assert_eq!(h.count_to(PRIMARY, "INVITE"), 1);
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 100"), 2);
}

#[test]
fn max_forwards_zero_is_answered_483_and_not_forwarded() {
    let mut h = Harness::new();
    let msg = String::from_utf8(invite("v1"))
        .unwrap()
        .replace("Max-Forwards: 70", "Max-Forwards: 0");
    h.receive(CARRIER, msg.as_bytes());
    assert_eq!(h.lines_to(CARRIER), vec!["SIP/2.0 483 Too Many Hops"]);
    assert!(h.lines_to(PRIMARY).is_empty());
}

#[test]
fn max_forwards_is_decremented_and_record_route_carries_node_and_destination() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("v2"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    assert_eq!(header(&fwd, "Max-Forwards"), Some("69"));
    let rr = header(&fwd, "Record-Route").unwrap();
    assert!(
        rr.contains("psn=7")
            && rr.contains(&format!("psd={}", psd_token("primary")))
            && rr.contains("ftag=c1"),
        "{rr}"
    );
    let via = header(&fwd, "Via").unwrap();
    assert!(
        via.contains("branch=z9hG4bK-ps7-"),
        "node id in the branch: {via}"
    );
    // Body and untouched headers pass byte for byte.
    assert!(fwd.ends_with(b"Content-Length: 4\r\n\r\nv=0\n"));
}

#[test]
fn proxy_require_is_refused_with_420() {
    let mut h = Harness::new();
    let msg = String::from_utf8(invite("v3")).unwrap().replace(
        "CSeq: 1 INVITE\r\n",
        "CSeq: 1 INVITE\r\nProxy-Require: foo\r\n",
    );
    h.receive(CARRIER, msg.as_bytes());
    let resp = h.last_to(CARRIER, "SIP/2.0 420");
    assert_eq!(header(&resp, "Unsupported"), Some("foo"));
}

#[test]
fn unsupported_uri_scheme_is_refused_with_416() {
    let mut h = Harness::new();
    let msg = String::from_utf8(invite("v4"))
        .unwrap()
        .replace("INVITE sip:+15551234@192.0.2.10", "INVITE mailto:a@b.c");
    h.receive(CARRIER, msg.as_bytes());
    assert_eq!(
        h.lines_to(CARRIER),
        vec!["SIP/2.0 416 Unsupported URI Scheme"]
    );
}

#[test]
fn a_request_that_comes_back_unchanged_is_a_loop() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("v5"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    // The destination sends it straight back to us.
    h.receive(PRIMARY, &fwd);
    assert_eq!(h.count_to(PRIMARY, "SIP/2.0 482"), 1);
}

#[test]
fn options_to_pointsman_is_answered_200() {
    let mut h = Harness::new();
    h.receive(CARRIER, b"OPTIONS sip:192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-o1\r\nMax-Forwards: 70\r\nFrom: <sip:ping@10.0.0.1>;tag=o\r\nTo: <sip:192.0.2.10>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(h.lines_to(CARRIER), vec!["SIP/2.0 200 OK"]);
}

#[test]
fn malformed_request_gets_400_and_garbage_gets_nothing() {
    let mut h = Harness::new();
    let msg = String::from_utf8(invite("m1"))
        .unwrap()
        .replace("CSeq: 1 INVITE", "CSeq: one INVITE");
    h.receive(CARRIER, msg.as_bytes());
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 400"), 1);
    h.receive(CARRIER, b"\x00\x01garbage\xff");
    assert_eq!(h.sent.len(), 1);
    h.receive(CARRIER, &invite("m2"));
    assert_eq!(h.count_to(PRIMARY, "INVITE"), 1, "still serving");
}

#[test]
fn bye_from_either_side_follows_the_edge_that_answered() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("y1"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &response_to(&fwd, 200, "p"));
    let ok = h.last_to(CARRIER, "SIP/2.0 200");
    let rr = header(&ok, "Record-Route").unwrap().to_string();
    // Carrier → callee: Route is our Record-Route; R-URI is the callee's Contact.
    let bye = format!("BYE sip:agent@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-bye1\r\nMax-Forwards: 70\r\nRoute: {rr}\r\nFrom: \"Carrier\" <sip:+15550000@10.0.0.1>;tag=c1\r\nTo: <sip:+15551234@192.0.2.10>;tag=p\r\nCall-ID: y1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n");
    h.receive(CARRIER, bye.as_bytes());
    let fwd_bye = h.last_to(PRIMARY, "BYE");
    assert!(header(&fwd_bye, "Route").is_none(), "our Route is consumed");
    h.receive(PRIMARY, &response_to(&fwd_bye, 200, "p"));
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 200"), 2);
    // Callee → carrier: goes to the carrier's Contact.
    let bye2 = format!("BYE sip:+15550000@10.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-bye2\r\nMax-Forwards: 70\r\nRoute: {rr}\r\nFrom: <sip:+15551234@192.0.2.10>;tag=p\r\nTo: \"Carrier\" <sip:+15550000@10.0.0.1>;tag=c1\r\nCall-ID: y1\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n");
    h.receive(PRIMARY, bye2.as_bytes());
    assert_eq!(h.count_to(CARRIER, "BYE"), 1);
}

#[test]
fn finished_calls_leave_no_state_behind() {
    let mut h = Harness::new();
    for i in 0..20 {
        let id = format!("z{i}");
        h.receive(CARRIER, &invite(&id));
        let fwd = h.last_to(PRIMARY, "INVITE");
        h.receive(PRIMARY, &response_to(&fwd, 486, "p"));
    }
    h.advance(Duration::from_secs(120));
    let (servers, clients, _) = h.core.table_sizes();
    assert_eq!((servers, clients), (0, 0));
}

#[test]
fn rfc2543_peer_without_magic_cookie_is_matched_for_retransmission_and_cancel() {
    let mut h = Harness::new();
    let old = String::from_utf8(invite("k1"))
        .unwrap()
        .replace("branch=z9hG4bK-carrier-k1", "branch=1234");
    h.receive(CARRIER, old.as_bytes());
    h.receive(CARRIER, old.as_bytes());
    assert_eq!(h.count_to(PRIMARY, "INVITE"), 1, "retransmission absorbed");
    h.receive(CARRIER, b"CANCEL sip:+15551234@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=1234\r\nMax-Forwards: 70\r\nFrom: \"Carrier\" <sip:+15550000@10.0.0.1>;tag=c1\r\nTo: <sip:+15551234@192.0.2.10>\r\nCall-ID: k1\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        h.count_to(CARRIER, "SIP/2.0 487"),
        1,
        "the CANCEL found its INVITE"
    );
}

#[test]
fn carrier_ack_for_a_non_2xx_final_is_absorbed_hop_by_hop() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("k2"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &response_to(&fwd, 486, "p"));
    assert_eq!(
        h.count_to(PRIMARY, "ACK"),
        1,
        "pointsman ACKs the 486 itself"
    );
    h.receive(CARRIER, b"ACK sip:+15551234@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-carrier-k2\r\nMax-Forwards: 70\r\nFrom: <sip:+15550000@10.0.0.1>;tag=c1\r\nTo: <sip:+15551234@192.0.2.10>;tag=p\r\nCall-ID: k2\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        h.count_to(PRIMARY, "ACK"),
        1,
        "the carrier's ACK stops here"
    );
    // And the 486 is no longer retransmitted to the carrier.
    let before = h.count_to(CARRIER, "SIP/2.0 486");
    h.advance(Duration::from_secs(10));
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 486"), before);
}

#[test]
fn answered_call_cancels_nothing_and_the_2xx_retransmission_is_relayed() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("k3"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &response_to(&fwd, 200, "p"));
    h.receive(PRIMARY, &response_to(&fwd, 200, "p"));
    assert_eq!(
        h.count_to(CARRIER, "SIP/2.0 200"),
        2,
        "2xx retransmissions pass while Accepted"
    );
    assert_eq!(
        h.count_to(PRIMARY, "BYE"),
        0,
        "the winner is never torn down"
    );
    assert_eq!(h.count_to(PRIMARY, "CANCEL"), 0);
}

#[test]
fn icmp_unreachable_for_the_invite_fails_over_at_once_without_cancel() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("icmp"));
    // The kernel quotes only the first ~520 bytes of the datagram.
    let bounced = h.last_to(PRIMARY, "INVITE");
    let quoted = &bounced[..bounced.len().min(200)];
    let mut out = Vec::new();
    h.core.on_udp_unreachable(quoted, h.now, &mut out);
    h.absorb(out);
    assert_eq!(h.count_to(SECONDARY, "INVITE"), 1, "{:?}", h.sent);
    assert_eq!(
        h.count_to(PRIMARY, "CANCEL"),
        0,
        "nothing reached the primary"
    );
}

#[test]
fn delivery_failure_of_the_invite_fails_over_at_once() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("tcp-fail"));
    let key = h
        .core
        .clients
        .iter()
        .map(|e| *e.key())
        .next()
        .expect("a branch");
    let mut out = Vec::new();
    h.core.on_delivery_failure(key, h.now, &mut out);
    h.absorb(out);
    assert_eq!(h.count_to(SECONDARY, "INVITE"), 1, "{:?}", h.sent);
}

#[test]
fn answered_call_without_bye_leaves_no_dialog_state_after_the_2xx_window() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("nobye"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &response_to(&fwd, 200, "p"));
    assert_eq!(h.core.table_sizes().2, 1, "the answered dialog is known");
    // A 2xx retransmission inside the window is harmless: relayed or absorbed, never torn down.
    h.advance(Duration::from_secs(40));
    h.receive(PRIMARY, &response_to(&fwd, 200, "p"));
    assert_eq!(h.count_to(PRIMARY, "BYE"), 0);
    // The call lives on (no BYE ever passes), but its state does not.
    h.advance(Duration::from_secs(30));
    assert_eq!(
        h.core.table_sizes(),
        (0, 0, 0),
        "{:?}",
        h.core.table_sizes()
    );
}

#[test]
fn reinvite_that_only_rings_is_ended_by_timer_c() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("tc"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &response_to(&fwd, 200, "p"));
    let ok = h.last_to(CARRIER, "SIP/2.0 200");
    let rr = header(&ok, "Record-Route").unwrap().to_string();
    let reinvite = format!("INVITE sip:agent@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-re1\r\nMax-Forwards: 70\r\nRoute: {rr}\r\nFrom: \"Carrier\" <sip:+15550000@10.0.0.1>;tag=c1\r\nTo: <sip:+15551234@192.0.2.10>;tag=p\r\nCall-ID: tc\r\nCSeq: 2 INVITE\r\nContent-Length: 0\r\n\r\n");
    h.receive(CARRIER, reinvite.as_bytes());
    let fwd_re = h.last_to(PRIMARY, "INVITE");
    assert!(fwd_re.windows(8).any(|w| w == b"CSeq: 2 "));
    h.receive(PRIMARY, &response_to(&fwd_re, 180, "p"));
    h.advance(Duration::from_secs(170));
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 408"), 0, "not before Timer C");
    h.advance(Duration::from_secs(11));
    // 408 upstream (retransmitted until ACKed, as any final on UDP), CANCEL downstream.
    assert!(
        h.count_to(CARRIER, "SIP/2.0 408") >= 1,
        "{:?}",
        h.lines_to(CARRIER)
    );
    assert_eq!(h.count_to(PRIMARY, "CANCEL"), 1);
}

// ---- routes with groups, tiers and survivability ------------------------------------------

const LIFEBOAT: &str = "127.0.0.1:5090";

/// Two clouds forked at once (hot-hot), then a lifeboat tier; `extra` completes the route.
fn hot_hot(extra: &str) -> String {
    format!(
        r#"
[[destination]]
name = "primary"
address = "127.0.0.1:5070"

[[destination]]
name = "secondary"
address = "127.0.0.1:5080"

[[destination]]
name = "lifeboat"
address = "127.0.0.1:5090"

[[group]]
name = "clouds"
strategy = "parallel"
members = ["primary", "secondary"]

[[group]]
name = "lifeboats"
members = ["lifeboat"]

[[route]]
name = "hot-hot"
{extra}
"#
    )
}

#[test]
fn parallel_tier_forks_to_every_member_at_once_and_the_first_2xx_wins() {
    let mut h = Harness::rules(&hot_hot(r#"tiers = ["clouds", "lifeboats"]"#));
    h.receive(CARRIER, &invite("par1"));
    assert_eq!(h.count_to(PRIMARY, "INVITE"), 1);
    assert_eq!(h.count_to(SECONDARY, "INVITE"), 1, "both forked at once");
    let to_primary = h.last_to(PRIMARY, "INVITE");
    let to_secondary = h.last_to(SECONDARY, "INVITE");
    h.receive(PRIMARY, &response_to(&to_primary, 183, "p"));
    h.receive(SECONDARY, &response_to(&to_secondary, 183, "s"));
    assert_eq!(
        h.count_to(CARRIER, "SIP/2.0 183"),
        2,
        "both early media relayed"
    );
    h.receive(SECONDARY, &response_to(&to_secondary, 200, "s"));
    let ok = h.last_to(CARRIER, "SIP/2.0 200");
    assert!(header(&ok, "To").unwrap().contains("tag=s"));
    assert_eq!(
        h.count_to(PRIMARY, "CANCEL"),
        1,
        "the other branch is cancelled"
    );
    // The primary answered anyway: ACK and BYE, never relayed.
    h.receive(PRIMARY, &response_to(&to_primary, 200, "p"));
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 200"), 1);
    assert_eq!(h.count_to(PRIMARY, "BYE"), 1);
    assert_eq!(h.count_to(LIFEBOAT, "INVITE"), 0);
}

#[test]
fn parallel_tier_relays_the_best_final_once_every_branch_answered() {
    let mut h = Harness::rules(&hot_hot(r#"tiers = ["clouds", "lifeboats"]"#));
    h.receive(CARRIER, &invite("par2"));
    let to_primary = h.last_to(PRIMARY, "INVITE");
    let to_secondary = h.last_to(SECONDARY, "INVITE");
    h.receive(PRIMARY, &response_to(&to_primary, 486, "p"));
    assert_eq!(
        h.count_to(CARRIER, "SIP/2.0 486"),
        0,
        "the secondary may still answer"
    );
    h.receive(SECONDARY, &response_to(&to_secondary, 503, "s"));
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 486"), 1, "486 beats 503");
    assert_eq!(
        h.count_to(LIFEBOAT, "INVITE"),
        0,
        "a busy callee is an answer, not a failure"
    );
}

#[test]
fn parallel_tier_that_fails_entirely_moves_to_the_next_tier() {
    let mut h = Harness::rules(&hot_hot(r#"tiers = ["clouds", "lifeboats"]"#));
    h.receive(CARRIER, &invite("par3"));
    let to_primary = h.last_to(PRIMARY, "INVITE");
    let to_secondary = h.last_to(SECONDARY, "INVITE");
    h.receive(PRIMARY, &response_to(&to_primary, 503, "p"));
    assert_eq!(
        h.count_to(LIFEBOAT, "INVITE"),
        0,
        "the secondary is still live"
    );
    h.receive(SECONDARY, &response_to(&to_secondary, 500, "s"));
    assert_eq!(h.count_to(LIFEBOAT, "INVITE"), 1);
}

#[test]
fn parallel_branch_that_stays_silent_is_cancelled_and_the_other_carries_on() {
    let mut h = Harness::rules(&hot_hot(r#"tiers = ["clouds", "lifeboats"]"#));
    h.receive(CARRIER, &invite("par4"));
    let to_secondary = h.last_to(SECONDARY, "INVITE");
    h.receive(SECONDARY, &response_to(&to_secondary, 180, "s"));
    h.advance(Duration::from_secs(3));
    assert_eq!(h.count_to(PRIMARY, "CANCEL"), 1, "silent branch given up");
    assert_eq!(h.count_to(LIFEBOAT, "INVITE"), 0, "the secondary rings on");
    h.receive(SECONDARY, &response_to(&to_secondary, 200, "s"));
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 200"), 1);
}

#[test]
fn survivability_group_takes_the_call_when_every_tier_failed() {
    let mut h = Harness::rules(&hot_hot(
        r#"tiers = ["clouds"]
survivability = { group = "lifeboats" }"#,
    ));
    h.receive(CARRIER, &invite("surv1"));
    let to_primary = h.last_to(PRIMARY, "INVITE");
    let to_secondary = h.last_to(SECONDARY, "INVITE");
    h.receive(PRIMARY, &response_to(&to_primary, 503, "p"));
    h.receive(SECONDARY, &response_to(&to_secondary, 503, "s"));
    let to_lifeboat = h.last_to(LIFEBOAT, "INVITE");
    h.receive(LIFEBOAT, &response_to(&to_lifeboat, 200, "l"));
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 200"), 1);
}

#[test]
fn survivability_reject_answers_its_code_and_retry_after_when_every_tier_failed() {
    let mut h = Harness::rules(&hot_hot(
        r#"tiers = ["clouds"]
survivability = { reject = 503, retry_after = "30s" }"#,
    ));
    h.receive(CARRIER, &invite("surv2"));
    let to_primary = h.last_to(PRIMARY, "INVITE");
    let to_secondary = h.last_to(SECONDARY, "INVITE");
    h.receive(PRIMARY, &response_to(&to_primary, 500, "p"));
    h.receive(SECONDARY, &response_to(&to_secondary, 503, "s"));
    let resp = h.last_to(CARRIER, "SIP/2.0 503");
    assert_eq!(header(&resp, "Retry-After"), Some("30"));
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 500"), 0);
}

#[test]
fn calls_take_the_first_route_whose_conditions_match() {
    let rules = r#"
[[destination]]
name = "primary"
address = "127.0.0.1:5070"

[[destination]]
name = "secondary"
address = "127.0.0.1:5080"

[[route]]
name = "uk"
match = { to_prefix = ["+44"] }
destinations = ["secondary"]

[[route]]
name = "vip-callers"
match = { from_prefix = ["1999"] }
destinations = ["secondary"]

[[route]]
name = "default"
destinations = ["primary"]
"#;
    let mut h = Harness::rules(rules);
    let uk = String::from_utf8(invite("m1"))
        .unwrap()
        .replace("+15551234@", "+442071234567@");
    h.receive(CARRIER, uk.as_bytes());
    assert_eq!(h.count_to(SECONDARY, "INVITE"), 1);
    // P-Asserted-Identity is the caller when present.
    let vip = String::from_utf8(invite("m2")).unwrap().replace(
        "Contact:",
        "P-Asserted-Identity: <sip:+19995550000@10.0.0.1>\r\nContact:",
    );
    h.receive(CARRIER, vip.as_bytes());
    assert_eq!(h.count_to(SECONDARY, "INVITE"), 2);
    h.receive(CARRIER, &invite("m3"));
    assert_eq!(h.count_to(PRIMARY, "INVITE"), 1);
}

#[test]
fn calls_in_progress_per_destination_end_at_failover_and_at_bye() {
    let mut h = Harness::new();
    let in_progress = |h: &Harness, d: u32| {
        h.core
            .routing()
            .health
            .get(DestId(d))
            .map(|x| x.snapshot(h.now).calls_in_progress)
    };
    h.receive(CARRIER, &invite("cip"));
    assert_eq!(in_progress(&h, 0), Some(1));
    h.advance(Duration::from_secs(3));
    assert_eq!(
        in_progress(&h, 0),
        Some(0),
        "given up: no longer the primary's call"
    );
    assert_eq!(in_progress(&h, 1), Some(1));
    let to_secondary = h.last_to(SECONDARY, "INVITE");
    h.receive(SECONDARY, &response_to(&to_secondary, 200, "s"));
    // Long after every transaction ended, the answered call still counts...
    h.advance(Duration::from_secs(120));
    assert_eq!(in_progress(&h, 1), Some(1));
    assert_eq!(h.core.answered_calls(), 1);
    // ... until its BYE is answered.
    let ok = h.last_to(CARRIER, "SIP/2.0 200");
    let rr = header(&ok, "Record-Route").unwrap().to_string();
    let bye = format!("BYE sip:agent@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-cipbye\r\nMax-Forwards: 70\r\nRoute: {rr}\r\nFrom: \"Carrier\" <sip:+15550000@10.0.0.1>;tag=c1\r\nTo: <sip:+15551234@192.0.2.10>;tag=s\r\nCall-ID: cip\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n");
    h.receive(CARRIER, bye.as_bytes());
    let fwd_bye = h.last_to(SECONDARY, "BYE");
    h.receive(SECONDARY, &response_to(&fwd_bye, 200, "s"));
    assert_eq!(in_progress(&h, 1), Some(0));
    assert_eq!(h.core.answered_calls(), 0);
}

#[test]
fn a_call_to_a_silent_destination_that_nobody_acks_leaves_no_state_behind() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("silent-all"));
    // Both destinations stay silent; the carrier never ACKs pointsman's 503.
    h.advance(Duration::from_secs(120));
    assert!(h.count_to(CARRIER, "SIP/2.0 503") >= 1);
    assert_eq!(h.core.table_sizes(), (0, 0, 0));
}

mod tls {
    //! TLS legs: the Via token, Record-Route's `transport=tls` and TLS port, and in-dialog
    //! requests towards `sips:` and `transport=tls` URIs.
    use super::*;
    use routing_rules::spec::TransportSpec;

    /// A harness whose primary is a TLS destination and whose TLS listener is on 5061.
    fn tls_primary() -> Harness {
        let mut h = Harness::with(|r| r.destinations[0].transport = TransportSpec::Tls);
        h.core.cfg.tls_port = Some(5061);
        h.core.advertised = Advertised::new(&h.core.cfg);
        h
    }

    /// What the core sends for `bytes` from `from`, with the transport of each send.
    fn sends(h: &mut Harness, from: &str, bytes: &[u8]) -> Vec<(Peer, String)> {
        let mut out = Vec::new();
        h.core
            .on_message(Inbound::datagram(bytes, addr(from)), h.now, &mut out);
        out.into_iter()
            .filter_map(|o| match o {
                Output::Send { to, bytes, .. } => Some((to, first_line(&bytes))),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_tls_destination_gets_a_tls_via_and_a_record_route_per_leg() {
        let mut h = tls_primary();
        let sent = sends(&mut h, CARRIER, &invite("t1"));
        let (to, _) = sent
            .iter()
            .find(|(_, l)| l.starts_with("INVITE"))
            .expect("INVITE forwarded");
        assert_eq!((to.proto, to.addr), (Proto::Tls, addr(PRIMARY)));
        h.receive(CARRIER, &invite("t2"));
        let fwd = h.last_to(PRIMARY, "INVITE");
        let via = header(&fwd, "Via").unwrap();
        assert!(via.starts_with("SIP/2.0/TLS 192.0.2.10:5061;"), "{via}");
        // The TLS leg's value first (the callee reads it), then the carrier's UDP leg.
        let rr = header(&fwd, "Record-Route").unwrap();
        assert!(
            rr.starts_with(&format!(
                "<sip:192.0.2.10:5061;transport=tls;lr;psn=7;psd={};",
                psd_token("primary")
            )) && rr.contains(&format!(
                ", <sip:192.0.2.10:5060;lr;psn=7;psd={};",
                psd_token("primary")
            )),
            "{rr}"
        );
    }

    #[test]
    fn a_via_of_ours_on_the_tls_port_still_detects_a_loop() {
        let mut h = tls_primary();
        h.receive(CARRIER, &invite("loop"));
        let fwd = h.last_to(PRIMARY, "INVITE");
        // The request comes back to pointsman unchanged (its TLS Via on top).
        h.receive(PRIMARY, &fwd);
        assert_eq!(h.count_to(PRIMARY, "SIP/2.0 482"), 1);
    }

    #[test]
    fn in_dialog_requests_to_sips_and_transport_tls_uris_go_over_tls() {
        let mut h = Harness::new();
        h.receive(CARRIER, &invite("t3"));
        let fwd = h.last_to(PRIMARY, "INVITE");
        h.receive(PRIMARY, &response_to(&fwd, 200, "p"));
        let ok = h.last_to(CARRIER, "SIP/2.0 200");
        let rr = header(&ok, "Record-Route").unwrap().to_string();
        let bye = |n: u32, target: &str| {
            format!(
                "BYE {target} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-tb{n}\r\n\
                 Max-Forwards: 70\r\nRoute: {rr}\r\nFrom: <sip:+15551234@192.0.2.10>;tag=p\r\n\
                 To: \"Carrier\" <sip:+15550000@10.0.0.1>;tag=c1\r\nCall-ID: t3\r\n\
                 CSeq: {n} BYE\r\nContent-Length: 0\r\n\r\n"
            )
        };
        for (n, target, proto, to) in [
            (1, "sips:+15550000@10.0.0.1", Proto::Tls, "10.0.0.1:5061"),
            (
                2,
                "sip:+15550000@10.0.0.1:5070;transport=tls",
                Proto::Tls,
                "10.0.0.1:5070",
            ),
            (
                3,
                "sip:+15550000@10.0.0.1;transport=TCP",
                Proto::Tcp,
                "10.0.0.1:5060",
            ),
        ] {
            let sent = sends(&mut h, PRIMARY, bye(n, target).as_bytes());
            let (peer, _) = sent
                .iter()
                .find(|(_, l)| l.starts_with("BYE"))
                .unwrap_or_else(|| panic!("{target}: no BYE forwarded: {sent:?}"));
            assert_eq!((peer.proto, peer.addr), (proto, addr(to)), "{target}");
        }
    }
}

#[test]
fn new_calls_beyond_the_answered_calls_cap_get_503_and_calls_in_progress_go_on() {
    let mut h = Harness::new();
    let mut cfg = h.core.config().clone();
    cfg.guard.max_calls = 1;
    let routing = h.core.routing();
    let routing = Routing::new(
        routing.router.clone(),
        routing.addrs.clone(),
        routing.health.clone(),
        routing.metrics.clone(),
    );
    h.core = Core::new(cfg, routing, h.now, 0x5eed);
    h.receive(CARRIER, &invite("cap-1"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &response_to(&fwd, 200, "p"));
    assert_eq!(h.core.answered_calls(), 1);
    h.receive(CARRIER, &invite("cap-2"));
    let refused = h.last_to(CARRIER, "SIP/2.0 503");
    assert!(header(&refused, "Retry-After").is_some());
    assert_eq!(
        h.count_to(PRIMARY, "INVITE"),
        1,
        "the second call went nowhere"
    );
    // The answered call's in-dialog requests still pass.
    let ok = h.last_to(CARRIER, "SIP/2.0 200");
    let rr = header(&ok, "Record-Route").unwrap().to_string();
    let info = format!("INFO sip:agent@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-capinfo\r\nMax-Forwards: 70\r\nRoute: {rr}\r\nFrom: \"Carrier\" <sip:+15550000@10.0.0.1>;tag=c1\r\nTo: <sip:+15551234@192.0.2.10>;tag=p\r\nCall-ID: cap-1\r\nCSeq: 2 INFO\r\nContent-Length: 0\r\n\r\n");
    h.receive(CARRIER, info.as_bytes());
    assert_eq!(h.count_to(PRIMARY, "INFO"), 1);
}

#[test]
fn ring_timeout_counts_from_the_first_provisional_even_when_armed_by_the_provisional_timer() {
    let mut h = Harness::with(|r| r.routes[0].ring_timeout = Duration::from_secs(30));
    h.receive(CARRIER, &invite("rl"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.advance(Duration::from_millis(500));
    h.receive(PRIMARY, &response_to(&fwd, 100, ""));
    h.advance(Duration::from_secs(1));
    h.receive(PRIMARY, &response_to(&fwd, 180, "p"));
    // The first provisional came at 0.5 s: the ring timeout ends at 30.5 s.
    h.advance(Duration::from_millis(28_900));
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 408"), 0);
    h.advance(Duration::from_millis(200));
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 408"), 1);
    assert_eq!(h.count_to(PRIMARY, "CANCEL"), 1);
}

#[test]
fn ring_timeout_shorter_than_the_provisional_timer_still_ends_the_call_on_time() {
    let mut h = Harness::with(|r| r.routes[0].ring_timeout = Duration::from_secs(2));
    h.receive(CARRIER, &invite("rs"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &response_to(&fwd, 180, "p"));
    h.advance(Duration::from_millis(1_900));
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 408"), 0);
    h.advance(Duration::from_millis(200));
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 408"), 1);
}

#[test]
fn answered_calls_leave_no_timer_beyond_the_retransmission_windows() {
    // Every armed timer is held by a worker's wheel until it falls due: per-call timers hours
    // or minutes out would pile up at thousands of calls per second.
    let mut h = Harness::new();
    for i in 0..20 {
        let id = format!("t{i}");
        h.receive(CARRIER, &invite(&id));
        let fwd = h.last_to(PRIMARY, "INVITE");
        h.receive(PRIMARY, &response_to(&fwd, 100, ""));
        h.receive(PRIMARY, &response_to(&fwd, 180, "p"));
        h.receive(PRIMARY, &response_to(&fwd, 200, "p"));
    }
    let horizon = h.now + TimerConfig::default().t1x64();
    let late: Vec<_> = h
        .timers
        .iter()
        .filter(|(at, t)| *at > horizon && t.kind != TimerKind::Sweep)
        .collect();
    assert!(late.is_empty(), "{late:?}");
    let sweeps = h
        .timers
        .iter()
        .filter(|(_, t)| t.kind == TimerKind::Sweep)
        .count();
    assert_eq!(sweeps, 1, "one sweep for the whole core, not one per call");
}

#[test]
fn the_sweep_forgets_answered_calls_after_the_longest_call_and_then_stops() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("long"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &response_to(&fwd, 200, "p"));
    assert_eq!(h.core.answered_calls(), 1);
    h.advance(MAX_CALL_DURATION - Duration::from_secs(60));
    assert_eq!(h.core.answered_calls(), 1, "a long call is still counted");
    h.advance(Duration::from_secs(80));
    assert_eq!(h.core.answered_calls(), 0);
    assert_eq!(h.core.table_sizes(), (0, 0, 0));
    assert_eq!(
        h.core.table_room(),
        0,
        "the last sweep gave the tables' room back"
    );
    assert!(h.timers.is_empty(), "nothing held: the sweep stops");
}

/// Fires the sweep alone at `h.now`; returns when it wants to run next.
fn sweep_step(h: &mut Harness) -> Instant {
    let mut out = Vec::new();
    let sweep = CoreTimer {
        key: 0,
        kind: TimerKind::Sweep,
    };
    h.core.on_timer(sweep, h.now, &mut out);
    let next: Vec<Instant> = out
        .iter()
        .filter_map(|o| match o {
            Output::Timer { at, timer } if timer.kind == TimerKind::Sweep => Some(*at),
            _ => None,
        })
        .collect();
    assert_eq!(next.len(), 1, "one sweep timer after each step: {next:?}");
    next[0]
}

/// (entries, room) of every shard of a table.
fn shard_fill<V>(table: &KeyMap<V>) -> Vec<(usize, usize)> {
    table
        .shards()
        .iter()
        .map(|shard| {
            let s = shard.read();
            (s.len(), s.capacity())
        })
        .collect()
}

#[test]
fn a_sweep_over_large_tables_goes_shard_by_shard_in_short_steps() {
    // 10,000 calls being set up: a server and a client transaction each, in tables that grew
    // as they filled, so many shards are more than half full and the sweep must grow them.
    const CALLS: usize = 10_000;
    let mut h = Harness::new();
    for i in 0..CALLS {
        // Under the carrier's default rate limit (100 calls/s); no timer is fired meanwhile.
        h.now += Duration::from_millis(11);
        h.receive(CARRIER, &invite(&format!("sweep{i}")));
    }
    assert_eq!(h.count_to(PRIMARY, "INVITE"), CALLS);
    let fill = |core: &Core| [shard_fill(&core.servers), shard_fill(&core.clients)].concat();
    let to_move: usize = fill(&h.core)
        .iter()
        .filter(|(len, room)| 2 * len > *room)
        .map(|(len, _)| len)
        .sum();
    let largest_shard = fill(&h.core).iter().map(|(len, _)| *len).max().unwrap_or(0);
    assert!(
        to_move > 4 * (SWEEP_STEP_WORK + largest_shard),
        "{to_move} entries to move: too few to need several steps"
    );
    h.timers.clear(); // the sweep is fired by hand, alone

    let mut steps = 1;
    let mut next = sweep_step(&mut h);
    while next != h.now + SWEEP_EVERY {
        assert_eq!(next, h.now + SWEEP_STEP, "a pass goes on shortly");
        h.now = next;
        next = sweep_step(&mut h);
        steps += 1;
        assert!(steps <= SWEEP_UNITS, "a pass ends");
    }
    // No step moved more than its budget and one shard past it.
    assert!(
        steps * (SWEEP_STEP_WORK + largest_shard) >= to_move,
        "{steps} steps moved {to_move} entries"
    );
    // Every shard is now at most half full, so the next pass moves nothing: one step.
    for (len, room) in fill(&h.core) {
        assert!(2 * len <= room, "{len} in {room}");
    }
    h.now = next;
    assert_eq!(sweep_step(&mut h), h.now + SWEEP_EVERY);
    // The core took calls as usual all along.
    h.receive(CARRIER, &invite("after-the-sweep"));
    assert_eq!(h.count_to(PRIMARY, "INVITE"), CALLS + 1);
}

#[test]
fn a_settled_answered_call_keeps_only_tombstones_that_still_do_their_job() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("ts"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &response_to(&fwd, 100, ""));
    h.receive(PRIMARY, &response_to(&fwd, 200, "p"));
    // The INVITE arrives again (its 100 was lost): absorbed, never a second call.
    h.receive(CARRIER, &invite("ts"));
    assert_eq!(h.count_to(PRIMARY, "INVITE"), 1);
    // The callee retransmits its 2xx: relayed (RFC 6026), never torn down as a ghost.
    h.receive(PRIMARY, &response_to(&fwd, 200, "p"));
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 200"), 2);
    assert_eq!(h.count_to(PRIMARY, "BYE"), 0);
    // A CANCEL that crossed the 2xx gets its 200 and changes nothing (RFC 3261 §9.2).
    let cancel = b"CANCEL sip:+15551234@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-carrier-ts\r\nMax-Forwards: 70\r\nFrom: \"Carrier\" <sip:+15550000@10.0.0.1>;tag=c1\r\nTo: <sip:+15551234@192.0.2.10>\r\nCall-ID: ts\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n";
    h.receive(CARRIER, cancel);
    assert_eq!(
        h.count_to(CARRIER, "SIP/2.0 200"),
        3,
        "{:?}",
        h.lines_to(CARRIER)
    );
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 487"), 0);
    assert_eq!(h.count_to(PRIMARY, "CANCEL"), 0);
    // After 64·T1 nothing of the INVITE is left (the CANCEL's own answer goes at Timer J too).
    h.advance(Duration::from_secs(33));
    let (servers, clients, dialogs) = h.core.table_sizes();
    assert_eq!((servers, clients, dialogs), (0, 0, 1));
}

#[test]
fn a_relayed_bye_answers_its_retransmission_after_the_final_and_absorbs_the_callees() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("rb"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &response_to(&fwd, 200, "p"));
    let ok = h.last_to(CARRIER, "SIP/2.0 200");
    let rr = header(&ok, "Record-Route").unwrap().to_string();
    let bye = format!("BYE sip:agent@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-byerb\r\nMax-Forwards: 70\r\nRoute: {rr}\r\nFrom: \"Carrier\" <sip:+15550000@10.0.0.1>;tag=c1\r\nTo: <sip:+15551234@192.0.2.10>;tag=p\r\nCall-ID: rb\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n");
    h.receive(CARRIER, bye.as_bytes());
    let fwd_bye = h.last_to(PRIMARY, "BYE");
    h.receive(PRIMARY, &response_to(&fwd_bye, 200, "p"));
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 200"), 2);
    // The callee's 200 comes again: absorbed.
    h.receive(PRIMARY, &response_to(&fwd_bye, 200, "p"));
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 200"), 2);
    // The carrier's BYE comes again (it lost our 200): answered from memory, not relayed.
    h.receive(CARRIER, bye.as_bytes());
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 200"), 3);
    assert_eq!(h.count_to(PRIMARY, "BYE"), 1);
    assert_eq!(h.core.answered_calls(), 0);
    h.advance(Duration::from_secs(33));
    assert_eq!(h.core.table_sizes().0, 0);
}

proptest::proptest! {
    #[test]
    fn hand_written_hex_and_decimal_match_the_formatting_machinery(
        n in proptest::prelude::any::<u64>(),
        width in 0usize..=16,
        small in proptest::prelude::any::<u8>(),
    ) {
        let mut hex = String::new();
        push_hex(&mut hex, n, width);
        proptest::prop_assert_eq!(hex, format!("{n:0width$x}"));
        let mut buf = [0u8; 3];
        let decimal = small.to_string();
        proptest::prop_assert_eq!(write_decimal(&mut buf, small), decimal.as_bytes());
    }
}

#[test]
fn the_transaction_cap_counts_calls_in_progress_not_answered_ones_absorbing_retransmissions() {
    let mut h = Harness::new();
    h.core.cfg.guard.max_transactions = 2;
    // Answered calls only absorb retransmissions for 64·T1: they do not hold the cap.
    for i in 0..5 {
        let id = format!("cap{i}");
        h.receive(CARRIER, &invite(&id));
        let fwd = h.last_to(PRIMARY, "INVITE");
        h.receive(PRIMARY, &response_to(&fwd, 200, "p"));
    }
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 503"), 0);
    assert_eq!(h.core.transactions_in_progress(), 0);
    // Two calls ringing fill it: the third is shed with 503.
    for id in ["ring1", "ring2"] {
        h.receive(CARRIER, &invite(id));
        let fwd = h.last_to(PRIMARY, "INVITE");
        h.receive(PRIMARY, &response_to(&fwd, 180, "p"));
    }
    assert_eq!(h.core.transactions_in_progress(), 2);
    h.receive(CARRIER, &invite("third"));
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 503"), 1);
    // Ring timeouts end them (408): nothing is left in progress.
    h.advance(Duration::from_secs(200));
    assert_eq!(h.core.transactions_in_progress(), 0);
}

#[test]
fn timers_that_end_a_window_may_fire_later_than_retransmissions_and_failover() {
    let timer = |kind| CoreTimer { key: 1, kind };
    for t in [TxTimer::A, TxTimer::B, TxTimer::E, TxTimer::F, TxTimer::G] {
        assert_eq!(timer(TimerKind::Client(t)).slack(), PROMPT_SLACK, "{t:?}");
        assert_eq!(timer(TimerKind::Server(t)).slack(), PROMPT_SLACK, "{t:?}");
    }
    for kind in [
        TimerKind::Provisional,
        TimerKind::Ring,
        TimerKind::CancelGiveUp,
    ] {
        assert_eq!(
            timer(kind).slack(),
            PROMPT_SLACK,
            "{kind:?}: failover timing"
        );
    }
    for t in [
        TxTimer::D,
        TxTimer::H,
        TxTimer::I,
        TxTimer::J,
        TxTimer::K,
        TxTimer::L,
        TxTimer::M,
    ] {
        assert_eq!(timer(TimerKind::Client(t)).slack(), WINDOW_SLACK, "{t:?}");
    }
    assert_eq!(timer(TimerKind::Sweep).slack(), WINDOW_SLACK);
    assert_eq!(timer(TimerKind::GhostExpire).slack(), WINDOW_SLACK);
    // A few percent of T1: a retransmission is never noticeably late.
    assert!(PROMPT_SLACK * 20 <= TimerConfig::default().t1);
}

// ---- carrier-grade defaults, conformance, counters that tell the truth --------------------

/// `resp` with the carrier's Via line (the one below ours) replaced by `with` (nothing: removed).
fn lower_via_replaced(resp: &[u8], with: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(resp);
    let lines: Vec<String> = text
        .split("\r\n")
        .filter_map(|l| {
            if l.starts_with("Via: SIP/2.0/UDP 10.0.0.1:5060") {
                (!with.is_empty()).then(|| with.to_string())
            } else {
                Some(l.to_string())
            }
        })
        .collect();
    lines.join("\r\n").into_bytes()
}

#[test]
fn a_100_with_no_via_to_relay_it_on_still_stops_the_failover_timer() {
    for lower in ["", "Via: SIP/2.0/UDP ;;;broken"] {
        let mut h = Harness::new();
        h.receive(CARRIER, &invite("r100"));
        let fwd = h.last_to(PRIMARY, "INVITE");
        h.receive(
            PRIMARY,
            &lower_via_replaced(&response_to(&fwd, 100, "p"), lower),
        );
        h.advance(Duration::from_secs(10));
        assert_eq!(
            h.count_to(SECONDARY, "INVITE"),
            0,
            "the primary answered (lower Via {lower:?}): no failover"
        );
        assert_eq!(h.count_to(PRIMARY, "CANCEL"), 0);
        assert_eq!(
            h.count_to(PRIMARY, "INVITE"),
            1,
            "no retransmission after its 100"
        );
        assert_eq!(h.dropped("unrelayable"), 1.0);
    }
}

#[test]
fn a_ringing_180_that_cannot_be_relayed_stops_the_timer_and_goes_no_further() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("r180"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.receive(
        PRIMARY,
        &lower_via_replaced(&response_to(&fwd, 180, "p"), ""),
    );
    h.advance(Duration::from_secs(5));
    assert_eq!(h.lines_to(CARRIER), vec!["SIP/2.0 100 Trying"]);
    assert_eq!(h.count_to(SECONDARY, "INVITE"), 0);
    // Its answer, relayable, still reaches the caller.
    h.receive(PRIMARY, &response_to(&fwd, 200, "p"));
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 200"), 1);
}

#[test]
fn a_2xx_that_cannot_be_relayed_is_torn_down_and_the_call_fails_over() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("r200"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.receive(
        PRIMARY,
        &lower_via_replaced(&response_to(&fwd, 200, "p"), ""),
    );
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 200"), 0, "never relayed");
    let ack = h.position(PRIMARY, "ACK").expect("the 2xx is ACKed");
    let bye = h.position(PRIMARY, "BYE").expect("and ended with BYE");
    let next = h.position(SECONDARY, "INVITE").expect("502 fails over");
    assert!(ack < bye && bye < next);
    let fwd2 = h.last_to(SECONDARY, "INVITE");
    h.receive(SECONDARY, &response_to(&fwd2, 200, "s"));
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 200"), 1);
    assert!(header(&h.last_to(CARRIER, "SIP/2.0 200"), "To")
        .unwrap()
        .contains("tag=s"));
}

#[test]
fn a_final_that_cannot_be_relayed_reaches_the_caller_as_pointsmans_own_response() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("r486"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.receive(
        PRIMARY,
        &lower_via_replaced(&response_to(&fwd, 486, "p"), ""),
    );
    assert_eq!(h.count_to(PRIMARY, "ACK"), 1, "the 486 is ACKed hop by hop");
    let busy = h.last_to(CARRIER, "SIP/2.0 486");
    assert_eq!(
        header(&busy, "Via"),
        Some("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-carrier-r486"),
        "built from the caller's INVITE"
    );
    assert_eq!(h.count_to(SECONDARY, "INVITE"), 0, "486 does not fail over");
}

/// A request inside the dialog of call `call_id` answered by the primary (tag `p`), from the
/// carrier (`from_carrier`) or the callee, without any Route: a peer that dropped the
/// Record-Route set.
fn in_dialog_without_route(method: &str, call_id: &str, from_carrier: bool, cseq: u32) -> Vec<u8> {
    let (ruri, via, from, to) = if from_carrier {
        (
            "sip:agent@127.0.0.1:5070",
            "10.0.0.1:5060",
            "\"Carrier\" <sip:+15550000@10.0.0.1>;tag=c1",
            "<sip:+15551234@192.0.2.10>;tag=p",
        )
    } else {
        (
            "sip:+15550000@10.0.0.1:5060",
            "127.0.0.1:5070",
            "<sip:+15551234@192.0.2.10>;tag=p",
            "\"Carrier\" <sip:+15550000@10.0.0.1>;tag=c1",
        )
    };
    format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bK-{method}{cseq}\r\n\
         Max-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn in_dialog_requests_without_a_route_follow_their_answered_dialog() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("nr1"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &response_to(&fwd, 200, "p"));
    assert_eq!(h.core.answered_calls(), 1);
    h.receive(CARRIER, &in_dialog_without_route("ACK", "nr1", true, 1));
    assert_eq!(h.count_to(PRIMARY, "ACK"), 1, "the ACK follows the dialog");
    // The callee's re-INVITE goes back to the carrier.
    h.receive(PRIMARY, &in_dialog_without_route("INVITE", "nr1", false, 2));
    assert_eq!(h.count_to(CARRIER, "INVITE"), 1);
    // The carrier's BYE reaches the callee, and its answer ends the call.
    h.receive(CARRIER, &in_dialog_without_route("BYE", "nr1", true, 3));
    let bye = h.last_to(PRIMARY, "BYE");
    h.receive(PRIMARY, &response_to(&bye, 200, "p"));
    assert_eq!(
        h.count_to(CARRIER, "SIP/2.0 200"),
        2,
        "the 2xx and the BYE's 200"
    );
    assert_eq!(h.core.answered_calls(), 0, "the call ended");
    assert_eq!(h.dropped("unroutable"), 0.0);
}

#[test]
fn a_bye_from_the_callee_ends_the_answered_call_too() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("nr2"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &response_to(&fwd, 200, "p"));
    h.receive(PRIMARY, &in_dialog_without_route("BYE", "nr2", false, 5));
    let bye = h.last_to(CARRIER, "BYE");
    let ok = String::from_utf8_lossy(&response_to(&bye, 200, "x"))
        .replace(";tag=x", "")
        .into_bytes();
    h.receive(CARRIER, &ok);
    assert_eq!(h.count_to(PRIMARY, "SIP/2.0 200"), 1);
    assert_eq!(h.core.answered_calls(), 0);
}

#[test]
fn an_in_dialog_request_for_no_known_dialog_gets_481_and_its_ack_is_counted() {
    let mut h = Harness::new();
    h.receive(CARRIER, &in_dialog_without_route("BYE", "unknown", true, 2));
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 481"), 1);
    assert_eq!(h.count_to(PRIMARY, "BYE"), 0);
    h.receive(CARRIER, &in_dialog_without_route("ACK", "unknown", true, 1));
    assert_eq!(h.sent.len(), 1, "an ACK is never answered");
    assert_eq!(h.dropped("unroutable"), 1.0);
}

fn options(extra: &str, ruri: &str) -> Vec<u8> {
    format!(
        "OPTIONS {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-opt\r\n\
         Max-Forwards: 70\r\nFrom: <sip:ping@10.0.0.1>;tag=o\r\nTo: <sip:192.0.2.10>\r\n\
         Call-ID: opt\r\nCSeq: 1 OPTIONS\r\n{extra}Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn options_that_requires_an_extension_gets_420_with_unsupported() {
    let mut h = Harness::new();
    h.receive(
        CARRIER,
        &options("Require: nothingweknow, 100rel\r\n", "sip:192.0.2.10"),
    );
    let resp = h.last_to(CARRIER, "SIP/2.0 420");
    assert_eq!(header(&resp, "Unsupported"), Some("nothingweknow, 100rel"));
}

#[test]
fn proxy_require_is_checked_on_in_dialog_requests_too() {
    let mut h = Harness::new();
    let bye = String::from_utf8(in_dialog_without_route("BYE", "pr", true, 2))
        .unwrap()
        .replace(
            "Max-Forwards: 70\r\n",
            "Max-Forwards: 70\r\nProxy-Require: foo\r\n",
        );
    h.receive(CARRIER, bye.as_bytes());
    let resp = h.last_to(CARRIER, "SIP/2.0 420");
    assert_eq!(header(&resp, "Unsupported"), Some("foo"));
}

#[test]
fn a_request_uri_of_an_unknown_scheme_gets_416_whatever_the_method() {
    let mut h = Harness::new();
    h.receive(
        CARRIER,
        &options("", "nobodyKnowsThisScheme:totallyopaquecontent"),
    );
    assert_eq!(
        h.count_to(CARRIER, "SIP/2.0 416"),
        1,
        "{:?}",
        h.lines_to(CARRIER)
    );
    for method in ["INVITE", "MESSAGE"] {
        let req = String::from_utf8(invite(&format!("scheme-{method}")))
            .unwrap()
            .replace(
                "INVITE sip:+15551234@192.0.2.10",
                &format!("{method} http:+15551234@192.0.2.10"),
            )
            .replace("CSeq: 1 INVITE", &format!("CSeq: 1 {method}"));
        h.receive(CARRIER, req.as_bytes());
    }
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 416"), 3);
    assert_eq!(
        h.count_to(PRIMARY, ""),
        0,
        "never routed (not on the To header either)"
    );
}

#[test]
fn headers_in_the_request_uri_are_stripped_before_forwarding() {
    let mut h = Harness::new();
    let req = String::from_utf8(invite("esc")).unwrap().replace(
        "INVITE sip:+15551234@192.0.2.10 SIP/2.0",
        "INVITE sip:+15551234@192.0.2.10;user=phone?Route=%3Csip:evil.example%3E&X=1 SIP/2.0",
    );
    h.receive(CARRIER, req.as_bytes());
    assert_eq!(
        first_line(&h.last_to(PRIMARY, "INVITE")),
        "INVITE sip:+15551234@192.0.2.10;user=phone SIP/2.0"
    );
}

#[test]
fn a_request_with_as_many_vias_as_max_forwards_allows_is_proxied() {
    let mut h = Harness::new();
    let mut vias = String::new();
    for n in 0..70 {
        vias.push_str(&format!(
            "Via: SIP/2.0/UDP 10.0.{}.{}:5060;branch=z9hG4bK-hop{n}\r\n",
            n / 250,
            n % 250 + 1
        ));
    }
    let req = String::from_utf8(invite("longreq")).unwrap().replace(
        "Max-Forwards: 70\r\n",
        &format!("{vias}Max-Forwards: 1\r\n"),
    );
    h.receive(CARRIER, req.as_bytes());
    assert_eq!(
        h.count_to(PRIMARY, "INVITE"),
        1,
        "{:?}",
        h.lines_to(CARRIER)
    );
}

#[test]
fn a_response_that_cannot_reach_the_caller_ends_its_transaction_and_cancels_the_call() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("gone"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &response_to(&fwd, 180, "p"));
    let at = h
        .sent
        .iter()
        .rposition(|(a, l, _)| *a == addr(CARRIER) && l.starts_with("SIP/2.0 180"))
        .expect("180 relayed");
    let key = h.reports[at].expect("a response reports its delivery failure");
    let mut out = Vec::new();
    h.core.on_delivery_failure(key, h.now, &mut out);
    h.absorb(out);
    let cancel = h.last_to(PRIMARY, "CANCEL");
    assert!(header(&cancel, "Reason").unwrap().contains("cause=480"));
    assert_eq!(
        h.core.calls_in_setup(),
        0,
        "a stopping node does not wait for it"
    );
    h.receive(PRIMARY, &response_to(&fwd, 487, "p"));
    h.advance(Duration::from_secs(200));
    assert_eq!(h.count_to(SECONDARY, "INVITE"), 0, "no branch starts after");
    assert_eq!(h.core.table_sizes(), (0, 0, 0), "nothing left behind");
}

// ---- every drop is counted under what happened ----

#[test]
fn a_stranger_outside_the_allow_list_is_counted_as_acl() {
    let mut h = Harness::with_config(|cfg| {
        cfg.acls = vec![crate::guard::Acl {
            allow: Some(vec![crate::guard::Cidr::parse("10.0.0.1").unwrap()]),
        }];
    });
    h.receive("203.0.113.5:5060", &invite("stranger"));
    assert!(h.sent.is_empty());
    assert_eq!(h.dropped("acl"), 1.0);
}

#[test]
fn a_scanner_is_counted_as_scanner_not_acl() {
    let mut h = Harness::new();
    h.receive(
        CARRIER,
        &options("User-Agent: friendly-scanner\r\n", "sip:192.0.2.10"),
    );
    assert!(h.sent.is_empty());
    assert_eq!((h.dropped("scanner"), h.dropped("acl")), (1.0, 0.0));
}

#[test]
fn a_new_invite_shed_under_overload_is_counted_as_overload() {
    let mut h = Harness::new();
    h.receive_with(CARRIER, &invite("shed"), |inb| inb.overloaded = true);
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 503"), 1);
    assert_eq!(h.dropped("overload"), 1.0);
}

#[test]
fn garbage_is_counted_as_malformed() {
    let mut h = Harness::new();
    h.receive(CARRIER, b"\x00\x01garbage\xff");
    assert_eq!(h.dropped("malformed"), 1.0);
}

#[test]
fn a_response_for_no_transaction_is_counted_as_stray() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("stray"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    let other = String::from_utf8(response_to(&fwd, 180, "p"))
        .unwrap()
        .replace("branch=z9hG4bK-ps", "branch=z9hG4bK-xx");
    h.receive(PRIMARY, other.as_bytes());
    assert_eq!(h.dropped("stray"), 1.0);
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 180"), 0);
}

// ---- per-source rate limits never throttle a carrier by default ----

fn new_invites(h: &mut Harness, from: &str, n: usize) -> (usize, usize) {
    let batch = h.sent.len();
    for i in 0..n {
        h.receive(from, &invite(&format!("rate-{from}-{batch}-{i}")));
    }
    (
        h.count_to(PRIMARY, "INVITE"),
        h.count_to(from, "SIP/2.0 503"),
    )
}

#[test]
fn by_default_an_allowed_carrier_and_a_destination_are_never_rate_limited() {
    let mut h = Harness::with_config(|cfg| {
        cfg.acls = vec![crate::guard::Acl {
            allow: Some(vec![crate::guard::Cidr::parse("10.0.0.0/24").unwrap()]),
        }];
    });
    // 30,000 new calls at one instant: far past any per-source burst.
    assert_eq!(new_invites(&mut h, CARRIER, 30_000), (30_000, 0));
    assert_eq!(h.dropped("rate_limit"), 0.0);
    let before = h.count_to(PRIMARY, "INVITE");
    for i in 0..30_000 {
        h.receive(SECONDARY, &invite(&format!("from-cloud-{i}")));
    }
    assert_eq!(h.count_to(PRIMARY, "INVITE") - before, 30_000);
}

#[test]
fn by_default_an_unlisted_source_gets_a_rate_no_trunk_reaches_and_a_flood_is_dropped() {
    let mut h = Harness::new();
    let d = crate::guard::GuardConfig::default();
    assert!(d.rate >= 5_000.0 && d.allowed_rate.is_none(), "{d:?}");
    let burst = d.burst as usize;
    let (forwarded, refused) = new_invites(&mut h, CARRIER, burst + 50);
    assert_eq!(
        (forwarded, refused),
        (burst, 0),
        "past the burst: dropped, not answered"
    );
    assert_eq!(h.dropped("rate_limit"), 50.0);
    // A second later, a second's worth of calls gets through again.
    h.now += Duration::from_secs(1);
    let (forwarded, _) = new_invites(&mut h, CARRIER, d.rate as usize);
    assert_eq!(forwarded, burst + d.rate as usize);
}

#[test]
fn an_allowed_source_past_allowed_rate_gets_503_with_retry_after_never_silence() {
    let mut h = Harness::with_config(|cfg| {
        cfg.acls = vec![crate::guard::Acl {
            allow: Some(vec![crate::guard::Cidr::parse("10.0.0.1").unwrap()]),
        }];
        cfg.guard.allowed_rate = Some(10.0);
        cfg.guard.allowed_burst = 20.0;
    });
    assert_eq!(new_invites(&mut h, CARRIER, 25), (20, 5));
    let busy = h.last_to(CARRIER, "SIP/2.0 503");
    assert_eq!(header(&busy, "Retry-After"), Some("5"));
    assert_eq!(h.dropped("rate_limit"), 5.0);
}

// ---- the call log says why each branch was given up ----

/// Runs `f` with a subscriber that writes INFO logs into the returned text.
fn logged(f: impl FnOnce()) -> String {
    #[derive(Clone)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf(Arc::new(Mutex::new(Vec::new())));
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&lock(&buf.0)).into_owned();
    text
}

#[test]
fn the_call_log_names_a_timed_out_branch_timeout_not_the_487_to_our_cancel() {
    let log = logged(|| {
        let mut h = Harness::new();
        h.receive(CARRIER, &invite("why"));
        let fwd1 = h.last_to(PRIMARY, "INVITE");
        h.advance(Duration::from_secs(3));
        // The primary wakes: rings, then answers our CANCEL with 487.
        h.receive(PRIMARY, &response_to(&fwd1, 180, "p"));
        h.receive(PRIMARY, &response_to(&fwd1, 487, "p"));
        let fwd2 = h.last_to(SECONDARY, "INVITE");
        h.receive(SECONDARY, &response_to(&fwd2, 200, "s"));
    });
    assert!(
        log.contains("tried=primary:timeout,secondary:answered"),
        "{log}"
    );
}

#[test]
fn the_call_log_names_a_branch_that_lost_the_race_and_one_the_caller_cancelled() {
    let log = logged(|| {
        let mut h = Harness::rules(&hot_hot(r#"tiers = ["clouds"]"#));
        h.receive(CARRIER, &invite("race"));
        let (p, s) = (h.last_to(PRIMARY, "INVITE"), h.last_to(SECONDARY, "INVITE"));
        h.receive(PRIMARY, &response_to(&p, 180, "p"));
        h.receive(SECONDARY, &response_to(&s, 200, "s"));
        h.receive(PRIMARY, &response_to(&p, 487, "p"));
    });
    assert!(
        log.contains("tried=primary:answered-elsewhere,secondary:answered"),
        "{log}"
    );
    let log = logged(|| {
        let mut h = Harness::new();
        h.receive(CARRIER, &invite("gave-up"));
        let p = h.last_to(PRIMARY, "INVITE");
        h.receive(PRIMARY, &response_to(&p, 180, "p"));
        h.receive(CARRIER, b"CANCEL sip:+15551234@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-carrier-gave-up\r\nMax-Forwards: 70\r\nFrom: \"Carrier\" <sip:+15550000@10.0.0.1>;tag=c1\r\nTo: <sip:+15551234@192.0.2.10>\r\nCall-ID: gave-up\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n");
        h.receive(PRIMARY, &response_to(&p, 487, "p"));
    });
    assert!(log.contains("tried=primary:caller-cancel"), "{log}");
}

#[test]
fn a_bye_answer_that_cannot_be_relayed_still_ends_the_call_with_pointsmans_own_200() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("rbye"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &response_to(&fwd, 200, "p"));
    h.receive(CARRIER, &in_dialog_without_route("BYE", "rbye", true, 2));
    let bye = h.last_to(PRIMARY, "BYE");
    h.receive(
        PRIMARY,
        &lower_via_replaced(&response_to(&bye, 200, "p"), ""),
    );
    let ok = h.last_to(CARRIER, "SIP/2.0 200");
    assert_eq!(header(&ok, "CSeq"), Some("2 BYE"));
    assert_eq!(h.core.answered_calls(), 0);
    assert_eq!(h.dropped("unrelayable"), 1.0);
}

#[test]
fn a_stopping_core_refuses_new_invites_with_503_and_calls_in_setup_still_complete() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("st-ringing"));
    let ringing = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &response_to(&ringing, 180, "p"));
    h.receive(CARRIER, &invite("st-busy"));
    let busy = h.last_to(PRIMARY, "INVITE");
    assert_eq!(h.core.calls_in_setup(), 2);
    h.receive(PRIMARY, &response_to(&busy, 486, "p"));
    assert_eq!(h.core.calls_in_setup(), 1, "a final answer ends the setup");

    h.core.stop_taking_calls();
    assert!(h.core.is_stopping());
    h.receive(CARRIER, &invite("st-new"));
    let refused = h.last_to(CARRIER, "SIP/2.0 503");
    assert_eq!(header(&refused, "Call-ID"), Some("st-new"));
    assert_eq!(header(&refused, "Retry-After"), Some("5"));
    assert_eq!(
        h.count_to(PRIMARY, "INVITE"),
        2,
        "the new call went nowhere"
    );
    assert!(h
        .metrics
        .render()
        .lines()
        .any(|l| l == r#"pointsman_dropped_total{reason="stopping"} 1"#));

    // The call in setup goes on: its answer is relayed and it counts as answered.
    h.receive(PRIMARY, &response_to(&ringing, 200, "p"));
    let ok = h.last_to(CARRIER, "SIP/2.0 200");
    assert_eq!(header(&ok, "Call-ID"), Some("st-ringing"));
    assert_eq!(h.core.calls_in_setup(), 0);
    assert_eq!(h.core.answered_calls(), 1);
    // ... and so does its BYE.
    let rr = header(&ok, "Record-Route").unwrap().to_string();
    let bye = format!("BYE sip:agent@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-stbye\r\nMax-Forwards: 70\r\nRoute: {rr}\r\nFrom: \"Carrier\" <sip:+15550000@10.0.0.1>;tag=c1\r\nTo: <sip:+15551234@192.0.2.10>;tag=p\r\nCall-ID: st-ringing\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n");
    h.receive(CARRIER, bye.as_bytes());
    assert_eq!(h.count_to(PRIMARY, "BYE"), 1);
}

#[path = "replication_tests.rs"]
mod replication_tests;

#[path = "anchor_tests.rs"]
mod anchor_tests;

#[path = "cluster_tests.rs"]
mod cluster_tests;

#[path = "calls_tests.rs"]
mod calls_tests;

// ---- Request-URI per destination ----------------------------------------------------------------

/// `primary` expects its own host, a `+` in front of the number and a tenant parameter;
/// `secondary` takes the carrier's Request-URI as it is.
const REWRITING_RULES: &str = r#"
[[destination]]
name = "primary"
address = "127.0.0.1:5070"
request_uri = { host = "tenant.byoc.example.com", port = 5061, user_prefix = "+", params = ["tgrp=t-1", "user=phone"] }

[[destination]]
name = "secondary"
address = "127.0.0.1:5080"

[[route]]
name = "default"
destinations = ["primary", "secondary"]
"#;

fn request_line(msg: &[u8]) -> String {
    first_line(msg)
}

fn invite_to_uri(call_id: &str, uri: &str) -> Vec<u8> {
    String::from_utf8(invite(call_id))
        .unwrap()
        .replacen("sip:+15551234@192.0.2.10", uri, 1)
        .into_bytes()
}

#[test]
fn a_destination_with_its_own_request_uri_gets_it_on_the_invite_its_cancel_and_its_ack() {
    let mut h = Harness::rules(REWRITING_RULES);
    h.receive(
        CARRIER,
        &invite_to_uri(
            "ru1",
            "sip:15551234@192.0.2.10:5060;user=phone;x=1?Route=%3Csip:evil%3E",
        ),
    );
    let fwd = h.last_to(PRIMARY, "INVITE");
    // The prefix, the host and port, the received parameters less the one it names, its own;
    // the URI's headers are dropped.
    assert_eq!(
        request_line(&fwd),
        "INVITE sip:+15551234@tenant.byoc.example.com:5061;x=1;tgrp=t-1;user=phone SIP/2.0"
    );
    // Everything else is as before: the To still names what the carrier dialled.
    assert_eq!(header(&fwd, "To"), Some("<sip:+15551234@192.0.2.10>"));
    // The primary is silent: its CANCEL carries the same Request-URI (RFC 3261 §9.1), and the
    // secondary gets the carrier's.
    h.advance(Duration::from_secs(3));
    let cancel = h.last_to(PRIMARY, "CANCEL");
    assert_eq!(
        request_line(&cancel),
        "CANCEL sip:+15551234@tenant.byoc.example.com:5061;x=1;tgrp=t-1;user=phone SIP/2.0"
    );
    let fwd2 = h.last_to(SECONDARY, "INVITE");
    assert_eq!(
        request_line(&fwd2),
        "INVITE sip:15551234@192.0.2.10:5060;user=phone;x=1 SIP/2.0"
    );

    // A failure answer on the rewritten branch is ACKed on the same Request-URI.
    h.receive(CARRIER, &invite("ru2"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &response_to(&fwd, 503, "p"));
    let ack = h.last_to(PRIMARY, "ACK");
    assert_eq!(
        request_line(&ack),
        "ACK sip:+15551234@tenant.byoc.example.com:5061;tgrp=t-1;user=phone SIP/2.0"
    );
}

#[test]
fn a_tel_request_uri_becomes_a_sip_uri_at_a_destination_that_names_its_host() {
    let mut h = Harness::rules(&REWRITING_RULES.replace(
        "port = 5061, user_prefix = \"+\", params = [\"tgrp=t-1\", \"user=phone\"]",
        "user_prefix = \"+\"",
    ));
    h.receive(
        CARRIER,
        &invite_to_uri("ru3", "tel:+15551234;phone-context=+1"),
    );
    let fwd = h.last_to(PRIMARY, "INVITE");
    // RFC 3261 §19.1.6: the number with its parameters is the user part; user=phone marks it.
    assert_eq!(
        request_line(&fwd),
        "INVITE sip:+15551234;phone-context=+1@tenant.byoc.example.com;user=phone SIP/2.0"
    );
}

#[test]
fn an_answered_call_through_a_rewritten_request_uri_ends_on_the_destinations_contact() {
    let mut h = Harness::rules(REWRITING_RULES);
    h.receive(CARRIER, &invite("ru4"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &response_to(&fwd, 200, "p"));
    let ok = h.last_to(CARRIER, "SIP/2.0 200");
    // The carrier's BYE goes to the primary (our Record-Route), on the remote target it
    // learned from the 2xx (the agent's Contact), not on the rewritten URI.
    let target = "sip:agent@127.0.0.1:5070";
    let rr = header(&ok, "Record-Route").unwrap().to_string();
    let bye = format!(
        "BYE {target} SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-bye-ru4\r\n\
         Max-Forwards: 70\r\nRoute: {rr}\r\nFrom: \"Carrier\" <sip:+15550000@10.0.0.1>;tag=c1\r\n\
         To: <sip:+15551234@192.0.2.10>;tag=p\r\nCall-ID: ru4\r\nCSeq: 2 BYE\r\n\
         Content-Length: 0\r\n\r\n"
    );
    h.receive(CARRIER, bye.as_bytes());
    let relayed = h.last_to(PRIMARY, "BYE");
    assert_eq!(request_line(&relayed), format!("BYE {target} SIP/2.0"));
}

// ---- health probes sent from a listener ---------------------------------------------------------

fn probe_reply(branch: &str) -> Vec<u8> {
    format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch={branch};rport=5060\r\n\
         From: <sip:pointsman@192.0.2.10>;tag=1p\r\nTo: <sip:127.0.0.1:5070>;tag=x\r\n\
         Call-ID: psp-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn a_reply_to_this_nodes_probe_goes_to_the_prober_and_anothers_is_a_stray() {
    let mut h = Harness::new();
    let ours = format!("{}tok-1", crate::core::probe_branch_prefix(7));
    h.receive(PRIMARY, &probe_reply(&ours));
    assert_eq!(h.probe_replies.len(), 1);
    assert_eq!(&h.probe_replies[0][..], &probe_reply(&ours)[..]);
    assert_eq!(h.dropped("stray"), 0.0);
    // Node 8's probe is not this node's (in a pair it goes to node 8 as any response does).
    h.receive(
        PRIMARY,
        &probe_reply(&format!("{}tok-1", crate::core::probe_branch_prefix(8))),
    );
    assert_eq!(h.probe_replies.len(), 1);
    assert_eq!(h.dropped("stray"), 1.0);
    assert!(h.sent.is_empty(), "{:?}", h.lines_to(PRIMARY));
}

// ---- topology hiding -----------------------------------------------------------------------------

/// The `psd=` token of destination `name` under the built-in key.
pub(super) fn psd_token(name: &str) -> String {
    super::topology::TopologyKey::new(None).token(name)
}

/// A BYE from the carrier over our Record-Route `rr`, for call `call_id` answered with tag `p`.
fn carrier_bye(call_id: &str, rr: &str) -> Vec<u8> {
    format!(
        "BYE sip:agent@203.0.113.99:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-bye-{call_id}\r\n\
         Max-Forwards: 70\r\nRoute: {rr}\r\nFrom: \"Carrier\" <sip:+15550000@10.0.0.1>;tag=c1\r\n\
         To: <sip:+15551234@192.0.2.10>;tag=p\r\nCall-ID: {call_id}\r\nCSeq: 2 BYE\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn the_carrier_reads_no_destination_name_and_its_bye_still_follows_the_edge_that_answered() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("th1"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &response_to(&fwd, 200, "p"));
    let ok = h.last_to(CARRIER, "SIP/2.0 200");
    let rr = header(&ok, "Record-Route").unwrap().to_string();
    for name in ["primary", "secondary"] {
        assert!(!rr.contains(name), "{rr}");
    }
    let token = psd_token("primary");
    assert!(rr.contains(&format!(";psd={token};")), "{rr}");
    // The BYE's Request-URI (the agent's Contact) is elsewhere; the token sends it to the
    // primary (trunk affinity), not to the Contact.
    h.receive(CARRIER, &carrier_bye("th1", &rr));
    assert_eq!(h.count_to(PRIMARY, "BYE"), 1, "{:?}", h.sent);

    // A dialog of a release that wrote names keeps its affinity.
    h.receive(CARRIER, &invite("th2"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &response_to(&fwd, 200, "p"));
    let legacy = rr.replace(&token, "primary");
    h.receive(CARRIER, &carrier_bye("th2", &legacy));
    assert_eq!(h.count_to(PRIMARY, "BYE"), 2);
}

#[test]
fn a_topology_key_of_its_own_makes_other_tokens_and_a_token_under_another_key_is_no_destination() {
    let mut h = Harness::with_config(|cfg| cfg.topology_key = Some("0123456789abcdef-pair".into()));
    h.receive(CARRIER, &invite("th3"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    let rr = header(&fwd, "Record-Route").unwrap().to_string();
    let own = super::topology::TopologyKey::new(Some("0123456789abcdef-pair")).token("primary");
    assert!(rr.contains(&format!(";psd={own};")), "{rr}");
    assert!(!rr.contains(&psd_token("primary")), "{rr}");
    h.receive(PRIMARY, &response_to(&fwd, 200, "p"));
    // A Route whose token was made with another key names no destination: the BYE follows
    // its Request-URI (the agent's Contact) instead.
    let foreign = rr.replace(&own, &psd_token("primary"));
    h.receive(CARRIER, &carrier_bye("th3", &foreign));
    assert_eq!(h.count_to(PRIMARY, "BYE"), 0);
    assert_eq!(h.count_to("203.0.113.99:5070", "BYE"), 1);
}

// ---- capacity caps ---------------------------------------------------------------------------

/// `primary` (with `primary_keys`), `secondary` (with `secondary_keys`), a route over both.
fn capped_rules(primary_keys: &str, secondary_keys: &str) -> String {
    format!(
        r#"
[[destination]]
name = "primary"
address = "127.0.0.1:5070"
{primary_keys}

[[destination]]
name = "secondary"
address = "127.0.0.1:5080"
{secondary_keys}

[[route]]
name = "default"
destinations = ["primary", "secondary"]
"#
    )
}

/// The Call-IDs of the INVITEs sent to `to`, each once (retransmissions are not new calls), in
/// the order they first went.
fn calls_to(h: &Harness, to: &str) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for (a, line, bytes) in &h.sent {
        if *a != addr(to) || !line.starts_with("INVITE ") {
            continue;
        }
        if let Some(id) = header(bytes, "Call-ID") {
            if !ids.iter().any(|i| i == id) {
                ids.push(id.to_string());
            }
        }
    }
    ids
}

/// The last message starting with `starts` sent to `to` in call `call_id`.
fn sent_in(h: &Harness, to: &str, starts: &str, call_id: &str) -> Bytes {
    h.sent
        .iter()
        .rev()
        .find(|(a, l, b)| {
            *a == addr(to) && l.starts_with(starts) && header(b, "Call-ID") == Some(call_id)
        })
        .map(|(_, _, b)| b.clone())
        .unwrap_or_else(|| panic!("no {starts:?} to {to} in call {call_id}"))
}

/// Ends answered call `call_id` (answered by `callee`, tag `tag`) with a BYE from the carrier
/// and the callee's 200.
fn hang_up(h: &mut Harness, callee: &str, tag: &str, call_id: &str) {
    let ok = sent_in(h, CARRIER, "SIP/2.0 200", call_id);
    let rr = header(&ok, "Record-Route").unwrap().to_string();
    let bye = format!("BYE sip:agent@{callee} SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-bye-{call_id}\r\nMax-Forwards: 70\r\nRoute: {rr}\r\nFrom: \"Carrier\" <sip:+15550000@10.0.0.1>;tag=c1\r\nTo: <sip:+15551234@192.0.2.10>;tag={tag}\r\nCall-ID: {call_id}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n");
    h.receive(CARRIER, bye.as_bytes());
    let fwd = sent_in(h, callee, "BYE", call_id);
    h.receive(callee, &response_to(&fwd, 200, tag));
}

/// Brings `name` up with one successful probe.
fn probed_up(h: &Harness, name: &str) {
    let routing = h.core.routing();
    let d = routing.health.by_name(name).expect(name);
    d.probe_sent(h.now);
    d.probe_reply(200, Duration::from_millis(1), h.now);
    assert_eq!(d.state(), crate::health::State::Up);
}

#[test]
fn a_destination_at_max_calls_is_skipped_for_the_next_and_takes_calls_again_once_one_ends() {
    let mut h = Harness::rules(&capped_rules("max_calls = 2", ""));
    probed_up(&h, "primary");
    let primary = h.core.routing().health.by_name("primary").unwrap().clone();
    let before = primary.snapshot(h.now);
    h.receive(CARRIER, &invite("mc-1"));
    h.receive(CARRIER, &invite("mc-2"));
    h.receive(CARRIER, &invite("mc-3"));
    assert_eq!(calls_to(&h, PRIMARY), ["mc-1", "mc-2"]);
    assert_eq!(
        calls_to(&h, SECONDARY),
        ["mc-3"],
        "the third call goes straight to the next destination"
    );
    assert_eq!(
        h.count_to(PRIMARY, "CANCEL"),
        0,
        "nothing was sent to cancel"
    );
    assert_eq!(
        primary.snapshot(h.now).at_cap,
        Some(crate::health::Cap::Calls)
    );

    // mc-1 is answered: an answered call counts until its BYE, so mc-4 still skips primary.
    let fwd = sent_in(&h, PRIMARY, "INVITE", "mc-1");
    h.receive(PRIMARY, &response_to(&fwd, 200, "p1"));
    h.receive(CARRIER, &invite("mc-4"));
    assert_eq!(calls_to(&h, SECONDARY), ["mc-3", "mc-4"]);
    // mc-2 ends unanswered (busy): its slot frees at once, and mc-5 goes to the primary again.
    let fwd = sent_in(&h, PRIMARY, "INVITE", "mc-2");
    h.receive(PRIMARY, &response_to(&fwd, 486, "p2"));
    sent_in(&h, CARRIER, "SIP/2.0 486", "mc-2");
    h.receive(CARRIER, &invite("mc-5"));
    assert_eq!(calls_to(&h, PRIMARY), ["mc-1", "mc-2", "mc-5"]);
    h.receive(CARRIER, &invite("mc-6"));
    assert_eq!(calls_to(&h, SECONDARY), ["mc-3", "mc-4", "mc-6"]);
    // mc-1's BYE frees its slot.
    hang_up(&mut h, PRIMARY, "p1", "mc-1");
    h.receive(CARRIER, &invite("mc-7"));
    assert_eq!(calls_to(&h, PRIMARY), ["mc-1", "mc-2", "mc-5", "mc-7"]);

    // Skipping it was no failure: its health is what it was, and nothing counted a failover.
    let after = primary.snapshot(h.now);
    assert_eq!(after.state, crate::health::State::Up);
    assert_eq!((after.reason, after.since), (before.reason, before.since));
    assert_eq!((after.failures, after.consecutive_failures), (0, 0));
    assert_eq!(after.calls_in_progress, 2, "mc-5 and mc-7");
    assert_eq!(after.calls, 4);
    assert_eq!(after.capped, [3, 0]);
    assert_eq!(
        h.metric(r#"pointsman_destination_capped_total{destination="primary",cap="calls"}"#),
        3.0
    );
    assert_eq!(
        h.metric(r#"pointsman_destination_capped_total{destination="primary",cap="cps"}"#),
        0.0
    );
    assert_eq!(
        h.metric(r#"pointsman_branch_attempts_total{destination="primary"}"#),
        4.0,
        "a skipped destination got no branch"
    );
    for reason in ["timeout", "transport", "code"] {
        assert_eq!(
            h.metric(&format!(
                r#"pointsman_failovers_total{{destination="primary",reason="{reason}"}}"#
            )),
            0.0,
            "{reason}"
        );
    }
    assert_eq!(
        h.metric(r#"pointsman_destination_capped_total{destination="secondary",cap="calls"}"#),
        0.0
    );
}

#[test]
fn max_cps_skips_a_destination_past_its_rate_until_time_refills_its_bucket() {
    let mut h = Harness::rules(&capped_rules("max_cps = 2", ""));
    let primary = h.core.routing().health.by_name("primary").unwrap().clone();
    let state = primary.state();
    // A full bucket: a burst of 2 at once, the third waits for a token.
    for id in ["r-1", "r-2", "r-3"] {
        h.receive(CARRIER, &invite(id));
    }
    assert_eq!(calls_to(&h, PRIMARY), ["r-1", "r-2"]);
    assert_eq!(calls_to(&h, SECONDARY), ["r-3"]);
    // One token every 500 ms: not yet at 499 ms, one at 500 ms.
    h.advance(Duration::from_millis(499));
    h.receive(CARRIER, &invite("r-4"));
    h.advance(Duration::from_millis(1));
    h.receive(CARRIER, &invite("r-5"));
    h.receive(CARRIER, &invite("r-6"));
    assert_eq!(calls_to(&h, PRIMARY), ["r-1", "r-2", "r-5"]);
    assert_eq!(calls_to(&h, SECONDARY), ["r-3", "r-4", "r-6"]);
    // A quiet second refills the burst, never more.
    h.advance(Duration::from_secs(1));
    for id in ["r-7", "r-8", "r-9"] {
        h.receive(CARRIER, &invite(id));
    }
    assert_eq!(calls_to(&h, PRIMARY), ["r-1", "r-2", "r-5", "r-7", "r-8"]);
    assert_eq!(calls_to(&h, SECONDARY), ["r-3", "r-4", "r-6", "r-9"]);
    assert_eq!(
        h.metric(r#"pointsman_destination_capped_total{destination="primary",cap="cps"}"#),
        4.0
    );
    assert_eq!(
        primary.state(),
        state,
        "the rate changed nothing of its health"
    );
    assert_eq!(primary.snapshot(h.now).failures, 0);
    assert_eq!(h.count_to(PRIMARY, "CANCEL"), 0);
}

#[test]
fn a_failover_skips_a_next_destination_that_is_at_its_cap_by_then() {
    // The secondary's one slot is taken by a call that went there directly; a call failing
    // over from the primary finds it at its cap and gets the survivability answer.
    let mut h = Harness::rules(&capped_rules("max_calls = 1", "max_calls = 1").replace(
        "[[route]]",
        "[[route]]\nsurvivability = { reject = 480, retry_after = \"20s\" }",
    ));
    h.receive(CARRIER, &invite("fo-1")); // primary
    h.receive(CARRIER, &invite("fo-2")); // secondary (primary at its cap)
    assert_eq!(calls_to(&h, PRIMARY), ["fo-1"]);
    assert_eq!(calls_to(&h, SECONDARY), ["fo-2"]);
    let fwd = sent_in(&h, SECONDARY, "INVITE", "fo-2");
    h.receive(SECONDARY, &response_to(&fwd, 180, "s2"));
    let fwd = sent_in(&h, PRIMARY, "INVITE", "fo-1");
    h.receive(PRIMARY, &response_to(&fwd, 503, "p1"));
    assert_eq!(calls_to(&h, SECONDARY), ["fo-2"], "no INVITE past the cap");
    let refused = sent_in(&h, CARRIER, "SIP/2.0 480", "fo-1");
    assert_eq!(header(&refused, "Retry-After"), Some("20"));
    assert_eq!(
        h.metric(r#"pointsman_destination_capped_total{destination="secondary",cap="calls"}"#),
        1.0
    );
}

#[test]
fn every_destination_capped_or_down_answers_503_with_retry_after_as_when_all_are_down() {
    let mut h = Harness::rules(&capped_rules("max_calls = 1", "max_cps = 1"));
    h.receive(CARRIER, &invite("all-1")); // primary
    h.receive(CARRIER, &invite("all-2")); // secondary: primary at its cap
    h.receive(CARRIER, &invite("all-3")); // both at a cap
    assert_eq!(calls_to(&h, PRIMARY), ["all-1"]);
    assert_eq!(calls_to(&h, SECONDARY), ["all-2"]);
    let refused = sent_in(&h, CARRIER, "SIP/2.0 503", "all-3");
    assert_eq!(
        header(&refused, "Retry-After"),
        Some("5"),
        "[guard] retry_after"
    );
    assert_eq!(
        h.lines_to(CARRIER)
            .iter()
            .filter(|l| l.starts_with("SIP/2.0 404"))
            .count(),
        0
    );
    // One capped and one down: the same answer.
    let routing = h.core.routing();
    let secondary = routing.health.by_name("secondary").unwrap();
    secondary.act(crate::health::AdminAction::Maintenance, h.now);
    h.advance(Duration::from_secs(1));
    h.receive(CARRIER, &invite("all-4"));
    let refused = sent_in(&h, CARRIER, "SIP/2.0 503", "all-4");
    assert!(header(&refused, "Retry-After").is_some());
    assert_eq!(calls_to(&h, SECONDARY), ["all-2"]);
    assert_eq!(
        h.metric(r#"pointsman_calls_total{route="default",outcome="failed"}"#),
        2.0
    );
    assert_eq!(
        h.metric(r#"pointsman_destination_capped_total{destination="primary",cap="calls"}"#),
        3.0
    );
    assert_eq!(
        h.metric(r#"pointsman_destination_capped_total{destination="secondary",cap="cps"}"#),
        1.0
    );
}

#[test]
fn a_capped_parallel_member_is_left_out_of_the_fork_and_a_fully_capped_tier_gives_way() {
    let rules = hot_hot(r#"tiers = ["clouds", "lifeboats"]"#)
        .replace(
            "address = \"127.0.0.1:5070\"",
            "address = \"127.0.0.1:5070\"\nmax_calls = 1",
        )
        .replace(
            "address = \"127.0.0.1:5080\"",
            "address = \"127.0.0.1:5080\"\nmax_calls = 2",
        );
    let mut h = Harness::rules(&rules);
    h.receive(CARRIER, &invite("hh-1"));
    assert_eq!(calls_to(&h, PRIMARY), ["hh-1"]);
    assert_eq!(calls_to(&h, SECONDARY), ["hh-1"], "forked to both");
    h.receive(CARRIER, &invite("hh-2"));
    assert_eq!(calls_to(&h, PRIMARY), ["hh-1"], "at its cap: left out");
    assert_eq!(calls_to(&h, SECONDARY), ["hh-1", "hh-2"]);
    h.receive(CARRIER, &invite("hh-3"));
    assert_eq!(
        calls_to(&h, LIFEBOAT),
        ["hh-3"],
        "every member capped: next tier"
    );
    // The fork of hh-2 had one branch: its answer needs no CANCEL anywhere.
    let fwd = sent_in(&h, SECONDARY, "INVITE", "hh-2");
    h.receive(SECONDARY, &response_to(&fwd, 200, "s"));
    assert_eq!(h.count_to(PRIMARY, "CANCEL"), 0);
}

#[test]
fn a_survivability_group_takes_the_calls_every_tier_is_too_full_for() {
    let rules = hot_hot(
        r#"tiers = ["clouds"]
survivability = { group = "lifeboats" }"#,
    )
    .replace(
        "address = \"127.0.0.1:5070\"",
        "address = \"127.0.0.1:5070\"\nmax_calls = 1",
    )
    .replace(
        "address = \"127.0.0.1:5080\"",
        "address = \"127.0.0.1:5080\"\nmax_calls = 1",
    );
    let mut h = Harness::rules(&rules);
    h.receive(CARRIER, &invite("sv-1"));
    h.receive(CARRIER, &invite("sv-2"));
    assert_eq!(calls_to(&h, PRIMARY), ["sv-1"]);
    assert_eq!(calls_to(&h, SECONDARY), ["sv-1"]);
    assert_eq!(calls_to(&h, LIFEBOAT), ["sv-2"]);
}

#[test]
fn a_reload_that_changes_a_cap_applies_to_the_next_call_and_keeps_the_calls_in_progress() {
    let mut h = Harness::rules(&capped_rules("max_calls = 1", ""));
    // The node's health table, adopted again on reload as the node does.
    let health = crate::health::Health::new(&crate::health::HealthConfig::default());
    let load = |h: &mut Harness, rules: &str| {
        let router = Arc::new(compile(rules));
        let old = h.core.routing();
        let view = health.adopt(&router, h.now);
        h.core.set_routing(Routing::new(
            router,
            old.addrs.clone(),
            view,
            old.metrics.clone(),
        ));
    };
    load(&mut h, &capped_rules("max_calls = 1", ""));
    h.receive(CARRIER, &invite("rl-1"));
    h.receive(CARRIER, &invite("rl-2"));
    assert_eq!(calls_to(&h, PRIMARY), ["rl-1"]);
    load(&mut h, &capped_rules("max_calls = 2", ""));
    let primary = h.core.routing().health.by_name("primary").unwrap().clone();
    assert_eq!(primary.calls_in_progress(), 1, "rl-1 still counts");
    h.receive(CARRIER, &invite("rl-3"));
    h.receive(CARRIER, &invite("rl-4"));
    assert_eq!(calls_to(&h, PRIMARY), ["rl-1", "rl-3"]);
    assert_eq!(calls_to(&h, SECONDARY), ["rl-2", "rl-4"]);
    load(&mut h, &capped_rules("", ""));
    h.receive(CARRIER, &invite("rl-5"));
    assert_eq!(calls_to(&h, PRIMARY), ["rl-1", "rl-3", "rl-5"]);
    // A call that started before the reload releases its slot in the same entry.
    let fwd = sent_in(&h, PRIMARY, "INVITE", "rl-1");
    h.receive(PRIMARY, &response_to(&fwd, 486, "p"));
    assert_eq!(primary.calls_in_progress(), 2);
    assert_eq!(
        h.metric(r#"pointsman_destination_capped_total{destination="primary",cap="calls"}"#),
        2.0,
        "the counter goes on across the reload"
    );
}
