//! Calls an operator can see and end (the admin API's `/calls`, `pointsman calls`): the calls
//! in setup and the answered calls of this node as plain data, and the end of one: a call in
//! setup gets CANCEL on every live branch and 480 upstream, as a ring timeout ends a call; an
//! answered call gets a BYE of pointsman's own towards each side. Every message carries
//! [`OPERATOR_REASON`].
//!
//! What ending an answered call needs is captured when it is answered, from the stored INVITE
//! and the 2xx, into [`AnsweredInfo`]: one allocation of the few header values the two BYEs
//! and the listing need, not the messages.
//!
//! A call adopted from a dead peer of a pair is listed and ended like one of this node's: its
//! replicated state carries the same [`AnsweredInfo`] (as [`AnsweredInfoState`]).
//!
//! It must not: list the replicas a pair's peer sends (they are that node's calls until it
//! dies), or touch a table while a call is locked.

use super::call::{BranchStatus, Call, CallOutputs, CallPhase};
use super::replicate::AnsweredInfoState;
use super::*;
use crate::originate::InDialog;

/// The Reason (RFC 3326) of everything an operator's end of a call sends: the CANCELs and the
/// 480 of a call in setup, the BYEs of an answered call. One cause for all of them, so both
/// sides' records tell the same story: 480 Temporarily Unavailable, the code the caller of a
/// call in setup gets.
pub fn operator_reason() -> String {
    originate::reason_header(OPERATOR_CAUSE, OPERATOR_REASON)
}

/// The text of [`operator_reason`].
pub const OPERATOR_REASON: &str = "ended by operator";

/// The cause of [`operator_reason`], and the final response a call in setup ended by the
/// operator gets: 480 says "not now" without inviting the carrier to try its next trunk at once
/// (a 503 would, and the call would come straight back to the node or its peer).
pub const OPERATOR_CAUSE: u16 = 480;

/// Where a listed call stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallStage {
    /// The caller has no final answer yet.
    Setup,
    /// A 2xx was relayed; no BYE yet.
    Answered,
}

impl CallStage {
    pub fn as_str(self) -> &'static str {
        match self {
            CallStage::Setup => "setup",
            CallStage::Answered => "answered",
        }
    }
}

/// One call as the operator sees it (`GET /calls`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CallSummary {
    pub call_id: String,
    pub state: CallStage,
    /// The route that took it (`None`: no route matched).
    pub route: Option<String>,
    /// In setup: the destination of the branch tried now (the latest one still live); answered:
    /// the destination that answered.
    pub destination: Option<String>,
    /// In setup: where that branch stands, `pending` (nothing back yet), `trying` (100) or
    /// `ringing` (a provisional above 100). Answered: `None`.
    #[serde(default)]
    pub branch: Option<String>,
    /// In setup: every destination a branch went to, in order. Answered: empty (the record an
    /// answered call keeps names only the destination that answered).
    #[serde(default)]
    pub tried: Vec<String>,
    /// The caller's number as routing saw it (P-Asserted-Identity user, else From user).
    pub from: Option<String>,
    /// The dialled number as routing saw it (Request-URI user).
    pub to: Option<String>,
    /// Seconds since the INVITE arrived (setup) or since the call was answered.
    pub age_secs: u64,
    /// The node of a pair whose call this is, when that node is down and this one holds its
    /// replica (ending it here adopts it); `None`: this node's call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<u16>,
}

/// What `GET /calls` may be filtered on; every filter given must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallFilter {
    /// The route's name, exactly.
    pub route: Option<String>,
    /// The destination's name, exactly (the one tried now, or the one that answered).
    pub destination: Option<String>,
    /// A number the caller's or the dialled number ends with, digits only compared
    /// (`+1 (555) 123-4567`, `15551234567` and `5551234567` all match `+15551234567`).
    pub number: Option<String>,
    /// At least this old, in seconds.
    pub min_age_secs: Option<u64>,
}

