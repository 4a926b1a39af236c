//! The wire layer's test suite.
//!
//! The messages are hand-written for this project in the spirit of the RFC 4475 torture tests:
//! each `accepted` test proves that a tortuous but valid message scans to the right fields, each
//! `rejected` test that an invalid one fails with the precise [`ScanError`]. The property tests at
//! the end share their checks with the fuzz targets (`wire::fuzzing`, `fuzz/`).

use super::fuzzing;
use super::*;

/// Joins `lines` with CRLF, ends the header section with an empty line and appends `body`.
/// A line starting with SP or HTAB is a folded continuation of the line before it.
fn sip(lines: &[&str], body: &[u8]) -> Vec<u8> {
    let mut out = lines.join("\r\n").into_bytes();
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
    out
}

/// `lines` without those starting with any of `prefixes`, and with `extra` appended.
fn edit<'a>(lines: &[&'a str], prefixes: &[&str], extra: &[&'a str]) -> Vec<&'a str> {
    lines
        .iter()
        .copied()
        .filter(|l| !prefixes.iter().any(|p| l.starts_with(p)))
        .chain(extra.iter().copied())
        .collect()
}

/// Scans a datagram that must be accepted.
fn ok(bytes: &[u8]) -> Message<'_> {
    ok_with(bytes, &Limits::default())
}

fn ok_with<'a>(bytes: &'a [u8], limits: &Limits) -> Message<'a> {
    scan(bytes, Framing::Datagram, limits)
        .unwrap_or_else(|e| panic!("rejected ({e}):\n{}", String::from_utf8_lossy(bytes)))
}

/// Scans a datagram that must be rejected; returns why.
fn err(bytes: &[u8]) -> ScanError {
    err_with(bytes, &Limits::default())
}

fn err_with(bytes: &[u8], limits: &Limits) -> ScanError {
    match scan(bytes, Framing::Datagram, limits) {
        Ok(_) => panic!("accepted:\n{}", String::from_utf8_lossy(bytes)),
        Err(e) => e,
    }
}

/// The text of a span (the test messages are UTF-8 where these are used).
fn t<'a>(m: &Message<'a>, span: Span) -> &'a str {
    std::str::from_utf8(m.slice(span)).expect("UTF-8 span")
}

fn opt<'a>(m: &Message<'a>, span: Option<Span>) -> Option<&'a str> {
    span.map(|s| t(m, s))
}

fn request_uri(m: &Message<'_>) -> Span {
    match m.start {
        StartLine::Request { uri, .. } => uri,
        StartLine::Response { .. } => panic!("not a request"),
    }
}

fn method_text<'a>(m: &Message<'a>) -> &'a str {
    match m.start {
        StartLine::Request { method_span, .. } => t(m, method_span),
        StartLine::Response { .. } => panic!("not a request"),
    }
}

fn branches<'a>(m: &Message<'a>) -> Vec<&'a str> {
    m.vias()
        .map(|v| t(m, v.expect("via parses").branch.expect("branch")))
        .collect()
}

fn route_uris<'a>(m: &Message<'a>, name: HeaderName) -> Vec<&'a str> {
    m.routes(name)
        .map(|r| t(m, r.expect("route parses").uri))
        .collect()
}

/// A plain, valid INVITE the tests below twist one way or another.
const INVITE: &[&str] = &[
    "INVITE sip:wren@aviary.example SIP/2.0",
    "Via: SIP/2.0/UDP perch.meadow.example:5060;branch=z9hG4bK-m1",
    "Max-Forwards: 70",
    "From: \"Finch\" <sip:finch@meadow.example>;tag=f-881",
    "To: <sip:wren@aviary.example>",
    "Call-ID: 7f3a-meadow-0001@perch.meadow.example",
    "CSeq: 41 INVITE",
    "Contact: <sip:finch@perch.meadow.example>",
    "Content-Length: 0",
];

/// A folded, compact, oddly spaced and cased INVITE with a binary body.
fn torture_invite() -> Vec<u8> {
    let mut body = b"v=0\r\no=- 1 1 IN IP6 2001:db8::9\r\n\r\n\0\xff\xfe".to_vec();
    body.extend(0u8..=255);
    let cl = format!("l  :   000{}", body.len());
    sip(
        &[
            "INVITE sips:wren;day=tue@[2001:db8::1]:5061;transport=tls?Subject=x SIP/2.0",
            "v:SIP / 2.0 / TLS [2001:db8::a]:05061 ;branch=z9hG4bK.t1;rport ,",
            "\tSIP/2.0/UDP",
            "   198.51.100.7;received=192.0.2.1;BRANCH=z9hG4bK.t2",
            "VIA   :SIP/2.0/TCP relay_1.example:5070;branch=z9hG4bK.t3",
            "max-forwards:\t0069",
            "f: \"F. \\\"Wren\\\", Esq.\" <sip:finch@meadow.example>",
            "  ;tag=f.1",
            "TO:Wren <sip:wren@aviary.example>;x-note=\"a, b\"",
            "i:torture-01@[2001:db8::a]",
            "cSeQ:\r\n 00007\r\n\tINVITE",
            "Subject: a subject",
            "\t\tfolded twice,",
            " with a comma",
            "X-Unknown-Thing :  kept as received  ",
            "c: application/sdp",
            &cl,
        ],
        &body,
    )
}

/// A response with the things a proxy forwards upstream.
const RINGING: &[&str] = &[
    "SIP/2.0 180 Ringing, eventually",
    "Via: SIP/2.0/UDP perch.meadow.example:5060;branch=z9hG4bK-m1;received=192.0.2.8",
    "From: \"Finch\" <sip:finch@meadow.example>;tag=f-881",
    "To: <sip:wren@aviary.example>;tag=w-1",
    "Call-ID: 7f3a-meadow-0001@perch.meadow.example",
    "CSeq: 41 INVITE",
    "Content-Length: 0",
];

/// Valid messages of the tests, for the forwarding check and the fuzz seed corpus.
fn valid_messages() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("invite", sip(INVITE, b"")),
        ("torture-invite", torture_invite()),
        ("ringing", sip(RINGING, b"")),
        (
            "routed-options",
            sip(
                &[
                    "OPTIONS sip:[2001:db8::1]:5060 SIP/2.0",
                    "Route: <sip:edge.example.net;lr>, \"Core, West\" <sip:core.example.net;lr>",
                    "route: <sip:last.example.net;lr>",
                    "Record-Route: <sip:rr1.example.net;lr>,<sip:rr2.example.net;lr>",
                    "v: SIP/2.0/UDP 192.0.2.7;branch=z9hG4bK.a1",
                    "Max-Forwards: 0070",
                    "f: <sip:finch@meadow.example>;tag=1",
                    "t: sip:wren@aviary.example",
                    "i: opt-1",
                    "CSeq: 0000123 OPTIONS",
                ],
                b"",
            ),
        ),
        (
            "extension-method",
            sip(
                &[
                    "NEWMETHOD tel:+1-555-0100;phone-context=example.com SIP/2.0",
                    "Via: SIP/2.0/UDP 192.0.2.7;branch=z9hG4bK.n1",
                    "From: <sip:finch@meadow.example>;tag=1",
                    "To: <tel:+1-555-0100>",
                    "Call-ID: ext-1",
                    "CSeq: 9 NEWMETHOD",
                    "Content-Length: 0004",
                ],
                b"\x00\r\n\x01",
            ),
        ),
    ]
}

mod accepted {
    use super::*;

    #[test]
    fn plain_invite_scans_to_its_fields() {
        let bytes = sip(INVITE, b"");
        let m = ok(&bytes);
        assert!(m.is_request());
        assert_eq!(m.method(), Some(Method::Invite));
        assert_eq!(t(&m, request_uri(&m)), "sip:wren@aviary.example");
        assert_eq!(m.headers.len(), 8);
        assert_eq!(t(&m, m.top_via.host), "perch.meadow.example");
        assert_eq!(m.top_via.port, Some(5060));
        assert_eq!(m.top_via.transport, Transport::Udp);
        assert!(m.top_via.sole);
        assert_eq!(opt(&m, m.top_via.branch), Some("z9hG4bK-m1"));
        assert_eq!(m.via_count, 1);
        assert_eq!(t(&m, m.call_id), "7f3a-meadow-0001@perch.meadow.example");
        assert_eq!((m.cseq, m.cseq_method), (41, Method::Invite));
        assert_eq!(t(&m, m.from.uri), "sip:finch@meadow.example");
        assert_eq!(opt(&m, m.from.tag), Some("f-881"));
        assert_eq!(t(&m, m.to.uri), "sip:wren@aviary.example");
        assert_eq!(m.to.tag, None);
        assert_eq!(m.max_forwards, Some(70));
        assert_eq!(m.max_forwards_header, Some(1));
        assert_eq!(m.content_length, Some(0));
        assert_eq!(m.buf, &bytes[..]);
        assert_eq!(m.headers_end as usize, bytes.len());
        assert!(m.body.is_empty());
    }

    #[test]
    fn folded_lines_continue_subject_via_from_and_cseq() {
        let bytes = torture_invite();
        let m = ok(&bytes);
        // A folded header counts once, whatever its number of lines.
        assert_eq!(m.headers.len(), 11);
        let subject = m.header_by_name(b"Subject").expect("Subject");
        assert_eq!(
            t(&m, subject.value),
            "a subject\r\n\t\tfolded twice,\r\n with a comma"
        );
        assert!(t(&m, subject.line).ends_with("with a comma\r\n"));
        // The second via-parm of the first Via starts on a continuation line and its sent-by on
        // another one.
        assert_eq!(branches(&m), ["z9hG4bK.t1", "z9hG4bK.t2", "z9hG4bK.t3"]);
        let second = m.vias().nth(1).unwrap().unwrap();
        assert_eq!(second.header, 0);
        assert_eq!(t(&m, second.host), "198.51.100.7");
        assert_eq!(opt(&m, second.received), Some("192.0.2.1"));
        // The tag of From sits on a continuation line.
        assert_eq!(opt(&m, m.from.tag), Some("f.1"));
        // CSeq is folded right after the colon and between number and method.
        assert_eq!((m.cseq, m.cseq_method), (7, Method::Invite));
        assert_eq!(t(&m, m.cseq_method_span), "INVITE");
    }

    #[test]
    fn folded_via_value_parses_across_continuation_lines() {
        let bytes = sip(
            &edit(
                INVITE,
                &["Via:"],
                &[
                    "Via:",
                    " SIP/2.0/UDP",
                    "\tperch.meadow.example",
                    " :5062",
                    " ;branch=z9hG4bK-fold",
                    "  ;rport",
                ],
            ),
            b"",
        );
        let m = ok(&bytes);
        assert_eq!(t(&m, m.top_via.host), "perch.meadow.example");
        assert_eq!(m.top_via.port, Some(5062));
        assert_eq!(opt(&m, m.top_via.branch), Some("z9hG4bK-fold"));
        assert_eq!(m.top_via.rport, Some(None));
        assert!(m.top_via.sole);
    }

    #[test]
    fn compact_header_names_map_to_the_same_fields() {
        let bytes = sip(
            &[
                "MESSAGE sip:wren@aviary.example SIP/2.0",
                "v: SIP/2.0/UDP 192.0.2.7;branch=z9hG4bK.c1",
                "i: compact-1@192.0.2.7",
                "f: <sip:finch@meadow.example>;tag=c",
                "t: <sip:wren@aviary.example>",
                "CSeq: 2 MESSAGE",
                "m: <sip:finch@192.0.2.7>",
                "k: 100rel",
                "s: compact subject",
                "c: text/plain",
                "l: 5",
            ],
            b"hello",
        );
        let m = ok(&bytes);
        let named: Vec<(HeaderName, &str)> = m
            .headers
            .iter()
            .map(|h| (h.name, t(&m, h.name_span)))
            .collect();
        assert_eq!(
            named,
            [
                (HeaderName::Via, "v"),
                (HeaderName::CallId, "i"),
                (HeaderName::From, "f"),
                (HeaderName::To, "t"),
                (HeaderName::CSeq, "CSeq"),
                (HeaderName::Contact, "m"),
                (HeaderName::Supported, "k"),
                // Subject has no variant of its own; its compact form stays `Other`.
                (HeaderName::Other, "s"),
                (HeaderName::ContentType, "c"),
                (HeaderName::ContentLength, "l"),
            ]
        );
        assert_eq!(opt(&m, m.top_via.branch), Some("z9hG4bK.c1"));
        assert_eq!(t(&m, m.call_id), "compact-1@192.0.2.7");
        assert_eq!(opt(&m, m.from.tag), Some("c"));
        assert_eq!(t(&m, m.to.uri), "sip:wren@aviary.example");
        assert_eq!(m.content_length, Some(5));
        assert_eq!(m.slice(m.body), b"hello");
        assert_eq!(
            t(&m, m.header(HeaderName::Contact).unwrap().value),
            "<sip:finch@192.0.2.7>"
        );
        assert_eq!(
            t(&m, m.header_by_name(b"S").unwrap().value),
            "compact subject"
        );
    }

    #[test]
    fn header_names_are_case_insensitive() {
        let bytes = sip(
            &[
                "INVITE sip:wren@aviary.example SIP/2.0",
                "VIA: SIP/2.0/UDP perch.meadow.example;branch=z9hG4bK-up",
                "mAX-fORWARDS: 12",
                "fROM: <sip:finch@meadow.example>;TAG=lower",
                "TO: <sip:wren@aviary.example>",
                "call-id: all-lower",
                "cSeQ: 1 INVITE",
                "rOUTE: <sip:edge.example.net;lr>",
                "RECORD-route: <sip:rr.example.net;lr>",
                "V: SIP/2.0/TCP second.example;branch=z9hG4bK-2",
                "content-LENGTH: 0",
            ],
            b"",
        );
        let m = ok(&bytes);
        assert_eq!(opt(&m, m.top_via.branch), Some("z9hG4bK-up"));
        assert_eq!(m.via_count, 2);
        assert_eq!(m.max_forwards, Some(12));
        assert_eq!(opt(&m, m.from.tag), Some("lower"));
        assert_eq!(t(&m, m.call_id), "all-lower");
        assert_eq!(m.cseq, 1);
        assert_eq!(
            route_uris(&m, HeaderName::Route),
            ["sip:edge.example.net;lr"]
        );
        assert_eq!(
            route_uris(&m, HeaderName::RecordRoute),
            ["sip:rr.example.net;lr"]
        );
        assert_eq!(m.content_length, Some(0));
        assert_eq!(
            m.header(HeaderName::CallId).unwrap().name,
            HeaderName::CallId
        );
        assert!(m.header_by_name(b"CALL-ID").is_some());
    }

