//! The one config file: TOML, deserialised with serde (unknown keys rejected), then validated
//! before anything uses it. Every error names the file, the line and column where known, the
//! key path, the bad value and what would be right; all errors are reported at once.
//!
//! Two stages: [`ConfigFile`] is the file as written; [`Config`] is the validated result,
//! defaults filled in. A TOML syntax error stops everything (there is no document past it) and
//! gets a hint where the mistake is a common one (`syntax`). Otherwise `read` deserialises
//! each section and each array entry on its own and collects every structural error (unknown
//! key, wrong type, missing key) with its span; a section or entry that had one keeps its
//! place but is not judged by the semantic checks, which collect every other error. Errors are
//! sorted into file order, semantic ones placed on their line and column by `locate`.
//! Destinations, groups and routes are validated by [`routing_rules::Router::compile`]; its
//! warnings (a route that can never match) are placed the same way and kept on
//! [`Config::warnings`]. It must not: bind sockets, resolve names, or start anything; it reads
//! only the one file it is given and the PEM files that file names (TLS and `[cluster]`), which
//! it checks ([`crate::transport::tls::check`]): relative paths are relative to the config
//! file's directory.

mod locate;
mod read;
#[cfg(test)]
mod reference_tests;
mod syntax;
#[cfg(test)]
mod tests;

use locate::Locator;
use routing_rules::check::{check_name, closest, fmt_duration, parse_host_port};
use routing_rules::spec::{DestinationSpec, GroupSpec, RouteSpec};
use routing_rules::Router;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Default `node.id`.
pub const DEFAULT_NODE_ID: u16 = 1;
/// Most `node.workers` accepted.
pub const MAX_WORKERS: usize = 64;
/// Shortest `[node] topology_key` accepted.
pub const MIN_TOPOLOGY_KEY: usize = 16;
/// What `node.scheduler_slice` asks of the kernel for the workers (see [`crate::sched`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchedulerSlice {
    /// `"auto"`, the default: the shortest slice while a worker is lightly loaded, the
    /// kernel's own while it is busy. A short slice halves the time a message waits at low
    /// rates on a shared machine; near saturation it costs ~10 % more CPU and starves whatever
    /// shares the cores (measured in BENCHMARKS.md).
    Auto,
    /// `"0s"`: the kernel's own, never changed.
    Kernel,
    /// A duration: that slice, always.
    Fixed(Duration),
}
/// Default `tcp.idle_timeout`.
pub const DEFAULT_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// `node.shutdown_grace`: how long calls in setup have to finish after SIGTERM. Most calls get
/// their answer within seconds; 25 s stays under the stop timeouts of the usual supervisors
/// (Kubernetes 30 s, systemd 90 s), so the node logs what it left before they kill it.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(25);
/// Longest `node.shutdown_grace`: past the longest a call rings by default (120 s), with room.
pub const MAX_SHUTDOWN_GRACE: Duration = Duration::from_secs(600);
/// Default `tcp.max_connections`.
pub const DEFAULT_TCP_MAX_CONNECTIONS: usize = 1024;
/// Default `tcp.connect_timeout`.
pub const DEFAULT_TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default `admin.listen`: loopback only.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9060);
/// Fewest characters accepted in `admin.token`.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// The file as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub node: NodeSection,
    #[serde(default)]
    pub listen: Vec<ListenSpec>,
    #[serde(default)]
    pub timers: TimersSection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub tcp: TcpSection,
    #[serde(default)]
    pub tls: TlsSection,
    #[serde(default)]
    pub admin: AdminSection,
    #[serde(default)]
    pub health: HealthSection,
    #[serde(default)]
    pub guard: GuardSection,
    #[serde(default)]
    pub media: MediaSection,
    /// `[cluster]`: the node link to the other node of an anycast pair; absent: no link.
    #[serde(default)]
    pub cluster: Option<ClusterSection>,
    /// `[hep]`: a copy of every SIP message to a HEP v3 collector (Homer); absent: none.
    #[serde(default)]
    pub hep: Option<HepSection>,
    /// `[dns]`: how destinations given by name are looked up.
    #[serde(default)]
    pub dns: DnsSection,
    #[serde(default, rename = "destination")]
    pub destinations: Vec<DestinationSpec>,
    #[serde(default, rename = "group")]
    pub groups: Vec<GroupSpec>,
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteSpec>,
}

#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// This node's id (1..=65535), carried in every branch and Record-Route (default 1).
    pub id: Option<u16>,
    /// `host:port` written into Via and Record-Route (default: the first listener's address).
    pub advertise: Option<String>,
    /// UDP worker threads, one SO_REUSEPORT socket each (default: number of cores).
    pub workers: Option<usize>,
    /// Run the workers under SCHED_FIFO at this priority (1..=99; 0, the default, leaves them
    /// under the normal scheduler). Needs CAP_SYS_NICE; like Kamailio's `rt_prio`.
    pub realtime_priority: Option<u8>,
    /// The secret the destination tokens of pointsman's Record-Route are keyed with (topology
    /// hiding: the carrier never reads a destination's name). At least 16 characters, the same
    /// on every node of a pair (default: a built-in key).
    pub topology_key: Option<String>,
    /// Time slice the workers ask the kernel for (Linux 6.12+): a worker woken by a datagram
    /// then preempts tasks with longer slices instead of waiting for theirs to end. "auto"
    /// (the default: 100us while a worker is lightly loaded), a duration from 100us to 100ms,
    /// or "0s" for the kernel's own.
    pub scheduler_slice: Option<String>,
    /// After SIGTERM or SIGINT, how long calls in setup have to get their final answer before
    /// the process exits (default 25s; 0s..=10min).
    #[serde(default, with = "humantime_serde::option")]
    pub shutdown_grace: Option<Duration>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenSpec {
    /// Name used by routing rules and logs (default `<transport>:<address>`).
    pub name: Option<String>,
    pub transport: ListenTransport,
    /// `ip:port`.
    pub address: String,
    /// TLS only: PEM certificate chain served to clients (end-entity first).
    pub cert: Option<String>,
    /// TLS only: PEM private key of `cert`.
    pub key: Option<String>,
    /// TLS only: PEM CA bundle; when set, clients must present a certificate it verifies
    /// (mutual TLS).
    pub client_ca: Option<String>,
    /// Source networks that may send to this listener (CIDRs); anything else is dropped without
    /// a reply. Default: any source. Destinations' addresses are always let in.
    pub allow: Option<Vec<String>>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ListenTransport {
    Udp,
    Tcp,
    /// SIP over TLS: needs `cert` and `key`.
    Tls,
}

#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TimersSection {
    /// RFC 3261 T1, RTT estimate (default 500ms).
    #[serde(default, with = "humantime_serde::option")]
    pub t1: Option<Duration>,
    /// RFC 3261 T2, max retransmit interval for non-INVITE (default 4s).
    #[serde(default, with = "humantime_serde::option")]
    pub t2: Option<Duration>,
    /// RFC 3261 T4, max time a message stays in the network (default 5s).
    #[serde(default, with = "humantime_serde::option")]
    pub t4: Option<Duration>,
}

#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub max_message_size: Option<usize>,
    pub max_headers: Option<usize>,
    pub max_line_length: Option<usize>,
    pub max_via: Option<usize>,
}

#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TcpSection {
    /// Close a connection idle this long (default 10 min).
    #[serde(default, with = "humantime_serde::option")]
    pub idle_timeout: Option<Duration>,
    /// Most TCP connections at once, inbound + outbound (default 1024).
    pub max_connections: Option<usize>,
    /// Give up connecting to a destination after this (default 2 s).
    #[serde(default, with = "humantime_serde::option")]
    pub connect_timeout: Option<Duration>,
}

/// `[tls]`: node-wide TLS settings (each TLS listener and destination has its own files).
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// A TLS handshake, inbound or outbound, not done within this fails (default 5 s).
    #[serde(default, with = "humantime_serde::option")]
    pub handshake_timeout: Option<Duration>,
    /// PEM CA bundle that verifies TLS destinations without a `ca` of their own, and TLS peers
    /// that are not destinations (by their IP address).
    pub ca: Option<String>,
}

/// `[cluster]`: the node link (mutual-TLS QUIC) to the other nodes of the pair.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// `ip:port`: this node's unicast link address (its peers dial it); `0.0.0.0:port` (or
    /// `[::]:port`) when its peers reach it over two paths.
    pub listen: String,
    /// The other nodes: `{ id = 2, address = "ip:port" }`, with `backup = "ip:port"` for a
    /// second path to the peer.
    #[serde(default)]
    pub peers: Vec<ClusterPeerSpec>,
    /// PEM certificate chain of this node (used as server and as client), its key, and the CA
    /// bundle its peers' certificates must chain to; relative to the config file.
    pub cert: String,
    pub key: String,
    pub ca: String,
    /// A peer heard from for this long is declared dead (default 1s; 200ms..=10s).
    #[serde(default, with = "humantime_serde::option")]
    pub dead_after: Option<Duration>,
    /// How long replicas and confirmations wait to share a packet (default 1ms; 0s..=20ms).
    #[serde(default, with = "humantime_serde::option")]
    pub batch: Option<Duration>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterPeerSpec {
    pub id: u16,
    pub address: String,
    #[serde(default)]
    pub backup: Option<String>,
}

