//! The flat view of a compiled rule set: destinations, and each route's destinations as one
//! ordered list, with its failover policy. It is what the serial proxy core runs on, and it is
//! part of every [`Router`](crate::Router) (`router.rules`), which adds the match conditions,
//! the tiers and groups, and survivability.
//!
//! It must not: do I/O, resolve hostnames, or change after compilation (shared read-only).

use crate::spec::{CancelMode, TransportSpec};
use std::time::Duration;

/// Default `provisional_timeout` of a destination.
pub const DEFAULT_PROVISIONAL_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest `provisional_timeout` accepted.
pub const MAX_PROVISIONAL_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default `retry_codes` of a route.
pub const DEFAULT_RETRY_CODES: [u16; 5] = [408, 500, 502, 503, 504];
/// Default `media_timeout` of a route whose media is relayed.
pub const DEFAULT_MEDIA_TIMEOUT: Duration = Duration::from_secs(30);

/// Default `ring_timeout` of a route.
pub const DEFAULT_RING_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest `ring_timeout` accepted.
pub const MAX_RING_TIMEOUT: Duration = Duration::from_secs(3600);

/// Default `probe_interval` of a destination.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(10);
/// Shortest `probe_interval` accepted.
pub const MIN_PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// Longest `probe_interval` accepted.
pub const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(3600);
/// Default `probe_timeout` of a destination.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Shortest `probe_timeout` accepted.
pub const MIN_PROBE_TIMEOUT: Duration = Duration::from_millis(10);
/// Longest `probe_timeout` accepted.
pub const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `failure_threshold` of a destination.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
/// Default `recovery_threshold` of a destination.
pub const DEFAULT_RECOVERY_THRESHOLD: u32 = 5;
/// Largest `failure_threshold` and `recovery_threshold` accepted (the smallest is 1).
pub const MAX_THRESHOLD: u32 = 100;
/// Default `probe_codes` of a destination.
pub const DEFAULT_PROBE_CODES: [u16; 1] = [200];

/// Largest `max_calls` accepted (the smallest is 1).
pub const MAX_MAX_CALLS: u32 = 1_000_000;
/// Smallest `max_cps` accepted: one new call every 10 s.
pub const MIN_MAX_CPS: f64 = 0.1;
/// Largest `max_cps` accepted.
pub const MAX_MAX_CPS: f64 = 100_000.0;

/// Index of a destination in its [`RuleSet`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DestId(pub u32);

/// Index of a route in its [`RuleSet`], in file order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteId(pub u32);

/// Index of a `[[group]]` in its [`Router`](crate::Router), in file order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(pub u32);

#[derive(Clone, Debug, PartialEq)]
pub struct Destination {
    pub name: String,
    /// Host part as configured (IP literal or name; IPv6 without brackets).
    pub host: String,
    /// As configured, or the default of its transport (5060, 5061 for TLS) for a name given
    /// without one.
    pub port: u16,
    /// How its address is found: an IP as written, or DNS.
    pub lookup: Lookup,
    pub transport: TransportSpec,
    /// TLS settings (`transport = "tls"` only; `None` otherwise).
    pub tls: Option<DestinationTls>,
    pub provisional_timeout: Duration,
    pub cancel_mode: CancelMode,
    pub trusted: bool,
    /// How its health is probed and judged (pointsman's `health` module runs it).
    pub health: HealthSettings,
    /// Its own `media_timeout` for anchored calls it answers: `Some(None)` turns the check off;
    /// `None` leaves the route's.
    pub media_timeout: Option<Option<Duration>>,
    /// The Request-URI it expects in place of the carrier's (`None`: the carrier's, unchanged).
    pub request_uri: Option<RequestUri>,
    /// Its capacity caps (`max_calls`, `max_cps`).
    pub caps: Caps,
}

/// How a destination's address is found (RFC 3263 §4.2). A destination found by DNS stands for
/// the targets its records name, each a destination of its own with its own health
/// ([`Router::with_targets`](crate::Router::with_targets)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// An IP address, as written: nothing to look up.
    Literal,
    /// `name:port`: the name's A/AAAA records, at that port (a port given means no SRV).
    Address,
    /// `name` without a port: NAPTR, then SRV, then A/AAAA at the transport's default port.
    Service,
}

impl Lookup {
    /// Whether the address comes from DNS.
    pub fn is_dns(self) -> bool {
        self != Lookup::Literal
    }
}

/// A destination's capacity caps, validated: `max_calls` in `1..=MAX_MAX_CALLS`, `max_cps`
/// finite in `MIN_MAX_CPS..=MAX_MAX_CPS`; `None`: no cap. A destination at a cap is skipped for
/// new calls like one that is down, and is no less healthy for it (pointsman's `health` module
/// keeps the counts).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Caps {
    /// Calls in progress at once: INVITE branches sent to it that have not ended (answered
    /// calls count until their BYE).
    pub max_calls: Option<u32>,
    /// New calls (INVITE branches) a second, on average.
    pub max_cps: Option<f64>,
}

