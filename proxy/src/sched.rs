//! What a worker thread asks of the kernel's scheduler so that a datagram is served at once.
//!
//! A SIP message needs a few microseconds of a worker, but on a busy machine the worker waits
//! for whatever else holds the CPU when the datagram wakes it: under the default fair policy a
//! task that just woke does not preempt one whose time slice has not run out, so the wait can be
//! a whole slice (milliseconds). Two remedies:
//!
//! - a short slice (Linux 6.12 and later, EEVDF): the worker asks for slices of `slice` rather
//!   than the default (about 1–3 ms). Its virtual deadlines come sooner, so on wake-up it
//!   preempts a task with a longer slice. Its share of the CPU is unchanged (that is the
//!   weight, i.e. nice), it needs no privilege, and older kernels ignore it.
//! - SCHED_FIFO: the worker runs ahead of every ordinary task. Needs CAP_SYS_NICE, and a
//!   runaway worker could starve the machine (the kernel keeps 5 % for others), so it is opt-in.
//!
//! The short slice has a price that grows with the rate: each datagram that wakes the worker
//! preempts whatever runs, so a busy worker preempts tens of thousands of times a second, costs
//! ~10 % more CPU and starves its neighbours (BENCHMARKS.md). A busy worker also gains nothing
//! from it: datagrams wait for it in batches anyway. So by default ([`SliceGovernor`]) a worker
//! asks for the short slice only while it is lightly loaded, and for the kernel's own above
//! [`AUTO_BUSY_RATE`].

use std::io;
use std::time::{Duration, Instant};

/// Slices the kernel accepts for a fair task (it clamps anything outside).
pub const SLICE_RANGE: (Duration, Duration) =
    (Duration::from_micros(100), Duration::from_millis(100));

/// The slice a lightly loaded worker asks for by default: the shortest the kernel grants.
pub const AUTO_SLICE: Duration = SLICE_RANGE.0;
/// Datagrams a second above which a worker gives the short slice back. At 7 datagrams a call,
/// about 1,400 calls/s on a worker (more when the node's workers share the load), well
/// below where the short slice began to cost.
pub const AUTO_BUSY_RATE: u64 = 10_000;
/// Datagrams a second below which a busy worker takes the short slice again: the gap to
/// [`AUTO_BUSY_RATE`] keeps a rate at the edge from switching every window.
pub const AUTO_LIGHT_RATE: u64 = 8_000;
/// How long a worker counts its datagrams before it judges its rate.
pub const AUTO_WINDOW: Duration = Duration::from_millis(250);

/// The slice one worker should have under `scheduler_slice = "auto"`, from the datagrams it
/// receives: short while its rate stays under [`AUTO_BUSY_RATE`], the kernel's own above it
/// until the rate falls under [`AUTO_LIGHT_RATE`]. Time is passed in.
#[derive(Debug)]
pub struct SliceGovernor {
    short: bool,
    window_start: Instant,
    datagrams: u64,
}

/// What a worker should ask the kernel for after [`SliceGovernor::observe`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SliceChange {
    /// [`AUTO_SLICE`].
    Short,
    /// The kernel's default slice.
    Kernel,
}

impl SliceChange {
    /// The slice to hand [`set_slice`] for this change.
    pub fn slice(self) -> Duration {
        match self {
            SliceChange::Short => AUTO_SLICE,
            SliceChange::Kernel => Duration::ZERO,
        }
    }
}

impl SliceGovernor {
    /// A worker starts idle, so with the short slice (which the caller has asked for).
    pub fn new(now: Instant) -> Self {
        SliceGovernor {
            short: true,
            window_start: now,
            datagrams: 0,
        }
    }

    /// Counts `datagrams` received at `now`. Once a window has passed, judges the rate over it
    /// (however long it grew while the worker was idle) and returns the change to make, if any.
    pub fn observe(&mut self, now: Instant, datagrams: usize) -> Option<SliceChange> {
        self.datagrams += datagrams as u64;
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed < AUTO_WINDOW {
            return None;
        }
        // Datagrams a second, in integers: `datagrams * 1e6 / µs` never overflows (u128).
        let rate = u128::from(self.datagrams) * 1_000_000 / elapsed.as_micros().max(1);
        self.window_start = now;
        self.datagrams = 0;
        if self.short && rate > u128::from(AUTO_BUSY_RATE) {
            self.short = false;
            Some(SliceChange::Kernel)
        } else if !self.short && rate < u128::from(AUTO_LIGHT_RATE) {
            self.short = true;
            Some(SliceChange::Short)
        } else {
            None
        }
    }

    /// Whether the worker should now have the short slice.
    #[cfg(test)]
    fn is_short(&self) -> bool {
        self.short
    }
}

