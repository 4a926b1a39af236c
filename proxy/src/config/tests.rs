//! Behaviour of config loading and validation: defaults, one test per validation error (exact key
//! path, line and a phrase of the message), structural errors, file order, and the examples.

use super::*;
use routing_rules::spec::TransportSpec;
use routing_rules::DestId;

const FILE: &str = "test.toml";

/// A valid config. Line numbers matter to some tests: keep it as is.
const BASE: &str = r#"[[listen]]
transport = "udp"
address = "127.0.0.1:5060"

[[destination]]
name = "primary"
address = "10.0.0.1:5060"

[[destination]]
name = "secondary"
address = "10.0.0.2:5060"

[[route]]
name = "default"
destinations = ["primary", "secondary"]
"#;

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::parse(text, FILE)
}

fn errors(text: &str) -> Vec<ConfigError> {
    parse(text).expect_err("config must be rejected").0
}

/// Asserts exactly one error, at `path` and `line`, whose message contains `phrase`.
#[track_caller]
fn assert_one_error(text: &str, path: &str, line: Option<usize>, phrase: &str) {
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "expected one error, got {errs:#?}");
    let e = &errs[0];
    assert_eq!(e.file, FILE);
    assert_eq!(e.path, path, "{e:#?}");
    assert_eq!(e.line, line, "{e:#?}");
    assert!(
        e.message.contains(phrase),
        "message {:?} lacks {phrase:?}",
        e.message
    );
}

/// BASE with `section` (e.g. "[timers]\nt1 = \"0s\"") appended; its first line is line 17.
fn base_with(section: &str) -> String {
    format!("{BASE}\n{section}\n")
}

#[test]
fn minimal_config_gets_every_default() {
    let c = parse(BASE).unwrap();
    assert_eq!(c.node_id, 1);
    assert_eq!(c.advertise, "127.0.0.1:5060");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(c.workers, cores.min(64));
    assert_eq!(
        c.listeners,
        vec![Listener {
            name: "udp:127.0.0.1:5060".into(),
            transport: ListenTransport::Udp,
            address: "127.0.0.1:5060".parse().unwrap(),
            acl: Default::default(),
            tls: None,
        }]
    );
    assert_eq!(c.timers.t1, Duration::from_millis(500));
    assert_eq!(c.timers.t2, Duration::from_secs(4));
    assert_eq!(c.timers.t4, Duration::from_secs(5));
    assert_eq!(c.limits, pointsman_protocol::wire::Limits::default());
    assert_eq!(c.tcp_idle_timeout, Duration::from_secs(600));
    assert_eq!(c.tcp_max_connections, 1024);
    assert_eq!(c.tcp_connect_timeout, Duration::from_secs(2));
    let d = &c.router.rules.destinations[1];
    assert_eq!((d.host.as_str(), d.port), ("10.0.0.2", 5060));
    assert_eq!(d.provisional_timeout, Duration::from_secs(3));
    assert_eq!(
        c.router.rules.routes[0].destinations,
        vec![DestId(0), DestId(1)]
    );
    assert_eq!(
        c.router.rules.routes[0].retry_codes.0,
        vec![408, 500, 502, 503, 504]
    );
}

#[test]
fn explicit_values_and_durations_in_s_and_ms_are_kept() {
    let c = parse(&base_with(
        r#"[node]
id = 2
advertise = "edge-a.example.net:5060"
workers = 3
[timers]
t1 = "250ms"
t2 = "3s"
t4 = "4s"
[limits]
max_message_size = 8192
max_headers = 64
max_line_length = 1024
max_via = 16
[tcp]
idle_timeout = "5min"
max_connections = 10
connect_timeout = "750ms""#,
    ))
    .unwrap();
    assert_eq!(c.node_id, 2);
    assert_eq!(c.advertise, "edge-a.example.net:5060");
    assert_eq!(c.workers, 3);
    assert_eq!(c.timers.t1, Duration::from_millis(250));
    assert_eq!(c.timers.t2, Duration::from_secs(3));
    assert_eq!(c.timers.t4, Duration::from_secs(4));
    assert_eq!(
        c.limits,
        pointsman_protocol::wire::Limits {
            max_message_size: 8192,
            max_headers: 64,
            max_line_length: 1024,
            max_via: 16
        }
    );
    assert_eq!(c.tcp_idle_timeout, Duration::from_secs(300));
    assert_eq!(c.tcp_max_connections, 10);
    assert_eq!(c.tcp_connect_timeout, Duration::from_millis(750));
}

#[test]
fn advertise_defaults_to_first_listener_with_ipv6_in_brackets() {
    let c = parse(&BASE.replace("127.0.0.1:5060", "[::1]:5062")).unwrap();
    assert_eq!(c.advertise, "[::1]:5062");
    assert_eq!(c.listeners[0].name, "udp:[::1]:5062");
}

#[test]
fn same_address_on_udp_and_tcp_is_two_listeners() {
    let c = parse(&base_with(
        "[[listen]]\nname = \"carrier-tcp\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:5060\"",
    ))
    .unwrap();
    assert_eq!(c.listeners.len(), 2);
    assert_eq!(c.listeners[1].name, "carrier-tcp");
    assert_eq!(c.listeners[1].transport, ListenTransport::Tcp);
}

// ---- structural errors (serde) ----

#[test]
fn unknown_key_is_rejected_with_path_line_and_suggestion() {
    let text = BASE.replace(
        "address = \"10.0.0.2:5060\"",
        "address = \"10.0.0.2:5060\"\ntransprt = \"tcp\"",
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    let e = &errs[0];
    assert_eq!(e.path, "destination[1].transprt");
    assert_eq!(e.line, Some(12));
    assert!(
        e.message
            .contains("unknown field `transprt`, expected one of"),
        "{e}"
    );
    assert!(e.message.contains("did you mean `transport`?"), "{e}");
}

#[test]
fn unknown_top_level_table_is_rejected() {
    assert_one_error(
        &base_with("[tsl]\ncert = \"x\""),
        "tsl",
        Some(17),
        "unknown field `tsl`",
    );
}

#[test]
fn unknown_key_in_section_is_rejected() {
    assert_one_error(
        &base_with("[timers]\nt3 = \"1s\""),
        "timers.t3",
        Some(18),
        "unknown field `t3`",
    );
}

#[test]
fn unknown_transport_value_is_rejected_with_its_path() {
    assert_one_error(
        &BASE.replace("transport = \"udp\"", "transport = \"sctp\""),
        "listen[0].transport",
        Some(2),
        "unknown variant `sctp`",
    );
}

#[test]
fn duration_without_unit_is_rejected_with_a_hint() {
    assert_one_error(
        &base_with("[timers]\nt1 = \"500\""),
        "timers.t1",
        Some(18),
        "write a duration as a string with a unit, e.g. \"3s\"",
    );
}

#[test]
fn duration_written_as_a_number_is_rejected_with_a_hint() {
    let errs = errors(&base_with("[tcp]\nconnect_timeout = 2"));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].path, "tcp.connect_timeout");
    assert_eq!(errs[0].line, Some(18));
    assert!(errs[0].message.contains("e.g. \"3s\""), "{}", errs[0]);
}

#[test]
fn missing_required_key_names_its_table() {
    let errs = errors(&BASE.replace("address = \"10.0.0.2:5060\"\n", ""));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].path, "destination[1]");
    assert!(
        errs[0].message.contains("missing field `address`"),
        "{}",
        errs[0]
    );
    assert!(
        errs[0].line.is_some_and(|l| (9..=10).contains(&l)),
        "{:?}",
        errs[0]
    );
}

#[test]
fn node_id_above_65535_is_rejected_by_type() {
    assert_one_error(
        &base_with("[node]\nid = 70000"),
        "node.id",
        Some(18),
        "70000",
    );
}

#[test]
fn toml_syntax_error_reports_its_line() {
    let errs = errors(&base_with("[node\nid = 1"));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].path, "-");
    assert_eq!(errs[0].line, Some(17));
    assert!(!errs[0].message.contains('\n'), "{}", errs[0]);
}

// ---- every problem in one run ----

/// Eight problems of five kinds (missing key, unknown key, wrong type, unknown section, bad
/// value) in seven sections, and a route naming a destination that cannot be read (which must
/// not add a ninth).
const MANY_PROBLEMS: &str = r#"[node]
id = 0

[[listen]]
transport = "udp"

[[listen]]
transport = "udp"
address = "127.0.0.1:5060"

[[destination]]
name = "primary"
address = "10.0.0.1:5060"

[[destination]]
name = "secondary"
address = "10.0.0.2:5060"
transprt = "tcp"
weight = "heavy"

[guard]
rate = "fast"
max_sources = 0

[[route]]
name = "uk"
destinations = ["secondary"]

[[route]]
name = "default"
destinations = ["primary", "nowhere"]

[[route]]
name = "last"
destinations = ["primary"]
retry_codes = [503, 603]

[tsl]
ca = "x"
"#;

/// (line, column, path) of each error.
fn places(errs: &[ConfigError]) -> Vec<(Option<usize>, Option<usize>, &str)> {
    errs.iter()
        .map(|e| (e.line, e.column, e.path.as_str()))
        .collect()
}

/// Asserts the errors of `text`, by (line, column, path), in order.
#[track_caller]
fn assert_places(text: &str, expected: &[(Option<usize>, Option<usize>, &str)]) {
    let errs = errors(text);
    assert_eq!(places(&errs), expected, "{errs:#?}");
}

#[test]
fn every_structural_and_semantic_problem_is_reported_in_one_run_with_line_and_column() {
    let errs = errors(MANY_PROBLEMS);
    assert_eq!(
        places(&errs),
        [
            (Some(2), Some(6), "node.id"),
            (Some(4), Some(1), "listen[0]"),
            (Some(18), Some(1), "destination[1].transprt"),
            (Some(19), Some(10), "destination[1].weight"),
            (Some(22), Some(8), "guard.rate"),
            (Some(31), Some(28), "route[1].destinations[1]"),
            (Some(36), Some(21), "route[2].retry_codes[1]"),
            (Some(38), Some(2), "tsl"),
        ],
        "{errs:#?}"
    );
    let message = |path: &str| {
        errs.iter()
            .find(|e| e.path == path)
            .map_or("", |e| e.message.as_str())
    };
    assert!(message("listen[0]").contains("missing field `address`"));
    assert!(message("destination[1].transprt").contains("did you mean `transport`?"));
    assert!(message("destination[1].weight").contains("invalid type: string \"heavy\""));
    assert!(message("guard.rate").contains("\"fast\""));
    assert!(message("route[1].destinations[1]").contains("unknown destination \"nowhere\""));
    assert!(message("route[2].retry_codes[1]").contains("6xx ends the call"));
    assert!(message("tsl").contains("unknown field `tsl`, expected one of `node`"));
}

