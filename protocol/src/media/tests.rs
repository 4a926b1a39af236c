//! The plane's behaviour, packet by packet, on a fake clock: synthetic RTP/RTCP in, forwards out.

use super::rtp::tests::{rtcp, rtp};
use super::rtp::RtpHeader;
use super::sdp::{Codec, Direction, MediaKind, MediaLine, MediaTransport, SdpSummary};
use super::*;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::net::Ipv4Addr;

const RELAY_CARRIER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
const RELAY_CLOUD: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1));
const CARRIER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
const CLOUD_A: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
const CLOUD_B: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2));
const CARRIER_PORT: u16 = 4000;
const A_PORT: u16 = 5000;
const B_PORT: u16 = 6000;
const MS: Duration = Duration::from_millis(1);

fn config() -> MediaConfig {
    MediaConfig {
        carrier_ip: RELAY_CARRIER,
        cloud_ip: RELAY_CLOUD,
        port_min: 20000,
        port_max: 20099,
        silence: None,
        silence_comfort_noise: DEFAULT_SILENCE_COMFORT_NOISE,
        strict_source: false,
    }
}

fn codec(pt: u8, name: &str, clock: u32) -> Codec {
    Codec {
        pt,
        name: name.as_bytes().into(),
        clock,
    }
}

fn pcma() -> Codec {
    codec(8, "pcma", 8000)
}

fn line(ip: IpAddr, port: u16, codecs: &[Codec]) -> MediaLine {
    MediaLine {
        kind: MediaKind::Audio,
        port,
        transport: MediaTransport::Rtp,
        connection: Some(ip),
        rtcp: None,
        rtcp_mux: false,
        formats: codecs.iter().map(|c| c.pt).collect(),
        codecs: codecs.iter().cloned().collect(),
        ptime_ms: None,
        direction: Direction::SendRecv,
        comfort_noise: false,
    }
}

fn sdp(lines: Vec<MediaLine>) -> SdpSummary {
    SdpSummary {
        connection: lines.first().and_then(|l| l.connection),
        media: lines.into_iter().collect(),
    }
}

fn offer() -> SdpSummary {
    sdp(vec![line(CARRIER, CARRIER_PORT, &[pcma()])])
}

fn answer(ip: IpAddr, port: u16) -> SdpSummary {
    sdp(vec![line(ip, port, &[pcma()])])
}

/// A plane with a Prometheus recorder to read the metrics back.
fn plane_with(cfg: MediaConfig) -> (MediaPlane, PrometheusHandle) {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    (
        MediaPlane::new(cfg, MediaMetrics::register(&recorder)),
        handle,
    )
}

/// The value of one rendered series (`name{labels}`), 0 if absent.
fn metric(handle: &PrometheusHandle, series: &str) -> f64 {
    handle
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// A call with the carrier anchored and two branches (0: cloud A, 1: cloud B) that answered.
struct Call {
    plane: MediaPlane,
    metrics: PrometheusHandle,
    session: MediaSession,
    t0: Instant,
    carrier_rtp: SocketAddr,
    branch_rtp: [SocketAddr; 2],
}

impl Call {
    fn new() -> Call {
        Call::with(
            config(),
            offer(),
            [answer(CLOUD_A, A_PORT), answer(CLOUD_B, B_PORT)],
        )
    }

    fn with(cfg: MediaConfig, offer: SdpSummary, answers: [SdpSummary; 2]) -> Call {
        let (plane, metrics) = plane_with(cfg);
        let t0 = Instant::now();
        let timeouts = SessionTimeouts {
            media_timeout: Some(Duration::from_secs(5)),
        };
        let session = plane.open(7, &offer, CARRIER, timeouts).unwrap();
        let ep = session.carrier_endpoints();
        let carrier_rtp = SocketAddr::new(ep.address, ep.ports[0].unwrap());
        let mut branch_rtp = [carrier_rtp; 2];
        for (b, (cloud, answer)) in [CLOUD_A, CLOUD_B].into_iter().zip(answers).enumerate() {
            let ep = session.add_branch(b, cloud).unwrap();
            branch_rtp[b] = SocketAddr::new(ep.address, ep.ports[0].unwrap());
            session.on_answer(b, &answer);
        }
        Call {
            plane,
            metrics,
            session,
            t0,
            carrier_rtp,
            branch_rtp,
        }
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + MS * ms as u32
    }

    fn socket(&self, local: SocketAddr) -> SocketId {
        self.plane
            .sockets()
            .into_iter()
            .find(|&(_, a)| a == local)
            .map(|(id, _)| id)
            .unwrap()
    }

    fn local_addr(&self, id: SocketId) -> SocketAddr {
        self.plane.sockets()[id.0 as usize].1
    }

    /// Sends `packet` to the relay's `to` from `from` at `ms`: (where it went, as edited).
    fn send(
        &self,
        to: SocketAddr,
        from: SocketAddr,
        mut packet: Vec<u8>,
        ms: u64,
    ) -> (Forwards, Vec<u8>) {
        let mut out = Forwards::new();
        self.plane
            .on_packet(self.socket(to), from, &mut packet, self.at(ms), &mut out);
        (out, packet)
    }

    /// Branch `b`'s cloud sends RTP seq/ts at `ms`.
    fn branch_sends(&self, b: usize, pt: u8, seq: u16, ts: u32, ms: u64) -> (Forwards, Vec<u8>) {
        let from = [
            SocketAddr::new(CLOUD_A, A_PORT),
            SocketAddr::new(CLOUD_B, B_PORT),
        ][b];
        let ssrc = [0xaaaa_0000, 0xbbbb_0000][b];
        self.send(self.branch_rtp[b], from, rtp(pt, seq, ts, ssrc), ms)
    }

    fn carrier_sends(&self, packet: Vec<u8>, ms: u64) -> (Forwards, Vec<u8>) {
        self.send(
            self.carrier_rtp,
            SocketAddr::new(CARRIER, CARRIER_PORT),
            packet,
            ms,
        )
    }

    fn count(&self, series: &str) -> f64 {
        metric(&self.metrics, series)
    }
}

fn header(packet: &mut [u8]) -> (bool, u8, u16, u32, u32) {
    let h = RtpHeader::parse(packet).unwrap();
    (
        h.marker(),
        h.payload_type(),
        h.sequence_number(),
        h.timestamp(),
        h.ssrc(),
    )
}

fn to_carrier() -> SocketAddr {
    SocketAddr::new(CARRIER, CARRIER_PORT)
}

#[test]
fn fan_out_copies_carrier_packets_unchanged_to_every_live_branch() {
    let call = Call::new();
    let packet = rtp(8, 100, 16000, 0x1234);
    let (out, sent) = call.carrier_sends(packet.clone(), 0);
    assert_eq!(sent, packet, "carrier media is not edited");
    let to: Vec<_> = out.iter().map(|&(s, a)| (call.local_addr(s), a)).collect();
    assert_eq!(
        to,
        [
            (call.branch_rtp[0], SocketAddr::new(CLOUD_A, A_PORT)),
            (call.branch_rtp[1], SocketAddr::new(CLOUD_B, B_PORT)),
        ]
    );
    // RTCP arrives on the RTCP socket and leaves from each branch's RTCP socket to port + 1.
    let rtcp_at = SocketAddr::new(RELAY_CARRIER, call.carrier_rtp.port() + 1);
    let (out, _) = call.send(
        rtcp_at,
        SocketAddr::new(CARRIER, CARRIER_PORT + 1),
        rtcp(0x1234, false),
        0,
    );
    let to: Vec<_> = out
        .iter()
        .map(|&(s, a)| (call.local_addr(s).port(), a.port()))
        .collect();
    assert_eq!(
        to,
        [
            (call.branch_rtp[0].port() + 1, A_PORT + 1),
            (call.branch_rtp[1].port() + 1, B_PORT + 1)
        ]
    );
    // A failed branch gets nothing.
    call.session.branch_failed(1, SwitchReason::ErrorResponse);
    let (out, _) = call.carrier_sends(packet, 20);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1, SocketAddr::new(CLOUD_A, A_PORT));
    assert_eq!(
        call.count("pointsman_media_packets_total{direction=\"to_cloud\"}"),
        5.0
    );
}

