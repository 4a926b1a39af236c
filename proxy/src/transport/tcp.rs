//! TCP and TLS: accepted and outbound connections, framed by Content-Length
//! (`wire::frame_stream`), reused for every message to the same peer (and transport), closed when
//! idle, capped in number (TCP and TLS together).
//!
//! A connection is a reader task (frames → the worker that owns the connection) and a writer
//! task (queued messages → socket). An outbound connection is registered before it connects, so
//! messages queue behind the connect; if the connect, the TLS handshake or a write fails, every
//! queued message that asked for it is reported back as a delivery failure (a branch failure to
//! the core). TLS is another stream type under the same reader and writer: the handshake
//! ([`super::tls::Certificates`]) runs in the connection's task, bounded by the handshake
//! timeout, before the first byte is read or written.
//!
//! Memory stays bounded whatever the peers do: a connection hands its messages to its worker
//! through a bounded inbox and waits when it is full (so it stops reading, and TCP flow control
//! slows the peer down), and at most [`OUTGOING_PER_CONN`] messages wait to be written to a
//! connection (past that, one whose peer does not read, a message is reported undelivered at
//! once, which fails its branch over).

use super::tls::Certificates;
use super::{ConnId, Peer, Proto};
use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use pointsman_protocol::transaction::TxKey;
use pointsman_protocol::wire::{self, Limits, StreamFrame};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// What a connection hands to the worker that owns it.
#[derive(Debug)]
pub(crate) enum Event {
    /// A whole message.
    Message {
        bytes: Bytes,
        from: Peer,
        listener: usize,
    },
    /// A message sent with this report key was not delivered.
    Undelivered(TxKey),
    /// A datagram that landed on the other node of the pair, handed over because its call is
    /// this node's.
    Relayed {
        bytes: Bytes,
        from: SocketAddr,
        listener: usize,
        /// When the other node's kernel took it (since the Unix epoch), if known.
        received: Option<std::time::Duration>,
    },
    /// The other node has the call states sent with these sequence numbers (this worker's,
    /// from one `Confirmed` frame): what waited on them goes out, in one batch of datagrams.
    Confirmed(Vec<u64>),
    /// A node of the pair went down: nothing waits on it any longer.
    PeerDown,
    /// Node `owner` finished its snapshot: settle the replicas it did not refresh (adopt them
    /// when it `restarted`).
    SettleStale { owner: u16, restarted: bool },
    /// What the core decided outside a worker (an operator's end of a call, on the admin
    /// thread): carried out like the outputs of any message.
    Execute(Vec<pointsman_protocol::Output>),
}

/// Received messages a worker's inbox holds before its connections wait.
pub(crate) const INBOX_MESSAGES: usize = 1024;
/// Messages that may wait to be written to one connection.
pub(crate) const OUTGOING_PER_CONN: usize = 1024;

/// Where connection events go: the owning worker's [`Inbox`]. Messages through a bounded queue
/// ([`INBOX_MESSAGES`]); delivery failures through an unbounded one, which cannot grow past the
/// messages queued for writing (at most [`OUTGOING_PER_CONN`] per connection).
#[derive(Clone, Debug)]
pub(crate) struct EventSink {
    messages: mpsc::Sender<Event>,
    failures: mpsc::UnboundedSender<Event>,
}

impl EventSink {
    /// Hands a received message to the worker, waiting while its inbox is full. False when the
    /// worker is gone.
    async fn deliver(&self, event: Event) -> bool {
        self.messages.send(event).await.is_ok()
    }

    /// Hands an event to the worker unless its inbox is full (then false: dropped).
    pub(crate) fn try_deliver(&self, event: Event) -> bool {
        self.messages.try_send(event).is_ok()
    }

    /// Hands the core's outputs to the worker to carry out, ahead of the messages waiting
    /// (through the unbounded queue: an operator's action is rare and must not be dropped by a
    /// full inbox). False when the worker is gone.
    pub(crate) fn execute(&self, outputs: Vec<pointsman_protocol::Output>) -> bool {
        self.failures.send(Event::Execute(outputs)).is_ok()
    }
}

