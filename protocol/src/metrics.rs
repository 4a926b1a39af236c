//! The metrics pointsman exports: the one place that names, labels and registers every series,
//! and the typed methods the proxy core, the transports and the health checker call to update
//! them.
//!
//! Every series is registered once, up front, on a [`Recorder`] the caller provides (the I/O
//! crate's Prometheus exporter in production), and kept as a handle ([`metrics::Counter`],
//! [`metrics::Gauge`], [`metrics::Histogram`]) in [`Metrics`]: the hot path indexes an array
//! or a `Vec` and does one atomic add, never a labelled lookup (~100 ns each). Label values come
//! only from fixed enums ([`CallOutcome`], [`FailoverReason`], [`DropReason`], [`State`], [`Cap`],
//! SIP methods and response classes, [`ParseErrorKind`]) or from configured destination and
//! route names, so the number of series is bounded by the config: never a Call-ID, a number or
//! an IP address. Per-destination and per-route handles are indexed by
//! [`DestId`]/[`RouteId`] (config order); [`Metrics::rebind`] builds the set for a reloaded
//! config, keeping the counters of names that stay. The histograms' bucket bounds are here
//! ([`POST_DIAL_DELAY_BUCKETS`], [`INVITE_FINAL_BUCKETS`], [`UDP_TRANSIT_BUCKETS`]) for the
//! exporter to apply.
//!
//! It must not: take label values from received messages, allocate or look up on the update path,
//! render or serve the metrics, or know about sockets, transactions or HTTP.

use ::metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder, SharedString};
use routing_rules::{DestId, RouteId};
use std::sync::Arc;
use std::time::Duration;

use crate::health::{Cap, State};
use crate::wire::{Method, ParseErrorKind};

/// Bucket bounds (seconds) of `pointsman_post_dial_delay_seconds`: INVITE received → first
/// 18x relayed. Dense around the 3 s default provisional timer.
pub const POST_DIAL_DELAY_BUCKETS: [f64; 13] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 10.0, 30.0,
];

/// Bucket bounds (seconds) of `pointsman_invite_final_seconds`: INVITE received → final
/// response relayed (answer, rejection, or the caller's CANCEL), up to the 120 s ring timeout.
pub const INVITE_FINAL_BUCKETS: [f64; 15] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 90.0, 120.0, 300.0,
];

/// Bucket bounds (seconds) of `pointsman_udp_transit_seconds`: the kernel receiving a datagram
/// → pointsman handing the kernel what it sends over UDP because of it. Dense below a
/// millisecond, where a healthy node is.
pub const UDP_TRANSIT_BUCKETS: [f64; 14] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_2, 0.000_3, 0.000_4, 0.000_5, 0.000_75, 0.001, 0.002_5,
    0.005, 0.01, 0.05, 0.25,
];

/// Bucket bounds (seconds) of `pointsman_cluster_takeover_seconds`: a peer declared dead → the
/// first of its calls taken over here. A message for one comes within a retransmission interval
/// (500 ms) or a packet time of media signalling; dense below a second, the bound.
pub const TAKEOVER_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.0, 5.0,
];

/// The `method` label values of `pointsman_requests_total`, in [`Method`] order; extension
/// methods count as `other`.
pub const METHODS: [&str; 15] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "REGISTER",
    "PRACK",
    "UPDATE",
    "INFO",
    "SUBSCRIBE",
    "NOTIFY",
    "REFER",
    "MESSAGE",
    "PUBLISH",
    "other",
];

/// The `class` label values of `pointsman_responses_total`.
pub const RESPONSE_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx"];

/// The last `kind` label of `pointsman_parse_errors_total`, after every
/// [`ParseErrorKind::as_str`]. Every scan error has a kind of its own, so nothing counts here;
/// it is still registered so the exported series do not change under dashboards.
pub const PARSE_ERROR_OTHER: &str = "other";

/// The `route` label of calls that matched no route.
pub const NO_ROUTE: &str = "(none)";

