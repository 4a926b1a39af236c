//! The prober: sends SIP OPTIONS to every destination that wants a probe, matches the replies,
//! measures their round-trip time and feeds the results to the destinations' machines
//! ([`DestHealth`]). It runs as one tokio task on a current-thread runtime on its own thread
//! ([`Prober::spawn`]), takes the handles of a new rule set with [`Prober::set`], and stops when
//! its [`Prober`] is dropped.
//!
//! - **Source address.** UDP probes leave from where the node's calls leave from: a socket of
//!   its first UDP listener of the destination's address family (a duplicate of a worker's, used
//!   only to send), so a cloud sees OPTIONS from the address and port it takes calls from (what
//!   Azure direct routing and other clouds check). Their replies reach the workers like any
//!   response; the core hands each to the prober ([`Output::ProbeReply`]), which the probe's
//!   branch tells ([`probe_branch_prefix`]); in a pair a reply that lands on the other node goes
//!   to this one over the node link. With `[health] source` set (a node of an anycast pair
//!   whose link may be cut), or no listener of the family, probes leave from a socket of the
//!   prober's own on that address instead. TCP probes bind the source IP (any port).
//! - **What a probe says.** `OPTIONS` with a Contact and From naming the node (`[node]
//!   advertise`: set it to the FQDN a cloud knows the node by), a User-Agent, and, when the
//!   destination names its host (`request_uri`), that host in the Request-URI and To.
//! - **UDP.** One OPTIONS per probe, retransmitted per RFC 3261 Timer E (T1, 2·T1, ... capped at
//!   T2; `[timers] t1`/`t2`) until a final reply or the probe timeout, which bounds the probe.
//!   The RTT is measured from the first transmission. Replies are matched by Call-ID and top
//!   Via branch (both unique per probe); provisional replies are ignored; a reply after the
//!   timeout matches nothing and is dropped. ICMP errors are not read: an unreachable port shows
//!   as a timeout.
//! - **TCP.** One short connection per probe (connect, OPTIONS, first final reply, close):
//!   nothing to keep alive or to notice breaking between probes, which are seconds apart. A
//!   failed connect or write, or a connection closed before a final reply, is a probe failure
//!   at once; the probe timeout bounds the whole exchange.
//! - **TLS.** As TCP, with a TLS handshake after the connect, verified with the destination's
//!   TLS settings ([`Certificates`], given to [`Prober::spawn_with_tls`]); a failed handshake
//!   is a probe failure.
//! - **Hostnames** are resolved when a probe is due and the address is not known yet (in a task,
//!   so one slow resolver never delays the other probes); the address is kept for the rule set's
//!   lifetime, as the core does. A failed resolution is a probe failure.
//! - Destinations in maintenance, or with `probe = false`, are not probed; the prober still
//!   calls [`DestHealth::poll`] for them at [`DestHealth::next_wakeup`] (end of a hold).
//!
//! Replies are read only through [`wire::scan`] / [`wire::frame_stream`]; nothing a peer sends
//! can make it panic. It must not: share a socket with the proxy, decide anything about health
//! (the machine does), or log state changes (the table does).

use crate::transport::tls::Certificates;
use bytes::Bytes;
use pointsman_protocol::health::{DestHealth, HealthView};
use pointsman_protocol::probe_branch_prefix;
use pointsman_protocol::wire::{self, Framing, Limits, Message, Method, StreamFrame};
#[cfg(doc)]
use pointsman_protocol::Output;
use routing_rules::spec::TransportSpec;
use routing_rules::RequestUri;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tracing::{debug, trace, warn};

/// The longest the prober sleeps without looking at its destinations again.
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// Largest datagram read.
const MAX_DATAGRAM: usize = 65_535;
/// Probe replies the workers may hand over before the prober reads them; past it one is
/// dropped (its probe times out), never queued without bound.
const REPLY_QUEUE: usize = 1024;
/// The User-Agent of every probe.
const USER_AGENT: &str = concat!("pointsman/", env!("CARGO_PKG_VERSION"));

