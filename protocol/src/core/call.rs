//! The response context of one proxied INVITE (§16.7): its server transaction toward the
//! caller, its branches toward destinations, and the failover policy that moves from one branch
//! to the next.
//!
//! Policy (docs/architecture.md, "Serial failover"): a branch fails on no provisional within its timer, a
//! transport error, or a retryable final code; then CANCEL goes to the failed branch (when it
//! may still be alive) *before* the INVITE to the next destination. After a provisional above
//! 100 only the route's ringing-phase codes fail over. A 2xx on an abandoned branch, or after
//! the call was answered, is a ghost: ACKed and BYEd, never relayed.
//!
//! `Call` decides: its methods take an event and `now` and append [`CallOutput`]s in the order
//! they must happen, touching no table. `Core` dispatches: it finds the call, carries the
//! outputs out (a new branch or a CANCEL becomes a registered transaction) and keeps the
//! tables. A `Call` must not reach for the core; the core must not decide failover.

use super::forward::strip_top_via_with;
use super::{
    emit, local_tag, lock, strip_top_via, tx_output, ClientEntry, Core, CoreTimer, Hop, Output,
    Relayable, ServerEntry, Side, TimerKind,
};
use crate::health::{Cap, Passive};
use crate::media::{MediaSession, SwitchReason};
use crate::metrics::FailoverReason;
use crate::originate;
use crate::peer::Peer;
use crate::transaction::{
    ClientInvite, ClientInviteState, Delivery, ServerInvite, ServerInviteState, TxEvent, TxTimer,
};
use crate::transaction::{MethodClass, TxKey};
use crate::wire::Message;
use bytes::Bytes;
use routing_rules::spec::CancelMode;
use routing_rules::{DestId, RouteId, Survival, Tier};
use smallvec::{smallvec, SmallVec};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, info};

use super::Routing;

/// RFC 3261 §16.6 step 11: a proxied INVITE that got a provisional but no final answer within
/// Timer C (more than 3 minutes) is cancelled. Applies to re-INVITEs; an initial INVITE has its
/// route's `ring_timeout` instead.
pub(super) const TIMER_C: Duration = Duration::from_secs(181);

/// Where the call as a whole stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CallPhase {
    /// Branches are being tried; nothing final sent upstream.
    Trying,
    /// A 2xx was relayed.
    Answered,
    /// A final non-2xx was sent upstream (incl. 487 after the caller's CANCEL).
    Finished,
}

/// One destination a call may be sent to, resolved.
#[derive(Clone, Copy, Debug)]
pub(super) struct Target {
    pub dest: Option<DestId>,
    pub peer: Peer,
    pub provisional: Duration,
    pub cancel_mode: CancelMode,
}

/// Where one branch of a call stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BranchStatus {
    /// INVITE sent, nothing back yet.
    Pending,
    /// 100 Trying received.
    Trying,
    /// A provisional above 100: the callee is ringing (double-ring guard applies).
    Ringing,
    Answered,
    Final(u16),
    /// No provisional response in time.
    TimedOut,
    /// It rang past the route's ring timeout.
    RingTimedOut,
    TransportError,
}

/// Whether a branch was cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CancelState {
    None,
    /// `deferred` mode: CANCEL goes on the first provisional.
    Deferred,
    Sent,
}

/// Targets started together.
pub(super) type Step = SmallVec<[Target; 2]>;

/// What a new call will try: its steps, then the survivability reject if there is one; under
/// which rules, and whether it fails over at all (a re-INVITE does not).
pub(super) struct CallPlan {
    pub routing: Arc<Routing>,
    pub route: Option<RouteId>,
    pub steps: Vec<Step>,
    pub reject: Option<(u16, Option<Duration>)>,
    pub failover: bool,
    /// Its media, when anchored.
    pub media: Option<CallMedia>,
}

/// Appends a planned tier's steps: a parallel tier is one step (all members at once), a serial
/// tier one step per member, in the plan's order.
fn push_steps(routing: &Routing, tier: &Tier, steps: &mut Vec<Step>) {
    let target = |id: DestId| {
        let d = routing.router.destination(id);
        Target {
            dest: Some(id),
            peer: routing.peer(id),
            provisional: d.provisional_timeout,
            cancel_mode: d.cancel_mode,
        }
    };
    if tier.parallel {
        steps.push(tier.members.iter().map(|&id| target(id)).collect());
    } else {
        steps.extend(tier.members.iter().map(|&id| smallvec![target(id)]));
    }
}

pub(super) struct Branch {
    pub key: TxKey,
    /// Index of the step that started it.
    pub step: usize,
    pub branch: String,
    pub target: Target,
    pub tx: ClientInvite,
    pub status: BranchStatus,
    /// Failed over from, cancelled, or lost to another branch: nothing it says is relayed.
    pub abandoned: bool,
    pub cancel: CancelState,
    /// Counted as a call in progress at its destination (until it fails, is given up, or its
    /// answer hands the count to the dialog).
    pub counted: bool,
    /// When the route's ring timeout ends for this branch (set by its first provisional). The
    /// ring timer is armed only when the provisional timer finds the branch still unanswered,
    /// so the many calls answered within seconds leave no long-lived timer behind.
    pub ring_at: Option<Instant>,
    /// When its INVITE was first sent (its provisional timer and Timer C count from it).
    pub sent: Instant,
}

pub(super) struct Call {
    pub key: TxKey,
    pub server: ServerInvite,
    pub upstream: Peer,
    /// The INVITE as received.
    pub request: Bytes,
    pub routing: Arc<Routing>,
    pub route: Option<RouteId>,
    /// What to try, in order: a serial member is a step of one target, a parallel group one
    /// step of all its members (forked at once).
    pub steps: Vec<Step>,
    /// Index of the next step to start.
    pub next_step: usize,
    /// A branch of the current step ended with a final that does not fail over while others
    /// were still live: when the step is over, the best response goes upstream instead of the
    /// next step starting.
    pub settled: bool,
    /// The route's survivability says: when every step failed, answer this code (with this
    /// Retry-After) rather than the best response.
    pub survival_reject: Option<(u16, Option<Duration>)>,
    pub branches: Vec<Branch>,
    pub phase: CallPhase,
    /// Best final non-2xx so far (code, relayable bytes).
    pub best: Option<(u16, Bytes)>,
    /// Initial INVITE: failover, provisional and ring timers apply. re-INVITE: one branch.
    pub failover: bool,
    pub started: Instant,
    /// The caller cancelled (the 487 it gets is its own doing).
    pub caller_cancelled: bool,
    /// A provisional above 100 was relayed (post-dial delay recorded).
    pub rang: bool,
    /// Its branches' ends were counted (see `reap_if_done`).
    pub reaped: bool,
    pub policy: CallPolicy,
    /// Its media, when anchored in the relay.
    pub media: Option<CallMedia>,
    /// Destinations skipped because they were at a capacity cap, each with how many branches
    /// had started before it (its place in the call log's `tried=`). Not replicated: it only
    /// tells the log line.
    pub capped: SmallVec<[(usize, DestId, Cap); 2]>,
}

/// The anchored media of a call.
pub(super) enum CallMedia {
    /// A new call: its own media session.
    Session(MediaSession),
    /// A re-INVITE in an anchored dialog: its offer and answer keep the dialog's relay ports.
    Dialog(super::anchor::DialogMedia),
}

impl Call {
    /// The call's own media session (a new anchored call).
    pub(super) fn session(&self) -> Option<&MediaSession> {
        match &self.media {
            Some(CallMedia::Session(session)) => Some(session),
            _ => None,
        }
    }

