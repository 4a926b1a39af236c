//! Checks shared by the fuzz targets (`fuzz/fuzz_targets/config.rs` and `core.rs`) and the
//! property tests below, so a fuzzer finding and a proptest failure mean the same thing (the
//! wire layer's checks are in `wire::fuzzing`). Hidden from the docs: not an API.
//!
//! - [`config_never_panics`]: arbitrary text through the config loader.
//! - [`core_sequence`]: a [`Core`] with three destinations (a parallel route and a serial
//!   route) fed a sequence of [`Op`]s: requests from the carrier or from a destination,
//!   responses built from what the core sent (or corrupted), byte mutations of both, time
//!   passing with its timers, ICMP errors and delivery failures. [`ops_from_bytes`] turns fuzzer
//!   bytes into ops (no `arbitrary`), [`ops_to_bytes`] is its inverse for seeds.
//!
//! Each function panics when a property is violated, and only then. It must not write files,
//! read any file but what a config names (and only regular files), or touch sockets or clocks
//! beyond one `Instant::now()` as the start of the simulated time.

// Test support: a failed assumption here is a failed test or a fuzzer finding.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::config::{Config, ConfigError};
use bytes::Bytes;
use pointsman_protocol::metrics::Metrics;
use pointsman_protocol::testing::{self, generous_limits as generous, Answer, Harness};
use pointsman_protocol::transaction::TxKey;
use pointsman_protocol::wire::{self, Framing, Limits, Method};
use pointsman_protocol::Core;
use routing_rules::{DestId, Router};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

// ---- config ---------------------------------------------------------------------------------

/// The file name config errors carry.
pub const CONFIG_FILE: &str = "fuzz.toml";

/// A config file named by a fuzzed config is read only if it is a regular file of at most this
/// many bytes outside `/proc`, `/sys` and `/dev`.
const MAX_NAMED_FILE: u64 = 1 << 20;

/// Arbitrary bytes (made UTF-8, lossily) through [`Config::parse_with_warnings`]: no panic;
/// every error and warning names [`CONFIG_FILE`], a non-empty key path, a non-empty message
/// and, when it has one, a line of the text and a column on that line (never a column without
/// a line); loading it again gives the same errors and warnings; a config that loads has its
/// rules exercised ([`exercise_router`]).
///
/// The loader reads the TLS files a config names. Inputs that name something reading could
/// hang on or exhaust memory with (`/dev/zero`, a FIFO, `/proc/kmsg`, a huge file) are skipped
/// unparsed: see [`names_only_safe_files`]. Nothing is ever written.
pub fn config_never_panics(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if !names_only_safe_files(&text) {
        return;
    }
    let (result, warnings) = Config::parse_with_warnings(&text, CONFIG_FILE);
    let lines: Vec<&str> = text.split('\n').collect();
    for w in &warnings {
        check_config_error(w, &lines, "warning");
    }
    // The same text gives the same errors and warnings every time (no HashMap order).
    let (again, again_warnings) = Config::parse_with_warnings(&text, CONFIG_FILE);
    assert_eq!(
        warnings, again_warnings,
        "warnings differ between two loads"
    );
    match (&result, &again) {
        (Err(a), Err(b)) => assert_eq!(a, b, "errors differ between two loads"),
        (a, b) => assert_eq!(a.is_ok(), b.is_ok(), "loads once, fails once"),
    }
    match result {
        Ok(config) => {
            assert_eq!(config.warnings, warnings, "Config::warnings differs");
            exercise_router(&config.router);
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "Err without an error");
            for e in &errors.0 {
                check_config_error(e, &lines, "error");
            }
            let _ = errors.to_string();
        }
    }
}

fn check_config_error(e: &ConfigError, lines: &[&str], what: &str) {
    assert_eq!(e.file, CONFIG_FILE, "{what} names another file: {e:?}");
    assert!(
        !e.path.trim().is_empty(),
        "{what} without a key path: {e:?}"
    );
    assert!(
        !e.message.trim().is_empty(),
        "{what} without a message: {e:?}"
    );
    if let Some(line) = e.line {
        let count = lines.len();
        assert!(
            (1..=count).contains(&line),
            "{what} on line {line} of a {count}-line text: {e:?}"
        );
        if let Some(column) = e.column {
            // Past the last character is a place too: where a missing `"` or `]` would go.
            let width = lines[line - 1].chars().count() + 1;
            assert!(
                (1..=width).contains(&column),
                "{what} at column {column} of a {width}-column line: {e:?}"
            );
        }
    } else {
        assert_eq!(e.column, None, "{what} with a column but no line: {e:?}");
    }
    let _ = e.to_string();
}

/// Whether every string value in `text` (taken as TOML) is safe to hand to a loader that may
/// read it as a path: it names nothing, or a regular file of at most 1 MiB outside `/proc`,
/// `/sys` and `/dev`. Text that is not TOML is safe: the loader stops at the syntax error.
pub fn names_only_safe_files(text: &str) -> bool {
    fn safe(s: &str) -> bool {
        // Relative paths are relative to the config's directory: `fuzz.toml` has none.
        let path = Path::new(s);
        let Ok(meta) = std::fs::metadata(path) else {
            return true;
        };
        let special = std::fs::canonicalize(path).map_or(true, |p| {
            ["/proc", "/sys", "/dev"]
                .iter()
                .any(|dir| p.starts_with(dir))
        });
        meta.is_file() && meta.len() <= MAX_NAMED_FILE && !special
    }
    fn walk(v: &toml::Value) -> bool {
        match v {
            toml::Value::String(s) => safe(s),
            toml::Value::Array(items) => items.iter().all(walk),
            toml::Value::Table(t) => t.values().all(walk),
            _ => true,
        }
    }
    match text.parse::<toml::Table>() {
        Ok(table) => table.values().all(walk),
        Err(_) => true,
    }
}

/// Routes a few calls through loaded rules: every route found plans only known destinations,
/// each at most once, with every destination up, none, or every other one; `explain` agrees
/// with `route_for`.
pub fn exercise_router(router: &Router) {
    let n = router.rules.destinations.len();
    struct Fixed;
    impl routing_rules::Headers for Fixed {
        fn header(&self, name: &str) -> Option<&str> {
            [("X-Tenant", "acme"), ("X-Emergency", "1")]
                .into_iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        }
    }
    let ups: [&dyn Fn(DestId) -> bool; 3] = [&|_| true, &|_| false, &|d: DestId| d.0 & 1 == 0];
    let listeners: Vec<Option<String>> = router
        .sources()
        .map(|(_, s)| Some(s.to_string()))
        .chain([None])
        .collect();
    for to in [
        Some("+15551234"),
        Some("+442071234567"),
        Some("911"),
        Some(""),
        None,
    ] {
        for from in [Some("+19995550000"), None] {
            for (i, listener) in listeners.iter().enumerate() {
                let call = routing_rules::Call {
                    to_user: to,
                    from_user: from,
                    listener: listener.as_deref(),
                    headers: &Fixed,
                    call_id: Some("fuzz-call"),
                    entropy: (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                };
                let route = router.route_for(&call);
                let explained = router.explain(&call, &|_| true);
                assert_eq!(explained.as_ref().ok().map(|e| e.route), route);
                if let Ok(e) = &explained {
                    let _ = e.to_string();
                }
                let Some(route) = route else { continue };
                for up in ups {
                    let plan = router.plan(route, &call, up);
                    let mut seen = HashSet::new();
                    for t in &plan.tiers {
                        assert!(!t.members.is_empty(), "empty tier in {plan:?}");
                        for &d in &t.members {
                            assert!((d.0 as usize) < n, "unknown destination in {plan:?}");
                            assert!(seen.insert(d), "destination planned twice: {plan:?}");
                        }
                    }
                    let _ = router.survival(route, &call, up);
                    let _ = router.explain(&call, up).map(|e| e.to_string());
                }
            }
        }
    }
}

// ---- the core: operations -------------------------------------------------------------------

/// Who may send to the core: the carrier, then the three destinations of [`CORE_RULES`].
pub const PEERS: [&str; 4] = [
    "10.0.0.1:5060",
    "127.0.0.1:5070",
    "127.0.0.1:5080",
    "127.0.0.1:5090",
];

/// The rules of the fuzzed core: a parallel route (`+44…`: primary and secondary at once, then
/// the lifeboat) and a serial route (`+1…`: primary, secondary, lifeboat). The secondary
/// cancels deferred (RFC 3261 §9.1); other numbers match no route.
pub const CORE_RULES: &str = r#"
[[listen]]
name = "carrier"
transport = "udp"
address = "192.0.2.10:5060"

[[destination]]
name = "primary"
address = "127.0.0.1:5070"

[[destination]]
name = "secondary"
address = "127.0.0.1:5080"
cancel_mode = "deferred"
provisional_timeout = "2s"

[[destination]]
name = "lifeboat"
address = "127.0.0.1:5090"

[[group]]
name = "clouds"
strategy = "parallel"
members = ["primary", "secondary"]

[[group]]
name = "lifeboats"
members = ["lifeboat"]

[[route]]
name = "hot-hot"
match = { to_prefix = ["+44"] }
tiers = ["clouds", "lifeboats"]
pass_503 = true
ring_timeout = "40s"

[[route]]
name = "serial"
match = { to_prefix = ["+1"] }
destinations = ["primary", "secondary", "lifeboat"]
ringing_retry_codes = [480]
"#;

/// Request-URIs of new requests.
const URIS: [&str; 7] = [
    "sip:+15551234@192.0.2.10",
    "sip:+442071234567@192.0.2.10",
    "sip:+9995550000@192.0.2.10",
    "tel:+15551234",
    "sip:+15551234@192.0.2.10;transport=tcp",
    "sips:+442071234567@192.0.2.10",
    "mailto:nobody@example.com",
];
/// Request-URIs of in-dialog requests (index 0: the natural remote target, see
/// [`Sim::in_dialog`]).
const DIALOG_URIS: [&str; 6] = [
    "",
    "sip:+15550000@10.0.0.1:5060",
    "sip:agent@127.0.0.1:5070",
    "sip:agent@127.0.0.1:5080;transport=tcp",
    "sips:agent@127.0.0.1:5090",
    "sip:agent@example.com",
];
const CALL_IDS: [&str; 4] = ["a", "b", "c", "d"];
const CALLER_TAGS: [&str; 2] = ["c1", "c2"];
/// The tags callees answer with; the destinations' own are `p`, `s`, `l`.
const CALLEE_TAGS: [&str; 4] = ["p", "s", "l", "x"];
const MAX_FORWARDS: [Option<u32>; 4] = [Some(70), Some(1), Some(0), None];
/// Extra header lines of a new INVITE.
const EXTRAS: [&str; 8] = [
    "",
    "Proxy-Require: 100rel\r\n",
    "User-Agent: friendly-scanner\r\n",
    "P-Asserted-Identity: <sip:+19995550000@10.0.0.1>\r\n",
    "Route: <sip:192.0.2.99:5060;lr>\r\n",
    "Route: <sip:192.0.2.10:5060;lr;psn=7;psd=primary;ftag=c1>\r\n",
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-ps7-00000000-1\r\n",
    "Supported: 100rel, timer\r\nAllow: INVITE, ACK, BYE, CANCEL\r\n",
];
const DIALOG_METHODS: [&str; 8] = [
    "ACK", "BYE", "INFO", "INVITE", "UPDATE", "OPTIONS", "PRACK", "NOTIFY",
];
const OOD_METHODS: [&str; 6] = ["OPTIONS", "INFO", "MESSAGE", "BYE", "REGISTER", "SUBSCRIBE"];
/// Codes a simulated peer answers with.
pub const CODES: [u16; 12] = [100, 180, 183, 200, 408, 480, 481, 486, 487, 500, 503, 603];

/// Most ops [`ops_from_bytes`] decodes (so a fuzz input cannot trip the per-source rate limit
/// and make the core shed calls it would otherwise take).
pub const MAX_OPS: usize = 64;

/// One thing that happens to the core. Indices pick from small fixed sets (`call` from
/// [`CALL_IDS`] × [`CALLER_TAGS`], `uri` from the Request-URIs, ...) or count back from the
/// latest of something the simulation recorded; an index past the end wraps around.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// [`PEERS`]`[peer % 4]` sends a request, with `mutation` applied to its bytes.
    Request {
        peer: u8,
        req: Req,
        mutation: Vec<Edit>,
    },
    /// [`PEERS`]`[peer % 4]` answers a request the core sent it, with `mutation` applied.
    Response {
        peer: u8,
        resp: Resp,
        mutation: Vec<Edit>,
    },
    /// The clock moves on by `ms`; due timers fire in deadline order.
    Advance { ms: u32 },
    /// An ICMP error quotes the first `len` bytes of the `nth` latest datagram the core sent.
    Unreachable { nth: u8, len: u16 },
    /// The send reported with the `nth` latest report key the core gave could not be
    /// delivered; `None`: a key the core never gave.
    DeliveryFailure { nth: Option<u8> },
}