#[test]
fn a_damaged_section_is_not_judged_on_what_is_left_of_it() {
    // guard.max_sources = 0 is out of range, but [guard] has a structural error: its values
    // are judged once it reads whole, so the run does not report what may be a follow-on.
    let errs = errors(MANY_PROBLEMS);
    assert!(
        !errs.iter().any(|e| e.path == "guard.max_sources"),
        "{errs:#?}"
    );
    let whole = errors(&MANY_PROBLEMS.replace("rate = \"fast\"\n", ""));
    assert!(
        whole.iter().any(|e| e.path == "guard.max_sources"),
        "{whole:#?}"
    );
}

#[test]
fn a_route_naming_a_destination_that_could_not_be_read_is_not_an_unknown_destination() {
    let text = BASE.replace(
        "address = \"10.0.0.2:5060\"",
        "address = \"10.0.0.2:5060\"\nweight = -1",
    );
    let errs = errors(&text);
    assert_eq!(
        places(&errs),
        [(Some(12), Some(10), "destination[1].weight")],
        "{errs:#?}"
    );
    // Not even its name could be read: no reference to a destination is judged.
    let text = BASE.replace("name = \"secondary\"", "name = 2");
    assert_places(&text, &[(Some(10), Some(8), "destination[1].name")]);
}

#[test]
fn rules_are_still_checked_past_a_destination_that_could_not_be_read() {
    // The placeholder for destination[0] compiles with errors of its own (left out), and the
    // rest is compiled far enough to check the listeners routes name.
    assert_places(
        &TIERED
            .replace("address = \"10.0.0.1:5060\"", "address = 5060")
            .replace("source = [\"carrier\"]", "source = [\"carier\"]"),
        &[
            (Some(8), Some(11), "destination[0].address"),
            (Some(26), Some(42), "route[0].match.source[0]"),
        ],
    );
}

#[test]
fn a_route_naming_a_listener_that_could_not_be_read_is_not_an_unknown_listener() {
    assert_places(
        &TIERED.replace("transport = \"udp\"", "transport = \"sctp\""),
        &[(Some(3), Some(13), "listen[0].transport")],
    );
}

#[test]
fn rule_warnings_wait_until_every_rule_entry_reads_whole() {
    // With route "uk" unreadable, "cloud" looks unused and "default" could look shadowed.
    let (result, warnings) = Config::parse_with_warnings(
        &TIERED.replace("tiers = [\"edge\"]", "tiers = \"edge\""),
        FILE,
    );
    let errs = result.unwrap_err().0;
    assert_eq!(places(&errs), [(Some(27), Some(9), "route[0].tiers")]);
    assert!(warnings.is_empty(), "{warnings:#?}");
}

#[test]
fn every_bad_element_of_an_array_is_reported_at_its_own_index() {
    let text = BASE.replace(
        "address = \"10.0.0.1:5060\"",
        "address = \"10.0.0.1:5060\"\nprobe_codes = [200, \"x\", 404, \"y\"]\ntags = [1]",
    );
    assert_places(
        &text,
        &[
            (Some(8), Some(21), "destination[0].probe_codes[1]"),
            (Some(8), Some(31), "destination[0].probe_codes[3]"),
            (Some(9), Some(9), "destination[0].tags[0]"),
        ],
    );
}

#[test]
fn every_missing_key_of_a_table_is_reported_at_its_header() {
    let text = format!("{BASE}\n[[listen]]\nname = \"spare\"\n\n[[destination]]\ntags = []\n");
    let errs = errors(&text);
    let got: Vec<(Option<usize>, Option<usize>, &str, &str)> = errs
        .iter()
        .map(|e| (e.line, e.column, e.path.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (Some(17), Some(1), "listen[1]", "missing field `transport`"),
            (Some(17), Some(1), "listen[1]", "missing field `address`"),
            (Some(20), Some(1), "destination[2]", "missing field `name`"),
            (
                Some(20),
                Some(1),
                "destination[2]",
                "missing field `address`"
            ),
        ],
        "{errs:#?}"
    );
}

#[test]
fn a_missing_key_in_a_nested_table_is_placed_at_that_table() {
    assert_places(
        &TIERED.replace(
            "{ name = \"secondary\", priority = 5 }",
            "{ nam = \"secondary\", priority = 5 }",
        ),
        &[
            (Some(17), Some(23), "group[0].members[1]"),
            (Some(17), Some(25), "group[0].members[1].nam"),
        ],
    );
}

#[test]
fn toml_syntax_error_has_line_column_and_a_hint() {
    let errs = errors(&base_with("[tcp]\nconnect_timeout = 2s"));
    // At the value to quote, not where the parser gave up (after the 2).
    assert_eq!(places(&errs), [(Some(18), Some(19), "-")], "{errs:#?}");
    assert!(
        errs[0]
            .message
            .ends_with("a duration is a string with a unit: write connect_timeout = \"2s\""),
        "{}",
        errs[0]
    );
    let errs = errors(&BASE.replace("name = \"primary\"", "name = primary"));
    assert_eq!(places(&errs), [(Some(6), Some(8), "-")], "{errs:#?}");
    assert!(
        errs[0]
            .message
            .ends_with("a string goes in quotes: write name = \"primary\""),
        "{}",
        errs[0]
    );
}

// ---- listeners ----

#[test]
fn config_without_listener_is_rejected() {
    let text = BASE.replace(
        "[[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:5060\"\n",
        "[node]\nadvertise = \"10.0.0.9:5060\"\n",
    );
    assert_one_error(&text, "listen", None, "no [[listen]] table");
}

#[test]
fn listener_address_must_be_an_ip_not_a_hostname() {
    assert_one_error(
        &BASE.replace("127.0.0.1:5060", "localhost:5060"),
        "listen[0].address",
        Some(3),
        "is not an IP address: a listener binds to a local IP and port",
    );
}

#[test]
fn listener_address_without_port_is_rejected() {
    assert_one_error(
        &BASE.replace("127.0.0.1:5060", "127.0.0.1"),
        "listen[0].address",
        Some(3),
        "has no port",
    );
}

#[test]
fn listener_ipv6_without_brackets_is_rejected() {
    assert_one_error(
        &BASE.replace("127.0.0.1:5060", "::1:5060"),
        "listen[0].address",
        Some(3),
        "without brackets",
    );
}

#[test]
fn duplicate_listener_transport_and_address_is_rejected() {
    assert_one_error(
        &base_with(
            "[[listen]]\nname = \"again\"\ntransport = \"udp\"\naddress = \"127.0.0.1:5060\"",
        ),
        "listen[1].address",
        Some(20),
        "udp 127.0.0.1:5060 is already a listener (listen[0])",
    );
}

#[test]
fn specific_address_under_a_wildcard_listener_on_the_same_port_is_rejected() {
    let text = format!(
        "[node]\nadvertise = \"10.0.0.9:5060\"\n{}",
        base_with("[[listen]]\ntransport = \"udp\"\naddress = \"0.0.0.0:5060\"")
    );
    assert_one_error(
        &text,
        "listen[1].address",
        Some(21),
        "overlaps listen[0] (udp 127.0.0.1:5060)",
    );
}

#[test]
fn duplicate_listener_name_is_rejected() {
    let text = BASE.replace("[[listen]]\n", "[[listen]]\nname = \"carrier\"\n");
    assert_one_error(
        &base_with(
            "[[listen]]\nname = \"carrier\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:5060\"",
        )
        .replace(BASE, &text),
        "listen[1].name",
        Some(19),
        "listener name \"carrier\" is already used by listen[0]",
    );
}

#[test]
fn invalid_listener_name_is_rejected() {
    assert_one_error(
        &BASE.replace("[[listen]]\n", "[[listen]]\nname = \"carrier trunk\"\n"),
        "listen[0].name",
        Some(2),
        "contains ' '",
    );
}

// ---- node ----

#[test]
fn node_id_zero_is_rejected() {
    assert_one_error(
        &base_with("[node]\nid = 0"),
        "node.id",
        Some(18),
        "id = 0 is not a node id: use 1..=65535",
    );
}

#[test]
fn workers_zero_is_rejected() {
    assert_one_error(
        &base_with("[node]\nworkers = 0"),
        "node.workers",
        Some(18),
        "workers = 0 is too small: use 1..=64",
    );
}

#[test]
fn workers_above_64_is_rejected() {
    assert_one_error(
        &base_with("[node]\nworkers = 65"),
        "node.workers",
        Some(18),
        "workers = 65 is too large: use 1..=64",
    );
}

#[test]
fn realtime_priority_is_off_by_default_and_kept_in_range() {
    assert_eq!(parse(&base_with("")).unwrap().realtime_priority, 0);
    assert_eq!(
        parse(&base_with("[node]\nrealtime_priority = 20"))
            .unwrap()
            .realtime_priority,
        20
    );
    assert_one_error(
        &base_with("[node]\nrealtime_priority = 100"),
        "node.realtime_priority",
        Some(18),
        "realtime_priority = 100 is too large: use 0..=99",
    );
}

#[test]
fn topology_key_is_the_built_in_one_by_default_and_at_least_16_characters() {
    assert_eq!(parse(&base_with("")).unwrap().topology_key, None);
    let key = "c0ffee00c0ffee00c0ffee00";
    assert_eq!(
        parse(&base_with(&format!("[node]\ntopology_key = \"{key}\"")))
            .unwrap()
            .topology_key
            .as_deref(),
        Some(key)
    );
    assert_one_error(
        &base_with("[node]\ntopology_key = \"short\""),
        "node.topology_key",
        Some(18),
        "topology_key is 5 characters: use at least 16",
    );
}

#[test]
fn invalid_advertise_address_is_rejected() {
    assert_one_error(
        &base_with("[node]\nadvertise = \"10.0.0.1\""),
        "node.advertise",
        Some(18),
        "has no port",
    );
}

#[test]
fn wildcard_advertise_address_is_rejected() {
    assert_one_error(
        &base_with("[node]\nadvertise = \"0.0.0.0:5060\""),
        "node.advertise",
        Some(18),
        "is a wildcard address that peers cannot send to",
    );
}

#[test]
fn wildcard_listener_without_advertise_is_rejected() {
    assert_one_error(
        &BASE.replace("127.0.0.1:5060", "0.0.0.0:5060"),
        "node.advertise",
        Some(3),
        "advertise is not set and the first listener's address 0.0.0.0:5060 is a wildcard",
    );
}

