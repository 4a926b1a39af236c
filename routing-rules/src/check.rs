//! Small, pure checks shared by rule compilation and the proxy's config validation: names,
//! `host:port` addresses, SIP status codes, durations in messages, and "did you mean" suggestions.
//!
//! Each check returns the message a user will read: what is wrong, the bad value, and what would be
//! right. It must not: resolve names, read anything, or know where in a file the value came from
//! (the caller adds the key path).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// Checks a name used as an identifier (destinations, routes, listeners): non-empty, and only
/// ASCII letters, digits, `-`, `_`, `.` (names appear in logs, metrics and the admin API).
/// `what` names the thing, e.g. `"destination"`.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!(
            "{what} name is empty: give it a unique name made of letters, digits, '-', '_', '.' \
             (e.g. \"primary\")"
        ));
    }
    if let Some((pos, bad)) = name.char_indices().find(|&(_, c)| !is_name_char(c)) {
        let fixed: String = name
            .chars()
            .map(|c| if is_name_char(c) { c } else { '-' })
            .collect();
        return Err(format!(
            "{what} name {name:?} contains {bad:?} at byte {pos}: use only letters, digits, '-', \
             '_', '.' (e.g. {fixed:?})"
        ));
    }
    Ok(())
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// Parses `host:port`: an IPv4 literal, a bracketed IPv6 literal (`[2001:db8::1]:5060`) or a DNS
/// hostname, and a port in 1..=65535. Resolves nothing. Returns the host as written, without the
/// IPv6 brackets, and the port.
pub fn parse_host_port(address: &str) -> Result<(String, u16), String> {
    const EXAMPLE: &str =
        "e.g. \"10.0.0.1:5060\", \"[2001:db8::1]:5060\" or \"sbc.example.com:5060\"";
    if address.is_empty() {
        return Err(format!("address is empty: write host:port, {EXAMPLE}"));
    }
    if let Some(c) = address.chars().find(|c| c.is_whitespace()) {
        return Err(format!(
            "address {address:?} contains whitespace ({c:?}): write host:port with no spaces, \
             {EXAMPLE}"
        ));
    }
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(format!(
                "address {address:?} opens '[' but never closes it: write an IPv6 address as \
                 \"[2001:db8::1]:5060\""
            ));
        };
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(format!(
                "{host:?} in address {address:?} is not a valid IPv6 address: write e.g. \
                 \"[2001:db8::1]:5060\""
            ));
        }
        let Some(port) = after.strip_prefix(':') else {
            return Err(if after.is_empty() {
                format!("address {address:?} has no port: write \"{address}:5060\" (5060 is the usual SIP port)")
            } else {
                format!(
                    "address {address:?} has {after:?} after ']': write \"[{host}]:port\", e.g. \"[{host}]:5060\""
                )
            });
        };
        (host, port)
    } else {
        let Some((host, port)) = address.rsplit_once(':') else {
            return Err(format!(
                "address {address:?} has no port: write \"{address}:5060\" (5060 is the usual SIP port)"
            ));
        };
        if host.contains(':') {
            // "2001:db8::1:5060" is itself a valid IPv6 address; the likelier intent is a port.
            let port_like =
                !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
            let hint = if port_like && host.parse::<Ipv6Addr>().is_ok() {
                format!("\"[{host}]:{port}\"")
            } else if address.parse::<Ipv6Addr>().is_ok() {
                format!("\"[{address}]:5060\"")
            } else {
                "\"[2001:db8::1]:5060\"".to_string()
            };
            return Err(format!(
                "address {address:?} looks like an IPv6 address without brackets: write the \
                 address in brackets followed by the port, e.g. {hint}"
            ));
        }
        if host.is_empty() {
            return Err(format!(
                "address {address:?} has no host before the port: write host:port, {EXAMPLE}"
            ));
        }
        check_host(host).map_err(|why| format!("host {host:?} in address {address:?} {why}"))?;
        (host, port)
    };
    let port =
        parse_port(port).map_err(|why| format!("port {port:?} in address {address:?} {why}"))?;
    Ok((host.to_string(), port))
}

