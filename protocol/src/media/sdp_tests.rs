//! The SDP rewriter, summary and multipart search: a corpus of real-world bodies that round-trip
//! byte for byte, exact rewrites, summaries, and proptests over generated and arbitrary bytes.

use super::*;
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};

/// An audio offer from a PBX: PCMA, PCMU, telephone-event.
const AUDIO: &str = "v=0\r\n\
o=- 3712345678 3712345678 IN IP4 198.51.100.7\r\n\
s=-\r\n\
c=IN IP4 198.51.100.7\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 8 0 101\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

/// IPv6, an empty `s=`, static payload types without rtpmap.
const IPV6: &str = "v=0\r\n\
o=alice 2890844526 2890844526 IN IP6 2001:db8::10\r\n\
s=\r\n\
c=IN IP6 2001:db8::10\r\n\
t=0 0\r\n\
m=audio 5004 RTP/AVP 0 18 13\r\n\
a=fmtp:18 annexb=no\r\n";

/// The connection address is a host name.
const FQDN: &str = "v=0\r\n\
o=- 1 1 IN IP4 media.example.com\r\n\
s=-\r\n\
c=IN IP4 media.example.com\r\n\
t=0 0\r\n\
m=audio 6000 RTP/AVP 8\r\n";

/// A T.38 re-INVITE.
const T38: &str = "v=0\r\n\
o=FAX 0 1 IN IP4 192.0.2.50\r\n\
s=-\r\n\
c=IN IP4 192.0.2.50\r\n\
t=0 0\r\n\
m=image 40000 udptl t38\r\n\
a=T38FaxVersion:0\r\n\
a=T38MaxBitRate:14400\r\n\
a=T38FaxRateManagement:transferredTCF\r\n\
a=T38FaxMaxBuffer:262\r\n\
a=T38FaxMaxDatagram:176\r\n\
a=T38FaxUdpEC:t38UDPRedundancy\r\n";

/// An answer that rejects the video stream (port 0) and has a fractional ptime.
const REJECTED_VIDEO: &str = "v=0\r\n\
o=- 20 21 IN IP4 192.0.2.60\r\n\
s=-\r\n\
c=IN IP4 192.0.2.60\r\n\
t=0 0\r\n\
m=audio 0 RTP/AVP 8\r\n\
a=ptime:20.5\r\n\
m=video 0 RTP/AVP 31\r\n";

/// A WebRTC-style offer: ICE, rtcp-mux, DTLS-SRTP, opus and CN.
const ICE: &str = "v=0\r\n\
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=ice-options:trickle\r\n\
a=msid-semantic: WMS\r\n\
m=audio 54400 UDP/TLS/RTP/SAVPF 111 0 8 13\r\n\
c=IN IP4 203.0.113.5\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=candidate:1 1 udp 2122260223 203.0.113.5 54400 typ host generation 0\r\n\
a=candidate:2 1 udp 1686052607 198.51.100.9 54400 typ srflx raddr 203.0.113.5 rport 54400\r\n\
a=end-of-candidates\r\n\
a=ice-ufrag:F7gI\r\n\
a=ice-pwd:x9cml/YzichV2+XlhiMu8g\r\n\
a=ice-lite\r\n\
a=fingerprint:sha-256 19:E2:1C:3B:4B:9F:81:E6:B8:5C:F4:A5:A8:D8:73:04:BB:05:2F:70:9F:04:A9:0E:05:E9:26:33:E8:70:88:A2\r\n\
a=setup:actpass\r\n\
a=mid:0\r\n\
a=sendrecv\r\n\
a=rtcp-mux\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:13 CN/8000\r\n";

/// [`ICE`] as the rewriter leaves it with its own address and no new ports.
const ICE_REMOVED: &str = "v=0\r\n\
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=msid-semantic: WMS\r\n\
m=audio 54400 UDP/TLS/RTP/SAVPF 111 0 8 13\r\n\
c=IN IP4 203.0.113.5\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=fingerprint:sha-256 19:E2:1C:3B:4B:9F:81:E6:B8:5C:F4:A5:A8:D8:73:04:BB:05:2F:70:9F:04:A9:0E:05:E9:26:33:E8:70:88:A2\r\n\
a=setup:actpass\r\n\
a=mid:0\r\n\
a=sendrecv\r\n\
a=rtcp-mux\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:13 CN/8000\r\n";

