//! SDP (RFC 8866, RFC 3264) as pointsman anchors media: a byte-transparent line rewriter for the
//! forwarding path ([`rewrite`]), a summary of what the relay needs to know ([`inspect`]:
//! addresses, ports, codecs, direction), and where the SDP sits in a SIP body ([`find_sdp`]:
//! `application/sdp`, or one part of a `multipart/*` body such as SIP-I's).
//!
//! The rewriter changes only `c=` addresses, non-zero `m=` ports, `a=rtcp` and removes ICE lines;
//! every other byte (unknown lines and attributes, `o=`, spacing, CRLF or bare LF, order) is
//! copied as received. [`inspect`] and [`rewrite`] share one line parser, so a body one accepts
//! the other accepts too.
//!
//! It must not: allocate per line on the rewrite path, reorder or normalise lines, or panic on
//! any input. It knows nothing of SIP headers, calls or sockets: the caller splices the result
//! into the message and recomputes Content-Length.

use smallvec::SmallVec;
use std::io::Write as _;
use std::net::IpAddr;
use std::ops::Range;

/// The most `m=` lines a body may have ([`SdpError::TooManyMedia`] beyond): a call needs a few,
/// and every one costs the relay ports.
pub const MAX_MEDIA: usize = 16;

/// What an SDP body says, as far as the relay cares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SdpSummary {
    /// The session-level `c=` address (`None`: absent, or not an IP literal).
    pub connection: Option<IpAddr>,
    /// Every `m=` line, in order.
    pub media: SmallVec<[MediaLine; 2]>,
}

/// One `m=` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaLine {
    pub kind: MediaKind,
    /// The `m=` port (0: the stream is disabled or rejected).
    pub port: u16,
    pub transport: MediaTransport,
    /// The effective connection address: the media-level `c=`, else the session-level one.
    /// `None`: neither is an IP literal (an FQDN, or missing). `0.0.0.0` / `::` is kept (hold).
    pub connection: Option<IpAddr>,
    /// `a=rtcp:<port> [IN IP4 <addr>]` (RFC 3605), as written.
    pub rtcp: Option<(u16, Option<IpAddr>)>,
    pub rtcp_mux: bool,
    /// The `m=` format list, as payload types (formats that are not a number up to 255, e.g.
    /// `t38`, are skipped).
    pub formats: SmallVec<[u8; 8]>,
    /// `a=rtpmap` entries, plus the static payload types of RFC 3551 the `m=` line names
    /// without an rtpmap (0 PCMU, 8 PCMA, 9 G722, 18 G729, 13 CN, 3 GSM, 4 G723; RTP and SRTP
    /// transports only). In `m=` format order, then any rtpmap for a payload type the `m=` line
    /// does not name; an rtpmap that does not parse is left out.
    pub codecs: SmallVec<[Codec; 4]>,
    /// `a=ptime`, rounded down to whole milliseconds (media level, else session level).
    pub ptime_ms: Option<u32>,
    /// `a=sendrecv|sendonly|recvonly|inactive` (media level, else session level, else
    /// sendrecv).
    pub direction: Direction,
    /// Comfort noise may leave gaps in the stream: a CN codec (`cn`) is among the `m=` formats,
    /// or `a=silenceSupp:on` (media level, else session level).
    pub comfort_noise: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaKind {
    Audio,
    Video,
    /// `m=image` (T.38 fax).
    Image,
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaTransport {
    /// `RTP/AVP` or `RTP/AVPF`: plain RTP, which the relay may normalise.
    Rtp,
    /// `RTP/SAVP`, `RTP/SAVPF`, `UDP/TLS/RTP/SAVP(F)`, `TCP/TLS/RTP/SAVP(F)`: SRTP, passed
    /// through unchanged.
    Srtp,
    /// `udptl` (T.38): not RTP, passed through unchanged.
    Udptl,
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Direction {
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

/// One `a=rtpmap` (or static payload type).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Codec {
    pub pt: u8,
    /// Encoding name, ASCII-lowercased (`pcma`, `telephone-event`, `opus`).
    pub name: SmallVec<[u8; 16]>,
    pub clock: u32,
}

/// What a rewrite puts in: one relay address, and per `m=` line (in order) the relay's RTP
/// port. A line whose entry is `None`, or beyond the slice, keeps its port (and its `a=rtcp`);
/// a port 0 stays 0 whatever the entry says. The RTCP port written into `a=rtcp` is the RTP
/// port + 1 (RTP ports are even, RFC 3550 §11; for an RTP port of 65535, which has no port
/// above it, the `a=rtcp` line is left out).
#[derive(Clone, Copy, Debug)]
pub struct Rewrite<'a> {
    pub address: IpAddr,
    pub ports: &'a [Option<u16>],
}

/// Why an SDP body cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("not SDP: the body does not start with v=0")]
    NotSdp,
    /// The 1-based number of the first line that does not parse.
    #[error("malformed line {0}")]
    Malformed(usize),
    /// More than [`MAX_MEDIA`] `m=` lines.
    #[error("too many media lines")]
    TooManyMedia,
}

