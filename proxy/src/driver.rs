//! The driver: runs the sans-IO core on real sockets and a real clock.
//!
//! N worker threads, each a single-threaded tokio runtime owning one SO_REUSEPORT UDP socket per
//! UDP listener, a timer wheel, and an inbox for what its TCP connections receive. A worker
//! feeds every message, timer and delivery failure to the shared [`Core`] with `Instant::now()`
//! and carries out the outputs in order. It also times each UDP datagram inside the node, from
//! the kernel's receive timestamp to the moment what it caused over UDP is handed to the kernel
//! (`pointsman_udp_transit_seconds`). Nothing here knows SIP.

use crate::cluster::PairLink;
use crate::config::{Config, ListenTransport, SchedulerSlice};
use crate::hep::{Capture, Hep};
use crate::node::Node;
use crate::sched::{self, SliceGovernor};
use crate::transport::media::MediaSockets;
use crate::transport::tcp::{self, Event, EventSink, Inbox, Tcp, TcpSettings};
use crate::transport::{udp, Peer, Proto};
use anyhow::{anyhow, Context};
use pointsman_protocol::media::MediaPlane;
use pointsman_protocol::wire::Framing;
use pointsman_protocol::TimerWheel;
use pointsman_protocol::{Core, CoreConfig, CoreTimer, Inbound, Output};
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Notify};
use tracing::{debug, info};

/// Timer resolution of the workers' wheels.
const TICK: Duration = Duration::from_millis(5);
/// Timers a worker fires before it lets its sockets be served.
const TIMERS_PER_TURN: usize = 256;
/// Largest datagram read.
const MAX_DATAGRAM: usize = 65_535;
/// Datagrams read per system call.
const BATCH: usize = 16;
/// Receive batches a worker handles before it lets its other tasks run: under a flood the
/// socket never drains, and the timers (failover among them) must still fire.
const BATCHES_PER_TURN: usize = 4;

/// Splits `host:port` (IPv6 in brackets) for Via and Record-Route.
fn split_advertise(advertise: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = advertise
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("node.advertise: expected host:port, got {advertise:?}"))?;
    let port = port
        .parse()
        .with_context(|| format!("node.advertise: bad port in {advertise:?}"))?;
    Ok((host.to_string(), port))
}

pub fn core_config(cfg: &Config) -> anyhow::Result<CoreConfig> {
    let (advertise_host, advertise_port) = split_advertise(&cfg.advertise)?;
    Ok(CoreConfig {
        node_id: cfg.node_id,
        advertise_host,
        advertise_port,
        tls_port: cfg
            .listeners
            .iter()
            .find(|l| l.transport == ListenTransport::Tls)
            .map(|l| l.address.port()),
        timers: cfg.timers,
        limits: cfg.limits.clone(),
        listeners: cfg.listeners.iter().map(|l| l.name.clone()).collect(),
        acls: cfg.listeners.iter().map(|l| l.acl.clone()).collect(),
        guard: cfg.guard.clone(),
        peers: cfg
            .cluster
            .as_ref()
            .map(|c| c.peers.iter().map(|p| p.id).collect())
            .unwrap_or_default(),
        topology_key: cfg.topology_key.clone(),
    })
}

/// The sockets of the listeners: each worker's UDP sockets, and the TCP/TLS listeners.
struct Bound {
    udp: Vec<Vec<(usize, std::net::UdpSocket)>>,
    tcp: Vec<(usize, std::net::TcpListener)>,
    /// Held while the process runs: no other process may serve these UDP addresses.
    claims: Vec<udp::Claim>,
}

/// Binds every listener, or fails naming the listener and its address. Another process that
/// holds a listener's address (a second pointsman, an old one still running) is an error, never
/// a share of the traffic: each UDP address is claimed for this process ([`udp::claim`]) before
/// the workers' SO_REUSEPORT group binds it; TCP listening sockets never share.
fn bind_listeners(cfg: &Config, workers: usize) -> anyhow::Result<Bound> {
    let mut bound = Bound {
        udp: (0..workers).map(|_| Vec::new()).collect(),
        tcp: Vec::new(),
        claims: Vec::new(),
    };
    for (index, l) in cfg.listeners.iter().enumerate() {
        match l.transport {
            ListenTransport::Udp => {
                let claim = udp::claim(l.address).with_context(|| {
                    format!(
                        "listen {}: cannot bind UDP {}: another process holds it (is pointsman \
                         already running?)",
                        l.name, l.address
                    )
                })?;
                bound.claims.push(claim);
                for sockets in bound.udp.iter_mut() {
                    let s = udp::bind(l.address).with_context(|| {
                        format!("listen {}: cannot bind UDP {}", l.name, l.address)
                    })?;
                    sockets.push((index, s));
                }
            }
            // A TLS listener is a TCP listener whose connections start with a handshake.
            ListenTransport::Tcp | ListenTransport::Tls => {
                let s = std::net::TcpListener::bind(l.address).with_context(|| {
                    format!(
                        "listen {}: cannot bind TCP {}: another process holds it (is pointsman \
                         already running?)",
                        l.name, l.address
                    )
                })?;
                s.set_nonblocking(true)?;
                bound.tcp.push((index, s));
            }
        }
    }
    Ok(bound)
}

