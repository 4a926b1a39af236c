//! Handing established streams to a forwarder outside the plane (the driver's kernel relay):
//! what a handed-over stream is ([`HandedStream`], [`RtpRewrite`]), what the forwarder reports
//! back ([`HandedCounters`]), and the interface the plane calls ([`StreamOffload`]).
//!
//! The plane decides: it hands over the two RTP streams of an answered call once their
//! sources are latched and the carrier-bound normalisation is fixed (an answered call switches
//! no more), and takes them back before anything that could change them (a new SDP from either
//! side, the call's end) and before its ports return to the pool. A forwarder that cannot take
//! a stream says so and the plane goes on relaying it itself: handing over is an optimisation,
//! never a condition of a packet's delivery.

use std::net::SocketAddr;
use std::time::Duration;

/// A stream's forwarding: where a datagram that reaches a relay port from `peer` goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandedStream {
    /// The only source forwarded; anything else still reaches the plane.
    pub peer: SocketAddr,
    /// The relay port the datagram leaves from.
    pub out_from: SocketAddr,
    /// Where it goes.
    pub out_to: SocketAddr,
    /// RTP header edits (the carrier-bound direction of a normalised stream), or none: the
    /// datagram goes unchanged but for its addresses.
    pub rewrite: Option<RtpRewrite>,
    /// RTCP multiplexed on the port (RTP or SRTP lines) still goes to the plane, which sends it
    /// where the peer's RTCP goes and fixes its SSRCs; only a line of another transport (T.38)
    /// has every datagram forwarded as it is.
    pub rtcp_to_plane: bool,
}

/// The RTP header edits of a normalised stream, fixed while it is handed over: exactly what
/// the plane applies to the same stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpRewrite {
    /// The SSRC written.
    pub ssrc: u32,
    /// Added to the sequence number (wrapping).
    pub seq_offset: u16,
    /// Added to the timestamp (wrapping).
    pub ts_offset: u32,
    /// Payload type in → out, 0 to 127.
    pub payload_types: [u8; 128],
}

impl RtpRewrite {
    /// The identity payload-type map.
    pub fn identity_payload_types() -> [u8; 128] {
        std::array::from_fn(|i| i as u8)
    }
}

/// What a forwarder did with one handed-over stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandedCounters {
    /// Datagrams forwarded.
    pub packets: u64,
    /// Their UDP payload bytes.
    pub bytes: u64,
    /// How long ago the last one was forwarded; `None`: none yet.
    pub idle: Option<Duration>,
}

/// A forwarder the plane hands streams to. Called under a session's mutex: it must not call
/// back into the plane, and should be quick (a map update).
pub trait StreamOffload: Send + Sync + std::fmt::Debug {
    /// Forwards what reaches relay port `at` as `stream` says, from now on; false if it
    /// cannot (the plane keeps relaying it).
    fn install(&self, at: SocketAddr, stream: &HandedStream) -> bool;
    /// Stops forwarding for relay port `at`: its next datagram reaches the plane. Returns the
    /// stream's last counters, or none if it had none there.
    fn remove(&self, at: SocketAddr) -> Option<HandedCounters>;
    /// What it forwarded for relay port `at` so far.
    fn counters(&self, at: SocketAddr) -> Option<HandedCounters>;
}
