//! The node link: one mutual-TLS QUIC connection to each other node of the pair (issue 18),
//! carrying typed [`Frame`]s both ways and reporting peers up and down.
//!
//! - **One endpoint per node**, bound on the node's unicast link address. Of two nodes, the one
//!   with the lower node id dials (and redials, with [`backoff::Backoff`]); the other accepts.
//! - **Trust and identity.** Both sides present their certificate and verify the other's chain
//!   against the link CA (TLS 1.3, ALPN `pointsman-link/4`). The dialer also checks that the
//!   acceptor's certificate carries the IP address it dials. The peer is identified by the
//!   `Hello { node_id }` it sends as its first frame: the acceptor takes only a configured peer
//!   with a lower id. Any holder of a certificate from the link CA can therefore claim any id:
//!   the CA must sign the pair's nodes and nothing else.
//! - **A second path.** A peer may have a `backup` address (the link on a dedicated interconnect,
//!   its backup over the SIP network): when the connection goes silent, the dialer dials the
//!   other path at once, and for [`path_grace`] neither side reports the peer down; a connection
//!   over the other path within it is reported up again (the consumer resyncs), with no down in
//!   between, so a cut interconnect is not mistaken for a dead peer. A dead peer is then
//!   reported `dead_after` + [`path_grace`] after it went quiet. A dialer on the backup path
//!   tries the first one every [`FAILBACK`] and moves back when it answers. Bind the endpoint
//!   where both paths reach it (`0.0.0.0:port`), and put both addresses in the node's
//!   certificate.
//! - **Dead peers.** QUIC keep-alives every `dead_after / 5` and an idle timeout of `dead_after`
//!   less one keep-alive interval (quinn restarts the idle timer once more on the first packet
//!   sent after the last one received): a silent peer is declared down about `dead_after` after
//!   it went quiet; a peer that closes is declared down at once. The consumer must keep draining [`Link::events`]: a full event
//!   queue stalls the reading side (QUIC flow control then stalls the peer's sending side, and
//!   its queue drops).
//! - **Frames** go on one long-lived reliable uni stream per direction, length-prefixed
//!   ([`wire`]); a received frame over the bound closes the connection with a reason.
//! - **Sending never waits** ([`Link::send`]): a bounded queue per peer; a frame that finds the
//!   peer down or its queue full is dropped, counted, and the peer marked unsynced. A connection
//!   that ends after taking frames off the queue marks it unsynced too (they may have been in
//!   flight).
//!
//! It must not know what a call is: it moves frames and says who is reachable, nothing more.

pub mod backoff;
pub mod wire;

#[cfg(test)]
mod tests;

use backoff::Backoff;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{
    AckFrequencyConfig, Connection, ConnectionError, Endpoint, IdleTimeout, RecvStream, SendStream,
    TransportConfig,
};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
pub use wire::{Frame, FrameError, DEFAULT_MAX_FRAME};

/// ALPN of the node link: a link of another protocol version fails the handshake.
pub const ALPN: &[u8] = b"pointsman-link/4";
/// Default `[cluster] dead_after`.
pub const DEFAULT_DEAD_AFTER: Duration = Duration::from_secs(1);
/// Default frames queued per peer before [`Link::send`] drops.
pub const DEFAULT_QUEUE: usize = 1024;
/// Frames written to a peer's stream at once, at most.
const WRITE_BATCH: usize = 64;
/// Ack-eliciting packets the peer may take before it must acknowledge at once (QUIC's ACK
/// frequency extension; QUIC's own default is 1, an acknowledgement for every second packet).
/// Past this or the ack delay it acknowledges; loss detection is unchanged.
const ACK_ELICITING_THRESHOLD: u32 = 16;
/// Default `[cluster] batch`: how long a frame waits for others to share its packet. Every
/// write costs both nodes wake-ups (the writer's, the reader's, then a worker's for the
/// confirmation), so under load the link's CPU follows writes per second, not calls: at 1,000
/// calls/s replication adds about 50 % CPU a call at 1 ms, 36 % at 2 ms, 23 % at 4 ms and 15 %
/// at 8 ms (BENCHMARKS.md, "The pair"). 4 ms holds a new branch or an answer a few
/// milliseconds, small beside a cloud's round trip.
pub const DEFAULT_BATCH: Duration = Duration::from_millis(4);
/// How often a dialer connected over a peer's backup path tries its first path again.
pub const FAILBACK: Duration = Duration::from_secs(2);
/// Events buffered for the consumer of [`Link::events`].
const EVENT_QUEUE: usize = 4096;

