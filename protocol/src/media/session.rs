//! One call's media session: the carrier leg and the branch legs (the core's branch indices;
//! lower = more preferred), each with a port pair per anchored `m=` line, the remote addresses
//! from SDP and latched from packets; the selection of the branch the carrier hears, the
//! normalisation of the carrier-bound stream (SSRC, sequence, timestamp, marker, payload type),
//! the switch triggers (core-signalled failure, RTCP BYE, silence, answer) and post-answer
//! inactivity.
//!
//! It must not: allocate on the packet path, block beyond its own mutex, hold its mutex while
//! taking the plane's session map, or panic on any packet or SDP.

use smallvec::SmallVec;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::metrics::{Direction as Flow, DropReason};
use super::offload::{HandedCounters, HandedStream, RtpRewrite};
use super::rtp::{classify, walk_rtcp, PacketKind, RtpHeader, RTP_HEADER_LEN};
use super::sdp::{Codec, Direction, MediaLine, MediaTransport, SdpSummary};
use super::{
    lock, AnswerUse, Endpoints, Forwards, MediaError, MediaEvent, MediaSide, PlaneShared,
    SessionTimeouts, SocketId, SocketOwner, SwitchReason, SILENCE_FLOOR,
};

/// How long the first selection waits for a more preferred live branch that has not played
/// yet, when a less preferred one plays first.
const PREFERRED_GRACE: Duration = Duration::from_millis(60);

/// At most this many `m=` lines are anchored per call; later ones keep their ports.
const MAX_ANCHORED_LINES: usize = 4;
/// The selected branch must have sent this many RTP packets before its silence can switch.
const SILENCE_ARMED_AFTER: u64 = 3;
/// `a=ptime` when the SDP has none (RFC 3551 §4.5: 20 ms for the common audio codecs).
const DEFAULT_PTIME_MS: u32 = 20;
/// The RTP clock when no codec says (8 kHz, every G.711 call).
const DEFAULT_CLOCK: u32 = 8000;
/// How often the counters of handed-over streams are read (inactivity, metrics): each read is
/// a system call per stream, and inactivity timeouts are seconds (a shorter timeout reads
/// every quarter of it, so no stream looks silent that is not).
const HANDED_READ_EVERY: Duration = Duration::from_secs(1);
/// An SRTCP packet's clear part: the RTCP header and the sender's SSRC.
const SRTCP_MIN_LEN: usize = 8;

/// Which leg of a session a socket belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LegId {
    Carrier,
    /// The core's branch index.
    Branch(usize),
}

/// What the plane's socket table and the session handles share.
#[derive(Debug)]
pub(crate) struct SessionShared {
    id: u64,
    token: u64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    closed: bool,
    /// What the logs call this session (the core gives the Call-ID).
    label: Box<str>,
    /// The session's own SSRC on the carrier-bound stream.
    ssrc: u32,
    timeouts: SessionTimeouts,
    /// Per offer `m=` line: its transport in the offer.
    transports: SmallVec<[MediaTransport; 4]>,
    carrier: Leg,
    branches: SmallVec<[Branch; 4]>,
    selected: Option<usize>,
    /// A failure left nothing selected: the next selection is a switch for this reason.
    pending_reason: Option<SwitchReason>,
    /// A switch happened and its gap is not measured yet.
    gap_pending: bool,
    /// When the first RTP of any eligible branch arrived (the preferred branch's grace).
    first_media_at: Option<Instant>,
    /// The reference answer's codecs per `m=` line (the first answer the session saw).
    reference: Option<SmallVec<[SmallVec<[Codec; 4]>; 4]>>,
    /// The carrier-bound stream's state per `m=` line.
    out: SmallVec<[OutStream; 4]>,
    /// The answered branch and when.
    answered: Option<(usize, Instant)>,
    inactive_reported: bool,
    /// Streams handed to the plane's offload (answered calls only).
    handed: SmallVec<[Handed; 2]>,
    /// The offload refused a stream: not asked again until the streams change (a new SDP).
    handing_refused: bool,
    /// When their counters were last read.
    handed_read_at: Option<Instant>,
}

/// One stream handed over: the relay port it arrives at, who sends it, and how much of its
/// counters the metrics have taken.
#[derive(Debug)]
struct Handed {
    at: SocketAddr,
    sender: LegId,
    packets: u64,
    bytes: u64,
}

#[derive(Debug)]
struct Leg {
    signalling: IpAddr,
    lines: SmallVec<[LegLine; 4]>,
    /// The leg's SDP says it sends (not `recvonly`/`inactive`, not `c=0.0.0.0`) on some line.
    sends: bool,
    comfort_noise: bool,
    /// Any RTP or RTCP from the leg.
    last_packet: Option<Instant>,
}

#[derive(Debug, Default)]
struct LegLine {
    /// Our RTP port and socket (the RTCP port and socket are the next ones); `None`: not anchored.
    local: Option<(u16, SocketId)>,
    sdp_ip: Option<IpAddr>,
    sdp_rtp: Option<SocketAddr>,
    sdp_rtcp: Option<SocketAddr>,
    rtcp_mux: bool,
    /// The latched source of the RTP and of the RTCP socket.
    latched: [Option<SocketAddr>; 2],
    packets: u64,
    ssrc: Option<u32>,
    codecs: SmallVec<[Codec; 4]>,
    ptime_ms: Option<u32>,
    transport: Option<MediaTransport>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Live,
    /// Failed (core-signalled, or its RTCP said BYE): gets no media, never selected again unless
    /// it answers; keeps its ports until the answer or close.
    Failed,
    /// Its ports are back in the pool.
    Freed,
}

