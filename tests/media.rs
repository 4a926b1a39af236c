//! Hot-hot early media on real sockets: a pointsman process anchors the media of a parallel
//! route between a simulated carrier and two simulated clouds that play marked RTP (each
//! payload says which cloud and which frame), and the carrier records every packet it hears.
//! Each trigger of a switch, the answer on either branch, media inactivity, strangers on media
//! ports, and the relay's ports coming back are checked from what the peers received.

mod support;

use pointsman_sim::{analyse, sdp_media_addr, Behaviour, Heard, MediaPeer, Step};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use support::*;

const PTIME: Duration = Duration::from_millis(20);
const CLOUD_1: u16 = 5074;
const CLOUD_2: u16 = 5075;

/// A hot-hot route over `cloud-1` (preferred) and `cloud-2` with its media relayed, with more
/// `[media]` and route keys.
fn hot_hot_media(ip: IpAddr, media_extra: &str, route_extra: &str) -> String {
    format!(
        r#"{node}
[media]
carrier_address = "{ip}"
ports = "30000-30199"
{media_extra}
{d1}{d2}
[[group]]
name = "clouds"
strategy = "parallel"
members = ["cloud-1", "cloud-2"]

[[route]]
name = "hot-hot"
tiers = ["clouds"]
media = "relay"
{route_extra}
"#,
        node = node_section(ip),
        d1 = destination("cloud-1", ip, CLOUD_1, "2s"),
        d2 = destination("cloud-2", ip, CLOUD_2, "2s"),
    )
}

/// A standby cloud's script: its early media starts 200 ms after its INVITE, so that the
/// preferred cloud is heard first however busy the machine is (the relay waits only 60 ms for a
/// preferred cloud that has not played yet), then `steps`.
fn standby(steps: Vec<Step>) -> Behaviour {
    let mut all = vec![
        Step::Respond(100),
        Step::Wait(Duration::from_millis(200)),
        Step::EarlyMedia,
    ];
    all.extend(steps);
    Behaviour::of(all)
}

/// The cast with both clouds playing media by their scripts.
async fn start(route_extra: &str, cloud_1: Behaviour, cloud_2: Behaviour) -> Cast {
    start_with("", route_extra, cloud_1, cloud_2).await
}

/// The same with more `[media]` keys.
async fn start_with(
    media_extra: &str,
    route_extra: &str,
    cloud_1: Behaviour,
    cloud_2: Behaviour,
) -> Cast {
    let (media, extra) = (media_extra.to_string(), route_extra.to_string());
    let t = Cast::start(
        move |ip| hot_hot_media(ip, &media, &extra),
        &[
            ("cloud-1", CLOUD_1, Some(cloud_1)),
            ("cloud-2", CLOUD_2, Some(cloud_2)),
        ],
    )
    .await;
    t.clouds[0].set_media(Some((t.ip, 1)));
    t.clouds[1].set_media(Some((t.ip, 2)));
    t
}

