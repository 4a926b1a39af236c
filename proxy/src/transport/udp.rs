//! UDP: one SO_REUSEPORT socket per worker and listener, so the kernel spreads carriers across
//! workers, each address claimed for one process first ([`claim`]); and ICMP errors (port unreachable) read back from the socket's error queue, which
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

/// The right of this process to serve a UDP listen address; held until it is dropped.
#[derive(Debug)]
pub struct Claim {
    _name: std::os::unix::net::UnixDatagram,
}

/// Claims `addr` for this process, or fails with `AddrInUse` when another process serves it.
/// Call it before [`bind`]: the kernel lets any process of the same user join a SO_REUSEPORT
/// group, so [`bind`] alone would let a second pointsman take part of the datagrams.
///
/// Two checks. A plain socket (neither SO_REUSEADDR nor SO_REUSEPORT) shares its address with
/// no one, so binding it fails while anything, pointsman or not, is bound there. And an abstract
/// Unix socket named after the address, held for the life of the claim, closes the window
/// between that check and the workers' bind: binding a name is atomic, so of two pointsman
/// started at the same moment only one gets it. Both are scoped to the network namespace, as
/// the address is, and the kernel frees the name when the process ends, however it ends.
pub fn claim(addr: SocketAddr) -> io::Result<Claim> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::linux::net::SocketAddrExt;
    let name = std::os::unix::net::SocketAddr::from_abstract_name(
        format!("pointsman/udp/{addr}").as_bytes(),
    )?;
    let held = std::os::unix::net::UnixDatagram::bind_addr(&name)?;
    let probe = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        probe.set_only_v6(true)?;
    }
    probe.bind(&addr.into())?;
    Ok(Claim { _name: held })
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
    let (n, addr) = recv_msg(fd, buf, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT, |_| {})?;
    Ok((addr, n))
}

/// One `recvmsg(2)`: the datagram into `buf` (truncated to it), its source address, and each
/// control message handed to `on_control` as (level, type, data).
pub(crate) fn recv_msg(
    fd: RawFd,
    buf: &mut [u8],
    flags: libc::c_int,
    mut on_control: impl FnMut((libc::c_int, libc::c_int, &[u8])),
) -> io::Result<(usize, SocketAddr)> {
    // SAFETY: zeroed sockaddr_storage / msghdr are valid; every pointer handed to recvmsg points
    // into locals that outlive the call, with their true lengths; control messages are walked
    // only with the CMSG macros, within `msg_controllen`, and each data slice is bounded by its
    // own cmsg_len.
    unsafe {
        let mut name: libc::sockaddr_storage = std::mem::zeroed();
        let mut control = [0u64; 64];
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
        let n = libc::recvmsg(fd, &mut msg, flags);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let header = libc::CMSG_LEN(0) as usize;
            let len = ((*cmsg).cmsg_len as usize).saturating_sub(header);
            let data = std::slice::from_raw_parts(libc::CMSG_DATA(cmsg), len);
            on_control(((*cmsg).cmsg_level, (*cmsg).cmsg_type, data));
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        let addr = sockaddr_to_std(&name).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "datagram without address")
        })?;
        Ok(((n as usize).min(buf.len()), addr))
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

/// Most datagrams handed to the kernel in one `sendmmsg`.
pub const SEND_BATCH: usize = 32;

/// Sends `msgs` in order with one `sendmmsg` system call (at most [`SEND_BATCH`] of them).
/// Returns how many the kernel took: fewer than asked means the next one failed (its error is
/// what a single send of it would return) or the socket buffer is full.
pub fn send_batch(fd: RawFd, msgs: &[(SocketAddr, &[u8])]) -> io::Result<usize> {
    use std::mem::MaybeUninit;
    let msgs = &msgs[..msgs.len().min(SEND_BATCH)];
    if msgs.is_empty() {
        return Ok(0);
    }
    // Only the entries in use are written: this runs after every receive batch, and zeroing
    // the whole arrays cost more than the loop.
    let mut names = [const { MaybeUninit::<SockAddr>::uninit() }; SEND_BATCH];
    let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; SEND_BATCH];
    let mut hdrs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; SEND_BATCH];
    for (i, (to, bytes)) in msgs.iter().enumerate() {
        let (name, len) = sock_addr(*to);
        let name = names[i].write(name);
        let iov = iovs[i].write(libc::iovec {
            iov_base: bytes.as_ptr() as *mut libc::c_void,
            iov_len: bytes.len(),
        });
        // SAFETY: an all-zero mmsghdr is valid (null pointers, zero lengths).
        let mut hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
        hdr.msg_hdr.msg_name = name as *mut SockAddr as *mut libc::c_void;
        hdr.msg_hdr.msg_namelen = len;
        hdr.msg_hdr.msg_iov = iov;
        hdr.msg_hdr.msg_iovlen = 1;
        hdrs[i].write(hdr);
    }
    // SAFETY: the first `msgs.len()` headers are initialised and point into `names`, `iovs` and
    // the callers' byte slices, all of which outlive the call; lengths are the true lengths.
    let n = unsafe {
        libc::sendmmsg(
            fd,
            hdrs.as_mut_ptr() as *mut libc::mmsghdr,
            msgs.len() as libc::c_uint,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// A socket address as the kernel takes it: IPv4 or IPv6, nothing larger.
#[repr(C)]
#[derive(Clone, Copy)]
union SockAddr {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
}

fn sock_addr(addr: SocketAddr) -> (SockAddr, libc::socklen_t) {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: an all-zero sockaddr_in is valid (sin_zero must be zero).
            let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            };
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            (SockAddr { v4: sin }, len)
        }
        SocketAddr::V6(a) => {
            // SAFETY: an all-zero sockaddr_in6 is valid.
            let mut sin6: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            let len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            (SockAddr { v6: sin6 }, len)
        }
    }
}

