//! The one deterministic harness that drives a [`Core`] with a fake clock, shared by the core's
//! unit tests, the fuzz interpreter (`pointsman::fuzzing`) and the criterion benches: the core,
//! a fake `now`, a timer heap fired in deadline order, and every send the core asked for. Also
//! the one builder of the responses a simulated UAS answers with ([`respond`]).
//!
//! It owns only what every user needs; the users keep their own domain helpers on top (the
//! tests' rules and assertions, the fuzz ops and properties, the bench's workload and timing).
//! It must not read the clock (beyond what its caller passes in), sleep, touch a socket or hold
//! policy of its own. Compiled for tests and behind the `testing` feature; never shipped.

// Test support: a failed assumption here is a failed test or a fuzzer finding.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::core::{Core, CoreConfig, CoreTimer, Inbound, Output, Routing};
use crate::health::{Health, HealthConfig};
use crate::metrics::Metrics;
use crate::transaction::TimerConfig;
use crate::transaction::TxKey;
use crate::wire::{self, Framing, Limits, Method};
use bytes::Bytes;
use routing_rules::Router;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The core configuration tests and fuzzing start from: node 7 advertised at 192.0.2.10:5060,
/// one UDP listener named `udp`, default timers, limits, ACL and guard.
pub fn core_config() -> CoreConfig {
    CoreConfig {
        node_id: 7,
        advertise_host: "192.0.2.10".into(),
        advertise_port: 5060,
        tls_port: None,
        timers: TimerConfig::default(),
        limits: Limits::default(),
        listeners: vec!["udp".into()],
        acls: vec![crate::guard::Acl::default()],
        guard: crate::guard::GuardConfig::default(),
        peers: Vec::new(),
        topology_key: None,
    }
}

/// What the core routes with, for `router` (destinations written as IP addresses), every
/// destination's health starting from the default health config at `now`.
pub fn routing(router: Arc<Router>, metrics: Metrics, now: Instant) -> Routing {
    let addrs = router
        .rules
        .destinations
        .iter()
        .map(|d| {
            let ip = d.host.parse().expect("test destinations are IP addresses");
            SocketAddr::new(ip, d.port)
        })
        .collect();
    let health = Health::new(&HealthConfig::default()).adopt(&router, now);
    Routing::new(router, addrs, health, metrics)
}

/// `router`'s metric handles on a private Prometheus recorder, which renders them for the
/// tests to read (the production recorder, with its histogram buckets, is the I/O crate's).
pub fn local_metrics(router: &Router) -> (Metrics, metrics_exporter_prometheus::PrometheusHandle) {
    let (dests, routes) = crate::metrics::names(router);
    let recorder = Arc::new(metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder());
    let handle = recorder.handle();
    (Metrics::register(recorder, &dests, &routes), handle)
}

/// A timer the core armed: (deadline, timer), ordered by deadline, ties in the order armed.
#[derive(Debug)]
struct Due {
    due: (Instant, CoreTimer),
    seq: u64,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.due.0, self.seq) == (other.due.0, other.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.due.0, self.seq).cmp(&(other.due.0, other.seq))
    }
}

/// The timers the core armed and that have not fired (dead ones included: a driver holds them
/// until due), as a heap: insert and pop-earliest are O(log n), so a bench can hold 100,000.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<Due>>,
    seq: u64,
}

impl Timers {
    fn push(&mut self, at: Instant, timer: CoreTimer) {
        self.seq += 1;
        self.heap.push(Reverse(Due {
            due: (at, timer),
            seq: self.seq,
        }));
    }

    /// The earliest timer, if it is due at `until` or before.
    fn pop_due(&mut self, until: Instant) -> Option<(Instant, CoreTimer)> {
        if self.heap.peek()?.0.due.0 > until {
            return None;
        }
        self.heap.pop().map(|Reverse(d)| d.due)
    }

    /// Every pending (deadline, timer), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &(Instant, CoreTimer)> {
        self.heap.iter().map(|Reverse(d)| &d.due)
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Drops every pending timer (a test then fires what it wants by hand).
    pub fn clear(&mut self) {
        self.heap.clear();
    }

    fn bytes(&self) -> usize {
        self.heap.capacity() * std::mem::size_of::<Reverse<Due>>()
    }
}

