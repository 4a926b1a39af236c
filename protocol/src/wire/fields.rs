//! Parsers for the individual header values the proxy reads: header names (full and compact),
//! via-parm, name-addr / addr-spec with parameters, CSeq, and SIP/SIPS/tel URIs.
//!
//! They work on `[start, end)` bounds of one buffer and return spans into it. They must not
//! allocate, and they check only what the proxy relies on; everything else passes through.

use super::lex::{self, peek, Params};
use super::scan::{HeaderName, Method, ScanError, Span, Transport, Uri, UriScheme, Via};

/// Maps a header name as written (any case, compact or full) to the variant the proxy uses.
pub(crate) fn classify(name: &[u8]) -> HeaderName {
    if let [c] = name {
        // RFC 3261 §7.3.3 (and extensions) compact forms the proxy has variants for; the others
        // (e=Content-Encoding, s=Subject, o=Event, ...) are `Other`.
        return match c.to_ascii_lowercase() {
            b'v' => HeaderName::Via,
            b'i' => HeaderName::CallId,
            b'f' => HeaderName::From,
            b't' => HeaderName::To,
            b'l' => HeaderName::ContentLength,
            b'c' => HeaderName::ContentType,
            b'm' => HeaderName::Contact,
            b'k' => HeaderName::Supported,
            _ => HeaderName::Other,
        };
    }
    const FULL: [HeaderName; 16] = [
        HeaderName::Via,
        HeaderName::CallId,
        HeaderName::CSeq,
        HeaderName::From,
        HeaderName::To,
        HeaderName::MaxForwards,
        HeaderName::Route,
        HeaderName::RecordRoute,
        HeaderName::ContentLength,
        HeaderName::ContentType,
        HeaderName::Contact,
        HeaderName::ProxyRequire,
        HeaderName::Require,
        HeaderName::Supported,
        HeaderName::Reason,
        HeaderName::RetryAfter,
    ];
    FULL.into_iter()
        .find(|h| {
            let canon = canonical(*h).as_bytes();
            canon.len() == name.len() && canon.eq_ignore_ascii_case(name)
        })
        .unwrap_or(HeaderName::Other)
}

/// The full name of a header (used in error messages); `"header"` for `Other`.
pub(crate) fn canonical(name: HeaderName) -> &'static str {
    match name {
        HeaderName::Via => "Via",
        HeaderName::CallId => "Call-ID",
        HeaderName::CSeq => "CSeq",
        HeaderName::From => "From",
        HeaderName::To => "To",
        HeaderName::MaxForwards => "Max-Forwards",
        HeaderName::Route => "Route",
        HeaderName::RecordRoute => "Record-Route",
        HeaderName::ContentLength => "Content-Length",
        HeaderName::ContentType => "Content-Type",
        HeaderName::Contact => "Contact",
        HeaderName::ProxyRequire => "Proxy-Require",
        HeaderName::Require => "Require",
        HeaderName::Supported => "Supported",
        HeaderName::Reason => "Reason",
        HeaderName::RetryAfter => "Retry-After",
        HeaderName::Other => "header",
    }
}

pub(crate) fn bad(header: HeaderName, reason: &'static str) -> ScanError {
    ScanError::BadHeader {
        header: canonical(header),
        reason,
    }
}

fn transport_of(token: &[u8]) -> Transport {
    const ALL: [(&[u8], Transport); 6] = [
        (b"UDP", Transport::Udp),
        (b"TCP", Transport::Tcp),
        (b"TLS", Transport::Tls),
        (b"SCTP", Transport::Sctp),
        (b"WS", Transport::Ws),
        (b"WSS", Transport::Wss),
    ];
    ALL.iter()
        .find(|(t, _)| t.eq_ignore_ascii_case(token))
        .map_or(Transport::Other, |(_, t)| *t)
}

/// A host at `i`: an IPv6 reference with its brackets, or a run of host characters.
/// Returns its end, or `None` if there is none.
fn host_end(buf: &[u8], i: usize, end: usize) -> Option<usize> {
    if peek(buf, i, end) == Some(b'[') {
        let close = lex::find(buf, i + 1, end, b']')?;
        let inner = buf.get(i + 1..close)?;
        (!inner.is_empty() && inner.iter().all(|&b| lex::is_ipv6_char(b))).then_some(close + 1)
    } else {
        let e = lex::run_end(buf, i, end, lex::is_host_char);
        (e > i).then_some(e)
    }
}

