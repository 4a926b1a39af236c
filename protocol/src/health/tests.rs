//! Deterministic tests of the health machine (time passed in) and of the shared table: each test
//! names the rule it proves (see `machine.rs` for the rules).

use super::machine::fmt_rtt;
use super::*;
use routing_rules::spec::{DestinationSpec, RouteSpec};
use routing_rules::{CodeSet, HealthSettings};

const MS: Duration = Duration::from_millis(1);
const RTT: Duration = Duration::from_millis(12);

fn settings(f: impl FnOnce(&mut Settings)) -> Settings {
    let mut s = Settings {
        health: HealthSettings::default(),
        trusted: true,
        policy: Policy::default(),
    };
    f(&mut s);
    s
}

/// A machine on default settings, and a clock.
struct Rig {
    m: Machine,
    now: Instant,
    transitions: Vec<Transition>,
    /// Calls in progress at the destination (the table counts them; the machine is told).
    calls: u32,
}

impl Rig {
    fn new(s: Settings) -> Rig {
        let now = Instant::now();
        Rig {
            m: Machine::new(s, now),
            now,
            transitions: Vec::new(),
            calls: 0,
        }
    }
    fn default() -> Rig {
        Rig::new(settings(|_| {}))
    }
    fn advance(&mut self, d: Duration) {
        self.now += d;
        if let Some(t) = self.m.poll(self.now) {
            self.transitions.push(t);
        }
    }
    fn keep(&mut self, t: Option<Transition>) -> Option<Transition> {
        if let Some(t) = &t {
            self.transitions.push(t.clone());
        }
        t
    }
    /// One probe cycle: sent, then answered with `code`.
    fn ok(&mut self) -> Option<Transition> {
        self.reply(200)
    }
    fn reply(&mut self, code: u16) -> Option<Transition> {
        self.m.probe_sent(self.now);
        let t = self.m.probe_reply(code, RTT, self.now + RTT);
        self.now += Duration::from_secs(10);
        self.keep(t)
    }
    fn timeout(&mut self) -> Option<Transition> {
        self.m.probe_sent(self.now);
        let t = self.m.probe_timeout(self.now + Duration::from_secs(2));
        self.now += Duration::from_secs(10);
        self.keep(t)
    }
    fn passive(&mut self, p: Passive) -> Option<Transition> {
        let t = self.m.passive(p, self.now);
        self.keep(t)
    }
    fn admin(&mut self, a: AdminAction) -> Option<Transition> {
        let t = self.m.admin(a, self.calls, self.now);
        self.keep(t)
    }
    /// Brings a fresh machine to Up, then Down by probe timeouts.
    fn down(&mut self) {
        self.ok();
        while self.m.state() != State::Down {
            self.timeout();
        }
        self.transitions.clear();
    }
}

// ---- start ------------------------------------------------------------------------------

#[test]
fn fresh_destination_is_probing_takes_calls_and_wants_a_probe_at_once() {
    let r = Rig::default();
    assert_eq!(r.m.state(), State::Probing);
    assert!(r.m.accepts_calls(), "optimistic at start");
    assert_eq!(r.m.wants_probe(), Some(r.now));
    assert_eq!(r.m.reason(), "no probe result yet");
}

#[test]
fn first_successful_probe_makes_a_fresh_destination_up() {
    let mut r = Rig::default();
    let t = r.ok().expect("transition");
    assert_eq!((t.from, t.to), (State::Probing, State::Up));
    assert_eq!(t.reason, "first probe answered 200 in 12.0ms");
    assert_eq!(r.m.last_probe_rtt(), Some(RTT));
}

#[test]
fn fresh_destination_that_never_answers_goes_down_after_the_failure_threshold() {
    let mut r = Rig::default();
    assert_eq!(r.timeout(), None);
    assert_eq!(r.timeout(), None);
    let t = r.timeout().expect("down at the third failure");
    assert_eq!((t.from, t.to), (State::Probing, State::Down));
    assert!(!r.m.accepts_calls());
}

#[test]
fn unprobed_destination_starts_up_and_wants_no_probe() {
    let r = Rig::new(settings(|s| s.health.probe = false));
    assert_eq!(r.m.state(), State::Up);
    assert_eq!(r.m.wants_probe(), None);
    assert_eq!(r.m.next_wakeup(), None);
}

// ---- thresholds -------------------------------------------------------------------------

#[test]
fn up_destination_goes_down_after_exactly_the_failure_threshold() {
    for threshold in [1, 3, 7] {
        let mut r = Rig::new(settings(|s| s.health.failure_threshold = threshold));
        r.ok();
        for k in 1..threshold {
            assert_eq!(
                r.timeout(),
                None,
                "threshold {threshold}: still up after {k}"
            );
            assert_eq!(r.m.state(), State::Up);
            assert_eq!(r.m.consecutive_failures(), k);
        }
        let t = r.timeout().expect("down");
        assert_eq!((t.from, t.to), (State::Up, State::Down));
        assert!(
            t.reason
                .contains(&format!("{threshold} consecutive failure"))
                && t.reason.contains("probe got no reply in 2s"),
            "{}",
            t.reason
        );
    }
}

