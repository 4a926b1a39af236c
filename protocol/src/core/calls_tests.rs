//! The calls an operator lists and ends (`core::calls`), on the fake clock.

use super::*;

/// The carrier's INVITE of `invite`, with a proxy of the carrier's before pointsman (its
/// Record-Route) and a P-Asserted-Identity other than From.
fn invite_via_carrier_proxy(call_id: &str) -> Vec<u8> {
    String::from_utf8(invite(call_id))
        .unwrap()
        .replace(
            "Max-Forwards: 70\r\n",
            "Max-Forwards: 70\r\nRecord-Route: <sip:sbc.carrier.example;lr>\r\n\
             P-Asserted-Identity: <sip:+1-555-000-1111@10.0.0.1>\r\n",
        )
        .into_bytes()
}

/// An in-dialog INFO with CSeq `cseq`: from the carrier (`from_caller`) or from the callee.
fn info(call_id: &str, rr: &str, cseq: u32, from_caller: bool) -> Vec<u8> {
    if from_caller {
        format!("INFO sip:agent@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-info{cseq}\r\nMax-Forwards: 70\r\nRoute: {rr}\r\nFrom: \"Carrier\" <sip:+15550000@10.0.0.1>;tag=c1\r\nTo: <sip:+15551234@192.0.2.10>;tag=p\r\nCall-ID: {call_id}\r\nCSeq: {cseq} INFO\r\nContent-Length: 0\r\n\r\n")
    } else {
        format!("INFO sip:+15550000@10.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-cinfo{cseq}\r\nMax-Forwards: 70\r\nRoute: {rr}\r\nFrom: <sip:+15551234@192.0.2.10>;tag=p\r\nTo: \"Carrier\" <sip:+15550000@10.0.0.1>;tag=c1\r\nCall-ID: {call_id}\r\nCSeq: {cseq} INFO\r\nContent-Length: 0\r\n\r\n")
    }
    .into_bytes()
}

fn end(h: &mut Harness, call_id: &str) -> Vec<CallSummary> {
    h.drive(|core, now, out| core.end_call(call_id, now, out))
}

fn list(h: &mut Harness) -> Vec<CallSummary> {
    let now = h.now;
    h.core.list_calls(now)
}

fn reason_of(msg: &[u8]) -> String {
    header(msg, "Reason").unwrap_or_default().to_string()
}

const REASON: &str = "SIP;cause=480;text=\"ended by operator\"";

#[test]
fn the_list_shows_calls_in_setup_and_answered_calls_with_their_route_destination_and_numbers() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("answered-1"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &response_to(&fwd, 200, "p"));
    h.advance(Duration::from_secs(7));
    h.receive(CARRIER, &invite_via_carrier_proxy("ringing-1"));
    // The primary is silent: after its provisional timer the secondary rings.
    h.advance(Duration::from_secs(4));
    let fwd = h.last_to(SECONDARY, "INVITE");
    h.receive(SECONDARY, &response_to(&fwd, 180, "s"));
    h.advance(Duration::from_secs(2));

    let calls = list(&mut h);
    assert_eq!(calls.len(), 2, "{calls:?}");
    let answered = &calls[0];
    assert_eq!(answered.call_id, "answered-1");
    assert_eq!(answered.state, CallStage::Answered);
    assert_eq!(answered.route.as_deref(), Some("default"));
    assert_eq!(answered.destination.as_deref(), Some("primary"));
    assert_eq!(answered.from.as_deref(), Some("+15550000"));
    assert_eq!(answered.to.as_deref(), Some("+15551234"));
    assert_eq!(answered.age_secs, 13, "since the answer");
    assert_eq!(answered.branch, None);
    let ringing = &calls[1];
    assert_eq!(ringing.call_id, "ringing-1");
    assert_eq!(ringing.state, CallStage::Setup);
    assert_eq!(ringing.route.as_deref(), Some("default"));
    assert_eq!(ringing.destination.as_deref(), Some("secondary"));
    assert_eq!(ringing.branch.as_deref(), Some("ringing"));
    assert_eq!(ringing.tried, ["primary", "secondary"]);
    assert_eq!(
        ringing.from.as_deref(),
        Some("+1-555-000-1111"),
        "P-Asserted-Identity, as routing saw it"
    );
    assert_eq!(ringing.to.as_deref(), Some("+15551234"));
    assert_eq!(ringing.age_secs, 6);

    assert_eq!(
        h.core.find_call("ringing-1", h.now),
        std::slice::from_ref(ringing)
    );
    assert!(h.core.find_call("nope", h.now).is_empty());
    let by_number = CallFilter {
        number: Some("5550001111".into()),
        ..CallFilter::default()
    };
    let hits: Vec<_> = calls.iter().filter(|c| by_number.matches(c)).collect();
    assert_eq!(hits, [ringing], "digits only, a suffix matches");
}