/// A request a peer sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Req {
    /// A new INVITE with a fresh branch (an RFC 2543 one without the magic cookie when
    /// `old_branch`).
    Invite {
        call: u8,
        uri: u8,
        max_forwards: u8,
        extra: u8,
        old_branch: bool,
    },
    /// The same bytes as the `nth` latest request this peer sent.
    Retransmit { nth: u8 },
    /// CANCEL of the `nth` latest INVITE this peer sent (an unknown one if none).
    Cancel { nth: u8 },
    /// The ACK of a final non-2xx to the `nth` latest INVITE this peer sent (its branch), with
    /// To tag [`CALLEE_TAGS`]`[to_tag]`.
    Ack { nth: u8, to_tag: u8 },
    /// A request inside a dialog: `method` from ACK (of a 2xx), BYE, INFO, re-INVITE, UPDATE,
    /// OPTIONS, PRACK, NOTIFY; the callee's tag `to_tag`; Route `route` (none, the Record-Route
    /// the core wrote for this Call-ID, the latest of any call, a forged one of ours, ours then
    /// a foreign one); CSeq `cseq + 1`.
    InDialog {
        method: u8,
        call: u8,
        to_tag: u8,
        route: u8,
        cseq: u8,
        uri: u8,
    },
    /// A non-INVITE without To tag (OPTIONS, INFO, MESSAGE, BYE, REGISTER, SUBSCRIBE).
    OutOfDialog { method: u8, call: u8, uri: u8 },
}

/// A response a peer sends to a request the core sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resp {
    /// Which request: the `nth` latest among those of method `method` (any but ACK, INVITE,
    /// CANCEL, BYE, other). Without one, a made-up INVITE with a branch of ours.
    pub nth: u8,
    pub method: u8,
    /// From [`CODES`].
    pub code: u16,
    /// 0: the responder's own tag; else [`CALLEE_TAGS`]`[to_tag - 1]`.
    pub to_tag: u8,
    pub twist: Twist,
}

/// How a response departs from what a well-behaved peer would send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Twist {
    None,
    /// The top Via branch has one more character.
    Branch,
    /// The To tag is not the one the peer used before.
    ToTag,
    /// The CSeq number is off.
    CSeq,
    /// The Call-ID is off.
    CallId,
    /// The top Via (ours) is missing.
    NoVia,
    /// `Retry-After: 120`.
    RetryAfter,
    /// The CSeq method is BYE.
    CSeqMethod,
}

const TWISTS: [Twist; 8] = [
    Twist::None,
    Twist::Branch,
    Twist::ToTag,
    Twist::CSeq,
    Twist::CallId,
    Twist::NoVia,
    Twist::RetryAfter,
    Twist::CSeqMethod,
];

/// One byte-level change; `pos` wraps around the message length (plus one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edit {
    pub pos: u16,
    pub kind: EditKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EditKind {
    Set(u8),
    /// Removes 1..=16 bytes.
    Delete(u8),
    Insert(u8),
    Truncate,
}

/// Applies `edits` in order.
pub fn mutate(bytes: &mut Vec<u8>, edits: &[Edit]) {
    for e in edits {
        let pos = e.pos as usize % (bytes.len() + 1);
        match e.kind {
            EditKind::Set(b) => {
                if let Some(x) = bytes.get_mut(pos) {
                    *x = b;
                }
            }
            EditKind::Delete(n) => {
                let end = (pos + n as usize).min(bytes.len());
                bytes.drain(pos..end);
            }
            EditKind::Insert(b) => bytes.insert(pos, b),
            EditKind::Truncate => bytes.truncate(pos),
        }
    }
}

// ---- ops from bytes and back ----------------------------------------------------------------

/// Reads fuzzer bytes; past the end it reads zeros.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn edits(&mut self) -> Vec<Edit> {
        // Most messages go unmutated: 192..=255 gives 1..=4 edits.
        let n = match self.u8() {
            b @ 192.. => (b % 4) as usize + 1,
            _ => 0,
        };
        (0..n)
            .map(|_| {
                let pos = self.u16();
                let kind = match self.u8() % 4 {
                    0 => EditKind::Set(self.u8()),
                    1 => EditKind::Delete(self.u8() % 16 + 1),
                    2 => EditKind::Insert(self.u8()),
                    _ => EditKind::Truncate,
                };
                Edit { pos, kind }
            })
            .collect()
    }
    fn req(&mut self) -> Req {
        match self.u8() % 6 {
            0 => Req::Invite {
                call: self.u8() % 8,
                uri: self.u8() % URIS.len() as u8,
                max_forwards: self.u8() % 4,
                extra: self.u8() % EXTRAS.len() as u8,
                old_branch: self.u8() % 8 == 7,
            },
            1 => Req::Retransmit { nth: self.u8() % 8 },
            2 => Req::Cancel { nth: self.u8() % 8 },
            3 => Req::Ack {
                nth: self.u8() % 8,
                to_tag: self.u8() % 4,
            },
            4 => Req::InDialog {
                method: self.u8() % DIALOG_METHODS.len() as u8,
                call: self.u8() % 8,
                to_tag: self.u8() % 4,
                route: self.u8() % 5,
                cseq: self.u8() % 5,
                uri: self.u8() % DIALOG_URIS.len() as u8,
            },
            _ => Req::OutOfDialog {
                method: self.u8() % OOD_METHODS.len() as u8,
                call: self.u8() % 8,
                uri: self.u8() % URIS.len() as u8,
            },
        }
    }
    fn op(&mut self) -> Op {
        match self.u8() % 10 {
            0..=3 => Op::Request {
                peer: self.u8() % 4,
                req: self.req(),
                mutation: self.edits(),
            },
            4..=6 => Op::Response {
                peer: self.u8() % 4,
                resp: Resp {
                    nth: self.u8() % 4,
                    method: self.u8() % 5,
                    code: CODES[self.u8() as usize % CODES.len()],
                    to_tag: self.u8() % 5,
                    twist: TWISTS[self.u8() as usize % TWISTS.len()],
                },
                mutation: self.edits(),
            },
            7 => Op::Advance {
                ms: u32::from(self.u16()) * 10,
            },
            8 => Op::Unreachable {
                nth: self.u8() % 16,
                len: self.u16() % 1024,
            },
            _ => Op::DeliveryFailure {
                nth: match self.u8() {
                    255 => None,
                    n => Some(n % 16),
                },
            },
        }
    }
}

/// Decodes up to [`MAX_OPS`] ops from fuzzer bytes; every byte string is some sequence.
pub fn ops_from_bytes(data: &[u8]) -> Vec<Op> {
    let mut r = Reader(data);
    let mut ops = Vec::new();
    while !r.0.is_empty() && ops.len() < MAX_OPS {
        ops.push(r.op());
    }
    ops
}

/// The bytes [`ops_from_bytes`] decodes back into `ops` (for ops in its canonical ranges:
/// indices below their modulus, `ms` a multiple of 10 below 655 360, codes from [`CODES`]).
pub fn ops_to_bytes(ops: &[Op]) -> Vec<u8> {
    fn edits(out: &mut Vec<u8>, edits: &[Edit]) {
        match edits.len() {
            0 => out.push(0),
            n => out.push(192 + (n as u8 - 1) % 4),
        }
        for e in edits.iter().take(4) {
            out.extend_from_slice(&e.pos.to_le_bytes());
            match e.kind {
                EditKind::Set(b) => out.extend([0, b]),
                EditKind::Delete(n) => out.extend([1, n.saturating_sub(1)]),
                EditKind::Insert(b) => out.extend([2, b]),
                EditKind::Truncate => out.push(3),
            }
        }
    }
    let mut out = Vec::new();
    for op in ops {
        match op {
            Op::Request {
                peer,
                req,
                mutation,
            } => {
                out.extend([0, *peer]);
                match *req {
                    Req::Invite {
                        call,
                        uri,
                        max_forwards,
                        extra,
                        old_branch,
                    } => out.extend([
                        0,
                        call,
                        uri,
                        max_forwards,
                        extra,
                        if old_branch { 7 } else { 0 },
                    ]),
                    Req::Retransmit { nth } => out.extend([1, nth]),
                    Req::Cancel { nth } => out.extend([2, nth]),
                    Req::Ack { nth, to_tag } => out.extend([3, nth, to_tag]),
                    Req::InDialog {
                        method,
                        call,
                        to_tag,
                        route,
                        cseq,
                        uri,
                    } => out.extend([4, method, call, to_tag, route, cseq, uri]),
                    Req::OutOfDialog { method, call, uri } => out.extend([5, method, call, uri]),
                }
                edits(&mut out, mutation);
            }
            Op::Response {
                peer,
                resp,
                mutation,
            } => {
                let code = CODES.iter().position(|&c| c == resp.code).unwrap_or(0) as u8;
                let twist = TWISTS.iter().position(|&t| t == resp.twist).unwrap_or(0) as u8;
                out.extend([4, *peer, resp.nth, resp.method, code, resp.to_tag, twist]);
                edits(&mut out, mutation);
            }
            Op::Advance { ms } => {
                out.push(7);
                out.extend_from_slice(&((ms / 10).min(65_535) as u16).to_le_bytes());
            }
            Op::Unreachable { nth, len } => {
                out.extend([8, *nth]);
                out.extend_from_slice(&len.to_le_bytes());
            }
            Op::DeliveryFailure { nth } => out.extend([9, nth.unwrap_or(255)]),
        }
    }
    out
}

// ---- the core: simulation -------------------------------------------------------------------

fn peer_addr(i: usize) -> SocketAddr {
    PEERS[i % PEERS.len()]
        .parse()
        .expect("PEERS are socket addresses")
}

/// The compiled [`CORE_RULES`], once per process.
fn core_router() -> Arc<Router> {
    static ROUTER: OnceLock<Arc<Router>> = OnceLock::new();
    ROUTER
        .get_or_init(|| match Config::parse(CORE_RULES, "core-rules.toml") {
            Ok(c) => c.router,
            Err(e) => panic!("CORE_RULES do not load: {e}"),
        })
        .clone()
}