#[derive(Debug)]
struct Branch {
    index: usize,
    status: Status,
    leg: Leg,
    answer: Option<AnswerUse>,
    rtp_packets: u64,
    last_rtp: Option<Instant>,
    /// Switched away from for silence: no `Preferred` takeover back to it.
    demoted: bool,
}

#[derive(Debug, Default)]
struct OutStream {
    source: Option<usize>,
    seq_offset: u16,
    ts_offset: u32,
    last_seq: u16,
    last_ts: u32,
    last_wall: Option<Instant>,
}

impl Branch {
    fn eligible(&self) -> bool {
        self.status == Status::Live
            && matches!(
                self.answer,
                Some(AnswerUse::HotStandby | AnswerUse::Passthrough)
            )
    }
}

impl LegLine {
    /// Whether `from` may send on this line's RTP (`rtcp` false) or RTCP socket; latches it.
    fn accept(&mut self, rtcp: bool, from: SocketAddr, signalling: IpAddr, strict: bool) -> bool {
        let slot = usize::from(rtcp);
        if let Some(latched) = self.latched.get(slot).copied().flatten() {
            return latched == from;
        }
        let ok = if strict {
            let named = if rtcp && !self.rtcp_mux {
                self.sdp_rtcp
            } else {
                self.sdp_rtp
            };
            named == Some(from)
        } else {
            self.sdp_ip == Some(from.ip()) || signalling == from.ip()
        };
        if ok {
            if let Some(l) = self.latched.get_mut(slot) {
                *l = Some(from);
            }
        }
        ok
    }

    /// Where to send this line's RTP or RTCP (`rtcp`), from which of our sockets; `mux`: RTCP
    /// goes on the RTP port.
    fn destination(&self, rtcp: bool, mux: bool) -> Option<(SocketId, SocketAddr)> {
        let (_, socket) = self.local?;
        if rtcp && !mux {
            let to = self.latched[1].or(self.sdp_rtcp)?;
            Some((SocketId(socket.0 + 1), to))
        } else {
            let to = self.latched[0].or(self.sdp_rtp)?;
            Some((socket, to))
        }
    }

    /// Takes the addresses, codecs and ptime of `m`; a changed address unlatches.
    fn update(&mut self, m: &MediaLine) {
        let ip = m.connection.filter(|ip| !ip.is_unspecified());
        let rtp = ip
            .filter(|_| m.port != 0)
            .map(|ip| SocketAddr::new(ip, m.port));
        let rtcp = if m.rtcp_mux {
            rtp
        } else {
            match m.rtcp {
                Some((port, addr)) => addr.or(ip).map(|ip| SocketAddr::new(ip, port)),
                None => rtp.map(|a| SocketAddr::new(a.ip(), a.port().wrapping_add(1))),
            }
        };
        if rtp != self.sdp_rtp || rtcp != self.sdp_rtcp {
            self.latched = [None, None];
        }
        self.sdp_ip = ip;
        self.sdp_rtp = rtp;
        self.sdp_rtcp = rtcp;
        self.rtcp_mux = m.rtcp_mux;
        self.codecs = m.codecs.clone();
        self.ptime_ms = m.ptime_ms;
        self.transport = Some(m.transport);
    }
}

/// Whether the branch's stream on `line` is normalised toward the carrier: plain RTP in the
/// offer (`offered`, per line) and in the branch's answer, and not a passthrough answer.
fn normalised(offered: &[MediaTransport], branch: &Branch, line: usize) -> bool {
    offered.get(line) == Some(&MediaTransport::Rtp)
        && branch.leg.lines.get(line).and_then(|l| l.transport) == Some(MediaTransport::Rtp)
        && branch.answer != Some(AnswerUse::Passthrough)
}

/// Whether a line's SDP says its sender sends.
fn line_sends(m: &MediaLine) -> bool {
    m.port != 0
        && m.connection.is_none_or(|ip| !ip.is_unspecified())
        && matches!(m.direction, Direction::SendRecv | Direction::SendOnly)
}

impl Leg {
    fn new(signalling: IpAddr, lines: usize) -> Leg {
        Leg {
            signalling,
            lines: (0..lines).map(|_| LegLine::default()).collect(),
            sends: true,
            comfort_noise: false,
            last_packet: None,
        }
    }

    /// Takes `sdp` for the anchored lines.
    fn update(&mut self, sdp: &SdpSummary) {
        let mut sends = false;
        let mut comfort_noise = false;
        for (line, m) in self.lines.iter_mut().zip(&sdp.media) {
            if line.local.is_none() {
                continue;
            }
            line.update(m);
            sends |= line_sends(m);
            comfort_noise |= m.comfort_noise;
        }
        self.sends = sends;
        self.comfort_noise = comfort_noise;
    }

    /// The RTP ports of the anchored lines, for the caller to free.
    fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.lines.iter().filter_map(|l| l.local.map(|(p, _)| p))
    }

    fn endpoints(&self, address: IpAddr) -> Endpoints {
        Endpoints {
            address,
            ports: self.lines.iter().map(|l| l.local.map(|(p, _)| p)).collect(),
        }
    }

    /// The first `a=ptime` of the leg's anchored lines.
    fn ptime_ms(&self) -> Option<u32> {
        self.lines.iter().find_map(|l| l.ptime_ms)
    }
}

/// `a` is after `b` in RTP's modular order.
fn newer_u16(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}
fn newer_u32(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000_0000
}

fn same_codec(a: &Codec, b: &Codec) -> bool {
    a.name == b.name && a.clock == b.clock
}

/// The reference answer's codec (of one line) that is `codec` under another number, if any.
fn reference_codec<'a>(reference: &'a [Codec], codec: &Codec) -> Option<&'a Codec> {
    reference.iter().find(|rc| same_codec(rc, codec))
}