/// What UDP probes leave from: of one worker's listener sockets, the first of each address
/// family, duplicated (the prober only sends on them).
fn probe_egress(
    sockets: &[(usize, std::net::UdpSocket)],
) -> anyhow::Result<Vec<std::net::UdpSocket>> {
    let mut egress = Vec::new();
    let mut families = Vec::new();
    for (_, s) in sockets {
        let v4 = s.local_addr()?.is_ipv4();
        if !families.contains(&v4) {
            families.push(v4);
            egress.push(
                s.try_clone()
                    .context("cannot share a listener socket with the prober")?,
            );
        }
    }
    Ok(egress)
}

/// Runs pointsman until SIGTERM or SIGINT stops it (see the `shutdown` module). Binds every
/// listener first, so an address in use is an error here, before anything else starts, rather
/// than a silent worker death. With `source`, SIGHUP (and `POST /reload`) reload the routing
/// from that file (see [`Node::reload`]).
pub fn run_with_reload(cfg: Config, source: Option<PathBuf>) -> anyhow::Result<()> {
    let signals = crate::shutdown::Signals::install()
        .context("cannot install the SIGTERM and SIGINT handlers")?;
    let workers = cfg.workers.max(1);
    let Bound {
        udp: udp_sockets,
        tcp: mut tcp_listeners,
        claims: _claims,
    } = bind_listeners(&cfg, workers)?;
    let egress = probe_egress(udp_sockets.first().map_or(&[][..], Vec::as_slice))?;
    let node = Node::start(&cfg, core_config(&cfg)?, source, egress)?;
    let probe_replies = node.probe_replies();
    // Where a stream leg's capture says it ended here: the advertised address.
    let stream_local = cfg
        .advertise
        .parse::<SocketAddr>()
        .ok()
        .or_else(|| cfg.listeners.first().map(|l| l.address))
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let core = node.core().clone();
    let media = match core.media() {
        Some(plane) => {
            let sockets = MediaSockets::bind(plane)?;
            // Before the media threads start: each takes a copy of the file-descriptor table,
            // which must hold the kernel relay's map.
            if cfg.media_kernel_relay {
                start_kernel_relay(plane, &cfg);
            }
            sockets.spawn(plane, workers)?;
            info!(
                ports = sockets.len(),
                threads = workers,
                "media relay listening"
            );
            Some(plane.clone())
        }
        None => None,
    };

    let mut runtimes = Vec::with_capacity(workers);
    let mut sinks = Vec::with_capacity(workers);
    let mut inboxes = Vec::with_capacity(workers);
    for _ in 0..workers {
        runtimes.push(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        );
        let (sink, inbox) = tcp::inbox();
        sinks.push(sink);
        inboxes.push(inbox);
    }
    // What the core decides off the workers (an operator ending a call) goes out through the
    // first worker.
    if let Some(first) = sinks.first() {
        node.set_executor(first.clone());
    }
    let tcp = Tcp::with_tls(
        TcpSettings {
            idle_timeout: cfg.tcp_idle_timeout,
            max_connections: cfg.tcp_max_connections,
            connect_timeout: cfg.tcp_connect_timeout,
            limits: cfg.limits.clone(),
        },
        sinks.clone(),
        runtimes.iter().map(|r| r.handle().clone()).collect(),
        Some(node.tls().clone()),
    );
    for l in &cfg.listeners {
        info!(listener = %l.name, transport = ?l.transport, address = %l.address, "listening");
    }

    let mut threads = Vec::with_capacity(workers);
    for (i, ((rt, inbox), sockets)) in runtimes
        .into_iter()
        .zip(inboxes)
        .zip(udp_sockets)
        .enumerate()
    {
        let core = core.clone();
        let tcp = tcp.clone();
        let sink = sinks[i].clone();
        let listeners = if i == 0 {
            std::mem::take(&mut tcp_listeners)
        } else {
            Vec::new()
        };
        let (realtime_priority, slice) = (cfg.realtime_priority, cfg.scheduler_slice);
        // The first worker hands the relay's timed events to the core.
        let media = media.clone().filter(|_| i == 0);
        let pair = node.pair_link();
        let probe_replies = probe_replies.clone();
        let hep = node.hep().map(|hep| (hep.clone(), stream_local));
        threads.push(
            std::thread::Builder::new()
                .name(format!("pointsman-w{i}"))
                .spawn(move || {
                    let governor = ask_scheduler(realtime_priority, slice);
                    let local = tokio::task::LocalSet::new();
                    local.block_on(
                        &rt,
                        worker(
                            core,
                            tcp,
                            sink,
                            inbox,
                            sockets,
                            listeners,
                            governor,
                            media,
                            pair,
                            probe_replies,
                            hep,
                            i,
                        ),
                    )
                })?,
        );
    }
    if let (Some(link), Some(runtime)) = (node.link(), node.link_runtime()) {
        crate::cluster::serve_link_events(
            runtime,
            link.clone(),
            core.clone(),
            sinks.clone(),
            crate::cluster::sync_bound(
                cfg.cluster
                    .as_ref()
                    .map_or(crate::link::DEFAULT_DEAD_AFTER, |c| c.dead_after),
            ),
        )?;
    }
    info!(node = cfg.node_id, workers, "pointsman running");
    // The workers are not joined: the process ends under them once the stop is decided.
    let ack_window = crate::shutdown::ack_window(cfg.timers.t1);
    signals.wait_and_stop(&node, cfg.shutdown_grace, ack_window, &threads)
}

