//! A hashed timing wheel: one per worker thread, holding every timer that worker armed.
//!
//! Timers are never cancelled (the state machines ignore timers that no longer apply), so the
//! wheel only needs insert and expire: O(1) each. Time is passed in; the worker sleeps until
//! [`TimerWheel::next_due`], the earliest deadline, so a quiet worker is not woken every tick.
//! Workers arm timers with [`TimerWheel::insert_coalesced`] and the slack each kind allows
//! (`CoreTimer::slack`): at 200 calls/s every call's timers would otherwise wake a worker
//! several times, since timers are never cancelled.
//!
//! Every timer lives in one slab, each slot being a list threaded through it, so memory follows
//! the number of timers held, not the busiest moment of each of thousands of slots (per-slot
//! vectors ratcheted up to their largest size one by one under steady load). Freed entries are
//! reused; when the wheel empties, the slab is given back.

use std::time::{Duration, Instant};

/// End of a slot's list / of the free list.
const NIL: u32 = u32::MAX;

struct Entry<T> {
    at: Instant,
    /// `None` while the entry is on the free list.
    item: Option<T>,
    next: u32,
}

pub struct TimerWheel<T> {
    origin: Instant,
    tick: Duration,
    /// Head of each slot's list of entries.
    heads: Vec<u32>,
    entries: Vec<Entry<T>>,
    free: u32,
    /// Index of the next tick to process.
    next: u64,
    len: usize,
}

