//! End-to-end behaviour of pointsman on real sockets: a pointsman process on its own loopback
//! address between a simulated carrier and two simulated clouds (`pointsman_sim`). Each test
//! names the behaviour it proves; `docs/architecture.md` ("Behaviour on a call") is the spec.

mod support;

use pointsman_sim::{Behaviour, Carrier, Entry, Step, Summary};
use std::time::Duration;
use support::{at, Setup, TwoClouds, PROXY_PORT};

const WAIT: Duration = Duration::from_secs(5);

fn invite(s: &Summary) -> bool {
    s.is("INVITE")
}

/// Anything but health probes (OPTIONS from pointsman's prober, and the answers to them).
fn call_traffic(s: &Summary) -> bool {
    s.cseq_method != "OPTIONS"
}

fn final_to_invite(s: &Summary) -> bool {
    s.cseq_method == "INVITE" && s.code.is_some_and(|c| c >= 200)
}

/// Waits for `what` at `peer`, or fails with the journal and pointsman's log.
async fn expect(t: &TwoClouds, peer: &str, what: &str, pred: impl Fn(&Summary) -> bool) -> Entry {
    match t.journal.wait_for(peer, WAIT, pred).await {
        Some(e) => e,
        None => panic!("{peer} never received {what}\n{}", t.report()),
    }
}

/// Lets anything still in flight arrive before asserting that something did not happen.
async fn settle(d: Duration) {
    tokio::time::sleep(d).await;
}

#[tokio::test]
async fn normal_call_is_answered_end_to_end_and_bye_reaches_the_answering_cloud() {
    let t = TwoClouds::start(Setup::default()).await;
    let spec = t.carrier.invite_spec("normal-1");
    t.carrier.invite(&spec).await.unwrap();

    expect(&t, "carrier", "100 Trying", |s| {
        s.is_response(100, "INVITE")
    })
    .await;
    expect(&t, "carrier", "180", |s| s.is_response(180, "INVITE")).await;
    let ok = expect(&t, "carrier", "200", |s| s.is_response(200, "INVITE")).await;
    // pointsman's Record-Route names the node and a token for the destination, never its name
    // (topology hiding): nothing the carrier reads names an internal destination.
    assert!(
        ok.header("Record-Route")
            .is_some_and(|rr| rr.contains("psn=7")
                && rr.contains(";psd=")
                && !rr.contains("primary")),
        "the 2xx carries pointsman's Record-Route with node id and destination token:\n{}",
        ok.text()
    );
    // (The clouds' own headers, their tags and Contact, are theirs: only what pointsman
    // writes is checked.)
    for entry in t.journal.received("carrier") {
        let rr = entry.header("Record-Route").unwrap_or_default();
        assert!(
            !rr.contains("primary") && !rr.contains("secondary"),
            "a destination's name reached the carrier:\n{}",
            entry.text()
        );
    }
    // The carrier's ACK for the 2xx follows the route set to the cloud that answered.
    expect(&t, "primary", "ACK", |s| s.is("ACK")).await;
    let invite_at_cloud = expect(&t, "primary", "INVITE", invite).await;
    assert!(
        invite_at_cloud.text().contains("m=audio 40000"),
        "SDP offer relayed"
    );
    assert_eq!(
        invite_at_cloud.header("Max-Forwards").as_deref(),
        Some("69"),
        "Max-Forwards decremented"
    );

    t.carrier.hang_up("normal-1").await.unwrap();
    expect(&t, "primary", "BYE", |s| s.is("BYE")).await;
    expect(&t, "carrier", "200 to BYE", |s| s.is_response(200, "BYE")).await;
    assert_eq!(
        t.journal.count("secondary", call_traffic),
        0,
        "{}",
        t.report()
    );
}

#[tokio::test]
async fn primary_503_fails_over_to_the_secondary_which_answers() {
    let t = TwoClouds::start(Setup {
        primary: Some(Behaviour::reject(503)),
        ..Setup::default()
    })
    .await;
    t.carrier
        .invite(&t.carrier.invite_spec("fo-503"))
        .await
        .unwrap();
    let ok = expect(&t, "carrier", "200", |s| s.is_response(200, "INVITE")).await;
    assert!(ok
        .header("To")
        .is_some_and(|to| to.contains("tag=secondary-")));
    // pointsman ACKed the 503 hop by hop; the carrier never heard of it.
    expect(&t, "primary", "ACK for 503", |s| s.is("ACK")).await;
    assert_eq!(
        t.journal.count("carrier", |s| s.code == Some(503)),
        0,
        "{}",
        t.report()
    );
    assert_eq!(t.journal.count("primary", |s| s.is("CANCEL")), 0);
}

#[tokio::test]
async fn silent_primary_gets_cancel_before_the_secondary_invite_after_the_default_3s() {
    // The example's default timer (3 s), in real time, once.
    let t = TwoClouds::start(Setup {
        primary: Some(Behaviour::silent()),
        provisional: "3s",
        ..Setup::default()
    })
    .await;
    t.carrier
        .invite(&t.carrier.invite_spec("silent-1"))
        .await
        .unwrap();
    let first = expect(&t, "primary", "INVITE", invite).await;
    let second = expect(&t, "secondary", "INVITE", invite).await;
    let cancel = expect(&t, "primary", "CANCEL", |s| s.is("CANCEL")).await;
    // Kernel receive timestamps: the CANCEL entered the stack before the secondary's INVITE.
    assert!(
        cancel.at < second.at,
        "CANCEL at the primary must precede the INVITE at the secondary\n{}",
        t.report()
    );
    let waited = second.at.duration_since(first.at).unwrap_or_default();
    assert!(
        waited >= Duration::from_millis(2900) && waited < Duration::from_secs(4),
        "failover after the 3 s provisional timer, not {waited:?}"
    );
    assert!(
        cancel
            .header("Reason")
            .is_some_and(|r| r.starts_with("SIP;cause=")),
        "CANCEL carries a Reason header:\n{}",
        cancel.text()
    );
    expect(&t, "carrier", "200", |s| s.is_response(200, "INVITE")).await;
}

#[tokio::test]
async fn late_200_from_the_abandoned_primary_is_acked_and_byed_and_never_relayed() {
    let t = TwoClouds::start(Setup {
        primary: Some(Behaviour::brownout(Duration::from_millis(900))),
        secondary: Behaviour::answer_after(Duration::from_millis(1500)),
        provisional: "300ms",
        ..Setup::default()
    })
    .await;
    t.carrier
        .invite(&t.carrier.invite_spec("ghost-1"))
        .await
        .unwrap();
    expect(&t, "primary", "CANCEL", |s| s.is("CANCEL")).await;
    expect(&t, "secondary", "INVITE", invite).await;
    // The primary answers late anyway: pointsman ACKs, then BYEs it.
    let ack = expect(&t, "primary", "ACK", |s| s.is("ACK")).await;
    let bye = expect(&t, "primary", "BYE", |s| s.is("BYE")).await;
    assert!(ack.at <= bye.at, "ACK before BYE\n{}", t.report());
    assert!(
        bye.header("Reason")
            .is_some_and(|r| r.contains("cause=200")),
        "{}",
        bye.text()
    );
    // The carrier's call completes on the secondary; no 200 from the primary ever reaches it.
    let ok = expect(&t, "carrier", "200", |s| s.is_response(200, "INVITE")).await;
    assert!(ok
        .header("To")
        .is_some_and(|to| to.contains("tag=secondary-")));
    settle(Duration::from_millis(300)).await;
    let from_primary = t
        .journal
        .received("carrier")
        .iter()
        .filter(|e| e.header("To").is_some_and(|to| to.contains("tag=primary-")))
        .count();
    assert_eq!(from_primary, 0, "{}", t.report());
    assert_eq!(
        t.journal.count("carrier", |s| s.is_response(200, "INVITE")),
        1
    );
}

