//! Behaviour of `Router::plan`: each strategy's order, share recomputation when members are
//! down, hash stability, tiers, and survivability. Randomness comes from the call's `entropy`,
//! so every test is deterministic; distributions are measured over 100,000 entropy values.

// Test support: a failed assumption here is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{compile, destinations, names};
use routing_rules::spec::Strategy;
use routing_rules::{Call, DestId, Plan, RouteId, Router, Survival};
use std::collections::HashMap;
use std::time::Duration;

const CALLS: u64 = 100_000;

fn all_up(_: DestId) -> bool {
    true
}

fn plan(router: &Router, call: &Call<'_>, is_up: &dyn Fn(DestId) -> bool) -> Plan {
    router.plan(RouteId(0), call, is_up)
}

/// The try order of a single-tier plan, by name.
fn order(router: &Router, call: &Call<'_>, is_up: &dyn Fn(DestId) -> bool) -> Vec<String> {
    names(router, plan(router, call, is_up).destinations())
}

fn id(router: &Router, name: &str) -> DestId {
    router.destination_by_name(name).expect(name)
}

/// One group `g` over d0..d{n-1} with `members` and `extra` group keys, one route over it.
fn one_group(n: usize, strategy: &str, members: &str, extra: &str) -> Router {
    compile(&format!(
        "{}[[group]]\nname = \"g\"\nstrategy = \"{strategy}\"\nmembers = {members}\n{extra}\n\
         [[route]]\nname = \"r\"\ntiers = [\"g\"]\n",
        destinations(n)
    ))
}

/// Share of first attempts per destination name over `CALLS` entropy values.
fn first_pick_shares(router: &Router, is_up: &dyn Fn(DestId) -> bool) -> HashMap<String, f64> {
    let mut counts: HashMap<String, u64> = HashMap::new();
    for entropy in 0..CALLS {
        let call = Call {
            entropy,
            ..Call::default()
        };
        let first = plan(router, &call, is_up).destinations().next().unwrap();
        *counts
            .entry(router.destination(first).name.clone())
            .or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(k, v)| (k, v as f64 / CALLS as f64))
        .collect()
}

#[track_caller]
fn assert_share(shares: &HashMap<String, f64>, name: &str, want: f64) {
    let got = shares.get(name).copied().unwrap_or(0.0);
    assert!(
        (got - want).abs() < 0.01,
        "{name}: share {got:.4}, want {want:.4} ± 0.01 ({shares:?})"
    );
}

// ---- priority ------------------------------------------------------------------------------

#[test]
fn priority_group_orders_by_priority_then_higher_weight_then_file_order() {
    let r = one_group(
        5,
        "priority",
        r#"[{ name = "d0", priority = 5 }, { name = "d1", priority = 1 },
            { name = "d2", priority = 1, weight = 3 }, { name = "d3", priority = 1, weight = 3 },
            "d4"]"#,
        "",
    );
    assert_eq!(
        order(&r, &Call::default(), &all_up),
        ["d4", "d2", "d3", "d1", "d0"]
    );
}

#[test]
fn destination_priority_and_weight_apply_unless_the_member_overrides_them() {
    let r = compile(&format!(
        "{}\n[[destination]]\nname = \"late\"\naddress = \"127.0.0.1:5200\"\npriority = 9\n\
         [[destination]]\nname = \"early\"\naddress = \"127.0.0.1:5201\"\npriority = 2\n\
         [[group]]\nname = \"g\"\nmembers = [\"late\", {{ name = \"early\", priority = 20 }}, \"d0\"]\n\
         [[route]]\nname = \"r\"\ntiers = [\"g\"]\n",
        destinations(1)
    ));
    // d0 has the default priority 0; "early" is pushed to 20 in this group only.
    assert_eq!(
        order(&r, &Call::default(), &all_up),
        ["d0", "late", "early"]
    );
    assert_eq!(
        r.groups[0].strategy,
        Strategy::Priority,
        "priority is the default"
    );
}