#[test]
fn wildcard_listener_with_advertise_is_accepted() {
    let c = parse(&format!(
        "[node]\nadvertise = \"203.0.113.10:5060\"\n{}",
        BASE.replace("127.0.0.1:5060", "0.0.0.0:5060")
    ))
    .unwrap();
    assert_eq!(c.advertise, "203.0.113.10:5060");
}

// ---- timers ----

#[test]
fn zero_t1_is_rejected() {
    assert_one_error(
        &base_with("[timers]\nt1 = \"0s\""),
        "timers.t1",
        Some(18),
        "t1 = \"0s\" is too short: use a duration from 1ms to 10s (default 500ms)",
    );
}

#[test]
fn t1_above_10s_is_rejected() {
    assert_one_error(
        &base_with("[timers]\nt1 = \"11s\"\nt2 = \"20s\""),
        "timers.t1",
        Some(18),
        "t1 = \"11s\" is too long",
    );
}

#[test]
fn t2_below_t1_is_rejected() {
    assert_one_error(
        &base_with("[timers]\nt1 = \"2s\"\nt2 = \"1s\""),
        "timers.t2",
        Some(19),
        "t2 = \"1s\" is shorter than t1 = \"2s\"",
    );
}

#[test]
fn default_t2_below_t1_names_the_default_and_the_section_line() {
    assert_one_error(
        &base_with("[timers]\nt1 = \"5s\""),
        "timers.t2",
        Some(17),
        "t2 (not set, default \"4s\") is shorter than t1 = \"5s\"",
    );
}

#[test]
fn zero_t4_is_rejected() {
    assert_one_error(
        &base_with("[timers]\nt4 = \"0ms\""),
        "timers.t4",
        Some(18),
        "t4 = \"0s\" is too short",
    );
}

// ---- limits ----

#[test]
fn max_message_size_below_1024_is_rejected() {
    assert_one_error(
        &base_with("[limits]\nmax_message_size = 100"),
        "limits.max_message_size",
        Some(18),
        "max_message_size = 100 is too small: use 1024..=1048576 (default 65535)",
    );
}

#[test]
fn max_message_size_above_1_mib_is_rejected() {
    assert_one_error(
        &base_with("[limits]\nmax_message_size = 2000000"),
        "limits.max_message_size",
        Some(18),
        "is too large",
    );
}

#[test]
fn max_headers_out_of_range_is_rejected() {
    assert_one_error(
        &base_with("[limits]\nmax_headers = 5"),
        "limits.max_headers",
        Some(18),
        "max_headers = 5 is too small: use 16..=1024",
    );
}

#[test]
fn max_line_length_out_of_range_is_rejected() {
    assert_one_error(
        &base_with("[limits]\nmax_line_length = 100000"),
        "limits.max_line_length",
        Some(18),
        "max_line_length = 100000 is too large: use 256..=65535",
    );
}

#[test]
fn max_line_length_above_max_message_size_is_rejected() {
    assert_one_error(
        &base_with("[limits]\nmax_message_size = 2048\nmax_line_length = 4096"),
        "limits.max_line_length",
        Some(19),
        "max_line_length = 4096 is larger than max_message_size = 2048",
    );
}

#[test]
fn max_via_out_of_range_is_rejected() {
    assert_one_error(
        &base_with("[limits]\nmax_via = 1"),
        "limits.max_via",
        Some(18),
        "max_via = 1 is too small: use 2..=256",
    );
}

// ---- tcp ----

#[test]
fn zero_tcp_idle_timeout_is_rejected() {
    assert_one_error(
        &base_with("[tcp]\nidle_timeout = \"0s\""),
        "tcp.idle_timeout",
        Some(18),
        "idle_timeout = \"0s\" is too short: use a duration from 1s to 24h (default 10min)",
    );
}

#[test]
fn shutdown_grace_defaults_to_25s_and_is_bounded() {
    assert_eq!(parse(BASE).unwrap().shutdown_grace, Duration::from_secs(25));
    let c = parse(&base_with("[node]\nshutdown_grace = \"0s\"")).unwrap();
    assert_eq!(c.shutdown_grace, Duration::ZERO, "0s: exit at once");
    assert_one_error(
        &base_with("[node]\nshutdown_grace = \"11min\""),
        "node.shutdown_grace",
        Some(18),
        "shutdown_grace = \"11min\" is too long: use a duration from 0s to 10min (default 25s)",
    );
}

#[test]
fn zero_tcp_max_connections_is_rejected() {
    assert_one_error(
        &base_with("[tcp]\nmax_connections = 0"),
        "tcp.max_connections",
        Some(18),
        "max_connections = 0 is too small",
    );
}

#[test]
fn zero_tcp_connect_timeout_is_rejected() {
    assert_one_error(
        &base_with("[tcp]\nconnect_timeout = \"0s\""),
        "tcp.connect_timeout",
        Some(18),
        "connect_timeout = \"0s\" is too short",
    );
}

// ---- rules, through the config ----

#[test]
fn rule_errors_carry_file_and_line_of_the_offending_key() {
    assert_one_error(
        &BASE.replace("10.0.0.2:5060", "10.0.0.2"),
        "destination[1].address",
        Some(11),
        "has no port",
    );
}

#[test]
fn unknown_destination_in_multiline_route_points_at_the_element_line() {
    let text = BASE.replace(
        "destinations = [\"primary\", \"secondary\"]",
        "destinations = [\n  \"primary\",\n  \"secundary\",\n]",
    );
    assert_one_error(
        &text,
        "route[0].destinations[1]",
        Some(17),
        "did you mean \"secondary\"?",
    );
}

#[test]
fn config_without_route_is_rejected_at_path_route() {
    let text = BASE.replace(
        "[[route]]\nname = \"default\"\ndestinations = [\"primary\", \"secondary\"]\n",
        "",
    );
    assert_one_error(
        &text,
        "route",
        None,
        "no [[route]] table: every call needs a route",
    );
}

#[test]
fn transport_of_a_destination_is_read() {
    let c = parse(&BASE.replace(
        "address = \"10.0.0.2:5060\"",
        "address = \"10.0.0.2:5060\"\ntransport = \"tcp\"",
    ))
    .unwrap();
    assert_eq!(c.router.rules.destinations[1].transport, TransportSpec::Tcp);
}

#[test]
fn several_errors_are_all_reported_in_file_order() {
    // Routes come before destinations in this file; errors must follow the file, not the
    // order sections are checked in.
    let text = r#"[node]
id = 0

[[route]]
name = "default"
destinations = ["primary", "backup"]
retry_codes = [503, 603]

[[listen]]
transport = "udp"
address = "127.0.0.1"

[[destination]]
name = "primary"
address = "10.0.0.1:5060"
provisional_timeout = "0s"

[timers]
t1 = "20s"
"#;
    let errs = errors(text);
    let got: Vec<(Option<usize>, &str)> = errs.iter().map(|e| (e.line, e.path.as_str())).collect();
    assert_eq!(
        got,
        [
            (Some(2), "node.id"),
            (Some(6), "route[0].destinations[1]"),
            (Some(7), "route[0].retry_codes[1]"),
            (Some(11), "listen[0].address"),
            (Some(16), "destination[0].provisional_timeout"),
            (Some(19), "timers.t1"),
        ],
        "{errs:#?}"
    );
    assert!(errs.iter().all(|e| e.file == FILE));
    let shown = ConfigErrors(errs).to_string();
    assert_eq!(shown.lines().count(), 6);
    assert!(
        shown.starts_with("test.toml:2:6: node.id: id = 0"),
        "{shown}"
    );
}

#[test]
fn errors_in_inline_tables_and_dotted_keys_still_get_lines() {
    let text = r#"node.id = 0
listen = [{ transport = "udp", address = "127.0.0.1:5060" }]
destination = [
  { name = "primary", address = "10.0.0.1" },
]
route = [{ name = "default", destinations = ["primary"] }]
"#;
    let errs = errors(text);
    let got: Vec<(Option<usize>, &str)> = errs.iter().map(|e| (e.line, e.path.as_str())).collect();
    assert_eq!(
        got,
        [(Some(1), "node.id"), (Some(4), "destination[0].address")],
        "{errs:#?}"
    );
}

// ---- files ----

#[test]
fn load_of_a_missing_file_reports_path_dash_and_the_io_error() {
    let path = Path::new("/nonexistent/pointsman/missing.toml");
    let errs = Config::load(path).unwrap_err().0;
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].file, "/nonexistent/pointsman/missing.toml");
    assert_eq!(errs[0].path, "-");
    assert_eq!(errs[0].line, None);
    assert!(
        errs[0].message.starts_with("cannot read the config file: "),
        "{}",
        errs[0]
    );
    assert!(errs[0].message.contains("No such file"), "{}", errs[0]);
}

#[test]
fn load_names_the_file_in_errors() {
    let path =
        std::env::temp_dir().join(format!("pointsman-config-test-{}.toml", std::process::id()));
    std::fs::write(&path, base_with("[node]\nid = 0")).unwrap();
    let result = Config::load(&path);
    std::fs::remove_file(&path).unwrap();
    let errs = result.unwrap_err().0;
    assert_eq!(errs[0].file, path.display().to_string());
    assert_eq!(errs[0].line, Some(18));
}

#[test]
fn config_error_display_shows_file_line_column_path_and_message() {
    let e = ConfigError {
        file: "pointsman.toml".into(),
        line: Some(7),
        column: Some(11),
        path: "destination[0].address".into(),
        message: "has no port".into(),
    };
    assert_eq!(
        e.to_string(),
        "pointsman.toml:7:11: destination[0].address: has no port"
    );
    let e = ConfigError {
        column: None,
        ..e.clone()
    };
    assert_eq!(
        e.to_string(),
        "pointsman.toml:7: destination[0].address: has no port"
    );
    let e = ConfigError { line: None, ..e };
    assert_eq!(
        e.to_string(),
        "pointsman.toml: destination[0].address: has no port"
    );
}

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");

#[test]
fn every_example_config_validates_without_warnings() {
    let mut checked = 0;
    for entry in std::fs::read_dir(EXAMPLES).expect("examples/ exists") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let (result, warnings) = Config::load_with_warnings(&path);
            if let Err(errs) = result {
                panic!("{} does not validate:\n{errs}", path.display());
            }
            assert!(
                warnings.is_empty(),
                "{} has warnings: {warnings:#?}",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 1, "no .toml file in {EXAMPLES}");
}

