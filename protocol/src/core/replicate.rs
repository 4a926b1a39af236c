//! A call's state as plain data: what another node needs to carry on a call in setup or an
//! answered dialog (call replication between the nodes of a pair), and the export from and
//! restore into a [`Core`].
//!
//! It owns the serde shapes ([`CallState`] and its parts) and the mapping between them and the
//! core's live structures. Instants are written as durations relative to the export's `now`
//! (two nodes' clocks share no epoch); table keys are never written, since they are keyed
//! hashes seeded per process: restore computes them again from the stored messages. What is
//! not data (the routing snapshot, health and metric handles, locks) is re-attached from the
//! restoring core, by `RouteId`/`DestId`, which are config-order indices and the same on two
//! nodes with the same config.
//!
//! It must not: change how a call behaves once restored (the call's own code runs it), read a
//! clock, or trust a state it is given: a state that names unknown routes or destinations, or
//! whose INVITE does not scan, is refused.

use super::call::{first_timer, Branch, BranchStatus, Call, CallPhase, CancelState, Target};
use super::{emit, lock, Answered, Core, CoreTimer, Output, Routing, ServerEntry, Side};
use super::{ClientEntry, TimerKind};
use crate::originate;
use crate::peer::{Peer, Proto};
use crate::transaction::MethodClass;
use crate::transaction::{
    ClientInvite, ClientInviteSnapshot, ClientInviteState, ServerInvite, ServerInviteSnapshot,
};
use crate::wire::Method;
use bytes::Bytes;
use routing_rules::spec::CancelMode;
use routing_rules::{DestId, RouteId};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A call, as another node needs it to carry on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallState {
    /// An INVITE whose caller has no final answer yet.
    Setup(Box<SetupState>),
    /// An answered call, until its BYE.
    Answered(Box<AnsweredState>),
}

/// A peer without its connection: connection ids only mean something in the process that
/// made them, so the restoring node reaches the address anew.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerState {
    pub proto: Proto,
    pub addr: SocketAddr,
}

impl PeerState {
    fn of(p: Peer) -> PeerState {
        PeerState {
            proto: p.proto,
            addr: p.addr,
        }
    }

    fn peer(self) -> Peer {
        Peer {
            proto: self.proto,
            addr: self.addr,
            conn: None,
        }
    }
}

/// One destination of a call's plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetState {
    /// `DestId`; `None` for a re-INVITE's next hop outside the rules.
    pub dest: Option<u32>,
    /// Where to send (the restoring node takes it from its rules when `dest` is set).
    pub peer: PeerState,
    pub provisional: Duration,
    pub deferred_cancel: bool,
}

/// One branch of a call in setup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BranchState {
    /// Index of the step that started it.
    pub step: usize,
    /// Its Via branch parameter: its client transaction's key is computed from it.
    pub branch: String,
    pub target: TargetState,
    pub tx: ClientInviteSnapshot,
    pub status: BranchStatus,
    pub abandoned: bool,
    pub cancel: CancelState,
    /// Counted as a call in progress at its destination.
    pub counted: bool,
    /// When its ring timeout ends, from the export.
    pub ring_in: Option<Duration>,
    /// How long before the export its INVITE was first sent.
    pub sent_ago: Duration,
}

/// A call in setup: the INVITE as received, its plan and position in it, its transactions.
///
/// The INVITEs never change: a state sent to a node that has an earlier one of the call leaves
/// them out (exported with the branches the node knows) and the receiver takes them from its
/// earlier one ([`SetupState::complete_from`]). A state still missing one is refused by restore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetupState {
    /// The INVITE as received from the caller (empty: left out).
    pub request: Bytes,
    pub upstream: PeerState,
    /// `RouteId`.
    pub route: Option<u32>,
    pub steps: Vec<Vec<TargetState>>,
    pub next_step: usize,
    pub settled: bool,
    pub survival_reject: Option<(u16, Option<Duration>)>,
    pub branches: Vec<BranchState>,
    /// Best final non-2xx so far: code and the bytes the caller would get.
    pub best: Option<(u16, Bytes)>,
    /// Initial INVITE (failover applies) or re-INVITE.
    pub failover: bool,
    /// How long before the export the INVITE arrived.
    pub started_ago: Duration,
    pub caller_cancelled: bool,
    pub rang: bool,
    pub server: ServerInviteSnapshot,
}

