//! What the criterion benches and the allocation count share: realistic messages, and a sans-IO
//! driver that pushes whole calls through a [`Core`] built the way `pointsman run` builds it
//! (config text → `Config::parse` → `server::core_config`, `node::addresses`, `Health::adopt`, a
//! private `Metrics::local` recorder), on the shared fake-clock harness
//! (`pointsman_protocol::testing::Harness`: the core's timers fire as its clock advances, so
//! transactions are freed as they would be in a running node). What is here is only the
//! workload: the messages, the call flow and the timing.
//!
//! Only the core's own work is timed: building the peers' messages happens outside the clock.

// Benchmark setup: a failed assumption stops the benchmark, as a failed test would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(dead_code)]

use pointsman::config::Config;
use pointsman_protocol::health::Health;
use pointsman_protocol::testing::{self, Answer, Harness};
use pointsman_protocol::{Core, Inbound, Routing};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A carrier INVITE as a real SBC sends it: exactly 1,024 bytes with an early SDP offer (G.711,
/// G.729, telephone-event), P-Asserted-Identity and the carrier's own Record-Route.
pub const INVITE_1K: &[u8] = b"INVITE sip:+15551234567@192.0.2.10:5060;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-524287-1---9a8b7c6d5e4f3a2b;rport\r\n\
Max-Forwards: 69\r\n\
Record-Route: <sip:198.51.100.7;lr;ftag=as6f2c3d1e>\r\n\
Contact: <sip:+15559870000@198.51.100.7:5060;transport=udp>\r\n\
To: <sip:+15551234567@192.0.2.10;user=phone>\r\n\
From: \"ACME Corp\" <sip:+15559870000@198.51.100.7;user=phone>;tag=as6f2c3d1e\r\n\
Call-ID: 3c26700a5f2b4e1c9d8e7f6a5b4c3d2e@198.51.100.7\r\n\
CSeq: 102 INVITE\r\n\
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, INFO, UPDATE\r\n\
Supported: replaces\r\n\
P-Asserted-Identity: \"ACME Corp\" <sip:+15559870000@198.51.100.7;user=phone>\r\n\
User-Agent: CarrierSBC/4.2.1\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 297\r\n\
\r\n\
v=0\r\n\
o=CarrierSBC 1716892341 1716892341 IN IP4 198.51.100.7\r\n\
s=SBC\r\n\
c=IN IP4 198.51.100.20\r\n\
t=0 0\r\n\
m=audio 31846 RTP/AVP 0 8 18 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:18 G729/8000\r\n\
a=fmtp:18 annexb=no\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

/// A 180 Ringing coming back from a cloud through pointsman: 447 bytes, two Vias (pointsman's on
/// top), pointsman's Record-Route, the callee's tag and Contact.
pub const RINGING: &[u8] = b"SIP/2.0 180 Ringing\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-ps7-1a2b3c4d-5e6f;rport\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-9a8b7c6d;rport\r\n\
Record-Route: <sip:192.0.2.10:5060;lr;psn=7;psd=primary;ftag=as6f2c3d1e>\r\n\
From: <sip:+15559870000@198.51.100.7>;tag=as6f2c3d1e\r\n\
To: <sip:+15551234567@192.0.2.10>;tag=c8f7e6\r\n\
Call-ID: 3c26700a5f2b4e1c@198.51.100.7\r\n\
CSeq: 102 INVITE\r\n\
Contact: <sip:agent@203.0.113.5>\r\n\
Content-Length: 0\r\n\
\r\n";

pub const CARRIER: &str = "198.51.100.7:5060";
pub const PRIMARY: &str = "127.0.0.1:5070";

/// The node the core benches run: one UDP listener, a primary/secondary route (probes off: no
/// prober runs here), rate limits out of the way (one carrier sends every call), no admin API.
pub const CONFIG: &str = r#"
[node]
id = 7
advertise = "192.0.2.10:5060"

[[listen]]
transport = "udp"
address = "127.0.0.1:5060"

[admin]
enabled = false

[guard]
rate = 1000000.0
burst = 10000000.0

[[destination]]
name = "primary"
address = "127.0.0.1:5070"
provisional_timeout = "3s"
probe = false

[[destination]]
name = "secondary"
address = "127.0.0.1:5080"
provisional_timeout = "3s"
probe = false

[[route]]
name = "default"
destinations = ["primary", "secondary"]
"#;

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

/// The INVITE of call `n`: [`INVITE_1K`] with its own Call-ID, From tag and Via branch (same
/// length, so every call is exactly 1,024 bytes).
pub fn invite(n: u64) -> Vec<u8> {
    let text = std::str::from_utf8(INVITE_1K).expect("ascii");
    let id = format!("{n:016x}");
    text.replace("9a8b7c6d5e4f3a2b", &id)
        .replace("3c26700a5f2b4e1c", &id)
        .replace("as6f2c3d1e", &format!("a{:09x}", n & 0xf_ffff_ffff))
        .into_bytes()
}

/// Calls pushed through before measuring (40 s of fake time: past every 64·T1 timer).
pub const WARM_CALLS: usize = 40_000;

/// Server transactions held, per call a second, above which the core is leaking (a healthy
/// core holds about 64 per call a second: each call's INVITE and BYE transactions for 64·T1 =
/// 32 s; 64,000 at 1 ms a call).
const LEAK_LIMIT_PER_CALL_A_SECOND: u128 = 100;

/// The messages of one call, in the order the timings of [`Sim::call`] are kept.
pub const STEPS: [&str; 8] = [
    "INVITE", "100", "180", "200", "ACK", "BYE", "200-BYE", "timers",
];

/// A core with a fake clock. Each [`Sim::call`] is one call as the load bench places it
/// (INVITE/100/180/200/ACK/BYE/200 with SDP, hold time 0) followed by `gap` of fake time, during
/// which the timers that fell due fire (so transactions are reaped as in a running node: at
/// 1 ms a call, about 32 s of calls, some 32,000, are held at any time).
pub struct Sim {
    /// The core, its fake clock, its timers and what it sent.
    pub h: Harness,
    upkeep: Box<dyn Fn()>,
    pub calls: u64,
    pub gap: Duration,
    carrier: SocketAddr,
    primary: SocketAddr,
    /// Hook run around every timed core call (the allocation count reads its counters here).
    pub probe: fn() -> (u64, u64),
    /// When set, every call's INVITE meets cold caches: this much memory is written over, untimed,
    /// before it (what a node at a low rate sees, with other processes running between messages).
    pub evict_before_invite: Option<Vec<u8>>,
}

/// Written over before each INVITE of a cold run: more than any last-level cache.
pub const EVICT_BYTES: usize = 64 << 20;

fn no_probe() -> (u64, u64) {
    (0, 0)
}

impl Sim {
    pub fn new() -> Sim {
        let cfg = Config::parse(CONFIG, "bench.toml").expect("bench config");
        let core_cfg = pointsman::driver::core_config(&cfg).expect("core config");
        let now = Instant::now();
        let (dests, routes) = pointsman_protocol::metrics::names(&cfg.router);
        let (metrics, handle) = pointsman::exporter::local(&dests, &routes);
        let routing = Routing::new(
            cfg.router.clone(),
            pointsman::node::addresses(&cfg.router),
            Health::new(&cfg.health).adopt(&cfg.router, now),
            metrics,
        );
        Sim {
            h: Harness::new(Core::new(core_cfg, routing, now, 0x5eed), now),
            upkeep: Box::new(move || handle.run_upkeep()),
            calls: 0,
            gap: Duration::from_millis(1),
            carrier: addr(CARRIER),
            primary: addr(PRIMARY),
            probe: no_probe,
            evict_before_invite: None,
        }
    }

    /// Feeds one datagram; returns the time and the (allocations, bytes) the core took.
    fn feed(&mut self, from: SocketAddr, bytes: &[u8]) -> (Duration, u64, u64) {
        let probe = self.probe;
        self.h.drive(|core, now, out| {
            let (a0, b0) = probe();
            let t0 = Instant::now();
            core.on_message(Inbound::datagram(bytes, from), now, out);
            let took = t0.elapsed();
            let (a1, b1) = probe();
            (took, a1 - a0, b1 - b0)
        })
    }

    /// Moves the fake clock by `by`, firing every timer that falls due; returns the time and
    /// the (allocations, bytes) the core took.
    pub fn advance(&mut self, by: Duration) -> (Duration, u64, u64) {
        let probe = self.probe;
        let mut took = Duration::ZERO;
        let (mut allocs, mut bytes) = (0, 0);
        self.h.advance_with(by, |core, timer, now, out| {
            let (a0, b0) = probe();
            let t0 = Instant::now();
            core.on_timer(timer, now, out);
            took += t0.elapsed();
            let (a1, b1) = probe();
            allocs += a1 - a0;
            bytes += b1 - b0;
        });
        (took, allocs, bytes)
    }

    /// The last message sent to `to` that starts with `starts`.
    fn take_sent(&mut self, to: SocketAddr, starts: &str) -> String {
        match self.h.last_to(to, starts) {
            Some(b) => std::str::from_utf8(b).expect("ascii").to_string(),
            None => {
                let lines: Vec<String> = self
                    .h
                    .sent
                    .iter()
                    .map(|(a, l, _)| format!("{a} {l}"))
                    .collect();
                panic!("the core sent no {starts:?} to {to}; it sent {lines:?}")
            }
        }
    }

    /// Timers armed and not yet fired (dead ones included: the driver holds them until due).
    pub fn pending_timers(&self) -> usize {
        self.h.timers.len()
    }

    /// Pending timers by kind, most first.
    pub fn pending_timer_kinds(&self) -> Vec<(String, usize)> {
        let mut by_kind = std::collections::HashMap::<String, usize>::new();
        for (_, timer) in self.h.timers.iter() {
            *by_kind.entry(format!("{:?}", timer.kind)).or_default() += 1;
        }
        let mut kinds: Vec<_> = by_kind.into_iter().collect();
        kinds.sort_by_key(|k| std::cmp::Reverse(k.1));
        kinds
    }

    /// Bytes this driver itself holds (its timer heap and scratch buffers), to tell them apart
    /// from what the core holds.
    pub fn driver_bytes(&self) -> usize {
        self.h.own_bytes()
    }

    /// A core that has taken [`WARM_CALLS`] calls, so its tables hold their steady-state size.
    pub fn warm() -> Sim {
        let mut sim = Sim::new();
        for _ in 0..WARM_CALLS {
            sim.call();
        }
        sim
    }

    /// One whole call; per step of [`STEPS`]: (time, allocations, bytes allocated) in the core.
    pub fn call(&mut self) -> [(Duration, u64, u64); 8] {
        let held = self.h.core.table_sizes().0;
        let calls_a_second = 1_000_000_000 / self.gap.as_nanos().max(1);
        if held as u128 > LEAK_LIMIT_PER_CALL_A_SECOND * calls_a_second.max(1_000) {
            // Transactions that are never freed would end in 503s (guard.max_transactions):
            // say so, and go on measuring on a fresh core.
            eprintln!(
                "\nbench: {held} server transactions held after {} calls at {} calls/s of fake \
                 time (steady state is about 64 per call/s): transactions are not being freed. \
                 Starting over on a fresh core.",
                self.calls, calls_a_second
            );
            let (gap, probe) = (self.gap, self.probe);
            *self = Sim::warm();
            self.gap = gap;
            self.probe = probe;
        }
        let n = self.calls;
        self.calls += 1;
        self.h.clear_sent();
        let mut t = [(Duration::ZERO, 0, 0); 8];
        let (carrier, primary) = (self.carrier, self.primary);

        let invite = invite(n);
        if let Some(scratch) = &mut self.evict_before_invite {
            for line in scratch.chunks_mut(64) {
                line[0] = line[0].wrapping_add(1);
            }
            std::hint::black_box(&scratch);
        }
        t[0] = self.feed(carrier, &invite);
        let fwd = self.take_sent(primary, "INVITE ");
        let to_tag = format!("cl{n:x}");
        t[1] = self.feed(primary, &response(&fwd, 100, "Trying", ""));
        t[2] = self.feed(primary, &response(&fwd, 180, "Ringing", &to_tag));
        t[3] = self.feed(primary, &response(&fwd, 200, "OK", &to_tag));
        let ok = self.take_sent(carrier, "SIP/2.0 200");
        t[4] = self.feed(carrier, in_dialog(&ok, "ACK", 102, n).as_bytes());
        self.take_sent(primary, "ACK ");
        t[5] = self.feed(carrier, in_dialog(&ok, "BYE", 103, n).as_bytes());
        let bye = self.take_sent(primary, "BYE ");
        t[6] = self.feed(primary, &response(&bye, 200, "OK", ""));
        self.take_sent(carrier, "SIP/2.0 200");
        t[7] = self.advance(self.gap);
        if n.is_multiple_of(1024) {
            (self.upkeep)();
        }
        t
    }
}

impl Default for Sim {
    fn default() -> Self {
        Sim::new()
    }
}

/// Header lines of `msg` whose name is `name` (long form, as the core and this file write them).
fn lines<'a>(msg: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    msg.split("\r\n")
        .take_while(|l| !l.is_empty())
        .filter(move |l| {
            l.len() > name.len()
                && l.as_bytes()[name.len()] == b':'
                && l[..name.len()].eq_ignore_ascii_case(name)
        })
}

