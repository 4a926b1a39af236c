//! Anchored calls through the core and the real media plane, deterministically: the SDP of
//! every message pointed at the relay, signalling that moves the heard branch at once, the
//! answer, media inactivity ending the call with BYE both ways, and every relay port back once
//! calls end however they end. Packets are handed to the plane with the harness's clock.
//!
//! A child of `tests` for its harness; it must not change that harness.

use super::*;
use crate::media::{Forwards, MediaConfig, MediaMetrics, MediaPlane};
use std::net::IpAddr;

const RELAY: &str = "192.0.2.50";
/// Where each cloud says it plays its media from (its SDP answers).
const PRIMARY_MEDIA: &str = "127.0.0.1:41000";
const SECONDARY_MEDIA: &str = "127.0.0.1:42000";
/// Where the carrier's offer says it takes media.
const CARRIER_MEDIA: &str = "10.0.0.1:40000";

/// The hot-hot rules with media anchored, on a core with a relay of `pairs` port pairs.
fn anchored_with(route_extra: &str, pairs: u16) -> (Harness, Arc<MediaPlane>) {
    anchored_rules(
        &hot_hot(&format!(
            "tiers = [\"clouds\"]\nmedia = \"relay\"\n{route_extra}"
        )),
        pairs,
    )
}

/// `rules` on a core with a relay of `pairs` port pairs.
fn anchored_rules(rules: &str, pairs: u16) -> (Harness, Arc<MediaPlane>) {
    let h = Harness::rules(rules);
    let relay: IpAddr = RELAY.parse().unwrap();
    let plane = Arc::new(MediaPlane::new(
        MediaConfig {
            carrier_ip: relay,
            cloud_ip: relay,
            port_min: 30000,
            port_max: 30000 + 2 * pairs - 1,
            silence: None,
            silence_comfort_noise: Duration::from_secs(1),
            strict_source: false,
        },
        MediaMetrics::noop(),
    ));
    assert!(h.core.set_media(plane.clone()));
    (h, plane)
}

fn anchored(route_extra: &str) -> (Harness, Arc<MediaPlane>) {
    anchored_with(route_extra, 50)
}

fn sdp(media: &str) -> String {
    let (ip, port) = media.split_once(':').unwrap();
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\na=sendrecv\r\n"
    )
}

/// The carrier's INVITE with an early offer.
fn invite_with_offer(call_id: &str) -> Vec<u8> {
    let body = sdp(CARRIER_MEDIA);
    let plain = invite(call_id);
    let text = String::from_utf8(plain).unwrap();
    let head = text.split("Content-Length:").next().unwrap();
    format!("{head}Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

/// A cloud's answer to `request` (an INVITE pointsman forwarded) with an SDP answer.
fn answer_with_sdp(request: &[u8], code: u16, tag: &str, media: &str) -> Vec<u8> {
    let body = sdp(media);
    let answer = crate::testing::Answer {
        to_tag: tag,
        sdp: Some(&body),
        ..crate::testing::Answer::default()
    };
    crate::testing::respond(request, code, &answer).unwrap()
}

/// The media address an SDP in `msg` names (its `c=` and first `m=` port).
fn media_of(msg: &[u8]) -> SocketAddr {
    let text = String::from_utf8_lossy(msg);
    let body = text.split("\r\n\r\n").nth(1).unwrap();
    let ip = body
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))
        .unwrap()
        .trim();
    let port = body
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split(' ').next())
        .unwrap();
    format!("{ip}:{port}").parse().unwrap()
}

/// The Content-Length a message says, and the length its body has.
fn lengths(msg: &[u8]) -> (usize, usize) {
    let said: usize = header(msg, "Content-Length").unwrap().parse().unwrap();
    let text = String::from_utf8_lossy(msg);
    (said, text.split_once("\r\n\r\n").unwrap().1.len())
}

/// An RTP packet whose payload's first byte says who sent it.
fn rtp(seq: u16, ssrc: u32, source: u8) -> Vec<u8> {
    let mut p = vec![0x80, 8];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.push(source);
    p.extend_from_slice(&[0xd5; 159]);
    p
}

/// Hands `packet` from `from` to the relay socket `to`; where it goes next.
fn deliver(
    plane: &MediaPlane,
    to: SocketAddr,
    from: &str,
    packet: &[u8],
    now: Instant,
) -> Forwards {
    let (id, _) = plane
        .sockets()
        .into_iter()
        .find(|(_, a)| *a == to)
        .unwrap_or_else(|| panic!("no relay socket {to}"));
    let mut buf = packet.to_vec();
    let mut out = Forwards::new();
    plane.on_packet(id, addr(from), &mut buf, now, &mut out);
    out
}

