//! Calls exported from one core, round-tripped through JSON and restored into a fresh core with
//! the same config: the fresh core carries them on (answers, dialogs, failover).
//!
//! A child of `tests` for its harness; it must not change that harness.

use super::*;

/// Serialises and deserialises `state`, as a peer node would receive it.
fn round_trip(state: &CallState) -> CallState {
    let json = serde_json::to_string(state).expect("serialise");
    serde_json::from_str(&json).expect("deserialise")
}

fn restore(h: &mut Harness, state: CallState) {
    let mut out = Vec::new();
    h.core
        .restore_call(state, h.now, &mut out)
        .expect("restored");
    h.absorb(out);
}

fn dialog(call_id: &str, caller_tag: &str, callee_tag: &str) -> DialogId {
    DialogId {
        call_id: call_id.as_bytes().to_vec(),
        caller_tag: caller_tag.as_bytes().to_vec(),
        callee_tag: callee_tag.as_bytes().to_vec(),
    }
}

/// An in-dialog request from the carrier with `rr` (our Record-Route) as its Route.
pub(super) fn routed_from_carrier(
    method: &str,
    call_id: &str,
    rr: &str,
    to_tag: &str,
    cseq: u32,
) -> Vec<u8> {
    format!(
        "{method} sip:agent@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-{method}{cseq}\r\n\
         Max-Forwards: 70\r\nRoute: {rr}\r\nFrom: \"Carrier\" <sip:+15550000@10.0.0.1>;tag=c1\r\n\
         To: <sip:+15551234@192.0.2.10>;tag={to_tag}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn a_call_exported_mid_setup_completes_on_a_fresh_core() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("rep1"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &response_to(&fwd, 503, "p"));
    let fwd2 = h.last_to(SECONDARY, "INVITE");
    h.advance(Duration::from_millis(200));
    let state = h
        .core
        .export_call(b"rep1", h.now)
        .expect("the call is in setup");
    assert_eq!(round_trip(&state), state, "the state is plain data");

    let mut fresh = Harness::new();
    restore(&mut fresh, round_trip(&state));
    assert!(fresh.sent.is_empty(), "restoring sends nothing");
    assert_eq!(fresh.core.calls_in_setup(), 1);
    fresh.receive(SECONDARY, &response_to(&fwd2, 180, "s"));
    fresh.receive(SECONDARY, &response_to(&fwd2, 200, "s"));
    assert_eq!(
        fresh.lines_to(CARRIER),
        vec!["SIP/2.0 180 Whatever", "SIP/2.0 200 Whatever"]
    );
    let ok = fresh.last_to(CARRIER, "SIP/2.0 200");
    assert_eq!(
        header(&ok, "Via"),
        Some("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-carrier-rep1"),
        "only the carrier's Via is left"
    );
    assert!(header(&ok, "To").unwrap().ends_with(";tag=s"));
    assert_eq!(fresh.core.calls_in_setup(), 0);
    assert_eq!(fresh.core.answered_calls(), 1);

    // The dialog's ACK and BYE follow the edge that answered.
    let rr = header(&ok, "Record-Route").unwrap().to_string();
    assert!(
        rr.contains(&format!("psd={}", super::tests::psd_token("secondary"))),
        "{rr}"
    );
    fresh.receive(CARRIER, &routed_from_carrier("ACK", "rep1", &rr, "s", 1));
    assert_eq!(fresh.count_to(SECONDARY, "ACK"), 1);
    fresh.receive(CARRIER, &routed_from_carrier("BYE", "rep1", &rr, "s", 2));
    let bye = fresh.last_to(SECONDARY, "BYE");
    fresh.receive(SECONDARY, &response_to(&bye, 200, "s"));
    assert_eq!(fresh.count_to(CARRIER, "SIP/2.0 200"), 2);
    assert_eq!(fresh.core.answered_calls(), 0);
    assert_eq!(fresh.count_to(PRIMARY, "INVITE"), 0, "nothing went back");
}

#[test]
fn an_answered_dialog_restored_on_a_fresh_core_relays_its_bye() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("rep2"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &response_to(&fwd, 200, "p"));
    h.receive(CARRIER, &in_dialog_without_route("ACK", "rep2", true, 1));
    assert_eq!(h.count_to(PRIMARY, "ACK"), 1);
    assert_eq!(h.core.export_call(b"rep2", h.now), None, "not in setup");
    let state = h
        .core
        .export_dialog(&dialog("rep2", "c1", "p"), h.now)
        .expect("answered");
    assert_eq!(
        h.core.export_dialog(&dialog("rep2", "p", "c1"), h.now),
        Some(state.clone()),
        "the tags in either order name the dialog"
    );

    let mut fresh = Harness::new();
    restore(&mut fresh, round_trip(&state));
    assert_eq!(fresh.core.answered_calls(), 1);
    // A late copy of the 2xx is the answered call's, not a ghost to tear down.
    fresh.receive(PRIMARY, &response_to(&fwd, 200, "p"));
    assert_eq!(fresh.count_to(PRIMARY, "BYE"), 0);
    // A BYE without a Route of ours follows the restored dialog.
    fresh.receive(CARRIER, &in_dialog_without_route("BYE", "rep2", true, 2));
    assert_eq!(fresh.count_to(CARRIER, "SIP/2.0 481"), 0);
    let bye = fresh.last_to(PRIMARY, "BYE");
    fresh.receive(PRIMARY, &response_to(&bye, 200, "p"));
    assert_eq!(fresh.count_to(CARRIER, "SIP/2.0 200"), 1);
    assert_eq!(fresh.core.answered_calls(), 0, "the call ended");
}