#[test]
fn a_success_resets_the_failure_count() {
    let mut r = Rig::default();
    r.ok();
    r.timeout();
    r.timeout();
    r.ok();
    r.timeout();
    r.timeout();
    assert_eq!(r.m.state(), State::Up);
    assert_eq!(r.timeout().map(|t| t.to), Some(State::Down));
}

#[test]
fn down_destination_comes_back_only_after_exactly_the_recovery_threshold() {
    let mut r = Rig::default();
    r.down();
    for k in 1..5 {
        assert_eq!(r.ok(), None, "still down after {k} successes");
        assert_eq!(r.m.state(), State::Down);
        assert!(!r.m.accepts_calls());
        assert_eq!(r.m.consecutive_successes(), k);
    }
    let t = r.ok().expect("up at the fifth success");
    assert_eq!((t.from, t.to), (State::Down, State::Up));
    assert_eq!(
        t.reason,
        "5 consecutive successful probes (last: probe answered 200 in 12.0ms)"
    );
    assert!(r.m.accepts_calls());
}

#[test]
fn flapping_destination_never_oscillates_once_down() {
    let mut r = Rig::default();
    r.down();
    for _ in 0..50 {
        r.ok();
        r.timeout();
    }
    // Four successes in a row are still one short.
    for _ in 0..4 {
        r.ok();
    }
    r.reply(404);
    assert!(r.transitions.is_empty(), "{:#?}", r.transitions);
    assert_eq!(r.m.state(), State::Down);
}

#[test]
fn flapping_destination_that_is_up_stays_up() {
    let mut r = Rig::default();
    r.ok();
    r.transitions.clear();
    for _ in 0..50 {
        r.timeout();
        r.timeout();
        r.ok();
    }
    assert!(r.transitions.is_empty(), "{:#?}", r.transitions);
}

#[test]
fn codes_outside_probe_codes_and_503_are_failures() {
    let mut r = Rig::new(settings(|s| {
        s.health.codes = CodeSet(vec![200, 404]);
        s.health.failure_threshold = 1;
    }));
    assert_eq!(r.reply(404).map(|t| t.to), Some(State::Up));
    assert_eq!(r.reply(500).map(|t| t.to), Some(State::Down));
    let mut r = Rig::new(settings(|s| {
        // Even if a hand-made setting lists it, 503 is a failure.
        s.health.codes = CodeSet(vec![200, 503]);
        s.health.failure_threshold = 1;
    }));
    let t = r.reply(503).expect("down");
    assert_eq!(t.to, State::Down);
    assert!(t.reason.contains("probe answered 503"), "{}", t.reason);
    assert_eq!(r.m.counters().probes_failed, 1);
}

#[test]
fn provisional_reply_is_ignored() {
    let mut r = Rig::default();
    r.m.probe_sent(r.now);
    assert_eq!(r.m.probe_reply(100, RTT, r.now), None);
    assert_eq!(r.m.state(), State::Probing);
    assert_eq!(r.m.counters(), Counters::default());
}

#[test]
fn probe_errors_count_as_failures() {
    let mut r = Rig::new(settings(|s| s.health.failure_threshold = 1));
    let t =
        r.m.probe_error("cannot connect to 10.0.0.1:5060: refused", r.now)
            .expect("down");
    assert_eq!(
        t.reason,
        "1 consecutive failure (last: probe failed: cannot connect to 10.0.0.1:5060: refused)"
    );
}

// ---- scheduling -------------------------------------------------------------------------

#[test]
fn next_probe_is_one_interval_after_the_last_one_sent() {
    let mut r = Rig::new(settings(|s| s.health.interval = Duration::from_secs(7)));
    let t0 = r.now;
    r.m.probe_sent(t0);
    assert_eq!(r.m.wants_probe(), Some(t0 + Duration::from_secs(7)));
    assert_eq!(r.m.next_wakeup(), Some(t0 + Duration::from_secs(7)));
}

// ---- passive signals --------------------------------------------------------------------

#[test]
fn passive_failures_count_towards_the_threshold() {
    let mut r = Rig::default();
    r.ok();
    assert_eq!(r.passive(Passive::Timeout), None);
    assert_eq!(r.timeout(), None);
    let t = r.passive(Passive::Transport).expect("down");
    assert_eq!(t.to, State::Down);
    assert!(
        t.reason.contains("a call hit a transport error"),
        "{}",
        t.reason
    );
    assert_eq!(r.m.counters().failures, 2);
}

