//! The pair's glue between the node link and the core: what the link delivers goes into the
//! core (peers up and down, replicas, datagrams handed over by the peer), and what the core
//! says for the peers goes onto the link (a datagram for its owner, a call's state).
//!
//! - Link events are read by a task on the link's own runtime (no thread hop between the QUIC
//!   stream and the core). A replica is stored in the core there (no outputs); a handed-over
//!   datagram goes to a worker's inbox, as a TCP message does, and is handled there as if it
//!   had landed on this node. A full inbox drops it: UDP retransmission brings it again.
//! - A replica travels as `(Call-ID, Option<CallState>)` in postcard inside the link's opaque
//!   `Replicate` frame; a frame that does not decode is dropped and logged.
//! - A replica the core asks to be confirmed (a new branch, an answer) goes as `Confirm { seq }`;
//!   the peer stores it and answers `Confirmed`, one frame for every `Confirm` of the burst of
//!   frames it read together, at once; each number goes to the worker that waits (its index is
//!   in the top bits of `seq`). The worker holds what the core said after it
//!   until then, at most [`CONFIRM_WAIT`], or until a peer goes down.
//! - When the link to a peer comes up, each side sends all its calls (`Snapshot` frames, then
//!   `SnapshotDone` with its run's epoch). The receiver's replicas of that peer that the
//!   snapshot did not refresh are settled: adopted when the peer restarted (a new epoch: its
//!   calls died with its old run), dropped when the link only dropped (they ended meanwhile).
//!   A starting node is not ready until a peer's snapshot came, or [`sync_bound`] passed with
//!   no peer answering (a node alone must still take calls).
//!
//! It must not: decide who owns a message or when a call is adopted (the core's `cluster`), or
//! wait on the link (its sends never block).

use crate::link::{Frame, Link, LinkEvent};
use crate::transport::tcp::{Event, EventSink};
use pointsman_protocol::{CallState, Core};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{debug, info, warn};

/// The longest a worker holds a call's sends for the peer's confirmation: on a LAN it comes in
/// well under a millisecond; a peer that is slower is not waited on longer (the call goes on,
/// counted in `pointsman_cluster_unconfirmed_total`).
pub const CONFIRM_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// The confirmation sequence number `n` of worker `worker`.
pub fn confirm_seq(worker: usize, n: u64) -> u64 {
    ((worker as u64) << 48) | (n & ((1 << 48) - 1))
}

/// The worker a confirmation sequence number belongs to.
fn worker_of(seq: u64) -> usize {
    (seq >> 48) as usize
}

/// The histogram of a handed-over datagram's transit through the pair (its buckets are the
/// UDP transit's).
pub const HANDOVER: &str = "pointsman_cluster_handover_seconds";

/// The histogram of a confirmed call state's round trip: sent to the peers → every peer's
/// `Confirmed` (what a worker held the call's sends for; the replication lag of what matters).
pub const CONFIRM_LAG: &str = "pointsman_cluster_confirm_seconds";

/// Link events handled together, at most: the `Confirm`s among them are answered in one frame.
const EVENT_BURST: usize = 64;

/// Calls per `Snapshot` frame: a few hundred KB at most, far under the link's frame bound.
const SNAPSHOT_CHUNK: usize = 64;

/// How long a starting node of a pair waits for a peer's snapshot before it serves as a node
/// alone: a few times the time a dead peer takes to be declared dead, and at least 2 s.
pub fn sync_bound(dead_after: Duration) -> Duration {
    (dead_after * 3).max(Duration::from_secs(2))
}