/// Parses one via-parm occupying exactly `[start, end)` (already trimmed).
pub(crate) fn parse_via(
    buf: &[u8],
    header: usize,
    start: usize,
    end: usize,
    sole: bool,
) -> Result<Via, ScanError> {
    let e = |reason| bad(HeaderName::Via, reason);
    // sent-protocol = "SIP" SLASH "2.0" SLASH transport, with SWS allowed around each slash.
    let mut i = start;
    let mut parts = [(0usize, 0usize); 3];
    for (n, part) in parts.iter_mut().enumerate() {
        if n > 0 {
            i = lex::skip_lws(buf, i, end);
            if peek(buf, i, end) != Some(b'/') {
                return Err(e("sent-protocol is not SIP/2.0/transport"));
            }
            i = lex::skip_lws(buf, i + 1, end);
        }
        let t_end = lex::run_end(buf, i, end, lex::is_token);
        if t_end == i {
            return Err(e("sent-protocol is not SIP/2.0/transport"));
        }
        *part = (i, t_end);
        i = t_end;
    }
    let text = |(s, e): (usize, usize)| buf.get(s..e).unwrap_or(&[]);
    if !text(parts[0]).eq_ignore_ascii_case(b"SIP") || text(parts[1]) != b"2.0" {
        return Err(e("sent-protocol is not SIP/2.0"));
    }
    let transport = transport_of(text(parts[2]));
    let host_start = lex::skip_lws(buf, i, end);
    if host_start == i {
        return Err(e("no whitespace between transport and sent-by"));
    }
    let h_end = host_end(buf, host_start, end).ok_or(e("missing or malformed sent-by host"))?;
    let mut i = lex::skip_lws(buf, h_end, end);
    let mut port = None;
    let mut params_start = h_end;
    if peek(buf, i, end) == Some(b':') {
        let p_start = lex::skip_lws(buf, i + 1, end);
        let p_end = lex::run_end(buf, p_start, end, |b| b.is_ascii_digit());
        port = Some(
            lex::parse_port(buf.get(p_start..p_end).unwrap_or(&[]))
                .ok_or(e("sent-by port is not a number 0-65535"))?,
        );
        i = p_end;
        params_start = p_end;
    }
    let _ = i;
    let mut via = Via {
        header,
        value: Span::new(start, end),
        sole,
        transport,
        host: Span::new(host_start, h_end),
        port,
        branch: None,
        received: None,
        rport: None,
    };
    for p in Params::new(buf, params_start, end) {
        let p = p.map_err(e)?;
        let value = p.value.map(|(s, e)| Span::new(s, e));
        if p.is(buf, b"branch") {
            if via.branch.is_none() {
                via.branch = Some(value.ok_or(e("branch parameter without a value"))?);
            }
        } else if p.is(buf, b"received") {
            if via.received.is_none() {
                via.received = Some(value.ok_or(e("received parameter without a value"))?);
            }
        } else if p.is(buf, b"rport") && via.rport.is_none() {
            via.rport = Some(match value {
                None => None,
                Some(v) => Some(lex::parse_port(v.get(buf)).ok_or(e("rport is not a port"))?),
            });
        }
    }
    Ok(via)
}

/// A name-addr or addr-spec: the URI bounds and where header parameters start.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AddrParts {
    pub uri: (usize, usize),
    pub params: usize,
}

/// Parses `[display-name] <URI>` (or, unless `require_angle`, a bare addr-spec whose URI ends at
/// the first `;` or whitespace). Parameters after it are not checked here.
pub(crate) fn parse_addr(
    buf: &[u8],
    start: usize,
    end: usize,
    require_angle: bool,
) -> Result<AddrParts, &'static str> {
    let mut i = lex::skip_lws(buf, start, end);
    match peek(buf, i, end) {
        None => return Err("empty value"),
        Some(b'"') => {
            let q = lex::quoted_end(buf, i, end).ok_or("unterminated quoted display name")?;
            i = lex::skip_lws(buf, q, end);
            if peek(buf, i, end) != Some(b'<') {
                return Err("display name not followed by <URI>");
            }
        }
        Some(b'<') => {}
        Some(_) => match lex::find(buf, i, end, b'<') {
            // An unquoted display name: tokens up to `<`.
            Some(lt) => {
                if buf.get(i..lt).is_some_and(|d| d.contains(&b'"')) {
                    return Err("malformed display name");
                }
                i = lt;
            }
            None if require_angle => return Err("value is not a <URI>"),
            None => {
                let u_end = lex::run_end(buf, i, end, |b| !lex::is_lws(b) && b != b';');
                return Ok(AddrParts {
                    uri: (i, u_end),
                    params: u_end,
                });
            }
        },
    }
    // `i` is at `<`.
    let close = lex::find(buf, i + 1, end, b'>').ok_or("unterminated <")?;
    if close == i + 1 {
        return Err("empty URI");
    }
    Ok(AddrParts {
        uri: (i + 1, close),
        params: close + 1,
    })
}

/// From/To: the URI and the tag parameter.
pub(crate) fn parse_name_addr(
    buf: &[u8],
    start: usize,
    end: usize,
) -> Result<(Span, Option<Span>), &'static str> {
    let parts = parse_addr(buf, start, end, false)?;
    let mut tag = None;
    for p in Params::new(buf, parts.params, end) {
        let p = p?;
        if p.is(buf, b"tag") && tag.is_none() {
            let (s, e) = p.value.ok_or("tag parameter without a value")?;
            tag = Some(Span::new(s, e));
        }
    }
    Ok((Span::new(parts.uri.0, parts.uri.1), tag))
}