#[test]
fn passive_failures_do_not_count_when_passive_is_off() {
    let mut r = Rig::new(settings(|s| s.policy.passive = false));
    r.ok();
    for _ in 0..10 {
        assert_eq!(r.passive(Passive::Timeout), None);
        assert_eq!(r.passive(Passive::Unavailable { retry_after: None }), None);
    }
    assert_eq!(r.m.state(), State::Up);
    assert_eq!(
        r.m.counters().failures,
        20,
        "still counted for the admin API"
    );
}

#[test]
fn a_passive_failure_while_down_restarts_the_recovery_count() {
    let mut r = Rig::default();
    r.down();
    for _ in 0..4 {
        r.ok();
    }
    r.passive(Passive::Timeout);
    for _ in 0..4 {
        assert_eq!(r.ok(), None);
    }
    assert_eq!(r.ok().map(|t| t.to), Some(State::Up));
}

// ---- calls outrank probes (brown-out) -----------------------------------------------------

/// Successful probes every second for `secs` seconds, polling the machine as the prober does.
fn probes_ok_for(r: &mut Rig, secs: u64) {
    for _ in 0..secs {
        r.m.probe_sent(r.now);
        let t = r.m.probe_reply(200, RTT, r.now);
        r.keep(t);
        r.advance(Duration::from_secs(1));
    }
}

/// Calls fail on it until it goes down (the failure threshold); returns the transition.
fn taken_down_by_calls(r: &mut Rig) -> Transition {
    loop {
        if let Some(t) = r.passive(Passive::Timeout) {
            return t;
        }
    }
}

fn brownout_rig() -> Rig {
    let mut r = Rig::new(settings(|s| s.health.recovery_threshold = 2));
    r.ok();
    r.transitions.clear();
    r
}

#[test]
fn a_destination_taken_down_by_calls_is_not_brought_back_by_probes_before_the_hold() {
    let mut r = brownout_rig();
    let t = taken_down_by_calls(&mut r);
    assert_eq!(t.to, State::Down);
    assert!(t.reason.contains("held down for 30s"), "{}", t.reason);
    assert_eq!(r.m.down_until(), Some(r.now + Duration::from_secs(30)));
    // Its OPTIONS are answered all along (a brown-out): still down until the hold ends.
    probes_ok_for(&mut r, 29);
    assert_eq!(r.m.state(), State::Down, "{:?}", r.transitions);
    probes_ok_for(&mut r, 1);
    assert_eq!(r.m.state(), State::Up);
    assert_eq!(
        r.transitions.len(),
        2,
        "down once, up once: {:?}",
        r.transitions
    );
}

#[test]
fn each_new_takedown_by_calls_doubles_the_hold_up_to_the_max() {
    let mut r = brownout_rig();
    let mut holds = Vec::new();
    for _ in 0..6 {
        taken_down_by_calls(&mut r);
        let hold = r.m.down_until().expect("held") - r.now;
        holds.push(hold.as_secs());
        probes_ok_for(&mut r, hold.as_secs());
        assert_eq!(r.m.state(), State::Up);
    }
    assert_eq!(holds, vec![30, 60, 120, 240, 300, 300]);
}

#[test]
fn a_destination_that_stayed_up_past_the_max_hold_starts_again_from_the_first_hold() {
    let mut r = brownout_rig();
    taken_down_by_calls(&mut r);
    probes_ok_for(&mut r, 30);
    taken_down_by_calls(&mut r);
    probes_ok_for(&mut r, 60);
    // Up for five minutes with no call failing it.
    r.advance(Duration::from_secs(300));
    taken_down_by_calls(&mut r);
    assert_eq!(r.m.down_until(), Some(r.now + Duration::from_secs(30)));
}

#[test]
fn a_destination_taken_down_by_probes_comes_back_on_probes_alone() {
    let mut r = brownout_rig();
    while r.m.state() != State::Down {
        r.m.probe_sent(r.now);
        let t = r.m.probe_timeout(r.now);
        r.keep(t);
    }
    assert_eq!(r.m.down_until(), None);
    probes_ok_for(&mut r, 2);
    assert_eq!(r.m.state(), State::Up);
}

// ---- 503 and Retry-After ----------------------------------------------------------------

#[test]
fn trusted_503_with_retry_after_holds_down_for_that_long_then_needs_the_recovery_threshold() {
    let mut r = Rig::default();
    r.ok();
    r.transitions.clear();
    let t0 = r.now;
    let t = r
        .passive(Passive::Unavailable {
            retry_after: Some(Duration::from_secs(30)),
        })
        .expect("down at once");
    assert_eq!((t.from, t.to), (State::Up, State::Down));
    assert_eq!(
        t.reason,
        "a call was answered 503 with Retry-After 30s: held down for 30s"
    );
    assert_eq!(r.m.down_until(), Some(t0 + Duration::from_secs(30)));
    assert_eq!(r.m.next_wakeup(), Some(t0), "a probe is still due");
    // Probes answered during the hold count, but the hold is a floor: 5 successes in 10 s steps
    // take it to t0 + 50 s; the first 3 fall inside the hold.
    r.now = t0 + Duration::from_secs(1);
    for _ in 0..3 {
        assert_eq!(r.ok(), None);
    }
    r.now = t0 + Duration::from_secs(30) - MS;
    r.advance(Duration::ZERO);
    assert!(r.transitions.len() == 1 && r.m.state() == State::Down);
    r.advance(MS);
    assert_eq!(r.m.state(), State::Down, "hold over, but only 3 successes");
    assert_eq!(r.ok(), None);
    assert_eq!(r.ok().map(|t| t.to), Some(State::Up));
}