/// One metrics recorder for every simulated core of the process (the core only writes to
/// it), drained now and then. A recorder per core would be freed after each sequence, and
/// its histogram buckets (crossbeam-epoch, freed later) show as leaks to LeakSanitizer.
fn core_metrics(router: &Router) -> Metrics {
    static METRICS: OnceLock<(Metrics, metrics_exporter_prometheus::PrometheusHandle)> =
        OnceLock::new();
    static USES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let (metrics, handle) = METRICS.get_or_init(|| {
        let (dests, routes) = pointsman_protocol::metrics::names(router);
        crate::exporter::local(&dests, &routes)
    });
    // Rendering drains the histograms' samples, which would otherwise pile up.
    if USES.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 256 == 255 {
        let _ = handle.render();
    }
    metrics.clone()
}

/// A new INVITE a peer sent, to build its CANCEL and ACK from.
#[derive(Clone, Debug)]
struct SentInvite {
    uri: &'static str,
    via: String,
    call_id: &'static str,
    from_tag: &'static str,
    cseq: u32,
}

/// Tracks finals sent upstream per INVITE server transaction, as the upstream peer sees it:
/// (peer, top Via value).
#[derive(Default)]
struct Finals {
    /// First final non-2xx sent for the transaction: (code, op index).
    non_2xx: HashMap<(SocketAddr, Vec<u8>), (u16, usize)>,
    /// Transactions that got any final.
    answered: HashSet<(SocketAddr, Vec<u8>)>,
    /// The first INVITE received with this (source, top Via value).
    invites: HashMap<(SocketAddr, Vec<u8>), Vec<u8>>,
    /// The peer reused the Via of an INVITE for different bytes, or retransmitted it after a
    /// final: it broke RFC 3261, so the property does not hold for that transaction.
    tainted: HashSet<(SocketAddr, Vec<u8>)>,
}

/// The core on the shared fake-clock harness (its clock, timers and sends), and what the
/// simulated peers did.
struct Sim {
    h: Harness,
    /// Requests each peer sent, as sent.
    requests: [Vec<Vec<u8>>; 4],
    /// New INVITEs each peer sent.
    invites: [Vec<SentInvite>; 4],
    seq: u32,
    finals: Finals,
    /// Index of the op being applied (for failure messages).
    step: usize,
}

impl Sim {
    fn new() -> Sim {
        let router = core_router();
        let metrics = core_metrics(&router);
        let now = Instant::now();
        let routing = testing::routing(router, metrics, now);
        let mut cfg = testing::core_config();
        cfg.listeners = vec!["carrier".into()];
        Sim {
            h: Harness::new(Core::new(cfg, routing, now, 0x5eed), now),
            requests: Default::default(),
            invites: Default::default(),
            seq: 0,
            finals: Finals::default(),
            step: 0,
        }
    }

    /// Checks what the core sent from send `from` on. `stateless` is set while the core
    /// handles bytes it cannot scan: its 400s then answer no transaction and are not recorded.
    fn check_sends(&mut self, from: usize, stateless: bool) {
        for i in from..self.h.sent.len() {
            let (to, _, bytes) = self.h.sent[i].clone();
            self.check_send(to, &bytes, stateless);
        }
    }

    /// Everything sent scans again; no 2xx goes up for an INVITE transaction that already got a
    /// final non-2xx.
    fn check_send(&mut self, to: SocketAddr, bytes: &[u8], stateless: bool) {
        if stateless {
            return self.check_salvaged_reply(to, bytes);
        }
        let m = match wire::scan(bytes, Framing::Datagram, &generous()) {
            Ok(m) => m,
            Err(e) => panic!(
                "op #{}: the core sent to {to} what does not scan ({e}):\n{}",
                self.step,
                String::from_utf8_lossy(bytes)
            ),
        };
        let Some(code) = m.code() else { return };
        if code < 200 || m.cseq_method != Method::Invite {
            return;
        }
        let tx = (to, m.slice(m.top_via.value).to_vec());
        self.finals.answered.insert(tx.clone());
        if self.finals.tainted.contains(&tx) {
            return;
        }
        if (200..300).contains(&code) {
            if let Some((first, at)) = self.finals.non_2xx.get(&tx) {
                panic!(
                    "op #{}: ghost call relayed: {code} sent to {to} for Call-ID {:?} (Via {:?}) \
                     after the final {first} of op #{at}:\n{}",
                    self.step,
                    String::from_utf8_lossy(m.slice(m.call_id)),
                    String::from_utf8_lossy(&tx.1),
                    String::from_utf8_lossy(bytes)
                );
            }
        } else {
            self.finals.non_2xx.entry(tx).or_insert((code, self.step));
        }
    }

    /// What the core answers to bytes it could not scan (400 or 505, by design built from the
    /// header lines it could salvage, which may be as broken as the request) need not scan,
    /// but it is one well-framed response: a status line, header lines, and one empty line at
    /// the very end (an echoed line cannot start a body or a second message).
    fn check_salvaged_reply(&self, to: SocketAddr, bytes: &[u8]) {
        let status = bytes.get(..12).filter(|s| {
            s.starts_with(b"SIP/2.0 ") && s[8..11].iter().all(u8::is_ascii_digit) && s[11] == b' '
        });
        let blank = memchr::memmem::find(bytes, b"\r\n\r\n");
        assert!(
            status.is_some() && blank == Some(bytes.len().saturating_sub(4)),
            "op #{}: the core answered unscannable bytes to {to} with something that is not one \
             response:\n{}",
            self.step,
            String::from_utf8_lossy(bytes)
        );
    }

    fn receive(&mut self, from: SocketAddr, bytes: &[u8]) {
        let scanned = wire::scan(bytes, Framing::Datagram, &Limits::default());
        if let Ok(m) = &scanned {
            if m.method() == Some(Method::Invite) {
                let tx = (from, m.slice(m.top_via.value).to_vec());
                match self.finals.invites.get(&tx) {
                    Some(first) if first != bytes || self.finals.answered.contains(&tx) => {
                        self.finals.tainted.insert(tx);
                    }
                    Some(_) => {}
                    None => {
                        self.finals.invites.insert(tx, bytes.to_vec());
                    }
                }
            }
        }
        let sent = self.h.sent.len();
        self.h.receive(from, bytes);
        self.check_sends(sent, scanned.is_err());
    }

    /// Moves the clock, firing due timers in deadline order.
    fn advance(&mut self, by: Duration) {
        let sent = self.h.sent.len();
        self.h.advance(by);
        self.check_sends(sent, false);
    }

    fn fresh_branch(&mut self, peer: usize, old: bool) -> String {
        self.seq += 1;
        if old {
            format!("{}{peer}", 1000 + self.seq)
        } else {
            format!("z9hG4bK-{peer}f{}", self.seq)
        }
    }

    /// The requests the core sent to `peer` whose method is `method` (see [`Resp::method`]).
    fn sent_requests(&self, peer: usize, method: u8) -> Vec<Bytes> {
        let addr = peer_addr(peer);
        self.h
            .sent
            .iter()
            .filter(|(to, _, b)| *to == addr && !b.starts_with(b"SIP/2.0 "))
            .filter(|(_, _, b)| {
                let is = |m: &[u8]| b.starts_with(m) && b.get(m.len()) == Some(&b' ');
                match method {
                    0 => !is(b"ACK"),
                    1 => is(b"INVITE"),
                    2 => is(b"CANCEL"),
                    3 => is(b"BYE"),
                    _ => !is(b"ACK") && !is(b"INVITE") && !is(b"CANCEL") && !is(b"BYE"),
                }
            })
            .map(|(_, _, b)| b.clone())
            .collect()
    }

    /// The latest Record-Route value the core wrote, for `call_id` (or any call).
    fn record_route(&self, call_id: Option<&str>) -> Option<String> {
        self.h.sent.iter().rev().find_map(|(_, _, b)| {
            let m = wire::scan(b, Framing::Datagram, &generous()).ok()?;
            if call_id.is_some_and(|c| m.slice(m.call_id) != c.as_bytes()) {
                return None;
            }
            let h = m.header(wire::HeaderName::RecordRoute)?;
            Some(String::from_utf8_lossy(m.slice(h.value)).into_owned())
        })
    }

    fn request_bytes(&mut self, peer: usize, req: &Req) -> Option<Vec<u8>> {
        let addr = PEERS[peer];
        let nth = |list_len: usize, n: u8| list_len.checked_sub(1 + n as usize % list_len.max(1));
        match *req {
            Req::Invite {
                call,
                uri,
                max_forwards,
                extra,
                old_branch,
            } => {
                let branch = self.fresh_branch(peer, old_branch);
                let via = format!("SIP/2.0/UDP {addr};branch={branch}");
                let uri = URIS[uri as usize % URIS.len()];
                let (call_id, from_tag) = call_of(call);
                let mf = match MAX_FORWARDS[max_forwards as usize % 4] {
                    Some(n) => format!("Max-Forwards: {n}\r\n"),
                    None => String::new(),
                };
                let extra = EXTRAS[extra as usize % EXTRAS.len()];
                self.invites[peer].push(SentInvite {
                    uri,
                    via: via.clone(),
                    call_id,
                    from_tag,
                    cseq: 1,
                });
                Some(
                    format!(
                        "INVITE {uri} SIP/2.0\r\nVia: {via}\r\n{mf}\
                         From: \"Carrier\" <sip:+15550000@10.0.0.1>;tag={from_tag}\r\n\
                         To: <{uri}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n\
                         Contact: <sip:+15550000@{addr}>\r\n{extra}\
                         Content-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n"
                    )
                    .into_bytes(),
                )
            }
            Req::Retransmit { nth: n } => {
                let list = &self.requests[peer];
                nth(list.len(), n).map(|i| list[i].clone())
            }
            Req::Cancel { nth: n } => {
                let inv = match nth(self.invites[peer].len(), n) {
                    Some(i) => self.invites[peer][i].clone(),
                    None => SentInvite {
                        uri: URIS[0],
                        via: format!(
                            "SIP/2.0/UDP {addr};branch={}",
                            self.fresh_branch(peer, false)
                        ),
                        call_id: CALL_IDS[0],
                        from_tag: CALLER_TAGS[0],
                        cseq: 1,
                    },
                };
                Some(
                    format!(
                        "CANCEL {uri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n\
                         From: \"Carrier\" <sip:+15550000@10.0.0.1>;tag={from}\r\n\
                         To: <{uri}>\r\nCall-ID: {cid}\r\nCSeq: {cseq} CANCEL\r\n\
                         Reason: SIP;cause=487;text=\"fuzz\"\r\nContent-Length: 0\r\n\r\n",
                        uri = inv.uri,
                        via = inv.via,
                        from = inv.from_tag,
                        cid = inv.call_id,
                        cseq = inv.cseq,
                    )
                    .into_bytes(),
                )
            }
            Req::Ack { nth: n, to_tag } => {
                let i = nth(self.invites[peer].len(), n)?;
                let inv = &self.invites[peer][i];
                Some(
                    format!(
                        "ACK {uri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n\
                         From: \"Carrier\" <sip:+15550000@10.0.0.1>;tag={from}\r\n\
                         To: <{uri}>;tag={tag}\r\nCall-ID: {cid}\r\nCSeq: {cseq} ACK\r\n\
                         Content-Length: 0\r\n\r\n",
                        uri = inv.uri,
                        via = inv.via,
                        from = inv.from_tag,
                        tag = CALLEE_TAGS[to_tag as usize % 4],
                        cid = inv.call_id,
                        cseq = inv.cseq,
                    )
                    .into_bytes(),
                )
            }
            Req::InDialog {
                method,
                call,
                to_tag,
                route,
                cseq,
                uri,
            } => Some(self.in_dialog(peer, method, call, to_tag, route, cseq, uri)),
            Req::OutOfDialog { method, call, uri } => {
                let branch = self.fresh_branch(peer, false);
                let method = OOD_METHODS[method as usize % OOD_METHODS.len()];
                let uri = URIS[uri as usize % URIS.len()];
                let (call_id, from_tag) = call_of(call);
                Some(
                    format!(
                        "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {addr};branch={branch}\r\n\
                         Max-Forwards: 70\r\nFrom: <sip:+15550000@10.0.0.1>;tag={from_tag}\r\n\
                         To: <{uri}>\r\nCall-ID: {call_id}\r\nCSeq: 1 {method}\r\n\
                         Content-Length: 0\r\n\r\n"
                    )
                    .into_bytes(),
                )
            }
        }
    }

