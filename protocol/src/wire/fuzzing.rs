//! Checks shared by the fuzz targets (`fuzz/`) and the wire proptests, so both exercise exactly
//! the same logic. Hidden from the docs: not an API for the proxy core.
//!
//! Each function panics when a property of the wire layer is violated, and only then.

// Test support: a failed assumption here is a failed test or a fuzzer finding.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

/// The Via branch [`forward`] adds.
pub const NEW_BRANCH: &[u8] = b"z9hG4bK-pointsman-fuzz";
/// The top Via line [`forward`] inserts before the first Via header.
pub const NEW_VIA: &[u8] = b"Via: SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bK-pointsman-fuzz\r\n";
/// The Record-Route line [`forward`] inserts before the first header.
pub const NEW_RECORD_ROUTE: &[u8] = b"Record-Route: <sip:203.0.113.1;lr>\r\n";
/// The Max-Forwards line [`forward`] inserts when the message has none.
pub const NEW_MAX_FORWARDS: &[u8] = b"Max-Forwards: 70\r\n";

/// Applies the edits a proxy makes when it forwards a request: a Record-Route line before the
/// first header, a new top Via line before the first Via header, Max-Forwards decremented (or
/// added), and the first Route value removed.
pub fn forward(m: &Message<'_>) -> Vec<u8> {
    let mut digits = [0u8; 10];
    let mut splice = Splice::new(m.buf);
    if let Some(first) = m.headers.first() {
        splice.insert(first.line.start, NEW_RECORD_ROUTE);
    }
    let via_line = m
        .headers
        .get(m.top_via.header)
        .map_or(m.headers_end, |h| h.line.start);
    splice.insert(via_line, NEW_VIA);
    match (
        m.max_forwards,
        m.max_forwards_header.and_then(|i| m.headers.get(i)),
    ) {
        (Some(v), Some(h)) => {
            let n = write_decimal(v.saturating_sub(1), &mut digits);
            splice.replace(h.value, &digits[n..]);
        }
        _ => {
            splice.insert(via_line, NEW_MAX_FORWARDS);
        }
    }
    if let Some(Ok(route)) = m.routes(HeaderName::Route).next() {
        splice.delete(m.value_removal(route.header, route.value));
    }
    let mut out = Vec::new();
    let expected_len = splice.output_len();
    splice.write_to(&mut out);
    assert_eq!(
        out.len(),
        expected_len,
        "output_len disagrees with write_to"
    );
    out
}

/// Writes `v` right-aligned into `buf`; returns where the digits start.
fn write_decimal(mut v: u32, buf: &mut [u8; 10]) -> usize {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return i;
        }
    }
}

/// Scanning, framing and salvaging arbitrary bytes never panics, and what they return is
/// consistent with the input.
pub fn scan_never_panics(data: &[u8]) {
    let small = Limits {
        max_message_size: 512,
        max_headers: 6,
        max_line_length: 64,
        max_via: 2,
    };
    for limits in [Limits::default(), small] {
        for framing in [Framing::Datagram, Framing::Stream] {
            if let Ok(m) = scan(data, framing, &limits) {
                exercise(&m);
            }
        }
        match frame_stream(data, &limits) {
            Ok(StreamFrame::Keepalive(n)) => assert!(n > 0 && n <= data.len()),
            Ok(StreamFrame::Message(n)) => {
                assert!(n <= data.len() && n <= limits.max_message_size);
                if let Ok(m) = scan(&data[..n], Framing::Stream, &limits) {
                    assert_eq!(m.buf.len(), n, "a framed message is the whole frame");
                    exercise(&m);
                }
            }
            Ok(StreamFrame::Incomplete) | Err(_) => {}
        }
    }
    if let Some(rc) = reply_context(data) {
        let spans = rc.via_lines.iter().chain([
            &rc.from_line,
            &rc.to_line,
            &rc.call_id_line,
            &rc.cseq_line,
        ]);
        for s in spans {
            assert!(s.start < s.end && s.end as usize <= data.len());
        }
    }
}

/// Every accessor of a scanned message stays inside its buffer.
fn exercise(m: &Message<'_>) {
    let len = m.buf.len() as u32;
    assert!(m.headers_end <= len && m.body.start == m.headers_end && m.body.end == len);
    for h in &m.headers {
        assert!(h.line.start <= h.value.start && h.value.end <= h.line.end && h.line.end <= len);
    }
    for via in m.vias().flatten() {
        let s = m.value_removal(via.header, via.value);
        assert!(s.start <= s.end && s.end <= len);
    }
    for name in [HeaderName::Route, HeaderName::RecordRoute] {
        for r in m.routes(name).flatten() {
            let s = m.value_removal(r.header, r.value);
            assert!(s.start <= s.end && s.end <= len);
            if let Ok(uri) = parse_uri(m.buf, r.uri) {
                let _ = uri_param(m.buf, uri.params, b"lr");
            }
        }
    }
    if let StartLine::Request { uri, .. } = m.start {
        if let Ok(uri) = parse_uri(m.buf, uri) {
            let _ = uri_param(m.buf, uri.params, b"transport");
        }
    }
    for na in [m.from, m.to] {
        let _ = parse_uri(m.buf, na.uri);
    }
}

/// If `data` scans as a request, forwarding it (see [`forward`]) yields a message that scans
/// again, with the same Call-ID, CSeq, From, To and body, one more Via, and our branch on top.
pub fn forward_roundtrip(data: &[u8]) {
    let limits = Limits::default();
    let Ok(m) = scan(data, Framing::Datagram, &limits) else {
        return;
    };
    if !m.is_request() {
        return;
    }
    let out = forward(&m);
    // Forwarding adds up to three short lines and one Via.
    let relaxed = Limits {
        max_message_size: limits.max_message_size + 256,
        max_headers: limits.max_headers + 3,
        max_via: limits.max_via + 1,
        ..limits
    };
    let framings: &[Framing] = if m.content_length.is_some() {
        assert_eq!(
            frame_stream(&out, &relaxed),
            Ok(StreamFrame::Message(out.len()))
        );
        &[Framing::Datagram, Framing::Stream]
    } else {
        &[Framing::Datagram]
    };
    for &framing in framings {
        let f = match scan(&out, framing, &relaxed) {
            Ok(f) => f,
            Err(e) => panic!("forwarded message does not re-scan ({framing:?}): {e}"),
        };
        assert_eq!(f.slice(f.call_id), m.slice(m.call_id));
        assert_eq!(f.cseq, m.cseq);
        assert_eq!(f.slice(f.cseq_method_span), m.slice(m.cseq_method_span));
        assert_eq!(f.slice(f.from.value), m.slice(m.from.value));
        assert_eq!(f.slice(f.to.value), m.slice(m.to.value));
        assert_eq!(f.to.tag.map(|t| f.slice(t)), m.to.tag.map(|t| m.slice(t)));
        assert_eq!(f.slice(f.body), m.slice(m.body));
        assert_eq!(f.via_count, m.via_count + 1);
        assert_eq!(f.top_via.branch.map(|b| f.slice(b)), Some(NEW_BRANCH));
        assert_eq!(
            f.max_forwards,
            Some(m.max_forwards.map_or(70, |v| v.saturating_sub(1)))
        );
    }
}