/// Which cloud's packet the carrier hears when both play one: 1 primary, 2 secondary, 0 none.
fn heard(plane: &MediaPlane, relay: (SocketAddr, SocketAddr), seq: u16, now: Instant) -> u8 {
    let to_carrier = |fwd: Forwards| fwd.iter().any(|(_, to)| *to == addr(CARRIER_MEDIA));
    let p = to_carrier(deliver(
        plane,
        relay.0,
        PRIMARY_MEDIA,
        &rtp(seq, 0x1111, 1),
        now,
    ));
    let s = to_carrier(deliver(
        plane,
        relay.1,
        SECONDARY_MEDIA,
        &rtp(seq, 0x2222, 2),
        now,
    ));
    match (p, s) {
        (true, false) => 1,
        (false, true) => 2,
        (false, false) => 0,
        (true, true) => panic!("the carrier heard both clouds at once"),
    }
}

/// Both clouds answered 183 with SDP; returns the relay ports each cloud sends to.
fn both_early(h: &mut Harness, call_id: &str) -> (SocketAddr, SocketAddr) {
    h.receive(CARRIER, &invite_with_offer(call_id));
    let to_primary = h.last_to(PRIMARY, "INVITE");
    let to_secondary = h.last_to(SECONDARY, "INVITE");
    h.receive(
        PRIMARY,
        &answer_with_sdp(&to_primary, 183, "p", PRIMARY_MEDIA),
    );
    h.receive(
        SECONDARY,
        &answer_with_sdp(&to_secondary, 183, "s", SECONDARY_MEDIA),
    );
    (media_of(&to_primary), media_of(&to_secondary))
}

#[test]
fn every_sdp_of_an_anchored_call_points_at_the_relay() {
    let (mut h, _plane) = anchored("");
    let (primary_relay, secondary_relay) = both_early(&mut h, "anchor-sdp");
    let relay: IpAddr = RELAY.parse().unwrap();
    assert_eq!(primary_relay.ip(), relay);
    assert_eq!(secondary_relay.ip(), relay);
    assert_ne!(
        primary_relay, secondary_relay,
        "each branch has its own relay port"
    );
    let early: Vec<Bytes> = h
        .sent
        .iter()
        .filter(|(a, l, _)| *a == addr(CARRIER) && l.starts_with("SIP/2.0 183"))
        .map(|(_, _, b)| b.clone())
        .collect();
    assert_eq!(
        early.len(),
        2,
        "both early dialogs reach the carrier (§16.7)"
    );
    let carrier_relay = media_of(&early[0]);
    assert_eq!(carrier_relay.ip(), relay);
    assert_eq!(
        media_of(&early[1]),
        carrier_relay,
        "one carrier-facing endpoint whichever early dialog the carrier follows"
    );
    for msg in [&early[0], &early[1], &h.last_to(PRIMARY, "INVITE")] {
        let (said, body) = lengths(msg);
        assert_eq!(said, body, "Content-Length follows the rewritten SDP");
        let text = String::from_utf8_lossy(msg);
        assert!(
            text.contains("a=rtpmap:101 telephone-event/8000\r\n"),
            "{text}"
        );
    }
}

#[test]
fn an_error_on_the_heard_branch_switches_the_relay_at_once() {
    let (mut h, plane) = anchored("");
    let relay = both_early(&mut h, "anchor-error");
    let now = h.now;
    assert_eq!(
        heard(&plane, relay, 1, now),
        1,
        "the preferred cloud is heard"
    );
    assert_eq!(heard(&plane, relay, 2, now), 1);
    let to_primary = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &response_to(&to_primary, 503, "p"));
    assert_eq!(
        heard(&plane, relay, 3, h.now),
        2,
        "the next packet is the other cloud's, no timer in between"
    );
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 5"), 0, "the call goes on");
}

#[test]
fn a_199_on_the_heard_branch_switches_the_relay_at_once() {
    let (mut h, plane) = anchored("");
    let relay = both_early(&mut h, "anchor-199");
    assert_eq!(heard(&plane, relay, 1, h.now), 1);
    let to_primary = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &response_to(&to_primary, 199, "p"));
    assert_eq!(heard(&plane, relay, 2, h.now), 2);
}

