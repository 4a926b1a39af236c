//! The proxy core (RFC 3261 §16), sans-IO: validation, Record-Route and loose routing, the
//! response context of each INVITE with serial failover, CANCEL, ghost-call teardown and
//! best-response choice.
//!
//! It is fed received bytes, timer expiries and delivery failures, each with `now`, and appends
//! [`Output`]s (bytes to send, timers to arm) for the driver to carry out in order. Order is part
//! of the contract: a CANCEL to a failed branch is always emitted before the INVITE to the next.
//! It holds its tables in `DashMap`s so every worker thread can feed it; each call is a
//! `Mutex<Call>` locked only after the table guard is dropped.
//!
//! It must not: touch sockets or clocks, or parse SIP bytes other than through `wire`.
//!
//! `Core` dispatches; each concern is a file of its own:
//!
//! - this file: the types the driver sees ([`Core`], [`Inbound`], [`Output`], [`CoreTimer`]), the
//!   tables, and the entry points (`on_message`, `on_timer`, `on_delivery_failure`, ...);
//! - `gate`: what a new request must pass (allow lists, rate limits, overload, caps);
//! - `requests`: requests from either side, new calls, ACK and CANCEL, transaction timers;
//! - `call`: `Call`, the per-INVITE state machine: it takes events and `now` and
//!   returns outputs (failover, CANCEL first, best response, the 2xx-or-ghost decision), which
//!   the core carries out;
//! - `responses`: responses matched to their client transaction, relayed or handed to a call;
//! - `ghosts`: the ACK and BYE that hang up a 2xx nobody wants;
//! - `forward`: the edits a proxied request gets;
//! - `relay` and `dialog`: in-dialog requests and the dialog keys;
//! - `calls`: the calls an operator lists and ends (`GET /calls`, `pointsman calls`);
//! - `sweep`: the bounded pass that forgets what is over and sizes the tables;
//! - `replicate`: a call's state as plain data ([`CallState`]), exported and restored;
//! - `cluster`: the pair: a message handed to the node that owns its call, the replicas the
//!   peers send, and a call adopted from its replica when its owner is down;
//! - `anchor`: anchored calls' SDP pointed at the media relay, what signalling tells the
//!   relay, and the BYEs of an answered call whose media stopped.

mod anchor;
mod call;
mod calls;
mod cluster;
mod dialog;
mod forward;
mod gate;
mod ghosts;
mod relay;
mod replicate;
mod requests;
mod responses;
mod sweep;
mod topology;

pub use call::{BranchStatus, CallPhase, CancelState};
pub use calls::{
    operator_reason, CallFilter, CallStage, CallSummary, OPERATOR_CAUSE, OPERATOR_REASON,
};
pub use forward::{forwarded, strip_top_via};
pub use replicate::{
    AnsweredInfoState, AnsweredState, BranchState, CallState, DialogId, PeerState, RestoreError,
    SetupState, TargetState,
};
pub use sweep::MAX_CALL_DURATION;
use topology::TopologyKey;

use crate::guard::{Acl, GuardConfig, RateLimiter};
use crate::health::{DestHealth, HealthView};
use crate::metrics::{DropReason, Metrics};
use crate::originate;
use crate::peer::{Peer, Proto};
use crate::table::{self, keys_in_shard, room, size_shard_for_load, KeyMap};
use crate::transaction::{
    ClientNonInvite, Delivery, ServerNonInvite, TimerConfig, TxAction, TxEvent, TxTimer,
};
use crate::transaction::{Keys, MethodClass, TxKey};
use crate::wire::{self, Framing, HeaderName, Limits, Message, Method, ScanError, StartLine};
use arc_swap::ArcSwap;
use bytes::Bytes;
use call::Call;
use routing_rules::{DestId, RequestUri, Router};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// Branch parameters pointsman writes start with this (after the magic cookie); the node id and
/// a loop-detection hash follow.
pub(crate) const BRANCH_PREFIX: &str = "z9hG4bK-ps";

/// What the branch of every health probe node `node_id` sends starts with: the node's own branch
/// prefix, so a probe's reply is handed to the node that sent it like any response of a pair,
/// and then `probe-`, so the core gives it to the prober ([`Output::ProbeReply`]) instead of
/// matching it to a transaction.
pub fn probe_branch_prefix(node_id: u16) -> String {
    format!("{BRANCH_PREFIX}{node_id:x}-probe-")
}

