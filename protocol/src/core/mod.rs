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

mod call;
mod dialog;
mod replicate;

pub use call::{BranchStatus, CallPhase, CancelState};
pub use replicate::{
    AnsweredState, BranchState, CallState, DialogId, PeerState, RestoreError, SetupState,
    TargetState,
};

use crate::guard::{Acl, GuardConfig, RateLimiter};
use crate::health::{DestHealth, HealthView};
use crate::metrics::{DropReason, Metrics};
use crate::originate;
use crate::peer::{Peer, Proto};
use crate::table::{self, keys_in_shard, room, size_shard_for_load, KeyMap};
use crate::transaction::key::{Keys, MethodClass, TxKey};
use crate::transaction::{
    ClientNonInvite, Delivery, ServerNonInvite, TimerConfig, TxAction, TxEvent, TxTimer,
};
use crate::wire::{self, Framing, HeaderName, Limits, Message, Method, ScanError, StartLine};
use arc_swap::ArcSwap;
use bytes::Bytes;
use call::Call;
use routing_rules::{DestId, Router};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// Branch parameters pointsman writes start with this (after the magic cookie); the node id and
/// a loop-detection hash follow.
pub const BRANCH_PREFIX: &str = "z9hG4bK-ps";

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
    /// [`WINDOW_SLACK`]; retransmissions, timeouts and failover timers [`PROMPT_SLACK`], a few
    /// percent of T1 and far below what a caller notices in a failover.
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
pub const WINDOW_SLACK: Duration = Duration::from_millis(100);
/// See [`CoreTimer::slack`].
pub const PROMPT_SLACK: Duration = Duration::from_millis(20);

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
}

/// An answered call whose BYE never passed through pointsman is forgotten after this long, so
/// the table of calls in progress cannot grow without bound.
pub const MAX_CALL_DURATION: Duration = Duration::from_secs(12 * 3600);

/// How often a pass of [`TimerKind::Sweep`] starts while the core holds anything.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// The tables a sweep pass walks, in this order: servers, clients, answered calls, ghosts,
/// dialogs (see [`Core::sweep_unit`]).
const SWEPT_TABLES: usize = 5;

/// What a sweep pass walks: every shard of every swept table, a unit each.
const SWEEP_UNITS: usize = SWEPT_TABLES * table::SHARDS;

/// A sweep step goes on to the next unit until it has done this much work, then lets the
/// worker's messages in. Work is entries moved (a shard resized: 0.1–0.5 µs each on the
/// project's VM, cache-cold) plus a sixteenth of the entries only read. Done at once, a pass
/// over a core whose tables were growing stopped the worker for 31 ms at 1,000 calls/s and
/// 59 ms at 7,700; in steps, the longest took 1.4 and 2.4 ms (`benches/pauses.rs`). A step does
/// at most one shard past this budget. An idle or lightly loaded core does its pass in one
/// step.
const SWEEP_STEP_WORK: usize = 1024;

/// Between the steps of one pass.
const SWEEP_STEP: Duration = Duration::from_millis(20);

/// The core's sweep timer, due at `at`.
fn sweep_at(at: Instant) -> Output {
    Output::Timer {
        at,
        timer: CoreTimer {
            key: 0,
            kind: TimerKind::Sweep,
        },
    }
}

