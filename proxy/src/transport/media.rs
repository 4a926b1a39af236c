//! The media relay's sockets: one UDP socket per relay port the plane lists, bound before
//! traffic, each served by a task on one of the workers (spread by port pair), which hands every
//! datagram to the sans-IO [`MediaPlane`] with `now` and sends it on where the plane says. The
//! sockets are shared by all workers for sending: a packet leaves from the socket of the leg it
//! goes to (its relay port), whichever worker received it.
//!
//! It must not: decide anything about media (that is the plane's), or let a media port stall
//! signalling: each task handles a bounded number of datagrams per wake-up, reads into one
//! buffer per worker, and never waits on a send (a datagram the kernel will not take now is
//! dropped, as the network would).

use anyhow::{anyhow, Context};
use pointsman_protocol::media::{Forwards, MediaPlane, SocketId};
use std::cell::RefCell;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Instant;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Largest media datagram read (RTP over UDP stays under the path MTU; a larger one is
/// truncated by the kernel and dropped by the plane as malformed).
const MAX_MEDIA_DATAGRAM: usize = 2048;
/// Datagrams a socket's task handles before it lets the worker's other tasks run.
const PER_WAKE: usize = 32;

/// Every relay socket, indexed by [`SocketId`].
pub struct MediaSockets {
    sockets: Arc<[UdpSocket]>,
    /// Each socket's port pair (its port / 2): what spreads them over the workers.
    pairs: Vec<u16>,
}

/// One relay socket, as its serving task registers it with the worker's reactor.
struct Port {
    sockets: Arc<[UdpSocket]>,
    index: usize,
}

impl AsRawFd for Port {
    fn as_raw_fd(&self) -> RawFd {
        self.sockets
            .get(self.index)
            .map_or(-1, std::os::fd::AsRawFd::as_raw_fd)
    }
}

impl MediaSockets {
    /// Binds every socket `plane` lists, non-blocking. Fails naming the address that could not
    /// be bound, or the file-descriptor limit the range does not fit in.
    pub fn bind(plane: &MediaPlane) -> anyhow::Result<MediaSockets> {
        let wanted = plane.sockets();
        raise_fd_limit(wanted.len())?;
        let mut sockets = Vec::with_capacity(wanted.len());
        let pairs = wanted.iter().map(|(_, addr)| addr.port() / 2).collect();
        for (i, (id, addr)) in wanted.iter().enumerate() {
            if id.0 as usize != i {
                return Err(anyhow!("media relay: socket ids are not dense"));
            }
            let socket = UdpSocket::bind(addr).with_context(|| {
                format!("media.ports: cannot bind the relay port {addr} (is another process using the range?)")
            })?;
            socket.set_nonblocking(true)?;
            sockets.push(socket);
        }
        Ok(MediaSockets {
            sockets: sockets.into(),
            pairs,
        })
    }

    /// How many sockets there are.
    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// Starts serving this worker's share of the sockets, on the calling worker's runtime
    /// (inside its `LocalSet`). Shares go by port pair, so each worker gets RTP ports (the
    /// traffic) as well as RTCP ports, and a leg's two ports are served together.
    pub fn serve_share(&self, plane: &Arc<MediaPlane>, worker: usize, workers: usize) {
        let workers = workers.max(1);
        let mine = self
            .pairs
            .iter()
            .enumerate()
            .filter(|(_, pair)| usize::from(**pair) % workers == worker)
            .map(|(index, _)| index);
        for index in mine {
            let port = Port {
                sockets: self.sockets.clone(),
                index,
            };
            // SAFETY: `index` is in range, so `port.as_raw_fd()` is the fd of a socket in
            // `port.sockets`, which the `Port` keeps open (the `Arc`) and never replaces for as
            // long as the `AsyncFd` owns it.
            match unsafe { AsyncFd::register_with_interest(port, Interest::READABLE) } {
                Ok(fd) => {
                    tokio::task::spawn_local(serve(fd, plane.clone()));
                }
                Err(e) => tracing::error!(error = %e, "cannot register a media relay socket"),
            }
        }
    }
}

/// Datagrams read per system call (`recvmmsg`). A socket carries one leg's 50 packets a
/// second, so a read mostly returns one; what matters is that a short read says the queue is
/// empty, which saves the second read that would only return `EAGAIN`.
const BATCH: usize = 8;

/// The receive buffers of one worker's media tasks.
struct Buffers {
    storage: Vec<u8>,
    metas: [quinn_udp::RecvMeta; BATCH],
}

thread_local! {
    static BUFFERS: RefCell<Buffers> = RefCell::new(Buffers {
        storage: vec![0; BATCH * MAX_MEDIA_DATAGRAM],
        metas: [quinn_udp::RecvMeta::default(); BATCH],
    });
}

/// Serves one relay socket until the process ends.
async fn serve(fd: AsyncFd<Port>, plane: Arc<MediaPlane>) {
    let id = SocketId(fd.get_ref().index as u32);
    let sockets = fd.get_ref().sockets.clone();
    let Some(socket) = sockets.get(id.0 as usize) else {
        return;
    };
    let state = match quinn_udp::UdpSocketState::new(socket.into()) {
        Ok(state) => state,
        Err(e) => {
            tracing::error!(error = %e, "cannot set up a media relay socket");
            return;
        }
    };
    // Segments coalesced by GRO would need splitting; RTP packets are few and small.
    crate::transport::udp::disable_gro(socket.as_raw_fd());
    let mut forwards = Forwards::new();
    loop {
        let Ok(mut ready) = fd.readable().await else {
            return;
        };
        let drained = BUFFERS.with_borrow_mut(|buffers| {
            let Buffers { storage, metas } = buffers;
            for _ in 0..PER_WAKE / BATCH {
                let received = {
                    let mut chunks = storage.chunks_mut(MAX_MEDIA_DATAGRAM);
                    let mut iovs: [std::io::IoSliceMut<'_>; BATCH] = std::array::from_fn(|_| {
                        std::io::IoSliceMut::new(chunks.next().unwrap_or_default())
                    });
                    state.recv(socket.into(), &mut iovs, metas)
                };
                let n = match received {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                    // ICMP errors of earlier sends surface here: nothing to do for them.
                    Err(_) => continue,
                };
                let now = Instant::now();
                for (i, meta) in metas.iter().take(n).enumerate() {
                    let start = i * MAX_MEDIA_DATAGRAM;
                    let Some(packet) = storage.get_mut(start..start + meta.len) else {
                        continue;
                    };
                    forwards.clear();
                    plane.on_packet(id, meta.addr, packet, now, &mut forwards);
                    for (out, to) in &forwards {
                        if let Some(s) = sockets.get(out.0 as usize) {
                            // A full socket buffer drops the packet, as the network would.
                            let _ = s.send_to(packet, to);
                        }
                    }
                }
                if n < BATCH {
                    // A short read emptied the queue: what arrives next is a new readiness
                    // event, which clearing this one does not lose (tokio's readiness ticks).
                    return true;
                }
            }
            false
        });
        if drained {
            ready.clear_ready();
        } else {
            tokio::task::yield_now().await;
        }
    }
}

/// Raises the soft file-descriptor limit to the hard one when the relay's sockets need it.
fn raise_fd_limit(sockets: usize) -> anyhow::Result<()> {
    // Room for the listeners, connections and files besides the relay's sockets.
    const HEADROOM: u64 = 1024;
    let needed = sockets as u64 + HEADROOM;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Ok(());
    }
    if limit.rlim_cur >= needed {
        return Ok(());
    }
    if limit.rlim_max < needed {
        return Err(anyhow!(
            "media.ports: the relay needs {sockets} sockets, but this process may open at most \
             {} files: narrow the range or raise the limit (ulimit -n, LimitNOFILE=)",
            limit.rlim_max
        ));
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(anyhow!(
            "media.ports: cannot raise the open-file limit to {} for the relay's {sockets} sockets",
            limit.rlim_max
        ));
    }
    Ok(())
}