#[tokio::test]
async fn closed_primary_port_fails_over_on_icmp_without_waiting_for_the_timer() {
    let t = TwoClouds::start(Setup {
        primary: None,
        provisional: "30s",
        ..Setup::default()
    })
    .await;
    t.carrier
        .invite(&t.carrier.invite_spec("icmp-1"))
        .await
        .unwrap();
    // A 30 s timer: only the ICMP port-unreachable report can move the call this fast.
    expect(&t, "secondary", "INVITE", invite).await;
    expect(&t, "carrier", "200", |s| s.is_response(200, "INVITE")).await;
}

#[tokio::test]
async fn refused_tcp_connection_to_the_primary_fails_over_without_waiting_for_the_timer() {
    let t = TwoClouds::start(Setup {
        primary: None,
        primary_transport: "tcp",
        provisional: "30s",
        ..Setup::default()
    })
    .await;
    t.carrier
        .invite(&t.carrier.invite_spec("tcp-refused"))
        .await
        .unwrap();
    expect(&t, "secondary", "INVITE", invite).await;
    expect(&t, "carrier", "200", |s| s.is_response(200, "INVITE")).await;
}

#[tokio::test]
async fn call_to_a_tcp_primary_is_answered_over_tcp() {
    let t = TwoClouds::start(Setup {
        primary_transport: "tcp",
        ..Setup::default()
    })
    .await;
    t.carrier
        .invite(&t.carrier.invite_spec("tcp-dest"))
        .await
        .unwrap();
    let inv = expect(&t, "primary", "INVITE", invite).await;
    assert!(inv
        .header("Via")
        .is_some_and(|v| v.starts_with("SIP/2.0/TCP")));
    expect(&t, "carrier", "200", |s| s.is_response(200, "INVITE")).await;
    t.carrier.hang_up("tcp-dest").await.unwrap();
    expect(&t, "primary", "BYE", |s| s.is("BYE")).await;
    expect(&t, "carrier", "200 to BYE", |s| s.is_response(200, "BYE")).await;
}

#[tokio::test]
async fn carrier_cancel_while_ringing_gets_200_then_487_and_no_branch_starts_after_it() {
    let t = TwoClouds::start(Setup {
        primary: Some(Behaviour::ring_forever()),
        provisional: "300ms",
        ..Setup::default()
    })
    .await;
    t.carrier
        .invite(&t.carrier.invite_spec("cancel-1"))
        .await
        .unwrap();
    expect(&t, "carrier", "180", |s| s.is_response(180, "INVITE")).await;
    t.carrier.cancel("cancel-1").await.unwrap();
    expect(&t, "carrier", "200 to CANCEL", |s| {
        s.is_response(200, "CANCEL")
    })
    .await;
    expect(&t, "carrier", "487", |s| s.is_response(487, "INVITE")).await;
    expect(&t, "primary", "CANCEL", |s| s.is("CANCEL")).await;
    // Well past the provisional timer: no branch ever started towards the secondary.
    settle(Duration::from_millis(800)).await;
    assert_eq!(
        t.journal.count("secondary", call_traffic),
        0,
        "{}",
        t.report()
    );
    assert_eq!(t.journal.count("carrier", final_to_invite), 1);
}

#[tokio::test]
async fn carrier_cancel_before_any_provisional_stops_the_failover_timer() {
    let t = TwoClouds::start(Setup {
        primary: Some(Behaviour::silent()),
        provisional: "400ms",
        ..Setup::default()
    })
    .await;
    t.carrier
        .invite(&t.carrier.invite_spec("cancel-2"))
        .await
        .unwrap();
    expect(&t, "primary", "INVITE", invite).await;
    t.carrier.cancel("cancel-2").await.unwrap();
    expect(&t, "carrier", "487", |s| s.is_response(487, "INVITE")).await;
    settle(Duration::from_millis(900)).await;
    assert_eq!(
        t.journal.count("secondary", call_traffic),
        0,
        "{}",
        t.report()
    );
}

#[tokio::test]
async fn busy_486_is_relayed_and_not_retried() {
    let t = TwoClouds::start(Setup {
        primary: Some(Behaviour::reject(486)),
        ..Setup::default()
    })
    .await;
    t.carrier
        .invite(&t.carrier.invite_spec("busy-1"))
        .await
        .unwrap();
    expect(&t, "carrier", "486", |s| s.is_response(486, "INVITE")).await;
    settle(Duration::from_millis(200)).await;
    assert_eq!(
        t.journal.count("secondary", call_traffic),
        0,
        "{}",
        t.report()
    );
}

#[tokio::test]
async fn decline_603_stops_the_whole_call() {
    let t = TwoClouds::start(Setup {
        primary: Some(Behaviour::reject(603)),
        ..Setup::default()
    })
    .await;
    t.carrier
        .invite(&t.carrier.invite_spec("decline-1"))
        .await
        .unwrap();
    expect(&t, "carrier", "603", |s| s.is_response(603, "INVITE")).await;
    settle(Duration::from_millis(200)).await;
    assert_eq!(
        t.journal.count("secondary", call_traffic),
        0,
        "{}",
        t.report()
    );
}

#[tokio::test]
async fn final_503_after_ringing_is_not_retried_and_reaches_the_carrier_as_500() {
    let t = TwoClouds::start(Setup {
        primary: Some(Behaviour::ring_then(503)),
        ..Setup::default()
    })
    .await;
    t.carrier
        .invite(&t.carrier.invite_spec("ring-503"))
        .await
        .unwrap();
    expect(&t, "carrier", "500", |s| s.is_response(500, "INVITE")).await;
    settle(Duration::from_millis(200)).await;
    assert_eq!(
        t.journal.count("secondary", call_traffic),
        0,
        "{}",
        t.report()
    );
    assert_eq!(t.journal.count("carrier", |s| s.code == Some(503)), 0);
}

#[tokio::test]
async fn ringing_retry_codes_let_a_route_fail_over_after_180() {
    let t = TwoClouds::start(Setup {
        primary: Some(Behaviour::ring_then(503)),
        route_extra: "ringing_retry_codes = [503]",
        ..Setup::default()
    })
    .await;
    t.carrier
        .invite(&t.carrier.invite_spec("ring-retry"))
        .await
        .unwrap();
    expect(&t, "secondary", "INVITE", invite).await;
    expect(&t, "carrier", "200", |s| s.is_response(200, "INVITE")).await;
}

#[tokio::test]
async fn every_destination_failing_gives_the_best_response_never_silence() {
    let t = TwoClouds::start(Setup {
        primary: Some(Behaviour::reject(503)),
        secondary: Behaviour::reject(502),
        ..Setup::default()
    })
    .await;
    t.carrier
        .invite(&t.carrier.invite_spec("all-fail"))
        .await
        .unwrap();
    // 502 beats 503 (§16.7: 503 is the last choice within 5xx).
    expect(&t, "carrier", "502", |s| s.is_response(502, "INVITE")).await;
    assert_eq!(t.journal.count("carrier", final_to_invite), 1);
}