fn parse_port(port: &str) -> Result<u16, String> {
    if port.is_empty() {
        return Err("is empty: write a port in 1..=65535, usually 5060".into());
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err("is not a number: write a port in 1..=65535, usually 5060".into());
    }
    match port.parse::<u32>() {
        Ok(p @ 1..=65535) => Ok(p as u16),
        _ => Err("is out of range: write a port in 1..=65535, usually 5060".into()),
    }
}

/// An IPv4 literal or a DNS hostname (RFC 1123 labels: letters, digits, inner '-'; ≤ 63 bytes each,
/// ≤ 253 in all). Returns the reason it is not, to follow the quoted host.
pub(crate) fn check_host(host: &str) -> Result<(), String> {
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return match host.parse::<Ipv4Addr>() {
            Ok(_) => Ok(()),
            Err(_) => Err(
                "is not a valid IPv4 address: write four numbers 0..=255, e.g. \"10.0.0.1\"".into(),
            ),
        };
    }
    const HOSTNAME: &str = "a hostname is labels of letters, digits and inner '-' separated by '.', e.g. \"sbc-1.example.com\"";
    if host.len() > 253 {
        return Err(format!(
            "is {} bytes long, more than the 253 a hostname may have",
            host.len()
        ));
    }
    for label in host.split('.') {
        if label.is_empty() {
            return Err(format!(
                "has an empty label (\"..\" or a leading or trailing '.'): {HOSTNAME}"
            ));
        }
        if label.len() > 63 {
            return Err(format!(
                "has a label of {} bytes, more than 63: {HOSTNAME}",
                label.len()
            ));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(format!("contains {c:?}: {HOSTNAME}"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "has a label {label:?} that starts or ends with '-': {HOSTNAME}"
            ));
        }
    }
    Ok(())
}

/// Checks a status code listed as a reason to fail over to the next destination.
/// Valid: 300..=599 (in practice 408 and 5xx; 3xx and other 4xx are allowed).
pub fn check_failover_code(code: u16) -> Result<(), String> {
    const RIGHT: &str =
        "list final codes in 300..=599, usually 408 and 5xx (e.g. [408, 500, 502, 503, 504])";
    match code {
        300..=599 => Ok(()),
        100..=199 => Err(format!(
            "{code} is a provisional response (1xx), not a final one: it cannot trigger failover \
             (a missing provisional is covered by provisional_timeout); {RIGHT}"
        )),
        200..=299 => Err(format!(
            "{code} is a success (2xx): the call is answered and is never retried; {RIGHT}"
        )),
        600..=699 => Err(format!(
            "{code}: 6xx ends the call (RFC 3261 §16.7) and is never retried; remove it and {RIGHT}"
        )),
        _ => Err(format!(
            "{code} is not a SIP status code (100..=699); {RIGHT}"
        )),
    }
}

/// Formats a duration the way it is written in the config file: `3s`, `250ms`, `1h`.
pub fn fmt_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        let s = d.as_secs();
        if s != 0 && s.is_multiple_of(3600) {
            format!("{}h", s / 3600)
        } else if s != 0 && s.is_multiple_of(60) {
            format!("{}min", s / 60)
        } else {
            format!("{s}s")
        }
    } else if d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else if d.subsec_nanos().is_multiple_of(1_000) {
        format!("{}us", d.as_micros())
    } else {
        format!("{}ns", d.as_nanos())
    }
}