/// Names an answered dialog: its Call-ID, the caller's From tag and the callee's To tag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialogId {
    #[serde(with = "serde_bytes")]
    pub call_id: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub caller_tag: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub callee_tag: Vec<u8>,
}

/// An answered call, until its BYE: where each side is, and who answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnsweredState {
    pub id: DialogId,
    /// `DestId` of the destination that answered.
    pub dest: Option<u32>,
    /// How long before the export it was answered.
    pub answered_ago: Duration,
    pub caller: PeerState,
    pub callee: PeerState,
    /// Its 2xx may still be retransmitted (it is held so a copy is not taken for a ghost):
    /// how long before the export that window opened.
    pub retransmit_window_ago: Option<Duration>,
    /// What the operator's list shows and what ending the call needs.
    pub info: Option<AnsweredInfoState>,
    /// The highest CSeq relayed from the caller and from the callee as of the export: a BYE
    /// of the adopting node's own goes above it.
    pub cseq: [u32; 2],
}

/// An answered call's [`AnsweredInfo`](super::calls) as plain data: the header values, one
/// after another, and where each ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnsweredInfoState {
    #[serde(with = "serde_bytes")]
    pub text: Vec<u8>,
    pub ends: Vec<u16>,
}

/// Why a state was not restored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RestoreError {
    #[error("the stored INVITE does not scan as an INVITE")]
    Request,
    #[error("route {0} is not in this node's rules")]
    Route(u32),
    #[error("destination {0} is not in this node's rules")]
    Destination(u32),
    #[error(
        "a branch has no branch id, or no INVITE while it awaits its answer, or names a step \
         the plan does not have"
    )]
    Branch,
    #[error("the plan's position is past its end")]
    Plan,
    #[error("this node already holds the call")]
    Known,
}

impl SetupState {
    /// Takes what this state left out from `earlier`, a state of the same call: its INVITE, and
    /// each branch's INVITE by branch id.
    pub fn complete_from(&mut self, earlier: &mut SetupState) {
        if self.request.is_empty() {
            self.request = std::mem::take(&mut earlier.request);
        }
        for b in self.branches.iter_mut().filter(|b| b.tx.request.is_empty()) {
            if let Some(e) = earlier.branches.iter_mut().find(|e| e.branch == b.branch) {
                b.tx.request = std::mem::take(&mut e.tx.request);
            }
        }
    }
}

/// `now - ago`, or `now` when the clock cannot go back that far.
fn before(now: Instant, ago: Duration) -> Instant {
    now.checked_sub(ago).unwrap_or(now)
}

fn target_state(t: &Target) -> TargetState {
    TargetState {
        dest: t.dest.map(|d| d.0),
        peer: PeerState::of(t.peer),
        provisional: t.provisional,
        deferred_cancel: t.cancel_mode == CancelMode::Deferred,
    }
}

/// The target of `t` in `routing`: a destination's address comes from the rules.
fn target(routing: &Routing, t: TargetState) -> Result<Target, RestoreError> {
    let dest = t.dest.map(|d| dest_id(routing, d)).transpose()?;
    Ok(Target {
        dest,
        peer: dest.map_or(t.peer.peer(), |d| routing.peer(d)),
        provisional: t.provisional,
        cancel_mode: if t.deferred_cancel {
            CancelMode::Deferred
        } else {
            CancelMode::Immediate
        },
    })
}

fn dest_id(routing: &Routing, d: u32) -> Result<DestId, RestoreError> {
    let known = (d as usize) < routing.router.rules.destinations.len()
        && (d as usize) < routing.addrs.len();
    known
        .then_some(DestId(d))
        .ok_or(RestoreError::Destination(d))
}