#[tokio::test]
async fn every_destination_silent_gives_503_with_retry_after() {
    let t = TwoClouds::start(Setup {
        primary: Some(Behaviour::silent()),
        secondary: Behaviour::silent(),
        provisional: "200ms",
        ..Setup::default()
    })
    .await;
    t.carrier
        .invite(&t.carrier.invite_spec("all-silent"))
        .await
        .unwrap();
    let resp = expect(&t, "carrier", "503", |s| s.is_response(503, "INVITE")).await;
    assert!(resp.header("Retry-After").is_some(), "{}", resp.text());
    expect(&t, "secondary", "CANCEL", |s| s.is("CANCEL")).await;
}

#[tokio::test]
async fn pass_503_route_relays_the_last_503_unchanged() {
    let t = TwoClouds::start(Setup {
        primary: Some(Behaviour::reject(503)),
        secondary: Behaviour::reject(503),
        route_extra: "pass_503 = true",
        ..Setup::default()
    })
    .await;
    t.carrier
        .invite(&t.carrier.invite_spec("pass-503"))
        .await
        .unwrap();
    expect(&t, "carrier", "503", |s| s.is_response(503, "INVITE")).await;
}

#[tokio::test]
async fn retransmitted_invite_is_absorbed_and_never_makes_a_second_branch() {
    let t = TwoClouds::start(Setup {
        primary: Some(Behaviour::answer_after(Duration::from_millis(600))),
        ..Setup::default()
    })
    .await;
    let bytes = t
        .carrier
        .invite(&t.carrier.invite_spec("retrans-1"))
        .await
        .unwrap();
    expect(&t, "carrier", "180", |s| s.is_response(180, "INVITE")).await;
    for _ in 0..3 {
        t.carrier.send(bytes.clone()).await.unwrap();
    }
    expect(&t, "carrier", "200", |s| s.is_response(200, "INVITE")).await;
    settle(Duration::from_millis(200)).await;
    let branches: std::collections::HashSet<String> = t
        .journal
        .received("primary")
        .iter()
        .filter(|e| e.summary.is("INVITE"))
        .map(|e| e.summary.branch.clone())
        .collect();
    assert_eq!(branches.len(), 1, "{}", t.report());
    assert_eq!(t.journal.count("secondary", call_traffic), 0);
    // Each retransmission was answered with the last provisional.
    assert!(t.journal.count("carrier", |s| s.is_response(180, "INVITE")) >= 2);
}

#[tokio::test]
async fn bye_from_either_side_follows_the_edge_that_answered() {
    let t = TwoClouds::start(Setup {
        primary: Some(Behaviour::reject(503)),
        ..Setup::default()
    })
    .await;
    // Call 1 fails over to the secondary; the carrier hangs up.
    t.carrier
        .invite(&t.carrier.invite_spec("bye-carrier"))
        .await
        .unwrap();
    expect(&t, "carrier", "200", |s| s.is_response(200, "INVITE")).await;
    t.carrier.hang_up("bye-carrier").await.unwrap();
    let bye = expect(&t, "secondary", "BYE", |s| s.is("BYE")).await;
    assert_eq!(bye.remote, t.proxy(), "BYE came through pointsman");
    expect(&t, "carrier", "200 to BYE", |s| s.is_response(200, "BYE")).await;

    // Call 2: the secondary hangs up; the BYE reaches the carrier through pointsman.
    t.carrier
        .invite(&t.carrier.invite_spec("bye-cloud"))
        .await
        .unwrap();
    expect(&t, "carrier", "200", |s| {
        s.is_response(200, "INVITE") && s.call_id == "bye-cloud"
    })
    .await;
    expect(&t, "secondary", "ACK", |s| {
        s.is("ACK") && s.call_id == "bye-cloud"
    })
    .await;
    assert!(t.secondary.hang_up("bye-cloud").await);
    let bye = expect(&t, "carrier", "BYE", |s| s.is("BYE")).await;
    assert_eq!(bye.remote, t.proxy());
    expect(&t, "secondary", "200 to BYE", |s| s.is_response(200, "BYE")).await;
    assert_eq!(
        t.journal.count("primary", |s| s.is("BYE")),
        0,
        "{}",
        t.report()
    );
}

#[tokio::test]
async fn in_dialog_reinvite_update_and_info_follow_the_dialog() {
    let t = TwoClouds::start(Setup::default()).await;
    t.carrier
        .invite(&t.carrier.invite_spec("indialog-1"))
        .await
        .unwrap();
    expect(&t, "carrier", "200", |s| s.is_response(200, "INVITE")).await;
    t.carrier.in_dialog("indialog-1", "INFO").await.unwrap();
    expect(&t, "primary", "INFO", |s| s.is("INFO")).await;
    expect(&t, "carrier", "200 to INFO", |s| s.is_response(200, "INFO")).await;
    t.carrier.in_dialog("indialog-1", "UPDATE").await.unwrap();
    expect(&t, "primary", "UPDATE", |s| s.is("UPDATE")).await;
    expect(&t, "carrier", "200 to UPDATE", |s| {
        s.is_response(200, "UPDATE")
    })
    .await;
}

#[tokio::test]
async fn max_forwards_zero_is_answered_483_and_not_forwarded() {
    let t = TwoClouds::start(Setup::default()).await;
    let mut spec = t.carrier.invite_spec("mf-0");
    spec.max_forwards = 0;
    t.carrier.invite(&spec).await.unwrap();
    expect(&t, "carrier", "483", |s| s.is_response(483, "INVITE")).await;
    settle(Duration::from_millis(200)).await;
    assert_eq!(t.journal.count("primary", call_traffic), 0);
}

#[tokio::test]
async fn malformed_input_gets_400_or_nothing_and_pointsman_keeps_serving() {
    let mut t = TwoClouds::start(Setup::default()).await;
    let me = t.carrier.local_addr();
    let bad: Vec<(&str, String)> = vec![
        (
            "negative Content-Length",
            format!(
                "INVITE sip:1@{p} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-bad2\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:a@{me}>;tag=1\r\nTo: <sip:1@{p}>\r\n\
                 Call-ID: bad-2\r\nCSeq: 1 INVITE\r\nContent-Length: -4\r\n\r\n",
                p = t.proxy()
            ),
        ),
        (
            "CSeq method mismatch",
            format!(
                "INVITE sip:1@{p} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-bad3\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:a@{me}>;tag=1\r\nTo: <sip:1@{p}>\r\n\
                 Call-ID: bad-3\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
                p = t.proxy()
            ),
        ),
    ];
    for (n, (what, msg)) in bad.iter().enumerate() {
        t.carrier.send(msg.clone().into()).await.unwrap();
        let got = t
            .journal
            .wait_for_nth("carrier", n + 1, WAIT, |s| s.code == Some(400))
            .await;
        assert!(got.is_some(), "{what}: no 400\n{}", t.report());
        assert!(t.node.alive(), "{what} killed pointsman");
    }
    assert_eq!(
        t.journal.count("carrier", |s| s.code == Some(400)),
        bad.len(),
        "{}",
        t.report()
    );
    // SIP/3.0 gets 505.
    let v3 = format!(
        "INVITE sip:1@{p} SIP/3.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-bad4\r\n\
         Max-Forwards: 70\r\nFrom: <sip:a@{me}>;tag=1\r\nTo: <sip:1@{p}>\r\n\
         Call-ID: bad-4\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        p = t.proxy()
    );
    t.carrier.send(v3.into()).await.unwrap();
    let got = t
        .journal
        .wait_for("carrier", WAIT, |s| s.code == Some(505))
        .await;
    assert!(got.is_some(), "SIP/3.0: no 505\n{}", t.report());
    // What cannot be answered (no Call-ID to copy), garbage and a bad response are dropped
    // without a word.
    let no_call_id = format!(
        "INVITE sip:1@{p} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-bad1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:a@{me}>;tag=1\r\nTo: <sip:1@{p}>\r\n\
         CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        p = t.proxy()
    );
    for junk in [
        no_call_id.as_bytes(),
        &b"\x00\x01\x02 not sip at all"[..],
        b"SIP/2.0 200 OK\r\nVia: broken\r\n\r\n",
        b"INVITE\r\n\r\n",
        &[0xffu8; 1400][..],
    ] {
        t.carrier.send(junk.to_vec().into()).await.unwrap();
    }
    settle(Duration::from_millis(200)).await;
    assert_eq!(
        t.journal.count("carrier", |s| s.code == Some(400)),
        bad.len()
    );
    assert!(t.node.alive());
    // And the next call goes through.
    t.carrier
        .invite(&t.carrier.invite_spec("after-junk"))
        .await
        .unwrap();
    expect(&t, "carrier", "200", |s| s.is_response(200, "INVITE")).await;
    assert_eq!(t.journal.count("primary", invite), 1);
}