#[test]
fn the_answer_on_the_standby_selects_it_and_frees_the_other_ports() {
    let (mut h, plane) = anchored("");
    let relay = both_early(&mut h, "anchor-answer");
    assert_eq!(heard(&plane, relay, 1, h.now), 1);
    assert_eq!(
        plane.ports_in_use(),
        6,
        "carrier, primary, secondary: a pair each"
    );
    let to_secondary = h.last_to(SECONDARY, "INVITE");
    h.receive(
        SECONDARY,
        &answer_with_sdp(&to_secondary, 200, "s", SECONDARY_MEDIA),
    );
    let ok = h.last_to(CARRIER, "SIP/2.0 200");
    assert_eq!(media_of(&ok).ip(), RELAY.parse::<IpAddr>().unwrap());
    assert_eq!(
        heard(&plane, relay, 2, h.now),
        2,
        "the answering cloud is heard"
    );
    assert_eq!(
        h.count_to(PRIMARY, "CANCEL"),
        1,
        "the other branch is cancelled"
    );
    assert_eq!(plane.ports_in_use(), 4, "the loser's pair is back");
}

#[test]
fn media_inactivity_ends_the_answered_call_with_bye_both_ways() {
    let (mut h, plane) = anchored("media_timeout = \"5s\"");
    let relay = both_early(&mut h, "anchor-idle");
    let to_primary = h.last_to(PRIMARY, "INVITE");
    h.receive(
        PRIMARY,
        &answer_with_sdp(&to_primary, 200, "p", PRIMARY_MEDIA),
    );
    let t0 = h.now;
    assert_eq!(heard(&plane, relay, 1, t0), 1);
    deliver(
        &plane,
        media_of(&h.last_to(CARRIER, "SIP/2.0 200")),
        CARRIER_MEDIA,
        &rtp(1, 7, 9),
        t0,
    );
    h.advance(Duration::from_secs(4));
    let mut events = Vec::new();
    plane.poll(h.now, &mut events);
    assert!(events.is_empty(), "{events:?}");
    h.advance(Duration::from_secs(2));
    plane.poll(h.now, &mut events);
    assert_eq!(events.len(), 1, "{events:?}");
    h.clear_sent();
    for event in events {
        h.drive(|core, now, out| core.on_media_event(event, now, out));
    }
    for to in [CARRIER, PRIMARY] {
        let bye = h.last_to(to, "BYE");
        let text = String::from_utf8_lossy(&bye);
        assert!(text.contains("Reason: Q.850;cause=102"), "{text}");
        assert!(text.contains("Call-ID: anchor-idle\r\n"), "{text}");
    }
    let to_carrier = String::from_utf8_lossy(&h.last_to(CARRIER, "BYE")).to_string();
    assert!(
        to_carrier.starts_with("BYE sip:+15550000@10.0.0.1:5060 "),
        "{to_carrier}"
    );
    assert!(
        to_carrier.contains("To: \"Carrier\" <sip:+15550000@10.0.0.1>;tag=c1\r\n"),
        "{to_carrier}"
    );
    assert!(
        to_carrier.contains(";tag=p\r\n"),
        "From carries the callee's tag: {to_carrier}"
    );
    assert_eq!(plane.ports_in_use(), 0);
    assert_eq!(h.core.answered_calls(), 0);
}

#[test]
fn the_answering_destinations_media_timeout_overrides_the_routes() {
    let rules = hot_hot("tiers = [\"clouds\"]\nmedia = \"relay\"\nmedia_timeout = \"30s\"")
        .replace(
            "name = \"primary\"\naddress = \"127.0.0.1:5070\"",
            "name = \"primary\"\naddress = \"127.0.0.1:5070\"\nmedia_timeout = \"2s\"",
        );
    let (mut h, plane) = anchored_rules(&rules, 50);
    both_early(&mut h, "dest-timeout");
    let inv = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &answer_with_sdp(&inv, 200, "p", PRIMARY_MEDIA));
    h.advance(Duration::from_secs(3));
    let mut events = Vec::new();
    plane.poll(h.now, &mut events);
    assert_eq!(events.len(), 1, "2 s, not the route's 30 s: {events:?}");
}

