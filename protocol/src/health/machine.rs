//! One destination's health as a sans-IO state machine: fed probe results, passive signals from
//! calls, admin actions and the passage of time, each with `now`; it answers whether the
//! destination takes calls, when it wants its next probe, and reports every change of its state
//! as one [`Transition`] with a reason. No socket, no clock, no logging inside: the shared table
//! ([`super::DestHealth`]) locks it, publishes its state and logs, and the prober
//! (`pointsman::prober`, in the I/O crate) sends the probes.
//!
//! # States
//!
//! Two layers. The *health* layer is what probes and calls say:
//!
//! - [`State::Probing`]: no verdict yet (a fresh start, a new destination, or the end of
//!   maintenance). It **takes calls** (optimistic): a restarted node must not reject every call
//!   while its first probes are in flight. The first successful probe makes it `Up`;
//!   `failure_threshold` consecutive failures make it `Down`.
//! - [`State::Up`]: takes calls. `failure_threshold` consecutive failures (probe timeouts,
//!   transport errors, replies not in `probe_codes`, 503s; and, with passive health on, call
//!   timeouts, call transport errors and 503s) make it `Down`. Any success resets the count.
//! - [`State::Down`]: takes no calls. Probes go on; it comes back `Up` only after
//!   `recovery_threshold` **consecutive** successful probes *and* the end of any Retry-After
//!   hold. Any failure while down restarts the count, so a flapping destination (success,
//!   failure, success, ...) stays down and never oscillates; there is no separate "recovering"
//!   state to flip in and out of (the count is in [`Machine::consecutive_successes`]).
//!
//! The *admin* layer overrides what is published, and is set only by [`AdminAction`]s:
//!
//! - [`State::Draining`]: no new calls; calls in progress continue (the table counts them,
//!   lock-free, in its `Capacity`, and tells [`Machine::call_ended`] how many are left, which
//!   says when the last one of a draining destination ended). Probes continue, so enabling it
//!   again publishes a current health.
//! - [`State::Maintenance`]: no calls, no probes, passive signals ignored. Its health is unknown
//!   afterwards, so leaving maintenance restarts at `Probing` with a probe due at once.
//! - [`State::ForcedUp`]: takes calls whatever probes say. Probes and passive signals still move
//!   the health layer, for information ([`Machine::health`]); it is published again on `Enable`.
//!
//! A [`Transition`] is produced when the *published* state changes, and only then; changes of
//! the health layer under an admin state show in [`Machine::health`] and
//! [`Machine::health_reason`].
//!
//! # Calls outrank probes
//!
//! A destination can answer OPTIONS and fail every INVITE (a brown-out: its signalling front
//! is up, what is behind it is not). When **calls** take a probed destination down (the
//! failure that reaches the threshold is a call's), its probes alone bring it back only after
//! a hold: `passive_hold` (30 s) the first time, doubled each time calls take it down again,
//! up to `passive_hold_max` (300 s); the hold counts from the last takedown, and a destination
//! that stayed up for `passive_hold_max` since starts again from `passive_hold`. Probes go on
//! during the hold and count, as for a Retry-After hold: at its end it is up if its last
//! `recovery_threshold` probes succeeded. Without it each re-admission costs callers a
//! provisional timer, and the destination flaps at the probe rate.
//!
//! # 503 and Retry-After
//!
//! A 503 on a call (`Passive::Unavailable`) is a failure like any other. When it carries
//! Retry-After and the destination is `trusted`, the destination goes `Down` at once, held down
//! for the Retry-After clamped to `retry_after_min..=retry_after_max` (a later 503 can extend the
//! hold, never shorten it). This applies even with passive health off: it is the destination's
//! own instruction, not an inference. An untrusted destination's Retry-After is ignored (the 503
//! still counts as a failure). When the hold ends: with probes on, it stays `Down` until it has
//! `recovery_threshold` consecutive successful probes since the 503 (probes answered during the
//! hold count; one failure restarts the count); with probes off, it goes straight back `Up`.
//!
//! # Without probes (`probe = false`)
//!
//! Only calls tell its health. It starts `Up`. Passive failures (or a trusted Retry-After) take it
//! `Down` for `probe_interval` (or the hold), then it returns `Up` *on probation*: its failure count
//! starts at `failure_threshold - 1`, so one more failure takes it down again at once and one
//! success clears the probation (a circuit breaker's half-open state).
//!
//! # Time
//!
//! Time enters only with inputs. The answer of [`Machine::accepts_calls`] is constant between two
//! inputs, which is what lets the table publish it in one atomic; the end of a hold is applied by
//! [`Machine::poll`], which the prober calls at [`Machine::next_wakeup`].

