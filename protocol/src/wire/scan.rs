//! Framing and scanning of received SIP messages into spans (RFC 3261 §7, §18.3, §25).
//!
//! Owns the message model ([`Message`], [`Header`], [`Via`], ...), stream framing
//! ([`frame_stream`]), the scanner itself ([`scan`]) and the salvage of a malformed request for a
//! 400 ([`reply_context`]). It records spans into the caller's buffer; it must not copy, allocate
//! per header (up to 32 headers live inline), normalise, or panic on any input.

use super::fields::{self, bad, classify};
use super::lex::{self, CommaSplit};
use smallvec::SmallVec;
use thiserror::Error;

/// A byte range into the buffer a [`Message`] was scanned from. `u32` keeps spans small.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span {
            start: start as u32,
            end: end as u32,
        }
    }
    /// The bytes this span covers in `buf` (empty if out of range; never panics).
    pub fn get<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.start as usize..self.end as usize)
            .unwrap_or(&[])
    }
    pub fn len(&self) -> usize {
        self.end.saturating_sub(self.start) as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Hard caps on what a peer may send. All configurable; the defaults are safe for a carrier edge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest message (headers + body) in bytes.
    pub max_message_size: usize,
    /// Most header lines (a folded header counts once).
    pub max_headers: usize,
    /// Longest physical line in bytes (start line or header line, without CRLF).
    pub max_line_length: usize,
    /// Most Via values (counted across comma-joined and repeated Via headers).
    pub max_via: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // A request may cross 70 proxies (Max-Forwards' default, RFC 3261 §8.1.1.6), each
        // adding a Via and often a Record-Route line: 72 Via values and 200 header lines hold
        // every message that Max-Forwards allows. The size cap bounds the cost.
        Limits {
            max_message_size: 65_535,
            max_headers: 200,
            max_line_length: 8_192,
            max_via: 72,
        }
    }
}

/// How the bytes arrived, which decides how the message is framed (RFC 3261 §18.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// A UDP datagram: Content-Length optional (body = rest of datagram); bytes after
    /// Content-Length are discarded; a Content-Length beyond the datagram is an error.
    Datagram,
    /// A TCP/TLS stream frame: Content-Length mandatory; it frames the message.
    Stream,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Prack,
    Update,
    Info,
    Subscribe,
    Notify,
    Refer,
    Message,
    Publish,
    /// Any other token; its text is at the span the message records (`method_span`).
    Extension,
}

impl Method {
    /// Recognises a method token (case-sensitive, as RFC 3261 says); unknown tokens are
    /// `Extension`.
    pub fn from_token(token: &[u8]) -> Method {
        match token {
            b"INVITE" => Method::Invite,
            b"ACK" => Method::Ack,
            b"BYE" => Method::Bye,
            b"CANCEL" => Method::Cancel,
            b"OPTIONS" => Method::Options,
            b"REGISTER" => Method::Register,
            b"PRACK" => Method::Prack,
            b"UPDATE" => Method::Update,
            b"INFO" => Method::Info,
            b"SUBSCRIBE" => Method::Subscribe,
            b"NOTIFY" => Method::Notify,
            b"REFER" => Method::Refer,
            b"MESSAGE" => Method::Message,
            b"PUBLISH" => Method::Publish,
            _ => Method::Extension,
        }
    }
    /// The token for a known method; `None` for `Extension`.
    pub fn as_str(&self) -> Option<&'static str> {
        Some(match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Prack => "PRACK",
            Method::Update => "UPDATE",
            Method::Info => "INFO",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Extension => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartLine {
    Request {
        method: Method,
        method_span: Span,
        /// The Request-URI exactly as received.
        uri: Span,
    },
    Response {
        code: u16,
        /// The reason phrase exactly as received (may be empty).
        reason: Span,
    },
}

/// Header names the proxy cares about; compact forms map to the same variant
/// (v, i, f, t, l, c, m, k, ...). Everything else is `Other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HeaderName {
    Via,
    CallId,
    CSeq,
    From,
    To,
    MaxForwards,
    Route,
    RecordRoute,
    ContentLength,
    ContentType,
    Contact,
    ProxyRequire,
    Require,
    Supported,
    Reason,
    RetryAfter,
    Other,
}

/// One header field as received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub name: HeaderName,
    /// The whole field: from the first byte of the name to the end of its last (possibly folded)
    /// line, CRLF included. Deleting this span removes the header cleanly.
    pub line: Span,
    /// The field name as written (e.g. `v`, `VIA`, `Via`).
    pub name_span: Span,
    /// The value, leading/trailing whitespace trimmed; may contain folding (CRLF + WSP) inside.
    pub value: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
    Sctp,
    Ws,
    Wss,
    Other,
}

/// One via-parm (a Via header may hold several, comma-joined).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Via {
    /// Index into `Message::headers` of the header line holding this value.
    pub header: usize,
    /// This via-parm alone, from `SIP/2.0/...` to the end of its parameters.
    pub value: Span,
    /// True when this is the only value in its header line.
    pub sole: bool,
    pub transport: Transport,
    /// sent-by host; an IPv6 reference keeps its brackets.
    pub host: Span,
    pub port: Option<u16>,
    /// The branch parameter value, if present.
    pub branch: Option<Span>,
    pub received: Option<Span>,
    /// `None`: no rport; `Some(None)`: bare `;rport`; `Some(Some(p))`: `;rport=p`.
    pub rport: Option<Option<u16>>,
}