    /// An in-dialog request: from the carrier (peer 0) it goes caller → callee (From: the
    /// caller's tag, To: the callee's, target: the callee's Contact); from a destination the
    /// other way.
    #[allow(clippy::too_many_arguments)]
    fn in_dialog(
        &mut self,
        peer: usize,
        method: u8,
        call: u8,
        to_tag: u8,
        route: u8,
        cseq: u8,
        uri: u8,
    ) -> Vec<u8> {
        let addr = PEERS[peer];
        let branch = self.fresh_branch(peer, false);
        let method = DIALOG_METHODS[method as usize % DIALOG_METHODS.len()];
        let (call_id, caller_tag) = call_of(call);
        let to_tag_index = to_tag as usize;
        let callee_tag = CALLEE_TAGS[to_tag_index % 4];
        let (from_tag, to_tag) = if peer == 0 {
            (caller_tag, callee_tag)
        } else {
            (callee_tag, caller_tag)
        };
        let target = match DIALOG_URIS[uri as usize % DIALOG_URIS.len()] {
            // The callee's Contact: the destination whose tag it is (`x`: the primary).
            "" if peer == 0 => format!("sip:agent@{}", PEERS[[1, 2, 3, 1][to_tag_index % 4]]),
            "" => "sip:+15550000@10.0.0.1:5060".to_string(),
            u => u.to_string(),
        };
        let route = match route % 5 {
            0 => None,
            1 => self.record_route(Some(call_id)),
            2 => self.record_route(None),
            3 => Some(format!(
                "<sip:192.0.2.10:5060;lr;psn=7;psd=nosuch;ftag={caller_tag}>"
            )),
            _ => self
                .record_route(Some(call_id))
                .map(|rr| format!("{rr}, <sip:127.0.0.1:5999;lr>")),
        };
        let route = route.map(|r| format!("Route: {r}\r\n")).unwrap_or_default();
        let cseq = u32::from(cseq % 5) + 1;
        format!(
            "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {addr};branch={branch}\r\n\
             Max-Forwards: 70\r\n{route}From: <sip:{addr}>;tag={from_tag}\r\n\
             To: <sip:+15551234@192.0.2.10>;tag={to_tag}\r\nCall-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\nContact: <sip:x@{addr}>\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    fn response_bytes(&mut self, peer: usize, resp: &Resp) -> Vec<u8> {
        let list = self.sent_requests(peer, resp.method % 5);
        let request: Vec<u8> = match list
            .len()
            .checked_sub(1 + resp.nth as usize % list.len().max(1))
        {
            Some(i) => list[i].to_vec(),
            None => format!(
                "INVITE sip:+15551234@{addr} SIP/2.0\r\n\
                 Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-ps7-00000000-{seq}\r\n\
                 Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-gone\r\n\
                 From: <sip:+15550000@10.0.0.1>;tag=c1\r\nTo: <sip:+15551234@192.0.2.10>\r\n\
                 Call-ID: gone\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
                addr = PEERS[peer],
                seq = self.seq,
            )
            .into_bytes(),
        };
        let own = ["c1", "p", "s", "l"][peer];
        let tag = match resp.to_tag % 5 {
            0 => own,
            t => CALLEE_TAGS[t as usize - 1],
        };
        response_to(&request, resp.code, tag, PEERS[peer], resp.twist)
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Request {
                peer,
                req,
                mutation,
            } => {
                let peer = *peer as usize % PEERS.len();
                let Some(mut bytes) = self.request_bytes(peer, req) else {
                    return;
                };
                mutate(&mut bytes, mutation);
                self.receive(peer_addr(peer), &bytes);
                self.requests[peer].push(bytes);
            }
            Op::Response {
                peer,
                resp,
                mutation,
            } => {
                let peer = *peer as usize % PEERS.len();
                let mut bytes = self.response_bytes(peer, resp);
                mutate(&mut bytes, mutation);
                self.receive(peer_addr(peer), &bytes);
            }
            Op::Advance { ms } => self.advance(Duration::from_millis(u64::from(*ms))),
            Op::Unreachable { nth, len } => {
                let sent = self.h.sent.len();
                let Some(i) = sent.checked_sub(1 + *nth as usize % sent.max(1)) else {
                    return;
                };
                let bytes = self.h.sent[i].2.clone();
                let quoted = &bytes[..bytes.len().min(*len as usize)];
                self.h
                    .drive(|core, now, out| core.on_udp_unreachable(quoted, now, out));
                self.check_sends(sent, false);
            }
            Op::DeliveryFailure { nth } => {
                let reports: Vec<TxKey> = self.h.reports.iter().flatten().copied().collect();
                let key = match nth {
                    Some(n) if !reports.is_empty() => {
                        reports[reports.len() - 1 - *n as usize % reports.len()]
                    }
                    Some(n) => u64::from(*n),
                    None => 0x5eed_f00d,
                };
                let sent = self.h.sent.len();
                self.h
                    .drive(|core, now, out| core.on_delivery_failure(key, now, out));
                self.check_sends(sent, false);
            }
        }
    }
}

/// Call-ID and caller tag of call index `call`.
fn call_of(call: u8) -> (&'static str, &'static str) {
    (
        CALL_IDS[call as usize % 4],
        CALLER_TAGS[(call as usize / 4) % 2],
    )
}

/// A response a UAS at `addr` would send to `request` (bytes the core sent), built by the shared
/// builder ([`testing::respond`]: Vias, From, To with `to_tag` added above 100 unless it has one,
/// Call-ID, CSeq; Record-Route and a Contact when dialog-forming); then `twist`.
pub fn response_to(request: &[u8], code: u16, to_tag: &str, addr: &str, twist: Twist) -> Vec<u8> {
    // A tag the peer never used: the builder adds it only where it would have added `to_tag`.
    let other_tag = format!("{to_tag}-other");
    let contact = format!("sip:agent@{addr}");
    let answer = Answer {
        reason: "Fuzzed",
        to_tag: if twist == Twist::ToTag {
            &other_tag
        } else {
            to_tag
        },
        contact: &contact,
        extra: if twist == Twist::RetryAfter {
            "Retry-After: 120\r\n"
        } else {
            ""
        },
        sdp: None,
    };
    let Some(built) = testing::respond(request, code, &answer) else {
        // What the core sends always scans; anything else gets a bare status line.
        return format!("SIP/2.0 {code} Fuzzed\r\nContent-Length: 0\r\n\r\n").into_bytes();
    };
    if matches!(twist, Twist::None | Twist::ToTag | Twist::RetryAfter) {
        return built;
    }
    let text = String::from_utf8_lossy(&built);
    let mut out = String::with_capacity(text.len() + 16);
    let mut first_via = true;
    let mut branch_twisted = false;
    for line in text.split_inclusive("\r\n") {
        let body = line.strip_suffix("\r\n").unwrap_or(line);
        let name = body
            .split(':')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match (name.as_str(), twist) {
            ("via" | "v", Twist::NoVia) if first_via => first_via = false,
            ("via" | "v", Twist::Branch) if !branch_twisted => {
                // One more character at the end of the top branch (the next Via too when the
                // top one has none).
                branch_twisted = body.contains("branch=");
                let end = body.find(";rport").unwrap_or(body.len());
                out.push_str(&body[..end]);
                out.push('0');
                out.push_str(&body[end..]);
                out.push_str("\r\n");
            }
            ("call-id" | "i", Twist::CallId) => {
                out.push_str(body);
                out.push_str("-twisted\r\n");
            }
            ("cseq", Twist::CSeq | Twist::CSeqMethod) => {
                let (_, value) = body.split_once(':').unwrap_or(("", ""));
                let mut parts = value.split_whitespace();
                let n: u32 = parts.next().and_then(|n| n.parse().ok()).unwrap_or(1);
                let method = parts.next().unwrap_or("INVITE");
                if twist == Twist::CSeq {
                    out.push_str(&format!("CSeq: {} {method}\r\n", n + 1));
                } else {
                    out.push_str(&format!("CSeq: {n} BYE\r\n"));
                }
            }
            _ => out.push_str(line),
        }
    }
    out.into_bytes()
}

/// Applies `ops` to a fresh core, then lets 13 simulated hours pass. Panics unless:
///
/// - nothing panics;
/// - every message the core sends scans again (datagram framing, generous limits), except its
///   answers to bytes it could not scan, which need only be one well-framed response (see
///   `Sim::check_salvaged_reply`);
/// - no 2xx goes to an upstream peer for an INVITE transaction (its top Via, as that peer
///   sent it) after a final non-2xx went there for it — no ghost call relayed. Transactions
///   the peer itself broke (the same Via on different INVITE bytes, or the INVITE sent again
///   after a final) and the core's stateless 400s to bytes it cannot scan are exempt;
/// - 2 hours after the last op (every timer due by then fired, in order) the core holds no
///   transaction and no dialog (`table_sizes() == (0, 0, 0)`), and counts none in progress;
/// - 13 hours after it (past [`pointsman_protocol::MAX_CALL_DURATION`]) no answered call either.
pub fn core_sequence(ops: &[Op]) {
    let mut sim = Sim::new();
    for (i, op) in ops.iter().enumerate() {
        sim.step = i;
        sim.apply(op);
    }
    sim.step = ops.len();
    sim.advance(Duration::from_secs(2 * 3600));
    assert_eq!(
        sim.h.core.table_sizes(),
        (0, 0, 0),
        "(servers, clients, dialogs) left 2 h after the last op"
    );
    assert_eq!(
        sim.h.core.transactions_in_progress(),
        0,
        "transactions still counted in progress (against [guard] max_transactions) 2 h after \
         the last op"
    );
    sim.advance(Duration::from_secs(11 * 3600));
    assert_eq!(
        sim.h.core.answered_calls(),
        0,
        "answered calls left 13 h after the last op"
    );
}

#[cfg(test)]
mod tests {
    //! The stable-toolchain equivalents of the fuzz targets (CI runs these), scripted sequences
    //! that show the simulation drives real calls, and the seed writer of `fuzz/seed.sh`.

    use super::*;
    use proptest::collection::vec;
    use proptest::option;
    use proptest::prelude::*;
    use proptest::sample::select;

    /// The number of cases: `default`, or `PROPTEST_CASES` for a deeper run by hand. (Failures
    /// are not persisted to files: proptest prints the shrunk input; make it a unit test.)
    fn cases(default: u32) -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    // ---- config text ----------------------------------------------------------------------

