//! SIP messages the simulated peers write: a carrier's INVITE with an SDP offer, CANCEL,
//! responses with Record-Route and Contact, and in-dialog requests from either side of a dialog
//! (RFC 3261 §12: route set, remote target, tags, CSeq).

use bytes::Bytes;
use pointsman_protocol::originate;
use pointsman_protocol::wire::{self, Framing, HeaderName, Limits, Message};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// The SIP transport token a peer writes into Via and Contact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimTransport {
    Udp,
    Tcp,
    Tls,
}

impl SimTransport {
    fn via(self) -> &'static str {
        match self {
            SimTransport::Udp => "UDP",
            SimTransport::Tcp => "TCP",
            SimTransport::Tls => "TLS",
        }
    }
    fn uri_param(self) -> &'static str {
        match self {
            SimTransport::Udp => "",
            SimTransport::Tcp => ";transport=tcp",
            SimTransport::Tls => ";transport=tls",
        }
    }
}

static BRANCH_SEQ: AtomicU64 = AtomicU64::new(1);

/// A fresh RFC 3261 branch for a request a peer sends.
pub fn new_branch() -> String {
    format!("z9hG4bK-sim-{}", BRANCH_SEQ.fetch_add(1, Ordering::Relaxed))
}

/// Scans a message a peer received (generous limits: peers are not the thing under test).
pub fn scan(bytes: &[u8]) -> Option<Message<'_>> {
    originate::rescan(bytes)
        .or_else(|| wire::scan(bytes, Framing::Datagram, &Limits::default()).ok())
}

/// The SDP offer of a carrier's INVITE (early offer, G.711).
pub fn sdp_offer(ip: &str, port: u16) -> String {
    format!(
        "v=0\r\no=carrier 2890844526 2890844526 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\n\
         t=0 0\r\nm=audio {port} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
    )
}

/// A cloud's SDP answer (RFC 3264): PCMA and telephone-event, media at `media`.
pub fn sdp_answer(media: SocketAddr) -> String {
    let ip = media.ip();
    let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
    format!(
        "v=0\r\no=cloud 1 1 IN {family} {ip}\r\ns=-\r\nc=IN {family} {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n",
        port = media.port()
    )
}

/// The body of a SIP message (after the blank line), empty if it has none.
pub fn body(message: &[u8]) -> &[u8] {
    message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(&[][..], |at| &message[at + 4..])
}

/// Where the SDP in `body` wants its RTP: the `c=` address (the first m-line's own, else the
/// session's) and the first `m=` line's port. `None` without both, or for port 0.
pub fn sdp_media_addr(body: &[u8]) -> Option<SocketAddr> {
    let text = std::str::from_utf8(body).ok()?;
    let mut session_ip = None;
    let mut media: Option<(u16, Option<std::net::IpAddr>)> = None;
    for line in text.lines().map(str::trim_end) {
        if let Some(c) = line.strip_prefix("c=") {
            // c=IN IP4 192.0.2.1[/ttl]
            let ip = c
                .split_whitespace()
                .nth(2)
                .and_then(|a| a.split('/').next()?.parse().ok());
            match media.as_mut() {
                Some(m) => m.1 = m.1.or(ip),
                None => session_ip = ip,
            }
        } else if let Some(m) = line.strip_prefix("m=") {
            if media.is_some() {
                break; // only the first m-line
            }
            let port = m
                .split_whitespace()
                .nth(1)?
                .split('/')
                .next()?
                .parse()
                .ok()?;
            media = Some((port, None));
        }
    }
    let (port, media_ip) = media?;
    let ip = media_ip.or(session_ip)?;
    (port != 0).then_some(SocketAddr::new(ip, port))
}