    #[test]
    fn look_alike_header_names_are_not_confused_with_known_ones() {
        let bytes = sip(
            &edit(
                INVITE,
                &[],
                &[
                    "Via-Ext: not a via",
                    "Call-Info: <http://aviary.example/card>",
                    "Tos: no",
                    "vv: no",
                    "Content-Lengthy: 99",
                ],
            ),
            b"",
        );
        let m = ok(&bytes);
        assert_eq!(m.via_count, 1);
        assert_eq!(m.content_length, Some(0));
        for name in ["Via-Ext", "Call-Info", "Tos", "vv", "Content-Lengthy"] {
            let h = m.header_by_name(name.as_bytes()).expect(name);
            assert_eq!(h.name, HeaderName::Other, "{name}");
        }
    }

    #[test]
    fn comma_joined_via_values_are_each_yielded_and_the_first_is_top() {
        let bytes = sip(
            &edit(
                INVITE,
                &["Via:"],
                &[
                    "Via: SIP/2.0/UDP a.example;branch=z9hG4bK-1 , SIP/2.0/TCP b.example:5070;branch=z9hG4bK-2,SIP/2.0/TLS c.example;branch=z9hG4bK-3",
                    "Via: SIP/2.0/SCTP d.example;branch=z9hG4bK-4;x=\"quoted, comma\"",
                    "Via: SIP/2.0/WSS e.example;branch=z9hG4bK-5,SIP/2.0/WS f.example;branch=z9hG4bK-6",
                ],
            ),
            b"",
        );
        let m = ok(&bytes);
        assert_eq!(m.via_count, 6);
        assert_eq!(
            branches(&m),
            [
                "z9hG4bK-1",
                "z9hG4bK-2",
                "z9hG4bK-3",
                "z9hG4bK-4",
                "z9hG4bK-5",
                "z9hG4bK-6"
            ]
        );
        let vias: Vec<Via> = m.vias().map(Result::unwrap).collect();
        assert_eq!(vias[0], m.top_via);
        assert_eq!(
            t(&m, m.top_via.value),
            "SIP/2.0/UDP a.example;branch=z9hG4bK-1"
        );
        assert!(!m.top_via.sole, "the top Via shares its header line");
        let transports: Vec<Transport> = vias.iter().map(|v| v.transport).collect();
        assert_eq!(
            transports,
            [
                Transport::Udp,
                Transport::Tcp,
                Transport::Tls,
                Transport::Sctp,
                Transport::Wss,
                Transport::Ws
            ]
        );
        assert_eq!(vias[1].port, Some(5070));
        let headers: Vec<usize> = vias.iter().map(|v| v.header).collect();
        let first = m.top_via.header;
        assert_eq!(
            headers,
            [first, first, first, first + 1, first + 2, first + 2]
        );
        let sole: Vec<bool> = vias.iter().map(|v| v.sole).collect();
        assert_eq!(sole, [false, false, false, true, false, false]);
    }

    #[test]
    fn comma_joined_route_and_record_route_values_are_each_yielded() {
        let bytes = sip(
            &edit(
                INVITE,
                &[],
                &[
                    "Route: <sip:edge.example.net;lr>,\"Core, West\" <sip:core.example.net;lr>;x=1",
                    " , <sips:[2001:db8::7]:5071;lr>",
                    "Record-Route: <sip:rr2.example.net;lr>",
                    "Route: Last Hop <sip:last.example.net;lr>",
                    "Record-Route: <sip:rr1.example.net;lr>, <sip:rr0.example.net;lr>",
                ],
            ),
            b"",
        );
        let m = ok(&bytes);
        assert_eq!(
            route_uris(&m, HeaderName::Route),
            [
                "sip:edge.example.net;lr",
                "sip:core.example.net;lr",
                "sips:[2001:db8::7]:5071;lr",
                "sip:last.example.net;lr",
            ]
        );
        assert_eq!(
            route_uris(&m, HeaderName::RecordRoute),
            [
                "sip:rr2.example.net;lr",
                "sip:rr1.example.net;lr",
                "sip:rr0.example.net;lr"
            ]
        );
        let routes: Vec<RouteValue> = m.routes(HeaderName::Route).map(Result::unwrap).collect();
        assert_eq!(
            t(&m, routes[1].value),
            "\"Core, West\" <sip:core.example.net;lr>;x=1"
        );
        let sole: Vec<bool> = routes.iter().map(|r| r.sole).collect();
        assert_eq!(sole, [false, false, false, true]);
        let uri = parse_uri(m.buf, routes[2].uri).unwrap();
        assert_eq!(uri.scheme, UriScheme::Sips);
        assert_eq!(t(&m, uri.host), "[2001:db8::7]");
        assert_eq!(uri.port, Some(5071));
        assert_eq!(
            uri_param(m.buf, uri.params, b"LR").map(|s| s.len()),
            Some(0)
        );
    }

    #[test]
    fn ipv6_references_in_via_sent_by_and_uris() {
        let bytes = sip(
            &[
                "INVITE sip:[2001:db8::1]:5060;transport=udp SIP/2.0",
                "Via: SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK-v6;received=2001:db8::9;rport=5066",
                "Via: SIP/2.0/UDP [2001:db8:0:0:8:800:200c:417a];branch=z9hG4bK-v6b",
                "From: <sip:finch@[2001:db8::2]>;tag=6",
                "To: <sips:wren@[::ffff:192.0.2.1]:5061>",
                "Call-ID: v6@[2001:db8::2]",
                "CSeq: 1 INVITE",
                "Route: <sip:[2001:db8::7]:5070;lr>",
                "Content-Length: 0",
            ],
            b"",
        );
        let m = ok(&bytes);
        assert_eq!(t(&m, m.top_via.host), "[2001:db8::1]");
        assert_eq!(m.top_via.port, Some(5060));
        assert_eq!(opt(&m, m.top_via.received), Some("2001:db8::9"));
        assert_eq!(m.top_via.rport, Some(Some(5066)));
        let second = m.vias().nth(1).unwrap().unwrap();
        assert_eq!(t(&m, second.host), "[2001:db8:0:0:8:800:200c:417a]");
        assert_eq!(second.port, None);

        let ruri = parse_uri(m.buf, request_uri(&m)).unwrap();
        assert_eq!(ruri.scheme, UriScheme::Sip);
        assert_eq!(ruri.user, None);
        assert_eq!(t(&m, ruri.host), "[2001:db8::1]");
        assert_eq!(ruri.port, Some(5060));
        assert_eq!(
            opt(&m, uri_param(m.buf, ruri.params, b"transport")),
            Some("udp")
        );
        let to = parse_uri(m.buf, m.to.uri).unwrap();
        assert_eq!(to.scheme, UriScheme::Sips);
        assert_eq!(opt(&m, to.user), Some("wren"));
        assert_eq!(t(&m, to.host), "[::ffff:192.0.2.1]");
        assert_eq!(to.port, Some(5061));
        let route = m.routes(HeaderName::Route).next().unwrap().unwrap();
        let route = parse_uri(m.buf, route.uri).unwrap();
        assert_eq!(
            (t(&m, route.host), route.port),
            ("[2001:db8::7]", Some(5070))
        );
    }

    #[test]
    fn request_uri_schemes_sip_sips_tel_and_other() {
        let cases: &[(&str, UriScheme, Option<&str>, &str)] = &[
            (
                "sip:wren@aviary.example",
                UriScheme::Sip,
                Some("wren"),
                "aviary.example",
            ),
            (
                "SIP:Wren@Aviary.Example:5060",
                UriScheme::Sip,
                Some("Wren"),
                "Aviary.Example",
            ),
            (
                "sips:wren:secret@aviary.example;transport=tcp",
                UriScheme::Sips,
                Some("wren"),
                "aviary.example",
            ),
            (
                "sip:%77ren;day=tue@192.0.2.3?Subject=hi",
                UriScheme::Sip,
                Some("%77ren;day=tue"),
                "192.0.2.3",
            ),
            (
                "sip:aviary.example.",
                UriScheme::Sip,
                None,
                "aviary.example.",
            ),
            (
                "tel:+1-555-0100;phone-context=example.com",
                UriScheme::Tel,
                Some("+1-555-0100"),
                "",
            ),
            ("urn:service:sos", UriScheme::Other, None, "service:sos"),
            (
                "mailto:wren@aviary.example",
                UriScheme::Other,
                None,
                "wren@aviary.example",
            ),
            (
                "soap.beep://192.0.2.103:3002",
                UriScheme::Other,
                None,
                "//192.0.2.103:3002",
            ),
            ("x-opaque+v1:whatever", UriScheme::Other, None, "whatever"),
        ];
        for &(uri, scheme, user, host) in cases {
            let start = format!("OPTIONS {uri} SIP/2.0");
            let mut lines = vec![start.as_str()];
            lines.extend(edit(&INVITE[1..], &["CSeq:"], &["CSeq: 41 OPTIONS"]));
            let bytes = sip(&lines, b"");
            let m = ok(&bytes);
            assert_eq!(t(&m, request_uri(&m)), uri);
            let u = parse_uri(m.buf, request_uri(&m)).unwrap();
            assert_eq!(u.scheme, scheme, "{uri}");
            assert_eq!(opt(&m, u.user), user, "{uri}");
            assert_eq!(t(&m, u.host), host, "{uri}");
        }
    }

    #[test]
    fn extension_methods_are_accepted_with_the_same_cseq_method() {
        for method in ["NEWMETHOD", "x-Ext.1!", "invite", "PING"] {
            let start = format!("{method} sip:wren@aviary.example SIP/2.0");
            let cseq = format!("CSeq: 77 {method}");
            let mut lines = vec![start.as_str()];
            lines.extend(edit(&INVITE[1..], &["CSeq:"], &[&cseq]));
            let bytes = sip(&lines, b"");
            let m = ok(&bytes);
            assert_eq!(m.method(), Some(Method::Extension), "{method}");
            assert_eq!(method_text(&m), method);
            assert_eq!(m.cseq_method, Method::Extension);
            assert_eq!(t(&m, m.cseq_method_span), method);
            assert_eq!(Method::Extension.as_str(), None);
        }
    }

    #[test]
    fn known_methods_are_recognised_by_their_exact_token() {
        for method in [
            Method::Invite,
            Method::Ack,
            Method::Bye,
            Method::Cancel,
            Method::Options,
            Method::Register,
            Method::Prack,
            Method::Update,
            Method::Info,
            Method::Subscribe,
            Method::Notify,
            Method::Refer,
            Method::Message,
            Method::Publish,
        ] {
            let token = method.as_str().unwrap();
            assert_eq!(Method::from_token(token.as_bytes()), method);
            assert_eq!(
                Method::from_token(token.to_ascii_lowercase().as_bytes()),
                Method::Extension
            );
        }
    }

    #[test]
    fn quoted_display_names_keep_escapes_and_commas() {
        let bytes = sip(
            &[
                "INVITE sip:wren@aviary.example SIP/2.0",
                "Via: SIP/2.0/UDP perch.meadow.example;branch=z9hG4bK-q",
                r#"From: "Dr. \"Finch\", <not a uri> \\ PhD" <sip:finch@meadow.example>;tag=q1"#,
                r#"To: "J\u00f6rg, \"the\" Wren"<sip:wren@aviary.example>"#,
                "Call-ID: quoted-1",
                "CSeq: 5 INVITE",
                r#"Route: "Edge, East" <sip:edge.example.net;lr>, "\"x\",y" <sip:core.example.net;lr>"#,
                "Contact: \"Jörg Ünal\" <sip:finch@perch.meadow.example>",
            ],
            b"",
        );
        let m = ok(&bytes);
        assert_eq!(
            t(&m, m.from.value),
            r#""Dr. \"Finch\", <not a uri> \\ PhD" <sip:finch@meadow.example>;tag=q1"#
        );
        assert_eq!(t(&m, m.from.uri), "sip:finch@meadow.example");
        assert_eq!(opt(&m, m.from.tag), Some("q1"));
        assert_eq!(t(&m, m.to.uri), "sip:wren@aviary.example");
        assert_eq!(m.to.tag, None);
        let routes: Vec<&str> = m
            .routes(HeaderName::Route)
            .map(|r| t(&m, r.unwrap().value))
            .collect();
        assert_eq!(
            routes,
            [
                r#""Edge, East" <sip:edge.example.net;lr>"#,
                r#""\"x\",y" <sip:core.example.net;lr>"#
            ]
        );
    }

    #[test]
    fn leading_zeros_in_numbers_are_accepted() {
        let bytes = sip(
            &[
                "INVITE sip:wren@aviary.example:005060 SIP/2.0",
                "Via: SIP/2.0/UDP perch.meadow.example:05060;branch=z9hG4bK-z;rport=0005066",
                "Max-Forwards: 0070",
                "From: <sip:finch@meadow.example>;tag=z",
                "To: <sip:wren@aviary.example>",
                "Call-ID: zeros",
                "CSeq: 0000123 INVITE",
                "Content-Length: 0004",
            ],
            b"abcd",
        );
        let m = ok(&bytes);
        assert_eq!(m.cseq, 123);
        assert_eq!(m.max_forwards, Some(70));
        assert_eq!(m.content_length, Some(4));
        assert_eq!(m.slice(m.body), b"abcd");
        assert_eq!(m.top_via.port, Some(5060));
        assert_eq!(m.top_via.rport, Some(Some(5066)));
        assert_eq!(parse_uri(m.buf, request_uri(&m)).unwrap().port, Some(5060));
    }