/// QUIC application close codes.
const CLOSE_SHUTDOWN: u32 = 0;
const CLOSE_FRAME_TOO_LARGE: u32 = 1;
const CLOSE_BAD_FRAME: u32 = 2;
const CLOSE_REPLACED: u32 = 3;

/// Another node of the pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerAddr {
    pub id: u16,
    pub address: SocketAddr,
    /// The peer over a second path (see the module's **A second path**).
    pub backup: Option<SocketAddr>,
}

/// What a [`Link`] needs, validated by the config loader (or built by a test).
#[derive(Clone, Debug)]
pub struct LinkConfig {
    pub node_id: u16,
    pub listen: SocketAddr,
    pub peers: Vec<PeerAddr>,
    pub dead_after: Duration,
    /// Frames queued per peer.
    pub queue: usize,
    /// Bound on one received frame (bytes after the length prefix).
    pub max_frame: usize,
    /// How long a frame (a replica, a confirmation) waits for others to share its packet; a
    /// datagram handed to its owner never waits. Zero: each frame goes at once.
    pub batch: Duration,
}

/// The node's identity on the link and the CA its peers must chain to.
#[derive(Debug)]
pub struct LinkTls {
    pub certs: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub roots: Arc<RootCertStore>,
}

impl LinkTls {
    /// Reads the PEM files of `[cluster] cert`, `key` and `ca`.
    pub fn load(
        cert: &Path,
        key: &Path,
        ca: &Path,
    ) -> Result<Self, crate::transport::tls::TlsError> {
        use crate::transport::tls::{load_certs, load_key, load_roots};
        Ok(LinkTls {
            certs: load_certs(cert, "cluster.cert")?,
            key: load_key(key, "cluster.key")?,
            roots: load_roots(ca, "cluster.ca")?,
        })
    }
}

/// Why a link could not start.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("link TLS: {0}")]
    Tls(String),
    #[error("cannot bind the link on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Why a peer went down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DownReason {
    /// The peer closed the connection (its reason text).
    Closed(String),
    /// Nothing heard from the peer for `dead_after`.
    TimedOut,
    /// The peer sent a frame over the bound; we closed.
    FrameTooLarge { len: usize },
    /// The peer sent something that is not a frame; we closed.
    BadFrame(String),
    /// A newer connection from the same peer took this one's place.
    Replaced,
    /// Anything else the connection died of (reset, transport error).
    Lost(String),
}

impl DownReason {
    /// The `reason` label of `pointsman_link_deaths_total`.
    pub fn label(&self) -> &'static str {
        match self {
            DownReason::Closed(_) => "closed",
            DownReason::TimedOut => "timeout",
            DownReason::FrameTooLarge { .. } => "frame_too_large",
            DownReason::BadFrame(_) => "bad_frame",
            DownReason::Replaced => "replaced",
            DownReason::Lost(_) => "lost",
        }
    }

    fn of(error: ConnectionError) -> Self {
        match error {
            ConnectionError::TimedOut => DownReason::TimedOut,
            ConnectionError::ApplicationClosed(close)
                if close.error_code == CLOSE_REPLACED.into() =>
            {
                DownReason::Replaced
            }
            ConnectionError::ApplicationClosed(close) => {
                DownReason::Closed(String::from_utf8_lossy(&close.reason).into_owned())
            }
            ConnectionError::ConnectionClosed(close) => {
                DownReason::Closed(String::from_utf8_lossy(&close.reason).into_owned())
            }
            other => DownReason::Lost(other.to_string()),
        }
    }
}

/// What the link tells its consumer, in order per peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    Up(u16),
    Down(u16, DownReason),
    Frame(u16, Frame),
}

/// Why [`Link::send`] did not queue a frame (it was dropped and counted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("no such peer")]
    UnknownPeer,
    #[error("peer is down")]
    Down,
    #[error("peer's queue is full")]
    Full,
}

/// One peer's side of the shared state: its queue's sending end and its flags.
struct PeerState {
    id: u16,
    label: String,
    /// Its address, then its backup address, if any.
    paths: Vec<SocketAddr>,
    /// The index in `paths` of the connection up now (`usize::MAX`: none, or not told).
    path: std::sync::atomic::AtomicUsize,
    queue: mpsc::Sender<Frame>,
    /// Cuts the writer's batch short: a frame that must not wait was queued.
    urgent: tokio::sync::Notify,
    up: AtomicBool,
    /// Set when a frame for the peer was dropped: the consumer must resynchronise it.
    unsynced: AtomicBool,
    dropped: AtomicU64,
    /// Frames taken off its queue for its connections so far.
    taken: AtomicU64,
    /// Its series' handles, registered on first use (a lookup per frame costs more than the
    /// count).
    series: std::sync::OnceLock<PeerSeries>,
}