/// How the prober runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProberConfig {
    /// Local address of the probe socket (`[health] source`).
    pub source: SocketAddr,
    /// First UDP retransmission interval (RFC 3261 T1, `[timers] t1`; default 500 ms).
    pub t1: Duration,
    /// Largest UDP retransmission interval (RFC 3261 T2, `[timers] t2`; default 4 s).
    pub t2: Duration,
    /// Caps on replies (`[limits]`).
    pub limits: Limits,
    /// This node's id: in every probe's branch, so its reply finds this node's prober.
    pub node_id: u16,
    /// `host:port` that names the node in a probe's Contact and From (`[node] advertise`);
    /// `None`: the address the probe leaves from.
    pub contact: Option<String>,
}

/// A running prober. Dropping it stops the task and joins its thread.
pub struct Prober {
    views: Option<watch::Sender<HealthView>>,
    thread: Option<std::thread::JoinHandle<()>>,
    local: SocketAddr,
    replies: mpsc::Sender<Bytes>,
}

impl Prober {
    /// Binds the probe socket on `config.source` (an error here is a configuration error: the
    /// address is not this node's) and starts probing `view`'s destinations.
    pub fn spawn(config: ProberConfig, view: HealthView) -> io::Result<Prober> {
        Prober::spawn_with_tls(config, view, None, Vec::new())
    }

    /// [`Prober::spawn`], probing TLS destinations with `tls` (without it their probes fail),
    /// and UDP ones from `egress`, duplicates of listener sockets that are only sent on, when
    /// there are any (see the module's **Source address**).
    pub fn spawn_with_tls(
        config: ProberConfig,
        view: HealthView,
        tls: Option<Arc<Certificates>>,
        egress: Vec<std::net::UdpSocket>,
    ) -> io::Result<Prober> {
        let socket = std::net::UdpSocket::bind(config.source)?;
        socket.set_nonblocking(true)?;
        let local = socket.local_addr()?;
        for s in &egress {
            s.set_nonblocking(true)?;
        }
        let (replies, reply_inbox) = mpsc::channel(REPLY_QUEUE);
        let (views, rx) = watch::channel(view);
        // The runtime is built, run and dropped on the prober's thread only (dropping a
        // runtime inside another one panics); the thread reports whether it started.
        let (started_tx, started) = std::sync::mpsc::sync_channel::<io::Result<()>>(1);
        let thread = std::thread::Builder::new()
            .name("pointsman-prober".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    // The listeners' sockets stay out of this runtime's reactor: registered,
                    // every datagram a worker receives on them would wake this thread too.
                    let sockets = UdpSocket::from_std(socket).and_then(|own| {
                        let egress = egress
                            .into_iter()
                            .map(|s| {
                                let local = s.local_addr()?;
                                Ok((s, local))
                            })
                            .collect::<io::Result<Vec<_>>>()?;
                        Ok((own, egress))
                    });
                    match sockets {
                        Ok((socket, egress)) => {
                            let _ = started_tx.send(Ok(()));
                            run(socket, egress, reply_inbox, config, tls, rx).await;
                        }
                        Err(e) => {
                            let _ = started_tx.send(Err(e));
                        }
                    }
                });
                // Pending resolutions (blocking threads) must not hold up a shutdown.
                runtime.shutdown_timeout(Duration::from_millis(100));
            })?;
        let outcome = started
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("the prober thread ended before starting")));
        if let Err(e) = outcome {
            let _ = thread.join();
            return Err(e);
        }
        Ok(Prober {
            views: Some(views),
            thread: Some(thread),
            local,
            replies,
        })
    }

    /// Where the workers hand the replies to probes sent from a listener
    /// ([`Output::ProbeReply`]); `try_send`: a full queue drops the reply, never waits.
    pub fn replies(&self) -> mpsc::Sender<Bytes> {
        self.replies.clone()
    }

    /// Probes these destinations from now on (after a reload). Probes in flight complete.
    pub fn set(&self, view: HealthView) {
        if let Some(views) = &self.views {
            views.send_replace(view);
        }
    }

    /// The address probes leave from.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        // Closing the channel ends the task.
        self.views.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Who a probe is for: the destination's address and transport, and the host it names in its