/// Reads an SDP body: every `m=` section with its effective address, ports, codecs and
/// direction. Lines end in CRLF or a bare LF, the last may have no line end; empty lines are
/// tolerated. The first line must be `v=0` ([`SdpError::NotSdp`]); a `c=`, `m=` or `a=rtcp`
/// line that does not parse, or any other non-empty line that is not `<a-z>=...`, is
/// [`SdpError::Malformed`]; more than [`MAX_MEDIA`] `m=` lines is [`SdpError::TooManyMedia`].
pub fn inspect(body: &[u8]) -> Result<SdpSummary, SdpError> {
    check_version(body)?;
    let mut session = Level::default();
    let mut summary = SdpSummary::default();
    let mut current: Option<Section> = None;
    for line in Lines::new(body).skip(1) {
        let level = match current.as_mut() {
            Some(section) => &mut section.level,
            None => &mut session,
        };
        match classify(&line)? {
            Field::Media(media) => {
                if summary.media.len() + usize::from(current.is_some()) >= MAX_MEDIA {
                    return Err(SdpError::TooManyMedia);
                }
                if let Some(done) = current.take() {
                    summary.media.push(done.finish(&session));
                }
                current = Some(Section::new(&media));
            }
            Field::Connection(connection) => {
                level.connection.get_or_insert(connection.ip);
            }
            Field::Rtcp(rtcp) => {
                // RFC 3605 puts a=rtcp at media level only.
                if let Some(section) = current.as_mut() {
                    let address = rtcp.address.and_then(|a| a.ip);
                    section.rtcp.get_or_insert((rtcp.port, address));
                }
            }
            Field::Attribute { name, value } => {
                level.attribute(name, value);
                if let Some(section) = current.as_mut() {
                    section.attribute(name, value);
                }
            }
            Field::Ice | Field::Other => {}
        }
    }
    if let Some(done) = current.take() {
        summary.media.push(done.finish(&session));
    }
    summary.connection = session.connection.flatten();
    Ok(summary)
}

