//! RFC 3261 §17 transactions as sans-IO state machines, with the RFC 6026 "Accepted" states.
//!
//! Each machine is fed events (a response or request retransmission, a timer, a transport error)
//! together with `now`, and writes what must happen into a `Vec<TxAction>`: bytes to (re)send and
//! timers to arm. No sockets, no clock: the driver owns both. Timers are never cancelled; a timer
//! that fires in a state where it no longer applies is ignored, so the driver's wheel can be lazy.
//!
//! Matching a message to its transaction (branch, sent-by, method; RFC 2543 fallback; CANCEL to
//! INVITE per §9.2) is in `key` ([`Keys`], [`TxKey`]). What a transaction's *user* does with a response (relay,
//! failover, ghost teardown) is the proxy core's business, not this module's.

mod key;

pub use key::{Keys, MethodClass, TxKey};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// RFC 3261 timer base values (§17.1.1.1, table 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerConfig {
    pub t1: Duration,
    pub t2: Duration,
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerConfig {
    /// 64·T1: timers B, F, H, J, L, M.
    pub fn t1x64(&self) -> Duration {
        self.t1 * 64
    }
}

/// The RFC 3261 timers (and RFC 6026 L and M).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TxTimer {
    /// INVITE client retransmit (unreliable transport).
    A,
    /// INVITE client timeout.
    B,
    /// INVITE client: wait for response retransmissions after a non-2xx final.
    D,
    /// non-INVITE client retransmit.
    E,
    /// non-INVITE client timeout.
    F,
    /// INVITE server: retransmit the final non-2xx response.
    G,
    /// INVITE server: give up waiting for ACK.
    H,
    /// INVITE server: absorb ACK retransmissions.
    I,
    /// non-INVITE server: absorb request retransmissions.
    J,
    /// non-INVITE client: absorb response retransmissions.
    K,
    /// INVITE server, RFC 6026: absorb INVITE retransmissions after a 2xx.
    L,
    /// INVITE client, RFC 6026: pass 2xx retransmissions to the user after the first.
    M,
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxAction {
    /// Transmit these bytes to the transaction's peer.
    Send(Bytes),
    /// Call `on_timer(timer, ..)` at this instant.
    Arm(TxTimer, Instant),
}

/// What a timer or error meant to the transaction's user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxEvent {
    /// Nothing the user needs to know.
    None,
    /// No final response (client) or no ACK (server) in time.
    Timeout,
    /// The transaction is over and may be forgotten.
    Terminated,
}

/// Whether the user sees a received response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// New information: act on it.
    Deliver,
    /// A retransmission the transaction has dealt with.
    Absorb,
    /// A final non-2xx: deliver it, and hand the transaction the ACK to send (§17.1.1.3) via
    /// [`ClientInvite::send_ack`].
    DeliverNeedsAck,
}

fn is_final(code: u16) -> bool {
    code >= 200
}

// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientInviteState {
    Calling,
    Proceeding,
    /// A final non-2xx arrived and was ACKed.
    Completed,
    /// RFC 6026: a 2xx arrived; further 2xx are passed up, for 64·T1.
    Accepted,
    Terminated,
}

/// INVITE client transaction (§17.1.1, RFC 6026 §7.2).
#[derive(Debug)]
pub struct ClientInvite {
    state: ClientInviteState,
    request: Bytes,
    ack: Option<Bytes>,
    reliable: bool,
    timers: TimerConfig,
    retransmit_interval: Duration,
    /// Timer B's deadline. On unreliable transports it is checked as Timer A fires (A's last
    /// interval is cut to end on it) instead of being armed: a separate Timer B would sit in the
    /// driver for 64·T1 although almost every INVITE is answered in milliseconds.
    timeout_at: Instant,
}

