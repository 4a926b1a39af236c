//! Every validation error of groups, tiers, match conditions and survivability (exact key path
//! and a phrase of the message saying what would be right), and the warnings: routes that can
//! never match because an earlier route shadows them, hot-hot routes whose media is not
//! relayed, groups and destinations nothing uses.

// Test support: a failed assumption here is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{assert_one_error, compile, destinations, errors};

/// Three destinations d0..d2, a priority group `a` over d0, d1, a group `life` over d2, and
/// `rest` appended.
fn base(rest: &str) -> String {
    format!(
        "{}[[group]]\nname = \"a\"\nmembers = [\"d0\", \"d1\"]\n\
         [[group]]\nname = \"life\"\nmembers = [\"d2\"]\n{rest}\n",
        destinations(3)
    )
}

/// `base` with one route using both groups, plus `route_extra` keys in that route.
fn route(route_extra: &str) -> String {
    base(&format!(
        "[[route]]\nname = \"r\"\ntiers = [\"a\"]\nsurvivability = {{ group = \"life\" }}\n{route_extra}"
    ))
}

/// A route over group `a` with `match` = `conditions`.
fn matching(conditions: &str) -> String {
    route(&format!("match = {{ {conditions} }}"))
}

// ---- destinations ----------------------------------------------------------------------------

#[test]
fn destination_tag_with_a_space_is_rejected() {
    assert_one_error(
        &route("").replacen(
            "address = \"127.0.0.1:5100\"",
            "address = \"127.0.0.1:5100\"\ntags = [\"site a\"]",
            1,
        ),
        "destination[0].tags[0]",
        "tag name \"site a\" contains ' '",
    );
}

#[test]
fn repeated_destination_tag_is_rejected() {
    assert_one_error(
        &route("").replacen(
            "address = \"127.0.0.1:5101\"",
            "address = \"127.0.0.1:5101\"\ntags = [\"x\", \"y\", \"x\"]",
            1,
        ),
        "destination[1].tags[2]",
        "tag \"x\" is listed twice (also at destination[1].tags[0])",
    );
}

// ---- groups ----------------------------------------------------------------------------------

#[test]
fn invalid_group_name_is_rejected() {
    assert_one_error(
        &route("")
            .replace("name = \"life\"", "name = \"life boat\"")
            .replace("group = \"life\"", "group = \"life boat\""),
        "group[1].name",
        "group name \"life boat\" contains ' '",
    );
}

#[test]
fn duplicate_group_name_points_to_the_first_definition() {
    let errs = errors(&route("").replace("name = \"life\"", "name = \"a\""));
    assert_eq!(errs[0].path, "group[1].name");
    assert!(errs[0]
        .message
        .contains("group name \"a\" is already used by group[0]: give each group a unique name"));
    // The survivability rule then names a group that no longer exists; that is reported too.
    assert_eq!(errs[1].path, "route[0].survivability.group");
    assert_eq!(errs.len(), 2, "{errs:#?}");
}

#[test]
fn group_without_members_is_rejected_with_an_example() {
    let text = route("").replace("members = [\"d2\"]", "members = []");
    let errs = errors(&text);
    assert_eq!(errs[0].path, "group[1].members", "{errs:#?}");
    assert!(
        errs[0]
            .message
            .contains("group \"life\" has no members: list at least one destination name, e.g. members = [\"d0\"]"),
        "{}",
        errs[0]
    );
}

#[test]
fn unknown_group_member_suggests_the_closest_destination() {
    assert_one_error(
        &route("").replace("[\"d0\", \"d1\"]", "[\"d0\", \"dd1\"]"),
        "group[0].members[1]",
        "unknown destination \"dd1\": did you mean \"d1\"?",
    );
}

#[test]
fn unknown_group_member_without_close_name_lists_known_destinations() {
    assert_one_error(
        &route("").replace("[\"d0\", \"d1\"]", "[\"d0\", \"lifeboat-ivr\"]"),
        "group[0].members[1]",
        "no [[destination]] has that name (known: \"d0\", \"d1\", \"d2\")",
    );
}

#[test]
fn unknown_member_in_table_form_is_reported_too() {
    assert_one_error(
        &route("").replace(
            "[\"d0\", \"d1\"]",
            "[\"d0\", { name = \"d9\", priority = 1 }]",
        ),
        "group[0].members[1]",
        "unknown destination \"d9\"",
    );
}

