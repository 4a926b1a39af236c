//! Sockets of simulated peers. UDP receives carry the kernel's receive timestamp
//! (SO_TIMESTAMPNS), taken when the datagram entered the loopback stack: two datagrams pointsman
//! sent one after the other to two different peers are stamped in the order they were sent, so a
//! test can prove "CANCEL to the primary before INVITE to the secondary" however the peers' tasks
//! happen to be scheduled.

use crate::transport::udp::recv_msg;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::Interest;

/// A UDP socket whose receives say when the kernel got each datagram.
pub struct StampedUdp {
    sock: tokio::net::UdpSocket,
}

impl StampedUdp {
    /// Binds `addr` (must be called inside a tokio runtime).
    pub fn bind(addr: SocketAddr) -> io::Result<StampedUdp> {
        let sock = std::net::UdpSocket::bind(addr)?;
        sock.set_nonblocking(true)?;
        let on: libc::c_int = 1;
        // SAFETY: a valid socket fd; the option value is a c_int that outlives the call.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                &on as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(StampedUdp {
            sock: tokio::net::UdpSocket::from_std(sock)?,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// One datagram: its length, sender and kernel receive time.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, SystemTime)> {
        loop {
            self.sock.readable().await?;
            let fd = self.sock.as_raw_fd();
            match self
                .sock
                .try_io(Interest::READABLE, || recv_stamped(fd, buf))
            {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }

    pub async fn send_to(&self, bytes: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.sock.send_to(bytes, to).await
    }
}

fn recv_stamped(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, SystemTime)> {
    let mut at = None;
    let (n, from) = recv_msg(fd, buf, libc::MSG_DONTWAIT, |(level, kind, data)| {
        if level == libc::SOL_SOCKET && kind == libc::SCM_TIMESTAMPNS {
            if let Some(ts) = timespec(data) {
                at = Some(ts);
            }
        }
    })?;
    Ok((n, from, at.unwrap_or_else(SystemTime::now)))
}

/// A `struct timespec` as the kernel wrote it into a control message.
fn timespec(data: &[u8]) -> Option<SystemTime> {
    if data.len() < std::mem::size_of::<libc::timespec>() {
        return None;
    }
    // SAFETY: the slice holds at least one timespec; read_unaligned tolerates any alignment.
    let ts = unsafe { std::ptr::read_unaligned(data.as_ptr() as *const libc::timespec) };
    Some(
        UNIX_EPOCH
            + Duration::new(
                u64::try_from(ts.tv_sec).ok()?,
                u32::try_from(ts.tv_nsec).ok()?,
            ),
    )
}