    pub(super) fn request(&self) -> Option<Message<'_>> {
        originate::rescan(&self.request)
    }

    fn route(&self) -> Option<&routing_rules::Route> {
        self.route.map(|r| self.routing.router.route(r))
    }

    fn dest_name(&self, t: &Target) -> &str {
        t.dest
            .map(|d| self.routing.router.destination(d).name.as_str())
            .unwrap_or("dialog")
    }

    /// Once the caller has its final answer and no branch can be retransmitted or cancelled any
    /// more, the call only absorbs retransmissions until its transactions end (64·T1): the
    /// INVITE, the plan and the branch ids are dropped so each such call holds a few hundred
    /// bytes instead of kilobytes.
    fn shed_if_settled(&mut self) {
        if self.phase == CallPhase::Trying || self.request.is_empty() {
            return;
        }
        let branches_settled = self.branches.iter().all(|b| {
            !matches!(
                b.tx.state(),
                ClientInviteState::Calling | ClientInviteState::Proceeding
            )
        });
        if !branches_settled {
            return;
        }
        self.request = Bytes::new();
        self.steps = Vec::new();
        self.best = None;
        for b in &mut self.branches {
            b.branch = String::new();
        }
        self.branches.shrink_to_fit();
    }

    /// Whether every transaction of the call has ended (it may be forgotten).
    fn is_done(&self) -> bool {
        self.server.state() == ServerInviteState::Terminated
            && self
                .branches
                .iter()
                .all(|b| b.tx.state() == ClientInviteState::Terminated)
    }
}

/// The ring timer of branch `key`, due at `at`.
fn ring_timer(key: TxKey, at: Instant) -> Output {
    Output::Timer {
        at,
        timer: CoreTimer {
            key,
            kind: TimerKind::Ring,
        },
    }
}

/// Why branch `b` ended, as the call log names it: the code it answered, or why pointsman gave
/// it up (the 487 that answers pointsman's own CANCEL is not the reason).
pub(super) fn branch_outcome(c: &Call, b: &Branch) -> std::borrow::Cow<'static, str> {
    match b.status {
        BranchStatus::Final(code) => code.to_string().into(),
        BranchStatus::Answered => "answered".into(),
        BranchStatus::TimedOut => "timeout".into(),
        BranchStatus::RingTimedOut => "ring-timeout".into(),
        BranchStatus::TransportError => "transport".into(),
        BranchStatus::Pending | BranchStatus::Trying | BranchStatus::Ringing => {
            if c.caller_cancelled {
                "caller-cancel".into()
            } else if c.phase == CallPhase::Answered {
                "answered-elsewhere".into()
            } else {
                "cancelled".into()
            }
        }
    }
}

/// §16.7 step 6: whether `new` is a better final response to relay than `old`. 6xx wins; then
/// the lowest class; 503 is the last choice within 5xx (it would make the caller give up on us).
fn better(new: u16, old: u16) -> bool {
    let rank = |c: u16| -> (u16, u16) {
        match c {
            600..=699 => (0, 0),
            503 => (5, 1),
            _ => (c / 100, 0),
        }
    };
    rank(new) < rank(old)
}

/// What a call asks of the core that holds it, in order. Sends and timers go out as they are;
/// a CANCEL and a new branch need the core (their transactions go into its tables, a branch id
/// comes from its sequence); a finished call is counted and logged by the core.
/// A call's outputs for one event: a few at most (a CANCEL, a new branch, a send, a timer), so
/// they stay on the stack.
pub(super) type CallOutputs = SmallVec<[CallOutput; 4]>;

#[derive(Debug)]
pub(super) enum CallOutput {
    Out(Output),
    /// Send `bytes`, the CANCEL of branch `branch`, in a client transaction of its own.
    Cancel {
        branch: usize,
        bytes: Bytes,
    },
    /// Send the INVITE to `target`, as a branch of step `step`; `counted`: admitted as a call
    /// in progress at its destination (see [`Call::admit`]), which the branch now carries.
    NewBranch {
        step: usize,
        target: Target,
        counted: bool,
    },
    /// The caller has its final answer, `code` (or was given up on, 480).
    Finished {
        code: u16,
    },
}

/// The first timer of a branch whose INVITE left at `sent`: an initial INVITE has the
/// provisional timer (then the route's ring timer); a re-INVITE has only Timer C, so a peer that
/// answers 1xx and nothing more cannot keep the transaction forever. `None` when the deadline
/// is past what an `Instant` holds (a duration no config allows; a restored state might).
pub(super) fn first_timer(
    failover: bool,
    target: &Target,
    sent: Instant,
) -> Option<(Instant, TimerKind)> {
    if failover {
        Some((
            sent.checked_add(target.provisional)?,
            TimerKind::Provisional,
        ))
    } else {
        Some((sent.checked_add(TIMER_C)?, TimerKind::Ring))
    }
}

/// What a 2xx received on a branch is to the call (see [`Call::on_2xx`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TwoXx {
    /// The call's answer: relayed; the call is answered.
    Answer,
    /// The answering branch's 2xx again: relayed (RFC 6026), nothing else changes.
    Retransmission,
    /// ACKed and BYEd, never relayed.
    Ghost,
}

/// What a call keeps of its core's configuration.
#[derive(Clone, Copy, Debug)]
pub(super) struct CallPolicy {
    /// Retry-After of pointsman's own 503 when no destination gave a final response.
    pub retry_after: Duration,
    /// How long a cancelled branch may take to send its final response (64·T1, §9.1).
    pub cancel_give_up: Duration,
}

/// A response received on a branch: the message, whether it can go on to the caller, and the
/// peer it came from.
#[derive(Clone, Copy)]
pub(super) struct Received<'a> {
    pub msg: &'a Message<'a>,
    pub relayable: Relayable,
    pub from: Peer,
}

/// Turns transaction actions into call outputs toward `to` (see [`emit`]).
fn emit_call(
    out: &mut CallOutputs,
    acts: &mut Vec<crate::transaction::TxAction>,
    to: Peer,
    key: TxKey,
    side: Side,
    report: Option<TxKey>,
) {
    out.extend(
        acts.drain(..)
            .map(|a| CallOutput::Out(tx_output(a, to, key, side, report))),
    );
}

/// The call's decisions: failover, CANCEL first, the best response. Each takes an event and
/// `now` and appends what must happen to `out`; none touches the core's tables.
impl Call {
    /// Whether a branch of the current step may still answer.
    fn step_live(&self) -> bool {
        let current = self.next_step.saturating_sub(1);
        self.branches.iter().any(|b| {
            b.step == current
                && !b.abandoned
                && matches!(
                    b.status,
                    BranchStatus::Pending | BranchStatus::Trying | BranchStatus::Ringing
                )
        })
    }

    /// Asks for a branch to every target of the next step that admits a new call, or ends the
    /// call when there is none. A target at a capacity cap is skipped as one that is down is
    /// left out of the plan: no INVITE, no failure, no CANCEL; a step whose every target is
    /// skipped gives way to the next (a parallel step forks to the members that admit it).
    pub(super) fn next_step(&mut self, now: Instant, out: &mut CallOutputs) {
        if self.phase != CallPhase::Trying {
            return;
        }
        loop {
            let Some(step) = self.steps.get(self.next_step).cloned() else {
                return self.finish_exhausted(now, out);
            };
            let index = self.next_step;
            self.next_step += 1;
            let before = out.len();
            for target in step {
                if let Some(counted) = self.admit(&target, now) {
                    out.push(CallOutput::NewBranch {
                        step: index,
                        target,
                        counted,
                    });
                }
            }
            if out.len() > before {
                return;
            }
        }
    }

    /// Whether a new branch may go to `target` at `now`: `Some(true)` admitted and counted as a
    /// call in progress at its destination, `Some(false)` not counted (a re-INVITE, or no
    /// destination), `None` skipped: the destination is at a capacity cap (counted in
    /// `pointsman_destination_capped_total`, and nothing told to its health). Lock-free.
    fn admit(&mut self, target: &Target, now: Instant) -> Option<bool> {
        let Some(dest) = target.dest.filter(|_| self.failover) else {
            return Some(false);
        };
        let Some(h) = self.routing.health.get(dest) else {
            return Some(false);
        };
        match h.try_start(now) {
            Ok(()) => Some(true),
            Err(cap) => {
                self.routing.metrics.capped(dest, cap);
                debug!(
                    destination = %h.name(),
                    cap = cap.as_str(),
                    "destination at its capacity cap: skipped for this call"
                );
                self.capped.push((self.branches.len(), dest, cap));
                None
            }
        }
    }