#[test]
fn every_relay_port_returns_however_calls_end() {
    let (mut h, plane) = anchored("");
    // Both clouds reject.
    let relay = both_early(&mut h, "end-rejected");
    let _ = relay;
    for (to, tag) in [(PRIMARY, "p"), (SECONDARY, "s")] {
        let inv = h.last_to(to, "INVITE");
        h.receive(to, &response_to(&inv, 486, tag));
    }
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 486"), 1);
    assert_eq!(plane.ports_in_use(), 0, "after rejections");
    // The carrier cancels while both play early media.
    h.clear_sent();
    both_early(&mut h, "end-cancelled");
    let invite = invite_with_offer("end-cancelled");
    let cancel = crate::originate::cancel(&crate::originate::rescan(&invite).unwrap(), "");
    h.receive(CARRIER, &cancel);
    assert_eq!(h.count_to(CARRIER, "SIP/2.0 487"), 1);
    assert_eq!(plane.ports_in_use(), 0, "after the caller's CANCEL");
    // Neither cloud says anything: both time out.
    h.clear_sent();
    h.receive(CARRIER, &invite_with_offer("end-silent"));
    h.advance(Duration::from_secs(40));
    assert_eq!(plane.ports_in_use(), 0, "after timeouts");
    // Answered, then hung up by the carrier.
    h.clear_sent();
    both_early(&mut h, "end-bye");
    let inv = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &answer_with_sdp(&inv, 200, "p", PRIMARY_MEDIA));
    assert!(plane.ports_in_use() > 0);
    let ok = h.last_to(CARRIER, "SIP/2.0 200");
    let rr = header(&ok, "Record-Route").unwrap().to_string();
    let bye = format!(
        "BYE sip:agent@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-bye1\r\n\
         Max-Forwards: 70\r\nRoute: {rr}\r\nFrom: \"Carrier\" <sip:+15550000@10.0.0.1>;tag=c1\r\n\
         To: <sip:+15551234@192.0.2.10>;tag=p\r\nCall-ID: end-bye\r\nCSeq: 2 BYE\r\n\
         Content-Length: 0\r\n\r\n"
    );
    h.receive(CARRIER, bye.as_bytes());
    let relayed = h.last_to(PRIMARY, "BYE");
    h.receive(PRIMARY, &response_to(&relayed, 200, "p"));
    assert_eq!(plane.ports_in_use(), 0, "after the BYE");
    assert_eq!(plane.sessions(), 0);
}

#[test]
fn a_call_without_an_offer_or_without_relay_ports_goes_on_unanchored() {
    let (mut h, plane) = anchored_with("", 4);
    // Late offer: no SDP in the INVITE.
    let mut late = String::from_utf8(invite("late")).unwrap();
    late = late.replace(
        "Content-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n",
        "Content-Length: 0\r\n\r\n",
    );
    h.receive(CARRIER, late.as_bytes());
    assert_eq!(h.count_to(PRIMARY, "INVITE"), 1);
    assert_eq!(plane.sessions(), 0);
    // Four pairs: one call takes three, the next finds none left for its carrier leg and a
    // branch, and goes on with its offer as the carrier wrote it.
    both_early(&mut h, "fills");
    h.clear_sent();
    h.receive(CARRIER, &invite_with_offer("no-ports"));
    let forwarded = h.last_to(PRIMARY, "INVITE");
    assert_eq!(
        h.count_to(SECONDARY, "INVITE"),
        1,
        "the call is forked all the same"
    );
    let media = media_of(&forwarded);
    assert!(
        media == addr(CARRIER_MEDIA) || media.ip() == RELAY.parse::<IpAddr>().unwrap(),
        "{media}"
    );
    assert_eq!(
        h.count_to(CARRIER, "SIP/2.0 5"),
        0,
        "never refused for want of a port"
    );
}