#[test]
fn a_restored_call_whose_destination_stays_silent_cancels_it_before_failing_over() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("rep3"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.advance(Duration::from_secs(1));
    let state = h.core.export_call(b"rep3", h.now).expect("in setup");

    let mut fresh = Harness::new();
    restore(&mut fresh, round_trip(&state));
    fresh.advance(Duration::from_millis(1_999));
    assert_eq!(
        fresh.count_to(SECONDARY, "INVITE"),
        0,
        "the provisional timer counts from the first INVITE, on the old node"
    );
    fresh.advance(Duration::from_millis(1));
    let cancel = fresh
        .position(PRIMARY, "CANCEL")
        .expect("CANCEL to the primary");
    let invite2 = fresh
        .position(SECONDARY, "INVITE")
        .expect("INVITE to the secondary");
    assert!(cancel < invite2, "CANCEL before the next INVITE");
    let cancel_bytes = fresh.last_to(PRIMARY, "CANCEL");
    assert_eq!(header(&cancel_bytes, "Via"), header(&fwd, "Via"));
    let fwd2 = fresh.last_to(SECONDARY, "INVITE");
    fresh.receive(SECONDARY, &response_to(&fwd2, 200, "s"));
    assert_eq!(fresh.count_to(CARRIER, "SIP/2.0 200"), 1);
}

#[test]
fn a_restored_call_fails_over_on_a_503_without_cancel() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("rep4"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &response_to(&fwd, 100, ""));
    let state = h.core.export_call(b"rep4", h.now).expect("in setup");

    let mut fresh = Harness::new();
    restore(&mut fresh, round_trip(&state));
    fresh.receive(PRIMARY, &response_to(&fwd, 503, "p"));
    assert_eq!(
        fresh.count_to(PRIMARY, "ACK"),
        1,
        "hop-by-hop ACK for the 503"
    );
    assert_eq!(fresh.count_to(PRIMARY, "CANCEL"), 0);
    assert_eq!(fresh.count_to(SECONDARY, "INVITE"), 1);
    let fwd2 = fresh.last_to(SECONDARY, "INVITE");
    fresh.receive(SECONDARY, &response_to(&fwd2, 486, "s"));
    assert_eq!(
        fresh.lines_to(CARRIER).last().map(String::as_str),
        Some("SIP/2.0 486 Whatever")
    );
}

#[test]
fn a_state_this_node_cannot_carry_is_refused() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("rep5"));
    let state = h.core.export_call(b"rep5", h.now).expect("in setup");
    let mut out = Vec::new();
    assert_eq!(
        h.core.restore_call(state.clone(), h.now, &mut out),
        Err(RestoreError::Known),
        "the node holds it already"
    );
    let CallState::Setup(mut s) = state else {
        panic!("a call in setup")
    };
    let fresh = Harness::new();
    s.route = Some(9);
    assert_eq!(
        fresh
            .core
            .restore_call(CallState::Setup(s.clone()), fresh.now, &mut out),
        Err(RestoreError::Route(9))
    );
    s.route = Some(0);
    s.request = Bytes::from_static(b"garbage");
    assert_eq!(
        fresh
            .core
            .restore_call(CallState::Setup(s), fresh.now, &mut out),
        Err(RestoreError::Request)
    );
    assert!(out.is_empty());
    assert_eq!(fresh.core.table_sizes(), (0, 0, 0));
}
