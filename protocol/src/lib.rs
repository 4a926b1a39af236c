//! pointsman's SIP protocol logic, sans-IO: every state machine of the proxy, fed received bytes,
//! timer expiries and delivery failures, each with the time they happened at, and answering with
//! the bytes to send and the timers to arm. Nothing here opens a socket, reads a clock, spawns a
//! task or sleeps; the driver in the `pointsman` crate does all of that. The same code therefore
//! runs under the tokio driver, the deterministic test harness and the fuzzers.
//!
//! # Layout
//!
//! Data flows down this list on the way in and back up on the way out. The modules marked
//! private are not part of the API; what callers need of them is re-exported at the root.
//!
//! - `peer` (private): who a message came from or goes to ([`Peer`], [`Proto`], [`ConnId`]).
//! - [`wire`]: the zero-copy scanner of received SIP bytes and the splicer that edits them.
//! - [`originate`]: the messages pointsman writes itself (responses, CANCEL, ACK, BYE, OPTIONS).
//! - [`transaction`]: the RFC 3261 §17 client and server transactions and their keys.
//! - `table` (private): the sharded tables every transaction, call and dialog is kept in.
//! - `timer` (private): the timer wheel the driver runs the core's timers on ([`TimerWheel`]).
//! - `guard` (private): ACLs, rate limits, scanner blocking and overload shedding, as
//!   decisions; configured with [`GuardConfig`] ([`Acl`], [`Cidr`]).
//! - [`health`]: each destination's health state machine and the table the core reads.
//! - `core` (private): the proxy core (RFC 3261 §16): [`Core`] dispatches each message to its
//!   transaction, call or dialog; `Call` is the per-INVITE response context with serial
//!   failover, CANCEL-first reroutes, ghost-call teardown and best-response choice; a call's
//!   state exports to plain data and restores into another core ([`CallState`]).
//! - [`media`]: the media relay of anchored calls: the SDP line rewriter, the RTP plane that
//!   takes every media packet (selection, normalisation, switching, silence, inactivity) and its
//!   port pools; the core's side of it is `core::anchor`.
//! - [`metrics`]: the metric handles and their label enums (the exporter is the I/O crate's).
//! - `testing` (tests and the `testing` feature only): the deterministic fake-clock harness
//!   the core's tests, the fuzzers and the benches drive the core with.
//!
//! `#![deny(unreachable_pub, unnameable_types)]` keeps the surface curated: a `pub` item that is
//! neither re-exported here nor in a public module does not compile, and neither does a public
//! signature that names a type callers cannot name.
//!
//! Routing decisions come from the `routing-rules` crate, which is pure too.

#![deny(unreachable_pub, unnameable_types)]

mod core;
mod guard;
pub mod health;
pub mod media;
pub mod metrics;
pub mod originate;
mod peer;
mod table;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod timer;
pub mod transaction;
pub mod wire;

// The core: what the driver builds, feeds and carries out.
pub use crate::core::{
    Core, CoreConfig, CoreTimer, Inbound, Output, Routing, TimerKind, MAX_CALL_DURATION,
};
// The edits of a proxied request and of a relayed response: the one forwarding path.
pub use crate::core::{forwarded, probe_branch_prefix, strip_top_via};
// A call's state as plain data: exported from one core, restored into another.
pub use crate::core::{
    AnsweredInfoState, AnsweredState, BranchState, BranchStatus, CallPhase, CallState, CancelState,
    DialogId, PeerState, RestoreError, SetupState, TargetState,
};
// The calls an operator lists and ends (`GET /calls`, `pointsman calls`).
pub use crate::core::{
    operator_reason, CallFilter, CallStage, CallSummary, OPERATOR_CAUSE, OPERATOR_REASON,
};
// Who a message came from or goes to.
pub use crate::peer::{ConnId, Peer, Proto};
// The timer wheel the driver runs the core's timers on.
pub use crate::timer::TimerWheel;
// The guard's configuration: ACLs, rate limits, scanner blocking, overload shedding.
pub use crate::guard::{Acl, Cidr, GuardConfig};