/// Request-URI (`request_uri`), if any.
#[derive(Clone, Copy, Debug)]
pub struct ProbeTarget<'a> {
    /// As configured (IPv6 without brackets).
    pub host: &'a str,
    pub port: u16,
    pub transport: TransportSpec,
    pub request_uri: Option<&'a RequestUri>,
}

/// The ids of one probe, and whom it names as its sender.
#[derive(Clone, Copy, Debug)]
pub struct ProbeIds<'a> {
    /// Where replies come back to (the Via).
    pub via: SocketAddr,
    /// `host:port` of the Contact and From (default: `via`).
    pub contact: Option<&'a str>,
    pub call_id: &'a str,
    pub branch: &'a str,
    pub cseq: u32,
}

/// The SIP OPTIONS request of one probe: to the destination's own host when it names one
/// (Request-URI and To, as clouds that route by FQDN expect), else to its address; IPv6 hosts
/// bracketed; a Contact and User-Agent, which some clouds require of a trunk's OPTIONS.
pub fn options_request(to: ProbeTarget<'_>, ids: ProbeIds<'_>) -> Bytes {
    let uri_host = match to.request_uri {
        Some(rw) => rw.hostport(),
        None if to.host.contains(':') => format!("[{}]:{}", to.host, to.port),
        None => format!("{}:{}", to.host, to.port),
    };
    let (tp, uri_param) = match to.transport {
        TransportSpec::Udp => ("UDP", ""),
        TransportSpec::Tcp => ("TCP", ";transport=tcp"),
        TransportSpec::Tls => ("TLS", ";transport=tls"),
    };
    let contact = match ids.contact {
        Some(c) => c.to_string(),
        None => ids.via.to_string(),
    };
    let contact_host = contact
        .rsplit_once(':')
        .filter(|(h, p)| !p.contains(']') && !h.is_empty())
        .map_or(contact.as_str(), |(h, _)| h);
    let text = format!(
        "OPTIONS sip:{uri_host}{uri_param} SIP/2.0\r\n\
         Via: SIP/2.0/{tp} {via};branch={branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:pointsman@{contact_host}>;tag={cseq}p\r\n\
         To: <sip:{uri_host}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} OPTIONS\r\n\
         Contact: <sip:pointsman@{contact}{uri_param}>\r\n\
         User-Agent: {USER_AGENT}\r\n\
         Accept: application/sdp\r\n\
         Content-Length: 0\r\n\r\n",
        via = ids.via,
        branch = ids.branch,
        call_id = ids.call_id,
        cseq = ids.cseq,
    );
    Bytes::from(text)
}

/// Sends a UDP probe. A listener's socket reports ICMP errors (`IP_RECVERR`), and a send can
/// return the report of an earlier datagram to another peer (a dead cloud's closed port): that
/// says nothing of this probe, which is sent again.
async fn send_probe(socket: ProbeSocket<'_>, bytes: &[u8], to: SocketAddr) -> io::Result<usize> {
    let mut tries = 0;
    loop {
        let sent = match socket {
            ProbeSocket::Own(s) => s.send_to(bytes, to).await,
            // A full send buffer: this transmission is lost like a dropped datagram, and the
            // retransmission (or the probe timeout) covers it.
            ProbeSocket::Listener(s) => match s.send_to(bytes, to) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                sent => sent,
            },
        };
        match sent {
            Err(e) if crate::transport::udp::is_icmp_error(&e) && tries < 8 => tries += 1,
            sent => return sent,
        }
    }
}