impl ClientInvite {
    /// Sends the INVITE and arms A (unreliable transports) and B.
    pub fn start(
        request: Bytes,
        reliable: bool,
        timers: TimerConfig,
        now: Instant,
        out: &mut Vec<TxAction>,
    ) -> ClientInvite {
        out.push(TxAction::Send(request.clone()));
        let timeout_at = now + timers.t1x64();
        if reliable {
            out.push(TxAction::Arm(TxTimer::B, timeout_at));
        } else {
            out.push(TxAction::Arm(TxTimer::A, (now + timers.t1).min(timeout_at)));
        }
        ClientInvite {
            state: ClientInviteState::Calling,
            request,
            ack: None,
            reliable,
            timers,
            retransmit_interval: timers.t1,
            timeout_at,
        }
    }

    pub fn state(&self) -> ClientInviteState {
        self.state
    }

    /// The INVITE as sent.
    pub fn request(&self) -> &Bytes {
        &self.request
    }

    pub fn on_response(&mut self, code: u16, now: Instant, out: &mut Vec<TxAction>) -> Delivery {
        use ClientInviteState::*;
        match self.state {
            Calling | Proceeding => {
                if code < 200 {
                    self.state = Proceeding;
                    Delivery::Deliver
                } else if code < 300 {
                    self.state = Accepted;
                    // No retransmission or CANCEL of it is possible any more.
                    self.request = Bytes::new();
                    out.push(TxAction::Arm(TxTimer::M, now + self.timers.t1x64()));
                    Delivery::Deliver
                } else {
                    self.state = Completed;
                    let wait = if self.reliable {
                        Duration::ZERO
                    } else {
                        Duration::from_secs(32).max(self.timers.t1x64() / 2)
                    };
                    out.push(TxAction::Arm(TxTimer::D, now + wait));
                    Delivery::DeliverNeedsAck
                }
            }
            Completed => {
                if is_final(code) && code >= 300 {
                    if let Some(ack) = &self.ack {
                        out.push(TxAction::Send(ack.clone()));
                    }
                }
                Delivery::Absorb
            }
            // RFC 6026: every 2xx goes to the user (it must ACK or relay each one).
            Accepted if (200..300).contains(&code) => Delivery::Deliver,
            Accepted | Terminated => Delivery::Absorb,
        }
    }

    /// Sends (and keeps, for response retransmissions) the ACK for a final non-2xx.
    /// The INVITE itself is no longer needed after this (it was the ACK's template).
    pub fn send_ack(&mut self, ack: Bytes, out: &mut Vec<TxAction>) {
        out.push(TxAction::Send(ack.clone()));
        self.ack = Some(ack);
        self.request = Bytes::new();
    }

    pub fn on_timer(&mut self, timer: TxTimer, now: Instant, out: &mut Vec<TxAction>) -> TxEvent {
        use ClientInviteState::*;
        match (timer, self.state) {
            (TxTimer::A, Calling) if now >= self.timeout_at => {
                // Timer B, carried by the A chain.
                self.terminate();
                TxEvent::Timeout
            }
            (TxTimer::A, Calling) => {
                out.push(TxAction::Send(self.request.clone()));
                self.retransmit_interval *= 2;
                let next = (now + self.retransmit_interval).min(self.timeout_at);
                out.push(TxAction::Arm(TxTimer::A, next));
                TxEvent::None
            }
            (TxTimer::B, Calling) => {
                self.terminate();
                TxEvent::Timeout
            }
            (TxTimer::D, Completed) | (TxTimer::M, Accepted) => {
                self.terminate();
                TxEvent::Terminated
            }
            _ => TxEvent::None,
        }
    }

    /// The transport could not deliver the INVITE: the transaction is over.
    pub fn on_transport_error(&mut self) -> TxEvent {
        if self.state == ClientInviteState::Terminated {
            return TxEvent::None;
        }
        self.terminate();
        TxEvent::Timeout
    }

