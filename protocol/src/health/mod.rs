//! Destination health: the shared table of every destination's state, read on the hot path by
//! the proxy core, fed by the prober (SIP OPTIONS), by the core (passive signals from calls) and
//! by the admin API (drain, maintenance, enable, force-up).
//!
//! - `machine`: one destination's state machine, sans-IO (time passed in). The rules live there.
//! - this module: [`Health`], the table keyed by destination **name**, so a destination that keeps
//!   its name and address across a reload keeps its state; [`HealthView`], the per-[`DestId`]
//!   handles for one rule set; [`DestHealth`], one destination: its machine behind a mutex, its
//!   published state in an atomic, so [`DestHealth::accepts_calls`] is one atomic load, and its
//!   calls in progress and capacity caps in atomics, so [`DestHealth::try_start`] (the caps'
//!   check on every new branch) takes no lock either. Every state change is logged here, once,
//!   with its reason (callers get the [`Transition`] back for metrics and must not log it
//!   again).
//! - `capacity`: the calls in progress and the caps (`max_calls`, `max_cps`). A destination at
//!   a cap is **not** unhealthy: the cap never reaches the machine, its state does not change,
//!   and the core skips it for new calls as it skips one that is down.
//! - the prober (`pointsman::prober`, in the I/O crate): the task that sends the probes and
//!   feeds the replies in.
//!
//! Reloads ([`Health::adopt`]): a name in the new rule set with the same address and transport
//! keeps its entry (settings updated in place); a new name, or a known name whose address or
//! transport changed, gets a fresh entry (`Probing`, no call in progress, a full rate bucket).
//! A kept entry takes the new caps at once and keeps its calls in progress (they are real); its
//! rate bucket starts full only if `max_cps` changed. A name that left the rule set is *retired*:
//! not probed, not listed, kept only while something still holds its handle (a call in
//! progress, an old view), so a call that ends after the reload still decrements the right
//! counter and a name that comes back while still held keeps its state; it is dropped at the
//! first `adopt` after the last holder let go.
//!
//! Locks: the table's mutex is taken only by `adopt`, `view`, `get`, `snapshot` and `act`
//! (never on the hot path); a destination's mutex by its own methods (a call's end takes it, so
//! the last call of a draining destination is told exactly once; a call's start does not). The
//! only nesting is table then destination, in `adopt`; never the reverse.
//!
//! It must not: read received SIP bytes (the prober hands them to `wire::scan`), take a lock on
//! the hot reads ([`DestHealth::accepts_calls`], [`DestHealth::try_start`]), or hold a
//! destination's lock while logging.

mod capacity;
mod machine;
#[cfg(test)]
mod tests;

pub use capacity::Cap;
use capacity::Capacity;
#[cfg(test)]
use machine::Counters;
pub use machine::{AdminAction, Passive, State, Transition};
pub(crate) use machine::{Machine, Policy, Settings};

use routing_rules::spec::TransportSpec;
use routing_rules::{DestId, Destination, RequestUri, Router};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tracing::info;

/// The `[health]` section, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthConfig {
    /// Where TCP and TLS probes, and UDP probes that do not leave from a listener, leave
    /// from (port 0: any). Default: the first listener's IP with port 0.
    pub source: SocketAddr,
    /// UDP probes leave from the node's UDP listener (its address and port, where calls leave
    /// from), as clouds expect; `false` when `[health] source` is set: from `source`, a socket
    /// of the prober's own (a node of an anycast pair whose link may be cut: a reply to the
    /// shared address that lands on the other node reaches this one only over the link).
    pub from_listener: bool,
    /// Failures on real calls count towards the failure threshold (default true).
    pub passive: bool,
    /// Clamp of a trusted 503 Retry-After (default 1 s..=300 s).
    pub retry_after_min: Duration,
    pub retry_after_max: Duration,
    /// Hold after calls took a destination down, and its backoff cap (default 30 s, 300 s).
    pub passive_hold: Duration,
    pub passive_hold_max: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        let p = Policy::default();
        HealthConfig {
            source: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            from_listener: false,
            passive: p.passive,
            retry_after_min: p.retry_after_min,
            retry_after_max: p.retry_after_max,
            passive_hold: p.passive_hold,
            passive_hold_max: p.passive_hold_max,
        }
    }
}

