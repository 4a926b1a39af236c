//! Forwarding: the edits a proxied request gets (RFC 3261 §16.6) — our Via on top, Record-Route,
//! Max-Forwards, our own Route removed — spliced into the received bytes.
//!
//! It must not: change anything else in the message.

use super::*;

impl Core {
    /// The request as forwarded: our Via on top, Max-Forwards decremented (or added), our own
    /// Route values removed, and for dialog-creating requests our Record-Route. Every other byte
    /// is as received.
    ///
    /// `request_uri`: the destination's rewrite of the Request-URI (RFC 3261 §16.6 step 2 lets
    /// the proxy choose the URI of each target); what a branch sends, its CANCEL and its ACK
    /// for a failure all carry it, as they are built from the INVITE sent.
    pub(super) fn forward_request(
        &self,
        msg: &Message<'_>,
        proto: Proto,
        branch: &str,
        record_route: Option<&str>,
        body: Option<&BodyEdit>,
        request_uri: Option<&RequestUri>,
    ) -> Bytes {
        let mut via_line = String::with_capacity(self.advertised.via(proto).len() + 64);
        via_line.push_str("Via: ");
        self.push_via_value(&mut via_line, proto, branch);
        via_line.push_str("\r\n");
        let uri = request_uri.and_then(|rw| rewritten_request_uri(msg, rw));
        forwarded_with(msg, &via_line, record_route, body, uri.as_deref())
    }
}

/// `msg`'s Request-URI as a destination with this rewrite expects it: the scheme kept, the user
/// part (a `tel:` number becomes one, with `user=phone`, RFC 3261 §19.1.6) with the prefix in
/// front unless it starts with it already, the configured host and port, the received
/// parameters less those the rewrite names, then the rewrite's own; no password, no headers.
/// `None` for a URI that is not `sip:`, `sips:` or `tel:` (the core answers those 416 before).
pub(super) fn rewritten_request_uri(msg: &Message<'_>, rw: &RequestUri) -> Option<Vec<u8>> {
    let StartLine::Request { uri, .. } = msg.start else {
        return None;
    };
    let parsed = wire::parse_uri(msg.buf, uri).ok()?;
    let tel = parsed.scheme == wire::UriScheme::Tel;
    let mut out = Vec::with_capacity(64 + rw.host.len());
    out.extend_from_slice(match parsed.scheme {
        wire::UriScheme::Sip | wire::UriScheme::Tel => b"sip:",
        wire::UriScheme::Sips => b"sips:",
        wire::UriScheme::Other => return None,
    });
    let params = msg.slice(parsed.params);
    let params = &params[..memchr::memchr(b'?', params).unwrap_or(params.len())];
    // A tel: URI's own parameters (`;phone-context=…`) belong to the number.
    let (user, params): (&[u8], &[u8]) = match parsed.user {
        Some(user) if tel => (
            &msg.buf[user.start as usize..parsed.params.end as usize],
            b"",
        ),
        Some(user) => (msg.slice(user), params),
        None => (b"", params),
    };
    if !user.is_empty() {
        if let Some(prefix) = &rw.user_prefix {
            if !user.starts_with(prefix.as_bytes()) {
                out.extend_from_slice(prefix.as_bytes());
            }
        }
        out.extend_from_slice(user);
        out.push(b'@');
    }
    out.extend_from_slice(rw.host.as_bytes());
    if let Some(port) = rw.port {
        out.push(b':');
        out.extend_from_slice(port.to_string().as_bytes());
    }
    let named = |param: &[u8]| {
        let name = &param[..memchr::memchr(b'=', param).unwrap_or(param.len())];
        rw.params
            .iter()
            .any(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name))
            || (tel && name.eq_ignore_ascii_case(b"user"))
    };
    for param in params.split(|&b| b == b';').filter(|p| !p.is_empty()) {
        if !named(param) {
            out.push(b';');
            out.extend_from_slice(param);
        }
    }
    if tel
        && !rw
            .params
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("user"))
    {
        out.extend_from_slice(b";user=phone");
    }
    for (name, value) in &rw.params {
        out.push(b';');
        out.extend_from_slice(name.as_bytes());
        if let Some(value) = value {
            out.push(b'=');
            out.extend_from_slice(value.as_bytes());
        }
    }
    Some(out)
}

