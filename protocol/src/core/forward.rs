//! Forwarding: the edits a proxied request gets (RFC 3261 §16.6) — our Via on top, Record-Route,
//! Max-Forwards, our own Route removed — spliced into the received bytes.
//!
//! It must not: change anything else in the message.

use super::*;

impl Core {
    /// The request as forwarded: our Via on top, Max-Forwards decremented (or added), our own
    /// Route values removed, and for dialog-creating requests our Record-Route. Every other byte
    /// is as received.
    pub(super) fn forward_request(
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
    pub(super) fn own_routes_removal(&self, msg: &Message<'_>) -> Option<wire::Span> {
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

    pub(super) fn strip_top_via(&self, msg: &Message<'_>) -> Vec<u8> {
        let mut splice = wire::Splice::new(msg.buf);
        splice.delete(msg.value_removal(msg.top_via.header, msg.top_via.value));
        let mut out = Vec::with_capacity(splice.output_len());
        splice.write_to(&mut out);
        out
    }
}