/// `[cluster]`, validated: what [`crate::link::Link`] is started with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    pub listen: SocketAddr,
    pub peers: Vec<crate::link::PeerAddr>,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub ca: std::path::PathBuf,
    pub dead_after: Duration,
    pub batch: Duration,
}

impl ClusterConfig {
    /// The link settings for node `node_id`.
    pub fn link_config(&self, node_id: u16) -> crate::link::LinkConfig {
        crate::link::LinkConfig {
            node_id,
            listen: self.listen,
            peers: self.peers.clone(),
            dead_after: self.dead_after,
            queue: crate::link::DEFAULT_QUEUE,
            max_frame: crate::link::DEFAULT_MAX_FRAME,
            batch: self.batch,
        }
    }
}

/// Shortest and longest `cluster.dead_after`: below 200 ms a loaded node's pauses would read as
/// deaths; above 10 s calls wait too long for the survivor.
pub const MIN_DEAD_AFTER: Duration = Duration::from_millis(200);
pub const MAX_DEAD_AFTER: Duration = Duration::from_secs(10);

/// Longest `cluster.batch`: what a new branch or an answer may be held for its confirmation,
/// on top of the round trip, stays far below what a caller could notice.
pub const MAX_BATCH: Duration = Duration::from_millis(20);

/// `[dns]`: the lookups of destinations given by name (RFC 3263).
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DnsSection {
    /// `ip:port` of the name servers to ask, in order (default: those of /etc/resolv.conf).
    #[serde(default)]
    pub servers: Vec<String>,
    /// How long one query may take before the next server is asked (default 2s).
    #[serde(default, with = "humantime_serde::option")]
    pub timeout: Option<Duration>,
    /// Shortest time between two lookups of a name, whatever its TTL says (default 5s).
    #[serde(default, with = "humantime_serde::option")]
    pub min_ttl: Option<Duration>,
    /// Longest time a lookup is kept, whatever its TTL says (default 1h).
    #[serde(default, with = "humantime_serde::option")]
    pub max_ttl: Option<Duration>,
}

/// `[hep]`: capture to a HEP v3 collector.
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HepSection {
    /// `ip:port` of the collector (required).
    #[serde(default)]
    pub address: String,
    /// `udp` (default) or `tcp`.
    pub transport: Option<String>,
    /// Capture agent id the collector sees (default: `[node] id`).
    pub agent_id: Option<u32>,
    /// Auth key the collector requires, if any.
    pub password: Option<String>,
    /// Capture from start (default true); `POST /hep/on`/`off` switches it at runtime.
    pub enabled: Option<bool>,
    /// Captures queued for the sender before one is dropped (default 10000, 100..=1000000).
    pub queue: Option<usize>,
}

#[derive(Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Serve the admin HTTP API (default true).
    pub enabled: Option<bool>,
    /// `ip:port` of the admin API (default 127.0.0.1:9060).
    pub listen: Option<String>,
    /// Bearer token: required on every POST when set; required on every request, and so in the
    /// file, when `listen` is not a loopback address.
    pub token: Option<String>,
}

impl std::fmt::Debug for AdminSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSection")
            .field("enabled", &self.enabled)
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The admin HTTP API settings, validated.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// Never shown by `Debug`.
    pub token: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            listen: DEFAULT_ADMIN_LISTEN,
            token: None,
        }
    }
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("enabled", &self.enabled)
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `[guard]`: rate limits, scanner blocking, overload shedding, table caps.
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GuardSection {
    /// New out-of-dialog transactions per second per source IP that is neither on the
    /// listener's allow list nor a destination (default 5000).
    pub rate: Option<f64>,
    /// How many may come at once (default 2 × rate).
    pub burst: Option<f64>,
    /// The same for sources on the allow list and destinations (default: not limited).
    pub allowed_rate: Option<f64>,
    /// How many of those may come at once (default 2 × allowed_rate).
    pub allowed_burst: Option<f64>,
    /// Sources with a rate-limit bucket of their own (default 65536).
    pub max_sources: Option<usize>,
    /// User-Agent substrings dropped without an answer (default: well-known SIP scanners).
    pub block_user_agents: Option<Vec<String>>,
    /// Shed new INVITEs while a receive queue is fuller than this fraction (default 0.5).
    pub overload_backlog: Option<f64>,
    /// Most transactions in progress at once: calls being set up, requests being relayed
    /// (default 200000).
    pub max_transactions: Option<usize>,
    /// Most answered calls held at once (default 100000).
    pub max_calls: Option<usize>,
    /// Retry-After on pointsman's own 503s (default 5s).
    #[serde(default, with = "humantime_serde::option")]
    pub retry_after: Option<Duration>,
}

/// `[media]`: the media relay of routes with `media = "relay"` (hot-hot early media).
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MediaSection {
    /// The relay's address toward the carrier: its ports are bound on it and it is written
    /// into the SDP the carrier gets (required when a route relays media).
    pub carrier_address: Option<String>,
    /// The relay's address toward the clouds, written into the SDP they get (default:
    /// `carrier_address`).
    pub cloud_address: Option<String>,
    /// Port range `"min-max"` used on each address, two ports (RTP, RTCP) per call leg and
    /// stream (default `"16384-24575"`: 2048 hot-hot calls of two branches).
    pub ports: Option<String>,
    /// How long the heard branch's RTP may pause before the other branch is switched in
    /// (default: 3 packet times, at least 60 ms).
    #[serde(default, with = "humantime_serde::option")]
    pub silence: Option<Duration>,
    /// The same when the heard branch negotiated comfort noise, which pauses on purpose
    /// (default 1 s).
    #[serde(default, with = "humantime_serde::option")]
    pub silence_comfort_noise: Option<Duration>,
    /// Accept media only from the exact address and port each SDP names (default false: from
    /// the address the SDP or the signalling names, latching the first packet's port).
    pub strict_source: Option<bool>,
    /// Forward answered calls' RTP in the kernel (an eBPF program at the media interfaces'
    /// ingress) instead of the relay's threads (default true; where it cannot start, the
    /// relay's threads forward everything, as with false).
    pub kernel_relay: Option<bool>,
}

/// `[health]`: node-wide health settings (each destination has its own probe keys).
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    /// `ip` or `ip:port` probes leave from, from a socket of their own (default: UDP probes
    /// leave from the UDP listener, as the node's calls do; TCP and TLS ones from the first
    /// listener's IP, any port). Set it on a node of an anycast pair to its own unicast address.
    pub source: Option<String>,
    /// Failures on real calls (timeouts, transport errors, 503s) count towards a destination's
    /// failure threshold (default true).
    pub passive: Option<bool>,
    /// Shortest time a trusted 503 Retry-After holds a destination down (default 1 s).
    #[serde(default, with = "humantime_serde::option")]
    pub retry_after_min: Option<Duration>,
    /// Longest time a trusted 503 Retry-After holds a destination down (default 300 s).
    #[serde(default, with = "humantime_serde::option")]
    pub retry_after_max: Option<Duration>,
    /// How long a destination that calls took down stays down whatever its probes say
    /// (default 30 s), doubled at each new takedown by calls.
    #[serde(default, with = "humantime_serde::option")]
    pub passive_hold: Option<Duration>,
    /// The longest such hold (default 300 s).
    #[serde(default, with = "humantime_serde::option")]
    pub passive_hold_max: Option<Duration>,
}

/// A listener, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub transport: ListenTransport,
    pub address: SocketAddr,
    /// The certificate files of a TLS listener (`None` for UDP and TCP).
    pub tls: Option<crate::transport::tls::ListenerFiles>,
    pub acl: pointsman_protocol::Acl,
}

/// The validated configuration the proxy runs on.
#[derive(Clone, Debug)]
pub struct Config {
    pub node_id: u16,
    /// `host:port` for Via and Record-Route.
    pub advertise: String,
    pub workers: usize,
    /// SCHED_FIFO priority of the workers; 0: the normal scheduler.
    pub realtime_priority: u8,
    /// `[node] topology_key` (`None`: the built-in key).
    pub topology_key: Option<String>,
    /// Slice the workers ask for under the normal scheduler.
    pub scheduler_slice: SchedulerSlice,
    /// How long calls in setup have to finish after SIGTERM or SIGINT.
    pub shutdown_grace: Duration,
    pub listeners: Vec<Listener>,
    pub timers: pointsman_protocol::transaction::TimerConfig,
    pub limits: pointsman_protocol::wire::Limits,
    pub tcp_idle_timeout: Duration,
    pub tcp_max_connections: usize,
    pub tcp_connect_timeout: Duration,
    /// `[tls]` and the TLS destinations' files (checked at load).
    pub tls: crate::transport::tls::TlsConfig,
    /// The admin HTTP API.
    pub admin: AdminConfig,
    /// Destination health: probe source, passive signals, Retry-After clamp.
    pub health: pointsman_protocol::health::HealthConfig,
    /// Rate limits, scanner blocking, overload shedding, table caps.
    pub guard: pointsman_protocol::GuardConfig,
    /// `[media]`, when a route relays media (or the section is given).
    pub media: Option<pointsman_protocol::media::MediaConfig>,
    /// `media.kernel_relay`: hand answered calls' RTP to the kernel relay.
    pub media_kernel_relay: bool,
    /// `[cluster]`: the node link, when given.
    pub cluster: Option<ClusterConfig>,
    /// `[hep]`: HEP capture, when given.
    pub hep: Option<crate::hep::HepConfig>,
    /// `[dns]`: how destinations given by name are looked up.
    pub dns: crate::dns::DnsConfig,
    /// The compiled rules: route matching, tiers and groups, survivability, explain.
    pub router: Arc<Router>,
    /// Problems that do not stop the config from working, in file order.
    pub warnings: Vec<ConfigError>,
}