    /// What a key holds, for picking plausible values.
    #[derive(Clone, Copy, Debug)]
    enum K {
        Name,
        Addr,
        Transport,
        Path,
        Cidrs,
        Duration,
        Int,
        Float,
        Bool,
        Codes,
        Names,
        Strategy,
        CancelMode,
        HashOn,
        Match,
        Survival,
        Members,
        Token,
    }

    const NAMES: [&str; 8] = [
        "carrier",
        "primary",
        "secondary",
        "lifeboat",
        "clouds",
        "lifeboats",
        "default",
        "x",
    ];

    fn quoted(s: &str) -> String {
        format!("{s:?}")
    }

    /// A TOML array of names: from [`NAMES`], or (`careless`) odd ones too.
    fn names(careless: bool) -> BoxedStrategy<String> {
        let odd = select(vec!["", "bad name!", "ünïcødé", "a.b-c_d"]);
        let name = if careless {
            prop_oneof![8 => select(NAMES.to_vec()), 1 => odd].boxed()
        } else {
            select(NAMES.to_vec()).boxed()
        };
        vec(name, 0..4)
            .prop_map(|v| {
                let items: Vec<String> = v.iter().map(|s| quoted(s)).collect();
                format!("[{}]", items.join(", "))
            })
            .boxed()
    }

    fn members(careless: bool) -> BoxedStrategy<String> {
        let member = prop_oneof![
            3 => select(NAMES.to_vec()).prop_map(quoted),
            1 => (select(NAMES.to_vec()), 0u32..3, 0u32..3).prop_map(|(n, p, w)| {
                format!("{{ name = {n:?}, priority = {p}, weight = {w} }}")
            }),
        ];
        let member = if careless {
            let odd = one_of(&[
                "\"\"",
                "{ name = \"primary\", bogus = 1 }",
                "{ priority = 1 }",
            ]);
            prop_oneof![8 => member, 1 => odd].boxed()
        } else {
            member.boxed()
        };
        vec(member, 0..4)
            .prop_map(|v| format!("[{}]", v.join(", ")))
            .boxed()
    }

