//! The pair, as the core sees it: which node owns a message that arrived here, the calls the
//! other nodes replicated to this one, and a call adopted from a replica when its owner is down.
//!
//! - **Owner.** A response names its node in the branch pointsman wrote
//!   (`z9hG4bK-ps<node hex>-…`); an in-dialog request in the `psn=` of our Record-Route, now its
//!   first Route; an INVITE retransmission, a CANCEL or a non-2xx ACK carries neither, and is
//!   matched by its Call-ID to a replica, which names its owner.
//! - **Forward.** A UDP message owned by a peer that is up, and not held here, goes to that peer
//!   as it was received ([`Output::ToNode`]); the peer handles it as if it had landed there, and
//!   answers from the same anycast address. A message that came over the link is never sent on
//!   again. TCP and TLS connections end on one node, so their messages are always handled here.
//! - **Adopt.** A message owned by a peer that is down is handled here: the call's replica, if
//!   one came, is restored first ([`Core::restore_call`]), so the call goes on (its timers
//!   re-armed from the replicated deadlines, its branches keeping their ids, so what is sent
//!   again is a retransmission and never a second call). A call is adopted when a message for
//!   it arrives (lazily): a node whose link alone failed, its peer still serving, never acts on
//!   the peer's calls that the network still delivers to the peer.
//! - **Syncing.** A node that started has not yet got its peers' calls: a message it holds
//!   nothing of may be of a call a peer adopted from its previous run (the ids name this node),
//!   so a response or in-dialog request it does not hold goes to a peer that is up, which adopts
//!   or answers it; with no peer up it is dropped (`syncing`), and its retransmission finds the
//!   node synced. One that a peer handed here (the peer holds the call's replica from this
//!   node's previous run, not adopted yet) is dropped too (`syncing`): handled here it would be
//!   taken for a ghost's; its retransmission finds the call adopted by the peer. New requests are handled here. For [`SETTLE_GRACE`] after the sync a message
//!   it holds nothing of still goes to a peer that is up: the peer adopts the calls of this
//!   node's previous run only once it has this node's snapshot, and tells it a moment later.
//! - **Replicate.** After each message and timer that touched a call, the core says where the
//!   call stands ([`Output::Replicate`]): in setup, answered, or over (`None`, once, for a call
//!   that was replicated). A new branch and an answer are asked to be confirmed, and put before
//!   the sends they cause: the peers know the branch before its INVITE leaves (a survivor
//!   re-sends it as a retransmission, and takes the caller's retransmitted INVITE for the same
//!   call), and the dialog before the 2xx does.
//!
//! It must not: send anything itself, wait on a peer, or keep replicas without bound.

use super::*;
use std::collections::HashMap;
use tracing::info;

/// How long after a node synced a message it holds nothing of still goes to a peer that is up
/// (see the module's **Syncing**): the peer's adoption of this node's previous calls reaches it
/// within milliseconds; a message that names this node after that and is held nowhere is a
/// ghost's or a stray's, and is handled here.
pub(super) const SETTLE_GRACE: Duration = Duration::from_secs(5);

/// Replicas kept when the config names no table cap: far above a node's calls in setup plus
/// answered calls, far below what would hurt it.
pub(super) const DEFAULT_MAX_REPLICAS: usize = 200_000;

/// How long a replica is kept without an update: a call in setup is over long before
/// (Timer C, ring timeouts), an answered call's replica is renewed by nothing, so it is kept as
/// long as the longest call.
fn replica_ttl(state: &CallState) -> Duration {
    match state {
        CallState::Setup(_) => Duration::from_secs(600),
        CallState::Answered(_) => MAX_CALL_DURATION,
    }
}

/// The other nodes and the calls they replicated here.
pub(super) struct Cluster {
    peers: Vec<Peer>,
    /// When the peers' calls came (a snapshot), or no peer answered in time: unset while this
    /// node is syncing. Read on every datagram, so lock-free.
    synced_at: std::sync::OnceLock<Instant>,
    replicas: Mutex<Replicas>,
    /// Calls of this node replicated to the peers and not yet forgotten (keyed Call-ID hashes),
    /// with how far the peers know them ([`Known`]): a call is forgotten once, and a step the
    /// peers must have before it is acted on is asked to be confirmed.
    shared: KeyMap<Known>,
}