/// Every session line RFC 8866 knows: `i=`, `u=`, `e=`, `p=`, `b=AS`, `r=`, `k=`, and `b=TIAS`
/// at media level.
const ALL_FIELDS: &str = "v=0\r\n\
o=user 1 1 IN IP4 192.0.2.20\r\n\
s=Call\r\n\
i=A session with info\r\n\
u=http://www.example.com/seminars/sdp.pdf\r\n\
e=j.doe@example.com (Jane Doe)\r\n\
p=+1 617 555-6011\r\n\
c=IN IP4 192.0.2.20\r\n\
b=AS:64\r\n\
t=0 0\r\n\
r=7d 1h 0 25h\r\n\
k=clear:secret\r\n\
m=video 51372 RTP/AVP 99\r\n\
i=Video feed\r\n\
b=TIAS:512000\r\n\
a=rtpmap:99 H264/90000\r\n\
a=fmtp:99 profile-level-id=42e01f;packetization-mode=1\r\n";

/// RFC 8866 §5's example: multicast with a TTL, session-level recvonly.
const MULTICAST: &str = "v=0\r\n\
o=jdoe 2890844526 2890842807 IN IP4 10.47.16.5\r\n\
s=SDP Seminar\r\n\
c=IN IP4 233.252.0.1/127\r\n\
t=2873397496 2873404696\r\n\
a=recvonly\r\n\
m=audio 49170 RTP/AVP 0\r\n\
m=video 51372 RTP/AVP 99\r\n\
a=rtpmap:99 h263-1998/90000\r\n";

/// Odd but seen: bare LF, session `a=` before `c=`, double spaces, `s= `, a short `r=`,
/// SDES crypto, an unknown attribute, a 3GPP `y=` line, no line end on the last line.
const ODD: &str = "v=0\n\
o=-  1 1 IN IP4 192.0.2.30\n\
s= \n\
a=tool:softphone 1.0\n\
a=sendonly\n\
c=IN IP4  192.0.2.30\n\
t=0 0\n\
r=7d 1h\n\
m=audio  7078 RTP/SAVP 0 8 101\n\
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4\n\
a=x-foo:bar  baz\n\
a=rtpmap:101 telephone-event/8000\n\
y=0123456789\n\
a=silenceSupp:off - - - -";

/// Every corpus body with the relay address that leaves its `c=` lines as they are.
const CORPUS: [(&str, &str); 9] = [
    (AUDIO, "198.51.100.7"),
    (IPV6, "2001:db8::10"),
    (T38, "192.0.2.50"),
    (REJECTED_VIDEO, "192.0.2.60"),
    (ICE_REMOVED, "203.0.113.5"),
    (ALL_FIELDS, "192.0.2.20"),
    (MULTICAST, "233.252.0.1"),
    (ODD, "192.0.2.30"),
    (FQDN_REWRITTEN, "192.0.2.99"),
];