#[test]
fn two_clouds_example_fails_over_from_primary_to_secondary() {
    let c = Config::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/two-clouds.toml"
    )))
    .unwrap();
    let transports: Vec<_> = c.listeners.iter().map(|l| l.transport).collect();
    assert_eq!(transports, [ListenTransport::Udp, ListenTransport::Tcp]);
    assert!(c
        .listeners
        .iter()
        .all(|l| l.address == "127.0.0.1:5060".parse().unwrap()));
    let rules = &c.router.rules;
    let route = rules.route(rules.route_for(&Default::default()).unwrap());
    assert_eq!(route.name, "default");
    let names: Vec<_> = route
        .destinations
        .iter()
        .map(|&d| rules.destination(d))
        .map(|d| {
            (
                d.name.as_str(),
                d.host.as_str(),
                d.port,
                d.transport,
                d.provisional_timeout,
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            (
                "primary",
                "127.0.0.1",
                5070,
                TransportSpec::Udp,
                Duration::from_secs(3)
            ),
            (
                "secondary",
                "127.0.0.1",
                5080,
                TransportSpec::Udp,
                Duration::from_secs(3)
            ),
        ]
    );
}

// ---- groups, tiers, match, warnings ----

/// BASE's listener and destinations with groups and a tiered route. Line numbers matter.
const TIERED: &str = r#"[[listen]]
name = "carrier"
transport = "udp"
address = "127.0.0.1:5060"

[[destination]]
name = "primary"
address = "10.0.0.1:5060"

[[destination]]
name = "secondary"
address = "10.0.0.2:5060"
weight = 3

[[group]]
name = "edge"
members = ["primary", { name = "secondary", priority = 5 }]

[[group]]
name = "cloud"
strategy = "weighted"
members = ["secondary", "primary"]

[[route]]
name = "uk"
match = { to_prefix = ["+44"], source = ["carrier"] }
tiers = ["edge"]
survivability = { reject = 480 }

[[route]]
name = "default"
tiers = ["cloud"]
"#;

#[test]
fn groups_and_tiers_are_compiled_into_the_router_and_the_flat_rules() {
    let c = parse(TIERED).unwrap();
    assert!(c.warnings.is_empty(), "{:#?}", c.warnings);
    let r = &c.router;
    assert_eq!(r.groups.len(), 2);
    assert_eq!(
        r.groups[1].strategy,
        routing_rules::spec::Strategy::Weighted
    );
    // Flat view: edge by priority; cloud by weight (secondary has weight 3).
    assert_eq!(
        c.router.rules.routes[0].destinations,
        vec![DestId(0), DestId(1)]
    );
    assert_eq!(
        c.router.rules.routes[1].destinations,
        vec![DestId(1), DestId(0)]
    );
    let uk = routing_rules::Call {
        to_user: Some("+44 20 7946 0000"),
        listener: Some("carrier"),
        ..Default::default()
    };
    assert_eq!(r.route(r.route_for(&uk).unwrap()).name, "uk");
    let elsewhere = routing_rules::Call {
        listener: Some("carrier"),
        ..uk
    };
    let elsewhere = routing_rules::Call {
        to_user: Some("15550100"),
        ..elsewhere
    };
    assert_eq!(r.route(r.route_for(&elsewhere).unwrap()).name, "default");
}

#[test]
fn unknown_group_member_points_at_its_line() {
    assert_one_error(
        &TIERED.replace(
            "members = [\"secondary\", \"primary\"]",
            "members = [\"secondary\", \"primry\"]",
        ),
        "group[1].members[1]",
        Some(22),
        "unknown destination \"primry\": did you mean \"primary\"?",
    );
}

#[test]
fn misspelt_key_in_a_member_table_is_a_structural_error_with_a_suggestion() {
    assert_one_error(
        &TIERED.replace("priority = 5", "priorty = 5"),
        "group[0].members[1].priorty",
        Some(17),
        "unknown field `priorty`, expected one of `name`, `priority`, `weight`; did you mean `priority`?",
    );
}

#[test]
fn member_of_the_wrong_type_says_what_a_member_is() {
    assert_one_error(
        &TIERED.replace(
            "members = [\"secondary\", \"primary\"]",
            "members = [\"secondary\", 2]",
        ),
        "group[1].members[1]",
        Some(22),
        "expected a destination name, or a table like { name = \"edge-a1\", priority = 10 }",
    );
}

#[test]
fn unknown_strategy_is_a_structural_error() {
    assert_one_error(
        &TIERED.replace("strategy = \"weighted\"", "strategy = \"round-robin\""),
        "group[1].strategy",
        Some(21),
        "unknown variant `round-robin`, expected one of `priority`, `weighted`, `hash`, `parallel`",
    );
}

#[test]
fn match_source_must_name_a_listener() {
    assert_one_error(
        &TIERED.replace("source = [\"carrier\"]", "source = [\"carier\"]"),
        "route[0].match.source[0]",
        Some(26),
        "unknown listener \"carier\": did you mean \"carrier\"?",
    );
}

#[test]
fn match_source_without_close_name_lists_the_listeners() {
    assert_one_error(
        &TIERED.replace("source = [\"carrier\"]", "source = [\"trunk-b\"]"),
        "route[0].match.source[0]",
        Some(26),
        "(known: \"carrier\"); give the listener name = \"trunk-b\"",
    );
}

#[test]
fn survivability_error_points_at_its_line() {
    assert_one_error(
        &TIERED.replace("reject = 480", "reject = 200"),
        "route[0].survivability.reject",
        Some(28),
        "reject = 200 is not a rejection",
    );
}

#[test]
fn shadowed_route_is_a_warning_with_file_and_line_not_an_error() {
    let text = TIERED.replace(
        "[[route]]\nname = \"uk\"",
        "[[route]]\nname = \"all\"\ntiers = [\"edge\"]\n\n[[route]]\nname = \"uk\"",
    );
    let (result, warnings) = Config::parse_with_warnings(&text, FILE);
    let c = result.expect("warnings do not fail the config");
    assert_eq!(c.warnings, warnings);
    let got: Vec<(&str, Option<usize>, &str)> = warnings
        .iter()
        .map(|w| (w.file.as_str(), w.line, w.path.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (FILE, Some(30), "route[1].match"),
            (FILE, Some(35), "route[2].name")
        ]
    );
    let w = &warnings[0];
    assert!(
        w.message
            .contains("route \"uk\" can never match: route \"all\" (route[0])"),
        "{w}"
    );
}

#[test]
fn warnings_are_reported_even_when_another_section_has_errors() {
    let text = format!(
        "{}\n[[group]]\nname = \"unused\"\nmembers = [\"primary\"]\n",
        TIERED
    )
    .replace("address = \"127.0.0.1:5060\"", "address = \"127.0.0.1\"");
    let (result, warnings) = Config::parse_with_warnings(&text, FILE);
    let errs = result.unwrap_err().0;
    assert_eq!(errs[0].path, "listen[0].address");
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert_eq!(warnings[0].path, "group[2].name");
    assert_eq!(warnings[0].line, Some(35));
}

#[test]
fn three_layer_dr_example_sends_the_emergency_did_through_three_tiers_then_the_lifeboat() {
    let c = Config::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/three-layer-dr.toml"
    )))
    .unwrap();
    assert!(c.warnings.is_empty(), "{:#?}", c.warnings);
    let r = &c.router;
    let call = routing_rules::Call {
        to_user: Some("+15550100911"),
        listener: Some("carrier"),
        ..Default::default()
    };
    let route = r.route_for(&call).unwrap();
    assert_eq!(r.route(route).name, "emergency");
    let plan = r.plan(route, &call, &|_| true);
    let tiers: Vec<&str> = plan
        .tiers
        .iter()
        .map(|t| r.group(t.group.unwrap()).name.as_str())
        .collect();
    assert_eq!(tiers, ["site-a", "site-b", "cloud-byoc"]);
    let edge = r.rules.destination_by_name("edge-a1").unwrap();
    assert_eq!(
        r.destination(edge).caps,
        routing_rules::Caps {
            max_calls: Some(120),
            max_cps: Some(10.0)
        }
    );
    let plan = r.plan(route, &call, &|d| r.destination(d).name == "lifeboat-ivr");
    assert!(matches!(
        plan.survivability,
        Some(routing_rules::Survival::Group(_))
    ));
    let other = routing_rules::Call {
        to_user: Some("+15550100912"),
        ..call
    };
    assert_eq!(r.route(r.route_for(&other).unwrap()).name, "default");
}

#[test]
fn hot_hot_example_forks_every_call_to_both_clouds() {
    let c = Config::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/hot-hot.toml"
    )))
    .unwrap();
    let r = &c.router;
    let call = routing_rules::Call::default();
    let plan = r.plan(r.route_for(&call).unwrap(), &call, &|_| true);
    assert_eq!(plan.tiers.len(), 1);
    assert!(plan.tiers[0].parallel);
    assert_eq!(plan.tiers[0].members, [DestId(0), DestId(1)]);
}

#[test]
fn hot_hot_media_example_relays_the_media_of_its_parallel_tier() {
    let (result, warnings) = Config::load_with_warnings(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/hot-hot-media.toml"
    )));
    let c = result.unwrap();
    assert!(warnings.is_empty(), "{warnings:#?}");
    let r = &c.router;
    let call = routing_rules::Call::default();
    let id = r.route_for(&call).unwrap();
    let plan = r.plan(id, &call, &|_| true);
    assert_eq!(plan.tiers.len(), 2, "the clouds, then the lifeboat");
    assert!(plan.tiers[0].parallel);
    assert_eq!(plan.tiers[0].members, [DestId(0), DestId(1)]);
    let route = r.rules.route(id);
    assert_eq!(route.media, routing_rules::spec::MediaMode::Relay);
    assert_eq!(route.media_timeout, Some(Duration::from_secs(30)));
    let m = c.media.unwrap();
    let loopback: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    assert_eq!((m.carrier_ip, m.cloud_ip), (loopback, loopback));
    // Room for hot-hot calls of two clouds: 6 ports each.
    assert!(u32::from(m.port_max - m.port_min) + 1 >= 6 * 30);
    assert_eq!(m.silence, Some(Duration::from_millis(60)));
    assert!(!m.strict_source);
}

#[test]
fn admin_defaults_to_loopback_9060_enabled_without_token() {
    let c = parse(BASE).unwrap();
    assert_eq!(
        c.admin,
        AdminConfig {
            enabled: true,
            listen: "127.0.0.1:9060".parse().unwrap(),
            token: None,
        }
    );
}