/// A request in the answered dialog `call_id` from the carrier, routed by our Record-Route
/// `rr`, carrying `body` as SDP.
fn in_dialog_from_carrier(method: &str, call_id: &str, rr: &str, cseq: u32, body: &str) -> Vec<u8> {
    format!(
        "{method} sip:agent@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-{method}{cseq}\r\n\
         Max-Forwards: 70\r\nRoute: {rr}\r\nFrom: \"Carrier\" <sip:+15550000@10.0.0.1>;tag=c1\r\n\
         To: <sip:+15551234@192.0.2.10>;tag=p\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n\
         Contact: <sip:+15550000@10.0.0.1:5060>\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn offers_and_answers_in_an_answered_dialog_keep_the_relay_ports() {
    let (mut h, plane) = anchored("");
    let (primary_relay, _) = both_early(&mut h, "anchor-reinvite");
    let inv = h.last_to(PRIMARY, "INVITE");
    h.receive(PRIMARY, &answer_with_sdp(&inv, 200, "p", PRIMARY_MEDIA));
    let ok = h.last_to(CARRIER, "SIP/2.0 200");
    let carrier_relay = media_of(&ok);
    let rr = header(&ok, "Record-Route").unwrap().to_string();
    let ports = plane.ports_in_use();
    // The carrier puts the call on hold from a new port: a re-INVITE.
    let hold = sdp("10.0.0.1:40002").replace("a=sendrecv", "a=sendonly");
    h.receive(
        CARRIER,
        &in_dialog_from_carrier("INVITE", "anchor-reinvite", &rr, 2, &hold),
    );
    let reinvite = h.last_to(PRIMARY, "INVITE");
    assert_eq!(
        media_of(&reinvite),
        primary_relay,
        "the cloud keeps sending to the same port"
    );
    assert!(String::from_utf8_lossy(&reinvite).contains("a=sendonly\r\n"));
    let hold_ok = answer_with_sdp(&reinvite, 200, "p", "127.0.0.1:41002");
    h.receive(PRIMARY, &hold_ok);
    let relayed = h.last_to(CARRIER, "SIP/2.0 200");
    assert_eq!(
        media_of(&relayed),
        carrier_relay,
        "the carrier keeps sending to the same port"
    );
    let (said, body) = lengths(&relayed);
    assert_eq!(said, body);
    // An UPDATE from the carrier: the same.
    h.receive(
        CARRIER,
        &in_dialog_from_carrier("UPDATE", "anchor-reinvite", &rr, 3, &sdp("10.0.0.1:40004")),
    );
    let update = h.last_to(PRIMARY, "UPDATE");
    assert_eq!(media_of(&update), primary_relay);
    assert_eq!(plane.ports_in_use(), ports, "no new ports for a re-offer");
    // Media now flows to where the re-INVITE's answer said: the cloud's new port.
    let now = h.now;
    let fwd = deliver(&plane, carrier_relay, "10.0.0.1:40004", &rtp(5, 9, 9), now);
    assert!(
        fwd.iter().any(|(_, to)| *to == addr("127.0.0.1:41002")),
        "{fwd:?}"
    );
}

#[test]
fn a_transport_error_on_the_heard_branch_switches_the_relay_at_once() {
    let (mut h, plane) = anchored("");
    let relay = both_early(&mut h, "anchor-transport");
    assert_eq!(heard(&plane, relay, 1, h.now), 1);
    // The primary's host becomes unreachable: a retransmission of its INVITE cannot be sent.
    let at = h
        .sent
        .iter()
        .position(|(a, l, _)| *a == addr(PRIMARY) && l.starts_with("INVITE"))
        .unwrap();
    let key = h.reports[at].expect("the INVITE reports its delivery failure");
    h.drive(|core, now, out| core.on_delivery_failure(key, now, out));
    assert_eq!(heard(&plane, relay, 2, h.now), 2);
}

#[test]
fn the_sdp_inside_a_multipart_body_is_anchored_and_the_other_parts_kept() {
    let (mut h, _plane) = anchored("");
    let sdp_part = sdp(CARRIER_MEDIA);
    let isup = "\u{1}\u{10}\u{48}\u{0}\u{a}\u{3}\u{2}\u{a}\u{8}\u{83}\u{90}\u{89}\u{10}\u{32}";
    let body = format!(
        "--unique-boundary-1\r\nContent-Type: application/sdp\r\n\r\n{sdp_part}\r\n\
         --unique-boundary-1\r\nContent-Type: application/ISUP;version=itu-t92+\r\n\
         Content-Disposition: signal;handling=optional\r\n\r\n{isup}\r\n--unique-boundary-1--\r\n"
    );
    let text = String::from_utf8(invite("anchor-multipart")).unwrap();
    let head = text.split("Content-Type:").next().unwrap();
    let invite = format!(
        "{head}Content-Type: multipart/mixed;boundary=unique-boundary-1\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    h.receive(CARRIER, invite.as_bytes());
    let forwarded = h.last_to(PRIMARY, "INVITE");
    let text = String::from_utf8_lossy(&forwarded).to_string();
    let relay: IpAddr = RELAY.parse().unwrap();
    assert!(text.contains(&format!("c=IN IP4 {relay}\r\n")), "{text}");
    assert!(text.contains(isup), "the ISUP part is kept byte for byte");
    assert!(text.contains("Content-Disposition: signal;handling=optional\r\n"));
    let (said, body) = lengths(&forwarded);
    assert_eq!(said, body);
}
