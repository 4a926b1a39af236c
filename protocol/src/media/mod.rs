//! Media anchoring for hot-hot early media, sans-IO: SDP rewriting (`sdp`), the RTP header edits
//! (`rtp`), the relay's port pool (`ports`), each call's media session with its selection,
//! normalisation and silence detection (`session`), and the plane that holds them and takes
//! every packet ([`MediaPlane`]). The driver owns the sockets: it binds what the plane lists, feeds
//! it received packets with `now`, and sends what it says.
//!
//! # What the relay does with a call
//!
//! The carrier's INVITE offer opens a [`MediaSession`] with one port pair per `m=` line on the
//! carrier side; each fork (branch) gets its own pair per line on the cloud side. Carrier RTP/RTCP
//! is copied unchanged to every live branch whose address is known (fan-out). Of the branches'
//! streams only the *selected* one reaches the carrier, normalised into one continuous stream:
//! the session's own SSRC, sequence numbers continued across switches, timestamps continued by
//! wall clock in the output codec's clock, the marker bit on the first packet after a switch, and
//! payload types renumbered to the reference answer's (the first answer the session saw). SRTP
//! and UDPTL lines are passed through unchanged (a header edit would break SRTP's authentication;
//! UDPTL is not RTP): the switch is best effort. Non-selected branches' packets are counted as
//! dropped with reason `standby` (suppressed by design, not a fault).
//!
//! Selection: the first eligible branch (one that answered with SDP, and not a cold standby)
//! whose RTP arrives; a more preferred (lower index) branch starting later takes over once
//! (`Preferred`), unless it was switched away from for silence. Switches: [`MediaSession::branch_failed`]
//! (immediate), an RTCP BYE from the selected branch (on that packet; the BYE is not forwarded),
//! RTP silence (checked when a standby's packet arrives: the selected branch sent ≥ 3 packets
//! and its last is older than the threshold), and the answer. A failed branch is never selected
//! again before the answer, and gets no copies of the carrier's media; its ports stay allocated
//! until the answer or close (a 2xx may still race the CANCEL). Silence threshold:
//! [`MediaConfig::silence`], else max(3 × ptime, 60 ms) with the branch's `a=ptime` (else the
//! offer's, else 20 ms); [`MediaConfig::silence_comfort_noise`] (suggested 1 s) when the branch's
//! answer negotiated comfort noise. A failure that leaves no branch with media selects nothing;
//! the next eligible branch to send is selected and counted as a switch for that failure.
//!
//! # Source policy
//!
//! Default, *latch*: a packet on a leg's socket is accepted if its source IP is the one the leg's
//! SDP named or the leg's signalling IP; the first accepted packet on each of the leg's sockets
//! latches its exact source address and port, which then also becomes where media for the leg is
//! sent (symmetric RTP), and later packets from anywhere else are dropped (`stranger`). A new SDP
//! naming a different address for the line unlatches it. *Strict* ([`MediaConfig::strict_source`]):
//! only the exact address:port the SDP named (RTP port, or the RTCP address for the RTCP socket).
//! Packets to a port no session owns are dropped (`no_session`); packets too short for their
//! headers or not version 2 (`malformed`). SRTP lines are checked by their clear headers only;
//! UDPTL and unknown transports only for being non-empty.
//!
//! # Concurrency
//!
//! The plane is `Send + Sync`. The socket table is a `Vec` indexed by [`SocketId`] of
//! `ArcSwapOption` slots naming the owning session, leg and line: the packet path loads one slot
//! and takes the session's mutex for the few field updates, and allocates nothing. Lock order:
//! the session map, then a session's mutex, then a port pool's; never the other way round
//! (closing releases the session's mutex before it frees ports and leaves the map).
//!
//! It must not: open sockets, read clocks, spawn tasks, or allocate on the packet path.

pub mod metrics;
pub mod offload;
mod ports;
pub mod rtp;
pub mod sdp;
mod session;

