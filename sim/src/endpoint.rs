//! One simulated peer's transport: a UDP socket (kernel receive timestamps), TCP (a listener
//! and/or outbound connections, framed by Content-Length) or TLS (the same over rustls). Either
//! way the peer reads whole messages with their sender and receive time, and sends to an
//! address.

use super::net::StampedUdp;
use super::SimTransport;
use bytes::{Bytes, BytesMut};
use pointsman_protocol::wire::{self, Limits, StreamFrame};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A received message.
pub struct Received {
    pub bytes: Bytes,
    pub from: SocketAddr,
    pub at: SystemTime,
}

/// One connection (TCP or TLS), as its write half. Dropping the last handle ends the
/// connection: the write half goes (for TCP, with a FIN) and the reader task is aborted, so a
/// TLS stream, whose halves share one socket, closes too.
struct Conn {
    write: tokio::sync::Mutex<Box<dyn AsyncWrite + Send + Unpin>>,
    reader: std::sync::OnceLock<tokio::task::AbortHandle>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(reader) = self.reader.get() {
            reader.abort();
        }
    }
}

type Writer = Arc<Conn>;
type Writers = Arc<Mutex<HashMap<SocketAddr, Writer>>>;

/// How a TLS peer opens connections of its own: whom it trusts, what it presents.
#[derive(Clone)]
pub struct TlsClient {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: rustls_pki_types::ServerName<'static>,
}

