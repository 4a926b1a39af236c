//! A hashed timing wheel: one per worker thread, holding every timer that worker armed.
//!
//! Timers are never cancelled (the state machines ignore timers that no longer apply), so the
//! wheel only needs insert and expire: O(1) each, no allocation once the slots have grown (a slot
//! that emptied out after a burst gives its room back). Time is passed in; the worker sleeps until [`TimerWheel::next_tick`] while the wheel is not empty.

use std::time::{Duration, Instant};

pub struct TimerWheel<T> {
    origin: Instant,
    tick: Duration,
    slots: Vec<Vec<(Instant, T)>>,
    /// Index of the next tick to process.
    next: u64,
    len: usize,
}

impl<T> TimerWheel<T> {
    /// `tick` is the resolution; `slots` × `tick` is one revolution (timers further out wait for
    /// later revolutions in their slot).
    pub fn new(origin: Instant, tick: Duration, slots: usize) -> TimerWheel<T> {
        let slots = slots.max(1);
        TimerWheel {
            origin,
            tick: tick.max(Duration::from_micros(100)),
            slots: (0..slots).map(|_| Vec::new()).collect(),
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

    /// Arms a timer. A deadline in the past fires at the next `expire`.
    pub fn insert(&mut self, at: Instant, item: T) {
        let tick = self.tick_of(at).max(self.next);
        let slot = (tick % self.slots.len() as u64) as usize;
        self.slots[slot].push((at, item));
        self.len += 1;
    }

    /// Moves every timer due at `now` into `fired`, in no particular order within a tick.
    pub fn expire(&mut self, now: Instant, fired: &mut Vec<T>) {
        let now_tick = self.tick_of(now);
        if self.len == 0 {
            self.next = self.next.max(now_tick);
            return;
        }
        let n = self.slots.len() as u64;
        // Past one revolution, every slot is visited once.
        let last = now_tick.min(self.next.saturating_add(n - 1));
        let mut tick = self.next;
        while tick <= last && self.len > 0 {
            let slot = &mut self.slots[(tick % n) as usize];
            let mut i = 0;
            while i < slot.len() {
                if slot[i].0 <= now {
                    let (_, item) = slot.swap_remove(i);
                    fired.push(item);
                    self.len -= 1;
                } else {
                    i += 1;
                }
            }
            // After a burst a slot keeps room for thousands of timers it no longer holds: give
            // it back (with slack, so steady load does not grow and shrink it every round).
            if slot.capacity() > 16 && slot.capacity() > 4 * slot.len() {
                slot.shrink_to(2 * slot.len());
            }
            tick += 1;
        }
        if self.len == 0 {
            // Idle: every slot gives its room back (4,096 slots of a few dozen timers each are
            // megabytes).
            for slot in &mut self.slots {
                if slot.capacity() > 0 {
                    *slot = Vec::new();
                }
            }
        }
        self.next = now_tick;
    }

    /// When the worker should next call `expire` (`None` when empty).
    pub fn next_tick(&self, now: Instant) -> Option<Instant> {
        (self.len > 0).then(|| now + self.tick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
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
    fn slots_give_their_room_back_after_a_burst() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(t0, ms(5), 4);
        for n in 0..10_000 {
            wheel.insert(t0 + ms(5), n);
        }
        let room = |w: &TimerWheel<i32>| w.slots.iter().map(Vec::capacity).sum::<usize>();
        assert!(room(&wheel) >= 10_000);
        let mut fired = Vec::new();
        wheel.expire(t0 + ms(40), &mut fired);
        assert_eq!(fired.len(), 10_000);
        assert!(room(&wheel) <= 16 * 4, "{}", room(&wheel));
        // A burst in a slot the last expiry does not reach before the wheel empties.
        let mut wheel = TimerWheel::new(t0, ms(5), 64);
        for n in 0..10_000 {
            wheel.insert(t0 + ms(100), n);
        }
        wheel.insert(t0 + ms(200), -1);
        wheel.expire(t0 + ms(150), &mut fired);
        assert!(room(&wheel) <= 16 * 64, "{}", room(&wheel));
        assert_eq!(wheel.len(), 1);
    }

    #[test]
    fn a_node_s_worth_of_timers_leaves_no_room_behind_once_idle() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(t0, ms(5), 4096);
        let mut fired = Vec::new();
        let room = |w: &TimerWheel<u32>| w.slots.iter().map(Vec::capacity).sum::<usize>();
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
}