#[test]
fn selection_waits_a_moment_for_the_preferred_branch_then_hears_it_from_its_first_packet() {
    let call = Call::new();
    assert_eq!(call.session.selected(), None);
    // The standby plays first: the preferred branch answered, so it gets its grace.
    let (out, _) = call.branch_sends(1, 8, 1, 0, 0);
    assert_eq!(call.session.selected(), None);
    assert!(
        out.is_empty(),
        "the carrier does not hear the standby first"
    );
    let (out, _) = call.branch_sends(0, 8, 1, 0, 20);
    assert_eq!(call.session.selected(), Some(0));
    assert_eq!(out.len(), 1);
    assert_eq!(
        call.local_addr(out[0].0),
        call.carrier_rtp,
        "sent from the carrier-side socket"
    );
    assert_eq!(out[0].1, to_carrier());
    let (out, _) = call.branch_sends(1, 8, 2, 160, 40);
    assert!(out.is_empty());
    assert_eq!(
        call.count("pointsman_media_switches_total{reason=\"preferred\"}"),
        0.0,
        "a first selection is no switch"
    );
}

#[test]
fn selection_forwards_the_first_branch_whose_rtp_arrives_once_the_grace_is_over() {
    let call = Call::new();
    call.branch_sends(1, 8, 1, 0, 0);
    let (out, _) = call.branch_sends(1, 8, 2, 160, 80);
    assert_eq!(call.session.selected(), Some(1));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1, to_carrier());
    // Branch 0 is more preferred: it takes over once it starts (reason Preferred)...
    let (out, _) = call.branch_sends(0, 8, 1, 0, 100);
    assert_eq!(call.session.selected(), Some(0));
    assert_eq!(out.len(), 1);
    // ...and branch 1 is suppressed from then on.
    let (out, _) = call.branch_sends(1, 8, 3, 320, 100);
    assert!(out.is_empty());
    assert_eq!(
        call.count("pointsman_media_dropped_total{reason=\"standby\"}"),
        2.0
    );
    assert_eq!(
        call.count("pointsman_media_switches_total{reason=\"preferred\"}"),
        1.0
    );
    assert_eq!(
        call.count("pointsman_media_packets_total{direction=\"to_carrier\"}"),
        2.0
    );
}

#[test]
fn preferred_branch_takes_over_once_and_never_flaps_back_to_a_failed_one() {
    let call = Call::new();
    call.branch_sends(1, 8, 1, 0, 0);
    call.branch_sends(0, 8, 1, 0, 20);
    assert_eq!(call.session.selected(), Some(0));
    assert!(call
        .session
        .branch_failed(0, SwitchReason::EarlyDialogTerminated));
    assert_eq!(call.session.selected(), Some(1));
    // Branch 0 keeps sending (its media was not torn down yet): it is not taken back.
    for i in 0..5 {
        let (out, _) =
            call.branch_sends(0, 8, 2 + i, 160 * u32::from(i + 1), 40 + 20 * u64::from(i));
        assert!(out.is_empty());
    }
    assert_eq!(call.session.selected(), Some(1));
    // A branch switched away from for silence is not taken back either.
    let call = Call::new();
    for i in 0..3u16 {
        call.branch_sends(0, 8, i, 160 * u32::from(i), 20 * u64::from(i));
    }
    call.branch_sends(1, 8, 0, 0, 200);
    assert_eq!(call.session.selected(), Some(1));
    call.branch_sends(0, 8, 3, 480, 220);
    assert_eq!(
        call.session.selected(),
        Some(1),
        "no flap back after a silence switch"
    );
}

#[test]
fn normalisation_keeps_one_continuous_stream_across_a_switch() {
    // The reference (branch 0) numbers opus 111; branch 1 numbers it 96. 20 ms frames at 48 kHz.
    let opus = |pt| codec(pt, "opus", 48000);
    let mut a = answer(CLOUD_A, A_PORT);
    a.media[0].codecs = [opus(111)].into_iter().collect();
    let mut b = answer(CLOUD_B, B_PORT);
    b.media[0].codecs = [opus(96)].into_iter().collect();
    let call = Call::with(config(), offer(), [a, b]);
    let ssrc = call.session.ssrc();

    let (_, mut first) = call.branch_sends(0, 111, 5000, 90_000, 0);
    let (marker, pt, seq0, ts0, out_ssrc) = header(&mut first);
    assert!(marker, "the first packet starts the stream");
    assert_eq!((pt, out_ssrc), (111, ssrc));
    let (_, mut second) = call.branch_sends(0, 111, 5001, 90_960, 20);
    assert_eq!(header(&mut second), (false, 111, seq0 + 1, ts0 + 960, ssrc));
    // Branch 1 streams too (suppressed); then branch 0 fails and branch 1's next packet goes out
    // 25 ms after the last one: seq continues, ts advances by the wall clock in whole frames.
    call.branch_sends(1, 96, 40_000, 7_000_000, 15);
    assert!(call.session.branch_failed(0, SwitchReason::Cancelled));
    let (out, mut switched) = call.branch_sends(1, 96, 40_001, 7_000_960, 45);
    assert_eq!(out.len(), 1);
    assert_eq!(
        header(&mut switched),
        (true, 111, seq0 + 2, ts0 + 960 + 960, ssrc)
    );
    let (_, mut next) = call.branch_sends(1, 96, 40_002, 7_001_920, 65);
    assert_eq!(
        header(&mut next),
        (false, 111, seq0 + 3, ts0 + 960 + 1920, ssrc)
    );
    assert_eq!(next.len(), 172, "length unchanged");
    assert_eq!(
        call.count("pointsman_media_switches_total{reason=\"cancelled\"}"),
        1.0
    );
    assert_eq!(call.count("pointsman_media_switch_gap_seconds_count"), 1.0);
}

