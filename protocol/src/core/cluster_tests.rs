//! Two cores as the two nodes of a pair, the link between them played by the test: a message
//! that lands on the node that does not own its call goes to its owner, the owner's calls are
//! replicated to the other node, and that node adopts a call when its owner is down and a
//! message for the call arrives.
//!
//! A child of `tests` for its harness; it must not change that harness.

use super::replication_tests::routed_from_carrier;
use super::*;

/// Node 1 (`a`) and node 2 (`b`), each with the other as its peer, both up.
struct Pair {
    a: Harness,
    b: Harness,
}

impl Pair {
    fn new() -> Pair {
        let a = Harness::with_config(|c| {
            c.node_id = 1;
            c.peers = vec![2];
        });
        let b = Harness::with_config(|c| {
            c.node_id = 2;
            c.peers = vec![1];
        });
        a.core.set_peer_up(2, true, a.now);
        b.core.set_peer_up(1, true, b.now);
        assert!(a.core.mark_synced(a.now) && b.core.mark_synced(b.now));
        Pair { a, b }
    }

    /// Delivers what each node replicated to the other.
    fn sync(&mut self) {
        fn deliver(from: &mut Harness, to: &Harness, owner: u16) {
            for (call_id, state, _, _) in from.replicated.drain(..) {
                let state = state.map(|s| round_trip(&s));
                assert!(to.core.store_replica(owner, &call_id, state, to.now));
            }
        }
        deliver(&mut self.a, &self.b, 1);
        deliver(&mut self.b, &self.a, 2);
    }

    /// Delivers what `b` handed to node 1 (`a`), as the link would.
    fn hand_b_to_a(&mut self) -> usize {
        hand_over(&mut self.b, &mut self.a, 1)
    }

    /// A call from the carrier at node 1: the INVITE it sent the primary.
    fn call_at_a(&mut self, call_id: &str) -> Bytes {
        self.a.receive(CARRIER, &invite(call_id));
        self.a.last_to(PRIMARY, "INVITE")
    }

    /// A call answered at node 1 (by the primary, tag `p`) and replicated; its Record-Route.
    fn answered_at_a(&mut self, call_id: &str) -> String {
        let fwd = self.call_at_a(call_id);
        self.a.receive(PRIMARY, &response_to(&fwd, 200, "p"));
        let ok = self.a.last_to(CARRIER, "SIP/2.0 200");
        self.sync();
        header(&ok, "Record-Route").unwrap().to_string()
    }

    /// Node 1 dies: node 2's link says so.
    fn a_dies(&mut self) {
        self.b.core.set_peer_up(1, false, self.b.now);
    }

    /// Node 1 restarts: a new run that holds nothing and has not got node 2's calls yet; the
    /// link between them is up again.
    fn a_restarts(&mut self) {
        self.a = Harness::with_config(|c| {
            c.node_id = 1;
            c.peers = vec![2];
        });
        self.a.core.set_peer_up(2, true, self.a.now);
    }
}

/// Delivers what `from` handed to node `to_id` (`to`), as the link would; how many.
fn hand_over(from: &mut Harness, to: &mut Harness, to_id: u16) -> usize {
    let handed: Vec<_> = from.to_nodes.drain(..).collect();
    for (node, bytes, from, listener) in &handed {
        assert_eq!(*node, to_id);
        let mut inb = Inbound::datagram(bytes, *from);
        inb.listener = *listener;
        inb.relayed = true;
        to.h.receive_inbound(inb);
    }
    handed.len()
}

/// Serialises and deserialises a replica, as the link carries it.
fn round_trip(state: &CallState) -> CallState {
    let json = serde_json::to_string(state).expect("serialise");
    serde_json::from_str(&json).expect("deserialise")
}

fn dialog_of(call_id: &str) -> DialogId {
    DialogId {
        call_id: call_id.as_bytes().to_vec(),
        caller_tag: b"c1".to_vec(),
        callee_tag: b"p".to_vec(),
    }
}

fn adopted(h: &Harness, state: &str) -> f64 {
    h.metric(&format!(
        "pointsman_cluster_adopted_total{{state=\"{state}\"}}"
    ))
}