impl Core {
    /// A core started at `now`. `seed` starts its branch and routing-entropy sequences: give
    /// each process a different one (two nodes with one seed would write the same branches).
    pub fn new(cfg: CoreConfig, routing: Routing, now: Instant, seed: u64) -> Core {
        let start = seed >> 16;
        Core {
            limiter: RateLimiter::for_unlisted(&cfg.guard, now),
            allowed_limiter: RateLimiter::for_allowed(&cfg.guard, now),
            advertised: Advertised::new(&cfg),
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
        }
    }

    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }

    /// Replaces the rule set; calls in progress keep the snapshot they started with.
    pub fn set_routing(&self, routing: Routing) {
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

    /// The answered call `key` is over (its BYE was answered, or it expired): stop counting it.
    fn call_ended(&self, key: u64) {
        if let Some((_, call)) = self.answered.remove(&key) {
            self.metrics().calls_in_progress(-1);
            if let Some(dest) = call.dest {
                dest.call_ended();
            }
        }
    }

    /// Makes sure a [`TimerKind::Sweep`] is armed.
    pub(super) fn arm_sweep(&self, now: Instant, out: &mut Vec<Output>) {
        if !self.sweep_armed.swap(true, Ordering::AcqRel) {
            out.push(sweep_at(now + SWEEP_EVERY));
        }
    }

    /// One step of the sweep's pass over the tables, shard by shard: forgets answered dialogs
    /// past twice the 2xx retransmission window and answered calls past
    /// [`MAX_CALL_DURATION`], and sizes each shard for what it holds. A step ends once it has
    /// done [`SWEEP_STEP_WORK`] and the pass goes on [`SWEEP_STEP`] later; a finished pass
    /// starts again [`SWEEP_EVERY`] later while anything is held.
    fn sweep(&self, now: Instant, out: &mut Vec<Output>) {
        let dialog_cutoff = now.checked_sub(self.cfg.timers.t1x64() * 2);
        let call_cutoff = now.checked_sub(MAX_CALL_DURATION);
        let mut unit = self.sweep_next.load(Ordering::Acquire);
        let mut work = 0;
        while unit < SWEEP_UNITS && work < SWEEP_STEP_WORK {
            let (read, moved) = self.sweep_unit(unit, dialog_cutoff, call_cutoff);
            work += moved + read / 16;
            unit += 1;
        }
        if unit < SWEEP_UNITS {
            self.sweep_next.store(unit, Ordering::Release);
            out.push(sweep_at(now + SWEEP_STEP));
            return;
        }
        self.sweep_next.store(0, Ordering::Release);
        self.sweep_armed.store(false, Ordering::Release);
        let held = !(self.servers.is_empty()
            && self.clients.is_empty()
            && self.answered.is_empty()
            && self.dialogs.len() == 0);
        if held {
            self.arm_sweep(now, out);
        }
    }

    /// Sweeps one shard of one table (unit `unit` of [`SWEEP_UNITS`]); returns the entries it
    /// only read and the entries it moved.
    fn sweep_unit(
        &self,
        unit: usize,
        dialog_cutoff: Option<Instant>,
        call_cutoff: Option<Instant>,
    ) -> (usize, usize) {
        let shard = unit % table::SHARDS;
        match unit / table::SHARDS {
            0 => (0, size_shard_for_load(&self.servers, shard)),
            1 => (0, size_shard_for_load(&self.clients, shard)),
            2 => (
                self.end_overdue_calls(shard, call_cutoff),
                size_shard_for_load(&self.answered, shard),
            ),
            3 => (0, size_shard_for_load(&self.ghosts, shard)),
            _ => self.dialogs.sweep_shard(shard, dialog_cutoff),
        }
    }

    /// Ends the answered calls of shard `shard` that began at or before `cutoff` (none when
    /// the clock is younger than [`MAX_CALL_DURATION`]); returns the entries it read.
    fn end_overdue_calls(&self, shard: usize, cutoff: Option<Instant>) -> usize {
        let Some(cutoff) = cutoff else { return 0 };
        let (overdue, read) = keys_in_shard(&self.answered, shard, |c| c.since <= cutoff);
        for key in overdue {
            self.call_ended(key);
        }
        read
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
            Ok(msg) if msg.is_request() => {
                if let Some(method) = msg.method() {
                    self.metrics().request(method);
                }
                self.on_request(&msg, inb, now, out)
            }
            Ok(msg) => {
                if let Some(code) = msg.code() {
                    self.metrics().response_in(code);
                }
                self.on_response(&msg, inb.from, now, out)
            }
            Err(e) => self.on_malformed(inb, &e, out),
        }
    }

    /// A timer armed through [`Output::Timer`] fired.
    pub fn on_timer(&self, timer: CoreTimer, now: Instant, out: &mut Vec<Output>) {
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

    // ---- the gate ----------------------------------------------------------------------------

    /// Whether the listener takes packets from this source: its allow list, or the address of
    /// a destination (whose responses and in-dialog requests must always get in).
    fn admits(&self, inb: Inbound<'_>) -> bool {
        let ip = inb.from.addr.ip();
        match self.cfg.acls.get(inb.listener) {
            Some(acl) if !acl.admits(ip) => self.routing.load().is_destination(ip),
            _ => true,
        }
    }

    /// The checks on a request that would start something new (out of dialog): scanners are
    /// dropped; a source over its rate is refused: allowed sources and destinations (limited
    /// only when `[guard] allowed_rate` is set) always get 503 + Retry-After, never silence;
    /// any other source's excess (a flood: the default rate is above any trunk) is dropped.
    /// New INVITEs are shed with 503 while the node is overloaded, its tables are full or it
    /// is stopping. In-dialog requests, ACK, CANCEL and responses never come here: calls in
    /// progress go on.
    fn gate_new_request(
        &self,
        msg: &Message<'_>,
        method: Method,
        inb: Inbound<'_>,
        now: Instant,
    ) -> Result<(), Refusal> {
        if let Some(ua) = msg.header_by_name(b"User-Agent") {
            if self.cfg.guard.is_scanner(msg.slice(ua.value)) {
                return Err(Refusal::Drop(DropReason::Scanner));
            }
        }
        let ip = inb.from.addr.ip();
        let allowed = self
            .cfg
            .acls
            .get(inb.listener)
            .is_some_and(|acl| acl.lists(ip))
            || self.routing.load().is_destination(ip);
        let limiter = if allowed {
            self.allowed_limiter.as_ref()
        } else {
            Some(&self.limiter)
        };
        if limiter.is_some_and(|l| !l.take(ip, now)) {
            return Err(if allowed {
                Refusal::Busy(DropReason::RateLimit)
            } else {
                Refusal::Drop(DropReason::RateLimit)
            });
        }
        let full = self.in_progress.load(Ordering::Relaxed) >= self.cfg.guard.max_transactions
            || self.answered.len() >= self.cfg.guard.max_calls;
        if method == Method::Invite && (inb.overloaded || full) {
            return Err(Refusal::Busy(DropReason::Overload));
        }
        if method == Method::Invite && self.is_stopping() {
            return Err(Refusal::Busy(DropReason::Stopping));
        }
        Ok(())
    }

    // ---- requests ----------------------------------------------------------------------------

    fn on_request(&self, msg: &Message<'_>, inb: Inbound<'_>, now: Instant, out: &mut Vec<Output>) {
        let Some(method) = msg.method() else { return };
        match method {
            Method::Ack => return self.on_ack(msg, now, out),
            Method::Cancel => return self.on_cancel(msg, inb.from, now, out),
            _ => {}
        }
        let key = self.keys.server(msg);
        if let Some(entry) = self.server(key) {
            return self.on_retransmission(entry, out);
        }
        let in_dialog = msg.to.tag.is_some();
        if !in_dialog {
            if let Err(refusal) = self.gate_new_request(msg, method, inb, now) {
                return match refusal {
                    Refusal::Drop(reason) => self.metrics().dropped(reason),
                    Refusal::Busy(reason) => {
                        self.metrics().dropped(reason);
                        let extra =
                            format!("Retry-After: {}\r\n", self.cfg.guard.retry_after.as_secs());
                        let resp = originate::response(
                            msg,
                            503,
                            "Service Unavailable",
                            &local_tag(key),
                            &extra,
                        );
                        send(out, inb.from, resp)
                    }
                };
            }
        }
        let answered_here = method == Method::Options && !in_dialog;
        let checked = if answered_here {
            self.validate_as_uas(msg)
        } else {
            self.validate(msg)
        };
        if let Err(rejection) = checked {
            let resp = originate::response(
                msg,
                rejection.code(),
                rejection.reason(),
                &local_tag(key),
                &rejection.extra_headers(),
            );
            return send(out, inb.from, resp);
        }
        if answered_here {
            // Keep-alive and capability probes from carriers and clouds end here.
            let extra = format!("Allow: {}\r\nAccept: application/sdp\r\n", originate::ALLOW);
            let resp = originate::response(msg, 200, "OK", &local_tag(key), &extra);
            return send(out, inb.from, resp);
        }
        if in_dialog {
            return self.in_dialog(msg, key, inb.from, now, out);
        }
        match method {
            Method::Invite => self.new_call(msg, key, inb, now, out),
            _ => {
                // Out-of-dialog MESSAGE, NOTIFY, ...: relayed to the route's first destination.
                let routing = self.routing();
                let hop = self.first_destination(&routing, msg, inb.listener);
                match hop {
                    Some(hop) => self.start_relay(msg, key, inb.from, hop, now, out),
                    None => send(
                        out,
                        inb.from,
                        originate::response(msg, 404, "Not Found", &local_tag(key), ""),
                    ),
                }
            }
        }
    }

    fn on_retransmission(&self, entry: ServerEntry, out: &mut Vec<Output>) {
        let mut acts = Vec::new();
        match entry {
            ServerEntry::Call(call) => {
                let mut c = lock(&call);
                c.server.on_retransmission(&mut acts);
                let to = c.upstream;
                emit(out, &mut acts, to, c.key, Side::Server, None);
            }
            ServerEntry::Relay(relay) => {
                let mut r = lock(&relay);
                r.server.on_retransmission(&mut acts);
                let (to, key) = (r.upstream, r.server_key);
                emit(out, &mut acts, to, key, Side::Server, None);
            }
            ServerEntry::Local(local) => {
                let mut l = lock(&local);
                l.tx.on_retransmission(&mut acts);
                let to = l.to;
                emit(out, &mut acts, to, 0, Side::Server, None);
            }
            ServerEntry::Accepted => {}
        }
    }

    /// RFC 3261 §16.3 step 2 and §8.2.2.1: a Request-URI pointsman can act on is sip:, sips:
    /// or tel: (anything else: 416, whatever the method); one that does not parse gets 400.
    fn validate_request_uri(&self, msg: &Message<'_>) -> Result<(), Rejection> {
        let StartLine::Request { uri, .. } = msg.start else {
            return Ok(());
        };
        match wire::parse_uri(msg.buf, uri) {
            Ok(u) if u.scheme == wire::UriScheme::Other => Err(Rejection::UnsupportedUriScheme),
            Ok(_) => Ok(()),
            Err(_) => Err(Rejection::BadRequestUri),
        }
    }

    /// The checks on a request pointsman answers itself, as a UAS (§8.2.2): its Request-URI,
    /// and `Require`: pointsman supports no extension, so any option tag gets 420 with the
    /// tags in `Unsupported` (§8.2.2.3).
    fn validate_as_uas(&self, msg: &Message<'_>) -> Result<(), Rejection> {
        self.validate_request_uri(msg)?;
        if let Some(h) = msg.header(HeaderName::Require) {
            return Err(Rejection::bad_extension(msg.slice(h.value)));
        }
        Ok(())
    }

    /// RFC 3261 §16.3: the checks before a request is proxied.
    fn validate(&self, msg: &Message<'_>) -> Result<(), Rejection> {
        self.validate_request_uri(msg)?;
        if msg.max_forwards == Some(0) {
            return Err(Rejection::TooManyHops);
        }
        if self.is_loop(msg) {
            return Err(Rejection::LoopDetected);
        }
        if let Some(h) = msg.header(HeaderName::ProxyRequire) {
            return Err(Rejection::bad_extension(msg.slice(h.value)));
        }
        Ok(())
    }

    /// §16.3 step 4: a Via of ours whose loop hash equals this request's means the request came
    /// back unchanged (a spiral changes the Request-URI, and so the hash).
    fn is_loop(&self, msg: &Message<'_>) -> bool {
        if msg.via_count < 2 {
            return false;
        }
        let hash = format!("-{:08x}-", self.loop_hash(msg));
        msg.vias().filter_map(Result::ok).any(|via| {
            let Some(branch) = via.branch.map(|b| msg.slice(b)) else {
                return false;
            };
            branch.starts_with(BRANCH_PREFIX.as_bytes())
                && memchr::memmem::find(branch, hash.as_bytes()).is_some()
                && msg.slice(via.host) == self.cfg.advertise_host.as_bytes()
                && [Some(self.cfg.advertise_port), self.cfg.tls_port]
                    .contains(&Some(via.port.unwrap_or(5060)))
        })
    }

    fn loop_hash(&self, msg: &Message<'_>) -> u32 {
        let uri = match msg.start {
            StartLine::Request { uri, .. } => msg.slice(uri),
            StartLine::Response { .. } => &[],
        };
        let from_tag = msg.from.tag.map(|t| msg.slice(t)).unwrap_or(&[]);
        let cseq = msg.cseq.to_be_bytes();
        self.keys
            .of(&[uri, from_tag, msg.slice(msg.call_id), &cseq]) as u32
    }

    /// A fresh branch id: `z9hG4bK-ps<node>-<loop hash>-<unique>` (hex), written without the
    /// formatting machinery: every forwarded request needs one.
    fn new_branch(&self, loop_hash: u32) -> String {
        let n = self.branch_seq.fetch_add(1, Ordering::Relaxed);
        let mut branch = String::with_capacity(BRANCH_PREFIX.len() + 4 + 1 + 8 + 1 + 16);
        branch.push_str(BRANCH_PREFIX);
        push_hex(&mut branch, u64::from(self.cfg.node_id), 1);
        branch.push('-');
        push_hex(&mut branch, u64::from(loop_hash), 8);
        branch.push('-');
        push_hex(&mut branch, n, 1);
        branch
    }

    /// Our Via value on a leg over `proto`.
    fn via_value(&self, proto: Proto, branch: &str) -> String {
        let mut via = String::with_capacity(self.advertised.via(proto).len() + branch.len() + 16);
        self.push_via_value(&mut via, proto, branch);
        via
    }

    fn push_via_value(&self, out: &mut String, proto: Proto, branch: &str) {
        out.push_str(self.advertised.via(proto));
        out.push_str(";branch=");
        out.push_str(branch);
        out.push_str(";rport");
    }

    fn on_malformed(&self, inb: Inbound<'_>, err: &ScanError, out: &mut Vec<Output>) {
        self.metrics().parse_error(err.kind());
        debug!(from = %inb.from.addr, error = %err, "malformed message");
        // Responses and ACKs are never answered; anything without the reply fields is dropped.
        let Some(ctx) = wire::reply_context(inb.bytes).filter(|c| c.method != Method::Ack) else {
            self.metrics().dropped(DropReason::Malformed);
            return;
        };
        let tag = format!(
            "ps{:x}",
            self.keys.of(&[ctx.call_id_line.get(ctx.buf)]) as u32
        );
        // §21.5.20: a version we do not speak gets 505; every other defect 400, with the
        // scanner's words in the reason phrase so the sender can see what to fix.
        let (code, reason) = match err {
            ScanError::UnknownVersion => (505, "Version Not Supported".to_string()),
            _ => (400, format!("Bad Request ({err})")),
        };
        send(
            out,
            inb.from,
            originate::response_to_malformed(&ctx, code, &reason, &tag),
        );
    }

    fn server(&self, key: TxKey) -> Option<ServerEntry> {
        self.servers.get(&key).map(|e| e.value().clone())
    }

    fn client(&self, key: TxKey) -> Option<ClientEntry> {
        self.clients.get(&key).map(|e| e.value().clone())
    }

    // ---- ACK and CANCEL ----------------------------------------------------------------------

    fn on_ack(&self, msg: &Message<'_>, now: Instant, out: &mut Vec<Output>) {
        let key = self.keys.server(msg);
        if let Some(ServerEntry::Call(call)) = self.server(key) {
            let mut c = lock(&call);
            let mut acts = Vec::new();
            if c.server.on_ack(now, &mut acts) {
                let to = c.upstream;
                emit(out, &mut acts, to, key, Side::Server, None);
                return;
            }
        }
        // The ACK for a 2xx is a request of its own, routed like any in-dialog request; one that
        // does not route through pointsman is dropped (never answered, RFC 3261 §17.2.3).
        if msg.to.tag.is_none() {
            debug!("ACK for no transaction: dropped");
            return self.metrics().dropped(DropReason::Stray);
        }
        if msg.max_forwards == Some(0) {
            return self.metrics().dropped(DropReason::Unroutable);
        }
        let Some(hop) = self.in_dialog_hop(msg).or_else(|| self.answered_hop(msg)) else {
            debug!("ACK for no known dialog and without a Route of ours: dropped");
            return self.metrics().dropped(DropReason::Unroutable);
        };
        let branch = self.new_branch(self.loop_hash(msg));
        let bytes = self.forward_request(msg, hop.peer.proto, &branch, None);
        send(out, hop.peer, bytes);
    }

    fn on_cancel(&self, msg: &Message<'_>, from: Peer, now: Instant, out: &mut Vec<Output>) {
        let own_key = self.keys.server(msg);
        if let Some(entry) = self.server(own_key) {
            return self.on_retransmission(entry, out);
        }
        let invite_key = self.keys.server_with_class(msg, MethodClass::Invite);
        let call = match self.server(invite_key) {
            Some(ServerEntry::Call(call)) => Some(call),
            // Answered already: the CANCEL still gets its 200 (§9.2) and changes nothing.
            Some(ServerEntry::Accepted) => None,
            _ => {
                let resp = originate::response(
                    msg,
                    481,
                    originate::reason_phrase(481),
                    &local_tag(own_key),
                    "",
                );
                return send(out, from, resp);
            }
        };
        // §16.10: 200 to the CANCEL at once, then CANCEL every pending branch.
        let mut acts = Vec::new();
        let mut tx = ServerNonInvite::new(from.proto.is_reliable(), self.cfg.timers);
        let ok = originate::response(msg, 200, "OK", &local_tag(own_key), "");
        tx.respond(200, ok, now, &mut acts);
        emit(out, &mut acts, from, own_key, Side::Server, None);
        self.servers.insert(
            own_key,
            ServerEntry::Local(Arc::new(Mutex::new(LocalAnswer { tx, to: from }))),
        );
        let reason = msg
            .header(HeaderName::Reason)
            .map(|h| String::from_utf8_lossy(msg.slice(h.line)).into_owned())
            .unwrap_or_else(|| originate::reason_header(487, "Request terminated"));
        if let Some(call) = call {
            self.cancel_call(&mut lock(&call), &call, &reason, now, out);
        }
    }

    fn on_server_timer(&self, key: TxKey, t: TxTimer, now: Instant, out: &mut Vec<Output>) {
        let Some(entry) = self.server(key) else {
            return;
        };
        let mut acts = Vec::new();
        match entry {
            ServerEntry::Call(call) => {
                let mut c = lock(&call);
                let ev = c.server.on_timer(t, now, &mut acts);
                let to = c.upstream;
                emit(out, &mut acts, to, key, Side::Server, None);
                if ev != TxEvent::None {
                    self.reap_if_done(&mut c);
                }
            }
            ServerEntry::Relay(relay) => {
                let mut r = lock(&relay);
                let ev = r.server.on_timer(t, now, &mut acts);
                let to = r.upstream;
                emit(out, &mut acts, to, key, Side::Server, None);
                if ev != TxEvent::None {
                    self.servers.remove(&key);
                    self.clients.remove(&r.client_key);
                    self.stop_counting_relay(&mut r);
                }
            }
            ServerEntry::Local(local) => {
                if lock(&local).tx.on_timer(t, now, &mut acts) != TxEvent::None {
                    self.servers.remove(&key);
                }
            }
            ServerEntry::Accepted => {
                if t == TxTimer::L {
                    self.servers.remove(&key);
                }
            }
        }
    }

    fn on_client_timer(&self, key: TxKey, t: TxTimer, now: Instant, out: &mut Vec<Output>) {
        let Some(entry) = self.client(key) else {
            return;
        };
        let mut acts = Vec::new();
        match entry {
            ClientEntry::Branch(call, i) => {
                let mut c = lock(&call);
                self.on_branch_tx_timer(&mut c, &call, i, t, now, out);
            }
            ClientEntry::Relay(relay) => {
                let mut r = lock(&relay);
                let downstream = r.downstream;
                let Some(tx) = r.client.as_mut() else { return };
                let ev = tx.on_timer(t, now, &mut acts);
                emit(out, &mut acts, downstream, key, Side::Client, Some(key));
                if ev == TxEvent::Timeout {
                    self.relay_local_final(&mut r, 408, now, out);
                }
            }
            ClientEntry::Own(own) => {
                let mut o = lock(&own);
                let to = o.to;
                let ev = o.tx.on_timer(t, now, &mut acts);
                emit(out, &mut acts, to, key, Side::Client, None);
                if ev != TxEvent::None {
                    self.clients.remove(&key);
                }
            }
            ClientEntry::Accepted(_) => {
                if t == TxTimer::M {
                    self.clients.remove(&key);
                }
            }
        }
    }

    // ---- responses ---------------------------------------------------------------------------

    /// A response is matched to its client transaction first, whatever else is wrong with it,
    /// so a branch that answered stops its timers. Only then is it relayed: §16.7 step 3 needs a
    /// Via after ours that parses. One that matches but cannot be relayed ([`Relayable::No`])
    /// still moves its transaction: a 1xx stops the branch's timers and goes no further (the
    /// caller has our 100 Trying); a final non-2xx counts with its code and what goes upstream
    /// is pointsman's own response with that code; a 2xx is torn down (ACK + BYE) and the
    /// branch fails as a 502 Bad Gateway, never a ghost. Each is counted as dropped
    /// `unrelayable`.
    fn on_response(&self, msg: &Message<'_>, from: Peer, now: Instant, out: &mut Vec<Output>) {
        let Some(code) = msg.code() else { return };
        let relayable = if matches!(msg.vias().nth(1), Some(Ok(_))) {
            Relayable::Yes
        } else {
            Relayable::No
        };
        let entry = self
            .keys
            .client_of_response(msg)
            .and_then(|key| Some((key, self.client(key)?)));
        let Some((key, entry)) = entry else {
            let ours = msg
                .top_via
                .branch
                .is_some_and(|b| msg.slice(b).starts_with(BRANCH_PREFIX.as_bytes()));
            if ours && msg.cseq_method == Method::Invite && (200..300).contains(&code) {
                return self.on_unmatched_2xx(msg, from, now, out);
            }
            debug!(from = %from.addr, code, "response matches no transaction: dropped");
            return self.metrics().dropped(DropReason::Stray);
        };
        let own_request = matches!(entry, ClientEntry::Own(_));
        if relayable == Relayable::No && !own_request {
            debug!(from = %from.addr, code, "response without a Via to relay it on");
            self.metrics().dropped(DropReason::Unrelayable);
        }
        match entry {
            ClientEntry::Branch(call, i) => {
                let mut c = lock(&call);
                let r = call::Received {
                    msg,
                    relayable,
                    from,
                };
                self.on_branch_response(&mut c, &call, i, r, now, out);
            }
            ClientEntry::Relay(relay) => {
                let mut r = lock(&relay);
                let mut acts = Vec::new();
                let Some(tx) = r.client.as_mut() else { return };
                let delivery = tx.on_response(code, now, &mut acts);
                let downstream = r.downstream;
                emit(out, &mut acts, downstream, key, Side::Client, Some(key));
                if delivery == Delivery::Absorb
                    || code == 100
                    || (code < 200 && relayable == Relayable::No)
                {
                    return;
                }
                if code >= 200 {
                    if let Some(dialog) = r.ends_dialog.take() {
                        self.dialogs.remove(dialog);
                        self.call_ended(dialog);
                    }
                    if relayable == Relayable::No {
                        return self.relay_local_final(&mut r, code, now, out);
                    }
                }
                let upstream = r.upstream;
                let relayed = Bytes::from(self.strip_top_via(msg));
                r.server.respond(code, relayed, now, &mut acts);
                let server_key = r.server_key;
                emit(out, &mut acts, upstream, server_key, Side::Server, None);
                if code >= 200 {
                    self.settle_relay(&mut r);
                }
            }
            ClientEntry::Accepted(upstream) => {
                if (200..300).contains(&code) && relayable == Relayable::Yes {
                    // RFC 6026: 2xx retransmissions pass while the transaction is Accepted.
                    send(out, upstream, Bytes::from(self.strip_top_via(msg)));
                    self.metrics().response_out(code);
                }
            }
            ClientEntry::Own(own) => {
                let mut o = lock(&own);
                let mut acts = Vec::new();
                o.tx.on_response(code, now, &mut acts);
                let to = o.to;
                emit(out, &mut acts, to, key, Side::Client, None);
            }
        }
    }

    /// A 2xx for an INVITE pointsman sent, whose transaction is gone. Unless it belongs to an
    /// answered dialog (a late retransmission), it is a ghost call: ACK and BYE it.
    fn on_unmatched_2xx(&self, msg: &Message<'_>, from: Peer, now: Instant, out: &mut Vec<Output>) {
        if self.dialogs.contains(self.dialog_key(msg)) {
            return;
        }
        // The 2xx came from the branch's destination: the teardown goes back the same way.
        self.ghost_teardown(msg, from, now, out);
    }

    /// ACK and BYE a 2xx that must not reach the caller. Retransmissions of the same 2xx are
    /// re-ACKed; the BYE goes once.
    fn ghost_teardown(&self, msg: &Message<'_>, to: Peer, now: Instant, out: &mut Vec<Output>) {
        let to_tag = msg.to.tag.map(|t| msg.slice(t)).unwrap_or(&[]);
        let ghost = self.keys.of(&[msg.slice(msg.call_id), to_tag]);
        let first = self.ghosts.insert(ghost, ()).is_none();
        let loop_hash = self.loop_hash(msg);
        let ack_branch = self.new_branch(loop_hash);
        let bye_branch = self.new_branch(loop_hash);
        let teardown = originate::ghost_teardown(
            msg,
            is_own_uri,
            &self.via_value(to.proto, &ack_branch),
            &self.via_value(to.proto, &bye_branch),
            &originate::reason_header(200, "Call completed elsewhere"),
            &format!("sip:{}", to.addr),
        );
        send(out, to, teardown.ack);
        if !first {
            return;
        }
        self.metrics().ghost_torn_down();
        warn!(
            call_id = %String::from_utf8_lossy(msg.slice(msg.call_id)),
            to = %to.addr,
            "ghost call: late 2xx ACKed and torn down with BYE"
        );
        let key = self.keys.client(bye_branch.as_bytes(), MethodClass::Other);
        self.start_own_request(key, teardown.bye, to, now, out);
        out.push(Output::Timer {
            at: now + self.cfg.timers.t1x64(),
            timer: CoreTimer {
                key: ghost,
                kind: TimerKind::GhostExpire,
            },
        });
    }

    /// Sends a request pointsman originated (CANCEL, BYE) in a client transaction of its own.
    fn start_own_request(
        &self,
        key: TxKey,
        bytes: Bytes,
        to: Peer,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        let mut acts = Vec::new();
        let tx = ClientNonInvite::start(
            bytes,
            to.proto.is_reliable(),
            self.cfg.timers,
            now,
            &mut acts,
        );
        emit(out, &mut acts, to, key, Side::Client, None);
        self.clients.insert(
            key,
            ClientEntry::Own(Arc::new(Mutex::new(OwnRequest { tx, to }))),
        );
    }

    /// The dialog a message belongs to: Call-ID and both tags, the same whichever side sends
    /// it (a request from the callee has the tags the other way round).
    fn dialog_key(&self, msg: &Message<'_>) -> u64 {
        let from_tag = msg.from.tag.map(|t| msg.slice(t)).unwrap_or(&[]);
        let to_tag = msg.to.tag.map(|t| msg.slice(t)).unwrap_or(&[]);
        self.dialog_key_of(msg.slice(msg.call_id), from_tag, to_tag)
    }

    /// [`Self::dialog_key`] of a Call-ID and two tags, in either order.
    fn dialog_key_of(&self, call_id: &[u8], tag: &[u8], other: &[u8]) -> u64 {
        let (a, b) = if tag <= other {
            (tag, other)
        } else {
            (other, tag)
        };
        self.keys.of(&[call_id, a, b])
    }

    /// A tag as the answered-call table keeps it.
    fn tag_key(&self, tag: Option<wire::Span>, msg: &Message<'_>) -> u64 {
        self.keys.of(&[tag.map(|t| msg.slice(t)).unwrap_or(&[])])
    }

    // ---- forwarding --------------------------------------------------------------------------

    /// The request as forwarded: our Via on top, Max-Forwards decremented (or added), our own
    /// Route values removed, and for dialog-creating requests our Record-Route. Every other byte
    /// is as received.
    fn forward_request(
        &self,
        msg: &Message<'_>,
        proto: Proto,
        branch: &str,
        record_route: Option<&str>,
    ) -> Bytes {
        let mut via_line = String::with_capacity(self.advertised.via(proto).len() + 64);
        via_line.push_str("Via: ");
        self.push_via_value(&mut via_line, proto, branch);
        via_line.push_str("\r\n");
        let via_at = msg.headers[msg.top_via.header].line.start;
        let mut mf_text = [0u8; 3];
        let rr_line;
        let mut splice = wire::Splice::new(msg.buf);
        match (msg.max_forwards, msg.max_forwards_header) {
            (Some(mf), Some(idx)) => {
                let digits = write_decimal(&mut mf_text, mf.saturating_sub(1).min(255) as u8);
                splice.replace(msg.headers[idx].value, digits);
            }
            _ => {
                splice.insert(via_at, b"Max-Forwards: 70\r\n");
            }
        }
        if let Some(rr) = record_route {
            rr_line = [b"Record-Route: ", rr.as_bytes(), b"\r\n"].concat();
            let at = msg
                .header(HeaderName::RecordRoute)
                .map(|h| h.line.start)
                .unwrap_or(msg.headers[0].line.start);
            splice.insert(at, &rr_line);
        }
        splice.insert(via_at, via_line.as_bytes());
        if let Some(span) = self.own_routes_removal(msg) {
            splice.delete(span);
        }
        if let Some(span) = request_uri_headers(msg) {
            splice.delete(span);
        }
        let mut bytes = Vec::with_capacity(splice.output_len());
        splice.write_to(&mut bytes);
        Bytes::from(bytes)
    }

    /// The span that removes the leading Route values that point at pointsman (loose routing,
    /// §16.4). Only whole leading values go; if they fill their header line, the line goes.
    fn own_routes_removal(&self, msg: &Message<'_>) -> Option<wire::Span> {
        let mut routes = msg
            .routes(HeaderName::Route)
            .filter_map(Result::ok)
            .peekable();
        let first = *routes.peek()?;
        if !is_own_uri(msg.slice(first.uri)) {
            return None;
        }
        // Only values of the first Route header line are removed together (one span).
        let mut last = first;
        let mut next_kept = None;
        for r in routes.by_ref().skip(1) {
            if r.header == first.header && is_own_uri(msg.slice(r.uri)) {
                last = r;
            } else {
                next_kept = Some(r);
                break;
            }
        }
        let _ = last;
        match next_kept {
            Some(kept) if kept.header == first.header => Some(wire::Span::new(
                first.value.start as usize,
                kept.value.start as usize,
            )),
            _ => Some(msg.headers[first.header].line),
        }
    }

    fn strip_top_via(&self, msg: &Message<'_>) -> Vec<u8> {
        let mut splice = wire::Splice::new(msg.buf);
        splice.delete(msg.value_removal(msg.top_via.header, msg.top_via.value));
        let mut out = Vec::with_capacity(splice.output_len());
        splice.write_to(&mut out);
        out
    }

    // ---- in-dialog requests ------------------------------------------------------------------

    /// Next hop of an in-dialog request, from the Record-Route we wrote (now its first Route):
    /// from the caller's side it goes to the destination that answered (trunk affinity); from
    /// the callee's side it follows the remaining Route set or the Request-URI.
    fn in_dialog_hop(&self, msg: &Message<'_>) -> Option<Hop> {
        let mut routes = msg.routes(HeaderName::Route).filter_map(Result::ok);
        let ours = routes.next().filter(|r| is_own_uri(msg.slice(r.uri)))?;
        let ours_uri = wire::parse_uri(msg.buf, ours.uri).ok()?;
        let param =
            |name: &[u8]| wire::uri_param(msg.buf, ours_uri.params, name).map(|s| msg.slice(s));
        let from_tag = msg.from.tag.map(|t| msg.slice(t));
        let downstream = param(b"ftag").is_some_and(|ftag| Some(ftag) == from_tag);
        if downstream {
            if let Some(name) = param(b"psd") {
                let routing = self.routing();
                let name = std::str::from_utf8(name).ok()?;
                if let Some(id) = routing.router.destination_by_name(name) {
                    return Some(Hop {
                        peer: routing.peer(id),
                        dest: Some(id),
                    });
                }
            }
        }
        // The next Route that is not ours, else the Request-URI.
        let next = msg
            .routes(HeaderName::Route)
            .filter_map(Result::ok)
            .find(|r| !is_own_uri(msg.slice(r.uri)));
        let uri_span = match (next, msg.start) {
            (Some(r), _) => r.uri,
            (None, StartLine::Request { uri, .. }) => uri,
            _ => return None,
        };
        let uri = wire::parse_uri(msg.buf, uri_span).ok()?;
        let transport = wire::uri_param(msg.buf, uri.params, b"transport").map(|s| msg.slice(s));
        // RFC 3261 §19.1.2 and §26.2.2: a sips: URI is reached over TLS, on port 5061 by
        // default.
        let sips = uri.scheme == wire::UriScheme::Sips;
        let proto = match transport {
            _ if sips => Proto::Tls,
            Some(t) if t.eq_ignore_ascii_case(b"tls") => Proto::Tls,
            Some(t) if t.eq_ignore_ascii_case(b"tcp") => Proto::Tcp,
            _ => Proto::Udp,
        };
        let default_port = if proto == Proto::Tls { 5061 } else { 5060 };
        let addr = socket_addr(msg.slice(uri.host), uri.port.unwrap_or(default_port))?;
        Some(Hop {
            peer: Peer {
                proto,
                addr,
                conn: None,
            },
            dest: None,
        })
    }

    fn in_dialog(
        &self,
        msg: &Message<'_>,
        key: TxKey,
        from: Peer,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        let Some(hop) = self.in_dialog_hop(msg).or_else(|| self.answered_hop(msg)) else {
            // §12.2.2: a request for a dialog pointsman neither routes nor knows.
            debug!(from = %from.addr, "in-dialog request for no known dialog: 481");
            let resp =
                originate::response(msg, 481, originate::reason_phrase(481), &local_tag(key), "");
            return send(out, from, resp);
        };
        match msg.method() {
            Some(Method::Invite) => self.start_reinvite(msg, key, from, hop, now, out),
            _ => self.start_relay(msg, key, from, hop, now, out),
        }
    }

    /// Next hop of an in-dialog request without a Route of ours, from the answered call it
    /// belongs to (Call-ID and tags): from the caller it goes to the destination that
    /// answered, from the callee back to where the INVITE came from.
    fn answered_hop(&self, msg: &Message<'_>) -> Option<Hop> {
        let call = self.answered.get(&self.dialog_key(msg))?;
        let from_caller = self.tag_key(msg.from.tag, msg) == call.caller_tag;
        let peer = if from_caller {
            call.callee
        } else {
            call.caller
        };
        Some(Hop { peer, dest: None })
    }

    fn start_relay(
        &self,
        msg: &Message<'_>,
        key: TxKey,
        from: Peer,
        hop: Hop,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        let branch = self.new_branch(self.loop_hash(msg));
        let bytes = self.forward_request(msg, hop.peer.proto, &branch, None);
        let client_key = self.keys.client(
            branch.as_bytes(),
            msg.method()
                .map(MethodClass::of)
                .unwrap_or(MethodClass::Other),
        );
        let ends_dialog = (msg.method() == Some(Method::Bye)).then(|| self.dialog_key(msg));
        let mut acts = Vec::new();
        let client = ClientNonInvite::start(
            bytes,
            hop.peer.proto.is_reliable(),
            self.cfg.timers,
            now,
            &mut acts,
        );
        let relay = Arc::new(Mutex::new(Relay {
            server: ServerNonInvite::new(from.proto.is_reliable(), self.cfg.timers),
            server_key: key,
            upstream: from,
            client: Some(client),
            client_key,
            downstream: hop.peer,
            ends_dialog,
            counted: true,
            request: Bytes::copy_from_slice(msg.buf),
            to_tag: local_tag(key),
        }));
        self.count_in_progress(true);
        self.servers.insert(key, ServerEntry::Relay(relay.clone()));
        self.clients.insert(client_key, ClientEntry::Relay(relay));
        emit(
            out,
            &mut acts,
            hop.peer,
            client_key,
            Side::Client,
            Some(client_key),
        );
    }

    /// The relayed request failed downstream: answer it ourselves.
    fn relay_local_final(
        &self,
        r: &mut MutexGuard<'_, Relay>,
        code: u16,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        let request = r.request.clone();
        let Some(req) = originate::rescan(&request) else {
            return;
        };
        if let Some(dialog) = r.ends_dialog.take() {
            // A BYE that nobody answered still ends the dialog for us.
            self.dialogs.remove(dialog);
            self.call_ended(dialog);
        }
        let resp = originate::response(&req, code, originate::reason_phrase(code), &r.to_tag, "");
        let mut acts = Vec::new();
        r.server.respond(code, resp, now, &mut acts);
        let (upstream, server_key) = (r.upstream, r.server_key);
        emit(out, &mut acts, upstream, server_key, Side::Server, None);
        self.settle_relay(r);
    }

    /// The relayed request has its final response: what is left is answering retransmissions
    /// of the request until Timer J, which a [`LocalAnswer`] does with a fraction of the memory.
    /// Retransmissions of the response are absorbed for want of a transaction to match.
    fn settle_relay(&self, r: &mut Relay) {
        let reliable = r.upstream.proto.is_reliable();
        let tx = std::mem::replace(
            &mut r.server,
            ServerNonInvite::new(reliable, self.cfg.timers),
        );
        self.clients.remove(&r.client_key);
        self.servers.insert(
            r.server_key,
            ServerEntry::Local(Arc::new(Mutex::new(LocalAnswer { tx, to: r.upstream }))),
        );
        r.client = None;
        r.request = Bytes::new();
        self.stop_counting_relay(r);
    }

    /// The relay no longer counts as in progress (once, whichever way it ends).
    fn stop_counting_relay(&self, r: &mut Relay) {
        if std::mem::take(&mut r.counted) {
            self.count_in_progress(false);
        }
    }

    /// The first destination the route of an out-of-dialog request would try.
    fn first_destination(
        &self,
        routing: &Routing,
        msg: &Message<'_>,
        listener: usize,
    ) -> Option<Hop> {
        let headers = MessageHeaders(msg);
        let call = self.call_of(msg, listener, &headers);
        let route = routing.router.route_for(&call)?;
        let plan = routing.router.plan(route, &call, &|_| true);
        let id = plan.destinations().next()?;
        Some(Hop {
            peer: routing.peer(id),
            dest: Some(id),
        })
    }

    /// What the routing decision sees of a new request: the dialled number (Request-URI user,
    /// or the number of a `tel:` URI), the caller (P-Asserted-Identity if present, else From),
    /// the listener, the headers, the Call-ID, and fresh entropy for weighted groups.
    pub(super) fn call_of<'m>(
        &'m self,
        msg: &Message<'m>,
        listener: usize,
        headers: &'m MessageHeaders<'m>,
    ) -> routing_rules::Call<'m> {
        let user = |span: wire::Span| -> Option<&'m str> {
            let uri = wire::parse_uri(msg.buf, span).ok()?;
            std::str::from_utf8(msg.slice(uri.user?)).ok()
        };
        let to_user = match msg.start {
            StartLine::Request { uri, .. } => user(uri),
            StartLine::Response { .. } => None,
        };
        let asserted = msg
            .header_by_name(b"P-Asserted-Identity")
            .and_then(|h| user(wire::addr_spec(msg.buf, h.value)?));
        let seq = self.entropy_seq.fetch_add(1, Ordering::Relaxed);
        routing_rules::Call {
            to_user,
            from_user: asserted.or_else(|| user(msg.from.uri)),
            listener: self.cfg.listeners.get(listener).map(String::as_str),
            headers,
            call_id: std::str::from_utf8(msg.slice(msg.call_id)).ok(),
            entropy: self.keys.of(&[&seq.to_le_bytes()]),
        }
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
    // A server transaction's sends report under its own key: a response that cannot reach the
    // caller ends it (RFC 3261 §17.2.4).
    let report = match side {
        Side::Server => Some(key),
        Side::Client => report,
    };
    for a in acts.drain(..) {
        match a {
            TxAction::Send(bytes) => out.push(Output::Send { to, bytes, report }),
            TxAction::Arm(t, at) => out.push(Output::Timer {
                at,
                timer: CoreTimer {
                    key,
                    kind: match side {
                        Side::Server => TimerKind::Server(t),
                        Side::Client => TimerKind::Client(t),
                    },
                },
            }),
        }
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
    /// `<sip:host:port;transport=tcp;lr;psn=<node>;psd=`, by [`Proto`]: the destination name,
    /// `;ftag=<tag>` and `>` follow.
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