/// A From or To value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NameAddr {
    /// The whole header value.
    pub value: Span,
    /// The URI (inside `<>` when present).
    pub uri: Span,
    pub tag: Option<Span>,
}

/// One Route or Record-Route value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteValue {
    pub header: usize,
    /// This value alone (`<sip:...;lr>` plus any header params).
    pub value: Span,
    pub sole: bool,
    /// The URI inside the angle brackets.
    pub uri: Span,
}

/// A parsed SIP URI (`sip:`, `sips:`); for `tel:` only `scheme` and `user` are set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uri {
    pub scheme: UriScheme,
    pub user: Option<Span>,
    /// Host; an IPv6 reference keeps its brackets.
    pub host: Span,
    pub port: Option<u16>,
    /// Everything after the hostport, starting at the first `;` (may be empty).
    pub params: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UriScheme {
    Sip,
    Sips,
    Tel,
    /// Any other scheme; a proxy answers 416 for a Request-URI like this.
    Other,
}

/// A scanned message: spans into `buf`, which is exactly this message's bytes (for a datagram,
/// trimmed to headers + Content-Length body; for a stream frame, the frame).
#[derive(Clone, Debug)]
pub struct Message<'a> {
    pub buf: &'a [u8],
    pub start: StartLine,
    pub headers: SmallVec<[Header; 32]>,
    pub top_via: Via,
    pub via_count: usize,
    pub call_id: Span,
    pub cseq: u32,
    pub cseq_method: Method,
    pub cseq_method_span: Span,
    pub from: NameAddr,
    pub to: NameAddr,
    /// Value of Max-Forwards, if the header is present (leading zeros allowed).
    pub max_forwards: Option<u32>,
    /// Index into `headers` of Max-Forwards, if present.
    pub max_forwards_header: Option<usize>,
    pub content_length: Option<usize>,
    /// Offset where the header section ends (just after the empty line).
    pub headers_end: u32,
    pub body: Span,
}

impl<'a> Message<'a> {
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }
    /// The request method (`None` for responses).
    pub fn method(&self) -> Option<Method> {
        match self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }
    /// The status code (`None` for requests).
    pub fn code(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code, .. } => Some(code),
            StartLine::Request { .. } => None,
        }
    }
    /// The bytes of a span of this message.
    pub fn slice(&self, span: Span) -> &'a [u8] {
        span.get(self.buf)
    }
    /// First header with this name.
    pub fn header(&self, name: HeaderName) -> Option<&Header> {
        self.headers.iter().find(|h| h.name == name)
    }
    /// First header whose name equals `name` case-insensitively (for `Other` headers; compact
    /// forms of known headers are not expanded here).
    pub fn header_by_name(&self, name: &[u8]) -> Option<&Header> {
        self.headers
            .iter()
            .find(|h| self.slice(h.name_span).eq_ignore_ascii_case(name))
    }
    /// Every Via value in order, parsed.
    pub fn vias(&self) -> impl Iterator<Item = Result<Via, ScanError>> + '_ {
        let buf = self.buf;
        Values::new(self, HeaderName::Via).map(move |v| {
            let (header, el, sole) = v?;
            fields::parse_via(buf, header, el.start, el.end, sole)
        })
    }
    /// Every Route value in order (or Record-Route with `HeaderName::RecordRoute`).
    pub fn routes(
        &self,
        name: HeaderName,
    ) -> impl Iterator<Item = Result<RouteValue, ScanError>> + '_ {
        let buf = self.buf;
        Values::new(self, name).map(move |v| {
            let (header, el, sole) = v?;
            let e = |reason| bad(name, reason);
            let parts = fields::parse_addr(buf, el.start, el.end, true).map_err(e)?;
            for p in lex::Params::new(buf, parts.params, el.end) {
                p.map_err(e)?;
            }
            Ok(RouteValue {
                header,
                value: Span::new(el.start, el.end),
                sole,
                uri: Span::new(parts.uri.0, parts.uri.1),
            })
        })
    }
    /// The span to delete to remove one comma-joined value from its header: the whole header line
    /// when it is the only value, otherwise the value with its separating comma and whitespace.
    ///
    /// A `header` or `value` that does not belong to this message is returned as `value`.
    pub fn value_removal(&self, header: usize, value: Span) -> Span {
        let Some(h) = self.headers.get(header) else {
            return value;
        };
        if value.start < h.value.start || value.end > h.value.end || value.start > value.end {
            return value;
        }
        if value == h.value {
            return h.line;
        }
        let (buf, lo, hi) = (self.buf, h.value.start as usize, h.value.end as usize);
        let (s, e) = (value.start as usize, value.end as usize);
        // Prefer eating the comma after the value, so a following value moves into its place.
        let after = lex::skip_lws(buf, e, hi);
        if lex::peek(buf, after, hi) == Some(b',') {
            return Span::new(s, lex::skip_lws(buf, after + 1, hi));
        }
        // The last value: eat the comma before it (and the whitespace between).
        let mut before = s;
        while before > lo && buf.get(before - 1).is_some_and(|&b| lex::is_lws(b)) {
            before -= 1;
        }
        if before > lo && buf.get(before - 1) == Some(&b',') {
            return Span::new(before - 1, e);
        }
        value
    }
}