#[test]
fn a_response_that_lands_on_the_other_node_is_handed_to_its_owner_and_relayed_there() {
    let mut p = Pair::new();
    let fwd = p.call_at_a("cl1");
    assert!(
        header(&fwd, "Via").unwrap().contains("branch=z9hG4bK-ps1-"),
        "the branch names node 1"
    );
    p.b.receive(PRIMARY, &response_to(&fwd, 180, "p"));
    assert!(p.b.sent.is_empty(), "node 2 answers nothing itself");
    assert_eq!(p.hand_b_to_a(), 1);
    assert_eq!(p.a.count_to(CARRIER, "SIP/2.0 180"), 1);
    assert_eq!(p.b.core.calls_in_setup(), 0);
}

#[test]
fn a_call_in_setup_is_adopted_from_its_replica_when_its_owner_is_down_and_answered_there() {
    let mut p = Pair::new();
    let fwd = p.call_at_a("cl2");
    p.a.receive(PRIMARY, &response_to(&fwd, 180, "p"));
    p.sync();
    assert_eq!(p.b.core.replicas(), 1);
    p.a_dies();

    p.b.receive(PRIMARY, &response_to(&fwd, 200, "p"));
    assert!(
        p.b.to_nodes.is_empty(),
        "its owner is down: not handed over"
    );
    assert_eq!(p.b.lines_to(CARRIER), vec!["SIP/2.0 200 Whatever"]);
    assert_eq!(p.b.count_to(PRIMARY, "INVITE"), 0, "no second call");
    assert_eq!(p.b.count_to(PRIMARY, "BYE"), 0, "not taken for a ghost");
    assert_eq!(adopted(&p.b, "setup"), 1.0);
    assert_eq!(p.b.core.replicas(), 0);

    // The dialog goes on at node 2: its ACK and BYE, routed by node 1's Record-Route.
    let ok = p.b.last_to(CARRIER, "SIP/2.0 200");
    let rr = header(&ok, "Record-Route").unwrap().to_string();
    assert!(rr.contains("psn=1"), "{rr}");
    p.b.receive(CARRIER, &routed_from_carrier("ACK", "cl2", &rr, "p", 1));
    assert_eq!(p.b.count_to(PRIMARY, "ACK"), 1);
    p.b.receive(CARRIER, &routed_from_carrier("BYE", "cl2", &rr, "p", 2));
    let bye = p.b.last_to(PRIMARY, "BYE");
    p.b.receive(PRIMARY, &response_to(&bye, 200, "p"));
    assert_eq!(p.b.count_to(CARRIER, "SIP/2.0 200"), 2);
}

#[test]
fn a_cancel_for_a_call_of_a_dead_node_cancels_its_branch_with_the_branch_id_it_had() {
    let mut p = Pair::new();
    let fwd = p.call_at_a("cl3");
    p.a.receive(PRIMARY, &response_to(&fwd, 100, ""));
    p.sync();
    p.a_dies();

    let cancel = String::from_utf8(invite("cl3"))
        .unwrap()
        .replace("INVITE sip:", "CANCEL sip:")
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL")
        .replace(
            "Content-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n",
            "Content-Length: 0\r\n\r\n",
        );
    p.b.receive(CARRIER, cancel.as_bytes());
    assert_eq!(p.b.count_to(CARRIER, "SIP/2.0 200"), 1, "200 to the CANCEL");
    let out = p.b.last_to(PRIMARY, "CANCEL");
    assert_eq!(
        header(&out, "Via"),
        header(&fwd, "Via"),
        "the branch's own id"
    );
    p.b.receive(PRIMARY, &response_to(&fwd, 487, "p"));
    assert_eq!(p.b.count_to(CARRIER, "SIP/2.0 487"), 1);
    assert_eq!(
        p.b.count_to(SECONDARY, "INVITE"),
        0,
        "no failover after a CANCEL"
    );
}

