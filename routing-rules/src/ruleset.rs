//! The compiled, validated rule set and the routing decision.
//!
//! [`RuleSet::compile`] turns the operator's [`spec`](crate::spec) into a [`RuleSet`]: defaults
//! filled in, destination names resolved to [`DestId`]s, every problem reported with its key path.
//! [`RuleSet::route_for`] is the routing decision. It must not: do I/O, resolve hostnames, or keep
//! any state that changes after compilation (a `RuleSet` is shared read-only between calls).

use crate::check::{check_failover_code, check_name, closest, fmt_duration, parse_host_port};
use crate::spec::{CancelMode, DestinationSpec, RouteSpec, TransportSpec};
use std::collections::HashMap;
use std::time::Duration;

/// Default `provisional_timeout` of a destination.
pub const DEFAULT_PROVISIONAL_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest `provisional_timeout` accepted.
pub const MAX_PROVISIONAL_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default `retry_codes` of a route.
pub const DEFAULT_RETRY_CODES: [u16; 5] = [408, 500, 502, 503, 504];
/// Default `ring_timeout` of a route.
pub const DEFAULT_RING_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest `ring_timeout` accepted.
pub const MAX_RING_TIMEOUT: Duration = Duration::from_secs(3600);

/// Index of a destination in its [`RuleSet`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DestId(pub u32);

/// Index of a route in its [`RuleSet`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RouteId(pub u32);

#[derive(Clone, Debug, PartialEq)]
pub struct Destination {
    pub name: String,
    /// Host part as configured (IP literal or name; IPv6 without brackets).
    pub host: String,
    pub port: u16,
    pub transport: TransportSpec,
    pub provisional_timeout: Duration,
    pub cancel_mode: CancelMode,
    pub trusted: bool,
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
    pub destinations: Vec<DestId>,
    pub retry_codes: CodeSet,
    pub ringing_retry_codes: CodeSet,
    pub pass_503: bool,
    pub ring_timeout: Duration,
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

/// What the routing decision may look at in a request (no SIP syntax here).
#[derive(Clone, Copy, Debug, Default)]
pub struct CallFacts<'a> {
    /// User part of the Request-URI (the DID), or the number of a `tel:` URI.
    pub to_user: Option<&'a str>,
    pub from_user: Option<&'a str>,
    /// Name of the listener the call came in on.
    pub listener: Option<&'a str>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RuleSet {
    pub destinations: Vec<Destination>,
    pub routes: Vec<Route>,
}