/// Where RTCP for the first m-line of `body` goes: `a=rtcp:` (RFC 3605), the RTP port with
/// `a=rtcp-mux`, else the RTP port + 1 (RFC 3550 §11).
pub fn sdp_rtcp_addr(body: &[u8]) -> Option<SocketAddr> {
    let rtp = sdp_media_addr(body)?;
    let text = std::str::from_utf8(body).ok()?;
    let mut mux = false;
    for line in text.lines().map(str::trim_end) {
        if let Some(a) = line.strip_prefix("a=rtcp:") {
            let port = a.split_whitespace().next()?.parse().ok()?;
            let ip = a
                .split_whitespace()
                .nth(3)
                .and_then(|ip| ip.parse().ok())
                .unwrap_or(rtp.ip());
            return Some(SocketAddr::new(ip, port));
        }
        mux |= line == "a=rtcp-mux";
    }
    let port = if mux {
        rtp.port()
    } else {
        rtp.port().checked_add(1)?
    };
    Some(SocketAddr::new(rtp.ip(), port))
}

/// What a carrier's INVITE says.
#[derive(Clone, Debug)]
pub struct InviteSpec {
    pub call_id: String,
    /// Dialled number (Request-URI and To user).
    pub to_user: String,
    /// Caller number (From user).
    pub from_user: String,
    /// Where the carrier sends it (pointsman).
    pub proxy: SocketAddr,
    /// The carrier's own address (Via, Contact).
    pub local: SocketAddr,
    pub transport: SimTransport,
    pub max_forwards: u32,
    /// Where the carrier takes its media: the SDP offer's `c=` and `m=` port (default: none,
    /// the offer names the carrier's own IP and port 40000, where nothing listens).
    pub media: Option<SocketAddr>,
}

impl InviteSpec {
    pub fn new(call_id: &str, proxy: SocketAddr, local: SocketAddr) -> InviteSpec {
        InviteSpec {
            call_id: call_id.to_string(),
            to_user: "+15551230000".into(),
            from_user: "+15559870000".into(),
            proxy,
            local,
            transport: SimTransport::Udp,
            max_forwards: 70,
            media: None,
        }
    }

    pub fn from_tag(&self) -> String {
        format!("c-{}", self.call_id)
    }

    pub fn build(&self, branch: &str) -> Bytes {
        let body = match self.media {
            Some(media) => sdp_offer(&media.ip().to_string(), media.port()),
            None => sdp_offer(&self.local.ip().to_string(), 40000),
        };
        Bytes::from(format!(
            "INVITE sip:{to}@{proxy} SIP/2.0\r\n\
             Via: SIP/2.0/{t} {local};branch={branch};rport\r\n\
             Max-Forwards: {mf}\r\n\
             From: \"Carrier\" <sip:{from}@{local}>;tag={tag}\r\n\
             To: <sip:{to}@{proxy}>\r\n\
             Call-ID: {cid}\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:{from}@{local}{tp}>\r\n\
             User-Agent: pointsman-sim carrier\r\n\
             Content-Type: application/sdp\r\n\
             Content-Length: {len}\r\n\r\n{body}",
            to = self.to_user,
            proxy = self.proxy,
            t = self.transport.via(),
            local = self.local,
            mf = self.max_forwards,
            from = self.from_user,
            tag = self.from_tag(),
            cid = self.call_id,
            tp = self.transport.uri_param(),
            len = body.len(),
        ))
    }
}

/// CANCEL for an INVITE the peer sent (§9.1): same Request-URI, Via, From, To, Call-ID, CSeq number.
pub fn cancel_for(invite: &[u8]) -> Option<Bytes> {
    let msg = scan(invite)?;
    Some(originate::cancel(&msg, ""))
}

/// A response to `request` from a UAS: Via, From, To (+ `to_tag`), Call-ID, CSeq copied; for
/// 1xx above 100 and 2xx to a dialog-creating request also Record-Route and a Contact.
pub fn response(request: &[u8], code: u16, to_tag: &str, contact: &str) -> Option<Bytes> {
    response_with(request, code, to_tag, contact, "")
}