/// The candidate most similar to `wanted`, if one is similar enough to be a likely typo:
/// same name in another case, one a prefix (of 3 characters or more) of the other, or an edit
/// distance of at most a third of the longer name (at least 1) and less than the shorter name's
/// length (so `x` never suggests `b`).
pub fn closest<'a>(wanted: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let wanted_lc = wanted.to_ascii_lowercase();
    let mut best: Option<(usize, &'a str)> = None;
    for cand in candidates {
        let cand_lc = cand.to_ascii_lowercase();
        let (long, short) = {
            let (a, b) = (wanted_lc.chars().count(), cand_lc.chars().count());
            (a.max(b), a.min(b))
        };
        let d = if cand_lc == wanted_lc {
            0
        } else if short >= 3 && (cand_lc.starts_with(&wanted_lc) || wanted_lc.starts_with(&cand_lc))
        {
            1
        } else {
            let d = edit_distance(&wanted_lc, &cand_lc);
            if d > (long / 3).max(1) || d >= short {
                continue;
            }
            d
        };
        match best {
            Some((bd, _)) if bd <= d => {}
            _ => best = Some((d, cand)),
        }
    }
    best.map(|(_, c)| c)
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_accepts_ipv4_bracketed_ipv6_and_hostnames() {
        assert_eq!(
            parse_host_port("10.0.0.1:5060"),
            Ok(("10.0.0.1".into(), 5060))
        );
        assert_eq!(
            parse_host_port("[2001:db8::1]:5061"),
            Ok(("2001:db8::1".into(), 5061))
        );
        assert_eq!(
            parse_host_port("sbc-1.Example.com:65535"),
            Ok(("sbc-1.Example.com".into(), 65535))
        );
        assert_eq!(parse_host_port("localhost:1"), Ok(("localhost".into(), 1)));
    }

    #[test]
    fn host_port_rejects_what_cannot_be_an_address() {
        for (bad, phrase) in [
            ("", "address is empty"),
            ("10.0.0.1", "has no port"),
            ("10.0.0.1:", "is empty"),
            ("10.0.0.1:0", "out of range"),
            ("10.0.0.1:65536", "out of range"),
            ("10.0.0.1:50x", "not a number"),
            ("300.0.0.1:5060", "not a valid IPv4"),
            ("2001:db8::1", "e.g. \"[2001:db8::1]:5060\""),
            ("2001:db8::1:5061", "e.g. \"[2001:db8::1]:5061\""),
            ("fe80::zz:5060", "e.g. \"[2001:db8::1]:5060\""),
            ("[2001:db8::1]", "has no port"),
            ("[2001:db8::1]5060", "after ']'"),
            ("[2001:db8::zz]:5060", "not a valid IPv6"),
            ("[::1:5060", "never closes"),
            ("sbc_1.example.com:5060", "contains '_'"),
            ("-sbc.example.com:5060", "starts or ends with '-'"),
            ("sbc..example.com:5060", "empty label"),
            (":5060", "no host"),
            ("10.0.0.1 :5060", "whitespace"),
        ] {
            let err = parse_host_port(bad).expect_err(bad);
            assert!(err.contains(phrase), "{bad:?}: {err}");
        }
    }

    #[test]
    fn closest_suggests_typos_but_not_unrelated_names() {
        let names = ["primary", "secondary", "lifeboat"];
        assert_eq!(closest("secundary", names), Some("secondary"));
        assert_eq!(closest("Primary", names), Some("primary"));
        assert_eq!(closest("prim", names), Some("primary"));
        assert_eq!(closest("backup", names), None);
        assert_eq!(closest("x", ["b", "a"]), None);
        assert_eq!(closest("pr", names), None);
        assert_eq!(closest("ab", ["ac"]), Some("ac"));
        assert_eq!(
            closest("transprt", ["address", "transport"]),
            Some("transport")
        );
    }

    #[test]
    fn durations_are_formatted_as_written_in_the_file() {
        assert_eq!(fmt_duration(Duration::from_secs(3)), "3s");
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(fmt_duration(Duration::from_secs(120)), "2min");
        assert_eq!(fmt_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(fmt_duration(Duration::ZERO), "0s");
    }
}
