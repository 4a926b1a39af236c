//! The Prometheus exporter: the recorder every metric of [`Metrics`] is registered on (and, by
//! the node, the media relay's and the process's own: [`crate::process`]), and the text
//! `GET /metrics` serves ([`PrometheusHandle::render`]). [`install`] makes it the process's
//! global recorder (once per process) and starts the thread that runs its upkeep; [`local`]
//! builds a private one (tests, several nodes in one process).
//!
//! It must not: name or label metrics (that is `pointsman_protocol::metrics`), or serve HTTP
//! (that is `admin`).

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use pointsman_protocol::media::metrics as media_metrics;
use pointsman_protocol::metrics::{
    name, Metrics, INVITE_FINAL_BUCKETS, POST_DIAL_DELAY_BUCKETS, TAKEOVER_BUCKETS,
    UDP_TRANSIT_BUCKETS,
};
use std::sync::Arc;
use std::time::Duration;

/// Failed to set up metrics.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("a metrics recorder is already installed in this process: install metrics once")]
    AlreadyInstalled,
    #[error("cannot configure the Prometheus exporter: {0}")]
    Build(#[from] metrics_exporter_prometheus::BuildError),
    #[error("cannot start the metrics upkeep thread: {0}")]
    Upkeep(#[from] std::io::Error),
}

/// How often the installed recorder's upkeep runs (drains histogram samples into buckets, so
/// memory stays bounded between scrapes).
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Builds the recorder, installs it as the process's global recorder (so a `counter!`
/// anywhere also shows up), starts the upkeep thread, and registers every series for
/// these destinations and routes (names in config order). Call it once per process.
pub fn install<D: AsRef<str>, R: AsRef<str>>(
    destinations: &[D],
    routes: &[R],
) -> Result<(Metrics, PrometheusHandle), MetricsError> {
    let recorder = Arc::new(builder()?.build_recorder());
    ::metrics::set_global_recorder(recorder.clone()).map_err(|_| MetricsError::AlreadyInstalled)?;
    let handle = recorder.handle();
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            upkeep.run_upkeep();
        })?;
    Ok((Metrics::register(recorder, destinations, routes), handle))
}

/// A private recorder, not installed globally and with no upkeep thread (rendering drains
/// histogram samples too): for tests, or several nodes in one process.
pub fn local<D: AsRef<str>, R: AsRef<str>>(
    destinations: &[D],
    routes: &[R],
) -> (Metrics, PrometheusHandle) {
    // The buckets are constants, never empty, so the builder cannot fail.
    let builder = builder().unwrap_or_else(|_| PrometheusBuilder::new());
    let recorder = Arc::new(builder.build_recorder());
    let handle = recorder.handle();
    (Metrics::register(recorder, destinations, routes), handle)
}

