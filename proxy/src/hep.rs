//! HEP v3 capture for Homer: a copy of every SIP message the node receives and sends, with its
//! addresses and time, encoded as HEP v3 (the Homer Encapsulation Protocol: a `HEP3` header and
//! typed chunks) and sent to a collector over UDP or TCP (`[hep]`).
//!
//! - **Never in the way.** A worker hands a capture to one sender thread through a bounded queue
//!   ([`Hep::capture`]); a full queue drops it, counted as
//!   `pointsman_hep_dropped_total{reason="queue_full"}`. The thread alone encodes and sends; a
//!   collector that is down or slow costs drops, never a worker's time or memory.
//! - **Switch.** On at start when `[hep] address` is set (unless `enabled = false`), turned on
//!   and off at runtime (`POST /hep/on`, `/hep/off`, `pointsman hep on|off`); off, a message
//!   costs one atomic load and nothing is copied.
//! - **What a capture says.** Chunks 1–12 of the HEP v3 spec (address family, IP protocol 17 or
//!   6, source and destination address and port, seconds and microseconds, protocol type 1 =
//!   SIP, capture agent id), the optional auth key (14), and the message (15). TLS legs are
//!   reported as TCP (HEP has no TLS marker) with the decrypted message.
//!
//! It must not: block a worker, grow without bound, or change what the node sends.

use bytes::Bytes;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{info, warn};

/// Default `[hep] queue`: captures waiting for the sender.
pub const DEFAULT_QUEUE: usize = 10_000;
/// How long the sender waits before it dials a TCP collector again after a failure.
const REDIAL: Duration = Duration::from_secs(1);
/// The HEP packet length is a 16-bit field.
const MAX_PACKET: usize = u16::MAX as usize;

/// How captures reach the collector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HepTransport {
    Udp,
    Tcp,
}

/// `[hep]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HepConfig {
    /// The collector (Homer's `heplify-server`, port 9060 by convention).
    pub address: SocketAddr,
    pub transport: HepTransport,
    /// Capture agent id (chunk 12): tells the collector which node captured (default: the
    /// node id).
    pub agent_id: u32,
    /// Auth key (chunk 14) some collectors require.
    pub password: Option<String>,
    /// Capturing at start.
    pub enabled: bool,
    /// Captures queued for the sender before one is dropped.
    pub queue: usize,
}

/// One message as it crossed the node's edge.
#[derive(Clone, Debug)]
pub struct Capture {
    pub at: SystemTime,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// A TCP or TLS leg (IP protocol 6); UDP otherwise (17).
    pub stream: bool,
    pub payload: Bytes,
}

/// HEP v3 `c` with agent id `agent_id` and `auth` in `out` (cleared first); `false` when it
/// would be longer than a HEP packet can be (nothing useful is written then).
pub fn encode(c: &Capture, agent_id: u32, auth: Option<&str>, out: &mut Vec<u8>) -> bool {
    out.clear();
    out.extend_from_slice(b"HEP3\0\0");
    let (family, src_type, dst_type) = match c.src.ip() {
        IpAddr::V4(_) => (2u8, 3u16, 4u16),
        IpAddr::V6(_) => (10u8, 5u16, 6u16),
    };
    chunk(out, 1, &[family]);
    chunk(out, 2, &[if c.stream { 6 } else { 17 }]);
    // Both addresses of one family: an IPv4 peer of an IPv6 socket is written mapped.
    let (src_ip, dst_ip) = match (c.src.ip(), c.dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (s.octets().to_vec(), d.octets().to_vec()),
        (IpAddr::V4(s), IpAddr::V6(d)) => (
            s.octets().to_vec(),
            d.to_ipv4_mapped()
                .map_or(vec![0; 4], |d| d.octets().to_vec()),
        ),
        (IpAddr::V6(s), d) => (s.octets().to_vec(), to_v6(d).octets().to_vec()),
    };
    chunk(out, src_type, &src_ip);
    chunk(out, dst_type, &dst_ip);
    chunk(out, 7, &c.src.port().to_be_bytes());
    chunk(out, 8, &c.dst.port().to_be_bytes());
    let since = c.at.duration_since(UNIX_EPOCH).unwrap_or_default();
    chunk(out, 9, &(since.as_secs() as u32).to_be_bytes());
    chunk(out, 10, &since.subsec_micros().to_be_bytes());
    chunk(out, 11, &[1]);
    chunk(out, 12, &agent_id.to_be_bytes());
    if let Some(key) = auth {
        chunk(out, 14, key.as_bytes());
    }
    chunk(out, 15, &c.payload);
    let Ok(len) = u16::try_from(out.len()) else {
        return false;
    };
    out[4..6].copy_from_slice(&len.to_be_bytes());
    true
}