#[test]
fn member_listed_twice_in_a_group_is_rejected() {
    assert_one_error(
        &route("").replace("[\"d0\", \"d1\"]", "[\"d0\", \"d1\", { name = \"d0\" }]"),
        "group[0].members[2]",
        "destination \"d0\" is listed twice in group \"a\" (also at group[0].members[0])",
    );
}

#[test]
fn member_priority_in_a_weighted_group_is_rejected() {
    assert_one_error(
        &route("").replace(
            "members = [\"d0\", \"d1\"]",
            "strategy = \"weighted\"\nmembers = [\"d0\", { name = \"d1\", priority = 2 }]",
        ),
        "group[0].members[1].priority",
        "priority only orders the members of a priority group, and group \"a\" is weighted: remove it (use weight",
    );
}

#[test]
fn member_weight_in_a_parallel_group_is_rejected() {
    assert_one_error(
        &route("").replace(
            "members = [\"d0\", \"d1\"]",
            "strategy = \"parallel\"\nmembers = [{ name = \"d0\", weight = 2 }, \"d1\"]",
        ),
        "group[0].members[0].weight",
        "group \"a\" is parallel: every member gets each call at once, so weight has no effect",
    );
}

#[test]
fn hash_on_in_a_group_that_is_not_hash_is_rejected() {
    assert_one_error(
        &route("").replace(
            "members = [\"d0\", \"d1\"]",
            "members = [\"d0\", \"d1\"]\nhash_on = \"caller\"",
        ),
        "group[0].hash_on",
        "hash_on only applies to strategy = \"hash\", and group \"a\" is priority",
    );
}

#[test]
fn weighted_group_whose_weights_are_all_zero_is_rejected() {
    assert_one_error(
        &route("").replace(
            "members = [\"d0\", \"d1\"]",
            "strategy = \"weighted\"\nmembers = [{ name = \"d0\", weight = 0 }, { name = \"d1\", weight = 0 }]",
        ),
        "group[0].members",
        "every member of weighted group \"a\" has weight 0, so no call could be placed",
    );
}

#[test]
fn hash_group_whose_weights_are_all_zero_is_rejected() {
    let text = route("")
        .replace(
            "address = \"127.0.0.1:5100\"",
            "address = \"127.0.0.1:5100\"\nweight = 0",
        )
        .replace(
            "members = [\"d0\", \"d1\"]",
            "strategy = \"hash\"\nmembers = [\"d0\", { name = \"d1\", weight = 0 }]",
        );
    assert_one_error(&text, "group[0].members", "hash group \"a\" has weight 0");
}

#[test]
fn priority_group_with_zero_weights_is_accepted() {
    compile(&route("").replace(
        "members = [\"d0\", \"d1\"]",
        "members = [{ name = \"d0\", weight = 0 }, { name = \"d1\", weight = 0 }]",
    ));
}

// ---- tiers -----------------------------------------------------------------------------------

#[test]
fn route_with_both_destinations_and_tiers_is_rejected() {
    assert_one_error(
        &route("destinations = [\"d0\"]"),
        "route[0].tiers",
        "route \"r\" has both destinations and tiers: keep one",
    );
}

#[test]
fn route_with_neither_destinations_nor_tiers_is_rejected_with_an_example() {
    assert_one_error(
        &base("[[route]]\nname = \"r\""),
        "route[0].tiers",
        "route \"r\" says nowhere to send its calls: add tiers (groups tried in order) or \
         destinations (destinations tried in order), e.g. tiers = [\"a\"]",
    );
}

#[test]
fn route_with_empty_tiers_is_rejected() {
    assert_one_error(
        &route("").replace("tiers = [\"a\"]", "tiers = []"),
        "route[0].tiers",
        "route \"r\" lists no tiers: list the groups to try, in order, e.g. tiers = [\"a\"]",
    );
}

#[test]
fn unknown_tier_group_suggests_the_closest_group() {
    assert_one_error(
        &route("").replace("tiers = [\"a\"]", "tiers = [\"a\", \"lifee\"]"),
        "route[0].tiers[1]",
        "unknown group \"lifee\": did you mean \"life\"?",
    );
}

#[test]
fn tier_naming_a_destination_says_tiers_name_groups() {
    assert_one_error(
        &route("").replace("tiers = [\"a\"]", "tiers = [\"a\", \"d2\"]"),
        "route[0].tiers[1]",
        "\"d2\" is a destination, not a group: tiers and survivability name groups",
    );
}

