//! Transports: UDP (one SO_REUSEPORT socket per worker), TCP (framing, connection reuse, idle
//! timeout, connection limit) and TLS (rustls over the same TCP connections: [`tls`]). They move bytes between sockets and the workers and report
//! delivery failures (ICMP port unreachable, connect refused, reset, write error) back as branch
//! failures. They never interpret SIP beyond framing a stream.

pub mod kernel_relay;
pub mod media;
pub(crate) mod tcp;
pub mod tls;
pub mod udp;

pub use pointsman_protocol::{ConnId, Peer, Proto};
