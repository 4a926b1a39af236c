//! Deterministic tests of the transaction machines: time is passed in, nothing sleeps.

use super::*;

fn t0() -> Instant {
    Instant::now()
}

fn sends(out: &[TxAction]) -> usize {
    out.iter()
        .filter(|a| matches!(a, TxAction::Send(_)))
        .count()
}

fn armed(out: &[TxAction], timer: TxTimer) -> Option<Instant> {
    out.iter().rev().find_map(|a| match a {
        TxAction::Arm(t, at) if *t == timer => Some(*at),
        _ => None,
    })
}

#[test]
fn invite_client_retransmits_with_doubling_interval_until_provisional() {
    let cfg = TimerConfig::default();
    let now = t0();
    let mut out = Vec::new();
    let mut tx = ClientInvite::start(Bytes::from_static(b"INVITE"), false, cfg, now, &mut out);
    assert_eq!(sends(&out), 1);
    assert_eq!(armed(&out, TxTimer::A), Some(now + cfg.t1));
    assert_eq!(
        armed(&out, TxTimer::B),
        None,
        "unreliable: B rides on the A chain"
    );
    let mut at = now + cfg.t1;
    for expected_gap in [cfg.t1 * 2, cfg.t1 * 4, cfg.t1 * 8] {
        out.clear();
        assert_eq!(tx.on_timer(TxTimer::A, at, &mut out), TxEvent::None);
        assert_eq!(sends(&out), 1);
        assert_eq!(armed(&out, TxTimer::A), Some(at + expected_gap));
        at += expected_gap;
    }
    out.clear();
    assert_eq!(tx.on_response(100, at, &mut out), Delivery::Deliver);
    assert_eq!(tx.state(), ClientInviteState::Proceeding);
    // A and B no longer apply once a provisional arrived.
    assert_eq!(tx.on_timer(TxTimer::A, at, &mut out), TxEvent::None);
    assert_eq!(tx.on_timer(TxTimer::B, at, &mut out), TxEvent::None);
    assert_eq!(sends(&out), 0);
}

#[test]
fn invite_client_over_reliable_transport_never_retransmits() {
    let mut out = Vec::new();
    let _tx = ClientInvite::start(Bytes::new(), true, TimerConfig::default(), t0(), &mut out);
    assert!(armed(&out, TxTimer::A).is_none());
    assert!(armed(&out, TxTimer::B).is_some());
}

#[test]
fn invite_client_times_out_with_timer_b_in_calling() {
    // Reliable: Timer B itself.
    let mut out = Vec::new();
    let now = t0();
    let cfg = TimerConfig::default();
    let mut tx = ClientInvite::start(Bytes::new(), true, cfg, now, &mut out);
    assert_eq!(armed(&out, TxTimer::B), Some(now + cfg.t1x64()));
    assert_eq!(tx.on_timer(TxTimer::B, now, &mut out), TxEvent::Timeout);
    assert_eq!(tx.state(), ClientInviteState::Terminated);
    // Unreliable: the A chain's last interval is cut to end at 64·T1, where it times out.
    out.clear();
    let mut tx = ClientInvite::start(Bytes::from_static(b"INVITE"), false, cfg, now, &mut out);
    let mut sends_seen = 0;
    let mut at = armed(&out, TxTimer::A).unwrap();
    loop {
        out.clear();
        match tx.on_timer(TxTimer::A, at, &mut out) {
            TxEvent::Timeout => break,
            _ => {
                sends_seen += sends(&out);
                at = armed(&out, TxTimer::A).expect("A re-armed until the timeout");
            }
        }
    }
    assert_eq!(
        at,
        now + cfg.t1x64(),
        "times out at Timer B's deadline exactly"
    );
    assert_eq!(
        sends_seen, 6,
        "retransmitted at 0.5, 1.5, 3.5, 7.5, 15.5 and 31.5 s"
    );
    assert_eq!(tx.state(), ClientInviteState::Terminated);
}