#[tokio::test]
async fn tcp_carrier_leg_call_is_answered_and_hung_up() {
    let t = TwoClouds::start(Setup::default()).await;
    let tcp = Carrier::tcp("tcp-carrier", at(t.ip, PROXY_PORT), t.journal.clone())
        .await
        .unwrap();
    tcp.invite(&tcp.invite_spec("tcp-leg")).await.unwrap();
    let ok = t
        .journal
        .wait_for("tcp-carrier", WAIT, |s| s.is_response(200, "INVITE"))
        .await
        .unwrap_or_else(|| panic!("no 200 over TCP\n{}", t.report()));
    // The carrier leg is TCP and the cloud leg UDP: two Record-Route values, one per leg.
    let rr = ok.header("Record-Route").unwrap_or_default();
    assert!(rr.contains("transport=tcp"), "{rr}");
    expect(&t, "primary", "ACK", |s| s.is("ACK")).await;
    tcp.hang_up("tcp-leg").await.unwrap();
    expect(&t, "primary", "BYE", |s| s.is("BYE")).await;
    t.journal
        .wait_for("tcp-carrier", WAIT, |s| s.is_response(200, "BYE"))
        .await
        .unwrap_or_else(|| panic!("no 200 to BYE over TCP\n{}", t.report()));
}

#[tokio::test]
async fn a_tcp_caller_whose_connection_is_gone_has_every_branch_cancelled() {
    // The primary rings only after the caller has hung up its connection: the 180 cannot be
    // delivered (nothing listens where the caller was), so the call is given up (RFC 3261
    // §17.2.4) and the ringing destination gets CANCEL instead of ringing for nobody.
    let t = TwoClouds::start(Setup {
        primary: Some(Behaviour::of(vec![
            Step::Wait(Duration::from_millis(400)),
            Step::Respond(180),
        ])),
        provisional: "2s",
        probe: false,
        ..Setup::default()
    })
    .await;
    let tcp = Carrier::tcp("tcp-carrier", at(t.ip, PROXY_PORT), t.journal.clone())
        .await
        .unwrap();
    tcp.invite(&tcp.invite_spec("caller-gone")).await.unwrap();
    t.journal
        .wait_for("tcp-carrier", WAIT, |s| s.is_response(100, "INVITE"))
        .await
        .unwrap_or_else(|| panic!("no 100 over TCP\n{}", t.report()));
    drop(tcp);
    let cancel = expect(&t, "primary", "CANCEL", |s| s.is("CANCEL")).await;
    assert!(
        cancel
            .header("Reason")
            .is_some_and(|r| r.contains("cause=480")),
        "{}",
        t.report()
    );
    settle(Duration::from_secs(3)).await;
    assert_eq!(
        t.journal.count("secondary", |s| s.is("INVITE")),
        0,
        "no branch starts for a caller that is gone\n{}",
        t.report()
    );
}

#[tokio::test]
async fn options_to_pointsman_is_answered_200() {
    let t = TwoClouds::start(Setup::default()).await;
    let me = t.carrier.local_addr();
    let options = format!(
        "OPTIONS sip:{p} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-opt1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:carrier@{me}>;tag=o1\r\nTo: <sip:{p}>\r\n\
         Call-ID: opt-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        p = t.proxy()
    );
    t.carrier.send(options.into()).await.unwrap();
    let ok = expect(&t, "carrier", "200", |s| s.is_response(200, "OPTIONS")).await;
    assert!(ok.header("Allow").is_some_and(|a| a.contains("INVITE")));
    assert_eq!(t.journal.count("primary", call_traffic), 0);
}

#[tokio::test]
async fn deferred_cancel_mode_cancels_a_silent_branch_only_once_it_answers() {
    // The primary is slow: its 100 comes after the provisional timer fired.
    let slow = Behaviour::of(vec![
        Step::Wait(Duration::from_millis(500)),
        Step::Respond(100),
        Step::Respond(180),
    ]);
    let t = TwoClouds::start(Setup {
        primary: Some(slow),
        provisional: "200ms",
        primary_extra: "cancel_mode = \"deferred\"",
        ..Setup::default()
    })
    .await;
    t.carrier
        .invite(&t.carrier.invite_spec("deferred-1"))
        .await
        .unwrap();
    let second = expect(&t, "secondary", "INVITE", invite).await;
    let cancel = expect(&t, "primary", "CANCEL", |s| s.is("CANCEL")).await;
    let trying = t
        .journal
        .entries()
        .into_iter()
        .find(|e| e.peer == "primary" && e.summary.code == Some(100))
        .expect("primary sent 100");
    assert!(
        cancel.at > trying.at && cancel.at > second.at,
        "deferred: CANCEL only after the branch's first provisional\n{}",
        t.report()
    );
    expect(&t, "carrier", "200", |s| s.is_response(200, "INVITE")).await;
}

/// `pointsman check` on `text` written to a file in a fresh directory named after `dir`:
/// its exit code, its stderr and the file's path as it names it.
fn check_text(dir: &str, text: &str) -> (Option<i32>, String, String) {
    let dir = std::env::temp_dir().join(format!("{dir}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pointsman-node"))
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .expect("run pointsman check");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), stderr, file.display().to_string())
}

#[test]
fn check_accepts_the_shipped_example_and_names_the_key_of_every_error() {
    let bin = env!("CARGO_BIN_EXE_pointsman-node");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/two-clouds.toml");
    let ok = std::process::Command::new(bin)
        .args(["check", "--config", example])
        .output()
        .expect("run pointsman check");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let (code, stderr, _) = check_text(
        "pointsman-check",
        "[[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:5060\"\n\n\
         [[destination]]\nname = \"primary\"\naddress = \"127.0.0.1:5070\"\n\
         provisional_timeout = \"0s\"\n\n\
         [[route]]\nname = \"default\"\ndestinations = [\"primary\", \"nowhere\"]\n",
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("destination[0].provisional_timeout"),
        "names the key path:\n{stderr}"
    );
    assert!(stderr.contains("nowhere"), "names the bad value:\n{stderr}");
    assert!(
        stderr.contains("bad.toml:"),
        "names the file and line:\n{stderr}"
    );
}