use routing_rules::check::fmt_duration;
use routing_rules::HealthSettings;
use std::time::{Duration, Instant};

/// Default `[health] retry_after_min`.
pub(super) const DEFAULT_RETRY_AFTER_MIN: Duration = Duration::from_secs(1);
/// Default `[health] retry_after_max`.
pub(super) const DEFAULT_RETRY_AFTER_MAX: Duration = Duration::from_secs(300);

/// Default `[health] passive_hold`.
pub(super) const DEFAULT_PASSIVE_HOLD: Duration = Duration::from_secs(30);
/// Default `[health] passive_hold_max`.
pub(super) const DEFAULT_PASSIVE_HOLD_MAX: Duration = Duration::from_secs(300);

/// The node-wide part of the health policy (`[health]` in the config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Policy {
    /// Failures seen on real calls count towards `failure_threshold` (default true).
    pub passive: bool,
    /// Shortest hold a trusted 503 Retry-After gets (default 1 s).
    pub retry_after_min: Duration,
    /// Longest hold a trusted 503 Retry-After gets (default 300 s).
    pub retry_after_max: Duration,
    /// A destination that calls took down stays down at least this long, whatever its probes
    /// say (default 30 s); doubled each time calls take it down again, up to
    /// `passive_hold_max`.
    pub passive_hold: Duration,
    /// Longest such hold (default 300 s). A destination that stayed up this long since calls
    /// last took it down starts again from `passive_hold`.
    pub passive_hold_max: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            passive: true,
            retry_after_min: DEFAULT_RETRY_AFTER_MIN,
            retry_after_max: DEFAULT_RETRY_AFTER_MAX,
            passive_hold: DEFAULT_PASSIVE_HOLD,
            passive_hold_max: DEFAULT_PASSIVE_HOLD_MAX,
        }
    }
}

impl Policy {
    /// `retry_after` clamped to the policy's range (never panics, even if min > max).
    pub(crate) fn clamp_retry_after(&self, retry_after: Duration) -> Duration {
        retry_after
            .max(self.retry_after_min)
            .min(self.retry_after_max)
    }
}

/// Everything one machine runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Settings {
    /// The destination's own health keys.
    pub health: HealthSettings,
    /// Whether its 503 Retry-After is believed.
    pub trusted: bool,
    pub policy: Policy,
}

/// What a destination is, as published. The discriminants are stable: they are stored in an
/// atomic and are the value of the `pointsman_destination_state` gauge. Serialised (admin API)
/// as [`as_str`](State::as_str).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[repr(u8)]
pub enum State {
    Down = 0,
    Up = 1,
    Draining = 2,
    Maintenance = 3,
    ForcedUp = 4,
    /// No verdict yet; takes calls.
    Probing = 5,
}

impl State {
    pub const ALL: [State; 6] = [
        State::Down,
        State::Up,
        State::Draining,
        State::Maintenance,
        State::ForcedUp,
        State::Probing,
    ];

    /// Whether a destination in this state is given new calls.
    pub fn accepts_calls(self) -> bool {
        matches!(self, State::Up | State::ForcedUp | State::Probing)
    }

    /// The name the admin API, logs, metrics docs and `pointsman status` show.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Down => "down",
            State::Up => "up",
            State::Draining => "draining",
            State::Maintenance => "maintenance",
            State::ForcedUp => "forced-up",
            State::Probing => "probing",
        }
    }

    /// The value stored in the atomic and exported as the gauge.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    pub fn from_u8(v: u8) -> Option<State> {
        State::ALL.into_iter().find(|s| s.as_u8() == v)
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a real call told about its destination (reported by the proxy core).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Passive {
    /// No provisional response within the provisional timer.
    Timeout,
    /// ICMP unreachable, TCP connect refused or reset, write failure.
    Transport,
    /// A 503, with its Retry-After if it had one.
    Unavailable { retry_after: Option<Duration> },
}

