//! The compiled, validated rule set and the routing decision.
//!
//! CONTRACT (stub; the implementation keeps these signatures and may add to them).

use crate::spec::{CancelMode, DestinationSpec, RouteSpec, TransportSpec};
use std::time::Duration;

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
        let _ = (destinations, routes);
        todo!("RuleSet::compile")
    }
    /// The route a new call takes (`None`: no route matches; the proxy answers 404).
    pub fn route_for(&self, facts: &CallFacts<'_>) -> Option<RouteId> {
        let _ = facts;
        todo!("RuleSet::route_for")
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