/// Asks the kernel to serve the calling worker promptly (see [`sched`]): SCHED_FIFO when
/// configured, otherwise a short slice. Either may be refused; the worker runs regardless.
/// Returns the governor that keeps the slice short only while the worker is lightly loaded,
/// under `scheduler_slice = "auto"` on a kernel with per-task slices.
fn ask_scheduler(realtime_priority: u8, slice: SchedulerSlice) -> Option<SliceGovernor> {
    if realtime_priority > 0 {
        if let Err(e) = sched::set_realtime(realtime_priority) {
            tracing::warn!(
                priority = realtime_priority,
                error = %e,
                "node.realtime_priority: cannot run the worker under SCHED_FIFO \
                 (needs CAP_SYS_NICE); it runs under the normal scheduler"
            );
        } else {
            return None;
        }
    }
    let fixed = match slice {
        SchedulerSlice::Kernel => return None,
        SchedulerSlice::Auto => sched::AUTO_SLICE,
        SchedulerSlice::Fixed(slice) => slice,
    };
    match sched::set_slice(fixed) {
        Ok(Some(_)) => (slice == SchedulerSlice::Auto).then(|| SliceGovernor::new(Instant::now())),
        Ok(None) => {
            debug!("node.scheduler_slice: this kernel has no per-task slices (6.12+)");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "node.scheduler_slice: cannot set the worker's slice");
            None
        }
    }
}

/// Counts a receive batch towards the worker's load and, under `scheduler_slice = "auto"`,
/// gives the short slice back or takes it again when the load crosses a threshold.
fn govern_slice(w: &Worker, now: Instant, datagrams: usize) {
    let mut governor = w.slice_governor.borrow_mut();
    let Some(change) = governor.as_mut().and_then(|g| g.observe(now, datagrams)) else {
        return;
    };
    debug!(
        ?change,
        "node.scheduler_slice = \"auto\": the worker's load crossed a threshold"
    );
    if let Err(e) = sched::set_slice(change.slice()) {
        tracing::warn!(error = %e, "node.scheduler_slice: cannot change the worker's slice; it keeps the one it has");
        *governor = None;
    }
}

