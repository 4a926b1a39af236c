//! A destination's capacity: its calls in progress and its capacity caps (`max_calls`,
//! `max_cps`), lock-free, because the proxy core asks on every new branch. Sans-IO: `now` is
//! passed in; the rate is measured from an `epoch` given at creation.
//!
//! - **Calls in progress** are INVITE branches sent to the destination that have not ended: a
//!   branch counts from its INVITE until it fails, is given up or cancelled, or the call ends
//!   unanswered; an answered call counts until its BYE passes (or the answered call is
//!   forgotten). One atomic counter, the one `GET /destinations` shows.
//! - **`max_calls`**: a new branch is admitted only while the count is below it; admitting it
//!   is one compare-exchange that takes the slot, so concurrent workers never overshoot.
//! - **`max_cps`**: a token bucket of `burst = max(1, floor(max_cps))` tokens refilled at
//!   `max_cps` a second, kept as one atomic "theoretical arrival time" (GCRA, the virtual
//!   scheduling form of the ATM cell-rate algorithm): a new branch conforms when it arrives no
//!   earlier than `tat - (burst - 1) / max_cps`, and moves `tat` on by `1 / max_cps`. Over any
//!   span the destination gets at most `burst + max_cps × span` new calls.
//!
//! A branch refused by a cap is not a failure: nothing here touches the health machine, and the
//! core skips the destination as it skips one that is down. Caps change on reload
//! ([`Capacity::set_caps`]) without a lock; the count is never reset (its calls are real), and
//! the bucket starts full again only when `max_cps` itself changed.
//!
//! It must not: lock, allocate, or read a clock.

use routing_rules::Caps;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

/// Which cap refused a new call: the `cap` label of `pointsman_destination_capped_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cap {
    /// `max_calls`: as many calls in progress as it may have.
    Calls,
    /// `max_cps`: its new-call rate (bucket empty).
    Cps,
}

impl Cap {
    pub const ALL: [Cap; 2] = [Cap::Calls, Cap::Cps];

    pub fn as_str(self) -> &'static str {
        match self {
            Cap::Calls => "calls",
            Cap::Cps => "cps",
        }
    }
}

/// One destination's calls in progress, caps and rate bucket. Every field is an atomic.
#[derive(Debug)]
pub(crate) struct Capacity {
    /// Calls in progress (see the module documentation).
    in_progress: AtomicU32,
    /// Calls admitted since the entry was made (every branch counted, capped or not).
    admitted: AtomicU64,
    /// `max_calls`; 0: no cap.
    max_calls: AtomicU32,
    /// `max_cps` as written (`f64` bits; 0.0: no cap), for the admin API.
    rate: AtomicU64,
    /// `max_cps` as the time between two calls, in ns; 0: no cap.
    interval: AtomicU64,
    /// The burst the bucket allows beyond one call: `(burst - 1) × interval`, in ns.
    tolerance: AtomicU64,
    /// The bucket: when the next call would conform with no burst left, in ns since `epoch`.
    tat: AtomicU64,
    /// New calls refused by each cap, in [`Cap`] order.
    refused: [AtomicU64; 2],
    epoch: Instant,
}

impl Capacity {
    /// No call in progress, `caps` in force, a full bucket; the rate is measured from `now`.
    pub(crate) fn new(caps: &Caps, now: Instant) -> Capacity {
        let c = Capacity {
            in_progress: AtomicU32::new(0),
            admitted: AtomicU64::new(0),
            max_calls: AtomicU32::new(0),
            rate: AtomicU64::new(0),
            interval: AtomicU64::new(0),
            tolerance: AtomicU64::new(0),
            tat: AtomicU64::new(0),
            refused: [AtomicU64::new(0), AtomicU64::new(0)],
            epoch: now,
        };
        c.set_caps(caps);
        c
    }