struct PeerSeries {
    frames_in: metrics::Counter,
    frames_out: metrics::Counter,
    sent_bytes: metrics::Counter,
    queue: metrics::Gauge,
}

impl PeerState {
    fn new(peer: &PeerAddr, queue: mpsc::Sender<Frame>) -> Self {
        PeerState {
            id: peer.id,
            label: peer.id.to_string(),
            paths: std::iter::once(peer.address).chain(peer.backup).collect(),
            path: std::sync::atomic::AtomicUsize::new(usize::MAX),
            queue,
            urgent: tokio::sync::Notify::new(),
            up: AtomicBool::new(false),
            unsynced: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            series: std::sync::OnceLock::new(),
        }
    }

    fn series(&self) -> &PeerSeries {
        self.series.get_or_init(|| PeerSeries {
            frames_in: metrics::counter!("pointsman_link_frames_total", "peer" => self.label.clone(), "direction" => "in"),
            frames_out: metrics::counter!("pointsman_link_frames_total", "peer" => self.label.clone(), "direction" => "out"),
            sent_bytes: metrics::counter!("pointsman_link_sent_bytes_total", "peer" => self.label.clone()),
            queue: metrics::gauge!("pointsman_link_queue", "peer" => self.label.clone()),
        })
    }

    /// Queues a frame without waiting; drops and counts it otherwise. Only a frame that must
    /// not wait wakes the writer while it gathers a batch.
    fn offer(&self, frame: Frame) -> Result<(), SendError> {
        if !self.up.load(Ordering::Acquire) {
            self.drop_frames(1);
            return Err(SendError::Down);
        }
        let urgent = frame.is_urgent();
        match self.queue.try_send(frame) {
            Ok(()) => {
                if urgent {
                    self.urgent.notify_one();
                }
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.drop_frames(1);
                Err(SendError::Full)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.drop_frames(1);
                Err(SendError::Down)
            }
        }
    }

    fn drop_frames(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
        self.unsynced.store(true, Ordering::Release);
        metrics::counter!("pointsman_link_dropped_total", "peer" => self.label.clone())
            .increment(n);
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Release);
        metrics::gauge!("pointsman_link_up", "peer" => self.label.clone()).set(if up {
            1.0
        } else {
            0.0
        });
    }

    /// `frames` frames of `bytes` in all went out, `queued` more wait behind them.
    fn count_sent(&self, frames: usize, bytes: usize, queued: usize) {
        let s = self.series();
        s.frames_out.increment(frames as u64);
        s.sent_bytes.increment(bytes as u64);
        s.queue.set(queued as f64);
    }

    fn count_received(&self) {
        self.series().frames_in.increment(1);
    }
}

/// What every task of the link shares.
struct Shared {
    node_id: u16,
    epoch: u64,
    dead_after: Duration,
    max_frame: usize,
    batch: Duration,
    endpoint: Endpoint,
    events: mpsc::Sender<LinkEvent>,
}

/// A connection that said `Hello` on its stream.
struct Established {
    connection: Connection,
    recv: RecvStream,
    /// The dialer's stream, which already carried its `Hello`; the acceptor opens its own.
    send: Option<SendStream>,
}