impl CallFilter {
    pub fn matches(&self, call: &CallSummary) -> bool {
        let same = |want: &Option<String>, have: &Option<String>| {
            want.as_ref().is_none_or(|w| have.as_deref() == Some(w))
        };
        let number = self.number.as_deref().map(digits);
        let has_number = |n: &Option<String>| {
            let (Some(want), Some(have)) = (&number, n) else {
                return false;
            };
            !want.is_empty() && digits(have).ends_with(want.as_str())
        };
        same(&self.route, &call.route)
            && same(&self.destination, &call.destination)
            && (number.is_none() || has_number(&call.from) || has_number(&call.to))
            && self.min_age_secs.is_none_or(|min| call.age_secs >= min)
    }
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// What an answered call keeps for the operator: its Call-ID, numbers, route and destination
/// for the list, and for a BYE to each side its remote target, From, To and Route lines
/// (RFC 3261 §12.1). All of it in one allocation, each part ending at `ends[i]`; the Call-ID
/// line is written again from part 0. About 300 to 600 bytes for a carrier's call.
pub(super) struct AnsweredInfo {
    text: Box<[u8]>,
    ends: [u16; PARTS],
}

const PARTS: usize = 13;
const CALL_ID: usize = 0;
const FROM_NUMBER: usize = 1;
const TO_NUMBER: usize = 2;
const ROUTE: usize = 3;
const DESTINATION: usize = 4;
/// The callee's leg: target, From line, To line, Route lines; then the caller's.
const CALLEE_LEG: usize = 5;
const CALLER_LEG: usize = 9;

impl AnsweredInfo {
    /// Captured from the INVITE as received and the 2xx that answered it. `None` when it
    /// would not fit the 64 KiB the offsets can address (no message pointsman takes is that
    /// big).
    pub(super) fn capture(
        invite: &Message<'_>,
        ok: &Message<'_>,
        route: Option<&str>,
        destination: Option<&str>,
        caller: Peer,
        callee: Peer,
    ) -> Option<AnsweredInfo> {
        let (from, to) = requests::numbers(invite);
        let callee_fallback = format!("sip:{}", callee.addr);
        let caller_fallback = format!("sip:{}", caller.addr);
        let to_callee = InDialog::to_callee(ok, is_own_uri, callee_fallback.as_bytes());
        let to_caller = InDialog::to_caller(invite, ok, caller_fallback.as_bytes());
        let parts: [&[u8]; PARTS] = [
            invite.slice(invite.call_id),
            from.unwrap_or_default().as_bytes(),
            to.unwrap_or_default().as_bytes(),
            route.unwrap_or_default().as_bytes(),
            destination.unwrap_or_default().as_bytes(),
            to_callee.target,
            &to_callee.from,
            &to_callee.to,
            &to_callee.routes,
            to_caller.target,
            &to_caller.from,
            &to_caller.to,
            &to_caller.routes,
        ];
        let mut text = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut ends = [0u16; PARTS];
        for (end, part) in ends.iter_mut().zip(parts) {
            text.extend_from_slice(part);
            *end = u16::try_from(text.len()).ok()?;
        }
        Some(AnsweredInfo {
            text: text.into_boxed_slice(),
            ends,
        })
    }

    fn part(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        self.text
            .get(usize::from(start)..usize::from(self.ends[i]))
            .unwrap_or_default()
    }

    fn text(&self, i: usize) -> Option<String> {
        let part = self.part(i);
        (!part.is_empty()).then(|| String::from_utf8_lossy(part).into_owned())
    }

    pub(super) fn call_id(&self) -> &[u8] {
        self.part(CALL_ID)
    }

    /// As plain data, for a pair's peer (an adopted call is listed and ended as this one).
    pub(super) fn to_state(&self) -> AnsweredInfoState {
        AnsweredInfoState {
            text: self.text.to_vec(),
            ends: self.ends.to_vec(),
        }
    }

    /// From a peer's [`to_state`](Self::to_state); `None` when the parts do not fit the text
    /// (a state is never trusted).
    pub(super) fn from_state(state: AnsweredInfoState) -> Option<AnsweredInfo> {
        let ends: [u16; PARTS] = state.ends.try_into().ok()?;
        let fits = ends.windows(2).all(|w| w[0] <= w[1])
            && usize::from(ends[PARTS - 1]) == state.text.len();
        fits.then(|| AnsweredInfo {
            text: state.text.into_boxed_slice(),
            ends,
        })
    }

    /// Bytes held on the heap.
    #[cfg(test)]
    pub(super) fn heap_bytes(&self) -> usize {
        self.text.len()
    }

    /// The in-dialog request of one leg (`CALLEE_LEG` or `CALLER_LEG`).
    fn leg(&self, first: usize) -> InDialog<'_> {
        let mut call_id = b"Call-ID: ".to_vec();
        call_id.extend_from_slice(self.part(CALL_ID));
        call_id.extend_from_slice(b"\r\n");
        InDialog {
            target: self.part(first),
            from: self.part(first + 1).to_vec(),
            to: self.part(first + 2).to_vec(),
            call_id,
            routes: self.part(first + 3).to_vec(),
        }
    }
}