#[test]
fn non_invite_client_times_out_at_timer_f_on_its_e_chain() {
    let mut out = Vec::new();
    let now = t0();
    let cfg = TimerConfig::default();
    let mut tx = ClientNonInvite::start(Bytes::from_static(b"BYE"), false, cfg, now, &mut out);
    assert_eq!(armed(&out, TxTimer::F), None);
    let mut at = armed(&out, TxTimer::E).unwrap();
    loop {
        out.clear();
        if tx.on_timer(TxTimer::E, at, &mut out) == TxEvent::Timeout {
            break;
        }
        at = armed(&out, TxTimer::E).expect("E re-armed until the timeout");
    }
    assert_eq!(at, now + cfg.t1x64());
    assert_eq!(tx.state(), ClientNonInviteState::Terminated);
}

#[test]
fn invite_client_acks_non_2xx_and_its_retransmissions_hop_by_hop() {
    let mut out = Vec::new();
    let now = t0();
    let mut tx = ClientInvite::start(Bytes::new(), false, TimerConfig::default(), now, &mut out);
    out.clear();
    assert_eq!(
        tx.on_response(503, now, &mut out),
        Delivery::DeliverNeedsAck
    );
    assert_eq!(armed(&out, TxTimer::D), Some(now + Duration::from_secs(32)));
    tx.send_ack(Bytes::from_static(b"ACK"), &mut out);
    out.clear();
    assert_eq!(tx.on_response(503, now, &mut out), Delivery::Absorb);
    assert_eq!(out, vec![TxAction::Send(Bytes::from_static(b"ACK"))]);
    assert_eq!(tx.on_timer(TxTimer::D, now, &mut out), TxEvent::Terminated);
}

#[test]
fn invite_client_passes_every_2xx_up_while_accepted() {
    let mut out = Vec::new();
    let now = t0();
    let cfg = TimerConfig::default();
    let mut tx = ClientInvite::start(Bytes::new(), false, cfg, now, &mut out);
    assert_eq!(tx.on_response(200, now, &mut out), Delivery::Deliver);
    assert_eq!(armed(&out, TxTimer::M), Some(now + cfg.t1 * 64));
    assert_eq!(tx.on_response(200, now, &mut out), Delivery::Deliver);
    assert_eq!(tx.on_response(486, now, &mut out), Delivery::Absorb);
    assert_eq!(tx.on_timer(TxTimer::M, now, &mut out), TxEvent::Terminated);
    assert_eq!(tx.on_response(200, now, &mut out), Delivery::Absorb);
}

#[test]
fn non_invite_client_caps_retransmit_interval_at_t2() {
    let cfg = TimerConfig::default();
    let now = t0();
    let mut out = Vec::new();
    let mut tx = ClientNonInvite::start(Bytes::from_static(b"BYE"), false, cfg, now, &mut out);
    let mut at = now + cfg.t1;
    let mut gaps = Vec::new();
    for _ in 0..6 {
        out.clear();
        tx.on_timer(TxTimer::E, at, &mut out);
        let next = armed(&out, TxTimer::E).unwrap();
        gaps.push(next - at);
        at = next;
    }
    assert_eq!(
        gaps,
        vec![cfg.t1 * 2, cfg.t1 * 4, cfg.t2, cfg.t2, cfg.t2, cfg.t2]
    );
    // In Proceeding the interval is T2 at once.
    tx.on_response(100, at, &mut out);
    out.clear();
    tx.on_timer(TxTimer::E, at, &mut out);
    assert_eq!(armed(&out, TxTimer::E), Some(at + cfg.t2));
    assert_eq!(tx.on_timer(TxTimer::F, at, &mut out), TxEvent::Timeout);
}

