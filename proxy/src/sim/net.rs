//! Sockets of simulated peers. UDP receives carry the kernel's receive timestamp
//! (SO_TIMESTAMPNS), taken when the datagram entered the loopback stack: two datagrams pointsman
//! sent one after the other to two different peers are stamped in the order they were sent, so a
//! test can prove "CANCEL to the primary before INVITE to the secondary" however the peers' tasks
//! happen to be scheduled.

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
    // SAFETY: zeroed sockaddr_storage / msghdr are valid; every pointer handed to recvmsg points
    // into locals that outlive the call, with their true lengths; the control messages are read
    // only through the CMSG macros within `msg_controllen`.
    unsafe {
        let mut name: libc::sockaddr_storage = std::mem::zeroed();
        let mut control = [0u64; 16];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = &mut name as *mut _ as *mut libc::c_void;
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        let n = libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut at = SystemTime::now();
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::timespec);
                at = UNIX_EPOCH + Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        let from = crate::transport::udp::sockaddr_to_std(&name)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "datagram without sender"))?;
        Ok(((n as usize).min(buf.len()), from, at))
    }
}