impl Core {
    /// The call in setup whose INVITE has Call-ID `call_id`, as of `now` (`None` when there is
    /// none, or its caller has its final answer: see [`Core::export_dialog`]). The call goes on
    /// here: this is a copy.
    ///
    /// It walks the table of server transactions: a replication layer that exports on every
    /// change would keep the INVITE's key instead.
    pub fn export_call(&self, call_id: &[u8], now: Instant) -> Option<CallState> {
        self.calls().iter().find_map(|call| {
            let c = lock(call);
            if c.phase != CallPhase::Trying {
                return None;
            }
            let req = c.request()?;
            if req.slice(req.call_id) != call_id {
                return None;
            }
            Some(CallState::Setup(Box::new(setup_state(&c, now, None))))
        })
    }

    /// Every call the table of server transactions holds. Arcs first, locks after: no call is
    /// locked while a table guard is held.
    pub(super) fn calls(&self) -> Vec<Arc<Mutex<Call>>> {
        self.servers
            .iter()
            .filter_map(|e| match e.value() {
                ServerEntry::Call(c) => Some(c.clone()),
                _ => None,
            })
            .collect()
    }

    /// The call in setup `c` (locked by the caller), as of `now`. With `known`, for a node that
    /// has a state of the call with its first `known` branches: the INVITEs it has are left out.
    pub(super) fn export_locked(&self, c: &Call, now: Instant, known: Option<usize>) -> CallState {
        CallState::Setup(Box::new(setup_state(c, now, known)))
    }

    /// The answered dialog `id`, as of `now`. The call goes on here: this is a copy.
    pub fn export_dialog(&self, id: &DialogId, now: Instant) -> Option<CallState> {
        let key = self.dialog_key_of(&id.call_id, &id.caller_tag, &id.callee_tag);
        // Copied out at once: no other table is read while this one's guard is held.
        let (caller, callee, stored_tag, since, answered_by, info, cseq) = {
            let a = self.answered.get(&key)?;
            let info = a.info.as_ref().map(super::calls::AnsweredInfo::to_state);
            (
                a.caller,
                a.callee,
                a.caller_tag,
                a.since,
                a.dest.clone(),
                info,
                a.cseq,
            )
        };
        let caller_tag = self.keys.of(&[&id.caller_tag]);
        // The tags were given the other way round: the state names the caller first.
        let id = if caller_tag == stored_tag {
            id.clone()
        } else {
            DialogId {
                call_id: id.call_id.clone(),
                caller_tag: id.callee_tag.clone(),
                callee_tag: id.caller_tag.clone(),
            }
        };
        let routing = self.routing();
        let dest = answered_by.as_ref().and_then(|d| {
            let i = routing.health.iter().position(|h| Arc::ptr_eq(h, d))?;
            u32::try_from(i).ok()
        });
        Some(CallState::Answered(Box::new(AnsweredState {
            id,
            dest,
            answered_ago: now.saturating_duration_since(since),
            caller: PeerState::of(caller),
            callee: PeerState::of(callee),
            retransmit_window_ago: self
                .dialogs
                .since(key)
                .map(|s| now.saturating_duration_since(s)),
            info,
            cseq,
        })))
    }

    /// Takes over `state` (exported by another node, or this one before a restart) at `now`:
    /// the call and its transactions go into this core's tables under keys computed here, and
    /// the timers its state needs are appended to `out`. Nothing is sent: the call goes on with
    /// the next message or timer. The call counts as in progress here, and a branch counted at
    /// its destination is counted at this node's view of it.
    pub fn restore_call(
        &self,
        state: CallState,
        now: Instant,
        out: &mut Vec<Output>,
    ) -> Result<(), RestoreError> {
        match state {
            CallState::Setup(s) => self.restore_setup(*s, now, out),
            CallState::Answered(a) => self.restore_answered(*a, now, out),
        }
    }