/// What the core is configured with (from `config::Config`).
#[derive(Clone, Debug)]
pub struct CoreConfig {
    pub node_id: u16,
    /// Host (IPv6 in brackets) written into Via and Record-Route.
    pub advertise_host: String,
    pub advertise_port: u16,
    /// Port written into Via and Record-Route for TLS legs (the first TLS listener's port);
    /// `None`: `advertise_port`.
    pub tls_port: Option<u16>,
    pub timers: TimerConfig,
    pub limits: Limits,
    /// Names of the listeners, by index (routing may match on them).
    pub listeners: Vec<String>,
    /// Allow lists, by listener index.
    pub acls: Vec<Acl>,
    /// Rate limits, scanner blocking, overload shedding, table caps; its `retry_after` is the
    /// Retry-After of pointsman's own 503s.
    pub guard: GuardConfig,
    /// The other nodes of the pair (`[cluster] peers`), by node id; empty for a node alone.
    pub peers: Vec<u16>,
    /// `[node] topology_key`: what the destination tokens of our Record-Route are keyed with
    /// (`None`: the built-in key).
    pub topology_key: Option<String>,
}

/// Everything indexed by `DestId`/`RouteId` of one rule set, swapped together on reload: the
/// compiled rules, their destinations' resolved addresses, the destinations' health as adopted
/// for these rules, and the metric handles bound to their names. A call keeps the snapshot it
/// started with.
pub struct Routing {
    pub router: Arc<Router>,
    pub addrs: Vec<SocketAddr>,
    pub health: HealthView,
    pub metrics: Metrics,
    /// The destinations' tokens in our Record-Route, filled in by the core that takes these
    /// rules ([`Core::new`], [`Core::set_routing`]).
    tokens: topology::DestTokens,
}

impl std::fmt::Debug for Routing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routing")
            .field("router", &self.router)
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}

impl Routing {
    /// One rule set's routing: its rules, their destinations' addresses (by `DestId`), their
    /// health and their metric handles.
    pub fn new(
        router: Arc<Router>,
        addrs: Vec<SocketAddr>,
        health: HealthView,
        metrics: Metrics,
    ) -> Routing {
        Routing {
            router,
            addrs,
            health,
            metrics,
            tokens: topology::DestTokens::default(),
        }
    }

    /// Whether `ip` is the address of one of these rules' destinations.
    pub fn is_destination(&self, ip: std::net::IpAddr) -> bool {
        self.addrs.iter().any(|a| a.ip() == ip)
    }

    /// Where to send to destination `id`.
    pub fn peer(&self, id: DestId) -> Peer {
        Peer {
            proto: proto_of(self.router.destination(id).transport),
            addr: self.addrs[id.0 as usize],
            conn: None,
        }
    }
}

/// A timer the driver must fire back into [`Core::on_timer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoreTimer {
    pub key: TxKey,
    pub kind: TimerKind,
}

impl CoreTimer {
    /// How late the driver may fire this timer, so that timers armed close together share one
    /// wake-up instead of waking a worker each. Timers that only end a window (absorbing
    /// retransmissions, forgetting what no message can need any more) take
    /// 100 ms (`WINDOW_SLACK`); retransmissions, timeouts and failover timers 20 ms
    /// (`PROMPT_SLACK`), a few percent of T1 and far below what a caller notices in a failover.
    pub fn slack(&self) -> Duration {
        let ends_a_window = match self.kind {
            TimerKind::Server(t) | TimerKind::Client(t) => matches!(
                t,
                TxTimer::D
                    | TxTimer::H
                    | TxTimer::I
                    | TxTimer::J
                    | TxTimer::K
                    | TxTimer::L
                    | TxTimer::M
            ),
            TimerKind::GhostExpire | TimerKind::Sweep => true,
            TimerKind::Provisional | TimerKind::Ring | TimerKind::CancelGiveUp => false,
        };
        if ends_a_window {
            WINDOW_SLACK
        } else {
            PROMPT_SLACK
        }
    }
}

/// See [`CoreTimer::slack`].
pub(crate) const WINDOW_SLACK: Duration = Duration::from_millis(100);
/// See [`CoreTimer::slack`].
pub(crate) const PROMPT_SLACK: Duration = Duration::from_millis(20);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerKind {
    /// A timer of the server transaction `key`.
    Server(TxTimer),
    /// A timer of the client transaction `key`.
    Client(TxTimer),
    /// The branch `key` had no provisional response in time.
    Provisional,
    /// The branch `key` rang for too long.
    Ring,
    /// Forget the ghost dialog `key`.
    GhostExpire,
    /// The periodic sweep of the dialog tables (one timer per core, not per call): answered
    /// dialogs whose 2xx can no longer be retransmitted, and answered calls older than
    /// [`MAX_CALL_DURATION`], are forgotten; tables are sized for what they hold.
    Sweep,
    /// 64·T1 after the branch `key` was cancelled: end it if no final response came.
    CancelGiveUp,
}