/// [`FQDN`] after a rewrite to 192.0.2.99 (a host name is always replaced).
const FQDN_REWRITTEN: &str = "v=0\r\n\
o=- 1 1 IN IP4 media.example.com\r\n\
s=-\r\n\
c=IN IP4 192.0.2.99\r\n\
t=0 0\r\n\
m=audio 6000 RTP/AVP 8\r\n";

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn rewritten(body: &str, address: &str, ports: &[Option<u16>]) -> String {
    let rw = Rewrite {
        address: ip(address),
        ports,
    };
    let mut out = Vec::new();
    rewrite(body.as_bytes(), &rw, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn codec(pt: u8, name: &str, clock: u32) -> Codec {
    Codec {
        pt,
        name: SmallVec::from_slice(name.as_bytes()),
        clock,
    }
}

fn only_media(body: &str) -> MediaLine {
    let summary = inspect(body.as_bytes()).unwrap();
    assert_eq!(summary.media.len(), 1);
    summary.media[0].clone()
}

// ---- round trips

#[test]
fn rewrite_without_changes_is_byte_identical() {
    for (body, address) in CORPUS {
        assert_eq!(rewritten(body, address, &[]), body);
        assert_eq!(rewritten(body, address, &[None, None, None]), body);
    }
}

#[test]
fn ice_lines_are_removed_and_everything_else_kept() {
    assert_eq!(rewritten(ICE, "203.0.113.5", &[]), ICE_REMOVED);
}

#[test]
fn a_host_name_connection_is_replaced_by_the_relay_address() {
    assert_eq!(rewritten(FQDN, "192.0.2.99", &[]), FQDN_REWRITTEN);
}

// ---- exact rewrites

const TWO_LEVELS: &str = "v=0\r\n\
o=- 1 1 IN IP4 192.0.2.1\r\n\
s=-\r\n\
c=IN IP4 192.0.2.1\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 0\r\n\
a=rtcp:49171\r\n\
m=video 0 RTP/AVP 31\r\n\
a=rtcp:53001\r\n\
m=audio 5000/2 RTP/AVP 8\r\n\
c=IN IP4 192.0.2.2\r\n\
a=rtcp:5002 IN IP4 192.0.2.2\r\n";

#[test]
fn every_media_line_gets_its_own_port_and_every_connection_the_relay_address() {
    let ports = [Some(30000), Some(30002), Some(30004)];
    assert_eq!(
        rewritten(TWO_LEVELS, "203.0.113.9", &ports),
        "v=0\r\n\
o=- 1 1 IN IP4 192.0.2.1\r\n\
s=-\r\n\
c=IN IP4 203.0.113.9\r\n\
t=0 0\r\n\
m=audio 30000 RTP/AVP 0\r\n\
a=rtcp:30001\r\n\
m=video 0 RTP/AVP 31\r\n\
a=rtcp:53001\r\n\
m=audio 30004/2 RTP/AVP 8\r\n\
c=IN IP4 203.0.113.9\r\n\
a=rtcp:30005 IN IP4 203.0.113.9\r\n"
    );
}

#[test]
fn a_port_zero_stays_zero() {
    let out = rewritten(REJECTED_VIDEO, "192.0.2.60", &[Some(30000), Some(30002)]);
    assert_eq!(out, REJECTED_VIDEO);
}

#[test]
fn a_media_line_without_a_new_port_keeps_its_port_and_rtcp() {
    assert_eq!(
        rewritten(TWO_LEVELS, "192.0.2.1", &[None, None, Some(40000)]),
        TWO_LEVELS
            .replace("5000/2", "40000/2")
            .replace(
                "a=rtcp:5002 IN IP4 192.0.2.2",
                "a=rtcp:40001 IN IP4 192.0.2.1"
            )
            .replace("c=IN IP4 192.0.2.2", "c=IN IP4 192.0.2.1")
    );
}

#[test]
fn rtcp_with_an_address_gets_the_relay_port_and_address() {
    let body = "v=0\r\nm=audio 7000 RTP/AVP 0\r\na=rtcp:7001 IN IP4 192.0.2.5\r\n";
    assert_eq!(
        rewritten(body, "2001:db8::1", &[Some(20000)]),
        "v=0\r\nm=audio 20000 RTP/AVP 0\r\na=rtcp:20001 IN IP6 2001:db8::1\r\n"
    );
}

#[test]
fn rtcp_with_an_unspecified_address_gets_the_relay_address_too() {
    let body = "v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 9 RTP/AVP 0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n";
    assert_eq!(
        rewritten(body, "192.0.2.1", &[Some(20000)]),
        "v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 20000 RTP/AVP 0\r\na=rtcp:20001 IN IP4 192.0.2.1\r\n"
    );
}

#[test]
fn rtcp_without_an_address_gets_only_the_port() {
    let body = "v=0\nm=audio 7000 RTP/AVP 0\na=rtcp:7001\n";
    assert_eq!(
        rewritten(body, "192.0.2.1", &[Some(20000)]),
        "v=0\nm=audio 20000 RTP/AVP 0\na=rtcp:20001\n"
    );
}

#[test]
fn rtcp_is_left_out_when_the_rtp_port_has_none_above_it() {
    let body = "v=0\r\nm=audio 7000 RTP/AVP 0\r\na=rtcp:7001\r\na=sendrecv\r\n";
    assert_eq!(
        rewritten(body, "192.0.2.1", &[Some(u16::MAX)]),
        "v=0\r\nm=audio 65535 RTP/AVP 0\r\na=sendrecv\r\n"
    );
}

#[test]
fn an_ipv4_connection_becomes_ip6_for_an_ipv6_relay_and_back() {
    let v4 = "v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 0\r\n";
    let v6 = "v=0\r\nc=IN IP6 2001:db8::7\r\nm=audio 4000 RTP/AVP 0\r\n";
    assert_eq!(rewritten(v4, "2001:db8::7", &[]), v6);
    assert_eq!(
        rewritten(v6, "192.0.2.1", &[Some(4002)]),
        v4.replace("4000", "4002")
    );
}

#[test]
fn a_hold_address_is_kept() {
    let v4 = "v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 4000 RTP/AVP 0\r\na=sendonly\r\n";
    let v6 = "v=0\r\nc=IN IP6 ::\r\nm=audio 4000 RTP/AVP 0\r\n";
    assert_eq!(
        rewritten(v4, "203.0.113.1", &[Some(5000)]),
        v4.replace("4000", "5000")
    );
    assert_eq!(rewritten(v6, "2001:db8::1", &[]), v6);
}

#[test]
fn a_multicast_ttl_goes_with_the_old_address_unless_the_relay_is_multicast() {
    assert_eq!(
        rewritten(MULTICAST, "203.0.113.1", &[]),
        MULTICAST.replace("233.252.0.1/127", "203.0.113.1")
    );
    assert_eq!(
        rewritten(MULTICAST, "233.252.0.9", &[]),
        MULTICAST.replace("233.252.0.1/127", "233.252.0.9/127")
    );
}

#[test]
fn spacing_around_the_rewritten_fields_is_kept() {
    assert_eq!(
        rewritten(ODD, "203.0.113.1", &[Some(9000)]),
        ODD.replace("c=IN IP4  192.0.2.30", "c=IN IP4  203.0.113.1")
            .replace("m=audio  7078 ", "m=audio  9000 ")
    );
}

#[test]
fn rewrite_appends_to_what_out_holds_and_leaves_it_alone_on_error() {
    let rw = Rewrite {
        address: ip("192.0.2.1"),
        ports: &[],
    };
    let mut out = b"head".to_vec();
    rewrite(b"v=0\r\n", &rw, &mut out).unwrap();
    assert_eq!(out, b"headv=0\r\n");
    let broken = b"v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio x RTP/AVP 0\r\n";
    assert_eq!(rewrite(broken, &rw, &mut out), Err(SdpError::Malformed(3)));
    assert_eq!(out, b"headv=0\r\n");
}

// ---- refusals

#[test]
fn a_body_that_does_not_start_with_v0_is_not_sdp() {
    for body in [
        &b""[..],
        b"\r\n",
        b"v=1\r\n",
        b"o=- 1 1 IN IP4 192.0.2.1\r\nv=0\r\n",
        b" v=0\r\n",
        b"<xml/>",
    ] {
        assert_eq!(inspect(body), Err(SdpError::NotSdp), "{body:?}");
    }
    assert!(inspect(b"v=0").is_ok());
    assert!(inspect(b"v= 0 \r\n").is_ok());
}

#[test]
fn lines_that_do_not_parse_are_refused_with_their_number() {
    for (body, line) in [
        ("v=0\r\ns=-\r\ngarbage\r\n", 3),
        ("v=0\r\nS=-\r\n", 2),
        ("v=0\r\n \r\n", 2),
        ("v=0\r\nc=IN IP4\r\n", 2),
        ("v=0\r\nc=IN IP4 192.0.2.1 extra\r\n", 2),
        ("v=0\r\nc=ATM NSAP 47.0091\r\n", 2),
        ("v=0\r\nc=IN IP4 233.252.0.1/ttl\r\n", 2),
        ("v=0\r\nm=audio\r\n", 2),
        ("v=0\r\nm=audio 70000 RTP/AVP 0\r\n", 2),
        ("v=0\r\nm=audio 4000/ RTP/AVP 0\r\n", 2),
        ("v=0\r\nm=audio 4000 RTP/AVP 0\r\na=rtcp:x\r\n", 3),
        ("v=0\r\nm=audio 4000 RTP/AVP 0\r\na=rtcp\r\n", 3),
        ("v=0\r\nm=audio 4000 RTP/AVP 0\r\na=rtcp:4001 IN IP4\r\n", 3),
    ] {
        assert_eq!(
            inspect(body.as_bytes()),
            Err(SdpError::Malformed(line)),
            "{body:?}"
        );
    }
}

#[test]
fn more_than_sixteen_media_lines_are_refused() {
    let mut body = String::from("v=0\r\n");
    for _ in 0..MAX_MEDIA {
        body.push_str("m=audio 4000 RTP/AVP 0\r\n");
    }
    assert_eq!(inspect(body.as_bytes()).unwrap().media.len(), MAX_MEDIA);
    body.push_str("m=audio 4000 RTP/AVP 0\r\n");
    assert_eq!(inspect(body.as_bytes()), Err(SdpError::TooManyMedia));
    let rw = Rewrite {
        address: ip("192.0.2.1"),
        ports: &[],
    };
    assert_eq!(
        rewrite(body.as_bytes(), &rw, &mut Vec::new()),
        Err(SdpError::TooManyMedia)
    );
}

#[test]
fn empty_lines_are_tolerated_and_kept() {
    let body = "v=0\r\n\r\nm=audio 4000 RTP/AVP 0\r\n\r\n";
    assert_eq!(only_media(body).port, 4000);
    assert_eq!(rewritten(body, "192.0.2.1", &[]), body);
}

// ---- summaries

#[test]
fn inspect_reads_an_audio_offer_with_telephone_event() {
    let summary = inspect(AUDIO.as_bytes()).unwrap();
    assert_eq!(summary.connection, Some(ip("198.51.100.7")));
    assert_eq!(
        summary.media[0],
        MediaLine {
            kind: MediaKind::Audio,
            port: 49170,
            transport: MediaTransport::Rtp,
            connection: Some(ip("198.51.100.7")),
            rtcp: None,
            rtcp_mux: false,
            formats: SmallVec::from_slice(&[8, 0, 101]),
            codecs: SmallVec::from_vec(vec![
                codec(8, "pcma", 8000),
                codec(0, "pcmu", 8000),
                codec(101, "telephone-event", 8000),
            ]),
            ptime_ms: Some(20),
            direction: Direction::SendRecv,
            comfort_noise: false,
        }
    );
}

#[test]
fn inspect_names_static_payload_types_without_rtpmap() {
    let summary = inspect(IPV6.as_bytes()).unwrap();
    assert_eq!(summary.connection, Some(ip("2001:db8::10")));
    let media = &summary.media[0];
    assert_eq!(media.connection, Some(ip("2001:db8::10")));
    assert_eq!(
        media.codecs.as_slice(),
        [
            codec(0, "pcmu", 8000),
            codec(18, "g729", 8000),
            codec(13, "cn", 8000)
        ]
    );
    assert!(media.comfort_noise, "CN is offered");
    let all = "v=0\r\nm=audio 4000 RTP/AVP 0 3 4 8 9 13 18 96\r\n";
    let names: Vec<_> = only_media(all)
        .codecs
        .iter()
        .map(|c| (c.pt, String::from_utf8(c.name.to_vec()).unwrap(), c.clock))
        .collect();
    let expected = [
        (0, "pcmu"),
        (3, "gsm"),
        (4, "g723"),
        (8, "pcma"),
        (9, "g722"),
        (13, "cn"),
        (18, "g729"),
    ]
    .map(|(pt, name)| (pt, name.to_string(), 8000));
    assert_eq!(names, expected, "96 has no rtpmap and is no static type");
}

#[test]
fn an_rtpmap_overrides_the_static_payload_type_and_extra_rtpmaps_come_last() {
    let body = "v=0\r\nm=audio 4000 RTP/AVP 0 8\r\na=rtpmap:97 iLBC/8000\r\n\
                a=rtpmap:8 PCMA/16000\r\na=rtpmap:bad\r\n";
    assert_eq!(
        only_media(body).codecs.as_slice(),
        [
            codec(0, "pcmu", 8000),
            codec(8, "pcma", 16000),
            codec(97, "ilbc", 8000)
        ]
    );
}

#[test]
fn inspect_gives_no_address_for_a_host_name() {
    let summary = inspect(FQDN.as_bytes()).unwrap();
    assert_eq!(summary.connection, None);
    assert_eq!(summary.media[0].connection, None);
    assert_eq!(summary.media[0].codecs.as_slice(), [codec(8, "pcma", 8000)]);
}

#[test]
fn inspect_reads_t38_as_udptl_image_without_payload_types() {
    let media = only_media(T38);
    assert_eq!(media.kind, MediaKind::Image);
    assert_eq!(media.transport, MediaTransport::Udptl);
    assert_eq!(media.port, 40000);
    assert!(media.formats.is_empty());
    assert!(media.codecs.is_empty());
    assert_eq!(media.connection, Some(ip("192.0.2.50")));
}

#[test]
fn inspect_rounds_a_fractional_ptime_down_and_keeps_port_zero() {
    let summary = inspect(REJECTED_VIDEO.as_bytes()).unwrap();
    let [audio, video] = summary.media.as_slice() else {
        panic!("two media lines: {summary:?}");
    };
    assert_eq!((audio.port, audio.ptime_ms), (0, Some(20)));
    assert_eq!(
        (video.kind, video.port, video.ptime_ms),
        (MediaKind::Video, 0, None)
    );
    assert!(
        video.codecs.is_empty(),
        "31 is a video type pointsman does not name"
    );
}

#[test]
fn inspect_reads_ice_offers_rtcp_mux_and_srtp() {
    let summary = inspect(ICE.as_bytes()).unwrap();
    assert_eq!(summary.connection, None);
    let media = &summary.media[0];
    assert_eq!(media.transport, MediaTransport::Srtp);
    assert_eq!(media.connection, Some(ip("203.0.113.5")));
    assert_eq!(media.rtcp, Some((9, Some(ip("0.0.0.0")))));
    assert!(media.rtcp_mux);
    assert_eq!(media.formats.as_slice(), [111, 0, 8, 13]);
    assert_eq!(media.codecs[0], codec(111, "opus", 48000));
    assert!(media.comfort_noise);
    assert_eq!(inspect(ICE_REMOVED.as_bytes()), Ok(summary));
}

#[test]
fn inspect_reads_all_session_fields_without_tripping() {
    let summary = inspect(ALL_FIELDS.as_bytes()).unwrap();
    let media = &summary.media[0];
    assert_eq!(media.kind, MediaKind::Video);
    assert_eq!(media.connection, Some(ip("192.0.2.20")));
    assert_eq!(media.codecs.as_slice(), [codec(99, "h264", 90000)]);
}

#[test]
fn inspect_tolerates_a_multicast_ttl_and_takes_the_session_direction() {
    let summary = inspect(MULTICAST.as_bytes()).unwrap();
    assert_eq!(summary.connection, Some(ip("233.252.0.1")));
    for media in &summary.media {
        assert_eq!(media.connection, Some(ip("233.252.0.1")));
        assert_eq!(media.direction, Direction::RecvOnly);
    }
    assert_eq!(
        summary.media[1].codecs.as_slice(),
        [codec(99, "h263-1998", 90000)]
    );
}

#[test]
fn inspect_reads_odd_spacing_and_bare_line_feeds() {
    let summary = inspect(ODD.as_bytes()).unwrap();
    assert_eq!(summary.connection, Some(ip("192.0.2.30")));
    let media = &summary.media[0];
    assert_eq!(media.port, 7078);
    assert_eq!(media.transport, MediaTransport::Srtp);
    assert_eq!(
        media.direction,
        Direction::SendOnly,
        "from the session level"
    );
    assert!(!media.comfort_noise, "silenceSupp:off");
    assert_eq!(media.codecs.len(), 3);
}

#[test]
fn media_level_direction_and_connection_win_over_the_session_level() {
    let body = "v=0\r\nc=IN IP4 192.0.2.1\r\na=sendonly\r\na=silenceSupp:on - - - -\r\n\
                m=audio 4000 RTP/AVP 0\r\nc=IN IP6 2001:db8::2\r\na=inactive\r\n\
                m=audio 4002 RTP/AVP 0\r\nc=IN IP4 media.example.net\r\n";
    let summary = inspect(body.as_bytes()).unwrap();
    assert_eq!(summary.connection, Some(ip("192.0.2.1")));
    let [first, second] = summary.media.as_slice() else {
        panic!("two media lines: {summary:?}");
    };
    assert_eq!(first.connection, Some(ip("2001:db8::2")));
    assert_eq!(first.direction, Direction::Inactive);
    assert_eq!(second.connection, None, "the media-level host name wins");
    assert_eq!(second.direction, Direction::SendOnly);
    assert!(
        first.comfort_noise && second.comfort_noise,
        "session-level silenceSupp:on"
    );
}

#[test]
fn inspect_reads_the_rtcp_port_as_written() {
    let summary = inspect(TWO_LEVELS.as_bytes()).unwrap();
    let rtcp: Vec<_> = summary.media.iter().map(|m| m.rtcp).collect();
    assert_eq!(
        rtcp,
        [
            Some((49171, None)),
            Some((53001, None)),
            Some((5002, Some(ip("192.0.2.2"))))
        ]
    );
    assert_eq!(summary.media[2].connection, Some(ip("192.0.2.2")));
    assert_eq!(summary.media[0].connection, Some(ip("192.0.2.1")));
}

// ---- find_sdp

#[test]
fn find_sdp_takes_the_whole_body_for_application_sdp() {
    let body = AUDIO.as_bytes();
    for content_type in [
        &b"application/sdp"[..],
        b"Application/SDP",
        b" application/sdp ; charset=utf-8",
    ] {
        assert_eq!(find_sdp(content_type, body), Some(0..body.len()));
    }
    assert_eq!(find_sdp(b"application/sdpx", body), None);
    assert_eq!(find_sdp(b"text/plain", body), None);
    assert_eq!(find_sdp(b"application/isup", body), None);
}

/// A SIP-I (ITU-T Q.1912.5) INVITE body: SDP, then the encapsulated ISUP IAM.
fn sip_i_body() -> Vec<u8> {
    let mut body = b"--unique-boundary-1\r\n\
Content-Type: application/sdp\r\n\
\r\n"
        .to_vec();
    body.extend_from_slice(AUDIO.as_bytes());
    body.extend_from_slice(
        b"\r\n--unique-boundary-1\r\n\
Content-Type: application/ISUP;version=itu-t92+\r\n\
Content-Disposition: signal;handling=optional\r\n\
\r\n",
    );
    body.extend_from_slice(&[
        0x01, 0x00, 0x49, 0x00, 0x00, 0x03, 0x02, 0x00, 0x07, 0x04, 0x10,
    ]);
    body.extend_from_slice(b"\r\n--unique-boundary-1--\r\n");
    body
}

#[test]
fn find_sdp_finds_the_sdp_part_of_a_sip_i_multipart() {
    let body = sip_i_body();
    let range = find_sdp(b"multipart/mixed;boundary=unique-boundary-1", &body).unwrap();
    assert_eq!(&body[range], AUDIO.as_bytes());
}

#[test]
fn find_sdp_takes_a_quoted_boundary_and_a_later_sdp_part() {
    let body = b"preamble\r\n--b 1\r\nContent-Type: text/plain\r\n\r\nhello\r\n\
--b 1  \r\ncontent-type:APPLICATION/SDP\r\n\r\nv=0\r\n\r\n--b 1--\r\n";
    let range = find_sdp(b"multipart/alternative; x=y; boundary=\"b 1\"", body).unwrap();
    assert_eq!(&body[range], b"v=0\r\n");
    let lf = b"--b\nContent-Type: application/sdp\n\nv=0\n\n--b--\n";
    let range = find_sdp(b"multipart/related;boundary=b", lf).unwrap();
    assert_eq!(&lf[range], b"v=0\n");
}

#[test]
fn find_sdp_looks_into_a_nested_multipart() {
    let body = b"--outer\r\nContent-Type: multipart/alternative;boundary=inner\r\n\r\n\
--inner\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n--inner--\r\n--outer--\r\n";
    let range = find_sdp(b"multipart/mixed;boundary=outer", body).unwrap();
    assert_eq!(&body[range], b"v=0");
}

#[test]
fn find_sdp_gives_nothing_for_multiparts_without_sdp_or_that_do_not_parse() {
    let body = sip_i_body();
    for content_type in [
        &b"multipart/mixed"[..],
        b"multipart/mixed;boundary=",
        b"multipart/mixed;boundary=other",
        b"multipart/signed;boundary=unique-boundary-1",
        b"multipart/mixed;boundary=unique-boundary",
    ] {
        assert_eq!(find_sdp(content_type, &body), None, "{content_type:?}");
    }
    let unterminated = b"--b\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n";
    assert_eq!(find_sdp(b"multipart/mixed;boundary=b", unterminated), None);
    let no_sdp = b"--b\r\nContent-Type: application/isup\r\n\r\nxx\r\n--b--\r\n";
    assert_eq!(find_sdp(b"multipart/mixed;boundary=b", no_sdp), None);
}

// ---- properties

/// The address every generated `c=` line has, so a rewrite to it changes none of them.
const GENERATED_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);

/// One line the rewriter must keep as it is when the relay address is [`GENERATED_ADDRESS`]
/// and no port changes.
fn kept_line() -> impl Strategy<Value = String> {
    prop_oneof![
        "o=[a-z-]{1,8} [0-9]{1,10} [0-9]{1,3} IN IP4 [a-z0-9.]{1,15}",
        "s=[ -~]{0,20}",
        "[bd-ln-z]=[ -~]{0,30}",
        Just("c=IN IP4 192.0.2.7".to_string()),
        "c=IN IP4 192\\.0\\.2\\.7/[0-9]{1,3}",
        Just("c=IN IP4 0.0.0.0".to_string()),
        Just("c=in  ip4 192.0.2.7 ".to_string()),
        "m=(audio|video|image|application|text) {1,2}[0-9]{1,4}(/[0-9])? (RTP/AVP|RTP/SAVPF|udptl|TCP/MSRP)( [0-9]{1,3}| t38| \\*){0,5}",
        "a=(rtpmap:[0-9]{1,3} [A-Za-z0-9-]{1,10}/[0-9]{1,5}(/[0-9])?|ptime:[0-9]{1,3}(\\.[0-9])?|sendonly|recvonly|inactive|sendrecv|rtcp-mux|silenceSupp:(on|off) - - - -|fmtp:[0-9]{1,3} [ -~]{0,20}|x-[a-z]{1,6}(:[ -~]{0,20})?|crypto:[ -~]{0,30}|rtcp:[0-9]{1,4}( IN IP4 192\\.0\\.2\\.7)?)",
        Just(String::new()),
    ]
}

fn ice_line() -> impl Strategy<Value = String> {
    prop_oneof![
        "a=candidate:[0-9] 1 udp [0-9]{1,10} 192\\.0\\.2\\.[0-9]{1,3} [0-9]{1,5} typ host",
        "a=ice-(ufrag|pwd):[A-Za-z0-9+/]{4,24}",
        Just("a=ice-lite".to_string()),
        Just("a=ice-options:trickle".to_string()),
        Just("a=end-of-candidates".to_string()),
        "a=remote-candidates:1 192\\.0\\.2\\.1 [0-9]{1,5}",
        Just("a=ice-mismatch".to_string()),
    ]
}

/// Mostly lines the parser accepts, some that rewrite edits or removes, a few it refuses.
fn line_soup() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => kept_line(),
        1 => ice_line(),
        1 => "c=IN IP[46] [0-9a-f:.]{1,20}(/[0-9]{1,3}){0,2}",
        1 => "m=audio [0-9]{1,5}(/[0-9]{1,2})? RTP/AVP( [0-9]{1,3}){0,3}",
        1 => "a=rtcp:[0-9]{1,5}( IN IP[46] [0-9a-f:.]{1,20})?",
        1 => "[acm]=[ -~]{0,40}",
        1 => "[ -~]{0,10}",
    ]
}