impl HealthConfig {
    /// The node-wide part of every destination's machine settings.
    pub(crate) fn policy(&self) -> Policy {
        Policy {
            passive: self.passive,
            retry_after_min: self.retry_after_min,
            retry_after_max: self.retry_after_max,
            passive_hold: self.passive_hold,
            passive_hold_max: self.passive_hold_max,
        }
    }
}

/// What the admin API can get wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HealthError {
    #[error("unknown destination {name:?}: {hint}")]
    UnknownDestination { name: String, hint: String },
    #[error("unknown action {0:?}: use drain, maintenance, enable or force-up")]
    UnknownAction(String),
}

/// One destination's state as the admin API shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct DestinationSnapshot {
    pub name: String,
    /// `host:port` as configured (IPv6 in brackets).
    pub address: String,
    pub transport: TransportSpec,
    /// The published state (what routing obeys).
    pub state: State,
    /// What probes and calls say (differs from `state` under an admin state).
    pub health: State,
    /// Why it is in `state`.
    pub reason: String,
    /// Why its health is what it is.
    pub health_reason: String,
    /// When it entered `state`.
    pub since: Instant,
    /// How long it has been in `state` at the snapshot's `now`.
    pub in_state_for: Duration,
    /// When a Retry-After hold (or the retry time of an unprobed destination) ends.
    pub down_until: Option<Instant>,
    pub probed: bool,
    pub last_probe_rtt: Option<Duration>,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    pub calls_in_progress: u32,
    /// Draining with no call in progress.
    pub drained: bool,
    /// `max_calls`, when set.
    pub max_calls: Option<u32>,
    /// `max_cps`, when set (new calls a second).
    pub max_cps: Option<f64>,
    /// The cap a new call would meet now (the destination is skipped for new calls while it
    /// is at one); `None`: under its caps, or none set.
    pub at_cap: Option<Cap>,
    /// New calls that skipped it because of each cap, in [`Cap`] order, since the entry was
    /// made.
    pub capped: [u64; 2],
    pub calls: u64,
    pub failures: u64,
    pub probes_ok: u64,
    pub probes_failed: u64,
}

/// One destination: its machine, and its published state for the hot path.
#[derive(Debug)]
pub struct DestHealth {
    name: String,
    host: String,
    port: u16,
    transport: TransportSpec,
    /// The destination's own Request-URI host, which its probes name too.
    request_uri: Option<RequestUri>,
    state: AtomicU8,
    capacity: Capacity,
    machine: Mutex<Machine>,
}