#[test]
fn normalisation_advances_the_timestamp_by_the_wall_clock_after_a_long_gap() {
    let call = Call::new();
    for i in 0..3u16 {
        call.branch_sends(0, 8, 10 + i, 1000 + 160 * u32::from(i), 20 * u64::from(i));
    }
    // Branch 0's last packet at 40 ms; branch 1's arrives at 143 ms (silence > 60 ms): 103 ms
    // later → 824 ticks → 5 frames of 160 = 800.
    let (out, mut p) = call.branch_sends(1, 8, 999, 123_456, 143);
    assert_eq!(out.len(), 1);
    let (marker, _, seq, ts, _) = header(&mut p);
    assert!(marker);
    assert_eq!((seq, ts), (13, 1000 + 320 + 800));
    assert_eq!(
        call.count("pointsman_media_switches_total{reason=\"silence\"}"),
        1.0
    );
}

#[test]
fn rtcp_from_the_selected_branch_gets_the_output_ssrc() {
    let call = Call::new();
    call.branch_sends(0, 8, 1, 0, 0);
    let ssrc = call.session.ssrc();
    let rtcp_at = SocketAddr::new(RELAY_CLOUD, call.branch_rtp[0].port() + 1);
    let (out, sent) = call.send(
        rtcp_at,
        SocketAddr::new(CLOUD_A, A_PORT + 1),
        rtcp(0xaaaa_0000, false),
        5,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(
        call.local_addr(out[0].0).port(),
        call.carrier_rtp.port() + 1
    );
    assert_eq!(out[0].1, SocketAddr::new(CARRIER, CARRIER_PORT + 1));
    assert_eq!(
        sent.windows(4).filter(|w| *w == ssrc.to_be_bytes()).count(),
        2
    );
    assert!(!sent.windows(4).any(|w| w == 0xaaaa_0000u32.to_be_bytes()));
    // The standby's RTCP is suppressed.
    let rtcp_b = SocketAddr::new(RELAY_CLOUD, call.branch_rtp[1].port() + 1);
    let (out, _) = call.send(
        rtcp_b,
        SocketAddr::new(CLOUD_B, B_PORT + 1),
        rtcp(0xbbbb_0000, false),
        5,
    );
    assert!(out.is_empty());
}

#[test]
fn srtp_lines_pass_through_unchanged() {
    let mut o = offer();
    o.media[0].transport = MediaTransport::Srtp;
    let mut a = answer(CLOUD_A, A_PORT);
    a.media[0].transport = MediaTransport::Srtp;
    let mut b = answer(CLOUD_B, B_PORT);
    b.media[0].transport = MediaTransport::Srtp;
    let call = Call::with(config(), o, [a.clone(), b]);
    assert_eq!(call.session.on_answer(0, &a), AnswerUse::Passthrough);
    let original = rtp(8, 77, 1234, 0xaaaa_0000);
    let (out, sent) = call.branch_sends(0, 8, 77, 1234, 0);
    assert_eq!(out.len(), 1);
    assert_eq!(sent, original);
    call.session.branch_failed(0, SwitchReason::TransportError);
    call.branch_sends(1, 8, 1, 1, 0);
    let (out, sent) = call.branch_sends(1, 8, 2, 161, 20);
    assert_eq!(out.len(), 1);
    assert_eq!(sent, rtp(8, 2, 161, 0xbbbb_0000));
}

#[test]
fn branch_failed_switches_at_once_and_is_idempotent() {
    let call = Call::new();
    call.branch_sends(0, 8, 1, 0, 0);
    // No other branch has media yet: nothing to switch to.
    assert!(!call.session.branch_failed(0, SwitchReason::ErrorResponse));
    assert_eq!(call.session.selected(), None);
    // The next branch to send takes over, counted with the failure's reason.
    let (out, mut p) = call.branch_sends(1, 8, 50, 8000, 20);
    assert_eq!(out.len(), 1);
    assert!(header(&mut p).0);
    assert_eq!(call.session.selected(), Some(1));
    assert_eq!(
        call.count("pointsman_media_switches_total{reason=\"error_response\"}"),
        1.0
    );
    assert!(!call.session.branch_failed(0, SwitchReason::ErrorResponse));
    assert!(!call.session.branch_failed(7, SwitchReason::ErrorResponse));

    let call = Call::new();
    call.branch_sends(0, 8, 1, 0, 0);
    call.branch_sends(1, 8, 1, 0, 0);
    assert!(call.session.branch_failed(0, SwitchReason::Cancelled));
    assert_eq!(call.session.selected(), Some(1));
    assert!(!call.session.branch_failed(0, SwitchReason::Cancelled));
}

#[test]
fn rtcp_bye_from_the_selected_branch_switches_on_that_packet() {
    let call = Call::new();
    call.branch_sends(0, 8, 1, 0, 0);
    call.branch_sends(1, 8, 1, 0, 0);
    let rtcp_at = SocketAddr::new(RELAY_CLOUD, call.branch_rtp[0].port() + 1);
    let (out, _) = call.send(
        rtcp_at,
        SocketAddr::new(CLOUD_A, A_PORT + 1),
        rtcp(0xaaaa_0000, true),
        10,
    );
    assert!(out.is_empty(), "the BYE is not forwarded");
    assert_eq!(call.session.selected(), Some(1));
    assert_eq!(
        call.count("pointsman_media_switches_total{reason=\"rtcp_bye\"}"),
        1.0
    );
    let (out, mut p) = call.branch_sends(1, 8, 2, 160, 20);
    assert_eq!(out.len(), 1);
    assert!(header(&mut p).0);
}

#[test]
fn silence_switches_on_a_standby_packet_after_the_threshold() {
    let call = Call::new();
    for i in 0..3u16 {
        call.branch_sends(0, 8, i, 160 * u32::from(i), 20 * u64::from(i));
    }
    // Last packet of branch 0 at 40 ms; threshold max(3 × 20, 60) = 60 ms.
    let (out, _) = call.branch_sends(1, 8, 0, 0, 100);
    assert!(
        out.is_empty(),
        "60 ms of silence is not more than the threshold"
    );
    let (out, _) = call.branch_sends(1, 8, 1, 160, 101);
    assert_eq!(out.len(), 1);
    assert_eq!(call.session.selected(), Some(1));
    assert_eq!(
        call.count("pointsman_media_switches_total{reason=\"silence\"}"),
        1.0
    );
    assert_eq!(call.count("pointsman_media_switch_gap_seconds_count"), 1.0);
}

#[test]
fn silence_floor_does_not_trip_on_a_40ms_hole() {
    let call = Call::new();
    // SIPp-like: 20 ms packets with a 40 ms hole (one interval of 60 ms? no: 40 ms between two
    // packets), while the standby streams every 20 ms.
    let a_times = [0, 20, 40, 80, 100, 140, 160];
    let mut b_time = 0;
    for (i, &t) in a_times.iter().enumerate() {
        while b_time < t {
            let (out, _) = call.branch_sends(1, 8, b_time as u16, 0, b_time);
            assert!(out.is_empty(), "a 40 ms hole switched at {b_time} ms");
            b_time += 10;
        }
        call.branch_sends(0, 8, i as u16, 160 * i as u32, t);
    }
    assert_eq!(call.session.selected(), Some(0));
    assert_eq!(
        call.count("pointsman_media_switches_total{reason=\"silence\"}"),
        0.0
    );
}

#[test]
fn silence_needs_three_packets_from_the_selected_branch() {
    let call = Call::new();
    call.branch_sends(0, 8, 0, 0, 0);
    call.branch_sends(0, 8, 1, 160, 20);
    let (out, _) = call.branch_sends(1, 8, 0, 0, 500);
    assert!(out.is_empty());
    assert_eq!(call.session.selected(), Some(0));
}

#[test]
fn silence_with_comfort_noise_uses_the_longer_threshold() {
    let mut a = answer(CLOUD_A, A_PORT);
    a.media[0].comfort_noise = true;
    let call = Call::with(config(), offer(), [a, answer(CLOUD_B, B_PORT)]);
    for i in 0..3u16 {
        call.branch_sends(0, 8, i, 160 * u32::from(i), 20 * u64::from(i));
    }
    let (out, _) = call.branch_sends(1, 8, 0, 0, 1040);
    assert!(out.is_empty(), "1 s of comfort-noise silence is allowed");
    let (out, _) = call.branch_sends(1, 8, 1, 160, 1041);
    assert_eq!(out.len(), 1);
    // A configured threshold replaces the default (CN aside).
    let cfg = MediaConfig {
        silence: Some(Duration::from_millis(200)),
        ..config()
    };
    let call = Call::with(
        cfg,
        offer(),
        [answer(CLOUD_A, A_PORT), answer(CLOUD_B, B_PORT)],
    );
    for i in 0..3u16 {
        call.branch_sends(0, 8, i, 160 * u32::from(i), 20 * u64::from(i));
    }
    assert!(call.branch_sends(1, 8, 0, 0, 240).0.is_empty());
    assert_eq!(call.branch_sends(1, 8, 1, 160, 241).0.len(), 1);
}

#[test]
fn codec_mismatch_answer_is_a_cold_standby() {
    let mut b = answer(CLOUD_B, B_PORT);
    b.media[0].codecs = [codec(0, "pcmu", 8000)].into_iter().collect();
    let call = Call::new();
    assert_eq!(
        call.session.on_answer(1, &b),
        AnswerUse::ColdCodecMismatch {
            heard: "pcmu/8000".into(),
            offered: "pcma/8000".into()
        }
    );
    assert_eq!(
        call.session.on_answer(0, &answer(CLOUD_A, A_PORT)),
        AnswerUse::HotStandby
    );
    assert_eq!(call.session.on_answer(9, &b), AnswerUse::Ignored);
    // Never selected before the answer, even when it is the only one with media.
    let (out, _) = call.branch_sends(1, 0, 1, 0, 0);
    assert!(out.is_empty());
    assert_eq!(call.session.selected(), None);
    // The fan-out still reaches it (media keeps its pinholes open).
    assert_eq!(call.carrier_sends(rtp(8, 1, 0, 1), 0).0.len(), 2);
}

#[test]
fn answered_selects_the_branch_and_frees_the_others() {
    let call = Call::new();
    assert_eq!(call.plane.ports_in_use(), 6);
    call.branch_sends(0, 8, 1, 0, 0);
    call.branch_sends(1, 8, 1, 0, 0);
    call.session.answered(1, call.at(10));
    assert_eq!(call.session.selected(), Some(1));
    assert_eq!(call.plane.ports_in_use(), 4);
    assert_eq!(
        call.count("pointsman_media_switches_total{reason=\"answer\"}"),
        1.0
    );
    // The standby continues the stream with the marker; branch 0's port is no one's now.
    let (out, mut p) = call.branch_sends(1, 8, 2, 160, 20);
    assert_eq!(out.len(), 1);
    assert!(header(&mut p).0);
    let (out, _) = call.branch_sends(0, 8, 2, 160, 20);
    assert!(out.is_empty());
    assert_eq!(
        call.count("pointsman_media_dropped_total{reason=\"no_session\"}"),
        1.0
    );
    // No silence switching once answered; the carrier's media goes to the answered branch only.
    assert_eq!(call.carrier_sends(rtp(8, 1, 0, 1), 30).0.len(), 1);
    assert!(!call.session.branch_failed(1, SwitchReason::ErrorResponse));
    assert_eq!(call.session.selected(), Some(1));
}

#[test]
fn inactivity_after_the_answer_is_reported_once_per_session() {
    let call = Call::new();
    let mut events = Vec::new();
    call.plane.poll(call.at(60_000), &mut events);
    assert!(events.is_empty(), "not timed before the answer");
    call.session.answered(0, call.at(1000));
    call.carrier_sends(rtp(8, 1, 0, 1), 5000);
    call.branch_sends(0, 8, 1, 0, 5900);
    call.plane.poll(call.at(5999), &mut events);
    assert!(events.is_empty());
    // The carrier's last packet at 5 s + 5 s timeout.
    call.plane.poll(call.at(10_000), &mut events);
    assert_eq!(
        events,
        [MediaEvent::Inactive {
            token: 7,
            side: MediaSide::Carrier
        }]
    );
    call.plane.poll(call.at(20_000), &mut events);
    assert_eq!(events.len(), 1, "once per session");
    call.session.close();
    assert_eq!(call.plane.sessions(), 0);
}

#[test]
fn inactivity_is_reported_for_the_answered_cloud_and_spares_a_held_leg() {
    let call = Call::new();
    call.session.answered(0, call.at(0));
    // The carrier puts the call on hold: it no longer sends; the cloud does until 2 s.
    let mut hold = offer();
    hold.media[0].direction = Direction::RecvOnly;
    call.session.on_carrier_sdp(&hold);
    call.branch_sends(0, 8, 1, 0, 2000);
    let mut events = Vec::new();
    call.plane.poll(call.at(6999), &mut events);
    assert!(events.is_empty());
    call.plane.poll(call.at(7000), &mut events);
    assert_eq!(
        events,
        [MediaEvent::Inactive {
            token: 7,
            side: MediaSide::Cloud
        }]
    );
    // c=0.0.0.0 holds as well, and the timeout can be off.
    let call = Call::new();
    let mut held = answer(CLOUD_A, A_PORT);
    held.media[0].connection = Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    call.session.on_answer(0, &held);
    call.session.answered(0, call.at(0));
    call.carrier_sends(rtp(8, 1, 0, 1), 9000);
    let mut events = Vec::new();
    call.plane.poll(call.at(9500), &mut events);
    assert!(events.is_empty());

    let (plane, _) = plane_with(config());
    let s = plane
        .open(1, &offer(), CARRIER, SessionTimeouts::default())
        .unwrap();
    s.add_branch(0, CLOUD_A).unwrap();
    s.answered(0, call.t0);
    plane.poll(call.t0 + Duration::from_secs(3600), &mut events);
    assert!(events.is_empty());
}

#[test]
fn source_latch_accepts_the_sdp_or_signalling_ip_then_only_the_latched_address() {
    let call = Call::new();
    // The carrier's media comes from another port of its IP (NAT): latched, and media to the
    // carrier follows it.
    let natted = SocketAddr::new(CARRIER, 30000);
    assert_eq!(
        call.send(call.carrier_rtp, natted, rtp(8, 1, 0, 1), 0)
            .0
            .len(),
        2
    );
    let stranger = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)), 4000);
    assert!(call
        .send(call.carrier_rtp, stranger, rtp(8, 2, 160, 1), 1)
        .0
        .is_empty());
    assert!(call
        .send(call.carrier_rtp, to_carrier(), rtp(8, 2, 160, 1), 1)
        .0
        .is_empty());
    assert_eq!(
        call.count("pointsman_media_dropped_total{reason=\"stranger\"}"),
        2.0
    );
    let (out, _) = call.branch_sends(0, 8, 1, 0, 2);
    assert_eq!(
        out[0].1, natted,
        "symmetric RTP: back to the latched address"
    );
    // A cloud sending from its signalling IP is accepted (its SDP named another).
    let mut a = answer(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 77)), A_PORT);
    a.media[0].port = A_PORT;
    let call = Call::with(config(), offer(), [a, answer(CLOUD_B, B_PORT)]);
    assert_eq!(call.branch_sends(0, 8, 1, 0, 0).0.len(), 1);
}