/// Lines with their ends (CRLF or LF, the last maybe none) after `v=0`.
fn join(lines: &[(String, bool)], last_has_end: bool) -> String {
    let mut body = String::from("v=0\r\n");
    for (i, (line, crlf)) in lines.iter().enumerate() {
        body.push_str(line);
        if i + 1 < lines.len() || last_has_end {
            body.push_str(if *crlf { "\r\n" } else { "\n" });
        }
    }
    body
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..512)) {
        fuzzing::check(&data);
    }

    #[test]
    fn arbitrary_lines_after_v0_never_panic_and_keep_what_is_not_rewritten(
        lines in prop::collection::vec((line_soup(), any::<bool>()), 0..20),
        ports in prop::collection::vec(any::<Option<u16>>(), 0..4),
        v6 in any::<bool>(),
    ) {
        let body = join(&lines, true);
        let address = if v6 { IpAddr::V6(Ipv6Addr::LOCALHOST) } else { ip("203.0.113.1") };
        fuzzing::check_rewrite(body.as_bytes(), &Rewrite { address, ports: &ports });
    }

    #[test]
    fn rewrite_without_changes_is_the_identity_on_what_inspect_accepts(
        lines in prop::collection::vec((kept_line(), any::<bool>()), 0..24),
        last_has_end in any::<bool>(),
        ports in prop::collection::vec(Just(None::<u16>), 0..4),
    ) {
        let body = join(&lines, last_has_end);
        prop_assume!(body.matches("\nm=").count() <= MAX_MEDIA);
        prop_assert!(inspect(body.as_bytes()).is_ok(), "{body:?}");
        let rw = Rewrite { address: IpAddr::V4(GENERATED_ADDRESS), ports: &ports };
        let mut out = Vec::new();
        rewrite(body.as_bytes(), &rw, &mut out).unwrap();
        prop_assert_eq!(String::from_utf8(out).unwrap(), body);
    }

    #[test]
    fn ice_lines_are_the_only_lines_removed(
        lines in prop::collection::vec((kept_line(), any::<bool>()), 0..16),
        ice in prop::collection::vec((any::<prop::sample::Index>(), ice_line(), any::<bool>()), 1..6),
    ) {
        let without = join(&lines, true);
        let mut with_ice = lines.clone();
        for (at, line, crlf) in ice {
            with_ice.insert(at.index(with_ice.len() + 1), (line, crlf));
        }
        let body = join(&with_ice, true);
        prop_assume!(body.matches("\nm=").count() <= MAX_MEDIA);
        let rw = Rewrite { address: IpAddr::V4(GENERATED_ADDRESS), ports: &[] };
        let mut out = Vec::new();
        rewrite(body.as_bytes(), &rw, &mut out).unwrap();
        prop_assert_eq!(String::from_utf8(out).unwrap(), without);
    }

    #[test]
    fn rewritten_sdp_inspects_to_the_new_ports_and_the_relay_address(
        lines in prop::collection::vec((kept_line(), any::<bool>()), 0..24),
        ports in prop::collection::vec(any::<Option<u16>>(), 0..8),
        v6 in any::<bool>(),
    ) {
        let body = join(&lines, true);
        let address = if v6 { ip("2001:db8::99") } else { ip("203.0.113.99") };
        fuzzing::check_rewrite(body.as_bytes(), &Rewrite { address, ports: &ports });
    }
}
