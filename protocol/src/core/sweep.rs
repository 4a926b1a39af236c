//! The sweep: a pass over every table, a bounded step at a time, that forgets answered dialogs
//! past their retransmission window and answered calls past [`MAX_CALL_DURATION`], and sizes
//! each shard for what it holds; and the count of calls in progress it keeps true.
//!
//! It must not: hold a table guard across shards or take longer than one step's work.

use super::*;

/// An answered call whose BYE never passed through pointsman is forgotten after this long, so
/// the table of calls in progress cannot grow without bound.
pub const MAX_CALL_DURATION: Duration = Duration::from_secs(12 * 3600);

/// How often a pass of [`TimerKind::Sweep`] starts while the core holds anything.
pub(super) const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// The tables a sweep pass walks, in this order: servers, clients, answered calls, ghosts,
/// dialogs (see [`Core::sweep_unit`]).
pub(super) const SWEPT_TABLES: usize = 5;

/// What a sweep pass walks: every shard of every swept table, a unit each.
pub(super) const SWEEP_UNITS: usize = SWEPT_TABLES * table::SHARDS;

/// A sweep step goes on to the next unit until it has done this much work, then lets the
/// worker's messages in. Work is entries moved (a shard resized: 0.1–0.5 µs each on the
/// project's VM, cache-cold) plus a sixteenth of the entries only read. Done at once, a pass
/// over a core whose tables were growing stopped the worker for 31 ms at 1,000 calls/s and
/// 59 ms at 7,700; in steps, the longest took 1.4 and 2.4 ms (`benches/pauses.rs`). A step does
/// at most one shard past this budget. An idle or lightly loaded core does its pass in one
/// step.
pub(super) const SWEEP_STEP_WORK: usize = 1024;

/// Between the steps of one pass.
pub(super) const SWEEP_STEP: Duration = Duration::from_millis(20);

/// The core's sweep timer, due at `at`.
pub(super) fn sweep_at(at: Instant) -> Output {
    Output::Timer {
        at,
        timer: CoreTimer {
            key: 0,
            kind: TimerKind::Sweep,
        },
    }
}

impl Core {
    /// The answered call `key` is over (its BYE was answered, or it expired): stop counting it.
    pub(super) fn call_ended(&self, key: u64) {
        if let Some((_, call)) = self.answered.remove(&key) {
            if let Some(media) = call.media {
                media.session.close();
                self.media_dialogs.remove(&media.token);
            }
            self.metrics().calls_in_progress(-1);
            if let Some(dest) = call.dest {
                dest.call_ended();
            }
        }
    }

    /// Makes sure a [`TimerKind::Sweep`] is armed.
    pub(super) fn arm_sweep(&self, now: Instant, out: &mut Vec<Output>) {
        if !self.sweep_armed.swap(true, Ordering::AcqRel) {
            out.push(sweep_at(now + SWEEP_EVERY));
        }
    }

    /// One step of the sweep's pass over the tables, shard by shard: forgets answered dialogs
    /// past twice the 2xx retransmission window and answered calls past
    /// [`MAX_CALL_DURATION`], and sizes each shard for what it holds. A step ends once it has
    /// done [`SWEEP_STEP_WORK`] and the pass goes on [`SWEEP_STEP`] later; a finished pass
    /// starts again [`SWEEP_EVERY`] later while anything is held.
    pub(super) fn sweep(&self, now: Instant, out: &mut Vec<Output>) {
        let dialog_cutoff = now.checked_sub(self.cfg.timers.t1x64() * 2);
        let call_cutoff = now.checked_sub(MAX_CALL_DURATION);
        let mut unit = self.sweep_next.load(Ordering::Acquire);
        let mut work = 0;
        while unit < SWEEP_UNITS && work < SWEEP_STEP_WORK {
            let (read, moved) = self.sweep_unit(unit, dialog_cutoff, call_cutoff);
            work += moved + read / 16;
            unit += 1;
        }
        if unit < SWEEP_UNITS {
            self.sweep_next.store(unit, Ordering::Release);
            out.push(sweep_at(now + SWEEP_STEP));
            return;
        }
        self.sweep_next.store(0, Ordering::Release);
        self.sweep_armed.store(false, Ordering::Release);
        let held = !(self.servers.is_empty()
            && self.clients.is_empty()
            && self.answered.is_empty()
            && self.dialogs.len() == 0);
        if held {
            self.arm_sweep(now, out);
        }
    }

    /// Sweeps one shard of one table (unit `unit` of [`SWEEP_UNITS`]); returns the entries it
    /// only read and the entries it moved.
    pub(super) fn sweep_unit(
        &self,
        unit: usize,
        dialog_cutoff: Option<Instant>,
        call_cutoff: Option<Instant>,
    ) -> (usize, usize) {
        let shard = unit % table::SHARDS;
        match unit / table::SHARDS {
            0 => (0, size_shard_for_load(&self.servers, shard)),
            1 => (0, size_shard_for_load(&self.clients, shard)),
            2 => (
                self.end_overdue_calls(shard, call_cutoff),
                size_shard_for_load(&self.answered, shard),
            ),
            3 => (0, size_shard_for_load(&self.ghosts, shard)),
            _ => self.dialogs.sweep_shard(shard, dialog_cutoff),
        }
    }

    /// Ends the answered calls of shard `shard` that began at or before `cutoff` (none when
    /// the clock is younger than [`MAX_CALL_DURATION`]); returns the entries it read.
    pub(super) fn end_overdue_calls(&self, shard: usize, cutoff: Option<Instant>) -> usize {
        let Some(cutoff) = cutoff else { return 0 };
        let (overdue, read) = keys_in_shard(&self.answered, shard, |c| c.since <= cutoff);
        for key in overdue {
            self.call_ended(key);
        }
        read
    }
}
