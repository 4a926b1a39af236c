//! `explain`: the routing decision for one call told in words — which route matched and why,
//! its tiers and their members in the order they would be tried given the health states
//! passed in, each tier's strategy, and the survivability rule. `pointsman explain` passes
//! "everything up" (offline); a caller holding live health passes that instead.
//!
//! [`Explanation`] is data with a `Display`; it must not decide anything itself: the order
//! shown is the order [`Router::plan`](crate::Router::plan) uses (weighted groups show their
//! members by weight, with each one's share of first attempts, since the draw is per call).

use crate::call::Call;
use crate::number::Number;
use crate::plan::order_members;
use crate::router::{Group, MatchReason, Router, SurvivalRule, TierRef};
use crate::spec::{HashOn, Strategy};
use crate::{DestId, RouteId};
use std::fmt;
use std::time::Duration;

/// The decision for one call, ready to print.
#[derive(Clone, Debug, PartialEq)]
pub struct Explanation {
    pub call: CallSummary,
    pub route: RouteId,
    pub route_name: String,
    pub reasons: Vec<MatchReason>,
    pub tiers: Vec<TierExplanation>,
    pub survivability: Option<SurvivalExplanation>,
}

/// The facts of the call explained.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CallSummary {
    pub to: Option<String>,
    /// `to` normalised, if it is a number.
    pub to_number: Option<String>,
    pub from: Option<String>,
    pub source: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TierExplanation {
    /// `None` for an entry of `destinations = [...]`.
    pub group: Option<String>,
    pub strategy: Strategy,
    pub hash_on: Option<HashOn>,
    /// Members that would be tried, in order, then members that would not (down, or already
    /// tried in an earlier tier).
    pub members: Vec<MemberExplanation>,
}

impl TierExplanation {
    /// Whether no member of the tier would be tried.
    pub fn skipped(&self) -> bool {
        self.members.iter().all(|m| m.state != MemberState::Tried)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct MemberExplanation {
    pub dest: DestId,
    pub name: String,
    /// `host:port/transport`.
    pub address: String,
    pub state: MemberState,
    /// In priority groups.
    pub priority: Option<u32>,
    /// In weighted and hash groups.
    pub weight: Option<u32>,
    /// Share of first attempts, in percent, over the members up (weighted and hash groups).
    pub share: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    Tried,
    Down,
    /// Already in an earlier tier of this route.
    AlreadyTried,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SurvivalExplanation {
    /// Whether it applies now (every tier is down).
    pub applies: bool,
    pub rule: SurvivalOutcome,
}

#[derive(Clone, Debug, PartialEq)]
pub enum SurvivalOutcome {
    Group(TierExplanation),
    Reject {
        code: u16,
        retry_after: Option<Duration>,
    },
}

/// No route matched the call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoRoute {
    pub call: CallSummary,
}

impl fmt::Display for NoRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no route matches the call {}: each route has a match condition this call fails, and \
             no route is a default route; add a [[route]] without match (at the end) to take \
             such calls, or check the number",
            self.call
        )
    }
}

impl std::error::Error for NoRoute {}

impl Router {
    /// Explains the decision for `call` with the health states `is_up`.
    pub fn explain(
        &self,
        call: &Call<'_>,
        is_up: &dyn Fn(DestId) -> bool,
    ) -> Result<Explanation, NoRoute> {
        let summary = CallSummary {
            to: call.to_user.map(str::to_string),
            to_number: call
                .to_user
                .and_then(Number::parse)
                .map(|n| n.as_str().to_string()),
            from: call.from_user.map(str::to_string),
            source: call.listener.map(str::to_string),
        };
        let Some((route, reasons)) = self.match_route(call) else {
            return Err(NoRoute { call: summary });
        };
        let rules = &self.route_rules[route.0 as usize];
        let mut planned: Vec<DestId> = Vec::new();
        let mut tiers = Vec::with_capacity(rules.tiers.len());
        for &t in &rules.tiers {
            let tier = self.explain_tier(t, call, is_up, &planned);
            planned.extend(
                tier.members
                    .iter()
                    .filter(|m| m.state == MemberState::Tried)
                    .map(|m| m.dest),
            );
            tiers.push(tier);
        }
        let all_down = planned.is_empty();
        let survivability = rules.survivability.as_ref().map(|s| SurvivalExplanation {
            applies: all_down,
            rule: match s {
                SurvivalRule::Group(g) => {
                    SurvivalOutcome::Group(self.explain_tier(TierRef::Group(*g), call, is_up, &[]))
                }
                SurvivalRule::Reject { code, retry_after } => SurvivalOutcome::Reject {
                    code: *code,
                    retry_after: *retry_after,
                },
            },
        });
        Ok(Explanation {
            call: summary,
            route,
            route_name: self.route(route).name.clone(),
            reasons,
            tiers,
            survivability,
        })
    }