#[test]
fn failover_goes_on_at_the_node_that_adopted_the_call() {
    let mut p = Pair::new();
    let fwd = p.call_at_a("cl4");
    p.sync();
    p.a_dies();
    p.b.receive(PRIMARY, &response_to(&fwd, 503, "p"));
    assert_eq!(
        p.b.count_to(PRIMARY, "ACK"),
        1,
        "hop-by-hop ACK for the 503"
    );
    assert_eq!(p.b.count_to(SECONDARY, "INVITE"), 1, "on to the secondary");
    let fwd2 = p.b.last_to(SECONDARY, "INVITE");
    assert!(header(&fwd2, "Via")
        .unwrap()
        .contains("branch=z9hG4bK-ps2-"));
    p.b.receive(SECONDARY, &response_to(&fwd2, 200, "s"));
    assert_eq!(p.b.count_to(CARRIER, "SIP/2.0 200"), 1);
}

#[test]
fn an_invite_retransmission_on_the_other_node_goes_to_its_owner_and_is_no_second_call() {
    let mut p = Pair::new();
    p.a.receive(CARRIER, &invite("cl5"));
    p.a.receive(
        PRIMARY,
        &response_to(&p.a.last_to(PRIMARY, "INVITE"), 100, ""),
    );
    p.sync();
    p.b.receive(CARRIER, &invite("cl5"));
    assert_eq!(p.b.count_to(PRIMARY, "INVITE"), 0);
    assert_eq!(p.b.to_nodes.len(), 1);
    p.hand_b_to_a();
    assert_eq!(p.a.count_to(PRIMARY, "INVITE"), 1, "absorbed at its owner");
    assert_eq!(p.b.core.calls_in_setup(), 0);
}

#[test]
fn an_in_dialog_request_goes_to_the_node_in_its_route_while_that_node_is_up() {
    let mut p = Pair::new();
    let rr = p.answered_at_a("cl6");
    p.b.receive(CARRIER, &routed_from_carrier("BYE", "cl6", &rr, "p", 2));
    assert!(p.b.sent.is_empty());
    p.hand_b_to_a();
    assert_eq!(p.a.count_to(PRIMARY, "BYE"), 1);
}

#[test]
fn an_answered_call_of_a_dead_node_is_adopted_and_its_bye_relayed() {
    let mut p = Pair::new();
    let rr = p.answered_at_a("cl7");
    assert_eq!(
        p.b.core.replicas(),
        1,
        "the answered dialog replaced the call in setup"
    );
    assert!(matches!(
        p.a.core.export_dialog(&dialog_of("cl7"), p.a.now),
        Some(CallState::Answered(_))
    ));
    p.a_dies();
    p.b.receive(CARRIER, &routed_from_carrier("BYE", "cl7", &rr, "p", 2));
    let bye = p.b.last_to(PRIMARY, "BYE");
    p.b.receive(PRIMARY, &response_to(&bye, 200, "p"));
    assert_eq!(p.b.count_to(CARRIER, "SIP/2.0 200"), 1);
    assert_eq!(adopted(&p.b, "answered"), 1.0);
    assert_eq!(p.b.core.answered_calls(), 0, "ended at node 2");
}

#[test]
fn a_message_handed_over_is_never_handed_on_again() {
    let mut p = Pair::new();
    let fwd = p.call_at_a("cl8");
    // Node 2 gets node 1's response over the link (as if node 1 had handed it): it is
    // handled at node 2, which holds nothing of it, and not sent back.
    let resp = response_to(&fwd, 180, "p");
    let mut inb = Inbound::datagram(&resp, addr(PRIMARY));
    inb.relayed = true;
    p.b.h.receive_inbound(inb);
    assert!(p.b.to_nodes.is_empty());
    assert_eq!(p.b.dropped("stray"), 1.0);
}