/// How a call ended: the `outcome` label of `pointsman_calls_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallOutcome {
    /// 2xx relayed.
    Answered,
    /// 486 Busy Here or 600 Busy Everywhere.
    Busy,
    /// Any other 4xx or 6xx (but 408), and 3xx.
    Rejected,
    /// 5xx, pointsman's own 503 included.
    Failed,
    /// The caller cancelled (487 after the carrier's CANCEL).
    Cancelled,
    /// 408, whether a destination's or pointsman's (ring timeout).
    Timeout,
}

impl CallOutcome {
    /// Every outcome, in label order.
    pub const ALL: [CallOutcome; 6] = [
        CallOutcome::Answered,
        CallOutcome::Busy,
        CallOutcome::Rejected,
        CallOutcome::Failed,
        CallOutcome::Cancelled,
        CallOutcome::Timeout,
    ];

    /// The outcome of a call whose final response upstream was `code`; `cancelled`: the caller
    /// sent CANCEL before it. `None` for a code that is not final (1xx or out of range).
    pub fn classify(code: u16, cancelled: bool) -> Option<CallOutcome> {
        Some(match code {
            200..=299 => CallOutcome::Answered,
            300..=699 if cancelled => CallOutcome::Cancelled,
            486 | 600 => CallOutcome::Busy,
            408 => CallOutcome::Timeout,
            500..=599 => CallOutcome::Failed,
            300..=499 | 600..=699 => CallOutcome::Rejected,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Answered => "answered",
            CallOutcome::Busy => "busy",
            CallOutcome::Rejected => "rejected",
            CallOutcome::Failed => "failed",
            CallOutcome::Cancelled => "cancelled",
            CallOutcome::Timeout => "timeout",
        }
    }
}

/// Why a branch was abandoned for the next destination: the `reason` label of
/// `pointsman_failovers_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailoverReason {
    /// No provisional response within the destination's provisional timer.
    Timeout,
    /// ICMP unreachable, TCP connect/write failure.
    Transport,
    /// A final response code in the route's retry list.
    Code,
}

impl FailoverReason {
    pub const ALL: [FailoverReason; 3] = [
        FailoverReason::Timeout,
        FailoverReason::Transport,
        FailoverReason::Code,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailoverReason::Timeout => "timeout",
            FailoverReason::Transport => "transport",
            FailoverReason::Code => "code",
        }
    }
}

/// Why a received packet was dropped without an answer: the `reason` label of
/// `pointsman_dropped_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The source is not in a listener's allowed CIDRs.
    Acl,
    /// An out-of-dialog request whose User-Agent is a known scanner's (`[guard]
    /// block_user_agents`).
    Scanner,
    /// The source exceeded its rate limit.
    RateLimit,
    /// pointsman is saturated (a queue is full).
    Overload,
    /// The message could not be parsed (also counted by kind in `pointsman_parse_errors_total`).
    Malformed,
    /// A request pointsman cannot route and must not answer (e.g. an ACK or in-dialog request
    /// whose Route it cannot decode).
    Unroutable,
    /// A response or ACK matching no transaction and no dialog.
    Stray,
    /// A response that matched its transaction (which took it: timers stopped) but has no
    /// parsable Via below ours, so it cannot be relayed as it is (see the core's
    /// `on_response`).
    Unrelayable,
    /// A new INVITE while the node stops (SIGTERM): answered 503 with Retry-After.
    Stopping,
    /// A node of a pair that has not yet got its peer's calls, with no peer up to hand it to:
    /// a response or in-dialog request it holds nothing of (it may be a call the peer adopted
    /// from this node's previous run). Its retransmission finds the node synced.
    Syncing,
}

impl DropReason {
    pub const ALL: [DropReason; 10] = [
        DropReason::Acl,
        DropReason::Scanner,
        DropReason::RateLimit,
        DropReason::Overload,
        DropReason::Malformed,
        DropReason::Unroutable,
        DropReason::Stray,
        DropReason::Unrelayable,
        DropReason::Stopping,
        DropReason::Syncing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Acl => "acl",
            DropReason::Scanner => "scanner",
            DropReason::RateLimit => "rate_limit",
            DropReason::Overload => "overload",
            DropReason::Malformed => "malformed",
            DropReason::Unroutable => "unroutable",
            DropReason::Stray => "stray",
            DropReason::Unrelayable => "unrelayable",
            DropReason::Stopping => "stopping",
            DropReason::Syncing => "syncing",
        }
    }
}

