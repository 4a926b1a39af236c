//! The compiled rule set as the proxy uses it: [`Router`]. It owns the route matching decision
//! ([`Router::route_for`]: first matching route in file order) and holds everything
//! [`Router::plan`](crate::Router::plan) and [`Router::explain`](crate::Router::explain) need.
//! Built only by [`Router::compile`](crate::Router::compile), then shared read-only (a
//! running proxy holds it in an `Arc`, swapped whole on reload).
//!
//! It must not: do I/O, read clocks, or change after compilation.

use crate::call::Call;
use crate::matcher::NumberIndex;
use crate::number::Number;
use crate::spec::{HashOn, Strategy};
use crate::{DestId, Destination, GroupId, Route, RouteId, RuleError, RuleSet};
use std::time::Duration;

/// What a destination brings to groups, beyond the flat [`Destination`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestinationAttrs {
    /// Default share in weighted and hash groups (default 1).
    pub weight: u32,
    /// Default order in priority groups, lowest first (default 0).
    pub priority: u32,
    pub tags: Vec<String>,
}

/// A compiled `[[group]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub name: String,
    pub strategy: Strategy,
    /// What a hash group hashes (`CallId` for groups of other strategies).
    pub hash_on: HashOn,
    /// Members in file order, with their effective priority and weight.
    pub members: Vec<Member>,
    /// Indexes into `members` in try order with every member up (priority: by priority, then
    /// higher weight, then file order; weighted: by weight, highest first; hash, parallel: file
    /// order).
    pub(crate) order: Vec<u32>,
    /// Stable per-group salt for weighted draws (from the name).
    pub(crate) salt: u64,
}

impl Group {
    /// The members in try order with every member up.
    pub fn ordered_members(&self) -> impl Iterator<Item = &Member> + '_ {
        self.order.iter().map(|&i| &self.members[i as usize])
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub dest: DestId,
    pub priority: u32,
    pub weight: u32,
    /// Stable hash of the destination's name: its rendezvous-hashing identity, so reordering
    /// the config never moves a Call-ID to another member.
    pub(crate) name_hash: u64,
}

/// One tier of a route, as configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TierRef {
    Group(GroupId),
    /// One entry of `destinations = [...]`: a single-member priority tier.
    Destination(DestId),
}

/// What a route does when every tier is down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SurvivalRule {
    Group(GroupId),
    Reject {
        code: u16,
        retry_after: Option<Duration>,
    },
}

/// `match.header`, compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderCondition {
    pub name: String,
    pub value: Option<String>,
}

/// A route's `match`, compiled. `to` numbers live in the router's number index (a route may
/// have a million); only their count is kept here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Conditions {
    /// How many exact `to` numbers the route has.
    pub to_count: usize,
    /// Normalised `to_prefix` entries.
    pub to_prefix: Vec<String>,
    /// Normalised `from_prefix` entries.
    pub from_prefix: Vec<String>,
    pub source: Vec<String>,
    pub header: Option<HeaderCondition>,
}

impl Conditions {
    /// No condition at all: a default route.
    pub fn is_default(&self) -> bool {
        !self.has_number()
            && self.from_prefix.is_empty()
            && self.source.is_empty()
            && self.header.is_none()
    }
    /// Whether the route matches on the called number.
    pub fn has_number(&self) -> bool {
        self.to_count > 0 || !self.to_prefix.is_empty()
    }
}

/// What a route adds to its flat [`Route`]: match conditions, tiers, survivability.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteRules {
    pub conditions: Conditions,
    pub tiers: Vec<TierRef>,
    pub survivability: Option<SurvivalRule>,
}

/// Why a route matched: the conditions that held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MatchReason {
    /// The route has no match conditions.
    Default,
    /// The normalised called number is in `to`.
    ToExact(String),
    /// The called number starts with this `to_prefix` (the longest of the route's that does).
    ToPrefix(String),
    /// The caller's number starts with this `from_prefix`.
    FromPrefix(String),
    /// The call came in on this listener.
    Source(String),
    /// The header is present (and has the required value).
    Header { name: String, value: Option<String> },
}

impl std::fmt::Display for MatchReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MatchReason::Default => write!(f, "it has no match conditions (a default route)"),
            MatchReason::ToExact(n) => write!(f, "the called number {n} is listed in match.to"),
            MatchReason::ToPrefix(p) => {
                write!(f, "the called number starts with match.to_prefix {p:?}")
            }
            MatchReason::FromPrefix(p) => {
                write!(f, "the caller's number starts with match.from_prefix {p:?}")
            }
            MatchReason::Source(s) => {
                write!(f, "the call came in on listener {s:?} (match.source)")
            }
            MatchReason::Header {
                name,
                value: Some(v),
            } => write!(f, "header {name} is {v:?} (match.header)"),
            MatchReason::Header { name, value: None } => {
                write!(f, "header {name} is present (match.header)")
            }
        }
    }
}