    #[test]
    fn numbers_at_their_largest_are_accepted() {
        let bytes = sip(
            &edit(
                INVITE,
                &["CSeq:", "Max-Forwards:"],
                &["CSeq: 2147483647 INVITE", "Max-Forwards: 4294967295"],
            ),
            b"",
        );
        let m = ok(&bytes);
        assert_eq!(m.cseq, (1 << 31) - 1);
        assert_eq!(m.max_forwards, Some(u32::MAX));
    }

    #[test]
    fn whitespace_around_colons_and_values_is_accepted() {
        let bytes = sip(
            &[
                "INVITE sip:wren@aviary.example SIP/2.0",
                "Via:SIP/2.0/UDP perch.meadow.example;branch=z9hG4bK-ws",
                "Max-Forwards \t:\t 70 ",
                "From   :<sip:finch@meadow.example>;tag=w",
                "To\t:   <sip:wren@aviary.example>  ",
                "Call-ID  :  spaced-out  ",
                "CSeq:1   INVITE",
                "Subject:",
                "Content-Length\t:\t0\t",
            ],
            b"",
        );
        let m = ok(&bytes);
        assert_eq!(m.max_forwards, Some(70));
        assert_eq!(t(&m, m.headers[1].name_span), "Max-Forwards");
        assert_eq!(t(&m, m.headers[1].value), "70");
        assert_eq!(t(&m, m.from.uri), "sip:finch@meadow.example");
        assert_eq!(t(&m, m.to.value), "<sip:wren@aviary.example>");
        assert_eq!(t(&m, m.call_id), "spaced-out");
        assert_eq!(m.cseq, 1);
        assert_eq!(t(&m, m.header_by_name(b"subject").unwrap().value), "");
        assert_eq!(m.content_length, Some(0));
    }

    #[test]
    fn sent_protocol_may_have_whitespace_around_its_slashes() {
        let bytes = sip(
            &edit(
                INVITE,
                &["Via:"],
                &["Via: sip / 2.0 /udp\t perch.meadow.example : 5064 ; BRANCH = z9hG4bK-sp ;rport"],
            ),
            b"",
        );
        let m = ok(&bytes);
        assert_eq!(m.top_via.transport, Transport::Udp);
        assert_eq!(t(&m, m.top_via.host), "perch.meadow.example");
        assert_eq!(m.top_via.port, Some(5064));
        assert_eq!(opt(&m, m.top_via.branch), Some("z9hG4bK-sp"));
        assert_eq!(m.top_via.rport, Some(None));
    }

    #[test]
    fn unknown_transport_and_via_without_branch_are_kept() {
        let bytes = sip(
            &edit(INVITE, &["Via:"], &["Via: SIP/2.0/X-QUIC old.example.net"]),
            b"",
        );
        let m = ok(&bytes);
        assert_eq!(m.top_via.transport, Transport::Other);
        assert_eq!(m.top_via.branch, None);
        assert_eq!(m.top_via.port, None);
    }

    #[test]
    fn binary_body_is_kept_intact() {
        let mut body: Vec<u8> = (0u8..=255).rev().collect();
        body.extend_from_slice(b"\r\n\r\nINVITE sip:x SIP/2.0\r\n\0");
        let cl = format!("Content-Length: {}", body.len());
        let bytes = sip(&edit(INVITE, &["Content-Length:"], &[&cl]), &body);
        let m = ok(&bytes);
        assert_eq!(m.slice(m.body), &body[..]);
        assert_eq!(m.content_length, Some(body.len()));
        // The torture INVITE carries one too, after a folded and spaced header section.
        let bytes = torture_invite();
        let m = ok(&bytes);
        assert!(m.slice(m.body).ends_with(&(0u8..=255).collect::<Vec<_>>()));
        assert_eq!(m.content_length, Some(m.body.len()));
    }

    #[test]
    fn responses_keep_their_code_and_reason_phrase() {
        let bytes = sip(RINGING, b"");
        let m = ok(&bytes);
        assert!(!m.is_request());
        assert_eq!(m.method(), None);
        assert_eq!(m.code(), Some(180));
        match m.start {
            StartLine::Response { reason, .. } => assert_eq!(t(&m, reason), "Ringing, eventually"),
            StartLine::Request { .. } => unreachable!(),
        }
        assert_eq!(opt(&m, m.to.tag), Some("w-1"));
        for (line, code, reason) in [
            ("SIP/2.0 200 ", 200, ""),
            ("SIP/2.0 699 Ünïcode réason", 699, "Ünïcode réason"),
            ("sip/2.0 100 Trying", 100, "Trying"),
            ("SIP/2.0 404", 404, ""),
        ] {
            let mut lines = vec![line];
            lines.extend_from_slice(&RINGING[1..]);
            let bytes = sip(&lines, b"");
            let m = ok(&bytes);
            assert_eq!(m.code(), Some(code), "{line}");
            match m.start {
                StartLine::Response { reason: r, .. } => assert_eq!(t(&m, r), reason),
                StartLine::Request { .. } => unreachable!(),
            }
        }
    }

    #[test]
    fn response_cseq_method_is_not_compared() {
        let bytes = sip(&edit(RINGING, &["CSeq:"], &["CSeq: 2 NEWMETHOD"]), b"");
        let m = ok(&bytes);
        assert_eq!(m.cseq_method, Method::Extension);
    }

    #[test]
    fn leading_line_ends_before_the_start_line_are_skipped() {
        let mut bytes = b"\r\n\r\n\n".to_vec();
        let msg = sip(INVITE, b"");
        bytes.extend_from_slice(&msg);
        let m = ok(&bytes);
        assert_eq!(m.buf, &msg[..]);
        assert_eq!(m.method(), Some(Method::Invite));
    }

    #[test]
    fn bare_lf_line_ends_are_tolerated() {
        let bytes = format!("{}\n\nbody", INVITE.join("\n")).into_bytes();
        let m = ok(&bytes);
        assert_eq!(m.headers.len(), 8);
        assert_eq!(m.cseq, 41);
        // Content-Length: 0 cuts the rest off.
        assert!(m.body.is_empty());
        assert_eq!(m.buf.len(), bytes.len() - 4);
    }

    #[test]
    fn repeated_content_length_that_agrees_is_accepted() {
        let bytes = sip(
            &edit(
                INVITE,
                &["Content-Length:"],
                &["l: 3", "Content-Length: 003"],
            ),
            b"abc",
        );
        let m = ok(&bytes);
        assert_eq!(m.content_length, Some(3));
        assert_eq!(m.slice(m.body), b"abc");
    }

    #[test]
    fn unknown_headers_pass_through_with_their_bytes() {
        let bytes = sip(
            &edit(
                INVITE,
                &[],
                &[
                    "X-Odd~Name!: ;;,,<<\"\"  ",
                    "P-Asserted-Identity: <sip:finch@meadow.example>,",
                    " <tel:+1-555-0101>",
                    "Unknown: \u{1F426} bird",
                ],
            ),
            b"",
        );
        let m = ok(&bytes);
        let odd = m.header_by_name(b"x-odd~name!").unwrap();
        assert_eq!(odd.name, HeaderName::Other);
        assert_eq!(t(&m, odd.value), ";;,,<<\"\"");
        assert_eq!(t(&m, odd.line), "X-Odd~Name!: ;;,,<<\"\"  \r\n");
        let pai = m.header_by_name(b"P-Asserted-Identity").unwrap();
        assert_eq!(
            t(&m, pai.value),
            "<sip:finch@meadow.example>,\r\n <tel:+1-555-0101>"
        );
        assert_eq!(
            t(&m, m.header_by_name(b"unknown").unwrap().value),
            "\u{1F426} bird"
        );
    }

    #[test]
    fn whitespace_everywhere_it_is_allowed() {
        let bytes = sip(
            &[
                "INVITE sip:heron@marsh.example;oddparam SIP/2.0",
                "TO :",
                " sip:heron@marsh.example ;   tag    = 77aa1",
                r#"from   : "Egret \\\""       <sip:egret@pond.example>"#,
                "  ;",
                "  tag = q9-egret",
                "MaX-fOrWaRdS: 0042",
                "Call-ID: ws.torture.1@192.0.2.10",
                "Content-Length   : 4",
                "cseq: 0012",
                "  INVITE",
                "Via  : SIP  /   2.0",
                " /UDP",
                "    192.0.2.10;branch=z9hG4bK.ws1",
                "s :",
                "NewHeader:   a value",
                " that keeps going",
                "OddValue: ;;,,;;,;",
                "Route:",
                " <sip:edge.marsh.example;lr;odd=value;bare>",
                "v:  SIP  / 2.0  / TCP     reed.example   ;",
                "  branch  =   z9hG4bK.ws2  ,",
                " SIP  /    2.0   / UDP  192.0.2.11   ; branch=",
                " z9hG4bK.ws3",
                r#"m:"Quoted \"\"" <sip:egret@pond.example> ; p ="#,
                "      v ;",
                "  bare ; q = 0.5",
            ],
            b"abcd",
        );
        let m = ok(&bytes);
        assert_eq!(t(&m, m.to.uri), "sip:heron@marsh.example");
        assert_eq!(opt(&m, m.to.tag), Some("77aa1"));
        assert_eq!(t(&m, m.from.uri), "sip:egret@pond.example");
        assert_eq!(opt(&m, m.from.tag), Some("q9-egret"));
        assert_eq!(m.max_forwards, Some(42));
        assert_eq!((m.cseq, m.cseq_method), (12, Method::Invite));
        assert_eq!(branches(&m), ["z9hG4bK.ws1", "z9hG4bK.ws2", "z9hG4bK.ws3"]);
        assert_eq!(t(&m, m.top_via.host), "192.0.2.10");
        let vias: Vec<Via> = m.vias().map(Result::unwrap).collect();
        assert_eq!(vias[1].transport, Transport::Tcp);
        assert_eq!(t(&m, vias[1].host), "reed.example");
        assert_eq!(t(&m, vias[2].host), "192.0.2.11");
        assert_eq!(
            route_uris(&m, HeaderName::Route),
            ["sip:edge.marsh.example;lr;odd=value;bare"]
        );
        assert_eq!(m.slice(m.body), b"abcd");
        fuzzing::forward_roundtrip(&bytes);
    }

    #[test]
    fn odd_method_tokens_and_odd_uris_are_accepted() {
        let method = "!odd-Method0123456789_*+`.%'~";
        let uri = "sip:1_odd.URI~(is-it!sure)&yes+it$/odd?,/;;*:&it+is=1,odd!*pa$s~w_d.(isn't-it)@marsh.example";
        let start = format!("{method} {uri} SIP/2.0");
        let cseq = format!("CSeq: 3882340 {method}");
        let mut lines = vec![start.as_str()];
        lines.extend(edit(&INVITE[1..], &["CSeq:"], &[&cseq]));
        let bytes = sip(&lines, b"");
        let m = ok(&bytes);
        assert_eq!(m.method(), Some(Method::Extension));
        assert_eq!(method_text(&m), method);
        assert_eq!(t(&m, request_uri(&m)), uri);
        let u = parse_uri(m.buf, request_uri(&m)).unwrap();
        assert_eq!(u.scheme, UriScheme::Sip);
        assert_eq!(t(&m, u.host), "marsh.example");
        // An escaped method name is just a token, not the method it spells.
        let bytes = sip(
            &[
                "RE%47IST%45R sip:registrar.marsh.example SIP/2.0",
                "Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK.esc",
                "From: <sip:heron@marsh.example>;tag=1",
                "To: <sip:heron@marsh.example>",
                "Call-ID: esc-method",
                "CSeq: 1 RE%47IST%45R",
            ],
            b"",
        );
        assert_eq!(ok(&bytes).method(), Some(Method::Extension));
    }

    #[test]
    fn escaped_and_null_characters_in_uris_pass_through() {
        let bytes = sip(
            &[
                "INVITE sip:nul-%00-nul@marsh.example SIP/2.0",
                "Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK.nul",
                "From: <sip:sips%3Aheron%40marsh.example@pond.example>;tag=e",
                "To: <sip:nul-%00-nul@marsh.example>",
                "Call-ID: escaped",
                "CSeq: 1 INVITE",
                "Route: <sip:edge.marsh.example?Route=%3Csip:core.example%3E;lr>",
            ],
            b"",
        );
        let m = ok(&bytes);
        let ruri = parse_uri(m.buf, request_uri(&m)).unwrap();
        assert_eq!(opt(&m, ruri.user), Some("nul-%00-nul"));
        let from = parse_uri(m.buf, m.from.uri).unwrap();
        assert_eq!(opt(&m, from.user), Some("sips%3Aheron%40marsh.example"));
        assert_eq!(t(&m, from.host), "pond.example");
        let route = m.routes(HeaderName::Route).next().unwrap().unwrap();
        let route = parse_uri(m.buf, route.uri).unwrap();
        assert_eq!(t(&m, route.host), "edge.marsh.example");
        // What follows `?` is headers, not URI parameters.
        assert_eq!(uri_param(m.buf, route.params, b"lr"), None);
    }

    #[test]
    fn header_spans_cover_whole_lines_in_order() {
        let bytes = torture_invite();
        let m = ok(&bytes);
        let start_line_end = bytes.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
        let mut at = start_line_end as u32;
        for h in &m.headers {
            assert_eq!(h.line.start, at, "headers are contiguous");
            assert_eq!(h.name_span.start, h.line.start);
            assert!(h.value.start >= h.name_span.end && h.value.end <= h.line.end);
            assert!(m.slice(h.line).ends_with(b"\r\n"));
            at = h.line.end;
        }
        assert_eq!(at + 2, m.headers_end, "then the empty line");
    }
}

mod rejected {
    use super::*;