#[test]
fn check_shows_each_routes_media_and_warns_of_hot_hot_without_the_relay() {
    let bin = env!("CARGO_BIN_EXE_pointsman-node");
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/hot-hot-media.toml"
    );
    let ok = std::process::Command::new(bin)
        .args(["check", "--config", example])
        .output()
        .expect("run pointsman check");
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(stdout.contains("hot-hot-media.toml: ok\n"), "{stdout}");
    assert!(
        stdout.contains(
            "route \"default\": media relayed by pointsman (carrier side 127.0.0.1, cloud side \
             127.0.0.1, ports 30000-30199); an answered call without media for 30s is ended"
        ),
        "{stdout}"
    );

    let (code, stderr, file) = check_text(
        "pointsman-check-hot-hot",
        "[[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:5060\"\n\n\
         [[destination]]\nname = \"a\"\naddress = \"127.0.0.1:5070\"\n\n\
         [[destination]]\nname = \"b\"\naddress = \"127.0.0.1:5080\"\n\n\
         [[group]]\nname = \"both\"\nstrategy = \"parallel\"\nmembers = [\"a\", \"b\"]\n\n\
         [[route]]\nname = \"default\"\ntiers = [\"both\"]\n",
    );
    assert_eq!(
        code,
        Some(0),
        "a warning does not fail the check:\n{stderr}"
    );
    assert!(
        stderr.starts_with(&format!(
            "warning: {file}:20:9: route[0].tiers: route \"default\" forks calls to the parallel \
             group \"both\" but does not relay their media: hot-hot early media needs media = \
             \"relay\": without it the carrier hears whichever cloud its phone follows and \
             nothing switches when it fails"
        )),
        "{stderr}"
    );
}