/// The first line of a message (without its CRLF), for assertions and failure messages.
pub fn first_line(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == b'\r').unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// A core, its fake clock, the timers it armed and what it sent.
pub struct Harness {
    pub core: Core,
    /// The fake clock: moved only by [`Harness::advance`] (or by the caller).
    pub now: Instant,
    /// Armed timers not yet fired.
    pub timers: Timers,
    /// Every send, in order: (to, first line, bytes).
    pub sent: Vec<(SocketAddr, String, Bytes)>,
    /// The delivery-failure key of each send in `sent`, in the same order.
    pub reports: Vec<Option<TxKey>>,
    /// Datagrams the core handed to another node: (node, bytes, from, listener).
    pub to_nodes: Vec<(u16, Bytes, SocketAddr, usize)>,
    /// What the core told the other nodes of its calls: (Call-ID, state; `None`: over), and
    /// how many sends had been recorded when it did (a confirmed state goes before the sends
    /// it allows).
    pub replicated: Vec<(Bytes, Option<Box<crate::core::CallState>>, bool, usize)>,
    /// Replies to this node's health probes, for its prober.
    pub probe_replies: Vec<Bytes>,
    /// Scratch buffer the core writes its outputs into (kept so a bench allocates it once).
    out: Vec<Output>,
}

impl Harness {
    /// Drives `core`, whose clock starts at `now`.
    pub fn new(core: Core, now: Instant) -> Harness {
        Harness {
            core,
            now,
            timers: Timers::default(),
            sent: Vec::new(),
            reports: Vec::new(),
            to_nodes: Vec::new(),
            replicated: Vec::new(),
            probe_replies: Vec::new(),
            out: Vec::new(),
        }
    }

    /// Records outputs the core produced (when a caller called the core itself).
    pub fn absorb(&mut self, out: impl IntoIterator<Item = Output>) {
        for o in out {
            match o {
                Output::Send { to, bytes, report } => {
                    self.sent.push((to.addr, first_line(&bytes), bytes));
                    self.reports.push(report);
                }
                Output::Timer { at, timer } => self.timers.push(at, timer),
                Output::ToNode {
                    node,
                    bytes,
                    from,
                    listener,
                } => self.to_nodes.push((node, bytes, from, listener)),
                Output::Replicate {
                    call_id,
                    state,
                    confirm,
                } => self
                    .replicated
                    .push((call_id, state, confirm, self.sent.len())),
                Output::ProbeReply { bytes } => self.probe_replies.push(bytes),
            }
        }
    }

    /// Runs `f` on the core at `now`, then records the outputs it wrote. Lets a caller time or
    /// count exactly the core's work, without the recording.
    pub fn drive<R>(&mut self, f: impl FnOnce(&mut Core, Instant, &mut Vec<Output>) -> R) -> R {
        let mut out = std::mem::take(&mut self.out);
        let r = f(&mut self.core, self.now, &mut out);
        self.absorb(out.drain(..));
        self.out = out;
        r
    }

    /// Feeds one inbound message.
    pub fn receive_inbound(&mut self, inbound: Inbound<'_>) {
        self.drive(|core, now, out| core.on_message(inbound, now, out));
    }

    /// Feeds one datagram from `from` on the first listener.
    pub fn receive(&mut self, from: SocketAddr, bytes: &[u8]) {
        self.receive_inbound(Inbound::datagram(bytes, from));
    }

    /// Moves the clock by `by`, firing due timers in deadline order.
    pub fn advance(&mut self, by: Duration) {
        self.advance_with(by, |core, timer, now, out| core.on_timer(timer, now, out));
    }

    /// [`Harness::advance`] with each due timer handed to `fire` (which must pass it to the
    /// core), so a caller can time or count each firing.
    pub fn advance_with(
        &mut self,
        by: Duration,
        mut fire: impl FnMut(&mut Core, CoreTimer, Instant, &mut Vec<Output>),
    ) {
        let until = self.now + by;
        while let Some((at, timer)) = self.timers.pop_due(until) {
            self.now = self.now.max(at);
            self.drive(|core, now, out| fire(core, timer, now, out));
        }
        self.now = until;
    }