    fn with_start_line(line: &str) -> Vec<u8> {
        let mut lines = vec![line];
        lines.extend_from_slice(&INVITE[1..]);
        sip(&lines, b"")
    }

    #[test]
    fn bad_request_lines_are_rejected() {
        for line in [
            "INVITE",
            "INVITE sip:wren@aviary.example",
            "INVITE  sip:wren@aviary.example SIP/2.0",
            "INVITE sip:wren@aviary.example  SIP/2.0",
            "INVITE sip:wren@aviary.example SIP/2.0 ",
            "INVITE sip:wren@aviary.example SIP/2.0 trailing",
            " INVITE sip:wren@aviary.example SIP/2.0",
            "INVITE\tsip:wren@aviary.example\tSIP/2.0",
            "IN(VITE sip:wren@aviary.example SIP/2.0",
            "INVITE <sip:wren@aviary.example> SIP/2.0",
            "INVITE wren@aviary.example SIP/2.0",
            "INVITE 1sip:wren@aviary.example SIP/2.0",
            "INVITE sip:wren@avi\x01ary.example SIP/2.0",
            "INVITE sip:wr\u{e9}n@aviary.example SIP/2.0",
        ] {
            let e = err(&with_start_line(line));
            assert!(matches!(e, ScanError::BadStartLine(_)), "{line:?}: {e:?}");
            assert_eq!(e.kind().as_str(), "bad_start_line");
        }
    }

    #[test]
    fn bad_status_lines_are_rejected() {
        for line in [
            "SIP/2.0",
            "SIP/2.0 20 OK",
            "SIP/2.0 2000 OK",
            "SIP/2.0 200OK",
            "SIP/2.0  200 OK",
            "SIP/2.0 099 Too Low",
            "SIP/2.0 700 Too High",
            "SIP/2.0 2x0 Bad",
            "SIP/2.0 -20 Bad",
        ] {
            let mut lines = vec![line];
            lines.extend_from_slice(&RINGING[1..]);
            let e = err(&sip(&lines, b""));
            assert!(matches!(e, ScanError::BadStartLine(_)), "{line:?}: {e:?}");
        }
    }

    #[test]
    fn empty_or_blank_message_is_a_bad_start_line() {
        assert_eq!(err(b""), ScanError::BadStartLine("empty message"));
        assert_eq!(err(b"\r\n\r\n"), ScanError::BadStartLine("empty message"));
    }

    #[test]
    fn unknown_sip_version_is_rejected() {
        for line in [
            "INVITE sip:wren@aviary.example SIP/3.0",
            "INVITE sip:wren@aviary.example SIP/2.1",
            "INVITE sip:wren@aviary.example SIP/20",
            "INVITE sip:wren@aviary.example HTTP/1.1",
            "SIP/3.0 200 OK",
            "SIP/2.00 200 OK",
            "SIP/ 200 OK",
        ] {
            assert_eq!(
                err(&with_start_line(line)),
                ScanError::UnknownVersion,
                "{line}"
            );
        }
    }

    #[test]
    fn each_missing_mandatory_header_is_named() {
        for (prefix, name) in [
            ("Via:", "Via"),
            ("From:", "From"),
            ("To:", "To"),
            ("Call-ID:", "Call-ID"),
            ("CSeq:", "CSeq"),
        ] {
            let bytes = sip(&edit(INVITE, &[prefix], &[]), b"");
            let e = err(&bytes);
            assert_eq!(e, ScanError::MissingHeader(name));
            assert_eq!(e.kind().as_str(), "missing_header");
        }
        // A response needs them too.
        let bytes = sip(&edit(RINGING, &["Call-ID:"], &[]), b"");
        assert_eq!(err(&bytes), ScanError::MissingHeader("Call-ID"));
        // Max-Forwards is not mandatory for the scanner.
        ok(&sip(&edit(INVITE, &["Max-Forwards:"], &[]), b""));
    }

    #[test]
    fn cseq_method_must_match_the_request_method() {
        for (start, cseq) in [
            ("INVITE sip:wren@aviary.example SIP/2.0", "CSeq: 41 BYE"),
            ("INVITE sip:wren@aviary.example SIP/2.0", "CSeq: 41 invite"),
            ("ACK sip:wren@aviary.example SIP/2.0", "CSeq: 41 INVITE"),
            ("CANCEL sip:wren@aviary.example SIP/2.0", "CSeq: 41 INVITE"),
            (
                "NEWMETHOD sip:wren@aviary.example SIP/2.0",
                "CSeq: 41 NEWMETHODX",
            ),
            (
                "NEWMETHOD sip:wren@aviary.example SIP/2.0",
                "CSeq: 41 INVITE",
            ),
            (
                "NEWMETHOD sip:wren@aviary.example SIP/2.0",
                "CSeq: 41 NEWMETHO",
            ),
        ] {
            let mut lines = vec![start];
            lines.extend(edit(&INVITE[1..], &["CSeq:"], &[cseq]));
            assert_eq!(
                err(&sip(&lines, b"")),
                ScanError::CSeqMethodMismatch,
                "{start} / {cseq}"
            );
        }
    }

    fn with_content_length(values: &[&str], body: &[u8]) -> ScanError {
        let lines: Vec<String> = values
            .iter()
            .map(|v| format!("Content-Length: {v}"))
            .collect();
        let extra: Vec<&str> = lines.iter().map(String::as_str).collect();
        err(&sip(&edit(INVITE, &["Content-Length:"], &extra), body))
    }

    #[test]
    fn negative_content_length_is_rejected() {
        assert_eq!(
            with_content_length(&["-4"], b"abcd"),
            ScanError::BadContentLength("negative")
        );
        assert_eq!(
            with_content_length(&["-0"], b""),
            ScanError::BadContentLength("negative")
        );
    }

    #[test]
    fn non_numeric_content_length_is_rejected() {
        for v in ["four", "4a", "+4", "0x10", "4 4", "4.0", "\u{664}"] {
            assert_eq!(
                with_content_length(&[v], b"abcd"),
                ScanError::BadContentLength("not a decimal number"),
                "{v}"
            );
        }
        assert_eq!(
            with_content_length(&[""], b""),
            ScanError::BadContentLength("empty value")
        );
    }

    #[test]
    fn oversized_content_length_is_rejected() {
        let too_big = (Limits::default().max_message_size + 1).to_string();
        for v in [
            too_big.as_str(),
            "4294967296",
            "99999999999999999999999999999",
        ] {
            assert_eq!(
                with_content_length(&[v], b""),
                ScanError::BadContentLength("larger than the maximum message size"),
                "{v}"
            );
        }
    }

    #[test]
    fn conflicting_content_lengths_are_rejected() {
        let e = with_content_length(&["4", "5"], b"abcde");
        assert_eq!(e, ScanError::ConflictingContentLength);
        assert_eq!(e.kind().as_str(), "conflicting_content_length");
        // Compact and full forms are the same header.
        let bytes = sip(
            &edit(INVITE, &["Content-Length:"], &["l: 0", "Content-Length: 1"]),
            b"x",
        );
        assert_eq!(err(&bytes), ScanError::ConflictingContentLength);
    }

    #[test]
    fn header_section_without_an_empty_line_is_rejected() {
        let mut bytes = INVITE.join("\r\n").into_bytes();
        bytes.extend_from_slice(b"\r\n");
        assert_eq!(err(&bytes), ScanError::NoEndOfHeaders);
        // A message cut inside a header line, or without any line end at all.
        let whole = sip(INVITE, b"");
        assert_eq!(err(&whole[..whole.len() - 10]), ScanError::NoEndOfHeaders);
        assert_eq!(
            err(b"INVITE sip:wren@aviary.example SIP/2.0"),
            ScanError::NoEndOfHeaders
        );
        // A single CRLF after the last header is not the empty line.
        assert_eq!(err(&whole[..whole.len() - 2]), ScanError::NoEndOfHeaders);
    }

    #[test]
    fn malformed_mandatory_headers_are_bad_headers() {
        let cases: &[(&[&str], &[&str], &str)] = &[
            (&["Call-ID:"], &["Call-ID: two words"], "Call-ID"),
            (&["Call-ID:"], &["Call-ID:   "], "Call-ID"),
            (&[], &["i: second-call-id"], "Call-ID"),
            (&[], &["f: <sip:other@meadow.example>;tag=2"], "From"),
            (
                &["From:"],
                &["From: \"unterminated <sip:finch@meadow.example>"],
                "From",
            ),
            (&["To:"], &["To: <sip:wren@aviary.example"], "To"),
            (&["To:"], &["To: <sip:wren@aviary.example>;tag="], "To"),
            (&["CSeq:"], &["CSeq: INVITE"], "CSeq"),
            (&["CSeq:"], &["CSeq: 41INVITE"], "CSeq"),
            (&["CSeq:"], &["CSeq: 2147483648 INVITE"], "CSeq"),
            (&["CSeq:"], &["CSeq: 41 INVITE extra"], "CSeq"),
            (&["CSeq:"], &["CSeq: -1 INVITE"], "CSeq"),
            (&[], &["CSeq: 42 INVITE"], "CSeq"),
            (
                &["Max-Forwards:"],
                &["Max-Forwards: seventy"],
                "Max-Forwards",
            ),
            (
                &["Max-Forwards:"],
                &["Max-Forwards: 4294967296"],
                "Max-Forwards",
            ),
            (&[], &["Max-Forwards: 70"], "Max-Forwards"),
            (
                &["Via:"],
                &["Via: SIP/3.0/UDP perch.meadow.example;branch=z9hG4bK-1"],
                "Via",
            ),
            (&["Via:"], &["Via: SIP/2.0/UDPperch.meadow.example"], "Via"),
            (
                &["Via:"],
                &["Via: SIP/2.0/UDP perch.meadow.example:70000"],
                "Via",
            ),
            (
                &["Via:"],
                &["Via: SIP/2.0/UDP [2001:db8::1;branch=z9hG4bK-1"],
                "Via",
            ),
            (
                &["Via:"],
                &["Via: SIP/2.0/UDP perch.meadow.example;branch"],
                "Via",
            ),
            (
                &["Via:"],
                &["Via: SIP/2.0/UDP perch.meadow.example;branch=z9hG4bK-1,"],
                "Via",
            ),
            (
                &["Via:"],
                &["Via: SIP/2.0/UDP perch.meadow.example;rport=x"],
                "Via",
            ),
            (
                &["Via:"],
                &["Via: SIP/2.0/UDP perch.meadow.example junk"],
                "Via",
            ),
            (&[], &["Broken header without colon"], "header"),
            (&[], &[": no name"], "header"),
        ];
        for &(drop, add, header) in cases {
            let bytes = sip(&edit(INVITE, drop, add), b"");
            match err(&bytes) {
                ScanError::BadHeader { header: h, .. } => assert_eq!(h, header, "{add:?}"),
                e => panic!("{add:?}: {e:?}"),
            }
        }
    }

    #[test]
    fn a_header_line_may_not_start_with_whitespace_after_the_start_line() {
        let bytes = sip(
            &[
                "INVITE sip:wren@aviary.example SIP/2.0",
                " Via: SIP/2.0/UDP perch.meadow.example;branch=z9hG4bK-1",
            ],
            b"",
        );
        assert!(matches!(err(&bytes), ScanError::BadHeader { .. }));
    }

    #[test]
    fn message_larger_than_max_message_size_is_rejected() {
        let bytes = sip(INVITE, b"");
        let exact = Limits {
            max_message_size: bytes.len(),
            ..Limits::default()
        };
        ok_with(&bytes, &exact);
        let smaller = Limits {
            max_message_size: bytes.len() - 1,
            ..Limits::default()
        };
        let e = err_with(&bytes, &smaller);
        assert_eq!(
            e,
            ScanError::TooLarge {
                limit: bytes.len() - 1
            }
        );
        assert_eq!(e.kind().as_str(), "too_large");
        assert_eq!(
            frame_stream(&bytes, &smaller),
            Err(ScanError::TooLarge {
                limit: bytes.len() - 1
            })
        );
        assert_eq!(
            frame_stream(&bytes, &exact),
            Ok(StreamFrame::Message(bytes.len()))
        );
    }

    #[test]
    fn more_headers_than_max_headers_is_rejected() {
        // A folded header counts once.
        let bytes = sip(
            &edit(INVITE, &[], &["Subject: one", " two", "\tthree"]),
            b"",
        );
        let nine = Limits {
            max_headers: 9,
            ..Limits::default()
        };
        assert_eq!(ok_with(&bytes, &nine).headers.len(), 9);
        let eight = Limits {
            max_headers: 8,
            ..Limits::default()
        };
        assert_eq!(
            err_with(&bytes, &eight),
            ScanError::TooManyHeaders { limit: 8 }
        );
        assert_eq!(
            frame_stream(&bytes, &eight),
            Err(ScanError::TooManyHeaders { limit: 8 })
        );
        assert_eq!(
            frame_stream(&bytes, &nine),
            Ok(StreamFrame::Message(bytes.len()))
        );
    }

    #[test]
    fn line_longer_than_max_line_length_is_rejected() {
        let longest = INVITE.iter().map(|l| l.len()).max().unwrap();
        let bytes = sip(INVITE, b"");
        let exact = Limits {
            max_line_length: longest,
            ..Limits::default()
        };
        ok_with(&bytes, &exact);
        let shorter = Limits {
            max_line_length: longest - 1,
            ..Limits::default()
        };
        assert_eq!(
            err_with(&bytes, &shorter),
            ScanError::LineTooLong { limit: longest - 1 }
        );
        assert_eq!(
            frame_stream(&bytes, &shorter),
            Err(ScanError::LineTooLong { limit: longest - 1 })
        );
        // The start line counts, without a single header.
        let tiny = Limits {
            max_line_length: 10,
            ..Limits::default()
        };
        assert_eq!(
            err_with(&bytes, &tiny),
            ScanError::LineTooLong { limit: 10 }
        );
        // An over-long line is reported even before its line end arrives.
        let cut = &bytes[..INVITE[0].len() - 2];
        assert_eq!(err_with(cut, &tiny), ScanError::LineTooLong { limit: 10 });
        assert_eq!(
            frame_stream(cut, &tiny),
            Err(ScanError::LineTooLong { limit: 10 })
        );
    }