/// One problem in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// 1-based line, where the text has one.
    pub line: Option<usize>,
    /// 1-based column (in characters) on `line`: the unknown key, the bad value, or the header
    /// of the table that lacks a key.
    pub column: Option<usize>,
    /// Key path, e.g. `destination[1].transport`.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    /// `FILE:LINE:COLUMN: KEY.PATH: message`, as compilers write it, so editors jump to it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:", self.file)?;
        if let Some(line) = self.line {
            write!(f, "{line}:")?;
            if let Some(column) = self.column {
                write!(f, "{column}:")?;
            }
        }
        write!(f, " {}: {}", self.path, self.message)
    }
}

/// Every problem found, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Config::load_with_warnings(path).0
    }
    /// Validates config text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigErrors> {
        Config::parse_with_warnings(text, file).0
    }

    /// Reads and validates a config file, with the warnings found (also when it has errors,
    /// as far as the rules could be compiled).
    pub fn load_with_warnings(path: &Path) -> (Result<Config, ConfigErrors>, Vec<ConfigError>) {
        let file = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse_with_warnings(&text, &file),
            Err(e) => (
                Err(ConfigErrors(vec![ConfigError {
                    file,
                    line: None,
                    column: None,
                    path: "-".into(),
                    message: format!("cannot read the config file: {e}"),
                }])),
                Vec::new(),
            ),
        }
    }

    /// [`parse`](Self::parse), with the warnings found (see
    /// [`load_with_warnings`](Self::load_with_warnings)).
    pub fn parse_with_warnings(
        text: &str,
        file: &str,
    ) -> (Result<Config, ConfigErrors>, Vec<ConfigError>) {
        let doc = match toml_edit::ImDocument::parse(text) {
            Ok(doc) => doc,
            // Not TOML: there is nothing to read past it.
            Err(e) => {
                return (
                    Err(ConfigErrors(vec![syntax_error(text, file, &e)])),
                    Vec::new(),
                )
            }
        };
        let locator = Locator::new(text, Some(doc.as_table()));
        let read = read::read(doc.as_table());
        let mut errors = Errors::default();
        let mut warnings = Errors::default();
        let base = Path::new(file).parent().unwrap_or(Path::new(""));
        let config = validate(read.spec, base, &read.damage, &mut errors, &mut warnings);
        // Structural problems carry their span; semantic ones are placed by key path.
        let structural = read.problems.into_iter().map(|p| {
            let place = p
                .span
                .map(|s| locator.place_of_span(&s))
                .or_else(|| locator.place(&p.path));
            (place, p.path, explain_structural(&p.message))
        });
        let place = |found: Errors| {
            found
                .0
                .into_iter()
                // What a structural problem left unjudgeable is not judged (see read::Damage).
                .filter(|f| !read.damage.hides(&f.path, &f.message))
                .map(|f| (locator.place(&f.shown_at), f.path, f.message))
                .collect::<Vec<_>>()
        };
        let in_order = |found: Vec<(Option<locate::Place>, String, String)>| {
            let mut out: Vec<ConfigError> = found
                .into_iter()
                .map(|(place, path, message)| ConfigError {
                    file: file.to_string(),
                    line: place.map(|p| p.0),
                    column: place.map(|p| p.1),
                    path,
                    message,
                })
                .collect();
            // File order; errors with no line (a missing section) come last. Stable, so
            // errors at one place keep the order they were found in.
            out.sort_by_key(|e| (e.line.unwrap_or(usize::MAX), e.column.unwrap_or(0)));
            out
        };
        let warnings = in_order(place(warnings));
        let mut all = place(errors);
        all.extend(structural);
        match config {
            Some(mut config) if all.is_empty() => {
                config.warnings = warnings.clone();
                (Ok(config), warnings)
            }
            _ => (Err(ConfigErrors(in_order(all))), warnings),
        }
    }
}

/// A TOML syntax error at the parser's place, or at the value a hint says to quote.
fn syntax_error(text: &str, file: &str, e: &toml_edit::TomlError) -> ConfigError {
    let mut at = e.span().map(|s| s.start);
    let mut message = explain_structural(e.message());
    if let Some(hint) = e.span().and_then(|s| syntax::hint(text, &s, e.message())) {
        message = format!("{message}; {}", hint.text);
        at = hint.at.or(at);
    }
    let place = at.map(|offset| Locator::new(text, None).place_of_offset(offset));
    ConfigError {
        file: file.to_string(),
        line: place.map(|p| p.0),
        column: place.map(|p| p.1),
        path: "-".into(),
        message,
    }
}

/// serde's message, one line, with a hint where serde's own words leave the fix unsaid.
fn explain_structural(message: &str) -> String {
    let mut out = message.trim().replace('\n', "; ");
    if out.is_empty() {
        // The TOML parser says nothing for some inputs (e.g. a control character in a comment).
        out = "this is not valid TOML here: check for control characters or a broken line \
               (a key = value per line, strings in quotes)"
            .into();
    }
    if let Some(rest) = out.strip_prefix("unknown field `") {
        // "unknown field `transprt`, expected one of `name`, `address`, ..."
        let unknown = rest.split('`').next().unwrap_or_default().to_string();
        let expected: Vec<&str> = rest
            .split_once("expected")
            .map(|(_, list)| list.split('`').skip(1).step_by(2).collect())
            .unwrap_or_default();
        if let Some(near) = closest(&unknown, expected) {
            out = format!("{out}; did you mean `{near}`?");
        }
    } else if out.contains("expected a duration") {
        out.push_str(
            "; write a duration as a string with a unit, e.g. \"3s\", \"250ms\" or \"2min\"",
        );
    }
    out
}

/// One semantic error: its key path, the path whose place it is shown at (usually the same; a
/// defaulted key points at the key it was derived from), and the message.
struct Found {
    path: String,
    shown_at: String,
    message: String,
}

/// Semantic errors in the order found.
#[derive(Default)]
struct Errors(Vec<Found>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: String) {
        let path = path.into();
        self.0.push(Found {
            shown_at: path.clone(),
            path,
            message,
        });
    }

    /// An error at `path`, shown at the place of `shown_at`.
    fn push_at(&mut self, path: &str, shown_at: &str, message: String) {
        self.0.push(Found {
            path: path.into(),
            shown_at: shown_at.into(),
            message,
        });
    }

    /// `value` must be in `lo..=hi`.
    fn int_in(&mut self, path: &str, value: usize, lo: usize, hi: usize, default: usize) {
        let key = last_key(path);
        let what = if value < lo {
            "too small"
        } else if value > hi {
            "too large"
        } else {
            return;
        };
        self.push(
            path,
            format!("{key} = {value} is {what}: use {lo}..={hi} (default {default})"),
        );
    }

    /// `value` must be in `lo..=hi`.
    fn duration_in(
        &mut self,
        path: &str,
        value: Duration,
        lo: Duration,
        hi: Duration,
        default: Duration,
    ) {
        self.duration_within(path, value, lo, hi, || {
            format!(
                "use a duration from {} to {} (default {})",
                fmt_duration(lo),
                fmt_duration(hi),
                fmt_duration(default)
            )
        });
    }

    /// [`Errors::duration_in`] for a key whose default is not a duration: `advice` says what
    /// to write instead.
    fn duration_within(
        &mut self,
        path: &str,
        value: Duration,
        lo: Duration,
        hi: Duration,
        advice: impl FnOnce() -> String,
    ) {
        let key = last_key(path);
        let what = if value < lo {
            "too short"
        } else if value > hi {
            "too long"
        } else {
            return;
        };
        self.push(
            path,
            format!(
                "{key} = \"{}\" is {what}: {}",
                fmt_duration(value),
                advice()
            ),
        );
    }
}

/// `node.scheduler_slice`: "auto" (or absent), "0s" for the kernel's own, or a slice the kernel
/// grants.
fn validate_scheduler_slice(value: Option<&str>, errors: &mut Errors) -> SchedulerSlice {
    const PATH: &str = "node.scheduler_slice";
    let value = match value.map(str::trim) {
        None | Some("auto") => return SchedulerSlice::Auto,
        Some(v) => v,
    };
    let (lo, hi) = crate::sched::SLICE_RANGE;
    let advice = || {
        format!(
            "use \"auto\" (the default), \"0s\" for the kernel's own, or a duration from {} to {}",
            fmt_duration(lo),
            fmt_duration(hi)
        )
    };
    let slice = match humantime::parse_duration(value) {
        Ok(d) => d,
        Err(e) => {
            errors.push(
                PATH,
                format!(
                    "scheduler_slice = \"{value}\" is not a duration ({e}): {}",
                    advice()
                ),
            );
            return SchedulerSlice::Auto;
        }
    };
    if slice.is_zero() {
        return SchedulerSlice::Kernel;
    }
    errors.duration_within(PATH, slice, lo, hi, advice);
    SchedulerSlice::Fixed(slice)
}

