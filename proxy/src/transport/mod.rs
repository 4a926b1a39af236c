//! Transports: UDP (one SO_REUSEPORT socket per worker) and TCP (framing, connection reuse, idle
//! timeout, connection limit). They move bytes between sockets and the workers and report
//! delivery failures (ICMP port unreachable, connect refused, reset, write error) back as branch
//! failures. They never interpret SIP beyond framing a stream.

pub mod tcp;
pub mod udp;

use std::net::SocketAddr;

/// Identifies one TCP (later TLS) connection for the life of the process.
pub type ConnId = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    Udp,
    Tcp,
}

impl Proto {
    /// Reliable transports do not retransmit (RFC 3261 §17).
    pub fn is_reliable(self) -> bool {
        matches!(self, Proto::Tcp)
    }
    /// The Via transport token.
    pub fn via_token(self) -> &'static str {
        match self {
            Proto::Udp => "UDP",
            Proto::Tcp => "TCP",
        }
    }
}

/// Where a message came from or goes to. `conn` pins a reply to the connection a request
/// arrived on; `None` means "any connection to `addr`, or a new one".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    pub proto: Proto,
    pub addr: SocketAddr,
    pub conn: Option<ConnId>,
}

impl Peer {
    pub fn udp(addr: SocketAddr) -> Peer {
        Peer {
            proto: Proto::Udp,
            addr,
            conn: None,
        }
    }
}