/// The node's own state as the value of the `pointsman_node_state` gauge. Serialised (admin
/// API) as [`as_str`](NodeState::as_str).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum NodeState {
    /// Ready, taking calls.
    Serving = 0,
    /// Drained by the operator: not ready, calls that still arrive are served.
    Draining = 1,
    /// Stopping on SIGTERM/SIGINT: not ready, new calls refused with 503.
    Stopping = 2,
    /// A node of a pair that started: not ready until it has its peer's calls (its peer's
    /// snapshot came, or no peer answered within the bound), calls that arrive are served.
    Syncing = 3,
}

impl NodeState {
    /// The gauge value.
    pub fn code(self) -> u8 {
        self as u8
    }
    /// The name the admin API and `pointsman status` show.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Serving => "serving",
            NodeState::Draining => "draining",
            NodeState::Stopping => "stopping",
            NodeState::Syncing => "syncing",
        }
    }
}

/// The pre-registered handles. Cheap to clone (every handle is an `Arc`); share it, and swap in
/// the result of [`rebind`](Self::rebind) on a reload.
#[derive(Clone)]
pub struct Metrics {
    recorder: Arc<dyn Recorder + Send + Sync>,
    requests: [Counter; METHODS.len()],
    responses_in: [Counter; 6],
    responses_out: [Counter; 6],
    cancels_sent: Counter,
    ghosts_torn_down: Counter,
    forwarded_to_owner: Counter,
    adopted: [Counter; 2],
    replicas: Gauge,
    takeover: Histogram,
    post_dial_delay: Histogram,
    invite_final: Histogram,
    udp_transit: Histogram,
    calls_in_progress: Gauge,
    transactions: Gauge,
    node_state: Gauge,
    parse_errors: [Counter; ParseErrorKind::ALL.len() + 1],
    dropped: [Counter; DropReason::ALL.len()],
    unrouted_calls: [Counter; CallOutcome::ALL.len()],
    /// Indexed by [`RouteId`].
    calls: Vec<[Counter; CallOutcome::ALL.len()]>,
    /// Indexed by [`DestId`].
    dests: Vec<DestHandles>,
}

#[derive(Clone)]
struct DestHandles {
    branch_attempts: Counter,
    failovers: [Counter; FailoverReason::ALL.len()],
    state: Gauge,
    probe_rtt: Gauge,
    /// Indexed by [`Cap`].
    capped: [Counter; Cap::ALL.len()],
    calls_in_progress: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("routes", &self.calls.len())
            .field("destinations", &self.dests.len())
            .finish_non_exhaustive()
    }
}

/// Metric names.
pub mod name {
    pub const REQUESTS: &str = "pointsman_requests_total";
    pub const RESPONSES: &str = "pointsman_responses_total";
    pub const CALLS: &str = "pointsman_calls_total";
    pub const BRANCH_ATTEMPTS: &str = "pointsman_branch_attempts_total";
    pub const FAILOVERS: &str = "pointsman_failovers_total";
    pub const CANCELS_SENT: &str = "pointsman_cancels_sent_total";
    pub const GHOSTS: &str = "pointsman_ghost_calls_torn_down_total";
    pub const POST_DIAL_DELAY: &str = "pointsman_post_dial_delay_seconds";
    pub const INVITE_FINAL: &str = "pointsman_invite_final_seconds";
    pub const UDP_TRANSIT: &str = "pointsman_udp_transit_seconds";
    pub const CALLS_IN_PROGRESS: &str = "pointsman_calls_in_progress";
    pub const TRANSACTIONS: &str = "pointsman_transactions";
    pub const NODE_STATE: &str = "pointsman_node_state";
    pub const DEST_STATE: &str = "pointsman_destination_state";
    pub const PROBE_RTT: &str = "pointsman_probe_rtt_seconds";
    pub const DEST_CAPPED: &str = "pointsman_destination_capped_total";
    pub const DEST_CALLS_IN_PROGRESS: &str = "pointsman_destination_calls_in_progress";
    pub const PARSE_ERRORS: &str = "pointsman_parse_errors_total";
    pub const DROPPED: &str = "pointsman_dropped_total";
    pub const FORWARDED_TO_OWNER: &str = "pointsman_cluster_forwarded_total";
    pub const ADOPTED: &str = "pointsman_cluster_adopted_total";
    pub const REPLICAS: &str = "pointsman_cluster_replicas";
    pub const TAKEOVER: &str = "pointsman_cluster_takeover_seconds";
}