#[test]
fn admin_values_are_kept_and_the_token_never_shows_in_debug() {
    let c = parse(&base_with(
        "[admin]\nenabled = true\nlisten = \"0.0.0.0:9100\"\ntoken = \"s3cret-s3cret-s3cret\"",
    ))
    .unwrap();
    assert!(c.admin.enabled);
    assert_eq!(c.admin.listen, "0.0.0.0:9100".parse().unwrap());
    assert_eq!(c.admin.token.as_deref(), Some("s3cret-s3cret-s3cret"));
    let shown = format!("{c:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
    let spec: ConfigFile =
        toml::from_str(&base_with("[admin]\ntoken = \"s3cret-s3cret-s3cret\"")).unwrap();
    assert!(!format!("{spec:?}").contains("s3cret"));
}

#[test]
fn admin_on_ipv6_or_mapped_loopback_needs_no_token() {
    for listen in ["[::1]:9060", "[::ffff:127.0.0.2]:9060", "127.3.4.5:19060"] {
        let c = parse(&base_with(&format!("[admin]\nlisten = \"{listen}\"")))
            .unwrap_or_else(|e| panic!("{listen}: {e}"));
        assert_eq!(c.admin.listen, listen.parse().unwrap());
    }
}

#[test]
fn admin_off_loopback_without_token_is_rejected_at_the_listen_line() {
    assert_one_error(
        &base_with("[admin]\nlisten = \"0.0.0.0:9060\""),
        "admin.token",
        Some(18),
        "admin.listen = \"0.0.0.0:9060\" is not a loopback address, so the admin API needs a \
         token: add token = \"...\" to [admin]",
    );
    assert_one_error(
        &base_with("[admin]\nlisten = \"[2001:db8::1]:9060\""),
        "admin.token",
        Some(18),
        "or listen on 127.0.0.1",
    );
}

#[test]
fn disabled_admin_off_loopback_needs_no_token() {
    let c = parse(&base_with(
        "[admin]\nenabled = false\nlisten = \"0.0.0.0:9060\"",
    ))
    .unwrap();
    assert!(!c.admin.enabled);
}

#[test]
fn admin_listen_must_be_an_ip_and_a_fixed_port() {
    assert_one_error(
        &base_with("[admin]\nlisten = \"localhost:9060\""),
        "admin.listen",
        Some(18),
        "listen = \"localhost:9060\" is not an IP address: the admin API binds to a local IP \
         and port, e.g. \"127.0.0.1:9060\"",
    );
    let errs = errors(&base_with("[admin]\nlisten = \"127.0.0.1\""));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(
        (errs[0].path.as_str(), errs[0].line),
        ("admin.listen", Some(18))
    );
    assert_one_error(
        &base_with("[admin]\nlisten = \"127.0.0.1:0\""),
        "admin.listen",
        Some(18),
        "listen = \"127.0.0.1:0\" has port 0",
    );
}

#[test]
fn admin_listen_on_a_tcp_listeners_port_is_rejected() {
    let tcp = BASE.replace("transport = \"udp\"", "transport = \"tcp\"");
    assert_one_error(
        &format!("{tcp}\n[admin]\nlisten = \"127.0.0.1:5060\"\n"),
        "admin.listen",
        Some(18),
        "listen = \"127.0.0.1:5060\" takes the port of listen[0] (tcp 127.0.0.1:5060)",
    );
    assert_one_error(
        &format!("{tcp}\n[admin]\nlisten = \"0.0.0.0:5060\"\ntoken = \"0123456789abcdef\"\n"),
        "admin.listen",
        Some(18),
        "takes the port of listen[0]",
    );
    // A UDP listener on the same port is no conflict.
    assert!(parse(&base_with("[admin]\nlisten = \"127.0.0.1:5060\"")).is_ok());
}

#[test]
fn admin_token_must_be_long_visible_ascii() {
    assert_one_error(
        &base_with("[admin]\ntoken = \"\""),
        "admin.token",
        Some(18),
        "token is empty",
    );
    assert_one_error(
        &base_with("[admin]\ntoken = \"short\""),
        "admin.token",
        Some(18),
        "token is 5 characters, too short to be hard to guess: use at least 16",
    );
    for bad in [
        "has a space in it 0123",
        "tab\\there-0123456789",
        "ünïcödé-0123456789",
    ] {
        assert_one_error(
            &base_with(&format!("[admin]\ntoken = \"{bad}\"")),
            "admin.token",
            Some(18),
            "use visible ASCII only",
        );
    }
}

#[test]
fn unknown_admin_key_is_rejected_with_a_suggestion() {
    let errs = errors(&base_with("[admin]\ntokn = \"0123456789abcdef\""));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].path, "admin.tokn");
    assert_eq!(errs[0].line, Some(18));
    assert!(
        errs[0].message.contains("did you mean `token`?"),
        "{}",
        errs[0]
    );
}

// ---- [health] and the destinations' probe keys ----

#[test]
fn health_defaults_to_probes_from_the_listener_passive_on_and_retry_after_1s_to_300s() {
    let c = parse(BASE).unwrap();
    assert_eq!(
        c.health,
        pointsman_protocol::health::HealthConfig {
            source: "127.0.0.1:0".parse().unwrap(),
            from_listener: true,
            passive: true,
            retry_after_min: Duration::from_secs(1),
            retry_after_max: Duration::from_secs(300),
            passive_hold: Duration::from_secs(30),
            passive_hold_max: Duration::from_secs(300),
        }
    );
    let h = &c.router.rules.destinations[0].health;
    assert_eq!(*h, routing_rules::HealthSettings::default());
}

#[test]
fn health_values_are_kept_and_source_takes_ip_or_ip_port() {
    for (source, want) in [
        ("10.0.0.5", "10.0.0.5:0"),
        ("10.0.0.5:5062", "10.0.0.5:5062"),
        ("2001:db8::5", "[2001:db8::5]:0"),
        ("[2001:db8::5]:5062", "[2001:db8::5]:5062"),
    ] {
        let c = parse(&base_with(&format!(
            "[health]\nsource = \"{source}\"\npassive = false\nretry_after_min = \"5s\"\n\
             retry_after_max = \"10min\""
        )))
        .unwrap();
        assert_eq!(
            c.health.source,
            want.parse::<SocketAddr>().unwrap(),
            "{source}"
        );
        assert!(
            !c.health.from_listener,
            "a source of their own for every probe"
        );
        assert!(!c.health.passive);
        assert_eq!(c.health.retry_after_min, Duration::from_secs(5));
        assert_eq!(c.health.retry_after_max, Duration::from_secs(600));
    }
}

#[test]
fn health_source_must_be_an_ip() {
    assert_one_error(
        &base_with("[health]\nsource = \"edge-a.example.net\""),
        "health.source",
        Some(18),
        "source = \"edge-a.example.net\" is neither an IP nor ip:port: probes leave from this \
         node's own unicast IP",
    );
    assert_one_error(
        &base_with("[health]\nsource = \"edge-a.example.net:5062\""),
        "health.source",
        Some(18),
        "is not an IP address",
    );
}

#[test]
fn health_source_on_a_udp_listener_port_is_rejected() {
    assert_one_error(
        &base_with("[health]\nsource = \"127.0.0.1:5060\""),
        "health.source",
        Some(18),
        "source = \"127.0.0.1:5060\" takes the port of listen[0] (udp 127.0.0.1:5060)",
    );
    assert!(parse(&base_with("[health]\nsource = \"127.0.0.1:5062\"")).is_ok());
}

#[test]
fn retry_after_max_below_min_is_rejected() {
    assert_one_error(
        &base_with("[health]\nretry_after_min = \"30s\"\nretry_after_max = \"10s\""),
        "health.retry_after_max",
        Some(19),
        "retry_after_max = \"10s\" is shorter than retry_after_min = \"30s\"",
    );
    assert_one_error(
        &base_with("[health]\nretry_after_min = \"10min\""),
        "health.retry_after_min",
        Some(18),
        "retry_after_max (not set, default \"5min\") is shorter than retry_after_min = \"10min\"",
    );
}

#[test]
fn retry_after_bounds_out_of_range_are_rejected() {
    assert_one_error(
        &base_with("[health]\nretry_after_min = \"500ms\""),
        "health.retry_after_min",
        Some(18),
        "retry_after_min = \"500ms\" is too short: use a duration from 1s to 1h (default 1s)",
    );
    assert_one_error(
        &base_with("[health]\nretry_after_max = \"2d\""),
        "health.retry_after_max",
        Some(18),
        "too long",
    );
}

#[test]
fn unknown_health_key_is_rejected_with_a_suggestion() {
    let errs = errors(&base_with("[health]\npasive = true"));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].path, "health.pasive");
    assert!(
        errs[0].message.contains("did you mean `passive`?"),
        "{}",
        errs[0]
    );
}

#[test]
fn destination_probe_keys_reach_the_router() {
    let c = parse(&BASE.replace(
        "name = \"primary\"\naddress = \"10.0.0.1:5060\"",
        "name = \"primary\"\naddress = \"10.0.0.1:5060\"\nprobe_interval = \"5s\"\n\
         probe_timeout = \"1s\"\nfailure_threshold = 2\nrecovery_threshold = 4\n\
         probe_codes = [200, 405]\nprobe = true",
    ))
    .unwrap();
    let h = &c.router.rules.destinations[0].health;
    assert!(h.probe);
    assert_eq!(h.interval, Duration::from_secs(5));
    assert_eq!(h.timeout, Duration::from_secs(1));
    assert_eq!((h.failure_threshold, h.recovery_threshold), (2, 4));
    assert_eq!(h.codes.0, vec![200, 405]);
    assert!(!c.router.rules.destinations[1].health.codes.contains(405));
}

#[test]
fn destination_probe_key_error_carries_its_line() {
    assert_one_error(
        &BASE.replace(
            "name = \"secondary\"\naddress = \"10.0.0.2:5060\"",
            "name = \"secondary\"\naddress = \"10.0.0.2:5060\"\nprobe_codes = [200, 503]",
        ),
        "destination[1].probe_codes[1]",
        Some(12),
        "503 always counts as a failure",
    );
}

mod tls {
    //! `[[listen]] transport = "tls"`, TLS destinations and `[tls]`: keys, defaults and the
    //! checks of the files they name.
    use super::*;
    use crate::transport::tls::tests::{dir, Ca};