/// Appends `body` to `out` with the relay's edits: the address of every `c=` line (session and
/// media level) becomes `rw.address`, with `IP4`/`IP6` to match; each non-zero `m=` port becomes
/// `rw.ports[index]` when that is `Some` (a `/count` stays); in those sections `a=rtcp` gets
/// that port + 1, and `rw.address` if it names an address (even `0.0.0.0`); ICE lines are left out (`a=candidate`,
/// `a=ice-ufrag`, `a=ice-pwd`, `a=ice-options`, `a=ice-lite`, `a=ice-pacing`,
/// `a=remote-candidates`, `a=end-of-candidates`, `a=ice-mismatch`: the relay's address has no
/// ICE agent behind it). Every other byte is copied as received.
///
/// A `c=` address that is already `rw.address`, or is `0.0.0.0` / `::` (hold, RFC 2543 and
/// RFC 3264 §8.4), stays as written. A multicast `/ttl` or `/count` suffix goes with the old
/// address unless `rw.address` is multicast too: on a unicast address it is invalid (RFC 8866
/// §5.7).
///
/// Accepts exactly what [`inspect`] accepts; on an error `out` is left as it was.
pub fn rewrite(body: &[u8], rw: &Rewrite<'_>, out: &mut Vec<u8>) -> Result<(), SdpError> {
    let start = out.len();
    let result = rewrite_lines(body, rw, out);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn rewrite_lines(body: &[u8], rw: &Rewrite<'_>, out: &mut Vec<u8>) -> Result<(), SdpError> {
    check_version(body)?;
    let mut media_lines = 0;
    // The relay port of the current m= section (None at session level, or when it keeps its own).
    let mut relay_port: Option<u16> = None;
    for line in Lines::new(body) {
        let content = line.content;
        let field = if line.number == 1 {
            Field::Other
        } else {
            classify(&line)?
        };
        match field {
            Field::Ice => continue,
            Field::Connection(connection) => {
                let hold = Unspecified::IsHold;
                write_with_address(content, 0, &connection, rw.address, hold, out);
            }
            Field::Media(media) => {
                media_lines += 1;
                if media_lines > MAX_MEDIA {
                    return Err(SdpError::TooManyMedia);
                }
                relay_port = match media.port {
                    0 => None,
                    _ => rw.ports.get(media_lines - 1).copied().flatten(),
                };
                match relay_port {
                    Some(port) => {
                        out.extend_from_slice(&content[..media.port_span.start]);
                        write_decimal(out, port);
                        out.extend_from_slice(&content[media.port_span.end..]);
                    }
                    None => out.extend_from_slice(content),
                }
            }
            Field::Rtcp(rtcp) => match relay_port {
                Some(port) => {
                    let Some(rtcp_port) = port.checked_add(1) else {
                        continue;
                    };
                    out.extend_from_slice(&content[..rtcp.port_span.start]);
                    write_decimal(out, rtcp_port);
                    match &rtcp.address {
                        Some(address) => write_with_address(
                            content,
                            rtcp.port_span.end,
                            address,
                            rw.address,
                            Unspecified::IsAnAddress,
                            out,
                        ),
                        None => out.extend_from_slice(&content[rtcp.port_span.end..]),
                    }
                }
                None => out.extend_from_slice(content),
            },
            Field::Attribute { .. } | Field::Other => out.extend_from_slice(content),
        }
        out.extend_from_slice(line.terminator());
    }
    Ok(())
}

/// Where the SDP is in a SIP body with this Content-Type (the header's value): the whole body
/// for `application/sdp`; for `multipart/mixed`, `multipart/alternative` or `multipart/related`
/// with a `boundary` parameter, the content of the first part whose `Content-Type` is
/// `application/sdp` (nested multiparts are searched too, a few levels deep). The part's content
/// starts after the first empty line of the part and ends before the line end that precedes the
/// next delimiter line (RFC 2046 §5.1.1). `None`: no SDP, or a multipart that does not parse
/// (no boundary, no closing delimiter after the part).
pub fn find_sdp(content_type: &[u8], body: &[u8]) -> Option<Range<usize>> {
    find_sdp_nested(content_type, body, 0)
}

/// How deep [`find_sdp`] looks into multiparts inside multiparts.
const MAX_MULTIPART_DEPTH: usize = 3;

/// RFC 2046 §5.1.1: a boundary is 1 to 70 characters.
const MAX_BOUNDARY_LEN: usize = 70;

fn find_sdp_nested(content_type: &[u8], body: &[u8], depth: usize) -> Option<Range<usize>> {
    let (media_type, parameters) = split_media_type(content_type);
    if media_type.eq_ignore_ascii_case(b"application/sdp") {
        return Some(0..body.len());
    }
    let multipart = [
        &b"multipart/mixed"[..],
        b"multipart/alternative",
        b"multipart/related",
    ]
    .iter()
    .any(|m| media_type.eq_ignore_ascii_case(m));
    if !multipart || depth >= MAX_MULTIPART_DEPTH {
        return None;
    }
    let boundary = boundary_parameter(parameters)?;
    let mut delimiter = next_delimiter(body, 0, boundary)?;
    loop {
        let after = delimiter.end;
        if body.get(after..after + 2) == Some(&b"--"[..]) {
            return None; // the close delimiter: no more parts
        }
        // The rest of the delimiter line is transport padding.
        let part_start = after + memchr::memchr(b'\n', body.get(after..)?)? + 1;
        let next = next_delimiter(body, part_start, boundary)?;
        // The line end before the next delimiter belongs to the delimiter.
        let mut part_end = next.start.saturating_sub(1).max(part_start);
        if part_end > part_start && body.get(part_end - 1) == Some(&b'\r') {
            part_end -= 1;
        }
        let part = body.get(part_start..part_end)?;
        if let Some((part_type, content_start)) = part_headers(part) {
            let content = part.get(content_start..)?;
            if let Some(inner) = find_sdp_nested(part_type, content, depth + 1) {
                let offset = part_start + content_start;
                return Some(offset + inner.start..offset + inner.end);
            }
        }
        delimiter = next;
    }
}

/// A Content-Type value's media type and the parameters after its first `;`.
fn split_media_type(content_type: &[u8]) -> (&[u8], &[u8]) {
    match memchr::memchr(b';', content_type) {
        Some(semicolon) => (
            trim(&content_type[..semicolon]),
            &content_type[semicolon + 1..],
        ),
        None => (trim(content_type), &[]),
    }
}

/// The `boundary` parameter's value, quoted or not (RFC 2045 §5.1).
fn boundary_parameter(mut parameters: &[u8]) -> Option<&[u8]> {
    loop {
        let separator = memchr::memchr2(b'=', b';', parameters)?;
        let name = trim(&parameters[..separator]);
        if parameters[separator] == b';' {
            parameters = &parameters[separator + 1..]; // a parameter without a value
            continue;
        }
        let rest = trim_start(&parameters[separator + 1..]);
        let (value, after) = match rest.strip_prefix(b"\"") {
            Some(quoted) => {
                let close = memchr::memchr(b'"', quoted)?;
                (&quoted[..close], &quoted[close + 1..])
            }
            None => {
                let end = memchr::memchr(b';', rest).unwrap_or(rest.len());
                (trim(&rest[..end]), &rest[end..])
            }
        };
        if name.eq_ignore_ascii_case(b"boundary") {
            let usable = !value.is_empty() && value.len() <= MAX_BOUNDARY_LEN;
            return usable.then_some(value);
        }
        parameters = &after[memchr::memchr(b';', after)? + 1..];
    }
}

/// The next delimiter line at or after `from`: `--boundary` at the start of a line, followed by
/// `--`, white space, a line end or the end of the body (so `--boundaryX` is not one). The range
/// covers the dashes and the boundary.
fn next_delimiter(body: &[u8], mut from: usize, boundary: &[u8]) -> Option<Range<usize>> {
    loop {
        let at = from + memchr::memmem::find(body.get(from..)?, boundary)?;
        from = at + 1;
        let Some(dashes) = at.checked_sub(2) else {
            continue;
        };
        let line_start = dashes == 0 || body.get(dashes - 1) == Some(&b'\n');
        let end = at + boundary.len();
        let followed_well = matches!(body.get(end), None | Some(b' ' | b'\t' | b'\r' | b'\n'))
            || body.get(end..end + 2) == Some(&b"--"[..]);
        if line_start && followed_well && body.get(dashes..at) == Some(&b"--"[..]) {
            return Some(dashes..end);
        }
    }
}

/// A body part's `Content-Type` value (empty when it has none) and where its content starts,
/// after the first empty line. `None`: the part has no empty line, so no content.
fn part_headers(part: &[u8]) -> Option<(&[u8], usize)> {
    let mut content_type: &[u8] = &[];
    let mut read = 0;
    for line in Lines::new(part) {
        read += line.raw.len();
        if line.content.is_empty() {
            return Some((content_type, read));
        }
        if let Some(colon) = memchr::memchr(b':', line.content) {
            if trim(&line.content[..colon]).eq_ignore_ascii_case(b"content-type") {
                content_type = &line.content[colon + 1..];
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Lines and fields: the one parser inspect and rewrite share.

/// One line of the body: `raw` with its line end, `content` without (CRLF, LF, or a lone CR at
/// the very end).
struct Line<'a> {
    /// 1-based, for [`SdpError::Malformed`].
    number: usize,
    raw: &'a [u8],
    content: &'a [u8],
}

impl<'a> Line<'a> {
    fn terminator(&self) -> &'a [u8] {
        &self.raw[self.content.len()..]
    }
}

struct Lines<'a> {
    rest: &'a [u8],
    number: usize,
}

impl<'a> Lines<'a> {
    fn new(body: &'a [u8]) -> Self {
        Lines {
            rest: body,
            number: 0,
        }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = Line<'a>;

    fn next(&mut self) -> Option<Line<'a>> {
        if self.rest.is_empty() {
            return None;
        }
        let len = memchr::memchr(b'\n', self.rest).map_or(self.rest.len(), |lf| lf + 1);
        let (raw, rest) = self.rest.split_at(len);
        self.rest = rest;
        self.number += 1;
        let content = raw.strip_suffix(b"\n").unwrap_or(raw);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        Some(Line {
            number: self.number,
            raw,
            content,
        })
    }
}

/// The first line must be `v=0` (white space around the 0 tolerated).
fn check_version(body: &[u8]) -> Result<(), SdpError> {
    match Lines::new(body).next() {
        Some(first) if first.content.strip_prefix(b"v=").map(trim) == Some(b"0") => Ok(()),
        _ => Err(SdpError::NotSdp),
    }
}

/// What one line is, as far as inspect and rewrite care.
enum Field<'a> {
    Connection(Address),
    Media(Media<'a>),
    Rtcp(Rtcp),
    Ice,
    /// Any other `a=` line: the name, and the value after the `:` if there is one.
    Attribute {
        name: &'a [u8],
        value: Option<&'a [u8]>,
    },
    /// Any other line (and empty lines), copied as is.
    Other,
}

/// `<nettype> <addrtype> <connection-address>` as in `c=` and `a=rtcp`; ranges into the line.
#[derive(Clone, Copy)]
struct Address {
    addrtype: (usize, usize),
    /// The address without its `/ttl` or `/count` suffix.
    address: (usize, usize),
    /// The whole token's end: the suffix is `address.1..token_end`.
    token_end: usize,
    /// `None`: not an IP literal (an FQDN).
    ip: Option<IpAddr>,
}

struct Media<'a> {
    kind: MediaKind,
    port: u16,
    port_span: Range<usize>,
    transport: MediaTransport,
    /// What follows the proto token: the format list.
    formats: &'a [u8],
}

struct Rtcp {
    port: u16,
    port_span: Range<usize>,
    address: Option<Address>,
}

/// ICE (RFC 8839, RFC 8445) attributes: meaningless once the relay's address replaces the
/// peer's, and a peer that saw them would try connectivity checks the relay cannot answer.
const ICE_ATTRIBUTES: [&[u8]; 9] = [
    b"candidate",
    b"ice-ufrag",
    b"ice-pwd",
    b"ice-options",
    b"ice-lite",
    b"ice-pacing",
    b"remote-candidates",
    b"end-of-candidates",
    b"ice-mismatch",
];

fn classify<'a>(line: &Line<'a>) -> Result<Field<'a>, SdpError> {
    let content = line.content;
    let malformed = SdpError::Malformed(line.number);
    if content.is_empty() {
        return Ok(Field::Other);
    }
    match content {
        [b'c', b'=', ..] => parse_connection(content, 2, content.len())
            .map(Field::Connection)
            .ok_or(malformed),
        [b'm', b'=', ..] => parse_media(content).map(Field::Media).ok_or(malformed),
        [b'a', b'=', attribute @ ..] => {
            let (name, value) = match memchr::memchr(b':', attribute) {
                Some(colon) => (&attribute[..colon], Some(&attribute[colon + 1..])),
                None => (attribute, None),
            };
            if name.eq_ignore_ascii_case(b"rtcp") {
                return parse_rtcp(content, 2 + name.len() + 1, value.is_some())
                    .map(Field::Rtcp)
                    .ok_or(malformed);
            }
            if ICE_ATTRIBUTES
                .iter()
                .any(|ice| name.eq_ignore_ascii_case(ice))
            {
                return Ok(Field::Ice);
            }
            Ok(Field::Attribute { name, value })
        }
        [b'a'..=b'z', b'=', ..] => Ok(Field::Other),
        _ => Err(malformed),
    }
}

