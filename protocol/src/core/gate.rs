//! The gate: what a new request must pass before the core spends anything on it — the
//! listener's allow list, the rate limits, scanner blocking, overload shedding and the table
//! caps — and what a refused request gets (503 with Retry-After, or a drop counted under its
//! reason).
//!
//! It must not: route, forward, or keep state of its own (the limiters are the guard's).

use super::*;

impl Core {
    /// Whether the listener takes packets from this source: its allow list, or the address of
    /// a destination (whose responses and in-dialog requests must always get in).
    pub(super) fn admits(&self, inb: Inbound<'_>) -> bool {
        let ip = inb.from.addr.ip();
        match self.cfg.acls.get(inb.listener) {
            Some(acl) if !acl.admits(ip) => self.routing.load().is_destination(ip),
            _ => true,
        }
    }

    /// The checks on a request that would start something new (out of dialog): scanners are
    /// dropped; a source over its rate is refused: allowed sources and destinations (limited
    /// only when `[guard] allowed_rate` is set) always get 503 + Retry-After, never silence;
    /// any other source's excess (a flood: the default rate is above any trunk) is dropped.
    /// New INVITEs are shed with 503 while the node is overloaded, its tables are full or it
    /// is stopping. In-dialog requests, ACK, CANCEL and responses never come here: calls in
    /// progress go on.
    pub(super) fn gate_new_request(
        &self,
        msg: &Message<'_>,
        method: Method,
        inb: Inbound<'_>,
        now: Instant,
    ) -> Result<(), Refusal> {
        if let Some(ua) = msg.header_by_name(b"User-Agent") {
            if self.cfg.guard.is_scanner(msg.slice(ua.value)) {
                return Err(Refusal::Drop(DropReason::Scanner));
            }
        }
        let ip = inb.from.addr.ip();
        let allowed = self
            .cfg
            .acls
            .get(inb.listener)
            .is_some_and(|acl| acl.lists(ip))
            || self.routing.load().is_destination(ip);
        let limiter = if allowed {
            self.allowed_limiter.as_ref()
        } else {
            Some(&self.limiter)
        };
        if limiter.is_some_and(|l| !l.take(ip, now)) {
            return Err(if allowed {
                Refusal::Busy(DropReason::RateLimit)
            } else {
                Refusal::Drop(DropReason::RateLimit)
            });
        }
        let full = self.in_progress.load(Ordering::Relaxed) >= self.cfg.guard.max_transactions
            || self.answered.len() >= self.cfg.guard.max_calls;
        if method == Method::Invite && (inb.overloaded || full) {
            return Err(Refusal::Busy(DropReason::Overload));
        }
        if method == Method::Invite && self.is_stopping() {
            return Err(Refusal::Busy(DropReason::Stopping));
        }
        Ok(())
    }
}