    /// A config with a UDP and a TLS listener and one TLS destination, in `dir` with its PEM
    /// files (named relative to the config file).
    fn tls_config(
        dir: &std::path::Path,
        listener_extra: &str,
        dest_extra: &str,
    ) -> std::path::PathBuf {
        let ca = Ca::new("ca");
        let (cert, key) = ca.issue(&["localhost", "127.0.0.1"], false);
        std::fs::write(dir.join("server.pem"), cert).unwrap();
        std::fs::write(dir.join("server.key"), key).unwrap();
        std::fs::write(dir.join("ca.pem"), &ca.pem).unwrap();
        let text = format!(
            "[[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:5060\"\n\n\
             [[listen]]\ntransport = \"tls\"\naddress = \"127.0.0.1:5061\"\n\
             cert = \"server.pem\"\nkey = \"server.key\"\n{listener_extra}\n\
             [[destination]]\nname = \"cloud\"\naddress = \"10.0.0.1:5061\"\n\
             transport = \"tls\"\nca = \"ca.pem\"\n{dest_extra}\n\
             [[route]]\nname = \"default\"\ndestinations = [\"cloud\"]\n"
        );
        let path = dir.join("pointsman.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn tls_files_are_relative_to_the_config_file_and_defaults_apply() {
        let d = dir();
        let c = Config::load(&tls_config(&d, "", "")).unwrap();
        assert_eq!(c.listeners[0].tls, None);
        let files = c.listeners[1].tls.as_ref().unwrap();
        assert_eq!(c.listeners[1].transport, ListenTransport::Tls);
        assert_eq!(c.listeners[1].name, "tls:127.0.0.1:5061");
        assert_eq!(files.cert, d.join("server.pem"));
        assert_eq!(files.key, d.join("server.key"));
        assert_eq!(files.client_ca, None);
        assert_eq!(c.tls.handshake_timeout, Duration::from_secs(5));
        assert_eq!(c.tls.ca, None);
        let dest = c.tls.destinations[0].as_ref().unwrap();
        assert_eq!(dest.ca, Some(d.join("ca.pem")));
        assert_eq!(
            dest.server_name, "10.0.0.1",
            "defaults to the host of address"
        );
        assert_eq!(c.router.rules.destinations[0].transport, TransportSpec::Tls);
    }

    #[test]
    fn mutual_tls_and_server_name_keys_are_kept() {
        let d = dir();
        let path = tls_config(
            &d,
            "client_ca = \"ca.pem\"\n",
            "server_name = \"sbc.example.net\"\nclient_cert = \"server.pem\"\n\
             client_key = \"server.key\"\n",
        );
        let c = Config::load(&path).unwrap();
        assert_eq!(
            c.listeners[1].tls.as_ref().unwrap().client_ca,
            Some(d.join("ca.pem"))
        );
        let dest = c.tls.destinations[0].as_ref().unwrap();
        assert_eq!(dest.server_name, "sbc.example.net");
        assert_eq!(dest.client_cert, Some(d.join("server.pem")));
    }

    #[test]
    fn a_key_that_does_not_match_its_certificate_is_reported_at_its_line() {
        let d = dir();
        let path = tls_config(&d, "", "");
        let (_, other) = Ca::new("other").issue(&["localhost"], false);
        std::fs::write(d.join("server.key"), other).unwrap();
        let errs = Config::load(&path).unwrap_err().0;
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert_eq!(errs[0].path, "listen[1].key");
        assert_eq!(errs[0].line, Some(9));
        assert!(errs[0].message.contains("does not match"), "{}", errs[0]);
    }

    #[test]
    fn unreadable_files_are_reported_with_their_keys() {
        let d = dir();
        let path = tls_config(&d, "client_ca = \"nowhere.pem\"\n", "");
        std::fs::remove_file(d.join("ca.pem")).unwrap();
        let errs = Config::load(&path).unwrap_err().0;
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["listen[1].client_ca", "destination[0].ca"],
            "{errs:#?}"
        );
        assert!(errs.iter().all(|e| e.message.contains("cannot read")));
    }

    #[test]
    fn a_tls_listener_needs_cert_and_key() {
        let errs = errors(&BASE.replace("transport = \"udp\"", "transport = \"tls\""));
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["listen[0].cert", "listen[0].key"], "{errs:#?}");
        assert_eq!(errs[0].line, Some(2), "shown at the transport");
        assert!(errs[0].message.contains("needs cert"), "{}", errs[0]);
    }

    #[test]
    fn tls_keys_on_a_udp_listener_are_rejected() {
        assert_one_error(
            &BASE.replace(
                "address = \"127.0.0.1:5060\"",
                "address = \"127.0.0.1:5060\"\ncert = \"x.pem\"",
            ),
            "listen[0].cert",
            Some(4),
            "applies only to TLS listeners",
        );
    }

    #[test]
    fn tls_keys_on_a_udp_destination_are_rejected() {
        assert_one_error(
            &BASE.replace(
                "address = \"10.0.0.1:5060\"",
                "address = \"10.0.0.1:5060\"\nca = \"ca.pem\"",
            ),
            "destination[0].ca",
            Some(8),
            "applies only to TLS destinations",
        );
    }

    #[test]
    fn a_client_cert_without_its_key_is_rejected() {
        let d = dir();
        let path = tls_config(&d, "", "client_cert = \"server.pem\"\n");
        let errs = Config::load(&path).unwrap_err().0;
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert_eq!(errs[0].path, "destination[0].client_key");
    }

    #[test]
    fn a_tls_destination_needs_a_ca() {
        let errs = errors(&BASE.replace(
            "address = \"10.0.0.1:5060\"",
            "address = \"10.0.0.1:5061\"\ntransport = \"tls\"",
        ));
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert_eq!(errs[0].path, "destination[0].ca");
        assert_eq!(errs[0].line, Some(5), "shown at the destination's table");
        assert!(errs[0].message.contains("[tls] ca"), "{}", errs[0]);
    }

    #[test]
    fn a_tls_destination_is_not_asked_for_a_ca_when_the_tls_ca_could_not_be_read() {
        let text = base_with("[tls]\nca = [\"ca.pem\"]").replace(
            "address = \"10.0.0.1:5060\"",
            "address = \"10.0.0.1:5061\"\ntransport = \"tls\"",
        );
        let errs = errors(&text);
        assert_eq!(
            super::places(&errs),
            [(Some(19), Some(6), "tls.ca")],
            "{errs:#?}"
        );
    }

    #[test]
    fn tcp_and_tls_on_one_port_are_rejected() {
        let text = format!(
            "{BASE}\n[[listen]]\ntransport = \"tcp\"\naddress = \"127.0.0.1:5061\"\n\n\
             [[listen]]\ntransport = \"tls\"\naddress = \"127.0.0.1:5061\"\ncert = \"c\"\nkey = \"k\"\n"
        );
        let errs = errors(&text);
        assert!(
            errs.iter()
                .any(|e| e.path == "listen[2].address" && e.message.contains("already a listener")),
            "{errs:#?}"
        );
    }

    #[test]
    fn handshake_timeout_out_of_range_is_rejected() {
        assert_one_error(
            &base_with("[tls]\nhandshake_timeout = \"10ms\""),
            "tls.handshake_timeout",
            Some(18),
            "too short",
        );
    }
}

#[test]
fn listen_allow_lists_are_parsed_and_a_bad_network_is_named() {
    let ok = parse(&BASE.replace(
        "address = \"127.0.0.1:5060\"\n",
        "address = \"127.0.0.1:5060\"\nallow = [\"192.0.2.0/24\", \"2001:db8::/32\", \"198.51.100.7\"]\n",
    ))
    .unwrap();
    let acl = &ok.listeners[0].acl;
    assert!(acl.admits("192.0.2.9".parse().unwrap()));
    assert!(!acl.admits("203.0.113.1".parse().unwrap()));
    assert_one_error(
        &BASE.replace(
            "address = \"127.0.0.1:5060\"\n",
            "address = \"127.0.0.1:5060\"\nallow = [\"192.0.2.0/24\", \"10.0.0.0/40\"]\n",
        ),
        "listen[0].allow[1]",
        Some(4),
        "prefix length",
    );
    assert_one_error(
        &BASE.replace(
            "address = \"127.0.0.1:5060\"\n",
            "address = \"127.0.0.1:5060\"\nallow = []\n",
        ),
        "listen[0].allow",
        Some(4),
        "drop everything",
    );
}

#[test]
fn guard_defaults_and_errors() {
    let g = parse(BASE).unwrap().guard;
    assert_eq!(g, pointsman_protocol::GuardConfig::default());
    let custom = parse(&format!(
        "{BASE}\n[guard]\nrate = 20.0\nmax_calls = 5000\nretry_after = \"30s\"\n"
    ))
    .unwrap()
    .guard;
    assert_eq!(
        (custom.rate, custom.burst, custom.max_calls),
        (20.0, 40.0, 5000)
    );
    assert_eq!(custom.retry_after, Duration::from_secs(30));
    for (key, value, phrase) in [
        ("rate", "0.0", "above 0"),
        ("burst", "0.5", "at least 1"),
        ("overload_backlog", "1.5", "fraction"),
        ("max_calls", "0", "too small"),
        ("retry_after", "\"1500ms\"", "whole seconds"),
        ("block_user_agents", "[\"\"]", "empty pattern"),
    ] {
        let errs = errors(&format!("{BASE}\n[guard]\n{key} = {value}\n"));
        assert!(
            errs.iter()
                .any(|e| e.path.starts_with(&format!("guard.{key}")) && e.message.contains(phrase)),
            "{key} = {value}: {errs:#?}"
        );
    }
}

#[test]
fn scheduler_slice_is_auto_by_default_and_kept_in_the_kernels_range() {
    let slice = |toml: &str| parse(&base_with(toml)).unwrap().scheduler_slice;
    assert_eq!(slice(""), SchedulerSlice::Auto);
    assert_eq!(
        slice("[node]\nscheduler_slice = \"auto\""),
        SchedulerSlice::Auto
    );
    assert_eq!(
        slice("[node]\nscheduler_slice = \"100us\""),
        SchedulerSlice::Fixed(Duration::from_micros(100))
    );
    assert_eq!(
        slice("[node]\nscheduler_slice = \"2ms\""),
        SchedulerSlice::Fixed(Duration::from_millis(2))
    );
    assert_eq!(
        slice("[node]\nscheduler_slice = \"0s\""),
        SchedulerSlice::Kernel
    );
    assert_one_error(
        &base_with("[node]\nscheduler_slice = \"50us\""),
        "node.scheduler_slice",
        Some(18),
        "scheduler_slice = \"50us\" is too short: use \"auto\" (the default), \"0s\" for the \
         kernel's own, or a duration from 100us to 100ms",
    );
    assert_one_error(
        &base_with("[node]\nscheduler_slice = \"short\""),
        "node.scheduler_slice",
        Some(18),
        "scheduler_slice = \"short\" is not a duration (expected number at 0): use \"auto\" \
         (the default), \"0s\" for the kernel's own, or a duration from 100us to 100ms",
    );
}