/// What a UDP probe is sent on.
#[derive(Clone, Copy)]
enum ProbeSocket<'a> {
    /// The prober's own socket (`[health] source`), in its reactor.
    Own(&'a UdpSocket),
    /// A listener's socket, non-blocking, outside any reactor of the prober's.
    Listener(&'a std::net::UdpSocket),
}

/// The final code of `m` if it answers the probe with this Call-ID and branch.
fn final_reply(m: &Message<'_>, call_id: &str, branch: &str) -> Option<u16> {
    let code = m.code()?;
    let same_probe = m.slice(m.call_id) == call_id.as_bytes()
        && m.cseq_method == Method::Options
        && m.top_via.branch.map(|b| m.slice(b)) == Some(branch.as_bytes());
    (same_probe && code >= 200).then_some(code)
}

/// One destination of the current view.
struct Target {
    dest: Arc<DestHealth>,
    addr: Option<SocketAddr>,
    /// The address put in Via when the socket is bound to a wildcard.
    via: Option<SocketAddr>,
    resolving: bool,
}

/// A probe waiting for its reply.
struct InFlight {
    dest: Arc<DestHealth>,
    branch: String,
    sent: Instant,
    deadline: Instant,
    /// UDP: the next retransmission.
    retransmit: Option<Retransmit>,
    /// TCP: the task doing the exchange.
    task: Option<AbortHandle>,
}

struct Retransmit {
    bytes: Bytes,
    to: SocketAddr,
    /// Index into the listener sockets it left from; `None`: the prober's own.
    egress: Option<usize>,
    at: Instant,
    interval: Duration,
}

/// What the prober's tasks report.
enum Report {
    Tcp {
        call_id: String,
        result: Result<u16, String>,
        at: Instant,
    },
    Resolved {
        dest: Arc<DestHealth>,
        result: Result<SocketAddr, String>,
    },
}

fn key(dest: &Arc<DestHealth>) -> usize {
    Arc::as_ptr(dest) as usize
}

struct Driver {
    config: ProberConfig,
    tls: Option<Arc<Certificates>>,
    local: SocketAddr,
    /// Listener sockets UDP probes leave from, with their addresses: only sent on, without
    /// waiting (reading one would take datagrams from a worker, and registering one with the
    /// reactor would wake this thread on each of them).
    egress: Vec<(std::net::UdpSocket, SocketAddr)>,
    /// [`probe_branch_prefix`] of this node.
    branch_prefix: String,
    /// Unique per prober: Call-IDs and branches of different runs never match.
    token: String,
    seq: u64,
    targets: Vec<Target>,
    in_flight: HashMap<String, InFlight>,
    busy: HashSet<usize>,
    reports: mpsc::UnboundedSender<Report>,
}

async fn run(
    socket: UdpSocket,
    egress: Vec<(std::net::UdpSocket, SocketAddr)>,
    mut replies: mpsc::Receiver<Bytes>,
    config: ProberConfig,
    tls: Option<Arc<Certificates>>,
    mut views: watch::Receiver<HealthView>,
) {
    let local = match socket.local_addr() {
        Ok(a) => a,
        Err(e) => {
            warn!(error = %e, "prober: socket has no local address; no probes");
            return;
        }
    };
    let (reports, mut inbox) = mpsc::unbounded_channel();
    let mut d = Driver {
        branch_prefix: probe_branch_prefix(config.node_id),
        config,
        tls,
        local,
        egress,
        token: token(local),
        seq: 0,
        targets: Vec::new(),
        in_flight: HashMap::new(),
        busy: HashSet::new(),
        reports,
    };
    let first = views.borrow_and_update().clone();
    d.set_view(first);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let now = Instant::now();
        d.tick(&socket, now).await;
        let wake = d.next_wake(now);
        tokio::select! {
            changed = views.changed() => {
                if changed.is_err() {
                    break; // the Prober was dropped
                }
                let view = views.borrow_and_update().clone();
                d.set_view(view);
            }
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, from)) => d.on_datagram(buf.get(..n).unwrap_or(&[]), from, Instant::now()),
                Err(e) => {
                    // An error queued on the socket (e.g. ICMP); do not spin on it.
                    debug!(error = %e, "prober: receive error");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            },
            Some(reply) = replies.recv() => d.on_datagram(&reply, local, Instant::now()),
            Some(report) = inbox.recv() => d.on_report(report, Instant::now()),
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }
    for f in d.in_flight.values() {
        if let Some(task) = &f.task {
            task.abort();
        }
    }
}

/// A token unique to this prober run (random keys of the standard hasher, the clock, the
/// socket).
fn token(local: SocketAddr) -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.write_u16(local.port());
    format!("{:012x}", h.finish() & 0xffff_ffff_ffff)
}