    /// Ends the transaction without waiting (e.g. Timer B after a CANCEL got no answer), and
    /// frees what it kept for retransmissions.
    pub fn terminate(&mut self) {
        self.state = ClientInviteState::Terminated;
        self.request = Bytes::new();
        self.ack = None;
    }
}

/// An INVITE client transaction as plain data, for another node to carry on (call
/// replication). Deadlines are durations from the moment of the snapshot: two nodes' clocks
/// share no epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInviteSnapshot {
    pub state: ClientInviteState,
    /// The INVITE as sent. Empty in a replica that leaves it out: the receiver's earlier
    /// replica of the branch has it. (`Bytes`: the snapshot shares the transaction's copy.)
    pub request: Bytes,
    pub ack: Option<Bytes>,
    pub reliable: bool,
    pub retransmit_interval: Duration,
    /// Timer B's deadline, from the snapshot (zero when already due).
    pub timeout_in: Duration,
}

impl ClientInvite {
    /// This transaction as plain data, at `now`; `with_request`: false leaves its INVITE out
    /// (for a node that has it already).
    pub fn snapshot(&self, now: Instant, with_request: bool) -> ClientInviteSnapshot {
        ClientInviteSnapshot {
            state: self.state,
            request: if with_request {
                self.request.clone()
            } else {
                Bytes::new()
            },
            ack: self.ack.clone(),
            reliable: self.reliable,
            retransmit_interval: self.retransmit_interval,
            timeout_in: self.timeout_at.saturating_duration_since(now),
        }
    }

    /// The transaction of `snap`, carried on from `now`: the timers its state needs are armed
    /// again. Which timer of the old node was next is not known, so A fires one interval from
    /// now, and the timers that only end a window (D, M) get their full length: never earlier
    /// than the old node would have fired them. Nothing is sent.
    pub fn restore(
        snap: ClientInviteSnapshot,
        timers: TimerConfig,
        now: Instant,
        out: &mut Vec<TxAction>,
    ) -> ClientInvite {
        // Timer B never runs past 64·T1 from the send: a longer remainder in a snapshot is not
        // trusted (nor allowed to overflow the clock).
        let timeout_at = now + snap.timeout_in.min(timers.t1x64());
        // A zero interval would retransmit in a loop; a peer's snapshot is not trusted for it.
        let retransmit_interval = snap.retransmit_interval.clamp(timers.t1, timers.t1x64());
        match snap.state {
            ClientInviteState::Calling if snap.reliable => {
                out.push(TxAction::Arm(TxTimer::B, timeout_at))
            }
            ClientInviteState::Calling => out.push(TxAction::Arm(
                TxTimer::A,
                (now + retransmit_interval).min(timeout_at),
            )),
            ClientInviteState::Completed => {
                let wait = if snap.reliable {
                    Duration::ZERO
                } else {
                    Duration::from_secs(32).max(timers.t1x64() / 2)
                };
                out.push(TxAction::Arm(TxTimer::D, now + wait));
            }
            ClientInviteState::Accepted => {
                out.push(TxAction::Arm(TxTimer::M, now + timers.t1x64()))
            }
            ClientInviteState::Proceeding | ClientInviteState::Terminated => {}
        }
        ClientInvite {
            state: snap.state,
            request: snap.request,
            ack: snap.ack,
            reliable: snap.reliable,
            timers,
            retransmit_interval,
            timeout_at,
        }
    }
}

// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientNonInviteState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

/// Non-INVITE client transaction (§17.1.2).
#[derive(Debug)]
pub struct ClientNonInvite {
    state: ClientNonInviteState,
    request: Bytes,
    reliable: bool,
    timers: TimerConfig,
    retransmit_interval: Duration,
    /// Timer F's deadline; on unreliable transports checked as Timer E fires (see
    /// `ClientInvite::timeout_at`).
    timeout_at: Instant,
}