/// The `# HELP` text of each metric.
/// Every metric: its type, name and help text.
pub const DESCRIPTIONS: [(Kind, &str, &str); 23] = [
    (
        Kind::Counter,
        name::FORWARDED_TO_OWNER,
        "Datagrams that landed on this node and were handed to the node owning their call",
    ),
    (
        Kind::Counter,
        name::ADOPTED,
        "Calls of a node that was down adopted here from their replicas, by state (setup, answered)",
    ),
    (
        Kind::Gauge,
        name::REPLICAS,
        "Calls the other nodes replicated to this one, held now",
    ),
    (
        Kind::Histogram,
        name::TAKEOVER,
        "Seconds from the node link declaring a peer dead to the first of its calls taken over \
         here (one observation per death; add [cluster] dead_after for the time from the death)",
    ),
    (
        Kind::Counter,
        name::REQUESTS,
        "SIP requests received, by method",
    ),
    (
        Kind::Counter,
        name::RESPONSES,
        "SIP responses by class: direction=in received from destinations, out sent upstream",
    ),
    (
        Kind::Counter,
        name::CALLS,
        "Calls (INVITE server transactions) ended, by route and outcome",
    ),
    (
        Kind::Counter,
        name::BRANCH_ATTEMPTS,
        "INVITE branches sent, by destination",
    ),
    (
        Kind::Counter,
        name::FAILOVERS,
        "Branches abandoned for the next destination, by the failed destination and reason",
    ),
    (
        Kind::Counter,
        name::CANCELS_SENT,
        "CANCEL requests sent to destinations",
    ),
    (
        Kind::Counter,
        name::GHOSTS,
        "2xx responses on abandoned or cancelled branches, ACKed and ended with BYE",
    ),
    (
        Kind::Histogram,
        name::POST_DIAL_DELAY,
        "Seconds from INVITE received to the first 18x relayed",
    ),
    (
        Kind::Histogram,
        name::INVITE_FINAL,
        "Seconds from INVITE received to its final response relayed",
    ),
    (
        Kind::Histogram,
        name::UDP_TRANSIT,
        "Seconds from the kernel receiving a UDP datagram to pointsman handing the kernel what it \
         sends over UDP because of it (the relayed message or an answer): the time inside the node",
    ),
    (
        Kind::Gauge,
        name::CALLS_IN_PROGRESS,
        "Calls set up or answered and not yet ended",
    ),
    (
        Kind::Gauge,
        name::TRANSACTIONS,
        "SIP transactions in progress",
    ),
    (
        Kind::Gauge,
        name::NODE_STATE,
        "Node state: 0 serving, 1 draining (not ready, still serving), 2 stopping (new calls get 503)",
    ),
    (
        Kind::Gauge,
        name::DEST_STATE,
        "Destination state: 0 down, 1 up, 2 draining, 3 maintenance, 4 forced-up, 5 probing",
    ),
    (
        Kind::Gauge,
        name::PROBE_RTT,
        "Round-trip time of the last successful OPTIONS probe, in seconds",
    ),
    (
        Kind::Counter,
        name::DEST_CAPPED,
        "New calls (INVITE branches) that skipped a destination because it was at a capacity \
         cap: cap=calls (max_calls in progress), cps (max_cps); not failures",
    ),
    (
        Kind::Gauge,
        name::DEST_CALLS_IN_PROGRESS,
        "Calls in progress at a destination: INVITE branches sent to it and not ended, answered \
         calls until their BYE (what max_calls caps)",
    ),
    (
        Kind::Counter,
        name::PARSE_ERRORS,
        "Received messages rejected by the scanner, by kind",
    ),
    (
        Kind::Counter,
        name::DROPPED,
        "Received packets dropped without an answer, by reason",
    ),
];

#[derive(Clone, Copy)]
/// A metric's type.
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