#[test]
fn check_prints_every_problem_of_a_file_one_a_line_with_line_and_column_then_a_count() {
    // A missing key; an unknown key and a wrong type in one table; another wrong type, an
    // unknown section and two bad values: seven problems in six sections. The route names the
    // unreadable destination, which is no problem of its own.
    let (code, stderr, file) = check_text(
        "pointsman-check-all",
        "[node]\nid = 0\n\n\
         [[listen]]\ntransport = \"udp\"\n\n\
         [[destination]]\nname = \"primary\"\naddress = \"127.0.0.1:5070\"\ntransprt = \"tcp\"\nweight = \"heavy\"\n\n\
         [guard]\nrate = \"fast\"\n\n\
         [[route]]\nname = \"default\"\ndestinations = [\"primary\"]\nretry_codes = [503, 603]\n\n\
         [tsl]\nca = \"x\"\n",
    );
    assert_eq!(code, Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    let expected = [
        ("2:6", "node.id", "id = 0"),
        ("4:1", "listen[0]", "missing field `address`"),
        (
            "10:1",
            "destination[0].transprt",
            "did you mean `transport`?",
        ),
        (
            "11:10",
            "destination[0].weight",
            "invalid type: string \"heavy\"",
        ),
        ("14:8", "guard.rate", "invalid type: string \"fast\""),
        ("19:21", "route[0].retry_codes[1]", "603"),
        ("21:2", "tsl", "unknown field `tsl`"),
    ];
    assert_eq!(lines.len(), expected.len() + 1, "{stderr}");
    for (line, (place, path, phrase)) in lines.iter().zip(expected) {
        let head = format!("{file}:{place}: {path}: ");
        assert!(
            line.starts_with(&head) && line.contains(phrase),
            "{head}...{phrase}... in\n{stderr}"
        );
    }
    assert!(
        stderr.ends_with(&format!("{file}: 7 error(s), 0 warning(s)\n")),
        "{stderr}"
    );
}

#[tokio::test]
async fn sighup_reload_routes_new_calls_by_the_new_rules_and_calls_in_progress_by_theirs() {
    let setup = Setup {
        primary: Some(Behaviour::silent()),
        provisional: "800ms",
        ..Setup::default()
    };
    let t = TwoClouds::start(setup).await;
    // Call 1 starts on the old rules: primary, then secondary.
    t.carrier
        .invite(&t.carrier.invite_spec("before-reload"))
        .await
        .unwrap();
    expect(&t, "primary", "INVITE", invite).await;
    // New rules: the primary only (the secondary is still a destination, in no route).
    let new_rules = support::two_clouds_config(
        t.ip,
        &Setup {
            provisional: "800ms",
            ..Setup::default()
        },
    )
    .replace(
        r#"destinations = ["primary", "secondary"]"#,
        r#"destinations = ["primary"]"#,
    );
    assert!(t.node.reload(&new_rules).await, "{}", t.node.log());
    // Call 2 starts on the new rules.
    t.carrier
        .invite(&t.carrier.invite_spec("after-reload"))
        .await
        .unwrap();
    // Call 1 still fails over to the secondary and is answered there...
    expect(&t, "carrier", "200 for call 1", |s| {
        s.is_response(200, "INVITE") && s.call_id == "before-reload"
    })
    .await;
    // ... while call 2 has nowhere to go after the primary: 503 with Retry-After.
    let failed = expect(&t, "carrier", "final for call 2", |s| {
        final_to_invite(s) && s.call_id == "after-reload"
    })
    .await;
    assert_eq!(failed.summary.code, Some(503), "{}", t.report());
    assert_eq!(
        t.journal.count("secondary", |s| s.is("INVITE")
            && s.call_id == "after-reload"),
        0,
        "{}",
        t.report()
    );
}

#[tokio::test]
async fn invalid_reload_keeps_the_running_rules_and_logs_why() {
    let t = TwoClouds::start(Setup {
        primary: Some(Behaviour::reject(503)),
        ..Setup::default()
    })
    .await;
    let broken = support::two_clouds_config(t.ip, &Setup::default()).replace(
        r#"destinations = ["primary", "secondary"]"#,
        r#"destinations = ["primary", "secnodary"]"#,
    );
    assert!(!t.node.reload(&broken).await, "{}", t.node.log());
    assert!(
        t.node.log().contains("secnodary"),
        "the refusal names the problem:\n{}",
        t.node.log()
    );
    // The old rules still fail over to the secondary.
    t.carrier
        .invite(&t.carrier.invite_spec("after-bad-reload"))
        .await
        .unwrap();
    expect(&t, "carrier", "200", |s| s.is_response(200, "INVITE")).await;
    expect(&t, "secondary", "INVITE", invite).await;
}

// ---- routes with tiers, parallel groups and survivability (issue: routing rules) -----------

use support::{destination, node_section, Cast};

/// Edge pair at site A (priority), site B, and a lifeboat for survivability.
fn three_tiers(ip: std::net::IpAddr, tiers: &str, survivability: &str) -> String {
    let mut c = node_section(ip);
    for (name, port) in [
        ("edge-a1", 5071),
        ("edge-a2", 5072),
        ("edge-b1", 5073),
        ("cloud-1", 5074),
        ("cloud-2", 5075),
        ("lifeboat", 5076),
    ] {
        c.push_str(&destination(name, ip, port, "400ms"));
    }
    c.push_str(&format!(
        r#"
[[group]]
name = "site-a"
strategy = "priority"
members = ["edge-a1", {{ name = "edge-a2", priority = 10 }}]

[[group]]
name = "site-b"
members = ["edge-b1"]

[[group]]
name = "clouds"
strategy = "parallel"
members = ["cloud-1", "cloud-2"]

[[group]]
name = "lifeboats"
members = ["lifeboat"]

[[route]]
name = "default"
tiers = {tiers}
{survivability}
"#
    ));
    c
}

#[tokio::test]
async fn tier_1_down_moves_the_call_to_tier_2() {
    let t = Cast::start(
        |ip| three_tiers(ip, r#"["site-a", "site-b"]"#, ""),
        &[
            ("edge-a1", 5071, None),
            ("edge-a2", 5072, Some(Behaviour::silent())),
            ("edge-b1", 5073, Some(Behaviour::answer())),
        ],
    )
    .await;
    t.carrier
        .invite(&t.carrier.invite_spec("tiers-1"))
        .await
        .unwrap();
    // edge-a1's port is closed (ICMP), edge-a2 is silent (provisional timer): site B answers.
    let ok = t
        .journal
        .wait_for("carrier", WAIT, |s| s.is_response(200, "INVITE"))
        .await
        .unwrap_or_else(|| panic!("no 200\n{}", t.report()));
    assert!(ok
        .header("To")
        .is_some_and(|to| to.contains("tag=edge-b1-")));
    let first_invite = |peer: &str| {
        t.journal
            .received(peer)
            .into_iter()
            .find(|e| e.summary.is("INVITE"))
            .map(|e| e.at)
            .unwrap_or_else(|| panic!("{peer} got no INVITE\n{}", t.report()))
    };
    let (a2_invite, b1_invite) = (first_invite("edge-a2"), first_invite("edge-b1"));
    let a2_cancel = t
        .journal
        .received("edge-a2")
        .into_iter()
        .find(|e| e.summary.is("CANCEL"))
        .unwrap_or_else(|| panic!("edge-a2 never cancelled\n{}", t.report()));
    assert!(
        a2_invite < a2_cancel.at && a2_cancel.at < b1_invite,
        "{}",
        t.report()
    );
}

#[tokio::test]
async fn parallel_route_with_both_clouds_answering_leaves_exactly_one_call() {
    let t = Cast::start(
        |ip| three_tiers(ip, r#"["clouds"]"#, ""),
        &[
            ("cloud-1", 5074, Some(Behaviour::answer())),
            ("cloud-2", 5075, Some(Behaviour::answer())),
        ],
    )
    .await;
    for n in 0..5 {
        let call_id = format!("hot-hot-{n}");
        t.carrier
            .invite(&t.carrier.invite_spec(&call_id))
            .await
            .unwrap();
    }
    settle(Duration::from_millis(1500)).await;
    for n in 0..5 {
        let call_id = format!("hot-hot-{n}");
        let of_call = |peer: &str, pred: &dyn Fn(&Summary) -> bool| {
            t.journal.count(peer, |s| s.call_id == call_id && pred(s))
        };
        assert_eq!(
            of_call("carrier", &|s| s.is_response(200, "INVITE")),
            1,
            "{call_id}: the carrier sees one answer\n{}",
            t.report()
        );
        assert_eq!(of_call("cloud-1", &|s| s.is("INVITE")), 1, "forked to both");
        assert_eq!(of_call("cloud-2", &|s| s.is("INVITE")), 1, "forked to both");
        // Exactly one cloud keeps the call: it got the carrier's ACK and no BYE; the other
        // was cancelled before answering, or answered and was ACKed and BYEd by pointsman.
        let alive = ["cloud-1", "cloud-2"]
            .iter()
            .filter(|c| of_call(c, &|s| s.is("BYE")) == 0 && of_call(c, &|s| s.is("CANCEL")) == 0)
            .count();
        assert_eq!(
            alive,
            1,
            "{call_id}: exactly one call survives\n{}",
            t.report()
        );
    }
}

#[tokio::test]
async fn survivability_group_takes_the_call_when_every_tier_failed() {
    let t = Cast::start(
        |ip| {
            three_tiers(
                ip,
                r#"["site-a", "clouds"]"#,
                r#"survivability = { group = "lifeboats" }"#,
            )
        },
        &[
            ("edge-a1", 5071, Some(Behaviour::reject(503))),
            ("edge-a2", 5072, Some(Behaviour::reject(503))),
            ("cloud-1", 5074, Some(Behaviour::reject(500))),
            ("cloud-2", 5075, None),
            ("lifeboat", 5076, Some(Behaviour::answer())),
        ],
    )
    .await;
    t.carrier
        .invite(&t.carrier.invite_spec("surv-e2e"))
        .await
        .unwrap();
    let ok = t
        .journal
        .wait_for("carrier", WAIT, |s| s.is_response(200, "INVITE"))
        .await
        .unwrap_or_else(|| panic!("no 200\n{}", t.report()));
    assert!(ok
        .header("To")
        .is_some_and(|to| to.contains("tag=lifeboat-")));
}

#[tokio::test]
async fn survivability_reject_tells_the_carrier_when_to_come_back() {
    let t = Cast::start(
        |ip| {
            three_tiers(
                ip,
                r#"["site-b"]"#,
                r#"survivability = { reject = 503, retry_after = "120s" }"#,
            )
        },
        &[("edge-b1", 5073, Some(Behaviour::reject(500)))],
    )
    .await;
    t.carrier
        .invite(&t.carrier.invite_spec("surv-reject"))
        .await
        .unwrap();
    let resp = t
        .journal
        .wait_for("carrier", WAIT, final_to_invite)
        .await
        .unwrap_or_else(|| panic!("no final\n{}", t.report()));
    assert_eq!(resp.summary.code, Some(503), "{}", t.report());
    assert_eq!(resp.header("Retry-After").as_deref(), Some("120"));
}

#[test]
fn drill_runs_every_failure_and_its_summary_matches_what_the_clouds_saw() {
    let ip = support::fresh_ip();
    let timeline = std::env::temp_dir().join(format!("pointsman-drill-{ip}.svg"));
    // Six phases of 4 s: healthy, 503, brownout, dies, recovers, hot-hot.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pointsman-node"))
        .args([
            "drill",
            "--duration",
            "24s",
            "--rate",
            "4",
            "--port",
            "25060",
        ])
        .args(["--ip", &ip.to_string()])
        .arg("--timeline")
        .arg(&timeline)
        .output()
        .expect("run pointsman drill");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "drill failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let figure = |name: &str| -> usize {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|rest| rest.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name:?} in the summary:\n{stdout}"))
    };
    let calls = figure("calls placed");
    assert!(calls >= 42, "{stdout}");
    // The picture has a mark for every call where it was answered, and the phases.
    let svg = std::fs::read_to_string(&timeline).expect("the timeline was written");
    let _ = std::fs::remove_file(&timeline);
    let marks = ["answered", "failed-over", "failed"]
        .iter()
        .map(|class| svg.matches(&format!("<circle class=\"{class}\"")).count())
        .sum::<usize>();
    assert_eq!(marks, calls, "{svg}");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    for phase in ["healthy", "503", "brownout", "dies", "recovers", "hot-hot"] {
        assert!(svg.contains(&format!(">{phase}</text>")), "{phase}");
    }
    assert_eq!(figure("answered"), calls, "{stdout}");
    // The hot-hot calls are all answered by the standby: the preferred cloud fails each one.
    let hot_hot = figure("hot-hot calls");
    assert!(hot_hot >= 10, "{stdout}");
    assert_eq!(figure("by hot-2"), hot_hot, "{stdout}");
    assert_eq!(
        figure("by primary") + figure("by secondary") + hot_hot,
        calls
    );
    // What the carrier heard on each: one clean switch, nothing of the failed cloud after it.
    assert_eq!(figure("switched cleanly"), hot_hot, "{stdout}");
    assert_eq!(figure("wrong-branch packets"), 0, "{stdout}");
    for cut in ["after 500", "after silence"] {
        assert!(
            stdout.lines().any(|l| l.trim().starts_with(cut)),
            "no gap {cut}:\n{stdout}"
        );
    }
    assert_eq!(figure("ghost calls relayed"), 0);
    // Every message pointsman sent reads with rsip, a SIP parser independent of its own.
    let sent = stdout
        .lines()
        .find(|l| l.trim().starts_with("messages sent"))
        .unwrap_or_else(|| panic!("no message count:\n{stdout}"));
    assert!(sent.contains("(0 unreadable"), "{stdout}");
    // Each failure left its trace: failovers (503, brownout, death), CANCELs and torn-down
    // late answers (brownout), and the primary answered again after recovering.
    assert!(figure("failed over") > 0, "{stdout}");
    assert!(figure("CANCELs to clouds") > 0, "{stdout}");
    assert!(figure("ghost calls torn down") > 0, "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    let recovered = lines
        .iter()
        .position(|l| l.contains("phase 5"))
        .expect("a recovery phase");
    assert!(
        lines[recovered..]
            .iter()
            .any(|l| l.contains("answered by primary")),
        "{stdout}"
    );
    // No flapping in the brown-out: calls take the primary down once, and its answered
    // probes do not bring it back inside the phase.
    let phase = |n: usize| {
        lines
            .iter()
            .position(|l| l.contains(&format!("phase {n}:")))
            .unwrap_or_else(|| panic!("no phase {n}:\n{stdout}"))
    };
    let brownout = &lines[phase(3)..phase(4)];
    let flips = |state: &str| {
        brownout
            .iter()
            .filter(|l| l.contains(&format!("destination primary is {state}")))
            .count()
    };
    assert_eq!(flips("down"), 1, "{stdout}");
    assert!(flips("up") <= 1, "{stdout}");
    // The per-call lines agree with the totals.
    let per_call = lines.iter().filter(|l| l.starts_with("drill-")).count();
    assert_eq!(per_call, calls, "{stdout}");
    let hot_hot_lines = &lines[phase(6)..];
    let heard = hot_hot_lines
        .iter()
        .filter(|l| l.trim().starts_with("heard: hot-1 cut by"))
        .filter(|l| l.contains("switch hot-1 -> hot-2") && l.ends_with("clean"))
        .count();
    assert_eq!(heard, hot_hot, "{stdout}");
}

#[tokio::test]
async fn a_destination_that_names_its_own_host_gets_it_in_the_request_uri_and_its_ack() {
    let t = TwoClouds::start(Setup {
        primary: Some(Behaviour::reject(503)),
        primary_extra: "request_uri = { host = \"tenant-1.byoc.example.com\", user_prefix = \"+\", params = [\"tgrp=t-1\"] }",
        ..Setup::default()
    })
    .await;
    t.carrier
        .invite(&t.carrier.invite_spec("ruri-1"))
        .await
        .unwrap();
    expect(&t, "carrier", "200", |s| s.is_response(200, "INVITE")).await;
    let at_primary = expect(&t, "primary", "INVITE", invite).await;
    let line = at_primary.first_line();
    assert!(
        line.starts_with("INVITE sip:+")
            && line.ends_with("@tenant-1.byoc.example.com;tgrp=t-1 SIP/2.0"),
        "the primary's own Request-URI: {line}"
    );
    // The hop-by-hop ACK for its 503 carries the same Request-URI (RFC 3261 §17.1.1.3).
    let ack = expect(&t, "primary", "ACK for 503", |s| s.is("ACK")).await;
    assert_eq!(
        ack.first_line(),
        line.replacen("INVITE", "ACK", 1),
        "ACK on the INVITE's Request-URI"
    );
    // The secondary names no host of its own: the carrier's Request-URI reaches it unchanged.
    let at_secondary = expect(&t, "secondary", "INVITE", invite).await;
    let carrier_sent = t
        .journal
        .entries()
        .into_iter()
        .find(|e| e.peer == "carrier" && e.dir == pointsman_sim::Dir::Out && e.summary.is("INVITE"))
        .expect("the carrier's INVITE");
    assert_eq!(at_secondary.first_line(), carrier_sent.first_line());
}

#[tokio::test]
async fn probes_leave_from_the_listener_name_the_node_and_their_replies_bring_a_cloud_up() {
    let t = TwoClouds::start(Setup {
        primary_extra: "request_uri = { host = \"tenant-1.byoc.example.com\" }",
        ..Setup::default()
    })
    .await;
    let probe = expect(&t, "primary", "OPTIONS", |s| s.is("OPTIONS")).await;
    // From the address and port the carrier's calls reach the cloud from, not an ephemeral
    // port: what a cloud that admits a trunk by its signalling address checks.
    assert_eq!(probe.remote, at(t.ip, PROXY_PORT), "{}", probe.text());
    assert_eq!(
        probe.first_line(),
        "OPTIONS sip:tenant-1.byoc.example.com SIP/2.0"
    );
    assert_eq!(
        probe.header("To").as_deref(),
        Some("<sip:tenant-1.byoc.example.com>")
    );
    assert_eq!(
        probe.header("Contact"),
        Some(format!("<sip:pointsman@{}>", at(t.ip, PROXY_PORT)))
    );
    assert!(probe
        .header("User-Agent")
        .is_some_and(|ua| ua.starts_with("pointsman/")));
    // The cloud's 200 came back to the listener, and the workers handed it to the prober:
    // the primary is up (1), and no reply was taken for a stray.
    let admin = at(t.ip, support::ADMIN_PORT).to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = support::metric_text(&admin).await;
        let value = |series: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        };
        if value("pointsman_destination_state{destination=\"primary\"}") == Some(1.0) {
            assert_eq!(
                value("pointsman_dropped_total{reason=\"stray\"}"),
                Some(0.0),
                "{text}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the primary never came up on its probes:\n{text}\n{}",
            t.node.log()
        );
        settle(Duration::from_millis(50)).await;
    }
}