    /// Puts `caps` in force (at creation and on reload). A changed `max_cps` starts with a
    /// full bucket; an unchanged one keeps its bucket, so a reload hands out no extra burst.
    pub(crate) fn set_caps(&self, caps: &Caps) {
        self.max_calls
            .store(caps.max_calls.unwrap_or(0), Ordering::Relaxed);
        self.rate
            .store(caps.max_cps.unwrap_or(0.0).to_bits(), Ordering::Relaxed);
        let interval = caps.max_cps.map_or(0, |r| (1e9 / r).round() as u64);
        let burst = u64::from(caps.burst().unwrap_or(1));
        if self.interval.swap(interval, Ordering::Relaxed) != interval {
            self.tat.store(0, Ordering::Relaxed);
        }
        self.tolerance
            .store((burst - 1).saturating_mul(interval), Ordering::Relaxed);
    }

    /// The caps in force: `max_calls`, `max_cps`.
    pub(crate) fn caps(&self) -> (Option<u32>, Option<f64>) {
        let calls = self.max_calls.load(Ordering::Relaxed);
        let rate = f64::from_bits(self.rate.load(Ordering::Relaxed));
        ((calls > 0).then_some(calls), (rate > 0.0).then_some(rate))
    }

    /// Admits a new call at `now` if no cap refuses it: takes a token of `max_cps` and a slot
    /// of `max_calls`, and counts the call in progress. Refused: nothing is taken, and the cap
    /// that refused it is counted (`max_calls` first, as [`at_cap`](Self::at_cap) says).
    /// Lock-free: a few loads and a compare-exchange per cap set. The count only ever drops in
    /// [`end_one`](Self::end_one), so a drain waiting for the last call never misses it.
    pub(crate) fn try_start(&self, now: Instant) -> Result<(), Cap> {
        let max = self.max_calls.load(Ordering::Relaxed);
        if max > 0 && self.in_progress.load(Ordering::Acquire) >= max {
            return Err(self.refuse(Cap::Calls));
        }
        let Some(token) = self.take_token(now) else {
            return Err(self.refuse(Cap::Cps));
        };
        if max == 0 {
            self.in_progress.fetch_add(1, Ordering::AcqRel);
        } else if self
            .in_progress
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_err()
        {
            // Another worker took the last slot since the check: the token goes back.
            self.give_back(token);
            return Err(self.refuse(Cap::Calls));
        }
        self.admitted.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Counts a call in progress whatever the caps say (a call restored from a replica: it
    /// is already at the destination).
    pub(crate) fn started(&self) {
        self.in_progress.fetch_add(1, Ordering::AcqRel);
        self.admitted.fetch_add(1, Ordering::Relaxed);
    }

    /// A call in progress ended: the count left, or `None` when none was in progress (an
    /// unbalanced end, ignored).
    pub(crate) fn end_one(&self) -> Option<u32> {
        self.in_progress
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .ok()
            .map(|before| before - 1)
    }

    pub(crate) fn in_progress(&self) -> u32 {
        self.in_progress.load(Ordering::Acquire)
    }

    /// Calls admitted since the entry was made.
    pub(crate) fn calls(&self) -> u64 {
        self.admitted.load(Ordering::Relaxed)
    }

    /// New calls refused by `cap` since the entry was made.
    pub(crate) fn refused(&self, cap: Cap) -> u64 {
        self.refused[cap as usize].load(Ordering::Relaxed)
    }

    /// The cap a new call would meet at `now`, if any (for the admin API; nothing is taken).
    pub(crate) fn at_cap(&self, now: Instant) -> Option<Cap> {
        let max = self.max_calls.load(Ordering::Relaxed);
        if max > 0 && self.in_progress() >= max {
            return Some(Cap::Calls);
        }
        let interval = self.interval.load(Ordering::Relaxed);
        let tolerance = self.tolerance.load(Ordering::Relaxed);
        let tat = self.tat.load(Ordering::Acquire);
        (interval > 0 && tat > self.nanos(now).saturating_add(tolerance)).then_some(Cap::Cps)
    }

    fn refuse(&self, cap: Cap) -> Cap {
        self.refused[cap as usize].fetch_add(1, Ordering::Relaxed);
        cap
    }

    /// Takes a token of the rate bucket at `now`: the interval it moved the bucket by (0
    /// without a rate cap), or `None` when the bucket is empty.
    fn take_token(&self, now: Instant) -> Option<u64> {
        let interval = self.interval.load(Ordering::Relaxed);
        if interval == 0 {
            return Some(0);
        }
        let tolerance = self.tolerance.load(Ordering::Relaxed);
        let now = self.nanos(now);
        self.tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                (tat <= now.saturating_add(tolerance))
                    .then(|| tat.max(now).saturating_add(interval))
            })
            .ok()
            .map(|_| interval)
    }