/// Space-separated tokens of `line[from..]`, as ranges into `line`.
struct Tokens<'a> {
    line: &'a [u8],
    at: usize,
}

fn tokens(line: &[u8], from: usize) -> Tokens<'_> {
    Tokens { line, at: from }
}

impl Iterator for Tokens<'_> {
    type Item = Range<usize>;

    fn next(&mut self) -> Option<Range<usize>> {
        let rest = self.line.get(self.at..)?;
        let start = self.at + rest.iter().position(|b| !is_space(*b))?;
        let len = self.line[start..]
            .iter()
            .position(|b| is_space(*b))
            .unwrap_or(self.line.len() - start);
        self.at = start + len;
        Some(start..start + len)
    }
}

fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `IN IP4|IP6 <address>[/<digits>[/<digits>]]` in `line[from..to]`, and nothing else.
fn parse_connection(line: &[u8], from: usize, to: usize) -> Option<Address> {
    let scope = line.get(..to)?;
    let mut parts = tokens(scope, from);
    let (nettype, addrtype, token) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !line[nettype].eq_ignore_ascii_case(b"IN") {
        return None;
    }
    let kind = &line[addrtype.clone()];
    if !kind.eq_ignore_ascii_case(b"IP4") && !kind.eq_ignore_ascii_case(b"IP6") {
        return None;
    }
    let text = &line[token.clone()];
    let address_len = memchr::memchr(b'/', text).unwrap_or(text.len());
    let (address, suffix) = text.split_at(address_len);
    let suffix_ok = suffix.is_empty()
        || suffix[1..]
            .split(|b| *b == b'/')
            .enumerate()
            .all(|(i, n)| i < 2 && !n.is_empty() && n.iter().all(u8::is_ascii_digit));
    if address.is_empty() || !suffix_ok || !address.iter().all(u8::is_ascii_graphic) {
        return None;
    }
    let ip = std::str::from_utf8(address)
        .ok()
        .and_then(|a| a.parse::<IpAddr>().ok());
    Some(Address {
        addrtype: (addrtype.start, addrtype.end),
        address: (token.start, token.start + address_len),
        token_end: token.end,
        ip,
    })
}

