//! Ghost calls: a 2xx that arrives for a branch the call gave up on, or after another branch
//! answered, is acknowledged and hung up with a BYE of pointsman's own, so no callee is left
//! talking to nobody; and the requests pointsman originates for that.
//!
//! It must not: relay a ghost's 2xx to the caller.

use super::*;

impl Core {
    /// A 2xx for an INVITE pointsman sent, whose transaction is gone. Unless it belongs to an
    /// answered dialog (a late retransmission), it is a ghost call: ACK and BYE it.
    pub(super) fn on_unmatched_2xx(
        &self,
        msg: &Message<'_>,
        from: Peer,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        if self.dialogs.contains(self.dialog_key(msg)) {
            return;
        }
        // The 2xx came from the branch's destination: the teardown goes back the same way.
        self.ghost_teardown(msg, from, now, out);
    }

    /// ACK and BYE a 2xx that must not reach the caller. Retransmissions of the same 2xx are
    /// re-ACKed; the BYE goes once.
    pub(super) fn ghost_teardown(
        &self,
        msg: &Message<'_>,
        to: Peer,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
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
    pub(super) fn start_own_request(
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
}