const METADATA: Metadata<'static> =
    Metadata::new(module_path!(), ::metrics::Level::INFO, Some(module_path!()));

/// Describes each `(kind, name, help)` on `recorder` (its HELP and TYPE lines).
pub(crate) fn describe(
    recorder: &dyn Recorder,
    descriptions: &[(Kind, &'static str, &'static str)],
) {
    for &(kind, metric, help) in descriptions {
        let help = SharedString::const_str(help);
        match kind {
            Kind::Counter => recorder.describe_counter(metric.into(), None, help),
            Kind::Gauge => recorder.describe_gauge(metric.into(), None, help),
            Kind::Histogram => recorder.describe_histogram(metric.into(), None, help),
        }
    }
}

/// Registers one series on `r`.
pub(crate) struct Registrar<'a>(pub(crate) &'a dyn Recorder);

impl Registrar<'_> {
    fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
        let labels: Vec<Label> = labels
            .iter()
            .map(|&(k, v)| Label::new(k, v.to_string()))
            .collect();
        Key::from_parts(name, labels)
    }
    pub(crate) fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Counter {
        self.0.register_counter(&Self::key(name, labels), &METADATA)
    }
    pub(crate) fn gauge(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Gauge {
        self.0.register_gauge(&Self::key(name, labels), &METADATA)
    }
    pub(crate) fn histogram(&self, name: &'static str) -> Histogram {
        self.0.register_histogram(&Self::key(name, &[]), &METADATA)
    }
}

impl Metrics {
    /// The recorder these handles are registered on (for the media relay's series).
    pub fn recorder(&self) -> &(dyn Recorder + Send + Sync) {
        self.recorder.as_ref()
    }

    /// The handles for a reloaded config with these destinations and routes (config order), on
    /// the same recorder: series whose names stay keep counting; the series of a removed name
    /// stay in the output with their last values until the process restarts.
    pub fn rebind<D: AsRef<str>, R: AsRef<str>>(
        &self,
        destinations: &[D],
        routes: &[R],
    ) -> Metrics {
        let r = Registrar(self.recorder.as_ref());
        Metrics {
            calls: routes
                .iter()
                .map(|n| route_handles(&r, n.as_ref()))
                .collect(),
            dests: destinations
                .iter()
                .map(|n| dest_handles(&r, n.as_ref()))
                .collect(),
            ..self.clone()
        }
    }