impl DestHealth {
    /// A fresh entry for `dest` at `now`.
    pub(crate) fn new(dest: &Destination, policy: &Policy, now: Instant) -> DestHealth {
        let machine = Machine::new(settings_of(dest, policy), now);
        DestHealth {
            name: dest.name.clone(),
            host: dest.host.clone(),
            port: dest.port,
            transport: dest.transport,
            request_uri: dest.request_uri.clone(),
            state: AtomicU8::new(machine.state().as_u8()),
            capacity: Capacity::new(&dest.caps, now),
            machine: Mutex::new(machine),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    /// Host as configured (IP literal or hostname; IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn transport(&self) -> TransportSpec {
        self.transport
    }
    /// The Request-URI it expects (`request_uri`), which its probes carry too.
    pub fn request_uri(&self) -> Option<&RequestUri> {
        self.request_uri.as_ref()
    }
    /// `host:port`, IPv6 in brackets.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Whether it takes new calls: one atomic load.
    #[inline]
    pub fn accepts_calls(&self) -> bool {
        self.state().accepts_calls()
    }

    /// The published state: one atomic load.
    #[inline]
    pub fn state(&self) -> State {
        // Only `publish` stores, always a valid discriminant.
        State::from_u8(self.state.load(Ordering::Acquire)).unwrap_or(State::Probing)
    }

    // ---- for the proxy core -------------------------------------------------------------

    /// A real call's failure signal. Logged if it changes the state.
    pub fn report(&self, signal: Passive, now: Instant) -> Option<Transition> {
        self.apply(|m| m.passive(signal, now))
    }

    /// A new call (an INVITE branch) is about to be sent here at `now`: admitted and counted
    /// in progress unless a capacity cap refuses it, which says which cap (and counts it). A
    /// refusal is no failure: the state does not change. Lock-free.
    #[inline]
    pub fn try_start(&self, now: Instant) -> Result<(), Cap> {
        self.capacity.try_start(now)
    }

    /// A call is in progress here whatever the caps say (one restored from a replica: it is
    /// already at the destination).
    pub fn call_started(&self) {
        self.capacity.started();
    }

    /// A call sent here ended. `true` (and logged): it was the last call of a draining
    /// destination.
    pub fn call_ended(&self) -> bool {
        let drained = {
            // Under the machine's lock, so a drain and the last call's end are told in order.
            let mut m = self.machine();
            match self.capacity.end_one() {
                Some(left) => m.call_ended(left),
                None => false,
            }
        };
        if drained {
            info!(destination = %self.name, "destination drained: its last call ended");
        }
        drained
    }

    // ---- for the admin API --------------------------------------------------------------

    /// An operator's action. Logged if it changes the state.
    pub fn act(&self, action: AdminAction, now: Instant) -> Option<Transition> {
        self.apply(|m| m.admin(action, self.capacity.in_progress(), now))
    }

    /// Calls in progress here now.
    pub fn calls_in_progress(&self) -> u32 {
        self.capacity.in_progress()
    }

    pub fn snapshot(&self, now: Instant) -> DestinationSnapshot {
        let m = self.machine();
        let c = m.counters();
        let in_progress = self.capacity.in_progress();
        let (max_calls, max_cps) = self.capacity.caps();
        DestinationSnapshot {
            name: self.name.clone(),
            address: self.address(),
            transport: self.transport,
            state: m.state(),
            health: m.health(),
            reason: m.reason().to_string(),
            health_reason: m.health_reason().to_string(),
            since: m.since(),
            in_state_for: now.saturating_duration_since(m.since()),
            down_until: m.down_until(),
            probed: m.settings().health.probe,
            last_probe_rtt: m.last_probe_rtt(),
            consecutive_failures: m.consecutive_failures(),
            consecutive_successes: m.consecutive_successes(),
            calls_in_progress: in_progress,
            drained: m.drained(in_progress),
            max_calls,
            max_cps,
            at_cap: self.capacity.at_cap(now),
            capped: Cap::ALL.map(|cap| self.capacity.refused(cap)),
            calls: self.capacity.calls(),
            failures: c.failures,
            probes_ok: c.probes_ok,
            probes_failed: c.probes_failed,
        }
    }

    // ---- for the prober -----------------------------------------------------------------

    /// When it wants its next probe; `None`: not probed.
    pub fn wants_probe(&self) -> Option<Instant> {
        self.machine().wants_probe()
    }
    /// When something is next due (a probe or the end of a hold).
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.machine().next_wakeup()
    }
    /// The probe timeout in force.
    pub fn probe_timeout_setting(&self) -> Duration {
        self.machine().settings().health.timeout
    }
    pub fn probe_sent(&self, now: Instant) {
        self.machine().probe_sent(now)
    }
    pub fn probe_reply(&self, code: u16, rtt: Duration, now: Instant) -> Option<Transition> {
        self.apply(|m| m.probe_reply(code, rtt, now))
    }
    pub fn probe_timeout(&self, now: Instant) -> Option<Transition> {
        self.apply(|m| m.probe_timeout(now))
    }
    pub fn probe_error(&self, error: &str, now: Instant) -> Option<Transition> {
        self.apply(|m| m.probe_error(error, now))
    }
    /// Applies the passage of time (end of a hold).
    pub fn poll(&self, now: Instant) -> Option<Transition> {
        self.apply(|m| m.poll(now))
    }

    // ---- inside -------------------------------------------------------------------------

    fn machine(&self) -> MutexGuard<'_, Machine> {
        // A panic elsewhere while holding the lock leaves a consistent machine (every input
        // completes its update before returning); keep serving it.
        self.machine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs one input, publishes the state, logs a transition.
    fn apply(&self, input: impl FnOnce(&mut Machine) -> Option<Transition>) -> Option<Transition> {
        let t = {
            let mut m = self.machine();
            let t = input(&mut m);
            self.state.store(m.state().as_u8(), Ordering::Release);
            t
        };
        if let Some(t) = &t {
            info!(
                destination = %self.name,
                from = t.from.as_str(),
                to = t.to.as_str(),
                reason = %t.reason,
                "destination state changed"
            );
        }
        t
    }