#[test]
fn filters_take_route_destination_number_and_age_together() {
    let call = CallSummary {
        call_id: "x".into(),
        state: CallStage::Answered,
        route: Some("uk".into()),
        destination: Some("primary".into()),
        branch: None,
        tried: Vec::new(),
        from: Some("+44 20 7946 0000".into()),
        to: Some("+15551234".into()),
        age_secs: 30,
        owner: None,
    };
    let f = |route: Option<&str>, dest: Option<&str>, number: Option<&str>, age: Option<u64>| {
        CallFilter {
            route: route.map(Into::into),
            destination: dest.map(Into::into),
            number: number.map(Into::into),
            min_age_secs: age,
        }
        .matches(&call)
    };
    assert!(f(None, None, None, None));
    assert!(f(
        Some("uk"),
        Some("primary"),
        Some("+442079460000"),
        Some(30)
    ));
    assert!(f(None, None, Some("1-555-1234"), None), "the called number");
    assert!(!f(Some("us"), None, None, None));
    assert!(!f(None, Some("secondary"), None, None));
    assert!(!f(None, None, Some("5551235"), None));
    assert!(!f(None, None, Some("+"), None), "no digits match nothing");
    assert!(!f(None, None, None, Some(31)));
}

#[test]
fn ending_a_call_in_setup_cancels_its_branch_and_answers_480_with_the_reason_and_tries_no_other() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("end-setup"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &response_to(&fwd, 180, "p"));
    h.clear_sent();

    let ended = end(&mut h, "end-setup");
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].state, CallStage::Setup);
    let cancel = h.last_to(PRIMARY, "CANCEL");
    assert_eq!(reason_of(&cancel), REASON);
    let final_ = h.last_to(CARRIER, "SIP/2.0 480 Temporarily Unavailable");
    assert_eq!(reason_of(&final_), REASON);
    assert!(
        h.position(PRIMARY, "CANCEL") < h.position(CARRIER, "SIP/2.0 480"),
        "CANCEL first: {:?}",
        h.sent
    );
    // The branch answers the CANCEL; nothing starts, whatever time does.
    h.receive(PRIMARY, &response_to(&cancel, 200, "p"));
    h.receive(PRIMARY, &response_to(&fwd, 487, "p"));
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 480"), 1, "{:?}", h.sent);
    h.advance(Duration::from_secs(200));
    assert_eq!(h.count_to(SECONDARY, "INVITE"), 0);
    assert!(list(&mut h).is_empty());
    assert_eq!(h.core.calls_in_setup(), 0);
    assert!(end(&mut h, "end-setup").is_empty(), "over: not found");
}

#[test]
fn ending_a_call_in_setup_before_its_first_branch_answers_cancels_it_too() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("end-early"));
    h.clear_sent();
    assert_eq!(end(&mut h, "end-early").len(), 1);
    assert_eq!(reason_of(&h.last_to(PRIMARY, "CANCEL")), REASON);
    h.last_to(CARRIER, "SIP/2.0 480");
    h.advance(Duration::from_secs(10));
    assert_eq!(
        h.count_to(SECONDARY, "INVITE"),
        0,
        "no failover after the end"
    );
}