/// `m=<media> <port>[/<count>] <proto> <fmt>...`.
fn parse_media(line: &[u8]) -> Option<Media<'_>> {
    let mut parts = tokens(line, 2);
    let (media, port, proto) = (parts.next()?, parts.next()?, parts.next()?);
    let port_text = &line[port.clone()];
    let port_len = memchr::memchr(b'/', port_text).unwrap_or(port_text.len());
    let (number, count) = port_text.split_at(port_len);
    // The optional `/<number of ports>` (RFC 8866 §5.14).
    let count_ok = match count.strip_prefix(b"/") {
        Some(digits) => !digits.is_empty() && digits.iter().all(u8::is_ascii_digit),
        None => count.is_empty(),
    };
    if !count_ok {
        return None;
    }
    let kind = &line[media];
    let kind = if kind.eq_ignore_ascii_case(b"audio") {
        MediaKind::Audio
    } else if kind.eq_ignore_ascii_case(b"video") {
        MediaKind::Video
    } else if kind.eq_ignore_ascii_case(b"image") {
        MediaKind::Image
    } else {
        MediaKind::Other
    };
    Some(Media {
        kind,
        port: parse_port(number)?,
        port_span: port.start..port.start + port_len,
        transport: transport(&line[proto.clone()]),
        formats: &line[proto.end..],
    })
}

fn transport(proto: &[u8]) -> MediaTransport {
    let is = |names: &[&[u8]]| names.iter().any(|n| proto.eq_ignore_ascii_case(n));
    if is(&[b"RTP/AVP", b"RTP/AVPF"]) {
        MediaTransport::Rtp
    } else if is(&[
        b"RTP/SAVP",
        b"RTP/SAVPF",
        b"UDP/TLS/RTP/SAVP",
        b"UDP/TLS/RTP/SAVPF",
        b"TCP/TLS/RTP/SAVP",
        b"TCP/TLS/RTP/SAVPF",
    ]) {
        MediaTransport::Srtp
    } else if is(&[b"udptl"]) {
        MediaTransport::Udptl
    } else {
        MediaTransport::Other
    }
}

/// `a=rtcp:<port> [IN IP4|IP6 <address>]` (RFC 3605); `value_start` is where the port starts.
fn parse_rtcp(line: &[u8], value_start: usize, has_value: bool) -> Option<Rtcp> {
    if !has_value {
        return None;
    }
    let port = tokens(line, value_start).next()?;
    let address = match tokens(line, port.end).next() {
        Some(_) => Some(parse_connection(line, port.end, line.len())?),
        None => None,
    };
    Some(Rtcp {
        port: parse_port(&line[port.clone()])?,
        port_span: port,
        address,
    })
}

/// 1 to 5 ASCII digits, at most 65535.
fn parse_port(digits: &[u8]) -> Option<u16> {
    if digits.is_empty() || digits.len() > 5 {
        return None;
    }
    parse_u32(digits).and_then(|n| u16::try_from(n).ok())
}