thread_local! {
    /// Where this thread encodes replicas: kept between them, so an encoding neither grows a
    /// buffer step by step nor takes more than its own size from the allocator (the replica is
    /// freed on the link's thread: a large or oversized block freed across threads costs
    /// glibc's allocator far more than the copy).
    static REPLICA_SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A replica as it travels: `(Call-ID, state)`.
pub fn encode_replica(call_id: &[u8], state: Option<&CallState>) -> Option<Vec<u8>> {
    let replica = (serde_bytes::Bytes::new(call_id), state);
    REPLICA_SCRATCH.with_borrow_mut(|scratch| {
        let mut buffer = std::mem::take(scratch);
        buffer.clear();
        let encoded = postcard::to_extend(&replica, buffer).ok()?;
        let exact = encoded.to_vec();
        *scratch = encoded;
        Some(exact)
    })
}

/// The replica in a `Replicate` frame, or `None` when it does not decode.
pub fn decode_replica(bytes: &[u8]) -> Option<(Vec<u8>, Option<CallState>)> {
    let (call_id, state): (serde_bytes::ByteBuf, Option<CallState>) =
        postcard::from_bytes(bytes).ok()?;
    Some((call_id.into_vec(), state))
}

/// The link as the workers see it: where to send what the core says for the peers.
#[derive(Clone)]
pub struct PairLink {
    link: Arc<Link>,
    peers: Arc<[u16]>,
    handover: metrics::Histogram,
    confirm_lag: metrics::Histogram,
}

impl PairLink {
    pub fn new(link: Arc<Link>, peers: Vec<u16>) -> PairLink {
        PairLink {
            link,
            peers: peers.into(),
            handover: metrics::histogram!(HANDOVER),
            confirm_lag: metrics::histogram!(CONFIRM_LAG),
        }
    }

    /// A call state asked to be confirmed at `asked` was confirmed by every peer.
    pub fn record_confirmed(&self, asked: Instant) {
        self.confirm_lag.record(asked.elapsed().as_secs_f64());
    }

    /// A datagram the peer handed over, taken by the peer's kernel at `received` (since the
    /// Unix epoch), made this node send: its transit through the pair.
    pub fn record_handover(&self, received: Duration) {
        let sent = SystemTime::now().duration_since(UNIX_EPOCH).ok();
        if let Some(transit) = sent.and_then(|s| s.checked_sub(received)) {
            self.handover.record(transit.as_secs_f64());
        }
    }

    /// Hands a datagram that landed here (when the kernel took it: `received`, since the Unix
    /// epoch) to `node`, its call's owner.
    pub fn to_owner(
        &self,
        node: u16,
        bytes: &[u8],
        from: SocketAddr,
        listener: usize,
        received: Option<Duration>,
    ) {
        let frame = Frame::Forward {
            bytes: bytes.to_vec(),
            from,
            listener,
            received: received.and_then(|r| u64::try_from(r.as_nanos()).ok()),
        };
        if let Err(e) = self.link.send(node, frame) {
            // The owner went down since the core looked: the retransmission is adopted here.
            debug!(node, error = ?e, "datagram for its owner not sent");
        }
    }

    /// Tells every peer where call `call_id` stands. With `confirm`, asks each to confirm it
    /// under that sequence number; returns how many peers were asked (0: nothing to wait on).
    pub fn replicate(
        &self,
        call_id: &[u8],
        state: Option<&CallState>,
        confirm: Option<u64>,
    ) -> usize {
        let Some(bytes) = encode_replica(call_id, state) else {
            return 0;
        };
        let Some((&last, others)) = self.peers.split_last() else {
            return 0;
        };
        // A down or slow peer drops it (counted, the peer marked unsynced): never waited on.
        let send = |peer: u16, bytes: Vec<u8>| {
            let frame = match confirm {
                Some(seq) => Frame::Confirm { seq, bytes },
                None => Frame::Replicate(bytes),
            };
            usize::from(self.link.send(peer, frame).is_ok() && confirm.is_some())
        };
        // The last peer takes the encoding itself; the others a copy.
        let asked: usize = others.iter().map(|&peer| send(peer, bytes.clone())).sum();
        asked + send(last, bytes)
    }
}

/// Starts the thread that feeds the link's events to the core and the workers (`sinks`, by
/// index). Fails when the events were taken already.
pub(crate) fn serve_link_events(
    runtime: &tokio::runtime::Handle,
    link: Arc<Link>,
    core: Arc<Core>,
    sinks: Vec<EventSink>,
    bound: Duration,
) -> anyhow::Result<()> {
    let mut events = link
        .events()
        .ok_or_else(|| anyhow::anyhow!("the node link's events were taken already"))?;
    metrics::describe_histogram!(
        HANDOVER,
        "A datagram that landed on the other node and was handed here: its kernel receive there \
         to what it caused leaving here (a transit through the pair; needs the nodes' clocks \
         in sync)"
    );
    metrics::describe_histogram!(
        CONFIRM_LAG,
        "A call state the peers must confirm (a new branch, an answer): sent to every peer's \
         confirmation, what the call's sends were held for"
    );
    metrics::describe_counter!(
        "pointsman_cluster_unconfirmed_total",
        "Call states a worker stopped waiting on after CONFIRM_WAIT without the peer's confirmation"
    );
    let alone = core.clone();
    std::thread::Builder::new()
        .name("pointsman-sync-bound".into())
        .spawn(move || {
            std::thread::sleep(bound);
            if alone.mark_synced(Instant::now()) {
                warn!(
                    waited = ?bound,
                    "no peer sent its calls: serving as a node alone until one comes up"
                );
            }
        })?;
    runtime.spawn(async move {
        let mut state = LinkIn {
            link,
            core,
            sinks,
            next_worker: 0,
            epochs: HashMap::new(),
            confirming: Vec::new(),
        };
        let mut burst = Vec::with_capacity(EVENT_BURST);
        while events.recv_many(&mut burst, EVENT_BURST).await > 0 {
            for event in burst.drain(..) {
                state.handle(event);
            }
            state.confirm_burst();
        }
    });
    Ok(())
}

/// What the task reading the link's events keeps.
struct LinkIn {
    link: Arc<Link>,
    core: Arc<Core>,
    sinks: Vec<EventSink>,
    /// The worker the next handed-over datagram goes to.
    next_worker: usize,
    /// Each peer's run, from its last `SnapshotDone`.
    epochs: HashMap<u16, u64>,
    /// The `Confirm`s of the burst being handled, kept: by peer, their numbers.
    confirming: Vec<(u16, Vec<u64>)>,
}

impl LinkIn {
    fn handle(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Up(peer) => {
                self.core.set_peer_up(peer, true, Instant::now());
                info!(peer, "node link up: exchanging calls");
                self.core.mark_replicas_stale(peer);
                self.send_snapshot(peer);
            }
            LinkEvent::Frame(peer, Frame::Snapshot(bytes)) => {
                match postcard::from_bytes::<Vec<(serde_bytes::ByteBuf, Option<CallState>)>>(&bytes)
                {
                    Ok(calls) => {
                        for (call_id, state) in calls {
                            self.core
                                .store_replica(peer, &call_id, state, Instant::now());
                        }
                    }
                    Err(e) => warn!(peer, error = %e, "a snapshot frame that does not decode"),
                }
            }
            LinkEvent::Frame(peer, Frame::SnapshotDone { epoch }) => {
                let restarted = self.epochs.insert(peer, epoch).is_some_and(|e| e != epoch);
                if let Some(sink) = self.sinks.first() {
                    if !sink.try_deliver(Event::SettleStale {
                        owner: peer,
                        restarted,
                    }) {
                        warn!(
                            peer,
                            "the peer's stale calls could not be settled: worker full"
                        );
                    }
                }
                if self.core.mark_synced(Instant::now()) {
                    info!(
                        peer,
                        replicas = self.core.replicas(),
                        "synced with the peer: ready"
                    );
                }
            }
            LinkEvent::Down(peer, reason) => {
                self.core.set_peer_up(peer, false, Instant::now());
                warn!(
                    peer,
                    reason = reason.label(),
                    "node link down: its calls are adopted here as their messages arrive"
                );
                for sink in &self.sinks {
                    // A full inbox: what waits is released by its CONFIRM_WAIT instead.
                    let _ = sink.try_deliver(Event::PeerDown);
                }
            }
            LinkEvent::Frame(peer, Frame::Replicate(bytes)) => {
                store(&self.core, peer, &bytes);
            }
            LinkEvent::Frame(peer, Frame::Confirm { seq, bytes }) => {
                // Confirmed only once kept: the sender then acts on it.
                if store(&self.core, peer, &bytes) {
                    match self.confirming.iter_mut().find(|(p, _)| *p == peer) {
                        Some((_, seqs)) => seqs.push(seq),
                        None => self.confirming.push((peer, vec![seq])),
                    }
                }
            }
            LinkEvent::Frame(_, Frame::Confirmed(seqs)) => {
                // One event per worker: it releases them all and sends what they held together.
                for (worker, sink) in self.sinks.iter().enumerate() {
                    let mine: Vec<u64> = seqs
                        .iter()
                        .copied()
                        .filter(|&seq| worker_of(seq) == worker)
                        .collect();
                    if !mine.is_empty() {
                        // A full inbox: the wait ends at CONFIRM_WAIT instead.
                        let _ = sink.try_deliver(Event::Confirmed(mine));
                    }
                }
            }
            LinkEvent::Frame(
                peer,
                Frame::Forward {
                    bytes,
                    from,
                    listener,
                    received,
                },
            ) => {
                if self.sinks.is_empty() {
                    return;
                }
                self.next_worker = (self.next_worker + 1) % self.sinks.len();
                let event = Event::Relayed {
                    bytes: bytes.into(),
                    from,
                    listener,
                    received: received.map(Duration::from_nanos),
                };
                if let Some(sink) = self.sinks.get(self.next_worker) {
                    if !sink.try_deliver(event) {
                        debug!(
                            peer,
                            "a datagram handed over by the peer found the worker full: dropped"
                        );
                    }
                }
            }
            // The link reads these itself: a `Hello` opens the stream, a `Packed` is unpacked.
            LinkEvent::Frame(_, Frame::Hello { .. } | Frame::Packed { .. }) => {}
        }
    }

    /// Answers the `Confirm`s of the burst just handled: one `Confirmed` to each peer, at once.
    fn confirm_burst(&mut self) {
        for (peer, seqs) in self.confirming.drain(..) {
            let _ = self.link.send(peer, Frame::Confirmed(seqs));
        }
    }

    /// Sends every call of this node to `peer`, then `SnapshotDone`. A frame the link will not
    /// take now (the peer down again, its queue full) ends it without `SnapshotDone`: the peer
    /// then serves once its own bound passes, and the next link-up sends it all again.
    fn send_snapshot(&self, peer: u16) {
        let calls = self.core.snapshot(Instant::now());
        let count = calls.len();
        for chunk in calls.chunks(SNAPSHOT_CHUNK) {
            let part: Vec<(&serde_bytes::Bytes, Option<&CallState>)> = chunk
                .iter()
                .map(|(id, state)| (serde_bytes::Bytes::new(id), Some(state)))
                .collect();
            let Ok(bytes) = postcard::to_stdvec(&part) else {
                continue;
            };
            if self.link.send(peer, Frame::Snapshot(bytes)).is_err() {
                warn!(peer, "snapshot not sent whole: the link would not take it");
                return;
            }
        }
        // What was dropped for the peer before is in the snapshot: it is synced again once
        // the snapshot went whole (a drop after this marks it again).
        let was_unsynced = self.link.take_unsynced(peer);
        let done = Frame::SnapshotDone {
            epoch: self.link.epoch(),
        };
        if self.link.send(peer, done).is_ok() {
            info!(peer, calls = count, was_unsynced, "snapshot sent");
        }
    }
}

/// Stores a replica from `peer`; false when it does not decode or the store is full.
fn store(core: &Core, peer: u16, bytes: &[u8]) -> bool {
    match decode_replica(bytes) {
        Some((call_id, state)) => {
            let kept = core.store_replica(peer, &call_id, state, Instant::now());
            if !kept {
                warn!(peer, "replica store full: a call of the peer is not kept");
            }
            kept
        }
        None => {
            warn!(peer, "a replica that does not decode: dropped");
            false
        }
    }
}