/// The cloud's answer in a 200 to an INVITE.
const SDP_ANSWER: &str = "v=0\r\no=cloud 2890844526 2890844526 IN IP4 127.0.0.1\r\ns=-\r\n\
                          c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 101\r\n\
                          a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
                          a=ptime:20\r\na=sendrecv\r\n";

/// A cloud's response to the request `req` (as pointsman forwarded it), from the shared builder:
/// every Via, the callee's tag, and for a dialog-forming answer the Record-Route set (RFC 3261
/// §12.1.1) and a Contact; a 200 to an INVITE carries an SDP answer.
fn response(req: &str, code: u16, reason: &str, to_tag: &str) -> Vec<u8> {
    let answer = Answer {
        reason,
        to_tag,
        contact: "sip:agent@127.0.0.1:5070;transport=udp",
        extra: "",
        sdp: Some(SDP_ANSWER),
    };
    testing::respond(req.as_bytes(), code, &answer).expect("the core's request scans")
}

/// The carrier's in-dialog request (ACK for the 2xx, or BYE) built from the 200 it received:
/// Request-URI from the Contact, a Route to pointsman's Record-Route (the first one; the
/// carrier's own SBC entry is its own business), From/To/Call-ID of the dialog.
fn in_dialog(ok: &str, method: &str, cseq: u32, n: u64) -> String {
    let contact = lines(ok, "Contact").next().unwrap_or_default();
    let target = contact
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(uri, _)| uri)
        .unwrap_or("sip:agent@127.0.0.1:5070");
    let rr = lines(ok, "Record-Route").next().unwrap_or_default();
    let route = rr
        .split_once(':')
        .map(|(_, v)| v.trim())
        .unwrap_or_default();
    let value = |name: &str| {
        lines(ok, name)
            .next()
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    format!(
        "{method} {target} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-{method}-{n:x};rport\r\n\
         Route: {route}\r\n\
         Max-Forwards: 70\r\n\
         From: {from}\r\n\
         To: {to}\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} {method}\r\n\
         Content-Length: 0\r\n\r\n",
        from = value("From"),
        to = value("To"),
        call_id = value("Call-ID"),
    )
}

/// Our Via line and Record-Route value as the core writes them for a UDP leg (branch with node id and loop
/// hash, `psn` marking our own URI).
const VIA: &str =
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-ps0007-1a2b3c4d-0000000000000001\r\n";
const RECORD_ROUTE: &str = "<sip:192.0.2.10:5060;lr;psn=7>";

/// The forwarding the core does to a new INVITE: the production code.
pub fn forward_invite(m: &pointsman_protocol::wire::Message<'_>) -> bytes::Bytes {
    pointsman_protocol::forwarded(m, VIA, Some(RECORD_ROUTE))
}
