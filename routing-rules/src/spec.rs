//! The operator's model, as deserialised from the config file (serde; unknown keys rejected).
//! Nothing here is validated: [`crate::Router::compile`] does that.
//!
//! ```toml
//! [[destination]]
//! name = "edge-a1"
//! address = "10.0.0.1:5060"
//! priority = 0          # lower is tried first in a priority group (default 0)
//! weight = 1            # share in a weighted or hash group; tie-break in a priority group (default 1)
//! tags = ["site-a"]
//! max_calls = 200       # at most 200 calls in progress here (default: no cap)
//! max_cps = 20          # at most 20 new calls a second, burst 20 (default: no cap)
//!
//! [[group]]
//! name = "site-a"
//! strategy = "priority" # or "weighted", "hash", "parallel" (default "priority")
//! members = ["edge-a1", { name = "edge-a2", priority = 10 }]
//!
//! [[route]]
//! name = "emergency"
//! match = { to = ["+1 555 010 0911"] }
//! tiers = ["site-a", "site-b", "cloud"]
//! survivability = { group = "lifeboat" }   # or { reject = 503, retry_after = "30s" }
//! ```

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::time::Duration;

/// `[[destination]]`: a SIP peer calls can be sent to.
///
/// Health keys (all optional): `probe` (send SIP OPTIONS, default true), `probe_interval`
/// (default 10 s), `probe_timeout` (default 2 s, shorter than the interval), `failure_threshold`
/// (consecutive failures that take it down, default 3), `recovery_threshold` (consecutive
/// successful probes that bring it back, default 5), `probe_codes` (replies to OPTIONS that count
/// as alive, default `[200]`; 503 always counts as a failure).
#[derive(Clone, Debug, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct DestinationSpec {
    /// Unique name, used by groups, routes, logs and metrics. Letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// `host:port` (IPv4, `[IPv6]`, or a hostname whose A/AAAA records are used), or a hostname
    /// alone, looked up as a SIP service (NAPTR, SRV, A/AAAA: RFC 3263). Names are re-resolved
    /// on their records' TTL; each address found is a target with its own health.
    pub address: String,
    /// `udp` (default), `tcp` or `tls`.
    #[serde(default)]
    pub transport: TransportSpec,
    /// TLS only: PEM bundle of the CA certificate(s) that sign this destination's certificate
    /// (default: `[tls] ca`; one of the two is required for a TLS destination).
    #[serde(default)]
    pub ca: Option<String>,
    /// TLS only: PEM certificate chain pointsman presents to this destination (mutual TLS);
    /// with `client_key`.
    #[serde(default)]
    pub client_cert: Option<String>,
    /// TLS only: PEM private key of `client_cert`.
    #[serde(default)]
    pub client_key: Option<String>,
    /// TLS only: the name (DNS name or IP) this destination's certificate must carry, also sent
    /// as SNI (default: the host of `address`).
    #[serde(default)]
    pub server_name: Option<String>,
    /// No provisional response within this → the branch has failed (default 3 s).
    #[serde(default, with = "humantime_serde::option")]
    pub provisional_timeout: Option<Duration>,
    /// When an abandoned branch is cancelled (default `immediate`).
    #[serde(default)]
    pub cancel_mode: CancelMode,
    /// Whether its 503 Retry-After is believed (default true).
    #[serde(default)]
    pub trusted: Option<bool>,
    /// Share of calls in a `weighted` or `hash` group, tie-break in a `priority` group
    /// (default 1; 0 = standby: tried only after the members with a weight).
    #[serde(default)]
    pub weight: Option<u32>,
    /// Order in a `priority` group: lowest first (default 0).
    #[serde(default)]
    pub priority: Option<u32>,
    /// Free labels for operators (admin API, logs); they do not change routing.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Probe it with SIP OPTIONS (default true). Without probes only calls tell its health.
    #[serde(default)]
    pub probe: Option<bool>,
    /// Time between two probes (default 10 s).
    #[serde(default, with = "humantime_serde::option")]
    pub probe_interval: Option<Duration>,
    /// A probe with no final reply within this has failed (default 2 s; independent of call
    /// timers; shorter than `probe_interval`).
    #[serde(default, with = "humantime_serde::option")]
    pub probe_timeout: Option<Duration>,
    /// Consecutive failures (probes, and calls when passive health is on) that mark it down
    /// (default 3).
    #[serde(default)]
    pub failure_threshold: Option<u32>,
    /// Consecutive successful probes that bring a down destination back (default 5).
    #[serde(default)]
    pub recovery_threshold: Option<u32>,
    /// Final replies to OPTIONS that count as alive (default `[200]`; never 503).
    #[serde(default)]
    pub probe_codes: Option<Vec<u16>>,
    /// Anchored calls this destination answers: the route's `media_timeout` for them instead
    /// (`"0s"`: no media check for its calls).
    #[serde(default, with = "humantime_serde::option")]
    pub media_timeout: Option<Duration>,
    /// The Request-URI this destination expects (its own host, a number prefix, a tenant
    /// parameter) instead of the carrier's, on every request pointsman sends it outside a
    /// dialog: INVITE branches, their CANCEL and ACK, and probes.
    #[serde(default)]
    pub request_uri: Option<RequestUriSpec>,
    /// At most this many calls in progress here at once (INVITE branches sent and not ended,
    /// answered calls until their BYE); a destination at its cap is skipped for new calls like
    /// one that is down. Absent: no cap.
    #[serde(default)]
    pub max_calls: Option<u32>,
    /// At most this many new calls (INVITE branches) a second, fractions allowed, with a burst
    /// of `max(1, floor(max_cps))`; a destination past it is skipped for new calls like one
    /// that is down. Absent: no cap.
    #[serde(default)]
    pub max_cps: Option<f64>,
}