/// The compiled, validated rule set.
#[derive(Clone, Debug)]
pub struct Router {
    /// Destinations and flat routes (what the serial core runs on); `DestId` and `RouteId`
    /// index them, and every other table here.
    pub rules: RuleSet,
    /// Per destination.
    pub attrs: Vec<DestinationAttrs>,
    pub groups: Vec<Group>,
    /// Per route.
    pub route_rules: Vec<RouteRules>,
    /// Problems that do not stop the rules from working (e.g. a route that can never match).
    pub warnings: Vec<RuleError>,
    pub(crate) index: NumberIndex,
    /// By `DestId`: the targets of each destination found by DNS, once
    /// [`with_targets`](Router::with_targets) gave them (empty until then).
    pub(crate) targets: Vec<Option<std::sync::Arc<[crate::targets::Target]>>>,
    /// By `DestId`: the destination each target stands in for (empty without targets).
    pub(crate) target_of: Vec<Option<DestId>>,
    /// Routes without a `to`/`to_prefix` condition, in file order: candidates for every call.
    pub(crate) numberless: Vec<RouteId>,
}

impl Router {
    /// The route a new call takes: the first route in file order whose conditions all hold.
    /// `None`: no route matches (the proxy answers 404).
    pub fn route_for(&self, call: &Call<'_>) -> Option<RouteId> {
        let number = call.to_user.and_then(Number::parse);
        let mut best: Option<RouteId> = None;
        // Each candidate list is in file order: scan it until a route passes or it can no
        // longer beat the best so far. The number condition already holds for the candidates
        // the index gives.
        let scan = |routes: &[RouteId], best: &mut Option<RouteId>| {
            for &r in routes {
                if best.is_some_and(|b| r >= b) {
                    return;
                }
                if self.other_conditions_hold(r, call) {
                    *best = Some(r);
                    return;
                }
            }
        };
        if let Some(n) = &number {
            scan(self.index.exact(n), &mut best);
            if self.index.has_prefixes() {
                self.index
                    .prefixes_of(n.as_bytes(), |_, routes| scan(routes, &mut best));
            }
        }
        scan(&self.numberless, &mut best);
        best
    }

    /// [`route_for`](Self::route_for), with the conditions that held.
    pub fn match_route(&self, call: &Call<'_>) -> Option<(RouteId, Vec<MatchReason>)> {
        let route = self.route_for(call)?;
        let c = &self.route_rules[route.0 as usize].conditions;
        let mut why = Vec::new();
        if c.is_default() {
            why.push(MatchReason::Default);
        }
        if let Some(n) = call.to_user.and_then(Number::parse) {
            if self.index.exact(&n).contains(&route) {
                why.push(MatchReason::ToExact(n.as_str().to_string()));
            } else {
                let mut longest = None;
                self.index.prefixes_of(n.as_bytes(), |len, routes| {
                    if routes.contains(&route) {
                        longest = Some(len);
                    }
                });
                if let Some(len) = longest {
                    why.push(MatchReason::ToPrefix(n.as_str()[..len].to_string()));
                }
            }
        }
        if let Some(p) = matching_prefix(&c.from_prefix, call.from_user) {
            why.push(MatchReason::FromPrefix(p.to_string()));
        }
        if !c.source.is_empty() {
            if let Some(l) = call.listener {
                why.push(MatchReason::Source(l.to_string()));
            }
        }
        if let Some(h) = &c.header {
            why.push(MatchReason::Header {
                name: h.name.clone(),
                value: h.value.clone(),
            });
        }
        Some((route, why))
    }

    /// Every condition of route `r` other than the called number.
    fn other_conditions_hold(&self, r: RouteId, call: &Call<'_>) -> bool {
        let c = &self.route_rules[r.0 as usize].conditions;
        if !c.from_prefix.is_empty() && matching_prefix(&c.from_prefix, call.from_user).is_none() {
            return false;
        }
        if !c.source.is_empty() {
            match call.listener {
                Some(l) if c.source.iter().any(|s| s == l) => {}
                _ => return false,
            }
        }
        if let Some(h) = &c.header {
            match call.headers.header(&h.name) {
                Some(v) => {
                    if h.value.as_deref().is_some_and(|want| want != v.trim()) {
                        return false;
                    }
                }
                None => return false,
            }
        }
        true
    }

    pub fn route(&self, id: RouteId) -> &Route {
        self.rules.route(id)
    }
    pub fn route_by_name(&self, name: &str) -> Option<RouteId> {
        self.rules.route_by_name(name)
    }
    pub fn destination(&self, id: DestId) -> &Destination {
        self.rules.destination(id)
    }
    pub fn destination_by_name(&self, name: &str) -> Option<DestId> {
        self.rules.destination_by_name(name)
    }
    pub fn group(&self, id: GroupId) -> &Group {
        &self.groups[id.0 as usize]
    }
    /// Listener names used by `match.source` conditions, with the key path of each (for the
    /// config to check they exist).
    pub fn sources(&self) -> impl Iterator<Item = (String, &str)> + '_ {
        self.route_rules.iter().enumerate().flat_map(|(r, rr)| {
            rr.conditions
                .source
                .iter()
                .enumerate()
                .map(move |(k, s)| (format!("route[{r}].match.source[{k}]"), s.as_str()))
        })
    }
}

/// The first of `prefixes` (normalised) that the caller number starts with.
fn matching_prefix<'p>(prefixes: &'p [String], number: Option<&str>) -> Option<&'p str> {
    let n = number.and_then(Number::parse)?;
    prefixes
        .iter()
        .find(|p| n.as_bytes().starts_with(p.as_bytes()))
        .map(String::as_str)
}
