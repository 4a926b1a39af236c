//! Sockets of simulated peers. UDP receives carry the kernel's receive timestamp (the
//! `SIOCGSTAMPNS` of each datagram), taken when the datagram entered the loopback stack: two
//! datagrams pointsman sent one after the other to two different peers are stamped in the order
//! they were sent, so a test can prove "CANCEL to the primary before INVITE to the secondary"
//! however the peers' tasks happen to be scheduled.

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
        // The first SIOCGSTAMPNS turns the socket's receive timestamps on (it has none yet).
        let _ = last_stamp(sock.as_raw_fd());
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
            match self
                .sock
                .try_io(Interest::READABLE, || recv_stamped(&self.sock, buf))
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

fn recv_stamped(
    sock: &tokio::net::UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, SystemTime)> {
    let (n, from) = sock.try_recv_from(buf)?;
    let at = last_stamp(sock.as_raw_fd()).unwrap_or_else(|_| SystemTime::now());
    Ok((n, from, at))
}

/// `SIOCGSTAMPNS` (asm-generic/sockios.h; the same number on every 64-bit Linux): libc does not
/// name it.
const SIOCGSTAMPNS: u32 = 0x8907;

/// When the kernel received the last datagram this socket read (`SIOCGSTAMPNS`, socket(7)).
fn last_stamp(fd: RawFd) -> io::Result<SystemTime> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid socket fd; the kernel writes one timespec into `ts`, which outlives the
    // call.
    let rc = unsafe { libc::ioctl(fd, SIOCGSTAMPNS as _, &mut ts as *mut libc::timespec) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let secs = u64::try_from(ts.tv_sec).map_err(|_| io::ErrorKind::InvalidData)?;
    let nanos = u32::try_from(ts.tv_nsec).map_err(|_| io::ErrorKind::InvalidData)?;
    Ok(UNIX_EPOCH + Duration::new(secs, nanos))
}