/// ASCII digits only, no overflow.
fn parse_u32(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u32, |n, d| {
        let digit = d.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(u32::from(digit))
    })
}

/// How [`write_with_address`] treats `0.0.0.0` and `::`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unspecified {
    /// In `c=` it means hold (RFC 2543, RFC 3264 §8.4): the peer is to send nothing.
    IsHold,
    /// In `a=rtcp` it has no such meaning: the section's RTP now goes to the relay, so its
    /// RTCP does too.
    IsAnAddress,
}

/// Writes `line[from..]` with `address`'s address replaced by `to` (and its addrtype by
/// `IP4`/`IP6` to match), unless it is `to` already or (in `c=`) a hold address.
fn write_with_address(
    line: &[u8],
    from: usize,
    address: &Address,
    to: IpAddr,
    unspecified: Unspecified,
    out: &mut Vec<u8>,
) {
    let hold = |ip: IpAddr| unspecified == Unspecified::IsHold && ip.is_unspecified();
    let keep = address.ip.is_some_and(|ip| ip == to || hold(ip));
    if keep {
        out.extend_from_slice(&line[from..]);
        return;
    }
    out.extend_from_slice(&line[from..address.addrtype.0]);
    out.extend_from_slice(if to.is_ipv4() { b"IP4" } else { b"IP6" });
    out.extend_from_slice(&line[address.addrtype.1..address.address.0]);
    // Writing into a Vec cannot fail; Display of an address does not allocate.
    let _ = write!(out, "{to}");
    if to.is_multicast() {
        out.extend_from_slice(&line[address.address.1..address.token_end]);
    }
    out.extend_from_slice(&line[address.token_end..]);
}

fn write_decimal(out: &mut Vec<u8>, n: u16) {
    let mut digits = [0u8; 5];
    let mut start = digits.len();
    let mut rest = n;
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

fn trim_start(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !is_space(*b)).unwrap_or(s.len());
    &s[start..]
}

fn trim(s: &[u8]) -> &[u8] {
    let s = trim_start(s);
    let end = s
        .iter()
        .rposition(|b| !is_space(*b))
        .map_or(0, |last| last + 1);
    &s[..end]
}

// ---------------------------------------------------------------------------------------------
// The summary, section by section.

/// What session and media level both may say.
#[derive(Default)]
struct Level {
    /// The first `c=`: `Some(None)` when it is not an IP literal.
    connection: Option<Option<IpAddr>>,
    direction: Option<Direction>,
    ptime_ms: Option<u32>,
    silence_suppression: Option<bool>,
}

impl Level {
    fn attribute(&mut self, name: &[u8], value: Option<&[u8]>) {
        let direction = match name {
            n if n.eq_ignore_ascii_case(b"sendrecv") => Some(Direction::SendRecv),
            n if n.eq_ignore_ascii_case(b"sendonly") => Some(Direction::SendOnly),
            n if n.eq_ignore_ascii_case(b"recvonly") => Some(Direction::RecvOnly),
            n if n.eq_ignore_ascii_case(b"inactive") => Some(Direction::Inactive),
            _ => None,
        };
        if let Some(direction) = direction {
            self.direction.get_or_insert(direction);
        } else if name.eq_ignore_ascii_case(b"ptime") {
            if let Some(ptime) = value.and_then(parse_ptime) {
                self.ptime_ms.get_or_insert(ptime);
            }
        } else if name.eq_ignore_ascii_case(b"silenceSupp") {
            // RFC 3108: a=silenceSupp:<on|off> <timer> <pref> <sidUse> <fxnslevel>
            let on = value.and_then(|v| tokens(v, 0).next().map(|t| &v[t]));
            self.silence_suppression
                .get_or_insert(on.is_some_and(|t| t.eq_ignore_ascii_case(b"on")));
        }
    }
}

/// `a=ptime:20` or `a=ptime:20.5`: whole milliseconds, rounded down.
fn parse_ptime(value: &[u8]) -> Option<u32> {
    let value = trim(value);
    let whole = value
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(value.len());
    parse_u32(&value[..whole])
}

/// One `m=` section while its lines are read.
struct Section {
    line: MediaLine,
    level: Level,
    rtcp: Option<(u16, Option<IpAddr>)>,
    /// Every rtpmap, in the order written.
    rtpmaps: SmallVec<[Codec; 4]>,
}

/// RFC 3551's static audio payload types pointsman names without an rtpmap.
const STATIC_PAYLOAD_TYPES: [(u8, &[u8], u32); 7] = [
    (0, b"pcmu", 8000),
    (3, b"gsm", 8000),
    (4, b"g723", 8000),
    (8, b"pcma", 8000),
    (9, b"g722", 8000),
    (13, b"cn", 8000),
    (18, b"g729", 8000),
];

impl Section {
    fn new(media: &Media<'_>) -> Self {
        let formats = tokens(media.formats, 0)
            .filter_map(|t| parse_u32(&media.formats[t]))
            .filter_map(|pt| u8::try_from(pt).ok())
            .collect();
        Section {
            line: MediaLine {
                kind: media.kind,
                port: media.port,
                transport: media.transport,
                connection: None,
                rtcp: None,
                rtcp_mux: false,
                formats,
                codecs: SmallVec::new(),
                ptime_ms: None,
                direction: Direction::SendRecv,
                comfort_noise: false,
            },
            level: Level::default(),
            rtcp: None,
            rtpmaps: SmallVec::new(),
        }
    }

