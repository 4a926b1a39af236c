//! The kernel relay on real sockets: each test runs on a thread of its own in a network
//! namespace of its own (only a loopback, gone with the thread), attaches the program to that
//! loopback, and sends real datagrams through it. They need root (CAP_BPF, CAP_NET_ADMIN), as
//! CI has; a build without the program (no clang) ignores them, saying so.

use super::*;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Instant;

const LO: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// Runs `test` on a thread in a fresh network namespace whose loopback is up.
fn in_own_netns(test: impl FnOnce() + Send + 'static) {
    // SAFETY: geteuid(2) reads the process's effective user id; no memory is involved.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "the kernel relay tests need root (eBPF, tc): run as root, as CI does"
    );
    let thread = std::thread::spawn(move || {
        // SAFETY: unshare takes no pointers; CLONE_NEWNET moves only this thread.
        let unshared = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            unshared,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        loopback_up();
        test();
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// Sets `lo` up in the calling thread's namespace (SIOCSIFFLAGS).
fn loopback_up() {
    let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
    // SAFETY: an all-zero ifreq is a valid value of the C struct.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    use std::os::fd::AsRawFd;
    // SAFETY: the ioctls read and write the ifreq we own, on a socket we own.
    unsafe {
        assert_eq!(
            libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr),
            0
        );
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        assert_eq!(libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr), 0);
    }
}

fn udp(port: u16) -> UdpSocket {
    let s = UdpSocket::bind(SocketAddrV4::new(LO, port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s
}

fn addr(s: &UdpSocket) -> SocketAddr {
    s.local_addr().unwrap()
}

fn v4(s: &UdpSocket) -> SocketAddrV4 {
    match addr(s) {
        SocketAddr::V4(a) => a,
        other => panic!("not IPv4: {other}"),
    }
}

/// An RTP packet: PCMA unless `pt`, with the given sequence, timestamp and SSRC, and a
/// payload that names it.
fn rtp(pt: u8, marker: bool, seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, (u8::from(marker) << 7) | pt];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(b"payload of the cloud's greeting, byte for byte");
    p
}

/// Receives one datagram within the socket's timeout, or none.
fn recv(s: &UdpSocket) -> Option<(Vec<u8>, std::net::SocketAddr)> {
    let mut buf = [0u8; 2048];
    s.recv_from(&mut buf)
        .ok()
        .map(|(n, from)| (buf[..n].to_vec(), from))
}

/// A call's sockets on the loopback: the cloud (the peer), the relay's cloud-facing port
/// (where the cloud sends), the relay's carrier-facing port (where the packet leaves from)
/// and the carrier (where it goes).
struct Call {
    cloud: UdpSocket,
    relay_cloud: UdpSocket,
    relay_carrier: UdpSocket,
    carrier: UdpSocket,
}

impl Call {
    fn new() -> Call {
        Call {
            cloud: udp(0),
            relay_cloud: udp(0),
            relay_carrier: udp(0),
            carrier: udp(0),
        }
    }

    fn normalised(&self, rewrite: RtpRewrite) -> HandedStream {
        HandedStream {
            peer: addr(&self.cloud),
            out_from: addr(&self.relay_carrier),
            out_to: addr(&self.carrier),
            rewrite: Some(rewrite),
            rtcp_to_plane: true,
        }
    }
}

/// In a namespace of its own: the program attached to the loopback, a call's sockets, and the
/// cloud's stream to the carrier installed, normalised by [`rewrite`].
fn with_a_normalised_stream(test: impl FnOnce(&KernelRelay, &Call) + Send + 'static) {
    in_own_netns(|| {
        let relay = KernelRelay::attach(&["lo"]).unwrap();
        let call = Call::new();
        relay
            .install(addr(&call.relay_cloud), &call.normalised(rewrite()))
            .unwrap();
        test(&relay, &call);
    });
}

fn rewrite() -> RtpRewrite {
    let mut payload_types = RtpRewrite::identity_payload_types();
    payload_types[101] = 96; // the cloud's telephone-event is the carrier's 96
    RtpRewrite {
        ssrc: 0x5017_5A1E,
        seq_offset: 0xFFF0, // wraps
        ts_offset: 0xFFFF_FF00,
        payload_types,
    }
}

#[test]
#[cfg_attr(
    not(pointsman_kernel_relay),
    ignore = "built without the kernel relay: clang was missing (apt-get install clang llvm libbpf-dev)"
)]
fn an_installed_stream_reaches_the_carrier_from_the_relay_port_with_pointsmans_rtp_header() {
    with_a_normalised_stream(|relay, call| {
        let before = Instant::now();
        let sent = rtp(8, false, 100, 16_000, 0xC10D);
        call.cloud.send_to(&sent, v4(&call.relay_cloud)).unwrap();
        let (got, from) = recv(&call.carrier).expect("the carrier got the packet");
        assert_eq!(
            from,
            std::net::SocketAddr::V4(v4(&call.relay_carrier)),
            "it left from the relay's carrier port"
        );
        assert_eq!(got.len(), sent.len());
        assert_eq!(got[0], 0x80);
        assert_eq!(got[1], 8, "PCMA stays PCMA, no marker added");
        assert_eq!(
            u16::from_be_bytes([got[2], got[3]]),
            100u16.wrapping_add(0xFFF0)
        );
        assert_eq!(
            u32::from_be_bytes([got[4], got[5], got[6], got[7]]),
            16_000u32.wrapping_add(0xFFFF_FF00)
        );
        assert_eq!(
            u32::from_be_bytes([got[8], got[9], got[10], got[11]]),
            0x5017_5A1E
        );
        assert_eq!(got[12..], sent[12..], "the payload is untouched");

        // A DTMF event with the marker: the type is mapped, the marker kept.
        call.cloud
            .send_to(&rtp(101, true, 101, 16_160, 0xC10D), v4(&call.relay_cloud))
            .unwrap();
        let (got, _) = recv(&call.carrier).expect("the carrier got the event");
        assert_eq!(got[1], 0x80 | 96);

        call.relay_cloud.set_nonblocking(true).unwrap();
        assert!(
            recv(&call.relay_cloud).is_none(),
            "user space never saw them"
        );
        let counters = relay.counters(addr(&call.relay_cloud)).unwrap();
        assert_eq!(counters.packets, 2);
        assert_eq!(counters.bytes, (2 * sent.len()) as u64);
        let idle = counters.idle.expect("a packet was seen");
        assert!(idle <= before.elapsed());
    });
}