/// What the tasks of one worker share.
struct Worker {
    core: Arc<Core>,
    tcp: Arc<Tcp>,
    sink: EventSink,
    udp: Vec<Rc<UdpSocket>>,
    /// The address of each of `udp` (read once: `local_addr` is a system call).
    udp_local: Vec<SocketAddr>,
    /// HEP capture, when `[hep]` is configured.
    hep: Option<HepTap>,
    wheel: RefCell<TimerWheel<CoreTimer>>,
    /// When the timer task sleeps until (`None`: until a timer is armed).
    wake_at: Cell<Option<Instant>>,
    /// Wakes the timer task: a timer was armed before `wake_at`.
    timer_added: Notify,
    /// Datagrams to send, in order, at the next [`flush_udp`]: everything the core says while
    /// handling one receive batch leaves in a few `sendmmsg` calls.
    outbox: RefCell<Vec<(SocketAddr, bytes::Bytes)>>,
    /// Datagrams ever queued in `outbox`: tells whether handling a message sent anything.
    queued: Cell<u64>,
    /// Under `scheduler_slice = "auto"`: which slice this worker's load calls for.
    slice_governor: RefCell<Option<SliceGovernor>>,
    /// The node link, when this node is one of a pair.
    pair: Option<PairLink>,
    /// The prober's inbox for replies to its probes.
    probe_replies: mpsc::Sender<bytes::Bytes>,
    /// This worker's index (its confirmations come back to it by it).
    index: usize,
    /// What the core said after a call state the peers must confirm, held until they do, by
    /// confirmation number.
    held: RefCell<std::collections::BTreeMap<u64, Held>>,
    /// Wakes [`confirm_wait_loop`] when it has nothing held to wait on.
    held_added: Notify,
    /// Confirmation numbers used so far.
    confirms: Cell<u64>,
    /// When the kernel took the datagram being handled (since the Unix epoch), if known: a
    /// datagram handed to another node carries it.
    receiving: Cell<Option<Duration>>,
}

/// What a worker captures for HEP with: the switch and queue, and the address a stream leg's
/// capture names as this node's end (a UDP leg's is its socket's, `Worker::udp_local`).
struct HepTap {
    hep: Arc<Hep>,
    stream_local: SocketAddr,
}

impl HepTap {
    /// A message that crossed the node's edge: `from` → `to` over UDP or a stream.
    fn capture(
        &self,
        from: SocketAddr,
        to: SocketAddr,
        stream: bool,
        payload: impl FnOnce() -> bytes::Bytes,
    ) {
        self.hep.capture(|| Capture {
            at: SystemTime::now(),
            src: from,
            dst: to,
            stream,
            payload: payload(),
        });
    }

    /// This node's end of a leg to or from `peer`: the socket [`socket_for`] picks for UDP.
    fn local(&self, w: &Worker, peer: Peer) -> SocketAddr {
        match peer.proto {
            Proto::Udp => w
                .udp_local
                .get(udp_index(w, peer.addr))
                .copied()
                .unwrap_or(self.stream_local),
            Proto::Tcp | Proto::Tls => self.stream_local,
        }
    }
}

/// How often the first worker asks the media plane for timed events (media inactivity).
const MEDIA_POLL: Duration = Duration::from_millis(50);

