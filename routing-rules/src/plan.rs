//! The strategies: for one call on one route, which destinations to try and in which order,
//! given which destinations are up. [`Router::plan`] is a pure function of the route, the
//! call (its Call-ID, caller and `entropy`) and the health states passed in, so the same inputs
//! always give the same plan, in tests and on both nodes of a pair.
//!
//! - `priority`: lowest priority first, ties by higher weight, then file order.
//! - `weighted`: the first member is drawn in proportion to weight among the members that are
//!   up (so shares are recomputed when one is down), then the next among those left, and so
//!   on; weight-0 members follow in file order.
//! - `hash`: weighted rendezvous hashing of the Call-ID or caller over the members that are up:
//!   a key keeps its member while that member is up, and losing a member moves only its keys.
//! - `parallel`: every member that is up, at once, in member order (the first is preferred).
//!
//! A destination is tried at most once per call: a member already planned in an earlier tier is
//! left out of later ones. It must not: read health itself, keep state, or allocate more than
//! the plan it returns.

use crate::call::Call;
use crate::hash::{fnv1a, mix, unit_open, SplitMix};
use crate::number::Number;
use crate::router::{Group, Router, SurvivalRule, TierRef};
use crate::spec::{HashOn, Strategy};
use crate::{DestId, GroupId, RouteId};
use std::time::Duration;

/// What to do with one call: tiers in order, each tier's members in try order.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Plan {
    /// Tiers with at least one member up, in route order.
    pub tiers: Vec<Tier>,
    /// Set only when every tier is down and the route's survivability rule applies; `tiers` is
    /// then empty. `None` with no tiers: nothing can take the call (the core answers its own 503).
    pub survivability: Option<Survival>,
}

impl Plan {
    /// Every destination in the order a serial core would try them (parallel tiers in member
    /// order), survivability group included.
    pub fn destinations(&self) -> impl Iterator<Item = DestId> + '_ {
        let survival = match &self.survivability {
            Some(Survival::Group(t)) => Some(t),
            _ => None,
        };
        self.tiers
            .iter()
            .chain(survival)
            .flat_map(|t| t.members.iter().copied())
    }
}

/// One tier of a plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tier {
    /// The group, or `None` for an entry of a route's `destinations = [...]`.
    pub group: Option<GroupId>,
    pub strategy: Strategy,
    /// Fork to every member at once (strategy `parallel`); otherwise try them one by one.
    pub parallel: bool,
    /// Members that are up, in try order; never empty.
    pub members: Vec<DestId>,
}

/// What the survivability rule gives when every tier is down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Survival {
    /// Send the call to this group's members that are up (the tier is never empty).
    Group(Tier),
    /// Answer the carrier with `code` (and `Retry-After`, when set).
    Reject {
        code: u16,
        retry_after: Option<Duration>,
    },
}

impl Router {
    /// Plans one call on `route`: the route's tiers, each with its members that `is_up` in the
    /// order the group's strategy gives for this call, skipping down members and empty tiers;
    /// and the survivability outcome when nothing is up.
    pub fn plan(&self, route: RouteId, call: &Call<'_>, is_up: &dyn Fn(DestId) -> bool) -> Plan {
        let rules = &self.route_rules[route.0 as usize];
        let mut plan = Plan::default();
        let mut planned: Vec<DestId> = Vec::new();
        for tier in &rules.tiers {
            let t = self.tier(*tier, call, &|d| is_up(d) && !planned.contains(&d));
            if let Some(t) = t {
                planned.extend_from_slice(&t.members);
                plan.tiers.push(t);
            }
        }
        if plan.tiers.is_empty() {
            plan.survivability = self.survival(route, call, is_up);
        }
        plan
    }

    /// The route's survivability outcome for `call`: its group's members that `is_up` in
    /// strategy order, or its reject. [`Router::plan`] applies it when every tier is down; the
    /// core also applies it when every planned tier has failed on the call itself.
    pub fn survival(
        &self,
        route: RouteId,
        call: &Call<'_>,
        is_up: &dyn Fn(DestId) -> bool,
    ) -> Option<Survival> {
        match &self.route_rules[route.0 as usize].survivability {
            Some(SurvivalRule::Group(g)) => self
                .tier(TierRef::Group(*g), call, is_up)
                .map(Survival::Group),
            Some(SurvivalRule::Reject { code, retry_after }) => Some(Survival::Reject {
                code: *code,
                retry_after: *retry_after,
            }),
            None => None,
        }
    }