    #[test]
    fn max_line_length_is_per_physical_line_of_a_folded_header() {
        let long = format!("Subject: {}", "s".repeat(40));
        let fold = format!(" {}", "f".repeat(40));
        let bytes = sip(&edit(INVITE, &[], &[&long, &fold, &fold]), b"");
        let limits = Limits {
            max_line_length: INVITE
                .iter()
                .map(|l| l.len())
                .max()
                .unwrap()
                .max(long.len()),
            ..Limits::default()
        };
        let m = ok_with(&bytes, &limits);
        assert!(m.header_by_name(b"Subject").unwrap().line.len() > limits.max_line_length);
        let bytes = sip(
            &edit(
                INVITE,
                &[],
                &["Subject: x", &format!(" {}", "f".repeat(200))],
            ),
            b"",
        );
        assert_eq!(
            err_with(&bytes, &limits),
            ScanError::LineTooLong {
                limit: limits.max_line_length
            }
        );
    }

    #[test]
    fn more_vias_than_max_via_is_rejected() {
        let three = Limits {
            max_via: 3,
            ..Limits::default()
        };
        let vias = [
            "Via: SIP/2.0/UDP a.example;branch=z9hG4bK-1, SIP/2.0/UDP b.example;branch=z9hG4bK-2",
            "v: SIP/2.0/UDP c.example;branch=z9hG4bK-3",
        ];
        let bytes = sip(&edit(INVITE, &["Via:"], &vias), b"");
        assert_eq!(ok_with(&bytes, &three).via_count, 3);
        let bytes = sip(
            &edit(
                INVITE,
                &["Via:"],
                &[
                    vias[0],
                    vias[1],
                    "Via: SIP/2.0/UDP d.example;branch=z9hG4bK-4",
                ],
            ),
            b"",
        );
        assert_eq!(
            err_with(&bytes, &three),
            ScanError::TooManyVias { limit: 3 }
        );
        // Comma-joined values count one by one.
        let bytes = sip(
            &edit(INVITE, &["Via:"], &["Via: SIP/2.0/UDP a.example;branch=z9hG4bK-1,SIP/2.0/UDP b.example,SIP/2.0/UDP c.example,SIP/2.0/UDP d.example"]),
            b"",
        );
        let e = err_with(&bytes, &three);
        assert_eq!(e, ScanError::TooManyVias { limit: 3 });
        assert_eq!(e.kind().as_str(), "too_many_vias");
    }

    #[test]
    fn default_limits_are_sane() {
        let l = Limits::default();
        // Room for a large INVITE with SDP over UDP, but bounded.
        assert!((8 * 1024..=1 << 20).contains(&l.max_message_size), "{l:?}");
        assert!(l.max_message_size <= u32::MAX as usize);
        assert!(
            (1024..=l.max_message_size).contains(&l.max_line_length),
            "{l:?}"
        );
        assert!((40..=1000).contains(&l.max_headers), "{l:?}");
        assert!((8..=256).contains(&l.max_via), "{l:?}");
        assert!(l.max_via <= l.max_headers);
        // And every valid message of these tests fits.
        for (name, bytes) in valid_messages() {
            assert!(scan(&bytes, Framing::Datagram, &l).is_ok(), "{name}");
        }
    }

    #[test]
    fn error_kinds_are_distinct_labels() {
        let errors = [
            ScanError::BadStartLine("x"),
            ScanError::UnknownVersion,
            ScanError::MissingHeader("Via"),
            ScanError::BadHeader {
                header: "Via",
                reason: "x",
            },
            ScanError::CSeqMethodMismatch,
            ScanError::BadContentLength("x"),
            ScanError::ConflictingContentLength,
            ScanError::ContentLengthExceedsBody {
                declared: 2,
                available: 1,
            },
            ScanError::MissingContentLength,
            ScanError::NoEndOfHeaders,
            ScanError::TooLarge { limit: 1 },
            ScanError::TooManyHeaders { limit: 1 },
            ScanError::LineTooLong { limit: 1 },
            ScanError::TooManyVias { limit: 1 },
            ScanError::BadUri("x"),
        ];
        // Each error has a kind of its own, and every kind in `ALL` is some error's.
        let kinds: Vec<ParseErrorKind> = errors.iter().map(ScanError::kind).collect();
        assert_eq!(kinds, ParseErrorKind::ALL);
        // `ALL` is in discriminant order (the metrics index it so), and its labels are distinct
        // (two kinds sharing one would merge their series).
        let mut labels = std::collections::HashSet::new();
        for (i, kind) in ParseErrorKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i, "{kind:?} is out of place in ALL");
            let label = kind.as_str();
            assert!(!label.is_empty() && !label.contains(' '), "{label:?}");
            assert!(labels.insert(label), "{label} is a label twice");
            assert_ne!(label, crate::metrics::PARSE_ERROR_OTHER);
        }
    }

    #[test]
    fn malformed_uris_are_bad_uris() {
        for uri in [
            "sip:",
            "sip:@aviary.example",
            "sip:wren@",
            "sip:wren@aviary.example:99999",
            "sip:wren@aviary.example:50x0",
            "sip:wren@[2001:db8::1",
            "sip:wren@[]",
            "sip:wren@aviary example",
            "tel:",
            "tel:;phone-context=x",
            "1sip:wren@aviary.example",
            "no-scheme",
        ] {
            let buf = uri.as_bytes();
            assert!(
                matches!(
                    parse_uri(buf, Span::new(0, buf.len())),
                    Err(ScanError::BadUri(_))
                ),
                "{uri}"
            );
        }
    }
}

mod datagram {
    use super::*;

    fn with_cl(cl: Option<&str>, body: &[u8]) -> Vec<u8> {
        let line = cl.map(|v| format!("Content-Length: {v}"));
        let extra: Vec<&str> = line.iter().map(String::as_str).collect();
        sip(&edit(INVITE, &["Content-Length:"], &extra), body)
    }

    #[test]
    fn bytes_after_content_length_are_discarded() {
        let bytes = with_cl(Some("4"), b"abcdTRAILING\r\n\r\nJUNK");
        let m = ok(&bytes);
        assert_eq!(m.body.len(), 4);
        assert_eq!(m.slice(m.body), b"abcd");
        assert_eq!(m.buf.len(), m.headers_end as usize + 4);
        assert_eq!(m.buf, &bytes[..bytes.len() - 16]);
        // Content-Length: 0 discards a whole stray "body".
        let bytes = with_cl(Some("0"), b"v=0\r\n");
        let m = ok(&bytes);
        assert!(m.body.is_empty());
        assert_eq!(m.buf.len(), bytes.len() - 5);
    }

    #[test]
    fn content_length_beyond_the_datagram_is_an_error() {
        let bytes = with_cl(Some("10"), b"abcd");
        let e = err(&bytes);
        assert_eq!(
            e,
            ScanError::ContentLengthExceedsBody {
                declared: 10,
                available: 4
            }
        );
        assert_eq!(e.kind().as_str(), "content_length_exceeds_body");
        // Exactly the bytes there are is fine.
        assert_eq!(ok(&with_cl(Some("4"), b"abcd")).body.len(), 4);
    }

    #[test]
    fn missing_content_length_means_the_body_is_the_rest_of_the_datagram() {
        let body = b"v=0\r\n\r\n\0\xffrest";
        let bytes = with_cl(None, body);
        let m = ok(&bytes);
        assert_eq!(m.content_length, None);
        assert_eq!(m.slice(m.body), body);
        assert_eq!(m.buf, &bytes[..]);
        let bytes = with_cl(None, b"");
        assert!(ok(&bytes).body.is_empty());
    }

    #[test]
    fn whitespace_only_datagrams_are_keepalives() {
        assert!(is_keepalive(b"\r\n\r\n"));
        assert!(is_keepalive(b"\r\n"));
        assert!(is_keepalive(b""));
        assert!(is_keepalive(b" \t\r\n"));
        assert!(!is_keepalive(b"\r\nx"));
        assert!(!is_keepalive(&sip(INVITE, b"")));
    }
}

mod stream {
    use super::*;

    fn framed(bytes: &[u8]) -> Result<StreamFrame, ScanError> {
        frame_stream(bytes, &Limits::default())
    }

    fn with_body(body: &[u8]) -> Vec<u8> {
        let cl = format!("Content-Length: {}", body.len());
        sip(&edit(INVITE, &["Content-Length:"], &[&cl]), body)
    }

    #[test]
    fn stream_framing_requires_content_length() {
        let bytes = sip(&edit(INVITE, &["Content-Length:"], &[]), b"");
        assert_eq!(framed(&bytes), Err(ScanError::MissingContentLength));
        let e = scan(&bytes, Framing::Stream, &Limits::default()).unwrap_err();
        assert_eq!(e, ScanError::MissingContentLength);
        assert_eq!(e.kind().as_str(), "missing_content_length");
    }

    #[test]
    fn frame_stream_frames_back_to_back_messages() {
        let first = with_body(b"hello\r\n\r\nworld");
        let second = sip(
            &edit(RINGING, &["Content-Length:"], &["l: 3"]),
            b"\0\x01\x02",
        );
        let mut buf = first.clone();
        buf.extend_from_slice(&second);
        buf.extend_from_slice(b"INVITE sip:partial");

        let Ok(StreamFrame::Message(n)) = framed(&buf) else {
            panic!("first message not framed: {:?}", framed(&buf));
        };
        assert_eq!(n, first.len());
        let m = scan(&buf[..n], Framing::Stream, &Limits::default()).unwrap();
        assert_eq!(m.slice(m.body), b"hello\r\n\r\nworld");
        assert_eq!(m.buf.len(), n);

        let rest = &buf[n..];
        assert_eq!(framed(rest), Ok(StreamFrame::Message(second.len())));
        let m = scan(&rest[..second.len()], Framing::Stream, &Limits::default()).unwrap();
        assert_eq!(m.code(), Some(180));
        assert_eq!(m.slice(m.body), b"\0\x01\x02");

        assert_eq!(framed(&rest[second.len()..]), Ok(StreamFrame::Incomplete));
    }

    #[test]
    fn frame_stream_looks_no_further_than_one_message() {
        // Two messages that each fit the size limit, though both together do not.
        let one = with_body(b"abc");
        let limits = Limits {
            max_message_size: one.len(),
            ..Limits::default()
        };
        let mut buf = one.clone();
        buf.extend_from_slice(&one);
        assert_eq!(
            frame_stream(&buf, &limits),
            Ok(StreamFrame::Message(one.len()))
        );
        // A header section that never ends is cut off at the size limit, not buffered forever.
        let mut endless = b"INVITE sip:wren@aviary.example SIP/2.0\r\n".to_vec();
        while endless.len() < limits.max_message_size + 100 {
            endless.extend_from_slice(b"X-Filler: more and more\r\n");
        }
        assert_eq!(
            frame_stream(&endless, &limits),
            Err(ScanError::TooLarge {
                limit: limits.max_message_size
            })
        );
        // A Content-Length that takes the message past the limit is refused before the body
        // arrives (one past the limit on its own is a bad Content-Length).
        let cl = format!("Content-Length: {}", limits.max_message_size - 10);
        let huge = sip(&edit(INVITE, &["Content-Length:"], &[&cl]), b"");
        assert_eq!(
            frame_stream(&huge, &limits),
            Err(ScanError::TooLarge {
                limit: limits.max_message_size
            })
        );
    }

    #[test]
    fn frame_stream_reports_incomplete_for_every_partial_message() {
        let whole = with_body(b"0123456789");
        for cut in 0..whole.len() {
            assert_eq!(
                framed(&whole[..cut]),
                Ok(StreamFrame::Incomplete),
                "cut at {cut}: {:?}",
                String::from_utf8_lossy(&whole[..cut])
            );
        }
        assert_eq!(framed(&whole), Ok(StreamFrame::Message(whole.len())));
    }

    #[test]
    fn frame_stream_skips_crlf_keepalives() {
        let msg = with_body(b"");
        let mut buf = b"\r\n\r\n".to_vec();
        buf.extend_from_slice(&msg);
        assert_eq!(framed(&buf), Ok(StreamFrame::Keepalive(4)));
        assert_eq!(framed(&buf[4..]), Ok(StreamFrame::Message(msg.len())));
        assert_eq!(framed(b"\r\n"), Ok(StreamFrame::Keepalive(2)));
        assert_eq!(framed(b"\r\n\r\n\r\n"), Ok(StreamFrame::Keepalive(6)));
        assert_eq!(framed(b""), Ok(StreamFrame::Incomplete));
    }