#[test]
fn hold_ends_in_up_when_the_recovery_threshold_was_met_during_it() {
    let mut r = Rig::new(settings(|s| s.health.recovery_threshold = 2));
    r.ok();
    let t0 = r.now;
    r.passive(Passive::Unavailable {
        retry_after: Some(Duration::from_secs(60)),
    });
    r.now = t0 + Duration::from_secs(1);
    r.ok();
    r.ok();
    r.ok();
    assert_eq!(r.m.state(), State::Down, "held");
    assert_eq!(
        r.m.next_wakeup(),
        Some(r.now),
        "the next probe, before the hold ends"
    );
    r.now = t0 + Duration::from_secs(60);
    let t = r.m.poll(r.now).expect("up at the end of the hold");
    assert_eq!((t.from, t.to), (State::Down, State::Up));
    assert_eq!(t.reason, "hold ended after 3 consecutive successful probes");
    assert_eq!(t.at, t0 + Duration::from_secs(60));
}

#[test]
fn retry_after_is_clamped_to_the_configured_range() {
    for (given, held) in [(0, 1), (7, 7), (3600, 300)] {
        let mut r = Rig::default();
        let t0 = r.now;
        r.passive(Passive::Unavailable {
            retry_after: Some(Duration::from_secs(given)),
        });
        assert_eq!(
            r.m.down_until(),
            Some(t0 + Duration::from_secs(held)),
            "Retry-After {given}"
        );
    }
    let mut r = Rig::new(settings(|s| {
        s.policy.retry_after_min = Duration::from_secs(5);
        s.policy.retry_after_max = Duration::from_secs(10);
    }));
    let t0 = r.now;
    r.passive(Passive::Unavailable {
        retry_after: Some(Duration::from_secs(1)),
    });
    assert_eq!(r.m.down_until(), Some(t0 + Duration::from_secs(5)));
}

#[test]
fn a_later_retry_after_extends_the_hold_but_never_shortens_it() {
    let mut r = Rig::default();
    let t0 = r.now;
    r.passive(Passive::Unavailable {
        retry_after: Some(Duration::from_secs(60)),
    });
    r.passive(Passive::Unavailable {
        retry_after: Some(Duration::from_secs(5)),
    });
    assert_eq!(r.m.down_until(), Some(t0 + Duration::from_secs(60)));
    r.now = t0 + Duration::from_secs(10);
    r.passive(Passive::Unavailable {
        retry_after: Some(Duration::from_secs(120)),
    });
    assert_eq!(r.m.down_until(), Some(t0 + Duration::from_secs(130)));
    assert_eq!(
        r.transitions.len(),
        1,
        "one transition: {:#?}",
        r.transitions
    );
}

#[test]
fn untrusted_destination_ignores_retry_after_and_counts_a_failure() {
    let mut r = Rig::new(settings(|s| s.trusted = false));
    r.ok();
    assert_eq!(
        r.passive(Passive::Unavailable {
            retry_after: Some(Duration::from_secs(30))
        }),
        None
    );
    assert_eq!(r.m.state(), State::Up);
    assert_eq!(r.m.down_until(), None);
    assert_eq!(r.m.consecutive_failures(), 1);
}

#[test]
fn trusted_retry_after_holds_down_even_with_passive_off() {
    let mut r = Rig::new(settings(|s| s.policy.passive = false));
    r.ok();
    let t = r.passive(Passive::Unavailable {
        retry_after: Some(Duration::from_secs(30)),
    });
    assert_eq!(t.map(|t| t.to), Some(State::Down));
}

#[test]
fn unprobed_destination_returns_up_when_its_hold_ends_on_probation() {
    let mut r = Rig::new(settings(|s| s.health.probe = false));
    let t0 = r.now;
    r.passive(Passive::Unavailable {
        retry_after: Some(Duration::from_secs(20)),
    });
    assert_eq!(r.m.next_wakeup(), Some(t0 + Duration::from_secs(20)));
    r.advance(Duration::from_secs(20) - MS);
    assert_eq!(r.m.state(), State::Down);
    r.advance(MS);
    let t = r.transitions.last().expect("back up").clone();
    assert_eq!((t.from, t.to), (State::Down, State::Up));
    assert!(t.reason.contains("probation"), "{}", t.reason);
    // On probation: one failure takes it down again, for probe_interval this time.
    let t1 = r.now;
    assert_eq!(r.passive(Passive::Timeout).map(|t| t.to), Some(State::Down));
    assert_eq!(r.m.down_until(), Some(t1 + Duration::from_secs(10)));
}