#[test]
fn tiers_without_any_group_table_say_to_add_one() {
    assert_one_error(
        &format!(
            "{}[[route]]\nname = \"r\"\ntiers = [\"edge\"]\n",
            destinations(1)
        ),
        "route[0].tiers[0]",
        "unknown group \"edge\": there is no [[group]] table",
    );
}

#[test]
fn group_listed_twice_in_tiers_is_rejected() {
    assert_one_error(
        &route("").replace("tiers = [\"a\"]", "tiers = [\"a\", \"a\"]"),
        "route[0].tiers[1]",
        "group \"a\" is listed twice in route \"r\" (also at route[0].tiers[0])",
    );
}

#[test]
fn tier_whose_members_are_all_in_earlier_tiers_can_never_be_tried() {
    let text = base(
        "[[group]]\nname = \"a0\"\nmembers = [\"d0\"]\n\
         [[route]]\nname = \"r\"\ntiers = [\"a\", \"a0\"]\nsurvivability = { group = \"life\" }",
    );
    assert_one_error(
        &text,
        "route[0].tiers[1]",
        "tier \"a0\" can never be tried in route \"r\": each of its members is already in an earlier tier",
    );
}

// ---- match -----------------------------------------------------------------------------------

#[test]
fn empty_match_table_is_rejected() {
    assert_one_error(
        &route("match = {}"),
        "route[0].match",
        "match has no condition: give at least one",
    );
}

#[test]
fn to_number_with_letters_is_rejected_with_the_number_rules() {
    assert_one_error(
        &matching("to = [\"+15550100911\", \"+1555CALLME\"]"),
        "route[0].match.to[1]",
        "to \"+1555CALLME\" contains 'C': a number is digits (and * #) with an optional leading '+'",
    );
}

#[test]
fn empty_to_number_is_rejected() {
    assert_one_error(
        &matching("to = [\"+\"]"),
        "route[0].match.to[0]",
        "to \"+\" is empty",
    );
}

#[test]
fn too_long_to_number_is_rejected() {
    assert_one_error(
        &matching(&format!("to = [\"{}\"]", "1".repeat(40))),
        "route[0].match.to[0]",
        "has more than 32 digits",
    );
}

#[test]
fn number_listed_twice_in_another_form_is_rejected() {
    assert_one_error(
        &matching("to = [\"+1 555 0100\", \"15550100\"]"),
        "route[0].match.to[1]",
        "\"15550100\" is listed twice (also at route[0].match.to[0], once normalised to 15550100)",
    );
}

#[test]
fn empty_to_prefix_is_rejected_and_says_to_leave_the_condition_out() {
    assert_one_error(
        &matching("to_prefix = [\"\"]"),
        "route[0].match.to_prefix[0]",
        "leave the condition out",
    );
}

#[test]
fn from_prefix_that_is_not_a_number_is_rejected() {
    assert_one_error(
        &matching("from_prefix = [\"44\", \"sip:44\"]"),
        "route[0].match.from_prefix[1]",
        "from_prefix \"sip:44\" contains 's'",
    );
}

#[test]
fn empty_source_is_rejected() {
    assert_one_error(
        &matching("source = [\" \"]"),
        "route[0].match.source[0]",
        "source is empty: write the name of a [[listen]] table",
    );
}

#[test]
fn source_listed_twice_is_rejected() {
    assert_one_error(
        &matching("source = [\"a\", \"a\"]"),
        "route[0].match.source[1]",
        "listener \"a\" is listed twice (also at route[0].match.source[0])",
    );
}

#[test]
fn header_name_that_is_not_a_token_is_rejected() {
    assert_one_error(
        &matching("header = { name = \"X Tenant\" }"),
        "route[0].match.header.name",
        "header name \"X Tenant\" is not a SIP header name",
    );
}

#[test]
fn empty_header_value_is_rejected() {
    assert_one_error(
        &matching("header = { name = \"X-Tenant\", value = \" \" }"),
        "route[0].match.header.value",
        "to require only that the header is present, leave value out",
    );
}

// ---- survivability ---------------------------------------------------------------------------

fn survivability(s: &str) -> String {
    route("").replace(
        "survivability = { group = \"life\" }",
        &format!("survivability = {s}"),
    )
}

#[test]
fn survivability_with_group_and_reject_is_rejected() {
    assert_one_error(
        &survivability("{ group = \"life\", reject = 503 }"),
        "route[0].survivability",
        "survivability has both group and reject",
    );
}

