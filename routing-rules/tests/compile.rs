//! Behaviour of `Router::compile` for destinations and flat routes (`destinations = [...]`),
//! driven by TOML as an operator writes it: defaults, one test per validation error (exact key
//! path and a phrase of the message), and the flat routing view the serial core uses. Groups,
//! tiers, matching and strategies are in `groups.rs`, `matching.rs` and `strategies.rs`.

// Test support: a failed assumption here is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use routing_rules::spec::{CancelMode, DestinationSpec, GroupSpec, RouteSpec, TransportSpec};
use routing_rules::{Call, CallFacts, DestId, RouteId, Router, RuleError, RuleSet};
use serde::Deserialize;
use std::time::Duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    #[serde(default)]
    destination: Vec<DestinationSpec>,
    #[serde(default)]
    group: Vec<GroupSpec>,
    #[serde(default)]
    route: Vec<RouteSpec>,
}

fn specs(toml_text: &str) -> Doc {
    toml::from_str(toml_text).expect("test TOML deserialises")
}

fn compile(toml_text: &str) -> Result<RuleSet, Vec<RuleError>> {
    router(toml_text).map(|r| r.rules)
}

fn router(toml_text: &str) -> Result<Router, Vec<RuleError>> {
    let doc = specs(toml_text);
    Router::compile(&doc.destination, &doc.group, &doc.route)
}

fn errors(toml_text: &str) -> Vec<RuleError> {
    compile(toml_text).expect_err("compile must fail")
}

/// Asserts exactly one error, at `path`, whose message contains `phrase`.
#[track_caller]
fn assert_one_error(toml_text: &str, path: &str, phrase: &str) {
    let errs = errors(toml_text);
    assert_eq!(errs.len(), 1, "expected one error, got {errs:#?}");
    assert_eq!(errs[0].path, path, "{errs:#?}");
    assert!(
        errs[0].message.contains(phrase),
        "message {:?} lacks {phrase:?}",
        errs[0].message
    );
}

const TWO: &str = r#"
[[destination]]
name = "primary"
address = "10.0.0.1:5060"
[[destination]]
name = "secondary"
address = "10.0.0.2:5060"
"#;

fn with_two(rest: &str) -> String {
    format!("{TWO}\n{rest}")
}

const ROUTE: &str = r#"
[[route]]
name = "default"
destinations = ["primary", "secondary"]
"#;

#[test]
fn defaults_fill_every_optional_key() {
    let rules = compile(&with_two(ROUTE)).unwrap();
    let d = &rules.destinations[0];
    assert_eq!(d.name, "primary");
    assert_eq!(d.host, "10.0.0.1");
    assert_eq!(d.port, 5060);
    assert_eq!(d.transport, TransportSpec::Udp);
    assert_eq!(d.provisional_timeout, Duration::from_secs(3));
    assert_eq!(d.cancel_mode, CancelMode::Immediate);
    assert!(d.trusted);
    let r = &rules.routes[0];
    assert_eq!(r.name, "default");
    assert_eq!(r.destinations, vec![DestId(0), DestId(1)]);
    assert_eq!(r.retry_codes.0, vec![408, 500, 502, 503, 504]);
    assert!(r.ringing_retry_codes.0.is_empty());
    assert!(!r.pass_503);
    assert_eq!(r.ring_timeout, Duration::from_secs(120));
}

#[test]
fn explicit_values_are_kept() {
    let rules = compile(
        r#"
[[destination]]
name = "edge.dc-1_a"
address = "[2001:db8::7]:5080"
transport = "tcp"
provisional_timeout = "250ms"
cancel_mode = "deferred"
trusted = false
[[route]]
name = "main"
destinations = ["edge.dc-1_a"]
retry_codes = [503, 480]
ringing_retry_codes = [503]
pass_503 = true
ring_timeout = "1m 30s"
"#,
    )
    .unwrap();
    let d = &rules.destinations[0];
    assert_eq!(d.host, "2001:db8::7");
    assert_eq!(d.port, 5080);
    assert_eq!(d.transport, TransportSpec::Tcp);
    assert_eq!(d.provisional_timeout, Duration::from_millis(250));
    assert_eq!(d.cancel_mode, CancelMode::Deferred);
    assert!(!d.trusted);
    let r = &rules.routes[0];
    assert!(r.retry_codes.contains(480) && !r.retry_codes.contains(408));
    assert_eq!(r.ringing_retry_codes.0, vec![503]);
    assert!(r.pass_503);
    assert_eq!(r.ring_timeout, Duration::from_secs(90));
}