/// Parses a URI (Request-URI, or the URI of a Route/Record-Route/Contact value) found at
/// `span` of `buf`.
pub fn parse_uri(buf: &[u8], span: Span) -> Result<Uri, ScanError> {
    fields::parse_uri(buf, span.start as usize, span.end as usize)
}

/// Finds a URI parameter (`;name` or `;name=value`) in a `params` span; returns the value span
/// (empty for a bare parameter). Names compare case-insensitively.
pub fn uri_param(buf: &[u8], params: Span, name: &[u8]) -> Option<Span> {
    fields::uri_param(buf, params.start as usize, params.end as usize, name)
}

/// The URI of a name-addr or addr-spec header value (P-Asserted-Identity, Contact, ...): the
/// part inside `<...>`, or a bare URI up to its first `;`. `None` if the value is malformed.
pub fn addr_spec(buf: &[u8], value: Span) -> Option<Span> {
    let parts = fields::parse_addr(buf, value.start as usize, value.end as usize, false).ok()?;
    Some(Span::new(parts.uri.0, parts.uri.1))
}

/// What a stream holds at its front.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamFrame {
    /// CRLF keep-alives (RFC 5626 §3.5.1) of this many bytes: consume and ignore.
    Keepalive(usize),
    /// A whole message of this many bytes: `scan(&buf[..n], Framing::Stream, ..)`.
    Message(usize),
    /// Not enough bytes yet.
    Incomplete,
}

/// Finds where the first message of a stream buffer ends (needs Content-Length).
///
/// Only the line structure and Content-Length are checked here, so that a message with a bad
/// header can still be framed (and answered 400 by [`scan`]) without losing the stream. An error
/// means the stream cannot be framed any more: close it.
pub fn frame_stream(buf: &[u8], limits: &Limits) -> Result<StreamFrame, ScanError> {
    let keepalive = leading_crlf(buf);
    if keepalive > 0 {
        return Ok(StreamFrame::Keepalive(keepalive));
    }
    let limit = size_limit(limits);
    // Never look further than one message may be: a peer that never sends the empty line gets
    // an error, not an ever-growing buffer.
    let window = buf.get(..buf.len().min(limit)).unwrap_or(buf);
    let incomplete = || {
        if buf.len() >= limit {
            Err(ScanError::TooLarge {
                limit: reported_limit(limits),
            })
        } else {
            Ok(StreamFrame::Incomplete)
        }
    };
    let mut pos = match lex::line_at(window, 0) {
        Some((content_end, next)) => {
            check_line(content_end, limits)?;
            next
        }
        None => {
            partial_line(window, 0, limits)?;
            return incomplete();
        }
    };
    let mut count = 0usize;
    let mut content_length = None;
    let headers_end = loop {
        match walk(window, pos, limits)? {
            Walk::Incomplete => return incomplete(),
            Walk::End(end) => break end,
            Walk::Field(f) => {
                count += 1;
                if count > limits.max_headers {
                    return Err(ScanError::TooManyHeaders {
                        limit: limits.max_headers,
                    });
                }
                if let Some(name) = field_name(window, &f) {
                    if classify(name.bytes(window)) == HeaderName::ContentLength {
                        let (vs, ve) = lex::trim(window, name.colon + 1, f.content_end);
                        let n = content_length_value(window.get(vs..ve).unwrap_or(&[]), limits)?;
                        merge_content_length(&mut content_length, n)?;
                    }
                }
                pos = f.next;
            }
        }
    };
    let content_length = content_length.ok_or(ScanError::MissingContentLength)?;
    let total = headers_end
        .checked_add(content_length)
        .filter(|&t| t <= limit)
        .ok_or(ScanError::TooLarge {
            limit: reported_limit(limits),
        })?;
    Ok(if buf.len() < total {
        StreamFrame::Incomplete
    } else {
        StreamFrame::Message(total)
    })
}

/// True for a datagram that is only a CRLF keep-alive (or other whitespace): ignore it.
pub fn is_keepalive(datagram: &[u8]) -> bool {
    datagram.iter().all(|b| b.is_ascii_whitespace())
}