/// `request_uri = { host = "…", port = …, user_prefix = "…", params = ["…"] }` of a
/// destination.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct RequestUriSpec {
    /// Replaces the host (and port) of the Request-URI: a DNS name or an IP address.
    pub host: String,
    /// Written after the host; without it the URI carries no port.
    #[serde(default)]
    pub port: Option<u16>,
    /// Put in front of the user part (the number), unless it already starts with it.
    #[serde(default)]
    pub user_prefix: Option<String>,
    /// URI parameters (`name` or `name=value`) added; one of the same name is replaced.
    #[serde(default)]
    pub params: Vec<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default, Hash)]
#[serde(rename_all = "lowercase")]
pub enum TransportSpec {
    #[default]
    Udp,
    Tcp,
    /// SIP over TLS (RFC 3261 §26.2; TLS 1.2 and 1.3 only).
    Tls,
}

impl TransportSpec {
    /// The config spelling (`udp`, `tcp`, `tls`).
    pub fn as_str(self) -> &'static str {
        match self {
            TransportSpec::Udp => "udp",
            TransportSpec::Tcp => "tcp",
            TransportSpec::Tls => "tls",
        }
    }
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

/// `[[group]]`: destinations that form one tier of a route, and how a call picks among them.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// Unique among groups; routes name it in `tiers` and `survivability`.
    pub name: String,
    /// How the members are ordered for a call (default `priority`).
    #[serde(default)]
    pub strategy: Strategy,
    /// Destination names, or tables overriding a destination's `priority` or `weight` here.
    pub members: Vec<MemberSpec>,
    /// What a `hash` group hashes (default `call-id`); only for `strategy = "hash"`.
    #[serde(default)]
    pub hash_on: Option<HashOn>,
}

/// How a group orders its members for one call.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Active/passive: lowest `priority` first, ties broken by higher `weight`, then file order.
    #[default]
    Priority,
    /// Active/active: the first member is drawn at random in proportion to `weight` among the
    /// members that are up; the others follow, drawn the same way, as the failover order.
    Weighted,
    /// Affinity: the same Call-ID (or caller) goes to the same member while it is up
    /// (weighted rendezvous hashing: losing a member moves only the calls that were on it).
    Hash,
    /// Hot-hot: every member that is up gets the INVITE at once; the first 2xx wins.
    Parallel,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Priority => "priority",
            Strategy::Weighted => "weighted",
            Strategy::Hash => "hash",
            Strategy::Parallel => "parallel",
        }
    }
}

/// The key of a `hash` group.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default, Hash)]
pub enum HashOn {
    /// The Call-ID: a call's retransmissions and re-tries land on the same member.
    #[default]
    #[serde(rename = "call-id")]
    CallId,
    /// The caller's number (From user part): one caller always reaches the same member.
    #[serde(rename = "caller")]
    Caller,
}

impl HashOn {
    pub fn as_str(self) -> &'static str {
        match self {
            HashOn::CallId => "call-id",
            HashOn::Caller => "caller",
        }
    }
}

/// One entry of `members`: `"edge-a1"` or `{ name = "edge-a1", priority = 10, weight = 2 }`.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberSpec {
    pub name: String,
    /// Overrides the destination's `priority` in this group (priority groups only).
    pub priority: Option<u32>,
    /// Overrides the destination's `weight` in this group (not in parallel groups).
    pub weight: Option<u32>,
}