#[test]
fn survivability_with_neither_group_nor_reject_is_rejected() {
    assert_one_error(
        &survivability("{}"),
        "route[0].survivability",
        "survivability says neither where to send calls nor how to reject them",
    );
}

#[test]
fn survivability_with_an_unknown_group_suggests_the_closest() {
    assert_one_error(
        &survivability("{ group = \"lif\" }"),
        "route[0].survivability.group",
        "unknown group \"lif\": did you mean \"life\"?",
    );
}

#[test]
fn survivability_group_inside_the_tiers_is_useless_and_rejected() {
    assert_one_error(
        &survivability("{ group = \"a\" }"),
        "route[0].survivability.group",
        "survivability group \"a\" has no member outside the tiers of route \"r\"",
    );
}

#[test]
fn survivability_reject_with_a_non_error_code_is_rejected() {
    for code in [200, 302, 399, 700] {
        assert_one_error(
            &survivability(&format!("{{ reject = {code} }}")),
            "route[0].survivability.reject",
            &format!("reject = {code} is not a rejection: use a 4xx, 5xx or 6xx code"),
        );
    }
}

#[test]
fn survivability_reject_accepts_4xx_to_6xx() {
    for code in [404, 480, 503, 603] {
        compile(
            &survivability(&format!("{{ reject = {code} }}"))
                .replace("[[group]]\nname = \"life\"\nmembers = [\"d2\"]\n", "")
                .replace(
                    "[[destination]]\nname = \"d2\"\naddress = \"127.0.0.1:5102\"\n",
                    "",
                ),
        );
    }
}

#[test]
fn retry_after_without_reject_is_rejected() {
    assert_one_error(
        &survivability("{ group = \"life\", retry_after = \"30s\" }"),
        "route[0].survivability.retry_after",
        "retry_after goes with reject",
    );
}

#[test]
fn retry_after_must_be_whole_seconds_from_one_second_to_a_day() {
    for bad in ["0s", "1500ms", "2days"] {
        assert_one_error(
            &survivability(&format!("{{ reject = 503, retry_after = \"{bad}\" }}")),
            "route[0].survivability.retry_after",
            "is not a Retry-After: use whole seconds from 1s to 24h",
        );
    }
}

// ---- warnings --------------------------------------------------------------------------------

fn warnings_of(routes: &[&str]) -> Vec<(String, String)> {
    let mut text = destinations(1);
    for (i, body) in routes.iter().enumerate() {
        text.push_str(&format!(
            "[[route]]\nname = \"r{i}\"\ndestinations = [\"d0\"]\n{body}\n"
        ));
    }
    compile(&text)
        .warnings
        .into_iter()
        .map(|w| (w.path, w.message))
        .collect()
}

#[test]
fn route_after_a_default_route_can_never_match_and_is_a_warning() {
    let w = warnings_of(&["", "match = { to = [\"1555\"] }"]);
    assert_eq!(w.len(), 1, "{w:#?}");
    assert_eq!(w[0].0, "route[1].match");
    assert!(
        w[0].1.contains(
            "route \"r1\" can never match: route \"r0\" (route[0]) comes before it and is a \
             default route (no match), which takes every call; move route \"r1\" above route \"r0\""
        ),
        "{}",
        w[0].1
    );
}

#[test]
fn second_default_route_is_a_warning_at_its_name() {
    let w = warnings_of(&["", ""]);
    assert_eq!(w.len(), 1, "{w:#?}");
    assert_eq!(w[0].0, "route[1].name");
}

#[test]
fn longer_prefix_after_a_shorter_one_is_shadowed() {
    let w = warnings_of(&[
        "match = { to_prefix = [\"+1555\"] }",
        "match = { to_prefix = [\"15550\", \"1555 1\"], to = [\"15559\"] }",
    ]);
    assert_eq!(w.len(), 1, "{w:#?}");
    assert!(w[0]
        .1
        .contains("its conditions take every call this route's would"));
}

#[test]
fn exact_numbers_already_taken_by_an_earlier_route_are_shadowed() {
    let w = warnings_of(&[
        "match = { to = [\"1\", \"2\", \"3\"] }",
        "match = { to = [\"+3\", \"1\"] }",
    ]);
    assert_eq!(w.len(), 1, "{w:#?}");
}