use arc_swap::ArcSwapOption;
use smallvec::SmallVec;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use self::metrics::DropReason;
pub use self::metrics::MediaMetrics;
use self::offload::StreamOffload;
use self::ports::PortPool;
use self::sdp::SdpSummary;
pub use self::session::MediaSession;
use self::session::{LegId, SessionShared};

/// The relay's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaConfig {
    /// Relay address toward the carrier: bound, and written into SDP sent to the carrier.
    pub carrier_ip: IpAddr,
    /// Relay address toward the clouds.
    pub cloud_ip: IpAddr,
    /// Lowest port of the range used on each side IP (inclusive).
    pub port_min: u16,
    /// Highest port of the range used on each side IP (inclusive).
    pub port_max: u16,
    /// Silence that switches away from the selected branch before the answer. `None`:
    /// max(3 × ptime, 60 ms), ptime from the branch's SDP (default 20 ms).
    pub silence: Option<Duration>,
    /// The silence threshold for a branch whose answer negotiated comfort noise (a CN codec or
    /// `a=silenceSupp:on`), which may legitimately pause for a long time; 1 s is suggested
    /// ([`DEFAULT_SILENCE_COMFORT_NOISE`]).
    pub silence_comfort_noise: Duration,
    /// Accept media only from the exact address:port the SDP named (else: latch, see the
    /// module documentation).
    pub strict_source: bool,
}

/// The suggested [`MediaConfig::silence_comfort_noise`]: long enough for CN's pauses between
/// SID frames (typically 100–500 ms), short enough to cut a dead branch within a second.
pub const DEFAULT_SILENCE_COMFORT_NOISE: Duration = Duration::from_secs(1);

/// The silence floor: SIPp's RTP sender leaves ~40 ms holes, which must not switch.
pub const SILENCE_FLOOR: Duration = Duration::from_millis(60);

/// An index into the plane's socket table (dense, `0..n`, in [`MediaPlane::sockets`] order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(pub u32);

/// Where a received packet must go: (the socket to send from, the destination), one per copy.
pub type Forwards = SmallVec<[(SocketId, SocketAddr); 4]>;

/// Per-call timeouts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionTimeouts {
    /// Post-answer inactivity: no RTP and no RTCP from a side for this long →
    /// [`MediaEvent::Inactive`]. `None`: off.
    pub media_timeout: Option<Duration>,
}

/// The relay endpoint one side must send to: one address and the RTP port per `m=` line (`None`
/// for lines the relay does not anchor: port 0, or beyond the fourth anchored line). The shape
/// `sdp::Rewrite { address, ports: &endpoints.ports }` takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    /// The relay's address on that side.
    pub address: IpAddr,
    /// Per `m=` line, in order: the relay's RTP port (its RTCP port is +1).
    pub ports: SmallVec<[Option<u16>; 4]>,
}

/// Why the carrier-bound stream moved to another branch: the `reason` label of
/// `pointsman_media_switches_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SwitchReason {
    /// The selected branch got an error final response.
    ErrorResponse,
    /// 199 Early Dialog Terminated.
    EarlyDialogTerminated,
    /// pointsman sent CANCEL on the selected branch.
    Cancelled,
    /// Transport error (ICMP unreachable, connection failure) on the selected branch.
    TransportError,
    /// The selected branch's RTCP said BYE.
    RtcpBye,
    /// The selected branch went silent while a standby kept sending.
    Silence,
    /// Another branch answered (2xx).
    Answer,
    /// A more preferred branch started media.
    Preferred,
}