/// Scans one message. See [`Framing`] for how each transport is framed.
///
/// CR/LF bytes before the start line are skipped (they are not part of `Message::buf`). For a
/// stream frame, bytes after Content-Length are ignored as for a datagram.
pub fn scan<'a>(
    buf: &'a [u8],
    framing: Framing,
    limits: &Limits,
) -> Result<Message<'a>, ScanError> {
    if buf.len() > size_limit(limits) {
        return Err(ScanError::TooLarge {
            limit: reported_limit(limits),
        });
    }
    let buf = buf.get(leading_crlf(buf)..).unwrap_or(&[]);
    let (start, mut pos) = start_line(buf, limits)?;
    let mut s = Fields::default();
    let headers_end = loop {
        match walk(buf, pos, limits)? {
            Walk::Incomplete => return Err(ScanError::NoEndOfHeaders),
            Walk::End(end) => break end,
            Walk::Field(f) => {
                if s.headers.len() >= limits.max_headers {
                    return Err(ScanError::TooManyHeaders {
                        limit: limits.max_headers,
                    });
                }
                s.field(buf, &f, limits)?;
                pos = f.next;
            }
        }
    };
    let top_via = s.top_via.ok_or(ScanError::MissingHeader("Via"))?;
    let from = s.from.ok_or(ScanError::MissingHeader("From"))?;
    let to = s.to.ok_or(ScanError::MissingHeader("To"))?;
    let call_id = s.call_id.ok_or(ScanError::MissingHeader("Call-ID"))?;
    let (cseq, cseq_method_span) = s.cseq.ok_or(ScanError::MissingHeader("CSeq"))?;
    // RFC 3261 §8.1.1.7 / §9.1: every request's CSeq method (ACK and CANCEL included) is the
    // request method.
    if let StartLine::Request { method_span, .. } = start {
        if method_span.get(buf) != cseq_method_span.get(buf) {
            return Err(ScanError::CSeqMethodMismatch);
        }
    }
    let available = buf.len().saturating_sub(headers_end);
    let body_len = match (s.content_length, framing) {
        (Some(declared), _) if declared > available => {
            return Err(ScanError::ContentLengthExceedsBody {
                declared,
                available,
            })
        }
        (Some(declared), _) => declared,
        (None, Framing::Datagram) => available,
        (None, Framing::Stream) => return Err(ScanError::MissingContentLength),
    };
    let end = headers_end + body_len;
    Ok(Message {
        buf: buf.get(..end).unwrap_or(buf),
        start,
        headers: s.headers,
        top_via,
        via_count: s.via_count,
        call_id,
        cseq,
        cseq_method: fields::method_at(buf, cseq_method_span),
        cseq_method_span,
        from,
        to,
        max_forwards: s.max_forwards.map(|(v, _)| v),
        max_forwards_header: s.max_forwards.map(|(_, i)| i),
        content_length: s.content_length,
        headers_end: headers_end as u32,
        body: Span::new(headers_end, end),
    })
}

/// Enough of a malformed request to answer it 400 (RFC 3261 §8.2.6 copies Via, From, To, Call-ID
/// and CSeq). `None` when the input is not recognisably a request or lacks any of these.
#[derive(Clone, Debug)]
pub struct ReplyContext<'a> {
    pub buf: &'a [u8],
    pub method: Method,
    /// Every Via header line (whole lines, CRLF included), in order.
    pub via_lines: SmallVec<[Span; 4]>,
    pub from_line: Span,
    pub to_line: Span,
    pub call_id_line: Span,
    pub cseq_line: Span,
    /// Whether To already has a tag.
    pub to_has_tag: bool,
}

/// Best-effort salvage of the reply fields of a message that failed [`scan`].
pub fn reply_context(buf: &[u8]) -> Option<ReplyContext<'_>> {
    let first = leading_crlf(buf);
    let (line_end, mut pos) = lex::line_at(buf, first)?;
    let line = buf.get(first..line_end)?;
    let sp = memchr::memchr(b' ', line)?;
    let method = line.get(..sp)?;
    // A response starts with `SIP/2.0`, which is not a token.
    if method.is_empty() || !method.iter().all(|&b| lex::is_token(b)) {
        return None;
    }
    let mut via_lines = SmallVec::new();
    let (mut from, mut to, mut call_id, mut cseq) = (None, None, None, None);
    let mut to_value = (0, 0);
    while pos < buf.len() {
        // Lenient: a last line without LF still counts; limits are not enforced.
        let (content_end, mut next) = lex::line_at(buf, pos).unwrap_or((buf.len(), buf.len()));
        if content_end == pos {
            break;
        }
        let mut field_end = content_end;
        while buf.get(next).is_some_and(|&b| lex::is_wsp(b)) {
            (field_end, next) = lex::line_at(buf, next).unwrap_or((buf.len(), buf.len()));
        }
        let f = RawField {
            start: pos,
            content_end: field_end,
            next,
        };
        pos = next;
        let Some(name) = field_name(buf, &f) else {
            continue;
        };
        let line = Span::new(f.start, f.next);
        let slot = match classify(name.bytes(buf)) {
            HeaderName::Via => {
                via_lines.push(line);
                continue;
            }
            HeaderName::From => &mut from,
            HeaderName::To => {
                if to.is_none() {
                    to_value = lex::trim(buf, name.colon + 1, f.content_end);
                }
                &mut to
            }
            HeaderName::CallId => &mut call_id,
            HeaderName::CSeq => &mut cseq,
            _ => continue,
        };
        slot.get_or_insert(line);
    }
    if via_lines.is_empty() {
        return None;
    }
    let to_has_tag = match fields::parse_name_addr(buf, to_value.0, to_value.1) {
        Ok((_, tag)) => tag.is_some(),
        // Unparseable To: guess, so that a tag is not added twice.
        Err(_) => buf
            .get(to_value.0..to_value.1)
            .is_some_and(|v| v.windows(4).any(|w| w.eq_ignore_ascii_case(b"tag="))),
    };
    Some(ReplyContext {
        buf,
        method: Method::from_token(method),
        via_lines,
        from_line: from?,
        to_line: to?,
        call_id_line: call_id?,
        cseq_line: cseq?,
        to_has_tag,
    })
}

