//! Requests from either side: retransmissions absorbed by their server transaction, the
//! checks before proxying (a [`Rejection`](super::Rejection) answered with its code), new
//! INVITEs routed into a [`Call`](super::call::Call), OPTIONS answered here, ACK and CANCEL
//! (RFC 3261 §16.10), and the server and client transactions' timers.
//!
//! It must not: decide a call's failover (that is the `Call`'s) or write bytes other than
//! through `originate` and the forwarding splice.

use super::*;

impl Core {
    pub(super) fn on_request(
        &self,
        msg: &Message<'_>,
        inb: Inbound<'_>,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
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

    pub(super) fn on_retransmission(&self, entry: ServerEntry, out: &mut Vec<Output>) {
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
    pub(super) fn validate_request_uri(&self, msg: &Message<'_>) -> Result<(), Rejection> {
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
    pub(super) fn validate_as_uas(&self, msg: &Message<'_>) -> Result<(), Rejection> {
        self.validate_request_uri(msg)?;
        if let Some(h) = msg.header(HeaderName::Require) {
            return Err(Rejection::bad_extension(msg.slice(h.value)));
        }
        Ok(())
    }

    /// RFC 3261 §16.3: the checks before a request is proxied.
    pub(super) fn validate(&self, msg: &Message<'_>) -> Result<(), Rejection> {
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
    pub(super) fn is_loop(&self, msg: &Message<'_>) -> bool {
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

    pub(super) fn loop_hash(&self, msg: &Message<'_>) -> u32 {
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
    pub(super) fn new_branch(&self, loop_hash: u32) -> String {
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
    pub(super) fn via_value(&self, proto: Proto, branch: &str) -> String {
        let mut via = String::with_capacity(self.advertised.via(proto).len() + branch.len() + 16);
        self.push_via_value(&mut via, proto, branch);
        via
    }

    pub(super) fn push_via_value(&self, out: &mut String, proto: Proto, branch: &str) {
        out.push_str(self.advertised.via(proto));
        out.push_str(";branch=");
        out.push_str(branch);
        out.push_str(";rport");
    }

    pub(super) fn on_malformed(&self, inb: Inbound<'_>, err: &ScanError, out: &mut Vec<Output>) {
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

    pub(super) fn server(&self, key: TxKey) -> Option<ServerEntry> {
        self.servers.get(&key).map(|e| e.value().clone())
    }

    pub(super) fn client(&self, key: TxKey) -> Option<ClientEntry> {
        self.clients.get(&key).map(|e| e.value().clone())
    }

    // ---- ACK and CANCEL ----------------------------------------------------------------------

    pub(super) fn on_ack(&self, msg: &Message<'_>, now: Instant, out: &mut Vec<Output>) {
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
        let bytes = self.forward_request(msg, hop.peer.proto, &branch, None, None, None);
        send(out, hop.peer, bytes);
    }

    pub(super) fn on_cancel(
        &self,
        msg: &Message<'_>,
        from: Peer,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
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

    pub(super) fn on_server_timer(
        &self,
        key: TxKey,
        t: TxTimer,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
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

    pub(super) fn on_client_timer(
        &self,
        key: TxKey,
        t: TxTimer,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
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

    /// The first destination the route of an out-of-dialog request would try.
    pub(super) fn first_destination(
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
        let (from_user, to_user) = numbers(msg);
        let seq = self.entropy_seq.fetch_add(1, Ordering::Relaxed);
        routing_rules::Call {
            to_user,
            from_user,
            listener: self.cfg.listeners.get(listener).map(String::as_str),
            headers,
            call_id: std::str::from_utf8(msg.slice(msg.call_id)).ok(),
            entropy: self.keys.of(&[&seq.to_le_bytes()]),
        }
    }
}

/// The caller's and the dialled number of a request as routing sees them: the caller is the
/// user of P-Asserted-Identity when present, else of From; the dialled number is the
/// Request-URI's user (or the number of a `tel:` URI).
pub(super) fn numbers<'m>(msg: &Message<'m>) -> (Option<&'m str>, Option<&'m str>) {
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
    (asserted.or_else(|| user(msg.from.uri)), to_user)
}