fn codec_label(c: Option<&Codec>) -> String {
    match c {
        Some(c) => format!("{}/{}", String::from_utf8_lossy(&c.name), c.clock),
        None => "(none)".to_owned(),
    }
}

impl SessionShared {
    /// A session with the carrier side of `offer` anchored.
    pub(crate) fn open(
        plane: &PlaneShared,
        id: u64,
        token: u64,
        offer: &SdpSummary,
        carrier_signalling: IpAddr,
        timeouts: SessionTimeouts,
        ssrc: u32,
    ) -> Result<Arc<SessionShared>, MediaError> {
        let anchored: SmallVec<[usize; 4]> = offer
            .media
            .iter()
            .enumerate()
            .filter(|(_, m)| m.port != 0)
            .map(|(i, _)| i)
            .take(MAX_ANCHORED_LINES)
            .collect();
        if anchored.is_empty() {
            return Err(MediaError::NoMedia);
        }
        let lines = offer.media.len();
        let session = Arc::new(SessionShared {
            id,
            token,
            state: Mutex::new(State {
                closed: false,
                label: Box::from(""),
                ssrc,
                timeouts,
                transports: offer.media.iter().map(|m| m.transport).collect(),
                carrier: Leg::new(carrier_signalling, lines),
                branches: SmallVec::new(),
                selected: None,
                pending_reason: None,
                gap_pending: false,
                first_media_at: None,
                reference: None,
                out: (0..lines).map(|_| OutStream::default()).collect(),
                answered: None,
                inactive_reported: false,
                handed: SmallVec::new(),
                handing_refused: false,
                handed_read_at: None,
            }),
        });
        let mut allocated: SmallVec<[(usize, (u16, SocketId)); 4]> = SmallVec::new();
        for &line in &anchored {
            let owner = |rtcp| SocketOwner {
                session: Arc::clone(&session),
                leg: LegId::Carrier,
                line,
                rtcp,
            };
            match plane.alloc_pair(MediaSide::Carrier, owner) {
                Ok(pair) => allocated.push((line, pair)),
                Err(e) => {
                    for (_, (port, _)) in allocated {
                        plane.free_pair(MediaSide::Carrier, port);
                    }
                    return Err(e);
                }
            }
        }
        {
            let mut state = lock(&session.state);
            for (line, pair) in allocated {
                if let Some(l) = state.carrier.lines.get_mut(line) {
                    l.local = Some(pair);
                }
            }
            state.carrier.update(offer);
        }
        Ok(session)
    }

    /// Post-answer inactivity, once per session.
    pub(crate) fn poll(&self, plane: &PlaneShared, now: Instant) -> Option<MediaEvent> {
        let mut state = lock(&self.state);
        if state.closed || state.inactive_reported {
            return None;
        }
        state.read_handed(plane, now);
        let timeout = state.timeouts.media_timeout?;
        let (branch, answered_at) = state.answered?;
        let silent = |leg: &Leg| {
            let since = leg.last_packet.map_or(answered_at, |t| t.max(answered_at));
            leg.sends && now.saturating_duration_since(since) >= timeout
        };
        let side = if silent(&state.carrier) {
            MediaSide::Carrier
        } else if state
            .branches
            .iter()
            .find(|b| b.index == branch)
            .is_some_and(|b| silent(&b.leg))
        {
            MediaSide::Cloud
        } else {
            return None;
        };
        state.inactive_reported = true;
        Some(MediaEvent::Inactive {
            token: self.token,
            side,
        })
    }