    fn one_of(values: &'static [&'static str]) -> BoxedStrategy<String> {
        select(values).prop_map(String::from).boxed()
    }

    /// Values for a key of kind `k`: `(valid, near)` — what a careful operator writes, and what
    /// a careless one does (the right type, a wrong value: out of range, misspelt, empty).
    fn samples(k: K) -> (&'static [&'static str], &'static [&'static str]) {
        match k {
            K::Name => (
                &[
                    "\"carrier\"",
                    "\"primary\"",
                    "\"secondary\"",
                    "\"lifeboat\"",
                    "\"clouds\"",
                ],
                &[
                    "\"\"",
                    "\"bad name!\"",
                    "\"ünïcødé\"",
                    "\"a.b-c_d\"",
                    "\"x\"",
                ],
            ),
            K::Addr => (
                &[
                    "\"127.0.0.1:5060\"",
                    "\"127.0.0.1:5070\"",
                    "\"127.0.0.1:5080\"",
                    "\"[::1]:5061\"",
                    "\"10.0.0.1:5060\"",
                ],
                &[
                    "\"0.0.0.0:5060\"",
                    "\"[::]:5060\"",
                    "\"10.0.0.1\"",
                    "\"example.com:5060\"",
                    "\"127.0.0.1\"",
                    "\"::1:5060\"",
                    "\"127.0.0.1:0\"",
                    "\"127.0.0.1:99999\"",
                    "\"999.1.1.1:5060\"",
                    "\"\"",
                ],
            ),
            K::Transport => (&["\"udp\"", "\"tcp\""], &["\"tls\"", "\"sctp\"", "\"UDP\""]),
            // Every file named is missing, not PEM, or a directory: TLS never loads here.
            K::Path => (
                &["\"missing.pem\"", "\"Cargo.toml\""],
                &[
                    "\"\"",
                    "\" \"",
                    "\"../Cargo.toml\"",
                    "\"src\"",
                    "\"/nonexistent/ca.pem\"",
                ],
            ),
            K::Cidrs => (
                &[
                    "[\"10.0.0.0/8\"]",
                    "[\"::/0\", \"2001:db8::/32\"]",
                    "[\"10.0.0.1\", \"192.0.2.0/24\"]",
                ],
                &["[\"10.0.0.0/33\"]", "[]", "[\"x\"]", "[\"10.0.0.1/8\"]"],
            ),
            K::Duration => (
                &[
                    "\"3s\"",
                    "\"250ms\"",
                    "\"2min\"",
                    "\"500ms\"",
                    "\"60s\"",
                    "\"1h 30m\"",
                ],
                &[
                    "\"0s\"",
                    "\"1ns\"",
                    "\"10000000000h\"",
                    "\"3\"",
                    "\"-1s\"",
                    "\"\"",
                    "\"1.5s\"",
                ],
            ),
            K::Int => (
                &["1", "2", "3", "64", "100"],
                &[
                    "0",
                    "65",
                    "65535",
                    "65536",
                    "-1",
                    "1000000",
                    "18446744073709551615",
                    "9223372036854775807",
                    "100000000000",
                ],
            ),
            K::Float => (
                &["0.5", "1.0", "100", "2.5"],
                &["0.0", "-1.0", "1e6", "1e7", "1e308", "nan", "inf", "-inf"],
            ),
            K::Bool => (&["true", "false"], &["\"yes\"", "1"]),
            K::Codes => (
                &["[200]", "[408, 500, 503]", "[503]", "[486, 600]"],
                &[
                    "[]",
                    "[99]",
                    "[700]",
                    "[200, 200]",
                    "[65536]",
                    "[486, 600, 699]",
                ],
            ),
            K::Strategy => (
                &["\"priority\"", "\"weighted\"", "\"hash\"", "\"parallel\""],
                &["\"random\"", "\"Parallel\""],
            ),
            K::CancelMode => (&["\"immediate\"", "\"deferred\""], &["\"never\""]),
            K::HashOn => (&["\"call-id\"", "\"caller\""], &["\"callee\""]),
            K::Match => (
                &[
                    "{ to_prefix = [\"+44\"] }",
                    "{ to = [\"+15551234\"], from_prefix = [\"1\"] }",
                    "{ source = [\"carrier\"] }",
                    "{ header = { name = \"X-Tenant\", value = \"acme\" } }",
                    "{ to = [\"+1 (555) 123-4\"] }",
                ],
                &[
                    "{ source = [\"nosuch\"] }",
                    "{ header = { name = \"\" } }",
                    "{ to_prefix = [\"abc\"] }",
                    "{ to_prefix = [] }",
                    "{}",
                    "{ bogus = 1 }",
                    "{ to_prefix = [\"\"] }",
                ],
            ),
            K::Survival => (
                &[
                    "{ group = \"lifeboats\" }",
                    "{ reject = 503, retry_after = \"30s\" }",
                ],
                &[
                    "{ reject = 200 }",
                    "{ reject = 99999 }",
                    "{ group = \"nosuch\" }",
                    "{ reject = 503, group = \"clouds\" }",
                    "{}",
                ],
            ),
            K::Token => (
                &["\"0123456789abcdef0123\""],
                &[
                    "\"short\"",
                    "\"\"",
                    "\"has a space in it, long enough\"",
                    "\"ünïcødé-token-long-enough\"",
                ],
            ),
            K::Names | K::Members => (&[], &[]),
        }
    }

    /// Values of the wrong type or shape for any key.
    fn implausible() -> BoxedStrategy<String> {
        one_of(&[
            "42",
            "-7",
            "true",
            "\"x\"",
            "[1, \"a\"]",
            "{ a = 1 }",
            "1979-05-27T07:32:00Z",
            "3.14",
            "\"\\u00e9\\u0000\"",
            "[]",
            "{}",
            "18446744073709551616",
            "\"🚀\"",
            "'literal'",
            "\"\"\"multi\nline\"\"\"",
            "[[1], [\"a\"]]",
            "0x10",
        ])
    }

    /// A value for a key of kind `k`: nearly always valid when `careless` is false; else
    /// often out of range, now and then of the wrong type.
    fn value(k: K, careless: bool) -> BoxedStrategy<String> {
        let (valid, near) = match k {
            K::Names => (names(careless), names(true)),
            K::Members => (members(careless), members(true)),
            _ => {
                let (valid, near) = samples(k);
                (one_of(valid), one_of(near))
            }
        };
        if careless {
            prop_oneof![6 => valid, 4 => near, 1 => implausible()].boxed()
        } else {
            prop_oneof![40 => valid, 1 => near].boxed()
        }
    }

    /// A table: `header`, its required keys, then a few of the others (maybe repeated, maybe
    /// unknown).
    fn table(
        careless: bool,
        header: &'static str,
        required: &'static [(&'static str, K)],
        optional: &'static [(&'static str, K)],
    ) -> BoxedStrategy<String> {
        let req: Vec<BoxedStrategy<String>> = required
            .iter()
            .map(|&(key, k)| {
                prop_oneof![
                    40 => value(k, careless).prop_map(move |v| format!("{key} = {v}\n")),
                    1 => Just(String::new()),
                ]
                .boxed()
            })
            .collect();
        // Distinct keys in random order; now and then an unknown one or one key twice.
        let keys = proptest::sample::subsequence(optional.to_vec(), 0..=optional.len().min(5))
            .prop_shuffle();
        let odd = prop_oneof![
            20 => Just(None),
            1 => Just(Some(("unknown_key", K::Int))),
            1 => select(optional.to_vec()).prop_map(Some),
        ];
        let odd = if careless {
            odd.boxed()
        } else {
            Just(None).boxed()
        };
        let extra = (keys, odd).prop_flat_map(move |(mut keys, odd)| {
            keys.extend(odd);
            keys.into_iter()
                .map(|(key, k)| value(k, careless).prop_map(move |v| format!("{key} = {v}\n")))
                .collect::<Vec<_>>()
        });
        (req, extra)
            .prop_map(move |(req, extra)| format!("{header}\n{}{}", req.concat(), extra.concat()))
            .boxed()
    }

    const LISTEN: &[(&str, K)] = &[
        ("name", K::Name),
        ("cert", K::Path),
        ("key", K::Path),
        ("client_ca", K::Path),
        ("allow", K::Cidrs),
    ];
    const DESTINATION: &[(&str, K)] = &[
        ("transport", K::Transport),
        ("ca", K::Path),
        ("client_cert", K::Path),
        ("client_key", K::Path),
        ("server_name", K::Name),
        ("provisional_timeout", K::Duration),
        ("cancel_mode", K::CancelMode),
        ("trusted", K::Bool),
        ("weight", K::Int),
        ("priority", K::Int),
        ("tags", K::Names),
        ("probe", K::Bool),
        ("probe_interval", K::Duration),
        ("probe_timeout", K::Duration),
        ("failure_threshold", K::Int),
        ("recovery_threshold", K::Int),
        ("probe_codes", K::Codes),
        ("max_calls", K::Int),
        ("max_cps", K::Float),
    ];
    const ROUTE: &[(&str, K)] = &[
        ("match", K::Match),
        ("tiers", K::Names),
        ("survivability", K::Survival),
        ("retry_codes", K::Codes),
        ("ringing_retry_codes", K::Codes),
        ("pass_503", K::Bool),
        ("ring_timeout", K::Duration),
    ];

    /// The single tables, each at most once.
    fn singles(careless: bool) -> Vec<BoxedStrategy<String>> {
        vec![
            table(
                careless,
                "[node]",
                &[],
                &[
                    ("id", K::Int),
                    ("advertise", K::Addr),
                    ("workers", K::Int),
                    ("realtime_priority", K::Int),
                    ("scheduler_slice", K::Duration),
                    ("shutdown_grace", K::Duration),
                ],
            ),
            table(
                careless,
                "[timers]",
                &[],
                &[
                    ("t1", K::Duration),
                    ("t2", K::Duration),
                    ("t4", K::Duration),
                ],
            ),
            table(
                careless,
                "[limits]",
                &[],
                &[
                    ("max_message_size", K::Int),
                    ("max_headers", K::Int),
                    ("max_line_length", K::Int),
                    ("max_via", K::Int),
                ],
            ),
            table(
                careless,
                "[tcp]",
                &[],
                &[
                    ("idle_timeout", K::Duration),
                    ("max_connections", K::Int),
                    ("connect_timeout", K::Duration),
                ],
            ),
            table(
                careless,
                "[tls]",
                &[],
                &[("handshake_timeout", K::Duration), ("ca", K::Path)],
            ),
            table(
                careless,
                "[admin]",
                &[],
                &[
                    ("enabled", K::Bool),
                    ("listen", K::Addr),
                    ("token", K::Token),
                ],
            ),
            table(
                careless,
                "[health]",
                &[],
                &[
                    ("source", K::Addr),
                    ("passive", K::Bool),
                    ("retry_after_min", K::Duration),
                    ("retry_after_max", K::Duration),
                    ("passive_hold", K::Duration),
                    ("passive_hold_max", K::Duration),
                ],
            ),
            table(
                careless,
                "[guard]",
                &[],
                &[
                    ("rate", K::Float),
                    ("burst", K::Float),
                    ("allowed_rate", K::Float),
                    ("allowed_burst", K::Float),
                    ("max_sources", K::Int),
                    ("block_user_agents", K::Names),
                    ("overload_backlog", K::Float),
                    ("max_transactions", K::Int),
                    ("retry_after", K::Duration),
                ],
            ),
        ]
    }

    fn arrays(careless: bool) -> BoxedStrategy<String> {
        prop_oneof![
            1 => table(
                careless,
                "[[listen]]",
                &[("transport", K::Transport), ("address", K::Addr)],
                LISTEN
            ),
            2 => table(
                careless,
                "[[destination]]",
                &[("name", K::Name), ("address", K::Addr)],
                DESTINATION
            ),
            1 => table(
                careless,
                "[[group]]",
                &[("name", K::Name), ("members", K::Members)],
                &[("strategy", K::Strategy), ("hash_on", K::HashOn)]
            ),
            2 => table(
                careless,
                "[[route]]",
                &[("name", K::Name), ("destinations", K::Names)],
                ROUTE
            ),
        ]
        .boxed()
    }

    /// Lines that break the file's shape: unknown tables, a repeated single table, keys
    /// outside any table, unicode, broken syntax.
    fn junk_lines() -> BoxedStrategy<String> {
        one_of(&[
            "[unknown]\nx = 1\n",
            "[node]\nid = 2\n",
            "stray = 1\n",
            "[listen]\naddress = \"127.0.0.1:5060\"\n",
            "[[node]]\n",
            "# ünïcødé comment ✓\n",
            "[route\n",
            "key = \n",
            "[[destination]]\nname = \"primary\"\nname = \"primary\"\naddress = \"127.0.0.1:1\"\n",
            "\u{feff}\n",
            "[guard]\nrate = 1e400\n",
        ])
    }

    /// A usable start, so that most generated files reach the semantic checks.
    const BASE: &str =
        "[[listen]]\nname = \"carrier\"\ntransport = \"udp\"\naddress = \"127.0.0.1:5060\"\n\n\
                        [[destination]]\nname = \"primary\"\naddress = \"127.0.0.1:5070\"\n\n";

    /// A config file: careful (nearly every value valid, so most files get past the structural
    /// checks and many load) or careless (wrong values, wrong types, unknown and repeated keys,
    /// junk lines).
    fn config_text() -> impl Strategy<Value = String> {
        proptest::bool::ANY.prop_flat_map(config_text_with)
    }

    fn config_text_with(careless: bool) -> impl Strategy<Value = String> {
        let singles: Vec<_> = singles(careless)
            .into_iter()
            .map(|t| option::weighted(0.3, t))
            .collect();
        let junk = if careless {
            option::weighted(0.2, junk_lines()).boxed()
        } else {
            Just(None).boxed()
        };
        (
            proptest::bool::weighted(0.8),
            singles,
            vec(arrays(careless), 0..8),
            junk,
        )
            .prop_flat_map(|(base, singles, arrays, junk)| {
                let mut parts: Vec<String> = singles.into_iter().flatten().collect();
                parts.extend(arrays);
                parts.extend(junk);
                (Just(base), Just(parts).prop_shuffle())
            })
            .prop_map(|(base, parts)| {
                let mut text = if base {
                    BASE.to_string()
                } else {
                    String::new()
                };
                for p in parts {
                    text.push_str(&p);
                    text.push('\n');
                }
                text
            })
    }

    /// A config that should load: listeners, destinations, groups of them and routes over
    /// them, each name unique and every reference known.
    fn coherent_config() -> impl Strategy<Value = String> {
        let destination = (
            proptest::bool::weighted(0.8),
            option::of(select(vec!["\"2s\"", "\"3s\"", "\"500ms\""])),
            option::of(select(vec!["\"immediate\"", "\"deferred\""])),
            option::of(1u32..4),
            option::of(0u32..3),
            option::of(any::<bool>()),
        );
        let group = (
            select(vec!["priority", "weighted", "hash", "parallel"]),
            vec(0usize..5, 1..4),
            any::<bool>(),
        );
        let route = (
            option::of(select(vec![
                "{ to_prefix = [\"+44\"] }",
                "{ to = [\"+15551234\"], from_prefix = [\"1\"] }",
                "{ source = [\"carrier\"] }",
                "{ header = { name = \"X-Tenant\", value = \"acme\" } }",
                "{ to_prefix = [\"+1\", \"+1555\"] }",
            ])),
            any::<bool>(),
            vec(0usize..5, 1..4),
            option::of(select(vec![
                "{ reject = 503, retry_after = \"30s\" }",
                "{ group = \"lifeboats\" }",
            ])),
            option::of(select(vec!["[408, 500, 503]", "[503]", "[480, 486]"])),
            option::of(any::<bool>()),
        );
        (
            any::<bool>(),
            vec(destination, 1..5),
            vec(group, 0..3),
            vec(route, 1..4),
        )
            .prop_map(|(two_listeners, dests, groups, routes)| {
                let mut t = String::from(
                    "[[listen]]\nname = \"carrier\"\ntransport = \"udp\"\naddress = \"127.0.0.1:5060\"\n",
                );
                if two_listeners {
                    t.push_str(
                        "\n[[listen]]\nname = \"carrier-tcp\"\ntransport = \"tcp\"\n\
                         address = \"127.0.0.1:5060\"\nallow = [\"10.0.0.0/8\", \"::1\"]\n",
                    );
                }
                let n = dests.len();
                for (i, (udp, prov, cancel, weight, priority, probe)) in dests.iter().enumerate() {
                    t.push_str(&format!(
                        "\n[[destination]]\nname = \"d{i}\"\naddress = \"127.0.0.1:{}\"\n",
                        5070 + i
                    ));
                    if !udp {
                        t.push_str("transport = \"tcp\"\n");
                    }
                    let opt = [
                        ("provisional_timeout", prov.map(str::to_string)),
                        ("cancel_mode", cancel.map(str::to_string)),
                        ("weight", weight.map(|w| w.to_string())),
                        ("priority", priority.map(|p| p.to_string())),
                        ("probe", probe.map(|p| p.to_string())),
                    ];
                    for (key, v) in opt {
                        if let Some(v) = v {
                            t.push_str(&format!("{key} = {v}\n"));
                        }
                    }
                }
                // The survivability group: a destination no tier uses.
                t.push_str(
                    "\n[[destination]]\nname = \"lifeboat\"\naddress = \"127.0.0.1:5099\"\n\n\
                     [[group]]\nname = \"lifeboats\"\nmembers = [\"lifeboat\"]\n",
                );
                let members = |picks: &[usize]| {
                    let mut seen = Vec::new();
                    for &p in picks {
                        if !seen.contains(&(p % n)) {
                            seen.push(p % n);
                        }
                    }
                    seen
                };
                let member_list = |picks: &[usize]| {
                    members(picks)
                        .iter()
                        .map(|d| format!("\"d{d}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                for (j, (strategy, picks, hash_caller)) in groups.iter().enumerate() {
                    t.push_str(&format!(
                        "\n[[group]]\nname = \"g{j}\"\nstrategy = \"{strategy}\"\nmembers = [{}]\n",
                        member_list(picks)
                    ));
                    if *strategy == "hash" && *hash_caller {
                        t.push_str("hash_on = \"caller\"\n");
                    }
                }
                for (k, (cond, by_tiers, picks, survival, retry, pass)) in routes.iter().enumerate() {
                    t.push_str(&format!("\n[[route]]\nname = \"r{k}\"\n"));
                    if let Some(c) = cond {
                        t.push_str(&format!("match = {c}\n"));
                    }
                    if *by_tiers && !groups.is_empty() {
                        // A tier whose members all come earlier would never be tried.
                        let mut tiers = Vec::new();
                        let mut planned = Vec::new();
                        for p in picks {
                            let g = p % groups.len();
                            let m = members(&groups[g].1);
                            let name = format!("\"g{g}\"");
                            if !tiers.contains(&name) && m.iter().any(|d| !planned.contains(d)) {
                                tiers.push(name);
                                planned.extend(m);
                            }
                        }
                        t.push_str(&format!("tiers = [{}]\n", tiers.join(", ")));
                    } else {
                        t.push_str(&format!("destinations = [{}]\n", member_list(picks)));
                    }
                    if let Some(s) = survival {
                        t.push_str(&format!("survivability = {s}\n"));
                    }
                    if let Some(r) = retry {
                        t.push_str(&format!("retry_codes = {r}\n"));
                    }
                    if let Some(p) = pass {
                        t.push_str(&format!("pass_503 = {p}\n"));
                    }
                }
                t
            })
    }

    /// A coherent config with a few values replaced by careless or wrongly typed ones.
    fn perturbed_config() -> impl Strategy<Value = String> {
        let replacement = prop_oneof![
            select(NEAR_VALUES.to_vec()).prop_map(String::from),
            implausible(),
        ];
        (coherent_config(), vec((any::<usize>(), replacement), 1..3)).prop_map(|(text, changes)| {
            let mut lines: Vec<String> = text.lines().map(String::from).collect();
            let keyed: Vec<usize> = (0..lines.len())
                .filter(|&i| lines[i].contains(" = "))
                .collect();
            for (pick, value) in changes {
                let i = keyed[pick % keyed.len()];
                let key = lines[i].split(" = ").next().unwrap_or_default().to_string();
                lines[i] = format!("{key} = {value}");
            }
            lines.join("\n")
        })
    }

    /// Out-of-range and misspelt values of every kind (see [`samples`]).
    const NEAR_VALUES: [&str; 12] = [
        "\"\"",
        "\"bad name!\"",
        "\"127.0.0.1:99999\"",
        "\"example.com:5060\"",
        "\"sctp\"",
        "\"0s\"",
        "\"-1s\"",
        "0",
        "65536",
        "-1",
        "[]",
        "[700]",
    ];

    /// The shipped `examples/*.toml`, read at run time so a new example is fuzzed too.
    fn examples() -> Vec<(String, String)> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
        let mut out: Vec<(String, String)> = std::fs::read_dir(dir)
            .expect("examples/ exists")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&p).expect("example readable"))
            })
            .collect();
        out.sort();
        assert!(!out.is_empty(), "no examples/*.toml");
        out
    }

    fn edit() -> impl Strategy<Value = Edit> {
        let kind = prop_oneof![
            any::<u8>().prop_map(EditKind::Set),
            (1u8..=16).prop_map(EditKind::Delete),
            any::<u8>().prop_map(EditKind::Insert),
            Just(EditKind::Truncate),
        ];
        (any::<u16>(), kind).prop_map(|(pos, kind)| Edit { pos, kind })
    }

    fn mutated_example() -> impl Strategy<Value = Vec<u8>> {
        let sources = examples();
        (
            select(sources),
            vec(edit(), 1..8),
            vec(
                prop_oneof![any::<u8>(), select(b"=[]{}\"'.,#\n\\ 0123456789".to_vec())],
                8,
            ),
        )
            .prop_map(|((_, text), mut edits, bytes)| {
                // Half the edits write TOML's own punctuation, which goes deeper than noise.
                for (e, b) in edits.iter_mut().zip(bytes) {
                    match &mut e.kind {
                        EditKind::Set(x) | EditKind::Insert(x) => *x = b,
                        _ => {}
                    }
                }
                let mut bytes = text.into_bytes();
                let len = bytes.len().max(1);
                for e in &mut edits {
                    // Spread the positions over the whole file.
                    e.pos = (e.pos as usize % len) as u16;
                }
                mutate(&mut bytes, &edits);
                bytes
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: cases(512),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn config_loader_never_panics_on_toml_shaped_configs(text in config_text()) {
            config_never_panics(text.as_bytes());
        }

        #[test]
        fn coherent_configs_load_and_route(text in coherent_config()) {
            if let Err(e) = Config::parse(&text, CONFIG_FILE) {
                return Err(TestCaseError::fail(format!("{e}\n{text}")));
            }
            config_never_panics(text.as_bytes());
        }

        #[test]
        fn config_loader_never_panics_on_perturbed_coherent_configs(text in perturbed_config()) {
            config_never_panics(text.as_bytes());
        }

        #[test]
        fn config_loader_never_panics_on_mutated_examples(bytes in mutated_example()) {
            config_never_panics(&bytes);
        }

        #[test]
        fn config_loader_never_panics_on_arbitrary_bytes(data in vec(any::<u8>(), 0..400)) {
            config_never_panics(&data);
        }
    }

    #[test]
    fn every_example_loads_through_the_fuzz_check() {
        for (name, text) in examples() {
            assert!(names_only_safe_files(&text), "{name}");
            assert!(
                Config::parse(&text, CONFIG_FILE).is_ok(),
                "{name} does not load"
            );
            config_never_panics(text.as_bytes());
        }
    }

    #[test]
    fn files_that_cannot_be_read_safely_are_never_named_to_the_loader() {
        let named = |path: &str| format!("[tls]\nca = {path:?}\n");
        for bad in [
            "/dev/zero",
            "/dev/stdin",
            "/proc/self/status",
            "/proc/kmsg",
            "/",
            ".",
        ] {
            assert!(!names_only_safe_files(&named(bad)), "{bad}");
        }
        for ok in ["Cargo.toml", "missing.pem", "", "/nonexistent/x"] {
            assert!(names_only_safe_files(&named(ok)), "{ok}");
        }
        let nested = "[[destination]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n\
                      tags = [\"/dev/urandom\"]\n";
        assert!(!names_only_safe_files(nested));
        assert!(
            names_only_safe_files("[tls\nca = \"/dev/zero\""),
            "not TOML: no file read"
        );
    }

    // ---- core sequences -------------------------------------------------------------------

    fn small(n: u8) -> BoxedStrategy<u8> {
        prop_oneof![3 => Just(0u8), 1 => 0..n].boxed()
    }

    fn req() -> impl Strategy<Value = Req> {
        let call = || prop_oneof![3 => 0u8..2, 1 => 0u8..8];
        prop_oneof![
            4 => (call(), prop_oneof![3 => 0u8..2, 1 => 0..URIS.len() as u8], small(4),
                  small(EXTRAS.len() as u8), proptest::bool::weighted(0.1))
                .prop_map(|(call, uri, max_forwards, extra, old_branch)| Req::Invite {
                    call, uri, max_forwards, extra, old_branch,
                }),
            1 => small(8).prop_map(|nth| Req::Retransmit { nth }),
            2 => small(8).prop_map(|nth| Req::Cancel { nth }),
            1 => (small(8), 0u8..4).prop_map(|(nth, to_tag)| Req::Ack { nth, to_tag }),
            3 => (0..DIALOG_METHODS.len() as u8, call(), 0u8..4,
                  prop_oneof![3 => Just(1u8), 1 => 0u8..5], 0u8..5, small(DIALOG_URIS.len() as u8))
                .prop_map(|(method, call, to_tag, route, cseq, uri)| Req::InDialog {
                    method, call, to_tag, route, cseq, uri,
                }),
            1 => (0..OOD_METHODS.len() as u8, call(), 0..URIS.len() as u8)
                .prop_map(|(method, call, uri)| Req::OutOfDialog { method, call, uri }),
        ]
    }

    fn resp() -> impl Strategy<Value = Resp> {
        (
            small(4),
            prop_oneof![2 => Just(1u8), 1 => 0u8..5],
            select(CODES.to_vec()),
            small(5),
            prop_oneof![6 => Just(Twist::None), 1 => select(TWISTS.to_vec())],
        )
            .prop_map(|(nth, method, code, to_tag, twist)| Resp {
                nth,
                method,
                code,
                to_tag,
                twist,
            })
    }

    fn edits() -> impl Strategy<Value = Vec<Edit>> {
        prop_oneof![8 => Just(Vec::new()), 1 => vec(edit(), 1..=4)]
    }

    fn op() -> impl Strategy<Value = Op> {
        let advance = prop_oneof![
            select(vec![
                0u32, 500, 1_000, 2_000, 3_000, 4_000, 32_000, 40_000, 64_000, 181_000
            ]),
            (0u32..=65_535).prop_map(|x| x * 10),
        ];
        prop_oneof![
            4 => (prop_oneof![3 => Just(0u8), 1 => 1u8..4], req(), edits())
                .prop_map(|(peer, req, mutation)| Op::Request { peer, req, mutation }),
            5 => (prop_oneof![1 => Just(0u8), 4 => 1u8..4], resp(), edits())
                .prop_map(|(peer, resp, mutation)| Op::Response { peer, resp, mutation }),
            2 => advance.prop_map(|ms| Op::Advance { ms }),
            1 => (small(16), prop_oneof![Just(1023u16), 0u16..1024])
                .prop_map(|(nth, len)| Op::Unreachable { nth, len }),
            1 => option::of(small(16)).prop_map(|nth| Op::DeliveryFailure { nth }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: cases(256),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn core_holds_its_properties_over_arbitrary_message_sequences(
            ops in vec(op(), 1..=40),
        ) {
            core_sequence(&ops);
        }

        #[test]
        fn core_holds_its_properties_over_fuzzer_bytes(data in vec(any::<u8>(), 0..200)) {
            core_sequence(&ops_from_bytes(&data));
        }

        #[test]
        fn ops_survive_the_round_trip_through_fuzzer_bytes(ops in vec(op(), 0..=MAX_OPS)) {
            prop_assert_eq!(ops_from_bytes(&ops_to_bytes(&ops)), ops);
        }
    }

    // ---- scripted sequences ---------------------------------------------------------------

    fn invite(call: u8, uri: u8) -> Op {
        Op::Request {
            peer: 0,
            req: Req::Invite {
                call,
                uri,
                max_forwards: 0,
                extra: 0,
                old_branch: false,
            },
            mutation: Vec::new(),
        }
    }

    /// `peer` answers the latest request of `method` (see [`Resp::method`]) with `code`.
    fn answer(peer: u8, method: u8, code: u16) -> Op {
        Op::Response {
            peer,
            resp: Resp {
                nth: 0,
                method,
                code,
                to_tag: 0,
                twist: Twist::None,
            },
            mutation: Vec::new(),
        }
    }

    /// An in-dialog `DIALOG_METHODS[method]` of call 0 from `peer`, to the callee tag
    /// `CALLEE_TAGS[tag]`, routed by the core's Record-Route.
    fn in_dialog(peer: u8, method: u8, tag: u8, cseq: u8) -> Op {
        Op::Request {
            peer,
            req: Req::InDialog {
                method,
                call: 0,
                to_tag: tag,
                route: 1,
                cseq,
                uri: 0,
            },
            mutation: Vec::new(),
        }
    }

    fn wait(ms: u32) -> Op {
        Op::Advance { ms }
    }

    const INVITE: u8 = 1;
    const CANCEL: u8 = 2;
    const BYE: u8 = 3;

    /// Calls as a carrier and clouds would make them: the seeds of the `core` fuzz target.
    fn scripts() -> Vec<(&'static str, Vec<Op>)> {
        vec![
            (
                "answered-then-bye",
                vec![
                    invite(0, 0),
                    answer(1, INVITE, 100),
                    answer(1, INVITE, 180),
                    answer(1, INVITE, 200),
                    in_dialog(0, 0, 0, 0),
                    in_dialog(0, 1, 0, 1),
                    answer(1, BYE, 200),
                    wait(64_000),
                ],
            ),
            (
                "silent-primary-fails-over",
                vec![
                    invite(0, 0),
                    wait(3_000),
                    answer(2, INVITE, 180),
                    answer(2, INVITE, 200),
                    in_dialog(0, 0, 1, 0),
                    wait(40_000),
                ],
            ),
            (
                "parallel-first-2xx-wins-late-2xx-torn-down",
                vec![
                    invite(0, 1),
                    answer(1, INVITE, 183),
                    answer(2, INVITE, 183),
                    answer(2, INVITE, 200),
                    answer(1, INVITE, 200),
                    wait(64_000),
                ],
            ),
            (
                "carrier-cancel-crosses-the-2xx",
                vec![
                    invite(0, 0),
                    answer(1, INVITE, 180),
                    Op::Request {
                        peer: 0,
                        req: Req::Cancel { nth: 0 },
                        mutation: Vec::new(),
                    },
                    answer(1, CANCEL, 200),
                    answer(1, INVITE, 200),
                    wait(64_000),
                ],
            ),
            (
                "carrier-cancel-answered-487",
                vec![
                    invite(0, 1),
                    answer(1, INVITE, 180),
                    Op::Request {
                        peer: 0,
                        req: Req::Cancel { nth: 0 },
                        mutation: Vec::new(),
                    },
                    answer(1, CANCEL, 200),
                    answer(1, INVITE, 487),
                    answer(2, CANCEL, 200),
                    answer(2, INVITE, 487),
                    Op::Request {
                        peer: 0,
                        req: Req::Ack { nth: 0, to_tag: 0 },
                        mutation: Vec::new(),
                    },
                ],
            ),
            (
                "busy-then-late-2xx",
                vec![
                    invite(0, 0),
                    answer(1, INVITE, 486),
                    answer(1, INVITE, 200),
                    Op::Request {
                        peer: 0,
                        req: Req::Ack { nth: 0, to_tag: 0 },
                        mutation: Vec::new(),
                    },
                ],
            ),
            (
                "icmp-and-delivery-failure",
                vec![
                    invite(0, 0),
                    Op::Unreachable { nth: 0, len: 200 },
                    Op::DeliveryFailure { nth: Some(0) },
                    wait(10_000),
                ],
            ),
            (
                "callee-hangs-up",
                vec![
                    invite(0, 0),
                    answer(1, INVITE, 200),
                    in_dialog(0, 0, 0, 0),
                    in_dialog(1, 1, 0, 0),
                    answer(0, BYE, 200),
                ],
            ),
            (
                "reinvite-rings-until-timer-c",
                vec![
                    invite(0, 0),
                    answer(1, INVITE, 200),
                    in_dialog(0, 0, 0, 0),
                    in_dialog(0, 3, 0, 1),
                    answer(1, INVITE, 180),
                    wait(181_000),
                    answer(1, INVITE, 200),
                ],
            ),
            (
                "503-retry-after-then-ring-timeout",
                vec![
                    invite(0, 1),
                    Op::Response {
                        peer: 1,
                        resp: Resp {
                            nth: 0,
                            method: INVITE,
                            code: 503,
                            to_tag: 0,
                            twist: Twist::RetryAfter,
                        },
                        mutation: Vec::new(),
                    },
                    answer(2, INVITE, 180),
                    wait(40_000),
                    answer(2, INVITE, 200),
                ],
            ),
        ]
    }

    #[test]
    fn scripted_calls_hold_every_property() {
        for (name, ops) in scripts() {
            let result = std::panic::catch_unwind(|| core_sequence(&ops));
            assert!(result.is_ok(), "script {name} failed");
            assert_eq!(ops_from_bytes(&ops_to_bytes(&ops)), ops, "{name}");
        }
    }

    /// First lines of what the simulation saw the core send to `peer`.
    fn lines_to(sim: &Sim, peer: usize) -> Vec<String> {
        sim.h
            .sent
            .iter()
            .filter(|(to, _, _)| *to == peer_addr(peer))
            .map(|(_, l, _)| l.clone())
            .collect()
    }

    fn run(ops: &[Op]) -> Sim {
        let mut sim = Sim::new();
        for (i, op) in ops.iter().enumerate() {
            sim.step = i;
            sim.apply(op);
        }
        sim
    }

    /// The simulated peers' messages are good enough to drive real calls: otherwise the
    /// properties would hold vacuously.
    #[test]
    fn simulated_peers_drive_calls_through_the_core() {
        let count =
            |lines: &[String], start: &str| lines.iter().filter(|l| l.starts_with(start)).count();
        let scripts = scripts();
        let sim = run(&scripts[0].1);
        let carrier = lines_to(&sim, 0);
        let primary = lines_to(&sim, 1);
        assert_eq!(count(&carrier, "SIP/2.0 180"), 1, "{carrier:?}");
        assert_eq!(
            count(&carrier, "SIP/2.0 200"),
            2,
            "200 to INVITE and BYE: {carrier:?}"
        );
        assert_eq!(count(&primary, "ACK"), 1, "{primary:?}");
        assert_eq!(count(&primary, "BYE"), 1, "{primary:?}");
        assert_eq!(sim.h.core.answered_calls(), 0, "the BYE ended the call");

        let sim = run(&scripts[2].1);
        let primary = lines_to(&sim, 1);
        assert_eq!(count(&lines_to(&sim, 0), "SIP/2.0 200"), 1);
        assert!(count(&primary, "CANCEL") >= 1, "{primary:?}");
        assert!(
            count(&primary, "BYE") >= 1,
            "late 2xx torn down: {primary:?}"
        );

        let sim = run(&scripts[3].1);
        let carrier = lines_to(&sim, 0);
        assert!(count(&carrier, "SIP/2.0 487") >= 1, "{carrier:?}");
        assert_eq!(
            count(&carrier, "SIP/2.0 200"),
            1,
            "only the CANCEL's: {carrier:?}"
        );
        assert!(count(&lines_to(&sim, 1), "BYE") >= 1, "late 2xx torn down");

        let sim = run(&scripts[7].1);
        assert!(
            count(&lines_to(&sim, 0), "BYE") >= 1,
            "callee's BYE reaches the carrier"
        );

        let sim = run(&scripts[8].1);
        assert_eq!(
            count(&lines_to(&sim, 1), "INVITE"),
            2,
            "re-INVITE forwarded"
        );
        assert!(count(&lines_to(&sim, 0), "SIP/2.0 408") >= 1, "Timer C");
    }

    /// The ghost check itself fires: a 2xx after a final non-2xx for the same transaction.
    #[test]
    #[should_panic(expected = "ghost call relayed")]
    fn the_ghost_check_catches_a_2xx_after_a_final() {
        let mut sim = Sim::new();
        let upstream = peer_addr(0);
        let final_486 = b"SIP/2.0 486 Busy\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-t\r\n\
                          From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: g\r\n\
                          CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        sim.check_send(upstream, final_486, false);
        let ok = String::from_utf8_lossy(final_486).replace("486 Busy", "200 OK");
        sim.check_send(upstream, ok.as_bytes(), false);
    }

    /// Writes the seed corpora of the `config` and `core` fuzz targets (run by
    /// `fuzz/seed.sh`): the examples and a few broken configs; the scripted calls as bytes.
    #[test]
    #[ignore = "writes files; run by fuzz/seed.sh"]
    fn write_fuzz_seeds() {
        let dir =
            std::env::var_os("POINTSMAN_FUZZ_SEEDS").expect("POINTSMAN_FUZZ_SEEDS: a directory");
        let dir = Path::new(&dir);
        let (config, core) = (dir.join("config"), dir.join("core"));
        std::fs::create_dir_all(&config).unwrap();
        std::fs::create_dir_all(&core).unwrap();
        for (name, text) in examples() {
            std::fs::write(config.join(name), text).unwrap();
        }
        let broken = [
            ("core-rules.toml", CORE_RULES.to_string()),
            ("base.toml", BASE.to_string()),
            ("unknown-key.toml", format!("{BASE}[guard]\nrat = 5\n")),
            ("bad-duration.toml", format!("{BASE}[timers]\nt1 = 500\n")),
            (
                "tls-listener.toml",
                "[[listen]]\ntransport = \"tls\"\naddress = \"127.0.0.1:5061\"\n\
                 cert = \"missing.pem\"\nkey = \"missing.key\"\n"
                    .to_string(),
            ),
        ];
        for (name, text) in broken {
            std::fs::write(config.join(name), text).unwrap();
        }
        for (name, ops) in scripts() {
            std::fs::write(core.join(name), ops_to_bytes(&ops)).unwrap();
        }
    }

    // ---- what the fuzzing found (fixed): the inputs, as regression tests ----------------------

    /// A relayed BYE, answered, left its server and client entries behind forever: their
    /// Timer J was armed under key 0.
    #[test]
    fn relayed_bye_leaves_no_state_behind() {
        let ops = vec![
            invite(0, 0),
            answer(1, INVITE, 200),
            in_dialog(0, 0, 0, 0),
            in_dialog(0, 1, 0, 1),
            answer(1, BYE, 200),
        ];
        core_sequence(&ops);
    }

    /// The primary rings, then answers neither the INVITE nor the CANCEL sent at the ring
    /// timeout: the INVITE client transaction stayed in Proceeding, and the whole call with it
    /// (RFC 3261 §9.1: give up 64·T1 after the CANCEL).
    #[test]
    fn ringing_branch_whose_cancel_is_never_answered_leaves_no_state_behind() {
        core_sequence(&[invite(0, 0), answer(1, INVITE, 180)]);
    }

    /// A 180 whose second Via (the carrier's) is broken, or missing, was relayed to the
    /// carrier as is (RFC 3261 §16.7 step 3: no Via left, not forwarded).
    #[test]
    fn response_whose_next_via_is_broken_is_not_relayed() {
        for (what, broken) in [
            ("a control character", "Via: SIP/2.0/\x01UDP 10.0.0.1:5060"),
            ("no sent-protocol", "Via: 10.0.0.1:5060"),
        ] {
            let mut sim = Sim::new();
            sim.apply(&invite(0, 0));
            let fwd = sim
                .sent_requests(1, INVITE)
                .pop()
                .expect("INVITE to the primary");
            let ok = response_to(&fwd, 180, "p", PEERS[1], Twist::None);
            let ok = String::from_utf8(ok)
                .unwrap()
                .replace("Via: SIP/2.0/UDP 10.0.0.1:5060", broken);
            // Panics in `check_send` while the core relays what does not scan.
            sim.receive(peer_addr(1), ok.as_bytes());
            assert!(
                lines_to(&sim, 0).iter().all(|l| !l.contains("180")),
                "{what}"
            );
        }
        // Only our Via: nothing is left to relay to (RFC 3261 §16.7 step 3).
        let mut sim = Sim::new();
        sim.apply(&invite(0, 0));
        let fwd = sim
            .sent_requests(1, INVITE)
            .pop()
            .expect("INVITE to the primary");
        let ok = String::from_utf8(response_to(&fwd, 180, "p", PEERS[1], Twist::None)).unwrap();
        let ok: String = ok
            .split_inclusive("\r\n")
            .filter(|l| !l.starts_with("Via: SIP/2.0/UDP 10.0.0.1"))
            .collect();
        sim.receive(peer_addr(1), ok.as_bytes());
    }

    /// A late 2xx whose Contact holds a control character was torn down with an ACK and a BYE
    /// whose Request-URI did not parse.
    #[test]
    fn ghost_teardown_never_sends_a_broken_request_uri() {
        let mut sim = Sim::new();
        sim.apply(&invite(0, 1));
        sim.apply(&answer(2, INVITE, 200));
        let fwd = sim
            .sent_requests(1, INVITE)
            .pop()
            .expect("INVITE to the primary");
        let late = String::from_utf8(response_to(&fwd, 200, "p", PEERS[1], Twist::None))
            .unwrap()
            .replace(
                "<sip:agent@127.0.0.1:5070>",
                "<sip:agent@127.0.0.1:\x015070>",
            );
        // Panics in `check_send` on the ghost ACK.
        sim.receive(peer_addr(1), late.as_bytes());
    }

    /// `#` then NUL gave an error with no message (toml's own is empty).
    #[test]
    fn toml_error_without_message_is_explained() {
        for text in ["#\0", "a = 1\n# \u{7f}\n"] {
            let errors = Config::parse(text, CONFIG_FILE).expect_err("not TOML");
            for e in &errors.0 {
                assert!(!e.message.trim().is_empty(), "{text:?}: {e:?}");
            }
        }
    }

    /// A wildcard listener after two specific ones on the same port was said to overlap one
    /// or the other, as a `HashMap` iterated.
    #[test]
    fn listener_overlap_error_is_the_same_every_time() {
        let text = "[[listen]]\ntransport = \"udp\"\naddress = \"10.0.0.1:5060\"\n\
                    [[listen]]\ntransport = \"udp\"\naddress = \"10.0.0.2:5060\"\n\
                    [[listen]]\ntransport = \"udp\"\naddress = \"0.0.0.0:5060\"\n\
                    [[destination]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n\
                    [[route]]\nname = \"r\"\ndestinations = [\"a\"]\n";
        let first = Config::parse(text, CONFIG_FILE).expect_err("overlap");
        for _ in 0..50 {
            assert_eq!(
                Config::parse(text, CONFIG_FILE).expect_err("overlap"),
                first
            );
        }
    }
}