    #[test]
    fn frame_stream_frames_a_message_scan_rejects() {
        // The stream survives: the bad message is framed by its Content-Length and can be
        // answered 400 once `scan` says why.
        let bytes = sip(
            &edit(
                INVITE,
                &["Call-ID:", "Content-Length:"],
                &["Call-ID: has spaces", "l: 2"],
            ),
            b"ok",
        );
        assert_eq!(framed(&bytes), Ok(StreamFrame::Message(bytes.len())));
        let e = scan(&bytes, Framing::Stream, &Limits::default()).unwrap_err();
        assert!(
            matches!(
                e,
                ScanError::BadHeader {
                    header: "Call-ID",
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn frame_stream_rejects_an_unframeable_content_length() {
        for cl in ["l: -1", "Content-Length: x", "Content-Length: 99999999999"] {
            let bytes = sip(&edit(INVITE, &["Content-Length:"], &[cl]), b"");
            assert!(
                matches!(framed(&bytes), Err(ScanError::BadContentLength(_))),
                "{cl}"
            );
        }
        let bytes = sip(
            &edit(INVITE, &["Content-Length:"], &["l: 1", "Content-Length: 2"]),
            b"ab",
        );
        assert_eq!(framed(&bytes), Err(ScanError::ConflictingContentLength));
    }

    #[test]
    fn stream_scan_ignores_bytes_after_content_length() {
        let mut bytes = with_body(b"abc");
        let len = bytes.len();
        bytes.extend_from_slice(b"next message");
        let m = scan(&bytes, Framing::Stream, &Limits::default()).unwrap();
        assert_eq!(m.buf.len(), len);
        assert_eq!(m.slice(m.body), b"abc");
    }
}

mod salvage {
    use super::*;

    const OUTBOUND: &[&str] = &[
        "INVITE sip:wren@aviary.example SIP/2.0",
        "Via: SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bK-out-77,SIP/2.0/UDP perch.meadow.example;branch=z9hG4bK-m1",
        "Max-Forwards: 69",
        "From: \"Finch\" <sip:finch@meadow.example>;tag=f-881",
        "To: <sip:wren@aviary.example>",
        "Call-ID: 7f3a-meadow-0001@perch.meadow.example",
        "CSeq: 41 INVITE",
        "Content-Type: application/sdp",
        "Content-Length: 20",
    ];

    #[test]
    fn bounced_request_salvages_method_and_branch_from_any_cut_after_the_top_via() {
        let bytes = sip(OUTBOUND, b"v=0\r\no=- 1 1 IN IP4");
        let via_end = OUTBOUND[0].len() + 2 + OUTBOUND[1].len() + 2;
        for cut in via_end..=bytes.len() {
            let quoted = &bytes[..cut];
            let b = bounced_request(quoted).unwrap_or_else(|| panic!("cut at {cut}"));
            assert_eq!(b.method, Method::Invite);
            assert_eq!(b.branch.get(quoted), b"z9hG4bK-out-77", "cut at {cut}");
        }
    }

    #[test]
    fn bounced_request_is_none_when_the_via_line_is_cut() {
        let bytes = sip(OUTBOUND, b"");
        let via_end = OUTBOUND[0].len() + 2 + OUTBOUND[1].len() + 2;
        for cut in 0..via_end {
            assert_eq!(bounced_request(&bytes[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn bounced_request_finds_a_via_after_other_headers_and_in_any_form() {
        let bytes = sip(
            &[
                "NEWMETHOD sip:wren@aviary.example SIP/2.0",
                "Route: <sip:edge.example.net;lr>",
                "Max-Forwards: 69",
                "v :SIP/2.0/TCP [2001:db8::1]:5060 ; branch = z9hG4bK-v6 , SIP/2.0/UDP x.example;branch=no",
                "Via: SIP/2.0/UDP y.example;branch=no-either",
            ],
            b"",
        );
        let cut = bytes.len() - 30;
        let b = bounced_request(&bytes[..cut]).unwrap();
        assert_eq!(b.method, Method::Extension);
        assert_eq!(b.branch.get(&bytes), b"z9hG4bK-v6");
    }

    #[test]
    fn bounced_request_is_none_without_a_usable_top_via() {
        // A response is not a request pointsman sent.
        assert_eq!(bounced_request(&sip(RINGING, b"")), None);
        // No Via before the header section ends.
        assert_eq!(
            bounced_request(&sip(&edit(INVITE, &["Via:"], &[]), b"")),
            None
        );
        // A top Via without a branch, or malformed.
        for via in [
            "Via: SIP/2.0/UDP 203.0.113.1:5060",
            "Via: SIP/2.0/UDP 203.0.113.1:5060;branch",
            "Via: garbage",
        ] {
            let bytes = sip(&edit(INVITE, &["Via:"], &[via]), b"");
            assert_eq!(bounced_request(&bytes), None, "{via}");
        }
        assert_eq!(bounced_request(b""), None);
        assert_eq!(bounced_request(b"\r\n"), None);
    }

    fn line_text<'a>(rc: &ReplyContext<'a>, span: Span) -> &'a str {
        std::str::from_utf8(span.get(rc.buf)).unwrap()
    }

    #[test]
    fn reply_context_salvages_the_reply_fields_of_a_rejected_request() {
        let bytes = sip(
            &[
                "INVITE sip:wren@aviary.example SIP/2.0",
                "Via: SIP/2.0/UDP perch.meadow.example;branch=z9hG4bK-a",
                "Via: SIP/2.0/UDP origin.example;branch=z9hG4bK-b",
                " ;received=192.0.2.1",
                "Max-Forwards: 70",
                "f: <sip:finch@meadow.example>;tag=1",
                "To: <sip:wren@aviary.example>",
                "Call-ID: salvage-1",
                "CSeq: 41 BYE",
                "Content-Length: lots",
            ],
            b"",
        );
        assert!(scan(&bytes, Framing::Datagram, &Limits::default()).is_err());
        let rc = reply_context(&bytes).expect("salvageable");
        assert_eq!(rc.method, Method::Invite);
        let vias: Vec<&str> = rc.via_lines.iter().map(|&s| line_text(&rc, s)).collect();
        assert_eq!(
            vias,
            [
                "Via: SIP/2.0/UDP perch.meadow.example;branch=z9hG4bK-a\r\n",
                "Via: SIP/2.0/UDP origin.example;branch=z9hG4bK-b\r\n ;received=192.0.2.1\r\n",
            ]
        );
        assert_eq!(
            line_text(&rc, rc.from_line),
            "f: <sip:finch@meadow.example>;tag=1\r\n"
        );
        assert_eq!(
            line_text(&rc, rc.to_line),
            "To: <sip:wren@aviary.example>\r\n"
        );
        assert_eq!(line_text(&rc, rc.call_id_line), "Call-ID: salvage-1\r\n");
        assert_eq!(line_text(&rc, rc.cseq_line), "CSeq: 41 BYE\r\n");
        assert!(!rc.to_has_tag);
    }

    #[test]
    fn reply_context_survives_garbage_lines_and_a_missing_end() {
        // No empty line, a line without a colon, a bad start line version and a To with a tag.
        let bytes = b"REGISTER sip:aviary.example SIP/9.9\r\n\
            this line has no colon\r\n\
            v: SIP/2.0/UDP 192.0.2.4;branch=z9hG4bK-r\r\n\
            To: <sip:wren@aviary.example>;TAG=already\r\n\
            From: <sip:wren@aviary.example>;tag=x\r\n\
            i: reg-1\r\n\
            CSeq: 2 REGISTER";
        let rc = reply_context(bytes).expect("salvageable");
        assert_eq!(rc.method, Method::Register);
        assert_eq!(rc.via_lines.len(), 1);
        assert!(rc.to_has_tag);
        assert_eq!(line_text(&rc, rc.cseq_line), "CSeq: 2 REGISTER");
        // An unparseable To is guessed from its text.
        let bytes = sip(
            &edit(INVITE, &["To:"], &["To: <sip:wren@aviary.example;tag=x"]),
            b"",
        );
        assert!(reply_context(&bytes).unwrap().to_has_tag);
    }

    #[test]
    fn reply_context_is_none_for_responses_and_missing_fields() {
        assert!(reply_context(&sip(RINGING, b"")).is_none());
        for prefix in ["Via:", "From:", "To:", "Call-ID:", "CSeq:"] {
            let bytes = sip(&edit(INVITE, &[prefix], &[]), b"");
            assert!(reply_context(&bytes).is_none(), "without {prefix}");
        }
        assert!(reply_context(b"").is_none());
        assert!(reply_context(b"INVITE").is_none());
        assert!(reply_context(b"(bad) sip:x SIP/2.0\r\nVia: x\r\n\r\n").is_none());
    }
}

mod splice {
    use super::*;

    fn spliced(sp: &Splice<'_, '_>) -> Vec<u8> {
        let mut out = Vec::new();
        sp.write_to(&mut out);
        assert_eq!(out.len(), sp.output_len());
        out
    }

    #[test]
    fn splice_without_edits_copies_the_source() {
        let src = torture_invite();
        assert_eq!(spliced(&Splice::new(&src)), src);
        assert_eq!(spliced(&Splice::new(b"")), b"");
    }

    #[test]
    fn insert_replace_and_delete_change_only_their_spans() {
        let src = b"0123456789";
        let mut sp = Splice::new(src);
        sp.insert(0, b"<")
            .replace(Span::new(3, 5), b"xyz")
            .delete(Span::new(7, 8))
            .insert(10, b">");
        assert_eq!(spliced(&sp), b"<012xyz5689>");
    }

    #[test]
    fn edits_are_written_in_offset_order_whatever_order_they_were_added() {
        let src = b"0123456789";
        let mut sp = Splice::new(src);
        sp.insert(10, b">")
            .delete(Span::new(7, 8))
            .replace(Span::new(3, 5), b"xyz")
            .insert(0, b"<");
        assert_eq!(spliced(&sp), b"<012xyz5689>");
    }

    #[test]
    fn insertions_at_one_offset_keep_their_order_and_precede_a_replacement_there() {
        let src = b"abcdef";
        let mut sp = Splice::new(src);
        sp.delete(Span::new(2, 4))
            .insert(2, b"X")
            .insert(4, b"Z")
            .insert(2, b"Y");
        assert_eq!(spliced(&sp), b"abXYZef");
        // Insert a line before a header and replace that header's value: both apply.
        let src = b"Max-Forwards: 70\r\n";
        let mut sp = Splice::new(src);
        sp.replace(Span::new(14, 16), b"69")
            .insert(0, b"Via: new\r\n");
        assert_eq!(spliced(&sp), b"Via: new\r\nMax-Forwards: 69\r\n");
    }

    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "overlaps")]
    fn overlapping_edits_are_a_programming_error() {
        let mut sp = Splice::new(b"0123456789");
        sp.replace(Span::new(1, 4), b"x").delete(Span::new(3, 5));
        spliced(&sp);
    }

    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "overlaps")]
    fn insertion_inside_a_replaced_span_is_a_programming_error() {
        let mut sp = Splice::new(b"0123456789");
        sp.delete(Span::new(2, 6)).insert(4, b"x");
        spliced(&sp);
    }

    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "outside")]
    fn edit_past_the_source_is_a_programming_error() {
        let mut sp = Splice::new(b"0123");
        sp.insert(5, b"x");
        spliced(&sp);
    }

    const ROUTED: &[&str] = &[
        "OPTIONS sip:wren@aviary.example SIP/2.0",
        "Via: SIP/2.0/UDP perch.meadow.example;branch=z9hG4bK-r",
        "Route: <sip:a.example;lr>, \"x, y\" <sip:b.example;lr> ,",
        "  <sip:c.example;lr>",
        "Route: <sip:d.example;lr>",
        "From: <sip:finch@meadow.example>;tag=1",
        "To: <sip:wren@aviary.example>",
        "Call-ID: routed",
        "CSeq: 1 OPTIONS",
        "Content-Length: 0",
    ];

    /// Removes the `n`th Route value with `value_removal`; returns the new bytes.
    fn remove_route(bytes: &[u8], n: usize) -> Vec<u8> {
        let m = ok(bytes);
        let r = m.routes(HeaderName::Route).nth(n).unwrap().unwrap();
        let mut sp = Splice::new(m.buf);
        sp.delete(m.value_removal(r.header, r.value));
        spliced(&sp)
    }

    /// The Route header lines, and all the other bytes, of a message.
    fn split_routes(bytes: &[u8]) -> (String, String) {
        let m = ok(bytes);
        let (mut routes, mut rest) = (String::new(), String::new());
        let start = m.headers[0].line.start;
        rest.push_str(t(&m, Span::new(0, start as usize)));
        for h in &m.headers {
            let s = if h.name == HeaderName::Route {
                &mut routes
            } else {
                &mut rest
            };
            s.push_str(t(&m, h.line));
        }
        rest.push_str(t(&m, Span::new(m.headers_end as usize - 2, bytes.len())));
        (routes, rest)
    }

    fn route_line(bytes: &[u8]) -> String {
        split_routes(bytes).0
    }

    #[test]
    fn value_removal_takes_one_value_and_its_comma() {
        let bytes = sip(ROUTED, b"");
        let first = remove_route(&bytes, 0);
        assert_eq!(
            route_line(&first),
            "Route: \"x, y\" <sip:b.example;lr> ,\r\n  <sip:c.example;lr>\r\nRoute: <sip:d.example;lr>\r\n"
        );
        let middle = remove_route(&bytes, 1);
        assert_eq!(
            route_line(&middle),
            "Route: <sip:a.example;lr>, <sip:c.example;lr>\r\nRoute: <sip:d.example;lr>\r\n"
        );
        let last = remove_route(&bytes, 2);
        assert_eq!(
            route_line(&last),
            "Route: <sip:a.example;lr>, \"x, y\" <sip:b.example;lr> \r\nRoute: <sip:d.example;lr>\r\n"
        );
        let sole = remove_route(&bytes, 3);
        assert_eq!(
            route_line(&sole),
            "Route: <sip:a.example;lr>, \"x, y\" <sip:b.example;lr> ,\r\n  <sip:c.example;lr>\r\n"
        );
        // Every other byte is as it was.
        let others = split_routes(&bytes).1;
        for out in [&first, &middle, &last, &sole] {
            assert_eq!(split_routes(out).1, others);
        }
    }

    #[test]
    fn value_removal_of_a_foreign_span_returns_it_unchanged() {
        let bytes = sip(ROUTED, b"");
        let m = ok(&bytes);
        let foreign = Span::new(1, 3);
        assert_eq!(m.value_removal(99, foreign), foreign);
        assert_eq!(m.value_removal(0, foreign), foreign);
        let v = m.top_via;
        assert_eq!(m.value_removal(v.header, v.value), m.headers[v.header].line);
    }

    #[test]
    fn forward_applies_only_the_proxy_edits() {
        let bytes = sip(
            &[
                "OPTIONS sip:wren@aviary.example SIP/2.0",
                "Route: <sip:edge.example.net;lr>,\r\n <sip:core.example.net;lr>",
                "x-odd :  kept   as-is ",
                "v: SIP/2.0/UDP 192.0.2.7;branch=z9hG4bK.a1",
                "Max-Forwards: 0070",
                "f: <sip:finch@meadow.example>;tag=1",
                "t: sip:wren@aviary.example",
                "i: opt-1",
                "CSeq: 0000123 OPTIONS",
                "l: 3",
            ],
            b"\0\r\nafter",
        );
        let m = ok(&bytes);
        let out = fuzzing::forward(&m);
        let expected = [
            "OPTIONS sip:wren@aviary.example SIP/2.0\r\n",
            "Record-Route: <sip:203.0.113.1;lr>\r\n",
            "Route: <sip:core.example.net;lr>\r\n",
            "x-odd :  kept   as-is \r\n",
            "Via: SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bK-pointsman-fuzz\r\n",
            "v: SIP/2.0/UDP 192.0.2.7;branch=z9hG4bK.a1\r\n",
            "Max-Forwards: 69\r\n",
            "f: <sip:finch@meadow.example>;tag=1\r\n",
            "t: sip:wren@aviary.example\r\n",
            "i: opt-1\r\n",
            "CSeq: 0000123 OPTIONS\r\n",
            "l: 3\r\n",
            "\r\n",
            "\0\r\n",
        ]
        .concat();
        assert_eq!(String::from_utf8_lossy(&out), expected);
        fuzzing::forward_roundtrip(&bytes);
    }

    #[test]
    fn forward_adds_max_forwards_when_there_is_none() {
        let bytes = sip(&edit(INVITE, &["Max-Forwards:"], &[]), b"");
        let m = ok(&bytes);
        let out = fuzzing::forward(&m);
        let via = INVITE[1];
        let expected = sip(
            &[
                INVITE[0],
                "Record-Route: <sip:203.0.113.1;lr>",
                "Via: SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bK-pointsman-fuzz",
                "Max-Forwards: 70",
                via,
                INVITE[3],
                INVITE[4],
                INVITE[5],
                INVITE[6],
                INVITE[7],
                INVITE[8],
            ],
            b"",
        );
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&expected)
        );
    }

    #[test]
    fn every_valid_test_message_forwards_cleanly() {
        for (name, bytes) in valid_messages() {
            let m = ok(&bytes);
            if m.is_request() {
                let out = fuzzing::forward(&m);
                assert!(out.len() > m.buf.len(), "{name}");
            }
            fuzzing::forward_roundtrip(&bytes);
            fuzzing::scan_never_panics(&bytes);
        }
    }
}

