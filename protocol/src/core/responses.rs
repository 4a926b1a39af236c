//! Responses: each is matched to its client transaction first, then relayed upstream (RFC
//! 3261 §16.7) or handed to its call, which decides; a response nobody can use is counted as a
//! stray.
//!
//! It must not: relay a response whose next Via is not a caller's.

use super::*;

impl Core {
    /// A response is matched to its client transaction first, whatever else is wrong with it,
    /// so a branch that answered stops its timers. Only then is it relayed: §16.7 step 3 needs a
    /// Via after ours that parses. One that matches but cannot be relayed ([`Relayable::No`])
    /// still moves its transaction: a 1xx stops the branch's timers and goes no further (the
    /// caller has our 100 Trying); a final non-2xx counts with its code and what goes upstream
    /// is pointsman's own response with that code; a 2xx is torn down (ACK + BYE) and the
    /// branch fails as a 502 Bad Gateway, never a ghost. Each is counted as dropped
    /// `unrelayable`.
    pub(super) fn on_response(
        &self,
        msg: &Message<'_>,
        from: Peer,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
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
                let anchored = r.media.as_ref().and_then(|m| m.response_edit(msg));
                let relayed = Bytes::from(forward::strip_top_via_with(msg, anchored.as_ref()));
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
                    send(out, upstream, Bytes::from(self.relayed_2xx(msg)));
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
}