    /// One tier for `call` with the members `available`; `None` if none is.
    fn tier(
        &self,
        tier: TierRef,
        call: &Call<'_>,
        available: &dyn Fn(DestId) -> bool,
    ) -> Option<Tier> {
        // A destination found by DNS is a member while one of its targets is available, and
        // stands for them in the tier.
        let member_available = |d: DestId| self.available_as_member(d, available);
        let (group, strategy, members) = match tier {
            TierRef::Destination(d) => (None, Strategy::Priority, vec![d]),
            TierRef::Group(g) => {
                let group = self.group(g);
                (
                    Some(g),
                    group.strategy,
                    order_members(group, call, &member_available),
                )
            }
        };
        let members: Vec<DestId> = members
            .into_iter()
            .filter(|&d| member_available(d))
            .collect();
        let members = self.put_targets_in(members, strategy == Strategy::Parallel, call, available);
        (!members.is_empty()).then_some(Tier {
            group,
            strategy,
            parallel: strategy == Strategy::Parallel,
            members,
        })
    }
}

/// Appends the `pool`'s items to `out` in a weighted random order: each next item is drawn among
/// those left in proportion to its weight (every weight above 0).
pub(crate) fn draw_by_weight(
    mut pool: Vec<(DestId, u64)>,
    rng: &mut SplitMix,
    out: &mut Vec<DestId>,
) {
    let mut total: u64 = pool.iter().map(|(_, w)| w).sum();
    while !pool.is_empty() {
        let mut pick = rng.below(total);
        let i = pool
            .iter()
            .position(|&(_, w)| {
                if pick < w {
                    true
                } else {
                    pick -= w;
                    false
                }
            })
            .unwrap_or(pool.len() - 1);
        let (dest, w) = pool.remove(i);
        total -= w;
        out.push(dest);
    }
}

/// The group's available members in the strategy's order for this call.
pub(crate) fn order_members(
    group: &Group,
    call: &Call<'_>,
    available: &dyn Fn(DestId) -> bool,
) -> Vec<DestId> {
    let up: Vec<&crate::router::Member> = group
        .ordered_members()
        .filter(|m| available(m.dest))
        .collect();
    match group.strategy {
        Strategy::Priority | Strategy::Parallel => up.iter().map(|m| m.dest).collect(),
        Strategy::Weighted => {
            // Drawn over the members in file order (so the outcome does not depend on how
            // they sort); standby members (weight 0) follow in file order.
            let pool: Vec<(DestId, u64)> = group
                .members
                .iter()
                .filter(|m| m.weight > 0 && available(m.dest))
                .map(|m| (m.dest, u64::from(m.weight)))
                .collect();
            let mut rng = SplitMix::new(call.entropy ^ group.salt);
            let mut out = Vec::with_capacity(up.len());
            draw_by_weight(pool, &mut rng, &mut out);
            out.extend(
                group
                    .members
                    .iter()
                    .filter(|m| m.weight == 0 && available(m.dest))
                    .map(|m| m.dest),
            );
            out
        }
        Strategy::Hash => {
            let key = hash_key(group.hash_on, call);
            let mut scored: Vec<(f64, u32, DestId)> = up
                .iter()
                .enumerate()
                .map(|(i, m)| (hrw_score(key, m.name_hash, m.weight), i as u32, m.dest))
                .collect();
            // Highest score first; ties (never in practice) by member order.
            scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            scored.into_iter().map(|(_, _, d)| d).collect()
        }
    }
}

/// The hash of what a hash group hashes; the call's entropy when the call lacks it.
fn hash_key(on: HashOn, call: &Call<'_>) -> u64 {
    let text = match on {
        HashOn::CallId => call.call_id.map(|c| fnv1a(c.trim().as_bytes())),
        HashOn::Caller => call.from_user.map(|u| match Number::parse(u) {
            Some(n) => fnv1a(n.as_bytes()),
            None => fnv1a(u.trim().as_bytes()),
        }),
    };
    mix(text.unwrap_or(call.entropy))
}

/// Weighted rendezvous score: `weight / -ln(u)` with `u` uniform in (0, 1) from the key and
/// the member; weight 0 scores 0 (last). Equal weights order members as plain HRW does.
pub(crate) fn hrw_score(key: u64, member: u64, weight: u32) -> f64 {
    if weight == 0 {
        return 0.0;
    }
    let u = unit_open(mix(key ^ member));
    f64::from(weight) / -u.ln()
}