/// The node's link to the other nodes of its pair. Dropping it closes every connection.
pub struct Link {
    shared: Arc<Shared>,
    peers: HashMap<u16, Arc<PeerState>>,
    events: Mutex<Option<mpsc::Receiver<LinkEvent>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Link {
    /// Binds the endpoint and starts dialing (peers with a higher id) and accepting (peers with
    /// a lower id). Must be called inside a tokio runtime.
    pub fn start(config: LinkConfig, tls: LinkTls) -> Result<Link, LinkError> {
        describe_metrics();
        let (server, client) = quic_configs(&config, tls)?;
        let mut endpoint =
            Endpoint::server(server, config.listen).map_err(|source| LinkError::Bind {
                addr: config.listen,
                source,
            })?;
        endpoint.set_default_client_config(client);
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let shared = Arc::new(Shared {
            node_id: config.node_id,
            epoch,
            dead_after: config.dead_after,
            max_frame: config.max_frame,
            batch: config.batch,
            endpoint,
            events: events_tx,
        });
        let mut peers = HashMap::new();
        let mut accepting = HashMap::new();
        let mut tasks = Vec::new();
        for peer in &config.peers {
            if peer.id == config.node_id {
                continue;
            }
            let (queue_tx, queue_rx) = mpsc::channel(config.queue.max(1));
            let state = Arc::new(PeerState::new(peer, queue_tx));
            state.set_up(false);
            let incoming = if peer.id < config.node_id {
                let (tx, rx) = mpsc::channel(4);
                accepting.insert(peer.id, tx);
                Some(rx)
            } else {
                None
            };
            tasks.push(tokio::spawn(peer_task(
                shared.clone(),
                state.clone(),
                queue_rx,
                incoming,
            )));
            peers.insert(peer.id, state);
        }
        tasks.push(tokio::spawn(accept_loop(shared.clone(), accepting)));
        Ok(Link {
            shared,
            peers,
            events: Mutex::new(Some(events_rx)),
            tasks,
        })
    }

    /// The events, once (the first call takes the receiver).
    pub fn events(&self) -> Option<mpsc::Receiver<LinkEvent>> {
        self.events.lock().ok().and_then(|mut e| e.take())
    }

    /// Queues a frame for a peer without waiting. On `Err` the frame was dropped, counted in
    /// `pointsman_link_dropped_total`, and the peer marked unsynced.
    pub fn send(&self, peer: u16, frame: Frame) -> Result<(), SendError> {
        self.peers
            .get(&peer)
            .ok_or(SendError::UnknownPeer)?
            .offer(frame)
    }

    /// This node's run: set when the link started, different after a restart.
    pub fn epoch(&self) -> u64 {
        self.shared.epoch
    }

    /// Whether the peer's connection is up (its `Up` was sent, its `Down` not yet).
    pub fn is_up(&self, peer: u16) -> bool {
        self.peers
            .get(&peer)
            .is_some_and(|p| p.up.load(Ordering::Acquire))
    }

    /// Frames dropped for the peer so far.
    pub fn dropped(&self, peer: u16) -> u64 {
        self.peers
            .get(&peer)
            .map_or(0, |p| p.dropped.load(Ordering::Relaxed))
    }

    /// Whether frames were dropped for the peer since the mark was last cleared.
    pub fn is_unsynced(&self, peer: u16) -> bool {
        self.peers
            .get(&peer)
            .is_some_and(|p| p.unsynced.load(Ordering::Acquire))
    }

    /// Whether frames were dropped for the peer since the last call (which clears the mark).
    pub fn take_unsynced(&self, peer: u16) -> bool {
        self.peers
            .get(&peer)
            .is_some_and(|p| p.unsynced.swap(false, Ordering::AcqRel))
    }

    /// The peer's address the link to it runs over now (its address or its backup), when up.
    pub fn path(&self, peer: u16) -> Option<SocketAddr> {
        let state = self.peers.get(&peer)?;
        if !state.up.load(Ordering::Acquire) {
            return None;
        }
        state.paths.get(state.path.load(Ordering::Acquire)).copied()
    }

    /// The address the endpoint is bound on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.shared.endpoint.local_addr()
    }

    /// Closes every connection (peers see a clean close at once) and waits, at most
    /// `dead_after`, for the close to be sent.
    pub async fn shutdown(self) {
        self.shared
            .endpoint
            .close(CLOSE_SHUTDOWN.into(), b"shutdown");
        for task in &self.tasks {
            task.abort();
        }
        let _ =
            tokio::time::timeout(self.shared.dead_after, self.shared.endpoint.wait_idle()).await;
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.shared
            .endpoint
            .close(CLOSE_SHUTDOWN.into(), b"shutdown");
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Describes the link's series on whatever recorder is installed (the exporter's, in a node).
fn describe_metrics() {
    metrics::describe_gauge!(
        "pointsman_link_up",
        "1 while the node link to this peer (its node id) is up, 0 while it is down"
    );
    metrics::describe_counter!(
        "pointsman_link_frames_total",
        "Frames carried on the node link, by peer and direction (in, out)"
    );
    metrics::describe_counter!(
        "pointsman_link_sent_bytes_total",
        "Bytes of frames sent to a peer (length prefixes included, QUIC's own overhead not)"
    );
    metrics::describe_gauge!(
        "pointsman_link_queue",
        "Frames waiting to be sent to a peer (the replication lag, in frames)"
    );
    metrics::describe_counter!(
        "pointsman_link_dropped_total",
        "Frames for a peer dropped because it was down or its queue full (the peer is then unsynced)"
    );
    metrics::describe_counter!(
        "pointsman_link_deaths_total",
        "Connections to a peer that ended, by reason (closed, timeout, frame_too_large, \
         bad_frame, replaced, lost); one replaced in time over another path or by a newer one \
         counts too, though the peer was never down"
    );
}

fn quic_configs(
    config: &LinkConfig,
    tls: LinkTls,
) -> Result<(quinn::ServerConfig, quinn::ClientConfig), LinkError> {
    let tls_err = |e: &dyn std::fmt::Display| LinkError::Tls(e.to_string());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(tls.roots.clone(), provider.clone())
        .build()
        .map_err(|e| tls_err(&e))?;
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_err(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(tls.certs.clone(), tls.key.clone_key())
        .map_err(|e| tls_err(&e))?;
    server.alpn_protocols = vec![ALPN.to_vec()];
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_err(&e))?
        .with_root_certificates(tls.roots)
        .with_client_auth_cert(tls.certs, tls.key)
        .map_err(|e| tls_err(&e))?;
    client.alpn_protocols = vec![ALPN.to_vec()];

    let transport = Arc::new(transport_config(config.dead_after)?);
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(
        QuicServerConfig::try_from(server).map_err(|e| tls_err(&e))?,
    ));
    server.transport_config(transport.clone());
    let mut client = quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(client).map_err(|e| tls_err(&e))?,
    ));
    client.transport_config(transport);
    Ok((server, client))
}

