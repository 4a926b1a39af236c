//! Behaviour of `Router::route_for` and `Router::match_route`: the first route in file order
//! whose conditions all hold; number normalisation on both sides; exact vs prefix; callers,
//! listeners, headers; calls whose user part is not a number.

// Test support: a failed assumption here is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{compile, destinations};
use routing_rules::{Call, MatchReason, Router};

/// Routes (given as `[[route]]` bodies without tiers) over one destination.
fn routes(bodies: &[&str]) -> Router {
    let mut text = destinations(1);
    for (i, body) in bodies.iter().enumerate() {
        text.push_str(&format!(
            "[[route]]\nname = \"r{i}\"\ndestinations = [\"d0\"]\n{body}\n"
        ));
    }
    compile(&text)
}

/// The name of the route a call to `to` takes.
fn to(router: &Router, to: &str) -> Option<String> {
    route(
        router,
        &Call {
            to_user: Some(to),
            ..Call::default()
        },
    )
}

fn route(router: &Router, call: &Call<'_>) -> Option<String> {
    router.route_for(call).map(|r| router.route(r).name.clone())
}

#[test]
fn exact_number_matches_with_or_without_plus_separators_and_parameters() {
    let r = routes(&["match = { to = [\"+1 (555) 010-0911\"] }", ""]);
    for called in [
        "15550100911",
        "+15550100911",
        "1-555-010-0911",
        "+1.555.010.0911",
        "+15550100911;npdi;rn=+15551111111",
    ] {
        assert_eq!(to(&r, called).as_deref(), Some("r0"), "{called}");
    }
}

#[test]
fn exact_number_does_not_match_a_longer_or_shorter_number() {
    let r = routes(&["match = { to = [\"15550100911\"] }", ""]);
    for called in ["155501009110", "1555010091", "25550100911"] {
        assert_eq!(to(&r, called).as_deref(), Some("r1"), "{called}");
    }
}

#[test]
fn national_and_international_forms_are_different_numbers() {
    let r = routes(&["match = { to = [\"+15550100911\"] }", ""]);
    assert_eq!(to(&r, "5550100911").as_deref(), Some("r1"));
}

#[test]
fn prefix_matches_every_number_starting_with_it_including_itself() {
    let r = routes(&["match = { to_prefix = [\"+44 20\"] }", ""]);
    assert_eq!(to(&r, "442079460000").as_deref(), Some("r0"));
    assert_eq!(to(&r, "+4420").as_deref(), Some("r0"));
    assert_eq!(
        to(&r, "442").as_deref(),
        Some("r1"),
        "shorter than the prefix"
    );
    assert_eq!(to(&r, "4412079460000").as_deref(), Some("r1"));
}

#[test]
fn first_route_in_file_order_wins_not_the_longest_prefix() {
    let short_first = routes(&[
        "match = { to_prefix = [\"1555\"] }",
        "match = { to_prefix = [\"15550\"] }",
    ]);
    assert_eq!(to(&short_first, "155501").as_deref(), Some("r0"));
    let long_first = routes(&[
        "match = { to_prefix = [\"15550\"] }",
        "match = { to_prefix = [\"1555\"] }",
    ]);
    assert_eq!(to(&long_first, "155501").as_deref(), Some("r0"));
    assert_eq!(to(&long_first, "155510").as_deref(), Some("r1"));
}

#[test]
fn exact_and_prefix_routes_compete_by_file_order() {
    let exact_first = routes(&[
        "match = { to = [\"15550100911\"] }",
        "match = { to_prefix = [\"1555\"] }",
    ]);
    assert_eq!(to(&exact_first, "15550100911").as_deref(), Some("r0"));
    assert_eq!(to(&exact_first, "15550100912").as_deref(), Some("r1"));
    let prefix_first = routes(&[
        "match = { to_prefix = [\"1555\"] }",
        "match = { to = [\"15550100911\"] }",
    ]);
    assert_eq!(to(&prefix_first, "15550100911").as_deref(), Some("r0"));
}

#[test]
fn a_route_without_number_conditions_beats_later_number_routes() {
    let r = routes(&[
        "match = { source = [\"carrier-b\"] }",
        "match = { to_prefix = [\"1555\"] }",
    ]);
    let from_b = Call {
        to_user: Some("15550100911"),
        listener: Some("carrier-b"),
        ..Call::default()
    };
    assert_eq!(route(&r, &from_b).as_deref(), Some("r0"));
    assert_eq!(to(&r, "15550100911").as_deref(), Some("r1"));
}

#[test]
fn empty_and_non_digit_users_match_only_routes_without_number_conditions() {
    let r = routes(&[
        "match = { to_prefix = [\"1\"] }",
        "match = { to = [\"1\"] }",
        "",
    ]);
    for called in ["", "alice", "anonymous", "1555abc", "+", "++1555"] {
        assert_eq!(to(&r, called).as_deref(), Some("r2"), "{called:?}");
    }
    assert_eq!(route(&r, &Call::default()).as_deref(), Some("r2"));
    let no_default = routes(&["match = { to_prefix = [\"1\"] }"]);
    assert_eq!(to(&no_default, "alice"), None);
    assert_eq!(to(&no_default, "2555"), None);
}

#[test]
fn star_and_hash_service_codes_are_numbers() {
    let r = routes(&[
        "match = { to = [\"*67#\"] }",
        "match = { to_prefix = [\"*\"] }",
        "",
    ]);
    assert_eq!(to(&r, "*67#").as_deref(), Some("r0"));
    assert_eq!(to(&r, "*68").as_deref(), Some("r1"));
    assert_eq!(to(&r, "#67").as_deref(), Some("r2"));
}