    /// A branch of the current step failed over: once none of the step's branches is live,
    /// the next step starts (or, if one of them settled the call, the best response goes up).
    fn after_failure(&mut self, now: Instant, out: &mut CallOutputs) {
        if self.step_live() {
            return;
        }
        if self.settled {
            return self.finish_exhausted(now, out);
        }
        self.next_step(now, out);
    }

    /// A final non-2xx on branch `i`: `relayed` is what the caller gets if it is the best.
    pub(super) fn on_final(
        &mut self,
        i: usize,
        code: u16,
        relayed: Bytes,
        retry_after: Option<Duration>,
        now: Instant,
        out: &mut CallOutputs,
    ) {
        let Some(b) = self.branches.get_mut(i) else {
            return;
        };
        if b.abandoned || self.phase != CallPhase::Trying {
            // The final of a branch pointsman gave up on (mostly the 487 to its CANCEL): its
            // status keeps why it was given up.
            return;
        }
        let rang = b.status == BranchStatus::Ringing;
        b.status = BranchStatus::Final(code);
        self.media_failed(i, SwitchReason::ErrorResponse);
        if code == 503 && self.failover {
            // The destination says it is overloaded: health skips it (for Retry-After).
            self.passive(i, Passive::Unavailable { retry_after }, now);
        }
        if self.best.as_ref().is_none_or(|(old, _)| better(code, *old)) {
            self.best = Some((code, relayed));
        }
        // The branch is complete (its final was ACKed): nothing to cancel.
        self.branches[i].abandoned = true;
        self.release(i);
        let retry = self.failover
            && code < 600
            && self.route().is_some_and(|r| {
                if rang {
                    r.ringing_retry_codes.contains(code)
                } else {
                    r.retry_codes.contains(code)
                }
            });
        if retry {
            self.count_failover(i, FailoverReason::Code);
            return self.after_failure(now, out);
        }
        // A final that does not fail over ends the call: at once for 6xx (which also cancels
        // every other branch, §16.7 step 5), else once no branch of the step may still answer
        // better (§16.7: the best of the step's finals goes up).
        self.settled = true;
        if code >= 600 || !self.step_live() {
            self.finish_exhausted(now, out);
        }
    }

    /// Provisional and ring timers of branch `i`.
    pub(super) fn on_timer(
        &mut self,
        i: usize,
        kind: TimerKind,
        now: Instant,
        out: &mut CallOutputs,
    ) {
        let Some(b) = self.branches.get(i) else {
            return;
        };
        if b.abandoned || self.phase != CallPhase::Trying {
            return;
        }
        match kind {
            TimerKind::Provisional if b.status == BranchStatus::Pending => {
                self.branches[i].status = BranchStatus::TimedOut;
                self.count_failover(i, FailoverReason::Timeout);
                self.passive(i, Passive::Timeout, now);
                let reason = originate::reason_header(408, "Provisional timeout");
                self.abandon(i, &reason, now, out);
                self.after_failure(now, out);
            }
            TimerKind::Provisional => {
                // It answered provisionally in time; if it is still ringing, now the ring
                // timeout needs a timer.
                let (key, ring_at) = (b.key, b.ring_at);
                match ring_at {
                    Some(at) if at > now => out.push(CallOutput::Out(ring_timer(key, at))),
                    Some(_) => self.on_timer(i, TimerKind::Ring, now, out),
                    None => {}
                }
            }
            TimerKind::Ring if matches!(b.status, BranchStatus::Trying | BranchStatus::Ringing) => {
                self.branches[i].status = BranchStatus::RingTimedOut;
                let reason = originate::reason_header(408, "Ring timeout");
                self.abandon(i, &reason, now, out);
                self.finish_local(408, "", now, out);
            }
            _ => {}
        }
    }

    /// A timer of branch `i`'s INVITE client transaction. Returns whether the transaction
    /// ended or gave up (the core may then forget the call).
    pub(super) fn on_tx_timer(
        &mut self,
        i: usize,
        t: TxTimer,
        now: Instant,
        out: &mut CallOutputs,
    ) -> bool {
        let Some(b) = self.branches.get_mut(i) else {
            return false;
        };
        // A branch given up on with an immediate CANCEL is not knocked on again.
        if t == TxTimer::A && b.abandoned && b.cancel == CancelState::Sent {
            return false;
        }
        let mut acts = Vec::new();
        let ev = b.tx.on_timer(t, now, &mut acts);
        let (peer, key) = (b.target.peer, b.key);
        emit_call(out, &mut acts, peer, key, Side::Client, Some(key));
        if ev == TxEvent::Timeout && !b.abandoned && self.phase == CallPhase::Trying {
            b.status = BranchStatus::TimedOut;
            b.abandoned = true;
            self.release(i);
            if self.failover {
                self.count_failover(i, FailoverReason::Timeout);
                self.passive(i, Passive::Timeout, now);
            }
            self.after_failure(now, out);
        }
        ev != TxEvent::None
    }

    /// Branch `i`'s INVITE could not be delivered. Returns whether its transaction ended.
    pub(super) fn on_transport_error(
        &mut self,
        i: usize,
        now: Instant,
        out: &mut CallOutputs,
    ) -> bool {
        let Some(b) = self.branches.get_mut(i) else {
            return false;
        };
        if b.tx.on_transport_error() == TxEvent::None {
            return false;
        }
        let live = !b.abandoned && self.phase == CallPhase::Trying;
        b.abandoned = true;
        if live {
            b.status = BranchStatus::TransportError;
            self.media_failed(i, SwitchReason::TransportError);
        }
        self.release(i);
        if live {
            // Nothing reached the destination, so there is nothing to CANCEL.
            if self.failover {
                self.count_failover(i, FailoverReason::Transport);
                self.passive(i, Passive::Transport, now);
            }
            self.after_failure(now, out);
        }
        true
    }

    /// Gives up on branch `i`: CANCEL now (immediate) or on its first provisional (deferred).
    fn abandon(&mut self, i: usize, reason: &str, now: Instant, out: &mut CallOutputs) {
        self.release(i);
        self.media_failed(i, SwitchReason::Cancelled);
        let b = &mut self.branches[i];
        b.abandoned = true;
        if !matches!(
            b.tx.state(),
            ClientInviteState::Calling | ClientInviteState::Proceeding
        ) {
            return;
        }
        let no_provisional = matches!(b.status, BranchStatus::Pending | BranchStatus::TimedOut);
        if no_provisional && b.target.cancel_mode == CancelMode::Deferred {
            b.cancel = CancelState::Deferred;
            return;
        }
        self.send_cancel(i, reason, now, out);
    }

    /// CANCELs branch `i` (once).
    pub(super) fn send_cancel(
        &mut self,
        i: usize,
        reason: &str,
        now: Instant,
        out: &mut CallOutputs,
    ) {
        let Some(b) = self.branches.get_mut(i) else {
            return;
        };
        if b.cancel == CancelState::Sent {
            return;
        }
        b.cancel = CancelState::Sent;
        let Some(invite) = originate::rescan(b.tx.request()) else {
            return;
        };
        let bytes = originate::cancel(&invite, reason);
        // §9.1: a branch that sends no final response within 64·T1 of its CANCEL is over (a
        // ringing branch has no Timer B left to end it).
        out.push(CallOutput::Out(Output::Timer {
            at: now + self.policy.cancel_give_up,
            timer: CoreTimer {
                key: b.key,
                kind: TimerKind::CancelGiveUp,
            },
        }));
        self.routing.metrics.cancel_sent();
        out.push(CallOutput::Cancel { branch: i, bytes });
    }