/// Keep-alives five times per `dead_after`, so only a silent peer reaches the idle timeout; the
/// idle timeout is `dead_after` less one keep-alive interval, because quinn restarts its idle
/// timer once more on the first keep-alive sent after the last packet received: a silent peer
/// is then declared down `dead_after` after it went quiet, not a keep-alive later.
fn transport_config(dead_after: Duration) -> Result<TransportConfig, LinkError> {
    let mut transport = TransportConfig::default();
    let keep_alive = dead_after / 5;
    let idle = IdleTimeout::try_from(dead_after.saturating_sub(keep_alive))
        .map_err(|e| LinkError::Tls(format!("dead_after {dead_after:?}: {e}")))?;
    transport.max_idle_timeout(Some(idle));
    transport.keep_alive_interval(Some(keep_alive));
    // The link has one uni stream per direction and no bidirectional ones.
    transport.max_concurrent_bidi_streams(0u32.into());
    transport.max_concurrent_uni_streams(1u32.into());
    // The peer acknowledges in the packets it sends anyway (a `Confirmed`, its own frames) or
    // within its ack delay, not with a packet of its own for every second one received: under
    // load those acknowledgements were half the packets, and each woke this node's link thread.
    let mut acks = AckFrequencyConfig::default();
    acks.ack_eliciting_threshold(ACK_ELICITING_THRESHOLD.into());
    transport.ack_frequency_config(Some(acks));
    Ok(transport)
}

/// How long the `Hello` exchange may take on a fresh connection.
fn hello_timeout(shared: &Shared) -> Duration {
    shared.dead_after * 2
}

/// Accepts connections, reads their `Hello`, and hands each to its peer's task.
async fn accept_loop(shared: Arc<Shared>, accepting: HashMap<u16, mpsc::Sender<Established>>) {
    let accepting = Arc::new(accepting);
    while let Some(incoming) = shared.endpoint.accept().await {
        let shared = shared.clone();
        let accepting = accepting.clone();
        tokio::spawn(async move {
            let Ok(Ok(connection)) = tokio::time::timeout(hello_timeout(&shared), incoming).await
            else {
                return;
            };
            match tokio::time::timeout(hello_timeout(&shared), read_hello(&shared, &connection))
                .await
            {
                Ok(Ok((node_id, recv))) => match accepting.get(&node_id) {
                    Some(peer) => {
                        let _ = peer
                            .send(Established {
                                connection,
                                recv,
                                send: None,
                            })
                            .await;
                    }
                    None => {
                        tracing::warn!(node_id, "link: refused a node that is not a lower-id peer");
                        connection.close(CLOSE_BAD_FRAME.into(), b"not a peer that dials");
                    }
                },
                Ok(Err(reason)) => close_for(&connection, &reason),
                Err(_) => connection.close(CLOSE_BAD_FRAME.into(), b"no hello"),
            }
        });
    }
}

/// Waits for the peer's stream and its first frame, which must be `Hello`.
async fn read_hello(
    shared: &Shared,
    connection: &Connection,
) -> Result<(u16, RecvStream), DownReason> {
    let mut recv = connection.accept_uni().await.map_err(DownReason::of)?;
    match wire::read_frame(&mut recv, shared.max_frame).await {
        Ok(Some(Frame::Hello { node_id, .. })) => Ok((node_id, recv)),
        Ok(Some(_)) => Err(DownReason::BadFrame("first frame is not hello".into())),
        Ok(None) => Err(DownReason::BadFrame("stream ended before hello".into())),
        Err(e) => Err(frame_reason(e)),
    }
}