    /// Describes every metric on `recorder` and registers every series for these destinations
    /// and routes (names in config order).
    pub fn register<D: AsRef<str>, R: AsRef<str>>(
        recorder: Arc<dyn Recorder + Send + Sync>,
        destinations: &[D],
        routes: &[R],
    ) -> Metrics {
        describe(recorder.as_ref(), &DESCRIPTIONS);
        let r = Registrar(recorder.as_ref());
        let classes = |direction: &'static str| {
            RESPONSE_CLASSES.map(|class| {
                r.counter(
                    name::RESPONSES,
                    &[("class", class), ("direction", direction)],
                )
            })
        };
        let metrics = Metrics {
            requests: METHODS.map(|m| r.counter(name::REQUESTS, &[("method", m)])),
            responses_in: classes("in"),
            responses_out: classes("out"),
            cancels_sent: r.counter(name::CANCELS_SENT, &[]),
            ghosts_torn_down: r.counter(name::GHOSTS, &[]),
            forwarded_to_owner: r.counter(name::FORWARDED_TO_OWNER, &[]),
            adopted: ["setup", "answered"].map(|s| r.counter(name::ADOPTED, &[("state", s)])),
            replicas: r.gauge(name::REPLICAS, &[]),
            takeover: r.histogram(name::TAKEOVER),
            post_dial_delay: r.histogram(name::POST_DIAL_DELAY),
            invite_final: r.histogram(name::INVITE_FINAL),
            udp_transit: r.histogram(name::UDP_TRANSIT),
            calls_in_progress: r.gauge(name::CALLS_IN_PROGRESS, &[]),
            transactions: r.gauge(name::TRANSACTIONS, &[]),
            node_state: r.gauge(name::NODE_STATE, &[]),
            parse_errors: std::array::from_fn(|i| {
                let kind = ParseErrorKind::ALL
                    .get(i)
                    .map_or(PARSE_ERROR_OTHER, |k| k.as_str());
                r.counter(name::PARSE_ERRORS, &[("kind", kind)])
            }),
            dropped: DropReason::ALL.map(|d| r.counter(name::DROPPED, &[("reason", d.as_str())])),
            unrouted_calls: route_handles(&r, NO_ROUTE),
            calls: routes
                .iter()
                .map(|n| route_handles(&r, n.as_ref()))
                .collect(),
            dests: destinations
                .iter()
                .map(|n| dest_handles(&r, n.as_ref()))
                .collect(),
            recorder: recorder.clone(),
        };
        metrics
    }

    /// A request received (from any side).
    pub fn request(&self, method: Method) {
        self.requests[method_index(method)].increment(1);
    }

    /// A response received from a destination.
    pub fn response_in(&self, code: u16) {
        if let Some(c) = class_index(code) {
            self.responses_in[c].increment(1);
        }
    }

    /// A response sent upstream (relayed or pointsman's own).
    pub fn response_out(&self, code: u16) {
        if let Some(c) = class_index(code) {
            self.responses_out[c].increment(1);
        }
    }

    /// A call ended with final response `code` upstream on `route` (`None`: no route matched);
    /// `cancelled`: the caller sent CANCEL first. See [`CallOutcome::classify`]; a code that is
    /// not final or a route index out of range is ignored.
    pub fn call_outcome(&self, route: Option<RouteId>, code: u16, cancelled: bool) {
        let Some(outcome) = CallOutcome::classify(code, cancelled) else {
            return;
        };
        let per_outcome = match route {
            None => Some(&self.unrouted_calls),
            Some(r) => self.calls.get(r.0 as usize),
        };
        if let Some(c) = per_outcome {
            c[outcome_index(outcome)].increment(1);
        }
    }

    /// An INVITE branch sent to `dest`.
    pub fn branch_attempt(&self, dest: DestId) {
        if let Some(d) = self.dest(dest) {
            d.branch_attempts.increment(1);
        }
    }

    /// The branch to `dest` was abandoned for the next destination.
    pub fn failover(&self, dest: DestId, reason: FailoverReason) {
        if let Some(d) = self.dest(dest) {
            d.failovers[reason as usize].increment(1);
        }
    }

    /// A CANCEL sent to a destination.
    pub fn cancel_sent(&self) {
        self.cancels_sent.increment(1);
    }

    /// A datagram handed to the node that owns its call.
    pub fn forwarded_to_owner(&self) {
        self.forwarded_to_owner.increment(1);
    }

    /// A call of a node that was down adopted from its replica.
    pub fn adopted(&self, answered: bool) {
        self.adopted[usize::from(answered)].increment(1);
    }

    /// The first call of a dead peer taken over here, `d` after the peer was declared dead.
    pub fn takeover(&self, d: Duration) {
        self.takeover.record(d.as_secs_f64());
    }

    /// Replicas held for the other nodes.
    pub fn replicas(&self, n: usize) {
        self.replicas.set(n as f64);
    }

    /// A ghost 2xx ACKed and ended with BYE.
    pub fn ghost_torn_down(&self) {
        self.ghosts_torn_down.increment(1);
    }

    /// INVITE received → first 18x relayed.
    pub fn post_dial_delay(&self, d: Duration) {
        self.post_dial_delay.record(d.as_secs_f64());
    }

    /// INVITE received → final response relayed.
    pub fn invite_final(&self, d: Duration) {
        self.invite_final.record(d.as_secs_f64());
    }

    /// A UDP datagram's time inside the node: kernel receive timestamp → its sends handed over.
    pub fn udp_transit(&self, d: Duration) {
        self.udp_transit.record(d.as_secs_f64());
    }

    /// Calls in progress changed by `delta` (+1 when a call starts, -1 when it ends); each
    /// worker reports its own changes.
    pub fn calls_in_progress(&self, delta: i64) {
        add(&self.calls_in_progress, delta);
    }

    /// Transactions in progress now (set when the metrics are scraped).
    pub fn set_transactions(&self, n: usize) {
        self.transactions.set(n as f64);
    }

    /// The node is now in `state`.
    pub fn node_state(&self, state: NodeState) {
        self.node_state.set(f64::from(state.code()));
    }

    /// `dest` is now in `state`.
    pub fn destination_state(&self, dest: DestId, state: State) {
        if let Some(d) = self.dest(dest) {
            d.state.set(f64::from(state.as_u8()));
        }
    }

    /// A new call skipped `dest` because it was at `cap`.
    pub fn capped(&self, dest: DestId, cap: Cap) {
        if let Some(d) = self.dest(dest) {
            d.capped[cap as usize].increment(1);
        }
    }

    /// Calls in progress at `dest` now (set when the metrics are scraped).
    pub fn destination_calls_in_progress(&self, dest: DestId, n: u32) {
        if let Some(d) = self.dest(dest) {
            d.calls_in_progress.set(f64::from(n));
        }
    }

    /// The round-trip time of the last successful probe of `dest`.
    pub fn probe_rtt(&self, dest: DestId, rtt: Duration) {
        if let Some(d) = self.dest(dest) {
            d.probe_rtt.set(rtt.as_secs_f64());
        }
    }

    /// A received message the scanner rejected, as its
    /// [`ScanError::kind`](crate::wire::ScanError::kind).
    pub fn parse_error(&self, kind: ParseErrorKind) {
        self.parse_errors[kind as usize].increment(1);
    }

    /// A received packet dropped without an answer.
    pub fn dropped(&self, reason: DropReason) {
        self.dropped[reason as usize].increment(1);
    }

    fn dest(&self, dest: DestId) -> Option<&DestHandles> {
        self.dests.get(dest.0 as usize)
    }
}