// ---- capacity caps (max_calls, max_cps) -------------------------------------------------------

/// The value of `series` (name and labels as rendered) at the node's `/metrics`.
async fn metric(t: &TwoClouds, series: &str) -> Option<f64> {
    let text = support::metric_text(&at(t.ip, support::ADMIN_PORT).to_string()).await;
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .parse::<f64>()
            .ok()
    })
}

/// `GET /destinations`, the one called `name`.
async fn destination_status(t: &TwoClouds, name: &str) -> pointsman::admin::DestinationStatus {
    let admin = at(t.ip, support::ADMIN_PORT).to_string();
    let all = tokio::task::spawn_blocking(move || {
        pointsman::admin::fetch_destinations(&admin, None, WAIT)
    })
    .await
    .expect("join")
    .expect("GET /destinations");
    all.into_iter()
        .find(|d| d.name == name)
        .unwrap_or_else(|| panic!("no destination {name}"))
}

/// Places call `id` and waits for its final answer at the carrier: the cloud that took it.
async fn call_answered_by(t: &TwoClouds, id: &str) -> String {
    t.carrier.invite(&t.carrier.invite_spec(id)).await.unwrap();
    let ok = expect(t, "carrier", "the final answer", |s| {
        final_to_invite(s) && s.call_id == id
    })
    .await;
    assert_eq!(ok.summary.code, Some(200), "{id}\n{}", t.report());
    let to = ok.header("To").unwrap_or_default();
    ["primary", "secondary"]
        .into_iter()
        .find(|cloud| to.contains(&format!("tag={cloud}-")))
        .unwrap_or_else(|| panic!("{id} answered by nobody known: {to}"))
        .to_string()
}