/// What an ICMP error report tells of the request pointsman sent: its method and top Via
/// branch, read from the quoted datagram, which the kernel may have cut anywhere after the first
/// few hundred bytes (so neither Content-Length nor the end of the headers can be relied on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounced {
    pub method: Method,
    pub branch: Span,
}

/// Salvages [`Bounced`] from a quoted (possibly truncated) request; `None` for a response or
/// when the top Via line is not whole.
pub fn bounced_request(buf: &[u8]) -> Option<Bounced> {
    let (line_end, mut pos) = lex::line_at(buf, 0)?;
    let line = buf.get(..line_end)?;
    let method = line.get(..memchr::memchr(b' ', line)?)?;
    if method.is_empty() || !method.iter().all(|&b| lex::is_token(b)) {
        return None;
    }
    while pos < buf.len() {
        // Only whole lines count: a Via cut in half would give a wrong branch.
        let (content_end, next) = lex::line_at(buf, pos)?;
        if content_end == pos {
            return None;
        }
        let f = RawField {
            start: pos,
            content_end,
            next,
        };
        pos = next;
        let Some(name) = field_name(buf, &f) else {
            continue;
        };
        if classify(name.bytes(buf)) != HeaderName::Via {
            continue;
        }
        let (start, end) = lex::trim(buf, name.colon + 1, f.content_end);
        let first_end = buf
            .get(start..end)
            .and_then(|v| memchr::memchr(b',', v))
            .map_or(end, |comma| lex::trim(buf, start, start + comma).1);
        let via = fields::parse_via(buf, 0, start, first_end, true).ok()?;
        return Some(Bounced {
            method: Method::from_token(method),
            branch: via.branch?,
        });
    }
    None
}

/// Why a message was rejected. `kind()` is a short stable label for metrics.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ScanError {
    #[error("bad start line: {0}")]
    BadStartLine(&'static str),
    #[error("unsupported SIP version (only SIP/2.0)")]
    UnknownVersion,
    #[error("missing mandatory header {0}")]
    MissingHeader(&'static str),
    #[error("malformed {header} header: {reason}")]
    BadHeader {
        header: &'static str,
        reason: &'static str,
    },
    #[error("CSeq method does not match the request method")]
    CSeqMethodMismatch,
    #[error("bad Content-Length: {0}")]
    BadContentLength(&'static str),
    #[error("conflicting Content-Length headers")]
    ConflictingContentLength,
    #[error("Content-Length {declared} exceeds the {available} body bytes received")]
    ContentLengthExceedsBody { declared: usize, available: usize },
    #[error("Content-Length is mandatory on stream transports")]
    MissingContentLength,
    #[error("no empty line ends the header section")]
    NoEndOfHeaders,
    #[error("message larger than the {limit}-byte limit")]
    TooLarge { limit: usize },
    #[error("more than {limit} headers")]
    TooManyHeaders { limit: usize },
    #[error("a line is longer than the {limit}-byte limit")]
    LineTooLong { limit: usize },
    #[error("more than {limit} Via values")]
    TooManyVias { limit: usize },
    #[error("malformed URI: {0}")]
    BadUri(&'static str),
}

impl ScanError {
    /// What kind of defect this is: the `kind` label of `pointsman_parse_errors_total`.
    pub fn kind(&self) -> ParseErrorKind {
        match self {
            ScanError::BadStartLine(_) => ParseErrorKind::BadStartLine,
            ScanError::UnknownVersion => ParseErrorKind::UnknownVersion,
            ScanError::MissingHeader(_) => ParseErrorKind::MissingHeader,
            ScanError::BadHeader { .. } => ParseErrorKind::BadHeader,
            ScanError::CSeqMethodMismatch => ParseErrorKind::CSeqMethodMismatch,
            ScanError::BadContentLength(_) => ParseErrorKind::BadContentLength,
            ScanError::ConflictingContentLength => ParseErrorKind::ConflictingContentLength,
            ScanError::ContentLengthExceedsBody { .. } => ParseErrorKind::ContentLengthExceedsBody,
            ScanError::MissingContentLength => ParseErrorKind::MissingContentLength,
            ScanError::NoEndOfHeaders => ParseErrorKind::NoEndOfHeaders,
            ScanError::TooLarge { .. } => ParseErrorKind::TooLarge,
            ScanError::TooManyHeaders { .. } => ParseErrorKind::TooManyHeaders,
            ScanError::LineTooLong { .. } => ParseErrorKind::LineTooLong,
            ScanError::TooManyVias { .. } => ParseErrorKind::TooManyVias,
            ScanError::BadUri(_) => ParseErrorKind::BadUri,
        }
    }
}

/// The kind of a [`ScanError`], without its details: the one list of parse-error kinds (the
/// metric labels are derived from [`ParseErrorKind::ALL`]). The discriminant indexes `ALL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ParseErrorKind {
    BadStartLine,
    UnknownVersion,
    MissingHeader,
    BadHeader,
    CSeqMethodMismatch,
    BadContentLength,
    ConflictingContentLength,
    ContentLengthExceedsBody,
    MissingContentLength,
    NoEndOfHeaders,
    TooLarge,
    TooManyHeaders,
    LineTooLong,
    TooManyVias,
    BadUri,
}

impl ParseErrorKind {
    /// Every kind, in discriminant order.
    pub const ALL: [ParseErrorKind; 15] = [
        ParseErrorKind::BadStartLine,
        ParseErrorKind::UnknownVersion,
        ParseErrorKind::MissingHeader,
        ParseErrorKind::BadHeader,
        ParseErrorKind::CSeqMethodMismatch,
        ParseErrorKind::BadContentLength,
        ParseErrorKind::ConflictingContentLength,
        ParseErrorKind::ContentLengthExceedsBody,
        ParseErrorKind::MissingContentLength,
        ParseErrorKind::NoEndOfHeaders,
        ParseErrorKind::TooLarge,
        ParseErrorKind::TooManyHeaders,
        ParseErrorKind::LineTooLong,
        ParseErrorKind::TooManyVias,
        ParseErrorKind::BadUri,
    ];

    /// A short, stable label (metrics, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            ParseErrorKind::BadStartLine => "bad_start_line",
            ParseErrorKind::UnknownVersion => "unknown_version",
            ParseErrorKind::MissingHeader => "missing_header",
            ParseErrorKind::BadHeader => "bad_header",
            ParseErrorKind::CSeqMethodMismatch => "cseq_method_mismatch",
            ParseErrorKind::BadContentLength => "bad_content_length",
            ParseErrorKind::ConflictingContentLength => "conflicting_content_length",
            ParseErrorKind::ContentLengthExceedsBody => "content_length_exceeds_body",
            ParseErrorKind::MissingContentLength => "missing_content_length",
            ParseErrorKind::NoEndOfHeaders => "no_end_of_headers",
            ParseErrorKind::TooLarge => "too_large",
            ParseErrorKind::TooManyHeaders => "too_many_headers",
            ParseErrorKind::LineTooLong => "line_too_long",
            ParseErrorKind::TooManyVias => "too_many_vias",
            ParseErrorKind::BadUri => "bad_uri",
        }
    }
}