#[test]
fn unprobed_destination_down_by_call_failures_retries_after_one_interval() {
    let mut r = Rig::new(settings(|s| s.health.probe = false));
    for _ in 0..3 {
        r.passive(Passive::Timeout);
    }
    assert_eq!(r.m.state(), State::Down);
    r.advance(Duration::from_secs(10));
    assert_eq!(r.m.state(), State::Up);
    // On probation: the next failure takes it down again at once.
    r.passive(Passive::Timeout);
    assert_eq!(r.m.state(), State::Down);
}

// ---- admin states -----------------------------------------------------------------------

#[test]
fn maintenance_stops_probes_and_takes_no_calls() {
    let mut r = Rig::default();
    r.ok();
    let t = r.admin(AdminAction::Maintenance).expect("transition");
    assert_eq!((t.from, t.to), (State::Up, State::Maintenance));
    assert_eq!(t.reason, "maintenance requested: no traffic, no probes");
    assert!(!r.m.accepts_calls());
    assert_eq!(r.m.wants_probe(), None);
    assert_eq!(r.m.next_wakeup(), None);
    // Stragglers change nothing.
    assert_eq!(r.m.probe_timeout(r.now), None);
    assert_eq!(r.m.passive(Passive::Timeout, r.now), None);
    assert_eq!(r.m.counters().probes_failed, 0);
    assert_eq!(r.m.state(), State::Maintenance);
}

#[test]
fn enable_after_maintenance_starts_probing_afresh_at_once() {
    let mut r = Rig::default();
    r.down();
    r.admin(AdminAction::Maintenance);
    r.now += Duration::from_secs(3600);
    let t = r.admin(AdminAction::Enable).expect("transition");
    assert_eq!((t.from, t.to), (State::Maintenance, State::Probing));
    assert_eq!(
        t.reason,
        "enabled by an operator; back from maintenance: no probe result yet"
    );
    assert_eq!(r.m.wants_probe(), Some(r.now));
    assert_eq!(r.ok().map(|t| t.to), Some(State::Up));
}

#[test]
fn drain_takes_no_new_calls_and_reports_drained_when_the_last_call_ends() {
    let mut r = Rig::default();
    r.ok();
    r.calls = 2;
    let t = r.admin(AdminAction::Drain).expect("transition");
    assert_eq!((t.from, t.to), (State::Up, State::Draining));
    assert_eq!(
        t.reason,
        "drain requested: no new calls; 2 calls in progress continue"
    );
    assert!(!r.m.accepts_calls());
    assert!(!r.m.drained(2));
    assert!(!r.m.call_ended(1));
    assert!(r.m.call_ended(0), "the last call ended: drained");
    assert!(r.m.drained(0));
    assert_eq!(r.m.reason(), "drained: its last call ended");
    assert_eq!(r.m.state(), State::Draining);
}

#[test]
fn drain_with_no_call_in_progress_is_drained_at_once() {
    let mut r = Rig::default();
    let t = r.admin(AdminAction::Drain).expect("transition");
    assert!(
        t.reason.ends_with("drained (no call in progress)"),
        "{}",
        t.reason
    );
    assert!(r.m.drained(0));
}

#[test]
fn draining_destination_is_still_probed_and_enable_publishes_its_current_health() {
    let mut r = Rig::default();
    r.ok();
    r.admin(AdminAction::Drain);
    assert!(r.m.wants_probe().is_some());
    for _ in 0..3 {
        assert_eq!(r.timeout(), None, "no published change while draining");
    }
    assert_eq!(r.m.health(), State::Down);
    let t = r.admin(AdminAction::Enable).expect("transition");
    assert_eq!((t.from, t.to), (State::Draining, State::Down));
    assert!(
        t.reason
            .starts_with("enabled by an operator; 3 consecutive failures"),
        "{}",
        t.reason
    );
}

#[test]
fn forced_up_takes_calls_while_probes_fail() {
    let mut r = Rig::default();
    r.down();
    let t = r.admin(AdminAction::ForceUp).expect("transition");
    assert_eq!((t.from, t.to), (State::Down, State::ForcedUp));
    assert!(r.m.accepts_calls());
    for _ in 0..10 {
        assert_eq!(r.timeout(), None);
        r.passive(Passive::Unavailable {
            retry_after: Some(Duration::from_secs(30)),
        });
    }
    assert!(r.m.accepts_calls());
    assert_eq!(r.m.state(), State::ForcedUp);
    assert_eq!(r.m.health(), State::Down, "probes go on, for information");
    assert!(r.m.wants_probe().is_some());
    assert_eq!(r.m.counters().probes_failed, 13);
}