/// Waits until the primary's probes have brought it up (so its state can be compared after).
async fn primary_up(t: &TwoClouds) {
    let deadline = std::time::Instant::now() + WAIT;
    while metric(t, r#"pointsman_destination_state{destination="primary"}"#).await != Some(1.0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the primary never came up\n{}",
            t.report()
        );
        settle(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn calls_over_the_primarys_max_calls_go_to_the_secondary_until_one_of_its_calls_ends() {
    let t = TwoClouds::start(Setup {
        primary_extra: "max_calls = 2",
        ..Setup::default()
    })
    .await;
    primary_up(&t).await;
    // Two answered calls fill the primary: an answered call counts until its BYE.
    assert_eq!(call_answered_by(&t, "cap-1").await, "primary");
    assert_eq!(call_answered_by(&t, "cap-2").await, "primary");
    assert_eq!(call_answered_by(&t, "cap-3").await, "secondary");
    assert_eq!(call_answered_by(&t, "cap-4").await, "secondary");
    // Nothing was sent to the primary for them: skipped, not tried and cancelled.
    assert_eq!(
        t.journal.count("primary", |s| s.is("INVITE")
            && (s.call_id == "cap-3" || s.call_id == "cap-4")),
        0,
        "{}",
        t.report()
    );
    assert_eq!(t.journal.count("primary", |s| s.is("CANCEL")), 0);

    let primary = destination_status(&t, "primary").await;
    assert_eq!(
        (primary.max_calls, primary.calls_in_progress, primary.at_cap),
        (Some(2), 2, Some(pointsman_protocol::health::Cap::Calls)),
        "{primary:?}"
    );
    assert_eq!((primary.capped_calls, primary.failures), (2, 0));
    assert_eq!(primary.state, pointsman_protocol::health::State::Up);
    // `pointsman status` shows it.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_pointsman-node"))
        .args(["status", "--admin"])
        .arg(at(t.ip, support::ADMIN_PORT).to_string())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("primary "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains(" 2/2 ") && line.contains(" CALLS "), "{text}");

    // The BYE of one of its calls frees a slot: the next call goes to the primary again.
    t.carrier.hang_up("cap-1").await.unwrap();
    expect(&t, "carrier", "200 to BYE", |s| {
        s.is_response(200, "BYE") && s.call_id == "cap-1"
    })
    .await;
    assert_eq!(call_answered_by(&t, "cap-5").await, "primary");
    assert_eq!(call_answered_by(&t, "cap-6").await, "secondary");

    let value = |series: &'static str| metric(&t, series);
    assert_eq!(
        value(r#"pointsman_destination_capped_total{destination="primary",cap="calls"}"#).await,
        Some(3.0)
    );
    assert_eq!(
        value(r#"pointsman_destination_capped_total{destination="primary",cap="cps"}"#).await,
        Some(0.0)
    );
    assert_eq!(
        value(r#"pointsman_destination_capped_total{destination="secondary",cap="calls"}"#).await,
        Some(0.0)
    );
    assert_eq!(
        value(r#"pointsman_destination_calls_in_progress{destination="primary"}"#).await,
        Some(2.0)
    );
    assert_eq!(
        value(r#"pointsman_destination_calls_in_progress{destination="secondary"}"#).await,
        Some(3.0)
    );
    assert_eq!(
        value(r#"pointsman_branch_attempts_total{destination="primary"}"#).await,
        Some(3.0)
    );
    for reason in ["timeout", "transport", "code"] {
        let series =
            format!(r#"pointsman_failovers_total{{destination="primary",reason="{reason}"}}"#);
        assert_eq!(metric(&t, &series).await, Some(0.0), "{reason}");
    }
    assert_eq!(
        value(r#"pointsman_destination_state{destination="primary"}"#).await,
        Some(1.0),
        "still up: a cap is not a failure"
    );

    // A reload raises the cap: the next call goes to the primary, whose calls still count.
    let raised = support::two_clouds_config(
        t.ip,
        &Setup {
            primary_extra: "max_calls = 3",
            ..Setup::default()
        },
    );
    assert!(t.node.reload(&raised).await, "{}", t.node.log());
    assert_eq!(call_answered_by(&t, "cap-7").await, "primary");
    assert_eq!(call_answered_by(&t, "cap-8").await, "secondary");
    let primary = destination_status(&t, "primary").await;
    assert_eq!(
        (
            primary.max_calls,
            primary.calls_in_progress,
            primary.capped_calls
        ),
        (Some(3), 3, 4),
        "the count and the entry's skips survive the reload: {primary:?}"
    );
    assert_eq!(
        value(r#"pointsman_destination_capped_total{destination="primary",cap="calls"}"#).await,
        Some(4.0)
    );
}

#[tokio::test]
async fn calls_past_the_primarys_max_cps_go_to_the_secondary_until_its_bucket_refills() {
    let t = TwoClouds::start(Setup {
        primary_extra: "max_cps = 1",
        ..Setup::default()
    })
    .await;
    // Three INVITEs at once: the bucket (burst 1) lets the first through.
    for id in ["cps-1", "cps-2", "cps-3"] {
        t.carrier.invite(&t.carrier.invite_spec(id)).await.unwrap();
    }
    for id in ["cps-1", "cps-2", "cps-3"] {
        expect(&t, "carrier", "200", |s| {
            s.is_response(200, "INVITE") && s.call_id == id
        })
        .await;
    }
    let invited = |peer: &str| {
        let mut ids: Vec<String> = t
            .journal
            .received(peer)
            .iter()
            .filter(|e| e.summary.is("INVITE"))
            .map(|e| e.summary.call_id.clone())
            .collect();
        ids.dedup();
        ids
    };
    assert_eq!(invited("primary"), ["cps-1"], "{}", t.report());
    assert_eq!(invited("secondary"), ["cps-2", "cps-3"], "{}", t.report());
    assert_eq!(
        metric(
            &t,
            r#"pointsman_destination_capped_total{destination="primary",cap="cps"}"#
        )
        .await,
        Some(2.0)
    );
    let primary = destination_status(&t, "primary").await;
    assert_eq!((primary.max_cps, primary.capped_cps), (Some(1.0), 2));
    // A second later the bucket holds a token again.
    settle(Duration::from_millis(1100)).await;
    assert_eq!(call_answered_by(&t, "cps-4").await, "primary");
    assert_eq!(
        destination_status(&t, "primary").await.failures,
        0,
        "a rate cap is not a failure"
    );
}
