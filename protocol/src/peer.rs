//! Where a message came from or goes to: the transport ([`Proto`]), the address and, for TCP and
//! TLS, the connection ([`ConnId`]). The protocol logic names peers with these; the driver maps
//! them to sockets.
//!
//! It must not: hold a socket or a connection, only their identifiers.

use std::net::SocketAddr;

/// Identifies one TCP or TLS connection for the life of the process.
pub type ConnId = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Proto {
    Udp,
    Tcp,
    /// SIP over TLS over TCP.
    Tls,
}

impl Proto {
    /// Reliable transports do not retransmit (RFC 3261 §17).
    pub fn is_reliable(self) -> bool {
        matches!(self, Proto::Tcp | Proto::Tls)
    }
    /// The Via transport token.
    pub fn via_token(self) -> &'static str {
        match self {
            Proto::Udp => "UDP",
            Proto::Tcp => "TCP",
            Proto::Tls => "TLS",
        }
    }
    /// The `transport` URI parameter written for this transport (none for UDP, the default).
    pub fn uri_param(self) -> &'static str {
        match self {
            Proto::Udp => "",
            Proto::Tcp => ";transport=tcp",
            Proto::Tls => ";transport=tls",
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
