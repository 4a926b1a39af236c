//! routing-rules: pointsman's routing brain, pure and without I/O.
//!
//! It owns the model of destinations, groups and routes as the operator writes them ([`spec`]),
//! their validation into a [`Router`] (every error names the key path and what would be right;
//! warnings for rules that can never match), and the routing decision: which route a call takes
//! ([`Router::route_for`]: first match in file order, DIDs through a compiled index), and in
//! which order its destinations are tried given their health ([`Router::plan`]: priority,
//! weighted, hash and parallel tiers, survivability), told in words by [`Router::explain`];
//! destinations found by DNS stand for their targets ([`Router::with_targets`]).
//! A running proxy holds the `Router` in an `Arc` swapped atomically on reload; a call keeps the
//! snapshot it started with.
//!
//! It must not: open sockets, read clocks or files, or know SIP wire syntax.

mod call;
pub mod check;
mod compile;
mod explain;
mod hash;
mod matcher;
pub mod number;
mod plan;
mod router;
mod ruleset;
pub mod spec;
mod targets;

pub use call::{Call, Headers, NoHeaders};
pub use compile::{DEFAULT_PRIORITY, DEFAULT_WEIGHT, MAX_RETRY_AFTER};
pub use explain::{
    CallSummary, Explanation, MemberExplanation, MemberState, NoRoute, SurvivalExplanation,
    SurvivalOutcome, TierExplanation,
};
pub use plan::{Plan, Survival, Tier};
pub use router::{
    Conditions, DestinationAttrs, Group, HeaderCondition, MatchReason, Member, RouteRules, Router,
    SurvivalRule, TierRef,
};
pub use ruleset::*;
pub use targets::{target_name, Resolved, Target};