    /// The packet path (see [`super::MediaPlane::on_packet`]).
    pub(crate) fn on_packet(
        &self,
        plane: &PlaneShared,
        owner: &SocketOwner,
        from: SocketAddr,
        packet: &mut [u8],
        now: Instant,
        out: &mut Forwards,
    ) {
        let metrics = &plane.metrics;
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        if state.closed {
            return metrics.dropped(DropReason::NoSession);
        }
        let line = owner.line;
        let offered = state
            .transports
            .get(line)
            .copied()
            .unwrap_or(MediaTransport::Other);
        // What the packet is, checked before anything in it is believed: plain RTP whole, RTCP
        // walked (without edits). SRTP/SRTCP only by their clear headers (the rest, padding
        // included, is encrypted or the auth tag); UDPTL and unknown transports are opaque.
        let kind = match offered {
            MediaTransport::Rtp => match classify(packet) {
                Ok(PacketKind::Rtp) if !owner.rtcp => RtpHeader::parse(packet)
                    .ok()
                    .map(|_| (PacketKind::Rtp, false)),
                Ok(_) => walk_rtcp(packet, None)
                    .ok()
                    .map(|s| (PacketKind::Rtcp, s.bye)),
                Err(_) => None,
            },
            MediaTransport::Srtp => match classify(packet) {
                Ok(PacketKind::Rtp) if !owner.rtcp && packet.len() >= RTP_HEADER_LEN => {
                    Some((PacketKind::Rtp, false))
                }
                Ok(_) if packet.len() >= SRTCP_MIN_LEN => Some((PacketKind::Rtcp, false)),
                _ => None,
            },
            MediaTransport::Udptl | MediaTransport::Other => {
                (!packet.is_empty()).then_some((PacketKind::Rtp, false))
            }
        };
        let Some((kind, bye)) = kind else {
            return metrics.dropped(DropReason::Malformed);
        };
        let rtcp = kind == PacketKind::Rtcp;
        let strict = plane.cfg.strict_source;

        match owner.leg {
            LegId::Carrier => {
                let leg = &mut state.carrier;
                let Some(l) = leg.lines.get_mut(line) else {
                    return metrics.dropped(DropReason::NoSession);
                };
                if !l.accept(owner.rtcp, from, leg.signalling, strict) {
                    return metrics.dropped(DropReason::Stranger);
                }
                l.packets += 1;
                leg.last_packet = Some(now);
                let mut copies = 0;
                for b in state.branches.iter().filter(|b| b.status == Status::Live) {
                    let Some(bl) = b.leg.lines.get(line) else {
                        continue;
                    };
                    if let Some(to) = bl.destination(rtcp, bl.rtcp_mux) {
                        out.push(to);
                        copies += 1;
                        metrics.relayed(Flow::ToCloud, packet.len());
                    }
                }
                if copies == 0 {
                    metrics.dropped(DropReason::NoDestination);
                } else if !rtcp && !owner.rtcp {
                    state.hand_over(plane, LegId::Carrier, line, now);
                }
            }
            LegId::Branch(b) => {
                let Some(pos) = state.branches.iter().position(|x| x.index == b) else {
                    return metrics.dropped(DropReason::NoSession);
                };
                let Some(branch) = state.branches.get_mut(pos) else {
                    return metrics.dropped(DropReason::NoSession);
                };
                if branch.status == Status::Freed {
                    return metrics.dropped(DropReason::NoSession);
                }
                let signalling = branch.leg.signalling;
                let Some(l) = branch.leg.lines.get_mut(line) else {
                    return metrics.dropped(DropReason::NoSession);
                };
                if !l.accept(owner.rtcp, from, signalling, strict) {
                    return metrics.dropped(DropReason::Stranger);
                }
                l.packets += 1;
                branch.leg.last_packet = Some(now);
                if branch.status != Status::Live {
                    return metrics.dropped(DropReason::Standby);
                }
                if rtcp {
                    if bye {
                        // The branch's stream ended: never selected again; if it was the one
                        // the carrier hears, switch on this packet. The BYE is not forwarded.
                        branch.status = Status::Failed;
                        if state.selected == Some(b) {
                            state.fail_over(b, SwitchReason::RtcpBye, metrics);
                        }
                        return metrics.dropped(DropReason::Standby);
                    }
                } else {
                    if let Some(Ok(h)) =
                        (offered == MediaTransport::Rtp).then(|| RtpHeader::parse(packet))
                    {
                        l.ssrc = Some(h.ssrc());
                    }
                    branch.rtp_packets += 1;
                    branch.last_rtp = Some(now);
                    state.select_on_rtp(pos, now, metrics, &plane.cfg);
                }
                if state.selected != Some(b) {
                    return metrics.dropped(DropReason::Standby);
                }
                state.forward_to_carrier(pos, line, rtcp, packet, now, out, metrics);
                if !rtcp && !owner.rtcp {
                    state.hand_over(plane, LegId::Branch(b), line, now);
                }
            }
        }
    }
}

impl State {
    /// The payload-type map of the branch's stream on `line` toward the carrier: each of its
    /// codecs to the reference answer's number for the same codec (others unchanged).
    fn payload_types(&self, branch: &Branch, line: usize) -> [u8; 128] {
        let mut map = RtpRewrite::identity_payload_types();
        let (Some(bl), Some(reference)) = (
            branch.leg.lines.get(line),
            self.reference.as_ref().and_then(|r| r.get(line)),
        ) else {
            return map;
        };
        for codec in &bl.codecs {
            let to = reference_codec(reference, codec);
            if let (Some(slot), Some(to)) = (map.get_mut(usize::from(codec.pt & 0x7f)), to) {
                *slot = to.pt & 0x7f;
            }
        }
        map
    }

    /// After a packet of an answered call's RTP was relayed on `line` from `sender`: hands its
    /// stream to the plane's offload when everything it needs is fixed (the source latched,
    /// the destination known, the carrier-bound normalisation settled on the answered branch).
    fn hand_over(&mut self, plane: &PlaneShared, sender: LegId, line: usize, now: Instant) {
        let (Some(offload), Some((answered, _)), false) =
            (plane.offload.get(), self.answered, self.handing_refused)
        else {
            return;
        };
        let Some(branch) = self.branch(answered).filter(|b| b.status == Status::Live) else {
            return;
        };
        let (Some(bl), Some(cl)) = (branch.leg.lines.get(line), self.carrier.lines.get(line))
        else {
            return;
        };
        let (Some((cloud_port, _)), Some((carrier_port, _))) = (bl.local, cl.local) else {
            return;
        };
        let cloud_at = SocketAddr::new(plane.cfg.cloud_ip, cloud_port);
        let carrier_at = SocketAddr::new(plane.cfg.carrier_ip, carrier_port);
        let at = match sender {
            LegId::Carrier => carrier_at,
            LegId::Branch(_) => cloud_at,
        };
        if self.handed.iter().any(|h| h.at == at) {
            return;
        }
        // As the packet path classifies: RTCP is told apart on RTP and SRTP lines only.
        let rtcp_to_plane = matches!(
            self.transports.get(line),
            Some(MediaTransport::Rtp | MediaTransport::Srtp)
        );
        let stream = match sender {
            LegId::Carrier => {
                let (Some(peer), Some((_, to))) = (cl.latched[0], bl.destination(false, false))
                else {
                    return;
                };
                HandedStream {
                    peer,
                    out_from: cloud_at,
                    out_to: to,
                    rewrite: None,
                    rtcp_to_plane,
                }
            }
            LegId::Branch(b) => {
                // Settled: the answered branch is heard and its stream re-based already.
                let out = self.out.get(line).filter(|o| o.source == Some(b));
                let (true, Some(out), Some(peer), Some((_, to))) = (
                    b == answered && self.selected == Some(b),
                    out,
                    bl.latched[0],
                    cl.destination(false, false),
                ) else {
                    return;
                };
                let rewrite = normalised(&self.transports, branch, line).then(|| RtpRewrite {
                    ssrc: self.ssrc,
                    seq_offset: out.seq_offset,
                    ts_offset: out.ts_offset,
                    payload_types: self.payload_types(branch, line),
                });
                HandedStream {
                    peer,
                    out_from: carrier_at,
                    out_to: to,
                    rewrite,
                    rtcp_to_plane,
                }
            }
        };
        if !offload.install(at, &stream) {
            self.handing_refused = true;
            return;
        }
        self.handed.push(Handed {
            at,
            sender,
            packets: 0,
            bytes: 0,
        });
        self.handed_read_at.get_or_insert(now);
        plane.metrics.handed_over(1);
    }