#[test]
fn down_members_are_skipped_and_the_rest_keep_their_order() {
    let r = one_group(3, "priority", r#"["d0", "d1", "d2"]"#, "");
    let d1 = id(&r, "d1");
    assert_eq!(order(&r, &Call::default(), &|d| d != d1), ["d0", "d2"]);
}

// ---- weighted ------------------------------------------------------------------------------

fn weighted_1_2_1() -> Router {
    one_group(
        3,
        "weighted",
        r#"[{ name = "d0", weight = 1 }, { name = "d1", weight = 2 }, { name = "d2", weight = 1 }]"#,
        "",
    )
}

#[test]
fn weighted_1_2_1_first_attempts_follow_the_weights() {
    let r = weighted_1_2_1();
    let shares = first_pick_shares(&r, &all_up);
    assert_share(&shares, "d0", 0.25);
    assert_share(&shares, "d1", 0.50);
    assert_share(&shares, "d2", 0.25);
}

#[test]
fn weighted_1_2_1_with_the_first_member_down_splits_two_to_one_over_the_rest() {
    let r = weighted_1_2_1();
    let d0 = id(&r, "d0");
    let shares = first_pick_shares(&r, &|d| d != d0);
    assert_share(&shares, "d0", 0.0);
    assert_share(&shares, "d1", 2.0 / 3.0);
    assert_share(&shares, "d2", 1.0 / 3.0);
}

#[test]
fn weighted_1_2_1_with_the_heavy_member_down_splits_evenly_over_the_rest() {
    let r = weighted_1_2_1();
    let d1 = id(&r, "d1");
    let shares = first_pick_shares(&r, &|d| d != d1);
    assert_share(&shares, "d0", 0.5);
    assert_share(&shares, "d1", 0.0);
    assert_share(&shares, "d2", 0.5);
}

#[test]
fn weighted_failover_order_is_drawn_by_the_remaining_weights() {
    // After d0 (weight 1) is drawn first, d1 (weight 2) must come second 2 times in 3.
    let r = weighted_1_2_1();
    let (mut after_d0, mut d1_second) = (0u64, 0u64);
    for entropy in 0..CALLS {
        let o = order(
            &r,
            &Call {
                entropy,
                ..Call::default()
            },
            &all_up,
        );
        assert_eq!(o.len(), 3, "every member is in the order once: {o:?}");
        if o[0] == "d0" {
            after_d0 += 1;
            d1_second += u64::from(o[1] == "d1");
        }
    }
    let share = d1_second as f64 / after_d0 as f64;
    assert!((share - 2.0 / 3.0).abs() < 0.02, "{share}");
}

#[test]
fn weighted_standby_member_with_weight_zero_is_never_first_and_always_last() {
    let r = one_group(
        3,
        "weighted",
        r#"["d0", { name = "d1", weight = 0 }, { name = "d2", weight = 4 }]"#,
        "",
    );
    for entropy in 0..1000 {
        let o = order(
            &r,
            &Call {
                entropy,
                ..Call::default()
            },
            &all_up,
        );
        assert_eq!(o.last().map(String::as_str), Some("d1"), "{o:?}");
    }
    // When it is the only member up, the standby takes the call.
    let d1 = id(&r, "d1");
    assert_eq!(order(&r, &Call::default(), &|d| d == d1), ["d1"]);
}

#[test]
fn weighted_plan_is_the_same_for_the_same_entropy() {
    let r = weighted_1_2_1();
    for entropy in [0, 1, 42, u64::MAX] {
        let call = Call {
            entropy,
            ..Call::default()
        };
        assert_eq!(plan(&r, &call, &all_up), plan(&r, &call, &all_up));
    }
}

// ---- hash ----------------------------------------------------------------------------------

fn hash4(extra: &str) -> Router {
    one_group(4, "hash", r#"["d0", "d1", "d2", "d3"]"#, extra)
}

fn first_for_call_id(r: &Router, call_id: &str, is_up: &dyn Fn(DestId) -> bool) -> String {
    let call = Call {
        call_id: Some(call_id),
        ..Call::default()
    };
    order(r, &call, is_up).remove(0)
}

#[test]
fn hash_sends_the_same_call_id_to_the_same_member_whatever_the_entropy() {
    let r = hash4("");
    for i in 0..200 {
        let cid = format!("a84b4c76e66710@pc33.example.com-{i}");
        let orders: Vec<_> = [0, 7, u64::MAX]
            .iter()
            .map(|&entropy| {
                order(
                    &r,
                    &Call {
                        call_id: Some(&cid),
                        entropy,
                        ..Call::default()
                    },
                    &all_up,
                )
            })
            .collect();
        assert!(orders.windows(2).all(|w| w[0] == w[1]), "{orders:?}");
        assert_eq!(orders[0].len(), 4);
    }
}

#[test]
fn hash_losing_a_member_moves_only_the_calls_that_were_on_it() {
    let r = hash4("");
    let d2 = id(&r, "d2");
    let mut moved_to: HashMap<String, u64> = HashMap::new();
    let mut on_d2 = 0;
    for i in 0..10_000 {
        let cid = format!("call-{i}@carrier.example");
        let before = first_for_call_id(&r, &cid, &all_up);
        let after = first_for_call_id(&r, &cid, &|d| d != d2);
        if before == "d2" {
            on_d2 += 1;
            assert_ne!(after, "d2");
            *moved_to.entry(after).or_default() += 1;
        } else {
            assert_eq!(before, after, "{cid} moved although its member stayed up");
        }
    }
    assert!((2_000..3_000).contains(&on_d2), "d2 had {on_d2} of 10,000");
    // Its calls spread over all the others, not onto one neighbour.
    assert_eq!(moved_to.len(), 3, "{moved_to:?}");
    assert!(moved_to.values().all(|&n| n > on_d2 / 5), "{moved_to:?}");
}

#[test]
fn hash_spreads_call_ids_in_proportion_to_weight() {
    let r = one_group(
        3,
        "hash",
        r#"["d0", { name = "d1", weight = 2 }, "d2"]"#,
        "",
    );
    let mut counts: HashMap<String, u64> = HashMap::new();
    for i in 0..CALLS {
        *counts
            .entry(first_for_call_id(&r, &format!("{i:x}@h"), &all_up))
            .or_default() += 1;
    }
    let shares: HashMap<String, f64> = counts
        .into_iter()
        .map(|(k, v)| (k, v as f64 / CALLS as f64))
        .collect();
    assert_share(&shares, "d0", 0.25);
    assert_share(&shares, "d1", 0.50);
    assert_share(&shares, "d2", 0.25);
}

#[test]
fn hash_result_depends_on_member_names_not_their_order_in_the_file() {
    let a = hash4("");
    let b = one_group(4, "hash", r#"["d3", "d1", "d0", "d2"]"#, "");
    for i in 0..500 {
        let cid = format!("{i}-xyz");
        assert_eq!(
            first_for_call_id(&a, &cid, &all_up),
            first_for_call_id(&b, &cid, &all_up)
        );
    }
}

#[test]
fn hash_is_stable_across_processes_and_builds() {
    // Fixed expectations: a change here would move live calls between members of a pair
    // running two builds, so it must be deliberate.
    let r = hash4("");
    let got: Vec<String> = ["a", "b", "c", "d", "e", "f", "g", "h"]
        .iter()
        .map(|cid| first_for_call_id(&r, cid, &all_up))
        .collect();
    assert_eq!(got, GOLDEN_HASH_PICKS, "hash picks changed");
}

const GOLDEN_HASH_PICKS: [&str; 8] = ["d1", "d2", "d3", "d2", "d1", "d2", "d3", "d2"];

#[test]
fn hash_on_caller_keeps_one_caller_on_one_member_however_the_number_is_written() {
    let r = hash4("hash_on = \"caller\"");
    for n in 0..300 {
        let plain = format!("1555{n:07}");
        let pretty = format!("+1 (555) {:03}-{:04}", n / 10_000, n % 10_000);
        let first = |from: &str, cid: &str| {
            order(
                &r,
                &Call {
                    from_user: Some(from),
                    call_id: Some(cid),
                    ..Call::default()
                },
                &all_up,
            )
            .remove(0)
        };
        assert_eq!(
            first(&plain, "one"),
            first(&pretty, "two"),
            "{plain} / {pretty}"
        );
    }
}

#[test]
fn hash_without_its_key_falls_back_to_the_entropy() {
    let r = hash4("");
    let firsts: std::collections::HashSet<String> = (0..200)
        .map(|entropy| {
            order(
                &r,
                &Call {
                    entropy,
                    ..Call::default()
                },
                &all_up,
            )
            .remove(0)
        })
        .collect();
    assert_eq!(firsts.len(), 4, "calls without Call-ID spread: {firsts:?}");
}

// ---- parallel ------------------------------------------------------------------------------

#[test]
fn parallel_tier_forks_to_every_member_up_in_member_order() {
    let r = one_group(3, "parallel", r#"["d2", "d0", "d1"]"#, "");
    let p = plan(&r, &Call::default(), &all_up);
    assert_eq!(p.tiers.len(), 1);
    assert!(p.tiers[0].parallel);
    assert_eq!(p.tiers[0].strategy, Strategy::Parallel);
    assert_eq!(names(&r, p.tiers[0].members.clone()), ["d2", "d0", "d1"]);
    let d0 = id(&r, "d0");
    let p = plan(&r, &Call::default(), &|d| d != d0);
    assert_eq!(names(&r, p.tiers[0].members.clone()), ["d2", "d1"]);
}

// ---- tiers and survivability ----------------------------------------------------------------

const TIERED: &str = r#"
[[group]]
name = "a"
members = ["d0", "d1"]
[[group]]
name = "b"
strategy = "weighted"
members = ["d2", "d3"]
[[group]]
name = "hot"
strategy = "parallel"
members = ["d4", "d5"]
[[group]]
name = "lifeboat"
members = ["d6"]
[[route]]
name = "r"
tiers = ["a", "b", "hot"]
"#;

fn tiered(survivability: &str) -> Router {
    compile(&format!("{}{TIERED}{survivability}\n", destinations(7)))
}

#[test]
fn plan_lists_tiers_in_route_order_and_skips_tiers_with_no_member_up() {
    let r = tiered("");
    let p = plan(&r, &Call::default(), &all_up);
    let groups: Vec<&str> = p
        .tiers
        .iter()
        .map(|t| r.group(t.group.unwrap()).name.as_str())
        .collect();
    assert_eq!(groups, ["a", "b", "hot"]);
    assert_eq!(
        p.tiers.iter().map(|t| t.parallel).collect::<Vec<_>>(),
        [false, false, true]
    );
    assert_eq!(p.survivability, None);

    let (d0, d1) = (id(&r, "d0"), id(&r, "d1"));
    let p = plan(&r, &Call::default(), &|d| d != d0 && d != d1);
    assert_eq!(r.group(p.tiers[0].group.unwrap()).name, "b");
    assert_eq!(p.tiers.len(), 2);
}

#[test]
fn survivability_group_takes_the_call_only_when_every_tier_is_down() {
    let r = tiered("survivability = { group = \"lifeboat\" }");
    let d6 = id(&r, "d6");
    let p = plan(&r, &Call::default(), &all_up);
    assert_eq!(p.survivability, None, "tiers are up: no survivability");
    let p = plan(&r, &Call::default(), &|d| d == d6);
    assert!(p.tiers.is_empty());
    match &p.survivability {
        Some(Survival::Group(t)) => {
            assert_eq!(t.members, [d6]);
            assert_eq!(r.group(t.group.unwrap()).name, "lifeboat");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(names(&r, p.destinations()), ["d6"]);
    // The lifeboat down as well: nothing can take the call.
    assert_eq!(plan(&r, &Call::default(), &|_| false), Plan::default());
}

#[test]
fn survivability_reject_gives_the_code_and_retry_after_when_every_tier_is_down() {
    let r = tiered("survivability = { reject = 503, retry_after = \"30s\" }");
    let p = plan(&r, &Call::default(), &|_| false);
    assert!(p.tiers.is_empty());
    assert_eq!(
        p.survivability,
        Some(Survival::Reject {
            code: 503,
            retry_after: Some(Duration::from_secs(30))
        })
    );
    assert_eq!(plan(&r, &Call::default(), &all_up).survivability, None);
}

#[test]
fn route_without_survivability_plans_nothing_when_every_tier_is_down() {
    assert_eq!(
        plan(&tiered(""), &Call::default(), &|_| false),
        Plan::default()
    );
}

#[test]
fn a_destination_in_two_tiers_is_tried_only_in_the_first() {
    let r = compile(&format!(
        "{}[[group]]\nname = \"a\"\nmembers = [\"d0\", \"d1\"]\n\
         [[group]]\nname = \"all\"\nmembers = [\"d1\", \"d0\", \"d2\"]\n\
         [[route]]\nname = \"r\"\ntiers = [\"a\", \"all\"]\n",
        destinations(3)
    ));
    let p = plan(&r, &Call::default(), &all_up);
    assert_eq!(names(&r, p.tiers[1].members.clone()), ["d2"]);
    assert_eq!(names(&r, p.destinations()), ["d0", "d1", "d2"]);
    // With d0 down in tier 1, d1 is still only tried once.
    let d0 = id(&r, "d0");
    assert_eq!(
        names(&r, plan(&r, &Call::default(), &|d| d != d0).destinations()),
        ["d1", "d2"]
    );
}

#[test]
fn destinations_shorthand_is_one_single_member_tier_per_destination() {
    let r = compile(&format!(
        "{}[[route]]\nname = \"r\"\ndestinations = [\"d2\", \"d0\"]\n",
        destinations(3)
    ));
    let p = plan(&r, &Call::default(), &all_up);
    assert_eq!(p.tiers.len(), 2);
    assert!(p
        .tiers
        .iter()
        .all(|t| t.group.is_none() && !t.parallel && t.members.len() == 1));
    assert_eq!(names(&r, p.destinations()), ["d2", "d0"]);
}

#[test]
fn flat_route_destinations_are_the_tiers_in_order_with_every_member_up() {
    let r = compile(&format!(
        "{}[[group]]\nname = \"a\"\nmembers = [{{ name = \"d1\", priority = 2 }}, \"d0\"]\n\
         [[group]]\nname = \"w\"\nstrategy = \"weighted\"\n\
         members = [\"d2\", {{ name = \"d3\", weight = 5 }}, {{ name = \"d1\", weight = 9 }}]\n\
         [[group]]\nname = \"p\"\nstrategy = \"parallel\"\nmembers = [\"d5\", \"d4\"]\n\
         [[route]]\nname = \"r\"\ntiers = [\"a\", \"w\", \"p\"]\n",
        destinations(6)
    ));
    // a: by priority; w: by weight, highest first (d1 already listed); p: member order.
    assert_eq!(
        names(&r, r.route(RouteId(0)).destinations.clone()),
        ["d0", "d1", "d3", "d2", "d5", "d4"]
    );
}