impl Caps {
    /// How many new calls may go at once after a quiet spell: `max(1, floor(max_cps))`, so a
    /// cap of 20/s lets 20 simultaneous INVITEs through, then one every 50 ms.
    pub fn burst(&self) -> Option<u32> {
        self.max_cps.map(|r| (r.floor() as u32).max(1))
    }

    /// Whether any cap is set.
    pub fn any(&self) -> bool {
        self.max_calls.is_some() || self.max_cps.is_some()
    }
}

/// A destination's Request-URI rewrite, validated: each part is safe to write into a SIP URI as
/// it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestUri {
    /// As it goes in the URI: an IPv6 address in brackets.
    pub host: String,
    pub port: Option<u16>,
    pub user_prefix: Option<String>,
    /// `(name, value)`, in config order, names distinct (case-insensitively).
    pub params: Vec<(String, Option<String>)>,
}

impl RequestUri {
    /// `host[:port]` as it goes in a URI.
    pub fn hostport(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", self.host),
            None => self.host.clone(),
        }
    }
}

/// A TLS destination's settings as written (file paths are not read here: pointsman's config
/// loader checks and loads them).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DestinationTls {
    /// `ca`: PEM bundle that verifies the destination (`None`: the node-wide `[tls] ca`).
    pub ca: Option<String>,
    /// `client_cert` and `client_key`: the identity presented for mutual TLS.
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    /// `server_name`, or the host of `address`: checked against the peer certificate, sent as
    /// SNI.
    pub server_name: String,
}

/// A destination's health settings, defaults filled in and validated: `interval` and `timeout`
/// in range with `timeout < interval`, thresholds in `1..=MAX_THRESHOLD`, `codes` non-empty,
/// final, without 503.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthSettings {
    /// Send SIP OPTIONS probes (`probe`).
    pub probe: bool,
    /// `probe_interval`.
    pub interval: Duration,
    /// `probe_timeout`.
    pub timeout: Duration,
    /// `failure_threshold`: consecutive failures that mark the destination down.
    pub failure_threshold: u32,
    /// `recovery_threshold`: consecutive successful probes that bring it back up.
    pub recovery_threshold: u32,
    /// `probe_codes`: final replies to OPTIONS that count as a success.
    pub codes: CodeSet,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            probe: true,
            interval: DEFAULT_PROBE_INTERVAL,
            timeout: DEFAULT_PROBE_TIMEOUT,
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            recovery_threshold: DEFAULT_RECOVERY_THRESHOLD,
            codes: CodeSet(DEFAULT_PROBE_CODES.to_vec()),
        }
    }
}

/// A small set of SIP status codes (100..=699).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CodeSet(pub Vec<u16>);

impl CodeSet {
    pub fn contains(&self, code: u16) -> bool {
        self.0.contains(&code)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    pub name: String,
    /// Every destination of the route's tiers in try order, with all destinations up: tier by
    /// tier, each tier's members in the order its strategy gives (weighted: by weight, highest
    /// first; hash and parallel: member order), each destination once. Health, weighted draws
    /// and hashing are applied by [`Router::plan`](crate::Router::plan).
    pub destinations: Vec<DestId>,
    pub retry_codes: CodeSet,
    pub ringing_retry_codes: CodeSet,
    pub pass_503: bool,
    pub ring_timeout: Duration,
    pub media: crate::spec::MediaMode,
    /// Anchored calls: end an answered call after this long without media (`None`: never).
    pub media_timeout: Option<Duration>,
}

/// One problem found while compiling a spec: where it is and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleError {
    /// Key path, e.g. `route[0].destinations[2]`.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for RuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// The facts of a request the flat view routes on (no SIP syntax here). [`Call`](crate::Call)
/// adds what match conditions and strategies need.
#[derive(Clone, Copy, Debug, Default)]
pub struct CallFacts<'a> {
    /// User part of the Request-URI (the DID), or the number of a `tel:` URI.
    pub to_user: Option<&'a str>,
    pub from_user: Option<&'a str>,
    /// Name of the listener the call came in on.
    pub listener: Option<&'a str>,
}

/// Destinations and flat routes, indexed by [`DestId`] and [`RouteId`].
#[derive(Clone, Debug, PartialEq)]
pub struct RuleSet {
    pub destinations: Vec<Destination>,
    pub routes: Vec<Route>,
}

impl RuleSet {
    /// The first route in file order, whatever the call: the flat view has no match
    /// conditions. [`Router::route_for`](crate::Router::route_for) applies them.
    pub fn route_for(&self, facts: &CallFacts<'_>) -> Option<RouteId> {
        let _ = facts;
        (!self.routes.is_empty()).then_some(RouteId(0))
    }
    pub fn route_by_name(&self, name: &str) -> Option<RouteId> {
        self.routes
            .iter()
            .position(|r| r.name == name)
            .map(|i| RouteId(i as u32))
    }
    pub fn route(&self, id: RouteId) -> &Route {
        &self.routes[id.0 as usize]
    }
    pub fn destination(&self, id: DestId) -> &Destination {
        &self.destinations[id.0 as usize]
    }
    pub fn destination_by_name(&self, name: &str) -> Option<DestId> {
        self.destinations
            .iter()
            .position(|d| d.name == name)
            .map(|i| DestId(i as u32))
    }
}