    /// The media-only attributes ([`Level::attribute`] takes the rest).
    fn attribute(&mut self, name: &[u8], value: Option<&[u8]>) {
        if name.eq_ignore_ascii_case(b"rtcp-mux") {
            self.line.rtcp_mux = true;
        } else if name.eq_ignore_ascii_case(b"rtpmap") {
            if let Some(codec) = value.and_then(parse_rtpmap) {
                self.rtpmaps.push(codec);
            }
        }
    }

    fn finish(self, session: &Level) -> MediaLine {
        let Section {
            mut line,
            level,
            rtcp,
            rtpmaps,
        } = self;
        line.connection = level.connection.or(session.connection).flatten();
        line.rtcp = rtcp;
        line.direction = level.direction.or(session.direction).unwrap_or_default();
        line.ptime_ms = level.ptime_ms.or(session.ptime_ms);
        let rtp = matches!(line.transport, MediaTransport::Rtp | MediaTransport::Srtp);
        for &pt in &line.formats {
            if line.codecs.iter().any(|c| c.pt == pt) {
                continue; // a payload type the m= line names twice
            }
            if let Some(codec) = rtpmaps.iter().find(|c| c.pt == pt) {
                line.codecs.push(codec.clone());
            } else if let Some((_, name, clock)) = STATIC_PAYLOAD_TYPES
                .iter()
                .find(|(static_pt, ..)| rtp && *static_pt == pt)
            {
                line.codecs.push(Codec {
                    pt,
                    name: SmallVec::from_slice(name),
                    clock: *clock,
                });
            }
        }
        for codec in rtpmaps {
            if !line.formats.contains(&codec.pt) {
                line.codecs.push(codec);
            }
        }
        let cn_offered = line
            .codecs
            .iter()
            .any(|c| c.name.as_slice() == b"cn" && line.formats.contains(&c.pt));
        let suppression = level.silence_suppression.or(session.silence_suppression);
        line.comfort_noise = cn_offered || suppression == Some(true);
        line
    }
}

/// `a=rtpmap:<pt> <name>/<clock>[/<channels>]`.
fn parse_rtpmap(value: &[u8]) -> Option<Codec> {
    let mut parts = tokens(value, 0);
    let (pt, encoding) = (parts.next()?, parts.next()?);
    let pt = u8::try_from(parse_u32(&value[pt])?).ok()?;
    let mut encoding = value[encoding].split(|b| *b == b'/');
    let name = encoding.next().filter(|n| !n.is_empty())?;
    let clock = parse_u32(encoding.next()?)?;
    let mut name = SmallVec::from_slice(name);
    name.make_ascii_lowercase();
    Some(Codec { pt, name, clock })
}

#[cfg(test)]
#[path = "sdp_tests.rs"]
mod tests;