#[test]
fn repeating_an_admin_action_changes_nothing() {
    let mut r = Rig::default();
    assert!(r.admin(AdminAction::Drain).is_some());
    assert_eq!(r.admin(AdminAction::Drain), None);
    assert!(r.admin(AdminAction::Enable).is_some());
    assert_eq!(r.admin(AdminAction::Enable), None);
}

#[test]
fn every_change_gives_exactly_one_transition_with_a_reason() {
    let mut r = Rig::new(settings(|s| s.health.recovery_threshold = 2));
    r.ok(); // Probing → Up
    r.timeout();
    r.timeout();
    r.timeout(); // → Down
    r.ok();
    r.ok(); // → Up
    r.admin(AdminAction::Drain); // → Draining
    r.admin(AdminAction::ForceUp); // → ForcedUp
    r.admin(AdminAction::Maintenance); // → Maintenance
    r.admin(AdminAction::Enable); // → Probing
    let steps: Vec<(State, State)> = r.transitions.iter().map(|t| (t.from, t.to)).collect();
    use State::*;
    assert_eq!(
        steps,
        [
            (Probing, Up),
            (Up, Down),
            (Down, Up),
            (Up, Draining),
            (Draining, ForcedUp),
            (ForcedUp, Maintenance),
            (Maintenance, Probing),
        ]
    );
    assert!(r.transitions.iter().all(|t| !t.reason.is_empty()));
    // Transitions and the published state agree.
    for w in r.transitions.windows(2) {
        assert_eq!(w[0].to, w[1].from);
    }
}

#[test]
fn admin_actions_parse_from_their_api_names() {
    for a in AdminAction::ALL {
        assert_eq!(a.as_str().parse::<AdminAction>(), Ok(a));
    }
    assert_eq!(
        "reboot".parse::<AdminAction>(),
        Err(HealthError::UnknownAction("reboot".into()))
    );
}

#[test]
fn states_round_trip_through_their_u8() {
    for s in State::ALL {
        assert_eq!(State::from_u8(s.as_u8()), Some(s));
    }
    assert_eq!(State::from_u8(200), None);
    assert_eq!(State::ForcedUp.as_str(), "forced-up");
    assert_eq!(fmt_rtt(Duration::from_micros(1500)), "1.5ms");
}

#[test]
fn turning_probes_off_on_reload_makes_a_probing_destination_up() {
    let mut r = Rig::default();
    let t =
        r.m.set_settings(settings(|s| s.health.probe = false), r.now)
            .expect("transition");
    assert_eq!((t.from, t.to), (State::Probing, State::Up));
    assert_eq!(r.m.wants_probe(), None);
    let t = r.m.set_settings(settings(|_| {}), r.now);
    assert_eq!(t, None);
    assert_eq!(r.m.wants_probe(), Some(r.now));
}

// ---- the table --------------------------------------------------------------------------

fn dest(name: &str, address: &str) -> DestinationSpec {
    DestinationSpec {
        name: name.into(),
        address: address.into(),
        ..DestinationSpec::default()
    }
}

fn router(dests: &[DestinationSpec]) -> Router {
    let route = RouteSpec {
        name: "r".into(),
        destinations: Some(dests.iter().map(|d| d.name.clone()).collect()),
        ..RouteSpec::default()
    };
    Router::compile(dests, &[], &[route]).expect("rules compile")
}

fn health() -> Health {
    Health::new(&HealthConfig::default())
}

#[test]
fn table_keeps_state_across_a_reload_by_name_and_new_names_start_fresh() {
    let h = health();
    let now = Instant::now();
    let v1 = h.adopt(
        &router(&[dest("a", "10.0.0.1:5060"), dest("b", "10.0.0.2:5060")]),
        now,
    );
    let a = v1.get(DestId(0)).expect("a").clone();
    for _ in 0..3 {
        a.probe_timeout(now);
    }
    assert_eq!(a.state(), State::Down);
    assert!(!v1.accepts_calls(DestId(0)));
    assert!(v1.accepts_calls(DestId(1)));

    // Reordered, one new, one gone, and a's settings changed.
    let mut a2 = dest("a", "10.0.0.1:5060");
    a2.failure_threshold = Some(5);
    let v2 = h.adopt(&router(&[dest("c", "10.0.0.3:5060"), a2]), now);
    assert_eq!(v2.len(), 2);
    let c = v2.get(DestId(0)).expect("c");
    assert_eq!(c.name(), "c");
    assert_eq!(c.state(), State::Probing);
    let a_again = v2.get(DestId(1)).expect("a");
    assert!(Arc::ptr_eq(a_again, &a), "same entry");
    assert_eq!(a_again.state(), State::Down);
    assert!(!v2.accepts_calls(DestId(1)));
    assert_eq!(a_again.snapshot(now).consecutive_failures, 3);
    let names: Vec<String> = h.snapshot(now).into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["c", "a"]);
    assert!(h.get("b").is_none(), "b left the rule set");
}