    /// 64·T1 after branch `i`'s CANCEL: if it is still waiting for a final response, it ends.
    /// Returns whether it did.
    pub(super) fn on_cancel_give_up(&mut self, i: usize) -> bool {
        let Some(b) = self.branches.get_mut(i) else {
            return false;
        };
        let waiting = matches!(
            b.tx.state(),
            ClientInviteState::Calling | ClientInviteState::Proceeding
        );
        if waiting {
            b.tx.terminate();
        }
        waiting
    }

    /// Abandons every branch still waiting for a final response.
    pub(super) fn cancel_pending(&mut self, reason: &str, now: Instant, out: &mut CallOutputs) {
        for i in 0..self.branches.len() {
            let b = &self.branches[i];
            let pending = matches!(
                b.status,
                BranchStatus::Pending
                    | BranchStatus::Trying
                    | BranchStatus::Ringing
                    | BranchStatus::TimedOut
            );
            if pending && (!b.abandoned || b.cancel == CancelState::None) {
                self.abandon(i, reason, now, out);
            }
        }
    }

    /// The caller cancelled: CANCEL downstream, 487 upstream at once, no branch ever again.
    pub(super) fn cancel_call(&mut self, reason: &str, now: Instant, out: &mut CallOutputs) {
        if self.phase != CallPhase::Trying {
            return;
        }
        self.caller_cancelled = true;
        self.cancel_pending(reason, now, out);
        self.finish_local(487, "", now, out);
    }

    /// The caller cannot be reached any more (a response to it was undeliverable): every
    /// pending branch gets CANCEL and the call is over, with nothing more sent upstream.
    pub(super) fn caller_unreachable(&mut self, now: Instant, out: &mut CallOutputs) {
        if self.phase != CallPhase::Trying {
            return;
        }
        self.phase = CallPhase::Finished;
        let reason = originate::reason_header(480, "Caller unreachable");
        self.cancel_pending(&reason, now, out);
        if self.failover {
            self.routing.metrics.calls_in_progress(-1);
        }
        out.push(CallOutput::Finished { code: 480 });
    }

    /// Every target failed: the best final received, or our own 503 with Retry-After.
    fn finish_exhausted(&mut self, now: Instant, out: &mut CallOutputs) {
        if let (false, Some((code, retry_after))) = (self.settled, self.survival_reject) {
            let extra = retry_after
                .map(|d| format!("Retry-After: {}\r\n", d.as_secs()))
                .unwrap_or_default();
            return self.finish_local(code, &extra, now, out);
        }
        match self.best.take() {
            Some((code, bytes)) => self.finish_relay(code, bytes, now, out),
            // No route for this number: the carrier should not retry it elsewhere.
            None if self.steps.is_empty() && self.route.is_none() => {
                self.finish_local(404, "", now, out)
            }
            // A route, but nothing of it up (or every branch failed without an answer): the
            // service is unavailable, and a carrier reroutes a 503 to its next trunk.
            None => {
                let extra = format!("Retry-After: {}\r\n", self.policy.retry_after.as_secs());
                self.finish_local(503, &extra, now, out)
            }
        }
    }

    /// Relays a final non-2xx received from a destination (503 → 500 unless the route passes it).
    fn finish_relay(&mut self, code: u16, bytes: Bytes, now: Instant, out: &mut CallOutputs) {
        let pass_503 = self.route().is_some_and(|r| r.pass_503);
        let (code, bytes) = if code == 503 && !pass_503 {
            let mapped = originate::rescan(&bytes)
                .map(|m| Bytes::from(originate::with_status(&m, 500, "Server Internal Error")))
                .unwrap_or(bytes);
            (500, mapped)
        } else {
            (code, bytes)
        };
        self.finish_with(code, bytes, now, out);
    }

    /// Ends the call with pointsman's own final response `code`.
    pub(super) fn finish_local(
        &mut self,
        code: u16,
        extra: &str,
        now: Instant,
        out: &mut CallOutputs,
    ) {
        let Some(req) = self.request() else { return };
        let bytes = originate::response(
            &req,
            code,
            originate::reason_phrase(code),
            &local_tag(self.key),
            extra,
        );
        self.finish_with(code, bytes, now, out);
    }

    fn finish_with(&mut self, code: u16, bytes: Bytes, now: Instant, out: &mut CallOutputs) {
        if self.phase != CallPhase::Trying {
            return;
        }
        self.phase = CallPhase::Finished;
        let reason = if code == 487 {
            originate::reason_header(487, "Request terminated")
        } else {
            originate::reason_header(code, "Call failed")
        };
        self.cancel_pending(&reason, now, out);
        let mut acts = Vec::new();
        self.server.respond(code, bytes, now, &mut acts);
        emit_call(out, &mut acts, self.upstream, self.key, Side::Server, None);
        self.routing.metrics.response_out(code);
        if self.failover {
            self.routing.metrics.calls_in_progress(-1);
        }
        out.push(CallOutput::Finished { code });
    }

    /// A provisional `code` on branch `i`: it stops the branch's provisional timer (the
    /// callee is ringing above 100), cancels a branch whose CANCEL was deferred, arms the ring
    /// timeout, and relays what `relayed` gives (made only when it is to be relayed).
    pub(super) fn on_provisional(
        &mut self,
        i: usize,
        code: u16,
        relayed: impl FnOnce() -> Option<Bytes>,
        now: Instant,
        out: &mut CallOutputs,
    ) {
        let Some(b) = self.branches.get_mut(i) else {
            return;
        };
        let first = b.status == BranchStatus::Pending;
        if b.abandoned {
            // Given up already: its status keeps why.
        } else if code > 100 {
            b.status = BranchStatus::Ringing;
        } else if first {
            b.status = BranchStatus::Trying;
        }
        if b.cancel == CancelState::Deferred {
            // RFC 3261 §9.1: now that the branch answered, it may be cancelled.
            let reason = originate::reason_header(408, "Provisional timeout");
            return self.send_cancel(i, &reason, now, out);
        }
        if b.abandoned || self.phase != CallPhase::Trying {
            return;
        }
        let (key, provisional) = (b.key, b.target.provisional);
        if first && self.failover {
            if let Some(ring_timeout) = self.route().map(|r| r.ring_timeout) {
                let at = now + ring_timeout;
                self.branches[i].ring_at = Some(at);
                if ring_timeout <= provisional {
                    // The provisional timer would come too late to arm it.
                    out.push(CallOutput::Out(ring_timer(key, at)));
                }
            }
        }
        if let Some(relayed) = relayed() {
            let mut acts = Vec::new();
            self.server.respond(code, relayed, now, &mut acts);
            emit_call(out, &mut acts, self.upstream, self.key, Side::Server, None);
            self.routing.metrics.response_out(code);
            if !self.rang && self.failover {
                self.rang = true;
                self.routing
                    .metrics
                    .post_dial_delay(now.saturating_duration_since(self.started));
            }
        }
    }

    /// A 2xx on branch `i`: the call's answer (the call is answered from now on), the
    /// answering branch's 2xx again, or a ghost: a 2xx on a branch given up on, or after the
    /// call was answered elsewhere or finished, which is never relayed.
    pub(super) fn on_2xx(&mut self, i: usize) -> TwoXx {
        let Some(b) = self.branches.get_mut(i) else {
            return TwoXx::Ghost;
        };
        if b.status == BranchStatus::Answered {
            return TwoXx::Retransmission;
        }
        if b.abandoned || self.phase != CallPhase::Trying {
            return TwoXx::Ghost;
        }
        b.status = BranchStatus::Answered;
        // The answered dialog carries this branch's count from now on (until its BYE).
        b.counted = false;
        self.phase = CallPhase::Answered;
        TwoXx::Answer
    }

    /// Pointsman's own response to the call's INVITE with `code`.
    pub(super) fn own_response(&self, code: u16) -> Option<Bytes> {
        let req = self.request()?;
        Some(originate::response(
            &req,
            code,
            originate::reason_phrase(code),
            &local_tag(self.key),
            "",
        ))
    }