    fn same_peer(&self, dest: &Destination) -> bool {
        self.host == dest.host
            && self.port == dest.port
            && self.transport == dest.transport
            && self.request_uri == dest.request_uri
    }
}

fn settings_of(dest: &Destination, policy: &Policy) -> Settings {
    Settings {
        health: dest.health.clone(),
        trusted: dest.trusted,
        policy: policy.clone(),
    }
}

/// The handles of one rule set's destinations, indexed by [`DestId`]. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct HealthView {
    dests: Arc<[Arc<DestHealth>]>,
}

impl HealthView {
    pub fn get(&self, id: DestId) -> Option<&Arc<DestHealth>> {
        self.dests.get(id.0 as usize)
    }

    /// Whether destination `id` takes new calls. An id this view does not know takes calls
    /// (health never blocks what it does not track): pass the view adopted for the same
    /// router as the id.
    #[inline]
    pub fn accepts_calls(&self, id: DestId) -> bool {
        self.get(id).is_none_or(|d| d.accepts_calls())
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<DestHealth>> {
        self.dests.iter().find(|d| d.name == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<DestHealth>> + '_ {
        self.dests.iter()
    }

    pub fn len(&self) -> usize {
        self.dests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dests.is_empty()
    }
}

struct Table {
    /// Current and retired entries by name.
    by_name: HashMap<String, Arc<DestHealth>>,
    current: HealthView,
}

/// Every destination's health, keyed by name. One per node.
pub struct Health {
    policy: Policy,
    table: Mutex<Table>,
}

impl Health {
    pub fn new(config: &HealthConfig) -> Health {
        Health {
            policy: config.policy(),
            table: Mutex::new(Table {
                by_name: HashMap::new(),
                current: HealthView::default(),
            }),
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `router`'s destinations the current ones (at start, and on every reload) and
    /// returns their handles. See the module documentation for what is kept.
    pub fn adopt(&self, router: &Router, now: Instant) -> HealthView {
        let mut table = self.table();
        let mut dests = Vec::with_capacity(router.rules.destinations.len());
        for d in &router.rules.destinations {
            let entry = match table.by_name.get(&d.name) {
                Some(e) if e.same_peer(d) => {
                    let settings = settings_of(d, &self.policy);
                    e.apply(|m| m.set_settings(settings, now));
                    e.capacity.set_caps(&d.caps);
                    e.clone()
                }
                _ => {
                    let e = Arc::new(DestHealth::new(d, &self.policy, now));
                    table.by_name.insert(d.name.clone(), e.clone());
                    e
                }
            };
            dests.push(entry);
        }
        let view = HealthView {
            dests: dests.into(),
        };
        table.current = view.clone();
        // Retired entries survive only while held outside the table (the current view holds
        // the others).
        let Table { by_name, current } = &mut *table;
        by_name.retain(|name, e| {
            current.by_name(name).is_some_and(|c| Arc::ptr_eq(c, e)) || Arc::strong_count(e) > 1
        });
        view
    }

    /// The handles of the current rule set.
    pub fn view(&self) -> HealthView {
        self.table().current.clone()
    }

    /// The current destination called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<DestHealth>> {
        self.table().current.by_name(name).cloned()
    }

    /// Every current destination, in rule-set order.
    pub fn snapshot(&self, now: Instant) -> Vec<DestinationSnapshot> {
        let view = self.view();
        view.iter().map(|d| d.snapshot(now)).collect()
    }

    /// An operator's action on the current destination called `name`.
    pub fn act(
        &self,
        name: &str,
        action: AdminAction,
        now: Instant,
    ) -> Result<Option<Transition>, HealthError> {
        let view = self.view();
        match view.by_name(name) {
            Some(d) => Ok(d.act(action, now)),
            None => Err(HealthError::UnknownDestination {
                name: name.chars().take(64).collect(),
                hint: unknown_hint(name, &view),
            }),
        }
    }
}

fn unknown_hint(name: &str, view: &HealthView) -> String {
    let names = || view.iter().map(|d| d.name.as_str());
    if view.is_empty() {
        return "there are no destinations".into();
    }
    if let Some(near) = routing_rules::check::closest(name, names()) {
        return format!("did you mean {near:?}?");
    }
    let known: Vec<String> = names().take(10).map(|n| format!("{n:?}")).collect();
    format!("known: {}", known.join(", "))
}