/// [`response`] with `more` header lines (each ending in CRLF).
pub fn response_with(
    request: &[u8],
    code: u16,
    to_tag: &str,
    contact: &str,
    more: &str,
) -> Option<Bytes> {
    let req = scan(request)?;
    let mut extra = more.to_string();
    let dialog_forming = code > 100 && code < 300 && req.method() == Some(wire::Method::Invite);
    if dialog_forming {
        for h in req
            .headers
            .iter()
            .filter(|h| h.name == HeaderName::RecordRoute)
        {
            extra.push_str(&String::from_utf8_lossy(req.slice(h.line)));
        }
        extra.push_str(&format!("Contact: <{contact}>\r\n"));
    }
    let reason = match code {
        180 => "Ringing",
        183 => "Session Progress",
        486 => "Busy Here",
        603 => "Decline",
        _ => originate::reason_phrase(code),
    };
    Some(originate::response(&req, code, reason, to_tag, &extra))
}

/// [`response_with`] carrying `sdp` as its body.
pub fn response_with_sdp(
    request: &[u8],
    code: u16,
    to_tag: &str,
    contact: &str,
    more: &str,
    sdp: &str,
) -> Option<Bytes> {
    let bare = response_with(request, code, to_tag, contact, more)?;
    // The response ends in an empty body: swap that ending for the SDP.
    let head = bare.strip_suffix(b"Content-Length: 0\r\n\r\n")?;
    let mut out = Vec::with_capacity(head.len() + sdp.len() + 64);
    out.extend_from_slice(head);
    out.extend_from_slice(
        format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        )
        .as_bytes(),
    );
    Some(Bytes::from(out))
}

/// One side's view of a dialog, enough to send requests in it (RFC 3261 §12.2.1.1).
#[derive(Clone, Debug)]
pub struct Dialog {
    pub call_id: String,
    /// Our From value (with our tag).
    pub local: String,
    /// Our To value (with the remote tag).
    pub remote: String,
    /// Route set, in the order the Route headers are written.
    pub route_set: Vec<String>,
    pub remote_target: String,
    pub local_cseq: u32,
    /// Our address and transport (Via, Contact).
    pub contact: SocketAddr,
    pub transport: SimTransport,
}

fn text(msg: &Message<'_>, span: wire::Span) -> String {
    String::from_utf8_lossy(msg.slice(span)).into_owned()
}

fn record_route_values(msg: &Message<'_>) -> Vec<String> {
    msg.routes(HeaderName::RecordRoute)
        .filter_map(Result::ok)
        .map(|r| text(msg, r.value))
        .collect()
}

impl Dialog {
    /// The caller's dialog from the 2xx it received (route set = Record-Route reversed).
    pub fn uac(ok: &[u8], contact: SocketAddr, transport: SimTransport) -> Option<Dialog> {
        let msg = scan(ok)?;
        let mut route_set = record_route_values(&msg);
        route_set.reverse();
        Some(Dialog {
            call_id: text(&msg, msg.call_id),
            local: text(&msg, msg.from.value),
            remote: text(&msg, msg.to.value),
            route_set,
            remote_target: String::from_utf8_lossy(originate::contact_uri(&msg)?).into_owned(),
            local_cseq: msg.cseq,
            contact,
            transport,
        })
    }

    /// The callee's dialog from the INVITE it answered with `local_tag`.
    pub fn uas(
        invite: &[u8],
        local_tag: &str,
        contact: SocketAddr,
        transport: SimTransport,
    ) -> Option<Dialog> {
        let msg = scan(invite)?;
        Some(Dialog {
            call_id: text(&msg, msg.call_id),
            local: format!("{};tag={local_tag}", text(&msg, msg.to.value)),
            remote: text(&msg, msg.from.value),
            route_set: record_route_values(&msg),
            remote_target: String::from_utf8_lossy(originate::contact_uri(&msg)?).into_owned(),
            local_cseq: 0,
            contact,
            transport,
        })
    }

    /// Where a request in this dialog is sent: the first Route (loose routing), else the target.
    pub fn next_hop(&self) -> Option<SocketAddr> {
        let uri = self
            .route_set
            .first()
            .map(|r| uri_of(r))
            .unwrap_or(&self.remote_target);
        uri_addr(uri)
    }

    /// The ACK for the 2xx to the INVITE (or re-INVITE) with CSeq number `cseq`.
    pub fn ack(&self, cseq: u32) -> Bytes {
        self.build("ACK", cseq)
    }