#[test]
fn non_invite_client_absorbs_final_retransmissions_until_timer_k() {
    let cfg = TimerConfig::default();
    let now = t0();
    let mut out = Vec::new();
    let mut tx = ClientNonInvite::start(Bytes::new(), false, cfg, now, &mut out);
    assert_eq!(tx.on_response(200, now, &mut out), Delivery::Deliver);
    assert_eq!(armed(&out, TxTimer::K), Some(now + cfg.t4));
    assert_eq!(tx.on_response(200, now, &mut out), Delivery::Absorb);
    assert_eq!(tx.on_timer(TxTimer::K, now, &mut out), TxEvent::Terminated);
}

#[test]
fn invite_server_retransmits_final_non_2xx_until_ack_then_absorbs() {
    let cfg = TimerConfig::default();
    let now = t0();
    let mut out = Vec::new();
    let mut tx = ServerInvite::new(false, cfg);
    assert!(tx.respond(100, Bytes::from_static(b"100"), now, &mut out));
    out.clear();
    tx.on_retransmission(&mut out);
    assert_eq!(out, vec![TxAction::Send(Bytes::from_static(b"100"))]);
    out.clear();
    assert!(tx.respond(486, Bytes::from_static(b"486"), now, &mut out));
    assert_eq!(armed(&out, TxTimer::G), Some(now + cfg.t1));
    assert_eq!(armed(&out, TxTimer::H), Some(now + cfg.t1 * 64));
    // No provisional after a final.
    assert!(!tx.respond(180, Bytes::new(), now, &mut out));
    out.clear();
    tx.on_timer(TxTimer::G, now + cfg.t1, &mut out);
    assert_eq!(sends(&out), 1);
    assert_eq!(armed(&out, TxTimer::G), Some(now + cfg.t1 + cfg.t1 * 2));
    assert!(tx.on_ack(now, &mut out));
    assert_eq!(tx.state(), ServerInviteState::Confirmed);
    out.clear();
    tx.on_timer(TxTimer::G, now, &mut out);
    assert_eq!(sends(&out), 0, "no retransmission after ACK");
    assert_eq!(tx.on_timer(TxTimer::I, now, &mut out), TxEvent::Terminated);
}

#[test]
fn invite_server_without_ack_times_out_with_timer_h() {
    let mut out = Vec::new();
    let now = t0();
    let mut tx = ServerInvite::new(false, TimerConfig::default());
    tx.respond(500, Bytes::new(), now, &mut out);
    assert_eq!(tx.on_timer(TxTimer::H, now, &mut out), TxEvent::Timeout);
}

#[test]
fn invite_server_relays_2xx_retransmissions_while_accepted() {
    let mut out = Vec::new();
    let now = t0();
    let mut tx = ServerInvite::new(false, TimerConfig::default());
    assert!(tx.respond(200, Bytes::from_static(b"200"), now, &mut out));
    assert!(tx.respond(200, Bytes::from_static(b"200"), now, &mut out));
    assert!(!tx.respond(486, Bytes::new(), now, &mut out));
    out.clear();
    tx.on_retransmission(&mut out);
    assert!(
        out.is_empty(),
        "INVITE retransmissions are absorbed after 2xx"
    );
    assert_eq!(tx.on_timer(TxTimer::L, now, &mut out), TxEvent::Terminated);
}

#[test]
fn non_invite_server_resends_final_for_retransmitted_request_until_timer_j() {
    let cfg = TimerConfig::default();
    let now = t0();
    let mut out = Vec::new();
    let mut tx = ServerNonInvite::new(false, cfg);
    tx.on_retransmission(&mut out);
    assert!(out.is_empty(), "nothing to resend while Trying");
    tx.respond(200, Bytes::from_static(b"200"), now, &mut out);
    assert_eq!(armed(&out, TxTimer::J), Some(now + cfg.t1 * 64));
    out.clear();
    tx.on_retransmission(&mut out);
    assert_eq!(out, vec![TxAction::Send(Bytes::from_static(b"200"))]);
    assert_eq!(tx.on_timer(TxTimer::J, now, &mut out), TxEvent::Terminated);
}