impl<T> TimerWheel<T> {
    /// `tick` is the resolution; `slots` × `tick` is one revolution (timers further out wait for
    /// later revolutions in their slot).
    pub fn new(origin: Instant, tick: Duration, slots: usize) -> TimerWheel<T> {
        TimerWheel {
            origin,
            tick: tick.max(Duration::from_micros(100)),
            heads: vec![NIL; slots.max(1)],
            entries: Vec::new(),
            free: NIL,
            next: 0,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn tick_of(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.origin);
        let ticks = since.as_nanos().div_ceil(self.tick.as_nanos());
        u64::try_from(ticks).unwrap_or(u64::MAX)
    }

    /// Arms a timer that may fire up to `grain` late: its deadline moves to the next multiple
    /// of `grain` (counted from the wheel's origin), where the timers armed around the same
    /// time wait too. Returns that deadline.
    pub fn insert_coalesced(&mut self, at: Instant, grain: Duration, item: T) -> Instant {
        let grain = grain.as_nanos().max(1);
        let since = at.saturating_duration_since(self.origin).as_nanos();
        let rounded = since.div_ceil(grain).saturating_mul(grain);
        let at = u64::try_from(rounded)
            .ok()
            .and_then(|n| self.origin.checked_add(Duration::from_nanos(n)))
            .unwrap_or(at)
            .max(at);
        self.insert(at, item);
        at
    }

    /// Arms a timer. A deadline in the past fires at the next `expire`.
    pub fn insert(&mut self, at: Instant, item: T) {
        let tick = self.tick_of(at).max(self.next);
        let slot = (tick % self.heads.len() as u64) as usize;
        let head = self.heads[slot];
        let index = if self.free != NIL {
            let index = self.free;
            let e = &mut self.entries[index as usize];
            self.free = e.next;
            *e = Entry {
                at,
                item: Some(item),
                next: head,
            };
            index
        } else {
            // More than 4 billion timers in one worker would be a bug elsewhere; the slab
            // index saturates rather than wraps.
            let index = u32::try_from(self.entries.len()).unwrap_or(NIL - 1);
            self.entries.push(Entry {
                at,
                item: Some(item),
                next: head,
            });
            index
        };
        self.heads[slot] = index;
        self.len += 1;
    }

    /// Moves every timer due at `now` into `fired`, in no particular order within a tick.
    pub fn expire(&mut self, now: Instant, fired: &mut Vec<T>) {
        let now_tick = self.tick_of(now);
        if self.len == 0 {
            self.next = self.next.max(now_tick);
            return;
        }
        let n = self.heads.len() as u64;
        // Past one revolution, every slot is visited once.
        let last = now_tick.min(self.next.saturating_add(n - 1));
        let mut tick = self.next;
        while tick <= last && self.len > 0 {
            let slot = (tick % n) as usize;
            // Walk the slot's list, unlinking what is due onto the free list.
            let mut prev = NIL;
            let mut cursor = self.heads[slot];
            while cursor != NIL {
                let e = &mut self.entries[cursor as usize];
                let next = e.next;
                if e.at <= now {
                    if let Some(item) = e.item.take() {
                        fired.push(item);
                    }
                    e.next = self.free;
                    self.free = cursor;
                    self.len -= 1;
                    if prev == NIL {
                        self.heads[slot] = next;
                    } else {
                        self.entries[prev as usize].next = next;
                    }
                } else {
                    prev = cursor;
                }
                cursor = next;
            }
            tick += 1;
        }
        if self.len == 0 {
            // Idle: give the slab back.
            self.entries = Vec::new();
            self.free = NIL;
            self.heads.fill(NIL);
        } else if self.entries.capacity() > 4096 && self.len * 8 < self.entries.capacity() {
            // Load fell well below a past burst: keep room for twice what is held.
            self.compact();
        }
        self.next = now_tick;
    }

    /// Moves the live entries into a new slab sized for them, relinking every slot.
    fn compact(&mut self) {
        let mut entries = Vec::with_capacity(self.len * 2);
        for head in self.heads.iter_mut() {
            let mut cursor = *head;
            let mut relinked = NIL;
            while cursor != NIL {
                let e = &mut self.entries[cursor as usize];
                cursor = e.next;
                if let Some(item) = e.item.take() {
                    entries.push(Entry {
                        at: e.at,
                        item: Some(item),
                        next: relinked,
                    });
                    relinked = u32::try_from(entries.len() - 1).unwrap_or(NIL - 1);
                }
            }
            *head = relinked;
        }
        self.entries = entries;
        self.free = NIL;
    }

    /// When the worker should next call `expire`: the earliest deadline held (`None` when
    /// empty). Looks one revolution ahead at most; beyond that, the end of the revolution.
    pub fn next_due(&self) -> Option<Instant> {
        if self.len == 0 {
            return None;
        }
        let n = self.heads.len() as u64;
        for tick in self.next..self.next.saturating_add(n) {
            let mut earliest: Option<Instant> = None;
            let mut cursor = self.heads[(tick % n) as usize];
            while cursor != NIL {
                let e = &self.entries[cursor as usize];
                // Entries of later revolutions share the slot; only this visit's count.
                if self.tick_of(e.at) <= tick {
                    earliest = Some(earliest.map_or(e.at, |t| t.min(e.at)));
                }
                cursor = e.next;
            }
            if earliest.is_some() {
                return earliest;
            }
        }
        let ticks = u32::try_from(self.next.saturating_add(n)).unwrap_or(u32::MAX);
        Some(self.origin + self.tick.saturating_mul(ticks))
    }

    /// Entries the slab has room for (held or free): its memory, for tests.
    #[cfg(test)]
    fn room(&self) -> usize {
        self.entries.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_worker_sleeps_until_the_earliest_deadline_not_the_next_tick() {
        let t0 = Instant::now();
        // 64 slots of 5 ms: one revolution is 320 ms.
        let mut wheel = TimerWheel::new(t0, ms(5), 64);
        assert_eq!(
            wheel.next_due(),
            None,
            "empty: sleep until something is armed"
        );
        wheel.insert(t0 + ms(32_000), "cleanup");
        // Far out: wake once a revolution to look again, not every tick.
        assert_eq!(wheel.next_due(), Some(t0 + ms(320)));
        // The earliest of several, whatever order they were armed in.
        wheel.insert(t0 + ms(647), "later");
        wheel.insert(t0 + ms(100), "soon");
        wheel.insert(t0 + ms(7), "now-ish");
        assert_eq!(wheel.next_due(), Some(t0 + ms(7)));
        let mut fired = Vec::new();
        wheel.expire(t0 + ms(7), &mut fired);
        assert_eq!(fired, vec!["now-ish"]);
        assert_eq!(wheel.next_due(), Some(t0 + ms(100)));
        wheel.expire(t0 + ms(100), &mut fired);
        // "later" (647 ms) is more than a revolution away and shares its slot with ticks
        // that come first: look again at the end of this revolution, then find it.
        assert_eq!(wheel.next_due(), Some(t0 + ms(420)));
        wheel.expire(t0 + ms(420), &mut fired);
        assert_eq!(fired, vec!["now-ish", "soon"]);
        assert_eq!(wheel.next_due(), Some(t0 + ms(647)));
        // A deadline already past is due at once.
        wheel.insert(t0 + ms(50), "late");
        assert_eq!(wheel.next_due(), Some(t0 + ms(50)));
    }

    #[test]
    fn coalesced_timers_share_a_deadline_never_earlier_than_their_own() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(t0, ms(5), 64);
        let grain = ms(100);
        for (i, at) in [101, 150, 199, 200].into_iter().enumerate() {
            wheel.insert_coalesced(t0 + ms(at), grain, i);
        }
        assert_eq!(
            wheel.next_due(),
            Some(t0 + ms(200)),
            "one wake-up for all four"
        );
        let mut fired = Vec::new();
        wheel.expire(t0 + ms(199), &mut fired);
        assert!(fired.is_empty(), "none fires before its own deadline");
        wheel.expire(t0 + ms(200), &mut fired);
        fired.sort();
        assert_eq!(fired, vec![0, 1, 2, 3]);
        // A deadline on the grid stays where it is; one just past waits for the next point.
        wheel.insert_coalesced(t0 + ms(300), grain, 4);
        wheel.insert_coalesced(t0 + ms(300) + Duration::from_nanos(1), grain, 5);
        assert_eq!(wheel.next_due(), Some(t0 + ms(300)));
        wheel.expire(t0 + ms(300), &mut fired);
        assert_eq!(fired.last(), Some(&4));
        assert_eq!(wheel.next_due(), Some(t0 + ms(400)));
    }

    #[test]
    fn fires_each_timer_once_at_or_after_its_deadline() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(t0, ms(5), 64);
        wheel.insert(t0 + ms(12), "a");
        wheel.insert(t0 + ms(3), "b");
        let mut fired = Vec::new();
        wheel.expire(t0 + ms(2), &mut fired);
        assert!(fired.is_empty());
        wheel.expire(t0 + ms(4), &mut fired);
        assert_eq!(fired, vec!["b"]);
        fired.clear();
        wheel.expire(t0 + ms(11), &mut fired);
        assert!(fired.is_empty(), "a is due at 12 ms, not 11");
        wheel.expire(t0 + ms(15), &mut fired);
        assert_eq!(fired, vec!["a"]);
        assert!(wheel.is_empty());
    }