impl Core {
    /// Every call of this node in setup and answered, as of `now`: calls whose INVITE is being
    /// routed (re-INVITEs are not calls), and answered calls until their BYE. Replicas of a
    /// pair's peer are listed only while that peer is down (with their `owner`): while it is
    /// up they are its calls, listed there.
    pub fn list_calls(&self, now: Instant) -> Vec<CallSummary> {
        let mut list: Vec<CallSummary> = self
            .calls()
            .iter()
            .filter_map(|call| setup_summary(&lock(call), now))
            .collect();
        list.extend(
            self.answered
                .iter()
                .filter_map(|a| answered_summary(a.value(), now)),
        );
        let routing = self.routing();
        list.extend(
            self.orphaned_replicas(now)
                .iter()
                .filter_map(|(owner, state, held)| replica_summary(state, *owner, &routing, *held)),
        );
        list.sort_by(|a, b| b.age_secs.cmp(&a.age_secs).then(a.call_id.cmp(&b.call_id)));
        list
    }

    /// The calls with Call-ID `call_id` (one, but for a call forked into two answered dialogs).
    pub fn find_call(&self, call_id: &str, now: Instant) -> Vec<CallSummary> {
        self.list_calls(now)
            .into_iter()
            .filter(|c| c.call_id == call_id)
            .collect()
    }

    /// Ends the call with Call-ID `call_id` as the operator asked, and returns what it was
    /// (empty: no such call, or it ended meanwhile). A call in setup: CANCEL (with
    /// [`operator_reason`]) to every live branch, then 480 with the same Reason to the caller;
    /// no branch starts afterwards (the ring timeout's path). An answered call: BYE to the
    /// callee and to the caller, each with the Reason and a CSeq above every request relayed
    /// in its direction, in client transactions of pointsman's own (their 200s are absorbed);
    /// its record goes at once, counted as a call that ended.
    pub fn end_call(&self, call_id: &str, now: Instant, out: &mut Vec<Output>) -> Vec<CallSummary> {
        let reason = operator_reason();
        // A call of a peer that is down, held here as its replica, is this node's from now on.
        self.adopt_orphan(call_id.as_bytes(), now, out);
        let mut ended = Vec::new();
        for call in self.calls() {
            let mark = out.len();
            {
                let mut c = lock(&call);
                let Some(summary) = setup_summary(&c, now) else {
                    continue;
                };
                if summary.call_id != call_id {
                    continue;
                }
                let mut todo = CallOutputs::new();
                c.end_by_operator(&reason, now, &mut todo);
                self.apply(&mut c, &call, todo, None, now, out);
                warn!(
                    call_id,
                    "call in setup ended by the operator: CANCEL downstream, 480 upstream"
                );
                ended.push(summary);
            }
            self.replicate_call(&call, now, mark, out);
        }
        let keys: Vec<u64> = self
            .answered
            .iter()
            .filter(|a| {
                a.value()
                    .info
                    .as_ref()
                    .is_some_and(|i| i.call_id() == call_id.as_bytes())
            })
            .map(|a| *a.key())
            .collect();
        let loop_hash = self.keys.of(&[call_id.as_bytes()]) as u32;
        for key in keys {
            // The BYEs are built under the table's guard and sent after it: no other table is
            // touched while it is held.
            let Some((byes, summary)) = self.answered.get(&key).and_then(|a| {
                let info = a.info.as_ref()?;
                // To the callee above what the caller sent (the INVITE's CSeq at least), to the
                // caller above what the callee sent.
                let byes = [
                    (info.leg(CALLEE_LEG), a.callee, a.cseq[0]),
                    (info.leg(CALLER_LEG), a.caller, a.cseq[1]),
                ]
                .map(|(leg, peer, cseq)| {
                    let branch = self.new_branch(loop_hash);
                    let via = self.via_value(peer.proto, &branch);
                    let bye = leg.build("BYE", &via, cseq.saturating_add(1), &reason);
                    (
                        self.keys.client(branch.as_bytes(), MethodClass::Other),
                        bye,
                        peer,
                    )
                });
                Some((byes, answered_summary(&a, now)?))
            }) else {
                continue;
            };
            let mark = out.len();
            for (tx, bye, peer) in byes {
                self.start_own_request(tx, bye, peer, now, out);
            }
            warn!(
                call_id,
                "answered call ended by the operator: BYE to both sides"
            );
            self.call_ended(key);
            if let Some(cluster) = &self.cluster {
                self.share(cluster, call_id.as_bytes(), None, mark, out);
            }
            ended.push(summary);
        }
        ended
    }

    /// An in-dialog request `msg` is being relayed: the answered call it belongs to keeps the
    /// highest CSeq each side used, so a BYE of pointsman's own goes above it.
    pub(super) fn note_dialog_cseq(&self, msg: &Message<'_>) {
        if msg.method() == Some(Method::Ack) || self.answered.is_empty() {
            return;
        }
        let from_tag = self.tag_key(msg.from.tag, msg);
        if let Some(mut a) = self.answered.get_mut(&self.dialog_key(msg)) {
            let side = usize::from(from_tag != a.caller_tag);
            a.cseq[side] = a.cseq[side].max(msg.cseq);
        }
    }
}

