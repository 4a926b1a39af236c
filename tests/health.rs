//! The prober end to end, in real time: `pointsman_protocol::health` probing simulated clouds
//! (`pointsman_sim::Cloud`) with SIP OPTIONS over real UDP and TCP sockets on a loopback
//! address of the test's own, with short intervals (100 ms) and thresholds of 2. The exact
//! counting rules are proven by the deterministic tests in `proxy/src/health/tests.rs`; these
//! prove the driver: probes leave from the configured source, replies are matched and fed in,
//! silence and 503 are failures, TCP connect failures are failures, a new rule set is taken,
//! maintenance stops probes, and dropping the prober stops it.

mod support;

use pointsman::config::Config;
use pointsman::prober::{Prober, ProberConfig};
use pointsman_protocol::health::{DestHealth, Health, State};
use pointsman_sim::{Behaviour, Cloud, Endpoint, Journal};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{at, fresh_ip};

/// Longest wait for any one state change (a change takes 2 probes, 100 ms apart).
const WAIT: Duration = Duration::from_secs(5);

/// A config on `ip` with `destinations` (each a `[[destination]]` table's text) and a route
/// through all of them.
fn config(ip: IpAddr, destinations: &[(String, String)]) -> Config {
    let mut text = format!(
        "[[listen]]\ntransport = \"udp\"\naddress = \"{ip}:5060\"\n[timers]\nt1 = \"30ms\"\n"
    );
    for (_, table) in destinations {
        text.push_str(table);
    }
    let names: Vec<String> = destinations.iter().map(|(n, _)| format!("{n:?}")).collect();
    text.push_str(&format!(
        "[[route]]\nname = \"r\"\ndestinations = [{}]\n",
        names.join(", ")
    ));
    Config::parse(&text, "health-test.toml").unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// A destination probed every 100 ms, timeout 80 ms, thresholds 2 and 2.
fn fast(name: &str, ip: IpAddr, port: u16, transport: &str) -> (String, String) {
    (
        name.to_string(),
        format!(
            "[[destination]]\nname = \"{name}\"\naddress = \"{ip}:{port}\"\n\
             transport = \"{transport}\"\nprobe_interval = \"100ms\"\nprobe_timeout = \"80ms\"\n\
             failure_threshold = 2\nrecovery_threshold = 2\n"
        ),
    )
}

fn prober_config(cfg: &Config) -> ProberConfig {
    ProberConfig {
        source: cfg.health.source,
        t1: cfg.timers.t1,
        t2: cfg.timers.t2,
        limits: cfg.limits.clone(),
        node_id: cfg.node_id,
        contact: None,
    }
}

/// Waits until `d` is in `want`, or fails with its snapshot and the journal.
async fn wait_state(d: &DestHealth, want: State, journal: &Journal) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = d.snapshot(Instant::now());
        if s.state == want {
            return s.reason;
        }
        if Instant::now() > deadline {
            panic!(
                "{} never became {want}: {s:#?}\n--- journal ---\n{}",
                d.name(),
                journal.dump()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn options_at(journal: &Journal, peer: &str) -> usize {
    journal.count(peer, |s| s.is("OPTIONS"))
}

#[tokio::test]
async fn udp_destination_goes_up_then_down_after_the_failure_threshold_then_up_after_the_recovery_threshold(
) {
    let ip = fresh_ip();
    let journal = Arc::new(Journal::default());
    let cloud = Cloud::udp("cloud", at(ip, 5070), Behaviour::answer(), journal.clone())
        .expect("bind cloud");
    let cfg = config(ip, &[fast("cloud", ip, 5070, "udp")]);
    let health = Health::new(&cfg.health);
    let view = health.adopt(&cfg.router, Instant::now());
    let dest = view.by_name("cloud").expect("cloud").clone();
    assert_eq!(dest.state(), State::Probing);
    assert!(dest.accepts_calls(), "optimistic before the first probe");
    let prober = Prober::spawn(prober_config(&cfg), view).expect("prober");
    assert_eq!(
        prober.local_addr().ip(),
        ip,
        "probes leave from the listener's IP"
    );

    let reason = wait_state(&dest, State::Up, &journal).await;
    assert!(
        reason.starts_with("first probe answered 200 in "),
        "{reason}"
    );
    let first = journal
        .received("cloud")
        .into_iter()
        .find(|e| e.summary.is("OPTIONS"))
        .expect("an OPTIONS reached the cloud");
    assert_eq!(
        first.remote,
        prober.local_addr(),
        "from the prober's own socket"
    );
    assert!(dest.snapshot(Instant::now()).last_probe_rtt.is_some());

    // Silence: down after exactly two unanswered probes.
    cloud.set_options_reply(None);
    let reason = wait_state(&dest, State::Down, &journal).await;
    assert_eq!(
        reason,
        "2 consecutive failures (last: probe got no reply in 80ms)"
    );
    assert!(!dest.accepts_calls());

    // Answers again: up after exactly two successful probes.
    cloud.set_options_reply(Some(200));
    let reason = wait_state(&dest, State::Up, &journal).await;
    assert!(
        reason.starts_with("2 consecutive successful probes (last: probe answered 200 in "),
        "{reason}"
    );

    // 503 to OPTIONS is a failure.
    cloud.set_options_reply(Some(503));
    let reason = wait_state(&dest, State::Down, &journal).await;
    assert_eq!(reason, "2 consecutive failures (last: probe answered 503)");

    drop(prober);
}

#[tokio::test]
async fn silent_udp_probe_is_retransmitted_per_timer_e_within_the_probe_timeout() {
    let ip = fresh_ip();
    let journal = Arc::new(Journal::default());
    let cloud = Cloud::udp("cloud", at(ip, 5070), Behaviour::answer(), journal.clone())
        .expect("bind cloud");
    cloud.set_options_reply(None);
    let cfg = config(ip, &[fast("cloud", ip, 5070, "udp")]);
    let health = Health::new(&cfg.health);
    let view = health.adopt(&cfg.router, Instant::now());
    let dest = view.by_name("cloud").expect("cloud").clone();
    let prober = Prober::spawn(prober_config(&cfg), view).expect("prober");
    wait_state(&dest, State::Down, &journal).await;
    drop(prober);
    // Every probe goes at 0 and again at T1 = 30 ms; the next, at 90 ms, would be past the
    // 80 ms timeout: never more than twice per Call-ID. (A probe cut short by the drop, or a
    // retransmission a loaded machine only got to after the timeout, is sent once.)
    let mut per_call: std::collections::HashMap<String, usize> = Default::default();
    for e in journal.received("cloud") {
        if e.summary.is("OPTIONS") {
            *per_call.entry(e.summary.call_id.clone()).or_default() += 1;
        }
    }
    assert!(per_call.len() >= 2, "{per_call:?}");
    assert!(
        per_call.values().any(|&n| n == 2),
        "retransmitted: {per_call:?}"
    );
    assert!(
        per_call.values().all(|&n| n <= 2),
        "bounded by the timeout: {per_call:?}"
    );
}

#[tokio::test]
async fn tcp_destination_is_probed_over_a_connection_and_a_refused_connect_is_a_failure() {
    let ip = fresh_ip();
    let journal = Arc::new(Journal::default());
    let ep = Endpoint::tcp_listen(at(ip, 5070))
        .await
        .expect("bind tcp cloud");
    let _cloud = Cloud::start("tcp-cloud", ep, Behaviour::answer(), journal.clone());
    // Nothing listens on 5071.
    let cfg = config(
        ip,
        &[
            fast("tcp-cloud", ip, 5070, "tcp"),
            fast("dead", ip, 5071, "tcp"),
        ],
    );
    let health = Health::new(&cfg.health);
    let view = health.adopt(&cfg.router, Instant::now());
    let up = view.by_name("tcp-cloud").expect("tcp-cloud").clone();
    let dead = view.by_name("dead").expect("dead").clone();
    let prober = Prober::spawn(prober_config(&cfg), view).expect("prober");

    let reason = wait_state(&up, State::Up, &journal).await;
    assert!(reason.starts_with("first probe answered 200"), "{reason}");
    let reason = wait_state(&dead, State::Down, &journal).await;
    assert!(
        reason.starts_with("2 consecutive failures (last: probe failed: cannot connect to"),
        "{reason}"
    );
    let options = journal
        .received("tcp-cloud")
        .into_iter()
        .find(|e| e.summary.is("OPTIONS"))
        .expect("OPTIONS over TCP");
    assert_eq!(options.remote.ip(), ip, "from the source IP");
    assert!(options.text().contains("Via: SIP/2.0/TCP"));
    drop(prober);
}

#[tokio::test]
async fn prober_takes_a_new_rule_set_skips_maintenance_and_stops_when_dropped() {
    let ip = fresh_ip();
    let journal = Arc::new(Journal::default());
    let _a = Cloud::udp("a", at(ip, 5070), Behaviour::answer(), journal.clone()).expect("bind a");
    let _b = Cloud::udp("b", at(ip, 5080), Behaviour::answer(), journal.clone()).expect("bind b");
    let cfg1 = config(ip, &[fast("a", ip, 5070, "udp")]);
    let health = Health::new(&cfg1.health);
    let view = health.adopt(&cfg1.router, Instant::now());
    let a = view.by_name("a").expect("a").clone();
    let prober = Prober::spawn(prober_config(&cfg1), view).expect("prober");
    wait_state(&a, State::Up, &journal).await;

    // Reload: b joins, a keeps its state.
    let cfg2 = config(
        ip,
        &[fast("a", ip, 5070, "udp"), fast("b", ip, 5080, "udp")],
    );
    let view = health.adopt(&cfg2.router, Instant::now());
    let b = view.by_name("b").expect("b").clone();
    assert!(Arc::ptr_eq(view.by_name("a").expect("a"), &a));
    assert_eq!(a.state(), State::Up);
    prober.set(view);
    wait_state(&b, State::Up, &journal).await;

    // Maintenance: no more probes to a.
    health
        .act(
            "a",
            pointsman_protocol::health::AdminAction::Maintenance,
            Instant::now(),
        )
        .expect("known");
    tokio::time::sleep(Duration::from_millis(150)).await; // a probe in flight may land
    let before = options_at(&journal, "a");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        options_at(&journal, "a"),
        before,
        "maintenance stops probes"
    );
    assert_eq!(a.state(), State::Maintenance);
    assert!(options_at(&journal, "b") >= 2, "b is still probed");

    // Dropping the prober stops it: nothing more reaches b.
    drop(prober);
    let before = options_at(&journal, "b");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(options_at(&journal, "b"), before, "no probe after the drop");
}

/// A hand-written peer: answers each OPTIONS with garbage, a forged 503 (right Call-ID, wrong
/// branch), a 503 for another Call-ID, a 100 Trying, and only then the real 200.
async fn noisy_peer(socket: tokio::net::UdpSocket) {
    let mut buf = vec![0u8; 65_535];
    while let Ok((n, from)) = socket.recv_from(&mut buf).await {
        let req = &buf[..n];
        let h = |name: &str| pointsman_sim::header_value(req, name).unwrap_or_default();
        let (via, from_h, to, call_id, cseq) =
            (h("Via"), h("From"), h("To"), h("Call-ID"), h("CSeq"));
        let reply = |code: &str, via: &str, call_id: &str| {
            format!(
                "SIP/2.0 {code}\r\nVia: {via}\r\nFrom: {from_h}\r\nTo: {to};tag=noisy\r\n\
                 Call-ID: {call_id}\r\nCSeq: {cseq}\r\nContent-Length: 0\r\n\r\n"
            )
        };
        let forged_via = via.replace("branch=", "branch=forged-");
        for bytes in [
            b"\x00\xff\xfegarbage\r\n\r\n".to_vec(),
            b"SIP/2.0 200 OK\r\nContent-Length: 5\r\n\r\n".to_vec(),
            reply("503 Service Unavailable", &forged_via, &call_id).into_bytes(),
            reply("503 Service Unavailable", &via, "someone-else").into_bytes(),
            reply("100 Trying", &via, &call_id).into_bytes(),
            reply("200 OK", &via, &call_id).into_bytes(),
        ] {
            let _ = socket.send_to(&bytes, from).await;
        }
    }
}

#[tokio::test]
async fn garbage_forged_and_stray_replies_neither_disturb_the_prober_nor_count() {
    let ip = fresh_ip();
    let journal = Journal::default();
    let socket = tokio::net::UdpSocket::bind(at(ip, 5070))
        .await
        .expect("bind peer");
    let peer = tokio::spawn(noisy_peer(socket));
    let cfg = config(ip, &[fast("noisy", ip, 5070, "udp")]);
    let health = Health::new(&cfg.health);
    let view = health.adopt(&cfg.router, Instant::now());
    let dest = view.by_name("noisy").expect("noisy").clone();
    let prober = Prober::spawn(prober_config(&cfg), view).expect("prober");
    wait_state(&dest, State::Up, &journal).await;
    tokio::time::sleep(Duration::from_millis(350)).await;
    let s = dest.snapshot(Instant::now());
    assert_eq!(s.state, State::Up);
    assert!(s.probes_ok >= 3, "{s:#?}");
    assert_eq!(
        s.probes_failed, 0,
        "no forged or stray reply counted: {s:#?}"
    );
    drop(prober);
    peer.abort();
}