#[test]
fn ending_an_answered_call_sends_bye_to_both_sides_above_every_cseq_relayed() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite_via_carrier_proxy("end-answered"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &response_to(&fwd, 200, "p"));
    let ok = h.last_to(CARRIER, "SIP/2.0 200");
    let rr = header(&ok, "Record-Route").unwrap().to_string();
    assert!(rr.contains(";psn="), "ours first: {rr}");
    // In-dialog requests both ways: the caller's CSeq 7, the callee's 3.
    h.receive(CARRIER, &info("end-answered", &rr, 7, true));
    let fwd_info = h.last_to(PRIMARY, "INFO");
    h.receive(PRIMARY, &response_to(&fwd_info, 200, "p"));
    h.receive(PRIMARY, &info("end-answered", &rr, 3, false));
    let fwd_info = h.last_to(CARRIER, "INFO");
    h.receive(CARRIER, &response_to(&fwd_info, 200, "c1"));
    assert_eq!(h.core.answered_calls(), 1);
    h.clear_sent();

    let ended = end(&mut h, "end-answered");
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].state, CallStage::Answered);
    assert_eq!(h.core.answered_calls(), 0, "the record goes at once");

    let to_callee = h.last_to(PRIMARY, "BYE");
    let text = String::from_utf8_lossy(&to_callee).to_string();
    assert!(
        text.starts_with("BYE sip:agent@127.0.0.1:5070 SIP/2.0\r\n"),
        "the callee's Contact: {text}"
    );
    assert_eq!(header(&to_callee, "CSeq"), Some("8 BYE"), "{text}");
    assert!(
        header(&to_callee, "From").unwrap().ends_with(";tag=c1"),
        "{text}"
    );
    assert!(
        header(&to_callee, "To").unwrap().ends_with(";tag=p"),
        "{text}"
    );
    assert_eq!(header(&to_callee, "Call-ID"), Some("end-answered"));
    assert_eq!(
        header(&to_callee, "Route"),
        None,
        "nothing between pointsman and the callee (the carrier's proxy is upstream): {text}"
    );
    assert_eq!(reason_of(&to_callee), REASON);
    assert!(header(&to_callee, "Via").unwrap().contains(BRANCH_PREFIX));

    let to_caller = h.last_to(CARRIER, "BYE");
    let text = String::from_utf8_lossy(&to_caller).to_string();
    assert!(
        text.starts_with("BYE sip:+15550000@10.0.0.1:5060 SIP/2.0\r\n"),
        "the caller's Contact: {text}"
    );
    assert_eq!(header(&to_caller, "CSeq"), Some("4 BYE"), "{text}");
    assert!(
        header(&to_caller, "From").unwrap().ends_with(";tag=p"),
        "{text}"
    );
    assert_eq!(
        header(&to_caller, "To"),
        Some("\"Carrier\" <sip:+15550000@10.0.0.1>;tag=c1")
    );
    assert_eq!(header(&to_caller, "Call-ID"), Some("end-answered"));
    assert_eq!(
        header(&to_caller, "Route"),
        Some("<sip:sbc.carrier.example;lr>"),
        "the carrier's proxy, from the INVITE's Record-Route: {text}"
    );
    assert_eq!(reason_of(&to_caller), REASON);

    // Both answer 200: absorbed, nothing relayed, nothing retransmitted.
    h.receive(PRIMARY, &response_to(&to_callee, 200, "p"));
    h.receive(CARRIER, &response_to(&to_caller, 200, "c1"));
    h.advance(Duration::from_secs(40));
    assert_eq!(h.count_to(CARRIER, "SIP/2.0"), 0, "{:?}", h.sent);
    assert_eq!(h.count_to(PRIMARY, "SIP/2.0"), 0, "{:?}", h.sent);
    assert_eq!(h.count_to(PRIMARY, "BYE"), 1);
    assert_eq!(h.count_to(CARRIER, "BYE"), 1);
    assert!(list(&mut h).is_empty());
    assert!(end(&mut h, "end-answered").is_empty(), "over: not found");
}

#[test]
fn a_bye_without_in_dialog_requests_goes_one_above_the_invite_to_the_callee_and_1_to_the_caller() {
    let mut h = Harness::new();
    let invite = String::from_utf8(invite("plain"))
        .unwrap()
        .replace("CSeq: 1 INVITE", "CSeq: 101 INVITE");
    h.receive(CARRIER, invite.as_bytes());
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &response_to(&fwd, 200, "p"));
    end(&mut h, "plain");
    assert_eq!(header(&h.last_to(PRIMARY, "BYE"), "CSeq"), Some("102 BYE"));
    assert_eq!(header(&h.last_to(CARRIER, "BYE"), "CSeq"), Some("1 BYE"));
}

#[test]
fn an_unknown_call_is_not_found_and_nothing_is_sent() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("known"));
    h.clear_sent();
    assert!(end(&mut h, "unknown").is_empty());
    assert!(h.sent.is_empty(), "{:?}", h.sent);
    assert_eq!(list(&mut h).len(), 1);
}

#[test]
fn an_answered_calls_record_stays_small() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite_via_carrier_proxy("memory"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &response_to(&fwd, 200, "p"));
    let heap: usize = h
        .core
        .answered
        .iter()
        .filter_map(|a| a.info.as_ref().map(|i| i.heap_bytes()))
        .sum();
    let inline = std::mem::size_of::<Answered>();
    println!("answered record: {inline} bytes inline, {heap} bytes of headers on the heap");
    assert!(heap > 0 && heap < 512, "{heap}");
    assert!(inline <= 304, "{inline}");
}
