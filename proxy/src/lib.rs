//! pointsman: a stateful SIP proxy for the carrier edge that keeps every call alive when a cloud
//! fails. See DESIGN.md for the behaviour it implements; the modules follow its data flow:
//! transport → wire → transaction → proxy core → routing-rules.

pub mod admin;
pub mod config;
pub mod drill;
#[doc(hidden)]
pub mod fuzzing;
pub mod guard;
pub mod health;
pub mod memory;
pub mod metrics;
pub mod node;
pub mod originate;
pub mod proxy;
pub mod sched;
pub mod server;
pub mod shutdown;
pub mod sim;
pub mod timer;
pub mod transaction;
pub mod transport;
pub mod wire;