/// A new body part for a forwarded message: the bytes that replace `span` (absolute in the
/// message), and the Content-Length value the whole body then has.
#[derive(Clone, Debug)]
pub(super) struct BodyEdit {
    pub span: wire::Span,
    pub bytes: Vec<u8>,
    pub content_length: String,
}

impl BodyEdit {
    /// `bytes` in place of `span` of `msg`'s body.
    pub(super) fn new(msg: &Message<'_>, span: wire::Span, bytes: Vec<u8>) -> BodyEdit {
        let body_len = msg.body.len() - span.len().min(msg.body.len()) + bytes.len();
        BodyEdit {
            span,
            bytes,
            content_length: body_len.to_string(),
        }
    }

    /// Adds the edit, and the Content-Length it needs, to `splice`. A message without a
    /// Content-Length (a datagram may omit it) keeps none.
    fn apply<'e>(&'e self, msg: &Message<'_>, splice: &mut wire::Splice<'_, 'e>) {
        splice.replace(self.span, &self.bytes);
        if let Some(h) = msg.header(HeaderName::ContentLength) {
            splice.replace(h.value, self.content_length.as_bytes());
        }
    }
}

/// `msg` as forwarded (RFC 3261 §16.6): `via_line` (our whole Via header line, CRLF included)
/// on top, Max-Forwards decremented (or added at 70), the leading Route values that point at us
/// removed (loose routing, §16.4), headers in the Request-URI dropped, and, when given,
/// `record_route` as a Record-Route line before the first one. Every other byte is as received. This is the
/// one forwarding path: the core's, and what the criterion `wire/forward` benchmark times.
pub fn forwarded(msg: &Message<'_>, via_line: &str, record_route: Option<&str>) -> Bytes {
    forwarded_with(msg, via_line, record_route, None, None)
}

/// [`forwarded`] with its body part replaced (the SDP of an anchored call), and its
/// Request-URI replaced by `request_uri` when given.
pub(super) fn forwarded_with(
    msg: &Message<'_>,
    via_line: &str,
    record_route: Option<&str>,
    body: Option<&BodyEdit>,
    request_uri: Option<&[u8]>,
) -> Bytes {
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
    if let Some(span) = own_routes_removal(msg) {
        splice.delete(span);
    }
    match (request_uri, msg.start) {
        (Some(uri), StartLine::Request { uri: span, .. }) => {
            splice.replace(span, uri);
        }
        _ => {
            if let Some(span) = request_uri_headers(msg) {
                splice.delete(span);
            }
        }
    }
    if let Some(body) = body {
        body.apply(msg, &mut splice);
    }
    let mut bytes = Vec::with_capacity(splice.output_len());
    splice.write_to(&mut bytes);
    Bytes::from(bytes)
}

/// The span that removes the leading Route values that point at pointsman (loose routing,
/// §16.4). Only whole leading values go; if they fill their header line, the line goes.
fn own_routes_removal(msg: &Message<'_>) -> Option<wire::Span> {
    let mut routes = msg
        .routes(HeaderName::Route)
        .filter_map(Result::ok)
        .peekable();
    let first = *routes.peek()?;
    if !is_own_uri(msg.slice(first.uri)) {
        return None;
    }
    // Only values of the first Route header line are removed together (one span).
    let next_kept = routes
        .skip(1)
        .find(|r| !(r.header == first.header && is_own_uri(msg.slice(r.uri))));
    match next_kept {
        Some(kept) if kept.header == first.header => Some(wire::Span::new(
            first.value.start as usize,
            kept.value.start as usize,
        )),
        _ => Some(msg.headers[first.header].line),
    }
}

/// A response as relayed upstream (RFC 3261 §16.7 step 3): its top Via (ours) removed, every
/// other byte as received.
pub fn strip_top_via(msg: &Message<'_>) -> Vec<u8> {
    strip_top_via_with(msg, None)
}

/// [`strip_top_via`] with its body part replaced (the SDP of an anchored call).
pub(super) fn strip_top_via_with(msg: &Message<'_>, body: Option<&BodyEdit>) -> Vec<u8> {
    let mut splice = wire::Splice::new(msg.buf);
    splice.delete(msg.value_removal(msg.top_via.header, msg.top_via.value));
    if let Some(body) = body {
        body.apply(msg, &mut splice);
    }
    let mut out = Vec::with_capacity(splice.output_len());
    splice.write_to(&mut out);
    out
}