impl SwitchReason {
    /// Every reason, in label order.
    pub const ALL: [SwitchReason; 8] = [
        SwitchReason::ErrorResponse,
        SwitchReason::EarlyDialogTerminated,
        SwitchReason::Cancelled,
        SwitchReason::TransportError,
        SwitchReason::RtcpBye,
        SwitchReason::Silence,
        SwitchReason::Answer,
        SwitchReason::Preferred,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            SwitchReason::ErrorResponse => "error_response",
            SwitchReason::EarlyDialogTerminated => "early_dialog_terminated",
            SwitchReason::Cancelled => "cancelled",
            SwitchReason::TransportError => "transport_error",
            SwitchReason::RtcpBye => "rtcp_bye",
            SwitchReason::Silence => "silence",
            SwitchReason::Answer => "answer",
            SwitchReason::Preferred => "preferred",
        }
    }
}

/// What the relay decided about a branch's SDP answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnswerUse {
    /// Plain RTP with the reference codec: normalised, eligible for selection (hot standby, or
    /// the selected branch).
    HotStandby,
    /// Its first codec differs (name or clock) from the reference answer's: its media is relayed
    /// to it but it is never switched to before the answer (cold standby).
    ColdCodecMismatch {
        /// This branch's first codec, e.g. `pcmu/8000`.
        heard: String,
        /// The reference answer's first codec.
        offered: String,
    },
    /// An SRTP or UDPTL line: relayed unchanged, eligible, switched best effort.
    Passthrough,
    /// The branch is unknown, failed or freed, or the session is closed: nothing changed.
    Ignored,
}

/// Something timed the core must act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaEvent {
    /// After the answer, no RTP and no RTCP from `side` for the media timeout (once per session).
    Inactive {
        /// The core's id for the call ([`MediaPlane::open`]).
        token: u64,
        /// The side that went silent.
        side: MediaSide,
    },
}

/// A side of the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MediaSide {
    /// The carrier leg (toward the caller).
    Carrier,
    /// The branch legs (toward the clouds).
    Cloud,
}

impl MediaSide {
    /// Both sides, in label order.
    pub const ALL: [MediaSide; 2] = [MediaSide::Carrier, MediaSide::Cloud];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaSide::Carrier => "carrier",
            MediaSide::Cloud => "cloud",
        }
    }
}

/// Why a session or a branch could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// No free RTP/RTCP port pair left on the side's IP (counted in
    /// `pointsman_media_no_ports_total`).
    #[error("the relay's port range is exhausted")]
    NoPorts,
    /// Nothing to anchor.
    #[error("the offer has no m= line with a non-zero port")]
    NoMedia,
    /// [`MediaSession::close`] was called.
    #[error("the media session is closed")]
    Closed,
}

/// The owner of one socket: a session's leg and line.
#[derive(Debug)]
pub(crate) struct SocketOwner {
    pub(crate) session: Arc<SessionShared>,
    pub(crate) leg: LegId,
    /// The `m=` line index (in the offer).
    pub(crate) line: usize,
    pub(crate) rtcp: bool,
}

/// One side IP's pool and where its ports start in the socket table.
#[derive(Debug)]
struct Pool {
    ip: IpAddr,
    ports: Mutex<PortPool>,
    first_socket: u32,
}

/// What the sessions and the plane share.
#[derive(Debug)]
pub(crate) struct PlaneShared {
    pub(crate) cfg: MediaConfig,
    pub(crate) metrics: MediaMetrics,
    /// One pool per distinct side IP: `[carrier]` or `[carrier, cloud]`.
    pools: SmallVec<[Pool; 2]>,
    table: Vec<ArcSwapOption<SocketOwner>>,
    sessions: Mutex<HashMap<u64, Arc<SessionShared>>>,
    next_session: AtomicU64,
    seed: u64,
    /// Where answered calls' streams are handed over, once the driver set one.
    pub(crate) offload: OnceLock<Arc<dyn StreamOffload>>,
}