#[test]
fn configurable_t1_scales_every_derived_timer() {
    let cfg = TimerConfig {
        t1: Duration::from_millis(100),
        t2: Duration::from_millis(800),
        t4: Duration::from_secs(1),
    };
    let now = t0();
    let mut out = Vec::new();
    ClientInvite::start(Bytes::new(), true, cfg, now, &mut out);
    assert_eq!(
        armed(&out, TxTimer::B),
        Some(now + Duration::from_millis(6400))
    );
    out.clear();
    ClientNonInvite::start(Bytes::new(), true, cfg, now, &mut out);
    assert_eq!(
        armed(&out, TxTimer::F),
        Some(now + Duration::from_millis(6400))
    );
}

#[test]
fn transactions_drop_what_only_retransmissions_needed_once_final() {
    let cfg = TimerConfig::default();
    let now = t0();
    let mut out = Vec::new();
    // An accepted INVITE is never retransmitted or cancelled again.
    let mut accepted =
        ClientInvite::start(Bytes::from_static(b"INVITE a"), false, cfg, now, &mut out);
    accepted.on_response(200, now, &mut out);
    assert!(accepted.request().is_empty());
    // A rejected one keeps only its ACK, for retransmissions of the final.
    let mut rejected =
        ClientInvite::start(Bytes::from_static(b"INVITE b"), false, cfg, now, &mut out);
    assert_eq!(
        rejected.on_response(486, now, &mut out),
        Delivery::DeliverNeedsAck
    );
    assert_eq!(
        rejected.request().as_ref(),
        b"INVITE b",
        "the ACK's template"
    );
    rejected.send_ack(Bytes::from_static(b"ACK b"), &mut out);
    assert!(rejected.request().is_empty());
    out.clear();
    rejected.on_response(486, now, &mut out);
    assert_eq!(out, vec![TxAction::Send(Bytes::from_static(b"ACK b"))]);
    // The server side forgets its final response once the ACK came.
    let mut server = ServerInvite::new(false, cfg);
    server.respond(486, Bytes::from_static(b"SIP/2.0 486"), now, &mut out);
    assert!(server.on_ack(now, &mut out));
    out.clear();
    server.on_retransmission(&mut out);
    assert!(out.is_empty());
    assert!(server.last_response.is_none());
}

/// A snapshot comes from another node: durations past anything RFC 3261 allows are bounded on
/// restore (Timer B within 64·T1, the retransmission interval within T1..64·T1), never trusted,
/// and never overflow the clock.
#[test]
fn a_restored_client_invite_bounds_the_durations_of_its_snapshot() {
    let cfg = TimerConfig::default();
    let now = t0();
    let mut out = Vec::new();
    let tx = ClientInvite::start(Bytes::from_static(b"INVITE"), false, cfg, now, &mut out);
    let mut snap = tx.snapshot(now, true);
    snap.timeout_in = Duration::MAX;
    snap.retransmit_interval = Duration::MAX;
    let mut out = Vec::new();
    let restored = ClientInvite::restore(snap, cfg, now, &mut out);
    assert_eq!(restored.state(), ClientInviteState::Calling);
    let a = armed(&out, TxTimer::A).expect("Timer A armed");
    assert!(a <= now + cfg.t1x64(), "{out:?}");

    let tcp = ClientInvite::start(
        Bytes::from_static(b"INVITE"),
        true,
        cfg,
        now,
        &mut Vec::new(),
    );
    let mut snap = tcp.snapshot(now, true);
    snap.timeout_in = Duration::MAX;
    let mut out = Vec::new();
    ClientInvite::restore(snap, cfg, now, &mut out);
    let b = armed(&out, TxTimer::B).expect("Timer B armed");
    assert_eq!(b, now + cfg.t1x64());
}