#[test]
fn table_starts_fresh_when_a_name_gets_another_address() {
    let h = health();
    let now = Instant::now();
    let v1 = h.adopt(&router(&[dest("a", "10.0.0.1:5060")]), now);
    let a = v1.get(DestId(0)).expect("a").clone();
    a.act(AdminAction::Maintenance, now);
    let v2 = h.adopt(&router(&[dest("a", "10.0.0.9:5060")]), now);
    let a2 = v2.get(DestId(0)).expect("a");
    assert!(!Arc::ptr_eq(a2, &a));
    assert_eq!(a2.state(), State::Probing);
    assert_eq!(a2.address(), "10.0.0.9:5060");
}

#[test]
fn retired_destination_is_kept_while_a_call_holds_it_and_revived_with_its_state() {
    let h = health();
    let now = Instant::now();
    let v1 = h.adopt(
        &router(&[dest("a", "10.0.0.1:5060"), dest("b", "10.0.0.2:5060")]),
        now,
    );
    let b = v1.get(DestId(1)).expect("b").clone();
    b.call_started();
    b.act(AdminAction::Drain, now);
    drop(v1);
    h.adopt(&router(&[dest("a", "10.0.0.1:5060")]), now);
    // Still held by the call: back in the next rule set, it is the same entry.
    let v3 = h.adopt(
        &router(&[dest("a", "10.0.0.1:5060"), dest("b", "10.0.0.2:5060")]),
        now,
    );
    let b3 = v3.get(DestId(1)).expect("b");
    assert!(Arc::ptr_eq(b3, &b));
    assert_eq!(b3.state(), State::Draining);
    assert!(
        b.call_ended(),
        "the call that outlived two reloads ends the drain"
    );
    // Once nothing holds it, a retired entry is dropped at the next adopt.
    drop(v3);
    drop(b);
    h.adopt(&router(&[dest("a", "10.0.0.1:5060")]), now);
    let v5 = h.adopt(
        &router(&[dest("a", "10.0.0.1:5060"), dest("b", "10.0.0.2:5060")]),
        now,
    );
    assert_eq!(v5.get(DestId(1)).expect("b").state(), State::Probing);
}

#[test]
fn hot_path_read_follows_every_change() {
    let h = health();
    let now = Instant::now();
    let v = h.adopt(&router(&[dest("a", "10.0.0.1:5060")]), now);
    let a = v.get(DestId(0)).expect("a");
    assert!(a.accepts_calls());
    let t = a.report(
        Passive::Unavailable {
            retry_after: Some(Duration::from_secs(2)),
        },
        now,
    );
    assert_eq!(t.map(|t| t.to), Some(State::Down));
    assert!(!a.accepts_calls());
    assert_eq!(
        h.act("a", AdminAction::ForceUp, now)
            .ok()
            .flatten()
            .map(|t| t.to),
        Some(State::ForcedUp)
    );
    assert!(a.accepts_calls());
    h.act("a", AdminAction::Enable, now).expect("known");
    assert!(!a.accepts_calls());
    a.poll(now + Duration::from_secs(2));
    assert!(!a.accepts_calls(), "probed: needs the recovery threshold");
    for _ in 0..5 {
        a.probe_reply(200, RTT, now + Duration::from_secs(3));
    }
    assert!(a.accepts_calls());
}

#[test]
fn admin_action_on_an_unknown_name_suggests_the_closest() {
    let h = health();
    let now = Instant::now();
    h.adopt(&router(&[dest("primary", "10.0.0.1:5060")]), now);
    assert_eq!(
        h.act("primray", AdminAction::Drain, now),
        Err(HealthError::UnknownDestination {
            name: "primray".into(),
            hint: "did you mean \"primary\"?".into()
        })
    );
    let e = h.act("zzz", AdminAction::Drain, now).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown destination \"zzz\": known: \"primary\""
    );
}

#[test]
fn snapshot_shows_what_the_admin_api_needs() {
    let h = health();
    let t0 = Instant::now();
    let v = h.adopt(&router(&[dest("a", "[2001:db8::1]:5070")]), t0);
    let a = v.get(DestId(0)).expect("a");
    a.probe_sent(t0);
    a.probe_reply(200, RTT, t0 + RTT);
    a.call_started();
    a.report(Passive::Timeout, t0 + RTT);
    let s = a.snapshot(t0 + Duration::from_secs(1));
    assert_eq!(s.name, "a");
    assert_eq!(s.address, "[2001:db8::1]:5070");
    assert_eq!(s.state, State::Up);
    assert_eq!(s.health, State::Up);
    assert_eq!(s.reason, "first probe answered 200 in 12.0ms");
    assert_eq!(s.since, t0 + RTT);
    assert_eq!(s.in_state_for, Duration::from_secs(1) - RTT);
    assert_eq!(s.last_probe_rtt, Some(RTT));
    assert_eq!(s.calls_in_progress, 1);
    assert_eq!(
        (s.calls, s.failures, s.probes_ok, s.probes_failed),
        (1, 1, 1, 0)
    );
    assert_eq!(s.consecutive_failures, 1);
    assert!(s.probed && !s.drained && s.down_until.is_none());
}