#[test]
#[cfg_attr(
    not(pointsman_kernel_relay),
    ignore = "built without the kernel relay: clang was missing (apt-get install clang llvm libbpf-dev)"
)]
fn a_datagram_with_a_full_checksum_arrives_with_a_checksum_the_receiver_accepts() {
    with_a_normalised_stream(|_relay, call| {
        // A raw socket sends the datagram with its whole UDP checksum computed (a regular
        // socket on the loopback leaves it to an offload that never runs), so the receiving
        // stack verifies it, and drops the datagram if the program's edits broke it.
        let payload = rtp(8, false, 7, 1_120, 0xC10D);
        let (src, dst) = (v4(&call.cloud), v4(&call.relay_cloud));
        let datagram = udp_datagram(src, dst, &payload);
        send_raw(&datagram, dst);
        let (got, _) = recv(&call.carrier).expect("the carrier accepted the datagram's checksum");
        assert_eq!(
            u32::from_be_bytes([got[8], got[9], got[10], got[11]]),
            0x5017_5A1E
        );
        // And a datagram whose checksum was wrong to begin with is still refused.
        let mut broken = udp_datagram(src, dst, &payload);
        broken[6] ^= 0x5A;
        send_raw(&broken, dst);
        assert!(recv(&call.carrier).is_none(), "a bad checksum stays bad");
    });
}

#[test]
#[cfg_attr(
    not(pointsman_kernel_relay),
    ignore = "built without the kernel relay: clang was missing (apt-get install clang llvm libbpf-dev)"
)]
fn strangers_rtcp_and_a_removed_stream_reach_user_space_untouched() {
    with_a_normalised_stream(|relay, call| {
        let port = addr(&call.relay_cloud);
        call.carrier
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();

        // Another source: user space decides (and drops) it.
        let stranger = udp(0);
        let packet = rtp(8, false, 1, 160, 0xBAD);
        stranger.send_to(&packet, port).unwrap();
        let (got, from) =
            recv(&call.relay_cloud).expect("the stranger's packet reached user space");
        assert_eq!(
            (got, from),
            (packet.clone(), stranger.local_addr().unwrap())
        );

        // RTCP multiplexed on the RTP port (a receiver report, type 201).
        let rtcp = [0x81, 201, 0, 7, 0, 0, 0xC1, 0x0D, 0, 0, 0, 0, 0, 0, 0, 0];
        call.cloud.send_to(&rtcp, port).unwrap();
        let (got, _) = recv(&call.relay_cloud).expect("RTCP reached user space");
        assert_eq!(got, rtcp);

        // Not RTP at all on a normalised stream.
        let junk = [0x00u8; 20];
        call.cloud.send_to(&junk, port).unwrap();
        assert_eq!(
            recv(&call.relay_cloud).expect("junk reached user space").0,
            junk
        );
        assert!(recv(&call.carrier).is_none(), "none of them was forwarded");

        // Removed: the next packet of the stream itself goes to user space.
        let last = relay.remove(port).expect("the stream was installed");
        assert_eq!(last.packets, 0);
        call.cloud.send_to(&packet, port).unwrap();
        assert_eq!(recv(&call.relay_cloud).expect("user space again").0, packet);
        assert!(relay.counters(port).is_none());
        assert!(relay.remove(port).is_none());
    });
}

