//! Media anchoring, the core's side: which calls are anchored, the SDP of every anchored
//! message rewritten to the relay, what each branch's signalling tells the call's media session
//! (an early answer, a failure, the 2xx), and the BYE both ways when an answered call's media
//! stops. The relay itself (ports, packets, the selected branch, switching, silence) is
//! [`crate::media`].
//!
//! A call is anchored when its route says `media = "relay"`, the INVITE offers SDP (early
//! offer) and the relay has ports; otherwise it goes on unanchored, its SDP untouched, with a
//! log line saying why: a carrier's call is never refused for want of a media port.
//!
//! It must not: touch media packets, or keep media state beyond which session a call or an
//! answered dialog has.

use super::forward::{strip_top_via_with, BodyEdit};
use super::*;
use crate::media::{
    sdp, AnswerUse, Endpoints, MediaEvent, MediaPlane, MediaSession, MediaSide, SessionTimeouts,
    SwitchReason,
};
use routing_rules::spec::MediaMode;
use routing_rules::RouteId;
use tracing::info;

/// The SDP of a message: where it is (absolute in the message) and what it says.
pub(super) struct FoundSdp {
    pub span: wire::Span,
    pub summary: sdp::SdpSummary,
}

/// The SDP `msg` carries (`application/sdp`, or the SDP part of a multipart body).
pub(super) fn find_sdp(msg: &Message<'_>) -> Option<FoundSdp> {
    if msg.body.is_empty() {
        return None;
    }
    let content_type = msg.header(HeaderName::ContentType)?;
    let body = msg.slice(msg.body);
    let range = sdp::find_sdp(msg.slice(content_type.value), body)?;
    let summary = sdp::inspect(body.get(range.clone())?).ok()?;
    let start = msg.body.start as usize;
    Some(FoundSdp {
        span: wire::Span::new(start + range.start, start + range.end),
        summary,
    })
}

/// The body edit that points the SDP `found` of `msg` at `endpoints`.
pub(super) fn sdp_edit(
    msg: &Message<'_>,
    found: &FoundSdp,
    endpoints: &Endpoints,
) -> Option<BodyEdit> {
    let mut bytes = Vec::with_capacity(found.span.len() + 32);
    let rewrite = sdp::Rewrite {
        address: endpoints.address,
        ports: &endpoints.ports,
    };
    sdp::rewrite(found.span.get(msg.buf), &rewrite, &mut bytes).ok()?;
    Some(BodyEdit::new(msg, found.span, bytes))
}

/// What an answered anchored call keeps: its media session, and the INVITE and 2xx it was set
/// up with, from which pointsman writes its own BYEs when the media stops.
pub(super) struct AnsweredMedia {
    pub session: MediaSession,
    /// The branch that answered (whose relay ports the dialog keeps).
    pub branch: usize,
    /// The call's key: the token its media events carry.
    pub token: u64,
    pub invite: Bytes,
    pub answer: Bytes,
}

/// The media of an answered dialog, as one in-dialog request (re-INVITE, UPDATE) and its
/// responses see it: offers and answers keep the relay ports of the call's setup, whichever
/// side sends them.
#[derive(Clone)]
pub(super) struct DialogMedia {
    session: MediaSession,
    branch: usize,
    /// The request comes from the caller (the carrier).
    from_caller: bool,
}

impl DialogMedia {
    /// The request's SDP, pointed at the relay endpoint its receiver must send to.
    pub(super) fn request_edit(&self, msg: &Message<'_>) -> Option<BodyEdit> {
        self.edit(msg, self.from_caller)
    }

    /// A response's SDP (it comes from the request's receiver), pointed likewise.
    pub(super) fn response_edit(&self, msg: &Message<'_>) -> Option<BodyEdit> {
        self.edit(msg, !self.from_caller)
    }

    /// SDP sent by the caller (`by_caller`) or the callee: the relay learns where that side
    /// now takes media and whether it holds, and the other side is given the relay's endpoint.
    fn edit(&self, msg: &Message<'_>, by_caller: bool) -> Option<BodyEdit> {
        let found = find_sdp(msg)?;
        let endpoints = if by_caller {
            self.session.on_carrier_sdp(&found.summary);
            self.session.branch_endpoints(self.branch)?
        } else {
            self.session.on_answer(self.branch, &found.summary);
            self.session.carrier_endpoints()
        };
        sdp_edit(msg, &found, &endpoints)
    }
}