fn capped(
    name: &str,
    address: &str,
    max_calls: Option<u32>,
    max_cps: Option<f64>,
) -> DestinationSpec {
    DestinationSpec {
        max_calls,
        max_cps,
        ..dest(name, address)
    }
}

#[test]
fn a_destination_at_its_cap_refuses_new_calls_without_changing_its_health() {
    let h = health();
    let t0 = Instant::now();
    let v = h.adopt(&router(&[capped("a", "10.0.0.1:5060", Some(2), None)]), t0);
    let a = v.get(DestId(0)).expect("a");
    a.probe_sent(t0);
    a.probe_reply(200, RTT, t0 + RTT);
    assert_eq!(a.try_start(t0), Ok(()));
    assert_eq!(a.try_start(t0), Ok(()));
    assert_eq!(a.try_start(t0), Err(Cap::Calls));
    assert_eq!(a.try_start(t0), Err(Cap::Calls));
    assert_eq!(a.state(), State::Up, "a cap is not a failure");
    assert!(a.accepts_calls(), "health says yes; the cap says not now");
    let s = a.snapshot(t0);
    assert_eq!(s.calls_in_progress, 2);
    assert_eq!((s.max_calls, s.max_cps), (Some(2), None));
    assert_eq!(s.at_cap, Some(Cap::Calls));
    assert_eq!(s.capped, [2, 0]);
    assert_eq!((s.calls, s.failures, s.consecutive_failures), (2, 0, 0));
    assert_eq!(s.reason, "first probe answered 200 in 12.0ms");
    assert!(!a.call_ended());
    assert_eq!(a.snapshot(t0).at_cap, None);
    assert_eq!(a.try_start(t0), Ok(()));
}

#[test]
fn a_reload_changes_the_caps_of_a_kept_destination_and_keeps_its_calls_in_progress() {
    let h = health();
    let t0 = Instant::now();
    let v1 = h.adopt(
        &router(&[capped("a", "10.0.0.1:5060", Some(1), Some(1.0))]),
        t0,
    );
    let a = v1.get(DestId(0)).expect("a").clone();
    assert_eq!(a.try_start(t0), Ok(()));
    assert_eq!(a.try_start(t0), Err(Cap::Calls));
    let v2 = h.adopt(
        &router(&[capped("a", "10.0.0.1:5060", Some(3), Some(5.0))]),
        t0,
    );
    let a2 = v2.get(DestId(0)).expect("a");
    assert!(Arc::ptr_eq(a2, &a), "same peer: same entry");
    let s = a2.snapshot(t0);
    assert_eq!(s.calls_in_progress, 1, "its calls are still there");
    assert_eq!((s.max_calls, s.max_cps), (Some(3), Some(5.0)));
    assert_eq!(s.capped, [1, 0], "the entry's counts are kept");
    assert_eq!(
        a2.try_start(t0),
        Ok(()),
        "the new rate starts with a full bucket"
    );
    assert_eq!(a2.try_start(t0), Ok(()));
    assert_eq!(a2.try_start(t0), Err(Cap::Calls));
    // Caps removed: no cap.
    let v3 = h.adopt(&router(&[dest("a", "10.0.0.1:5060")]), t0);
    let a3 = v3.get(DestId(0)).expect("a");
    assert_eq!(a3.try_start(t0), Ok(()));
    let s = a3.snapshot(t0);
    assert_eq!((s.max_calls, s.max_cps, s.at_cap), (None, None, None));
    assert_eq!(s.calls_in_progress, 4);
    // A new address is a new entry: no call in progress there yet, the caps fresh.
    let v4 = h.adopt(&router(&[capped("a", "10.0.0.2:5060", Some(1), None)]), t0);
    let a4 = v4.get(DestId(0)).expect("a");
    assert_eq!(a4.snapshot(t0).calls_in_progress, 0);
    assert_eq!(a4.try_start(t0), Ok(()));
    assert_eq!(a4.try_start(t0), Err(Cap::Calls));
}

#[test]
fn draining_ends_when_the_last_counted_call_ends_whether_admitted_or_restored() {
    let h = health();
    let t0 = Instant::now();
    let v = h.adopt(&router(&[dest("a", "10.0.0.1:5060")]), t0);
    let a = v.get(DestId(0)).expect("a");
    assert_eq!(a.try_start(t0), Ok(()));
    a.call_started();
    let t = a.act(AdminAction::Drain, t0).expect("transition");
    assert_eq!(
        t.reason,
        "drain requested: no new calls; 2 calls in progress continue"
    );
    assert!(!a.call_ended());
    assert!(a.call_ended(), "the last one drains it");
    assert!(a.snapshot(t0).drained);
    assert!(!a.call_ended(), "unbalanced end ignored");
    assert_eq!(a.calls_in_progress(), 0);
}