fn to_v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// One generic (vendor 0) chunk: vendor, type, length of the whole chunk, payload.
fn chunk(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = (6 + payload.len()).min(MAX_PACKET) as u16;
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
}

/// The capture switch and the queue to the sender thread.
pub struct Hep {
    on: AtomicBool,
    queue: SyncSender<Capture>,
}

impl Hep {
    /// Starts the sender thread for `cfg`: binds the UDP socket (a TCP collector is dialled
    /// when the first capture comes, and again after a failure). Registers the HEP metrics.
    pub fn start(cfg: &HepConfig) -> io::Result<Arc<Hep>> {
        describe_metrics();
        let (queue, captures) = mpsc::sync_channel::<Capture>(cfg.queue);
        let udp = match cfg.transport {
            HepTransport::Udp => {
                let any = match cfg.address {
                    SocketAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                    SocketAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
                };
                Some(UdpSocket::bind(SocketAddr::new(any, 0))?)
            }
            HepTransport::Tcp => None,
        };
        let sender = Sender {
            cfg: cfg.clone(),
            udp,
            tcp: None,
            dial_after: None,
            packet: Vec::with_capacity(4096),
        };
        std::thread::Builder::new()
            .name("pointsman-hep".into())
            .spawn(move || sender.run(captures))?;
        info!(
            collector = %cfg.address,
            transport = ?cfg.transport,
            enabled = cfg.enabled,
            "HEP capture configured"
        );
        Ok(Arc::new(Hep {
            on: AtomicBool::new(cfg.enabled),
            queue,
        }))
    }

    /// Whether messages are captured now.
    #[inline]
    pub fn enabled(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Turns capture on or off; returns whether it was on.
    pub fn set_enabled(&self, on: bool) -> bool {
        let was = self.on.swap(on, Ordering::Relaxed);
        if was != on {
            info!(enabled = on, "HEP capture switched");
        }
        was
    }

    /// Queues the capture `make` builds, if capturing is on; never waits. Whether it was
    /// queued.
    #[inline]
    pub fn capture(&self, make: impl FnOnce() -> Capture) -> bool {
        if !self.enabled() {
            return false;
        }
        match self.queue.try_send(make()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                dropped("queue_full");
                false
            }
            Err(TrySendError::Disconnected(_)) => {
                dropped("send_error");
                false
            }
        }
    }
}

fn dropped(reason: &'static str) {
    metrics::counter!("pointsman_hep_dropped_total", "reason" => reason).increment(1);
}

fn describe_metrics() {
    metrics::describe_counter!(
        "pointsman_hep_sent_total",
        "HEP v3 packets sent to the collector"
    );
    metrics::describe_counter!(
        "pointsman_hep_dropped_total",
        "SIP messages not captured, by reason: queue_full (the sender is behind), too_large \
         (over a HEP packet's 64 KiB), send_error (the collector could not be reached)"
    );
    metrics::counter!("pointsman_hep_sent_total").absolute(0);
    for reason in ["queue_full", "too_large", "send_error"] {
        metrics::counter!("pointsman_hep_dropped_total", "reason" => reason).absolute(0);
    }
}

/// The sender thread's state.
struct Sender {
    cfg: HepConfig,
    udp: Option<UdpSocket>,
    tcp: Option<TcpStream>,
    /// A TCP collector failed: not dialled again before this.
    dial_after: Option<Instant>,
    packet: Vec<u8>,
}