/// CSeq: `1*DIGIT LWS Method`. Returns the number and the method span.
pub(crate) fn parse_cseq(buf: &[u8], start: usize, end: usize) -> Result<(u32, Span), ScanError> {
    let e = |reason| bad(HeaderName::CSeq, reason);
    let d_end = lex::run_end(buf, start, end, |b| b.is_ascii_digit());
    // RFC 3261 §8.1.1.5: the sequence number MUST be less than 2**31.
    let n = match lex::parse_decimal(buf.get(start..d_end).unwrap_or(&[]), (1 << 31) - 1) {
        Ok(n) => n as u32,
        Err(lex::NumError::Overflow) => return Err(e("sequence number is not below 2^31")),
        Err(_) => return Err(e("sequence number is not a number")),
    };
    let m_start = lex::skip_lws(buf, d_end, end);
    if m_start == d_end {
        return Err(e("no whitespace between number and method"));
    }
    let m_end = lex::run_end(buf, m_start, end, lex::is_token);
    if m_end == m_start {
        return Err(e("missing method"));
    }
    if m_end != end {
        return Err(e("junk after the method"));
    }
    Ok((n, Span::new(m_start, m_end)))
}

/// The method named by the bytes of `span`.
pub(crate) fn method_at(buf: &[u8], span: Span) -> Method {
    Method::from_token(span.get(buf))
}

/// Parses a URI occupying `[start, end)`.
pub(crate) fn parse_uri(buf: &[u8], start: usize, end: usize) -> Result<Uri, ScanError> {
    let e = ScanError::BadUri;
    let bytes = buf.get(start..end).ok_or(e("span out of range"))?;
    if bytes.iter().any(|&b| lex::is_lws(b)) {
        return Err(e("whitespace inside the URI"));
    }
    let colon = memchr::memchr(b':', bytes).ok_or(e("no scheme"))?;
    let scheme = bytes.get(..colon).unwrap_or(&[]);
    let scheme_ok = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !scheme_ok {
        return Err(e("malformed scheme"));
    }
    let rest = start + colon + 1;
    let scheme = if scheme.eq_ignore_ascii_case(b"sip") {
        UriScheme::Sip
    } else if scheme.eq_ignore_ascii_case(b"sips") {
        UriScheme::Sips
    } else if scheme.eq_ignore_ascii_case(b"tel") {
        UriScheme::Tel
    } else {
        // Opaque: the proxy answers 416; keep the rest as the "host" so it can be logged.
        return Ok(Uri {
            scheme: UriScheme::Other,
            user: None,
            host: Span::new(rest, end),
            port: None,
            params: Span::new(end, end),
        });
    };
    if scheme == UriScheme::Tel {
        let num_end = lex::find(buf, rest, end, b';').unwrap_or(end);
        if num_end == rest {
            return Err(e("empty telephone number"));
        }
        return Ok(Uri {
            scheme,
            user: Some(Span::new(rest, num_end)),
            host: Span::new(num_end, num_end),
            port: None,
            params: Span::new(num_end, end),
        });
    }
    // `@` cannot appear unescaped outside userinfo (RFC 3261 §25.1), so the first one ends it.
    let (user, host_start) = match lex::find(buf, rest, end, b'@') {
        Some(at) => {
            let u_end = lex::find(buf, rest, at, b':').unwrap_or(at);
            if u_end == rest {
                return Err(e("empty user part"));
            }
            (Some(Span::new(rest, u_end)), at + 1)
        }
        None => (None, rest),
    };
    let h_end = host_end(buf, host_start, end).ok_or(e("missing or malformed host"))?;
    let mut i = h_end;
    let mut port = None;
    if peek(buf, i, end) == Some(b':') {
        let p_end = lex::run_end(buf, i + 1, end, |b| b.is_ascii_digit());
        port = Some(
            lex::parse_port(buf.get(i + 1..p_end).unwrap_or(&[]))
                .ok_or(e("port is not a number 0-65535"))?,
        );
        i = p_end;
    }
    if !matches!(peek(buf, i, end), None | Some(b';') | Some(b'?')) {
        return Err(e("junk after the host"));
    }
    Ok(Uri {
        scheme,
        user,
        host: Span::new(host_start, h_end),
        port,
        params: Span::new(i, end),
    })
}

/// Finds a URI parameter in `[start, end)`; stops at the `?headers` part.
pub(crate) fn uri_param(buf: &[u8], start: usize, end: usize, name: &[u8]) -> Option<Span> {
    let end = lex::find(buf, start, end, b'?').unwrap_or(end);
    let bytes = buf.get(start..end)?;
    let mut pos = start;
    for part in bytes.split(|&b| b == b';') {
        let p_start = pos;
        pos += part.len() + 1;
        let (n, v) = match memchr::memchr(b'=', part) {
            Some(eq) => (part.get(..eq)?, Some(p_start + eq + 1)),
            None => (part, None),
        };
        if !n.is_empty() && n.eq_ignore_ascii_case(name) {
            let p_end = p_start + part.len();
            return Some(match v {
                Some(v) => Span::new(v, p_end),
                None => Span::new(p_end, p_end),
            });
        }
    }
    None
}