    /// Puts back a token [`take_token`](Self::take_token) took (never more: a bucket reset by
    /// a reload in between stays full, not fuller).
    fn give_back(&self, token: u64) {
        if token > 0 {
            let _ = self
                .tat
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                    Some(tat.saturating_sub(token))
                });
        }
    }

    /// `now` in ns since the epoch (an `Instant` before it counts as the epoch).
    fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn caps(max_calls: Option<u32>, max_cps: Option<f64>) -> Caps {
        Caps { max_calls, max_cps }
    }

    #[test]
    fn without_caps_every_call_is_admitted_and_counted() {
        let t0 = Instant::now();
        let c = Capacity::new(&Caps::default(), t0);
        for _ in 0..1000 {
            assert_eq!(c.try_start(t0), Ok(()));
        }
        assert_eq!((c.in_progress(), c.calls()), (1000, 1000));
        assert_eq!(c.at_cap(t0), None);
        assert_eq!(c.caps(), (None, None));
    }

    #[test]
    fn max_calls_admits_up_to_the_cap_and_again_once_a_call_ends() {
        let t0 = Instant::now();
        let c = Capacity::new(&caps(Some(2), None), t0);
        assert_eq!(c.try_start(t0), Ok(()));
        assert_eq!(c.at_cap(t0), None);
        assert_eq!(c.try_start(t0), Ok(()));
        assert_eq!(c.at_cap(t0), Some(Cap::Calls));
        assert_eq!(c.try_start(t0), Err(Cap::Calls));
        assert_eq!(c.in_progress(), 2, "a refused call takes no slot");
        assert_eq!(c.end_one(), Some(1));
        assert_eq!(c.try_start(t0), Ok(()));
        assert_eq!(
            (c.calls(), c.refused(Cap::Calls), c.refused(Cap::Cps)),
            (3, 1, 0)
        );
        // A restored call counts whatever the cap, and ends like any other.
        c.started();
        assert_eq!(c.in_progress(), 3);
        assert_eq!(c.end_one(), Some(2));
        assert_eq!(c.end_one(), Some(1));
        assert_eq!(c.end_one(), Some(0));
        assert_eq!(c.end_one(), None, "unbalanced end ignored");
        assert_eq!(c.in_progress(), 0);
    }

    #[test]
    fn max_cps_lets_a_burst_through_then_one_call_per_interval() {
        let t0 = Instant::now();
        let c = Capacity::new(&caps(None, Some(2.0)), t0);
        assert_eq!(c.caps(), (None, Some(2.0)));
        assert_eq!(c.try_start(t0), Ok(()));
        assert_eq!(c.try_start(t0), Ok(()), "burst of 2");
        assert_eq!(c.at_cap(t0), Some(Cap::Cps));
        assert_eq!(c.try_start(t0), Err(Cap::Cps));
        assert_eq!(c.in_progress(), 2, "a refused call takes no slot");
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(c.try_start(ms(499)), Err(Cap::Cps));
        assert_eq!(c.at_cap(ms(500)), None);
        assert_eq!(c.try_start(ms(500)), Ok(()), "a token every 500 ms");
        assert_eq!(c.try_start(ms(500)), Err(Cap::Cps));
        // A quiet spell refills the bucket to its burst, never beyond.
        assert_eq!(c.try_start(ms(10_000)), Ok(()));
        assert_eq!(c.try_start(ms(10_000)), Ok(()));
        assert_eq!(c.try_start(ms(10_000)), Err(Cap::Cps));
        assert_eq!(c.refused(Cap::Cps), 4);
        // Over 10 s at most burst + 2/s × 10 s calls.
        let c = Capacity::new(&caps(None, Some(2.0)), t0);
        let admitted = (0..10_000).filter(|i| c.try_start(ms(*i)).is_ok()).count();
        assert_eq!(
            admitted,
            2 + 20 - 1,
            "2 at once, then one each 500 ms up to 9.5 s"
        );
    }

    #[test]
    fn a_rate_under_one_a_second_still_lets_one_call_through() {
        let t0 = Instant::now();
        let c = Capacity::new(&caps(None, Some(0.5)), t0);
        assert_eq!(c.try_start(t0), Ok(()));
        assert_eq!(c.try_start(t0 + Duration::from_millis(1999)), Err(Cap::Cps));
        assert_eq!(c.try_start(t0 + Duration::from_secs(2)), Ok(()));
    }

    #[test]
    fn the_calls_cap_is_checked_first_and_a_refused_call_takes_neither_slot_nor_token() {
        let t0 = Instant::now();
        let c = Capacity::new(&caps(Some(1), Some(1.0)), t0);
        assert_eq!(c.try_start(t0), Ok(()));
        assert_eq!(
            c.at_cap(t0),
            Some(Cap::Calls),
            "at both caps: calls is named"
        );
        assert_eq!(c.try_start(t0), Err(Cap::Calls));
        assert_eq!(c.end_one(), Some(0));
        assert_eq!(c.try_start(t0), Err(Cap::Cps));
        assert_eq!(c.in_progress(), 0);
        assert_eq!(c.try_start(t0 + Duration::from_secs(1)), Ok(()));
        // Refused at max_calls while a token was there: the token is still there once a call
        // ends.
        let t2 = t0 + Duration::from_secs(2);
        assert_eq!(c.try_start(t2), Err(Cap::Calls));
        assert_eq!(c.end_one(), Some(0));
        assert_eq!(c.try_start(t2), Ok(()));
    }

    #[test]
    fn a_token_given_back_makes_room_for_exactly_one_more_call() {
        let t0 = Instant::now();
        let c = Capacity::new(&caps(None, Some(1.0)), t0);
        let token = c.take_token(t0).expect("a full bucket");
        assert_eq!(c.take_token(t0), None);
        c.give_back(token);
        assert!(c.take_token(t0).is_some());
        assert_eq!(c.take_token(t0), None);
        // A bucket a reload reset meanwhile is not made fuller.
        c.set_caps(&caps(None, Some(2.0)));
        c.give_back(token);
        assert!(c.take_token(t0).is_some());
        assert!(c.take_token(t0).is_some());
        assert_eq!(c.take_token(t0), None);
    }

    #[test]
    fn a_reload_changes_the_caps_keeps_the_count_and_refills_only_a_changed_rate() {
        let t0 = Instant::now();
        let c = Capacity::new(&caps(Some(1), Some(1.0)), t0);
        assert_eq!(c.try_start(t0), Ok(()));
        c.set_caps(&caps(Some(1), Some(1.0)));
        assert_eq!(c.in_progress(), 1);
        assert_eq!(c.try_start(t0), Err(Cap::Calls));
        c.set_caps(&caps(Some(3), Some(1.0)));
        assert_eq!(
            c.try_start(t0),
            Err(Cap::Cps),
            "same rate: same bucket, still empty"
        );
        c.set_caps(&caps(Some(3), Some(2.0)));
        assert_eq!(c.try_start(t0), Ok(()), "a new rate starts full");
        assert_eq!(c.try_start(t0), Ok(()));
        assert_eq!(c.in_progress(), 3);
        c.set_caps(&Caps::default());
        assert_eq!(c.try_start(t0), Ok(()), "caps removed");
        assert_eq!(c.caps(), (None, None));
        assert_eq!(c.at_cap(t0), None);
    }

    #[test]
    fn concurrent_workers_never_overshoot_max_calls() {
        let t0 = Instant::now();
        let c = std::sync::Arc::new(Capacity::new(&caps(Some(100), None), t0));
        let admitted: usize = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || (0..1000).filter(|_| c.try_start(t0).is_ok()).count())
            })
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(admitted, 100);
        assert_eq!(c.in_progress(), 100);
        assert_eq!(c.refused(Cap::Calls), 3900);
    }
}