fn last_key(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

/// Checks every section and builds the config; `None` when something could not be built.
fn validate(
    spec: ConfigFile,
    base: &Path,
    damage: &read::Damage,
    errors: &mut Errors,
    warnings: &mut Errors,
) -> Option<Config> {
    let mut listeners = validate_listeners(&spec.listen, errors);
    let first_listener = spec
        .listen
        .first()
        .and_then(|l| l.address.parse::<SocketAddr>().ok());
    let (node_id, advertise, workers) = validate_node(&spec.node, first_listener, errors);
    let realtime_priority = spec.node.realtime_priority.unwrap_or(0);
    errors.int_in(
        "node.realtime_priority",
        usize::from(realtime_priority),
        0,
        99,
        0,
    );
    let topology_key = spec.node.topology_key.clone();
    if let Some(key) = &topology_key {
        if key.chars().count() < MIN_TOPOLOGY_KEY {
            errors.push(
                "node.topology_key",
                format!(
                    "topology_key is {} characters: use at least {MIN_TOPOLOGY_KEY} random \
                     characters (e.g. the output of `openssl rand -hex 16`), the same on every \
                     node of a pair, or leave it out for the built-in key",
                    key.chars().count()
                ),
            );
        }
    }
    let scheduler_slice = validate_scheduler_slice(spec.node.scheduler_slice.as_deref(), errors);
    let shutdown_grace = spec.node.shutdown_grace.unwrap_or(DEFAULT_SHUTDOWN_GRACE);
    errors.duration_in(
        "node.shutdown_grace",
        shutdown_grace,
        Duration::ZERO,
        MAX_SHUTDOWN_GRACE,
        DEFAULT_SHUTDOWN_GRACE,
    );
    let timers = validate_timers(&spec.timers, errors);
    let limits = validate_limits(&spec.limits, errors);
    let t = &spec.tcp;
    let tcp_idle_timeout = t.idle_timeout.unwrap_or(DEFAULT_TCP_IDLE_TIMEOUT);
    errors.duration_in(
        "tcp.idle_timeout",
        tcp_idle_timeout,
        Duration::from_secs(1),
        Duration::from_secs(24 * 3600),
        DEFAULT_TCP_IDLE_TIMEOUT,
    );
    let tcp_max_connections = t.max_connections.unwrap_or(DEFAULT_TCP_MAX_CONNECTIONS);
    errors.int_in(
        "tcp.max_connections",
        tcp_max_connections,
        1,
        1_000_000,
        DEFAULT_TCP_MAX_CONNECTIONS,
    );
    let tcp_connect_timeout = t.connect_timeout.unwrap_or(DEFAULT_TCP_CONNECT_TIMEOUT);
    errors.duration_in(
        "tcp.connect_timeout",
        tcp_connect_timeout,
        Duration::from_millis(10),
        Duration::from_secs(60),
        DEFAULT_TCP_CONNECT_TIMEOUT,
    );
    let admin = validate_admin(&spec.admin, &listeners, errors);
    let health = validate_health(&spec.health, &listeners, errors);
    let guard = validate_guard(&spec.guard, errors);
    // Placeholders stand in for unreadable entries; what is said about them is left out here
    // so the rest is still compiled and checked (the config fails on the structural errors).
    let compiled = Router::compile_except(&spec.destinations, &spec.groups, &spec.routes, |e| {
        damage.hides(&e.path, &e.message)
    });
    let router = match compiled {
        Ok(router) => {
            check_sources(&router, &listeners, damage.listener_names(), errors);
            // Judged on placeholders, a route could seem to shadow another or a group to be
            // unused: the warnings wait until the rules read whole.
            if !damage.rules() {
                for w in &router.warnings {
                    warnings.push(w.path.clone(), w.message.clone());
                }
            }
            Some(router)
        }
        Err(rule_errors) => {
            for e in rule_errors {
                errors.push(e.path, e.message);
            }
            None
        }
    };
    let ca_unread = damage.unread("tls.ca");
    let tls = validate_tls(
        &spec,
        base,
        &mut listeners,
        router.as_ref(),
        ca_unread,
        errors,
    );
    let cluster = spec
        .cluster
        .as_ref()
        .and_then(|c| validate_cluster(c, node_id, base, errors));
    let hep = spec
        .hep
        .as_ref()
        .and_then(|h| validate_hep(h, node_id, errors));
    let dns = validate_dns(&spec.dns, errors);
    let probed = router.as_ref().is_some_and(|r| {
        r.rules
            .destinations
            .iter()
            .any(|d| d.health.probe && d.transport == routing_rules::spec::TransportSpec::Udp)
    });
    if cluster.is_some() && spec.health.source.is_none() && probed {
        warnings.push(
            "health.source".to_string(),
            "this node is one of a pair, and its UDP probes leave from its listener (the shared \
             anycast address): a probe's answer that lands on the peer reaches this node only \
             over the node link, so a cut link can take destinations down here; set source to \
             this node's own unicast address, e.g. source = \"10.0.0.11\""
                .to_string(),
        );
    }
    if let Some(c) = &cluster {
        if !c.listen.ip().is_unspecified() {
            if let Some(i) = c.peers.iter().position(|p| p.backup.is_some()) {
                warnings.push(
                    format!("cluster.peers[{i}].backup"),
                    format!(
                        "this node's link listens on {} only: its peer's backup path cannot \
                         reach it; listen on \"0.0.0.0:{}\" (and put both addresses in its \
                         certificate)",
                        c.listen,
                        c.listen.port()
                    ),
                );
            }
        }
    }
    let router = router?;
    let media = validate_media(&spec.media, &router, errors);
    let media_kernel_relay = spec.media.kernel_relay.unwrap_or(true);
    if spec.media.kernel_relay == Some(true) && media.is_none() {
        warnings.push(
            "media.kernel_relay",
            "is set, but no route relays media: there is nothing for it to forward".to_string(),
        );
    }
    let relaying = router
        .rules
        .routes
        .iter()
        .find(|r| r.media == routing_rules::spec::MediaMode::Relay);
    if let (Some(_), Some(route)) = (&cluster, relaying) {
        // Said out loud: an operator must not believe a pair protects what it does not.
        warnings.push(
            "cluster",
            format!(
                "route {:?} relays media: the other node carries its calls' signalling on when \
                 this node dies, but not their media, which is anchored on this node's relay \
                 ports (the caller hears silence until the call ends)",
                route.name
            ),
        );
    }
    Some(Config {
        node_id,
        advertise,
        workers,
        realtime_priority,
        topology_key,
        scheduler_slice,
        shutdown_grace,
        listeners,
        timers,
        limits,
        tcp_idle_timeout,
        tcp_max_connections,
        tcp_connect_timeout,
        tls,
        admin,
        health,
        guard,
        media,
        media_kernel_relay,
        cluster,
        hep,
        dns,
        router: Arc::new(router),
        warnings: Vec::new(),
    })
}

/// A link address: `ip:port`, a real IP and port (peers dial it).
fn link_address(path: &str, text: &str, errors: &mut Errors) -> Option<SocketAddr> {
    match text.parse::<SocketAddr>() {
        Ok(a) if a.port() != 0 && !a.ip().is_unspecified() => Some(a),
        _ => {
            errors.push(
                path,
                format!(
                    "{} = \"{text}\" is not a unicast ip:port: write the node's own link \
                     address, e.g. \"10.0.0.1:5070\"",
                    last_key(path)
                ),
            );
            None
        }
    }
}

/// `[cluster] listen`: a unicast `ip:port`, or every address (`0.0.0.0:port`, `[::]:port`) for
/// peers that reach this node over two paths.
fn listen_address(text: &str, errors: &mut Errors) -> Option<SocketAddr> {
    match text.parse::<SocketAddr>() {
        Ok(a) if a.port() != 0 && a.ip().is_unspecified() => Some(a),
        _ => link_address("cluster.listen", text, errors),
    }
}

/// `[cluster]`: addresses, peers (distinct ids, none this node's), `dead_after`, and the PEM
/// files, read and checked like the TLS section's.
/// `[dns]`: each server an `ip:port` (port 53 when left out), the times in range and
/// `min_ttl <= max_ttl`.
fn validate_dns(d: &DnsSection, errors: &mut Errors) -> crate::dns::DnsConfig {
    use crate::dns::{DnsConfig, DEFAULT_MAX_TTL, DEFAULT_MIN_TTL, DEFAULT_TIMEOUT};
    let mut servers = Vec::with_capacity(d.servers.len());
    for (i, text) in d.servers.iter().enumerate() {
        let parsed = text.parse::<SocketAddr>().ok().or_else(|| {
            text.parse::<std::net::IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, 53))
        });
        match parsed {
            Some(addr) if addr.port() != 0 && !addr.ip().is_unspecified() => servers.push(addr),
            _ => errors.push(
                format!("dns.servers[{i}]"),
                format!(
                    "{text:?} is not the address of a name server: write an IP, or ip:port, \
                     e.g. \"10.0.0.53\" or \"10.0.0.53:53\""
                ),
            ),
        }
    }
    let timeout = d.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let min_ttl = d.min_ttl.unwrap_or(DEFAULT_MIN_TTL);
    let max_ttl = d.max_ttl.unwrap_or(DEFAULT_MAX_TTL);
    let (ms, s) = (Duration::from_millis, Duration::from_secs);
    for (path, value, lo, hi, default) in [
        ("dns.timeout", timeout, ms(100), s(30), DEFAULT_TIMEOUT),
        ("dns.min_ttl", min_ttl, ms(100), s(3600), DEFAULT_MIN_TTL),
        ("dns.max_ttl", max_ttl, s(1), s(86_400), DEFAULT_MAX_TTL),
    ] {
        errors.duration_in(path, value, lo, hi, default);
    }
    if min_ttl > max_ttl {
        errors.push(
            "dns.max_ttl",
            format!(
                "max_ttl {} is shorter than min_ttl {}: a name would be kept for less than the \
                 shortest time between its lookups",
                fmt_duration(max_ttl),
                fmt_duration(min_ttl)
            ),
        );
    }
    DnsConfig {
        servers,
        timeout,
        min_ttl,
        max_ttl,
    }
}