    #[test]
    fn timers_beyond_one_revolution_wait_for_their_round() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(t0, ms(1), 8);
        wheel.insert(t0 + ms(20), 20);
        wheel.insert(t0 + ms(4), 4);
        let mut fired = Vec::new();
        for step in 1..=30u64 {
            wheel.expire(t0 + ms(step), &mut fired);
            if step < 20 {
                assert!(!fired.contains(&20), "fired early at {step} ms");
            }
        }
        assert_eq!(fired, vec![4, 20]);
    }

    #[test]
    fn a_long_gap_fires_everything_due() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(t0, ms(1), 4);
        for i in 0..10 {
            wheel.insert(t0 + ms(i * 3), i);
        }
        let mut fired = Vec::new();
        wheel.expire(t0 + Duration::from_secs(10), &mut fired);
        fired.sort();
        assert_eq!(fired, (0..10).collect::<Vec<_>>());
        assert_eq!(wheel.len(), 0);
    }

    #[test]
    fn past_deadline_fires_on_next_expire() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(t0, ms(5), 16);
        let mut fired = Vec::new();
        wheel.expire(t0 + ms(100), &mut fired);
        wheel.insert(t0 + ms(50), 1);
        wheel.expire(t0 + ms(101), &mut fired);
        assert_eq!(fired, vec![1]);
    }

    #[test]
    fn the_slab_gives_its_room_back_after_a_burst() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(t0, ms(5), 4);
        for n in 0..10_000 {
            wheel.insert(t0 + ms(5), n);
        }
        let room = |w: &TimerWheel<i32>| w.room();
        assert!(room(&wheel) >= 10_000);
        let mut fired = Vec::new();
        wheel.expire(t0 + ms(40), &mut fired);
        assert_eq!(fired.len(), 10_000);
        assert_eq!(room(&wheel), 0, "idle: nothing kept");
        // A burst, then a trickle that keeps the wheel from ever emptying.
        let mut wheel = TimerWheel::new(t0, ms(5), 64);
        for n in 0..10_000 {
            wheel.insert(t0 + ms(100), n);
        }
        for n in 0..10 {
            wheel.insert(t0 + ms(200 + n), -1);
        }
        fired.clear();
        wheel.expire(t0 + ms(150), &mut fired);
        assert_eq!(fired.len(), 10_000);
        assert!(room(&wheel) <= 20, "{}", room(&wheel));
        assert_eq!(wheel.len(), 10);
        // The survivors still fire, each once.
        fired.clear();
        wheel.expire(t0 + ms(300), &mut fired);
        assert_eq!(fired, vec![-1; 10]);
    }

    #[test]
    fn a_node_s_worth_of_timers_leaves_no_room_behind_once_idle() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(t0, ms(5), 4096);
        let mut fired = Vec::new();
        let room = |w: &TimerWheel<u32>| w.room();
        // 20 s of calls at 3,000/s, each arming timers 0.5 s to 64 s out; expiry every 5 ms.
        let mut now = t0;
        let mut peak = 0;
        for tick in 0..4000u32 {
            now = t0 + ms(5 * u64::from(tick));
            for n in 0..15u32 {
                let out = [500, 3_000, 5_000, 32_000, 32_000, 32_000, 64_000][(n % 7) as usize];
                wheel.insert(now + ms(out), n);
            }
            wheel.expire(now, &mut fired);
            fired.clear();
            peak = peak.max(room(&wheel));
        }
        for tick in 0..20_000u64 {
            wheel.expire(now + ms(5 * tick), &mut fired);
        }
        assert!(wheel.is_empty());
        assert!(peak > 50_000, "{peak}");
        assert_eq!(room(&wheel), 0, "of {peak}");
    }

    #[test]
    fn steady_load_holds_steady_memory() {
        // The per-slot vectors this replaced grew one slot at a time to the largest size each
        // ever reached: RSS crept up for minutes under a constant call rate.
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(t0, ms(5), 4096);
        let mut fired = Vec::new();
        let mut room_at = Vec::new();
        let mut seed = 7u64;
        for tick in 0..60_000u64 {
            let now = t0 + ms(5 * tick);
            // 10 to 20 timers a tick, 0.5 s to 64 s out: a noisy but constant rate.
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            for n in 0..(10 + (seed >> 60)) {
                let out = [500, 3_000, 5_000, 32_000, 32_000, 32_000, 64_000][(n % 7) as usize];
                wheel.insert(now + ms(out), 0u8);
            }
            wheel.expire(now, &mut fired);
            fired.clear();
            if tick % 12_000 == 0 {
                room_at.push(wheel.room());
            }
        }
        // After the first 64 s the room never moves again.
        assert!(room_at[1..].windows(2).all(|w| w[0] == w[1]), "{room_at:?}");
    }
}