    /// Takes every handed-over stream back (its next packet reaches the plane), counting what
    /// the offload relayed of it: before anything that could change a stream, and before the
    /// session's ports return to the pool.
    fn take_back(&mut self, plane: &PlaneShared) {
        let Some(offload) = plane.offload.get() else {
            return;
        };
        self.handing_refused = false;
        for handed in std::mem::take(&mut self.handed) {
            let last = offload.remove(handed.at);
            plane.metrics.handed_over(-1);
            if let Some(counters) = last {
                // No clock here: the last packet's time waits for the plane's next packet.
                self.count_handed(plane, &handed, counters, None);
            }
        }
    }

    /// Reads the handed-over streams' counters (at most every [`HANDED_READ_EVERY`], or a
    /// quarter of a shorter media timeout): what they relayed goes to the metrics, and their
    /// last packet to their sender's activity.
    fn read_handed(&mut self, plane: &PlaneShared, now: Instant) {
        let Some(offload) = plane.offload.get() else {
            return;
        };
        let every = self
            .timeouts
            .media_timeout
            .map_or(HANDED_READ_EVERY, |t| (t / 4).min(HANDED_READ_EVERY));
        if self.handed.is_empty()
            || self
                .handed_read_at
                .is_some_and(|t| now.saturating_duration_since(t) < every)
        {
            return;
        }
        self.handed_read_at = Some(now);
        let mut handed = std::mem::take(&mut self.handed);
        for h in &mut handed {
            if let Some(counters) = offload.counters(h.at) {
                self.count_handed(plane, h, counters, Some(now));
                h.packets = h.packets.max(counters.packets);
                h.bytes = h.bytes.max(counters.bytes);
            }
        }
        self.handed = handed;
    }

    fn count_handed(
        &mut self,
        plane: &PlaneShared,
        handed: &Handed,
        counters: HandedCounters,
        now: Option<Instant>,
    ) {
        let packets = counters.packets.saturating_sub(handed.packets);
        if packets == 0 {
            return;
        }
        let bytes = counters.bytes.saturating_sub(handed.bytes);
        let flow = match handed.sender {
            LegId::Carrier => Flow::ToCloud,
            LegId::Branch(_) => Flow::ToCarrier,
        };
        plane.metrics.relayed_many(flow, packets, bytes);
        let seen = now
            .zip(counters.idle)
            .and_then(|(now, idle)| now.checked_sub(idle));
        let leg = match handed.sender {
            LegId::Carrier => Some(&mut self.carrier),
            LegId::Branch(b) => self.branch_mut(b).map(|b| &mut b.leg),
        };
        if let (Some(leg), Some(seen)) = (leg, seen) {
            leg.last_packet = Some(leg.last_packet.map_or(seen, |t| t.max(seen)));
        }
    }

    fn branch(&self, index: usize) -> Option<&Branch> {
        self.branches.iter().find(|b| b.index == index)
    }
    fn branch_mut(&mut self, index: usize) -> Option<&mut Branch> {
        self.branches.iter_mut().find(|b| b.index == index)
    }

    /// Selects `to` (a branch index or none) for `reason`; counts it as a switch when it replaces
    /// a selection (or a failure left none). True if a switch happened.
    fn switch(
        &mut self,
        to: Option<usize>,
        reason: SwitchReason,
        metrics: &super::MediaMetrics,
    ) -> bool {
        if to == self.selected {
            return false;
        }
        let replacing = self.selected.is_some();
        let from = self.selected;
        self.selected = to;
        let log = |reason: SwitchReason| {
            tracing::info!(
                call_id = %self.label,
                from = ?from,
                to = ?to,
                reason = reason.as_str(),
                "media: the carrier now hears another branch"
            );
        };
        match to {
            Some(_) if replacing => {
                log(reason);
                metrics.switched(reason);
                self.gap_pending = true;
                true
            }
            Some(_) => match self.pending_reason.take() {
                Some(pending) => {
                    log(pending);
                    metrics.switched(pending);
                    self.gap_pending = true;
                    true
                }
                None => false,
            },
            None => {
                self.pending_reason = Some(reason);
                false
            }
        }
    }

    /// The selected branch `failed` is out: the most preferred other eligible branch that has
    /// media takes over, else nothing is selected until one sends. True if a switch happened.
    fn fail_over(
        &mut self,
        failed: usize,
        reason: SwitchReason,
        metrics: &super::MediaMetrics,
    ) -> bool {
        let to = self
            .branches
            .iter()
            .filter(|b| b.index != failed && b.eligible() && b.rtp_packets > 0)
            .min_by_key(|b| (b.demoted, b.index))
            .map(|b| b.index);
        self.switch(to, reason, metrics)
    }