/// `[hep]`: the collector's `ip:port`, `udp` or `tcp`, the agent id (default: the node id), the
/// queue in range.
fn validate_hep(
    h: &HepSection,
    node_id: u16,
    errors: &mut Errors,
) -> Option<crate::hep::HepConfig> {
    use crate::hep::{HepConfig, HepTransport, DEFAULT_QUEUE};
    let address = match h.address.parse::<SocketAddr>() {
        Ok(addr) if addr.port() != 0 && !addr.ip().is_unspecified() => Some(addr),
        _ => {
            errors.push(
                "hep.address",
                format!(
                    "address = {:?} is not the ip:port of a HEP collector: write e.g. \
                     \"192.0.2.50:9060\" (Homer's heplify-server listens on 9060)",
                    h.address
                ),
            );
            None
        }
    };
    let transport = match h.transport.as_deref() {
        None | Some("udp") => HepTransport::Udp,
        Some("tcp") => HepTransport::Tcp,
        Some(other) => {
            errors.push(
                "hep.transport",
                format!("transport = {other:?}: use \"udp\" (default) or \"tcp\""),
            );
            HepTransport::Udp
        }
    };
    let queue = h.queue.unwrap_or(DEFAULT_QUEUE);
    errors.int_in("hep.queue", queue, 100, 1_000_000, DEFAULT_QUEUE);
    if h.password.as_deref().is_some_and(str::is_empty) {
        errors.push(
            "hep.password",
            "password is empty: give the collector's auth key, or leave password out".into(),
        );
    }
    Some(HepConfig {
        address: address?,
        transport,
        agent_id: h.agent_id.unwrap_or(u32::from(node_id)),
        password: h.password.clone(),
        enabled: h.enabled.unwrap_or(true),
        queue,
    })
}

fn validate_cluster(
    c: &ClusterSection,
    node_id: u16,
    base: &Path,
    errors: &mut Errors,
) -> Option<ClusterConfig> {
    let before = errors.0.len();
    let listen = listen_address(&c.listen, errors);
    if c.peers.is_empty() {
        errors.push(
            "cluster.peers",
            "peers is empty: list the other node, e.g. peers = [{ id = 2, address = \
             \"10.0.0.2:5070\" }]"
                .into(),
        );
    }
    let mut peers = Vec::with_capacity(c.peers.len());
    for (i, p) in c.peers.iter().enumerate() {
        if p.id == 0 || p.id == node_id {
            errors.push(
                format!("cluster.peers[{i}].id"),
                format!(
                    "id = {} cannot be a peer: use the other node's node.id (1..=65535, not \
                     this node's {node_id})",
                    p.id
                ),
            );
        } else if c.peers[..i].iter().any(|q| q.id == p.id) {
            errors.push(
                format!("cluster.peers[{i}].id"),
                format!("id = {} is listed twice: give each peer once", p.id),
            );
        }
        let address = link_address(&format!("cluster.peers[{i}].address"), &p.address, errors);
        let backup = p.backup.as_ref().and_then(|b| {
            let path = format!("cluster.peers[{i}].backup");
            let backup = link_address(&path, b, errors)?;
            if Some(backup) == address {
                errors.push(
                    path,
                    format!(
                        "backup = \"{b}\" is the peer's address: give the peer's address on \
                         its other path, or leave backup out"
                    ),
                );
                return None;
            }
            Some(backup)
        });
        if let Some(address) = address {
            peers.push(crate::link::PeerAddr {
                id: p.id,
                address,
                backup,
            });
        }
    }
    let dead_after = c.dead_after.unwrap_or(crate::link::DEFAULT_DEAD_AFTER);
    errors.duration_in(
        "cluster.dead_after",
        dead_after,
        MIN_DEAD_AFTER,
        MAX_DEAD_AFTER,
        crate::link::DEFAULT_DEAD_AFTER,
    );
    let batch = c.batch.unwrap_or(crate::link::DEFAULT_BATCH);
    errors.duration_in(
        "cluster.batch",
        batch,
        Duration::ZERO,
        MAX_BATCH,
        crate::link::DEFAULT_BATCH,
    );
    let mut files = Vec::with_capacity(3);
    for (key, value) in [("cert", &c.cert), ("key", &c.key), ("ca", &c.ca)] {
        if value.trim().is_empty() {
            errors.push(
                format!("cluster.{key}"),
                format!("{key} is empty: give the path of a PEM file"),
            );
        }
        files.push(base.join(value));
    }
    if errors.0.len() > before {
        return None;
    }
    let [cert, key, ca] = <[std::path::PathBuf; 3]>::try_from(files).ok()?;
    if let Err(e) = crate::link::LinkTls::load(&cert, &key, &ca) {
        errors.push(e.key, e.message);
        return None;
    }
    Some(ClusterConfig {
        listen: listen?,
        peers,
        cert,
        key,
        ca,
        dead_after,
        batch,
    })
}

/// Default `media.ports`.
pub const DEFAULT_MEDIA_PORTS: (u16, u16) = (16384, 24575);
/// Default `media.silence_comfort_noise`.
pub const DEFAULT_SILENCE_COMFORT_NOISE: Duration = Duration::from_secs(1);

/// `[media]`: `None` when no route relays media and the section is absent.
fn validate_media(
    m: &MediaSection,
    router: &Router,
    errors: &mut Errors,
) -> Option<pointsman_protocol::media::MediaConfig> {
    let relaying = router
        .rules
        .routes
        .iter()
        .find(|r| r.media == routing_rules::spec::MediaMode::Relay);
    let given = m.carrier_address.is_some() || m.cloud_address.is_some() || m.ports.is_some();
    if relaying.is_none() && !given {
        return None;
    }
    let parse_ip = |path: &str, value: &str, errors: &mut Errors| match value
        .trim()
        .parse::<std::net::IpAddr>()
    {
        Ok(ip) if ip.is_unspecified() || ip.is_multicast() => {
            errors.push(
                path,
                format!(
                    "{} = \"{value}\" is not an address a peer can send to: use this \
                         node's own unicast address",
                    last_key(path)
                ),
            );
            None
        }
        Ok(ip) => Some(ip),
        Err(_) => {
            errors.push(
                path,
                format!(
                    "{} = \"{value}\" is not an IP address (write e.g. \"198.51.100.7\")",
                    last_key(path)
                ),
            );
            None
        }
    };
    let carrier = match &m.carrier_address {
        Some(a) => parse_ip("media.carrier_address", a, errors),
        None => {
            let route = relaying.map(|r| r.name.as_str()).unwrap_or_default();
            errors.push(
                "media.carrier_address",
                format!(
                    "route \"{route}\" relays media (media = \"relay\") but [media] has no \
                     carrier_address: set the address the relay binds and writes into the SDP \
                     the carrier gets"
                ),
            );
            None
        }
    };
    let cloud = match &m.cloud_address {
        Some(a) => parse_ip("media.cloud_address", a, errors),
        None => carrier,
    };
    let (port_min, port_max) = match &m.ports {
        None => DEFAULT_MEDIA_PORTS,
        Some(text) => match check_port_range(text) {
            Ok(range) => range,
            Err(fault) => {
                errors.push(
                    "media.ports",
                    format!(
                        "ports = \"{text}\" {fault}; write \"min-max\", e.g. \"{}-{}\" (the \
                         default)",
                        DEFAULT_MEDIA_PORTS.0, DEFAULT_MEDIA_PORTS.1
                    ),
                );
                DEFAULT_MEDIA_PORTS
            }
        },
    };
    if let Some(silence) = m.silence {
        errors.duration_in(
            "media.silence",
            silence,
            Duration::from_millis(20),
            Duration::from_secs(10),
            Duration::from_millis(60),
        );
    }
    let silence_comfort_noise = m
        .silence_comfort_noise
        .unwrap_or(DEFAULT_SILENCE_COMFORT_NOISE);
    errors.duration_in(
        "media.silence_comfort_noise",
        silence_comfort_noise,
        Duration::from_millis(20),
        Duration::from_secs(30),
        DEFAULT_SILENCE_COMFORT_NOISE,
    );
    Some(pointsman_protocol::media::MediaConfig {
        carrier_ip: carrier?,
        cloud_ip: cloud?,
        port_min,
        port_max,
        silence: m.silence,
        silence_comfort_noise,
        strict_source: m.strict_source.unwrap_or(false),
    })
}