#[test]
fn strict_source_accepts_only_the_sdp_address() {
    let cfg = MediaConfig {
        strict_source: true,
        ..config()
    };
    let call = Call::with(
        cfg,
        offer(),
        [answer(CLOUD_A, A_PORT), answer(CLOUD_B, B_PORT)],
    );
    assert!(call
        .send(
            call.carrier_rtp,
            SocketAddr::new(CARRIER, 30000),
            rtp(8, 1, 0, 1),
            0
        )
        .0
        .is_empty());
    assert_eq!(call.carrier_sends(rtp(8, 1, 0, 1), 0).0.len(), 2);
    assert_eq!(
        call.count("pointsman_media_dropped_total{reason=\"stranger\"}"),
        1.0
    );
}

#[test]
fn malformed_and_sessionless_packets_are_dropped_by_reason() {
    let call = Call::new();
    assert!(call
        .send(call.carrier_rtp, to_carrier(), vec![0x80, 8, 0], 0)
        .0
        .is_empty());
    let mut v1 = rtp(8, 1, 0, 1);
    v1[0] = 0x40;
    assert!(call
        .send(call.carrier_rtp, to_carrier(), v1, 0)
        .0
        .is_empty());
    let mut csrc = rtp(8, 1, 0, 1);
    csrc.truncate(20);
    csrc[0] = 0x8f;
    assert!(call
        .send(call.carrier_rtp, to_carrier(), csrc, 0)
        .0
        .is_empty());
    let mut bad_rtcp = rtcp(1, false);
    bad_rtcp[3] = 200;
    assert!(call
        .send(call.carrier_rtp, to_carrier(), bad_rtcp, 0)
        .0
        .is_empty());
    assert_eq!(
        call.count("pointsman_media_dropped_total{reason=\"malformed\"}"),
        4.0
    );
    // Unknown socket ids and closed sessions.
    let mut out = Forwards::new();
    call.plane.on_packet(
        SocketId(u32::MAX),
        to_carrier(),
        &mut rtp(8, 1, 0, 1),
        call.t0,
        &mut out,
    );
    assert!(out.is_empty());
    call.session.close();
    call.session.close();
    assert!(call.carrier_sends(rtp(8, 1, 0, 1), 0).0.is_empty());
    assert_eq!(
        call.count("pointsman_media_dropped_total{reason=\"no_session\"}"),
        2.0
    );
    assert_eq!(call.plane.ports_in_use(), 0);
}