    fn restore_setup(
        &self,
        s: SetupState,
        now: Instant,
        out: &mut Vec<Output>,
    ) -> Result<(), RestoreError> {
        let routing = self.routing();
        let request = s.request;
        let msg = originate::rescan(&request).ok_or(RestoreError::Request)?;
        if msg.method() != Some(Method::Invite) {
            return Err(RestoreError::Request);
        }
        let key = self.keys.server(&msg);
        if self.servers.contains_key(&key) {
            return Err(RestoreError::Known);
        }
        let route = match s.route {
            Some(r) if (r as usize) < routing.router.rules.routes.len() => Some(RouteId(r)),
            Some(r) => return Err(RestoreError::Route(r)),
            None => None,
        };
        let steps = s
            .steps
            .into_iter()
            .map(|step| step.into_iter().map(|t| target(&routing, t)).collect())
            .collect::<Result<Vec<_>, _>>()?;
        if s.next_step > steps.len() {
            return Err(RestoreError::Plan);
        }
        // Everything is checked before anything is registered or armed.
        let mut branches = Vec::with_capacity(s.branches.len());
        for b in s.branches {
            // A branch still waiting on its final answer re-sends and cancels its INVITE: a
            // state that left it out and found no earlier one to take it from is incomplete.
            let unsent = b.tx.request.is_empty()
                && matches!(
                    b.tx.state,
                    ClientInviteState::Calling | ClientInviteState::Proceeding
                );
            if b.branch.is_empty() || unsent || b.step >= steps.len().max(1) {
                return Err(RestoreError::Branch);
            }
            let bkey = self.keys.client(b.branch.as_bytes(), MethodClass::Invite);
            if self.clients.contains_key(&bkey) {
                return Err(RestoreError::Known);
            }
            branches.push((bkey, target(&routing, b.target)?, b));
        }

        let timers = self.cfg.timers;
        let mut acts = Vec::new();
        let upstream = s.upstream.peer();
        let server = ServerInvite::restore(s.server, timers, now, &mut acts);
        emit(out, &mut acts, upstream, key, Side::Server, None);
        let mut live = Vec::with_capacity(branches.len());
        for (bkey, target, b) in branches {
            let tx = ClientInvite::restore(b.tx, timers, now, &mut acts);
            emit(out, &mut acts, target.peer, bkey, Side::Client, Some(bkey));
            let counted = b.counted
                && match target.dest.and_then(|d| routing.health.get(d)) {
                    Some(h) => {
                        h.call_started();
                        true
                    }
                    None => false,
                };
            live.push(Branch {
                key: bkey,
                step: b.step,
                branch: b.branch,
                target,
                tx,
                status: b.status,
                abandoned: b.abandoned,
                cancel: b.cancel,
                counted,
                ring_at: b.ring_in.and_then(|d| now.checked_add(d)),
                sent: before(now, b.sent_ago),
            });
        }
        let c = Call {
            key,
            server,
            upstream,
            request,
            routing: routing.clone(),
            route,
            steps,
            next_step: s.next_step,
            settled: s.settled,
            survival_reject: s.survival_reject,
            branches: live,
            phase: CallPhase::Trying,
            best: s.best,
            failover: s.failover,
            started: before(now, s.started_ago),
            caller_cancelled: s.caller_cancelled,
            rang: s.rang,
            reaped: false,
            policy: self.call_policy(),
            // Media sessions are not replicated: a restored call's media is not anchored.
            media: None,
            capped: smallvec::SmallVec::new(),
        };
        for b in &c.branches {
            self.rearm_branch(&c, b, now, out);
        }
        let keys: Vec<_> = c.branches.iter().map(|b| b.key).collect();
        let failover = c.failover;
        let call = Arc::new(Mutex::new(c));
        self.count_in_progress(true);
        if failover {
            routing.metrics.calls_in_progress(1);
            self.count_in_setup(true);
        }
        self.servers.insert(key, ServerEntry::Call(call.clone()));
        for (i, bkey) in keys.into_iter().enumerate() {
            self.clients
                .insert(bkey, ClientEntry::Branch(call.clone(), i));
        }
        Ok(())
    }