#[allow(clippy::too_many_arguments)] // one call site, each argument a part of the worker
async fn worker(
    core: Arc<Core>,
    tcp: Arc<Tcp>,
    sink: EventSink,
    mut inbox: Inbox,
    sockets: Vec<(usize, std::net::UdpSocket)>,
    listeners: Vec<(usize, std::net::TcpListener)>,
    slice_governor: Option<SliceGovernor>,
    media: Option<Arc<MediaPlane>>,
    pair: Option<PairLink>,
    probe_replies: mpsc::Sender<bytes::Bytes>,
    hep: Option<(Arc<Hep>, SocketAddr)>,
    index: usize,
) {
    let mut udp_sockets = Vec::new();
    let mut udp_local = Vec::new();
    let mut udp_listener = Vec::new();
    for (index, s) in sockets {
        let local = s
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        match UdpSocket::from_std(s) {
            Ok(s) => {
                udp_sockets.push(Rc::new(s));
                udp_local.push(local);
                udp_listener.push(index);
            }
            Err(e) => tracing::error!(error = %e, "cannot register UDP socket"),
        }
    }
    let w = Rc::new(Worker {
        core,
        tcp: tcp.clone(),
        sink,
        udp: udp_sockets,
        udp_local,
        hep: hep.map(|(hep, stream_local)| HepTap { hep, stream_local }),
        wheel: RefCell::new(TimerWheel::new(Instant::now(), TICK, 4096)),
        wake_at: Cell::new(None),
        timer_added: Notify::new(),
        outbox: RefCell::new(Vec::with_capacity(udp::SEND_BATCH)),
        queued: Cell::new(0),
        slice_governor: RefCell::new(slice_governor),
        pair,
        probe_replies,
        index,
        held: RefCell::new(std::collections::BTreeMap::new()),
        held_added: Notify::new(),
        confirms: Cell::new(0),
        receiving: Cell::new(None),
    });
    for (index, l) in listeners {
        match tokio::net::TcpListener::from_std(l) {
            Ok(l) => {
                tokio::spawn(tcp.clone().accept_loop(l, index));
            }
            Err(e) => tracing::error!(error = %e, "cannot register TCP listener"),
        }
    }
    for (sock, index) in w.udp.iter().zip(udp_listener) {
        tokio::task::spawn_local(udp_loop(w.clone(), sock.clone(), index));
    }
    tokio::task::spawn_local(timer_loop(w.clone()));
    if w.pair.is_some() {
        tokio::task::spawn_local(confirm_wait_loop(w.clone()));
    }
    if let Some(plane) = media {
        tokio::task::spawn_local(media_poll_loop(w.clone(), plane));
    }
    let mut out = Vec::new();
    while let Some(ev) = inbox.recv().await {
        let now = Instant::now();
        match ev {
            Event::Message {
                bytes,
                from,
                listener,
            } => {
                if let Some(tap) = &w.hep {
                    tap.capture(from.addr, tap.local(&w, from), true, || bytes.clone());
                }
                w.core.on_message(
                    Inbound {
                        bytes: &bytes,
                        from,
                        framing: Framing::Stream,
                        listener,
                        overloaded: false,
                        relayed: false,
                    },
                    now,
                    &mut out,
                )
            }
            Event::Undelivered(key) => w.core.on_delivery_failure(key, now, &mut out),
            Event::Confirmed(seqs) => {
                for seq in seqs {
                    confirmed(&w, seq, 1);
                }
            }
            Event::SettleStale { owner, restarted } => {
                w.core
                    .settle_stale_replicas(owner, restarted, now, &mut out);
            }
            Event::Execute(outputs) => out.extend(outputs),
            Event::PeerDown => {
                let waiting: Vec<u64> = w.held.borrow().keys().copied().collect();
                for seq in waiting {
                    confirmed(&w, seq, usize::MAX);
                }
            }
            Event::Relayed {
                bytes,
                from,
                listener,
                received,
            } => {
                let queued = w.queued.get();
                w.core.on_message(
                    Inbound {
                        bytes: &bytes,
                        from: Peer::udp(from),
                        framing: Framing::Datagram,
                        listener,
                        overloaded: false,
                        relayed: true,
                    },
                    now,
                    &mut out,
                );
                execute(&w, &mut out);
                flush_udp(&w);
                if let (Some(at), Some(pair), true) = (received, &w.pair, w.queued.get() != queued)
                {
                    pair.record_handover(at);
                }
            }
        }
        execute(&w, &mut out);
        flush_udp(&w);
    }
}

