//! The media relay's sockets and threads: one UDP socket per relay port the plane lists, bound
//! before traffic, and media threads (one per worker) that each wait on their share of the
//! sockets (spread by port pair) with one level-triggered epoll, hand every datagram to the
//! sans-IO [`MediaPlane`] with `now`, and send it on where the plane says. Any thread may send
//! from any socket: a packet leaves from the socket of the leg it goes to (its relay port).
//!
//! Why its own threads and raw epoll, not tasks on the workers' tokio runtimes: a relayed
//! packet is one receive and one send, and everything around them is overhead the kernel's work
//! does not dwarf. Measured on the media bench, a runtime task per socket cost ~2–4 µs a packet
//! above a bare recvfrom/sendto loop (`rtp_floor`, ~4 µs); this loop is that bare loop plus the
//! plane. Level-triggered (mio, under tokio, is edge-triggered only) so one `recvfrom` per
//! packet suffices: a socket with more queued is reported again.
//!
//! It must not: decide anything about media (that is the plane's), or stall signalling: the
//! media threads are not the SIP workers, read one datagram per socket per turn, and never wait
//! on a send (a datagram the kernel will not take now is dropped, as the network would).

use anyhow::{anyhow, Context};
use pointsman_protocol::media::{Forwards, MediaPlane, SocketId};
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

/// Largest media datagram read (RTP over UDP stays under the path MTU; a larger one is
/// truncated by the kernel and dropped by the plane as malformed).
const MAX_MEDIA_DATAGRAM: usize = 2048;
/// Ready sockets taken per `epoll_wait`.
const EVENTS: usize = 256;

/// Every relay socket, indexed by [`SocketId`].
pub struct MediaSockets {
    sockets: Arc<[UdpSocket]>,
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

    /// Starts `threads` media threads, each serving its share of the sockets of `plane` (the
    /// plane they were bound for) until the process ends. Shares go by port pair (port / 2), so
    /// a leg's RTP and RTCP ports are served together.
    pub fn spawn(&self, plane: &Arc<MediaPlane>, threads: usize) -> anyhow::Result<()> {
        let threads = threads.max(1);
        let listed = plane.sockets();
        for t in 0..threads {
            let share: Vec<usize> = listed
                .iter()
                .filter(|(_, addr)| usize::from(addr.port() / 2) % threads == t)
                .map(|(id, _)| id.0 as usize)
                .collect();
            let epoll = Epoll::over(&self.sockets, &share)?;
            let (sockets, plane) = (self.sockets.clone(), plane.clone());
            std::thread::Builder::new()
                .name(format!("pointsman-media{t}"))
                .spawn(move || {
                    private_fd_table();
                    serve(&epoll, &sockets, &plane)
                })
                .context("cannot start a media relay thread")?;
        }
        Ok(())
    }
}

/// One media thread's epoll instance, closed when dropped.
struct Epoll(libc::c_int);

impl Epoll {
    /// An epoll over the sockets at `indices`, each reported by its index, level-triggered.
    fn over(sockets: &[UdpSocket], indices: &[usize]) -> anyhow::Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointers; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(anyhow!(
                "epoll_create1: {}",
                std::io::Error::last_os_error()
            ));
        }
        let epoll = Epoll(fd);
        for &index in indices {
            let Some(socket) = sockets.get(index) else {
                continue;
            };
            let mut event = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: index as u64,
            };
            // SAFETY: `event` is an epoll_event we own; the socket's fd stays open for as long
            // as the socket table lives, which every media thread holds (an `Arc`).
            let added = unsafe {
                libc::epoll_ctl(epoll.0, libc::EPOLL_CTL_ADD, socket.as_raw_fd(), &mut event)
            };
            if added != 0 {
                return Err(anyhow!("epoll_ctl: {}", std::io::Error::last_os_error()));
            }
        }
        Ok(epoll)
    }

    /// Waits for ready sockets; fills `events` and returns how many.
    fn wait(&self, events: &mut [libc::epoll_event]) -> usize {
        let room = i32::try_from(events.len()).unwrap_or(i32::MAX);
        // SAFETY: `events` has room for `room` events, which is what the kernel may write.
        let n = unsafe { libc::epoll_wait(self.0, events.as_mut_ptr(), room, -1) };
        usize::try_from(n).unwrap_or(0)
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own the fd and close it once.
        unsafe {
            libc::close(self.0);
        }
    }
}

/// One media thread: every datagram its sockets receive goes through the plane.
fn serve(epoll: &Epoll, sockets: &[UdpSocket], plane: &MediaPlane) {
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
    let mut buffer = vec![0u8; MAX_MEDIA_DATAGRAM];
    let mut forwards = Forwards::new();
    loop {
        let ready = epoll.wait(&mut events);
        let now = Instant::now();
        for event in events.iter().take(ready) {
            let index = event.u64 as usize;
            let Some(socket) = sockets.get(index) else {
                continue;
            };
            // One datagram per socket per turn: a flooded port cannot starve the others (a
            // socket with more queued is reported again by the next wait).
            let Ok((len, from)) = socket.recv_from(&mut buffer) else {
                // WouldBlock, or an ICMP error of an earlier send: nothing to do.
                continue;
            };
            let Some(packet) = buffer.get_mut(..len) else {
                continue;
            };
            forwards.clear();
            plane.on_packet(SocketId(index as u32), from, packet, now, &mut forwards);
            for (out, to) in &forwards {
                if let Some(s) = sockets.get(out.0 as usize) {
                    // A full socket buffer drops the packet, as the network would.
                    let _ = s.send_to(packet, to);
                }
            }
        }
    }
}

/// Gives the calling thread its own copy of the process's file-descriptor table.
///
/// Every `recvfrom`/`sendto` looks its socket up in the fd table; while the table is shared by
/// several threads, the kernel takes and drops a reference on the socket's file for each call
/// (atomics on a line the other threads touch too), which a thread with a table of its own
/// skips. Measured on the media bench: ~10 % of a media thread's time was that lookup. The
/// media sockets are all bound before the threads start and are never closed, so the copy
/// holds every one of them. Where `unshare` is not allowed (a container's seccomp profile),
/// the thread goes on with the shared table: slower, not wrong.
fn private_fd_table() {
    // SAFETY: unshare takes no pointers; CLONE_FILES affects only the calling thread's table.
    if unsafe { libc::unshare(libc::CLONE_FILES) } != 0 {
        tracing::debug!(
            "media thread keeps the shared fd table: unshare(CLONE_FILES): {}",
            std::io::Error::last_os_error()
        );
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