#[test]
fn a_call_is_replicated_while_in_setup_and_forgotten_once_when_it_ends() {
    let mut p = Pair::new();
    let fwd = p.call_at_a("cl9");
    p.a.receive(PRIMARY, &response_to(&fwd, 180, "p"));
    p.a.receive(PRIMARY, &response_to(&fwd, 486, "p"));
    p.a.advance(Duration::from_secs(40));
    let states: Vec<_> =
        p.a.replicated
            .iter()
            .map(|(id, s, _, _)| (id.clone(), s.is_some()))
            .collect();
    assert!(states.iter().all(|(id, _)| &id[..] == b"cl9"));
    assert!(states.len() >= 3, "{states:?}");
    assert_eq!(
        states.iter().filter(|(_, s)| !s).count(),
        1,
        "forgotten once"
    );
    assert_eq!(
        states.last().map(|(_, s)| *s),
        Some(false),
        "forgotten last"
    );
    p.sync();
    assert_eq!(p.b.core.replicas(), 0);
}

#[test]
fn a_later_state_leaves_out_the_invites_the_peer_has_and_the_peer_completes_it_from_its_replica() {
    let mut p = Pair::new();
    let fwd = p.call_at_a("cl20");
    p.a.receive(PRIMARY, &response_to(&fwd, 180, "p"));
    let setups: Vec<SetupState> =
        p.a.replicated
            .iter()
            .filter_map(|(_, s, _, _)| match s.as_deref() {
                Some(CallState::Setup(s)) => Some((**s).clone()),
                _ => None,
            })
            .collect();
    let [first, later] = &setups[..] else {
        panic!("the new branch and the 180: {setups:?}")
    };
    assert!(!first.request.is_empty() && !first.branches[0].tx.request.is_empty());
    assert!(
        later.request.is_empty() && later.branches[0].tx.request.is_empty(),
        "the peer has both INVITEs"
    );
    assert!(later.server.last_response.is_some(), "what changed is sent");

    // Alone, the later state cannot be carried on: it is refused, not restored half.
    let fresh = Harness::new();
    assert_eq!(
        fresh.core.restore_call(
            CallState::Setup(Box::new(later.clone())),
            fresh.now,
            &mut Vec::new()
        ),
        Err(RestoreError::Request)
    );

    // After the first, it is completed from it: the peer carries the call on.
    p.sync();
    p.a_dies();
    p.b.receive(PRIMARY, &response_to(&fwd, 200, "p"));
    assert_eq!(
        p.b.lines_to(CARRIER),
        vec!["SIP/2.0 200 Whatever"],
        "the 180 went from node 1; the 200 from node 2"
    );
    assert_eq!(p.b.count_to(PRIMARY, "INVITE"), 0, "no second call");
    assert_eq!(adopted(&p.b, "setup"), 1.0);
}

#[test]
fn a_100_is_not_replicated_and_the_call_is_carried_on_without_it() {
    let mut p = Pair::new();
    let fwd = p.call_at_a("cl21");
    p.sync();
    p.a.receive(PRIMARY, &response_to(&fwd, 100, ""));
    assert!(p.a.replicated.is_empty(), "{:?}", p.a.replicated);
    p.a_dies();
    // The survivor takes the branch as still calling: the 180 finds it, no second INVITE.
    p.b.receive(PRIMARY, &response_to(&fwd, 180, "p"));
    assert_eq!(p.b.lines_to(CARRIER), vec!["SIP/2.0 180 Whatever"]);
    assert_eq!(p.b.count_to(PRIMARY, "INVITE"), 0, "no second call");
    assert_eq!(adopted(&p.b, "setup"), 1.0);
}

#[test]
fn a_node_alone_neither_hands_over_nor_replicates() {
    let mut h = Harness::new();
    h.receive(CARRIER, &invite("cl10"));
    let fwd = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &response_to(&fwd, 200, "p"));
    assert!(h.to_nodes.is_empty());
    assert!(h.replicated.is_empty());
    assert!(!h.core.store_replica(2, b"x", None, h.now));
}