impl ClientNonInvite {
    /// Sends the request and arms E (unreliable transports) and F.
    pub fn start(
        request: Bytes,
        reliable: bool,
        timers: TimerConfig,
        now: Instant,
        out: &mut Vec<TxAction>,
    ) -> ClientNonInvite {
        out.push(TxAction::Send(request.clone()));
        let timeout_at = now + timers.t1x64();
        if reliable {
            out.push(TxAction::Arm(TxTimer::F, timeout_at));
        } else {
            out.push(TxAction::Arm(TxTimer::E, (now + timers.t1).min(timeout_at)));
        }
        ClientNonInvite {
            state: ClientNonInviteState::Trying,
            request,
            reliable,
            timers,
            retransmit_interval: timers.t1,
            timeout_at,
        }
    }

    pub fn state(&self) -> ClientNonInviteState {
        self.state
    }

    pub fn on_response(&mut self, code: u16, now: Instant, out: &mut Vec<TxAction>) -> Delivery {
        use ClientNonInviteState::*;
        match self.state {
            Trying | Proceeding if code < 200 => {
                self.state = Proceeding;
                Delivery::Deliver
            }
            Trying | Proceeding => {
                self.state = Completed;
                // Only response retransmissions are absorbed from here on.
                self.request = Bytes::new();
                let wait = if self.reliable {
                    Duration::ZERO
                } else {
                    self.timers.t4
                };
                out.push(TxAction::Arm(TxTimer::K, now + wait));
                Delivery::Deliver
            }
            Completed | Terminated => Delivery::Absorb,
        }
    }

    pub fn on_timer(&mut self, timer: TxTimer, now: Instant, out: &mut Vec<TxAction>) -> TxEvent {
        use ClientNonInviteState::*;
        match (timer, self.state) {
            (TxTimer::E, Trying | Proceeding) if now >= self.timeout_at => {
                // Timer F, carried by the E chain.
                self.terminate();
                TxEvent::Timeout
            }
            (TxTimer::E, Trying | Proceeding) => {
                out.push(TxAction::Send(self.request.clone()));
                self.retransmit_interval = if self.state == Trying {
                    (self.retransmit_interval * 2).min(self.timers.t2)
                } else {
                    self.timers.t2
                };
                let next = (now + self.retransmit_interval).min(self.timeout_at);
                out.push(TxAction::Arm(TxTimer::E, next));
                TxEvent::None
            }
            (TxTimer::F, Trying | Proceeding) => {
                self.terminate();
                TxEvent::Timeout
            }
            (TxTimer::K, Completed) => {
                self.state = Terminated;
                TxEvent::Terminated
            }
            _ => TxEvent::None,
        }
    }

    pub fn on_transport_error(&mut self) -> TxEvent {
        if self.state == ClientNonInviteState::Terminated {
            return TxEvent::None;
        }
        self.terminate();
        TxEvent::Timeout
    }

    /// Ends the transaction and frees the request it kept for retransmissions.
    fn terminate(&mut self) {
        self.state = ClientNonInviteState::Terminated;
        self.request = Bytes::new();
    }
}

// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerInviteState {
    Proceeding,
    /// A final non-2xx was sent; waiting for the ACK.
    Completed,
    Confirmed,
    /// RFC 6026: a 2xx was sent; INVITE retransmissions are absorbed, further 2xx pass.
    Accepted,
    Terminated,
}

/// INVITE server transaction (§17.2.1, RFC 6026 §7.1).
#[derive(Debug)]
pub struct ServerInvite {
    state: ServerInviteState,
    last_response: Option<Bytes>,
    reliable: bool,
    timers: TimerConfig,
    retransmit_interval: Duration,
}

impl ServerInvite {
    /// A new INVITE arrived. The user should send 100 Trying through [`Self::respond`] at once.
    pub fn new(reliable: bool, timers: TimerConfig) -> ServerInvite {
        ServerInvite {
            state: ServerInviteState::Proceeding,
            last_response: None,
            reliable,
            timers,
            retransmit_interval: timers.t1,
        }
    }