    /// RTP arrived from the branch at `pos`: initial selection, preferred takeover, or a switch
    /// away from a silent selected branch.
    fn select_on_rtp(
        &mut self,
        pos: usize,
        now: Instant,
        metrics: &super::MediaMetrics,
        cfg: &super::MediaConfig,
    ) {
        if self.answered.is_some() {
            return;
        }
        let Some(branch) = self.branches.get(pos) else {
            return;
        };
        if !branch.eligible() {
            return;
        }
        let (b, demoted) = (branch.index, branch.demoted);
        let Some(current) = self.selected else {
            // The first selection, or the one after a failure that left none (counted then).
            // A more preferred live branch that has not played yet gets a moment first (its 183
            // may still be on its way): clouds start their early media within milliseconds of
            // each other, and the caller should hear the preferred one from its first packet,
            // not a packet of the other.
            let first = *self.first_media_at.get_or_insert(now);
            let preferred_pending = self.branches.iter().any(|o| {
                o.index < b
                    && o.status == Status::Live
                    && !o.demoted
                    && o.rtp_packets == 0
                    && !matches!(o.answer, Some(AnswerUse::ColdCodecMismatch { .. }))
            });
            if preferred_pending && now.saturating_duration_since(first) < PREFERRED_GRACE {
                return;
            }
            self.switch(Some(b), SwitchReason::Preferred, metrics);
            return;
        };
        if current == b {
            return;
        }
        if b < current && !demoted {
            self.switch(Some(b), SwitchReason::Preferred, metrics);
            return;
        }
        let Some(selected) = self.branch(current) else {
            return;
        };
        // The branch's ptime, else the carrier's (the offer), else 20 ms.
        let ptime = selected
            .leg
            .ptime_ms()
            .or(self.carrier.ptime_ms())
            .unwrap_or(DEFAULT_PTIME_MS);
        let threshold = if selected.leg.comfort_noise {
            cfg.silence_comfort_noise
        } else {
            cfg.silence
                .unwrap_or_else(|| (Duration::from_millis(u64::from(ptime)) * 3).max(SILENCE_FLOOR))
        };
        let silent = selected.rtp_packets >= SILENCE_ARMED_AFTER
            && selected
                .last_rtp
                .is_some_and(|t| now.saturating_duration_since(t) > threshold);
        if silent {
            if let Some(s) = self.branch_mut(current) {
                s.demoted = true;
            }
            self.switch(Some(b), SwitchReason::Silence, metrics);
        }
    }

    /// Forwards the selected branch's packet to the carrier: normalised on plain RTP lines.
    #[allow(clippy::too_many_arguments)]
    fn forward_to_carrier(
        &mut self,
        pos: usize,
        line: usize,
        rtcp: bool,
        packet: &mut [u8],
        now: Instant,
        out: &mut Forwards,
        metrics: &super::MediaMetrics,
    ) {
        let (Some(branch), Some(carrier), Some(stream)) = (
            self.branches.get(pos),
            self.carrier.lines.get(line),
            self.out.get_mut(line),
        ) else {
            return metrics.dropped(DropReason::NoSession);
        };
        let Some(bl) = branch.leg.lines.get(line) else {
            return metrics.dropped(DropReason::NoSession);
        };
        let Some(to) = carrier.destination(rtcp, carrier.rtcp_mux && bl.rtcp_mux) else {
            return metrics.dropped(DropReason::NoDestination);
        };
        let normalise = normalised(&self.transports, branch, line);
        if rtcp {
            // RTCP neither starts the new source's stream nor ends the gap: only media does.
            if normalise && walk_rtcp(packet, Some(self.ssrc)).is_err() {
                return metrics.dropped(DropReason::Malformed);
            }
            out.push(to);
            return metrics.relayed(Flow::ToCarrier, packet.len());
        }
        let b = branch.index;
        let new_source = stream.source != Some(b);
        if new_source {
            if let (true, Some(last)) = (self.gap_pending, stream.last_wall) {
                metrics.switch_gap(now.saturating_duration_since(last));
                self.gap_pending = false;
            }
        }
        if normalise {
            let Ok(mut h) = RtpHeader::parse(packet) else {
                return metrics.dropped(DropReason::Malformed);
            };
            let (in_seq, in_ts, in_pt) = (h.sequence_number(), h.timestamp(), h.payload_type());
            // The payload type in the reference answer's numbering, and the output clock.
            let codec = bl.codecs.iter().find(|c| c.pt == in_pt);
            let reference = self
                .reference
                .as_ref()
                .and_then(|r| r.get(line))
                .zip(codec)
                .and_then(|(r, c)| reference_codec(r, c));
            let out_pt = reference.map_or(in_pt, |c| c.pt);
            let clock = reference.or(codec).map_or(DEFAULT_CLOCK, |c| c.clock);
            if new_source {
                match stream.last_wall {
                    Some(last) => {
                        let ptime = bl.ptime_ms.or(carrier.ptime_ms).unwrap_or(DEFAULT_PTIME_MS);
                        let frame = (u64::from(ptime) * u64::from(clock) / 1000).max(1);
                        let elapsed = now.saturating_duration_since(last).as_secs_f64();
                        let ticks = (elapsed * f64::from(clock)).round() as u64;
                        // Whole frames, at least one: the new source's first packet follows the
                        // old one's last.
                        let ticks = ((ticks + frame / 2) / frame).max(1) * frame;
                        stream.seq_offset = stream.last_seq.wrapping_add(1).wrapping_sub(in_seq);
                        stream.ts_offset = stream
                            .last_ts
                            .wrapping_add(ticks as u32)
                            .wrapping_sub(in_ts);
                    }
                    None => {
                        stream.seq_offset = 0;
                        stream.ts_offset = 0;
                    }
                }
            }
            let seq = in_seq.wrapping_add(stream.seq_offset);
            let ts = in_ts.wrapping_add(stream.ts_offset);
            h.set_ssrc(self.ssrc);
            h.set_sequence_number(seq);
            h.set_timestamp(ts);
            h.set_payload_type(out_pt);
            if new_source {
                h.set_marker(true);
            }
            if stream.last_wall.is_none() || newer_u16(seq, stream.last_seq) {
                stream.last_seq = seq;
            }
            if stream.last_wall.is_none() || newer_u32(ts, stream.last_ts) {
                stream.last_ts = ts;
            }
        }
        stream.source = Some(b);
        stream.last_wall = Some(now);
        out.push(to);
        metrics.relayed(Flow::ToCarrier, packet.len());
    }