#[test]
fn partly_covered_route_is_not_a_warning() {
    let w = warnings_of(&[
        "match = { to_prefix = [\"1555\"] }",
        "match = { to_prefix = [\"15550\", \"1666\"] }",
        "match = { to = [\"1\", \"2\"] }",
        "match = { to = [\"2\", \"3\"] }",
    ]);
    assert!(w.is_empty(), "{w:#?}");
}

#[test]
fn earlier_route_with_more_conditions_does_not_shadow() {
    let w = warnings_of(&[
        "match = { to_prefix = [\"1555\"], source = [\"a\"] }",
        "match = { to_prefix = [\"15550\"] }",
        "match = { header = { name = \"X-T\", value = \"1\" } }",
        "match = { header = { name = \"X-T\" } }",
        "match = { from_prefix = [\"44\"] }",
        "match = { to = [\"1\"] }",
    ]);
    assert!(w.is_empty(), "{w:#?}");
}

#[test]
fn earlier_route_with_broader_source_caller_and_header_conditions_shadows() {
    let w = warnings_of(&[
        "match = { source = [\"a\", \"b\"], from_prefix = [\"44\"], header = { name = \"x-t\" } }",
        "match = { to = [\"1\"], source = [\"b\"], from_prefix = [\"4420\"], header = { name = \"X-T\", value = \"v\" } }",
    ]);
    assert_eq!(w.len(), 1, "{w:#?}");
    assert_eq!(w[0].0, "route[1].match");
}

#[test]
fn unused_group_and_destination_are_warnings() {
    let router = compile(&base(
        "[[destination]]\nname = \"spare\"\naddress = \"127.0.0.1:5999\"\n\
         [[route]]\nname = \"r\"\ntiers = [\"a\"]",
    ));
    let w: Vec<(&str, &str)> = router
        .warnings
        .iter()
        .map(|w| (w.path.as_str(), w.message.as_str()))
        .collect();
    assert_eq!(w.len(), 3, "{w:#?}");
    assert_eq!(w[0].0, "group[1].name");
    assert!(w[0].1.contains("group \"life\" is not used by any route"));
    assert_eq!(w[1].0, "destination[2].name");
    assert_eq!(w[2].0, "destination[3].name");
    assert!(w[2].1.contains("destination \"spare\" gets no calls"));
}

#[test]
fn a_config_without_problems_has_no_warnings() {
    assert!(compile(&route("")).warnings.is_empty());
}

/// Destinations d0..d2, a parallel group `hh` over d0, d1, a group `life` over d2, and one route
/// `r` with `route` keys.
fn hot_hot(route: &str) -> Vec<(String, String)> {
    let text = format!(
        "{}[[group]]\nname = \"hh\"\nstrategy = \"parallel\"\nmembers = [\"d0\", \"d1\"]\n\
         [[group]]\nname = \"life\"\nstrategy = \"parallel\"\nmembers = [\"d2\"]\n\
         [[route]]\nname = \"r\"\n{route}\n",
        destinations(3)
    );
    compile(&text)
        .warnings
        .into_iter()
        .map(|w| (w.path, w.message))
        .collect()
}

#[test]
fn a_parallel_tier_without_relayed_media_is_a_warning_at_its_tiers() {
    let w = hot_hot("tiers = [\"hh\"]\nsurvivability = { group = \"life\" }");
    assert_eq!(w.len(), 1, "{w:#?}");
    assert_eq!(w[0].0, "route[0].tiers");
    assert!(
        w[0].1.contains(
            "route \"r\" forks calls to the parallel group \"hh\" but does not relay their \
             media: hot-hot early media needs media = \"relay\": without it the carrier hears \
             whichever cloud its phone follows and nothing switches when it fails"
        ),
        "{}",
        w[0].1
    );
}

#[test]
fn a_parallel_survivability_group_without_relayed_media_is_a_warning_there() {
    let w = hot_hot("destinations = [\"d0\", \"d1\"]\nsurvivability = { group = \"life\" }");
    let hh_unused = w.iter().any(|(p, _)| p == "group[0].name");
    assert!(hh_unused, "{w:#?}");
    let media: Vec<_> = w.iter().filter(|(_, m)| m.contains("media")).collect();
    assert_eq!(media.len(), 1, "{w:#?}");
    assert_eq!(media[0].0, "route[0].survivability");
}

