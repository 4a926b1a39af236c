//! SDP (RFC 8866, RFC 3264) as pointsman anchors media: a byte-transparent line rewriter for the
//! forwarding path and a summary of what the relay needs to know (addresses, ports, codecs,
//! direction). It changes only `c=` addresses, non-zero `m=` ports, `a=rtcp` and removes ICE
//! lines; every other byte is copied as received.
//!
//! It must not: allocate per line on the rewrite path, reorder or normalise lines, or panic on
//! any input.

use smallvec::SmallVec;
use std::net::IpAddr;

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
    /// The `m=` format list, as payload types (non-numeric formats, e.g. `t38`, are skipped).
    pub formats: SmallVec<[u8; 8]>,
    /// `a=rtpmap` entries, plus the static payload types of RFC 3551 the `m=` line names
    /// without an rtpmap (0 PCMU, 8 PCMA, 9 G722, 18 G729, 13 CN, 3 GSM, 4 G723).
    pub codecs: SmallVec<[Codec; 4]>,
    /// `a=ptime`, rounded down to whole milliseconds.
    pub ptime_ms: Option<u32>,
    /// `a=sendrecv|sendonly|recvonly|inactive` (media level, else session level, else
    /// sendrecv).
    pub direction: Direction,
    /// Comfort noise may leave gaps in the stream: a CN codec is offered, or
    /// `a=silenceSupp:on`.
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
    /// `RTP/SAVP`, `RTP/SAVPF`, `UDP/TLS/RTP/SAVP(F)`: SRTP, passed through unchanged.
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
/// port. A line whose entry is `None`, or beyond the slice, keeps its port; a port 0 stays 0
/// whatever the entry says. The RTCP port written into `a=rtcp` is the RTP port + 1.
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
    #[error("malformed line {0}")]
    Malformed(usize),
    #[error("too many media lines")]
    TooManyMedia,
}

// Placeholder (the rewriter is written on its own branch).
pub fn inspect(body: &[u8]) -> Result<SdpSummary, SdpError> {
    let _ = body;
    Err(SdpError::NotSdp)
}
pub fn rewrite(body: &[u8], rw: &Rewrite<'_>, out: &mut Vec<u8>) -> Result<(), SdpError> {
    let _ = (body, rw, out);
    Err(SdpError::NotSdp)
}
pub fn find_sdp(content_type: &[u8], body: &[u8]) -> Option<std::ops::Range<usize>> {
    let _ = (content_type, body);
    None
}