/// What the driver must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send bytes. If delivery fails, call [`Core::on_delivery_failure`] with `report`.
    Send {
        to: Peer,
        bytes: Bytes,
        report: Option<TxKey>,
    },
    Timer {
        at: Instant,
        timer: CoreTimer,
    },
    /// Hand a datagram that arrived here, as it arrived, to node `node`, which owns its call
    /// (over the node link).
    ToNode {
        node: u16,
        bytes: Bytes,
        from: SocketAddr,
        listener: usize,
    },
    /// Tell the other nodes where call `call_id` stands; `None`: it is over here. With
    /// `confirm`, the outputs after it wait until the other nodes have it (or the driver's
    /// short bound on that wait passes, or they are down).
    Replicate {
        call_id: Bytes,
        state: Option<Box<CallState>>,
        confirm: bool,
    },
    /// A reply to one of this node's health probes (its branch starts with
    /// [`probe_branch_prefix`]), as it arrived: for the prober, which sent the probe from a
    /// listener's socket.
    ProbeReply {
        bytes: Bytes,
    },
}

/// A received message.
#[derive(Clone, Copy, Debug)]
pub struct Inbound<'a> {
    pub bytes: &'a [u8],
    pub from: Peer,
    pub framing: Framing,
    /// Index of the listener it arrived on.
    pub listener: usize,
    /// The driver finds itself behind (its receive queue is filling up): shed new calls.
    pub overloaded: bool,
    /// It came over the node link from the node it landed on: handled here, never handed on.
    pub relayed: bool,
}

impl<'a> Inbound<'a> {
    /// A datagram from `from` on the first listener, the node not overloaded: what tests and
    /// benches feed the core.
    pub fn datagram(bytes: &'a [u8], from: SocketAddr) -> Inbound<'a> {
        Inbound {
            bytes,
            from: Peer::udp(from),
            framing: Framing::Datagram,
            listener: 0,
            overloaded: false,
            relayed: false,
        }
    }
}

enum ServerEntry {
    Call(Arc<Mutex<Call>>),
    Relay(Arc<Mutex<Relay>>),
    /// A request answered with a final response (by pointsman itself, like a CANCEL, or relayed,
    /// like a BYE), kept to answer its retransmissions.
    Local(Arc<Mutex<LocalAnswer>>),
    /// An INVITE answered 2xx whose call has settled: kept only so its retransmissions are
    /// absorbed (RFC 6026 Accepted) until Timer L. What is left of the call is the
    /// [`ClientEntry::Accepted`] of its answering branch.
    Accepted,
}

impl Clone for ServerEntry {
    fn clone(&self) -> Self {
        match self {
            ServerEntry::Call(c) => ServerEntry::Call(c.clone()),
            ServerEntry::Relay(r) => ServerEntry::Relay(r.clone()),
            ServerEntry::Local(l) => ServerEntry::Local(l.clone()),
            ServerEntry::Accepted => ServerEntry::Accepted,
        }
    }
}

#[derive(Clone)]
enum ClientEntry {
    /// Branch `usize` of an INVITE call.
    Branch(Arc<Mutex<Call>>, usize),
    Relay(Arc<Mutex<Relay>>),
    /// A request pointsman originated (CANCEL, ghost BYE): responses are absorbed.
    Own(Arc<Mutex<OwnRequest>>),
    /// The answering branch of a settled call, until Timer M: retransmissions of its 2xx are
    /// relayed to this peer (the caller), anything else is absorbed.
    Accepted(Peer),
}

struct LocalAnswer {
    tx: ServerNonInvite,
    to: Peer,
}

struct OwnRequest {
    tx: ClientNonInvite,
    to: Peer,
}

/// A non-INVITE request relayed on one branch (BYE, INFO, UPDATE, ... in a dialog).
struct Relay {
    server: ServerNonInvite,
    /// The server transaction's key: its timers come back under it.
    server_key: TxKey,
    upstream: Peer,
    client: Option<crate::transaction::ClientNonInvite>,
    client_key: TxKey,
    downstream: Peer,
    /// For BYE: the dialog it ends.
    ends_dialog: Option<u64>,
    /// Counted in `Core::in_progress` (until it is settled).
    counted: bool,
    request: Bytes,
    to_tag: String,
    /// An UPDATE (or other request with SDP) in an anchored dialog.
    media: Option<anchor::DialogMedia>,
}

/// Whether a response can go on towards the caller: it has a Via after ours, and it parses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Relayable {
    Yes,
    No,
}