    /// Marks every branch but `keep` freed and returns the RTP ports they held, for the caller
    /// to free once the session's mutex is released.
    fn take_branch_ports(&mut self, keep: Option<usize>) -> SmallVec<[(MediaSide, u16); 8]> {
        let mut ports = SmallVec::new();
        for b in &mut self.branches {
            if Some(b.index) == keep || b.status == Status::Freed {
                continue;
            }
            ports.extend(b.leg.ports().map(|p| (MediaSide::Cloud, p)));
            b.status = Status::Freed;
        }
        ports
    }

    /// [`State::take_branch_ports`] for every branch, and the carrier's ports.
    fn take_all_ports(&mut self) -> SmallVec<[(MediaSide, u16); 8]> {
        let mut ports = self.take_branch_ports(None);
        ports.extend(self.carrier.ports().map(|p| (MediaSide::Carrier, p)));
        for l in &mut self.carrier.lines {
            l.local = None;
        }
        ports
    }
}

/// A call's media session: the core's handle. Clones share it; dropping the last clone does
/// not free anything ([`MediaSession::close`] does).
#[derive(Clone, Debug)]
pub struct MediaSession {
    plane: Arc<PlaneShared>,
    inner: Arc<SessionShared>,
}

impl MediaSession {
    pub(crate) fn new(plane: Arc<PlaneShared>, inner: Arc<SessionShared>) -> MediaSession {
        MediaSession { plane, inner }
    }

    fn free(&self, ports: &[(MediaSide, u16)]) {
        for &(side, port) in ports {
            self.plane.free_pair(side, port);
        }
    }

    /// The relay endpoint the carrier must send to: the address and RTP port per `m=` line
    /// (`None` for lines not anchored), for `sdp::Rewrite { address, ports: &endpoints.ports }`.
    pub fn carrier_endpoints(&self) -> Endpoints {
        let state = lock(&self.inner.state);
        state
            .carrier
            .endpoints(self.plane.side_ip(MediaSide::Carrier))
    }