    fn explain_tier(
        &self,
        tier: TierRef,
        call: &Call<'_>,
        is_up: &dyn Fn(DestId) -> bool,
        planned: &[DestId],
    ) -> TierExplanation {
        let member = |dest: DestId, state, priority, weight, share| {
            let d = self.destination(dest);
            let transport = d.transport.as_str();
            let host = if d.host.contains(':') {
                format!("[{}]", d.host)
            } else {
                d.host.clone()
            };
            let address = match d.lookup {
                crate::Lookup::Literal => format!("{host}:{}/{transport}", d.port),
                crate::Lookup::Address => format!("{host}:{}/{transport} (DNS A/AAAA)", d.port),
                crate::Lookup::Service => format!("{host}/{transport} (DNS NAPTR/SRV)"),
            };
            MemberExplanation {
                dest,
                name: d.name.clone(),
                address,
                state,
                priority,
                weight,
                share,
            }
        };
        let state = |d: DestId| {
            // A destination found by DNS was tried once each of its targets was.
            let tried = match self.targets(d) {
                Some(targets) => {
                    !targets.is_empty() && targets.iter().all(|t| planned.contains(&t.dest))
                }
                None => planned.contains(&d),
            };
            if tried {
                MemberState::AlreadyTried
            } else if !self.available_as_member(d, is_up) {
                MemberState::Down
            } else {
                MemberState::Tried
            }
        };
        match tier {
            TierRef::Destination(d) => TierExplanation {
                group: None,
                strategy: Strategy::Priority,
                hash_on: None,
                members: vec![member(d, state(d), None, None, None)],
            },
            TierRef::Group(g) => {
                let group: &Group = self.group(g);
                let available = |d: DestId| state(d) == MemberState::Tried;
                // Weighted draws are per call: show the members by weight instead of one draw.
                let order: Vec<DestId> = match group.strategy {
                    Strategy::Weighted => group
                        .ordered_members()
                        .filter(|m| available(m.dest))
                        .map(|m| m.dest)
                        .collect(),
                    _ => order_members(group, call, &available),
                };
                let weighs = matches!(group.strategy, Strategy::Weighted | Strategy::Hash);
                let total: u64 = group
                    .members
                    .iter()
                    .filter(|m| available(m.dest))
                    .map(|m| u64::from(m.weight))
                    .sum();
                let mut members = Vec::with_capacity(group.members.len());
                let rest = group
                    .ordered_members()
                    .map(|m| m.dest)
                    .filter(|d| !order.contains(d));
                for d in order.iter().copied().chain(rest) {
                    let Some(m) = group.members.iter().find(|m| m.dest == d) else {
                        continue;
                    };
                    let s = state(d);
                    let share = (weighs && s == MemberState::Tried && total > 0)
                        .then(|| 100.0 * f64::from(m.weight) / total as f64);
                    members.push(member(
                        d,
                        s,
                        (group.strategy == Strategy::Priority).then_some(m.priority),
                        weighs.then_some(m.weight),
                        share,
                    ));
                }
                TierExplanation {
                    group: Some(group.name.clone()),
                    strategy: group.strategy,
                    hash_on: (group.strategy == Strategy::Hash).then_some(group.hash_on),
                    members,
                }
            }
        }
    }
}