/// Asks for time slices of `slice` for the calling thread, keeping its policy and nice value;
/// `Duration::ZERO` gives it the kernel's default again. Returns the slice the kernel then
/// reports, or `None` when it reports none (a kernel before 6.12, where the request is
/// accepted and ignored).
pub fn set_slice(slice: Duration) -> io::Result<Option<Duration>> {
    let mut attr = get_attr()?;
    if attr.sched_policy != libc::SCHED_OTHER as u32
        && attr.sched_policy != libc::SCHED_BATCH as u32
    {
        return Err(io::Error::other(
            "the thread is not under the fair scheduler",
        ));
    }
    attr.sched_runtime = u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX);
    // SAFETY: pid 0 is the calling thread; `attr` is a valid sched_attr whose size field says so.
    if unsafe {
        libc::syscall(
            libc::SYS_sched_setattr,
            0,
            &attr as *const libc::sched_attr,
            0,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    let now = get_attr()?;
    Ok((now.sched_runtime > 0).then(|| Duration::from_nanos(now.sched_runtime)))
}

fn get_attr() -> io::Result<libc::sched_attr> {
    let size = std::mem::size_of::<libc::sched_attr>();
    // SAFETY: sched_attr is plain integers, for which all zeroes is a valid value.
    let mut attr: libc::sched_attr = unsafe { std::mem::zeroed() };
    attr.size = size as u32;
    // SAFETY: pid 0 is the calling thread; the kernel writes at most `size` bytes into `attr`.
    if unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            0,
            &mut attr as *mut libc::sched_attr,
            size as libc::c_uint,
            0,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    // The kernel writes its own struct size here; `set_slice` hands the struct back as ours.
    attr.size = size as u32;
    Ok(attr)
}

/// Puts the calling thread under SCHED_FIFO at `priority`: a datagram then wakes it ahead of
/// ordinary processes on a busy machine. Refused without CAP_SYS_NICE (the thread then runs as
/// before).
pub fn set_realtime(priority: u8) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: i32::from(priority),
    };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param for SCHED_FIFO.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `per_window` datagrams in each of `windows` windows of [`AUTO_WINDOW`], in ten
    /// batches a window; returns the changes in order.
    fn feed(
        g: &mut SliceGovernor,
        at: &mut Instant,
        per_window: u64,
        windows: u32,
    ) -> Vec<SliceChange> {
        let mut changes = Vec::new();
        for _ in 0..windows {
            for _ in 0..10 {
                *at += AUTO_WINDOW / 10;
                changes.extend(g.observe(*at, (per_window / 10) as usize));
            }
        }
        changes
    }

    /// Datagrams in one window at `rate` a second.
    fn window_of(rate: u64) -> u64 {
        rate * AUTO_WINDOW.as_millis() as u64 / 1000
    }

    #[test]
    fn a_worker_keeps_the_short_slice_while_light_and_gives_it_back_when_busy() {
        let start = Instant::now();
        let mut at = start;
        let mut g = SliceGovernor::new(start);
        assert!(g.is_short());
        // 200 calls/s on one worker: about 1,400 datagrams a second.
        assert_eq!(feed(&mut g, &mut at, window_of(1_400), 8), vec![]);
        assert!(g.is_short());
        // A ramp to 7,700 calls/s: the first window over the busy rate gives the slice back.
        assert_eq!(
            feed(&mut g, &mut at, window_of(54_000), 1),
            vec![SliceChange::Kernel]
        );
        assert_eq!(feed(&mut g, &mut at, window_of(54_000), 8), vec![]);
        assert!(!g.is_short());
        // Back to light load: short again.
        assert_eq!(
            feed(&mut g, &mut at, window_of(1_400), 1),
            vec![SliceChange::Short]
        );
        assert!(g.is_short());
    }

    #[test]
    fn a_rate_between_the_two_thresholds_changes_nothing_so_the_slice_does_not_flap() {
        let start = Instant::now();
        let mut at = start;
        let mut g = SliceGovernor::new(start);
        let between = (AUTO_LIGHT_RATE + AUTO_BUSY_RATE) / 2;
        // Light, in between, busy, in between, light: exactly two changes.
        assert_eq!(feed(&mut g, &mut at, window_of(between), 4), vec![]);
        assert_eq!(
            feed(&mut g, &mut at, window_of(AUTO_BUSY_RATE + 400), 1),
            vec![SliceChange::Kernel]
        );
        assert_eq!(feed(&mut g, &mut at, window_of(between), 4), vec![]);
        assert_eq!(
            feed(&mut g, &mut at, window_of(AUTO_LIGHT_RATE - 400), 1),
            vec![SliceChange::Short]
        );
        // Swinging between just under the busy rate and just over the light one: no change.
        let mut changes = Vec::new();
        for _ in 0..10 {
            changes.extend(feed(&mut g, &mut at, window_of(AUTO_BUSY_RATE - 400), 1));
            changes.extend(feed(&mut g, &mut at, window_of(AUTO_LIGHT_RATE + 400), 1));
        }
        assert_eq!(changes, vec![]);
    }

    #[test]
    fn a_burst_after_a_long_silence_is_judged_over_the_whole_silence() {
        let start = Instant::now();
        let mut g = SliceGovernor::new(start);
        assert_eq!(g.observe(start + Duration::from_millis(10), 2_000), None);
        assert_eq!(
            g.observe(start + AUTO_WINDOW, 1_000),
            Some(SliceChange::Kernel),
            "3,000 datagrams in a quarter second is busy"
        );
        // Ten minutes of silence, then one batch: a low rate, short again.
        assert_eq!(
            g.observe(start + AUTO_WINDOW + Duration::from_secs(600), 64),
            Some(SliceChange::Short)
        );
        // A clock that goes nowhere (the same instant twice) neither divides by zero nor
        // judges anything.
        let now = start + Duration::from_secs(700);
        assert_eq!(g.observe(now, 64), None);
        assert_eq!(g.observe(now, 64), None);
    }

    #[test]
    fn a_short_slice_is_granted_to_the_calling_thread_alone_where_the_kernel_has_them() {
        std::thread::spawn(|| {
            let before = get_attr().expect("sched_getattr");
            let granted = set_slice(Duration::from_micros(300)).expect("sched_setattr");
            let after = get_attr().expect("sched_getattr");
            assert_eq!(after.sched_policy, before.sched_policy);
            assert_eq!(after.sched_nice, before.sched_nice);
            if let Some(slice) = granted {
                assert_eq!(slice, Duration::from_micros(300));
            }
            granted
        })
        .join()
        .expect("thread");
        // Another thread of the process keeps its own slice.
        let here = get_attr().expect("sched_getattr");
        assert_ne!(here.sched_runtime, 300_000);
    }
}
