//! Simulated SIP peers on real sockets: carriers that place calls and clouds that answer them
//! by script (answer, reject, ring forever, stay silent, answer late), all writing what they
//! send and receive into one shared [`Journal`]. The end-to-end tests drive pointsman with
//! them, and `pointsman drill` shows a newcomer failover with them.
//!
//! With media, clouds stream marked RTP from a [`MediaPeer`] per call and carriers record what
//! they hear with one; [`analyse`] judges it as the one continuous stream a carrier expects.
//!
//! They are honest SIP peers (they ACK, answer CANCEL with 487, retransmit 2xx until ACKed,
//! follow the route set), so what the tests observe is what a real carrier or cloud would see.
//! A [`DnsServer`] answers the RFC 3263 lookups of destinations given by name.
//!
//! They must not share state with the pointsman under test: only packets cross.

mod carrier;
mod cloud;
mod dns;
mod endpoint;
mod journal;
mod msg;
mod net;
mod rtp;

pub use carrier::Carrier;
pub use cloud::{Behaviour, Cloud, Step};
pub use dns::{DnsServer, Rec};
pub use endpoint::{Endpoint, Received, TlsClient};
pub use journal::{header_value, independent_read, Dir, Entry, Journal, Summary};
pub use msg::{
    body, cancel_for, new_branch, response, response_with, response_with_sdp, sdp_answer,
    sdp_media_addr, sdp_offer, sdp_rtcp_addr, uri_addr, Dialog, InviteSpec, SimTransport,
};
pub use net::StampedUdp;
pub use rtp::{analyse, parse_rtp, rtcp_rr_bye, Heard, MediaAnalysis, MediaPeer, Switch, PTIME};