    pub fn state(&self) -> ServerInviteState {
        self.state
    }

    /// The INVITE arrived again: resend the last response (absorbed otherwise).
    pub fn on_retransmission(&mut self, out: &mut Vec<TxAction>) {
        if matches!(
            self.state,
            ServerInviteState::Proceeding | ServerInviteState::Completed
        ) {
            if let Some(r) = &self.last_response {
                out.push(TxAction::Send(r.clone()));
            }
        }
    }

    /// Sends a response upstream. Returns false (and sends nothing) when the state forbids it:
    /// a provisional or non-2xx after a final, or anything once terminated.
    pub fn respond(
        &mut self,
        code: u16,
        bytes: Bytes,
        now: Instant,
        out: &mut Vec<TxAction>,
    ) -> bool {
        use ServerInviteState::*;
        match self.state {
            Proceeding => {
                out.push(TxAction::Send(bytes.clone()));
                if code < 200 {
                    self.last_response = Some(bytes);
                } else if code < 300 {
                    self.state = Accepted;
                    self.last_response = None;
                    out.push(TxAction::Arm(TxTimer::L, now + self.timers.t1x64()));
                } else {
                    self.state = Completed;
                    self.last_response = Some(bytes);
                    if !self.reliable {
                        out.push(TxAction::Arm(TxTimer::G, now + self.timers.t1));
                    }
                    out.push(TxAction::Arm(TxTimer::H, now + self.timers.t1x64()));
                }
                true
            }
            // RFC 6026: 2xx retransmissions from downstream are relayed while Accepted.
            Accepted if (200..300).contains(&code) => {
                out.push(TxAction::Send(bytes));
                true
            }
            _ => false,
        }
    }

    /// An ACK matched this transaction (a non-2xx ACK, hop by hop). Returns true if absorbed.
    pub fn on_ack(&mut self, now: Instant, out: &mut Vec<TxAction>) -> bool {
        match self.state {
            ServerInviteState::Completed => {
                self.state = ServerInviteState::Confirmed;
                // The ACK arrived: the final response is never sent again.
                self.last_response = None;
                let wait = if self.reliable {
                    Duration::ZERO
                } else {
                    self.timers.t4
                };
                out.push(TxAction::Arm(TxTimer::I, now + wait));
                true
            }
            ServerInviteState::Confirmed => true,
            _ => false,
        }
    }

    pub fn on_timer(&mut self, timer: TxTimer, now: Instant, out: &mut Vec<TxAction>) -> TxEvent {
        use ServerInviteState::*;
        match (timer, self.state) {
            (TxTimer::G, Completed) => {
                if let Some(r) = &self.last_response {
                    out.push(TxAction::Send(r.clone()));
                }
                self.retransmit_interval = (self.retransmit_interval * 2).min(self.timers.t2);
                out.push(TxAction::Arm(TxTimer::G, now + self.retransmit_interval));
                TxEvent::None
            }
            (TxTimer::H, Completed) => {
                self.state = Terminated;
                self.last_response = None;
                TxEvent::Timeout
            }
            (TxTimer::I, Confirmed) | (TxTimer::L, Accepted) => {
                self.state = Terminated;
                TxEvent::Terminated
            }
            _ => TxEvent::None,
        }
    }

    pub fn on_transport_error(&mut self) -> TxEvent {
        if self.state == ServerInviteState::Terminated {
            return TxEvent::None;
        }
        self.state = ServerInviteState::Terminated;
        TxEvent::Timeout
    }
}

/// An INVITE server transaction as plain data (see [`ClientInviteSnapshot`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInviteSnapshot {
    pub state: ServerInviteState,
    pub last_response: Option<Bytes>,
    pub reliable: bool,
    pub retransmit_interval: Duration,
}