#[test]
#[cfg_attr(
    not(pointsman_kernel_relay),
    ignore = "built without the kernel relay: clang was missing (apt-get install clang llvm libbpf-dev)"
)]
fn unnormalised_streams_go_byte_for_byte_and_the_program_leaves_with_its_owner() {
    in_own_netns(|| {
        let call = Call::new();
        let port = addr(&call.relay_cloud);
        {
            let relay = KernelRelay::attach(&["lo"]).unwrap();
            // A T.38 line: every datagram is forwarded as it is, whatever it looks like.
            let t38 = HandedStream {
                rewrite: None,
                rtcp_to_plane: false,
                ..call.normalised(rewrite())
            };
            relay.install(port, &t38).unwrap();
            let opaque = b"\x06\x00udptl: opaque to the relay".to_vec();
            let rtcp_like = [0x81, 201, 0, 3, 0, 0, 0xC1, 0x0D, 0, 0, 0, 1, 0, 0, 0, 0];
            for datagram in [&opaque[..], &rtcp_like[..]] {
                call.cloud.send_to(datagram, port).unwrap();
                assert_eq!(recv(&call.carrier).expect("forwarded").0, datagram);
            }
            // An SRTP line: forwarded unchanged, but its multiplexed SRTCP goes to user space.
            let srtp = HandedStream {
                rtcp_to_plane: true,
                ..t38
            };
            relay.install(port, &srtp).unwrap();
            let srtp_packet = rtp(8, false, 9, 1_440, 0xC10D);
            call.cloud.send_to(&srtp_packet, port).unwrap();
            assert_eq!(
                recv(&call.carrier).expect("forwarded").0,
                srtp_packet,
                "unchanged"
            );
            call.cloud.send_to(&rtcp_like, port).unwrap();
            assert_eq!(recv(&call.relay_cloud).expect("user space").0, rtcp_like);
        }
        // Dropped: the tcx link is gone, and the port's packets reach user space again.
        let packet = rtp(8, false, 3, 480, 0xC10D);
        call.cloud.send_to(&packet, port).unwrap();
        assert_eq!(recv(&call.relay_cloud).expect("user space").0, packet);
    });
}

/// A UDP header and `payload`, with the whole checksum over the IPv4 pseudo-header.
fn udp_datagram(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let len = (8 + payload.len()) as u16;
    let mut d = Vec::with_capacity(len as usize);
    d.extend_from_slice(&src.port().to_be_bytes());
    d.extend_from_slice(&dst.port().to_be_bytes());
    d.extend_from_slice(&len.to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(payload);
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
        }
    };
    add(&src.ip().octets());
    add(&dst.ip().octets());
    add(&[0, 17]);
    add(&len.to_be_bytes());
    add(&d);
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    let checksum = match !(sum as u16) {
        0 => 0xFFFF,
        c => c,
    };
    d[6..8].copy_from_slice(&checksum.to_be_bytes());
    d
}

/// Sends a UDP datagram (header included) from a raw socket; the kernel adds the IP header.
fn send_raw(datagram: &[u8], to: SocketAddrV4) {
    // SAFETY: socket takes no pointers; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_UDP) };
    assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(*to.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: the buffer and the address are ours and live across the call; the fd is ours.
    let sent = unsafe {
        let sent = libc::sendto(
            fd,
            datagram.as_ptr().cast(),
            datagram.len(),
            0,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        libc::close(fd);
        sent
    };
    assert_eq!(sent, datagram.len() as isize);
}

#[test]
#[cfg_attr(
    not(pointsman_kernel_relay),
    ignore = "built without the kernel relay: clang was missing (apt-get install clang llvm libbpf-dev)"
)]
fn ipv6_streams_are_refused_and_stay_with_user_space() {
    in_own_netns(|| {
        let relay = KernelRelay::attach(&["lo"]).unwrap();
        let v6: SocketAddr = "[::1]:5004".parse().unwrap();
        let stream = HandedStream {
            peer: v6,
            out_from: v6,
            out_to: v6,
            rewrite: None,
            rtcp_to_plane: true,
        };
        assert!(matches!(
            relay.install(v6, &stream),
            Err(KernelRelayError::NotIpv4(_))
        ));
        assert!(!StreamOffload::install(&relay, v6, &stream));
        assert!(relay.counters(v6).is_none());
    });
}

#[test]
fn the_interfaces_are_those_that_hold_the_media_addresses() {
    let loopback = std::net::IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5));
    assert_eq!(
        interfaces_holding(&[loopback, std::net::IpAddr::V4(LO)]).unwrap(),
        ["lo"],
        "a loopback address is the loopback's, once"
    );
    assert!(carries_ethernet("lo"));
    assert!(!carries_ethernet("no-such-interface"));
    let nobodys = std::net::IpAddr::V4(Ipv4Addr::new(192, 0, 2, 77));
    let err = interfaces_holding(&[loopback, nobodys]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no interface of this host holds the media address 192.0.2.77"
    );
}
