//! UDP: one SO_REUSEPORT socket per worker and listener, so the kernel spreads carriers across
//! workers; and ICMP errors (port unreachable) read back from the socket's error queue, which
//! hands us the datagram that bounced — the core finds the branch from its Via.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

/// Binds a non-blocking UDP socket with SO_REUSEPORT (several workers share the port), large
/// buffers for bursts, and IP_RECVERR so ICMP errors are reported on an unconnected socket.
pub fn bind(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = socket.set_recv_buffer_size(4 << 20);
    let _ = socket.set_send_buffer_size(4 << 20);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    enable_error_queue(socket.as_raw_fd(), addr.is_ipv6())?;
    Ok(socket.into())
}

fn enable_error_queue(fd: RawFd, v6: bool) -> io::Result<()> {
    let on: libc::c_int = 1;
    let (level, name) = if v6 {
        (libc::IPPROTO_IPV6, libc::IPV6_RECVERR)
    } else {
        (libc::IPPROTO_IP, libc::IP_RECVERR)
    };
    // SAFETY: fd is a valid socket; the option value is a c_int that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &on as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads one entry of the socket's error queue: the destination the bounced datagram was sent
/// to, and its payload (copied into `buf`, possibly truncated). `WouldBlock` when empty.
pub fn recv_error(fd: RawFd, buf: &mut [u8]) -> io::Result<(SocketAddr, usize)> {
    // SAFETY: zeroed sockaddr_storage / msghdr are valid; every pointer handed to recvmsg points
    // into locals that outlive the call, with their true lengths.
    unsafe {
        let mut name: libc::sockaddr_storage = std::mem::zeroed();
        let mut control = [0u8; 512];
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
        msg.msg_controllen = control.len() as _;
        let n = libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let addr = sockaddr_to_std(&name)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "error queue: no address"))?;
        Ok((addr, (n as usize).min(buf.len())))
    }
}

pub(crate) fn sockaddr_to_std(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let a = unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::new(ip.into(), u16::from_be(a.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let a = unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::new(ip.into(), u16::from_be(a.sin6_port)))
        }
        _ => None,
    }
}

/// Whether a receive error is an ICMP report waiting in the error queue.
pub fn is_icmp_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    ) || e.raw_os_error() == Some(libc::EHOSTUNREACH)
}

/// Turns UDP generic receive offload off. quinn-udp switches it on, but SIP datagrams differ in
/// size, and coalesced segments would need buffers 64 times larger for no gain.
pub fn disable_gro(fd: RawFd) {
    let off: libc::c_int = 0;
    // SAFETY: as in `enable_error_queue`. Failure is harmless: GRO then stays as it was.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_UDP,
            libc::UDP_GRO,
            &off as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// The raw fd of a tokio socket (for the error queue).
pub fn raw_fd(socket: &tokio::net::UdpSocket) -> RawFd {
    socket.as_raw_fd()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_unreachable_is_read_back_with_the_bounced_payload() {
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let dead = closed.local_addr().unwrap();
        drop(closed);
        let sock = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        sock.send_to(b"INVITE sip:x SIP/2.0\r\n\r\n", dead).unwrap();
        let mut buf = [0u8; 2048];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            match recv_error(sock.as_raw_fd(), &mut buf) {
                Ok((addr, n)) => {
                    assert_eq!(addr, dead);
                    assert_eq!(&buf[..n], b"INVITE sip:x SIP/2.0\r\n\r\n");
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "no ICMP error reported"
                    );
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
}