#[test]
fn durations_accept_seconds_and_milliseconds() {
    for (text, want) in [
        ("3s", Duration::from_secs(3)),
        ("250ms", Duration::from_millis(250)),
        ("2min", Duration::from_secs(120)),
        ("1h", Duration::from_secs(3600)),
    ] {
        let doc = specs(&format!(
            "[[destination]]\nname = \"a\"\naddress = \"h:1\"\nprovisional_timeout = \"{text}\"\n"
        ));
        assert_eq!(doc.destination[0].provisional_timeout, Some(want), "{text}");
    }
}

#[test]
fn hostname_destination_keeps_the_name_unresolved() {
    let rules = compile(
        r#"
[[destination]]
name = "cloud"
address = "sbc.example.com:5061"
[[route]]
name = "r"
destinations = ["cloud"]
"#,
    )
    .unwrap();
    assert_eq!(rules.destinations[0].host, "sbc.example.com");
    assert_eq!(rules.destinations[0].port, 5061);
}

#[test]
fn route_for_takes_the_first_route_in_file_order() {
    let rules = router(&with_two(
        r#"
[[route]]
name = "first"
destinations = ["secondary"]
[[route]]
name = "second"
destinations = ["primary"]
"#,
    ))
    .unwrap();
    let id = rules.route_for(&Call::default()).unwrap();
    assert_eq!(id, RouteId(0));
    assert_eq!(rules.route(id).name, "first");
    let facts = CallFacts {
        to_user: Some("15551234"),
        from_user: Some("15559876"),
        listener: Some("udp-carrier"),
    };
    assert_eq!(rules.route_for(&facts.into()), Some(RouteId(0)));
    assert_eq!(rules.rules.route_for(&facts), Some(RouteId(0)));
    assert_eq!(rules.route_by_name("second"), Some(RouteId(1)));
    assert_eq!(rules.destination_by_name("secondary"), Some(DestId(1)));
}

#[test]
fn route_for_is_none_without_routes() {
    let rules = RuleSet {
        destinations: vec![],
        routes: vec![],
    };
    assert_eq!(rules.route_for(&CallFacts::default()), None);
}

// ---- destinations ----

#[test]
fn empty_destination_name_is_rejected() {
    assert_one_error(
        &format!("[[destination]]\nname = \"\"\naddress = \"10.0.0.1:5060\"\n{ROUTE}")
            .replace("[\"primary\", \"secondary\"]", "[\"\"]"),
        "destination[0].name",
        "destination name is empty",
    );
}

#[test]
fn destination_name_with_space_names_the_character_and_a_fixed_name() {
    let text = with_two(ROUTE).replace("\"secondary\"", "\"sec ondary\"");
    assert_one_error(&text, "destination[1].name", "contains ' ' at byte 3");
    assert_one_error(&text, "destination[1].name", "(e.g. \"sec-ondary\")");
}

#[test]
fn duplicate_destination_name_points_to_the_first_definition() {
    let text = with_two(ROUTE).replace("\"secondary\"", "\"primary\"");
    let errs = errors(&text);
    assert_eq!(errs[0].path, "destination[1].name");
    assert!(errs[0].message.contains("already used by destination[0]"));
    // The route then lists "primary" twice; that is reported too.
    assert_eq!(errs[1].path, "route[0].destinations[1]");
}

#[test]
fn address_without_port_is_rejected_with_an_example() {
    assert_one_error(
        &with_two(ROUTE).replace("10.0.0.2:5060", "10.0.0.2"),
        "destination[1].address",
        "has no port: write \"10.0.0.2:5060\"",
    );
}

#[test]
fn address_with_port_zero_is_rejected() {
    assert_one_error(
        &with_two(ROUTE).replace("10.0.0.1:5060", "10.0.0.1:0"),
        "destination[0].address",
        "is out of range: write a port in 1..=65535",
    );
}

#[test]
fn address_with_port_above_65535_is_rejected() {
    assert_one_error(
        &with_two(ROUTE).replace("10.0.0.1:5060", "10.0.0.1:70000"),
        "destination[0].address",
        "port \"70000\"",
    );
}

#[test]
fn ipv6_address_without_brackets_suggests_the_bracketed_form() {
    assert_one_error(
        &with_two(ROUTE).replace("10.0.0.1:5060", "2001:db8::1"),
        "destination[0].address",
        "write the address in brackets followed by the port, e.g. \"[2001:db8::1]:5060\"",
    );
}