impl Passive {
    fn describe(self) -> String {
        match self {
            Passive::Timeout => "a call got no provisional response in time".into(),
            Passive::Transport => "a call hit a transport error".into(),
            Passive::Unavailable { retry_after: None } => "a call was answered 503".into(),
            Passive::Unavailable {
                retry_after: Some(ra),
            } => format!(
                "a call was answered 503 with Retry-After {}",
                fmt_duration(ra)
            ),
        }
    }
}

/// What an operator can do to a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AdminAction {
    /// No new calls; calls in progress continue.
    Drain,
    /// No traffic, no probes.
    Maintenance,
    /// Back to what its health says.
    Enable,
    /// Takes calls whatever its health says.
    ForceUp,
}

impl AdminAction {
    pub const ALL: [AdminAction; 4] = [
        AdminAction::Drain,
        AdminAction::Maintenance,
        AdminAction::Enable,
        AdminAction::ForceUp,
    ];

    /// As written in the admin API path: `drain`, `maintenance`, `enable`, `force-up`.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminAction::Drain => "drain",
            AdminAction::Maintenance => "maintenance",
            AdminAction::Enable => "enable",
            AdminAction::ForceUp => "force-up",
        }
    }
}

impl std::fmt::Display for AdminAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AdminAction {
    type Err = super::HealthError;
    fn from_str(s: &str) -> Result<AdminAction, Self::Err> {
        AdminAction::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| super::HealthError::UnknownAction(s.chars().take(64).collect()))
    }
}

/// One change of a destination's published state. The caller logs it once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: State,
    pub to: State,
    /// Why, in words an operator reads in a log line.
    pub reason: String,
    pub at: Instant,
}

/// Lifetime counters of one destination.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    /// Passive failures reported by calls (timeouts, transport errors, 503s).
    pub failures: u64,
    /// Probes answered with a code in `probe_codes`.
    pub probes_ok: u64,
    /// Probes that timed out, failed to be sent or connect, or got another final code.
    pub probes_failed: u64,
}

/// One destination's health. See the module documentation for the rules.
#[derive(Clone, Debug)]
pub(crate) struct Machine {
    settings: Settings,
    /// `Probing`, `Up` or `Down`.
    health: State,
    health_reason: String,
    health_since: Instant,
    /// `Draining`, `Maintenance` or `ForcedUp`.
    admin: Option<State>,
    admin_reason: String,
    admin_since: Instant,
    failures_in_a_row: u32,
    successes_in_a_row: u32,
    /// While `Down`: not before this (Retry-After hold, or the retry time without probes).
    down_until: Option<Instant>,
    /// When the next probe is due; `None` with probes off.
    next_probe: Option<Instant>,
    last_rtt: Option<Duration>,
    counters: Counters,
    /// Times calls took it down without a long enough spell up in between: the next
    /// passive hold is `passive_hold` doubled this many times.
    passive_takedowns: u32,
}

impl Machine {
    /// A destination seen for the first time at `now`: `Probing` with a probe due at once, or
    /// `Up` when it is not probed.
    pub(crate) fn new(settings: Settings, now: Instant) -> Machine {
        let probe = settings.health.probe;
        Machine {
            health: if probe { State::Probing } else { State::Up },
            health_reason: if probe {
                "no probe result yet".into()
            } else {
                "not probed (probe = false): up until calls fail".into()
            },
            health_since: now,
            admin: None,
            admin_reason: String::new(),
            admin_since: now,
            failures_in_a_row: 0,
            successes_in_a_row: 0,
            down_until: None,
            next_probe: probe.then_some(now),
            last_rtt: None,
            counters: Counters::default(),
            passive_takedowns: 0,
            settings,
        }
    }

    // ---- what it is ---------------------------------------------------------------------

    /// The published state: the admin state if one is set, else the health.
    pub(crate) fn state(&self) -> State {
        self.admin.unwrap_or(self.health)
    }

    /// What probes and calls say (`Probing`, `Up` or `Down`), whatever the admin state.
    pub(crate) fn health(&self) -> State {
        self.health
    }

    /// Why it is in its published state.
    pub(crate) fn reason(&self) -> &str {
        if self.admin.is_some() {
            &self.admin_reason
        } else {
            &self.health_reason
        }
    }

    /// Why its health is what it is.
    pub(crate) fn health_reason(&self) -> &str {
        &self.health_reason
    }