#[test]
fn relayed_or_explicitly_unrelayed_media_on_a_parallel_tier_is_no_warning() {
    for media in ["media = \"relay\"", "media = \"off\""] {
        let w = hot_hot(&format!(
            "tiers = [\"hh\"]\nsurvivability = {{ group = \"life\" }}\n{media}"
        ));
        assert!(w.is_empty(), "{media}: {w:#?}");
    }
}

#[test]
fn a_media_timeout_out_of_range_is_refused_on_a_route_and_on_a_destination() {
    assert_one_error(
        &format!(
            "{}\n[[route]]\nname = \"r\"\ndestinations = [\"d0\"]\nmedia = \"relay\"\nmedia_timeout = \"200ms\"\n",
            destinations(1)
        ),
        "route[0].media_timeout",
        "too short",
    );
    let with_destination_timeout = destinations(1).replacen(
        "name = \"d0\"",
        "name = \"d0\"\nmedia_timeout = \"2days\"",
        1,
    );
    assert_one_error(
        &format!("{with_destination_timeout}\n[[route]]\nname = \"r\"\ndestinations = [\"d0\"]\n"),
        "destination[0].media_timeout",
        "too long",
    );
    // "0s" turns the check off: no error.
    let off = compile(&format!(
        "{}\n[[route]]\nname = \"r\"\ndestinations = [\"d0\"]\nmedia_timeout = \"0s\"\n",
        destinations(1)
    ));
    assert_eq!(off.rules.routes[0].media_timeout, None);
}

/// One destination `d0` with `request_uri = { … }` and a route over it.
fn request_uri(table: &str) -> String {
    let with = destinations(1).replacen(
        "name = \"d0\"",
        &format!("name = \"d0\"\nrequest_uri = {{ {table} }}"),
        1,
    );
    format!("{with}\n[[route]]\nname = \"r\"\ndestinations = [\"d0\"]\n")
}

#[test]
fn a_request_uri_rewrite_is_compiled_with_an_ipv6_host_in_brackets() {
    let router = compile(&request_uri(
        "host = \"tenant.byoc.example.com\", port = 5061, user_prefix = \"+\", params = [\"tgrp=t-1\", \"lr\"]",
    ));
    let rw = router.rules.destinations[0].request_uri.clone().unwrap();
    assert_eq!(rw.hostport(), "tenant.byoc.example.com:5061");
    assert_eq!(rw.user_prefix.as_deref(), Some("+"));
    assert_eq!(
        rw.params,
        vec![
            ("tgrp".to_string(), Some("t-1".to_string())),
            ("lr".to_string(), None)
        ]
    );
    let v6 = compile(&request_uri("host = \"2001:db8::7\""));
    assert_eq!(
        v6.rules.destinations[0].request_uri.as_ref().unwrap().host,
        "[2001:db8::7]"
    );
    assert_eq!(
        compile(&request_uri("host = \"[2001:db8::7]\""))
            .rules
            .destinations[0]
            .request_uri
            .as_ref()
            .unwrap()
            .host,
        "[2001:db8::7]"
    );
}

#[test]
fn a_bad_request_uri_rewrite_names_the_key_and_what_to_write() {
    for (table, path, phrase) in [
        (
            "host = \"\"",
            "destination[0].request_uri.host",
            "not a DNS name",
        ),
        (
            "host = \"a b.example\"",
            "destination[0].request_uri.host",
            "not a DNS name",
        ),
        (
            "host = \"sbc.example:5061\"",
            "destination[0].request_uri.host",
            "port = …",
        ),
        (
            "host = \"-bad.example\"",
            "destination[0].request_uri.host",
            "not a DNS name",
        ),
        (
            "host = \"x.example\", port = 0",
            "destination[0].request_uri.port",
            "port 0",
        ),
        (
            "host = \"x.example\", user_prefix = \"\"",
            "destination[0].request_uri.user_prefix",
            "user part",
        ),
        (
            "host = \"x.example\", user_prefix = \"+ 1\"",
            "destination[0].request_uri.user_prefix",
            "user part",
        ),
        (
            "host = \"x.example\", params = [\"a;b\"]",
            "destination[0].request_uri.params[0]",
            "name=value",
        ),
        (
            "host = \"x.example\", params = [\"=x\"]",
            "destination[0].request_uri.params[0]",
            "name=value",
        ),
        (
            "host = \"x.example\", params = [\"tgrp=\"]",
            "destination[0].request_uri.params[0]",
            "name=value",
        ),
        (
            "host = \"x.example\", params = [\"tgrp=a\", \"TGRP=b\"]",
            "destination[0].request_uri.params[1]",
            "already given",
        ),
    ] {
        assert_one_error(&request_uri(table), path, phrase);
    }
}