/// A peer as the link reports it.
struct Peer {
    id: u16,
    up: AtomicBool,
    /// When the link declared it dead, until the first of its calls is taken over here (the
    /// takeover's duration is measured from it).
    down_since: Mutex<Option<Instant>>,
}

struct Replicas {
    by_call_id: HashMap<Vec<u8>, Replica>,
    max: usize,
}

struct Replica {
    owner: u16,
    state: CallState,
    /// When the latest state came.
    received: Instant,
    expires: Instant,
    /// Not refreshed by the owner's snapshot under way (see [`Core::settle_stale_replicas`]).
    stale: bool,
}

impl Cluster {
    pub(super) fn new(peers: &[u16], max_replicas: usize) -> Cluster {
        Cluster {
            peers: peers
                .iter()
                .map(|&id| Peer {
                    id,
                    up: AtomicBool::new(false),
                    down_since: Mutex::new(None),
                })
                .collect(),
            synced_at: std::sync::OnceLock::new(),
            replicas: Mutex::new(Replicas {
                by_call_id: HashMap::new(),
                max: max_replicas,
            }),
            shared: table::new_table(),
        }
    }

    fn peer(&self, node: u16) -> Option<&Peer> {
        self.peers.iter().find(|p| p.id == node)
    }

    fn knows(&self, node: u16) -> bool {
        self.peer(node).is_some()
    }

    fn is_up(&self, node: u16) -> bool {
        self.peer(node)
            .is_some_and(|p| p.up.load(Ordering::Acquire))
    }

    fn synced(&self) -> bool {
        self.synced_at.get().is_some()
    }

    /// Not synced yet, or synced less than [`SETTLE_GRACE`] ago.
    fn settling(&self, now: Instant) -> bool {
        self.synced_at
            .get()
            .is_none_or(|at| now.saturating_duration_since(*at) < SETTLE_GRACE)
    }

    fn first_up_peer(&self) -> Option<u16> {
        self.peers
            .iter()
            .find(|p| p.up.load(Ordering::Acquire))
            .map(|p| p.id)
    }

    /// How long ago `node` was declared dead, if this is the first of its calls taken over
    /// since.
    fn first_takeover(&self, node: u16, now: Instant) -> Option<Duration> {
        let since = lock(&self.peer(node)?.down_since).take()?;
        Some(now.saturating_duration_since(since))
    }

    fn owner_of_replica(&self, call_id: &[u8]) -> Option<u16> {
        lock(&self.replicas)
            .by_call_id
            .get(call_id)
            .map(|r| r.owner)
    }

    /// The replica of `call_id` and its owner, taken, if its owner is down.
    fn take_orphan(&self, call_id: &[u8]) -> Option<(u16, CallState)> {
        let mut r = lock(&self.replicas);
        let owner = r.by_call_id.get(call_id).map(|rep| rep.owner)?;
        if self.is_up(owner) {
            return None;
        }
        r.by_call_id.remove(call_id).map(|rep| (owner, rep.state))
    }

    fn take_replica(&self, call_id: &[u8]) -> Option<CallState> {
        lock(&self.replicas)
            .by_call_id
            .remove(call_id)
            .map(|r| r.state)
    }
}

/// How far the peers know a call of this node.
#[derive(Clone, PartialEq, Eq)]
enum Known {
    /// In setup, with this many branches.
    Branches(usize),
    /// Answered: the dialog (what a snapshot exports it by).
    Answered(Box<DialogId>),
}

/// The node id in a branch pointsman wrote (`z9hG4bK-ps<hex>-…`).
fn node_of_branch(branch: &[u8]) -> Option<u16> {
    let rest = branch.strip_prefix(BRANCH_PREFIX.as_bytes())?;
    let end = rest.iter().position(|&b| b == b'-')?;
    let hex = std::str::from_utf8(rest.get(..end)?).ok()?;
    u16::from_str_radix(hex, 16).ok()
}

/// Who owns a received message, and what this node holds of it.
struct Owner {
    node: u16,
    /// This node has the transaction or dialog already (it adopted the call, or owns it).
    held_here: bool,
}