impl std::fmt::Display for ParseErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The effective size cap: spans are `u32`, so never more than that whatever the config says.
fn size_limit(limits: &Limits) -> usize {
    limits.max_message_size.min(u32::MAX as usize)
}

fn reported_limit(limits: &Limits) -> usize {
    size_limit(limits)
}

/// CR/LF bytes at the front (keep-alives, or stray line ends before a start line).
fn leading_crlf(buf: &[u8]) -> usize {
    buf.iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count()
}

fn check_line(len: usize, limits: &Limits) -> Result<(), ScanError> {
    if len > limits.max_line_length {
        Err(ScanError::LineTooLong {
            limit: limits.max_line_length,
        })
    } else {
        Ok(())
    }
}

/// A line from `pos` has no LF yet: too long already, or just incomplete.
fn partial_line(buf: &[u8], pos: usize, limits: &Limits) -> Result<(), ScanError> {
    let rest = buf.get(pos..).unwrap_or(&[]);
    // A trailing CR may be the first half of the CRLF still to come.
    let len = rest.len() - usize::from(rest.last() == Some(&b'\r'));
    check_line(len, limits)
}

/// One header field's physical extent: `[start, next)` is the whole field with its CRLF;
/// `content_end` is the end of its last line without CRLF.
#[derive(Clone, Copy, Debug)]
struct RawField {
    start: usize,
    content_end: usize,
    next: usize,
}

enum Walk {
    Field(RawField),
    /// The empty line; the header section ends at this offset.
    End(usize),
    /// No empty line (yet): more bytes could continue the header section.
    Incomplete,
}

/// The next header field (folded lines joined) or the end of the header section at `pos`.
fn walk(buf: &[u8], pos: usize, limits: &Limits) -> Result<Walk, ScanError> {
    let Some((content_end, next)) = lex::line_at(buf, pos) else {
        partial_line(buf, pos, limits)?;
        return Ok(Walk::Incomplete);
    };
    check_line(content_end - pos, limits)?;
    if content_end == pos {
        return Ok(Walk::End(next));
    }
    let mut f = RawField {
        start: pos,
        content_end,
        next,
    };
    loop {
        match buf.get(f.next) {
            // Until the next line starts we cannot know whether it continues this field.
            None => return Ok(Walk::Incomplete),
            Some(&b) if lex::is_wsp(b) => {}
            Some(_) => return Ok(Walk::Field(f)),
        }
        let Some((content_end, next)) = lex::line_at(buf, f.next) else {
            partial_line(buf, f.next, limits)?;
            return Ok(Walk::Incomplete);
        };
        check_line(content_end - f.next, limits)?;
        f.content_end = content_end;
        f.next = next;
    }
}

/// Where a field's name ends and its colon is.
#[derive(Clone, Copy, Debug)]
struct FieldName {
    start: usize,
    end: usize,
    colon: usize,
}

