//! The operator's model, as deserialised from the config file (serde; unknown keys rejected).
//! Nothing here is validated: [`crate::RuleSet::compile`] does that.

use serde::Deserialize;
use std::time::Duration;

/// `[[destination]]`: a SIP peer calls can be sent to.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DestinationSpec {
    /// Unique name, used by routes, logs and metrics. Letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// `host:port` (IPv4, `[IPv6]`, or a hostname resolved at start).
    pub address: String,
    /// `udp` (default) or `tcp`; `tls` later.
    #[serde(default)]
    pub transport: TransportSpec,
    /// No provisional response within this → the branch has failed (default 3 s).
    #[serde(default, with = "humantime_serde::option")]
    pub provisional_timeout: Option<Duration>,
    /// When an abandoned branch is cancelled (default `immediate`).
    #[serde(default)]
    pub cancel_mode: CancelMode,
    /// Whether its 503 Retry-After is believed (default true).
    #[serde(default)]
    pub trusted: Option<bool>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default, Hash)]
#[serde(rename_all = "lowercase")]
pub enum TransportSpec {
    #[default]
    Udp,
    Tcp,
}

/// How a branch abandoned by failover is cancelled.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default, Hash)]
#[serde(rename_all = "lowercase")]
pub enum CancelMode {
    /// CANCEL at once, even before any provisional response (the carrier-edge default: the
    /// branch is dead to us, and a late answer must not ring a phone nobody will pick up).
    #[default]
    Immediate,
    /// RFC 3261 §9.1: CANCEL only once a provisional response has arrived.
    Deferred,
}

/// `[[route]]`: an ordered list of destinations and its failover policy.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub name: String,
    /// Destination names, tried in this order.
    pub destinations: Vec<String>,
    /// Final codes that fail over before the callee rings (default 408, 500, 502, 503, 504).
    #[serde(default)]
    pub retry_codes: Option<Vec<u16>>,
    /// Final codes that still fail over after a provisional above 100 (default none).
    #[serde(default)]
    pub ringing_retry_codes: Option<Vec<u16>>,
    /// Relay a final 503 to the carrier as 503 (default false: mapped to 500).
    #[serde(default)]
    pub pass_503: Option<bool>,
    /// A call that rings longer than this is ended: 408 upstream, CANCEL downstream (default 120 s).
    #[serde(default, with = "humantime_serde::option")]
    pub ring_timeout: Option<Duration>,
}