fn frame_reason(error: FrameError) -> DownReason {
    match error {
        FrameError::TooLarge { len, .. } => DownReason::FrameTooLarge { len },
        FrameError::Decode(e) => DownReason::BadFrame(e.to_string()),
        FrameError::Packed(e) => DownReason::BadFrame(e),
        FrameError::Io(e) => DownReason::Lost(e.to_string()),
    }
}

/// Closes a connection we give up on, telling the peer why.
fn close_for(connection: &Connection, reason: &DownReason) {
    match reason {
        DownReason::FrameTooLarge { .. } => {
            connection.close(CLOSE_FRAME_TOO_LARGE.into(), b"frame too large")
        }
        DownReason::BadFrame(_) => connection.close(CLOSE_BAD_FRAME.into(), b"bad frame"),
        DownReason::Replaced => connection.close(CLOSE_REPLACED.into(), b"replaced"),
        _ => {}
    }
}

/// How long, after a connection to a peer with two paths went silent, the other path has to
/// bring a new one before the peer is reported down: the two sides notice the silence up to a
/// keep-alive interval apart, and a handshake on a LAN takes a few milliseconds.
pub fn path_grace(dead_after: Duration) -> Duration {
    dead_after / 2
}

/// Dials a higher-id peer at `address` and exchanges `Hello`s.
async fn dial(
    shared: &Shared,
    peer: &PeerState,
    address: SocketAddr,
) -> Result<Established, String> {
    let server_name = address.ip().to_string();
    let connecting = shared
        .endpoint
        .connect(address, &server_name)
        .map_err(|e| e.to_string())?;
    let connection = connecting.await.map_err(|e| e.to_string())?;
    let exchange = async {
        let (node_id, recv) = read_hello(shared, &connection).await?;
        if node_id != peer.id {
            return Err(DownReason::BadFrame(format!(
                "expected node {}, it says {node_id}",
                peer.id
            )));
        }
        Ok(recv)
    };
    // Our Hello first: the acceptor waits for it before it answers.
    let mut send = connection.open_uni().await.map_err(|e| e.to_string())?;
    send_hello(shared, &mut send).await?;
    match tokio::time::timeout(hello_timeout(shared), exchange).await {
        Ok(Ok(recv)) => Ok(Established {
            connection,
            recv,
            send: Some(send),
        }),
        Ok(Err(reason)) => {
            close_for(&connection, &reason);
            Err(format!("{reason:?}"))
        }
        Err(_) => {
            connection.close(CLOSE_BAD_FRAME.into(), b"no hello");
            Err("no hello".into())
        }
    }
}

async fn send_hello(shared: &Shared, send: &mut SendStream) -> Result<(), String> {
    let hello = wire::encode(&Frame::Hello {
        node_id: shared.node_id,
        epoch: shared.epoch,
    })
    .map_err(|e| e.to_string())?;
    send.write_all(&hello).await.map_err(|e| e.to_string())
}