impl Driver {
    fn set_view(&mut self, view: HealthView) {
        // Destinations kept across the reload keep what the prober knows of them.
        let mut old: HashMap<usize, Target> =
            self.targets.drain(..).map(|t| (key(&t.dest), t)).collect();
        self.targets = view
            .iter()
            .map(|dest| {
                old.remove(&key(dest)).unwrap_or_else(|| Target {
                    addr: dest
                        .host()
                        .parse::<IpAddr>()
                        .ok()
                        .map(|ip| SocketAddr::new(ip, dest.port())),
                    via: None,
                    resolving: false,
                    dest: dest.clone(),
                })
            })
            .collect();
    }

    /// Everything due at `now`: timeouts, retransmissions, ends of holds, new probes.
    async fn tick(&mut self, socket: &UdpSocket, now: Instant) {
        let expired: Vec<String> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            if let Some(f) = self.in_flight.remove(&id) {
                if let Some(task) = f.task {
                    task.abort();
                }
                self.busy.remove(&key(&f.dest));
                trace!(destination = f.dest.name(), "probe timed out");
                f.dest.probe_timeout(now);
            }
        }
        let (t2, mut failed) = (self.config.t2, Vec::new());
        for (id, f) in self.in_flight.iter_mut() {
            let Some(r) = f.retransmit.as_mut().filter(|r| r.at <= now) else {
                continue;
            };
            let from = r
                .egress
                .and_then(|i| self.egress.get(i))
                .map_or(ProbeSocket::Own(socket), |(s, _)| ProbeSocket::Listener(s));
            if let Err(e) = send_probe(from, &r.bytes, r.to).await {
                failed.push((id.clone(), format!("cannot send to {}: {e}", r.to)));
                continue;
            }
            r.interval = (r.interval * 2).min(t2);
            r.at = now + r.interval;
            if r.at >= f.deadline {
                f.retransmit = None;
            }
        }
        for (id, error) in failed {
            self.fail(&id, &error, now);
        }
        for i in 0..self.targets.len() {
            let dest = self.targets[i].dest.clone();
            dest.poll(now);
            let due = dest.wants_probe().is_some_and(|t| t <= now);
            if due && !self.busy.contains(&key(&dest)) && !self.targets[i].resolving {
                self.start_probe(i, socket, now).await;
            }
        }
    }

    fn fail(&mut self, id: &str, error: &str, now: Instant) {
        if let Some(f) = self.in_flight.remove(id) {
            self.busy.remove(&key(&f.dest));
            f.dest.probe_error(error, now);
        }
    }

    async fn start_probe(&mut self, i: usize, socket: &UdpSocket, now: Instant) {
        let dest = self.targets[i].dest.clone();
        let Some(to) = self.targets[i].addr else {
            self.targets[i].resolving = true;
            let reports = self.reports.clone();
            let (host, port) = (dest.host().to_string(), dest.port());
            tokio::spawn(async move {
                let result = match tokio::net::lookup_host((host.as_str(), port)).await {
                    Ok(mut addrs) => addrs.next().ok_or_else(|| format!("{host} has no address")),
                    Err(e) => Err(format!("cannot resolve {host}: {e}")),
                };
                let _ = reports.send(Report::Resolved { dest, result });
            });
            return;
        };
        self.seq += 1;
        let seq = self.seq;
        let call_id = format!("psp-{}-{seq}", self.token);
        let branch = format!("{}{}-{seq}", self.branch_prefix, self.token);
        let cseq = (seq % u64::from(u32::MAX)) as u32 + 1;
        let deadline = now + dest.probe_timeout_setting();
        dest.probe_sent(now);
        trace!(destination = dest.name(), %to, "probe");
        match dest.transport() {
            TransportSpec::Udp => {
                let egress = self
                    .egress
                    .iter()
                    .position(|(_, local)| local.is_ipv4() == to.is_ipv4());
                let (from, local) = match egress.and_then(|e| self.egress.get(e)) {
                    Some((s, local)) => (ProbeSocket::Listener(s), *local),
                    None => (ProbeSocket::Own(socket), self.local),
                };
                let via = *self.targets[i]
                    .via
                    .get_or_insert_with(|| via_address(local, to));
                let bytes = options_request(
                    ProbeTarget {
                        host: dest.host(),
                        port: dest.port(),
                        transport: dest.transport(),
                        request_uri: dest.request_uri(),
                    },
                    ProbeIds {
                        via,
                        contact: egress.and(self.config.contact.as_deref()),
                        call_id: &call_id,
                        branch: &branch,
                        cseq,
                    },
                );
                if let Err(e) = send_probe(from, &bytes, to).await {
                    dest.probe_error(&format!("cannot send to {to}: {e}"), now);
                    return;
                }
                let first = now + self.config.t1;
                let retransmit = (first < deadline).then_some(Retransmit {
                    bytes,
                    to,
                    egress,
                    at: first,
                    interval: self.config.t1,
                });
                self.busy.insert(key(&dest));
                self.in_flight.insert(
                    call_id,
                    InFlight {
                        dest,
                        branch,
                        sent: now,
                        deadline,
                        retransmit,
                        task: None,
                    },
                );
            }
            transport @ (TransportSpec::Tcp | TransportSpec::Tls) => {
                let reports = self.reports.clone();
                let source = self.local.ip();
                let limits = self.config.limits.clone();
                let (host, port) = (dest.host().to_string(), dest.port());
                let request_uri = dest.request_uri().cloned();
                let (id, br) = (call_id.clone(), branch.clone());
                let tls = match transport {
                    TransportSpec::Tls => Some(self.tls.clone()),
                    _ => None,
                };
                let task = tokio::spawn(async move {
                    let result = tcp_probe(
                        source,
                        to,
                        &limits,
                        tls,
                        |via| {
                            options_request(
                                ProbeTarget {
                                    host: &host,
                                    port,
                                    transport,
                                    request_uri: request_uri.as_ref(),
                                },
                                ProbeIds {
                                    via,
                                    contact: None,
                                    call_id: &id,
                                    branch: &br,
                                    cseq,
                                },
                            )
                        },
                        &id,
                        &br,
                    )
                    .await;
                    let _ = reports.send(Report::Tcp {
                        call_id: id,
                        result,
                        at: Instant::now(),
                    });
                });
                self.busy.insert(key(&dest));
                self.in_flight.insert(
                    call_id,
                    InFlight {
                        dest,
                        branch,
                        sent: now,
                        deadline,
                        retransmit: None,
                        task: Some(task.abort_handle()),
                    },
                );
            }
        }
    }

    /// When the loop must look again: the earliest deadline, retransmission, probe or hold
    /// end, never in the past and at most [`MAX_SLEEP`] away.
    fn next_wake(&self, now: Instant) -> Instant {
        let mut wake = now + MAX_SLEEP;
        for f in self.in_flight.values() {
            wake = wake.min(f.deadline);
            if let Some(r) = &f.retransmit {
                wake = wake.min(r.at);
            }
        }
        for t in &self.targets {
            // A busy or resolving destination wakes the loop through its probe's deadline or
            // its report.
            if t.resolving || self.busy.contains(&key(&t.dest)) {
                continue;
            }
            if let Some(at) = t.dest.next_wakeup() {
                wake = wake.min(at);
            }
        }
        wake.max(now + Duration::from_millis(1))
    }

    fn on_datagram(&mut self, bytes: &[u8], from: SocketAddr, now: Instant) {
        if wire::is_keepalive(bytes) {
            return;
        }
        let m = match wire::scan(bytes, Framing::Datagram, &self.config.limits) {
            Ok(m) => m,
            Err(e) => {
                debug!(%from, error = %e, "prober: unreadable datagram dropped");
                return;
            }
        };
        let Ok(call_id) = std::str::from_utf8(m.slice(m.call_id)) else {
            return;
        };
        let Some(f) = self.in_flight.get(call_id) else {
            trace!(%from, "prober: reply to no probe in flight dropped");
            return;
        };
        let Some(code) = final_reply(&m, call_id, &f.branch) else {
            return; // provisional, or not ours
        };
        let call_id = call_id.to_string();
        if let Some(f) = self.in_flight.remove(&call_id) {
            self.busy.remove(&key(&f.dest));
            let rtt = now.saturating_duration_since(f.sent);
            f.dest.probe_reply(code, rtt, now);
        }
    }

    fn on_report(&mut self, report: Report, now: Instant) {
        match report {
            Report::Tcp {
                call_id,
                result,
                at,
            } => {
                let Some(f) = self.in_flight.remove(&call_id) else {
                    return; // timed out already
                };
                self.busy.remove(&key(&f.dest));
                match result {
                    Ok(code) => {
                        f.dest
                            .probe_reply(code, at.saturating_duration_since(f.sent), now);
                    }
                    Err(error) => {
                        f.dest.probe_error(&error, now);
                    }
                }
            }
            Report::Resolved { dest, result } => {
                let Some(t) = self
                    .targets
                    .iter_mut()
                    .find(|t| Arc::ptr_eq(&t.dest, &dest))
                else {
                    return; // no longer probed
                };
                t.resolving = false;
                match result {
                    Ok(addr) => t.addr = Some(addr),
                    Err(error) => {
                        dest.probe_sent(now);
                        dest.probe_error(&error, now);
                    }
                }
            }
        }
    }
}