impl Sender {
    fn run(mut self, captures: mpsc::Receiver<Capture>) {
        while let Ok(c) = captures.recv() {
            if !encode(
                &c,
                self.cfg.agent_id,
                self.cfg.password.as_deref(),
                &mut self.packet,
            ) {
                dropped("too_large");
                continue;
            }
            match self.send() {
                Ok(()) => metrics::counter!("pointsman_hep_sent_total").increment(1),
                Err(_) => dropped("send_error"),
            }
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if let Some(udp) = &self.udp {
            udp.send_to(&self.packet, self.cfg.address)?;
            return Ok(());
        }
        if self.tcp.is_none() {
            if self.dial_after.is_some_and(|at| Instant::now() < at) {
                return Err(io::Error::other("the collector is down"));
            }
            match TcpStream::connect_timeout(&self.cfg.address, REDIAL) {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    let _ = stream.set_write_timeout(Some(REDIAL));
                    self.tcp = Some(stream);
                    self.dial_after = None;
                }
                Err(e) => {
                    warn!(collector = %self.cfg.address, error = %e, "HEP collector unreachable");
                    self.dial_after = Some(Instant::now() + REDIAL);
                    return Err(e);
                }
            }
        }
        let result = match &mut self.tcp {
            Some(stream) => stream.write_all(&self.packet),
            None => Ok(()),
        };
        if let Err(e) = &result {
            warn!(collector = %self.cfg.address, error = %e, "HEP collector connection lost");
            self.tcp = None;
            self.dial_after = Some(Instant::now() + REDIAL);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(src: &str, dst: &str, payload: &'static [u8]) -> Capture {
        Capture {
            at: UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_000),
            src: src.parse().expect("addr"),
            dst: dst.parse().expect("addr"),
            stream: false,
            payload: Bytes::from_static(payload),
        }
    }

    #[test]
    fn an_ipv4_udp_capture_is_the_hep3_header_then_its_chunks_in_order() {
        let mut out = Vec::new();
        let c = capture(
            "192.0.2.1:5060",
            "192.0.2.2:5070",
            b"OPTIONS sip:x SIP/2.0\r\n\r\n",
        );
        assert!(encode(&c, 7, None, &mut out));
        let mut want = b"HEP3".to_vec();
        want.extend_from_slice(&(out.len() as u16).to_be_bytes());
        for (kind, payload) in [
            (1u16, vec![2u8]),
            (2, vec![17]),
            (3, vec![192, 0, 2, 1]),
            (4, vec![192, 0, 2, 2]),
            (7, 5060u16.to_be_bytes().to_vec()),
            (8, 5070u16.to_be_bytes().to_vec()),
            (9, 1_700_000_000u32.to_be_bytes().to_vec()),
            (10, 123_456u32.to_be_bytes().to_vec()),
            (11, vec![1]),
            (12, 7u32.to_be_bytes().to_vec()),
            (15, b"OPTIONS sip:x SIP/2.0\r\n\r\n".to_vec()),
        ] {
            want.extend_from_slice(&[0, 0]);
            want.extend_from_slice(&kind.to_be_bytes());
            want.extend_from_slice(&((6 + payload.len()) as u16).to_be_bytes());
            want.extend_from_slice(&payload);
        }
        assert_eq!(out, want);
    }

    #[test]
    fn an_ipv6_tcp_capture_with_an_auth_key_and_a_mapped_ipv4_peer() {
        let mut out = Vec::new();
        let mut c = capture("[2001:db8::1]:5061", "192.0.2.9:5061", b"x");
        c.stream = true;
        assert!(encode(&c, 1, Some("secret"), &mut out));
        let find = |kind: u16| {
            let mut at = 6;
            while at + 6 <= out.len() {
                let k = u16::from_be_bytes([out[at + 2], out[at + 3]]);
                let len = usize::from(u16::from_be_bytes([out[at + 4], out[at + 5]]));
                if k == kind {
                    return out[at + 6..at + len].to_vec();
                }
                at += len;
            }
            panic!("no chunk {kind}");
        };
        assert_eq!(find(1), vec![10]);
        assert_eq!(find(2), vec![6]);
        assert_eq!(
            find(5),
            "2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
        assert_eq!(
            find(6),
            "::ffff:192.0.2.9"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
        assert_eq!(find(14), b"secret".to_vec());
        assert_eq!(usize::from(u16::from_be_bytes([out[4], out[5]])), out.len());
    }

    #[test]
    fn a_collector_that_does_not_read_costs_drops_never_a_wait() {
        // A TCP collector that accepts and never reads: the sender blocks on its full socket,
        // the queue of 4 fills, and every capture after that is dropped at once.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("addr");
        let _held = std::thread::spawn(move || {
            let conn = listener.accept();
            std::thread::sleep(Duration::from_secs(3));
            drop(conn);
        });
        let hep = Hep::start(&HepConfig {
            address,
            transport: HepTransport::Tcp,
            agent_id: 1,
            password: None,
            enabled: true,
            queue: 4,
        })
        .expect("start");
        let big: &'static [u8] = Box::leak(vec![b'x'; 60_000].into_boxed_slice());
        let started = Instant::now();
        let queued = (0..200)
            .filter(|_| hep.capture(|| capture("127.0.0.1:1", "127.0.0.1:2", big)))
            .count();
        assert!(queued < 200, "every capture queued: nothing was dropped");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "capturing waited on the collector"
        );
        // Off: nothing is queued, nothing is built.
        assert!(hep.set_enabled(false));
        assert!(!hep.capture(|| panic!("a capture was built while off")));
    }

    #[test]
    fn a_message_too_large_for_a_hep_packet_is_refused() {
        let mut out = Vec::new();
        let big: &'static [u8] = Box::leak(vec![b'a'; 65_500].into_boxed_slice());
        assert!(!encode(
            &capture("192.0.2.1:1", "192.0.2.2:2", big),
            1,
            None,
            &mut out
        ));
    }
}