    /// A new branch (fork) `branch` toward a cloud whose signalling address is
    /// `cloud_signalling`: allocates its cloud-side endpoints and returns them, for rewriting the
    /// offer sent to that branch. Called again for a branch that still holds ports, returns the
    /// same endpoints.
    pub fn add_branch(
        &self,
        branch: usize,
        cloud_signalling: IpAddr,
    ) -> Result<Endpoints, MediaError> {
        let cloud_ip = self.plane.side_ip(MediaSide::Cloud);
        let mut state = lock(&self.inner.state);
        if state.closed {
            return Err(MediaError::Closed);
        }
        if let Some(existing) = state.branch(branch) {
            if existing.status != Status::Freed {
                return Ok(existing.leg.endpoints(cloud_ip));
            }
        }
        let lines = state.carrier.lines.len();
        let mut leg = Leg::new(cloud_signalling, lines);
        let anchored: SmallVec<[usize; 4]> = state
            .carrier
            .lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.local.is_some())
            .map(|(i, _)| i)
            .collect();
        for line in anchored {
            let owner = |rtcp| SocketOwner {
                session: Arc::clone(&self.inner),
                leg: LegId::Branch(branch),
                line,
                rtcp,
            };
            match self.plane.alloc_pair(MediaSide::Cloud, owner) {
                Ok(pair) => {
                    if let Some(l) = leg.lines.get_mut(line) {
                        l.local = Some(pair);
                    }
                }
                Err(e) => {
                    let ports: SmallVec<[(MediaSide, u16); 4]> =
                        leg.ports().map(|p| (MediaSide::Cloud, p)).collect();
                    drop(state);
                    self.free(&ports);
                    return Err(e);
                }
            }
        }
        let endpoints = leg.endpoints(cloud_ip);
        let new = Branch {
            index: branch,
            status: Status::Live,
            leg,
            answer: None,
            rtp_packets: 0,
            last_rtp: None,
            demoted: false,
        };
        match state.branches.iter_mut().find(|b| b.index == branch) {
            Some(old) => *old = new,
            None => state.branches.push(new),
        }
        Ok(endpoints)
    }

    /// Branch `branch` sent an SDP answer (in an 18x or the 2xx; again = an update). Returns
    /// what the relay decided about it: [`AnswerUse::HotStandby`] (normalised, eligible),
    /// [`AnswerUse::ColdCodecMismatch`] (its first codec differs from the reference answer's
    /// by name or clock: relayed, never switched to before the answer), [`AnswerUse::Passthrough`]
    /// (an SRTP/UDPTL line: relayed unchanged, switched best effort), or
    /// [`AnswerUse::Ignored`] (unknown or freed branch, closed session). The first answer the
    /// session sees is the reference. A failed branch's answer is still recorded (a 2xx may
    /// race the CANCEL) but does not make it eligible.
    pub fn on_answer(&self, branch: usize, answer: &SdpSummary) -> AnswerUse {
        let mut guard = lock(&self.inner.state);
        let state = &mut *guard;
        if state.closed {
            return AnswerUse::Ignored;
        }
        let Some(pos) = state
            .branches
            .iter()
            .position(|b| b.index == branch && b.status != Status::Freed)
        else {
            return AnswerUse::Ignored;
        };
        // A new answer may move the stream: the plane relays it again until it settles.
        state.take_back(&self.plane);
        let Some(b) = state.branches.get_mut(pos) else {
            return AnswerUse::Ignored;
        };
        b.leg.update(answer);
        let reference = state
            .reference
            .get_or_insert_with(|| b.leg.lines.iter().map(|l| l.codecs.clone()).collect());
        let anchored = || b.leg.lines.iter().filter(|l| l.local.is_some());
        let passthrough = anchored().any(|l| l.transport != Some(MediaTransport::Rtp));
        let decision = if passthrough {
            AnswerUse::Passthrough
        } else {
            let first = b
                .leg
                .lines
                .iter()
                .enumerate()
                .find(|(_, l)| l.local.is_some() && !l.codecs.is_empty())
                .map(|(i, l)| (i, l.codecs.first()));
            let mismatch = first.and_then(|(i, heard)| {
                let offered = reference.get(i).and_then(|r| r.first());
                match (heard, offered) {
                    (Some(h), Some(o)) if !same_codec(h, o) => Some((h, o)),
                    _ => None,
                }
            });
            match mismatch {
                Some((heard, offered)) => AnswerUse::ColdCodecMismatch {
                    heard: codec_label(Some(heard)),
                    offered: codec_label(Some(offered)),
                },
                None => AnswerUse::HotStandby,
            }
        };
        b.answer = Some(decision.clone());
        decision
    }

    /// The carrier sent a new offer or answer in the dialog (re-INVITE, UPDATE): new remote
    /// addresses (a changed one unlatches), direction (hold), codecs. Lines beyond the ones
    /// anchored at [`super::MediaPlane::open`] are not anchored.
    pub fn on_carrier_sdp(&self, sdp: &SdpSummary) {
        let mut state = lock(&self.inner.state);
        if !state.closed {
            // The plane relays the streams again until they settle with what this says.
            state.take_back(&self.plane);
            state.carrier.update(sdp);
        }
    }

    /// The core saw branch `branch` fail (error final, 199, CANCEL sent, transport error,
    /// timeout): it gets no more media and is never selected again (its ports return at the
    /// answer or close); if it was selected, the most preferred other live branch with media
    /// takes over now (marker on its next packet). Idempotent. True if a switch happened.
    pub fn branch_failed(&self, branch: usize, reason: SwitchReason) -> bool {
        let mut state = lock(&self.inner.state);
        if state.closed {
            return false;
        }
        if state.answered.is_some() {
            // One branch left: its end is the call's (BYE), not a switch.
            return false;
        }
        match state.branch_mut(branch) {
            Some(b) if b.status == Status::Live => b.status = Status::Failed,
            _ => return false,
        }
        if state.selected != Some(branch) {
            return false;
        }
        state.fail_over(branch, reason, &self.plane.metrics)
    }

    /// The 2xx came on `branch`: selects it at once (the next packet from it continues the
    /// stream if it was a standby) and frees every other branch's ports. Silence switching stops.
    pub fn answered(&self, branch: usize, now: Instant) {
        let mut state = lock(&self.inner.state);
        if state.closed || state.answered.is_some() {
            return;
        }
        if let Some(b) = state.branch_mut(branch) {
            if b.status == Status::Failed {
                b.status = Status::Live;
            }
        }
        state.answered = Some((branch, now));
        state.pending_reason = None;
        state.switch(Some(branch), SwitchReason::Answer, &self.plane.metrics);
        let ports = state.take_branch_ports(Some(branch));
        drop(state);
        self.free(&ports);
    }

    /// Frees every port of the session. Idempotent. Packets that arrive later on those ports are
    /// dropped (reason `no_session`).
    pub fn close(&self) {
        let mut state = lock(&self.inner.state);
        if state.closed {
            return;
        }
        state.closed = true;
        // Before the ports go back to the pool, where another call may take them.
        state.take_back(&self.plane);
        let ports = state.take_all_ports();
        drop(state);
        self.free(&ports);
        self.plane.forget(self.inner.id);
    }

    /// The relay endpoint branch `branch`'s cloud sends to, while the branch holds ports (for
    /// the offers and answers of the answered dialog: they keep the relay ports of its setup).
    pub fn branch_endpoints(&self, branch: usize) -> Option<Endpoints> {
        let state = lock(&self.inner.state);
        let b = state.branch(branch)?;
        (b.status != Status::Freed).then(|| b.leg.endpoints(self.plane.side_ip(MediaSide::Cloud)))
    }

    /// Replaces the post-answer inactivity timeout (the answering destination's own).
    pub fn set_media_timeout(&self, media_timeout: Option<Duration>) {
        lock(&self.inner.state).timeouts.media_timeout = media_timeout;
    }

    /// Names the session in the logs (the core gives the call's Call-ID).
    pub fn set_label(&self, label: &str) {
        lock(&self.inner.state).label = Box::from(label);
    }

    /// The branch the carrier hears now.
    pub fn selected(&self) -> Option<usize> {
        lock(&self.inner.state).selected
    }

    /// The core's token for this call.
    pub fn token(&self) -> u64 {
        self.inner.token
    }

    /// The SSRC of the carrier-bound stream.
    pub fn ssrc(&self) -> u32 {
        lock(&self.inner.state).ssrc
    }
}