/// Where a request goes next, and how.
#[derive(Clone, Copy, Debug)]
struct Hop {
    peer: Peer,
    dest: Option<DestId>,
}

/// The proxy core. Cheap to share: `Arc<Core>` between workers.
pub struct Core {
    cfg: CoreConfig,
    routing: ArcSwap<Routing>,
    keys: Keys,
    advertised: Advertised,
    servers: KeyMap<ServerEntry>,
    clients: KeyMap<ClientEntry>,
    dialogs: dialog::Dialogs,
    ghosts: KeyMap<()>,
    /// Answered calls until their BYE (or [`MAX_CALL_DURATION`]): what draining waits for.
    answered: KeyMap<Answered>,
    branch_seq: AtomicU64,
    /// [`probe_branch_prefix`] of this node.
    probe_branch: String,
    /// What destination tokens are made with.
    topology: TopologyKey,
    /// A [`TimerKind::Sweep`] is armed in some worker's wheel.
    sweep_armed: AtomicBool,
    /// Where the sweep's pass goes on at its next step (see [`SWEEP_UNITS`]); 0 between passes.
    sweep_next: AtomicUsize,
    /// Calls being set up (not yet compacted or reaped) and requests being relayed (no final
    /// yet): what `[guard] max_transactions` caps. Tombstones that only absorb retransmissions
    /// are not counted; there are at most the call rate × 64·T1 of them.
    in_progress: AtomicUsize,
    /// New calls whose caller has no final answer yet: what a stopping node waits for.
    in_setup: AtomicUsize,
    /// The node is stopping: new INVITEs are refused (see [`Core::stop_taking_calls`]).
    stopping: AtomicBool,
    /// Per-source limit of sources that are neither allowed nor destinations.
    limiter: RateLimiter,
    /// Per-source limit of allowed sources and destinations (`[guard] allowed_rate`); none by
    /// default.
    allowed_limiter: Option<RateLimiter>,
    /// Feeds each new call's routing entropy (weighted groups).
    entropy_seq: AtomicU64,
    /// The media relay anchored calls use (see [`Core::set_media`]).
    media: std::sync::OnceLock<Arc<crate::media::MediaPlane>>,
    /// Answered anchored calls: the call's key (their media events' token) → the dialog key.
    media_dialogs: KeyMap<u64>,
    /// The pair, when this node is one of two.
    cluster: Option<cluster::Cluster>,
}

/// Why the gate turned a request away.
enum Refusal {
    /// Dropped without an answer.
    Drop(DropReason),
    /// Answered 503 with Retry-After (counted as dropped for this reason).
    Busy(DropReason),
}

/// An answered call, until its BYE.
struct Answered {
    /// The destination that answered (its health counts calls in progress).
    dest: Option<Arc<DestHealth>>,
    since: Instant,
    /// Where the INVITE came from, where the answer came from, and the caller's From tag
    /// ([`Core::tag_key`]): an in-dialog request that carries no Route of ours (a peer that
    /// dropped the Record-Route set) still follows its dialog.
    caller: Peer,
    callee: Peer,
    caller_tag: u64,
    /// An anchored call's media session (closed when the call ends).
    media: Option<anchor::AnsweredMedia>,
    /// What the operator's list shows and what ending the call needs (one allocation of a few
    /// hundred bytes), replicated with the call; `None` when it could not be captured: the call
    /// is then neither listed nor ended by the operator.
    info: Option<calls::AnsweredInfo>,
    /// The highest CSeq of the requests relayed in the dialog from the caller (the INVITE's at
    /// first) and from the callee (0 at first): a BYE of pointsman's own goes one above.
    cseq: [u32; 2],
}

