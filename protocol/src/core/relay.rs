//! In-dialog requests (BYE, re-INVITE, INFO, …): the hop each takes, from our Record-Route
//! parameters or, without them, from the answered call's record; their relay as a stateful
//! non-INVITE transaction; and the dialog keys.
//!
//! It must not: hold state of a dialog beyond what its answered-call entry carries.

use super::*;

impl Core {
    /// Next hop of an in-dialog request, from the Record-Route we wrote (now its first Route):
    /// from the caller's side it goes to the destination that answered (trunk affinity); from
    /// the callee's side it follows the remaining Route set or the Request-URI.
    pub(super) fn in_dialog_hop(&self, msg: &Message<'_>) -> Option<Hop> {
        let mut routes = msg.routes(HeaderName::Route).filter_map(Result::ok);
        let ours = routes.next().filter(|r| is_own_uri(msg.slice(r.uri)))?;
        let ours_uri = wire::parse_uri(msg.buf, ours.uri).ok()?;
        let param =
            |name: &[u8]| wire::uri_param(msg.buf, ours_uri.params, name).map(|s| msg.slice(s));
        let from_tag = msg.from.tag.map(|t| msg.slice(t));
        let downstream = param(b"ftag").is_some_and(|ftag| Some(ftag) == from_tag);
        if downstream {
            if let Some(psd) = param(b"psd") {
                let routing = self.routing();
                let psd = std::str::from_utf8(psd).ok()?;
                if let Some(id) = routing.tokens.dest(&routing.router, psd) {
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

    pub(super) fn in_dialog(
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
        self.note_dialog_cseq(msg);
        match msg.method() {
            Some(Method::Invite) => self.start_reinvite(msg, key, from, hop, now, out),
            _ => self.start_relay(msg, key, from, hop, now, out),
        }
    }

    /// Next hop of an in-dialog request without a Route of ours, from the answered call it
    /// belongs to (Call-ID and tags): from the caller it goes to the destination that
    /// answered, from the callee back to where the INVITE came from.
    pub(super) fn answered_hop(&self, msg: &Message<'_>) -> Option<Hop> {
        let call = self.answered.get(&self.dialog_key(msg))?;
        let from_caller = self.tag_key(msg.from.tag, msg) == call.caller_tag;
        let peer = if from_caller {
            call.callee
        } else {
            call.caller
        };
        Some(Hop { peer, dest: None })
    }

    pub(super) fn start_relay(
        &self,
        msg: &Message<'_>,
        key: TxKey,
        from: Peer,
        hop: Hop,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        let branch = self.new_branch(self.loop_hash(msg));
        let media = self.dialog_media(msg);
        let anchored = media.as_ref().and_then(|m| m.request_edit(msg));
        // Out of dialog (a MESSAGE to a route's destination), the destination's Request-URI; in
        // a dialog, the remote target as the sender wrote it.
        let routing = msg.to.tag.is_none().then(|| self.routing());
        let request_uri = routing
            .as_ref()
            .zip(hop.dest)
            .and_then(|(routing, d)| routing.router.destination(d).request_uri.as_ref());
        let bytes = self.forward_request(
            msg,
            hop.peer.proto,
            &branch,
            None,
            anchored.as_ref(),
            request_uri,
        );
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
            media,
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
    pub(super) fn relay_local_final(
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
    pub(super) fn settle_relay(&self, r: &mut Relay) {
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
    pub(super) fn stop_counting_relay(&self, r: &mut Relay) {
        if std::mem::take(&mut r.counted) {
            self.count_in_progress(false);
        }
    }

    /// The dialog a message belongs to: Call-ID and both tags, the same whichever side sends
    /// it (a request from the callee has the tags the other way round).
    pub(super) fn dialog_key(&self, msg: &Message<'_>) -> u64 {
        let from_tag = msg.from.tag.map(|t| msg.slice(t)).unwrap_or(&[]);
        let to_tag = msg.to.tag.map(|t| msg.slice(t)).unwrap_or(&[]);
        self.dialog_key_of(msg.slice(msg.call_id), from_tag, to_tag)
    }

    /// [`Self::dialog_key`] of a Call-ID and two tags, in either order.
    pub(super) fn dialog_key_of(&self, call_id: &[u8], tag: &[u8], other: &[u8]) -> u64 {
        let (a, b) = if tag <= other {
            (tag, other)
        } else {
            (other, tag)
        };
        self.keys.of(&[call_id, a, b])
    }

    /// A tag as the answered-call table keeps it.
    pub(super) fn tag_key(&self, tag: Option<wire::Span>, msg: &Message<'_>) -> u64 {
        self.keys.of(&[tag.map(|t| msg.slice(t)).unwrap_or(&[])])
    }
}