/// CSeq of the BYEs pointsman sends to end an anchored call: above any number either side can
/// have used in the dialog (RFC 3261 §8.1.1.5 keeps them below 2³¹), so neither refuses it.
const OWN_BYE_CSEQ: u32 = 0x7fff_fff0;

impl Core {
    /// Gives the core the media relay that routes with `media = "relay"` anchor calls in. Set
    /// once, before traffic; `false` if one was set already.
    pub fn set_media(&self, plane: Arc<MediaPlane>) -> bool {
        self.media.set(plane).is_ok()
    }

    /// The media relay, when there is one.
    pub fn media(&self) -> Option<&Arc<MediaPlane>> {
        self.media.get()
    }

    /// The media session of a new call: when its route relays media and its INVITE offers SDP.
    pub(super) fn open_media(
        &self,
        msg: &Message<'_>,
        routing: &Routing,
        route: Option<RouteId>,
        key: TxKey,
        from: Peer,
    ) -> Option<MediaSession> {
        let route = routing.router.route(route?);
        if route.media != MediaMode::Relay {
            return None;
        }
        let call_id = String::from_utf8_lossy(msg.slice(msg.call_id));
        let Some(plane) = self.media.get() else {
            warn!(%call_id, route = %route.name, "route relays media but the node has no relay: media not anchored");
            return None;
        };
        let Some(found) = find_sdp(msg) else {
            debug!(%call_id, "INVITE without an SDP offer (late offer): media not anchored");
            return None;
        };
        let timeouts = SessionTimeouts {
            media_timeout: route.media_timeout,
        };
        match plane.open(key, &found.summary, from.addr.ip(), timeouts) {
            Ok(session) => {
                session.set_label(&call_id);
                Some(session)
            }
            Err(e) => {
                warn!(%call_id, "media not anchored ({e}): the call goes on with its SDP as offered");
                None
            }
        }
    }

    /// The offer of branch `index` of an anchored call, pointed at the branch's own relay
    /// ports (`None`: forwarded as received).
    pub(super) fn branch_offer(
        &self,
        session: &MediaSession,
        req: &Message<'_>,
        index: usize,
        target: &call::Target,
    ) -> Option<BodyEdit> {
        let found = find_sdp(req)?;
        match session.add_branch(index, target.peer.addr.ip()) {
            Ok(endpoints) => sdp_edit(req, &found, &endpoints),
            Err(e) => {
                warn!(
                    call_id = %String::from_utf8_lossy(req.slice(req.call_id)),
                    to = %target.peer.addr,
                    "branch not anchored ({e}): its offer goes as received"
                );
                None
            }
        }
    }

    /// The media of the answered dialog the in-dialog request `msg` belongs to, when it is
    /// anchored.
    pub(super) fn dialog_media(&self, msg: &Message<'_>) -> Option<DialogMedia> {
        // A node without a relay has no anchored dialog: no lookup on every in-dialog request.
        self.media.get()?;
        let answered = self.answered.get(&self.dialog_key(msg))?;
        let media = answered.media.as_ref()?;
        Some(DialogMedia {
            session: media.session.clone(),
            branch: media.branch,
            from_caller: self.tag_key(msg.from.tag, msg) == answered.caller_tag,
        })
    }

    /// A 2xx retransmission of an answered dialog, as relayed upstream: its SDP pointed at the
    /// relay when the dialog is anchored.
    pub(super) fn relayed_2xx(&self, msg: &Message<'_>) -> Vec<u8> {
        let edit = self.media.get().and_then(|_| {
            let answered = self.answered.get(&self.dialog_key(msg))?;
            let media = answered.media.as_ref()?;
            let found = find_sdp(msg)?;
            sdp_edit(msg, &found, &media.session.carrier_endpoints())
        });
        strip_top_via_with(msg, edit.as_ref())
    }