impl fmt::Display for CallSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        write!(f, "to {}", or_dash(&self.to))?;
        match (&self.to, &self.to_number) {
            (Some(to), Some(n)) if to != n => write!(f, " (number {n})")?,
            (Some(_), None) => write!(f, " (not a number)")?,
            _ => {}
        }
        write!(
            f,
            ", from {}, source {}",
            or_dash(&self.from),
            or_dash(&self.source)
        )
    }
}

fn strategy_text(t: &TierExplanation) -> String {
    match t.strategy {
        Strategy::Priority if t.group.is_none() => "listed in the route's destinations".into(),
        Strategy::Priority => {
            "priority: lowest priority first, ties by higher weight, one at a time".into()
        }
        Strategy::Weighted => "weighted: each call draws its first member by weight among the \
                               members up, then the next the same way, one at a time"
            .into(),
        Strategy::Hash => format!(
            "hash on {}: the same {} always reaches the same member while it is up; the others \
             follow in hash order, one at a time",
            t.hash_on.unwrap_or_default().as_str(),
            match t.hash_on.unwrap_or_default() {
                HashOn::CallId => "Call-ID",
                HashOn::Caller => "caller number",
            }
        ),
        Strategy::Parallel => {
            "parallel: every member up at once, the first 2xx wins, the others get CANCEL".into()
        }
    }
}

fn write_tier(f: &mut fmt::Formatter<'_>, t: &TierExplanation) -> fmt::Result {
    match &t.group {
        Some(g) => writeln!(f, "group {g:?} ({})", strategy_text(t))?,
        None => writeln!(f, "destination ({})", strategy_text(t))?,
    }
    let mut n = 0;
    for m in &t.members {
        // 1) 2) try order; * all at once; - order drawn per call; x not tried.
        let mark = match (m.state, t.strategy) {
            (MemberState::Tried, Strategy::Priority) => {
                n += 1;
                format!("{n})")
            }
            (MemberState::Tried, Strategy::Parallel) => "*".to_string(),
            (MemberState::Tried, _) => "-".to_string(),
            _ => "x".to_string(),
        };
        write!(f, "       {mark} {} {}", m.name, m.address)?;
        if let Some(p) = m.priority {
            write!(f, ", priority {p}")?;
        }
        if let Some(w) = m.weight {
            write!(f, ", weight {w}")?;
        }
        if let Some(s) = m.share {
            write!(f, " ({s:.0}% of first attempts)")?;
        }
        match m.state {
            MemberState::Tried => {}
            MemberState::Down => write!(f, ": down, skipped")?,
            MemberState::AlreadyTried => write!(f, ": already tried in an earlier tier, skipped")?,
        }
        writeln!(f)?;
    }
    Ok(())
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "call: {}", self.call)?;
        writeln!(
            f,
            "route: {:?} (route[{}]) matches, because:",
            self.route_name, self.route.0
        )?;
        for r in &self.reasons {
            writeln!(f, "  - {r}")?;
        }
        writeln!(f, "tiers, in the order they are tried:")?;
        for (i, t) in self.tiers.iter().enumerate() {
            write!(f, "  {}. ", i + 1)?;
            if t.skipped() {
                write!(f, "[skipped: no member up] ")?;
            }
            write_tier(f, t)?;
        }
        match &self.survivability {
            None => writeln!(
                f,
                "when every tier is down or has failed: no survivability rule; the carrier gets the best final response, or pointsman's own 503 if none came"
            )?,
            Some(s) => {
                let now = if s.applies { " (applies now)" } else { "" };
                match &s.rule {
                    SurvivalOutcome::Group(t) => {
                        write!(
                            f,
                            "when every tier is down or has failed{now}: survivability sends the call to "
                        )?;
                        write_tier(f, t)?;
                    }
                    SurvivalOutcome::Reject { code, retry_after } => {
                        write!(f, "when every tier is down or has failed{now}: survivability rejects the call with {code}")?;
                        if let Some(d) = retry_after {
                            write!(f, " and Retry-After: {}", d.as_secs())?;
                        }
                        writeln!(f)?;
                    }
                }
            }
        }
        Ok(())
    }
}