/// Takes a mutex even if a panicking thread poisoned it: the state is plain data, valid between
/// any two statements.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// splitmix64's output function: spreads a seed over 64 bits.
pub(crate) fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl PlaneShared {
    fn pool(&self, side: MediaSide) -> Option<&Pool> {
        match side {
            MediaSide::Carrier => self.pools.first(),
            MediaSide::Cloud => self.pools.iter().find(|p| p.ip == self.cfg.cloud_ip),
        }
    }

    pub(crate) fn side_ip(&self, side: MediaSide) -> IpAddr {
        match side {
            MediaSide::Carrier => self.cfg.carrier_ip,
            MediaSide::Cloud => self.cfg.cloud_ip,
        }
    }

    /// Allocates a pair on `side` and points both sockets at `owner(rtcp)`: the RTP port and
    /// its socket (the RTCP socket is the next id).
    pub(crate) fn alloc_pair(
        &self,
        side: MediaSide,
        owner: impl Fn(bool) -> SocketOwner,
    ) -> Result<(u16, SocketId), MediaError> {
        let pool = self.pool(side).ok_or(MediaError::NoPorts)?;
        let allocated = {
            let mut ports = lock(&pool.ports);
            ports
                .alloc()
                .and_then(|rtp| Some((rtp, ports.index_of(rtp)?)))
        };
        let Some((rtp, index)) = allocated else {
            self.metrics.no_ports();
            return Err(MediaError::NoPorts);
        };
        let first = pool.first_socket + u32::try_from(index).unwrap_or(u32::MAX);
        for (id, rtcp) in [(first, false), (first + 1, true)] {
            if let Some(slot) = usize::try_from(id).ok().and_then(|i| self.table.get(i)) {
                slot.store(Some(Arc::new(owner(rtcp))));
            }
        }
        self.metrics.ports_in_use(2);
        Ok((rtp, SocketId(first)))
    }

    /// Returns the pair of `rtp` on `side`: its sockets own nothing any more.
    pub(crate) fn free_pair(&self, side: MediaSide, rtp: u16) {
        let Some(pool) = self.pool(side) else { return };
        let Some(index) = lock(&pool.ports).index_of(rtp) else {
            return;
        };
        for offset in [0, 1] {
            let slot = usize::try_from(pool.first_socket)
                .ok()
                .and_then(|first| self.table.get(first + index + offset));
            if let Some(slot) = slot {
                slot.store(None);
            }
        }
        if lock(&pool.ports).free(rtp) {
            self.metrics.ports_in_use(-2);
        }
    }

    pub(crate) fn forget(&self, id: u64) {
        if lock(&self.sessions).remove(&id).is_some() {
            self.metrics.sessions(-1);
        }
    }
}

/// The media relay: its port pools, the socket table, and every open session.
#[derive(Debug)]
pub struct MediaPlane {
    shared: Arc<PlaneShared>,
}

impl MediaPlane {
    /// A plane with empty pools for the configured range on each distinct side IP.
    pub fn new(cfg: MediaConfig, metrics: MediaMetrics) -> MediaPlane {
        let mut pools: SmallVec<[Pool; 2]> = SmallVec::new();
        let mut sockets = 0u32;
        let ips = [cfg.carrier_ip, cfg.cloud_ip];
        for (i, ip) in ips.into_iter().enumerate() {
            if i > 0 && ip == cfg.carrier_ip {
                continue;
            }
            let ports = PortPool::new(cfg.port_min, cfg.port_max);
            let capacity = u32::try_from(ports.capacity()).unwrap_or(0);
            pools.push(Pool {
                ip,
                ports: Mutex::new(ports),
                first_socket: sockets,
            });
            sockets += capacity;
        }
        let table = (0..sockets).map(|_| ArcSwapOption::empty()).collect();
        // A per-plane seed for the sessions' SSRCs: RandomState draws its keys from the OS.
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        MediaPlane {
            shared: Arc::new(PlaneShared {
                cfg,
                metrics,
                pools,
                table,
                sessions: Mutex::new(HashMap::new()),
                next_session: AtomicU64::new(1),
                seed,
                offload: OnceLock::new(),
            }),
        }
    }