#[test]
fn a_new_branch_and_an_answer_are_confirmed_before_what_they_cause_is_sent() {
    let mut p = Pair::new();
    p.a.receive(CARRIER, &invite("cl11"));
    let (_, state, confirm, sends_before) = p.a.replicated[0].clone();
    assert!(confirm, "the first branch is confirmed");
    assert_eq!(
        sends_before, 0,
        "before the INVITE to the cloud and the 100"
    );
    let CallState::Setup(s) = *state.unwrap() else {
        panic!("in setup")
    };
    let fwd = p.a.last_to(PRIMARY, "INVITE");
    assert!(header(&fwd, "Via").unwrap().contains(&s.branches[0].branch));

    p.a.receive(PRIMARY, &response_to(&fwd, 180, "p"));
    assert!(
        !p.a.replicated[1].2,
        "a 180 changes no branch: not confirmed"
    );
    let sent = p.a.sent.len();
    p.a.receive(PRIMARY, &response_to(&fwd, 503, "p"));
    let (_, _, confirm, before) = p.a.replicated[2].clone();
    assert!(
        !confirm,
        "a 503 after a 180 ends the call (no failover): nothing to confirm"
    );
    assert!(before >= sent);

    let fwd = p.call_at_a("cl12");
    let sent = p.a.sent.len();
    p.a.receive(PRIMARY, &response_to(&fwd, 503, "p"));
    let (_, _, confirm, before) = p.a.replicated.last().unwrap().clone();
    assert!(confirm, "the failover's new branch is confirmed");
    assert_eq!(
        before, sent,
        "before the ACK and the INVITE to the secondary"
    );

    let fwd = p.call_at_a("cl13");
    let sent = p.a.sent.len();
    p.a.receive(PRIMARY, &response_to(&fwd, 200, "p"));
    let (_, state, confirm, before) = p.a.replicated.last().unwrap().clone();
    assert!(matches!(state.as_deref(), Some(CallState::Answered(_))));
    assert!(confirm, "the answer is confirmed");
    assert_eq!(before, sent, "before the 2xx goes to the carrier");
}

#[test]
fn after_a_restart_of_its_owner_a_replica_its_snapshot_left_out_is_adopted_and_replicated_back() {
    let mut p = Pair::new();
    let fwd = p.call_at_a("cl14");
    p.sync();
    // Node 1 restarts: its new run holds nothing, so its snapshot refreshes nothing.
    p.b.core.mark_replicas_stale(1);
    let mut out = Vec::new();
    assert_eq!(
        p.b.core.settle_stale_replicas(1, true, p.b.now, &mut out),
        1
    );
    p.b.absorb(out);
    assert_eq!(adopted(&p.b, "setup"), 1.0);
    assert_eq!(p.b.core.calls_in_setup(), 1);
    let (id, state, _, _) = p.b.replicated.last().cloned().expect("replicated back");
    assert_eq!(&id[..], b"cl14");
    assert!(matches!(state.as_deref(), Some(CallState::Setup(_))));
    // The new run of node 1 learns that node 2 owns the call now: the cloud's answer that lands
    // on node 1 goes to node 2, though its branch names node 1.
    let mut fresh = Pair::new();
    std::mem::swap(&mut fresh.b, &mut p.b);
    fresh.sync();
    fresh.a.receive(PRIMARY, &response_to(&fwd, 200, "p"));
    assert!(fresh.a.sent.is_empty(), "no ghost teardown at node 1");
    assert_eq!(fresh.a.to_nodes.len(), 1);
    assert_eq!(fresh.a.to_nodes[0].0, 2);
}

#[test]
fn after_the_link_only_dropped_a_replica_its_snapshot_left_out_ended_meanwhile_and_is_dropped() {
    let mut p = Pair::new();
    p.a.receive(CARRIER, &invite("cl15"));
    p.sync();
    p.b.core.mark_replicas_stale(1);
    let mut out = Vec::new();
    assert_eq!(
        p.b.core.settle_stale_replicas(1, false, p.b.now, &mut out),
        0
    );
    assert!(out.is_empty());
    assert_eq!(p.b.core.replicas(), 0);
    assert_eq!(p.b.core.calls_in_setup(), 0);
}

#[test]
fn a_snapshot_holds_every_call_in_setup_and_every_answered_dialog() {
    let mut p = Pair::new();
    p.a.receive(CARRIER, &invite("cl16"));
    let fwd = p.call_at_a("cl17");
    p.a.receive(PRIMARY, &response_to(&fwd, 200, "p"));
    let mut snapshot = p.a.core.snapshot(p.a.now);
    snapshot.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(snapshot.len(), 2);
    assert!(matches!(snapshot[0], (ref id, CallState::Setup(_)) if id == b"cl16"));
    assert!(matches!(snapshot[1], (ref id, CallState::Answered(_)) if id == b"cl17"));
}