#[test]
fn ports_return_after_opens_answers_failures_and_closes() {
    let (plane, metrics) = plane_with(config());
    let t0 = Instant::now();
    let two_lines = sdp(vec![
        line(CARRIER, 4000, &[pcma()]),
        line(CARRIER, 0, &[pcma()]),
        line(CARRIER, 4002, &[codec(96, "h264", 90000)]),
    ]);
    let mut sessions = Vec::new();
    for token in 0..10u64 {
        let s = plane
            .open(token, &two_lines, CARRIER, SessionTimeouts::default())
            .unwrap();
        assert_eq!(
            s.carrier_endpoints()
                .ports
                .iter()
                .filter(|p| p.is_some())
                .count(),
            2
        );
        assert_eq!(s.carrier_endpoints().ports[1], None);
        for b in 0..2 {
            let ep = s.add_branch(b, CLOUD_A).unwrap();
            assert_eq!(ep.address, RELAY_CLOUD);
        }
        match token % 3 {
            0 => s.answered(1, t0),
            1 => {
                s.branch_failed(0, SwitchReason::ErrorResponse);
            }
            _ => s.close(),
        }
        sessions.push(s);
    }
    assert_eq!(plane.sessions(), 7, "tokens 2, 5 and 8 closed at once");
    assert!(plane.ports_in_use() > 0);
    for s in &sessions {
        s.close();
    }
    assert_eq!(plane.ports_in_use(), 0);
    assert_eq!(plane.sessions(), 0);
    assert_eq!(metric(&metrics, "pointsman_media_ports_in_use"), 0.0);
    assert_eq!(metric(&metrics, "pointsman_media_sessions"), 0.0);
    assert_eq!(sessions[0].add_branch(5, CLOUD_A), Err(MediaError::Closed));
}

