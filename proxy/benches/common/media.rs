//! The media relay's packet path as the benches drive it: a plane with one hot-hot session
//! whose two clouds answered with SDP, and the packets each side sends. Built through the
//! plane's public API, the way the core builds a session.

// Each bench uses what it needs of the rig.
#![allow(dead_code)]

use pointsman_protocol::media::{
    sdp, Forwards, MediaConfig, MediaMetrics, MediaPlane, MediaSession, SessionTimeouts, SocketId,
};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

pub const RELAY: &str = "192.0.2.50";
pub const CARRIER_MEDIA: &str = "198.51.100.7:40000";
pub const CLOUD_MEDIA: [&str; 2] = ["127.0.0.1:41000", "127.0.0.1:42000"];

fn sdp_of(media: &str) -> sdp::SdpSummary {
    let (ip, port) = media.split_once(':').unwrap();
    let text = format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\n"
    );
    sdp::inspect(text.as_bytes()).unwrap()
}

/// A 20 ms PCMA packet (172 bytes on the wire).
pub fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 8];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0xd5; 160]);
    p
}

/// A plane holding one hot-hot session with both clouds answered and cloud 0 heard.
pub struct MediaRig {
    pub plane: MediaPlane,
    pub session: MediaSession,
    /// The relay socket the carrier sends to.
    pub carrier_socket: SocketId,
    /// The relay sockets each cloud sends to.
    pub cloud_sockets: [SocketId; 2],
    pub now: Instant,
    pub out: Forwards,
}

impl MediaRig {
    pub fn new() -> MediaRig {
        let relay: IpAddr = RELAY.parse().unwrap();
        let plane = MediaPlane::new(
            MediaConfig {
                carrier_ip: relay,
                cloud_ip: relay,
                port_min: 30000,
                port_max: 30099,
                silence: None,
                silence_comfort_noise: Duration::from_secs(1),
                strict_source: false,
            },
            MediaMetrics::noop(),
        );
        let now = Instant::now();
        let carrier: SocketAddr = CARRIER_MEDIA.parse().unwrap();
        let session = plane
            .open(
                1,
                &sdp_of(CARRIER_MEDIA),
                carrier.ip(),
                SessionTimeouts::default(),
            )
            .unwrap();
        let socket_of = |port: u16| {
            let to = SocketAddr::new(relay, port);
            plane
                .sockets()
                .into_iter()
                .find(|(_, a)| *a == to)
                .unwrap()
                .0
        };
        let carrier_socket = socket_of(session.carrier_endpoints().ports[0].unwrap());
        let mut cloud_sockets = [SocketId(0); 2];
        for (i, media) in CLOUD_MEDIA.iter().enumerate() {
            let cloud: SocketAddr = media.parse().unwrap();
            let ends = session.add_branch(i, cloud.ip()).unwrap();
            cloud_sockets[i] = socket_of(ends.ports[0].unwrap());
            session.on_answer(i, &sdp_of(media));
        }
        let mut rig = MediaRig {
            plane,
            session,
            carrier_socket,
            cloud_sockets,
            now,
            out: Forwards::new(),
        };
        // Cloud 0 is heard; every leg has latched.
        rig.cloud_packet(0, 1);
        rig.cloud_packet(1, 1);
        rig.carrier_packet(1);
        rig
    }

    /// A packet from the carrier, copied to both clouds; returns how many copies.
    pub fn carrier_packet(&mut self, seq: u16) -> usize {
        let mut p = rtp(seq, 0xcafe);
        self.out.clear();
        self.plane.on_packet(
            self.carrier_socket,
            CARRIER_MEDIA.parse().unwrap(),
            &mut p,
            self.now,
            &mut self.out,
        );
        self.out.len()
    }

    /// A packet from cloud `i`: normalised to the carrier when heard, suppressed when not.
    pub fn cloud_packet(&mut self, i: usize, seq: u16) -> usize {
        let mut p = rtp(seq, 0x1000 + i as u32);
        self.out.clear();
        self.plane.on_packet(
            self.cloud_sockets[i],
            CLOUD_MEDIA[i].parse().unwrap(),
            &mut p,
            self.now,
            &mut self.out,
        );
        self.out.len()
    }

    /// The same on a packet the caller keeps (no allocation in the measured loop).
    pub fn relay(&mut self, socket: SocketId, from: SocketAddr, packet: &mut [u8]) -> usize {
        self.out.clear();
        self.plane
            .on_packet(socket, from, packet, self.now, &mut self.out);
        self.out.len()
    }
}