impl Core {
    /// Whether this node is one of a pair (`[cluster]` configured).
    pub fn is_clustered(&self) -> bool {
        self.cluster.is_some()
    }

    /// Whether this node has its peers' calls (always, for a node alone): until then it is not
    /// ready, and hands what it does not hold to a peer (see the module's **Syncing**).
    pub fn is_synced(&self) -> bool {
        self.cluster.as_ref().is_none_or(Cluster::synced)
    }

    /// A peer's snapshot came, or no peer answered within the bound, at `now`: this node is
    /// ready. Returns whether it was not before.
    pub fn mark_synced(&self, now: Instant) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|c| c.synced_at.set(now).is_ok())
    }

    /// The link reports peer `node` up or down (declared dead) at `now`.
    pub fn set_peer_up(&self, node: u16, up: bool, now: Instant) {
        let Some(peer) = self.cluster.as_ref().and_then(|c| c.peer(node)) else {
            return;
        };
        let was_up = peer.up.swap(up, Ordering::AcqRel);
        let mut down_since = lock(&peer.down_since);
        if up {
            *down_since = None;
        } else if was_up {
            *down_since = Some(now);
        }
    }

    /// Peer `owner` says where its call `call_id` stands (`None`: it is over). Kept until the
    /// owner updates or forgets it, its owner being down makes this node adopt it, or it
    /// expires. Returns false when the store is full (the replica is not kept: the caller
    /// counts the peer unsynced).
    pub fn store_replica(
        &self,
        owner: u16,
        call_id: &[u8],
        state: Option<CallState>,
        now: Instant,
    ) -> bool {
        let Some(c) = &self.cluster else { return false };
        let mut r = lock(&c.replicas);
        let Some(state) = state else {
            r.by_call_id.remove(call_id);
            self.metrics().replicas(r.by_call_id.len());
            return true;
        };
        if r.by_call_id.len() >= r.max && !r.by_call_id.contains_key(call_id) {
            // Full: what has expired goes first.
            r.by_call_id.retain(|_, rep| rep.expires > now);
            if r.by_call_id.len() >= r.max {
                return false;
            }
        }
        let mut state = state;
        if let (CallState::Setup(s), Some(earlier)) = (&mut state, r.by_call_id.get_mut(call_id)) {
            if let CallState::Setup(e) = &mut earlier.state {
                s.complete_from(e);
            }
        }
        let expires = now + replica_ttl(&state);
        r.by_call_id.insert(
            call_id.to_vec(),
            Replica {
                owner,
                state,
                received: now,
                expires,
                stale: false,
            },
        );
        self.metrics().replicas(r.by_call_id.len());
        true
    }

    /// Every call of this node as the peers need it when the link to one (re)starts: calls in
    /// setup and answered dialogs, by Call-ID.
    pub fn snapshot(&self, now: Instant) -> Vec<(Vec<u8>, CallState)> {
        let Some(cluster) = &self.cluster else {
            return Vec::new();
        };
        let mut all: Vec<(Vec<u8>, CallState)> = self
            .calls()
            .iter()
            .filter_map(|call| {
                let c = lock(call);
                if c.phase != CallPhase::Trying {
                    return None;
                }
                let call_id = c.request().map(|r| r.slice(r.call_id).to_vec())?;
                Some((call_id, self.export_locked(&c, now, None)))
            })
            .collect();
        let dialogs: Vec<DialogId> = cluster
            .shared
            .iter()
            .filter_map(|e| match e.value() {
                Known::Answered(id) => Some((**id).clone()),
                Known::Branches(_) => None,
            })
            .collect();
        all.extend(dialogs.into_iter().filter_map(|id| {
            let state = self.export_dialog(&id, now)?;
            Some((id.call_id, state))
        }));
        all
    }

    /// The link to `owner` (re)started and its snapshot is coming: until a replica of it is
    /// refreshed by that snapshot, it is stale.
    pub fn mark_replicas_stale(&self, owner: u16) {
        if let Some(c) = &self.cluster {
            for r in lock(&c.replicas).by_call_id.values_mut() {
                if r.owner == owner {
                    r.stale = true;
                }
            }
        }
    }

    /// `owner` finished its snapshot: a replica it did not refresh is a call it no longer holds.
    /// With `restarted` (a new run of that node: its calls died with the old one, and no
    /// message for them came here while it was down), the call becomes this node's, and is
    /// replicated back with this node as owner; otherwise (the link only dropped) it ended
    /// while the link was down, and is dropped. Returns how many were adopted.
    pub fn settle_stale_replicas(
        &self,
        owner: u16,
        restarted: bool,
        now: Instant,
        out: &mut Vec<Output>,
    ) -> usize {
        let Some(cluster) = &self.cluster else {
            return 0;
        };
        let stale: Vec<(Vec<u8>, CallState)> = {
            let mut r = lock(&cluster.replicas);
            let ids: Vec<Vec<u8>> = r
                .by_call_id
                .iter()
                .filter(|(_, rep)| rep.owner == owner && rep.stale)
                .map(|(id, _)| id.clone())
                .collect();
            let taken = ids
                .into_iter()
                .filter_map(|id| Some((id.clone(), r.by_call_id.remove(&id)?.state)))
                .collect();
            self.metrics().replicas(r.by_call_id.len());
            taken
        };
        if !restarted {
            return 0;
        }
        let mut adopted = 0;
        for (call_id, state) in stale {
            let answered = matches!(state, CallState::Answered(_));
            if self.restore_call(state.clone(), now, out).is_ok() {
                adopted += 1;
                self.metrics().adopted(answered);
                self.share(cluster, &call_id, Some(state), out.len(), out);
            }
        }
        if adopted > 0 {
            info!(
                owner,
                adopted, "adopted the calls a restarted node no longer holds"
            );
        }
        adopted
    }

    /// Replicas held for the peers now.
    pub fn replicas(&self) -> usize {
        self.cluster
            .as_ref()
            .map_or(0, |c| lock(&c.replicas).by_call_id.len())
    }

    /// Before a message is handled: forwards it to its owner (returns true: nothing more to
    /// do here), or adopts the owner's replica of its call when the owner is down (returns
    /// false: handle it here).
    pub(super) fn to_owner(
        &self,
        msg: &Message<'_>,
        inb: Inbound<'_>,
        now: Instant,
        out: &mut Vec<Output>,
    ) -> bool {
        let Some(cluster) = &self.cluster else {
            return false;
        };
        if inb.framing != Framing::Datagram {
            return false;
        }
        let owner = self.owner(cluster, msg);
        if cluster.settling(now) {
            // Named this node (or no node) and held nothing of here: it may be a call of this
            // node's previous run that a peer holds, which only the peer can tell.
            let named_here = owner
                .as_ref()
                .is_none_or(|o| o.node == self.cfg.node_id || !cluster.knows(o.node));
            let held = || {
                owner
                    .as_ref()
                    .map_or_else(|| self.holds(msg), |o| o.held_here)
            };
            if named_here && !held() {
                if !inb.relayed {
                    if let Some(peer) = cluster.first_up_peer() {
                        return self.hand_to(peer, inb, out);
                    }
                }
                // One a peer handed here holds only this node's old replica there, which the
                // peer adopts once it has this node's snapshot: handled here it would be taken
                // for a ghost. Its retransmission finds the call adopted.
                if inb.relayed || !cluster.synced() {
                    self.metrics().dropped(DropReason::Syncing);
                    return true;
                }
            }
        }
        let Some(owner) = owner else {
            return false;
        };
        if owner.held_here || owner.node == self.cfg.node_id || !cluster.knows(owner.node) {
            return false;
        }
        if cluster.is_up(owner.node) && !inb.relayed {
            return self.hand_to(owner.node, inb, out);
        }
        if let Some(state) = cluster.take_replica(msg.slice(msg.call_id)) {
            self.adopt(cluster, owner.node, msg.slice(msg.call_id), state, now, out);
        }
        false
    }

    /// Takes over `state`, node `owner`'s call `call_id` held here as its replica (its owner is
    /// down): restored, counted, and shared with the peers as this node's.
    fn adopt(
        &self,
        cluster: &Cluster,
        owner: u16,
        call_id: &[u8],
        state: CallState,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        let answered = matches!(state, CallState::Answered(_));
        match self.restore_call(state.clone(), now, out) {
            Ok(()) => {
                self.metrics().adopted(answered);
                if let Some(took) = cluster.first_takeover(owner, now) {
                    self.metrics().takeover(took);
                }
                // This node's call now: in its snapshots, and told to the peers.
                self.share(cluster, call_id, Some(state), out.len(), out);
                info!(
                    owner,
                    call_id = %String::from_utf8_lossy(call_id),
                    "adopted a call of a node that is down"
                );
            }
            Err(e) => warn!(owner, error = %e, "replica not adopted"),
        }
    }

    /// The replicas held for peers that are down, as of `now`: owner, state, and how long
    /// since the state came.
    pub(super) fn orphaned_replicas(&self, now: Instant) -> Vec<(u16, CallState, Duration)> {
        let Some(c) = &self.cluster else {
            return Vec::new();
        };
        let r = lock(&c.replicas);
        r.by_call_id
            .values()
            .filter(|rep| rep.expires > now && !c.is_up(rep.owner))
            .map(|rep| {
                (
                    rep.owner,
                    rep.state.clone(),
                    now.saturating_duration_since(rep.received),
                )
            })
            .collect()
    }

    /// Adopts the call `call_id` if this node holds it as the replica of a peer that is down
    /// (an operator acts on it here).
    pub(super) fn adopt_orphan(&self, call_id: &[u8], now: Instant, out: &mut Vec<Output>) {
        let Some(cluster) = &self.cluster else { return };
        if let Some((owner, state)) = cluster.take_orphan(call_id) {
            self.adopt(cluster, owner, call_id, state, now, out);
        }
    }

    /// Hands datagram `inb` to `node`, which holds (or may hold) its call: nothing more to do
    /// here.
    fn hand_to(&self, node: u16, inb: Inbound<'_>, out: &mut Vec<Output>) -> bool {
        out.push(Output::ToNode {
            node,
            bytes: Bytes::copy_from_slice(inb.bytes),
            from: inb.from.addr,
            listener: inb.listener,
        });
        self.metrics().forwarded_to_owner();
        true
    }

    /// The node that owns `msg`'s call, if it can be told: the node a replica of the call came
    /// from (it may have adopted the call from the node its ids name), else the node its branch
    /// or Route names.
    fn owner(&self, cluster: &Cluster, msg: &Message<'_>) -> Option<Owner> {
        let replica_owner = cluster.owner_of_replica(msg.slice(msg.call_id));
        if !msg.is_request() {
            let named = msg
                .top_via
                .branch
                .and_then(|b| node_of_branch(msg.slice(b)));
            let node = replica_owner.or(named)?;
            return Some(Owner {
                node,
                held_here: self.response_held(msg),
            });
        }
        let method = msg.method()?;
        // A CANCEL is matched to its INVITE, and so is the ACK of a non-2xx answer; the ACK of
        // a 2xx and every other request with a To tag follow the dialog's Route.
        let in_dialog = msg.to.tag.is_some() && method != Method::Cancel;
        if in_dialog && !(method == Method::Ack && self.invite_held(msg)) {
            if let Some(named) = self.route_node(msg) {
                let node = replica_owner.unwrap_or(named);
                return Some(Owner {
                    node,
                    held_here: self.in_dialog_held(msg),
                });
            }
        }
        let node = replica_owner?;
        let held_here = match method {
            Method::Invite | Method::Ack | Method::Cancel => self.invite_held(msg),
            _ => self.dialog_held(msg),
        };
        Some(Owner { node, held_here })
    }

    /// Whether this node has what `msg` (whose owner cannot be told) is for: the transaction of
    /// a response, the INVITE of a CANCEL or ACK, the dialog or transaction of an in-dialog
    /// request. A new request is for whichever node it lands on.
    fn holds(&self, msg: &Message<'_>) -> bool {
        if !msg.is_request() {
            return self.response_held(msg);
        }
        match msg.method() {
            Some(Method::Cancel | Method::Ack) => self.invite_held(msg) || self.in_dialog_held(msg),
            Some(_) if msg.to.tag.is_some() => self.in_dialog_held(msg),
            _ => true,
        }
    }

    /// Whether response `msg`'s client transaction is here.
    fn response_held(&self, msg: &Message<'_>) -> bool {
        self.keys
            .client_of_response(msg)
            .is_some_and(|key| self.client(key).is_some())
    }

    /// Whether the INVITE server transaction of request `msg` (an INVITE, its CANCEL or ACK)
    /// is here.
    fn invite_held(&self, msg: &Message<'_>) -> bool {
        self.server(self.keys.server_with_class(msg, MethodClass::Invite))
            .is_some()
    }

    /// Whether in-dialog request `msg`'s dialog, or its own transaction, is here.
    fn in_dialog_held(&self, msg: &Message<'_>) -> bool {
        self.dialog_held(msg) || self.server(self.keys.server(msg)).is_some()
    }

    /// The `psn=` of the first Route, when it is ours.
    fn route_node(&self, msg: &Message<'_>) -> Option<u16> {
        let first = msg.routes(HeaderName::Route).find_map(Result::ok)?;
        if !is_own_uri(msg.slice(first.uri)) {
            return None;
        }
        let uri = wire::parse_uri(msg.buf, first.uri).ok()?;
        let psn = wire::uri_param(msg.buf, uri.params, b"psn")?;
        std::str::from_utf8(msg.slice(psn)).ok()?.parse().ok()
    }

    /// Whether the answered dialog of in-dialog request `msg` is held here.
    fn dialog_held(&self, msg: &Message<'_>) -> bool {
        let (Some(from), Some(to)) = (msg.from.tag, msg.to.tag) else {
            return false;
        };
        let key = self.dialog_key_of(msg.slice(msg.call_id), msg.slice(from), msg.slice(to));
        self.answered.contains_key(&key)
    }

    /// After `msg` was handled (its outputs appended to `out` from `mark` on): where its call
    /// stands now, for the peers.
    pub(super) fn replicate_after(
        &self,
        msg: &Message<'_>,
        now: Instant,
        mark: usize,
        out: &mut Vec<Output>,
    ) {
        let Some(cluster) = &self.cluster else { return };
        let call_id = msg.slice(msg.call_id);
        let method = if !msg.is_request() {
            Some(msg.cseq_method)
        } else {
            msg.method()
        };
        if let (Some(Method::Invite), Some(200..=299)) = (method, msg.code()) {
            // The answer: from now on the peers keep the dialog, not the call in setup.
            if let (Some(from), Some(to)) = (msg.from.tag, msg.to.tag) {
                let id = DialogId {
                    call_id: call_id.to_vec(),
                    caller_tag: msg.slice(from).to_vec(),
                    callee_tag: msg.slice(to).to_vec(),
                };
                if let Some(state) = self.export_dialog(&id, now) {
                    self.share(cluster, call_id, Some(state), mark, out);
                }
            }
            return;
        }
        if msg.code() == Some(100) {
            // A 100 only stops the branch's retransmissions: a survivor that did not hear of
            // it retransmits once and gets it again. Not worth a replica on every call.
            return;
        }
        match method {
            Some(Method::Invite | Method::Cancel | Method::Ack) => {
                let call = if !msg.is_request() {
                    match self
                        .keys
                        .client_of_response(msg)
                        .and_then(|k| self.client(k))
                    {
                        Some(ClientEntry::Branch(call, _)) => Some(call),
                        _ => None,
                    }
                } else {
                    match self.server(self.keys.server_with_class(msg, MethodClass::Invite)) {
                        Some(ServerEntry::Call(call)) => Some(call),
                        _ => None,
                    }
                };
                if let Some(call) = call {
                    // The message's Call-ID: a finished call may no longer keep its INVITE.
                    self.share_call(cluster, lock(&call), call_id, now, mark, out);
                }
            }
            Some(Method::Bye) if !self.dialog_held(msg) => {
                self.share(cluster, call_id, None, mark, out)
            }
            _ => {}
        }
    }

    /// After a message or timer touched call `call` (its outputs appended to `out` from `mark`
    /// on): where it stands now, for the peers.
    pub(super) fn replicate_call(
        &self,
        call: &Arc<Mutex<Call>>,
        now: Instant,
        mark: usize,
        out: &mut Vec<Output>,
    ) {
        let Some(cluster) = &self.cluster else { return };
        let c = lock(call);
        let Some(call_id) = c.request().map(|r| r.slice(r.call_id).to_vec()) else {
            return;
        };
        self.share_call(cluster, c, &call_id, now, mark, out);
    }

    /// Where the locked call `c` (Call-ID `call_id`) stands, for the peers: its state in setup,
    /// its end, or nothing once answered (the 2xx replicated the dialog).
    fn share_call(
        &self,
        cluster: &Cluster,
        c: MutexGuard<'_, Call>,
        call_id: &[u8],
        now: Instant,
        mark: usize,
        out: &mut Vec<Output>,
    ) {
        let key = self.keys.of(&[call_id]);
        let state = match c.phase {
            CallPhase::Trying => {
                // The peers have the INVITEs of a state sent before (the link is ordered; a
                // frame it dropped marks the peer unsynced, and the snapshot that syncs it
                // again is whole).
                let known = match cluster.shared.get(&key).as_deref() {
                    Some(Known::Branches(n)) => Some(*n),
                    _ => None,
                };
                Some(self.export_locked(&c, now, known))
            }
            CallPhase::Finished => None,
            CallPhase::Answered => return,
        };
        drop(c);
        self.share_keyed(cluster, key, call_id, state, mark, out);
    }

    /// Emits the replication of `call_id`: a state, or its end (once, and only for a call the
    /// peers were told of). A state the peers must have before this node acts on it (a new
    /// branch: a survivor must re-send it as a retransmission, never as a second call; an
    /// answer) goes before the outputs from `mark` on, asking to be confirmed: the driver holds
    /// what follows it until the peers have it.
    pub(super) fn share(
        &self,
        cluster: &Cluster,
        call_id: &[u8],
        state: Option<CallState>,
        mark: usize,
        out: &mut Vec<Output>,
    ) {
        self.share_keyed(cluster, self.keys.of(&[call_id]), call_id, state, mark, out);
    }

    /// [`Core::share`] for a caller that has the Call-ID's key already.
    fn share_keyed(
        &self,
        cluster: &Cluster,
        key: u64,
        call_id: &[u8],
        state: Option<CallState>,
        mark: usize,
        out: &mut Vec<Output>,
    ) {
        let Some(state) = state else {
            if cluster.shared.remove(&key).is_some() {
                out.push(Output::Replicate {
                    call_id: Bytes::copy_from_slice(call_id),
                    state: None,
                    confirm: false,
                });
            }
            return;
        };
        let known = match &state {
            CallState::Setup(s) => Known::Branches(s.branches.len()),
            CallState::Answered(a) => Known::Answered(Box::new(a.id.clone())),
        };
        let confirm = match (cluster.shared.insert(key, known), &state) {
            (Some(Known::Branches(n)), CallState::Setup(s)) => s.branches.len() > n,
            (None, CallState::Setup(s)) => !s.branches.is_empty(),
            // Answered before: a later state is never a new branch or a new answer.
            (Some(Known::Answered(_)), _) => false,
            (_, CallState::Answered(_)) => true,
        };
        let replicate = Output::Replicate {
            call_id: Bytes::copy_from_slice(call_id),
            state: Some(Box::new(state)),
            confirm,
        };
        if confirm && mark <= out.len() {
            out.insert(mark, replicate);
        } else {
            out.push(replicate);
        }
    }
}

#[cfg(test)]
mod unit {
    use super::node_of_branch;

    #[test]
    fn the_node_of_a_branch_is_read_as_hex() {
        assert_eq!(node_of_branch(b"z9hG4bK-ps1f-0a0b0c0d-7"), Some(0x1f));
        assert_eq!(node_of_branch(b"z9hG4bK-ps2-0a0b0c0d-7"), Some(2));
        assert_eq!(node_of_branch(b"z9hG4bK-other"), None);
        assert_eq!(node_of_branch(b"z9hG4bK-psZZ-1-2"), None);
        assert_eq!(node_of_branch(b"z9hG4bK-ps1"), None);
    }
}