impl FieldName {
    fn bytes<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.start..self.end).unwrap_or(&[])
    }
}

/// `token *WSP ":"` at the start of a field; `None` if it is not there.
fn field_name(buf: &[u8], f: &RawField) -> Option<FieldName> {
    let end = lex::run_end(buf, f.start, f.content_end, lex::is_token);
    let colon = lex::run_end(buf, end, f.content_end, lex::is_wsp);
    (end > f.start && lex::peek(buf, colon, f.content_end) == Some(b':')).then_some(FieldName {
        start: f.start,
        end,
        colon,
    })
}

fn content_length_value(value: &[u8], limits: &Limits) -> Result<usize, ScanError> {
    let max = size_limit(limits) as u64;
    match lex::parse_decimal(value, max) {
        Ok(n) => Ok(n as usize),
        Err(lex::NumError::Empty) => Err(ScanError::BadContentLength("empty value")),
        Err(lex::NumError::NotDigit) if value.first() == Some(&b'-') => {
            Err(ScanError::BadContentLength("negative"))
        }
        Err(lex::NumError::NotDigit) => Err(ScanError::BadContentLength("not a decimal number")),
        Err(lex::NumError::Overflow) => Err(ScanError::BadContentLength(
            "larger than the maximum message size",
        )),
    }
}

/// Repeated Content-Length headers are tolerated only when they agree.
fn merge_content_length(slot: &mut Option<usize>, n: usize) -> Result<(), ScanError> {
    match *slot {
        Some(prev) if prev != n => Err(ScanError::ConflictingContentLength),
        _ => {
            *slot = Some(n);
            Ok(())
        }
    }
}