#[test]
fn every_condition_given_must_hold() {
    let r = routes(&[
        "match = { to_prefix = [\"1555\"], source = [\"carrier-a\"], from_prefix = [\"44\"] }",
        "",
    ]);
    let call = |to: &'static str, from: &'static str, listener: &'static str| Call {
        to_user: Some(to),
        from_user: Some(from),
        listener: Some(listener),
        ..Call::default()
    };
    assert_eq!(
        route(&r, &call("15551", "+44 20 7946", "carrier-a")).as_deref(),
        Some("r0")
    );
    assert_eq!(
        route(&r, &call("25551", "+44 20 7946", "carrier-a")).as_deref(),
        Some("r1")
    );
    assert_eq!(
        route(&r, &call("15551", "+33 1", "carrier-a")).as_deref(),
        Some("r1")
    );
    assert_eq!(
        route(&r, &call("15551", "4420", "carrier-b")).as_deref(),
        Some("r1")
    );
    let no_from = Call {
        from_user: None,
        ..call("15551", "", "carrier-a")
    };
    assert_eq!(route(&r, &no_from).as_deref(), Some("r1"));
}

#[test]
fn from_prefix_compares_normalised_caller_numbers() {
    let r = routes(&["match = { from_prefix = [\"+1 (212)\", \"1646\"] }", ""]);
    let from = |f: &'static str| Call {
        from_user: Some(f),
        ..Call::default()
    };
    assert_eq!(route(&r, &from("12125550000")).as_deref(), Some("r0"));
    assert_eq!(route(&r, &from("+1-646-555-0000")).as_deref(), Some("r0"));
    assert_eq!(route(&r, &from("anonymous")).as_deref(), Some("r1"));
}

#[test]
fn source_matches_one_of_the_listed_listener_names() {
    let r = routes(&[
        "match = { source = [\"carrier-a\", \"udp:127.0.0.1:5060\"] }",
        "",
    ]);
    let on = |l: Option<&'static str>| Call {
        listener: l,
        ..Call::default()
    };
    assert_eq!(route(&r, &on(Some("carrier-a"))).as_deref(), Some("r0"));
    assert_eq!(
        route(&r, &on(Some("udp:127.0.0.1:5060"))).as_deref(),
        Some("r0")
    );
    assert_eq!(route(&r, &on(Some("Carrier-A"))).as_deref(), Some("r1"));
    assert_eq!(route(&r, &on(None)).as_deref(), Some("r1"));
}

#[test]
fn header_condition_checks_presence_or_value_with_case_insensitive_names() {
    let r = routes(&[
        "match = { header = { name = \"X-Tenant\", value = \"acme\" } }",
        "match = { header = { name = \"X-Emergency\" } }",
        "",
    ]);
    let with = |h: &'static [(&'static str, &'static str); 1]| Call {
        headers: h,
        ..Call::default()
    };
    assert_eq!(
        route(&r, &with(&[("x-tenant", " acme ")])).as_deref(),
        Some("r0")
    );
    assert_eq!(
        route(&r, &with(&[("X-Tenant", "acme-2")])).as_deref(),
        Some("r2")
    );
    assert_eq!(
        route(&r, &with(&[("X-EMERGENCY", "")])).as_deref(),
        Some("r1")
    );
    assert_eq!(
        route(&r, &with(&[("X-Other", "acme")])).as_deref(),
        Some("r2")
    );
    assert_eq!(route(&r, &Call::default()).as_deref(), Some("r2"));
}

#[test]
fn a_default_route_takes_every_call_that_reaches_it() {
    let r = routes(&["match = { to = [\"1\"] }", "", "match = { to = [\"2\"] }"]);
    assert_eq!(to(&r, "1").as_deref(), Some("r0"));
    assert_eq!(
        to(&r, "2").as_deref(),
        Some("r1"),
        "r2 is shadowed by the default"
    );
    assert_eq!(to(&r, "alice").as_deref(), Some("r1"));
}

#[test]
fn match_route_names_the_conditions_that_held() {
    let r = routes(&[
        "match = { to_prefix = [\"15\", \"1555\"], source = [\"a\"] }",
        "match = { to = [\"+4420\"], header = { name = \"X-T\", value = \"v\" } }",
        "",
    ]);
    let call = Call {
        to_user: Some("+1555 0100"),
        listener: Some("a"),
        ..Call::default()
    };
    let (route, why) = r.match_route(&call).unwrap();
    assert_eq!(r.route(route).name, "r0");
    assert_eq!(
        why,
        [
            MatchReason::ToPrefix("1555".into()),
            MatchReason::Source("a".into())
        ]
    );
    let headers = [("X-T", "v")];
    let call = Call {
        to_user: Some("4420"),
        headers: &headers,
        ..Call::default()
    };
    let (_, why) = r.match_route(&call).unwrap();
    assert_eq!(
        why,
        [
            MatchReason::ToExact("4420".into()),
            MatchReason::Header {
                name: "X-T".into(),
                value: Some("v".into())
            }
        ]
    );
    let (_, why) = r.match_route(&Call::default()).unwrap();
    assert_eq!(why, [MatchReason::Default]);
}

#[test]
fn ten_thousand_numbers_over_a_hundred_routes_each_find_their_route() {
    let mut bodies = Vec::new();
    for route in 0..100 {
        let numbers: Vec<String> = (0..100)
            .map(|k| format!("\"+1555{:07}\"", route * 100 + k))
            .collect();
        bodies.push(format!("match = {{ to = [{}] }}", numbers.join(", ")));
    }
    let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
    let r = routes(&refs);
    for n in (0..10_000).step_by(37) {
        assert_eq!(
            to(&r, &format!("1555{n:07}")),
            Some(format!("r{}", n / 100)),
            "{n}"
        );
    }
    assert_eq!(to(&r, "15550010000"), None);
}