    /// Since when it is in its published state.
    pub(crate) fn since(&self) -> Instant {
        if self.admin.is_some() {
            self.admin_since
        } else {
            self.health_since
        }
    }

    /// Whether it takes new calls. Constant between inputs.
    #[cfg(test)]
    pub(crate) fn accepts_calls(&self) -> bool {
        self.state().accepts_calls()
    }

    /// When it wants its next probe (at or before `now`: send one now); `None`: it is not
    /// probed (probes off, or in maintenance).
    pub(crate) fn wants_probe(&self) -> Option<Instant> {
        if self.admin == Some(State::Maintenance) {
            return None;
        }
        self.next_probe
    }

    /// The next instant something is due: a probe, or the end of a hold (see [`poll`]).
    ///
    /// [`poll`]: Machine::poll
    pub(crate) fn next_wakeup(&self) -> Option<Instant> {
        let hold = self.down_until.filter(|_| self.health == State::Down);
        match (self.wants_probe(), hold) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The end of the current hold while `Down`, if any.
    pub(crate) fn down_until(&self) -> Option<Instant> {
        self.down_until.filter(|_| self.health == State::Down)
    }

    pub(crate) fn last_probe_rtt(&self) -> Option<Duration> {
        self.last_rtt
    }

    /// Draining, and no call in progress (`in_progress`, as the table counts them).
    pub(crate) fn drained(&self, in_progress: u32) -> bool {
        self.admin == Some(State::Draining) && in_progress == 0
    }

    pub(crate) fn counters(&self) -> Counters {
        self.counters
    }

    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.failures_in_a_row
    }