// ---- capacity caps ---------------------------------------------------------------------------

/// Two destinations, the second (`destination[1]`) with `keys`, and a route over both.
fn capped(keys: &str) -> String {
    let with = destinations(2).replacen("name = \"d1\"", &format!("name = \"d1\"\n{keys}"), 1);
    format!("{with}\n[[route]]\nname = \"r\"\ndestinations = [\"d0\", \"d1\"]\n")
}

#[test]
fn capacity_caps_are_compiled_and_absent_means_no_cap() {
    let router = compile(&capped("max_calls = 2\nmax_cps = 2.5"));
    let none = router.rules.destinations[0].caps;
    assert_eq!(none, routing_rules::Caps::default());
    assert!(!none.any());
    assert_eq!(none.burst(), None);
    let caps = router.rules.destinations[1].caps;
    assert_eq!(caps.max_calls, Some(2));
    assert_eq!(caps.max_cps, Some(2.5));
    assert_eq!(caps.burst(), Some(2), "burst = max(1, floor(max_cps))");
    // An integer rate is a rate; a rate under 1/s still lets one call through.
    let whole = compile(&capped("max_cps = 20"));
    assert_eq!(whole.rules.destinations[1].caps.max_cps, Some(20.0));
    assert_eq!(whole.rules.destinations[1].caps.burst(), Some(20));
    let slow = compile(&capped("max_cps = 0.5"));
    assert_eq!(slow.rules.destinations[1].caps.burst(), Some(1));
    // The bounds themselves are accepted.
    let edges = compile(&capped("max_calls = 1000000\nmax_cps = 0.1"));
    assert_eq!(edges.rules.destinations[1].caps.max_calls, Some(1_000_000));
    let fast = compile(&capped("max_calls = 1\nmax_cps = 100000"));
    assert_eq!(fast.rules.destinations[1].caps.max_cps, Some(100_000.0));
}

#[test]
fn a_cap_of_zero_is_refused_with_how_to_take_a_destination_out_of_service() {
    for key in ["max_calls", "max_cps"] {
        let errs = errors(&capped(&format!("{key} = 0")));
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert_eq!(errs[0].path, format!("destination[1].{key}"));
        for phrase in [
            "would send this destination no call at all",
            "POST /destinations/d1/drain",
            "POST /destinations/d1/maintenance",
            &format!("leave {key} out for no cap"),
        ] {
            assert!(
                errs[0].message.contains(phrase),
                "{:?} lacks {phrase:?}",
                errs[0].message
            );
        }
    }
    // 0.0 is 0 too.
    assert_one_error(
        &capped("max_cps = 0.0"),
        "destination[1].max_cps",
        "drain it",
    );
}

#[test]
fn caps_out_of_range_name_the_key_and_the_range() {
    for (keys, path, phrase) in [
        (
            "max_calls = 1000001",
            "destination[1].max_calls",
            "max_calls = 1000001 is out of range: use 1..=1000000 calls in progress",
        ),
        (
            "max_cps = 0.05",
            "destination[1].max_cps",
            "max_cps = 0.05 is out of range: use 0.1 to 100000 new calls a second",
        ),
        (
            "max_cps = 100001",
            "destination[1].max_cps",
            "max_cps = 100001 is out of range",
        ),
        (
            "max_cps = -2",
            "destination[1].max_cps",
            "max_cps = -2 is negative",
        ),
        (
            "max_cps = nan",
            "destination[1].max_cps",
            "max_cps = NaN is not a number",
        ),
        (
            "max_cps = inf",
            "destination[1].max_cps",
            "max_cps = inf is out of range",
        ),
    ] {
        assert_one_error(&capped(keys), path, phrase);
    }
    // Both wrong: both reported, each at its key.
    let errs = errors(&capped("max_calls = 0\nmax_cps = -1"));
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["destination[1].max_calls", "destination[1].max_cps"]
    );
}

#[test]
fn a_negative_or_fractional_max_calls_is_a_type_error_before_compiling() {
    for keys in ["max_calls = -1", "max_calls = 1.5", "max_cps = \"5/s\""] {
        let doc: Result<common::Doc, _> = toml::from_str(&capped(keys));
        assert!(doc.is_err(), "{keys} must not deserialise");
    }
}