#[test]
fn passive_hold_is_read_and_a_max_below_it_is_refused() {
    let c = parse(&base_with(
        "[health]\npassive_hold = \"10s\"\npassive_hold_max = \"2min\"",
    ))
    .unwrap();
    assert_eq!(
        (c.health.passive_hold, c.health.passive_hold_max),
        (Duration::from_secs(10), Duration::from_secs(120))
    );
    assert_one_error(
        &base_with("[health]\npassive_hold = \"1min\"\npassive_hold_max = \"10s\""),
        "health.passive_hold_max",
        Some(19),
        "shorter than passive_hold",
    );
}

// ---- [media] and a route's media -------------------------------------------------------------

/// BASE with `route_keys` added to its route (from line 16) and `media` appended as a section
/// (from line 17 + the number of route key lines).
fn relay_with(route_keys: &str, media: &str) -> String {
    format!("{BASE}{route_keys}\n\n{media}\n")
}

/// BASE whose route relays media, with a `[media]` section of `keys` (its first key on line 19).
fn media_with(keys: &str) -> String {
    relay_with("media = \"relay\"", &format!("[media]\n{keys}"))
}

#[test]
fn a_relaying_route_without_a_media_section_names_media_carrier_address() {
    assert_one_error(
        &relay_with("media = \"relay\"", ""),
        "media.carrier_address",
        None,
        "route \"default\" relays media (media = \"relay\") but [media] has no carrier_address",
    );
}

#[test]
fn media_ports_must_be_a_range_of_six_or_more_above_1023() {
    for bad in [
        "9-3",
        "abc",
        "80-2000",
        "30000-30004",
        "30010-30000",
        "1-65536",
    ] {
        let errs = errors(&media_with(&format!(
            "carrier_address = \"127.0.0.1\"\nports = \"{bad}\""
        )));
        assert_eq!(errs.len(), 1, "{bad}: {errs:#?}");
        let e = &errs[0];
        assert_eq!((e.path.as_str(), e.line), ("media.ports", Some(20)), "{e}");
        assert!(e.message.contains(&format!("ports = \"{bad}\"")), "{e}");
        assert!(
            e.message
                .contains("write \"min-max\", e.g. \"16384-24575\" (the default)"),
            "{e}"
        );
    }
    // Each fault is named.
    let message = |ports: &str| {
        errors(&media_with(&format!(
            "carrier_address = \"127.0.0.1\"\nports = \"{ports}\""
        )))[0]
            .message
            .clone()
    };
    assert!(
        message("abc").contains("is not \"min-max\""),
        "{}",
        message("abc")
    );
    assert!(
        message("9-3").contains("min above max"),
        "{}",
        message("9-3")
    );
    assert!(
        message("80-2000").contains("below 1024"),
        "{}",
        message("80-2000")
    );
    assert!(
        message("30000-30004").contains("5 ports: a hot-hot call of two clouds takes 6"),
        "{}",
        message("30000-30004")
    );
}

#[test]
fn media_addresses_must_be_unicast_ip_addresses() {
    for (key, value, phrase) in [
        (
            "carrier_address",
            "0.0.0.0",
            "is not an address a peer can send to",
        ),
        (
            "carrier_address",
            "::",
            "is not an address a peer can send to",
        ),
        ("carrier_address", "media.example", "is not an IP address"),
    ] {
        assert_one_error(
            &media_with(&format!("{key} = \"{value}\"")),
            &format!("media.{key}"),
            Some(19),
            phrase,
        );
    }
    assert_one_error(
        &media_with("carrier_address = \"127.0.0.1\"\ncloud_address = \"224.0.0.1\""),
        "media.cloud_address",
        Some(20),
        "cloud_address = \"224.0.0.1\" is not an address a peer can send to",
    );
}

#[test]
fn media_silence_out_of_range_names_the_key() {
    assert_one_error(
        &media_with("carrier_address = \"127.0.0.1\"\nsilence = \"5ms\""),
        "media.silence",
        Some(20),
        "silence",
    );
    assert_one_error(
        &media_with("carrier_address = \"127.0.0.1\"\nsilence_comfort_noise = \"1h\""),
        "media.silence_comfort_noise",
        Some(20),
        "silence_comfort_noise",
    );
}

#[test]
fn unknown_key_in_media_is_rejected_with_its_name() {
    let errs = errors(&media_with(
        "carrier_address = \"127.0.0.1\"\nport = \"30000-30199\"",
    ));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    let e = &errs[0];
    assert_eq!((e.path.as_str(), e.line), ("media.port", Some(20)));
    assert!(e.message.contains("unknown field `port`"), "{e}");
    assert!(e.message.contains("did you mean `ports`?"), "{e}");
}

#[test]
fn a_valid_media_section_is_kept() {
    let c = parse(&media_with(
        "carrier_address = \"192.0.2.10\"\ncloud_address = \"10.1.0.10\"\n\
         ports = \"30000-30199\"\nsilence = \"80ms\"\nsilence_comfort_noise = \"2s\"\n\
         strict_source = true\nkernel_relay = false",
    ))
    .unwrap();
    assert!(!c.media_kernel_relay);
    let m = c.media.unwrap();
    assert_eq!(
        m.carrier_ip,
        "192.0.2.10".parse::<std::net::IpAddr>().unwrap()
    );
    assert_eq!(m.cloud_ip, "10.1.0.10".parse::<std::net::IpAddr>().unwrap());
    assert_eq!((m.port_min, m.port_max), (30000, 30199));
    assert_eq!(m.silence, Some(Duration::from_millis(80)));
    assert_eq!(m.silence_comfort_noise, Duration::from_secs(2));
    assert!(m.strict_source);
    let rules = &c.router.rules;
    let route = &rules.routes[0];
    assert_eq!(route.media, routing_rules::spec::MediaMode::Relay);
    assert_eq!(route.media_timeout, Some(Duration::from_secs(30)));
}

#[test]
fn a_media_section_gets_its_defaults() {
    let c = parse(&media_with("carrier_address = \"192.0.2.10\"")).unwrap();
    let m = c.media.unwrap();
    assert_eq!(
        m.cloud_ip, m.carrier_ip,
        "cloud_address defaults to carrier_address"
    );
    assert_eq!((m.port_min, m.port_max), DEFAULT_MEDIA_PORTS);
    assert_eq!(m.silence, None, "3 packet times, at least 60 ms");
    assert_eq!(m.silence_comfort_noise, DEFAULT_SILENCE_COMFORT_NOISE);
    assert!(!m.strict_source);
    assert!(
        c.media_kernel_relay,
        "answered calls' RTP goes to the kernel where it can"
    );
}

#[test]
fn a_kernel_relay_without_media_to_relay_is_a_warning() {
    let (result, warnings) =
        Config::parse_with_warnings(&base_with("[media]\nkernel_relay = true"), FILE);
    assert!(result.unwrap().media.is_none());
    assert!(
        warnings.iter().any(|w| w.path == "media.kernel_relay"),
        "{warnings:#?}"
    );
}

#[test]
fn without_a_relaying_route_or_a_media_section_there_is_no_media() {
    let c = parse(BASE).unwrap();
    assert!(c.media.is_none());
    assert_eq!(
        c.router.rules.routes[0].media,
        routing_rules::spec::MediaMode::Off
    );
}

#[test]
fn media_timeout_of_zero_turns_the_check_off() {
    let c = parse(&relay_with(
        "media = \"relay\"\nmedia_timeout = \"0s\"",
        "[media]\ncarrier_address = \"127.0.0.1\"",
    ))
    .unwrap();
    assert_eq!(c.router.rules.routes[0].media_timeout, None);
    let c = parse(&relay_with(
        "media = \"relay\"\nmedia_timeout = \"5s\"",
        "[media]\ncarrier_address = \"127.0.0.1\"",
    ))
    .unwrap();
    assert_eq!(
        c.router.rules.routes[0].media_timeout,
        Some(Duration::from_secs(5))
    );
}

#[test]
fn an_unknown_media_mode_is_rejected_with_the_modes() {
    assert_one_error(
        &relay_with("media = \"bogus\"", ""),
        "route[0].media",
        Some(16),
        "unknown variant `bogus`, expected `off` or `relay`",
    );
}

mod cluster {
    //! `[cluster]`: the node link's addresses, peers, `dead_after` and PEM files.
    use super::*;
    use crate::transport::tls::tests::{dir, Ca};

    /// BASE plus a `[cluster]` section whose PEM files are written next to the config file.
    fn cluster_config(dir: &std::path::Path, section: &str) -> std::path::PathBuf {
        let ca = Ca::new("link ca");
        let (cert, key) = ca.issue(&["10.0.0.1"], false);
        std::fs::write(dir.join("node.pem"), cert).unwrap();
        std::fs::write(dir.join("node.key"), key).unwrap();
        std::fs::write(dir.join("link-ca.pem"), &ca.pem).unwrap();
        let path = dir.join("pointsman.toml");
        std::fs::write(&path, format!("{BASE}\n[cluster]\n{section}\n")).unwrap();
        path
    }

    const FILES: &str = "cert = \"node.pem\"\nkey = \"node.key\"\nca = \"link-ca.pem\"\n";

    #[test]
    fn absent_section_means_no_link() {
        assert_eq!(parse(BASE).unwrap().cluster, None);
    }

    #[test]
    fn cluster_is_read_with_paths_relative_to_the_config_file_and_dead_after_defaulted() {
        let d = dir();
        let c = Config::load(&cluster_config(
            &d,
            &format!(
                "listen = \"10.0.0.1:5070\"\npeers = [{{ id = 2, address = \"10.0.0.2:5070\" }}]\n\
                 {FILES}"
            ),
        ))
        .unwrap();
        let cluster = c.cluster.unwrap();
        assert_eq!(cluster.listen, "10.0.0.1:5070".parse().unwrap());
        assert_eq!(
            cluster.peers,
            [crate::link::PeerAddr {
                id: 2,
                address: "10.0.0.2:5070".parse().unwrap(),
                backup: None,
            }]
        );
        assert_eq!(cluster.cert, d.join("node.pem"));
        assert_eq!(cluster.ca, d.join("link-ca.pem"));
        assert_eq!(cluster.dead_after, Duration::from_secs(1));
        let link = cluster.link_config(c.node_id);
        assert_eq!((link.node_id, link.dead_after), (1, Duration::from_secs(1)));
    }