/// One peer's life: obtain a connection (dial, or take the accepted one), report it up, carry
/// frames until it dies, report it down; again.
async fn peer_task(
    shared: Arc<Shared>,
    peer: Arc<PeerState>,
    mut queue: mpsc::Receiver<Frame>,
    mut incoming: Option<mpsc::Receiver<Established>>,
) {
    let mut backoff = Backoff::default();
    let mut next: Option<Established> = None;
    // The path dialed: the next one after a failure.
    let mut path = 0;
    loop {
        let established = match (next.take(), incoming.as_mut()) {
            (Some(established), _) => established,
            (None, Some(incoming)) => match incoming.recv().await {
                Some(established) => established,
                None => return,
            },
            (None, None) => match dial(&shared, &peer, peer.paths[path]).await {
                Ok(established) => established,
                Err(e) => {
                    path = (path + 1) % peer.paths.len();
                    let delay = backoff.next_delay();
                    tracing::debug!(peer = peer.id, error = %e, ?delay, "link: dial failed");
                    tokio::time::sleep(delay).await;
                    continue;
                }
            },
        };
        backoff.reset();
        let connection = established.connection.clone();
        // The path it runs over: the peer's address it answers from (the one dialed, or the
        // dialer's source: its link port, or at least its address).
        let remote = connection.remote_address();
        let on = peer
            .paths
            .iter()
            .position(|p| *p == remote)
            .or_else(|| peer.paths.iter().position(|p| p.ip() == remote.ip()));
        if let Some(on) = on {
            path = on;
        }
        peer.path.store(on.unwrap_or(usize::MAX), Ordering::Release);
        // A frame offered while the peer was going down can still be queued: it belongs to the
        // old connection's state, so it is dropped (and counted) rather than sent on this one.
        discard_queued(&peer, &mut queue);
        peer.set_up(true);
        tracing::info!(peer = peer.id, "link: peer up");
        let _ = shared.events.send(LinkEvent::Up(peer.id)).await;
        // A newer connection takes this one's place: the peer's (accepting side), or the first
        // path's once it answers again (dialing side, on the backup path).
        let taken_before = peer.taken.load(Ordering::Relaxed);
        let on_backup = path != 0;
        let (reason, replacement) = {
            let failback_dialing = AtomicBool::new(false);
            let newer = async {
                match incoming.as_mut() {
                    Some(incoming) => incoming.recv().await,
                    None if on_backup => loop {
                        tokio::time::sleep(FAILBACK).await;
                        failback_dialing.store(true, Ordering::Relaxed);
                        let first = dial(&shared, &peer, peer.paths[0]).await;
                        failback_dialing.store(false, Ordering::Relaxed);
                        if let Ok(first) = first {
                            tracing::info!(peer = peer.id, "link: back on the first path");
                            break Some(first);
                        }
                    },
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(newer);
            let ended = carry(&shared, &peer, established, &mut queue, newer.as_mut()).await;
            peer.set_up(false);
            match ended {
                // The old connection ended (the peer closed it for the new one, or it went
                // silent) while the first path's dial was under way: that dial is the
                // replacement if it finishes. (A finished dial would have ended `carry`.)
                (_, None) if failback_dialing.load(Ordering::Relaxed) => {
                    match tokio::time::timeout(hello_timeout(&shared), newer).await {
                        Ok(Some(first)) => (DownReason::Replaced, Some(first)),
                        _ => ended,
                    }
                }
                ended => ended,
            }
        };
        if peer.taken.load(Ordering::Relaxed) != taken_before {
            // What was taken for it may still have been queued or in flight: the peer may not
            // have it.
            peer.unsynced.store(true, Ordering::Release);
        }
        close_for(&connection, &reason);
        // Frames queued for a dead connection are not delivered: count them and mark unsynced.
        discard_queued(&peer, &mut queue);
        metrics::counter!("pointsman_link_deaths_total", "peer" => peer.label.clone(), "reason" => reason.label())
            .increment(1);
        // A newer connection is here already (the peer redialed, maybe over its other path), or
        // the other path brings one in time: the peer never went away.
        next = match replacement {
            Some(newer) => Some(newer),
            None if reason == DownReason::TimedOut && peer.paths.len() > 1 => {
                path = (path + 1) % peer.paths.len();
                other_path(&shared, &peer, peer.paths[path], incoming.as_mut()).await
            }
            None => None,
        };
        if next.is_some() {
            tracing::warn!(
                peer = peer.id,
                ?reason,
                "link: connection lost, peer still reached"
            );
            continue;
        }
        tracing::warn!(peer = peer.id, ?reason, "link: peer down");
        let _ = shared.events.send(LinkEvent::Down(peer.id, reason)).await;
    }
}

/// After a silent connection: a new one within [`path_grace`], dialed over `address` (the other
/// path) or accepted from the peer.
async fn other_path(
    shared: &Shared,
    peer: &PeerState,
    address: SocketAddr,
    incoming: Option<&mut mpsc::Receiver<Established>>,
) -> Option<Established> {
    let grace = path_grace(shared.dead_after);
    match incoming {
        Some(incoming) => tokio::time::timeout(grace, incoming.recv())
            .await
            .ok()
            .flatten(),
        None => match tokio::time::timeout(grace, dial(shared, peer, address)).await {
            Ok(Ok(established)) => Some(established),
            _ => None,
        },
    }
}

fn discard_queued(peer: &PeerState, queue: &mut mpsc::Receiver<Frame>) {
    let mut stale = 0;
    while queue.try_recv().is_ok() {
        stale += 1;
    }
    if stale > 0 {
        peer.drop_frames(stale);
    }
}

/// What a link's writer does before its next write.
#[derive(Clone, Copy)]
enum Next {
    /// Nothing was written last time: wait for a frame, which goes at once.
    Wait,
    /// Frames keep coming: gather for the batch, cut short by a frame that must not wait.
    Gather,
    /// The last write took a full batch: more wait, and go at once.
    Drain,
}

/// Carries frames both ways on an established connection until it dies, or `newer` brings the
/// connection that takes its place (the peer's newer one, or the first path's again).
async fn carry(
    shared: &Shared,
    peer: &PeerState,
    established: Established,
    queue: &mut mpsc::Receiver<Frame>,
    newer: std::pin::Pin<&mut impl std::future::Future<Output = Option<Established>>>,
) -> (DownReason, Option<Established>) {
    let Established {
        connection,
        mut recv,
        send,
    } = established;
    let reader = async {
        loop {
            match wire::read_frame(&mut recv, shared.max_frame).await {
                Ok(Some(Frame::Hello { .. })) => {
                    return DownReason::BadFrame("hello after the first frame".into())
                }
                Ok(Some(Frame::Packed { len, lz4 })) => {
                    let frames = match wire::unpack(len, &lz4, shared.max_frame) {
                        Ok(frames) => frames,
                        Err(e) => return frame_reason(e),
                    };
                    for frame in frames {
                        peer.count_received();
                        let _ = shared.events.send(LinkEvent::Frame(peer.id, frame)).await;
                    }
                }
                Ok(Some(frame)) => {
                    peer.count_received();
                    let _ = shared.events.send(LinkEvent::Frame(peer.id, frame)).await;
                }
                Ok(None) => return DownReason::Closed("stream finished".into()),
                Err(FrameError::Io(_)) => {
                    // The stream died with the connection: its close says why.
                    return DownReason::of(connection.closed().await);
                }
                Err(e) => return frame_reason(e),
            }
        }
    };
    let writer = async {
        let mut send = match send {
            Some(send) => send,
            None => {
                let mut send = match connection.open_uni().await {
                    Ok(send) => send,
                    Err(e) => return DownReason::of(e),
                };
                if send_hello(shared, &mut send).await.is_err() {
                    return DownReason::of(connection.closed().await);
                }
                send
            }
        };
        // Frames go out in batches under load: the first frame after a quiet spell wakes the
        // writer and goes at once; then the writer gathers for `batch` without being woken
        // again (the queue is not watched: a replica or a confirmation costs the worker no
        // wake-up of this thread), writes what came in one go, and gathers again while frames
        // keep coming. A frame that must not wait (a datagram for its owner, confirmations)
        // cuts the gathering short. Under load a batch is a packet and a system call for many
        // calls instead of a few for each.
        let mut frames = Vec::with_capacity(WRITE_BATCH);
        let mut bytes = Vec::new();
        let mut next = Next::Wait;
        loop {
            match next {
                Next::Wait => {
                    if queue.recv_many(&mut frames, WRITE_BATCH).await == 0 {
                        break;
                    }
                }
                Next::Gather if !shared.batch.is_zero() => {
                    tokio::select! {
                        biased;
                        _ = peer.urgent.notified() => {}
                        _ = tokio::time::sleep(shared.batch) => {}
                    }
                }
                Next::Gather | Next::Drain => {}
            }
            while frames.len() < WRITE_BATCH {
                match queue.try_recv() {
                    Ok(frame) => frames.push(frame),
                    Err(_) => break,
                }
            }
            if frames.is_empty() {
                next = Next::Wait;
                continue;
            }
            next = if frames.len() == WRITE_BATCH {
                Next::Drain
            } else {
                Next::Gather
            };
            // Counted as taken at once: a frame off the queue is lost if the connection ends
            // before it is written.
            peer.taken.fetch_add(frames.len() as u64, Ordering::Relaxed);
            bytes.clear();
            let mut sent = 0;
            for frame in frames.drain(..) {
                match wire::encode(&frame) {
                    Ok(encoded) => {
                        bytes.extend_from_slice(&encoded);
                        sent += 1;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "link: frame does not encode; dropped");
                        peer.drop_frames(1);
                    }
                }
            }
            let packed = wire::pack(&bytes, shared.max_frame);
            let out = packed.as_deref().unwrap_or(&bytes);
            if send.write_all(out).await.is_err() {
                return DownReason::of(connection.closed().await);
            }
            peer.count_sent(sent, out.len(), queue.len());
        }
        DownReason::Lost("link dropped".into())
    };
    tokio::select! {
        reason = reader => (reason, None),
        reason = writer => (reason, None),
        error = connection.closed() => (DownReason::of(error), None),
        newer = newer => match newer {
            Some(newer) => (DownReason::Replaced, Some(newer)),
            None => (DownReason::Lost("link dropped".into()), None),
        },
    }
}
