//! The media relay's sockets: one UDP socket per relay port the plane lists, bound before
//! traffic, each served by a task on one of the workers (spread round-robin), which hands every
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

thread_local! {
    /// The receive buffer of this worker's media tasks (one at a time runs on a worker).
    static BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0; MAX_MEDIA_DATAGRAM]);
}

impl MediaSockets {
    /// Binds every socket `plane` lists, non-blocking. Fails naming the address that could not
    /// be bound, or the file-descriptor limit the range does not fit in.
    pub fn bind(plane: &MediaPlane) -> anyhow::Result<MediaSockets> {
        let wanted = plane.sockets();
        raise_fd_limit(wanted.len())?;
        let mut sockets = Vec::with_capacity(wanted.len());
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

    /// Starts serving the sockets whose index is `worker` modulo `workers`, on the calling
    /// worker's runtime (inside its `LocalSet`).
    pub fn serve_share(&self, plane: &Arc<MediaPlane>, worker: usize, workers: usize) {
        for index in (worker..self.sockets.len()).step_by(workers.max(1)) {
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

/// Serves one relay socket until the process ends.
async fn serve(fd: AsyncFd<Port>, plane: Arc<MediaPlane>) {
    let id = SocketId(fd.get_ref().index as u32);
    let sockets = fd.get_ref().sockets.clone();
    let Some(socket) = sockets.get(id.0 as usize) else {
        return;
    };
    let mut forwards = Forwards::new();
    loop {
        let Ok(mut ready) = fd.readable().await else {
            return;
        };
        let mut handled = 0;
        let drained = BUFFER.with_borrow_mut(|buffer| {
            while handled < PER_WAKE {
                let (len, from) = match socket.recv_from(buffer) {
                    Ok(got) => got,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                    // ICMP errors of earlier sends surface here: nothing to do for them.
                    Err(_) => {
                        handled += 1;
                        continue;
                    }
                };
                handled += 1;
                let Some(packet) = buffer.get_mut(..len) else {
                    continue;
                };
                forwards.clear();
                plane.on_packet(id, from, packet, Instant::now(), &mut forwards);
                for (out, to) in &forwards {
                    if let Some(s) = sockets.get(out.0 as usize) {
                        // A full socket buffer drops the packet, as the network would.
                        let _ = s.send_to(packet, to);
                    }
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