pub struct Endpoint {
    local: SocketAddr,
    kind: Kind,
    inbox: tokio::sync::Mutex<mpsc::UnboundedReceiver<Received>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

enum Kind {
    /// `None` once closed.
    Udp(Mutex<Option<Arc<StampedUdp>>>),
    Tcp {
        writers: Writers,
        feed: mpsc::UnboundedSender<Received>,
        /// TLS: `Some` (with how to open new connections, if it may).
        tls: Option<Option<TlsClient>>,
    },
}

impl Endpoint {
    /// A UDP socket bound to `addr`.
    pub fn udp(addr: SocketAddr) -> io::Result<Endpoint> {
        let sock = Arc::new(StampedUdp::bind(addr)?);
        let local = sock.local_addr()?;
        let (feed, inbox) = mpsc::unbounded_channel();
        let reader = sock.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_535];
            while let Ok((n, from, at)) = reader.recv(&mut buf).await {
                let bytes = Bytes::copy_from_slice(&buf[..n]);
                if feed.send(Received { bytes, from, at }).is_err() {
                    break;
                }
            }
        });
        Ok(Endpoint {
            local,
            kind: Kind::Udp(Mutex::new(Some(sock))),
            inbox: tokio::sync::Mutex::new(inbox),
            tasks: Mutex::new(vec![task]),
        })
    }

    /// A TCP listener on `addr`; replies go back on the connection a message came in on.
    pub async fn tcp_listen(addr: SocketAddr) -> io::Result<Endpoint> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let (feed, inbox) = mpsc::unbounded_channel();
        let writers: Writers = Arc::default();
        let (w, f) = (writers.clone(), feed.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, remote)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let (r, wr) = stream.into_split();
                adopt(r, wr, remote, &w, &f);
            }
        });
        Ok(Endpoint {
            local,
            kind: Kind::Tcp {
                writers,
                feed,
                tls: None,
            },
            inbox: tokio::sync::Mutex::new(inbox),
            tasks: Mutex::new(vec![task]),
        })
    }

    /// One outbound TCP connection to `remote` (a carrier's trunk to pointsman).
    pub async fn tcp_connect(remote: SocketAddr) -> io::Result<Endpoint> {
        let stream = TcpStream::connect(remote).await?;
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr()?;
        let (feed, inbox) = mpsc::unbounded_channel();
        let writers: Writers = Arc::default();
        let (r, w) = stream.into_split();
        adopt(r, w, remote, &writers, &feed);
        Ok(Endpoint {
            local,
            kind: Kind::Tcp {
                writers,
                feed,
                tls: None,
            },
            inbox: tokio::sync::Mutex::new(inbox),
            tasks: Mutex::new(Vec::new()),
        })
    }

    /// A TLS listener on `addr` serving `server` (a failed handshake just drops that
    /// connection); replies go back on the connection a message came in on. With `client`, it
    /// may also open TLS connections of its own (e.g. a BYE to pointsman).
    pub async fn tls_listen(
        addr: SocketAddr,
        server: Arc<rustls::ServerConfig>,
        client: Option<TlsClient>,
    ) -> io::Result<Endpoint> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let (feed, inbox) = mpsc::unbounded_channel();
        let writers: Writers = Arc::default();
        let (w, f) = (writers.clone(), feed.clone());
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let task = tokio::spawn(async move {
            while let Ok((stream, remote)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let (acceptor, w, f) = (acceptor.clone(), w.clone(), f.clone());
                tokio::spawn(async move {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let (r, wr) = tokio::io::split(stream);
                        adopt(r, wr, remote, &w, &f);
                    }
                });
            }
        });
        Ok(Endpoint {
            local,
            kind: Kind::Tcp {
                writers,
                feed,
                tls: Some(client),
            },
            inbox: tokio::sync::Mutex::new(inbox),
            tasks: Mutex::new(vec![task]),
        })
    }

    /// One outbound TLS connection to `remote` (a carrier's TLS trunk to pointsman).
    pub async fn tls_connect(remote: SocketAddr, client: TlsClient) -> io::Result<Endpoint> {
        let stream = TcpStream::connect(remote).await?;
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr()?;
        let stream = tokio_rustls::TlsConnector::from(client.config.clone())
            .connect(client.server_name.clone(), stream)
            .await?;
        let (feed, inbox) = mpsc::unbounded_channel();
        let writers: Writers = Arc::default();
        let (r, w) = tokio::io::split(stream);
        adopt(r, w, remote, &writers, &feed);
        Ok(Endpoint {
            local,
            kind: Kind::Tcp {
                writers,
                feed,
                tls: Some(Some(client)),
            },
            inbox: tokio::sync::Mutex::new(inbox),
            tasks: Mutex::new(Vec::new()),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn transport(&self) -> SimTransport {
        match self.kind {
            Kind::Udp(_) => SimTransport::Udp,
            Kind::Tcp { tls: None, .. } => SimTransport::Tcp,
            Kind::Tcp { tls: Some(_), .. } => SimTransport::Tls,
        }
    }

    /// The next message; `None` once the endpoint is closed.
    pub async fn recv(&self) -> Option<Received> {
        self.inbox.lock().await.recv().await
    }

    /// Sends one message to `to` (over TCP: its connection, opened if there is none).
    pub async fn send(&self, bytes: &[u8], to: SocketAddr) -> io::Result<()> {
        match &self.kind {
            Kind::Udp(sock) => {
                let sock = sock.lock().unwrap_or_else(|p| p.into_inner()).clone();
                match sock {
                    Some(sock) => sock.send_to(bytes, to).await.map(|_| ()),
                    None => Err(io::Error::from(io::ErrorKind::NotConnected)),
                }
            }
            Kind::Tcp { writers, feed, tls } => {
                let existing = writers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&to)
                    .cloned();
                let writer = match existing {
                    Some(w) => w,
                    None => {
                        let stream = TcpStream::connect(to).await?;
                        let _ = stream.set_nodelay(true);
                        match tls {
                            None => {
                                let (r, w) = stream.into_split();
                                adopt(r, w, to, writers, feed)
                            }
                            Some(Some(client)) => {
                                let stream =
                                    tokio_rustls::TlsConnector::from(client.config.clone())
                                        .connect(client.server_name.clone(), stream)
                                        .await?;
                                let (r, w) = tokio::io::split(stream);
                                adopt(r, w, to, writers, feed)
                            }
                            Some(None) => {
                                return Err(io::Error::new(
                                    io::ErrorKind::NotConnected,
                                    "this TLS peer has no client settings to connect with",
                                ))
                            }
                        }
                    }
                };
                let mut w = writer.write.lock().await;
                w.write_all(bytes).await?;
                w.flush().await
            }
        }
    }
}

impl Endpoint {
    /// Closes the socket (or listener and connections) now: when this returns, the port is
    /// free and datagrams to it bounce (ICMP port unreachable) — a peer that died.
    pub async fn close(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
        match &self.kind {
            Kind::Udp(sock) => {
                sock.lock().unwrap_or_else(|p| p.into_inner()).take();
            }
            Kind::Tcp { writers, .. } => {
                writers.lock().unwrap_or_else(|p| p.into_inner()).clear();
            }
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        for t in self
            .tasks
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            t.abort();
        }
        // Closing the write halves ends the connections (and so their readers).
        if let Kind::Tcp { writers, .. } = &self.kind {
            writers.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }
}

/// Registers a connection's write half (under its remote address) and starts its framing
/// reader.
fn adopt<R, W>(
    mut read: R,
    write: W,
    remote: SocketAddr,
    writers: &Writers,
    feed: &mpsc::UnboundedSender<Received>,
) -> Writer
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    let write: Writer = Arc::new(Conn {
        write: tokio::sync::Mutex::new(Box::new(write)),
        reader: std::sync::OnceLock::new(),
    });
    writers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(remote, write.clone());
    let (feed, writers) = (feed.clone(), writers.clone());
    let reader = tokio::spawn(async move {
        let mut buf = BytesMut::with_capacity(8192);
        let limits = Limits::default();
        'conn: loop {
            match read.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            loop {
                match wire::frame_stream(&buf, &limits) {
                    Ok(StreamFrame::Keepalive(n)) => {
                        let _ = buf.split_to(n);
                    }
                    Ok(StreamFrame::Message(n)) => {
                        let bytes = buf.split_to(n).freeze();
                        let at = SystemTime::now();
                        if feed
                            .send(Received {
                                bytes,
                                from: remote,
                                at,
                            })
                            .is_err()
                        {
                            break 'conn;
                        }
                    }
                    Ok(StreamFrame::Incomplete) => break,
                    Err(_) => break 'conn,
                }
            }
        }
        writers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&remote);
    });
    let _ = write.reader.set(reader.abort_handle());
    write
}