/// A call in setup as listed; `None` for a re-INVITE or a call that has its final answer.
fn setup_summary(c: &Call, now: Instant) -> Option<CallSummary> {
    if !c.failover || c.phase != CallPhase::Trying {
        return None;
    }
    let router = &c.routing.router;
    Some(summary_in_setup(
        &c.request()?,
        c.route.map(|r| router.route(r).name.clone()),
        c.branches
            .iter()
            .map(|b| BranchView {
                dest: b.target.dest.map(|d| router.destination(d).name.clone()),
                status: b.status,
                abandoned: b.abandoned,
            })
            .collect(),
        now.saturating_duration_since(c.started),
    ))
}

/// A branch of a call in setup, as the listing needs it.
struct BranchView {
    dest: Option<String>,
    status: BranchStatus,
    abandoned: bool,
}

/// A call in setup as listed: its INVITE, route, branches in order and age.
fn summary_in_setup(
    req: &Message<'_>,
    route: Option<String>,
    branches: Vec<BranchView>,
    age: Duration,
) -> CallSummary {
    let (from, to) = requests::numbers(req);
    let live = branches.iter().rev().find(|b| {
        !b.abandoned
            && matches!(
                b.status,
                BranchStatus::Pending | BranchStatus::Trying | BranchStatus::Ringing
            )
    });
    CallSummary {
        call_id: String::from_utf8_lossy(req.slice(req.call_id)).into_owned(),
        state: CallStage::Setup,
        route,
        destination: live.and_then(|b| b.dest.clone()),
        branch: live.map(|b| {
            match b.status {
                BranchStatus::Pending => "pending",
                BranchStatus::Trying => "trying",
                _ => "ringing",
            }
            .to_string()
        }),
        tried: branches.iter().filter_map(|b| b.dest.clone()).collect(),
        from: from.map(str::to_string),
        to: to.map(str::to_string),
        age_secs: age.as_secs(),
        owner: None,
    }
}

/// An answered call as listed; `None` for one without what a listing needs (restored from a
/// peer of an older release, or too large to capture).
fn answered_summary(a: &Answered, now: Instant) -> Option<CallSummary> {
    Some(summary_answered(
        a.info.as_ref()?,
        now.saturating_duration_since(a.since),
    ))
}

fn summary_answered(info: &AnsweredInfo, age: Duration) -> CallSummary {
    CallSummary {
        call_id: String::from_utf8_lossy(info.call_id()).into_owned(),
        state: CallStage::Answered,
        route: info.text(ROUTE),
        destination: info.text(DESTINATION),
        branch: None,
        tried: Vec::new(),
        from: info.text(FROM_NUMBER),
        to: info.text(TO_NUMBER),
        age_secs: age.as_secs(),
        owner: None,
    }
}

/// A replica of a call of node `owner` as listed, `held` after it came; `None` for one whose
/// state does not scan (it would not be adopted either).
fn replica_summary(
    state: &CallState,
    owner: u16,
    routing: &Routing,
    held: Duration,
) -> Option<CallSummary> {
    let rules = &routing.router.rules;
    let name = |d: u32| rules.destinations.get(d as usize).map(|d| d.name.clone());
    let mut summary = match state {
        CallState::Setup(s) => summary_in_setup(
            &originate::rescan(&s.request)?,
            s.route
                .and_then(|r| rules.routes.get(r as usize))
                .map(|r| r.name.clone()),
            s.branches
                .iter()
                .map(|b| BranchView {
                    dest: b.target.dest.and_then(name),
                    status: b.status,
                    abandoned: b.abandoned,
                })
                .collect(),
            s.started_ago + held,
        ),
        CallState::Answered(a) => {
            let info = AnsweredInfo::from_state(a.info.clone()?)?;
            summary_answered(&info, a.answered_ago + held)
        }
    };
    summary.owner = Some(owner);
    Some(summary)
}

impl Call {
    /// The operator ends this call in setup: CANCEL (with `reason`) to every live branch,
    /// then 480 with the same Reason upstream; no branch starts afterwards.
    pub(super) fn end_by_operator(&mut self, reason: &str, now: Instant, out: &mut CallOutputs) {
        if self.phase != CallPhase::Trying {
            return;
        }
        self.cancel_pending(reason, now, out);
        self.finish_local(OPERATOR_CAUSE, reason, now, out);
    }
}