fn builder() -> Result<PrometheusBuilder, metrics_exporter_prometheus::BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(name::POST_DIAL_DELAY.into()),
            &POST_DIAL_DELAY_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(name::INVITE_FINAL.into()),
            &INVITE_FINAL_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(name::UDP_TRANSIT.into()),
            &UDP_TRANSIT_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(media_metrics::name::SWITCH_GAP.into()),
            &media_metrics::SWITCH_GAP_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(crate::cluster::HANDOVER.into()),
            &UDP_TRANSIT_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(crate::cluster::CONFIRM_LAG.into()),
            &UDP_TRANSIT_BUCKETS,
        )?
        .set_buckets_for_metric(Matcher::Full(name::TAKEOVER.into()), &TAKEOVER_BUCKETS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pointsman_protocol::health::{Cap, State};
    use pointsman_protocol::metrics::*;
    use pointsman_protocol::wire::Method;
    use pointsman_protocol::wire::{ParseErrorKind, ScanError};
    use routing_rules::{DestId, RouteId};

    const DESTS: [&str; 3] = ["primary", "secondary", "lifeboat"];
    const ROUTES: [&str; 2] = ["default", "emergency"];

    fn local() -> (Metrics, PrometheusHandle) {
        super::local(&DESTS, &ROUTES)
    }

    /// Asserts that every expected line is in the rendered text, exactly.
    #[track_caller]
    fn assert_lines(text: &str, expected: &[&str]) {
        let lines: std::collections::HashSet<&str> = text.lines().collect();
        let missing: Vec<&&str> = expected.iter().filter(|l| !lines.contains(**l)).collect();
        assert!(missing.is_empty(), "missing {missing:#?} in:\n{text}");
    }

    /// The rendered lines in sorted order (the exporter's order is a hash map's).
    fn sorted(text: &str) -> Vec<&str> {
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort_unstable();
        lines
    }

    fn series<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .collect()
    }

    #[test]
    fn scripted_calls_render_exact_counter_values() {
        let (m, h) = local();
        let default = Some(RouteId(0));
        let (primary, secondary) = (DestId(0), DestId(1));
        // 10 calls on route "default": 3 fail over from the primary (2 silent, 1 answered 503)
        // and are answered by the secondary; one of those also brings a ghost 200 from the
        // primary. 4 more are answered at once, then 1 busy, 1 cancelled, 1 failed.
        for i in 0..10 {
            m.request(Method::Invite);
            m.branch_attempt(primary);
            if i < 3 {
                let reason = if i < 2 {
                    FailoverReason::Timeout
                } else {
                    m.response_in(503);
                    FailoverReason::Code
                };
                m.failover(primary, reason);
                m.cancel_sent();
                m.branch_attempt(secondary);
            }
        }
        m.ghost_torn_down();
        for _ in 0..7 {
            m.response_in(200);
            m.response_out(200);
            m.call_outcome(default, 200, false);
        }
        m.call_outcome(default, 486, false);
        m.request(Method::Cancel);
        m.call_outcome(default, 487, true);
        m.call_outcome(default, 503, false);
        m.call_outcome(None, 404, false);
        m.request(Method::from_token(b"FOO"));

        let text = h.render();
        assert_lines(
            &text,
            &[
                r#"pointsman_requests_total{method="INVITE"} 10"#,
                r#"pointsman_requests_total{method="CANCEL"} 1"#,
                r#"pointsman_requests_total{method="other"} 1"#,
                r#"pointsman_requests_total{method="BYE"} 0"#,
                r#"pointsman_responses_total{class="2xx",direction="in"} 7"#,
                r#"pointsman_responses_total{class="2xx",direction="out"} 7"#,
                r#"pointsman_responses_total{class="5xx",direction="in"} 1"#,
                r#"pointsman_responses_total{class="5xx",direction="out"} 0"#,
                r#"pointsman_calls_total{route="default",outcome="answered"} 7"#,
                r#"pointsman_calls_total{route="default",outcome="busy"} 1"#,
                r#"pointsman_calls_total{route="default",outcome="cancelled"} 1"#,
                r#"pointsman_calls_total{route="default",outcome="failed"} 1"#,
                r#"pointsman_calls_total{route="default",outcome="rejected"} 0"#,
                r#"pointsman_calls_total{route="default",outcome="timeout"} 0"#,
                r#"pointsman_calls_total{route="emergency",outcome="answered"} 0"#,
                r#"pointsman_calls_total{route="(none)",outcome="rejected"} 1"#,
                r#"pointsman_branch_attempts_total{destination="primary"} 10"#,
                r#"pointsman_branch_attempts_total{destination="secondary"} 3"#,
                r#"pointsman_branch_attempts_total{destination="lifeboat"} 0"#,
                r#"pointsman_failovers_total{destination="primary",reason="timeout"} 2"#,
                r#"pointsman_failovers_total{destination="primary",reason="code"} 1"#,
                r#"pointsman_failovers_total{destination="primary",reason="transport"} 0"#,
                r#"pointsman_failovers_total{destination="secondary",reason="timeout"} 0"#,
                "pointsman_cancels_sent_total 3",
                "pointsman_ghost_calls_torn_down_total 1",
            ],
        );
    }

    #[test]
    fn every_series_is_registered_before_first_use() {
        let (_m, h) = local();
        let text = h.render();
        let count = |name| series(&text, name).len();
        assert_eq!(count("pointsman_requests_total"), METHODS.len());
        assert_eq!(count("pointsman_responses_total"), 12);
        // 2 routes and "(none)", 6 outcomes each.
        assert_eq!(count("pointsman_calls_total"), 18);
        assert_eq!(count("pointsman_branch_attempts_total"), 3);
        assert_eq!(count("pointsman_failovers_total"), 9);
        assert_eq!(count("pointsman_destination_state"), 3);
        assert_eq!(count("pointsman_probe_rtt_seconds"), 3);
        // 3 destinations, 2 caps each.
        assert_eq!(count("pointsman_destination_capped_total"), 6);
        assert_eq!(count("pointsman_destination_calls_in_progress"), 3);
        assert_eq!(
            count("pointsman_parse_errors_total"),
            ParseErrorKind::ALL.len() + 1
        );
        assert_eq!(count("pointsman_dropped_total"), DropReason::ALL.len());
        for one in [
            "pointsman_cancels_sent_total",
            "pointsman_ghost_calls_torn_down_total",
            "pointsman_calls_in_progress",
            "pointsman_transactions",
            "pointsman_node_state",
        ] {
            assert_eq!(count(one), 1, "{one}");
        }
        for (_, name, help) in DESCRIPTIONS {
            assert!(text.contains(&format!("# HELP {name} {help}\n")), "{name}");
        }
        assert!(series(&text, "pointsman_calls_total")
            .iter()
            .all(|l| l.ends_with(" 0")));
    }

    #[test]
    fn call_outcomes_follow_the_final_code_and_the_callers_cancel() {
        use CallOutcome::*;
        let cases = [
            (200, false, Some(Answered)),
            (202, true, Some(Answered)),
            (486, false, Some(Busy)),
            (600, false, Some(Busy)),
            (487, true, Some(Cancelled)),
            (503, true, Some(Cancelled)),
            (487, false, Some(Rejected)),
            (404, false, Some(Rejected)),
            (603, false, Some(Rejected)),
            (302, false, Some(Rejected)),
            (500, false, Some(Failed)),
            (503, false, Some(Failed)),
            (408, false, Some(Timeout)),
            (180, false, None),
            (100, true, None),
            (700, false, None),
            (0, false, None),
        ];
        for (code, cancelled, want) in cases {
            assert_eq!(
                CallOutcome::classify(code, cancelled),
                want,
                "{code} cancelled={cancelled}"
            );
        }
    }

    #[test]
    fn histograms_have_the_explicit_buckets() {
        let (m, h) = local();
        m.post_dial_delay(Duration::from_millis(300));
        m.post_dial_delay(Duration::from_millis(2500));
        m.invite_final(Duration::from_secs(4));
        m.udp_transit(Duration::from_micros(40));
        m.udp_transit(Duration::from_micros(900));
        let text = h.render();
        assert_lines(
            &text,
            &[
                r#"pointsman_post_dial_delay_seconds_bucket{le="0.25"} 0"#,
                r#"pointsman_post_dial_delay_seconds_bucket{le="0.5"} 1"#,
                r#"pointsman_post_dial_delay_seconds_bucket{le="2"} 1"#,
                r#"pointsman_post_dial_delay_seconds_bucket{le="3"} 2"#,
                r#"pointsman_post_dial_delay_seconds_bucket{le="+Inf"} 2"#,
                "pointsman_post_dial_delay_seconds_count 2",
                "pointsman_post_dial_delay_seconds_sum 2.8",
                r#"pointsman_invite_final_seconds_bucket{le="3"} 0"#,
                r#"pointsman_invite_final_seconds_bucket{le="5"} 1"#,
                "pointsman_invite_final_seconds_count 1",
                r#"pointsman_udp_transit_seconds_bucket{le="0.000025"} 0"#,
                r#"pointsman_udp_transit_seconds_bucket{le="0.00005"} 1"#,
                r#"pointsman_udp_transit_seconds_bucket{le="0.00075"} 1"#,
                r#"pointsman_udp_transit_seconds_bucket{le="0.001"} 2"#,
                "pointsman_udp_transit_seconds_count 2",
            ],
        );
        let buckets = |name| {
            series(&text, name)
                .iter()
                .filter(|l| l.contains("_bucket{"))
                .count()
        };
        assert_eq!(
            buckets("pointsman_post_dial_delay_seconds_bucket"),
            POST_DIAL_DELAY_BUCKETS.len() + 1
        );
        assert_eq!(
            buckets("pointsman_invite_final_seconds_bucket"),
            INVITE_FINAL_BUCKETS.len() + 1
        );
        assert_eq!(
            buckets("pointsman_udp_transit_seconds_bucket"),
            UDP_TRANSIT_BUCKETS.len() + 1
        );
    }

    #[test]
    fn gauges_track_deltas_states_and_probe_rtt() {
        let (m, h) = local();
        m.calls_in_progress(3);
        m.calls_in_progress(-1);
        m.set_transactions(5);
        m.set_transactions(1);
        m.destination_state(DestId(0), State::Up);
        m.destination_state(DestId(1), State::Maintenance);
        m.destination_state(DestId(2), State::Probing);
        m.destination_state(DestId(2), State::ForcedUp);
        m.probe_rtt(DestId(0), Duration::from_micros(1500));
        m.destination_calls_in_progress(DestId(1), 7);
        m.destination_calls_in_progress(DestId(1), 4);
        m.capped(DestId(0), Cap::Calls);
        m.capped(DestId(0), Cap::Calls);
        m.capped(DestId(2), Cap::Cps);
        assert!(h.render().lines().any(|l| l == "pointsman_node_state 0"));
        m.node_state(NodeState::Draining);
        m.node_state(NodeState::Stopping);
        assert_lines(
            &h.render(),
            &[
                "pointsman_node_state 2",
                "pointsman_calls_in_progress 2",
                "pointsman_transactions 1",
                r#"pointsman_destination_state{destination="primary"} 1"#,
                r#"pointsman_destination_state{destination="secondary"} 3"#,
                r#"pointsman_destination_state{destination="lifeboat"} 4"#,
                r#"pointsman_probe_rtt_seconds{destination="primary"} 0.0015"#,
                r#"pointsman_probe_rtt_seconds{destination="secondary"} 0"#,
                r#"pointsman_destination_calls_in_progress{destination="primary"} 0"#,
                r#"pointsman_destination_calls_in_progress{destination="secondary"} 4"#,
                r#"pointsman_destination_capped_total{destination="primary",cap="calls"} 2"#,
                r#"pointsman_destination_capped_total{destination="primary",cap="cps"} 0"#,
                r#"pointsman_destination_capped_total{destination="lifeboat",cap="cps"} 1"#,
            ],
        );
        let codes: Vec<(u8, &str)> = State::ALL.iter().map(|s| (s.as_u8(), s.as_str())).collect();
        assert_eq!(
            codes,
            [
                (0, "down"),
                (1, "up"),
                (2, "draining"),
                (3, "maintenance"),
                (4, "forced-up"),
                (5, "probing")
            ]
        );
    }

    #[test]
    fn every_scan_error_kind_has_its_own_label() {
        let (m, h) = local();
        for kind in ParseErrorKind::ALL {
            m.parse_error(kind);
        }
        m.parse_error(
            ScanError::BadHeader {
                header: "Via",
                reason: "x",
            }
            .kind(),
        );
        m.dropped(DropReason::Acl);
        m.dropped(DropReason::Stray);
        m.dropped(DropReason::Stray);
        let text = h.render();
        assert_lines(
            &text,
            &[
                r#"pointsman_parse_errors_total{kind="bad_header"} 2"#,
                r#"pointsman_parse_errors_total{kind="too_many_vias"} 1"#,
                r#"pointsman_parse_errors_total{kind="other"} 0"#,
                r#"pointsman_dropped_total{reason="acl"} 1"#,
                r#"pointsman_dropped_total{reason="stray"} 2"#,
                r#"pointsman_dropped_total{reason="rate_limit"} 0"#,
            ],
        );
    }

    #[test]
    fn rebind_keeps_counters_of_kept_names_and_registers_new_ones() {
        let (m, h) = local();
        m.branch_attempt(DestId(1));
        m.call_outcome(Some(RouteId(0)), 200, false);
        m.cancel_sent();
        // "secondary" moves to index 0, "primary" goes, "edge-b" comes.
        let m2 = m.rebind(&["secondary", "edge-b"], &["default"]);
        m2.branch_attempt(DestId(0));
        m2.branch_attempt(DestId(1));
        m2.branch_attempt(DestId(2)); // out of range: ignored
        m2.call_outcome(Some(RouteId(0)), 200, false);
        m2.call_outcome(Some(RouteId(1)), 200, false); // out of range: ignored
        m2.cancel_sent();
        assert_lines(
            &h.render(),
            &[
                r#"pointsman_branch_attempts_total{destination="secondary"} 2"#,
                r#"pointsman_branch_attempts_total{destination="edge-b"} 1"#,
                r#"pointsman_branch_attempts_total{destination="primary"} 0"#,
                r#"pointsman_calls_total{route="default",outcome="answered"} 2"#,
                r#"pointsman_calls_total{route="emergency",outcome="answered"} 0"#,
                "pointsman_cancels_sent_total 2",
            ],
        );
    }

    #[test]
    fn codes_and_indexes_out_of_range_are_ignored() {
        let (m, h) = local();
        let before = h.render();
        m.response_in(99);
        m.response_out(700);
        m.call_outcome(Some(RouteId(0)), 183, false);
        m.call_outcome(Some(RouteId(7)), 200, false);
        m.branch_attempt(DestId(3));
        m.failover(DestId(u32::MAX), FailoverReason::Transport);
        m.destination_state(DestId(9), State::Up);
        m.probe_rtt(DestId(9), Duration::from_millis(1));
        m.capped(DestId(3), Cap::Calls);
        m.destination_calls_in_progress(DestId(3), 1);
        assert_eq!(sorted(&h.render()), sorted(&before));
        m.response_in(100);
        m.response_out(699);
        assert_lines(
            &h.render(),
            &[
                r#"pointsman_responses_total{class="1xx",direction="in"} 1"#,
                r#"pointsman_responses_total{class="6xx",direction="out"} 1"#,
            ],
        );
    }

    #[test]
    fn install_sets_the_global_recorder_once() {
        let (m, h) = install(&["primary"], &["default"]).expect("first install");
        m.cancel_sent();
        ::metrics::counter!("pointsman_test_global_total").increment(2);
        let text = h.render();
        assert_lines(
            &text,
            &[
                "pointsman_cancels_sent_total 1",
                "pointsman_test_global_total 2",
            ],
        );
        assert!(matches!(
            install(&["primary"], &["default"]),
            Err(MetricsError::AlreadyInstalled)
        ));
    }
}