    #[test]
    fn a_cluster_section_without_relayed_media_loads_without_a_warning() {
        let d = dir();
        let (config, warnings) = Config::load_with_warnings(&cluster_config(
            &d,
            &format!(
                "listen = \"10.0.0.1:5070\"\npeers = [{{ id = 2, address = \"10.0.0.2:5070\" }}]\n\
                 {FILES}"
            ),
        ));
        assert!(config.is_ok());
        assert!(
            !warnings.iter().any(|w| w.path == "cluster"),
            "{warnings:?}"
        );
    }

    /// The one error of a `[cluster]` section (files valid), by key path and phrase.
    #[track_caller]
    fn assert_cluster_error(section: &str, path: &str, phrase: &str) {
        let d = dir();
        let errs = Config::load(&cluster_config(&d, &format!("{section}\n{FILES}")))
            .unwrap_err()
            .0;
        assert_eq!(errs.len(), 1, "expected one error, got {errs:#?}");
        assert_eq!(errs[0].path, path, "{errs:#?}");
        assert!(errs[0].message.contains(phrase), "{:?}", errs[0].message);
    }

    const PEER: &str = "peers = [{ id = 2, address = \"10.0.0.2:5070\" }]";

    #[test]
    fn each_bad_value_is_named_by_its_key() {
        assert_cluster_error(
            &format!("listen = \"0.0.0.0:0\"\n{PEER}"),
            "cluster.listen",
            "not a unicast ip:port",
        );
        assert_cluster_error(
            "listen = \"10.0.0.1:5070\"\npeers = [{ id = 2, address = \"10.0.0.2:5070\", \
             backup = \"10.0.0.2:5070\" }]",
            "cluster.peers[0].backup",
            "is the peer's address",
        );
        assert_cluster_error(
            "listen = \"10.0.0.1:5070\"\npeers = [{ id = 2, address = \"10.0.0.2:5070\", \
             backup = \"later\" }]",
            "cluster.peers[0].backup",
            "not a unicast ip:port",
        );
        assert_cluster_error(
            "listen = \"10.0.0.1:5070\"\npeers = []",
            "cluster.peers",
            "peers is empty",
        );
        assert_cluster_error(
            "listen = \"10.0.0.1:5070\"\npeers = [{ id = 1, address = \"10.0.0.2:5070\" }]",
            "cluster.peers[0].id",
            "not this node's 1",
        );
        assert_cluster_error(
            "listen = \"10.0.0.1:5070\"\npeers = [{ id = 2, address = \"10.0.0.2:5070\" }, \
             { id = 2, address = \"10.0.0.3:5070\" }]",
            "cluster.peers[1].id",
            "listed twice",
        );
        assert_cluster_error(
            "listen = \"10.0.0.1:5070\"\npeers = [{ id = 2, address = \"nowhere\" }]",
            "cluster.peers[0].address",
            "not a unicast ip:port",
        );
        assert_cluster_error(
            &format!("listen = \"10.0.0.1:5070\"\n{PEER}\ndead_after = \"100ms\""),
            "cluster.dead_after",
            "too short",
        );
        assert_cluster_error(
            &format!("listen = \"10.0.0.1:5070\"\n{PEER}\ndead_after = \"11s\""),
            "cluster.dead_after",
            "too long",
        );
    }

    #[test]
    fn a_peer_over_two_paths_has_a_backup_and_the_link_listens_on_every_address() {
        let d = dir();
        let c = Config::load(&cluster_config(
            &d,
            &format!(
                "listen = \"0.0.0.0:5070\"\npeers = [{{ id = 2, address = \"10.9.0.2:5070\", \
                 backup = \"10.0.0.2:5070\" }}]\n{FILES}"
            ),
        ))
        .unwrap();
        let cluster = c.cluster.unwrap();
        assert_eq!(cluster.listen, "0.0.0.0:5070".parse().unwrap());
        assert_eq!(
            cluster.peers[0].backup,
            Some("10.0.0.2:5070".parse().unwrap())
        );
    }

    #[test]
    fn a_pair_node_probing_from_its_listener_is_told_to_set_its_own_source() {
        let d = dir();
        let section = format!(
            "listen = \"10.0.0.1:5070\"\npeers = [{{ id = 2, address = \"10.0.0.2:5070\" }}]\n{FILES}"
        );
        let (config, warnings) = Config::load_with_warnings(&cluster_config(&d, &section));
        assert!(config.is_ok());
        let w = warnings
            .iter()
            .find(|w| w.path == "health.source")
            .expect("a warning on health.source");
        assert!(
            w.message.contains("only over the node link"),
            "{}",
            w.message
        );
        // With its own source, or alone, no such warning.
        let path = cluster_config(&d, &section);
        let text = std::fs::read_to_string(&path).unwrap() + "\n[health]\nsource = \"10.0.0.1\"\n";
        std::fs::write(&path, text).unwrap();
        let (_, warnings) = Config::load_with_warnings(&path);
        assert!(
            !warnings.iter().any(|w| w.path == "health.source"),
            "{warnings:?}"
        );
        let (_, warnings) = Config::parse_with_warnings(BASE, FILE);
        assert!(
            !warnings.iter().any(|w| w.path == "health.source"),
            "{warnings:?}"
        );
    }

    #[test]
    fn a_backup_path_with_a_link_listening_on_one_address_is_warned_of() {
        let d = dir();
        let (config, warnings) = Config::load_with_warnings(&cluster_config(
            &d,
            &format!(
                "listen = \"10.0.0.1:5070\"\npeers = [{{ id = 2, address = \"10.9.0.2:5070\", \
                 backup = \"10.0.0.2:5070\" }}]\n{FILES}"
            ),
        ));
        assert!(config.is_ok());
        let w = warnings
            .iter()
            .find(|w| w.path == "cluster.peers[0].backup")
            .expect("a warning on the backup");
        assert!(w.message.contains("0.0.0.0:5070"), "{}", w.message);
    }

    #[test]
    fn unreadable_pem_file_is_named_by_its_key() {
        let d = dir();
        let path = cluster_config(
            &d,
            &format!("listen = \"10.0.0.1:5070\"\n{PEER}\ncert = \"node.pem\"\nkey = \"node.key\"\nca = \"missing.pem\""),
        );
        let errs = Config::load(&path).unwrap_err().0;
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert_eq!(errs[0].path, "cluster.ca");
        assert!(
            errs[0].message.contains("cannot read"),
            "{:?}",
            errs[0].message
        );
    }

    #[test]
    fn missing_and_unknown_keys_are_structural_errors() {
        let errs = errors(&base_with(
            "[cluster]\nlisten = \"10.0.0.1:5070\"\nbogus = 1",
        ));
        assert!(
            errs.iter().any(|e| e.path.starts_with("cluster")),
            "{errs:#?}"
        );
    }
}

// ---- [hep] ----

#[test]
fn hep_defaults_to_udp_the_node_id_as_agent_and_capturing() {
    assert_eq!(parse(&base_with("")).unwrap().hep, None);
    let c = parse(&base_with("[hep]\naddress = \"192.0.2.50:9060\"")).unwrap();
    assert_eq!(
        c.hep,
        Some(crate::hep::HepConfig {
            address: "192.0.2.50:9060".parse().unwrap(),
            transport: crate::hep::HepTransport::Udp,
            agent_id: u32::from(c.node_id),
            password: None,
            enabled: true,
            queue: crate::hep::DEFAULT_QUEUE,
        })
    );
    let c = parse(&base_with(
        "[hep]\naddress = \"[2001:db8::50]:9061\"\ntransport = \"tcp\"\nagent_id = 9\npassword = \"k\"\nenabled = false\nqueue = 500",
    ))
    .unwrap();
    let h = c.hep.unwrap();
    assert_eq!(h.transport, crate::hep::HepTransport::Tcp);
    assert_eq!((h.agent_id, h.enabled, h.queue), (9, false, 500));
}

#[test]
fn a_bad_hep_section_names_the_key() {
    for (section, path, line, phrase) in [
        (
            "[hep]\naddress = \"homer\"",
            "hep.address",
            18,
            "is not the ip:port of a HEP collector",
        ),
        (
            "[hep]\naddress = \"0.0.0.0:9060\"",
            "hep.address",
            18,
            "is not the ip:port",
        ),
        (
            "[hep]\naddress = \"192.0.2.50:9060\"\ntransport = \"sctp\"",
            "hep.transport",
            19,
            "use \"udp\"",
        ),
        (
            "[hep]\naddress = \"192.0.2.50:9060\"\nqueue = 5",
            "hep.queue",
            19,
            "queue = 5",
        ),
        (
            "[hep]\naddress = \"192.0.2.50:9060\"\npassword = \"\"",
            "hep.password",
            19,
            "password is empty",
        ),
    ] {
        assert_one_error(&base_with(section), path, Some(line), phrase);
    }
}

#[test]
fn the_dns_section_takes_servers_with_or_without_a_port_and_defaults_to_the_systems() {
    let c = parse(&base_with("")).unwrap();
    assert_eq!(c.dns, crate::dns::DnsConfig::default());
    let c = parse(&base_with(
        "[dns]\nservers = [\"10.0.0.53\", \"[2001:db8::53]:5353\"]\ntimeout = \"500ms\"\nmin_ttl = \"1s\"\nmax_ttl = \"10m\"",
    ))
    .unwrap();
    assert_eq!(
        c.dns.servers,
        [
            "10.0.0.53:53".parse().unwrap(),
            "[2001:db8::53]:5353".parse().unwrap()
        ]
    );
    assert_eq!(
        (c.dns.timeout, c.dns.min_ttl, c.dns.max_ttl),
        (
            Duration::from_millis(500),
            Duration::from_secs(1),
            Duration::from_secs(600)
        )
    );
}

#[test]
fn a_bad_dns_section_names_the_key() {
    for (section, path, line, phrase) in [
        (
            "[dns]\nservers = [\"ns1.example.com\"]",
            "dns.servers[0]",
            18,
            "is not the address of a name server",
        ),
        (
            "[dns]\nservers = [\"0.0.0.0\"]",
            "dns.servers[0]",
            18,
            "is not the address of a name server",
        ),
        ("[dns]\ntimeout = \"1ms\"", "dns.timeout", 18, "timeout"),
        (
            "[dns]\nmin_ttl = \"10m\"\nmax_ttl = \"1m\"",
            "dns.max_ttl",
            19,
            "shorter than min_ttl",
        ),
    ] {
        assert_one_error(&base_with(section), path, Some(line), phrase);
    }
}