async fn udp_loop(w: Rc<Worker>, sock: Rc<UdpSocket>, listener: usize) {
    // Batched receive: recvmmsg through quinn-udp, up to BATCH datagrams a system call.
    let state = match quinn_udp::UdpSocketState::new((&*sock).into()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot set up batched UDP receive");
            return;
        }
    };
    let fd = udp::raw_fd(&sock);
    udp::disable_gro(fd);
    let mut storage = vec![0u8; BATCH * MAX_DATAGRAM];
    let mut errbuf = vec![0u8; MAX_DATAGRAM];
    let mut metas = [quinn_udp::RecvMeta::default(); BATCH];
    let mut out = Vec::new();
    // An ICMP report lands on whichever socket of the SO_REUSEPORT group the kernel's hash
    // picks, not always the one that sent the datagram, and it signals EPOLLERR, not
    // EPOLLIN: so every worker waits for errors as well as datagrams.
    let interest = tokio::io::Interest::READABLE | tokio::io::Interest::ERROR;
    loop {
        if sock.ready(interest).await.is_err() {
            continue;
        }
        let mut batches = 0;
        loop {
            batches += 1;
            if batches % BATCHES_PER_TURN == 0 {
                tokio::task::yield_now().await;
            }
            // ICMP reports first: each names a datagram we sent that bounced. Reading through
            // try_io clears the error readiness once the queue is empty.
            while let Ok((_, n)) = sock.try_io(tokio::io::Interest::ERROR, || {
                udp::recv_error(fd, &mut errbuf)
            }) {
                w.core
                    .on_udp_unreachable(&errbuf[..n], Instant::now(), &mut out);
                execute(&w, &mut out);
            }
            flush_udp(&w);
            let received = {
                let mut chunks = storage.chunks_mut(MAX_DATAGRAM);
                let mut iovs: [std::io::IoSliceMut<'_>; BATCH] = std::array::from_fn(|_| {
                    std::io::IoSliceMut::new(chunks.next().unwrap_or_default())
                });
                sock.try_io(tokio::io::Interest::READABLE, || {
                    state.recv((&*sock).into(), &mut iovs, &mut metas)
                })
            };
            let n = match received {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // A pending ICMP report surfaced as the receive's error: drain and go on.
                Err(e) if udp::is_icmp_error(&e) => continue,
                Err(e) => {
                    debug!(error = %e, "UDP receive failed");
                    break;
                }
            };
            let now = Instant::now();
            govern_slice(&w, now, n);
            // A full batch with the queue still filling: this worker is behind.
            let overloaded = n == BATCH
                && udp::backlog(fd)
                    .is_some_and(|fill| fill > w.core.config().guard.overload_backlog);
            // Kernel receive times of the datagrams that made the node send something.
            let mut answered: smallvec::SmallVec<[Duration; BATCH]> = smallvec::SmallVec::new();
            for (i, meta) in metas.iter().take(n).enumerate() {
                let start = i * MAX_DATAGRAM;
                let datagram = &storage[start..start + meta.len.min(MAX_DATAGRAM)];
                if let Some(tap) = &w.hep {
                    let local = tap.local(&w, Peer::udp(meta.addr));
                    tap.capture(meta.addr, local, false, || {
                        bytes::Bytes::copy_from_slice(datagram)
                    });
                }
                let queued = w.queued.get();
                w.receiving.set(meta.timestamp);
                w.core.on_message(
                    Inbound {
                        bytes: datagram,
                        from: Peer::udp(meta.addr),
                        framing: Framing::Datagram,
                        listener,
                        overloaded,
                        relayed: false,
                    },
                    now,
                    &mut out,
                );
                execute(&w, &mut out);
                w.receiving.set(None);
                if let Some(received) = meta.timestamp.filter(|_| w.queued.get() != queued) {
                    answered.push(received);
                }
            }
            // Taken once per batch, and only when some datagram made the node send.
            let sending = (!answered.is_empty()).then(SystemTime::now);
            flush_udp(&w);
            if let Some(sending) = sending {
                record_transit(&w.core, sending, &answered);
            }
        }
    }
}

/// Records each datagram's time inside the node: from its kernel receive timestamp (wall clock,
/// since the Unix epoch) to `sending`. A datagram stamped after `sending` (the wall clock
/// stepped back) is left out.
fn record_transit(core: &Core, sending: SystemTime, received: &[Duration]) {
    let Ok(sending) = sending.duration_since(UNIX_EPOCH) else {
        return;
    };
    core.record_udp_transits(received.iter().filter_map(|at| sending.checked_sub(*at)));
}

/// Hands the media plane's timed events (an answered call whose media stopped) to the core.
async fn media_poll_loop(w: Rc<Worker>, plane: Arc<MediaPlane>) {
    let mut tick = tokio::time::interval(MEDIA_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut events, mut out) = (Vec::new(), Vec::new());
    loop {
        tick.tick().await;
        let now = Instant::now();
        plane.poll(now, &mut events);
        for event in events.drain(..) {
            w.core.on_media_event(event, now, &mut out);
            execute(&w, &mut out);
        }
        flush_udp(&w);
    }
}

async fn timer_loop(w: Rc<Worker>) {
    let mut fired = Vec::new();
    let mut out = Vec::new();
    loop {
        let next = w.wheel.borrow().next_due();
        w.wake_at.set(next);
        match next {
            Some(at) => {
                let _ = tokio::time::timeout_at(at.into(), w.timer_added.notified()).await;
            }
            None => w.timer_added.notified().await,
        }
        let mut now = Instant::now();
        w.wheel.borrow_mut().expire(now, &mut fired);
        for (i, t) in fired.drain(..).enumerate() {
            w.core.on_timer(t, now, &mut out);
            execute(&w, &mut out);
            if i % TIMERS_PER_TURN == TIMERS_PER_TURN - 1 {
                // Coalesced timers come in bursts (thousands per 100 ms at high load): serve
                // the sockets between slices rather than hold every message behind them.
                flush_udp(&w);
                tokio::task::yield_now().await;
                now = Instant::now();
            }
        }
        // A catch-up after a stall can fire a great many at once: do not keep that room.
        fired.shrink_to(1024);
        flush_udp(&w);
    }
}

