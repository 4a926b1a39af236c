//! Behaviour of `Router::explain` on the shipped `examples/three-layer-dr.toml`: the route that
//! matched and why, the tiers and members in the order a user expects, the strategies, the
//! survivability rule; and with health states passed in, what is skipped.

// Test support: a failed assumption here is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::compile;
use routing_rules::{Call, MemberState, Router};

fn three_layer_dr() -> Router {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/three-layer-dr.toml"
    ))
    .expect("examples/three-layer-dr.toml");
    compile(&text)
}

fn to(number: &str) -> Call<'_> {
    Call {
        to_user: Some(number),
        ..Call::default()
    }
}

#[test]
fn explain_emergency_did_shows_three_tiers_in_order_then_the_lifeboat() {
    let r = three_layer_dr();
    let e = r.explain(&to("+1-555-010-0911"), &|_| true).unwrap();
    let want = r#"call: to +1-555-010-0911 (number 15550100911), from -, source -
route: "emergency" (route[0]) matches, because:
  - the called number 15550100911 is listed in match.to
tiers, in the order they are tried:
  1. group "site-a" (priority: lowest priority first, ties by higher weight, one at a time)
       1) edge-a1 127.0.0.1:5071/udp, priority 0
       2) edge-a2 127.0.0.1:5072/udp, priority 10
  2. group "site-b" (priority: lowest priority first, ties by higher weight, one at a time)
       1) edge-b1 127.0.0.1:5073/udp, priority 0
       2) edge-b2 127.0.0.1:5074/udp, priority 10
  3. group "cloud-byoc" (weighted: each call draws its first member by weight among the members up, then the next the same way, one at a time)
       - cloud-sbc1 127.0.0.1:5081/udp, weight 3 (75% of first attempts)
       - cloud-sbc2 127.0.0.1:5082/udp, weight 1 (25% of first attempts)
when every tier is down or has failed: survivability sends the call to group "lifeboat" (priority: lowest priority first, ties by higher weight, one at a time)
       1) lifeboat-ivr 127.0.0.1:5091/udp, priority 0
"#;
    assert_eq!(e.to_string(), want, "got:\n{e}");
}

#[test]
fn explain_other_numbers_take_the_default_route_with_four_tiers_and_a_reject() {
    let r = three_layer_dr();
    let e = r.explain(&to("+442079460000"), &|_| true).unwrap();
    assert_eq!(e.route_name, "default");
    let groups: Vec<_> = e.tiers.iter().map(|t| t.group.clone().unwrap()).collect();
    assert_eq!(groups, ["site-a", "site-b", "cloud-byoc", "lifeboat"]);
    let text = e.to_string();
    assert!(
        text.contains("  - it has no match conditions (a default route)\n"),
        "{text}"
    );
    assert!(
        text.ends_with(
            "when every tier is down or has failed: survivability rejects the call with 503 and Retry-After: 30\n"
        ),
        "{text}"
    );
}

#[test]
fn explain_with_health_marks_down_members_and_says_when_survivability_applies() {
    let r = three_layer_dr();
    let edge_a1 = r.destination_by_name("edge-a1").unwrap();
    let sbc1 = r.destination_by_name("cloud-sbc1").unwrap();
    let e = r
        .explain(&to("15550100911"), &|d| d != edge_a1 && d != sbc1)
        .unwrap();
    let text = e.to_string();
    assert!(
        text.contains("       1) edge-a2 127.0.0.1:5072/udp, priority 10\n"),
        "{text}"
    );
    assert!(
        text.contains("       x edge-a1 127.0.0.1:5071/udp, priority 0: down, skipped\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "       - cloud-sbc2 127.0.0.1:5082/udp, weight 1 (100% of first attempts)\n"
        ),
        "shares are recomputed over the members up:\n{text}"
    );
    assert!(!text.contains("applies now"), "{text}");

    let lifeboat = r.destination_by_name("lifeboat-ivr").unwrap();
    let e = r.explain(&to("15550100911"), &|d| d == lifeboat).unwrap();
    assert!(e.tiers.iter().all(|t| t.skipped()));
    assert!(e.tiers[0]
        .members
        .iter()
        .all(|m| m.state == MemberState::Down));
    let text = e.to_string();
    assert!(
        text.contains("  1. [skipped: no member up] group \"site-a\""),
        "{text}"
    );
    assert!(
        text.contains("when every tier is down or has failed (applies now): survivability sends the call to group \"lifeboat\""),
        "{text}"
    );
}

#[test]
fn explain_without_a_matching_route_says_how_to_fix_it() {
    let r = compile(
        "[[destination]]\nname = \"a\"\naddress = \"127.0.0.1:5070\"\n\
         [[route]]\nname = \"uk\"\nmatch = { to_prefix = [\"44\"] }\ndestinations = [\"a\"]\n",
    );
    let err = r.explain(&to("alice"), &|_| true).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no route matches the call to alice (not a number), from -, source -: each route has a \
         match condition this call fails, and no route is a default route; add a [[route]] \
         without match (at the end) to take such calls, or check the number"
    );
}

#[test]
fn explain_shows_a_hash_tier_in_hash_order_for_the_call_id() {
    let r = compile(
        "[[destination]]\nname = \"a\"\naddress = \"127.0.0.1:5070\"\n\
         [[destination]]\nname = \"b\"\naddress = \"[::1]:5080\"\ntransport = \"tcp\"\n\
         [[group]]\nname = \"h\"\nstrategy = \"hash\"\nhash_on = \"caller\"\nmembers = [\"a\", \"b\"]\n\
         [[route]]\nname = \"r\"\ntiers = [\"h\"]\n",
    );
    let call = Call {
        from_user: Some("+4420"),
        ..Call::default()
    };
    let e = r.explain(&call, &|_| true).unwrap();
    let plan: Vec<_> = r.plan(e.route, &call, &|_| true).destinations().collect();
    let shown: Vec<_> = e.tiers[0].members.iter().map(|m| m.dest).collect();
    assert_eq!(shown, plan);
    let text = e.to_string();
    assert!(
        text.contains("hash on caller: the same caller number always reaches the same member"),
        "{text}"
    );
    assert!(
        text.contains("b [::1]:5080/tcp, weight 1 (50% of first attempts)"),
        "{text}"
    );
}