    /// Branch `i` is no longer a call in progress at its destination.
    pub(super) fn release(&mut self, i: usize) {
        let Some(b) = self.branches.get_mut(i) else {
            return;
        };
        if std::mem::take(&mut b.counted) {
            if let Some(h) = b.target.dest.and_then(|d| self.routing.health.get(d)) {
                h.call_ended();
            }
        }
    }

    /// Counts branch `i` failing over.
    fn count_failover(&self, i: usize, reason: FailoverReason) {
        if let Some(dest) = self.branches[i].target.dest {
            self.routing.metrics.failover(dest, reason);
        }
    }

    /// Tells the health of branch `i`'s destination what the call saw.
    fn passive(&self, i: usize, signal: Passive, now: Instant) {
        let dest = self.branches[i].target.dest;
        if let Some(h) = dest.and_then(|d| self.routing.health.get(d)) {
            h.report(signal, now);
        }
    }
}

impl Core {
    pub(super) fn new_call(
        &self,
        msg: &Message<'_>,
        key: TxKey,
        inb: super::Inbound<'_>,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        let routing = self.routing();
        let headers = super::MessageHeaders(msg);
        let call = self.call_of(msg, inb.listener, &headers);
        let route = routing.router.route_for(&call);
        let mut steps = Vec::new();
        let mut reject = None;
        if let Some(route) = route {
            let is_up = |d: DestId| routing.health.accepts_calls(d);
            let plan = routing.router.plan(route, &call, &is_up);
            for tier in &plan.tiers {
                push_steps(&routing, tier, &mut steps);
            }
            // The route's survivability rule is the last resort: when every tier is down
            // (the plan says so) or when every tier failed on this very call.
            let survival = match plan.survivability {
                Some(s) => Some(s),
                None => routing.router.survival(route, &call, &is_up),
            };
            match survival {
                Some(Survival::Group(tier)) => push_steps(&routing, &tier, &mut steps),
                Some(Survival::Reject { code, retry_after }) => reject = Some((code, retry_after)),
                None => {}
            }
        }
        routing.metrics.calls_in_progress(1);
        self.count_in_setup(true);
        let media = self.open_media(msg, &routing, route, key, inb.from);
        let plan = CallPlan {
            routing,
            route,
            steps,
            reject,
            failover: true,
            media: media.map(CallMedia::Session),
        };
        self.start_call(msg, key, inb.from, plan, now, out);
    }

    pub(super) fn start_reinvite(
        &self,
        msg: &Message<'_>,
        key: TxKey,
        from: Peer,
        hop: Hop,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        let target = Target {
            dest: hop.dest,
            peer: hop.peer,
            provisional: Duration::MAX,
            cancel_mode: CancelMode::Immediate,
        };
        let plan = CallPlan {
            routing: self.routing(),
            route: None,
            steps: vec![smallvec![target]],
            reject: None,
            failover: false,
            media: self.dialog_media(msg).map(CallMedia::Dialog),
        };
        self.start_call(msg, key, from, plan, now, out);
    }

    /// What a new call keeps of the core's configuration.
    pub(super) fn call_policy(&self) -> CallPolicy {
        CallPolicy {
            retry_after: self.cfg.guard.retry_after,
            cancel_give_up: self.cfg.timers.t1x64(),
        }
    }

    fn start_call(
        &self,
        msg: &Message<'_>,
        key: TxKey,
        from: Peer,
        plan: CallPlan,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        let mut server = ServerInvite::new(from.proto.is_reliable(), self.cfg.timers);
        let mut acts = Vec::new();
        let trying = originate::response(msg, 100, "Trying", "", "");
        server.respond(100, trying, now, &mut acts);
        let trying_at = out.len();
        emit(out, &mut acts, from, key, Side::Server, None);
        let trying_len = out.len() - trying_at;
        let call = Arc::new(Mutex::new(Call {
            key,
            server,
            upstream: from,
            request: Bytes::copy_from_slice(msg.buf),
            routing: plan.routing,
            route: plan.route,
            steps: plan.steps,
            next_step: 0,
            settled: false,
            survival_reject: plan.reject,
            branches: Vec::with_capacity(2),
            phase: CallPhase::Trying,
            best: None,
            failover: plan.failover,
            started: now,
            caller_cancelled: false,
            rang: false,
            reaped: false,
            policy: self.call_policy(),
            media: plan.media,
            capped: SmallVec::new(),
        }));
        self.count_in_progress(true);
        self.servers.insert(key, ServerEntry::Call(call.clone()));
        let mut c = lock(&call);
        let mut todo = CallOutputs::new();
        c.next_step(now, &mut todo);
        self.apply(&mut c, &call, todo, Some(msg), now, out);
        // The 100 Trying goes out after the INVITE it answers: sent first, it wakes the
        // carrier's process, which can take the CPU before the INVITE leaves (on loopback the
        // sender delivers the datagram itself). A call that ended at once keeps its 100 before
        // its final.
        if c.phase == CallPhase::Trying {
            out[trying_at..].rotate_left(trying_len);
        }
    }