fn route_handles(r: &Registrar<'_>, route: &str) -> [Counter; CallOutcome::ALL.len()] {
    CallOutcome::ALL.map(|o| r.counter(name::CALLS, &[("route", route), ("outcome", o.as_str())]))
}

fn dest_handles(r: &Registrar<'_>, dest: &str) -> DestHandles {
    DestHandles {
        branch_attempts: r.counter(name::BRANCH_ATTEMPTS, &[("destination", dest)]),
        failovers: FailoverReason::ALL.map(|reason| {
            r.counter(
                name::FAILOVERS,
                &[("destination", dest), ("reason", reason.as_str())],
            )
        }),
        state: r.gauge(name::DEST_STATE, &[("destination", dest)]),
        probe_rtt: r.gauge(name::PROBE_RTT, &[("destination", dest)]),
        capped: Cap::ALL.map(|cap| {
            r.counter(
                name::DEST_CAPPED,
                &[("destination", dest), ("cap", cap.as_str())],
            )
        }),
        calls_in_progress: r.gauge(name::DEST_CALLS_IN_PROGRESS, &[("destination", dest)]),
    }
}

fn add(gauge: &Gauge, delta: i64) {
    if delta >= 0 {
        gauge.increment(delta as f64);
    } else {
        gauge.decrement(delta.unsigned_abs() as f64);
    }
}

fn method_index(m: Method) -> usize {
    match m {
        Method::Invite => 0,
        Method::Ack => 1,
        Method::Bye => 2,
        Method::Cancel => 3,
        Method::Options => 4,
        Method::Register => 5,
        Method::Prack => 6,
        Method::Update => 7,
        Method::Info => 8,
        Method::Subscribe => 9,
        Method::Notify => 10,
        Method::Refer => 11,
        Method::Message => 12,
        Method::Publish => 13,
        Method::Extension => 14,
    }
}

fn class_index(code: u16) -> Option<usize> {
    match code {
        100..=699 => Some(usize::from(code / 100 - 1)),
        _ => None,
    }
}

fn outcome_index(o: CallOutcome) -> usize {
    o as usize
}

/// The destination and route names of `router`, in config order: the labels
/// [`Metrics::register`] and [`Metrics::rebind`] take.
pub fn names(router: &routing_rules::Router) -> (Vec<&str>, Vec<&str>) {
    let rules = &router.rules;
    (
        rules.destinations.iter().map(|d| d.name.as_str()).collect(),
        rules.routes.iter().map(|r| r.name.as_str()).collect(),
    )
}