impl ServerInvite {
    /// This transaction as plain data.
    pub fn snapshot(&self) -> ServerInviteSnapshot {
        ServerInviteSnapshot {
            state: self.state,
            last_response: self.last_response.clone(),
            reliable: self.reliable,
            retransmit_interval: self.retransmit_interval,
        }
    }

    /// The transaction of `snap`, carried on from `now`, its state's timers armed again (G one
    /// interval from now; H, I and L their full length, never earlier than the old node's).
    pub fn restore(
        snap: ServerInviteSnapshot,
        timers: TimerConfig,
        now: Instant,
        out: &mut Vec<TxAction>,
    ) -> ServerInvite {
        let retransmit_interval = snap
            .retransmit_interval
            .clamp(timers.t1, timers.t2.max(timers.t1));
        match snap.state {
            ServerInviteState::Completed => {
                if !snap.reliable {
                    out.push(TxAction::Arm(TxTimer::G, now + retransmit_interval));
                }
                out.push(TxAction::Arm(TxTimer::H, now + timers.t1x64()));
            }
            ServerInviteState::Confirmed => {
                let wait = if snap.reliable {
                    Duration::ZERO
                } else {
                    timers.t4
                };
                out.push(TxAction::Arm(TxTimer::I, now + wait));
            }
            ServerInviteState::Accepted => {
                out.push(TxAction::Arm(TxTimer::L, now + timers.t1x64()))
            }
            ServerInviteState::Proceeding | ServerInviteState::Terminated => {}
        }
        ServerInvite {
            state: snap.state,
            last_response: snap.last_response,
            reliable: snap.reliable,
            timers,
            retransmit_interval,
        }
    }
}

// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerNonInviteState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

/// Non-INVITE server transaction (§17.2.2).
#[derive(Debug)]
pub struct ServerNonInvite {
    state: ServerNonInviteState,
    last_response: Option<Bytes>,
    reliable: bool,
    timers: TimerConfig,
}

impl ServerNonInvite {
    pub fn new(reliable: bool, timers: TimerConfig) -> ServerNonInvite {
        ServerNonInvite {
            state: ServerNonInviteState::Trying,
            last_response: None,
            reliable,
            timers,
        }
    }

    pub fn state(&self) -> ServerNonInviteState {
        self.state
    }

    pub fn on_retransmission(&mut self, out: &mut Vec<TxAction>) {
        if matches!(
            self.state,
            ServerNonInviteState::Proceeding | ServerNonInviteState::Completed
        ) {
            if let Some(r) = &self.last_response {
                out.push(TxAction::Send(r.clone()));
            }
        }
    }

    pub fn respond(
        &mut self,
        code: u16,
        bytes: Bytes,
        now: Instant,
        out: &mut Vec<TxAction>,
    ) -> bool {
        use ServerNonInviteState::*;
        match self.state {
            Trying | Proceeding => {
                out.push(TxAction::Send(bytes.clone()));
                self.last_response = Some(bytes);
                if code < 200 {
                    self.state = Proceeding;
                } else {
                    self.state = Completed;
                    let wait = if self.reliable {
                        Duration::ZERO
                    } else {
                        self.timers.t1x64()
                    };
                    out.push(TxAction::Arm(TxTimer::J, now + wait));
                }
                true
            }
            _ => false,
        }
    }

    pub fn on_timer(&mut self, timer: TxTimer, _now: Instant, _out: &mut Vec<TxAction>) -> TxEvent {
        match (timer, self.state) {
            (TxTimer::J, ServerNonInviteState::Completed) => {
                self.state = ServerNonInviteState::Terminated;
                TxEvent::Terminated
            }
            _ => TxEvent::None,
        }
    }

    pub fn on_transport_error(&mut self) -> TxEvent {
        if self.state == ServerNonInviteState::Terminated {
            return TxEvent::None;
        }
        self.state = ServerNonInviteState::Terminated;
        TxEvent::Timeout
    }
}

#[cfg(test)]
mod tests;