#[test]
fn ipv6_address_in_brackets_is_stored_without_them() {
    let rules = compile(&with_two(ROUTE).replace("10.0.0.1:5060", "[::1]:5070")).unwrap();
    assert_eq!(rules.destinations[0].host, "::1");
    assert_eq!(rules.destinations[0].port, 5070);
}

#[test]
fn invalid_ipv4_address_is_rejected() {
    assert_one_error(
        &with_two(ROUTE).replace("10.0.0.1:5060", "10.0.0.256:5060"),
        "destination[0].address",
        "is not a valid IPv4 address",
    );
}

#[test]
fn invalid_hostname_is_rejected() {
    assert_one_error(
        &with_two(ROUTE).replace("10.0.0.1:5060", "sbc_1.example.com:5060"),
        "destination[0].address",
        "contains '_'",
    );
}

#[test]
fn zero_provisional_timeout_is_rejected() {
    assert_one_error(
        &with_two(ROUTE).replace(
            "address = \"10.0.0.2:5060\"",
            "address = \"10.0.0.2:5060\"\nprovisional_timeout = \"0s\"",
        ),
        "destination[1].provisional_timeout",
        "provisional_timeout is 0s",
    );
}

#[test]
fn provisional_timeout_above_one_hour_is_rejected() {
    assert_one_error(
        &with_two(ROUTE).replace(
            "address = \"10.0.0.2:5060\"",
            "address = \"10.0.0.2:5060\"\nprovisional_timeout = \"61min\"",
        ),
        "destination[1].provisional_timeout",
        "is longer than 1h",
    );
}

// ---- routes ----

#[test]
fn missing_route_table_is_an_error_at_path_route() {
    assert_one_error(TWO, "route", "no [[route]] table: every call needs a route");
}

#[test]
fn empty_route_name_is_rejected() {
    assert_one_error(
        &with_two(ROUTE).replace("\"default\"", "\"\""),
        "route[0].name",
        "route name is empty",
    );
}

#[test]
fn invalid_route_name_is_rejected() {
    assert_one_error(
        &with_two(ROUTE).replace("\"default\"", "\"to/cloud\""),
        "route[0].name",
        "contains '/'",
    );
}

#[test]
fn duplicate_route_name_points_to_the_first_definition() {
    assert_one_error(
        &with_two(&format!("{ROUTE}{ROUTE}")),
        "route[1].name",
        "route name \"default\" is already used by route[0]",
    );
}

#[test]
fn route_without_destinations_is_rejected() {
    assert_one_error(
        &with_two(ROUTE).replace("[\"primary\", \"secondary\"]", "[]"),
        "route[0].destinations",
        "lists no destinations: list at least one destination name",
    );
}

#[test]
fn unknown_destination_reference_names_route_path_and_suggests_closest() {
    assert_one_error(
        &with_two(ROUTE).replace(
            "[\"primary\", \"secondary\"]",
            "[\"primary\", \"secundary\"]",
        ),
        "route[0].destinations[1]",
        "unknown destination \"secundary\": did you mean \"secondary\"?",
    );
}

#[test]
fn unknown_destination_reference_without_close_name_lists_known_names() {
    assert_one_error(
        &with_two(ROUTE).replace(
            "[\"primary\", \"secondary\"]",
            "[\"lifeboat\", \"primary\"]",
        ),
        "route[0].destinations[0]",
        "no [[destination]] has that name (known: \"primary\", \"secondary\")",
    );
}

#[test]
fn unknown_destination_reference_without_any_destination_says_to_add_one() {
    assert_one_error(
        ROUTE.replace(", \"secondary\"", "").as_str(),
        "route[0].destinations[0]",
        "there is no [[destination]] table",
    );
}

#[test]
fn duplicate_destination_within_a_route_is_rejected() {
    assert_one_error(
        &with_two(ROUTE).replace(
            "[\"primary\", \"secondary\"]",
            "[\"primary\", \"secondary\", \"primary\"]",
        ),
        "route[0].destinations[2]",
        "listed twice in route \"default\" (also at route[0].destinations[0])",
    );
}

fn route_with(key_values: &str) -> String {
    with_two(&format!("{ROUTE}{key_values}\n"))
}