/// Fewest ports `media.ports` may hold: one hot-hot call of two clouds (RTP and RTCP for the
/// carrier leg and each cloud's).
const MIN_MEDIA_PORTS: u32 = 6;

/// `media.ports` → `(min, max)`, or what is wrong with it.
fn check_port_range(text: &str) -> Result<(u16, u16), String> {
    let (lo, hi) = parse_port_range(text)
        .ok_or_else(|| "is not \"min-max\" of two ports from 1024 to 65535".to_string())?;
    if lo > hi {
        return Err("has min above max".into());
    }
    let count = u32::from(hi) - u32::from(lo) + 1;
    if lo < 1024 {
        Err("starts below 1024 (the system's ports)".into())
    } else if count < MIN_MEDIA_PORTS {
        Err(format!(
            "has {count} port{}: a hot-hot call of two clouds takes {MIN_MEDIA_PORTS} (RTP and \
             RTCP for the carrier leg and each cloud's)",
            if count == 1 { "" } else { "s" }
        ))
    } else {
        Ok((lo, hi))
    }
}

/// `"min-max"` → `(min, max)`.
fn parse_port_range(text: &str) -> Option<(u16, u16)> {
    let (lo, hi) = text.split_once('-')?;
    Some((lo.trim().parse().ok()?, hi.trim().parse().ok()?))
}

fn validate_guard(g: &GuardSection, errors: &mut Errors) -> pointsman_protocol::GuardConfig {
    let d = pointsman_protocol::GuardConfig::default();
    let (rate, burst) = validate_rate(
        ("guard.rate", g.rate.unwrap_or(d.rate)),
        ("guard.burst", g.burst),
        errors,
    );
    let allowed = g.allowed_rate.map(|allowed_rate| {
        validate_rate(
            ("guard.allowed_rate", allowed_rate),
            ("guard.allowed_burst", g.allowed_burst),
            errors,
        )
    });
    if allowed.is_none() && g.allowed_burst.is_some() {
        errors.push(
            "guard.allowed_burst",
            "allowed_burst applies only with allowed_rate (allowed sources are not limited without it): set allowed_rate too, or remove allowed_burst".into(),
        );
    }
    let max_sources = g.max_sources.unwrap_or(d.max_sources);
    errors.int_in(
        "guard.max_sources",
        max_sources,
        1,
        10_000_000,
        d.max_sources,
    );
    let overload_backlog = g.overload_backlog.unwrap_or(d.overload_backlog);
    if !(overload_backlog > 0.0 && overload_backlog <= 1.0) {
        errors.push(
            "guard.overload_backlog",
            format!("overload_backlog = {overload_backlog} is a fraction of the receive buffer: use a number above 0 and at most 1 (default {})", d.overload_backlog),
        );
    }
    let max_transactions = g.max_transactions.unwrap_or(d.max_transactions);
    errors.int_in(
        "guard.max_transactions",
        max_transactions,
        100,
        100_000_000,
        d.max_transactions,
    );
    let max_calls = g.max_calls.unwrap_or(d.max_calls);
    errors.int_in("guard.max_calls", max_calls, 1, 100_000_000, d.max_calls);
    let retry_after = g.retry_after.unwrap_or(d.retry_after);
    errors.duration_in(
        "guard.retry_after",
        retry_after,
        Duration::from_secs(1),
        Duration::from_secs(3600),
        d.retry_after,
    );
    if retry_after.subsec_nanos() != 0 {
        errors.push(
            "guard.retry_after",
            "Retry-After is whole seconds: write e.g. \"5s\"".into(),
        );
    }
    let block_user_agents = g.block_user_agents.clone().unwrap_or(d.block_user_agents);
    for (i, p) in block_user_agents.iter().enumerate() {
        if p.trim().is_empty() {
            errors.push(
                format!("guard.block_user_agents[{i}]"),
                "an empty pattern would block every request that has a User-Agent: remove it"
                    .into(),
            );
        }
    }
    pointsman_protocol::GuardConfig {
        rate,
        burst,
        allowed_rate: allowed.map(|(rate, _)| rate),
        allowed_burst: allowed.map_or(0.0, |(_, burst)| burst),
        max_sources,
        block_user_agents,
        overload_backlog,
        max_transactions,
        max_calls,
        retry_after,
    }
}

/// A per-source rate (`key`, value) and its burst (`key`, value if set: default twice the rate).
fn validate_rate(
    (rate_key, rate): (&str, f64),
    (burst_key, burst): (&str, Option<f64>),
    errors: &mut Errors,
) -> (f64, f64) {
    let short = |key: &str| key.rsplit('.').next().unwrap_or(key).to_string();
    if !(rate.is_finite() && rate > 0.0 && rate <= 1e6) {
        errors.push(
            rate_key,
            format!("{} = {rate} must be a number of new transactions per second per source, above 0 and at most 1000000", short(rate_key)),
        );
    }
    let burst = burst.unwrap_or(rate * 2.0);
    if !(burst.is_finite() && (1.0..=1e7).contains(&burst)) {
        errors.push(
            burst_key,
            format!(
                "{} = {burst} must be at least 1 and at most 10000000 (default twice the rate)",
                short(burst_key)
            ),
        );
    }
    (rate, burst)
}

/// The kind of socket a listener binds: TLS listeners take a TCP port.
fn socket_kind(t: ListenTransport) -> ListenTransport {
    match t {
        ListenTransport::Tls => ListenTransport::Tcp,
        t => t,
    }
}

/// `[tls]`, the TLS keys of listeners and destinations, and every file they name (readable,
/// PEM, key matching its certificate, usable CA bundles). Fills in `listeners[i].tls`.
/// `ca_unread`: `[tls] ca` is there but could not be read (its error is reported).
fn validate_tls(
    spec: &ConfigFile,
    base: &Path,
    listeners: &mut [Listener],
    router: Option<&Router>,
    ca_unread: bool,
    errors: &mut Errors,
) -> crate::transport::tls::TlsConfig {
    use crate::transport::tls::{self, DestinationFiles, ListenerFiles, TlsConfig};
    let path = |p: &str| base.join(p);
    let d = TlsConfig::default();
    let handshake_timeout = spec.tls.handshake_timeout.unwrap_or(d.handshake_timeout);
    errors.duration_in(
        "tls.handshake_timeout",
        handshake_timeout,
        Duration::from_millis(100),
        Duration::from_secs(60),
        d.handshake_timeout,
    );
    let mut files: Vec<Option<ListenerFiles>> = Vec::with_capacity(spec.listen.len());
    for (i, l) in spec.listen.iter().enumerate() {
        let keys = [
            ("cert", &l.cert),
            ("key", &l.key),
            ("client_ca", &l.client_ca),
        ];
        if l.transport != ListenTransport::Tls {
            for (key, value) in keys {
                if value.is_some() {
                    errors.push(
                        format!("listen[{i}].{key}"),
                        format!(
                            "{key} applies only to TLS listeners: set transport = \"tls\" (and \
                             a port of its own, e.g. 5061), or remove {key}"
                        ),
                    );
                }
            }
            files.push(None);
            continue;
        }
        for (key, value) in keys {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                errors.push(
                    format!("listen[{i}].{key}"),
                    format!("{key} is empty: give the path of a PEM file"),
                );
            }
        }
        match (&l.cert, &l.key) {
            (Some(cert), Some(key)) => files.push(Some(ListenerFiles {
                cert: path(cert),
                key: path(key),
                client_ca: l.client_ca.as_deref().map(path),
            })),
            (cert, key) => {
                for (name, missing, what) in [
                    ("cert", cert.is_none(), "its certificate chain"),
                    ("key", key.is_none(), "the certificate's private key"),
                ] {
                    if missing {
                        errors.push_at(
                            &format!("listen[{i}].{name}"),
                            &format!("listen[{i}].transport"),
                            format!(
                                "a TLS listener needs {name} = \"/path/to/{name}.pem\": {what} \
                                 (PEM)"
                            ),
                        );
                    }
                }
                files.push(None);
            }
        }
    }
    let config = TlsConfig {
        handshake_timeout,
        ca: match &spec.tls.ca {
            Some(ca) if ca.trim().is_empty() => {
                errors.push(
                    "tls.ca",
                    "ca is empty: give the path of a PEM CA bundle, or remove it".into(),
                );
                None
            }
            ca => ca.as_deref().map(path),
        },
        destinations: router.map_or_else(Vec::new, |r| {
            r.rules
                .destinations
                .iter()
                .map(|d| {
                    d.tls.as_ref().map(|t| DestinationFiles {
                        ca: t.ca.as_deref().map(path),
                        client_cert: t.client_cert.as_deref().map(path),
                        client_key: t.client_key.as_deref().map(path),
                        server_name: t.server_name.clone(),
                    })
                })
                .collect()
        }),
    };
    let refs: Vec<_> = files.iter().map(Option::as_ref).collect();
    // A TLS destination without a ca of its own relies on [tls] ca: not asked for one when
    // that is there but unreadable.
    let relies_on_tls_ca = |key: &str| {
        ca_unread
            && config.destinations.iter().enumerate().any(|(i, d)| {
                d.as_ref().is_some_and(|d| d.ca.is_none()) && key == format!("destination[{i}].ca")
            })
    };
    for e in tls::check(&refs, &config) {
        if !relies_on_tls_ca(&e.key) {
            errors.push(e.key, e.message);
        }
    }
    if listeners.len() == files.len() {
        for (l, f) in listeners.iter_mut().zip(files) {
            l.tls = f;
        }
    }
    config
}