/// Carries out the core's outputs in order. Datagrams queue in the outbox; a TCP send first
/// flushes it, so a CANCEL queued for UDP never falls behind an INVITE sent over TCP. A call
/// state the peers must confirm holds every output after it until they do ([`confirmed`]), or
/// [`crate::cluster::CONFIRM_WAIT`] passes.
fn execute(w: &Rc<Worker>, out: &mut Vec<Output>) {
    let mut outputs = out.drain(..);
    while let Some(o) = outputs.next() {
        match o {
            Output::Send { to, bytes, report } => {
                if let Some(tap) = &w.hep {
                    let stream = to.proto != Proto::Udp;
                    tap.capture(tap.local(w, to), to.addr, stream, || bytes.clone());
                }
                match to.proto {
                    Proto::Udp => {
                        w.outbox.borrow_mut().push((to.addr, bytes));
                        w.queued.set(w.queued.get() + 1);
                    }
                    Proto::Tcp | Proto::Tls => {
                        flush_udp(w);
                        w.tcp.send(to, bytes, report, &w.sink)
                    }
                }
            }
            Output::ProbeReply { bytes } => {
                if w.probe_replies.try_send(bytes).is_err() {
                    debug!(
                        "the prober's inbox is full: a probe reply dropped (the probe times out)"
                    );
                }
            }
            Output::ToNode {
                node,
                bytes,
                from,
                listener,
            } => {
                if let Some(pair) = &w.pair {
                    pair.to_owner(node, &bytes, from, listener, w.receiving.get());
                }
            }
            Output::Replicate {
                call_id,
                state,
                confirm,
            } => {
                let Some(pair) = &w.pair else { continue };
                let seq = confirm.then(|| {
                    let n = w.confirms.get() + 1;
                    w.confirms.set(n);
                    crate::cluster::confirm_seq(w.index, n)
                });
                let asked = pair.replicate(&call_id, state.as_deref(), seq);
                if let (Some(seq), true) = (seq, asked > 0) {
                    let rest: Vec<Output> = outputs.by_ref().collect();
                    let held = Held {
                        awaited: asked,
                        asked: Instant::now(),
                        rest,
                    };
                    w.held.borrow_mut().insert(seq, held);
                    w.held_added.notify_one();
                }
            }
            Output::Timer { at, timer } => {
                let due = w
                    .wheel
                    .borrow_mut()
                    .insert_coalesced(at, timer.slack(), timer);
                // The timer task sleeps until its earliest deadline: wake it to sleep less.
                if w.wake_at.get().is_none_or(|wake| due < wake) {
                    w.wake_at.set(Some(due));
                    w.timer_added.notify_one();
                }
            }
        }
    }
}

/// Releases what waited on a confirmation for [`crate::cluster::CONFIRM_WAIT`]: one task for
/// all of them, asleep until the oldest one's deadline (confirmation numbers grow with time,
/// so the first held is the oldest), not a timer for each.
async fn confirm_wait_loop(w: Rc<Worker>) {
    let unconfirmed = metrics::counter!("pointsman_cluster_unconfirmed_total");
    loop {
        let oldest = w
            .held
            .borrow()
            .first_key_value()
            .map(|(seq, h)| (*seq, h.asked));
        match oldest {
            None => w.held_added.notified().await,
            Some((seq, asked)) => {
                tokio::time::sleep_until((asked + crate::cluster::CONFIRM_WAIT).into()).await;
                if w.held.borrow().contains_key(&seq) {
                    unconfirmed.increment(1);
                    confirmed(&w, seq, usize::MAX);
                    flush_udp(&w);
                }
            }
        }
    }
}

/// The outputs after a call state the peers must confirm, waiting for them.
struct Held {
    /// Confirmations still awaited.
    awaited: usize,
    /// When they were asked.
    asked: Instant,
    /// What the core said after it, in order.
    rest: Vec<Output>,
}