    /// Every socket the driver must bind before traffic: (id, local address). Ids are dense
    /// `0..n`.
    pub fn sockets(&self) -> Vec<(SocketId, SocketAddr)> {
        let mut all = Vec::with_capacity(self.shared.table.len());
        for pool in &self.shared.pools {
            let ports = lock(&pool.ports);
            for (i, port) in ports.ports().enumerate() {
                let id = pool.first_socket + u32::try_from(i).unwrap_or(u32::MAX);
                all.push((SocketId(id), SocketAddr::new(pool.ip, port)));
            }
        }
        all
    }

    /// The packet path: a datagram `packet` arrived on socket `at` from `from`. Edits it in place
    /// (the length never changes) and pushes where it must go: (the socket to send from, the
    /// destination). Nothing pushed = dropped (counted by reason in the metrics). Allocates
    /// nothing (up to 4 copies: `out` spills to the heap only for a fan-out to 5+ branches).
    pub fn on_packet(
        &self,
        at: SocketId,
        from: SocketAddr,
        packet: &mut [u8],
        now: Instant,
        out: &mut Forwards,
    ) {
        let owner = usize::try_from(at.0)
            .ok()
            .and_then(|i| self.shared.table.get(i))
            .map(|slot| slot.load());
        let Some(owner) = owner.as_ref().and_then(|o| o.as_ref()) else {
            self.shared.metrics.dropped(DropReason::NoSession);
            return;
        };
        owner
            .session
            .on_packet(&self.shared, owner, from, packet, now, out);
    }

    /// Hands answered calls' RTP streams to `offload` from now on (see [`offload`]). Once per
    /// plane; false if it had one already.
    pub fn hand_over_to(&self, offload: Arc<dyn StreamOffload>) -> bool {
        self.shared.offload.set(offload).is_ok()
    }

    /// Called by the driver every ~50 ms: post-answer inactivity.
    pub fn poll(&self, now: Instant, events: &mut Vec<MediaEvent>) {
        let sessions = lock(&self.shared.sessions);
        for session in sessions.values() {
            if let Some(event) = session.poll(&self.shared, now) {
                events.push(event);
            }
        }
    }

    /// The relay's metric handles (the core counts inactivity teardowns with
    /// [`MediaMetrics::inactivity`]).
    pub fn metrics(&self) -> &MediaMetrics {
        &self.shared.metrics
    }

    /// Ports (not pairs) allocated right now, both sides.
    pub fn ports_in_use(&self) -> usize {
        self.shared
            .pools
            .iter()
            .map(|p| lock(&p.ports).in_use())
            .sum()
    }

    /// Sessions open now.
    pub fn sessions(&self) -> usize {
        lock(&self.shared.sessions).len()
    }

    /// Opens a session for a call whose INVITE carried `offer` from the carrier; allocates the
    /// carrier-side endpoints (one pair per `m=` line with a non-zero port, up to 4). `token` is
    /// the core's id for the call (returned in events); `carrier_signalling` is the IP the INVITE
    /// came from.
    pub fn open(
        &self,
        token: u64,
        offer: &SdpSummary,
        carrier_signalling: IpAddr,
        timeouts: SessionTimeouts,
    ) -> Result<MediaSession, MediaError> {
        let id = self.shared.next_session.fetch_add(1, Ordering::Relaxed);
        let ssrc = splitmix(self.shared.seed ^ splitmix(token) ^ id) as u32;
        let session = SessionShared::open(
            &self.shared,
            id,
            token,
            offer,
            carrier_signalling,
            timeouts,
            ssrc,
        )?;
        lock(&self.shared.sessions).insert(id, Arc::clone(&session));
        self.shared.metrics.sessions(1);
        Ok(MediaSession::new(Arc::clone(&self.shared), session))
    }
}

#[cfg(test)]
mod tests;