/// Every `match.source` must name a listener (or one that could not be read, `unread`).
fn check_sources(router: &Router, listeners: &[Listener], unread: &[String], errors: &mut Errors) {
    let names = || listeners.iter().map(|l| l.name.as_str());
    for (path, source) in router.sources() {
        if names()
            .chain(unread.iter().map(String::as_str))
            .any(|n| n == source)
        {
            continue;
        }
        let message = match closest(source, names()) {
            Some(near) => format!("unknown listener {source:?}: did you mean {near:?}?"),
            None if listeners.is_empty() => format!(
                "unknown listener {source:?}: there is no [[listen]] table; add one with \
                 name = {source:?}"
            ),
            None => format!(
                "unknown listener {source:?}: source names a [[listen]] table by its name \
                 (known: {}); give the listener name = {source:?}, or use one of those",
                names()
                    .map(|n| format!("{n:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        errors.push(path, message);
    }
}

fn validate_listeners(specs: &[ListenSpec], errors: &mut Errors) -> Vec<Listener> {
    if specs.is_empty() {
        errors.push(
            "listen",
            "no [[listen]] table: pointsman needs at least one address to receive calls on; add \
             e.g. [[listen]] transport = \"udp\" address = \"0.0.0.0:5060\""
                .into(),
        );
    }
    let mut listeners = Vec::with_capacity(specs.len());
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut bound: HashMap<(ListenTransport, SocketAddr), usize> = HashMap::new();
    for (i, l) in specs.iter().enumerate() {
        let transport = match l.transport {
            ListenTransport::Udp => "udp",
            ListenTransport::Tcp => "tcp",
            ListenTransport::Tls => "tls",
        };
        let address = match l.address.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                let message = match parse_host_port(&l.address) {
                    Ok(_) => format!(
                        "listen address {:?} is not an IP address: a listener binds to a local \
                         IP and port, e.g. \"0.0.0.0:5060\" or \"[::]:5060\"",
                        l.address
                    ),
                    Err(m) => m,
                };
                errors.push(format!("listen[{i}].address"), message);
                None
            }
        };
        if let Some(addr) = address {
            // TCP and TLS listeners both take a TCP port.
            let key = (socket_kind(l.transport), addr);
            if let Some(&first) = bound.get(&key) {
                errors.push(
                    format!("listen[{i}].address"),
                    format!(
                        "{transport} {addr} is already a listener (listen[{first}]): remove one, \
                         or change its address or transport"
                    ),
                );
            } else if let Some((&(_, other), &first)) = bound
                .iter()
                .filter(|((t, other), _)| {
                    *t == socket_kind(l.transport)
                        && other.port() == addr.port()
                        && other.is_ipv4() == addr.is_ipv4()
                        && (other.ip().is_unspecified() || addr.ip().is_unspecified())
                })
                // The first listener in file order: the same error on every load.
                .min_by_key(|(_, &index)| index)
            {
                errors.push(
                    format!("listen[{i}].address"),
                    format!(
                        "{transport} {addr} overlaps listen[{first}] ({transport} {other}): a \
                         wildcard address already takes that port on every interface; keep \
                         either the wildcard or the specific addresses"
                    ),
                );
            } else {
                bound.insert(key, i);
            }
        }
        let name = match &l.name {
            Some(name) => {
                if let Err(m) = check_name("listener", name) {
                    errors.push(format!("listen[{i}].name"), m);
                }
                name.clone()
            }
            None => format!(
                "{transport}:{}",
                address.map_or_else(|| l.address.clone(), |a| a.to_string())
            ),
        };
        if let Some(&first) = names.get(&name) {
            errors.push(
                format!("listen[{i}].name"),
                format!(
                    "listener name {name:?} is already used by listen[{first}]: give each \
                     listener a unique name"
                ),
            );
        } else {
            names.insert(name.clone(), i);
        }
        let mut acl = pointsman_protocol::Acl::default();
        if let Some(list) = &l.allow {
            let mut nets = Vec::with_capacity(list.len());
            for (j, cidr) in list.iter().enumerate() {
                match pointsman_protocol::Cidr::parse(cidr) {
                    Ok(net) => nets.push(net),
                    Err(m) => errors.push(
                        format!("listen[{i}].allow[{j}]"),
                        format!("{m}: write a network as \"192.0.2.0/24\", \"2001:db8::/32\" or one address"),
                    ),
                }
            }
            if list.is_empty() {
                errors.push(
                    format!("listen[{i}].allow"),
                    "an empty allow list would drop everything: list the carrier's networks, or \
                     remove the key to accept any source"
                        .into(),
                );
            }
            acl.allow = Some(nets);
        }
        if let Some(address) = address {
            listeners.push(Listener {
                name,
                transport: l.transport,
                address,
                tls: None,
                acl,
            });
        }
    }
    listeners
}

fn validate_admin(a: &AdminSection, listeners: &[Listener], errors: &mut Errors) -> AdminConfig {
    let d = AdminConfig::default();
    let enabled = a.enabled.unwrap_or(d.enabled);
    let listen = match &a.listen {
        None => Some(d.listen),
        Some(text) => match text.parse::<SocketAddr>() {
            Ok(addr) if addr.port() == 0 => {
                errors.push(
                    "admin.listen",
                    format!(
                        "listen = {text:?} has port 0: the admin API needs a fixed port that \
                         operators and scrapers can reach, e.g. \"127.0.0.1:9060\" (default)"
                    ),
                );
                None
            }
            Ok(addr) => Some(addr),
            Err(_) => {
                let message = match parse_host_port(text) {
                    Ok(_) => format!(
                        "listen = {text:?} is not an IP address: the admin API binds to a local \
                         IP and port, e.g. \"127.0.0.1:9060\" (default)"
                    ),
                    Err(m) => m,
                };
                errors.push("admin.listen", message);
                None
            }
        },
    };
    if let Some(addr) = listen {
        if let Some((i, l)) = listeners.iter().enumerate().find(|(_, l)| {
            socket_kind(l.transport) == ListenTransport::Tcp
                && l.address.port() == addr.port()
                && l.address.is_ipv4() == addr.is_ipv4()
                && (l.address.ip() == addr.ip()
                    || l.address.ip().is_unspecified()
                    || addr.ip().is_unspecified())
        }) {
            errors.push(
                "admin.listen",
                format!(
                    "listen = \"{addr}\" takes the port of listen[{i}] (tcp {}): give the \
                     admin API a port of its own, e.g. \"127.0.0.1:9060\" (default)",
                    l.address
                ),
            );
        }
    }
    let token = a.token.clone();
    match &token {
        Some(t) if t.is_empty() => errors.push(
            "admin.token",
            "token is empty: remove it (loopback only), or set a random secret of at least \
             16 characters, e.g. the output of `openssl rand -hex 32`"
                .into(),
        ),
        Some(t) if t.bytes().any(|b| !b.is_ascii_graphic()) => errors.push(
            "admin.token",
            "token contains a space, a control or a non-ASCII character: it is sent in an HTTP \
             header (Authorization: Bearer <token>), so use visible ASCII only, e.g. the \
             output of `openssl rand -hex 32`"
                .into(),
        ),
        Some(t) if t.len() < MIN_ADMIN_TOKEN_LEN => errors.push(
            "admin.token",
            format!(
                "token is {} characters, too short to be hard to guess: use at least \
                 {MIN_ADMIN_TOKEN_LEN}, e.g. the output of `openssl rand -hex 32`",
                t.len()
            ),
        ),
        Some(_) => {}
        None => {
            if let Some(addr) = listen.filter(|a| enabled && !is_loopback(a.ip())) {
                errors.push_at(
                    "admin.token",
                    "admin.listen",
                    format!(
                        "admin.listen = \"{addr}\" is not a loopback address, so the admin API \
                         needs a token: add token = \"...\" to [admin] (at least \
                         {MIN_ADMIN_TOKEN_LEN} characters, e.g. the output of `openssl rand -hex \
                         32`), or listen on 127.0.0.1"
                    ),
                );
            }
        }
    }
    AdminConfig {
        enabled,
        listen: listen.unwrap_or(d.listen),
        token,
    }
}

/// 127.0.0.0/8, ::1, or ::ffff:127.x.y.z.
pub fn is_loopback(ip: std::net::IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

fn validate_health(
    h: &HealthSection,
    listeners: &[Listener],
    errors: &mut Errors,
) -> pointsman_protocol::health::HealthConfig {
    let d = pointsman_protocol::health::HealthConfig::default();
    let source = match &h.source {
        // TCP and TLS probes leave from the node's own address: the first listener's IP, any
        // port (UDP ones from the listener).
        None => listeners
            .first()
            .map_or(d.source, |l| SocketAddr::new(l.address.ip(), 0)),
        Some(text) => match text.parse::<SocketAddr>().or_else(|_| {
            text.parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, 0))
        }) {
            Ok(addr) => addr,
            Err(_) => {
                let why = match parse_host_port(text) {
                    Ok(_) => "is not an IP address".to_string(),
                    Err(_) if text.is_empty() => "is empty".to_string(),
                    Err(_) => "is neither an IP nor ip:port".to_string(),
                };
                errors.push(
                    "health.source",
                    format!(
                        "source = {text:?} {why}: probes leave from this node's own unicast IP \
                         (never the shared anycast address), e.g. \"10.0.0.5\", \
                         \"10.0.0.5:5062\" or \"[2001:db8::5]:5062\""
                    ),
                );
                d.source
            }
        },
    };
    if source.port() != 0 {
        let taken = listeners.iter().enumerate().find(|(_, l)| {
            l.transport == ListenTransport::Udp
                && l.address.port() == source.port()
                && l.address.is_ipv4() == source.is_ipv4()
                && (l.address.ip() == source.ip()
                    || l.address.ip().is_unspecified()
                    || source.ip().is_unspecified())
        });
        if let Some((i, l)) = taken {
            errors.push(
                "health.source",
                format!(
                    "source = \"{source}\" takes the port of listen[{i}] (udp {}): probes use a \
                     socket of their own; give source another port, or only the IP (any port), \
                     e.g. \"{}\"",
                    l.address,
                    source.ip()
                ),
            );
        }
    }
    let passive = h.passive.unwrap_or(d.passive);
    let one_s = Duration::from_secs(1);
    let (min_hi, max_hi) = (Duration::from_secs(3600), Duration::from_secs(24 * 3600));
    let retry_after_min = h.retry_after_min.unwrap_or(d.retry_after_min);
    errors.duration_in(
        "health.retry_after_min",
        retry_after_min,
        one_s,
        min_hi,
        d.retry_after_min,
    );
    let retry_after_max = h.retry_after_max.unwrap_or(d.retry_after_max);
    errors.duration_in(
        "health.retry_after_max",
        retry_after_max,
        one_s,
        max_hi,
        d.retry_after_max,
    );
    // Compared only when both are in range, so one mistake gives one error.
    if (one_s..=min_hi).contains(&retry_after_min)
        && (one_s..=max_hi).contains(&retry_after_max)
        && retry_after_max < retry_after_min
    {
        let shown = |set: bool, key: &str, v: Duration| {
            if set {
                format!("{key} = \"{}\"", fmt_duration(v))
            } else {
                format!("{key} (not set, default \"{}\")", fmt_duration(v))
            }
        };
        // Blame the key the operator wrote: the max, unless only the min is set.
        let path = if h.retry_after_max.is_none() && h.retry_after_min.is_some() {
            "health.retry_after_min"
        } else {
            "health.retry_after_max"
        };
        errors.push(
            path,
            format!(
                "{} is shorter than {}: a Retry-After is clamped into min..=max; set \
                 retry_after_max to at least retry_after_min",
                shown(
                    h.retry_after_max.is_some(),
                    "retry_after_max",
                    retry_after_max
                ),
                shown(
                    h.retry_after_min.is_some(),
                    "retry_after_min",
                    retry_after_min
                ),
            ),
        );
    }
    let passive_hold = h.passive_hold.unwrap_or(d.passive_hold);
    errors.duration_in(
        "health.passive_hold",
        passive_hold,
        Duration::ZERO,
        min_hi,
        d.passive_hold,
    );
    let passive_hold_max = h
        .passive_hold_max
        .unwrap_or(d.passive_hold_max.max(passive_hold));
    errors.duration_in(
        "health.passive_hold_max",
        passive_hold_max,
        Duration::ZERO,
        max_hi,
        d.passive_hold_max,
    );
    if h.passive_hold_max.is_some() && passive_hold_max < passive_hold {
        errors.push(
            "health.passive_hold_max",
            format!(
                "passive_hold_max = \"{}\" is shorter than passive_hold = \"{}\": the hold doubles from passive_hold up to passive_hold_max",
                fmt_duration(passive_hold_max),
                fmt_duration(passive_hold)
            ),
        );
    }
    pointsman_protocol::health::HealthConfig {
        source,
        from_listener: h.source.is_none(),
        passive,
        retry_after_min,
        retry_after_max,
        passive_hold,
        passive_hold_max,
    }
}

fn validate_node(
    node: &NodeSection,
    first_listener: Option<SocketAddr>,
    errors: &mut Errors,
) -> (u16, String, usize) {
    let node_id = node.id.unwrap_or(DEFAULT_NODE_ID);
    if node_id == 0 {
        errors.push(
            "node.id",
            "id = 0 is not a node id: use 1..=65535, different on each node of a pair (default 1)"
                .into(),
        );
    }

    let advertise = match &node.advertise {
        Some(a) => {
            match parse_host_port(a) {
                Err(m) => errors.push("node.advertise", m),
                Ok((host, _)) => {
                    if host
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_unspecified())
                    {
                        errors.push(
                            "node.advertise",
                            format!(
                                "advertise = {a:?} is a wildcard address that peers cannot send \
                                 to: write this node's reachable IP or hostname and port, e.g. \
                                 \"203.0.113.10:5060\""
                            ),
                        );
                    }
                }
            }
            a.clone()
        }
        None => match first_listener {
            Some(addr) => {
                if addr.ip().is_unspecified() {
                    errors.push_at(
                        "node.advertise",
                        "listen[0].address",
                        format!(
                            "advertise is not set and the first listener's address {addr} is a \
                             wildcard that peers cannot send to: set advertise to this node's \
                             reachable IP or hostname, e.g. advertise = \"203.0.113.10:{}\"",
                            addr.port()
                        ),
                    );
                }
                addr.to_string()
            }
            None => String::new(),
        },
    };

    let default_workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_WORKERS);
    let workers = node.workers.unwrap_or(default_workers);
    errors.int_in("node.workers", workers, 1, MAX_WORKERS, default_workers);
    (node_id, advertise, workers)
}