    /// The core's own timers a restored branch needs (its transaction's are armed by
    /// [`ClientInvite::restore`]). A timer already due fires at once.
    fn rearm_branch(&self, c: &Call, b: &Branch, now: Instant, out: &mut Vec<Output>) {
        let mut arm = |at: Instant, kind: TimerKind| {
            out.push(Output::Timer {
                at: at.max(now),
                timer: CoreTimer { key: b.key, kind },
            })
        };
        let unanswered = matches!(
            b.status,
            BranchStatus::Pending | BranchStatus::Trying | BranchStatus::Ringing
        );
        if !b.abandoned && unanswered {
            if !c.failover || b.status == BranchStatus::Pending {
                if let Some((at, kind)) = first_timer(c.failover, &b.target, b.sent) {
                    arm(at, kind);
                }
            } else if let Some(at) = b.ring_at {
                // The provisional timer that would have armed it has fired on the old node.
                arm(at, TimerKind::Ring);
            }
        }
        let waiting = matches!(
            b.tx.state(),
            ClientInviteState::Calling | ClientInviteState::Proceeding
        );
        if b.cancel == CancelState::Sent && waiting {
            // When the CANCEL left is not kept: the give-up counts from now, never earlier.
            arm(now + self.cfg.timers.t1x64(), TimerKind::CancelGiveUp);
        }
    }

    fn restore_answered(
        &self,
        a: AnsweredState,
        now: Instant,
        out: &mut Vec<Output>,
    ) -> Result<(), RestoreError> {
        let routing = self.routing();
        let key = self.dialog_key_of(&a.id.call_id, &a.id.caller_tag, &a.id.callee_tag);
        if self.answered.contains_key(&key) {
            return Err(RestoreError::Known);
        }
        let dest = match a.dest {
            Some(d) => routing.health.get(dest_id(&routing, d)?).cloned(),
            None => None,
        };
        if let Some(h) = &dest {
            h.call_started();
        }
        routing.metrics.calls_in_progress(1);
        self.answered.insert(
            key,
            Answered {
                dest,
                since: before(now, a.answered_ago),
                caller: a.caller.peer(),
                callee: a.callee.peer(),
                caller_tag: self.keys.of(&[&a.id.caller_tag]),
                media: None,
                info: a.info.and_then(super::calls::AnsweredInfo::from_state),
                cseq: a.cseq,
            },
        );
        if let Some(ago) = a.retransmit_window_ago {
            self.dialogs.insert(key, before(now, ago));
        }
        self.arm_sweep(now, out);
        Ok(())
    }
}

/// A call in setup as plain data.
/// Call `c` in setup as of `now`; `known`: see [`Core::export_locked`].
fn setup_state(c: &Call, now: Instant, known: Option<usize>) -> SetupState {
    let branches_known = known.unwrap_or(0);
    SetupState {
        request: match known {
            Some(_) => Bytes::new(),
            None => c.request.clone(),
        },
        upstream: PeerState::of(c.upstream),
        route: c.route.map(|r| r.0),
        steps: c
            .steps
            .iter()
            .map(|s| s.iter().map(target_state).collect())
            .collect(),
        next_step: c.next_step,
        settled: c.settled,
        survival_reject: c.survival_reject,
        branches: c
            .branches
            .iter()
            .enumerate()
            .map(|(i, b)| BranchState {
                step: b.step,
                branch: b.branch.clone(),
                target: target_state(&b.target),
                tx: b.tx.snapshot(now, i >= branches_known),
                status: b.status,
                abandoned: b.abandoned,
                cancel: b.cancel,
                counted: b.counted,
                ring_in: b.ring_at.map(|at| at.saturating_duration_since(now)),
                sent_ago: now.saturating_duration_since(b.sent),
            })
            .collect(),
        best: c.best.as_ref().map(|(code, b)| (*code, b.clone())),
        failover: c.failover,
        started_ago: now.saturating_duration_since(c.started),
        caller_cancelled: c.caller_cancelled,
        rang: c.rang,
        server: c.server.snapshot(),
    }
}