/// Parses the start line at the front of `buf`; returns it and the offset of the next line.
fn start_line(buf: &[u8], limits: &Limits) -> Result<(StartLine, usize), ScanError> {
    let Some((line_end, next)) = lex::line_at(buf, 0) else {
        partial_line(buf, 0, limits)?;
        return Err(if buf.is_empty() {
            ScanError::BadStartLine("empty message")
        } else {
            ScanError::NoEndOfHeaders
        });
    };
    check_line(line_end, limits)?;
    let line = buf.get(..line_end).unwrap_or(&[]);
    let is_version = |v: &[u8]| v.eq_ignore_ascii_case(b"SIP/2.0");
    if line
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
    {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        let sp = memchr::memchr(b' ', line);
        if !is_version(line.get(..sp.unwrap_or(line.len())).unwrap_or(&[])) {
            return Err(ScanError::UnknownVersion);
        }
        let sp = sp.ok_or(ScanError::BadStartLine("missing status code"))?;
        let code_end = sp + 4;
        let code = line
            .get(sp + 1..code_end)
            .filter(|c| c.iter().all(u8::is_ascii_digit))
            .and_then(|c| lex::parse_decimal(c, 999).ok())
            .filter(|c| (100..=699).contains(c))
            .filter(|_| matches!(line.get(code_end), None | Some(b' ')))
            .ok_or(ScanError::BadStartLine(
                "status code is not three digits from 100 to 699",
            ))?;
        let reason = Span::new((code_end + 1).min(line_end), line_end);
        return Ok((
            StartLine::Response {
                code: code as u16,
                reason,
            },
            next,
        ));
    }
    // Request-Line = Method SP Request-URI SP SIP-Version; exactly one SP between elements
    // (RFC 4475 §3.1.2.11: a proxy must not forward extra whitespace, and it forwards verbatim).
    let sp1 = memchr::memchr(b' ', line).ok_or(ScanError::BadStartLine(
        "missing Request-URI and SIP version",
    ))?;
    let sp2 = lex::find(line, sp1 + 1, line.len(), b' ')
        .ok_or(ScanError::BadStartLine("missing SIP version"))?;
    let method = line.get(..sp1).unwrap_or(&[]);
    let uri = line.get(sp1 + 1..sp2).unwrap_or(&[]);
    let version = line.get(sp2 + 1..).unwrap_or(&[]);
    if method.is_empty() || uri.is_empty() || version.is_empty() {
        return Err(ScanError::BadStartLine(
            "extra whitespace between request line elements",
        ));
    }
    if version.contains(&b' ') {
        return Err(ScanError::BadStartLine("junk after the SIP version"));
    }
    if !is_version(version) {
        return Err(ScanError::UnknownVersion);
    }
    if !method.iter().all(|&b| lex::is_token(b)) {
        return Err(ScanError::BadStartLine("method is not a token"));
    }
    if !uri.iter().all(|&b| b.is_ascii_graphic()) {
        return Err(ScanError::BadStartLine(
            "Request-URI contains whitespace or control characters",
        ));
    }
    let scheme_len = uri
        .iter()
        .take_while(|&&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        .count();
    if !uri.first().is_some_and(u8::is_ascii_alphabetic) || uri.get(scheme_len) != Some(&b':') {
        return Err(ScanError::BadStartLine(
            "Request-URI is not an absolute URI",
        ));
    }
    let method_span = Span::new(0, sp1);
    Ok((
        StartLine::Request {
            method: Method::from_token(method),
            method_span,
            uri: Span::new(sp1 + 1, sp2),
        },
        next,
    ))
}

/// What the scanner has gathered so far from the header fields.
#[derive(Default)]
struct Fields {
    headers: SmallVec<[Header; 32]>,
    top_via: Option<Via>,
    via_count: usize,
    call_id: Option<Span>,
    cseq: Option<(u32, Span)>,
    from: Option<NameAddr>,
    to: Option<NameAddr>,
    max_forwards: Option<(u32, usize)>,
    content_length: Option<usize>,
}

impl Fields {
    fn field(&mut self, buf: &[u8], f: &RawField, limits: &Limits) -> Result<(), ScanError> {
        let n = field_name(buf, f).ok_or_else(|| {
            let end = lex::run_end(buf, f.start, f.content_end, lex::is_token);
            let name = classify(buf.get(f.start..end).unwrap_or(&[]));
            bad(
                name,
                if end == f.start {
                    "line does not start with a header name"
                } else {
                    "no colon after the header name"
                },
            )
        })?;
        let name = classify(n.bytes(buf));
        let (vs, ve) = lex::trim(buf, n.colon + 1, f.content_end);
        let index = self.headers.len();
        self.headers.push(Header {
            name,
            line: Span::new(f.start, f.next),
            name_span: Span::new(n.start, n.end),
            value: Span::new(vs, ve),
        });
        let e = |reason| bad(name, reason);
        // RFC 3261 §7.3.1 allows one value only for these (RFC 4475 §3.1.2.19 "multi01").
        let single = |present: bool| {
            if present {
                Err(e("appears more than once"))
            } else {
                Ok(())
            }
        };
        let value = buf.get(vs..ve).unwrap_or(&[]);
        match name {
            HeaderName::Via => {
                for (i, el) in CommaSplit::new(buf, vs, ve).enumerate() {
                    let el = el.map_err(e)?;
                    if el.start == el.end {
                        return Err(e("empty value"));
                    }
                    self.via_count += 1;
                    if self.via_count > limits.max_via {
                        return Err(ScanError::TooManyVias {
                            limit: limits.max_via,
                        });
                    }
                    if self.top_via.is_none() {
                        let sole = i == 0 && !el.more;
                        self.top_via = Some(fields::parse_via(buf, index, el.start, el.end, sole)?);
                    }
                }
            }
            HeaderName::CallId => {
                single(self.call_id.is_some())?;
                if value.is_empty() {
                    return Err(e("empty value"));
                }
                if value.iter().any(|&b| lex::is_lws(b)) {
                    return Err(e("contains whitespace"));
                }
                self.call_id = Some(Span::new(vs, ve));
            }
            HeaderName::CSeq => {
                single(self.cseq.is_some())?;
                self.cseq = Some(fields::parse_cseq(buf, vs, ve)?);
            }
            HeaderName::From | HeaderName::To => {
                let slot = if name == HeaderName::From {
                    &mut self.from
                } else {
                    &mut self.to
                };
                single(slot.is_some())?;
                let (uri, tag) = fields::parse_name_addr(buf, vs, ve).map_err(e)?;
                *slot = Some(NameAddr {
                    value: Span::new(vs, ve),
                    uri,
                    tag,
                });
            }
            HeaderName::MaxForwards => {
                single(self.max_forwards.is_some())?;
                let v = match lex::parse_decimal(value, u64::from(u32::MAX)) {
                    Ok(v) => v as u32,
                    Err(lex::NumError::Overflow) => return Err(e("value out of range")),
                    Err(_) => return Err(e("not a decimal number")),
                };
                self.max_forwards = Some((v, index));
            }
            HeaderName::ContentLength => {
                let n = content_length_value(value, limits)?;
                merge_content_length(&mut self.content_length, n)?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Every comma-separated value of every header called `name`, in order:
/// `(header index, value, sole)`.
struct Values<'m, 'a> {
    msg: &'m Message<'a>,
    name: HeaderName,
    next_header: usize,
    current: Option<(usize, CommaSplit<'a>, bool)>,
    failed: bool,
}

impl<'m, 'a> Values<'m, 'a> {
    fn new(msg: &'m Message<'a>, name: HeaderName) -> Self {
        Values {
            msg,
            name,
            next_header: 0,
            current: None,
            failed: false,
        }
    }
}

impl Iterator for Values<'_, '_> {
    type Item = Result<(usize, lex::Element, bool), ScanError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            if let Some((index, split, first)) = &mut self.current {
                match split.next() {
                    Some(Ok(el)) if el.start == el.end => {
                        self.failed = true;
                        return Some(Err(bad(self.name, "empty value")));
                    }
                    Some(Ok(el)) => {
                        let sole = *first && !el.more;
                        *first = false;
                        return Some(Ok((*index, el, sole)));
                    }
                    Some(Err(reason)) => {
                        self.failed = true;
                        return Some(Err(bad(self.name, reason)));
                    }
                    None => self.current = None,
                }
            }
            let index = self.next_header;
            let h = self.msg.headers.get(index)?;
            self.next_header += 1;
            if h.name == self.name {
                let (s, e) = (h.value.start as usize, h.value.end as usize);
                self.current = Some((index, CommaSplit::new(self.msg.buf, s, e), true));
            }
        }
    }
}