fn validate_timers(
    t: &TimersSection,
    errors: &mut Errors,
) -> pointsman_protocol::transaction::TimerConfig {
    let d = pointsman_protocol::transaction::TimerConfig::default();
    let ms = Duration::from_millis;
    let (t1_lo, t1_hi) = (ms(1), Duration::from_secs(10));
    let (t2_lo, t2_hi) = (ms(1), Duration::from_secs(60));
    let t1 = t.t1.unwrap_or(d.t1);
    errors.duration_in("timers.t1", t1, t1_lo, t1_hi, d.t1);
    let t2 = t.t2.unwrap_or(d.t2);
    errors.duration_in("timers.t2", t2, t2_lo, t2_hi, d.t2);
    // Compared only when both are in range, so one mistake gives one error.
    if (t1_lo..=t1_hi).contains(&t1) && (t2_lo..=t2_hi).contains(&t2) && t2 < t1 {
        let t2_text = match t.t2 {
            Some(_) => format!("t2 = \"{}\"", fmt_duration(t2)),
            None => format!("t2 (not set, default \"{}\")", fmt_duration(t2)),
        };
        errors.push(
            "timers.t2",
            format!(
                "{t2_text} is shorter than t1 = \"{}\": T2 caps the retransmit interval that \
                 starts at T1 (RFC 3261 §17.1.2.2); set t2 to at least t1",
                fmt_duration(t1)
            ),
        );
    }
    let t4 = t.t4.unwrap_or(d.t4);
    errors.duration_in("timers.t4", t4, ms(1), Duration::from_secs(60), d.t4);
    // Start from the defaults so a field the transaction layer adds later keeps its default.
    let mut timers = d;
    timers.t1 = t1;
    timers.t2 = t2;
    timers.t4 = t4;
    timers
}

fn validate_limits(l: &LimitsSection, errors: &mut Errors) -> pointsman_protocol::wire::Limits {
    let d = pointsman_protocol::wire::Limits::default();
    // Start from the defaults so a field the wire layer adds later keeps its default here.
    let mut limits = d.clone();
    limits.max_message_size = l.max_message_size.unwrap_or(d.max_message_size);
    limits.max_headers = l.max_headers.unwrap_or(d.max_headers);
    limits.max_line_length = l.max_line_length.unwrap_or(d.max_line_length);
    limits.max_via = l.max_via.unwrap_or(d.max_via);
    let before = errors.0.len();
    errors.int_in(
        "limits.max_message_size",
        limits.max_message_size,
        1024,
        1_048_576,
        d.max_message_size,
    );
    errors.int_in(
        "limits.max_headers",
        limits.max_headers,
        16,
        1024,
        d.max_headers,
    );
    errors.int_in(
        "limits.max_line_length",
        limits.max_line_length,
        256,
        65_535,
        d.max_line_length,
    );
    errors.int_in("limits.max_via", limits.max_via, 2, 256, d.max_via);
    if errors.0.len() == before && limits.max_line_length > limits.max_message_size {
        errors.push(
            "limits.max_line_length",
            format!(
                "max_line_length = {} is larger than max_message_size = {}: a line cannot be \
                 longer than the message holding it; lower max_line_length or raise \
                 max_message_size",
                limits.max_line_length, limits.max_message_size
            ),
        );
    }
    limits
}