mod props {
    use super::*;
    use proptest::collection::vec;
    use proptest::option;
    use proptest::prelude::*;
    use proptest::sample::{select, Index};

    /// What a generated header is, with what its scan must find.
    #[derive(Clone, Debug)]
    enum Kind {
        /// The branch of each value.
        Via(Vec<String>),
        /// The tag.
        From(Option<String>),
        To(Option<String>),
        CallId,
        CSeq(u32),
        MaxForwards(u32),
        /// The URI of each value.
        Route(Vec<String>),
        RecordRoute(Vec<String>),
        ContentLength,
        Other(HeaderName),
    }

    /// A generated header field: `name colon values[0] seps[0] values[1] ... CRLF`.
    #[derive(Clone, Debug)]
    struct Field {
        kind: Kind,
        name: String,
        colon: String,
        values: Vec<String>,
        seps: Vec<String>,
    }

    impl Field {
        fn single(kind: Kind, name: String, colon: String, value: String) -> Field {
            Field {
                kind,
                name,
                colon,
                values: vec![value],
                seps: Vec::new(),
            }
        }

        /// The values from the `from`th on, with their separators.
        fn values_from(&self, from: usize) -> String {
            let mut out = self.values[from].clone();
            for i in from + 1..self.values.len() {
                out.push_str(&self.seps[i - 1]);
                out.push_str(&self.values[i]);
            }
            out
        }

        fn render(&self) -> String {
            format!("{}{}{}\r\n", self.name, self.colon, self.values_from(0))
        }

        fn header_name(&self) -> HeaderName {
            match &self.kind {
                Kind::Via(_) => HeaderName::Via,
                Kind::From(_) => HeaderName::From,
                Kind::To(_) => HeaderName::To,
                Kind::CallId => HeaderName::CallId,
                Kind::CSeq(_) => HeaderName::CSeq,
                Kind::MaxForwards(_) => HeaderName::MaxForwards,
                Kind::Route(_) => HeaderName::Route,
                Kind::RecordRoute(_) => HeaderName::RecordRoute,
                Kind::ContentLength => HeaderName::ContentLength,
                Kind::Other(name) => *name,
            }
        }
    }

    /// A generated valid request.
    #[derive(Clone, Debug)]
    struct Request {
        method: String,
        uri: String,
        fields: Vec<Field>,
        body: Vec<u8>,
        /// Bytes after the Content-Length body (only with Content-Length): a datagram drops them.
        trailer: Vec<u8>,
    }

    impl Request {
        fn bytes(&self) -> Vec<u8> {
            let mut out = format!("{} {} SIP/2.0\r\n", self.method, self.uri).into_bytes();
            for f in &self.fields {
                out.extend_from_slice(f.render().as_bytes());
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&self.body);
            out.extend_from_slice(&self.trailer);
            out
        }

        /// What `fuzzing::forward` must make of it, worked out from the generator's own model:
        /// a Record-Route line first, our Via (and Max-Forwards if none) before the first Via,
        /// Max-Forwards decremented, the first Route value gone, the trailer dropped. Every
        /// other byte as generated.
        fn forwarded(&self) -> Vec<u8> {
            let first_via = self
                .fields
                .iter()
                .position(|f| matches!(f.kind, Kind::Via(_)));
            let first_route = self
                .fields
                .iter()
                .position(|f| matches!(f.kind, Kind::Route(_)));
            let has_mf = self
                .fields
                .iter()
                .any(|f| matches!(f.kind, Kind::MaxForwards(_)));
            let mut out = format!("{} {} SIP/2.0\r\n", self.method, self.uri).into_bytes();
            for (i, f) in self.fields.iter().enumerate() {
                if i == 0 {
                    out.extend_from_slice(fuzzing::NEW_RECORD_ROUTE);
                }
                if Some(i) == first_via {
                    out.extend_from_slice(fuzzing::NEW_VIA);
                    if !has_mf {
                        out.extend_from_slice(fuzzing::NEW_MAX_FORWARDS);
                    }
                }
                let line = match f.kind {
                    Kind::MaxForwards(v) => {
                        format!("{}{}{}\r\n", f.name, f.colon, v.saturating_sub(1))
                    }
                    Kind::Route(_) if Some(i) == first_route => {
                        if f.values.len() == 1 {
                            continue;
                        }
                        format!("{}{}{}\r\n", f.name, f.colon, f.values_from(1))
                    }
                    _ => f.render(),
                };
                out.extend_from_slice(line.as_bytes());
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&self.body);
            out
        }
    }