#[test]
fn a_message_on_a_connection_is_handled_where_it_arrived_never_handed_over() {
    // TCP and TLS reach a node's own unicast address, and a connection ends on one node: what
    // comes over it is that node's to handle, whoever owns the call.
    let mut p = Pair::new();
    let fwd = p.call_at_a("cl18");
    p.sync();
    let resp = response_to(&fwd, 180, "p");
    let mut inb = Inbound::datagram(&resp, addr(PRIMARY));
    inb.framing = crate::wire::Framing::Stream;
    p.b.h.receive_inbound(inb);
    assert!(p.b.to_nodes.is_empty(), "not handed to node 1");
    assert_eq!(p.b.core.replicas(), 1, "nor adopted: node 1 is up");
}

#[test]
fn a_call_adopted_when_a_message_came_is_in_the_adopters_snapshot() {
    let mut p = Pair::new();
    let rr = p.answered_at_a("cl19");
    p.a_dies();
    p.b.receive(CARRIER, &routed_from_carrier("ACK", "cl19", &rr, "p", 1));
    assert_eq!(adopted(&p.b, "answered"), 1.0);
    let snapshot = p.b.core.snapshot(p.b.now);
    assert!(
        matches!(&snapshot[..], [(id, CallState::Answered(_))] if id == b"cl19"),
        "a restarted node 1 learns that node 2 holds it"
    );
}

#[test]
fn a_restarted_node_that_is_syncing_hands_what_it_does_not_hold_to_its_peer_which_adopts_it() {
    let mut p = Pair::new();
    let fwd = p.call_at_a("cl20");
    p.sync();
    p.a_restarts();
    assert!(!p.a.core.is_synced());
    // The cloud's answer names node 1 and lands on its new run before node 2's snapshot: it is
    // not a ghost of node 1 but a call node 2 holds, so it goes there.
    p.a.receive(PRIMARY, &response_to(&fwd, 200, "p"));
    assert!(p.a.sent.is_empty(), "no ghost teardown at node 1");
    assert_eq!(hand_over(&mut p.a, &mut p.b, 2), 1);
    assert_eq!(p.b.lines_to(CARRIER), vec!["SIP/2.0 200 Whatever"]);
    assert_eq!(p.b.count_to(PRIMARY, "BYE"), 0);
    assert_eq!(adopted(&p.b, "setup"), 1.0);
}

#[test]
fn a_syncing_node_with_no_peer_up_drops_what_it_does_not_hold_until_it_is_synced() {
    let mut p = Pair::new();
    let fwd = p.call_at_a("cl21");
    p.a_restarts();
    p.a.core.set_peer_up(2, false, p.a.now);
    let answer = response_to(&fwd, 200, "p");
    p.a.receive(PRIMARY, &answer);
    assert!(p.a.sent.is_empty() && p.a.to_nodes.is_empty());
    assert_eq!(p.a.dropped("syncing"), 1.0);
    // New calls are taken while syncing.
    p.a.receive(CARRIER, &invite("cl22"));
    assert_eq!(p.a.count_to(PRIMARY, "INVITE"), 1);
    // No peer came within the bound: the node serves alone, and the 2xx's retransmission is a
    // ghost's (its call died with node 1's old run), torn down.
    assert!(p.a.core.mark_synced(p.a.now));
    assert!(!p.a.core.mark_synced(p.a.now));
    p.a.receive(PRIMARY, &answer);
    assert_eq!(p.a.count_to(PRIMARY, "BYE"), 1);
    assert_eq!(p.a.dropped("syncing"), 1.0);
}

#[test]
fn a_node_alone_is_always_synced() {
    let h = Harness::new();
    assert!(h.core.is_synced());
    assert!(!h.core.mark_synced(h.now));
}