/// A worker's side of its [`EventSink`].
#[derive(Debug)]
pub(crate) struct Inbox {
    messages: mpsc::Receiver<Event>,
    failures: mpsc::UnboundedReceiver<Event>,
}

impl Inbox {
    /// The next event, delivery failures first; `None` once every sink is gone.
    pub(crate) async fn recv(&mut self) -> Option<Event> {
        tokio::select! {
            biased;
            Some(e) = self.failures.recv() => Some(e),
            Some(e) = self.messages.recv() => Some(e),
            else => None,
        }
    }
}

/// A worker's inbox and the sink its connections (and its own sends) report to.
pub(crate) fn inbox() -> (EventSink, Inbox) {
    let (messages, messages_rx) = mpsc::channel(INBOX_MESSAGES);
    let (failures, failures_rx) = mpsc::unbounded_channel();
    (
        EventSink { messages, failures },
        Inbox {
            messages: messages_rx,
            failures: failures_rx,
        },
    )
}

struct Outgoing {
    bytes: Bytes,
    report: Option<TxKey>,
    /// Where its delivery failure is reported (the sender's worker).
    failures: mpsc::UnboundedSender<Event>,
}

struct Conn {
    queue: mpsc::Sender<Outgoing>,
}

#[derive(Clone, Debug)]
pub(crate) struct TcpSettings {
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub connect_timeout: Duration,
    pub limits: Limits,
}

/// Every live TCP and TLS connection, by id and by transport and remote address.
pub(crate) struct Tcp {
    settings: TcpSettings,
    conns: DashMap<ConnId, Conn>,
    by_addr: DashMap<(Proto, SocketAddr), ConnId>,
    /// Certificates and trust for TLS listeners and TLS peers (`None`: no TLS at all).
    tls: Option<Arc<Certificates>>,
    next_id: AtomicU64,
    open: AtomicUsize,
    /// One sink per worker; connection `id` belongs to worker `id % len`.
    workers: Vec<EventSink>,
    runtimes: Vec<tokio::runtime::Handle>,
}

impl Tcp {
    #[cfg(test)]
    pub(crate) fn new(
        settings: TcpSettings,
        workers: Vec<EventSink>,
        runtimes: Vec<tokio::runtime::Handle>,
    ) -> Arc<Tcp> {
        Tcp::with_tls(settings, workers, runtimes, None)
    }

    /// The connection table; it also serves TLS listeners and reaches TLS peers with `tls`
    /// (`None`: plain TCP only).
    pub(crate) fn with_tls(
        settings: TcpSettings,
        workers: Vec<EventSink>,
        runtimes: Vec<tokio::runtime::Handle>,
        tls: Option<Arc<Certificates>>,
    ) -> Arc<Tcp> {
        Arc::new(Tcp {
            settings,
            conns: DashMap::new(),
            by_addr: DashMap::new(),
            tls,
            next_id: AtomicU64::new(1),
            open: AtomicUsize::new(0),
            workers,
            runtimes,
        })
    }

    /// Connections open right now.
    #[cfg(test)]
    pub(crate) fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    fn worker_of(&self, id: ConnId) -> (EventSink, tokio::runtime::Handle) {
        let i = (id as usize) % self.workers.len().max(1);
        (self.workers[i].clone(), self.runtimes[i].clone())
    }

    /// Accepts connections on `listener` until the process ends: TLS connections when listener
    /// `index` is a TLS listener of the certificates this was made with, else plain TCP.
    pub(crate) async fn accept_loop(self: Arc<Tcp>, listener: TcpListener, index: usize) {
        let proto = match &self.tls {
            Some(tls) if tls.serves(index) => Proto::Tls,
            _ => Proto::Tcp,
        };
        loop {
            let (stream, remote) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            if !self.reserve() {
                debug!(%remote, ?proto, "connection refused: connection limit reached");
                continue;
            }
            let _ = stream.set_nodelay(true);
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = mpsc::channel(OUTGOING_PER_CONN);
            self.conns.insert(id, Conn { queue: tx });
            self.by_addr.insert((proto, remote), id);
            let (sink, rt) = self.worker_of(id);
            let me = self.clone();
            rt.spawn(async move {
                let Some(tls) = me.tls.clone().filter(|_| proto == Proto::Tls) else {
                    return me
                        .run_conn(id, proto, remote, stream, index, sink, rx)
                        .await;
                };
                match tls.accept(index, stream).await {
                    Ok(stream) => {
                        me.run_conn(id, proto, remote, stream, index, sink, rx)
                            .await
                    }
                    Err(e) => {
                        debug!(%remote, error = %e, "TLS handshake with a client failed");
                        me.close(id, proto, remote, rx);
                    }
                }
            });
        }
    }