impl Core {
    /// A core started at `now`. `seed` starts its branch and routing-entropy sequences: give
    /// each process a different one (two nodes with one seed would write the same branches).
    pub fn new(cfg: CoreConfig, mut routing: Routing, now: Instant, seed: u64) -> Core {
        let start = seed >> 16;
        let topology = TopologyKey::new(cfg.topology_key.as_deref());
        routing.tokens = topology::DestTokens::new(&routing.router, &topology);
        let cluster = (!cfg.peers.is_empty())
            .then(|| cluster::Cluster::new(&cfg.peers, cluster::DEFAULT_MAX_REPLICAS));
        Core {
            limiter: RateLimiter::for_unlisted(&cfg.guard, now),
            allowed_limiter: RateLimiter::for_allowed(&cfg.guard, now),
            advertised: Advertised::new(&cfg),
            probe_branch: probe_branch_prefix(cfg.node_id),
            topology,
            cfg,
            routing: ArcSwap::from_pointee(routing),
            keys: Keys::new(),
            servers: table::new_table(),
            clients: table::new_table(),
            dialogs: dialog::Dialogs::default(),
            ghosts: table::new_table(),
            branch_seq: AtomicU64::new(start),
            sweep_armed: AtomicBool::new(false),
            sweep_next: AtomicUsize::new(0),
            in_progress: AtomicUsize::new(0),
            in_setup: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            entropy_seq: AtomicU64::new(start.rotate_left(29)),
            answered: table::new_table(),
            media: std::sync::OnceLock::new(),
            media_dialogs: table::new_table(),
            cluster,
        }
    }

    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }

    /// Replaces the rule set; calls in progress keep the snapshot they started with.
    pub fn set_routing(&self, mut routing: Routing) {
        routing.tokens = topology::DestTokens::new(&routing.router, &self.topology);
        self.routing.store(Arc::new(routing));
    }

    pub fn routing(&self) -> Arc<Routing> {
        self.routing.load_full()
    }

    /// The metric handles of the current rules (counters without a destination or route label
    /// are the same series in every snapshot). Borrowed, not cloned: this is on every message.
    fn metrics(&self) -> CurrentMetrics {
        CurrentMetrics(self.routing.load())
    }

    /// Records UDP datagrams' times inside the node (measured by the driver, which has the
    /// kernel's receive timestamps and the moment it hands the results back).
    pub fn record_udp_transits(&self, transits: impl IntoIterator<Item = Duration>) {
        let metrics = self.metrics();
        for d in transits {
            metrics.udp_transit(d);
        }
    }

    /// Answered calls held right now (calls in progress after setup).
    pub fn answered_calls(&self) -> usize {
        self.answered.len()
    }

    /// Entries the core's tables have room for: what their memory follows (tables shrink at
    /// the sweep after they empty out).
    pub fn table_room(&self) -> usize {
        room(&self.servers)
            + room(&self.clients)
            + room(&self.answered)
            + room(&self.ghosts)
            + self.dialogs.room()
    }

    /// Transactions in progress (see `in_progress`) right now.
    pub fn transactions_in_progress(&self) -> usize {
        self.in_progress.load(Ordering::Relaxed)
    }

    /// A call or relay started (`true`) or stopped (`false`) counting as in progress.
    pub(super) fn count_in_progress(&self, started: bool) {
        if started {
            self.in_progress.fetch_add(1, Ordering::Relaxed);
        } else {
            self.in_progress.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// From now on new INVITEs get 503 with Retry-After; everything of the calls in progress
    /// goes on. For a node that is stopping: there is no way back.
    pub fn stop_taking_calls(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Whether [`stop_taking_calls`](Self::stop_taking_calls) was called.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// New calls whose caller has no final answer yet.
    pub fn calls_in_setup(&self) -> usize {
        self.in_setup.load(Ordering::Acquire)
    }

    /// A new call started (`true`) or got its final answer (`false`).
    pub(super) fn count_in_setup(&self, started: bool) {
        if started {
            self.in_setup.fetch_add(1, Ordering::AcqRel);
        } else {
            self.in_setup.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Transactions and calls held right now (for tests and gauges).
    pub fn table_sizes(&self) -> (usize, usize, usize) {
        (self.servers.len(), self.clients.len(), self.dialogs.len())
    }

    // ---- entry points ------------------------------------------------------------------------

    /// A message arrived.
    pub fn on_message(&self, inb: Inbound<'_>, now: Instant, out: &mut Vec<Output>) {
        if !self.admits(inb) {
            // No reply: nothing tells a scanner it found a SIP server.
            self.metrics().dropped(DropReason::Acl);
            return;
        }
        if inb.framing == Framing::Datagram && wire::is_keepalive(inb.bytes) {
            return;
        }
        match wire::scan(inb.bytes, inb.framing, &self.cfg.limits) {
            Ok(msg) if self.is_probe_reply(&msg) => out.push(Output::ProbeReply {
                bytes: Bytes::copy_from_slice(inb.bytes),
            }),
            Ok(msg) if self.to_owner(&msg, inb, now, out) => {}
            Ok(msg) if msg.is_request() => {
                if let Some(method) = msg.method() {
                    self.metrics().request(method);
                }
                let mark = out.len();
                self.on_request(&msg, inb, now, out);
                self.replicate_after(&msg, now, mark, out);
            }
            Ok(msg) => {
                if let Some(code) = msg.code() {
                    self.metrics().response_in(code);
                }
                let mark = out.len();
                self.on_response(&msg, inb.from, now, out);
                self.replicate_after(&msg, now, mark, out);
            }
            Err(e) => self.on_malformed(inb, &e, out),
        }
    }

    /// Whether `msg` answers one of this node's health probes.
    fn is_probe_reply(&self, msg: &Message<'_>) -> bool {
        !msg.is_request()
            && msg.cseq_method == Method::Options
            && msg
                .top_via
                .branch
                .is_some_and(|b| msg.slice(b).starts_with(self.probe_branch.as_bytes()))
    }

    /// A timer armed through [`Output::Timer`] fired.
    pub fn on_timer(&self, timer: CoreTimer, now: Instant, out: &mut Vec<Output>) {
        let mark = out.len();
        match timer.kind {
            TimerKind::Server(t) => self.on_server_timer(timer.key, t, now, out),
            TimerKind::Client(t) => self.on_client_timer(timer.key, t, now, out),
            TimerKind::Provisional | TimerKind::Ring => {
                if let Some(ClientEntry::Branch(call, i)) = self.client(timer.key) {
                    let mut c = lock(&call);
                    self.on_branch_timer(&mut c, &call, i, timer.kind, now, out);
                }
            }
            TimerKind::GhostExpire => {
                self.ghosts.remove(&timer.key);
            }
            TimerKind::Sweep => self.sweep(now, out),
            TimerKind::CancelGiveUp => {
                if let Some(ClientEntry::Branch(call, i)) = self.client(timer.key) {
                    self.on_cancel_give_up(&mut lock(&call), i);
                }
            }
        }
        if self.is_clustered() && !matches!(timer.kind, TimerKind::GhostExpire | TimerKind::Sweep) {
            let call = match (self.client(timer.key), self.server(timer.key)) {
                (Some(ClientEntry::Branch(call, _)), _) => Some(call),
                (_, Some(ServerEntry::Call(call))) => Some(call),
                _ => None,
            };
            if let Some(call) = call {
                self.replicate_call(&call, now, mark, out);
            }
        }
    }

    /// A send tagged with `report` could not be delivered (connect refused, reset, write error).
    pub fn on_delivery_failure(&self, report: TxKey, now: Instant, out: &mut Vec<Output>) {
        match self.client(report) {
            Some(ClientEntry::Branch(call, i)) => {
                let mut c = lock(&call);
                self.on_branch_transport_error(&mut c, &call, i, now, out);
            }
            Some(ClientEntry::Relay(relay)) => {
                let mut r = lock(&relay);
                if let Some(tx) = r.client.as_mut() {
                    if tx.on_transport_error() == TxEvent::Timeout {
                        self.relay_local_final(&mut r, 503, now, out);
                    }
                }
            }
            Some(ClientEntry::Own(own)) => {
                lock(&own).tx.on_transport_error();
                self.clients.remove(&report);
            }
            Some(ClientEntry::Accepted(_)) => {}
            None => self.on_response_undeliverable(report, now, out),
        }
    }

    /// A response to the server transaction `key` could not be delivered (its connection is
    /// gone and no new one could be made): §17.2.4, the transaction ends. A call still being
    /// set up has lost its caller: every branch is cancelled, none starts again. An answered
    /// call is left to its callee, which ends it with BYE when its 2xx is never ACKed
    /// (§13.3.1.4). A relayed request's transaction is forgotten.
    fn on_response_undeliverable(&self, key: TxKey, now: Instant, out: &mut Vec<Output>) {
        match self.server(key) {
            Some(ServerEntry::Call(call)) => {
                let mut c = lock(&call);
                if c.server.on_transport_error() == TxEvent::None {
                    return;
                }
                debug!("a response could not reach the caller: the call is given up");
                self.caller_unreachable(&mut c, &call, now, out);
                self.reap_if_done(&mut c);
            }
            Some(ServerEntry::Relay(relay)) => {
                let mut r = lock(&relay);
                if r.server.on_transport_error() != TxEvent::None {
                    self.servers.remove(&key);
                    self.clients.remove(&r.client_key);
                    self.stop_counting_relay(&mut r);
                }
            }
            Some(ServerEntry::Local(_)) => {
                self.servers.remove(&key);
            }
            Some(ServerEntry::Accepted) | None => {}
        }
    }

    /// An ICMP error came back for a datagram pointsman sent: `payload` is (the start of) that
    /// datagram. Requests are matched to their client transaction by their own Via branch.
    pub fn on_udp_unreachable(&self, payload: &[u8], now: Instant, out: &mut Vec<Output>) {
        // The kernel quotes at most ~520 bytes of the datagram: the top Via is all we need.
        let Some(bounced) = wire::bounced_request(payload) else {
            return;
        };
        let key = self
            .keys
            .client(bounced.branch.get(payload), MethodClass::of(bounced.method));
        self.on_delivery_failure(key, now, out);
    }
}

/// A scanned request's headers, for `match.header` conditions.
pub(super) struct MessageHeaders<'m>(pub &'m Message<'m>);

impl routing_rules::Headers for MessageHeaders<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        let h = self.0.header_by_name(name.as_bytes())?;
        std::str::from_utf8(self.0.slice(h.value))
            .ok()
            .map(str::trim)
    }
}

// ---- helpers -------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Server,
    Client,
}

/// Turns transaction actions into outputs toward `to`.
fn emit(
    out: &mut Vec<Output>,
    acts: &mut Vec<TxAction>,
    to: Peer,
    key: TxKey,
    side: Side,
    report: Option<TxKey>,
) {
    out.extend(acts.drain(..).map(|a| tx_output(a, to, key, side, report)));
}

/// One transaction action as the driver's output: a send toward `to`, or a timer under `key`.
fn tx_output(a: TxAction, to: Peer, key: TxKey, side: Side, report: Option<TxKey>) -> Output {
    match a {
        // A server transaction's sends report under its own key: a response that cannot reach
        // the caller ends it (RFC 3261 §17.2.4).
        TxAction::Send(bytes) => Output::Send {
            to,
            bytes,
            report: match side {
                Side::Server => Some(key),
                Side::Client => report,
            },
        },
        TxAction::Arm(t, at) => Output::Timer {
            at,
            timer: CoreTimer {
                key,
                kind: match side {
                    Side::Server => TimerKind::Server(t),
                    Side::Client => TimerKind::Client(t),
                },
            },
        },
    }
}

fn send(out: &mut Vec<Output>, to: Peer, bytes: Bytes) {
    out.push(Output::Send {
        to,
        bytes,
        report: None,
    });
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take every later call down with it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What pointsman writes about itself into Via and Record-Route, per transport, built once.
struct Advertised {
    /// `SIP/2.0/UDP host:port`, by [`Proto`].
    via: [String; 3],
    /// `<sip:host:port;transport=tcp;lr;psn=<node>;psd=`, by [`Proto`]: the destination's token
    /// (`topology`), `;ftag=<tag>` and `>` follow.
    record_route: [String; 3],
}

impl Advertised {
    fn new(cfg: &CoreConfig) -> Advertised {
        let for_proto = |proto: Proto| {
            // TLS legs name the TLS listener's port.
            let port = match (proto, cfg.tls_port) {
                (Proto::Tls, Some(port)) => port,
                _ => cfg.advertise_port,
            };
            let host_port = format!("{}:{port}", cfg.advertise_host);
            (
                format!("SIP/2.0/{} {host_port}", proto.via_token()),
                format!(
                    "<sip:{host_port}{};lr;psn={};psd=",
                    proto.uri_param(),
                    cfg.node_id
                ),
            )
        };
        let [udp, tcp, tls] = [Proto::Udp, Proto::Tcp, Proto::Tls].map(for_proto);
        Advertised {
            via: [udp.0, tcp.0, tls.0],
            record_route: [udp.1, tcp.1, tls.1],
        }
    }

    fn index(proto: Proto) -> usize {
        match proto {
            Proto::Udp => 0,
            Proto::Tcp => 1,
            Proto::Tls => 2,
        }
    }

    fn via(&self, proto: Proto) -> &str {
        &self.via[Self::index(proto)]
    }

    fn record_route(&self, proto: Proto) -> &str {
        &self.record_route[Self::index(proto)]
    }
}

/// Appends `n` in lower-case hex, zero-padded to at least `width` digits (at most 16).
fn push_hex(out: &mut String, n: u64, width: usize) {
    let width = width.min(16);
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 16];
    let mut i = buf.len();
    let mut rest = n;
    loop {
        i -= 1;
        buf[i] = DIGITS[(rest & 0xf) as usize];
        rest >>= 4;
        if rest == 0 && buf.len() - i >= width {
            break;
        }
    }
    out.extend(buf[i..].iter().map(|&b| b as char));
}

/// Writes `n` in decimal into `buf`; returns the digits written.
fn write_decimal(buf: &mut [u8; 3], n: u8) -> &[u8] {
    let mut i = buf.len();
    let mut rest = n;
    loop {
        i -= 1;
        buf[i] = b'0' + rest % 10;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    &buf[i..]
}

/// The current rules' metric handles, borrowed from the routing snapshot.
struct CurrentMetrics(arc_swap::Guard<Arc<Routing>>);

impl std::ops::Deref for CurrentMetrics {
    type Target = Metrics;
    fn deref(&self) -> &Metrics {
        &self.0.metrics
    }
}

/// The To tag pointsman uses in its own responses to the transaction `key`.
fn local_tag(key: TxKey) -> String {
    format!("ps{:x}", key as u32)
}

/// A URI pointsman wrote into a Record-Route (it carries our `psn` parameter).
fn is_own_uri(uri: &[u8]) -> bool {
    memchr::memmem::find(uri, b";psn=").is_some()
}

fn proto_of(t: routing_rules::spec::TransportSpec) -> Proto {
    match t {
        routing_rules::spec::TransportSpec::Udp => Proto::Udp,
        routing_rules::spec::TransportSpec::Tcp => Proto::Tcp,
        routing_rules::spec::TransportSpec::Tls => Proto::Tls,
    }
}

/// The delay a Retry-After header asks for (`Retry-After: 30 (busy);duration=60` → 30 s).
fn retry_after(msg: &Message<'_>) -> Option<Duration> {
    let value = msg.slice(msg.header(HeaderName::RetryAfter)?.value);
    let digits = value.iter().take_while(|b| b.is_ascii_digit()).count();
    let secs: u64 = std::str::from_utf8(&value[..digits]).ok()?.parse().ok()?;
    Some(Duration::from_secs(secs))
}

/// The `?headers` part of a request's Request-URI, if it has one. RFC 3261 §19.1.5 lets only
/// a URI that builds a request carry headers; one in a Request-URI (RFC 4475 §3.1.2.12) would
/// let a sender inject headers (a Route, say) at the next hop that interprets them, so
/// pointsman forwards the request without them.
fn request_uri_headers(msg: &Message<'_>) -> Option<wire::Span> {
    let StartLine::Request { uri, .. } = msg.start else {
        return None;
    };
    let parsed = wire::parse_uri(msg.buf, uri).ok()?;
    if !matches!(parsed.scheme, wire::UriScheme::Sip | wire::UriScheme::Sips) {
        return None;
    }
    let params = msg.slice(parsed.params);
    let q = memchr::memchr(b'?', params)?;
    Some(wire::Span::new(
        parsed.params.start as usize + q,
        parsed.params.end as usize,
    ))
}

/// An IP literal host (IPv6 with or without brackets) and port as a socket address.
fn socket_addr(host: &[u8], port: u16) -> Option<SocketAddr> {
    let host = std::str::from_utf8(host).ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = host.parse().ok()?;
    Some(SocketAddr::new(ip, port))
}

/// Why a request failed the checks before pointsman proxies or answers it (RFC 3261 §16.3,
/// §8.2.2); the error response is derived from it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Rejection {
    /// The Request-URI does not parse: 400.
    BadRequestUri,
    /// A Request-URI whose scheme is not sip, sips or tel: 416.
    UnsupportedUriScheme,
    /// A `Require` or `Proxy-Require` option tag, none of which pointsman supports: 420, with
    /// the tags (line ends blanked) echoed in `Unsupported` (§8.2.2.3).
    BadExtension { tags: String },
    /// Our own Via with this request's loop hash: it came back unchanged (§16.3 step 4): 482.
    LoopDetected,
    /// `Max-Forwards: 0`: 483.
    TooManyHops,
}

impl Rejection {
    fn bad_extension(tags: &[u8]) -> Rejection {
        Rejection::BadExtension {
            tags: String::from_utf8_lossy(tags).replace(['\r', '\n'], " "),
        }
    }

    fn code(&self) -> u16 {
        match self {
            Rejection::BadRequestUri => 400,
            Rejection::UnsupportedUriScheme => 416,
            Rejection::BadExtension { .. } => 420,
            Rejection::LoopDetected => 482,
            Rejection::TooManyHops => 483,
        }
    }

    /// The reason phrase, from the one table of pointsman's phrases.
    fn reason(&self) -> &'static str {
        originate::reason_phrase(self.code())
    }

    /// Header lines the response carries besides the usual ones (each ending in CRLF).
    fn extra_headers(&self) -> String {
        match self {
            Rejection::BadExtension { tags } => format!("Unsupported: {tags}\r\n"),
            _ => String::new(),
        }
    }
}

#[cfg(test)]
mod tests;
