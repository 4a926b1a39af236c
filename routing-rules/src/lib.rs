//! routing-rules: pointsman's routing brain, pure and without I/O.
//!
//! It owns the model of destinations and routes as the operator writes them ([`spec`]), their
//! validation into a [`RuleSet`] (every error names the key path and what would be right), and the
//! routing decision: which route a call takes and in which order its destinations are tried.
//! A running proxy holds the `RuleSet` in an `Arc` swapped atomically on reload; a call keeps the
//! snapshot it started with.
//!
//! It must not: open sockets, read clocks or files, or know SIP wire syntax.

pub mod check;
mod ruleset;
pub mod spec;

pub use ruleset::*;