impl MemberSpec {
    /// A member written as a plain name.
    pub fn named(name: impl Into<String>) -> MemberSpec {
        MemberSpec {
            name: name.into(),
            priority: None,
            weight: None,
        }
    }
}

/// The table form of a member.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberTable {
    name: String,
    #[serde(default)]
    priority: Option<u32>,
    #[serde(default)]
    weight: Option<u32>,
}

// By hand rather than `#[serde(untagged)]`, so a mistake inside the table form is reported as
// itself ("unknown field `wieght`") instead of "did not match any variant".
impl<'de> Deserialize<'de> for MemberSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<MemberSpec, D::Error> {
        struct MemberVisitor;
        impl<'de> Visitor<'de> for MemberVisitor {
            type Value = MemberSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "a destination name, or a table like { name = \"edge-a1\", priority = 10 }",
                )
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<MemberSpec, E> {
                Ok(MemberSpec::named(name))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<MemberSpec, A::Error> {
                let t = MemberTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(MemberSpec {
                    name: t.name,
                    priority: t.priority,
                    weight: t.weight,
                })
            }
        }
        deserializer.deserialize_any(MemberVisitor)
    }
}

/// `[[route]]`: which calls it takes (`match`), the tiers they try in order, and the failover
/// policy.
#[derive(Clone, Debug, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub name: String,
    /// Conditions that must all hold for a call to take this route; without it, the route takes
    /// every call that reaches it (a default route).
    #[serde(default, rename = "match")]
    pub conditions: Option<MatchSpec>,
    /// Destination names tried in this order: shorthand for one single-member tier each.
    /// Exclusive with `tiers`.
    #[serde(default)]
    pub destinations: Option<Vec<String>>,
    /// Group names, tried tier by tier in this order. Exclusive with `destinations`.
    #[serde(default)]
    pub tiers: Option<Vec<String>>,
    /// What happens when every tier is down (default: pointsman answers 503 itself).
    #[serde(default)]
    pub survivability: Option<SurvivabilitySpec>,
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
    /// Whether pointsman anchors the calls' media in its own relay (`"relay"`, which needs a
    /// `[media]` section) or leaves the SDP alone (`"off"`, the default). Hot-hot early media
    /// (a parallel tier whose branches all play early media) needs `"relay"`.
    #[serde(default)]
    pub media: Option<MediaMode>,
    /// Anchored calls only: an answered call whose media stops for this long in either direction
    /// (no RTP and no RTCP; a side on hold is not timed) is ended with BYE both ways (default
    /// 30 s; `"0s"` turns the check off).
    #[serde(default, with = "humantime_serde::option")]
    pub media_timeout: Option<Duration>,
}

/// `media` of a route.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum MediaMode {
    /// The SDP goes through untouched; media flows between the carrier and the cloud directly.
    #[default]
    Off,
    /// pointsman rewrites the SDP to its relay and carries the RTP (see `[media]`).
    Relay,
}

/// `match`: every condition given must hold. Numbers are compared after normalisation (a
/// leading `+` and the separators `-` `.` `(` `)` and spaces removed), on both sides.
#[derive(Clone, Debug, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    /// Request-URI user (DID) equal to one of these numbers.
    #[serde(default)]
    pub to: Vec<String>,
    /// Request-URI user (DID) starting with one of these digit strings.
    #[serde(default)]
    pub to_prefix: Vec<String>,
    /// Caller number (From / P-Asserted-Identity user, as the proxy gives it) starting with one
    /// of these digit strings.
    #[serde(default)]
    pub from_prefix: Vec<String>,
    /// Name of the listener the call came in on: one of these.
    #[serde(default)]
    pub source: Vec<String>,
    /// A request header that must be present (and equal `value`, when given).
    #[serde(default)]
    pub header: Option<HeaderMatchSpec>,
}

/// `header = { name = "X-Tenant", value = "acme" }`, or `{ name = "X-Emergency" }` for presence.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatchSpec {
    /// Header name, compared case-insensitively.
    pub name: String,
    /// Exact value (surrounding whitespace ignored); absent: the header only has to be present.
    #[serde(default)]
    pub value: Option<String>,
}

/// `survivability`: `{ group = "lifeboat" }` or `{ reject = 503, retry_after = "30s" }`.
#[derive(Clone, Debug, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct SurvivabilitySpec {
    /// Send the call to this group when every tier is down.
    #[serde(default)]
    pub group: Option<String>,
    /// Answer the carrier with this code (4xx–6xx) when every tier is down.
    #[serde(default)]
    pub reject: Option<u16>,
    /// Retry-After on the rejection (whole seconds); only with `reject`.
    #[serde(default, with = "humantime_serde::option")]
    pub retry_after: Option<Duration>,
}
