//! Framing and scanning of received SIP messages into spans (RFC 3261 §7, §18.3, §25).
//!
//! CONTRACT (stub written first so the rest of the crate can compile against it; the
//! implementation replaces every `todo!()` and may add items, but keeps these signatures).

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
        Limits {
            max_message_size: 65_535,
            max_headers: 100,
            max_line_length: 8_192,
            max_via: 32,
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
        let _ = self;
        std::iter::once_with(|| todo!("wire::Message::vias"))
    }
    /// Every Route value in order (or Record-Route with `HeaderName::RecordRoute`).
    pub fn routes(
        &self,
        name: HeaderName,
    ) -> impl Iterator<Item = Result<RouteValue, ScanError>> + '_ {
        let _ = (self, name);
        std::iter::once_with(|| todo!("wire::Message::routes"))
    }
    /// The span to delete to remove one comma-joined value from its header: the whole header line
    /// when it is the only value, otherwise the value with its separating comma and whitespace.
    pub fn value_removal(&self, header: usize, value: Span) -> Span {
        let _ = (header, value);
        todo!("wire::Message::value_removal")
    }
}

/// Parses a URI (Request-URI, or the URI of a Route/Record-Route/Contact value) found at
/// `span` of `buf`.
pub fn parse_uri(buf: &[u8], span: Span) -> Result<Uri, ScanError> {
    let _ = (buf, span);
    todo!("wire::parse_uri")
}

/// Finds a URI parameter (`;name` or `;name=value`) in a `params` span; returns the value span
/// (empty for a bare parameter). Names compare case-insensitively.
pub fn uri_param(buf: &[u8], params: Span, name: &[u8]) -> Option<Span> {
    let _ = (buf, params, name);
    todo!("wire::uri_param")
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
pub fn frame_stream(buf: &[u8], limits: &Limits) -> Result<StreamFrame, ScanError> {
    let _ = (buf, limits);
    todo!("wire::frame_stream")
}

/// True for a datagram that is only a CRLF keep-alive (or other whitespace): ignore it.
pub fn is_keepalive(datagram: &[u8]) -> bool {
    datagram.iter().all(|b| b.is_ascii_whitespace())
}

/// Scans one message. See [`Framing`] for how each transport is framed.
pub fn scan<'a>(buf: &'a [u8], framing: Framing, limits: &Limits) -> Result<Message<'a>, ScanError> {
    let _ = (buf, framing, limits);
    todo!("wire::scan")
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
    let _ = buf;
    todo!("wire::reply_context")
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
    /// A short, stable label (metrics, logs).
    pub fn kind(&self) -> &'static str {
        match self {
            ScanError::BadStartLine(_) => "bad_start_line",
            ScanError::UnknownVersion => "unknown_version",
            ScanError::MissingHeader(_) => "missing_header",
            ScanError::BadHeader { .. } => "bad_header",
            ScanError::CSeqMethodMismatch => "cseq_method_mismatch",
            ScanError::BadContentLength(_) => "bad_content_length",
            ScanError::ConflictingContentLength => "conflicting_content_length",
            ScanError::ContentLengthExceedsBody { .. } => "content_length_exceeds_body",
            ScanError::MissingContentLength => "missing_content_length",
            ScanError::NoEndOfHeaders => "no_end_of_headers",
            ScanError::TooLarge { .. } => "too_large",
            ScanError::TooManyHeaders { .. } => "too_many_headers",
            ScanError::LineTooLong { .. } => "line_too_long",
            ScanError::TooManyVias { .. } => "too_many_vias",
            ScanError::BadUri(_) => "bad_uri",
        }
    }
}