    /// One of `forms`, each letter's case flipped where `mask` says.
    fn mixed_case(forms: &'static [&'static str]) -> impl Strategy<Value = String> {
        (select(forms), any::<u64>()).prop_map(|(name, mask)| {
            name.chars()
                .enumerate()
                .map(|(i, c)| {
                    if mask >> (i % 64) & 1 == 1 {
                        if c.is_ascii_uppercase() {
                            c.to_ascii_lowercase()
                        } else {
                            c.to_ascii_uppercase()
                        }
                    } else {
                        c
                    }
                })
                .collect()
        })
    }

    fn pick(options: &'static [&'static str]) -> impl Strategy<Value = String> {
        select(options).prop_map(str::to_owned)
    }

    /// HCOLON with its optional whitespace, folding included.
    fn colon() -> impl Strategy<Value = String> {
        pick(&[":", ": ", " : ", "\t:\t", ":   ", ":\r\n ", " :\r\n\t "])
    }

    /// COMMA with its optional whitespace, folding included.
    fn comma() -> impl Strategy<Value = String> {
        pick(&[",", ", ", " , ", ",\r\n ", "\r\n ,\t", " ,\r\n  "])
    }

    const TOKEN: &str = "[A-Za-z0-9.!%*_+`'~-]{1,12}";

    /// A via-parm and its branch.
    fn via_value() -> impl Strategy<Value = (String, String)> {
        (
            pick(&["SIP/2.0/", "SIP / 2.0 / ", "sip/2.0/", "SIP/\r\n 2.0/"]),
            pick(&["UDP", "TCP", "TLS", "SCTP", "WS", "WSS", "udp", "X-QUIC"]),
            pick(&[" ", "  ", "\t", "\r\n "]),
            pick(&[
                "perch.meadow.example",
                "192.0.2.44",
                "[2001:db8::1]",
                "[2001:db8:0:0:8:800:200c:417a]",
                "under_score.example",
                "UPPER.Example.NET.",
            ]),
            pick(&["", ":5060", ":05060", " : 5070", ":65535", ":0"]),
            pick(&[
                ";branch=",
                " ;branch=",
                ";BRANCH=",
                " ; branch = ",
                ";\r\n branch=",
            ]),
            TOKEN,
            pick(&[
                "",
                ";rport",
                ";received=192.0.2.9",
                " ; ttl=16 ;maddr=224.2.0.1",
                ";\r\n rport=5066",
                ";x-ext=\"quoted;,value\"",
            ]),
        )
            .prop_map(
                |(proto, transport, gap, host, port, bparam, branch, extra)| {
                    let branch = format!("z9hG4bK{branch}");
                    (
                        format!("{proto}{transport}{gap}{host}{port}{bparam}{branch}{extra}"),
                        branch,
                    )
                },
            )
    }

    /// A From/To value and its tag.
    fn name_addr() -> impl Strategy<Value = (String, Option<String>)> {
        (
            pick(&[
                "",
                "Finch ",
                "\"Finch\" ",
                "\"Dr. \\\"Wren\\\", Esq.\" ",
                "\"back\\\\slash\"\t",
                "\"J\u{f6}rg \u{dc}nal\"",
                "Two Words ",
            ]),
            pick(&[
                "sip:finch@meadow.example",
                "sips:wren@[2001:db8::5]:5061",
                "tel:+1-555-0100",
                "sip:%66inch;x=y@192.0.2.1:5060;transport=tcp",
                "SIP:Robin@Aviary.Example",
            ]),
            any::<bool>(),
            option::of((
                TOKEN,
                pick(&[";tag=", " ;tag=", ";\r\n tag=", ";TAG=", " ; tag = "]),
            )),
            pick(&["", ";x-p=1", " ;x-q"]),
        )
            .prop_map(|(display, uri, bare, tag, extra)| {
                let addr = if display.is_empty() && bare && !uri.contains(';') {
                    uri
                } else {
                    format!("{display}<{uri}>")
                };
                let tag_param = tag
                    .as_ref()
                    .map_or(String::new(), |(t, p)| format!("{p}{t}"));
                (format!("{addr}{tag_param}{extra}"), tag.map(|(t, _)| t))
            })
    }

    /// A Route/Record-Route value and its URI.
    fn route_value() -> impl Strategy<Value = (String, String)> {
        select(
            &[
                ("<sip:edge1.example.net;lr>", "sip:edge1.example.net;lr"),
                (
                    "\"Edge, Two\" <sip:[2001:db8::7]:5070;lr;transport=tcp>",
                    "sip:[2001:db8::7]:5070;lr;transport=tcp",
                ),
                (
                    "<sips:core.example.org;lr>;x-hp=1",
                    "sips:core.example.org;lr",
                ),
                ("Proxy <sip:192.0.2.200;lr>", "sip:192.0.2.200;lr"),
            ][..],
        )
        .prop_map(|(v, u)| (v.to_owned(), u.to_owned()))
    }

    /// A comma-joined list header: `(name, colon, [(value, what it holds, separator)])`.
    type List<T> = (String, String, Vec<((String, T), String)>);

    fn list_field(list: List<String>, kind: fn(Vec<String>) -> Kind) -> Field {
        let (name, colon, items) = list;
        let n = items.len();
        let mut values = Vec::new();
        let mut seps = Vec::new();
        let mut held = Vec::new();
        for (i, ((value, what), sep)) in items.into_iter().enumerate() {
            values.push(value);
            held.push(what);
            if i + 1 < n {
                seps.push(sep);
            }
        }
        Field {
            kind: kind(held),
            name,
            colon,
            values,
            seps,
        }
    }

    fn other_field() -> impl Strategy<Value = Field> {
        (
            select(
                &[
                    ("Subject", HeaderName::Other),
                    ("s", HeaderName::Other),
                    ("User-Agent", HeaderName::Other),
                    ("Contact", HeaderName::Contact),
                    ("m", HeaderName::Contact),
                    ("Supported", HeaderName::Supported),
                    ("k", HeaderName::Supported),
                    ("Content-Type", HeaderName::ContentType),
                    ("c", HeaderName::ContentType),
                    ("Call-Info", HeaderName::Other),
                    ("Via-Ext", HeaderName::Other),
                    ("X-Tortuous~Name!", HeaderName::Other),
                    ("Require", HeaderName::Require),
                    ("Reason", HeaderName::Reason),
                ][..],
            ),
            colon(),
            vec("[ -~]{0,16}", 1..4),
            pick(&["\r\n ", "\r\n\t", "\r\n   "]),
        )
            .prop_map(|((name, header), colon, parts, fold)| {
                Field::single(
                    Kind::Other(header),
                    name.to_owned(),
                    colon,
                    parts.join(&fold),
                )
            })
    }

    fn request() -> impl Strategy<Value = Request> {
        let line = (
            pick(&[
                "INVITE",
                "OPTIONS",
                "BYE",
                "MESSAGE",
                "NEWMETHOD",
                "x-Ext.1!",
                "REGISTER",
                "ACK",
                "invite",
            ]),
            pick(&[
                "sip:wren@aviary.example",
                "sips:wren@aviary.example:5061;transport=tls",
                "sip:[2001:db8::1]:5060",
                "tel:+1-555-0199;phone-context=example.com",
                "sip:%77ren;p=1@192.0.2.3?Subject=hi",
                "urn:service:sos",
                "SIP:Wren@Aviary.Example",
            ]),
        );
        let vias = vec(
            (
                mixed_case(&["Via", "v"]),
                colon(),
                vec((via_value(), comma()), 1..4),
            ),
            1..4,
        );
        let from = (mixed_case(&["From", "f"]), colon(), name_addr());
        let to = (mixed_case(&["To", "t"]), colon(), name_addr());
        let call_id = (
            mixed_case(&["Call-ID", "i"]),
            colon(),
            r#"[A-Za-z0-9.!%*_+`'~()<>:\\"/?{}-]{1,16}(@[A-Za-z0-9.-]{1,12})?"#,
        );
        let cseq = (
            mixed_case(&["CSeq"]),
            colon(),
            0u32..100_000,
            0usize..4,
            pick(&[" ", "  ", "\t", " \r\n "]),
        );
        let mf = option::of((mixed_case(&["Max-Forwards"]), colon(), 0u32..300, 0usize..3));
        let routes = vec(
            (
                mixed_case(&["Route"]),
                colon(),
                vec((route_value(), comma()), 1..4),
            ),
            0..3,
        );
        let rrs = vec(
            (
                mixed_case(&["Record-Route"]),
                colon(),
                vec((route_value(), comma()), 1..3),
            ),
            0..2,
        );
        let cl = option::of((mixed_case(&["Content-Length", "l"]), colon(), 0usize..3));
        let others = vec(other_field(), 0..4);
        let body = (vec(any::<u8>(), 0..48), vec(any::<u8>(), 0..8));
        (
            line, vias, from, to, call_id, cseq, mf, routes, rrs, cl, others, body,
        )
            .prop_flat_map(
                |(line, vias, from, to, call_id, cseq, mf, routes, rrs, cl, others, body)| {
                    let (method, uri) = line;
                    let (body, trailer) = body;
                    let mut fields: Vec<Field> =
                        vias.into_iter().map(|v| list_field(v, Kind::Via)).collect();
                    let (name, colon, (value, tag)) = from;
                    fields.push(Field::single(Kind::From(tag), name, colon, value));
                    let (name, colon, (value, tag)) = to;
                    fields.push(Field::single(Kind::To(tag), name, colon, value));
                    let (name, colon, value) = call_id;
                    fields.push(Field::single(Kind::CallId, name, colon, value));
                    let (name, colon, n, zeros, gap) = cseq;
                    let value = format!("{}{n}{gap}{method}", "0".repeat(zeros));
                    fields.push(Field::single(Kind::CSeq(n), name, colon, value));
                    if let Some((name, colon, v, zeros)) = mf {
                        let value = format!("{}{v}", "0".repeat(zeros));
                        fields.push(Field::single(Kind::MaxForwards(v), name, colon, value));
                    }
                    fields.extend(routes.into_iter().map(|r| list_field(r, Kind::Route)));
                    fields.extend(rrs.into_iter().map(|r| list_field(r, Kind::RecordRoute)));
                    let trailer = if let Some((name, colon, zeros)) = cl {
                        let value = format!("{}{}", "0".repeat(zeros), body.len());
                        fields.push(Field::single(Kind::ContentLength, name, colon, value));
                        trailer
                    } else {
                        Vec::new()
                    };
                    fields.extend(others);
                    (
                        Just(fields).prop_shuffle(),
                        Just((method, uri, body, trailer)),
                    )
                        .prop_map(|(fields, (method, uri, body, trailer))| {
                            Request {
                                method,
                                uri,
                                fields,
                                body,
                                trailer,
                            }
                        })
                },
            )
    }

    /// A way to damage a message.
    #[derive(Clone, Debug)]
    enum Mutation {
        FlipBit(Index, u8),
        Truncate(Index),
        Insert(Index, u8),
        Remove(Index),
        /// Copies the bytes between two offsets to the first of them.
        Repeat(Index, Index),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
            any::<Index>().prop_map(Mutation::Truncate),
            (any::<Index>(), select(&b"\r\n,:; \t\"<>\\\0\xff=/[]"[..]))
                .prop_map(|(i, b)| Mutation::Insert(i, b)),
            any::<Index>().prop_map(Mutation::Remove),
            (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Repeat(a, b)),
        ]
    }

    fn mutate(bytes: &mut Vec<u8>, m: &Mutation) {
        if bytes.is_empty() {
            return;
        }
        let len = bytes.len();
        match m {
            Mutation::FlipBit(i, bit) => bytes[i.index(len)] ^= 1 << bit,
            Mutation::Truncate(i) => bytes.truncate(i.index(len)),
            Mutation::Insert(i, b) => bytes.insert(i.index(len + 1), *b),
            Mutation::Remove(i) => {
                bytes.remove(i.index(len));
            }
            Mutation::Repeat(a, b) => {
                let (a, b) = (a.index(len), b.index(len));
                let (lo, hi) = (a.min(b), a.max(b));
                let copy = bytes[lo..hi].to_vec();
                bytes.splice(lo..lo, copy);
            }
        }
    }

    /// Pieces of SIP to glue into noise that gets past the start line now and then.
    fn sip_noise() -> impl Strategy<Value = Vec<u8>> {
        vec(
            select(
                &[
                    "INVITE sip:a@b SIP/2.0\r\n",
                    "ACK sip:a@b SIP/2.0\r\n",
                    "SIP/2.0 200 OK\r\n",
                    "Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\n",
                    "v: SIP/2.0/TCP [2001:db8::1]:5060;rport",
                    "Content-Length: ",
                    "l: 0\r\n",
                    "From: <sip:a@b>;tag=1\r\n",
                    "To: <sip:b@c>\r\n",
                    "i: x\r\n",
                    "CSeq: 1 INVITE\r\n",
                    "CSeq: 1 ACK\r\n",
                    "Max-Forwards: 70\r\n",
                    "Route: ",
                    "<sip:x;lr>",
                    "\"q,\\\"\" ",
                    "\r\n",
                    "\r\n ",
                    " ",
                    ",",
                    ";",
                    ":",
                    "\"",
                    "<",
                    ">",
                    "0",
                    "99999999999",
                    "-1",
                    "\0\u{ff}",
                ][..],
            ),
            0..40,
        )
        .prop_map(|parts| parts.concat().into_bytes())
    }

    /// Disjoint edits against a source, in a shuffled call order.
    fn splice_case() -> impl Strategy<Value = (Vec<u8>, Vec<(Span, Vec<u8>)>)> {
        (
            vec(any::<u8>(), 0..64),
            vec(
                (any::<Index>(), any::<Index>(), vec(any::<u8>(), 0..6)),
                0..8,
            ),
        )
            .prop_flat_map(|(src, raw)| {
                let n = src.len() + 1;
                let mut cuts: Vec<usize> = raw
                    .iter()
                    .flat_map(|(a, b, _)| [a.index(n), b.index(n)])
                    .collect();
                cuts.sort_unstable();
                let edits: Vec<(Span, Vec<u8>)> = cuts
                    .chunks(2)
                    .zip(raw.into_iter().map(|(_, _, bytes)| bytes))
                    .map(|(c, bytes)| (Span::new(c[0], c[1]), bytes))
                    .collect();
                (Just(src), Just(edits).prop_shuffle())
            })
    }

    /// The number of cases: `default`, or `PROPTEST_CASES` for a deeper run by hand. (Failures
    /// are not persisted to files: proptest prints the shrunk input; make it a unit test.)
    fn cases(default: u32) -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: cases(1000),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn scan_never_panics_on_arbitrary_bytes(data in vec(any::<u8>(), 0..600)) {
            fuzzing::scan_never_panics(&data);
            fuzzing::forward_roundtrip(&data);
            let _ = bounced_request(&data);
        }

        #[test]
        fn scan_never_panics_on_sip_shaped_noise(data in sip_noise()) {
            fuzzing::scan_never_panics(&data);
            fuzzing::forward_roundtrip(&data);
            let _ = bounced_request(&data);
        }

        #[test]
        fn splice_output_is_the_source_with_exactly_the_edits(case in splice_case()) {
            let (src, edits) = case;
            let mut sp = Splice::new(&src);
            for (span, bytes) in &edits {
                match (span.is_empty(), bytes.is_empty()) {
                    (true, _) => sp.insert(span.start, bytes),
                    (false, true) => sp.delete(*span),
                    (false, false) => sp.replace(*span, bytes),
                };
            }
            let mut out = Vec::new();
            sp.write_to(&mut out);
            prop_assert_eq!(out.len(), sp.output_len());
            // The model: source gaps copied, edits in source order; at one offset insertions
            // first, in the order they were added.
            let mut order: Vec<usize> = (0..edits.len()).collect();
            order.sort_by_key(|&i| (edits[i].0.start, !edits[i].0.is_empty(), i));
            let mut expected = Vec::new();
            let mut cursor = 0;
            for i in order {
                let (span, bytes) = &edits[i];
                expected.extend_from_slice(&src[cursor..span.start as usize]);
                expected.extend_from_slice(bytes);
                cursor = span.end as usize;
            }
            expected.extend_from_slice(&src[cursor..]);
            prop_assert_eq!(out, expected);
        }

        #[test]
        fn generated_valid_requests_scan_to_their_fields(req in request()) {
            let bytes = req.bytes();
            let m = match scan(&bytes, Framing::Datagram, &Limits::default()) {
                Ok(m) => m,
                Err(e) => {
                    return Err(TestCaseError::fail(format!(
                        "rejected ({e}):\n{}",
                        String::from_utf8_lossy(&bytes)
                    )))
                }
            };
            prop_assert_eq!(method_text(&m), req.method.as_str());
            prop_assert_eq!(t(&m, request_uri(&m)), req.uri.as_str());
            prop_assert!(parse_uri(m.buf, request_uri(&m)).is_ok());
            prop_assert_eq!(m.headers.len(), req.fields.len());
            let mut branches_seen = Vec::new();
            let mut routes = Vec::new();
            let mut record_routes = Vec::new();
            for (h, f) in m.headers.iter().zip(&req.fields) {
                prop_assert_eq!(h.name, f.header_name());
                prop_assert_eq!(t(&m, h.line), f.render());
                prop_assert_eq!(t(&m, h.name_span), f.name.as_str());
                match &f.kind {
                    Kind::Via(b) => branches_seen.extend(b.iter().map(String::as_str)),
                    Kind::From(tag) => prop_assert_eq!(opt(&m, m.from.tag), tag.as_deref()),
                    Kind::To(tag) => prop_assert_eq!(opt(&m, m.to.tag), tag.as_deref()),
                    Kind::CallId => prop_assert_eq!(t(&m, m.call_id), f.values[0].as_str()),
                    Kind::CSeq(n) => prop_assert_eq!(m.cseq, *n),
                    Kind::MaxForwards(v) => prop_assert_eq!(m.max_forwards, Some(*v)),
                    Kind::Route(uris) => routes.extend(uris.iter().map(String::as_str)),
                    Kind::RecordRoute(uris) => record_routes.extend(uris.iter().map(String::as_str)),
                    Kind::ContentLength => prop_assert_eq!(m.content_length, Some(req.body.len())),
                    Kind::Other(_) => {}
                }
            }
            prop_assert_eq!(t(&m, m.cseq_method_span), req.method.as_str());
            prop_assert_eq!(m.via_count, branches_seen.len());
            prop_assert_eq!(opt(&m, m.top_via.branch), Some(branches_seen[0]));
            prop_assert_eq!(branches(&m), branches_seen);
            prop_assert_eq!(route_uris(&m, HeaderName::Route), routes);
            prop_assert_eq!(route_uris(&m, HeaderName::RecordRoute), record_routes);
            prop_assert_eq!(m.slice(m.body), &req.body[..]);
            if !req.fields.iter().any(|f| matches!(f.kind, Kind::MaxForwards(_))) {
                prop_assert_eq!(m.max_forwards, None);
            }
        }

        #[test]
        fn forward_changes_only_the_intended_bytes(req in request()) {
            let bytes = req.bytes();
            let m = scan(&bytes, Framing::Datagram, &Limits::default()).unwrap();
            let out = fuzzing::forward(&m);
            let expected = req.forwarded();
            prop_assert!(
                out == expected,
                "forwarded:\n{}\nexpected:\n{}",
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&expected)
            );
            fuzzing::forward_roundtrip(&bytes);
        }

        #[test]
        fn scan_never_panics_on_mutated_valid_requests(
            req in request(),
            mutations in vec(mutation(), 1..5),
        ) {
            let mut bytes = req.bytes();
            for m in &mutations {
                mutate(&mut bytes, m);
            }
            fuzzing::scan_never_panics(&bytes);
            fuzzing::forward_roundtrip(&bytes);
            if let Some(b) = bounced_request(&bytes) {
                prop_assert!(b.branch.end as usize <= bytes.len());
            }
        }
    }
}

/// Writes the test messages as the fuzzers' seed corpus (run by `fuzz/seed.sh`).
#[test]
#[ignore = "writes files; run by fuzz/seed.sh"]
fn write_fuzz_seeds() {
    let dir = std::env::var_os("POINTSMAN_FUZZ_SEEDS").expect("POINTSMAN_FUZZ_SEEDS: a directory");
    let dir = std::path::Path::new(&dir);
    std::fs::create_dir_all(dir).unwrap();
    let mut seeds = valid_messages();
    let mut stream = sip(INVITE, b"");
    stream.extend_from_slice(b"\r\n\r\n");
    stream.extend_from_slice(&sip(RINGING, b""));
    seeds.push(("stream-two-messages", stream));
    seeds.push((
        "bad-cseq",
        sip(&edit(INVITE, &["CSeq:"], &["CSeq: 41 BYE"]), b""),
    ));
    seeds.push((
        "bad-content-length",
        sip(
            &edit(INVITE, &["Content-Length:"], &["l: 4", "Content-Length: 5"]),
            b"abcde",
        ),
    ));
    let whole = sip(INVITE, b"");
    seeds.push(("truncated", whole[..whole.len() / 2 + 7].to_vec()));
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}