    fn reserve(&self) -> bool {
        let max = self.settings.max_connections;
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Queues `bytes` to `to` (its connection if it names one and it is alive, else any
    /// connection to its address, else a new one). Failures come back on `failures`.
    pub(crate) fn send(
        self: &Arc<Tcp>,
        to: Peer,
        bytes: Bytes,
        report: Option<TxKey>,
        failures: &EventSink,
    ) {
        debug_assert!(matches!(to.proto, Proto::Tcp | Proto::Tls));
        let item = Outgoing {
            bytes,
            report,
            failures: failures.failures.clone(),
        };
        let existing = to
            .conn
            .filter(|id| self.conns.contains_key(id))
            .or_else(|| self.by_addr.get(&(to.proto, to.addr)).map(|e| *e.value()));
        let item = match existing.and_then(|id| self.conns.get(&id).map(|c| c.queue.clone())) {
            Some(queue) => match queue.try_send(item) {
                Ok(()) => return,
                // The peer is not reading what is already queued: this one is not delivered.
                Err(mpsc::error::TrySendError::Full(item)) => {
                    debug!(to = %to.addr, "TCP connection backed up: message not sent");
                    return fail(item);
                }
                Err(mpsc::error::TrySendError::Closed(item)) => item,
            },
            None => item,
        };
        self.connect(to.proto, to.addr, item);
    }

    fn connect(self: &Arc<Tcp>, proto: Proto, remote: SocketAddr, first: Outgoing) {
        let tls = match (proto, &self.tls) {
            (Proto::Tls, Some(tls)) => Some(tls.clone()),
            (Proto::Tls, None) => {
                debug!(%remote, "no TLS configured: cannot reach a TLS peer");
                fail(first);
                return;
            }
            _ => None,
        };
        if !self.reserve() {
            fail(first);
            return;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(OUTGOING_PER_CONN);
        let _ = tx.try_send(first);
        self.conns.insert(id, Conn { queue: tx });
        self.by_addr.insert((proto, remote), id);
        let (sink, rt) = self.worker_of(id);
        let me = self.clone();
        rt.spawn(async move {
            let connected =
                tokio::time::timeout(me.settings.connect_timeout, TcpStream::connect(remote)).await;
            let stream = match connected {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    debug!(%remote, error = %e, "TCP connect failed");
                    return me.close(id, proto, remote, rx);
                }
                Err(_) => {
                    debug!(%remote, "TCP connect timed out");
                    return me.close(id, proto, remote, rx);
                }
            };
            let _ = stream.set_nodelay(true);
            // Responses and requests on an outbound connection are not tied to a listener.
            let Some(tls) = tls else {
                return me.run_conn(id, proto, remote, stream, 0, sink, rx).await;
            };
            match tls.connect(remote, stream).await {
                Ok(stream) => me.run_conn(id, proto, remote, stream, 0, sink, rx).await,
                Err(e) => {
                    // A peer that is not who it should be is a delivery failure: the branch
                    // fails over, as on a refused connect.
                    warn!(%remote, error = %e, "TLS handshake with a peer failed");
                    me.close(id, proto, remote, rx);
                }
            }
        });
    }

    /// Serves one connection: frames what it reads for the owning worker, writes what is
    /// queued for it. Generic over the byte stream, so a TLS stream (rustls over the TCP one)
    /// runs under the same reader and writer.
    #[allow(clippy::too_many_arguments)]
    async fn run_conn<S>(
        self: Arc<Tcp>,
        id: ConnId,
        proto: Proto,
        remote: SocketAddr,
        stream: S,
        listener: usize,
        sink: EventSink,
        mut rx: mpsc::Receiver<Outgoing>,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    {
        let (mut reader, mut writer) = tokio::io::split(stream);
        let from = Peer {
            proto,
            addr: remote,
            conn: Some(id),
        };
        let mut buf = BytesMut::with_capacity(8192);
        let idle = self.settings.idle_timeout;
        let limits = self.settings.limits.clone();
        loop {
            tokio::select! {
                item = rx.recv() => {
                    let Some(item) = item else { break };
                    // TLS buffers records in the session: flush pushes them to the socket.
                    let written = match writer.write_all(&item.bytes).await {
                        Ok(()) => writer.flush().await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = written {
                        debug!(%remote, error = %e, "TCP write failed");
                        fail(item);
                        break;
                    }
                }
                read = tokio::time::timeout(idle, reader.read_buf(&mut buf)) => {
                    match read {
                        Err(_) => { debug!(%remote, "TCP connection idle, closing"); break }
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        Ok(Ok(_)) => {}
                    }
                    match deliver_frames(&mut buf, &limits, from, listener, &sink).await {
                        Delivered::All => {}
                        Delivered::Unframeable => {
                            debug!(%remote, "unframeable TCP stream, closing");
                            break;
                        }
                        Delivered::WorkerGone => break,
                    }
                }
            }
        }
        self.close(id, proto, remote, rx);
    }

    /// Forgets a connection and reports everything still queued on it as undelivered.
    fn close(
        &self,
        id: ConnId,
        proto: Proto,
        remote: SocketAddr,
        mut rx: mpsc::Receiver<Outgoing>,
    ) {
        self.conns.remove(&id);
        self.by_addr.remove_if(&(proto, remote), |_, v| *v == id);
        self.open.fetch_sub(1, Ordering::AcqRel);
        rx.close();
        while let Ok(item) = rx.try_recv() {
            fail(item);
        }
    }
}

fn fail(item: Outgoing) {
    if let Some(key) = item.report {
        let _ = item.failures.send(Event::Undelivered(key));
    }
}

/// What [`deliver_frames`] did with what had been read.
enum Delivered {
    /// Every whole message went to the worker; a partial one stays in the buffer.
    All,
    /// The stream cannot be framed: the connection must close (there is no way to find the
    /// next message).
    Unframeable,
    /// The worker is gone (the node is stopping).
    WorkerGone,
}

/// Hands every whole message at the front of `buf` to the worker, waiting while its inbox is
/// full: meanwhile nothing more is read from this connection.
async fn deliver_frames(
    buf: &mut BytesMut,
    limits: &Limits,
    from: Peer,
    listener: usize,
    sink: &EventSink,
) -> Delivered {
    loop {
        match wire::frame_stream(buf, limits) {
            Ok(StreamFrame::Message(n)) => {
                let bytes = buf.split_to(n).freeze();
                let event = Event::Message {
                    bytes,
                    from,
                    listener,
                };
                if !sink.deliver(event).await {
                    return Delivered::WorkerGone;
                }
            }
            Ok(StreamFrame::Keepalive(n)) => {
                let _ = buf.split_to(n);
            }
            Ok(StreamFrame::Incomplete) => return Delivered::All,
            Err(_) => return Delivered::Unframeable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn settings(idle_ms: u64, max: usize) -> TcpSettings {
        TcpSettings {
            idle_timeout: Duration::from_millis(idle_ms),
            max_connections: max,
            connect_timeout: Duration::from_secs(1),
            limits: Limits::default(),
        }
    }

    fn tcp(s: TcpSettings) -> (Arc<Tcp>, Inbox, EventSink) {
        let (sink, inbox) = inbox();
        let t = Tcp::new(
            s,
            vec![sink.clone()],
            vec![tokio::runtime::Handle::current()],
        );
        (t, inbox, sink)
    }

    async fn listen(t: &Arc<Tcp>) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(t.clone().accept_loop(l, 0));
        addr
    }

    const OPTIONS: &[u8] = b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: 1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 3\r\n\r\nabc";

    #[tokio::test]
    async fn connect_refused_reports_every_queued_message_undelivered() {
        let (t, mut rx, sink) = tcp(settings(1000, 8));
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = closed.local_addr().unwrap();
        drop(closed);
        let peer = Peer {
            proto: Proto::Tcp,
            addr: dead,
            conn: None,
        };
        t.send(peer, Bytes::from_static(b"x"), Some(41), &sink);
        t.send(peer, Bytes::from_static(b"y"), Some(42), &sink);
        let mut keys = Vec::new();
        for _ in 0..2 {
            match tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
                Ok(Some(Event::Undelivered(k))) => keys.push(k),
                other => panic!("expected Undelivered, got {other:?}"),
            }
        }
        keys.sort();
        assert_eq!(keys, vec![41, 42]);
        assert_eq!(t.open_connections(), 0);
    }

    #[tokio::test]
    async fn a_message_split_across_reads_is_framed_once_and_replies_reuse_the_connection() {
        let (t, mut rx, sink) = tcp(settings(5000, 8));
        let addr = listen(&t).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(b"\r\n\r\n").await.unwrap();
        client.write_all(&OPTIONS[..40]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        client.write_all(&OPTIONS[40..]).await.unwrap();
        let Some(Event::Message { bytes, from, .. }) = rx.recv().await else {
            panic!()
        };
        assert_eq!(&bytes[..], OPTIONS);
        t.send(from, Bytes::from_static(b"reply"), None, &sink);
        let mut got = [0u8; 5];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"reply");
        assert_eq!(
            t.open_connections(),
            1,
            "the reply used the same connection"
        );
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_gets_a_bounded_queue_and_the_rest_is_reported_undelivered() {
        let (t, mut rx, sink) = tcp(settings(5000, 8));
        // Accepts, then never reads.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let held = tokio::spawn(async move { l.accept().await.map(|(s, _)| s) });
        let peer = Peer {
            proto: Proto::Tcp,
            addr,
            conn: None,
        };
        let big = Bytes::from(vec![b'x'; 64 * 1024]);
        let total = OUTGOING_PER_CONN as u64 + 600;
        for key in 0..total {
            t.send(peer, big.clone(), Some(key), &sink);
            if key == 0 {
                // Let the connection come up and its writer start.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let mut undelivered = Vec::new();
        while let Ok(Some(Event::Undelivered(k))) =
            tokio::time::timeout(Duration::from_millis(500), rx.recv()).await
        {
            undelivered.push(k);
        }
        // What the socket buffers and the queue hold was accepted; past that, nothing waits.
        assert!(
            undelivered.len() >= 400,
            "{} of {total} reported undelivered",
            undelivered.len()
        );
        assert!(undelivered
            .iter()
            .all(|&k| k > OUTGOING_PER_CONN as u64 / 2));
        assert_eq!(t.open_connections(), 1, "the connection itself stays");
        drop(held);
    }

    #[tokio::test]
    async fn idle_connections_are_closed() {
        let (t, _rx, _sink) = tcp(settings(100, 8));
        let addr = listen(&t).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(2), client.read(&mut buf)).await;
        assert!(matches!(n, Ok(Ok(0))), "closed by the idle timer");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(t.open_connections(), 0);
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_are_refused() {
        let (t, _rx, _sink) = tcp(settings(5000, 1));
        let addr = listen(&t).await;
        let _first = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut second = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(2), second.read(&mut buf)).await;
        assert!(
            matches!(n, Ok(Ok(0)) | Ok(Err(_))),
            "second connection dropped"
        );
        assert_eq!(t.open_connections(), 1);
    }

    #[tokio::test]
    async fn an_unframeable_stream_is_closed() {
        let (t, _rx, _sink) = tcp(settings(5000, 8));
        let addr = listen(&t).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        // No Content-Length: a stream cannot be framed without it.
        client
            .write_all(b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: 1\r\nCSeq: 1 OPTIONS\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(2), client.read(&mut buf)).await;
        assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))));
    }
}