#[test]
fn six_hundred_retry_code_is_rejected_because_6xx_ends_the_call() {
    assert_one_error(
        &route_with("retry_codes = [503, 603]"),
        "route[0].retry_codes[1]",
        "6xx ends the call (RFC 3261 §16.7) and is never retried",
    );
}

#[test]
fn success_retry_code_is_rejected() {
    assert_one_error(
        &route_with("retry_codes = [200]"),
        "route[0].retry_codes[0]",
        "200 is a success (2xx)",
    );
}

#[test]
fn provisional_retry_code_is_rejected() {
    assert_one_error(
        &route_with("retry_codes = [503, 180]"),
        "route[0].retry_codes[1]",
        "180 is a provisional response (1xx)",
    );
}

#[test]
fn retry_code_outside_sip_range_is_rejected() {
    assert_one_error(
        &route_with("retry_codes = [5030]"),
        "route[0].retry_codes[0]",
        "5030 is not a SIP status code (100..=699)",
    );
}

#[test]
fn repeated_retry_code_is_rejected() {
    assert_one_error(
        &route_with("retry_codes = [503, 502, 503]"),
        "route[0].retry_codes[2]",
        "503 is listed twice (also at route[0].retry_codes[0])",
    );
}

#[test]
fn redirect_and_client_error_retry_codes_are_accepted() {
    let rules = compile(&route_with("retry_codes = [302, 404, 480, 599]")).unwrap();
    assert_eq!(rules.routes[0].retry_codes.0, vec![302, 404, 480, 599]);
}

#[test]
fn empty_retry_codes_mean_no_failover_on_final_responses() {
    let rules = compile(&route_with("retry_codes = []")).unwrap();
    assert!(rules.routes[0].retry_codes.0.is_empty());
}

#[test]
fn ringing_retry_codes_follow_the_same_rules() {
    assert_one_error(
        &route_with("ringing_retry_codes = [486, 600]"),
        "route[0].ringing_retry_codes[1]",
        "6xx ends the call",
    );
    assert_one_error(
        &route_with("ringing_retry_codes = [183]"),
        "route[0].ringing_retry_codes[0]",
        "provisional response (1xx)",
    );
}

#[test]
fn zero_ring_timeout_is_rejected() {
    assert_one_error(
        &route_with("ring_timeout = \"0ms\""),
        "route[0].ring_timeout",
        "ring_timeout is 0s",
    );
}

#[test]
fn ring_timeout_above_one_hour_is_rejected() {
    assert_one_error(
        &route_with("ring_timeout = \"2h\""),
        "route[0].ring_timeout",
        "ring_timeout 2h is longer than 1h",
    );
}

#[test]
fn every_error_is_reported_destinations_first_then_routes() {
    let errs = errors(
        r#"
[[destination]]
name = "a b"
address = "10.0.0.1"
provisional_timeout = "0s"
[[destination]]
name = "b"
address = "[::1]:5060"
[[route]]
name = "r"
destinations = ["b", "c", "b"]
retry_codes = [603, 100]
ring_timeout = "0s"
"#,
    );
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "destination[0].name",
            "destination[0].address",
            "destination[0].provisional_timeout",
            "route[0].destinations[1]",
            "route[0].destinations[2]",
            "route[0].retry_codes[0]",
            "route[0].retry_codes[1]",
            "route[0].ring_timeout",
        ]
    );
}

#[test]
fn rule_error_displays_path_then_message() {
    let e = RuleError {
        path: "route[0].destinations[2]".into(),
        message: "unknown destination \"x\"".into(),
    };
    assert_eq!(
        e.to_string(),
        "route[0].destinations[2]: unknown destination \"x\""
    );
}

#[test]
fn compile_except_leaves_out_the_skipped_errors_and_compiles_the_rest() {
    let doc = specs(&with_two(&format!(
        "{ROUTE}\nretry_codes = [603]\n[[route]]\nname = \"spare\"\ndestinations = [\"tertiary\"]\n"
    )));
    let skip_spare = |e: &RuleError| e.path.starts_with("route[1]");
    let errs = Router::compile_except(&doc.destination, &doc.group, &doc.route, skip_spare)
        .expect_err("route[0] is still judged");
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["route[0].retry_codes[0]"]);
    let skip_both = |e: &RuleError| e.path.starts_with("route[");
    let router = Router::compile_except(&doc.destination, &doc.group, &doc.route, skip_both)
        .expect("every error skipped");
    assert_eq!(router.rules.routes.len(), 2);
}