/// `count` confirmations of `seq` came (`usize::MAX`: stop waiting): once none is awaited, what
/// was held is carried out, its datagrams queued for the caller's [`flush_udp`] (so the releases
/// of one `Confirmed` leave in one batch).
fn confirmed(w: &Rc<Worker>, seq: u64, count: usize) {
    let release = {
        let mut held = w.held.borrow_mut();
        match held.get_mut(&seq) {
            Some(h) if h.awaited > count => {
                h.awaited -= count;
                None
            }
            Some(_) => held.remove(&seq).map(|h| {
                if count != usize::MAX {
                    if let Some(pair) = &w.pair {
                        pair.record_confirmed(h.asked);
                    }
                }
                h.rest
            }),
            None => None,
        }
    };
    if let Some(mut rest) = release {
        execute(w, &mut rest);
    }
}

/// Sends the queued datagrams in order: runs of one address family go out together in one
/// `sendmmsg`; a datagram the kernel refuses in a batch is retried alone by [`send_udp`].
fn flush_udp(w: &Rc<Worker>) {
    let queued = std::mem::take(&mut *w.outbox.borrow_mut());
    let mut rest = &queued[..];
    while let Some((first, _)) = rest.first() {
        let v4 = first.is_ipv4();
        let run = rest
            .iter()
            .take(udp::SEND_BATCH)
            .take_while(|(to, _)| to.is_ipv4() == v4)
            .count();
        let Some(sock) = socket_for(w, *first) else {
            debug!(to = %first, "no UDP socket to send from");
            rest = &rest[run..];
            continue;
        };
        let batch: smallvec::SmallVec<[(SocketAddr, &[u8]); udp::SEND_BATCH]> =
            rest[..run].iter().map(|(to, b)| (*to, &b[..])).collect();
        match udp::send_batch(udp::raw_fd(&sock), &batch) {
            Ok(n) if n > 0 => rest = &rest[n..],
            _ => {
                let (to, bytes) = &rest[0];
                send_udp(w, *to, bytes.clone());
                rest = &rest[1..];
            }
        }
    }
    // Keep the allocation for the next batch.
    let mut queued = queued;
    queued.clear();
    let mut outbox = w.outbox.borrow_mut();
    if outbox.is_empty() {
        *outbox = queued;
    }
}

/// The worker's socket for datagrams to `to` (same address family), or its first one.
fn socket_for(w: &Rc<Worker>, to: SocketAddr) -> Option<Rc<UdpSocket>> {
    w.udp.get(udp_index(w, to)).cloned()
}

/// Which of the worker's UDP sockets datagrams to `to` leave from: the first of its address
/// family, or the first one.
fn udp_index(w: &Worker, to: SocketAddr) -> usize {
    w.udp_local
        .iter()
        .position(|a| a.is_ipv4() == to.is_ipv4())
        .unwrap_or(0)
}

fn send_udp(w: &Rc<Worker>, to: SocketAddr, bytes: bytes::Bytes) {
    let Some(sock) = socket_for(w, to) else {
        debug!(%to, "no UDP socket to send from");
        return;
    };
    for _ in 0..2 {
        match sock.try_send_to(&bytes, to) {
            Ok(_) => return,
            // A pending ICMP report of an earlier datagram surfaced here; it is in the error
            // queue too, so just send again.
            Err(e) if udp::is_icmp_error(&e) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                tokio::task::spawn_local(async move {
                    let _ = sock.send_to(&bytes, to).await;
                });
                return;
            }
            Err(e) => {
                debug!(%to, error = %e, "UDP send failed");
                return;
            }
        }
    }
}

/// `media.kernel_relay`: attaches the kernel relay to the interfaces of the media addresses and
/// hands it to the plane. A relay that cannot start leaves every packet to the relay's threads,
/// as without the setting, and says why once: calls never depend on it.
fn start_kernel_relay(plane: &Arc<MediaPlane>, cfg: &Config) {
    use crate::transport::kernel_relay::{interfaces_holding, KernelRelay};
    let Some(media) = &cfg.media else {
        return;
    };
    let started = interfaces_holding(&[media.carrier_ip, media.cloud_ip]).and_then(|names| {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        KernelRelay::attach(&refs).map(|relay| (relay, names))
    });
    match started {
        Ok((relay, interfaces)) => {
            plane.hand_over_to(Arc::new(relay));
            info!(
                interfaces = interfaces.join(","),
                "media: answered calls' RTP is forwarded in the kernel"
            );
        }
        Err(e) => tracing::warn!(
            "media.kernel_relay: {e}; the relay's threads forward every packet instead"
        ),
    }
}