impl RuleSet {
    /// Validates and compiles. Returns every error found, not just the first.
    pub fn compile(
        destinations: &[DestinationSpec],
        routes: &[RouteSpec],
    ) -> Result<RuleSet, Vec<RuleError>> {
        let mut errors = Vec::new();
        let mut err = |path: String, message: String| errors.push(RuleError { path, message });

        // Destinations. A name maps to its first definition; later duplicates are errors.
        let mut by_name: HashMap<&str, usize> = HashMap::new();
        let mut compiled = Vec::with_capacity(destinations.len());
        for (i, d) in destinations.iter().enumerate() {
            let at = |key: &str| format!("destination[{i}].{key}");
            if let Err(m) = check_name("destination", &d.name) {
                err(at("name"), m);
            }
            if let Some(&first) = by_name.get(d.name.as_str()) {
                if !d.name.is_empty() {
                    err(
                        at("name"),
                        format!(
                            "destination name {:?} is already used by destination[{first}]: \
                             give each destination a unique name",
                            d.name
                        ),
                    );
                }
            } else {
                by_name.insert(&d.name, i);
            }
            let (host, port) = match parse_host_port(&d.address) {
                Ok(hp) => hp,
                Err(m) => {
                    err(at("address"), m);
                    (String::new(), 0)
                }
            };
            let provisional_timeout = d.provisional_timeout.unwrap_or(DEFAULT_PROVISIONAL_TIMEOUT);
            if provisional_timeout.is_zero() {
                err(
                    at("provisional_timeout"),
                    format!(
                        "provisional_timeout is 0s: every branch would fail at once; set the time \
                         to wait for a first 1xx, more than 0s and at most {} (default {})",
                        fmt_duration(MAX_PROVISIONAL_TIMEOUT),
                        fmt_duration(DEFAULT_PROVISIONAL_TIMEOUT)
                    ),
                );
            } else if provisional_timeout > MAX_PROVISIONAL_TIMEOUT {
                err(
                    at("provisional_timeout"),
                    format!(
                        "provisional_timeout {} is longer than {}: a destination that has not \
                         answered 1xx by then is dead; use a few seconds (default {})",
                        fmt_duration(provisional_timeout),
                        fmt_duration(MAX_PROVISIONAL_TIMEOUT),
                        fmt_duration(DEFAULT_PROVISIONAL_TIMEOUT)
                    ),
                );
            }
            compiled.push(Destination {
                name: d.name.clone(),
                host,
                port,
                transport: d.transport,
                provisional_timeout,
                cancel_mode: d.cancel_mode,
                trusted: d.trusted.unwrap_or(true),
            });
        }

        // Routes.
        let mut route_names: HashMap<&str, usize> = HashMap::new();
        let mut compiled_routes = Vec::with_capacity(routes.len());
        for (r, spec) in routes.iter().enumerate() {
            let at = |key: &str| format!("route[{r}].{key}");
            if let Err(m) = check_name("route", &spec.name) {
                err(at("name"), m);
            }
            if let Some(&first) = route_names.get(spec.name.as_str()) {
                if !spec.name.is_empty() {
                    err(
                        at("name"),
                        format!(
                            "route name {:?} is already used by route[{first}]: give each route \
                             a unique name",
                            spec.name
                        ),
                    );
                }
            } else {
                route_names.insert(&spec.name, r);
            }

            if spec.destinations.is_empty() {
                let example = destinations.first().map_or("primary", |d| d.name.as_str());
                err(
                    at("destinations"),
                    format!(
                        "route {:?} lists no destinations: list at least one destination name, \
                         tried in order, e.g. destinations = [{example:?}]",
                        spec.name
                    ),
                );
            }
            let mut ids = Vec::with_capacity(spec.destinations.len());
            let mut seen: HashMap<&str, usize> = HashMap::new();
            for (k, name) in spec.destinations.iter().enumerate() {
                let path = format!("route[{r}].destinations[{k}]");
                if let Some(&first) = seen.get(name.as_str()) {
                    err(
                        path,
                        format!(
                            "destination {name:?} is listed twice in route {:?} (also at \
                             route[{r}].destinations[{first}]): list each destination once",
                            spec.name
                        ),
                    );
                    continue;
                }
                seen.insert(name, k);
                match by_name.get(name.as_str()) {
                    Some(&i) => ids.push(DestId(i as u32)),
                    None => err(path, unknown_destination(name, destinations)),
                }
            }

            let retry_codes = spec
                .retry_codes
                .clone()
                .unwrap_or_else(|| DEFAULT_RETRY_CODES.to_vec());
            check_codes(&mut err, &at("retry_codes"), &retry_codes);
            let ringing_retry_codes = spec.ringing_retry_codes.clone().unwrap_or_default();
            check_codes(&mut err, &at("ringing_retry_codes"), &ringing_retry_codes);

            let ring_timeout = spec.ring_timeout.unwrap_or(DEFAULT_RING_TIMEOUT);
            if ring_timeout.is_zero() {
                err(
                    at("ring_timeout"),
                    format!(
                        "ring_timeout is 0s: every call would end as soon as it rings; set how \
                         long a call may ring, more than 0s and at most {} (default {})",
                        fmt_duration(MAX_RING_TIMEOUT),
                        fmt_duration(DEFAULT_RING_TIMEOUT)
                    ),
                );
            } else if ring_timeout > MAX_RING_TIMEOUT {
                err(
                    at("ring_timeout"),
                    format!(
                        "ring_timeout {} is longer than {}: use the longest time a call may \
                         ring, in minutes (default {})",
                        fmt_duration(ring_timeout),
                        fmt_duration(MAX_RING_TIMEOUT),
                        fmt_duration(DEFAULT_RING_TIMEOUT)
                    ),
                );
            }

            compiled_routes.push(Route {
                name: spec.name.clone(),
                destinations: ids,
                retry_codes: CodeSet(retry_codes),
                ringing_retry_codes: CodeSet(ringing_retry_codes),
                pass_503: spec.pass_503.unwrap_or(false),
                ring_timeout,
            });
        }
        if routes.is_empty() {
            err(
                "route".into(),
                "no [[route]] table: every call needs a route; add one listing the destinations \
                 to try in order, e.g. [[route]] name = \"default\" destinations = [\"primary\"]"
                    .into(),
            );
        }

        if errors.is_empty() {
            Ok(RuleSet {
                destinations: compiled,
                routes: compiled_routes,
            })
        } else {
            Err(errors)
        }
    }
    /// The route a new call takes (`None`: no route matches; the proxy answers 404).
    pub fn route_for(&self, facts: &CallFacts<'_>) -> Option<RouteId> {
        // Routes have no match conditions yet: the first route in file order takes every call.
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

/// Checks a list of failover codes; errors name the index of each bad or repeated code.
fn check_codes(err: &mut impl FnMut(String, String), path: &str, codes: &[u16]) {
    for (i, &code) in codes.iter().enumerate() {
        if let Err(m) = check_failover_code(code) {
            err(format!("{path}[{i}]"), m);
        } else if let Some(first) = codes[..i].iter().position(|&c| c == code) {
            err(
                format!("{path}[{i}]"),
                format!("{code} is listed twice (also at {path}[{first}]): list each code once"),
            );
        }
    }
}

/// The message for a route naming a destination that does not exist.
fn unknown_destination(name: &str, destinations: &[DestinationSpec]) -> String {
    let names = || destinations.iter().map(|d| d.name.as_str());
    if destinations.is_empty() {
        return format!(
            "unknown destination {name:?}: there is no [[destination]] table; add one with \
             name = {name:?} and its address"
        );
    }
    if let Some(near) = closest(name, names()) {
        return format!("unknown destination {name:?}: did you mean {near:?}?");
    }
    const SHOWN: usize = 10;
    let mut known: Vec<String> = names().take(SHOWN).map(|n| format!("{n:?}")).collect();
    if destinations.len() > SHOWN {
        known.push(format!("and {} more", destinations.len() - SHOWN));
    }
    format!(
        "unknown destination {name:?}: no [[destination]] has that name (known: {})",
        known.join(", ")
    )
}