/// How full the socket's receive queue is, as a fraction of its buffer (SO_MEMINFO); `None`
/// where the kernel does not say.
pub fn backlog(fd: RawFd) -> Option<f64> {
    // SK_MEMINFO_RMEM_ALLOC = 0, SK_MEMINFO_RCVBUF = 1; newer kernels add more fields.
    let mut info = [0u32; 16];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: a valid fd; the kernel writes at most `len` bytes into `info` and updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr() as *mut libc::c_void,
            &mut len,
        )
    };
    if rc != 0 || (len as usize) < 2 * std::mem::size_of::<u32>() || info[1] == 0 {
        return None;
    }
    Some(f64::from(info[0]) / f64::from(info[1]))
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
    fn an_address_is_claimed_by_one_holder_at_a_time_and_freed_with_the_claim() {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        // A port of our own, free again.
        let free = std::net::UdpSocket::bind(addr)
            .unwrap()
            .local_addr()
            .unwrap();
        let first = claim(free).expect("a free address");
        let workers = [bind(free).unwrap(), bind(free).unwrap()];
        let second = claim(free).unwrap_err();
        assert_eq!(second.kind(), io::ErrorKind::AddrInUse, "{second}");
        drop(workers);
        // The name alone still holds it: a start that overlaps the bind is refused too.
        assert_eq!(claim(free).unwrap_err().kind(), io::ErrorKind::AddrInUse);
        drop(first);
        claim(free).expect("free once the claim is dropped");
        // Anything bound there, pointsman or not, holds it as well.
        let other = std::net::UdpSocket::bind(free).unwrap();
        assert_eq!(claim(free).unwrap_err().kind(), io::ErrorKind::AddrInUse);
        drop(other);
    }

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

    #[test]
    fn a_batch_of_datagrams_to_several_peers_arrives_in_order() {
        let sock = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("[::1]:0").ok();
        let to_a = a.local_addr().unwrap();
        let msgs: Vec<(SocketAddr, &[u8])> = vec![(to_a, b"one"), (to_a, b"two"), (to_a, b"three")];
        assert_eq!(send_batch(sock.as_raw_fd(), &msgs).unwrap(), 3);
        let mut buf = [0u8; 64];
        for want in [&b"one"[..], b"two", b"three"] {
            let (n, from) = a.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], want);
            assert_eq!(from, sock.local_addr().unwrap());
        }
        if let Some(b) = b {
            // An IPv6 peer from an IPv4 socket is refused by the kernel, not garbled.
            let msgs: Vec<(SocketAddr, &[u8])> = vec![(b.local_addr().unwrap(), b"x")];
            assert!(send_batch(sock.as_raw_fd(), &msgs).is_err());
        }
    }

    #[test]
    fn a_batch_to_ipv6_peers_carries_their_addresses_and_ports() {
        let (Ok(sock), Ok(peer)) = (
            bind("[::1]:0".parse().unwrap()),
            std::net::UdpSocket::bind("[::1]:0"),
        ) else {
            return; // no IPv6 loopback on this machine
        };
        let to = peer.local_addr().unwrap();
        let msgs: Vec<(SocketAddr, &[u8])> = vec![(to, b"six"), (to, b"seven")];
        assert_eq!(send_batch(sock.as_raw_fd(), &msgs).unwrap(), 2);
        let mut buf = [0u8; 64];
        for want in [&b"six"[..], b"seven"] {
            let (n, from) = peer.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], want);
            assert_eq!(from, sock.local_addr().unwrap());
        }
    }

    #[test]
    fn backlog_grows_as_datagrams_wait_and_empties_when_read() {
        let sock = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let fd = sock.as_raw_fd();
        assert_eq!(backlog(fd), Some(0.0));
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..20 {
            tx.send_to(&[0u8; 1000], sock.local_addr().unwrap())
                .unwrap();
        }
        let full = backlog(fd).unwrap();
        assert!(full > 0.0, "{full}");
        let mut buf = [0u8; 2000];
        while sock.recv_from(&mut buf).is_ok() {}
        assert_eq!(backlog(fd), Some(0.0));
    }
}