/// Places a call whose offer names the carrier's own media peer; once the first 18x or 2xx
/// with SDP arrives, the carrier streams to the relay address it names. Returns the peer.
async fn call(t: &Cast, call_id: &str) -> Arc<MediaPeer> {
    let peer = MediaPeer::bind(t.ip, 9).expect("carrier media");
    let mut spec = t.carrier.invite_spec(call_id);
    spec.media = Some(peer.local_addr());
    t.carrier.invite(&spec).await.expect("INVITE");
    for _ in 0..100 {
        if let Some(relay) = relay_for_carrier(t, call_id) {
            peer.start(relay);
            return peer;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no answer with SDP reached the carrier\n{}", t.report());
}

/// The media address the first 18x/2xx with SDP the carrier got for `call_id` names.
fn relay_for_carrier(t: &Cast, call_id: &str) -> Option<SocketAddr> {
    t.journal.received("carrier").iter().find_map(|e| {
        let text = e.text();
        if !text.contains(&format!("Call-ID: {call_id}\r\n")) || !text.starts_with("SIP/2.0 ") {
            return None;
        }
        let body = text.split_once("\r\n\r\n")?.1;
        sdp_media_addr(body.as_bytes())
    })
}

/// The branch the carrier heard first.
fn first_heard(heard: &[Heard]) -> Option<u8> {
    heard.iter().find_map(|h| h.branch)
}

async fn settle(d: Duration) {
    tokio::time::sleep(d).await;
}

/// The value of the series `line` (name and labels) in the node's metrics.
async fn metric(t: &Cast, line: &str) -> f64 {
    let text = metric_text(&format!("{}:{ADMIN_PORT}", t.ip)).await;
    text.lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// What the carrier heard across a switch from cloud 1 to cloud 2: one stream (one SSRC,
/// sequence numbers without a hole, the marker bit on the first packet of cloud 2) and not a
/// single packet of cloud 1 after it. Returns the frames lost in the switch.
fn assert_one_clean_switch(heard: &[Heard], report: &str) -> u32 {
    assert_eq!(first_heard(heard), Some(1), "cloud 1 first\n{report}");
    let a = analyse(heard, PTIME);
    assert!(a.ssrc_constant, "one SSRC at the carrier: {a:?}");
    assert!(a.seq_continuous, "sequence numbers go on: {a:?}");
    assert_eq!(a.switches.len(), 1, "{a:?}\n{report}");
    assert_eq!((a.switches[0].from, a.switches[0].to), (1, 2), "{a:?}");
    assert!(
        a.switches[0].marker,
        "marker bit on the switch packet: {a:?}"
    );
    assert_eq!(a.wrong_branch_after_last_switch, 0, "{a:?}");
    a.switches[0].lost_frames
}

#[tokio::test]
async fn an_error_response_from_the_heard_cloud_switches_to_the_other_at_once() {
    use Step::*;
    let t = start(
        "",
        Behaviour::early_media_then(vec![Wait(Duration::from_millis(800)), Respond(503)]),
        standby(vec![Wait(Duration::from_secs(3)), Respond(200)]),
    )
    .await;
    let carrier = call(&t, "hh-503").await;
    settle(Duration::from_millis(1600)).await;
    let heard = carrier.heard();
    let lost = assert_one_clean_switch(&heard, &t.report());
    // A signalled failure switches on the next packet of the other cloud; the bound leaves
    // room for a loaded machine's scheduling, not for a timer.
    assert!(lost <= 3, "frames lost in the switch: {lost}");
    assert_eq!(
        metric(
            &t,
            "pointsman_media_switches_total{reason=\"error_response\"}"
        )
        .await,
        1.0
    );
    // The carrier's RTP reached both clouds while both were live (the standby stays hot).
    for cloud in &t.clouds {
        let peer = cloud.media("hh-503").expect("cloud media");
        assert!(
            peer.heard().iter().any(|h| h.branch == Some(9)),
            "{} heard the carrier",
            cloud.name()
        );
    }
}

#[tokio::test]
async fn silence_on_the_heard_cloud_switches_to_the_other() {
    use Step::*;
    let t = start(
        "",
        Behaviour::early_media_then(vec![Wait(Duration::from_millis(800)), MediaPause]),
        standby(vec![Wait(Duration::from_secs(3)), Respond(200)]),
    )
    .await;
    let carrier = call(&t, "hh-silence").await;
    settle(Duration::from_millis(1600)).await;
    let heard = carrier.heard();
    assert_one_clean_switch(&heard, &t.report());
    assert_eq!(
        metric(&t, "pointsman_media_switches_total{reason=\"silence\"}").await,
        1.0
    );
}

#[tokio::test]
async fn rtcp_bye_from_the_heard_cloud_switches_to_the_other() {
    use Step::*;
    let t = start(
        "",
        Behaviour::early_media_then(vec![Wait(Duration::from_millis(800)), RtcpBye]),
        standby(vec![Wait(Duration::from_secs(3)), Respond(200)]),
    )
    .await;
    let carrier = call(&t, "hh-bye").await;
    settle(Duration::from_millis(1600)).await;
    assert_one_clean_switch(&carrier.heard(), &t.report());
    assert_eq!(
        metric(&t, "pointsman_media_switches_total{reason=\"rtcp_bye\"}").await,
        1.0
    );
}

#[tokio::test]
async fn the_answer_of_the_standby_cloud_is_heard_at_once_and_the_other_is_cancelled() {
    use Step::*;
    let t = start(
        "",
        Behaviour::early_media_then(vec![Wait(Duration::from_secs(10))]),
        standby(vec![Wait(Duration::from_millis(800)), Respond(200)]),
    )
    .await;
    let carrier = call(&t, "hh-answer").await;
    settle(Duration::from_millis(1600)).await;
    assert_one_clean_switch(&carrier.heard(), &t.report());
    assert_eq!(
        t.journal
            .count("cloud-1", |s| s.call_id == "hh-answer" && s.is("CANCEL")),
        1,
        "{}",
        t.report()
    );
    assert_eq!(
        metric(&t, "pointsman_media_switches_total{reason=\"answer\"}").await,
        1.0
    );
}

#[tokio::test]
async fn the_answer_of_the_heard_cloud_keeps_it_without_a_switch() {
    use Step::*;
    let t = start(
        "",
        Behaviour::early_media_then(vec![Wait(Duration::from_millis(800)), Respond(200)]),
        standby(vec![Wait(Duration::from_secs(10))]),
    )
    .await;
    let carrier = call(&t, "hh-keep").await;
    settle(Duration::from_millis(1600)).await;
    let heard = carrier.heard();
    assert_eq!(first_heard(&heard), Some(1), "{}", t.report());
    let a = analyse(&heard, PTIME);
    assert!(a.switches.is_empty(), "{a:?}");
    assert!(a.ssrc_constant && a.seq_continuous, "{a:?}");
}

#[tokio::test]
async fn an_answered_call_whose_media_stops_is_ended_with_bye_both_ways() {
    use Step::*;
    let t = start(
        "media_timeout = \"1s\"",
        Behaviour::early_media_then(vec![Wait(Duration::from_millis(300)), Respond(200)]),
        Behaviour::early_media_then(vec![Wait(Duration::from_secs(10))]),
    )
    .await;
    let _carrier = call(&t, "hh-idle").await;
    settle(Duration::from_millis(800)).await;
    // The answered cloud's media dies; the carrier's goes on.
    t.clouds[0].media("hh-idle").expect("cloud media").stop();
    settle(Duration::from_millis(2000)).await;
    for peer in ["carrier", "cloud-1"] {
        let byes: Vec<String> = t
            .journal
            .received(peer)
            .iter()
            .map(|e| e.text())
            .filter(|text| text.starts_with("BYE ") && text.contains("Call-ID: hh-idle\r\n"))
            .collect();
        assert_eq!(byes.len(), 1, "{peer} gets one BYE\n{}", t.report());
        assert!(byes[0].contains("Reason: Q.850;cause=102"), "{}", byes[0]);
    }
    assert_eq!(
        metric(&t, "pointsman_media_inactivity_total{side=\"cloud\"}").await,
        1.0
    );
    assert_eq!(metric(&t, "pointsman_media_ports_in_use").await, 0.0);
}

#[tokio::test]
async fn strangers_on_a_media_port_are_dropped_and_counted() {
    use Step::*;
    let t = start(
        "",
        Behaviour::early_media_then(vec![Wait(Duration::from_secs(10))]),
        Behaviour::early_media_then(vec![Wait(Duration::from_secs(10))]),
    )
    .await;
    let _carrier = call(&t, "hh-stranger").await;
    let relay = relay_for_carrier(&t, "hh-stranger").expect("relay");
    // Another loopback address sends to the carrier's relay port.
    let stranger = MediaPeer::bind(fresh_ip(), 7).expect("stranger");
    stranger.start(relay);
    settle(Duration::from_millis(500)).await;
    stranger.stop();
    for cloud in &t.clouds {
        let peer = cloud.media("hh-stranger").expect("cloud media");
        assert!(
            !peer.heard().iter().any(|h| h.branch == Some(7)),
            "a stranger's packet reached {}",
            cloud.name()
        );
    }
    assert!(metric(&t, "pointsman_media_dropped_total{reason=\"stranger\"}").await >= 10.0);
}

#[tokio::test]
async fn every_relay_port_comes_back_after_failures_cancels_and_timeouts() {
    use Step::*;
    let t = start(
        "",
        Behaviour::early_media_then(vec![Wait(Duration::from_millis(300)), Respond(486)]),
        Behaviour::early_media_then(vec![Wait(Duration::from_millis(300)), Respond(503)]),
    )
    .await;
    let _rejected = call(&t, "hh-ports-rejected").await;
    t.clouds[0].set_behaviour(Behaviour::early_media_then(vec![Wait(
        Duration::from_secs(10),
    )]));
    t.clouds[1].set_behaviour(Behaviour::early_media_then(vec![Wait(
        Duration::from_secs(10),
    )]));
    let _cancelled = call(&t, "hh-ports-cancelled").await;
    t.carrier
        .cancel("hh-ports-cancelled")
        .await
        .expect("CANCEL");
    t.clouds[0].set_behaviour(Behaviour::silent());
    t.clouds[1].set_behaviour(Behaviour::silent());
    let mut spec = t.carrier.invite_spec("hh-ports-silent");
    spec.media = Some(SocketAddr::new(t.ip, 40000));
    t.carrier.invite(&spec).await.expect("INVITE");
    // Both clouds stay silent: their provisional timers (2 s) end the call.
    settle(Duration::from_millis(3000)).await;
    assert_eq!(
        metric(&t, "pointsman_media_ports_in_use").await,
        0.0,
        "{}",
        t.report()
    );
    assert_eq!(metric(&t, "pointsman_media_sessions").await, 0.0);
}

#[tokio::test]
async fn a_flood_on_a_media_port_does_not_stall_signalling() {
    use Step::*;
    let t = start(
        "",
        Behaviour::early_media_then(vec![Wait(Duration::from_millis(300)), Respond(200)]),
        Behaviour::early_media_then(vec![Wait(Duration::from_secs(10))]),
    )
    .await;
    let _carrier = call(&t, "hh-flood-0").await;
    let relay = relay_for_carrier(&t, "hh-flood-0").expect("relay");
    // A stranger floods the carrier-side relay port: 200,000 datagrams as fast as it can.
    let flooder = std::net::UdpSocket::bind(SocketAddr::new(fresh_ip(), 0)).expect("flooder");
    let flood = std::thread::spawn(move || {
        let junk = [0x80u8; 172];
        for _ in 0..200_000 {
            let _ = flooder.send_to(&junk, relay);
        }
    });
    // Calls placed during the flood are set up all the same.
    let mut peers = Vec::new();
    for n in 1..=5 {
        peers.push(call(&t, &format!("hh-flood-{n}")).await);
    }
    flood.join().expect("flood");
    settle(Duration::from_millis(1500)).await;
    for n in 0..=5 {
        let call_id = format!("hh-flood-{n}");
        assert_eq!(
            t.journal.count("carrier", |s| s.call_id == call_id
                && s.is_response(200, "INVITE")),
            1,
            "{call_id} answered\n{}",
            t.report()
        );
    }
    assert!(metric(&t, "pointsman_media_dropped_total{reason=\"stranger\"}").await > 1000.0);
}

#[tokio::test]
async fn with_the_kernel_relay_an_answered_calls_rtp_is_forwarded_in_the_kernel_as_one_stream() {
    use Step::*;
    // SAFETY: geteuid(2) reads the process's effective user id; no memory is involved.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "the kernel relay needs root (eBPF, tc): run as root, as CI does"
    );
    // The standby answers: the carrier's stream switches to it, settles, and both streams go
    // to the kernel.
    let t = start_with(
        "",
        "media_timeout = \"1s\"",
        Behaviour::early_media_then(vec![Wait(Duration::from_secs(10))]),
        standby(vec![Wait(Duration::from_millis(300)), Respond(200)]),
    )
    .await;
    let carrier = call(&t, "hh-kernel").await;
    settle(Duration::from_millis(2500)).await;
    let report = t.report();
    assert_eq!(
        metric(&t, "pointsman_media_handed_over_streams").await,
        2.0,
        "both streams handed over\n{report}"
    );
    let heard = carrier.heard();
    let a = analyse(&heard, PTIME);
    assert_eq!(a.switches.len(), 1, "{a:?}\n{report}");
    assert_eq!((a.switches[0].from, a.switches[0].to), (1, 2), "{a:?}");
    assert!(a.ssrc_constant, "one SSRC across the handover: {a:?}");
    assert!(
        a.seq_continuous,
        "sequence numbers go on across the handover: {a:?}"
    );
    assert!(
        a.ts_consistent,
        "timestamps go on across the handover: {a:?}"
    );
    assert_eq!(a.wrong_branch_after_last_switch, 0, "{a:?}");
    // The kernel forwarded most of it (the counters are read every quarter of the 1 s media
    // timeout), both ways, and the call is not taken for silent.
    for direction in ["to_carrier", "to_cloud"] {
        let kernel = metric(
            &t,
            &format!("pointsman_media_kernel_packets_total{{direction=\"{direction}\"}}"),
        )
        .await;
        assert!(
            kernel >= 50.0,
            "{direction}: {kernel} packets by the kernel\n{report}"
        );
    }
    assert_eq!(
        metric(&t, "pointsman_media_inactivity_total{side=\"carrier\"}").await,
        0.0
    );
    assert_eq!(
        metric(&t, "pointsman_media_inactivity_total{side=\"cloud\"}").await,
        0.0
    );

    // The call ends: the streams come back from the kernel before the ports do.
    t.carrier.hang_up("hh-kernel").await.expect("BYE");
    settle(Duration::from_millis(500)).await;
    assert_eq!(metric(&t, "pointsman_media_handed_over_streams").await, 0.0);
    assert_eq!(metric(&t, "pointsman_media_ports_in_use").await, 0.0);
}