#[test]
fn pool_exhaustion_is_no_ports_and_leaks_nothing() {
    let cfg = MediaConfig {
        port_min: 30000,
        port_max: 30005,
        carrier_ip: RELAY_CLOUD,
        ..config()
    };
    let (plane, metrics) = plane_with(cfg);
    // One pool for both sides (same IP): 3 pairs.
    assert_eq!(plane.sockets().len(), 6);
    let t0 = Instant::now();
    let s = plane
        .open(1, &offer(), CARRIER, SessionTimeouts::default())
        .unwrap();
    s.add_branch(0, CLOUD_A).unwrap();
    s.add_branch(1, CLOUD_B).unwrap();
    assert_eq!(s.add_branch(2, CLOUD_B), Err(MediaError::NoPorts));
    assert_eq!(
        plane
            .open(2, &offer(), CARRIER, SessionTimeouts::default())
            .unwrap_err(),
        MediaError::NoPorts
    );
    // A two-line offer that gets one pair back frees it.
    s.answered(0, t0);
    let two = sdp(vec![
        line(CARRIER, 4000, &[pcma()]),
        line(CARRIER, 4002, &[pcma()]),
    ]);
    assert_eq!(
        plane
            .open(3, &two, CARRIER, SessionTimeouts::default())
            .unwrap_err(),
        MediaError::NoPorts
    );
    assert_eq!(plane.ports_in_use(), 4);
    assert_eq!(metric(&metrics, "pointsman_media_no_ports_total"), 3.0);
    assert_eq!(
        plane
            .open(
                4,
                &sdp(vec![line(CARRIER, 0, &[pcma()])]),
                CARRIER,
                SessionTimeouts::default(),
            )
            .unwrap_err(),
        MediaError::NoMedia
    );
    s.close();
    assert_eq!(plane.ports_in_use(), 0);
}

#[test]
fn sockets_are_dense_and_cover_both_side_ips() {
    let (plane, _) = plane_with(MediaConfig {
        port_min: 40001,
        port_max: 40010,
        ..config()
    });
    let sockets = plane.sockets();
    assert_eq!(sockets.len(), 16);
    for (i, (id, _)) in sockets.iter().enumerate() {
        assert_eq!(id.0 as usize, i);
    }
    assert_eq!(sockets[0].1, SocketAddr::new(RELAY_CARRIER, 40002));
    assert_eq!(sockets[8].1, SocketAddr::new(RELAY_CLOUD, 40002));
    fn send_sync<T: Send + Sync>() {}
    send_sync::<MediaPlane>();
    send_sync::<MediaSession>();
}

#[test]
fn rtcp_mux_lines_carry_rtcp_on_the_rtp_ports() {
    let mut o = offer();
    o.media[0].rtcp_mux = true;
    let mut a = answer(CLOUD_A, A_PORT);
    a.media[0].rtcp_mux = true;
    let call = Call::with(config(), o, [a, answer(CLOUD_B, B_PORT)]);
    // Carrier RTCP on the RTP port: to A's RTP port (mux), to B's RTCP port (no mux).
    let (out, _) = call.carrier_sends(rtcp(1, false), 0);
    let to: Vec<_> = out
        .iter()
        .map(|&(s, a)| (call.local_addr(s).port(), a.port()))
        .collect();
    assert_eq!(
        to,
        [
            (call.branch_rtp[0].port(), A_PORT),
            (call.branch_rtp[1].port() + 1, B_PORT + 1)
        ]
    );
    call.branch_sends(0, 8, 1, 0, 0);
    let (out, _) = call.send(
        call.branch_rtp[0],
        SocketAddr::new(CLOUD_A, A_PORT),
        rtcp(0xaaaa_0000, false),
        1,
    );
    assert_eq!(out[0], (call.socket(call.carrier_rtp), to_carrier()));
}

#[test]
fn rtcp_after_a_switch_does_not_start_the_new_sources_stream() {
    let call = Call::new();
    call.branch_sends(0, 8, 100, 16_000, 0);
    call.branch_sends(1, 8, 7, 700, 0);
    assert!(call.session.branch_failed(0, SwitchReason::Cancelled));
    // Branch 1's RTCP comes first: forwarded with the output SSRC, but the stream's source is
    // still branch 0's until branch 1's media arrives.
    let rtcp_at = SocketAddr::new(RELAY_CLOUD, call.branch_rtp[1].port() + 1);
    let (out, _) = call.send(
        rtcp_at,
        SocketAddr::new(CLOUD_B, B_PORT + 1),
        rtcp(0xbbbb_0000, false),
        10,
    );
    assert_eq!(out.len(), 1);
    let (_, mut p) = call.branch_sends(1, 8, 8, 860, 20);
    let (marker, _, seq, ts, _) = header(&mut p);
    assert!(marker);
    assert_eq!((seq, ts), (101, 16_160));
}