    /// Carries out what call `c` asked for, in order. `received` is the INVITE as scanned on
    /// arrival (the first step's branches); later branches scan the stored copy again.
    pub(super) fn apply(
        &self,
        c: &mut Call,
        arc: &Arc<Mutex<Call>>,
        todo: CallOutputs,
        received: Option<&Message<'_>>,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        for o in todo {
            match o {
                CallOutput::Out(o) => out.push(o),
                CallOutput::Cancel { branch, bytes } => {
                    let Some(b) = c.branches.get(branch) else {
                        continue;
                    };
                    let key = self.keys.client(b.branch.as_bytes(), MethodClass::Cancel);
                    self.start_own_request(key, bytes, b.target.peer, now, out);
                }
                CallOutput::NewBranch {
                    step,
                    target,
                    counted,
                } => match self.start_branch(c, step, target, counted, received, now, out) {
                    Ok((key, index)) => {
                        self.clients
                            .insert(key, ClientEntry::Branch(arc.clone(), index));
                    }
                    Err(more) => self.apply(c, arc, more, None, now, out),
                },
                CallOutput::Finished { code } => {
                    if let Some(CallMedia::Session(session)) = c.media.take() {
                        session.close();
                    }
                    if c.failover {
                        self.count_in_setup(false);
                    }
                    self.log_outcome(c, code, now);
                }
            }
        }
    }

    /// Sends the INVITE to one target; returns the new branch's key and index, for the caller
    /// to register (or what the call does when its stored INVITE no longer scans). `counted`:
    /// the call was admitted at the target's destination (the branch carries the count).
    // The error is the rare path (a stored INVITE that no longer scans) and is handled at once
    // by the caller: its size on the stack costs nothing.
    #[allow(clippy::result_large_err, clippy::too_many_arguments)]
    fn start_branch(
        &self,
        c: &mut Call,
        step: usize,
        target: Target,
        counted: bool,
        received: Option<&Message<'_>>,
        now: Instant,
        out: &mut Vec<Output>,
    ) -> Result<(TxKey, usize), CallOutputs> {
        let stored;
        let req = match received {
            Some(req) => req,
            None => {
                stored = c.request();
                match &stored {
                    Some(req) => req,
                    None => {
                        // The stored INVITE no longer scans: the call ends (with its own 500,
                        // if it can), and the call admitted at the destination never went.
                        if counted {
                            if let Some(h) = target.dest.and_then(|d| c.routing.health.get(d)) {
                                h.call_ended();
                            }
                        }
                        let mut todo = CallOutputs::new();
                        c.finish_local(500, "", now, &mut todo);
                        return Err(todo);
                    }
                }
            }
        };
        let branch = self.new_branch(self.loop_hash(req));
        let record_route = c
            .failover
            .then(|| self.record_route(req, c.upstream, &target, c));
        let index = c.branches.len();
        let offer = match &c.media {
            Some(CallMedia::Session(session)) => self.branch_offer(session, req, index, &target),
            Some(CallMedia::Dialog(dialog)) => dialog.request_edit(req),
            None => None,
        };
        let request_uri = target
            .dest
            .and_then(|d| c.routing.router.destination(d).request_uri.as_ref());
        let bytes = self.forward_request(
            req,
            target.peer.proto,
            &branch,
            record_route.as_deref(),
            offer.as_ref(),
            request_uri,
        );
        let key = self.keys.client(branch.as_bytes(), MethodClass::Invite);
        let mut acts = Vec::new();
        let tx = ClientInvite::start(
            bytes,
            target.peer.proto.is_reliable(),
            self.cfg.timers,
            now,
            &mut acts,
        );
        if let (true, Some(dest)) = (c.failover, target.dest) {
            c.routing.metrics.branch_attempt(dest);
        }
        emit(out, &mut acts, target.peer, key, Side::Client, Some(key));
        if let Some((at, kind)) = first_timer(c.failover, &target, now) {
            out.push(Output::Timer {
                at,
                timer: CoreTimer { key, kind },
            });
        }
        c.branches.push(Branch {
            key,
            step,
            branch,
            target,
            tx,
            status: BranchStatus::Pending,
            abandoned: false,
            cancel: CancelState::None,
            counted,
            ring_at: None,
            sent: now,
        });
        Ok((key, index))
    }

    /// Our Record-Route value(s): the node id, the destination's token (trunk affinity; its
    /// name stays hidden, see `topology`) and the caller's From tag (which tells the direction
    /// of later requests). When the two legs use different
    /// transports, two values (one per leg), as RFC 3261 §16.6 step 4 suggests.
    fn record_route(&self, req: &Message<'_>, upstream: Peer, target: &Target, c: &Call) -> String {
        let ftag = req
            .from
            .tag
            .map(|t| String::from_utf8_lossy(req.slice(t)))
            .unwrap_or_default();
        let dest = target.dest.map_or("dialog", |d| c.routing.tokens.of(d));
        let mut rr = String::with_capacity(2 * (64 + dest.len() + ftag.len()));
        let push_value = |rr: &mut String, proto: crate::peer::Proto| {
            rr.push_str(self.advertised.record_route(proto));
            rr.push_str(dest);
            rr.push_str(";ftag=");
            rr.push_str(&ftag);
            rr.push('>');
        };
        push_value(&mut rr, target.peer.proto);
        if upstream.proto != target.peer.proto {
            rr.push_str(", ");
            push_value(&mut rr, upstream.proto);
        }
        rr
    }

    pub(super) fn on_branch_response(
        &self,
        c: &mut Call,
        arc: &Arc<Mutex<Call>>,
        i: usize,
        r: Received<'_>,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        let msg = r.msg;
        let Some(code) = msg.code() else { return };
        let Some(b) = c.branches.get_mut(i) else {
            return;
        };
        let mut acts = Vec::new();
        let delivery = b.tx.on_response(code, now, &mut acts);
        if delivery == Delivery::DeliverNeedsAck {
            if let Some(invite) = originate::rescan(b.tx.request()) {
                let ack = originate::ack_for_non_2xx(&invite, msg);
                b.tx.send_ack(ack, &mut acts);
            }
        }
        let (peer, key) = (b.target.peer, b.key);
        emit(out, &mut acts, peer, key, Side::Client, Some(key));
        if delivery == Delivery::Absorb {
            return;
        }
        let mut todo = CallOutputs::new();
        match (code, r.relayable) {
            (100..=199, relayable) => {
                let anchored = (code > 100).then(|| c.media_answer(i, msg)).flatten();
                let relayed = || {
                    // 100 is hop by hop; everything else provisional goes to the caller.
                    (code > 100 && relayable == Relayable::Yes)
                        .then(|| Bytes::from(strip_top_via_with(msg, anchored.as_ref())))
                };
                c.on_provisional(i, code, relayed, now, &mut todo)
            }
            (200..=299, Relayable::Yes) => self.on_branch_2xx(c, i, r, now, &mut todo, out),
            (200..=299, Relayable::No) => {
                // A 2xx the caller cannot be given (no Via to relay it on): the destination's
                // call is torn down like a ghost, and the branch fails as a 502 Bad Gateway,
                // which fails over by default. A broken retransmission of a 2xx already
                // relayed is only absorbed.
                if c.branches[i].status != BranchStatus::Answered {
                    let to = Peer {
                        conn: r.from.conn,
                        ..c.branches[i].target.peer
                    };
                    self.ghost_teardown(msg, to, now, out);
                    if let Some(own) = c.own_response(502) {
                        c.on_final(i, 502, own, None, now, &mut todo);
                    }
                }
            }
            (_, Relayable::Yes) => {
                let relayed = Bytes::from(strip_top_via(msg));
                let retry_after = super::retry_after(msg);
                c.on_final(i, code, relayed, retry_after, now, &mut todo)
            }
            (_, Relayable::No) => {
                // The code counts; what the caller may get is our own response with it.
                if let Some(own) = c.own_response(code) {
                    let retry_after = super::retry_after(msg);
                    c.on_final(i, code, own, retry_after, now, &mut todo)
                }
            }
        }
        self.apply(c, arc, todo, None, now, out);
        self.reap_if_done(c);
    }

    fn on_branch_2xx(
        &self,
        c: &mut Call,
        i: usize,
        r: Received<'_>,
        now: Instant,
        todo: &mut CallOutputs,
        out: &mut Vec<Output>,
    ) {
        let msg = r.msg;
        let Some(peer) = c.branches.get(i).map(|b| b.target.peer) else {
            return;
        };
        let verdict = c.on_2xx(i);
        if verdict == TwoXx::Ghost {
            let to = Peer {
                conn: r.from.conn,
                ..peer
            };
            return self.ghost_teardown(msg, to, now, out);
        }
        let anchored = c.media_answer(i, msg);
        if verdict == TwoXx::Answer {
            c.media_answered(i, now);
        }
        let relayed = Bytes::from(strip_top_via_with(msg, anchored.as_ref()));
        let mut acts = Vec::new();
        let code = msg.code().unwrap_or(200);
        c.server.respond(code, relayed, now, &mut acts);
        emit(out, &mut acts, c.upstream, c.key, Side::Server, None);
        c.routing.metrics.response_out(code);
        if verdict == TwoXx::Retransmission {
            return;
        }
        if c.failover {
            self.count_in_setup(false);
            let key = self.dialog_key(msg);
            // Counted until its BYE: the branch's call at its destination goes on.
            let dest = c.branches[i]
                .target
                .dest
                .and_then(|d| c.routing.health.get(d).cloned());
            let callee = Peer {
                conn: r.from.conn,
                ..c.branches[i].target.peer
            };
            let invite = c.request();
            let info = invite.as_ref().and_then(|req| {
                super::calls::AnsweredInfo::capture(
                    req,
                    msg,
                    c.route().map(|r| r.name.as_str()),
                    c.branches[i]
                        .target
                        .dest
                        .map(|d| c.routing.router.destination(d).name.as_str()),
                    c.upstream,
                    callee,
                )
            });
            let answered = super::Answered {
                dest,
                since: now,
                caller: c.upstream,
                callee,
                caller_tag: invite
                    .as_ref()
                    .map_or(0, |req| self.tag_key(req.from.tag, req)),
                cseq: [invite.as_ref().map_or(0, |req| req.cseq), 0],
                info,
                media: c
                    .session()
                    .cloned()
                    .map(|session| super::anchor::AnsweredMedia {
                        session,
                        branch: i,
                        token: c.key,
                        invite: c.request.clone(),
                        answer: Bytes::copy_from_slice(msg.buf),
                    }),
            };
            if answered.media.is_some() {
                self.media_dialogs.insert(c.key, key);
            }
            if let Some(old) = self.answered.insert(key, answered) {
                // The same dialog answered twice (a forked 2xx with equal tags): count once.
                c.routing.metrics.calls_in_progress(-1);
                if let Some(d) = old.dest {
                    d.call_ended();
                }
            }
            // Kept twice the UAS's 2xx retransmission window, so a late copy is never taken
            // for a ghost; the sweep forgets it (and the call after MAX_CALL_DURATION).
            self.dialogs.insert(key, now);
            self.arm_sweep(now, out);
        }
        let reason = originate::reason_header(200, "Call completed elsewhere");
        c.cancel_pending(&reason, now, todo);
        self.log_outcome(c, code, now);
    }

    /// Provisional and ring timers of branch `i`.
    pub(super) fn on_branch_timer(
        &self,
        c: &mut Call,
        arc: &Arc<Mutex<Call>>,
        i: usize,
        kind: TimerKind,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        let mut todo = CallOutputs::new();
        c.on_timer(i, kind, now, &mut todo);
        self.apply(c, arc, todo, None, now, out);
    }

    /// Timers of a branch's INVITE client transaction.
    pub(super) fn on_branch_tx_timer(
        &self,
        c: &mut Call,
        arc: &Arc<Mutex<Call>>,
        i: usize,
        t: TxTimer,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        let mut todo = CallOutputs::new();
        let ended = c.on_tx_timer(i, t, now, &mut todo);
        self.apply(c, arc, todo, None, now, out);
        if ended {
            self.reap_if_done(c);
        }
    }

    pub(super) fn on_branch_transport_error(
        &self,
        c: &mut Call,
        arc: &Arc<Mutex<Call>>,
        i: usize,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        let mut todo = CallOutputs::new();
        let ended = c.on_transport_error(i, now, &mut todo);
        self.apply(c, arc, todo, None, now, out);
        if ended {
            self.reap_if_done(c);
        }
    }

    /// 64·T1 after branch `i`'s CANCEL: if it is still waiting for a final response, it ends.
    pub(super) fn on_cancel_give_up(&self, c: &mut Call, i: usize) {
        if c.on_cancel_give_up(i) {
            self.reap_if_done(c);
        }
    }

    /// The caller cancelled: CANCEL downstream, 487 upstream at once, no branch ever again.
    pub(super) fn cancel_call(
        &self,
        c: &mut Call,
        arc: &Arc<Mutex<Call>>,
        reason: &str,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        let mut todo = CallOutputs::new();
        c.cancel_call(reason, now, &mut todo);
        self.apply(c, arc, todo, None, now, out);
    }

    /// The caller cannot be reached any more: see [`Call::caller_unreachable`].
    pub(super) fn caller_unreachable(
        &self,
        c: &mut Call,
        arc: &Arc<Mutex<Call>>,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        let mut todo = CallOutputs::new();
        c.caller_unreachable(now, &mut todo);
        self.apply(c, arc, todo, None, now, out);
    }

    /// One line per call outcome: where it went and why. A call answered by the first
    /// destination it tried is the normal case, already counted in the metrics: its line is
    /// `debug`. Every call that failed over or failed gets an `info` line.
    fn log_outcome(&self, c: &Call, code: u16, now: Instant) {
        if !c.failover {
            return;
        }
        let took = now.saturating_duration_since(c.started);
        c.routing
            .metrics
            .call_outcome(c.route, code, c.caller_cancelled);
        c.routing.metrics.invite_final(took);
        let routine = (200..300).contains(&code) && c.branches.len() == 1;
        let wanted = if routine {
            tracing::enabled!(tracing::Level::DEBUG)
        } else {
            tracing::enabled!(tracing::Level::INFO)
        };
        if !wanted {
            return;
        }
        // Branches in the order they started, with the destinations skipped at a cap in their
        // place (`primary:max_calls`: no INVITE went there).
        let skipped = |&(_, dest, cap): &(usize, DestId, Cap)| {
            let key = match cap {
                Cap::Calls => "max_calls",
                Cap::Cps => "max_cps",
            };
            format!("{}:{key}", c.routing.router.destination(dest).name)
        };
        let mut capped = c.capped.iter().peekable();
        let mut tried: Vec<String> = Vec::with_capacity(c.branches.len() + c.capped.len());
        for (i, b) in c.branches.iter().enumerate() {
            while let Some(skip) = capped.next_if(|(at, _, _)| *at <= i) {
                tried.push(skipped(skip));
            }
            tried.push(format!(
                "{}:{}",
                c.dest_name(&b.target),
                branch_outcome(c, b)
            ));
        }
        tried.extend(capped.map(skipped));
        let call_id = c
            .request()
            .map(|m| String::from_utf8_lossy(m.slice(m.call_id)).into_owned())
            .unwrap_or_default();
        let route = c.route().map(|r| r.name.as_str()).unwrap_or("-");
        let (tried, ms) = (tried.join(","), took.as_millis() as u64);
        if routine {
            debug!(call_id = %call_id, route, tried = %tried, code, ms, "call outcome");
        } else {
            info!(call_id = %call_id, route, tried = %tried, code, ms, "call outcome");
        }
    }

    /// Frees what a settled call no longer needs, and forgets a call whose transactions have
    /// all ended.
    pub(super) fn reap_if_done(&self, c: &mut Call) {
        c.shed_if_settled();
        self.compact_if_answered(c);
        if !c.is_done() || c.reaped {
            return;
        }
        c.reaped = true;
        self.count_in_progress(false);
        self.servers.remove(&c.key);
        for i in 0..c.branches.len() {
            self.clients.remove(&c.branches[i].key);
            c.release(i);
        }
    }

    /// An answered call whose other branches have all ended needs nothing of its context any
    /// more: its INVITE's entry only absorbs retransmissions and its answering branch's only
    /// relays 2xx retransmissions, until Timers L and M. Both become tombstones and the call
    /// itself is freed.
    fn compact_if_answered(&self, c: &mut Call) {
        if c.reaped
            || c.phase != CallPhase::Answered
            || c.server.state() != ServerInviteState::Accepted
        {
            return;
        }
        let mut winner = None;
        for b in &c.branches {
            match b.tx.state() {
                ClientInviteState::Terminated => {}
                ClientInviteState::Accepted
                    if b.status == BranchStatus::Answered && winner.is_none() =>
                {
                    winner = Some(b.key)
                }
                _ => return,
            }
        }
        let Some(winner) = winner else { return };
        c.reaped = true;
        self.count_in_progress(false);
        for i in 0..c.branches.len() {
            c.release(i);
            let key = c.branches[i].key;
            if key != winner {
                self.clients.remove(&key);
            }
        }
        self.servers.insert(c.key, ServerEntry::Accepted);
        self.clients
            .insert(winner, ClientEntry::Accepted(c.upstream));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transaction::TimerConfig;

    const INVITE: &[u8] = b"INVITE sip:+15551234@192.0.2.10 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-unit\r\n\
        Max-Forwards: 70\r\n\
        From: <sip:+15550000@10.0.0.1>;tag=c1\r\n\
        To: <sip:+15551234@192.0.2.10>\r\n\
        Call-ID: unit\r\n\
        CSeq: 1 INVITE\r\n\
        Content-Length: 0\r\n\r\n";

    /// The core tests' rules (`primary` then `secondary`) through the shared harness's routing.
    fn routing(now: Instant) -> Routing {
        let router = crate::core::tests::compile(crate::core::tests::RULES);
        let (metrics, _) = crate::testing::local_metrics(&router);
        crate::testing::routing(Arc::new(router), metrics, now)
    }

    /// A call in setup on the default route with `steps` (destination ids), no core around it.
    fn call(steps: &[&[u32]], now: Instant) -> Call {
        let routing = Arc::new(routing(now));
        let steps = steps
            .iter()
            .map(|s| {
                s.iter()
                    .map(|&id| Target {
                        dest: Some(DestId(id)),
                        peer: routing.peer(DestId(id)),
                        provisional: Duration::from_secs(3),
                        cancel_mode: CancelMode::Immediate,
                    })
                    .collect()
            })
            .collect();
        Call {
            key: 1,
            server: ServerInvite::new(false, TimerConfig::default()),
            upstream: Peer::udp("10.0.0.1:5060".parse().expect("addr")),
            request: Bytes::from_static(INVITE),
            routing,
            route: Some(RouteId(0)),
            steps,
            next_step: 0,
            settled: false,
            survival_reject: None,
            branches: Vec::new(),
            phase: CallPhase::Trying,
            best: None,
            failover: true,
            started: now,
            caller_cancelled: false,
            rang: false,
            reaped: false,
            policy: CallPolicy {
                retry_after: Duration::from_secs(30),
                cancel_give_up: Duration::from_secs(32),
            },
            media: None,
            capped: SmallVec::new(),
        }
    }

    /// Does what the core does with a `NewBranch`: a branch whose INVITE went out at `now`.
    fn start(c: &mut Call, outs: CallOutputs, now: Instant) {
        for o in outs {
            let CallOutput::NewBranch {
                step,
                target,
                counted,
            } = o
            else {
                panic!("only new branches expected, got {o:?}")
            };
            let index = c.branches.len();
            let tx = ClientInvite::start(
                Bytes::from_static(INVITE),
                false,
                TimerConfig::default(),
                now,
                &mut Vec::new(),
            );
            c.branches.push(Branch {
                key: 100 + index as u64,
                step,
                branch: format!("z9hG4bK-b{index}"),
                target,
                tx,
                status: BranchStatus::Pending,
                abandoned: false,
                cancel: CancelState::None,
                counted,
                ring_at: None,
                sent: now,
            });
        }
    }

    /// A short name for each output, in order.
    fn kinds(outs: &[CallOutput]) -> Vec<String> {
        outs.iter()
            .map(|o| match o {
                CallOutput::Out(Output::Send { bytes, .. }) => {
                    let end = bytes
                        .iter()
                        .position(|&b| b == b'\r')
                        .unwrap_or(bytes.len());
                    format!("send {}", String::from_utf8_lossy(&bytes[..end]))
                }
                CallOutput::Out(Output::Timer { timer, .. }) => format!("timer {:?}", timer.kind),
                CallOutput::Out(Output::ToNode { node, .. }) => format!("to node {node}"),
                CallOutput::Out(Output::ProbeReply { .. }) => "probe reply".into(),
                CallOutput::Out(Output::Replicate { .. }) => "replicate".into(),
                CallOutput::Cancel { branch, .. } => format!("cancel {branch}"),
                CallOutput::NewBranch { step, target, .. } => {
                    format!("branch {step} to {:?}", target.dest.map(|d| d.0))
                }
                CallOutput::Finished { code } => format!("finished {code}"),
            })
            .collect()
    }

    /// Branch `i` got final `code` (its transaction completes as in the core), then the call
    /// hears of it.
    fn final_on(c: &mut Call, i: usize, code: u16, now: Instant) -> CallOutputs {
        c.branches[i].tx.on_response(code, now, &mut Vec::new());
        let mut out = CallOutputs::new();
        let bytes = Bytes::from(format!("SIP/2.0 {code} Whatever\r\n\r\n"));
        c.on_final(i, code, bytes, None, now, &mut out);
        out
    }

    #[test]
    fn a_503_from_the_primary_cancels_nothing_and_asks_for_the_secondary() {
        let now = Instant::now();
        let mut c = call(&[&[0], &[1]], now);
        let mut out = CallOutputs::new();
        c.next_step(now, &mut out);
        assert_eq!(kinds(&out), ["branch 0 to Some(0)"]);
        start(&mut c, out, now);
        let out = final_on(&mut c, 0, 503, now);
        assert_eq!(
            kinds(&out),
            ["branch 1 to Some(1)"],
            "a completed branch gets no CANCEL"
        );
        assert_eq!(c.phase, CallPhase::Trying);
    }

    #[test]
    fn a_silent_primary_gets_its_cancel_before_the_secondary_is_asked_for() {
        let now = Instant::now();
        let mut c = call(&[&[0], &[1]], now);
        let mut out = CallOutputs::new();
        c.next_step(now, &mut out);
        start(&mut c, out, now);
        let mut out = CallOutputs::new();
        c.on_timer(
            0,
            TimerKind::Provisional,
            now + Duration::from_secs(3),
            &mut out,
        );
        assert_eq!(
            kinds(&out),
            ["timer CancelGiveUp", "cancel 0", "branch 1 to Some(1)"]
        );
        assert_eq!(c.branches[0].status, BranchStatus::TimedOut);
    }

    #[test]
    fn across_parallel_branches_a_486_beats_a_503_whichever_comes_first() {
        for order in [[0, 1], [1, 0]] {
            let now = Instant::now();
            let mut c = call(&[&[0, 1]], now);
            let mut out = CallOutputs::new();
            c.next_step(now, &mut out);
            assert_eq!(kinds(&out), ["branch 0 to Some(0)", "branch 0 to Some(1)"]);
            start(&mut c, out, now);
            let codes = [486, 503];
            let first = final_on(&mut c, order[0], codes[order[0]], now);
            assert!(
                first.is_empty(),
                "the other branch may still answer: {:?}",
                kinds(&first)
            );
            let second = final_on(&mut c, order[1], codes[order[1]], now);
            assert_eq!(
                kinds(&second),
                [
                    "send SIP/2.0 486 Whatever",
                    "timer Server(G)",
                    "timer Server(H)",
                    "finished 486"
                ],
                "order {order:?}"
            );
            assert_eq!(c.phase, CallPhase::Finished);
        }
    }

    #[test]
    fn a_2xx_on_a_branch_given_up_on_or_after_the_answer_is_a_ghost() {
        let now = Instant::now();
        let mut c = call(&[&[0, 1]], now);
        let mut out = CallOutputs::new();
        c.next_step(now, &mut out);
        start(&mut c, out, now);
        assert_eq!(c.on_2xx(1), TwoXx::Answer);
        assert_eq!(c.phase, CallPhase::Answered);
        assert_eq!(c.on_2xx(1), TwoXx::Retransmission);
        assert_eq!(c.on_2xx(0), TwoXx::Ghost, "the other branch lost the race");
        assert_eq!(c.on_2xx(7), TwoXx::Ghost, "no such branch");
    }

    #[test]
    fn a_provisional_is_relayed_once_the_branch_rings_and_a_100_is_not() {
        let now = Instant::now();
        let mut c = call(&[&[0], &[1]], now);
        let mut out = CallOutputs::new();
        c.next_step(now, &mut out);
        start(&mut c, out, now);
        let mut out = CallOutputs::new();
        c.on_provisional(0, 100, || None, now, &mut out);
        assert!(out.is_empty(), "{:?}", kinds(&out));
        assert_eq!(c.branches[0].status, BranchStatus::Trying);
        let ringing = Bytes::from_static(b"SIP/2.0 180 Ringing\r\n\r\n");
        c.on_provisional(0, 180, || Some(ringing), now, &mut out);
        assert_eq!(kinds(&out), ["send SIP/2.0 180 Ringing"]);
        assert_eq!(c.branches[0].status, BranchStatus::Ringing);
        assert!(c.rang);
    }

    #[test]
    fn every_destination_failing_with_503_ends_the_call_with_500() {
        let now = Instant::now();
        let mut c = call(&[&[0], &[1]], now);
        let mut out = CallOutputs::new();
        c.next_step(now, &mut out);
        start(&mut c, out, now);
        let out = final_on(&mut c, 0, 503, now);
        start(&mut c, out, now);
        let out = final_on(&mut c, 1, 503, now);
        assert_eq!(
            kinds(&out).last().map(String::as_str),
            Some("finished 500"),
            "503 goes upstream as 500 (pass_503 is off)"
        );
    }

    #[test]
    fn best_response_prefers_6xx_then_lowest_class_and_503_last() {
        assert!(better(603, 486));
        assert!(better(486, 500));
        assert!(better(500, 503));
        assert!(better(502, 503));
        assert!(!better(503, 500));
        assert!(better(404, 503));
        assert!(!better(486, 404), "same class: first one stays");
    }
}