/// The address to put in Via: the socket's, or when it is bound to a wildcard, the source
/// address the kernel picks for `to`.
fn via_address(local: SocketAddr, to: SocketAddr) -> SocketAddr {
    if !local.ip().is_unspecified() {
        return local;
    }
    let unspecified = SocketAddr::new(local.ip(), 0);
    let picked = std::net::UdpSocket::bind(unspecified)
        .and_then(|s| s.connect(to).and_then(|()| s.local_addr()))
        .map(|a| a.ip())
        .unwrap_or(local.ip());
    SocketAddr::new(picked, local.port())
}

/// One TCP probe: connect from `source`'s IP, send the request built for the connection's
/// local address, read until the final reply. `Err` says what went wrong.
/// One TCP probe, or a TLS one when `tls` is given (`Some(None)`: TLS without certificates,
/// which fails).
async fn tcp_probe(
    source: IpAddr,
    to: SocketAddr,
    limits: &Limits,
    tls: Option<Option<Arc<Certificates>>>,
    request: impl FnOnce(SocketAddr) -> Bytes,
    call_id: &str,
    branch: &str,
) -> Result<u16, String> {
    let socket = if to.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| format!("cannot open a TCP socket: {e}"))?;
    if !source.is_unspecified() && source.is_ipv4() == to.is_ipv4() {
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(|e| format!("cannot bind TCP to {source}: {e}"))?;
    }
    let stream = socket
        .connect(to)
        .await
        .map_err(|e| format!("cannot connect to {to}: {e}"))?;
    let local = stream
        .local_addr()
        .map_err(|e| format!("TCP connection to {to} has no local address: {e}"))?;
    match tls {
        None => exchange(stream, to, local, limits, request, call_id, branch).await,
        Some(None) => Err(format!("no TLS settings to reach {to}")),
        Some(Some(tls)) => {
            let stream = tls
                .connect(to, stream)
                .await
                .map_err(|e| format!("TLS handshake with {to} failed: {e}"))?;
            exchange(stream, to, local, limits, request, call_id, branch).await
        }
    }
}