#[test]
fn the_takeover_is_timed_from_the_peers_death_to_the_first_of_its_calls_taken_over() {
    let mut p = Pair::new();
    let answers: Vec<Vec<u8>> = ["cl23", "cl24"]
        .iter()
        .map(|id| response_to(&p.call_at_a(id), 200, "p"))
        .collect();
    p.sync();
    p.a_dies();
    p.b.now += Duration::from_millis(300);
    p.b.receive(PRIMARY, &answers[0]);
    p.b.now += Duration::from_millis(200);
    p.b.receive(PRIMARY, &answers[1]);
    assert_eq!(adopted(&p.b, "setup"), 2.0);
    let takeover =
        |h: &Harness, what: &str| h.metric(&format!("pointsman_cluster_takeover_seconds_{what}"));
    assert_eq!(takeover(&p.b, "count"), 1.0, "one takeover per death");
    let took = takeover(&p.b, "sum");
    assert!((took - 0.3).abs() < 1e-9, "{took}");
    // Up again, then dead again: the next call taken over is the next takeover.
    let again = p.b.now;
    p.b.core.set_peer_up(1, true, again);
    p.b.core.set_peer_up(1, false, again);
    p.b.core
        .set_peer_up(1, false, again + Duration::from_secs(5));
    let answer = response_to(&p.call_at_a("cl25"), 200, "p");
    p.sync();
    p.b.now = again + Duration::from_millis(40);
    p.b.receive(PRIMARY, &answer);
    assert_eq!(takeover(&p.b, "count"), 2.0);
    let took = takeover(&p.b, "sum") - 0.3;
    assert!(
        (took - 0.04).abs() < 1e-9,
        "timed from the first report of the death: {took}"
    );
}

#[test]
fn just_after_its_sync_a_restarted_node_still_hands_a_call_of_its_previous_run_to_its_peer() {
    let mut p = Pair::new();
    let fwd = p.call_at_a("cl26");
    p.sync();
    p.a_restarts();
    // Node 2's snapshot (its own calls: none) made node 1 ready; node 2 has not yet adopted
    // node 1's old call, nor told node 1 it did, when the cloud's answer lands on node 1.
    assert!(p.a.core.mark_synced(p.a.now));
    let answer = response_to(&fwd, 200, "p");
    p.a.receive(PRIMARY, &answer);
    assert!(p.a.sent.is_empty(), "no ghost teardown at node 1");
    assert_eq!(hand_over(&mut p.a, &mut p.b, 2), 1);
    assert_eq!(p.b.lines_to(CARRIER), vec!["SIP/2.0 200 Whatever"]);
    assert_eq!(adopted(&p.b, "setup"), 1.0);
    // Long after the sync, what names node 1 and is held nowhere is a ghost's: handled here.
    p.a.now += super::super::cluster::SETTLE_GRACE;
    p.a.receive(PRIMARY, &response_to(&fwd, 200, "q"));
    assert!(p.a.to_nodes.is_empty());
    assert_eq!(
        p.a.count_to(PRIMARY, "BYE"),
        1,
        "the ghost torn down at node 1"
    );
}

#[test]
fn an_answer_a_peer_hands_to_a_restarted_node_is_dropped_not_torn_down_and_its_retransmission_completes_the_call(
) {
    let mut p = Pair::new();
    let fwd = p.call_at_a("cl27");
    p.sync();
    p.a_restarts();
    // The cloud's answer lands on node 2, which holds node 1's old call only as a replica and
    // sees node 1 up again: it hands the answer to node 1. Node 1's new run holds nothing of
    // the call; taken for a ghost's, the call would be torn down under the caller.
    let answer = response_to(&fwd, 200, "p");
    p.b.receive(PRIMARY, &answer);
    assert_eq!(p.hand_b_to_a(), 1);
    assert!(
        p.a.sent.is_empty(),
        "no ghost teardown at node 1: {:?}",
        p.a.sent
    );
    assert!(p.a.to_nodes.is_empty(), "never handed back");
    assert_eq!(p.a.dropped("syncing"), 1.0);
    // Node 1's snapshot tells node 2 it restarted: node 2 adopts the old call, and the
    // answer's retransmission completes it.
    p.b.core.mark_replicas_stale(1);
    let mut out = Vec::new();
    assert_eq!(
        p.b.core.settle_stale_replicas(1, true, p.b.now, &mut out),
        1
    );
    p.b.absorb(out);
    p.b.receive(PRIMARY, &answer);
    assert_eq!(p.b.lines_to(CARRIER), vec!["SIP/2.0 200 Whatever"]);
    assert_eq!(p.b.count_to(PRIMARY, "BYE"), 0);
}