    /// The last send to `to` whose bytes start with `starts`.
    pub fn last_to(&self, to: SocketAddr, starts: &str) -> Option<&Bytes> {
        self.sent
            .iter()
            .rev()
            .find(|(a, _, b)| *a == to && b.starts_with(starts.as_bytes()))
            .map(|(_, _, b)| b)
    }

    /// Forgets what was sent (a long run keeps only what its current step needs).
    pub fn clear_sent(&mut self) {
        self.sent.clear();
        self.reports.clear();
    }

    /// Bytes the harness itself holds (timer heap, records, scratch), to tell them apart from
    /// what the core holds.
    pub fn own_bytes(&self) -> usize {
        self.timers.bytes()
            + self.out.capacity() * std::mem::size_of::<Output>()
            + self.sent.capacity() * std::mem::size_of::<(SocketAddr, String, Bytes)>()
            + self.reports.capacity() * std::mem::size_of::<Option<TxKey>>()
            + self
                .sent
                .iter()
                .map(|(_, l, b)| l.capacity() + b.len())
                .sum::<usize>()
    }
}

/// How a simulated UAS answers: see [`respond`].
#[derive(Clone, Copy, Debug)]
pub struct Answer<'a> {
    pub reason: &'a str,
    /// Added to To above 100 when the request's To has no tag.
    pub to_tag: &'a str,
    /// The Contact URI of a dialog-forming answer (1xx above 100 or 2xx, to an INVITE).
    pub contact: &'a str,
    /// Complete header lines (each ending in CRLF) added after the copied ones.
    pub extra: &'a str,
    /// An SDP body, sent with a 1xx above 100 or a 2xx to an INVITE.
    pub sdp: Option<&'a str>,
}

impl Default for Answer<'_> {
    fn default() -> Self {
        Answer {
            reason: "Whatever",
            to_tag: "uas",
            contact: "sip:agent@127.0.0.1:5070",
            extra: "",
            sdp: None,
        }
    }
}

/// Limits for re-scanning what the core sent: far above what it accepts.
pub fn generous_limits() -> Limits {
    let d = Limits::default();
    Limits {
        max_message_size: d.max_message_size * 4,
        max_headers: d.max_headers * 4,
        max_line_length: d.max_line_length * 4,
        max_via: d.max_via * 4,
    }
}

/// The response a UAS sends to `request` (bytes the core forwarded), through the same builder
/// pointsman's own responses use ([`crate::originate::response`]): every Via, From, To (with
/// the answer's tag above 100), Call-ID and CSeq copied; for a dialog-forming answer also every
/// Record-Route (RFC 3261 §12.1.1) and a Contact. `None` when `request` does not scan.
pub fn respond(request: &[u8], code: u16, answer: &Answer<'_>) -> Option<Vec<u8>> {
    let req = wire::scan(request, Framing::Datagram, &generous_limits()).ok()?;
    let mut extra = String::new();
    let invite = req.method() == Some(Method::Invite);
    if invite && code > 100 && code < 300 {
        for h in req
            .headers
            .iter()
            .filter(|h| h.name == wire::HeaderName::RecordRoute)
        {
            extra.push_str(&String::from_utf8_lossy(req.slice(h.line)));
        }
        extra.push_str(&format!("Contact: <{}>\r\n", answer.contact));
    }
    extra.push_str(answer.extra);
    let mut out =
        crate::originate::response(&req, code, answer.reason, answer.to_tag, &extra).to_vec();
    if let Some(body) = answer.sdp.filter(|_| invite && code > 100 && code < 300) {
        // originate writes an empty body last: replace it with the SDP.
        let empty = b"Content-Length: 0\r\n\r\n".len();
        out.truncate(out.len() - empty);
        out.extend_from_slice(
            format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    }
    Some(out)
}

/// [`respond`] with the default [`Answer`] and `to_tag`; panics when `request` does not scan.
pub fn response_to(request: &[u8], code: u16, to_tag: &str) -> Vec<u8> {
    let answer = Answer {
        to_tag,
        ..Answer::default()
    };
    respond(request, code, &answer).unwrap_or_else(|| {
        panic!(
            "cannot answer what does not scan:\n{}",
            String::from_utf8_lossy(request)
        )
    })
}