/// Sends the OPTIONS on a connected stream and reads up to its final reply.
async fn exchange<S>(
    mut stream: S,
    to: SocketAddr,
    local: SocketAddr,
    limits: &Limits,
    request: impl FnOnce(SocketAddr) -> Bytes,
    call_id: &str,
    branch: &str,
) -> Result<u16, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream
        .write_all(&request(local))
        .await
        .map_err(|e| format!("cannot write to {to}: {e}"))?;
    stream
        .flush()
        .await
        .map_err(|e| format!("cannot write to {to}: {e}"))?;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("TCP read from {to} failed: {e}"))?;
        if n == 0 {
            return Err(format!("{to} closed the connection before a final reply"));
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
        loop {
            match wire::frame_stream(&buf, limits) {
                Ok(StreamFrame::Incomplete) => break,
                Ok(StreamFrame::Keepalive(n)) => {
                    buf.drain(..n.min(buf.len()));
                }
                Ok(StreamFrame::Message(n)) => {
                    let n = n.min(buf.len());
                    if let Ok(m) = wire::scan(&buf[..n], Framing::Stream, limits) {
                        if let Some(code) = final_reply(&m, call_id, branch) {
                            return Ok(code);
                        }
                    }
                    buf.drain(..n);
                }
                Err(e) => return Err(format!("unreadable reply from {to}: {e}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pointsman_protocol::wire;

    fn probe(
        host: &str,
        tp: TransportSpec,
        rw: Option<&RequestUri>,
        via: &str,
        contact: Option<&str>,
    ) -> String {
        let via: SocketAddr = via.parse().expect("addr");
        let bytes = options_request(
            ProbeTarget {
                host,
                port: 5060,
                transport: tp,
                request_uri: rw,
            },
            ProbeIds {
                via,
                contact,
                call_id: "psp-x-1",
                branch: "z9hG4bK-ps7-probe-x-1",
                cseq: 1,
            },
        );
        let m = wire::scan(&bytes, wire::Framing::Stream, &wire::Limits::default()).expect("scans");
        assert_eq!(m.method(), Some(wire::Method::Options));
        assert_eq!(m.slice(m.call_id), b"psp-x-1");
        assert_eq!(
            m.top_via.branch.map(|b| m.slice(b)),
            Some(&b"z9hG4bK-ps7-probe-x-1"[..])
        );
        assert_eq!(m.max_forwards, Some(70));
        assert!(m.from.tag.is_some() && m.to.tag.is_none());
        String::from_utf8(bytes.to_vec()).expect("text")
    }

    fn line<'a>(text: &'a str, name: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    }

    #[test]
    fn options_request_is_well_formed_sip_for_udp_tcp_and_ipv6() {
        let udp = probe("10.0.0.1", TransportSpec::Udp, None, "10.0.0.5:5060", None);
        assert_eq!(line(&udp, "OPTIONS"), "OPTIONS sip:10.0.0.1:5060 SIP/2.0");
        assert_eq!(line(&udp, "To:"), "To: <sip:10.0.0.1:5060>");
        assert_eq!(
            line(&udp, "Contact:"),
            "Contact: <sip:pointsman@10.0.0.5:5060>"
        );
        assert!(line(&udp, "User-Agent:").starts_with("User-Agent: pointsman/"));
        let tcp = probe(
            "2001:db8::1",
            TransportSpec::Tcp,
            None,
            "[2001:db8::5]:40001",
            None,
        );
        assert_eq!(
            line(&tcp, "OPTIONS"),
            "OPTIONS sip:[2001:db8::1]:5060;transport=tcp SIP/2.0"
        );
        assert_eq!(
            line(&tcp, "Contact:"),
            "Contact: <sip:pointsman@[2001:db8::5]:40001;transport=tcp>"
        );
        assert_eq!(
            line(&tcp, "From:"),
            "From: <sip:pointsman@[2001:db8::5]>;tag=1p"
        );
    }

    #[test]
    fn a_probe_names_the_destinations_own_host_and_the_node_as_advertised() {
        let rw = RequestUri {
            host: "sip.pstn.example.com".into(),
            port: Some(5061),
            user_prefix: Some("+".into()),
            params: vec![("tgrp".into(), Some("t-1".into()))],
        };
        let text = probe(
            "198.51.100.7",
            TransportSpec::Tls,
            Some(&rw),
            "192.0.2.10:40002",
            Some("sbc1.example.net:5061"),
        );
        // The FQDN in the Request-URI and To, as a cloud that routes by name expects; the
        // number prefix and parameters are for calls, not for a probe with no user part.
        assert_eq!(
            line(&text, "OPTIONS"),
            "OPTIONS sip:sip.pstn.example.com:5061;transport=tls SIP/2.0"
        );
        assert_eq!(line(&text, "To:"), "To: <sip:sip.pstn.example.com:5061>");
        assert_eq!(
            line(&text, "Contact:"),
            "Contact: <sip:pointsman@sbc1.example.net:5061;transport=tls>"
        );
        assert_eq!(
            line(&text, "From:"),
            "From: <sip:pointsman@sbc1.example.net>;tag=1p"
        );
        assert!(line(&text, "Via:").contains("192.0.2.10:40002"));
    }
}
