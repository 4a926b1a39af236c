//! The pair's glue between the node link and the core: what the link delivers goes into the
//! core (peers up and down, replicas, datagrams handed over by the peer), and what the core
//! says for the peers goes onto the link (a datagram for its owner, a call's state).
//!
//! - Link events are read on a thread of their own ("pointsman-link-in"). A replica is stored
//!   in the core there (no outputs); a handed-over datagram goes to a worker's inbox, as a TCP
//!   message does, and is handled there as if it had landed on this node. A full inbox drops
//!   it, counted: UDP retransmission brings it again.
//! - A replica travels as `(Call-ID, Option<CallState>)` in postcard inside the link's opaque
//!   `Replicate` frame; a frame that does not decode is dropped and logged.
//!
//! It must not: decide who owns a message or when a call is adopted (the core's `cluster`), or
//! wait on the link (its sends never block).

use crate::link::{Frame, Link, LinkEvent};
use crate::transport::tcp::{Event, EventSink};
use pointsman_protocol::{CallState, Core};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tracing::{debug, info, warn};

/// A replica as it travels: `(Call-ID, state)`.
pub fn encode_replica(call_id: &[u8], state: Option<&CallState>) -> Option<Vec<u8>> {
    postcard::to_stdvec(&(call_id, state)).ok()
}

/// The replica in a `Replicate` frame, or `None` when it does not decode.
pub fn decode_replica(bytes: &[u8]) -> Option<(Vec<u8>, Option<CallState>)> {
    postcard::from_bytes(bytes).ok()
}

/// The link as the workers see it: where to send what the core says for the peers.
#[derive(Clone)]
pub struct PairLink {
    link: Arc<Link>,
    peers: Arc<[u16]>,
}

impl PairLink {
    pub fn new(link: Arc<Link>, peers: Vec<u16>) -> PairLink {
        PairLink {
            link,
            peers: peers.into(),
        }
    }

    /// Hands a datagram that landed here to `node`, its call's owner.
    pub fn to_owner(&self, node: u16, bytes: &[u8], from: SocketAddr, listener: usize) {
        let frame = Frame::Forward {
            bytes: bytes.to_vec(),
            from,
            listener,
        };
        if let Err(e) = self.link.send(node, frame) {
            // The owner went down since the core looked: the retransmission is adopted here.
            debug!(node, error = ?e, "datagram for its owner not sent");
        }
    }

    /// Tells every peer where call `call_id` stands.
    pub fn replicate(&self, call_id: &[u8], state: Option<&CallState>) {
        let Some(bytes) = encode_replica(call_id, state) else {
            return;
        };
        for &peer in self.peers.iter() {
            // A down or slow peer drops it (counted, the peer marked unsynced): never waited on.
            let _ = self.link.send(peer, Frame::Replicate(bytes.clone()));
        }
    }
}

/// Starts the thread that feeds the link's events to the core and the workers (`sinks`, by
/// index). Fails when the events were taken already.
pub(crate) fn serve_link_events(
    link: &Link,
    core: Arc<Core>,
    sinks: Vec<EventSink>,
) -> anyhow::Result<()> {
    let mut events = link
        .events()
        .ok_or_else(|| anyhow::anyhow!("the node link's events were taken already"))?;
    std::thread::Builder::new()
        .name("pointsman-link-in".into())
        .spawn(move || {
            let mut next_worker = 0usize;
            while let Some(event) = events.blocking_recv() {
                handle(&core, &sinks, &mut next_worker, event);
            }
        })?;
    Ok(())
}

fn handle(core: &Core, sinks: &[EventSink], next_worker: &mut usize, event: LinkEvent) {
    match event {
        LinkEvent::Up(peer) => {
            core.set_peer_up(peer, true);
            info!(peer, "node link up");
        }
        LinkEvent::Down(peer, reason) => {
            core.set_peer_up(peer, false);
            warn!(
                peer,
                reason = reason.label(),
                "node link down: its calls are adopted here as their messages arrive"
            );
        }
        LinkEvent::Frame(peer, Frame::Replicate(bytes)) => match decode_replica(&bytes) {
            Some((call_id, state)) => {
                if !core.store_replica(peer, &call_id, state, Instant::now()) {
                    warn!(peer, "replica store full: a call of the peer is not kept");
                }
            }
            None => warn!(peer, "a replica that does not decode: dropped"),
        },
        LinkEvent::Frame(
            peer,
            Frame::Forward {
                bytes,
                from,
                listener,
            },
        ) => {
            if sinks.is_empty() {
                return;
            }
            *next_worker = (*next_worker + 1) % sinks.len();
            let event = Event::Relayed {
                bytes: bytes.into(),
                from,
                listener,
            };
            if let Some(sink) = sinks.get(*next_worker) {
                if !sink.try_deliver(event) {
                    debug!(
                        peer,
                        "a datagram handed over by the peer found the worker full: dropped"
                    );
                }
            }
        }
        LinkEvent::Frame(_, Frame::Hello { .. }) => {}
    }
}