#[test]
fn srtp_packets_are_checked_only_by_their_clear_headers() {
    let mut o = offer();
    o.media[0].transport = MediaTransport::Srtp;
    let mut a = answer(CLOUD_A, A_PORT);
    a.media[0].transport = MediaTransport::Srtp;
    let call = Call::with(config(), o, [a, answer(CLOUD_B, B_PORT)]);
    // The padding bit with an "encrypted" last byte that would not fit as a padding count.
    let mut padded = rtp(8, 1, 0, 0xaaaa_0000);
    padded[0] |= 0x20;
    *padded.last_mut().unwrap() = 0xff;
    let (out, sent) = call.send(
        call.branch_rtp[0],
        SocketAddr::new(CLOUD_A, A_PORT),
        padded.clone(),
        0,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(sent, padded);
    // SRTCP: an SR header, encrypted bytes, the E flag + index and a 10-byte auth tag.
    let mut srtcp = vec![0x80, 200, 0, 6, 0xaa, 0xaa, 0, 0];
    srtcp.extend_from_slice(&[0x5a; 20 + 4 + 10]);
    let rtcp_at = SocketAddr::new(RELAY_CLOUD, call.branch_rtp[0].port() + 1);
    let (out, sent) = call.send(
        rtcp_at,
        SocketAddr::new(CLOUD_A, A_PORT + 1),
        srtcp.clone(),
        1,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(sent, srtcp);
}

#[test]
fn branch_failed_after_the_answer_changes_nothing() {
    let call = Call::new();
    call.branch_sends(0, 8, 1, 0, 0);
    call.session.answered(0, call.at(10));
    assert!(!call.session.branch_failed(0, SwitchReason::TransportError));
    assert_eq!(call.branch_sends(0, 8, 2, 160, 30).0.len(), 1);
    assert_eq!(call.carrier_sends(rtp(8, 1, 0, 1), 30).0.len(), 1);
}

#[test]
fn silence_threshold_is_three_ptimes_above_the_floor() {
    // ptime 30 in the offer only: 3 × 30 = 90 ms.
    let mut o = offer();
    o.media[0].ptime_ms = Some(30);
    let call = Call::with(
        config(),
        o,
        [answer(CLOUD_A, A_PORT), answer(CLOUD_B, B_PORT)],
    );
    for i in 0..3u16 {
        call.branch_sends(0, 8, i, 240 * u32::from(i), 30 * u64::from(i));
    }
    assert!(call.branch_sends(1, 8, 0, 0, 150).0.is_empty(), "90 ms");
    assert_eq!(call.branch_sends(1, 8, 1, 240, 151).0.len(), 1);
}

#[test]
fn arbitrary_datagrams_on_every_socket_never_panic_or_change_length() {
    let call = Call::new();
    call.branch_sends(0, 8, 1, 0, 0);
    let mut seed = 0x1234_5678_u64;
    let mut next = || {
        seed = splitmix(seed);
        seed
    };
    let plus_one = |a: SocketAddr| SocketAddr::new(a.ip(), a.port() + 1);
    let sockets: Vec<SocketId> = [
        call.carrier_rtp,
        plus_one(call.carrier_rtp),
        call.branch_rtp[0],
        plus_one(call.branch_rtp[0]),
        call.branch_rtp[1],
        plus_one(call.branch_rtp[1]),
        SocketAddr::new(RELAY_CLOUD, 20090),
        SocketAddr::new(RELAY_CARRIER, 20091),
    ]
    .into_iter()
    .map(|a| call.socket(a))
    .collect();
    let sources = [
        to_carrier(),
        SocketAddr::new(CLOUD_A, A_PORT),
        SocketAddr::new(CLOUD_A, A_PORT + 1),
        SocketAddr::new(CLOUD_B, B_PORT),
    ];
    for i in 0..20_000u64 {
        let len = (next() % 80) as usize;
        let mut packet: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Half of them look like RTP/RTCP version 2, to get past the first check.
        if i % 2 == 0 {
            if let Some(b) = packet.first_mut() {
                *b = 0x80 | (*b & 0x3f);
            }
        }
        let id = sockets[(next() % 8) as usize];
        let from = sources[(next() % 4) as usize];
        let mut out = Forwards::new();
        call.plane
            .on_packet(id, from, &mut packet, call.at(i), &mut out);
        assert_eq!(packet.len(), len);
    }
}

/// An offload that records what the plane hands it and reports counters the test sets.
#[derive(Debug, Default)]
struct FakeOffload {
    streams: Mutex<HashMap<SocketAddr, (offload::HandedStream, offload::HandedCounters)>>,
    log: Mutex<Vec<(&'static str, SocketAddr)>>,
    refuse: bool,
}

impl offload::StreamOffload for FakeOffload {
    fn install(&self, at: SocketAddr, stream: &offload::HandedStream) -> bool {
        if self.refuse {
            return false;
        }
        lock(&self.log).push(("install", at));
        lock(&self.streams).insert(at, (*stream, offload::HandedCounters::default()));
        true
    }
    fn remove(&self, at: SocketAddr) -> Option<offload::HandedCounters> {
        lock(&self.log).push(("remove", at));
        lock(&self.streams).remove(&at).map(|(_, c)| c)
    }
    fn counters(&self, at: SocketAddr) -> Option<offload::HandedCounters> {
        lock(&self.streams).get(&at).map(|(_, c)| *c)
    }
}

impl FakeOffload {
    fn stream(&self, at: SocketAddr) -> Option<offload::HandedStream> {
        lock(&self.streams).get(&at).map(|(s, _)| *s)
    }
    /// The forwarder relayed `packets` of 172 bytes on `at`, the last `idle` ago.
    fn relayed(&self, at: SocketAddr, packets: u64, idle: Duration) {
        if let Some((_, c)) = lock(&self.streams).get_mut(&at) {
            *c = offload::HandedCounters {
                packets,
                bytes: packets * 172,
                idle: Some(idle),
            };
        }
    }
    fn log(&self) -> Vec<(&'static str, SocketAddr)> {
        lock(&self.log).clone()
    }
}

impl Call {
    fn handing_over(refuse: bool) -> (Call, Arc<FakeOffload>) {
        let call = Call::new();
        let fake = Arc::new(FakeOffload {
            refuse,
            ..FakeOffload::default()
        });
        assert!(call.plane.hand_over_to(fake.clone()));
        (call, fake)
    }
}

/// What a handed-over rewrite makes of a packet's sequence number, timestamp and SSRC.
fn rewritten(r: &offload::RtpRewrite, seq: u16, ts: u32) -> (u16, u32, u32) {
    (
        seq.wrapping_add(r.seq_offset),
        ts.wrapping_add(r.ts_offset),
        r.ssrc,
    )
}

#[test]
fn an_answered_calls_streams_are_handed_over_with_the_rewrite_the_plane_applies() {
    let (call, fake) = Call::handing_over(false);
    // Early media: branch 0 heard, branch 1 a standby; nothing is handed over before the answer.
    for i in 0..5u16 {
        call.carrier_sends(
            rtp(8, 100 + i, 16_000 + 160 * u32::from(i), 0x1234),
            20 * u64::from(i),
        );
        call.branch_sends(
            0,
            8,
            500 + i,
            90_000 + 160 * u32::from(i),
            20 * u64::from(i),
        );
        call.branch_sends(
            1,
            8,
            7_000 + i,
            3_000 + 160 * u32::from(i),
            20 * u64::from(i),
        );
    }
    assert!(fake.log().is_empty(), "early media stays with the plane");

    // The standby answers: its first packet starts the carrier's stream anew (marker, new
    // offsets) and, settled, its stream goes to the offload with exactly those offsets.
    call.session.answered(1, call.at(100));
    let (out, mut heard) = call.branch_sends(1, 8, 7_005, 3_800, 100);
    assert_eq!(out.len(), 1);
    let (marker, pt, seq, ts, ssrc) = header(&mut heard);
    assert!(marker);
    let handed = fake
        .stream(call.branch_rtp[1])
        .expect("the answered cloud's stream");
    assert_eq!(handed.peer, SocketAddr::new(CLOUD_B, B_PORT));
    assert_eq!(handed.out_from, call.carrier_rtp);
    assert_eq!(handed.out_to, to_carrier());
    assert!(handed.rtcp_to_plane);
    let rewrite = handed.rewrite.expect("normalised");
    assert_eq!(rewrite.payload_types[usize::from(pt)], pt);
    assert_eq!(
        rewritten(&rewrite, 7_006, 3_960),
        (seq.wrapping_add(1), ts.wrapping_add(160), ssrc),
        "the next packet continues the stream the plane started"
    );
    // What the plane itself would make of that packet is the same.
    let (_, mut next) = call.branch_sends(1, 8, 7_006, 3_960, 120);
    let (marker, _, seq2, ts2, ssrc2) = header(&mut next);
    assert_eq!(
        (marker, (seq2, ts2, ssrc2)),
        (false, rewritten(&rewrite, 7_006, 3_960))
    );

    // The carrier's stream goes to the answered cloud only, unchanged.
    call.carrier_sends(rtp(8, 105, 16_800, 0x1234), 100);
    let carrier = fake.stream(call.carrier_rtp).expect("the carrier's stream");
    assert_eq!(
        carrier,
        offload::HandedStream {
            peer: to_carrier(),
            out_from: call.branch_rtp[1],
            out_to: SocketAddr::new(CLOUD_B, B_PORT),
            rewrite: None,
            rtcp_to_plane: true,
        }
    );
    call.carrier_sends(rtp(8, 106, 16_960, 0x1234), 120);
    assert_eq!(fake.log().len(), 2, "each stream once");
    assert_eq!(call.count("pointsman_media_handed_over_streams"), 2.0);
    // RTCP stays with the plane.
    let rtcp_at = SocketAddr::new(RELAY_CARRIER, call.carrier_rtp.port() + 1);
    call.send(
        rtcp_at,
        SocketAddr::new(CARRIER, CARRIER_PORT + 1),
        rtcp(0x1234, false),
        130,
    );
    assert_eq!(fake.log().len(), 2);
}

#[test]
fn handed_over_streams_are_taken_back_before_a_new_sdp_and_before_their_ports_return() {
    let (call, fake) = Call::handing_over(false);
    call.session.answered(0, call.at(0));
    call.branch_sends(0, 8, 1, 160, 10);
    call.carrier_sends(rtp(8, 1, 160, 0x1234), 10);
    assert_eq!(fake.log().len(), 2);

    // A re-INVITE from the carrier (hold, a new address): both come back to the plane...
    let mut hold = offer();
    hold.media[0].direction = Direction::SendOnly;
    call.session.on_carrier_sdp(&hold);
    assert!(lock(&fake.streams).is_empty());
    assert_eq!(call.count("pointsman_media_handed_over_streams"), 0.0);
    // ...and go again once a packet shows them settled.
    call.carrier_sends(rtp(8, 2, 320, 0x1234), 30);
    assert!(fake.stream(call.carrier_rtp).is_some());
    // The cloud's new answer (its re-INVITE's) takes them back as well.
    call.branch_sends(0, 8, 2, 320, 30);
    call.session.on_answer(0, &answer(CLOUD_A, A_PORT + 2));
    assert!(lock(&fake.streams).is_empty());
    call.branch_sends(0, 8, 3, 480, 50);
    call.carrier_sends(rtp(8, 3, 480, 0x1234), 50);
    // (The new SDP unlatched the line; the cloud's packet latched it again, from where it
    // came.)
    assert_eq!(
        fake.stream(call.branch_rtp[0]).map(|s| s.peer),
        Some(SocketAddr::new(CLOUD_A, A_PORT))
    );

    // The call ends: taken back before the ports return (the log ends with the removals, and
    // every port is free after).
    let before = fake.log().len();
    call.session.close();
    let log = fake.log();
    assert_eq!(log.len(), before + 2);
    assert!(log[before..].iter().all(|(what, _)| *what == "remove"));
    assert!(lock(&fake.streams).is_empty());
    assert_eq!(call.plane.ports_in_use(), 0);
    assert_eq!(call.count("pointsman_media_handed_over_streams"), 0.0);
}

#[test]
fn inactivity_and_the_packet_counts_include_what_the_offload_relayed() {
    let (call, fake) = Call::handing_over(false);
    call.session.answered(0, call.at(0));
    call.carrier_sends(rtp(8, 1, 160, 0x1234), 100);
    call.branch_sends(0, 8, 1, 160, 100);
    let to_cloud = "pointsman_media_packets_total{direction=\"to_cloud\"}";
    let before = call.count(to_cloud);
    // The plane sees nothing more; the offload relays both streams until 4 s.
    let mut events = Vec::new();
    for ms in [1_000u64, 2_000, 3_000, 4_000] {
        let packets = ms / 20;
        fake.relayed(call.carrier_rtp, packets, Duration::ZERO);
        fake.relayed(call.branch_rtp[0], packets, Duration::ZERO);
        call.plane.poll(call.at(ms), &mut events);
    }
    assert_eq!(
        call.count(to_cloud),
        before + 200.0,
        "the offload's packets are counted"
    );
    // 5 s after the plane's last packet, but 1 s after the offload's: no teardown.
    call.plane.poll(call.at(6_000), &mut events);
    assert!(events.is_empty(), "{events:?}");
    // Both go silent at 4 s: 5 s later the call is reported inactive.
    call.plane.poll(call.at(8_999), &mut events);
    assert!(events.is_empty());
    call.plane.poll(call.at(9_000), &mut events);
    assert_eq!(
        events,
        [MediaEvent::Inactive {
            token: 7,
            side: MediaSide::Carrier
        }]
    );
}

#[test]
fn an_offload_that_refuses_leaves_the_stream_with_the_plane() {
    let (call, fake) = Call::handing_over(true);
    call.session.answered(0, call.at(0));
    for i in 0..3u16 {
        let (out, _) = call.carrier_sends(rtp(8, i, 160 * u32::from(i), 0x1234), u64::from(i));
        assert_eq!(out.len(), 1, "relayed by the plane");
        let (out, _) = call.branch_sends(0, 8, i, 160 * u32::from(i), u64::from(i));
        assert_eq!(out.len(), 1, "relayed by the plane");
    }
    assert!(lock(&fake.streams).is_empty());
    assert_eq!(call.count("pointsman_media_handed_over_streams"), 0.0);
    call.session.close();
}

#[test]
fn a_refused_stream_is_not_offered_again_on_every_packet() {
    #[derive(Debug, Default)]
    struct Counting(std::sync::atomic::AtomicUsize);
    impl offload::StreamOffload for Counting {
        fn install(&self, _: SocketAddr, _: &offload::HandedStream) -> bool {
            self.0.fetch_add(1, Ordering::Relaxed);
            false
        }
        fn remove(&self, _: SocketAddr) -> Option<offload::HandedCounters> {
            None
        }
        fn counters(&self, _: SocketAddr) -> Option<offload::HandedCounters> {
            None
        }
    }
    let call = Call::new();
    let offload = Arc::new(Counting::default());
    call.plane.hand_over_to(offload.clone());
    call.session.answered(0, call.at(0));
    for i in 0..50u16 {
        call.carrier_sends(rtp(8, i, 160 * u32::from(i), 0x1234), u64::from(i));
        call.branch_sends(0, 8, i, 160 * u32::from(i), u64::from(i));
    }
    assert_eq!(offload.0.load(Ordering::Relaxed), 1, "asked once");
    // A new SDP is a new chance.
    call.session.on_carrier_sdp(&offer());
    call.carrier_sends(rtp(8, 50, 8_000, 0x1234), 60);
    assert_eq!(offload.0.load(Ordering::Relaxed), 2);
}