#[test]
fn calls_ended_by_the_operator_are_forgotten_at_the_peer_which_never_lists_them() {
    let mut p = Pair::new();
    p.answered_at_a("cl-end-answered");
    let fwd = p.call_at_a("cl-end-ringing");
    p.a.receive(PRIMARY, &response_to(&fwd, 180, "p"));
    p.sync();
    assert_eq!(p.b.core.replicas(), 2);
    assert!(
        p.b.core.list_calls(p.b.now).is_empty(),
        "replicas are the peer's calls"
    );
    assert!(p
        .b
        .drive(|core, now, out| core.end_call("cl-end-ringing", now, out))
        .is_empty());
    assert_eq!(p.a.core.list_calls(p.a.now).len(), 2);
    for id in ["cl-end-answered", "cl-end-ringing"] {
        assert_eq!(
            p.a.drive(|core, now, out| core.end_call(id, now, out))
                .len(),
            1
        );
    }
    p.sync();
    assert_eq!(p.b.core.replicas(), 0, "both ends replicated");
}

#[test]
fn the_calls_of_a_dead_node_are_listed_at_its_peer_and_ending_one_there_adopts_and_ends_it() {
    let mut p = Pair::new();
    p.answered_at_a("cl-dead-answered");
    let fwd = p.call_at_a("cl-dead-ringing");
    p.a.receive(PRIMARY, &response_to(&fwd, 180, "p"));
    p.sync();
    assert!(
        p.b.core.list_calls(p.b.now).is_empty(),
        "the peer's calls while it is up"
    );
    p.a_dies();
    let listed = p.b.core.list_calls(p.b.now);
    assert_eq!(listed.len(), 2, "{listed:#?}");
    let find = |id: &str| listed.iter().find(|c| c.call_id == id).expect(id);
    let answered = find("cl-dead-answered");
    assert_eq!(
        (
            answered.state,
            answered.owner,
            answered.destination.as_deref()
        ),
        (CallStage::Answered, Some(1), Some("primary"))
    );
    let ringing = find("cl-dead-ringing");
    assert_eq!(
        (
            ringing.state,
            ringing.owner,
            ringing.branch.as_deref(),
            ringing.route.as_deref()
        ),
        (CallStage::Setup, Some(1), Some("ringing"), Some("default"))
    );
    assert_eq!(adopted(&p.b, "answered") + adopted(&p.b, "setup"), 0.0);

    // Ending the answered call here adopts it: a BYE to each side, with the operator's Reason.
    let ended =
        p.b.drive(|core, now, out| core.end_call("cl-dead-answered", now, out));
    assert_eq!(ended.len(), 1);
    let to_cloud = p.b.last_to(PRIMARY, "BYE");
    let to_carrier = p.b.last_to(CARRIER, "BYE");
    for bye in [&to_cloud, &to_carrier] {
        assert!(
            header(bye, "Reason").is_some_and(|r| r.contains(OPERATOR_REASON)),
            "{}",
            String::from_utf8_lossy(bye)
        );
    }
    assert_eq!(adopted(&p.b, "answered"), 1.0);
    // The call in setup: CANCEL to its branch, 480 to the caller.
    let ended =
        p.b.drive(|core, now, out| core.end_call("cl-dead-ringing", now, out));
    assert_eq!(ended.len(), 1);
    p.b.last_to(PRIMARY, "CANCEL");
    p.b.last_to(CARRIER, "SIP/2.0 480");
    assert_eq!(adopted(&p.b, "setup"), 1.0);
    assert_eq!(p.b.core.replicas(), 0);
    assert!(
        p.b.core
            .list_calls(p.b.now)
            .iter()
            .all(|c| c.owner.is_none()),
        "adopted: this node's calls now"
    );
}