    /// A media event of the relay: an answered call whose media stopped is ended with BYE both
    /// ways, `Reason` saying why.
    pub fn on_media_event(&self, event: MediaEvent, now: Instant, out: &mut Vec<Output>) {
        let MediaEvent::Inactive { token, side } = event;
        let Some(dialog) = self.media_dialogs.get(&token).map(|d| *d) else {
            return;
        };
        let Some((caller, callee, invite, answer)) = self.answered.get(&dialog).and_then(|a| {
            let m = a.media.as_ref()?;
            Some((a.caller, a.callee, m.invite.clone(), m.answer.clone()))
        }) else {
            return;
        };
        let (Some(invite), Some(answer)) = (originate::rescan(&invite), originate::rescan(&answer))
        else {
            return;
        };
        let from = match side {
            MediaSide::Carrier => "carrier",
            MediaSide::Cloud => "cloud",
        };
        let reason = format!(
            "Reason: Q.850;cause=102;text=\"No media from the {from} side (media_timeout)\"\r\n"
        );
        let loop_hash = self.loop_hash(&answer);
        let to_callee = self.new_branch(loop_hash);
        let bye = originate::bye_to_callee(
            &answer,
            is_own_uri,
            &self.via_value(callee.proto, &to_callee),
            OWN_BYE_CSEQ,
            &reason,
            &format!("sip:{}", callee.addr),
        );
        let key = self.keys.client(to_callee.as_bytes(), MethodClass::Other);
        self.start_own_request(key, bye, callee, now, out);
        let to_caller = self.new_branch(loop_hash);
        let bye = originate::bye_to_caller(
            &invite,
            &answer,
            &self.via_value(caller.proto, &to_caller),
            OWN_BYE_CSEQ,
            &reason,
            &format!("sip:{}", caller.addr),
        );
        let key = self.keys.client(to_caller.as_bytes(), MethodClass::Other);
        self.start_own_request(key, bye, caller, now, out);
        if let Some(plane) = self.media.get() {
            plane.metrics().inactivity(side);
        }
        warn!(
            call_id = %String::from_utf8_lossy(answer.slice(answer.call_id)),
            side = from,
            "no media on an answered call: ended with BYE both ways"
        );
        self.call_ended(dialog);
    }
}

impl call::Call {
    /// What branch `i`'s provisional or 2xx `msg` tells the media session; the edit that points
    /// its SDP (if any) at the carrier-facing relay endpoint. A 199 (RFC 6228) ends the branch's
    /// early dialog: it fails.
    pub(super) fn media_answer(&self, i: usize, msg: &Message<'_>) -> Option<BodyEdit> {
        let session = match self.media.as_ref()? {
            call::CallMedia::Dialog(dialog) => return dialog.response_edit(msg),
            call::CallMedia::Session(session) => session,
        };
        let code = msg.code()?;
        let branch = self.branches.get(i)?;
        if code == 199 {
            session.branch_failed(i, SwitchReason::EarlyDialogTerminated);
            return None;
        }
        let found = find_sdp(msg)?;
        if !branch.abandoned {
            let answer_use = session.on_answer(i, &found.summary);
            if let AnswerUse::ColdCodecMismatch { heard, offered } = &answer_use {
                info!(
                    call_id = %String::from_utf8_lossy(msg.slice(msg.call_id)),
                    branch = i,
                    heard = %heard,
                    answered = %offered,
                    "branch answered another codec than the one heard: no hot switch to it (plain fork)"
                );
            }
        }
        sdp_edit(msg, &found, &session.carrier_endpoints())
    }

    /// The 2xx of branch `i` is the call's answer: the relay hears that branch from now on (and
    /// frees the others), with the answering destination's own `media_timeout` if it has one.
    pub(super) fn media_answered(&self, i: usize, now: Instant) {
        let Some(session) = self.session() else {
            return;
        };
        let dest = self.branches.get(i).and_then(|b| b.target.dest);
        if let Some(timeout) = dest.and_then(|d| self.routing.router.destination(d).media_timeout) {
            session.set_media_timeout(timeout);
        }
        session.answered(i, now);
    }

    /// Branch `i` failed for `reason`: the relay switches away from it at once if it was heard.
    pub(super) fn media_failed(&self, i: usize, reason: SwitchReason) {
        if let Some(session) = self.session() {
            session.branch_failed(i, reason);
        }
    }
}
