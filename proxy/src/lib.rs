//! pointsman: a stateful SIP proxy for the carrier edge that keeps every call alive when a cloud
//! fails. This crate is its I/O side and its command line: it runs the sans-IO protocol logic of
//! `pointsman-protocol` on tokio, over UDP, TCP and TLS sockets. The architecture and the
//! behaviour it implements are in `docs/architecture.md`.
//!
//! # Layout
//!
//! - [`cli`]: the `pointsman` command (`run`, `check`, `explain`, `status`, `log`, `drill`,
//!   `announce`).
//! - [`logging`]: the process's log subscriber and its filter, changed while it runs.
//! - [`announce`]: `pointsman announce`, the sidecar that has BIRD announce the anycast address
//!   only while the node answers ready.
//! - [`config`]: the config file: loading, validation with `FILE:LINE:COLUMN` errors, reload.
//! - [`link`]: the QUIC link between the nodes of a pair; [`cluster`]: what it carries for the
//!   core (datagrams for their owner, replicas, peers up and down).
//! - [`node`]: one running node: the core, its routing snapshot, reload, drain, status.
//! - [`driver`]: the worker threads that feed received bytes and timer expiries to the core and
//!   carry out what it returns.
//! - [`transport`]: UDP, TCP and TLS sockets.
//! - [`prober`]: the health probes (SIP OPTIONS) sent to every destination.
//! - [`admin`]: the HTTP admin API and `GET /metrics`; [`exporter`]: the Prometheus recorder;
//!   [`process`]: the process's own series (build, uptime, CPU, memory, descriptors, reloads).
//! - `shutdown` (private): SIGTERM/SIGINT, and the grace given to calls in setup.
//! - [`sched`], `memory` (private): scheduling and allocator tuning of the process.
//! - `drill` (private): `pointsman drill`, a node between a simulated carrier and simulated
//!   clouds.
//!
//! The modules other crates (the end-to-end tests, the benches, the bench tools, the fuzzers)
//! use are public; the others are private. `#![deny(unreachable_pub, unnameable_types)]` keeps
//! every `pub` item reachable and every type in a public signature nameable.

#![deny(unreachable_pub, unnameable_types)]

pub mod admin;
pub mod announce;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod dns;
mod drill;
pub mod driver;
pub mod exporter;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod hep;
pub mod link;
pub mod logging;
mod memory;
pub mod node;
pub mod prober;
pub mod process;
pub mod sched;
mod shutdown;
pub mod timeline;
pub mod transport;
