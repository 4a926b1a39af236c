//! Destinations found by DNS, standing for their targets. A destination whose address is a
//! name ([`Lookup::Address`], [`Lookup::Service`]) is not sent to itself: each address its
//! records give is a target, a destination of its own (named `NAME@ADDRESS:PORT`, with its
//! own health, probes, caps and metrics) that inherits everything else from it.
//! [`Router::with_targets`] builds the router that routes on them from the router compiled
//! from the config and what DNS answered; [`Router::plan`] puts a destination's targets in
//! its place, in SRV order (priority, then a weighted draw per call, RFC 2782).
//!
//! It must not: look anything up (the proxy's `dns` module does), or change the ids of the
//! configured destinations, groups and routes (targets are appended after them).

use crate::call::Call;
use crate::hash::{fnv1a, mix, SplitMix};
use crate::plan::draw_by_weight;
use crate::router::Router;
use crate::{DestId, Lookup};
use std::net::SocketAddr;

/// One address DNS gave for a destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub addr: SocketAddr,
    /// SRV priority (lowest first); 0 without SRV.
    pub priority: u16,
    /// SRV weight within its priority; 1 without SRV, so the addresses of one name share calls.
    pub weight: u16,
    /// The name the address is of: the SRV target, or the destination's own name.
    pub host: String,
}

/// A destination's target in a router built by [`Router::with_targets`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub dest: DestId,
    pub priority: u16,
    pub weight: u16,
    /// The name it was found under (SRV target, or the destination's name).
    pub host: String,
}

/// The name of the target at `addr` of destination `parent`.
pub fn target_name(parent: &str, addr: SocketAddr) -> String {
    format!("{parent}@{addr}")
}

impl Router {
    /// This router with the targets DNS gave (`resolved`, by destination): each becomes a
    /// destination, appended after the configured ones. A destination found by DNS that
    /// `resolved` leaves out, or gives no address, has no target: it is down. Called on the
    /// router compiled from the config; on a router that already has targets, they are
    /// replaced. The destinations found by DNS are no longer probed themselves (their targets
    /// are).
    pub fn with_targets(&self, resolved: &[(DestId, Vec<Resolved>)]) -> Router {
        let mut router = self.clone();
        let configured = self.configured_destinations();
        router.rules.destinations.truncate(configured);
        router.attrs.truncate(configured);
        // A router without names keeps both tables empty: planning its calls skips the lookup.
        let names = self.rules.destinations[..configured]
            .iter()
            .any(|d| d.lookup.is_dns());
        let size = if names { configured } else { 0 };
        router.targets = vec![None; size];
        router.target_of = vec![None; size];
        for i in 0..configured {
            let parent = DestId(i as u32);
            if !router.rules.destinations[i].lookup.is_dns() {
                continue;
            }
            router.rules.destinations[i].health.probe = false;
            let mut found: Vec<&Resolved> = resolved
                .iter()
                .filter(|(d, _)| *d == parent)
                .flat_map(|(_, r)| r)
                .collect();
            found.sort_by_key(|r| (r.priority, r.addr));
            found.dedup_by_key(|r| r.addr);
            let mut targets = Vec::with_capacity(found.len());
            for r in found {
                let id = DestId(router.rules.destinations.len() as u32);
                let mut dest = self.rules.destinations[i].clone();
                dest.name = target_name(&dest.name, r.addr);
                dest.host = r.addr.ip().to_string();
                dest.port = r.addr.port();
                dest.lookup = Lookup::Literal;
                router.rules.destinations.push(dest);
                router.attrs.push(self.attrs[i].clone());
                router.target_of.push(Some(parent));
                targets.push(Target {
                    dest: id,
                    priority: r.priority,
                    weight: r.weight,
                    host: r.host.clone(),
                });
            }
            router.targets[i] = Some(targets.into());
        }
        router
    }

    /// How many destinations the config has (the rest are targets).
    pub fn configured_destinations(&self) -> usize {
        self.rules.destinations.len() - self.target_of.iter().flatten().count()
    }

    /// The targets of a destination found by DNS, in a router built by
    /// [`with_targets`](Self::with_targets) (empty: it resolved to nothing); `None` for a
    /// destination sent to itself.
    pub fn targets(&self, dest: DestId) -> Option<&[Target]> {
        self.targets.get(dest.0 as usize)?.as_deref()
    }

    /// The destination a target stands in for; `None` for a configured destination.
    pub fn target_of(&self, dest: DestId) -> Option<DestId> {
        self.target_of.get(dest.0 as usize).copied().flatten()
    }

    /// Whether `dest` can take a call: a destination found by DNS while one of its targets is
    /// `available`.
    pub(crate) fn available_as_member(
        &self,
        dest: DestId,
        available: &dyn Fn(DestId) -> bool,
    ) -> bool {
        match self.targets(dest) {
            Some(targets) => targets.iter().any(|t| available(t.dest)),
            None => available(dest),
        }
    }

    /// `members` with each destination found by DNS replaced by its `available` targets in
    /// SRV order for this call; only the first of them in a `parallel` tier (one branch per
    /// destination: two targets of one cloud would be two calls to it).
    pub(crate) fn put_targets_in(
        &self,
        members: Vec<DestId>,
        parallel: bool,
        call: &Call<'_>,
        available: &dyn Fn(DestId) -> bool,
    ) -> Vec<DestId> {
        if self.targets.is_empty() {
            return members;
        }
        let mut out = Vec::with_capacity(members.len());
        for d in members {
            let Some(targets) = self.targets(d) else {
                out.push(d);
                continue;
            };
            let salt = mix(fnv1a(self.destination(d).name.as_bytes()));
            let ordered = srv_order(targets, call.entropy ^ salt, available);
            if parallel {
                out.extend(ordered.first());
            } else {
                out.extend(ordered);
            }
        }
        out
    }
}

/// The `available` targets in RFC 2782 order: priorities lowest first; within one, drawn one
/// after another in proportion to weight (weight-0 targets last, in address order).
fn srv_order(targets: &[Target], seed: u64, available: &dyn Fn(DestId) -> bool) -> Vec<DestId> {
    let mut rng = SplitMix::new(seed);
    let mut out = Vec::with_capacity(targets.len());
    // `targets` is sorted by priority (with_targets): take one priority at a time.
    let mut rest: &[Target] = targets;
    while let Some(first) = rest.first() {
        let same = rest
            .iter()
            .take_while(|t| t.priority == first.priority)
            .count();
        let (level, next) = rest.split_at(same);
        rest = next;
        let pool: Vec<(DestId, u64)> = level
            .iter()
            .filter(|t| t.weight > 0 && available(t.dest))
            .map(|t| (t.dest, u64::from(t.weight)))
            .collect();
        draw_by_weight(pool, &mut rng, &mut out);
        out.extend(
            level
                .iter()
                .filter(|t| t.weight == 0 && available(t.dest))
                .map(|t| t.dest),
        );
    }
    out
}
