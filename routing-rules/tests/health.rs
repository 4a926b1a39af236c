//! A destination's health keys (`probe`, `probe_interval`, `probe_timeout`, `failure_threshold`,
//! `recovery_threshold`, `probe_codes`) as `Router::compile` reads them: defaults, explicit
//! values, and one test per validation error (exact key path and a phrase of the message).

// Test support: a failed assumption here is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{assert_one_error, compile, errors};
use routing_rules::{CodeSet, HealthSettings};
use std::time::Duration;

/// One destination `a` with `extra` lines in its table, and a route to it.
fn one(extra: &str) -> String {
    format!(
        "[[destination]]\nname = \"a\"\naddress = \"10.0.0.1:5060\"\n{extra}\n\
         [[route]]\nname = \"r\"\ndestinations = [\"a\"]\n"
    )
}

#[test]
fn health_keys_default_to_probing_every_10s_with_thresholds_3_and_5() {
    let router = compile(&one(""));
    let h = &router.rules.destinations[0].health;
    assert_eq!(
        *h,
        HealthSettings {
            probe: true,
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            failure_threshold: 3,
            recovery_threshold: 5,
            codes: CodeSet(vec![200]),
        }
    );
    assert_eq!(*h, HealthSettings::default());
}

#[test]
fn explicit_health_keys_are_kept() {
    let router = compile(&one(
        "probe = false\nprobe_interval = \"100ms\"\nprobe_timeout = \"80ms\"\n\
         failure_threshold = 2\nrecovery_threshold = 1\nprobe_codes = [200, 404]",
    ));
    let h = &router.rules.destinations[0].health;
    assert!(!h.probe);
    assert_eq!(h.interval, Duration::from_millis(100));
    assert_eq!(h.timeout, Duration::from_millis(80));
    assert_eq!(h.failure_threshold, 2);
    assert_eq!(h.recovery_threshold, 1);
    assert_eq!(h.codes, CodeSet(vec![200, 404]));
}

#[test]
fn probe_interval_below_50ms_is_rejected() {
    assert_one_error(
        &one("probe_interval = \"10ms\"\nprobe_timeout = \"20ms\""),
        "destination[0].probe_interval",
        "probe_interval = \"10ms\" is too short: use a duration from 50ms to 1h",
    );
}

#[test]
fn probe_interval_above_one_hour_is_rejected() {
    assert_one_error(
        &one("probe_interval = \"2h\""),
        "destination[0].probe_interval",
        "too long",
    );
}

#[test]
fn probe_timeout_below_10ms_is_rejected() {
    assert_one_error(
        &one("probe_timeout = \"5ms\""),
        "destination[0].probe_timeout",
        "probe_timeout = \"5ms\" is too short: use a duration from 10ms to 1min",
    );
}

#[test]
fn probe_timeout_above_60s_is_rejected() {
    assert_one_error(
        &one("probe_interval = \"10min\"\nprobe_timeout = \"2min\""),
        "destination[0].probe_timeout",
        "probe_timeout = \"2min\" is too long",
    );
}

#[test]
fn probe_timeout_not_shorter_than_the_interval_is_rejected_at_the_timeout() {
    assert_one_error(
        &one("probe_interval = \"1s\"\nprobe_timeout = \"1s\""),
        "destination[0].probe_timeout",
        "probe_timeout = \"1s\" is not shorter than probe_interval = \"1s\"",
    );
}

#[test]
fn interval_below_the_default_timeout_is_rejected_at_the_interval_naming_the_default() {
    assert_one_error(
        &one("probe_interval = \"1s\""),
        "destination[0].probe_interval",
        "probe_timeout (not set, default \"2s\") is not shorter than probe_interval = \"1s\"",
    );
}

#[test]
fn zero_failure_threshold_is_rejected() {
    assert_one_error(
        &one("failure_threshold = 0"),
        "destination[0].failure_threshold",
        "failure_threshold = 0 is out of range: use 1..=100",
    );
}

#[test]
fn recovery_threshold_above_100_is_rejected() {
    assert_one_error(
        &one("recovery_threshold = 101"),
        "destination[0].recovery_threshold",
        "recovery_threshold = 101 is out of range: use 1..=100 consecutive results (default 5)",
    );
}

#[test]
fn probe_code_503_is_rejected_because_it_always_fails() {
    assert_one_error(
        &one("probe_codes = [200, 503]"),
        "destination[0].probe_codes[1]",
        "503 always counts as a failure",
    );
}

#[test]
fn provisional_and_invalid_probe_codes_are_rejected() {
    assert_one_error(
        &one("probe_codes = [180]"),
        "destination[0].probe_codes[0]",
        "provisional",
    );
    assert_one_error(
        &one("probe_codes = [200, 700]"),
        "destination[0].probe_codes[1]",
        "not a SIP status code",
    );
}

#[test]
fn duplicate_probe_code_is_rejected() {
    assert_one_error(
        &one("probe_codes = [200, 404, 200]"),
        "destination[0].probe_codes[2]",
        "listed twice (also at destination[0].probe_codes[0])",
    );
}

#[test]
fn empty_probe_codes_is_rejected() {
    assert_one_error(
        &one("probe_codes = []"),
        "destination[0].probe_codes",
        "probe_codes is empty",
    );
}

#[test]
fn every_health_error_of_a_destination_is_reported() {
    let errs = errors(&one(
        "probe_interval = \"2h\"\nfailure_threshold = 0\nrecovery_threshold = 0\nprobe_codes = [503]",
    ));
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "destination[0].probe_interval",
            "destination[0].failure_threshold",
            "destination[0].recovery_threshold",
            "destination[0].probe_codes[0]",
        ]
    );
}

#[test]
fn misspelt_health_key_is_a_structural_error() {
    let text = one("probe_intervall = \"5s\"");
    let err = toml::from_str::<common::Doc>(&text)
        .err()
        .expect("unknown key rejected");
    assert!(err.to_string().contains("probe_intervall"), "{err}");
}