    /// A new request in the dialog (BYE, INFO, ...), with the next CSeq.
    pub fn request(&mut self, method: &str) -> Bytes {
        self.local_cseq += 1;
        self.build(method, self.local_cseq)
    }

    fn build(&self, method: &str, cseq: u32) -> Bytes {
        let mut routes = String::new();
        for r in &self.route_set {
            routes.push_str(&format!("Route: {r}\r\n"));
        }
        Bytes::from(format!(
            "{method} {target} SIP/2.0\r\n\
             Via: SIP/2.0/{t} {contact};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: {local}\r\n\
             To: {remote}\r\n\
             Call-ID: {cid}\r\n\
             CSeq: {cseq} {method}\r\n\
             {routes}\
             Contact: <sip:sim@{contact}{tp}>\r\n\
             Content-Length: 0\r\n\r\n",
            target = self.remote_target,
            t = self.transport.via(),
            contact = self.contact,
            branch = new_branch(),
            local = self.local,
            remote = self.remote,
            cid = self.call_id,
            tp = self.transport.uri_param(),
        ))
    }
}

/// The URI inside `<...>`, or the value itself.
fn uri_of(value: &str) -> &str {
    match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => &value[a + 1..b],
        _ => value,
    }
}

/// The IP address and port of a `sip:` URI with an IP literal host (default port 5060).
pub fn uri_addr(uri: &str) -> Option<SocketAddr> {
    let buf = uri.as_bytes();
    let parsed = wire::parse_uri(buf, wire::Span::new(0, buf.len())).ok()?;
    let host = std::str::from_utf8(parsed.host.get(buf)).ok()?;
    let ip: std::net::IpAddr = host.trim_matches(['[', ']']).parse().ok()?;
    Some(SocketAddr::new(ip, parsed.port.unwrap_or(5060)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdp_media_and_rtcp_addresses_are_read() {
        let offer = sdp_offer("192.0.2.7", 40002);
        let want: SocketAddr = "192.0.2.7:40002".parse().unwrap();
        assert_eq!(sdp_media_addr(offer.as_bytes()), Some(want));
        assert_eq!(
            sdp_rtcp_addr(offer.as_bytes()),
            Some("192.0.2.7:40003".parse().unwrap())
        );
        let media_level = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 5000 RTP/AVP 8\r\n\
                           c=IN IP4 10.0.0.2\r\na=rtcp:6000\r\nm=audio 7000 RTP/AVP 8\r\n";
        assert_eq!(
            sdp_media_addr(media_level.as_bytes()),
            Some("10.0.0.2:5000".parse().unwrap())
        );
        assert_eq!(
            sdp_rtcp_addr(media_level.as_bytes()),
            Some("10.0.0.2:6000".parse().unwrap())
        );
        assert_eq!(
            sdp_media_addr(b"v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 0 RTP/AVP 8\r\n"),
            None
        );
        let answer = sdp_answer("[::1]:9".parse().unwrap());
        assert_eq!(
            sdp_media_addr(answer.as_bytes()),
            Some("[::1]:9".parse().unwrap())
        );
    }

    #[test]
    fn a_response_carries_its_sdp() {
        let local: SocketAddr = "127.0.0.1:5099".parse().unwrap();
        let mut spec = InviteSpec::new("sdp-1", "127.0.0.1:5060".parse().unwrap(), local);
        spec.media = Some("127.0.0.1:41000".parse().unwrap());
        let invite = spec.build("z9hG4bK-1");
        assert_eq!(sdp_media_addr(body(&invite)), spec.media);
        let sdp = sdp_answer("127.0.0.1:42000".parse().unwrap());
        let resp = response_with_sdp(&invite, 183, "t1", "sip:a@127.0.0.1", "", &sdp).unwrap();
        let m = scan(&resp).unwrap();
        assert_eq!(m.code(), Some(183));
        assert_eq!(body(&resp), sdp.as_bytes());
        assert_eq!(
            sdp_media_addr(body(&resp)),
            Some("127.0.0.1:42000".parse().unwrap())
        );
    }
}