    pub(crate) fn consecutive_successes(&self) -> u32 {
        self.successes_in_a_row
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    // ---- inputs -------------------------------------------------------------------------

    /// New settings for the same destination (a reload that kept its name and address). The
    /// state is kept; probing starts or stops as `probe` says, and the next probe is due no
    /// later than one new interval from `now`.
    pub(crate) fn set_settings(&mut self, settings: Settings, now: Instant) -> Option<Transition> {
        let before = self.state();
        let was_probed = self.settings.health.probe;
        self.settings = settings;
        let h = &self.settings.health;
        if !h.probe {
            self.next_probe = None;
            if self.health == State::Down && self.down_until.is_none() {
                self.down_until = Some(now + h.interval);
            }
            if self.health == State::Probing {
                self.set_health(
                    State::Up,
                    "not probed (probe = false): up until calls fail",
                    now,
                );
            }
        } else if !was_probed {
            self.next_probe = Some(now);
        } else {
            self.next_probe = self.next_probe.map(|t| t.min(now + h.interval));
        }
        self.published_change(before, now)
    }

    /// The prober sent a probe at `now`: the next one is due one interval later.
    pub(crate) fn probe_sent(&mut self, now: Instant) {
        if self.next_probe.is_some() {
            self.next_probe = Some(now + self.settings.health.interval);
        }
    }

    /// A final reply to a probe. A code in `probe_codes` (never 503) is a success, any other
    /// final code a failure; a provisional (1xx) is ignored. Ignored in maintenance.
    pub(crate) fn probe_reply(
        &mut self,
        code: u16,
        rtt: Duration,
        now: Instant,
    ) -> Option<Transition> {
        if code < 200 || self.admin == Some(State::Maintenance) {
            return None;
        }
        self.last_rtt = Some(rtt);
        if code != 503 && self.settings.health.codes.contains(code) {
            self.counters.probes_ok += 1;
            let what = format!("probe answered {code} in {}", fmt_rtt(rtt));
            self.success(what, now)
        } else {
            self.counters.probes_failed += 1;
            self.failure(format!("probe answered {code}"), Counted::Probe, now)
        }
    }

    /// A probe got no final reply within `probe_timeout`.
    pub(crate) fn probe_timeout(&mut self, now: Instant) -> Option<Transition> {
        if self.admin == Some(State::Maintenance) {
            return None;
        }
        self.counters.probes_failed += 1;
        let what = format!(
            "probe got no reply in {}",
            fmt_duration(self.settings.health.timeout)
        );
        self.failure(what, Counted::Probe, now)
    }

    /// A probe could not be sent or its connection failed (`error` says how).
    pub(crate) fn probe_error(&mut self, error: &str, now: Instant) -> Option<Transition> {
        if self.admin == Some(State::Maintenance) {
            return None;
        }
        self.counters.probes_failed += 1;
        self.failure(format!("probe failed: {error}"), Counted::Probe, now)
    }

    /// What a real call told. Ignored in maintenance.
    pub(crate) fn passive(&mut self, signal: Passive, now: Instant) -> Option<Transition> {
        if self.admin == Some(State::Maintenance) {
            return None;
        }
        self.counters.failures += 1;
        let what = signal.describe();
        if let Passive::Unavailable {
            retry_after: Some(ra),
        } = signal
        {
            if self.settings.trusted {
                return self.hold_down(ra, what, now);
            }
        }
        let counts = if self.settings.policy.passive {
            Counted::Call
        } else {
            Counted::No
        };
        self.failure(what, counts, now)
    }

    /// Applies the passage of time: the end of a hold. Call it at [`next_wakeup`].
    ///
    /// [`next_wakeup`]: Machine::next_wakeup
    pub(crate) fn poll(&mut self, now: Instant) -> Option<Transition> {
        let until = self.down_until?;
        if self.health != State::Down || now < until {
            return None;
        }
        self.down_until = None;
        let before = self.state();
        if !self.settings.health.probe {
            self.failures_in_a_row = self.settings.health.failure_threshold.saturating_sub(1);
            self.set_health(
                State::Up,
                "not probed: back in service after its time down, on probation (the next \
                 failure takes it down again)",
                now,
            );
        } else if self.successes_in_a_row >= self.settings.health.recovery_threshold {
            let reason = format!(
                "hold ended after {} consecutive successful probes",
                self.successes_in_a_row
            );
            self.set_health(State::Up, reason, now);
        }
        self.published_change(before, now)
    }

    /// An operator's action, with `in_progress` calls at the destination. Repeating the current
    /// admin state (or enabling a destination with none) changes nothing and returns `None`.
    pub(crate) fn admin(
        &mut self,
        action: AdminAction,
        in_progress: u32,
        now: Instant,
    ) -> Option<Transition> {
        let target = match action {
            AdminAction::Drain => Some(State::Draining),
            AdminAction::Maintenance => Some(State::Maintenance),
            AdminAction::ForceUp => Some(State::ForcedUp),
            AdminAction::Enable => None,
        };
        if target == self.admin {
            return None;
        }
        let before = self.state();
        if self.admin == Some(State::Maintenance) {
            // Nothing was learnt during maintenance: start over, probing at once.
            self.failures_in_a_row = 0;
            self.successes_in_a_row = 0;
            self.down_until = None;
            let probe = self.settings.health.probe;
            self.health = if probe { State::Probing } else { State::Up };
            self.health_reason = if probe {
                "back from maintenance: no probe result yet".into()
            } else {
                "back from maintenance: not probed, up until calls fail".into()
            };
            self.health_since = now;
            self.next_probe = probe.then_some(now);
        }
        self.admin = target;
        self.admin_since = now;
        self.admin_reason = match action {
            AdminAction::Drain if in_progress == 0 => {
                "drain requested: no new calls; drained (no call in progress)".into()
            }
            AdminAction::Drain => format!(
                "drain requested: no new calls; {} in progress continue",
                plural(in_progress, "call")
            ),
            AdminAction::Maintenance => "maintenance requested: no traffic, no probes".into(),
            AdminAction::ForceUp => {
                "forced up by an operator: takes calls whatever probes say".into()
            }
            AdminAction::Enable => String::new(),
        };
        let reason = match action {
            AdminAction::Enable => format!("enabled by an operator; {}", self.health_reason),
            _ => self.admin_reason.clone(),
        };
        let after = self.state();
        (after != before).then_some(Transition {
            from: before,
            to: after,
            reason,
            at: now,
        })
    }

    /// A call to this destination ended, leaving `in_progress`. `true`: it was the last call
    /// of a draining destination, which is now drained.
    pub(crate) fn call_ended(&mut self, in_progress: u32) -> bool {
        if self.drained(in_progress) {
            self.admin_reason = "drained: its last call ended".into();
            return true;
        }
        false
    }

    // ---- rules --------------------------------------------------------------------------

    fn success(&mut self, what: String, now: Instant) -> Option<Transition> {
        let before = self.state();
        self.failures_in_a_row = 0;
        self.successes_in_a_row = self.successes_in_a_row.saturating_add(1);
        match self.health {
            State::Probing => self.set_health(State::Up, format!("first {what}"), now),
            State::Down => {
                let needed = self.settings.health.recovery_threshold;
                let held = self.down_until.is_some_and(|t| now < t);
                if self.successes_in_a_row >= needed && !held {
                    self.down_until = None;
                    let reason = format!(
                        "{} (last: {what})",
                        plural(self.successes_in_a_row, "consecutive successful probe")
                    );
                    self.set_health(State::Up, reason, now);
                }
            }
            _ => {}
        }
        self.published_change(before, now)
    }

    /// A failure; `counts` says whether and as what it counts towards the failure threshold.
    fn failure(&mut self, what: String, counts: Counted, now: Instant) -> Option<Transition> {
        if counts == Counted::No {
            return None;
        }
        let before = self.state();
        self.successes_in_a_row = 0;
        self.failures_in_a_row = self.failures_in_a_row.saturating_add(1);
        if self.health != State::Down
            && self.failures_in_a_row >= self.settings.health.failure_threshold
        {
            let mut reason = format!(
                "{} (last: {what})",
                plural(self.failures_in_a_row, "consecutive failure")
            );
            self.down_until = if !self.settings.health.probe {
                Some(now + self.settings.health.interval)
            } else if counts == Counted::Call {
                let hold = self.next_passive_hold(now);
                reason.push_str(&format!(
                    "; calls outrank probes: held down for {}",
                    fmt_duration(hold)
                ));
                Some(now + hold)
            } else {
                None
            };
            self.set_health(State::Down, reason, now);
        }
        self.published_change(before, now)
    }

    /// The hold of a takedown by calls at `now` (see "Calls outrank probes"), counting it.
    fn next_passive_hold(&mut self, now: Instant) -> Duration {
        let policy = &self.settings.policy;
        let stayed_up = now.saturating_duration_since(self.health_since);
        if self.health != State::Down && stayed_up >= policy.passive_hold_max {
            self.passive_takedowns = 0;
        }
        let doublings = self.passive_takedowns.min(16);
        self.passive_takedowns = self.passive_takedowns.saturating_add(1);
        policy
            .passive_hold
            .saturating_mul(1 << doublings)
            .min(policy.passive_hold_max.max(policy.passive_hold))
    }

    /// A trusted 503 with Retry-After: down at once, for the clamped hold (extended, never
    /// shortened, by a later one).
    fn hold_down(
        &mut self,
        retry_after: Duration,
        what: String,
        now: Instant,
    ) -> Option<Transition> {
        let before = self.state();
        let hold = self.settings.policy.clamp_retry_after(retry_after);
        let until = now + hold;
        self.successes_in_a_row = 0;
        self.failures_in_a_row = self.failures_in_a_row.saturating_add(1);
        let until = match self.down_until.filter(|_| self.health == State::Down) {
            Some(t) if t > until => t,
            _ => until,
        };
        self.down_until = Some(until);
        let reason = format!("{what}: held down for {}", fmt_duration(hold));
        if self.health == State::Down {
            self.health_reason = reason;
        } else {
            self.set_health(State::Down, reason, now);
        }
        self.published_change(before, now)
    }

    fn set_health(&mut self, to: State, reason: impl Into<String>, now: Instant) {
        if to != self.health {
            self.health_since = now;
        }
        self.health = to;
        self.health_reason = reason.into();
    }

    fn published_change(&self, before: State, now: Instant) -> Option<Transition> {
        let after = self.state();
        (after != before).then(|| Transition {
            from: before,
            to: after,
            reason: self.reason().to_string(),
            at: now,
        })
    }
}

/// Whether a failure counts towards the failure threshold, and as what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Counted {
    /// A probe's.
    Probe,
    /// A real call's (passive health on).
    Call,
    /// Not at all (a call's, with passive health off).
    No,
}

/// "1 call", "3 calls".
fn plural(n: u32, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// An RTT in milliseconds with one decimal: "12.3ms".
pub(crate) fn fmt_rtt(rtt: Duration) -> String {
    format!("{:.1}ms", rtt.as_secs_f64() * 1000.0)
}