/// Checks shared by the `sdp` fuzz target (`fuzz/fuzz_targets/sdp.rs`) and this module's
/// proptests, so both exercise the same properties. Hidden from the docs: not an API for the
/// relay. Each function panics when a property is violated, and only then.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing {
    // Test support: a failed assumption here is a failed test or a fuzzer finding.
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// How much longer a rewritten line may get: an address of 1 character becoming one of 45
    /// (`ffff:...:255.255.255.255`), plus a port of 1 digit becoming 5 (in `a=rtcp`).
    pub const MAX_GROWTH_PER_LINE: usize = 48;

    /// Splits a fuzz input into the rewrite it asks for and the body. Byte 0: bit 0 picks an
    /// IPv6 relay address, bits 1-3 the number of port entries (0-7), bit 4 a multicast
    /// relay; byte 1: the address's last byte; then 2 bytes per port entry, big-endian, 0 for
    /// `None`. The rest is the body.
    pub fn split_input(data: &[u8]) -> (IpAddr, SmallVec<[Option<u16>; 7]>, &[u8]) {
        let (header, mut rest) = data.split_at(data.len().min(2));
        let flags = header.first().copied().unwrap_or(0);
        let last = header.get(1).copied().unwrap_or(1);
        let multicast = flags & 0x10 != 0;
        let address = match (flags & 1 != 0, multicast) {
            (false, false) => IpAddr::from([203, 0, 113, last]),
            (false, true) => IpAddr::from([233, 252, 0, last]),
            (true, false) => IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(last)]),
            (true, true) => IpAddr::from([0xff0e, 0, 0, 0, 0, 0, 0, u16::from(last)]),
        };
        let mut ports = SmallVec::new();
        for _ in 0..(flags >> 1) & 7 {
            let Some((pair, tail)) = rest.split_first_chunk::<2>() else {
                break;
            };
            ports.push(Some(u16::from_be_bytes(*pair)).filter(|p| *p != 0));
            rest = tail;
        }
        (address, ports, rest)
    }

    /// Everything on one fuzz input ([`split_input`]): [`check_rewrite`] on the body, and
    /// [`find_sdp`] with `application/sdp`, a multipart type and the body's first line as the
    /// Content-Type (the rest as the body) returns a range inside the body.
    pub fn check(data: &[u8]) {
        let (address, ports, body) = split_input(data);
        check_rewrite(
            body,
            &Rewrite {
                address,
                ports: &ports,
            },
        );
        let first_line = body
            .len()
            .min(memchr::memchr(b'\n', body).map_or(0, |lf| lf + 1));
        let (content_type, rest) = body.split_at(first_line);
        for (content_type, body) in [
            (&b"application/sdp"[..], body),
            (b"multipart/mixed;boundary=b", body),
            (content_type, rest),
        ] {
            if let Some(range) = find_sdp(content_type, body) {
                assert!(range.start <= range.end && range.end <= body.len());
            }
        }
    }

    /// [`inspect`] and [`rewrite`] accept the same bodies; on an error `out` keeps what it had;
    /// otherwise the output is at most [`MAX_GROWTH_PER_LINE`] longer per line, has the input's
    /// lines in order (ICE lines removed, an `a=rtcp` left out only for an RTP port of 65535),
    /// every line the rewrite does not own byte for byte and every line end as it was, and
    /// inspects again to the same summary with the new ports, the relay (or hold) address and
    /// the new RTCP ports.
    pub fn check_rewrite(body: &[u8], rw: &Rewrite<'_>) {
        let summary = inspect(body);
        let mut out = b"kept".to_vec();
        let result = rewrite(body, rw, &mut out);
        assert_eq!(
            summary.is_ok(),
            result.is_ok(),
            "inspect and rewrite disagree"
        );
        if let Err(e) = result {
            assert_eq!(summary, Err(e));
            assert_eq!(out, b"kept", "a failed rewrite left output behind");
            return;
        }
        let out = &out[4..];
        let lines = body.split(|b| *b == b'\n').count();
        assert!(out.len() <= body.len() + MAX_GROWTH_PER_LINE * lines);
        check_lines_kept(body, out, rw);

        let before = summary.unwrap();
        let after = inspect(out).expect("the rewritten body inspects");
        let relay_or_hold =
            |a: Option<IpAddr>| a.is_none_or(|a| a == rw.address || a.is_unspecified());
        assert!(relay_or_hold(after.connection));
        assert_eq!(before.media.len(), after.media.len());
        for (index, (before, after)) in before.media.iter().zip(&after.media).enumerate() {
            let relay_port = rw
                .ports
                .get(index)
                .copied()
                .flatten()
                .filter(|_| before.port != 0);
            assert_eq!(after.port, relay_port.unwrap_or(before.port));
            assert!(relay_or_hold(after.connection));
            match relay_port {
                Some(port) if port < u16::MAX && before.rtcp.is_some() => {
                    let (rtcp_port, rtcp_address) = after.rtcp.unwrap();
                    assert_eq!(rtcp_port, port + 1);
                    if before.rtcp.is_some_and(|r| r.1.is_some()) {
                        assert_eq!(rtcp_address, Some(rw.address));
                    }
                }
                Some(_) => {}
                None => assert_eq!(after.rtcp, before.rtcp),
            }
            let mut expected = before.clone();
            expected.port = after.port;
            expected.connection = after.connection;
            expected.rtcp = after.rtcp;
            assert_eq!(after, &expected);
        }
    }

    /// Line by line, independently of the module's parser.
    fn check_lines_kept(body: &[u8], out: &[u8], rw: &Rewrite<'_>) {
        let mut out_lines = out.split_inclusive(|b| *b == b'\n').peekable();
        let attribute_name = |content: &[u8]| -> Option<Vec<u8>> {
            let attribute = content.strip_prefix(b"a=")?;
            let end = memchr::memchr(b':', attribute).unwrap_or(attribute.len());
            Some(attribute[..end].to_ascii_lowercase())
        };
        let rtcp_may_go = rw.ports.contains(&Some(u16::MAX));
        for raw in body.split_inclusive(|b| *b == b'\n') {
            let content = raw.strip_suffix(b"\n").unwrap_or(raw);
            let content = content.strip_suffix(b"\r").unwrap_or(content);
            let name = attribute_name(content);
            if name
                .as_ref()
                .is_some_and(|n| ICE_ATTRIBUTES.contains(&n.as_slice()))
            {
                continue;
            }
            let rtcp = name.as_deref() == Some(b"rtcp");
            let next_is_rtcp = out_lines
                .peek()
                .is_some_and(|l| attribute_name(l.trim_ascii_end()).as_deref() == Some(b"rtcp"));
            if rtcp && rtcp_may_go && !next_is_rtcp {
                continue;
            }
            let written = out_lines.next().expect("a kept line is missing");
            if rtcp || content.starts_with(b"c=") || content.starts_with(b"m=") {
                assert_eq!(written[..2], raw[..2]);
                assert!(
                    written.ends_with(&raw[content.len()..]),
                    "a line end changed"
                );
            } else {
                assert_eq!(written, raw, "a line the rewrite does not own changed");
            }
        }
        assert_eq!(
            out_lines.next(),
            None,
            "the output has lines the input has not"
        );
    }
}
