//! The kernel relay between two networks, as at the carrier edge: a relay host with one
//! interface toward the carrier and another toward a cloud (network namespaces the test makes,
//! veth links, addresses from 198.18.0.0/15), the eBPF program attached to both, and real
//! datagrams each way. What the loopback tests in `pointsman::transport::kernel_relay` cannot
//! show: a stream leaves by the other interface, to the next hop's MAC, resolved by the
//! kernel's neighbour code when the relay has not talked to that host yet.

mod support;

use pointsman::transport::kernel_relay::{interfaces_holding, KernelRelay};
use pointsman_protocol::media::offload::{HandedStream, RtpRewrite};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;
use support::netns::Lab;

const CARRIER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const RELAY_CARRIER_SIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const RELAY_CLOUD_SIDE: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 1);
const CLOUD: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 2);

fn bind_in(ns: &str, ip: Ipv4Addr, port: u16) -> UdpSocket {
    Lab::within(ns, move || {
        let s = UdpSocket::bind((ip, port)).expect("bind");
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        s
    })
}

fn rtp(seq: u16, ts: u32, ssrc: u32, tag: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 8];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(tag);
    p
}

fn recv(s: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = [0u8; 2048];
    s.recv_from(&mut buf)
        .ok()
        .map(|(n, from)| (buf[..n].to_vec(), from))
}

#[test]
fn a_stream_crosses_from_the_carrier_interface_to_the_cloud_interface_and_back() {
    assert!(
        KernelRelay::built(),
        "pointsman was built without the kernel relay: apt-get install clang llvm libbpf-dev \
         (.ci/run does)"
    );
    let mut lab = Lab::new();
    let carrier_ns = lab.host("carrier", IpAddr::V4(CARRIER));
    let relay_ns = lab.host("relay", IpAddr::V4(RELAY_CARRIER_SIDE));
    // The cloud is only on its own link to the relay: the relay's second interface, `ic`.
    let cloud_ns = lab.host("cloud", IpAddr::V4(Ipv4Addr::new(198, 18, 9, 9)));
    lab.cable(
        (&relay_ns, IpAddr::V4(RELAY_CLOUD_SIDE)),
        (&cloud_ns, IpAddr::V4(CLOUD)),
    );

    // As the node does: the interfaces that hold its two media addresses.
    let relay = Lab::within(&relay_ns, || {
        let names =
            interfaces_holding(&[IpAddr::V4(RELAY_CARRIER_SIDE), IpAddr::V4(RELAY_CLOUD_SIDE)])?;
        assert_eq!(names, ["eth0", "ic"]);
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        KernelRelay::attach(&names)
    });
    let relay = relay.expect("the kernel relay attaches to both interfaces");
    let carrier = bind_in(&carrier_ns, CARRIER, 4000);
    let cloud = bind_in(&cloud_ns, CLOUD, 5000);
    // The relay's own ports: bound, so that a packet the program did not take is seen.
    let relay_carrier_port = bind_in(&relay_ns, RELAY_CARRIER_SIDE, 30000);
    let relay_cloud_port = bind_in(&relay_ns, RELAY_CLOUD_SIDE, 30002);
    let at = |s: &UdpSocket| s.local_addr().expect("local address");

    relay
        .install(
            at(&relay_carrier_port),
            &HandedStream {
                peer: at(&carrier),
                out_from: at(&relay_cloud_port),
                out_to: at(&cloud),
                rewrite: None,
                rtcp_to_plane: true,
            },
        )
        .expect("carrier → cloud");
    relay
        .install(
            at(&relay_cloud_port),
            &HandedStream {
                peer: at(&cloud),
                out_from: at(&relay_carrier_port),
                out_to: at(&carrier),
                rewrite: Some(RtpRewrite {
                    ssrc: 0x5017_5A1E,
                    seq_offset: 1000,
                    ts_offset: 160_000,
                    payload_types: RtpRewrite::identity_payload_types(),
                }),
                rtcp_to_plane: true,
            },
        )
        .expect("cloud → carrier");

    // Carrier → cloud: out of the relay's other interface, to a host it never talked to.
    for seq in 0..3u16 {
        let sent = rtp(seq, 160 * u32::from(seq), 0xCA11, b"carrier's voice");
        carrier
            .send_to(&sent, at(&relay_carrier_port))
            .expect("send");
        let (got, from) = recv(&cloud).expect("the cloud got the carrier's packet");
        assert_eq!((got, from), (sent, at(&relay_cloud_port)));
    }
    // Cloud → carrier, normalised.
    for seq in 0..3u16 {
        let sent = rtp(seq, 160 * u32::from(seq), 0xC10D, b"cloud's greeting");
        cloud.send_to(&sent, at(&relay_cloud_port)).expect("send");
        let (got, from) = recv(&carrier).expect("the carrier got the cloud's packet");
        assert_eq!(from, at(&relay_carrier_port));
        assert_eq!(u16::from_be_bytes([got[2], got[3]]), seq + 1000);
        assert_eq!(
            u32::from_be_bytes([got[4], got[5], got[6], got[7]]),
            160 * u32::from(seq) + 160_000
        );
        assert_eq!(
            u32::from_be_bytes([got[8], got[9], got[10], got[11]]),
            0x5017_5A1E
        );
        assert_eq!(&got[12..], b"cloud's greeting");
    }
    // The relay's sockets saw none of it: the kernel forwarded every packet.
    for s in [&relay_carrier_port, &relay_cloud_port] {
        s.set_nonblocking(true).expect("nonblocking");
        assert!(recv(s).is_none(), "user space saw a forwarded packet");
    }
    for s in [&relay_carrier_port, &relay_cloud_port] {
        let counters = relay.counters(at(s)).expect("counters");
        assert_eq!(counters.packets, 3);
    }
}
